//! Checkpoints: safetensors files whose tensor names are the PyTorch `state_dict` keys of the
//! networks, prefixed by the network (`netF.feature.0.weight`, `netD.feature.1.running_var`,
//! `netG.main.1.num_batches_tracked`), so `load_state_dict` in the PyTorch reference takes
//! them as they are. Training state rides along: Adam moments as
//! `adam.<network>.<key>.exp_avg` / `.exp_avg_sq` / `.step`, and the run's position (experiment,
//! widths, hyper-parameters, iteration, ...) in the safetensors metadata.
//!
//! Writes are atomic: a temporary file in the same directory, flushed and synced, then renamed
//! over the target, so a crash leaves either the old or the new checkpoint, never a torn one.

use crate::error::{Error, Result};
use crate::gta::Trainer;
use crate::nn::Network;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// One tensor of a state dict.
#[derive(Clone, Debug, PartialEq)]
pub enum StateTensor {
    F32 { dims: Vec<usize>, data: Vec<f32> },
    I64 { dims: Vec<usize>, data: Vec<i64> },
}

/// Named tensors plus string metadata: what a checkpoint file holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    pub tensors: BTreeMap<String, StateTensor>,
    pub metadata: BTreeMap<String, String>,
}

fn ckpt_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

impl StateDict {
    /// Reads a safetensors file (f32 and i64 tensors), checking what it can.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            cause: e,
        })?;
        Self::parse(&bytes).map_err(|d| {
            ckpt_err(
                path,
                format!(
                    "{d}; the file is damaged or is not a gtadapt checkpoint (use another one, \
                     e.g. best.safetensors of the run, or start the run again)"
                ),
            )
        })
    }

    /// Parses safetensors bytes (what [`StateDict::read`] does after reading the file); the
    /// error says what is wrong. Never panics, whatever the bytes (fuzzed: fuzz/ `checkpoint`).
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| format!("not a safetensors file ({e})"))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| format!("corrupt: {e}"))?;
        let mut sd = StateDict {
            metadata: header
                .metadata()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            ..Default::default()
        };
        for (name, view) in st.tensors() {
            let dims = view.shape().to_vec();
            let t = match view.dtype() {
                Dtype::F32 => StateTensor::F32 {
                    dims,
                    data: view
                        .data()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                },
                Dtype::I64 => StateTensor::I64 {
                    dims,
                    data: view
                        .data()
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                        .collect(),
                },
                // Integer tensors of other tools (labels in fixtures) widen to i64.
                Dtype::I32 => StateTensor::I64 {
                    dims,
                    data: view
                        .data()
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                        .collect(),
                },
                other => return Err(format!("tensor {name} has unsupported dtype {other:?}")),
            };
            sd.tensors.insert(name, t);
        }
        Ok(sd)
    }

    /// Serializes to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, t)| match t {
                StateTensor::F32 { dims, data } => (
                    name.clone(),
                    Dtype::F32,
                    dims.clone(),
                    data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                StateTensor::I64 { dims, data } => (
                    name.clone(),
                    Dtype::I64,
                    dims.clone(),
                    data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
            })
            .collect();
        let views = raw
            .iter()
            .map(|(n, d, s, b)| {
                TensorView::new(*d, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::invalid("checkpoint", format!("tensor {n}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        safetensors::tensor::serialize(views, &Some(meta))
            .map_err(|e| Error::invalid("checkpoint", format!("serialize: {e}")))
    }

    /// Writes atomically: temporary file, fsync, rename, fsync of the directory.
    pub fn write_atomic(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        write_file_atomic(path, &bytes)
    }

    fn f32(&self, name: &str, path: &Path, want: &[usize]) -> Result<&[f32]> {
        match self.tensors.get(name) {
            Some(StateTensor::F32 { dims, data }) if dims == want => Ok(data),
            Some(StateTensor::F32 { dims, .. }) => Err(ckpt_err(
                path,
                format!(
                    "tensor {name} has shape {dims:?}, this model expects {want:?} \
                     (was it trained with other --ndf/--ngf/--nz or another experiment?)"
                ),
            )),
            Some(_) => Err(ckpt_err(path, format!("tensor {name} is not f32"))),
            None => Err(ckpt_err(
                path,
                format!("tensor {name} is missing (a checkpoint of another experiment?)"),
            )),
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one, never a mix.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        cause: e,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| ckpt_err(path, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if crate::health::pause_in_write_enabled() {
            // Test hook: a torn temporary file exists while the process sleeps.
            crate::health::write_with_pause(&mut f, bytes, path)?;
        } else {
            f.write_all(bytes)?;
        }
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Persist the rename itself.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Adds every tensor of `net` (parameters, running statistics, `num_batches_tracked`) under
/// `<prefix><network>.<key>`.
fn add_network(sd: &mut StateDict, prefix: &str, net: &Network) {
    for (name, data, dims) in net.named_tensors() {
        sd.tensors.insert(
            format!("{prefix}{name}"),
            StateTensor::F32 {
                dims,
                data: data.to_vec(),
            },
        );
    }
    for b in &net.batch_norms {
        sd.tensors.insert(
            format!("{prefix}{}.{}.num_batches_tracked", net.name, b.prefix),
            StateTensor::I64 {
                dims: vec![],
                data: vec![b.num_batches_tracked],
            },
        );
    }
}

/// The full training state of `trainer`: weights, buffers, Adam state and metadata.
pub fn trainer_state(trainer: &Trainer, extra: &BTreeMap<String, String>) -> StateDict {
    let mut sd = StateDict::default();
    for (net, adam) in trainer.networks().into_iter().zip(&trainer.adam) {
        add_network(&mut sd, "", net);
        for (p, s) in net.params.iter().zip(adam) {
            let key = format!("adam.{}.{}", net.name, p.name);
            let dims = p.value.dims().to_vec();
            sd.tensors.insert(
                format!("{key}.exp_avg"),
                StateTensor::F32 {
                    dims: dims.clone(),
                    data: s.m.clone(),
                },
            );
            sd.tensors.insert(
                format!("{key}.exp_avg_sq"),
                StateTensor::F32 {
                    dims,
                    data: s.v.clone(),
                },
            );
            sd.tensors.insert(
                format!("{key}.step"),
                StateTensor::I64 {
                    dims: vec![],
                    data: vec![s.step as i64],
                },
            );
        }
    }
    let h = &trainer.hyper;
    let m = &mut sd.metadata;
    m.insert("format".into(), "gtadapt-checkpoint-1".into());
    m.insert("experiment".into(), trainer.experiment.name().into());
    m.insert("ndf".into(), h.widths.ndf.to_string());
    m.insert("ngf".into(), h.widths.ngf.to_string());
    m.insert("nz".into(), h.widths.nz.to_string());
    m.insert("iteration".into(), trainer.iteration.to_string());
    for (k, v) in [
        ("lr", h.lr),
        ("beta1", h.beta1),
        ("beta2", h.beta2),
        ("lrd", h.lrd),
        ("adv_weight", h.adv_weight as f64),
        ("alpha", h.alpha as f64),
    ] {
        // `{:?}` prints the shortest string that reads back to the same f64.
        m.insert(k.into(), format!("{v:?}"));
    }
    m.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    sd
}

/// Loads weights and buffers named `<prefix><network>.<key>` into `net`.
pub fn load_network(net: &mut Network, sd: &StateDict, prefix: &str, path: &Path) -> Result<()> {
    let name = net.name.clone();
    for p in &mut net.params {
        let key = format!("{prefix}{name}.{}", p.name);
        let dims = p.value.dims().to_vec();
        let data = sd.f32(&key, path, &dims)?;
        p.value.data_mut().copy_from_slice(data);
    }
    for b in &mut net.batch_norms {
        let c = b.stats.mean.len();
        let key = format!("{prefix}{name}.{}", b.prefix);
        b.stats.mean = sd.f32(&format!("{key}.running_mean"), path, &[c])?.to_vec();
        b.stats.var = sd.f32(&format!("{key}.running_var"), path, &[c])?.to_vec();
        if let Some(StateTensor::I64 { data, .. }) =
            sd.tensors.get(&format!("{key}.num_batches_tracked"))
        {
            b.num_batches_tracked = data.first().copied().unwrap_or(0);
        }
    }
    Ok(())
}

/// Restores a trainer from a checkpoint written by [`trainer_state`]: checks that experiment
/// and widths match, then loads weights, buffers, Adam state and the iteration count.
pub fn restore_trainer(trainer: &mut Trainer, sd: &StateDict, path: &Path) -> Result<()> {
    let meta = |k: &str| {
        sd.metadata.get(k).ok_or_else(|| {
            ckpt_err(
                path,
                format!("metadata `{k}` missing (not a gtadapt checkpoint?)"),
            )
        })
    };
    let exp = meta("experiment")?;
    if exp != trainer.experiment.name() {
        return Err(ckpt_err(
            path,
            format!(
                "it holds experiment {exp}, but {} was requested",
                trainer.experiment.name()
            ),
        ));
    }
    let w = trainer.hyper.widths;
    for (k, v) in [("ndf", w.ndf), ("ngf", w.ngf), ("nz", w.nz)] {
        let have = meta(k)?;
        if have != &v.to_string() {
            return Err(ckpt_err(
                path,
                format!("it was trained with --{k} {have}, this run has --{k} {v}"),
            ));
        }
    }
    let iteration: u64 = meta("iteration")?
        .parse()
        .map_err(|_| ckpt_err(path, "metadata `iteration` is not a number"))?;
    let mut adam_all = Vec::new();
    for net in trainer.networks_mut() {
        load_network(net, sd, "", path)?;
        let mut adam = Vec::new();
        for p in &net.params {
            let key = format!("adam.{}.{}", net.name, p.name);
            let dims = p.value.dims().to_vec();
            let m = sd.f32(&format!("{key}.exp_avg"), path, &dims)?.to_vec();
            let v = sd.f32(&format!("{key}.exp_avg_sq"), path, &dims)?.to_vec();
            let step = match sd.tensors.get(&format!("{key}.step")) {
                Some(StateTensor::I64 { data, .. }) if data.len() == 1 && data[0] >= 0 => {
                    data[0] as u64
                }
                _ => return Err(ckpt_err(path, format!("{key}.step missing or invalid"))),
            };
            adam.push(crate::ops::adam::AdamState { m, v, step });
        }
        adam_all.push(adam);
    }
    trainer.adam = adam_all;
    trainer.iteration = iteration;
    Ok(())
}
