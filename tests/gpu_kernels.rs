//! Every kernel of kernels/*.cu (activation, elementwise, layout, reduce, loss, adam, rng,
//! data, batchnorm, pool, linear, conv, conv_tf32) against the CPU backend, through [`gtadapt::gpu::check`]
//! (the same checks `gtadapt kernels check` runs): on the emulator always, and on the CUDA
//! executor when a GPU is present (see `executor_for_tests`). Inputs, sizes and tolerances are
//! documented in src/gpu/check/ (mod.rs, and one file per family for the layer kernels).

use gtadapt::gpu::check::{self, Report};
use gtadapt::gpu::{cuda, Emulator, GpuError, Memory};

/// Family `name` on `exec` with the default seed (0), asserting that every row passes.
fn run_family<M: Memory>(exec: &M, name: &str) {
    let families = check::families::<M>();
    let (i, (_, f)) = families
        .into_iter()
        .enumerate()
        .find(|(_, (n, _))| *n == name)
        .unwrap_or_else(|| panic!("no family {name}"));
    let mut report = Report::default();
    let r: Result<(), GpuError> = f(exec, i as u64 + 1, &mut report);
    r.unwrap_or_else(|e| panic!("{} {name}: {e}", exec.name()));
    assert!(!report.rows.is_empty(), "{name}: nothing checked");
    assert!(
        report.all_ok(),
        "{} {name}:\n{}",
        exec.name(),
        check::table(&report)
    );
}

/// Family `name` on every executor present.
fn family(name: &str) {
    run_family(&Emulator::new(), name);
    if let Some(gpu) = cuda::executor_for_tests() {
        run_family(&gpu, name);
    }
}

#[test]
fn activations_forward_and_backward_match_the_cpu_bit_for_bit() {
    family("activation");
}

#[test]
fn elementwise_kernels_match_the_cpu() {
    family("elementwise");
}

#[test]
fn concat_and_split_along_dim1_match_the_cpu() {
    family("layout");
}

#[test]
fn sum_is_deterministic_and_within_the_rounding_bound() {
    family("reduce");
}

#[test]
fn cross_entropy_matches_the_cpu() {
    family("loss: cross-entropy");
}

#[test]
fn bce_with_logits_matches_the_cpu() {
    family("loss: bce");
}

#[test]
fn count_correct_matches_the_cpu() {
    family("loss: count");
}

#[test]
fn adam_matches_the_cpu_bit_for_bit() {
    family("adam");
}

#[test]
fn philox_normals_match_the_cpu() {
    family("rng");
}

#[test]
fn batch_gather_matches_the_cpu_batches() {
    family("data");
}

#[test]
fn conv_kernels_match_the_cpu_within_the_rounding_bound() {
    family("conv");
}

#[test]
fn tf32_tensor_core_conv_kernels_match_the_cpu_within_the_tf32_bound() {
    family("conv_tf32");
}

#[test]
fn batch_norm_matches_the_cpu_within_its_bounds() {
    family("batchnorm");
}

#[test]
fn max_pool_matches_the_cpu_bit_for_bit() {
    family("pool");
}

#[test]
fn linear_matches_the_cpu_within_the_dot_product_bound() {
    family("linear");
}

#[test]
fn the_whole_check_passes_with_another_seed_and_reports_every_family() {
    let report = check::run_all(&Emulator::new(), 12345).unwrap();
    assert!(report.all_ok(), "{}", check::table(&report));
    let table = check::table(&report);
    for k in [
        "activation_forward",
        "axpy",
        "concat_dim1",
        "split_dim1",
        "sum (mean)",
        "cross_entropy_backward",
        "bce_with_logits_backward",
        "count_correct",
        "adam_step",
        "philox_normal",
        "gather_batch",
        "conv2d backward_filter",
        "conv_transpose2d forward",
        "conv2d forward (tf32)",
        "conv_transpose2d backward_filter (tf32) vs TF32-rounded inputs",
        "batchnorm_forward_train mean",
        "batchnorm_backward_eval gx",
        "max_pool_forward argmax",
        "max_pool_backward",
        "linear_forward",
        "linear_backward_weight",
    ] {
        assert!(table.contains(k), "{k} missing:\n{table}");
    }
}

#[test]
fn a_mismatch_is_reported_as_fail() {
    // The report machinery itself: a wrong result fails its row, and the table says so.
    let mut report = Report::default();
    check::activations(&Emulator::new(), 1, &mut report).unwrap();
    assert!(report.all_ok());
    report.rows[0].failure = Some("n=3: injected".into());
    assert!(!report.all_ok());
    assert!(check::table(&report).contains("FAIL n=3: injected"));
}
