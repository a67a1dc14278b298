// Launch-parameter structs, one per kernel (or family), mirrored in Rust as #[repr(C)] with the
// same field order. Device pointers are 8 bytes (u64 on the Rust side); pad explicitly so both
// sides agree without relying on implicit padding. Sizes are asserted here and in Rust.

#pragma once

// ---- kernels/selftest.cu (emulator and executor self-tests; mirrored in tests/emulator.rs
// and benches/emu.rs) ----

// x[n] -> out[i] (one value per block: a sum, or a per-element result, see the kernel).
struct SelftestVecParams {
    const float* x;
    float* out;
    unsigned n;
    unsigned pad;
};
static_assert(sizeof(SelftestVecParams) == 24, "SelftestVecParams size");

// in[rows][cols] -> out[cols][rows].
struct SelftestTransposeParams {
    const float* in;
    float* out;
    unsigned rows;
    unsigned cols;
};
static_assert(sizeof(SelftestTransposeParams) == 24, "SelftestTransposeParams size");

// Integer input and output, `n` elements, `bins` histogram bins.
struct SelftestIntParams {
    const int* x;
    int* out;
    unsigned n;
    unsigned bins;
};
static_assert(sizeof(SelftestIntParams) == 24, "SelftestIntParams size");

// ---- kernels/activation.cu (src/gpu/kernels/activation.rs) ----
// Activation codes (GTA_ACT_*): 0 ReLU, 1 LeakyReLU(slope), 2 tanh, 3 sigmoid.
#define GTA_ACT_RELU 0
#define GTA_ACT_LEAKY_RELU 1
#define GTA_ACT_TANH 2
#define GTA_ACT_SIGMOID 3

// y[i] = act(x[i]), i < n.
struct ActivationForwardParams {
    const float* x;
    float* y;
    unsigned n;
    int act;
    float slope;
    unsigned pad;
};
static_assert(sizeof(ActivationForwardParams) == 32, "ActivationForwardParams size");

// gx[i] = act'(x[i] or y[i]) * gy[i], i < n (ReLU/LeakyReLU read x, tanh/sigmoid read y).
struct ActivationBackwardParams {
    const float* x;
    const float* y;
    const float* gy;
    float* gx;
    unsigned n;
    int act;
    float slope;
    unsigned pad;
};
static_assert(sizeof(ActivationBackwardParams) == 48, "ActivationBackwardParams size");

// ---- kernels/elementwise.cu (src/gpu/kernels/elementwise.rs) ----
struct FillParams {
    float* y;
    float value;
    unsigned n;
};
static_assert(sizeof(FillParams) == 16, "FillParams size");

// fill_u32: y[i] = value (labels of a constant class).
struct FillU32Params {
    unsigned* y;
    unsigned value;
    unsigned n;
};
static_assert(sizeof(FillU32Params) == 16, "FillU32Params size");

struct CopyParams {
    const float* x;
    float* y;
    unsigned n;
    unsigned pad;
};
static_assert(sizeof(CopyParams) == 24, "CopyParams size");

// copy_segments: dst_j = src_j for every segment j of a table in device memory (one launch
// for a network's parameter snapshots); blockIdx.y = segment.
struct CopySegment {
    const float* src;
    float* dst;
    unsigned long long n;
};
static_assert(sizeof(CopySegment) == 24, "CopySegment size");
struct CopySegmentsParams {
    const CopySegment* segments;
    unsigned n_segments;
    unsigned pad;
};
static_assert(sizeof(CopySegmentsParams) == 16, "CopySegmentsParams size");

// scale: y = a·x;  axpy: y += a·x (the product rounded, then the sum: no FMA).
struct ScaleParams {
    const float* x;
    float* y;
    float a;
    unsigned n;
};
static_assert(sizeof(ScaleParams) == 24, "ScaleParams size");

struct AxpyParams {
    const float* x;
    float* y;
    float a;
    unsigned n;
};
static_assert(sizeof(AxpyParams) == 24, "AxpyParams size");

// add: y = a + b (one rounding, as the CPU's `a + b`).
struct AddParams {
    const float* a;
    const float* b;
    float* y;
    unsigned n;
    unsigned pad;
};
static_assert(sizeof(AddParams) == 32, "AddParams size");

// ---- kernels/layout.cu (src/gpu/kernels/layout.rs) ----
// One part of a dim-1 concatenation: `part` is [items][part_block], `whole` is
// [items][whole_block]; the part occupies columns [offset, offset + part_block) of each item.
struct LayoutPartParams {
    const float* src;
    float* dst;
    unsigned items;
    unsigned part_block;
    unsigned whole_block;
    unsigned offset;
};
static_assert(sizeof(LayoutPartParams) == 32, "LayoutPartParams size");

// y [n][classes]: y[i][c] = (labels[i] == c); a label >= classes gives a NaN row.
struct OneHotParams {
    const unsigned* labels;
    float* y;
    unsigned n;
    unsigned classes;
};
static_assert(sizeof(OneHotParams) == 24, "OneHotParams size");

// ---- kernels/reduce.cu (src/gpu/kernels/loss.rs) ----
// out[0] = (Σ x[i], i < n, in a fixed tree order) / divisor. One block of GTA_REDUCE_THREADS.
#define GTA_REDUCE_THREADS 256
struct SumParams {
    const float* x;
    float* out;
    unsigned n;
    float divisor;
};
static_assert(sizeof(SumParams) == 24, "SumParams size");

// ---- kernels/loss.cu (src/gpu/kernels/loss.rs) ----
// Softmax cross-entropy over logits [n][k] with labels[n]. Forward: rows[i] = lse(row) −
// row[label] (then reduce.cu's sum / n). Backward: dx = (g[0]/n)·(softmax − onehot); `g` is a
// device scalar (the loss's gradient), `rows` unused.
struct CrossEntropyParams {
    const float* logits;
    const unsigned* labels;
    const float* g;
    float* out;
    unsigned n;
    unsigned k;
};
static_assert(sizeof(CrossEntropyParams) == 40, "CrossEntropyParams size");

// BCE with logits over x[n]; target per element (`target` non-null) or `target_const`.
// Forward: out[i] = max(x,0) − x·t + log1p(exp(−|x|)) (then the sum / n). Backward:
// out[i] = (g[0]/n)·(sigmoid(x) − t).
struct BceParams {
    const float* x;
    const float* target;
    const float* g;
    float* out;
    unsigned n;
    float target_const;
};
static_assert(sizeof(BceParams) == 40, "BceParams size");

// Fused loss + gradient, ONE block of exactly GTA_REDUCE_THREADS threads (any other shape
// writes NaN to out[0]). Cross-entropy over logits [n][k] (`x`, `labels`; `target*` unused) or
// BCE with logits over x[n] (target per element or `target_const`; `labels`, `k` unused):
// out[0] = (Σ terms, in reduce.cu's order) / divisor, and, when `grad` is non-null, the
// gradient of the SUM of the terms (softmax − onehot; sigmoid(x) − t) into grad.
struct LossFusedParams {
    const float* x;
    const unsigned* labels;
    const float* target;
    float* out;
    float* grad;
    unsigned n;
    unsigned k;
    float target_const;
    float divisor;
};
static_assert(sizeof(LossFusedParams) == 56, "LossFusedParams size");

// The backward of a fused loss: out[i] = (g[0]/divisor)·grad[i] (`g` the device scalar
// gradient of the mean loss; grad what LossFusedParams wrote).
struct LossGradScaleParams {
    const float* grad;
    const float* g;
    float* out;
    unsigned n;
    float divisor;
};
static_assert(sizeof(LossGradScaleParams) == 32, "LossGradScaleParams size");

// Number of rows whose argmax equals the label -> out[0] (added to it when `accumulate`).
// One block of GTA_REDUCE_THREADS threads.
struct CountCorrectParams {
    const float* logits;
    const unsigned* labels;
    unsigned* out;
    unsigned n;
    unsigned k;
    unsigned accumulate;
    unsigned pad;
};
static_assert(sizeof(CountCorrectParams) == 40, "CountCorrectParams size");

// ---- kernels/adam.cu (src/gpu/kernels/adam.rs) ----
// One Adam step over n flat values; scalars precomputed on the host as src/ops/adam.rs does.
struct AdamParams {
    float* param;
    const float* grad;
    float* m;
    float* v;
    float w;
    float w_minus_1;
    float beta2;
    float one_minus_beta2;
    float bc2_sqrt;
    float eps;
    float neg_step_size;
    unsigned small;
    unsigned n;
    unsigned pad;
};
static_assert(sizeof(AdamParams) == 72, "AdamParams size");

// Adam over several parameter tensors in one launch (one network): blockIdx.y = segment.
struct AdamSegment {
    float* param;
    const float* grad;
    float* m;
    float* v;
    unsigned long long n;
};
static_assert(sizeof(AdamSegment) == 40, "AdamSegment size");
// The two scalars that change with the step and the learning rate.
struct AdamStepScalars {
    float neg_step_size;
    float bc2_sqrt;
};
static_assert(sizeof(AdamStepScalars) == 8, "AdamStepScalars size");
// With `table` non-null the step scalars are table[*step · slots + slot] (a schedule in device
// memory, so a replayed CUDA graph reads the current iteration's); else the two fields here.
struct AdamMultiParams {
    const AdamSegment* segments;
    const AdamStepScalars* table;
    const unsigned* step;
    float w;
    float w_minus_1;
    float beta2;
    float one_minus_beta2;
    float eps;
    float neg_step_size;
    float bc2_sqrt;
    unsigned small;
    unsigned slots;
    unsigned slot;
    unsigned n_segments;
    unsigned steps; // rows of `table`; a step beyond makes the update NaN (caught by the run)
};
static_assert(sizeof(AdamMultiParams) == 72, "AdamMultiParams size");

// ---- kernels/rng.cu (src/gpu/kernels/rng.rs) ----
// out[i] = the standard normal number at position offset + i of (seed, stream), i < n; with
// `offsets` non-null the position is offset + offsets[*step] + i (a schedule in device memory).
struct NormalParams {
    float* out;
    unsigned long long seed;
    unsigned long long stream;
    unsigned long long offset;
    const unsigned long long* offsets;
    const unsigned* step;
    unsigned n;
    unsigned steps; // entries of `offsets`; a step beyond gives NaN
};
static_assert(sizeof(NormalParams) == 56, "NormalParams size");

// ---- kernels/data.cu (src/gpu/kernels/data.rs) ----
// Batch gather: images u8 [N][c][h][w] (c = 1 or 3), indices[b] -> out f32 [b][3][oh][ow]
// normalized, and (when out_d is non-null) the [−1, 1] view. mode 0: h == oh and w == ow
// (copy); 1: horizontal pass then vertical; 2: vertical then horizontal (Pillow's order).
// Tables per axis (src/data/resize.rs): bounds[2·o] = first input index, bounds[2·o+1] = taps,
// k[o·ksize + t] = 22-bit fixed-point weight.
struct GatherParams {
    const unsigned char* images;
    const unsigned* indices;
    float* out;
    float* out_d;
    const int* h_bounds;
    const int* h_k;
    const int* v_bounds;
    const int* v_k;
    const unsigned* step;          // non-null: the rows are indices[*step · b ..] (a schedule)
    const unsigned char* labels;   // non-null: labels_out[j] = labels[row j] (u8 dataset labels)
    unsigned* labels_out;
    unsigned b;
    unsigned c;
    unsigned h;
    unsigned w;
    unsigned oh;
    unsigned ow;
    unsigned h_ksize;
    unsigned v_ksize;
    unsigned mode;
    unsigned n_images; // an index >= n_images gives NaN values, never an out-of-bounds read
    unsigned steps;    // under a schedule: rows for this many steps; a step beyond gives NaN
    unsigned pad;
};
static_assert(sizeof(GatherParams) == 136, "GatherParams size");

// ---- kernels/schedule.cu (src/gpu/kernels/schedule.rs) ----
// The device cursor of a schedule: *step += 1 (the last launch of a scheduled iteration).
struct ScheduleAdvanceParams {
    unsigned* step;
    unsigned by;
    unsigned pad;
};
static_assert(sizeof(ScheduleAdvanceParams) == 16, "ScheduleAdvanceParams size");

// ---- kernels/conv.cu (src/gpu/kernels/conv.rs) ----
// One geometry for every GEMM pass: im [n][c_im][ih][iw], col [n][c_col][oh][ow], weight
// [c_col][c_im][kh][kw] (a conv-transpose has its input on the col side). Which pointers are
// read and what `out` is depends on the kernel (see conv.cu); unused pointers are null.
// `k_chunk`: the reduction length per gridDim.z slice (wgrad splits; ≥ K otherwise).
// `act`: a GTA_ACT_* code (ReLU or LeakyReLU with `slope`) or −1 for none.
struct ConvParams {
    const float* im;
    const float* col;
    const float* wt;
    const float* bias;
    float* out;
    unsigned n;
    unsigned c_im;
    unsigned ih;
    unsigned iw;
    unsigned c_col;
    unsigned oh;
    unsigned ow;
    unsigned kh;
    unsigned kw;
    unsigned stride;
    unsigned pad;
    unsigned k_chunk;
    int act;
    float slope;
};
static_assert(sizeof(ConvParams) == 96, "ConvParams size");

// out[i] = Σ_{s < splits} parts[s·len + i], in order of s.
struct ConvSplitSumParams {
    const float* parts;
    float* out;
    unsigned len;
    unsigned splits;
};
static_assert(sizeof(ConvSplitSumParams) == 24, "ConvSplitSumParams size");

// gb[ch] = Σ gy[b][ch][q] over b < n, q < hw.
struct ConvBiasGradParams {
    const float* gy;
    float* gb;
    unsigned n;
    unsigned c;
    unsigned hw;
    unsigned pad;
};
static_assert(sizeof(ConvBiasGradParams) == 32, "ConvBiasGradParams size");

// ---- kernels/batchnorm.cu (src/gpu/kernels/batchnorm.rs) ----
// x is [n][c][hw] (NCHW with hw = H·W); per-channel vectors have c elements. One block of
// GTA_BN_THREADS threads per channel (train forward, both backwards); the eval forward is a
// 2-D grid (x: chunks of the channel's n·hw values, y: the channel).
#define GTA_BN_THREADS 256
// Fused activation after the normalization: GTA_BN_ACT_NONE, or GTA_ACT_RELU /
// GTA_ACT_LEAKY_RELU (with `slope`).
#define GTA_BN_ACT_NONE (-1)

// Forward. Train: batch statistics -> save_mean, save_invstd; running_mean/var updated in
// place (PyTorch's rule). Eval: normalizes with running_mean/var (read only); save_* unused.
struct BatchNormForwardParams {
    const float* x;
    const float* weight;
    const float* bias;
    float* y;
    float* running_mean;
    float* running_var;
    float* save_mean;
    float* save_invstd;
    unsigned n;
    unsigned c;
    unsigned hw;
    int act;
    float eps;
    float momentum;
    float slope;
    unsigned pad;
};
static_assert(sizeof(BatchNormForwardParams) == 96, "BatchNormForwardParams size");

// Backward. Train: `mean`/`stat` are the saved batch mean and invstd. Eval: the running mean
// and running var (invstd = 1/sqrt(var + eps), as the CPU computes it). gx, gw, gb may each be
// null (not computed). `act` (GTA_BN_ACT_NONE, GTA_ACT_RELU or GTA_ACT_LEAKY_RELU with
// `slope`) is the forward's fused activation: `gy` is then the gradient of its output `y`
// (read only when act ≠ GTA_BN_ACT_NONE; may be null otherwise).
struct BatchNormBackwardParams {
    const float* x;
    const float* weight;
    const float* gy;
    const float* y;
    const float* mean;
    const float* stat;
    float* gx;
    float* gw;
    float* gb;
    unsigned n;
    unsigned c;
    unsigned hw;
    float eps;
    int act;
    float slope;
};
static_assert(sizeof(BatchNormBackwardParams) == 96, "BatchNormBackwardParams size");

// ---- kernels/pool.cu (src/gpu/kernels/pool.rs) ----
// Max pool, kernel = stride = k, floor mode: x [planes][h][w] -> y, argmax [planes][ho][wo]
// with ho = h / k, wo = w / k. argmax is the plane-relative input index ih·w + iw.
struct MaxPoolForwardParams {
    const float* x;
    float* y;
    unsigned* argmax;
    unsigned planes;
    unsigned h;
    unsigned w;
    unsigned k;
    unsigned ho;
    unsigned wo;
};
static_assert(sizeof(MaxPoolForwardParams) == 48, "MaxPoolForwardParams size");

// gx [planes][h][w] (every element written) from gy, argmax [planes][ho][wo].
struct MaxPoolBackwardParams {
    const float* gy;
    const unsigned* argmax;
    float* gx;
    unsigned planes;
    unsigned h;
    unsigned w;
    unsigned k;
    unsigned ho;
    unsigned wo;
};
static_assert(sizeof(MaxPoolBackwardParams) == 48, "MaxPoolBackwardParams size");

// ---- kernels/linear.cu (src/gpu/kernels/linear.rs) ----
// C[m][n] = Σ_k A(m, k)·B(k, n) (+ bias[n] when non-null), all row-major, where the kernel
// name gives the layouts: linear_gemm_nt: A = a[m][k], B = b[n][k] (y = x·Wᵀ + b);
// linear_gemm_nn: A = a[m][k], B = b[k][n] (gx = gy·W); linear_gemm_tn: A = a[k][m],
// B = b[k][n] (gw = gyᵀ·x). Tiles GTA_GEMM_BM × GTA_GEMM_BN, GTA_GEMM_BK deep,
// GTA_GEMM_THREADS threads. bias_cols: db[j] = Σ_i a[i][j] (m rows, n columns; b, c unused
// except c = db).
#define GTA_GEMM_BM 64
#define GTA_GEMM_BN 64
#define GTA_GEMM_BK 16
#define GTA_GEMM_THREADS 256
struct GemmParams {
    const float* a;
    const float* b;
    const float* bias;
    float* c;
    unsigned m;
    unsigned n;
    unsigned k;
    unsigned pad;
};
static_assert(sizeof(GemmParams) == 48, "GemmParams size");
