//! The kernel benchmark harness behind `cargo bench --bench kernels` (benches/kernels.rs) and
//! its CI-sized test (tests/bench_harness.rs): every kernel family at the GTA shapes, timed on
//! an executor ([`BenchTarget`]: the CUDA executor with device events, or the SIMT emulator
//! with the host clock), beside the card's ceilings measured in the same run and, when
//! reference/bench_ops.py left its JSON, PyTorch (cuDNN / cuBLAS) on the same shapes.
//!
//! Per row: analytic FLOPs and bytes (each input read once, each output written once: the
//! least traffic the kernel could do), the median time of `reps` timed runs after `warmup`
//! runs, the inputs rotated over enough buffer sets that together exceed
//! [`Config::rotate_bytes`] (twice a large L2) so the cache does not flatter, and the share
//! of the roofline: `max(FLOP / GEMM ceiling, bytes / copy ceiling) / time`.
//!
//! Data are random (never zeros), drawn once per buffer and uploaded to every set.
//!
//! [`vendor`] adds cuDNN and cuBLAS, called through cudarc's bindings on the same shapes with
//! the same protocol, beside the conv and linear rows and the GEMM ceiling (CUDA only; "n/a"
//! where the libraries cannot be loaded).

pub mod vendor;

use std::fmt::Write as _;
use std::path::Path;

use crate::gpu::kernels::{adam, batchnorm, conv, data, linear, loss, pool};
use crate::gpu::{Buffer, Emulator, GpuError, Memory};
use crate::ops::activation::Activation;
use crate::ops::conv::Conv2dParams;

/// An executor the harness can time.
pub trait BenchTarget: Memory {
    /// The device, for the report ("NVIDIA H100 80GB HBM3", "SIMT emulator on <CPU>").
    fn device(&self) -> String;
    /// The driver, for the report ("CUDA 13.0", "-").
    fn driver(&self) -> String;
    /// What the times are ("CUDA events", "host clock").
    fn clock(&self) -> &'static str;
    /// Milliseconds of each of `n` runs of `run(i)`.
    fn time_each(
        &self,
        n: usize,
        run: &mut dyn FnMut(usize) -> Result<(), GpuError>,
    ) -> Result<Vec<f64>, GpuError>;
    /// Copies `src` to `dst` (equal lengths) in device memory.
    fn copy_bytes(&self, src: &Self::Buf<u8>, dst: &mut Self::Buf<u8>) -> Result<(), GpuError>;
}

/// The host's CPU model, from /proc/cpuinfo.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

impl BenchTarget for Emulator {
    fn device(&self) -> String {
        format!("SIMT emulator on {}", cpu_name())
    }
    fn driver(&self) -> String {
        "-".into()
    }
    fn clock(&self) -> &'static str {
        "host clock"
    }
    fn time_each(
        &self,
        n: usize,
        run: &mut dyn FnMut(usize) -> Result<(), GpuError>,
    ) -> Result<Vec<f64>, GpuError> {
        (0..n)
            .map(|i| {
                let t = std::time::Instant::now();
                run(i)?;
                Ok(t.elapsed().as_secs_f64() * 1e3)
            })
            .collect()
    }
    fn copy_bytes(&self, src: &Self::Buf<u8>, dst: &mut Self::Buf<u8>) -> Result<(), GpuError> {
        dst.write(&src.read()?)
    }
}

impl BenchTarget for crate::gpu::cuda::CudaExecutor {
    fn device(&self) -> String {
        let (a, b) = self.compute_capability();
        format!("{} (sm_{a}{b})", self.device_name())
    }
    fn driver(&self) -> String {
        match self.driver_version() {
            Some((a, b)) => format!("CUDA {a}.{b}"),
            None => "unknown".into(),
        }
    }
    fn clock(&self) -> &'static str {
        "CUDA events"
    }
    fn time_each(
        &self,
        n: usize,
        run: &mut dyn FnMut(usize) -> Result<(), GpuError>,
    ) -> Result<Vec<f64>, GpuError> {
        crate::gpu::cuda::CudaExecutor::time_each(self, n, run)
    }
    fn copy_bytes(&self, src: &Self::Buf<u8>, dst: &mut Self::Buf<u8>) -> Result<(), GpuError> {
        let bytes = src.len();
        self.copy_device(src, dst, bytes)
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub batch: usize,
    pub ndf: usize,
    pub ngf: usize,
    pub nz: usize,
    /// Timed runs per row (the median is reported).
    pub reps: usize,
    /// Untimed runs first.
    pub warmup: usize,
    /// Rotate over buffer sets until they hold at least this many bytes (at most
    /// [`Config::max_sets`] sets).
    pub rotate_bytes: usize,
    pub max_sets: usize,
    /// m = n = k of the GEMM ceiling.
    pub gemm_size: usize,
    /// Bytes of the copy ceiling.
    pub copy_bytes: usize,
    /// Only rows whose "name direction" contains one of these (all when empty).
    pub filter: Vec<String>,
}

impl Config {
    /// The GTA shapes at `batch`, default widths (ndf = ngf = 64, nz = 512).
    pub fn gta(batch: usize) -> Self {
        Config {
            batch,
            ndf: 64,
            ngf: 64,
            nz: 512,
            reps: 50,
            warmup: 3,
            rotate_bytes: 128 << 20,
            max_sets: 64,
            gemm_size: 4096,
            copy_bytes: 512 << 20,
            filter: Vec::new(),
        }
    }

    /// A CI-sized run (the emulator finishes it in seconds): batch 2, widths 8.
    pub fn tiny() -> Self {
        Config {
            batch: 2,
            ndf: 8,
            ngf: 8,
            nz: 8,
            reps: 3,
            warmup: 1,
            rotate_bytes: 0,
            max_sets: 2,
            gemm_size: 64,
            copy_bytes: 1 << 20,
            filter: Vec::new(),
        }
    }

    /// Overrides from the environment: GTADAPT_BENCH_BATCH, GTADAPT_BENCH_WIDTH (ndf = ngf),
    /// GTADAPT_BENCH_NZ, GTADAPT_BENCH_REPS, GTADAPT_BENCH_WARMUP, GTADAPT_BENCH_FILTER
    /// (comma-separated substrings of "name direction").
    pub fn with_env(mut self) -> Self {
        let num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
        if let Some(b) = num("GTADAPT_BENCH_BATCH") {
            self.batch = b.max(2);
        }
        if let Some(w) = num("GTADAPT_BENCH_WIDTH") {
            self.ndf = w.max(1);
            self.ngf = w.max(1);
        }
        if let Some(z) = num("GTADAPT_BENCH_NZ") {
            self.nz = z.max(1);
        }
        if let Some(r) = num("GTADAPT_BENCH_REPS") {
            self.reps = r.max(1);
        }
        if let Some(w) = num("GTADAPT_BENCH_WARMUP") {
            self.warmup = w;
        }
        if let Ok(f) = std::env::var("GTADAPT_BENCH_FILTER") {
            self.filter = f
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        self
    }

    fn selected(&self, name: &str, direction: &str) -> bool {
        let key = format!("{name} {direction}");
        self.filter.is_empty() || self.filter.iter().any(|f| key.contains(f.as_str()))
    }
}

/// One conv / conv-transpose layer of the GTA networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvLayer {
    pub name: String,
    pub transposed: bool,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// Input height = width.
    pub size: usize,
}

impl ConvLayer {
    fn shape(&self, batch: usize) -> conv::ConvShape {
        conv::ConvShape {
            x_dims: [batch, self.cin, self.size, self.size],
            w_dims: if self.transposed {
                [self.cin, self.cout, self.k, self.k]
            } else {
                [self.cout, self.cin, self.k, self.k]
            },
            p: Conv2dParams {
                stride: self.stride,
                padding: self.pad,
            },
            transposed: self.transposed,
        }
    }

    /// Output height = width.
    pub fn out_size(&self) -> usize {
        if self.transposed {
            (self.size - 1) * self.stride + self.k - 2 * self.pad
        } else {
            (self.size + 2 * self.pad - self.k) / self.stride + 1
        }
    }

    /// FLOPs of each direction: 2 per multiply-add of the direct convolution, on the conv's
    /// output side (the conv-transpose's input side).
    pub fn flop(&self, batch: usize) -> f64 {
        let pix = if self.transposed {
            self.size * self.size
        } else {
            self.out_size() * self.out_size()
        };
        2.0 * (batch * self.cout * pix * self.cin * self.k * self.k) as f64
    }

    /// A readable shape ("conv k5 s1 p0 3->64 32x32").
    pub fn describe(&self) -> String {
        let kind = if self.transposed { "convT" } else { "conv" };
        format!(
            "{kind} k{} s{} p{} {}->{} {}x{}",
            self.k, self.stride, self.pad, self.cin, self.cout, self.size, self.size
        )
    }
}

fn cl(
    name: &str,
    transposed: bool,
    (cin, cout): (usize, usize),
    (k, stride, pad): (usize, usize, usize),
    size: usize,
) -> ConvLayer {
    ConvLayer {
        name: name.into(),
        transposed,
        cin,
        cout,
        k,
        stride,
        pad,
        size,
    }
}

/// Every conv / conv-transpose layer of F1, D, G, G4 and D_src (D_tgt differs from D_src only
/// in its last layer, 1 output instead of 11), as models.rs builds them.
pub fn conv_layers(cfg: &Config) -> Vec<ConvLayer> {
    let (d, g) = (cfg.ndf, cfg.ngf);
    // G's input: one-hot (11) + F1's embedding (2·ndf) + noise.
    let zin = 11 + 2 * d + cfg.nz;
    vec![
        cl("F1.conv1", false, (3, d), (5, 1, 0), 32),
        cl("F1.conv2", false, (d, d), (5, 1, 0), 14),
        cl("F1.conv3", false, (d, 2 * d), (5, 1, 0), 5),
        cl("D.conv1", false, (3, d), (3, 1, 1), 32),
        cl("D.conv2", false, (d, 2 * d), (3, 1, 1), 16),
        cl("D.conv3", false, (2 * d, 4 * d), (3, 1, 1), 8),
        cl("D.conv4", false, (4 * d, 2 * d), (3, 1, 1), 4),
        cl("G.convT1", true, (zin, 8 * g), (2, 1, 0), 1),
        cl("G.convT2", true, (8 * g, 4 * g), (4, 2, 1), 2),
        cl("G.convT3", true, (4 * g, 2 * g), (4, 2, 1), 4),
        cl("G.convT4", true, (2 * g, g), (4, 2, 1), 8),
        cl("G.convT5", true, (g, 3), (4, 2, 1), 16),
        cl("G4.convT1", true, (zin, 8 * g), (4, 1, 0), 1),
        cl("G4.convT2", true, (8 * g, 4 * g), (4, 2, 1), 4),
        cl("G4.convT3", true, (4 * g, 2 * g), (4, 2, 1), 8),
        cl("G4.convT4", true, (2 * g, 3), (4, 2, 1), 16),
        cl("D_src.conv1", false, (3, d), (4, 2, 1), 32),
        cl("D_src.conv2", false, (d, 2 * d), (4, 2, 1), 16),
        cl("D_src.conv3", false, (2 * d, 4 * d), (4, 2, 1), 8),
        cl("D_src.conv4", false, (4 * d, 11), (4, 1, 0), 4),
    ]
}

/// Batch-norm layers: (name, channels, height = width).
pub fn bn_layers(cfg: &Config) -> Vec<(String, usize, usize)> {
    let (d, g) = (cfg.ndf, cfg.ngf);
    [
        ("D.bn1", d, 32),
        ("D.bn2", 2 * d, 16),
        ("D.bn3", 4 * d, 8),
        ("D.bn4", 2 * d, 4),
        ("G.bn1", 8 * g, 2),
        ("G.bn2", 4 * g, 4),
        ("G.bn3", 2 * g, 8),
        ("G.bn4", g, 16),
        ("G4.bn1", 8 * g, 4),
        ("G4.bn2", 4 * g, 8),
        ("G4.bn3", 2 * g, 16),
        ("D_src.bn2", 2 * d, 8),
        ("D_src.bn3", 4 * d, 4),
    ]
    .into_iter()
    .map(|(n, c, s)| (n.to_string(), c, s))
    .collect()
}

/// Max-pool layers: (name, channels, input height = width, window).
pub fn pool_layers(cfg: &Config) -> Vec<(String, usize, usize, usize)> {
    let d = cfg.ndf;
    [
        ("F1.pool1", d, 28, 2),
        ("F1.pool2", d, 10, 2),
        ("D.pool1", d, 32, 2),
        ("D.pool2", 2 * d, 16, 2),
        ("D.pool3", 4 * d, 8, 2),
        ("D.pool4", 2 * d, 4, 4),
    ]
    .into_iter()
    .map(|(n, c, s, k)| (n.to_string(), c, s, k))
    .collect()
}

/// Linear layers: (name, fin, fout).
pub fn linear_layers(cfg: &Config) -> Vec<(String, usize, usize)> {
    let e = 2 * cfg.ndf;
    [
        ("C1.fc1", e, e),
        ("C1.fc2", e, 10),
        ("D.fc_class", e, 10),
        ("D.fc_src", e, 1),
    ]
    .into_iter()
    .map(|(n, a, b)| (n.to_string(), a, b))
    .collect()
}

/// Parameters Adam updates in one exp1 iteration (F1, C1, G, D: weights, biases, batch-norm
/// affine), counted from the layer tables: the flat buffer of the Adam row.
pub fn adam_params(cfg: &Config) -> usize {
    adam_tensor_sizes(cfg).iter().sum()
}

/// The sizes of the tensors [`adam_params`] counts, one per weight, bias and batch-norm
/// vector (they sum to it).
pub fn adam_tensor_sizes(cfg: &Config) -> Vec<usize> {
    let in_exp1 = |n: &str| n.starts_with("F1.") || n.starts_with("D.") || n.starts_with("G.");
    let mut v = Vec::new();
    for l in conv_layers(cfg).iter().filter(|l| in_exp1(&l.name)) {
        v.push(l.cin * l.cout * l.k * l.k);
        if l.name.starts_with("F1.") || l.name.starts_with("D.") {
            v.push(l.cout);
        }
    }
    for (name, c, _) in bn_layers(cfg) {
        if in_exp1(&name) {
            v.extend([c, c]);
        }
    }
    for (_, a, b) in linear_layers(cfg) {
        v.extend([a * b, b]);
    }
    v
}

/// One measured row.
#[derive(Clone, Debug)]
pub struct Row {
    /// Kernel family ("conv", "batchnorm", ...).
    pub family: &'static str,
    /// Layer ("D.conv2") or case.
    pub name: String,
    /// "forward", "backward-data", "backward-filter", ...
    pub direction: String,
    pub shape: String,
    pub flop: f64,
    pub bytes: f64,
    /// Median milliseconds (None: not run, see `note`).
    pub ms: Option<f64>,
    pub min_ms: Option<f64>,
    /// Buffer sets rotated over.
    pub sets: usize,
    /// PyTorch's median ms for the same row, when its JSON was given.
    pub torch_ms: Option<f64>,
    /// cuDNN / cuBLAS through cudarc on the same shape ([`vendor::run`]), when measured.
    pub vendor: Option<vendor::VendorTiming>,
    pub note: String,
}

/// The ceilings measured in the run.
#[derive(Clone, Debug, Default)]
pub struct Ceilings {
    /// Device-to-device copy, GB/s (bytes read + bytes written).
    pub copy_gbs: f64,
    /// Our FP32 GEMM (linear_gemm_nt) at gemm_size³, GFLOP/s.
    pub gemm_gflops: f64,
    pub gemm_size: usize,
    /// PyTorch's (cuBLAS) FP32 and TF32 GEMM at the same size, when its JSON was given.
    pub torch_fp32_gflops: Option<f64>,
    pub torch_tf32_gflops: Option<f64>,
    pub torch_copy_gbs: Option<f64>,
    /// cuBLAS through cudarc ([`vendor::run`]) at the same size: cublasSgemm and cublasGemmEx
    /// with TF32 compute.
    pub cublas_fp32_gflops: Option<f64>,
    pub cublas_tf32_gflops: Option<f64>,
}

impl Ceilings {
    /// The compute ceiling used for "% of roofline": the best FP32 (not TF32) GEMM measured.
    pub fn fp32_peak(&self) -> f64 {
        self.gemm_gflops
            .max(self.torch_fp32_gflops.unwrap_or(0.0))
            .max(self.cublas_fp32_gflops.unwrap_or(0.0))
    }
    pub fn bandwidth(&self) -> f64 {
        self.copy_gbs.max(self.torch_copy_gbs.unwrap_or(0.0))
    }
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Report {
    pub device: String,
    pub driver: String,
    pub clock: String,
    pub cpu: String,
    pub commit: String,
    pub date: String,
    pub config: Config,
    pub ceilings: Ceilings,
    pub rows: Vec<Row>,
    /// PyTorch's version and device, when its JSON was joined.
    pub torch: Option<String>,
    /// cuDNN / cuBLAS: version or why not available.
    pub vendor: vendor::Vendors,
}

impl Row {
    /// The vendor cells of the markdown table: FP32 ms, TF32 ms, ours / vendor FP32. "n/a"
    /// where a vendor stands beside this family but was not measured (not loadable, not on
    /// CUDA, or failed: see the JSON's note); "-" where no vendor stands beside it.
    pub fn vendor_cells(&self) -> [String; 3] {
        if vendor::vendor_of(self.family).is_none() {
            return ["-".into(), "-".into(), "-".into()];
        }
        let v = self.vendor.as_ref();
        let ms = |x: Option<f64>| x.map(|m| format!("{m:.4}")).unwrap_or_else(|| "n/a".into());
        let fp32 = v.and_then(|v| v.ms);
        let ratio = match (self.ms, fp32) {
            (Some(o), Some(f)) if f > 0.0 => format!("{:.2}", o / f),
            _ => "n/a".into(),
        };
        [ms(fp32), ms(v.and_then(|v| v.tf32_ms)), ratio]
    }

    /// The row's vendor figures for the JSON: null where no vendor stands beside the family,
    /// else {lib, status ("measured" or "n/a"), ms, tf32_ms, ours_over_vendor, note}.
    pub fn vendor_json(&self) -> serde_json::Value {
        let Some(lib) = vendor::vendor_of(self.family) else {
            return serde_json::Value::Null;
        };
        let v = self.vendor.clone().unwrap_or_default();
        let measured = v.ms.is_some() || v.tf32_ms.is_some();
        serde_json::json!({
            "lib": lib,
            "status": if measured { "measured" } else { "n/a" },
            "ms": v.ms,
            "tf32_ms": v.tf32_ms,
            "ours_over_vendor": self.ms.zip(v.ms).filter(|(_, f)| *f > 0.0).map(|(o, f)| o / f),
            "ours_over_vendor_tf32": self.ms.zip(v.tf32_ms).filter(|(_, f)| *f > 0.0).map(|(o, f)| o / f),
            "note": v.note,
        })
    }

    pub fn gflops(&self) -> Option<f64> {
        self.ms
            .filter(|_| self.flop > 0.0)
            .map(|ms| self.flop / ms / 1e6)
    }
    pub fn gbs(&self) -> Option<f64> {
        self.ms.map(|ms| self.bytes / ms / 1e6)
    }
    /// Roofline floor over the measured time, in percent.
    pub fn roofline_pct(&self, c: &Ceilings) -> Option<f64> {
        let ms = self.ms?;
        let (peak, bw) = (c.fp32_peak(), c.bandwidth());
        if peak <= 0.0 || bw <= 0.0 {
            return None;
        }
        let floor = (self.flop / peak / 1e6).max(self.bytes / bw / 1e6);
        Some(100.0 * floor / ms)
    }
    /// Which ceiling binds: "compute" or "memory".
    pub fn bound(&self, c: &Ceilings) -> &'static str {
        if self.flop / c.fp32_peak().max(1e-9) > self.bytes / c.bandwidth().max(1e-9) {
            "compute"
        } else {
            "memory"
        }
    }
}

/// Geometric mean (None when empty).
fn geomean(x: &[f64]) -> Option<f64> {
    (!x.is_empty()).then(|| (x.iter().map(|v| v.ln()).sum::<f64>() / x.len() as f64).exp())
}

fn vendor_status_json(r: &Result<String, String>) -> serde_json::Value {
    match r {
        Ok(v) => serde_json::json!({"available": true, "version": v}),
        Err(e) => serde_json::json!({"available": false, "reason": e}),
    }
}

/// (median, minimum) of `t` (non-empty).
pub(crate) fn median(mut t: Vec<f64>) -> (f64, f64) {
    t.sort_by(f64::total_cmp);
    let m = t.len() / 2;
    let med = if t.len() % 2 == 1 {
        t[m]
    } else {
        (t[m - 1] + t[m]) / 2.0
    };
    (med, t[0])
}

/// How many buffer sets of `set_bytes` to rotate over so that together they hold at least
/// [`Config::rotate_bytes`] (1 to [`Config::max_sets`]).
pub(crate) fn sets_for(cfg: &Config, set_bytes: f64) -> usize {
    let want = (cfg.rotate_bytes as f64 / set_bytes.max(1.0)).ceil() as usize;
    want.clamp(1, cfg.max_sets.max(1))
}

/// Uniform values in [-1, 1) from a xorshift stream (never all zeros).
pub(crate) fn random(n: usize, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

struct Harness<'a, M: BenchTarget> {
    exec: &'a M,
    cfg: &'a Config,
    rows: Vec<Row>,
    seed: u64,
    log: bool,
}

impl<M: BenchTarget> Harness<'_, M> {
    fn rand(&mut self, n: usize) -> Vec<f32> {
        random(n, &mut self.seed)
    }

    /// How many buffer sets of `set_bytes` to rotate over.
    fn sets_for(&self, set_bytes: f64) -> usize {
        sets_for(self.cfg, set_bytes)
    }

    /// `sets` device copies of `host`.
    fn upload_sets<T: crate::gpu::DeviceRepr>(
        &self,
        host: &[T],
        sets: usize,
    ) -> Result<Vec<M::Buf<T>>, GpuError> {
        (0..sets).map(|_| self.exec.upload(host)).collect()
    }

    /// Times `run(set)` over `sets` rotating sets and records the row (or a row saying why
    /// it failed: one bad kernel does not stop the table).
    #[allow(clippy::too_many_arguments)]
    fn measure(
        &mut self,
        family: &'static str,
        name: &str,
        direction: &str,
        shape: String,
        flop: f64,
        bytes: f64,
        sets: usize,
        run: &mut dyn FnMut(usize) -> Result<(), GpuError>,
    ) {
        let (exec, cfg) = (self.exec, self.cfg);
        let result = (|| -> Result<(f64, f64), GpuError> {
            for i in 0..cfg.warmup.max(1) {
                run(i % sets)?;
            }
            let t = exec.time_each(cfg.reps.max(1), &mut |i| run(i % sets))?;
            Ok(median(t))
        })();
        let (ms, min_ms, note) = match result {
            Ok((m, lo)) => (Some(m), Some(lo), String::new()),
            Err(e) => (None, None, format!("failed: {e}")),
        };
        if self.log {
            eprintln!(
                "  {family:<10} {name:<12} {direction:<16} {}",
                ms.map(|m| format!("{m:.4} ms"))
                    .unwrap_or_else(|| note.clone())
            );
        }
        self.rows.push(Row {
            family,
            name: name.to_string(),
            direction: direction.to_string(),
            shape,
            flop,
            bytes,
            ms,
            min_ms,
            sets,
            torch_ms: None,
            vendor: None,
            note,
        });
    }

    fn conv(&mut self, l: &ConvLayer) -> Result<(), GpuError> {
        let n = self.cfg.batch;
        let dirs = ["forward", "backward-data", "backward-filter"];
        if !dirs.iter().any(|d| self.cfg.selected(&l.name, d)) {
            return Ok(());
        }
        let s = l.shape(n);
        let y_dims = s.y_dims()?;
        let (xl, wl, yl) = (
            s.x_dims.iter().product::<usize>(),
            s.w_dims.iter().product::<usize>(),
            y_dims.iter().product::<usize>(),
        );
        let set_bytes = 4.0 * (2 * xl + wl + 2 * yl) as f64;
        let sets = self.sets_for(set_bytes);
        let (xh, wh, yh) = (self.rand(xl), self.rand(wl), self.rand(yl));
        let xs = self.upload_sets(&xh, sets)?;
        let ws = self.upload_sets(&wh, sets)?;
        let gys = self.upload_sets(&yh, sets)?;
        let mut ys = self.upload_sets(&vec![f32::NAN; yl], sets)?;
        let mut gxs = self.upload_sets(&vec![f32::NAN; xl], sets)?;
        let mut gws = self.upload_sets(&vec![f32::NAN; wl], sets)?;
        let mut work = self
            .exec
            .alloc_zeroed::<f32>(conv::workspace_len(&s).max(1))?;
        let flop = l.flop(n);
        let exec = self.exec;
        for d in dirs {
            if !self.cfg.selected(&l.name, d) {
                continue;
            }
            let bytes = 4.0
                * match d {
                    "forward" => xl + wl + yl,
                    "backward-data" => yl + wl + xl,
                    _ => xl + yl + wl,
                } as f64;
            let mut run = |i: usize| match d {
                "forward" => conv::forward(exec, &s, &xs[i], &ws[i], None, None, &mut ys[i]),
                "backward-data" => conv::backward_data(exec, &s, &gys[i], &ws[i], &mut gxs[i]),
                _ => conv::backward_filter(exec, &s, &xs[i], &gys[i], &mut work, &mut gws[i]),
            };
            self.measure(
                "conv",
                &l.name,
                d,
                l.describe(),
                flop,
                bytes,
                sets,
                &mut run,
            );
        }
        Ok(())
    }

    fn batchnorm(&mut self, name: &str, c: usize, hw: usize) -> Result<(), GpuError> {
        let n = self.cfg.batch;
        let dims = [n, c, hw, hw];
        let len = n * c * hw * hw;
        let sets = self.sets_for(4.0 * 4.0 * len as f64);
        let xh = self.rand(len);
        let gyh = self.rand(len);
        let xs = self.upload_sets(&xh, sets)?;
        let gys = self.upload_sets(&gyh, sets)?;
        let mut ys = self.upload_sets(&vec![f32::NAN; len], sets)?;
        let mut gxs = self.upload_sets(&vec![f32::NAN; len], sets)?;
        let e = self.exec;
        let weight = e.upload(&self.rand(c))?;
        let bias = e.upload(&self.rand(c))?;
        let mut mean = e.alloc_zeroed::<f32>(c)?;
        let mut invstd = e.filled::<f32>(c, 1.0)?;
        let mut rmean = e.alloc_zeroed::<f32>(c)?;
        let mut rvar = e.filled::<f32>(c, 1.0)?;
        let mut gw = e.alloc_zeroed::<f32>(c)?;
        let mut gb = e.alloc_zeroed::<f32>(c)?;
        let shape = format!("[{n}, {c}, {hw}, {hw}]");
        if self.cfg.selected(name, "forward") {
            let mut run = |i: usize| {
                batchnorm::forward_train(
                    e,
                    dims,
                    &xs[i],
                    &weight,
                    &bias,
                    1e-5,
                    0.1,
                    Some(Activation::Relu),
                    &mut ys[i],
                    &mut mean,
                    &mut invstd,
                    &mut rmean,
                    &mut rvar,
                )
            };
            // Statistics (2 FLOP/element each for sum and sum of squares), normalize + affine
            // + ReLU (≈ 4): ≈ 8 FLOP per element; x read once, y written once.
            self.measure(
                "batchnorm",
                name,
                "forward",
                shape.clone(),
                8.0 * len as f64,
                8.0 * len as f64,
                sets,
                &mut run,
            );
        }
        if self.cfg.selected(name, "backward") {
            // Fresh statistics for the backward (the forward above wrote them).
            batchnorm::forward_train(
                e,
                dims,
                &xs[0],
                &weight,
                &bias,
                1e-5,
                0.1,
                None,
                &mut ys[0],
                &mut mean,
                &mut invstd,
                &mut rmean,
                &mut rvar,
            )?;
            let mut run = |i: usize| {
                batchnorm::backward_train(
                    e,
                    dims,
                    &xs[i],
                    &weight,
                    &mean,
                    &invstd,
                    None,
                    &gys[i],
                    Some(&mut gxs[i]),
                    Some(&mut gw),
                    Some(&mut gb),
                )
            };
            // Σgy, Σgy·x̂ (≈ 5 FLOP/element), then gx (≈ 5): x and gy read, gx written.
            self.measure(
                "batchnorm",
                name,
                "backward",
                shape,
                10.0 * len as f64,
                12.0 * len as f64,
                sets,
                &mut run,
            );
        }
        Ok(())
    }

    fn pool(&mut self, name: &str, c: usize, hw: usize, k: usize) -> Result<(), GpuError> {
        let n = self.cfg.batch;
        let dims = [n, c, hw, hw];
        let xl = n * c * hw * hw;
        let yl = xl / (k * k);
        let sets = self.sets_for(4.0 * (2 * xl + 3 * yl) as f64);
        let xh = self.rand(xl);
        let gyh = self.rand(yl);
        let xs = self.upload_sets(&xh, sets)?;
        let gys = self.upload_sets(&gyh, sets)?;
        let mut ys = self.upload_sets(&vec![f32::NAN; yl], sets)?;
        let mut args = self.upload_sets(&vec![0u32; yl], sets)?;
        let mut gxs = self.upload_sets(&vec![f32::NAN; xl], sets)?;
        let e = self.exec;
        for i in 0..sets {
            pool::forward(e, dims, k, &xs[i], &mut ys[i], &mut args[i])?;
        }
        let shape = format!("[{n}, {c}, {hw}, {hw}] k{k}");
        if self.cfg.selected(name, "forward") {
            let mut run = |i: usize| pool::forward(e, dims, k, &xs[i], &mut ys[i], &mut args[i]);
            self.measure(
                "pool",
                name,
                "forward",
                shape.clone(),
                xl as f64,
                4.0 * (xl + 2 * yl) as f64,
                sets,
                &mut run,
            );
        }
        if self.cfg.selected(name, "backward") {
            let mut run = |i: usize| pool::backward(e, dims, k, &gys[i], &args[i], &mut gxs[i]);
            self.measure(
                "pool",
                name,
                "backward",
                shape,
                0.0,
                4.0 * (xl + 2 * yl) as f64,
                sets,
                &mut run,
            );
        }
        Ok(())
    }

    /// `n` rows through a linear layer fin → fout: forward, backward-data, backward-weight.
    fn linear(
        &mut self,
        family: &'static str,
        name: &str,
        (n, fin, fout): (usize, usize, usize),
    ) -> Result<(), GpuError> {
        let dirs = ["forward", "backward-data", "backward-weight"];
        if !dirs.iter().any(|d| self.cfg.selected(name, d)) {
            return Ok(());
        }
        let (xl, wl, yl) = (n * fin, fout * fin, n * fout);
        let sets = self.sets_for(4.0 * (2 * xl + 2 * wl + 2 * yl) as f64);
        let (xh, wh, gyh, bh) = (self.rand(xl), self.rand(wl), self.rand(yl), self.rand(fout));
        let xs = self.upload_sets(&xh, sets)?;
        let ws = self.upload_sets(&wh, sets)?;
        let gys = self.upload_sets(&gyh, sets)?;
        let mut ys = self.upload_sets(&vec![f32::NAN; yl], sets)?;
        let mut gxs = self.upload_sets(&vec![f32::NAN; xl], sets)?;
        let mut gws = self.upload_sets(&vec![f32::NAN; wl], sets)?;
        let e = self.exec;
        let bias = e.upload(&bh)?;
        let flop = 2.0 * (n * fin * fout) as f64;
        let bytes = 4.0 * (xl + wl + yl) as f64;
        let shape = format!("{n}x{fin} -> {fout}");
        for d in dirs {
            if !self.cfg.selected(name, d) {
                continue;
            }
            let mut run = |i: usize| match d {
                "forward" => {
                    linear::forward(e, n, fin, fout, &xs[i], &ws[i], Some(&bias), &mut ys[i])
                }
                "backward-data" => {
                    linear::backward_data(e, n, fin, fout, &gys[i], &ws[i], &mut gxs[i])
                }
                _ => linear::backward_weight(e, n, fin, fout, &gys[i], &xs[i], &mut gws[i]),
            };
            self.measure(family, name, d, shape.clone(), flop, bytes, sets, &mut run);
        }
        Ok(())
    }

    fn losses(&mut self) -> Result<(), GpuError> {
        let n = self.cfg.batch;
        let e = self.exec;
        for k in [10usize, 11] {
            let name = format!("CE[{n},{k}]");
            let logits = e.upload(&self.rand(n * k))?;
            let labels = e.upload(&(0..n as u32).map(|i| i % k as u32).collect::<Vec<_>>())?;
            let mut rows = e.alloc_zeroed::<f32>(n)?;
            let mut out = e.alloc_zeroed::<f32>(1)?;
            let g = e.filled::<f32>(1, 1.0)?;
            let mut dx = e.alloc_zeroed::<f32>(n * k)?;
            if self.cfg.selected(&name, "forward") {
                let mut run = |_| {
                    loss::cross_entropy_forward(e, &logits, &labels, [n, k], &mut rows, &mut out)
                };
                self.measure(
                    "loss",
                    &name,
                    "forward",
                    format!("{n}x{k}"),
                    5.0 * (n * k) as f64,
                    4.0 * (n * k + 2 * n) as f64,
                    1,
                    &mut run,
                );
            }
            // What training runs: loss and saved gradient in one block, then the scaled
            // backward.
            let mut saved = e.alloc_zeroed::<f32>(n * k)?;
            if self.cfg.selected(&name, "fused forward+grad") {
                let mut run = |_| {
                    loss::cross_entropy_fused(
                        e,
                        &logits,
                        &labels,
                        [n, k],
                        &mut out,
                        Some(&mut saved),
                    )
                };
                self.measure(
                    "loss",
                    &name,
                    "fused forward+grad",
                    format!("{n}x{k}"),
                    8.0 * (n * k) as f64,
                    4.0 * (2 * n * k + n + 1) as f64,
                    1,
                    &mut run,
                );
            }
            if self.cfg.selected(&name, "fused backward") {
                let mut run = |_| loss::grad_scale(e, &saved, &g, n as f32, &mut dx);
                self.measure(
                    "loss",
                    &name,
                    "fused backward",
                    format!("{n}x{k}"),
                    2.0 * (n * k) as f64,
                    4.0 * (2 * n * k + 1) as f64,
                    1,
                    &mut run,
                );
            }
            if self.cfg.selected(&name, "backward") {
                let mut run =
                    |_| loss::cross_entropy_backward(e, &logits, &labels, [n, k], &g, &mut dx);
                self.measure(
                    "loss",
                    &name,
                    "backward",
                    format!("{n}x{k}"),
                    5.0 * (n * k) as f64,
                    4.0 * (2 * n * k + n) as f64,
                    1,
                    &mut run,
                );
            }
        }
        let name = format!("BCE[{n}]");
        let x = e.upload(&self.rand(n))?;
        let mut terms = e.alloc_zeroed::<f32>(n)?;
        let mut out = e.alloc_zeroed::<f32>(1)?;
        let g = e.filled::<f32>(1, 1.0)?;
        let mut dx = e.alloc_zeroed::<f32>(n)?;
        if self.cfg.selected(&name, "forward") {
            let mut run = |_| {
                loss::bce_with_logits_forward(
                    e,
                    &x,
                    loss::BceTarget::Constant(1.0),
                    &mut terms,
                    &mut out,
                )
            };
            self.measure(
                "loss",
                &name,
                "forward",
                format!("{n}"),
                6.0 * n as f64,
                8.0 * n as f64,
                1,
                &mut run,
            );
        }
        let mut saved = e.alloc_zeroed::<f32>(n)?;
        if self.cfg.selected(&name, "fused forward+grad") {
            let mut run = |_| {
                loss::bce_fused(
                    e,
                    &x,
                    loss::BceTarget::Constant(1.0),
                    &mut out,
                    Some(&mut saved),
                )
            };
            self.measure(
                "loss",
                &name,
                "fused forward+grad",
                format!("{n}"),
                8.0 * n as f64,
                4.0 * (2 * n + 1) as f64,
                1,
                &mut run,
            );
        }
        if self.cfg.selected(&name, "backward") {
            let mut run = |_| {
                loss::bce_with_logits_backward(e, &x, loss::BceTarget::Constant(1.0), &g, &mut dx)
            };
            self.measure(
                "loss",
                &name,
                "backward",
                format!("{n}"),
                5.0 * n as f64,
                8.0 * n as f64,
                1,
                &mut run,
            );
        }
        Ok(())
    }

    fn adam(&mut self) -> Result<(), GpuError> {
        let n = adam_params(self.cfg);
        let name = "Adam(exp1)";
        if !self.cfg.selected(name, "step") {
            return Ok(());
        }
        let sets = self.sets_for(16.0 * n as f64);
        let (ph, gh) = (self.rand(n), self.rand(n));
        let vh: Vec<f32> = gh.iter().map(|g| g * g).collect();
        let mut ps = self.upload_sets(&ph, sets)?;
        let gs = self.upload_sets(&gh, sets)?;
        let mut ms = self.upload_sets(&gh, sets)?;
        let mut vs = self.upload_sets(&vh, sets)?;
        let e = self.exec;
        let acfg = crate::ops::adam::AdamConfig::default();
        let mut run =
            |i: usize| adam::step(e, &mut ps[i], &gs[i], &mut ms[i], &mut vs[i], 10, &acfg);
        // Read param, grad, m, v; write param, m, v (7 floats); ≈ 12 FLOP per element.
        self.measure(
            "adam",
            name,
            "step",
            format!("{n} params"),
            12.0 * n as f64,
            28.0 * n as f64,
            sets,
            &mut run,
        );
        // What training runs: one launch over the network's tensors (segments of the same
        // flat buffers here, one per weight, bias and batch-norm vector of exp1).
        if self.cfg.selected(name, "step, per-tensor segments") {
            let sizes = adam_tensor_sizes(self.cfg);
            let tables = (0..sets)
                .map(|i| {
                    let mut off = 0u64;
                    let segs: Vec<adam::AdamSegment> = sizes
                        .iter()
                        .map(|&len| {
                            let at = |b: &M::Buf<f32>| b.device_ptr() + 4 * off;
                            let s = adam::AdamSegment {
                                param: at(&ps[i]),
                                grad: at(&gs[i]),
                                m: at(&ms[i]),
                                v: at(&vs[i]),
                                n: len as u64,
                            };
                            off += len as u64;
                            s
                        })
                        .collect();
                    e.upload(&segs)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let max_n = sizes.iter().copied().max().unwrap_or(0);
            let scalars = crate::ops::adam::AdamScalars::new(10, &acfg);
            let mut run = |i: usize| {
                // SAFETY: the segments tile the set's four flat buffers of n floats (the sizes
                // sum to n), which stay alive and unshared during the launch.
                unsafe { adam::step_multi(e, &tables[i], max_n, adam::StepScalars::Now(scalars)) }
            };
            self.measure(
                "adam",
                name,
                "step, per-tensor segments",
                format!("{n} params in {} tensors", sizes.len()),
                12.0 * n as f64,
                28.0 * n as f64,
                sets,
                &mut run,
            );
        }
        Ok(())
    }

    fn gather(&mut self) -> Result<(), GpuError> {
        let b = self.cfg.batch;
        let e = self.exec;
        // Source-like (3×32×32, no resize) and MNIST-like (1×28×28, resized and gray → RGB).
        for (name, c, hw) in [("gather.rgb32", 3usize, 32usize), ("gather.gray28", 1, 28)] {
            if !self.cfg.selected(name, "forward") {
                continue;
            }
            let count = (4 * b).max(16);
            let mut s = self.seed;
            let pixels: Vec<u8> = (0..count * c * hw * hw)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s >> 56) as u8
                })
                .collect();
            self.seed = s;
            let images = data::DeviceImages::new(e, &pixels, [count, c, hw, hw])?;
            let idx: Vec<u32> = (0..b as u32).map(|i| (i * 7 + 3) % count as u32).collect();
            let idx = e.upload(&idx)?;
            let out_len = b * 3 * 32 * 32;
            let mut out = e.alloc_zeroed::<f32>(out_len)?;
            let mut out_d = e.alloc_zeroed::<f32>(out_len)?;
            let mut run = |_| {
                data::gather(
                    e,
                    &images,
                    data::Rows::Now(&idx),
                    &mut out,
                    Some(&mut out_d),
                    None,
                )
            };
            self.measure(
                "gather",
                name,
                "forward",
                format!("{b} of {count}x{c}x{hw}x{hw} u8 -> {b}x3x32x32"),
                0.0,
                (b * c * hw * hw + 8 * out_len) as f64,
                1,
                &mut run,
            );
        }
        Ok(())
    }

    fn ceilings(&mut self) -> Result<Ceilings, GpuError> {
        let (exec, cfg) = (self.exec, self.cfg);
        let bytes = cfg.copy_bytes.max(256);
        let src = exec.upload(&vec![0x5au8; bytes])?;
        let mut dst = exec.alloc_zeroed::<u8>(bytes)?;
        exec.copy_bytes(&src, &mut dst)?;
        let t = exec.time_each(cfg.reps.clamp(1, 20), &mut |_| {
            exec.copy_bytes(&src, &mut dst)
        })?;
        let copy_gbs = 2.0 * bytes as f64 / median(t).0 / 1e6;
        drop((src, dst));
        let s = cfg.gemm_size.max(16);
        let a = exec.upload(&self.rand(s * s))?;
        let b = exec.upload(&self.rand(s * s))?;
        let mut c = exec.alloc_zeroed::<f32>(s * s)?;
        linear::forward(exec, s, s, s, &a, &b, None, &mut c)?;
        let t = exec.time_each(cfg.reps.clamp(1, 10), &mut |_| {
            linear::forward(exec, s, s, s, &a, &b, None, &mut c)
        })?;
        let gemm_gflops = 2.0 * (s * s * s) as f64 / median(t).0 / 1e6;
        Ok(Ceilings {
            copy_gbs,
            gemm_gflops,
            gemm_size: s,
            ..Ceilings::default()
        })
    }
}

/// Runs every row of `cfg` on `exec`. `log`: one line per row on stderr as it goes.
pub fn run<M: BenchTarget>(exec: &M, cfg: &Config, log: bool) -> Result<Report, GpuError> {
    let mut h = Harness {
        exec,
        cfg,
        rows: Vec::new(),
        seed: 0x9e37_79b9_7f4a_7c15,
        log,
    };
    let ceilings = h.ceilings()?;
    if log {
        eprintln!(
            "ceilings: copy {:.1} GB/s, FP32 GEMM (ours, {}³) {:.1} GFLOP/s",
            ceilings.copy_gbs, ceilings.gemm_size, ceilings.gemm_gflops
        );
    }
    for l in conv_layers(cfg) {
        h.conv(&l)?;
    }
    for (name, c, hw) in bn_layers(cfg) {
        h.batchnorm(&name, c, hw)?;
    }
    for (name, c, hw, k) in pool_layers(cfg) {
        h.pool(&name, c, hw, k)?;
    }
    for (name, fin, fout) in linear_layers(cfg) {
        h.linear("linear", &name, (cfg.batch, fin, fout))?;
    }
    h.losses()?;
    h.adam()?;
    h.gather()?;
    Ok(Report {
        device: exec.device(),
        driver: exec.driver(),
        clock: exec.clock().to_string(),
        cpu: cpu_name(),
        commit: commit(),
        date: utc_now(),
        config: cfg.clone(),
        ceilings,
        rows: h.rows,
        torch: None,
        vendor: vendor::Vendors::default(),
    })
}

/// The commit: GTADAPT_BENCH_COMMIT, else `git rev-parse --short HEAD`, else "unknown".
pub fn commit() -> String {
    if let Ok(c) = std::env::var("GTADAPT_BENCH_COMMIT") {
        if !c.is_empty() {
            return c;
        }
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Report {
    /// Joins reference/bench_ops.py's JSON: its rows (by name and direction) and ceilings.
    /// Returns how many rows matched.
    pub fn join_torch(&mut self, json: &str) -> Result<usize, String> {
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let meta = &v["meta"];
        self.torch = Some(format!(
            "PyTorch {} on {}{}",
            meta["torch"].as_str().unwrap_or("?"),
            meta["device"].as_str().unwrap_or("?"),
            meta["cudnn"]
                .as_i64()
                .map(|c| format!(", cuDNN {c}"))
                .unwrap_or_default()
        ));
        let c = &v["ceilings"];
        self.ceilings.torch_fp32_gflops = c["gemm_fp32_gflops"].as_f64();
        self.ceilings.torch_tf32_gflops = c["gemm_tf32_gflops"].as_f64();
        self.ceilings.torch_copy_gbs = c["copy_gbs"].as_f64();
        let mut matched = 0;
        for r in v["rows"].as_array().into_iter().flatten() {
            let (Some(name), Some(dir), Some(ms)) = (
                r["name"].as_str(),
                r["direction"].as_str(),
                r["ms"].as_f64(),
            ) else {
                continue;
            };
            if let Some(row) = self
                .rows
                .iter_mut()
                .find(|x| x.name == name && x.direction == dir)
            {
                row.torch_ms = Some(ms);
                matched += 1;
            }
        }
        Ok(matched)
    }

    /// The markdown report: a header, the ceilings, one table row per kernel row, and the
    /// geometric mean of the PyTorch / ours time ratio per family when PyTorch was joined.
    pub fn to_markdown(&self) -> String {
        let c = &self.ceilings;
        let cfg = &self.config;
        let mut s = String::new();
        let _ = writeln!(s, "# gtadapt kernel benchmark\n");
        let _ = writeln!(s, "- device: {} (driver: {})", self.device, self.driver);
        let _ = writeln!(s, "- host CPU: {}", self.cpu);
        let _ = writeln!(s, "- commit: {}, date: {}", self.commit, self.date);
        let _ = writeln!(
            s,
            "- shapes: batch {}, ndf {}, ngf {}, nz {}; {} timed runs (median) after {} warm-up, {}; inputs rotated over up to {} buffer sets (≥ {} MiB)",
            cfg.batch,
            cfg.ndf,
            cfg.ngf,
            cfg.nz,
            cfg.reps,
            cfg.warmup,
            self.clock,
            cfg.max_sets,
            cfg.rotate_bytes >> 20
        );
        let opt = |v: Option<f64>, unit: &str| {
            v.map(|x| format!("{x:.1} {unit}"))
                .unwrap_or_else(|| "not measured".into())
        };
        let na = |v: Option<f64>| {
            v.map(|x| format!("{x:.1} GFLOP/s"))
                .unwrap_or_else(|| "n/a".into())
        };
        let _ = writeln!(
            s,
            "- ceilings measured in this run: device copy {:.1} GB/s (ours) / {} (PyTorch); FP32 GEMM {}³ {:.1} GFLOP/s (ours, linear_gemm_nt) / {} (cuBLAS via PyTorch) / {} (cuBLAS SGEMM via cudarc); TF32 GEMM {} (PyTorch) / {} (cuBLAS GemmEx TF32 via cudarc)",
            c.copy_gbs,
            opt(c.torch_copy_gbs, "GB/s"),
            c.gemm_size,
            c.gemm_gflops,
            opt(c.torch_fp32_gflops, "GFLOP/s"),
            na(c.cublas_fp32_gflops),
            opt(c.torch_tf32_gflops, "GFLOP/s"),
            na(c.cublas_tf32_gflops),
        );
        let _ = writeln!(
            s,
            "- % roofline = max(FLOP / {:.0} GFLOP/s, bytes / {:.0} GB/s) / time (the best FP32 GEMM and copy above)",
            c.fp32_peak(),
            c.bandwidth()
        );
        let _ = writeln!(
            s,
            "- PyTorch: {}",
            self.torch
                .as_deref()
                .unwrap_or("not joined (run reference/bench_ops.py first)")
        );
        let [dnn, blas] = self.vendor.lines();
        let _ = writeln!(
            s,
            "- vendor columns (cudarc's own bindings, same shapes and protocol; cuDNN: fastest algorithm of cudnnFind*, FP32 = FMA math, TF32 = tensor-op math; cuBLAS: Sgemm / GemmEx TF32, no bias): {dnn}; {blas}\n"
        );
        let _ = writeln!(
            s,
            "| family | layer | direction | shape | GFLOP | MB | ms | GFLOP/s | GB/s | bound | % roofline | PyTorch ms | PyTorch / ours | vendor FP32 ms | vendor TF32 ms | ours / vendor FP32 |"
        );
        let _ = writeln!(
            s,
            "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.rows {
            let f = |v: Option<f64>, p: usize| {
                v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into())
            };
            let ms = match r.ms {
                Some(m) => format!("{m:.4}"),
                None => r.note.clone(),
            };
            let ratio = match (r.torch_ms, r.ms) {
                (Some(t), Some(o)) if o > 0.0 => format!("{:.2}", t / o),
                _ => "-".into(),
            };
            let [v32, vtf, vratio] = r.vendor_cells();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.4} | {:.3} | {ms} | {} | {} | {} | {} | {} | {ratio} | {v32} | {vtf} | {vratio} |",
                r.family,
                r.name,
                r.direction,
                r.shape,
                r.flop / 1e9,
                r.bytes / 1e6,
                f(r.gflops(), 1),
                f(r.gbs(), 1),
                r.bound(c),
                f(r.roofline_pct(c), 1),
                f(r.torch_ms, 4),
            );
        }
        let mut fams: Vec<&str> = self.rows.iter().map(|r| r.family).collect();
        fams.dedup();
        let mut lines = String::new();
        for fam in fams {
            let ratios: Vec<f64> = self
                .rows
                .iter()
                .filter(|r| r.family == fam)
                .filter_map(|r| Some(r.torch_ms? / r.ms?))
                .filter(|x| *x > 0.0)
                .collect();
            if !ratios.is_empty() {
                let g = (ratios.iter().map(|x| x.ln()).sum::<f64>() / ratios.len() as f64).exp();
                let _ = writeln!(lines, "| {fam} | {} | {g:.2} |", ratios.len());
            }
        }
        if !lines.is_empty() {
            let _ = writeln!(
                s,
                "\nGeometric mean of PyTorch ms / ours ms (> 1: ours faster):\n\n| family | rows | geomean |\n|---|---:|---:|\n{lines}"
            );
        }
        let mut lines = String::new();
        for fam in ["conv", "linear"] {
            for (label, pick) in [
                (
                    "FP32",
                    (|v| v.ms) as fn(&vendor::VendorTiming) -> Option<f64>,
                ),
                ("TF32", |v| v.tf32_ms),
            ] {
                let ratios: Vec<f64> = self
                    .rows
                    .iter()
                    .filter(|r| r.family == fam)
                    .filter_map(|r| Some(r.ms? / pick(r.vendor.as_ref()?)?))
                    .filter(|x| *x > 0.0 && x.is_finite())
                    .collect();
                let g = geomean(&ratios)
                    .map(|g| format!("{g:.2}"))
                    .unwrap_or_else(|| "n/a".into());
                let lib = vendor::vendor_of(fam).unwrap_or("-");
                let _ = writeln!(lines, "| {fam} | {lib} {label} | {} | {g} |", ratios.len());
            }
        }
        let _ = writeln!(
            s,
            "\nGeometric mean of ours ms / vendor ms (< 1: ours faster; n/a: vendor not measured):\n\n| family | vendor | rows | geomean |\n|---|---|---:|---:|\n{lines}"
        );
        s
    }

    /// The JSON report (the same figures, unrounded).
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.ceilings;
        let cfg = &self.config;
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "family": r.family,
                    "name": r.name,
                    "direction": r.direction,
                    "shape": r.shape,
                    "flop": r.flop,
                    "bytes": r.bytes,
                    "ms": r.ms,
                    "min_ms": r.min_ms,
                    "gflops": r.gflops(),
                    "gbs": r.gbs(),
                    "bound": r.bound(c),
                    "roofline_pct": r.roofline_pct(c),
                    "sets": r.sets,
                    "torch_ms": r.torch_ms,
                    "vendor": r.vendor_json(),
                    "note": r.note,
                })
            })
            .collect();
        serde_json::json!({
            "bench": "kernels",
            "device": self.device,
            "driver": self.driver,
            "clock": self.clock,
            "cpu": self.cpu,
            "commit": self.commit,
            "date": self.date,
            "torch": self.torch,
            "config": {
                "batch": cfg.batch, "ndf": cfg.ndf, "ngf": cfg.ngf, "nz": cfg.nz,
                "reps": cfg.reps, "warmup": cfg.warmup, "rotate_bytes": cfg.rotate_bytes,
                "max_sets": cfg.max_sets,
            },
            "ceilings": {
                "copy_gbs": c.copy_gbs,
                "gemm_gflops": c.gemm_gflops,
                "gemm_size": c.gemm_size,
                "torch_fp32_gflops": c.torch_fp32_gflops,
                "torch_tf32_gflops": c.torch_tf32_gflops,
                "torch_copy_gbs": c.torch_copy_gbs,
                "cublas_fp32_gflops": c.cublas_fp32_gflops,
                "cublas_tf32_gflops": c.cublas_tf32_gflops,
            },
            "vendor": {
                "cudnn": vendor_status_json(&self.vendor.cudnn),
                "cublas": vendor_status_json(&self.vendor.cublas),
            },
            "rows": rows,
        })
    }

    /// Writes `<stem>.md` and `<stem>.json` into `dir` (created).
    pub fn write(&self, dir: &Path, stem: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("{stem}.md")), self.to_markdown())?;
        let json = serde_json::to_string_pretty(&self.to_json()).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(format!("{stem}.json")), json + "\n")
    }
}

/// The output folder: GTADAPT_BENCH_OUT, default `target/bench` (under CARGO_TARGET_DIR when
/// set).
pub fn out_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("GTADAPT_BENCH_OUT").filter(|d| !d.is_empty()) {
        return d.into();
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "target".into())
        .join("bench")
}

/// Which executor: GTADAPT_BENCH_DEVICE = "cuda" | "emu" (or "cpu" where the caller has a
/// CPU path); default "cuda" when a GPU is usable, else "emu".
pub fn device_choice() -> String {
    match std::env::var("GTADAPT_BENCH_DEVICE") {
        Ok(d) if !d.is_empty() => d.to_ascii_lowercase(),
        _ => {
            if crate::gpu::cuda::CudaExecutor::new().is_ok() {
                "cuda".into()
            } else {
                "emu".into()
            }
        }
    }
}
