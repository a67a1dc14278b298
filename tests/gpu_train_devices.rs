//! Training runs on the GPU backend (on the SIMT emulator here; on a GPU when one is present),
//! end to end through `train::run_on`: the same run as the CPU backend to rounding, batches
//! gathered on the device from the resident dataset, checkpoints that resume on another
//! device, and `--device cuda` failing clearly without a GPU.

mod common;
use common::{gtadapt, scratch};
use gtadapt::gpu::cuda;
use gtadapt::gta::Experiment;
use gtadapt::train::{self, Device, EpochMetrics, Precision, Quiet, RunConfig, RunSummary};
use std::path::Path;

fn tiny(experiment: Experiment, epochs: usize) -> RunConfig {
    common::tiny_run(experiment, epochs, 4, 12, 3)
}

fn run(device: Device, cfg: RunConfig, dir: &Path) -> RunSummary {
    train::run_on(device, Some(cfg), dir, false, false, None, &mut Quiet)
        .unwrap_or_else(|e| panic!("{device:?}: {e}"))
}

/// Per-epoch losses within 1e-3 relative (summation order differs; 12 iterations of Adam
/// amplify it), and accuracies within 0.5 percentage points (a logit near a tie may flip
/// argmax for an image or two out of 500).
fn assert_close(a: &EpochMetrics, b: &EpochMetrics, what: &str) {
    let la = [a.losses.d, a.losses.g, a.losses.c, a.losses.f];
    let lb = [b.losses.d, b.losses.g, b.losses.c, b.losses.f];
    for (x, y) in la.iter().zip(lb) {
        assert!(
            (x - y).abs() <= 1e-3 * x.abs().max(1.0),
            "{what}: losses {la:?} vs {lb:?}"
        );
    }
    for (x, y) in [
        (a.source_val_acc, b.source_val_acc),
        (a.target_test_acc, b.target_test_acc),
        (a.target_train_acc, b.target_train_acc),
    ] {
        assert!((x - y).abs() <= 0.5, "{what}: accuracy {x} vs {y}");
    }
    assert_eq!(a.iterations, b.iterations);
    assert_eq!(a.lr, b.lr);
}

fn devices() -> Vec<Device> {
    let mut d = vec![Device::Emulator(Precision::Fp32.into())];
    if cuda::executor_for_tests().is_some() {
        d.push(Device::Cuda(Precision::Fp32.into()));
    }
    d
}

#[test]
fn exp1_and_exp3_train_on_the_gpu_backend_like_on_the_cpu() {
    for exp in [Experiment::Exp1, Experiment::Exp3] {
        let c = scratch(&format!("cpu-{}", exp.name()));
        let cpu = run(Device::Cpu, tiny(exp, 1), &c);
        for device in devices() {
            let g = scratch(&format!("{device:?}-{}", exp.name()));
            let gpu = run(device, tiny(exp, 1), &g);
            assert_close(
                cpu.last(),
                gpu.last(),
                &format!("{} on {device:?}", exp.name()),
            );
            let mem = gpu.memory.expect("a GPU backend reports its memory");
            assert!(
                mem.persistent_bytes > 0 && mem.arena_peak_bytes > 0,
                "{mem:?}"
            );
            // The planner (allocations only, no kernels) predicts the run's memory exactly.
            let plan = train::plan_device_memory(&tiny(exp, 1)).unwrap();
            assert_eq!(
                (plan.persistent_bytes, plan.arena_peak_bytes),
                (mem.persistent_bytes, mem.arena_peak_bytes),
                "{} on {device:?}: planned {plan:?}, used {mem:?}",
                exp.name()
            );
            assert!(g.join("checkpoints/last.safetensors").exists());
            assert!(g.join("samples/epoch-001-source.png").exists());
            let _ = std::fs::remove_dir_all(&g);
        }
        assert!(cpu.memory.is_none());
        let _ = std::fs::remove_dir_all(&c);
    }
}

#[test]
fn a_gpu_run_resumes_on_the_cpu_and_the_reverse() {
    let a = scratch("cross");
    run(
        Device::Emulator(Precision::Fp32.into()),
        tiny(Experiment::Exp1, 1),
        &a,
    );
    let resumed = train::run_on(Device::Cpu, None, &a, true, false, Some(2), &mut Quiet)
        .expect("a checkpoint written on the GPU backend resumes on the CPU");
    assert_eq!(resumed.epochs.len(), 2);
    let again = train::run_on(
        Device::Emulator(Precision::Fp32.into()),
        None,
        &a,
        true,
        false,
        Some(3),
        &mut Quiet,
    )
    .expect("and back");
    assert_eq!(again.epochs.len(), 3);
    let _ = std::fs::remove_dir_all(&a);
}

#[test]
fn the_cli_trains_on_the_emulator_and_refuses_cuda_without_a_gpu() {
    let dir = scratch("cli");
    let d = dir.to_str().unwrap();
    let (ok, text) = gtadapt(&[
        "train",
        "--device",
        "emu",
        "--ndf",
        "4",
        "--ngf",
        "4",
        "--nz",
        "8",
        "--batch-size",
        "4",
        "--iters-per-epoch",
        "2",
        "--epochs",
        "1",
        "--out",
        d,
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("on emulator"), "{text}");
    assert!(text.contains("device memory:"), "{text}");
    let (ok, text) = gtadapt(&[
        "train",
        "--device",
        "cpu",
        "--precision",
        "tf32",
        "--dry-run",
    ]);
    assert!(!ok && text.contains("--precision tf32"), "{text}");
    let (ok, text) = gtadapt(&["train", "--dry-run", "--preset", "paper"]);
    assert!(
        ok && text.contains("device memory on the GPU backend (batch 100)"),
        "{text}"
    );
    if cuda::CudaExecutor::new().is_err() {
        let (ok, text) = gtadapt(&["train", "--device", "cuda", "--dry-run"]);
        assert!(!ok, "{text}");
        assert!(text.contains("--device cuda:"), "{text}");
        assert!(text.contains("--device cpu"), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
