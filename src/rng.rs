//! Counter-based random numbers: Philox-4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel
//! Random Numbers: As Easy as 1, 2, 3", SC 2011; the Random123 library).
//!
//! A sequence is named by `(seed, stream)`; its numbers are indexed by a position `p`. The
//! value at `p` is a pure function of `(seed, stream, p)`, so any slice of the sequence can
//! be drawn independently, in any order, on the CPU or by a GPU kernel that runs the same
//! arithmetic — the CPU and CUDA backends draw the very same noise and shuffles.
//!
//! Layout: position `p` is lane `p % 4` of Philox block `b = p / 4`, computed with
//! counter `[b lo, b hi, stream lo, stream hi]` and key `[seed lo, seed hi]`.
//! Normals use Box–Muller on the lane pairs (0, 1) and (2, 3) of a block, in f64, rounded
//! once to f32: an f64 implementation of `ln`, `sqrt`, `cos`, `sin` that is off by an ulp
//! moves the f64 result by ~1e-16 relative, which changes the f32 rounding only in rare
//! ties, so a GPU doing the same f64 math matches to the bit in practice.

use std::f64::consts::TAU;

/// Philox-4x32 round multipliers and Weyl key increments (Random123's PHILOX_M4x32_0/1 and
/// PHILOX_W32_0/1).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox-4x32 with `rounds` rounds; the key is bumped between rounds.
fn philox4x32(rounds: u32, counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for r in 0..rounds {
        if r > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = M0 as u64 * c[0] as u64;
        let p1 = M1 as u64 * c[2] as u64;
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

/// One Philox-4x32-10 block: 10 rounds, multipliers 0xD2511F53, 0xCD9E8D57, Weyl key
/// increments 0x9E3779B9, 0xBB67AE85.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    philox4x32(10, counter, key)
}

/// The four raw lanes of block `b` of the sequence `(seed, stream)`.
fn block(seed: u64, stream: u64, b: u64) -> [u32; 4] {
    philox4x32_10(
        [
            b as u32,
            (b >> 32) as u32,
            stream as u32,
            (stream >> 32) as u32,
        ],
        [seed as u32, (seed >> 32) as u32],
    )
}

/// A lane as a uniform number in (0, 1): never 0, so `ln` stays finite.
fn open_unit(x: u32) -> f64 {
    (x as f64 + 0.5) * (1.0 / 4_294_967_296.0)
}

/// Box–Muller on one block: lanes (0, 1) and (2, 3) each give (r·cos θ, r·sin θ).
fn block_normals(lanes: [u32; 4]) -> [f32; 4] {
    let pair = |a: u32, b: u32| {
        let r = (-2.0 * open_unit(a).ln()).sqrt();
        let theta = TAU * open_unit(b);
        ((r * theta.cos()) as f32, (r * theta.sin()) as f32)
    };
    let (n0, n1) = pair(lanes[0], lanes[1]);
    let (n2, n3) = pair(lanes[2], lanes[3]);
    [n0, n1, n2, n3]
}

/// Fills `out` with `f(block lanes)[p % 4]` for positions `offset..offset + out.len()`
/// (positions wrap modulo 2^64), computing each block once.
fn fill<V: Copy>(
    seed: u64,
    stream: u64,
    offset: u64,
    out: &mut [V],
    f: impl Fn([u32; 4]) -> [V; 4],
) {
    let mut p = offset;
    let mut i = 0;
    while i < out.len() {
        let lane = (p % 4) as usize;
        let vals = f(block(seed, stream, p / 4));
        let take = (4 - lane).min(out.len() - i);
        out[i..i + take].copy_from_slice(&vals[lane..lane + take]);
        i += take;
        p = p.wrapping_add(take as u64);
    }
}

/// Standard normal numbers of the sequence (seed, stream), at positions
/// offset..offset+out.len().
///
/// Position p uses block b = p/4, lane p%4: counter = [b as u32, (b>>32) as u32, stream as
/// u32, (stream>>32) as u32], key = [seed as u32, (seed>>32) as u32]. Box–Muller on lane
/// pairs (0,1) and (2,3): u = (x as f64 + 0.5) · 2^-32; r = sqrt(−2 ln u_a); lane a →
/// r·cos(2π u_b), lane b → r·sin(2π u_b); computed in f64 and rounded once to f32.
pub fn normal(seed: u64, stream: u64, offset: u64, out: &mut [f32]) {
    fill(seed, stream, offset, out, block_normals);
}

/// Uniform u32 of the same sequence positions (raw lanes), for shuffles.
pub fn uniform_u32(seed: u64, stream: u64, offset: u64, out: &mut [u32]) {
    fill(seed, stream, offset, out, |lanes| lanes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Random123's `tests/kat_vectors` (format: counter[4] key[2] →
    /// output[4]), as cut-and-pasted into DEShawResearch/Random123-Boost,
    /// libs/random/test/test_philox.cpp (commit 916db91a), test_kat_philox4x32.
    /// Also reproduced by an independent Python implementation when this was written.
    #[allow(clippy::type_complexity)]
    const KAT: [(u32, [u32; 4], [u32; 2], [u32; 4]); 6] = [
        (
            7,
            [0, 0, 0, 0],
            [0, 0],
            [0x5f6fb709, 0x0d893f64, 0x4f121f81, 0x4f730a48],
        ),
        (
            7,
            [0xffffffff; 4],
            [0xffffffff; 2],
            [0x5207ddc2, 0x45165e59, 0x4d8ee751, 0x8c52f662],
        ),
        (
            7,
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0x4dfccaba, 0x190a87f0, 0xc47362ba, 0xb6b5242a],
        ),
        (
            10,
            [0, 0, 0, 0],
            [0, 0],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            10,
            [0xffffffff; 4],
            [0xffffffff; 2],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            10,
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];

    #[test]
    fn philox_known_answers() {
        for (rounds, ctr, key, want) in KAT {
            assert_eq!(
                philox4x32(rounds, ctr, key),
                want,
                "{rounds} rounds, {ctr:08x?}"
            );
            if rounds == 10 {
                assert_eq!(philox4x32_10(ctr, key), want);
            }
        }
    }

    #[test]
    fn lanes_follow_the_counter_layout() {
        // Block index above 2^32 and 64-bit stream/seed exercise every counter and key word.
        let (seed, stream) = (0x0123_4567_89ab_cdefu64, 0xfedc_ba98_7654_3210u64);
        let b = (1u64 << 34) + 5;
        let mut u = [0u32; 8];
        uniform_u32(seed, stream, 4 * b, &mut u);
        let want0 = philox4x32_10([5, 4, 0x7654_3210, 0xfedc_ba98], [0x89ab_cdef, 0x0123_4567]);
        let want1 = philox4x32_10([6, 4, 0x7654_3210, 0xfedc_ba98], [0x89ab_cdef, 0x0123_4567]);
        assert_eq!(&u[..4], &want0);
        assert_eq!(&u[4..], &want1);

        // Box–Muller wiring, from the (seed 0, stream 0, block 0) known answer.
        let lanes = [0x6627e8d5u32, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8];
        let u = |x: u32| (x as f64 + 0.5) / 4_294_967_296.0;
        let r01 = (-2.0 * u(lanes[0]).ln()).sqrt();
        let r23 = (-2.0 * u(lanes[2]).ln()).sqrt();
        let t01 = 2.0 * std::f64::consts::PI * u(lanes[1]);
        let t23 = 2.0 * std::f64::consts::PI * u(lanes[3]);
        let mut z = [0f32; 4];
        normal(0, 0, 0, &mut z);
        assert_eq!(
            z,
            [
                (r01 * t01.cos()) as f32,
                (r01 * t01.sin()) as f32,
                (r23 * t23.cos()) as f32,
                (r23 * t23.sin()) as f32
            ]
        );
    }

    #[test]
    fn normal_matches_python_reference() {
        // An independent Python implementation (Philox from the paper, Box–Muller with
        // math.log/sqrt/cos/sin, struct.pack('<f') for the f32 rounding), for
        // seed 0x0123456789abcdef, stream 0xfedcba9876543210, offset 2^34 + 2, 8 values.
        let want: [u32; 8] = [
            0x3f511a6e, 0x3ea2baed, 0x3ddb0ef1, 0x3e3f2914, 0x3f89be8f, 0x3fa1300a, 0xbf056825,
            0xbf41a307,
        ];
        let mut z = [0f32; 8];
        normal(
            0x0123_4567_89ab_cdef,
            0xfedc_ba98_7654_3210,
            (1 << 34) + 2,
            &mut z,
        );
        assert_eq!(z.map(f32::to_bits), want);
    }

    #[test]
    fn any_offset_and_split_gives_the_same_numbers() {
        let (seed, stream) = (42, 3);
        let mut whole = vec![0f32; 103];
        normal(seed, stream, 0, &mut whole);
        let mut whole_u = vec![0u32; 103];
        uniform_u32(seed, stream, 0, &mut whole_u);
        for offset in 0..13u64 {
            for len in [0usize, 1, 2, 3, 5, 8, 90] {
                let mut part = vec![0f32; len];
                normal(seed, stream, offset, &mut part);
                let o = offset as usize;
                assert_eq!(part, whole[o..o + len], "offset {offset}, len {len}");
                let mut part_u = vec![0u32; len];
                uniform_u32(seed, stream, offset, &mut part_u);
                assert_eq!(part_u, whole_u[o..o + len]);
            }
        }
        // Drawing in odd-sized consecutive pieces reproduces the single draw.
        let mut pieces = vec![0f32; 103];
        let mut at = 0;
        for len in [1usize, 6, 3, 17, 2, 74] {
            normal(seed, stream, at as u64, &mut pieces[at..at + len]);
            at += len;
        }
        assert_eq!(pieces, whole);
        // Positions wrap modulo 2^64 instead of panicking.
        let mut tail = [0f32; 6];
        normal(seed, stream, u64::MAX - 2, &mut tail);
        let mut head = [0f32; 3];
        normal(seed, stream, 0, &mut head);
        assert_eq!(tail[3..], head);
    }

    #[test]
    fn normal_moments() {
        let n = 100_000usize;
        let mut z = vec![0f32; n];
        normal(2024, 0, 0, &mut z);
        assert!(z.iter().all(|v| v.is_finite()));
        let mean = z.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        // Standard errors for N(0, 1): mean 1/√n ≈ 0.0032, sample variance √(2/n) ≈ 0.0045.
        // Allow 5 standard errors.
        let se_mean = 1.0 / (n as f64).sqrt();
        let se_var = (2.0 / n as f64).sqrt();
        assert!(mean.abs() < 5.0 * se_mean, "mean {mean}");
        assert!((var - 1.0).abs() < 5.0 * se_var, "var {var}");
        // P(|Z| < 1) = 0.682689; binomial standard error √(p(1−p)/n) ≈ 0.0015.
        let p = 0.682_689_492;
        let frac = z.iter().filter(|v| v.abs() < 1.0).count() as f64 / n as f64;
        assert!(
            (frac - p).abs() < 5.0 * (p * (1.0 - p) / n as f64).sqrt(),
            "{frac}"
        );
        // Both Box–Muller outputs (cos lanes 0/2, sin lanes 1/3) are centred.
        for lane in 0..2 {
            let s: f64 = z.iter().skip(lane).step_by(2).map(|&v| v as f64).sum();
            assert!(
                (s / (n / 2) as f64).abs() < 5.0 * (2.0 / n as f64).sqrt(),
                "lane {lane}"
            );
        }
        // Uniform lanes: mean of u/2^32 is 1/2 with standard error √(1/12n).
        let mut u = vec![0u32; n];
        uniform_u32(2024, 0, 0, &mut u);
        let m = u.iter().map(|&x| x as f64 / 4_294_967_296.0).sum::<f64>() / n as f64;
        assert!(
            (m - 0.5).abs() < 5.0 * (1.0 / (12.0 * n as f64)).sqrt(),
            "{m}"
        );
    }

    #[test]
    fn streams_and_seeds_differ() {
        let draw = |seed, stream| {
            let mut z = vec![0f32; 64];
            normal(seed, stream, 0, &mut z);
            z
        };
        let base = draw(7, 0);
        for other in [
            draw(7, 1),
            draw(8, 0),
            draw(7 + (1 << 32), 0),
            draw(7, 1 << 32),
        ] {
            let same = base.iter().zip(&other).filter(|(a, b)| a == b).count();
            assert_eq!(same, 0);
        }
        assert_eq!(draw(7, 0), base, "deterministic");
    }
}
