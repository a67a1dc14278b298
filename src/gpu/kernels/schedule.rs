//! Launch of kernels/schedule.cu: moves a schedule's device cursor to the next iteration (the
//! last launch of a scheduled iteration; see src/backend/gpu.rs).

use super::{check_len, launch};
use crate::gpu::{Buffer, GpuError, LaunchConfig, Memory};

#[repr(C)]
#[derive(Clone, Copy)]
struct ScheduleAdvanceParams {
    step: u64,
    by: u32,
    pad: u32,
}
const _: () = assert!(std::mem::size_of::<ScheduleAdvanceParams>() == 16);

/// `*step += by` on the device.
pub fn advance<M: Memory>(exec: &M, step: &mut M::Buf<u32>, by: u32) -> Result<(), GpuError> {
    const K: &str = "schedule_advance";
    check_len(K, "step", step, 1)?;
    let p = ScheduleAdvanceParams {
        step: step.device_ptr(),
        by,
        pad: 0,
    };
    // SAFETY: step holds one value, the only one the single thread writes.
    unsafe { launch(exec, K, LaunchConfig::linear(1, 1), &p) }
}
