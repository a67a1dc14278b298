//! Helpers shared by the data tests.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(name)
}

/// A deterministic pseudo-random byte for (a, b, c, d): a pattern in which a transposed or
/// channel-swapped image differs from the original.
pub fn pattern(a: usize, b: usize, c: usize, d: usize) -> u8 {
    let mut z = (a as u64) << 48 ^ (b as u64) << 32 ^ (c as u64) << 16 ^ d as u64;
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u8
}

pub fn idx_bytes(dims: &[usize], data: &[u8]) -> Vec<u8> {
    gtadapt::data::idx::encode_idx(dims, data).expect("valid dims")
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

pub fn zlib(b: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Small MNIST-style files: (train images, train labels, test images, test labels), each the
/// full IDX bytes; n_train and n_test 28×28 images with pattern pixels and labels i % 10.
pub fn mnist_like(n_train: usize, n_test: usize) -> [Vec<u8>; 4] {
    let img = |n: usize, salt: usize| {
        let px: Vec<u8> = (0..n * 28 * 28)
            .map(|i| pattern(salt, i / 784, (i / 28) % 28, i % 28))
            .collect();
        idx_bytes(&[n, 28, 28], &px)
    };
    let lab = |n: usize| idx_bytes(&[n], &(0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>());
    [img(n_train, 1), lab(n_train), img(n_test, 2), lab(n_test)]
}

/// The official MNIST file names, in the order of [`mnist_like`].
pub const MNIST_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Every file under `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(all_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn no_part_files(dir: &Path) {
    let parts: Vec<_> = all_files(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".part"))
        .collect();
    assert!(parts.is_empty(), "partial files left behind: {parts:?}");
}

// ---- A MATLAB level-5 writer, enough for SVHN-style files ----

pub const MI_INT8: u32 = 1;
pub const MI_UINT8: u32 = 2;
pub const MI_INT32: u32 = 5;
pub const MI_UINT32: u32 = 6;
pub const MI_DOUBLE: u32 = 9;
pub const MI_MATRIX: u32 = 14;
pub const MI_COMPRESSED: u32 = 15;
pub const CLASS_CHAR: u8 = 4;
pub const CLASS_DOUBLE: u8 = 6;
pub const CLASS_UINT8: u8 = 9;

/// One variable to write: class, column-major dims, storage type and the real part as
/// values (encoded per `data_type` in the file's byte order).
pub struct Var {
    pub name: String,
    pub class: u8,
    pub dims: Vec<i32>,
    pub data_type: u32,
    pub values: Vec<f64>,
}

#[derive(Clone, Copy)]
pub struct MatStyle {
    pub big_endian: bool,
    pub compressed: bool,
    /// Use the small data element format for names of ≤ 4 bytes (as MATLAB does).
    pub small_names: bool,
}

pub struct MatWriter {
    be: bool,
}

impl MatWriter {
    fn u32(&self, v: u32) -> [u8; 4] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn element(&self, ty: u32, data: &[u8], small_ok: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if small_ok && data.len() <= 4 {
            out.extend_from_slice(&self.u32(((data.len() as u32) << 16) | ty));
            let mut d = data.to_vec();
            d.resize(4, 0);
            out.extend_from_slice(&d);
            return out;
        }
        out.extend_from_slice(&self.u32(ty));
        out.extend_from_slice(&self.u32(data.len() as u32));
        out.extend_from_slice(data);
        while out.len() % 8 != 0 {
            out.push(0);
        }
        out
    }
    fn encode(&self, ty: u32, values: &[f64]) -> Vec<u8> {
        let mut out = Vec::new();
        for &v in values {
            match ty {
                MI_UINT8 => out.push(v as u8),
                MI_INT8 => out.push(v as i8 as u8),
                MI_INT32 => out.extend_from_slice(&self.u32(v as i32 as u32)),
                MI_UINT32 => out.extend_from_slice(&self.u32(v as u32)),
                MI_DOUBLE => out.extend_from_slice(&if self.be {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                }),
                _ => panic!("test writer: type {ty} not supported"),
            }
        }
        out
    }
    /// The body (subelements) of an miMATRIX.
    pub fn matrix_body(&self, v: &Var, small_names: bool) -> Vec<u8> {
        let mut body = Vec::new();
        let mut flags = Vec::new();
        flags.extend_from_slice(&self.u32(v.class as u32));
        flags.extend_from_slice(&self.u32(0));
        body.extend(self.element(MI_UINT32, &flags, false));
        let dims: Vec<u8> = v.dims.iter().flat_map(|&d| self.u32(d as u32)).collect();
        body.extend(self.element(MI_INT32, &dims, false));
        body.extend(self.element(MI_INT8, v.name.as_bytes(), small_names));
        body.extend(self.element(v.data_type, &self.encode(v.data_type, &v.values), false));
        body
    }
}

/// A complete MAT-file holding `vars` in the given style.
pub fn mat_file(vars: &[Var], style: MatStyle) -> Vec<u8> {
    let w = MatWriter {
        be: style.big_endian,
    };
    let mut out = vec![b' '; 128];
    let text = b"MATLAB 5.0 MAT-file, Platform: test, Created on: gtadapt tests";
    out[..text.len()].copy_from_slice(text);
    out[116..124].fill(0);
    let (ver, ind) = if style.big_endian {
        ([0x01, 0x00], *b"MI")
    } else {
        ([0x00, 0x01], *b"IM")
    };
    out[124..126].copy_from_slice(&ver);
    out[126..128].copy_from_slice(&ind);
    for v in vars {
        let body = w.matrix_body(v, style.small_names);
        let mut matrix = Vec::new();
        matrix.extend_from_slice(&w.u32(MI_MATRIX));
        matrix.extend_from_slice(&w.u32(body.len() as u32));
        matrix.extend(body);
        if style.compressed {
            let z = zlib(&matrix);
            out.extend_from_slice(&w.u32(MI_COMPRESSED));
            out.extend_from_slice(&w.u32(z.len() as u32));
            out.extend(z);
        } else {
            out.extend(matrix);
        }
    }
    out
}

/// SVHN-style X (H×W×3×N uint8, column-major, pixel (n, c, h, w) = pattern(n, c, h, w)) and
/// y (N×1, class double, stored as `y_type`), with labels `labels` (10 = digit 0).
pub fn svhn_vars(h: usize, w: usize, n: usize, labels: &[u8], y_type: u32) -> (Var, Var) {
    let mut x = vec![0f64; h * w * 3 * n];
    for nn in 0..n {
        for c in 0..3 {
            for ww in 0..w {
                for hh in 0..h {
                    x[hh + h * (ww + w * (c + 3 * nn))] = pattern(nn, c, hh, ww) as f64;
                }
            }
        }
    }
    (
        Var {
            name: "X".into(),
            class: CLASS_UINT8,
            dims: vec![h as i32, w as i32, 3, n as i32],
            data_type: MI_UINT8,
            values: x,
        },
        Var {
            name: "y".into(),
            class: CLASS_DOUBLE,
            dims: vec![n as i32, 1],
            data_type: y_type,
            values: labels.iter().map(|&l| l as f64).collect(),
        },
    )
}
