//! The GTA iteration (DESIGN.md §1), exp3's variant, and the source-only baseline.
//!
//! One iteration, as in the authors' code:
//! 1. D step — e_s = F(x_s), e_t = F(x_t), g_s = G([onehot(y_s), e_s, z_s]),
//!    g_t = G([onehot(10), e_t, z_t]) and C(e_s) are computed once, on one tape.
//!    L_D = CE(D_c(x_s'), y_s) + BCE(D_s(x_s'), 1) + BCE(D_s(g_s), 0) + BCE(D_s(g_t), 0);
//!    D is updated.
//! 2. G step with the updated D: L_G = CE(D_c(g_s), y_s) + BCE(D_s(g_s), 1).
//! 3. C step: L_C = CE(C(e_s), y_s).
//! 4. F step: L_F = L_C + adv·CE(D_c(g_s), y_s) + adv·alpha·BCE(D_s(g_t), 1), through C, the
//!    updated D and G into F.
//!
//! The G, C and F gradients are all taken (four backward passes over the one tape) before any
//! of those networks is updated, so each gradient uses the weights that produced the forward
//! values it differentiates. The authors' 2018 code updated G and C in place before the F
//! backward, mixing new weights into it; current PyTorch refuses that graph.
//!
//! D is run as often, and in the same order, as in the authors' code (D(x_s'), D(g_s),
//! D(g_t); D(g_s) for G; D(g_s), D(g_t) for F), so batch-norm running statistics match.

use crate::backend::{Backend, Cpu, TensorValue};
use crate::data::batch::to_d_range;
use crate::error::{Error, Result};
use crate::models::{
    Backbone, Classifier, Discriminator, Embedder, Generator, GeneratorArch, PatchDiscriminator,
    Widths, CLASSES,
};
use crate::nn::init::Init;
use crate::nn::Network;
use crate::ops::adam::{AdamConfig, AdamScalars, AdamState};
use crate::ops::loss::BceTarget;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// Which experiment (DESIGN.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Experiment {
    /// F1 + C1 trained with CE on the source only.
    SourceOnly,
    /// F1, C1, G, D — the authors' networks.
    Exp1,
    /// F2, C2, G, D.
    Exp2,
    /// F1, C1, G4, D_src (11-way), D_tgt (real/fake).
    Exp3,
}

impl Experiment {
    pub fn name(self) -> &'static str {
        match self {
            Experiment::SourceOnly => "source-only",
            Experiment::Exp1 => "exp1",
            Experiment::Exp2 => "exp2",
            Experiment::Exp3 => "exp3",
        }
    }
    pub fn backbone(self) -> Backbone {
        match self {
            Experiment::Exp2 => Backbone::F2C2,
            _ => Backbone::F1C1,
        }
    }
}

/// Hyper-parameters; `Default` gives the authors' values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
    pub widths: Widths,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adv_weight: f32,
    pub alpha: f32,
    /// Learning-rate decay: lr = lr0 / (1 + lrd · iteration), for D, F and C (not G).
    pub lrd: f64,
}

impl Default for Hyper {
    fn default() -> Self {
        Hyper {
            widths: Widths::default(),
            lr: 5e-4,
            beta1: 0.8,
            beta2: 0.999,
            adv_weight: 0.1,
            alpha: 0.3,
            lrd: 1e-4,
        }
    }
}

/// One training batch: what F sees (normalized source and target images [B,3,32,32]), what
/// D sees of the same real images (pixels in [−1, 1]), and the source labels. Host tensors and
/// labels by default, or any backend's.
#[derive(Clone, Debug)]
pub struct Batch<T = Tensor, L = Vec<u32>> {
    pub x_s: T,
    pub x_s_unit: T,
    pub y_s: L,
    pub x_t: T,
    pub x_t_unit: T,
}

/// A batch in backend `B`'s memory.
pub type BackendBatch<B> = Batch<<B as Backend>::Tensor, <B as Backend>::Labels>;

impl Batch {
    /// A copy of the batch in `backend`'s memory.
    pub fn upload<B: Backend>(&self, backend: &B) -> Result<BackendBatch<B>> {
        self.clone().into_backend(backend)
    }

    /// The batch moved to `backend`'s memory (no copy on the CPU). Labels must be classes.
    pub fn into_backend<B: Backend>(self, backend: &B) -> Result<BackendBatch<B>> {
        if let Some(&bad) = self.y_s.iter().find(|&&l| l as usize >= CLASSES) {
            return Err(Error::invalid(
                "gta step",
                format!("label {bad} ≥ {CLASSES}"),
            ));
        }
        Ok(Batch {
            x_s: backend.upload_owned(self.x_s)?,
            x_s_unit: backend.upload_owned(self.x_s_unit)?,
            y_s: backend.upload_labels(&self.y_s)?,
            x_t: backend.upload_owned(self.x_t)?,
            x_t_unit: backend.upload_owned(self.x_t_unit)?,
        })
    }
}

impl Batch {
    /// A batch from dataset-normalized images; D's views are derived as the authors do.
    pub fn from_normalized(x_s: Tensor, y_s: Vec<u32>, x_t: Tensor) -> Result<Self> {
        Ok(Batch {
            x_s_unit: to_unit_range(&x_s)?,
            x_t_unit: to_unit_range(&x_t)?,
            x_s,
            y_s,
            x_t,
        })
    }
}

/// The noise of one iteration: z for g_s and z' for g_t, each [B, nz].
#[derive(Clone, Debug)]
pub struct Noise<T = Tensor> {
    pub z_s: T,
    pub z_t: T,
}

impl Noise {
    /// The noise in `backend`'s memory.
    pub fn upload<B: Backend>(&self, backend: &B) -> Result<Noise<B::Tensor>> {
        Ok(Noise {
            z_s: backend.upload(&self.z_s)?,
            z_t: backend.upload(&self.z_t)?,
        })
    }
}

/// The losses of one iteration (source-only reports its CE as `c` and `f`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Losses {
    pub d: f32,
    pub g: f32,
    pub c: f32,
    pub f: f32,
}

/// The adversarial part of an experiment.
#[derive(Debug)]
pub enum Adversary<B: Backend = Cpu> {
    None,
    /// exp1 / exp2: G and the two-headed D.
    Gd {
        g: Generator<B>,
        d: Discriminator<B>,
    },
    /// exp3: G4, D_src and D_tgt.
    Split {
        g: Generator<B>,
        d_src: PatchDiscriminator<B>,
        d_tgt: PatchDiscriminator<B>,
    },
}

/// Everything that changes during training (what a checkpoint holds), on backend `B`.
/// Built on the CPU ([`Trainer::new`]) and moved with [`Trainer::to_backend`].
#[derive(Debug)]
pub struct Trainer<B: Backend = Cpu> {
    pub experiment: Experiment,
    pub hyper: Hyper,
    pub f: Embedder<B>,
    pub c: Classifier<B>,
    pub adversary: Adversary<B>,
    /// Adam states per network, in the order of [`Trainer::networks`].
    pub adam: Vec<Vec<B::AdamState>>,
    /// Iterations done so far.
    pub iteration: u64,
    /// When set, the next adversarial step keeps its generated images in `generated`.
    pub keep_samples: bool,
    /// (g_s, g_t) of the last step run with `keep_samples` set.
    pub generated: Option<(Tensor, Tensor)>,
    /// When set, every gradient handed to Adam is kept in `recorded_grads` (parity tests).
    pub record_grads: bool,
    /// (network index in [`Trainer::networks`] order, its parameter gradients), in update order.
    pub recorded_grads: Vec<(usize, Vec<Tensor>)>,
    /// When set, every step adds the wall-clock seconds of its phases here (forward, D, G/F
    /// forward, G, C, F), waiting for the device at each phase boundary — for timing only: it
    /// serializes a GPU's queue.
    pub phase_seconds: Option<Vec<(&'static str, f64)>>,
    phase_clock: Option<std::time::Instant>,
    /// Where the state lives and the ops run.
    pub backend: B,
}

fn adam_for(net: &Network) -> Vec<AdamState> {
    net.params
        .iter()
        .map(|p| AdamState::new(p.value.numel()))
        .collect()
}

/// D's view of a dataset-normalized batch: the pixels rescaled to [−1, 1].
fn to_unit_range(x: &Tensor) -> Result<Tensor> {
    let v = x.data().iter().map(|&p| to_d_range(p)).collect();
    Tensor::new(x.shape().clone(), v)
}

impl Trainer {
    /// Fresh networks with the authors' initialization drawn from `seed`.
    pub fn new(experiment: Experiment, hyper: Hyper, seed: u64) -> Self {
        let init = Init { seed };
        let w = hyper.widths;
        let backbone = experiment.backbone();
        let f = Embedder::new(backbone, w, &init);
        let c = Classifier::new(backbone, w, &init);
        let adversary = match experiment {
            Experiment::SourceOnly => Adversary::None,
            Experiment::Exp1 | Experiment::Exp2 => Adversary::Gd {
                g: Generator::new(GeneratorArch::G, f.dim, w, &init),
                d: Discriminator::new(w, &init),
            },
            Experiment::Exp3 => Adversary::Split {
                g: Generator::new(GeneratorArch::G4, f.dim, w, &init),
                d_src: PatchDiscriminator::new("netDsrc", CLASSES + 1, w, &init),
                d_tgt: PatchDiscriminator::new("netDtgt", 1, w, &init),
            },
        };
        let mut t = Trainer {
            experiment,
            hyper,
            f,
            c,
            adversary,
            adam: Vec::new(),
            iteration: 0,
            keep_samples: false,
            generated: None,
            record_grads: false,
            recorded_grads: Vec::new(),
            phase_seconds: None,
            phase_clock: None,
            backend: Cpu,
        };
        t.adam = t.networks().into_iter().map(adam_for).collect();
        t
    }
}

impl<B: Backend> Adversary<B> {
    fn to_backend<B2: Backend>(&self, from: &B, to: &B2) -> Result<Adversary<B2>> {
        Ok(match self {
            Adversary::None => Adversary::None,
            Adversary::Gd { g, d } => Adversary::Gd {
                g: g.to_backend(from, to)?,
                d: d.to_backend(from, to)?,
            },
            Adversary::Split { g, d_src, d_tgt } => Adversary::Split {
                g: g.to_backend(from, to)?,
                d_src: d_src.to_backend(from, to)?,
                d_tgt: d_tgt.to_backend(from, to)?,
            },
        })
    }
}

impl<B: Backend> Trainer<B> {
    /// This trainer with its whole state (parameters, batch-norm buffers, Adam moments) on
    /// backend `to`: e.g. CPU → GPU to train, GPU → CPU to checkpoint or inspect.
    pub fn to_backend<B2: Backend>(&self, to: B2) -> Result<Trainer<B2>> {
        let from = &self.backend;
        let adam = self
            .adam
            .iter()
            .map(|states| {
                states
                    .iter()
                    .map(|s| to.adam_state(&from.download_adam_state(s)?))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        Ok(Trainer {
            experiment: self.experiment,
            hyper: self.hyper,
            f: self.f.to_backend(from, &to)?,
            c: self.c.to_backend(from, &to)?,
            adversary: self.adversary.to_backend(from, &to)?,
            adam,
            iteration: self.iteration,
            keep_samples: self.keep_samples,
            generated: self.generated.clone(),
            record_grads: self.record_grads,
            recorded_grads: self.recorded_grads.clone(),
            phase_seconds: self.phase_seconds.clone(),
            phase_clock: None,
            backend: to,
        })
    }

    /// A CPU copy of the whole state (for checkpoints and evaluation on the host).
    pub fn to_cpu(&self) -> Result<Trainer> {
        self.to_backend(Cpu)
    }

    /// The networks in a fixed order: F, C, then G, D (exp1/2) or G, D_src, D_tgt (exp3).
    pub fn networks(&self) -> Vec<&Network<B>> {
        let mut v = vec![&self.f.net, &self.c.net];
        match &self.adversary {
            Adversary::None => {}
            Adversary::Gd { g, d } => v.extend([&g.net, &d.net]),
            Adversary::Split { g, d_src, d_tgt } => v.extend([&g.net, &d_src.net, &d_tgt.net]),
        }
        v
    }

    pub fn networks_mut(&mut self) -> Vec<&mut Network<B>> {
        let mut v = vec![&mut self.f.net, &mut self.c.net];
        match &mut self.adversary {
            Adversary::None => {}
            Adversary::Gd { g, d } => v.extend([&mut g.net, &mut d.net]),
            Adversary::Split { g, d_src, d_tgt } => {
                v.extend([&mut g.net, &mut d_src.net, &mut d_tgt.net])
            }
        }
        v
    }

    /// The host-side counters a training iteration advances: the iteration count and every
    /// batch norm's `num_batches_tracked`. An iteration replayed from a captured graph runs no
    /// host code, so the caller adds what the captured iteration added
    /// ([`Trainer::add_host_counters`]).
    pub fn host_counters(&self) -> Vec<i64> {
        let mut v = vec![self.iteration as i64];
        for net in self.networks() {
            v.extend(net.batch_norms.iter().map(|b| b.num_batches_tracked));
        }
        v
    }

    /// Adds `delta` (a difference of two [`Trainer::host_counters`]) to the host counters.
    pub fn add_host_counters(&mut self, delta: &[i64]) -> Result<()> {
        let (first, rest) = delta
            .split_first()
            .ok_or_else(|| Error::invalid("host counters", "empty"))?;
        let mut counters: Vec<&mut i64> = Vec::new();
        for net in self.networks_mut() {
            counters.extend(
                net.batch_norms
                    .iter_mut()
                    .map(|b| &mut b.num_batches_tracked),
            );
        }
        if counters.len() != rest.len() || *first < 0 {
            return Err(Error::invalid(
                "host counters",
                format!("{} values for {} counters", delta.len(), counters.len() + 1),
            ));
        }
        for (c, d) in counters.into_iter().zip(rest) {
            *c += d;
        }
        self.iteration += *first as u64;
        Ok(())
    }

    /// The decayed learning rate of D, F and C for the next iteration (G keeps lr0).
    pub fn lr_decayed(&self) -> f64 {
        self.lr_at(self.iteration)
    }

    fn lr_at(&self, iteration: u64) -> f64 {
        self.hyper.lr / (1.0 + self.hyper.lrd * iteration as f64)
    }

    /// The learning rate of network `index` (in [`Trainer::networks`] order) at `iteration`:
    /// G keeps lr0, the others decay.
    fn network_lr(&self, index: usize, iteration: u64) -> f64 {
        let is_g = index == 2 && !matches!(self.adversary, Adversary::None);
        if is_g {
            self.hyper.lr
        } else {
            self.lr_at(iteration)
        }
    }

    /// Adam's scalars of `steps` iterations from iteration `first` on, one row per
    /// iteration, one column per network (the Adam table of a [`crate::backend::Schedule`]).
    /// Assumes each Adam state takes one step per iteration (as training does; a GPU backend
    /// checks every update against the table).
    pub fn adam_schedule(&self, first: u64, steps: usize) -> Vec<Vec<AdamScalars<f32>>> {
        let nets = self.networks().len();
        (0..steps as u64)
            .map(|k| {
                let it = first + k;
                (0..nets)
                    .map(|i| AdamScalars::new(it + 1, &self.adam_config(self.network_lr(i, it))))
                    .collect()
            })
            .collect()
    }

    fn adam_config(&self, lr: f64) -> AdamConfig {
        AdamConfig {
            lr,
            beta1: self.hyper.beta1,
            beta2: self.hyper.beta2,
            eps: 1e-8,
        }
    }

    /// Closes the current phase under `name` (see [`Trainer::phase_seconds`]); `None` opens
    /// the first phase of a step.
    fn phase(&mut self, name: Option<&'static str>) -> Result<()> {
        let Some(phases) = self.phase_seconds.as_mut() else {
            return Ok(());
        };
        self.backend.synchronize()?;
        let now = std::time::Instant::now();
        if let (Some(name), Some(start)) = (name, self.phase_clock) {
            let dt = (now - start).as_secs_f64();
            match phases.iter_mut().find(|(n, _)| *n == name) {
                Some(p) => p.1 += dt,
                None => phases.push((name, dt)),
            }
        }
        self.phase_clock = Some(now);
        Ok(())
    }

    /// Applies `grads` to network `index` (in [`Trainer::networks`] order) with its learning
    /// rate of this iteration.
    fn update(&mut self, index: usize, grads: &[B::Tensor]) -> Result<()> {
        if self.record_grads {
            let host = grads
                .iter()
                .map(|g| self.backend.download(g))
                .collect::<Result<_>>()?;
            self.recorded_grads.push((index, host));
        }
        let cfg = self.adam_config(self.network_lr(index, self.iteration));
        let mut adam = std::mem::take(&mut self.adam[index]);
        let backend = self.backend.clone();
        let result = {
            let mut nets = self.networks_mut();
            let mut params: Vec<&mut B::Tensor> = nets[index]
                .params
                .iter_mut()
                .map(|p| &mut p.value)
                .collect();
            backend.adam_update(&mut params, grads, &mut adam, &cfg, index)
        };
        self.adam[index] = adam;
        result
    }

    /// One training iteration on host data (uploaded here), its losses read back.
    pub fn step(&mut self, batch: &Batch, noise: &Noise) -> Result<Losses> {
        self.backend.begin_iteration()?;
        let (b, z) = (batch.upload(&self.backend)?, noise.upload(&self.backend)?);
        let l = self.step_deferred(&b, &z)?;
        let v = self.backend.download(&l)?;
        let [d, g, c, f] = v.data() else {
            return Err(Error::Autograd("losses: expected 4 values".into()));
        };
        Ok(Losses {
            d: *d,
            g: *g,
            c: *c,
            f: *f,
        })
    }

    /// One training iteration on a batch and noise already in the backend's memory (made
    /// after [`Backend::begin_iteration`], which the caller runs first). Returns the losses
    /// as a [4] tensor (D, G, C, F) left on the backend, so a GPU run reads them back only
    /// when it logs. `noise` is ignored by source-only.
    pub fn step_deferred(
        &mut self,
        batch: &BackendBatch<B>,
        noise: &Noise<B::Tensor>,
    ) -> Result<B::Tensor> {
        let n = self.backend.labels_len(&batch.y_s);
        if batch.x_s.dims() != [n, 3, 32, 32] || batch.x_t.dims().first() != Some(&n) {
            return Err(Error::shape(
                "gta step",
                format!(
                    "x_s {}, x_t {}, {} labels",
                    batch.x_s.shape(),
                    batch.x_t.shape(),
                    n
                ),
            ));
        }
        let losses = match self.experiment {
            Experiment::SourceOnly => self.step_source_only(batch)?,
            _ => self.step_adversarial(batch, noise)?,
        };
        self.iteration += 1;
        Ok(losses)
    }

    fn step_source_only(&mut self, batch: &BackendBatch<B>) -> Result<B::Tensor> {
        self.phase(None)?;
        let mut tape = Tape::on(self.backend.clone());
        let fv = self.f.net.bind(&mut tape)?;
        let cv = self.c.net.bind(&mut tape)?;
        let x = tape.input(batch.x_s.clone());
        let e = self.f.forward(&mut tape, &fv, x, true)?;
        let logits = self.c.forward(&mut tape, &cv, e, true)?;
        let loss = tape.cross_entropy_with(logits, &batch.y_s)?;
        self.phase(Some("forward"))?;
        let gf = tape.backward(loss, &fv)?;
        self.phase(Some("F"))?;
        let gc = tape.backward(loss, &cv)?;
        self.phase(Some("C"))?;
        self.update(1, &gc)?;
        self.phase(Some("C"))?;
        self.update(0, &gf)?;
        self.phase(Some("F"))?;
        let l = tape.value(loss);
        let zero = self.backend.full(l.shape(), 0.0)?;
        losses4(&self.backend, [&zero, &zero, l, l])
    }

    fn step_adversarial(
        &mut self,
        batch: &BackendBatch<B>,
        noise: &Noise<B::Tensor>,
    ) -> Result<B::Tensor> {
        self.phase(None)?;
        let n = self.backend.labels_len(&batch.y_s);
        let hp = self.hyper;
        let mut tape = Tape::on(self.backend.clone());
        let fv = self.f.net.bind(&mut tape)?;
        let cv = self.c.net.bind(&mut tape)?;
        let x_s = tape.input(batch.x_s.clone());
        let x_t = tape.input(batch.x_t.clone());
        let x_s_unit = tape.input(batch.x_s_unit.clone());
        // G's class input: the source labels, and class 10 ("target") for the target batch.
        let oh_s = tape.input(self.backend.one_hot(&batch.y_s, CLASSES + 1)?);
        let target_class = self.backend.full_labels(n, CLASSES as u32)?;
        let oh_t = tape.input(self.backend.one_hot(&target_class, CLASSES + 1)?);
        let z_s = tape.input(noise.z_s.clone());
        let z_t = tape.input(noise.z_t.clone());
        let y = &batch.y_s;
        let real = || BceTarget::Constant(1.0);
        let fake = || BceTarget::Constant(0.0);

        let e_s = self.f.forward(&mut tape, &fv, x_s, true)?;
        let e_t = self.f.forward(&mut tape, &fv, x_t, true)?;
        let (gv, g_s, g_t) = {
            let g = match &mut self.adversary {
                Adversary::Gd { g, .. } | Adversary::Split { g, .. } => g,
                Adversary::None => unreachable!("adversarial step without an adversary"),
            };
            let gv = g.net.bind(&mut tape)?;
            let g_s = g.forward(&mut tape, &gv, oh_s, e_s, z_s, true)?;
            let g_t = g.forward(&mut tape, &gv, oh_t, e_t, z_t, true)?;
            (gv, g_s, g_t)
        };
        if self.keep_samples {
            let b = &self.backend;
            self.generated = Some((b.download(tape.value(g_s))?, b.download(tape.value(g_t))?));
            self.keep_samples = false;
        }
        let c_s = self.c.forward(&mut tape, &cv, e_s, true)?;
        let loss_c = tape.cross_entropy_with(c_s, y)?;
        self.phase(Some("forward"))?;

        // 1. D step (old D), then update D. 2.–4. losses with the updated D.
        let (loss_d, loss_g, loss_f_adv) = match &mut self.adversary {
            Adversary::None => unreachable!(),
            Adversary::Gd { d, .. } => {
                let dv = d.net.bind(&mut tape)?;
                let (s_real, c_real) = d.forward(&mut tape, &dv, x_s_unit, true)?;
                let (s_fs, _) = d.forward(&mut tape, &dv, g_s, true)?;
                let (s_ft, _) = d.forward(&mut tape, &dv, g_t, true)?;
                let terms = [
                    tape.cross_entropy_with(c_real, y)?,
                    tape.bce_with_logits(s_real, real())?,
                    tape.bce_with_logits(s_fs, fake())?,
                    tape.bce_with_logits(s_ft, fake())?,
                ];
                let loss_d = sum(&mut tape, &terms)?;
                let gd = tape.backward(loss_d, &dv)?;
                let dv_new = self.update_and_rebind(&mut tape, 3, &gd)?;
                self.phase(Some("D"))?;
                let d = match &mut self.adversary {
                    Adversary::Gd { d, .. } => d,
                    _ => unreachable!(),
                };
                let dv = &dv_new;
                let (s_gs, c_gs) = d.forward(&mut tape, dv, g_s, true)?;
                let terms = [
                    tape.cross_entropy_with(c_gs, y)?,
                    tape.bce_with_logits(s_gs, real())?,
                ];
                let loss_g = sum(&mut tape, &terms)?;
                let (_, c_gs2) = d.forward(&mut tape, dv, g_s, true)?;
                let (s_gt2, _) = d.forward(&mut tape, dv, g_t, true)?;
                let src = tape.cross_entropy_with(c_gs2, y)?;
                let tgt = tape.bce_with_logits(s_gt2, real())?;
                (loss_d, loss_g, (src, tgt))
            }
            Adversary::Split { d_src, d_tgt, .. } => {
                let sv = d_src.net.bind(&mut tape)?;
                let tv = d_tgt.net.bind(&mut tape)?;
                let x_t_unit = tape.input(batch.x_t_unit.clone());
                let fake_class = self.backend.full_labels(n, CLASSES as u32)?;
                let o_real = d_src.forward(&mut tape, &sv, x_s_unit, true)?;
                let o_fake = d_src.forward(&mut tape, &sv, g_s, true)?;
                let t_real = d_tgt.forward(&mut tape, &tv, x_t_unit, true)?;
                let t_fake = d_tgt.forward(&mut tape, &tv, g_t, true)?;
                let terms = [
                    tape.cross_entropy_with(o_real, y)?,
                    tape.cross_entropy_with(o_fake, &fake_class)?,
                    tape.bce_with_logits(t_real, real())?,
                    tape.bce_with_logits(t_fake, fake())?,
                ];
                let loss_d = sum(&mut tape, &terms)?;
                let mut wrt = sv.clone();
                wrt.extend_from_slice(&tv);
                let mut grads = tape.backward(loss_d, &wrt)?;
                let gt = grads.split_off(sv.len());
                let new_s = self.update_and_rebind(&mut tape, 3, &grads)?;
                let new_t = self.update_and_rebind(&mut tape, 4, &gt)?;
                self.phase(Some("D"))?;
                let (d_src, d_tgt) = match &mut self.adversary {
                    Adversary::Split { d_src, d_tgt, .. } => (d_src, d_tgt),
                    _ => unreachable!(),
                };
                let (sv, tv) = (&new_s, &new_t);
                let o = d_src.forward(&mut tape, sv, g_s, true)?;
                let t = d_tgt.forward(&mut tape, tv, g_t, true)?;
                let terms = [
                    tape.cross_entropy_with(o, y)?,
                    tape.bce_with_logits(t, real())?,
                ];
                let loss_g = sum(&mut tape, &terms)?;
                let o2 = d_src.forward(&mut tape, sv, g_s, true)?;
                let t2 = d_tgt.forward(&mut tape, tv, g_t, true)?;
                let src = tape.cross_entropy_with(o2, y)?;
                let tgt = tape.bce_with_logits(t2, real())?;
                (loss_d, loss_g, (src, tgt))
            }
        };
        let src = tape.scale(loss_f_adv.0, hp.adv_weight)?;
        let tgt = tape.scale(loss_f_adv.1, hp.adv_weight * hp.alpha)?;
        let loss_f = sum(&mut tape, &[loss_c, src, tgt])?;

        // All three gradients before any of G, C, F changes.
        self.phase(Some("G/F forward"))?;
        let gg = tape.backward(loss_g, &gv)?;
        self.phase(Some("G"))?;
        let gc = tape.backward(loss_c, &cv)?;
        self.phase(Some("C"))?;
        let gf = tape.backward(loss_f, &fv)?;
        self.phase(Some("F"))?;
        self.update(2, &gg)?;
        self.phase(Some("G"))?;
        self.update(1, &gc)?;
        self.phase(Some("C"))?;
        self.update(0, &gf)?;
        self.phase(Some("F"))?;
        let v = |x| tape.value(x);
        losses4(&self.backend, [v(loss_d), v(loss_g), v(loss_c), v(loss_f)])
    }

    /// Updates network `index` and binds its new weights on `tape` (for the later steps).
    fn update_and_rebind(
        &mut self,
        tape: &mut Tape<B>,
        index: usize,
        grads: &[B::Tensor],
    ) -> Result<Vec<Var>> {
        self.update(index, grads)?;
        self.networks()[index].bind(tape)
    }

    /// Adds to `counter` the correct argmax(C(F(x))) predictions over `x` [N,3,32,32] (one
    /// evaluation pass; counted on the backend, so a GPU reads nothing back here).
    pub fn add_correct(
        &mut self,
        x: &Tensor,
        labels: &[u32],
        counter: &mut B::Counter,
    ) -> Result<()> {
        let n = x.dims4("evaluate")?[0];
        if labels.len() != n {
            return Err(Error::shape(
                "evaluate",
                format!("{n} images, {} labels", labels.len()),
            ));
        }
        self.backend.begin_iteration()?;
        let logits = self.logits_on(x)?;
        let labels = self.backend.upload_labels(labels)?;
        self.backend.count_correct(&logits, &labels, counter)
    }

    /// Number of correct argmax(C(F(x))) predictions over `x` [N,3,32,32], in chunks of `chunk`.
    pub fn count_correct(&mut self, x: &Tensor, labels: &[u32], chunk: usize) -> Result<usize> {
        let dims = x.dims4("evaluate")?;
        if labels.len() != dims[0] {
            return Err(Error::shape(
                "evaluate",
                format!("{} images, {} labels", dims[0], labels.len()),
            ));
        }
        let per = dims[1] * dims[2] * dims[3];
        let mut counter = self.backend.counter()?;
        for (start, lab) in (0..dims[0])
            .step_by(chunk.max(1))
            .zip(labels.chunks(chunk.max(1)))
        {
            let m = lab.len();
            let xs = Tensor::new(
                [m, dims[1], dims[2], dims[3]],
                x.data()[start * per..(start + m) * per].to_vec(),
            )?;
            self.add_correct(&xs, lab, &mut counter)?;
        }
        self.backend.read_counter(&counter)
    }

    /// C(F(x)) in evaluation mode (on the host).
    pub fn logits(&mut self, x: Tensor) -> Result<Tensor> {
        self.backend.begin_iteration()?;
        let logits = self.logits_on(&x)?;
        self.backend.download(&logits)
    }

    /// C(F(x)) in evaluation mode, left on the backend (within the current iteration).
    fn logits_on(&mut self, x: &Tensor) -> Result<B::Tensor> {
        let mut tape = Tape::on(self.backend.clone());
        let x = self.backend.upload(x)?;
        let (f, c) = (&mut self.f, &mut self.c);
        let out = tape.no_grad(|t| -> Result<Var> {
            let fv = f.net.bind(t)?;
            let cv = c.net.bind(t)?;
            let xv = t.input(x);
            let e = f.forward(t, &fv, xv, false)?;
            c.forward(t, &cv, e, false)
        })?;
        Ok(tape.value(out).clone())
    }
}

/// Four scalar losses (D, G, C, F) as one [4] tensor: one read-back instead of four.
fn losses4<B: Backend>(b: &B, l: [&B::Tensor; 4]) -> Result<B::Tensor> {
    let rows = l
        .iter()
        .map(|t| b.reshape(t, crate::shape::Shape::new(&[1, 1])))
        .collect::<Result<Vec<_>>>()?;
    let cat = b.concat_dim1(&rows.iter().collect::<Vec<_>>())?;
    b.reshape(&cat, crate::shape::Shape::new(&[4]))
}

/// Sum of scalar losses, in order.
fn sum<B: Backend>(tape: &mut Tape<B>, terms: &[Var]) -> Result<Var> {
    let mut acc = terms[0];
    for &t in &terms[1..] {
        acc = tape.add(acc, t)?;
    }
    Ok(acc)
}
