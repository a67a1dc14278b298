//! Conversion of the official files into the dataset directory layout.
//!
//! - MNIST: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
//!   `t10k-labels-idx1-ubyte`, gzip-compressed (`.gz`) or plain. Images and labels are told
//!   apart by their rank, training and test files by their names ("train" / "t10k" or
//!   "test"). Images stay 28×28 gray (resizing happens on the way into a batch).
//! - SVHN (cropped digits): `train_32x32.mat` and `test_32x32.mat`, MATLAB level-5 files with
//!   `X`, 32×32×3×N uint8 in column-major order (X(h, w, c, n)), and `y`, N×1, where 10 means
//!   the digit 0. Converted to N×3×32×32 channel-planar row-major images: pixel (n, c, h, w) of
//!   the output is X(h, w, c, n).

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::bytes::Bytes;
use super::dataset::{write_split, Images, Labels, Split, SplitKind};
use super::error::{DataError, Result};
use super::idx::IdxArray;
use super::mat::{self, MatOptions};

/// The kinds of official files `import` understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Mnist,
    Svhn,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Mnist => "mnist",
            Format::Svhn => "svhn",
        }
    }
}

/// What an import wrote.
#[derive(Clone, Debug)]
pub struct ImportReport {
    pub dir: PathBuf,
    /// Images in the train and test splits.
    pub train: usize,
    pub test: usize,
    /// C, H, W of the images.
    pub image_shape: [usize; 3],
}

/// Refuse to inflate a gzip file beyond this (MNIST's largest file is 47 MB).
const MAX_GUNZIP_BYTES: u64 = 4 << 30;

/// Reads an IDX file, gzip-compressed (detected by its magic bytes) or plain.
pub fn read_idx_maybe_gz(path: &Path) -> Result<IdxArray> {
    let bytes = Bytes::map_file(path)?;
    if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
        let mut v = Vec::new();
        GzDecoder::new(&bytes[..])
            .take(MAX_GUNZIP_BYTES)
            .read_to_end(&mut v)
            .map_err(|e| {
                DataError::invalid(path, format!("cannot decompress this gzip file: {e}"))
            })?;
        return IdxArray::from_bytes(Bytes::from_vec(v), path).map_err(|e| match e {
            DataError::Invalid { path, problem } => DataError::Invalid {
                path,
                problem: format!("after gzip decompression: {problem}"),
            },
            other => other,
        });
    }
    IdxArray::from_bytes(bytes, path)
}

/// Which split a file belongs to, from its name.
fn split_of_name(path: &Path) -> Result<SplitKind> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let train = name.contains("train");
    let test = name.contains("t10k") || name.contains("test");
    match (train, test) {
        (true, false) => Ok(SplitKind::Train),
        (false, true) => Ok(SplitKind::Test),
        _ => Err(DataError::invalid(
            path,
            "cannot tell from the file name whether this is the training or the test split \
             (expected \"train\", or \"t10k\"/\"test\", in the name)",
        )),
    }
}

fn ensure_out_dir(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(DataError::invalid(
            out,
            "exists and is not a directory (the output of an import is a dataset directory)",
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| DataError::io(out, e))
}

/// Imports the four MNIST files (gzip or plain IDX) into the dataset directory `out`.
pub fn import_mnist(files: &[PathBuf], out: &Path) -> Result<ImportReport> {
    let mut slots: [[Option<(PathBuf, IdxArray)>; 2]; 2] = Default::default(); // [split][images, labels]
    for f in files {
        let split = split_of_name(f)?;
        let idx = read_idx_maybe_gz(f)?;
        let kind = match idx.rank() {
            1 => 1,
            3 | 4 => 0,
            r => {
                return Err(DataError::invalid(
                    f,
                    format!(
                        "rank {r} (dimensions {:?}): neither an image file (rank 3) nor a label \
                         file (rank 1)",
                        idx.dims()
                    ),
                ))
            }
        };
        let si = split as usize;
        if let Some((prev, _)) = &slots[si][kind] {
            return Err(DataError::invalid(
                f,
                format!(
                    "a second {} {} file (the first was {})",
                    split.name(),
                    ["image", "label"][kind],
                    prev.display()
                ),
            ));
        }
        slots[si][kind] = Some((f.clone(), idx));
    }
    let mut splits = Vec::new();
    for (si, split) in [SplitKind::Train, SplitKind::Test].into_iter().enumerate() {
        let [im, lb] = std::mem::take(&mut slots[si]);
        let (im, lb) = match (im, lb) {
            (Some((_, im)), Some((_, lb))) => (im, lb),
            (im, _) => {
                return Err(DataError::dataset(
                    "mnist",
                    format!(
                        "missing the {} {} file; an MNIST import needs train-images-idx3-ubyte, \
                         train-labels-idx1-ubyte, t10k-images-idx3-ubyte and \
                         t10k-labels-idx1-ubyte (.gz or plain)",
                        split.name(),
                        if im.is_none() { "image" } else { "label" }
                    ),
                ))
            }
        };
        splits.push((
            split,
            Split::new(Images::from_idx(im)?, Labels::from_idx(lb)?)?,
        ));
    }
    write_dataset(out, splits)
}

fn write_dataset(out: &Path, splits: Vec<(SplitKind, Split)>) -> Result<ImportReport> {
    ensure_out_dir(out)?;
    let mut report = ImportReport {
        dir: out.to_path_buf(),
        train: 0,
        test: 0,
        image_shape: [0; 3],
    };
    for (kind, s) in &splits {
        write_split(out, *kind, &s.images, &s.labels)?;
        let [n, c, h, w] = s.images.dims();
        match kind {
            SplitKind::Train => report.train = n,
            SplitKind::Test => report.test = n,
        }
        report.image_shape = [c, h, w];
    }
    Ok(report)
}

/// Converts the `X` and `y` variables of an SVHN-style `.mat` image (already in memory) into
/// images N×C×H×W and labels (10 → 0). `origin` names the file in errors.
pub fn svhn_from_mat_bytes(
    bytes: &[u8],
    origin: &Path,
    opts: &MatOptions,
) -> Result<(Images, Labels)> {
    let bad = |p: String| DataError::invalid(origin, p);
    let mut file = mat::parse(bytes, &|n| n == "X" || n == "y", opts).map_err(bad)?;
    for name in ["X", "y"] {
        if file.vars.iter().filter(|v| v.name == name).count() > 1 {
            return Err(bad(format!("holds the variable {name} more than once")));
        }
    }
    let (Some(x), Some(y)) = (file.take("X"), file.take("y")) else {
        return Err(bad(format!(
            "expected numeric variables X (images) and y (labels); the file holds {}",
            file.describe()
        )));
    };
    let (h, w, c, n) = match x.dims[..] {
        [h, w, c, n] => (h, w, c, n),
        [h, w, c] => (h, w, c, 1),
        _ => {
            return Err(bad(format!(
                "X has dimensions {:?}; expected H×W×3×N (SVHN: 32×32×3×N)",
                x.dims
            )))
        }
    };
    if c != 3 && c != 1 {
        return Err(bad(format!(
            "X has dimensions {:?}: {c} channels, expected 3 (H×W×3×N)",
            x.dims
        )));
    }
    let ny = y.len();
    if !(y.dims.len() == 2 && (y.dims[0] == 1 || y.dims[1] == 1)) {
        return Err(bad(format!(
            "y has dimensions {:?}; expected N×1 labels",
            y.dims
        )));
    }
    if ny != n {
        return Err(bad(format!("X holds {n} images but y holds {ny} labels")));
    }
    if n == 0 || h == 0 || w == 0 {
        return Err(bad(format!("X has dimensions {:?}: no images", x.dims)));
    }
    let mut px = x.into_u8_exact(0, 255).map_err(bad)?;
    let labels: Vec<u8> = y
        .to_u8_exact(0, 10)
        .map_err(|e| {
            bad(format!(
                "{e} (SVHN labels are 1 to 10, 10 meaning the digit 0)"
            ))
        })?
        .into_iter()
        .map(|l| if l == 10 { 0 } else { l })
        .collect();
    // Column-major X(h, w, c, n): for each (n, c) an H×W plane stored column by column;
    // transpose each plane in place to row-major.
    let plane = h * w;
    let mut tmp = vec![0u8; plane];
    for p in px.chunks_exact_mut(plane) {
        tmp.copy_from_slice(p);
        for (hh, row) in p.chunks_exact_mut(w).enumerate() {
            for (ww, v) in row.iter_mut().enumerate() {
                *v = tmp[ww * h + hh];
            }
        }
    }
    let images = Images::from_vec(px, [n, c, h, w], origin)?;
    let labels = Labels::from_vec(labels, origin)?;
    Ok((images, labels))
}

/// Reads an SVHN `.mat` file (memory-mapped).
pub fn svhn_from_mat(path: &Path) -> Result<(Images, Labels)> {
    let bytes = Bytes::map_file(path)?;
    svhn_from_mat_bytes(&bytes, path, &MatOptions::default())
}

/// Imports SVHN's `train_32x32.mat` and `test_32x32.mat` into the dataset directory `out`.
pub fn import_svhn(files: &[PathBuf], out: &Path) -> Result<ImportReport> {
    let mut slots: [Option<PathBuf>; 2] = Default::default();
    for f in files {
        let split = split_of_name(f)?;
        if let Some(prev) = &slots[split as usize] {
            return Err(DataError::invalid(
                f,
                format!(
                    "a second {} file (the first was {})",
                    split.name(),
                    prev.display()
                ),
            ));
        }
        slots[split as usize] = Some(f.clone());
    }
    let mut splits = Vec::new();
    for (si, split) in [SplitKind::Train, SplitKind::Test].into_iter().enumerate() {
        let Some(f) = &slots[si] else {
            return Err(DataError::dataset(
                "svhn",
                format!(
                    "missing the {} file; an SVHN import needs train_32x32.mat and test_32x32.mat",
                    split.name()
                ),
            ));
        };
        let (im, lb) = svhn_from_mat(f)?;
        splits.push((split, Split::new(im, lb)?));
    }
    write_dataset(out, splits)
}

/// Imports files of the given format into the dataset directory `out`.
pub fn import(format: Format, files: &[PathBuf], out: &Path) -> Result<ImportReport> {
    match format {
        Format::Mnist => import_mnist(files, out),
        Format::Svhn => import_svhn(files, out),
    }
}
