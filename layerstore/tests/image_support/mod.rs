//! Shared by the image interop tests (`image_docker.rs`, `image_skopeo.rs`): finding the tools,
//! starting the Docker daemon, and building a tiny busybox image with the tar and flate2 crates.
//!
//! A missing tool fails the test with a message that says how to install it; nothing is
//! skipped.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Once;
use std::time::{Duration, Instant};

use berth_layerstore::Digest;
use berth_layerstore::content::{Ingester, Provider};
use berth_layerstore::image::{
    CanonicalBlob, ContainerConfig, Descriptor, History, ImageConfig, ImageManifest, Manifest,
    descriptor_digest, new_descriptor,
};
use berth_layerstore::media::{self, Compression};
use oci_spec::image::{ImageManifestBuilder, MediaType};

/// The Debian docker client, which speaks to the Debian 20.10 daemon.
pub const DOCKER: &str = "/usr/bin/docker";
pub const DOCKERD: &str = "/usr/sbin/dockerd";
pub const SKOPEO: &str = "/usr/bin/skopeo";
pub const BUSYBOX: &str = "/bin/busybox";

/// Panics, naming the setup script, unless `path` exists.
pub fn require_tool(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} not found (Debian package {package}): run scripts/setup.sh"
    );
}

/// Runs a command and returns its output, panicking with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}; run scripts/setup.sh"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn docker_answers() -> bool {
    Command::new(DOCKER)
        .arg("info")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

static DOCKERD_STARTED: Once = Once::new();

/// Makes sure the Docker daemon answers, starting it once per test binary if it does not.
pub fn ensure_docker() {
    require_tool(DOCKER, "docker.io");
    require_tool(DOCKERD, "docker.io");
    DOCKERD_STARTED.call_once(|| {
        if docker_answers() {
            return;
        }
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "(setsid {DOCKERD} >/var/log/dockerd.log 2>&1 &)"
            ))
            .status()
            .expect("start dockerd");
        assert!(status.success(), "starting {DOCKERD} failed: {status}");
        let deadline = Instant::now() + Duration::from_secs(90);
        while !docker_answers() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string("/var/log/dockerd.log").unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "dockerd did not answer within 90 s (run scripts/setup.sh); /var/log/dockerd.log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    assert!(
        docker_answers(),
        "{DOCKER} info fails: run scripts/setup.sh"
    );
}

/// Whether an ELF file asks for a program interpreter (is dynamically linked).
fn is_dynamic_elf(data: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    assert!(
        data.len() > 64 && data.starts_with(b"\x7fELF") && data[4] == 2 && data[5] == 1,
        "{BUSYBOX} is not a little-endian 64-bit ELF file"
    );
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]) == 3 // PT_INTERP
    })
}

/// The static busybox binary, which can run in an image with nothing else.
pub fn static_busybox() -> Vec<u8> {
    require_tool(BUSYBOX, "busybox-static");
    let data = std::fs::read(BUSYBOX).expect("read busybox");
    assert!(
        !is_dynamic_elf(&data),
        "{BUSYBOX} is dynamically linked: install busybox-static (run scripts/setup.sh)"
    );
    data
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// A layer tar holding `/bin/busybox` and the symlinks `/bin/sh` and `/bin/echo` to it.
pub fn busybox_layer_tar() -> Vec<u8> {
    let busybox = static_busybox();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    b.append_data(&mut h, "bin/", std::io::empty()).unwrap();
    let mut h = header(tar::EntryType::Regular, busybox.len() as u64, 0o755);
    b.append_data(&mut h, "bin/busybox", &busybox[..]).unwrap();
    for link in ["sh", "echo"] {
        let mut h = header(tar::EntryType::Symlink, 0, 0o777);
        b.append_link(&mut h, format!("bin/{link}"), "busybox")
            .unwrap();
    }
    b.into_inner().unwrap()
}

/// An image stored by [`busybox_image`].
pub struct TestImage {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub diff_ids: Vec<Digest>,
}

/// Stores a one-layer (gzip) busybox image whose command is `cmd`, with an OCI config and
/// manifest.
pub fn busybox_image<S: Ingester + ?Sized>(store: &S, cmd: &[&str]) -> TestImage {
    let tar = busybox_layer_tar();
    let diff_id = Digest::sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let layer = store.ingest_bytes(&gz).expect("ingest layer");
    let layer = new_descriptor(media::OCI_LAYER_GZIP, &layer.digest, layer.size);

    // The host's architecture, so that the daemon runs the image natively.
    let host = berth_layerstore::image::platform::host();
    let mut config = ImageConfig::new("linux", &host.architecture().to_string());
    config.variant = host.variant().clone();
    config.created = Some("2024-01-01T00:00:00Z".into());
    config.config = Some(ContainerConfig {
        env: Some(vec!["PATH=/bin".into()]),
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    });
    config.rootfs.diff_ids = vec![diff_id.clone()];
    config.history = Some(vec![History {
        created: Some("2024-01-01T00:00:00Z".into()),
        created_by: Some("berth test: busybox".into()),
        ..Default::default()
    }]);
    let config = config
        .to_blob(media::OCI_CONFIG)
        .unwrap()
        .ingest(store)
        .expect("ingest config");
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.clone())
        .layers(vec![layer])
        .build()
        .unwrap();
    let manifest = CanonicalBlob::new(media::OCI_MANIFEST, &manifest)
        .unwrap()
        .ingest(store)
        .expect("ingest manifest");
    TestImage {
        manifest,
        config,
        diff_ids: vec![diff_id],
    }
}

/// Reads an image manifest back from a store and checks it whole: the config parses, and every
/// layer, decompressed as its content says, hashes to the diff_id the config lists. Returns the
/// config digest and the diff_ids.
pub fn check_image<S: Provider + ?Sized>(
    store: &S,
    manifest: &Descriptor,
) -> (Digest, Vec<Digest>) {
    let (m, _) = Manifest::read(store, manifest).expect("read manifest");
    let config_desc = m.config().expect("an image manifest");
    let config_digest = descriptor_digest(&config_desc).unwrap();
    let config_bytes = store.read_all(&config_digest).expect("config in store");
    let config = ImageConfig::from_slice(&config_bytes, "config").expect("parse config");
    let layers = m.layers();
    assert_eq!(layers.len(), config.diff_ids().len(), "layers vs diff_ids");
    for (layer, diff_id) in layers.iter().zip(config.diff_ids()) {
        let digest = descriptor_digest(layer).unwrap();
        let mut head = [0u8; 4];
        store
            .read(&digest, Some(0..4))
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        let raw = store.read(&digest, None).expect("layer in store");
        let mut reader: Box<dyn Read> = match Compression::sniff(&head) {
            Compression::None => raw,
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw).unwrap()),
        };
        let mut hasher = diff_id.algorithm().hasher();
        std::io::copy(&mut reader, &mut hasher).unwrap();
        assert_eq!(&hasher.finish(), diff_id, "layer {digest}");
    }
    (config_digest, config.diff_ids().to_vec())
}

/// The manifest an OCI image manifest descriptor points to.
pub fn read_oci_manifest<S: Provider + ?Sized>(store: &S, desc: &Descriptor) -> ImageManifest {
    match Manifest::read(store, desc).expect("read manifest").0 {
        Manifest::Oci(m) => m,
        other => panic!("expected an OCI manifest, got {}", other.media_type()),
    }
}

/// A name unique to this process and `what`, for tags and files.
pub fn unique(what: &str) -> String {
    format!("{what}-{}", std::process::id())
}
