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
