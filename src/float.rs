//! The scalar type of the CPU reference ops. Every CPU op is generic over `Float` so the
//! same code runs in f32 (training) and in f64 (finite-difference gradient checks).

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

pub trait Float:
    Copy
    + Debug
    + PartialOrd
    + Send
    + Sync
    + Default
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn from_usize(v: usize) -> Self {
        Self::from_f64(v as f64)
    }
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn abs(self) -> Self;
    fn max(self, other: Self) -> Self;
    fn is_nan(self) -> bool;

    /// `c = alpha · op(a) · op(b) + beta · c` for row-major matrices, where `op(a)` is m×k and
    /// `op(b)` is k×n; `trans_a`/`trans_b` say the stored matrix is the transpose (k×m, n×k).
    /// `beta == 0` overwrites `c` (NaN in `c` does not propagate).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: &[Self],
        trans_a: bool,
        b: &[Self],
        trans_b: bool,
        beta: Self,
        c: &mut [Self],
    );
}

/// Row and column strides of a row-major matrix stored as rows×cols, read as its transpose
/// when `trans` is set.
fn strides(rows_of_op: usize, cols_of_op: usize, trans: bool) -> (isize, isize) {
    if trans {
        // stored as cols_of_op × rows_of_op
        (1, rows_of_op as isize)
    } else {
        (cols_of_op as isize, 1)
    }
}

macro_rules! impl_float {
    ($t:ty, $gemm:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: &[Self],
                trans_a: bool,
                b: &[Self],
                trans_b: bool,
                beta: Self,
                c: &mut [Self],
            ) {
                // Hard asserts: the unsafe call below relies on them.
                assert!(a.len() >= m * k, "gemm: a has {} < {}·{}", a.len(), m, k);
                assert!(b.len() >= k * n, "gemm: b has {} < {}·{}", b.len(), k, n);
                assert!(c.len() >= m * n, "gemm: c has {} < {}·{}", c.len(), m, n);
                if m == 0 || n == 0 {
                    return;
                }
                if beta == 0.0 {
                    // matrixmultiply skips reading c when beta == 0, but be explicit.
                    c[..m * n].iter_mut().for_each(|v| *v = 0.0);
                }
                let (rsa, csa) = strides(m, k, trans_a);
                let (rsb, csb) = strides(k, n, trans_b);
                // SAFETY: the asserts above guarantee every index the strides reach
                // (max (m-1)·rs + (k-1)·cs < m·k, etc.) lies inside the slices, and `c`
                // does not alias `a` or `b` (distinct borrows).
                unsafe {
                    $gemm(
                        m,
                        k,
                        n,
                        alpha,
                        a.as_ptr(),
                        rsa,
                        csa,
                        b.as_ptr(),
                        rsb,
                        csb,
                        beta,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
            }
        }
    };
}

impl_float!(f32, matrixmultiply::sgemm);
impl_float!(f64, matrixmultiply::dgemm);

/// Convert a slice of any `Float` to f32 (used where CPU results become `Tensor`s).
pub fn to_f32<T: Float>(v: &[T]) -> Vec<f32> {
    v.iter().map(|x| x.to_f64() as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_all_transposes_match_naive() {
        let (m, k, n) = (3, 5, 4);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
        let naive = |a: &[f64], b: &[f64]| {
            let mut c = vec![0.0; m * n];
            for i in 0..m {
                for j in 0..n {
                    c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                }
            }
            c
        };
        let want = naive(&a, &b);
        let transpose = |x: &[f64], r: usize, c: usize| {
            let mut t = vec![0.0; r * c];
            for i in 0..r {
                for j in 0..c {
                    t[j * r + i] = x[i * c + j];
                }
            }
            t
        };
        let at = transpose(&a, m, k);
        let bt = transpose(&b, k, n);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let aa = if ta { &at } else { &a };
            let bb = if tb { &bt } else { &b };
            let mut c = vec![f64::NAN; m * n];
            f64::gemm(m, k, n, 1.0, aa, ta, bb, tb, 0.0, &mut c);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-12, "trans ({ta},{tb}): {x} vs {y}");
            }
        }
        // beta = 1 accumulates.
        let mut c = want.clone();
        f64::gemm(m, k, n, 2.0, &a, false, &b, false, 1.0, &mut c);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - 3.0 * y).abs() < 1e-12);
        }
    }
}
