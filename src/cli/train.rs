//! `gtadapt train`, `gtadapt eval` and `gtadapt experiments`.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use gtadapt::checkpoint::{restore_trainer, StateDict};
use gtadapt::data::{self, Batcher, SplitKind};
use gtadapt::device::{probe_cuda, CudaStatus};
use gtadapt::gta::{Experiment, Hyper, Losses, Trainer};
use gtadapt::models::Widths;
use gtadapt::ops::loss::argmax_rows;
use gtadapt::report;
use gtadapt::train::{
    self, Device, EpochMetrics, GpuOptions, InputNorm, Precision, Progress, RunConfig, RunSummary,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExperimentArg {
    #[value(name = "source-only")]
    SourceOnly,
    Exp1,
    Exp2,
    Exp3,
}

impl From<ExperimentArg> for Experiment {
    fn from(e: ExperimentArg) -> Self {
        match e {
            ExperimentArg::SourceOnly => Experiment::SourceOnly,
            ExperimentArg::Exp1 => Experiment::Exp1,
            ExperimentArg::Exp2 => Experiment::Exp2,
            ExperimentArg::Exp3 => Experiment::Exp3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// A few minutes on 2 CPU cores: ndf = ngf = 32, nz 128, batch 64, 5 epochs.
    Quick,
    /// The authors' settings: ndf = ngf = 64, nz 512, batch 100, 100 epochs.
    Paper,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The GPU when the CUDA backend can use one, else the CPU.
    Auto,
    /// The CPU backend (reference ops, multi-threaded).
    Cpu,
    /// An NVIDIA GPU through the CUDA backend.
    Cuda,
    /// The CUDA kernels executed on the CPU by the SIMT emulator: checks the GPU path without
    /// a GPU (slow: tiny configurations only).
    Emu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NormArg {
    /// The authors' per-channel normalization (mean 0.44, std 0.19).
    Dataset,
    /// Per-image standardization, the lever later MNIST → SVHN work used.
    Instance,
}

/// Settings shared by `train` and `experiments` (unset flags take the preset's value).
#[derive(Args, Clone, Debug)]
pub struct Budget {
    /// Settings to start from; the flags below override single values.
    #[arg(long, value_enum, default_value_t = Preset::Quick)]
    pub preset: Preset,
    /// Source dataset (labelled): a name (embedded-mnist, embedded-mnistm, mnist, svhn) or a
    /// dataset directory.
    #[arg(long, default_value = "embedded-mnist")]
    pub source: String,
    /// Target dataset (its labels are used for evaluation only).
    #[arg(long, default_value = "embedded-mnistm")]
    pub target: String,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Cap on iterations per epoch (an epoch is otherwise as long as the shorter loader).
    #[arg(long, value_name = "N")]
    pub iters_per_epoch: Option<usize>,
    /// Adam learning rate of all four networks (authors: 5e-4).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Adam beta1 (authors: 0.8).
    #[arg(long)]
    pub beta1: Option<f64>,
    /// Noise dimension of G's input (authors: 512).
    #[arg(long)]
    pub nz: Option<usize>,
    /// Width of F, C and D (authors: 64; embedding = 2·ndf).
    #[arg(long)]
    pub ndf: Option<usize>,
    /// Width of G (authors: 64).
    #[arg(long)]
    pub ngf: Option<usize>,
    /// Weight of the adversarial terms in F's loss (authors: 0.1).
    #[arg(long)]
    pub adv_weight: Option<f32>,
    /// Extra weight of the target term in F's loss (authors: 0.3).
    #[arg(long)]
    pub alpha: Option<f32>,
    /// Learning-rate decay lr0/(1 + lrd·iteration) of D, F and C (authors: 1e-4).
    #[arg(long)]
    pub lrd: Option<f64>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = NormArg::Dataset)]
    pub input_norm: NormArg,
    /// Where to train. Runs are device-independent: a checkpoint from one device resumes on
    /// any other. `gtadapt train --dry-run` shows the device memory a configuration needs.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Arithmetic of the convolutions on the GPU backend: fp32 (FMA units), tf32 (tensor
    /// cores, sm_80+: inputs rounded to a 10-bit mantissa, f32 accumulation; faster, and
    /// within TF32 rounding of FP32), or auto (per layer: tf32 where both sides have ≥ 16
    /// channels — the large, compute-bound layers — fp32 on the thin RGB and one-channel
    /// layers, where tensor cores gain nothing).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    pub precision: PrecisionArg,
    /// GPU backend: run every iteration launch by launch instead of capturing one training
    /// iteration as a CUDA graph and replaying it (for debugging and profiling single kernels;
    /// the results are identical).
    #[arg(long)]
    pub no_graph: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    Fp32,
    Tf32,
    Auto,
}

impl Budget {
    fn config(&self, experiment: Experiment) -> Result<RunConfig> {
        let (width, nz, batch, epochs) = match self.preset {
            Preset::Quick => (32, 128, 64, 5),
            Preset::Paper => (64, 512, 100, 100),
        };
        let d = Hyper::default();
        let hyper = Hyper {
            widths: Widths {
                ndf: self.ndf.unwrap_or(width),
                ngf: self.ngf.unwrap_or(width),
                nz: self.nz.unwrap_or(nz),
            },
            lr: self.lr.unwrap_or(d.lr),
            beta1: self.beta1.unwrap_or(d.beta1),
            beta2: d.beta2,
            adv_weight: self.adv_weight.unwrap_or(d.adv_weight),
            alpha: self.alpha.unwrap_or(d.alpha),
            lrd: self.lrd.unwrap_or(d.lrd),
        };
        let cfg = RunConfig {
            experiment,
            hyper,
            source: self.source.clone(),
            target: self.target.clone(),
            epochs: self.epochs.unwrap_or(epochs),
            batch_size: self.batch_size.unwrap_or(batch),
            iters_per_epoch: self.iters_per_epoch,
            seed: self.seed,
            input_norm: match self.input_norm {
                NormArg::Dataset => InputNorm::Dataset,
                NormArg::Instance => InputNorm::Instance,
            },
        };
        validate(&cfg)?;
        Ok(cfg)
    }
}

fn validate(cfg: &RunConfig) -> Result<()> {
    let w = cfg.hyper.widths;
    if cfg.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if cfg.batch_size < 2 {
        bail!("--batch-size must be at least 2 (batch norm needs 2 values per channel)");
    }
    if cfg.iters_per_epoch == Some(0) {
        bail!("--iters-per-epoch must be at least 1");
    }
    if w.ndf == 0 || w.ngf == 0 || w.nz == 0 {
        bail!("--ndf, --ngf and --nz must be at least 1");
    }
    let h = &cfg.hyper;
    if !(h.lr > 0.0 && h.lr.is_finite()) {
        bail!("--lr must be a positive number, got {}", h.lr);
    }
    if !(0.0..1.0).contains(&h.beta1) {
        bail!("--beta1 must be in [0, 1), got {}", h.beta1);
    }
    if !(h.lrd >= 0.0 && h.lrd.is_finite()) {
        bail!("--lrd must be ≥ 0, got {}", h.lrd);
    }
    if !(h.adv_weight.is_finite() && h.alpha.is_finite()) {
        bail!("--adv-weight and --alpha must be finite");
    }
    Ok(())
}

/// The backend `--device` names, with `--precision`; `auto` takes the GPU when one is usable.
fn resolve_device(d: DeviceArg, precision: PrecisionArg, no_graph: bool) -> Result<Device> {
    let p = match precision {
        PrecisionArg::Fp32 => Precision::Fp32,
        PrecisionArg::Tf32 => Precision::Tf32,
        PrecisionArg::Auto => Precision::Auto,
    };
    let name = format!("{p:?}").to_lowercase();
    let o = GpuOptions {
        precision: p,
        graphs: !no_graph,
    };
    let gpu = || match probe_cuda() {
        CudaStatus::Ready { gpus, .. } if !gpus.is_empty() => Ok(()),
        CudaStatus::Ready { .. } => Err("the CUDA driver sees no GPU".to_string()),
        CudaStatus::NoDriver => Err("no NVIDIA driver (libcuda.so) on this machine".to_string()),
        CudaStatus::DriverError(e) => Err(e),
    };
    Ok(match d {
        DeviceArg::Cpu if p != Precision::Fp32 => bail!(
            "--precision {name} runs convolutions on tensor cores: it needs --device cuda (or \
             emu, which emulates them); the CPU backend computes in FP32"
        ),
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::Emu => Device::Emulator(o),
        DeviceArg::Cuda => match gpu() {
            Ok(()) => Device::Cuda(o),
            Err(why) => bail!(
                "--device cuda: {why}. Use --device cpu to train on the CPU (or --device auto to \
                 take a GPU only when there is one)."
            ),
        },
        DeviceArg::Auto => match gpu() {
            Ok(()) => Device::Cuda(o),
            Err(_) if p != Precision::Fp32 => bail!(
                "--precision {name} needs a GPU (tensor cores); none is usable here — use \
                 --device emu to emulate it, or drop --precision"
            ),
            Err(_) => Device::Cpu,
        },
    })
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[arg(long, value_enum, default_value_t = ExperimentArg::Exp1)]
    pub experiment: ExperimentArg,
    #[command(flatten)]
    pub budget: Budget,
    /// Run directory (default: runs/<experiment>-<preset>, numbered if taken).
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint, with its own settings (only --epochs
    /// may change, to extend it).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Start over in an --out directory that already holds a run.
    #[arg(long)]
    pub force: bool,
    /// Print the networks and their parameter counts, then exit.
    #[arg(long)]
    pub dry_run: bool,
}

/// A progress bar per epoch with live losses (hidden when stderr is not a terminal, where one
/// line per epoch is printed instead).
struct Bar {
    bar: Option<ProgressBar>,
    label: String,
}

impl Progress for Bar {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, iterations: usize) {
        let bar = ProgressBar::new(iterations as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta}) {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{} epoch {epoch}/{epochs}", self.label));
        self.bar = Some(bar);
    }
    fn iterations(&mut self, n: usize, l: &Losses) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "D {:.3} G {:.3} C {:.3} F {:.3}",
                l.d, l.g, l.c, l.f
            ));
            b.inc(n as u64);
        }
    }
    fn epoch_end(&mut self, m: &EpochMetrics) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        println!(
            "{} epoch {:>3}: source val {:6.2}%  target test {:6.2}%  target train {:6.2}%  \
             losses D {:.3} G {:.3} C {:.3} F {:.3}  ({:.1} s)",
            self.label,
            m.epoch,
            m.source_val_acc,
            m.target_test_acc,
            m.target_train_acc,
            m.losses.d,
            m.losses.g,
            m.losses.c,
            m.losses.f,
            m.seconds
        );
    }
}

fn default_out(exp: Experiment, preset: Preset) -> PathBuf {
    let base = format!(
        "runs/{}-{}",
        exp.name(),
        match preset {
            Preset::Quick => "quick",
            Preset::Paper => "paper",
        }
    );
    let mut p = PathBuf::from(&base);
    let mut k = 2;
    while p.exists() {
        p = PathBuf::from(format!("{base}-{k}"));
        k += 1;
    }
    p
}

fn graph_words(o: GpuOptions) -> &'static str {
    if o.graphs {
        "iterations replayed as a CUDA graph"
    } else {
        "launch by launch (--no-graph)"
    }
}

fn print_config(cfg: &RunConfig, out: &Path, device: Device) {
    let w = cfg.hyper.widths;
    let h = &cfg.hyper;
    let backend = match device {
        Device::Cpu => format!("CPU backend ({} threads)", rayon::current_num_threads()),
        Device::Emulator(o) => format!(
            "GPU backend on the SIMT emulator (CUDA kernels on the CPU), {:?} convolutions, {}",
            o.precision,
            graph_words(o)
        ),
        Device::Cuda(o) => format!(
            "GPU backend on CUDA, {:?} convolutions, {}",
            o.precision,
            graph_words(o)
        ),
    };
    println!(
        "gtadapt train: {} on {} → {}, {backend}",
        cfg.experiment.name(),
        cfg.source,
        cfg.target,
    );
    println!(
        "  epochs {}, batch {}, iterations/epoch {}, ndf {}, ngf {}, nz {}, lr {}, beta1 {}, \
         adv_weight {}, alpha {}, lrd {}, input norm {}, seed {}",
        cfg.epochs,
        cfg.batch_size,
        cfg.iters_per_epoch
            .map(|n| format!("≤ {n}"))
            .unwrap_or_else(|| "shorter loader".into()),
        w.ndf,
        w.ngf,
        w.nz,
        h.lr,
        h.beta1,
        h.adv_weight,
        h.alpha,
        h.lrd,
        cfg.input_norm.name(),
        cfg.seed
    );
    println!("  run directory: {}", out.display());
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn print_networks(exp: Experiment, hyper: Hyper) {
    let t = Trainer::new(exp, hyper, 0);
    println!("{} networks (trainable parameters / buffers):", exp.name());
    let mut total = 0;
    for net in t.networks() {
        println!(
            "  {:<8} {:>10} / {:>6}",
            net.name,
            net.num_params(),
            net.num_buffers()
        );
        total += net.num_params();
    }
    println!("  {:<8} {:>10}", "total", total);
}

fn print_summary(s: &RunSummary) {
    let (last, best) = (s.last(), s.best());
    println!();
    println!(
        "| {} ({} → {}) | epoch | source val | target test | target train |",
        s.config.experiment.name(),
        s.config.source,
        s.config.target
    );
    println!("|---|---:|---:|---:|---:|");
    for (what, m) in [("last epoch", last), ("best source-val epoch", best)] {
        println!(
            "| {what} | {} | {:.2}% | {:.2}% | {:.2}% |",
            m.epoch, m.source_val_acc, m.target_test_acc, m.target_train_acc
        );
    }
    println!(
        "\n{:.3} s per training iteration on {} (evaluation excluded); files in {}: \
         metrics.jsonl, accuracy.png, samples/, \
         checkpoints/last.safetensors, checkpoints/best.safetensors",
        s.seconds_per_iteration(),
        s.device,
        s.out.display()
    );
    if let Some(m) = s.memory {
        println!(
            "device memory: {:.1} MiB persistent (parameters, buffers, Adam state) + {:.1} MiB \
             per-iteration arena peak ({} driver allocations by the arena in all)",
            mib(m.persistent_bytes),
            mib(m.arena_peak_bytes),
            m.arena_driver_allocations
        );
        let total: u64 = s.epochs.iter().map(|e| e.iterations).sum();
        println!(
            "{} of {total} training iterations replayed from the captured CUDA graph",
            s.replayed_iterations
        );
    }
}

pub fn train(args: TrainArgs) -> Result<()> {
    let exp: Experiment = args.experiment.into();
    if args.resume.is_some() && args.force {
        bail!("--resume continues a run and --force starts one over: give one of them");
    }
    // SIGINT/SIGTERM: finish the iteration, write a checkpoint, exit 130/143.
    gtadapt::signal::install().context("could not install the SIGINT/SIGTERM handler")?;
    if let Some(dir) = &args.resume {
        let device = resolve_device(
            args.budget.device,
            args.budget.precision,
            args.budget.no_graph,
        )?;
        println!("gtadapt train: resuming the run in {}", dir.display());
        let mut bar = Bar {
            bar: None,
            label: "resume".into(),
        };
        let s = train::run_on(device, None, dir, true, false, args.budget.epochs, &mut bar)
            .with_context(|| format!("could not resume the run in {}", dir.display()))?;
        print_summary(&s);
        return Ok(());
    }
    let cfg = args.budget.config(exp)?;
    let device = resolve_device(
        args.budget.device,
        args.budget.precision,
        args.budget.no_graph,
    )?;
    if args.dry_run {
        print_networks(exp, cfg.hyper);
        let plan = train::plan_device(&cfg)
            .context("could not plan the device memory of this configuration")?;
        let (m, launches) = (plan.memory, plan.launches);
        println!(
            "device memory on the GPU backend (batch {}): {:.1} MiB persistent (parameters, \
             batch-norm buffers, Adam moments, resident training images) + {:.1} MiB \
             per-iteration arena = {:.1} MiB, plus the CUDA context",
            cfg.batch_size,
            mib(m.persistent_bytes),
            mib(m.arena_peak_bytes),
            mib(m.persistent_bytes + m.arena_peak_bytes)
        );
        println!(
            "kernel launches per training iteration on the GPU backend: {launches} (captured \
             once as a CUDA graph and replayed as one launch per iteration; --no-graph runs \
             them one by one)"
        );
        let top: Vec<String> = plan
            .by_kernel
            .iter()
            .take(8)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("  most launched: {}", top.join(", "));
        return Ok(());
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(exp, args.budget.preset));
    print_config(&cfg, &out, device);
    let mut bar = Bar {
        bar: None,
        label: exp.name().into(),
    };
    let s = train::run_on(device, Some(cfg), &out, false, args.force, None, &mut bar)
        .with_context(|| format!("training into {} failed", out.display()))?;
    print_summary(&s);
    Ok(())
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A checkpoint written by `gtadapt train` (last.safetensors or best.safetensors).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// Dataset name or directory.
    #[arg(long)]
    pub dataset: String,
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    pub split: SplitArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    Train,
    Test,
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let path = &args.checkpoint;
    let sd = StateDict::read(path)?;
    let (cfg, epoch, _) = train::config_from_checkpoint(&sd, path)?;
    let mut trainer = Trainer::new(cfg.experiment, cfg.hyper, 0);
    restore_trainer(&mut trainer, &sd, path)?;
    let ds = data::open(&args.dataset).with_context(|| format!("dataset {}", args.dataset))?;
    let split = ds.split(match args.split {
        SplitArg::Train => SplitKind::Train,
        SplitArg::Test => SplitKind::Test,
    });
    let mut confusion = [[0usize; 10]; 10];
    for b in Batcher::eval(split, 250)?.epoch(0) {
        let (x, _) = train::input_tensors(&b, cfg.input_norm)?;
        let logits = trainer.logits(x)?;
        let pred = argmax_rows(logits.data(), logits.dims2("eval")?)?;
        for (&p, &l) in pred.iter().zip(&b.labels) {
            confusion[l as usize][p as usize] += 1;
        }
    }
    let total: usize = confusion.iter().flatten().sum();
    let correct: usize = (0..10).map(|i| confusion[i][i]).sum();
    println!(
        "{} (epoch {epoch}) on {} {} split: {total} images",
        cfg.experiment.name(),
        args.dataset,
        if args.split == SplitArg::Train {
            "train"
        } else {
            "test"
        }
    );
    println!(
        "accuracy {:.2}%",
        100.0 * correct as f64 / total.max(1) as f64
    );
    println!("per class:");
    for (i, row) in confusion.iter().enumerate() {
        let n: usize = row.iter().sum();
        println!(
            "  {i}: {:6.2}% of {n}",
            100.0 * row[i] as f64 / n.max(1) as f64
        );
    }
    println!("confusion matrix (rows: true label, columns: predicted):");
    println!(
        "      {}",
        (0..10).map(|j| format!("{j:>5}")).collect::<String>()
    );
    for (i, row) in confusion.iter().enumerate() {
        println!(
            "  {i}:  {}",
            row.iter().map(|v| format!("{v:>5}")).collect::<String>()
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ExperimentsArgs {
    #[command(flatten)]
    pub budget: Budget,
    /// Directory for the four runs, table.md and accuracy.png (default: runs/experiments-<preset>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Start over where runs already exist.
    #[arg(long)]
    pub force: bool,
}

/// source-only, exp1, exp2 and exp3 with the same seed and budget, then one table and plot.
pub fn experiments(args: ExperimentsArgs) -> Result<()> {
    // SIGINT/SIGTERM: the running experiment finishes its iteration and writes a checkpoint
    // (continue it with `train --resume`), then the command stops.
    gtadapt::signal::install().context("could not install the SIGINT/SIGTERM handler")?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "runs/experiments-{}",
            match args.budget.preset {
                Preset::Quick => "quick",
                Preset::Paper => "paper",
            }
        ))
    });
    let exps = [
        Experiment::SourceOnly,
        Experiment::Exp1,
        Experiment::Exp2,
        Experiment::Exp3,
    ];
    let mut summaries = Vec::new();
    for exp in exps {
        let cfg = args.budget.config(exp)?;
        let device = resolve_device(
            args.budget.device,
            args.budget.precision,
            args.budget.no_graph,
        )?;
        let dir = out.join(exp.name());
        print_config(&cfg, &dir, device);
        let mut bar = Bar {
            bar: None,
            label: exp.name().into(),
        };
        let s = train::run_on(device, Some(cfg), &dir, false, args.force, None, &mut bar)
            .with_context(|| format!("{} into {} failed", exp.name(), dir.display()))?;
        summaries.push(s);
    }
    let table = experiments_table(&summaries);
    let curves: Vec<report::Curve> = summaries
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            train::history_curves(&s.epochs, s.config.experiment)
                .into_iter()
                .map(move |mut c| {
                    c.color_index = i;
                    c
                })
        })
        .collect();
    std::fs::create_dir_all(&out)?;
    gtadapt::checkpoint::write_file_atomic(&out.join("table.md"), table.as_bytes())?;
    report::write_accuracy_plot(&out.join("accuracy.png"), &curves)?;
    println!("\n{table}");
    println!(
        "table: {}, plot: {}",
        out.join("table.md").display(),
        out.join("accuracy.png").display()
    );
    Ok(())
}

/// The follow-up study's table: target accuracy at the last and at the best-source-val epoch.
pub fn experiments_table(summaries: &[RunSummary]) -> String {
    let mut t = String::new();
    if let Some(s) = summaries.first() {
        let c = &s.config;
        t += &format!(
            "{} → {}, {} epochs, batch {}, ndf {}, ngf {}, nz {}, seed {}, input norm {}\n\n",
            c.source,
            c.target,
            c.epochs,
            c.batch_size,
            c.hyper.widths.ndf,
            c.hyper.widths.ngf,
            c.hyper.widths.nz,
            c.seed,
            c.input_norm.name()
        );
    }
    t += "| experiment | target test, last epoch | target test, best source-val epoch | source val, last | target train, last | s / iteration |\n";
    t += "|---|---:|---:|---:|---:|---:|\n";
    for s in summaries {
        let (l, b) = (s.last(), s.best());
        t += &format!(
            "| {} | {:.2}% | {:.2}% (epoch {}) | {:.2}% | {:.2}% | {:.3} |\n",
            s.config.experiment.name(),
            l.target_test_acc,
            b.target_test_acc,
            b.epoch,
            l.source_val_acc,
            l.target_train_acc,
            s.seconds_per_iteration()
        );
    }
    t
}
