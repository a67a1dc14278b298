//! 2-D max pooling over NCHW planes with kernel = stride, no padding, floor mode — PyTorch's
//! `MaxPool2d(k)`. (GPU counterpart: kernels/pool.cu.)
//!
//! Conventions:
//! - The output is `[N, C, H / k, W / k]` (floor): trailing rows and columns that do not fill
//!   a window are ignored and get a zero gradient.
//! - The forward returns, per output element, the flat index `h·W + w` of its maximum within
//!   the input plane (u32, like PyTorch's `return_indices`, but plane-relative). The backward
//!   scatters the output gradient to those positions; windows do not overlap, but the
//!   scatter still adds, so it stays correct for any index map.
//! - Ties go to the first element in row-major window order (only a strictly greater value
//!   replaces the running maximum), and NaN propagates: a NaN replaces the maximum, as in
//!   PyTorch's CPU kernel (`val > max || isnan(val)`), so a window with NaNs yields NaN and
//!   points at its last NaN.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::shape::Shape;
use crate::tape::{BackwardOp, Tape, Var};
use rayon::prelude::*;

/// Element count of `dims`, or `TooLarge` when it overflows.
fn numel(dims: [usize; 4]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::TooLarge(Shape::from(dims)))
}

/// Output dims of `MaxPool2d(kernel)` on an input of `x_dims`; errors for kernel 0, a kernel
/// larger than the input plane, or a plane too large for u32 argmax indices.
pub fn max_pool2d_dims(x_dims: [usize; 4], kernel: usize) -> Result<[usize; 4]> {
    const OP: &str = "max_pool2d";
    let [n, c, h, w] = x_dims;
    if kernel == 0 {
        return Err(Error::invalid(OP, "kernel size must be ≥ 1, got 0"));
    }
    if kernel > h || kernel > w {
        return Err(Error::invalid(
            OP,
            format!("kernel {kernel} is larger than the input plane {h}×{w} (dims {x_dims:?})"),
        ));
    }
    // argmax is stored as u32: every plane index h·W + w must fit.
    // (h, w ≥ kernel ≥ 1 here, so hw ≥ 1.)
    match h.checked_mul(w) {
        Some(hw) if hw - 1 <= u32::MAX as usize => {}
        _ => {
            return Err(Error::invalid(
                OP,
                format!("input plane {h}×{w} is too large for u32 argmax indices"),
            ))
        }
    }
    Ok([n, c, h / kernel, w / kernel])
}

/// Returns (y, y_dims, argmax) where argmax[i] is the flat index (h*W + w) within the input
/// plane of the max for output i; ties → the first in row-major window order (PyTorch CPU
/// behaviour: strictly greater replaces; NaN propagates).
pub fn max_pool2d_forward<T: Float>(
    x: &[T],
    x_dims: [usize; 4],
    kernel: usize,
) -> Result<(Vec<T>, [usize; 4], Vec<u32>)> {
    const OP: &str = "max_pool2d";
    let total = numel(x_dims)?;
    if x.len() != total {
        return Err(Error::shape(
            OP,
            format!("x has {} elements, dims {x_dims:?} need {total}", x.len()),
        ));
    }
    let y_dims = max_pool2d_dims(x_dims, kernel)?;
    let [n, c, h, w] = x_dims;
    let [_, _, ho, wo] = y_dims;
    let (plane, out_plane) = (h * w, ho * wo);
    let mut y = vec![T::ZERO; n * c * out_plane];
    let mut argmax = vec![0u32; n * c * out_plane];
    // Planes are independent (no reduction across them), so running them in parallel
    // changes no result.
    y.par_chunks_mut(out_plane)
        .zip(argmax.par_chunks_mut(out_plane))
        .zip(x.par_chunks_exact(plane))
        .with_min_len(16)
        .for_each(|((yp, ap), xp)| {
            for oh in 0..ho {
                for ow in 0..wo {
                    let first = oh * kernel * w + ow * kernel;
                    let (mut best, mut best_i) = (xp[first], first);
                    for kh in 0..kernel {
                        let row = first + kh * w;
                        for (j, &v) in xp[row..row + kernel].iter().enumerate() {
                            if v > best || v.is_nan() {
                                best = v;
                                best_i = row + j;
                            }
                        }
                    }
                    yp[oh * wo + ow] = best;
                    // max_pool2d_dims checked that every plane index fits u32.
                    ap[oh * wo + ow] = best_i as u32;
                }
            }
        });
    Ok((y, y_dims, argmax))
}

/// dx from the output gradient: each `gy[i]` goes to the input position `argmax[i]` of its
/// plane; every other position gets 0.
pub fn max_pool2d_backward<T: Float>(
    gy: &[T],
    y_dims: [usize; 4],
    argmax: &[u32],
    x_dims: [usize; 4],
) -> Result<Vec<T>> {
    const OP: &str = "max_pool2d backward";
    let x_total = numel(x_dims)?;
    let y_total = numel(y_dims)?;
    if y_dims[..2] != x_dims[..2] || y_dims[2] > x_dims[2] || y_dims[3] > x_dims[3] {
        return Err(Error::shape(
            OP,
            format!("output dims {y_dims:?} do not fit input dims {x_dims:?}"),
        ));
    }
    if gy.len() != y_total || argmax.len() != y_total {
        return Err(Error::shape(
            OP,
            format!(
                "output dims {y_dims:?} need {y_total} elements, gy has {} and argmax {}",
                gy.len(),
                argmax.len()
            ),
        ));
    }
    let plane = x_dims[2] * x_dims[3];
    let out_plane = y_dims[2] * y_dims[3];
    let mut dx = vec![T::ZERO; x_total];
    if out_plane == 0 {
        return Ok(dx);
    }
    for ((dxp, gp), ap) in dx
        .chunks_exact_mut(plane)
        .zip(gy.chunks_exact(out_plane))
        .zip(argmax.chunks_exact(out_plane))
    {
        for (&g, &a) in gp.iter().zip(ap) {
            let a = a as usize;
            let slot = dxp.get_mut(a).ok_or_else(|| {
                Error::invalid(
                    OP,
                    format!("argmax {a} lies outside the {plane}-element input plane"),
                )
            })?;
            *slot += g;
        }
    }
    Ok(dx)
}

/// Backward of the tape op; keeps the argmax of the forward.
struct MaxPoolBackward<I> {
    kernel: usize,
    argmax: I,
}

impl<B: Backend> BackwardOp<B> for MaxPoolBackward<B::PoolIndices> {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn backward(
        &self,
        backend: &B,
        inputs: &[&B::Tensor],
        _output: &B::Tensor,
        grad_output: &B::Tensor,
        need: &[bool],
    ) -> Result<Vec<Option<B::Tensor>>> {
        if !need.first().copied().unwrap_or(false) {
            return Ok(vec![None]);
        }
        let dx = backend.max_pool_backward(inputs[0], grad_output, self.kernel, &self.argmax)?;
        Ok(vec![Some(dx)])
    }
}

impl<B: Backend> Tape<B> {
    /// `MaxPool2d(kernel)` (stride = kernel, no padding, floor mode) on an NCHW `x`.
    pub fn max_pool2d(&mut self, x: Var, kernel: usize) -> Result<Var> {
        let (y, argmax) = self.backend().max_pool(self.value(x), kernel)?;
        self.record(&[x], y, MaxPoolBackward { kernel, argmax })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{gradcheck, weighted_sum, Rng};
    use crate::tensor::Tensor;

    fn check(dims: [usize; 4], kernel: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        // Distinct random values: no two within a window are closer than the FD step.
        let x = rng.uniform_vec(dims.iter().product(), -2.0, 2.0);
        gradcheck(
            &format!("max_pool2d {dims:?} k{kernel}"),
            &[x],
            &[true],
            |inp| max_pool2d_forward(&inp[0], dims, kernel).unwrap().0,
            |inp, gy| {
                let (_, y_dims, am) = max_pool2d_forward(&inp[0], dims, kernel).unwrap();
                vec![Some(max_pool2d_backward(gy, y_dims, &am, dims).unwrap())]
            },
        );
    }

    #[test]
    fn gradcheck_kernel2_non_square() {
        check([3, 5, 6, 10], 2, 21);
    }

    #[test]
    fn gradcheck_kernel4_non_square() {
        check([3, 7, 8, 12], 4, 22);
    }

    #[test]
    fn gradcheck_floor_mode_drops_the_remainder() {
        // 7×11 with k=2: the last row and column are outside every window (gradient 0).
        check([3, 5, 7, 11], 2, 23);
        let x = vec![1.0f64; 3 * 5 * 7 * 11];
        let (y, y_dims, am) = max_pool2d_forward(&x, [3, 5, 7, 11], 2).unwrap();
        assert_eq!(y_dims, [3, 5, 3, 5]);
        let dx = max_pool2d_backward(&y, y_dims, &am, [3, 5, 7, 11]).unwrap();
        for p in dx.chunks(77) {
            assert!(p[66..].iter().all(|&v| v == 0.0), "last row");
            assert!(
                p.iter().skip(10).step_by(11).all(|&v| v == 0.0),
                "last column"
            );
        }
    }

    #[test]
    fn kernel4_on_4x4_gives_1x1() {
        let x: Vec<f32> = (0..2 * 16).map(|i| ((i * 7) % 16) as f32).collect();
        let (y, y_dims, am) = max_pool2d_forward(&x, [1, 2, 4, 4], 4).unwrap();
        assert_eq!(y_dims, [1, 2, 1, 1]);
        assert_eq!(y, vec![15.0, 15.0]);
        // (i·7) mod 16 = 15 at i = 9 in both planes (plane 1 starts at 16: 16·7 ≡ 0).
        assert_eq!(am, vec![9, 9]);
    }

    #[test]
    fn known_values_and_plane_relative_argmax() {
        // One 2×4 plane per channel, k = 2: two windows each.
        #[rustfmt::skip]
        let x = [
            1.0f64, 5.0, 2.0, 0.0,
            3.0,   -1.0, 8.0, 7.0,
            // channel 1
            -4.0, -3.0, 0.5, 0.5,
            -2.0, -9.0, 0.5, 0.25,
        ];
        let (y, y_dims, am) = max_pool2d_forward(&x, [1, 2, 2, 4], 2).unwrap();
        assert_eq!(y_dims, [1, 2, 1, 2]);
        assert_eq!(y, vec![5.0, 8.0, -2.0, 0.5]);
        // Tie of three 0.5 values: the first in row-major order (index 2) wins.
        assert_eq!(am, vec![1, 6, 4, 2]);
        let dx = max_pool2d_backward(&[1.0, 2.0, 3.0, 4.0], y_dims, &am, [1, 2, 2, 4]).unwrap();
        #[rustfmt::skip]
        assert_eq!(dx, vec![
            0.0, 1.0, 0.0, 0.0,
            0.0, 0.0, 2.0, 0.0,
            0.0, 0.0, 4.0, 0.0,
            3.0, 0.0, 0.0, 0.0,
        ]);
    }

    #[test]
    fn ties_go_to_the_first_index() {
        let mut rng = Rng::new(24);
        // All-equal windows → index of the window's top-left element.
        let (_, _, am) = max_pool2d_forward(&[3.0f32; 16], [1, 1, 4, 4], 2).unwrap();
        assert_eq!(am, vec![0, 2, 8, 10]);
        // A planted double maximum at random positions: the earlier one wins.
        for _ in 0..20 {
            let mut x = vec![0.0f32; 16];
            let (a, b) = (rng.below(16), rng.below(16));
            x[a] = 1.0;
            x[b] = 1.0;
            let (_, _, am) = max_pool2d_forward(&x, [1, 1, 4, 4], 4).unwrap();
            assert_eq!(am, vec![a.min(b) as u32]);
        }
    }

    #[test]
    fn nan_propagates() {
        let x = [1.0f32, f32::NAN, 9.0, 2.0];
        let (y, _, am) = max_pool2d_forward(&x, [1, 1, 2, 2], 2).unwrap();
        assert!(y[0].is_nan());
        assert_eq!(am, vec![1]);
        let x = [f32::NAN, 1.0, f32::NAN, 2.0];
        let (y, _, am) = max_pool2d_forward(&x, [1, 1, 2, 2], 2).unwrap();
        assert!(y[0].is_nan());
        assert_eq!(am, vec![2], "the last NaN, as PyTorch's CPU kernel");
        // −∞ everywhere is a regular maximum.
        let (y, _, am) = max_pool2d_forward(&[f32::NEG_INFINITY; 4], [1, 1, 2, 2], 2).unwrap();
        assert_eq!((y[0], am[0]), (f32::NEG_INFINITY, 0));
    }

    #[test]
    fn tape_matches_direct() {
        let dims = [3, 5, 6, 10];
        let mut rng = Rng::new(25);
        let x: Vec<f32> = rng
            .uniform_vec(dims.iter().product(), -1.0, 1.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let mut tape = Tape::new();
        let xv = tape.param(Tensor::new(dims, x.clone()).unwrap());
        let y = tape.max_pool2d(xv, 2).unwrap();
        assert_eq!(tape.value(y).dims(), &[3, 5, 3, 5]);
        let r: Vec<f32> = rng
            .uniform_vec(3 * 5 * 3 * 5, -1.0, 1.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let loss = weighted_sum(&mut tape, y, &r);
        let g = tape.backward(loss, &[xv]).unwrap();

        let (y_direct, y_dims, am) = max_pool2d_forward(&x, dims, 2).unwrap();
        assert_eq!(tape.value(y).data(), y_direct.as_slice());
        let dx = max_pool2d_backward(&r, y_dims, &am, dims).unwrap();
        assert_eq!(g[0].data(), dx.as_slice());
        assert_eq!(g[0].dims(), &dims);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = vec![0.0f32; 2 * 3 * 4 * 6];
        let d = [2, 3, 4, 6];
        let invalid = |k| {
            matches!(
                max_pool2d_forward(&x, d, k),
                Err(Error::InvalidArgument { .. })
            )
        };
        assert!(invalid(0), "kernel 0");
        assert!(invalid(5), "kernel > H");
        assert!(invalid(7), "kernel > H and W");
        assert!(max_pool2d_forward(&x, d, 4).is_ok(), "kernel = H");
        let err = max_pool2d_forward(&x, d, 5).unwrap_err().to_string();
        assert!(err.contains("larger than the input plane 4×6"), "{err}");
        assert!(matches!(
            max_pool2d_forward(&x[1..], d, 2),
            Err(Error::Shape { .. })
        ));
        assert!(matches!(
            max_pool2d_forward(&x, [usize::MAX, 2, 2, 2], 2),
            Err(Error::TooLarge(_))
        ));
        // A plane whose indices do not fit u32 (2^33 elements; checked without allocating).
        assert!(matches!(
            max_pool2d_dims([1, 1, 1 << 20, 1 << 13], 2),
            Err(Error::InvalidArgument { .. })
        ));
        assert_eq!(
            max_pool2d_dims([1, 1, 1 << 16, 1 << 16], 2).unwrap()[2],
            1 << 15
        );

        let (y, y_dims, am) = max_pool2d_forward(&x, d, 2).unwrap();
        let shape = |r: Result<Vec<f32>>| matches!(r, Err(Error::Shape { .. }));
        assert!(
            shape(max_pool2d_backward(&y[1..], y_dims, &am, d)),
            "gy length"
        );
        assert!(
            shape(max_pool2d_backward(&y, y_dims, &am[1..], d)),
            "argmax length"
        );
        assert!(
            shape(max_pool2d_backward(&y, [2, 4, 2, 3], &am, d)),
            "channels"
        );
        assert!(
            shape(max_pool2d_backward(&y, [2, 3, 2, 3], &am, [2, 3, 1, 6])),
            "y taller"
        );
        let mut bad = am.clone();
        bad[5] = 24;
        assert!(matches!(
            max_pool2d_backward(&y, y_dims, &bad, d),
            Err(Error::InvalidArgument { .. })
        ));

        let mut tape = Tape::new();
        let x3 = tape.param(Tensor::zeros([3, 4, 6]).unwrap());
        assert!(matches!(tape.max_pool2d(x3, 2), Err(Error::Shape { .. })));
        let x4 = tape.param(Tensor::new(d, x.clone()).unwrap());
        assert!(matches!(
            tape.max_pool2d(x4, 0),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    fn backward_op_respects_need() {
        let op = MaxPoolBackward {
            kernel: 2,
            argmax: vec![0],
        };
        let x = Tensor::zeros([1, 1, 2, 2]).unwrap();
        let y = Tensor::zeros([1, 1, 1, 1]).unwrap();
        assert!(op
            .backward(&crate::backend::Cpu, &[&x], &y, &y, &[false])
            .unwrap()[0]
            .is_none());
        let g = op.backward(
            &crate::backend::Cpu,
            &[&x],
            &y,
            &Tensor::full([1, 1, 1, 1], 2.0).unwrap(),
            &[true],
        );
        assert_eq!(
            g.unwrap()[0].as_ref().unwrap().data(),
            &[2.0, 0.0, 0.0, 0.0]
        );
    }
}
