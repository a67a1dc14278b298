//! Subcommands of the `gtadapt` binary that need more than a few lines.

pub mod kernels;
pub mod train;
