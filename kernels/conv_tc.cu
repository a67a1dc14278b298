// 2-D convolution on the tensor cores: the three implicit GEMMs of kernels/conv.cu (forward,
// backward-data per stride phase, backward-filter split over K), same geometry, same
// ConvParams, same epilogues, with the inner product done by TF32 mma.sync m16n8k8
// (gta_mma_tf32_m16n8k8, kernels/common.cuh) instead of FP32 FMAs. See conv.cu for the GEMM
// table (what M, N, K, A and B are in each pass) and for how a conv-transpose maps onto it;
// src/gpu/kernels/conv.rs selects these kernels with Precision::Tf32.
//
//   conv_tc_fwd_*       M=c_col N=n·oh·ow K=c_im·kh·kw     A = weight, B = im patches
//   conv_tc_bwd_data_*  M=c_im  N≈n·ih·iw/s² K≈c_col·kh·kw/s² (grid.z = stride phase)
//   conv_tc_wgrad_*     M=c_col N=c_im·kh·kw K=n·oh·ow      (grid.z = K slice; the slices are
//                       summed by conv.cu's conv_split_sum, in slice order: deterministic)
//
// Precision: A and B are rounded to TF32 (cvt.rna: 10 mantissa bits, ties away) once, when
// stored to shared memory; products of two TF32 values are exact in f32 and are accumulated in
// f32 by the tensor core. So each element is the FP32 kernel's sum with every input perturbed
// by ≤ 2^-11 relative (src/gpu/check/conv_tf32.rs derives the bound it is checked against).
//
// Tiling: 128 threads (4 warps) per block compute a BM×BN tile of C over K in steps of 16
// (two k8 mma steps). Tile shapes: 64×64 (warps 2×2, each 32×32 = 2×4 mma tiles, 32
// accumulators per thread) and 16×128 (for M ≤ 16: warps 1×4, each 16×32 = 1×4 mma tiles).
// Shared memory holds the tiles already converted to TF32, As[k][m] and Bs[k][n], each row
// padded by 8 words: the fragment reads (lane g + 8·t, t = lane % 4) then hit 32 distinct
// banks. The global loads of tile k+1 are issued into registers before the mma's of tile k
// (register double buffering); the gather (padding and stride holes read as 0, bounds checked
// in M, N and K) is the same as conv.cu's, with 128 threads instead of 256.
//
// Determinism: every accumulator sums its K range in a fixed order (the mma's internal order
// is fixed by the hardware), no atomics, tile shape and splits depend on the shapes only.
//
// Cost per pass: 2·M·N·K FLOPs on the tensor cores; shared-memory traffic per k8 step per
// warp: 8 A + 8 B words per lane for 8 mma's (64×64) = 4096 MACs, i.e. 8 MACs per byte read.
#include "common.cuh"

#define TC_BK 16
#define TC_THREADS 128
#define TC_PAD 8

// Fixed-count loops over register arrays must unroll (a run-time index moves the array to
// local memory: the accumulators did, in the epilogue, before this).
#ifdef GTA_EMU
#define TC_UNROLL
#else
#define TC_UNROLL _Pragma("unroll")
#endif

enum { TC_FWD = 0, TC_BWD_DATA = 1, TC_WGRAD = 2 };

// The per-thread gather state of one block's GEMM (the decompositions hoisted out of the K
// loop) and the loads of one K tile into registers.
template <int MODE, int BM, int BN> struct TcGather {
    static constexpr int A_LOADS = BM * TC_BK / TC_THREADS;
    static constexpr int B_LOADS = BN * TC_BK / TC_THREADS;
    static constexpr int A_MSTEP = TC_THREADS / TC_BK; // m distance between a thread's A loads
    static constexpr int B_KSTEP = TC_THREADS / BN;    // k distance between a thread's B loads
    static_assert(A_LOADS * TC_THREADS == BM * TC_BK, "A loads");
    static_assert(BN <= TC_THREADS && TC_THREADS % BN == 0, "B loads");

    unsigned M, N, K, k_begin, k_end, m0, n0;
    unsigned khw, ihw, ohw;
    int s, pad;
    // bwd_data: the stride phase (py, px) of the block's pixels, see conv.cu.
    unsigned py, px, y_first, x_first, cnt_y, cnt_x, nth, ntw, ntap, cnt;
    // This thread's B column (fixed for the K loop) and A row offset.
    unsigned jb, kb, ka, ma;
    bool j_ok;
    unsigned jb_img, jci;
    int jy, jx;

    __device__ __forceinline__ void init(const ConvParams& p, unsigned tid) {
        khw = p.kh * p.kw;
        ihw = p.ih * p.iw, ohw = p.oh * p.ow;
        s = (int)p.stride, pad = (int)p.pad;
        py = px = y_first = x_first = cnt_y = cnt_x = nth = ntw = 0;
        if (MODE == TC_BWD_DATA) {
            const unsigned us = p.stride, upad = p.pad % p.stride;
            py = blockIdx.z / us, px = blockIdx.z % us;
            y_first = (py + us - upad) % us, x_first = (px + us - upad) % us;
            cnt_y = y_first < p.ih ? (p.ih - y_first + us - 1) / us : 0;
            cnt_x = x_first < p.iw ? (p.iw - x_first + us - 1) / us : 0;
            nth = py < p.kh ? (p.kh - py + us - 1) / us : 0;
            ntw = px < p.kw ? (p.kw - px + us - 1) / us : 0;
        }
        ntap = nth * ntw, cnt = cnt_y * cnt_x;
        if (MODE == TC_FWD) {
            M = p.c_col, N = p.n * ohw, K = p.c_im * khw;
        } else if (MODE == TC_BWD_DATA) {
            M = p.c_im, N = p.n * cnt, K = p.c_col * ntap;
        } else {
            M = p.c_col, N = p.c_im * khw, K = p.n * ohw;
        }
        m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
        k_begin = MODE == TC_WGRAD ? blockIdx.z * p.k_chunk : 0;
        k_end = min(K, k_begin + p.k_chunk);

        jb = tid % BN, kb = tid / BN;
        ka = tid % TC_BK, ma = tid / TC_BK;
        const unsigned j = n0 + jb;
        j_ok = j < N;
        jb_img = 0, jci = 0, jy = 0, jx = 0;
        if (j_ok) {
            if (MODE == TC_FWD) {
                const unsigned b = j / ohw, q = j % ohw;
                jb_img = b * p.c_im * ihw;
                jy = (int)(q / p.ow) * s - pad;
                jx = (int)(q % p.ow) * s - pad;
            } else if (MODE == TC_BWD_DATA) {
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

    // The A and B elements this thread stores for the K tile starting at kt (0 outside).
    __device__ __forceinline__ void load(const ConvParams& p, unsigned kt, float (&va)[A_LOADS],
                                         float (&vb)[B_LOADS]) const {
        {
            const unsigned k = kt + ka;
            const bool k_ok = k < k_end;
            unsigned a_off = 0;
            if (k_ok) {
                if (MODE == TC_FWD) {
                    a_off = k;
                } else if (MODE == TC_BWD_DATA) {
                    const unsigned t = k % ntap;
                    const unsigned ki = py + (t / ntw) * p.stride, kj = px + (t % ntw) * p.stride;
                    a_off = (k / ntap) * p.c_im * khw + ki * p.kw + kj;
                } else {
                    a_off = (k / ohw) * p.c_col * ohw + k % ohw;
                }
            }
            TC_UNROLL
            for (int r = 0; r < A_LOADS; ++r) {
                const unsigned m = m0 + ma + A_MSTEP * r;
                float v = 0.0f;
                if (k_ok && m < M) {
                    if (MODE == TC_FWD) v = p.wt[m * K + a_off];
                    else if (MODE == TC_BWD_DATA) v = p.wt[m * khw + a_off];
                    else v = p.col[m * ohw + a_off];
                }
                va[r] = v;
            }
        }
        TC_UNROLL
        for (int r = 0; r < B_LOADS; ++r) {
            const unsigned k = kt + kb + B_KSTEP * r;
            float v = 0.0f;
            if (j_ok && k < k_end) {
                if (MODE == TC_FWD) {
                    const unsigned ci = k / khw, t = k % khw;
                    const int iy = jy + (int)(t / p.kw), ix = jx + (int)(t % p.kw);
                    if (iy >= 0 && iy < (int)p.ih && ix >= 0 && ix < (int)p.iw)
                        v = p.im[jb_img + (ci * p.ih + (unsigned)iy) * p.iw + (unsigned)ix];
                } else if (MODE == TC_BWD_DATA) {
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
};

template <int MODE, int BM, int BN, int WARPS_M, int WARPS_N>
__device__ __forceinline__ void conv_tc_gemm(const ConvParams& p) {
    typedef TcGather<MODE, BM, BN> G;
    constexpr int WTM = BM / WARPS_M, WTN = BN / WARPS_N; // warp tile
    constexpr int MI = WTM / 16, NI = WTN / 8;            // mma tiles per warp
    static_assert(WARPS_M * WARPS_N * 32 == TC_THREADS, "4 warps");
    static_assert(MI * 16 * WARPS_M == BM && NI * 8 * WARPS_N == BN, "warp tiling");
    __shared__ unsigned As[TC_BK][BM + TC_PAD]; // TF32 patterns, As[k][m]
    __shared__ unsigned Bs[TC_BK][BN + TC_PAD]; // Bs[k][n]

    const unsigned tid = threadIdx.x;
    G g;
    g.init(p, tid);
    const unsigned lane = tid % 32, warp = tid / 32;
    const unsigned gq = lane >> 2, tq = lane & 3; // groupID, threadID_in_group
    const unsigned wm = (warp / WARPS_N) * WTM, wn = (warp % WARPS_N) * WTN;

    float acc[MI][NI][4];
    TC_UNROLL
    for (int i = 0; i < MI; ++i)
        TC_UNROLL
        for (int j = 0; j < NI; ++j)
            TC_UNROLL
            for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.0f;

    float va[G::A_LOADS], vb[G::B_LOADS];
    if (g.k_begin < g.k_end) g.load(p, g.k_begin, va, vb);
    for (unsigned kt = g.k_begin; kt < g.k_end; kt += TC_BK) {
        TC_UNROLL
        for (int r = 0; r < G::A_LOADS; ++r) As[g.ka][g.ma + G::A_MSTEP * r] = gta_cvt_tf32(va[r]);
        TC_UNROLL
        for (int r = 0; r < G::B_LOADS; ++r) Bs[g.kb + G::B_KSTEP * r][g.jb] = gta_cvt_tf32(vb[r]);
        __syncthreads();
        // The next tile's global loads are in flight during this tile's mma's.
        if (kt + TC_BK < g.k_end) g.load(p, kt + TC_BK, va, vb);
        TC_UNROLL
        for (int ks = 0; ks < TC_BK; ks += 8) {
            unsigned a[MI][4], b[NI][2];
            TC_UNROLL
            for (int i = 0; i < MI; ++i) {
                const unsigned m = wm + 16 * i + gq;
                a[i][0] = As[ks + tq][m];
                a[i][1] = As[ks + tq][m + 8];
                a[i][2] = As[ks + tq + 4][m];
                a[i][3] = As[ks + tq + 4][m + 8];
            }
            TC_UNROLL
            for (int j = 0; j < NI; ++j) {
                const unsigned n = wn + 8 * j + gq;
                b[j][0] = Bs[ks + tq][n];
                b[j][1] = Bs[ks + tq + 4][n];
            }
            TC_UNROLL
            for (int i = 0; i < MI; ++i)
                TC_UNROLL
                for (int j = 0; j < NI; ++j) gta_mma_tf32_m16n8k8(acc[i][j], a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }

    // Epilogue (as conv.cu): accumulator q of tile (i, j) is C[wm + 16i + gq + 8(q/2)]
    // [wn + 8j + 2tq + q%2]; bias, activation, NCHW store (wgrad: the partial or gw itself).
    TC_UNROLL
    for (int i = 0; i < MI; ++i) {
        TC_UNROLL
        for (int h = 0; h < 2; ++h) {
            const unsigned m = g.m0 + wm + 16 * i + gq + 8 * h;
            if (m >= g.M) continue;
            const float bias = p.bias ? p.bias[m] : 0.0f;
            TC_UNROLL
            for (int j = 0; j < NI; ++j) {
                TC_UNROLL
                for (int e = 0; e < 2; ++e) {
                    const unsigned jo = g.n0 + wn + 8 * j + 2 * tq + e;
                    if (jo >= g.N) continue;
                    const float r = acc[i][j][2 * h + e];
                    if (MODE == TC_WGRAD) {
                        p.out[(blockIdx.z * g.M + m) * g.N + jo] = r;
                        continue;
                    }
                    float v = r + bias;
                    if (p.act == GTA_ACT_RELU) v = v > 0.0f ? v : 0.0f;
                    else if (p.act == GTA_ACT_LEAKY_RELU) v = v > 0.0f ? v : v * p.slope;
                    if (MODE == TC_FWD) {
                        p.out[(jo / g.ohw * g.M + m) * g.ohw + jo % g.ohw] = v;
                    } else {
                        const unsigned b = jo / g.cnt, q = jo % g.cnt;
                        const unsigned y = g.y_first + (q / g.cnt_x) * p.stride;
                        const unsigned x = g.x_first + (q % g.cnt_x) * p.stride;
                        p.out[((b * g.M + m) * p.ih + y) * p.iw + x] = v;
                    }
                }
            }
        }
    }
}

GTA_KERNEL_BOUNDS(conv_tc_fwd_64x64, ConvParams, TC_THREADS) {
    conv_tc_gemm<TC_FWD, 64, 64, 2, 2>(p);
}
GTA_KERNEL_BOUNDS(conv_tc_fwd_16x128, ConvParams, TC_THREADS) {
    conv_tc_gemm<TC_FWD, 16, 128, 1, 4>(p);
}
GTA_KERNEL_BOUNDS(conv_tc_bwd_data_64x64, ConvParams, TC_THREADS) {
    conv_tc_gemm<TC_BWD_DATA, 64, 64, 2, 2>(p);
}
GTA_KERNEL_BOUNDS(conv_tc_bwd_data_16x128, ConvParams, TC_THREADS) {
    conv_tc_gemm<TC_BWD_DATA, 16, 128, 1, 4>(p);
}
GTA_KERNEL_BOUNDS(conv_tc_wgrad_64x64, ConvParams, TC_THREADS) {
    conv_tc_gemm<TC_WGRAD, 64, 64, 2, 2>(p);
}
GTA_KERNEL_BOUNDS(conv_tc_wgrad_16x128, ConvParams, TC_THREADS) {
    conv_tc_gemm<TC_WGRAD, 16, 128, 1, 4>(p);
}
