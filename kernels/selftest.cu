// Self-test kernels for the executors (the CPU SIMT emulator first): each exercises one
// feature the real kernels rely on. Checked by tests/emulator.rs against values computed in
// Rust; selftest_block_sum is also the emulator benchmark's reference case (benches/emu.rs).
// Unless noted: 1-D grid and block, blockDim.x a multiple of 32.

#include "common.cuh"

// Sum of x over the elements this block visits in a grid-stride loop -> out[blockIdx.x].
// Five __shfl_down_sync rounds per warp, one __syncthreads, then warp 0 combines.
GTA_KERNEL(selftest_block_sum, SelftestVecParams) {
    __shared__ float warp_sums[32];
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float acc = 0.0f;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x)
        acc += p.x[i];
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(GTA_FULL_MASK, acc, o);
    if (lane == 0) warp_sums[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        acc = lane < blockDim.x / 32 ? warp_sums[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(GTA_FULL_MASK, acc, o);
        if (lane == 0) p.out[blockIdx.x] = acc;
    }
}

// Same result through the common.cuh helper gta_block_sum (xor butterflies, two barriers).
GTA_KERNEL(selftest_block_sum_helper, SelftestVecParams) {
    __shared__ float scratch[32];
    float acc = 0.0f;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x)
        acc += p.x[i];
    acc = gta_block_sum(acc, scratch);
    if (threadIdx.x == 0) p.out[blockIdx.x] = acc;
}

// in[rows][cols] -> out[cols][rows] through a padded 32x32 shared tile.
// Block (32, 8), grid (ceil(cols/32), ceil(rows/32)).
GTA_KERNEL(selftest_transpose, SelftestTransposeParams) {
    __shared__ float tile[32][33];
    unsigned x = blockIdx.x * 32 + threadIdx.x;
    unsigned y = blockIdx.y * 32 + threadIdx.y;
    for (unsigned j = 0; j < 32; j += 8)
        if (x < p.cols && y + j < p.rows) tile[threadIdx.y + j][threadIdx.x] = p.in[(y + j) * p.cols + x];
    __syncthreads();
    x = blockIdx.y * 32 + threadIdx.x;
    y = blockIdx.x * 32 + threadIdx.y;
    for (unsigned j = 0; j < 32; j += 8)
        if (x < p.rows && y + j < p.cols) p.out[(y + j) * p.rows + x] = tile[threadIdx.x][threadIdx.y + j];
}

// Inclusive scan of each block's chunk of blockDim.x elements (one per thread):
// warp scans with __shfl_up_sync, warp totals scanned by warp 0, two barriers.
GTA_KERNEL(selftest_scan, SelftestIntParams) {
    __shared__ int warp_tot[32];
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = i < p.n ? p.x[i] : 0;
    for (unsigned o = 1; o < 32; o <<= 1) {
        const int t = __shfl_up_sync(GTA_FULL_MASK, v, o);
        if (lane >= o) v += t;
    }
    if (lane == 31) warp_tot[warp] = v;
    __syncthreads();
    if (warp == 0) {
        int w = lane < blockDim.x / 32 ? warp_tot[lane] : 0;
        for (unsigned o = 1; o < 32; o <<= 1) {
            const int t = __shfl_up_sync(GTA_FULL_MASK, w, o);
            if (lane >= o) w += t;
        }
        warp_tot[lane] = w;
    }
    __syncthreads();
    if (warp > 0) v += warp_tot[warp - 1];
    if (i < p.n) p.out[i] = v;
}

// Histogram of x (non-negative) into p.bins (<= 256) bins: shared-memory atomics per block,
// then one global atomicAdd per bin. `out` must be zeroed.
GTA_KERNEL(selftest_histogram, SelftestIntParams) {
    __shared__ int hist[256];
    for (unsigned b = threadIdx.x; b < p.bins; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x)
        atomicAdd(&hist[p.x[i] % (int)p.bins], 1);
    __syncthreads();
    for (unsigned b = threadIdx.x; b < p.bins; b += blockDim.x)
        if (hist[b]) atomicAdd(&p.out[b], hist[b]);
}

// The other atomics, over x[n] (grid-stride). out[8] must be initialized by the caller:
// out[0] += x (int add)        out[1] = max(x) (int)       out[2] = min(x) (int)
// out[3] += 1 by atomicCAS     out[4] exchanged with i+1   out[5] += what atomicExch returned
// out[6] as f32 += x (float)   out[7] = max((unsigned)x)
GTA_KERNEL(selftest_atomics, SelftestIntParams) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x) {
        const int v = p.x[i];
        atomicAdd(&p.out[0], v);
        atomicMax(&p.out[1], v);
        atomicMin(&p.out[2], v);
        int old = p.out[3], seen;
        do {
            seen = old;
            old = atomicCAS(&p.out[3], seen, seen + 1);
        } while (old != seen);
        atomicAdd(&p.out[5], atomicExch(&p.out[4], (int)i + 1));
        atomicAdd(reinterpret_cast<float*>(&p.out[6]), (float)v);
        atomicMax(reinterpret_cast<unsigned*>(&p.out[7]), (unsigned)v);
    }
}

// Per warp (global warp index w): out[3w] = __ballot_sync(x > 0), out[3w+1] = __any_sync,
// out[3w+2] = __all_sync, over the warp's 32 elements (missing elements count as 0).
GTA_KERNEL(selftest_vote, SelftestIntParams) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    const int pred = i < p.n && p.x[i] > 0;
    const unsigned ballot = __ballot_sync(GTA_FULL_MASK, pred);
    const int any = __any_sync(GTA_FULL_MASK, pred);
    const int all = __all_sync(GTA_FULL_MASK, pred);
    if (threadIdx.x % 32 == 0) {
        const unsigned w = i / 32;
        p.out[3 * w] = (int)ballot;
        p.out[3 * w + 1] = any;
        p.out[3 * w + 2] = all;
    }
}

// Shuffle variants and widths; v = x[i] (or -1 beyond n); out[8i .. 8i+8) for i < n.
GTA_KERNEL(selftest_shuffle, SelftestIntParams) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned lane = threadIdx.x % 32;
    const int v = i < p.n ? p.x[i] : -1;
    int r[8];
    r[0] = __shfl_sync(GTA_FULL_MASK, v, (int)((lane * 7 + 3) % 32));
    r[1] = __shfl_up_sync(GTA_FULL_MASK, v, 3);
    r[2] = __shfl_down_sync(GTA_FULL_MASK, v, 5);
    r[3] = __shfl_xor_sync(GTA_FULL_MASK, v, 9);
    r[4] = __shfl_sync(GTA_FULL_MASK, v, 2, 8);
    r[5] = __shfl_up_sync(GTA_FULL_MASK, v, 2, 8);
    r[6] = (int)__shfl_down_sync(GTA_FULL_MASK, (unsigned)v, 3u, 16);
    r[7] = (int)(__shfl_xor_sync(GTA_FULL_MASK, 0.5 * v, 4, 16) * 2.0);
    __syncwarp();
    if (i < p.n)
        for (int k = 0; k < 8; ++k) p.out[8 * i + k] = r[k];
}

// Reverse each block's chunk through dynamic shared memory (blockDim.x floats):
// out[b*B + t] = chunk[B-1-t], with elements beyond n read as 0.
GTA_KERNEL(selftest_dyn_reverse, SelftestVecParams) {
    float* s = gta_dynamic_smem<float>();
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = i < p.n ? p.x[i] : 0.0f;
    __syncthreads();
    if (i < p.n) p.out[i] = s[blockDim.x - 1 - threadIdx.x];
}

// The same WITHOUT the barrier: a bug. Threads read slots that later threads have not written
// yet; the emulator runs threads in order and poisons dynamic shared memory (NaN), so the
// first half of each chunk comes out NaN instead of a silent plausible value.
GTA_KERNEL(selftest_missing_barrier, SelftestVecParams) {
    float* s = gta_dynamic_smem<float>();
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = i < p.n ? p.x[i] : 0.0f;
    if (i < p.n) p.out[i] = s[blockDim.x - 1 - threadIdx.x];
}

// A bug: threads beyond n return before a __syncthreads the others wait at. Fine when n is a
// multiple of blockDim.x; otherwise the emulator reports barrier divergence.
GTA_KERNEL(selftest_early_exit, SelftestVecParams) {
    __shared__ float s[1024];
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    s[threadIdx.x] = p.x[i];
    __syncthreads();
    p.out[i] = s[threadIdx.x] + 1.0f;
}

// A bug: lane 5 of each warp exits before a full-mask __syncwarp.
GTA_KERNEL(selftest_warp_exit, SelftestVecParams) {
    if (threadIdx.x % 32 == 5) return;
    __syncwarp();
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.n) p.out[i] = p.x[i];
}

// One TF32 tensor-core product D = A·B + C (gta_mma_tf32_m16n8k8, kernels/common.cuh) by one
// warp (block 32, grid 1): x = A [16][8], then B [8][8] (B[k][n]), then C [16][8], row-major
// (320 floats); out = D [16][8]. A and B go through gta_cvt_tf32. p.n = 1 loads B's fragments
// transposed (B[n][k]): a wrong layout, which the test must see as a different result.
GTA_KERNEL(selftest_mma_tf32, SelftestVecParams) {
    const unsigned l = threadIdx.x % 32, g = l >> 2, t = l & 3;
    const float* A = p.x;
    const float* B = p.x + 128;
    const float* C = p.x + 192;
    const bool wrong = p.n == 1;
    unsigned a[4], b[2];
    float c[4], d[4];
    a[0] = gta_cvt_tf32(A[g * 8 + t]);
    a[1] = gta_cvt_tf32(A[(g + 8) * 8 + t]);
    a[2] = gta_cvt_tf32(A[g * 8 + t + 4]);
    a[3] = gta_cvt_tf32(A[(g + 8) * 8 + t + 4]);
    b[0] = gta_cvt_tf32(wrong ? B[g * 8 + t] : B[t * 8 + g]);
    b[1] = gta_cvt_tf32(wrong ? B[g * 8 + t + 4] : B[(t + 4) * 8 + g]);
    c[0] = C[g * 8 + 2 * t];
    c[1] = C[g * 8 + 2 * t + 1];
    c[2] = C[(g + 8) * 8 + 2 * t];
    c[3] = C[(g + 8) * 8 + 2 * t + 1];
    gta_mma_tf32_m16n8k8(d, a, b, c);
    p.out[g * 8 + 2 * t] = d[0];
    p.out[g * 8 + 2 * t + 1] = d[1];
    p.out[(g + 8) * 8 + 2 * t] = d[2];
    p.out[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// gta_cvt_tf32 element-wise: out[i] = the f32 value of the TF32 pattern of x[i] (grid-stride).
GTA_KERNEL(selftest_cvt_tf32, SelftestVecParams) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x)
        p.out[i] = __uint_as_float(gta_cvt_tf32(p.x[i]));
}
