//! The data module's typed errors. Every variant names the file (or URL, or dataset name) and
//! says what is wrong with it; the CLI adds context with `anyhow`.

use std::fmt;
use std::path::{Path, PathBuf};

/// Everything reading, importing, fetching or batching a dataset can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The operating system refused an operation on this path. (The cause is part of the
    /// message, not a separate `source`, so a printed error chain does not repeat it.)
    #[error("{}: {cause}", .path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// The file (or directory) exists but its content is not what it must be.
    #[error("{}: {problem}", .path.display())]
    Invalid { path: PathBuf, problem: String },

    /// A download failed (connection, HTTP status, truncated body).
    #[error("download of {url} failed: {problem}")]
    Download { url: String, problem: String },

    /// A downloaded (or already present) file does not have the published SHA-256.
    #[error(
        "{}: SHA-256 mismatch (downloaded from {url}): expected {expected}, got {actual}; \
         the file was removed — check the mirror or try again",
        .path.display()
    )]
    Checksum {
        path: PathBuf,
        url: String,
        expected: String,
        actual: String,
    },

    /// A dataset name that is neither built in nor an existing directory.
    #[error("dataset {name:?}: {problem}")]
    Dataset { name: String, problem: String },

    /// A caller passed an argument outside its valid range (batch size 0, ...).
    #[error("{0}")]
    Argument(String),
}

pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.as_ref().to_path_buf(),
            cause: source,
        }
    }
    pub(crate) fn invalid(path: impl AsRef<Path>, problem: impl fmt::Display) -> Self {
        DataError::Invalid {
            path: path.as_ref().to_path_buf(),
            problem: problem.to_string(),
        }
    }
    pub(crate) fn download(url: impl Into<String>, problem: impl fmt::Display) -> Self {
        DataError::Download {
            url: url.into(),
            problem: problem.to_string(),
        }
    }
    pub(crate) fn dataset(name: impl Into<String>, problem: impl fmt::Display) -> Self {
        DataError::Dataset {
            name: name.into(),
            problem: problem.to_string(),
        }
    }
}
