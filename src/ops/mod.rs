//! The operations, one file per op family (mirroring kernels/<family>.cu later).
//!
//! Each family file holds, in this order:
//! 1. the parameters and shape math,
//! 2. the CPU reference forward and backward, generic over [`Float`](crate::float::Float)
//!    so the gradient checks run in f64 while training runs in f32,
//! 3. the tape registration (`impl Tape { pub fn op(...) }` plus a `BackwardOp`),
//! 4. its unit tests (finite-difference gradient checks on awkward sizes).
//!
//! PyTorch parity for every op lives in tests/torch_parity.rs (fixtures in tests/fixtures/).

pub mod activation;
pub mod adam;
pub mod batchnorm;
pub mod conv;
pub mod layout;
pub mod linear;
pub mod loss;
pub mod pool;

#[cfg(test)]
pub(crate) mod testing;

/// Gradients of a layer with an input, a weight and an optional bias; each is `None` when it
/// was not requested.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerGrads<T> {
    pub dx: Option<Vec<T>>,
    pub dw: Option<Vec<T>>,
    pub db: Option<Vec<T>>,
}
