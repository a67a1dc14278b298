//! Losses of the GTA objective and the accuracy helpers of evaluation.
//! (GPU counterpart: kernels/loss.cu.)
//!
//! - Softmax cross-entropy over a batch of logits `[N, K]` with integer labels, averaged over
//!   the batch (PyTorch's `F.cross_entropy`, reduction `mean`). Each row is stabilised with
//!   log-sum-exp around its maximum, so large logits do not overflow.
//! - Binary cross-entropy with logits, averaged over all elements (PyTorch's
//!   `F.binary_cross_entropy_with_logits`), in PyTorch's stable form
//!   `max(x, 0) − x·t + ln(1 + e^{−|x|})`. The target is a constant (real/fake labels of the
//!   discriminator) or one value per element (soft labels).
//! - `argmax_rows` / `count_correct` for classification accuracy (f32 only: evaluation).
//! - Tape glue: `cross_entropy`, `bce_with_logits`, and the scalar arithmetic `add` / `scale`
//!   needed to form weighted sums such as `L = L1 + w·L2` on the tape.
//!
//! Losses return a scalar; their backward takes the upstream scalar gradient `g` (1 when the
//! loss is the final one) and returns the gradient with respect to the logits. Targets and
//! labels are constants: no gradient flows to them.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::ops::activation::sigmoid;
use crate::tape::{BackwardOp, Tape, Var};
use crate::tensor::Tensor;

/// Checks logits `[N, K]` against their labels: N ≥ 1, K ≥ 1, lengths fit, every label < K.
fn check_labelled(
    op: &'static str,
    logits_len: usize,
    dims: [usize; 2],
    labels: &[u32],
    allow_empty: bool,
) -> Result<()> {
    let [n, k] = dims;
    if n == 0 && !allow_empty {
        return Err(Error::shape(
            op,
            "empty batch (N = 0): the mean is undefined",
        ));
    }
    if k == 0 {
        return Err(Error::shape(op, "no classes (K = 0)"));
    }
    match n.checked_mul(k) {
        Some(len) if len == logits_len => {}
        _ => {
            return Err(Error::shape(
                op,
                format!("logits hold {logits_len} values, dims [{n}, {k}] need {n}·{k}"),
            ))
        }
    }
    if labels.len() != n {
        return Err(Error::shape(
            op,
            format!("{} labels for a batch of {n}", labels.len()),
        ));
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= k) {
        return Err(Error::invalid(
            op,
            format!("label {l} of row {i} is not below the class count K = {k}"),
        ));
    }
    Ok(())
}

/// Maximum and log-sum-exp of one row (the row is non-empty).
fn row_lse<T: Float>(row: &[T]) -> T {
    let m = row.iter().skip(1).fold(row[0], |a, &b| a.max(b));
    let s: T = row.iter().map(|&x| (x - m).exp()).sum();
    m + s.ln()
}

/// Mean softmax cross-entropy over the batch: logits [N, K], labels in 0..K (u32).
/// Log-sum-exp stabilised.
pub fn cross_entropy_forward<T: Float>(
    logits: &[T],
    dims: [usize; 2],
    labels: &[u32],
) -> Result<T> {
    check_labelled("cross_entropy", logits.len(), dims, labels, false)?;
    let [n, k] = dims;
    let total: T = logits
        .chunks_exact(k)
        .zip(labels)
        .map(|(row, &l)| row_lse(row) - row[l as usize])
        .sum();
    Ok(total / T::from_usize(n))
}

/// d(loss)/d(logits) scaled by the upstream scalar gradient g: g·(softmax − onehot)/N.
pub fn cross_entropy_backward<T: Float>(
    logits: &[T],
    dims: [usize; 2],
    labels: &[u32],
    g: T,
) -> Result<Vec<T>> {
    check_labelled("cross_entropy_backward", logits.len(), dims, labels, false)?;
    let [n, k] = dims;
    let scale = g / T::from_usize(n);
    let mut dx = Vec::with_capacity(logits.len());
    for (row, &l) in logits.chunks_exact(k).zip(labels) {
        let lse = row_lse(row);
        for (j, &x) in row.iter().enumerate() {
            let p = (x - lse).exp();
            let onehot = if j == l as usize { T::ONE } else { T::ZERO };
            dx.push(scale * (p - onehot));
        }
    }
    Ok(dx)
}

/// The target of a binary cross-entropy: one value for all elements, or one per element.
#[derive(Clone, Debug, PartialEq)]
pub enum BceTarget<T> {
    Constant(T),
    PerElement(Vec<T>),
}

impl<T: Float> BceTarget<T> {
    fn check(&self, op: &'static str, numel: usize) -> Result<()> {
        if numel == 0 {
            return Err(Error::shape(op, "no logits: the mean is undefined"));
        }
        if let BceTarget::PerElement(t) = self {
            if t.len() != numel {
                return Err(Error::shape(
                    op,
                    format!("{} targets for {numel} logits", t.len()),
                ));
            }
        }
        Ok(())
    }
    fn at(&self, i: usize) -> T {
        match self {
            BceTarget::Constant(t) => *t,
            BceTarget::PerElement(t) => t[i],
        }
    }
}

/// Mean over all elements of BCE-with-logits: max(x,0) − x·t + ln(1 + e^{−|x|})
/// (PyTorch's stable form).
pub fn bce_with_logits_forward<T: Float>(logits: &[T], target: &BceTarget<T>) -> Result<T> {
    target.check("bce_with_logits", logits.len())?;
    let total: T = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| x.max(T::ZERO) - x * target.at(i) + (-x.abs()).exp().ln_1p())
        .sum();
    Ok(total / T::from_usize(logits.len()))
}

/// g·(σ(x) − t)/numel.
pub fn bce_with_logits_backward<T: Float>(
    logits: &[T],
    target: &BceTarget<T>,
    g: T,
) -> Result<Vec<T>> {
    target.check("bce_with_logits_backward", logits.len())?;
    let scale = g / T::from_usize(logits.len());
    Ok(logits
        .iter()
        .enumerate()
        .map(|(i, &x)| scale * (sigmoid(x) - target.at(i)))
        .collect())
}

/// Index of the largest logit per row (first on ties). A NaN counts as the largest value, as
/// in PyTorch's `argmax`. An empty batch gives an empty result.
pub fn argmax_rows(logits: &[f32], dims: [usize; 2]) -> Result<Vec<u32>> {
    let [n, k] = dims;
    if k == 0 {
        return Err(Error::shape("argmax_rows", "no classes (K = 0)"));
    }
    if n.checked_mul(k) != Some(logits.len()) {
        return Err(Error::shape(
            "argmax_rows",
            format!("logits hold {} values, dims [{n}, {k}]", logits.len()),
        ));
    }
    if k > u32::MAX as usize + 1 {
        return Err(Error::invalid(
            "argmax_rows",
            format!("K = {k} exceeds u32 labels"),
        ));
    }
    Ok(logits
        .chunks_exact(k)
        .map(|row| {
            let mut best = 0usize;
            for (j, &x) in row.iter().enumerate().skip(1) {
                let b = row[best];
                if !b.is_nan() && (x.is_nan() || x > b) {
                    best = j;
                }
            }
            best as u32
        })
        .collect())
}

/// Number of rows whose argmax equals the label. An empty batch counts 0.
pub fn count_correct(logits: &[f32], dims: [usize; 2], labels: &[u32]) -> Result<usize> {
    check_labelled("count_correct", logits.len(), dims, labels, true)?;
    let pred = argmax_rows(logits, dims)?;
    Ok(pred.iter().zip(labels).filter(|(p, l)| p == l).count())
}

/// The upstream gradient of a scalar output.
pub(crate) fn scalar_grad(op: &'static str, grad_output: &Tensor) -> Result<f32> {
    grad_output.item().map_err(|_| {
        Error::shape(
            op,
            format!("expected a scalar gradient, got {}", grad_output.shape()),
        )
    })
}

/// `saved`: the gradient the backend formed in the forward pass, if it did (see
/// [`Backend::cross_entropy`]).
struct CrossEntropyBackward<L, T> {
    labels: L,
    saved: Option<T>,
}

impl<B: Backend> BackwardOp<B> for CrossEntropyBackward<B::Labels, B::Tensor> {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn backward(
        &self,
        backend: &B,
        inputs: &[&B::Tensor],
        _output: &B::Tensor,
        grad_output: &B::Tensor,
        _need: &[bool],
    ) -> Result<Vec<Option<B::Tensor>>> {
        let dx = backend.cross_entropy_backward(
            inputs[0],
            &self.labels,
            self.saved.as_ref(),
            grad_output,
        )?;
        Ok(vec![Some(dx)])
    }
}

struct BceBackward<T> {
    target: BceTarget<f32>,
    saved: Option<T>,
}

impl<B: Backend> BackwardOp<B> for BceBackward<B::Tensor> {
    fn name(&self) -> &'static str {
        "bce_with_logits"
    }
    fn backward(
        &self,
        backend: &B,
        inputs: &[&B::Tensor],
        _output: &B::Tensor,
        grad_output: &B::Tensor,
        _need: &[bool],
    ) -> Result<Vec<Option<B::Tensor>>> {
        let dx = backend.bce_with_logits_backward(
            inputs[0],
            &self.target,
            self.saved.as_ref(),
            grad_output,
        )?;
        Ok(vec![Some(dx)])
    }
}

/// Elementwise sum of two equally long buffers.
pub(crate) fn add_values<T: Float>(a: &[T], b: &[T]) -> Vec<T> {
    a.iter().zip(b).map(|(&x, &y)| x + y).collect()
}

/// `c·a`, elementwise. Also the backward of `scale` (the same map applied to the gradient).
pub(crate) fn scale_values<T: Float>(a: &[T], c: T) -> Vec<T> {
    a.iter().map(|&x| c * x).collect()
}

struct AddBackward;

impl<B: Backend> BackwardOp<B> for AddBackward {
    fn name(&self) -> &'static str {
        "add"
    }
    fn backward(
        &self,
        _backend: &B,
        _inputs: &[&B::Tensor],
        _output: &B::Tensor,
        grad_output: &B::Tensor,
        need: &[bool],
    ) -> Result<Vec<Option<B::Tensor>>> {
        // d(a + b)/da = d(a + b)/db = identity.
        Ok(need
            .iter()
            .map(|&n| n.then(|| grad_output.clone()))
            .collect())
    }
}

struct ScaleBackward(f32);

impl<B: Backend> BackwardOp<B> for ScaleBackward {
    fn name(&self) -> &'static str {
        "scale"
    }
    fn backward(
        &self,
        backend: &B,
        _inputs: &[&B::Tensor],
        _output: &B::Tensor,
        grad_output: &B::Tensor,
        _need: &[bool],
    ) -> Result<Vec<Option<B::Tensor>>> {
        Ok(vec![Some(backend.scale(grad_output, self.0)?)])
    }
}

impl<B: Backend> Tape<B> {
    /// Mean softmax cross-entropy. `logits` must be rank 2 [N, K]; returns a scalar Var
    /// (shape [1]). `labels` come from [`Backend::upload_labels`].
    ///
    /// The backend may form the gradient in the same pass (the GPU's fused kernel) when the
    /// logits need one; the backward then only scales it by the upstream gradient.
    pub fn cross_entropy_with(&mut self, logits: Var, labels: &B::Labels) -> Result<Var> {
        let want_grad = self.requires_grad(logits);
        let (loss, saved) = self
            .backend()
            .cross_entropy(self.value(logits), labels, want_grad)?;
        let op = CrossEntropyBackward {
            labels: labels.clone(),
            saved,
        };
        self.record(&[logits], loss, op)
    }

    /// [`Tape::cross_entropy_with`] for host labels (uploaded here).
    pub fn cross_entropy(&mut self, logits: Var, labels: &[u32]) -> Result<Var> {
        let labels = self.backend().upload_labels(labels)?;
        self.cross_entropy_with(logits, &labels)
    }

    /// Mean BCE-with-logits over all elements, any shape; returns a scalar Var (shape [1]).
    /// As [`Tape::cross_entropy_with`], the backend may save the gradient in the forward pass.
    pub fn bce_with_logits(&mut self, logits: Var, target: BceTarget<f32>) -> Result<Var> {
        let want_grad = self.requires_grad(logits);
        let (loss, saved) =
            self.backend()
                .bce_with_logits(self.value(logits), &target, want_grad)?;
        self.record(&[logits], loss, BceBackward { target, saved })
    }

    /// a + b, elementwise; the shapes must be equal (typically two scalar losses).
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        let y = self.backend().add(self.value(a), self.value(b))?;
        self.record(&[a, b], y, AddBackward)
    }

    /// c·a, elementwise (a loss weight).
    pub fn scale(&mut self, a: Var, c: f32) -> Result<Var> {
        let y = self.backend().scale(self.value(a), c)?;
        self.record(&[a], y, ScaleBackward(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{gradcheck, Rng};

    fn labels(rng: &mut Rng, n: usize, k: usize) -> Vec<u32> {
        (0..n).map(|_| rng.below(k) as u32).collect()
    }

    #[test]
    fn gradcheck_cross_entropy() {
        let mut rng = Rng::new(11);
        for (n, k) in [(3, 7), (3, 11), (1, 2)] {
            let x = rng.uniform_vec(n * k, -4.0, 4.0);
            let y = labels(&mut rng, n, k);
            gradcheck(
                &format!("cross_entropy N={n} K={k}"),
                &[x],
                &[true],
                |inp| vec![cross_entropy_forward(&inp[0], [n, k], &y).unwrap()],
                |inp, gy| {
                    vec![Some(
                        cross_entropy_backward(&inp[0], [n, k], &y, gy[0]).unwrap(),
                    )]
                },
            );
        }
    }

    #[test]
    fn gradcheck_bce_constant_and_per_element() {
        let mut rng = Rng::new(12);
        for numel in [1, 7, 33] {
            let x = rng.uniform_vec(numel, -6.0, 6.0);
            let soft = rng.uniform_vec(numel, 0.0, 1.0);
            for target in [
                BceTarget::Constant(1.0),
                BceTarget::Constant(0.0),
                BceTarget::Constant(0.3),
                BceTarget::PerElement(soft.clone()),
            ] {
                gradcheck(
                    &format!("bce numel={numel} target={target:?}"),
                    std::slice::from_ref(&x),
                    &[true],
                    |inp| vec![bce_with_logits_forward(&inp[0], &target).unwrap()],
                    |inp, gy| {
                        vec![Some(
                            bce_with_logits_backward(&inp[0], &target, gy[0]).unwrap(),
                        )]
                    },
                );
            }
        }
    }

    #[test]
    fn gradcheck_add_and_scale() {
        let mut rng = Rng::new(13);
        let a = rng.uniform_vec(5, -2.0, 2.0);
        let b = rng.uniform_vec(5, -2.0, 2.0);
        gradcheck(
            "add",
            &[a.clone(), b],
            &[true, true],
            |inp| add_values(&inp[0], &inp[1]),
            |_, gy| vec![Some(gy.to_vec()), Some(gy.to_vec())],
        );
        gradcheck(
            "scale",
            &[a],
            &[true],
            |inp| scale_values(&inp[0], -0.37),
            |_, gy| vec![Some(scale_values(gy, -0.37))],
        );
    }

    #[test]
    fn known_values() {
        // Uniform logits: every class has probability 1/K, so the loss is ln K.
        for k in [2usize, 7, 10] {
            let x = vec![0.25f64; 3 * k];
            let l = cross_entropy_forward(&x, [3, k], &[0, 1, (k - 1) as u32]).unwrap();
            assert!((l - (k as f64).ln()).abs() < 1e-14, "K={k}: {l}");
        }
        // Hand-computed: logits [1, 2, 3], label 2 → ln(e + e² + e³) − 3.
        let l = cross_entropy_forward(&[1.0f64, 2.0, 3.0], [1, 3], &[2]).unwrap();
        let e = std::f64::consts::E;
        assert!((l - ((e + e * e + e * e * e).ln() - 3.0)).abs() < 1e-14);
        // Huge logits do not overflow (log-sum-exp around the row maximum).
        let l = cross_entropy_forward(&[1000.0f32, 0.0, -1000.0], [1, 3], &[1]).unwrap();
        assert!((l - 1000.0).abs() < 1e-3, "{l}");
        let d = cross_entropy_backward(&[1000.0f32, 0.0, -1000.0], [1, 3], &[1], 1.0).unwrap();
        assert_eq!(d, vec![1.0, -1.0, 0.0]);
        // Gradient rows sum to 0 (softmax sums to 1), scaled by g/N.
        let d = cross_entropy_backward(&[0.3f64, -1.0, 2.0, 0.5, 0.1, 0.2], [2, 3], &[0, 2], 2.0)
            .unwrap();
        assert!(d[..3].iter().sum::<f64>().abs() < 1e-15);
        assert!(d[3..].iter().sum::<f64>().abs() < 1e-15);

        // BCE at x = 0 is ln 2 for any target; gradient (0.5 − t)/numel.
        for t in [0.0f64, 1.0, 0.3] {
            let l = bce_with_logits_forward(&[0.0f64; 4], &BceTarget::Constant(t)).unwrap();
            assert!((l - std::f64::consts::LN_2).abs() < 1e-15);
            let d = bce_with_logits_backward(&[0.0f64; 4], &BceTarget::Constant(t), 1.0).unwrap();
            assert!(d.iter().all(|&v| (v - (0.5 - t) / 4.0).abs() < 1e-15));
        }
        // Large |x|: no overflow, the exact limits. x = 200, t = 0 → 200; x = −200, t = 1 → 200;
        // confident and right → e^{−200}, which underflows to 0 in f32.
        let x = [200.0f32, -200.0, 200.0, -200.0];
        let t = BceTarget::PerElement(vec![0.0, 1.0, 1.0, 0.0]);
        let l = bce_with_logits_forward(&x, &t).unwrap();
        assert!(l.is_finite() && (l - 100.0).abs() < 1e-4, "{l}");
        let d = bce_with_logits_backward(&x, &t, 1.0).unwrap();
        assert_eq!(d, vec![0.25, -0.25, 0.0, 0.0]);
        let l = bce_with_logits_forward(&[1e30f32, -1e30], &BceTarget::Constant(0.5)).unwrap();
        assert!(l.is_finite());
    }

    #[test]
    fn argmax_and_accuracy() {
        let x = [
            0.1f32,
            0.9,
            0.3, // 1
            2.0,
            2.0,
            1.0, // tie → first: 0
            -1.0,
            -3.0,
            -0.5, // 2
            0.0,
            f32::NAN,
            5.0, // NaN counts as the maximum (PyTorch): 1
        ];
        assert_eq!(argmax_rows(&x, [4, 3]).unwrap(), vec![1, 0, 2, 1]);
        assert_eq!(count_correct(&x, [4, 3], &[1, 0, 0, 1]).unwrap(), 3);
        assert_eq!(count_correct(&x, [4, 3], &[2, 2, 1, 0]).unwrap(), 0);
        assert_eq!(argmax_rows(&[], [0, 3]).unwrap(), Vec::<u32>::new());
        assert_eq!(count_correct(&[], [0, 3], &[]).unwrap(), 0);
    }

    #[test]
    fn errors_for_bad_labels_and_shapes() {
        let x = [0.0f32; 6];
        let invalid = |r: Result<f32>| matches!(r, Err(Error::InvalidArgument { .. }));
        let shape = |r: Result<f32>| matches!(r, Err(Error::Shape { .. }));
        assert!(invalid(cross_entropy_forward(&x, [2, 3], &[0, 3])));
        assert!(shape(cross_entropy_forward(&x, [2, 3], &[0])));
        assert!(shape(cross_entropy_forward(&x, [3, 3], &[0, 0, 0])));
        assert!(shape(cross_entropy_forward(&[], [0, 3], &[])));
        assert!(shape(cross_entropy_forward(&[], [2, 0], &[0, 0])));
        assert!(shape(cross_entropy_forward(&x, [usize::MAX, 2], &[0])));
        assert!(cross_entropy_backward(&x, [2, 3], &[7, 0], 1.0).is_err());
        assert!(matches!(
            count_correct(&x, [2, 3], &[0, 9]),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(count_correct(&x, [2, 3], &[0]).is_err());
        assert!(argmax_rows(&x, [4, 3]).is_err());
        assert!(argmax_rows(&x, [6, 0]).is_err());
        assert!(shape(bce_with_logits_forward(
            &[],
            &BceTarget::Constant(1.0)
        )));
        assert!(shape(bce_with_logits_forward(
            &x,
            &BceTarget::PerElement(vec![1.0; 5])
        )));
        assert!(bce_with_logits_backward(&x, &BceTarget::PerElement(vec![]), 1.0).is_err());

        let mut tape = Tape::new();
        let v = tape.param(Tensor::zeros([6]).unwrap());
        assert!(tape.cross_entropy(v, &[0]).is_err(), "rank 1 logits");
        let m = tape.param(Tensor::zeros([2, 3]).unwrap());
        assert!(tape.cross_entropy(m, &[0, 3]).is_err());
        assert!(tape.add(v, m).is_err());
    }

    /// Central differences in f32 through the tape (loose tolerance: f32 and h = 1e-2).
    fn tape_fd_check(name: &str, x: Tensor, build: impl Fn(&mut Tape, Var) -> Var) {
        let mut tape = Tape::new();
        let xv = tape.param(x.clone());
        let loss = build(&mut tape, xv);
        let g = tape.backward(loss, &[xv]).unwrap().remove(0);
        assert_eq!(g.shape(), x.shape());
        let eval = |x: Tensor| {
            let mut t = Tape::new();
            let v = t.input(x);
            let l = build(&mut t, v);
            t.value(l).item().unwrap() as f64
        };
        let h = 1e-2f32;
        for j in 0..x.numel() {
            let mut p = x.clone();
            p.data_mut()[j] += h;
            let mut m = x.clone();
            m.data_mut()[j] -= h;
            let num = (eval(p) - eval(m)) / (2.0 * h as f64);
            let ana = g.data()[j] as f64;
            assert!(
                (ana - num).abs() <= 2e-3 + 2e-2 * num.abs(),
                "{name}: element {j}: tape {ana} vs numeric {num}"
            );
        }
    }

    #[test]
    fn tape_losses_and_weighted_sum() {
        let mut rng = Rng::new(14);
        let (n, k) = (3, 5);
        let data: Vec<f32> = rng
            .uniform_vec(n * k, -2.0, 2.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let y = labels(&mut rng, n, k);
        let soft: Vec<f32> = rng
            .uniform_vec(n * k, 0.0, 1.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let x = Tensor::new([n, k], data.clone()).unwrap();

        // Tape values and gradients equal the reference functions.
        let mut tape = Tape::new();
        let xv = tape.param(x.clone());
        let ce = tape.cross_entropy(xv, &y).unwrap();
        assert_eq!(tape.value(ce).dims(), &[1]);
        assert_eq!(
            tape.value(ce).item().unwrap(),
            cross_entropy_forward(&data, [n, k], &y).unwrap()
        );
        let g = tape.backward(ce, &[xv]).unwrap().remove(0);
        assert_eq!(
            g.data(),
            cross_entropy_backward(&data, [n, k], &y, 1.0).unwrap()
        );

        // L = CE + 0.7·BCE(per element) − 0.2·BCE(constant): gradients add up with weights.
        let bce = tape
            .bce_with_logits(xv, BceTarget::PerElement(soft.clone()))
            .unwrap();
        let bce0 = tape.bce_with_logits(xv, BceTarget::Constant(0.0)).unwrap();
        let w1 = tape.scale(bce, 0.7).unwrap();
        let w2 = tape.scale(bce0, -0.2).unwrap();
        let s = tape.add(ce, w1).unwrap();
        let loss = tape.add(s, w2).unwrap();
        let want_value = tape.value(ce).item().unwrap()
            + 0.7 * tape.value(bce).item().unwrap()
            + -0.2 * tape.value(bce0).item().unwrap();
        assert!((tape.value(loss).item().unwrap() - want_value).abs() < 1e-6);
        let g = tape.backward(loss, &[xv]).unwrap().remove(0);
        let g_ce = cross_entropy_backward(&data, [n, k], &y, 1.0).unwrap();
        let g_b =
            bce_with_logits_backward(&data, &BceTarget::PerElement(soft.clone()), 0.7).unwrap();
        let g_b0 = bce_with_logits_backward(&data, &BceTarget::Constant(0.0), -0.2).unwrap();
        for j in 0..n * k {
            let want = g_ce[j] + g_b[j] + g_b0[j];
            assert!(
                (g.data()[j] - want).abs() < 1e-6,
                "{j}: {} vs {want}",
                g.data()[j]
            );
        }

        // And the whole composition against finite differences through the tape.
        let (y2, soft2) = (y.clone(), soft.clone());
        tape_fd_check("ce + 0.7·bce − 0.2·bce0", x, move |t, v| {
            let ce = t.cross_entropy(v, &y2).unwrap();
            let b = t
                .bce_with_logits(v, BceTarget::PerElement(soft2.clone()))
                .unwrap();
            let b0 = t.bce_with_logits(v, BceTarget::Constant(0.0)).unwrap();
            let b = t.scale(b, 0.7).unwrap();
            let b0 = t.scale(b0, -0.2).unwrap();
            let s = t.add(ce, b).unwrap();
            t.add(s, b0).unwrap()
        });
    }

    #[test]
    fn tape_add_same_var_twice_and_constant_inputs() {
        // add(a, a): both paths reach a, gradients sum to 2.
        let mut tape = Tape::new();
        let a = tape.param(Tensor::scalar(3.0));
        let s = tape.add(a, a).unwrap();
        assert_eq!(tape.value(s).item().unwrap(), 6.0);
        assert_eq!(tape.backward(s, &[a]).unwrap()[0].item().unwrap(), 2.0);
        // A constant logits input records no backward; requesting a parameter elsewhere works.
        let c = tape.input(Tensor::new([2, 2], vec![1.0, 0.0, 0.0, 1.0]).unwrap());
        let ce = tape.cross_entropy(c, &[0, 1]).unwrap();
        assert!(!tape.requires_grad(ce));
        let l = tape.add(ce, a).unwrap();
        assert_eq!(tape.backward(l, &[a]).unwrap()[0].item().unwrap(), 1.0);
    }
}
