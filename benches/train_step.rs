//! Milliseconds per full training iteration on the CPU backend (random data, the authors'
//! default hyper-parameters), for each experiment, after warm-up iterations.
//!
//!     cargo bench --bench train_step
//!
//! Environment: GTADAPT_BENCH_BATCH (default 100), GTADAPT_BENCH_ITERS (timed iterations,
//! default 3), GTADAPT_BENCH_WIDTH (ndf = ngf, default 64), GTADAPT_BENCH_NZ (default 512),
//! GTADAPT_BENCH_EXPERIMENTS (comma-separated, default "source-only,exp1,exp2,exp3"),
//! RAYON_NUM_THREADS. reference/gta_torch.py bench times the PyTorch reference the same way.

use gtadapt::gta::{Batch, Experiment, Hyper};
use gtadapt::models::Widths;
use gtadapt::train::noise_for;
use gtadapt::{rng, Tensor};
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let batch = env("GTADAPT_BENCH_BATCH", 100);
    let iters = env("GTADAPT_BENCH_ITERS", 3).max(1);
    let width = env("GTADAPT_BENCH_WIDTH", 64);
    let nz = env("GTADAPT_BENCH_NZ", 512);
    let list = std::env::var("GTADAPT_BENCH_EXPERIMENTS")
        .unwrap_or_else(|_| "source-only,exp1,exp2,exp3".into());
    println!(
        "CPU backend, {} threads, batch {batch}, ndf = ngf = {width}, nz {nz}, {iters} timed iterations (median)",
        rayon::current_num_threads()
    );
    println!("| experiment | ms / iteration |\n|---|---:|");
    let mut x = vec![0.0f32; batch * 3 * 32 * 32];
    rng::normal(9, 1, 0, &mut x);
    let xs = Tensor::new([batch, 3, 32, 32], x.clone()).unwrap();
    rng::normal(9, 2, 0, &mut x);
    let xt = Tensor::new([batch, 3, 32, 32], x).unwrap();
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let b = Batch::from_normalized(xs, labels, xt).unwrap();
    for name in list.split(',') {
        let exp = match name.trim() {
            "source-only" => Experiment::SourceOnly,
            "exp1" => Experiment::Exp1,
            "exp2" => Experiment::Exp2,
            "exp3" => Experiment::Exp3,
            other => {
                eprintln!("unknown experiment {other}");
                continue;
            }
        };
        let hyper = Hyper {
            widths: Widths {
                ndf: width,
                ngf: width,
                nz,
            },
            ..Hyper::default()
        };
        let mut t = gtadapt::gta::Trainer::new(exp, hyper, 1);
        let noise = noise_for(1, 0, batch, nz).unwrap();
        t.step(&b, &noise).unwrap(); // warm-up
        let mut ms: Vec<f64> = (0..iters)
            .map(|_| {
                let s = Instant::now();
                t.step(&b, &noise).unwrap();
                s.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        println!("| {} | {:.1} |", exp.name(), ms[ms.len() / 2]);
    }
}
