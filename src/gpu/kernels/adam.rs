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

/// One parameter tensor of an [`step_multi`] launch: device addresses of the parameter, its
/// gradient and moments, and its length (mirrors `AdamSegment` in kernels/params.cuh).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AdamSegment {
    pub param: u64,
    pub grad: u64,
    pub m: u64,
    pub v: u64,
    pub n: u64,
}
const _: () = assert!(std::mem::size_of::<AdamSegment>() == 40);
// SAFETY: five u64 fields, no padding; all-zero is a valid value.
unsafe impl crate::gpu::DeviceRepr for AdamSegment {}

/// The two scalars of a step that change with the step count and the learning rate (mirrors
/// `AdamStepScalars`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct AdamStepScalars {
    pub neg_step_size: f32,
    pub bc2_sqrt: f32,
}
const _: () = assert!(std::mem::size_of::<AdamStepScalars>() == 8);
// SAFETY: two f32 fields, no padding; all-zero is a valid value.
unsafe impl crate::gpu::DeviceRepr for AdamStepScalars {}

impl AdamStepScalars {
    pub fn of(s: &AdamScalars<f32>) -> Self {
        AdamStepScalars {
            neg_step_size: s.neg_step_size,
            bc2_sqrt: s.bc2_sqrt,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct AdamMultiParams {
    segments: u64,
    table: u64,
    step: u64,
    w: f32,
    w_minus_1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    neg_step_size: f32,
    bc2_sqrt: f32,
    small: u32,
    slots: u32,
    slot: u32,
    n_segments: u32,
    steps: u32,
}
const _: () = assert!(std::mem::size_of::<AdamMultiParams>() == 72);

/// Where [`step_multi`] takes its step scalars: computed now, or from a schedule's table
/// (`[steps][slots]` scalars in device memory) at row `*step` (the device cursor) and column
/// `slot`.
pub enum StepScalars<'a, M: Memory> {
    Now(AdamScalars<f32>),
    Scheduled {
        /// The scalars every row shares (β, ε: from the configuration).
        fixed: AdamScalars<f32>,
        table: &'a M::Buf<AdamStepScalars>,
        slots: usize,
        slot: usize,
        step: &'a M::Buf<u32>,
    },
}

/// One Adam step of every tensor described by `segments` (a table in device memory) in one
/// launch. `segments` must describe buffers of this executor, each segment's four buffers
/// holding `n` floats: the caller builds it from live buffers (see
/// [`crate::backend::gpu::Gpu`]) and `max_n` is the largest `n`.
///
/// # Safety
/// Every segment of `segments` addresses four live allocations of at least `n` floats each,
/// not accessed by anything else during the launch, and `param`, `m`, `v` of different
/// segments do not overlap.
pub unsafe fn step_multi<M: Memory>(
    exec: &M,
    segments: &M::Buf<AdamSegment>,
    max_n: usize,
    scalars: StepScalars<'_, M>,
) -> Result<(), GpuError> {
    const K: &str = "adam_step_multi";
    let n_segments = segments.len();
    if n_segments == 0 {
        return Ok(());
    }
    if n_segments > 65_535 {
        return Err(invalid(K, format!("{n_segments} segments (at most 65535)")));
    }
    let (s, table, step, slots, slot, steps) = match scalars {
        StepScalars::Now(s) => (s, 0, 0, 0, 0, 0),
        StepScalars::Scheduled {
            fixed,
            table,
            slots,
            slot,
            step,
        } => {
            check_len(K, "step", step, 1)?;
            if slot >= slots || table.len() % slots.max(1) != 0 {
                return Err(invalid(
                    K,
                    format!("slot {slot} of {slots} in a table of {}", table.len()),
                ));
            }
            let steps = table.len() / slots;
            (
                fixed,
                table.device_ptr(),
                step.device_ptr(),
                count(K, slots)?,
                count(K, slot)?,
                count(K, steps)?,
            )
        }
    };
    let p = AdamMultiParams {
        segments: segments.device_ptr(),
        table,
        step,
        w: s.w,
        w_minus_1: s.w_minus_1,
        beta2: s.beta2,
        one_minus_beta2: s.one_minus_beta2,
        eps: s.eps,
        neg_step_size: s.neg_step_size,
        bc2_sqrt: s.bc2_sqrt,
        small: s.small as u32,
        slots,
        slot,
        n_segments: n_segments as u32,
        steps,
    };
    let blocks = elements(max_n).grid[0];
    let cfg = crate::gpu::LaunchConfig {
        grid: [blocks, n_segments as u32, 1],
        block: [super::THREADS, 1, 1],
        dynamic_smem: 0,
    };
    // SAFETY: the segments' buffers are valid per this function's contract; block y reads
    // segment y < n_segments; the table row is read only for *step < steps (kernel check).
    unsafe { launch(exec, K, cfg, &p) }
}
