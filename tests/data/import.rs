//! `data import`: MNIST (gzip or plain) and SVHN files into the dataset layout.

use std::path::PathBuf;

use gtadapt::data::import::{import, Format};
use gtadapt::data::Dataset;

use crate::common::*;

fn write_mnist(dir: &std::path::Path, gz: bool) -> Vec<PathBuf> {
    mnist_like(12, 7)
        .iter()
        .zip(MNIST_NAMES)
        .map(|(b, name)| {
            let (p, data) = if gz {
                (dir.join(format!("{name}.gz")), gzip(b))
            } else {
                (dir.join(name), b.clone())
            };
            std::fs::write(&p, data).unwrap();
            p
        })
        .collect()
}

#[test]
fn mnist_gzip_and_plain() {
    let files = mnist_like(12, 7);
    for gz in [true, false] {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut paths = write_mnist(src.path(), gz);
        paths.reverse(); // the order of the arguments does not matter
        let r = import(Format::Mnist, &paths, out.path()).unwrap();
        assert_eq!((r.train, r.test, r.image_shape), (12, 7, [1, 28, 28]));
        let d = Dataset::open_dir(out.path()).unwrap();
        assert_eq!(d.train.images.pixels(), &files[0][16..]);
        assert_eq!(d.train.labels.as_slice(), &files[1][8..]);
        assert_eq!(d.test.images.pixels(), &files[2][16..]);
        assert_eq!(d.test.labels.as_slice(), &files[3][8..]);
        no_part_files(out.path());
    }
}

#[test]
fn mnist_errors_name_the_file() {
    let src = tempfile::tempdir().unwrap();
    let out = src.path().join("out");
    let paths = write_mnist(src.path(), true);
    // A missing file.
    let e = import(Format::Mnist, &paths[..3], &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing the test label file"), "{e}");
    // A file whose name says neither train nor test.
    let odd = src.path().join("digits.gz");
    std::fs::copy(&paths[0], &odd).unwrap();
    let e = import(Format::Mnist, std::slice::from_ref(&odd), &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("digits.gz") && e.contains("cannot tell"), "{e}");
    // A truncated gzip file.
    let trunc = src.path().join("train-images-idx3-ubyte.gz");
    let b = std::fs::read(&trunc).unwrap();
    std::fs::write(&trunc, &b[..b.len() / 2]).unwrap();
    let e = import(Format::Mnist, &paths, &out).unwrap_err().to_string();
    assert!(
        e.contains("train-images-idx3-ubyte.gz") && e.contains("gzip"),
        "{e}"
    );
    // A gzip file whose content is not IDX.
    std::fs::write(&trunc, gzip(b"hello world, not an idx file")).unwrap();
    let e = import(Format::Mnist, &paths, &out).unwrap_err().to_string();
    assert!(
        e.contains("train-images-idx3-ubyte.gz") && e.contains("after gzip decompression"),
        "{e}"
    );
    assert!(!out.join("train-images.idx").exists());
}

#[test]
fn svhn_train_and_test() {
    let src = tempfile::tempdir().unwrap();
    let out = src.path().join("svhn");
    let st = MatStyle {
        big_endian: false,
        compressed: true,
        small_names: true,
    };
    let (x, y) = svhn_vars(32, 32, 4, &[10, 3, 2, 1], MI_UINT8);
    std::fs::write(src.path().join("train_32x32.mat"), mat_file(&[x, y], st)).unwrap();
    let (x, y) = svhn_vars(32, 32, 2, &[7, 10], MI_DOUBLE);
    std::fs::write(src.path().join("test_32x32.mat"), mat_file(&[y, x], st)).unwrap();
    let files = vec![
        src.path().join("test_32x32.mat"),
        src.path().join("train_32x32.mat"),
    ];
    let r = import(Format::Svhn, &files, &out).unwrap();
    assert_eq!((r.train, r.test, r.image_shape), (4, 2, [3, 32, 32]));
    let d = Dataset::open_dir(&out).unwrap();
    assert_eq!(d.train.labels.as_slice(), &[0, 3, 2, 1]);
    assert_eq!(d.test.labels.as_slice(), &[7, 0]);
    assert_eq!(
        d.test.images.image(1)[2 * 1024 + 5 * 32 + 9],
        pattern(1, 2, 5, 9)
    );
    // Only one file: a clear error.
    let e = import(Format::Svhn, &files[..1], &src.path().join("o2"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing the train file"), "{e}");
}
