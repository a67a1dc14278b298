// Concatenation along dim 1 and its split, one part per launch (src/ops/layout.rs is the CPU
// reference). A [N, C, rest...] tensor is N contiguous items of C·prod(rest) values; part j of
// a concatenation is [N][part_block] and sits at columns [offset, offset + part_block) of
// each item of the [N][whole_block] result (G's input [one-hot, embedding, noise]).
//   concat_part  whole[b][offset + j] = part[b][j]
//   split_part   part[b][j] = whole[b][offset + j]      (the backward of concat)
//   one_hot      y[i][c] = (labels[i] == c), a NaN row for a label >= classes (G's class input)
// Launch: 1-D over items·part_block (one_hot: n·classes) elements (grid-stride loop, any grid).
#include "common.cuh"

GTA_KERNEL(concat_part, LayoutPartParams) {
    const unsigned long long total = (unsigned long long)p.items * p.part_block;
    for (unsigned long long i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long b = i / p.part_block, j = i % p.part_block;
        p.dst[b * p.whole_block + p.offset + j] = p.src[i];
    }
}

GTA_KERNEL(split_part, LayoutPartParams) {
    const unsigned long long total = (unsigned long long)p.items * p.part_block;
    for (unsigned long long i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long b = i / p.part_block, j = i % p.part_block;
        p.dst[i] = p.src[b * p.whole_block + p.offset + j];
    }
}

GTA_KERNEL(one_hot, OneHotParams) {
    const unsigned long long total = (unsigned long long)p.n * p.classes;
    for (unsigned long long i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned label = p.labels[i / p.classes];
        const unsigned c = (unsigned)(i % p.classes);
        p.y[i] = label >= p.classes ? GTA_NAN_F : (label == c ? 1.0f : 0.0f);
    }
}
