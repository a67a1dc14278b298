// Deterministic sum: out[0] = (Σ x[i], i < n) / divisor, in a FIXED order, so the same input
// always gives the same bits (no floating-point atomics anywhere):
//   thread t (of exactly GTA_REDUCE_THREADS) adds x[t], x[t + T], x[t + 2T], ... in order;
//   then a shared-memory halving tree: s[t] += s[t + h] for h = T/2, T/4, ..., 1.
// The order differs from the CPU's sequential sum, so the two agree to rounding, not bits.
// Launch: exactly ONE block of GTA_REDUCE_THREADS threads; any other shape writes NaN (a launch
// with another shape must not silently sum in another order). Used by the losses (loss.cu).
#include "common.cuh"

GTA_KERNEL(sum_f32, SumParams) {
    __shared__ float s[GTA_REDUCE_THREADS];
    if (blockDim.x != GTA_REDUCE_THREADS || blockDim.y != 1 || blockDim.z != 1 ||
        gridDim.x != 1 || gridDim.y != 1 || gridDim.z != 1) {
        if (threadIdx.x == 0 && blockIdx.x == 0) p.out[0] = GTA_NAN_F;
        return;
    }
    const unsigned t = threadIdx.x;
    float acc = 0.0f;
    for (unsigned i = t; i < p.n; i += GTA_REDUCE_THREADS) acc += p.x[i];
    s[t] = acc;
    __syncthreads();
    for (unsigned h = GTA_REDUCE_THREADS / 2; h > 0; h >>= 1) {
        if (t < h) s[t] += s[t + h];
        __syncthreads();
    }
    if (t == 0) p.out[0] = s[0] / p.divisor;
}
