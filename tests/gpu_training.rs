//! The whole GTA iteration on the GPU backend against the CPU backend: every experiment at a
//! tiny configuration (widths 4, nz 8, batch 3), a few iterations from the same initial state,
//! batch and noise, on the SIMT emulator always and on a real GPU when one is present.
//!
//! What may differ: the kernels sum in other orders than the CPU code (tiled GEMMs, tree
//! reductions), so results agree to rounding, not to the bit. Tolerances:
//! - losses of every iteration: 1e-4 relative (a few ulps of f32 grown over the iterations);
//! - the first iteration's gradients handed to Adam: 1e-4 of the network's largest gradient;
//! - final state (weights, running statistics): 1e-4 of the tensor's largest value, except
//!   where Adam amplifies rounding-level gradients, bounded by what Adam can move an element
//!   (2·Σlr; the same contract as tests/gta_parity.rs and reference/README.md): the conv biases
//!   in front of a train-mode batch norm (gradient analytically zero) and the running means of
//!   those batch norms (which average the conv outputs, biases included), and exp2's final
//!   state (F2's near-zero gradients flip sign between summation orders; Adam's first steps
//!   are ±lr whatever the gradient's size).
//!
//! Also checked: after the first iteration the arena makes no driver allocation (same memory
//! every iteration), and the device state round-trips through the CPU exactly.

use gtadapt::backend::gpu::Gpu;
use gtadapt::backend::Backend;
use gtadapt::gpu::{cuda, Emulator, Memory};
use gtadapt::gta::{Batch, Experiment, Hyper, Noise, Trainer};
use gtadapt::models::Widths;
use gtadapt::rng;
use gtadapt::Tensor;

const BATCH: usize = 3;
const ITERATIONS: usize = 3;
const SEED: u64 = 5;

fn hyper() -> Hyper {
    Hyper {
        widths: Widths {
            ndf: 4,
            ngf: 4,
            nz: 8,
        },
        ..Hyper::default()
    }
}

fn normal(stream: u64, offset: u64, dims: &[usize], scale: f32) -> Tensor {
    let mut v = vec![0.0f32; dims.iter().product()];
    rng::normal(SEED, stream, offset, &mut v);
    v.iter_mut().for_each(|x| *x *= scale);
    Tensor::new(dims, v).unwrap()
}

fn batch(it: usize) -> Batch {
    let o = it as u64 * 100_000;
    let x_s = normal(1, o, &[BATCH, 3, 32, 32], 1.0);
    let x_t = normal(2, o, &[BATCH, 3, 32, 32], 1.0);
    let y_s = (0..BATCH).map(|i| ((i * 7 + it * 3) % 10) as u32).collect();
    Batch::from_normalized(x_s, y_s, x_t).unwrap()
}

fn noise(it: usize) -> Noise {
    let nz = hyper().widths.nz;
    Noise {
        z_s: normal(3, it as u64 * 1000, &[BATCH, nz], 1.0),
        z_t: normal(4, it as u64 * 1000, &[BATCH, nz], 1.0),
    }
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Tensors whose gradient is analytically zero: biases of a conv directly followed by a
/// train-mode batch norm (D's feature convs).
fn adam_bounded(exp: Experiment, name: &str) -> bool {
    exp == Experiment::Exp2
        || name.starts_with("netD.feature.")
            && (name.ends_with(".bias") || name.ends_with(".running_mean"))
}

fn check_experiment<M: Memory + 'static>(exec: M, exp: Experiment) {
    let what = format!("{} on {}", exp.name(), exec.name());
    let mut cpu = Trainer::new(exp, hyper(), SEED);
    cpu.record_grads = true;
    let gpu_backend = Gpu::new(exec);
    let mut gpu = cpu.to_backend(gpu_backend.clone()).unwrap();

    // The state round-trips exactly (upload, download).
    let back = gpu.to_cpu().unwrap();
    for (a, b) in cpu.networks().iter().zip(back.networks()) {
        for ((na, ta, _), (_, tb, _)) in a.named_tensors().iter().zip(b.named_tensors()) {
            assert_eq!(*ta, tb, "{what}: {na} changed in the round trip");
        }
    }

    let mut lr_sum = 0.0f32;
    let mut allocations_after_first = None;
    for it in 0..ITERATIONS {
        lr_sum += hyper().lr as f32;
        let (b, z) = (batch(it), noise(it));
        let lc = cpu.step(&b, &z).unwrap();
        let lg = gpu.step(&b, &z).unwrap_or_else(|e| panic!("{what}: {e}"));
        for (name, c, g) in [
            ("D", lc.d, lg.d),
            ("G", lc.g, lg.g),
            ("C", lc.c, lg.c),
            ("F", lc.f, lg.f),
        ] {
            let bound = 1e-4 * c.abs().max(1.0);
            assert!(
                (c - g).abs() <= bound,
                "{what}: iteration {it} loss {name}: cpu {c}, gpu {g} (bound {bound:e})"
            );
        }
        if it == 0 {
            let stats = gpu_backend.memory_stats().unwrap();
            allocations_after_first = Some(stats.arena_driver_allocations);
            // Iteration 1's gradients, network by network, in update order.
            assert_eq!(cpu.recorded_grads.len(), gpu.recorded_grads.len());
            for ((ni, gc), (_, gg)) in cpu.recorded_grads.iter().zip(&gpu.recorded_grads) {
                let scale = gc.iter().map(|t| max_abs(t.data())).fold(0.0, f32::max);
                let names: Vec<String> = cpu.networks()[*ni]
                    .params
                    .iter()
                    .map(|p| p.name.clone())
                    .collect();
                for ((a, b), name) in gc.iter().zip(gg).zip(names) {
                    let d = max_diff(a.data(), b.data());
                    assert!(
                        d <= 1e-4 * scale.max(1e-6),
                        "{what}: gradient of network {ni} {name}: max |Δ| {d:e} (largest {scale:e})"
                    );
                }
            }
        }
    }
    // The first reset sized the arena for a whole iteration: one more allocation (the chunk)
    // at most, then none.
    let stats = gpu_backend.memory_stats().unwrap();
    assert!(
        stats.arena_driver_allocations <= allocations_after_first.unwrap() + 1,
        "{what}: the arena kept allocating after the first iteration: {stats:?}"
    );

    let final_gpu = gpu.to_cpu().unwrap();
    for (a, b) in cpu.networks().iter().zip(final_gpu.networks()) {
        for ((name, ta, _), (_, tb, _)) in a.named_tensors().iter().zip(b.named_tensors()) {
            let d = max_diff(ta, tb);
            let bound = if adam_bounded(exp, name) {
                2.0 * lr_sum
            } else {
                1e-4 * max_abs(ta).max(1.0)
            };
            assert!(
                d <= bound,
                "{what}: final {name}: max |Δ| {d:e} > {bound:e}"
            );
        }
    }
    assert_eq!(cpu.iteration, gpu.iteration);
}

fn on_every_executor(exp: Experiment) {
    check_experiment(Emulator::new(), exp);
    if let Some(gpu) = cuda::executor_for_tests() {
        check_experiment(gpu, exp);
    }
}

#[test]
fn exp1_matches_the_cpu_backend() {
    on_every_executor(Experiment::Exp1);
}

#[test]
fn exp3_matches_the_cpu_backend() {
    on_every_executor(Experiment::Exp3);
}

#[test]
fn source_only_matches_the_cpu_backend() {
    on_every_executor(Experiment::SourceOnly);
}

#[test]
fn exp2_matches_the_cpu_backend() {
    on_every_executor(Experiment::Exp2);
}

#[test]
fn evaluation_logits_match_the_cpu_backend() {
    let cpu = Trainer::new(Experiment::Exp1, hyper(), SEED);
    let mut gpu = cpu.to_backend(Gpu::new(Emulator::new())).unwrap();
    let mut cpu = cpu;
    let x = normal(9, 0, &[5, 3, 32, 32], 1.0);
    let a = cpu.logits(x.clone()).unwrap();
    let b = gpu.logits(x).unwrap();
    assert_eq!(a.dims(), b.dims());
    let d = max_diff(a.data(), b.data());
    assert!(
        d <= 1e-5 * max_abs(a.data()).max(1.0),
        "logits: max |Δ| {d:e}"
    );
    // Accuracy counted on the device (count_correct kernel, one read) = the host's count.
    let x = normal(10, 0, &[37, 3, 32, 32], 1.0);
    let labels: Vec<u32> = (0..37).map(|i| (i * 3 % 10) as u32).collect();
    let host_logits = cpu.logits(x.clone()).unwrap();
    let want = gtadapt::ops::loss::count_correct(host_logits.data(), [37, 10], &labels).unwrap();
    assert_eq!(cpu.count_correct(&x, &labels, 8).unwrap(), want);
    assert_eq!(gpu.count_correct(&x, &labels, 8).unwrap(), want);
}

#[test]
fn a_tensor_from_an_earlier_iteration_is_refused() {
    let b = Gpu::new(Emulator::new());
    let t = b.upload(&Tensor::zeros([4]).unwrap()).unwrap();
    b.begin_iteration().unwrap();
    let err = b.scale(&t, 2.0).unwrap_err().to_string();
    assert!(err.contains("do not outlive their iteration"), "{err}");
    // Persistent tensors stay valid.
    let p = b.upload_persistent(&Tensor::zeros([4]).unwrap()).unwrap();
    b.begin_iteration().unwrap();
    assert_eq!(
        b.download(&b.scale(&p, 2.0).unwrap()).unwrap().data(),
        &[0.0; 4]
    );
}

/// TF32 convolutions (tensor cores, emulated): the first iteration's losses stay within TF32
/// rounding of the CPU's FP32 (inputs of every conv rounded to a 10-bit mantissa: ≈ 1e-3
/// relative through the networks; bound 1e-2), and differ from the FP32 kernels' (so the
/// tensor-core path ran). `Precision::Auto` (TF32 on the layers with ≥ 16 channels on both
/// sides, FP32 on the others) likewise, and differs from both all-FP32 and all-TF32.
#[test]
fn exp1_with_tf32_convolutions_stays_within_tf32_rounding() {
    use gtadapt::gpu::kernels::conv::Precision;
    let cpu = Trainer::new(Experiment::Exp1, hyper(), SEED);
    let (b, z) = (batch(0), noise(0));
    let losses = |p: Precision| {
        let mut t = cpu
            .to_backend(Gpu::with_precision(Emulator::new(), p))
            .unwrap();
        let l = t.step(&b, &z).unwrap();
        [l.d, l.g, l.c, l.f]
    };
    let (t, a, f) = (
        losses(Precision::Tf32),
        losses(Precision::Auto),
        losses(Precision::Fp32),
    );
    let mut cpu = cpu;
    let lc = cpu.step(&b, &z).unwrap();
    let c = [lc.d, lc.g, lc.c, lc.f];
    for (name, l) in [("tf32", t), ("auto", a)] {
        for i in 0..4 {
            assert!(
                (c[i] - l[i]).abs() <= 1e-2 * c[i].abs().max(1.0),
                "{name} losses {l:?} vs cpu {c:?}"
            );
        }
    }
    assert_ne!(
        t, f,
        "TF32 gave the FP32 kernels' bits: the tensor-core path did not run"
    );
    assert_ne!(a, f, "auto ran no layer in TF32");
    assert_ne!(a, t, "auto ran every layer in TF32");
}

/// On the GPU backend: batch norm + LeakyReLU/ReLU (train and eval) fused into one op each way
/// gives the bits of the separate ops, and the losses (fused one-block kernels with a saved
/// gradient; and, past one block, the multi-block kernels) give the CPU backend's gradients.
#[test]
fn fused_batch_norm_backward_and_losses_on_the_gpu_backend() {
    use gtadapt::ops::activation::Activation;
    use gtadapt::ops::batchnorm::{BatchNormParams, RunningStats};
    use gtadapt::ops::loss::BceTarget;
    use gtadapt::tape::Tape;

    fn run<B: Backend>(backend: B, fused: bool, training: bool, act: Activation) -> Vec<Tensor> {
        let mut tape = Tape::on(backend.clone());
        let up = |t: Tensor| backend.upload(&t).unwrap();
        let x = tape.param(up(normal(20, 0, &[3, 5, 4, 3], 1.5)));
        let g = tape.param(up(normal(21, 0, &[5], 1.0)));
        let beta = tape.param(up(normal(22, 0, &[5], 0.3)));
        let mut running = backend.running_stats(&RunningStats::new(5)).unwrap();
        let bn = BatchNormParams::default();
        let y = if fused {
            tape.batch_norm2d_act(x, g, beta, &mut running, training, bn, Some(act))
                .unwrap()
        } else {
            let h = tape
                .batch_norm2d(x, g, beta, &mut running, training, bn)
                .unwrap();
            tape.activation(h, act).unwrap()
        };
        // Cross-entropy over [3, 60] and BCE over the same values.
        let logits = tape.reshape(y, &[3, 60]).unwrap();
        let ce = tape.cross_entropy(logits, &[7, 0, 59]).unwrap();
        let bce = tape.bce_with_logits(y, BceTarget::Constant(1.0)).unwrap();
        let l = tape.add(ce, bce).unwrap();
        let grads = tape.backward(l, &[x, g, beta]).unwrap();
        let mut out = vec![backend.download(tape.value(l)).unwrap()];
        out.extend(grads.iter().map(|t| backend.download(t).unwrap()));
        out
    }
    let gpu = Gpu::new(Emulator::new());
    for training in [true, false] {
        for act in [Activation::Relu, Activation::LeakyRelu { slope: 0.2 }] {
            let what = format!("training {training}, {}", act.name());
            let a = run(gpu.clone(), false, training, act);
            let b = run(gpu.clone(), true, training, act);
            for (a, b) in a.iter().zip(&b) {
                assert_eq!(a.data(), b.data(), "{what}: fused vs separate on the GPU");
            }
            let c = run(gtadapt::backend::Cpu, true, training, act);
            for (i, (g, c)) in b.iter().zip(&c).enumerate() {
                let d = max_diff(g.data(), c.data());
                assert!(
                    d <= 1e-5 * max_abs(c.data()).max(1.0),
                    "{what}: output {i} vs the CPU: max |Δ| {d:e}"
                );
            }
        }
    }

    // Past one block (> 65 536 logits): the multi-block path, same gradients as the CPU.
    let n = gtadapt::gpu::kernels::loss::FUSED_MAX_ELEMENTS + 3;
    let x = normal(23, 0, &[n], 3.0);
    fn bce_of<B: Backend>(backend: B, x: &Tensor) -> (f32, Vec<f32>) {
        let mut tape = Tape::on(backend.clone());
        let v = tape.param(backend.upload(x).unwrap());
        let l = tape.bce_with_logits(v, BceTarget::Constant(0.3)).unwrap();
        let g = tape.backward(l, &[v]).unwrap();
        let l = backend.download(tape.value(l)).unwrap().data()[0];
        (l, backend.download(&g[0]).unwrap().data().to_vec())
    }
    let (lg, gg) = bce_of(gpu, &x);
    let (lc, gc) = bce_of(gtadapt::backend::Cpu, &x);
    // The means differ by their summation orders (sequential on the CPU, a tree on the GPU):
    // the terms are positive, so Σ|t| = n·mean and gtadapt::gpu::check::sum_bound is this.
    let u = f64::powi(2.0, -24);
    let nf = n as f64;
    let bound = (nf + nf / 256.0 + 10.0) * u * lc as f64 + 2.0 * u * lc as f64;
    assert!(
        ((lg - lc) as f64).abs() <= bound,
        "{lg} vs {lc}, bound {bound:e}"
    );
    assert_eq!(
        gg, gc,
        "multi-block BCE gradient = the CPU's bits on the emulator"
    );
}
