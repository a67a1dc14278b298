//! `data fetch` against a local HTTP/1.1 server on 127.0.0.1 (never the internet): good,
//! missing, truncated and wrong-checksum files; nothing half-written is left behind.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gtadapt::data::fetch::{self, fetch_into, Outcome, RemoteFile, Source};
use gtadapt::data::import::Format;
use gtadapt::data::{DataError, Dataset};
use sha2::{Digest, Sha256};

use crate::common::*;

#[derive(Clone)]
pub enum Reply {
    Ok(Vec<u8>),
    /// Declares the full length but sends only the first half, then closes.
    Truncated(Vec<u8>),
}

/// A tiny HTTP/1.1 server: GET only, one request per connection, 404 for unknown paths. It
/// stops when dropped, and by itself after 60 s at the latest.
pub struct Server {
    pub base: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(routes: HashMap<String, Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}/files", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (rq, st) = (requests.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !st.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((s, _)) => {
                        rq.fetch_add(1, Ordering::SeqCst);
                        let _ = handle(s, &routes);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Server {
            base,
            requests,
            stop,
            handle: Some(handle),
        }
    }
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn handle(mut s: TcpStream, routes: &HashMap<String, Reply>) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let name = path.rsplit('/').next().unwrap_or("");
    match (path.starts_with("/files/"), routes.get(name)) {
        (true, Some(Reply::Ok(body))) => {
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            s.write_all(body)?;
        }
        (true, Some(Reply::Truncated(body))) => {
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            s.write_all(&body[..body.len() / 2])?;
        }
        _ => {
            s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            )?;
        }
    }
    s.flush()?;
    let _ = s.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The MNIST-like .gz files, their names and hashes.
fn mnist_files() -> Vec<(String, Vec<u8>, String)> {
    mnist_like(20, 10)
        .iter()
        .zip(MNIST_NAMES)
        .map(|(b, n)| {
            let gz = gzip(b);
            let h = sha(&gz);
            (format!("{n}.gz"), gz, h)
        })
        .collect()
}

fn table(files: &[(String, Vec<u8>, String)]) -> Vec<RemoteFile<'_>> {
    files
        .iter()
        .map(|(n, _, h)| RemoteFile { name: n, sha256: h })
        .collect()
}

fn routes(files: &[(String, Vec<u8>, String)]) -> HashMap<String, Reply> {
    files
        .iter()
        .map(|(n, b, _)| (n.clone(), Reply::Ok(b.clone())))
        .collect()
}

#[test]
fn good_files_download_verify_and_import_then_skip() {
    let files = mnist_files();
    let server = Server::start(routes(&files));
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("mnist");
    let r = fetch_into(Format::Mnist, &table(&files), &server.base, &ds, false).unwrap();
    assert_eq!(r.files.len(), 4);
    for ((name, o), (n, b, _)) in r.files.iter().zip(&files) {
        assert_eq!(name, n);
        assert_eq!(
            o,
            &Outcome::Downloaded {
                bytes: b.len() as u64
            }
        );
        assert_eq!(&std::fs::read(ds.join("raw").join(n)).unwrap(), b);
    }
    assert_eq!(server.requests(), 4);
    let d = Dataset::open_dir(&ds).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (20, 10));
    no_part_files(dir.path());

    // Complete: nothing is requested again.
    let r = fetch_into(Format::Mnist, &table(&files), &server.base, &ds, false).unwrap();
    assert!(r.import.is_none() && r.files.is_empty());
    assert_eq!(server.requests(), 4);

    // Converted files gone, raw files intact: re-import without downloading.
    std::fs::remove_file(ds.join("test-labels.idx")).unwrap();
    let r = fetch_into(Format::Mnist, &table(&files), &server.base, &ds, false).unwrap();
    assert!(r.files.iter().all(|(_, o)| *o == Outcome::AlreadyPresent));
    assert!(r.import.is_some());
    assert_eq!(server.requests(), 4);

    // A corrupted raw file is downloaded again and replaced.
    std::fs::remove_file(ds.join("test-labels.idx")).unwrap();
    std::fs::write(ds.join("raw").join(&files[0].0), b"garbage").unwrap();
    let r = fetch_into(Format::Mnist, &table(&files), &server.base, &ds, false).unwrap();
    assert!(matches!(r.files[0].1, Outcome::Downloaded { .. }));
    assert_eq!(server.requests(), 5);
    assert_eq!(
        std::fs::read(ds.join("raw").join(&files[0].0)).unwrap(),
        files[0].1
    );
    no_part_files(dir.path());
}

#[test]
fn missing_file_is_an_error_and_leaves_nothing() {
    let files = mnist_files();
    let mut r = routes(&files);
    r.remove(&files[2].0);
    let server = Server::start(r);
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("mnist");
    let e = fetch_into(Format::Mnist, &table(&files), &server.base, &ds, false).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::Download { .. }), "{msg}");
    assert!(msg.contains("404") && msg.contains(&files[2].0), "{msg}");
    assert!(!ds.join("raw").join(&files[2].0).exists());
    assert!(!ds.join("train-images.idx").exists());
    no_part_files(dir.path());
}

#[test]
fn truncated_download_is_an_error_and_leaves_nothing() {
    let files = mnist_files();
    let mut r = routes(&files);
    r.insert(files[0].0.clone(), Reply::Truncated(files[0].1.clone()));
    let server = Server::start(r);
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("mnist");
    let e = fetch_into(Format::Mnist, &table(&files), &server.base, &ds, false).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::Download { .. }), "{msg}");
    assert!(msg.contains(&files[0].0), "{msg}");
    assert!(!ds.join("raw").join(&files[0].0).exists());
    no_part_files(dir.path());
}

#[test]
fn wrong_checksum_is_an_error_and_leaves_nothing() {
    let files = mnist_files();
    let mut r = routes(&files);
    let mut evil = files[1].1.clone();
    let last = evil.len() - 1;
    evil[last] ^= 1;
    r.insert(files[1].0.clone(), Reply::Ok(evil));
    let server = Server::start(r);
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("mnist");
    let e = fetch_into(Format::Mnist, &table(&files), &server.base, &ds, false).unwrap_err();
    let msg = e.to_string();
    match &e {
        DataError::Checksum { expected, url, .. } => {
            assert_eq!(expected, &files[1].2);
            assert!(url.starts_with("http://127.0.0.1:"));
        }
        _ => panic!("expected a checksum error, got {msg}"),
    }
    assert!(
        msg.contains(&files[1].0) && msg.contains("SHA-256 mismatch"),
        "{msg}"
    );
    assert!(!ds.join("raw").join(&files[1].0).exists());
    no_part_files(dir.path());
}

#[test]
fn mirror_replaces_the_base_url_and_official_checksums_apply() {
    // The server has the official names but not the official bytes: the mirror is used (the
    // requests arrive) and the official SHA-256 rejects the file.
    let mut r = HashMap::new();
    for f in fetch::MNIST_FILES {
        r.insert(f.name.to_string(), Reply::Ok(gzip(b"not mnist")));
    }
    let server = Server::start(r);
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("m");
    let e = fetch::fetch(
        Source::Mnist,
        Some(&ds),
        Some(&format!("{}/", server.base)),
        false,
    )
    .unwrap_err();
    assert!(matches!(e, DataError::Checksum { .. }), "{e}");
    assert!(e.to_string().contains(fetch::MNIST_FILES[0].sha256), "{e}");
    assert_eq!(server.requests(), 1);
    no_part_files(dir.path());
}

#[test]
fn svhn_fetch_converts_mat_files() {
    let st = MatStyle {
        big_endian: false,
        compressed: true,
        small_names: true,
    };
    let (x, y) = svhn_vars(32, 32, 3, &[10, 4, 2], MI_DOUBLE);
    let train = mat_file(&[x, y], st);
    let (x, y) = svhn_vars(32, 32, 2, &[1, 10], MI_UINT8);
    let test = mat_file(&[y, x], st);
    let files = vec![
        ("train_32x32.mat".to_string(), train.clone(), sha(&train)),
        ("test_32x32.mat".to_string(), test.clone(), sha(&test)),
    ];
    let server = Server::start(routes(&files));
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("svhn");
    let r = fetch_into(Format::Svhn, &table(&files), &server.base, &ds, false).unwrap();
    let imp = r.import.unwrap();
    assert_eq!((imp.train, imp.test, imp.image_shape), (3, 2, [3, 32, 32]));
    let d = Dataset::open_dir(&ds).unwrap();
    assert_eq!(d.train.labels.as_slice(), &[0, 4, 2]);
    assert_eq!(
        d.train.images.image(2)[1024 + 3 * 32 + 30],
        pattern(2, 1, 3, 30)
    );
    no_part_files(dir.path());
}

#[test]
fn checksum_table_is_well_formed() {
    for f in fetch::MNIST_FILES.iter().chain(&fetch::SVHN_FILES) {
        assert_eq!(f.sha256.len(), 64, "{}", f.name);
        assert!(f
            .sha256
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
    assert!(fetch::MNIST_BASE_URL.starts_with("https://"));
    assert_eq!(fetch::join_url("http://a/b/", "c"), "http://a/b/c");
}
