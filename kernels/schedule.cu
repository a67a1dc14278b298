// The device cursor of a schedule (src/backend/gpu.rs): the index of the current iteration in
// the per-iteration tables (batch rows, noise offsets, Adam scalars) that an epoch's schedule
// keeps in device memory. The kernels that read those tables index them with *step, and this
// kernel, the last launch of a scheduled iteration, moves it on: so a captured CUDA graph of
// one iteration, replayed, runs the next iteration, with no host write in between.
// Launch: one thread.
#include "common.cuh"

GTA_KERNEL(schedule_advance, ScheduleAdvanceParams) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *p.step += p.by;
}
