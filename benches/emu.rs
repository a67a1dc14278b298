//! SIMT emulator benchmark: DESIGN.md's reference case, a block-sum kernel (grid-stride loop,
//! five `__shfl_down_sync` rounds, one `__syncthreads`; kernels/selftest.cu
//! `selftest_block_sum`) at 128 blocks x 256 threads over 2^20 floats: ms per launch.
//! It reruns itself with GTA_EMU_SWITCH=ucontext to compare with glibc's swapcontext
//! (x86-64 only: elsewhere both are ucontext).
//!
//! `cargo bench --bench emu` (set GTA_EMU_BENCH_REPS to change the repetitions).

use std::time::Instant;

use gtadapt::gpu::kernels::selftest::SelftestVecParams;
use gtadapt::gpu::{DeviceBuffer, Emulator, Executor, LaunchConfig};

fn measure(label: &str, kernel: &str, cfg: LaunchConfig, n: usize, reps: usize) {
    let x = DeviceBuffer::from_slice(&(0..n).map(|i| (i % 7) as f32).collect::<Vec<_>>());
    let out = DeviceBuffer::<f32>::filled(n.max(cfg.grid[0] as usize), f32::NAN);
    let p = SelftestVecParams {
        x: x.device_ptr(),
        out: out.device_ptr(),
        n: n as u32,
        pad: 0,
    };
    let emu = Emulator::new();
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps + 1 {
        let t = Instant::now();
        // SAFETY: `p` mirrors SelftestVecParams; x holds n floats and out at least
        // max(n, blocks) floats, the most the kernel writes.
        unsafe { emu.launch_with(kernel, cfg, &p) }.expect("launch");
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.remove(0); // warm-up: maps the fiber stacks
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{label:<44} {kernel:<24} median {:>8.3} ms  min {:>8.3} ms  ({reps} launches)",
        times[times.len() / 2],
        times[0]
    );
}

fn main() {
    let reps: usize = std::env::var("GTA_EMU_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let switch = std::env::var("GTA_EMU_SWITCH").unwrap_or_else(|_| "asm".into());
    let n = 1 << 20;
    measure(
        &format!("[{switch}] block sum 128x256, 2^20 floats"),
        "selftest_block_sum",
        LaunchConfig::linear(128, 256),
        n,
        reps,
    );
    // Barrier-free: one fiber run per thread, no switching at barriers.
    measure(
        &format!("[{switch}] barrier-free 4096x256 (1 elem/thread)"),
        "selftest_missing_barrier",
        LaunchConfig::linear(4096, 256).with_dynamic_smem(256 * 4),
        n,
        reps,
    );
    if std::env::var_os("GTA_EMU_SWITCH").is_none() && cfg!(target_arch = "x86_64") {
        let status = std::process::Command::new(std::env::current_exe().expect("current exe"))
            .env("GTA_EMU_SWITCH", "ucontext")
            .env("GTA_EMU_BENCH_REPS", (reps / 4).max(3).to_string())
            .status()
            .expect("rerun with ucontext");
        assert!(status.success());
    }
}
