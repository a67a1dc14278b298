//! Launches of kernels/loss.cu and kernels/reduce.cu: softmax cross-entropy and BCE with
//! logits (mean over the batch; forward and backward), argmax accuracy, and the deterministic
//! sum they reduce with. The CPU reference is [`crate::ops::loss`].
//!
//! Forward losses write per-row / per-element terms (bit-identical to the CPU's on the
//! emulator) into a scratch buffer, then sum them with `sum_f32`: one block, a fixed tree
//! order, so the same input gives the same bits on every launch; the order differs from the
//! CPU's sequential sum, so the two agree to rounding only. Backward passes read the loss
//! gradient `g` from a device scalar (no host synchronization).

use super::{check_len, count, elements, invalid, launch, REDUCE_THREADS};
use crate::gpu::{Buffer, GpuError, LaunchConfig, Memory};

#[repr(C)]
#[derive(Clone, Copy)]
struct SumParams {
    x: u64,
    out: u64,
    n: u32,
    divisor: f32,
}
const _: () = assert!(std::mem::size_of::<SumParams>() == 24);

#[repr(C)]
#[derive(Clone, Copy)]
struct CrossEntropyParams {
    logits: u64,
    labels: u64,
    g: u64,
    out: u64,
    n: u32,
    k: u32,
}
const _: () = assert!(std::mem::size_of::<CrossEntropyParams>() == 40);

#[repr(C)]
#[derive(Clone, Copy)]
struct BceParams {
    x: u64,
    target: u64,
    g: u64,
    out: u64,
    n: u32,
    target_const: f32,
}
const _: () = assert!(std::mem::size_of::<BceParams>() == 40);

#[repr(C)]
#[derive(Clone, Copy)]
struct CountCorrectParams {
    logits: u64,
    labels: u64,
    out: u64,
    n: u32,
    k: u32,
    accumulate: u32,
    pad: u32,
}
const _: () = assert!(std::mem::size_of::<CountCorrectParams>() == 40);

/// The single-block launch of the reductions.
fn one_block() -> LaunchConfig {
    LaunchConfig::linear(1, REDUCE_THREADS)
}

/// `out[0] = (Σ x) / divisor`, in a fixed order (deterministic: same input, same bits).
pub fn sum<M: Memory>(
    exec: &M,
    x: &M::Buf<f32>,
    divisor: f32,
    out: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "sum_f32";
    check_len(K, "out", out, 1)?;
    let p = SumParams {
        x: x.device_ptr(),
        out: out.device_ptr(),
        n: count(K, x.len())?,
        divisor,
    };
    // SAFETY: x holds n floats, out one; the kernel reads indices < n and writes out[0].
    unsafe { launch(exec, K, one_block(), &p) }
}

fn check_rows(
    kernel: &str,
    logits: &impl Buffer<f32>,
    labels: &impl Buffer<u32>,
    [n, k]: [usize; 2],
) -> Result<(u32, u32), GpuError> {
    if n == 0 || k == 0 {
        return Err(invalid(kernel, format!("empty logits [{n}, {k}]")));
    }
    check_len(kernel, "logits", logits, n * k)?;
    check_len(kernel, "labels", labels, n)?;
    Ok((count(kernel, n)?, count(kernel, k)?))
}

/// Mean softmax cross-entropy of `logits` [n, k] with `labels` (each < k; a label out of range
/// makes the loss NaN) -> `out[0]`. `rows` (n values) receives the per-row losses.
pub fn cross_entropy_forward<M: Memory>(
    exec: &M,
    logits: &M::Buf<f32>,
    labels: &M::Buf<u32>,
    dims: [usize; 2],
    rows: &mut M::Buf<f32>,
    out: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "cross_entropy_rows";
    let (n, k) = check_rows(K, logits, labels, dims)?;
    check_len(K, "rows", rows, dims[0])?;
    let p = CrossEntropyParams {
        logits: logits.device_ptr(),
        labels: labels.device_ptr(),
        g: 0,
        out: rows.device_ptr(),
        n,
        k,
    };
    // SAFETY: logits hold n·k floats, labels and rows n values (checked); the kernel reads
    // row i's k logits and (label < k, checked in the kernel) writes rows[i], i < n.
    unsafe { launch(exec, K, elements(dims[0]), &p) }?;
    sum(exec, rows, dims[0] as f32, out)
}

/// `dx = (g[0]/n)·(softmax(logits) − onehot(labels))`, [n, k].
pub fn cross_entropy_backward<M: Memory>(
    exec: &M,
    logits: &M::Buf<f32>,
    labels: &M::Buf<u32>,
    dims: [usize; 2],
    g: &M::Buf<f32>,
    dx: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "cross_entropy_backward";
    let (n, k) = check_rows(K, logits, labels, dims)?;
    check_len(K, "g", g, 1)?;
    check_len(K, "dx", dx, dims[0] * dims[1])?;
    let p = CrossEntropyParams {
        logits: logits.device_ptr(),
        labels: labels.device_ptr(),
        g: g.device_ptr(),
        out: dx.device_ptr(),
        n,
        k,
    };
    // SAFETY: logits and dx hold n·k floats, labels n, g one (checked); thread i touches row i.
    unsafe { launch(exec, K, elements(dims[0]), &p) }
}

/// The BCE target: one value for every logit, or one per logit.
pub enum BceTarget<'a, M: Memory> {
    Constant(f32),
    PerElement(&'a M::Buf<f32>),
}

impl<M: Memory> Clone for BceTarget<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M: Memory> Copy for BceTarget<'_, M> {}

impl<M: Memory> std::fmt::Debug for BceTarget<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BceTarget::Constant(t) => f.debug_tuple("Constant").field(t).finish(),
            BceTarget::PerElement(b) => f.debug_tuple("PerElement").field(&b.len()).finish(),
        }
    }
}

fn bce_params<M: Memory>(
    kernel: &str,
    x: &M::Buf<f32>,
    target: BceTarget<'_, M>,
    g: u64,
    out: &M::Buf<f32>,
) -> Result<BceParams, GpuError> {
    let n = x.len();
    if n == 0 {
        return Err(invalid(kernel, "no logits: the mean is undefined"));
    }
    check_len(kernel, "out", out, n)?;
    let (target, target_const) = match target {
        BceTarget::Constant(t) => (0, t),
        BceTarget::PerElement(t) => {
            check_len(kernel, "target", t, n)?;
            (t.device_ptr(), 0.0)
        }
    };
    Ok(BceParams {
        x: x.device_ptr(),
        target,
        g,
        out: out.device_ptr(),
        n: count(kernel, n)?,
        target_const,
    })
}

/// Mean BCE with logits -> `out[0]`; `terms` (one per logit) receives the per-element losses.
pub fn bce_with_logits_forward<M: Memory>(
    exec: &M,
    x: &M::Buf<f32>,
    target: BceTarget<'_, M>,
    terms: &mut M::Buf<f32>,
    out: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "bce_terms";
    let p = bce_params(K, x, target, 0, terms)?;
    // SAFETY: x, terms (and a per-element target) hold n floats (checked); indices < n only.
    unsafe { launch(exec, K, elements(x.len()), &p) }?;
    sum(exec, terms, x.len() as f32, out)
}

/// `dx = (g[0]/n)·(sigmoid(x) − target)`.
pub fn bce_with_logits_backward<M: Memory>(
    exec: &M,
    x: &M::Buf<f32>,
    target: BceTarget<'_, M>,
    g: &M::Buf<f32>,
    dx: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "bce_backward";
    check_len(K, "g", g, 1)?;
    let p = bce_params(K, x, target, g.device_ptr(), dx)?;
    // SAFETY: x, dx (and a per-element target) hold n floats, g one (checked).
    unsafe { launch(exec, K, elements(x.len()), &p) }
}

/// The number of rows of `logits` [n, k] whose argmax (first maximum; NaN wins, as
/// [`crate::ops::loss::argmax_rows`]) equals the label -> `out[0]`, or added to it when
/// `accumulate`. Exact (integer sums).
pub fn count_correct<M: Memory>(
    exec: &M,
    logits: &M::Buf<f32>,
    labels: &M::Buf<u32>,
    dims: [usize; 2],
    out: &mut M::Buf<u32>,
    accumulate: bool,
) -> Result<(), GpuError> {
    const K: &str = "count_correct";
    let (n, k) = check_rows(K, logits, labels, dims)?;
    check_len(K, "out", out, 1)?;
    let p = CountCorrectParams {
        logits: logits.device_ptr(),
        labels: labels.device_ptr(),
        out: out.device_ptr(),
        n,
        k,
        accumulate: accumulate as u32,
        pad: 0,
    };
    // SAFETY: logits hold n·k floats, labels n, out one (checked); rows < n only.
    unsafe { launch(exec, K, one_block(), &p) }
}
