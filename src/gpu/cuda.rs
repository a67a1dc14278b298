//! The CUDA executor: the kernels of kernels/*.cu on a GPU through the driver API (cudarc,
//! libcuda loaded dynamically), with the same launch ABI as the emulator (a kernel name, a
//! [`LaunchConfig`], the `void**` array `cuLaunchKernel` takes).
//!
//! PTX per module (kernels/<module>.cu), first that applies:
//! 1. `GTADAPT_PTX_DIR=DIR`: `DIR/<module>.compute_NN.ptx` with the highest NN the GPU runs
//!    (written by tests/compile_kernels.rs with GTADAPT_PTX_OUT: for a GPU machine without
//!    NVRTC);
//! 2. the PTX nvcc made at build time (when build.rs found a toolkit; `compute_<CUDA_COMPUTE_CAP>`,
//!    default compute_80), if the GPU runs it;
//! 3. NVRTC at run time for the GPU's compute capability, cached on disk per (arch, source
//!    hash) under `$GTADAPT_PTX_CACHE`, or `$XDG_CACHE_HOME/gtadapt/ptx`, or
//!    `~/.cache/gtadapt/ptx`.
//!
//! No driver → [`GpuError::NoDriver`], never a panic (cudarc panics when it resolves a symbol
//! of a missing library, so its presence is checked first).

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{result as drv, sys, CudaContext, CudaStream, DriverError};
use sha2::{Digest, Sha256};

use super::{
    nvrtc, sources, Buffer, DeviceRepr, Emulator, Executor, GpuError, LaunchConfig, Memory,
};

/// Whether libcuda can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    unsafe { sys::is_culib_present() }
}

/// What to do about a failed driver call, for the message (empty when there is nothing
/// specific to say).
pub fn hint_for(code: sys::CUresult) -> &'static str {
    use sys::CUresult as R;
    match code {
        R::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => {
            " — the PTX is newer than this driver supports (it was made by a newer CUDA \
             compiler than the driver). Update the NVIDIA driver, or make older PTX: rebuild \
             with an older CUDA toolkit (nvcc at build time, CUDA_COMPUTE_CAP set to this \
             GPU), or use an older NVRTC at run time (LD_LIBRARY_PATH), or point \
             GTADAPT_PTX_DIR at PTX from an older compiler"
        }
        R::CUDA_ERROR_NO_BINARY_FOR_GPU | R::CUDA_ERROR_INVALID_PTX => {
            " — the PTX does not suit this GPU: rebuild with CUDA_COMPUTE_CAP set to this GPU's \
             compute capability (or unset it to compile with NVRTC at run time)"
        }
        R::CUDA_ERROR_NO_DEVICE => " — the driver is installed but sees no GPU",
        R::CUDA_ERROR_OUT_OF_MEMORY => {
            " — out of GPU memory: lower --batch-size (or the widths), or free the GPU; \
             `gtadapt train --dry-run` prints the memory a configuration needs"
        }
        _ => "",
    }
}

/// A [`GpuError::Driver`] for `call` failing with `e` while doing `what` (which names the
/// module and/or kernel).
pub fn driver_error(what: impl Into<String>, call: &'static str, e: DriverError) -> GpuError {
    let code = e.0;
    // The Debug name needs no driver; the description comes from libcuda (calling it without
    // the library would panic).
    let name = format!("{code:?}");
    let desc = if driver_present() {
        e.error_string()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    GpuError::Driver {
        what: what.into(),
        call,
        code: if desc.is_empty() {
            name
        } else {
            format!("{name} ({desc})")
        },
        hint: hint_for(code).to_string(),
    }
}

/// The PTX cache folder: `$GTADAPT_PTX_CACHE`, `$XDG_CACHE_HOME/gtadapt/ptx`, or
/// `~/.cache/gtadapt/ptx`.
pub fn ptx_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("GTADAPT_PTX_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("gtadapt/ptx")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/gtadapt/ptx")))
}

/// The cache file name of `module` compiled for `arch`: it changes with the source, every
/// header, the compile options and the NVRTC version.
pub fn cache_key(
    module: &str,
    arch: &str,
    source: &str,
    headers: &[(&str, &str)],
    nvrtc_version: (i32, i32),
) -> String {
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    part(source.as_bytes());
    for (name, text) in headers {
        part(name.as_bytes());
        part(text.as_bytes());
    }
    for o in nvrtc::OPTIONS {
        part(o.as_bytes());
    }
    part(format!("nvrtc {}.{}", nvrtc_version.0, nvrtc_version.1).as_bytes());
    let digest = h.finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{module}.{arch}.{hex}.ptx")
}

/// The compute capability NN of an arch name like "compute_80" or "sm_90".
fn arch_cc(arch: &str) -> Option<u32> {
    arch.rsplit('_').next()?.parse().ok()
}

/// How this binary gets PTX (for `gtadapt info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelPath {
    /// PTX from `GTADAPT_PTX_DIR`.
    PtxDir(PathBuf),
    /// PTX nvcc made at build time, for this arch.
    Embedded { arch: &'static str, nvcc: String },
    /// NVRTC at run time; its version when the library loads.
    Nvrtc(Option<(i32, i32)>),
}

impl KernelPath {
    pub fn current() -> Self {
        if let Some(d) = std::env::var_os("GTADAPT_PTX_DIR").filter(|d| !d.is_empty()) {
            return KernelPath::PtxDir(d.into());
        }
        if let Some((arch, _)) = sources::PTX {
            return KernelPath::Embedded {
                arch,
                nvcc: sources::build_nvcc().unwrap_or_default().to_string(),
            };
        }
        KernelPath::Nvrtc(nvrtc::version())
    }
}

impl std::fmt::Display for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelPath::PtxDir(d) => write!(f, "PTX files from GTADAPT_PTX_DIR={}", d.display()),
            KernelPath::Embedded { arch, nvcc } => write!(
                f,
                "PTX embedded at build time by nvcc ({nvcc}) for {arch} (GPUs of a lower \
                 compute capability fall back to NVRTC at run time)"
            ),
            KernelPath::Nvrtc(Some((a, b))) => write!(
                f,
                "NVRTC at run time (libnvrtc {a}.{b} found), PTX cached in {}",
                ptx_cache_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|| "(no cache folder)".into())
            ),
            KernelPath::Nvrtc(None) => write!(
                f,
                "NVRTC at run time, but libnvrtc.so.12 was NOT found: the CUDA executor cannot \
                 compile kernels (install the CUDA toolkit or scripts/install-cuda-compilers.sh \
                 and put its lib/ folder on LD_LIBRARY_PATH, or set GTADAPT_PTX_DIR)"
            ),
        }
    }
}

struct Module {
    cu_module: sys::CUmodule,
    functions: HashMap<String, sys::CUfunction>,
}

/// Runs kernels on GPU 0 on its own stream. Launches are asynchronous, in stream order (every
/// buffer read, write and drop waits for the stream first); GTADAPT_CUDA_SYNC=1 or
/// [`CudaExecutor::set_async_launches`]`(false)` makes each launch wait for its kernel.
pub struct CudaExecutor {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    cc: (i32, i32),
    name: String,
    modules: Mutex<HashMap<String, Module>>,
    /// When set (the default; GTADAPT_CUDA_SYNC=1 clears it), a launch returns without
    /// waiting for the kernel, and a kernel fault surfaces at the next synchronizing call (a
    /// copy), which says how to find the kernel; when clear, every launch waits and a failing
    /// kernel is named in its own error.
    async_launches: AtomicBool,
    /// Set between `capture_begin` and `capture_end`: launches are recorded into a CUDA graph
    /// (stream capture), so they never wait for the stream.
    capturing: AtomicBool,
}

// SAFETY: the raw module and function handles are only used with the context bound and under
// the `modules` mutex; the driver API is thread-safe for these calls.
unsafe impl Send for CudaExecutor {}
// SAFETY: as above; all interior mutability is behind the mutex.
unsafe impl Sync for CudaExecutor {}

impl std::fmt::Debug for CudaExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaExecutor")
            .field("gpu", &self.name)
            .field("compute_capability", &self.cc)
            .finish()
    }
}

impl CudaExecutor {
    /// The executor on GPU 0. Errors (never panics) when there is no driver or no GPU.
    pub fn new() -> Result<Self, GpuError> {
        if !driver_present() {
            return Err(GpuError::NoDriver);
        }
        drv::init().map_err(|e| driver_error("CUDA driver", "cuInit", e))?;
        let count = drv::device::get_count()
            .map_err(|e| driver_error("CUDA driver", "cuDeviceGetCount", e))?;
        if count < 1 {
            return Err(GpuError::Driver {
                what: "CUDA driver".into(),
                call: "cuDeviceGetCount",
                code: "0 devices".into(),
                hint: hint_for(sys::CUresult::CUDA_ERROR_NO_DEVICE).into(),
            });
        }
        let ctx = CudaContext::new(0).map_err(|e| driver_error("GPU 0", "cuCtxCreate", e))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| driver_error("GPU 0", "cuStreamCreate", e))?;
        let dev = drv::device::get(0).map_err(|e| driver_error("GPU 0", "cuDeviceGet", e))?;
        let name = drv::device::get_name(dev).unwrap_or_else(|_| "GPU 0".into());
        use sys::CUdevice_attribute as A;
        // SAFETY: `dev` is a valid device handle from cuDeviceGet.
        let cc = unsafe {
            (
                drv::device::get_attribute(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                drv::device::get_attribute(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
            )
        };
        let cc = (
            cc.0.map_err(|e| driver_error("GPU 0", "cuDeviceGetAttribute", e))?,
            cc.1.map_err(|e| driver_error("GPU 0", "cuDeviceGetAttribute", e))?,
        );
        Ok(CudaExecutor {
            ctx,
            stream,
            cc,
            name,
            modules: Mutex::new(HashMap::new()),
            async_launches: AtomicBool::new(
                !std::env::var("GTADAPT_CUDA_SYNC").is_ok_and(|v| v == "1"),
            ),
            capturing: AtomicBool::new(false),
        })
    }

    /// Whether launches return without waiting for the kernel (default: they do, unless
    /// GTADAPT_CUDA_SYNC=1). Either
    /// way every [`Buffer::read`], [`Buffer::write`] and buffer drop waits for the stream
    /// first, so host code never sees a buffer a kernel is still using; what changes is that a
    /// failing kernel is reported by the next synchronization (possibly naming a later
    /// kernel). For timing: back-to-back launches without a host round trip each.
    pub fn set_async_launches(&self, on: bool) {
        self.async_launches.store(on, Ordering::SeqCst);
    }

    /// Device time of each of `n` runs of `run` (given the run's index), in milliseconds,
    /// from CUDA events recorded on the executor's stream between the runs. Launches are
    /// asynchronous meanwhile (so the runs queue back to back and the host's launch overhead
    /// is hidden when the kernels are longer than it); the stream is synchronized before this
    /// returns, and a failed kernel fails the whole measurement.
    pub fn time_each(
        &self,
        n: usize,
        mut run: impl FnMut(usize) -> Result<(), GpuError>,
    ) -> Result<Vec<f64>, GpuError> {
        let what = "timing events";
        self.bind(what)?;
        let events = (0..=n)
            .map(|_| {
                self.ctx
                    .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(|e| driver_error(what, "cuEventCreate", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let was = self.async_launches.swap(true, Ordering::SeqCst);
        let queued = (|| -> Result<(), GpuError> {
            for (i, pair) in events.windows(2).enumerate() {
                if i == 0 {
                    pair[0]
                        .record(&self.stream)
                        .map_err(|e| driver_error(what, "cuEventRecord", e))?;
                }
                run(i)?;
                pair[1]
                    .record(&self.stream)
                    .map_err(|e| driver_error(what, "cuEventRecord", e))?;
            }
            Ok(())
        })();
        self.async_launches.store(was, Ordering::SeqCst);
        let synced = self.synchronize();
        queued?;
        synced?;
        events
            .windows(2)
            .map(|p| {
                p[0].elapsed_ms(&p[1])
                    .map(f64::from)
                    .map_err(|e| driver_error(what, "cuEventElapsedTime", e))
            })
            .collect()
    }

    /// Device-to-device copy of `bytes` bytes from `src` to `dst` on the executor's stream
    /// (waits for it unless launches are asynchronous). Panics when a buffer is shorter.
    pub fn copy_device(
        &self,
        src: &CudaBuffer<u8>,
        dst: &mut CudaBuffer<u8>,
        bytes: usize,
    ) -> Result<(), GpuError> {
        assert!(
            bytes <= src.len && bytes <= dst.len,
            "copy_device: {bytes} bytes"
        );
        let what = "device → device copy";
        self.bind(what)?;
        // SAFETY: both allocations belong to this context and hold ≥ `bytes` bytes (checked);
        // `&mut dst` excludes other host users; stream order serializes it with the kernels.
        unsafe { drv::memcpy_dtod_async(dst.ptr, src.ptr, bytes, self.stream.cu_stream()) }
            .map_err(|e| driver_error(what, "cuMemcpyDtoDAsync", e))?;
        if self.async_launches.load(Ordering::SeqCst) {
            Ok(())
        } else {
            self.synchronize()
        }
    }

    /// The driver's CUDA version as (major, minor), e.g. (13, 0).
    pub fn driver_version(&self) -> Option<(i32, i32)> {
        let mut v = 0i32;
        // SAFETY: writes one int; the driver is loaded (this executor exists).
        let r = unsafe { sys::cuDriverGetVersion(&mut v) };
        (r == sys::CUresult::CUDA_SUCCESS).then_some((v / 1000, (v % 1000) / 10))
    }

    /// The GPU's compute capability.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    /// The GPU's name.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    fn bind(&self, what: &str) -> Result<(), GpuError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| driver_error(what, "cuCtxSetCurrent", e))
    }

    /// Waits for everything launched on the executor's stream.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.stream
            .synchronize()
            .map_err(|e| driver_error("stream", "cuStreamSynchronize", e))
    }

    /// The PTX of `module` for this GPU (see the module docs for the order).
    fn ptx_for(&self, module: &str) -> Result<String, GpuError> {
        let gpu_cc = (self.cc.0 * 10 + self.cc.1) as u32;
        if let Some(dir) = std::env::var_os("GTADAPT_PTX_DIR").filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            let prefix = format!("{module}.compute_");
            let best = std::fs::read_dir(&dir)
                .map_err(|e| GpuError::Driver {
                    what: format!("module `{module}`"),
                    call: "reading GTADAPT_PTX_DIR",
                    code: format!("{}: {e}", dir.display()),
                    hint: String::new(),
                })?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .filter_map(|n| {
                    let cc: u32 = n
                        .strip_prefix(&prefix)?
                        .strip_suffix(".ptx")?
                        .parse()
                        .ok()?;
                    (cc <= gpu_cc).then_some((cc, n))
                })
                .max();
            if let Some((_, file)) = best {
                return std::fs::read_to_string(dir.join(&file)).map_err(|e| GpuError::Driver {
                    what: format!("module `{module}`"),
                    call: "reading PTX",
                    code: format!("{}: {e}", dir.join(file).display()),
                    hint: String::new(),
                });
            }
        }
        if let Some((arch, ptx)) = sources::embedded_ptx(module) {
            if arch_cc(arch).is_some_and(|cc| cc <= gpu_cc) {
                return Ok(ptx.to_string());
            }
        }
        let source = sources::source(module).ok_or_else(|| GpuError::UnknownKernel {
            kernel: format!("(module `{module}`)"),
        })?;
        let arch = nvrtc::ptx_arch(self.cc);
        let version = nvrtc::version().ok_or_else(|| nvrtc::NvrtcError::Unavailable {
            module: module.to_string(),
        })?;
        let cached = ptx_cache_dir()
            .map(|d| d.join(cache_key(module, &arch, source, sources::HEADERS, version)));
        if let Some(ptx) = cached
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        {
            return Ok(ptx);
        }
        let ptx = nvrtc::compile_ptx(module, source, sources::HEADERS, &arch)?;
        if let Some(path) = cached {
            // A cache that cannot be written only costs a recompilation next time.
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, &ptx).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
        Ok(ptx)
    }

    /// The function handle of `kernel`, loading its module on first use.
    fn function(&self, kernel: &str) -> Result<sys::CUfunction, GpuError> {
        let module = sources::module_of(kernel).ok_or_else(|| GpuError::UnknownKernel {
            kernel: kernel.to_string(),
        })?;
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if !modules.contains_key(module) {
            let ptx = self.ptx_for(module)?;
            let image = CString::new(ptx).map_err(|_| GpuError::Driver {
                what: format!("module `{module}`"),
                call: "cuModuleLoadData",
                code: "PTX contains a NUL byte".into(),
                hint: String::new(),
            })?;
            self.bind(&format!("module `{module}`"))?;
            // SAFETY: the context is current on this thread; `image` is a NUL-terminated PTX
            // image that lives for the call (the driver copies it).
            let cu_module = unsafe { drv::module::load_data(image.as_ptr().cast()) }
                .map_err(|e| driver_error(format!("module `{module}`"), "cuModuleLoadData", e))?;
            modules.insert(
                module.to_string(),
                Module {
                    cu_module,
                    functions: HashMap::new(),
                },
            );
        }
        let m = modules.get_mut(module).expect("inserted above");
        if let Some(f) = m.functions.get(kernel) {
            return Ok(*f);
        }
        let cname = CString::new(kernel).map_err(|_| GpuError::UnknownKernel {
            kernel: kernel.to_string(),
        })?;
        self.bind(&format!("module `{module}`, kernel `{kernel}`"))?;
        // SAFETY: the context is current; the module handle is live (unloaded only on drop).
        let f = unsafe { drv::module::get_function(m.cu_module, cname) }.map_err(|e| {
            driver_error(
                format!("module `{module}`, kernel `{kernel}`"),
                "cuModuleGetFunction",
                e,
            )
        })?;
        m.functions.insert(kernel.to_string(), f);
        Ok(f)
    }
}

impl Drop for CudaExecutor {
    fn drop(&mut self) {
        let modules = std::mem::take(self.modules.get_mut().unwrap_or_else(|p| p.into_inner()));
        if self.ctx.bind_to_thread().is_err() {
            return;
        }
        let _ = self.stream.synchronize();
        for (_, m) in modules {
            // SAFETY: loaded by this executor in this (current) context, unloaded once; no
            // launch is in flight (synchronized above) and function handles die with it.
            let _ = unsafe { drv::module::unload(m.cu_module) };
        }
    }
}

/// Checks a launch shape against the CUDA limits (names the kernel).
pub fn check_launch(kernel: &str, cfg: &LaunchConfig) -> Result<(), GpuError> {
    let bad = |reason: String| {
        Err(GpuError::InvalidLaunch {
            kernel: kernel.to_string(),
            reason,
        })
    };
    let threads: u64 = cfg.block.iter().map(|d| *d as u64).product();
    if cfg.grid.contains(&0) || cfg.block.contains(&0) {
        return bad(format!(
            "zero-sized grid {:?} or block {:?}",
            cfg.grid, cfg.block
        ));
    }
    if threads > 1024 {
        return bad(format!("{threads} threads per block (at most 1024)"));
    }
    if cfg.block[2] > 64 || cfg.grid[1] > 65535 || cfg.grid[2] > 65535 {
        return bad(format!(
            "grid {:?} / block {:?} beyond CUDA's limits",
            cfg.grid, cfg.block
        ));
    }
    if u32::try_from(cfg.dynamic_smem).is_err() {
        return bad(format!(
            "{} bytes of dynamic shared memory",
            cfg.dynamic_smem
        ));
    }
    Ok(())
}

impl Executor for CudaExecutor {
    fn name(&self) -> &'static str {
        "cuda"
    }

    /// The size the kernel sources give the struct: the emulator compiles the same
    /// kernels/params.cuh (both LP64, so the layouts agree).
    fn params_size(&self, kernel: &str) -> Option<usize> {
        Emulator.params_size(kernel)
    }

    fn synchronize(&self) -> Result<(), GpuError> {
        CudaExecutor::synchronize(self)
    }

    /// # Safety
    /// The contract of [`Executor::launch`].
    unsafe fn launch(
        &self,
        kernel: &str,
        cfg: LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<(), GpuError> {
        check_launch(kernel, &cfg)?;
        if params.is_empty() || params[0].is_null() {
            return Err(GpuError::InvalidLaunch {
                kernel: kernel.to_string(),
                reason: "empty parameter array".into(),
            });
        }
        let f = self.function(kernel)?;
        let what = || {
            format!(
                "module `{}`, kernel `{kernel}`",
                sources::module_of(kernel).unwrap_or("?")
            )
        };
        self.bind(&what())?;
        if cfg.dynamic_smem > 48 * 1024 {
            // SAFETY: `f` is a live function of a loaded module in the current context.
            unsafe {
                drv::function::set_function_attribute(
                    f,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    cfg.dynamic_smem as i32,
                )
            }
            .map_err(|e| driver_error(what(), "cuFuncSetAttribute", e))?;
        }
        let [gx, gy, gz] = cfg.grid;
        let [bx, by, bz] = cfg.block;
        // SAFETY: `f` is a live function in the current context; the shape was checked above;
        // per this function's contract params[0] points to the kernel's parameter struct whose
        // device pointers are allocations of this context large enough for the launch; the
        // array outlives the call (cuLaunchKernel copies the argument values).
        unsafe {
            drv::launch_kernel(
                f,
                (gx, gy, gz),
                (bx, by, bz),
                cfg.dynamic_smem as u32,
                self.stream.cu_stream(),
                params,
            )
        }
        .map_err(|e| driver_error(what(), "cuLaunchKernel", e))?;
        if self.async_launches.load(Ordering::SeqCst) || self.capturing.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.stream.synchronize().map_err(|e| {
            match driver_error(what(), "cuStreamSynchronize", e) {
                GpuError::Driver { code, hint, .. } => GpuError::KernelFailed {
                    kernel: kernel.to_string(),
                    message: format!("{code}{hint}"),
                },
                other => other,
            }
        })
    }
}

/// Device memory of the CUDA executor (`cuMemAlloc`), freed on drop.
pub struct CudaBuffer<T: DeviceRepr> {
    ptr: sys::CUdeviceptr,
    len: usize,
    /// `Some` for a view of an arena chunk: the chunk frees the memory, not the view.
    owner: super::KeepAlive,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _t: std::marker::PhantomData<T>,
}

impl<T: DeviceRepr> Buffer<T> for CudaBuffer<T> {
    fn len(&self) -> usize {
        self.len
    }
    fn device_ptr(&self) -> u64 {
        self.ptr
    }
    fn read(&self) -> Result<Vec<T>, GpuError> {
        let what = "device → host copy (after the launches before it; GTADAPT_CUDA_SYNC=1 \
                    names a failing kernel)";
        self.ctx
            .bind_to_thread()
            .map_err(|e| driver_error(what, "cuCtxSetCurrent", e))?;
        self.stream
            .synchronize()
            .map_err(|e| driver_error(what, "cuStreamSynchronize", e))?;
        // SAFETY: DeviceRepr types accept the all-zero bit pattern.
        let zero: T = unsafe { std::mem::zeroed() };
        let mut v = vec![zero; self.len];
        // SAFETY: the context is current; `ptr` holds `len` elements of T (allocated so);
        // `v` has room for `len` elements; the stream is idle so no kernel writes meanwhile.
        unsafe { drv::memcpy_dtoh_sync(&mut v, self.ptr) }
            .map_err(|e| driver_error(what, "cuMemcpyDtoH", e))?;
        Ok(v)
    }
    fn write(&mut self, data: &[T]) -> Result<(), GpuError> {
        assert_eq!(data.len(), self.len, "device buffer length");
        let what = "host → device copy (after the launches before it; GTADAPT_CUDA_SYNC=1 \
                    names a failing kernel)";
        self.ctx
            .bind_to_thread()
            .map_err(|e| driver_error(what, "cuCtxSetCurrent", e))?;
        self.stream
            .synchronize()
            .map_err(|e| driver_error(what, "cuStreamSynchronize", e))?;
        // SAFETY: the context is current; `ptr` has room for `len` = data.len() elements; the
        // stream is idle, and `&mut self` excludes other users of the buffer.
        unsafe { drv::memcpy_htod_sync(self.ptr, data) }
            .map_err(|e| driver_error(what, "cuMemcpyHtoD", e))
    }
}

impl<T: DeviceRepr> Drop for CudaBuffer<T> {
    fn drop(&mut self) {
        if self.owner.is_none() && self.ctx.bind_to_thread().is_ok() {
            let _ = self.stream.synchronize();
            // SAFETY: allocated by cuMemAlloc in this context, freed once; the stream is idle.
            let _ = unsafe { drv::free_sync(self.ptr) };
        }
    }
}

/// A captured iteration: a CUDA graph, instantiated, replayed on the executor's stream.
pub struct CudaGraphExec(cudarc::driver::CudaGraph);

impl Memory for CudaExecutor {
    type Buf<T: DeviceRepr> = CudaBuffer<T>;
    type Graph = CudaGraphExec;
    fn capture_begin(&self) -> Result<bool, GpuError> {
        let what = "CUDA graph capture";
        self.bind(what)?;
        // Thread-local mode: only this thread's unsafe calls (allocations, synchronous
        // copies) would break the capture, and the GPU backend refuses those while capturing.
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| driver_error(what, "cuStreamBeginCapture", e))?;
        self.capturing.store(true, Ordering::SeqCst);
        Ok(true)
    }
    fn capture_end(&self) -> Result<CudaGraphExec, GpuError> {
        let what = "CUDA graph capture";
        self.capturing.store(false, Ordering::SeqCst);
        let graph = self
            .stream
            .end_capture(sys::CUgraphInstantiate_flags_enum(0))
            .map_err(|e| driver_error(what, "cuStreamEndCapture/cuGraphInstantiate", e))?;
        graph.map(CudaGraphExec).ok_or_else(|| GpuError::Driver {
            what: what.into(),
            call: "cuStreamEndCapture",
            code: "no graph (nothing was captured)".into(),
            hint: String::new(),
        })
    }
    fn graph_launch(&self, graph: &CudaGraphExec) -> Result<(), GpuError> {
        let what = "CUDA graph launch";
        graph
            .0
            .launch()
            .map_err(|e| driver_error(what, "cuGraphLaunch", e))?;
        if self.async_launches.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.synchronize()
    }
    fn alloc_zeroed<T: DeviceRepr>(&self, len: usize) -> Result<CudaBuffer<T>, GpuError> {
        let what = "device allocation";
        self.bind(what)?;
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        // SAFETY: the context is current; the size is non-zero.
        let ptr =
            unsafe { drv::malloc_sync(bytes) }.map_err(|e| driver_error(what, "cuMemAlloc", e))?;
        let buf = CudaBuffer {
            ptr,
            len,
            owner: None,
            ctx: self.ctx.clone(),
            stream: self.stream.clone(),
            _t: std::marker::PhantomData,
        };
        // SAFETY: `ptr` addresses `bytes` bytes just allocated in the current context.
        unsafe { drv::memset_d8_sync(ptr, 0, bytes) }
            .map_err(|e| driver_error(what, "cuMemsetD8", e))?;
        Ok(buf)
    }
    fn view<T: DeviceRepr>(
        &self,
        chunk: &Arc<CudaBuffer<u8>>,
        byte_offset: usize,
        len: usize,
    ) -> Result<CudaBuffer<T>, GpuError> {
        super::check_view::<T>(chunk.len, byte_offset, len)?;
        Ok(CudaBuffer {
            ptr: chunk.ptr + byte_offset as u64,
            len,
            owner: Some(chunk.clone()),
            ctx: self.ctx.clone(),
            stream: self.stream.clone(),
            _t: std::marker::PhantomData,
        })
    }
}

/// The CUDA executor for tests: `Some` when a GPU is usable; otherwise prints a SKIP line and
/// returns `None` — or panics when `GTADAPT_REQUIRE_GPU=1` (scripts/gpu-check.sh sets it, so
/// a GPU machine that fails to provide one fails the run instead of passing vacuously).
pub fn executor_for_tests() -> Option<CudaExecutor> {
    match CudaExecutor::new() {
        Ok(e) => Some(e),
        Err(err) => {
            if std::env::var("GTADAPT_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("GTADAPT_REQUIRE_GPU=1 but the CUDA executor is unavailable: {err}");
            }
            eprintln!("SKIP (no GPU): {err}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_change_with_every_input() {
        let h = [("common.cuh", "a"), ("params.cuh", "b")];
        let k = cache_key("conv", "compute_80", "src", &h, (12, 9));
        assert!(
            k.starts_with("conv.compute_80.") && k.ends_with(".ptx"),
            "{k}"
        );
        assert_eq!(k, cache_key("conv", "compute_80", "src", &h, (12, 9)));
        for other in [
            cache_key("conv", "compute_90", "src", &h, (12, 9)),
            cache_key("conv", "compute_80", "src2", &h, (12, 9)),
            cache_key(
                "conv",
                "compute_80",
                "src",
                &[("common.cuh", "a"), ("params.cuh", "c")],
                (12, 9),
            ),
            cache_key("conv", "compute_80", "src", &h, (12, 8)),
            cache_key("pool", "compute_80", "src", &h, (12, 9)),
        ] {
            assert_ne!(k, other);
        }
        assert_eq!(arch_cc("compute_80"), Some(80));
        assert_eq!(arch_cc("sm_90"), Some(90));
    }

    #[test]
    fn driver_errors_explain_ptx_too_new() {
        let e = driver_error(
            "module `conv`",
            "cuModuleLoadData",
            DriverError(sys::CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION),
        );
        let msg = e.to_string();
        assert!(
            msg.contains("module `conv`") && msg.contains("cuModuleLoadData"),
            "{msg}"
        );
        assert!(
            msg.contains("newer than this driver") && msg.contains("Update the NVIDIA driver"),
            "{msg}"
        );
        assert!(msg.contains("CUDA_COMPUTE_CAP"), "{msg}");
        assert!(hint_for(sys::CUresult::CUDA_SUCCESS).is_empty());
        let oom = driver_error(
            "device allocation",
            "cuMemAlloc",
            DriverError(sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY),
        )
        .to_string();
        assert!(
            oom.contains("out of GPU memory") && oom.contains("--batch-size"),
            "{oom}"
        );
        assert!(oom.contains("--dry-run"), "{oom}");
    }

    #[test]
    fn launch_shapes_are_checked() {
        assert!(check_launch("k", &LaunchConfig::linear(10, 256)).is_ok());
        let e = check_launch("k", &LaunchConfig::linear(1, 2048)).unwrap_err();
        assert!(e.to_string().contains("kernel `k`") && e.to_string().contains("1024"));
        assert!(check_launch("k", &LaunchConfig::linear(0, 32)).is_err());
    }

    #[test]
    fn no_driver_is_an_error_not_a_panic() {
        match CudaExecutor::new() {
            Ok(e) => assert!(e.compute_capability().0 >= 3),
            Err(e) => {
                if !driver_present() {
                    assert!(matches!(e, GpuError::NoDriver), "{e:?}");
                    assert!(e.to_string().contains("no CUDA driver"));
                }
            }
        }
        // Without GTADAPT_REQUIRE_GPU this returns None (and says SKIP) on a machine without GPU.
        if std::env::var("GTADAPT_REQUIRE_GPU").is_err() {
            let _ = executor_for_tests();
        }
        let _ = KernelPath::current().to_string();
    }
}
