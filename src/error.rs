//! Typed errors of the library. The CLI adds context with `anyhow`.

use crate::shape::Shape;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operation received tensors whose shapes do not fit together.
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },

    /// A parameter of an operation is out of its valid range (stride 0, label ≥ classes, ...).
    #[error("{op}: invalid argument: {detail}")]
    InvalidArgument { op: &'static str, detail: String },

    /// A tape was used in a way the autograd rules forbid (non-scalar loss, foreign Var, ...).
    #[error("autograd: {0}")]
    Autograd(String),

    /// A tensor with this shape would not fit in memory addressing (element count overflows).
    #[error("shape {0} has too many elements")]
    TooLarge(Shape),

    /// A checkpoint file is unreadable, corrupt, or does not fit the model.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint { path: String, detail: String },

    /// The operating system refused an operation on this path. (The cause is part of the
    /// message, not a separate `source`, so a printed error chain does not repeat it.)
    #[error("I/O error on {path}: {cause}")]
    Io { path: String, cause: std::io::Error },

    /// A kernel launch, device allocation or copy failed (the error names the kernel or the
    /// operation).
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }
    pub(crate) fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            detail: detail.into(),
        }
    }
}
