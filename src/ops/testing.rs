//! Test helpers shared by the op families: seeded random inputs and a finite-difference
//! gradient check in f64.

use crate::error::Result;
use crate::tape::{BackwardOp, Tape, Var};
use crate::tensor::Tensor;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};

/// L = Σ r·y recorded as a tape op, so an op family's tape-path tests need no other family.
struct WeightedSum(Vec<f32>);

impl BackwardOp for WeightedSum {
    fn name(&self) -> &'static str {
        "weighted_sum"
    }
    fn backward(
        &self,
        _backend: &crate::backend::Cpu,
        inputs: &[&Tensor],
        _output: &Tensor,
        grad_output: &Tensor,
        _need: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        let g = grad_output.item()?;
        let d = self.0.iter().map(|r| r * g).collect();
        Ok(vec![Some(Tensor::new(inputs[0].shape().clone(), d)?)])
    }
}

/// Records L = Σ rᵢ·yᵢ on `tape` (a scalar Var whose gradient with respect to y is r).
pub fn weighted_sum(tape: &mut Tape, y: Var, r: &[f32]) -> Var {
    let s = tape.value(y).data().iter().zip(r).map(|(a, b)| a * b).sum();
    tape.record(&[y], Tensor::scalar(s), WeightedSum(r.to_vec()))
        .expect("weighted_sum on a Var of this tape")
}

/// Seeded random numbers for test inputs.
pub struct Rng(StdRng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(StdRng::seed_from_u64(seed))
    }
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        self.0.random_range(lo..hi)
    }
    pub fn uniform_vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.0.random_range(0..n)
    }
}

/// Checks analytic gradients against central differences, in f64.
///
/// The scalar checked is L = Σ r_i · y_i with fixed random weights r, so every output
/// element contributes with a distinct weight. `backward(inputs, dL/dy)` returns the gradient
/// for each input (`None` where not computed); inputs with `check[i]` set are compared
/// element by element: |analytic − numeric| ≤ 1e-6 + 1e-5·|numeric|.
pub fn gradcheck(
    name: &str,
    inputs: &[Vec<f64>],
    check: &[bool],
    forward: impl Fn(&[Vec<f64>]) -> Vec<f64>,
    backward: impl Fn(&[Vec<f64>], &[f64]) -> Vec<Option<Vec<f64>>>,
) {
    assert_eq!(
        inputs.len(),
        check.len(),
        "{name}: one check flag per input"
    );
    let y = forward(inputs);
    let mut rng = Rng::new(0x5eed ^ y.len() as u64);
    let r = rng.uniform_vec(y.len(), -1.0, 1.0);
    let loss = |inp: &[Vec<f64>]| -> f64 {
        let y = forward(inp);
        y.iter().zip(&r).map(|(a, b)| a * b).sum()
    };
    let analytic = backward(inputs, &r);
    assert_eq!(
        analytic.len(),
        inputs.len(),
        "{name}: one gradient slot per input"
    );
    let h = 1e-6;
    let mut checked = 0usize;
    for (i, input) in inputs.iter().enumerate() {
        if !check[i] {
            continue;
        }
        let grad = analytic[i]
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no gradient returned for input {i}"));
        assert_eq!(
            grad.len(),
            input.len(),
            "{name}: gradient {i} has the wrong length"
        );
        let mut work = inputs.to_vec();
        for j in 0..input.len() {
            let orig = work[i][j];
            work[i][j] = orig + h;
            let lp = loss(&work);
            work[i][j] = orig - h;
            let lm = loss(&work);
            work[i][j] = orig;
            let numeric = (lp - lm) / (2.0 * h);
            let err = (grad[j] - numeric).abs();
            assert!(
                err <= 1e-6 + 1e-5 * numeric.abs(),
                "{name}: input {i} element {j}: analytic {} vs numeric {numeric} (err {err:e})",
                grad[j]
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "{name}: gradcheck compared nothing");
}

/// Central differences must also catch a wrong gradient: the checker is itself tested.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "analytic")]
    fn gradcheck_rejects_a_wrong_gradient() {
        gradcheck(
            "square-with-wrong-grad",
            &[vec![0.3, -1.2, 2.0]],
            &[true],
            |inp| inp[0].iter().map(|x| x * x).collect(),
            // d(x²)/dx is 2x; returning 2.001x must fail.
            |inp, gy| {
                vec![Some(
                    inp[0].iter().zip(gy).map(|(x, g)| 2.001 * x * g).collect(),
                )]
            },
        );
    }

    #[test]
    fn gradcheck_accepts_a_right_gradient() {
        gradcheck(
            "square",
            &[vec![0.3, -1.2, 2.0]],
            &[true],
            |inp| inp[0].iter().map(|x| x * x).collect(),
            |inp, gy| {
                vec![Some(
                    inp[0].iter().zip(gy).map(|(x, g)| 2.0 * x * g).collect(),
                )]
            },
        );
    }
}
