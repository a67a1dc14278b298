// BatchNorm2d over x [n][c][hw] (NCHW, hw = H·W), PyTorch semantics; src/ops/batchnorm.rs is
// the CPU reference, and every step below is its operation in its order:
//
//   batchnorm_forward_train   per channel, in f64: mean = (Σ x)·(1/count), var = (Σ (x − mean)²)
//                             ·(1/count) (two passes: no E[x²] − E[x]² cancellation), invstd =
//                             1/sqrt(var + eps); save_mean/save_invstd = those rounded to f32;
//                             running_mean/var ← (1 − m)·r + m·batch (var unbiased: ·count/
//                             (count − 1)), blended in f64 and rounded once. Then
//                             y = act((x − mean)·(invstd·weight) + bias) in f32.
//   batchnorm_forward_eval    y = act((x − rm)·(invstd·weight) + bias), invstd = f32(1/sqrt(f64
//                             (rv) + eps)) (elementwise; no reduction).
//   batchnorm_backward_train  x̂ = (x − mean)·invstd (f32); Σ gy and Σ gy·x̂ in f64 (the product of
//                             two f32 is exact in f64); gb = Σ gy, gw = Σ gy·x̂, gx = (weight·
//                             invstd)·((gy − f32(Σgy/count)) − x̂·f32(Σgy·x̂/count)).
//   batchnorm_backward_eval   the same sums with the running statistics; gx = gy·(weight·invstd).
//   Both backwards take the forward's fused activation (`act`, `slope`) and output `y`: they
//   use g = act'(y)·gy (ReLU: y > 0 ? gy : 0; LeakyReLU: y > 0 ? gy : fl(gy·slope)) wherever
//   gy appears above, computed on the fly from y — the bits activation_backward would have
//   written, without its launch and its intermediate tensor (sign(y) = sign(x̂·w + b) for these
//   activations, so y decides the branch as the pre-activation value would).
//
// Why f64 accumulation: a channel holds count = N·H·W values (65 536 for D's first layer at
// batch 64); an f32 sum of that many loses up to ~count·2^-24 relative, an f64 sum ~count·2^-53,
// so the f32-rounded statistics are the CPU's to within an ulp (the CPU sums in f64 as well; only
// the order differs). These kernels are memory-bound (4–12 bytes per element against one or two
// f64 adds), so f64 costs nothing measurable on an H100 and little on consumer parts.
//
// Determinism: no atomics. Thread t of a channel's block adds elements t, t + T, t + 2T, ...
// in order; then a fixed shuffle-xor tree per warp and the warp totals added in warp order.
// Elementwise f32 expressions use __fsub_rn/__fmul_rn/__fadd_rn so the GPU compiler cannot fuse
// them into FMAs: given the same statistics the outputs are the CPU's bit for bit.
//
// Launch: train forward and both backwards: grid (c), block (GTA_BN_THREADS) — one block per
// channel, count/T elements per thread per pass. Eval forward: grid (chunks, c), block
// (GTA_BN_THREADS), chunks grid-stride over the channel's count values.
// Cost per element: train forward 3 reads (two statistic passes + normalize) + 1 write, ~8 FLOP
// (3 of them f64); backward train 2×(x, gy) reads + 1 write, ~10 FLOP; eval forward 1 read +
// 1 write, 3 FLOP; eval backward 2 reads + 1 write, ~5 FLOP. A fused activation adds one read
// of y per read of gy (and saves the separate activation backward's 2 reads + 1 write).
#include "common.cuh"

// Offset of element i (< n·hw) of channel ch: image i / hw, position i % hw.
__device__ __forceinline__ unsigned gta_bn_at(unsigned i, unsigned ch, unsigned c, unsigned hw) {
    return ((i / hw) * c + ch) * hw + i % hw;
}

__device__ __forceinline__ float gta_bn_act(float v, int act, float slope) {
    if (act == GTA_ACT_RELU) return v > 0.0f ? v : 0.0f;
    if (act == GTA_ACT_LEAKY_RELU) return v > 0.0f ? v : __fmul_rn(v, slope);
    return v;
}

// g = act'(y[o])·gy[o] for the fused activation (GTA_BN_ACT_NONE: gy[o]); y is read only when
// an activation is fused. The same operations as activation_backward (kernels/activation.cu).
__device__ __forceinline__ float gta_bn_grad(const BatchNormBackwardParams& p, unsigned o) {
    const float g = p.gy[o];
    if (p.act == GTA_BN_ACT_NONE) return g;
    if (p.y[o] > 0.0f) return g;
    return p.act == GTA_ACT_LEAKY_RELU ? __fmul_rn(g, p.slope) : 0.0f;
}

// Sums of a and b over the block (exactly GTA_BN_THREADS threads): a shuffle-xor tree within
// each warp (every lane ends with the same bits), then every thread adds the warp totals in warp
// order. `sa`, `sb`: GTA_BN_THREADS / 32 doubles of shared memory each, reusable on return.
__device__ __forceinline__ void gta_bn_block_sum2(double& a, double& b, double* sa, double* sb) {
    for (int o = 16; o > 0; o >>= 1) {
        a += __shfl_xor_sync(GTA_FULL_MASK, a, o);
        b += __shfl_xor_sync(GTA_FULL_MASK, b, o);
    }
    if (threadIdx.x % 32 == 0) {
        sa[threadIdx.x / 32] = a;
        sb[threadIdx.x / 32] = b;
    }
    __syncthreads();
    double ta = 0.0, tb = 0.0;
    for (unsigned w = 0; w < GTA_BN_THREADS / 32; ++w) {
        ta += sa[w];
        tb += sb[w];
    }
    __syncthreads();
    a = ta;
    b = tb;
}

__device__ __forceinline__ bool gta_bn_block_ok() {
    return blockDim.x == GTA_BN_THREADS && blockDim.y == 1 && blockDim.z == 1;
}

GTA_KERNEL_BOUNDS(batchnorm_forward_train, BatchNormForwardParams, GTA_BN_THREADS) {
    __shared__ double sa[GTA_BN_THREADS / 32];
    __shared__ double sb[GTA_BN_THREADS / 32];
    const unsigned ch = blockIdx.x;
    if (ch >= p.c) return;
    if (!gta_bn_block_ok()) { // another block shape would sum in another order: refuse
        if (threadIdx.x == 0) p.save_mean[ch] = GTA_NAN_F;
        return;
    }
    const unsigned count = p.n * p.hw;
    const unsigned t = threadIdx.x;
    double s = 0.0, unused = 0.0;
    for (unsigned i = t; i < count; i += GTA_BN_THREADS) s += (double)p.x[gta_bn_at(i, ch, p.c, p.hw)];
    gta_bn_block_sum2(s, unused, sa, sb);
    const double inv_count = 1.0 / (double)count;
    const double mean = s * inv_count;
    double q = 0.0;
    for (unsigned i = t; i < count; i += GTA_BN_THREADS) {
        const double d = (double)p.x[gta_bn_at(i, ch, p.c, p.hw)] - mean;
        q += d * d;
    }
    gta_bn_block_sum2(q, unused, sa, sb);
    const double var = q * inv_count;
    const double invstd = 1.0 / sqrt(var + (double)p.eps);
    const float mean_f = (float)mean, var_f = (float)var, invstd_f = (float)invstd;
    if (t == 0) {
        p.save_mean[ch] = mean_f;
        p.save_invstd[ch] = invstd_f;
        const double m = (double)p.momentum;
        const double bessel = (double)count / (double)(count - 1);
        p.running_mean[ch] = (float)((1.0 - m) * (double)p.running_mean[ch] + m * (double)mean_f);
        p.running_var[ch] =
            (float)((1.0 - m) * (double)p.running_var[ch] + m * (double)var_f * bessel);
    }
    const float scale = __fmul_rn(invstd_f, p.weight[ch]);
    const float b = p.bias[ch];
    for (unsigned i = t; i < count; i += GTA_BN_THREADS) {
        const unsigned o = gta_bn_at(i, ch, p.c, p.hw);
        const float v = __fadd_rn(__fmul_rn(__fsub_rn(p.x[o], mean_f), scale), b);
        p.y[o] = gta_bn_act(v, p.act, p.slope);
    }
}

GTA_KERNEL(batchnorm_forward_eval, BatchNormForwardParams) {
    const unsigned ch = blockIdx.y;
    if (ch >= p.c) return;
    const unsigned count = p.n * p.hw;
    const float invstd = (float)(1.0 / sqrt((double)p.running_var[ch] + (double)p.eps));
    const float scale = __fmul_rn(invstd, p.weight[ch]);
    const float m = p.running_mean[ch], b = p.bias[ch];
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x) {
        const unsigned o = gta_bn_at(i, ch, p.c, p.hw);
        const float v = __fadd_rn(__fmul_rn(__fsub_rn(p.x[o], m), scale), b);
        p.y[o] = gta_bn_act(v, p.act, p.slope);
    }
}

// Both backwards: `invstd` is the saved one (train) or computed from the running var (eval).
__device__ __forceinline__ void gta_bn_backward(const BatchNormBackwardParams& p, bool train) {
    __shared__ double sa[GTA_BN_THREADS / 32];
    __shared__ double sb[GTA_BN_THREADS / 32];
    const unsigned ch = blockIdx.x;
    if (ch >= p.c) return;
    if (!gta_bn_block_ok()) {
        if (threadIdx.x == 0 && p.gb) p.gb[ch] = GTA_NAN_F;
        if (threadIdx.x == 0 && p.gw) p.gw[ch] = GTA_NAN_F;
        return;
    }
    const unsigned count = p.n * p.hw;
    const unsigned t = threadIdx.x;
    const float m = p.mean[ch];
    const float is = train ? p.stat[ch] : (float)(1.0 / sqrt((double)p.stat[ch] + (double)p.eps));
    const float k = __fmul_rn(p.weight[ch], is);
    // Eval: gx needs no sums, so it is written in the same pass.
    const bool gx_now = !train && p.gx;
    const bool sums = p.gw || p.gb || (train && p.gx);
    double sg = 0.0, sgx = 0.0;
    if (sums || gx_now) {
        for (unsigned i = t; i < count; i += GTA_BN_THREADS) {
            const unsigned o = gta_bn_at(i, ch, p.c, p.hw);
            const float g = gta_bn_grad(p, o);
            const float xhat = __fmul_rn(__fsub_rn(p.x[o], m), is);
            sg += (double)g;
            sgx += (double)g * (double)xhat; // exact product: an FMA changes nothing
            if (gx_now) p.gx[o] = __fmul_rn(g, k);
        }
    }
    if (!sums) return;
    gta_bn_block_sum2(sg, sgx, sa, sb);
    if (t == 0) {
        if (p.gb) p.gb[ch] = (float)sg;
        if (p.gw) p.gw[ch] = (float)sgx;
    }
    if (!train || !p.gx) return;
    const double inv_count = 1.0 / (double)count;
    const float mean_gy = (float)(sg * inv_count);
    const float mean_gy_xhat = (float)(sgx * inv_count);
    for (unsigned i = t; i < count; i += GTA_BN_THREADS) {
        const unsigned o = gta_bn_at(i, ch, p.c, p.hw);
        const float xhat = __fmul_rn(__fsub_rn(p.x[o], m), is);
        const float inner =
            __fsub_rn(__fsub_rn(gta_bn_grad(p, o), mean_gy), __fmul_rn(xhat, mean_gy_xhat));
        p.gx[o] = __fmul_rn(k, inner);
    }
}

GTA_KERNEL_BOUNDS(batchnorm_backward_train, BatchNormBackwardParams, GTA_BN_THREADS) {
    gta_bn_backward(p, true);
}

GTA_KERNEL_BOUNDS(batchnorm_backward_eval, BatchNormBackwardParams, GTA_BN_THREADS) {
    gta_bn_backward(p, false);
}
