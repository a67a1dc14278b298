//! Bilinear resizing of u8 images, bit-exact with Pillow's `Image.resize(size, BILINEAR)`
//! (what torchvision's `transforms.Resize` runs on a PIL image, antialiased).
//!
//! Pillow resamples separably (horizontal pass first, unless the height shrinks by more than
//! twice as many pixels as the width: then vertical first), each output pixel a weighted sum of the
//! input pixels under a triangle filter centred at `(x + 0.5)·scale` (half-pixel centres). When
//! shrinking, the filter is widened by the scale factor (antialiasing); when enlarging (28 → 32)
//! it is plain bilinear interpolation with edge pixels clamped. Weights are normalized, turned
//! into 22-bit fixed point, and every pass rounds to u8 — so the intermediate image is u8 too.
//! This file reproduces those steps (Pillow 13's `src/libImaging/Resample.c`; Pillow before 11
//! always ran the horizontal pass first, which only matters when shrinking), which makes the
//! result identical to Pillow's, pixel for pixel; the tests check it against Pillow output.
//!
//! Difference from `transforms.Resize(32)`: given an int, torchvision resizes the *shorter*
//! side to 32 and keeps the aspect ratio. For square inputs (MNIST, SVHN) that is 32×32; here
//! every input is resized to exactly 32×32, i.e. `transforms.Resize((32, 32))`.

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per-output-pixel taps of one axis.
#[derive(Clone, Debug)]
struct Axis {
    in_size: usize,
    out_size: usize,
    ksize: usize,
    /// (first input index, number of taps) per output index.
    bounds: Vec<(usize, usize)>,
    /// Fixed-point weights, `ksize` per output index.
    k: Vec<i32>,
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

impl Axis {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter.
    fn new(in_size: usize, out_size: usize) -> Axis {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = 1.0 * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut k = vec![0i32; out_size * ksize];
        let mut w = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // `as` truncates toward zero, like C's (int) cast.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let taps = xmax.saturating_sub(xmin).min(ksize);
            let mut ww = 0.0;
            for (x, wx) in w.iter_mut().enumerate().take(taps) {
                *wx = bilinear_filter((x as f64 + xmin as f64 - center + 0.5) * ss);
                ww += *wx;
            }
            for x in 0..taps {
                let v = if ww != 0.0 { w[x] / ww } else { w[x] };
                let f = v * (1u32 << PRECISION_BITS) as f64;
                k[xx * ksize + x] = if v < 0.0 {
                    (-0.5 + f) as i32
                } else {
                    (0.5 + f) as i32
                };
            }
            bounds.push((xmin, taps));
        }
        Axis {
            in_size,
            out_size,
            ksize,
            bounds,
            k,
        }
    }

    fn is_identity(&self) -> bool {
        self.in_size == self.out_size
    }

    fn tables(&self) -> AxisTables {
        let cast = |v: usize| i32::try_from(v).expect("resize axis fits i32");
        AxisTables {
            ksize: self.ksize,
            bounds: self
                .bounds
                .iter()
                .flat_map(|&(first, taps)| [cast(first), cast(taps)])
                .collect(),
            k: self.k.clone(),
        }
    }
}

/// One axis's taps as flat tables (what a device kernel reads): per output index `o`,
/// `bounds[2o]` is the first input index and `bounds[2o + 1]` the tap count; `k[o·ksize + t]`
/// is tap `t`'s fixed-point weight (22 fractional bits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AxisTables {
    pub ksize: usize,
    pub bounds: Vec<i32>,
    pub k: Vec<i32>,
}

#[inline]
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// A precomputed resize from H×W to OH×OW, applied to one channel plane at a time.
#[derive(Clone, Debug)]
pub struct Resizer {
    horiz: Axis,
    vert: Axis,
}

impl Resizer {
    /// Resizes `in_h`×`in_w` planes to `out_h`×`out_w`. All sizes must be at least 1.
    pub fn new(in_h: usize, in_w: usize, out_h: usize, out_w: usize) -> Resizer {
        Resizer {
            horiz: Axis::new(in_w.max(1), out_w.max(1)),
            vert: Axis::new(in_h.max(1), out_h.max(1)),
        }
    }

    pub fn in_size(&self) -> (usize, usize) {
        (self.vert.in_size, self.horiz.in_size)
    }
    pub fn out_size(&self) -> (usize, usize) {
        (self.vert.out_size, self.horiz.out_size)
    }

    /// Whether Pillow runs the vertical pass first: when the height shrinks, by more than twice
    /// as many pixels as the width does.
    pub fn vertical_first(&self) -> bool {
        let dy = self.vert.in_size as i64 - self.vert.out_size as i64;
        let dx = self.horiz.in_size as i64 - self.horiz.out_size as i64;
        dy > 0 && dy > dx * 2
    }

    /// Whether both axes keep their size (the resize is a copy).
    pub fn is_identity(&self) -> bool {
        self.horiz.is_identity() && self.vert.is_identity()
    }

    /// The horizontal pass's taps as flat tables, for the GPU gather (kernels/data.cu).
    pub fn horizontal_tables(&self) -> AxisTables {
        self.horiz.tables()
    }

    /// The vertical pass's taps as flat tables, for the GPU gather (kernels/data.cu).
    pub fn vertical_tables(&self) -> AxisTables {
        self.vert.tables()
    }

    /// Resizes one plane. `src` is in_h·in_w bytes, `dst` out_h·out_w; `tmp` is scratch.
    pub fn plane(&self, src: &[u8], dst: &mut [u8], tmp: &mut Vec<u8>) {
        let (ih, iw) = self.in_size();
        let (oh, ow) = self.out_size();
        debug_assert_eq!(src.len(), ih * iw);
        debug_assert_eq!(dst.len(), oh * ow);
        match (self.horiz.is_identity(), self.vert.is_identity()) {
            (true, true) => dst.copy_from_slice(src),
            (false, true) => horizontal(&self.horiz, src, ih, dst),
            (true, false) => vertical(&self.vert, src, iw, dst),
            (false, false) => {
                tmp.clear();
                if self.vertical_first() {
                    tmp.resize(oh * iw, 0);
                    vertical(&self.vert, src, iw, tmp);
                    horizontal(&self.horiz, tmp, oh, dst);
                } else {
                    tmp.resize(ih * ow, 0);
                    horizontal(&self.horiz, src, ih, tmp);
                    vertical(&self.vert, tmp, ow, dst);
                }
            }
        }
    }
}

/// Resamples each of `rows` rows of `src` (width `a.in_size`) into `dst` (width `a.out_size`).
fn horizontal(a: &Axis, src: &[u8], rows: usize, dst: &mut [u8]) {
    let (iw, ow) = (a.in_size, a.out_size);
    for y in 0..rows {
        let row = &src[y * iw..(y + 1) * iw];
        let out = &mut dst[y * ow..(y + 1) * ow];
        for (xx, o) in out.iter_mut().enumerate() {
            let (xmin, taps) = a.bounds[xx];
            let k = &a.k[xx * a.ksize..xx * a.ksize + taps];
            let mut ss: i32 = 1 << (PRECISION_BITS - 1);
            for (p, &kk) in row[xmin..xmin + taps].iter().zip(k) {
                ss = ss.wrapping_add(*p as i32 * kk);
            }
            *o = clip8(ss);
        }
    }
}

/// Resamples each column of `src` (height `a.in_size`, `width` columns) into `dst`.
fn vertical(a: &Axis, src: &[u8], width: usize, dst: &mut [u8]) {
    for yy in 0..a.out_size {
        let (ymin, taps) = a.bounds[yy];
        let k = &a.k[yy * a.ksize..yy * a.ksize + taps];
        let out = &mut dst[yy * width..(yy + 1) * width];
        for (xx, o) in out.iter_mut().enumerate() {
            let mut ss: i32 = 1 << (PRECISION_BITS - 1);
            for (y, &kk) in k.iter().enumerate() {
                ss = ss.wrapping_add(src[(ymin + y) * width + xx] as i32 * kk);
            }
            *o = clip8(ss);
        }
    }
}
