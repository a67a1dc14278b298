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
// in M, N and K) and the epilogue are conv.cu's, ConvTile of kernels/conv_tiles.cuh, with 128
// threads instead of 256.
//
// Determinism: every accumulator sums its K range in a fixed order (the mma's internal order
// is fixed by the hardware), no atomics, tile shape and splits depend on the shapes only.
//
// Cost per pass: 2·M·N·K FLOPs on the tensor cores; shared-memory traffic per k8 step per
// warp: 8 A + 8 B words per lane for 8 mma's (64×64) = 4096 MACs, i.e. 8 MACs per byte read.
#include "conv_tiles.cuh"

#define TC_THREADS 128
#define TC_PAD 8

template <int MODE, int BM, int BN, int WARPS_M, int WARPS_N>
__device__ __forceinline__ void conv_tc_gemm(const ConvParams& p) {
    typedef ConvTile<MODE, BM, BN, TC_THREADS> G;
    constexpr int WTM = BM / WARPS_M, WTN = BN / WARPS_N; // warp tile
    constexpr int MI = WTM / 16, NI = WTN / 8;            // mma tiles per warp
    static_assert(WARPS_M * WARPS_N * 32 == TC_THREADS, "4 warps");
    static_assert(MI * 16 * WARPS_M == BM && NI * 8 * WARPS_N == BN, "warp tiling");
    __shared__ unsigned As[CONV_BK][BM + TC_PAD]; // TF32 patterns, As[k][m]
    __shared__ unsigned Bs[CONV_BK][BN + TC_PAD]; // Bs[k][n]

    const unsigned tid = threadIdx.x;
    G g;
    g.init(p, tid);
    const unsigned lane = tid % 32, warp = tid / 32;
    const unsigned gq = lane >> 2, tq = lane & 3; // groupID, threadID_in_group
    const unsigned wm = (warp / WARPS_N) * WTM, wn = (warp % WARPS_N) * WTN;

    float acc[MI][NI][4];
    GTA_UNROLL
    for (int i = 0; i < MI; ++i)
        GTA_UNROLL
        for (int j = 0; j < NI; ++j)
            GTA_UNROLL
            for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.0f;

    float va[G::A_LOADS], vb[G::B_LOADS];
    if (g.k_begin < g.k_end) g.load(p, g.k_begin, va, vb);
    for (unsigned kt = g.k_begin; kt < g.k_end; kt += CONV_BK) {
        GTA_UNROLL
        for (int r = 0; r < G::A_LOADS; ++r) As[g.ka][g.ma + G::A_MSTEP * r] = gta_cvt_tf32(va[r]);
        GTA_UNROLL
        for (int r = 0; r < G::B_LOADS; ++r) Bs[g.kb + G::B_KSTEP * r][g.jb] = gta_cvt_tf32(vb[r]);
        __syncthreads();
        // The next tile's global loads are in flight during this tile's mma's.
        if (kt + CONV_BK < g.k_end) g.load(p, kt + CONV_BK, va, vb);
        GTA_UNROLL
        for (int ks = 0; ks < CONV_BK; ks += 8) {
            unsigned a[MI][4], b[NI][2];
            GTA_UNROLL
            for (int i = 0; i < MI; ++i) {
                const unsigned m = wm + 16 * i + gq;
                a[i][0] = As[ks + tq][m];
                a[i][1] = As[ks + tq][m + 8];
                a[i][2] = As[ks + tq + 4][m];
                a[i][3] = As[ks + tq + 4][m + 8];
            }
            GTA_UNROLL
            for (int j = 0; j < NI; ++j) {
                const unsigned n = wn + 8 * j + gq;
                b[j][0] = Bs[ks + tq][n];
                b[j][1] = Bs[ks + tq + 4][n];
            }
            GTA_UNROLL
            for (int i = 0; i < MI; ++i)
                GTA_UNROLL
                for (int j = 0; j < NI; ++j) gta_mma_tf32_m16n8k8(acc[i][j], a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }

    // Epilogue: accumulator q of tile (i, j) is C[wm + 16i + gq + 8(q/2)][wn + 8j + 2tq + q%2],
    // stored by ConvTile::store (bias, activation, NCHW; wgrad: the partial or gw itself).
    GTA_UNROLL
    for (int i = 0; i < MI; ++i) {
        GTA_UNROLL
        for (int h = 0; h < 2; ++h) {
            const unsigned m = g.m0 + wm + 16 * i + gq + 8 * h;
            if (m >= g.M) continue;
            const float bias = p.bias ? p.bias[m] : 0.0f;
            GTA_UNROLL
            for (int j = 0; j < NI; ++j) {
                GTA_UNROLL
                for (int e = 0; e < 2; ++e) {
                    const unsigned jo = g.n0 + wn + 8 * j + 2 * tq + e;
                    if (jo >= g.N) continue;
                    g.store(p, m, jo, acc[i][j][2 * h + e], bias);
                }
            }
        }
    }
}

GTA_KERNEL_BOUNDS(conv_tc_fwd_64x64, ConvParams, TC_THREADS) {
    conv_tc_gemm<CONV_FWD, 64, 64, 2, 2>(p);
}
GTA_KERNEL_BOUNDS(conv_tc_fwd_16x128, ConvParams, TC_THREADS) {
    conv_tc_gemm<CONV_FWD, 16, 128, 1, 4>(p);
}
GTA_KERNEL_BOUNDS(conv_tc_bwd_data_64x64, ConvParams, TC_THREADS) {
    conv_tc_gemm<CONV_BWD_DATA, 64, 64, 2, 2>(p);
}
GTA_KERNEL_BOUNDS(conv_tc_bwd_data_16x128, ConvParams, TC_THREADS) {
    conv_tc_gemm<CONV_BWD_DATA, 16, 128, 1, 4>(p);
}
GTA_KERNEL_BOUNDS(conv_tc_wgrad_64x64, ConvParams, TC_THREADS) {
    conv_tc_gemm<CONV_WGRAD, 64, 64, 2, 2>(p);
}
GTA_KERNEL_BOUNDS(conv_tc_wgrad_16x128, ConvParams, TC_THREADS) {
    conv_tc_gemm<CONV_WGRAD, 16, 128, 1, 4>(p);
}
