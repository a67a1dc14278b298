//! `data preview`: a labelled grid of images as a PNG a person can look at.
//!
//! Images are shown as the networks receive them (resized to 32×32, gray expanded to RGB),
//! enlarged by an integer factor, each with its label drawn underneath in the report canvas's
//! built-in 3×5 pixel font.

use std::path::Path;

use super::batch::{Prep, IMAGE_VALUES};
use super::dataset::Split;
use super::error::{DataError, Result};
use super::IMAGE_SIZE;
use crate::report::canvas::Canvas;

const BACKGROUND: [u8; 3] = [32, 32, 32];
const INK: [u8; 3] = [255, 255, 255];
const PAD: usize = 4;

/// Layout of a preview grid.
#[derive(Clone, Copy, Debug)]
pub struct GridOptions {
    pub columns: usize,
    /// Enlargement of each 32×32 image (nearest neighbour).
    pub scale: usize,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions {
            columns: 10,
            scale: 2,
        }
    }
}

/// Renders the images at `rows` of `split` with their labels.
pub fn render_grid(split: &Split, rows: &[usize], opts: GridOptions) -> Canvas {
    let cols = opts.columns.max(1);
    let s = opts.scale.max(1);
    let side = IMAGE_SIZE * s;
    let font = s.max(2);
    let label_h = 5 * font + 4;
    let cell_w = side + PAD;
    let cell_h = side + label_h + PAD;
    let grid_rows = rows.len().div_ceil(cols).max(1);
    let mut img = Canvas::new(PAD + cols * cell_w, PAD + grid_rows * cell_h, BACKGROUND);
    let prep = Prep::new(&split.images);
    let mut rgb = vec![0u8; IMAGE_VALUES];
    let mut tmp = Vec::new();
    let plane = IMAGE_SIZE * IMAGE_SIZE;
    for (k, &r) in rows.iter().enumerate() {
        prep.rgb32(split.images.image(r), &mut rgb, &mut tmp);
        let (x0, y0) = (PAD + (k % cols) * cell_w, PAD + (k / cols) * cell_h);
        for y in 0..side {
            for x in 0..side {
                let p = (y / s) * IMAGE_SIZE + x / s;
                let c = [rgb[p], rgb[plane + p], rgb[2 * plane + p]];
                img.set((x0 + x) as i64, (y0 + y) as i64, c);
            }
        }
        let label = split.labels.as_slice()[r].to_string();
        let x = (x0 + (side - 3 * font) / 2) as i64;
        img.text(x, (y0 + side + 2) as i64, &label, font as i64, INK);
    }
    img
}

/// Writes a grid of the first `count` images of `split` to `path`.
pub fn preview_split(split: &Split, count: usize, opts: GridOptions, path: &Path) -> Result<usize> {
    if count == 0 {
        return Err(DataError::Argument(
            "the preview needs at least one image".into(),
        ));
    }
    let n = count.min(split.len());
    let rows: Vec<usize> = (0..n).collect();
    render_grid(split, &rows, opts)
        .write_png(path)
        .map_err(|e| DataError::invalid(path, e))?;
    Ok(n)
}
