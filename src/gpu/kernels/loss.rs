//! Launches of kernels/loss.cu and kernels/reduce.cu: softmax cross-entropy and BCE with
//! logits (mean over the batch; forward and backward), argmax accuracy, and the deterministic
//! sum they reduce with. The CPU reference is [`crate::ops::loss`].
//!
//! Forward losses write per-row / per-element terms (bit-identical to the CPU's on the
//! emulator) into a scratch buffer, then sum them with `sum_f32`: one block, a fixed tree
//! order, so the same input gives the same bits on every launch; the order differs from the
//! CPU's sequential sum, so the two agree to rounding only. Backward passes read the loss
//! gradient `g` from a device scalar (no host synchronization).
//!
//! Fused path (what the GPU backend uses when the logits fit, see [`fits_one_block`]): one
//! launch of one block computes the loss *and* the gradient of the summed terms into a saved
//! buffer ([`cross_entropy_fused`], [`bce_fused`]); the backward is then one elementwise
//! [`grad_scale`] by the upstream device scalar, instead of re-reading the logits. Per loss
//! and iteration: 2 launches (forward + backward) instead of 3, and the backward reads n·k
//! saved gradients instead of n·k logits (+ labels or targets) and recomputing exp/log. The
//! fused loss sums the terms in exactly the order of the two-launch path (thread t takes terms
//! t, t + 256, ... in order, then the same halving tree), so both paths give the same bits;
//! the scaled gradient has the bits of the unfused backward (and of the CPU on the emulator).

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
struct LossFusedParams {
    x: u64,
    labels: u64,
    target: u64,
    out: u64,
    grad: u64,
    n: u32,
    k: u32,
    target_const: f32,
    divisor: f32,
}
const _: () = assert!(std::mem::size_of::<LossFusedParams>() == 56);

#[repr(C)]
#[derive(Clone, Copy)]
struct LossGradScaleParams {
    grad: u64,
    g: u64,
    out: u64,
    n: u32,
    divisor: f32,
}
const _: () = assert!(std::mem::size_of::<LossGradScaleParams>() == 32);

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

/// The most logits (n·k for cross-entropy, n for BCE) the fused one-block kernels take: 256
/// threads, at most 256 logits each. At GTA's sizes (100 × 11 classes; N×1 or N×1×k×k patch
/// logits) one block is a few microseconds of work, less than a second launch; far beyond,
/// one block would leave the GPU idle, so larger losses take the multi-block two-launch path.
pub const FUSED_MAX_ELEMENTS: usize = 1 << 16;

/// Whether a loss over `logits` values takes the fused one-block kernels.
pub fn fits_one_block(logits: usize) -> bool {
    logits <= FUSED_MAX_ELEMENTS
}

/// Mean softmax cross-entropy of `logits` [n, k] -> `out[0]` (the bits of
/// [`cross_entropy_forward`]) and, when `grad` is given, `softmax − onehot` (the gradient of
/// the SUMMED loss, [n, k]) into it, in one launch of one block. Errors for more than
/// [`FUSED_MAX_ELEMENTS`] logits (use the two-launch path).
pub fn cross_entropy_fused<M: Memory>(
    exec: &M,
    logits: &M::Buf<f32>,
    labels: &M::Buf<u32>,
    dims: [usize; 2],
    out: &mut M::Buf<f32>,
    grad: Option<&mut M::Buf<f32>>,
) -> Result<(), GpuError> {
    const K: &str = "cross_entropy_fused";
    let (n, k) = check_rows(K, logits, labels, dims)?;
    fused_size(K, logits.len())?;
    check_len(K, "out", out, 1)?;
    let grad = match grad {
        Some(g) => {
            check_len(K, "grad", g, logits.len())?;
            g.device_ptr()
        }
        None => 0,
    };
    let p = LossFusedParams {
        x: logits.device_ptr(),
        labels: labels.device_ptr(),
        target: 0,
        out: out.device_ptr(),
        grad,
        n,
        k,
        target_const: 0.0,
        divisor: dims[0] as f32,
    };
    // SAFETY: logits (and grad when given) hold n·k floats, labels n, out one (checked); the
    // kernel reads rows i < n (labels range-checked in the kernel) and writes grad's row i and
    // out[0]; a null grad is never written.
    unsafe { launch(exec, K, one_block(), &p) }
}

/// Mean BCE with logits -> `out[0]` (the bits of [`bce_with_logits_forward`]) and, when `grad`
/// is given, `sigmoid(x) − target` (the gradient of the SUMMED loss) into it, in one launch of
/// one block. Errors for more than [`FUSED_MAX_ELEMENTS`] logits.
pub fn bce_fused<M: Memory>(
    exec: &M,
    x: &M::Buf<f32>,
    target: BceTarget<'_, M>,
    out: &mut M::Buf<f32>,
    grad: Option<&mut M::Buf<f32>>,
) -> Result<(), GpuError> {
    const K: &str = "bce_fused";
    fused_size(K, x.len())?;
    check_len(K, "out", out, 1)?;
    // bce_params checks x (non-empty) and the target (its `out` is x itself here, unused).
    let grad_ptr = match &grad {
        Some(g) => {
            check_len(K, "grad", *g, x.len())?;
            g.device_ptr()
        }
        None => 0,
    };
    let b = bce_params(K, x, target, 0, x)?;
    let p = LossFusedParams {
        x: b.x,
        labels: 0,
        target: b.target,
        out: out.device_ptr(),
        grad: grad_ptr,
        n: b.n,
        k: 1,
        target_const: b.target_const,
        divisor: x.len() as f32,
    };
    // SAFETY: x (a per-element target, and grad when given) hold n floats, out one (checked);
    // the kernel touches indices < n and out[0]; a null grad is never written.
    unsafe { launch(exec, K, one_block(), &p) }
}

/// The backward of a fused loss: `dx = (g[0]/divisor)·grad` (divisor: n rows for
/// cross-entropy, the logit count for BCE), `grad` what [`cross_entropy_fused`] or
/// [`bce_fused`] saved. The bits of [`cross_entropy_backward`] / [`bce_with_logits_backward`].
pub fn grad_scale<M: Memory>(
    exec: &M,
    grad: &M::Buf<f32>,
    g: &M::Buf<f32>,
    divisor: f32,
    dx: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "loss_grad_scale";
    check_len(K, "g", g, 1)?;
    check_len(K, "dx", dx, grad.len())?;
    if grad.is_empty() {
        return Err(invalid(K, "no gradient values"));
    }
    let p = LossGradScaleParams {
        grad: grad.device_ptr(),
        g: g.device_ptr(),
        out: dx.device_ptr(),
        n: count(K, grad.len())?,
        divisor,
    };
    // SAFETY: grad and dx hold n floats, g one (checked); indices < n only.
    unsafe { launch(exec, K, elements(grad.len()), &p) }
}

fn fused_size(kernel: &str, logits: usize) -> Result<(), GpuError> {
    if fits_one_block(logits) {
        Ok(())
    } else {
        Err(invalid(
            kernel,
            format!(
                "{logits} logits exceed the one-block fused loss's {FUSED_MAX_ELEMENTS}: use the \
                 two-launch kernels"
            ),
        ))
    }
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
