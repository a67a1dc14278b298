//! Datasets: memory-mapped IDX files, MNIST and SVHN fetch and import, the embedded default
//! pair, and batching.
//!
//! - [`idx`]: the IDX format (MNIST's): validation, memory-mapped reading, atomic writing.
//! - [`dataset`]: images (u8, N×C×H×W, contiguous), labels (0–9), splits, and the dataset
//!   directory layout `train-images.idx`, `train-labels.idx`, `test-images.idx`,
//!   `test-labels.idx`.
//! - [`mat`]: MATLAB level-5 MAT-files (SVHN's `.mat`), zlib-compressed elements included.
//! - [`import`]: MNIST (gzip or plain IDX) and SVHN (`.mat`) files → a dataset directory.
//! - [`fetch`]: download the official files (SHA-256 verified, atomic) and import them.
//! - [`embedded`]: `embedded-mnist` and `embedded-mnistm`, built into the binary.
//! - [`resize`], [`batch`]: Pillow-exact bilinear resize to 32×32, gray → RGB, normalization,
//!   shuffled/drop-last training batches and full-pass evaluation batches, prepared on a
//!   background thread.
//! - [`inspect`], [`preview`]: statistics and labelled PNG grids.
//! - [`perm`]: splitmix64 and Fisher–Yates for the fixed split and the epoch shuffles.
//!
//! A dataset is named by [`open`]: `embedded-mnist`, `embedded-mnistm`, `mnist` or `svhn`
//! (fetched into the data root, see [`data_root`]), or the path of a dataset directory.

pub mod batch;
pub mod bytes;
pub mod dataset;
pub mod embedded;
pub mod error;
pub mod fetch;
pub mod idx;
pub mod import;
pub mod inspect;
pub mod mat;
pub mod perm;
pub mod preview;
pub mod resize;

use std::path::{Path, PathBuf};

pub use batch::{Batch, Batcher, Order};
pub use dataset::{Dataset, Images, Labels, Split, SplitKind};
pub use error::{DataError, Result};

/// Number of classes (digits 0–9).
pub const NUM_CLASSES: usize = 10;
/// Side of the images the networks see.
pub const IMAGE_SIZE: usize = 32;
/// Per-channel normalization of the authors' transforms.
pub const MEAN: f32 = 0.44;
pub const STD: f32 = 0.19;

/// The environment variable that overrides the data root.
pub const DATA_DIR_ENV: &str = "GTADAPT_DATA_DIR";

/// Where `data fetch` puts datasets and where the names `mnist` and `svhn` are looked up:
/// `$GTADAPT_DATA_DIR`, or `datasets` in the current directory.
pub fn data_root() -> PathBuf {
    match std::env::var_os(DATA_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("datasets"),
    }
}

/// Opens the dataset named `spec`: an embedded name, `mnist` / `svhn` (as fetched into
/// [`data_root`]), or a dataset directory.
pub fn open(spec: &str) -> Result<Dataset> {
    if embedded::NAMES.contains(&spec) {
        return embedded::load(spec);
    }
    let path = Path::new(spec);
    if path.is_dir() {
        return Dataset::open_dir(path);
    }
    if let Some(kind) = fetch::Source::from_name(spec) {
        let dir = data_root().join(kind.name());
        if dir.is_dir() {
            return Dataset::open_dir(&dir);
        }
        return Err(DataError::dataset(
            spec,
            format!(
                "not downloaded yet: run `gtadapt data fetch {spec}` (looked in {}; set {DATA_DIR_ENV} \
                 to use another data root)",
                dir.display()
            ),
        ));
    }
    if path.exists() {
        return Dataset::open_dir(path); // names the file and says it is not a directory
    }
    Err(DataError::dataset(
        spec,
        format!(
            "no such dataset: expected {}, {}, mnist, svhn, or a directory holding {}, {}, {} and {}",
            embedded::EMBEDDED_MNIST,
            embedded::EMBEDDED_MNISTM,
            dataset::TRAIN_IMAGES,
            dataset::TRAIN_LABELS,
            dataset::TEST_IMAGES,
            dataset::TEST_LABELS
        ),
    ))
}
