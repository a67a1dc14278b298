// Activations, forward and backward, elementwise over n floats (src/ops/activation.rs is the
// CPU reference; the same conventions bit for bit):
//   ReLU         y = x > 0 ? x : 0           dx = x > 0 ? g : 0        (gradient 0 at x = 0)
//   LeakyReLU(s) y = x > 0 ? x : x·s         dx = x > 0 ? g : g·s      (slope s at x = 0)
//   tanh         y = tanhf(x)                dx = g·(1 − y·y)          (from the output)
//   sigmoid      y = 1/(1+e^−x) for x ≥ 0,   dx = (g·y)·(1 − y)        (from the output)
//                    e^x/(1+e^x) for x < 0 (stable form, no overflow)
// Products feeding a sum use __fmul_rn/__fsub_rn so the GPU compiler cannot fuse them into an
// FMA (the CPU reference rounds each operation). On the emulator expf/tanhf are the host's libm,
// as in Rust, so results are bit-identical; on a GPU CUDA's expf/tanhf may differ by an ulp.
// Launch: 1-D, one thread per element (grid-stride loop, any grid).
#include "common.cuh"

__device__ __forceinline__ float gta_sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}

GTA_KERNEL(activation_forward, ActivationForwardParams) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x) {
        const float x = p.x[i];
        float y;
        switch (p.act) {
        case GTA_ACT_RELU: y = x > 0.0f ? x : 0.0f; break;
        case GTA_ACT_LEAKY_RELU: y = x > 0.0f ? x : x * p.slope; break;
        case GTA_ACT_TANH: y = tanhf(x); break;
        case GTA_ACT_SIGMOID: y = gta_sigmoid(x); break;
        default: y = GTA_NAN_F; break; // unknown code: NaN, never silent
        }
        p.y[i] = y;
    }
}

GTA_KERNEL(activation_backward, ActivationBackwardParams) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x) {
        const float g = p.gy[i];
        float d;
        switch (p.act) {
        case GTA_ACT_RELU: d = p.x[i] > 0.0f ? g : 0.0f; break;
        case GTA_ACT_LEAKY_RELU: d = p.x[i] > 0.0f ? g : g * p.slope; break;
        case GTA_ACT_TANH: {
            const float o = p.y[i];
            d = g * __fsub_rn(1.0f, __fmul_rn(o, o));
            break;
        }
        case GTA_ACT_SIGMOID: {
            const float o = p.y[i];
            d = g * o * (1.0f - o);
            break;
        }
        default: d = GTA_NAN_F; break;
        }
        p.gx[i] = d;
    }
}
