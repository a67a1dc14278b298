//! Launches of kernels/elementwise.cu: fill, copy, scale, axpy over f32 buffers.

use super::{check_len, count, elements, launch};
use crate::gpu::{Buffer, GpuError, Memory};

#[repr(C)]
#[derive(Clone, Copy)]
struct FillParams {
    y: u64,
    value: f32,
    n: u32,
}
const _: () = assert!(std::mem::size_of::<FillParams>() == 16);

#[repr(C)]
#[derive(Clone, Copy)]
struct CopyParams {
    x: u64,
    y: u64,
    n: u32,
    pad: u32,
}
const _: () = assert!(std::mem::size_of::<CopyParams>() == 24);

/// Also the layout of `AxpyParams`.
#[repr(C)]
#[derive(Clone, Copy)]
struct ScaleParams {
    x: u64,
    y: u64,
    a: f32,
    n: u32,
}
const _: () = assert!(std::mem::size_of::<ScaleParams>() == 24);

/// Every element of `y` set to `value`.
pub fn fill<M: Memory>(exec: &M, y: &mut M::Buf<f32>, value: f32) -> Result<(), GpuError> {
    const K: &str = "fill_f32";
    let n = y.len();
    let p = FillParams {
        y: y.device_ptr(),
        value,
        n: count(K, n)?,
    };
    // SAFETY: y holds n floats; the kernel writes indices < n only.
    unsafe { launch(exec, K, elements(n), &p) }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct FillU32Params {
    y: u64,
    value: u32,
    n: u32,
}
const _: () = assert!(std::mem::size_of::<FillU32Params>() == 16);

/// Every element of `y` (labels) set to `value`.
pub fn fill_u32<M: Memory>(exec: &M, y: &mut M::Buf<u32>, value: u32) -> Result<(), GpuError> {
    const K: &str = "fill_u32";
    let n = y.len();
    let p = FillU32Params {
        y: y.device_ptr(),
        value,
        n: count(K, n)?,
    };
    // SAFETY: y holds n values; the kernel writes indices < n only.
    unsafe { launch(exec, K, elements(n), &p) }
}

/// One buffer of a [`copy_segments`] launch (mirrors `CopySegment` in kernels/params.cuh).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CopySegment {
    pub src: u64,
    pub dst: u64,
    pub n: u64,
}
const _: () = assert!(std::mem::size_of::<CopySegment>() == 24);
// SAFETY: three u64 fields, no padding; all-zero is a valid value.
unsafe impl crate::gpu::DeviceRepr for CopySegment {}

#[repr(C)]
#[derive(Clone, Copy)]
struct CopySegmentsParams {
    segments: u64,
    n_segments: u32,
    pad: u32,
}
const _: () = assert!(std::mem::size_of::<CopySegmentsParams>() == 16);

/// `dst = src` for every segment of `segments` (a table in device memory), in one launch;
/// `max_n` is the largest segment.
///
/// # Safety
/// Every segment addresses live allocations of this executor holding at least `n` floats at
/// `src` and at `dst`, the destinations distinct from each other and from every source, and
/// nothing else accesses them during the launch.
pub unsafe fn copy_segments<M: Memory>(
    exec: &M,
    segments: &M::Buf<CopySegment>,
    max_n: usize,
) -> Result<(), GpuError> {
    const K: &str = "copy_segments";
    let n_segments = segments.len();
    if n_segments == 0 {
        return Ok(());
    }
    if n_segments > 65_535 {
        return Err(super::invalid(
            K,
            format!("{n_segments} segments (at most 65535)"),
        ));
    }
    let p = CopySegmentsParams {
        segments: segments.device_ptr(),
        n_segments: n_segments as u32,
        pad: 0,
    };
    let cfg = crate::gpu::LaunchConfig {
        grid: [elements(max_n).grid[0], n_segments as u32, 1],
        block: [super::THREADS, 1, 1],
        dynamic_smem: 0,
    };
    // SAFETY: per this function's contract; block y touches segment y < n_segments only.
    unsafe { launch(exec, K, cfg, &p) }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct AddParams {
    a: u64,
    b: u64,
    y: u64,
    n: u32,
    pad: u32,
}
const _: () = assert!(std::mem::size_of::<AddParams>() == 32);

/// `y = a + b` elementwise (equal lengths), rounded once as the CPU's `a + b`.
pub fn add<M: Memory>(
    exec: &M,
    a: &M::Buf<f32>,
    b: &M::Buf<f32>,
    y: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "add_f32";
    let n = a.len();
    check_len(K, "b", b, n)?;
    check_len(K, "y", y, n)?;
    let p = AddParams {
        a: a.device_ptr(),
        b: b.device_ptr(),
        y: y.device_ptr(),
        n: count(K, n)?,
        pad: 0,
    };
    // SAFETY: a, b and y hold n floats (checked); indices < n only.
    unsafe { launch(exec, K, elements(n), &p) }
}

/// `y = x` (equal lengths).
pub fn copy<M: Memory>(exec: &M, x: &M::Buf<f32>, y: &mut M::Buf<f32>) -> Result<(), GpuError> {
    const K: &str = "copy_f32";
    let n = x.len();
    check_len(K, "y", y, n)?;
    let p = CopyParams {
        x: x.device_ptr(),
        y: y.device_ptr(),
        n: count(K, n)?,
        pad: 0,
    };
    // SAFETY: x and y hold n floats (checked); indices < n only.
    unsafe { launch(exec, K, elements(n), &p) }
}

fn scale_like(kernel: &str, x: u64, y: u64, a: f32, n: usize) -> Result<ScaleParams, GpuError> {
    Ok(ScaleParams {
        x,
        y,
        a,
        n: count(kernel, n)?,
    })
}

/// `y = a·x` (equal lengths).
pub fn scale<M: Memory>(
    exec: &M,
    a: f32,
    x: &M::Buf<f32>,
    y: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "scale_f32";
    check_len(K, "y", y, x.len())?;
    let p = scale_like(K, x.device_ptr(), y.device_ptr(), a, x.len())?;
    // SAFETY: x and y hold n floats (checked); indices < n only.
    unsafe { launch(exec, K, elements(x.len()), &p) }
}

/// `y = a·y`, in place.
pub fn scale_in_place<M: Memory>(exec: &M, a: f32, y: &mut M::Buf<f32>) -> Result<(), GpuError> {
    const K: &str = "scale_f32";
    let p = scale_like(K, y.device_ptr(), y.device_ptr(), a, y.len())?;
    // SAFETY: y holds n floats; each thread reads then writes its own element only.
    unsafe { launch(exec, K, elements(y.len()), &p) }
}

/// `y += a·x` (the product rounded, then the sum: equal to the CPU's `y + a * x`).
pub fn axpy<M: Memory>(
    exec: &M,
    a: f32,
    x: &M::Buf<f32>,
    y: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "axpy_f32";
    check_len(K, "y", y, x.len())?;
    let p = scale_like(K, x.device_ptr(), y.device_ptr(), a, x.len())?;
    // SAFETY: x and y hold n floats (checked); indices < n only.
    unsafe { launch(exec, K, elements(x.len()), &p) }
}
