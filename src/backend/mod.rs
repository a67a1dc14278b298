//! Backends: where tensors live and who computes the ops.
//!
//! The tape ([`crate::tape`]), the layers ([`crate::nn`]), the networks and the GTA iteration
//! ([`crate::gta`]) are written once, over the [`Backend`] trait. Two implementations:
//! - [`Cpu`]: host tensors and the reference ops of [`crate::ops`] (the oracle).
//! - [`gpu::Gpu`]: device tensors and the kernels of kernels/*.cu, over either executor — the
//!   CUDA executor on a real GPU, or the SIMT emulator that runs the same kernels on the CPU.
//!   So the very op code a GPU runs is tested on every machine.
//!
//! A backend op takes and returns the backend's tensors and validates shapes itself (typed
//! errors, never a panic); the tape records what it needs for backward. Saved state that
//! differs per backend (batch-norm statistics, pool indices, labels, optimizer moments) is an
//! associated type.

pub mod cpu;
pub mod gpu;

pub use cpu::Cpu;

use crate::error::Result;
use crate::ops::activation::Activation;
use crate::ops::adam::{AdamConfig, AdamScalars, AdamState};
use crate::ops::batchnorm::{BatchNormParams, RunningStats};
use crate::ops::conv::Conv2dParams;
use crate::ops::loss::BceTarget;
use crate::shape::Shape;
use crate::tensor::Tensor;

/// What every backend tensor offers: its shape.
pub trait TensorValue: Clone + std::fmt::Debug + 'static {
    fn shape(&self) -> &Shape;
    fn dims(&self) -> &[usize] {
        self.shape().dims()
    }
    fn numel(&self) -> usize {
        self.shape().numel()
    }
}

impl TensorValue for Tensor {
    fn shape(&self) -> &Shape {
        Tensor::shape(self)
    }
}

/// Gradients of a layer with up to three inputs (x, weight, bias); `None` where not needed.
pub type Grads3<T> = [Option<T>; 3];

/// The per-iteration values of a run of iterations (an epoch), handed to a backend before they
/// start ([`Backend::load_schedule`]). A GPU keeps them in device memory and reads the current
/// iteration's entry at a cursor that it advances on the device ([`Backend::advance_schedule`]):
/// batch rows (and labels), noise offsets, Adam's step-dependent scalars (the learning-rate
/// decay). So one iteration captured as a CUDA graph, replayed, runs the next iteration — no
/// host write in between. The CPU takes these values from its callers instead.
pub struct Schedule<'a, B: Backend> {
    /// Entries in every table (the iterations of the epoch).
    pub steps: usize,
    /// The entry the cursor starts at (resuming inside an epoch).
    pub start: usize,
    /// Rows per batch.
    pub batch: usize,
    /// Each resident split's rows, `steps·batch` of them in iteration order.
    pub rows: Vec<(&'a B::Images, Vec<u32>)>,
    /// Noise: seed, stream, and each iteration's first offset.
    pub noise: Option<(u64, u64, Vec<u64>)>,
    /// Adam's scalars of each iteration (`steps` rows) for each network (column = the `slot`
    /// given to [`Backend::adam_update`]).
    pub adam: Vec<Vec<AdamScalars<f32>>>,
}

/// A place to keep tensors and run the ops of the GTA networks.
pub trait Backend: Clone + 'static {
    type Tensor: TensorValue;
    /// Class labels (u32) as the loss kernels read them.
    type Labels: Clone + std::fmt::Debug + 'static;
    /// What a max pool keeps for backward (the argmax of each window).
    type PoolIndices: 'static;
    /// What a batch norm keeps for backward (batch or running statistics).
    type BnSaved: 'static;
    /// A batch norm's running mean and variance.
    type RunningStats: std::fmt::Debug;
    /// Adam's moments and step count for one parameter tensor.
    type AdamState: std::fmt::Debug;
    /// A dataset split's images resident in this backend's memory (see
    /// [`Backend::resident_split`]).
    type Images: 'static;
    /// A running count of correct predictions kept on the backend (one read per split).
    type Counter;

    /// "cpu", "emulator" or "cuda".
    fn name(&self) -> &'static str;

    /// Called at the start of every iteration: per-iteration memory may be reused from here
    /// on, so no tensor of an earlier iteration may be used after it.
    fn begin_iteration(&self) -> Result<()> {
        Ok(())
    }

    /// Every how many iterations a training run reads the losses back (a read-back waits for
    /// the device: free on the CPU, a synchronization on a GPU).
    fn log_every(&self) -> usize {
        1
    }

    /// Waits for the device's queued work (timing phases); nothing to wait for on the CPU.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Iterations run so far by replaying a captured graph ([`Backend::replay`]).
    fn replayed_iterations(&self) -> u64 {
        0
    }

    /// Device memory use, for backends with device memory.
    fn memory_stats(&self) -> Option<gpu::MemoryStats> {
        None
    }

    // ---- transfers ----
    fn upload(&self, t: &Tensor) -> Result<Self::Tensor>;
    /// [`Backend::upload`] of a tensor the caller gives up (the CPU keeps it, no copy).
    fn upload_owned(&self, t: Tensor) -> Result<Self::Tensor> {
        self.upload(&t)
    }
    fn download(&self, t: &Self::Tensor) -> Result<Tensor>;
    fn upload_labels(&self, labels: &[u32]) -> Result<Self::Labels>;
    /// A persistent copy (parameters): survives [`Backend::begin_iteration`].
    fn upload_persistent(&self, t: &Tensor) -> Result<Self::Tensor> {
        self.upload(t)
    }
    /// Per-iteration copies of persistent tensors (binding a network's parameters on a tape:
    /// one launch on a GPU).
    fn snapshot(&self, ts: &[&Self::Tensor]) -> Result<Vec<Self::Tensor>>;
    fn running_stats(&self, s: &RunningStats) -> Result<Self::RunningStats>;
    fn download_running_stats(&self, s: &Self::RunningStats) -> Result<RunningStats>;
    fn adam_state(&self, s: &AdamState) -> Result<Self::AdamState>;
    fn download_adam_state(&self, s: &Self::AdamState) -> Result<AdamState>;

    // ---- data ----
    /// The images and labels of a split kept in this backend's memory when the backend
    /// gathers batches itself (the GPU: u8 on the device, one upload per run, so a scheduled
    /// batch has its labels on the device too); `None` when batches are prepared on the host
    /// and uploaded (the CPU).
    fn resident_split(&self, split: &crate::data::Split) -> Result<Option<Self::Images>>;
    /// N(0, 1) draws `rng::normal(seed, stream, offset)` of `shape` (the same bits on every
    /// backend).
    fn normal(&self, seed: u64, stream: u64, offset: u64, shape: &Shape) -> Result<Self::Tensor>;
    /// `acc += x` in place (`acc` a persistent tensor: running sums across iterations).
    fn accumulate(&self, acc: &mut Self::Tensor, x: &Self::Tensor) -> Result<()>;
    /// Every element of `t` (a persistent tensor) set to `value`, in place.
    fn fill(&self, t: &mut Self::Tensor, value: f32) -> Result<()>;
    /// Number of labels.
    fn labels_len(&self, labels: &Self::Labels) -> usize;
    /// `n` labels of class `value`.
    fn full_labels(&self, n: usize, value: u32) -> Result<Self::Labels>;
    /// One-hot rows [N, classes] of `labels` (G's class input).
    fn one_hot(&self, labels: &Self::Labels, classes: usize) -> Result<Self::Tensor>;

    // ---- schedules and captured iterations (see [`Schedule`]) ----
    /// Follows `schedule` from its entry `start` on. `Ok(false)`: this backend has no use for
    /// one (the CPU), and the scheduled ops below are not available.
    fn load_schedule(&self, _schedule: &Schedule<'_, Self>) -> Result<bool>
    where
        Self: Sized,
    {
        Ok(false)
    }
    /// The current scheduled iteration's batch from `images` (resident): F's view, D's view,
    /// and the labels.
    fn scheduled_batch(
        &self,
        _images: &Self::Images,
    ) -> Result<(Self::Tensor, Self::Tensor, Self::Labels)> {
        Err(no_schedule())
    }
    /// The current scheduled iteration's noise at offset (its schedule entry + `extra`).
    fn scheduled_normal(&self, _extra: u64, _shape: &Shape) -> Result<Self::Tensor> {
        Err(no_schedule())
    }
    /// Ends a scheduled iteration: the cursor moves to the next entry (on the device).
    fn advance_schedule(&self) -> Result<()> {
        Err(no_schedule())
    }
    /// Called right after [`Backend::begin_iteration`]: records this iteration's device work
    /// instead of running it (a CUDA graph), until [`Backend::capture_end`]. `Ok(false)`: not
    /// possible here or now (no schedule loaded, memory not settled yet, or no graphs on this
    /// backend); the iteration then runs as usual.
    fn capture_begin(&self) -> Result<bool> {
        Ok(false)
    }
    /// Ends the capture and runs the captured iteration.
    fn capture_end(&self) -> Result<()> {
        Err(crate::error::Error::invalid(
            "graph",
            "no capture in progress",
        ))
    }
    /// Runs the captured iteration once more as a new iteration (its own
    /// [`Backend::begin_iteration`] included), with the next schedule entry. `Ok(false)`:
    /// nothing to replay (nothing captured, or memory moved since: capture again).
    fn replay(&self) -> Result<bool> {
        Ok(false)
    }

    // ---- evaluation ----
    /// A zeroed counter.
    fn counter(&self) -> Result<Self::Counter>;
    /// Adds the number of rows of `logits` [N, K] whose argmax (first maximum) is the label.
    fn count_correct(
        &self,
        logits: &Self::Tensor,
        labels: &Self::Labels,
        counter: &mut Self::Counter,
    ) -> Result<()>;
    /// The counter's value (a read-back on a GPU).
    fn read_counter(&self, counter: &Self::Counter) -> Result<usize>;

    // ---- elementwise and layout ----
    fn full(&self, shape: &Shape, value: f32) -> Result<Self::Tensor>;
    /// Same data, new shape (the element count is checked by the caller).
    fn reshape(&self, x: &Self::Tensor, shape: Shape) -> Result<Self::Tensor>;
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    fn scale(&self, a: &Self::Tensor, c: f32) -> Result<Self::Tensor>;
    fn activation(&self, x: &Self::Tensor, act: Activation) -> Result<Self::Tensor>;
    /// `gx = act'(x, y)·gy` (`y` the forward output).
    fn activation_backward(
        &self,
        act: Activation,
        x: &Self::Tensor,
        y: &Self::Tensor,
        gy: &Self::Tensor,
    ) -> Result<Self::Tensor>;
    fn concat_dim1(&self, parts: &[&Self::Tensor]) -> Result<Self::Tensor>;
    /// The parts of `g` along dim 1 with `channels` each; only those with `need` are made.
    fn split_dim1(
        &self,
        g: &Self::Tensor,
        channels: &[usize],
        need: &[bool],
    ) -> Result<Vec<Option<Self::Tensor>>>;

    // ---- layers ----
    /// conv2d (w `[Cout,Cin,k,k]`) or, with `transposed`, conv_transpose2d (w `[Cin,Cout,k,k]`),
    /// then `act` when given (a [`crate::ops::activation::fusable`] one).
    fn conv(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        p: Conv2dParams,
        transposed: bool,
        act: Option<Activation>,
    ) -> Result<Self::Tensor>;
    #[allow(clippy::too_many_arguments)]
    fn conv_backward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        has_bias: bool,
        gy: &Self::Tensor,
        p: Conv2dParams,
        transposed: bool,
        need: [bool; 3],
    ) -> Result<Grads3<Self::Tensor>>;
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;
    fn linear_backward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        has_bias: bool,
        gy: &Self::Tensor,
        need: [bool; 3],
    ) -> Result<Grads3<Self::Tensor>>;
    fn max_pool(
        &self,
        x: &Self::Tensor,
        kernel: usize,
    ) -> Result<(Self::Tensor, Self::PoolIndices)>;
    fn max_pool_backward(
        &self,
        x: &Self::Tensor,
        gy: &Self::Tensor,
        kernel: usize,
        indices: &Self::PoolIndices,
    ) -> Result<Self::Tensor>;
    /// Batch norm with batch statistics (`training`, running statistics updated) or with the
    /// running ones, then `act` when given (a [`crate::ops::activation::fusable`] one). On
    /// error the running statistics are unchanged.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm(
        &self,
        x: &Self::Tensor,
        weight: &Self::Tensor,
        bias: &Self::Tensor,
        running: &mut Self::RunningStats,
        training: bool,
        p: BatchNormParams,
        act: Option<Activation>,
    ) -> Result<(Self::Tensor, Self::BnSaved)>;
    /// The backward of [`Backend::batch_norm`]. `act` is the activation fused into that
    /// forward and `y` its output: `gy` is then the gradient of `y`, and the backend applies
    /// act'(y) itself (one kernel on the GPU: no separate activation backward, no intermediate
    /// tensor), with the bits of the separate ops.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_backward(
        &self,
        x: &Self::Tensor,
        weight: &Self::Tensor,
        saved: &Self::BnSaved,
        act: Option<Activation>,
        y: &Self::Tensor,
        gy: &Self::Tensor,
        need: [bool; 3],
    ) -> Result<Grads3<Self::Tensor>>;

    // ---- losses (scalar outputs of shape [1]) ----
    /// The mean loss, and, when `want_grad`, what the backward may reuse: a backend that forms
    /// the gradient in the same pass (the GPU: one fused kernel when the logits fit one block)
    /// returns the gradient of the *summed* loss, `softmax − onehot`; `None` when it does not
    /// (the backward then works from the logits).
    fn cross_entropy(
        &self,
        logits: &Self::Tensor,
        labels: &Self::Labels,
        want_grad: bool,
    ) -> Result<(Self::Tensor, Option<Self::Tensor>)>;
    /// `g` is the loss gradient (shape [1]); `saved` what [`Backend::cross_entropy`] returned.
    fn cross_entropy_backward(
        &self,
        logits: &Self::Tensor,
        labels: &Self::Labels,
        saved: Option<&Self::Tensor>,
        g: &Self::Tensor,
    ) -> Result<Self::Tensor>;
    /// As [`Backend::cross_entropy`]; the saved gradient is `sigmoid(x) − target`.
    fn bce_with_logits(
        &self,
        logits: &Self::Tensor,
        target: &BceTarget<f32>,
        want_grad: bool,
    ) -> Result<(Self::Tensor, Option<Self::Tensor>)>;
    fn bce_with_logits_backward(
        &self,
        logits: &Self::Tensor,
        target: &BceTarget<f32>,
        saved: Option<&Self::Tensor>,
        g: &Self::Tensor,
    ) -> Result<Self::Tensor>;

    // ---- optimizer ----
    /// One Adam step on every parameter of a network, in place (the step counts are in
    /// `states`; one launch on a GPU). `slot` is the network's column in a loaded schedule's
    /// Adam table.
    fn adam_update(
        &self,
        params: &mut [&mut Self::Tensor],
        grads: &[Self::Tensor],
        states: &mut [Self::AdamState],
        cfg: &AdamConfig,
        slot: usize,
    ) -> Result<()>;
}

/// The argument counts of [`Backend::adam_update`] agree.
pub(crate) fn check_adam_counts(params: usize, grads: usize, states: usize) -> Result<()> {
    if params != grads || params != states {
        return Err(crate::error::Error::invalid(
            "adam",
            format!("{params} parameters, {grads} gradients, {states} states"),
        ));
    }
    Ok(())
}

fn no_schedule() -> crate::error::Error {
    crate::error::Error::invalid(
        "schedule",
        "no schedule loaded (this backend takes per-iteration values from its callers)",
    )
}
