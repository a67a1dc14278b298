//! The embedded default pair, shipped inside the binary so `train` needs no download.
//!
//! Both come from the 5,000 real MNIST digits of `data/mnist5k` (500 per class; provenance and
//! licence in `data/mnist5k/PROVENANCE.md`), vendored gzip-compressed and decompressed at first
//! use. Each class is split by a fixed permutation (splitmix64, seed [`SPLIT_SEED`], stream =
//! the class) into four disjoint parts: 40 % source train, 10 % source validation, 40 % target
//! train, 10 % target test — 2000 / 500 / 2000 / 500 digits, balanced by class.
//!
//! - `embedded-mnist` (the source): the real digits, 28×28 gray. Its `train` split is the
//!   source training set; its `test` split is the source **validation** set (used to select
//!   epochs; it is never the target).
//! - `embedded-mnistm` (the target): a synthetic colour domain in the style of MNIST-M (Ganin &
//!   Lempitsky 2015), made from the other digits: each digit is resized to 32×32 and blended
//!   over a procedural colour texture as MNIST-M does, `out = |background − digit|` per channel.
//!   The texture is seeded per digit ([`TEXTURE_SEED`], stream = the digit's row in mnist5k):
//!   smooth value noise on a coarse random grid plus two coloured sinusoidal gratings. 32×32
//!   RGB; `train` and `test` splits.
//!
//! The rows of every split are in a fixed shuffled order (not sorted by class). Everything here
//! is deterministic and independent of the training seed.

use std::path::PathBuf;
use std::sync::OnceLock;

use flate2::read::GzDecoder;
use std::io::Read;

use super::batch::IMAGE_VALUES;
use super::bytes::Bytes;
use super::dataset::{Dataset, Images, Labels, Split};
use super::error::{DataError, Result};
use super::idx::IdxArray;
use super::perm::SplitMix64;
use super::resize::Resizer;
use super::{IMAGE_SIZE, NUM_CLASSES};

/// Name of the embedded source dataset.
pub const EMBEDDED_MNIST: &str = "embedded-mnist";
/// Name of the embedded synthetic colour target dataset.
pub const EMBEDDED_MNISTM: &str = "embedded-mnistm";
/// Both names.
pub const NAMES: [&str; 2] = [EMBEDDED_MNIST, EMBEDDED_MNISTM];

/// Seed of the fixed split of mnist5k into source and target parts ("gtasplit").
pub const SPLIT_SEED: u64 = 0x6774_6173_706c_6974;
/// Seed of the target textures ("gtatextr").
pub const TEXTURE_SEED: u64 = 0x6774_6174_6578_7472;

static IMAGES_GZ: &[u8] = include_bytes!("../../data/mnist5k/images.idx3-ubyte.gz");
static LABELS_GZ: &[u8] = include_bytes!("../../data/mnist5k/labels.idx1-ubyte.gz");

/// The rows of mnist5k in each part of the split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitPlan {
    pub source_train: Vec<usize>,
    pub source_val: Vec<usize>,
    pub target_train: Vec<usize>,
    pub target_test: Vec<usize>,
}

/// The fixed split of a label list (see the module documentation).
pub fn split_plan(labels: &[u8]) -> SplitPlan {
    let mut parts: [Vec<usize>; 4] = Default::default();
    for class in 0..NUM_CLASSES {
        let mut rows: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] as usize == class)
            .collect();
        SplitMix64::for_stream(SPLIT_SEED, class as u64).shuffle(&mut rows);
        let n = rows.len();
        let cuts = [n * 2 / 5, n * 2 / 5 + n / 10, n * 4 / 5 + n / 10, n];
        let mut start = 0;
        for (part, &end) in parts.iter_mut().zip(&cuts) {
            part.extend_from_slice(&rows[start..end]);
            start = end;
        }
    }
    for (k, part) in parts.iter_mut().enumerate() {
        SplitMix64::for_stream(SPLIT_SEED, 100 + k as u64).shuffle(part);
    }
    let [source_train, source_val, target_train, target_test] = parts;
    SplitPlan {
        source_train,
        source_val,
        target_train,
        target_test,
    }
}

fn gunzip(gz: &[u8], what: &str) -> std::result::Result<Vec<u8>, String> {
    let mut v = Vec::new();
    GzDecoder::new(gz)
        .read_to_end(&mut v)
        .map_err(|e| format!("{what}: cannot decompress the embedded copy: {e}"))?;
    Ok(v)
}

/// The 5,000 embedded MNIST digits (28×28) and their labels, in mnist5k's row order.
pub fn mnist5k() -> Result<(Images, Labels)> {
    let origin = PathBuf::from("embedded mnist5k");
    let im = gunzip(IMAGES_GZ, "images.idx3-ubyte").map_err(|e| DataError::invalid(&origin, e))?;
    let lb = gunzip(LABELS_GZ, "labels.idx1-ubyte").map_err(|e| DataError::invalid(&origin, e))?;
    let images = Images::from_idx(IdxArray::from_bytes(
        Bytes::from_vec(im),
        origin.join("images.idx3-ubyte"),
    )?)?;
    let labels = Labels::from_idx(IdxArray::from_bytes(
        Bytes::from_vec(lb),
        origin.join("labels.idx1-ubyte"),
    )?)?;
    if images.len() != labels.len() {
        return Err(DataError::invalid(
            &origin,
            format!("{} images but {} labels", images.len(), labels.len()),
        ));
    }
    Ok((images, labels))
}

fn gather(images: &Images, labels: &Labels, rows: &[usize], origin: &str) -> Result<Split> {
    let l = images.image_len();
    let mut px = Vec::with_capacity(rows.len() * l);
    for &r in rows {
        px.extend_from_slice(images.image(r));
    }
    let [_, c, h, w] = images.dims();
    let lb = rows.iter().map(|&r| labels.as_slice()[r]).collect();
    Split::new(
        Images::from_vec(px, [rows.len(), c, h, w], format!("{origin}/images"))?,
        Labels::from_vec(lb, format!("{origin}/labels"))?,
    )
}

/// Smooth step for value-noise interpolation.
fn fade(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

/// The procedural colour background for texture stream `key`: 3×32×32 values in [0, 1].
pub fn texture(key: u64) -> Vec<f32> {
    let s = IMAGE_SIZE;
    let mut rng = SplitMix64::for_stream(TEXTURE_SEED, key);
    let mut out = vec![0f32; 3 * s * s];

    // Value noise: a (g+1)×(g+1) grid of random colours, interpolated. Each image has its own
    // tint; grid colours vary mostly in brightness around it, a little in hue, so that images
    // look like colourful photographs rather than noise.
    let g = 2 + rng.below(4) as usize; // 2..=5 cells across
    let tint: [f32; 3] = std::array::from_fn(|_| rng.next_f64() as f32);
    let chroma = 0.15 + 0.35 * rng.next_f64() as f32;
    let grid: Vec<[f32; 3]> = (0..(g + 1) * (g + 1))
        .map(|_| {
            let light = 0.3 + 0.7 * rng.next_f64() as f32;
            std::array::from_fn(|c| {
                light * ((1.0 - chroma) * tint[c] + chroma * rng.next_f64() as f32)
                    + 0.15 * rng.next_f64() as f32
            })
        })
        .collect();

    // Two gratings with random direction, frequency (1 to 4 cycles across), phase, and an
    // amplitude that is mostly shared by the channels.
    let gratings: Vec<(f32, f32, f32, [f32; 3])> = (0..2)
        .map(|_| {
            let theta = (rng.next_f64() * std::f64::consts::PI) as f32;
            let freq = (1.0 + 3.0 * rng.next_f64()) as f32 * std::f32::consts::TAU / s as f32;
            let phase = (rng.next_f64() * std::f64::consts::TAU) as f32;
            let shared = (rng.next_f64() as f32 - 0.5) * 0.3;
            let amp = std::array::from_fn(|_| shared + (rng.next_f64() as f32 - 0.5) * 0.12);
            (theta, freq, phase, amp)
        })
        .collect();

    let cell = s as f32 / g as f32;
    for y in 0..s {
        for x in 0..s {
            let gx = x as f32 / cell;
            let gy = y as f32 / cell;
            let (ix, iy) = ((gx as usize).min(g - 1), (gy as usize).min(g - 1));
            let (tx, ty) = (fade(gx - ix as f32), fade(gy - iy as f32));
            let at = |i: usize, j: usize| grid[j * (g + 1) + i];
            for c in 0..3 {
                let top = at(ix, iy)[c] * (1.0 - tx) + at(ix + 1, iy)[c] * tx;
                let bot = at(ix, iy + 1)[c] * (1.0 - tx) + at(ix + 1, iy + 1)[c] * tx;
                let mut v = top * (1.0 - ty) + bot * ty;
                for &(theta, freq, phase, amp) in &gratings {
                    let u = x as f32 * theta.cos() + y as f32 * theta.sin();
                    v += amp[c] * (u * freq + phase).sin();
                }
                out[c * s * s + y * s + x] = v.clamp(0.0, 1.0);
            }
        }
    }
    out
}

/// One target image: `digit` (H×W gray, resized to 32×32 by `resizer`) blended over the
/// texture of stream `key` as MNIST-M does, `|background − digit|` per channel. Writes
/// 3×32×32 u8 into `out`.
pub fn mnistm_image(digit: &[u8], resizer: &Resizer, key: u64, out: &mut [u8]) {
    let plane = IMAGE_SIZE * IMAGE_SIZE;
    let mut d = vec![0u8; plane];
    resizer.plane(digit, &mut d, &mut Vec::new());
    let bg = texture(key);
    for c in 0..3 {
        for i in 0..plane {
            let b = (bg[c * plane + i] * 255.0).round();
            out[c * plane + i] = (b - d[i] as f32).abs() as u8;
        }
    }
}

struct Pair {
    mnist: Dataset,
    mnistm: Dataset,
}

fn build() -> Result<Pair> {
    let (images, labels) = mnist5k()?;
    let plan = split_plan(labels.as_slice());
    let mnist = Dataset {
        name: EMBEDDED_MNIST.into(),
        train: gather(&images, &labels, &plan.source_train, "embedded-mnist/train")?,
        test: gather(&images, &labels, &plan.source_val, "embedded-mnist/test")?,
    };
    let resizer = Resizer::new(images.height(), images.width(), IMAGE_SIZE, IMAGE_SIZE);
    let colour = |rows: &[usize], origin: &str| -> Result<Split> {
        let mut px = vec![0u8; rows.len() * IMAGE_VALUES];
        for (out, &r) in px.chunks_exact_mut(IMAGE_VALUES).zip(rows) {
            mnistm_image(images.image(r), &resizer, r as u64, out);
        }
        let lb = rows.iter().map(|&r| labels.as_slice()[r]).collect();
        Split::new(
            Images::from_vec(
                px,
                [rows.len(), 3, IMAGE_SIZE, IMAGE_SIZE],
                format!("{origin}/images"),
            )?,
            Labels::from_vec(lb, format!("{origin}/labels"))?,
        )
    };
    let mnistm = Dataset {
        name: EMBEDDED_MNISTM.into(),
        train: colour(&plan.target_train, "embedded-mnistm/train")?,
        test: colour(&plan.target_test, "embedded-mnistm/test")?,
    };
    Ok(Pair { mnist, mnistm })
}

static PAIR: OnceLock<std::result::Result<Pair, String>> = OnceLock::new();

/// The embedded dataset called `name` (`embedded-mnist` or `embedded-mnistm`), built at first
/// use and shared afterwards (cloning a dataset shares its pixels).
pub fn load(name: &str) -> Result<Dataset> {
    let pair = PAIR
        .get_or_init(|| build().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| DataError::dataset(name, e))?;
    match name {
        EMBEDDED_MNIST => Ok(pair.mnist.clone()),
        EMBEDDED_MNISTM => Ok(pair.mnistm.clone()),
        _ => Err(DataError::dataset(
            name,
            format!("not an embedded dataset (those are {EMBEDDED_MNIST} and {EMBEDDED_MNISTM})"),
        )),
    }
}
