//! One GTA iteration (two, in fact) against the PyTorch reference (reference/gta_torch.py):
//! identical initial weights, batch and noise → the four losses of each iteration and every
//! network's full state (weights, batch-norm running statistics) after both must agree.
//!
//! Bound: losses within 1e-5 relative; parameters and buffers within
//! max|ours − torch| ≤ 2e-5 · max(1, max|torch|) per tensor.

mod common;

use common::load;
use gtadapt::checkpoint::{load_network, StateDict};
use gtadapt::gta::{Batch, Experiment, Hyper, Noise, Trainer};
use gtadapt::models::Widths;
use gtadapt::Tensor;

const PARAM_BOUND: f32 = 2e-5;

fn run(exp: Experiment, file: &str) {
    let f = load(&format!("gta/{file}"));
    let path = common::fixture_dir().join(format!("gta/{file}.safetensors"));
    let sd = StateDict::read(&path).unwrap();
    let hyper = Hyper {
        widths: Widths {
            ndf: f.meta_usize("ndf"),
            ngf: f.meta_usize("ngf"),
            nz: f.meta_usize("nz"),
        },
        lr: f.meta_f64("lr"),
        beta1: f.meta_f64("beta1"),
        beta2: f.meta_f64("beta2"),
        adv_weight: f.meta_f64("adv_weight") as f32,
        alpha: f.meta_f64("alpha") as f32,
        lrd: f.meta_f64("lrd"),
    };
    let mut trainer = Trainer::new(exp, hyper, 0);
    for net in trainer.networks_mut() {
        load_network(net, &sd, "init.", &path).unwrap();
    }
    let tensor = |key: &str| {
        let (d, v) = f.get(key);
        Tensor::new(d.as_slice(), v.clone()).unwrap()
    };
    let y_s: Vec<u32> = f.ints["batch.y_s"].iter().map(|&v| v as u32).collect();
    let batch = Batch::from_normalized(tensor("batch.x_s"), y_s.clone(), tensor("batch.x_t")).unwrap();
    let b = y_s.len();
    for it in 1..=f.meta_usize("iterations") {
        let noise_of = |k: &str| {
            let key = format!("iter{it}.{k}");
            if f.has(&key) {
                tensor(&key).reshaped([b, hyper.widths.nz]).unwrap()
            } else {
                Tensor::zeros([b, hyper.widths.nz]).unwrap()
            }
        };
        let noise = Noise {
            z_s: noise_of("z_s"),
            z_t: noise_of("z_t"),
        };
        let losses = trainer.step(&batch, &noise).unwrap();
        for (name, v) in [
            ("D", losses.d),
            ("G", losses.g),
            ("C", losses.c),
            ("F", losses.f),
        ] {
            let key = format!("iter{it}.loss.{name}");
            if f.has(&key) {
                f.check(&key, &[v]);
            }
        }
    }
    let mut compared = 0;
    for net in trainer.networks() {
        for (name, data, _) in net.named_tensors() {
            f.check_within(&format!("final.{name}"), data, PARAM_BOUND);
            compared += 1;
        }
    }
    assert!(compared > 4, "{file}: compared only {compared} tensors");
}

#[test]
fn exp1_two_iterations_match_torch() {
    run(Experiment::Exp1, "exp1");
}

#[test]
fn exp2_two_iterations_match_torch() {
    run(Experiment::Exp2, "exp2");
}

#[test]
fn exp3_two_iterations_match_torch() {
    run(Experiment::Exp3, "exp3");
}

#[test]
fn source_only_two_iterations_match_torch() {
    run(Experiment::SourceOnly, "source_only");
}
