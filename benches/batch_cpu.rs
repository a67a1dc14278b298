//! Throughput of the CPU batch pipeline: images per second at batch 100 through the full path
//! (seeded shuffle, gather, Pillow-exact resize to 32×32, gray → RGB, normalization to f32),
//! for the embedded source (28×28 gray, resized) and target (32×32 RGB).
//!
//! Two numbers per dataset: `pipeline` iterates `Batcher::epoch` (a background thread prepares
//! the next batch while the consumer holds the current one; here the consumer does nothing, so
//! this is the producer's rate as training would see it), `prepare` calls `make_batch` on the
//! calling thread.
//!
//! Run: cargo bench --bench batch_cpu

use std::time::{Duration, Instant};

use gtadapt::data::{self, Batcher};

const BATCH: usize = 100;
const MIN_TIME: Duration = Duration::from_secs(2);

/// Images per second of `run_epoch` (which returns the images it produced), over at least
/// MIN_TIME after one warm-up epoch.
fn rate(mut run_epoch: impl FnMut(u64) -> usize) -> (f64, usize) {
    run_epoch(0);
    let start = Instant::now();
    let (mut images, mut epoch) = (0, 1);
    while start.elapsed() < MIN_TIME {
        images += run_epoch(epoch);
        epoch += 1;
    }
    (
        images as f64 / start.elapsed().as_secs_f64(),
        epoch as usize - 1,
    )
}

fn main() {
    println!(
        "batch_cpu: gtadapt {}, {} ({} cores available), batch {BATCH}",
        env!("CARGO_PKG_VERSION"),
        gtadapt::bench::cpu_name(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    for name in data::embedded::NAMES {
        let d = match data::open(name) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("cannot open {name}: {e}");
                std::process::exit(1);
            }
        };
        let b = match Batcher::train(&d.train, BATCH, 1) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{name}: {e}");
                std::process::exit(1);
            }
        };
        let [_, c, h, w] = d.train.images.dims();
        let (pipeline, epochs) = rate(|e| b.epoch(e).map(|batch| batch.len()).sum());
        let (prepare, _) = rate(|e| {
            b.batch_indices(e)
                .iter()
                .map(|idx| b.make_batch(idx).len())
                .sum()
        });
        println!(
            "{name:16} stored {c}×{h}×{w}: pipeline {pipeline:>9.0} images/s ({epochs} epochs of {} batches), prepare on one thread {prepare:>9.0} images/s",
            b.len()
        );
    }
}
