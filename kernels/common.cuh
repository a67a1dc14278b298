// Shared by every kernels/*.cu file, in both builds: NVRTC/nvcc for the GPU, and the CPU SIMT
// emulator (kernels/emu/emu.h is included first and defines GTA_EMU).
//
// THE LAUNCH ABI. Every kernel takes ONE parameter struct by value:
//
//   GTA_KERNEL(my_kernel, MyParams) {   // MyParams lives in kernels/params.cuh, mirrored in
//       ... p.x, p.n ...                // Rust as #[repr(C)], its size asserted on both sides
//   }
//
// On the GPU this is `extern "C" __global__ void my_kernel(const MyParams p)`, launched with
// cuLaunchKernel(params = {&p}). In the emulator it also defines the entry
// `gta_emu_k_my_kernel`, which build.rs finds (a line starting with `GTA_KERNEL(`) and lists in
// the registry that `gta_emu_launch` searches by name: same name, same `void**` array.
// Kernel names are unique across all files.

#pragma once

#ifndef GTA_EMU
// ---- GPU build (NVRTC has no standard headers) ----
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;

#define GTA_KERNEL(name, Params) extern "C" __global__ void name(const Params p)
#define GTA_KERNEL_BOUNDS(name, Params, max_threads)                                           \
    extern "C" __global__ void __launch_bounds__(max_threads) name(const Params p)

// Dynamic shared memory (the size is the launch's dynamic_smem), 16-byte aligned.
template <class T> __device__ __forceinline__ T* gta_dynamic_smem() {
    extern __shared__ __align__(16) unsigned char gta_smem_[];
    return reinterpret_cast<T*>(gta_smem_);
}

// Tensor cores (sm_80+). gta_cvt_tf32: cvt.rna.tf32.f32, the nearest TF32 value (10 mantissa
// bits; ties away from zero) as a .b32 pattern with the low 13 bits zero.
// gta_mma_tf32_m16n8k8: D = A·B + C over one warp (all 32 lanes, converged), A 16×8 row-major,
// B 8×8 column-major, f32 accumulators; fragments in the PTX ISA layout ("Matrix Fragments for
// mma.m16n8k8", .tf32), g = lane >> 2, t = lane % 4:
//   a0 = A[g][t]  a1 = A[g+8][t]  a2 = A[g][t+4]  a3 = A[g+8][t+4]   b0 = B[t][g]  b1 = B[t+4][g]
//   c0/d0 = C[g][2t]  c1/d1 = C[g][2t+1]  c2/d2 = C[g+8][2t]  c3/d3 = C[g+8][2t+1]
// The emulator implements the same (kernels/emu/emu.h, runtime.cpp). Below sm_80 they trap.
__device__ __forceinline__ unsigned gta_cvt_tf32(float x) {
#if __CUDA_ARCH__ >= 800
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#else
    __trap();
    return 0u;
#endif
}
__device__ __forceinline__ void gta_mma_tf32_m16n8k8(float d[4], const unsigned a[4],
                                                     const unsigned b[2], const float c[4]) {
#if __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
          "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    __trap();
#endif
}
#else
// ---- CPU emulator build ----
#define GTA_KERNEL(name, Params)                                                               \
    static void name(const Params p);                                                          \
    extern "C" std::size_t gta_emu_k_##name(void* const* params) {                             \
        if (params) name(*static_cast<const Params*>(params[0]));                              \
        return sizeof(Params);                                                                 \
    }                                                                                          \
    static void name(const Params p)
#define GTA_KERNEL_BOUNDS(name, Params, max_threads) GTA_KERNEL(name, Params)

template <class T> inline T* gta_dynamic_smem() {
    return static_cast<T*>(gta_emu::dynamic_smem());
}
#endif

#include "params.cuh"

#define GTA_FULL_MASK 0xffffffffu
#define GTA_INF_F __int_as_float(0x7f800000)
#define GTA_NAN_F __int_as_float(0x7fc00000)

// Before a fixed-count loop over a register array: it must unroll (a run-time index moves the
// array to local memory). Empty in the emulator.
#ifdef GTA_EMU
#define GTA_UNROLL
#else
#define GTA_UNROLL _Pragma("unroll")
#endif

// Linear thread index within the block and the block's thread count.
__device__ __forceinline__ unsigned gta_tid() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
__device__ __forceinline__ unsigned gta_block_threads() {
    return blockDim.x * blockDim.y * blockDim.z;
}

// Sum over the 32 lanes of a full warp; every lane gets the total.
__device__ __forceinline__ float gta_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(GTA_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ float gta_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(GTA_FULL_MASK, v, o));
    return v;
}

// Sum over the block (blockDim a multiple of 32, at most 1024 threads); every thread gets the
// total. `scratch` holds 32 floats of shared memory; it may be reused after the call returns.
__device__ __forceinline__ float gta_block_sum(float v, float* scratch) {
    const unsigned tid = gta_tid();
    const unsigned warps = gta_block_threads() / 32;
    v = gta_warp_sum(v);
    if (tid % 32 == 0) scratch[tid / 32] = v;
    __syncthreads();
    v = tid % 32 < warps ? scratch[tid % 32] : 0.0f;
    v = gta_warp_sum(v);
    __syncthreads();
    return v;
}
