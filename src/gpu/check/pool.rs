//! kernels/pool.cu against [`crate::ops::pool`]: bit for bit (values, argmax, gradients).
//!
//! Shapes: the GTA max pools at full width, batch 2–3 (F1/F2 after their convolutions, D's four
//! blocks, the last a pool 4 to 1×1), and awkward ones: odd
//! planes whose last rows/columns fit no window (floor mode), k = 3 and 5, k = 1, batch 1.
//! Inputs are drawn from a few levels (so windows hold ties, ±0 included: the first wins) with
//! NaNs planted (a NaN propagates, the last one wins); gradients include −0.

use super::{nan, Report, Rng, Tolerance};
use crate::gpu::kernels::pool;
use crate::gpu::{Buffer, GpuError, Memory};
use crate::ops::pool as cpu;

/// Values with many ties: a few levels (±0 included), some uniform values, a NaN now and then.
fn tied(rng: &mut Rng, n: usize) -> Vec<f32> {
    const LEVELS: [f32; 6] = [-1.0, -0.5, -0.0, 0.0, 0.5, 1.0];
    (0..n)
        .map(|_| match rng.below(64) {
            0 => f32::NAN,
            1..=31 => LEVELS[rng.below(LEVELS.len())],
            _ => rng.uniform(-1.0, 1.0),
        })
        .collect()
}

pub fn max_pool<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
    let cases: [([usize; 4], usize); 12] = [
        ([2, 64, 28, 28], 2),  // F1 after conv 1 (F2: 32 channels)
        ([2, 64, 10, 10], 2),  // F1 after conv 2
        ([3, 48, 10, 10], 2),  // F2 after conv 2
        ([2, 64, 32, 32], 2),  // D block 1 (ndf 64)
        ([2, 128, 16, 16], 2), // D block 2
        ([3, 256, 8, 8], 2),   // D block 3
        ([3, 128, 4, 4], 4),   // D block 4: pool 4 → 1×1
        ([1, 3, 7, 9], 2),     // odd plane: last row and column unused
        ([3, 5, 9, 13], 4),
        ([2, 3, 10, 11], 3),
        ([1, 1, 5, 5], 5),
        ([1, 2, 3, 3], 1),
    ];
    for (dims, k) in cases {
        let s = format!("{dims:?} k{k}").replace(' ', "");
        let x = tied(&mut rng, dims.iter().product());
        let Ok((want_y, y_dims, want_arg)) = cpu::max_pool2d_forward(&x, dims, k) else {
            r.fail(
                "max_pool_forward",
                &s,
                Tolerance::Ulps(0),
                "CPU oracle failed".into(),
            );
            continue;
        };
        let ny = want_y.len();
        let dims_ok = pool::output_dims(dims, k).ok() == Some(y_dims);
        r.holds("max_pool output_dims", &s, dims_ok, || {
            format!("{:?}, want {y_dims:?}", pool::output_dims(dims, k).ok())
        });
        let xd = exec.upload(&x)?;
        let mut yd = nan(exec, ny)?;
        let mut ad = exec.filled(ny, 0xDEAD_BEEFu32)?;
        let res = pool::forward(exec, dims, k, &xd, &mut yd, &mut ad);
        if r.launched("max_pool_forward", &s, Tolerance::Ulps(0), res) {
            r.ulps("max_pool_forward", &s, &yd.read()?, &want_y, 0);
            let got = ad.read()?;
            let bad = got.iter().zip(&want_arg).position(|(g, w)| g != w);
            r.holds("max_pool_forward argmax", &s, bad.is_none(), || {
                let i = bad.unwrap_or(0);
                format!("[{i}]: got {}, want {}", got[i], want_arg[i])
            });
        }

        // The backward from the CPU's argmax, so that only the backward is compared.
        let mut gy = rng.vec(ny, -2.0, 2.0);
        for g in gy.iter_mut().step_by(7) {
            *g = -0.0;
        }
        let Ok(want_gx) = cpu::max_pool2d_backward(&gy, y_dims, &want_arg, dims) else {
            r.fail(
                "max_pool_backward",
                &s,
                Tolerance::Ulps(0),
                "CPU oracle failed".into(),
            );
            continue;
        };
        let gyd = exec.upload(&gy)?;
        let ad = exec.upload(&want_arg)?;
        let mut gxd = nan(exec, x.len())?;
        let res = pool::backward(exec, dims, k, &gyd, &ad, &mut gxd);
        if r.launched("max_pool_backward", &s, Tolerance::Ulps(0), res) {
            r.ulps("max_pool_backward", &s, &gxd.read()?, &want_gx, 0);
        }
    }

    // Bad shapes are errors, not out-of-bounds accesses.
    let k = "max_pool: bad shapes are errors";
    let xd = exec.upload(&[0.0f32; 16])?;
    let mut yd = nan(exec, 4)?;
    let mut ad = exec.filled(4, 0u32)?;
    let errs = [
        pool::forward(exec, [1, 1, 4, 4], 0, &xd, &mut yd, &mut ad).is_err(),
        pool::forward(exec, [1, 1, 4, 4], 5, &xd, &mut yd, &mut ad).is_err(),
        pool::forward(exec, [1, 1, 4, 4], 4, &xd, &mut yd, &mut ad).is_err(), // y too long
        pool::forward(exec, [1, 2, 4, 4], 2, &xd, &mut yd, &mut ad).is_err(), // x too short
        pool::backward(exec, [1, 1, 4, 4], 4, &xd, &ad, &mut yd).is_err(),
    ];
    r.holds(k, "[1,1,4,4]", errs.iter().all(|&e| e), || {
        format!("accepted: {errs:?}")
    });
    Ok(())
}
