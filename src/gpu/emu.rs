//! The SIMT emulator executor: runs kernels/*.cu on the CPU through `gta_emu_launch`
//! (kernels/emu/runtime.cpp, built into this crate by build.rs). Device memory is host memory
//! ([`super::DeviceBuffer`] addresses are host addresses).
//!
//! Environment: `GTA_EMU_THREADS=N` runs blocks on N OS threads (default 1: deterministic
//! float atomics), `GTA_EMU_STACK_KB` sets each CUDA thread's fiber stack (default 64),
//! `GTA_EMU_SWITCH=ucontext` uses glibc's swapcontext instead of the x86-64 assembly switch.

use std::cell::RefCell;
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

/// One recorded launch: the kernel, its shape and a copy of its parameter struct.
struct Recorded {
    kernel: String,
    cfg: LaunchConfig,
    /// The parameter struct's bytes, in u64 words so the copy is 8-byte aligned like the
    /// original (#[repr(C)] structs of u64/u32/f32 fields).
    params: Vec<u64>,
}

/// Launches recorded by [`super::Memory::capture_begin`] / `capture_end`: the emulator's
/// CUDA graph. Like a CUDA graph it holds the parameter values of the capture (device
/// addresses included), so replaying it is correct exactly when those addresses still hold
/// what the captured iteration expects (the GPU backend checks that).
#[derive(Default)]
pub struct EmuGraph {
    launches: Vec<Recorded>,
}

impl EmuGraph {
    /// Number of recorded launches.
    pub fn len(&self) -> usize {
        self.launches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.launches.is_empty()
    }

    /// Runs the recorded launches in order.
    pub fn launch(&self, emu: &Emulator) -> Result<(), GpuError> {
        if CAPTURE.with(|c| c.borrow().is_some()) {
            return Err(capture_error("a graph was launched during a capture"));
        }
        for r in &self.launches {
            let mut copy = r.params.clone();
            let mut array = [copy.as_mut_ptr().cast::<c_void>()];
            // SAFETY: `array[0]` points to a copy of the parameter struct recorded from a
            // launch whose caller vouched for it (Executor::launch's contract); the graph's
            // owner guarantees the addresses it holds are still valid (see the type's docs).
            unsafe { emu.launch(&r.kernel, r.cfg, &mut array)? };
        }
        Ok(())
    }
}

thread_local! {
    /// The launches being recorded on this thread (like CUDA's thread-local capture mode).
    static CAPTURE: RefCell<Option<Vec<Recorded>>> = const { RefCell::new(None) };
}

fn capture_error(reason: &str) -> GpuError {
    GpuError::InvalidLaunch {
        kernel: "graph capture".into(),
        reason: reason.into(),
    }
}

pub(crate) fn capture_begin() -> Result<(), GpuError> {
    CAPTURE.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_some() {
            return Err(capture_error("a capture is already in progress"));
        }
        *c = Some(Vec::new());
        Ok(())
    })
}

pub(crate) fn capture_end() -> Result<EmuGraph, GpuError> {
    CAPTURE.with(|c| {
        let launches = c
            .borrow_mut()
            .take()
            .ok_or_else(|| capture_error("no capture in progress"))?;
        Ok(EmuGraph { launches })
    })
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
        let capturing = CAPTURE.with(|c| c.borrow().is_some());
        if capturing {
            let size = self
                .params_size(kernel)
                .ok_or_else(|| GpuError::UnknownKernel {
                    kernel: kernel.to_string(),
                })?;
            let mut words = vec![0u64; size.div_ceil(8)];
            // SAFETY: params[0] points to the kernel's parameter struct (this function's
            // contract), whose size the registry reports; `words` has room for it.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    params[0].cast::<u8>(),
                    words.as_mut_ptr().cast::<u8>(),
                    size,
                )
            };
            CAPTURE.with(|c| {
                if let Some(list) = c.borrow_mut().as_mut() {
                    list.push(Recorded {
                        kernel: kernel.to_string(),
                        cfg,
                        params: words,
                    });
                }
            });
            return Ok(());
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
