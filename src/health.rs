//! Reliability of a training run: non-finite losses and weights, the position inside an
//! interrupted epoch, stale temporary files after a crash, and the hidden test hooks that the
//! crash, signal and fault tests use (environment variables, read once; unset in normal use).
//!
//! - `GTADAPT_TEST_PAUSE_IN_WRITE=MS`: every atomic file write ([`crate::checkpoint::write_file_atomic`])
//!   writes half its bytes, prints `gtadapt-test: writing <file>` to stderr, sleeps MS
//!   milliseconds, then finishes (`gtadapt-test: written <file>`), so a kill lands inside the
//!   write (tests/crash_resume.rs).
//! - `GTADAPT_TEST_INJECT_NAN_AT=N`: D's loss of global iteration N (1-based) becomes NaN.
//! - `GTADAPT_TEST_RAISE_AT=N[:term]`: the process sends itself SIGINT (or SIGTERM) during
//!   global iteration N (1-based), through the real signal handler.

use crate::checkpoint::{StateDict, StateTensor};
use crate::error::{Error, Result};
use crate::gta::Losses;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// Milliseconds to pause in the middle of each atomic write (test hook).
fn pause_ms() -> Option<u64> {
    static V: OnceLock<Option<u64>> = OnceLock::new();
    *V.get_or_init(|| env_u64("GTADAPT_TEST_PAUSE_IN_WRITE"))
}

/// Whether atomic writes pause halfway (test hook).
pub fn pause_in_write_enabled() -> bool {
    pause_ms().is_some()
}

/// Writes half of `bytes`, announces the write on stderr, sleeps, writes the rest and says so.
pub fn write_with_pause(f: &mut impl Write, bytes: &[u8], path: &Path) -> std::io::Result<()> {
    let (a, b) = bytes.split_at(bytes.len() / 2);
    f.write_all(a)?;
    eprintln!("gtadapt-test: writing {}", path.display());
    std::thread::sleep(std::time::Duration::from_millis(pause_ms().unwrap_or(0)));
    f.write_all(b)?;
    eprintln!("gtadapt-test: written {}", path.display());
    Ok(())
}

/// Whether D's loss of this global iteration (1-based) is to be poisoned (test hook).
pub fn inject_nan(iteration: u64) -> bool {
    static V: OnceLock<Option<u64>> = OnceLock::new();
    *V.get_or_init(|| env_u64("GTADAPT_TEST_INJECT_NAN_AT")) == Some(iteration)
}

/// The signal to raise during this global iteration (1-based), if any (test hook).
pub fn raise_at(iteration: u64) -> Option<i32> {
    static V: OnceLock<Option<(u64, i32)>> = OnceLock::new();
    let v = *V.get_or_init(|| {
        let s = std::env::var("GTADAPT_TEST_RAISE_AT").ok()?;
        let (n, sig) = match s.split_once(':') {
            Some((n, "term")) => (n, crate::signal::SIGTERM),
            Some((n, _)) => (n, crate::signal::SIGINT),
            None => (s.as_str(), crate::signal::SIGINT),
        };
        Some((n.trim().parse().ok()?, sig))
    });
    v.filter(|&(n, _)| n == iteration).map(|(_, s)| s)
}

/// The command that continues the run in `dir`.
pub fn resume_command(dir: &Path) -> String {
    let d = dir.display().to_string();
    let quoted = if d
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@".contains(c))
    {
        d
    } else {
        format!("'{}'", d.replace('\'', r"'\''"))
    };
    format!("gtadapt train --resume {quoted}")
}

/// Adds what to do to a dataset problem met by a training run.
pub fn with_data_hint(message: String) -> String {
    if message.contains("fewer than one training batch") {
        format!("{message}: use a smaller --batch-size")
    } else if message.contains("no such dataset") || message.contains("not downloaded yet") {
        message
    } else {
        format!(
            "{message} (the dataset is damaged or inconsistent: check it with `gtadapt data \
             inspect`, then fetch or import it again)"
        )
    }
}

/// Stops the run at a non-finite loss, naming the epoch, the iteration and the network.
pub fn check_losses(
    l: &Losses,
    epoch: usize,
    iterations_in_epoch: std::ops::RangeInclusive<usize>,
    global_iterations: std::ops::RangeInclusive<u64>,
    last_checkpoint: &Path,
) -> Result<()> {
    // One iteration ("iteration 7"), or the logging interval the sums covered ("iterations
    // 1–10": a GPU run reads its losses back once per interval).
    fn span<T: std::fmt::Display + PartialEq>(r: &std::ops::RangeInclusive<T>) -> String {
        if r.start() == r.end() {
            format!("iteration {}", r.start())
        } else {
            format!("iterations {}–{}", r.start(), r.end())
        }
    }
    let (in_epoch, global) = (span(&iterations_in_epoch), span(&global_iterations));
    for (v, name, net) in [
        (l.d, "loss_d", "the discriminator D (netD)"),
        (l.g, "loss_g", "the generator G (netG)"),
        (l.c, "loss_c", "the classifier C (netC)"),
        (l.f, "loss_f", "the embedding F (netF)"),
    ] {
        if !v.is_finite() {
            return Err(Error::NumericalFault(format!(
                "non-finite loss at epoch {epoch}, {in_epoch} (global {global}): {name}, the \
                 loss of {net}, is {v}; training \
                 stopped. The last good checkpoint, {}, is intact (the last finished epoch or \
                 interruption). Lower --lr (or --adv-weight) and start again.",
                last_checkpoint.display()
            )));
        }
    }
    Ok(())
}

/// The first tensor of `sd` holding a NaN or an infinity: `(tensor name, value)`.
pub fn first_non_finite(sd: &StateDict) -> Option<(&str, f32)> {
    sd.tensors.iter().find_map(|(name, t)| match t {
        StateTensor::F32 { data, .. } => data
            .iter()
            .find(|v| !v.is_finite())
            .map(|&v| (name.as_str(), v)),
        StateTensor::I64 { .. } => None,
    })
}

/// Refuses to write a checkpoint whose weights, buffers or Adam moments are not finite (a
/// gradient that overflowed): the previous checkpoint stays the last good one.
pub fn check_state(sd: &StateDict, epoch: usize, last_checkpoint: &Path) -> Result<()> {
    match first_non_finite(sd) {
        None => Ok(()),
        Some((name, v)) => {
            let net = name
                .split('.')
                .find(|p| p.starts_with("net"))
                .unwrap_or("a network");
            Err(Error::NumericalFault(format!(
                "non-finite value ({v}) in {name} of {net} after epoch {epoch} (a gradient \
                 overflowed); training stopped without writing it. The last good checkpoint, \
                 {}, is intact. Lower --lr and start again.",
                last_checkpoint.display()
            )))
        }
    }
}

/// Refuses to resume when metrics.jsonl holds epochs of another experiment than the
/// checkpoint (a checkpoint copied in from another run).
pub fn check_metrics_experiment(
    lines: &[String],
    experiment: &str,
    metrics: &Path,
    checkpoint: &Path,
) -> Result<()> {
    let want = format!("{{\"experiment\":\"{experiment}\",");
    match lines.iter().find(|l| !l.starts_with(&want)) {
        None => Ok(()),
        Some(l) => Err(Error::Checkpoint {
            path: checkpoint.display().to_string(),
            detail: format!(
                "it holds experiment {experiment}, but {} records another run ({}): the \
                 checkpoint comes from another run. Put this run's own checkpoint back, or \
                 start again with --force",
                metrics.display(),
                l.split(',').next().unwrap_or(l)
            ),
        }),
    }
}

/// Where an interrupted epoch stopped: iterations done and the loss sums so far (exact bits).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PartialEpoch {
    /// The interrupted epoch (1-based).
    pub epoch: usize,
    /// Iterations of it already done.
    pub done: usize,
    pub sums: Losses,
    pub seconds: f64,
}

impl PartialEpoch {
    /// Adds the position to a checkpoint's metadata.
    pub fn insert(&self, m: &mut BTreeMap<String, String>) {
        m.insert("partial_epoch".into(), self.epoch.to_string());
        m.insert("partial_iterations".into(), self.done.to_string());
        let s = self.sums;
        m.insert(
            "partial_loss_sums".into(),
            [s.d, s.g, s.c, s.f]
                .iter()
                .map(|v| format!("{:08x}", v.to_bits()))
                .collect::<Vec<_>>()
                .join(","),
        );
        m.insert("partial_seconds".into(), format!("{:?}", self.seconds));
    }

    /// Reads the position back (`None`: the checkpoint is at an epoch boundary).
    pub fn from_metadata(m: &BTreeMap<String, String>, path: &Path) -> Result<Option<Self>> {
        let Some(e) = m.get("partial_epoch") else {
            return Ok(None);
        };
        let bad = || Error::Checkpoint {
            path: path.display().to_string(),
            detail: "metadata partial_* (position inside an interrupted epoch) is invalid".into(),
        };
        let get = |k: &str| m.get(k).ok_or_else(bad);
        let sums: Vec<f32> = get("partial_loss_sums")?
            .split(',')
            .map(|h| u32::from_str_radix(h, 16).map(f32::from_bits))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad())?;
        if sums.len() != 4 {
            return Err(bad());
        }
        Ok(Some(PartialEpoch {
            epoch: e.parse().map_err(|_| bad())?,
            done: get("partial_iterations")?.parse().map_err(|_| bad())?,
            sums: Losses {
                d: sums[0],
                g: sums[1],
                c: sums[2],
                f: sums[3],
            },
            seconds: get("partial_seconds")?.parse().map_err(|_| bad())?,
        }))
    }
}

/// Removes the temporary files (`.<name>.tmp-<pid>`) that a killed process leaves behind in
/// the run directory `root` (and its `checkpoints/` and `samples/`); they are never read.
pub fn remove_stale_temporaries(root: &Path) {
    for dir in [
        root.to_path_buf(),
        root.join("checkpoints"),
        root.join("samples"),
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_epoch_round_trips_exact_bits() {
        let p = PartialEpoch {
            epoch: 3,
            done: 2,
            sums: Losses {
                d: 1.0 / 3.0,
                g: f32::MIN_POSITIVE,
                c: -0.0,
                f: 12345.678,
            },
            seconds: 0.25,
        };
        let mut m = BTreeMap::new();
        assert_eq!(
            PartialEpoch::from_metadata(&m, Path::new("x")).unwrap(),
            None
        );
        p.insert(&mut m);
        let q = PartialEpoch::from_metadata(&m, Path::new("x"))
            .unwrap()
            .unwrap();
        assert_eq!(q.sums.c.to_bits(), p.sums.c.to_bits());
        assert_eq!(q, p);
        m.insert("partial_loss_sums".into(), "zz".into());
        let e = PartialEpoch::from_metadata(&m, Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("partial_"), "{e}");
    }

    #[test]
    fn non_finite_losses_and_weights_are_named() {
        let l = Losses {
            d: 0.5,
            g: f32::INFINITY,
            c: 0.1,
            f: 0.2,
        };
        let e = check_losses(
            &l,
            2,
            3..=3,
            9..=9,
            Path::new("run/checkpoints/last.safetensors"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("epoch 2, iteration 3") && e.contains("netG") && e.contains("loss_g"),
            "{e}"
        );
        assert!(e.contains("last.safetensors"), "{e}");
        let mut sd = StateDict::default();
        sd.tensors.insert(
            "netF.feature.0.weight".into(),
            StateTensor::F32 {
                dims: vec![2],
                data: vec![1.0, f32::NAN],
            },
        );
        let e = check_state(&sd, 4, Path::new("last"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("netF.feature.0.weight") && e.contains("after epoch 4"),
            "{e}"
        );
    }

    #[test]
    fn resume_commands_are_shell_safe() {
        assert_eq!(
            resume_command(Path::new("runs/exp1-quick")),
            "gtadapt train --resume runs/exp1-quick"
        );
        assert_eq!(
            resume_command(Path::new("my run's dir")),
            r"gtadapt train --resume 'my run'\''s dir'"
        );
    }
}
