//! Layout ops: concatenation along the channel dimension, its inverse split, reshape and
//! flatten. (GPU counterpart: kernels/layout.cu.)
//!
//! Tensors are row-major, so a `[N, C, rest...]` tensor is N contiguous blocks of
//! `C·prod(rest)` values. Concatenating along dim 1 interleaves those blocks part by part
//! (GTA's generator input `[z, embedding, one-hot label]` and the discriminator's feature
//! concatenation); its backward splits the gradient the same way. Reshape and flatten keep
//! the data as is: their backward only restores the input's shape.

use crate::backend::{Backend, TensorValue};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::shape::Shape;
use crate::tape::{BackwardOp, Tape, Var};

/// `prod(dims)` or a shape error when it overflows.
fn numel(op: &'static str, dims: &[usize]) -> Result<usize> {
    Shape::new(dims).checked_numel().ok_or_else(|| {
        Error::shape(
            op,
            format!("shape {} has too many elements", Shape::new(dims)),
        )
    })
}

/// Concatenate along dim 1: every part is [N, C_i, rest...] with equal N and rest; output
/// [N, ΣC_i, rest...].
pub fn concat_dim1<T: Float>(parts: &[(&[T], &[usize])]) -> Result<(Vec<T>, Vec<usize>)> {
    const OP: &str = "concat_dim1";
    let Some(&(_, first)) = parts.first() else {
        return Err(Error::invalid(OP, "no parts to concatenate"));
    };
    if first.len() < 2 {
        return Err(Error::shape(
            OP,
            format!("part 0 has rank {} < 2", first.len()),
        ));
    }
    let (n, rest) = (first[0], &first[2..]);
    let inner = numel(OP, rest)?;
    let mut channels = 0usize;
    // Values per batch item of each part.
    let mut blocks = Vec::with_capacity(parts.len());
    for (i, &(data, dims)) in parts.iter().enumerate() {
        if dims.len() != first.len() || dims[0] != n || &dims[2..] != rest {
            return Err(Error::shape(
                OP,
                format!(
                    "part {i} has shape {}, incompatible with part 0's {} outside dim 1",
                    Shape::new(dims),
                    Shape::new(first)
                ),
            ));
        }
        let len = numel(OP, dims)?;
        if data.len() != len {
            return Err(Error::shape(
                OP,
                format!(
                    "part {i}: shape {} but {} values",
                    Shape::new(dims),
                    data.len()
                ),
            ));
        }
        channels = channels
            .checked_add(dims[1])
            .ok_or_else(|| Error::shape(OP, "channel count overflows"))?;
        // Checked: with N = 0 the element count is 0 however large C·rest is.
        let block = dims[1]
            .checked_mul(inner)
            .ok_or_else(|| Error::shape(OP, "per-item size overflows"))?;
        blocks.push(block);
    }
    let mut out_dims = first.to_vec();
    out_dims[1] = channels;
    let mut out = Vec::with_capacity(numel(OP, &out_dims)?);
    for b in 0..n {
        for (&(data, _), &block) in parts.iter().zip(&blocks) {
            out.extend_from_slice(&data[b * block..(b + 1) * block]);
        }
    }
    Ok((out, out_dims))
}

/// The inverse: split a [N, ΣC_i, rest...] gradient into the parts' gradients.
pub fn split_dim1<T: Float>(x: &[T], dims: &[usize], channels: &[usize]) -> Result<Vec<Vec<T>>> {
    const OP: &str = "split_dim1";
    if dims.len() < 2 {
        return Err(Error::shape(OP, format!("rank {} < 2", dims.len())));
    }
    if channels.is_empty() {
        return Err(Error::invalid(OP, "no parts to split into"));
    }
    let len = numel(OP, dims)?;
    if x.len() != len {
        return Err(Error::shape(
            OP,
            format!("shape {} but {} values", Shape::new(dims), x.len()),
        ));
    }
    let total = channels
        .iter()
        .try_fold(0usize, |a, &c| a.checked_add(c))
        .filter(|&t| t == dims[1])
        .ok_or_else(|| {
            Error::shape(
                OP,
                format!(
                    "channels {channels:?} do not add up to dim 1 of {}",
                    Shape::new(dims)
                ),
            )
        })?;
    let n = dims[0];
    let inner = numel(OP, &dims[2..])?;
    let row = total
        .checked_mul(inner)
        .ok_or_else(|| Error::shape(OP, "per-item size overflows"))?;
    let mut parts: Vec<Vec<T>> = channels
        .iter()
        .map(|&c| Vec::with_capacity(n * c * inner))
        .collect();
    for b in 0..n {
        let mut at = b * row;
        for (part, &c) in parts.iter_mut().zip(channels) {
            part.extend_from_slice(&x[at..at + c * inner]);
            at += c * inner;
        }
    }
    Ok(parts)
}

struct ConcatBackward {
    channels: Vec<usize>,
}

impl<B: Backend> BackwardOp<B> for ConcatBackward {
    fn name(&self) -> &'static str {
        "concat_dim1"
    }
    fn backward(
        &self,
        backend: &B,
        _inputs: &[&B::Tensor],
        _output: &B::Tensor,
        grad_output: &B::Tensor,
        need: &[bool],
    ) -> Result<Vec<Option<B::Tensor>>> {
        backend.split_dim1(grad_output, &self.channels, need)
    }
}

/// Backward of reshape and flatten: the same data under the input's shape.
struct ReshapeBackward(&'static str);

impl<B: Backend> BackwardOp<B> for ReshapeBackward {
    fn name(&self) -> &'static str {
        self.0
    }
    fn backward(
        &self,
        backend: &B,
        inputs: &[&B::Tensor],
        _output: &B::Tensor,
        grad_output: &B::Tensor,
        _need: &[bool],
    ) -> Result<Vec<Option<B::Tensor>>> {
        Ok(vec![Some(
            backend.reshape(grad_output, inputs[0].shape().clone())?,
        )])
    }
}

impl<B: Backend> Tape<B> {
    /// Concatenate along dim 1 (see [`concat_dim1`]).
    pub fn concat_dim1(&mut self, parts: &[Var]) -> Result<Var> {
        let values: Vec<&B::Tensor> = parts.iter().map(|&v| self.value(v)).collect();
        let channels = values
            .iter()
            .map(|t| t.dims().get(1).copied().unwrap_or(0))
            .collect();
        let y = self.backend().concat_dim1(&values)?;
        self.record(parts, y, ConcatBackward { channels })
    }

    /// Same data, new shape (element counts must match).
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let xv = self.value(x);
        let want = numel("reshape", shape)?;
        if want != xv.numel() {
            return Err(Error::shape(
                "reshape",
                format!(
                    "{} ({} values) to {}",
                    xv.shape(),
                    xv.numel(),
                    Shape::new(shape)
                ),
            ));
        }
        let y = self.backend().reshape(xv, Shape::new(shape))?;
        self.record(&[x], y, ReshapeBackward("reshape"))
    }

    /// [N, ...] → [N, product of the rest] (rank ≥ 2, like `torch.flatten(x, 1)`).
    pub fn flatten(&mut self, x: Var) -> Result<Var> {
        let xv = self.value(x);
        let dims = xv.dims();
        if dims.len() < 2 {
            return Err(Error::shape(
                "flatten",
                format!("expected [N, ...] of rank ≥ 2, got {}", xv.shape()),
            ));
        }
        let shape = Shape::new(&[dims[0], numel("flatten", &dims[1..])?]);
        let y = self.backend().reshape(xv, shape)?;
        self.record(&[x], y, ReshapeBackward("flatten"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{gradcheck, Rng};
    use crate::tensor::Tensor;

    /// (batch, rest) layouts: rank 4 and rank 2; channels 1, 3, 5 (odd).
    const LAYOUTS: [(usize, &[usize]); 2] = [(2, &[3, 5]), (3, &[])];
    const CHANNELS: [usize; 3] = [1, 3, 5];

    fn dims_of(n: usize, c: usize, rest: &[usize]) -> Vec<usize> {
        [&[n, c][..], rest].concat()
    }

    #[test]
    fn gradcheck_concat_and_split() {
        let mut rng = Rng::new(21);
        for (n, rest) in LAYOUTS {
            let dims: Vec<Vec<usize>> = CHANNELS.iter().map(|&c| dims_of(n, c, rest)).collect();
            let inputs: Vec<Vec<f64>> = dims
                .iter()
                .map(|d| rng.uniform_vec(d.iter().product(), -1.0, 1.0))
                .collect();
            let out_dims = dims_of(n, CHANNELS.iter().sum(), rest);
            let concat = |inp: &[Vec<f64>]| {
                let views: Vec<(&[f64], &[usize])> = inp
                    .iter()
                    .zip(&dims)
                    .map(|(x, d)| (x.as_slice(), d.as_slice()))
                    .collect();
                concat_dim1(&views).unwrap()
            };
            assert_eq!(concat(&inputs).1, out_dims);
            gradcheck(
                &format!("concat_dim1 rest={rest:?}"),
                &inputs,
                &[true, true, true],
                |inp| concat(inp).0,
                |_, gy| {
                    split_dim1(gy, &out_dims, &CHANNELS)
                        .unwrap()
                        .into_iter()
                        .map(Some)
                        .collect()
                },
            );
            // split as the forward op: its output is the parts laid end to end.
            let whole = rng.uniform_vec(out_dims.iter().product(), -1.0, 1.0);
            gradcheck(
                &format!("split_dim1 rest={rest:?}"),
                &[whole],
                &[true],
                |inp| split_dim1(&inp[0], &out_dims, &CHANNELS).unwrap().concat(),
                |_, gy| {
                    // gy is the parts end to end: cut it back into parts, then concatenate.
                    let mut at = 0;
                    let parts: Vec<&[f64]> = dims
                        .iter()
                        .map(|d| {
                            let len: usize = d.iter().product();
                            at += len;
                            &gy[at - len..at]
                        })
                        .collect();
                    let views: Vec<(&[f64], &[usize])> = parts
                        .iter()
                        .zip(&dims)
                        .map(|(x, d)| (*x, d.as_slice()))
                        .collect();
                    vec![Some(concat_dim1(&views).unwrap().0)]
                },
            );
        }
    }

    #[test]
    fn gradcheck_reshape() {
        // Reshape moves no data: forward and backward are the identity on the buffer.
        let mut rng = Rng::new(22);
        let x = rng.uniform_vec(3 * 5 * 7, -1.0, 1.0);
        gradcheck(
            "reshape",
            &[x],
            &[true],
            |inp| inp[0].clone(),
            |_, gy| vec![Some(gy.to_vec())],
        );
    }

    #[test]
    fn concat_known_values_and_roundtrip() {
        // a: [2, 1, 2], b: [2, 2, 2] → [2, 3, 2], batch blocks interleaved.
        let a = [1.0f32, 2.0, 3.0, 4.0];
        let b = [10.0f32, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0];
        let (y, d) = concat_dim1(&[(&a[..], &[2, 1, 2][..]), (&b[..], &[2, 2, 2][..])]).unwrap();
        assert_eq!(d, vec![2, 3, 2]);
        assert_eq!(
            y,
            vec![1.0, 2.0, 10.0, 11.0, 12.0, 13.0, 3.0, 4.0, 14.0, 15.0, 16.0, 17.0]
        );
        let parts = split_dim1(&y, &d, &[1, 2]).unwrap();
        assert_eq!(parts, vec![a.to_vec(), b.to_vec()]);
        // Zero channels and an empty batch are fine.
        let (y, d) = concat_dim1(&[(&a[..], &[2, 1, 2][..]), (&[][..], &[2, 0, 2][..])]).unwrap();
        assert_eq!((y, d), (a.to_vec(), vec![2, 1, 2]));
        let (y, d) = concat_dim1::<f32>(&[(&[][..], &[0, 3][..])]).unwrap();
        assert_eq!((y.len(), d), (0, vec![0, 3]));
    }

    #[test]
    fn layout_errors() {
        let a = [0.0f32; 6];
        let shape = |r: &Result<(Vec<f32>, Vec<usize>)>| matches!(r, Err(Error::Shape { .. }));
        assert!(concat_dim1::<f32>(&[]).is_err());
        assert!(shape(&concat_dim1(&[(&a[..], &[6][..])])), "rank 1");
        assert!(
            shape(&concat_dim1(&[
                (&a[..], &[2, 3][..]),
                (&a[..], &[3, 2][..])
            ])),
            "N"
        );
        assert!(shape(&concat_dim1(&[
            (&a[..], &[1, 2, 3][..]),
            (&a[..], &[1, 3, 2][..])
        ])));
        assert!(shape(&concat_dim1(&[(&a[..], &[2, 2][..])])), "length");
        assert!(shape(&concat_dim1(&[
            (&a[..], &[2, 3][..]),
            (&a[..], &[2, 3, 1][..])
        ])));
        assert!(split_dim1(&a, &[2, 3], &[1, 1]).is_err());
        assert!(split_dim1(&a, &[2, 3], &[]).is_err());
        assert!(split_dim1(&a, &[6], &[6]).is_err());
        assert!(split_dim1(&a, &[2, 2], &[2]).is_err());
        assert!(split_dim1(&a, &[2, 3], &[usize::MAX, 4]).is_err());

        let mut tape = Tape::new();
        let x = tape.param(Tensor::zeros([2, 3]).unwrap());
        assert!(tape.reshape(x, &[4]).is_err());
        assert!(tape.reshape(x, &[usize::MAX, 2]).is_err());
        let v = tape.param(Tensor::zeros([6]).unwrap());
        assert!(tape.flatten(v).is_err());
        assert!(tape.concat_dim1(&[]).is_err());
        assert!(tape.concat_dim1(&[x, v]).is_err());
    }

    #[test]
    fn tape_concat_flatten_reshape() {
        let mut rng = Rng::new(23);
        let t = |rng: &mut Rng, d: &[usize]| {
            let n = d.iter().product();
            let v = rng
                .uniform_vec(n, -1.0, 1.0)
                .iter()
                .map(|&x| x as f32)
                .collect();
            Tensor::new(d, v).unwrap()
        };
        let a = t(&mut rng, &[2, 1, 3, 5]);
        let b = t(&mut rng, &[2, 3, 3, 5]);
        let c = t(&mut rng, &[2, 5, 3, 5]);
        let w = t(&mut rng, &[2, 9 * 15]);

        let mut tape = Tape::new();
        let (av, bv) = (tape.param(a.clone()), tape.input(b.clone()));
        let cv = tape.param(c.clone());
        let cat = tape.concat_dim1(&[av, bv, cv]).unwrap();
        assert_eq!(tape.value(cat).dims(), &[2, 9, 3, 5]);
        let flat = tape.flatten(cat).unwrap();
        assert_eq!(tape.value(flat).dims(), &[2, 135]);
        let back = tape.reshape(flat, &[2, 9, 15]).unwrap();
        assert_eq!(tape.value(back).data(), tape.value(cat).data());
        // L = BCE(back, t) with per-element targets: dL/dflat is known in closed form, and
        // concat's backward must hand each requested part its slice of it.
        let target: Vec<f32> = w.data().iter().map(|&x| x.abs()).collect();
        let loss = tape
            .bce_with_logits(
                back,
                crate::ops::loss::BceTarget::PerElement(target.clone()),
            )
            .unwrap();
        let grads = tape.backward(loss, &[av, cv, flat]).unwrap();
        let gflat = crate::ops::loss::bce_with_logits_backward(
            tape.value(flat).data(),
            &crate::ops::loss::BceTarget::PerElement(target),
            1.0,
        )
        .unwrap();
        assert_eq!(grads[2].dims(), &[2, 135]);
        assert_eq!(grads[2].data(), &gflat[..]);
        let split = split_dim1(&gflat, &[2, 9, 3, 5], &[1, 3, 5]).unwrap();
        assert_eq!(grads[0].dims(), a.dims());
        assert_eq!(grads[0].data(), &split[0][..]);
        assert_eq!(grads[1].dims(), c.dims());
        assert_eq!(grads[1].data(), &split[2][..]);
    }
}
