//! IDX files: round trip, and every malformed file gets an error that names it.

use std::path::Path;

use gtadapt::data::dataset::{TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
use gtadapt::data::idx::{parse_header, write_idx, IdxArray};
use gtadapt::data::{DataError, Dataset, Split};

use crate::common::{idx_bytes, pattern};

#[test]
fn round_trip_all_ranks() {
    let dir = tempfile::tempdir().unwrap();
    for dims in [
        vec![7],
        vec![5, 28, 28],
        vec![3, 3, 32, 32],
        vec![2, 1, 4, 9],
    ] {
        let n: usize = dims.iter().product();
        let data: Vec<u8> = (0..n).map(|i| pattern(i, n, 0, 0)).collect();
        let p = dir.path().join(format!("a{}.idx", dims.len()));
        write_idx(&p, &dims, &data).unwrap();
        let a = IdxArray::open(&p).unwrap();
        assert_eq!(a.dims(), &dims[..]);
        assert_eq!(a.data(), &data[..]);
        // The file is exactly the format: magic, big-endian dims, data.
        assert_eq!(std::fs::read(&p).unwrap(), idx_bytes(&dims, &data));
        assert_eq!(
            &std::fs::read(&p).unwrap()[..4],
            &[0, 0, 8, dims.len() as u8]
        );
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
        .unwrap()
        .path()
        .to_string_lossy()
        .ends_with(".part")));
}

#[test]
fn writer_rejects_mismatched_dims() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.idx");
    let e = write_idx(&p, &[2, 3], &[0; 5]).unwrap_err();
    assert!(e.to_string().contains("bad.idx"), "{e}");
    assert!(!p.exists());
}

/// Writes `bytes` as a file and expects opening it to fail with a message naming the file and
/// containing `problem`.
fn expect_bad(bytes: &[u8], problem: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken-file.idx");
    std::fs::write(&p, bytes).unwrap();
    let e = IdxArray::open(&p).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::Invalid { .. }), "{msg}");
    assert!(
        msg.contains("broken-file.idx"),
        "message does not name the file: {msg}"
    );
    assert!(msg.contains(problem), "expected {problem:?} in: {msg}");
    // The same bytes through the pure parser give the same problem.
    assert!(parse_header(bytes).unwrap_err().contains(problem));
}

#[test]
fn malformed_files() {
    let good = idx_bytes(&[2, 3, 4], &[7; 24]);
    expect_bad(&[], "file is empty");
    expect_bad(&[0, 0, 8], "too short");
    // Wrong magic: nonzero leading bytes, a gzip file, a non-u8 element type, rank 0 / huge.
    expect_bad(&[1, 2, 8, 1, 0, 0, 0, 0], "bad magic");
    expect_bad(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0], "gzip");
    let mut f32_file = good.clone();
    f32_file[2] = 0x0D;
    expect_bad(&f32_file, "element type 0x0d");
    expect_bad(&[0, 0, 8, 0], "rank 0");
    expect_bad(&[0, 0, 8, 200, 0, 0, 0, 0], "rank 200");
    // Header cut short.
    expect_bad(&good[..9], "truncated header");
    // Dims whose product overflows usize (2^32-1)^4 and (2^16)^4 = 2^64.
    let mut over = vec![0, 0, 8, 4];
    for _ in 0..4 {
        over.extend_from_slice(&u32::MAX.to_be_bytes());
    }
    expect_bad(&over, "overflow");
    let mut over2 = vec![0, 0, 8, 4];
    for _ in 0..4 {
        over2.extend_from_slice(&65536u32.to_be_bytes());
    }
    expect_bad(&over2, "overflow");
    // Truncated data and trailing bytes.
    expect_bad(&good[..good.len() - 1], "truncated");
    let mut long = good.clone();
    long.push(0);
    expect_bad(&long, "1 trailing bytes");
}

#[test]
fn directory_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = IdxArray::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("is a directory"), "{e}");
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
    let missing = dir.path().join("nope.idx");
    let e = IdxArray::open(&missing).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }));
    assert!(e.to_string().contains("nope.idx"), "{e}");
}

fn write_dataset(dir: &Path, train: (&[usize], &[u8], &[u8]), test_labels: &[u8]) {
    let (dims, px, labels) = train;
    write_idx(dir.join(TRAIN_IMAGES), dims, px).unwrap();
    write_idx(dir.join(TRAIN_LABELS), &[labels.len()], labels).unwrap();
    write_idx(dir.join(TEST_IMAGES), &[2, 4, 4], &[0; 32]).unwrap();
    write_idx(dir.join(TEST_LABELS), &[test_labels.len()], test_labels).unwrap();
}

#[test]
fn labels_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), (&[3, 4, 4], &[0; 48], &[1, 9, 10]), &[0, 1]);
    let e = Dataset::open_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains(TRAIN_LABELS), "{e}");
    assert!(e.contains("label 10 at index 2"), "{e}");
}

#[test]
fn label_image_count_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), (&[3, 4, 4], &[0; 48], &[1, 2, 3]), &[0, 1, 2]);
    let e = Dataset::open_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains(TEST_IMAGES) && e.contains(TEST_LABELS), "{e}");
    assert!(
        e.contains("holds 2 images but") && e.contains("holds 3 labels"),
        "{e}"
    );
}

#[test]
fn wrong_ranks_and_channels() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_idx(d.join("labels-as-images.idx"), &[4], &[0; 4]).unwrap();
    write_idx(d.join("labels.idx"), &[4], &[0; 4]).unwrap();
    let e = Split::open(&d.join("labels-as-images.idx"), &d.join("labels.idx"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("labels-as-images.idx") && e.contains("rank 3"),
        "{e}"
    );
    write_idx(d.join("two-channels.idx"), &[4, 2, 3, 3], &[0; 72]).unwrap();
    let e = Split::open(&d.join("two-channels.idx"), &d.join("labels.idx"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("two-channels.idx") && e.contains("2 channels"),
        "{e}"
    );
    write_idx(d.join("images.idx"), &[4, 3, 3], &[0; 36]).unwrap();
    let e = Split::open(&d.join("labels.idx"), &d.join("images.idx"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("labels.idx"), "{e}");
}

#[test]
fn dataset_directory_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = Dataset::open_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("missing") && e.contains(TRAIN_IMAGES), "{e}");
    let f = dir.path().join("file");
    std::fs::write(&f, b"x").unwrap();
    let e = Dataset::open_dir(&f).unwrap_err().to_string();
    assert!(e.contains("is not a directory"), "{e}");
    // A directory where a file should be.
    std::fs::create_dir(dir.path().join(TRAIN_IMAGES)).unwrap();
    for name in [TRAIN_LABELS, TEST_IMAGES, TEST_LABELS] {
        std::fs::write(dir.path().join(name), idx_bytes(&[1], &[0])).unwrap();
    }
    let e = Dataset::open_dir(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains(TRAIN_IMAGES) && e.contains("is a directory"),
        "{e}"
    );
}

#[test]
fn dataset_round_trip_memory_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let px: Vec<u8> = (0..3 * 16).map(|i| i as u8).collect();
    write_dataset(dir.path(), (&[3, 4, 4], &px, &[3, 1, 4]), &[1, 5]);
    let d = Dataset::open_dir(dir.path()).unwrap();
    assert_eq!(d.train.images.dims(), [3, 1, 4, 4]);
    // (Under Miri, which cannot map files, the bytes are read instead.)
    assert_eq!(d.train.images.is_mapped(), !cfg!(miri));
    assert_eq!(d.train.images.image(1), &px[16..32]);
    assert_eq!(d.train.labels.as_slice(), &[3, 1, 4]);
    assert_eq!(d.test.labels.histogram()[5], 1);
    // Named by its path through the generic opener too.
    let d2 = gtadapt::data::open(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(d2.train.len(), 3);
}

#[test]
fn unknown_dataset_name() {
    let e = gtadapt::data::open("no-such-dataset-xyz")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no-such-dataset-xyz") && e.contains("embedded-mnist"),
        "{e}"
    );
}
