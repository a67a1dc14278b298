//! Fuzzes the MAT-file parser and the SVHN conversion on top of it. No input may panic, and no
//! input may allocate more than the limit given to the parser.
#![no_main]

use std::path::Path;

use gtadapt::data::import::svhn_from_mat_bytes;
use gtadapt::data::mat::{self, MatOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = MatOptions {
        max_element_bytes: 1 << 20,
    };
    if let Ok(f) = mat::parse(data, &|_| true, &opts) {
        for v in &f.vars {
            let _ = v.to_u8_exact(0, 255);
        }
    }
    let _ = svhn_from_mat_bytes(data, Path::new("fuzz.mat"), &opts);
});
