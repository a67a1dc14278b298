//! Fuzzes the IDX parser and what builds on it: header validation, images/labels checks, and
//! the batch path over whatever a valid file holds. No input may panic.
#![no_main]

use gtadapt::data::bytes::Bytes;
use gtadapt::data::idx::{parse_header, IdxArray};
use gtadapt::data::{Batcher, Images, Labels, Split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = parse_header(data) else { return };
    assert_eq!(h.data_offset + h.len(), data.len());
    let Ok(a) = IdxArray::from_bytes(Bytes::from_vec(data.to_vec()), "fuzz.idx") else {
        panic!("parse_header accepted what IdxArray refused");
    };
    if a.rank() == 1 {
        let _ = Labels::from_idx(a);
    } else if let Ok(images) = Images::from_idx(a) {
        // Keep the work per input small: resize and batch only small images.
        if images.len() > 0 && images.height() <= 64 && images.width() <= 64 {
            let n = images.len().min(4);
            let labels = Labels::from_vec(vec![0; images.len()], "fuzz-labels").unwrap();
            let split = Split::new(images, labels).unwrap();
            let b = Batcher::eval(&split, 2).unwrap();
            let idx: Vec<usize> = (0..n).collect();
            let batch = b.make_batch(&idx);
            assert!(batch.images.iter().all(|v| v.is_finite()));
        }
    }
});
