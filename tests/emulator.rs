//! The CPU SIMT emulator on the self-test kernels of kernels/selftest.cu: each result against
//! values computed here, on sizes that are not multiples of the block, with outputs poisoned
//! (NaN / 0xDEADBEEF) before the launch. Plus the errors it must report.

use gtadapt::gpu::kernels::selftest::{
    selftest_ints, SelftestIntParams, SelftestTransposeParams, SelftestVecParams,
};
use std::time::Instant;

use gtadapt::gpu::{DeviceBuffer, Emulator, Executor, GpuError, LaunchConfig};

const POISON_I32: i32 = 0xDEADBEEFu32 as i32;

fn launch<P: Copy>(kernel: &str, cfg: LaunchConfig, p: &P) -> Result<(), GpuError> {
    let t = Instant::now();
    // SAFETY: every caller passes the #[repr(C)] mirror of the kernel's struct with pointers to
    // live DeviceBuffers sized for the launch (checked by the kernels' bounds).
    let r = unsafe { Emulator::new().launch_with(kernel, cfg, p) };
    println!(
        "{kernel:<28} grid {:?} block {:?}: {:.3} ms",
        cfg.grid,
        cfg.block,
        t.elapsed().as_secs_f64() * 1e3
    );
    r
}

fn vec_params(x: &DeviceBuffer<f32>, out: &DeviceBuffer<f32>, n: usize) -> SelftestVecParams {
    SelftestVecParams {
        x: x.device_ptr(),
        out: out.device_ptr(),
        n: n as u32,
        pad: 0,
    }
}

fn int_params(
    x: &DeviceBuffer<i32>,
    out: &DeviceBuffer<i32>,
    n: usize,
    bins: u32,
) -> SelftestIntParams {
    SelftestIntParams {
        x: x.device_ptr(),
        out: out.device_ptr(),
        n: n as u32,
        bins,
    }
}

/// Per-block sums of a grid-stride loop, as the block-sum kernels compute them.
fn expected_block_sums(x: &[f32], blocks: usize, threads: usize) -> Vec<f32> {
    let mut sums = vec![0f64; blocks];
    for (i, v) in x.iter().enumerate() {
        sums[(i / threads) % blocks] += *v as f64;
    }
    sums.into_iter().map(|s| s as f32).collect()
}

#[test]
fn block_sum_shuffle_reduction() {
    for (n, blocks, threads) in [
        (1000, 3, 64),
        (100_003, 37, 256),
        (5, 2, 1024),
        (70_001, 128, 256),
    ] {
        // Small integers: every partial sum is exact in f32, whatever the order.
        let xs: Vec<f32> = selftest_ints(n, -8, 9, n as u64)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let x = DeviceBuffer::from_slice(&xs);
        let out = DeviceBuffer::filled(blocks, f32::NAN);
        for kernel in ["selftest_block_sum", "selftest_block_sum_helper"] {
            launch(
                kernel,
                LaunchConfig::linear(blocks as u32, threads),
                &vec_params(&x, &out, n),
            )
            .unwrap();
            assert_eq!(
                out.to_vec(),
                expected_block_sums(&xs, blocks, threads as usize),
                "{kernel} n={n}"
            );
        }
    }
}

#[test]
fn transpose_through_shared_tile() {
    for (rows, cols) in [(45, 77), (1, 33), (64, 32), (100, 3)] {
        let xs: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
        let x = DeviceBuffer::from_slice(&xs);
        let out = DeviceBuffer::filled(rows * cols, f32::NAN);
        let cfg = LaunchConfig {
            grid: [(cols as u32).div_ceil(32), (rows as u32).div_ceil(32), 1],
            block: [32, 8, 1],
            dynamic_smem: 0,
        };
        let p = SelftestTransposeParams {
            input: x.device_ptr(),
            out: out.device_ptr(),
            rows: rows as u32,
            cols: cols as u32,
        };
        launch("selftest_transpose", cfg, &p).unwrap();
        let got = out.to_vec();
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(
                    got[c * rows + r],
                    xs[r * cols + c],
                    "{rows}x{cols} at ({r},{c})"
                );
            }
        }
    }
}

#[test]
fn block_inclusive_scan() {
    for (n, threads) in [(1000, 128), (77, 32), (3000, 1024), (513, 96)] {
        let xs = selftest_ints(n, -50, 50, 7 + n as u64);
        let x = DeviceBuffer::from_slice(&xs);
        let out = DeviceBuffer::filled(n, POISON_I32);
        let cfg = LaunchConfig::for_elements(n, threads);
        launch("selftest_scan", cfg, &int_params(&x, &out, n, 0)).unwrap();
        let mut expected = Vec::with_capacity(n);
        for chunk in xs.chunks(threads as usize) {
            let mut acc = 0;
            expected.extend(chunk.iter().map(|v| {
                acc += v;
                acc
            }));
        }
        assert_eq!(out.to_vec(), expected, "n={n} threads={threads}");
    }
}

#[test]
fn atomic_histogram() {
    let (n, bins) = (10_007, 37u32);
    let xs = selftest_ints(n, 0, 1000, 3);
    let x = DeviceBuffer::from_slice(&xs);
    let out = DeviceBuffer::<i32>::zeroed(bins as usize);
    launch(
        "selftest_histogram",
        LaunchConfig::linear(13, 96),
        &int_params(&x, &out, n, bins),
    )
    .unwrap();
    let mut expected = vec![0; bins as usize];
    for v in &xs {
        expected[(*v as usize) % bins as usize] += 1;
    }
    assert_eq!(out.to_vec(), expected);
}

#[test]
fn other_atomics() {
    let n = 5003;
    let xs = selftest_ints(n, -1000, 1000, 11);
    let x = DeviceBuffer::from_slice(&xs);
    let init = [0, i32::MIN, i32::MAX, 0, 0, 0, 0, 0];
    let out = DeviceBuffer::from_slice(&init);
    launch(
        "selftest_atomics",
        LaunchConfig::linear(7, 64),
        &int_params(&x, &out, n, 0),
    )
    .unwrap();
    let got = out.to_vec();
    assert_eq!(got[0], xs.iter().sum::<i32>());
    assert_eq!(got[1], *xs.iter().max().unwrap());
    assert_eq!(got[2], *xs.iter().min().unwrap());
    assert_eq!(got[3], n as i32, "atomicCAS counter");
    // Every written value (i + 1) is either returned by a later atomicExch or still there.
    let written: i64 = (1..=n as i64).sum();
    assert_eq!(got[5] as i64 + got[4] as i64, written, "atomicExch");
    assert_eq!(
        f32::from_bits(got[6] as u32),
        xs.iter().sum::<i32>() as f32,
        "float atomicAdd"
    );
    assert_eq!(
        got[7] as u32,
        xs.iter().map(|v| *v as u32).max().unwrap(),
        "unsigned atomicMax"
    );
}

#[test]
fn warp_votes() {
    let n = 250; // 8 warps, the last one partly beyond n
    let mut xs = selftest_ints(n, -3, 3, 5);
    xs[32..64].fill(1); // a warp where all are true
    xs[64..96].fill(-1); // and one where none is
    let x = DeviceBuffer::from_slice(&xs);
    let warps = n.div_ceil(32);
    let out = DeviceBuffer::filled(3 * warps, POISON_I32);
    launch(
        "selftest_vote",
        LaunchConfig::linear(2, 128),
        &int_params(&x, &out, n, 0),
    )
    .unwrap();
    let got = out.to_vec();
    for w in 0..warps {
        let mut ballot = 0u32;
        for l in 0..32 {
            if xs.get(w * 32 + l).is_some_and(|v| *v > 0) {
                ballot |= 1 << l;
            }
        }
        assert_eq!(got[3 * w] as u32, ballot, "ballot warp {w}");
        assert_eq!(got[3 * w + 1], (ballot != 0) as i32, "any warp {w}");
        assert_eq!(got[3 * w + 2], (ballot == u32::MAX) as i32, "all warp {w}");
    }
}

#[test]
fn shuffle_variants_and_widths() {
    let n = 150;
    let xs = selftest_ints(n, -1000, 1000, 9);
    let x = DeviceBuffer::from_slice(&xs);
    let out = DeviceBuffer::filled(8 * n, POISON_I32);
    launch(
        "selftest_shuffle",
        LaunchConfig::linear(3, 64),
        &int_params(&x, &out, n, 0),
    )
    .unwrap();
    let got = out.to_vec();
    let v = |i: usize| xs.get(i).copied().unwrap_or(-1);
    for i in 0..n {
        let (lane, base) = (i % 32, i - i % 32);
        // Within a segment of `w` lanes: the lane's segment start.
        let seg = |w: usize| base + lane / w * w;
        let up = |d: usize, w: usize| if lane % w >= d { v(i - d) } else { v(i) };
        let down = |d: usize, w: usize| if lane % w + d < w { v(i + d) } else { v(i) };
        let xor = |m: usize, w: usize| {
            let src = lane ^ m;
            if src / w <= lane / w {
                v(base + src)
            } else {
                v(i)
            }
        };
        let expected = [
            v(base + (lane * 7 + 3) % 32),
            up(3, 32),
            down(5, 32),
            xor(9, 32),
            v(seg(8) + 2),
            up(2, 8),
            down(3, 16),
            xor(4, 16),
        ];
        assert_eq!(&got[8 * i..8 * i + 8], &expected, "thread {i}");
    }
}

#[test]
fn dynamic_shared_memory_reverse() {
    let (n, threads) = (1000, 128u32);
    let xs: Vec<f32> = (0..n).map(|i| i as f32 + 0.25).collect();
    let x = DeviceBuffer::from_slice(&xs);
    let out = DeviceBuffer::filled(n, f32::NAN);
    let cfg = LaunchConfig::for_elements(n, threads).with_dynamic_smem(threads as usize * 4);
    launch("selftest_dyn_reverse", cfg, &vec_params(&x, &out, n)).unwrap();
    let t = threads as usize;
    let expected: Vec<f32> = (0..n)
        .map(|i| xs.get(i / t * t + (t - 1 - i % t)).copied().unwrap_or(0.0))
        .collect();
    assert_eq!(out.to_vec(), expected);
}

#[test]
fn missing_barrier_gives_wrong_results() {
    let (n, threads) = (256, 64u32);
    let xs: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let x = DeviceBuffer::from_slice(&xs);
    let out = DeviceBuffer::filled(n, 0.0f32);
    let cfg = LaunchConfig::for_elements(n, threads).with_dynamic_smem(threads as usize * 4);
    launch("selftest_missing_barrier", cfg, &vec_params(&x, &out, n)).unwrap();
    let got = out.to_vec();
    // Threads run in order: the first half of each chunk reads slots not written yet
    // (poisoned: NaN); the second half reads what the first half wrote.
    for (i, g) in got.iter().enumerate() {
        let t = i % threads as usize;
        if t < threads as usize / 2 {
            assert!(g.is_nan(), "thread {i} read {g}: expected the NaN poison");
        } else {
            assert_eq!(*g, xs[i - t + threads as usize - 1 - t]);
        }
    }
}

#[test]
fn barrier_divergence_is_reported() {
    let threads = 64u32;
    let ok_n = 128; // a multiple of the block: no thread exits early
    let x = DeviceBuffer::from_slice(&vec![1.0f32; 200]);
    let out = DeviceBuffer::filled(200, f32::NAN);
    launch(
        "selftest_early_exit",
        LaunchConfig::for_elements(ok_n, threads),
        &vec_params(&x, &out, ok_n),
    )
    .unwrap();
    assert!(out.to_vec()[..ok_n].iter().all(|v| *v == 2.0));

    let n = 100;
    let err = launch(
        "selftest_early_exit",
        LaunchConfig::for_elements(n, threads),
        &vec_params(&x, &out, n),
    )
    .unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, GpuError::KernelFailed { .. }), "{err:?}");
    assert!(
        msg.contains("selftest_early_exit") && msg.contains("barrier divergence"),
        "{msg}"
    );
    assert!(
        msg.contains("block (1,0,0)") && msg.contains("selftest.cu"),
        "{msg}"
    );

    let err = launch(
        "selftest_warp_exit",
        LaunchConfig::linear(1, 64),
        &vec_params(&x, &out, 64),
    )
    .unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(
        msg.contains("__syncwarp") && msg.contains("lane 5") && msg.contains("exited"),
        "{msg}"
    );
}

#[test]
fn launch_errors_name_the_kernel() {
    let x = DeviceBuffer::from_slice(&[0.0f32; 4]);
    let p = vec_params(&x, &x, 4);
    let err = launch("no_such_kernel", LaunchConfig::linear(1, 32), &p).unwrap_err();
    assert!(
        matches!(err, GpuError::UnknownKernel { .. }) && err.to_string().contains("no_such_kernel")
    );
    let err = launch("selftest_block_sum", LaunchConfig::linear(1, 2048), &p).unwrap_err();
    assert!(matches!(err, GpuError::InvalidLaunch { .. }), "{err:?}");
    assert!(
        err.to_string().contains("selftest_block_sum") && err.to_string().contains("1024"),
        "{err}"
    );
    let err = launch("selftest_block_sum", LaunchConfig::linear(0, 32), &p).unwrap_err();
    assert!(matches!(err, GpuError::InvalidLaunch { .. }), "{err:?}");
    // A struct of the wrong size is caught before the launch.
    let err = launch(
        "selftest_block_sum",
        LaunchConfig::linear(1, 32),
        &[0u64; 2],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            GpuError::ParamsSize {
                rust: 16,
                kernel_side: 24,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        Emulator::new().module_of("selftest_scan").as_deref(),
        Some("selftest")
    );
}

#[test]
fn concurrent_launches_from_several_threads() {
    // Each OS thread has its own fibers and shared memory.
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                let n = 10_000 + t * 7;
                let xs: Vec<f32> = selftest_ints(n, -4, 5, t as u64)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect();
                let x = DeviceBuffer::from_slice(&xs);
                let out = DeviceBuffer::filled(9, f32::NAN);
                launch(
                    "selftest_block_sum",
                    LaunchConfig::linear(9, 128),
                    &vec_params(&x, &out, n),
                )
                .unwrap();
                assert_eq!(out.to_vec(), expected_block_sums(&xs, 9, 128));
            });
        }
    });
}

#[test]
fn reference_case_timing() {
    // DESIGN.md's reference case; printed (see --nocapture), never asserted on.
    let n = 1 << 20;
    let xs: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let x = DeviceBuffer::from_slice(&xs);
    let out = DeviceBuffer::filled(128, f32::NAN);
    for _ in 0..3 {
        launch(
            "selftest_block_sum",
            LaunchConfig::linear(128, 256),
            &vec_params(&x, &out, n),
        )
        .unwrap();
    }
    assert_eq!(out.to_vec(), expected_block_sums(&xs, 128, 256));
}

/// The TF32 value nearest `x` (10-bit mantissa, ties away from zero), computed independently
/// of the kernels' bit trick: scale to an integer significand in f64 and round half away.
fn tf32_reference(x: f32) -> f32 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let v = x as f64;
    let e = v.abs().log2().floor() as i32;
    let ulp = f64::powi(2.0, (e - 10).max(-136));
    ((v / ulp).abs() + 0.5).floor().copysign(v) as f32 * ulp as f32
}

#[test]
fn cvt_tf32_rounds_to_nearest_ties_away() {
    let mut xs: Vec<f32> = selftest_ints(1000, -1 << 29, 1 << 29, 7)
        .into_iter()
        .map(|i| i as f32 * 2.74e-7)
        .collect();
    let one = 1.0f32;
    let tie = f32::from_bits(one.to_bits() + 0x1000); // 1 + 2^-11: halfway between TF32 values
    xs.extend([
        tie,
        -tie,
        f32::from_bits(tie.to_bits() - 1),
        f32::from_bits(tie.to_bits() + 1),
        f32::from_bits(0x3fff_f000), // rounds up into the next binade (2.0)
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        3.0e-38,
    ]);
    let n = xs.len();
    let x = DeviceBuffer::from_slice(&xs);
    let out = DeviceBuffer::filled(n, f32::NAN);
    launch(
        "selftest_cvt_tf32",
        LaunchConfig::for_elements(n, 128),
        &vec_params(&x, &out, n),
    )
    .unwrap();
    let got = out.to_vec();
    for (i, (&g, &x)) in got.iter().zip(&xs).enumerate() {
        let want = tf32_reference(x);
        assert_eq!(
            g.to_bits(),
            want.to_bits(),
            "[{i}] x = {x:e}: got {g:e}, want {want:e}"
        );
        assert_eq!(g.to_bits() & 0x1fff, 0, "[{i}]: low 13 bits not zero");
    }
    assert_eq!(
        got[n - 10],
        f32::from_bits(one.to_bits() + 0x2000),
        "tie away from zero"
    );
    assert_eq!(got[n - 9], -f32::from_bits(one.to_bits() + 0x2000));
    assert_eq!(got[n - 8], one);
    assert_eq!(got[n - 6], 2.0);
    let nan = DeviceBuffer::from_slice(&[f32::NAN]);
    launch(
        "selftest_cvt_tf32",
        LaunchConfig::linear(1, 32),
        &vec_params(&nan, &out, 1),
    )
    .unwrap();
    assert!(out.to_vec()[0].is_nan());
}

/// D = C + A·B with TF32-rounded A and B, accumulated in k order in f32 (each product of two
/// TF32 values is exact in f32). `bt`: use Bᵀ instead of B.
fn mma_reference(xs: &[f32], bt: bool) -> Vec<f32> {
    let (a, b, c) = (&xs[..128], &xs[128..192], &xs[192..320]);
    let mut d = vec![0f32; 128];
    for i in 0..16 {
        for j in 0..8 {
            let mut acc = c[i * 8 + j];
            for k in 0..8 {
                let bkj = if bt { b[j * 8 + k] } else { b[k * 8 + j] };
                let prod = tf32_reference(a[i * 8 + k]) * tf32_reference(bkj);
                assert_eq!(
                    prod as f64,
                    tf32_reference(a[i * 8 + k]) as f64 * tf32_reference(bkj) as f64
                );
                acc += prod;
            }
            d[i * 8 + j] = acc;
        }
    }
    d
}

#[test]
fn mma_tf32_m16n8k8_follows_the_ptx_fragment_layouts() {
    // Values with full f32 mantissas, so that the TF32 rounding of A and B matters.
    let xs: Vec<f32> = selftest_ints(320, -1 << 24, 1 << 24, 11)
        .into_iter()
        .map(|i| i as f32 / (1 << 23) as f32 + 1.0e-3)
        .collect();
    let x = DeviceBuffer::from_slice(&xs);
    let out = DeviceBuffer::filled(128, f32::NAN);
    let cfg = LaunchConfig::linear(1, 32);
    launch("selftest_mma_tf32", cfg, &vec_params(&x, &out, 0)).unwrap();
    let got = out.to_vec();
    let want = mma_reference(&xs, false);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "D[{}][{}]: got {g:e}, want {w:e}",
            i / 8,
            i % 8
        );
    }
    // Rounding matters: the same product without the TF32 rounding differs.
    let exact: Vec<f32> = (0..128)
        .map(|e| {
            let (i, j) = (e / 8, e % 8);
            (0..8).fold(xs[192 + e], |acc, k| {
                acc + xs[i * 8 + k] * xs[128 + k * 8 + j]
            })
        })
        .collect();
    assert_ne!(got, exact, "the TF32 rounding had no effect");

    // A wrong layout (B's fragments loaded transposed) is caught: the result is A·Bᵀ + C.
    let out2 = DeviceBuffer::filled(128, f32::NAN);
    launch("selftest_mma_tf32", cfg, &vec_params(&x, &out2, 1)).unwrap();
    let wrong = out2.to_vec();
    assert_ne!(wrong, want, "a transposed B fragment layout went unnoticed");
    assert_eq!(wrong, mma_reference(&xs, true));

    // mma.sync is a full-warp operation: a 16-thread block is an error, not a result.
    let err = launch(
        "selftest_mma_tf32",
        LaunchConfig::linear(1, 16),
        &vec_params(&x, &out, 0),
    )
    .unwrap_err();
    assert!(err.to_string().contains("all 32 lanes"), "{err}");
}
