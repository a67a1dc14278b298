//! Bad input to `gtadapt train` / `gtadapt eval` (issue 9): every case ends with a message that
//! names the file or flag, the problem and what to do — never a panic. docs/reliability.md
//! lists each case with its message and the test here (or elsewhere) that covers it.

use gtadapt::checkpoint::StateDict;
use gtadapt::data::idx::write_idx;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Scratch(PathBuf);
impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("gtadapt-bad-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    fn p(&self, s: &str) -> String {
        self.0.join(s).to_string_lossy().into_owned()
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small dataset directory: `n` training and 10 test 28×28 gray images.
fn dataset(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (split, n) in [("train", n), ("test", 10)] {
        let px: Vec<u8> = (0..n * 784).map(|i| (i * 7) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        write_idx(dir.join(format!("{split}-images.idx")), &[n, 28, 28], &px).unwrap();
        write_idx(dir.join(format!("{split}-labels.idx")), &[n], &labels).unwrap();
    }
}

/// (exit code, stdout + stderr) of `gtadapt args`.
fn gtadapt(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gtadapt"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run gtadapt");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// Fails with exit code 1 or 2 (clap), a message holding every needle, and no panic.
#[track_caller]
fn refused(args: &[&str], needles: &[&str]) -> String {
    let (code, text) = gtadapt(args);
    assert!(
        matches!(code, Some(1) | Some(2)),
        "{args:?} should fail cleanly, got {code:?}: {text}"
    );
    assert!(!text.contains("panicked"), "{args:?}: {text}");
    for n in needles {
        assert!(text.contains(n), "{args:?}: expected {n:?} in: {text}");
    }
    text
}

fn tiny_train<'a>(s: &'a Scratch, src: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train",
        "--source",
        src,
        "--target",
        src,
        "--ndf",
        "4",
        "--ngf",
        "4",
        "--nz",
        "8",
        "--batch-size",
        "8",
        "--iters-per-epoch",
        "2",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--out",
        out,
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    v.extend(extra.iter().map(|x| x.to_string()));
    let _ = s;
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn corrupt_truncated_and_foreign_checkpoints() {
    let s = Scratch::new("ckpt");
    dataset(&s.0.join("d"), 40);
    let (d, run) = (s.p("d"), s.p("run"));
    let a = tiny_train(&s, &d, &run, &[]);
    let (code, text) = gtadapt(&strs(&a));
    assert_eq!(code, Some(0), "{text}");
    let last = s.0.join("run/checkpoints/last.safetensors");
    let good = std::fs::read(&last).unwrap();
    let last_s = last.to_string_lossy().into_owned();

    // Truncated (half the file) and corrupt (garbage): on --resume and on eval.
    for (what, bytes) in [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("garbage", b"this is not a checkpoint at all".to_vec()),
        ("empty", Vec::new()),
    ] {
        std::fs::write(&last, &bytes).unwrap();
        let t = refused(
            &["train", "--resume", &run],
            &["last.safetensors", "damaged or is not a gtadapt checkpoint"],
        );
        assert!(t.contains("could not resume"), "{what}: {t}");
        refused(
            &["eval", "--checkpoint", &last_s, "--dataset", &d],
            &["last.safetensors", "damaged"],
        );
    }

    // Another width: metadata says ndf 8, tensors are ndf 4 (a file edited or mixed up).
    let mut sd = StateDict::parse(&good).unwrap();
    sd.metadata.insert("ndf".into(), "8".into());
    sd.write_atomic(&last).unwrap();
    refused(
        &["train", "--resume", &run],
        &["last.safetensors", "shape", "--ndf"],
    );
    refused(
        &["eval", "--checkpoint", &last_s, "--dataset", &d],
        &["last.safetensors", "shape", "--ndf"],
    );

    // Another experiment: a source-only checkpoint copied into this exp1 run.
    let other = s.p("other");
    let b = tiny_train(&s, &d, &other, &["--experiment", "source-only"]);
    let (code, text) = gtadapt(&strs(&b));
    assert_eq!(code, Some(0), "{text}");
    std::fs::copy(s.0.join("other/checkpoints/last.safetensors"), &last).unwrap();
    refused(
        &["train", "--resume", &run],
        &["experiment source-only", "another run", "--force"],
    );

    // Not a training checkpoint: a safetensors file without the run's metadata.
    let mut bare = StateDict::parse(&good).unwrap();
    bare.metadata.clear();
    bare.write_atomic(&last).unwrap();
    refused(
        &["eval", "--checkpoint", &last_s, "--dataset", &d],
        &["last.safetensors", "not a gtadapt training checkpoint"],
    );

    // A directory without a checkpoint.
    refused(
        &["train", "--resume", &s.p("d")],
        &["no checkpoint to resume from", "without --resume"],
    );
}

#[test]
fn corrupt_truncated_and_inconsistent_datasets() {
    let s = Scratch::new("data");
    let run = s.p("run");
    // Truncated image file.
    dataset(&s.0.join("trunc"), 40);
    let f = s.0.join("trunc/train-images.idx");
    let b = std::fs::read(&f).unwrap();
    std::fs::write(&f, &b[..b.len() - 100]).unwrap();
    let a = tiny_train(&s, &s.p("trunc"), &run, &[]);
    refused(
        &strs(&a),
        &["train-images.idx", "truncated", "gtadapt data inspect"],
    );
    // Garbage in place of a label file.
    dataset(&s.0.join("garbage"), 40);
    std::fs::write(s.0.join("garbage/test-labels.idx"), b"<html>404</html>").unwrap();
    let a = tiny_train(&s, &s.p("garbage"), &run, &[]);
    refused(&strs(&a), &["test-labels.idx", "bad magic"]);
    // Image/label count mismatch.
    dataset(&s.0.join("count"), 40);
    write_idx(s.0.join("count/train-labels.idx"), &[39], &[1; 39]).unwrap();
    let a = tiny_train(&s, &s.p("count"), &run, &[]);
    refused(
        &strs(&a),
        &["train-images.idx", "train-labels.idx", "39 labels"],
    );
    // A label out of range.
    dataset(&s.0.join("range"), 40);
    let mut labels = vec![1u8; 40];
    labels[7] = 12;
    write_idx(s.0.join("range/train-labels.idx"), &[40], &labels).unwrap();
    let a = tiny_train(&s, &s.p("range"), &run, &[]);
    refused(&strs(&a), &["train-labels.idx", "label 12 at index 7"]);
    // A batch larger than the dataset.
    dataset(&s.0.join("small"), 6);
    let a = tiny_train(&s, &s.p("small"), &run, &[]);
    refused(
        &strs(&a),
        &["fewer than one training batch", "smaller --batch-size"],
    );
    // Nothing of these failed runs claims to be a run.
    assert!(!s.0.join("run/metrics.jsonl").exists());
}

#[test]
fn output_directory_exists_or_is_not_writable() {
    let s = Scratch::new("out");
    dataset(&s.0.join("d"), 40);
    let (d, run) = (s.p("d"), s.p("run"));
    let a = tiny_train(&s, &d, &run, &[]);
    let (code, text) = gtadapt(&strs(&a));
    assert_eq!(code, Some(0), "{text}");
    refused(&strs(&a), &["already holds a run", "--resume", "--force"]);
    let f = tiny_train(&s, &d, &run, &["--force"]);
    let (code, text) = gtadapt(&strs(&f));
    assert_eq!(code, Some(0), "{text}");

    // Read-only: a directory without write permission (or, as root, where permissions do not
    // bind, a sysfs path that refuses new directories).
    let ro = s.0.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let probe = std::fs::write(ro.join("probe"), b"x").is_ok();
    let out = if !probe {
        ro.join("run").to_string_lossy().into_owned()
    } else if std::fs::create_dir("/sys/gtadapt-probe").is_err() {
        "/sys/gtadapt-test-run".to_string()
    } else {
        let _ = std::fs::remove_dir("/sys/gtadapt-probe");
        eprintln!("skipped: no read-only location on this machine");
        return;
    };
    let a = tiny_train(&s, &d, &out, &[]);
    refused(&strs(&a), &[&out, "choose a writable directory"]);
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_full_disk_error_says_what_to_do() {
    let e = gtadapt::error::Error::Io {
        path: "runs/x/checkpoints/.last.safetensors.tmp-1".into(),
        cause: std::io::Error::from_raw_os_error(libc::ENOSPC),
    }
    .to_string();
    assert!(
        e.contains("last.safetensors") && e.contains("the disk is full") && e.contains("--resume"),
        "{e}"
    );
}

#[test]
fn unknown_and_contradictory_flags() {
    refused(&["train", "--no-such-flag"], &["--no-such-flag"]);
    refused(&["train", "--epochs", "many"], &["--epochs", "many"]);
    refused(
        &["train", "--out", "a", "--resume", "b"],
        &["--out", "--resume"],
    );
    refused(
        &["train", "--resume", "b", "--force"],
        &["--resume", "--force", "give one of them"],
    );
    refused(&["train", "--epochs", "0", "--out", "x"], &["--epochs"]);
    refused(&["train", "--beta1", "1.5", "--out", "x"], &["--beta1"]);
    refused(&["--threads", "0", "info"], &["--threads"]);
    refused(
        &["train", "--device", "cuda", "--out", "x"],
        &["--device cpu"],
    );
    refused(&["frobnicate"], &["frobnicate"]);
}

/// A deterministic miniature of the checkpoint fuzz target (fuzz/fuzz_targets/checkpoint.rs)
/// on its seed: every truncation and every bit flip of the header never panics, and whatever
/// parses either restores or is refused with a message.
#[test]
fn truncated_and_bit_flipped_checkpoints_never_panic() {
    use gtadapt::checkpoint::restore_trainer;
    use gtadapt::gta::Trainer;
    use gtadapt::train::config_from_checkpoint;
    let seed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds/checkpoint/source-only-w1.safetensors"),
    )
    .unwrap();
    let path = Path::new("mutated.safetensors");
    let check = |bytes: &[u8]| -> bool {
        let Ok(sd) = StateDict::parse(bytes) else {
            return false;
        };
        let Ok((cfg, _, _)) = config_from_checkpoint(&sd, path) else {
            return false;
        };
        let w = cfg.hyper.widths;
        if w.ndf > 8 || w.ngf > 8 || w.nz > 16 {
            return false;
        }
        let mut t = Trainer::new(cfg.experiment, cfg.hyper, 0);
        restore_trainer(&mut t, &sd, path).is_ok()
    };
    assert!(check(&seed), "the seed itself restores");
    let mut restored = 0;
    for n in (0..seed.len()).step_by(13) {
        restored += check(&seed[..n]) as usize;
    }
    assert_eq!(restored, 0, "no truncation restores");
    let header = 8 + u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
    let mut m = seed.clone();
    for i in 0..header.min(seed.len()) {
        for bit in [0, 3, 6] {
            m[i] ^= 1 << bit;
            check(&m);
            m[i] ^= 1 << bit;
        }
    }
}
