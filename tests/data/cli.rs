//! The `gtadapt data` commands, run as a user would.

use std::path::Path;
use std::process::Command;

use crate::common::*;

fn gtadapt(args: &[&str], cwd: &Path) -> (bool, String, String) {
    gtadapt_env(args, cwd, &[])
}

fn gtadapt_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gtadapt"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("GTADAPT_DATA_DIR")
        .env_remove("GTADAPT_DATA_MIRROR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn png_size(p: &Path) -> (u32, u32) {
    let d = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).unwrap()));
    let r = d.read_info().unwrap();
    (r.info().width, r.info().height)
}

#[test]
fn preview_embedded_writes_two_grids() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = gtadapt(
        &["data", "preview", "embedded", "--out", "grid.png"],
        dir.path(),
    );
    assert!(ok, "{err}");
    assert!(out.contains("embedded-mnistm"), "{out}");
    for name in ["grid-embedded-mnist.png", "grid-embedded-mnistm.png"] {
        let (w, h) = png_size(&dir.path().join(name));
        assert_eq!((w, h), (4 + 10 * 68, 4 + 10 * 82), "{name}");
    }
    let (ok, _, err) = gtadapt(
        &[
            "data",
            "preview",
            "embedded-mnistm",
            "--out",
            "t.png",
            "--split",
            "test",
            "--count",
            "7",
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    assert_eq!(png_size(&dir.path().join("t.png")).1, 4 + 82);
}

#[test]
fn inspect_reports_counts_and_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = gtadapt(&["data", "inspect", "embedded-mnist"], dir.path());
    assert!(ok, "{err}");
    assert!(out.contains("train: 2000 images, 1×28×28"), "{out}");
    assert!(
        out.contains("labels 0-9: 50 50 50 50 50 50 50 50 50 50"),
        "{out}"
    );
    assert!(out.contains("pixel mean"), "{out}");
}

#[test]
fn import_svhn_then_inspect_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("svhn-scipy-compressed.mat"),
        dir.path().join("train_32x32.mat"),
    )
    .unwrap();
    std::fs::copy(
        fixture("svhn-scipy-plain.mat"),
        dir.path().join("test_32x32.mat"),
    )
    .unwrap();
    let (ok, out, err) = gtadapt(
        &[
            "data",
            "import",
            "--format",
            "svhn",
            "--out",
            "svhn",
            "train_32x32.mat",
            "test_32x32.mat",
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("train 7 images, test 5 images, 3×32×32"),
        "{out}"
    );
    let (ok, out, err) = gtadapt(&["data", "inspect", "svhn"], dir.path());
    assert!(ok, "{err}");
    assert!(out.contains("test: 5 images, 3×32×32"), "{out}");
    let (ok, out, err) = gtadapt(&["data", "inspect", "svhn/train-labels.idx"], dir.path());
    assert!(ok, "{err}");
    assert!(out.contains("dimensions [7]"), "{out}");
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train_32x32.mat"), b"MATLAB? no").unwrap();
    std::fs::write(dir.path().join("test_32x32.mat"), b"").unwrap();
    let (ok, _, err) = gtadapt(
        &[
            "data",
            "import",
            "--format",
            "svhn",
            "--out",
            "o",
            "train_32x32.mat",
            "test_32x32.mat",
        ],
        dir.path(),
    );
    assert!(!ok);
    assert!(
        err.contains("train_32x32.mat") && err.contains("too short"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let (ok, _, err) = gtadapt(&["data", "inspect", "svhn"], dir.path());
    assert!(!ok);
    assert!(err.contains("gtadapt data fetch svhn"), "{err}");
    let (ok, _, err) = gtadapt(&["data", "inspect", "test_32x32.mat"], dir.path());
    assert!(!ok);
    assert!(
        err.contains("test_32x32.mat") && err.contains("file is empty"),
        "{err}"
    );
}

#[test]
fn fetch_uses_the_mirror_environment_variable_and_the_data_root() {
    // A local "mirror" serving the official SVHN names with the wrong bytes: the command
    // reaches it (through GTADAPT_DATA_MIRROR), rejects the file by its official SHA-256, and
    // leaves nothing behind in $GTADAPT_DATA_DIR/svhn.
    let mut routes = std::collections::HashMap::new();
    routes.insert(
        "train_32x32.mat".to_string(),
        crate::fetch::Reply::Ok(b"not svhn".to_vec()),
    );
    let server = crate::fetch::Server::start(routes);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (ok, _, err) = gtadapt_env(
        &["data", "fetch", "svhn"],
        dir.path(),
        &[
            ("GTADAPT_DATA_MIRROR", &server.base),
            ("GTADAPT_DATA_DIR", root.to_str().unwrap()),
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("SHA-256 mismatch") && err.contains("train_32x32.mat"),
        "{err}"
    );
    assert!(err.contains("127.0.0.1"), "{err}");
    assert_eq!(server.requests(), 1);
    assert!(root.join("svhn/raw").is_dir());
    no_part_files(&root);
    assert!(all_files(&root).is_empty(), "{:?}", all_files(&root));
}
