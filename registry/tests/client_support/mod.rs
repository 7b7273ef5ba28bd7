//! Shared pieces of the client tests: the peer registry (CNCF distribution's
//! `docker-registry`, started on a free port with its own config and storage), and sample
//! images built in a content store.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_layerstore::archive::{self, TarOptions};
use berth_layerstore::content::{Ingester, Provider};
use berth_layerstore::image::{
    CanonicalBlob, ContainerConfig, Descriptor, ImageConfig, new_descriptor,
};
use berth_layerstore::{Digest, media};
use berth_registry::client::{Client, ClientOptions, RetryPolicy};

/// Finds a program on PATH, or fails the test with a message saying what to install.
pub fn require_program(name: &str, hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{name}` is not on PATH; these tests need it ({hint})");
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A running `docker-registry serve`, stopped (by its pid) when dropped.
pub struct PeerRegistry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl PeerRegistry {
    pub fn start() -> PeerRegistry {
        let program = require_program(
            "docker-registry",
            "the CNCF distribution registry: `apt-get install docker-registry`",
        );
        let dir = tempfile::tempdir().expect("tempdir");
        for attempt in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                    dir.path().join("data").display()
                ),
            )
            .expect("write registry config");
            let log = std::fs::File::create(dir.path().join(format!("registry-{attempt}.log")))
                .expect("log file");
            let mut child = Command::new(&program)
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!(
                        "docker-registry exited with {status} on {addr}; trying another port"
                    );
                    break;
                }
                if std::net::TcpStream::connect(&addr).is_ok() {
                    return PeerRegistry { addr, dir, child };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let logs: Vec<String> = std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        panic!(
            "docker-registry did not start; logs:\n{}",
            logs.join("\n---\n")
        );
    }

    /// A reference in this registry.
    pub fn reference(&self, repo_and_tag: &str) -> berth_registry::reference::Reference {
        format!("{}/{repo_and_tag}", self.addr)
            .parse()
            .expect("reference")
    }
}

impl Drop for PeerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that ignores the user's Docker configuration and retries quickly.
pub fn test_client(customize: impl FnOnce(&mut ClientOptions)) -> Client {
    let mut opts = ClientOptions {
        use_docker_config: false,
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        },
        ..ClientOptions::default()
    };
    customize(&mut opts);
    Client::new(opts).expect("client")
}

/// An image put in a store by [`sample_image`].
pub struct Sample {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A real layer tar holding `file` with `content`.
pub fn layer_tar(file: &str, content: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(file), content).expect("write layer file");
    archive::write_dir(dir.path(), Vec::new(), &TarOptions::default()).expect("tar")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

/// Stores an OCI image for `os/arch` with one gzip layer per `(file, content)`.
pub fn sample_image<S: Ingester + ?Sized>(
    store: &S,
    arch: &str,
    files: &[(&str, &[u8])],
) -> Sample {
    let mut layers = Vec::new();
    let mut config = ImageConfig::new("linux", arch);
    for (file, content) in files {
        let tar = layer_tar(file, content);
        config.rootfs.diff_ids.push(Digest::sha256(&tar));
        let gz = gzip(&tar);
        let info = store.ingest_bytes(&gz).expect("ingest layer");
        layers.push(new_descriptor(
            media::OCI_LAYER_GZIP,
            &info.digest,
            info.size,
        ));
    }
    config.config = Some(ContainerConfig {
        cmd: Some(vec!["/bin/true".into()]),
        ..Default::default()
    });
    let config = config
        .to_blob(media::OCI_CONFIG)
        .expect("config blob")
        .ingest(store)
        .expect("ingest config");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": config,
        "layers": layers,
    });
    let manifest = CanonicalBlob::new(media::OCI_MANIFEST, &manifest)
        .expect("manifest blob")
        .ingest(store)
        .expect("ingest manifest");
    Sample {
        manifest,
        config,
        layers,
    }
}

/// Stores an OCI index of `manifests`, each with its platform `linux/<arch>`.
pub fn sample_index<S: Ingester + ?Sized>(
    store: &S,
    manifests: &[(&str, &Descriptor)],
) -> Descriptor {
    let entries: Vec<serde_json::Value> = manifests
        .iter()
        .map(|(arch, d)| {
            let mut v = serde_json::to_value(d).expect("descriptor json");
            v["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
            v
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": entries,
    });
    CanonicalBlob::new(media::OCI_INDEX, &index)
        .expect("index blob")
        .ingest(store)
        .expect("ingest index")
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough for upload tests.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Whether every blob `root` reaches is in `store` with the right digest.
pub fn assert_complete<S: Provider + ?Sized>(store: &S, root: &Descriptor) -> Vec<Descriptor> {
    let all = berth_layerstore::image::reachable(store, std::slice::from_ref(root))
        .expect("everything the root reaches is in the store");
    for d in &all {
        let digest = berth_layerstore::image::descriptor_digest(d).expect("digest");
        let bytes = store.read_all(&digest).expect("read blob");
        assert_eq!(
            Digest::of(digest.algorithm(), &bytes),
            digest,
            "blob {digest} is intact"
        );
    }
    all
}

/// A fresh filesystem content store in a temp dir.
pub fn fs_store() -> (tempfile::TempDir, berth_layerstore::content::fs::FsStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        berth_layerstore::content::fs::FsStore::open(dir.path().join("store")).expect("store");
    (dir, store)
}

/// The path of a file in a temp dir.
pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
