//! Milliseconds per full GTA training iteration (random data, the authors' default
//! hyper-parameters) after warm-up, per experiment and batch size, on the CPU backend, the
//! GPU backend on the SIMT emulator, or the GPU backend on CUDA; with the iteration's FLOPs
//! counted analytically and, where a compute ceiling is known, the share of it achieved.
//!
//!     cargo bench --bench train_step
//!
//! Environment:
//! - GTADAPT_BENCH_DEVICE: `cpu` (default when no GPU is usable), `cuda` (default with a GPU;
//!   timed four ways: `Trainer::step` with launches synchronous, then asynchronous, the host
//!   not waiting after each kernel; then as `gtadapt train` runs — embedded data resident,
//!   the epoch's schedule on the device — launch by launch (`no-graph`) and replaying one
//!   captured CUDA graph per iteration (`graph`): the graph's gain, measured in one run),
//!   `emu` (the GPU backend on the emulator: default batch 2, widths 8; sync, no-graph, graph).
//! - GTADAPT_BENCH_BATCHES (comma-separated; default "100,64" on CUDA, "100" on the CPU, "2" on
//!   the emulator; GTADAPT_BENCH_BATCH also works),
//!   GTADAPT_BENCH_ITERS (timed iterations, default 3), GTADAPT_BENCH_WIDTH (ndf = ngf,
//!   default 64), GTADAPT_BENCH_NZ (default 512), GTADAPT_BENCH_EXPERIMENTS (comma-separated,
//!   default "source-only,exp1,exp2,exp3"), RAYON_NUM_THREADS.
//! - GTADAPT_BENCH_OUT: writes train_step-<device>.md and .json there (default target/bench/).
//! - % of peak: against GTADAPT_BENCH_PEAK_GFLOPS, else the FP32 GEMM ceiling of
//!   `$GTADAPT_BENCH_OUT/kernels-<device>.json` (benches/kernels.rs, same run of
//!   scripts/gpu-check.sh), else not given.
//!
//! FLOPs per iteration: the conv and linear multiply-adds (×2) of every network call of the
//! step, each backward pass through a call counted as twice its forward (data + weight
//! gradients); batch norm, pooling, activations, losses and Adam are left out (a few %).
//! exp1/exp2: forward F×2, G×2, C×1, D×6; backward D×6, G×3, F×2, C×2. exp3: forward F×2,
//! G4×2, C×1, D_src×4, D_tgt×4; backward D_src×4, D_tgt×4, G4×4, F×2, C×2. Source-only: F, C
//! forward and backward once. (exp2's F2/C2 are counted as F1/C1: an approximation.)
//!
//! The split: after the timed iterations, as many more run with `Trainer::phase_seconds` set,
//! which waits for the device at each phase boundary and adds up: forward (F, G, C on both
//! domains), D (D's forwards, backward and update), G/F forward (the updated D on g_s, g_t),
//! G, C, F (each network's backward and Adam update). reference/gta_torch.py bench reports
//! PyTorch's phases, cut slightly differently (its G and F phases include their D calls).

use gtadapt::backend::Backend;
use gtadapt::bench::{self, Config};
use gtadapt::gta::{Batch, Experiment, Hyper, Trainer};
use gtadapt::models::Widths;
use gtadapt::train::noise_for;
use gtadapt::{rng, Tensor};
use std::fmt::Write as _;
use std::time::Instant;

fn env(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Analytic FLOPs of one iteration (see the module docs).
fn flops_per_iter(exp: Experiment, batch: usize, width: usize, nz: usize) -> f64 {
    let cfg = Config {
        ndf: width,
        ngf: width,
        nz,
        ..Config::gta(batch)
    };
    let net = |prefix: &str| -> f64 {
        let conv: f64 = bench::conv_layers(&cfg)
            .iter()
            .filter(|l| l.name.starts_with(prefix))
            .map(|l| l.flop(batch))
            .sum();
        let lin: f64 = bench::linear_layers(&cfg)
            .iter()
            .filter(|(n, _, _)| n.starts_with(prefix))
            .map(|(_, a, b)| 2.0 * (batch * a * b) as f64)
            .sum();
        conv + lin
    };
    let (f, c, g, d, g4, ds) = (
        net("F1."),
        net("C1."),
        net("G."),
        net("D."),
        net("G4."),
        net("D_src."),
    );
    // D_tgt: D_src with a 1-channel last layer instead of 11.
    let dt = ds
        - (10.0 / 11.0)
            * bench::conv_layers(&cfg)
                .iter()
                .find(|l| l.name == "D_src.conv4")
                .map(|l| l.flop(batch))
                .unwrap_or(0.0);
    // (forward calls, backward passes) per network; a backward costs 2 forwards.
    let cost = |fwd: f64, bwd: f64, x: f64| (fwd + 2.0 * bwd) * x;
    match exp {
        Experiment::SourceOnly => cost(1.0, 1.0, f) + cost(1.0, 1.0, c),
        Experiment::Exp1 | Experiment::Exp2 => {
            cost(2.0, 2.0, f) + cost(1.0, 2.0, c) + cost(2.0, 3.0, g) + cost(6.0, 6.0, d)
        }
        Experiment::Exp3 => {
            cost(2.0, 2.0, f)
                + cost(1.0, 2.0, c)
                + cost(2.0, 4.0, g4)
                + cost(4.0, 4.0, ds)
                + cost(4.0, 4.0, dt)
        }
    }
}

/// Median ms per iteration, and mean ms per phase.
type Timing = (f64, Vec<(&'static str, f64)>);

/// Median ms of `iters` steps after one warm-up step, then the mean ms per phase of `iters`
/// more steps timed phase by phase.
fn time_steps<B: Backend>(t: &mut Trainer<B>, b: &Batch, nz: usize, iters: usize) -> Timing {
    let n = b.y_s.len();
    let noise = noise_for(1, 0, n, nz).unwrap();
    t.step(b, &noise).expect("warm-up step");
    let mut ms: Vec<f64> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            t.step(b, &noise).expect("step");
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    t.phase_seconds = Some(Vec::new());
    for _ in 0..iters {
        t.step(b, &noise).expect("step");
    }
    let phases = t.phase_seconds.take().unwrap_or_default();
    let per_iter = phases
        .into_iter()
        .map(|(name, s)| (name, s * 1e3 / iters as f64))
        .collect();
    (ms[ms.len() / 2], per_iter)
}

/// Iterations as `gtadapt train` runs them on the GPU backend (embedded data resident, the
/// epoch's schedule on the device; with `graphs`, one captured iteration replayed): the mean
/// of `iters` iterations after 3 warm-up ones (samples, arena, capture), timed together to a
/// final synchronization. No phase split (that needs a synchronization per phase).
fn scheduled<M: gtadapt::gpu::Memory + 'static>(
    backend: gtadapt::backend::gpu::Gpu<M>,
    graphs: bool,
    experiment: Experiment,
    hyper: Hyper,
    batch: usize,
    iters: usize,
) -> (&'static str, Timing) {
    let cfg = gtadapt::train::RunConfig {
        experiment,
        hyper,
        source: "embedded-mnist".into(),
        target: "embedded-mnistm".into(),
        epochs: 1,
        batch_size: batch,
        iters_per_epoch: None,
        seed: 1,
        input_norm: gtadapt::train::InputNorm::Dataset,
    };
    let ms = gtadapt::train::time_iterations(backend, &cfg, 3, iters).expect("timed iterations");
    (if graphs { "graph" } else { "no-graph" }, (ms, Vec::new()))
}

fn batch_of(n: usize) -> Batch {
    let mut x = vec![0.0f32; n * 3 * 32 * 32];
    rng::normal(9, 1, 0, &mut x);
    let xs = Tensor::new([n, 3, 32, 32], x.clone()).unwrap();
    rng::normal(9, 2, 0, &mut x);
    let xt = Tensor::new([n, 3, 32, 32], x).unwrap();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    Batch::from_normalized(xs, labels, xt).unwrap()
}

/// The FP32 compute ceiling for "% of peak", in GFLOP/s.
fn peak_gflops(out: &std::path::Path, device: &str) -> Option<(f64, String)> {
    if let Some(p) = std::env::var("GTADAPT_BENCH_PEAK_GFLOPS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Some((p, "GTADAPT_BENCH_PEAK_GFLOPS".into()));
    }
    let path = out.join(format!("kernels-{device}.json"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    let c = &v["ceilings"];
    let p = c["gemm_gflops"]
        .as_f64()?
        .max(c["torch_fp32_gflops"].as_f64().unwrap_or(0.0))
        .max(c["cublas_fp32_gflops"].as_f64().unwrap_or(0.0));
    Some((p, format!("FP32 GEMM ceiling of {}", path.display())))
}

fn main() {
    let device = std::env::var("GTADAPT_BENCH_DEVICE")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| {
            if gtadapt::gpu::cuda::CudaExecutor::new().is_ok() {
                "cuda".into()
            } else {
                "cpu".into()
            }
        });
    let emu = device == "emu";
    let batches: Vec<usize> = std::env::var("GTADAPT_BENCH_BATCHES")
        .ok()
        .or_else(|| std::env::var("GTADAPT_BENCH_BATCH").ok())
        .map(|s| s.split(',').filter_map(|b| b.trim().parse().ok()).collect())
        .unwrap_or_else(|| match device.as_str() {
            "emu" => vec![2],
            // The two batch sizes; on the CPU one (an iteration takes seconds there).
            "cuda" => vec![100, 64],
            _ => vec![100],
        });
    let iters = env("GTADAPT_BENCH_ITERS")
        .unwrap_or(if emu { 1 } else { 3 })
        .max(1);
    let width = env("GTADAPT_BENCH_WIDTH").unwrap_or(if emu { 8 } else { 64 });
    let nz = env("GTADAPT_BENCH_NZ").unwrap_or(if emu { 8 } else { 512 });
    let list = std::env::var("GTADAPT_BENCH_EXPERIMENTS")
        .unwrap_or_else(|_| "source-only,exp1,exp2,exp3".into());
    let out = bench::out_dir();
    let peak = peak_gflops(&out, &device);
    // (description, card, driver)
    let (what, card, driver) = match device.as_str() {
        "cpu" => (
            format!(
                "CPU backend, {} threads, {}",
                rayon::current_num_threads(),
                bench::cpu_name()
            ),
            bench::cpu_name(),
            "-".to_string(),
        ),
        "emu" => (
            format!("GPU backend on the SIMT emulator ({})", bench::cpu_name()),
            format!("SIMT emulator on {}", bench::cpu_name()),
            "-".to_string(),
        ),
        "cuda" => {
            use gtadapt::bench::BenchTarget;
            let e = gtadapt::gpu::cuda::CudaExecutor::new().expect("CUDA executor");
            (
                format!("GPU backend on {} ({})", e.device(), e.driver()),
                e.device(),
                e.driver(),
            )
        }
        other => panic!("GTADAPT_BENCH_DEVICE={other:?}: expected cpu, emu or cuda"),
    };
    let mut md = String::new();
    let _ = writeln!(md, "# gtadapt training iteration\n");
    let _ = writeln!(md, "- device: {what}");
    let _ = writeln!(
        md,
        "- commit: {}, date: {}",
        bench::commit(),
        bench::utc_now()
    );
    let _ = writeln!(
        md,
        "- ndf = ngf = {width}, nz {nz}; rows cpu/sync/async: median of {iters} timed iterations after 1 warm-up (host clock around `Trainer::step`, which ends by downloading the losses); rows no-graph/graph (GPU backend): {iters} iterations as `gtadapt train` runs them (embedded data resident, the epoch's schedule on the device; graph: replays of one captured CUDA graph) after 3 warm-up ones, timed together to one final synchronization, mean"
    );
    let _ = writeln!(
        md,
        "- % of peak: {}\n",
        peak.as_ref()
            .map(|(p, src)| format!("against {p:.0} GFLOP/s ({src})"))
            .unwrap_or_else(|| "no ceiling known for this device".into())
    );
    let _ = writeln!(
        md,
        "| experiment | batch | launches | ms / iteration | GFLOP / iteration | GFLOP/s | % of peak |\n|---|---:|---|---:|---:|---:|---:|"
    );
    print!("{md}");
    let mut rows = Vec::new();
    let mut phase_lines = Vec::new();
    for &batch in &batches {
        let b = batch_of(batch);
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
            let cpu = Trainer::new(exp, hyper, 1);
            let mut runs: Vec<(&str, Timing)> = Vec::new();
            match device.as_str() {
                "cpu" => {
                    let mut t = cpu;
                    runs.push(("-", time_steps(&mut t, &b, nz, iters)));
                }
                "emu" => {
                    let mut t = cpu
                        .to_backend(gtadapt::backend::gpu::Gpu::new(
                            gtadapt::gpu::Emulator::new(),
                        ))
                        .expect("to emulator");
                    runs.push(("sync", time_steps(&mut t, &b, nz, iters)));
                    for graphs in [false, true] {
                        let g = gtadapt::backend::gpu::Gpu::new(gtadapt::gpu::Emulator::new())
                            .with_graphs(graphs);
                        runs.push(scheduled(g, graphs, exp, hyper, batch, iters));
                    }
                }
                _ => {
                    for mode in ["sync", "async"] {
                        let e = gtadapt::gpu::cuda::CudaExecutor::new().expect("CUDA executor");
                        e.set_async_launches(mode == "async");
                        let mut t = cpu
                            .to_backend(gtadapt::backend::gpu::Gpu::new(e))
                            .expect("to GPU");
                        runs.push((mode, time_steps(&mut t, &b, nz, iters)));
                    }
                    for graphs in [false, true] {
                        let e = gtadapt::gpu::cuda::CudaExecutor::new().expect("CUDA executor");
                        let g = gtadapt::backend::gpu::Gpu::new(e).with_graphs(graphs);
                        runs.push(scheduled(g, graphs, exp, hyper, batch, iters));
                    }
                }
            }
            let flop = flops_per_iter(exp, batch, width, nz);
            for (mode, (ms, phases)) in runs {
                let split: Vec<String> =
                    phases.iter().map(|(n, v)| format!("{n} {v:.1}")).collect();
                if !split.is_empty() {
                    phase_lines.push(format!(
                        "| {} | {batch} | {mode} | {} |",
                        exp.name(),
                        split.join(", ")
                    ));
                }
                let gflops = flop / ms / 1e6;
                let pct = peak.as_ref().map(|(p, _)| 100.0 * gflops / p);
                let line = format!(
                    "| {} | {batch} | {mode} | {ms:.2} | {:.2} | {gflops:.1} | {} |",
                    exp.name(),
                    flop / 1e9,
                    pct.map(|p| format!("{p:.1}")).unwrap_or_else(|| "-".into())
                );
                println!("{line}");
                let _ = writeln!(md, "{line}");
                let phase_ms: serde_json::Map<String, serde_json::Value> = phases
                    .iter()
                    .map(|(n, v)| (n.to_string(), serde_json::json!(v)))
                    .collect();
                rows.push(serde_json::json!({
                    "experiment": exp.name(), "batch": batch, "launches": mode, "ms": ms,
                    "flop": flop, "gflops": gflops, "peak_pct": pct, "phase_ms": phase_ms,
                }));
            }
        }
    }
    let _ = writeln!(
        md,
        "\nPhases, ms per iteration (the device waited for at each boundary, so their sum exceeds \
         the iteration above on a GPU):\n\n| experiment | batch | launches | forward, D, G/F forward, G, C, F |\n|---|---:|---|---|"
    );
    for l in &phase_lines {
        let _ = writeln!(md, "{l}");
    }
    println!("\n{}", phase_lines.join("\n"));
    let json = serde_json::json!({
        "bench": "train_step", "device": what, "card": card, "driver": driver,
        "commit": bench::commit(), "date": bench::utc_now(),
        "width": width, "nz": nz, "iters": iters, "threads": rayon::current_num_threads(),
        "peak_gflops": peak.as_ref().map(|p| p.0), "rows": rows,
    });
    let written = std::fs::create_dir_all(&out).and_then(|_| {
        std::fs::write(out.join(format!("train_step-{device}.md")), &md)?;
        std::fs::write(
            out.join(format!("train_step-{device}.json")),
            serde_json::to_string_pretty(&json).unwrap_or_default() + "\n",
        )
    });
    match written {
        Ok(()) => println!(
            "\nwritten: {}/train_step-{device}.md and .json",
            out.display()
        ),
        Err(e) => eprintln!("could not write to {}: {e}", out.display()),
    }
}
