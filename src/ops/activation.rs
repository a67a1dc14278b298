//! Elementwise activations: ReLU, LeakyReLU(slope), tanh, sigmoid — forward and backward.
//! (GPU counterpart: kernels/activation.cu.)
//!
//! Gradient conventions follow PyTorch: ReLU and LeakyReLU use the slope of the `x > 0` branch
//! only for strictly positive inputs (the gradient at 0 is 0 for ReLU, `slope` for LeakyReLU);
//! tanh and sigmoid differentiate through their output (1 − y², y·(1 − y)).

use crate::backend::Backend;
use crate::error::Result;
use crate::float::Float;
use crate::tape::{BackwardOp, Tape, Var};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu { slope: f32 },
    Tanh,
    Sigmoid,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
        }
    }

    /// y = act(x), elementwise.
    pub fn forward<T: Float>(self, x: &[T]) -> Vec<T> {
        match self {
            Activation::Relu => x
                .iter()
                .map(|&v| if v > T::ZERO { v } else { T::ZERO })
                .collect(),
            Activation::LeakyRelu { slope } => {
                let s = T::from_f64(slope as f64);
                x.iter()
                    .map(|&v| if v > T::ZERO { v } else { v * s })
                    .collect()
            }
            Activation::Tanh => x.iter().map(|&v| v.tanh()).collect(),
            Activation::Sigmoid => x.iter().map(|&v| sigmoid(v)).collect(),
        }
    }

    /// dx from the forward input `x`, output `y` and upstream gradient `gy`.
    pub fn backward<T: Float>(self, x: &[T], y: &[T], gy: &[T]) -> Vec<T> {
        match self {
            Activation::Relu => x
                .iter()
                .zip(gy)
                .map(|(&v, &g)| if v > T::ZERO { g } else { T::ZERO })
                .collect(),
            Activation::LeakyRelu { slope } => {
                let s = T::from_f64(slope as f64);
                x.iter()
                    .zip(gy)
                    .map(|(&v, &g)| if v > T::ZERO { g } else { g * s })
                    .collect()
            }
            Activation::Tanh => y
                .iter()
                .zip(gy)
                .map(|(&o, &g)| g * (T::ONE - o * o))
                .collect(),
            Activation::Sigmoid => y
                .iter()
                .zip(gy)
                .map(|(&o, &g)| g * o * (T::ONE - o))
                .collect(),
        }
    }
}

/// Numerically stable logistic function (no overflow of exp for large |x|).
pub fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

struct ActivationBackward(Activation);

impl<B: Backend> BackwardOp<B> for ActivationBackward {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn backward(
        &self,
        backend: &B,
        inputs: &[&B::Tensor],
        output: &B::Tensor,
        grad_output: &B::Tensor,
        _need: &[bool],
    ) -> Result<Vec<Option<B::Tensor>>> {
        let dx = backend.activation_backward(self.0, inputs[0], output, grad_output)?;
        Ok(vec![Some(dx)])
    }
}

/// Whether `act` can be fused into the op before it: its backward can then be taken from the
/// fused output, because sign(act(x)) = sign(x) (ReLU, and LeakyReLU with a positive slope).
pub fn fusable(act: Activation) -> bool {
    match act {
        Activation::Relu => true,
        Activation::LeakyRelu { slope } => slope > 0.0,
        Activation::Tanh | Activation::Sigmoid => false,
    }
}

/// The backward of an op (`op`) whose output went through a fused activation: act' taken from
/// the output (see [`fusable`]), then `op`'s own backward. Same bits as the two separate ops.
pub(crate) struct WithActivation<Op> {
    pub op: Op,
    pub act: Option<Activation>,
}

impl<B: Backend, Op: BackwardOp<B>> BackwardOp<B> for WithActivation<Op> {
    fn name(&self) -> &'static str {
        self.op.name()
    }
    fn backward(
        &self,
        backend: &B,
        inputs: &[&B::Tensor],
        output: &B::Tensor,
        grad_output: &B::Tensor,
        need: &[bool],
    ) -> Result<Vec<Option<B::Tensor>>> {
        match self.act {
            None => self.op.backward(backend, inputs, output, grad_output, need),
            Some(act) => {
                let g = backend.activation_backward(act, output, output, grad_output)?;
                self.op.backward(backend, inputs, output, &g, need)
            }
        }
    }
}

/// `act` if it can be fused, else an error naming `op`.
pub(crate) fn check_fusable(op: &'static str, act: Option<Activation>) -> Result<()> {
    match act {
        Some(a) if !fusable(a) => Err(crate::error::Error::invalid(
            op,
            format!(
                "{} cannot be fused (only ReLU and LeakyReLU with slope > 0)",
                a.name()
            ),
        )),
        _ => Ok(()),
    }
}

impl<B: Backend> Tape<B> {
    /// y = act(x), any shape.
    pub fn activation(&mut self, x: Var, act: Activation) -> Result<Var> {
        let y = self.backend().activation(self.value(x), act)?;
        self.record(&[x], y, ActivationBackward(act))
    }
    pub fn relu(&mut self, x: Var) -> Result<Var> {
        self.activation(x, Activation::Relu)
    }
    pub fn leaky_relu(&mut self, x: Var, slope: f32) -> Result<Var> {
        self.activation(x, Activation::LeakyRelu { slope })
    }
    pub fn tanh(&mut self, x: Var) -> Result<Var> {
        self.activation(x, Activation::Tanh)
    }
    pub fn sigmoid(&mut self, x: Var) -> Result<Var> {
        self.activation(x, Activation::Sigmoid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{gradcheck, Rng};

    const ALL: [Activation; 4] = [
        Activation::Relu,
        Activation::LeakyRelu { slope: 0.2 },
        Activation::Tanh,
        Activation::Sigmoid,
    ];

    #[test]
    fn gradcheck_all_activations() {
        let mut rng = Rng::new(7);
        for act in ALL {
            // 3×5×7 elements: an awkward size; values spread across both branches.
            let x = rng.uniform_vec(3 * 5 * 7, -3.0, 3.0);
            gradcheck(
                act.name(),
                &[x],
                &[true],
                |inp| act.forward(&inp[0]),
                |inp, gy| {
                    let y = act.forward(&inp[0]);
                    vec![Some(act.backward(&inp[0], &y, gy))]
                },
            );
        }
    }

    #[test]
    fn known_values() {
        let x = [-2.0f64, -0.0, 0.0, 0.5, 40.0, -40.0];
        assert_eq!(
            Activation::Relu.forward(&x),
            vec![0.0, 0.0, 0.0, 0.5, 40.0, 0.0]
        );
        assert_eq!(
            Activation::LeakyRelu { slope: 0.25 }.forward(&x),
            vec![-0.5, 0.0, 0.0, 0.5, 40.0, -10.0]
        );
        let s = Activation::Sigmoid.forward(&x);
        assert!((s[3] - 1.0 / (1.0 + (-0.5f64).exp())).abs() < 1e-15);
        assert!(
            s[4] <= 1.0 && s[5] > 0.0 && s[5] < 1e-17,
            "no overflow at ±40"
        );
        // Gradient at exactly 0: 0 for ReLU, slope for LeakyReLU (PyTorch's convention).
        let g = [1.0f64; 6];
        let y = Activation::Relu.forward(&x);
        assert_eq!(Activation::Relu.backward(&x, &y, &g)[2], 0.0);
        let lr = Activation::LeakyRelu { slope: 0.25 };
        assert_eq!(lr.backward(&x, &lr.forward(&x), &g)[2], 0.25);
    }
}
