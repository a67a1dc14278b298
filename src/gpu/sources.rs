//! The kernel sources embedded at build time (kernels/*.cu and kernels/*.cuh), and the PTX
//! nvcc made of them when build.rs found a CUDA toolkit (for `compute_<CUDA_COMPUTE_CAP>`,
//! default compute_80). Without that PTX, the CUDA executor compiles the sources with NVRTC
//! for the GPU it finds (and caches the PTX on disk, see [`super::cuda`]).

mod generated {
    include!(concat!(env!("OUT_DIR"), "/gta_kernel_sources.rs"));
}

/// (include name, text) of every kernels/*.cuh, as NVRTC headers.
pub const HEADERS: &[(&str, &str)] = generated::HEADERS;
/// (module, text) of every kernels/*.cu; the module is the file stem.
pub const SOURCES: &[(&str, &str)] = generated::SOURCES;
/// (arch, [(module, PTX)]) when nvcc compiled every module at build time.
pub const PTX: Option<(&str, &[(&str, &str)])> = generated::PTX;

/// The nvcc build.rs used, if any.
pub fn build_nvcc() -> Option<&'static str> {
    Some(env!("GTADAPT_BUILD_NVCC")).filter(|s| !s.is_empty())
}

/// The source of `module`.
pub fn source(module: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(m, _)| *m == module).map(|(_, s)| *s)
}

/// The build-time PTX of `module`, with its arch.
pub fn embedded_ptx(module: &str) -> Option<(&'static str, &'static str)> {
    let (arch, list) = PTX?;
    list.iter()
        .find(|(m, _)| *m == module)
        .map(|(_, p)| (arch, *p))
}

pub use super::kernel_names::kernel_names;

/// The module (kernels/*.cu stem) that declares `kernel`.
pub fn module_of(kernel: &str) -> Option<&'static str> {
    SOURCES
        .iter()
        .find(|(_, src)| kernel_names(src).iter().any(|k| k == kernel))
        .map(|(m, _)| *m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_sources_and_registry() {
        assert!(HEADERS.iter().any(|(n, _)| *n == "common.cuh"));
        assert!(HEADERS.iter().any(|(n, _)| *n == "params.cuh"));
        assert!(source("selftest").is_some_and(|s| s.contains("selftest_block_sum")));
        assert_eq!(module_of("selftest_block_sum"), Some("selftest"));
        assert_eq!(module_of("no_such_kernel"), None);
        assert_eq!(
            kernel_names(
                "GTA_KERNEL(a, P) {\n  GTA_KERNEL_BOUNDS(b_2, Q, 256) {\n// GTA_KERNEL(c, P)"
            ),
            ["a", "b_2"]
        );
    }
}
