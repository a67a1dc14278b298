//! Fully connected layer `y = x·Wᵀ + b` in PyTorch's layout: x [N, in], W [out, in],
//! b [out], y [N, out]. (GPU counterpart: kernels/linear.cu.)
//!
//! The three products go through [`Float::gemm`] (single-threaded matrixmultiply, so results
//! do not depend on the thread count):
//! - forward  y  = x · Wᵀ      (N×in · in×out),
//! - backward dx = gy · W      (N×out · out×in),
//! - backward dW = gyᵀ · x     (out×N · N×in).
//!
//! db is the column sum of gy, summed over the batch in row order (deterministic).

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::ops::LayerGrads;
use crate::shape::Shape;
use crate::tape::{BackwardOp, Tape, Var};

/// Element count of a rank-2 shape, or `TooLarge` when it overflows.
fn numel(dims: [usize; 2]) -> Result<usize> {
    dims[0]
        .checked_mul(dims[1])
        .ok_or_else(|| Error::TooLarge(Shape::from(dims)))
}

/// Checks x and w against their dims and each other; returns (N, in, out).
fn check(
    op: &'static str,
    x_len: usize,
    x_dims: [usize; 2],
    w_len: usize,
    w_dims: [usize; 2],
) -> Result<(usize, usize, usize)> {
    let [n, fan_in] = x_dims;
    let [fan_out, w_in] = w_dims;
    if w_in != fan_in {
        return Err(Error::shape(
            op,
            format!("x is {n}×{fan_in} but w is {fan_out}×{w_in} (expected [out, {fan_in}])"),
        ));
    }
    let (x_total, w_total) = (numel(x_dims)?, numel(w_dims)?);
    numel([n, fan_out])?;
    if x_len != x_total {
        return Err(Error::shape(
            op,
            format!("x has {x_len} elements, dims {x_dims:?} need {x_total}"),
        ));
    }
    if w_len != w_total {
        return Err(Error::shape(
            op,
            format!("w has {w_len} elements, dims {w_dims:?} need {w_total}"),
        ));
    }
    Ok((n, fan_in, fan_out))
}

/// x [N, in], w [out, in], bias [out] → y [N, out]
pub fn linear_forward<T: Float>(
    x: &[T],
    x_dims: [usize; 2],
    w: &[T],
    w_dims: [usize; 2],
    bias: Option<&[T]>,
) -> Result<Vec<T>> {
    const OP: &str = "linear";
    let (n, fan_in, fan_out) = check(OP, x.len(), x_dims, w.len(), w_dims)?;
    let mut y = vec![T::ZERO; n * fan_out];
    let beta = match bias {
        Some(b) => {
            if b.len() != fan_out {
                return Err(Error::shape(
                    OP,
                    format!("bias has {} elements, w has {fan_out} outputs", b.len()),
                ));
            }
            // Start every row at b and let the GEMM accumulate onto it (beta = 1).
            for row in y.chunks_exact_mut(fan_out) {
                row.copy_from_slice(b);
            }
            T::ONE
        }
        None => T::ZERO,
    };
    T::gemm(n, fan_in, fan_out, T::ONE, x, false, w, true, beta, &mut y);
    Ok(y)
}

/// need = [dx, dw, db]; db None when has_bias is false.
pub fn linear_backward<T: Float>(
    x: &[T],
    x_dims: [usize; 2],
    w: &[T],
    w_dims: [usize; 2],
    has_bias: bool,
    gy: &[T],
    need: [bool; 3],
) -> Result<LayerGrads<T>> {
    const OP: &str = "linear backward";
    let (n, fan_in, fan_out) = check(OP, x.len(), x_dims, w.len(), w_dims)?;
    if gy.len() != n * fan_out {
        return Err(Error::shape(
            OP,
            format!("gy has {} elements, y is {n}×{fan_out}", gy.len()),
        ));
    }
    let [need_dx, need_dw, need_db] = need;
    let dx = need_dx.then(|| {
        let mut dx = vec![T::ZERO; n * fan_in];
        T::gemm(
            n,
            fan_out,
            fan_in,
            T::ONE,
            gy,
            false,
            w,
            false,
            T::ZERO,
            &mut dx,
        );
        dx
    });
    let dw = need_dw.then(|| {
        let mut dw = vec![T::ZERO; fan_out * fan_in];
        // gy is stored N×out; read it transposed as out×N.
        T::gemm(
            fan_out,
            n,
            fan_in,
            T::ONE,
            gy,
            true,
            x,
            false,
            T::ZERO,
            &mut dw,
        );
        dw
    });
    let db = (need_db && has_bias).then(|| {
        let mut db = vec![T::ZERO; fan_out];
        for row in gy.chunks_exact(fan_out) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
        db
    });
    Ok(LayerGrads { dx, dw, db })
}

/// Backward of the tape op (inputs x, w and, when present, b).
struct LinearBackward {
    has_bias: bool,
}

impl<B: Backend> BackwardOp<B> for LinearBackward {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn backward(
        &self,
        backend: &B,
        inputs: &[&B::Tensor],
        _output: &B::Tensor,
        grad_output: &B::Tensor,
        need: &[bool],
    ) -> Result<Vec<Option<B::Tensor>>> {
        let need3 = std::array::from_fn(|i| need.get(i).copied().unwrap_or(false));
        let [dx, dw, db] =
            backend.linear_backward(inputs[0], inputs[1], self.has_bias, grad_output, need3)?;
        let mut grads = vec![dx, dw];
        if self.has_bias {
            grads.push(db);
        }
        Ok(grads)
    }
}

impl<B: Backend> Tape<B> {
    /// y = x·Wᵀ + b with x [N, in], w [out, in], optional b with `out` elements.
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
        let y = self
            .backend()
            .linear(self.value(x), self.value(w), b.map(|b| self.value(b)))?;
        let op = LinearBackward {
            has_bias: b.is_some(),
        };
        let inputs: Vec<Var> = [x, w].into_iter().chain(b).collect();
        self.record(&inputs, y, op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{gradcheck, weighted_sum, Rng};
    use crate::tensor::Tensor;

    fn f32v(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&a| a as f32).collect()
    }

    const XD: [usize; 2] = [3, 7];
    const WD: [usize; 2] = [5, 7];

    #[test]
    fn gradcheck_with_bias() {
        let mut rng = Rng::new(31);
        let x = rng.uniform_vec(21, -1.0, 1.0);
        let w = rng.uniform_vec(35, -1.0, 1.0);
        let b = rng.uniform_vec(5, -1.0, 1.0);
        gradcheck(
            "linear",
            &[x, w, b],
            &[true, true, true],
            |inp| linear_forward(&inp[0], XD, &inp[1], WD, Some(&inp[2])).unwrap(),
            |inp, gy| {
                let g = linear_backward(&inp[0], XD, &inp[1], WD, true, gy, [true; 3]).unwrap();
                vec![g.dx, g.dw, g.db]
            },
        );
    }

    #[test]
    fn gradcheck_without_bias() {
        let mut rng = Rng::new(32);
        // A 1-row batch and a 1-output layer: the degenerate GEMM shapes.
        for (xd, wd) in [(XD, WD), ([1, 4], [1, 4]), ([6, 1], [3, 1])] {
            let x = rng.uniform_vec(xd[0] * xd[1], -1.0, 1.0);
            let w = rng.uniform_vec(wd[0] * wd[1], -1.0, 1.0);
            gradcheck(
                "linear (no bias)",
                &[x, w],
                &[true, true],
                |inp| linear_forward(&inp[0], xd, &inp[1], wd, None).unwrap(),
                |inp, gy| {
                    let g =
                        linear_backward(&inp[0], xd, &inp[1], wd, false, gy, [true; 3]).unwrap();
                    assert!(g.db.is_none());
                    vec![g.dx, g.dw]
                },
            );
        }
    }

    #[test]
    fn known_values() {
        // x = [[1, 2], [3, 4]], W = [[1, 0], [1, -1], [0.5, 2]], b = [10, 20, 30].
        let x = [1.0f64, 2.0, 3.0, 4.0];
        let w = [1.0, 0.0, 1.0, -1.0, 0.5, 2.0];
        let b = [10.0, 20.0, 30.0];
        let y = linear_forward(&x, [2, 2], &w, [3, 2], Some(&b)).unwrap();
        assert_eq!(y, vec![11.0, 19.0, 34.5, 13.0, 19.0, 39.5]);
        let y0 = linear_forward(&x, [2, 2], &w, [3, 2], None).unwrap();
        assert_eq!(y0, vec![1.0, -1.0, 4.5, 3.0, -1.0, 9.5]);
        let gy = [1.0, 0.0, 2.0, 0.0, 1.0, -1.0];
        let g = linear_backward(&x, [2, 2], &w, [3, 2], true, &gy, [true; 3]).unwrap();
        // dx = gy·W, dW = gyᵀ·x, db = Σ_rows gy.
        assert_eq!(g.dx.unwrap(), vec![2.0, 4.0, 0.5, -3.0]);
        assert_eq!(g.dw.unwrap(), vec![1.0, 2.0, 3.0, 4.0, -1.0, 0.0]);
        assert_eq!(g.db.unwrap(), vec![1.0, 1.0, 1.0]);
    }

    #[test]
    fn backward_computes_only_what_is_needed() {
        let mut rng = Rng::new(33);
        let x = rng.uniform_vec(21, -1.0, 1.0);
        let w = rng.uniform_vec(35, -1.0, 1.0);
        let gy = rng.uniform_vec(15, -1.0, 1.0);
        let all = linear_backward(&x, XD, &w, WD, true, &gy, [true; 3]).unwrap();
        for need in [
            [true, false, false],
            [false, true, false],
            [false, false, true],
        ] {
            let g = linear_backward(&x, XD, &w, WD, true, &gy, need).unwrap();
            assert_eq!([g.dx.is_some(), g.dw.is_some(), g.db.is_some()], need);
            assert!(g.dx.is_none() || g.dx == all.dx);
            assert!(g.dw.is_none() || g.dw == all.dw);
            assert!(g.db.is_none() || g.db == all.db);
        }
        let g = linear_backward(&x, XD, &w, WD, false, &gy, [true; 3]).unwrap();
        assert!(g.db.is_none(), "no bias, no db");
        let op = LinearBackward { has_bias: true };
        let (xt, wt) = (
            Tensor::new(XD, f32v(&x)).unwrap(),
            Tensor::new(WD, f32v(&w)).unwrap(),
        );
        let bt = Tensor::zeros([5]).unwrap();
        let gyt = Tensor::new([3, 5], f32v(&gy)).unwrap();
        let r = op
            .backward(
                &crate::backend::Cpu,
                &[&xt, &wt, &bt],
                &gyt,
                &gyt,
                &[false, true, false],
            )
            .unwrap();
        assert!(r[0].is_none() && r[1].is_some() && r[2].is_none());
    }

    #[test]
    fn tape_matches_direct() {
        let mut rng = Rng::new(34);
        let x = f32v(&rng.uniform_vec(21, -1.0, 1.0));
        let w = f32v(&rng.uniform_vec(35, -1.0, 1.0));
        let b = f32v(&rng.uniform_vec(5, -1.0, 1.0));
        let r = f32v(&rng.uniform_vec(15, -1.0, 1.0));
        for with_bias in [true, false] {
            let mut tape = Tape::new();
            let xv = tape.param(Tensor::new(XD, x.clone()).unwrap());
            let wv = tape.param(Tensor::new(WD, w.clone()).unwrap());
            let bv = tape.param(Tensor::new([5], b.clone()).unwrap());
            let bias = with_bias.then_some(bv);
            let y = tape.linear(xv, wv, bias).unwrap();
            assert_eq!(tape.value(y).dims(), &[3, 5]);
            let loss = weighted_sum(&mut tape, y, &r);
            let g = tape.backward(loss, &[xv, wv, bv]).unwrap();

            let bs = with_bias.then_some(b.as_slice());
            let y_direct = linear_forward(&x, XD, &w, WD, bs).unwrap();
            assert_eq!(tape.value(y).data(), y_direct.as_slice());
            let d = linear_backward(&x, XD, &w, WD, with_bias, &r, [true; 3]).unwrap();
            assert_eq!(g[0].data(), d.dx.unwrap().as_slice());
            assert_eq!(g[1].data(), d.dw.unwrap().as_slice());
            match d.db {
                Some(db) => assert_eq!(g[2].data(), db.as_slice()),
                None => assert!(g[2].data().iter().all(|&v| v == 0.0), "unused bias"),
            }
        }
    }

    #[test]
    fn empty_batch_and_zero_features() {
        // N = 0: empty output and dx; dW and db are zero sums.
        let w = [1.0f64; 6];
        assert!(linear_forward(&[], [0, 3], &w, [2, 3], Some(&[1.0, 2.0]))
            .unwrap()
            .is_empty());
        let g = linear_backward(&[], [0, 3], &w, [2, 3], true, &[], [true; 3]).unwrap();
        assert_eq!(g.dx.unwrap(), Vec::<f64>::new());
        assert_eq!(g.dw.unwrap(), vec![0.0; 6]);
        assert_eq!(g.db.unwrap(), vec![0.0; 2]);
        // in = 0: y is the bias.
        let y = linear_forward(&[], [2, 0], &[], [3, 0], Some(&[1.0, 2.0, 3.0])).unwrap();
        assert_eq!(y, vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = vec![0.5f32; 21];
        let w = vec![0.5f32; 35];
        let shape = |r: Result<Vec<f32>>| matches!(r, Err(Error::Shape { .. }));
        assert!(
            shape(linear_forward(&x, XD, &w, [5, 6], None)),
            "in mismatch"
        );
        assert!(shape(linear_forward(&x[1..], XD, &w, WD, None)), "x length");
        assert!(shape(linear_forward(&x, XD, &w[1..], WD, None)), "w length");
        assert!(
            shape(linear_forward(&x, XD, &w, WD, Some(&[0.0; 4]))),
            "bias length"
        );
        assert!(matches!(
            linear_forward(&x, [usize::MAX, 7], &w, WD, None),
            Err(Error::TooLarge(_))
        ));
        let bad_gy = linear_backward(&x, XD, &w, WD, true, &[0.0; 14], [true; 3]);
        assert!(matches!(bad_gy, Err(Error::Shape { .. })));
        let bad_w = linear_backward(&x, XD, &w, [7, 5], true, &[0.0; 15], [true; 3]);
        assert!(matches!(bad_w, Err(Error::Shape { .. })));

        let mut tape = Tape::new();
        let xv = tape.param(Tensor::new(XD, x.clone()).unwrap());
        let x4 = tape.param(Tensor::zeros([3, 7, 1, 1]).unwrap());
        let wv = tape.param(Tensor::new(WD, w.clone()).unwrap());
        let wt = tape.param(Tensor::new([7, 5], w.clone()).unwrap());
        let b4 = tape.param(Tensor::zeros([4]).unwrap());
        for r in [
            tape.linear(x4, wv, None),
            tape.linear(xv, wt, None),
            tape.linear(xv, wv, Some(b4)),
        ] {
            assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
        }
    }
}
