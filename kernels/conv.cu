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
// The GEMM shapes, the gather and the epilogue are ConvTile (kernels/conv_tiles.cuh), shared
// with the TF32 tensor-core kernels of kernels/conv_tc.cu; this file does the FP32 tiling.
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
#include "conv_tiles.cuh"

#define CONV_THREADS 256

template <int MODE, int BM, int BN> __device__ __forceinline__ void conv_gemm(const ConvParams& p) {
    typedef ConvTile<MODE, BM, BN, CONV_THREADS> G;
    constexpr int TM = 4, TN = 4;
    constexpr int NX = BN / TN; // threads along N
    constexpr int NY = BM / TM; // threads along M
    static_assert(NX * NY == CONV_THREADS, "one 4x4 sub-tile per thread");
    __shared__ float As[CONV_BK][BM + 1];
    __shared__ float Bs[CONV_BK][BN];

    const unsigned tid = threadIdx.x;
    G g;
    g.init(p, tid);
    const unsigned tx = tid % NX, ty = tid / NX;

    float acc[TM][TN];
    for (int i = 0; i < TM; ++i)
        for (int jj = 0; jj < TN; ++jj) acc[i][jj] = 0.0f;

    for (unsigned kt = g.k_begin; kt < g.k_end; kt += CONV_BK) {
        // A tile As[k][m] and B tile Bs[k][j] (gathered, see ConvTile::load).
        float va[G::A_LOADS], vb[G::B_LOADS];
        g.load(p, kt, va, vb);
        GTA_UNROLL
        for (int r = 0; r < G::A_LOADS; ++r) As[g.ka][g.ma + G::A_MSTEP * r] = va[r];
        GTA_UNROLL
        for (int r = 0; r < G::B_LOADS; ++r) Bs[g.kb + G::B_KSTEP * r][g.jb] = vb[r];
        __syncthreads();
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
    for (int i = 0; i < TM; ++i) {
        const unsigned m = g.m0 + ty + NY * i;
        if (m >= g.M) continue;
        const float bias = p.bias ? p.bias[m] : 0.0f;
        for (int jj = 0; jj < TN; ++jj) {
            const unsigned jo = g.n0 + tx + NX * jj;
            if (jo >= g.N) continue;
            g.store(p, m, jo, acc[i][jj], bias);
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
