//! Every kernel of kernels/{activation,elementwise,layout,reduce,loss,adam,rng,data}.cu (and,
//! one file each here, conv.cu, conv_tc.cu (conv_tf32.rs), batchnorm.cu, pool.cu and linear.cu),
//! launched through its [`super::kernels`] function on an executor, against the CPU backend
//! (the oracle) on fresh random inputs of awkward sizes (1, 3, 257, 1000 elements; batch 3 and
//! 257; 7, 10 and 11 classes), outputs poisoned with NaN first. Shared by `gtadapt kernels
//! check` and tests/gpu_kernels.rs.
//!
//! Exact (bit) equality wherever the arithmetic is the same: activations, elementwise,
//! concat/split, Adam, the gather, Philox normals, the loss gradients and the per-row loss
//! terms. The losses' means are sums in a different order (the GPU's fixed tree vs the CPU's
//! sequential fold), so they agree to a stated rounding bound (see [`sum_bound`]).
//!
//! The fused losses (cross_entropy_fused, bce_fused: loss and saved gradient in one one-block
//! launch; loss_grad_scale: their backward) sum in exactly the two-launch path's order, so
//! their loss has the two-launch path's bits on the emulator (a property checked here; on a GPU
//! within twice the bound, see `same_sum`) and the same [`sum_bound`] against the CPU; the
//! saved gradient (the CPU's
//! gradient at upstream g = n, where g/n = 1 exactly) and the scaled one are the CPU's bits on
//! the emulator ([`libm_ulps`] on a GPU).
//!
//! Transcendentals (expf, tanhf, log1pf, and f64 log/sin/cos in the RNG) are the host libm on
//! the emulator, exactly what Rust calls, so the emulator must match bit for bit. A GPU's
//! versions differ by an ulp or two: for executors other than the emulator the comparisons of
//! results that go through them allow [`GPU_LIBM_ULPS`] ulps (see [`libm_ulps`]).

pub mod batchnorm;
mod conv;
mod conv_tf32;
pub mod linear;
pub mod pool;
mod schedule;

use super::kernels::{activation, adam, data, elementwise, layout, loss, rng};
use super::{Buffer, GpuError, Memory};
use crate::data::batch::{normalize, to_d_range, Prep};
use crate::data::Images;
use crate::ops::activation::Activation;
use crate::ops::adam::{adam_step, AdamConfig};
use crate::ops::layout::{concat_dim1, split_dim1};
use crate::ops::loss as cpu_loss;

/// Ulps allowed on a GPU for results through expf/tanhf/log1pf (CUDA's are within 2 ulp).
pub const GPU_LIBM_ULPS: u32 = 4;

/// 0 on the emulator (host libm = Rust's), [`GPU_LIBM_ULPS`] elsewhere.
pub fn libm_ulps<M: Memory>(exec: &M) -> u32 {
    if exec.name() == "emulator" {
        0
    } else {
        GPU_LIBM_ULPS
    }
}

const SIZES: [usize; 4] = [1, 3, 257, 1000];

/// The tolerance of one comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// Element for element within this many ulps (0: the same bits).
    Ulps(u32),
    /// |got − want| ≤ this absolute bound (a sum's rounding bound).
    Abs(f64),
    /// A dot product or sum of at most K terms, per element: |got − want| ≤ 2·γ_K·Σ|terms|,
    /// γ_K = K·u/(1 − K·u), u = 2^−24 (see [`gamma_bound`]).
    Gamma(usize),
    /// Integers (or outcomes) equal.
    Exact,
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tolerance::Ulps(0) => write!(f, "bits"),
            Tolerance::Ulps(u) => write!(f, "{u} ulp"),
            Tolerance::Abs(b) => write!(f, "≤ {b:.1e}"),
            Tolerance::Gamma(k) => write!(f, "2γ_K·Σ|t|, K ≤ {k}"),
            Tolerance::Exact => write!(f, "exact"),
        }
    }
}

/// One kernel (or one property of it) over all the sizes it was run at.
#[derive(Clone, Debug)]
pub struct Row {
    pub kernel: String,
    /// The sizes it ran at, in order ("n=1", "[3,7]", …).
    pub sizes: Vec<String>,
    /// The largest |got − want| seen (NaN when a result was NaN where a number was due; 0 for
    /// integer and outcome checks that held).
    pub max_abs: f64,
    /// The tolerance (for [`Tolerance::Abs`], the largest bound of the sizes).
    pub tolerance: Tolerance,
    /// The first failure, if any.
    pub failure: Option<String>,
}

impl Row {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// The rows of one run, one per kernel, in the order they were first checked.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    pub fn all_ok(&self) -> bool {
        self.rows.iter().all(Row::ok)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| !r.ok())
    }

    fn row(&mut self, kernel: &str, size: &str, tolerance: Tolerance) -> &mut Row {
        let i = match self.rows.iter().position(|r| r.kernel == kernel) {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    kernel: kernel.to_string(),
                    sizes: Vec::new(),
                    max_abs: 0.0,
                    tolerance,
                    failure: None,
                });
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[i];
        if !row.sizes.iter().any(|s| s == size) {
            row.sizes.push(size.to_string());
        }
        match (row.tolerance, tolerance) {
            (Tolerance::Abs(old), Tolerance::Abs(new)) => {
                row.tolerance = Tolerance::Abs(old.max(new))
            }
            (Tolerance::Gamma(old), Tolerance::Gamma(new)) => {
                row.tolerance = Tolerance::Gamma(old.max(new))
            }
            _ => {}
        }
        row
    }

    fn fail(&mut self, kernel: &str, size: &str, tolerance: Tolerance, msg: String) {
        let row = self.row(kernel, size, tolerance);
        if row.failure.is_none() {
            row.failure = Some(format!("{size}: {msg}"));
        }
    }

    /// A launch's outcome: an error fails the row (and the comparison is skipped).
    fn launched(
        &mut self,
        kernel: &str,
        size: &str,
        tolerance: Tolerance,
        r: Result<(), GpuError>,
    ) -> bool {
        match r {
            Ok(()) => true,
            Err(e) => {
                self.fail(kernel, size, tolerance, e.to_string());
                false
            }
        }
    }

    /// `got` equals `want` element for element, to `ulps` ulps (0: the same bits).
    fn ulps(&mut self, kernel: &str, size: &str, got: &[f32], want: &[f32], ulps: u32) {
        let tol = Tolerance::Ulps(ulps);
        if got.len() != want.len() {
            let msg = format!("length {} ≠ {}", got.len(), want.len());
            self.fail(kernel, size, tol, msg);
            return;
        }
        let mut first = None;
        let mut max_abs = 0.0f64;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let d = ulp_diff(g, w);
            let abs = if g.to_bits() == w.to_bits() {
                0.0
            } else {
                (g as f64 - w as f64).abs()
            };
            if abs.is_nan() || abs > max_abs {
                max_abs = if max_abs.is_nan() { max_abs } else { abs };
            }
            if d > ulps as u64 && first.is_none() {
                first = Some(format!(
                    "[{i}]: got {g:e} ({:#010x}), want {w:e} ({:#010x}), {d} ulps > {ulps}",
                    g.to_bits(),
                    w.to_bits()
                ));
            }
        }
        let row = self.row(kernel, size, tol);
        if max_abs.is_nan() || max_abs > row.max_abs {
            row.max_abs = max_abs;
        }
        if let Some(msg) = first {
            self.fail(kernel, size, tol, msg);
        }
    }

    /// |got − want| ≤ bound.
    fn within(&mut self, kernel: &str, size: &str, got: f32, want: f32, bound: f64) {
        let tol = Tolerance::Abs(bound);
        let abs = ((got - want) as f64).abs();
        let row = self.row(kernel, size, tol);
        if abs.is_nan() || abs > row.max_abs {
            row.max_abs = abs;
        }
        if abs.is_nan() || abs > bound {
            let msg = format!("got {got:e}, want {want:e}, bound {bound:e}");
            self.fail(kernel, size, tol, msg);
        }
    }

    /// Element for element, |got − want| ≤ lip·[`gamma_bound`](k, abs_sum) (`abs_sum[i]` the
    /// Σ|terms| of element i, `lip` a Lipschitz constant of what was applied after the sum).
    #[allow(clippy::too_many_arguments)]
    fn gamma(
        &mut self,
        kernel: &str,
        size: &str,
        got: &[f32],
        want: &[f32],
        abs_sum: &[f64],
        k: usize,
        lip: f64,
    ) {
        let tol = Tolerance::Gamma(k);
        if got.len() != want.len() || want.len() != abs_sum.len() {
            let msg = format!(
                "lengths: got {}, want {}, Σ|t| {}",
                got.len(),
                want.len(),
                abs_sum.len()
            );
            self.fail(kernel, size, tol, msg);
            return;
        }
        let mut first = None;
        let mut max_abs = 0.0f64;
        for (i, ((&g, &w), &a)) in got.iter().zip(want).zip(abs_sum).enumerate() {
            let d = (g as f64 - w as f64).abs();
            let bound = lip * gamma_bound(k, a);
            if d.is_nan() || d > max_abs {
                max_abs = if max_abs.is_nan() { max_abs } else { d };
            }
            if (d.is_nan() || d > bound) && first.is_none() {
                first = Some(format!(
                    "[{i}]: got {g:e}, want {w:e}, |Δ| {d:e} > {bound:e}"
                ));
            }
        }
        let row = self.row(kernel, size, tol);
        if max_abs.is_nan() || max_abs > row.max_abs {
            row.max_abs = max_abs;
        }
        if let Some(msg) = first {
            self.fail(kernel, size, tol, msg);
        }
    }

    /// Element for element, |got[i] − want[i]| ≤ bounds[i] (the difference taken in f64; a
    /// NaN fails). The row's tolerance is the largest bound.
    fn within_each(&mut self, kernel: &str, size: &str, got: &[f32], want: &[f32], bounds: &[f64]) {
        let tol = Tolerance::Abs(bounds.iter().copied().fold(0.0, f64::max));
        if got.len() != want.len() || bounds.len() != want.len() {
            let msg = format!("length {} ≠ {}", got.len(), want.len());
            self.fail(kernel, size, tol, msg);
            return;
        }
        let mut max_abs = 0.0f64;
        let mut first = None;
        for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bounds).enumerate() {
            let d = (g as f64 - w as f64).abs();
            if d.is_nan() || d > max_abs {
                max_abs = if max_abs.is_nan() { max_abs } else { d };
            }
            if (d.is_nan() || d > b) && first.is_none() {
                first = Some(format!(
                    "[{i}]: got {g:e}, want {w:e}, |Δ| {d:e} > bound {b:e}"
                ));
            }
        }
        let row = self.row(kernel, size, tol);
        if max_abs.is_nan() || max_abs > row.max_abs {
            row.max_abs = max_abs;
        }
        if let Some(msg) = first {
            self.fail(kernel, size, tol, msg);
        }
    }

    /// A property that must hold (`what` says which, when it does not).
    fn holds(&mut self, kernel: &str, size: &str, ok: bool, what: impl FnOnce() -> String) {
        self.row(kernel, size, Tolerance::Exact);
        if !ok {
            self.fail(kernel, size, Tolerance::Exact, what());
        }
    }
}

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

/// Distance in ulps (u64::MAX when exactly one side is NaN or both are different NaNs).
pub fn ulp_diff(a: f32, b: f32) -> u64 {
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

/// The bound on |GPU mean − CPU mean| for a mean of `terms` (computed identically on both
/// sides): the CPU folds n terms in order (error ≤ (n−1)·u·Σ|t|), the GPU adds ⌈n/256⌉ terms
/// per thread then 8 tree levels (≤ (⌈n/256⌉ + 8)·u·Σ|t|), u = 2^−24; plus the final
/// division's rounding on each side, and `libm_ulps` per term on a GPU. Observed errors are
/// far below (a few ulps of the mean).
pub fn sum_bound(terms: &[f32], libm_ulps: u32) -> f64 {
    let n = terms.len() as f64;
    let u = f64::powi(2.0, -24);
    let abs: f64 = terms.iter().map(|&t| (t as f64).abs()).sum();
    let mean = terms.iter().map(|&t| t as f64).sum::<f64>() / n;
    ((n + n / 256.0 + 10.0 + libm_ulps as f64) * u * abs) / n + 2.0 * u * mean.abs()
}

/// 2·γ_K·`abs_sum`, γ_K = K·u/(1 − K·u), u = 2^−24: the bound on the difference of two f32
/// evaluations, in any two orders (FMA or not), of a sum of K products whose absolute values
/// add up to `abs_sum` (each is within γ_K·abs_sum of the exact value; Higham, ch. 3).
pub fn gamma_bound(k: usize, abs_sum: f64) -> f64 {
    let ku = k as f64 * f64::powi(2.0, -24);
    2.0 * ku / (1.0 - ku) * abs_sum
}

/// A kernel family: its name and its checks.
pub type Family<M> = (
    &'static str,
    fn(&M, u64, &mut Report) -> Result<(), GpuError>,
);

/// Every family, in order. Family `i` (from 0) draws its inputs from seed `seed + i + 1`
/// (seed 0 gives tests/gpu_kernels.rs's historic data).
pub fn families<M: Memory>() -> Vec<Family<M>> {
    vec![
        ("activation", activations::<M>),
        ("elementwise", elementwise_kernels::<M>),
        ("layout", concat_split::<M>),
        ("reduce", sums::<M>),
        ("loss: cross-entropy", cross_entropy::<M>),
        ("loss: bce", bce::<M>),
        ("loss: count", count_correct::<M>),
        ("adam", adam_kernel::<M>),
        ("data", gather::<M>),
        ("conv", conv::conv_kernels::<M>),
        ("batchnorm", batchnorm::batch_norm::<M>),
        ("pool", pool::max_pool::<M>),
        ("linear", linear::linear_kernels::<M>),
        ("conv_tf32", conv_tf32::conv_tf32_kernels::<M>),
        ("schedule", schedule::scheduled_kernels::<M>),
        // Last: its cases are fixed and use no seed (the others keep their historic seeds).
        ("rng", philox::<M>),
    ]
}

/// Runs every family on `exec`. An error here is an allocation or copy failure (launch errors
/// become failed rows).
pub fn run_all<M: Memory>(exec: &M, seed: u64) -> Result<Report, GpuError> {
    let mut report = Report::default();
    for (i, (_, f)) in families::<M>().into_iter().enumerate() {
        f(exec, seed.wrapping_add(i as u64 + 1), &mut report)?;
    }
    Ok(report)
}

fn nan<M: Memory>(exec: &M, n: usize) -> Result<M::Buf<f32>, GpuError> {
    exec.filled(n, f32::NAN)
}

pub fn activations<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
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
            let size = format!("n={n}");
            let x = awkward(&mut rng, n, -6.0, 6.0);
            let gy = rng.vec(n, -2.0, 2.0);
            let want_y = act.forward(&x);
            let want_gx = act.backward(&x, &want_y, &gy);
            let xd = exec.upload(&x)?;
            let mut yd = nan(exec, n)?;
            let k = format!("activation_forward {}", act.name());
            let res = activation::forward(exec, act, &xd, &mut yd);
            if r.launched(&k, &size, Tolerance::Ulps(ulps), res) {
                r.ulps(&k, &size, &yd.read()?, &want_y, ulps);
            }
            // The backward from the CPU's y, so that only the backward is compared.
            let y_cpu = exec.upload(&want_y)?;
            let gyd = exec.upload(&gy)?;
            let mut gxd = nan(exec, n)?;
            let k = format!("activation_backward {}", act.name());
            let res = activation::backward(exec, act, &xd, &y_cpu, &gyd, &mut gxd);
            if r.launched(&k, &size, Tolerance::Ulps(0), res) {
                r.ulps(&k, &size, &gxd.read()?, &want_gx, 0);
            }
        }
    }
    Ok(())
}

pub fn elementwise_kernels<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
    let b = Tolerance::Ulps(0);
    for n in SIZES {
        let s = format!("n={n}");
        let x = rng.vec(n, -3.0, 3.0);
        let y0 = rng.vec(n, -3.0, 3.0);
        let a = rng.uniform(-2.0, 2.0);
        let xd = exec.upload(&x)?;

        let mut yd = nan(exec, n)?;
        if r.launched("fill", &s, b, elementwise::fill(exec, &mut yd, a)) {
            r.ulps("fill", &s, &yd.read()?, &vec![a; n], 0);
        }

        let mut yd = nan(exec, n)?;
        if r.launched("copy", &s, b, elementwise::copy(exec, &xd, &mut yd)) {
            r.ulps("copy", &s, &yd.read()?, &x, 0);
        }

        let want: Vec<f32> = x.iter().map(|&v| a * v).collect();
        let mut yd = nan(exec, n)?;
        if r.launched("scale", &s, b, elementwise::scale(exec, a, &xd, &mut yd)) {
            r.ulps("scale", &s, &yd.read()?, &want, 0);
        }
        let mut yd = exec.upload(&x)?;
        let res = elementwise::scale_in_place(exec, a, &mut yd);
        if r.launched("scale_in_place", &s, b, res) {
            r.ulps("scale_in_place", &s, &yd.read()?, &want, 0);
        }

        let want: Vec<f32> = y0.iter().zip(&x).map(|(&y, &v)| y + a * v).collect();
        let mut yd = exec.upload(&y0)?;
        if r.launched("axpy", &s, b, elementwise::axpy(exec, a, &xd, &mut yd)) {
            r.ulps("axpy", &s, &yd.read()?, &want, 0);
        }
    }
    // Length mismatches are errors, not out-of-bounds accesses.
    let xd = exec.upload(&[1.0f32; 5])?;
    let mut yd = nan(exec, 4)?;
    let err = elementwise::copy(exec, &xd, &mut yd).is_err();
    r.holds("copy: length mismatch is an error", "5→4", err, || {
        "accepted".into()
    });
    Ok(())
}

pub fn concat_split<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
    // G's input [one-hot, embedding, noise] for a batch of 3, and a 4-D case.
    let cases: [(usize, Vec<Vec<usize>>); 3] = [
        (3, vec![vec![3, 10], vec![3, 7], vec![3, 100]]),
        (
            3,
            vec![vec![3, 2, 5, 3], vec![3, 1, 5, 3], vec![3, 4, 5, 3]],
        ),
        (1, vec![vec![1, 257]]),
    ];
    let b = Tolerance::Ulps(0);
    for (items, shapes) in cases {
        let s = shapes
            .iter()
            .map(|s| format!("{s:?}").replace(' ', ""))
            .collect::<Vec<_>>()
            .join("+");
        let data: Vec<Vec<f32>> = shapes
            .iter()
            .map(|s| rng.vec(s.iter().product(), -1.0, 1.0))
            .collect();
        let parts: Vec<(&[f32], &[usize])> = data
            .iter()
            .zip(&shapes)
            .map(|(d, s)| (d.as_slice(), s.as_slice()))
            .collect();
        let (want, out_dims) = concat_dim1(&parts)
            .map_err(|e| super::kernels::invalid("concat_part", e.to_string()))?;
        let devs = data
            .iter()
            .map(|d| exec.upload(d))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&M::Buf<f32>> = devs.iter().collect();
        let mut out = nan(exec, want.len())?;
        let res = layout::concat_dim1(exec, items, &refs, &mut out);
        if r.launched("concat_dim1", &s, b, res) {
            r.ulps("concat_dim1", &s, &out.read()?, &want, 0);
        }

        let channels: Vec<usize> = shapes.iter().map(|s| s[1]).collect();
        let want_parts = split_dim1(&want, &out_dims, &channels)
            .map_err(|e| super::kernels::invalid("split_part", e.to_string()))?;
        let whole = exec.upload(&want)?;
        let mut outs = data
            .iter()
            .map(|d| nan(exec, d.len()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out_refs: Vec<&mut M::Buf<f32>> = outs.iter_mut().collect();
        let res = layout::split_dim1(exec, items, &whole, &mut out_refs);
        if r.launched("split_dim1", &s, b, res) {
            for (i, (got, w)) in outs.iter().zip(&want_parts).enumerate() {
                let got = got.read()?;
                r.ulps("split_dim1", &s, &got, w, 0);
                r.ulps("split_dim1", &s, &got, &data[i], 0);
            }
        }
    }
    Ok(())
}

pub fn sums<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
    for n in [1usize, 3, 257, 1000, 70_001] {
        let s = format!("n={n}");
        let x = rng.vec(n, -1.0, 3.0);
        let xd = exec.upload(&x)?;
        let mut a = nan(exec, 1)?;
        let mut b = nan(exec, 1)?;
        let bound = sum_bound(&x, 0);
        let res = loss::sum(exec, &xd, n as f32, &mut a)
            .and_then(|()| loss::sum(exec, &xd, n as f32, &mut b));
        if r.launched("sum (mean)", &s, Tolerance::Abs(bound), res) {
            let (a, b) = (a.read()?[0], b.read()?[0]);
            let cpu = x.iter().sum::<f32>() / n as f32;
            r.within("sum (mean)", &s, a, cpu, bound);
            r.holds("sum: deterministic", &s, a.to_bits() == b.to_bits(), || {
                format!("two launches gave {a:e} and {b:e}")
            });
        }
    }
    Ok(())
}

pub fn cross_entropy<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
    let ulps = libm_ulps(exec);
    let tol = Tolerance::Ulps(ulps);
    for (n, k) in [
        (1usize, 7usize),
        (3, 7),
        (3, 11),
        (257, 10),
        (1000, 11),
        (100, 11),
    ] {
        let s = format!("[{n},{k}]");
        let logits = rng.vec(n * k, -8.0, 8.0);
        let labels: Vec<u32> = (0..n).map(|_| rng.below(k) as u32).collect();
        let g = rng.uniform(0.25, 2.0);
        let ld = exec.upload(&logits)?;
        let lab = exec.upload(&labels)?;
        let mut rows = nan(exec, n)?;
        let mut out = nan(exec, 1)?;
        // Per-row terms: the CPU's loss of each row alone (a batch of one) is its term.
        let want_rows: Vec<f32> = logits
            .chunks(k)
            .zip(&labels)
            .map(|(row, &l)| cpu_loss::cross_entropy_forward(row, [1, k], &[l]).unwrap_or(f32::NAN))
            .collect();
        let bound = sum_bound(&want_rows, ulps);
        let res = loss::cross_entropy_forward(exec, &ld, &lab, [n, k], &mut rows, &mut out);
        if r.launched("cross_entropy_forward rows", &s, tol, res) {
            r.ulps(
                "cross_entropy_forward rows",
                &s,
                &rows.read()?,
                &want_rows,
                ulps,
            );
            let got = out.read()?[0];
            let cpu = cpu_loss::cross_entropy_forward(&logits, [n, k], &labels).unwrap_or(f32::NAN);
            r.within("cross_entropy_forward mean", &s, got, cpu, bound);
            // Deterministic: a second launch gives the same bits.
            let mut out2 = nan(exec, 1)?;
            let res = loss::cross_entropy_forward(exec, &ld, &lab, [n, k], &mut rows, &mut out2);
            if r.launched(
                "cross_entropy_forward: deterministic",
                &s,
                Tolerance::Exact,
                res,
            ) {
                let again = out2.read()?[0];
                r.holds(
                    "cross_entropy_forward: deterministic",
                    &s,
                    again.to_bits() == got.to_bits(),
                    || format!("two launches gave {got:e} and {again:e}"),
                );
            }
        }

        let gd = exec.upload(&[g])?;
        let mut dx = nan(exec, n * k)?;
        let res = loss::cross_entropy_backward(exec, &ld, &lab, [n, k], &gd, &mut dx);
        let want_dx =
            cpu_loss::cross_entropy_backward(&logits, [n, k], &labels, g).unwrap_or_default();
        if r.launched("cross_entropy_backward", &s, tol, res) {
            r.ulps("cross_entropy_backward", &s, &dx.read()?, &want_dx, ulps);
        }

        // ---- fused: loss + saved gradient in one launch, then the scaled backward ----
        let kf = "cross_entropy_fused";
        let (mut out_f, mut grad) = (nan(exec, 1)?, nan(exec, n * k)?);
        let res = loss::cross_entropy_fused(exec, &ld, &lab, [n, k], &mut out_f, Some(&mut grad));
        if r.launched(kf, &s, tol, res) {
            let got = out_f.read()?[0];
            let cpu = cpu_loss::cross_entropy_forward(&logits, [n, k], &labels).unwrap_or(f32::NAN);
            r.within("cross_entropy_fused mean", &s, got, cpu, bound);
            let two = out.read()?[0];
            same_sum(r, exec, "cross_entropy_fused", &s, got, two, bound);
            // The saved gradient of the summed loss: the CPU's at g = n (g/n = 1 exactly).
            let want = cpu_loss::cross_entropy_backward(&logits, [n, k], &labels, n as f32)
                .unwrap_or_default();
            r.ulps("cross_entropy_fused grad", &s, &grad.read()?, &want, ulps);
            // Without a gradient buffer: the same loss.
            let mut out_n = nan(exec, 1)?;
            let res = loss::cross_entropy_fused(exec, &ld, &lab, [n, k], &mut out_n, None);
            let kn = "cross_entropy_fused: no grad, same loss";
            if r.launched(kn, &s, Tolerance::Exact, res) {
                let v = out_n.read()?[0];
                r.holds(kn, &s, v.to_bits() == got.to_bits(), || {
                    format!("{v:e} vs {got:e}")
                });
            }
            let ks = "loss_grad_scale (cross-entropy)";
            let mut dx = nan(exec, n * k)?;
            let res = loss::grad_scale(exec, &grad, &gd, n as f32, &mut dx);
            if r.launched(ks, &s, tol, res) {
                r.ulps(ks, &s, &dx.read()?, &want_dx, ulps);
            }
        }
    }
    // Too many logits for one block: refused (the backend takes the two-launch path).
    let kb = "cross_entropy_fused: > FUSED_MAX_ELEMENTS refused";
    let big = loss::FUSED_MAX_ELEMENTS / 4 + 1;
    let ld = exec.upload(&vec![0.0f32; big * 4])?;
    let lab = exec.upload(&vec![0u32; big])?;
    let mut out = nan(exec, 1)?;
    let refused = loss::cross_entropy_fused(exec, &ld, &lab, [big, 4], &mut out, None).is_err()
        && !loss::fits_one_block(big * 4)
        && loss::fits_one_block(loss::FUSED_MAX_ELEMENTS);
    r.holds(kb, &format!("[{big},4]"), refused, || "accepted".into());
    // A label out of range: NaN, not an out-of-bounds read.
    let k = "cross_entropy_forward: bad label → NaN";
    let ld = exec.upload(&[0.5f32; 7])?;
    let lab = exec.upload(&[7u32])?;
    let (mut rows, mut out) = (nan(exec, 1)?, exec.filled(1, 0.0f32)?);
    let res = loss::cross_entropy_forward(exec, &ld, &lab, [1, 7], &mut rows, &mut out);
    if r.launched(k, "[1,7]", Tolerance::Exact, res) {
        let v = out.read()?[0];
        r.holds(k, "[1,7]", v.is_nan(), || format!("got {v:e}"));
    }
    let k = "cross_entropy_fused: bad label → NaN";
    let (mut out, mut grad) = (exec.filled(1, 0.0f32)?, exec.filled(7, 0.0f32)?);
    let res = loss::cross_entropy_fused(exec, &ld, &lab, [1, 7], &mut out, Some(&mut grad));
    if r.launched(k, "[1,7]", Tolerance::Exact, res) {
        let (v, g) = (out.read()?[0], grad.read()?);
        let ok = v.is_nan() && g.iter().all(|x| x.is_nan());
        r.holds(k, "[1,7]", ok, || format!("got {v:e}, grad {g:?}"));
    }
    Ok(())
}

/// A fused loss's mean against the two-launch path's: the same terms added in the same order,
/// so the same bits on the emulator. On a GPU the compiler may contract the per-term
/// expressions differently in the two kernels (the order is still the same), so there both
/// are only held to their common bound against the CPU: |fused − two| ≤ 2·`bound`.
fn same_sum<M: Memory>(
    r: &mut Report,
    exec: &M,
    kernel: &str,
    size: &str,
    fused: f32,
    two: f32,
    bound: f64,
) {
    if exec.name() == "emulator" {
        let k = format!("{kernel} mean = two-launch bits");
        r.holds(&k, size, fused.to_bits() == two.to_bits(), || {
            format!("fused {fused:e}, two launches {two:e}")
        });
    } else {
        r.within(
            &format!("{kernel} mean vs two-launch"),
            size,
            fused,
            two,
            2.0 * bound,
        );
    }
}

pub fn bce<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
    let ulps = libm_ulps(exec);
    let tol = Tolerance::Ulps(ulps);
    for n in SIZES {
        let x = awkward(&mut rng, n, -10.0, 10.0);
        let per = rng.vec(n, 0.0, 1.0);
        let per_d = exec.upload(&per)?;
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
        let xd = exec.upload(&x)?;
        let g = rng.uniform(0.25, 2.0);
        let gd = exec.upload(&[g])?;
        for (cpu_t, gpu_t) in targets {
            let s = match &cpu_t {
                cpu_loss::BceTarget::Constant(t) => format!("n={n} t={t}"),
                cpu_loss::BceTarget::PerElement(_) => format!("n={n} t=per-element"),
            };
            let mut terms = nan(exec, n)?;
            let mut out = nan(exec, 1)?;
            let want_terms: Vec<f32> = (0..n)
                .map(|i| {
                    let t = match &cpu_t {
                        cpu_loss::BceTarget::Constant(t) => *t,
                        cpu_loss::BceTarget::PerElement(v) => v[i],
                    };
                    cpu_loss::bce_with_logits_forward(&x[i..=i], &cpu_loss::BceTarget::Constant(t))
                        .unwrap_or(f32::NAN)
                })
                .collect();
            let res = loss::bce_with_logits_forward(exec, &xd, gpu_t, &mut terms, &mut out);
            if r.launched("bce_with_logits_forward terms", &s, tol, res) {
                r.ulps(
                    "bce_with_logits_forward terms",
                    &s,
                    &terms.read()?,
                    &want_terms,
                    ulps,
                );
                let got = out.read()?[0];
                let cpu = cpu_loss::bce_with_logits_forward(&x, &cpu_t).unwrap_or(f32::NAN);
                let bound = sum_bound(&want_terms, ulps);
                r.within("bce_with_logits_forward mean", &s, got, cpu, bound);
            }

            let mut dx = nan(exec, n)?;
            let res = loss::bce_with_logits_backward(exec, &xd, gpu_t, &gd, &mut dx);
            let want_dx = cpu_loss::bce_with_logits_backward(&x, &cpu_t, g).unwrap_or_default();
            if r.launched("bce_with_logits_backward", &s, tol, res) {
                r.ulps("bce_with_logits_backward", &s, &dx.read()?, &want_dx, ulps);
            }

            // ---- fused: loss + saved gradient in one launch, then the scaled backward ----
            let kf = "bce_fused";
            let (mut out_f, mut grad) = (nan(exec, 1)?, nan(exec, n)?);
            let res = loss::bce_fused(exec, &xd, gpu_t, &mut out_f, Some(&mut grad));
            if r.launched(kf, &s, tol, res) {
                let got = out_f.read()?[0];
                let cpu = cpu_loss::bce_with_logits_forward(&x, &cpu_t).unwrap_or(f32::NAN);
                r.within("bce_fused mean", &s, got, cpu, sum_bound(&want_terms, ulps));
                let two = out.read()?[0];
                let bound = sum_bound(&want_terms, ulps);
                same_sum(r, exec, "bce_fused", &s, got, two, bound);
                let want =
                    cpu_loss::bce_with_logits_backward(&x, &cpu_t, n as f32).unwrap_or_default();
                r.ulps("bce_fused grad", &s, &grad.read()?, &want, ulps);
                let ks = "loss_grad_scale (bce)";
                let mut dx = nan(exec, n)?;
                let res = loss::grad_scale(exec, &grad, &gd, n as f32, &mut dx);
                if r.launched(ks, &s, tol, res) {
                    r.ulps(ks, &s, &dx.read()?, &want_dx, ulps);
                }
            }
        }
    }
    let kb = "bce_fused: > FUSED_MAX_ELEMENTS refused";
    let big = loss::FUSED_MAX_ELEMENTS + 1;
    let xd = exec.upload(&vec![0.0f32; big])?;
    let mut out = nan(exec, 1)?;
    let refused =
        loss::bce_fused(exec, &xd, loss::BceTarget::Constant(1.0), &mut out, None).is_err();
    r.holds(kb, &format!("n={big}"), refused, || "accepted".into());
    Ok(())
}

pub fn count_correct<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
    for (n, k) in [(1usize, 7usize), (3, 11), (257, 10), (1000, 7)] {
        let s = format!("[{n},{k}]");
        let mut logits = rng.vec(n * k, -2.0, 2.0);
        // Ties and NaNs: argmax takes the first maximum, and a NaN wins.
        for row in (0..n).step_by(5) {
            logits[row * k + k - 1] = logits[row * k];
        }
        for row in (2..n).step_by(7) {
            logits[row * k + 1] = f32::NAN;
        }
        let pred = cpu_loss::argmax_rows(&logits, [n, k]).unwrap_or_default();
        let labels: Vec<u32> = (0..n)
            .map(|i| {
                if rng.below(2) == 0 {
                    pred.get(i).copied().unwrap_or(0)
                } else {
                    rng.below(k) as u32
                }
            })
            .collect();
        let want = cpu_loss::count_correct(&logits, [n, k], &labels).unwrap_or(usize::MAX) as u32;
        let ld = exec.upload(&logits)?;
        let lab = exec.upload(&labels)?;
        let mut out = exec.filled(1, 0xDEAD_BEEFu32)?;
        let kn = "count_correct";
        let res = loss::count_correct(exec, &ld, &lab, [n, k], &mut out, false);
        if r.launched(kn, &s, Tolerance::Exact, res) {
            let got = out.read()?[0];
            r.holds(kn, &s, got == want, || format!("got {got}, want {want}"));
            let res = loss::count_correct(exec, &ld, &lab, [n, k], &mut out, true);
            let kn = "count_correct accumulate";
            if r.launched(kn, &s, Tolerance::Exact, res) {
                let got = out.read()?[0];
                r.holds(kn, &s, got == 2 * want, || {
                    format!("got {got}, want {}", 2 * want)
                });
            }
        }
    }
    Ok(())
}

pub fn adam_kernel<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
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
    let k = "adam_step";
    for cfg in configs {
        for n in SIZES {
            let s = format!("n={n} β1={} β2={}", cfg.beta1, cfg.beta2);
            let mut p = rng.vec(n, -1.0, 1.0);
            let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
            let mut pd = exec.upload(&p)?;
            let mut md = exec.upload(&m)?;
            let mut vd = exec.upload(&v)?;
            for step in 1..=4u64 {
                let g = awkward(&mut rng, n, -3.0, 3.0);
                if let Err(e) = adam_step(&mut p, &g, &mut m, &mut v, step, &cfg) {
                    r.fail(k, &s, Tolerance::Ulps(0), format!("CPU oracle: {e}"));
                    break;
                }
                let gd = exec.upload(&g)?;
                let res = adam::step(exec, &mut pd, &gd, &mut md, &mut vd, step, &cfg);
                if !r.launched(k, &s, Tolerance::Ulps(0), res) {
                    break;
                }
                r.ulps(k, &s, &pd.read()?, &p, 0);
                r.ulps(k, &s, &md.read()?, &m, 0);
                r.ulps(k, &s, &vd.read()?, &v, 0);
            }
        }
    }
    Ok(())
}

pub fn philox<M: Memory>(exec: &M, _seed: u64, r: &mut Report) -> Result<(), GpuError> {
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
    let k = "philox_normal";
    for (seed, stream, offset, n) in cases {
        let s = format!("n={n}");
        let mut want = vec![0.0f32; n];
        crate::rng::normal(seed, stream, offset, &mut want);
        let mut out = nan(exec, n)?;
        let res = rng::normal(exec, seed, stream, offset, &mut out);
        if r.launched(k, &s, Tolerance::Ulps(ulps), res) {
            r.ulps(k, &s, &out.read()?, &want, ulps);
        }
    }
    Ok(())
}

pub fn gather<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
    let k = "gather_batch";
    let b = Tolerance::Ulps(0);
    // MNIST-like gray 28×28 (enlarged), SVHN-like RGB 32×32 (copied), RGB 28×28, one axis
    // kept (32×28), and a strong vertical shrink (50×30: Pillow's vertical pass first).
    for dims in [
        [5, 1, 28, 28],
        [4, 3, 32, 32],
        [3, 3, 28, 28],
        [3, 1, 32, 28],
        [3, 3, 50, 30],
    ] {
        let s = format!("{dims:?}").replace(' ', "");
        let len: usize = dims.iter().product();
        let pixels: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let images = Images::from_vec(pixels.clone(), dims, "check")
            .map_err(|e| super::kernels::invalid(k, e.to_string()))?;
        let dev = data::DeviceImages::new(exec, &pixels, dims)?;
        let indices: Vec<u32> = vec![(dims[0] - 1) as u32, 0, rng.below(dims[0]) as u32];
        let prep = Prep::new(&images);
        let mut want = Vec::new();
        let mut img = vec![0u8; 3 * 32 * 32];
        for &i in &indices {
            prep.rgb32(images.image(i as usize), &mut img, &mut Vec::new());
            want.extend(img.iter().map(|&p| normalize(p)));
        }
        let want_d: Vec<f32> = want.iter().map(|&x| to_d_range(x)).collect();
        let idx = exec.upload(&indices)?;
        let mut out = nan(exec, want.len())?;
        let mut out_d = nan(exec, want.len())?;
        let res = data::gather(
            exec,
            &dev,
            data::Rows::Now(&idx),
            &mut out,
            Some(&mut out_d),
            None,
        );
        if r.launched(k, &s, b, res) {
            r.ulps(k, &s, &out.read()?, &want, 0);
            r.ulps("gather_batch d view", &s, &out_d.read()?, &want_d, 0);
        }
        let mut out = nan(exec, want.len())?;
        let res = data::gather(exec, &dev, data::Rows::Now(&idx), &mut out, None, None);
        if r.launched(k, &s, b, res) {
            r.ulps(k, &s, &out.read()?, &want, 0);
        }
    }
    // An index out of range: NaN, not an out-of-bounds read.
    let kb = "gather_batch: bad index → NaN";
    let dev = data::DeviceImages::new(exec, &[7u8; 2 * 28 * 28], [2, 1, 28, 28])?;
    let idx = exec.upload(&[2u32])?;
    let mut out = exec.filled(3 * 32 * 32, 0.0f32)?;
    let res = data::gather(exec, &dev, data::Rows::Now(&idx), &mut out, None, None);
    if r.launched(kb, "[2,1,28,28]", Tolerance::Exact, res) {
        let all_nan = out.read()?.iter().all(|v| v.is_nan());
        r.holds(kb, "[2,1,28,28]", all_nan, || "finite values".into());
    }
    Ok(())
}

/// The report as a table, one row per kernel.
pub fn table(report: &Report) -> String {
    let mut lines = vec![[
        "kernel".to_string(),
        "sizes".to_string(),
        "max |Δ|".to_string(),
        "tolerance".to_string(),
        "result".to_string(),
    ]];
    for row in &report.rows {
        // As many sizes as fit in about 36 characters, then how many more.
        let mut sizes = String::new();
        for (i, s) in row.sizes.iter().enumerate() {
            let more = row.sizes.len() - i;
            if i > 0 && sizes.chars().count() + s.chars().count() > 36 {
                sizes.push_str(&format!(" (+{more} more)"));
                break;
            }
            if i > 0 {
                sizes.push_str(", ");
            }
            sizes.push_str(s);
        }
        let delta = if row.max_abs == 0.0 {
            "0".to_string()
        } else {
            format!("{:.2e}", row.max_abs)
        };
        let result = match &row.failure {
            None => "ok".to_string(),
            Some(f) => format!("FAIL {f}"),
        };
        lines.push([
            row.kernel.clone(),
            sizes,
            delta,
            row.tolerance.to_string(),
            result,
        ]);
    }
    let mut width = [0usize; 4];
    for l in &lines {
        for (w, cell) in width.iter_mut().zip(l.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for l in &lines {
        for (w, cell) in width.iter().zip(l.iter()) {
            out.push_str(cell);
            out.push_str(&" ".repeat(w - cell.chars().count() + 2));
        }
        out.push_str(&l[4]);
        out.push('\n');
    }
    out
}
