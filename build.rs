//! Build script. Records how CUDA kernels (kernels/*.cu) will be compiled, so `gtadapt info`
//! can say so: with nvcc at build time when a toolkit is found (NVCC, CUDA_HOME, CUDA_PATH,
//! PATH), otherwise by NVRTC at run time. It never probes a GPU and never fails for lack of
//! CUDA: the crate builds on machines with no CUDA at all.

use std::path::{Path, PathBuf};

fn find_nvcc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = std::env::var_os(var) {
            let p = Path::new(&home).join("bin").join("nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nvcc"))
            .find(|p| p.is_file())
    })
}

fn main() {
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "PATH", "CUDA_COMPUTE_CAP"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=kernels");
    let kernels = std::fs::read_dir("kernels")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "cu"))
                .count()
        })
        .unwrap_or(0);
    let nvcc = find_nvcc()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=GTADAPT_BUILD_NVCC={nvcc}");
    println!("cargo:rustc-env=GTADAPT_KERNEL_FILES={kernels}");
}
