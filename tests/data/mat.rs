//! MATLAB level-5 files: SVHN-style X and y in every element style, exact pixels, and errors.

use std::path::Path;

use gtadapt::data::idx::IdxArray;
use gtadapt::data::import::{svhn_from_mat, svhn_from_mat_bytes};
use gtadapt::data::mat::{self, MatOptions};

use crate::common::*;

const LABELS: [u8; 5] = [10, 1, 9, 5, 10];

/// Imports `bytes` and checks every pixel against pattern(n, c, h, w) and the labels.
fn check_exact(bytes: &[u8], h: usize, w: usize, n: usize, labels: &[u8]) {
    let (images, lab) =
        svhn_from_mat_bytes(bytes, Path::new("test.mat"), &MatOptions::default()).unwrap();
    assert_eq!(images.dims(), [n, 3, h, w]);
    let px = images.pixels();
    for nn in 0..n {
        for c in 0..3 {
            for hh in 0..h {
                for ww in 0..w {
                    let got = px[((nn * 3 + c) * h + hh) * w + ww];
                    assert_eq!(
                        got,
                        pattern(nn, c, hh, ww),
                        "pixel (n {nn}, c {c}, h {hh}, w {ww})"
                    );
                }
            }
        }
    }
    let want: Vec<u8> = labels
        .iter()
        .map(|&l| if l == 10 { 0 } else { l })
        .collect();
    assert_eq!(lab.as_slice(), &want[..]);
}

#[test]
fn every_style_and_order_imports_exactly() {
    for compressed in [true, false] {
        for big_endian in [false, true] {
            for small_names in [true, false] {
                for y_type in [MI_UINT8, MI_DOUBLE] {
                    for y_first in [false, true] {
                        let (x, y) = svhn_vars(32, 32, 5, &LABELS, y_type);
                        let vars = if y_first { vec![y, x] } else { vec![x, y] };
                        let style = MatStyle {
                            big_endian,
                            compressed,
                            small_names,
                        };
                        check_exact(&mat_file(&vars, style), 32, 32, 5, &LABELS);
                    }
                }
            }
        }
    }
}

#[test]
fn non_square_images_keep_rows_and_columns() {
    // 20 rows × 24 columns: a transposed import would have the wrong shape and pixels.
    let (x, y) = svhn_vars(20, 24, 3, &[1, 2, 3], MI_DOUBLE);
    let style = MatStyle {
        big_endian: false,
        compressed: true,
        small_names: true,
    };
    check_exact(&mat_file(&[x, y], style), 20, 24, 3, &[1, 2, 3]);
}

#[test]
fn other_variables_are_skipped() {
    let (x, y) = svhn_vars(32, 32, 2, &[3, 4], MI_UINT8);
    let note = Var {
        name: "note".into(),
        class: CLASS_CHAR,
        dims: vec![1, 3],
        data_type: MI_UINT8,
        values: vec![104.0, 105.0, 33.0],
    };
    let extra = Var {
        name: "extra_numbers".into(),
        class: CLASS_DOUBLE,
        dims: vec![1, 2],
        data_type: MI_DOUBLE,
        values: vec![0.5, 1.5],
    };
    for compressed in [true, false] {
        let style = MatStyle {
            big_endian: false,
            compressed,
            small_names: true,
        };
        let bytes = mat_file(
            &[
                note.clone_var(),
                x.clone_var(),
                extra.clone_var(),
                y.clone_var(),
            ],
            style,
        );
        check_exact(&bytes, 32, 32, 2, &[3, 4]);
        let f = mat::parse(&bytes, &|_| true, &MatOptions::default()).unwrap();
        assert_eq!(f.vars.len(), 3, "char arrays are not numeric variables");
        assert!(f.describe().contains("note (char)"));
    }
}

trait CloneVar {
    fn clone_var(&self) -> Var;
}
impl CloneVar for Var {
    fn clone_var(&self) -> Var {
        Var {
            name: self.name.clone(),
            class: self.class,
            dims: self.dims.clone(),
            data_type: self.data_type,
            values: self.values.clone(),
        }
    }
}

/// A transposed or channel-swapped reading must fail `check_exact`: guard the guard.
#[test]
fn pattern_detects_transposition_and_channel_swap() {
    let mut transposed = 0;
    let mut swapped = 0;
    for h in 0..32 {
        for w in 0..32 {
            transposed += (pattern(0, 0, h, w) != pattern(0, 0, w, h)) as usize;
            swapped += (pattern(0, 0, h, w) != pattern(0, 2, h, w)) as usize;
        }
    }
    assert!(transposed > 900 && swapped > 1000, "{transposed} {swapped}");
}

#[test]
fn scipy_written_files_match_torchvision_layout() {
    // Files written by scipy.io.savemat (reference/make_data_fixtures.py); the expected arrays
    // are np.transpose(X, (3, 2, 0, 1)) and y with 10 → 0, as torchvision's SVHN loader does.
    for tag in ["compressed", "plain"] {
        let (images, labels) = svhn_from_mat(&fixture(&format!("svhn-scipy-{tag}.mat"))).unwrap();
        let want_im = IdxArray::open(fixture(&format!("svhn-scipy-{tag}-images.idx"))).unwrap();
        let want_lb = IdxArray::open(fixture(&format!("svhn-scipy-{tag}-labels.idx"))).unwrap();
        let [n, c, h, w] = images.dims();
        assert_eq!(&[n, c, h, w][..], want_im.dims(), "{tag}");
        assert_eq!(images.pixels(), want_im.data(), "{tag}");
        assert_eq!(labels.as_slice(), want_lb.data(), "{tag}");
        assert!(
            labels.as_slice().contains(&0),
            "{tag}: the label 10 became 0"
        );
    }
}

fn expect_bad(bytes: &[u8], problem: &str) {
    let e = svhn_from_mat_bytes(bytes, Path::new("bad-svhn.mat"), &MatOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad-svhn.mat"),
        "message does not name the file: {e}"
    );
    assert!(e.contains(problem), "expected {problem:?} in: {e}");
}

fn style(compressed: bool) -> MatStyle {
    MatStyle {
        big_endian: false,
        compressed,
        small_names: true,
    }
}

#[test]
fn malformed_files_get_clear_errors() {
    let (x, y) = svhn_vars(32, 32, 3, &[1, 2, 3], MI_UINT8);
    let good = mat_file(&[x.clone_var(), y.clone_var()], style(true));
    let plain = mat_file(&[x.clone_var(), y.clone_var()], style(false));

    expect_bad(&[], "file is empty");
    expect_bad(b"not a mat file", "too short");
    expect_bad(&[b'x'; 200], "not a MATLAB level-5 MAT-file");
    let mut v73 = good.clone();
    v73[124..126].copy_from_slice(&[0x00, 0x02]);
    expect_bad(&v73, "7.3");
    // Truncated anywhere inside an element.
    for cut in [130, 200, good.len() / 2, good.len() - 1] {
        expect_bad(&good[..cut], "truncated");
    }
    for cut in [140, 300, plain.len() - 5] {
        expect_bad(&plain[..cut], "truncated");
    }
    // Corrupt zlib stream.
    let mut corrupt = good.clone();
    for b in &mut corrupt[136..150] {
        *b ^= 0x5a;
    }
    let e = svhn_from_mat_bytes(&corrupt, Path::new("bad-svhn.mat"), &MatOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad-svhn.mat"), "{e}");
    // Missing y; X with 4 channels; labels out of range; count mismatch; an unknown element.
    expect_bad(
        &mat_file(&[x.clone_var()], style(true)),
        "expected numeric variables X",
    );
    let mut x4 = x.clone_var();
    x4.dims = vec![32, 16, 6, 3];
    expect_bad(&mat_file(&[x4, y.clone_var()], style(true)), "6 channels");
    let mut y11 = y.clone_var();
    y11.values[1] = 11.0;
    expect_bad(&mat_file(&[x.clone_var(), y11], style(false)), "value 11");
    let mut yhalf = y.clone_var();
    yhalf.data_type = MI_DOUBLE;
    yhalf.values[2] = 2.5;
    expect_bad(
        &mat_file(&[x.clone_var(), yhalf], style(true)),
        "not an integer",
    );
    let (_, y2) = svhn_vars(32, 32, 2, &[1, 2], MI_UINT8);
    expect_bad(
        &mat_file(&[x.clone_var(), y2], style(true)),
        "3 images but y holds 2",
    );
    let mut weird = plain.clone();
    weird[128] = 99;
    expect_bad(&weird, "unexpected element type 99");
    // Real part whose size does not match the dimensions.
    let mut xbig = x.clone_var();
    xbig.dims = vec![32, 32, 3, 4];
    expect_bad(&mat_file(&[xbig, y.clone_var()], style(false)), "need");
    // A duplicate variable.
    expect_bad(
        &mat_file(&[x.clone_var(), y.clone_var(), y.clone_var()], style(true)),
        "more than once",
    );
}

#[test]
fn size_limit_is_enforced() {
    let (x, y) = svhn_vars(32, 32, 3, &[1, 2, 3], MI_UINT8);
    let bytes = mat_file(&[x, y], style(true));
    let opts = MatOptions {
        max_element_bytes: 1000,
    };
    let e = svhn_from_mat_bytes(&bytes, Path::new("big.mat"), &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("exceed the limit"), "{e}");
}
