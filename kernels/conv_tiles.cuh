// The implicit-GEMM tiles of a 2-D convolution, shared by kernels/conv.cu (FP32 FMAs) and
// kernels/conv_tc.cu (TF32 mma.sync): for one block of THREADS threads computing the BM×BN tile
// of C at (blockIdx.y, blockIdx.x), the pass's GEMM shape (M, N, K and this block's K range),
// the gather of each K tile of A and B (CONV_BK deep) into registers, and the epilogue of one
// C element. conv.cu's top comment has the GEMM table (what M, N, K, A and B are in each pass,
// MODE) and the conv-transpose mapping; each kernel file does its own shared-memory tiling and
// inner product on top of this.
//
// B is gathered from the image on the fly (no im2col buffer); padding and taps a stride skips
// read as 0. bwd_data runs one grid.z slice per stride phase of the output pixels, so it
// multiplies only the taps that reach them (no s² waste for strided convs); wgrad runs one
// grid.z slice per K chunk of p.k_chunk.
#pragma once
#include "common.cuh"

#define CONV_BK 16

enum { CONV_FWD = 0, CONV_BWD_DATA = 1, CONV_WGRAD = 2 };

// The per-thread gather state of one block's GEMM (the decompositions hoisted out of the K
// loop) and the loads of one K tile into registers.
template <int MODE, int BM, int BN, int THREADS> struct ConvTile {
    static constexpr int A_LOADS = BM * CONV_BK / THREADS;
    static constexpr int B_LOADS = BN * CONV_BK / THREADS;
    static constexpr int A_MSTEP = THREADS / CONV_BK; // m distance between a thread's A loads
    static constexpr int B_KSTEP = THREADS / BN;      // k distance between a thread's B loads
    static_assert(A_LOADS * THREADS == BM * CONV_BK, "A loads");
    static_assert(BN <= THREADS && THREADS % BN == 0, "B loads");

    unsigned M, N, K, k_begin, k_end, m0, n0;
    unsigned khw, ihw, ohw;
    int s, pad;
    // bwd_data: blockIdx.z is the stride phase (py, px) = ((y + pad) % s, (x + pad) % s) of
    // the block's pixels; only taps ki ≡ py, kj ≡ px (mod s) reach them: nth×ntw of them.
    // The phase's pixels are y = y_first + s·u, u < cnt_y (likewise x).
    unsigned py, px, y_first, x_first, cnt_y, cnt_x, nth, ntw, ntap, cnt;
    // This thread's B column (fixed for the K loop) and A row offset.
    unsigned jb, kb, ka, ma;
    bool j_ok;
    unsigned jb_img; // fwd/bwd_data: offset of sample b in the gathered tensor
    unsigned jci;    // wgrad: the im channel of the column
    int jy, jx;      // fwd: y·s − pad; bwd_data: (y + pad − py)/s; wgrad: ki − pad

    __device__ __forceinline__ void init(const ConvParams& p, unsigned tid) {
        khw = p.kh * p.kw;
        ihw = p.ih * p.iw, ohw = p.oh * p.ow;
        s = (int)p.stride, pad = (int)p.pad;
        py = px = y_first = x_first = cnt_y = cnt_x = nth = ntw = 0;
        if (MODE == CONV_BWD_DATA) {
            const unsigned us = p.stride, upad = p.pad % p.stride;
            py = blockIdx.z / us, px = blockIdx.z % us;
            y_first = (py + us - upad) % us, x_first = (px + us - upad) % us;
            cnt_y = y_first < p.ih ? (p.ih - y_first + us - 1) / us : 0;
            cnt_x = x_first < p.iw ? (p.iw - x_first + us - 1) / us : 0;
            nth = py < p.kh ? (p.kh - py + us - 1) / us : 0;
            ntw = px < p.kw ? (p.kw - px + us - 1) / us : 0;
        }
        ntap = nth * ntw, cnt = cnt_y * cnt_x;
        if (MODE == CONV_FWD) {
            M = p.c_col, N = p.n * ohw, K = p.c_im * khw;
        } else if (MODE == CONV_BWD_DATA) {
            M = p.c_im, N = p.n * cnt, K = p.c_col * ntap;
        } else {
            M = p.c_col, N = p.c_im * khw, K = p.n * ohw;
        }
        m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
        k_begin = MODE == CONV_WGRAD ? blockIdx.z * p.k_chunk : 0;
        k_end = min(K, k_begin + p.k_chunk);

        jb = tid % BN, kb = tid / BN;
        ka = tid % CONV_BK, ma = tid / CONV_BK;
        const unsigned j = n0 + jb;
        j_ok = j < N;
        jb_img = 0, jci = 0, jy = 0, jx = 0;
        if (j_ok) {
            if (MODE == CONV_FWD) {
                const unsigned b = j / ohw, q = j % ohw;
                jb_img = b * p.c_im * ihw;
                jy = (int)(q / p.ow) * s - pad;
                jx = (int)(q % p.ow) * s - pad;
            } else if (MODE == CONV_BWD_DATA) {
                const unsigned b = j / cnt, q = j % cnt;
                jb_img = b * p.c_col * ohw;
                jy = (int)((y_first + (q / cnt_x) * p.stride + p.pad - py) / p.stride);
                jx = (int)((x_first + (q % cnt_x) * p.stride + p.pad - px) / p.stride);
            } else {
                jci = j / khw;
                const unsigned r = j % khw;
                jy = (int)(r / p.kw) - pad;
                jx = (int)(r % p.kw) - pad;
            }
        }
    }

    // The A and B elements this thread stores for the K tile starting at kt: va[r] goes to
    // A[k = ka][m = ma + A_MSTEP·r], vb[r] to B[k = kb + B_KSTEP·r][n = jb]; 0 outside the
    // GEMM and where a tap reads the padding or falls between strides.
    __device__ __forceinline__ void load(const ConvParams& p, unsigned kt, float (&va)[A_LOADS],
                                         float (&vb)[B_LOADS]) const {
        {
            const unsigned k = kt + ka;
            const bool k_ok = k < k_end;
            unsigned a_off = 0;
            if (k_ok) {
                if (MODE == CONV_FWD) {
                    a_off = k;
                } else if (MODE == CONV_BWD_DATA) {
                    const unsigned t = k % ntap;
                    const unsigned ki = py + (t / ntw) * p.stride, kj = px + (t % ntw) * p.stride;
                    a_off = (k / ntap) * p.c_im * khw + ki * p.kw + kj;
                } else {
                    a_off = (k / ohw) * p.c_col * ohw + k % ohw;
                }
            }
            GTA_UNROLL
            for (int r = 0; r < A_LOADS; ++r) {
                const unsigned m = m0 + ma + A_MSTEP * r;
                float v = 0.0f;
                if (k_ok && m < M) {
                    if (MODE == CONV_FWD) v = p.wt[m * K + a_off];
                    else if (MODE == CONV_BWD_DATA) v = p.wt[m * khw + a_off];
                    else v = p.col[m * ohw + a_off];
                }
                va[r] = v;
            }
        }
        GTA_UNROLL
        for (int r = 0; r < B_LOADS; ++r) {
            const unsigned k = kt + kb + B_KSTEP * r;
            float v = 0.0f;
            if (j_ok && k < k_end) {
                if (MODE == CONV_FWD) {
                    const unsigned ci = k / khw, t = k % khw;
                    const int iy = jy + (int)(t / p.kw), ix = jx + (int)(t % p.kw);
                    if (iy >= 0 && iy < (int)p.ih && ix >= 0 && ix < (int)p.iw)
                        v = p.im[jb_img + (ci * p.ih + (unsigned)iy) * p.iw + (unsigned)ix];
                } else if (MODE == CONV_BWD_DATA) {
                    const unsigned co = k / ntap, t = k % ntap;
                    const int y = jy - (int)(t / ntw), x = jx - (int)(t % ntw);
                    if (y >= 0 && y < (int)p.oh && x >= 0 && x < (int)p.ow)
                        v = p.col[jb_img + (co * p.oh + (unsigned)y) * p.ow + (unsigned)x];
                } else {
                    const unsigned b = k / ohw, q = k % ohw;
                    const int iy = (int)(q / p.ow) * s + jy, ix = (int)(q % p.ow) * s + jx;
                    if (iy >= 0 && iy < (int)p.ih && ix >= 0 && ix < (int)p.iw)
                        v = p.im[((b * p.c_im + jci) * p.ih + (unsigned)iy) * p.iw + (unsigned)ix];
                }
            }
            vb[r] = v;
        }
    }

    // Epilogue of C[m][jo] = r (m < M, jo < N): bias (bias = p.bias[m] or 0), activation and
    // NCHW store; wgrad stores r as is, into the [split][M][N] partial or gw itself.
    __device__ __forceinline__ void store(const ConvParams& p, unsigned m, unsigned jo, float r,
                                          float bias) const {
        if (MODE == CONV_WGRAD) {
            p.out[(blockIdx.z * M + m) * N + jo] = r;
            return;
        }
        float v = r + bias;
        if (p.act == GTA_ACT_RELU) v = v > 0.0f ? v : 0.0f;
        else if (p.act == GTA_ACT_LEAKY_RELU) v = v > 0.0f ? v : v * p.slope;
        if (MODE == CONV_FWD) {
            p.out[(jo / ohw * M + m) * ohw + jo % ohw] = v;
        } else {
            const unsigned b = jo / cnt, q = jo % cnt;
            const unsigned y = y_first + (q / cnt_x) * p.stride;
            const unsigned x = x_first + (q % cnt_x) * p.stride;
            p.out[((b * M + m) * p.ih + y) * p.iw + x] = v;
        }
    }
};
