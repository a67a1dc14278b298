//! Tests of the data module: IDX files, MAT-files, import, fetch (against a local HTTP server),
//! batching, the embedded pair and the `data` CLI. One test binary (one link) for all of them.

mod batch;
mod cli;
mod common;
mod embedded;
mod fetch;
mod idx;
mod import;
mod mat;
