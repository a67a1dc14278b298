//! `data inspect`: counts, shapes, label histograms and pixel statistics.

use std::fmt::Write as _;
use std::path::Path;

use super::dataset::{Dataset, Split};
use super::error::Result;
use super::idx::IdxArray;
use super::NUM_CLASSES;

/// Statistics of one split. Pixel statistics are of the stored u8 values scaled to [0, 1]
/// (before any resizing), per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitStats {
    pub count: usize,
    /// C, H, W as stored.
    pub shape: [usize; 3],
    pub histogram: [usize; NUM_CLASSES],
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// Mean and standard deviation of u8 values scaled to [0, 1] (exact sums).
pub fn pixel_mean_std(px: &[u8]) -> (f64, f64) {
    let (mut s, mut s2) = (0u64, 0u64);
    for &p in px {
        s += p as u64;
        s2 += (p as u64) * (p as u64);
    }
    let n = px.len().max(1) as f64;
    let mean = s as f64 / n;
    let var = (s2 as f64 / n - mean * mean).max(0.0);
    (mean / 255.0, var.sqrt() / 255.0)
}

pub fn split_stats(split: &Split) -> SplitStats {
    let [n, c, h, w] = split.images.dims();
    let plane = h * w;
    let mut sums = vec![(0u64, 0u64); c];
    for img in split.images.pixels().chunks_exact(c * plane) {
        for (ch, s) in sums.iter_mut().enumerate() {
            for &p in &img[ch * plane..(ch + 1) * plane] {
                s.0 += p as u64;
                s.1 += (p as u64) * (p as u64);
            }
        }
    }
    let count = (n * plane).max(1) as f64;
    let (mean, std) = sums
        .iter()
        .map(|&(s, s2)| {
            let m = s as f64 / count;
            let v = (s2 as f64 / count - m * m).max(0.0);
            (m / 255.0, v.sqrt() / 255.0)
        })
        .unzip();
    SplitStats {
        count: n,
        shape: [c, h, w],
        histogram: split.labels.histogram(),
        mean,
        std,
    }
}

fn fmt_list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.4}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// A human-readable report of a dataset.
pub fn dataset_report(d: &Dataset) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "dataset {}", d.name);
    for (name, split) in [("train", &d.train), ("test", &d.test)] {
        let s = split_stats(split);
        let [c, h, w] = s.shape;
        let _ = writeln!(
            out,
            "  {name}: {} images, {c}×{h}×{w} ({}){}",
            s.count,
            if c == 1 {
                "gray"
            } else {
                "RGB, channel-planar"
            },
            if split.images.is_mapped() {
                format!(", memory-mapped from {}", split.images.origin().display())
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "    labels 0-9: {}",
            s.histogram
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let _ = writeln!(
            out,
            "    pixel mean {} std {} (values /255{})",
            fmt_list(&s.mean),
            fmt_list(&s.std),
            if c == 3 {
                ", per channel R / G / B"
            } else {
                ""
            }
        );
    }
    out
}

/// A report of a single IDX file.
pub fn idx_report(path: &Path) -> Result<String> {
    let a = IdxArray::open(path)?;
    let mut out = format!("{}: IDX, u8, dimensions {:?}\n", path.display(), a.dims());
    if a.rank() == 1 {
        let mut h = [0usize; 256];
        for &v in a.data() {
            h[v as usize] += 1;
        }
        let values: Vec<String> = h
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(v, c)| format!("{v}: {c}"))
            .collect();
        let _ = writeln!(
            out,
            "  {} values; histogram {}",
            a.data().len(),
            values.join(", ")
        );
    } else {
        let (m, s) = pixel_mean_std(a.data());
        let _ = writeln!(out, "  pixel mean {m:.4} std {s:.4} (values /255)");
    }
    Ok(out)
}
