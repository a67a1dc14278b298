//! The `gtadapt` command line.

use anyhow::Result;
use clap::{Parser, Subcommand};
use gtadapt::device::{self, CudaStatus};

/// gtadapt — Generate To Adapt (GTA, CVPR 2018) unsupervised domain adaptation of digit
/// classifiers, trained by a from-scratch engine: hand-written kernels, an autograd tape and
/// four networks (embedder F, classifier C, generator G, discriminator D).
///
/// Today the engine has a complete CPU reference backend (every operation GTA needs, forward
/// and backward, checked against finite differences and PyTorch) and its autograd tape.
/// Run `gtadapt info` to see what this machine offers.
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
    /// Show the version, CPU threads, the CUDA driver and GPUs, and how kernels are compiled.
    Info,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
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
        Command::Info => info(),
    }
    Ok(())
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
    let nvcc = env!("GTADAPT_BUILD_NVCC");
    let kernel_files: usize = env!("GTADAPT_KERNEL_FILES").parse().unwrap_or(0);
    println!("cuda kernel sources in this build: {kernel_files}");
    if nvcc.is_empty() {
        println!(
            "kernel compilation: no nvcc at build time → kernels are compiled at run time by NVRTC"
        );
    } else {
        println!(
            "kernel compilation: nvcc found at build time ({nvcc}) → PTX embedded in the binary"
        );
    }
    match device::nvrtc_version() {
        Some((major, minor)) => println!("nvrtc: {major}.{minor} (run-time compiler available)"),
        None => println!("nvrtc: not found (put the NVRTC library on LD_LIBRARY_PATH to compile kernels at run time)"),
    }
}
