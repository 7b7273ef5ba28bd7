//! Crash safety of `berth registry serve`: pushes run concurrently against the real binary,
//! which is SIGKILLed midway and restarted on the same root. Whatever was acknowledged with a
//! `201` must still be there and verify; uploads cut off by the crash must be resumable from an
//! acknowledged offset or cleanly unknown; the content store must have no damaged blob.

mod registry_support;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_layerstore::Digest;
use berth_layerstore::content::fs::FsStore;
use registry_support::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const WORKERS: u64 = 4;

/// A blob the registry acknowledged.
#[derive(Debug, Clone)]
struct PushedBlob {
    repo: String,
    digest: Digest,
}

/// A manifest the registry acknowledged under a tag.
#[derive(Debug, Clone)]
struct PushedManifest {
    repo: String,
    tag: String,
    bytes: Vec<u8>,
}

/// An upload that was in progress when the server died.
#[derive(Debug, Clone)]
struct Interrupted {
    location: String,
    data: Vec<u8>,
    /// Where its requests split it: every acknowledged offset is one of these.
    boundaries: Vec<usize>,
}

#[derive(Default)]
struct Log {
    blobs: Mutex<Vec<PushedBlob>>,
    manifests: Mutex<Vec<PushedManifest>>,
    interrupted: Mutex<Vec<Interrupted>>,
    acknowledged: AtomicUsize,
}

fn h(name: &str, value: impl ToString) -> (&str, String) {
    (name, value.to_string())
}

/// Pushes `data` as POST, two chunked PATCHes and a closing PUT. On a transport error (the
/// server died), records the upload as interrupted and returns `None`.
fn push_chunked(addr: &str, repo: &str, data: &[u8], log: &Log) -> Option<Digest> {
    let digest = Digest::sha256(data);
    let half = data.len() / 2;
    let start = request(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    )
    .ok()?;
    assert_eq!(start.status, 202, "{start:?}");
    let location = start.header("location").expect("Location").to_owned();
    let interrupted = || {
        log.interrupted.lock().unwrap().push(Interrupted {
            location: location.clone(),
            data: data.to_vec(),
            boundaries: vec![0, half, data.len()],
        });
    };
    for (from, to) in [(0, half), (half, data.len())] {
        match request(
            addr,
            "PATCH",
            &location,
            &[
                h("content-type", "application/octet-stream"),
                h("content-range", format!("{from}-{}", to - 1)),
            ],
            &data[from..to],
        ) {
            Ok(reply) => assert_eq!(reply.status, 202, "{reply:?}"),
            Err(_) => {
                interrupted();
                return None;
            }
        }
    }
    match request(
        addr,
        "PUT",
        &format!("{location}?digest={digest}"),
        &[],
        b"",
    ) {
        Ok(reply) => {
            assert_eq!(reply.status, 201, "{reply:?}");
            log.blobs.lock().unwrap().push(PushedBlob {
                repo: repo.to_owned(),
                digest: digest.clone(),
            });
            log.acknowledged.fetch_add(1, Ordering::SeqCst);
            Some(digest)
        }
        Err(_) => {
            interrupted();
            None
        }
    }
}

/// Pushes images until the server goes away.
fn worker(addr: String, id: u64, log: Arc<Log>) {
    let repo = format!("crash/w{id}");
    for i in 0u64.. {
        let seed = id * 1_000_000 + i;
        let layer = pseudo_random(seed, 500_000 + (seed as usize % 7) * 250_000);
        let Some(layer_digest) = push_chunked(&addr, &repo, &layer, &log) else {
            return;
        };
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}");
        let config_digest = Digest::sha256(config.as_bytes());
        match request(
            &addr,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={config_digest}"),
            &[],
            config.as_bytes(),
        ) {
            Ok(reply) => {
                assert_eq!(reply.status, 201, "{reply:?}");
                log.blobs.lock().unwrap().push(PushedBlob {
                    repo: repo.clone(),
                    digest: config_digest.clone(),
                });
            }
            Err(_) => return,
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest.to_string(), "size": layer.len()}],
        }))
        .unwrap();
        let tag = format!("t{i}");
        match request(
            &addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[h("content-type", OCI_MANIFEST)],
            &manifest,
        ) {
            Ok(reply) => {
                assert_eq!(reply.status, 201, "{reply:?}");
                log.manifests.lock().unwrap().push(PushedManifest {
                    repo: repo.clone(),
                    tag,
                    bytes: manifest,
                });
            }
            Err(_) => return,
        }
    }
}

/// Parses an upload `Range: 0-<last>` into the number of bytes received (`0-0` is ambiguous
/// between 0 and 1 bytes; the uploads here never stop at 1).
fn received(range: &str) -> usize {
    let last: usize = range
        .strip_prefix("0-")
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("bad Range {range:?}"));
    if last == 0 { 0 } else { last + 1 }
}

#[test]
fn acknowledged_pushes_survive_sigkill() {
    let root = tempfile::tempdir().unwrap();
    let mut server = Server::start(root.path());

    // An upload left half done on purpose before the crash.
    let parked_data = pseudo_random(42, 150_000);
    let start = server
        .request("POST", "/v2/crash/parked/blobs/uploads/", &[], b"")
        .unwrap();
    let parked = start.header("location").unwrap().to_owned();
    let reply = server
        .request("PATCH", &parked, &[], &parked_data[..100_000])
        .unwrap();
    assert_eq!(reply.status, 202);
    assert_eq!(reply.header("range"), Some("0-99999"));

    // Another one whose second PATCH is still streaming when the server dies: its bytes reach
    // the server's disk but were never acknowledged.
    let start = server
        .request("POST", "/v2/crash/parked/blobs/uploads/", &[], b"")
        .unwrap();
    let streaming = start.header("location").unwrap().to_owned();
    let reply = server
        .request("PATCH", &streaming, &[], &parked_data[..100_000])
        .unwrap();
    assert_eq!(reply.status, 202);
    let mut cut_off = TcpStream::connect(&server.addr).unwrap();
    write!(
        cut_off,
        "PATCH {streaming} HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000000\r\n\r\n",
        server.addr
    )
    .unwrap();
    cut_off.write_all(&pseudo_random(7, 600_000)).unwrap();
    cut_off.flush().unwrap();

    let log = Arc::new(Log::default());
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            let (addr, log) = (server.addr.clone(), log.clone());
            std::thread::spawn(move || worker(addr, id, log))
        })
        .collect();
    // Let a good number of pushes land, then kill the server in the middle of the rest.
    while log.acknowledged.load(Ordering::SeqCst) < 12 {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(37));
    server.kill();
    for w in workers {
        w.join().expect("worker panicked");
    }
    let blobs = log.blobs.lock().unwrap().clone();
    let manifests = log.manifests.lock().unwrap().clone();
    let interrupted = log.interrupted.lock().unwrap().clone();
    assert!(blobs.len() >= 12, "{} blobs acknowledged", blobs.len());

    let mut server = Server::start(root.path());
    // Every acknowledged blob is there and matches its digest.
    for b in &blobs {
        let reply = server
            .request(
                "GET",
                &format!("/v2/{}/blobs/{}", b.repo, b.digest),
                &[],
                b"",
            )
            .unwrap();
        assert_eq!(reply.status, 200, "{b:?}");
        assert_eq!(Digest::sha256(&reply.body), b.digest);
    }
    // Every acknowledged manifest is there under its tag, byte for byte.
    for m in &manifests {
        let reply = server
            .request(
                "GET",
                &format!("/v2/{}/manifests/{}", m.repo, m.tag),
                &[],
                b"",
            )
            .unwrap();
        assert_eq!(reply.status, 200, "{}:{}", m.repo, m.tag);
        assert_eq!(reply.body, m.bytes);
        assert_eq!(reply.header("content-type"), Some(OCI_MANIFEST));
    }
    for id in 0..WORKERS {
        let reply = server
            .request("GET", &format!("/v2/crash/w{id}/tags/list"), &[], b"")
            .unwrap();
        assert!(reply.status == 200 || reply.status == 404, "{reply:?}");
    }

    // The parked upload resumes where it was acknowledged.
    let status = server.request("GET", &parked, &[], b"").unwrap();
    assert_eq!(status.status, 204, "{status:?}");
    assert_eq!(status.header("range"), Some("0-99999"));
    let reply = server
        .request(
            "PATCH",
            &parked,
            &[h(
                "content-range",
                format!("100000-{}", parked_data.len() - 1),
            )],
            &parked_data[100_000..],
        )
        .unwrap();
    assert_eq!(reply.status, 202, "{reply:?}");
    let digest = Digest::sha256(&parked_data);
    let reply = server
        .request("PUT", &format!("{parked}?digest={digest}"), &[], b"")
        .unwrap();
    assert_eq!(reply.status, 201, "{reply:?}");

    // The request cut off by the crash left nothing behind.
    drop(cut_off);
    let status = server.request("GET", &streaming, &[], b"").unwrap();
    assert_eq!(status.status, 204, "{status:?}");
    assert_eq!(status.header("range"), Some("0-99999"));
    let digest = Digest::sha256(&parked_data);
    let reply = server
        .request(
            "PUT",
            &format!("{streaming}?digest={digest}"),
            &[h(
                "content-range",
                format!("100000-{}", parked_data.len() - 1),
            )],
            &parked_data[100_000..],
        )
        .unwrap();
    assert_eq!(reply.status, 201, "{reply:?}");

    // Uploads cut off by the crash: resumable from an acknowledged offset, or unknown.
    let mut resumed = 0;
    for up in &interrupted {
        let status = server.request("GET", &up.location, &[], b"").unwrap();
        match status.status {
            404 => assert_eq!(status.code().as_deref(), Some("BLOB_UPLOAD_UNKNOWN")),
            204 => {
                let offset = received(status.header("range").unwrap());
                assert!(
                    up.boundaries.contains(&offset),
                    "offset {offset} is not an acknowledged boundary of {:?}",
                    up.boundaries
                );
                if offset < up.data.len() {
                    let reply = server
                        .request(
                            "PATCH",
                            &up.location,
                            &[h(
                                "content-range",
                                format!("{offset}-{}", up.data.len() - 1),
                            )],
                            &up.data[offset..],
                        )
                        .unwrap();
                    assert_eq!(reply.status, 202, "{reply:?}");
                }
                let digest = Digest::sha256(&up.data);
                let reply = server
                    .request("PUT", &format!("{}?digest={digest}", up.location), &[], b"")
                    .unwrap();
                assert_eq!(reply.status, 201, "{reply:?}");
                resumed += 1;
            }
            other => panic!("unexpected status {other} for {}", up.location),
        }
    }
    eprintln!(
        "{} blobs and {} manifests acknowledged before the crash; {} uploads interrupted, {resumed} resumed",
        blobs.len(),
        manifests.len(),
        interrupted.len()
    );

    // A graceful stop, then no blob of the content store is damaged.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let store = FsStore::open(root.path()).unwrap();
    let (checked, problems) = berth_layerstore::content::fsck(&store).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert!(checked as usize >= blobs.len() / 2);
}
