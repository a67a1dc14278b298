//! Training runs end to end on the embedded pair, at a tiny width so CI stays fast:
//! determinism, exact resumption, checkpoints that load, and clear errors.

mod common;
use common::{gtadapt, scratch};
use gtadapt::checkpoint::{restore_trainer, trainer_state, StateDict};
use gtadapt::gta::{Experiment, Trainer};
use gtadapt::train::{self, Quiet, RunConfig};
use std::path::Path;

fn tiny(experiment: Experiment, epochs: usize) -> RunConfig {
    common::tiny_run(experiment, epochs, 8, 3, 5)
}

/// metrics.jsonl without the wall-clock field.
fn metrics_without_time(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| l.split(",\"seconds\"").next().unwrap().to_string())
        .collect()
}

fn state_tensors(dir: &Path) -> StateDict {
    let mut sd = StateDict::read(&dir.join("checkpoints/last.safetensors")).unwrap();
    sd.metadata.clear();
    sd
}

#[test]
fn same_seed_gives_identical_metrics_and_checkpoints() {
    let (a, b) = (scratch("det-a"), scratch("det-b"));
    let ra = train::run(
        Some(tiny(Experiment::Exp1, 2)),
        &a,
        false,
        false,
        None,
        &mut Quiet,
    )
    .unwrap();
    train::run(
        Some(tiny(Experiment::Exp1, 2)),
        &b,
        false,
        false,
        None,
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(ra.epochs.len(), 2);
    assert_eq!(metrics_without_time(&a), metrics_without_time(&b));
    assert_eq!(state_tensors(&a), state_tensors(&b));
    for f in [
        "accuracy.png",
        "samples/epoch-001-source.png",
        "samples/epoch-002-target.png",
        "checkpoints/best.safetensors",
    ] {
        assert!(a.join(f).is_file(), "missing {f}");
    }
    // A different seed changes the run.
    let c = scratch("det-c");
    let mut cfg = tiny(Experiment::Exp1, 2);
    cfg.seed = 6;
    train::run(Some(cfg), &c, false, false, None, &mut Quiet).unwrap();
    assert_ne!(state_tensors(&a), state_tensors(&c));
    for d in [a, b, c] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn resume_after_an_interruption_equals_an_uninterrupted_run() {
    for exp in [Experiment::Exp3, Experiment::SourceOnly] {
        let (full, part) = (
            scratch(&format!("full-{}", exp.name())),
            scratch(&format!("part-{}", exp.name())),
        );
        train::run(Some(tiny(exp, 3)), &full, false, false, None, &mut Quiet).unwrap();
        train::run(Some(tiny(exp, 1)), &part, false, false, None, &mut Quiet).unwrap();
        // A torn epoch: a metrics line the checkpoint does not cover must be dropped on resume.
        let mut m = std::fs::read_to_string(part.join("metrics.jsonl")).unwrap();
        m.push_str(
            &m.lines()
                .next()
                .unwrap()
                .replace("\"epoch\":1", "\"epoch\":2"),
        );
        m.push('\n');
        std::fs::write(part.join("metrics.jsonl"), m).unwrap();
        train::run(None, &part, true, false, Some(3), &mut Quiet).unwrap();
        assert_eq!(
            metrics_without_time(&full),
            metrics_without_time(&part),
            "{}",
            exp.name()
        );
        assert_eq!(state_tensors(&full), state_tensors(&part), "{}", exp.name());
        let _ = std::fs::remove_dir_all(full);
        let _ = std::fs::remove_dir_all(part);
    }
}

#[test]
fn an_existing_run_is_not_overwritten_without_force() {
    let d = scratch("exists");
    train::run(
        Some(tiny(Experiment::SourceOnly, 1)),
        &d,
        false,
        false,
        None,
        &mut Quiet,
    )
    .unwrap();
    let err = train::run(
        Some(tiny(Experiment::SourceOnly, 1)),
        &d,
        false,
        false,
        None,
        &mut Quiet,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--resume") && err.contains("--force"), "{err}");
    train::run(
        Some(tiny(Experiment::SourceOnly, 1)),
        &d,
        false,
        true,
        None,
        &mut Quiet,
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn a_checkpoint_of_another_experiment_or_width_is_refused_clearly() {
    let t = Trainer::new(Experiment::Exp1, tiny(Experiment::Exp1, 1).hyper, 0);
    let sd = trainer_state(&t, &Default::default());
    let path = Path::new("exp1.safetensors");
    let mut other = Trainer::new(Experiment::Exp3, tiny(Experiment::Exp3, 1).hyper, 0);
    let err = restore_trainer(&mut other, &sd, path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("experiment exp1") && err.contains("exp3"),
        "{err}"
    );
    let mut wider = tiny(Experiment::Exp1, 1).hyper;
    wider.widths.ndf = 8;
    let mut w = Trainer::new(Experiment::Exp1, wider, 0);
    let err = restore_trainer(&mut w, &sd, path).unwrap_err().to_string();
    assert!(err.contains("--ndf 4") && err.contains("--ndf 8"), "{err}");
    // Same experiment and width: loads, and a round trip through bytes keeps every tensor.
    let mut same = Trainer::new(Experiment::Exp1, tiny(Experiment::Exp1, 1).hyper, 99);
    restore_trainer(&mut same, &sd, path).unwrap();
    assert_eq!(trainer_state(&same, &Default::default()), sd);
}

#[test]
fn the_cli_trains_evaluates_and_rejects_bad_flags() {
    let d = scratch("cli");
    let ds = d.to_string_lossy().to_string();
    let (ok, text) = gtadapt(&[
        "train",
        "--experiment",
        "exp1",
        "--ndf",
        "4",
        "--ngf",
        "4",
        "--nz",
        "8",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--iters-per-epoch",
        "2",
        "--out",
        &ds,
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("target test") && text.contains("best source-val epoch"),
        "{text}"
    );
    let ckpt = d.join("checkpoints/last.safetensors");
    let (ok, text) = gtadapt(&[
        "eval",
        "--checkpoint",
        &ckpt.to_string_lossy(),
        "--dataset",
        "embedded-mnistm",
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("accuracy ") && text.contains("confusion matrix"),
        "{text}"
    );

    for (args, needle) in [
        (
            vec!["train", "--batch-size", "1", "--out", "x"],
            "--batch-size",
        ),
        (vec!["train", "--experiment", "exp9"], "exp9"),
        (
            vec!["train", "--device", "cuda", "--out", "x"],
            "--device cpu",
        ),
        (
            vec!["train", "--lr=-1", "--out", "x"],
            "--lr must be a positive number",
        ),
        (
            vec![
                "train",
                "--source",
                "no-such-dataset",
                "--out",
                &format!("{ds}-2"),
            ],
            "no-such-dataset",
        ),
        (
            vec![
                "eval",
                "--checkpoint",
                "/nonexistent.safetensors",
                "--dataset",
                "embedded-mnist",
            ],
            "nonexistent",
        ),
    ] {
        let (ok, text) = gtadapt(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(text.contains(needle), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
    let _ = std::fs::remove_dir_all(d);
}
