//! Launch of kernels/data.cu: the batch gather from a u8 dataset resident on the device
//! (index, Pillow-exact bilinear resize to 32×32, gray→RGB, normalization, and the [−1, 1]
//! view), bit-identical to [`crate::data::batch`] (`Prep::rgb32` then `normalize`,
//! `to_d_range`).

use super::{check_len, count, elements, invalid, launch};
use crate::data::resize::Resizer;
use crate::data::IMAGE_SIZE;
use crate::gpu::{Buffer, GpuError, Memory};

#[repr(C)]
#[derive(Clone, Copy)]
struct GatherParams {
    images: u64,
    indices: u64,
    out: u64,
    out_d: u64,
    h_bounds: u64,
    h_k: u64,
    v_bounds: u64,
    v_k: u64,
    step: u64,
    labels: u64,
    labels_out: u64,
    b: u32,
    c: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    h_ksize: u32,
    v_ksize: u32,
    mode: u32,
    n_images: u32,
    steps: u32,
    pad: u32,
}
const _: () = assert!(std::mem::size_of::<GatherParams>() == 136);

/// A dataset's images on the device, with the resize tables to 32×32.
pub struct DeviceImages<M: Memory> {
    pixels: M::Buf<u8>,
    dims: [usize; 4],
    h_bounds: M::Buf<i32>,
    h_k: M::Buf<i32>,
    v_bounds: M::Buf<i32>,
    v_k: M::Buf<i32>,
    h_ksize: usize,
    v_ksize: usize,
    /// 0 copy, 1 horizontal then vertical, 2 vertical then horizontal.
    mode: u32,
    /// The class of each image (u8), when gathers also produce labels.
    labels: Option<M::Buf<u8>>,
}

impl<M: Memory> DeviceImages<M> {
    /// Uploads `pixels`, N×C×H×W u8 (C = 1 or 3, H, W ≥ 1).
    pub fn new(exec: &M, pixels: &[u8], dims: [usize; 4]) -> Result<Self, GpuError> {
        const K: &str = "gather_batch";
        let [n, c, h, w] = dims;
        if c != 1 && c != 3 {
            return Err(invalid(K, format!("{c} channels (1 or 3 expected)")));
        }
        if h == 0 || w == 0 {
            return Err(invalid(K, format!("empty images {h}×{w}")));
        }
        if n.checked_mul(c * h * w) != Some(pixels.len()) {
            return Err(invalid(
                K,
                format!("{} bytes for dims {dims:?}", pixels.len()),
            ));
        }
        count(K, n)?;
        let r = Resizer::new(h, w, IMAGE_SIZE, IMAGE_SIZE);
        let (ht, vt) = (r.horizontal_tables(), r.vertical_tables());
        let mode = if r.is_identity() {
            0
        } else if r.vertical_first() {
            2
        } else {
            1
        };
        Ok(DeviceImages {
            pixels: exec.upload(pixels)?,
            dims,
            h_bounds: exec.upload(&ht.bounds)?,
            h_k: exec.upload(&ht.k)?,
            v_bounds: exec.upload(&vt.bounds)?,
            v_k: exec.upload(&vt.k)?,
            h_ksize: ht.ksize,
            v_ksize: vt.ksize,
            mode,
            labels: None,
        })
    }

    /// Uploads a split's images.
    pub fn from_images(exec: &M, images: &crate::data::dataset::Images) -> Result<Self, GpuError> {
        Self::new(exec, images.pixels(), images.dims())
    }

    /// The same images with their labels (one per image) on the device too, so that a gather
    /// also produces the batch's labels.
    pub fn with_labels(mut self, exec: &M, labels: &[u8]) -> Result<Self, GpuError> {
        check_len_host("gather_batch", "labels", labels.len(), self.dims[0])?;
        self.labels = Some(exec.upload(labels)?);
        Ok(self)
    }

    /// An identity for these images (their device address).
    pub fn id(&self) -> u64 {
        self.pixels.device_ptr()
    }

    /// N×C×H×W.
    pub fn dims(&self) -> [usize; 4] {
        self.dims
    }
}

fn check_len_host(kernel: &str, what: &str, len: usize, expected: usize) -> Result<(), GpuError> {
    if len == expected {
        Ok(())
    } else {
        Err(invalid(
            kernel,
            format!("{len} {what} for {expected} images"),
        ))
    }
}

/// Which rows a gather takes.
pub enum Rows<'a, M: Memory> {
    /// These B rows.
    Now(&'a M::Buf<u32>),
    /// Rows `[s·batch, (s+1)·batch)` of `table` (an epoch's order, `steps·batch` rows), `s` the
    /// value of the device cursor `step` when the kernel runs (a schedule; see
    /// src/backend/gpu.rs). A cursor past the table gives NaN values.
    Scheduled {
        table: &'a M::Buf<u32>,
        batch: usize,
        step: &'a M::Buf<u32>,
    },
}

/// Gathers the images of `rows` (each < N; an index out of range gives NaN values) into `out`
/// [B, 3, 32, 32] normalized, into `out_d` (when given) the [−1, 1] view D sees, and into
/// `labels` (when given; the images must have been uploaded with their labels) the labels.
pub fn gather<M: Memory>(
    exec: &M,
    images: &DeviceImages<M>,
    rows: Rows<'_, M>,
    out: &mut M::Buf<f32>,
    out_d: Option<&mut M::Buf<f32>>,
    labels: Option<&mut M::Buf<u32>>,
) -> Result<(), GpuError> {
    const K: &str = "gather_batch";
    let (indices, b, step, steps) = match rows {
        Rows::Now(indices) => (indices, indices.len(), 0, 1),
        Rows::Scheduled { table, batch, step } => {
            if batch == 0 || table.len() % batch != 0 {
                return Err(invalid(
                    K,
                    format!("a table of {} rows for batches of {batch}", table.len()),
                ));
            }
            check_len(K, "step", step, 1)?;
            (table, batch, step.device_ptr(), table.len() / batch)
        }
    };
    let (labels_in, labels_out) = match labels {
        Some(out) => {
            check_len(K, "labels", out, b)?;
            let src = images
                .labels
                .as_ref()
                .ok_or_else(|| invalid(K, "labels asked of images uploaded without them"))?;
            (src.device_ptr(), out.device_ptr())
        }
        None => (0, 0),
    };
    let len = b * 3 * IMAGE_SIZE * IMAGE_SIZE;
    check_len(K, "out", out, len)?;
    let out_d = match out_d {
        Some(d) => {
            check_len(K, "out_d", d, len)?;
            d.device_ptr()
        }
        None => 0,
    };
    let [n, c, h, w] = images.dims;
    let p = GatherParams {
        images: images.pixels.device_ptr(),
        indices: indices.device_ptr(),
        out: out.device_ptr(),
        out_d,
        h_bounds: images.h_bounds.device_ptr(),
        h_k: images.h_k.device_ptr(),
        v_bounds: images.v_bounds.device_ptr(),
        v_k: images.v_k.device_ptr(),
        step,
        labels: labels_in,
        labels_out,
        b: count(K, b)?,
        c: c as u32,
        h: count(K, h)?,
        w: count(K, w)?,
        oh: IMAGE_SIZE as u32,
        ow: IMAGE_SIZE as u32,
        h_ksize: images.h_ksize as u32,
        v_ksize: images.v_ksize as u32,
        mode: images.mode,
        n_images: n as u32,
        steps: count(K, steps)?,
        pad: 0,
    };
    // SAFETY: out (and out_d) hold B·3·32·32 floats and labels_out B values (checked) and the
    // kernel writes indices below that; it reads indices[b < B] (under a schedule: of row
    // block *step < steps, checked in the kernel, of a table of steps·B rows), labels and image
    // rows only for indices < N (checked in the
    // kernel) within the N·C·H·W pixels, and the resize tables built for exactly these sizes
    // (their taps stay inside the input axis and their own length).
    unsafe { launch(exec, K, elements(len), &p) }
}
