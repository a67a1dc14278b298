// 2-D convolution (NCHW f32, no dilation/groups), every pass as a tiled implicit GEMM; the CPU
// reference is src/ops/conv.rs (the same PyTorch semantics). All passes are written on a conv
// "geometry": im [n][c_im][ih][iw] (conv input), col [n][c_col][oh][ow] (conv output), weight
// [c_col][c_im][kh][kw]. A conv-transpose is the same geometry with its input on the col side
// and its output on the im side (its PyTorch weight [Cin][Cout][kh][kw] is then exactly
// [c_col][c_im][kh][kw]), so src/gpu/kernels/conv.rs only swaps arguments:
//
//   kernel           GEMM  C[M][N] = Σ_k A[M][K]·B[K][N]         conv pass       convT pass
//   conv_fwd_*       M=c_col N=n·oh·ow K=c_im·kh·kw              forward         backward-data
//                    A = weight rows, B = im patches (gathered)
//   conv_bwd_data_*  M=c_im  N≈n·ih·iw/s² K≈c_col·kh·kw/s²       backward-data   forward
//                    A = weightᵀ, B = col entries that hit the pixel; one GEMM per phase
//   conv_wgrad_*     M=c_col N=c_im·kh·kw K=n·oh·ow              backward-filter backward-filter
//                    A = col (gy or convT x), B = im patches; K split over gridDim.z
//   conv_split_sum   out[i] = Σ_s parts[s][i], s in order (the wgrad splits, deterministic)
//   conv_bias_grad   gb[c] = Σ_{n,h,w} gy[n][c][h][w], fixed per-thread order then a tree
// fwd and bwd_data add an optional bias per output channel (M) and fuse ReLU/LeakyReLU.
// B is gathered from the image on the fly into shared memory (no im2col buffer); padding and
// taps a stride skips read as 0. bwd_data runs one grid.z slice per stride phase of the output
// pixels, so it multiplies only the taps that reach them (no s² waste for strided convs).
//
// Tiling: one block of 256 threads computes a BM×BN tile of C, each thread 4×4 outputs (rows
// ty + (BM/4)·i, columns tx + (BN/4)·j: conflict-free shared reads), over K in steps of 16 with
// the A tile (16×BM, padded +1 against bank conflicts) and the B tile (16×BN) in shared memory.
// Two tile shapes: 64×64 (the *_64x64 kernels) and 16×256 (*_16x256, for M ≤ 16: RGB outputs,
// 1-channel heads). Grid: x = N tiles, y = M tiles, z = K splits (wgrad) or s² phases.
// Every thread accumulates its outputs in K order, so results do not depend on scheduling; no
// floating-point atomics anywhere. The wgrad split count and the tile shape depend on the
// shapes only (src/gpu/kernels/conv.rs), so results are reproducible bit for bit.
//
// Cost per pass: 2·M·N·K FLOPs (conv forward: 2·n·c_col·oh·ow·c_im·kh·kw). Bytes: each block
// reads its A and B tiles once per K step: (BM + BN)·K·4 bytes per tile of C, i.e. per output
// K·(1/BN + 1/BM)·4 bytes from L2/DRAM for its 2·K FLOPs (a 64×64 tile: 16 FLOPs per byte;
// 16×256: 7.5), plus the output written once. The gathered B re-reads each input ~kh·kw/s²
// times across tiles (cache hits, not extra DRAM traffic, when the tiles of an image are close).
#include "common.cuh"

#define CONV_BK 16
#define CONV_THREADS 256

enum { CONV_FWD = 0, CONV_BWD_DATA = 1, CONV_WGRAD = 2 };

template <int MODE, int BM, int BN> __device__ __forceinline__ void conv_gemm(const ConvParams& p) {
    constexpr int TM = 4, TN = 4;
    constexpr int NX = BN / TN; // threads along N
    constexpr int NY = BM / TM; // threads along M
    static_assert(NX * NY == CONV_THREADS, "one 4x4 sub-tile per thread");
    static_assert(CONV_THREADS % BN == 0 || BN % CONV_THREADS == 0, "B loads");
    constexpr int A_LOADS = BM * CONV_BK / CONV_THREADS;
    constexpr int B_LOADS = BN * CONV_BK / CONV_THREADS;
    constexpr int A_MSTEP = CONV_THREADS / CONV_BK; // m distance between a thread's A loads
    constexpr int B_KSTEP = CONV_THREADS / BN;      // k distance between a thread's B loads
    __shared__ float As[CONV_BK][BM + 1];
    __shared__ float Bs[CONV_BK][BN];

    const unsigned tid = threadIdx.x;
    const unsigned khw = p.kh * p.kw;
    const unsigned ihw = p.ih * p.iw, ohw = p.oh * p.ow;
    const int s = (int)p.stride, pad = (int)p.pad;
    // bwd_data: blockIdx.z is the stride phase (py, px) = ((y + pad) % s, (x + pad) % s) of
    // the block's pixels; only taps ki ≡ py, kj ≡ px (mod s) reach them: nth×ntw of them.
    // The phase's pixels are y = y_first + s·u, u < cnt_y (likewise x).
    unsigned py = 0, px = 0, y_first = 0, x_first = 0, cnt_y = 0, cnt_x = 0, nth = 0, ntw = 0;
    if (MODE == CONV_BWD_DATA) {
        const unsigned us = p.stride, upad = p.pad % p.stride;
        py = blockIdx.z / us, px = blockIdx.z % us;
        y_first = (py + us - upad) % us, x_first = (px + us - upad) % us;
        cnt_y = y_first < p.ih ? (p.ih - y_first + us - 1) / us : 0;
        cnt_x = x_first < p.iw ? (p.iw - x_first + us - 1) / us : 0;
        nth = py < p.kh ? (p.kh - py + us - 1) / us : 0;
        ntw = px < p.kw ? (p.kw - px + us - 1) / us : 0;
    }
    const unsigned ntap = nth * ntw, cnt = cnt_y * cnt_x;
    unsigned M, N, K;
    if (MODE == CONV_FWD) {
        M = p.c_col, N = p.n * ohw, K = p.c_im * khw;
    } else if (MODE == CONV_BWD_DATA) {
        M = p.c_im, N = p.n * cnt, K = p.c_col * ntap;
    } else {
        M = p.c_col, N = p.c_im * khw, K = p.n * ohw;
    }
    const unsigned m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const unsigned k_begin = MODE == CONV_WGRAD ? blockIdx.z * p.k_chunk : 0;
    const unsigned k_end = min(K, k_begin + p.k_chunk);

    // This thread's B column, fixed for the whole K loop: its decomposition is hoisted.
    const unsigned jb = tid % BN, j = n0 + jb;
    const bool j_ok = j < N;
    const unsigned kb = tid / BN;
    unsigned jb_img = 0;       // fwd/bwd_data: offset of sample b in the gathered tensor
    int jy = 0, jx = 0;        // fwd: y·s − pad; bwd_data: (y + pad − py)/s; wgrad: ki − pad
    unsigned jci = 0;          // wgrad: the im channel of the column
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
    const unsigned ka = tid % CONV_BK;
    const unsigned ma = tid / CONV_BK;

    float acc[TM][TN];
    for (int i = 0; i < TM; ++i)
        for (int jj = 0; jj < TN; ++jj) acc[i][jj] = 0.0f;

    for (unsigned kt = k_begin; kt < k_end; kt += CONV_BK) {
        // A tile: As[k][m].
        {
            const unsigned k = kt + ka;
            const bool k_ok = k < k_end;
            unsigned a_off = 0; // the k-dependent part of A's address
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
            for (int r = 0; r < A_LOADS; ++r) {
                const unsigned m = m0 + ma + A_MSTEP * r;
                float v = 0.0f;
                if (k_ok && m < M) {
                    if (MODE == CONV_FWD) v = p.wt[m * K + a_off];
                    else if (MODE == CONV_BWD_DATA) v = p.wt[m * khw + a_off];
                    else v = p.col[m * ohw + a_off];
                }
                As[ka][ma + A_MSTEP * r] = v;
            }
        }
        // B tile: Bs[k][j], gathered (0 where a tap reads the padding or between strides).
        for (int r = 0; r < B_LOADS; ++r) {
            const unsigned kr = kb + B_KSTEP * r;
            const unsigned k = kt + kr;
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
            Bs[kr][jb] = v;
        }
        __syncthreads();
        const unsigned tx = tid % NX, ty = tid / NX;
        for (int kk = 0; kk < CONV_BK; ++kk) {
            float a[TM], b[TN];
            for (int i = 0; i < TM; ++i) a[i] = As[kk][ty + NY * i];
            for (int jj = 0; jj < TN; ++jj) b[jj] = Bs[kk][tx + NX * jj];
            for (int i = 0; i < TM; ++i)
                for (int jj = 0; jj < TN; ++jj) acc[i][jj] += a[i] * b[jj];
        }
        __syncthreads();
    }

    // Epilogue: bias, activation, NCHW store (wgrad: the [split][M][N] partial or gw itself).
    const unsigned tx = tid % NX, ty = tid / NX;
    for (int i = 0; i < TM; ++i) {
        const unsigned m = m0 + ty + NY * i;
        if (m >= M) continue;
        const float bias = p.bias ? p.bias[m] : 0.0f;
        for (int jj = 0; jj < TN; ++jj) {
            const unsigned jo = n0 + tx + NX * jj;
            if (jo >= N) continue;
            if (MODE == CONV_WGRAD) {
                p.out[(blockIdx.z * M + m) * N + jo] = acc[i][jj];
                continue;
            }
            float v = acc[i][jj] + bias;
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
    }
}

GTA_KERNEL_BOUNDS(conv_fwd_64x64, ConvParams, CONV_THREADS) {
    conv_gemm<CONV_FWD, 64, 64>(p);
}
GTA_KERNEL_BOUNDS(conv_fwd_16x256, ConvParams, CONV_THREADS) {
    conv_gemm<CONV_FWD, 16, 256>(p);
}
GTA_KERNEL_BOUNDS(conv_bwd_data_64x64, ConvParams, CONV_THREADS) {
    conv_gemm<CONV_BWD_DATA, 64, 64>(p);
}
GTA_KERNEL_BOUNDS(conv_bwd_data_16x256, ConvParams, CONV_THREADS) {
    conv_gemm<CONV_BWD_DATA, 16, 256>(p);
}
GTA_KERNEL_BOUNDS(conv_wgrad_64x64, ConvParams, CONV_THREADS) {
    conv_gemm<CONV_WGRAD, 64, 64>(p);
}
GTA_KERNEL_BOUNDS(conv_wgrad_16x256, ConvParams, CONV_THREADS) {
    conv_gemm<CONV_WGRAD, 16, 256>(p);
}

// out[i] = parts[0][i] + parts[1][i] + ... in split order. 1-D grid-stride launch.
GTA_KERNEL(conv_split_sum, ConvSplitSumParams) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < p.len; i += gridDim.x * blockDim.x) {
        float v = p.parts[i];
        for (unsigned s = 1; s < p.splits; ++s) v += p.parts[s * p.len + i];
        p.out[i] = v;
    }
}

// One block of CONV_THREADS per channel (grid.x = c): thread t sums elements t, t + 256, ...
// of the channel's n·hw values in order, then a halving tree. Another block shape writes NaN.
GTA_KERNEL_BOUNDS(conv_bias_grad, ConvBiasGradParams, CONV_THREADS) {
    __shared__ float sh[CONV_THREADS];
    const unsigned t = threadIdx.x, ch = blockIdx.x;
    if (blockDim.x != CONV_THREADS || blockDim.y != 1 || blockDim.z != 1) {
        if (t == 0 && ch < p.c) p.gb[ch] = GTA_NAN_F;
        return;
    }
    if (ch >= p.c) return; // uniform per block: no thread of it reaches a barrier
    const unsigned total = p.n * p.hw;
    float acc = 0.0f;
    for (unsigned e = t; e < total; e += CONV_THREADS) {
        const unsigned b = e / p.hw, q = e % p.hw;
        acc += p.gy[(b * p.c + ch) * p.hw + q];
    }
    sh[t] = acc;
    __syncthreads();
    for (unsigned h = CONV_THREADS / 2; h > 0; h >>= 1) {
        if (t < h) sh[t] += sh[t + h];
        __syncthreads();
    }
    if (t == 0) p.gb[ch] = sh[0];
}
