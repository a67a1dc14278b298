//! Batching: Pillow-exact resize, normalization, seeded shuffles, drop-last, full passes, and
//! the background thread's fixed order.

use gtadapt::data::batch::{normalize, to_d_range, Batcher, IMAGE_VALUES};
use gtadapt::data::idx::IdxArray;
use gtadapt::data::resize::Resizer;
use gtadapt::data::{Images, Labels, Split};

use crate::common::*;

#[test]
fn resize_matches_pillow_exactly() {
    for tag in ["28", "45x20", "100x70", "32x50", "64x40"] {
        let input = IdxArray::open(fixture(&format!("pil-in-{tag}.idx"))).unwrap();
        let want = IdxArray::open(fixture(&format!("pil-out-{tag}.idx"))).unwrap();
        let [n, h, w] = <[usize; 3]>::try_from(input.dims()).unwrap();
        let r = Resizer::new(h, w, 32, 32);
        let mut out = vec![0u8; 1024];
        let mut tmp = Vec::new();
        for i in 0..n {
            r.plane(
                &input.data()[i * h * w..(i + 1) * h * w],
                &mut out,
                &mut tmp,
            );
            assert_eq!(
                &out[..],
                &want.data()[i * 1024..(i + 1) * 1024],
                "{tag} image {i}"
            );
        }
    }
}

#[test]
fn normalization_and_d_range() {
    assert_eq!(normalize(0), (0.0f32 - 0.44) / 0.19);
    assert_eq!(normalize(255), (1.0f32 - 0.44) / 0.19);
    for p in 0..=255u8 {
        let d = to_d_range(normalize(p));
        assert!(
            (d - (p as f32 / 255.0 * 2.0 - 1.0)).abs() < 1e-6,
            "{p}: {d}"
        );
    }
}

/// n gray 28×28 images with pattern pixels and labels i % 10.
fn gray_split(n: usize) -> Split {
    let px: Vec<u8> = (0..n * 784)
        .map(|i| pattern(i / 784, 0, (i / 28) % 28, i % 28))
        .collect();
    Split::new(
        Images::from_vec(px, [n, 1, 28, 28], "gray").unwrap(),
        Labels::from_vec((0..n).map(|i| (i % 10) as u8).collect(), "gray").unwrap(),
    )
    .unwrap()
}

#[test]
fn training_batches_shuffle_per_epoch_and_drop_last() {
    let s = gray_split(25);
    let b = Batcher::train(&s, 10, 7).unwrap();
    assert_eq!(b.len(), 2);
    let e0 = b.batch_indices(0);
    let e1 = b.batch_indices(1);
    assert_eq!(e0.len(), 2);
    assert!(e0.iter().all(|x| x.len() == 10));
    let mut seen: Vec<usize> = e0.concat();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 20, "no row twice in an epoch");
    assert_ne!(e0, e1, "a new order each epoch");
    assert_eq!(
        e0,
        Batcher::train(&s, 10, 7).unwrap().batch_indices(0),
        "reproducible"
    );
    assert_ne!(
        e0,
        Batcher::train(&s, 10, 8).unwrap().batch_indices(0),
        "seeded"
    );
    let mut full = b.order(3);
    full.sort();
    assert_eq!(
        full,
        (0..25).collect::<Vec<_>>(),
        "the order is a permutation"
    );
}

#[test]
fn eval_is_a_full_pass_in_order() {
    let s = gray_split(25);
    let b = Batcher::eval(&s, 10).unwrap();
    assert_eq!(b.len(), 3);
    let batches: Vec<_> = b.epoch(0).collect();
    assert_eq!(
        batches.iter().map(|x| x.len()).collect::<Vec<_>>(),
        vec![10, 10, 5]
    );
    let idx: Vec<usize> = batches.iter().flat_map(|x| x.indices.clone()).collect();
    assert_eq!(idx, (0..25).collect::<Vec<_>>());
    assert_eq!(batches[2].labels, vec![0, 1, 2, 3, 4]);
    assert_eq!(batches[2].images.len(), 5 * IMAGE_VALUES);
}

#[test]
fn background_thread_gives_the_same_batches_in_order() {
    let s = gray_split(40);
    let b = Batcher::train(&s, 8, 11).unwrap();
    for epoch in 0..3 {
        let it = b.epoch(epoch);
        assert_eq!(it.len(), 5);
        let threaded: Vec<_> = it.collect();
        let direct: Vec<_> = b
            .batch_indices(epoch)
            .iter()
            .map(|i| b.make_batch(i))
            .collect();
        assert_eq!(threaded, direct, "epoch {epoch}");
    }
    // Stopping early does not hang or leak the producer.
    let mut it = b.epoch(9);
    assert!(it.next().is_some());
    drop(it);
}

#[test]
fn batch_content_gray_is_resized_expanded_and_normalized() {
    let s = gray_split(3);
    let b = Batcher::eval(&s, 3).unwrap();
    let batch = b.make_batch(&[2]);
    let r = Resizer::new(28, 28, 32, 32);
    let mut want = vec![0u8; 1024];
    r.plane(s.images.image(2), &mut want, &mut Vec::new());
    for c in 0..3 {
        for (i, &p) in want.iter().enumerate() {
            assert_eq!(
                batch.images[c * 1024 + i],
                normalize(p),
                "channel {c} pixel {i}"
            );
        }
    }
    assert_eq!(batch.labels, vec![2]);
    let d = batch.d_view();
    assert!(d.iter().all(|&v| (-1.0..=1.0).contains(&v)));
    let t = batch.images_tensor().unwrap();
    assert_eq!(t.dims(), &[1, 3, 32, 32]);
}

#[test]
fn rgb_32_images_are_not_resized() {
    let px: Vec<u8> = (0..2 * 3072).map(|i| pattern(i, 1, 2, 3)).collect();
    let s = Split::new(
        Images::from_vec(px.clone(), [2, 3, 32, 32], "rgb").unwrap(),
        Labels::from_vec(vec![4, 5], "rgb").unwrap(),
    )
    .unwrap();
    let b = Batcher::eval(&s, 2).unwrap();
    let batch = b.make_batch(&[1, 0]);
    for i in 0..3072 {
        assert_eq!(batch.images[i], normalize(px[3072 + i]));
        assert_eq!(batch.images[3072 + i], normalize(px[i]));
    }
    assert_eq!(batch.labels, vec![5, 4]);
}

#[test]
fn bad_batch_arguments() {
    let s = gray_split(5);
    assert!(Batcher::train(&s, 0, 1).is_err());
    let e = Batcher::train(&s, 6, 1).unwrap_err().to_string();
    assert!(e.contains("fewer than one training batch"), "{e}");
    assert_eq!(Batcher::eval(&s, 6).unwrap().len(), 1);
}
