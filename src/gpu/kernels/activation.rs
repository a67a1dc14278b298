//! Launches of kernels/activation.cu: ReLU, LeakyReLU, tanh, sigmoid forward and backward,
//! bit-identical to [`crate::ops::activation::Activation`] on the emulator.

use super::{check_len, count, elements, launch};
use crate::gpu::{Buffer, GpuError, Memory};
use crate::ops::activation::Activation;

#[repr(C)]
#[derive(Clone, Copy)]
struct ActivationForwardParams {
    x: u64,
    y: u64,
    n: u32,
    act: i32,
    slope: f32,
    pad: u32,
}
const _: () = assert!(std::mem::size_of::<ActivationForwardParams>() == 32);

#[repr(C)]
#[derive(Clone, Copy)]
struct ActivationBackwardParams {
    x: u64,
    y: u64,
    gy: u64,
    gx: u64,
    n: u32,
    act: i32,
    slope: f32,
    pad: u32,
}
const _: () = assert!(std::mem::size_of::<ActivationBackwardParams>() == 48);

/// The kernel's activation code (GTA_ACT_* in kernels/params.cuh) and slope.
fn code(act: Activation) -> (i32, f32) {
    match act {
        Activation::Relu => (0, 0.0),
        Activation::LeakyRelu { slope } => (1, slope),
        Activation::Tanh => (2, 0.0),
        Activation::Sigmoid => (3, 0.0),
    }
}

/// `y = act(x)`, elementwise.
pub fn forward<M: Memory>(
    exec: &M,
    act: Activation,
    x: &M::Buf<f32>,
    y: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "activation_forward";
    let n = x.len();
    check_len(K, "y", y, n)?;
    let (act, slope) = code(act);
    let p = ActivationForwardParams {
        x: x.device_ptr(),
        y: y.device_ptr(),
        n: count(K, n)?,
        act,
        slope,
        pad: 0,
    };
    // SAFETY: x and y hold n floats (checked); the kernel touches indices < n only.
    unsafe { launch(exec, K, elements(n), &p) }
}

/// `gx = act'(x, y) · gy`, elementwise (`x` the forward input, `y` its output).
pub fn backward<M: Memory>(
    exec: &M,
    act: Activation,
    x: &M::Buf<f32>,
    y: &M::Buf<f32>,
    gy: &M::Buf<f32>,
    gx: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "activation_backward";
    let n = x.len();
    check_len(K, "y", y, n)?;
    check_len(K, "gy", gy, n)?;
    check_len(K, "gx", gx, n)?;
    let (act, slope) = code(act);
    let p = ActivationBackwardParams {
        x: x.device_ptr(),
        y: y.device_ptr(),
        gy: gy.device_ptr(),
        gx: gx.device_ptr(),
        n: count(K, n)?,
        act,
        slope,
        pad: 0,
    };
    // SAFETY: all four buffers hold n floats (checked); indices < n only.
    unsafe { launch(exec, K, elements(n), &p) }
}
