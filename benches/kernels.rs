//! Every kernel family at the GTA shapes (each conv / conv-transpose layer of F1, D, G, G4,
//! D_src in three directions; batch norm, pool, linear, losses, Adam, gather), with analytic
//! FLOP and byte counts, the ceilings measured in the same run; on CUDA, cuDNN beside each conv
//! row and cuBLAS beside each linear row and the GEMM ceiling, called through cudarc's own
//! bindings (`gtadapt::bench::vendor`: FP32 and TF32 columns, ours / vendor); and, when
//! reference/bench_ops.py ran first, PyTorch (cuDNN / cuBLAS) beside each row. The harness is
//! `gtadapt::bench` (tests/bench_harness.rs runs it on the emulator at a tiny size).
//!
//! The vendor libraries are loaded at run time: libcudnn.so.9 / libcublas.so.12 must be on the
//! loader's path (scripts/gpu-check.sh adds PyTorch's pip wheels' nvidia/*/lib folders to
//! LD_LIBRARY_PATH). Where they are not, the run prints "cuDNN: not available (<reason>)" and
//! the vendor columns read "n/a"; nothing fails.
//!
//!     cargo bench --bench kernels
//!
//! Environment:
//! - GTADAPT_BENCH_DEVICE: `cuda` (device events) or `emu` (the SIMT emulator, host clock);
//!   default `cuda` when a GPU is usable, else `emu`.
//! - GTADAPT_BENCH_SIZE: `gta` (batch 100, ndf = ngf = 64, nz 512; the default on CUDA) or
//!   `tiny` (batch 2, widths 8: the default on the emulator, which would take hours at `gta`).
//! - GTADAPT_BENCH_BATCH, _WIDTH, _NZ, _REPS, _WARMUP, _FILTER: overrides (see
//!   `gtadapt::bench::Config::with_env`).
//! - GTADAPT_BENCH_OUT: output folder (default target/bench/): writes
//!   kernels-<device>.md and kernels-<device>.json.
//! - GTADAPT_BENCH_TORCH: reference/bench_ops.py's JSON to join (default
//!   `$GTADAPT_BENCH_OUT/torch_ops-<device>.json` when it exists).
//! - GTADAPT_BENCH_VENDOR=0: skip the cuDNN / cuBLAS columns.

use gtadapt::bench::{self, Config};
use gtadapt::gpu::cuda::CudaExecutor;
use gtadapt::gpu::Emulator;

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let device = bench::device_choice();
    let size = std::env::var("GTADAPT_BENCH_SIZE").unwrap_or_else(|_| {
        if device == "cuda" {
            "gta".into()
        } else {
            "tiny".into()
        }
    });
    let cfg = match size.as_str() {
        "tiny" => Config::tiny(),
        "gta" => Config::gta(100),
        other => panic!("GTADAPT_BENCH_SIZE={other:?}: expected gta or tiny"),
    }
    .with_env();
    eprintln!("kernels bench: device {device}, size {size}");
    // Which vendor libraries load (never panics; says why not).
    let vendors = if std::env::var("GTADAPT_BENCH_VENDOR").is_ok_and(|v| v == "0") {
        let off = "GTADAPT_BENCH_VENDOR=0".to_string();
        bench::vendor::Vendors {
            cudnn: Err(off.clone()),
            cublas: Err(off),
        }
    } else {
        bench::vendor::probe()
    };
    let report = match device.as_str() {
        "cuda" => {
            let exec = CudaExecutor::new().unwrap_or_else(|e| panic!("CUDA executor: {e}"));
            bench::run(&exec, &cfg, true).map(|mut r| {
                bench::vendor::run(&cfg, &mut r, vendors, true);
                r
            })
        }
        "emu" => bench::run(&Emulator::new(), &cfg, true).map(|mut r| {
            r.vendor =
                vendors.unusable("this is the SIMT emulator run (vendor columns on CUDA only)");
            r
        }),
        other => panic!("GTADAPT_BENCH_DEVICE={other:?}: expected cuda or emu"),
    };
    let mut report = report.unwrap_or_else(|e| panic!("kernels bench: {e}"));
    for line in report.vendor.lines() {
        eprintln!("{line}");
    }
    let out = bench::out_dir();
    let torch = std::env::var_os("GTADAPT_BENCH_TORCH")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| out.join(format!("torch_ops-{device}.json")));
    if let Ok(text) = std::fs::read_to_string(&torch) {
        match report.join_torch(&text) {
            Ok(n) => eprintln!("joined {n} PyTorch rows from {}", torch.display()),
            Err(e) => eprintln!("could not read {}: {e}", torch.display()),
        }
    }
    print!("{}", report.to_markdown());
    let stem = format!("kernels-{device}");
    report
        .write(&out, &stem)
        .unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
    println!("\nwritten: {}/{stem}.md and .json", out.display());
}
