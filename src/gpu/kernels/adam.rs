//! Launch of kernels/adam.cu: one Adam step over a flat parameter buffer, bit-identical to
//! [`crate::ops::adam::adam_step`] (its scalars come from the same
//! [`crate::ops::adam::AdamScalars`]).

use super::{check_len, count, elements, invalid, launch};
use crate::gpu::{Buffer, GpuError, Memory};
use crate::ops::adam::{AdamConfig, AdamScalars};

#[repr(C)]
#[derive(Clone, Copy)]
struct AdamParams {
    param: u64,
    grad: u64,
    m: u64,
    v: u64,
    w: f32,
    w_minus_1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bc2_sqrt: f32,
    eps: f32,
    neg_step_size: f32,
    small: u32,
    n: u32,
    pad: u32,
}
const _: () = assert!(std::mem::size_of::<AdamParams>() == 72);

/// Adam step number `step` (from 1) over `param`, with moments `m`, `v` (equal lengths).
pub fn step<M: Memory>(
    exec: &M,
    param: &mut M::Buf<f32>,
    grad: &M::Buf<f32>,
    m: &mut M::Buf<f32>,
    v: &mut M::Buf<f32>,
    step: u64,
    cfg: &AdamConfig,
) -> Result<(), GpuError> {
    const K: &str = "adam_step";
    let n = param.len();
    check_len(K, "grad", grad, n)?;
    check_len(K, "m", m, n)?;
    check_len(K, "v", v, n)?;
    if step == 0 {
        return Err(invalid(K, "step counts from 1"));
    }
    cfg.validate().map_err(|e| invalid(K, e.to_string()))?;
    let s = AdamScalars::<f32>::new(step, cfg);
    let p = AdamParams {
        param: param.device_ptr(),
        grad: grad.device_ptr(),
        m: m.device_ptr(),
        v: v.device_ptr(),
        w: s.w,
        w_minus_1: s.w_minus_1,
        beta2: s.beta2,
        one_minus_beta2: s.one_minus_beta2,
        bc2_sqrt: s.bc2_sqrt,
        eps: s.eps,
        neg_step_size: s.neg_step_size,
        small: s.small as u32,
        n: count(K, n)?,
        pad: 0,
    };
    // SAFETY: all four buffers hold n floats (checked); thread i touches element i only.
    unsafe { launch(exec, K, elements(n), &p) }
}
