//! The `gtadapt` command line.

mod cli;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use gtadapt::data;
use gtadapt::device::{self, CudaStatus};

/// gtadapt — Generate To Adapt (GTA, CVPR 2018) unsupervised domain adaptation of digit
/// classifiers, trained by a from-scratch engine: hand-written kernels, an autograd tape and
/// four networks (embedder F, classifier C, generator G, discriminator D).
///
/// Start with `gtadapt train`: GTA (exp1) on the embedded MNIST → synthetic-colour pair, a few
/// minutes on a laptop CPU, with a result table, an accuracy plot, G's samples and
/// checkpoints. `gtadapt experiments` runs the follow-up study's four experiments with one
/// budget; `gtadapt data fetch mnist|svhn` gets the real datasets.
///
/// Today training runs on the CPU backend (every operation checked against finite differences
/// and PyTorch); the CUDA kernels are being built. `gtadapt info` shows what this machine offers.
#[derive(Parser)]
#[command(name = "gtadapt", version, about, long_about)]
struct Cli {
    /// Worker threads for the CPU backend (default: all cores; env RAYON_NUM_THREADS works too).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train GTA (or a variant) and report target accuracy.
    ///
    /// With no arguments: exp1 on embedded-mnist → embedded-mnistm with the `quick` preset
    /// (ndf = ngf = 32, nz 128, batch 64, 5 epochs: a few minutes on 2 cores). `--preset paper`
    /// gives the authors' settings; single flags override the preset. Writes metrics.jsonl,
    /// accuracy.png, samples/ and checkpoints/ into the run directory; `--resume DIR` continues
    /// an interrupted run exactly.
    Train(cli::train::TrainArgs),
    /// Accuracy, per-class accuracy and confusion matrix of a checkpoint on a dataset split.
    Eval(cli::train::EvalArgs),
    /// Run source-only, exp1, exp2 and exp3 with the same seed and budget; write a markdown
    /// table (target accuracy at the last and the best-source-validation epoch) and one plot.
    Experiments(cli::train::ExperimentsArgs),
    /// Show the version, CPU threads, the CUDA driver and GPUs, and how kernels are compiled.
    Info,
    /// Check the GPU kernels against the CPU backend (on the emulator or a GPU).
    Kernels {
        #[command(subcommand)]
        command: cli::kernels::KernelsCommand,
    },
    /// Datasets: download, import, inspect and preview.
    ///
    /// A dataset is named by `embedded-mnist` or `embedded-mnistm` (built in, no download),
    /// `mnist` or `svhn` (after `data fetch`), or the path of a directory holding
    /// train-images.idx, train-labels.idx, test-images.idx and test-labels.idx.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Download the official MNIST or SVHN files, verify their SHA-256, and convert them into a
    /// dataset directory (default: $GTADAPT_DATA_DIR/<name>, or datasets/<name>).
    Fetch {
        #[arg(value_enum)]
        dataset: FetchName,
        /// Dataset directory to create (raw downloads are kept in DIR/raw).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Base URL to download from instead of the official host (env GTADAPT_DATA_MIRROR).
        #[arg(long, value_name = "URL")]
        mirror: Option<String>,
    },
    /// Convert files already downloaded into a dataset directory (MNIST: the four IDX files,
    /// gzip or plain; SVHN: train_32x32.mat and test_32x32.mat).
    Import {
        #[arg(long, value_enum)]
        format: FetchName,
        /// Dataset directory to write.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show counts, shapes, the label histogram and pixel mean/std of a dataset (or of a
    /// single IDX file).
    Inspect {
        /// A dataset name or directory, or an IDX file.
        path: String,
    },
    /// Write a labelled grid of images (as the networks see them: 32×32 RGB) to a PNG file.
    /// `embedded` previews both embedded datasets into two files, OUT with
    /// `-embedded-mnist` and `-embedded-mnistm` added to its name.
    Preview {
        /// A dataset name or directory, or `embedded`.
        path: String,
        /// The PNG file to write.
        #[arg(long, value_name = "PNG")]
        out: PathBuf,
        /// Which split to show.
        #[arg(long, value_enum, default_value_t = SplitName::Train)]
        split: SplitName,
        /// How many images (the first ones of the split).
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Images per row.
        #[arg(long, default_value_t = 10)]
        columns: usize,
        /// Enlargement factor of each 32×32 image.
        #[arg(long, default_value_t = 2)]
        scale: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FetchName {
    Mnist,
    Svhn,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SplitName {
    Train,
    Test,
}

fn main() -> std::process::ExitCode {
    // Errors are printed with their context chain, without a backtrace even when
    // RUST_BACKTRACE is set: they are messages for a user, not crashes.
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A SIGINT/SIGTERM after a checkpoint: not a failure; say how to go on, and exit
            // with 128 + the signal number like a shell does.
            if let Some(i @ gtadapt::error::Error::Interrupted { .. }) = e.downcast_ref() {
                eprintln!("{i}");
                return std::process::ExitCode::from(i.exit_code());
            }
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        if n == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow::anyhow!("could not start {n} worker threads: {e}"))?;
    }
    match cli.command {
        Command::Train(a) => cli::train::train(a)?,
        Command::Eval(a) => cli::train::eval(a)?,
        Command::Experiments(a) => cli::train::experiments(a)?,
        Command::Info => info(),
        Command::Data { command } => data_command(command)?,
        Command::Kernels { command } => cli::kernels::run(command)?,
    }
    Ok(())
}

fn data_command(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Fetch {
            dataset,
            dir,
            mirror,
        } => {
            let source = match dataset {
                FetchName::Mnist => data::fetch::Source::Mnist,
                FetchName::Svhn => data::fetch::Source::Svhn,
            };
            let mirror = mirror.or_else(|| {
                std::env::var(data::fetch::MIRROR_ENV)
                    .ok()
                    .filter(|m| !m.is_empty())
            });
            let r = data::fetch::fetch(source, dir.as_deref(), mirror.as_deref(), true)
                .with_context(|| format!("data fetch {} failed", source.name()))?;
            for (name, outcome) in &r.files {
                match outcome {
                    data::fetch::Outcome::Downloaded { bytes } => {
                        println!("{name}: downloaded {bytes} bytes, SHA-256 verified")
                    }
                    data::fetch::Outcome::AlreadyPresent => {
                        println!("{name}: already present, SHA-256 verified")
                    }
                }
            }
            match &r.import {
                Some(i) => print_import(i),
                None => println!(
                    "{}: already a complete dataset, nothing to do",
                    r.dir.display()
                ),
            }
        }
        DataCommand::Import { format, out, files } => {
            let format = match format {
                FetchName::Mnist => data::import::Format::Mnist,
                FetchName::Svhn => data::import::Format::Svhn,
            };
            let r = data::import::import(format, &files, &out)
                .with_context(|| format!("data import --format {} failed", format.name()))?;
            print_import(&r);
        }
        DataCommand::Inspect { path } => {
            let p = Path::new(&path);
            if p.is_file() {
                print!(
                    "{}",
                    data::inspect::idx_report(p).context("data inspect failed")?
                );
            } else {
                let d = data::open(&path).context("data inspect failed")?;
                print!("{}", data::inspect::dataset_report(&d));
            }
        }
        DataCommand::Preview {
            path,
            out,
            split,
            count,
            columns,
            scale,
        } => {
            let which = match split {
                SplitName::Train => data::SplitKind::Train,
                SplitName::Test => data::SplitKind::Test,
            };
            let opts = data::preview::GridOptions { columns, scale };
            let jobs: Vec<(String, PathBuf)> = if path == "embedded" {
                data::embedded::NAMES
                    .iter()
                    .map(|n| (n.to_string(), suffixed(&out, n)))
                    .collect()
            } else {
                vec![(path, out)]
            };
            for (name, out) in jobs {
                let d = data::open(&name).context("data preview failed")?;
                let n = data::preview::preview_split(d.split(which), count, opts, &out)
                    .with_context(|| format!("data preview of {name} failed"))?;
                println!(
                    "{}: {n} images of {} ({} split)",
                    out.display(),
                    d.name,
                    which.name()
                );
            }
        }
    }
    Ok(())
}

/// `dir/grid.png` + `x` → `dir/grid-x.png`.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(e) => format!("{stem}-{suffix}.{}", e.to_string_lossy()),
        None => format!("{stem}-{suffix}"),
    };
    path.with_file_name(name)
}

fn print_import(r: &data::import::ImportReport) {
    let [c, h, w] = r.image_shape;
    println!(
        "{}: train {} images, test {} images, {c}×{h}×{w} each",
        r.dir.display(),
        r.train,
        r.test
    );
}

fn info() {
    println!("gtadapt {}", env!("CARGO_PKG_VERSION"));
    println!(
        "cpu backend: {} worker threads (of {} available cores)",
        rayon::current_num_threads(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    match device::probe_cuda() {
        CudaStatus::NoDriver => {
            println!(
                "cuda driver: not found (libcuda could not be loaded) — the CPU backend is used"
            )
        }
        CudaStatus::DriverError(e) => {
            println!("cuda driver: present but unusable: {e} — the CPU backend is used")
        }
        CudaStatus::Ready {
            driver_version,
            gpus,
        } => {
            println!(
                "cuda driver: supports CUDA {}",
                device::format_cuda_version(driver_version)
            );
            if gpus.is_empty() {
                println!("gpus: none visible");
            }
            for g in gpus {
                println!(
                    "gpu {}: {}, compute capability {}.{}, {:.1} GiB",
                    g.ordinal,
                    g.name,
                    g.compute_capability.0,
                    g.compute_capability.1,
                    g.total_memory_bytes as f64 / (1u64 << 30) as f64
                );
            }
        }
    }
    let kernel_files: usize = env!("GTADAPT_KERNEL_FILES").parse().unwrap_or(0);
    println!("cuda kernel sources in this build: {kernel_files} (kernels/*.cu)");
    println!("kernel path: {}", gtadapt::gpu::cuda::KernelPath::current());
    match device::nvrtc_version() {
        Some((major, minor)) => println!("nvrtc: {major}.{minor} (run-time compiler available)"),
        None => println!(
            "nvrtc: not found (put the NVRTC library on LD_LIBRARY_PATH to compile kernels at run \
             time)"
        ),
    }
    let emu = gtadapt::gpu::Emulator::new();
    println!(
        "emulator: always available (CPU SIMT emulation of kernels/*.cu), {} kernels registered",
        emu.kernel_count()
    );
}
