// The batch gather, on the device from the resident u8 dataset (src/data/batch.rs and
// src/data/resize.rs are the CPU reference; the result is bit-identical):
//   images u8 [N][c][h][w] (c = 1 or 3), indices[b] -> out f32 [b][3][oh][ow] with
//   out = (p/255 − 0.44)/0.19 (gray replicated to RGB), and when out_d is non-null the
//   [−1, 1] view D sees, out_d = ((out·0.19 + 0.44) − 0.5)·2.
// The pixel p is Pillow-exact bilinear resizing, through the host-computed tables of
// src/data/resize.rs (per output row/column: first input index, tap count, 22-bit fixed-point
// weights): mode 1 runs the horizontal pass then the vertical one (every enlargement such as
// 28 -> 32), mode 2 vertical first (Pillow's order for strong vertical shrinking); each pass
// rounds to u8 exactly as Pillow does, so a thread recomputes the few intermediate u8 pixels
// it needs. Mode 0 (h, w = oh, ow: SVHN's 32×32) copies.
// Under a schedule (step non-null) the rows are indices[*step·b ..]: the batch position is read
// from device memory, so a replayed CUDA graph gathers the current iteration's batch. With
// `labels` set the batch's labels are gathered too (u8 → u32; an out-of-range row gives
// 0xFFFFFFFF, which the loss kernels turn into NaN).
// Launch: 1-D, one thread per output value b·3·oh·ow (grid-stride loop, any grid).
#include "common.cuh"

#define GTA_PRECISION_BITS 22

__device__ __forceinline__ unsigned gta_clip8(int v) {
    if (v >= (1 << GTA_PRECISION_BITS << 8)) return 255;
    if (v <= 0) return 0;
    return (unsigned)(v >> GTA_PRECISION_BITS);
}

// One tap-weighted pass over `taps` pixels starting at src[first·stride].
__device__ __forceinline__ unsigned gta_resample(const unsigned char* src, unsigned stride,
                                                 const int* bounds, const int* k,
                                                 unsigned ksize, unsigned o) {
    const int first = bounds[2 * o], taps = bounds[2 * o + 1];
    // Wrapping like the reference's wrapping_add (never overflows for 8-bit inputs anyway).
    unsigned ss = 1u << (GTA_PRECISION_BITS - 1);
    for (int t = 0; t < taps; ++t)
        ss += (unsigned)((int)src[(unsigned long long)(first + t) * stride] * k[o * ksize + t]);
    return gta_clip8((int)ss);
}

GTA_KERNEL(gather_batch, GatherParams) {
    const unsigned long long plane = (unsigned long long)p.oh * p.ow;
    const unsigned long long total = (unsigned long long)p.b * 3 * plane;
    const bool past_end = p.step && *p.step >= p.steps;
    const unsigned* indices = p.indices + (p.step && !past_end ? (unsigned long long)(*p.step) * p.b : 0ull);
    if (p.labels) {
        for (unsigned j = blockIdx.x * blockDim.x + threadIdx.x; j < p.b; j += gridDim.x * blockDim.x)
            p.labels_out[j] = indices[j] < p.n_images && !past_end ? (unsigned)p.labels[indices[j]] : 0xFFFFFFFFu;
    }
    for (unsigned long long i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned xx = (unsigned)(i % p.ow);
        const unsigned yy = (unsigned)(i / p.ow % p.oh);
        const unsigned ch = (unsigned)(i / plane % 3);
        const unsigned long long bi = i / plane / 3;
        const unsigned long long in_plane = (unsigned long long)p.h * p.w;
        if (past_end || indices[bi] >= p.n_images) {
            p.out[i] = GTA_NAN_F;
            if (p.out_d) p.out_d[i] = GTA_NAN_F;
            continue;
        }
        const unsigned char* src =
            p.images + (unsigned long long)indices[bi] * p.c * in_plane +
            (p.c == 1 ? 0ull : ch * in_plane);
        unsigned px;
        if (p.mode == 0) {
            px = src[(unsigned long long)yy * p.w + xx];
        } else if (p.mode == 1) {
            // Horizontal first: intermediate rows y (width ow), then the vertical taps.
            const int first = p.v_bounds[2 * yy], taps = p.v_bounds[2 * yy + 1];
            unsigned ss = 1u << (GTA_PRECISION_BITS - 1);
            for (int t = 0; t < taps; ++t) {
                const unsigned char* row = src + (unsigned long long)(first + t) * p.w;
                const unsigned mid = gta_resample(row, 1, p.h_bounds, p.h_k, p.h_ksize, xx);
                ss += (unsigned)((int)mid * p.v_k[yy * p.v_ksize + t]);
            }
            px = gta_clip8((int)ss);
        } else {
            // Vertical first: intermediate columns x (height oh), then the horizontal taps.
            const int first = p.h_bounds[2 * xx], taps = p.h_bounds[2 * xx + 1];
            unsigned ss = 1u << (GTA_PRECISION_BITS - 1);
            for (int t = 0; t < taps; ++t) {
                const unsigned mid =
                    gta_resample(src + first + t, p.w, p.v_bounds, p.v_k, p.v_ksize, yy);
                ss += (unsigned)((int)mid * p.h_k[xx * p.h_ksize + t]);
            }
            px = gta_clip8((int)ss);
        }
        const float x = ((float)px / 255.0f - 0.44f) / 0.19f;
        p.out[i] = x;
        if (p.out_d) p.out_d[i] = __fmul_rn(__fsub_rn(__fadd_rn(__fmul_rn(x, 0.19f), 0.44f), 0.5f), 2.0f);
    }
}
