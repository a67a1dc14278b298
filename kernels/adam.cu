// Adam, one step over a flat parameter buffer of n values in one launch. Arithmetic exactly as
// src/ops/adam.rs (PyTorch's single-tensor path, in f32): with host-computed scalars
//   w = 1 − β1, bc2_sqrt = sqrt(1 − β2^t), neg_step_size = −lr/(1 − β1^t)   (f64, rounded once)
//   m = |w| < 0.5 ? fma(w, g − m, m) : fma(w − 1, g − m, g)     (torch.lerp)
//   v = fma((1 − β2)·g, g, v·β2)                                 (addcmul after mul_)
//   p = p + (neg_step_size·m) / (sqrt(v)/bc2_sqrt + eps)
// The explicit fmaf calls are the FMAs the reference has; everything else is rounded per
// operation (__fmul_rn/__fadd_rn keep the GPU compiler from fusing more). sqrtf and `/` are
// IEEE-correct on the GPU (NVRTC/nvcc defaults, no fast-math), so the result is bit-identical.
// adam_step: one tensor; launch 1-D, one thread per value (grid-stride loop, any grid).
// adam_step_multi: every tensor of a network in one launch (a segment table in device memory,
// blockIdx.y = segment, grid-stride over its values in x); the two step-dependent scalars come
// from the launch or, under a schedule, from table[*step · slots + slot] in device memory, so
// a replayed CUDA graph applies the current iteration's learning rate and bias corrections.
#include "common.cuh"

// The update of one value (the arithmetic described above).
__device__ __forceinline__ void gta_adam_value(float* param, const float* grad, float* m_, float* v_,
                                               unsigned long long i, float w, float w_minus_1,
                                               float beta2, float one_minus_beta2, float eps,
                                               float neg_step_size, float bc2_sqrt, unsigned small) {
    const float g = grad[i];
    const float m0 = m_[i];
    const float diff = g - m0;
    const float m = small ? fmaf(w, diff, m0) : fmaf(w_minus_1, diff, g);
    const float v = fmaf(__fmul_rn(one_minus_beta2, g), g, __fmul_rn(v_[i], beta2));
    m_[i] = m;
    v_[i] = v;
    const float denom = __fadd_rn(__fdiv_rn(sqrtf(v), bc2_sqrt), eps);
    param[i] = __fadd_rn(param[i], __fdiv_rn(__fmul_rn(neg_step_size, m), denom));
}

GTA_KERNEL(adam_step, AdamParams) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x)
        gta_adam_value(p.param, p.grad, p.m, p.v, i, p.w, p.w_minus_1, p.beta2, p.one_minus_beta2,
                       p.eps, p.neg_step_size, p.bc2_sqrt, p.small);
}

GTA_KERNEL(adam_step_multi, AdamMultiParams) {
    if (blockIdx.y >= p.n_segments) return;
    const AdamSegment s = p.segments[blockIdx.y];
    float neg_step_size = p.neg_step_size, bc2_sqrt = p.bc2_sqrt;
    if (p.table && *p.step >= p.steps) {
        neg_step_size = GTA_NAN_F;
    } else if (p.table) {
        const AdamStepScalars t = p.table[(unsigned long long)(*p.step) * p.slots + p.slot];
        neg_step_size = t.neg_step_size;
        bc2_sqrt = t.bc2_sqrt;
    }
    for (unsigned long long i = blockIdx.x * blockDim.x + threadIdx.x; i < s.n;
         i += (unsigned long long)gridDim.x * blockDim.x)
        gta_adam_value(s.param, s.grad, s.m, s.v, i, p.w, p.w_minus_1, p.beta2, p.one_minus_beta2,
                       p.eps, neg_step_size, bc2_sqrt, p.small);
}
