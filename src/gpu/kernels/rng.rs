//! Launch of kernels/rng.cu: Philox-4x32-10 standard normal noise, the same numbers as
//! [`crate::rng::normal`] (bit-identical on the emulator; on a GPU checked by
//! scripts/gpu-check.sh, see the kernel's comment).

use super::{count, elements, launch};
use crate::gpu::{Buffer, GpuError, Memory};

#[repr(C)]
#[derive(Clone, Copy)]
struct NormalParams {
    out: u64,
    seed: u64,
    stream: u64,
    offset: u64,
    n: u32,
    pad: u32,
}
const _: () = assert!(std::mem::size_of::<NormalParams>() == 40);

/// `out[i]` = the normal number at position `offset + i` of (`seed`, `stream`).
pub fn normal<M: Memory>(
    exec: &M,
    seed: u64,
    stream: u64,
    offset: u64,
    out: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "normal_f32";
    let n = out.len();
    let p = NormalParams {
        out: out.device_ptr(),
        seed,
        stream,
        offset,
        n: count(K, n)?,
        pad: 0,
    };
    // SAFETY: out holds n floats; the kernel writes indices < n only.
    unsafe { launch(exec, K, elements(n), &p) }
}
