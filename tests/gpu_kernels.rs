//! Every kernel of kernels/{activation,elementwise,layout,reduce,loss,adam,rng,data}.cu,
//! launched through its src/gpu/kernels/ function on each executor of [`executors`], against
//! the CPU backend (the oracle) on fresh random inputs of awkward sizes (1, 3, 257, 1000
//! elements; batch 3 and 257; 7, 10 and 11 classes), outputs poisoned with NaN first.
//!
//! Exact (bit) equality wherever the arithmetic is the same: activations, elementwise,
//! concat/split, Adam, the gather, Philox normals, the loss gradients and the per-row loss
//! terms. The losses' means are sums in a different order (the GPU's fixed tree vs the CPU's
//! sequential fold), so they agree to a stated rounding bound (see `sum_bound`).
//!
//! Transcendentals (expf, tanhf, log1pf, and f64 log/sin/cos in the RNG) are the host libm on
//! the emulator, exactly what Rust calls, so the emulator must match bit for bit. A GPU's
//! versions differ by an ulp or two: for executors other than the emulator the comparisons of
//! results that go through them allow [`GPU_LIBM_ULPS`] ulps (see `libm_ulps`).

use gtadapt::data::batch::{normalize, to_d_range, Prep};
use gtadapt::data::Images;
use gtadapt::gpu::kernels::{activation, adam, data, elementwise, layout, loss, rng};
use gtadapt::gpu::{DeviceBuffer, Emulator, Executor};
use gtadapt::ops::activation::Activation;
use gtadapt::ops::adam::{adam_step, AdamConfig};
use gtadapt::ops::layout::{concat_dim1, split_dim1};
use gtadapt::ops::loss as cpu_loss;

/// The executors every test runs on. The CPU SIMT emulator always; the CUDA executor is added
/// here when a GPU is present.
fn executors() -> Vec<Box<dyn Executor>> {
    #[allow(unused_mut)]
    let mut v: Vec<Box<dyn Executor>> = vec![Box::new(Emulator::new())];
    // HOOK (CUDA executor): push the cudarc executor here when a device is available, e.g.
    //   if let Some(cuda) = gtadapt::gpu::cuda::CudaExecutor::try_new() { v.push(Box::new(cuda)) }
    // (the tests then need device buffers of that executor; everything else stays as is).
    v
}

/// Ulps allowed on a GPU for results through expf/tanhf/log1pf (CUDA's are within 2 ulp).
const GPU_LIBM_ULPS: u32 = 4;

/// 0 on the emulator (host libm = Rust's), [`GPU_LIBM_ULPS`] elsewhere.
fn libm_ulps(exec: &dyn Executor) -> u32 {
    if exec.name() == "emulator" {
        0
    } else {
        GPU_LIBM_ULPS
    }
}

const SIZES: [usize; 4] = [1, 3, 257, 1000];

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Inputs with the edge values planted: ±0 and, for larger sizes, ±40 (sigmoid tails).
fn awkward(rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut x = rng.vec(n, lo, hi);
    for (slot, v) in [0.0f32, -0.0, 40.0, -40.0].into_iter().enumerate() {
        if n > 4 * slot + 4 {
            x[4 * slot + 1] = v;
        }
    }
    x
}

fn nan_buf(n: usize) -> DeviceBuffer<f32> {
    DeviceBuffer::filled(n, f32::NAN)
}

fn ulp_diff(a: f32, b: f32) -> u64 {
    if a.to_bits() == b.to_bits() {
        return 0;
    }
    if a.is_nan() || b.is_nan() {
        return u64::MAX;
    }
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        (if i < 0 { i32::MIN - i } else { i }) as i64
    };
    (key(a) - key(b)).unsigned_abs()
}

/// `got` equals `want` element for element, to `ulps` ulps (0: the same bits).
#[track_caller]
fn assert_ulps(what: &str, got: &[f32], want: &[f32], ulps: u32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = ulp_diff(g, w);
        assert!(
            d <= ulps as u64,
            "{what}[{i}]: got {g:e} ({:#010x}), want {w:e} ({:#010x}), {d} ulps > {ulps}",
            g.to_bits(),
            w.to_bits()
        );
    }
}

#[track_caller]
fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_ulps(what, got, want, 0);
}

/// The bound on |GPU mean − CPU mean| for a mean of `terms` (computed identically on both
/// sides): the CPU folds n terms in order (error ≤ (n−1)·u·Σ|t|), the GPU adds ⌈n/256⌉ terms
/// per thread then 8 tree levels (≤ (⌈n/256⌉ + 8)·u·Σ|t|), u = 2^−24; plus the final
/// division's rounding on each side, and `libm_ulps` per term on a GPU. Observed errors are
/// far below (a few ulps of the mean).
fn sum_bound(terms: &[f32], libm_ulps: u32) -> f64 {
    let n = terms.len() as f64;
    let u = f64::powi(2.0, -24);
    let abs: f64 = terms.iter().map(|&t| (t as f64).abs()).sum();
    let mean = terms.iter().map(|&t| t as f64).sum::<f64>() / n;
    ((n + n / 256.0 + 10.0 + libm_ulps as f64) * u * abs) / n + 2.0 * u * mean.abs()
}

#[test]
fn activations_forward_and_backward_match_the_cpu_bit_for_bit() {
    let mut rng = Rng::new(1);
    for exec in executors() {
        let exec = exec.as_ref();
        let acts = [
            Activation::Relu,
            Activation::LeakyRelu { slope: 0.2 },
            Activation::Tanh,
            Activation::Sigmoid,
        ];
        for act in acts {
            let ulps = match act {
                Activation::Tanh | Activation::Sigmoid => libm_ulps(exec),
                _ => 0,
            };
            for n in SIZES {
                let x = awkward(&mut rng, n, -6.0, 6.0);
                let gy = rng.vec(n, -2.0, 2.0);
                let want_y = act.forward(&x);
                let want_gx = act.backward(&x, &want_y, &gy);
                let xd = DeviceBuffer::from_slice(&x);
                let mut yd = nan_buf(n);
                activation::forward(exec, act, &xd, &mut yd).unwrap();
                let what = format!("{} {} forward n={n}", exec.name(), act.name());
                assert_ulps(&what, &yd.to_vec(), &want_y, ulps);
                // The backward from the CPU's y, so that only the backward is compared.
                let y_cpu = DeviceBuffer::from_slice(&want_y);
                let gyd = DeviceBuffer::from_slice(&gy);
                let mut gxd = nan_buf(n);
                activation::backward(exec, act, &xd, &y_cpu, &gyd, &mut gxd).unwrap();
                let what = format!("{} {} backward n={n}", exec.name(), act.name());
                assert_bits(&what, &gxd.to_vec(), &want_gx);
            }
        }
    }
}

#[test]
fn elementwise_kernels_match_the_cpu() {
    let mut rng = Rng::new(2);
    for exec in executors() {
        let exec = exec.as_ref();
        for n in SIZES {
            let x = rng.vec(n, -3.0, 3.0);
            let y0 = rng.vec(n, -3.0, 3.0);
            let a = rng.uniform(-2.0, 2.0);
            let xd = DeviceBuffer::from_slice(&x);

            let mut yd = nan_buf(n);
            elementwise::fill(exec, &mut yd, a).unwrap();
            assert_bits("fill", &yd.to_vec(), &vec![a; n]);

            let mut yd = nan_buf(n);
            elementwise::copy(exec, &xd, &mut yd).unwrap();
            assert_bits("copy", &yd.to_vec(), &x);

            let want: Vec<f32> = x.iter().map(|&v| a * v).collect();
            let mut yd = nan_buf(n);
            elementwise::scale(exec, a, &xd, &mut yd).unwrap();
            assert_bits("scale", &yd.to_vec(), &want);
            let mut yd = DeviceBuffer::from_slice(&x);
            elementwise::scale_in_place(exec, a, &mut yd).unwrap();
            assert_bits("scale in place", &yd.to_vec(), &want);

            let want: Vec<f32> = y0.iter().zip(&x).map(|(&y, &v)| y + a * v).collect();
            let mut yd = DeviceBuffer::from_slice(&y0);
            elementwise::axpy(exec, a, &xd, &mut yd).unwrap();
            assert_bits("axpy", &yd.to_vec(), &want);
        }
        // Length mismatches are errors, not out-of-bounds accesses.
        let xd = DeviceBuffer::from_slice(&[1.0f32; 5]);
        let mut yd = nan_buf(4);
        assert!(elementwise::copy(exec, &xd, &mut yd).is_err());
    }
}

#[test]
fn concat_and_split_along_dim1_match_the_cpu() {
    let mut rng = Rng::new(3);
    for exec in executors() {
        let exec = exec.as_ref();
        // G's input [one-hot, embedding, noise] for a batch of 3, and a 4-D case.
        let cases: [(usize, Vec<Vec<usize>>); 3] = [
            (3, vec![vec![3, 10], vec![3, 7], vec![3, 100]]),
            (
                3,
                vec![vec![3, 2, 5, 3], vec![3, 1, 5, 3], vec![3, 4, 5, 3]],
            ),
            (1, vec![vec![1, 257]]),
        ];
        for (items, shapes) in cases {
            let data: Vec<Vec<f32>> = shapes
                .iter()
                .map(|s| rng.vec(s.iter().product(), -1.0, 1.0))
                .collect();
            let parts: Vec<(&[f32], &[usize])> = data
                .iter()
                .zip(&shapes)
                .map(|(d, s)| (d.as_slice(), s.as_slice()))
                .collect();
            let (want, out_dims) = concat_dim1(&parts).unwrap();
            let devs: Vec<DeviceBuffer<f32>> =
                data.iter().map(|d| DeviceBuffer::from_slice(d)).collect();
            let refs: Vec<&DeviceBuffer<f32>> = devs.iter().collect();
            let mut out = nan_buf(want.len());
            layout::concat_dim1(exec, items, &refs, &mut out).unwrap();
            assert_bits("concat", &out.to_vec(), &want);

            let channels: Vec<usize> = shapes.iter().map(|s| s[1]).collect();
            let want_parts = split_dim1(&want, &out_dims, &channels).unwrap();
            let mut outs: Vec<DeviceBuffer<f32>> = data.iter().map(|d| nan_buf(d.len())).collect();
            let mut out_refs: Vec<&mut DeviceBuffer<f32>> = outs.iter_mut().collect();
            layout::split_dim1(exec, items, &out, &mut out_refs).unwrap();
            for (i, (got, w)) in outs.iter().zip(&want_parts).enumerate() {
                assert_bits(&format!("split part {i}"), &got.to_vec(), w);
                assert_bits(&format!("split = original {i}"), &got.to_vec(), &data[i]);
            }
        }
    }
}

#[test]
fn sum_is_deterministic_and_within_the_rounding_bound() {
    let mut rng = Rng::new(4);
    for exec in executors() {
        let exec = exec.as_ref();
        for n in [1usize, 3, 257, 1000, 70_001] {
            let x = rng.vec(n, -1.0, 3.0);
            let xd = DeviceBuffer::from_slice(&x);
            let mut a = nan_buf(1);
            let mut b = nan_buf(1);
            loss::sum(exec, &xd, n as f32, &mut a).unwrap();
            loss::sum(exec, &xd, n as f32, &mut b).unwrap();
            let (a, b) = (a.to_vec()[0], b.to_vec()[0]);
            assert_eq!(a.to_bits(), b.to_bits(), "n={n}: two launches, two results");
            let cpu = x.iter().sum::<f32>() / n as f32;
            let bound = sum_bound(&x, 0);
            assert!(
                ((a - cpu) as f64).abs() <= bound,
                "n={n}: gpu {a:e} cpu {cpu:e} bound {bound:e}"
            );
        }
    }
}

#[test]
fn cross_entropy_matches_the_cpu() {
    let mut rng = Rng::new(5);
    for exec in executors() {
        let exec = exec.as_ref();
        let ulps = libm_ulps(exec);
        for (n, k) in [(1usize, 7usize), (3, 7), (3, 11), (257, 10), (1000, 11)] {
            let logits = rng.vec(n * k, -8.0, 8.0);
            let labels: Vec<u32> = (0..n).map(|_| rng.below(k) as u32).collect();
            let g = rng.uniform(0.25, 2.0);
            let ld = DeviceBuffer::from_slice(&logits);
            let lab = DeviceBuffer::from_slice(&labels);
            let mut rows = nan_buf(n);
            let mut out = nan_buf(1);
            loss::cross_entropy_forward(exec, &ld, &lab, [n, k], &mut rows, &mut out).unwrap();
            // Per-row terms: the CPU's loss of each row alone (a batch of one) is its term.
            let want_rows: Vec<f32> = logits
                .chunks(k)
                .zip(&labels)
                .map(|(r, &l)| cpu_loss::cross_entropy_forward(r, [1, k], &[l]).unwrap())
                .collect();
            assert_ulps("ce rows", &rows.to_vec(), &want_rows, ulps);
            let got = out.to_vec()[0];
            let cpu = cpu_loss::cross_entropy_forward(&logits, [n, k], &labels).unwrap();
            let bound = sum_bound(&want_rows, ulps);
            assert!(
                ((got - cpu) as f64).abs() <= bound,
                "ce [{n},{k}]: gpu {got:e} cpu {cpu:e} bound {bound:e}"
            );
            // Deterministic: a second launch gives the same bits.
            let mut out2 = nan_buf(1);
            loss::cross_entropy_forward(exec, &ld, &lab, [n, k], &mut rows, &mut out2).unwrap();
            assert_eq!(out2.to_vec()[0].to_bits(), got.to_bits());

            let gd = DeviceBuffer::from_slice(&[g]);
            let mut dx = nan_buf(n * k);
            loss::cross_entropy_backward(exec, &ld, &lab, [n, k], &gd, &mut dx).unwrap();
            let want = cpu_loss::cross_entropy_backward(&logits, [n, k], &labels, g).unwrap();
            assert_ulps("ce backward", &dx.to_vec(), &want, ulps);
        }
        // A label out of range: NaN, not an out-of-bounds read.
        let ld = DeviceBuffer::from_slice(&[0.5f32; 7]);
        let lab = DeviceBuffer::from_slice(&[7u32]);
        let (mut rows, mut out) = (nan_buf(1), DeviceBuffer::filled(1, 0.0f32));
        loss::cross_entropy_forward(exec, &ld, &lab, [1, 7], &mut rows, &mut out).unwrap();
        assert!(out.to_vec()[0].is_nan());
    }
}

#[test]
fn bce_with_logits_matches_the_cpu() {
    let mut rng = Rng::new(6);
    for exec in executors() {
        let exec = exec.as_ref();
        let ulps = libm_ulps(exec);
        for n in SIZES {
            let x = awkward(&mut rng, n, -10.0, 10.0);
            let per = rng.vec(n, 0.0, 1.0);
            let per_d = DeviceBuffer::from_slice(&per);
            let targets = [
                (
                    cpu_loss::BceTarget::Constant(1.0),
                    loss::BceTarget::Constant(1.0),
                ),
                (
                    cpu_loss::BceTarget::Constant(0.0),
                    loss::BceTarget::Constant(0.0),
                ),
                (
                    cpu_loss::BceTarget::Constant(0.3),
                    loss::BceTarget::Constant(0.3),
                ),
                (
                    cpu_loss::BceTarget::PerElement(per.clone()),
                    loss::BceTarget::PerElement(&per_d),
                ),
            ];
            let xd = DeviceBuffer::from_slice(&x);
            let g = rng.uniform(0.25, 2.0);
            let gd = DeviceBuffer::from_slice(&[g]);
            for (cpu_t, gpu_t) in targets {
                let mut terms = nan_buf(n);
                let mut out = nan_buf(1);
                loss::bce_with_logits_forward(exec, &xd, gpu_t, &mut terms, &mut out).unwrap();
                let want_terms: Vec<f32> = (0..n)
                    .map(|i| {
                        let t = match &cpu_t {
                            cpu_loss::BceTarget::Constant(t) => *t,
                            cpu_loss::BceTarget::PerElement(v) => v[i],
                        };
                        cpu_loss::bce_with_logits_forward(
                            &x[i..=i],
                            &cpu_loss::BceTarget::Constant(t),
                        )
                        .unwrap()
                    })
                    .collect();
                assert_ulps("bce terms", &terms.to_vec(), &want_terms, ulps);
                let got = out.to_vec()[0];
                let cpu = cpu_loss::bce_with_logits_forward(&x, &cpu_t).unwrap();
                let bound = sum_bound(&want_terms, ulps);
                assert!(
                    ((got - cpu) as f64).abs() <= bound,
                    "bce n={n} {cpu_t:?}: gpu {got:e} cpu {cpu:e} bound {bound:e}"
                );

                let mut dx = nan_buf(n);
                loss::bce_with_logits_backward(exec, &xd, gpu_t, &gd, &mut dx).unwrap();
                let want = cpu_loss::bce_with_logits_backward(&x, &cpu_t, g).unwrap();
                assert_ulps("bce backward", &dx.to_vec(), &want, ulps);
            }
        }
    }
}

#[test]
fn count_correct_matches_the_cpu() {
    let mut rng = Rng::new(7);
    for exec in executors() {
        let exec = exec.as_ref();
        for (n, k) in [(1usize, 7usize), (3, 11), (257, 10), (1000, 7)] {
            let mut logits = rng.vec(n * k, -2.0, 2.0);
            // Ties and NaNs: argmax takes the first maximum, and a NaN wins.
            for r in (0..n).step_by(5) {
                logits[r * k + k - 1] = logits[r * k];
            }
            for r in (2..n).step_by(7) {
                logits[r * k + 1] = f32::NAN;
            }
            let pred = cpu_loss::argmax_rows(&logits, [n, k]).unwrap();
            let labels: Vec<u32> = (0..n)
                .map(|i| {
                    if rng.below(2) == 0 {
                        pred[i]
                    } else {
                        rng.below(k) as u32
                    }
                })
                .collect();
            let want = cpu_loss::count_correct(&logits, [n, k], &labels).unwrap() as u32;
            let ld = DeviceBuffer::from_slice(&logits);
            let lab = DeviceBuffer::from_slice(&labels);
            let mut out = DeviceBuffer::filled(1, 0xDEAD_BEEFu32);
            loss::count_correct(exec, &ld, &lab, [n, k], &mut out, false).unwrap();
            assert_eq!(out.to_vec()[0], want, "[{n},{k}]");
            loss::count_correct(exec, &ld, &lab, [n, k], &mut out, true).unwrap();
            assert_eq!(out.to_vec()[0], 2 * want, "[{n},{k}] accumulated");
        }
    }
}

#[test]
fn adam_matches_the_cpu_bit_for_bit() {
    let mut rng = Rng::new(8);
    let configs = [
        AdamConfig::default(),
        AdamConfig {
            lr: 5e-4,
            beta1: 0.3,
            beta2: 0.99,
            eps: 1e-8,
        },
        AdamConfig {
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
        },
    ];
    for exec in executors() {
        let exec = exec.as_ref();
        for cfg in configs {
            for n in SIZES {
                let mut p = rng.vec(n, -1.0, 1.0);
                let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
                let mut pd = DeviceBuffer::from_slice(&p);
                let mut md = DeviceBuffer::from_slice(&m);
                let mut vd = DeviceBuffer::from_slice(&v);
                for step in 1..=4u64 {
                    let g = awkward(&mut rng, n, -3.0, 3.0);
                    adam_step(&mut p, &g, &mut m, &mut v, step, &cfg).unwrap();
                    let gd = DeviceBuffer::from_slice(&g);
                    adam::step(exec, &mut pd, &gd, &mut md, &mut vd, step, &cfg).unwrap();
                    let what = format!("adam {cfg:?} n={n} step {step}");
                    assert_bits(&format!("{what} param"), &pd.to_vec(), &p);
                    assert_bits(&format!("{what} m"), &md.to_vec(), &m);
                    assert_bits(&format!("{what} v"), &vd.to_vec(), &v);
                }
            }
        }
    }
}

#[test]
fn philox_normals_match_the_cpu() {
    for exec in executors() {
        let exec = exec.as_ref();
        let ulps = libm_ulps(exec);
        let cases = [
            (0u64, 0u64, 0u64, 8usize),
            (
                0x0123_4567_89ab_cdef,
                0xfedc_ba98_7654_3210,
                (1 << 34) + 2,
                257,
            ),
            (42, 3, 1, 1000),
            (7, 1, 3, 3),
            (7, 1, u64::MAX - 2, 9), // the position wraps like the reference
        ];
        for (seed, stream, offset, n) in cases {
            let mut want = vec![0.0f32; n];
            gtadapt::rng::normal(seed, stream, offset, &mut want);
            let mut out = nan_buf(n);
            rng::normal(exec, seed, stream, offset, &mut out).unwrap();
            assert_ulps(
                &format!("normal {seed} {stream} {offset}"),
                &out.to_vec(),
                &want,
                ulps,
            );
        }
    }
}

#[test]
fn batch_gather_matches_the_cpu_batches() {
    let mut rng = Rng::new(9);
    for exec in executors() {
        let exec = exec.as_ref();
        // MNIST-like gray 28×28 (enlarged), SVHN-like RGB 32×32 (copied), RGB 28×28, one axis
        // kept (32×28), and a strong vertical shrink (50×30: Pillow's vertical pass first).
        for dims in [
            [5, 1, 28, 28],
            [4, 3, 32, 32],
            [3, 3, 28, 28],
            [3, 1, 32, 28],
            [3, 3, 50, 30],
        ] {
            let len: usize = dims.iter().product();
            let pixels: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let images = Images::from_vec(pixels.clone(), dims, "test").unwrap();
            let dev = data::DeviceImages::new(&pixels, dims).unwrap();
            let indices: Vec<u32> = vec![(dims[0] - 1) as u32, 0, rng.below(dims[0]) as u32];
            let prep = Prep::new(&images);
            let mut want = Vec::new();
            let mut img = vec![0u8; 3 * 32 * 32];
            for &i in &indices {
                prep.rgb32(images.image(i as usize), &mut img, &mut Vec::new());
                want.extend(img.iter().map(|&p| normalize(p)));
            }
            let want_d: Vec<f32> = want.iter().map(|&x| to_d_range(x)).collect();
            let idx = DeviceBuffer::from_slice(&indices);
            let mut out = nan_buf(want.len());
            let mut out_d = nan_buf(want.len());
            data::gather(exec, &dev, &idx, &mut out, Some(&mut out_d)).unwrap();
            assert_bits(&format!("gather {dims:?}"), &out.to_vec(), &want);
            assert_bits(&format!("gather d view {dims:?}"), &out_d.to_vec(), &want_d);
            let mut out = nan_buf(want.len());
            data::gather(exec, &dev, &idx, &mut out, None).unwrap();
            assert_bits(
                &format!("gather {dims:?} (no d view)"),
                &out.to_vec(),
                &want,
            );
        }
        // An index out of range: NaN, not an out-of-bounds read.
        let dev = data::DeviceImages::new(&[7u8; 2 * 28 * 28], [2, 1, 28, 28]).unwrap();
        let idx = DeviceBuffer::from_slice(&[2u32]);
        let mut out = DeviceBuffer::filled(3 * 32 * 32, 0.0f32);
        data::gather(exec, &dev, &idx, &mut out, None).unwrap();
        assert!(out.to_vec().iter().all(|v| v.is_nan()));
    }
}
