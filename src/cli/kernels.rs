//! `gtadapt kernels check`: every kernel against the CPU backend on an executor.

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use gtadapt::gpu::check;
use gtadapt::gpu::cuda::CudaExecutor;
use gtadapt::gpu::{Emulator, Memory};

#[derive(Subcommand)]
pub enum KernelsCommand {
    /// Run every kernel family (activation, elementwise, layout, reduce, loss, adam, data
    /// gather, batch norm, max pool, linear, conv, rng) on the chosen executor against the CPU
    /// backend, on fresh random inputs of awkward sizes with outputs poisoned with NaN first; print one row per kernel and exit
    /// non-zero if any differs by more than its tolerance.
    Check(CheckArgs),
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Where the kernels run: `emu` (the CPU SIMT emulator, always available), `cuda` (GPU 0;
    /// an error without one), `auto` (cuda when a GPU is usable, else emu).
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Seed of the random inputs (the tests use 0).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Emu,
    Cuda,
    Auto,
}

pub fn run(cmd: KernelsCommand) -> Result<()> {
    match cmd {
        KernelsCommand::Check(a) => check_cmd(a),
    }
}

fn check_cmd(a: CheckArgs) -> Result<()> {
    match a.device {
        DeviceArg::Emu => check_on(&Emulator::new(), "emulator (CPU SIMT emulation)", a.seed),
        DeviceArg::Cuda => {
            let gpu = CudaExecutor::new()
                .context("--device cuda: the CUDA executor is unavailable (try --device emu)")?;
            let what = format!("cuda ({})", gpu.device_name());
            check_on(&gpu, &what, a.seed)
        }
        DeviceArg::Auto => match CudaExecutor::new() {
            Ok(gpu) => {
                let what = format!("cuda ({})", gpu.device_name());
                check_on(&gpu, &what, a.seed)
            }
            Err(e) => {
                println!("no usable GPU ({e}); using the emulator");
                check_on(&Emulator::new(), "emulator (CPU SIMT emulation)", a.seed)
            }
        },
    }
}

fn check_on<M: Memory>(exec: &M, what: &str, seed: u64) -> Result<()> {
    println!("kernels check on {what}, seed {seed}");
    let report = check::run_all(exec, seed)
        .with_context(|| format!("kernels check on {what}: device memory"))?;
    print!("{}", check::table(&report));
    let failed = report.failures().count();
    if failed > 0 {
        bail!(
            "{failed} of {} kernels differ from the CPU backend on {what}",
            report.rows.len()
        );
    }
    println!(
        "all {} kernels match the CPU backend on {what}",
        report.rows.len()
    );
    Ok(())
}
