//! kernels/batchnorm.cu against [`crate::ops::batchnorm`].
//!
//! Both sides sum each channel in f64 and round once to f32; only the order of the f64 sums
//! differs. So (u = 2^−53 in f64, u₃₂ = 2^−24, γ_k = k·u/(1 − k·u), K = N·H·W values per
//! channel):
//!
//! - Two f64 results within e of each other, each rounded to f32, differ by at most
//!   e + ulp₃₂(2·(|want| + e)) (each rounding is within half an ulp at its magnitude):
//!   [`round_bound`].
//! - Batch mean: each side's f64 mean (Σx)·(1/K) is within δ = γ_{K+1}·Σ|x|/K of the exact mean
//!   μ, so e_mean = 2δ.
//! - Batch variance: Σ(x − m)² for a mean m within δ of μ is ssd(μ) + K·(m − μ)²; summing the
//!   K squares (3 roundings each) and scaling by 1/K adds γ_{K+4}; so e_var = 2·γ_{K+4}·(V + δ²)
//!   + δ², V the biased variance (two-pass f64 in this check, inflated by 1 %).
//! - invstd = 1/sqrt(var + eps): |d invstd/d var| ≤ ½·(v_lo + eps)^−3/2 over the interval, plus
//!   three f64 roundings per side: e_is = ½·e_var·(v_lo + eps)^−3/2 + 2·γ₄·(v_lo + eps)^−1/2.
//! - Running statistics: the batch mean/var enter as the f32 values above (Δ = their bounds),
//!   the blend in f64 adds γ₄ (γ₅ for the var, with its Bessel factor) of its terms' magnitude.
//! - y (train) is checked against an f64 evaluation of the CPU's expression with the GPU's own
//!   f32 statistics (which are checked above): the f32 evaluation fl(fl(fl(x − m)·fl(is·w)) + b)
//!   is within γ₃·|P|·(1 + u₃₂) + u₃₂·|z| of z = P + b, P = (x − m)·is·w (u₃₂ terms), and the
//!   fused ReLU is 1-Lipschitz (LeakyReLU max(1, |s|), plus one rounding of z·s). Where the GPU's
//!   statistics have the CPU's bits, y must have the CPU's bits as well (checked as a property).
//! - Backward sums: the terms gy and gy·x̂ are exact in f64 (x̂ is computed by the same f32
//!   operations on both sides; a product of two f32 is exact in f64), so gb and gw differ by at
//!   most round_bound(want, 2·γ_K·Σ|terms|). Training gx = k·((g − a) − x̂·b) with a = mean(gy),
//!   b = mean(gy·x̂) rounded to f32 (Δa, Δb as above): |Δgx| ≤ |k|·(Δa + |x̂|·Δb) + 2·γ₃(u₃₂)·|k|·
//!   (|g| + |a| + Δa + |x̂|·(|b| + Δb)).
//! - Everything elementwise without a reduction is bit for bit: the evaluation forward (invstd
//!   is an f64 sqrt and division, correctly rounded on both sides) and the evaluation gx.
//! - Backward with a fused activation (`..._fused`, the cases with ReLU/LeakyReLU): the kernel
//!   forms g = act'(y)·gy from the forward output y; the oracle is the CPU's activation backward
//!   followed by its batch-norm backward, and the bounds above hold with g for gy (g is the same
//!   f32 on both sides: a select, or one rounded product g·slope). As a property, the fused
//!   launch has the bits of the separate activation backward + unfused batch-norm backward on
//!   the same executor.
//!
//! Shapes: every batch norm of G, D and D_src/D_tgt at full width (ngf = ndf = 64) at batch 2–3,
//! with their fused activations (ReLU in G, LeakyReLU 0.2 in D), and awkward ones: 2 values per
//! channel (the least a training batch may have), odd sizes, 3069 values per channel (many
//! per thread), a constant channel (variance 0). Channel offsets up to ±3 with spreads 0.1–2
//! (|mean| ≫ std: what a one-pass variance gets wrong).

use super::{nan, Report, Rng, Tolerance};
use crate::gpu::kernels::batchnorm as bn;
use crate::gpu::{Buffer, GpuError, Memory};
use crate::ops::activation::Activation;
use crate::ops::batchnorm as cpu;

const U64: f64 = 1.0 / 9_007_199_254_740_992.0; // 2^-53
const U32: f64 = 1.0 / 16_777_216.0; // 2^-24
const TINY: f64 = 1.401_298_464_324_817e-45; // 2^-149, the smallest f32 subnormal

fn gamma(k: usize, u: f64) -> f64 {
    let ku = k as f64 * u;
    ku / (1.0 - ku)
}

/// The spacing of f32 values at magnitude |v| (at least 2^−149; infinite past f32::MAX).
fn ulp32(v: f64) -> f64 {
    let a = v.abs() as f32; // rounding up can only enlarge the spacing: conservative
    if !a.is_finite() {
        return f64::INFINITY;
    }
    let exp = ((a.to_bits() >> 23) & 0xff) as i32;
    f64::powi(2.0, exp.max(1) - 127 - 23)
}

/// The bound on two f32 roundings of f64 values within `e` of each other, `want` one of them.
fn round_bound(want: f32, e: f64) -> f64 {
    e + ulp32(2.0 * (want.abs() as f64 + e))
}

/// Per-channel reference quantities of x [n][c][hw], in f64.
struct Channel {
    count: usize,
    sum_abs: f64,
    /// Biased variance, two-pass.
    var: f64,
}

fn elements(dims: [usize; 4], ch: usize) -> impl Iterator<Item = usize> {
    let [n, c, h, w] = dims;
    let hw = h * w;
    (0..n).flat_map(move |i| (i * c + ch) * hw..(i * c + ch + 1) * hw)
}

fn channels(x: &[f32], dims: [usize; 4]) -> Vec<Channel> {
    let count = dims[0] * dims[2] * dims[3];
    (0..dims[1])
        .map(|ch| {
            let sum: f64 = elements(dims, ch).map(|i| x[i] as f64).sum();
            let mean = sum / count as f64;
            let ssd: f64 = elements(dims, ch)
                .map(|i| (x[i] as f64 - mean).powi(2))
                .sum();
            Channel {
                count,
                sum_abs: elements(dims, ch).map(|i| (x[i] as f64).abs()).sum(),
                var: ssd / count as f64,
            }
        })
        .collect()
}

impl Channel {
    fn delta(&self) -> f64 {
        gamma(self.count + 1, U64) * self.sum_abs / self.count as f64
    }
    fn e_mean(&self) -> f64 {
        2.0 * self.delta()
    }
    fn e_var(&self) -> f64 {
        let d2 = self.delta().powi(2);
        2.0 * gamma(self.count + 4, U64) * (1.01 * self.var + d2) + d2
    }
    fn e_invstd(&self, eps: f32) -> f64 {
        let lo = (0.99 * self.var - self.e_var()).max(0.0) + eps as f64;
        0.5 * self.e_var() * lo.powf(-1.5) + 2.0 * gamma(4, U64) * lo.powf(-0.5)
    }
}

fn apply(act: Option<Activation>, y: Vec<f32>) -> Vec<f32> {
    match act {
        Some(a) => a.forward(&y),
        None => y,
    }
}

fn act_name(act: Option<Activation>) -> String {
    match act {
        None => "none".into(),
        Some(a) => a.name().to_string(),
    }
}

/// Bounds on the backward sums gb = Σ g and gw = Σ g·x̂ (per channel), and on the training
/// gx (per element), for x̂ = (x − mean)·invstd.
struct BackwardBounds {
    gb: Vec<f64>,
    gw: Vec<f64>,
    gx: Vec<f64>,
}

#[allow(clippy::too_many_arguments)]
fn backward_bounds(
    x: &[f32],
    dims: [usize; 4],
    weight: &[f32],
    mean: &[f32],
    invstd: &[f32],
    gy: &[f32],
    want_gb: &[f32],
    want_gw: &[f32],
) -> BackwardBounds {
    let count = dims[0] * dims[2] * dims[3];
    let mut b = BackwardBounds {
        gb: vec![0.0; dims[1]],
        gw: vec![0.0; dims[1]],
        gx: vec![0.0; x.len()],
    };
    let g3 = gamma(3, U32);
    for ch in 0..dims[1] {
        // |x̂| bound: the f32 x̂ is (x − m)·is with two roundings.
        let xh = |i: usize| {
            (x[i] as f64 - mean[ch] as f64).abs() * invstd[ch] as f64 * (1.0 + 4.0 * U32)
        };
        let s_g: f64 = elements(dims, ch).map(|i| (gy[i] as f64).abs()).sum();
        let s_gx: f64 = elements(dims, ch)
            .map(|i| (gy[i] as f64).abs() * xh(i))
            .sum();
        b.gb[ch] = round_bound(want_gb[ch], 2.0 * gamma(count, U64) * s_g);
        b.gw[ch] = round_bound(want_gw[ch], 2.0 * gamma(count, U64) * s_gx);
        let (a, bb) = (s_g / count as f64, s_gx / count as f64);
        let ea = 2.0 * gamma(count + 2, U64) * a;
        let eb = 2.0 * gamma(count + 2, U64) * bb;
        let da = ea + ulp32(2.0 * (a + ea));
        let db = eb + ulp32(2.0 * (bb + eb));
        let k = (weight[ch] * invstd[ch]).abs() as f64;
        for i in elements(dims, ch) {
            let g = (gy[i] as f64).abs();
            b.gx[i] = k * (da + xh(i) * db)
                + 2.0 * g3 * (1.0 + U32) * k * (g + a + da + xh(i) * (bb + db))
                + 8.0 * TINY;
        }
    }
    b
}

pub fn batch_norm<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
    let relu = Some(Activation::Relu);
    let lrelu = Some(Activation::LeakyRelu { slope: 0.2 });
    let cases: [([usize; 4], Option<Activation>); 15] = [
        ([2, 512, 2, 2], relu),    // G after convT 1 (8ngf)
        ([3, 256, 4, 4], relu),    // G block 2 (4ngf); G4 block 1 at [.., 512, 4, 4]
        ([2, 128, 8, 8], relu),    // G block 3 (2ngf)
        ([2, 64, 16, 16], relu),   // G block 4 (ngf)
        ([2, 64, 32, 32], lrelu),  // D block 1 (ndf)
        ([2, 128, 16, 16], lrelu), // D block 2
        ([3, 256, 8, 8], lrelu),   // D block 3
        ([2, 128, 4, 4], lrelu),   // D block 4
        ([3, 128, 8, 8], lrelu),   // D_src / D_tgt block 2
        ([2, 256, 4, 4], lrelu),   // D_src / D_tgt block 3
        ([1, 3, 1, 2], None),      // 2 values per channel: the least a training batch may have
        ([3, 5, 7, 9], None),      // odd sizes; channel 0 constant (variance 0)
        ([1, 7, 5, 3], Some(Activation::LeakyRelu { slope: 0.01 })),
        ([3, 2, 33, 31], None), // 3069 values per channel
        ([1, 1, 2, 1], relu),
    ];
    for (case, (dims, act)) in cases.into_iter().enumerate() {
        let [n, c, h, w] = dims;
        let (count, total) = (n * h * w, n * c * h * w);
        let s = format!("{dims:?} {}", act_name(act)).replace(' ', "");
        let s = s.replacen(']', "] ", 1);
        let (eps, momentum) = if case % 3 == 2 {
            (1e-3f32, 0.3f32)
        } else {
            (1e-5, 0.1)
        };
        // Per-channel offsets and spreads.
        let offs: Vec<(f32, f32)> = (0..c)
            .map(|_| (rng.uniform(-3.0, 3.0), rng.uniform(0.1, 2.0)))
            .collect();
        let mut x = vec![0.0f32; total];
        for (ch, &(o, sp)) in offs.iter().enumerate() {
            for i in elements(dims, ch) {
                x[i] = o + sp * rng.uniform(-1.0, 1.0);
            }
        }
        if case == 11 {
            for i in elements(dims, 0) {
                x[i] = 0.7; // a constant channel: variance 0
            }
        }
        let weight = rng.vec(c, -1.5, 1.5);
        let bias = rng.vec(c, -0.5, 0.5);
        let rm = rng.vec(c, -1.0, 1.0);
        let rv = rng.vec(c, 0.5, 2.0);
        let gy = rng.vec(total, -1.0, 1.0);
        let refs = channels(&x, dims);

        let xd = exec.upload(&x)?;
        let wd = exec.upload(&weight)?;
        let bd = exec.upload(&bias)?;
        let gyd = exec.upload(&gy)?;

        // ---- training forward ----
        let Ok((want_pre, stats)) = cpu::batch_norm2d_forward_train(&x, dims, &weight, &bias, eps)
        else {
            r.fail(
                "batchnorm_forward_train",
                &s,
                Tolerance::Exact,
                "CPU oracle failed".into(),
            );
            continue;
        };
        let want_y = apply(act, want_pre);
        let mut running = cpu::RunningStats {
            mean: rm.clone(),
            var: rv.clone(),
        };
        if running.update(&stats, count, momentum).is_err() {
            r.fail(
                "batchnorm_forward_train",
                &s,
                Tolerance::Exact,
                "CPU update failed".into(),
            );
            continue;
        }
        let run_train = |rmd: &mut M::Buf<f32>, rvd: &mut M::Buf<f32>| -> Result<_, GpuError> {
            let mut yd = nan(exec, total)?;
            let mut smd = nan(exec, c)?;
            let mut sid = nan(exec, c)?;
            let res = bn::forward_train(
                exec, dims, &xd, &wd, &bd, eps, momentum, act, &mut yd, &mut smd, &mut sid, rmd,
                rvd,
            );
            Ok((res, yd, smd, sid))
        };
        let mut rmd = exec.upload(&rm)?;
        let mut rvd = exec.upload(&rv)?;
        let (res, yd, smd, sid) = run_train(&mut rmd, &mut rvd)?;
        let k = "batchnorm_forward_train";
        if r.launched(k, &s, Tolerance::Exact, res) {
            let (gm, gi) = (smd.read()?, sid.read()?);
            let (grm, grv) = (rmd.read()?, rvd.read()?);
            let got_y = yd.read()?;
            let m64 = momentum as f64;
            let bessel = count as f64 / (count - 1) as f64;
            let mut b_mean = Vec::new();
            let mut b_is = Vec::new();
            let mut b_rm = Vec::new();
            let mut b_rv = Vec::new();
            for (ch, cr) in refs.iter().enumerate() {
                let dm = round_bound(stats.mean[ch], cr.e_mean());
                b_mean.push(dm);
                b_is.push(round_bound(stats.invstd[ch], cr.e_invstd(eps)));
                let bm = stats.mean[ch].abs() as f64;
                let e_rm = m64 * dm
                    + 2.0 * gamma(4, U64) * ((1.0 - m64) * (rm[ch].abs() as f64) + m64 * (bm + dm));
                b_rm.push(round_bound(running.mean[ch], e_rm));
                let dv = round_bound(stats.var[ch], cr.e_var());
                let bv = stats.var[ch].abs() as f64;
                let e_rv = m64 * bessel * dv
                    + 2.0
                        * gamma(5, U64)
                        * ((1.0 - m64) * (rv[ch].abs() as f64) + m64 * bessel * (bv + dv));
                b_rv.push(round_bound(running.var[ch], e_rv));
            }
            r.within_each(
                "batchnorm_forward_train mean",
                &s,
                &gm,
                &stats.mean,
                &b_mean,
            );
            r.within_each(
                "batchnorm_forward_train invstd",
                &s,
                &gi,
                &stats.invstd,
                &b_is,
            );
            r.within_each(
                "batchnorm_forward_train running_mean",
                &s,
                &grm,
                &running.mean,
                &b_rm,
            );
            r.within_each(
                "batchnorm_forward_train running_var",
                &s,
                &grv,
                &running.var,
                &b_rv,
            );

            // y against an f64 evaluation with the GPU's statistics.
            let mut want64 = vec![0.0f32; total];
            let mut b_y = vec![0.0f64; total];
            let slope = match act {
                Some(Activation::LeakyRelu { slope }) => Some(slope as f64),
                _ => None,
            };
            for ch in 0..c {
                let (m, is) = (gm[ch] as f64, gi[ch] as f64);
                for i in elements(dims, ch) {
                    let p = (x[i] as f64 - m) * is * weight[ch] as f64;
                    let z = p + bias[ch] as f64;
                    let e = gamma(3, U32) * p.abs() * (1.0 + U32) + U32 * z.abs();
                    let (v, e) = match (act, slope) {
                        (Some(Activation::Relu), _) => (z.max(0.0), e),
                        (_, Some(sl)) => (
                            if z > 0.0 { z } else { z * sl },
                            sl.abs().max(1.0) * e + U32 * sl.abs() * (z.abs() + e),
                        ),
                        _ => (z, e),
                    };
                    want64[i] = v as f32;
                    b_y[i] = e
                        + ulp32(2.0 * v.abs())
                        + f64::powi(2.0, -50) * (p.abs() + (bias[ch] as f64).abs())
                        + 4.0 * TINY;
                }
            }
            r.within_each(
                "batchnorm_forward_train y (f64 eval.)",
                &s,
                &got_y,
                &want64,
                &b_y,
            );
            // Where the statistics have the CPU's bits, so does y.
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits();
            let mut bad = None;
            for ch in 0..c {
                if same(gm[ch], stats.mean[ch]) && same(gi[ch], stats.invstd[ch]) {
                    if let Some(i) = elements(dims, ch).find(|&i| !same(got_y[i], want_y[i])) {
                        bad = Some((ch, i));
                        break;
                    }
                }
            }
            r.holds(
                "batchnorm_forward_train y = CPU bits (same stats)",
                &s,
                bad.is_none(),
                || {
                    let (ch, i) = bad.unwrap_or_default();
                    format!(
                        "channel {ch}, [{i}]: got {:e}, want {:e}",
                        got_y[i], want_y[i]
                    )
                },
            );

            // Deterministic: a second launch gives the same bits.
            let mut rmd2 = exec.upload(&rm)?;
            let mut rvd2 = exec.upload(&rv)?;
            let (res, yd2, smd2, sid2) = run_train(&mut rmd2, &mut rvd2)?;
            let kd = "batchnorm_forward_train: deterministic";
            if r.launched(kd, &s, Tolerance::Exact, res) {
                let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                let same = bits(yd2.read()?) == bits(got_y.clone())
                    && bits(smd2.read()?) == bits(gm)
                    && bits(sid2.read()?) == bits(gi)
                    && bits(rmd2.read()?) == bits(grm)
                    && bits(rvd2.read()?) == bits(grv);
                r.holds(kd, &s, same, || "two launches differ".into());
            }
        }

        // ---- evaluation forward: bit for bit ----
        let rmd = exec.upload(&rm)?;
        let rvd = exec.upload(&rv)?;
        let k = "batchnorm_forward_eval";
        match cpu::batch_norm2d_forward_eval(&x, dims, &weight, &bias, &rm, &rv, eps) {
            Ok(want) => {
                let want = apply(act, want);
                let mut yd = nan(exec, total)?;
                let res =
                    bn::forward_eval(exec, dims, &xd, &wd, &bd, &rmd, &rvd, eps, act, &mut yd);
                if r.launched(k, &s, Tolerance::Ulps(0), res) {
                    r.ulps(k, &s, &yd.read()?, &want, 0);
                }
            }
            Err(e) => r.fail(k, &s, Tolerance::Ulps(0), format!("CPU oracle: {e}")),
        }

        // ---- training backward, from the CPU's statistics ----
        // With a fused activation the kernels get gy (the gradient of y = act(z)) and y, and
        // form g = act'(y)·gy themselves; the oracle is the CPU's separate ops on g.
        let g = match act {
            Some(a) => a.backward(&want_y, &want_y, &gy),
            None => gy.clone(),
        };
        let yd = exec.upload(&want_y)?;
        let gd = exec.upload(&g)?;
        let fused = act.map(|act| bn::Fused { act, y: &yd });
        let tag = if act.is_some() { "_fused" } else { "" };
        let k = format!("batchnorm_backward_train{tag}");
        let k = k.as_str();
        let want = cpu::batch_norm2d_backward_train(&x, dims, &weight, &stats, &g, [true; 3]);
        let Ok(want) = want else {
            r.fail(k, &s, Tolerance::Exact, "CPU oracle failed".into());
            continue;
        };
        let (wgx, wgw, wgb) = (
            want.dx.unwrap_or_default(),
            want.dw.unwrap_or_default(),
            want.db.unwrap_or_default(),
        );
        let bounds = backward_bounds(
            &x,
            dims,
            &weight,
            &stats.mean,
            &stats.invstd,
            &g,
            &wgb,
            &wgw,
        );
        let smd = exec.upload(&stats.mean)?;
        let sid = exec.upload(&stats.invstd)?;
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (mut gxd, mut gwd, mut gbd) = (nan(exec, total)?, nan(exec, c)?, nan(exec, c)?);
        let res = bn::backward_train(
            exec,
            dims,
            &xd,
            &wd,
            &smd,
            &sid,
            fused,
            &gyd,
            Some(&mut gxd),
            Some(&mut gwd),
            Some(&mut gbd),
        );
        if r.launched(k, &s, Tolerance::Exact, res) {
            let (ggx, ggw, ggb) = (gxd.read()?, gwd.read()?, gbd.read()?);
            r.within_each(&format!("{k} gx"), &s, &ggx, &wgx, &bounds.gx);
            r.within_each(&format!("{k} gw"), &s, &ggw, &wgw, &bounds.gw);
            r.within_each(&format!("{k} gb"), &s, &ggb, &wgb, &bounds.gb);
            // Each gradient alone: the same bits as all three together.
            let kp = format!("{k}: one gradient alone");
            let mut gx1 = nan(exec, total)?;
            let r1 = bn::backward_train(
                exec,
                dims,
                &xd,
                &wd,
                &smd,
                &sid,
                fused,
                &gyd,
                Some(&mut gx1),
                None,
                None,
            );
            let mut gw1 = nan(exec, c)?;
            let r2 = bn::backward_train(
                exec,
                dims,
                &xd,
                &wd,
                &smd,
                &sid,
                fused,
                &gyd,
                None,
                Some(&mut gw1),
                None,
            );
            let mut gb1 = nan(exec, c)?;
            let r3 = bn::backward_train(
                exec,
                dims,
                &xd,
                &wd,
                &smd,
                &sid,
                fused,
                &gyd,
                None,
                None,
                Some(&mut gb1),
            );
            if r.launched(&kp, &s, Tolerance::Exact, r1.and(r2).and(r3)) {
                let same = bits(&gx1.read()?) == bits(&ggx)
                    && bits(&gw1.read()?) == bits(&ggw)
                    && bits(&gb1.read()?) == bits(&ggb);
                r.holds(&kp, &s, same, || "differs from the full backward".into());
            }
            // Fused = the separate ops (activation backward, then the plain backward on g).
            if act.is_some() {
                let kf = "batchnorm_backward_train_fused = separate ops (bits)";
                fused_equals_separate(exec, r, kf, &s, [&ggx, &ggw, &ggb], |sx, sw, sb| {
                    bn::backward_train(exec, dims, &xd, &wd, &smd, &sid, None, &gd, sx, sw, sb)
                })?;
            }
        }

        // ---- evaluation backward (y: the training forward's, any output will do) ----
        let k = format!("batchnorm_backward_eval{tag}");
        let k = k.as_str();
        let Ok(want) =
            cpu::batch_norm2d_backward_eval(&x, dims, &weight, &rm, &rv, eps, &g, [true; 3])
        else {
            r.fail(k, &s, Tolerance::Exact, "CPU oracle failed".into());
            continue;
        };
        let (wgx, wgw, wgb) = (
            want.dx.unwrap_or_default(),
            want.dw.unwrap_or_default(),
            want.db.unwrap_or_default(),
        );
        let is_eval: Vec<f32> = rv
            .iter()
            .map(|&v| (1.0 / (v as f64 + eps as f64).sqrt()) as f32)
            .collect();
        let bounds = backward_bounds(&x, dims, &weight, &rm, &is_eval, &g, &wgb, &wgw);
        let (mut gxd, mut gwd, mut gbd) = (nan(exec, total)?, nan(exec, c)?, nan(exec, c)?);
        let res = bn::backward_eval(
            exec,
            dims,
            &xd,
            &wd,
            &rmd,
            &rvd,
            eps,
            fused,
            &gyd,
            Some(&mut gxd),
            Some(&mut gwd),
            Some(&mut gbd),
        );
        if r.launched(k, &s, Tolerance::Exact, res) {
            let (ggx, ggw, ggb) = (gxd.read()?, gwd.read()?, gbd.read()?);
            r.ulps(&format!("{k} gx"), &s, &ggx, &wgx, 0);
            r.within_each(&format!("{k} gw"), &s, &ggw, &wgw, &bounds.gw);
            r.within_each(&format!("{k} gb"), &s, &ggb, &wgb, &bounds.gb);
            if act.is_some() {
                let kf = "batchnorm_backward_eval_fused = separate ops (bits)";
                fused_equals_separate(exec, r, kf, &s, [&ggx, &ggw, &ggb], |sx, sw, sb| {
                    bn::backward_eval(exec, dims, &xd, &wd, &rmd, &rvd, eps, None, &gd, sx, sw, sb)
                })?;
            }
        }
    }

    // Bad inputs are errors (and change nothing), not out-of-bounds accesses.
    let k = "batchnorm: bad inputs are errors";
    let x2 = exec.upload(&[1.0f32, 2.0])?; // [1, 2, 1, 1]: one value per channel
    let x4 = exec.upload(&[1.0f32, 2.0, 3.0, 5.0])?; // [2, 2, 1, 1]
    let pc = exec.upload(&[1.0f32, 1.0])?;
    let (mut y2, mut y4) = (nan(exec, 2)?, nan(exec, 4)?);
    let (mut sm, mut si) = (nan(exec, 2)?, nan(exec, 2)?);
    let (mut rmd, mut rvd) = (exec.upload(&[0.0f32; 2])?, exec.upload(&[1.0f32; 2])?);
    let (tanh, sigmoid) = (Some(Activation::Tanh), Some(Activation::Sigmoid));
    let d4 = [2, 2, 1, 1];
    let errs = [
        bn::forward_train(
            exec,
            [1, 2, 1, 1],
            &x2,
            &pc,
            &pc,
            1e-5,
            0.1,
            None,
            &mut y2,
            &mut sm,
            &mut si,
            &mut rmd,
            &mut rvd,
        )
        .is_err(),
        bn::forward_train(
            exec, d4, &x4, &pc, &pc, 1e-5, 1.5, None, &mut y4, &mut sm, &mut si, &mut rmd, &mut rvd,
        )
        .is_err(),
        bn::forward_train(
            exec, d4, &x4, &pc, &pc, 1e-5, 0.1, tanh, &mut y4, &mut sm, &mut si, &mut rmd, &mut rvd,
        )
        .is_err(),
        bn::forward_train(
            exec,
            [2, 2, 2, 1],
            &x4,
            &pc,
            &pc,
            1e-5,
            0.1,
            None,
            &mut y4,
            &mut sm,
            &mut si,
            &mut rmd,
            &mut rvd,
        )
        .is_err(),
        bn::forward_eval(exec, d4, &x4, &pc, &pc, &pc, &pc, 1e-5, sigmoid, &mut y4).is_err(),
        bn::backward_train(
            exec,
            d4,
            &x4,
            &pc,
            &pc,
            &pc,
            None,
            &x2,
            Some(&mut y4),
            None,
            None,
        )
        .is_err(),
        // A fused backward: y of the wrong length, an activation that cannot be fused.
        bn::backward_train(
            exec,
            d4,
            &x4,
            &pc,
            &pc,
            &pc,
            Some(bn::Fused {
                act: Activation::Relu,
                y: &x2,
            }),
            &x4,
            None,
            Some(&mut y2),
            None,
        )
        .is_err(),
        bn::backward_eval(
            exec,
            d4,
            &x4,
            &pc,
            &pc,
            &pc,
            1e-5,
            Some(bn::Fused {
                act: Activation::Tanh,
                y: &x4,
            }),
            &x4,
            None,
            Some(&mut y2),
            None,
        )
        .is_err(),
        bn::backward_eval(
            exec,
            d4,
            &x4,
            &x4,
            &pc,
            &pc,
            1e-5,
            None,
            &x4,
            None,
            None,
            Some(&mut y2),
        )
        .is_err(),
    ];
    let unchanged = rmd.read()? == [0.0, 0.0] && rvd.read()? == [1.0, 1.0];
    r.holds(k, "[2,2,1,1]", errs.iter().all(|&e| e) && unchanged, || {
        format!("outcomes (true = rejected): {errs:?}, running stats unchanged: {unchanged}")
    });
    Ok(())
}

/// The fused backward's (gx, gw, gb) `fused` equal, bit for bit, what `separate` (the
/// backward without the activation, on the activation's gradient) writes into fresh
/// NaN-poisoned outputs.
fn fused_equals_separate<M: Memory>(
    exec: &M,
    r: &mut Report,
    kernel: &str,
    size: &str,
    fused: [&[f32]; 3],
    separate: impl FnOnce(
        Option<&mut M::Buf<f32>>,
        Option<&mut M::Buf<f32>>,
        Option<&mut M::Buf<f32>>,
    ) -> Result<(), GpuError>,
) -> Result<(), GpuError> {
    let [gx, gw, gb] = fused;
    let (mut sx, mut sw, mut sb) = (
        nan(exec, gx.len())?,
        nan(exec, gw.len())?,
        nan(exec, gb.len())?,
    );
    let res = separate(Some(&mut sx), Some(&mut sw), Some(&mut sb));
    if r.launched(kernel, size, Tolerance::Exact, res) {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let same = bits(&sx.read()?) == bits(gx)
            && bits(&sw.read()?) == bits(gw)
            && bits(&sb.read()?) == bits(gb);
        r.holds(kernel, size, same, || "fused and separate differ".into());
    }
    Ok(())
}
