// Fully connected layer y = x·Wᵀ + b (x [N][in], W [out][in], b [out]; src/ops/linear.rs is
// the CPU reference) as a tiled SGEMM C[m][n] = Σ_k A(m,k)·B(k,n), in three layouts (all
// row-major, named after the BLAS convention for A·B):
//   linear_gemm_nt   A = a[m][k], B = b[n][k]:  forward  y  = x·Wᵀ (+ bias[n])  (m=N, n=out, k=in)
//   linear_gemm_nn   A = a[m][k], B = b[k][n]:  backward gx = gy·W               (m=N, n=in, k=out)
//   linear_gemm_tn   A = a[k][m], B = b[k][n]:  backward gW = gyᵀ·x              (m=out, n=in, k=N)
//   linear_bias_grad db[j] = Σ_i a[i][j] over m rows in row order (the CPU's order: bit-exact).
//
// Tiling: a block of GTA_GEMM_THREADS = 256 threads computes a GTA_GEMM_BM × GTA_GEMM_BN = 64×64
// tile of C. Per step it stages a 64×16 slice of A and a 16×64 slice of B in shared memory
// (stored k-major, [16][64 + 1]: the +1 column keeps the transposing stores nearly free of bank
// conflicts), zero-filled past the matrix edges, then each thread (tx, ty) = (t % 16, t / 16)
// accumulates the 4×4 outputs at rows ty + 16i, columns tx + 16j (register blocking: 8 shared
// loads per 16 multiply-adds; the strided assignment makes the C stores and the B reads
// consecutive across a half-warp and the A reads broadcasts). Grid: (⌈n/64⌉, ⌈m/64⌉).
// Cost: 2·m·n·k FLOP; global traffic (m·k)·⌈n/64⌉ + (k·n)·⌈m/64⌉ reads + m·n writes (×4 bytes).
//
// Determinism: each C element is one thread's sequential sum over k in increasing order (the
// compiler may contract a·b + acc into an FMA, which only removes roundings); no atomics, no
// split-k. The order differs from the CPU's GEMM (matrixmultiply), so the two agree to the
// rounding bound of a length-k dot product, |Δ| ≤ 2·γ_k·Σ|a||b| (see src/gpu/check/linear.rs).
#include "common.cuh"

#define BM GTA_GEMM_BM
#define BN GTA_GEMM_BN
#define BK GTA_GEMM_BK
#define TPB GTA_GEMM_THREADS

// A_KM: A stored [k][m] (else [m][k]); B_KN: B stored [k][n] (else [n][k]).
template <bool A_KM, bool B_KN> __device__ __forceinline__ void gta_gemm(const GemmParams& p) {
    __shared__ float as[BK][BM + 1];
    __shared__ float bs[BK][BN + 1];
    const unsigned t = threadIdx.x;
    const unsigned tx = t % 16, ty = t / 16;
    const unsigned m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    float acc[4][4];
    GTA_UNROLL
    for (int i = 0; i < 4; ++i) {
        GTA_UNROLL
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    }
    for (unsigned k0 = 0; k0 < p.k; k0 += BK) {
        // Stage the slices: BM·BK = BN·BK = 1024 values each, 4 per thread, consecutive threads
        // reading consecutive addresses of the stored layout.
        GTA_UNROLL
        for (int r = 0; r < (BM * BK) / TPB; ++r) {
            const unsigned e = t + r * TPB;
            const unsigned mm = A_KM ? e % BM : e / BK;
            const unsigned kk = A_KM ? e / BM : e % BK;
            const unsigned gm = m0 + mm, gk = k0 + kk;
            float v = 0.0f;
            if (gm < p.m && gk < p.k) v = A_KM ? p.a[gk * p.m + gm] : p.a[gm * p.k + gk];
            as[kk][mm] = v;
        }
        GTA_UNROLL
        for (int r = 0; r < (BN * BK) / TPB; ++r) {
            const unsigned e = t + r * TPB;
            const unsigned nn = B_KN ? e % BN : e / BK;
            const unsigned kk = B_KN ? e / BN : e % BK;
            const unsigned gn = n0 + nn, gk = k0 + kk;
            float v = 0.0f;
            if (gn < p.n && gk < p.k) v = B_KN ? p.b[gk * p.n + gn] : p.b[gn * p.k + gk];
            bs[kk][nn] = v;
        }
        __syncthreads();
        GTA_UNROLL
        for (int kk = 0; kk < BK; ++kk) {
            float af[4], bf[4];
            GTA_UNROLL
            for (int i = 0; i < 4; ++i) af[i] = as[kk][ty + 16 * i];
            GTA_UNROLL
            for (int j = 0; j < 4; ++j) bf[j] = bs[kk][tx + 16 * j];
            GTA_UNROLL
            for (int i = 0; i < 4; ++i) {
                GTA_UNROLL
                for (int j = 0; j < 4; ++j) acc[i][j] += af[i] * bf[j];
            }
        }
        __syncthreads();
    }
    GTA_UNROLL
    for (int i = 0; i < 4; ++i) {
        const unsigned row = m0 + ty + 16 * i;
        GTA_UNROLL
        for (int j = 0; j < 4; ++j) {
            const unsigned col = n0 + tx + 16 * j;
            if (row < p.m && col < p.n)
                p.c[row * p.n + col] = p.bias ? __fadd_rn(acc[i][j], p.bias[col]) : acc[i][j];
        }
    }
}

GTA_KERNEL_BOUNDS(linear_gemm_nt, GemmParams, TPB) { gta_gemm<false, false>(p); }
GTA_KERNEL_BOUNDS(linear_gemm_nn, GemmParams, TPB) { gta_gemm<false, true>(p); }
GTA_KERNEL_BOUNDS(linear_gemm_tn, GemmParams, TPB) { gta_gemm<true, true>(p); }

// db[j] = Σ_i a[i][j], i < m in order, j < n: one thread per column (1-D grid-stride).
GTA_KERNEL(linear_bias_grad, GemmParams) {
    for (unsigned j = blockIdx.x * blockDim.x + threadIdx.x; j < p.n; j += gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (unsigned i = 0; i < p.m; ++i) s += p.a[i * p.n + j];
        p.c[j] = s;
    }
}
