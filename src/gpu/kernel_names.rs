//! The one rule for finding kernel names in a .cu source, shared by build.rs (which includes
//! this file with `#[path]` to build the emulator's registry) and the CUDA executor (which
//! maps a kernel to its module). No dependencies, so a build script can compile it.

/// Kernel names declared in a .cu source: lines starting with `GTA_KERNEL(name,` or
/// `GTA_KERNEL_BOUNDS(name,`.
pub fn kernel_names(src: &str) -> Vec<String> {
    src.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let rest = line
                .strip_prefix("GTA_KERNEL_BOUNDS(")
                .or_else(|| line.strip_prefix("GTA_KERNEL("))?;
            let name = rest.split(',').next()?.trim();
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .then(|| name.to_string())
        })
        .collect()
}
