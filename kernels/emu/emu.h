// gtadapt SIMT emulator: the header that lets kernels/*.cu compile as C++20 and run on a CPU.
//
// Use: build.rs compiles each kernels/<file>.cu through a generated wrapper
//   #include "emu.h"
//   namespace gta_emu_mod_<file> {
//   #include "<file>.cu"
//   }
// (each .cu is its own module, as on the GPU, so helpers with the same name in two files do
// not clash). A single file also compiles directly:
//   g++ -std=c++20 -x c++ -include kernels/emu/emu.h -c kernels/<file>.cu
//
// Execution model (kernels/emu/runtime.cpp): blocks run one at a time on the calling thread
// (GTA_EMU_THREADS=N runs blocks in parallel on N OS threads, each block on one). Within a
// block every CUDA thread is a user-space fiber with its own stack (GTA_EMU_STACK_KB, default
// 64 KiB, with a guard page). A fiber runs until it reaches a barrier (__syncthreads*, a warp
// collective) or returns; then the next fiber runs. Warps are scheduled one after another:
// a warp runs until all its lanes wait at __syncthreads or have exited, resolving its warp
// collectives on the way. The context switch is a few lines of x86-64 assembly (no syscall);
// other architectures, or GTA_EMU_SWITCH=ucontext, use glibc's swapcontext.
//
// Detected and reported as a launch error (never a hang):
//   - threads waiting at __syncthreads while other threads of the block have exited;
//   - threads waiting at different __syncthreads call sites;
//   - a warp collective whose mask names a lane that exited, waits at __syncthreads, or waits
//     in a different collective (other mask/operation); a mask without the calling lane;
//   - a shuffle that reads a lane outside its mask (undefined on the GPU);
//   - width not a power of two in [1, 32].
// Not detected: data races (e.g. a missing __syncthreads), out-of-bounds accesses.
//
// SUPPORTED (exactly this; anything else must fail to compile under emulation):
//   qualifiers   __global__ __device__ __host__ __forceinline__ __noinline__ __restrict__
//                __launch_bounds__(...) __align__(n), as no-ops / plain C++ equivalents
//   shared mem   `__shared__ T x[N];` at function or file scope (block-shared storage, not
//                zeroed, kept between blocks like on the GPU: i.e. undefined at block start);
//                dynamic shared memory only through gta_dynamic_smem<T>() (kernels/common.cuh);
//                `extern __shared__` does NOT compile. Dynamic shared memory is filled with
//                0xFF bytes (a NaN for f32) at every block start.
//   built-ins    threadIdx blockIdx (uint3), blockDim gridDim (dim3), warpSize
//   types        dim3 uint3 float2 float4 int2 int4 (CUDA alignment), make_uint3
//                make_float2 make_float4 make_int2 make_int4; <cstdint> integer types
//   barriers     __syncthreads __syncthreads_count __syncthreads_and __syncthreads_or
//                __syncwarp(mask)
//   warp         __shfl_sync __shfl_up_sync __shfl_down_sync __shfl_xor_sync for int,
//                unsigned, long long, unsigned long long, float, double (width defaults to
//                32); __ballot_sync __any_sync __all_sync __activemask
//   atomics      atomicAdd (int, unsigned, unsigned long long, float, double),
//                atomicMax/atomicMin (int, unsigned), atomicCAS (int, unsigned,
//                unsigned long long), atomicExch (int, unsigned, float);
//                __threadfence __threadfence_block
//   math (f32)   expf logf sqrtf rsqrtf tanhf fmaxf fminf fabsf __expf __logf fmaf floorf
//                ceilf __fdividef log1pf; min/max for int, unsigned, long long, unsigned long
//                long, float, double; __float_as_uint __uint_as_float __float_as_int
//                __int_as_float; __fadd_rn __fsub_rn __fmul_rn __fdiv_rn (IEEE f32 ops the
//                GPU compiler never contracts into an FMA: used where bit parity with the CPU
//                reference needs the separate roundings)
//   math (f64)   log sqrt sin cos (host libm; on the GPU these are CUDA's double-precision
//                functions, which are NOT all correctly rounded: kernels that need bit parity
//                through them say so, and scripts/gpu-check.sh checks it on the device)
//   tensor core  gta_mma_tf32_m16n8k8(d, a, b, c) (mma.sync.aligned.m16n8k8.row.col.f32.tf32
//                .tf32.f32, full warp, PTX ISA fragment layouts: see gta_emu::mma_tf32 in
//                runtime.cpp) and gta_cvt_tf32(x) (cvt.rna.tf32.f32), both from
//                kernels/common.cuh's names
//   misc         printf (<cstdio>), nullptr, sizeof, templates, constexpr
// <math.h>/<cmath> are deliberately NOT included: an unlisted math function does not compile.
// To support something new, add it here, to the CUDA side of kernels/common.cuh if needed,
// and a kernel exercising it to kernels/selftest.cu.

#pragma once

#define GTA_EMU 1

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <source_location>

// ---------------------------------------------------------------------------------------------
// Qualifiers. __device__ is empty (not `static`) so member functions may carry it; each .cu is
// wrapped in its own namespace by build.rs, which gives the per-module linkage of the GPU.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One copy per OS thread; all fibers of a block run on one OS thread and one block runs on an
// OS thread at a time, so this is exactly block-shared storage.
#define __shared__ static thread_local

// ---------------------------------------------------------------------------------------------
// Vector types and built-in variables.
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};
struct __align__(8) float2 {
    float x, y;
};
struct __align__(16) float4 {
    float x, y, z, w;
};
struct __align__(8) int2 {
    int x, y;
};
struct __align__(16) int4 {
    int x, y, z, w;
};
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }

// Set by the scheduler for the fiber that runs (see runtime.cpp).
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

// ---------------------------------------------------------------------------------------------
// Runtime entry points (runtime.cpp). They are opaque calls on purpose: the compiler must assume
// they read and write any shared/global memory, so nothing is cached across a barrier.
namespace gta_emu {
enum class WarpOp : unsigned char {
    Sync, ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, Any, All, MmaTf32
};

int block_barrier(int kind, int predicate, std::source_location loc);
unsigned long long warp_collective(WarpOp op, unsigned mask, unsigned long long value,
                                   unsigned arg, int width, std::source_location loc);
unsigned current_lane();
void* dynamic_smem();

template <class T> inline unsigned long long to_bits(T v) {
    static_assert(sizeof(T) <= 8);
    unsigned long long b = 0;
    __builtin_memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T> inline T from_bits(unsigned long long b) {
    T v;
    __builtin_memcpy(&v, &b, sizeof(T));
    return v;
}
} // namespace gta_emu

#define GTA_EMU_LOC std::source_location loc = std::source_location::current()

inline void __syncthreads(GTA_EMU_LOC) { gta_emu::block_barrier(0, 0, loc); }
inline int __syncthreads_count(int pred, GTA_EMU_LOC) {
    return gta_emu::block_barrier(1, pred != 0, loc);
}
inline int __syncthreads_and(int pred, GTA_EMU_LOC) {
    return gta_emu::block_barrier(2, pred != 0, loc);
}
inline int __syncthreads_or(int pred, GTA_EMU_LOC) {
    return gta_emu::block_barrier(3, pred != 0, loc);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, GTA_EMU_LOC) {
    gta_emu::warp_collective(gta_emu::WarpOp::Sync, mask, 0, 0, 32, loc);
}
inline unsigned __ballot_sync(unsigned mask, int pred, GTA_EMU_LOC) {
    return (unsigned)gta_emu::warp_collective(gta_emu::WarpOp::Ballot, mask, pred != 0, 0, 32,
                                              loc);
}
inline int __any_sync(unsigned mask, int pred, GTA_EMU_LOC) {
    return (int)gta_emu::warp_collective(gta_emu::WarpOp::Any, mask, pred != 0, 0, 32, loc);
}
inline int __all_sync(unsigned mask, int pred, GTA_EMU_LOC) {
    return (int)gta_emu::warp_collective(gta_emu::WarpOp::All, mask, pred != 0, 0, 32, loc);
}
// Lanes of the warp that exist and have not exited (no divergence tracking inside a warp).
unsigned __activemask();

// Shuffles: one non-template overload per supported type, so an unsupported type is an error.
#define GTA_EMU_SHFL(T)                                                                        \
    inline T __shfl_sync(unsigned mask, T v, int src, int width = 32, GTA_EMU_LOC) {           \
        return gta_emu::from_bits<T>(gta_emu::warp_collective(                                 \
            gta_emu::WarpOp::ShflIdx, mask, gta_emu::to_bits(v), (unsigned)src, width, loc));  \
    }                                                                                          \
    inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32, GTA_EMU_LOC) {     \
        return gta_emu::from_bits<T>(gta_emu::warp_collective(                                 \
            gta_emu::WarpOp::ShflUp, mask, gta_emu::to_bits(v), d, width, loc));               \
    }                                                                                          \
    inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32, GTA_EMU_LOC) {   \
        return gta_emu::from_bits<T>(gta_emu::warp_collective(                                 \
            gta_emu::WarpOp::ShflDown, mask, gta_emu::to_bits(v), d, width, loc));             \
    }                                                                                          \
    inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32, GTA_EMU_LOC) {         \
        return gta_emu::from_bits<T>(gta_emu::warp_collective(                                 \
            gta_emu::WarpOp::ShflXor, mask, gta_emu::to_bits(v), (unsigned)m, width, loc));    \
    }
GTA_EMU_SHFL(int)
GTA_EMU_SHFL(unsigned)
GTA_EMU_SHFL(long long)
GTA_EMU_SHFL(unsigned long long)
GTA_EMU_SHFL(float)
GTA_EMU_SHFL(double)
#undef GTA_EMU_SHFL

// ---------------------------------------------------------------------------------------------
// Tensor cores: TF32 mma.sync m16n8k8 (D = A·B + C, A 16×8 row-major, B 8×8 column-major, C and
// D 16×8, f32 accumulators). Each lane passes its fragment registers in the PTX ISA layout
// (section "Matrix Fragments for mma.m16n8k8", .tf32); the warp collective gathers the 32
// lanes' fragments, computes the product once and hands each lane its D fragment (see
// gta_emu::mma_tf32 in runtime.cpp). All 32 lanes must take part (mask 0xffffffff), as on the
// GPU.
namespace gta_emu {
struct MmaTf32Frag {
    unsigned a[4];
    unsigned b[2];
    float c[4];
    float d[4];
};
} // namespace gta_emu
inline void gta_mma_tf32_m16n8k8(float d[4], const unsigned a[4], const unsigned b[2],
                                 const float c[4], GTA_EMU_LOC) {
    gta_emu::MmaTf32Frag f;
    for (int i = 0; i < 4; ++i) f.a[i] = a[i], f.c[i] = c[i];
    f.b[0] = b[0], f.b[1] = b[1];
    gta_emu::warp_collective(gta_emu::WarpOp::MmaTf32, 0xffffffffu,
                             (unsigned long long)(std::uintptr_t)&f, 0, 32, loc);
    for (int i = 0; i < 4; ++i) d[i] = f.d[i];
}
// cvt.rna.tf32.f32: round to the nearest TF32 value (10 explicit mantissa bits, the low 13
// bits of the f32 pattern zero), ties away from zero; NaN gives the canonical NaN, ±inf stays.
inline unsigned gta_cvt_tf32(float x) {
    unsigned u = gta_emu::from_bits<unsigned>(gta_emu::to_bits(x));
    if ((u & 0x7f800000u) == 0x7f800000u) return (u & 0x007fffffu) ? 0x7fffffffu : u;
    // Sign-magnitude: adding half an ulp of TF32 to the magnitude rounds ties away from zero
    // (a carry into the exponent is the correct next binade, or infinity).
    return (u + 0x1000u) & 0xffffe000u;
}

// ---------------------------------------------------------------------------------------------
// Atomics. Blocks may run on several OS threads, so these are real atomics (relaxed, like
// CUDA's); fibers of one block never switch inside one.
#define GTA_EMU_ATOMIC_ADD(T)                                                                  \
    inline T atomicAdd(T* a, T v) {                                                            \
        return std::atomic_ref<T>(*a).fetch_add(v, std::memory_order_relaxed);                 \
    }
GTA_EMU_ATOMIC_ADD(int)
GTA_EMU_ATOMIC_ADD(unsigned)
GTA_EMU_ATOMIC_ADD(unsigned long long)
GTA_EMU_ATOMIC_ADD(float)
GTA_EMU_ATOMIC_ADD(double)
#undef GTA_EMU_ATOMIC_ADD

#define GTA_EMU_ATOMIC_MINMAX(T)                                                               \
    inline T atomicMax(T* a, T v) {                                                            \
        std::atomic_ref<T> r(*a);                                                              \
        T old = r.load(std::memory_order_relaxed);                                             \
        while (old < v && !r.compare_exchange_weak(old, v, std::memory_order_relaxed)) {       \
        }                                                                                      \
        return old;                                                                            \
    }                                                                                          \
    inline T atomicMin(T* a, T v) {                                                            \
        std::atomic_ref<T> r(*a);                                                              \
        T old = r.load(std::memory_order_relaxed);                                             \
        while (old > v && !r.compare_exchange_weak(old, v, std::memory_order_relaxed)) {       \
        }                                                                                      \
        return old;                                                                            \
    }
GTA_EMU_ATOMIC_MINMAX(int)
GTA_EMU_ATOMIC_MINMAX(unsigned)
#undef GTA_EMU_ATOMIC_MINMAX

#define GTA_EMU_ATOMIC_CAS(T)                                                                  \
    inline T atomicCAS(T* a, T expected, T desired) {                                          \
        std::atomic_ref<T>(*a).compare_exchange_strong(expected, desired,                      \
                                                       std::memory_order_relaxed);             \
        return expected;                                                                       \
    }
GTA_EMU_ATOMIC_CAS(int)
GTA_EMU_ATOMIC_CAS(unsigned)
GTA_EMU_ATOMIC_CAS(unsigned long long)
#undef GTA_EMU_ATOMIC_CAS

#define GTA_EMU_ATOMIC_EXCH(T)                                                                 \
    inline T atomicExch(T* a, T v) {                                                           \
        return std::atomic_ref<T>(*a).exchange(v, std::memory_order_relaxed);                  \
    }
GTA_EMU_ATOMIC_EXCH(int)
GTA_EMU_ATOMIC_EXCH(unsigned)
GTA_EMU_ATOMIC_EXCH(float)
#undef GTA_EMU_ATOMIC_EXCH

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_signal_fence(std::memory_order_seq_cst); }

// ---------------------------------------------------------------------------------------------
// Math: compiler built-ins (libm where needed), without declaring the rest of <math.h>.
inline float expf(float x) { return __builtin_expf(x); }
inline float logf(float x) { return __builtin_logf(x); }
inline float sqrtf(float x) { return __builtin_sqrtf(x); }
inline float rsqrtf(float x) { return 1.0f / __builtin_sqrtf(x); }
inline float tanhf(float x) { return __builtin_tanhf(x); }
inline float fmaxf(float a, float b) { return __builtin_fmaxf(a, b); }
inline float fminf(float a, float b) { return __builtin_fminf(a, b); }
inline float fabsf(float x) { return __builtin_fabsf(x); }
inline float __expf(float x) { return __builtin_expf(x); }
inline float __logf(float x) { return __builtin_logf(x); }
inline float fmaf(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
inline float floorf(float x) { return __builtin_floorf(x); }
inline float ceilf(float x) { return __builtin_ceilf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float log1pf(float x) { return __builtin_log1pf(x); }
// Separately rounded f32 operations (C++ without -ffp-contract=fast never fuses anyway; on the
// GPU these keep nvcc/NVRTC from contracting a*b+c into one FMA).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double log(double x) { return __builtin_log(x); }
inline double sqrt(double x) { return __builtin_sqrt(x); }
inline double sin(double x) { return __builtin_sin(x); }
inline double cos(double x) { return __builtin_cos(x); }
#define GTA_EMU_MINMAX(T)                                                                      \
    inline T min(T a, T b) { return b < a ? b : a; }                                           \
    inline T max(T a, T b) { return a < b ? b : a; }
GTA_EMU_MINMAX(int)
GTA_EMU_MINMAX(unsigned)
GTA_EMU_MINMAX(long long)
GTA_EMU_MINMAX(unsigned long long)
#undef GTA_EMU_MINMAX
inline float min(float a, float b) { return __builtin_fminf(a, b); }
inline float max(float a, float b) { return __builtin_fmaxf(a, b); }
inline double min(double a, double b) { return __builtin_fmin(a, b); }
inline double max(double a, double b) { return __builtin_fmax(a, b); }
inline unsigned __float_as_uint(float x) { return gta_emu::from_bits<unsigned>(gta_emu::to_bits(x)); }
inline float __uint_as_float(unsigned x) { return gta_emu::from_bits<float>(gta_emu::to_bits(x)); }
inline int __float_as_int(float x) { return gta_emu::from_bits<int>(gta_emu::to_bits(x)); }
inline float __int_as_float(int x) { return gta_emu::from_bits<float>(gta_emu::to_bits(x)); }

// ---------------------------------------------------------------------------------------------
// The launch ABI (used by GTA_KERNEL in kernels/common.cuh and by the registry build.rs
// generates): an entry called with the cuLaunchKernel-style parameter array runs the kernel
// for the current thread; called with nullptr it returns sizeof(the parameter struct).
namespace gta_emu {
using KernelEntry = std::size_t (*)(void* const* params);
}
