//! Launches of kernels/pool.cu: max pooling with kernel = stride = k (no padding, floor mode),
//! forward with the plane-relative argmax, and its backward. Bit-identical to
//! [`crate::ops::pool`] (values, argmax and its tie rule, the backward's zeros).

use super::{check_len, count, elements, invalid, launch};
use crate::gpu::{Buffer, GpuError, Memory};

#[repr(C)]
#[derive(Clone, Copy)]
struct MaxPoolForwardParams {
    x: u64,
    y: u64,
    argmax: u64,
    planes: u32,
    h: u32,
    w: u32,
    k: u32,
    ho: u32,
    wo: u32,
}
const _: () = assert!(std::mem::size_of::<MaxPoolForwardParams>() == 48);

#[repr(C)]
#[derive(Clone, Copy)]
struct MaxPoolBackwardParams {
    gy: u64,
    argmax: u64,
    gx: u64,
    planes: u32,
    h: u32,
    w: u32,
    k: u32,
    ho: u32,
    wo: u32,
}
const _: () = assert!(std::mem::size_of::<MaxPoolBackwardParams>() == 48);

/// The output dims `[N, C, H/k, W/k]` of `MaxPool2d(k)` on `x_dims` (as
/// [`crate::ops::pool::max_pool2d_dims`]): errors for k = 0, a kernel larger than the plane, or
/// an input with 2^32 elements or more.
pub fn output_dims(x_dims: [usize; 4], k: usize) -> Result<[usize; 4], GpuError> {
    dims_for("max_pool_forward", x_dims, k)
}

fn dims_for(kernel: &str, x_dims: [usize; 4], k: usize) -> Result<[usize; 4], GpuError> {
    let [n, c, h, w] = x_dims;
    if k == 0 {
        return Err(invalid(kernel, "kernel size must be ≥ 1, got 0"));
    }
    if k > h || k > w {
        return Err(invalid(
            kernel,
            format!("kernel {k} is larger than the input plane {h}×{w} (dims {x_dims:?})"),
        ));
    }
    let total = x_dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| invalid(kernel, format!("dims {x_dims:?} overflow")))?;
    count(kernel, total)?;
    Ok([n, c, h / k, w / k])
}

/// The shape fields shared by both kernels.
fn shape(
    kernel: &str,
    x_dims: [usize; 4],
    k: usize,
) -> Result<([usize; 4], [u32; 6], usize, usize), GpuError> {
    let y_dims = dims_for(kernel, x_dims, k)?;
    let [n, c, h, w] = x_dims;
    let x_total = n * c * h * w;
    let y_total = n * c * y_dims[2] * y_dims[3];
    // Every value below is ≤ x_total < 2^32 (checked).
    let f = [
        (n * c) as u32,
        h as u32,
        w as u32,
        k as u32,
        y_dims[2] as u32,
        y_dims[3] as u32,
    ];
    Ok((y_dims, f, x_total, y_total))
}

/// `y` = the maximum of each k×k window of `x` ([N, C, H, W]), `argmax` = its plane index
/// `ih·W + iw` (ties: the first in row-major window order; NaN propagates). y and argmax
/// have `N·C·(H/k)·(W/k)` elements.
pub fn forward<M: Memory>(
    exec: &M,
    x_dims: [usize; 4],
    k: usize,
    x: &M::Buf<f32>,
    y: &mut M::Buf<f32>,
    argmax: &mut M::Buf<u32>,
) -> Result<(), GpuError> {
    const K: &str = "max_pool_forward";
    let (_, [planes, h, w, k, ho, wo], x_total, y_total) = shape(K, x_dims, k)?;
    check_len(K, "x", x, x_total)?;
    check_len(K, "y", y, y_total)?;
    check_len(K, "argmax", argmax, y_total)?;
    let p = MaxPoolForwardParams {
        x: x.device_ptr(),
        y: y.device_ptr(),
        argmax: argmax.device_ptr(),
        planes,
        h,
        w,
        k,
        ho,
        wo,
    };
    // SAFETY: x holds planes·h·w floats, y and argmax planes·ho·wo values (checked); output o
    // reads its window, rows < ho·k ≤ h and columns < wo·k ≤ w of its plane.
    unsafe { launch(exec, K, elements(y_total), &p) }
}

/// `gx` ([N, C, H, W], every element written) from `gy` and the forward's `argmax`: each
/// input that is its window's argmax gets that window's gradient, every other input 0.
pub fn backward<M: Memory>(
    exec: &M,
    x_dims: [usize; 4],
    k: usize,
    gy: &M::Buf<f32>,
    argmax: &M::Buf<u32>,
    gx: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "max_pool_backward";
    let (_, [planes, h, w, k, ho, wo], x_total, y_total) = shape(K, x_dims, k)?;
    check_len(K, "gy", gy, y_total)?;
    check_len(K, "argmax", argmax, y_total)?;
    check_len(K, "gx", gx, x_total)?;
    let p = MaxPoolBackwardParams {
        gy: gy.device_ptr(),
        argmax: argmax.device_ptr(),
        gx: gx.device_ptr(),
        planes,
        h,
        w,
        k,
        ho,
        wo,
    };
    // SAFETY: gx holds planes·h·w floats, gy and argmax planes·ho·wo values (checked); input
    // i reads the gy/argmax of its own window only (oh < ho, ow < wo checked in the kernel);
    // argmax values are compared, never used as addresses.
    unsafe { launch(exec, K, elements(x_total), &p) }
}
