//! Fixture loading shared by the parity tests: safetensors files written by the PyTorch
//! reference scripts in reference/.
#![allow(dead_code)]

use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::PathBuf;

/// Parity bound: max|ours − torch| ≤ BOUND · max(1, max|torch|).
pub const BOUND: f32 = 1e-5;

pub struct Fixture {
    pub name: String,
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub ints: HashMap<String, Vec<i32>>,
    pub meta: HashMap<String, String>,
}

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Loads tests/fixtures/<name>.safetensors.
pub fn load(name: &str) -> Fixture {
    let path = fixture_dir().join(format!("{name}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("fixture header");
    let meta = header.metadata().clone().unwrap_or_default();
    assert!(
        meta.contains_key("torch_version"),
        "{name}: fixture without torch version"
    );
    let st = SafeTensors::deserialize(&bytes).expect("fixture");
    let mut tensors = HashMap::new();
    let mut ints = HashMap::new();
    for (key, view) in st.tensors() {
        let chunks = view.data().chunks_exact(4);
        match view.dtype() {
            Dtype::F32 => {
                let v = chunks
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                tensors.insert(key, (view.shape().to_vec(), v));
            }
            Dtype::I64 => {
                let v = view
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as i32)
                    .collect();
                ints.insert(key, v);
            }
            Dtype::I32 => {
                let v = chunks
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                ints.insert(key, v);
            }
            other => panic!("{name}/{key}: unexpected dtype {other:?}"),
        }
    }
    Fixture {
        name: name.to_string(),
        tensors,
        ints,
        meta,
    }
}

impl Fixture {
    pub fn t(&self, key: &str) -> &[f32] {
        &self.get(key).1
    }
    pub fn get(&self, key: &str) -> &(Vec<usize>, Vec<f32>) {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor {key}", self.name))
    }
    pub fn d4(&self, key: &str) -> [usize; 4] {
        self.get(key).0.clone().try_into().expect("rank 4")
    }
    pub fn d2(&self, key: &str) -> [usize; 2] {
        self.get(key).0.clone().try_into().expect("rank 2")
    }
    pub fn has(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }
    pub fn labels(&self) -> Vec<u32> {
        self.ints["labels"].iter().map(|&l| l as u32).collect()
    }
    pub fn meta_usize(&self, key: &str) -> usize {
        self.meta[key].parse().expect("integer metadata")
    }
    pub fn meta_f64(&self, key: &str) -> f64 {
        self.meta[key].parse().expect("float metadata")
    }
    /// Asserts `ours` matches the fixture tensor `key` within [`BOUND`].
    pub fn check(&self, key: &str, ours: &[f32]) {
        self.check_within(key, ours, BOUND)
    }

    /// Asserts max|ours − want| ≤ bound · max(1, max|want|).
    pub fn check_within(&self, key: &str, ours: &[f32], bound: f32) {
        let scale = self.t(key).iter().fold(1.0f32, |m, v| m.max(v.abs()));
        self.check_abs(key, ours, bound * scale);
    }

    /// Asserts max|ours − want| ≤ `tolerance`.
    pub fn check_abs(&self, key: &str, ours: &[f32], tolerance: f32) {
        let want = self.t(key);
        assert_eq!(ours.len(), want.len(), "{}/{key}: length", self.name);
        let err = ours
            .iter()
            .zip(want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= tolerance,
            "{}/{key}: max error {err:e} > tolerance {tolerance:e}",
            self.name
        );
    }
}

/// Runs the `gtadapt` binary built with these tests; (exit status ok, stdout + stderr).
pub fn gtadapt(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gtadapt"))
        .args(args)
        .output()
        .expect("run gtadapt");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A training run on the embedded pair at width 4, nz 8 (CI-sized): `batch` images,
/// `iters` iterations per epoch.
pub fn tiny_run(
    experiment: gtadapt::gta::Experiment,
    epochs: usize,
    batch_size: usize,
    iters: usize,
    seed: u64,
) -> gtadapt::train::RunConfig {
    gtadapt::train::RunConfig {
        experiment,
        hyper: gtadapt::gta::Hyper {
            widths: gtadapt::models::Widths {
                ndf: 4,
                ngf: 4,
                nz: 8,
            },
            ..gtadapt::gta::Hyper::default()
        },
        source: "embedded-mnist".into(),
        target: "embedded-mnistm".into(),
        epochs,
        batch_size,
        iters_per_epoch: Some(iters),
        seed,
        input_norm: gtadapt::train::InputNorm::Dataset,
    }
}

/// A fresh (removed) scratch directory for test `name` of this process.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gtadapt-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
