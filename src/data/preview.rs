//! `data preview`: a labelled grid of images as a PNG a person can look at.
//!
//! Images are shown as the networks receive them (resized to 32×32, gray expanded to RGB),
//! enlarged by an integer factor, each with its label drawn underneath in a built-in 3×5 pixel
//! digit font.

use std::path::Path;

use super::batch::{Prep, IMAGE_VALUES};
use super::dataset::Split;
use super::error::{DataError, Result};
use super::idx::write_atomic;
use super::IMAGE_SIZE;

/// 3×5 bitmaps of the digits 0–9, one row per byte (bit 2 = left column).
const FONT: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b010, 0b010, 0b010],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

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

/// An RGB image, row-major, 3 bytes per pixel.
#[derive(Clone, Debug)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Rgb {
    fn new(width: usize, height: usize) -> Rgb {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            pixels.extend_from_slice(&BACKGROUND);
        }
        Rgb {
            width,
            height,
            pixels,
        }
    }
    fn put(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let o = (y * self.width + x) * 3;
            self.pixels[o..o + 3].copy_from_slice(&c);
        }
    }
    /// The colour at (x, y).
    pub fn get(&self, x: usize, y: usize) -> [u8; 3] {
        let o = (y * self.width + x) * 3;
        [self.pixels[o], self.pixels[o + 1], self.pixels[o + 2]]
    }
}

/// Draws the decimal digits of `n` with the 3×5 font, each font pixel `s`×`s`, top-left at (x, y).
fn draw_number(img: &mut Rgb, n: usize, x: usize, y: usize, s: usize) {
    for (k, ch) in n.to_string().bytes().enumerate() {
        let glyph = &FONT[(ch - b'0') as usize];
        let gx = x + k * 4 * s;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3 {
                if bits & (0b100 >> col) != 0 {
                    for dy in 0..s {
                        for dx in 0..s {
                            img.put(gx + col * s + dx, y + row * s + dy, INK);
                        }
                    }
                }
            }
        }
    }
}

/// Renders the images at `rows` of `split` with their labels.
pub fn render_grid(split: &Split, rows: &[usize], opts: GridOptions) -> Rgb {
    let cols = opts.columns.max(1);
    let s = opts.scale.max(1);
    let side = IMAGE_SIZE * s;
    let font = s.max(2);
    let label_h = 5 * font + 4;
    let cell_w = side + PAD;
    let cell_h = side + label_h + PAD;
    let grid_rows = rows.len().div_ceil(cols).max(1);
    let mut img = Rgb::new(PAD + cols * cell_w, PAD + grid_rows * cell_h);
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
                img.put(x0 + x, y0 + y, [rgb[p], rgb[plane + p], rgb[2 * plane + p]]);
            }
        }
        let label = split.labels.as_slice()[r] as usize;
        let text_w = 3 * font;
        draw_number(
            &mut img,
            label,
            x0 + (side - text_w) / 2,
            y0 + side + 2,
            font,
        );
    }
    img
}

/// Writes an RGB image as an 8-bit PNG, atomically.
pub fn write_png(path: &Path, img: &Rgb) -> Result<()> {
    let (w, h) = (img.width as u32, img.height as u32);
    write_atomic(path, |out| {
        let mut enc = png::Encoder::new(out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(&img.pixels)
            .map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    })
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
    write_png(path, &render_grid(split, &rows, opts))?;
    Ok(n)
}
