//! Launches of kernels/linear.cu: the fully connected layer `y = x·Wᵀ + b` (x [N, in],
//! W [out, in], b [out], y [N, out]) and its gradients, through one tiled SGEMM in three
//! layouts, plus the bias gradient. The CPU reference is [`crate::ops::linear`]. The products
//! are deterministic (each output one thread's sum in a fixed order) but not in the CPU GEMM's
//! order: they agree with it to the rounding bound of a dot product; the bias gradient sums in
//! the CPU's order and is bit-identical.

use super::{check_len, count, elements, invalid, launch};
use crate::gpu::{Buffer, GpuError, LaunchConfig, Memory};

/// Threads per GEMM block and the tile (`GTA_GEMM_*` in kernels/params.cuh).
pub const THREADS: u32 = 256;
pub const TILE_M: usize = 64;
pub const TILE_N: usize = 64;

#[repr(C)]
#[derive(Clone, Copy)]
struct GemmParams {
    a: u64,
    b: u64,
    bias: u64,
    c: u64,
    m: u32,
    n: u32,
    k: u32,
    pad: u32,
}
const _: () = assert!(std::mem::size_of::<GemmParams>() == 48);

/// Checks that no dimension is 0 and that every matrix of the product has fewer than 2^32
/// elements (the kernels index in 32 bits); returns (m, n, k).
fn gemm_dims(kernel: &str, m: usize, n: usize, k: usize) -> Result<(u32, u32, u32), GpuError> {
    if m == 0 || n == 0 || k == 0 {
        return Err(invalid(kernel, format!("empty product {m}×{k} · {k}×{n}")));
    }
    for (a, b) in [(m, k), (k, n), (m, n)] {
        let e = a
            .checked_mul(b)
            .ok_or_else(|| invalid(kernel, format!("{a}×{b} overflows")))?;
        count(kernel, e)?;
    }
    if m.div_ceil(TILE_M) > 65_535 {
        return Err(invalid(
            kernel,
            format!("{m} rows exceed the grid's 65 535 tiles"),
        ));
    }
    Ok((m as u32, n as u32, k as u32))
}

/// C [m, n] = A·B in the kernel's layout; all lengths checked by the callers.
fn gemm<M: Memory>(
    exec: &M,
    kernel: &str,
    (m, n, k): (u32, u32, u32),
    a: u64,
    b: u64,
    bias: u64,
    c: u64,
) -> Result<(), GpuError> {
    let p = GemmParams {
        a,
        b,
        bias,
        c,
        m,
        n,
        k,
        pad: 0,
    };
    let cfg = LaunchConfig {
        grid: [
            (n as usize).div_ceil(TILE_N) as u32,
            (m as usize).div_ceil(TILE_M) as u32,
            1,
        ],
        block: [THREADS, 1, 1],
        dynamic_smem: 0,
    };
    // SAFETY: the callers checked that a, b (and bias) hold the m·k, k·n (and n) floats of
    // the layout and c m·n; the kernel reads only rows < m, columns < n and depths < k (tile
    // loads past an edge are zero-filled, not read) and writes c[row][col] for row < m,
    // col < n.
    unsafe { launch(exec, kernel, cfg, &p) }
}

/// `y = x·Wᵀ (+ bias)`: x [n, fin], w [fout, fin], bias [fout], y [n, fout].
#[allow(clippy::too_many_arguments)]
pub fn forward<M: Memory>(
    exec: &M,
    n: usize,
    fin: usize,
    fout: usize,
    x: &M::Buf<f32>,
    w: &M::Buf<f32>,
    bias: Option<&M::Buf<f32>>,
    y: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "linear_gemm_nt";
    let dims = gemm_dims(K, n, fout, fin)?;
    check_len(K, "x", x, n * fin)?;
    check_len(K, "w", w, fout * fin)?;
    check_len(K, "y", y, n * fout)?;
    let bias = match bias {
        Some(b) => {
            check_len(K, "bias", b, fout)?;
            b.device_ptr()
        }
        None => 0,
    };
    gemm(
        exec,
        K,
        dims,
        x.device_ptr(),
        w.device_ptr(),
        bias,
        y.device_ptr(),
    )
}

/// `gx = gy·W`: gy [n, fout], w [fout, fin], gx [n, fin].
pub fn backward_data<M: Memory>(
    exec: &M,
    n: usize,
    fin: usize,
    fout: usize,
    gy: &M::Buf<f32>,
    w: &M::Buf<f32>,
    gx: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "linear_gemm_nn";
    let dims = gemm_dims(K, n, fin, fout)?;
    check_len(K, "gy", gy, n * fout)?;
    check_len(K, "w", w, fout * fin)?;
    check_len(K, "gx", gx, n * fin)?;
    gemm(
        exec,
        K,
        dims,
        gy.device_ptr(),
        w.device_ptr(),
        0,
        gx.device_ptr(),
    )
}

/// `gw = gyᵀ·x`: gy [n, fout], x [n, fin], gw [fout, fin].
pub fn backward_weight<M: Memory>(
    exec: &M,
    n: usize,
    fin: usize,
    fout: usize,
    gy: &M::Buf<f32>,
    x: &M::Buf<f32>,
    gw: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "linear_gemm_tn";
    let dims = gemm_dims(K, fout, fin, n)?;
    check_len(K, "gy", gy, n * fout)?;
    check_len(K, "x", x, n * fin)?;
    check_len(K, "gw", gw, fout * fin)?;
    gemm(
        exec,
        K,
        dims,
        gy.device_ptr(),
        x.device_ptr(),
        0,
        gw.device_ptr(),
    )
}

/// `gb[j] = Σ_i gy[i][j]` (rows in order, as the CPU: bit-identical): gy [n, fout], gb [fout].
pub fn backward_bias<M: Memory>(
    exec: &M,
    n: usize,
    fout: usize,
    gy: &M::Buf<f32>,
    gb: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "linear_bias_grad";
    let (m, cols, _) = gemm_dims(K, n, fout, 1)?;
    check_len(K, "gy", gy, n * fout)?;
    check_len(K, "gb", gb, fout)?;
    let p = GemmParams {
        a: gy.device_ptr(),
        b: 0,
        bias: 0,
        c: gb.device_ptr(),
        m,
        n: cols,
        k: 0,
        pad: 0,
    };
    // SAFETY: gy holds n·fout floats, gb fout (checked); thread j reads column j of gy and
    // writes gb[j], j < fout.
    unsafe { launch(exec, K, elements(fout), &p) }
}
