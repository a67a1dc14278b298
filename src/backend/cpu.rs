//! The CPU backend: host tensors and the reference ops of [`crate::ops`] (the oracle every
//! kernel is compared with).

use super::{Backend, Grads3};
use crate::error::{Error, Result};
use crate::ops::activation::Activation;
use crate::ops::adam::{AdamConfig, AdamState};
use crate::ops::batchnorm::{
    batch_norm2d_backward_eval, batch_norm2d_backward_train, batch_norm2d_forward_eval,
    batch_norm2d_forward_train, BatchNormParams, BatchStats, RunningStats,
};
use crate::ops::conv::{
    conv2d_backward, conv2d_forward, conv_transpose2d_backward, conv_transpose2d_forward,
    Conv2dParams,
};
use crate::ops::layout::{concat_dim1, split_dim1};
use crate::ops::linear::{linear_backward, linear_forward};
use crate::ops::loss::{
    add_values, bce_with_logits_backward, bce_with_logits_forward, cross_entropy_backward,
    cross_entropy_forward, scalar_grad, scale_values, BceTarget,
};
use crate::ops::pool::{max_pool2d_backward, max_pool2d_forward};
use crate::ops::LayerGrads;
use crate::shape::Shape;
use crate::tensor::Tensor;

/// The CPU backend (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

/// What a CPU batch norm keeps for backward.
#[derive(Clone, Debug)]
pub enum CpuBnSaved {
    /// Training mode: the batch statistics.
    Batch(BatchStats<f32>),
    /// Evaluation mode: the running statistics as they were at the forward.
    Running {
        mean: Vec<f32>,
        var: Vec<f32>,
        eps: f32,
    },
}

/// The gradient tensors of a layer (x, weight, bias), shaped like the inputs they belong to.
fn layer_grads(g: LayerGrads<f32>, shapes: [&Shape; 3]) -> Result<Grads3<Tensor>> {
    let wrap = |d: Option<Vec<f32>>, s: &Shape| d.map(|d| Tensor::new(s.clone(), d)).transpose();
    Ok([
        wrap(g.dx, shapes[0])?,
        wrap(g.dw, shapes[1])?,
        wrap(g.db, shapes[2])?,
    ])
}

/// `act(y)` when an activation is fused, else `y`: exactly the separate ops' bits.
fn then(act: Option<Activation>, y: Vec<f32>) -> Vec<f32> {
    match act {
        Some(a) => a.forward(&y),
        None => y,
    }
}

impl Backend for Cpu {
    type Tensor = Tensor;
    type Labels = Vec<u32>;
    type PoolIndices = Vec<u32>;
    type BnSaved = CpuBnSaved;
    type RunningStats = RunningStats;
    type AdamState = AdamState;
    type Images = ();
    type Counter = usize;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn resident_split(&self, _split: &crate::data::Split) -> Result<Option<()>> {
        Ok(None)
    }
    fn normal(&self, seed: u64, stream: u64, offset: u64, shape: &Shape) -> Result<Tensor> {
        let mut v = vec![0.0f32; shape.numel()];
        crate::rng::normal(seed, stream, offset, &mut v);
        Tensor::new(shape.clone(), v)
    }
    fn accumulate(&self, acc: &mut Tensor, x: &Tensor) -> Result<()> {
        acc.add_assign(x)
    }
    fn fill(&self, t: &mut Tensor, value: f32) -> Result<()> {
        t.data_mut().fill(value);
        Ok(())
    }
    fn labels_len(&self, labels: &Vec<u32>) -> usize {
        labels.len()
    }
    fn full_labels(&self, n: usize, value: u32) -> Result<Vec<u32>> {
        Ok(vec![value; n])
    }
    fn one_hot(&self, labels: &Vec<u32>, classes: usize) -> Result<Tensor> {
        let mut v = vec![0.0f32; labels.len() * classes];
        for (row, &l) in v.chunks_mut(classes.max(1)).zip(labels) {
            let slot = row.get_mut(l as usize).ok_or_else(|| {
                Error::invalid("one_hot", format!("label {l} ≥ {classes} classes"))
            })?;
            *slot = 1.0;
        }
        Tensor::new([labels.len(), classes], v)
    }
    fn counter(&self) -> Result<usize> {
        Ok(0)
    }
    fn count_correct(&self, logits: &Tensor, labels: &Vec<u32>, c: &mut usize) -> Result<()> {
        *c += crate::ops::loss::count_correct(logits.data(), logits.dims2("accuracy")?, labels)?;
        Ok(())
    }
    fn read_counter(&self, c: &usize) -> Result<usize> {
        Ok(*c)
    }

    fn upload(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    fn upload_owned(&self, t: Tensor) -> Result<Tensor> {
        Ok(t)
    }
    fn download(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    fn upload_labels(&self, labels: &[u32]) -> Result<Vec<u32>> {
        Ok(labels.to_vec())
    }
    fn snapshot(&self, ts: &[&Tensor]) -> Result<Vec<Tensor>> {
        Ok(ts.iter().map(|&t| t.clone()).collect())
    }
    fn running_stats(&self, s: &RunningStats) -> Result<RunningStats> {
        Ok(s.clone())
    }
    fn download_running_stats(&self, s: &RunningStats) -> Result<RunningStats> {
        Ok(s.clone())
    }
    fn adam_state(&self, s: &AdamState) -> Result<AdamState> {
        Ok(s.clone())
    }
    fn download_adam_state(&self, s: &AdamState) -> Result<AdamState> {
        Ok(s.clone())
    }

    fn full(&self, shape: &Shape, value: f32) -> Result<Tensor> {
        Tensor::full(shape.clone(), value)
    }
    fn reshape(&self, x: &Tensor, shape: Shape) -> Result<Tensor> {
        x.clone().reshaped(shape)
    }
    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        if a.shape() != b.shape() {
            return Err(Error::shape(
                "add",
                format!("{} vs {}", a.shape(), b.shape()),
            ));
        }
        Tensor::new(a.shape().clone(), add_values(a.data(), b.data()))
    }
    fn scale(&self, a: &Tensor, c: f32) -> Result<Tensor> {
        Tensor::new(a.shape().clone(), scale_values(a.data(), c))
    }
    fn activation(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        Tensor::new(x.shape().clone(), act.forward(x.data()))
    }
    fn activation_backward(
        &self,
        act: Activation,
        x: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> Result<Tensor> {
        Tensor::new(
            x.shape().clone(),
            act.backward(x.data(), y.data(), gy.data()),
        )
    }
    fn concat_dim1(&self, parts: &[&Tensor]) -> Result<Tensor> {
        let views: Vec<(&[f32], &[usize])> = parts.iter().map(|t| (t.data(), t.dims())).collect();
        let (data, dims) = concat_dim1(&views)?;
        Tensor::new(Shape(dims), data)
    }
    fn split_dim1(
        &self,
        g: &Tensor,
        channels: &[usize],
        need: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        let parts = split_dim1(g.data(), g.dims(), channels)?;
        parts
            .into_iter()
            .zip(channels)
            .zip(need)
            .map(|((data, &c), &n)| {
                let mut dims = g.dims().to_vec();
                dims[1] = c;
                n.then(|| Tensor::new(Shape(dims), data)).transpose()
            })
            .collect()
    }

    fn conv(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        p: Conv2dParams,
        transposed: bool,
        act: Option<Activation>,
    ) -> Result<Tensor> {
        let op = if transposed {
            "conv_transpose2d"
        } else {
            "conv2d"
        };
        if let Some(b) = b {
            if b.shape().rank() != 1 {
                return Err(Error::shape(
                    op,
                    format!("bias must be rank 1 [Cout], got {}", b.shape()),
                ));
            }
        }
        let forward = if transposed {
            conv_transpose2d_forward::<f32>
        } else {
            conv2d_forward::<f32>
        };
        let (y, y_dims) = forward(
            x.data(),
            x.dims4(op)?,
            w.data(),
            w.dims4(op)?,
            b.map(Tensor::data),
            p,
        )?;
        Tensor::new(y_dims, then(act, y))
    }
    fn conv_backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        has_bias: bool,
        gy: &Tensor,
        p: Conv2dParams,
        transposed: bool,
        need: [bool; 3],
    ) -> Result<Grads3<Tensor>> {
        let op = "conv backward";
        let backward = if transposed {
            conv_transpose2d_backward::<f32>
        } else {
            conv2d_backward::<f32>
        };
        let g = backward(
            x.data(),
            x.dims4(op)?,
            w.data(),
            w.dims4(op)?,
            has_bias,
            gy.data(),
            p,
            [need[0], need[1], has_bias && need[2]],
        )?;
        // db is None without a bias, so its shape is only used with one.
        let b = Shape::new(&[gy.dims()[1]]);
        layer_grads(g, [x.shape(), w.shape(), &b])
    }
    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        const OP: &str = "linear";
        let (x_dims, w_dims) = (x.dims2(OP)?, w.dims2(OP)?);
        let y = linear_forward(x.data(), x_dims, w.data(), w_dims, b.map(Tensor::data))?;
        Tensor::new([x_dims[0], w_dims[0]], y)
    }
    fn linear_backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        has_bias: bool,
        gy: &Tensor,
        need: [bool; 3],
    ) -> Result<Grads3<Tensor>> {
        const OP: &str = "linear backward";
        let (x_dims, w_dims) = (x.dims2(OP)?, w.dims2(OP)?);
        let g = linear_backward(
            x.data(),
            x_dims,
            w.data(),
            w_dims,
            has_bias,
            gy.data(),
            need,
        )?;
        layer_grads(g, [x.shape(), w.shape(), &Shape::new(&[w_dims[0]])])
    }
    fn max_pool(&self, x: &Tensor, kernel: usize) -> Result<(Tensor, Vec<u32>)> {
        let (y, y_dims, argmax) = max_pool2d_forward(x.data(), x.dims4("max_pool2d")?, kernel)?;
        Ok((Tensor::new(y_dims, y)?, argmax))
    }
    fn max_pool_backward(
        &self,
        x: &Tensor,
        gy: &Tensor,
        _kernel: usize,
        argmax: &Vec<u32>,
    ) -> Result<Tensor> {
        const OP: &str = "max_pool2d backward";
        let dx = max_pool2d_backward(gy.data(), gy.dims4(OP)?, argmax, x.dims4(OP)?)?;
        Tensor::new(x.shape().clone(), dx)
    }
    fn batch_norm(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        running: &mut RunningStats,
        training: bool,
        p: BatchNormParams,
        act: Option<Activation>,
    ) -> Result<(Tensor, CpuBnSaved)> {
        const OP: &str = "batch_norm2d";
        let x_dims = x.dims4(OP)?;
        let c = x_dims[1];
        if running.mean.len() != c || running.var.len() != c {
            return Err(Error::shape(
                OP,
                format!(
                    "x has {c} channels, running stats have mean {} and var {}",
                    running.mean.len(),
                    running.var.len()
                ),
            ));
        }
        let (w, b) = (weight.data(), bias.data());
        if training {
            let (y, stats) = batch_norm2d_forward_train(x.data(), x_dims, w, b, p.eps)?;
            // forward_train succeeded, so the per-channel count is ≥ 2 and fits usize.
            let count = x_dims[0] * x_dims[2] * x_dims[3];
            running.update(&stats, count, p.momentum)?;
            let y = Tensor::new(x.shape().clone(), then(act, y))?;
            Ok((y, CpuBnSaved::Batch(stats)))
        } else {
            let (mean, var) = (running.mean.clone(), running.var.clone());
            let y = batch_norm2d_forward_eval(x.data(), x_dims, w, b, &mean, &var, p.eps)?;
            let saved = CpuBnSaved::Running {
                mean,
                var,
                eps: p.eps,
            };
            Ok((Tensor::new(x.shape().clone(), then(act, y))?, saved))
        }
    }
    fn batch_norm_backward(
        &self,
        x: &Tensor,
        weight: &Tensor,
        saved: &CpuBnSaved,
        act: Option<Activation>,
        y: &Tensor,
        gy: &Tensor,
        need: [bool; 3],
    ) -> Result<Grads3<Tensor>> {
        let x_dims = x.dims4("batch_norm2d backward")?;
        // act'(y)·gy first, exactly the separate activation backward (the reference ops).
        let g_act;
        let gy = match act {
            Some(a) => {
                g_act = self.activation_backward(a, y, y, gy)?;
                &g_act
            }
            None => gy,
        };
        let g = match saved {
            CpuBnSaved::Batch(stats) => batch_norm2d_backward_train(
                x.data(),
                x_dims,
                weight.data(),
                stats,
                gy.data(),
                need,
            )?,
            CpuBnSaved::Running { mean, var, eps } => batch_norm2d_backward_eval(
                x.data(),
                x_dims,
                weight.data(),
                mean,
                var,
                *eps,
                gy.data(),
                need,
            )?,
        };
        layer_grads(g, [x.shape(), weight.shape(), weight.shape()])
    }

    fn cross_entropy(
        &self,
        logits: &Tensor,
        labels: &Vec<u32>,
        _want_grad: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let dims = logits.dims2("cross_entropy")?;
        let loss = cross_entropy_forward(logits.data(), dims, labels)?;
        Ok((Tensor::scalar(loss), None))
    }
    fn cross_entropy_backward(
        &self,
        logits: &Tensor,
        labels: &Vec<u32>,
        _saved: Option<&Tensor>,
        g: &Tensor,
    ) -> Result<Tensor> {
        const OP: &str = "cross_entropy";
        let dims = logits.dims2(OP)?;
        let dx = cross_entropy_backward(logits.data(), dims, labels, scalar_grad(OP, g)?)?;
        Tensor::new(logits.shape().clone(), dx)
    }
    fn bce_with_logits(
        &self,
        logits: &Tensor,
        target: &BceTarget<f32>,
        _want_grad: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let loss = bce_with_logits_forward(logits.data(), target)?;
        Ok((Tensor::scalar(loss), None))
    }
    fn bce_with_logits_backward(
        &self,
        logits: &Tensor,
        target: &BceTarget<f32>,
        _saved: Option<&Tensor>,
        g: &Tensor,
    ) -> Result<Tensor> {
        let g = scalar_grad("bce_with_logits", g)?;
        let dx = bce_with_logits_backward(logits.data(), target, g)?;
        Tensor::new(logits.shape().clone(), dx)
    }

    fn adam_update(
        &self,
        params: &mut [&mut Tensor],
        grads: &[Tensor],
        states: &mut [AdamState],
        cfg: &AdamConfig,
        _slot: usize,
    ) -> Result<()> {
        super::check_adam_counts(params.len(), grads.len(), states.len())?;
        for ((p, g), s) in params.iter_mut().zip(grads).zip(states.iter_mut()) {
            s.step(p.data_mut(), g.data(), cfg)?;
        }
        Ok(())
    }
}
