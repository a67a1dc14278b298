//! gtadapt — Generate To Adapt (GTA) domain adaptation, a from-scratch training engine.
//!
//! Where is what:
//! - [`tensor`], [`shape`], [`error`]: host tensors (f32, NCHW), shapes, typed errors.
//! - [`float`]: the scalar trait of the CPU reference ops (f32 for training, f64 for checks)
//!   and the GEMM they use.
//! - [`ops`]: one module per op family — CPU reference forward/backward and tape registration.
//! - [`tape`]: the autograd tape.
//! - [`rng`]: Philox-4x32-10 counter-based random numbers (same draws on CPU and GPU).
//! - [`device`]: which backends this machine can run (CUDA driver detection).
//! - [`gpu`]: the kernel launch ABI and its executors (the CPU SIMT emulator of kernels/emu/).
//! - [`nn`], [`models`]: layers over named parameters (PyTorch `state_dict` keys) and the GTA
//!   networks F1, C1, F2, C2, G, D, G4, D_src, D_tgt.
//! - [`gta`]: the four-network iteration, exp3's variant, source-only.
//! - [`train`]: a training run — epochs, evaluation, metrics, checkpoints, resume.
//! - [`checkpoint`]: safetensors checkpoints, atomic writes.
//! - [`report`]: accuracy plots and image grids (PNG).
//! - [`data`]: datasets — memory-mapped IDX files, MNIST/SVHN fetch and import, the embedded
//!   default pair (`embedded-mnist`, `embedded-mnistm`), batching.

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod float;
pub mod gpu;
pub mod gta;
pub mod health;
pub mod models;
pub mod nn;
pub mod ops;
pub mod report;
pub mod rng;
pub mod shape;
pub mod signal;
pub mod tape;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use shape::Shape;
pub use tape::{Tape, Var};
pub use tensor::Tensor;
