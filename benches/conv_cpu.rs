//! CPU timings of every conv / conv-transpose layer of the GTA networks, in f32: forward,
//! backward-data and backward-filter (no bias anywhere, so the three directions do the same
//! multiply-adds).
//!
//!     cargo bench --bench conv_cpu
//!
//! Environment: GTADAPT_BENCH_BATCH (default 100), GTADAPT_BENCH_REPS (timed repetitions per
//! row, default 10, after one warm-up), GTADAPT_BENCH_JSON (append one JSON line per row to this
//! file), GTADAPT_BENCH_LAYERS (comma-separated name prefixes, e.g. "G.,D.conv2": only those
//! layers), RAYON_NUM_THREADS (thread count). reference/bench_conv_cpu.py times the same rows in
//! PyTorch and prints the same table and JSON fields.
//!
//! FLOPs are counted analytically, 2 per multiply-add of the direct convolution:
//! 2·N·Cout·Ho·Wo·Cin·kh·kw for a conv, and for a conv-transpose the same product taken on
//! its input side, 2·N·Cin·H·W·Cout·kh·kw (each input pixel meets each kernel tap once).
//! Each direction does exactly this work.

use gtadapt::ops::conv::{
    conv2d_backward, conv2d_forward, conv2d_out_size, conv_transpose2d_backward,
    conv_transpose2d_forward, conv_transpose2d_out_size, Conv2dParams,
};
use std::fmt::Write as _;
use std::hint::black_box;
use std::io::Write as _;
use std::time::Instant;

struct Layer {
    name: &'static str,
    transposed: bool,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    /// Input height = width.
    size: usize,
}

const fn layer(
    name: &'static str,
    transposed: bool,
    (cin, cout): (usize, usize),
    (k, stride, pad): (usize, usize, usize),
    size: usize,
) -> Layer {
    Layer {
        name,
        transposed,
        cin,
        cout,
        k,
        stride,
        pad,
        size,
    }
}

const LAYERS: [Layer; 12] = [
    layer("F1.conv1", false, (3, 64), (5, 1, 0), 32),
    layer("F1.conv2", false, (64, 64), (5, 1, 0), 14),
    layer("F1.conv3", false, (64, 128), (5, 1, 0), 5),
    layer("D.conv1", false, (3, 64), (3, 1, 1), 32),
    layer("D.conv2", false, (64, 128), (3, 1, 1), 16),
    layer("D.conv3", false, (128, 256), (3, 1, 1), 8),
    layer("D.conv4", false, (256, 128), (3, 1, 1), 4),
    layer("G.convT1", true, (651, 512), (2, 1, 0), 1),
    layer("G.convT2", true, (512, 256), (4, 2, 1), 2),
    layer("G.convT3", true, (256, 128), (4, 2, 1), 4),
    layer("G.convT4", true, (128, 64), (4, 2, 1), 8),
    layer("G.convT5", true, (64, 3), (4, 2, 1), 16),
];

const DIRECTIONS: [&str; 3] = ["forward", "backward-data", "backward-filter"];

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a positive integer")),
        Err(_) => default,
    }
}

/// Uniform values in [-1, 1) from a fixed xorshift stream.
fn random(n: usize, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: page in buffers, start the rayon pool
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    let m = t.len() / 2;
    if t.len() % 2 == 1 {
        t[m]
    } else {
        (t[m - 1] + t[m]) / 2.0
    }
}

fn main() {
    let batch = env_usize("GTADAPT_BENCH_BATCH", 100);
    let reps = env_usize("GTADAPT_BENCH_REPS", 10).max(1);
    let threads = rayon::current_num_threads();
    let json_path = std::env::var("GTADAPT_BENCH_JSON").ok();
    let filter = std::env::var("GTADAPT_BENCH_LAYERS").unwrap_or_default();
    let selected = |name: &str| filter.is_empty() || filter.split(',').any(|f| name.starts_with(f));
    println!(
        "gtadapt conv CPU bench: f32, batch {batch}, {reps} reps (median), rayon threads {threads}"
    );
    println!();
    println!("| layer | shape | direction | ms | GFLOP | GFLOP/s |");
    println!("|---|---|---|---:|---:|---:|");
    let mut json = String::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for l in LAYERS.iter().filter(|l| selected(l.name)) {
        let p = Conv2dParams {
            stride: l.stride,
            padding: l.pad,
        };
        let out = if l.transposed {
            conv_transpose2d_out_size(l.size, l.k, l.stride, l.pad)
        } else {
            conv2d_out_size(l.size, l.k, l.stride, l.pad)
        }
        .expect("layer shape");
        let x_dims = [batch, l.cin, l.size, l.size];
        let w_dims = if l.transposed {
            [l.cin, l.cout, l.k, l.k]
        } else {
            [l.cout, l.cin, l.k, l.k]
        };
        let x = random(x_dims.iter().product(), &mut seed);
        let w = random(w_dims.iter().product(), &mut seed);
        let gy = random(batch * l.cout * out * out, &mut seed);
        // Multiply-adds on the small-image side: conv output, convT input.
        let pix = if l.transposed {
            l.size * l.size
        } else {
            out * out
        };
        let flop = 2.0 * (batch * l.cout * pix * l.cin * l.k * l.k) as f64;
        let kind = if l.transposed { "convT" } else { "conv" };
        let shape = format!(
            "{kind} k{} s{} p{} {}->{} {}x{}",
            l.k, l.stride, l.pad, l.cin, l.cout, l.size, l.size
        );
        for (d, direction) in DIRECTIONS.iter().enumerate() {
            let need = [d == 1, d == 2, false];
            let ms = median_ms(reps, || {
                let r = match (l.transposed, d) {
                    (false, 0) => conv2d_forward(&x, x_dims, &w, w_dims, None, p).map(|r| r.0),
                    (true, 0) => {
                        conv_transpose2d_forward(&x, x_dims, &w, w_dims, None, p).map(|r| r.0)
                    }
                    (false, _) => conv2d_backward(&x, x_dims, &w, w_dims, false, &gy, p, need)
                        .map(|g| g.dx.or(g.dw).unwrap_or_default()),
                    (true, _) => {
                        conv_transpose2d_backward(&x, x_dims, &w, w_dims, false, &gy, p, need)
                            .map(|g| g.dx.or(g.dw).unwrap_or_default())
                    }
                };
                black_box(r.expect("conv"));
            });
            let gflops = flop / ms / 1e6;
            println!(
                "| {} | {shape} | {direction} | {ms:.3} | {:.3} | {gflops:.1} |",
                l.name,
                flop / 1e9
            );
            writeln!(
                json,
                "{{\"impl\": \"gtadapt\", \"layer\": \"{}\", \"shape\": \"{shape}\", \
                 \"direction\": \"{direction}\", \"batch\": {batch}, \"threads\": {threads}, \
                 \"reps\": {reps}, \"ms\": {ms:.4}, \"gflop\": {:.4}, \"gflops\": {gflops:.2}}}",
                l.name,
                flop / 1e9
            )
            .expect("write to String");
        }
    }
    if let Some(path) = json_path {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
        f.write_all(json.as_bytes())
            .unwrap_or_else(|e| panic!("write {path}: {e}"));
        println!("\nJSON lines appended to {path}");
    }
}
