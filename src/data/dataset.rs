//! Datasets in memory: images (u8, N×C×H×W, contiguous), labels (u8, 0–9), splits, and the
//! directory layout `train-images.idx`, `train-labels.idx`, `test-images.idx`, `test-labels.idx`.

use std::path::{Path, PathBuf};

use super::bytes::Bytes;
use super::error::{DataError, Result};
use super::idx::IdxArray;
use super::NUM_CLASSES;

/// File names of the dataset directory layout.
pub const TRAIN_IMAGES: &str = "train-images.idx";
pub const TRAIN_LABELS: &str = "train-labels.idx";
pub const TEST_IMAGES: &str = "test-images.idx";
pub const TEST_LABELS: &str = "test-labels.idx";

/// u8 images, N×C×H×W row-major (channel-planar), contiguous so they can be uploaded as is.
#[derive(Clone, Debug)]
pub struct Images {
    bytes: Bytes,
    offset: usize,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    origin: PathBuf,
}

impl Images {
    /// Images from a validated IDX array: rank 3 (N×H×W, gray) or rank 4 (N×C×H×W, C = 1 or 3).
    pub fn from_idx(idx: IdxArray) -> Result<Images> {
        let (bytes, offset, dims, origin) = idx.into_parts();
        let (n, c, h, w) = match dims[..] {
            [n, h, w] => (n, 1, h, w),
            [n, c, h, w] => (n, c, h, w),
            _ => {
                return Err(DataError::invalid(
                    &origin,
                    format!(
                        "an image file must have rank 3 (N×H×W) or 4 (N×C×H×W), this one has \
                         rank {} (dimensions {dims:?}){}",
                        dims.len(),
                        if dims.len() == 1 {
                            " — is it a label file?"
                        } else {
                            ""
                        }
                    ),
                ))
            }
        };
        if c != 1 && c != 3 {
            return Err(DataError::invalid(
                &origin,
                format!("{c} channels: images must be gray (1) or RGB (3), dimensions {dims:?}"),
            ));
        }
        if h == 0 || w == 0 {
            return Err(DataError::invalid(
                &origin,
                format!("images of size {h}×{w}: height and width must be at least 1"),
            ));
        }
        Ok(Images {
            bytes,
            offset,
            n,
            c,
            h,
            w,
            origin,
        })
    }

    /// Images from owned pixels, N×C×H×W.
    pub fn from_vec(
        pixels: Vec<u8>,
        [n, c, h, w]: [usize; 4],
        origin: impl Into<PathBuf>,
    ) -> Result<Images> {
        let origin = origin.into();
        let count = [n, c, h, w]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d));
        if count != Some(pixels.len()) {
            return Err(DataError::invalid(
                &origin,
                format!("{} pixels do not fill {n}×{c}×{h}×{w} images", pixels.len()),
            ));
        }
        if (c != 1 && c != 3) || h == 0 || w == 0 {
            return Err(DataError::invalid(
                &origin,
                format!("unsupported image shape {c}×{h}×{w}"),
            ));
        }
        Ok(Images {
            bytes: Bytes::from_vec(pixels),
            offset: 0,
            n,
            c,
            h,
            w,
            origin,
        })
    }

    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn channels(&self) -> usize {
        self.c
    }
    pub fn height(&self) -> usize {
        self.h
    }
    pub fn width(&self) -> usize {
        self.w
    }
    /// N, C, H, W.
    pub fn dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    /// Bytes of one image (C·H·W).
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }
    /// All pixels, N×C×H×W row-major.
    pub fn pixels(&self) -> &[u8] {
        &self.bytes[self.offset..]
    }
    /// One image, C×H×W. Panics if `i >= len()` (an index the caller controls, not file data).
    pub fn image(&self, i: usize) -> &[u8] {
        let l = self.image_len();
        &self.pixels()[i * l..(i + 1) * l]
    }
    /// Where the images came from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }
    /// Whether the pixels are a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        self.bytes.is_mapped()
    }
}

/// Class labels, N u8 values in 0–9.
#[derive(Clone, Debug)]
pub struct Labels {
    bytes: Bytes,
    offset: usize,
    n: usize,
    origin: PathBuf,
}

impl Labels {
    /// Labels from a validated IDX array: rank 1, every value below 10.
    pub fn from_idx(idx: IdxArray) -> Result<Labels> {
        let (bytes, offset, dims, origin) = idx.into_parts();
        if dims.len() != 1 {
            return Err(DataError::invalid(
                &origin,
                format!(
                    "a label file must have rank 1, this one has rank {} (dimensions {dims:?}){}",
                    dims.len(),
                    if dims.len() >= 3 {
                        " — is it an image file?"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Self::checked(bytes, offset, dims[0], origin)
    }

    /// Labels from owned values.
    pub fn from_vec(labels: Vec<u8>, origin: impl Into<PathBuf>) -> Result<Labels> {
        let n = labels.len();
        Self::checked(Bytes::from_vec(labels), 0, n, origin.into())
    }

    fn checked(bytes: Bytes, offset: usize, n: usize, origin: PathBuf) -> Result<Labels> {
        if let Some((i, &v)) = bytes[offset..offset + n]
            .iter()
            .enumerate()
            .find(|(_, &v)| v as usize >= NUM_CLASSES)
        {
            return Err(DataError::invalid(
                &origin,
                format!("label {v} at index {i} is out of range (labels are 0 to 9)"),
            ));
        }
        Ok(Labels {
            bytes,
            offset,
            n,
            origin,
        })
    }

    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.offset..self.offset + self.n]
    }
    pub fn origin(&self) -> &Path {
        &self.origin
    }
    /// How many labels of each class.
    pub fn histogram(&self) -> [usize; NUM_CLASSES] {
        let mut h = [0; NUM_CLASSES];
        for &l in self.as_slice() {
            h[l as usize] += 1;
        }
        h
    }
}

/// Images with one label each.
#[derive(Clone, Debug)]
pub struct Split {
    pub images: Images,
    pub labels: Labels,
}

impl Split {
    /// Pairs images with labels; their counts must agree and there must be at least one image.
    pub fn new(images: Images, labels: Labels) -> Result<Split> {
        if images.len() != labels.len() {
            return Err(DataError::invalid(
                images.origin(),
                format!(
                    "holds {} images but {} holds {} labels",
                    images.len(),
                    labels.origin().display(),
                    labels.len()
                ),
            ));
        }
        if images.is_empty() {
            return Err(DataError::invalid(images.origin(), "holds no images"));
        }
        Ok(Split { images, labels })
    }

    /// Opens and validates an image file and a label file.
    pub fn open(images: &Path, labels: &Path) -> Result<Split> {
        let im = Images::from_idx(IdxArray::open(images)?)?;
        let lb = Labels::from_idx(IdxArray::open(labels)?)?;
        Split::new(im, lb)
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

/// A named dataset: a training split and a test split.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub train: Split,
    /// The held-out split. For `embedded-mnist` this is the source *validation* split.
    pub test: Split,
}

impl Dataset {
    /// Opens a dataset directory (`train-images.idx`, `train-labels.idx`, `test-images.idx`,
    /// `test-labels.idx`), memory-mapping and validating each file.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Dataset> {
        let dir = dir.as_ref();
        let meta = std::fs::metadata(dir).map_err(|e| DataError::io(dir, e))?;
        if !meta.is_dir() {
            return Err(DataError::invalid(
                dir,
                format!(
                    "is not a directory: a dataset is a directory holding {TRAIN_IMAGES}, \
                     {TRAIN_LABELS}, {TEST_IMAGES} and {TEST_LABELS}"
                ),
            ));
        }
        let missing: Vec<&str> = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS]
            .into_iter()
            .filter(|f| !dir.join(f).exists())
            .collect();
        if !missing.is_empty() {
            return Err(DataError::invalid(
                dir,
                format!(
                    "not a dataset directory: missing {} (a dataset holds {TRAIN_IMAGES}, \
                     {TRAIN_LABELS}, {TEST_IMAGES} and {TEST_LABELS})",
                    missing.join(", ")
                ),
            ));
        }
        let train = Split::open(&dir.join(TRAIN_IMAGES), &dir.join(TRAIN_LABELS))?;
        let test = Split::open(&dir.join(TEST_IMAGES), &dir.join(TEST_LABELS))?;
        Ok(Dataset {
            name: dir.display().to_string(),
            train,
            test,
        })
    }

    /// The split called `train` or `test`.
    pub fn split(&self, which: SplitKind) -> &Split {
        match which {
            SplitKind::Train => &self.train,
            SplitKind::Test => &self.test,
        }
    }
}

/// Which split of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitKind {
    Train,
    Test,
}

impl SplitKind {
    pub fn name(self) -> &'static str {
        match self {
            SplitKind::Train => "train",
            SplitKind::Test => "test",
        }
    }
}

/// Writes a split into a dataset directory as `<prefix>-images.idx` and `<prefix>-labels.idx`
/// (gray N×H×W when C = 1, else N×C×H×W), atomically.
pub fn write_split(dir: &Path, which: SplitKind, images: &Images, labels: &Labels) -> Result<()> {
    let (fi, fl) = match which {
        SplitKind::Train => (TRAIN_IMAGES, TRAIN_LABELS),
        SplitKind::Test => (TEST_IMAGES, TEST_LABELS),
    };
    let [n, c, h, w] = images.dims();
    let dims: Vec<usize> = if c == 1 {
        vec![n, h, w]
    } else {
        vec![n, c, h, w]
    };
    super::idx::write_idx(dir.join(fi), &dims, images.pixels())?;
    super::idx::write_idx(dir.join(fl), &[labels.len()], labels.as_slice())
}
