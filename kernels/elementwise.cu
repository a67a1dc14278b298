// Elementwise f32 kernels over n values:
//   fill   y[i] = value             (fill_u32: the same for u32 labels)
//   copy   y[i] = x[i]             (copy_segments: many buffers in one launch, blockIdx.y =
//                                       segment of a table in device memory)
//   scale  y[i] = a·x[i]               (x and y may be the same buffer)
//   add    y[i] = a[i] + b[i]        (one rounding: the CPU's `a + b`)
//   axpy   y[i] = y[i] + a·x[i]        (product rounded, then the sum: never an FMA, so the
//                                       result equals the CPU's `y + a * x` bit for bit)
// Launch: 1-D, one thread per element (grid-stride loop, any grid).
#include "common.cuh"

#define GTA_FOR_EACH(i, n)                                                                     \
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += gridDim.x * blockDim.x)

GTA_KERNEL(fill_f32, FillParams) {
    GTA_FOR_EACH(i, p.n) p.y[i] = p.value;
}

GTA_KERNEL(fill_u32, FillU32Params) {
    GTA_FOR_EACH(i, p.n) p.y[i] = p.value;
}

GTA_KERNEL(copy_f32, CopyParams) {
    GTA_FOR_EACH(i, p.n) p.y[i] = p.x[i];
}

GTA_KERNEL(copy_segments, CopySegmentsParams) {
    if (blockIdx.y >= p.n_segments) return;
    const CopySegment s = p.segments[blockIdx.y];
    for (unsigned long long i = blockIdx.x * blockDim.x + threadIdx.x; i < s.n;
         i += (unsigned long long)gridDim.x * blockDim.x)
        s.dst[i] = s.src[i];
}

GTA_KERNEL(scale_f32, ScaleParams) {
    GTA_FOR_EACH(i, p.n) p.y[i] = p.a * p.x[i];
}

GTA_KERNEL(add_f32, AddParams) {
    GTA_FOR_EACH(i, p.n) p.y[i] = __fadd_rn(p.a[i], p.b[i]);
}

GTA_KERNEL(axpy_f32, AxpyParams) {
    GTA_FOR_EACH(i, p.n) p.y[i] = __fadd_rn(p.y[i], __fmul_rn(p.a, p.x[i]));
}
