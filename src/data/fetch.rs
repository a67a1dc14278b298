//! `data fetch`: download the official MNIST or SVHN files, verify their SHA-256, and import
//! them into a dataset directory.
//!
//! Each file is downloaded to `<dir>/raw/<name>.part`, hashed while it arrives, and renamed to
//! `<dir>/raw/<name>` only when its SHA-256 matches the published one; on any failure the
//! `.part` file is removed. Files already present with the right hash are not downloaded
//! again, and a directory that already holds a complete dataset is left as it is. The raw files
//! are kept (delete `raw/` to save space; a later fetch then only re-downloads if the dataset
//! files are gone too).
//!
//! `--mirror URL` (or `GTADAPT_DATA_MIRROR`) replaces the base URL: file `F` is fetched from
//! `URL/F`. The checksums stay the official ones.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::dataset::Dataset;
use super::error::{DataError, Result};
use super::idx::part_path;
use super::import::{self, Format, ImportReport};

/// The environment variable that replaces the download base URL.
pub const MIRROR_ENV: &str = "GTADAPT_DATA_MIRROR";

/// A file to download and its published SHA-256 (lowercase hex).
#[derive(Clone, Copy, Debug)]
pub struct RemoteFile<'a> {
    pub name: &'a str,
    pub sha256: &'a str,
}

/// MNIST from the S3 mirror torchvision uses (HTTPS). Same bytes as the original
/// yann.lecun.com files. SHA-256 values as published in TensorFlow Datasets'
/// `url_checksums/mnist.txt` (with sizes 9912422, 28881, 1648877, 4542 bytes) and identical in
/// several independent projects' checksum tables.
pub const MNIST_BASE_URL: &str = "https://ossci-datasets.s3.amazonaws.com/mnist";
pub const MNIST_FILES: [RemoteFile<'static>; 4] = [
    RemoteFile {
        name: "train-images-idx3-ubyte.gz",
        sha256: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    },
    RemoteFile {
        name: "train-labels-idx1-ubyte.gz",
        sha256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    },
    RemoteFile {
        name: "t10k-images-idx3-ubyte.gz",
        sha256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    },
    RemoteFile {
        name: "t10k-labels-idx1-ubyte.gz",
        sha256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
];

/// SVHN cropped digits from the official host. It is served over plain HTTP only (every
/// reference loader — torchvision, TensorFlow Datasets — uses this http:// URL); integrity
/// rests on the SHA-256 check. Values as published in TensorFlow Datasets'
/// `url_checksums/svhn_cropped.txt` (sizes 182040794 and 64275384 bytes; torchvision's MD5s
/// e26dedcc434d2e4c54c9b2d4a06d8373 / eb5a983be6a315427106f1b164d9cef3 name the same files).
pub const SVHN_BASE_URL: &str = "http://ufldl.stanford.edu/housenumbers";
pub const SVHN_FILES: [RemoteFile<'static>; 2] = [
    RemoteFile {
        name: "train_32x32.mat",
        sha256: "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
    },
    RemoteFile {
        name: "test_32x32.mat",
        sha256: "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
    },
];

/// A dataset `data fetch` knows how to download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Mnist,
    Svhn,
}

impl Source {
    pub fn from_name(name: &str) -> Option<Source> {
        match name {
            "mnist" => Some(Source::Mnist),
            "svhn" => Some(Source::Svhn),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Source::Mnist => "mnist",
            Source::Svhn => "svhn",
        }
    }
    pub fn files(self) -> &'static [RemoteFile<'static>] {
        match self {
            Source::Mnist => &MNIST_FILES,
            Source::Svhn => &SVHN_FILES,
        }
    }
    pub fn base_url(self) -> &'static str {
        match self {
            Source::Mnist => MNIST_BASE_URL,
            Source::Svhn => SVHN_BASE_URL,
        }
    }
    pub fn format(self) -> Format {
        match self {
            Source::Mnist => Format::Mnist,
            Source::Svhn => Format::Svhn,
        }
    }
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Downloaded { bytes: u64 },
    AlreadyPresent,
}

/// What a fetch did.
#[derive(Clone, Debug)]
pub struct FetchReport {
    pub dir: PathBuf,
    /// Per file; empty when the dataset directory was already complete.
    pub files: Vec<(String, Outcome)>,
    /// The import, or `None` when the dataset directory was already complete.
    pub import: Option<ImportReport>,
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host = rest.split('/').next().unwrap_or("");
    host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]")
}

fn agent(base_url: &str) -> ureq::Agent {
    let mut cfg = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("gtadapt/", env!("CARGO_PKG_VERSION")));
    if is_loopback(base_url) {
        cfg = cfg.proxy(None); // a local mirror is never reached through a proxy
    }
    cfg.build().into()
}

/// `base/name`, with exactly one slash between them.
pub fn join_url(base: &str, name: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), name)
}

fn progress_bar(show: bool, len: Option<u64>, name: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = match len {
        Some(l) => ProgressBar::new(l).with_style(
            ProgressStyle::with_template(
                "{msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg:28} {spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    pb.set_message(name.to_string());
    pb
}

/// Removes the `.part` file unless the download completed.
struct PartGuard<'a> {
    path: &'a Path,
    armed: bool,
}

impl Drop for PartGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(self.path);
        }
    }
}

/// Downloads `url` to `dest` (through `dest.part`), verifying its SHA-256. A `dest` that
/// already has the right hash is kept and nothing is downloaded.
pub fn download(url: &str, dest: &Path, sha256: &str, progress: bool) -> Result<Outcome> {
    let expected = sha256.to_ascii_lowercase();
    if dest.is_file() && sha256_file(dest)? == expected {
        return Ok(Outcome::AlreadyPresent);
    }
    let part = part_path(dest);
    let mut guard = PartGuard {
        path: &part,
        armed: true,
    };
    let mut resp = agent(url).get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => DataError::download(url, format!("HTTP status {code}")),
        other => DataError::download(url, other),
    })?;
    let body = resp.body_mut();
    let len = body.content_length();
    let mut reader = body.as_reader();
    let mut file = File::create(&part).map_err(|e| DataError::io(&part, e))?;
    let pb = progress_bar(
        progress,
        len,
        dest.file_name().and_then(|n| n.to_str()).unwrap_or(""),
    );
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                pb.abandon();
                return Err(DataError::download(
                    url,
                    format!("after {total} bytes: {e}"),
                ));
            }
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| DataError::io(&part, e))?;
        total += n as u64;
        pb.set_position(total);
    }
    pb.finish();
    if let Some(l) = len {
        if total != l {
            return Err(DataError::download(
                url,
                format!("connection closed after {total} of {l} bytes"),
            ));
        }
    }
    file.sync_all().map_err(|e| DataError::io(&part, e))?;
    drop(file);
    let actual = hex(&hasher.finalize());
    if actual != expected {
        return Err(DataError::Checksum {
            path: dest.to_path_buf(),
            url: url.to_string(),
            expected,
            actual,
        });
    }
    std::fs::rename(&part, dest).map_err(|e| DataError::io(dest, e))?;
    guard.armed = false;
    Ok(Outcome::Downloaded { bytes: total })
}

/// Downloads `files` from `base_url` into `dir/raw` and imports them as `format` into `dir`.
/// This is [`fetch`] with the file table and URL spelled out (tests use it with a local server).
pub fn fetch_into(
    format: Format,
    files: &[RemoteFile<'_>],
    base_url: &str,
    dir: &Path,
    progress: bool,
) -> Result<FetchReport> {
    if Dataset::open_dir(dir).is_ok() {
        return Ok(FetchReport {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            import: None,
        });
    }
    let raw = dir.join("raw");
    std::fs::create_dir_all(&raw).map_err(|e| DataError::io(&raw, e))?;
    let mut outcomes = Vec::new();
    let mut paths = Vec::new();
    for f in files {
        let dest = raw.join(f.name);
        let url = join_url(base_url, f.name);
        let o = download(&url, &dest, f.sha256, progress)?;
        outcomes.push((f.name.to_string(), o));
        paths.push(dest);
    }
    let report = import::import(format, &paths, dir)?;
    Ok(FetchReport {
        dir: dir.to_path_buf(),
        files: outcomes,
        import: Some(report),
    })
}

/// Fetches an official dataset into `dir` (default: `<data root>/<name>`), from `mirror`
/// instead of the official host when given.
pub fn fetch(
    source: Source,
    dir: Option<&Path>,
    mirror: Option<&str>,
    progress: bool,
) -> Result<FetchReport> {
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| super::data_root().join(source.name()));
    let base = mirror.unwrap_or(source.base_url());
    fetch_into(source.format(), source.files(), base, &dir, progress)
}
