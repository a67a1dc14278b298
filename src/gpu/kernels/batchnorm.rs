//! Launches of kernels/batchnorm.cu: BatchNorm2d forward (training: batch statistics, saved
//! for the backward, and the running statistics updated as PyTorch does; evaluation: the
//! running statistics), with an optional fused ReLU/LeakyReLU, and both backwards (which take
//! that activation and the forward's output, so its backward needs no launch of its own). The CPU
//! reference is [`crate::ops::batchnorm`]; the kernels follow its operations (per-channel sums
//! in f64, two-pass variance), so they differ from it only in the order of the f64 sums (see
//! the kernel file's header and src/gpu/check/batchnorm.rs for the bounds).
//!
//! `x` is `[N, C, H, W]`; `weight`, `bias`, the saved and the running statistics have `C`
//! elements. Deterministic: no atomics, one block per channel in a fixed reduction order.

use super::{check_len, count, invalid, launch};
use crate::gpu::{Buffer, GpuError, LaunchConfig, Memory};
use crate::ops::activation::Activation;

/// Threads per block (`GTA_BN_THREADS` in kernels/params.cuh).
pub const THREADS: u32 = 256;

/// At most this many blocks per channel in the evaluation forward (grid-stride beyond).
const EVAL_CHUNKS: usize = 64;

#[repr(C)]
#[derive(Clone, Copy)]
struct BatchNormForwardParams {
    x: u64,
    weight: u64,
    bias: u64,
    y: u64,
    running_mean: u64,
    running_var: u64,
    save_mean: u64,
    save_invstd: u64,
    n: u32,
    c: u32,
    hw: u32,
    act: i32,
    eps: f32,
    momentum: f32,
    slope: f32,
    pad: u32,
}
const _: () = assert!(std::mem::size_of::<BatchNormForwardParams>() == 96);

#[repr(C)]
#[derive(Clone, Copy)]
struct BatchNormBackwardParams {
    x: u64,
    weight: u64,
    gy: u64,
    y: u64,
    mean: u64,
    stat: u64,
    gx: u64,
    gw: u64,
    gb: u64,
    n: u32,
    c: u32,
    hw: u32,
    eps: f32,
    act: i32,
    slope: f32,
}
const _: () = assert!(std::mem::size_of::<BatchNormBackwardParams>() == 96);

/// The activation fused into a batch norm's forward, and that forward's output `y`: given to a
/// backward, `gy` is the gradient of `y` and the kernel applies act'(y) itself (the bits of
/// [`super::activation::backward`] followed by the plain batch-norm backward, in one launch
/// and without the intermediate gradient tensor).
pub struct Fused<'a, B> {
    pub act: Activation,
    pub y: &'a B,
}

impl<B> Clone for Fused<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B> Copy for Fused<'_, B> {}

/// The checked shape: (n, c, hw, count = n·hw) as the kernels' 32-bit counts.
struct Dims {
    n: u32,
    c: u32,
    hw: u32,
    count: u32,
}

/// Checks `x_dims` (non-empty, every index < 2^32) and the lengths of x and the per-channel
/// buffers.
fn dims<'a, B: Buffer<f32> + 'a>(
    kernel: &str,
    x_dims: [usize; 4],
    x: &B,
    per_channel: impl IntoIterator<Item = (&'static str, &'a B)>,
) -> Result<Dims, GpuError> {
    let [n, c, h, w] = x_dims;
    if x_dims.contains(&0) {
        return Err(invalid(kernel, format!("empty input {x_dims:?}")));
    }
    let total = x_dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| invalid(kernel, format!("dims {x_dims:?} overflow")))?;
    count(kernel, total)?;
    check_len(kernel, "x", x, total)?;
    for (what, b) in per_channel {
        check_len(kernel, what, b, c)?;
    }
    Ok(Dims {
        n: n as u32,
        c: c as u32,
        hw: (h * w) as u32,
        count: (n * h * w) as u32,
    })
}

/// The fused activation's code (GTA_BN_ACT_NONE or GTA_ACT_*) and slope; other activations
/// are an error.
fn act_code(kernel: &str, act: Option<Activation>) -> Result<(i32, f32), GpuError> {
    match act {
        None => Ok((-1, 0.0)),
        Some(Activation::Relu) => Ok((0, 0.0)),
        Some(Activation::LeakyRelu { slope }) => Ok((1, slope)),
        Some(other) => Err(invalid(
            kernel,
            format!(
                "only ReLU and LeakyReLU fuse into batch norm, got {}",
                other.name()
            ),
        )),
    }
}

/// One block per channel.
fn per_channel(c: u32) -> LaunchConfig {
    LaunchConfig::linear(c, THREADS)
}

/// Training-mode forward: `y = act((x − mean)·invstd·weight + bias)` with the batch
/// statistics, which go to `save_mean`/`save_invstd` (for [`backward_train`]); the running
/// statistics are updated in place, `r ← (1 − momentum)·r + momentum·batch` (the variance
/// unbiased). Errors, changing nothing, for fewer than 2 values per channel, a momentum outside
/// [0, 1], or an activation other than ReLU/LeakyReLU.
#[allow(clippy::too_many_arguments)]
pub fn forward_train<M: Memory>(
    exec: &M,
    x_dims: [usize; 4],
    x: &M::Buf<f32>,
    weight: &M::Buf<f32>,
    bias: &M::Buf<f32>,
    eps: f32,
    momentum: f32,
    act: Option<Activation>,
    y: &mut M::Buf<f32>,
    save_mean: &mut M::Buf<f32>,
    save_invstd: &mut M::Buf<f32>,
    running_mean: &mut M::Buf<f32>,
    running_var: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "batchnorm_forward_train";
    let d = dims(
        K,
        x_dims,
        x,
        [
            ("weight", weight),
            ("bias", bias),
            ("save_mean", &*save_mean),
            ("save_invstd", &*save_invstd),
            ("running_mean", &*running_mean),
            ("running_var", &*running_var),
        ],
    )?;
    check_len(K, "y", y, x.len())?;
    if d.count < 2 {
        return Err(invalid(
            K,
            format!("expected more than 1 value per channel when training, got dims {x_dims:?}"),
        ));
    }
    if !(0.0..=1.0).contains(&momentum) {
        return Err(invalid(
            K,
            format!("momentum must lie in [0, 1], got {momentum}"),
        ));
    }
    let (act, slope) = act_code(K, act)?;
    let p = BatchNormForwardParams {
        x: x.device_ptr(),
        weight: weight.device_ptr(),
        bias: bias.device_ptr(),
        y: y.device_ptr(),
        running_mean: running_mean.device_ptr(),
        running_var: running_var.device_ptr(),
        save_mean: save_mean.device_ptr(),
        save_invstd: save_invstd.device_ptr(),
        n: d.n,
        c: d.c,
        hw: d.hw,
        act,
        eps,
        momentum,
        slope,
        pad: 0,
    };
    // SAFETY: x and y hold n·c·hw floats, the six per-channel buffers c (checked); block ch
    // touches channel ch's elements of x and y and element ch of the others, ch < c.
    unsafe { launch(exec, K, per_channel(d.c), &p) }
}

/// Evaluation-mode forward: `y = act((x − running_mean)·invstd·weight + bias)`, invstd =
/// 1/sqrt(running_var + eps). Elementwise: the CPU's result bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn forward_eval<M: Memory>(
    exec: &M,
    x_dims: [usize; 4],
    x: &M::Buf<f32>,
    weight: &M::Buf<f32>,
    bias: &M::Buf<f32>,
    running_mean: &M::Buf<f32>,
    running_var: &M::Buf<f32>,
    eps: f32,
    act: Option<Activation>,
    y: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "batchnorm_forward_eval";
    let d = dims(
        K,
        x_dims,
        x,
        [
            ("weight", weight),
            ("bias", bias),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
    )?;
    check_len(K, "y", y, x.len())?;
    if d.c > 65_535 {
        return Err(invalid(
            K,
            format!("{} channels exceed the grid's 65 535", d.c),
        ));
    }
    let (act, slope) = act_code(K, act)?;
    let p = BatchNormForwardParams {
        x: x.device_ptr(),
        weight: weight.device_ptr(),
        bias: bias.device_ptr(),
        y: y.device_ptr(),
        running_mean: running_mean.device_ptr(),
        running_var: running_var.device_ptr(),
        save_mean: 0,
        save_invstd: 0,
        n: d.n,
        c: d.c,
        hw: d.hw,
        act,
        eps,
        momentum: 0.0,
        slope,
        pad: 0,
    };
    let chunks = (d.count as usize)
        .div_ceil(THREADS as usize)
        .clamp(1, EVAL_CHUNKS);
    let cfg = LaunchConfig {
        grid: [chunks as u32, d.c, 1],
        block: [THREADS, 1, 1],
        dynamic_smem: 0,
    };
    // SAFETY: x and y hold n·c·hw floats, the per-channel buffers c (checked); blocks of
    // row ch touch channel ch only, ch < c; the kernel only reads the running statistics.
    unsafe { launch(exec, K, cfg, &p) }
}

/// The gradient outputs, checked: (gx, gw, gb) device pointers (0 when not wanted).
fn grads<B: Buffer<f32>>(
    kernel: &str,
    total: usize,
    c: usize,
    gx: &Option<&mut B>,
    gw: &Option<&mut B>,
    gb: &Option<&mut B>,
) -> Result<[u64; 3], GpuError> {
    let mut ptrs = [0u64; 3];
    for ((ptr, g), (what, len)) in
        ptrs.iter_mut()
            .zip([gx, gw, gb])
            .zip([("gx", total), ("gw", c), ("gb", c)])
    {
        if let Some(b) = g {
            check_len(kernel, what, *b, len)?;
            *ptr = b.device_ptr();
        }
    }
    Ok(ptrs)
}

#[allow(clippy::too_many_arguments)]
fn backward<M: Memory>(
    exec: &M,
    kernel: &str,
    x_dims: [usize; 4],
    x: &M::Buf<f32>,
    weight: &M::Buf<f32>,
    mean: (&'static str, &M::Buf<f32>),
    stat: (&'static str, &M::Buf<f32>),
    eps: f32,
    fused: Option<Fused<'_, M::Buf<f32>>>,
    gy: &M::Buf<f32>,
    gx: Option<&mut M::Buf<f32>>,
    gw: Option<&mut M::Buf<f32>>,
    gb: Option<&mut M::Buf<f32>>,
) -> Result<(), GpuError> {
    let d = dims(kernel, x_dims, x, [("weight", weight), mean, stat])?;
    check_len(kernel, "gy", gy, x.len())?;
    let (act, slope) = act_code(kernel, fused.map(|f| f.act))?;
    let y = match fused {
        Some(f) => {
            check_len(kernel, "y", f.y, x.len())?;
            f.y.device_ptr()
        }
        None => 0,
    };
    let [gx, gw, gb] = grads(kernel, x.len(), d.c as usize, &gx, &gw, &gb)?;
    if gx == 0 && gw == 0 && gb == 0 {
        return Ok(());
    }
    let p = BatchNormBackwardParams {
        x: x.device_ptr(),
        weight: weight.device_ptr(),
        gy: gy.device_ptr(),
        y,
        mean: mean.1.device_ptr(),
        stat: stat.1.device_ptr(),
        gx,
        gw,
        gb,
        n: d.n,
        c: d.c,
        hw: d.hw,
        eps,
        act,
        slope,
    };
    // SAFETY: x, gy (and gx, y when given) hold n·c·hw floats, weight, mean, stat (and gw, gb
    // when given) c (checked); block ch touches channel ch's elements and element ch only;
    // absent gradients are null pointers, which the kernel never dereferences, and y is read
    // only when an activation is fused (act ≠ −1, which comes with y).
    unsafe { launch(exec, kernel, per_channel(d.c), &p) }
}

/// Training-mode backward (the statistics depend on x), from the `save_mean`/`save_invstd` of
/// [`forward_train`]: gb = Σ gy, gw = Σ gy·x̂, gx = weight·invstd·(gy − mean(gy) −
/// x̂·mean(gy·x̂)), x̂ = (x − mean)·invstd. Each gradient is computed only when given. With
/// `fused` (the activation fused into the forward, and the forward's output y) `gy` is the
/// gradient of y and the kernel forms g = act'(y)·gy itself, exactly as
/// [`super::activation::backward`] would have written it; with `None`, `gy` is the gradient of
/// the normalized output.
#[allow(clippy::too_many_arguments)]
pub fn backward_train<M: Memory>(
    exec: &M,
    x_dims: [usize; 4],
    x: &M::Buf<f32>,
    weight: &M::Buf<f32>,
    save_mean: &M::Buf<f32>,
    save_invstd: &M::Buf<f32>,
    fused: Option<Fused<'_, M::Buf<f32>>>,
    gy: &M::Buf<f32>,
    gx: Option<&mut M::Buf<f32>>,
    gw: Option<&mut M::Buf<f32>>,
    gb: Option<&mut M::Buf<f32>>,
) -> Result<(), GpuError> {
    backward(
        exec,
        "batchnorm_backward_train",
        x_dims,
        x,
        weight,
        ("save_mean", save_mean),
        ("save_invstd", save_invstd),
        0.0,
        fused,
        gy,
        gx,
        gw,
        gb,
    )
}

/// Evaluation-mode backward (the running statistics are constants): gx = gy·weight·invstd,
/// gw = Σ gy·x̂, gb = Σ gy, x̂ = (x − running_mean)·invstd, invstd = 1/sqrt(running_var + eps);
/// `fused` as in [`backward_train`].
#[allow(clippy::too_many_arguments)]
pub fn backward_eval<M: Memory>(
    exec: &M,
    x_dims: [usize; 4],
    x: &M::Buf<f32>,
    weight: &M::Buf<f32>,
    running_mean: &M::Buf<f32>,
    running_var: &M::Buf<f32>,
    eps: f32,
    fused: Option<Fused<'_, M::Buf<f32>>>,
    gy: &M::Buf<f32>,
    gx: Option<&mut M::Buf<f32>>,
    gw: Option<&mut M::Buf<f32>>,
    gb: Option<&mut M::Buf<f32>>,
) -> Result<(), GpuError> {
    backward(
        exec,
        "batchnorm_backward_eval",
        x_dims,
        x,
        weight,
        ("running_mean", running_mean),
        ("running_var", running_var),
        eps,
        fused,
        gy,
        gx,
        gw,
        gb,
    )
}
