//! The Adam optimizer step, with PyTorch's `torch.optim.Adam` semantics (single-tensor
//! implementation, weight_decay 0, amsgrad off, maximize off). (GPU counterpart:
//! kernels/adam.cu.)
//!
//! The arithmetic mirrors `_single_tensor_adam` in torch/optim/adam.py and the CPU kernels
//! it calls, operation by operation, so f32 results agree with PyTorch to the last bit where
//! the platform allows:
//!
//! ```text
//! m.lerp_(g, 1 − β1)                        weight rounded to T; fused multiply-add
//! v.mul_(β2).addcmul_(g, g, value=1 − β2)   scalars rounded to T; v·β2 + ((1−β2)·g)·g, fused
//! bc1 = 1 − β1^step, bc2 = 1 − β2^step      f64 (Python floats), `pow` as Python's `**`
//! step_size = lr / bc1; bc2_sqrt = bc2 ** 0.5              f64
//! denom = sqrt(v) / bc2_sqrt + eps          bc2_sqrt and eps rounded to T
//! p.addcdiv_(m, denom, value=−step_size)    p + ((−step_size)·m) / denom, −step_size in T
//! ```
//!
//! Why fused: PyTorch's `lerp` kernel is written with `fma` on both its vectorised and its
//! scalar path, and `addcmul`'s `self + value·t1·t2` is contracted to an FMA by the compiler
//! (checked bit-for-bit against torch 2.15 on x86-64: every element agrees with the fused
//! form, ~8–30% disagree with the unfused one). CUDA contracts the same expressions.
//!
//! One known platform difference: PyTorch's CPU `sqrt` on f32 goes through MKL's vector
//! math, which is not always correctly rounded (about 15% of values differ by 1 ulp from
//! the IEEE square root on the machine checked). This module uses the correctly rounded
//! square root (as CUDA's `sqrtf` does by default), so parameters may differ from PyTorch
//! CPU by an ulp or two while `m` and `v` agree exactly.

use crate::error::{Error, Result};
use crate::float::Float;
use std::any::TypeId;

/// Hyper-parameters of Adam.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    /// PyTorch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8.
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

impl AdamConfig {
    /// The ranges PyTorch's constructor accepts (0 ≤ lr, 0 ≤ eps, 0 ≤ β < 1), all finite.
    /// Whether the configuration is valid (finite, non-negative; betas in [0, 1)).
    pub fn validate(&self) -> Result<()> {
        self.check()
    }

    fn check(&self) -> Result<()> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !ok(self.lr) {
            return Err(Error::invalid("adam", format!("learning rate {}", self.lr)));
        }
        if !ok(self.eps) {
            return Err(Error::invalid("adam", format!("epsilon {}", self.eps)));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(ok(b) && b < 1.0) {
                return Err(Error::invalid(
                    "adam",
                    format!("{name} = {b} is not in [0, 1)"),
                ));
            }
        }
        Ok(())
    }
}

/// `a·b + c` with a single rounding in `T` (an FMA), for f32 and f64.
fn fused_mul_add<T: Float>(a: T, b: T, c: T) -> T {
    // f32 values convert to and from f64 exactly, so this is f32's own FMA; an FMA done in
    // f64 and then rounded to f32 would round twice.
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        let (a, b, c) = (a.to_f64() as f32, b.to_f64() as f32, c.to_f64() as f32);
        T::from_f64(a.mul_add(b, c) as f64)
    } else {
        T::from_f64(a.to_f64().mul_add(b.to_f64(), c.to_f64()))
    }
}

/// The per-step scalars of [`adam_step`], computed from the step and the configuration in f64
/// and rounded once to `T`, exactly as the CPU loop uses them (the GPU kernel kernels/adam.cu
/// receives the f32 ones, so both round identically).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamScalars<T> {
    /// 1 − β1 (torch.lerp's weight).
    pub w: T,
    /// |w| < 0.5: lerp's first form.
    pub small: bool,
    pub w_minus_1: T,
    pub beta2: T,
    pub one_minus_beta2: T,
    /// sqrt(1 − β2^step).
    pub bc2_sqrt: T,
    pub eps: T,
    /// −lr / (1 − β1^step).
    pub neg_step_size: T,
}

impl<T: Float> AdamScalars<T> {
    /// The scalars of step `step` (counted from 1).
    pub fn new(step: u64, cfg: &AdamConfig) -> Self {
        let stepf = step as f64;
        let bias_correction1 = 1.0 - cfg.beta1.powf(stepf);
        let bias_correction2 = 1.0 - cfg.beta2.powf(stepf);
        let step_size = cfg.lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.powf(0.5);

        let w = T::from_f64(1.0 - cfg.beta1);
        // PyTorch's is_lerp_weight_small: |w| < 0.5 selects the form that is exact near m.
        let small = w.abs() < T::from_f64(0.5);
        let w_minus_1 = w - T::ONE;
        let beta2 = T::from_f64(cfg.beta2);
        let one_minus_beta2 = T::from_f64(1.0 - cfg.beta2);
        let bc2_sqrt = T::from_f64(bias_correction2_sqrt);
        let eps = T::from_f64(cfg.eps);
        let neg_step_size = T::from_f64(-step_size);
        AdamScalars {
            w,
            small,
            w_minus_1,
            beta2,
            one_minus_beta2,
            bc2_sqrt,
            eps,
            neg_step_size,
        }
    }
}

/// One step for one parameter tensor; `step` is the step number AFTER increment (1 for the
/// first step).
///
/// PyTorch: m.lerp_(g, 1-β1)  [lerp(a,b,w) = a + w·(b−a) when |w| < 0.5 else
/// b − (b−a)·(1−w), each as one fused multiply-add];
/// v = v·β2 + (1−β2)·g·g;  bc1 = 1 − β1^step; bc2_sqrt = sqrt(1 − β2^step) (these two in f64,
/// as Python floats); step_size = lr / bc1 (f64); denom = sqrt(v)/bc2_sqrt + eps;
/// p = p − step_size·m/denom (tensor math in T).
pub fn adam_step<T: Float>(
    param: &mut [T],
    grad: &[T],
    m: &mut [T],
    v: &mut [T],
    step: u64,
    cfg: &AdamConfig,
) -> Result<()> {
    let n = param.len();
    if grad.len() != n || m.len() != n || v.len() != n {
        return Err(Error::shape(
            "adam",
            format!(
                "param {n}, grad {}, m {}, v {} values",
                grad.len(),
                m.len(),
                v.len()
            ),
        ));
    }
    if step == 0 {
        return Err(Error::invalid(
            "adam",
            "step counts from 1 (bias correction 1 − β^0 = 0)",
        ));
    }
    cfg.check()?;

    // Scalars, computed as Python does (f64; `**` is C `pow`, as is Rust's `powf`), then
    // rounded to T where they meet a tensor (PyTorch casts a Python scalar to the tensor's
    // dtype inside the kernel).
    let AdamScalars {
        w,
        small,
        w_minus_1,
        beta2,
        one_minus_beta2,
        bc2_sqrt,
        eps,
        neg_step_size,
    } = AdamScalars::new(step, cfg);

    for i in 0..n {
        let g = grad[i];
        let diff = g - m[i];
        m[i] = if small {
            fused_mul_add(w, diff, m[i])
        } else {
            // b − (b − a)·(1 − w) = (w − 1)·(b − a) + b; w − 1 is exact for w ≥ 0.5.
            fused_mul_add(w_minus_1, diff, g)
        };
        v[i] = fused_mul_add(one_minus_beta2 * g, g, v[i] * beta2);
        let denom = v[i].sqrt() / bc2_sqrt + eps;
        param[i] += neg_step_size * m[i] / denom;
    }
    Ok(())
}

/// Optimizer state of one flat parameter buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub step: u64,
}

impl AdamState {
    /// Zero moments, no step taken yet (as PyTorch's lazily created state).
    pub fn new(len: usize) -> Self {
        AdamState {
            m: vec![0.0; len],
            v: vec![0.0; len],
            step: 0,
        }
    }

    /// Increments `step`, then applies [`adam_step`]. On an error nothing changes.
    pub fn step(&mut self, param: &mut [f32], grad: &[f32], cfg: &AdamConfig) -> Result<()> {
        cfg.check()?;
        let n = self.m.len();
        if param.len() != n || grad.len() != n || self.v.len() != n {
            return Err(Error::shape(
                "adam",
                format!(
                    "state for {n} values, param {}, grad {}",
                    param.len(),
                    grad.len()
                ),
            ));
        }
        let step = self
            .step
            .checked_add(1)
            .ok_or_else(|| Error::invalid("adam", "step counter overflow"))?;
        adam_step(param, grad, &mut self.m, &mut self.v, step, cfg)?;
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs of the torch reference: dyadic values, exact in f32 and in Python.
    const P0: [f32; 7] = [0.8125, -2.375, 0.0, 0.0078125, -0.4375, 1.5, -0.0625];
    const GRADS: [[f32; 7]; 5] = [
        [0.5, -1.25, 0.0, 3.0, -0.015625, 0.001953125, 2.25],
        [-0.75, 0.375, 0.0, 2.5, 0.03125, -4.0, 1.125],
        [0.0625, -0.5, 0.0, -3.5, 0.0078125, 0.25, -1.75],
        [1.0, 0.6875, 0.0, 0.125, -0.046875, 8.0, 0.0],
        [-0.3125, 0.0, 0.0, 1.5, 0.0234375, -0.125, 0.5],
    ];

    /// (config, p, m, v after the 5 steps) as f32 bit patterns, generated with torch
    /// 2.15.0+cu132 (CPU, AVX512 capability, 1 thread) by:
    ///
    /// ```python
    /// import torch, numpy as np
    /// p0 = [0.8125, -2.375, 0.0, 0.0078125, -0.4375, 1.5, -0.0625]
    /// grads = [...]  # GRADS above
    /// for lr, betas in [(1e-3, (0.9, 0.999)), (5e-4, (0.3, 0.99))]:
    ///     p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float32))
    ///     opt = torch.optim.Adam([p], lr=lr, betas=betas, eps=1e-8, foreach=False, fused=False)
    ///     for g in grads:
    ///         p.grad = torch.tensor(g, dtype=torch.float32); opt.step()
    ///     st = opt.state[p]
    ///     for t in (p, st['exp_avg'], st['exp_avg_sq']):
    ///         print(", ".join("0x%08x" % x for x in t.detach().numpy().view(np.uint32)))
    /// ```
    ///
    /// β1 = 0.9 takes lerp's small-weight form (w = 0.1), β1 = 0.3 the other (w = 0.7).
    #[allow(clippy::type_complexity)]
    fn torch_reference() -> [(AdamConfig, [u32; 7], [u32; 7], [u32; 7]); 2] {
        [
            (
                AdamConfig::default(),
                [
                    0x3f4fb67b, 0xc017db9e, 0x00000000, 0x3bad4d5c, 0xbedfc207, 0x3fbff5c5,
                    0xbd854c13,
                ],
                [
                    0x3d2bcbe7, 0xbd086596, 0x00000000, 0x3e837f3a, 0x3734e0c4, 0x3edf5fd9,
                    0x3e0d31b9,
                ],
                [
                    0x3afa6567, 0x3b1e79c7, 0x00000000, 0x3cf330fe, 0x3686f592, 0x3da3c53e,
                    0x3c1d7551,
                ],
            ),
            (
                AdamConfig {
                    lr: 5e-4,
                    beta1: 0.3,
                    beta2: 0.99,
                    eps: 1e-8,
                },
                [
                    0x3f4fdc14, 0xc017f97d, 0x00000000, 0x3be642b6, 0xbedfe835, 0x3fbfec23,
                    0xbd815982,
                ],
                [
                    0xbc84523d, 0x3de72b01, 0x00000000, 0x3f6b85c6, 0x3bf79e5a, 0x3fc42e3e,
                    0x3e8c2b95,
                ],
                [
                    0x3c99cc7f, 0x3cc08a14, 0x00000000, 0x3e946289, 0x38265e0e, 0x3f4a2452,
                    0x3dbf562c,
                ],
            ),
        ]
    }

    fn ulps(a: f32, b: f32) -> u32 {
        // Same sign here; the distance of the bit patterns is the distance in ulps.
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn matches_torch_adam_f32() {
        for (cfg, p_want, m_want, v_want) in torch_reference() {
            let mut p = P0.to_vec();
            let mut st = AdamState::new(p.len());
            for g in &GRADS {
                st.step(&mut p, g, &cfg).unwrap();
            }
            assert_eq!(st.step, 5);
            // The moments use no sqrt: bit-exact.
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&st.m), m_want.to_vec(), "m, {cfg:?}");
            assert_eq!(bits(&st.v), v_want.to_vec(), "v, {cfg:?}");
            // Parameters: bit-exact on the machine that generated the numbers; 1 ulp is
            // allowed because PyTorch's CPU sqrt is MKL's (see the module docs).
            for (i, (&got, &want)) in p.iter().zip(&p_want).enumerate() {
                let want = f32::from_bits(want);
                assert!(
                    ulps(got, want) <= 1,
                    "p[{i}]: {got:e} vs torch {want:e}, {cfg:?}"
                );
            }
        }
    }

    #[test]
    fn f64_agrees_with_the_closed_form() {
        // First step: m = (1−β1)g, v = (1−β2)g², so m̂/sqrt(v̂) = sign(g) and p moves by
        // lr·|g|/(|g| + eps·...) ≈ lr against the gradient.
        let cfg = AdamConfig::default();
        let mut p = vec![1.0f64, -2.0, 0.5];
        let g = [0.3f64, -7.0, 0.0];
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        adam_step(&mut p, &g, &mut m, &mut v, 1, &cfg).unwrap();
        for i in 0..3 {
            let mhat = m[i] / (1.0 - cfg.beta1);
            let vhat = v[i] / (1.0 - cfg.beta2);
            assert!((mhat - g[i]).abs() < 1e-15 && (vhat - g[i] * g[i]).abs() < 1e-14);
        }
        assert!((p[0] - (1.0 - 1e-3)).abs() < 1e-9);
        assert!((p[1] - (-2.0 + 1e-3)).abs() < 1e-9);
        assert_eq!(p[2], 0.5, "zero gradient, zero moments: no move");
    }

    #[test]
    fn adam_errors_leave_state_unchanged() {
        let cfg = AdamConfig::default();
        let mut st = AdamState::new(3);
        let mut p = vec![1.0f32; 3];
        assert!(st.step(&mut p, &[1.0; 2], &cfg).is_err());
        assert!(st.step(&mut p[..2], &[1.0; 2], &cfg).is_err());
        for bad in [
            AdamConfig { lr: -1.0, ..cfg },
            AdamConfig { beta1: 1.0, ..cfg },
            AdamConfig {
                beta2: f64::NAN,
                ..cfg
            },
            AdamConfig { eps: -1e-8, ..cfg },
        ] {
            assert!(matches!(
                st.step(&mut p, &[1.0; 3], &bad),
                Err(Error::InvalidArgument { .. })
            ));
        }
        assert_eq!(st, AdamState::new(3));
        assert_eq!(p, vec![1.0; 3]);
        let (mut m, mut v) = (vec![0.0f32; 3], vec![0.0f32; 3]);
        assert!(adam_step(&mut p, &[1.0; 3], &mut m, &mut v, 0, &cfg).is_err());
        assert!(adam_step(&mut p, &[1.0; 3], &mut m[..1], &mut v, 1, &cfg).is_err());
        st.step(&mut p, &[1.0; 3], &cfg).unwrap();
        assert_eq!(st.step, 1);
    }

    #[test]
    fn fused_mul_add_rounds_once() {
        // (1 + 2^-12)² − 1 = 2^-11 + 2^-24: the 2^-24 survives only with a single rounding.
        let a = 1.0f32 + f32::powi(2.0, -12);
        let c = -1.0f32;
        assert_eq!(
            fused_mul_add(a, a, c),
            f32::powi(2.0, -11) + f32::powi(2.0, -24)
        );
        assert_eq!(a * a + c, f32::powi(2.0, -11));
        let a = 1.0f64 + f64::powi(2.0, -27);
        assert_eq!(
            fused_mul_add(a, a, -1.0),
            f64::powi(2.0, -26) + f64::powi(2.0, -54)
        );
    }
}
