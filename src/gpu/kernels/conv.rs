//! Launches of kernels/conv.cu: conv2d and conv_transpose2d forward (bias and ReLU/LeakyReLU
//! fused), backward-data, backward-filter (deterministic split-K) and the bias gradient. The
//! CPU reference is [`crate::ops::conv`].
//!
//! The kernels work on one conv geometry (im = conv input, col = conv output, weight
//! `[c_col, c_im, kh, kw]`); a conv-transpose puts its input on the col side and its output on
//! the im side, so its passes are the conv kernels with the arguments swapped (convT forward =
//! conv backward-data, convT backward-data = conv forward, convT backward-filter = conv
//! backward-filter with the im and col tensors exchanged).
//!
//! [`Precision`] picks the GEMM engine: [`Precision::Fp32`] (the default, kernels/conv.cu:
//! FP32 FMAs) or [`Precision::Tf32`] (kernels/conv_tc.cu: TF32 tensor-core mma.sync, inputs
//! rounded to 10 mantissa bits, f32 accumulation; sm_80+). The `*_with` functions take it;
//! [`forward`], [`backward_data`], [`backward_filter`] and [`workspace_len`] are FP32.

use super::{check_len, count, elements, invalid, launch};
use crate::gpu::{Buffer, GpuError, LaunchConfig, Memory};
use crate::ops::activation::Activation;
use crate::ops::conv::{conv2d_out_size, conv_transpose2d_out_size, Conv2dParams};

#[repr(C)]
#[derive(Clone, Copy)]
struct ConvParams {
    im: u64,
    col: u64,
    wt: u64,
    bias: u64,
    out: u64,
    n: u32,
    c_im: u32,
    ih: u32,
    iw: u32,
    c_col: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    k_chunk: u32,
    act: i32,
    slope: f32,
}
const _: () = assert!(std::mem::size_of::<ConvParams>() == 96);

#[repr(C)]
#[derive(Clone, Copy)]
struct ConvSplitSumParams {
    parts: u64,
    out: u64,
    len: u32,
    splits: u32,
}
const _: () = assert!(std::mem::size_of::<ConvSplitSumParams>() == 24);

#[repr(C)]
#[derive(Clone, Copy)]
struct ConvBiasGradParams {
    gy: u64,
    gb: u64,
    n: u32,
    c: u32,
    hw: u32,
    pad: u32,
}
const _: () = assert!(std::mem::size_of::<ConvBiasGradParams>() == 32);

/// Threads per block of every conv kernel (`CONV_THREADS` in kernels/conv.cu).
const THREADS: u32 = 256;
/// Threads per block of the tensor-core kernels (`TC_THREADS` in kernels/conv_tc.cu).
const TC_THREADS: u32 = 128;
/// The reduction step of the GEMM tiles (`CONV_BK`, `TC_BK`: the same).
const BK: usize = 16;

/// The arithmetic of the conv GEMMs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// FP32 FMAs (kernels/conv.cu): within 2·γ_K·Σ|terms| of the CPU.
    #[default]
    Fp32,
    /// TF32 tensor cores (kernels/conv_tc.cu, sm_80+): A and B rounded to TF32 (cvt.rna, ≤ 2^-11
    /// relative each), exact products, f32 accumulation. See src/gpu/check/conv_tf32.rs for
    /// the error bound.
    Tf32,
    /// Per layer: TF32 where the layer is a large GEMM on both sides (at least
    /// [`AUTO_TF32_MIN_CHANNELS`] input and output channels: compute bound, where tensor cores
    /// pay), FP32 on the thin layers (RGB inputs and outputs, one-channel heads: memory or
    /// launch bound, where TF32 gains nothing and would only add rounding).
    Auto,
}

/// [`Precision::Auto`] runs a layer in TF32 from this many channels on both sides.
pub const AUTO_TF32_MIN_CHANNELS: usize = 16;

impl Precision {
    /// The arithmetic of layer `s` (FP32 or TF32; [`Precision::Auto`] resolved by shape).
    pub fn for_shape(self, s: &ConvShape) -> Precision {
        match self {
            Precision::Auto if s.w_dims[0].min(s.w_dims[1]) >= AUTO_TF32_MIN_CHANNELS => {
                Precision::Tf32
            }
            Precision::Auto => Precision::Fp32,
            p => p,
        }
    }
    /// The kernel name prefix: `conv_` or `conv_tc_` (of a resolved precision).
    fn prefix(self) -> &'static str {
        match self {
            Precision::Fp32 | Precision::Auto => "conv_",
            Precision::Tf32 => "conv_tc_",
        }
    }
    fn threads(self) -> u32 {
        match self {
            Precision::Fp32 | Precision::Auto => THREADS,
            Precision::Tf32 => TC_THREADS,
        }
    }
}
/// Backward-filter splits its reduction until about this many blocks run (a constant, not
/// the device's SM count, so the result's bits do not depend on the device)...
const WGRAD_TARGET_BLOCKS: usize = 256;
/// ...but never into slices shorter than this.
const WGRAD_MIN_SLICE: usize = 256;

/// A conv2d (`transposed = false`) or conv_transpose2d layer's shapes, in PyTorch's terms: x
/// `[N, Cin, H, W]`; weight `[Cout, Cin, kh, kw]` for conv2d, `[Cin, Cout, kh, kw]` for
/// conv_transpose2d; bias `[Cout]`; y `[N, Cout, Ho, Wo]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub x_dims: [usize; 4],
    pub w_dims: [usize; 4],
    pub p: Conv2dParams,
    pub transposed: bool,
}

/// The conv geometry of conv.cu (im = conv input, col = conv output).
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c_im: usize,
    ih: usize,
    iw: usize,
    c_col: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
}

impl Geom {
    fn im_len(&self) -> usize {
        self.n * self.c_im * self.ih * self.iw
    }
    fn col_len(&self) -> usize {
        self.n * self.c_col * self.oh * self.ow
    }
    fn w_len(&self) -> usize {
        self.c_col * self.c_im * self.kh * self.kw
    }
}

impl ConvShape {
    /// The output dims `[N, Cout, Ho, Wo]`.
    pub fn y_dims(&self) -> Result<[usize; 4], GpuError> {
        self.y_dims_for("conv")
    }

    fn y_dims_for(&self, kernel: &str) -> Result<[usize; 4], GpuError> {
        let [n, c_in, h, w] = self.x_dims;
        let [w0, w1, kh, kw] = self.w_dims;
        if self.x_dims[1..].contains(&0) || self.w_dims.contains(&0) {
            return Err(invalid(
                kernel,
                format!(
                    "zero-sized dimension in x {:?} or weight {:?}",
                    self.x_dims, self.w_dims
                ),
            ));
        }
        let (w_cin, c_out) = if self.transposed { (w0, w1) } else { (w1, w0) };
        if c_in != w_cin {
            return Err(invalid(
                kernel,
                format!(
                    "x has {c_in} channels but the weight {:?} expects {w_cin}",
                    self.w_dims
                ),
            ));
        }
        let out = if self.transposed {
            conv_transpose2d_out_size
        } else {
            conv2d_out_size
        };
        let (s, pad) = (self.p.stride, self.p.padding);
        let size = |i, k| out(i, k, s, pad).map_err(|e| invalid(kernel, e.to_string()));
        Ok([n, c_out, size(h, kh)?, size(w, kw)?])
    }

    /// The conv geometry, every count it implies checked to fit the kernels' 32-bit indices.
    fn geom(&self, kernel: &str) -> Result<Geom, GpuError> {
        let y = self.y_dims_for(kernel)?;
        let [n, _, h, w] = self.x_dims;
        let [_, _, kh, kw] = self.w_dims;
        let (im, col) = if self.transposed {
            ([y[1], y[2], y[3]], [self.x_dims[1], h, w])
        } else {
            ([self.x_dims[1], h, w], [y[1], y[2], y[3]])
        };
        let g = Geom {
            n,
            c_im: im[0],
            ih: im[1],
            iw: im[2],
            c_col: col[0],
            oh: col[1],
            ow: col[2],
            kh,
            kw,
            stride: self.p.stride,
            pad: self.p.padding,
        };
        // Every product the kernels form (tensor lengths, GEMM sizes, padded coordinates)
        // stays below 2^31; checked in u128 so the check itself cannot overflow.
        let prod = |d: &[usize]| d.iter().map(|&v| v as u128).product::<u128>();
        let biggest = [
            prod(&[g.n, g.c_im, g.ih, g.iw]),
            prod(&[g.n, g.c_col, g.oh, g.ow]),
            prod(&[g.c_col, g.c_im, g.kh, g.kw]),
            prod(&[g.ih + g.pad + g.kh, g.stride + 1]),
            prod(&[g.iw + g.pad + g.kw, g.stride + 1]),
            prod(&[g.oh + g.ow, g.stride + 1]),
        ];
        if biggest.iter().any(|&v| v >= 1 << 31) {
            return Err(invalid(
                kernel,
                format!("{self:?} is too large for 32-bit indexing"),
            ));
        }
        Ok(g)
    }
}

/// The tile shape for `m` GEMM rows: 16×256 (FP32) or 16×128 (TF32) for narrow outputs,
/// 64×64 otherwise (of a resolved precision: see [`Precision::for_shape`]).
fn tile(m: usize, prec: Precision) -> (usize, usize, &'static str) {
    match (m <= 16, prec) {
        (true, Precision::Fp32 | Precision::Auto) => (16, 256, "16x256"),
        (true, Precision::Tf32) => (16, 128, "16x128"),
        (false, _) => (64, 64, "64x64"),
    }
}

/// The kernel of `pass` ("fwd", "bwd_data", "wgrad") for `m` GEMM rows.
fn kernel_name(pass: &str, m: usize, prec: Precision) -> String {
    format!("{}{pass}_{}", prec.prefix(), tile(m, prec).2)
}

/// The launch grid of a GEMM pass (`z`: wgrad splits or bwd_data stride phases), after
/// checking it fits CUDA's limits.
fn grid(
    kernel: &str,
    m: usize,
    n: usize,
    z: usize,
    prec: Precision,
) -> Result<LaunchConfig, GpuError> {
    let (bm, bn, _) = tile(m, prec);
    let (gx, gy) = (n.div_ceil(bn).max(1), m.div_ceil(bm).max(1));
    if gx >= 1 << 31 || gy > 65535 || z > 65535 {
        return Err(invalid(kernel, format!("grid {gx}×{gy}×{z} too large")));
    }
    Ok(LaunchConfig {
        grid: [gx as u32, gy as u32, z as u32],
        block: [prec.threads(), 1, 1],
        dynamic_smem: 0,
    })
}

fn params(g: &Geom, k_chunk: usize) -> ConvParams {
    ConvParams {
        im: 0,
        col: 0,
        wt: 0,
        bias: 0,
        out: 0,
        n: g.n as u32,
        c_im: g.c_im as u32,
        ih: g.ih as u32,
        iw: g.iw as u32,
        c_col: g.c_col as u32,
        oh: g.oh as u32,
        ow: g.ow as u32,
        kh: g.kh as u32,
        kw: g.kw as u32,
        stride: g.stride as u32,
        pad: g.pad as u32,
        k_chunk: k_chunk.min(u32::MAX as usize) as u32,
        act: -1,
        slope: 0.0,
    }
}

/// The kernel's activation code (GTA_ACT_* in kernels/params.cuh, −1 none) and slope.
fn act_code(kernel: &str, act: Option<Activation>) -> Result<(i32, f32), GpuError> {
    match act {
        None => Ok((-1, 0.0)),
        Some(Activation::Relu) => Ok((0, 0.0)),
        Some(Activation::LeakyRelu { slope }) => Ok((1, slope)),
        Some(a) => Err(invalid(
            kernel,
            format!("{} cannot be fused (only ReLU and LeakyReLU)", a.name()),
        )),
    }
}

/// Which side of the geometry a data pass reads: [`data_pass`]'s two GEMMs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DataPass {
    /// `col = act(W · im2col(im) + bias)`: conv forward, or convT backward-data (bias and act
    /// then None).
    Fwd,
    /// `im = act(col2im(Wᵀ · col) + bias)`: conv backward-data, or convT forward; one grid.z
    /// slice per stride phase, each with at most ⌈ih/s⌉·⌈iw/s⌉ pixels per sample.
    BwdData,
}

/// The `pass` GEMM from `input` (im for Fwd, col for BwdData) into `out` (the other side).
#[allow(clippy::too_many_arguments)]
fn data_pass<M: Memory>(
    exec: &M,
    prec: Precision,
    pass: DataPass,
    g: &Geom,
    input: &M::Buf<f32>,
    w: &M::Buf<f32>,
    bias: Option<&M::Buf<f32>>,
    act: (i32, f32),
    out: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    let st = g.stride;
    let (name, m, n, k, z, in_name, in_len, out_len) = match pass {
        DataPass::Fwd => (
            "fwd",
            g.c_col,
            g.n * g.oh * g.ow,
            g.c_im * g.kh * g.kw,
            1,
            "im",
            g.im_len(),
            g.col_len(),
        ),
        DataPass::BwdData => (
            "bwd_data",
            g.c_im,
            g.n * g.ih.div_ceil(st) * g.iw.div_ceil(st),
            g.c_col * g.kh * g.kw,
            st * st,
            "col",
            g.col_len(),
            g.im_len(),
        ),
    };
    let kernel = kernel_name(name, m, prec);
    let kn = kernel.as_str();
    check_len(kn, in_name, input, in_len)?;
    check_len(kn, "weight", w, g.w_len())?;
    check_len(kn, "out", out, out_len)?;
    if let Some(b) = bias {
        check_len(kn, "bias", b, m)?;
    }
    if g.n == 0 {
        return Ok(());
    }
    let cfg = grid(kn, m, n, z, prec)?;
    let mut p = ConvParams {
        wt: w.device_ptr(),
        bias: bias.map_or(0, |b| b.device_ptr()),
        out: out.device_ptr(),
        act: act.0,
        slope: act.1,
        ..params(g, k)
    };
    match pass {
        DataPass::Fwd => p.im = input.device_ptr(),
        DataPass::BwdData => p.col = input.device_ptr(),
    }
    // SAFETY: input, weight, out (and bias) hold exactly the lengths the geometry implies
    // (checked). Fwd reads im/weight/bias and writes out only at indices of valid (m < c_col,
    // pixel < n·oh·ow, tap inside the image) GEMM entries; BwdData reads col only at taps
    // inside [0, oh)×[0, ow) and writes out at m < c_im and the pixels (< ih, < iw) of its
    // stride phase; all indices < 2^31.
    unsafe { launch(exec, kn, cfg, &p) }
}

/// How backward-filter splits its reduction of length `k` for an `m`×`n` weight GEMM:
/// (splits, slice length). A function of the shapes only.
fn wgrad_split(m: usize, n: usize, k: usize, prec: Precision) -> (usize, usize) {
    let (bm, bn, _) = tile(m, prec);
    let tiles = m.div_ceil(bm) * n.div_ceil(bn);
    let want = WGRAD_TARGET_BLOCKS
        .div_ceil(tiles)
        .min(k.div_ceil(WGRAD_MIN_SLICE))
        .max(1);
    let slice = k.div_ceil(want).div_ceil(BK).max(1) * BK;
    (k.div_ceil(slice).max(1), slice)
}

fn wgrad_dims(g: &Geom) -> (usize, usize, usize) {
    (g.c_col, g.c_im * g.kh * g.kw, g.n * g.oh * g.ow)
}

impl ConvShape {
    fn wgrad_split(&self, prec: Precision) -> Option<(usize, usize)> {
        let g = self.geom("conv_wgrad").ok()?;
        let (m, n, k) = wgrad_dims(&g);
        Some(wgrad_split(m, n, k, prec))
    }
}

/// Floats of workspace [`backward_filter`] needs for `s` (0 when it needs none, or when the
/// shape is invalid: [`backward_filter`] then reports the error).
pub fn workspace_len(s: &ConvShape) -> usize {
    workspace_len_with(s, Precision::Fp32)
}

/// [`workspace_len`] for [`backward_filter_with`] at precision `prec`.
pub fn workspace_len_with(s: &ConvShape, prec: Precision) -> usize {
    match s.wgrad_split(prec.for_shape(s)) {
        Some((splits, _)) if splits > 1 => splits * s.w_dims.iter().product::<usize>(),
        _ => 0,
    }
}

/// Forward: `y = act(conv(x, w) + bias)` (or conv_transpose2d). `act` may be ReLU or
/// LeakyReLU (fused into the store); any other activation is an error.
pub fn forward<M: Memory>(
    exec: &M,
    s: &ConvShape,
    x: &M::Buf<f32>,
    w: &M::Buf<f32>,
    bias: Option<&M::Buf<f32>>,
    act: Option<Activation>,
    y: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    forward_with(exec, Precision::Fp32, s, x, w, bias, act, y)
}

/// [`forward`] at precision `prec`.
#[allow(clippy::too_many_arguments)]
pub fn forward_with<M: Memory>(
    exec: &M,
    prec: Precision,
    s: &ConvShape,
    x: &M::Buf<f32>,
    w: &M::Buf<f32>,
    bias: Option<&M::Buf<f32>>,
    act: Option<Activation>,
    y: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    let g = s.geom("conv_forward")?;
    let prec = prec.for_shape(s);
    let act = act_code("conv_forward", act)?;
    let pass = if s.transposed {
        DataPass::BwdData
    } else {
        DataPass::Fwd
    };
    data_pass(exec, prec, pass, &g, x, w, bias, act, y)
}

/// Backward-data: `gx` from `gy` and `w`.
pub fn backward_data<M: Memory>(
    exec: &M,
    s: &ConvShape,
    gy: &M::Buf<f32>,
    w: &M::Buf<f32>,
    gx: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    backward_data_with(exec, Precision::Fp32, s, gy, w, gx)
}

/// [`backward_data`] at precision `prec`.
pub fn backward_data_with<M: Memory>(
    exec: &M,
    prec: Precision,
    s: &ConvShape,
    gy: &M::Buf<f32>,
    w: &M::Buf<f32>,
    gx: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    let g = s.geom("conv_backward_data")?;
    let prec = prec.for_shape(s);
    let pass = if s.transposed {
        DataPass::Fwd
    } else {
        DataPass::BwdData
    };
    data_pass(exec, prec, pass, &g, gy, w, None, (-1, 0.0), gx)
}

/// Backward-filter: `gw` (the weight's shape) from `x` and `gy`, deterministic. `workspace`
/// must hold at least [`workspace_len`] floats (it may be longer, e.g. a shared scratch
/// buffer; its contents are overwritten).
pub fn backward_filter<M: Memory>(
    exec: &M,
    s: &ConvShape,
    x: &M::Buf<f32>,
    gy: &M::Buf<f32>,
    workspace: &mut M::Buf<f32>,
    gw: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    backward_filter_with(exec, Precision::Fp32, s, x, gy, workspace, gw)
}

/// [`backward_filter`] at precision `prec`; `workspace` must hold at least
/// [`workspace_len_with`]`(s, prec)` floats.
pub fn backward_filter_with<M: Memory>(
    exec: &M,
    prec: Precision,
    s: &ConvShape,
    x: &M::Buf<f32>,
    gy: &M::Buf<f32>,
    workspace: &mut M::Buf<f32>,
    gw: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    let g = s.geom("conv_wgrad")?;
    let prec = prec.for_shape(s);
    let (im, col) = if s.transposed { (gy, x) } else { (x, gy) };
    let (m, n, k) = wgrad_dims(&g);
    let (splits, slice) = wgrad_split(m, n, k, prec);
    let kernel = kernel_name("wgrad", m, prec);
    let kn = kernel.as_str();
    check_len(kn, "im", im, g.im_len())?;
    check_len(kn, "col", col, g.col_len())?;
    check_len(kn, "gw", gw, g.w_len())?;
    let ws = if splits > 1 { splits * g.w_len() } else { 0 };
    if workspace.len() < ws {
        return Err(invalid(
            kn,
            format!("workspace holds {} floats, needs {ws}", workspace.len()),
        ));
    }
    count(kn, ws)?;
    let cfg = grid(kn, m, n, splits, prec)?;
    let out = if splits > 1 {
        workspace.device_ptr()
    } else {
        gw.device_ptr()
    };
    let p = ConvParams {
        im: im.device_ptr(),
        col: col.device_ptr(),
        out,
        ..params(&g, slice)
    };
    // SAFETY: im and col hold the geometry's lengths, gw c_col·c_im·kh·kw floats (checked);
    // the kernel reads taps inside the image only and writes out[(z·m + i)·n + j] for i < m,
    // j < n, z < splits: within gw when splits = 1, else within the workspace (≥ splits·m·n
    // floats, checked).
    unsafe { launch(exec, kn, cfg, &p) }?;
    if splits == 1 {
        return Ok(());
    }
    const KS: &str = "conv_split_sum";
    let len = g.w_len();
    let p = ConvSplitSumParams {
        parts: workspace.device_ptr(),
        out: gw.device_ptr(),
        len: count(KS, len)?,
        splits: splits as u32,
    };
    // SAFETY: the workspace holds ≥ splits·len floats, gw len (checked above); indices
    // s·len + i with s < splits, i < len only.
    unsafe { launch(exec, KS, elements(len), &p) }
}

/// Bias gradient: `gb[c] = Σ gy[n][c][h][w]`, in a fixed order (deterministic).
pub fn backward_bias<M: Memory>(
    exec: &M,
    s: &ConvShape,
    gy: &M::Buf<f32>,
    gb: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "conv_bias_grad";
    let [n, c, h, w] = s.y_dims_for(K)?;
    s.geom(K)?;
    check_len(K, "gy", gy, n * c * h * w)?;
    check_len(K, "gb", gb, c)?;
    let p = ConvBiasGradParams {
        gy: gy.device_ptr(),
        gb: gb.device_ptr(),
        n: count(K, n)?,
        c: count(K, c)?,
        hw: count(K, h * w)?,
        pad: 0,
    };
    // SAFETY: gy holds n·c·h·w floats, gb c (checked); block `ch < c` reads channel ch of
    // every sample and writes gb[ch].
    unsafe { launch(exec, K, LaunchConfig::linear(count(K, c)?, THREADS), &p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(w_dims: [usize; 4], transposed: bool) -> ConvShape {
        ConvShape {
            x_dims: [100, if transposed { w_dims[0] } else { w_dims[1] }, 8, 8],
            w_dims,
            p: Conv2dParams {
                stride: 1,
                padding: 1,
            },
            transposed,
        }
    }

    #[test]
    fn auto_precision_takes_tf32_on_wide_layers_only() {
        let a = Precision::Auto;
        // D.conv2 64→128: TF32. F1.conv1 3→64, G's last convT 64→3, a one-channel head: FP32.
        assert_eq!(a.for_shape(&shape([128, 64, 3, 3], false)), Precision::Tf32);
        assert_eq!(a.for_shape(&shape([64, 3, 5, 5], false)), Precision::Fp32);
        assert_eq!(a.for_shape(&shape([64, 3, 4, 4], true)), Precision::Fp32);
        assert_eq!(a.for_shape(&shape([1, 128, 4, 4], false)), Precision::Fp32);
        assert_eq!(a.for_shape(&shape([16, 16, 3, 3], false)), Precision::Tf32);
        assert_eq!(a.for_shape(&shape([16, 15, 3, 3], false)), Precision::Fp32);
        // Fixed precisions stay.
        for p in [Precision::Fp32, Precision::Tf32] {
            assert_eq!(p.for_shape(&shape([1, 3, 3, 3], false)), p);
        }
    }
}
