//! The authors' initialization, drawn from Philox so it is reproducible anywhere:
//! conv and conv-transpose weights N(0, 0.02), conv biases PyTorch's default
//! U(−1/√fan_in, 1/√fan_in), batch-norm weight N(1, 0.02) and bias 0, linear weight N(0, 0.1)
//! and bias 0.
//!
//! Each tensor draws from its own Philox stream, derived from the seed and the tensor's full
//! checkpoint name (`netF.feature.0.weight`), so a network's initial values do not depend on
//! the order in which networks or layers are built.

use crate::rng;
use crate::tensor::Tensor;

/// Seeded initializer.
#[derive(Clone, Copy, Debug)]
pub struct Init {
    pub seed: u64,
}

/// FNV-1a: a fixed, documented hash from a tensor name to its Philox stream.
pub fn stream_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Init {
    fn normal(&self, name: &str, dims: &[usize], mean: f32, std: f32) -> Tensor {
        let mut v = vec![0.0f32; dims.iter().product()];
        rng::normal(self.seed, stream_of(name), 0, &mut v);
        v.iter_mut().for_each(|x| *x = mean + std * *x);
        Tensor::new(dims, v).expect("length matches dims")
    }

    pub fn conv_weight(&self, name: &str, dims: [usize; 4]) -> Tensor {
        self.normal(name, &dims, 0.0, 0.02)
    }

    pub fn conv_bias(&self, name: &str, c: usize, fan_in: usize) -> Tensor {
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        let mut u = vec![0u32; c];
        rng::uniform_u32(self.seed, stream_of(name), 0, &mut u);
        let v = u
            .iter()
            .map(|&x| ((x as f64 / 4_294_967_296.0) * 2.0 - 1.0) * bound)
            .map(|x| x as f32)
            .collect();
        Tensor::new([c], v).expect("length matches dims")
    }

    pub fn bn_weight(&self, name: &str, c: usize) -> Tensor {
        self.normal(name, &[c], 1.0, 0.02)
    }

    pub fn linear_weight(&self, name: &str, dims: [usize; 2]) -> Tensor {
        self.normal(name, &dims, 0.0, 0.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_std(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
        (m, var.sqrt())
    }

    #[test]
    fn distributions_match_the_authors_init() {
        let init = Init { seed: 3 };
        let w = init.conv_weight("netX.a.0.weight", [64, 64, 5, 5]); // 102400 draws
        let (m, s) = mean_std(w.data());
        // standard error of the mean: 0.02/√102400 ≈ 6e-5; of the std ≈ 0.02/√(2n) ≈ 4.4e-5
        assert!(m.abs() < 5.0 * 6.3e-5, "mean {m}");
        assert!((s - 0.02).abs() < 5.0 * 4.5e-5, "std {s}");
        let l = init.linear_weight("netX.l.0.weight", [256, 400]);
        let (m, s) = mean_std(l.data());
        assert!(m.abs() < 5.0 * 0.1 / 320.0 && (s - 0.1).abs() < 5.0 * 0.1 / 452.0);
        let b = init.conv_bias("netX.a.0.bias", 4096, 25);
        assert!(b.data().iter().all(|&x| x.abs() <= 0.2));
        let (m, s) = mean_std(b.data());
        // U(−0.2, 0.2): std 0.2/√3 ≈ 0.1155
        assert!(m.abs() < 0.01 && (s - 0.1155).abs() < 0.005);
        let g = init.bn_weight("netX.b.1.weight", 4096);
        let (m, s) = mean_std(g.data());
        assert!((m - 1.0).abs() < 0.002 && (s - 0.02).abs() < 0.002);
    }

    #[test]
    fn each_tensor_has_its_own_stream_and_seeds_differ() {
        let a = Init { seed: 1 }.conv_weight("netF.feature.0.weight", [2, 3, 3, 3]);
        let b = Init { seed: 1 }.conv_weight("netF.feature.3.weight", [2, 3, 3, 3]);
        let c = Init { seed: 2 }.conv_weight("netF.feature.0.weight", [2, 3, 3, 3]);
        let a2 = Init { seed: 1 }.conv_weight("netF.feature.0.weight", [2, 3, 3, 3]);
        assert_ne!(a.data(), b.data());
        assert_ne!(a.data(), c.data());
        assert_eq!(a.data(), a2.data());
    }
}
