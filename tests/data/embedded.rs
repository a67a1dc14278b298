//! The embedded pair: the vendored digits are the documented ones, the split is disjoint and
//! balanced, and the colour target is deterministic MNIST-M-style blending.

use gtadapt::data::embedded::{self, EMBEDDED_MNIST, EMBEDDED_MNISTM};
use gtadapt::data::resize::Resizer;
use gtadapt::data::{open, SplitKind};
use sha2::{Digest, Sha256};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn vendored_digits_are_mnist5k() {
    let (images, labels) = embedded::mnist5k().unwrap();
    assert_eq!(images.dims(), [5000, 1, 28, 28]);
    // sha256 of the decompressed IDX files, from data/mnist5k/PROVENANCE.md.
    let im = gtadapt::data::idx::encode_idx(&[5000, 28, 28], images.pixels()).unwrap();
    let lb = gtadapt::data::idx::encode_idx(&[5000], labels.as_slice()).unwrap();
    assert_eq!(
        hex(&Sha256::digest(&im)),
        "a4a9358b9ba319305e7cd69b2c7410e463401e152d7e9e60189b94a3f159d012"
    );
    assert_eq!(
        hex(&Sha256::digest(&lb)),
        "704256e87519240fd1d7ecdf681fe209864691e252c6642aeadc21f3c4d44b41"
    );
}

#[test]
fn split_is_disjoint_balanced_and_fixed() {
    let (_, labels) = embedded::mnist5k().unwrap();
    let plan = embedded::split_plan(labels.as_slice());
    let parts = [
        &plan.source_train,
        &plan.source_val,
        &plan.target_train,
        &plan.target_test,
    ];
    assert_eq!(parts.map(|p| p.len()), [2000, 500, 2000, 500]);
    let mut all: Vec<usize> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    all.sort();
    assert_eq!(all, (0..5000).collect::<Vec<_>>(), "disjoint and complete");
    for (p, per_class) in parts.iter().zip([200, 50, 200, 50]) {
        let mut h = [0; 10];
        for &r in p.iter() {
            h[labels.as_slice()[r] as usize] += 1;
        }
        assert_eq!(h, [per_class; 10]);
    }
    assert_eq!(plan, embedded::split_plan(labels.as_slice()));
    // Rows are mixed, not sorted by class.
    let first: Vec<u8> = plan.source_train[..20]
        .iter()
        .map(|&r| labels.as_slice()[r])
        .collect();
    assert!(first.windows(2).any(|w| w[0] != w[1]));
}

#[test]
fn datasets_hold_the_planned_digits() {
    let (images, labels) = embedded::mnist5k().unwrap();
    let plan = embedded::split_plan(labels.as_slice());
    let src = open(EMBEDDED_MNIST).unwrap();
    assert_eq!(src.train.images.dims(), [2000, 1, 28, 28]);
    assert_eq!(src.test.len(), 500);
    for (k, &r) in plan.source_val.iter().enumerate().step_by(37) {
        assert_eq!(src.test.images.image(k), images.image(r));
        assert_eq!(src.test.labels.as_slice()[k], labels.as_slice()[r]);
    }
    let tgt = open(EMBEDDED_MNISTM).unwrap();
    assert_eq!(tgt.train.images.dims(), [2000, 3, 32, 32]);
    assert_eq!(tgt.split(SplitKind::Test).len(), 500);
    let resizer = Resizer::new(28, 28, 32, 32);
    let mut out = vec![0u8; 3072];
    for (k, &r) in plan.target_test.iter().enumerate().step_by(41) {
        embedded::mnistm_image(images.image(r), &resizer, r as u64, &mut out);
        assert_eq!(tgt.test.images.image(k), &out[..]);
        assert_eq!(tgt.test.labels.as_slice()[k], labels.as_slice()[r]);
    }
}

#[test]
fn mnistm_blend_is_absolute_difference() {
    let resizer = Resizer::new(28, 28, 32, 32);
    let bg = embedded::texture(17);
    assert_eq!(bg, embedded::texture(17), "deterministic");
    assert_ne!(bg, embedded::texture(18), "per image");
    let mut out = vec![0u8; 3072];
    embedded::mnistm_image(&[0u8; 784], &resizer, 17, &mut out);
    for (o, b) in out.iter().zip(&bg) {
        assert_eq!(*o, (b * 255.0).round() as u8);
    }
    embedded::mnistm_image(&[255u8; 784], &resizer, 17, &mut out);
    for (o, b) in out.iter().zip(&bg) {
        assert_eq!(*o, 255 - (b * 255.0).round() as u8);
    }
    // A colourful domain: the channels differ.
    let tgt = open(EMBEDDED_MNISTM).unwrap();
    let img = tgt.train.images.image(0);
    assert!(img[..1024] != img[1024..2048]);
}
