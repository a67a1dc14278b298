//! Batches for training and evaluation.
//!
//! On the way in every image is resized to 32×32 (Pillow-exact bilinear, see [`super::resize`]),
//! gray is replicated to RGB, and pixels are normalized as the authors' transforms do:
//! `x = (p/255 − 0.44) / 0.19` in f32 (`ToTensor` then `Normalize`). D sees real images in
//! [−1, 1], computed from the normalized batch as the authors' trainer does:
//! `((x·0.19 + 0.44) − 0.5)·2` (equal to p/255·2 − 1 up to f32 rounding).
//!
//! Training batches follow a seeded shuffle per epoch (splitmix64 Fisher–Yates for
//! (seed, epoch), see [`super::perm`]) and drop the last incomplete batch; evaluation batches
//! are a full pass in dataset order, the last one possibly smaller.
//!
//! On the CPU a background thread prepares the next batch while the current one is used
//! ([`Batcher::epoch`]); batches arrive in a fixed order, so results do not depend on timing.
//! (The GPU path gathers on the device from the same contiguous u8 images.)

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::dataset::{Images, Split};
use super::error::{DataError, Result};
use super::perm;
use super::resize::Resizer;
use super::{IMAGE_SIZE, MEAN, STD};

/// Values per prepared image: 3×32×32.
pub const IMAGE_VALUES: usize = 3 * IMAGE_SIZE * IMAGE_SIZE;

/// A u8 pixel normalized as the classifier sees it: `(p/255 − 0.44) / 0.19`, in f32.
pub fn normalize(p: u8) -> f32 {
    (p as f32 / 255.0 - MEAN) / STD
}

/// A normalized value mapped to the [−1, 1] range D sees: `((x·0.19 + 0.44) − 0.5)·2`, in f32.
pub fn to_d_range(x: f32) -> f32 {
    ((x * STD + MEAN) - 0.5) * 2.0
}

fn lut() -> [f32; 256] {
    let mut t = [0f32; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = normalize(i as u8);
    }
    t
}

/// Turns stored images (any size, gray or RGB) into 3×32×32 u8 images.
#[derive(Clone, Debug)]
pub struct Prep {
    c: usize,
    h: usize,
    w: usize,
    resizer: Option<Resizer>,
}

impl Prep {
    pub fn new(images: &Images) -> Prep {
        let [_, c, h, w] = images.dims();
        let resizer = (h != IMAGE_SIZE || w != IMAGE_SIZE)
            .then(|| Resizer::new(h, w, IMAGE_SIZE, IMAGE_SIZE));
        Prep { c, h, w, resizer }
    }

    /// Resizes and expands one stored image (`C×H×W`) into `out` (3×32×32).
    pub fn rgb32(&self, src: &[u8], out: &mut [u8], tmp: &mut Vec<u8>) {
        let plane = IMAGE_SIZE * IMAGE_SIZE;
        let in_plane = self.h * self.w;
        for ch in 0..self.c {
            let s = &src[ch * in_plane..(ch + 1) * in_plane];
            let d = &mut out[ch * plane..(ch + 1) * plane];
            match &self.resizer {
                Some(r) => r.plane(s, d, tmp),
                None => d.copy_from_slice(s),
            }
        }
        if self.c == 1 {
            let (first, rest) = out.split_at_mut(plane);
            rest[..plane].copy_from_slice(first);
            rest[plane..2 * plane].copy_from_slice(first);
        }
    }
}

/// Image `i` of a split as the networks see it before normalization: 3×32×32 u8.
pub fn rgb32_image(images: &Images, i: usize) -> Vec<u8> {
    let mut out = vec![0u8; IMAGE_VALUES];
    Prep::new(images).rgb32(images.image(i), &mut out, &mut Vec::new());
    out
}

/// One batch: normalized images, labels, and which dataset rows they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// B×3×32×32, normalized with mean 0.44 / std 0.19.
    pub images: Vec<f32>,
    /// B labels in 0–9.
    pub labels: Vec<u32>,
    /// The row of each image in its split.
    pub indices: Vec<usize>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// The shape of [`Batch::images`]: [B, 3, 32, 32].
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), 3, IMAGE_SIZE, IMAGE_SIZE]
    }
    /// The images rescaled to [−1, 1], as D sees real images.
    pub fn d_view(&self) -> Vec<f32> {
        self.images.iter().map(|&x| to_d_range(x)).collect()
    }
    /// The images as a tensor [B, 3, 32, 32].
    pub fn images_tensor(&self) -> crate::Result<crate::Tensor> {
        crate::Tensor::new(crate::Shape(self.shape().to_vec()), self.images.clone())
    }
    /// The [−1, 1] view as a tensor [B, 3, 32, 32].
    pub fn d_tensor(&self) -> crate::Result<crate::Tensor> {
        crate::Tensor::new(crate::Shape(self.shape().to_vec()), self.d_view())
    }
}

/// How a [`Batcher`] walks a split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// A new seeded shuffle every epoch, full batches only (drop-last).
    Train { seed: u64 },
    /// Dataset order, every image once, the last batch possibly smaller.
    Eval,
}

/// Cuts a split into batches.
#[derive(Clone, Debug)]
pub struct Batcher {
    split: Split,
    batch_size: usize,
    order: Order,
    prep: Arc<Prep>,
    lut: Arc<[f32; 256]>,
}

impl Batcher {
    /// Shuffled full batches of `batch_size` for training.
    pub fn train(split: &Split, batch_size: usize, seed: u64) -> Result<Batcher> {
        Self::new(split, batch_size, Order::Train { seed })
    }

    /// A full pass in order for evaluation.
    pub fn eval(split: &Split, batch_size: usize) -> Result<Batcher> {
        Self::new(split, batch_size, Order::Eval)
    }

    pub fn new(split: &Split, batch_size: usize, order: Order) -> Result<Batcher> {
        if batch_size == 0 {
            return Err(DataError::Argument("batch size must be at least 1".into()));
        }
        if matches!(order, Order::Train { .. }) && split.len() < batch_size {
            return Err(DataError::invalid(
                split.images.origin(),
                format!(
                    "holds {} images, fewer than one training batch of {batch_size}",
                    split.len()
                ),
            ));
        }
        Ok(Batcher {
            split: split.clone(),
            batch_size,
            order,
            prep: Arc::new(Prep::new(&split.images)),
            lut: Arc::new(lut()),
        })
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
    pub fn split(&self) -> &Split {
        &self.split
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        let n = self.split.len();
        match self.order {
            Order::Train { .. } => n / self.batch_size,
            Order::Eval => n.div_ceil(self.batch_size),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The order in which an epoch visits the split (before cutting into batches).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        match self.order {
            Order::Train { seed } => perm::permutation(self.split.len(), seed, epoch),
            Order::Eval => (0..self.split.len()).collect(),
        }
    }

    /// The rows of each batch of an epoch.
    pub fn batch_indices(&self, epoch: u64) -> Vec<Vec<usize>> {
        let order = self.order(epoch);
        order
            .chunks(self.batch_size)
            .take(self.len())
            .map(|c| c.to_vec())
            .collect()
    }

    /// Prepares the batch of these rows (synchronously). Panics if a row is out of range
    /// (rows come from the caller, not from file data).
    pub fn make_batch(&self, indices: &[usize]) -> Batch {
        let mut images = vec![0f32; indices.len() * IMAGE_VALUES];
        let mut rgb = vec![0u8; IMAGE_VALUES];
        let mut tmp = Vec::new();
        let labels = self.split.labels.as_slice();
        for (dst, &i) in images.chunks_exact_mut(IMAGE_VALUES).zip(indices) {
            self.prep
                .rgb32(self.split.images.image(i), &mut rgb, &mut tmp);
            for (d, &p) in dst.iter_mut().zip(&rgb) {
                *d = self.lut[p as usize];
            }
        }
        Batch {
            images,
            labels: indices.iter().map(|&i| labels[i] as u32).collect(),
            indices: indices.to_vec(),
        }
    }

    /// The batches of an epoch, prepared one ahead on a background thread, in a fixed order.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let batches = self.batch_indices(epoch);
        let remaining = batches.len();
        let (tx, rx) = sync_channel(1);
        let me = self.clone();
        let handle = std::thread::Builder::new()
            .name("gtadapt-batcher".into())
            .spawn(move || {
                for idx in batches {
                    if tx.send(me.make_batch(&idx)).is_err() {
                        return; // the consumer stopped early
                    }
                }
            });
        match handle {
            Ok(h) => Epoch {
                rx: Some(rx),
                handle: Some(h),
                remaining,
                inline: None,
            },
            // No thread could be started: prepare batches on the caller's thread instead.
            Err(_) => Epoch {
                rx: None,
                handle: None,
                remaining,
                inline: Some((self.clone(), self.batch_indices(epoch).into_iter())),
            },
        }
    }
}

/// The batches of one epoch (see [`Batcher::epoch`]).
pub struct Epoch {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
    remaining: usize,
    inline: Option<(Batcher, std::vec::IntoIter<Vec<usize>>)>,
}

impl Iterator for Epoch {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        let b = if let Some((b, it)) = &mut self.inline {
            it.next().map(|idx| b.make_batch(&idx))
        } else {
            match self.rx.as_ref().map(|rx| rx.recv()) {
                Some(Ok(b)) => Some(b),
                _ => {
                    // The producer ended; if batches are missing it panicked: re-raise that.
                    if self.remaining > 0 {
                        if let Some(Err(p)) = self.handle.take().map(|h| h.join()) {
                            std::panic::resume_unwind(p);
                        }
                    }
                    None
                }
            }
        };
        if b.is_some() {
            self.remaining -= 1;
        }
        b
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Epoch {}

impl Drop for Epoch {
    fn drop(&mut self) {
        // Closing the channel stops the producer at its next send; then wait for it.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
