//! Small deterministic permutations for the data pipeline: splitmix64 and Fisher–Yates.
//!
//! The data module uses its own generator, not the project's Philox: the embedded datasets'
//! split and textures must never change when the training RNG does, and shuffling needs no
//! CPU/GPU parity (the order is computed on the host and the GPU gathers by index).
//!
//! splitmix64 (Steele, Lea, Flood 2014; the constants of Vigna's reference code) steps a 64-bit
//! counter by the golden-ratio increment and mixes it. Integers below `n` are drawn with
//! Lemire's multiply-shift method with rejection (unbiased). Fisher–Yates runs from the last
//! position down: for i = n−1 … 1, swap i with a uniform j in 0..=i.

/// The splitmix64 generator.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

/// splitmix64's output function: a bijective mix of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// A stream for (seed, stream): e.g. (training seed, epoch).
    pub fn for_stream(seed: u64, stream: u64) -> Self {
        SplitMix64(mix64(seed) ^ mix64(stream.wrapping_add(0x6a09_e667_f3bc_c909)))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n` ≥ 1), unbiased.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let mut m = (self.next_u64() as u128) * (n as u128);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = (self.next_u64() as u128) * (n as u128);
            }
        }
        (m >> 64) as u64
    }

    /// Shuffles `v` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// A permutation of `0..n` for (seed, stream).
pub fn permutation(n: usize, seed: u64, stream: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    SplitMix64::for_stream(seed, stream).shuffle(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // First outputs of Vigna's splitmix64.c for seed 0.
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(g.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(g.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut g = SplitMix64::new(7);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[g.below(7) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(SplitMix64::new(1).below(1), 0);
    }

    #[test]
    fn permutations_are_permutations_and_depend_on_seed_and_stream() {
        let p = permutation(1000, 3, 0);
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        assert_eq!(p, permutation(1000, 3, 0));
        assert_ne!(p, permutation(1000, 3, 1));
        assert_ne!(p, permutation(1000, 4, 0));
    }
}
