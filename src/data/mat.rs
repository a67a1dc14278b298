//! MATLAB level-5 MAT-files (the format of SVHN's `train_32x32.mat` / `test_32x32.mat`).
//!
//! Layout: a 128-byte header (text, subsystem offset, version 0x0100, endian indicator "IM" for
//! little-endian files, "MI" for big-endian), then data elements. Each element has an 8-byte tag
//! (u32 type, u32 byte count) or, for at most 4 bytes of data, a "small" 4-byte tag with the
//! data packed beside it. Top-level elements are `miMATRIX` (one variable) or `miCOMPRESSED`
//! (a zlib stream holding one `miMATRIX`). A numeric `miMATRIX` holds, in order: array flags
//! (class), dimensions (i32, column-major), name, real part, [imaginary part]. The real part's
//! storage type may be smaller than the class (MATLAB saves a double array of small integers as
//! `miUINT8`). Subelements are padded to 8 bytes.
//!
//! The parser reads from a byte slice (a memory-mapped file) and decompresses element by
//! element, stopping as soon as it knows a variable's name when the caller does not want it.
//! Every length is checked against what contains it; nothing is allocated beyond
//! [`MatOptions::max_element_bytes`].

use std::io::{self, Read};

use flate2::read::ZlibDecoder;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;

/// Array classes (the low byte of the array flags).
pub mod class {
    pub const CELL: u8 = 1;
    pub const STRUCT: u8 = 2;
    pub const OBJECT: u8 = 3;
    pub const CHAR: u8 = 4;
    pub const SPARSE: u8 = 5;
    pub const DOUBLE: u8 = 6;
    pub const SINGLE: u8 = 7;
    pub const INT8: u8 = 8;
    pub const UINT8: u8 = 9;
    pub const INT16: u8 = 10;
    pub const UINT16: u8 = 11;
    pub const INT32: u8 = 12;
    pub const UINT32: u8 = 13;
    pub const INT64: u8 = 14;
    pub const UINT64: u8 = 15;
}

/// Limits for parsing untrusted files.
#[derive(Clone, Copy, Debug)]
pub struct MatOptions {
    /// The largest real part (in bytes) a variable may have. SVHN's training images are
    /// 225 MB; the default, 4 GiB, leaves room for `extra_32x32.mat` while refusing absurd sizes.
    pub max_element_bytes: u64,
}

impl Default for MatOptions {
    fn default() -> Self {
        MatOptions {
            max_element_bytes: 4 << 30,
        }
    }
}

/// One numeric variable.
#[derive(Clone, Debug)]
pub struct MatVar {
    pub name: String,
    /// Array class, one of [`class`].
    pub class: u8,
    /// Dimensions as stored (column-major: the first index varies fastest).
    pub dims: Vec<usize>,
    /// Storage type of the real part (a `mi*` data type).
    pub data_type: u32,
    /// Whether the file is big-endian.
    pub big_endian: bool,
    /// Whether the variable had an imaginary part (which is not kept).
    pub complex: bool,
    /// The real part, raw, in the file's byte order.
    pub data: Vec<u8>,
}

/// What a file holds: the numeric variables that were asked for, and the name and class of
/// every variable seen (for messages).
#[derive(Clone, Debug, Default)]
pub struct MatFile {
    pub vars: Vec<MatVar>,
    pub seen: Vec<(String, u8)>,
}

impl MatFile {
    pub fn get(&self, name: &str) -> Option<&MatVar> {
        self.vars.iter().find(|v| v.name == name)
    }
    pub fn take(&mut self, name: &str) -> Option<MatVar> {
        let i = self.vars.iter().position(|v| v.name == name)?;
        Some(self.vars.swap_remove(i))
    }
    /// "X (uint8), y (double)" — what the file holds, for error messages.
    pub fn describe(&self) -> String {
        if self.seen.is_empty() {
            return "no variables".into();
        }
        self.seen
            .iter()
            .map(|(n, c)| format!("{n} ({})", class_name(*c)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn class_name(c: u8) -> &'static str {
    match c {
        class::CELL => "cell",
        class::STRUCT => "struct",
        class::OBJECT => "object",
        class::CHAR => "char",
        class::SPARSE => "sparse",
        class::DOUBLE => "double",
        class::SINGLE => "single",
        class::INT8 => "int8",
        class::UINT8 => "uint8",
        class::INT16 => "int16",
        class::UINT16 => "uint16",
        class::INT32 => "int32",
        class::UINT32 => "uint32",
        class::INT64 => "int64",
        class::UINT64 => "uint64",
        _ => "unknown class",
    }
}

fn is_numeric_class(c: u8) -> bool {
    (class::DOUBLE..=class::UINT64).contains(&c)
}

/// Size in bytes of one element of a numeric data type.
fn type_size(t: u32) -> Option<usize> {
    Some(match t {
        MI_INT8 | MI_UINT8 => 1,
        MI_INT16 | MI_UINT16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        _ => return None,
    })
}

impl MatVar {
    /// Number of elements (product of the dimensions).
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as f64 (exact for every integer type up to 2^53, and for floats).
    fn value(&self, i: usize) -> f64 {
        let be = self.big_endian;
        macro_rules! get {
            ($t:ty, $n:expr) => {{
                let mut b = [0u8; $n];
                b.copy_from_slice(&self.data[i * $n..(i + 1) * $n]);
                (if be {
                    <$t>::from_be_bytes(b)
                } else {
                    <$t>::from_le_bytes(b)
                }) as f64
            }};
        }
        match self.data_type {
            MI_INT8 => self.data[i] as i8 as f64,
            MI_UINT8 => self.data[i] as f64,
            MI_INT16 => get!(i16, 2),
            MI_UINT16 => get!(u16, 2),
            MI_INT32 => get!(i32, 4),
            MI_UINT32 => get!(u32, 4),
            MI_SINGLE => get!(f32, 4),
            MI_DOUBLE => get!(f64, 8),
            MI_INT64 => get!(i64, 8),
            MI_UINT64 => get!(u64, 8),
            _ => f64::NAN,
        }
    }

    /// The values as u8, exactly: every value must be an integer in `lo..=hi` (≤ 255).
    /// The error names the first offending element (column-major index).
    pub fn to_u8_exact(&self, lo: u8, hi: u8) -> Result<Vec<u8>, String> {
        if self.complex {
            return Err(format!("variable {} is complex", self.name));
        }
        if self.data_type == MI_UINT8 {
            if let Some((i, v)) = self
                .data
                .iter()
                .enumerate()
                .find(|(_, &v)| v < lo || v > hi)
            {
                return Err(format!(
                    "variable {}: value {v} at element {i} is outside {lo}..={hi}",
                    self.name
                ));
            }
            return Ok(self.data.clone());
        }
        (0..self.len())
            .map(|i| {
                let v = self.value(i);
                if v.fract() == 0.0 && v >= lo as f64 && v <= hi as f64 {
                    Ok(v as u8)
                } else {
                    Err(format!(
                        "variable {}: value {v} at element {i} is not an integer in {lo}..={hi}",
                        self.name
                    ))
                }
            })
            .collect()
    }

    /// Like [`MatVar::to_u8_exact`] but reuses the buffer when the storage is already u8.
    pub fn into_u8_exact(self, lo: u8, hi: u8) -> Result<Vec<u8>, String> {
        if self.data_type == MI_UINT8 && !self.complex && lo == 0 && hi == 255 {
            return Ok(self.data);
        }
        self.to_u8_exact(lo, hi)
    }
}

/// A reader that knows the file's byte order.
struct Src<R> {
    r: R,
    be: bool,
}

struct Tag {
    ty: u32,
    n: usize,
    /// Data of a small-format element (the tag's second half).
    small: Option<[u8; 4]>,
}

fn eof_msg(e: io::Error, what: &str) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        format!("truncated {what}")
    } else {
        format!("{what}: {e}")
    }
}

impl<R: Read> Src<R> {
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b).map_err(|e| eof_msg(e, what))?;
        Ok(if self.be {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn tag(&mut self, what: &str) -> Result<Tag, String> {
        let first = self.u32(what)?;
        if first >> 16 != 0 {
            // Small data element: byte count in the high half, type in the low half.
            let n = (first >> 16) as usize;
            if n > 4 {
                return Err(format!(
                    "{what}: small element claims {n} bytes (at most 4)"
                ));
            }
            let mut small = [0u8; 4];
            self.r
                .read_exact(&mut small)
                .map_err(|e| eof_msg(e, what))?;
            return Ok(Tag {
                ty: first & 0xffff,
                n,
                small: Some(small),
            });
        }
        let n = self.u32(what)? as usize;
        Ok(Tag {
            ty: first,
            n,
            small: None,
        })
    }

    /// Reads a subelement's data (and its padding), at most `max` bytes.
    fn payload(&mut self, tag: &Tag, max: u64, what: &str) -> Result<Vec<u8>, String> {
        if let Some(s) = tag.small {
            return Ok(s[..tag.n].to_vec());
        }
        if tag.n as u64 > max {
            return Err(format!(
                "{what}: {} bytes exceed the limit of {max} bytes",
                tag.n
            ));
        }
        let mut v = Vec::new();
        v.try_reserve_exact(tag.n)
            .map_err(|_| format!("{what}: cannot allocate {} bytes", tag.n))?;
        (&mut self.r)
            .take(tag.n as u64)
            .read_to_end(&mut v)
            .map_err(|e| format!("{what}: {e}"))?;
        if v.len() != tag.n {
            return Err(format!(
                "truncated {what}: {} of {} bytes present",
                v.len(),
                tag.n
            ));
        }
        self.skip_padding(tag.n);
        Ok(v)
    }

    /// Skips the padding after `n` data bytes. Padding is best effort: a writer that omits it
    /// after the last subelement of a matrix ends the stream, which is harmless.
    fn skip_padding(&mut self, n: usize) {
        let pad = (8 - n % 8) % 8;
        let mut b = [0u8; 8];
        let _ = (&mut self.r).take(pad as u64).read(&mut b[..pad]);
    }

    /// Discards a subelement's data and padding.
    fn skip(&mut self, tag: &Tag, what: &str) -> Result<(), String> {
        if tag.small.is_some() {
            return Ok(());
        }
        let copied = io::copy(&mut (&mut self.r).take(tag.n as u64), &mut io::sink())
            .map_err(|e| format!("{what}: {e}"))?;
        if copied != tag.n as u64 {
            return Err(format!("truncated {what}"));
        }
        self.skip_padding(tag.n);
        Ok(())
    }
}

/// Parses one `miMATRIX` element body (`r` yields exactly its bytes). Returns `None` for a
/// variable the caller does not want or cannot use (non-numeric), after recording it in `seen`.
fn parse_matrix<R: Read>(
    src: &mut Src<R>,
    want: &dyn Fn(&str) -> bool,
    opts: &MatOptions,
    seen: &mut Vec<(String, u8)>,
    at: &str,
) -> Result<Option<MatVar>, String> {
    // Array flags: miUINT32, 8 bytes.
    let what = format!("array flags of the variable {at}");
    let t = src.tag(&what)?;
    if t.ty != MI_UINT32 || t.n != 8 {
        return Err(format!(
            "{what}: expected 8 bytes of type miUINT32, found {} bytes of type {}",
            t.n, t.ty
        ));
    }
    let flags = src.payload(&t, 8, &what)?;
    let f0 = if src.be {
        u32::from_be_bytes([flags[0], flags[1], flags[2], flags[3]])
    } else {
        u32::from_le_bytes([flags[0], flags[1], flags[2], flags[3]])
    };
    let cls = (f0 & 0xff) as u8;
    let complex = f0 & 0x0800 != 0;

    // Dimensions: miINT32.
    let what = format!("dimensions of the variable {at}");
    let t = src.tag(&what)?;
    if t.ty != MI_INT32 || t.n % 4 != 0 || t.n == 0 {
        return Err(format!(
            "{what}: expected a non-empty miINT32 array, found {} bytes of type {}",
            t.n, t.ty
        ));
    }
    let raw = src.payload(&t, 4 * 64, &what)?;
    let mut dims = Vec::with_capacity(raw.len() / 4);
    for c in raw.chunks_exact(4) {
        let b = [c[0], c[1], c[2], c[3]];
        let d = if src.be {
            i32::from_be_bytes(b)
        } else {
            i32::from_le_bytes(b)
        };
        if d < 0 {
            return Err(format!("{what}: negative dimension {d}"));
        }
        dims.push(d as usize);
    }

    // Name: miINT8 (or UTF-8), possibly in the small format.
    let what = format!("name of the variable {at}");
    let t = src.tag(&what)?;
    if t.ty != MI_INT8 && t.ty != MI_UINT8 && t.ty != MI_UTF8 {
        return Err(format!("{what}: expected type miINT8, found type {}", t.ty));
    }
    let name_bytes = src.payload(&t, 4096, &what)?;
    let name = String::from_utf8_lossy(&name_bytes).into_owned();
    seen.push((name.clone(), cls));
    if !is_numeric_class(cls) || !want(&name) {
        return Ok(None);
    }

    // Real part.
    let what = format!("data of the variable {name:?}");
    let t = src.tag(&what)?;
    let size = type_size(t.ty)
        .ok_or_else(|| format!("{what}: type {} is not a numeric storage type", t.ty))?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("{what}: dimensions {dims:?} overflow"))?;
    if count.checked_mul(size) != Some(t.n) {
        return Err(format!(
            "{what}: dimensions {dims:?} need {count} elements of {size} bytes, the element \
             holds {} bytes",
            t.n
        ));
    }
    let data = src.payload(&t, opts.max_element_bytes, &what)?;
    if complex {
        // The imaginary part is not needed; its presence is recorded.
        let t = src.tag(&what)?;
        src.skip(&t, &what)?;
    }
    Ok(Some(MatVar {
        name,
        class: cls,
        dims,
        data_type: t.ty,
        big_endian: src.be,
        complex,
        data,
    }))
}

/// Parses a complete MAT-file image, keeping the numeric variables for which `want(name)` is
/// true. The error is a plain description; callers add the file name.
pub fn parse(
    bytes: &[u8],
    want: &dyn Fn(&str) -> bool,
    opts: &MatOptions,
) -> Result<MatFile, String> {
    if bytes.is_empty() {
        return Err("file is empty".into());
    }
    if bytes.len() < 128 {
        return Err(format!(
            "too short for a MATLAB 5 MAT-file: {} bytes, the header alone is 128",
            bytes.len()
        ));
    }
    let be =
        match &bytes[126..128] {
            b"IM" => false,
            b"MI" => true,
            _ => return Err(
                "not a MATLAB level-5 MAT-file (no endian indicator \"IM\"/\"MI\" at byte 126; \
                 MATLAB v4 files are not supported)"
                    .into(),
            ),
        };
    let version = if be {
        u16::from_be_bytes([bytes[124], bytes[125]])
    } else {
        u16::from_le_bytes([bytes[124], bytes[125]])
    };
    if version == 0x0200 {
        return Err("a MATLAB 7.3 MAT-file (HDF5) is not supported: save it with -v7".into());
    }
    if version != 0x0100 {
        return Err(format!(
            "unsupported MAT-file version 0x{version:04x} (expected 0x0100, level 5)"
        ));
    }

    let mut out = MatFile::default();
    let mut pos = 128usize;
    let rd = |b: &[u8]| -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    while pos < bytes.len() {
        if bytes.len() - pos < 8 {
            return Err(format!(
                "truncated element tag at offset {pos} ({} bytes left)",
                bytes.len() - pos
            ));
        }
        let ty = rd(&bytes[pos..]);
        let n = rd(&bytes[pos + 4..]) as usize;
        let start = pos + 8;
        let end = match start.checked_add(n) {
            Some(e) if e <= bytes.len() => e,
            _ => {
                return Err(format!(
                "element at offset {pos} declares {n} bytes but only {} remain (truncated file?)",
                bytes.len() - start
            ))
            }
        };
        let at = format!("at offset {pos}");
        let body = &bytes[start..end];
        let var = match ty {
            MI_COMPRESSED => {
                let mut z = Src {
                    r: ZlibDecoder::new(body),
                    be,
                };
                let what = format!("compressed element {at}");
                let inner = z.tag(&what).map_err(|e| {
                    format!("{e} (is the zlib stream of the compressed element {at} corrupt?)")
                })?;
                if inner.small.is_some() || inner.ty != MI_MATRIX {
                    return Err(format!(
                        "{what} holds an element of type {}, expected miMATRIX (14)",
                        inner.ty
                    ));
                }
                if inner.n == 0 {
                    None
                } else {
                    let mut src = Src {
                        r: z.r.take(inner.n as u64),
                        be,
                    };
                    parse_matrix(&mut src, want, opts, &mut out.seen, &at)?
                }
            }
            MI_MATRIX => {
                if n == 0 {
                    None
                } else {
                    let mut src = Src { r: body, be };
                    parse_matrix(&mut src, want, opts, &mut out.seen, &at)?
                }
            }
            _ => {
                return Err(format!(
                    "unexpected element type {ty} at offset {pos} (expected miMATRIX 14 or \
                     miCOMPRESSED 15)"
                ))
            }
        };
        out.vars.extend(var);
        pos = end;
        if ty == MI_MATRIX {
            pos = pos.saturating_add((8 - n % 8) % 8).min(bytes.len());
        }
    }
    Ok(out)
}
