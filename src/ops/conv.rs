//! 2-D convolution and transposed convolution, forward and backward (PyTorch semantics: NCHW,
//! one stride and one padding for both axes, no dilation, no groups, no output_padding).
//! (GPU counterpart: kernels/conv.cu.)
//!
//! Method: im2col + GEMM. Per sample, im2col unfolds the image into columns
//! `[Cin·kh·kw, Ho·Wo]`, so that the convolution is one matrix product with the weight read as
//! `[Cout, Cin·kh·kw]`; col2im is the adjoint of im2col (it scatter-adds columns back into an
//! image).
//!
//! Every pass is one of three batched kernels over a `Geom`, which names the two sides of a
//! convolution: the *image* side (large spatial size, conv input) and the *column* side
//! (conv output). The weight is the matrix `W = [c_col, c_im·kh·kw]` in both PyTorch layouts
//! (`[Cout, Cin, kh, kw]` for conv, `[Cin, Cout, kh, kw]` for convT), so a transposed
//! convolution is the same geometry with input and output swapped:
//!
//! | kernel                                | conv2d        | conv_transpose2d |
//! |---------------------------------------|---------------|------------------|
//! | `im_to_col`: `W · im2col(im)`         | forward       | backward-data    |
//! | `col_to_im`: `col2im(Wᵀ · col)`       | backward-data | forward          |
//! | `weight_grad`: `Σ col · im2col(im)ᵀ`  | dW (im = x)   | dW (im = gy)     |

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::ops::activation::{check_fusable, Activation, WithActivation};
use crate::ops::LayerGrads;
use crate::tape::{BackwardOp, Tape, Var};
use rayon::prelude::*;

/// Stride and zero-padding of a convolution, the same along both spatial axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: usize,
    pub padding: usize,
}

fn check_kernel_stride(op: &'static str, input: usize, kernel: usize, stride: usize) -> Result<()> {
    if stride == 0 {
        return Err(Error::invalid(op, "stride must be positive"));
    }
    if kernel == 0 {
        return Err(Error::invalid(op, "kernel size must be positive"));
    }
    if input == 0 {
        return Err(Error::shape(op, "input spatial size is 0"));
    }
    Ok(())
}

fn overflow(op: &'static str) -> Error {
    Error::invalid(op, "size computation overflows")
}

/// Output size of a conv along one axis; error if stride 0 or the kernel does not fit.
pub fn conv2d_out_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<usize> {
    let op = "conv2d";
    check_kernel_stride(op, input, kernel, stride)?;
    let padded = padding
        .checked_mul(2)
        .and_then(|p2| p2.checked_add(input))
        .ok_or_else(|| overflow(op))?;
    if kernel > padded {
        return Err(Error::shape(
            op,
            format!(
                "kernel {kernel} is larger than the padded input {padded} \
                 (input {input} + 2·padding {padding})"
            ),
        ));
    }
    Ok((padded - kernel) / stride + 1)
}

/// conv-transpose output size: (input-1)*stride - 2*padding + kernel; error if not positive.
pub fn conv_transpose2d_out_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<usize> {
    let op = "conv_transpose2d";
    check_kernel_stride(op, input, kernel, stride)?;
    let full = (input - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(kernel))
        .ok_or_else(|| overflow(op))?;
    let crop = padding.checked_mul(2).ok_or_else(|| overflow(op))?;
    if full <= crop {
        return Err(Error::shape(
            op,
            format!(
                "output size (input {input} − 1)·stride {stride} + kernel {kernel} \
                 − 2·padding {padding} is not positive"
            ),
        ));
    }
    Ok(full - crop)
}

// How the batch is cut into work. All of it depends on the shapes only, never on the thread
// count, so no result changes with the number of threads (for the weight gradient this is what
// makes it deterministic, see `weight_grad`).

/// At most this many chunks (parallel tasks over the batch): enough for the few cores a CPU
/// run gets, and a bound on the memory of the per-chunk partial weight gradients.
const MAX_CHUNKS: usize = 8;
/// GEMM width aimed at: within a chunk, samples are multiplied together until their pixels
/// reach this many columns, so layers with tiny images (1×1 … 4×4, most of the generator) get
/// matrix products instead of matrix-vector products.
const TARGET_COLS: usize = 256;
/// Fewest GEMM columns per chunk for forward and backward-data: smaller chunks would leave
/// GEMMs too thin to be efficient.
const MIN_CHUNK_COLS: usize = 64;
/// Fewest GEMM columns per chunk for the weight gradient: each chunk costs a dW-sized partial
/// (allocate, fill, sum), which must stay small next to its 2·c_col·K·cols FLOPs. Layers with
/// tiny images therefore get one or two chunks, and are parallelised over dW's rows instead.
const MIN_WGRAD_COLS: usize = 512;
/// Fewest rows of dW per parallel row block.
const MIN_BLOCK_ROWS: usize = 64;

/// A convolution seen from its two sides (see the module doc): `im` is `[n, c_im, h, w]`,
/// `col` is `[n, c_col, ho, wo]`, the weight is `[c_col, c_im·kh·kw]`.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c_im: usize,
    h: usize,
    w: usize,
    c_col: usize,
    ho: usize,
    wo: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
}

/// Length of the pieces when `total` (> 0) is cut into pieces of at most `max_len`, evened out
/// (100 by 64 gives 50 + 50, not 64 + 36).
fn balanced(total: usize, max_len: usize) -> usize {
    total.div_ceil(total.div_ceil(max_len.clamp(1, total)))
}

/// The entries of one column-matrix row that read the image: `rows` runs of `len` entries;
/// run `j` covers column entries `col + j·col_step ..` (consecutive) and reads the image
/// elements `im + j·im_step`, every `stride`-th.
#[derive(Clone, Copy)]
struct Run {
    col: usize,
    im: usize,
    len: usize,
    rows: usize,
    col_step: usize,
    im_step: usize,
}

impl Run {
    /// (column, image) start of each run.
    fn starts(self) -> impl Iterator<Item = (usize, usize)> {
        (0..self.rows).map(move |j| (self.col + j * self.col_step, self.im + j * self.im_step))
    }
}

/// Output positions `o < out` whose input index `o·stride + k − pad` lies in `0..size`, as a
/// range `lo..hi` (empty when `lo >= hi`).
fn valid_range(out: usize, size: usize, k: usize, stride: usize, pad: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(k).div_ceil(stride);
    // Largest o with o·stride + k − pad ≤ size − 1.
    let hi = (size + pad)
        .checked_sub(k + 1)
        .map_or(0, |m| m / stride + 1);
    (lo.min(out), hi.min(out))
}

impl Geom {
    /// Rows of the column matrix: c_im·kh·kw.
    fn rows(&self) -> usize {
        self.c_im * self.kh * self.kw
    }
    /// Pixels per channel on the column side: ho·wo.
    fn pix(&self) -> usize {
        self.ho * self.wo
    }
    fn im_len(&self) -> usize {
        self.c_im * self.h * self.w
    }
    fn col_len(&self) -> usize {
        self.c_col * self.pix()
    }
    /// Samples per parallel chunk (n > 0): at most [`MAX_CHUNKS`] chunks, each with at least
    /// `min_cols` GEMM columns where the batch allows, all of about the same length.
    fn chunk_len(&self, min_cols: usize) -> usize {
        let len = self
            .n
            .div_ceil(MAX_CHUNKS)
            .max(min_cols.div_ceil(self.pix()));
        balanced(self.n, len)
    }
    /// Samples per GEMM within a chunk of `chunk` samples.
    fn group_len(&self, chunk: usize) -> usize {
        balanced(chunk, TARGET_COLS.div_ceil(self.pix()))
    }

    /// Walks the im2col correspondence of one sample whose columns start at `base` in a column
    /// matrix with row length `ld`: one [`Run`] per row `r` = (channel, ki, kj) of the column
    /// matrix. Entries that read the zero padding are not visited.
    fn walk(&self, ld: usize, base: usize, mut f: impl FnMut(Run)) {
        let (s, pad) = (self.stride, self.pad);
        let ranges = |out, size, k| -> Vec<(usize, usize)> {
            (0..k).map(|i| valid_range(out, size, i, s, pad)).collect()
        };
        let (yr, xr) = (
            ranges(self.ho, self.h, self.kh),
            ranges(self.wo, self.w, self.kw),
        );
        for c in 0..self.c_im {
            for (ki, &(ylo, yhi)) in yr.iter().enumerate() {
                for (kj, &(xlo, xhi)) in xr.iter().enumerate() {
                    if xlo >= xhi || ylo >= yhi {
                        continue;
                    }
                    let r = (c * self.kh + ki) * self.kw + kj;
                    let (iy, ix) = (ylo * s + ki - pad, xlo * s + kj - pad);
                    f(Run {
                        col: base + r * ld + ylo * self.wo + xlo,
                        im: (c * self.h + iy) * self.w + ix,
                        len: xhi - xlo,
                        rows: yhi - ylo,
                        col_step: self.wo,
                        im_step: s * self.w,
                    });
                }
            }
        }
    }

    /// im2col of the consecutive samples in `im` into `cols` = `[rows, b·pix]`, sample `s`
    /// in columns `s·pix..(s+1)·pix`.
    fn im2col<T: Float>(&self, im: &[T], cols: &mut [T]) {
        let (p, st) = (self.pix(), self.stride);
        let ld = im.len() / self.im_len() * p;
        if self.pad > 0 {
            // The entries that read the padding; without padding every entry is a run entry.
            cols.fill(T::ZERO);
        }
        for (s, im) in im.chunks_exact(self.im_len()).enumerate() {
            self.walk(ld, s * p, |run| {
                for (c, i) in run.starts() {
                    let dst = &mut cols[c..c + run.len];
                    // memcpy only pays for long runs (tiny images make runs of 1 … 4 entries).
                    if st == 1 && run.len >= 16 {
                        dst.copy_from_slice(&im[i..i + run.len]);
                    } else {
                        for (t, d) in dst.iter_mut().enumerate() {
                            *d = im[i + t * st];
                        }
                    }
                }
            });
        }
    }

    /// col2im, the adjoint of [`Geom::im2col`]: scatter-adds `cols` into the images in `im`.
    fn col2im<T: Float>(&self, cols: &[T], im: &mut [T]) {
        let (p, st) = (self.pix(), self.stride);
        let ld = im.len() / self.im_len() * p;
        for (s, im) in im.chunks_exact_mut(self.im_len()).enumerate() {
            self.walk(ld, s * p, |run| {
                for (c, i) in run.starts() {
                    let src = &cols[c..c + run.len];
                    if st == 1 {
                        let dst = &mut im[i..i + run.len];
                        dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
                    } else {
                        for (t, &v) in src.iter().enumerate() {
                            im[i + t * st] += v;
                        }
                    }
                }
            });
        }
    }

    /// Per-chunk scratch: the column matrix of a group of `group` samples and its column-side
    /// block in channel-major order `[c_col, group·pix]`.
    fn scratch<T: Float>(&self, group: usize) -> (Vec<T>, Vec<T>) {
        let cols = group * self.pix();
        (
            vec![T::ZERO; self.rows() * cols],
            vec![T::ZERO; self.c_col * cols],
        )
    }
}

/// Reorders `[outer, inner, p]` into `[inner, outer, p]` (moves a group of samples between
/// the NCHW layout and the channel-major layout a GEMM over several samples needs).
fn transpose_blocks<T: Copy>(src: &[T], dst: &mut [T], outer: usize, inner: usize, p: usize) {
    for (o, block) in src.chunks_exact(inner * p).take(outer).enumerate() {
        for (i, row) in block.chunks_exact(p).enumerate() {
            dst[(i * outer + o) * p..][..p].copy_from_slice(row);
        }
    }
}

/// Runs a batched pass: `f(out, inp, b, cols, cm)` on every group of `b` samples, where `out`
/// and `inp` hold the group's samples (`out_len` and `in_len` elements each) and `cols`, `cm`
/// are scratch sized `[rows, b·pix]` and `[c_col, b·pix]`. Chunks run in parallel, the groups
/// of a chunk in order.
fn batched<T: Float>(
    g: &Geom,
    (out, out_len): (&mut [T], usize),
    (inp, in_len): (&[T], usize),
    f: impl Fn(&mut [T], &[T], usize, &mut [T], &mut [T]) + Sync,
) {
    if g.n == 0 {
        return;
    }
    let (k, p, c_col) = (g.rows(), g.pix(), g.c_col);
    let chunk = g.chunk_len(MIN_CHUNK_COLS);
    let group = g.group_len(chunk);
    out.par_chunks_mut(chunk * out_len)
        .zip(inp.par_chunks(chunk * in_len))
        .for_each(|(out, inp)| {
            let (mut cols, mut cm) = g.scratch(group);
            let groups = out
                .chunks_mut(group * out_len)
                .zip(inp.chunks(group * in_len));
            for (out, inp) in groups {
                let b = inp.len() / in_len;
                f(
                    out,
                    inp,
                    b,
                    &mut cols[..k * b * p],
                    &mut cm[..c_col * b * p],
                );
            }
        });
}

/// Conv forward, batched: `col[n] = W · im2col(im[n])`, plus `bias` per column-side channel.
fn im_to_col<T: Float>(g: &Geom, w: &[T], bias: Option<&[T]>, im: &[T]) -> Vec<T> {
    let (k, p, c_col) = (g.rows(), g.pix(), g.c_col);
    let mut out = vec![T::ZERO; g.n * g.col_len()];
    let pass = |out: &mut [T], im: &[T], b: usize, cols: &mut [T], cm: &mut [T]| {
        g.im2col(im, cols);
        // The bias enters as the initial value of the accumulating GEMM.
        let beta = match bias {
            Some(bias) => {
                for (row, &v) in cm.chunks_exact_mut(b * p).zip(bias) {
                    row.fill(v);
                }
                T::ONE
            }
            None => T::ZERO,
        };
        T::gemm(c_col, k, b * p, T::ONE, w, false, cols, false, beta, cm);
        transpose_blocks(cm, out, c_col, b, p);
    };
    batched(g, (&mut out, g.col_len()), (im, g.im_len()), pass);
    out
}

/// Conv backward-data, batched: `im[n] = col2im(Wᵀ · col[n])`, plus `bias` per image-side
/// channel.
fn col_to_im<T: Float>(g: &Geom, w: &[T], bias: Option<&[T]>, col: &[T]) -> Vec<T> {
    let (k, p, c_col, hw) = (g.rows(), g.pix(), g.c_col, g.h * g.w);
    let mut out = vec![T::ZERO; g.n * g.im_len()];
    let pass = |out: &mut [T], col: &[T], b: usize, cols: &mut [T], cm: &mut [T]| {
        transpose_blocks(col, cm, b, c_col, p);
        T::gemm(k, c_col, b * p, T::ONE, w, true, cm, false, T::ZERO, cols);
        if let Some(bias) = bias {
            for (plane, &v) in out.chunks_exact_mut(hw).zip(bias.iter().cycle()) {
                plane.fill(v);
            }
        }
        g.col2im(cols, out);
    };
    batched(g, (&mut out, g.im_len()), (col, g.col_len()), pass);
    out
}

/// Weight gradient `dW = Σ_n col[n] · im2col(im[n])ᵀ`, shape `[c_col, c_im·kh·kw]`.
///
/// Deterministic whatever the number of threads: floating-point addition is not associative,
/// so a reduction whose order followed the thread schedule would change the last bits of dW
/// from run to run. Instead the batch is cut into chunks whose length depends on the shapes
/// only; each chunk accumulates its own partial dW in sample order (GEMM with beta = 1), and the
/// partials are summed in chunk order. When there are few chunks, each chunk's GEMMs are also
/// split over fixed blocks of dW rows, which changes no sum.
fn weight_grad<T: Float>(g: &Geom, im: &[T], col: &[T]) -> Vec<T> {
    let (k, p, c_col) = (g.rows(), g.pix(), g.c_col);
    let w_len = c_col * k;
    if g.n == 0 {
        return vec![T::ZERO; w_len];
    }
    let chunk = g.chunk_len(MIN_WGRAD_COLS);
    let group = g.group_len(chunk);
    let chunks = g.n.div_ceil(chunk);
    let blocks = MAX_CHUNKS
        .div_ceil(chunks)
        .min(c_col / MIN_BLOCK_ROWS)
        .max(1);
    let block_rows = c_col.div_ceil(blocks);
    let mut partials = vec![T::ZERO; chunks * w_len];
    partials
        .par_chunks_mut(w_len)
        .zip(im.par_chunks(chunk * g.im_len()))
        .zip(col.par_chunks(chunk * g.col_len()))
        .for_each(|((dw, im), col)| {
            let (mut cols, mut cm) = g.scratch(group);
            let groups = im
                .chunks(group * g.im_len())
                .zip(col.chunks(group * g.col_len()));
            for (i, (im, col)) in groups.enumerate() {
                let b = col.len() / g.col_len();
                let (cols, cm) = (&mut cols[..k * b * p], &mut cm[..c_col * b * p]);
                g.im2col(im, cols);
                transpose_blocks(col, cm, b, c_col, p);
                let beta = if i == 0 { T::ZERO } else { T::ONE };
                let cols = &*cols;
                dw.par_chunks_mut(block_rows * k)
                    .zip(cm.par_chunks(block_rows * b * p))
                    .for_each(|(dw, cm)| {
                        let rows = dw.len() / k;
                        T::gemm(rows, b * p, k, T::ONE, cm, false, cols, true, beta, dw);
                    });
            }
        });
    sum_in_order(partials, w_len)
}

/// Sums the consecutive `len`-long parts of `parts` elementwise, each element in part order
/// (so the parallel split of this loop does not change the result).
fn sum_in_order<T: Float>(mut parts: Vec<T>, len: usize) -> Vec<T> {
    const BLOCK: usize = 1 << 14;
    let (total, rest) = parts.split_at_mut(len);
    if !rest.is_empty() {
        total
            .par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(i, block)| {
                for part in rest.chunks_exact(len) {
                    for (t, &v) in block.iter_mut().zip(&part[i * BLOCK..]) {
                        *t += v;
                    }
                }
            });
    }
    parts.truncate(len);
    parts
}

/// Per-channel sums of `[n, c, p]` data over the batch and the pixels (the bias gradient); each
/// channel is summed sequentially in a fixed order, so the result is deterministic.
fn channel_sums<T: Float>(data: &[T], n: usize, c: usize, p: usize) -> Vec<T> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            (0..n)
                .map(|s| data[(s * c + ch) * p..][..p].iter().copied().sum::<T>())
                .fold(T::ZERO, |a, v| a + v)
        })
        .collect()
}

/// Element count of `dims`, or an error naming `what` on overflow.
fn numel(op: &'static str, what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::invalid(op, format!("{what} {dims:?} has too many elements")))
}

fn check_len(op: &'static str, what: &str, len: usize, dims: &[usize]) -> Result<()> {
    let want = numel(op, what, dims)?;
    if len != want {
        return Err(Error::shape(
            op,
            format!("{what} has {len} elements, its shape {dims:?} holds {want}"),
        ));
    }
    Ok(())
}

/// Validates a conv (`transposed = false`) or convT layer and returns its geometry and the
/// output dims.
fn layer_geom(
    op: &'static str,
    transposed: bool,
    (x_len, x_dims): (usize, [usize; 4]),
    (w_len, w_dims): (usize, [usize; 4]),
    bias_len: Option<usize>,
    p: Conv2dParams,
) -> Result<(Geom, [usize; 4])> {
    check_len(op, "x", x_len, &x_dims)?;
    check_len(op, "weight", w_len, &w_dims)?;
    if x_dims[1..].contains(&0) || w_dims.contains(&0) {
        return Err(Error::shape(
            op,
            format!("zero-sized dimension in x {x_dims:?} or weight {w_dims:?}"),
        ));
    }
    let [n, c_in, h, w] = x_dims;
    let [w0, w1, kh, kw] = w_dims;
    let (layout, c_out) = if transposed {
        ("[Cin, Cout, kh, kw]", w1)
    } else {
        ("[Cout, Cin, kh, kw]", w0)
    };
    let w_cin = if transposed { w0 } else { w1 };
    if c_in != w_cin {
        return Err(Error::shape(
            op,
            format!("x has {c_in} channels but the weight {layout} = {w_dims:?} expects {w_cin}"),
        ));
    }
    if let Some(len) = bias_len {
        if len != c_out {
            return Err(Error::shape(
                op,
                format!("bias has {len} elements, expected Cout = {c_out}"),
            ));
        }
    }
    let (s, pad) = (p.stride, p.padding);
    let out_size = if transposed {
        conv_transpose2d_out_size
    } else {
        conv2d_out_size
    };
    let (ho, wo) = (out_size(h, kh, s, pad)?, out_size(w, kw, s, pad)?);
    // The image side is the conv input, or the convT output.
    let ((c_im, ih, iw), (c_col, ch, cw)) = if transposed {
        ((c_out, ho, wo), (c_in, h, w))
    } else {
        ((c_in, h, w), (c_out, ho, wo))
    };
    let geom = Geom {
        n,
        c_im,
        h: ih,
        w: iw,
        c_col,
        ho: ch,
        wo: cw,
        kh,
        kw,
        stride: s,
        pad,
    };
    let y_dims = [n, c_out, ho, wo];
    // Every buffer the kernels allocate must be addressable.
    numel(op, "output", &y_dims)?;
    numel(
        op,
        "column matrix",
        &[geom.rows(), geom.pix() + TARGET_COLS],
    )?;
    Ok((geom, y_dims))
}

/// Forward of conv (`transposed = false`) or convT.
fn layer_forward<T: Float>(
    op: &'static str,
    transposed: bool,
    (x, x_dims): (&[T], [usize; 4]),
    (w, w_dims): (&[T], [usize; 4]),
    bias: Option<&[T]>,
    p: Conv2dParams,
) -> Result<(Vec<T>, [usize; 4])> {
    let bias_len = bias.map(<[T]>::len);
    let (g, y_dims) = layer_geom(
        op,
        transposed,
        (x.len(), x_dims),
        (w.len(), w_dims),
        bias_len,
        p,
    )?;
    let y = if transposed {
        col_to_im(&g, w, bias, x)
    } else {
        im_to_col(&g, w, bias, x)
    };
    Ok((y, y_dims))
}

/// Backward of conv (`transposed = false`) or convT, computing only the requested gradients.
#[allow(clippy::too_many_arguments)]
fn layer_backward<T: Float>(
    op: &'static str,
    transposed: bool,
    (x, x_dims): (&[T], [usize; 4]),
    (w, w_dims): (&[T], [usize; 4]),
    has_bias: bool,
    gy: &[T],
    p: Conv2dParams,
    need: [bool; 3],
) -> Result<LayerGrads<T>> {
    let (g, y_dims) = layer_geom(
        op,
        transposed,
        (x.len(), x_dims),
        (w.len(), w_dims),
        None,
        p,
    )?;
    check_len(op, "gy", gy.len(), &y_dims)?;
    // The image side is x for conv and gy for convT.
    let (im, col) = if transposed { (gy, x) } else { (x, gy) };
    let dx = need[0].then(|| {
        if transposed {
            im_to_col(&g, w, None, gy)
        } else {
            col_to_im(&g, w, None, gy)
        }
    });
    Ok(LayerGrads {
        dx,
        dw: need[1].then(|| weight_grad(&g, im, col)),
        db: (need[2] && has_bias)
            .then(|| channel_sums(gy, y_dims[0], y_dims[1], y_dims[2] * y_dims[3])),
    })
}

/// x: `[N,Cin,H,W]`, w: `[Cout,Cin,kh,kw]` (PyTorch layout), bias: `[Cout]`.
/// Returns (y, y_dims).
pub fn conv2d_forward<T: Float>(
    x: &[T],
    x_dims: [usize; 4],
    w: &[T],
    w_dims: [usize; 4],
    bias: Option<&[T]>,
    p: Conv2dParams,
) -> Result<(Vec<T>, [usize; 4])> {
    layer_forward("conv2d", false, (x, x_dims), (w, w_dims), bias, p)
}

/// need = [dx, dw, db]; db is None when bias is absent (has_bias=false) even if requested.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<T: Float>(
    x: &[T],
    x_dims: [usize; 4],
    w: &[T],
    w_dims: [usize; 4],
    has_bias: bool,
    gy: &[T],
    p: Conv2dParams,
    need: [bool; 3],
) -> Result<LayerGrads<T>> {
    let op = "conv2d_backward";
    layer_backward(op, false, (x, x_dims), (w, w_dims), has_bias, gy, p, need)
}

/// conv-transpose: x `[N,Cin,H,W]`, w `[Cin,Cout,kh,kw]` (PyTorch ConvTranspose2d layout),
/// bias `[Cout]`; no output_padding, no dilation.
pub fn conv_transpose2d_forward<T: Float>(
    x: &[T],
    x_dims: [usize; 4],
    w: &[T],
    w_dims: [usize; 4],
    bias: Option<&[T]>,
    p: Conv2dParams,
) -> Result<(Vec<T>, [usize; 4])> {
    layer_forward("conv_transpose2d", true, (x, x_dims), (w, w_dims), bias, p)
}

/// Backward of [`conv_transpose2d_forward`]; need = [dx, dw, db] as for [`conv2d_backward`].
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_backward<T: Float>(
    x: &[T],
    x_dims: [usize; 4],
    w: &[T],
    w_dims: [usize; 4],
    has_bias: bool,
    gy: &[T],
    p: Conv2dParams,
    need: [bool; 3],
) -> Result<LayerGrads<T>> {
    let op = "conv_transpose2d_backward";
    layer_backward(op, true, (x, x_dims), (w, w_dims), has_bias, gy, p, need)
}

/// Backward of a recorded conv2d or conv_transpose2d; inputs are x, w and the optional bias.
struct ConvBackward {
    p: Conv2dParams,
    transposed: bool,
}

impl<B: Backend> BackwardOp<B> for ConvBackward {
    fn name(&self) -> &'static str {
        if self.transposed {
            "conv_transpose2d"
        } else {
            "conv2d"
        }
    }

    fn backward(
        &self,
        backend: &B,
        inputs: &[&B::Tensor],
        _output: &B::Tensor,
        grad_output: &B::Tensor,
        need: &[bool],
    ) -> Result<Vec<Option<B::Tensor>>> {
        let op = BackwardOp::<B>::name(self);
        let (x, w, has_bias) = match inputs {
            [x, w] => (*x, *w, false),
            [x, w, _] => (*x, *w, true),
            _ => {
                return Err(Error::Autograd(format!(
                    "{op}: expected 2 or 3 inputs, got {}",
                    inputs.len()
                )))
            }
        };
        let flag = |i: usize| need.get(i).copied().unwrap_or(false);
        let [dx, dw, db] = backend.conv_backward(
            x,
            w,
            has_bias,
            grad_output,
            self.p,
            self.transposed,
            [flag(0), flag(1), has_bias && flag(2)],
        )?;
        let mut out = vec![dx, dw];
        if has_bias {
            out.push(db);
        }
        Ok(out)
    }
}

impl<B: Backend> Tape<B> {
    /// y = conv2d(x, w) + b: x `[N,Cin,H,W]`, w `[Cout,Cin,kh,kw]`, b `[Cout]`.
    pub fn conv2d(&mut self, x: Var, w: Var, b: Option<Var>, p: Conv2dParams) -> Result<Var> {
        self.conv_layer(x, w, b, p, false, None)
    }

    /// `act(conv2d(x, w) + b)` as one op (one pass over the output on the GPU); `act` must
    /// be [`crate::ops::activation::fusable`].
    pub fn conv2d_act(
        &mut self,
        x: Var,
        w: Var,
        b: Option<Var>,
        p: Conv2dParams,
        act: Option<Activation>,
    ) -> Result<Var> {
        self.conv_layer(x, w, b, p, false, act)
    }

    /// y = conv_transpose2d(x, w) + b: x `[N,Cin,H,W]`, w `[Cin,Cout,kh,kw]`, b `[Cout]`.
    pub fn conv_transpose2d(
        &mut self,
        x: Var,
        w: Var,
        b: Option<Var>,
        p: Conv2dParams,
    ) -> Result<Var> {
        self.conv_layer(x, w, b, p, true, None)
    }

    /// `act(conv_transpose2d(x, w) + b)` as one op; `act` must be fusable.
    pub fn conv_transpose2d_act(
        &mut self,
        x: Var,
        w: Var,
        b: Option<Var>,
        p: Conv2dParams,
        act: Option<Activation>,
    ) -> Result<Var> {
        self.conv_layer(x, w, b, p, true, act)
    }

    fn conv_layer(
        &mut self,
        x: Var,
        w: Var,
        b: Option<Var>,
        p: Conv2dParams,
        transposed: bool,
        act: Option<Activation>,
    ) -> Result<Var> {
        check_fusable("conv2d", act)?;
        let y = self.backend().conv(
            self.value(x),
            self.value(w),
            b.map(|b| self.value(b)),
            p,
            transposed,
            act,
        )?;
        let inputs: Vec<Var> = [x, w].into_iter().chain(b).collect();
        let op = WithActivation {
            op: ConvBackward { p, transposed },
            act,
        };
        self.record(&inputs, y, op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{gradcheck, weighted_sum, Rng};
    use crate::tensor::Tensor;

    fn cp(stride: usize, padding: usize) -> Conv2dParams {
        Conv2dParams { stride, padding }
    }

    /// One layer configuration: conv when `!transposed`, else convT.
    #[derive(Clone, Copy, Debug)]
    struct Case {
        transposed: bool,
        x: [usize; 4],
        w: [usize; 4],
        p: Conv2dParams,
        bias: bool,
    }

    /// conv: x [n, cin, h, w], weight [cout, cin, kh, kw].
    fn conv(x: [usize; 4], cout: usize, k: (usize, usize), p: Conv2dParams) -> Case {
        let w = [cout, x[1], k.0, k.1];
        Case {
            transposed: false,
            x,
            w,
            p,
            bias: true,
        }
    }

    /// convT: x [n, cin, h, w], weight [cin, cout, kh, kw].
    fn convt(x: [usize; 4], cout: usize, k: (usize, usize), p: Conv2dParams) -> Case {
        let w = [x[1], cout, k.0, k.1];
        Case {
            transposed: true,
            x,
            w,
            p,
            bias: true,
        }
    }

    impl Case {
        fn no_bias(self) -> Case {
            Case {
                bias: false,
                ..self
            }
        }
        fn cout(&self) -> usize {
            self.w[if self.transposed { 1 } else { 0 }]
        }
        fn with_batch(self, n: usize) -> Case {
            let mut c = self;
            c.x[0] = n;
            c
        }
        fn forward<T: Float>(&self, x: &[T], w: &[T], b: Option<&[T]>) -> (Vec<T>, [usize; 4]) {
            let f = if self.transposed {
                conv_transpose2d_forward::<T>
            } else {
                conv2d_forward::<T>
            };
            f(x, self.x, w, self.w, b, self.p).unwrap()
        }
        fn backward<T: Float>(&self, x: &[T], w: &[T], gy: &[T], need: [bool; 3]) -> LayerGrads<T> {
            let f = if self.transposed {
                conv_transpose2d_backward::<T>
            } else {
                conv2d_backward::<T>
            };
            f(x, self.x, w, self.w, self.bias, gy, self.p, need).unwrap()
        }
        /// Random x, w and bias (empty without bias).
        fn inputs(&self, rng: &mut Rng) -> Vec<Vec<f64>> {
            let n = |d: [usize; 4]| d.iter().product::<usize>();
            let nb = if self.bias { self.cout() } else { 0 };
            vec![
                rng.uniform_vec(n(self.x), -1.0, 1.0),
                rng.uniform_vec(n(self.w), -1.0, 1.0),
                rng.uniform_vec(nb, -1.0, 1.0),
            ]
        }
    }

    fn bias_of(case: &Case, b: &[f64]) -> Option<Vec<f64>> {
        case.bias.then(|| b.to_vec())
    }

    fn gradcheck_case(case: Case, seed: u64) {
        let mut rng = Rng::new(seed);
        let inputs = rng_inputs(&case, &mut rng);
        gradcheck(
            &format!("{case:?}"),
            &inputs,
            &[true, true, case.bias],
            |inp| {
                case.forward(&inp[0], &inp[1], bias_of(&case, &inp[2]).as_deref())
                    .0
            },
            |inp, gy| {
                let g = case.backward(&inp[0], &inp[1], gy, [true, true, true]);
                assert_eq!(g.db.is_some(), case.bias, "db only with a bias");
                vec![g.dx, g.dw, g.db]
            },
        );
    }

    fn rng_inputs(case: &Case, rng: &mut Rng) -> Vec<Vec<f64>> {
        case.inputs(rng)
    }

    #[test]
    fn gradcheck_conv2d() {
        let x = [3, 3, 7, 9];
        let cases = [
            conv(x, 5, (5, 5), cp(1, 0)), // F1
            conv(x, 5, (3, 3), cp(1, 1)), // D
            conv(x, 5, (2, 2), cp(1, 0)),
            conv(x, 5, (4, 4), cp(2, 1)),
            conv(x, 5, (3, 3), cp(2, 2)),
            conv(x, 5, (5, 5), cp(2, 2)),
            conv(x, 5, (2, 3), cp(2, 0)),
            conv(x, 5, (3, 3), cp(1, 2)).no_bias(),
            conv(x, 5, (2, 2), cp(2, 2)), // padding wider than the kernel
            conv([3, 3, 5, 5], 5, (5, 5), cp(1, 0)), // F1's last layer: 1×1 output
        ];
        for (i, case) in cases.into_iter().enumerate() {
            gradcheck_case(case, 100 + i as u64);
        }
    }

    #[test]
    fn gradcheck_conv_transpose2d() {
        let cases = [
            convt([3, 3, 3, 4], 5, (4, 4), cp(2, 1)), // G
            convt([3, 3, 1, 1], 5, (2, 2), cp(1, 0)), // G's first layer, from 1×1
            convt([3, 3, 4, 5], 5, (3, 3), cp(1, 1)),
            convt([3, 3, 3, 4], 5, (3, 3), cp(2, 0)),
            convt([3, 3, 3, 2], 5, (5, 5), cp(2, 2)),
            convt([3, 3, 2, 3], 5, (2, 2), cp(2, 0)),
            convt([3, 3, 5, 4], 5, (3, 3), cp(1, 2)).no_bias(),
            convt([3, 3, 3, 4], 5, (3, 2), cp(2, 1)),
        ];
        for (i, case) in cases.into_iter().enumerate() {
            gradcheck_case(case, 200 + i as u64);
        }
    }

    /// Direct 7-loop convolution (plus bias).
    fn naive_conv(case: &Case, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let [n, ci, h, wi] = case.x;
        let [co, _, kh, kw] = case.w;
        let (s, pad) = (case.p.stride as isize, case.p.padding as isize);
        let ho = conv2d_out_size(h, kh, case.p.stride, case.p.padding).unwrap();
        let wo = conv2d_out_size(wi, kw, case.p.stride, case.p.padding).unwrap();
        let mut y = vec![0.0; n * co * ho * wo];
        for s_ in 0..n {
            for o in 0..co {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = if case.bias { b[o] } else { 0.0 };
                        for c in 0..ci {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let iy = oy as isize * s + i as isize - pad;
                                    let ix = ox as isize * s + j as isize - pad;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wi as isize {
                                        continue;
                                    }
                                    let (iy, ix) = (iy as usize, ix as usize);
                                    acc += x[((s_ * ci + c) * h + iy) * wi + ix]
                                        * w[((o * ci + c) * kh + i) * kw + j];
                                }
                            }
                        }
                        y[((s_ * co + o) * ho + oy) * wo + ox] = acc;
                    }
                }
            }
        }
        y
    }

    /// Direct transposed convolution: every input pixel scatters `x · w` into the output.
    fn naive_convt(case: &Case, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let [n, ci, h, wi] = case.x;
        let [_, co, kh, kw] = case.w;
        let (s, pad) = (case.p.stride as isize, case.p.padding as isize);
        let ho = conv_transpose2d_out_size(h, kh, case.p.stride, case.p.padding).unwrap();
        let wo = conv_transpose2d_out_size(wi, kw, case.p.stride, case.p.padding).unwrap();
        let mut y = vec![0.0; n * co * ho * wo];
        for (i, v) in y.iter_mut().enumerate() {
            if case.bias {
                *v = b[i / (ho * wo) % co];
            }
        }
        for s_ in 0..n {
            for c in 0..ci {
                for iy in 0..h {
                    for ix in 0..wi {
                        let xv = x[((s_ * ci + c) * h + iy) * wi + ix];
                        for o in 0..co {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let oy = iy as isize * s + i as isize - pad;
                                    let ox = ix as isize * s + j as isize - pad;
                                    if oy < 0 || ox < 0 || oy >= ho as isize || ox >= wo as isize {
                                        continue;
                                    }
                                    y[((s_ * co + o) * ho + oy as usize) * wo + ox as usize] +=
                                        xv * w[((c * co + o) * kh + i) * kw + j];
                                }
                            }
                        }
                    }
                }
            }
        }
        y
    }

    fn assert_close(name: &str, got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "{name}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{name}: element {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn forward_matches_direct_loops() {
        // Batches of 1, 3 and 10 exercise one-sample and multi-sample GEMM groups.
        let cases = [
            conv([3, 3, 7, 9], 5, (5, 5), cp(1, 0)),
            conv([10, 3, 7, 9], 5, (3, 3), cp(1, 1)),
            conv([10, 4, 5, 5], 6, (5, 5), cp(1, 0)),
            conv([1, 2, 8, 6], 3, (4, 3), cp(2, 2)).no_bias(),
            conv([10, 3, 7, 9], 5, (3, 3), cp(3, 1)),
        ];
        let mut rng = Rng::new(11);
        for case in cases {
            let [x, w, b] = <[Vec<f64>; 3]>::try_from(case.inputs(&mut rng)).unwrap();
            let (y, dims) = case.forward(&x, &w, bias_of(&case, &b).as_deref());
            assert_eq!(dims[..2], [case.x[0], case.cout()]);
            assert_close(
                &format!("{case:?}"),
                &y,
                &naive_conv(&case, &x, &w, &b),
                1e-12,
            );
        }
        let cases = [
            convt([3, 3, 3, 4], 5, (4, 4), cp(2, 1)),
            convt([10, 7, 1, 1], 4, (2, 2), cp(1, 0)),
            convt([10, 3, 2, 3], 5, (3, 3), cp(2, 2)),
            convt([1, 2, 4, 4], 3, (3, 2), cp(1, 1)).no_bias(),
        ];
        for case in cases {
            let [x, w, b] = <[Vec<f64>; 3]>::try_from(case.inputs(&mut rng)).unwrap();
            let (y, _) = case.forward(&x, &w, bias_of(&case, &b).as_deref());
            assert_close(
                &format!("{case:?}"),
                &y,
                &naive_convt(&case, &x, &w, &b),
                1e-12,
            );
        }
    }

    /// <conv(x; w), y> == <x, convT(y; w)>: convT is the adjoint of conv with the same weight.
    #[test]
    fn conv_transpose_is_adjoint_of_conv() {
        let mut rng = Rng::new(12);
        // (H + 2p − k) divisible by the stride, so convT maps back to x's size.
        let cases = [
            conv([3, 3, 7, 9], 5, (3, 3), cp(2, 1)),
            conv([3, 3, 8, 10], 5, (4, 4), cp(2, 1)),
            conv([3, 4, 7, 9], 5, (5, 5), cp(1, 0)),
            conv([10, 3, 2, 2], 7, (2, 2), cp(1, 0)),
            conv([3, 3, 9, 7], 2, (3, 3), cp(2, 2)),
        ];
        for case in cases.map(Case::no_bias) {
            let [x, w, _] = <[Vec<f64>; 3]>::try_from(case.inputs(&mut rng)).unwrap();
            let (cx, y_dims) = case.forward(&x, &w, None);
            let y = rng.uniform_vec(cx.len(), -1.0, 1.0);
            let (ty, x_dims) =
                conv_transpose2d_forward(&y, y_dims, &w, case.w, None, case.p).unwrap();
            assert_eq!(x_dims, case.x);
            let lhs: f64 = cx.iter().zip(&y).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&ty).map(|(a, b)| a * b).sum();
            assert!(
                (lhs - rhs).abs() < 1e-10 * (1.0 + lhs.abs()),
                "{case:?}: {lhs} vs {rhs}"
            );
        }
    }

    /// Large batches (several chunks, several samples per GEMM) give the same results as
    /// one sample at a time (one sample per GEMM).
    #[test]
    fn grouped_batches_match_per_sample() {
        let mut rng = Rng::new(13);
        let cases = [
            conv([37, 3, 9, 9], 4, (3, 3), cp(1, 1)),
            conv([37, 5, 5, 5], 6, (5, 5), cp(1, 0)),
            convt([37, 5, 4, 4], 3, (4, 4), cp(2, 1)),
            convt([37, 6, 1, 1], 4, (2, 2), cp(1, 0)),
            // Weight gradients split over blocks of dW rows.
            convt([37, 130, 1, 1], 3, (2, 2), cp(1, 0)),
            conv([37, 4, 3, 3], 129, (3, 3), cp(1, 0)),
        ];
        for case in cases {
            let [x, w, b] = <[Vec<f64>; 3]>::try_from(case.inputs(&mut rng)).unwrap();
            let (y, y_dims) = case.forward(&x, &w, Some(&b));
            let gy = rng.uniform_vec(y.len(), -1.0, 1.0);
            let all = case.backward(&x, &w, &gy, [true; 3]);
            let one = case.with_batch(1);
            let (xl, yl) = (x.len() / 37, y.len() / 37);
            let (mut y1, mut dx1) = (Vec::new(), Vec::new());
            let (mut dw1, mut db1) = (vec![0.0; w.len()], vec![0.0; b.len()]);
            for s in 0..37 {
                let xs = &x[s * xl..][..xl];
                y1.extend(one.forward(xs, &w, Some(&b)).0);
                let g = one.backward(xs, &w, &gy[s * yl..][..yl], [true; 3]);
                dx1.extend(g.dx.unwrap());
                dw1.iter_mut().zip(g.dw.unwrap()).for_each(|(a, v)| *a += v);
                db1.iter_mut().zip(g.db.unwrap()).for_each(|(a, v)| *a += v);
            }
            let name = format!("{case:?} -> {y_dims:?}");
            assert_close(&name, &y, &y1, 1e-12);
            assert_close(&name, &all.dx.unwrap(), &dx1, 1e-12);
            assert_close(&name, &all.dw.unwrap(), &dw1, 1e-12);
            assert_close(&name, &all.db.unwrap(), &db1, 1e-12);
        }
    }

    #[test]
    fn only_requested_gradients_are_computed() {
        let mut rng = Rng::new(14);
        for case in [
            conv([2, 3, 5, 6], 4, (3, 3), cp(1, 1)),
            convt([2, 3, 2, 3], 4, (4, 4), cp(2, 1)),
        ] {
            let [x, w, _] = <[Vec<f64>; 3]>::try_from(case.inputs(&mut rng)).unwrap();
            let (y, _) = case.forward(&x, &w, None);
            for need in [
                [true, false, false],
                [false, true, false],
                [false, false, true],
            ] {
                let g = case.backward(&x, &w, &y, need);
                assert_eq!([g.dx.is_some(), g.dw.is_some(), g.db.is_some()], need);
            }
            let g = case.no_bias().backward(&x, &w, &y, [true; 3]);
            assert!(g.db.is_none(), "no db without a bias");
        }
    }

    #[test]
    fn out_sizes() {
        assert_eq!(conv2d_out_size(32, 5, 1, 0).unwrap(), 28);
        assert_eq!(conv2d_out_size(32, 3, 1, 1).unwrap(), 32);
        assert_eq!(conv2d_out_size(7, 3, 2, 1).unwrap(), 4);
        assert_eq!(conv2d_out_size(3, 5, 1, 1).unwrap(), 1);
        assert_eq!(conv_transpose2d_out_size(1, 2, 1, 0).unwrap(), 2);
        assert_eq!(conv_transpose2d_out_size(2, 4, 2, 1).unwrap(), 4);
        assert_eq!(conv_transpose2d_out_size(16, 4, 2, 1).unwrap(), 32);
        let invalid = |r: Result<usize>| matches!(r, Err(Error::InvalidArgument { .. }));
        let shape = |r: Result<usize>| matches!(r, Err(Error::Shape { .. }));
        assert!(invalid(conv2d_out_size(5, 3, 0, 0)));
        assert!(invalid(conv2d_out_size(5, 0, 1, 0)));
        assert!(invalid(conv_transpose2d_out_size(5, 3, 0, 0)));
        assert!(invalid(conv2d_out_size(5, 3, 1, usize::MAX)));
        assert!(shape(conv2d_out_size(3, 5, 1, 0)));
        assert!(shape(conv2d_out_size(0, 1, 1, 0)));
        assert!(shape(conv_transpose2d_out_size(1, 2, 1, 1)));
        assert!(shape(conv_transpose2d_out_size(0, 2, 1, 0)));
    }

    #[test]
    fn bad_shapes_are_errors() {
        let shape = |r: Result<(Vec<f64>, [usize; 4])>| matches!(r, Err(Error::Shape { .. }));
        let x = vec![0.0; 2 * 3 * 5 * 5];
        let w = vec![0.0; 4 * 3 * 3 * 3];
        let b = vec![0.0; 4];
        let (xd, wd) = ([2, 3, 5, 5], [4, 3, 3, 3]);
        let p = cp(1, 1);
        assert!(conv2d_forward(&x, xd, &w, wd, Some(&b), p).is_ok());
        // Channel mismatch, both layouts.
        assert!(shape(conv2d_forward(&x, xd, &w, [3, 4, 3, 3], None, p)));
        assert!(shape(conv_transpose2d_forward(
            &x,
            xd,
            &w,
            [4, 3, 3, 3],
            None,
            p
        )));
        assert!(conv_transpose2d_forward(&x, xd, &w, [3, 4, 3, 3], Some(&b), p).is_ok());
        // Slice lengths.
        assert!(shape(conv2d_forward(&x[1..], xd, &w, wd, None, p)));
        assert!(shape(conv2d_forward(&x, xd, &w[1..], wd, None, p)));
        assert!(shape(conv2d_forward(&x, xd, &w, wd, Some(&b[1..]), p)));
        assert!(shape(conv_transpose2d_forward(
            &x,
            xd,
            &w,
            [3, 4, 3, 3],
            Some(&b[1..]),
            p
        )));
        // Kernel larger than the padded input; zero-sized dims.
        assert!(shape(conv2d_forward(
            &x,
            [2, 3, 1, 25],
            &w,
            wd,
            None,
            cp(1, 0)
        )));
        assert!(shape(conv2d_forward(
            &[],
            [2, 0, 5, 5],
            &[],
            [4, 0, 3, 3],
            None,
            p
        )));
        assert!(shape(conv2d_forward(&x, xd, &[], [4, 3, 0, 3], None, p)));
        // Stride 0.
        let r = conv2d_forward(&x, xd, &w, wd, None, cp(0, 1));
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
        // Backward: wrong gy length, and the same validation as forward.
        let gy = vec![0.0; 2 * 4 * 5 * 5];
        let bw = |gy: &[f64], wd| conv2d_backward(&x, xd, &w, wd, true, gy, p, [true; 3]);
        assert!(bw(&gy, wd).is_ok());
        assert!(matches!(bw(&gy[1..], wd), Err(Error::Shape { .. })));
        assert!(matches!(bw(&gy, [4, 4, 3, 3]), Err(Error::Shape { .. })));
        let r = conv_transpose2d_backward(&x, xd, &w, wd, false, &gy, p, [true; 3]);
        assert!(
            matches!(r, Err(Error::Shape { .. })),
            "convT with a conv weight layout"
        );
    }

    #[test]
    fn empty_batch() {
        let (xd, wd, p) = ([0, 3, 5, 5], [4, 3, 3, 3], cp(2, 1));
        let w = vec![1.0f64; 4 * 27];
        let (y, dims) = conv2d_forward(&[], xd, &w, wd, None, p).unwrap();
        assert!(y.is_empty());
        assert_eq!(dims, [0, 4, 3, 3]);
        let g = conv2d_backward(&[], xd, &w, wd, true, &[], p, [true; 3]).unwrap();
        assert_eq!(g.dx.unwrap().len(), 0);
        assert_eq!(g.dw.unwrap(), vec![0.0; w.len()]);
        assert_eq!(g.db.unwrap(), vec![0.0; 4]);
    }

    /// The weight and bias gradients (and the other passes) are identical, bit for bit,
    /// whatever the thread count.
    #[test]
    fn results_are_identical_across_thread_counts() {
        let mut rng = Rng::new(15);
        // Batch 37: several chunks with several GEMM groups each; then one chunk whose dW is
        // split over row blocks.
        for case in [
            conv([37, 5, 9, 9], 7, (3, 3), cp(1, 1)),
            convt([37, 6, 9, 9], 4, (4, 4), cp(2, 1)),
            convt([37, 130, 1, 1], 3, (2, 2), cp(1, 0)),
        ] {
            let f32s = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
            let [x, w, _] = <[Vec<f64>; 3]>::try_from(case.inputs(&mut rng)).unwrap();
            let (x, w) = (f32s(x), f32s(w));
            let (y, _) = case.forward(&x, &w, None);
            let gy = f32s(rng.uniform_vec(y.len(), -1.0, 1.0));
            let bits = |v: &[f32]| -> Vec<u32> { v.iter().map(|v| v.to_bits()).collect() };
            // Forward, dx, dw and db as bits, computed in a pool of `threads` threads.
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let (y, _) = case.forward(&x, &w, None);
                    let g = case.backward(&x, &w, &gy, [false, true, true]);
                    let dx = case.backward(&x, &w, &gy, [true, false, false]).dx;
                    [y, dx.unwrap(), g.dw.unwrap(), g.db.unwrap()].map(|v| bits(&v))
                })
            };
            let one = run(1);
            assert_eq!(one, run(2), "{case:?}: 1 vs 2 threads");
            assert_eq!(one, run(3), "{case:?}: 1 vs 3 threads");
        }
    }

    #[test]
    fn tape_matches_direct_backward() {
        let mut rng = Rng::new(16);
        for case in [
            conv([4, 3, 7, 9], 5, (3, 3), cp(1, 1)),
            convt([4, 5, 2, 3], 3, (4, 4), cp(2, 1)),
        ] {
            let f32s = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            let [x, w, b] = <[Vec<f64>; 3]>::try_from(case.inputs(&mut rng)).unwrap();
            let (x, w, b) = (f32s(&x), f32s(&w), f32s(&b));
            let mut tape = Tape::new();
            let xv = tape.param(Tensor::new(case.x, x.clone()).unwrap());
            let wv = tape.param(Tensor::new(case.w, w.clone()).unwrap());
            let bv = tape.param(Tensor::new([b.len()], b.clone()).unwrap());
            let y = if case.transposed {
                tape.conv_transpose2d(xv, wv, Some(bv), case.p).unwrap()
            } else {
                tape.conv2d(xv, wv, Some(bv), case.p).unwrap()
            };
            let (want_y, y_dims) = case.forward(&x, &w, Some(&b));
            assert_eq!(tape.value(y).dims(), &y_dims[..]);
            assert_eq!(tape.value(y).data(), &want_y[..]);
            let r = f32s(&rng.uniform_vec(want_y.len(), -1.0, 1.0));
            let loss = weighted_sum(&mut tape, y, &r);
            let want = case.backward(&x, &w, &r, [true; 3]);
            let got = tape.backward(loss, &[xv, wv, bv]).unwrap();
            assert_eq!(got[0].data(), &want.dx.unwrap()[..], "{case:?}: dx");
            assert_eq!(got[1].data(), &want.dw.clone().unwrap()[..], "{case:?}: dw");
            assert_eq!(got[2].data(), &want.db.unwrap()[..], "{case:?}: db");
            // Only w requested: same dw.
            let got = tape.backward(loss, &[wv]).unwrap();
            assert_eq!(got[0].data(), &want.dw.unwrap()[..], "{case:?}: dw alone");
        }
    }

    #[test]
    fn tape_backward_honours_need_flags() {
        let x = Tensor::full([2, 3, 4, 4], 0.5).unwrap();
        let w = Tensor::full([5, 3, 3, 3], 0.1).unwrap();
        let b = Tensor::full([5], 0.2).unwrap();
        let gy = Tensor::full([2, 5, 4, 4], 1.0).unwrap();
        let op = ConvBackward {
            p: cp(1, 1),
            transposed: false,
        };
        let some = |g: &[Option<Tensor>]| g.iter().map(Option::is_some).collect::<Vec<_>>();
        let g = op
            .backward(
                &crate::backend::Cpu,
                &[&x, &w, &b],
                &gy,
                &gy,
                &[false, true, false],
            )
            .unwrap();
        assert_eq!(some(&g), [false, true, false]);
        let g = op
            .backward(
                &crate::backend::Cpu,
                &[&x, &w, &b],
                &gy,
                &gy,
                &[true, false, true],
            )
            .unwrap();
        assert_eq!(some(&g), [true, false, true]);
        assert_eq!(g[2].as_ref().unwrap().data(), &[32.0; 5]);
        let g = op
            .backward(&crate::backend::Cpu, &[&x, &w], &gy, &gy, &[true, false])
            .unwrap();
        assert_eq!(some(&g), [true, false]);
    }

    #[test]
    fn tape_rejects_bad_shapes() {
        let mut tape = Tape::new();
        let x = tape.input(Tensor::zeros([2, 3, 4, 4]).unwrap());
        let w = tape.param(Tensor::zeros([5, 3, 3, 3]).unwrap());
        let b2 = tape.param(Tensor::zeros([5, 1]).unwrap());
        let b4 = tape.param(Tensor::zeros([4]).unwrap());
        let x3 = tape.input(Tensor::zeros([3, 4, 4]).unwrap());
        let p = cp(1, 1);
        assert!(matches!(
            tape.conv2d(x, w, Some(b2), p),
            Err(Error::Shape { .. })
        ));
        assert!(matches!(
            tape.conv2d(x, w, Some(b4), p),
            Err(Error::Shape { .. })
        ));
        assert!(matches!(
            tape.conv2d(x3, w, None, p),
            Err(Error::Shape { .. })
        ));
        assert!(matches!(
            tape.conv_transpose2d(x, w, None, p),
            Err(Error::Shape { .. })
        ));
        assert!(tape.conv2d(x, w, None, p).is_ok());
    }
}
