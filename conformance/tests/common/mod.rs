//! Shared by the integration tests: starting registries (CNCF distribution, `berth registry
//! serve`) on free loopback ports, finding tools, and building a small busybox image.
//!
//! Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth_conformance::digest;
use berth_conformance::http::Client;
use serde_json::json;
use tempfile::TempDir;

/// The workspace root, derived from this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("conformance/ sits inside the workspace")
        .to_path_buf()
}

/// The path of `tool` on `PATH`, or a panic telling how to install it.
pub fn require_tool(tool: &str) -> PathBuf {
    find_tool(tool)
        .unwrap_or_else(|| panic!("`{tool}` is not installed or not on PATH: run scripts/setup.sh"))
}

/// The path of `tool` on `PATH`, if any.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        let path = PathBuf::from(tool);
        return path.is_file().then_some(path);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    })
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// A registry process listening on 127.0.0.1, stopped (by its pid) when dropped.
pub struct Registry {
    /// What runs: "docker-registry" or "berth".
    pub name: &'static str,
    /// The port it listens on.
    pub port: u16,
    child: Child,
    log: PathBuf,
    /// Storage and log directory, removed when dropped.
    pub dir: TempDir,
}

impl Registry {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The last lines the server printed.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Spawns `command` (with output to a log file in `dir`) and waits until `GET /v2/` answers.
    fn spawn(name: &'static str, mut command: Command, port: u16, dir: TempDir) -> Registry {
        let log = dir.path().join("server.log");
        let out = fs::File::create(&log).expect("create the server log");
        let err = out.try_clone().expect("clone the log handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut registry = Registry {
            name,
            port,
            child,
            log,
            dir,
        };
        registry.wait_ready(Duration::from_secs(60));
        registry
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let client = Client::new(&self.url(), None, false).expect("a valid URL");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before answering on port {}:\n{}",
                    self.name,
                    self.port,
                    self.log_tail()
                );
            }
            if let Ok(response) = client.get("/v2/").send() {
                if response.status == 200 {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not answer GET /v2/ on port {} within {timeout:?}:\n{}",
                    self.name,
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts CNCF distribution (`docker-registry serve`) with deletion enabled on a free port.
pub fn start_distribution() -> Registry {
    let binary = require_tool("docker-registry");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("config.yml");
    let storage = dir.path().join("storage");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        ),
    )
    .expect("write the registry config");
    let mut command = Command::new(binary);
    command.arg("serve").arg(&config);
    Registry::spawn("docker-registry", command, port, dir)
}

/// The `berth` binary: `$BERTH_BIN`, else `<target dir>/debug/berth`, built with
/// `cargo build --bin berth` if it is missing.
pub fn berth_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("BERTH_BIN") {
                return PathBuf::from(path);
            }
            let root = workspace_root();
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .map(|dir| {
                    if dir.is_absolute() {
                        dir
                    } else {
                        root.join(dir)
                    }
                })
                .unwrap_or_else(|| root.join("target"));
            let binary = target.join("debug").join("berth");
            if !binary.is_file() {
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let status = Command::new(cargo)
                    .args(["build", "--bin", "berth"])
                    .current_dir(&root)
                    .status()
                    .expect("run cargo build --bin berth");
                assert!(status.success(), "cargo build --bin berth failed: {status}");
            }
            assert!(
                binary.is_file(),
                "{} does not exist after cargo build --bin berth",
                binary.display()
            );
            binary
        })
        .clone()
}

/// Starts `berth registry serve --addr 127.0.0.1:<port> --root <tmp>`.
pub fn start_berth() -> Registry {
    let binary = berth_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let root = dir.path().join("root");
    let mut command = Command::new(binary);
    command
        .args(["registry", "serve", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--root")
        .arg(&root)
        .env("BERTH_ROOT", dir.path().join("berth-root"));
    Registry::spawn("berth", command, port, dir)
}

/// Runs a command and returns its output, panicking with both streams if it fails.
pub fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let program = program.as_ref();
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program:?}: {e}"));
    assert!(
        output.status.success(),
        "{program:?} {args:?} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a command and returns its output whatever its status.
pub fn run_unchecked(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program:?}: {e}"))
}

/// Builds the busybox root filesystem tar the way a user would:
/// `mkdir -p r/bin && cp /bin/busybox r/bin/ && ln -s busybox r/bin/sh && tar -C r -cf r.tar .`
pub fn busybox_rootfs_tar(work: &Path) -> PathBuf {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("busybox is not installed: run scripts/setup.sh"));
    let rootfs = work.join("r");
    fs::create_dir_all(rootfs.join("bin")).expect("mkdir r/bin");
    fs::copy(&busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).expect("symlink sh");
    let tar = work.join("r.tar");
    run(
        require_tool("tar"),
        &[
            "-C",
            rootfs.to_str().expect("UTF-8 path"),
            "-cf",
            tar.to_str().expect("UTF-8 path"),
            ".",
        ],
    );
    tar
}

/// Writes an OCI image layout at `work/oci` holding one linux/amd64 image whose only layer is
/// the busybox tar, tagged `tag`; returns the layout directory and the manifest digest.
pub fn busybox_oci_layout(work: &Path, tag: &str) -> (PathBuf, String) {
    let layer = fs::read(busybox_rootfs_tar(work)).expect("read r.tar");
    let layer_digest = digest::sha256(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created_by": "berth-conformance busybox", "created": "2024-01-01T00:00:00Z" }],
        "created": "2024-01-01T00:00:00Z",
    }))
    .expect("serialize config");
    let config_digest = digest::sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .expect("serialize manifest");
    let manifest_digest = digest::sha256(&manifest);
    let layout = work.join("oci");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("mkdir blobs");
    for (digest, bytes) in [
        (&layer_digest, &layer),
        (&config_digest, &config),
        (&manifest_digest, &manifest),
    ] {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        fs::write(blobs.join(hex), bytes).expect("write blob");
    }
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("serialize index"),
    )
    .expect("write index.json");
    (layout, manifest_digest)
}

/// A short random suffix that keeps repository names unique between tests and runs.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", berth_conformance::content::random_id(8))
}

/// Pushes the image of an OCI layout written by [`busybox_oci_layout`] to `repository:tag` over
/// plain HTTP (POST then PUT for each blob, then the manifest), without any client tool.
pub fn push_layout(registry: &Registry, layout: &Path, repository: &str, tag: &str) -> String {
    let client = Client::new(&registry.url(), None, false).expect("a valid URL");
    let read_json = |path: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&fs::read(&path).expect("read layout file")).expect("JSON")
    };
    let blob_path = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
    };
    let index = read_json(layout.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("manifest digest")
        .to_owned();
    let manifest_bytes = fs::read(blob_path(&manifest_digest)).expect("read manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).expect("JSON");
    let mut blobs = vec![
        manifest["config"]["digest"]
            .as_str()
            .expect("config")
            .to_owned(),
    ];
    for layer in manifest["layers"].as_array().expect("layers") {
        blobs.push(layer["digest"].as_str().expect("layer digest").to_owned());
    }
    for digest in blobs {
        let bytes = fs::read(blob_path(&digest)).expect("read blob");
        let started = client
            .post(&format!("/v2/{repository}/blobs/uploads/"))
            .send()
            .expect("POST upload");
        assert_eq!(started.status, 202, "{started}");
        let mut location = started
            .location()
            .expect("Location header")
            .expect("valid Location");
        location.query_pairs_mut().append_pair("digest", &digest);
        let done = client
            .request_url(reqwest::Method::PUT, location)
            .header("Content-Type", "application/octet-stream")
            .body(bytes)
            .send()
            .expect("PUT upload");
        assert_eq!(done.status, 201, "{done}");
    }
    let pushed = client
        .put(&format!("/v2/{repository}/manifests/{tag}"))
        .header(
            "Content-Type",
            manifest["mediaType"].as_str().expect("mediaType"),
        )
        .body(manifest_bytes)
        .send()
        .expect("PUT manifest");
    assert_eq!(pushed.status, 201, "{pushed}");
    manifest_digest
}

/// `HEAD /v2/<repository>/manifests/<reference>`: the status and `Docker-Content-Digest`.
pub fn head_manifest(
    registry: &Registry,
    repository: &str,
    reference: &str,
) -> (u16, Option<String>) {
    let client = Client::new(&registry.url(), None, false).expect("a valid URL");
    let response = client
        .head(&format!("/v2/{repository}/manifests/{reference}"))
        .header(
            "Accept",
            berth_conformance::content::media_type::accept_manifests(),
        )
        .send()
        .expect("HEAD manifest");
    (
        response.status,
        response.header("docker-content-digest").map(str::to_owned),
    )
}
