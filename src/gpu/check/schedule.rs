//! The kernels of captured iterations against the CPU: the scheduled forms of the batch gather
//! (rows and labels of the entry at a device cursor), the noise (offsets table) and Adam (one
//! launch per network, scalars from a table), the cursor advance, the one-hot rows and the u32
//! fill; and the kernels that do in one launch what took several (`copy_segments`: a network's
//! parameter snapshots; `add_f32`). Every scheduled kernel reads the cursor at run time, so each case runs it, advances
//! the cursor on the device and runs the very same launch again: the second result must be the
//! next entry's. A cursor past a table gives NaN, never an out-of-bounds read.

use super::{awkward, libm_ulps, nan, Report, Rng, Tolerance};
use crate::data::batch::{normalize, to_d_range, Prep};
use crate::data::Images;
use crate::gpu::kernels::adam::{self, AdamSegment, AdamStepScalars, StepScalars};
use crate::gpu::kernels::{data, elementwise, layout, rng, schedule};
use crate::gpu::{Buffer, GpuError, Memory};
use crate::ops::adam::{adam_step, AdamConfig, AdamScalars};

pub fn scheduled_kernels<M: Memory>(exec: &M, seed: u64, r: &mut Report) -> Result<(), GpuError> {
    let mut rng = Rng::new(seed);
    gather(exec, &mut rng, r)?;
    noise(exec, r)?;
    adam_multi(exec, &mut rng, r)?;
    one_hot_and_fill(exec, &mut rng, r)?;
    copies_and_adds(exec, &mut rng, r)?;
    Ok(())
}

/// `copy_segments` over buffers of awkward sizes (one launch) and `add_f32`, both bit for bit.
fn copies_and_adds<M: Memory>(exec: &M, rng: &mut Rng, r: &mut Report) -> Result<(), GpuError> {
    let sizes = [1usize, 3, 257, 1000, 70_001];
    let srcs: Vec<Vec<f32>> = sizes.iter().map(|&n| awkward(rng, n, -2.0, 2.0)).collect();
    let src_d = srcs
        .iter()
        .map(|v| exec.upload(v))
        .collect::<Result<Vec<_>, _>>()?;
    let mut dst_d = sizes
        .iter()
        .map(|&n| nan(exec, n))
        .collect::<Result<Vec<_>, _>>()?;
    let segs: Vec<elementwise::CopySegment> = src_d
        .iter()
        .zip(&dst_d)
        .map(|(s, d)| elementwise::CopySegment {
            src: s.device_ptr(),
            dst: d.device_ptr(),
            n: s.len() as u64,
        })
        .collect();
    let table = exec.upload(&segs)?;
    let k = "copy_segments";
    let s = format!("n={sizes:?}");
    // SAFETY: each segment addresses two distinct live buffers of n floats made above.
    let res = unsafe { elementwise::copy_segments(exec, &table, 70_001) };
    if r.launched(k, &s, Tolerance::Ulps(0), res) {
        for (d, want) in dst_d.iter_mut().zip(&srcs) {
            r.ulps(k, &s, &d.read()?, want, 0);
        }
    }
    let k = "add_f32";
    for n in [1usize, 3, 257, 1000] {
        let (a, b) = (awkward(rng, n, -3.0, 3.0), awkward(rng, n, -3.0, 3.0));
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let (ad, bd) = (exec.upload(&a)?, exec.upload(&b)?);
        let mut y = nan(exec, n)?;
        let res = elementwise::add(exec, &ad, &bd, &mut y);
        if r.launched(k, &format!("n={n}"), Tolerance::Ulps(0), res) {
            r.ulps(k, &format!("n={n}"), &y.read()?, &want, 0);
        }
    }
    Ok(())
}

fn invalid(k: &str, e: impl ToString) -> GpuError {
    crate::gpu::kernels::invalid(k, e.to_string())
}

/// Rows of `steps` batches of `b` from images [n,1,28,28]: scheduled gather of each entry
/// (images, D view and labels) against the host pipeline.
fn gather<M: Memory>(exec: &M, rng: &mut Rng, r: &mut Report) -> Result<(), GpuError> {
    let k = "gather_batch (scheduled)";
    let (n, b, steps) = (7usize, 3usize, 3usize);
    let dims = [n, 1, 28, 28];
    let pixels: Vec<u8> = (0..n * 28 * 28).map(|_| rng.next() as u8).collect();
    let labels: Vec<u8> = (0..n).map(|_| rng.below(10) as u8).collect();
    let images = Images::from_vec(pixels.clone(), dims, "check").map_err(|e| invalid(k, e))?;
    let dev = data::DeviceImages::new(exec, &pixels, dims)?.with_labels(exec, &labels)?;
    let table: Vec<u32> = (0..steps * b).map(|_| rng.below(n) as u32).collect();
    let table_d = exec.upload(&table)?;
    let mut step = exec.upload(&[0u32])?;
    let prep = Prep::new(&images);
    let len = b * 3 * 32 * 32;
    let s = format!("{steps} entries of {b} rows");
    for entry in 0..=steps {
        let mut out = nan(exec, len)?;
        let mut out_d = nan(exec, len)?;
        let mut lab = exec.upload(&vec![0xDEAD_BEEFu32; b])?;
        let rows = data::Rows::Scheduled {
            table: &table_d,
            batch: b,
            step: &step,
        };
        let res = data::gather(exec, &dev, rows, &mut out, Some(&mut out_d), Some(&mut lab));
        if !r.launched(k, &s, Tolerance::Ulps(0), res) {
            return Ok(());
        }
        if entry == steps {
            // Past the table: NaN images, invalid labels.
            let ok = out.read()?.iter().all(|v| v.is_nan())
                && lab.read()?.iter().all(|&l| l == u32::MAX);
            r.holds(k, "cursor past the table", ok, || "not NaN".into());
            break;
        }
        let mut want = Vec::new();
        let mut img = vec![0u8; 3 * 32 * 32];
        let rows = &table[entry * b..(entry + 1) * b];
        for &i in rows {
            prep.rgb32(images.image(i as usize), &mut img, &mut Vec::new());
            want.extend(img.iter().map(|&p| normalize(p)));
        }
        let want_d: Vec<f32> = want.iter().map(|&x| to_d_range(x)).collect();
        let sz = format!("{s}, entry {entry}");
        r.ulps(k, &sz, &out.read()?, &want, 0);
        r.ulps(k, &sz, &out_d.read()?, &want_d, 0);
        let want_labels: Vec<u32> = rows.iter().map(|&i| labels[i as usize] as u32).collect();
        let got = lab.read()?;
        r.holds(k, &sz, got == want_labels, || {
            format!("labels {got:?}, expected {want_labels:?}")
        });
        let adv = schedule::advance(exec, &mut step, 1);
        if !r.launched("schedule_advance", "1", Tolerance::Exact, adv) {
            return Ok(());
        }
    }
    let got = step.read()?[0];
    r.holds(
        "schedule_advance",
        "after each entry",
        got == steps as u32,
        || format!("cursor {got}, expected {steps}"),
    );
    Ok(())
}

/// Noise at offsets[entry] + extra, per entry, against the CPU's Philox.
fn noise<M: Memory>(exec: &M, r: &mut Report) -> Result<(), GpuError> {
    let k = "philox_normal (scheduled)";
    let ulps = libm_ulps(exec);
    let (seed, stream, extra, n) = (11u64, 0x006e_6f69_7365_u64, 37u64, 301usize);
    let offsets: Vec<u64> = vec![0, 602, u64::MAX - 100];
    let offsets_d = exec.upload(&offsets)?;
    let mut step = exec.upload(&[0u32])?;
    for entry in 0..=offsets.len() {
        let s = format!("n={n}, entry {entry}");
        let mut out = nan(exec, n)?;
        let res = rng::normal_scheduled(
            exec,
            seed,
            stream,
            extra,
            Some((&offsets_d, &step)),
            &mut out,
        );
        if !r.launched(k, &s, Tolerance::Ulps(ulps), res) {
            return Ok(());
        }
        let got = out.read()?;
        if entry == offsets.len() {
            r.holds(
                k,
                "cursor past the table",
                got.iter().all(|v| v.is_nan()),
                || "not NaN".into(),
            );
            break;
        }
        let mut want = vec![0.0f32; n];
        crate::rng::normal(seed, stream, offsets[entry].wrapping_add(extra), &mut want);
        r.ulps(k, &s, &got, &want, ulps);
        schedule::advance(exec, &mut step, 1)?;
    }
    Ok(())
}

/// One launch over several tensors (awkward sizes), scalars by value and from a table at the
/// cursor (two slots with different learning rates), against the CPU step per tensor.
fn adam_multi<M: Memory>(exec: &M, rng: &mut Rng, r: &mut Report) -> Result<(), GpuError> {
    let k = "adam_step_multi";
    let sizes = [1usize, 3, 257, 1000];
    let cfgs = [
        AdamConfig {
            lr: 5e-4,
            beta1: 0.8,
            beta2: 0.999,
            eps: 1e-8,
        },
        AdamConfig {
            lr: 3e-4,
            beta1: 0.8,
            beta2: 0.999,
            eps: 1e-8,
        },
    ];
    let steps = 3u64;
    for scheduled in [false, true] {
        let s = format!(
            "{} tensors n={sizes:?}, {}",
            sizes.len(),
            if scheduled { "table" } else { "by value" }
        );
        // Host state per tensor and its device copies.
        let mut host: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = sizes
            .iter()
            .map(|&n| (rng.vec(n, -1.0, 1.0), vec![0.0; n], vec![0.0; n]))
            .collect();
        let mut dev = Vec::new();
        for (p, m, v) in &host {
            dev.push((exec.upload(p)?, exec.upload(m)?, exec.upload(v)?));
        }
        // Slot 1's learning rate (cfgs[1]); the table holds both slots per step.
        let cfg = &cfgs[1];
        let table: Vec<AdamStepScalars> = (1..=steps)
            .flat_map(|t| {
                cfgs.iter()
                    .map(move |c| AdamStepScalars::of(&AdamScalars::new(t, c)))
            })
            .collect();
        let table_d = exec.upload(&table)?;
        let mut cursor = exec.upload(&[0u32])?;
        for t in 1..=steps {
            let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| awkward(rng, n, -3.0, 3.0)).collect();
            let grads_d = grads
                .iter()
                .map(|g| exec.upload(g))
                .collect::<Result<Vec<_>, _>>()?;
            for ((p, m, v), g) in host.iter_mut().zip(&grads) {
                adam_step(p, g, m, v, t, cfg).map_err(|e| invalid(k, e))?;
            }
            let segments: Vec<AdamSegment> = dev
                .iter()
                .zip(&grads_d)
                .map(|((p, m, v), g)| AdamSegment {
                    param: p.device_ptr(),
                    grad: g.device_ptr(),
                    m: m.device_ptr(),
                    v: v.device_ptr(),
                    n: p.len() as u64,
                })
                .collect();
            let seg_d = exec.upload(&segments)?;
            // By value: this step's scalars; from the table: a wrong "now" value, so only
            // the table's entry can give the right result.
            let scalars = if scheduled {
                StepScalars::Scheduled {
                    fixed: AdamScalars::new(99, &cfgs[0]),
                    table: &table_d,
                    slots: 2,
                    slot: 1,
                    step: &cursor,
                }
            } else {
                StepScalars::Now(AdamScalars::new(t, cfg))
            };
            // SAFETY: every segment addresses this executor's live buffers of n floats (made
            // above, alive until the end of the loop body), distinct per tensor.
            let res = unsafe { adam::step_multi(exec, &seg_d, 1000, scalars) };
            if !r.launched(k, &s, Tolerance::Ulps(0), res) {
                return Ok(());
            }
            if scheduled {
                schedule::advance(exec, &mut cursor, 1)?;
            }
        }
        for ((p, m, v), (pd, md, vd)) in host.iter().zip(&dev) {
            r.ulps(k, &s, &pd.read()?, p, 0);
            r.ulps(k, &s, &md.read()?, m, 0);
            r.ulps(k, &s, &vd.read()?, v, 0);
        }
    }
    Ok(())
}

fn one_hot_and_fill<M: Memory>(exec: &M, rng: &mut Rng, r: &mut Report) -> Result<(), GpuError> {
    let k = "one_hot";
    for (n, classes) in [(1usize, 11usize), (37, 11), (5, 3)] {
        let s = format!("{n}×{classes}");
        // One label out of range (→ a NaN row) when n > 1.
        let labels: Vec<u32> = (0..n)
            .map(|i| {
                if i == n / 2 && n > 1 {
                    classes as u32 + 4
                } else {
                    rng.below(classes) as u32
                }
            })
            .collect();
        let ld = exec.upload(&labels)?;
        let mut y = nan(exec, n * classes)?;
        let res = layout::one_hot(exec, &ld, classes, &mut y);
        if r.launched(k, &s, Tolerance::Ulps(0), res) {
            let want: Vec<f32> = labels
                .iter()
                .flat_map(|&l| {
                    (0..classes as u32).map(move |c| match l as usize >= classes {
                        true => f32::NAN,
                        false => (l == c) as u32 as f32,
                    })
                })
                .collect();
            r.ulps(k, &s, &y.read()?, &want, 0);
        }
        let mut u = exec.upload(&vec![7u32; n])?;
        let res = elementwise::fill_u32(exec, &mut u, classes as u32);
        if r.launched("fill_u32", &s, Tolerance::Exact, res) {
            let got = u.read()?;
            r.holds(
                "fill_u32",
                &s,
                got.iter().all(|&v| v == classes as u32),
                || format!("{got:?}"),
            );
        }
    }
    Ok(())
}
