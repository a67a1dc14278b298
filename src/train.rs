//! A training run: epochs over a source and a target dataset, evaluation, metrics, plots,
//! sample grids and checkpoints in an output directory, and resumption.
//!
//! Files in the run directory:
//! - `metrics.jsonl` — one JSON object per epoch (accuracies, mean losses, learning rates,
//!   seconds);
//! - `accuracy.png` — source-validation and target-test accuracy per epoch (regenerated each
//!   epoch);
//! - `samples/epoch-NNN-{source,target}.png` — G's outputs at the epoch's first iteration;
//! - `checkpoints/last.safetensors` (every epoch) and `checkpoints/best.safetensors` (best
//!   source-validation accuracy so far), written atomically.
//!
//! Resumption is exact on the CPU: everything random is a function of (seed, epoch,
//! iteration) — shuffles of (seed, epoch), noise of (seed, iteration) — and the checkpoint
//! holds weights, buffers, Adam state and the position, so `--resume` continues from the last
//! completed epoch with the same bits an uninterrupted run would have.

use crate::backend::gpu::{Gpu, MemoryStats};
use crate::backend::{Backend, Cpu, Schedule};
use crate::checkpoint::{restore_trainer, trainer_state, StateDict};
use crate::data::{self, Batcher, Dataset, Split};
use crate::error::{Error, Result};
pub use crate::gpu::kernels::conv::Precision;
use crate::gta::{Batch, Experiment, Hyper, Losses, Noise, Trainer};
use crate::health;
use crate::report;
use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// G's samples of the epoch's first iteration.
fn write_samples(dir: &RunDir, epoch: usize, g_s: &Tensor, g_t: &Tensor) -> Result<()> {
    let s = dir.samples();
    report::write_image_grid(&s.join(format!("epoch-{epoch:03}-source.png")), g_s)?;
    report::write_image_grid(&s.join(format!("epoch-{epoch:03}-target.png")), g_t)
}

/// Images per evaluation forward pass.
const EVAL_CHUNK: usize = 250;

/// Philox stream of the generator noise (the seed is the run's seed).
const NOISE_STREAM: u64 = 0x006e_6f69_7365; // "noise"
/// Mixed into the seed for the target loader's shuffle, so source and target orders differ.
const TARGET_SHUFFLE: u64 = 0x0074_6774; // "tgt"

/// How images are normalized before F sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputNorm {
    /// The authors' per-channel mean 0.44 / std 0.19.
    Dataset,
    /// Per-image standardization (zero mean, unit variance over the image's 3×32×32 values).
    Instance,
}

impl InputNorm {
    pub fn name(self) -> &'static str {
        match self {
            InputNorm::Dataset => "dataset",
            InputNorm::Instance => "instance",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "dataset" => Some(InputNorm::Dataset),
            "instance" => Some(InputNorm::Instance),
            _ => None,
        }
    }
}

/// Everything that defines a run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub experiment: Experiment,
    pub hyper: Hyper,
    pub source: String,
    pub target: String,
    pub epochs: usize,
    pub batch_size: usize,
    /// Cap on iterations per epoch (quick runs); `None` = as many as the shorter loader gives.
    pub iters_per_epoch: Option<usize>,
    pub seed: u64,
    pub input_norm: InputNorm,
}

/// The metrics of one epoch (one line of metrics.jsonl).
#[derive(Clone, Debug, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub iterations: u64,
    pub source_val_acc: f64,
    pub target_test_acc: f64,
    pub target_train_acc: f64,
    pub losses: Losses,
    pub lr: f64,
    pub lr_g: f64,
    pub seconds: f64,
    /// Wall-clock seconds of the epoch's training iterations alone (no evaluation, no files;
    /// the GPU's queued work included: the epoch's last loss read-back waits for it).
    pub train_seconds: f64,
}

impl EpochMetrics {
    fn to_json(&self, experiment: Experiment) -> String {
        format!(
            "{{\"experiment\":\"{}\",\"epoch\":{},\"iterations\":{},\"source_val_acc\":{:.4},\
             \"target_test_acc\":{:.4},\"target_train_acc\":{:.4},\"loss_d\":{:?},\"loss_g\":{:?},\
             \"loss_c\":{:?},\"loss_f\":{:?},\"lr\":{:?},\"lr_g\":{:?},\"seconds\":{:.3},\"train_seconds\":{:.3}}}",
            experiment.name(),
            self.epoch,
            self.iterations,
            self.source_val_acc,
            self.target_test_acc,
            self.target_train_acc,
            self.losses.d,
            self.losses.g,
            self.losses.c,
            self.losses.f,
            self.lr,
            self.lr_g,
            self.seconds,
            self.train_seconds
        )
    }
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub config: RunConfig,
    pub epochs: Vec<EpochMetrics>,
    /// The epoch (1-based) with the best source-validation accuracy.
    pub best_epoch: usize,
    pub out: PathBuf,
    /// The backend that trained ("cpu", "emulator", "cuda").
    pub device: &'static str,
    /// Device memory use (GPU backends).
    pub memory: Option<MemoryStats>,
    /// Training iterations run by replaying the captured CUDA graph (GPU backends).
    pub replayed_iterations: u64,
}

/// Where a run trains. Runs are device-independent: a checkpoint written on one resumes on
/// any other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU backend (the reference ops).
    Cpu,
    /// The GPU backend on the SIMT emulator: the CUDA kernels executed on the CPU (slow; for
    /// checking the GPU path without a GPU).
    Emulator(GpuOptions),
    /// The GPU backend on an NVIDIA GPU.
    Cuda(GpuOptions),
}

/// How the GPU backend runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuOptions {
    /// Arithmetic of the convolutions.
    pub precision: Precision,
    /// Capture a training iteration once as a CUDA graph and replay it for the others (the
    /// default; off runs every iteration launch by launch, for debugging — same results).
    pub graphs: bool,
}

impl From<Precision> for GpuOptions {
    /// `precision`, graphs on.
    fn from(precision: Precision) -> Self {
        GpuOptions {
            precision,
            graphs: true,
        }
    }
}

impl RunSummary {
    pub fn last(&self) -> &EpochMetrics {
        self.epochs.last().expect("a run has at least one epoch")
    }
    pub fn best(&self) -> &EpochMetrics {
        &self.epochs[self.best_epoch - 1]
    }
    /// Training seconds per iteration (evaluation excluded).
    pub fn seconds_per_iteration(&self) -> f64 {
        let it: u64 = self.epochs.iter().map(|e| e.iterations).sum();
        let s: f64 = self.epochs.iter().map(|e| e.train_seconds).sum();
        if it == 0 {
            0.0
        } else {
            s / it as f64
        }
    }
}

/// Where the run's files go.
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn plot(&self) -> PathBuf {
        self.root.join("accuracy.png")
    }
    pub fn samples(&self) -> PathBuf {
        self.root.join("samples")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    pub fn last(&self) -> PathBuf {
        self.checkpoints().join("last.safetensors")
    }
    pub fn best(&self) -> PathBuf {
        self.checkpoints().join("best.safetensors")
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        cause: e,
    }
}

fn data_err(e: data::DataError) -> Error {
    Error::invalid("data", health::with_data_hint(e.to_string()))
}

/// Per-image standardization in place (each chunk of 3·32·32 values).
fn instance_normalize(images: &mut [f32]) {
    for img in images.chunks_mut(3 * 32 * 32) {
        let n = img.len() as f64;
        let mean = img.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = img.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let inv = 1.0 / (var.sqrt() + 1e-5);
        img.iter_mut()
            .for_each(|v| *v = ((*v as f64 - mean) * inv) as f32);
    }
}

/// F's input tensor and D's [−1, 1] view of a data batch.
pub fn input_tensors(b: &data::Batch, norm: InputNorm) -> Result<(Tensor, Tensor)> {
    let unit = b.d_tensor()?;
    let mut x = b.images.clone();
    if norm == InputNorm::Instance {
        instance_normalize(&mut x);
    }
    Ok((Tensor::new(b.shape(), x)?, unit))
}

/// The generator noise of `iteration`: (z_s, z_t), each [B, nz].
pub fn noise_for(seed: u64, iteration: u64, batch: usize, nz: usize) -> Result<Noise> {
    noise_on(&Cpu, seed, iteration, batch, nz)
}

/// [`noise_for`] drawn on `backend` (the same bits: Philox is counter-based).
pub fn noise_on<B: Backend>(
    backend: &B,
    seed: u64,
    iteration: u64,
    batch: usize,
    nz: usize,
) -> Result<Noise<B::Tensor>> {
    let per = (batch * nz) as u64;
    let shape = crate::shape::Shape::new(&[batch, nz]);
    Ok(Noise {
        z_s: backend.normal(seed, NOISE_STREAM, iteration * 2 * per, &shape)?,
        z_t: backend.normal(seed, NOISE_STREAM, iteration * 2 * per + per, &shape)?,
    })
}

/// Accuracy (%) of argmax C(F(x)) over a whole split.
pub fn evaluate<B: Backend>(
    trainer: &mut Trainer<B>,
    split: &Split,
    norm: InputNorm,
) -> Result<f64> {
    let batcher = Batcher::eval(split, EVAL_CHUNK).map_err(data_err)?;
    // Counted on the backend: one read-back per split.
    let mut counter = trainer.backend.counter()?;
    let mut total = 0usize;
    for b in batcher.epoch(0) {
        let (x, _) = input_tensors(&b, norm)?;
        trainer.add_correct(&x, &b.labels, &mut counter)?;
        total += b.len();
    }
    let correct = trainer.backend.read_counter(&counter)?;
    Ok(if total == 0 {
        0.0
    } else {
        100.0 * correct as f64 / total as f64
    })
}

/// Settings saved in each checkpoint so `--resume` needs nothing else.
fn config_metadata(cfg: &RunConfig, epoch: usize, best: (usize, f64)) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("source".into(), cfg.source.clone());
    m.insert("target".into(), cfg.target.clone());
    m.insert("epochs".into(), cfg.epochs.to_string());
    m.insert("epoch".into(), epoch.to_string());
    m.insert("batch_size".into(), cfg.batch_size.to_string());
    m.insert(
        "iters_per_epoch".into(),
        cfg.iters_per_epoch
            .map(|n| n.to_string())
            .unwrap_or_default(),
    );
    m.insert("seed".into(), cfg.seed.to_string());
    m.insert("input_norm".into(), cfg.input_norm.name().into());
    m.insert("best_epoch".into(), best.0.to_string());
    m.insert("best_source_val_acc".into(), format!("{:?}", best.1));
    m
}

/// Reads a run's configuration and position back from its last checkpoint.
pub fn config_from_checkpoint(
    sd: &StateDict,
    path: &Path,
) -> Result<(RunConfig, usize, (usize, f64))> {
    let bad = |k: &str| Error::Checkpoint {
        path: path.display().to_string(),
        detail: format!("metadata `{k}` missing or invalid (not a gtadapt training checkpoint?)"),
    };
    let get = |k: &str| sd.metadata.get(k).ok_or_else(|| bad(k));
    let num = |k: &str| get(k)?.parse::<usize>().map_err(|_| bad(k));
    let float = |k: &str| get(k)?.parse::<f64>().map_err(|_| bad(k));
    let experiment = match get("experiment")?.as_str() {
        "source-only" => Experiment::SourceOnly,
        "exp1" => Experiment::Exp1,
        "exp2" => Experiment::Exp2,
        "exp3" => Experiment::Exp3,
        _ => return Err(bad("experiment")),
    };
    let hyper = Hyper {
        widths: crate::models::Widths {
            ndf: num("ndf")?,
            ngf: num("ngf")?,
            nz: num("nz")?,
        },
        lr: float("lr")?,
        beta1: float("beta1")?,
        beta2: float("beta2")?,
        adv_weight: float("adv_weight")? as f32,
        alpha: float("alpha")? as f32,
        lrd: float("lrd")?,
    };
    let ipe = get("iters_per_epoch")?;
    let cfg = RunConfig {
        experiment,
        hyper,
        source: get("source")?.clone(),
        target: get("target")?.clone(),
        epochs: num("epochs")?,
        batch_size: num("batch_size")?,
        iters_per_epoch: if ipe.is_empty() {
            None
        } else {
            Some(ipe.parse().map_err(|_| bad("iters_per_epoch"))?)
        },
        seed: get("seed")?.parse().map_err(|_| bad("seed"))?,
        input_norm: InputNorm::parse(get("input_norm")?).ok_or_else(|| bad("input_norm"))?,
    };
    Ok((
        cfg,
        num("epoch")?,
        (num("best_epoch")?, float("best_source_val_acc")?),
    ))
}

/// Keeps the lines of metrics.jsonl up to `epoch` (those the checkpoint has seen).
fn read_metrics_upto(path: &Path, epoch: usize) -> Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err(path, e)),
    };
    Ok(text
        .lines()
        .filter(|l| {
            json_field(l, "epoch")
                .and_then(|v| v.parse::<usize>().ok())
                .is_some_and(|e| e <= epoch)
        })
        .map(str::to_string)
        .collect())
}

/// The raw value of `"key":value` in a flat JSON line written by this module.
fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

fn parse_metrics(line: &str) -> Option<EpochMetrics> {
    let f = |k: &str| json_field(line, k)?.parse::<f64>().ok();
    Some(EpochMetrics {
        epoch: json_field(line, "epoch")?.parse().ok()?,
        iterations: json_field(line, "iterations")?.parse().ok()?,
        source_val_acc: f("source_val_acc")?,
        target_test_acc: f("target_test_acc")?,
        target_train_acc: f("target_train_acc")?,
        losses: Losses {
            d: f("loss_d")? as f32,
            g: f("loss_g")? as f32,
            c: f("loss_c")? as f32,
            f: f("loss_f")? as f32,
        },
        lr: f("lr")?,
        lr_g: f("lr_g")?,
        seconds: f("seconds")?,
        // Runs written before the field existed: the whole epoch's time.
        train_seconds: f("train_seconds").or(f("seconds"))?,
    })
}

/// Callbacks for progress display.
pub trait Progress {
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _iterations: usize) {}
    /// `n` more iterations are done; `losses` are their means.
    fn iterations(&mut self, _n: usize, _losses: &Losses) {}
    fn epoch_end(&mut self, _m: &EpochMetrics) {}
}

/// No progress output (tests).
pub struct Quiet;
impl Progress for Quiet {}

/// Starts a new run in `out` (which must not hold a run unless `force`), or resumes the run in
/// `out` when `resume` is set (its settings come from its checkpoint; `epochs_override` may
/// extend it).
pub fn run(
    cfg: Option<RunConfig>,
    out: &Path,
    resume: bool,
    force: bool,
    epochs_override: Option<usize>,
    progress: &mut dyn Progress,
) -> Result<RunSummary> {
    run_on(
        Device::Cpu,
        cfg,
        out,
        resume,
        force,
        epochs_override,
        progress,
    )
}

/// [`run`] on `device`.
pub fn run_on(
    device: Device,
    cfg: Option<RunConfig>,
    out: &Path,
    resume: bool,
    force: bool,
    epochs_override: Option<usize>,
    progress: &mut dyn Progress,
) -> Result<RunSummary> {
    let args = RunArgs {
        cfg,
        out,
        resume,
        force,
        epochs_override,
    };
    match device {
        Device::Cpu => run_with(Cpu, args, progress),
        Device::Emulator(o) => run_with(
            Gpu::with_precision(crate::gpu::Emulator::new(), o.precision).with_graphs(o.graphs),
            args,
            progress,
        ),
        Device::Cuda(o) => run_with(
            Gpu::with_precision(crate::gpu::cuda::CudaExecutor::new()?, o.precision)
                .with_graphs(o.graphs),
            args,
            progress,
        ),
    }
}

struct RunArgs<'a> {
    cfg: Option<RunConfig>,
    out: &'a Path,
    resume: bool,
    force: bool,
    epochs_override: Option<usize>,
}

fn run_with<B: Backend>(
    backend: B,
    args: RunArgs<'_>,
    progress: &mut dyn Progress,
) -> Result<RunSummary> {
    let RunArgs {
        cfg,
        out,
        resume,
        force,
        epochs_override,
    } = args;
    let dir = RunDir {
        root: out.to_path_buf(),
    };
    let (cfg, mut trainer, start_epoch, mut best, mut history, mut lines, mut partial) = if resume {
        let path = dir.last();
        if !path.exists() {
            return Err(Error::Checkpoint {
                path: path.display().to_string(),
                detail: format!(
                    "no checkpoint to resume from: {} holds no run, or it was stopped before \
                     its first checkpoint; start it again without --resume (add --force if \
                     the directory holds other files of a run)",
                    out.display()
                ),
            });
        }
        // Temporary files of a killed process: never complete, never read.
        health::remove_stale_temporaries(&dir.root);
        let sd = StateDict::read(&path)?;
        let (mut cfg, epoch, best) = config_from_checkpoint(&sd, &path)?;
        if let Some(e) = epochs_override {
            cfg.epochs = e;
        }
        let mut trainer = Trainer::new(cfg.experiment, cfg.hyper, cfg.seed);
        restore_trainer(&mut trainer, &sd, &path)?;
        let trainer = trainer.to_backend(backend.clone())?;
        let partial = health::PartialEpoch::from_metadata(&sd.metadata, &path)?;
        let lines = read_metrics_upto(&dir.metrics(), epoch)?;
        health::check_metrics_experiment(&lines, cfg.experiment.name(), &dir.metrics(), &path)?;
        let history: Vec<EpochMetrics> = lines.iter().filter_map(|l| parse_metrics(l)).collect();
        if history.len() != epoch {
            return Err(Error::Checkpoint {
                path: dir.metrics().display().to_string(),
                detail: format!(
                    "holds {} readable epochs, the checkpoint is at epoch {epoch}",
                    history.len()
                ),
            });
        }
        // Drop lines written after the checkpoint (an interrupted epoch).
        write_lines(&dir.metrics(), &lines)?;
        (cfg, trainer, epoch, best, history, lines, partial)
    } else {
        let cfg = cfg.ok_or_else(|| Error::invalid("train", "no configuration"))?;
        if dir.metrics().exists() || dir.last().exists() {
            if !force {
                return Err(Error::invalid(
                    "train",
                    format!(
                        "{} already holds a run: pass --resume {0} to continue it, or --force to \
                         start over (its files are overwritten)",
                        out.display()
                    ),
                ));
            }
            for p in [dir.metrics(), dir.last(), dir.best(), dir.plot()] {
                let _ = std::fs::remove_file(p);
            }
        }
        let trainer =
            Trainer::new(cfg.experiment, cfg.hyper, cfg.seed).to_backend(backend.clone())?;
        let best = (0, f64::NEG_INFINITY);
        (cfg, trainer, 0, best, Vec::new(), Vec::new(), None)
    };
    for d in [dir.root.clone(), dir.samples(), dir.checkpoints()] {
        std::fs::create_dir_all(&d).map_err(|e| io_err(&d, e))?;
    }

    let data = RunData::open(&cfg)?;
    let (source, target, per_epoch) = (&data.source, &data.target, data.per_epoch);
    let (src_batches, tgt_batches) = (&data.src_batches, &data.tgt_batches);

    // Batches are gathered on the backend from its resident copy of the images where it keeps
    // one (the GPU, dataset normalization), else prepared by the host pipeline and uploaded.
    let resident = match cfg.input_norm {
        InputNorm::Dataset => match (
            backend.resident_split(&source.train)?,
            backend.resident_split(&target.train)?,
        ) {
            (Some(s), Some(t)) => Some((s, t)),
            _ => None,
        },
        InputNorm::Instance => None,
    };
    let nz = cfg.hyper.widths.nz;
    // Losses are summed on the backend and read back once per logging interval.
    let mut acc = backend.upload_persistent(&Tensor::zeros([4])?)?;
    let log_every = backend.log_every().max(1);
    // What a replayed iteration adds to the host counters (set when one is captured).
    let mut replay_counters: Vec<i64> = Vec::new();

    if !resume {
        health::remove_stale_temporaries(&dir.root);
        // A checkpoint of the initial state (once the data are known good): from here on
        // `--resume` always has one.
        trainer_state(&trainer.to_cpu()?, &config_metadata(&cfg, 0, best))
            .write_atomic(&dir.last())?;
    }

    for epoch in start_epoch + 1..=cfg.epochs {
        let started = Instant::now();
        progress.epoch_start(epoch, cfg.epochs, per_epoch);
        let e = epoch as u64;
        // Resuming inside an epoch that a signal interrupted: its position and loss sums.
        let (skip, earlier_seconds, mut logged) = match partial.take().filter(|p| p.epoch == epoch)
        {
            Some(p) => (p.done, p.seconds, [p.sums.d, p.sums.g, p.sums.c, p.sums.f]),
            None => (0, 0.0, [0.0f32; 4]),
        };
        backend.fill(&mut acc, 0.0)?;
        if skip > 0 {
            backend.accumulate(
                &mut acc,
                &backend.upload(&Tensor::new([4], logged.to_vec())?)?,
            )?;
        }
        let mut host_batches = match resident {
            Some(_) => None,
            None => Some(src_batches.epoch(e).zip(tgt_batches.epoch(e)).skip(skip)),
        };
        let mut last_log = skip;
        // With resident images the epoch's batch rows, noise offsets and Adam scalars go to
        // the backend as a schedule: a GPU then reads them on the device, which lets it replay
        // one captured iteration for the others.
        let scheduled = match &resident {
            Some(images) => load_epoch_schedule(&backend, &cfg, &trainer, images, &data, e, skip)?,
            None => false,
        };
        if resident.is_some() && !scheduled {
            return Err(Error::invalid(
                "train",
                "the backend keeps images resident but takes no schedule",
            ));
        }
        let noise_shape = crate::shape::Shape::new(&[cfg.batch_size, nz]);
        for i in skip..per_epoch {
            let global = trainer.iteration + 1;
            if let Some(sig) = health::raise_at(global) {
                crate::signal::raise(sig);
            }
            // The first iteration of an epoch keeps its generated images (samples).
            let sample = i == 0;
            match (&resident, host_batches.as_mut()) {
                (Some(images), _) => {
                    let mut it = ScheduledIteration {
                        backend: &backend,
                        experiment: cfg.experiment,
                        images,
                        noise_shape: &noise_shape,
                        replay_counters: &mut replay_counters,
                    };
                    // Capture once the previous iteration was a training one (memory settled).
                    it.run(&mut trainer, &mut acc, sample, i > skip)?;
                }
                (None, Some(batches)) => {
                    backend.begin_iteration()?;
                    let (bs, bt) = batches
                        .next()
                        .ok_or_else(|| Error::invalid("train", "the batch pipeline ended early"))?;
                    let (x_s, x_s_unit) = input_tensors(&bs, cfg.input_norm)?;
                    let (x_t, x_t_unit) = input_tensors(&bt, cfg.input_norm)?;
                    let batch = Batch {
                        x_s,
                        x_s_unit,
                        y_s: bs.labels.clone(),
                        x_t,
                        x_t_unit,
                    }
                    .into_backend(&backend)?;
                    let noise =
                        noise_on(&backend, cfg.seed, trainer.iteration, cfg.batch_size, nz)?;
                    trainer.keep_samples = sample;
                    let l = trainer.step_deferred(&batch, &noise)?;
                    backend.accumulate(&mut acc, &l)?;
                }
                (None, None) => unreachable!("one batch source is always set"),
            }
            if health::inject_nan(global) {
                let nan = Tensor::new([4], vec![f32::NAN, 0.0, 0.0, 0.0])?;
                backend.accumulate(&mut acc, &backend.upload(&nan)?)?;
            }
            let done = i + 1;
            let signal = crate::signal::pending().filter(|_| done < per_epoch);
            if done % log_every == 0 || done == per_epoch || signal.is_some() {
                let sums = backend.download(&acc)?.into_data();
                let since = done - last_log;
                let mean: Vec<f32> = sums
                    .iter()
                    .zip(logged)
                    .map(|(s, before)| (s - before) / since as f32)
                    .collect();
                let interval = Losses {
                    d: mean[0],
                    g: mean[1],
                    c: mean[2],
                    f: mean[3],
                };
                health::check_losses(
                    &interval,
                    epoch,
                    last_log + 1..=done,
                    global + 1 - since as u64..=global,
                    &dir.last(),
                )?;
                logged.copy_from_slice(&sums);
                last_log = done;
                progress.iterations(since, &interval);
            }
            if let Some(signal) = signal {
                // Finish here: a checkpoint of the position inside the epoch, then stop.
                let mut meta = config_metadata(&cfg, epoch - 1, best);
                health::PartialEpoch {
                    epoch,
                    done,
                    sums: Losses {
                        d: logged[0],
                        g: logged[1],
                        c: logged[2],
                        f: logged[3],
                    },
                    seconds: earlier_seconds + started.elapsed().as_secs_f64(),
                }
                .insert(&mut meta);
                if let Some((g_s, g_t)) = trainer.generated.take() {
                    write_samples(&dir, epoch, &g_s, &g_t)?;
                }
                let state = trainer_state(&trainer.to_cpu()?, &meta);
                health::check_state(&state, epoch, &dir.last())?;
                state.write_atomic(&dir.last())?;
                return Err(interrupted(signal, epoch, done, &dir));
            }
        }
        let train_seconds = earlier_seconds + started.elapsed().as_secs_f64();
        let k = per_epoch as f32;
        let losses = Losses {
            d: logged[0] / k,
            g: logged[1] / k,
            c: logged[2] / k,
            f: logged[3] / k,
        };
        let lr = trainer.lr_decayed();
        let m = EpochMetrics {
            epoch,
            iterations: per_epoch as u64,
            source_val_acc: evaluate(&mut trainer, &source.test, cfg.input_norm)?,
            target_test_acc: evaluate(&mut trainer, &target.test, cfg.input_norm)?,
            target_train_acc: evaluate(&mut trainer, &target.train, cfg.input_norm)?,
            losses,
            lr,
            lr_g: cfg.hyper.lr,
            seconds: earlier_seconds + started.elapsed().as_secs_f64(),
            train_seconds,
        };
        if let Some((g_s, g_t)) = trainer.generated.take() {
            write_samples(&dir, epoch, &g_s, &g_t)?;
        }
        let improved = m.source_val_acc > best.1;
        if improved {
            best = (epoch, m.source_val_acc);
        }
        history.push(m.clone());
        let state = trainer_state(&trainer.to_cpu()?, &config_metadata(&cfg, epoch, best));
        health::check_state(&state, epoch, &dir.last())?;
        if improved {
            state.write_atomic(&dir.best())?;
        }
        // The metrics line first, then the checkpoint that covers it: after a crash between
        // the two, resume drops the line and redoes the epoch. The file is rewritten
        // atomically (it is small), so a crash never leaves a torn line.
        lines.push(m.to_json(cfg.experiment));
        write_lines(&dir.metrics(), &lines)?;
        state.write_atomic(&dir.last())?;
        report::write_accuracy_plot(&dir.plot(), &history_curves(&history, cfg.experiment))?;
        progress.epoch_end(&m);
        if epoch < cfg.epochs {
            if let Some(signal) = crate::signal::pending() {
                return Err(interrupted(signal, epoch, per_epoch, &dir));
            }
        }
    }
    if resume && start_epoch == cfg.epochs && !history.is_empty() {
        // A run killed after its last checkpoint: complete; redraw the plot in case.
        report::write_accuracy_plot(&dir.plot(), &history_curves(&history, cfg.experiment))?;
    }
    if history.is_empty() {
        return Err(Error::invalid(
            "train",
            format!(
                "the run in {} already has all {} epochs",
                out.display(),
                cfg.epochs
            ),
        ));
    }
    Ok(RunSummary {
        best_epoch: best.0.max(1),
        config: cfg,
        epochs: history,
        out: out.to_path_buf(),
        device: backend.name(),
        memory: backend.memory_stats(),
        replayed_iterations: backend.replayed_iterations(),
    })
}

/// A run's datasets, batchers and iterations per epoch.
struct RunData {
    source: Dataset,
    target: Dataset,
    src_batches: Batcher,
    tgt_batches: Batcher,
    per_epoch: usize,
}

impl RunData {
    fn open(cfg: &RunConfig) -> Result<Self> {
        let source: Dataset = data::open(&cfg.source).map_err(data_err)?;
        let target: Dataset = data::open(&cfg.target).map_err(data_err)?;
        let src_batches =
            Batcher::train(&source.train, cfg.batch_size, cfg.seed).map_err(data_err)?;
        let tgt_batches = Batcher::train(&target.train, cfg.batch_size, cfg.seed ^ TARGET_SHUFFLE)
            .map_err(data_err)?;
        let mut per_epoch = src_batches.len().min(tgt_batches.len());
        if cfg.experiment == Experiment::SourceOnly {
            per_epoch = src_batches.len();
        }
        if let Some(cap) = cfg.iters_per_epoch {
            per_epoch = per_epoch.min(cap);
        }
        if per_epoch == 0 {
            return Err(Error::invalid("train", "an epoch would have no iterations"));
        }
        Ok(RunData {
            source,
            target,
            src_batches,
            tgt_batches,
            per_epoch,
        })
    }
}

/// Hands the backend epoch `e`'s schedule (from entry `skip` on): its batch rows, noise
/// offsets and Adam scalars, which a GPU then reads on the device — what lets it replay one
/// captured iteration for the others. `Ok(false)`: the backend takes no schedule.
fn load_epoch_schedule<B: Backend>(
    backend: &B,
    cfg: &RunConfig,
    trainer: &Trainer<B>,
    (src_images, tgt_images): &(B::Images, B::Images),
    data: &RunData,
    e: u64,
    skip: usize,
) -> Result<bool> {
    let per_epoch = data.per_epoch;
    let rows = |r: Vec<Vec<usize>>| -> Vec<u32> {
        r[..per_epoch].iter().flatten().map(|&i| i as u32).collect()
    };
    let mut tables = vec![(src_images, rows(data.src_batches.batch_indices(e)))];
    if cfg.experiment != Experiment::SourceOnly {
        tables.push((tgt_images, rows(data.tgt_batches.batch_indices(e))));
    }
    let first = trainer.iteration - skip as u64;
    let per = (cfg.batch_size * cfg.hyper.widths.nz) as u64;
    backend.load_schedule(&Schedule {
        steps: per_epoch,
        start: skip,
        batch: cfg.batch_size,
        rows: tables,
        noise: Some((
            cfg.seed,
            NOISE_STREAM,
            (0..per_epoch as u64)
                .map(|k| (first + k) * 2 * per)
                .collect(),
        )),
        adam: trainer.adam_schedule(first, per_epoch),
    })
}

/// The current scheduled iteration's batch, gathered on the backend (source-only has no
/// target batch: F's target input is the source batch, unused).
fn scheduled_batch<B: Backend>(
    backend: &B,
    experiment: Experiment,
    (src_images, tgt_images): &(B::Images, B::Images),
) -> Result<crate::gta::BackendBatch<B>> {
    let (x_s, x_s_unit, y_s) = backend.scheduled_batch(src_images)?;
    let (x_t, x_t_unit) = if experiment == Experiment::SourceOnly {
        (x_s.clone(), x_s_unit.clone())
    } else {
        let (x, u, _) = backend.scheduled_batch(tgt_images)?;
        (x, u)
    };
    Ok(Batch {
        x_s,
        x_s_unit,
        y_s,
        x_t,
        x_t_unit,
    })
}

/// The current scheduled iteration's noise: z_s, then z_t right after it.
fn scheduled_noise<B: Backend>(
    backend: &B,
    shape: &crate::shape::Shape,
) -> Result<Noise<B::Tensor>> {
    Ok(Noise {
        z_s: backend.scheduled_normal(0, shape)?,
        z_t: backend.scheduled_normal(shape.numel() as u64, shape)?,
    })
}

/// One training iteration from a loaded schedule (resident images): what `train` and the
/// iteration benchmark run.
struct ScheduledIteration<'a, B: Backend> {
    backend: &'a B,
    experiment: Experiment,
    images: &'a (B::Images, B::Images),
    noise_shape: &'a crate::shape::Shape,
    /// What a replayed iteration adds to the trainer's host counters (set by a capture).
    replay_counters: &'a mut Vec<i64>,
}

impl<B: Backend> ScheduledIteration<'_, B> {
    /// Replays the captured iteration when there is a valid one (not for a `sample` iteration,
    /// which keeps its generated images); else runs it launch by launch, captured on the way
    /// when `may_capture` (the iteration before was a training one: memory settled) and the
    /// backend can. The losses are added to `acc` on the backend.
    fn run(
        &mut self,
        trainer: &mut Trainer<B>,
        acc: &mut B::Tensor,
        sample: bool,
        may_capture: bool,
    ) -> Result<()> {
        let backend = self.backend;
        if !sample && backend.replay()? {
            // The host code of the captured iteration does not run again: its counters do.
            return trainer.add_host_counters(self.replay_counters);
        }
        backend.begin_iteration()?;
        let capturing = !sample && may_capture && backend.capture_begin()?;
        let before = trainer.host_counters();
        let batch = scheduled_batch(backend, self.experiment, self.images)?;
        let noise = scheduled_noise(backend, self.noise_shape)?;
        trainer.keep_samples = sample;
        let l = trainer.step_deferred(&batch, &noise)?;
        backend.accumulate(acc, &l)?;
        backend.advance_schedule()?;
        if capturing {
            backend.capture_end()?;
            *self.replay_counters = trainer
                .host_counters()
                .iter()
                .zip(&before)
                .map(|(a, b)| a - b)
                .collect();
        }
        Ok(())
    }
}

/// The run's training images resident on `backend` and epoch 1's schedule loaded (what the
/// iteration benchmark and the planner start from).
fn first_epoch_on_device<B: Backend>(
    backend: &B,
    cfg: &RunConfig,
    trainer: &Trainer<B>,
    data: &RunData,
) -> Result<(B::Images, B::Images)> {
    let images = match (
        backend.resident_split(&data.source.train)?,
        backend.resident_split(&data.target.train)?,
    ) {
        (Some(s), Some(t)) => (s, t),
        _ => {
            return Err(Error::invalid(
                "train",
                "the backend keeps no resident images",
            ))
        }
    };
    if !load_epoch_schedule(backend, cfg, trainer, &images, data, 1, 0)? {
        return Err(Error::invalid("train", "the backend takes no schedule"));
    }
    Ok(images)
}

/// Milliseconds per training iteration as `train` runs them on `backend` when it keeps the
/// images resident: the run's data and epoch-1 schedule, `warmup` iterations (the first keeps
/// samples, the next settle the arena and capture the graph when `backend` uses graphs), then
/// the mean over `iters` iterations timed together to a final synchronization (launches and
/// replays are asynchronous, as in training). For benchmarks; `warmup + iters` must fit an
/// epoch.
pub fn time_iterations<B: Backend>(
    backend: B,
    cfg: &RunConfig,
    warmup: usize,
    iters: usize,
) -> Result<f64> {
    let data = RunData::open(cfg)?;
    if warmup + iters > data.per_epoch || iters == 0 {
        return Err(Error::invalid(
            "time iterations",
            format!(
                "{warmup} + {iters} iterations (≥ 1 timed) in an epoch of {}",
                data.per_epoch
            ),
        ));
    }
    let mut trainer =
        Trainer::new(cfg.experiment, cfg.hyper, cfg.seed).to_backend(backend.clone())?;
    let images = first_epoch_on_device(&backend, cfg, &trainer, &data)?;
    let mut acc = backend.upload_persistent(&Tensor::zeros([4])?)?;
    let noise_shape = crate::shape::Shape::new(&[cfg.batch_size, cfg.hyper.widths.nz]);
    let mut replay_counters = Vec::new();
    let mut it = ScheduledIteration {
        backend: &backend,
        experiment: cfg.experiment,
        images: &images,
        noise_shape: &noise_shape,
        replay_counters: &mut replay_counters,
    };
    let mut started = Instant::now();
    for i in 0..warmup + iters {
        if i == warmup {
            backend.synchronize()?;
            started = Instant::now();
        }
        it.run(&mut trainer, &mut acc, i == 0, i > 0)?;
    }
    backend.synchronize()?;
    let ms = started.elapsed().as_secs_f64() * 1e3 / iters as f64;
    // The losses of the timed iterations are finite (a broken iteration is not a timing).
    let sums = backend.download(&acc)?;
    if sums.data().iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "time iterations",
            format!("non-finite losses {:?}", sums.data()),
        ));
    }
    Ok(ms)
}

/// The device memory a GPU run of `cfg` needs — persistent state (parameters, batch-norm
/// buffers, Adam moments, the resident training images) and the per-iteration arena's peak
/// over a training iteration and an evaluation chunk — found by running them on the
/// [`crate::gpu::plan::Planner`], which allocates as a GPU does and runs no kernel (memory
/// depends only on shapes). Exact for the arena and the persistent allocations; the CUDA
/// context and loaded modules come on top.
pub fn plan_device_memory(cfg: &RunConfig) -> Result<MemoryStats> {
    Ok(plan_device(cfg)?.memory)
}

/// What a GPU run of `cfg` needs, found by the planner.
#[derive(Clone, Debug)]
pub struct DevicePlan {
    /// See [`plan_device_memory`].
    pub memory: MemoryStats,
    /// Kernel launches of one training iteration (what a CUDA graph holds).
    pub launches: u64,
    /// The same per kernel, most launched first.
    pub by_kernel: Vec<(String, u64)>,
}

/// [`plan_device_memory`] and the kernel launches of one training iteration, in all and per
/// kernel.
pub fn plan_device(cfg: &RunConfig) -> Result<DevicePlan> {
    let planner = crate::gpu::plan::Planner::default();
    let backend = Gpu::new(planner.clone());
    let mut trainer =
        Trainer::new(cfg.experiment, cfg.hyper, cfg.seed).to_backend(backend.clone())?;
    let mut acc = backend.upload_persistent(&Tensor::zeros([4])?)?; // the loss sums
    let n = cfg.batch_size;
    // Two iterations as the run makes them: the first sizes the arena, the second runs inside
    // it (and is what a CUDA graph captures: its launches are counted).
    let mut launches = 0;
    let mut by_kernel = std::collections::BTreeMap::new();
    if cfg.input_norm == InputNorm::Dataset {
        let data = RunData::open(cfg)?;
        let resident = first_epoch_on_device(&backend, cfg, &trainer, &data)?;
        let shape = crate::shape::Shape::new(&[n, cfg.hyper.widths.nz]);
        let mut replay_counters = Vec::new();
        let mut it = ScheduledIteration {
            backend: &backend,
            experiment: cfg.experiment,
            images: &resident,
            noise_shape: &shape,
            replay_counters: &mut replay_counters,
        };
        for i in 0..2 {
            let before = (planner.launches(), planner.launches_by_kernel());
            it.run(&mut trainer, &mut acc, false, i > 0)?;
            launches = planner.launches() - before.0;
            by_kernel = per_kernel_since(&before.1, planner.launches_by_kernel());
        }
    } else {
        let images = Tensor::zeros([n, 3, 32, 32])?;
        let batch = Batch::from_normalized(images.clone(), vec![0; n], images)?;
        let noise = noise_for(cfg.seed, 0, n, cfg.hyper.widths.nz)?;
        for _ in 0..2 {
            let before = (planner.launches(), planner.launches_by_kernel());
            trainer.step(&batch, &noise)?;
            launches = planner.launches() - before.0;
            by_kernel = per_kernel_since(&before.1, planner.launches_by_kernel());
        }
    }
    let mut counter = backend.counter()?;
    let x = Tensor::zeros([EVAL_CHUNK, 3, 32, 32])?;
    trainer.add_correct(&x, &[0; EVAL_CHUNK], &mut counter)?;
    let memory = backend
        .memory_stats()
        .ok_or_else(|| Error::invalid("plan", "the GPU backend reports no memory"))?;
    let mut by_kernel: Vec<(String, u64)> = by_kernel.into_iter().collect();
    by_kernel.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(DevicePlan {
        memory,
        launches,
        by_kernel,
    })
}

/// Launches per kernel between two counts.
fn per_kernel_since(
    before: &std::collections::BTreeMap<String, u64>,
    now: std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    now.into_iter()
        .map(|(k, n)| {
            let b = before.get(&k).copied().unwrap_or(0);
            (k, n - b)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The two curves of the accuracy plot.
pub fn history_curves(history: &[EpochMetrics], exp: Experiment) -> Vec<report::Curve> {
    vec![
        report::Curve {
            label: format!("{} source val", exp.name()),
            points: history
                .iter()
                .map(|m| (m.epoch as f64, m.source_val_acc))
                .collect(),
            dashed: true,
            color_index: 0,
        },
        report::Curve {
            label: format!("{} target test", exp.name()),
            points: history
                .iter()
                .map(|m| (m.epoch as f64, m.target_test_acc))
                .collect(),
            dashed: false,
            color_index: 0,
        },
    ]
}

fn interrupted(signal: i32, epoch: usize, iteration: usize, dir: &RunDir) -> Error {
    Error::Interrupted {
        signal,
        epoch,
        iteration,
        checkpoint: dir.last().display().to_string(),
        command: health::resume_command(&dir.root),
    }
}

fn write_lines(path: &Path, lines: &[String]) -> Result<()> {
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    crate::checkpoint::write_file_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields_round_trip() {
        let m = EpochMetrics {
            epoch: 3,
            iterations: 7,
            source_val_acc: 91.25,
            target_test_acc: 12.5,
            target_train_acc: 13.0,
            losses: Losses {
                d: 1.5,
                g: 0.25,
                c: 0.125,
                f: 2.0,
            },
            lr: 4.9e-4,
            lr_g: 5e-4,
            seconds: 1.5,
            train_seconds: 1.25,
        };
        let line = m.to_json(Experiment::Exp1);
        assert_eq!(parse_metrics(&line), Some(m));
        assert_eq!(json_field(&line, "experiment"), Some("exp1"));
    }

    #[test]
    fn instance_norm_standardizes_each_image() {
        let mut v: Vec<f32> = (0..2 * 3072).map(|i| (i % 97) as f32 * 0.3 + 5.0).collect();
        instance_normalize(&mut v);
        for img in v.chunks(3072) {
            let m: f64 = img.iter().map(|&x| x as f64).sum::<f64>() / 3072.0;
            let s: f64 = img.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / 3072.0;
            assert!(m.abs() < 1e-5 && (s - 1.0).abs() < 1e-3);
        }
    }

    #[test]
    fn noise_is_a_function_of_seed_and_iteration() {
        let a = noise_for(1, 5, 3, 4).unwrap();
        let b = noise_for(1, 5, 3, 4).unwrap();
        let c = noise_for(1, 6, 3, 4).unwrap();
        assert_eq!(a.z_s.data(), b.z_s.data());
        assert_ne!(a.z_s.data(), a.z_t.data());
        assert_ne!(a.z_s.data(), c.z_s.data());
    }
}
