//! GPU execution: one launch ABI, several executors.
//!
//! A launch is a kernel name (an `extern "C"` kernel of kernels/*.cu declared with
//! `GTA_KERNEL(name, Params)`), a grid, a block, a dynamic shared-memory size and a `void**`
//! parameter array exactly as `cuLaunchKernel` takes it: `params[0]` points to the kernel's one
//! `#[repr(C)]` parameter struct (mirrored in kernels/params.cuh, sizes asserted on both sides).
//!
//! Executors: [`emu::Emulator`] runs the very same kernel sources on the CPU (the SIMT emulator
//! of kernels/emu/, built by build.rs on every machine). [`cuda::CudaExecutor`] (cudarc,
//! libcuda loaded dynamically) takes the same arguments to `cuLaunchKernel`.
//!
//! Memory: [`Memory`] allocates and copies buffers in a backend-neutral way, so the same test
//! runs on both executors ([`DeviceBuffer`] for the emulator, [`cuda::CudaBuffer`] on a GPU).

pub mod check;
pub mod cuda;
pub mod emu;
pub mod kernel_names;
pub mod kernels;
pub mod nvrtc;
pub mod plan;
pub mod sources;

use std::alloc::Layout;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Arc;

pub use emu::Emulator;

/// Grid and block shape of one launch, and its dynamic shared memory in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_smem: usize,
}

impl LaunchConfig {
    /// A 1-D launch: `blocks` blocks of `threads` threads, no dynamic shared memory.
    pub fn linear(blocks: u32, threads: u32) -> Self {
        LaunchConfig {
            grid: [blocks, 1, 1],
            block: [threads, 1, 1],
            dynamic_smem: 0,
        }
    }

    /// Enough `threads`-wide blocks to give each of `n` elements one thread.
    pub fn for_elements(n: usize, threads: u32) -> Self {
        let blocks = n.div_ceil(threads as usize).max(1);
        Self::linear(u32::try_from(blocks).unwrap_or(u32::MAX), threads)
    }

    /// The same launch with `bytes` of dynamic shared memory.
    pub fn with_dynamic_smem(mut self, bytes: usize) -> Self {
        self.dynamic_smem = bytes;
        self
    }
}

/// A failed launch. Every variant names the kernel.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("kernel `{kernel}`: no such kernel (declare it with GTA_KERNEL in kernels/*.cu)")]
    UnknownKernel { kernel: String },
    #[error("kernel `{kernel}`: invalid launch: {reason}")]
    InvalidLaunch { kernel: String, reason: String },
    #[error(
        "kernel `{kernel}`: parameter struct is {rust} bytes in Rust but {kernel_side} bytes in \
         kernels/params.cuh"
    )]
    ParamsSize {
        kernel: String,
        rust: usize,
        kernel_side: usize,
    },
    #[error("kernel `{kernel}` failed: {message}")]
    KernelFailed { kernel: String, message: String },
    /// libcuda could not be loaded (the CUDA executor is unavailable; the emulator and the CPU
    /// backend still work).
    #[error("no CUDA driver: libcuda.so could not be loaded (no NVIDIA driver on this machine)")]
    NoDriver,
    /// A CUDA driver call failed. `what` names the module and/or kernel (or the operation).
    #[error("{what}: {call} failed: {code}{hint}")]
    Driver {
        what: String,
        call: &'static str,
        code: String,
        hint: String,
    },
    /// Run-time compilation of a module failed (the error names the module).
    #[error(transparent)]
    Nvrtc(#[from] nvrtc::NvrtcError),
}

/// Something that runs kernels through the launch ABI.
pub trait Executor {
    /// A short name for messages ("emulator", "cuda").
    fn name(&self) -> &'static str;

    /// Launch `kernel`, in order after every earlier launch (the emulator runs it at once; the
    /// CUDA executor queues it on its stream and copies wait for it).
    ///
    /// # Safety
    /// `params` must be the kernel's parameter array: `params[0]` points to a live value of the
    /// kernel's parameter struct, whose device pointers address allocations of this executor
    /// that are large enough for every access the kernel makes with this configuration, and
    /// that nothing else accesses during the launch.
    unsafe fn launch(
        &self,
        kernel: &str,
        cfg: LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<(), GpuError>;

    /// Size of the kernel's parameter struct as the kernel sources see it, when the executor
    /// can tell.
    fn params_size(&self, kernel: &str) -> Option<usize>;

    /// Waits until every launch so far has finished (the emulator runs launches at once).
    fn synchronize(&self) -> Result<(), GpuError> {
        Ok(())
    }

    /// Launch `kernel` with the parameter struct `params`, checking its size against the
    /// kernel side first (when the executor can tell).
    ///
    /// # Safety
    /// As [`Executor::launch`]: `P` is the `#[repr(C)]` mirror of the kernel's struct and its
    /// device pointers are valid for the launch.
    unsafe fn launch_with<P: Copy>(
        &self,
        kernel: &str,
        cfg: LaunchConfig,
        params: &P,
    ) -> Result<(), GpuError>
    where
        Self: Sized,
    {
        // SAFETY: forwarded under the caller's guarantees.
        unsafe { launch_params(self, kernel, cfg, params) }
    }
}

/// [`Executor::launch_with`] for any executor, including `&dyn Executor`: checks the struct's
/// size against the kernel side (when the executor can tell), then launches with `params[0]`
/// pointing to a copy of the struct.
///
/// # Safety
/// As [`Executor::launch`]: `P` is the `#[repr(C)]` mirror of the kernel's struct and its
/// device pointers are valid for every access the kernel makes with `cfg`.
pub unsafe fn launch_params<P: Copy>(
    exec: &dyn Executor,
    kernel: &str,
    cfg: LaunchConfig,
    params: &P,
) -> Result<(), GpuError> {
    if let Some(size) = exec.params_size(kernel) {
        if size != std::mem::size_of::<P>() {
            return Err(GpuError::ParamsSize {
                kernel: kernel.to_string(),
                rust: std::mem::size_of::<P>(),
                kernel_side: size,
            });
        }
    }
    let mut copy = *params;
    let mut array = [(&mut copy as *mut P).cast::<c_void>()];
    // SAFETY: array[0] points to a live copy of the struct for the whole (synchronous)
    // launch; the caller vouches for its contents.
    unsafe { exec.launch(kernel, cfg, &mut array) }
}

/// A buffer of device memory holding `len()` elements of `T`.
pub trait Buffer<T: DeviceRepr> {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The device address of the first element, for a parameter struct.
    fn device_ptr(&self) -> u64;
    /// Device → host copy (waits for pending work on the executor's stream).
    fn read(&self) -> Result<Vec<T>, GpuError>;
    /// Host → device copy. Panics when the lengths differ.
    fn write(&mut self, data: &[T]) -> Result<(), GpuError>;
}

/// An executor that also allocates its device memory: what a backend-neutral test needs.
pub trait Memory: Executor {
    type Buf<T: DeviceRepr>: Buffer<T>;
    /// `len` zeroed elements.
    fn alloc_zeroed<T: DeviceRepr>(&self, len: usize) -> Result<Self::Buf<T>, GpuError>;
    /// A device copy of `data`.
    fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<Self::Buf<T>, GpuError> {
        let mut b = self.alloc_zeroed(data.len())?;
        b.write(data)?;
        Ok(b)
    }
    /// `len` copies of `value`.
    fn filled<T: DeviceRepr>(&self, len: usize, value: T) -> Result<Self::Buf<T>, GpuError> {
        self.upload(&vec![value; len])
    }
    /// `len` elements of `chunk` from `byte_offset` on (a multiple of 256, the range inside
    /// the chunk) as a buffer of their own that keeps `chunk` alive and never frees it: how
    /// the per-iteration arena hands out memory without a driver allocation.
    fn view<T: DeviceRepr>(
        &self,
        chunk: &Arc<Self::Buf<u8>>,
        byte_offset: usize,
        len: usize,
    ) -> Result<Self::Buf<T>, GpuError>;

    /// A recorded sequence of launches that can be run again (a CUDA graph on a GPU).
    type Graph;
    /// From here on, launches made by this thread are recorded instead of run, until
    /// [`Memory::capture_end`] (CUDA stream capture; the emulator records them the same way).
    /// No copy, allocation or synchronization may happen meanwhile (the GPU backend refuses
    /// them). `Ok(false)`: this executor cannot capture.
    fn capture_begin(&self) -> Result<bool, GpuError>;
    /// Ends a capture: the recorded launches, ready to run with [`Memory::graph_launch`].
    fn capture_end(&self) -> Result<Self::Graph, GpuError>;
    /// Runs a captured graph (in stream order after earlier launches).
    fn graph_launch(&self, graph: &Self::Graph) -> Result<(), GpuError>;
}

/// Checks a [`Memory::view`] request against its chunk.
pub(crate) fn check_view<T: DeviceRepr>(
    chunk_bytes: usize,
    byte_offset: usize,
    len: usize,
) -> Result<(), GpuError> {
    let end = len
        .checked_mul(std::mem::size_of::<T>())
        .and_then(|b| b.checked_add(byte_offset));
    if byte_offset % DEVICE_ALIGN != 0 || end.is_none_or(|e| e > chunk_bytes) {
        return Err(GpuError::InvalidLaunch {
            kernel: "arena".into(),
            reason: format!(
                "view of {len} × {} bytes at offset {byte_offset} does not fit a {chunk_bytes}-byte \
                 chunk (or is misaligned)",
                std::mem::size_of::<T>()
            ),
        });
    }
    Ok(())
}

/// What keeps a view's memory alive: the chunk it was cut from.
pub type KeepAlive = Option<Arc<dyn std::any::Any + Send + Sync>>;

impl<T: DeviceRepr> Buffer<T> for DeviceBuffer<T> {
    fn len(&self) -> usize {
        self.len
    }
    fn device_ptr(&self) -> u64 {
        DeviceBuffer::device_ptr(self)
    }
    fn read(&self) -> Result<Vec<T>, GpuError> {
        Ok(self.to_vec())
    }
    fn write(&mut self, data: &[T]) -> Result<(), GpuError> {
        self.copy_from_slice(data);
        Ok(())
    }
}

impl Memory for Emulator {
    type Buf<T: DeviceRepr> = DeviceBuffer<T>;
    type Graph = emu::EmuGraph;
    fn capture_begin(&self) -> Result<bool, GpuError> {
        emu::capture_begin()?;
        Ok(true)
    }
    fn capture_end(&self) -> Result<emu::EmuGraph, GpuError> {
        emu::capture_end()
    }
    fn graph_launch(&self, graph: &emu::EmuGraph) -> Result<(), GpuError> {
        graph.launch(self)
    }
    fn alloc_zeroed<T: DeviceRepr>(&self, len: usize) -> Result<DeviceBuffer<T>, GpuError> {
        Ok(DeviceBuffer::zeroed(len))
    }
    fn view<T: DeviceRepr>(
        &self,
        chunk: &Arc<DeviceBuffer<u8>>,
        byte_offset: usize,
        len: usize,
    ) -> Result<DeviceBuffer<T>, GpuError> {
        check_view::<T>(chunk.len(), byte_offset, len)?;
        // SAFETY: the range lies inside the chunk (checked), which the view keeps alive.
        let raw = unsafe { chunk.ptr.as_ptr().add(byte_offset) };
        Ok(DeviceBuffer {
            ptr: NonNull::new(raw.cast::<T>()).expect("inside a non-null allocation"),
            len,
            owner: Some(chunk.clone()),
        })
    }
}

/// Plain-data element types a [`DeviceBuffer`] may hold (every bit pattern valid, no drop).
///
/// # Safety
/// Implementors must be `Copy`, have no padding, and accept the all-zero bit pattern.
pub unsafe trait DeviceRepr: Copy + 'static {}
// SAFETY: primitive numbers: no padding, zero is a valid value.
unsafe impl DeviceRepr for f32 {}
// SAFETY: as above.
unsafe impl DeviceRepr for f64 {}
// SAFETY: as above.
unsafe impl DeviceRepr for i32 {}
// SAFETY: as above.
unsafe impl DeviceRepr for u32 {}
// SAFETY: as above.
unsafe impl DeviceRepr for u8 {}
// SAFETY: as above.
unsafe impl DeviceRepr for u64 {}
// SAFETY: as above.
unsafe impl DeviceRepr for i64 {}

/// Device memory of the emulator (device memory = host memory): a 256-byte-aligned
/// allocation, like cudaMalloc's, addressed by a device-pointer-like `u64`. Kernels write it
/// through that address, so Rust only reads and writes it by copying (like H2D/D2H copies),
/// never through long-lived references.
pub struct DeviceBuffer<T: DeviceRepr> {
    ptr: NonNull<T>,
    len: usize,
    /// `Some` for a view of an arena chunk: the chunk is freed by its own drop, not ours.
    owner: KeepAlive,
}

const DEVICE_ALIGN: usize = 256;

impl<T: DeviceRepr> DeviceBuffer<T> {
    fn layout(len: usize) -> Layout {
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        Layout::from_size_align(bytes, DEVICE_ALIGN.max(std::mem::align_of::<T>()))
            .expect("device buffer too large")
    }

    /// `len` zeroed elements.
    pub fn zeroed(len: usize) -> Self {
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            NonNull::new(raw.cast::<T>()).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        DeviceBuffer {
            ptr,
            len,
            owner: None,
        }
    }

    /// A copy of `data`.
    pub fn from_slice(data: &[T]) -> Self {
        let mut b = Self::zeroed(data.len());
        b.copy_from_slice(data);
        b
    }

    /// `len` copies of `value` (e.g. a NaN or 0xDEADBEEF poison).
    pub fn filled(len: usize, value: T) -> Self {
        let mut b = Self::zeroed(len);
        b.fill(value);
        b
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device address of the first element, for a parameter struct.
    pub fn device_ptr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Host → device copy. Panics when the lengths differ.
    pub fn copy_from_slice(&mut self, data: &[T]) {
        assert_eq!(data.len(), self.len, "device buffer length");
        // SAFETY: both ranges hold `len` elements and do not overlap (data is a Rust slice,
        // self is our own allocation); `&mut self` excludes concurrent launches using it.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr(), self.len) };
    }

    /// Set every element to `value`.
    pub fn fill(&mut self, value: T) {
        for i in 0..self.len {
            // SAFETY: i < len, inside the allocation; T is plain data.
            unsafe { self.ptr.as_ptr().add(i).write(value) };
        }
    }

    /// Device → host copy.
    pub fn to_vec(&self) -> Vec<T> {
        let mut v = Vec::with_capacity(self.len);
        // SAFETY: the allocation holds `len` initialized elements (zeroed or written); launches
        // are synchronous, so no kernel writes it while we copy.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), v.as_mut_ptr(), self.len);
            v.set_len(self.len);
        }
        v
    }
}

impl<T: DeviceRepr> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        if self.owner.is_none() {
            // SAFETY: allocated in `zeroed` with this same layout, freed once.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), Self::layout(self.len)) };
        }
    }
}

impl<T: DeviceRepr + std::fmt::Debug> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("len", &self.len)
            .field("device_ptr", &format_args!("{:#x}", self.device_ptr()))
            .finish()
    }
}

// SAFETY: the buffer exclusively owns its allocation of plain data; moving it to another
// thread moves that ownership.
unsafe impl<T: DeviceRepr> Send for DeviceBuffer<T> {}
// SAFETY: a shared reference only reads (to_vec) or hands out the address; writes need
// `&mut`, and kernels are launched synchronously by the thread that holds the buffer.
unsafe impl<T: DeviceRepr> Sync for DeviceBuffer<T> {}
