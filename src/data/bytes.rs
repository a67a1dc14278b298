//! Shared, immutable byte buffers: a memory-mapped file or an owned vector, behind one cheap
//! clone so batches can be prepared on another thread without copying a dataset.

use std::fmt;
use std::fs::File;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use super::error::{DataError, Result};

enum Backing {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

/// Immutable bytes, either memory-mapped from a file or owned. Cloning shares them.
#[derive(Clone)]
pub struct Bytes(Arc<Backing>);

impl Bytes {
    /// Memory-maps a whole regular file read-only. Directories, empty files and other
    /// non-regular files get an error that names the path.
    pub fn map_file(path: &Path) -> Result<Bytes> {
        let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        if meta.is_dir() {
            return Err(DataError::invalid(path, "is a directory, expected a file"));
        }
        if !meta.is_file() {
            return Err(DataError::invalid(path, "is not a regular file"));
        }
        if meta.len() == 0 {
            return Err(DataError::invalid(path, "file is empty"));
        }
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        // Miri cannot map files: under it the bytes are read instead, so the parsers on top
        // (which see the same bytes either way) can be checked by `cargo miri test`.
        #[cfg(miri)]
        {
            use std::io::Read;
            let mut v = Vec::new();
            (&file)
                .read_to_end(&mut v)
                .map_err(|e| DataError::io(path, e))?;
            return Ok(Bytes::from_vec(v));
        }
        // SAFETY: the mapping is read-only and lives as long as this `Bytes` (the `Mmap` owns
        // it). Mapped memory changes, or faults, if another process truncates or rewrites the
        // file in place while it is mapped; memmap2 cannot prevent that. This crate never does
        // it: every file it writes is written under a temporary name and renamed into place,
        // which leaves an existing mapping of the old file intact. Datasets must not be edited
        // in place while a program uses them (documented in the README).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?;
        Ok(Bytes(Arc::new(Backing::Mapped(map))))
    }

    /// Owned bytes (decompressed files, generated datasets).
    pub fn from_vec(v: Vec<u8>) -> Bytes {
        Bytes(Arc::new(Backing::Owned(v)))
    }

    /// Whether these bytes are a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(*self.0, Backing::Mapped(_))
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &*self.0 {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Bytes({} bytes, {})",
            self.len(),
            if self.is_mapped() { "mapped" } else { "owned" }
        )
    }
}
