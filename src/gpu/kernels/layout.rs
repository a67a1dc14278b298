//! Launches of kernels/layout.cu: concatenation along dim 1 and its split (the CPU reference
//! is [`crate::ops::layout`]). A part is given with its per-item size `C_i·prod(rest)`; all
//! parts share the item count N.

use super::{check_len, count, elements, invalid, launch};
use crate::gpu::{Buffer, GpuError, Memory};

#[repr(C)]
#[derive(Clone, Copy)]
struct LayoutPartParams {
    src: u64,
    dst: u64,
    items: u32,
    part_block: u32,
    whole_block: u32,
    offset: u32,
}
const _: () = assert!(std::mem::size_of::<LayoutPartParams>() == 32);

/// Per-item sizes and offsets of the parts, checked against the buffers.
fn plan(
    kernel: &str,
    items: usize,
    lens: &[usize],
    whole_len: usize,
) -> Result<(Vec<usize>, usize), GpuError> {
    if lens.is_empty() {
        return Err(invalid(kernel, "no parts"));
    }
    if items == 0 {
        return Err(invalid(kernel, "zero items"));
    }
    let mut blocks = Vec::with_capacity(lens.len());
    for (i, &len) in lens.iter().enumerate() {
        if len % items != 0 {
            return Err(invalid(
                kernel,
                format!("part {i} holds {len} values, not a multiple of {items} items"),
            ));
        }
        blocks.push(len / items);
    }
    let whole_block: usize = blocks.iter().sum();
    if whole_block * items != whole_len {
        return Err(invalid(
            kernel,
            format!(
                "the parts hold {} values, the whole {whole_len}",
                whole_block * items
            ),
        ));
    }
    count(kernel, whole_len)?;
    Ok((blocks, whole_block))
}

/// `out = concat(parts, dim 1)`: `parts[i]` is [items][C_i·rest], `out` [items][ΣC_i·rest].
pub fn concat_dim1<M: Memory>(
    exec: &M,
    items: usize,
    parts: &[&M::Buf<f32>],
    out: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "concat_part";
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    let (blocks, whole_block) = plan(K, items, &lens, out.len())?;
    let mut offset = 0;
    for (part, &block) in parts.iter().zip(&blocks) {
        check_len(K, "part", *part, items * block)?;
        let p = LayoutPartParams {
            src: part.device_ptr(),
            dst: out.device_ptr(),
            items: items as u32,
            part_block: block as u32,
            whole_block: whole_block as u32,
            offset: offset as u32,
        };
        // SAFETY: the part holds items·block floats and out items·whole_block (checked, all
        // below 2^32); offset + block ≤ whole_block, so every index is in bounds.
        unsafe { launch(exec, K, elements(items * block), &p) }?;
        offset += block;
    }
    Ok(())
}

/// The inverse (concat's backward): `parts[i] = whole[:, columns of part i]`.
pub fn split_dim1<M: Memory>(
    exec: &M,
    items: usize,
    whole: &M::Buf<f32>,
    parts: &mut [&mut M::Buf<f32>],
) -> Result<(), GpuError> {
    const K: &str = "split_part";
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    let (blocks, whole_block) = plan(K, items, &lens, whole.len())?;
    let mut offset = 0;
    for (part, &block) in parts.iter_mut().zip(&blocks) {
        let p = LayoutPartParams {
            src: whole.device_ptr(),
            dst: part.device_ptr(),
            items: items as u32,
            part_block: block as u32,
            whole_block: whole_block as u32,
            offset: offset as u32,
        };
        // SAFETY: as in concat_dim1, with source and destination swapped.
        unsafe { launch(exec, K, elements(items * block), &p) }?;
        offset += block;
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy)]
struct OneHotParams {
    labels: u64,
    y: u64,
    n: u32,
    classes: u32,
}
const _: () = assert!(std::mem::size_of::<OneHotParams>() == 24);

/// `y` [N, classes] = one-hot rows of `labels` [N] (a label ≥ classes gives a NaN row), as
/// G's class input.
pub fn one_hot<M: Memory>(
    exec: &M,
    labels: &M::Buf<u32>,
    classes: usize,
    y: &mut M::Buf<f32>,
) -> Result<(), GpuError> {
    const K: &str = "one_hot";
    let n = labels.len();
    if classes == 0 {
        return Err(invalid(K, "zero classes"));
    }
    let len = n
        .checked_mul(classes)
        .ok_or_else(|| invalid(K, "size overflow"))?;
    check_len(K, "y", y, len)?;
    let p = OneHotParams {
        labels: labels.device_ptr(),
        y: y.device_ptr(),
        n: count(K, n)?,
        classes: count(K, classes)?,
    };
    // SAFETY: labels holds n values and y n·classes (checked); the kernel touches i < n·classes.
    unsafe { launch(exec, K, elements(len), &p) }
}
