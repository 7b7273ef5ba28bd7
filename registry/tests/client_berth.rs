//! The client against berth's own registry server, served in process on a loopback port with
//! every request logged: single-request uploads of small blobs, and non-distributable layers
//! through push, pull and copy.

mod client_support;

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::middleware::Next;
use berth_layerstore::content::fs::FsStore;
use berth_layerstore::content::memory::MemoryStore;
use berth_layerstore::content::{Ingester, Provider};
use berth_layerstore::image::{CanonicalBlob, Descriptor, descriptor_digest, new_descriptor};
use berth_layerstore::{Digest, media};
use berth_registry::client::{
    Client, CopyOptions, Counters, ImageLocation, PullOptions, PushOptions, copy,
};
use berth_registry::reference::Reference;
use berth_registry::server::{AppState, Config, app};
use client_support::*;
use serde_json::json;

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Logged {
    method: String,
    path: String,
    query: String,
}

/// `berth registry serve` on a loopback port, over a temporary root.
struct Berth {
    addr: String,
    log: Arc<Mutex<Vec<Logged>>>,
    task: tokio::task::JoinHandle<()>,
    _root: tempfile::TempDir,
}

impl Berth {
    async fn start() -> Berth {
        let root = tempfile::tempdir().unwrap();
        let state = AppState::open(root.path(), Config::default()).unwrap();
        let log: Arc<Mutex<Vec<Logged>>> = Arc::default();
        let recorder = log.clone();
        let router = app(state).layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                recorder.lock().unwrap().push(Logged {
                    method: req.method().to_string(),
                    path: req.uri().path().to_owned(),
                    query: req.uri().query().unwrap_or("").to_owned(),
                });
                next.run(req)
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Berth {
            addr,
            log,
            task,
            _root: root,
        }
    }

    fn reference(&self, repo_and_tag: &str) -> Reference {
        format!("{}/{repo_and_tag}", self.addr).parse().unwrap()
    }

    /// Every request so far; `clear` empties the log.
    fn log(&self, clear: bool) -> Vec<Logged> {
        let mut log = self.log.lock().unwrap();
        if clear {
            std::mem::take(&mut *log)
        } else {
            log.clone()
        }
    }

    /// The status of `GET /v2/<repo>/blobs/<digest>`.
    async fn blob_status(&self, repo: &str, digest: &Digest) -> u16 {
        reqwest::get(format!("http://{}/v2/{repo}/blobs/{digest}", self.addr))
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn counters() -> Arc<Counters> {
    Arc::new(Counters::default())
}

/// Whether a request names `digest`, in its path or its query.
fn names(l: &Logged, digest: &Digest) -> bool {
    l.path.contains(digest.hex()) || l.query.contains(digest.hex())
}

/// Whether any request of the log names `digest`.
fn mentions(log: &[Logged], digest: &Digest) -> bool {
    log.iter().any(|l| names(l, digest))
}

fn is_single_post(l: &Logged) -> bool {
    l.method == "POST" && l.path.ends_with("/blobs/uploads/") && l.query.starts_with("digest=")
}

#[tokio::test]
async fn small_blobs_are_pushed_in_a_single_post() {
    let berth = Berth::start().await;
    let client = test_client(|_| {});
    let store = MemoryStore::new();
    let sample = sample_image(&store, "amd64", &[("small", b"a small layer")]);
    // Past the single-request threshold (1 MiB by default), but monolithic.
    let big = noise(1_500_000, 5);
    let big = store.ingest_bytes(&big).unwrap();
    let big_layer = new_descriptor(media::OCI_LAYER_TAR, &big.digest, big.size);
    let manifest = CanonicalBlob::new(
        media::OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": sample.config,
            "layers": [sample.layers[0], big_layer],
        }),
    )
    .unwrap()
    .ingest(&store)
    .unwrap();
    let blobs = [&sample.config, &sample.layers[0], &big_layer];

    let reference = berth.reference("single/post:v1");
    let c = counters();
    client
        .push(
            &store,
            &manifest,
            &reference,
            &PushOptions {
                progress: c.clone(),
                ..PushOptions::default()
            },
        )
        .await
        .expect("push");
    assert_eq!(Counters::get(&c.uploaded_monolithic), 3);
    assert_eq!(
        Counters::get(&c.bytes),
        blobs.iter().map(|d| d.size()).sum::<u64>(),
        "every byte reported once"
    );
    let log = berth.log(true);
    for small in [&sample.config, &sample.layers[0]] {
        let digest = descriptor_digest(small).unwrap();
        let requests: Vec<&Logged> = log
            .iter()
            .filter(|l| l.path.contains("/blobs/uploads/") && names(l, &digest))
            .collect();
        assert_eq!(requests.len(), 1, "{digest}: {log:#?}");
        assert!(is_single_post(requests[0]), "{:?}", requests[0]);
    }
    // The big layer went POST then PUT.
    let posts = log
        .iter()
        .filter(|l| l.method == "POST" && l.query.is_empty())
        .count();
    let puts = log
        .iter()
        .filter(|l| l.method == "PUT" && l.path.contains("/blobs/uploads/"))
        .count();
    assert_eq!((posts, puts), (1, 1), "{log:#?}");

    // What was pushed pulls back intact.
    let pulled_store = MemoryStore::new();
    let pulled = client
        .pull(&reference, &pulled_store, &PullOptions::default())
        .await
        .expect("pull");
    assert_eq!(pulled.root.digest(), manifest.digest());
    assert_eq!(assert_complete(&pulled_store, &pulled.root).len(), 4);

    // With single requests turned off, every blob opens a session.
    let client = test_client(|o| o.single_post_threshold = 0);
    client
        .push(
            &store,
            &manifest,
            &berth.reference("sessions/only:v1"),
            &PushOptions::default(),
        )
        .await
        .expect("push without single requests");
    let log = berth.log(true);
    assert!(!log.iter().any(is_single_post), "{log:#?}");
    let puts = log
        .iter()
        .filter(|l| l.method == "PUT" && l.path.contains("/blobs/uploads/"))
        .count();
    assert_eq!(puts, 3);
}

/// An image whose manifest references a distributable layer, a non-distributable layer the
/// store holds, and one it does not: OCI (`nondistributable` types) or Docker (`foreign`).
struct ForeignImage {
    manifest: Descriptor,
    manifest_bytes: Vec<u8>,
    layer: Digest,
    held: Digest,
    absent: Digest,
}

fn foreign_image(store: &MemoryStore, docker: bool) -> ForeignImage {
    let sample = sample_image(store, "amd64", &[("app", b"distributable layer")]);
    let held = store
        .ingest_bytes(&gzip(&layer_tar("os", b"licensed bits")))
        .unwrap();
    let absent = Digest::sha256(b"bytes that live elsewhere");
    let (manifest_type, config_type, layer_type, foreign_type) = if docker {
        (
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER_GZIP,
            media::DOCKER_LAYER_FOREIGN_GZIP,
        )
    } else {
        (
            media::OCI_MANIFEST,
            media::OCI_CONFIG,
            media::OCI_LAYER_GZIP,
            media::OCI_LAYER_NONDIST_GZIP,
        )
    };
    let foreign = |digest: &Digest, size: u64| {
        json!({
            "mediaType": foreign_type,
            "digest": digest.to_string(),
            "size": size,
            "urls": [format!("https://foreign.invalid/{}", digest.hex())],
        })
    };
    let layer = &sample.layers[0];
    let body = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {
            "mediaType": config_type,
            "digest": sample.config.digest().to_string(),
            "size": sample.config.size(),
        },
        "layers": [
            {"mediaType": layer_type, "digest": layer.digest().to_string(), "size": layer.size()},
            foreign(&held.digest, held.size),
            foreign(&absent, 25),
        ],
    });
    let manifest = CanonicalBlob::new(manifest_type, &body)
        .unwrap()
        .ingest(store)
        .unwrap();
    let manifest_bytes = store
        .read_all(&descriptor_digest(&manifest).unwrap())
        .unwrap();
    ForeignImage {
        manifest,
        manifest_bytes,
        layer: descriptor_digest(layer).unwrap(),
        held: held.digest,
        absent,
    }
}

async fn copy_between(client: &Client, src: &str, dst: &str) -> Digest {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::open(dir.path().join("store")).unwrap());
    copy::copy(
        client,
        store,
        &src.parse::<ImageLocation>().unwrap(),
        &dst.parse::<ImageLocation>().unwrap(),
        &CopyOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("copy {src} -> {dst}: {e}"))
    .digest
}

#[tokio::test]
async fn non_distributable_layers_are_neither_pushed_nor_fetched() {
    let berth = Berth::start().await;
    let client = test_client(|_| {});
    for (docker, repo) in [(false, "nd/oci"), (true, "nd/docker")] {
        let store = MemoryStore::new();
        let image = foreign_image(&store, docker);
        let digest = descriptor_digest(&image.manifest).unwrap();

        // Push: the foreign layer the store holds is not sent.
        let c = counters();
        let pushed = client
            .push(
                &store,
                &image.manifest,
                &berth.reference(&format!("{repo}:v1")),
                &PushOptions {
                    progress: c.clone(),
                    ..PushOptions::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("push {repo}: {e}"));
        assert_eq!(pushed.blobs, 2, "config and the distributable layer");
        assert_eq!(c.uploaded(), 2);
        let log = berth.log(true);
        assert!(!mentions(&log, &image.held), "{log:#?}");
        assert!(!mentions(&log, &image.absent), "{log:#?}");
        assert_eq!(berth.blob_status(repo, &image.layer).await, 200);
        assert_eq!(berth.blob_status(repo, &image.held).await, 404);
        berth.log(true);

        // Pull: the foreign layers are not fetched, the manifest is stored as it was.
        let (_dir, pulled_store) = fs_store();
        let c = counters();
        let pulled = client
            .pull(
                &berth.reference(&format!("{repo}:v1")),
                &pulled_store,
                &PullOptions {
                    progress: c.clone(),
                    ..PullOptions::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("pull {repo}: {e}"));
        assert_eq!(pulled.root.digest(), image.manifest.digest());
        assert_eq!(pulled.blobs.len(), 2);
        assert_eq!(Counters::get(&c.downloaded), 2);
        assert_eq!(
            pulled_store.read_all(&digest).unwrap(),
            image.manifest_bytes
        );
        assert!(!pulled_store.exists(&image.held).unwrap());
        assert!(!pulled_store.exists(&image.absent).unwrap());
        let log = berth.log(true);
        assert!(!mentions(&log, &image.held), "{log:#?}");
        assert!(!mentions(&log, &image.absent), "{log:#?}");

        // Copy to another repository and to a layout: same manifest, no foreign bytes.
        let src = format!("docker://{}/{repo}:v1", berth.addr);
        let copied = copy_between(
            &client,
            &src,
            &format!("docker://{}/{repo}-copy:v1", berth.addr),
        )
        .await;
        assert_eq!(copied, digest);
        let work = tempfile::tempdir().unwrap();
        let layout = work.path().join("layout");
        let copied = copy_between(&client, &src, &format!("oci:{}:v1", layout.display())).await;
        assert_eq!(copied, digest);
        let log = berth.log(true);
        assert!(!mentions(&log, &image.held), "{log:#?}");
        assert!(!mentions(&log, &image.absent), "{log:#?}");
        let blob_file = |d: &Digest| layout.join("blobs/sha256").join(d.hex());
        assert_eq!(
            std::fs::read(blob_file(&digest)).unwrap(),
            image.manifest_bytes
        );
        assert!(blob_file(&image.layer).is_file());
        assert!(!blob_file(&image.held).exists());
        assert!(!blob_file(&image.absent).exists());
        let resolved = client
            .resolve(&berth.reference(&format!("{repo}-copy:v1")))
            .await
            .unwrap();
        assert_eq!(resolved.digest(), image.manifest.digest());
    }
}
