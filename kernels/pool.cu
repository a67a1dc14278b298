// Max pooling with kernel = stride = k, no padding, floor mode (PyTorch's MaxPool2d(k));
// src/ops/pool.rs is the CPU reference, matched bit for bit (values and argmax):
//
//   max_pool_forward    y[o] = the maximum of window o, argmax[o] = its plane-relative input
//                       index ih·w + iw. The window is scanned in row-major order starting from
//                       its first element; a value replaces the running maximum only when it is
//                       strictly greater, or NaN (ties → the first; a NaN propagates and the
//                       last NaN wins, as PyTorch's CPU kernel).
//                       Launch: 1-D, one thread per output element (grid-stride).
//   max_pool_backward   gx[i] = 0 + gy[o] when input i lies in window o and argmax[o] == i's
//                       plane index, else 0 (every element written; the rows/columns past the
//                       last full window get 0). A gather, so no atomics: each input belongs to
//                       at most one window. (The CPU scatters by argmax, which for any argmax
//                       the forward produced, one index inside each window, is the same; an
//                       argmax outside its window contributes nothing here.) `0 + g` as the
//                       CPU's `0 += g`: a −0 gradient becomes +0 on both.
//                       Launch: 1-D, one thread per input element (grid-stride).
// Cost: forward reads each input once (k² per output) and writes 8 bytes per output, k²−1
// comparisons; backward reads 8 bytes per input (cached: k² inputs share them) and writes 4.
// Memory-bound; no FLOP to speak of.
#include "common.cuh"

GTA_KERNEL(max_pool_forward, MaxPoolForwardParams) {
    const unsigned out_plane = p.ho * p.wo;
    const unsigned total = p.planes * out_plane;
    for (unsigned o = blockIdx.x * blockDim.x + threadIdx.x; o < total; o += gridDim.x * blockDim.x) {
        const unsigned plane = o / out_plane, r = o % out_plane;
        const unsigned oh = r / p.wo, ow = r % p.wo;
        const float* xp = p.x + plane * (p.h * p.w);
        const unsigned first = oh * p.k * p.w + ow * p.k;
        float best = xp[first];
        unsigned best_i = first;
        for (unsigned kh = 0; kh < p.k; ++kh) {
            const unsigned row = first + kh * p.w;
            for (unsigned kw = 0; kw < p.k; ++kw) {
                const float v = xp[row + kw];
                if (v > best || v != v) {
                    best = v;
                    best_i = row + kw;
                }
            }
        }
        p.y[o] = best;
        p.argmax[o] = best_i;
    }
}

GTA_KERNEL(max_pool_backward, MaxPoolBackwardParams) {
    const unsigned plane_size = p.h * p.w;
    const unsigned total = p.planes * plane_size;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const unsigned plane = i / plane_size, r = i % plane_size;
        const unsigned oh = (r / p.w) / p.k, ow = (r % p.w) / p.k;
        float g = 0.0f;
        if (oh < p.ho && ow < p.wo) {
            const unsigned o = plane * (p.ho * p.wo) + oh * p.wo + ow;
            if (p.argmax[o] == r) g = __fadd_rn(0.0f, p.gy[o]);
        }
        p.gx[i] = g;
    }
}
