// Losses (src/ops/loss.rs is the CPU reference; per-row/per-element terms computed with the
// same operations in the same order, so they match it bit for bit on the emulator):
//   cross_entropy_rows   rows[i] = lse(logits[i]) − logits[i][label[i]], lse = m + log Σ e^(x−m),
//                        m = the row max (a label ≥ k gives NaN). Mean loss = sum_f32(rows) / n (kernels/reduce.cu).
//                        Launch: 1-D, one thread per row.
//   cross_entropy_backward  dx[i][j] = (g/n)·(e^(x−lse) − [j = label]), g = g[0] on the device.
//                        Launch: 1-D, one thread per row.
//   bce_terms            out[i] = max(x,0) − x·t + log1p(e^−|x|) (t per element or constant).
//                        Mean loss = sum_f32(out) / n.  Launch: one thread per element.
//   bce_backward         out[i] = (g/n)·(sigmoid(x) − t).  Launch: one thread per element.
//   count_correct        out[0] (+)= #rows whose argmax (first maximum; a NaN wins, as in
//                        argmax_rows) equals the label: integer shared-memory atomics (exact).
//                        Launch: exactly one block of GTA_REDUCE_THREADS threads.
// No floating-point atomics: sums go through reduce.cu's fixed-order tree.
// Every `a − b·c` uses __fmul_rn/__fsub_rn so the GPU compiler cannot fuse it into an FMA.
#include "common.cuh"

#define GTA_FOR_EACH(i, n)                                                                     \
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += gridDim.x * blockDim.x)

// lse of one row, as row_lse in src/ops/loss.rs: fold max from row[0], then Σ exp(x − m).
__device__ __forceinline__ float gta_row_lse(const float* row, unsigned k) {
    float m = row[0];
    for (unsigned j = 1; j < k; ++j) m = fmaxf(m, row[j]);
    float s = 0.0f;
    for (unsigned j = 0; j < k; ++j) s += expf(row[j] - m);
    return m + logf(s);
}

__device__ __forceinline__ float gta_sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}

GTA_KERNEL(cross_entropy_rows, CrossEntropyParams) {
    GTA_FOR_EACH(i, p.n) {
        const float* row = p.logits + (unsigned long long)i * p.k;
        const unsigned label = p.labels[i];
        p.out[i] = label < p.k ? gta_row_lse(row, p.k) - row[label] : GTA_NAN_F; // bad label: NaN
    }
}

GTA_KERNEL(cross_entropy_backward, CrossEntropyParams) {
    GTA_FOR_EACH(i, p.n) {
        const float scale = p.g[0] / (float)p.n;
        const float* row = p.logits + (unsigned long long)i * p.k;
        float* out = p.out + (unsigned long long)i * p.k;
        const float lse = gta_row_lse(row, p.k);
        const unsigned label = p.labels[i];
        for (unsigned j = 0; j < p.k; ++j) {
            if (label >= p.k) { // a label out of range: NaN gradients, never an out-of-bounds read
                out[j] = GTA_NAN_F;
                continue;
            }
            const float prob = expf(row[j] - lse);
            out[j] = scale * (prob - (j == label ? 1.0f : 0.0f));
        }
    }
}

GTA_KERNEL(bce_terms, BceParams) {
    GTA_FOR_EACH(i, p.n) {
        const float x = p.x[i];
        const float t = p.target ? p.target[i] : p.target_const;
        p.out[i] = __fadd_rn(__fsub_rn(fmaxf(x, 0.0f), __fmul_rn(x, t)), log1pf(expf(-fabsf(x))));
    }
}

GTA_KERNEL(bce_backward, BceParams) {
    GTA_FOR_EACH(i, p.n) {
        const float scale = p.g[0] / (float)p.n;
        const float t = p.target ? p.target[i] : p.target_const;
        p.out[i] = scale * (gta_sigmoid(p.x[i]) - t);
    }
}

GTA_KERNEL(count_correct, CountCorrectParams) {
    __shared__ unsigned correct;
    if (threadIdx.x == 0) correct = 0;
    __syncthreads();
    unsigned mine = 0;
    for (unsigned i = threadIdx.x; i < p.n; i += blockDim.x) {
        const float* row = p.logits + (unsigned long long)i * p.k;
        unsigned best = 0;
        for (unsigned j = 1; j < p.k; ++j) {
            const float x = row[j], b = row[best];
            if (b == b && (x != x || x > b)) best = j; // b not NaN, and x NaN or larger
        }
        mine += best == p.labels[i];
    }
    atomicAdd(&correct, mine);
    __syncthreads();
    if (threadIdx.x == 0) p.out[0] = (p.accumulate ? p.out[0] : 0u) + correct;
}
