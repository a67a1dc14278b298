//! Launch functions for the kernels of kernels/*.cu, one module per op family (mirroring
//! kernels/<family>.cu), one function per kernel. Each takes an executor `M: Memory` (the
//! emulator or the CUDA executor) and that executor's buffers (`M::Buf`: an emulator buffer
//! cannot be passed to a CUDA launch, nor the reverse), checks every length the kernel relies
//! on, fills the kernel's `#[repr(C)]` parameter struct (mirrored in kernels/params.cuh, sizes
//! asserted at compile time here and there, and at launch time against the executor's view)
//! and launches.
//!
//! Soundness of every launch here: the kernel's accesses are bounded by the counts in its
//! parameter struct, which are derived from (and checked against) the lengths of the buffers
//! whose addresses it receives; outputs are `&mut` borrows, so no other launch or host access
//! touches them meanwhile; launches are synchronous. Data-dependent indices (labels, dataset
//! rows) are range-checked in the kernels (an invalid one yields NaN, never an out-of-bounds
//! access).

pub mod activation;
pub mod adam;
pub mod batchnorm;
pub mod conv;
pub mod data;
pub mod elementwise;
pub mod layout;
pub mod linear;
pub mod loss;
pub mod pool;
pub mod rng;
pub mod schedule;
pub mod selftest;

use super::{Buffer, DeviceRepr, GpuError, LaunchConfig};

/// Threads per block of the elementwise launches.
pub const THREADS: u32 = 256;

/// Threads of the single-block reductions (`GTA_REDUCE_THREADS` in kernels/params.cuh).
pub const REDUCE_THREADS: u32 = 256;

/// At most this many blocks per elementwise launch; the kernels loop (grid-stride) over the
/// rest.
const MAX_BLOCKS: usize = 1 << 16;

/// A 1-D launch for `n` elements, one thread each (up to [`MAX_BLOCKS`] blocks).
pub(crate) fn elements(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS);
    LaunchConfig::linear(blocks as u32, THREADS)
}

pub(crate) use super::launch_params as launch;

pub(crate) fn invalid(kernel: &str, reason: impl Into<String>) -> GpuError {
    GpuError::InvalidLaunch {
        kernel: kernel.to_string(),
        reason: reason.into(),
    }
}

/// `buf` holds exactly `len` elements.
pub(crate) fn check_len<T: DeviceRepr, B: Buffer<T> + ?Sized>(
    kernel: &str,
    what: &str,
    buf: &B,
    len: usize,
) -> Result<(), GpuError> {
    if buf.len() == len {
        Ok(())
    } else {
        Err(invalid(
            kernel,
            format!("{what} holds {} values, expected {len}", buf.len()),
        ))
    }
}

/// `n` as the kernels' 32-bit count.
pub(crate) fn count(kernel: &str, n: usize) -> Result<u32, GpuError> {
    u32::try_from(n).map_err(|_| invalid(kernel, format!("{n} elements exceed 2^32 − 1")))
}
