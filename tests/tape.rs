//! The autograd tape end to end: a small CNN learns, deterministically; several backward
//! passes over one tape equal separate tapes; no-grad records no gradients.

use gtadapt::ops::adam::{AdamConfig, AdamState};
use gtadapt::ops::batchnorm::{BatchNormParams, RunningStats};
use gtadapt::ops::conv::Conv2dParams;
use gtadapt::rng;
use gtadapt::{Tape, Tensor, Var};

/// Parameters of a tiny CNN: conv 3→4 k3 p1 (+bias), BN, ReLU, pool 2, linear 4·4·4→3.
struct Net {
    params: Vec<Tensor>,
    running: RunningStats,
}

fn normal_tensor(dims: &[usize], std: f32, stream: u64) -> Tensor {
    let mut v = vec![0.0f32; dims.iter().product()];
    rng::normal(42, stream, 0, &mut v);
    v.iter_mut().for_each(|x| *x *= std);
    Tensor::new(dims, v).unwrap()
}

impl Net {
    fn new() -> Self {
        Net {
            params: vec![
                normal_tensor(&[4, 3, 3, 3], 0.3, 1),
                Tensor::zeros([4]).unwrap(),
                Tensor::full([4], 1.0).unwrap(),
                Tensor::zeros([4]).unwrap(),
                normal_tensor(&[3, 64], 0.1, 2),
                Tensor::zeros([3]).unwrap(),
            ],
            running: RunningStats::new(4),
        }
    }

    /// Logits for `x` [N,3,8,8] on `tape`; returns (logits, parameter vars).
    fn forward(&mut self, tape: &mut Tape, x: Var) -> (Var, Vec<Var>) {
        let p: Vec<Var> = self.params.iter().map(|t| tape.param(t.clone())).collect();
        let h = tape
            .conv2d(
                x,
                p[0],
                Some(p[1]),
                Conv2dParams {
                    stride: 1,
                    padding: 1,
                },
            )
            .unwrap();
        let h = tape
            .batch_norm2d(
                h,
                p[2],
                p[3],
                &mut self.running,
                true,
                BatchNormParams::default(),
            )
            .unwrap();
        let h = tape.relu(h).unwrap();
        let h = tape.max_pool2d(h, 2).unwrap();
        let h = tape.flatten(h).unwrap();
        (tape.linear(h, p[4], Some(p[5])).unwrap(), p)
    }
}

/// 24 images 8×8×3; the label is the channel with the largest mean (learnable by the CNN).
fn data() -> (Tensor, Vec<u32>) {
    let x = normal_tensor(&[24, 3, 8, 8], 1.0, 7);
    let labels = x
        .data()
        .chunks(3 * 64)
        .map(|img| {
            let means: Vec<f32> = img.chunks(64).map(|c| c.iter().sum::<f32>()).collect();
            (0..3)
                .max_by(|&a, &b| means[a].total_cmp(&means[b]))
                .unwrap() as u32
        })
        .collect();
    (x, labels)
}

/// Trains for `steps` Adam steps and returns the loss per step and the final parameters.
fn train(steps: usize) -> (Vec<f32>, Vec<Tensor>) {
    let (x, labels) = data();
    let mut net = Net::new();
    let cfg = AdamConfig {
        lr: 0.01,
        ..AdamConfig::default()
    };
    let mut opt: Vec<AdamState> = net
        .params
        .iter()
        .map(|t| AdamState::new(t.numel()))
        .collect();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let mut tape = Tape::new();
        let xv = tape.input(x.clone());
        let (logits, p) = net.forward(&mut tape, xv);
        let loss = tape.cross_entropy(logits, &labels).unwrap();
        losses.push(tape.value(loss).item().unwrap());
        let grads = tape.backward(loss, &p).unwrap();
        for ((param, g), state) in net.params.iter_mut().zip(&grads).zip(&mut opt) {
            state.step(param.data_mut(), g.data(), &cfg).unwrap();
        }
    }
    (losses, net.params)
}

#[test]
fn a_small_cnn_learns_and_is_bit_deterministic() {
    let (losses, params) = train(30);
    let first = losses[0];
    let last = *losses.last().unwrap();
    assert!(first.is_finite() && last.is_finite());
    assert!(
        last < 0.5 * first,
        "loss should fall by half in 30 steps: {first} → {last} ({losses:?})"
    );
    let (losses2, params2) = train(30);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&losses),
        bits(&losses2),
        "same seed → identical losses"
    );
    for (a, b) in params.iter().zip(&params2) {
        assert_eq!(
            bits(a.data()),
            bits(b.data()),
            "same seed → identical weights"
        );
    }
}

/// GTA-shaped: a shared trunk feeds two heads; each loss is differentiated on one tape and
/// on its own fresh tape; the gradients must be bit-identical.
#[test]
fn several_backward_passes_over_one_tape_equal_separate_tapes() {
    let (x, labels) = data();
    let head2_w = normal_tensor(&[3, 64], 0.1, 9);

    let build = |tape: &mut Tape, net: &mut Net| {
        let xv = tape.input(x.clone());
        let (logits1, p) = net.forward(tape, xv);
        let loss1 = tape.cross_entropy(logits1, &labels).unwrap();
        // Second head from the same features, a different loss.
        let feats = logits1; // reuse the first head's output as the trunk for the second
        let w2 = tape.param(Tensor::new([3, 3], head2_w.data()[..9].to_vec()).unwrap());
        let logits2 = tape.linear(feats, w2, None).unwrap();
        let loss2 = tape
            .bce_with_logits(logits2, gtadapt::ops::loss::BceTarget::Constant(1.0))
            .unwrap();
        let both = tape.add(loss1, loss2).unwrap();
        (loss1, loss2, both, p, w2)
    };

    let mut net = Net::new();
    let mut shared = Tape::new();
    let (l1, l2, both, p, w2) = build(&mut shared, &mut net);
    let g1 = shared.backward(l1, &p).unwrap();
    let mut wrt2 = p.clone();
    wrt2.push(w2);
    let g2 = shared.backward(l2, &wrt2).unwrap();
    let g12 = shared.backward(both, &wrt2).unwrap();

    let separate = |which: usize| {
        let mut net = Net::new();
        let mut tape = Tape::new();
        let (l1, l2, both, p, w2) = build(&mut tape, &mut net);
        let mut wrt = p.clone();
        if which > 0 {
            wrt.push(w2);
        }
        let loss = [l1, l2, both][which];
        tape.backward(loss, &wrt).unwrap()
    };
    let bits = |ts: &[Tensor]| {
        ts.iter()
            .map(|t| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&g1), bits(&separate(0)));
    assert_eq!(bits(&g2), bits(&separate(1)));
    assert_eq!(bits(&g12), bits(&separate(2)));
    // loss1 does not depend on w2; the head-1 loss gives the conv weight a nonzero gradient.
    assert!(g1[0].data().iter().any(|&v| v != 0.0));
    // d(loss1 + loss2) = d loss1 + d loss2 (up to f32 rounding).
    for i in 0..p.len() {
        for ((a, b), c) in g12[i].data().iter().zip(g1[i].data()).zip(g2[i].data()) {
            assert!((a - (b + c)).abs() <= 1e-6 * (1.0 + a.abs()));
        }
    }
}

#[test]
fn no_grad_records_values_but_no_gradient_path() {
    let (x, labels) = data();
    let mut net = Net::new();
    let mut tape = Tape::new();
    let xv = tape.input(x);
    let (logits, p) = tape.no_grad(|t| net.forward(t, xv));
    assert!(!tape.requires_grad(logits));
    let loss = tape.cross_entropy(logits, &labels).unwrap();
    let grads = tape.backward(loss, &p).unwrap();
    assert!(grads.iter().all(|g| g.data().iter().all(|&v| v == 0.0)));
}

#[test]
fn backward_rejects_a_non_scalar_loss_and_a_foreign_var() {
    let mut tape = Tape::new();
    let x = tape.param(Tensor::zeros([2, 3]).unwrap());
    let y = tape.relu(x).unwrap();
    assert!(tape.backward(y, &[x]).is_err());
    let mut other = Tape::new();
    let z = other.param(Tensor::zeros([1]).unwrap());
    assert!(tape.backward(z, &[x]).is_err());
}

/// conv→ReLU and BN→LeakyReLU fused into one op each give the bits of the separate ops,
/// forward and backward; an activation that cannot be fused is refused.
#[test]
fn fused_activations_equal_the_separate_ops_bit_for_bit() {
    use gtadapt::ops::activation::Activation;
    let lrelu = Activation::LeakyRelu { slope: 0.2 };
    let run = |fused: bool| -> (Vec<f32>, Vec<Tensor>) {
        let mut tape = Tape::new();
        let x = tape.input(normal_tensor(&[3, 3, 7, 7], 1.0, 11));
        let w = tape.param(normal_tensor(&[5, 3, 3, 3], 0.3, 12));
        let b = tape.param(normal_tensor(&[5], 0.1, 13));
        let g = tape.param(normal_tensor(&[5], 1.0, 14));
        let beta = tape.param(normal_tensor(&[5], 0.1, 15));
        let mut running = RunningStats::new(5);
        let p = Conv2dParams {
            stride: 1,
            padding: 1,
        };
        let bn = BatchNormParams::default();
        let y = if fused {
            let h = tape
                .conv2d_act(x, w, Some(b), p, Some(Activation::Relu))
                .unwrap();
            tape.batch_norm2d_act(h, g, beta, &mut running, true, bn, Some(lrelu))
                .unwrap()
        } else {
            let h = tape.conv2d(x, w, Some(b), p).unwrap();
            let h = tape.relu(h).unwrap();
            let h = tape
                .batch_norm2d(h, g, beta, &mut running, true, bn)
                .unwrap();
            tape.activation(h, lrelu).unwrap()
        };
        let r = normal_tensor(tape.value(y).dims(), 1.0, 16);
        let flat = tape.flatten(y).unwrap();
        let n = tape.value(flat).dims()[1];
        let wr = tape.input(Tensor::new([1, n], r.data()[..n].to_vec()).unwrap());
        let loss = tape.linear(flat, wr, None).unwrap();
        let loss = tape.flatten(loss).unwrap();
        let logits = tape.reshape(loss, &[1, 3]).unwrap();
        let l = tape.cross_entropy(logits, &[1]).unwrap();
        let grads = tape.backward(l, &[w, b, g, beta]).unwrap();
        (tape.value(y).data().to_vec(), grads)
    };
    let (ya, ga) = run(false);
    let (yb, gb) = run(true);
    assert_eq!(ya, yb, "forward");
    for (a, b) in ga.iter().zip(&gb) {
        assert_eq!(a.data(), b.data(), "backward");
    }
    let mut tape = Tape::new();
    let x = tape.input(Tensor::zeros([1, 1, 3, 3]).unwrap());
    let w = tape.param(Tensor::zeros([1, 1, 1, 1]).unwrap());
    let p = Conv2dParams {
        stride: 1,
        padding: 0,
    };
    let err = tape
        .conv2d_act(x, w, None, p, Some(Activation::Tanh))
        .unwrap_err();
    assert!(err.to_string().contains("cannot be fused"), "{err}");
}
