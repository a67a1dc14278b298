//! BatchNorm2d with PyTorch semantics: per-channel normalisation of an NCHW batch,
//! `y = (x − mean) / sqrt(var + eps) · weight + bias`.
//! (GPU counterpart: kernels/batchnorm.cu.)
//!
//! Conventions:
//! - Training mode normalises with the statistics of the batch itself: the mean and the
//!   *biased* variance over the n = N·H·W values of each channel. The backward then also
//!   differentiates through those statistics. A channel with fewer than 2 values is an error,
//!   as in PyTorch ("expected more than 1 value per channel when training").
//! - Evaluation mode normalises with the running statistics, which are constants for the
//!   backward.
//! - Running statistics follow PyTorch: `r ← (1 − momentum)·r + momentum·batch`, where the
//!   variance uses the *unbiased* batch variance `var·n/(n − 1)`. They start at mean 0, var 1.
//!   In training mode the tape op updates them on every call, also under `no_grad` (PyTorch
//!   updates them whenever the module is in train mode).
//!
//! Numerics: per-channel sums (the mean, the sum of squared deviations, and the gradient sums
//! of the backward) are accumulated in f64 through `T::to_f64`, whatever `T` is. A channel
//! can hold N·H·W = tens of thousands of values; summing them in f32 loses several digits, and
//! the variance uses two passes (mean first, then squared deviations from it) instead of
//! E[x²] − E[x]², which cancels catastrophically when |mean| ≫ std. The reductions run in a
//! fixed order, so results are deterministic. Elementwise work stays in `T`.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::ops::activation::{check_fusable, Activation};
use crate::ops::LayerGrads;
use crate::shape::Shape;
use crate::tape::{BackwardOp, Tape, Var};
use rayon::prelude::*;

/// Hyper-parameters of a BatchNorm2d layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormParams {
    pub eps: f32,
    pub momentum: f32,
}

impl Default for BatchNormParams {
    /// PyTorch's defaults: eps 1e-5, momentum 0.1.
    fn default() -> Self {
        BatchNormParams {
            eps: 1e-5,
            momentum: 0.1,
        }
    }
}

/// Per-channel statistics of one training batch, saved for backward.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStats<T> {
    pub mean: Vec<T>,
    /// Biased variance (divided by n).
    pub var: Vec<T>,
    /// 1 / sqrt(var + eps).
    pub invstd: Vec<T>,
}

/// Running statistics (the module's buffers): mean starts 0, var starts 1.
#[derive(Clone, Debug, PartialEq)]
pub struct RunningStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

impl RunningStats {
    pub fn new(channels: usize) -> Self {
        RunningStats {
            mean: vec![0.0; channels],
            var: vec![1.0; channels],
        }
    }

    /// PyTorch update: r = (1-m)·r + m·batch; var uses the UNBIASED batch variance
    /// (var·n/(n-1), n = N·H·W = `count`). Needs `count ≥ 2` (no division by zero) and
    /// `momentum` in [0, 1]; on error nothing is changed.
    pub fn update(&mut self, stats: &BatchStats<f32>, count: usize, momentum: f32) -> Result<()> {
        const OP: &str = "RunningStats::update";
        let c = self.mean.len();
        if self.var.len() != c {
            return Err(Error::shape(
                OP,
                format!(
                    "running mean has {c} channels, running var {}",
                    self.var.len()
                ),
            ));
        }
        if stats.mean.len() != c || stats.var.len() != c {
            return Err(Error::shape(
                OP,
                format!(
                    "running stats have {c} channels, batch stats have mean {} and var {}",
                    stats.mean.len(),
                    stats.var.len()
                ),
            ));
        }
        if count < 2 {
            return Err(Error::invalid(
                OP,
                format!("the unbiased variance needs at least 2 values per channel, got {count}"),
            ));
        }
        if !(0.0..=1.0).contains(&momentum) {
            return Err(Error::invalid(
                OP,
                format!("momentum must lie in [0, 1], got {momentum}"),
            ));
        }
        let m = momentum as f64;
        let bessel = count as f64 / (count - 1) as f64;
        // The blend is done in f64 and rounded once, so the buffers carry no extra rounding.
        for ((rm, rv), (&bm, &bv)) in self
            .mean
            .iter_mut()
            .zip(self.var.iter_mut())
            .zip(stats.mean.iter().zip(&stats.var))
        {
            *rm = ((1.0 - m) * *rm as f64 + m * bm as f64) as f32;
            *rv = ((1.0 - m) * *rv as f64 + m * bv as f64 * bessel) as f32;
        }
        Ok(())
    }
}

/// The layout of an NCHW input: `n` images, `c` channels, `hw` values per plane, `count`
/// (= n·hw) values per channel, `total` elements.
#[derive(Clone, Copy)]
struct Layout {
    n: usize,
    c: usize,
    hw: usize,
    count: usize,
    total: usize,
}

impl Layout {
    fn new(op: &'static str, x_len: usize, x_dims: [usize; 4]) -> Result<Self> {
        let [n, c, h, w] = x_dims;
        let too_large = || Error::TooLarge(Shape::from(x_dims));
        let hw = h.checked_mul(w).ok_or_else(too_large)?;
        let total = n
            .checked_mul(c)
            .and_then(|nc| nc.checked_mul(hw))
            .ok_or_else(too_large)?;
        let count = n.checked_mul(hw).ok_or_else(too_large)?;
        if total != x_len {
            return Err(Error::shape(
                op,
                format!("x has {x_len} elements, dims {x_dims:?} need {total}"),
            ));
        }
        Ok(Layout {
            n,
            c,
            hw,
            count,
            total,
        })
    }

    /// Offsets of the planes of channel `ch`, one per image.
    fn planes(self, ch: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
        (0..self.n).map(move |i| {
            let start = (i * self.c + ch) * self.hw;
            start..start + self.hw
        })
    }

    fn check_channels(self, op: &'static str, what: &str, len: usize) -> Result<()> {
        if len != self.c {
            return Err(Error::shape(
                op,
                format!("{what} has {len} elements, x has {} channels", self.c),
            ));
        }
        Ok(())
    }

    fn check_gy(self, op: &'static str, gy_len: usize) -> Result<()> {
        if gy_len != self.total {
            return Err(Error::shape(
                op,
                format!("gy has {gy_len} elements, x has {}", self.total),
            ));
        }
        Ok(())
    }
}

/// Training-mode forward: normalise with the batch statistics, which are returned for the
/// backward (and for [`RunningStats::update`]). Errors when a channel has fewer than 2 values.
pub fn batch_norm2d_forward_train<T: Float>(
    x: &[T],
    x_dims: [usize; 4],
    weight: &[T],
    bias: &[T],
    eps: T,
) -> Result<(Vec<T>, BatchStats<T>)> {
    const OP: &str = "batch_norm2d (train)";
    let l = Layout::new(OP, x.len(), x_dims)?;
    l.check_channels(OP, "weight", weight.len())?;
    l.check_channels(OP, "bias", bias.len())?;
    if l.count < 2 {
        return Err(Error::invalid(
            OP,
            format!(
                "expected more than 1 value per channel when training, got input dims {x_dims:?} \
                 ({} value(s) per channel)",
                l.count
            ),
        ));
    }
    let inv_count = 1.0 / l.count as f64;
    // Channels are independent: each one's sums run sequentially (so results do not depend on
    // the thread count), channels in parallel.
    let per_channel: Vec<(T, T, T)> = (0..l.c)
        .into_par_iter()
        .map(|ch| {
            // Two passes in f64: the mean, then the squared deviations from it.
            let sum: f64 = l.planes(ch).flat_map(|r| &x[r]).map(|v| v.to_f64()).sum();
            let mean = sum * inv_count;
            let ssd: f64 = l
                .planes(ch)
                .flat_map(|r| &x[r])
                .map(|v| {
                    let d = v.to_f64() - mean;
                    d * d
                })
                .sum();
            let var = ssd * inv_count;
            let invstd = 1.0 / (var + eps.to_f64()).sqrt();
            (T::from_f64(mean), T::from_f64(var), T::from_f64(invstd))
        })
        .collect();
    let stats = BatchStats {
        mean: per_channel.iter().map(|s| s.0).collect(),
        var: per_channel.iter().map(|s| s.1).collect(),
        invstd: per_channel.iter().map(|s| s.2).collect(),
    };
    let y = normalize(x, l, weight, bias, &stats.mean, &stats.invstd);
    Ok((y, stats))
}

/// Evaluation-mode forward: normalise with the running statistics.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d_forward_eval<T: Float>(
    x: &[T],
    x_dims: [usize; 4],
    weight: &[T],
    bias: &[T],
    running_mean: &[T],
    running_var: &[T],
    eps: T,
) -> Result<Vec<T>> {
    const OP: &str = "batch_norm2d (eval)";
    let l = Layout::new(OP, x.len(), x_dims)?;
    l.check_channels(OP, "weight", weight.len())?;
    l.check_channels(OP, "bias", bias.len())?;
    l.check_channels(OP, "running mean", running_mean.len())?;
    l.check_channels(OP, "running var", running_var.len())?;
    let invstd = eval_invstd(running_var, eps);
    Ok(normalize(x, l, weight, bias, running_mean, &invstd))
}

/// 1 / sqrt(var + eps) per channel, computed in f64 and rounded once.
fn eval_invstd<T: Float>(var: &[T], eps: T) -> Vec<T> {
    var.iter()
        .map(|v| T::from_f64(1.0 / (v.to_f64() + eps.to_f64()).sqrt()))
        .collect()
}

/// y = (x − mean)·(invstd·weight) + bias, per channel. `(x − mean)` is formed first (rather
/// than folding everything into one scale and shift) so values near the mean keep their
/// precision.
fn normalize<T: Float>(
    x: &[T],
    l: Layout,
    weight: &[T],
    bias: &[T],
    mean: &[T],
    invstd: &[T],
) -> Vec<T> {
    let mut y = vec![T::ZERO; l.total];
    // Plane p of the NCHW layout belongs to channel p mod C; planes are independent.
    y.par_chunks_mut(l.hw.max(1))
        .zip(x.par_chunks(l.hw.max(1)))
        .enumerate()
        .for_each(|(p, (yp, xp))| {
            let ch = p % l.c;
            let (m, s, b) = (mean[ch], invstd[ch] * weight[ch], bias[ch]);
            for (yv, &xv) in yp.iter_mut().zip(xp) {
                *yv = (xv - m) * s + b;
            }
        });
    y
}

/// need = [dx, dweight, dbias]; training-mode backward (statistics depend on x).
///
/// With x̂ = (x − mean)·invstd: dbias = Σ gy, dweight = Σ gy·x̂ and
/// dx = weight·invstd·(gy − mean(gy) − x̂·mean(gy·x̂)).
pub fn batch_norm2d_backward_train<T: Float>(
    x: &[T],
    x_dims: [usize; 4],
    weight: &[T],
    stats: &BatchStats<T>,
    gy: &[T],
    need: [bool; 3],
) -> Result<LayerGrads<T>> {
    const OP: &str = "batch_norm2d backward (train)";
    let l = Layout::new(OP, x.len(), x_dims)?;
    l.check_channels(OP, "weight", weight.len())?;
    l.check_channels(OP, "batch mean", stats.mean.len())?;
    l.check_channels(OP, "batch var", stats.var.len())?;
    l.check_channels(OP, "batch invstd", stats.invstd.len())?;
    l.check_gy(OP, gy.len())?;
    let [need_dx, need_dw, need_db] = need;
    let mut dx = need_dx.then(|| vec![T::ZERO; l.total]);
    let mut dw = need_dw.then(|| vec![T::ZERO; l.c]);
    let mut db = need_db.then(|| vec![T::ZERO; l.c]);
    if need_dx || need_dw || need_db {
        let inv_count = if l.count > 0 {
            1.0 / l.count as f64
        } else {
            0.0
        };
        // Per-channel sums in parallel over channels (each sum sequential: deterministic).
        let sums: Vec<(f64, f64)> = (0..l.c)
            .into_par_iter()
            .map(|ch| {
                let (m, is) = (stats.mean[ch], stats.invstd[ch]);
                let sum_gy: f64 = if need_dx || need_db {
                    l.planes(ch).flat_map(|r| &gy[r]).map(|g| g.to_f64()).sum()
                } else {
                    0.0
                };
                let sum_gy_xhat: f64 = if need_dx || need_dw {
                    l.planes(ch)
                        .flat_map(|r| x[r.clone()].iter().zip(&gy[r]))
                        .map(|(&xv, &g)| g.to_f64() * ((xv - m) * is).to_f64())
                        .sum()
                } else {
                    0.0
                };
                (sum_gy, sum_gy_xhat)
            })
            .collect();
        if let Some(db) = &mut db {
            for (d, s) in db.iter_mut().zip(&sums) {
                *d = T::from_f64(s.0);
            }
        }
        if let Some(dw) = &mut dw {
            for (d, s) in dw.iter_mut().zip(&sums) {
                *d = T::from_f64(s.1);
            }
        }
        if let Some(dx) = &mut dx {
            dx.par_chunks_mut(l.hw.max(1))
                .zip(x.par_chunks(l.hw.max(1)).zip(gy.par_chunks(l.hw.max(1))))
                .enumerate()
                .for_each(|(p, (dp, (xp, gp)))| {
                    let ch = p % l.c;
                    let (m, is) = (stats.mean[ch], stats.invstd[ch]);
                    let k = weight[ch] * is;
                    let mean_gy = T::from_f64(sums[ch].0 * inv_count);
                    let mean_gy_xhat = T::from_f64(sums[ch].1 * inv_count);
                    for ((d, &xv), &g) in dp.iter_mut().zip(xp).zip(gp) {
                        let xhat = (xv - m) * is;
                        *d = k * (g - mean_gy - xhat * mean_gy_xhat);
                    }
                });
        }
    }
    Ok(LayerGrads { dx, dw, db })
}

/// Evaluation-mode backward (statistics are constants): dx = gy·weight·invstd,
/// dweight = Σ gy·x̂, dbias = Σ gy, with x̂ = (x − running_mean)·invstd.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d_backward_eval<T: Float>(
    x: &[T],
    x_dims: [usize; 4],
    weight: &[T],
    running_mean: &[T],
    running_var: &[T],
    eps: T,
    gy: &[T],
    need: [bool; 3],
) -> Result<LayerGrads<T>> {
    const OP: &str = "batch_norm2d backward (eval)";
    let l = Layout::new(OP, x.len(), x_dims)?;
    l.check_channels(OP, "weight", weight.len())?;
    l.check_channels(OP, "running mean", running_mean.len())?;
    l.check_channels(OP, "running var", running_var.len())?;
    l.check_gy(OP, gy.len())?;
    let [need_dx, need_dw, need_db] = need;
    let invstd = eval_invstd(running_var, eps);
    let mut dx = need_dx.then(|| vec![T::ZERO; l.total]);
    let mut dw = need_dw.then(|| vec![T::ZERO; l.c]);
    let mut db = need_db.then(|| vec![T::ZERO; l.c]);
    for ch in 0..l.c {
        let (m, is) = (running_mean[ch], invstd[ch]);
        if let Some(db) = &mut db {
            let s: f64 = l.planes(ch).flat_map(|r| &gy[r]).map(|g| g.to_f64()).sum();
            db[ch] = T::from_f64(s);
        }
        if let Some(dw) = &mut dw {
            let s: f64 = l
                .planes(ch)
                .flat_map(|r| x[r.clone()].iter().zip(&gy[r]))
                .map(|(&xv, &g)| g.to_f64() * ((xv - m) * is).to_f64())
                .sum();
            dw[ch] = T::from_f64(s);
        }
        if let Some(dx) = &mut dx {
            let k = weight[ch] * is;
            for r in l.planes(ch) {
                for (d, &g) in dx[r.clone()].iter_mut().zip(&gy[r]) {
                    *d = g * k;
                }
            }
        }
    }
    Ok(LayerGrads { dx, dw, db })
}

/// Backward of a recorded batch norm: the backend's saved statistics (batch or running), and
/// the fused activation, whose backward the backend applies from the output in the same pass
/// (sign(act(z)) = sign(z) for the fusable ones).
struct BatchNormBackward<S> {
    saved: S,
    act: Option<Activation>,
}

impl<B: Backend> BackwardOp<B> for BatchNormBackward<B::BnSaved> {
    fn name(&self) -> &'static str {
        "batch_norm2d"
    }
    fn backward(
        &self,
        backend: &B,
        inputs: &[&B::Tensor],
        output: &B::Tensor,
        grad_output: &B::Tensor,
        need: &[bool],
    ) -> Result<Vec<Option<B::Tensor>>> {
        let need = std::array::from_fn(|i| need.get(i).copied().unwrap_or(false));
        let g = backend.batch_norm_backward(
            inputs[0],
            inputs[1],
            &self.saved,
            self.act,
            output,
            grad_output,
            need,
        )?;
        Ok(g.into())
    }
}

impl<B: Backend> Tape<B> {
    /// BatchNorm2d on an NCHW `x` with per-channel `weight` and `bias` (C elements each).
    ///
    /// training=true: batch statistics (and `running` is updated, as PyTorch does in train
    /// mode, even under no_grad); training=false: running statistics. On error `running` is
    /// left unchanged.
    pub fn batch_norm2d(
        &mut self,
        x: Var,
        weight: Var,
        bias: Var,
        running: &mut B::RunningStats,
        training: bool,
        p: BatchNormParams,
    ) -> Result<Var> {
        self.batch_norm2d_act(x, weight, bias, running, training, p, None)
    }

    /// `act(batch_norm2d(...))` as one op (one kernel each way on the GPU: the backward applies
    /// act' from the output inside the batch-norm backward kernel); `act` must
    /// be [`crate::ops::activation::fusable`].
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm2d_act(
        &mut self,
        x: Var,
        weight: Var,
        bias: Var,
        running: &mut B::RunningStats,
        training: bool,
        p: BatchNormParams,
        act: Option<Activation>,
    ) -> Result<Var> {
        check_fusable("batch_norm2d", act)?;
        if !(p.eps.is_finite() && p.eps >= 0.0) {
            return Err(Error::invalid(
                "batch_norm2d",
                format!("eps must be finite and ≥ 0, got {}", p.eps),
            ));
        }
        let (y, saved) = self.backend().batch_norm(
            self.value(x),
            self.value(weight),
            self.value(bias),
            running,
            training,
            p,
            act,
        )?;
        self.record(&[x, weight, bias], y, BatchNormBackward { saved, act })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::ops::testing::{gradcheck, weighted_sum, Rng};
    use crate::tensor::Tensor;

    const DIMS: [usize; 4] = [3, 5, 4, 7];
    const EPS: f64 = 1e-5;

    /// x with a different offset and spread per channel (an awkward but realistic input).
    fn input(rng: &mut Rng, dims: [usize; 4]) -> Vec<f64> {
        let [n, c, h, w] = dims;
        let mut x = Vec::with_capacity(n * c * h * w);
        for _ in 0..n {
            for ch in 0..c {
                let (off, spread) = (ch as f64 - 2.0, 0.5 + 0.3 * ch as f64);
                x.extend((0..h * w).map(|_| off + spread * rng.uniform(-1.0, 1.0)));
            }
        }
        x
    }

    fn f32v(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&a| a as f32).collect()
    }

    #[test]
    fn gradcheck_train_all_three() {
        let mut rng = Rng::new(11);
        let x = input(&mut rng, DIMS);
        let w = rng.uniform_vec(5, 0.5, 1.5);
        let b = rng.uniform_vec(5, -0.5, 0.5);
        gradcheck(
            "batch_norm2d train",
            &[x, w, b],
            &[true, true, true],
            |inp| {
                batch_norm2d_forward_train(&inp[0], DIMS, &inp[1], &inp[2], EPS)
                    .unwrap()
                    .0
            },
            |inp, gy| {
                let (_, st) =
                    batch_norm2d_forward_train(&inp[0], DIMS, &inp[1], &inp[2], EPS).unwrap();
                let g = batch_norm2d_backward_train(&inp[0], DIMS, &inp[1], &st, gy, [true; 3])
                    .unwrap();
                vec![g.dx, g.dw, g.db]
            },
        );
    }

    #[test]
    fn gradcheck_eval_all_three() {
        let mut rng = Rng::new(12);
        let x = input(&mut rng, DIMS);
        let w = rng.uniform_vec(5, -1.5, 1.5);
        let b = rng.uniform_vec(5, -0.5, 0.5);
        let rm = rng.uniform_vec(5, -1.0, 1.0);
        let rv = rng.uniform_vec(5, 0.3, 2.0);
        gradcheck(
            "batch_norm2d eval",
            &[x, w, b],
            &[true, true, true],
            |inp| {
                batch_norm2d_forward_eval(&inp[0], DIMS, &inp[1], &inp[2], &rm, &rv, EPS).unwrap()
            },
            |inp, gy| {
                let g = batch_norm2d_backward_eval(
                    &inp[0], DIMS, &inp[1], &rm, &rv, EPS, gy, [true; 3],
                )
                .unwrap();
                vec![g.dx, g.dw, g.db]
            },
        );
    }

    #[test]
    fn train_output_is_normalised_per_channel() {
        let mut rng = Rng::new(13);
        let x = input(&mut rng, DIMS);
        let (y, st) = batch_norm2d_forward_train(&x, DIMS, &[1.0; 5], &[0.0; 5], EPS).unwrap();
        let l = Layout::new("test", x.len(), DIMS).unwrap();
        for ch in 0..5 {
            let vals: Vec<f64> = l.planes(ch).flat_map(|r| y[r].to_vec()).collect();
            let n = vals.len() as f64;
            let mean = vals.iter().sum::<f64>() / n;
            let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            assert!(mean.abs() < 1e-12, "channel {ch}: mean {mean}");
            // var(y) = var / (var + eps) exactly; ≈ 1.
            let want = st.var[ch] / (st.var[ch] + EPS);
            assert!(
                (var - want).abs() < 1e-12,
                "channel {ch}: var {var} vs {want}"
            );
            // The distance to 1 is eps/(var + eps) (channel 0 has var ≈ 0.08).
            assert!(
                (var - 1.0).abs() < EPS / st.var[ch],
                "channel {ch}: var {var}"
            );
            assert!((st.invstd[ch] - 1.0 / (st.var[ch] + EPS).sqrt()).abs() < 1e-12);
        }
    }

    #[test]
    fn known_stats_and_running_update() {
        // Channel 0 holds 1,2 (image 0) and 3,4 (image 1); channel 1 holds 10,10,10,14.
        let x = [1.0f32, 2.0, 10.0, 10.0, 3.0, 4.0, 10.0, 14.0];
        let dims = [2, 2, 1, 2];
        let (_, st) = batch_norm2d_forward_train(&x, dims, &[1.0; 2], &[0.0; 2], 1e-5).unwrap();
        assert_eq!(st.mean, vec![2.5, 11.0]);
        assert_eq!(st.var, vec![1.25, 3.0]);
        let mut rs = RunningStats::new(2);
        assert_eq!(rs.mean, vec![0.0, 0.0]);
        assert_eq!(rs.var, vec![1.0, 1.0]);
        rs.update(&st, 4, 0.1).unwrap();
        // mean: 0.9·0 + 0.1·mean; var: 0.9·1 + 0.1·var·4/3 (unbiased).
        let want_mean = [0.25f32, 1.1];
        let want_var = [0.9 + 0.1 * 1.25 * 4.0 / 3.0, 0.9 + 0.1 * 3.0 * 4.0 / 3.0f32];
        for ch in 0..2 {
            assert!((rs.mean[ch] - want_mean[ch]).abs() < 1e-6, "{:?}", rs.mean);
            assert!((rs.var[ch] - want_var[ch]).abs() < 1e-6, "{:?}", rs.var);
        }
        // A second update blends again from the new buffers.
        rs.update(&st, 4, 0.5).unwrap();
        assert!((rs.mean[0] - (0.5 * 0.25 + 0.5 * 2.5)).abs() < 1e-6);
        assert!((rs.var[1] - (0.5 * want_var[1] + 0.5 * 4.0)).abs() < 1e-6);
    }

    #[test]
    fn f32_stats_survive_a_large_offset() {
        // mean 1e4, std ≈ 1.1: E[x²] − E[x]² in f32 would lose everything; two passes in f64
        // keep the variance exact here.
        let x: Vec<f32> = (0..64).map(|i| 10_000.0 + (i % 4) as f32).collect();
        let (y, st) = batch_norm2d_forward_train(&x, [4, 1, 4, 4], &[1.0], &[0.0], 1e-5).unwrap();
        assert_eq!(st.mean[0], 10_001.5);
        assert_eq!(st.var[0], 1.25);
        assert!((y[0] - (-1.5 / (1.25f32 + 1e-5).sqrt())).abs() < 1e-6);
    }

    #[test]
    fn eval_forward_known_values() {
        let x = [1.0f64, -2.0, 3.0, 0.5];
        // Fresh running stats (mean 0, var 1): y = x·w/sqrt(1 + eps) + b.
        let rs = RunningStats::new(2);
        let (rm, rv): (Vec<f64>, Vec<f64>) = (
            rs.mean.iter().map(|&v| v as f64).collect(),
            rs.var.iter().map(|&v| v as f64).collect(),
        );
        let y =
            batch_norm2d_forward_eval(&x, [1, 2, 1, 2], &[2.0, 3.0], &[0.5, -1.0], &rm, &rv, EPS)
                .unwrap();
        let s = 1.0 / (1.0 + EPS).sqrt();
        let want = [
            1.0 * 2.0 * s + 0.5,
            -4.0 * s + 0.5,
            9.0 * s - 1.0,
            1.5 * s - 1.0,
        ];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-14);
        }
    }

    #[test]
    fn backward_computes_only_what_is_needed() {
        let mut rng = Rng::new(14);
        let x = input(&mut rng, DIMS);
        let gy = rng.uniform_vec(x.len(), -1.0, 1.0);
        let w = [1.0; 5];
        let (_, st) = batch_norm2d_forward_train(&x, DIMS, &w, &[0.0; 5], EPS).unwrap();
        let all = batch_norm2d_backward_train(&x, DIMS, &w, &st, &gy, [true; 3]).unwrap();
        for need in [
            [true, false, false],
            [false, true, false],
            [false, false, true],
        ] {
            let g = batch_norm2d_backward_train(&x, DIMS, &w, &st, &gy, need).unwrap();
            assert_eq!(g.dx.is_some(), need[0]);
            assert_eq!(g.dw.is_some(), need[1]);
            assert_eq!(g.db.is_some(), need[2]);
            // Each gradient alone equals the one computed with the others.
            assert!(g.dx.is_none() || g.dx == all.dx);
            assert!(g.dw.is_none() || g.dw == all.dw);
            assert!(g.db.is_none() || g.db == all.db);
            let rm = [0.0; 5];
            let rv = [1.0; 5];
            let e = batch_norm2d_backward_eval(&x, DIMS, &w, &rm, &rv, EPS, &gy, need).unwrap();
            assert_eq!([e.dx.is_some(), e.dw.is_some(), e.db.is_some()], need);
        }
        let none = batch_norm2d_backward_train(&x, DIMS, &w, &st, &gy, [false; 3]).unwrap();
        assert_eq!(none, LayerGrads::default());
    }

    #[test]
    fn tape_train_matches_direct_and_updates_running() {
        let mut rng = Rng::new(15);
        let x = f32v(&input(&mut rng, DIMS));
        let w = f32v(&rng.uniform_vec(5, 0.5, 1.5));
        let b = f32v(&rng.uniform_vec(5, -0.5, 0.5));
        let r = f32v(&rng.uniform_vec(x.len(), -1.0, 1.0));
        let p = BatchNormParams::default();
        assert_eq!(
            p,
            BatchNormParams {
                eps: 1e-5,
                momentum: 0.1
            }
        );

        let mut tape = Tape::new();
        let xv = tape.param(Tensor::new(DIMS, x.clone()).unwrap());
        let wv = tape.param(Tensor::new([5], w.clone()).unwrap());
        let bv = tape.param(Tensor::new([5], b.clone()).unwrap());
        let mut running = RunningStats::new(5);
        let y = tape
            .batch_norm2d(xv, wv, bv, &mut running, true, p)
            .unwrap();
        let loss = weighted_sum(&mut tape, y, &r);
        let grads = tape.backward(loss, &[xv, wv, bv]).unwrap();

        let (y_direct, st) = batch_norm2d_forward_train(&x, DIMS, &w, &b, p.eps).unwrap();
        assert_eq!(tape.value(y).data(), y_direct.as_slice());
        assert_eq!(tape.value(y).dims(), &DIMS);
        let g = batch_norm2d_backward_train(&x, DIMS, &w, &st, &r, [true; 3]).unwrap();
        assert_eq!(grads[0].data(), g.dx.unwrap().as_slice());
        assert_eq!(grads[1].data(), g.dw.unwrap().as_slice());
        assert_eq!(grads[2].data(), g.db.unwrap().as_slice());
        assert_eq!(grads[1].dims(), &[5]);

        let mut want = RunningStats::new(5);
        want.update(&st, 3 * 4 * 7, p.momentum).unwrap();
        assert_eq!(running, want);

        // Train mode updates the buffers under no_grad too; eval mode never does.
        tape.no_grad(|t| t.batch_norm2d(xv, wv, bv, &mut running, true, p))
            .unwrap();
        want.update(&st, 3 * 4 * 7, p.momentum).unwrap();
        assert_eq!(running, want);
        tape.batch_norm2d(xv, wv, bv, &mut running, false, p)
            .unwrap();
        assert_eq!(running, want);
    }

    #[test]
    fn tape_eval_matches_direct() {
        let mut rng = Rng::new(16);
        let x = f32v(&input(&mut rng, DIMS));
        let w = f32v(&rng.uniform_vec(5, 0.5, 1.5));
        let b = f32v(&rng.uniform_vec(5, -0.5, 0.5));
        let r = f32v(&rng.uniform_vec(x.len(), -1.0, 1.0));
        let mut running = RunningStats {
            mean: f32v(&rng.uniform_vec(5, -1.0, 1.0)),
            var: f32v(&rng.uniform_vec(5, 0.5, 2.0)),
        };
        let p = BatchNormParams::default();

        let mut tape = Tape::new();
        // x is data (no gradient), weight and bias are parameters.
        let xv = tape.input(Tensor::new(DIMS, x.clone()).unwrap());
        let wv = tape.param(Tensor::new([5], w.clone()).unwrap());
        let bv = tape.param(Tensor::new([5], b.clone()).unwrap());
        let before = running.clone();
        let y = tape
            .batch_norm2d(xv, wv, bv, &mut running, false, p)
            .unwrap();
        assert_eq!(running, before);
        // The op kept its own copy of the statistics: changing the buffers now is harmless.
        running.mean.iter_mut().for_each(|m| *m += 1.0);
        let loss = weighted_sum(&mut tape, y, &r);
        let grads = tape.backward(loss, &[wv, bv]).unwrap();

        let (rm, rv) = (&before.mean, &before.var);
        let y_direct = batch_norm2d_forward_eval(&x, DIMS, &w, &b, rm, rv, p.eps).unwrap();
        assert_eq!(tape.value(y).data(), y_direct.as_slice());
        let g = batch_norm2d_backward_eval(&x, DIMS, &w, rm, rv, p.eps, &r, [false, true, true])
            .unwrap();
        assert_eq!(grads[0].data(), g.dw.unwrap().as_slice());
        assert_eq!(grads[1].data(), g.db.unwrap().as_slice());
    }

    #[test]
    fn tape_backward_op_respects_need() {
        let x = Tensor::new([2, 1, 1, 2], vec![1.0, 2.0, 4.0, 3.0]).unwrap();
        let w = Tensor::new([1], vec![1.5]).unwrap();
        let b = Tensor::new([1], vec![0.0]).unwrap();
        let (y, stats) =
            batch_norm2d_forward_train(x.data(), [2, 1, 1, 2], w.data(), b.data(), 1e-5).unwrap();
        let y = Tensor::new([2, 1, 1, 2], y).unwrap();
        let op = BatchNormBackward {
            saved: crate::backend::cpu::CpuBnSaved::Batch(stats),
            act: None,
        };
        let gy = Tensor::full([2, 1, 1, 2], 1.0).unwrap();
        let g = op
            .backward(&Cpu, &[&x, &w, &b], &y, &gy, &[false, true, false])
            .unwrap();
        assert!(g[0].is_none() && g[1].is_some() && g[2].is_none());
    }

    #[test]
    fn one_value_per_channel_is_an_error() {
        let x = [1.0f32, 2.0, 3.0];
        let err =
            batch_norm2d_forward_train(&x, [1, 3, 1, 1], &[1.0; 3], &[0.0; 3], 1e-5).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert!(
            err.to_string().contains("more than 1 value per channel"),
            "{err}"
        );

        let mut tape = Tape::new();
        let xv = tape.param(Tensor::new([1, 3, 1, 1], x.to_vec()).unwrap());
        let wv = tape.param(Tensor::full([3], 1.0).unwrap());
        let bv = tape.param(Tensor::zeros([3]).unwrap());
        let mut running = RunningStats::new(3);
        let p = BatchNormParams::default();
        let err = tape
            .batch_norm2d(xv, wv, bv, &mut running, true, p)
            .unwrap_err();
        assert!(
            err.to_string().contains("more than 1 value per channel"),
            "{err}"
        );
        assert_eq!(running, RunningStats::new(3), "buffers untouched on error");
        // Evaluation with one value per channel is fine (PyTorch agrees).
        tape.batch_norm2d(xv, wv, bv, &mut running, false, p)
            .unwrap();

        let st = BatchStats {
            mean: vec![1.0f32],
            var: vec![0.0],
            invstd: vec![1.0],
        };
        let mut rs = RunningStats::new(1);
        for count in [0, 1] {
            let err = rs.update(&st, count, 0.1).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        }
        assert!(rs.update(&st, 4, 1.5).is_err(), "momentum > 1");
        assert!(rs.update(&st, 4, f32::NAN).is_err(), "NaN momentum");
        assert_eq!(rs, RunningStats::new(1));
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = vec![0.5f64; 2 * 3 * 2 * 2];
        let d = [2, 3, 2, 2];
        let (w, b) = ([1.0; 3], [0.0; 3]);
        fn shape_err<R>(r: Result<R>) -> bool {
            matches!(r, Err(Error::Shape { .. }))
        }
        // Wrong x length, wrong weight / bias / running lengths, channel mismatch.
        assert!(shape_err(batch_norm2d_forward_train(
            &x[1..],
            d,
            &w,
            &b,
            EPS
        )));
        assert!(shape_err(batch_norm2d_forward_train(
            &x,
            d,
            &w[..2],
            &b,
            EPS
        )));
        assert!(shape_err(batch_norm2d_forward_train(
            &x, d, &w, &[0.0; 4], EPS
        )));
        assert!(shape_err(batch_norm2d_forward_eval(
            &x, d, &w, &b, &[0.0; 2], &[1.0; 3], EPS
        )));
        assert!(shape_err(batch_norm2d_forward_eval(
            &x, d, &w, &b, &[0.0; 3], &[1.0; 4], EPS
        )));
        assert!(shape_err(batch_norm2d_forward_train(
            &x,
            [2, 4, 2, 2],
            &w,
            &b,
            EPS
        )));
        let (_, st) = batch_norm2d_forward_train(&x, d, &w, &b, EPS).unwrap();
        assert!(shape_err(batch_norm2d_backward_train(
            &x,
            d,
            &w,
            &st,
            &x[1..],
            [true; 3]
        )));
        let mut short = st.clone();
        short.invstd.pop();
        assert!(shape_err(batch_norm2d_backward_train(
            &x, d, &w, &short, &x, [true; 3]
        )));
        assert!(shape_err(batch_norm2d_backward_eval(
            &x,
            d,
            &w,
            &[0.0; 3],
            &[1.0; 3],
            EPS,
            &x[2..],
            [true; 3]
        )));
        // Overflowing dims are reported, not panicked on.
        assert!(matches!(
            batch_norm2d_forward_train(&x, [usize::MAX, 2, 2, 2], &w, &b, EPS),
            Err(Error::TooLarge(_))
        ));
        let mut rs = RunningStats::new(3);
        assert!(shape_err(rs.update(&short_stats(), 4, 0.1)));

        // Tape: rank, running-stat channels, eps.
        let mut tape = Tape::new();
        let p = BatchNormParams::default();
        let x3 = tape.param(Tensor::zeros([2, 3, 4]).unwrap());
        let x4 = tape.param(Tensor::new(d, x.iter().map(|&v| v as f32).collect()).unwrap());
        let wv = tape.param(Tensor::full([3], 1.0).unwrap());
        let bv = tape.param(Tensor::zeros([3]).unwrap());
        let b2 = tape.param(Tensor::zeros([2]).unwrap());
        assert!(shape_err(tape.batch_norm2d(x3, wv, bv, &mut rs, true, p)));
        assert!(shape_err(tape.batch_norm2d(x4, wv, b2, &mut rs, true, p)));
        assert!(shape_err(tape.batch_norm2d(x4, wv, b2, &mut rs, false, p)));
        let mut rs2 = RunningStats::new(2);
        assert!(shape_err(tape.batch_norm2d(x4, wv, bv, &mut rs2, true, p)));
        let bad = BatchNormParams { eps: -1.0, ..p };
        assert!(matches!(
            tape.batch_norm2d(x4, wv, bv, &mut rs, true, bad),
            Err(Error::InvalidArgument { .. })
        ));
        assert_eq!(rs, RunningStats::new(3));
        assert_eq!(rs2, RunningStats::new(2));
    }

    fn short_stats() -> BatchStats<f32> {
        BatchStats {
            mean: vec![0.0; 2],
            var: vec![1.0; 2],
            invstd: vec![1.0; 2],
        }
    }
}
