//! Launch of kernels/rng.cu: Philox-4x32-10 standard normal noise, the same numbers as
//! [`crate::rng::normal`] (bit-identical on the emulator; on a GPU checked by
//! scripts/gpu-check.sh, see the kernel's comment).

use super::{check_len, count, elements, launch};
use crate::gpu::{Buffer, GpuError, Memory};

#[repr(C)]
#[derive(Clone, Copy)]
struct NormalParams {
    out: u64,
    seed: u64,
    stream: u64,
    offset: u64,
    offsets: u64,
    step: u64,
    n: u32,
    steps: u32,
}
const _: () = assert!(std::mem::size_of::<NormalParams>() == 56);

/// `out[i]` = the normal number at position `offset + i` of (`seed`, `stream`).
pub fn normal<M: Memory>(
    exec: &M,
    seed: u64,
    stream: u64,
    offset: u64,
    out: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    normal_scheduled(exec, seed, stream, offset, None, out)
}

/// A schedule's noise offsets and its device cursor.
pub type OffsetTable<'a, M> = (&'a <M as Memory>::Buf<u64>, &'a <M as Memory>::Buf<u32>);

/// [`normal`] at position `offset + offsets[s] + i`, `s` the value of the device cursor `step`
/// when the kernel runs (a schedule: the offsets of every iteration of an epoch in device
/// memory; a cursor past the table gives NaN). `None`: plain [`normal`].
pub fn normal_scheduled<M: Memory>(
    exec: &M,
    seed: u64,
    stream: u64,
    offset: u64,
    schedule: Option<OffsetTable<'_, M>>,
    out: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "normal_f32";
    let n = out.len();
    let (offsets, step, steps) = match schedule {
        Some((offsets, step)) => {
            check_len(K, "step", step, 1)?;
            (
                offsets.device_ptr(),
                step.device_ptr(),
                count(K, offsets.len())?,
            )
        }
        None => (0, 0, 0),
    };
    let p = NormalParams {
        out: out.device_ptr(),
        seed,
        stream,
        offset,
        offsets,
        step,
        n: count(K, n)?,
        steps,
    };
    // SAFETY: out holds n floats; the kernel writes indices < n only, and reads offsets[s]
    // only for s = *step < steps (checked in the kernel).
    unsafe { launch(exec, K, elements(n), &p) }
}
