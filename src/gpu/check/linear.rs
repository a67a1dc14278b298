//! kernels/linear.cu against [`crate::ops::linear`].
//!
//! The three products sum in a different order from the CPU's GEMM (and the GPU may fuse
//! multiply-adds), so they are compared with the rigorous bound for two evaluations of the same
//! dot product of K terms: each is within γ_K·Σ|terms| of the exact value (any order, with or
//! without FMA; γ_K = K·u/(1 − K·u), u = 2^−24), so |got − want| ≤ 2·γ_K·Σ|terms|. Σ|terms| is
//! the CPU op on |inputs| (itself rounded: divided by 1 − γ_K to bound the exact sum), plus
//! K·2^−149 for products that underflow. K = in + 1 for the forward (the bias is one more term),
//! out for gx, N for gW. The bias gradient sums rows in the CPU's order: bit for bit.
//!
//! Shapes: the GTA linears at batch 2–3 (C1 128→128→10, C2 1200→100→100→10, D's heads 128→1
//! and 128→10), and awkward ones: 3×7→5, 1×1→1, 257 rows, sizes just past a 64-wide tile,
//! without a bias.

use super::{nan, Report, Rng, Tolerance};
use crate::gpu::kernels::linear;
use crate::gpu::{Buffer, GpuError, Memory};
use crate::ops::linear as cpu;

/// γ_k for f32.
pub(super) fn gamma32(k: usize) -> f64 {
    let ku = k as f64 * f64::powi(2.0, -24);
    ku / (1.0 - ku)
}

/// Compares `got` with `want` element for element within `2·γ_K·Σ|terms|`, `abs` the CPU op
/// on |inputs|.
fn dot_bound(
    r: &mut Report,
    kernel: &str,
    s: &str,
    got: &[f32],
    want: &[f32],
    abs: &[f32],
    k: usize,
) {
    let g = gamma32(k);
    let tiny = k as f64 * f64::powi(2.0, -149);
    let bounds: Vec<f64> = abs
        .iter()
        .map(|&a| 2.0 * g * (a as f64 / (1.0 - g)) + tiny)
        .collect();
    r.within_each(kernel, s, got, want, &bounds);
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

pub fn linear_kernels<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
    let cases: [(usize, usize, usize, bool); 11] = [
        (2, 128, 128, true),  // C1 fc 1 (ndf 64)
        (2, 128, 10, true),   // C1 fc 2, D's class head
        (3, 128, 1, true),    // D's real/fake head
        (3, 1200, 100, true), // C2
        (3, 100, 100, true),
        (2, 100, 10, true),
        (3, 7, 5, true),
        (1, 1, 1, true),
        (257, 33, 17, true),
        (65, 70, 66, false), // one past the 64-wide tiles in every direction
        (1, 3, 2, false),
    ];
    for (n, fin, fout, has_bias) in cases {
        let s = format!("{n}×{fin}→{fout}{}", if has_bias { "" } else { " no bias" });
        let x = rng.vec(n * fin, -1.0, 1.0);
        let w = rng.vec(fout * fin, -0.5, 0.5);
        let b = rng.vec(fout, -1.0, 1.0);
        let gy = rng.vec(n * fout, -1.0, 1.0);
        let bias = has_bias.then_some(&b[..]);
        let (xa, wa, ba, gya) = (abs(&x), abs(&w), abs(&b), abs(&gy));
        let cpu_fwd = |x: &[f32], w: &[f32], b: Option<&[f32]>| {
            cpu::linear_forward(x, [n, fin], w, [fout, fin], b).unwrap_or_default()
        };
        let cpu_bwd = |x: &[f32], w: &[f32], gy: &[f32]| {
            cpu::linear_backward(x, [n, fin], w, [fout, fin], true, gy, [true; 3])
                .unwrap_or_default()
        };
        let want_y = cpu_fwd(&x, &w, bias);
        let abs_y = cpu_fwd(&xa, &wa, has_bias.then_some(&ba[..]));
        let want = cpu_bwd(&x, &w, &gy);
        let absg = cpu_bwd(&xa, &wa, &gya);

        let xd = exec.upload(&x)?;
        let wd = exec.upload(&w)?;
        let bd = exec.upload(&b)?;
        let gyd = exec.upload(&gy)?;

        let k = "linear_forward";
        let mut yd = nan(exec, n * fout)?;
        let bias_d = has_bias.then_some(&bd);
        let res = linear::forward(exec, n, fin, fout, &xd, &wd, bias_d, &mut yd);
        if r.launched(k, &s, Tolerance::Abs(0.0), res) {
            let got = yd.read()?;
            dot_bound(r, k, &s, &got, &want_y, &abs_y, fin + has_bias as usize);
            // Deterministic: a second launch gives the same bits.
            let mut y2 = nan(exec, n * fout)?;
            let res = linear::forward(exec, n, fin, fout, &xd, &wd, bias_d, &mut y2);
            if r.launched("linear_forward: deterministic", &s, Tolerance::Exact, res) {
                let again = y2.read()?;
                let same = got
                    .iter()
                    .zip(&again)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                r.holds("linear_forward: deterministic", &s, same, || {
                    "two launches differ".into()
                });
            }
        }

        let k = "linear_backward_data";
        let mut gxd = nan(exec, n * fin)?;
        let res = linear::backward_data(exec, n, fin, fout, &gyd, &wd, &mut gxd);
        if r.launched(k, &s, Tolerance::Abs(0.0), res) {
            let (w_, a_) = (want.dx.as_deref(), absg.dx.as_deref());
            dot_bound(
                r,
                k,
                &s,
                &gxd.read()?,
                w_.unwrap_or(&[]),
                a_.unwrap_or(&[]),
                fout,
            );
        }

        let k = "linear_backward_weight";
        let mut gwd = nan(exec, fout * fin)?;
        let res = linear::backward_weight(exec, n, fin, fout, &gyd, &xd, &mut gwd);
        if r.launched(k, &s, Tolerance::Abs(0.0), res) {
            let (w_, a_) = (want.dw.as_deref(), absg.dw.as_deref());
            dot_bound(
                r,
                k,
                &s,
                &gwd.read()?,
                w_.unwrap_or(&[]),
                a_.unwrap_or(&[]),
                n,
            );
        }

        let k = "linear_backward_bias";
        let mut gbd = nan(exec, fout)?;
        let res = linear::backward_bias(exec, n, fout, &gyd, &mut gbd);
        if r.launched(k, &s, Tolerance::Ulps(0), res) {
            r.ulps(k, &s, &gbd.read()?, want.db.as_deref().unwrap_or(&[]), 0);
        }
    }

    // Bad shapes are errors, not out-of-bounds accesses.
    let k = "linear: bad shapes are errors";
    let xd = exec.upload(&[0.5f32; 6])?;
    let wd = exec.upload(&[0.5f32; 6])?;
    let mut yd = nan(exec, 4)?;
    let errs = [
        linear::forward(exec, 2, 3, 2, &xd, &wd, None, &mut yd).is_err(), // valid
        linear::forward(exec, 2, 4, 2, &xd, &wd, None, &mut yd).is_err(), // x too short
        linear::forward(exec, 0, 3, 2, &xd, &wd, None, &mut yd).is_err(), // empty
        linear::backward_data(exec, 2, 3, 2, &xd, &wd, &mut yd).is_err(), // gy: 6 ≠ 4
        linear::backward_bias(exec, 3, 3, &xd, &mut yd).is_err(),         // gb: 4 ≠ 3
    ];
    // The first call is valid (x 2×3, w 2×3, y 2×2).
    let ok = !errs[0] && errs[1..].iter().all(|&e| e);
    r.holds(k, "2×3→2", ok, || {
        format!("outcomes (true = error): {errs:?}")
    });
    Ok(())
}
