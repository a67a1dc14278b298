//! What this machine can run: the CUDA driver and GPUs (probed through cudarc's dynamic
//! loading, so a machine without CUDA gets a clear answer instead of a crash) and the NVRTC
//! runtime compiler.

use cudarc::driver::{result as drv, sys as drv_sys};

/// One visible GPU.
#[derive(Clone, Debug)]
pub struct GpuInfo {
    pub ordinal: i32,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_memory_bytes: usize,
}

/// The outcome of probing the CUDA driver.
#[derive(Clone, Debug)]
pub enum CudaStatus {
    /// libcuda could not be loaded: no NVIDIA driver on this machine.
    NoDriver,
    /// The driver loaded but failed to initialize or enumerate (message from the driver).
    DriverError(String),
    /// The driver works; `gpus` may be empty.
    Ready {
        driver_version: i32,
        gpus: Vec<GpuInfo>,
    },
}

/// Probe the CUDA driver. Never panics: cudarc panics when it resolves a symbol from a
/// missing library, so the library's presence is checked first.
pub fn probe_cuda() -> CudaStatus {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    if !unsafe { drv_sys::is_culib_present() } {
        return CudaStatus::NoDriver;
    }
    if let Err(e) = drv::init() {
        return CudaStatus::DriverError(format!("cuInit failed: {e}"));
    }
    let mut version = 0i32;
    // SAFETY: the driver library is loaded (checked above); the pointer is to a live i32.
    let rc = unsafe { drv_sys::cuDriverGetVersion(&mut version) };
    if rc != drv_sys::CUresult::CUDA_SUCCESS {
        return CudaStatus::DriverError(format!("cuDriverGetVersion failed: {rc:?}"));
    }
    let count = match drv::device::get_count() {
        Ok(c) => c,
        Err(e) => return CudaStatus::DriverError(format!("cuDeviceGetCount failed: {e}")),
    };
    let mut gpus = Vec::new();
    for ordinal in 0..count {
        match gpu_info(ordinal) {
            Ok(info) => gpus.push(info),
            Err(e) => return CudaStatus::DriverError(format!("GPU {ordinal}: {e}")),
        }
    }
    CudaStatus::Ready {
        driver_version: version,
        gpus,
    }
}

fn gpu_info(ordinal: i32) -> Result<GpuInfo, drv::DriverError> {
    use drv_sys::CUdevice_attribute as A;
    let dev = drv::device::get(ordinal)?;
    let name = drv::device::get_name(dev)?;
    // SAFETY: `dev` was returned by cuDeviceGet for a valid ordinal.
    let (major, minor, mem) = unsafe {
        (
            drv::device::get_attribute(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            drv::device::get_attribute(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            drv::device::total_mem(dev)?,
        )
    };
    Ok(GpuInfo {
        ordinal,
        name,
        compute_capability: (major, minor),
        total_memory_bytes: mem,
    })
}

/// The NVRTC version, or `None` when the library cannot be loaded.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    // SAFETY: only tries to dlopen the NVRTC library by its usual names.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return None;
    }
    let (mut major, mut minor) = (0i32, 0i32);
    // SAFETY: the library is loaded (checked above); the pointers are to live i32s.
    let rc = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (rc == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
}

/// Formats a CUDA version number (e.g. 12080 → "12.8").
pub fn format_cuda_version(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probing_never_panics_and_formats_versions() {
        // On a machine without CUDA this must report NoDriver, not crash; with a GPU, Ready.
        match probe_cuda() {
            CudaStatus::NoDriver | CudaStatus::DriverError(_) => {}
            CudaStatus::Ready { gpus, .. } => {
                for g in gpus {
                    assert!(g.compute_capability.0 >= 3 && g.total_memory_bytes > 0);
                }
            }
        }
        let _ = nvrtc_version();
        assert_eq!(format_cuda_version(12080), "12.8");
        assert_eq!(format_cuda_version(13000), "13.0");
    }
}
