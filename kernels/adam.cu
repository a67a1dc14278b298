// Adam, one step over a flat parameter buffer of n values in one launch. Arithmetic exactly as
// src/ops/adam.rs (PyTorch's single-tensor path, in f32): with host-computed scalars
//   w = 1 − β1, bc2_sqrt = sqrt(1 − β2^t), neg_step_size = −lr/(1 − β1^t)   (f64, rounded once)
//   m = |w| < 0.5 ? fma(w, g − m, m) : fma(w − 1, g − m, g)     (torch.lerp)
//   v = fma((1 − β2)·g, g, v·β2)                                 (addcmul after mul_)
//   p = p + (neg_step_size·m) / (sqrt(v)/bc2_sqrt + eps)
// The explicit fmaf calls are the FMAs the reference has; everything else is rounded per
// operation (__fmul_rn/__fadd_rn keep the GPU compiler from fusing more). sqrtf and `/` are
// IEEE-correct on the GPU (NVRTC/nvcc defaults, no fast-math), so the result is bit-identical.
// Launch: 1-D, one thread per value (grid-stride loop, any grid).
#include "common.cuh"

GTA_KERNEL(adam_step, AdamParams) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x) {
        const float g = p.grad[i];
        const float m0 = p.m[i];
        const float diff = g - m0;
        const float m = p.small ? fmaf(p.w, diff, m0) : fmaf(p.w_minus_1, diff, g);
        const float v = fmaf(__fmul_rn(p.one_minus_beta2, g), g, __fmul_rn(p.v[i], p.beta2));
        p.m[i] = m;
        p.v[i] = v;
        const float denom = __fadd_rn(__fdiv_rn(sqrtf(v), p.bc2_sqrt), p.eps);
        p.param[i] = __fadd_rn(p.param[i], __fdiv_rn(__fmul_rn(p.neg_step_size, m), denom));
    }
}
