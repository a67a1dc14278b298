//! The vendor columns of the kernel benchmark: cuDNN beside every conv row and cuBLAS beside
//! every linear row and the GEMM ceiling, called through cudarc's own bindings (its `cudnn` and
//! `cublas` features, loaded dynamically like the driver) on the same shapes, with the same
//! protocol as ours: random inputs rotated over as many buffer sets as [`super::sets_for`]
//! gives, `warmup` untimed runs, then the median of `reps` runs timed by CUDA events.
//!
//! - cuDNN: each direction's algorithm is the fastest of `cudnnFindConvolution*Algorithm`
//!   (which times every algorithm on the GPU), with the workspace it asks for allocated. Two
//!   columns: FP32 (`CUDNN_FMA_MATH`: no tensor cores, the arithmetic of our FP32 kernels) and
//!   TF32 (`CUDNN_TENSOR_OP_MATH`: tensor cores allowed on FP32 data, sm_80+).
//!   A conv-transpose layer is cuDNN's conv with input and output swapped (as PyTorch runs it):
//!   its forward is `cudnnConvolutionBackwardData`, its backward-data `cudnnConvolutionForward`.
//! - cuBLAS: `cublasSgemm` (FP32) and `cublasGemmEx` with `CUBLAS_COMPUTE_32F_FAST_TF32` (TF32)
//!   on each linear direction's GEMM (no bias: ours adds it in the same kernel) and on the
//!   ceiling's square GEMM.
//!
//! Where a library cannot be loaded (no libcudnn / libcublas on the loader's path, or no GPU),
//! [`probe`] says why and the columns stay "n/a": nothing here panics. cudarc's loader panics
//! when a library is missing, so the probe first asks cudarc's own `is_culib_present` (the same
//! library names its loader tries) and then makes the first call under `catch_unwind`; every
//! vendor measurement runs under `catch_unwind` too, so a missing symbol (an older library)
//! becomes that row's note.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::cudnn::{result as dnn, sys as dnn_sys};
use cudarc::driver::{result as drv, sys as cu, CudaContext, CudaStream};

use super::{conv_layers, linear_layers, median, random, sets_for, Config, ConvLayer, Report};

/// Whether each library can be used, and its version or why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vendors {
    /// `Ok(version)` or `Err(reason)`.
    pub cudnn: Result<String, String>,
    pub cublas: Result<String, String>,
}

impl Default for Vendors {
    fn default() -> Self {
        let why = "not probed (benches/kernels.rs probes it)".to_string();
        Vendors {
            cudnn: Err(why.clone()),
            cublas: Err(why),
        }
    }
}

impl Vendors {
    /// "cuDNN: 9.1.0" (the version) or "cuDNN: not available (<reason>)", and the same for cuBLAS.
    pub fn lines(&self) -> [String; 2] {
        [
            status_line("cuDNN", &self.cudnn),
            status_line("cuBLAS", &self.cublas),
        ]
    }

    /// The same libraries, unusable for this run's device (`why`): the emulator, say.
    pub fn unusable(&self, why: &str) -> Vendors {
        let f = |r: &Result<String, String>| match r {
            Ok(v) => Err(format!("version {v} loadable, but {why}")),
            Err(e) => Err(e.clone()),
        };
        Vendors {
            cudnn: f(&self.cudnn),
            cublas: f(&self.cublas),
        }
    }
}

/// One line: "<lib>: <version>" or "<lib>: not available (<reason>)".
pub fn status_line(lib: &str, r: &Result<String, String>) -> String {
    match r {
        Ok(v) => format!("{lib}: {v}"),
        Err(e) => format!("{lib}: not available ({e})"),
    }
}

/// The vendor figures of one row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VendorTiming {
    /// FP32 median ms (cuDNN FMA math, cublasSgemm).
    pub ms: Option<f64>,
    /// TF32 median ms (cuDNN tensor-op math, cublasGemmEx FAST_TF32).
    pub tf32_ms: Option<f64>,
    /// The algorithms chosen, or why a column is missing.
    pub note: String,
}

/// Which library stands beside a row of `family`, if any.
pub fn vendor_of(family: &str) -> Option<&'static str> {
    match family {
        "conv" => Some("cuDNN"),
        "linear" => Some("cuBLAS"),
        _ => None,
    }
}

/// The message of a caught panic.
fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    let s = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into());
    // cudarc's loader messages are long: the first sentence says it.
    s.split(" - ").next().unwrap_or(&s).to_string()
}

/// `f()` with a panic turned into `Err`.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(format!("{what} panicked: {}", panic_text(p))),
    }
}

/// "libcudnn not found by cudarc's loader (tried libcudnn.so, libcudnn.so.9, … 17 names;
/// LD_LIBRARY_PATH=…)".
fn not_found(lib: &str, candidates: &[String]) -> String {
    let shown: Vec<&str> = candidates
        .iter()
        .map(String::as_str)
        .filter(|c| c.contains(".so") || c.contains(".dll"))
        .take(3)
        .collect();
    let path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    // Files of that library under names cudarc does not try (libcublas.so.13 of CUDA 13
    // wheels, for a cudarc built for CUDA 12): say how to make them loadable.
    let prefix = format!("lib{lib}.so");
    let others: Vec<String> = path
        .split(':')
        .filter(|d| !d.is_empty())
        .filter_map(|d| std::fs::read_dir(d).ok().map(|e| (d.to_string(), e)))
        .flat_map(|(d, entries)| {
            let prefix = prefix.clone();
            entries.filter_map(move |e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                (name.starts_with(&prefix) && !candidates.contains(&name))
                    .then(|| format!("{d}/{name}"))
            })
        })
        .collect();
    let hint = if others.is_empty() {
        String::new()
    } else {
        format!(
            "; found {} under a name cudarc does not try: a symlink named {prefix} to it, in a \
             folder on LD_LIBRARY_PATH, makes it loadable (scripts/gpu-check.sh makes one)",
            others.join(", ")
        )
    };
    format!(
        "lib{lib} not found by cudarc's loader: tried {}, … ({} names); LD_LIBRARY_PATH={path}{hint}",
        shown.join(", "),
        candidates.len(),
    )
}

/// Which of cuDNN and cuBLAS this process can load (the library files only: a machine without
/// a GPU can still have them). Never panics.
pub fn probe() -> Vendors {
    let cudnn = guarded("cuDNN probe", || {
        // SAFETY: only tries to open the library (libloading), no symbol is called.
        if !unsafe { dnn_sys::is_culib_present() } {
            return Err(not_found(
                "cudnn",
                &cudarc::get_lib_name_candidates("cudnn"),
            ));
        }
        let v = dnn::get_version();
        Ok(format!("{}.{}.{}", v / 10_000, v % 10_000 / 100, v % 100))
    });
    let cublas = guarded("cuBLAS probe", || {
        // SAFETY: as above.
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(not_found(
                "cublas",
                &cudarc::get_lib_name_candidates("cublas"),
            ));
        }
        let prop = |t| {
            let mut v = 0;
            // SAFETY: writes one int.
            let s = unsafe { blas_sys::cublasGetProperty(t, &mut v) };
            (s == blas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS).then_some(v)
        };
        use blas_sys::libraryPropertyType_t as P;
        match (
            prop(P::MAJOR_VERSION),
            prop(P::MINOR_VERSION),
            prop(P::PATCH_LEVEL),
        ) {
            (Some(a), Some(b), Some(c)) => Ok(format!("{a}.{b}.{c}")),
            _ => Ok("version unknown".into()),
        }
    });
    Vendors { cudnn, cublas }
}

/// Device memory, freed on drop (after the stream is idle: every measurement synchronizes).
struct DevBuf {
    ptr: cu::CUdeviceptr,
}

impl DevBuf {
    fn zeroed(bytes: usize) -> Result<Self, String> {
        let bytes = bytes.max(4);
        // SAFETY: the context is bound to this thread (Vendor::new); size non-zero.
        let ptr = unsafe { drv::malloc_sync(bytes) }.map_err(|e| format!("cuMemAlloc: {e}"))?;
        let b = DevBuf { ptr };
        // SAFETY: `ptr` holds `bytes` bytes.
        unsafe { drv::memset_d8_sync(ptr, 0, bytes) }.map_err(|e| format!("cuMemsetD8: {e}"))?;
        Ok(b)
    }
    fn upload(data: &[f32]) -> Result<Self, String> {
        let b = DevBuf::zeroed(4 * data.len())?;
        // SAFETY: `b` holds at least `data.len()` floats.
        unsafe { drv::memcpy_htod_sync(b.ptr, data) }.map_err(|e| format!("cuMemcpyHtoD: {e}"))?;
        Ok(b)
    }
    fn f32(&self) -> *mut f32 {
        self.ptr as *mut f32
    }
    fn void(&self) -> *mut std::ffi::c_void {
        self.ptr as *mut std::ffi::c_void
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by cuMemAlloc, freed once.
        let _ = unsafe { drv::free_sync(self.ptr) };
    }
}

/// The libraries' handles on one stream of GPU 0's primary context (the one our executor uses).
struct Vendor<'a> {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    cudnn: Option<dnn_sys::cudnnHandle_t>,
    cublas: Option<blas_sys::cublasHandle_t>,
    cfg: &'a Config,
    seed: u64,
}

impl Drop for Vendor<'_> {
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
        if let Some(h) = self.cudnn.take() {
            // SAFETY: created by cudnnCreate, destroyed once.
            let _ = catch_unwind(|| unsafe { dnn::destroy_handle(h) });
        }
        if let Some(h) = self.cublas.take() {
            // SAFETY: created by cublasCreate, destroyed once.
            let _ = catch_unwind(|| unsafe { blas::destroy_handle(h) });
        }
    }
}

impl Vendor<'_> {
    /// Median and minimum ms of `reps` runs of `run(set)` after `warmup` runs, CUDA events on
    /// this stream around each (the protocol of `Harness::measure`).
    fn time(
        &self,
        sets: usize,
        run: &mut dyn FnMut(usize) -> Result<(), String>,
    ) -> Result<(f64, f64), String> {
        let cfg = self.cfg;
        for i in 0..cfg.warmup.max(1) {
            run(i % sets)?;
        }
        let n = cfg.reps.max(1);
        let events = (0..=n)
            .map(|_| {
                self.ctx
                    .new_event(Some(cu::CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(|e| format!("cuEventCreate: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rec = |i: usize| {
            events[i]
                .record(&self.stream)
                .map_err(|e| format!("cuEventRecord: {e}"))
        };
        rec(0)?;
        for i in 0..n {
            run(i % sets)?;
            rec(i + 1)?;
        }
        self.stream
            .synchronize()
            .map_err(|e| format!("cuStreamSynchronize: {e}"))?;
        let t = events
            .windows(2)
            .map(|p| {
                p[0].elapsed_ms(&p[1])
                    .map(f64::from)
                    .map_err(|e| format!("cuEventElapsedTime: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(median(t))
    }

    fn upload_sets(&mut self, n: usize, sets: usize) -> Result<Vec<DevBuf>, String> {
        let host = random(n, &mut self.seed);
        (0..sets).map(|_| DevBuf::upload(&host)).collect()
    }

    fn zero_sets(n: usize, sets: usize) -> Result<Vec<DevBuf>, String> {
        (0..sets).map(|_| DevBuf::zeroed(4 * n)).collect()
    }
}

/// Runs the vendor columns for every conv and linear row of `report` and the GEMM ceiling, on
/// GPU 0, with `vendors` from [`probe`]; records the libraries' status in the report. A
/// failing row gets a note; nothing panics.
pub fn run(cfg: &Config, report: &mut Report, vendors: Vendors, log: bool) {
    report.vendor = vendors.clone();
    if vendors.cudnn.is_err() && vendors.cublas.is_err() {
        return;
    }
    let setup = guarded("vendor setup", || {
        let ctx = CudaContext::new(0).map_err(|e| format!("GPU 0: {e}"))?;
        ctx.bind_to_thread().map_err(|e| format!("GPU 0: {e}"))?;
        let stream = ctx.new_stream().map_err(|e| format!("stream: {e}"))?;
        Ok((ctx, stream))
    });
    let (ctx, stream) = match setup {
        Ok(x) => x,
        Err(e) => {
            report.vendor = Vendors {
                cudnn: Err(e.clone()),
                cublas: Err(e),
            };
            return;
        }
    };
    let mut v = Vendor {
        ctx,
        stream,
        cudnn: None,
        cublas: None,
        cfg,
        seed: 0x2545_f491_4f6c_dd1d,
    };
    let cu_stream = v.stream.cu_stream();
    if vendors.cudnn.is_ok() {
        let h = guarded("cudnnCreate", || {
            let h = dnn::create_handle().map_err(|e| format!("cudnnCreate: {e:?}"))?;
            // SAFETY: a fresh handle and a live stream of the bound context.
            unsafe { dnn::set_stream(h, cu_stream as *mut _) }
                .map_err(|e| format!("cudnnSetStream: {e:?}"))?;
            Ok(h)
        });
        match h {
            Ok(h) => v.cudnn = Some(h),
            Err(e) => report.vendor.cudnn = Err(e),
        }
    }
    if vendors.cublas.is_ok() {
        let h = guarded("cublasCreate", || {
            let h = blas::create_handle().map_err(|e| format!("cublasCreate: {e:?}"))?;
            // SAFETY: as above.
            unsafe { blas::set_stream(h, cu_stream as *mut _) }
                .map_err(|e| format!("cublasSetStream: {e:?}"))?;
            Ok(h)
        });
        match h {
            Ok(h) => v.cublas = Some(h),
            Err(e) => report.vendor.cublas = Err(e),
        }
    }
    if let Some(h) = v.cublas {
        let s = cfg.gemm_size.max(16);
        let gemm = Gemm {
            m: s,
            n: s,
            k: s,
            ta: true,
            tb: false,
        };
        let flop = 2.0 * (s * s * s) as f64;
        let r = guarded("cuBLAS ceiling", || v.gemm(h, gemm));
        match r {
            Ok(t) => {
                report.ceilings.cublas_fp32_gflops = t.ms.map(|ms| flop / ms / 1e6);
                report.ceilings.cublas_tf32_gflops = t.tf32_ms.map(|ms| flop / ms / 1e6);
                if log {
                    eprintln!(
                        "ceilings: cuBLAS {s}³ FP32 {} GFLOP/s, TF32 {} GFLOP/s {}",
                        fmt(report.ceilings.cublas_fp32_gflops),
                        fmt(report.ceilings.cublas_tf32_gflops),
                        t.note
                    );
                }
            }
            Err(e) => eprintln!("cuBLAS ceiling: {e}"),
        }
        for (name, fin, fout) in linear_layers(cfg) {
            for dir in ["forward", "backward-data", "backward-weight"] {
                let Some(i) = row_index(report, "linear", &name, dir) else {
                    continue;
                };
                let t = guarded("cuBLAS", || {
                    v.gemm(h, Gemm::linear(dir, cfg.batch, fin, fout))
                });
                record(report, i, t, log);
            }
        }
    }
    if let Some(h) = v.cudnn {
        for l in conv_layers(cfg) {
            for dir in ["forward", "backward-data", "backward-filter"] {
                let Some(i) = row_index(report, "conv", &l.name, dir) else {
                    continue;
                };
                let t = guarded("cuDNN", || v.conv(h, &l, dir));
                record(report, i, t, log);
            }
        }
    }
}

fn fmt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "n/a".into())
}

fn row_index(report: &Report, family: &str, name: &str, dir: &str) -> Option<usize> {
    report
        .rows
        .iter()
        .position(|r| r.family == family && r.name == name && r.direction == dir)
}

fn record(report: &mut Report, i: usize, t: Result<VendorTiming, String>, log: bool) {
    let t = t.unwrap_or_else(|e| VendorTiming {
        note: format!("failed: {e}"),
        ..VendorTiming::default()
    });
    let r = &mut report.rows[i];
    if log {
        eprintln!(
            "  vendor {:<10} {:<12} {:<16} FP32 {} ms, TF32 {} ms {}",
            r.family,
            r.name,
            r.direction,
            t.ms.map(|m| format!("{m:.4}"))
                .unwrap_or_else(|| "-".into()),
            t.tf32_ms
                .map(|m| format!("{m:.4}"))
                .unwrap_or_else(|| "-".into()),
            t.note
        );
    }
    r.vendor = Some(t);
}

/// A column-major GEMM C[m×n] = op(A)·op(B), k inner (row-major data seen transposed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// op(A) = Aᵀ (A stored k×m column-major, lda = k) or A (m×k, lda = m).
    pub ta: bool,
    /// op(B) = Bᵀ (B stored n×k, ldb = n) or B (k×n, ldb = k).
    pub tb: bool,
}

impl Gemm {
    /// The GEMM of a linear layer's direction at batch `n` (row-major x [n, fin], W [fout,
    /// fin], y [n, fout], as src/gpu/kernels/linear.rs stores them):
    /// - forward y = x·Wᵀ: column-major yᵀ[fout×n] = (W stored fin×fout)ᵀ · (xᵀ fin×n);
    /// - backward-data gx = gy·W: gxᵀ[fin×n] = (W stored fin×fout) · (gyᵀ fout×n);
    /// - backward-weight gW = gyᵀ·x: gWᵀ[fin×fout] = (xᵀ fin×n) · (gyᵀ stored fout×n)ᵀ.
    pub fn linear(dir: &str, n: usize, fin: usize, fout: usize) -> Gemm {
        match dir {
            "forward" => Gemm {
                m: fout,
                n,
                k: fin,
                ta: true,
                tb: false,
            },
            "backward-data" => Gemm {
                m: fin,
                n,
                k: fout,
                ta: false,
                tb: false,
            },
            _ => Gemm {
                m: fin,
                n: fout,
                k: n,
                ta: false,
                tb: true,
            },
        }
    }
    fn lda(&self) -> usize {
        if self.ta {
            self.k
        } else {
            self.m
        }
    }
    fn ldb(&self) -> usize {
        if self.tb {
            self.n
        } else {
            self.k
        }
    }
}

impl Vendor<'_> {
    /// FP32 (cublasSgemm) and TF32 (cublasGemmEx, FAST_TF32) times of `g`.
    fn gemm(&mut self, h: blas_sys::cublasHandle_t, g: Gemm) -> Result<VendorTiming, String> {
        let (al, bl, cl) = (g.m * g.k, g.k * g.n, g.m * g.n);
        let sets = sets_for(self.cfg, 4.0 * (al + bl + 2 * cl) as f64);
        let a = self.upload_sets(al, sets)?;
        let b = self.upload_sets(bl, sets)?;
        let c = Self::zero_sets(cl, sets)?;
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (m, n, k) = (g.m as i32, g.n as i32, g.k as i32);
        let (lda, ldb, ldc) = (g.lda() as i32, g.ldb() as i32, g.m as i32);
        let (alpha, beta) = (1.0f32, 0.0f32);
        let mut fp32 = |i: usize| {
            // SAFETY: a, b, c hold m·k, k·n, m·n floats with these leading dimensions; alpha
            // and beta are host scalars (the default pointer mode).
            unsafe {
                blas::sgemm(
                    h,
                    op(g.ta),
                    op(g.tb),
                    m,
                    n,
                    k,
                    &alpha,
                    a[i].f32(),
                    lda,
                    b[i].f32(),
                    ldb,
                    &beta,
                    c[i].f32(),
                    ldc,
                )
            }
            .map_err(|e| format!("cublasSgemm: {e:?}"))
        };
        let ms = self.time(sets, &mut fp32).map(|t| t.0);
        let r32 = blas_sys::cudaDataType_t::CUDA_R_32F;
        let mut tf32 = |i: usize| {
            // SAFETY: as above; all three matrices f32.
            unsafe {
                blas::gemm_ex(
                    h,
                    op(g.ta),
                    op(g.tb),
                    m,
                    n,
                    k,
                    (&alpha) as *const f32 as *const _,
                    a[i].void(),
                    r32,
                    lda,
                    b[i].void(),
                    r32,
                    ldb,
                    (&beta) as *const f32 as *const _,
                    c[i].void(),
                    r32,
                    ldc,
                    blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
                    blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| format!("cublasGemmEx TF32: {e:?}"))
        };
        let tf = self.time(sets, &mut tf32).map(|t| t.0);
        let mut note = format!(
            "cuBLAS {}{} m{} n{} k{}",
            if g.ta { "T" } else { "N" },
            if g.tb { "T" } else { "N" },
            g.m,
            g.n,
            g.k
        );
        if let Err(e) = &ms {
            note += &format!("; FP32 failed: {e}");
        }
        if let Err(e) = &tf {
            note += &format!("; TF32 failed: {e}");
        }
        Ok(VendorTiming {
            ms: ms.ok(),
            tf32_ms: tf.ok(),
            note,
        })
    }
}

/// Which cuDNN call a layer's direction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvOp {
    Forward,
    BackwardData,
    BackwardFilter,
}

/// The cuDNN convolution a layer is: (conv input [C, H], conv output [K, P], filter
/// [K, C, k, k]) — for a conv-transpose, its output is the conv's input — and the call for
/// `dir`.
pub fn cudnn_problem(l: &ConvLayer, dir: &str) -> ((usize, usize), (usize, usize), ConvOp) {
    let (inp, out) = if l.transposed {
        ((l.cout, l.out_size()), (l.cin, l.size))
    } else {
        ((l.cin, l.size), (l.cout, l.out_size()))
    };
    let op = match (l.transposed, dir) {
        (false, "forward") | (true, "backward-data") => ConvOp::Forward,
        (false, "backward-data") | (true, "forward") => ConvOp::BackwardData,
        _ => ConvOp::BackwardFilter,
    };
    (inp, out, op)
}

/// cuDNN descriptors of one convolution, destroyed on drop.
struct ConvDescs {
    x: dnn_sys::cudnnTensorDescriptor_t,
    y: dnn_sys::cudnnTensorDescriptor_t,
    w: dnn_sys::cudnnFilterDescriptor_t,
    conv: dnn_sys::cudnnConvolutionDescriptor_t,
}

impl Drop for ConvDescs {
    fn drop(&mut self) {
        // SAFETY: each created once below (null ones skipped by cuDNN), destroyed once.
        let _ = catch_unwind(|| unsafe {
            let _ = dnn::destroy_tensor_descriptor(self.x);
            let _ = dnn::destroy_tensor_descriptor(self.y);
            let _ = dnn::destroy_filter_descriptor(self.w);
            let _ = dnn::destroy_convolution_descriptor(self.conv);
        });
    }
}

fn dnn_err(call: &str) -> impl Fn(dnn::CudnnError) -> String + '_ {
    move |e| format!("{call}: {e:?}")
}

/// The algorithm's name without cuDNN's prefix ("IMPLICIT_PRECOMP_GEMM").
fn algo_name(a: impl std::fmt::Debug) -> String {
    let s = format!("{a:?}");
    for p in [
        "CUDNN_CONVOLUTION_FWD_ALGO_",
        "CUDNN_CONVOLUTION_BWD_DATA_ALGO_",
        "CUDNN_CONVOLUTION_BWD_FILTER_ALGO_",
    ] {
        if let Some(r) = s.strip_prefix(p) {
            return r.to_string();
        }
    }
    s
}

impl Vendor<'_> {
    /// cuDNN FP32 and TF32 times of layer `l`'s direction `dir`.
    fn conv(
        &mut self,
        h: dnn_sys::cudnnHandle_t,
        l: &ConvLayer,
        dir: &str,
    ) -> Result<VendorTiming, String> {
        let nb = self.cfg.batch;
        let ((c, hi), (k, ho), op) = cudnn_problem(l, dir);
        let ks = l.k;
        let (xl, yl, wl) = (nb * c * hi * hi, nb * k * ho * ho, k * c * ks * ks);
        let i32_ = |v: usize| v as std::ffi::c_int;
        let f32t = dnn_sys::cudnnDataType_t::CUDNN_DATA_FLOAT;
        let nchw = dnn_sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let d = ConvDescs {
            x: dnn::create_tensor_descriptor().map_err(dnn_err("cudnnCreateTensorDescriptor"))?,
            y: dnn::create_tensor_descriptor().map_err(dnn_err("cudnnCreateTensorDescriptor"))?,
            w: dnn::create_filter_descriptor().map_err(dnn_err("cudnnCreateFilterDescriptor"))?,
            conv: dnn::create_convolution_descriptor()
                .map_err(dnn_err("cudnnCreateConvolutionDescriptor"))?,
        };
        // SAFETY: fresh descriptors, set once with consistent shapes.
        unsafe {
            dnn::set_tensor4d_descriptor(d.x, nchw, f32t, [nb, c, hi, hi].map(i32_))
                .map_err(dnn_err("cudnnSetTensor4dDescriptor"))?;
            dnn::set_tensor4d_descriptor(d.y, nchw, f32t, [nb, k, ho, ho].map(i32_))
                .map_err(dnn_err("cudnnSetTensor4dDescriptor"))?;
            dnn::set_filter4d_descriptor(d.w, f32t, nchw, [k, c, ks, ks].map(i32_))
                .map_err(dnn_err("cudnnSetFilter4dDescriptor"))?;
            dnn::set_convolution2d_descriptor(
                d.conv,
                i32_(l.pad),
                i32_(l.pad),
                i32_(l.stride),
                i32_(l.stride),
                1,
                1,
                dnn_sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                f32t,
            )
            .map_err(dnn_err("cudnnSetConvolution2dDescriptor"))?;
        }
        let sets = sets_for(self.cfg, 4.0 * (2 * xl + wl + 2 * yl) as f64);
        let xs = self.upload_sets(xl, sets)?;
        let ys = self.upload_sets(yl, sets)?;
        let ws = self.upload_sets(wl, sets)?;
        let (gx, gy, gw) = (
            Self::zero_sets(xl, sets)?,
            Self::zero_sets(yl, sets)?,
            Self::zero_sets(wl, sets)?,
        );
        let mut out = VendorTiming::default();
        let mut notes = Vec::new();
        for (tf32, math) in [
            (false, dnn_sys::cudnnMathType_t::CUDNN_FMA_MATH),
            (true, dnn_sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH),
        ] {
            let label = if tf32 { "TF32" } else { "FP32" };
            let r = (|| -> Result<(f64, String), String> {
                // SAFETY: a live descriptor.
                unsafe { dnn::set_convolution_math_type(d.conv, math) }
                    .map_err(dnn_err("cudnnSetConvolutionMathType"))?;
                let (algo, ws_bytes, found_math, name) = find(h, &d, op, tf32)?;
                // FP32 stays on FMA math; TF32 runs with the math type cuDNN timed.
                let math_used = if tf32 { found_math } else { math };
                // SAFETY: as above.
                unsafe { dnn::set_convolution_math_type(d.conv, math_used) }
                    .map_err(dnn_err("cudnnSetConvolutionMathType"))?;
                let work = DevBuf::zeroed(ws_bytes)?;
                let (one, zero) = (1.0f32, 0.0f32);
                let (a, b) = (
                    (&one) as *const f32 as *const std::ffi::c_void,
                    (&zero) as *const f32 as *const std::ffi::c_void,
                );
                let mut run = |i: usize| -> Result<(), String> {
                    // SAFETY: buffers hold the descriptors' element counts; the workspace
                    // holds what cuDNN asked for this algorithm; alpha/beta host floats.
                    unsafe {
                        match algo {
                            Algo::Fwd(al) => dnn::convolution_forward(
                                h,
                                a,
                                d.x,
                                xs[i].void(),
                                d.w,
                                ws[i].void(),
                                d.conv,
                                al,
                                work.void(),
                                ws_bytes,
                                b,
                                d.y,
                                gy[i].void(),
                            ),
                            Algo::BwdData(al) => dnn::convolution_backward_data(
                                h,
                                a,
                                d.w,
                                ws[i].void(),
                                d.y,
                                ys[i].void(),
                                d.conv,
                                al,
                                work.void(),
                                ws_bytes,
                                b,
                                d.x,
                                gx[i].void(),
                            ),
                            Algo::BwdFilter(al) => dnn::convolution_backward_filter(
                                h,
                                a,
                                d.x,
                                xs[i].void(),
                                d.y,
                                ys[i].void(),
                                d.conv,
                                al,
                                work.void(),
                                ws_bytes,
                                b,
                                d.w,
                                gw[i].void(),
                            ),
                        }
                    }
                    .map_err(|e| format!("cuDNN {op:?} {name}: {e:?}"))
                };
                let (ms, _) = self.time(sets, &mut run)?;
                Ok((
                    ms,
                    format!(
                        "{label} {name} ({:?}, ws {} KiB)",
                        math_used,
                        ws_bytes >> 10
                    ),
                ))
            })();
            match r {
                Ok((ms, note)) => {
                    if tf32 {
                        out.tf32_ms = Some(ms);
                    } else {
                        out.ms = Some(ms);
                    }
                    notes.push(note);
                }
                Err(e) => notes.push(format!("{label} failed: {e}")),
            }
        }
        out.note = format!("cuDNN {op:?}: {}", notes.join("; "));
        Ok(out)
    }
}

#[derive(Clone, Copy, Debug)]
enum Algo {
    Fwd(dnn_sys::cudnnConvolutionFwdAlgo_t),
    BwdData(dnn_sys::cudnnConvolutionBwdDataAlgo_t),
    BwdFilter(dnn_sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// The fastest algorithm that succeeded in `cudnnFindConvolution*Algorithm` (which runs each
/// on the GPU, results sorted by time) and, unless `tensor_ops`, uses no tensor-core math:
/// (algo, workspace bytes, math type, name).
fn find(
    h: dnn_sys::cudnnHandle_t,
    d: &ConvDescs,
    op: ConvOp,
    tensor_ops: bool,
) -> Result<(Algo, usize, dnn_sys::cudnnMathType_t, String), String> {
    use dnn_sys::cudnnMathType_t as M;
    use dnn_sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS as OK;
    let allowed = |m: M| {
        tensor_ops
            || !matches!(
                m,
                M::CUDNN_TENSOR_OP_MATH | M::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
            )
    };
    let mut count: std::ffi::c_int = 0;
    macro_rules! pick {
        ($f:ident, $perf:ty, $n:expr, $variant:ident, ($($arg:expr),*)) => {{
            // SAFETY: all-zero is a valid bit pattern of the plain-C perf struct.
            let mut perf: [$perf; $n] = unsafe { std::mem::zeroed() };
            // SAFETY: live handle and descriptors; `perf` has room for $n results.
            unsafe { dnn_sys::$f(h, $($arg),*, $n, &mut count, perf.as_mut_ptr()) }
                .result()
                .map_err(dnn_err(stringify!($f)))?;
            let best = perf[..(count.max(0) as usize).min($n)]
                .iter()
                .find(|p| p.status == OK && allowed(p.mathType))
                .ok_or_else(|| format!("{}: no algorithm succeeded", stringify!($f)))?;
            Ok((Algo::$variant(best.algo), best.memory, best.mathType, algo_name(best.algo)))
        }};
    }
    match op {
        ConvOp::Forward => pick!(
            cudnnFindConvolutionForwardAlgorithm,
            dnn_sys::cudnnConvolutionFwdAlgoPerf_t,
            8,
            Fwd,
            (d.x, d.w, d.conv, d.y)
        ),
        ConvOp::BackwardData => pick!(
            cudnnFindConvolutionBackwardDataAlgorithm,
            dnn_sys::cudnnConvolutionBwdDataAlgoPerf_t,
            6,
            BwdData,
            (d.w, d.y, d.conv, d.x)
        ),
        ConvOp::BackwardFilter => pick!(
            cudnnFindConvolutionBackwardFilterAlgorithm,
            dnn_sys::cudnnConvolutionBwdFilterAlgoPerf_t,
            7,
            BwdFilter,
            (d.x, d.y, d.conv, d.w)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_transpose_maps_to_the_swapped_cudnn_convolution() {
        let cfg = Config::gta(100);
        let ls = conv_layers(&cfg);
        let g2 = ls.iter().find(|l| l.name == "G.convT2").unwrap();
        // convT 512 -> 256, 2x2 -> 4x4: cuDNN conv 256 @ 4x4 -> 512 @ 2x2, forward = bwd-data.
        assert_eq!(
            cudnn_problem(g2, "forward"),
            ((256, 4), (512, 2), ConvOp::BackwardData)
        );
        assert_eq!(cudnn_problem(g2, "backward-data").2, ConvOp::Forward);
        assert_eq!(
            cudnn_problem(g2, "backward-filter").2,
            ConvOp::BackwardFilter
        );
        let d2 = ls.iter().find(|l| l.name == "D.conv2").unwrap();
        assert_eq!(
            cudnn_problem(d2, "forward"),
            ((64, 16), (128, 16), ConvOp::Forward)
        );
        // Every mapped problem is a valid cuDNN convolution: (H + 2p - k)/s + 1 = P.
        for l in &ls {
            let ((_, hi), (_, ho), _) = cudnn_problem(l, "forward");
            assert_eq!((hi + 2 * l.pad - l.k) / l.stride + 1, ho, "{}", l.name);
        }
    }

    #[test]
    fn linear_gemms_have_the_layer_flops() {
        for dir in ["forward", "backward-data", "backward-weight"] {
            let g = Gemm::linear(dir, 100, 128, 10);
            assert_eq!(g.m * g.n * g.k, 100 * 128 * 10, "{dir}");
        }
        let f = Gemm::linear("forward", 100, 128, 10);
        assert_eq!((f.m, f.n, f.k, f.lda(), f.ldb()), (10, 100, 128, 128, 128));
        let w = Gemm::linear("backward-weight", 100, 128, 10);
        assert_eq!((w.m, w.n, w.k, w.lda(), w.ldb()), (128, 10, 100, 128, 10));
    }

    #[test]
    fn status_lines() {
        let v = Vendors {
            cudnn: Ok("9.1.0".into()),
            cublas: Err("libcublas not found".into()),
        };
        assert_eq!(
            v.lines(),
            [
                "cuDNN: 9.1.0".to_string(),
                "cuBLAS: not available (libcublas not found)".to_string()
            ]
        );
        let u = v.unusable("the SIMT emulator");
        assert!(u
            .cudnn
            .unwrap_err()
            .contains("9.1.0 loadable, but the SIMT emulator"));
    }
}
