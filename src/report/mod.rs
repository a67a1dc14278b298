//! What a person looks at after a run: accuracy plots and image grids (PNG). Metrics as JSON
//! lines are written by the training loop (src/train.rs).

pub mod canvas;

use crate::error::Result;
use crate::tensor::Tensor;
use canvas::{Canvas, Color};
use std::path::Path;

const PALETTE: [Color; 6] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [148, 103, 189],
    [255, 127, 14],
    [23, 190, 207],
];

/// One line of an accuracy plot: (epoch, accuracy %) points.
#[derive(Clone, Debug)]
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Dashed (source validation) or solid (target test).
    pub dashed: bool,
    /// Which palette colour (one per experiment).
    pub color_index: usize,
}

/// Accuracy (%) per epoch, y from 0 to 100, with a legend — like the follow-up report's figures.
pub fn accuracy_plot(curves: &[Curve]) -> Canvas {
    // The legend sits right of the plot area, so it never hides a curve.
    let legend_w = curves
        .iter()
        .map(|c| Canvas::text_width(&c.label, 2) + 44)
        .max()
        .unwrap_or(0);
    let (w, h) = (680 + legend_w, 440i64);
    let (left, right, top, bottom) = (56i64, 16 + legend_w, 16i64, 44i64);
    let mut c = Canvas::new(w as usize, h as usize, [255; 3]);
    let max_epoch = curves
        .iter()
        .flat_map(|cv| cv.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let pw = (w - left - right) as f64;
    let ph = (h - top - bottom) as f64;
    let x_of = |e: f64| {
        left as f64
            + if max_epoch > 1.0 {
                (e - 1.0) / (max_epoch - 1.0) * pw
            } else {
                pw / 2.0
            }
    };
    let y_of = |a: f64| top as f64 + (1.0 - a.clamp(0.0, 100.0) / 100.0) * ph;
    let grey = [225, 225, 225];
    let ink = [40, 40, 40];
    for k in 0..=5 {
        let a = k as f64 * 20.0;
        let y = y_of(a);
        c.line((left as f64, y), ((w - right) as f64, y), grey, 1, 0);
        let label = format!("{}", a as i64);
        c.text(
            left - 8 - Canvas::text_width(&label, 2),
            y as i64 - 5,
            &label,
            2,
            ink,
        );
    }
    let ticks = (max_epoch as usize).clamp(1, 10);
    for k in 0..ticks {
        let e = 1.0 + (max_epoch - 1.0) * k as f64 / (ticks.max(2) - 1) as f64;
        let x = x_of(e.round());
        c.line(
            (x, (h - bottom) as f64),
            (x, (h - bottom + 4) as f64),
            ink,
            1,
            0,
        );
        let label = format!("{}", e.round() as i64);
        c.text(
            x as i64 - Canvas::text_width(&label, 2) / 2,
            h - bottom + 8,
            &label,
            2,
            ink,
        );
    }
    c.line(
        (left as f64, top as f64),
        (left as f64, (h - bottom) as f64),
        ink,
        1,
        0,
    );
    c.line(
        (left as f64, (h - bottom) as f64),
        ((w - right) as f64, (h - bottom) as f64),
        ink,
        1,
        0,
    );
    c.text(w / 2 - 20, h - 16, "EPOCH", 2, ink);
    c.text(left + 8, top + 4, "ACCURACY %", 2, ink);
    for cv in curves {
        let color = PALETTE[cv.color_index % PALETTE.len()];
        let dash = if cv.dashed { 6 } else { 0 };
        for pair in cv.points.windows(2) {
            c.line(
                (x_of(pair[0].0), y_of(pair[0].1)),
                (x_of(pair[1].0), y_of(pair[1].1)),
                color,
                2,
                dash,
            );
        }
        for &(e, a) in &cv.points {
            c.fill_rect(x_of(e) as i64 - 2, y_of(a) as i64 - 2, 5, 5, color);
        }
    }
    let mut y = top + 4;
    for cv in curves {
        let color = PALETTE[cv.color_index % PALETTE.len()];
        let x = w - right + 12;
        c.line(
            (x as f64, (y + 5) as f64),
            ((x + 22) as f64, (y + 5) as f64),
            color,
            2,
            if cv.dashed { 4 } else { 0 },
        );
        c.text(x + 28, y, &cv.label, 2, ink);
        y += 14;
    }
    c
}

pub fn write_accuracy_plot(path: &Path, curves: &[Curve]) -> Result<()> {
    accuracy_plot(curves).write_png(path)
}

/// A grid of images [B,3,H,W] with values in [−1, 1] (G's tanh output), 10 per row, each
/// pixel drawn `scale`×`scale`.
pub fn image_grid(images: &Tensor, scale: usize) -> Result<Canvas> {
    let [b, ch, hh, ww] = images.dims4("image grid")?;
    let s = scale.max(1);
    let cols = b.clamp(1, 10);
    let rows = b.div_ceil(cols);
    let pad = 2;
    let (cw, chh) = (ww * s + pad, hh * s + pad);
    let mut c = Canvas::new(cols * cw + pad, rows * chh + pad, [32; 3]);
    for (i, img) in images.data().chunks(ch * hh * ww).enumerate() {
        let (ox, oy) = (pad + (i % cols) * cw, pad + (i / cols) * chh);
        for y in 0..hh {
            for x in 0..ww {
                let mut px = [0u8; 3];
                for (k, p) in px.iter_mut().enumerate() {
                    let v = img[(k.min(ch - 1) * hh + y) * ww + x];
                    *p = (((v + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
                }
                let (px0, py0) = ((ox + x * s) as i64, (oy + y * s) as i64);
                c.fill_rect(px0, py0, s as i64, s as i64, px);
            }
        }
    }
    Ok(c)
}

pub fn write_image_grid(path: &Path, images: &Tensor) -> Result<()> {
    image_grid(images, 2)?.write_png(path)
}
