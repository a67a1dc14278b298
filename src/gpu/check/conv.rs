//! The "conv" family: every kernel of kernels/conv.cu, through [`conv`]'s launch functions,
//! against [`crate::ops::conv`] on fresh random inputs, outputs poisoned with NaN first.
//!
//! Shapes: each conv layer of the GTA networks (src/models.rs) at batch 2 with widths reduced
//! for emulator speed (ndf = ngf = 8, G's input 27 channels; F2's 3→32 kept), five of them
//! also at full width, plus awkward ones: batch 1 and 3, odd channel counts (3, 5, 7, 67 > one 64-row tile), H/W 7, 9, 13, 23,
//! strides 1 and 2, padding 0 and 1, kernels 2 to 5, and backward-filter reductions split into
//! a ragged number of slices. Each shape runs forward (with and without bias; ReLU, LeakyReLU
//! or no activation fused), backward-data, backward-filter and the bias gradient.
//!
//! Tolerance: the GPU and the CPU compute the same sums in different orders, so each element
//! is bounded rigorously: |got − want| ≤ 2·γ_K·Σ|terms| with γ_K = K·u/(1 − K·u), u = 2^−24,
//! K the reduction length (+1 for a bias): each side is within γ_K·Σ|terms| of the exact
//! value. Σ|terms| per element is the CPU op applied to |x|, |w| (and |bias|, |gy|) in f64.
//! Fused ReLU/LeakyReLU (slope ≤ 1) are 1-Lipschitz, so the same bound holds after them.

use super::{Report, Rng, Tolerance};
use crate::gpu::kernels::conv::{self, ConvShape};
use crate::gpu::{Buffer, GpuError, Memory};
use crate::ops::activation::Activation;
use crate::ops::conv::{
    conv2d_backward, conv2d_forward, conv_transpose2d_backward, conv_transpose2d_forward,
    Conv2dParams,
};
use crate::ops::LayerGrads;

/// One layer: conv2d (weight [Cout, Cin, k, k]) or conv_transpose2d ([Cin, Cout, k, k]).
#[derive(Clone, Copy)]
pub(super) struct Case {
    pub(super) shape: ConvShape,
    pub(super) bias: bool,
    pub(super) act: Option<Activation>,
}

fn case(transposed: bool, x: [usize; 4], c_out: usize, k: usize, s: usize, p: usize) -> Case {
    let w_dims = if transposed {
        [x[1], c_out, k, k]
    } else {
        [c_out, x[1], k, k]
    };
    Case {
        shape: ConvShape {
            x_dims: x,
            w_dims,
            p: Conv2dParams {
                stride: s,
                padding: p,
            },
            transposed,
        },
        bias: false,
        act: None,
    }
}

fn conv(x: [usize; 4], c_out: usize, k: usize, s: usize, p: usize) -> Case {
    case(false, x, c_out, k, s, p)
}

fn convt(x: [usize; 4], c_out: usize, k: usize, s: usize, p: usize) -> Case {
    case(true, x, c_out, k, s, p)
}

impl Case {
    fn bias(self) -> Case {
        Case { bias: true, ..self }
    }
    fn act(self, act: Activation) -> Case {
        Case {
            act: Some(act),
            ..self
        }
    }
}

const RELU: Activation = Activation::Relu;
const LRELU: Activation = Activation::LeakyRelu { slope: 0.2 };

pub(super) fn cases() -> Vec<Case> {
    vec![
        // F1 (ndf 8): conv k5 3→8→8→16, ReLU (biases).
        conv([2, 3, 32, 32], 8, 5, 1, 0).bias().act(RELU),
        conv([2, 8, 14, 14], 8, 5, 1, 0).bias().act(RELU),
        conv([2, 8, 5, 5], 16, 5, 1, 0).bias().act(RELU),
        // F2: conv k5 3→32, then 32→48 reduced to 12→16.
        conv([2, 3, 32, 32], 32, 5, 1, 0).bias().act(RELU),
        conv([2, 12, 14, 14], 16, 5, 1, 0).bias(),
        // G (ngf 8, input 27 channels): convT k2 1→2, then k4 s2 p1 down to 3 channels.
        convt([2, 27, 1, 1], 64, 2, 1, 0),
        convt([2, 64, 2, 2], 32, 4, 2, 1).act(RELU),
        convt([2, 32, 4, 4], 16, 4, 2, 1),
        convt([2, 16, 8, 8], 8, 4, 2, 1).act(RELU),
        convt([2, 8, 16, 16], 3, 4, 2, 1),
        // G4: convT k4 s1 p0 1→4.
        convt([2, 27, 1, 1], 64, 4, 1, 0).act(RELU),
        // D (ndf 8): conv k3 p1 3→8→16→32→16 (biases, LeakyReLU after BN: not fused here).
        conv([2, 3, 32, 32], 8, 3, 1, 1).bias(),
        conv([2, 8, 16, 16], 16, 3, 1, 1).bias().act(LRELU),
        conv([2, 16, 8, 8], 32, 3, 1, 1).bias(),
        conv([2, 32, 4, 4], 16, 3, 1, 1).bias(),
        // D_src / D_tgt (ndf 8): conv k4 s2 p1 3→8→16→32, then k4 s1 p0 32→11 and 32→1.
        conv([2, 3, 32, 32], 8, 4, 2, 1).act(LRELU),
        conv([2, 8, 16, 16], 16, 4, 2, 1),
        conv([2, 16, 8, 8], 32, 4, 2, 1),
        conv([2, 32, 4, 4], 11, 4, 1, 0),
        conv([2, 32, 4, 4], 1, 4, 1, 0),
        // Awkward: batch 1 and 3, odd channels and sizes, stride 2 with and without padding.
        conv([1, 5, 7, 7], 7, 3, 2, 1).bias().act(LRELU),
        conv([3, 7, 9, 9], 5, 2, 2, 0).bias(),
        conv([3, 3, 13, 13], 5, 5, 2, 1).act(RELU),
        conv([1, 9, 9, 9], 67, 3, 1, 1).bias(),
        conv([3, 5, 23, 23], 3, 3, 1, 1).bias(),
        convt([3, 5, 7, 7], 7, 3, 2, 1).bias().act(RELU),
        convt([1, 7, 9, 9], 3, 5, 1, 1).bias(),
        convt([3, 3, 7, 7], 5, 2, 2, 0).bias().act(LRELU),
        convt([1, 3, 13, 13], 5, 3, 2, 0),
        convt([1, 67, 3, 3], 9, 4, 2, 1).bias(),
        // Full widths, batch 2: F1's conv k5 64→64, D's conv k3 64→128, G's convT k2 651→512
        // and k4 s2 p1 512→256, D_src's head 256→11 (long reductions, several 64-row tiles).
        convt([2, 651, 1, 1], 512, 2, 1, 0),
        conv([2, 64, 14, 14], 64, 5, 1, 0).bias().act(RELU),
        conv([2, 64, 16, 16], 128, 3, 1, 1).bias(),
        convt([2, 512, 2, 2], 256, 4, 2, 1),
        conv([2, 256, 4, 4], 11, 4, 1, 0),
    ]
}

pub(super) fn label(c: &Case) -> String {
    let s = &c.shape;
    format!(
        "x{:?} w{:?} s{}p{}",
        s.x_dims, s.w_dims, s.p.stride, s.p.padding
    )
    .replace(' ', "")
}

fn oracle_forward<T: crate::float::Float>(
    s: &ConvShape,
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
) -> crate::error::Result<Vec<T>> {
    let f = if s.transposed {
        conv_transpose2d_forward::<T>
    } else {
        conv2d_forward::<T>
    };
    f(x, s.x_dims, w, s.w_dims, b, s.p).map(|(y, _)| y)
}

fn oracle_backward<T: crate::float::Float>(
    s: &ConvShape,
    x: &[T],
    w: &[T],
    gy: &[T],
) -> crate::error::Result<LayerGrads<T>> {
    let f = if s.transposed {
        conv_transpose2d_backward::<T>
    } else {
        conv2d_backward::<T>
    };
    f(x, s.x_dims, w, s.w_dims, true, gy, s.p, [true; 3])
}

fn abs64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| (x as f64).abs()).collect()
}

/// What the CPU says for one case: results and the Σ|terms| of each element.
pub(super) struct Oracle {
    pub(super) y: Vec<f32>,
    pub(super) y_abs: Vec<f64>,
    pub(super) grads: LayerGrads<f32>,
    pub(super) grads_abs: LayerGrads<f64>,
}

pub(super) fn oracle(
    c: &Case,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    gy: &[f32],
) -> crate::error::Result<Oracle> {
    let s = &c.shape;
    let bias = c.bias.then_some(b);
    let y_lin = oracle_forward(s, x, w, bias)?;
    let y = match c.act {
        Some(a) => a.forward(&y_lin),
        None => y_lin,
    };
    let (xa, wa, ba, gya) = (abs64(x), abs64(w), abs64(b), abs64(gy));
    let y_abs = oracle_forward(s, &xa, &wa, c.bias.then_some(&ba[..]))?;
    Ok(Oracle {
        y,
        y_abs,
        grads: oracle_backward(s, x, w, gy)?,
        grads_abs: oracle_backward(s, &xa, &wa, &gya)?,
    })
}

pub(super) fn nan<M: Memory>(exec: &M, n: usize) -> Result<M::Buf<f32>, GpuError> {
    exec.filled(n, f32::NAN)
}

/// "conv2d" or "conv_transpose2d", the start of every check name of a case.
pub(super) fn op_name(s: &ConvShape) -> &'static str {
    if s.transposed {
        "conv_transpose2d"
    } else {
        "conv2d"
    }
}

/// A case's output dims and random inputs in [−1, 1].
pub(super) struct Inputs {
    pub y_dims: [usize; 4],
    pub x: Vec<f32>,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub gy: Vec<f32>,
}

/// Draws x, w, b, gy (in that order) for `s`; the error is the shape's.
pub(super) fn inputs(s: &ConvShape, rng: &mut Rng) -> Result<Inputs, String> {
    let y_dims = s.y_dims().map_err(|e| e.to_string())?;
    let len = |d: [usize; 4]| d.iter().product::<usize>();
    Ok(Inputs {
        y_dims,
        x: rng.vec(len(s.x_dims), -1.0, 1.0),
        w: rng.vec(len(s.w_dims), -1.0, 1.0),
        b: rng.vec(y_dims[1], -1.0, 1.0),
        gy: rng.vec(len(y_dims), -1.0, 1.0),
    })
}

/// The Lipschitz constant of the fused activation (LeakyReLU: max(|slope|, 1)).
pub(super) fn lipschitz(act: Option<Activation>) -> f64 {
    match act {
        Some(Activation::LeakyRelu { slope }) => slope.abs().max(1.0) as f64,
        _ => 1.0,
    }
}

/// Whether a and b hold the same bits.
pub(super) fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

pub fn conv_kernels<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
    for c in cases() {
        let s = c.shape;
        let size = label(&c);
        let op = op_name(&s);
        let k_fwd = format!("{op} forward");
        let Inputs {
            y_dims,
            x,
            w,
            b,
            gy,
        } = match inputs(&s, &mut rng) {
            Ok(i) => i,
            Err(e) => {
                r.fail(&k_fwd, &size, Tolerance::Exact, e);
                continue;
            }
        };
        let len = |d: [usize; 4]| d.iter().product::<usize>();
        let [n, c_in, h, w_] = s.x_dims;
        let [_, c_out, ho, wo] = y_dims;
        let (kh, kw) = (s.w_dims[2], s.w_dims[3]);
        let want = match oracle(&c, &x, &w, &b, &gy) {
            Ok(o) => o,
            Err(e) => {
                r.fail(&k_fwd, &size, Tolerance::Exact, format!("CPU oracle: {e}"));
                continue;
            }
        };
        let (xd, wd, bd, gyd) = (
            exec.upload(&x)?,
            exec.upload(&w)?,
            exec.upload(&b)?,
            exec.upload(&gy)?,
        );

        // Reduction lengths: forward sums Cin·kh·kw products (+ the bias), backward-data
        // Cout·kh·kw, backward-filter one per pixel of the conv-output side, the bias gradient
        // one per output pixel.
        let k = c_in * kh * kw + c.bias as usize;
        let lip = lipschitz(c.act);
        let mut yd = nan(exec, len(y_dims))?;
        let bias = c.bias.then_some(&bd);
        let res = conv::forward(exec, &s, &xd, &wd, bias, c.act, &mut yd);
        let tol = Tolerance::Gamma(k);
        if r.launched(&k_fwd, &size, tol, res) {
            r.gamma(&k_fwd, &size, &yd.read()?, &want.y, &want.y_abs, k, lip);
        }

        let kn = format!("{op} backward_data");
        let k = c_out * kh * kw;
        let mut gxd = nan(exec, len(s.x_dims))?;
        let res = conv::backward_data(exec, &s, &gyd, &wd, &mut gxd);
        let (got, want_dx, abs_dx) = (&gxd, &want.grads.dx, &want.grads_abs.dx);
        if r.launched(&kn, &size, Tolerance::Gamma(k), res) {
            let (wv, av) = (want_dx.as_deref(), abs_dx.as_deref());
            r.gamma(&kn, &size, &got.read()?, or_empty(wv), or_empty(av), k, 1.0);
        }

        let kn = format!("{op} backward_filter");
        let k = n * if s.transposed { h * w_ } else { ho * wo };
        let mut ws = nan(exec, conv::workspace_len(&s))?;
        let mut gwd = nan(exec, len(s.w_dims))?;
        let res = conv::backward_filter(exec, &s, &xd, &gyd, &mut ws, &mut gwd);
        if r.launched(&kn, &size, Tolerance::Gamma(k), res) {
            let got = gwd.read()?;
            let (wv, av) = (want.grads.dw.as_deref(), want.grads_abs.dw.as_deref());
            r.gamma(&kn, &size, &got, or_empty(wv), or_empty(av), k, 1.0);
            // Deterministic: a second run gives the same bits.
            let mut again = nan(exec, len(s.w_dims))?;
            let res = conv::backward_filter(exec, &s, &xd, &gyd, &mut ws, &mut again);
            let kd = format!("{op} backward_filter: same bits twice");
            if r.launched(&kd, &size, Tolerance::Exact, res) {
                let same = same_bits(&again.read()?, &got);
                r.holds(&kd, &size, same, || "the bits changed".into());
            }
        }

        let kn = format!("{op} backward_bias");
        let k = n * ho * wo;
        let mut gbd = nan(exec, c_out)?;
        let res = conv::backward_bias(exec, &s, &gyd, &mut gbd);
        if r.launched(&kn, &size, Tolerance::Gamma(k), res) {
            let (wv, av) = (want.grads.db.as_deref(), want.grads_abs.db.as_deref());
            r.gamma(&kn, &size, &gbd.read()?, or_empty(wv), or_empty(av), k, 1.0);
        }
    }
    misuse(exec, r)
}

pub(super) fn or_empty<T>(v: Option<&[T]>) -> &[T] {
    v.unwrap_or(&[])
}

/// Bad shapes, lengths and activations are errors, never launches.
fn misuse<M: Memory>(exec: &M, r: &mut Report) -> Result<(), GpuError> {
    let s = conv([1, 3, 5, 5], 4, 3, 1, 0).shape; // y [1, 4, 3, 3]
    let x = exec.upload(&[0.5f32; 75])?;
    let w = exec.upload(&[0.5f32; 108])?;
    let mut y = nan(exec, 36)?;
    let mut short = nan(exec, 35)?;
    let k = "conv misuse is an error";
    let mut check = |what: &str, res: Result<(), GpuError>| {
        r.holds(k, what, res.is_err(), || format!("{what}: accepted"));
    };
    check(
        "tanh fused",
        conv::forward(exec, &s, &x, &w, None, Some(Activation::Tanh), &mut y),
    );
    check(
        "y too short",
        conv::forward(exec, &s, &x, &w, None, None, &mut short),
    );
    let big = conv([1, 3, 5, 5], 4, 7, 1, 0).shape; // kernel larger than the input
    check(
        "kernel > input",
        conv::forward(exec, &big, &x, &w, None, None, &mut y),
    );
    let bad_w = ConvShape {
        w_dims: [4, 2, 3, 3],
        ..s
    };
    check(
        "channel mismatch",
        conv::backward_data(exec, &bad_w, &y, &w, &mut short),
    );
    // An empty batch: forward writes nothing, the gradients are zeros.
    let empty = conv([0, 3, 5, 5], 4, 3, 1, 0).shape;
    let none = exec.upload(&[0.0f32; 0])?;
    let mut y0 = nan(exec, 0)?;
    let ok = conv::forward(exec, &empty, &none, &w, None, None, &mut y0).is_ok();
    let mut gw0 = nan(exec, 108)?;
    let mut gb0 = nan(exec, 4)?;
    let mut ws0 = nan(exec, conv::workspace_len(&empty))?;
    let zeros = conv::backward_filter(exec, &empty, &none, &none, &mut ws0, &mut gw0).is_ok()
        && conv::backward_bias(exec, &empty, &none, &mut gb0).is_ok()
        && gw0.read()?.iter().chain(&gb0.read()?).all(|&v| v == 0.0);
    let kb = "conv batch 0";
    r.holds(kb, "x[0,3,5,5]", ok && zeros, || {
        "not Ok or not zeros".into()
    });
    // A shape whose weight gradient is split, given too small a workspace.
    let split = conv([3, 5, 23, 23], 3, 3, 1, 1).shape;
    let need = conv::workspace_len(&split);
    let xs = exec.upload(&vec![0.5f32; 3 * 5 * 23 * 23])?;
    let gys = exec.upload(&vec![0.5f32; 3 * 3 * 23 * 23])?;
    let mut ws = nan(exec, need.saturating_sub(1))?;
    let mut gw = nan(exec, 3 * 5 * 9)?;
    let res = conv::backward_filter(exec, &split, &xs, &gys, &mut ws, &mut gw);
    r.holds(k, "workspace too small", need > 0 && res.is_err(), || {
        format!("workspace {need}: accepted")
    });
    Ok(())
}
