// Standard normal noise from Philox-4x32-10, bit-identical to src/rng.rs `normal(seed, stream,
// offset, out)`: position q = offset + i (wrapping u64) lies in block b = q/4, lane q%4; the
// block is philox4x32_10(counter = [b lo, b hi, stream lo, stream hi], key = [seed lo, seed hi])
// and its lanes (a0, a1, a2, a3) become two Box–Muller pairs in double precision, each value
// rounded once to f32:
//   u(a) = (a + 0.5)/2^32, r = sqrt(−2·log u(a0)), θ = 2π·u(a1): (r·cos θ, r·sin θ); same for a2, a3.
// Any offset and split give the same numbers (each thread computes its own block).
// On the emulator log/sqrt/sin/cos are the host's libm, exactly what Rust's f64 methods call,
// so the emulator output is bit-identical. On a GPU CUDA's double log/sin/cos are not
// correctly rounded (errors of 1–2 ulp in f64, far below the f32 rounding that follows, but a
// value that lands on an f32 rounding boundary could differ): bit-identity on the device is
// checked by scripts/gpu-check.sh.
// With `offsets` set, the offset is offset + offsets[*step] (a schedule in device memory).
// Launch: 1-D, one thread per output value (grid-stride loop, any grid).
#include "common.cuh"

__device__ __forceinline__ void gta_philox4x32_10(unsigned c[4], unsigned k0, unsigned k1) {
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const unsigned long long p0 = (unsigned long long)0xD2511F53u * c[0];
        const unsigned long long p1 = (unsigned long long)0xCD9E8D57u * c[2];
        const unsigned n0 = (unsigned)(p1 >> 32) ^ c[1] ^ k0;
        const unsigned n1 = (unsigned)p1;
        const unsigned n2 = (unsigned)(p0 >> 32) ^ c[3] ^ k1;
        const unsigned n3 = (unsigned)p0;
        c[0] = n0;
        c[1] = n1;
        c[2] = n2;
        c[3] = n3;
    }
}

__device__ __forceinline__ double gta_open_unit(unsigned x) {
    return ((double)x + 0.5) * (1.0 / 4294967296.0);
}

GTA_KERNEL(normal_f32, NormalParams) {
    // Under a schedule the iteration's offset is read from device memory (graph replays).
    const bool past_end = p.offsets && *p.step >= p.steps;
    const unsigned long long base = p.offset + (p.offsets && !past_end ? p.offsets[*p.step] : 0ull);
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x) {
        const unsigned long long q = base + i; // wraps like the reference
        const unsigned long long b = q / 4;
        const unsigned lane = (unsigned)(q % 4);
        unsigned c[4] = {(unsigned)b, (unsigned)(b >> 32), (unsigned)p.stream,
                         (unsigned)(p.stream >> 32)};
        gta_philox4x32_10(c, (unsigned)p.seed, (unsigned)(p.seed >> 32));
        const unsigned pair = lane / 2;
        const double r = sqrt(-2.0 * log(gta_open_unit(c[2 * pair])));
        const double theta = 6.283185307179586 * gta_open_unit(c[2 * pair + 1]);
        p.out[i] = past_end ? GTA_NAN_F : (float)(lane % 2 == 0 ? r * cos(theta) : r * sin(theta));
    }
}
