//! Captured iterations (CUDA graphs) on the GPU backend, checked on the SIMT emulator, whose
//! capture records the launches exactly as CUDA stream capture does (recorded, not run; run
//! with the parameter values of the capture on every replay):
//! - a run that replays its iterations from one captured iteration ends with the same bits as
//!   the same run launch by launch (`--no-graph`), for every experiment;
//! - a capture refuses host work (copies, allocations, synchronization): it would not be in
//!   the graph;
//! - a replay notices when the memory the graph addresses has moved, and declines;
//! - Adam under a schedule refuses scalars that differ from the schedule's table.

mod common;
use common::scratch;
use gtadapt::backend::gpu::Gpu;
use gtadapt::backend::{Backend, Schedule};
use gtadapt::checkpoint::StateDict;
use gtadapt::gpu::Emulator;
use gtadapt::gta::Experiment;
use gtadapt::ops::adam::{AdamConfig, AdamScalars, AdamState};
use gtadapt::shape::Shape;
use gtadapt::tensor::Tensor;
use gtadapt::train::{self, Device, GpuOptions, Precision, Quiet, RunSummary};
use std::path::Path;

fn run(graphs: bool, exp: Experiment, dir: &Path) -> RunSummary {
    let device = Device::Emulator(GpuOptions {
        precision: Precision::Fp32,
        graphs,
    });
    // 2 epochs of 4 iterations: epoch 1 captures, epoch 2 replays across an epoch boundary
    // (evaluation in between, new schedule tables).
    let cfg = common::tiny_run(exp, 2, 4, 4, 5);
    train::run_on(device, Some(cfg), dir, false, false, None, &mut Quiet)
        .unwrap_or_else(|e| panic!("{} graphs={graphs}: {e}", exp.name()))
}

/// Without the wall-clock fields.
fn metrics_without_time(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            l.split(',')
                .filter(|f| !f.contains("seconds"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

#[test]
fn replayed_iterations_give_the_bits_of_launch_by_launch() {
    for exp in [Experiment::Exp1, Experiment::Exp3, Experiment::SourceOnly] {
        let (a, b) = (
            scratch(&format!("graph-{}", exp.name())),
            scratch(&format!("nograph-{}", exp.name())),
        );
        let with = run(true, exp, &a);
        let without = run(false, exp, &b);
        assert_eq!(without.replayed_iterations, 0);
        // Epoch 1: iteration 1 keeps samples, 2 runs in the settled arena, 3 is captured,
        // 4 replays; epoch 2: 1 keeps samples, 2–4 replay (or re-capture once if evaluation
        // moved the arena).
        assert!(
            with.replayed_iterations >= 3,
            "{}: only {} iterations replayed",
            exp.name(),
            with.replayed_iterations
        );
        assert_eq!(metrics_without_time(&a), metrics_without_time(&b));
        let (sa, sb) = (
            StateDict::read(&a.join("checkpoints/last.safetensors")).unwrap(),
            StateDict::read(&b.join("checkpoints/last.safetensors")).unwrap(),
        );
        // Every tensor bit for bit: parameters, Adam moments and steps, batch-norm statistics
        // and num_batches_tracked (host counters that replays advance).
        assert_eq!(sa.tensors.len(), sb.tensors.len());
        for (k, t) in &sa.tensors {
            assert!(sb.tensors.get(k) == Some(t), "{}: {k} differs", exp.name());
        }
    }
}

/// A backend with a settled arena and a loaded (empty) schedule: ready to capture.
fn settled_backend() -> Gpu<Emulator> {
    let b = Gpu::new(Emulator::new());
    assert!(b
        .load_schedule(&Schedule {
            steps: 4,
            start: 0,
            batch: 1,
            rows: Vec::new(),
            noise: None,
            adam: vec![Vec::new(); 4],
        })
        .unwrap());
    // Iteration 1 allocates outside the arena, 2 inside the grown chunk, 3 is settled.
    for _ in 0..3 {
        b.begin_iteration().unwrap();
        b.full(&Shape::new(&[1000]), 1.0).unwrap();
    }
    b.begin_iteration().unwrap();
    b
}

#[test]
fn a_capture_refuses_host_work() {
    let b = settled_backend();
    let host = Tensor::zeros([3]).unwrap();
    let before = b.full(&Shape::new(&[3]), 0.0);
    assert!(before.is_ok());
    b.begin_iteration().unwrap();
    assert!(
        b.capture_begin().unwrap(),
        "a settled arena with a schedule captures"
    );
    let x = b.full(&Shape::new(&[10]), 2.0).unwrap();
    for (what, err) in [
        ("upload", b.upload(&host).err()),
        ("download", b.download(&x).err()),
        ("labels", b.upload_labels(&[1, 2]).err()),
        ("synchronize", b.synchronize().err()),
        ("new iteration", b.begin_iteration().err()),
        ("persistent", b.upload_persistent(&host).err()),
        ("allocation", b.full(&Shape::new(&[1 << 20]), 0.0).err()),
    ] {
        let e = err.unwrap_or_else(|| panic!("{what} was allowed during a capture"));
        assert!(
            e.to_string().contains("captur"),
            "{what}: unexpected message {e}"
        );
    }
    b.capture_end().unwrap();
    // The captured fill ran once at capture_end; a replay runs it again.
    assert!(b.replay().unwrap());
    assert_eq!(b.replayed_iterations(), 1);
}

#[test]
fn a_replay_declines_when_memory_moved() {
    let b = settled_backend();
    assert!(b.capture_begin().unwrap());
    b.full(&Shape::new(&[1000]), 3.0).unwrap();
    b.advance_schedule().unwrap();
    b.capture_end().unwrap();
    assert!(b.replay().unwrap());
    // An iteration larger than the arena grows it at the next reset: the graph's addresses
    // are gone, so the replay declines (the caller runs the iteration and captures again).
    b.full(&Shape::new(&[1 << 16]), 0.0).unwrap();
    assert!(!b.replay().unwrap());
    assert_eq!(b.replayed_iterations(), 1);
    // A schedule that ends: no replay past its last entry.
    let b = settled_backend();
    assert!(b.capture_begin().unwrap());
    for _ in 0..3 {
        b.advance_schedule().unwrap();
    }
    b.capture_end().unwrap();
    assert!(
        !b.replay().unwrap(),
        "3 + 3 entries exceed a 4-entry schedule"
    );
}

#[test]
fn scheduled_adam_refuses_scalars_off_the_schedule() {
    let cfg = AdamConfig {
        lr: 1e-3,
        beta1: 0.8,
        beta2: 0.999,
        eps: 1e-8,
    };
    let other = AdamConfig { lr: 2e-3, ..cfg };
    for (table_cfg, ok) in [(cfg, true), (other, false)] {
        let b = Gpu::new(Emulator::new());
        b.load_schedule(&Schedule {
            steps: 1,
            start: 0,
            batch: 1,
            rows: Vec::new(),
            noise: None,
            adam: vec![vec![AdamScalars::new(1, &table_cfg)]],
        })
        .unwrap();
        let host = Tensor::new([5], vec![0.5, -1.0, 2.0, 0.0, 3.0]).unwrap();
        let mut p = b.upload_persistent(&host).unwrap();
        let g = b
            .upload(&Tensor::new([5], vec![0.1, 0.2, -0.3, 0.4, 0.0]).unwrap())
            .unwrap();
        let mut states = vec![b.adam_state(&AdamState::new(5)).unwrap()];
        let r = b.adam_update(&mut [&mut p], &[g], &mut states, &cfg, 0);
        assert_eq!(r.is_ok(), ok, "{r:?}");
        if ok {
            // The same bits as the CPU reference step.
            let mut want = host.clone();
            let mut s = AdamState::new(5);
            s.step(want.data_mut(), &[0.1, 0.2, -0.3, 0.4, 0.0], &cfg)
                .unwrap();
            assert_eq!(b.download(&p).unwrap().data(), want.data());
        } else {
            assert!(r.unwrap_err().to_string().contains("schedule"));
        }
    }
}

/// The iteration benchmark's timing path (benches/train_step.rs `graph` / `no-graph` rows):
/// the same scheduled iterations as `train`, capture included; a positive, finite time.
#[test]
fn time_iterations_runs_the_scheduled_iteration_with_and_without_graphs() {
    for graphs in [false, true] {
        let b = Gpu::new(Emulator::new()).with_graphs(graphs);
        let cfg = common::tiny_run(Experiment::Exp1, 1, 4, 10, 2);
        let ms = train::time_iterations(b.clone(), &cfg, 3, 2).unwrap();
        assert!(ms.is_finite() && ms > 0.0, "{ms}");
        // With graphs the timed iterations were replays.
        assert_eq!(b.replayed_iterations(), if graphs { 2 } else { 0 });
    }
    // More iterations than an epoch holds: an error, not a panic.
    let cfg = common::tiny_run(Experiment::Exp1, 1, 4, 3, 2);
    assert!(train::time_iterations(Gpu::new(Emulator::new()), &cfg, 3, 2).is_err());
}
