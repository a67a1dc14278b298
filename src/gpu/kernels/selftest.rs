//! Parameter structs of the emulator self-test kernels (kernels/selftest.cu), mirrored from
//! kernels/params.cuh, and the deterministic integer data their tests and benchmark use.

/// `SelftestVecParams`: a float vector in, a result vector out.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SelftestVecParams {
    pub x: u64,
    pub out: u64,
    pub n: u32,
    pub pad: u32,
}

/// `SelftestTransposeParams`: a rows×cols matrix in, its transpose out.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SelftestTransposeParams {
    pub input: u64,
    pub out: u64,
    pub rows: u32,
    pub cols: u32,
}

/// `SelftestIntParams`: integers in, counts out (histogram, atomics).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SelftestIntParams {
    pub x: u64,
    pub out: u64,
    pub n: u32,
    pub bins: u32,
}

const _: () = assert!(std::mem::size_of::<SelftestVecParams>() == 24);
const _: () = assert!(std::mem::size_of::<SelftestTransposeParams>() == 24);
const _: () = assert!(std::mem::size_of::<SelftestIntParams>() == 24);

/// Deterministic pseudo-random integers in [lo, hi) (xorshift64 from `seed`).
pub fn selftest_ints(n: usize, lo: i32, hi: i32, seed: u64) -> Vec<i32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (s % (hi - lo) as u64) as i32
        })
        .collect()
}
