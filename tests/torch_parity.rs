//! Parity of every CPU op with PyTorch, against fixtures written by reference/make_fixtures.py
//! (committed in tests/fixtures/, torch version in each file's metadata).
//!
//! Bound: for every compared tensor, max|ours − torch| ≤ 1e-5 · max(1, max|torch|) — an f32
//! relative error an order of magnitude under 1e-4, at the fixtures' sizes.

use gtadapt::ops::activation::Activation;
use gtadapt::ops::adam::{adam_step, AdamConfig};
use gtadapt::ops::batchnorm::{
    batch_norm2d_backward_eval, batch_norm2d_backward_train, batch_norm2d_forward_eval,
    batch_norm2d_forward_train, BatchNormParams, RunningStats,
};
use gtadapt::ops::conv::{
    conv2d_backward, conv2d_forward, conv_transpose2d_backward, conv_transpose2d_forward,
    Conv2dParams,
};
use gtadapt::ops::layout::{concat_dim1, split_dim1};
use gtadapt::ops::linear::{linear_backward, linear_forward};
use gtadapt::ops::loss::{
    bce_with_logits_backward, bce_with_logits_forward, count_correct, cross_entropy_backward,
    cross_entropy_forward, BceTarget,
};
use gtadapt::ops::pool::{max_pool2d_backward, max_pool2d_forward};
use gtadapt::{Tape, Tensor};
mod common;
use common::{fixture_dir, load, Fixture};

fn check_grads(f: &Fixture, g: &gtadapt::ops::LayerGrads<f32>) {
    f.check("dx", g.dx.as_deref().expect("dx"));
    f.check("dw", g.dw.as_deref().expect("dw"));
    if f.has("db") {
        f.check("db", g.db.as_deref().expect("db"));
    } else {
        assert!(g.db.is_none(), "{}: db without a bias", f.name);
    }
}

#[test]
fn conv2d_matches_torch() {
    for name in ["conv2d_k3s2p1", "conv2d_k5s1p0", "conv2d_k3s1p2_nobias"] {
        let f = load(name);
        let p = Conv2dParams {
            stride: f.meta_usize("stride"),
            padding: f.meta_usize("padding"),
        };
        let bias = f.has("b").then(|| f.t("b"));
        let (y, dims) = conv2d_forward(f.t("x"), f.d4("x"), f.t("w"), f.d4("w"), bias, p).unwrap();
        assert_eq!(dims, f.d4("y"), "{name}: output shape");
        f.check("y", &y);
        let g = conv2d_backward(
            f.t("x"),
            f.d4("x"),
            f.t("w"),
            f.d4("w"),
            bias.is_some(),
            f.t("gy"),
            p,
            [true; 3],
        )
        .unwrap();
        check_grads(&f, &g);
    }
}

#[test]
fn conv_transpose2d_matches_torch() {
    for name in ["conv_transpose2d_k4s2p1", "conv_transpose2d_k2s1p0_nobias"] {
        let f = load(name);
        let p = Conv2dParams {
            stride: f.meta_usize("stride"),
            padding: f.meta_usize("padding"),
        };
        let bias = f.has("b").then(|| f.t("b"));
        let (y, dims) =
            conv_transpose2d_forward(f.t("x"), f.d4("x"), f.t("w"), f.d4("w"), bias, p).unwrap();
        assert_eq!(dims, f.d4("y"), "{name}: output shape");
        f.check("y", &y);
        let g = conv_transpose2d_backward(
            f.t("x"),
            f.d4("x"),
            f.t("w"),
            f.d4("w"),
            bias.is_some(),
            f.t("gy"),
            p,
            [true; 3],
        )
        .unwrap();
        check_grads(&f, &g);
    }
}

#[test]
fn batch_norm2d_train_matches_torch() {
    let f = load("batch_norm2d_train");
    let eps = f.meta_f64("eps") as f32;
    let (y, stats) =
        batch_norm2d_forward_train(f.t("x"), f.d4("x"), f.t("w"), f.t("b"), eps).unwrap();
    f.check("y", &y);
    let g =
        batch_norm2d_backward_train(f.t("x"), f.d4("x"), f.t("w"), &stats, f.t("gy"), [true; 3])
            .unwrap();
    f.check("dx", g.dx.as_deref().unwrap());
    f.check("dw", g.dw.as_deref().unwrap());
    f.check("db", g.db.as_deref().unwrap());
    let mut running = RunningStats {
        mean: f.t("running_mean_before").to_vec(),
        var: f.t("running_var_before").to_vec(),
    };
    let [n, _, h, w] = f.d4("x");
    running
        .update(&stats, n * h * w, f.meta_f64("momentum") as f32)
        .unwrap();
    f.check("running_mean_after", &running.mean);
    f.check("running_var_after", &running.var);
}

#[test]
fn batch_norm2d_eval_matches_torch() {
    let f = load("batch_norm2d_eval");
    let eps = f.meta_f64("eps") as f32;
    let (rm, rv) = (f.t("running_mean_before"), f.t("running_var_before"));
    let y =
        batch_norm2d_forward_eval(f.t("x"), f.d4("x"), f.t("w"), f.t("b"), rm, rv, eps).unwrap();
    f.check("y", &y);
    let g = batch_norm2d_backward_eval(
        f.t("x"),
        f.d4("x"),
        f.t("w"),
        rm,
        rv,
        eps,
        f.t("gy"),
        [true; 3],
    )
    .unwrap();
    f.check("dx", g.dx.as_deref().unwrap());
    f.check("dw", g.dw.as_deref().unwrap());
    f.check("db", g.db.as_deref().unwrap());
    // Evaluation leaves the running statistics alone.
    f.check("running_mean_after", rm);
    f.check("running_var_after", rv);
}

#[test]
fn max_pool2d_matches_torch() {
    for name in ["max_pool2d_k2", "max_pool2d_k4", "max_pool2d_k2_odd"] {
        let f = load(name);
        let (y, ydims, argmax) =
            max_pool2d_forward(f.t("x"), f.d4("x"), f.meta_usize("kernel")).unwrap();
        assert_eq!(ydims, f.d4("y"), "{name}: output shape");
        f.check("y", &y);
        let dx = max_pool2d_backward(f.t("gy"), ydims, &argmax, f.d4("x")).unwrap();
        f.check("dx", &dx);
    }
}

#[test]
fn linear_matches_torch() {
    for name in ["linear", "linear_nobias"] {
        let f = load(name);
        let bias = f.has("b").then(|| f.t("b"));
        let y = linear_forward(f.t("x"), f.d2("x"), f.t("w"), f.d2("w"), bias).unwrap();
        f.check("y", &y);
        let g = linear_backward(
            f.t("x"),
            f.d2("x"),
            f.t("w"),
            f.d2("w"),
            bias.is_some(),
            f.t("gy"),
            [true; 3],
        )
        .unwrap();
        check_grads(&f, &g);
    }
}

#[test]
fn activations_match_torch() {
    for (name, act) in [
        ("relu", Activation::Relu),
        ("leaky_relu", Activation::LeakyRelu { slope: 0.2 }),
        ("tanh", Activation::Tanh),
        ("sigmoid", Activation::Sigmoid),
    ] {
        let f = load(name);
        let y = act.forward(f.t("x"));
        f.check("y", &y);
        f.check("dx", &act.backward(f.t("x"), &y, f.t("gy")));
    }
}

#[test]
fn concat_and_flatten_match_torch() {
    let f = load("concat_dim1");
    let parts: Vec<(&[f32], &[usize])> = (0..3)
        .map(|i| {
            let (d, v) = f.get(&format!("x{i}"));
            (v.as_slice(), d.as_slice())
        })
        .collect();
    let (y, dims) = concat_dim1(&parts).unwrap();
    assert_eq!(dims, f.get("y").0);
    f.check("y", &y);
    let channels: Vec<usize> = (0..3).map(|i| f.get(&format!("x{i}")).0[1]).collect();
    let grads = split_dim1(f.t("gy"), &dims, &channels).unwrap();
    for (i, g) in grads.iter().enumerate() {
        f.check(&format!("dx{i}"), g);
    }

    let f = load("flatten");
    let mut tape = Tape::new();
    let (d, v) = f.get("x");
    let x = tape.param(Tensor::new(d.as_slice(), v.clone()).unwrap());
    let y = tape.flatten(x).unwrap();
    assert_eq!(tape.value(y).dims(), f.get("y").0.as_slice());
    f.check("y", tape.value(y).data());
    // flatten's backward is the identity on the data: torch's dx is its gy, and ours must pass
    // any upstream gradient through unchanged. With L = mean BCE(y, 0), dL/dy = σ(y)/numel.
    f.check("dx", f.t("gy"));
    let loss = tape.bce_with_logits(y, BceTarget::Constant(0.0)).unwrap();
    let dx = &tape.backward(loss, &[x]).unwrap()[0];
    assert_eq!(dx.dims(), d.as_slice());
    let n = v.len() as f32;
    for (g, yv) in dx.data().iter().zip(v) {
        assert!((g - 1.0 / (1.0 + (-yv).exp()) / n).abs() < 1e-7);
    }
}

#[test]
fn losses_match_torch() {
    for name in ["cross_entropy_k7", "cross_entropy_k11"] {
        let f = load(name);
        let labels = f.labels();
        let loss = cross_entropy_forward(f.t("x"), f.d2("x"), &labels).unwrap();
        f.check("loss", &[loss]);
        let dx = cross_entropy_backward(f.t("x"), f.d2("x"), &labels, 1.0).unwrap();
        f.check("dx", &dx);
    }
    for name in ["bce_const1", "bce_const0", "bce_per_element"] {
        let f = load(name);
        let target = match name {
            "bce_const1" => BceTarget::Constant(1.0),
            "bce_const0" => BceTarget::Constant(0.0),
            _ => BceTarget::PerElement(f.t("target").to_vec()),
        };
        let loss = bce_with_logits_forward(f.t("x"), &target).unwrap();
        f.check("loss", &[loss]);
        let dx = bce_with_logits_backward(f.t("x"), &target, 1.0).unwrap();
        f.check("dx", &dx);
    }
    let f = load("accuracy");
    let correct = count_correct(f.t("logits"), f.d2("logits"), &f.labels()).unwrap();
    assert_eq!(correct as i32, f.ints["correct"][0]);
}

#[test]
fn adam_matches_torch() {
    let f = load("adam");
    let cfg = AdamConfig {
        lr: f.meta_f64("lr"),
        beta1: f.meta_f64("beta1"),
        beta2: f.meta_f64("beta2"),
        eps: f.meta_f64("eps"),
    };
    let mut p = f.t("p0").to_vec();
    let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
    for step in 1..=f.meta_usize("steps") as u64 {
        adam_step(&mut p, f.t(&format!("g{step}")), &mut m, &mut v, step, &cfg).unwrap();
        f.check(&format!("p{step}"), &p);
    }
}

/// conv → batch norm → LeakyReLU → max pool → linear → cross-entropy, through the tape.
#[test]
fn composite_block_through_the_tape_matches_torch() {
    let f = load("composite_block");
    let mut tape = Tape::new();
    let mut param = |key: &str| {
        let (d, v) = f.get(key);
        tape.param(Tensor::new(d.as_slice(), v.clone()).unwrap())
    };
    let names = ["x", "conv_w", "conv_b", "bn_w", "bn_b", "lin_w", "lin_b"];
    let vars: Vec<_> = names.iter().map(|n| param(n)).collect();
    let [x, cw, cb, bw, bb, lw, lb] = vars[..] else {
        unreachable!()
    };
    let mut running = RunningStats::new(5);
    let h = tape
        .conv2d(
            x,
            cw,
            Some(cb),
            Conv2dParams {
                stride: 1,
                padding: 1,
            },
        )
        .unwrap();
    let h = tape
        .batch_norm2d(h, bw, bb, &mut running, true, BatchNormParams::default())
        .unwrap();
    let h = tape.leaky_relu(h, f.meta_f64("slope") as f32).unwrap();
    let h = tape.max_pool2d(h, 2).unwrap();
    let h = tape.flatten(h).unwrap();
    let logits = tape.linear(h, lw, Some(lb)).unwrap();
    let loss = tape.cross_entropy(logits, &f.labels()).unwrap();
    f.check("loss", tape.value(loss).data());
    let grads = tape.backward(loss, &vars).unwrap();
    for (n, g) in names.iter().zip(&grads) {
        f.check(&format!("d{n}"), g.data());
    }
    f.check("running_mean", &running.mean);
    f.check("running_var", &running.var);
}

/// Every committed fixture is consumed by a test above (none silently left unchecked).
#[test]
fn every_fixture_is_used() {
    let used = [
        "conv2d_k3s2p1",
        "conv2d_k5s1p0",
        "conv2d_k3s1p2_nobias",
        "conv_transpose2d_k4s2p1",
        "conv_transpose2d_k2s1p0_nobias",
        "batch_norm2d_train",
        "batch_norm2d_eval",
        "max_pool2d_k2",
        "max_pool2d_k4",
        "max_pool2d_k2_odd",
        "linear",
        "linear_nobias",
        "relu",
        "leaky_relu",
        "tanh",
        "sigmoid",
        "concat_dim1",
        "flatten",
        "cross_entropy_k7",
        "cross_entropy_k11",
        "bce_const1",
        "bce_const0",
        "bce_per_element",
        "accuracy",
        "adam",
        "composite_block",
    ];
    let mut on_disk: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let stem = p.file_stem()?.to_string_lossy().into_owned();
            (p.extension()? == "safetensors").then_some(stem)
        })
        .collect();
    on_disk.sort();
    let mut used: Vec<String> = used.iter().map(|s| s.to_string()).collect();
    used.sort();
    assert_eq!(on_disk, used);
}
