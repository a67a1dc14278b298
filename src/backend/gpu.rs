//! The GPU backend: device tensors and the kernels of kernels/*.cu, over any executor
//! ([`crate::gpu::cuda::CudaExecutor`] on a GPU, [`crate::gpu::Emulator`] on the CPU).
//!
//! Memory: parameters, batch-norm buffers and Adam moments are persistent allocations; every
//! other tensor (activations, gradients, losses, labels, workspaces) comes from the
//! per-iteration [`Arena`], which [`Backend::begin_iteration`] resets. After the first
//! iteration the arena is one chunk large enough for a whole iteration, so later iterations
//! make no driver allocation and see the same addresses (what CUDA-graph capture needs).
//! A tensor remembers the arena generation it was cut from; using one from an earlier
//! iteration is an error, not a silent read of reused memory.
//!
//! Captured iterations: under a [`Schedule`] the per-iteration values (batch rows, labels,
//! noise offsets, Adam's step scalars) are tables in device memory read at a device cursor, and
//! the iteration ends by advancing that cursor on the device. With the arena settled, one
//! iteration is captured ([`Backend::capture_begin`]: a CUDA graph, or the emulator's record of
//! the same launches) and then replayed for the following ones ([`Backend::replay`]): one graph
//! launch per iteration, no host work. While capturing, every host transfer, allocation and
//! synchronization is refused (it would not be part of the graph). A replay checks that the
//! memory the graph addresses has not moved (arena chunk, schedule tables); if it has, the
//! caller runs the iteration normally and captures again.

use super::{Backend, Grads3, Schedule, TensorValue};
use crate::error::{Error, Result};
use crate::gpu::kernels::adam::{AdamSegment, AdamStepScalars, StepScalars};
use crate::gpu::kernels::conv::Precision;
use crate::gpu::kernels::data::{gather as gather_k, DeviceImages, Rows};
use crate::gpu::kernels::elementwise::CopySegment;
use crate::gpu::kernels::{
    activation as act_k, adam as adam_k, batchnorm as bn_k, conv as conv_k, elementwise,
    layout as layout_k, linear as linear_k, loss as loss_k, pool as pool_k, rng as rng_k,
    schedule as schedule_k,
};
use crate::gpu::{Buffer, DeviceRepr, Memory};
use crate::ops::activation::Activation;
use crate::ops::adam::{AdamConfig, AdamScalars, AdamState};
use crate::ops::batchnorm::{BatchNormParams, RunningStats};
use crate::ops::conv::Conv2dParams;
use crate::ops::loss::BceTarget;
use crate::shape::Shape;
use crate::tensor::Tensor;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// A training run reads the losses back every this many iterations (one synchronization).
pub const LOG_EVERY: usize = 10;

/// Arena allocations are rounded to this many bytes (cudaMalloc's alignment).
const ALIGN: usize = 256;

/// Per-iteration device memory: a bump allocator over one chunk, reset every iteration.
struct Arena<M: Memory> {
    chunk: Option<Arc<M::Buf<u8>>>,
    /// Bytes handed out of `chunk` this iteration.
    offset: usize,
    /// Bytes that did not fit `chunk` this iteration (allocated one by one).
    overflow: usize,
    /// Bumped by every reset; tensors carry the generation they were cut from.
    generation: u64,
    /// Driver allocations made by the arena so far.
    driver_allocations: u64,
    /// The most bytes one iteration needed.
    peak: usize,
    /// Set by a reset when the iteration before fit the chunk and the chunk stayed: this
    /// iteration allocates exactly as the one before (what a capture needs).
    settled: bool,
}

/// Memory statistics of a GPU backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes of persistent allocations (parameters, buffers, optimizer state, datasets).
    pub persistent_bytes: usize,
    /// The most per-iteration bytes one iteration used.
    pub arena_peak_bytes: usize,
    /// Driver allocations the arena made (stops growing after the first iteration).
    pub arena_driver_allocations: u64,
}

/// A schedule's tables in device memory and its cursor (see [`Schedule`]).
struct DeviceSchedule<M: Memory> {
    /// The device cursor: the current entry.
    step: M::Buf<u32>,
    /// Its value as the host last set or advanced it (checks and Adam verification).
    host_step: usize,
    steps: usize,
    batch: usize,
    /// (images id, rows table) per resident split.
    rows: Vec<(u64, M::Buf<u32>)>,
    /// seed, stream, offsets table.
    noise: Option<(u64, u64, M::Buf<u64>)>,
    /// Adam step scalars [steps][slots], and the host copy they are checked against.
    adam: M::Buf<AdamStepScalars>,
    adam_host: Vec<Vec<AdamStepScalars>>,
    slots: usize,
}

/// What a capture in progress has seen.
#[derive(Default)]
struct Capturing {
    /// Cursor advances recorded.
    advances: usize,
    /// Adam step counters the captured iteration increments (a replay increments them too).
    adam_steps: Vec<Rc<Cell<u64>>>,
}

/// A captured iteration and what it assumes.
struct Captured<M: Memory> {
    graph: M::Graph,
    /// The arena chunk's address and the tables' layout version at capture.
    chunk: u64,
    layout: u64,
    /// Arena bytes the iteration uses.
    arena_bytes: usize,
    advances: usize,
    adam_steps: Vec<Rc<Cell<u64>>>,
}

/// An Adam segment table: its host copy and its device copy.
type SegmentTable<M> = (Vec<AdamSegment>, <M as Memory>::Buf<AdamSegment>);

struct Inner<M: Memory> {
    exec: M,
    /// Arithmetic of the convolutions (FP32 FMAs or TF32 tensor cores).
    precision: Precision,
    arena: RefCell<Arena<M>>,
    persistent_bytes: RefCell<usize>,
    schedule: RefCell<Option<DeviceSchedule<M>>>,
    /// Bumped whenever a table a graph may address is reallocated.
    layout: Cell<u64>,
    capturing: RefCell<Option<Capturing>>,
    graph: RefCell<Option<Captured<M>>>,
    /// Per Adam slot: the segment table in device memory and its host copy.
    adam_segments: RefCell<HashMap<usize, SegmentTable<M>>>,
    /// Segment tables of [`Backend::snapshot`], by content (in steady state every bind of
    /// an iteration finds its table: same parameters, same arena addresses).
    copy_tables: RefCell<HashMap<Vec<CopySegment>, M::Buf<CopySegment>>>,
    /// Iterations replayed from a graph (statistics).
    replays: Cell<u64>,
    /// Whether iterations may be captured.
    graphs: Cell<bool>,
}

/// The GPU backend over executor `M` (cheap to clone: clones share the executor and arena).
pub struct Gpu<M: Memory> {
    inner: Rc<Inner<M>>,
}

impl<M: Memory> Clone for Gpu<M> {
    fn clone(&self) -> Self {
        Gpu {
            inner: self.inner.clone(),
        }
    }
}

impl<M: Memory> std::fmt::Debug for Gpu<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({})", self.inner.exec.name())
    }
}

/// A tensor in device memory.
pub struct GpuTensor<M: Memory> {
    buf: Rc<M::Buf<f32>>,
    shape: Shape,
    /// The arena generation it was cut from; 0 for persistent tensors.
    generation: u64,
}

impl<M: Memory> Clone for GpuTensor<M> {
    fn clone(&self) -> Self {
        GpuTensor {
            buf: self.buf.clone(),
            shape: self.shape.clone(),
            generation: self.generation,
        }
    }
}

impl<M: Memory> std::fmt::Debug for GpuTensor<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuTensor{} @ {:#x}", self.shape, self.buf.device_ptr())
    }
}

impl<M: Memory + 'static> TensorValue for GpuTensor<M> {
    fn shape(&self) -> &Shape {
        &self.shape
    }
}

/// Labels on the device.
pub struct GpuLabels<M: Memory> {
    buf: Rc<M::Buf<u32>>,
    generation: u64,
}

impl<M: Memory> Clone for GpuLabels<M> {
    fn clone(&self) -> Self {
        GpuLabels {
            buf: self.buf.clone(),
            generation: self.generation,
        }
    }
}

impl<M: Memory> std::fmt::Debug for GpuLabels<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuLabels[{}]", self.buf.len())
    }
}

/// A batch norm's running statistics on the device.
pub struct GpuRunningStats<M: Memory> {
    mean: M::Buf<f32>,
    var: M::Buf<f32>,
}

impl<M: Memory> std::fmt::Debug for GpuRunningStats<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuRunningStats[{}]", self.mean.len())
    }
}

/// Adam's moments on the device.
pub struct GpuAdamState<M: Memory> {
    m: M::Buf<f32>,
    v: M::Buf<f32>,
    /// Shared with a captured graph's record, which advances it on every replay.
    step: Rc<Cell<u64>>,
}

impl<M: Memory> std::fmt::Debug for GpuAdamState<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuAdamState[{}] step {}", self.m.len(), self.step.get())
    }
}

/// What a batch norm keeps for backward (per-iteration copies).
pub enum GpuBnSaved<M: Memory> {
    /// Training mode: batch mean and 1/sqrt(var + eps).
    Batch {
        mean: GpuTensor<M>,
        invstd: GpuTensor<M>,
    },
    /// Evaluation mode: the running statistics as they were at the forward.
    Running {
        mean: GpuTensor<M>,
        var: GpuTensor<M>,
        eps: f32,
    },
}

impl<M: Memory> Gpu<M> {
    /// FP32 convolutions.
    pub fn new(exec: M) -> Self {
        Self::with_precision(exec, Precision::Fp32)
    }

    /// Convolutions in `precision` (TF32: tensor cores, sm_80 and newer).
    pub fn with_precision(exec: M, precision: Precision) -> Self {
        Gpu {
            inner: Rc::new(Inner {
                exec,
                precision,
                arena: RefCell::new(Arena {
                    chunk: None,
                    offset: 0,
                    overflow: 0,
                    generation: 1,
                    driver_allocations: 0,
                    peak: 0,
                    settled: false,
                }),
                persistent_bytes: RefCell::new(0),
                schedule: RefCell::new(None),
                layout: Cell::new(0),
                capturing: RefCell::new(None),
                graph: RefCell::new(None),
                adam_segments: RefCell::new(HashMap::new()),
                copy_tables: RefCell::new(HashMap::new()),
                replays: Cell::new(0),
                graphs: Cell::new(true),
            }),
        }
    }

    /// With `on` false, iterations are never captured (every one runs launch by launch: for
    /// debugging; the results are the same).
    pub fn with_graphs(self, on: bool) -> Self {
        self.inner.graphs.set(on);
        self
    }

    /// Whether an iteration is being captured.
    fn is_capturing(&self) -> bool {
        self.inner.capturing.borrow().is_some()
    }

    /// Refuses `what` (a host transfer, allocation or synchronization) during a capture: it
    /// would happen once, now, instead of on every replay.
    fn not_capturing(&self, what: &str) -> Result<()> {
        if self.is_capturing() {
            return Err(Error::invalid(
                "graph capture",
                format!(
                    "{what} inside a captured iteration (only device work can be captured; \
                     run with graphs off to debug: --no-graph)"
                ),
            ));
        }
        Ok(())
    }

    /// The executor the kernels run on.
    pub fn exec(&self) -> &M {
        &self.inner.exec
    }

    fn stats(&self) -> MemoryStats {
        let a = self.inner.arena.borrow();
        MemoryStats {
            persistent_bytes: *self.inner.persistent_bytes.borrow(),
            arena_peak_bytes: a.peak.max(a.offset + a.overflow),
            arena_driver_allocations: a.driver_allocations,
        }
    }

    /// `len` elements of per-iteration memory (contents undefined: every kernel that gets
    /// one writes all of it).
    fn alloc<T: DeviceRepr>(&self, len: usize) -> Result<(M::Buf<T>, u64)> {
        let exec = &self.inner.exec;
        let mut a = self.inner.arena.borrow_mut();
        let bytes = (len * std::mem::size_of::<T>()).max(1).div_ceil(ALIGN) * ALIGN;
        let generation = a.generation;
        if let Some(chunk) = &a.chunk {
            if a.offset + bytes <= chunk.len() {
                let view = exec.view(chunk, a.offset, len)?;
                a.offset += bytes;
                return Ok((view, generation));
            }
        }
        // Does not fit (first iteration, or a larger one): a buffer of its own; the next
        // reset grows the chunk to cover the whole iteration.
        if self.is_capturing() {
            return Err(Error::invalid(
                "graph capture",
                format!(
                    "the iteration needs more than the arena's {} bytes while capturing",
                    a.chunk.as_ref().map_or(0, |c| c.len())
                ),
            ));
        }
        a.overflow += bytes;
        a.driver_allocations += 1;
        Ok((exec.alloc_zeroed(len)?, generation))
    }

    fn tensor(&self, shape: Shape) -> Result<(M::Buf<f32>, Shape, u64)> {
        let (buf, generation) = self.alloc::<f32>(shape.numel())?;
        Ok((buf, shape, generation))
    }

    fn wrap(buf: M::Buf<f32>, shape: Shape, generation: u64) -> GpuTensor<M> {
        GpuTensor {
            buf: Rc::new(buf),
            shape,
            generation,
        }
    }

    /// A fresh per-iteration tensor of `shape` written by `f`.
    fn output(
        &self,
        shape: Shape,
        f: impl FnOnce(&mut M::Buf<f32>) -> std::result::Result<(), crate::gpu::GpuError>,
    ) -> Result<GpuTensor<M>> {
        let (mut buf, shape, generation) = self.tensor(shape)?;
        f(&mut buf)?;
        Ok(Self::wrap(buf, shape, generation))
    }

    /// The buffer of `t`, if it is still valid (persistent, or from this iteration).
    fn buf<'a>(&self, t: &'a GpuTensor<M>) -> Result<&'a M::Buf<f32>> {
        self.check_generation(t.generation)?;
        Ok(&t.buf)
    }

    fn check_generation(&self, generation: u64) -> Result<()> {
        let now = self.inner.arena.borrow().generation;
        if generation != 0 && generation != now {
            return Err(Error::Autograd(format!(
                "a device tensor of iteration generation {generation} was used in generation \
                 {now}: per-iteration tensors do not outlive their iteration"
            )));
        }
        Ok(())
    }

    fn persistent(&self, data: &[f32]) -> Result<M::Buf<f32>> {
        self.upload_table(data)
    }

    /// A persistent copy of `data` (counted in the persistent bytes).
    fn upload_table<T: DeviceRepr>(&self, data: &[T]) -> Result<M::Buf<T>> {
        self.not_capturing("a host → device copy")?;
        *self.inner.persistent_bytes.borrow_mut() += std::mem::size_of_val(data);
        Ok(self.inner.exec.upload(data)?)
    }

    /// `data` into `table` when the lengths agree (same address), else into a new table
    /// (and every captured graph becomes stale).
    fn rewrite_table<T: DeviceRepr>(&self, table: &mut M::Buf<T>, data: &[T]) -> Result<()> {
        if table.len() == data.len() {
            table.write(data)?;
        } else {
            let old = std::mem::replace(table, self.upload_table(data)?);
            self.release_table(&old);
            self.inner.layout.set(self.inner.layout.get() + 1);
        }
        Ok(())
    }

    /// Takes a table that is being dropped off the persistent count.
    fn release_table<T: DeviceRepr>(&self, old: &M::Buf<T>) {
        *self.inner.persistent_bytes.borrow_mut() -= old.len() * std::mem::size_of::<T>();
    }

    /// The segment table of Adam slot `slot` for these parameters, gradients and states,
    /// written to the device only when it changed (in steady state the arena hands the
    /// gradients the same addresses every iteration, so never).
    fn adam_segments(
        &self,
        slot: usize,
        params: &mut [&mut GpuTensor<M>],
        grads: &[GpuTensor<M>],
        states: &mut [GpuAdamState<M>],
    ) -> Result<usize> {
        const OP: &str = "adam";
        let mut segs = Vec::with_capacity(params.len());
        let mut max_n = 0;
        for ((p, g), s) in params.iter_mut().zip(grads).zip(states.iter_mut()) {
            same_shape(OP, &p.shape, &g.shape)?;
            let gb = self.buf(g)?;
            let pb = Rc::get_mut(&mut p.buf).ok_or_else(|| {
                Error::invalid(
                    OP,
                    "the parameter is shared (bind makes copies; this is a bug)",
                )
            })?;
            let n = pb.len();
            if s.m.len() != n || s.v.len() != n {
                return Err(Error::shape(
                    OP,
                    format!("moments of {} for {n} values", s.m.len()),
                ));
            }
            max_n = max_n.max(n);
            segs.push(AdamSegment {
                param: pb.device_ptr(),
                grad: gb.device_ptr(),
                m: s.m.device_ptr(),
                v: s.v.device_ptr(),
                n: n as u64,
            });
        }
        let mut tables = self.inner.adam_segments.borrow_mut();
        let same = tables.get(&slot).is_some_and(|(host, _)| *host == segs);
        if !same {
            self.not_capturing("a changed Adam segment table")?;
            let dev = self.upload_table(&segs)?;
            // A graph may hold the old table's address.
            self.inner.layout.set(self.inner.layout.get() + 1);
            if let Some((_, old)) = tables.insert(slot, (segs, dev)) {
                self.release_table(&old);
            }
        }
        Ok(max_n)
    }
}

fn same_shape(op: &'static str, a: &Shape, b: &Shape) -> Result<()> {
    if a != b {
        return Err(Error::shape(op, format!("{a} vs {b}")));
    }
    Ok(())
}

fn dims4(op: &'static str, s: &Shape) -> Result<[usize; 4]> {
    s.dims4()
        .ok_or_else(|| Error::shape(op, format!("expected [N,C,H,W], got {s}")))
}

fn dims2(op: &'static str, s: &Shape) -> Result<[usize; 2]> {
    s.dims2()
        .ok_or_else(|| Error::shape(op, format!("expected [N,K], got {s}")))
}

impl<M: Memory + 'static> Gpu<M> {
    /// The device view of a host BCE target (a per-element target is uploaded).
    fn with_target<R>(
        &self,
        target: &BceTarget<f32>,
        f: impl FnOnce(loss_k::BceTarget<'_, M>) -> Result<R>,
    ) -> Result<R> {
        match target {
            BceTarget::Constant(t) => f(loss_k::BceTarget::Constant(*t)),
            BceTarget::PerElement(v) => {
                self.not_capturing("a host → device copy of BCE targets")?;
                let (mut buf, _) = self.alloc::<f32>(v.len())?;
                buf.write(v)?;
                f(loss_k::BceTarget::PerElement(&buf))
            }
        }
    }

    fn conv_shape(
        &self,
        x: &GpuTensor<M>,
        w: &GpuTensor<M>,
        p: Conv2dParams,
        transposed: bool,
    ) -> Result<conv_k::ConvShape> {
        const OP: &str = "conv";
        Ok(conv_k::ConvShape {
            x_dims: dims4(OP, &x.shape)?,
            w_dims: dims4(OP, &w.shape)?,
            p,
            transposed,
        })
    }
}

impl<M: Memory + 'static> Backend for Gpu<M> {
    type Tensor = GpuTensor<M>;
    type Labels = GpuLabels<M>;
    type PoolIndices = Rc<M::Buf<u32>>;
    type BnSaved = GpuBnSaved<M>;
    type RunningStats = GpuRunningStats<M>;
    type AdamState = GpuAdamState<M>;
    type Images = DeviceImages<M>;
    type Counter = M::Buf<u32>;

    fn name(&self) -> &'static str {
        self.inner.exec.name()
    }

    fn resident_split(&self, split: &crate::data::Split) -> Result<Option<DeviceImages<M>>> {
        self.not_capturing("a dataset upload")?;
        // `Labels` hold classes 0–9 (checked when a split is opened).
        let labels = split.labels.as_slice();
        *self.inner.persistent_bytes.borrow_mut() += split.images.pixels().len() + labels.len();
        let exec = &self.inner.exec;
        Ok(Some(
            DeviceImages::from_images(exec, &split.images)?.with_labels(exec, labels)?,
        ))
    }
    fn normal(&self, seed: u64, stream: u64, offset: u64, shape: &Shape) -> Result<GpuTensor<M>> {
        self.output(shape.clone(), |y| {
            rng_k::normal(&self.inner.exec, seed, stream, offset, y)
        })
    }
    fn accumulate(&self, acc: &mut GpuTensor<M>, x: &GpuTensor<M>) -> Result<()> {
        same_shape("accumulate", &acc.shape, &x.shape)?;
        let xb = self.buf(x)?;
        let ab = Rc::get_mut(&mut acc.buf)
            .ok_or_else(|| Error::invalid("accumulate", "the accumulator is shared"))?;
        Ok(elementwise::axpy(&self.inner.exec, 1.0, xb, ab)?)
    }
    fn counter(&self) -> Result<M::Buf<u32>> {
        self.not_capturing("an allocation")?;
        Ok(self.inner.exec.alloc_zeroed::<u32>(1)?)
    }
    fn count_correct(
        &self,
        logits: &GpuTensor<M>,
        labels: &GpuLabels<M>,
        counter: &mut M::Buf<u32>,
    ) -> Result<()> {
        let dims = dims2("accuracy", &logits.shape)?;
        self.check_generation(labels.generation)?;
        let lb = self.buf(logits)?;
        Ok(loss_k::count_correct(
            &self.inner.exec,
            lb,
            &labels.buf,
            dims,
            counter,
            true,
        )?)
    }
    fn read_counter(&self, counter: &M::Buf<u32>) -> Result<usize> {
        self.not_capturing("a device → host copy")?;
        Ok(counter.read()?.first().copied().unwrap_or(0) as usize)
    }
    fn fill(&self, t: &mut GpuTensor<M>, value: f32) -> Result<()> {
        self.check_generation(t.generation)?;
        let b = Rc::get_mut(&mut t.buf)
            .ok_or_else(|| Error::invalid("fill", "the tensor is shared"))?;
        Ok(elementwise::fill(&self.inner.exec, b, value)?)
    }

    fn labels_len(&self, labels: &GpuLabels<M>) -> usize {
        labels.buf.len()
    }
    fn full_labels(&self, n: usize, value: u32) -> Result<GpuLabels<M>> {
        let (mut buf, generation) = self.alloc::<u32>(n)?;
        elementwise::fill_u32(&self.inner.exec, &mut buf, value)?;
        Ok(GpuLabels {
            buf: Rc::new(buf),
            generation,
        })
    }
    fn one_hot(&self, labels: &GpuLabels<M>, classes: usize) -> Result<GpuTensor<M>> {
        self.check_generation(labels.generation)?;
        let n = labels.buf.len();
        self.output(Shape::new(&[n, classes]), |y| {
            layout_k::one_hot(&self.inner.exec, &labels.buf, classes, y)
        })
    }

    fn load_schedule(&self, sc: &Schedule<'_, Self>) -> Result<bool> {
        const OP: &str = "schedule";
        self.not_capturing("loading a schedule")?;
        let steps = sc.steps;
        if sc.start > steps || sc.batch == 0 {
            return Err(Error::invalid(
                OP,
                format!("start {} of {steps} entries, batch {}", sc.start, sc.batch),
            ));
        }
        for (_, rows) in &sc.rows {
            if rows.len() != steps * sc.batch {
                return Err(Error::invalid(
                    OP,
                    format!("{} rows for {steps} batches of {}", rows.len(), sc.batch),
                ));
            }
        }
        if sc.noise.as_ref().is_some_and(|(_, _, o)| o.len() != steps) || sc.adam.len() != steps {
            return Err(Error::invalid(
                OP,
                format!("tables of other than {steps} entries"),
            ));
        }
        let slots = sc.adam.first().map_or(0, |r| r.len());
        if sc.adam.iter().any(|r| r.len() != slots) {
            return Err(Error::invalid(OP, "Adam rows of different lengths"));
        }
        let adam_host: Vec<Vec<AdamStepScalars>> = sc
            .adam
            .iter()
            .map(|r| r.iter().map(AdamStepScalars::of).collect())
            .collect();
        let adam_flat: Vec<AdamStepScalars> = adam_host.iter().flatten().copied().collect();
        // Reuse the tables (same addresses: a captured graph stays valid across epochs).
        let mut slot = self.inner.schedule.borrow_mut();
        let old = slot.take();
        let start = [sc.start as u32];
        let mut d = match old {
            Some(mut d) => {
                d.step.write(&start)?;
                d
            }
            None => {
                self.inner.layout.set(self.inner.layout.get() + 1);
                DeviceSchedule {
                    step: self.upload_table(&start)?,
                    host_step: 0,
                    steps: 0,
                    batch: 0,
                    rows: Vec::new(),
                    noise: None,
                    // Filled below, like every table.
                    adam: self.upload_table(&[])?,
                    adam_host: Vec::new(),
                    slots: 0,
                }
            }
        };
        let mut rows = std::mem::take(&mut d.rows);
        let ids: Vec<u64> = sc.rows.iter().map(|(im, _)| im.id()).collect();
        if rows.iter().map(|(id, _)| *id).collect::<Vec<_>>() != ids {
            for (_, old) in rows.drain(..) {
                self.release_table(&old);
            }
            self.inner.layout.set(self.inner.layout.get() + 1);
        }
        for (i, (images, table)) in sc.rows.iter().enumerate() {
            match rows.get_mut(i) {
                Some((_, buf)) => self.rewrite_table(buf, table)?,
                None => rows.push((images.id(), self.upload_table(table)?)),
            }
        }
        d.rows = rows;
        d.noise = match (d.noise.take(), &sc.noise) {
            (_, None) => None,
            (Some((_, _, mut buf)), Some((seed, stream, offsets))) => {
                self.rewrite_table(&mut buf, offsets)?;
                Some((*seed, *stream, buf))
            }
            (None, Some((seed, stream, offsets))) => {
                self.inner.layout.set(self.inner.layout.get() + 1);
                Some((*seed, *stream, self.upload_table(offsets)?))
            }
        };
        self.rewrite_table(&mut d.adam, &adam_flat)?;
        d.adam_host = adam_host;
        d.slots = slots;
        d.host_step = sc.start;
        d.steps = steps;
        d.batch = sc.batch;
        *slot = Some(d);
        Ok(true)
    }

    fn scheduled_batch(
        &self,
        images: &DeviceImages<M>,
    ) -> Result<(GpuTensor<M>, GpuTensor<M>, GpuLabels<M>)> {
        const OP: &str = "scheduled batch";
        let sched = self.inner.schedule.borrow();
        let s = sched
            .as_ref()
            .ok_or_else(|| Error::invalid(OP, "no schedule loaded"))?;
        let table = s
            .rows
            .iter()
            .find(|(id, _)| *id == images.id())
            .map(|(_, t)| t)
            .ok_or_else(|| Error::invalid(OP, "these images have no rows in the schedule"))?;
        if s.host_step >= s.steps {
            return Err(Error::invalid(
                OP,
                format!("entry {} of a {}-entry schedule", s.host_step, s.steps),
            ));
        }
        let shape = Shape::new(&[s.batch, 3, 32, 32]);
        let (mut unit, _, g) = self.tensor(shape.clone())?;
        let (mut labels, lg) = self.alloc::<u32>(s.batch)?;
        let rows = || Rows::Scheduled {
            table,
            batch: s.batch,
            step: &s.step,
        };
        let x = self.output(shape.clone(), |x| {
            gather_k(
                &self.inner.exec,
                images,
                rows(),
                x,
                Some(&mut unit),
                Some(&mut labels),
            )
        })?;
        Ok((
            x,
            Self::wrap(unit, shape, g),
            GpuLabels {
                buf: Rc::new(labels),
                generation: lg,
            },
        ))
    }

    fn scheduled_normal(&self, extra: u64, shape: &Shape) -> Result<GpuTensor<M>> {
        const OP: &str = "scheduled noise";
        let sched = self.inner.schedule.borrow();
        let s = sched
            .as_ref()
            .ok_or_else(|| Error::invalid(OP, "no schedule loaded"))?;
        let (seed, stream, offsets) = s
            .noise
            .as_ref()
            .ok_or_else(|| Error::invalid(OP, "the schedule has no noise"))?;
        self.output(shape.clone(), |y| {
            rng_k::normal_scheduled(
                &self.inner.exec,
                *seed,
                *stream,
                extra,
                Some((offsets, &s.step)),
                y,
            )
        })
    }

    fn advance_schedule(&self) -> Result<()> {
        let mut sched = self.inner.schedule.borrow_mut();
        let s = sched
            .as_mut()
            .ok_or_else(|| Error::invalid("schedule", "no schedule loaded"))?;
        schedule_k::advance(&self.inner.exec, &mut s.step, 1)?;
        s.host_step += 1;
        if let Some(c) = self.inner.capturing.borrow_mut().as_mut() {
            c.advances += 1;
        }
        Ok(())
    }

    fn capture_begin(&self) -> Result<bool> {
        if !self.inner.graphs.get() || self.is_capturing() || self.inner.schedule.borrow().is_none()
        {
            return Ok(false);
        }
        {
            // Only from the start of an iteration with a settled arena: every allocation of
            // the iteration is then a view at the same offset as in the previous one.
            let a = self.inner.arena.borrow();
            if !a.settled || a.offset != 0 || a.overflow != 0 {
                return Ok(false);
            }
        }
        *self.inner.graph.borrow_mut() = None;
        match self.inner.exec.capture_begin() {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => {
                // Nothing is captured yet: train on launch by launch, and say why.
                eprintln!(
                    "warning: CUDA graph capture is unavailable ({e}); iterations run launch \
                     by launch from here on"
                );
                self.inner.graphs.set(false);
                return Ok(false);
            }
        }
        *self.inner.capturing.borrow_mut() = Some(Capturing::default());
        Ok(true)
    }

    fn capture_end(&self) -> Result<()> {
        let c = self
            .inner
            .capturing
            .borrow_mut()
            .take()
            .ok_or_else(|| Error::invalid("graph", "no capture in progress"))?;
        // The captured iteration has not run yet: a failure here leaves the state of the last
        // checkpoint as the one to trust.
        let hint = |e: crate::gpu::GpuError| {
            Error::invalid(
                "graph capture",
                format!(
                    "{e}: the captured iteration did not run; resume from the last checkpoint \
                     with --no-graph"
                ),
            )
        };
        let graph = self.inner.exec.capture_end().map_err(hint)?;
        let (chunk, arena_bytes) = {
            let a = self.inner.arena.borrow();
            (a.chunk.as_ref().map_or(0, |c| c.device_ptr()), a.offset)
        };
        self.inner.exec.graph_launch(&graph).map_err(hint)?;
        *self.inner.graph.borrow_mut() = Some(Captured {
            graph,
            chunk,
            layout: self.inner.layout.get(),
            arena_bytes,
            advances: c.advances,
            adam_steps: c.adam_steps,
        });
        Ok(())
    }

    fn replay(&self) -> Result<bool> {
        let mut slot = self.inner.graph.borrow_mut();
        let Some(g) = slot.as_ref() else {
            return Ok(false);
        };
        let mut sched = self.inner.schedule.borrow_mut();
        let fits = sched
            .as_ref()
            .is_some_and(|s| s.host_step + g.advances <= s.steps);
        // The reset below keeps the chunk unless the iteration before outgrew it.
        let arena_stays = {
            let a = self.inner.arena.borrow();
            let chunk = a.chunk.as_ref();
            chunk.map_or(0, |c| c.device_ptr()) == g.chunk
                && a.peak.max(a.offset + a.overflow) <= chunk.map_or(0, |c| c.len())
        };
        if !fits || !arena_stays || self.inner.layout.get() != g.layout {
            // Memory moved (or the schedule ends): capture again from a normal iteration.
            *slot = None;
            return Ok(false);
        }
        self.begin_iteration()?;
        self.inner.exec.graph_launch(&g.graph)?;
        if let Some(s) = sched.as_mut() {
            s.host_step += g.advances;
        }
        for c in &g.adam_steps {
            c.set(c.get() + 1);
        }
        self.inner.arena.borrow_mut().offset = g.arena_bytes;
        self.inner.replays.set(self.inner.replays.get() + 1);
        Ok(true)
    }

    fn memory_stats(&self) -> Option<MemoryStats> {
        Some(self.stats())
    }

    fn replayed_iterations(&self) -> u64 {
        self.inner.replays.get()
    }

    fn log_every(&self) -> usize {
        LOG_EVERY
    }

    fn synchronize(&self) -> Result<()> {
        self.not_capturing("a synchronization")?;
        Ok(crate::gpu::Executor::synchronize(&self.inner.exec)?)
    }

    fn begin_iteration(&self) -> Result<()> {
        self.not_capturing("a new iteration")?;
        let exec = &self.inner.exec;
        let mut a = self.inner.arena.borrow_mut();
        let used = a.offset + a.overflow;
        a.peak = a.peak.max(used);
        let capacity = a.chunk.as_ref().map_or(0, |c| c.len());
        a.settled = a.chunk.is_some() && a.overflow == 0 && a.peak <= capacity;
        if a.peak > capacity {
            // One chunk for a whole iteration from now on (views still alive keep the old
            // chunk until they drop; generation checks stop them being used).
            let bytes = a.peak.div_ceil(ALIGN) * ALIGN;
            a.chunk = None;
            a.chunk = Some(Arc::new(exec.alloc_zeroed::<u8>(bytes)?));
            a.driver_allocations += 1;
        }
        a.offset = 0;
        a.overflow = 0;
        a.generation += 1;
        Ok(())
    }

    fn upload(&self, t: &Tensor) -> Result<GpuTensor<M>> {
        self.not_capturing("a host → device copy")?;
        self.output(t.shape().clone(), |b| b.write(t.data()))
    }
    fn download(&self, t: &GpuTensor<M>) -> Result<Tensor> {
        self.not_capturing("a device → host copy")?;
        Tensor::new(t.shape.clone(), self.buf(t)?.read()?)
    }
    fn upload_labels(&self, labels: &[u32]) -> Result<GpuLabels<M>> {
        self.not_capturing("a host → device copy of labels")?;
        let (mut buf, generation) = self.alloc::<u32>(labels.len())?;
        buf.write(labels)?;
        Ok(GpuLabels {
            buf: Rc::new(buf),
            generation,
        })
    }
    fn upload_persistent(&self, t: &Tensor) -> Result<GpuTensor<M>> {
        Ok(Self::wrap(self.persistent(t.data())?, t.shape().clone(), 0))
    }
    fn snapshot(&self, ts: &[&GpuTensor<M>]) -> Result<Vec<GpuTensor<M>>> {
        /// More distinct tables than any run binds: beyond, the cache starts over.
        const MAX_TABLES: usize = 64;
        let mut out = Vec::with_capacity(ts.len());
        let mut segs = Vec::with_capacity(ts.len());
        let mut max_n = 0;
        for t in ts {
            let src = self.buf(t)?.device_ptr();
            let (buf, shape, generation) = self.tensor(t.shape.clone())?;
            max_n = max_n.max(buf.len());
            segs.push(CopySegment {
                src,
                dst: buf.device_ptr(),
                n: buf.len() as u64,
            });
            out.push(Self::wrap(buf, shape, generation));
        }
        let mut tables = self.inner.copy_tables.borrow_mut();
        if !tables.contains_key(&segs) {
            self.not_capturing("a new parameter-snapshot table")?;
            if tables.len() >= MAX_TABLES {
                tables.clear();
                // A graph may hold a dropped table's address.
                self.inner.layout.set(self.inner.layout.get() + 1);
            }
            // Not counted in the persistent bytes: how many tables a run makes depends on its
            // evaluation chunks (≤ MAX_TABLES × 24 bytes per tensor of a network, a few KiB).
            let dev = self.inner.exec.upload(&segs)?;
            tables.insert(segs.clone(), dev);
        }
        // SAFETY: each segment copies a live persistent or current-iteration tensor into a
        // fresh arena allocation of the same length made just above (distinct from each other
        // and from every source); the table was built from exactly these addresses.
        unsafe { elementwise::copy_segments(&self.inner.exec, &tables[&segs], max_n)? };
        Ok(out)
    }
    fn running_stats(&self, s: &RunningStats) -> Result<GpuRunningStats<M>> {
        Ok(GpuRunningStats {
            mean: self.persistent(&s.mean)?,
            var: self.persistent(&s.var)?,
        })
    }
    fn download_running_stats(&self, s: &GpuRunningStats<M>) -> Result<RunningStats> {
        self.not_capturing("a device → host copy")?;
        Ok(RunningStats {
            mean: s.mean.read()?,
            var: s.var.read()?,
        })
    }
    fn adam_state(&self, s: &AdamState) -> Result<GpuAdamState<M>> {
        Ok(GpuAdamState {
            m: self.persistent(&s.m)?,
            v: self.persistent(&s.v)?,
            step: Rc::new(Cell::new(s.step)),
        })
    }
    fn download_adam_state(&self, s: &GpuAdamState<M>) -> Result<AdamState> {
        self.not_capturing("a device → host copy")?;
        Ok(AdamState {
            m: s.m.read()?,
            v: s.v.read()?,
            step: s.step.get(),
        })
    }

    fn full(&self, shape: &Shape, value: f32) -> Result<GpuTensor<M>> {
        self.output(shape.clone(), |y| {
            elementwise::fill(&self.inner.exec, y, value)
        })
    }
    fn reshape(&self, x: &GpuTensor<M>, shape: Shape) -> Result<GpuTensor<M>> {
        self.buf(x)?;
        if shape.numel() != x.numel() {
            return Err(Error::shape("reshape", format!("{} to {shape}", x.shape)));
        }
        Ok(GpuTensor {
            buf: x.buf.clone(),
            shape,
            generation: x.generation,
        })
    }
    fn add(&self, a: &GpuTensor<M>, b: &GpuTensor<M>) -> Result<GpuTensor<M>> {
        same_shape("add", &a.shape, &b.shape)?;
        let (ab, bb) = (self.buf(a)?, self.buf(b)?);
        self.output(a.shape.clone(), |y| {
            elementwise::add(&self.inner.exec, ab, bb, y)
        })
    }
    fn scale(&self, a: &GpuTensor<M>, c: f32) -> Result<GpuTensor<M>> {
        let x = self.buf(a)?;
        self.output(a.shape.clone(), |y| {
            elementwise::scale(&self.inner.exec, c, x, y)
        })
    }
    fn activation(&self, x: &GpuTensor<M>, act: Activation) -> Result<GpuTensor<M>> {
        let xb = self.buf(x)?;
        self.output(x.shape.clone(), |y| {
            act_k::forward(&self.inner.exec, act, xb, y)
        })
    }
    fn activation_backward(
        &self,
        act: Activation,
        x: &GpuTensor<M>,
        y: &GpuTensor<M>,
        gy: &GpuTensor<M>,
    ) -> Result<GpuTensor<M>> {
        let (xb, yb, gb) = (self.buf(x)?, self.buf(y)?, self.buf(gy)?);
        self.output(x.shape.clone(), |gx| {
            act_k::backward(&self.inner.exec, act, xb, yb, gb, gx)
        })
    }
    fn concat_dim1(&self, parts: &[&GpuTensor<M>]) -> Result<GpuTensor<M>> {
        const OP: &str = "concat_dim1";
        let first = parts
            .first()
            .ok_or_else(|| Error::invalid(OP, "no parts"))?;
        let mut dims = first.dims().to_vec();
        if dims.len() < 2 {
            return Err(Error::shape(
                OP,
                format!("rank ≥ 2 needed, got {}", first.shape),
            ));
        }
        let mut channels = 0;
        for p in parts {
            let d = p.dims();
            if d.len() != dims.len() || d[0] != dims[0] || d[2..] != dims[2..] {
                return Err(Error::shape(OP, format!("{} vs {}", first.shape, p.shape)));
            }
            channels += d[1];
        }
        dims[1] = channels;
        let bufs = parts
            .iter()
            .map(|p| self.buf(p))
            .collect::<Result<Vec<_>>>()?;
        self.output(Shape(dims.clone()), |y| {
            layout_k::concat_dim1(&self.inner.exec, dims[0], &bufs, y)
        })
    }
    fn split_dim1(
        &self,
        g: &GpuTensor<M>,
        channels: &[usize],
        need: &[bool],
    ) -> Result<Vec<Option<GpuTensor<M>>>> {
        const OP: &str = "split_dim1";
        let dims = g.dims();
        if dims.len() < 2 || channels.iter().sum::<usize>() != dims[1] {
            return Err(Error::shape(
                OP,
                format!("{} into channels {channels:?}", g.shape),
            ));
        }
        let whole = self.buf(g)?;
        let mut parts = Vec::with_capacity(channels.len());
        for &c in channels {
            let mut d = dims.to_vec();
            d[1] = c;
            parts.push(self.tensor(Shape(d))?);
        }
        {
            let mut bufs: Vec<&mut M::Buf<f32>> = parts.iter_mut().map(|p| &mut p.0).collect();
            layout_k::split_dim1(&self.inner.exec, dims[0], whole, &mut bufs)?;
        }
        Ok(parts
            .into_iter()
            .zip(need)
            .map(|((b, s, gen), &n)| n.then(|| Self::wrap(b, s, gen)))
            .collect())
    }

    fn conv(
        &self,
        x: &GpuTensor<M>,
        w: &GpuTensor<M>,
        b: Option<&GpuTensor<M>>,
        p: Conv2dParams,
        transposed: bool,
        act: Option<Activation>,
    ) -> Result<GpuTensor<M>> {
        let s = self.conv_shape(x, w, p, transposed)?;
        let y_dims = s.y_dims()?;
        let (xb, wb) = (self.buf(x)?, self.buf(w)?);
        let bb = b.map(|b| self.buf(b)).transpose()?;
        self.output(Shape::new(&y_dims), |y| {
            conv_k::forward_with(
                &self.inner.exec,
                self.inner.precision,
                &s,
                xb,
                wb,
                bb,
                act,
                y,
            )
        })
    }
    fn conv_backward(
        &self,
        x: &GpuTensor<M>,
        w: &GpuTensor<M>,
        has_bias: bool,
        gy: &GpuTensor<M>,
        p: Conv2dParams,
        transposed: bool,
        need: [bool; 3],
    ) -> Result<Grads3<GpuTensor<M>>> {
        let s = self.conv_shape(x, w, p, transposed)?;
        let y_dims = s.y_dims()?;
        same_shape("conv backward", &gy.shape, &Shape::new(&y_dims))?;
        let (xb, wb, gyb) = (self.buf(x)?, self.buf(w)?, self.buf(gy)?);
        let (exec, prec) = (&self.inner.exec, self.inner.precision);
        let dx = need[0]
            .then(|| {
                self.output(x.shape.clone(), |gx| {
                    conv_k::backward_data_with(exec, prec, &s, gyb, wb, gx)
                })
            })
            .transpose()?;
        let dw = if need[1] {
            let (mut ws, _) = self.alloc::<f32>(conv_k::workspace_len_with(&s, prec))?;
            Some(self.output(w.shape.clone(), |gw| {
                conv_k::backward_filter_with(exec, prec, &s, xb, gyb, &mut ws, gw)
            })?)
        } else {
            None
        };
        let db = (has_bias && need[2])
            .then(|| {
                self.output(Shape::new(&[y_dims[1]]), |gb| {
                    conv_k::backward_bias(exec, &s, gyb, gb)
                })
            })
            .transpose()?;
        Ok([dx, dw, db])
    }
    fn linear(
        &self,
        x: &GpuTensor<M>,
        w: &GpuTensor<M>,
        b: Option<&GpuTensor<M>>,
    ) -> Result<GpuTensor<M>> {
        const OP: &str = "linear";
        let ([n, fin], [fout, win]) = (dims2(OP, &x.shape)?, dims2(OP, &w.shape)?);
        if win != fin {
            return Err(Error::shape(
                OP,
                format!("x {} with w {}", x.shape, w.shape),
            ));
        }
        let (xb, wb) = (self.buf(x)?, self.buf(w)?);
        let bb = b.map(|b| self.buf(b)).transpose()?;
        self.output(Shape::new(&[n, fout]), |y| {
            linear_k::forward(&self.inner.exec, n, fin, fout, xb, wb, bb, y)
        })
    }
    fn linear_backward(
        &self,
        x: &GpuTensor<M>,
        w: &GpuTensor<M>,
        has_bias: bool,
        gy: &GpuTensor<M>,
        need: [bool; 3],
    ) -> Result<Grads3<GpuTensor<M>>> {
        const OP: &str = "linear backward";
        let ([n, fin], [fout, _]) = (dims2(OP, &x.shape)?, dims2(OP, &w.shape)?);
        same_shape(OP, &gy.shape, &Shape::new(&[n, fout]))?;
        let (xb, wb, gyb) = (self.buf(x)?, self.buf(w)?, self.buf(gy)?);
        let exec = &self.inner.exec;
        let dx = need[0]
            .then(|| {
                self.output(x.shape.clone(), |gx| {
                    linear_k::backward_data(exec, n, fin, fout, gyb, wb, gx)
                })
            })
            .transpose()?;
        let dw = need[1]
            .then(|| {
                self.output(w.shape.clone(), |gw| {
                    linear_k::backward_weight(exec, n, fin, fout, gyb, xb, gw)
                })
            })
            .transpose()?;
        let db = (has_bias && need[2])
            .then(|| {
                self.output(Shape::new(&[fout]), |gb| {
                    linear_k::backward_bias(exec, n, fout, gyb, gb)
                })
            })
            .transpose()?;
        Ok([dx, dw, db])
    }
    fn max_pool(&self, x: &GpuTensor<M>, kernel: usize) -> Result<(GpuTensor<M>, Rc<M::Buf<u32>>)> {
        let x_dims = dims4("max_pool2d", &x.shape)?;
        let y_dims = crate::ops::pool::max_pool2d_dims(x_dims, kernel)?;
        let xb = self.buf(x)?;
        let (mut argmax, _) = self.alloc::<u32>(y_dims.iter().product())?;
        let y = self.output(Shape::new(&y_dims), |y| {
            pool_k::forward(&self.inner.exec, x_dims, kernel, xb, y, &mut argmax)
        })?;
        Ok((y, Rc::new(argmax)))
    }
    fn max_pool_backward(
        &self,
        x: &GpuTensor<M>,
        gy: &GpuTensor<M>,
        kernel: usize,
        argmax: &Rc<M::Buf<u32>>,
    ) -> Result<GpuTensor<M>> {
        let x_dims = dims4("max_pool2d backward", &x.shape)?;
        let gyb = self.buf(gy)?;
        self.output(x.shape.clone(), |gx| {
            pool_k::backward(&self.inner.exec, x_dims, kernel, gyb, argmax, gx)
        })
    }
    fn batch_norm(
        &self,
        x: &GpuTensor<M>,
        weight: &GpuTensor<M>,
        bias: &GpuTensor<M>,
        running: &mut GpuRunningStats<M>,
        training: bool,
        p: BatchNormParams,
        act: Option<Activation>,
    ) -> Result<(GpuTensor<M>, GpuBnSaved<M>)> {
        const OP: &str = "batch_norm2d";
        let x_dims = dims4(OP, &x.shape)?;
        let c = Shape::new(&[x_dims[1]]);
        let (xb, wb, bb) = (self.buf(x)?, self.buf(weight)?, self.buf(bias)?);
        let exec = &self.inner.exec;
        if training {
            let (mut mean, cs, g1) = self.tensor(c.clone())?;
            let (mut invstd, _, g2) = self.tensor(c.clone())?;
            let y = self.output(x.shape.clone(), |y| {
                bn_k::forward_train(
                    exec,
                    x_dims,
                    xb,
                    wb,
                    bb,
                    p.eps,
                    p.momentum,
                    act,
                    y,
                    &mut mean,
                    &mut invstd,
                    &mut running.mean,
                    &mut running.var,
                )
            })?;
            let saved = GpuBnSaved::Batch {
                mean: Self::wrap(mean, cs.clone(), g1),
                invstd: Self::wrap(invstd, cs, g2),
            };
            Ok((y, saved))
        } else {
            let y = self.output(x.shape.clone(), |y| {
                bn_k::forward_eval(
                    exec,
                    x_dims,
                    xb,
                    wb,
                    bb,
                    &running.mean,
                    &running.var,
                    p.eps,
                    act,
                    y,
                )
            })?;
            let copy = |b: &M::Buf<f32>| self.output(c.clone(), |y| elementwise::copy(exec, b, y));
            let saved = GpuBnSaved::Running {
                mean: copy(&running.mean)?,
                var: copy(&running.var)?,
                eps: p.eps,
            };
            Ok((y, saved))
        }
    }
    fn batch_norm_backward(
        &self,
        x: &GpuTensor<M>,
        weight: &GpuTensor<M>,
        saved: &GpuBnSaved<M>,
        act: Option<Activation>,
        y: &GpuTensor<M>,
        gy: &GpuTensor<M>,
        need: [bool; 3],
    ) -> Result<Grads3<GpuTensor<M>>> {
        const OP: &str = "batch_norm2d backward";
        let x_dims = dims4(OP, &x.shape)?;
        same_shape(OP, &gy.shape, &x.shape)?;
        let (xb, wb, gyb) = (self.buf(x)?, self.buf(weight)?, self.buf(gy)?);
        // The fused activation's backward runs inside the batch-norm kernel, from y.
        let fused = match act {
            Some(act) => {
                same_shape(OP, &y.shape, &x.shape)?;
                Some(bn_k::Fused {
                    act,
                    y: self.buf(y)?,
                })
            }
            None => None,
        };
        let c = Shape::new(&[x_dims[1]]);
        let mut dx = need[0].then(|| self.tensor(x.shape.clone())).transpose()?;
        let mut dw = need[1].then(|| self.tensor(c.clone())).transpose()?;
        let mut db = need[2].then(|| self.tensor(c.clone())).transpose()?;
        let exec = &self.inner.exec;
        match saved {
            GpuBnSaved::Batch { mean, invstd } => bn_k::backward_train(
                exec,
                x_dims,
                xb,
                wb,
                self.buf(mean)?,
                self.buf(invstd)?,
                fused,
                gyb,
                dx.as_mut().map(|t| &mut t.0),
                dw.as_mut().map(|t| &mut t.0),
                db.as_mut().map(|t| &mut t.0),
            )?,
            GpuBnSaved::Running { mean, var, eps } => bn_k::backward_eval(
                exec,
                x_dims,
                xb,
                wb,
                self.buf(mean)?,
                self.buf(var)?,
                *eps,
                fused,
                gyb,
                dx.as_mut().map(|t| &mut t.0),
                dw.as_mut().map(|t| &mut t.0),
                db.as_mut().map(|t| &mut t.0),
            )?,
        }
        let wrap = |t: Option<(M::Buf<f32>, Shape, u64)>| t.map(|(b, s, g)| Self::wrap(b, s, g));
        Ok([wrap(dx), wrap(dw), wrap(db)])
    }

    fn cross_entropy(
        &self,
        logits: &GpuTensor<M>,
        labels: &GpuLabels<M>,
        want_grad: bool,
    ) -> Result<(GpuTensor<M>, Option<GpuTensor<M>>)> {
        let dims = dims2("cross_entropy", &logits.shape)?;
        self.check_generation(labels.generation)?;
        let lb = self.buf(logits)?;
        let exec = &self.inner.exec;
        if !loss_k::fits_one_block(logits.numel()) {
            // Too large for one block: per-row terms + the tree sum (multi-block).
            let (mut rows, _) = self.alloc::<f32>(dims[0])?;
            let loss = self.output(Shape::new(&[1]), |out| {
                loss_k::cross_entropy_forward(exec, lb, &labels.buf, dims, &mut rows, out)
            })?;
            return Ok((loss, None));
        }
        // One launch: the loss and (when wanted) softmax − onehot for the backward.
        let mut grad = want_grad
            .then(|| self.tensor(logits.shape.clone()))
            .transpose()?;
        let loss = self.output(Shape::new(&[1]), |out| {
            let g = grad.as_mut().map(|buf| &mut buf.0);
            loss_k::cross_entropy_fused(exec, lb, &labels.buf, dims, out, g)
        })?;
        Ok((loss, grad.map(|(b, s, g)| Self::wrap(b, s, g))))
    }
    fn cross_entropy_backward(
        &self,
        logits: &GpuTensor<M>,
        labels: &GpuLabels<M>,
        saved: Option<&GpuTensor<M>>,
        g: &GpuTensor<M>,
    ) -> Result<GpuTensor<M>> {
        let dims = dims2("cross_entropy", &logits.shape)?;
        self.check_generation(labels.generation)?;
        let (lb, gb) = (self.buf(logits)?, self.buf(g)?);
        let exec = &self.inner.exec;
        if let Some(saved) = saved {
            same_shape("cross_entropy backward", &saved.shape, &logits.shape)?;
            let sb = self.buf(saved)?;
            return self.output(logits.shape.clone(), |dx| {
                loss_k::grad_scale(exec, sb, gb, dims[0] as f32, dx)
            });
        }
        self.output(logits.shape.clone(), |dx| {
            loss_k::cross_entropy_backward(exec, lb, &labels.buf, dims, gb, dx)
        })
    }
    fn bce_with_logits(
        &self,
        logits: &GpuTensor<M>,
        target: &BceTarget<f32>,
        want_grad: bool,
    ) -> Result<(GpuTensor<M>, Option<GpuTensor<M>>)> {
        let xb = self.buf(logits)?;
        let exec = &self.inner.exec;
        if !loss_k::fits_one_block(logits.numel()) {
            // Too large for one block: per-element terms + the tree sum (multi-block).
            let (mut terms, _) = self.alloc::<f32>(logits.numel())?;
            let loss = self.with_target(target, |t| {
                self.output(Shape::new(&[1]), |out| {
                    loss_k::bce_with_logits_forward(exec, xb, t, &mut terms, out)
                })
            })?;
            return Ok((loss, None));
        }
        let mut grad = want_grad
            .then(|| self.tensor(logits.shape.clone()))
            .transpose()?;
        let loss = self.with_target(target, |t| {
            self.output(Shape::new(&[1]), |out| {
                let g = grad.as_mut().map(|buf| &mut buf.0);
                loss_k::bce_fused(exec, xb, t, out, g)
            })
        })?;
        Ok((loss, grad.map(|(b, s, g)| Self::wrap(b, s, g))))
    }
    fn bce_with_logits_backward(
        &self,
        logits: &GpuTensor<M>,
        target: &BceTarget<f32>,
        saved: Option<&GpuTensor<M>>,
        g: &GpuTensor<M>,
    ) -> Result<GpuTensor<M>> {
        let (xb, gb) = (self.buf(logits)?, self.buf(g)?);
        let exec = &self.inner.exec;
        if let Some(saved) = saved {
            same_shape("bce_with_logits backward", &saved.shape, &logits.shape)?;
            let sb = self.buf(saved)?;
            return self.output(logits.shape.clone(), |dx| {
                loss_k::grad_scale(exec, sb, gb, logits.numel() as f32, dx)
            });
        }
        self.with_target(target, |t| {
            self.output(logits.shape.clone(), |dx| {
                loss_k::bce_with_logits_backward(exec, xb, t, gb, dx)
            })
        })
    }

    fn adam_update(
        &self,
        params: &mut [&mut GpuTensor<M>],
        grads: &[GpuTensor<M>],
        states: &mut [GpuAdamState<M>],
        cfg: &AdamConfig,
        slot: usize,
    ) -> Result<()> {
        const OP: &str = "adam";
        super::check_adam_counts(params.len(), grads.len(), states.len())?;
        let Some(first) = states.first() else {
            return Ok(());
        };
        let step = first.step.get();
        if states.iter().any(|s| s.step.get() != step) {
            return Err(Error::invalid(
                OP,
                "the network's parameters are at different Adam steps",
            ));
        }
        let next = step
            .checked_add(1)
            .ok_or_else(|| Error::invalid(OP, "step counter overflow"))?;
        cfg.validate()?;
        let now = AdamScalars::<f32>::new(next, cfg);
        let max_n = self.adam_segments(slot, params, grads, states)?;
        let tables = self.inner.adam_segments.borrow();
        let segments = &tables[&slot].1;
        let schedule = self.inner.schedule.borrow();
        let scalars = match schedule.as_ref() {
            Some(s) => {
                // The table must say what the host computes now: the replays read it.
                let entry = s
                    .adam_host
                    .get(s.host_step)
                    .and_then(|row| row.get(slot))
                    .ok_or_else(|| {
                        Error::invalid(
                            OP,
                            format!(
                                "slot {slot} at entry {} is outside the schedule",
                                s.host_step
                            ),
                        )
                    })?;
                if *entry != AdamStepScalars::of(&now) {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "the schedule's scalars for slot {slot} at entry {} ({entry:?}) are \
                             not this step's ({:?}): the schedule was built for other steps or \
                             learning rates",
                            s.host_step,
                            AdamStepScalars::of(&now)
                        ),
                    ));
                }
                StepScalars::Scheduled {
                    fixed: now,
                    table: &s.adam,
                    slots: s.slots,
                    slot,
                    step: &s.step,
                }
            }
            None => StepScalars::Now(now),
        };
        // SAFETY: the segment table was built just now (or found equal) from these parameter,
        // gradient and moment buffers, all alive for the call and holding n floats each; the
        // parameters are exclusively borrowed and distinct (one Param each), the moments are
        // the states' own buffers.
        unsafe { adam_k::step_multi(&self.inner.exec, segments, max_n, scalars)? };
        for s in states.iter_mut() {
            s.step.set(next);
        }
        if let Some(c) = self.inner.capturing.borrow_mut().as_mut() {
            c.adam_steps.extend(states.iter().map(|s| s.step.clone()));
        }
        Ok(())
    }
}
