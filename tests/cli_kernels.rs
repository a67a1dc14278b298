//! `gtadapt kernels check` from the command line (the checks themselves: tests/gpu_kernels.rs
//! and src/gpu/check.rs). Not a `gpu_*` target: scripts/gpu-check.sh runs those from a bundle,
//! where this build's binary path does not exist; it runs `kernels check --device cuda` itself.

mod common;
use common::gtadapt;
use gtadapt::gpu::cuda;

#[test]
fn the_cli_checks_the_kernels_on_the_emulator() {
    let (ok, text) = gtadapt(&["kernels", "check", "--device", "emu", "--seed", "7"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("seed 7") && text.contains("max |Δ|"),
        "{text}"
    );
    assert!(text.contains("adam_step") && text.contains("ok"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    // Without a GPU, --device cuda is a clear error, not a panic.
    if cuda::CudaExecutor::new().is_err() {
        let (ok, text) = gtadapt(&["kernels", "check", "--device", "cuda"]);
        assert!(!ok, "{text}");
        assert!(text.contains("error: --device cuda"), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
}
