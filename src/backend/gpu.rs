//! The GPU backend (next commit).
