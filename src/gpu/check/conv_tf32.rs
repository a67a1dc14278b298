//! The "conv_tf32" family: the tensor-core kernels of kernels/conv_tc.cu, through
//! [`conv`]'s `*_with(Precision::Tf32, …)` functions, against [`crate::ops::conv`] on the conv
//! family's shapes (GTA layers at batch 2, awkward sizes, five full-width layers; see
//! super::conv), outputs poisoned with NaN first. Each shape runs forward (bias and activation
//! as in the conv family), backward-data and backward-filter (twice: the same bits).
//!
//! Tolerance. The kernels round both GEMM operands to TF32 (cvt.rna: 11 significant bits,
//! |ã − a| ≤ 2^-11·|a|), multiply exactly (11 × 11 bits fit f32's 24) and add in f32; the bias
//! is added unrounded. Per output element with terms t_k = a_k·b_k (K of them, +1 for a bias):
//!
//!   1. rounding the operands: |ã·b̃ − a·b| ≤ ε_p·|a·b|, ε_p = (1 + 2^-11)² − 1 = 2^-10 + 2^-22;
//!   2. the GPU's f32 sum of the K perturbed terms, in any order, is within γ'_K·Σ|ã·b̃| ≤
//!      γ'_K·(1 + ε_p)·Σ|t| of their exact sum. γ'_K = K·u'/(1 − K·u') with u' = 2^-23, not
//!      2^-24: tensor cores are documented to align and truncate rather than round to nearest
//!      inside an mma (Fasi, Higham, Mikaitis, Pranesh, "Numerical behavior of NVIDIA tensor
//!      cores", PeerJ CS 2021), and truncation's unit error is 2^-23 (the emulator rounds to
//!      nearest, well inside this);
//!   3. the CPU's f32 result is within γ_K·Σ|t| of the exact Σ t (u = 2^-24).
//!
//! So |got − want| ≤ (ε_p + (1 + ε_p)·γ'_K + γ_K)·Σ|t| — about (2^-10 + 3·K·2^-24)·Σ|t|, the
//! brief's (2·2^-11 + 2·γ_K)·Σ|t| with the accumulation term made safe for truncation.
//! Σ|t| is the CPU op on |x|, |w| (|bias|, |gy|) in f64, as in the conv family; ReLU and
//! LeakyReLU (slope ≤ 1) are 1-Lipschitz.
//!
//! A second, tight comparison pins down *which* values are rounded: the CPU on TF32-rounded
//! inputs (x̃, w̃, g̃y; bias unrounded) computes the very same exact products, so the GPU must
//! be within (γ'_K + γ_K)·Σ|t̃| of it. A kernel that rounded the wrong operand, or not at all,
//! or read a fragment from the wrong place fails this one by orders of magnitude. And at least
//! one forward result must differ from the FP32 kernel's bits (the TF32 path really ran).

use super::conv::{
    cases, inputs, label, lipschitz, nan, op_name, or_empty, oracle, same_bits, Case, Inputs,
};
use super::Report;
use super::Rng;
use crate::gpu::kernels::conv::{self, Precision};
use crate::gpu::{Buffer, GpuError, Memory};

const P: Precision = Precision::Tf32;

/// The nearest TF32 value (cvt.rna.tf32.f32: 10 mantissa bits, ties away from zero), as f32.
pub fn tf32(x: f32) -> f32 {
    let u = x.to_bits();
    if u & 0x7f80_0000 == 0x7f80_0000 {
        return x; // inf stays, NaN stays NaN
    }
    f32::from_bits(u.wrapping_add(0x1000) & 0xffff_e000)
}

fn gamma(k: usize, u: f64) -> f64 {
    let ku = k as f64 * u;
    ku / (1.0 - ku)
}

/// ε_p: the relative error of a product of two TF32-rounded operands.
pub fn eps_product() -> f64 {
    f64::powi(2.0, -10) + f64::powi(2.0, -22)
}

/// The factor f of the bound |got − want| ≤ f·Σ|t| against the CPU on unrounded inputs.
pub fn tf32_factor(k: usize) -> f64 {
    let e = eps_product();
    e + (1.0 + e) * gamma(k, f64::powi(2.0, -23)) + gamma(k, f64::powi(2.0, -24))
}

/// The factor against the CPU on TF32-rounded inputs (the same products, another order).
pub fn rounded_factor(k: usize) -> f64 {
    gamma(k, f64::powi(2.0, -23)) + gamma(k, f64::powi(2.0, -24))
}

fn bounds(abs: &[f64], factor: f64) -> Vec<f64> {
    abs.iter().map(|a| factor * a).collect()
}

/// `got` against both oracles: unrounded (TF32 bound) and rounded (tight bound).
#[allow(clippy::too_many_arguments)]
fn compare(
    r: &mut Report,
    kernel: &str,
    size: &str,
    got: &[f32],
    want: (&[f32], &[f64]),
    want_rounded: (&[f32], &[f64]),
    k: usize,
    lip: f64,
) {
    let b = bounds(want.1, lip * tf32_factor(k));
    r.within_each(kernel, size, got, want.0, &b);
    let b = bounds(want_rounded.1, lip * rounded_factor(k));
    let kr = format!("{kernel} vs TF32-rounded inputs");
    r.within_each(&kr, size, got, want_rounded.0, &b);
}

pub fn conv_tf32_kernels<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
    let mut differs = false;
    for c in cases() {
        let Case {
            shape: s,
            bias,
            act,
        } = c;
        let size = label(&c);
        let op = op_name(&s);
        let k_fwd = format!("{op} forward (tf32)");
        let Inputs {
            y_dims,
            x,
            w,
            b,
            gy,
        } = match inputs(&s, &mut rng) {
            Ok(i) => i,
            Err(e) => {
                r.holds(&k_fwd, &size, false, || e);
                continue;
            }
        };
        let len = |d: [usize; 4]| d.iter().product::<usize>();
        let [n, c_in, h, w_] = s.x_dims;
        let [_, c_out, ho, wo] = y_dims;
        let (kh, kw) = (s.w_dims[2], s.w_dims[3]);
        let round = |v: &[f32]| v.iter().map(|&e| tf32(e)).collect::<Vec<f32>>();
        let oracles = oracle(&c, &x, &w, &b, &gy)
            .and_then(|o| Ok((o, oracle(&c, &round(&x), &round(&w), &b, &round(&gy))?)));
        let (want, want_r) = match oracles {
            Ok(o) => o,
            Err(e) => {
                r.holds(&k_fwd, &size, false, || format!("CPU oracle: {e}"));
                continue;
            }
        };
        let (xd, wd, bd, gyd) = (
            exec.upload(&x)?,
            exec.upload(&w)?,
            exec.upload(&b)?,
            exec.upload(&gy)?,
        );

        let k = c_in * kh * kw + bias as usize;
        let lip = lipschitz(act);
        let mut yd = nan(exec, len(y_dims))?;
        let bias_d = bias.then_some(&bd);
        let res = conv::forward_with(exec, P, &s, &xd, &wd, bias_d, act, &mut yd);
        if r.launched(&k_fwd, &size, super::Tolerance::Exact, res) {
            let got = yd.read()?;
            let (wt, wr) = (
                (&want.y[..], &want.y_abs[..]),
                (&want_r.y[..], &want_r.y_abs[..]),
            );
            compare(r, &k_fwd, &size, &got, wt, wr, k, lip);
            let mut fp32 = nan(exec, len(y_dims))?;
            conv::forward(exec, &s, &xd, &wd, bias_d, act, &mut fp32)?;
            differs |= !same_bits(&fp32.read()?, &got);
        }

        let kn = format!("{op} backward_data (tf32)");
        let k = c_out * kh * kw;
        let mut gxd = nan(exec, len(s.x_dims))?;
        let res = conv::backward_data_with(exec, P, &s, &gyd, &wd, &mut gxd);
        if r.launched(&kn, &size, super::Tolerance::Exact, res) {
            let wt = (
                or_empty(want.grads.dx.as_deref()),
                or_empty(want.grads_abs.dx.as_deref()),
            );
            let wr = (
                or_empty(want_r.grads.dx.as_deref()),
                or_empty(want_r.grads_abs.dx.as_deref()),
            );
            compare(r, &kn, &size, &gxd.read()?, wt, wr, k, 1.0);
        }

        let kn = format!("{op} backward_filter (tf32)");
        let k = n * if s.transposed { h * w_ } else { ho * wo };
        let mut ws = nan(exec, conv::workspace_len_with(&s, P))?;
        let mut gwd = nan(exec, len(s.w_dims))?;
        let res = conv::backward_filter_with(exec, P, &s, &xd, &gyd, &mut ws, &mut gwd);
        if r.launched(&kn, &size, super::Tolerance::Exact, res) {
            let got = gwd.read()?;
            let wt = (
                or_empty(want.grads.dw.as_deref()),
                or_empty(want.grads_abs.dw.as_deref()),
            );
            let wr = (
                or_empty(want_r.grads.dw.as_deref()),
                or_empty(want_r.grads_abs.dw.as_deref()),
            );
            compare(r, &kn, &size, &got, wt, wr, k, 1.0);
            let mut again = nan(exec, len(s.w_dims))?;
            let res = conv::backward_filter_with(exec, P, &s, &xd, &gyd, &mut ws, &mut again);
            let kd = format!("{op} backward_filter (tf32): same bits twice");
            if r.launched(&kd, &size, super::Tolerance::Exact, res) {
                let same = same_bits(&again.read()?, &got);
                r.holds(&kd, &size, same, || "the bits changed".into());
            }
        }
    }
    r.holds(
        "conv forward (tf32) ≠ fp32 bits",
        "all shapes",
        differs,
        || "every TF32 result equals the FP32 kernel's bits: the TF32 path did not run".into(),
    );
    Ok(())
}
