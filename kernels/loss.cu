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
//   cross_entropy_fused  the forward and the gradient in ONE launch of ONE block (when the
//                        logits are small enough: src/gpu/kernels/loss.rs picks it for n·k ≤
//                        FUSED_MAX_ELEMENTS, the two launches above otherwise): thread t takes
//                        rows t, t + T, t + 2T, ... (T = GTA_REDUCE_THREADS) in order, forms
//                        each row's term exactly as cross_entropy_rows, adds it to an f32
//                        accumulator and (when `grad` is given) writes grad[i][j] = e^(x−lse) −
//                        [j = label]; then s[t] = acc and reduce.cu's halving tree (s[t] +=
//                        s[t + h], h = T/2, ..., 1); out[0] = s[0] / divisor. That is term for
//                        term and add for add the summation of cross_entropy_rows + sum_f32, so
//                        the loss has the same bits as the two-launch path.
//   bce_fused            the same for BCE: thread t takes elements t, t + T, ...; grad[i] =
//                        sigmoid(x) − t.
//   loss_grad_scale      the backward of a fused loss: out[i] = (g/divisor)·grad[i], g = g[0] on
//                        the device: the same two roundings (g/n, then the product) as
//                        cross_entropy_backward / bce_backward and the CPU, so the same bits.
//                        Launch: 1-D, one thread per element.
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

// The fused kernels' launch shape: exactly one block of GTA_REDUCE_THREADS threads.
__device__ __forceinline__ bool gta_loss_one_block() {
    return blockDim.x == GTA_REDUCE_THREADS && blockDim.y == 1 && blockDim.z == 1 &&
           gridDim.x == 1 && gridDim.y == 1 && gridDim.z == 1;
}

// s[t] = acc, then reduce.cu's halving tree; out[0] = total / divisor (thread 0).
__device__ __forceinline__ void gta_loss_tree(float acc, float* s, float* out, float divisor) {
    const unsigned t = threadIdx.x;
    s[t] = acc;
    __syncthreads();
    for (unsigned h = GTA_REDUCE_THREADS / 2; h > 0; h >>= 1) {
        if (t < h) s[t] += s[t + h];
        __syncthreads();
    }
    if (t == 0) out[0] = s[0] / divisor;
}

GTA_KERNEL(cross_entropy_fused, LossFusedParams) {
    __shared__ float s[GTA_REDUCE_THREADS];
    if (!gta_loss_one_block()) { // another shape would sum in another order: refuse
        if (threadIdx.x == 0 && blockIdx.x == 0) p.out[0] = GTA_NAN_F;
        return;
    }
    float acc = 0.0f;
    for (unsigned i = threadIdx.x; i < p.n; i += GTA_REDUCE_THREADS) {
        const float* row = p.x + (unsigned long long)i * p.k;
        const unsigned label = p.labels[i];
        if (label >= p.k) { // a label out of range: NaN loss and gradients, no bad read
            acc += GTA_NAN_F;
            if (p.grad) {
                for (unsigned j = 0; j < p.k; ++j) p.grad[(unsigned long long)i * p.k + j] = GTA_NAN_F;
            }
            continue;
        }
        const float lse = gta_row_lse(row, p.k);
        acc += lse - row[label];
        if (p.grad) {
            float* g = p.grad + (unsigned long long)i * p.k;
            for (unsigned j = 0; j < p.k; ++j) g[j] = expf(row[j] - lse) - (j == label ? 1.0f : 0.0f);
        }
    }
    gta_loss_tree(acc, s, p.out, p.divisor);
}

GTA_KERNEL(bce_fused, LossFusedParams) {
    __shared__ float s[GTA_REDUCE_THREADS];
    if (!gta_loss_one_block()) {
        if (threadIdx.x == 0 && blockIdx.x == 0) p.out[0] = GTA_NAN_F;
        return;
    }
    float acc = 0.0f;
    for (unsigned i = threadIdx.x; i < p.n; i += GTA_REDUCE_THREADS) {
        const float x = p.x[i];
        const float t = p.target ? p.target[i] : p.target_const;
        acc += __fadd_rn(__fsub_rn(fmaxf(x, 0.0f), __fmul_rn(x, t)), log1pf(expf(-fabsf(x))));
        if (p.grad) p.grad[i] = gta_sigmoid(x) - t;
    }
    gta_loss_tree(acc, s, p.out, p.divisor);
}

GTA_KERNEL(loss_grad_scale, LossGradScaleParams) {
    GTA_FOR_EACH(i, p.n) {
        const float scale = p.g[0] / p.divisor;
        p.out[i] = scale * p.grad[i];
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
