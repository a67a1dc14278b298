//! IDX files, the MNIST format: a 4-byte magic `0x00 0x00 type rank`, `rank` big-endian u32
//! dimensions, then the elements in row-major order. Only the u8 element type (0x08) is used
//! (and accepted) here.
//!
//! [`parse_header`] validates a whole file image before anything reads it: magic, element type,
//! rank, that the element count does not overflow, and that the file length is exactly header
//! plus data. [`IdxArray::open`] memory-maps a file and validates it; [`write_idx`] writes one
//! atomically (temporary name, then rename).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::bytes::Bytes;
use super::error::{DataError, Result};

/// The IDX element-type byte for unsigned bytes.
pub const TYPE_U8: u8 = 0x08;
/// Ranks above this are refused (images are rank 3 or 4, labels rank 1).
pub const MAX_RANK: usize = 8;

/// A validated IDX header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxHeader {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Offset of the first element (4 + 4·rank).
    pub data_offset: usize,
}

impl IdxHeader {
    /// Number of elements (the product of the dimensions; checked when parsed).
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn type_name(t: u8) -> &'static str {
    match t {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "16-bit integer",
        0x0C => "32-bit integer",
        0x0D => "32-bit float",
        0x0E => "64-bit float",
        _ => "unknown",
    }
}

/// Validates the complete bytes of an IDX file of u8 elements and returns its header. The error
/// is a plain description; callers add the file name.
pub fn parse_header(bytes: &[u8]) -> std::result::Result<IdxHeader, String> {
    if bytes.is_empty() {
        return Err("file is empty".into());
    }
    if bytes.len() < 4 {
        return Err(format!(
            "too short for an IDX header: {} bytes (an IDX file starts with a 4-byte magic number)",
            bytes.len()
        ));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if bytes[0] != 0 || bytes[1] != 0 {
        let hint = if bytes[0] == 0x1f && bytes[1] == 0x8b {
            " (this is a gzip file: decompress it, or use `gtadapt data import`)"
        } else {
            ""
        };
        return Err(format!(
            "bad magic number 0x{magic:08x}: not an IDX file (expected 0x0000TTRR){hint}"
        ));
    }
    let ty = bytes[2];
    if ty != TYPE_U8 {
        return Err(format!(
            "bad magic number 0x{magic:08x}: element type 0x{ty:02x} ({}) is not supported, \
             only unsigned bytes (0x08)",
            type_name(ty)
        ));
    }
    let rank = bytes[3] as usize;
    if rank == 0 || rank > MAX_RANK {
        return Err(format!(
            "bad magic number 0x{magic:08x}: rank {rank} (expected 1 to {MAX_RANK})"
        ));
    }
    let data_offset = 4 + 4 * rank;
    if bytes.len() < data_offset {
        return Err(format!(
            "truncated header: rank {rank} needs {data_offset} header bytes, the file has {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize - data_offset)
        .ok_or_else(|| format!("dimensions {dims:?} overflow: their product is too large"))?;
    let expected = data_offset + count;
    if bytes.len() < expected {
        return Err(format!(
            "truncated: dimensions {dims:?} need {count} data bytes, the file has {} \
             ({} bytes in all, {expected} expected)",
            bytes.len() - data_offset,
            bytes.len()
        ));
    }
    if bytes.len() > expected {
        return Err(format!(
            "{} trailing bytes after the data of dimensions {dims:?} ({} bytes in all, {expected} expected)",
            bytes.len() - expected,
            bytes.len()
        ));
    }
    Ok(IdxHeader { dims, data_offset })
}

/// A validated IDX array of u8: its bytes (usually memory-mapped), dimensions and origin.
#[derive(Clone, Debug)]
pub struct IdxArray {
    bytes: Bytes,
    header: IdxHeader,
    path: PathBuf,
}

impl IdxArray {
    /// Memory-maps and validates an IDX file.
    pub fn open(path: impl AsRef<Path>) -> Result<IdxArray> {
        let path = path.as_ref();
        let bytes = Bytes::map_file(path)?;
        IdxArray::from_bytes(bytes, path)
    }

    /// Validates bytes already in memory; `path` names them in errors.
    pub fn from_bytes(bytes: Bytes, path: impl AsRef<Path>) -> Result<IdxArray> {
        let path = path.as_ref();
        let header = parse_header(&bytes).map_err(|p| DataError::invalid(path, p))?;
        Ok(IdxArray {
            bytes,
            header,
            path: path.to_path_buf(),
        })
    }

    pub fn dims(&self) -> &[usize] {
        &self.header.dims
    }
    pub fn rank(&self) -> usize {
        self.header.dims.len()
    }
    /// The elements, row-major.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.header.data_offset..]
    }
    /// Where these bytes came from (a file path, or a name like `embedded-mnist`).
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The underlying bytes (header included) and the data offset, for zero-copy views.
    pub fn into_parts(self) -> (Bytes, usize, Vec<usize>, PathBuf) {
        (
            self.bytes,
            self.header.data_offset,
            self.header.dims,
            self.path,
        )
    }
}

/// The complete bytes of an IDX file (header + data) for u8 elements.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    write_idx_to(&mut out, dims, data).map_err(|e| e.to_string())?;
    Ok(out)
}

fn check_dims(dims: &[usize], len: usize) -> std::result::Result<(), String> {
    if dims.is_empty() || dims.len() > MAX_RANK {
        return Err(format!("rank {} (expected 1 to {MAX_RANK})", dims.len()));
    }
    if let Some(d) = dims.iter().find(|&&d| d > u32::MAX as usize) {
        return Err(format!("dimension {d} does not fit the IDX format (u32)"));
    }
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(len) {
        return Err(format!(
            "dimensions {dims:?} do not match the data length {len}"
        ));
    }
    Ok(())
}

fn write_idx_to(w: &mut impl Write, dims: &[usize], data: &[u8]) -> std::io::Result<()> {
    check_dims(dims, data.len())
        .map_err(|p| std::io::Error::new(std::io::ErrorKind::InvalidInput, p))?;
    w.write_all(&[0, 0, TYPE_U8, dims.len() as u8])?;
    for &d in dims {
        w.write_all(&(d as u32).to_be_bytes())?;
    }
    w.write_all(data)
}

/// Writes an IDX file of u8 atomically: to `<path>.part`, flushed to disk, then renamed over
/// `path`. On failure nothing is left behind under either name (an old `path` stays intact).
pub fn write_idx(path: impl AsRef<Path>, dims: &[usize], data: &[u8]) -> Result<()> {
    let path = path.as_ref();
    check_dims(dims, data.len()).map_err(|p| DataError::invalid(path, p))?;
    write_atomic(path, |w| write_idx_to(w, dims, data))
}

/// `path` with `.part` appended to its file name.
pub(crate) fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    path.with_file_name(name)
}

/// Writes a file through `<path>.part` and a rename, removing the partial file on any error.
pub(crate) fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> Result<()> {
    let part = part_path(path);
    let result = (|| {
        let file = File::create(&part)?;
        let mut w = BufWriter::with_capacity(1 << 20, &file);
        fill(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()?;
        std::fs::rename(&part, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&part);
        DataError::io(path, e)
    })
}
