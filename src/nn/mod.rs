//! Networks as lists of layers over named parameters.
//!
//! A [`Network`] owns its parameters (trainable tensors) and batch-norm buffers under the
//! names PyTorch's `state_dict` would give the equivalent module (`feature.0.weight`,
//! `main.1.running_mean`, ...), so checkpoints load into the PyTorch reference and back.
//! Layers live in named [`Sequential`]s whose module indices follow `nn.Sequential`
//! (activations and pools take an index too, as they do in PyTorch).
//!
//! Per step: [`Network::bind`] puts the parameters on a tape as `Var`s, [`Network::run`]
//! executes one sequential on the tape, and the optimizer applies the gradients.

pub mod init;

use crate::backend::{Backend, Cpu, TensorValue};
use crate::error::{Error, Result};
use crate::ops::activation::{fusable, Activation};
use crate::ops::batchnorm::{BatchNormParams, RunningStats};
use crate::ops::conv::Conv2dParams;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use init::Init;

/// A trainable tensor and its `state_dict` key within its network.
#[derive(Clone, Debug)]
pub struct Param<T = Tensor> {
    pub name: String,
    pub value: T,
}

/// The buffers of one BatchNorm2d module (`<prefix>.running_mean` etc.).
#[derive(Clone, Debug)]
pub struct BatchNormBuffers<S = RunningStats> {
    pub prefix: String,
    pub stats: S,
    /// PyTorch's `num_batches_tracked`: train-mode forward calls so far.
    pub num_batches_tracked: i64,
}

/// One layer; indices refer to the network's parameters and batch-norm buffers.
#[derive(Clone, Debug)]
pub enum Layer {
    Conv2d {
        weight: usize,
        bias: Option<usize>,
        p: Conv2dParams,
    },
    ConvTranspose2d {
        weight: usize,
        bias: Option<usize>,
        p: Conv2dParams,
    },
    BatchNorm2d {
        weight: usize,
        bias: usize,
        buffers: usize,
    },
    Activation(Activation),
    MaxPool2d(usize),
    Linear {
        weight: usize,
        bias: Option<usize>,
    },
}

/// A PyTorch `nn.Sequential`: its attribute name and layers in module-index order.
#[derive(Clone, Debug)]
pub struct Sequential {
    pub name: String,
    pub layers: Vec<Layer>,
}

/// A network on backend `B`: parameters, batch-norm buffers and the sequentials that use them.
/// Networks are built (and initialized) on the CPU, then moved with [`Network::to_backend`].
#[derive(Debug)]
pub struct Network<B: Backend = Cpu> {
    /// Checkpoint prefix, e.g. `netF`.
    pub name: String,
    pub params: Vec<Param<B::Tensor>>,
    pub batch_norms: Vec<BatchNormBuffers<B::RunningStats>>,
    pub seqs: Vec<Sequential>,
}

impl Clone for Network {
    fn clone(&self) -> Self {
        Network {
            name: self.name.clone(),
            params: self.params.clone(),
            batch_norms: self.batch_norms.clone(),
            seqs: self.seqs.clone(),
        }
    }
}

impl Network {
    pub fn new(name: &str) -> Self {
        Network {
            name: name.to_string(),
            params: Vec::new(),
            batch_norms: Vec::new(),
            seqs: Vec::new(),
        }
    }

    /// Starts a new sequential named `name` (its modules are `name.0`, `name.1`, ...).
    pub fn sequential<'a>(&'a mut self, name: &str, init: &'a Init) -> SeqBuilder<'a> {
        self.seqs.push(Sequential {
            name: name.to_string(),
            layers: Vec::new(),
        });
        let seq = self.seqs.len() - 1;
        SeqBuilder {
            net: self,
            seq,
            init,
        }
    }

    /// Number of buffer values (running mean and variance; `num_batches_tracked` counts 1).
    pub fn num_buffers(&self) -> usize {
        self.batch_norms
            .iter()
            .map(|b| b.stats.mean.len() + b.stats.var.len() + 1)
            .sum()
    }

    /// Every tensor of the `state_dict`, named `<network>.<key>`: parameters, then for each
    /// batch norm its running mean and variance. (`num_batches_tracked` is integer-valued and
    /// handled by the checkpoint code through [`Network::batch_norms`].)
    pub fn named_tensors(&self) -> Vec<(String, &[f32], Vec<usize>)> {
        let mut out: Vec<(String, &[f32], Vec<usize>)> = self
            .params
            .iter()
            .map(|p| {
                (
                    format!("{}.{}", self.name, p.name),
                    p.value.data(),
                    p.value.dims().to_vec(),
                )
            })
            .collect();
        for b in &self.batch_norms {
            let c = b.stats.mean.len();
            out.push((
                format!("{}.{}.running_mean", self.name, b.prefix),
                &b.stats.mean,
                vec![c],
            ));
            out.push((
                format!("{}.{}.running_var", self.name, b.prefix),
                &b.stats.var,
                vec![c],
            ));
        }
        out
    }
}

impl<B: Backend> Network<B> {
    /// This network with its state (parameters, batch-norm buffers) copied from `from`'s
    /// memory to `to`'s: e.g. CPU → GPU before training, GPU → CPU for a checkpoint.
    pub fn to_backend<B2: Backend>(&self, from: &B, to: &B2) -> Result<Network<B2>> {
        let params = self
            .params
            .iter()
            .map(|p| {
                let host = from.download(&p.value)?;
                Ok(Param {
                    name: p.name.clone(),
                    value: to.upload_persistent(&host)?,
                })
            })
            .collect::<Result<_>>()?;
        let batch_norms = self
            .batch_norms
            .iter()
            .map(|b| {
                let host = from.download_running_stats(&b.stats)?;
                Ok(BatchNormBuffers {
                    prefix: b.prefix.clone(),
                    stats: to.running_stats(&host)?,
                    num_batches_tracked: b.num_batches_tracked,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Network {
            name: self.name.clone(),
            params,
            batch_norms,
            seqs: self.seqs.clone(),
        })
    }

    /// Number of trainable values.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.value.numel()).sum()
    }

    /// Index of the sequential named `name`.
    pub fn seq(&self, name: &str) -> Result<usize> {
        self.seqs
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| Error::invalid("network", format!("{} has no `{name}`", self.name)))
    }

    /// Puts every parameter on `tape` as a differentiable leaf, in parameter order (a
    /// snapshot: later updates of the parameters do not change what the tape saw).
    pub fn bind(&self, tape: &mut Tape<B>) -> Result<Vec<Var>> {
        let values: Vec<&B::Tensor> = self.params.iter().map(|p| &p.value).collect();
        let copies = tape.backend().snapshot(&values)?;
        Ok(copies.into_iter().map(|v| tape.param(v)).collect())
    }

    /// Runs sequential `seq` on `x`. `vars` come from [`Network::bind`] on the same tape.
    /// Batch norm uses batch statistics (and updates the running ones) when `training`.
    pub fn run(
        &mut self,
        tape: &mut Tape<B>,
        vars: &[Var],
        seq: usize,
        x: Var,
        training: bool,
    ) -> Result<Var> {
        if vars.len() != self.params.len() {
            return Err(Error::invalid(
                "network",
                format!(
                    "{}: {} vars bound for {} parameters",
                    self.name,
                    vars.len(),
                    self.params.len()
                ),
            ));
        }
        let mut h = x;
        let layers = &self.seqs[seq].layers;
        let mut i = 0;
        while i < layers.len() {
            // A ReLU/LeakyReLU right after a conv or batch norm runs fused into it (one pass
            // over the output on the GPU; the same bits as the two separate ops).
            let fused = match layers.get(i + 1) {
                Some(Layer::Activation(a)) if fusable(*a) => match layers[i] {
                    Layer::Conv2d { .. } | Layer::ConvTranspose2d { .. } => Some(*a),
                    Layer::BatchNorm2d { .. } => Some(*a),
                    _ => None,
                },
                _ => None,
            };
            h = match layers[i] {
                Layer::Conv2d { weight, bias, p } => {
                    tape.conv2d_act(h, vars[weight], bias.map(|b| vars[b]), p, fused)?
                }
                Layer::ConvTranspose2d { weight, bias, p } => {
                    tape.conv_transpose2d_act(h, vars[weight], bias.map(|b| vars[b]), p, fused)?
                }
                Layer::BatchNorm2d {
                    weight,
                    bias,
                    buffers,
                } => {
                    let bn = &mut self.batch_norms[buffers];
                    let y = tape.batch_norm2d_act(
                        h,
                        vars[weight],
                        vars[bias],
                        &mut bn.stats,
                        training,
                        BatchNormParams::default(),
                        fused,
                    )?;
                    if training {
                        bn.num_batches_tracked += 1;
                    }
                    y
                }
                Layer::Activation(a) => tape.activation(h, a)?,
                Layer::MaxPool2d(k) => tape.max_pool2d(h, k)?,
                Layer::Linear { weight, bias } => {
                    tape.linear(h, vars[weight], bias.map(|b| vars[b]))?
                }
            };
            i += if fused.is_some() { 2 } else { 1 };
        }
        Ok(h)
    }
}

/// Appends layers to one sequential, naming and initializing their parameters.
pub struct SeqBuilder<'a> {
    net: &'a mut Network,
    seq: usize,
    init: &'a Init,
}

impl SeqBuilder<'_> {
    fn next_module(&self) -> String {
        format!(
            "{}.{}",
            self.net.seqs[self.seq].name,
            self.net.seqs[self.seq].layers.len()
        )
    }

    fn add_param(&mut self, module: &str, field: &str, value: Tensor) -> usize {
        self.net.params.push(Param {
            name: format!("{module}.{field}"),
            value,
        });
        self.net.params.len() - 1
    }

    fn push(self, layer: Layer) -> Self {
        self.net.seqs[self.seq].layers.push(layer);
        self
    }

    fn full_name(&self, module: &str, field: &str) -> String {
        format!("{}.{module}.{field}", self.net.name)
    }

    /// Conv2d(cin, cout, k, stride, padding, bias): weight N(0, 0.02), bias PyTorch default.
    pub fn conv2d(
        self,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Self {
        self.conv_layer(
            false,
            (cin, cout, k),
            Conv2dParams { stride, padding },
            bias,
        )
    }

    /// ConvTranspose2d(cin, cout, k, stride, padding, bias): weight [cin, cout, k, k] N(0, 0.02).
    pub fn conv_transpose2d(
        self,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Self {
        self.conv_layer(true, (cin, cout, k), Conv2dParams { stride, padding }, bias)
    }

    fn conv_layer(
        mut self,
        transposed: bool,
        (cin, cout, k): (usize, usize, usize),
        p: Conv2dParams,
        bias: bool,
    ) -> Self {
        let m = self.next_module();
        // PyTorch's layouts, and its fan-in for the default bias init: weight dim 1 · k·k.
        let (dims, fan_in) = if transposed {
            ([cin, cout, k, k], cout * k * k)
        } else {
            ([cout, cin, k, k], cin * k * k)
        };
        let w = self.init.conv_weight(&self.full_name(&m, "weight"), dims);
        let weight = self.add_param(&m, "weight", w);
        let bias = bias.then(|| {
            let b = self
                .init
                .conv_bias(&self.full_name(&m, "bias"), cout, fan_in);
            self.add_param(&m, "bias", b)
        });
        self.push(if transposed {
            Layer::ConvTranspose2d { weight, bias, p }
        } else {
            Layer::Conv2d { weight, bias, p }
        })
    }

    /// BatchNorm2d(c): weight N(1, 0.02), bias 0, running mean 0 / var 1.
    pub fn batch_norm2d(mut self, c: usize) -> Self {
        let m = self.next_module();
        let w = self.init.bn_weight(&self.full_name(&m, "weight"), c);
        let weight = self.add_param(&m, "weight", w);
        let bias = self.add_param(&m, "bias", Tensor::zeros([c]).expect("small shape"));
        self.net.batch_norms.push(BatchNormBuffers {
            prefix: m,
            stats: RunningStats::new(c),
            num_batches_tracked: 0,
        });
        let buffers = self.net.batch_norms.len() - 1;
        self.push(Layer::BatchNorm2d {
            weight,
            bias,
            buffers,
        })
    }

    /// Linear(fin, fout): weight N(0, 0.1), bias 0.
    pub fn linear(mut self, fin: usize, fout: usize, bias: bool) -> Self {
        let m = self.next_module();
        let w = self
            .init
            .linear_weight(&self.full_name(&m, "weight"), [fout, fin]);
        let weight = self.add_param(&m, "weight", w);
        let bias =
            bias.then(|| self.add_param(&m, "bias", Tensor::zeros([fout]).expect("small shape")));
        self.push(Layer::Linear { weight, bias })
    }

    pub fn relu(self) -> Self {
        self.push(Layer::Activation(Activation::Relu))
    }
    pub fn leaky_relu(self, slope: f32) -> Self {
        self.push(Layer::Activation(Activation::LeakyRelu { slope }))
    }
    pub fn tanh(self) -> Self {
        self.push(Layer::Activation(Activation::Tanh))
    }
    pub fn max_pool2d(self, k: usize) -> Self {
        self.push(Layer::MaxPool2d(k))
    }
}
