//! The memory planner: an executor that allocates exactly as a GPU would and runs nothing.
//!
//! The GPU backend's memory use depends only on the shapes of what it allocates, never on the
//! values, so one iteration on this executor (kernels skipped: a launch only checks that the
//! kernel exists and its parameter struct has the right size) tells a configuration's device
//! memory — persistent state plus the per-iteration arena's peak — in a moment on any machine,
//! where the emulator would take many minutes at the paper's widths. `gtadapt train --dry-run`
//! reports it. Its buffers are host memory that stays zero (allocated lazily by the OS).

use super::{DeviceBuffer, DeviceRepr, Emulator, Executor, GpuError, LaunchConfig, Memory};
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Allocates like a device; launches nothing, but counts the launches, in all and per kernel
/// (clones share the counts).
#[derive(Clone, Debug, Default)]
pub struct Planner {
    launches: Arc<AtomicU64>,
    by_kernel: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Planner {
    /// Kernel launches so far.
    pub fn launches(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    /// Launches so far per kernel.
    pub fn launches_by_kernel(&self) -> BTreeMap<String, u64> {
        self.by_kernel.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Executor for Planner {
    fn name(&self) -> &'static str {
        "planner"
    }

    fn params_size(&self, kernel: &str) -> Option<usize> {
        Emulator.params_size(kernel)
    }

    unsafe fn launch(
        &self,
        kernel: &str,
        _cfg: LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<(), GpuError> {
        if self.params_size(kernel).is_none() {
            return Err(GpuError::UnknownKernel {
                kernel: kernel.to_string(),
            });
        }
        if params.is_empty() || params[0].is_null() {
            return Err(GpuError::InvalidLaunch {
                kernel: kernel.to_string(),
                reason: "empty parameter array".into(),
            });
        }
        self.launches.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.by_kernel.lock() {
            *m.entry(kernel.to_string()).or_default() += 1;
        }
        Ok(())
    }
}

impl Memory for Planner {
    type Buf<T: DeviceRepr> = DeviceBuffer<T>;
    /// The planner never captures: a planned iteration launches (counts) every kernel.
    type Graph = ();
    fn capture_begin(&self) -> Result<bool, GpuError> {
        Ok(false)
    }
    fn capture_end(&self) -> Result<(), GpuError> {
        Err(GpuError::InvalidLaunch {
            kernel: "graph".into(),
            reason: "the planner does not capture".into(),
        })
    }
    fn graph_launch(&self, _graph: &()) -> Result<(), GpuError> {
        Ok(())
    }
    fn alloc_zeroed<T: DeviceRepr>(&self, len: usize) -> Result<DeviceBuffer<T>, GpuError> {
        Emulator.alloc_zeroed(len)
    }
    fn view<T: DeviceRepr>(
        &self,
        chunk: &Arc<DeviceBuffer<u8>>,
        byte_offset: usize,
        len: usize,
    ) -> Result<DeviceBuffer<T>, GpuError> {
        Emulator.view(chunk, byte_offset, len)
    }
}
