//! The SIMT emulator executor: runs kernels/*.cu on the CPU through `gta_emu_launch`
//! (kernels/emu/runtime.cpp, built into this crate by build.rs). Device memory is host memory
//! ([`super::DeviceBuffer`] addresses are host addresses).
//!
//! Environment: `GTA_EMU_THREADS=N` runs blocks on N OS threads (default 1: deterministic
//! float atomics), `GTA_EMU_STACK_KB` sets each CUDA thread's fiber stack (default 64),
//! `GTA_EMU_SWITCH=ucontext` uses glibc's swapcontext instead of the x86-64 assembly switch.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use super::{Executor, GpuError, LaunchConfig};

extern "C" {
    fn gta_emu_launch(
        kernel: *const c_char,
        gx: u32,
        gy: u32,
        gz: u32,
        bx: u32,
        by: u32,
        bz: u32,
        dynamic_smem: usize,
        params: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn gta_emu_kernel_params_size(kernel: *const c_char) -> usize;
    fn gta_emu_kernel_module(kernel: *const c_char) -> *const c_char;
    static gta_emu_kernel_table_len: usize;
}

/// The CPU SIMT emulator. Stateless: per-thread fiber stacks live in the C++ runtime, so one
/// `Emulator` may be used from several threads at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct Emulator;

impl Emulator {
    pub fn new() -> Self {
        Emulator
    }

    /// How many kernels the emulator's registry holds (every GTA_KERNEL of kernels/*.cu).
    pub fn kernel_count(&self) -> usize {
        // SAFETY: a constant defined by the generated registry (build.rs), never written.
        unsafe { gta_emu_kernel_table_len }
    }

    /// The kernels/*.cu file (without extension) that defines `kernel`, if any.
    pub fn module_of(&self, kernel: &str) -> Option<String> {
        let name = CString::new(kernel).ok()?;
        // SAFETY: `name` is a valid NUL-terminated string; the result is null or points to a
        // static string of the generated registry.
        let m = unsafe { gta_emu_kernel_module(name.as_ptr()) };
        // SAFETY: non-null results are static NUL-terminated strings.
        (!m.is_null()).then(|| unsafe { CStr::from_ptr(m) }.to_string_lossy().into_owned())
    }
}

impl Executor for Emulator {
    fn name(&self) -> &'static str {
        "emulator"
    }

    fn params_size(&self, kernel: &str) -> Option<usize> {
        let name = CString::new(kernel).ok()?;
        // SAFETY: `name` is a valid NUL-terminated string; the call only looks it up.
        let size = unsafe { gta_emu_kernel_params_size(name.as_ptr()) };
        (size != 0).then_some(size)
    }

    /// # Safety
    /// The contract of [`Executor::launch`].
    unsafe fn launch(
        &self,
        kernel: &str,
        cfg: LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<(), GpuError> {
        let name = CString::new(kernel).map_err(|_| GpuError::UnknownKernel {
            kernel: kernel.to_string(),
        })?;
        if params.is_empty() || params[0].is_null() {
            return Err(GpuError::InvalidLaunch {
                kernel: kernel.to_string(),
                reason: "empty parameter array".into(),
            });
        }
        let mut err = vec![0 as c_char; 1024];
        let [gx, gy, gz] = cfg.grid;
        let [bx, by, bz] = cfg.block;
        // SAFETY: `name` and `err` are live for the call and `err_len` is the buffer's length;
        // `params` is non-empty and, per this function's contract, params[0] points to the
        // kernel's parameter struct with valid device (= host) pointers. The runtime checks the
        // launch shape and returns (never unwinds) on error; launches are synchronous.
        let rc = unsafe {
            gta_emu_launch(
                name.as_ptr(),
                gx,
                gy,
                gz,
                bx,
                by,
                bz,
                cfg.dynamic_smem,
                params.as_mut_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: the runtime NUL-terminates whatever it writes into `err` (zeroed beforehand).
        let message = unsafe { CStr::from_ptr(err.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let kernel = kernel.to_string();
        Err(match rc {
            1 => GpuError::UnknownKernel { kernel },
            2 => GpuError::InvalidLaunch {
                kernel,
                reason: message,
            },
            _ => GpuError::KernelFailed { kernel, message },
        })
    }
}
