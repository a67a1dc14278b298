//! Fuzzes the checkpoint loader: safetensors parsing, the run configuration in the metadata,
//! and restoring a trainer (shape checks of every tensor). No input may panic.
#![no_main]

use gtadapt::checkpoint::{restore_trainer, StateDict};
use gtadapt::gta::Trainer;
use gtadapt::train::config_from_checkpoint;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(sd) = StateDict::parse(data) else {
        return;
    };
    let path = Path::new("fuzz.safetensors");
    let Ok((cfg, _epoch, _best)) = config_from_checkpoint(&sd, path) else {
        return;
    };
    // Keep the work per input small: build networks only at tiny widths.
    let w = cfg.hyper.widths;
    if w.ndf <= 8 && w.ngf <= 8 && w.nz <= 16 {
        let mut t = Trainer::new(cfg.experiment, cfg.hyper, 0);
        let _ = restore_trainer(&mut t, &sd, path);
    }
});
