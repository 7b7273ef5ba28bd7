//! Shared by the `berth build` tests: running berth (also kept off the network), a busybox
//! base image made by hand and loaded into a store, images removed from docker when a test
//! ends, the leftovers a build must not leave (active snapshots, mounts, temporary files of the
//! snapshot store, the sandbox, `RUN --mount` and the image store) and the state of a store
//! (its images, its damaged blobs).
//!
//! The base image: a static busybox tree with its links and `/etc/passwd`, made into a layer
//! by `berth layer create`, with a config and a manifest written here, packed as an OCI
//! archive and given to `berth load`.
//!
//! A test binary that uses this module declares `mod registry_support;` too.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_layerstore::Digest;
use berth_layerstore::content::fs::FsStore;
use serde_json::{Value, json};

use crate::registry_support::*;

/// The busybox applets the base image links in `/bin`.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "rm", "ls", "test", "mkdir", "pwd", "id", "false", "true", "wget", "grep",
    "sleep", "head", "wc", "tr", "seq", "cut",
];

/// Runs berth and returns (stdout, stderr), panicking with its stderr when it fails.
pub fn berth(root: &Path, args: &[&str]) -> (String, String) {
    let out = berth_out(root, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "berth {args:?} failed with {}:\nstdout: {stdout}\nstderr: {stderr}",
        out.status,
    );
    (stdout, stderr)
}

/// Runs berth, expecting it to fail; returns its stderr.
pub fn berth_fails(root: &Path, args: &[&str]) -> String {
    let out = berth_out(root, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "berth {args:?} succeeded:\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// A proxy address that refuses connections: loopback, port 1.
const REFUSING_PROXY: &str = "http://127.0.0.1:1";

/// Runs berth as `berth_out` does, with every proxy variable set to a loopback port that
/// refuses connections: a build that reaches for a registry (an image that exists nowhere, a
/// `--from` taken for a Docker Hub image) fails at once and nothing leaves the machine.
pub fn berth_offline(root: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args(args)
        .env("BERTH_ROOT", root)
        .env("BERTH_LOG", "warn");
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        command
            .env(var, REFUSING_PROXY)
            .env(var.to_lowercase(), REFUSING_PROXY);
    }
    command
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .expect("run berth")
}

/// Removes images from the daemon when dropped, so a failing test leaves nothing behind.
pub struct DockerImages(pub Vec<String>);

impl Drop for DockerImages {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new(DOCKER)
                .args(["rmi", "--force", image])
                .output();
        }
    }
}

/// A work directory, the store root in it, and a busybox base loaded there under
/// `localhost/berth-test/<name>:<pid>`: what most build tests start from.
pub fn work_with_base(name: &str) -> (tempfile::TempDir, PathBuf, String) {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let base = format!("localhost/berth-test/{name}:{}", std::process::id());
    load_busybox_base(work.path(), &root, &base);
    (work, root, base)
}

/// Loads a busybox base image named `name` into the store under `root`; `dir` holds the
/// files it is made from.
pub fn load_busybox_base(dir: &Path, root: &Path, name: &str) {
    require_tool(BUSYBOX, "busybox-static");
    let tree = dir.join("base");
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::create_dir_all(tree.join("tmp")).unwrap();
    fs::copy(BUSYBOX, tree.join("bin/busybox")).unwrap();
    for link in APPLETS {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(link)).unwrap();
    }
    fs::write(
        tree.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(tree.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    fs::write(tree.join("etc/doomed"), "to be deleted\n").unwrap();
    let layer_file = dir.join("base.tar.gz");
    let (out, _) = berth(
        &dir.join("unused-root"),
        &[
            "layer",
            "create",
            tree.to_str().unwrap(),
            "-o",
            layer_file.to_str().unwrap(),
        ],
    );
    let layer: Value = serde_json::from_str(&out).unwrap();
    let layer_bytes = fs::read(&layer_file).unwrap();
    let config = json!({
        "created": "2026-01-02T03:04:05Z",
        "architecture": go_arch(),
        "os": "linux",
        "config": {"Env": ["PATH=/bin", "BASE=from-base"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer["diff_id"]]},
        "history": [{"created": "2026-01-02T03:04:05Z", "created_by": "cli_build base"}],
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let manifest_bytes = manifest_over(&config_bytes, &layer);
    let root_descriptor = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": Digest::sha256(&manifest_bytes).to_string(),
        "size": manifest_bytes.len(),
    });
    let archive = dir.join("base-oci.tar");
    pack_oci(
        &archive,
        &[&layer_bytes, &config_bytes, &manifest_bytes],
        root_descriptor,
        name,
    );
    berth(root, &["load", "-i", archive.to_str().unwrap()]);
}

/// Active snapshots left in the store under `root`.
pub fn active_snapshots(root: &Path) -> Vec<String> {
    match fs::read_dir(root.join("snapshots/active")) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Lines of `/proc/self/mountinfo` that mention `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

/// The places under a store's `root` where something that outlives a build, failed or not, is
/// a leftover, each with the entries that are not: active snapshots and their locks, leases,
/// the snapshot store's work in progress (extractions, removals), temporary copies of the
/// build context for `RUN --mount=type=bind`, the sandbox's run state directories, the image
/// store's staging areas and the content store's ingests in progress.
const TRANSIENT_DIRS: &[(&str, &[&str])] = &[
    ("snapshots/active", &[]),
    ("snapshots/leases", &[]),
    ("snapshots/tmp", &[]),
    ("run-mounts/tmp", &[]),
    ("sandbox", &[".lock"]),
    ("images/staging", &[]),
    ("content/ingest", &[]),
];

/// What a finished build left behind in the store under `root`: the entries of the places
/// [`TRANSIENT_DIRS`] lists (as paths relative to `root`) and the mounts under `root` (lines
/// of `/proc/self/mountinfo`, prefixed `mount: `). Empty when the store is clean.
pub fn leftovers(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for (dir, allowed) in TRANSIENT_DIRS {
        let Ok(entries) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !allowed.contains(&name.as_str()) {
                found.push(format!("{dir}/{name}"));
            }
        }
    }
    found.extend(mounts_under(root).iter().map(|m| format!("mount: {m}")));
    found.sort();
    found
}

/// The images of the store under `root`, as `berth images --format json` lists them:
/// (name, image id, manifest digest).
pub fn image_records(root: &Path) -> BTreeSet<(String, String, String)> {
    let (out, _) = berth(root, &["images", "--format", "json"]);
    out.lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            let field = |k: &str| row[k].as_str().unwrap_or_default().to_owned();
            (field("Name"), field("FullID"), field("Digest"))
        })
        .collect()
}

/// The blobs of the content store under `root` whose bytes no longer hash to their digest, or
/// that cannot be read.
pub fn damaged_blobs(root: &Path) -> Vec<String> {
    let store = FsStore::open(root.join("content")).unwrap();
    let (_, problems) = berth_layerstore::content::fsck(&store).unwrap();
    problems
        .iter()
        .map(|p| format!("{}: {}", p.digest, p.error))
        .collect()
}

/// Writes the files of a build context under `dir`: `(path, contents)`, directories made as
/// needed.
pub fn write_context(dir: &Path, files: &[(&str, &str)]) {
    for (path, contents) in files {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }
}

/// The names of the members of a tar stream.
pub fn tar_members(bytes: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            e.path().unwrap().to_string_lossy().into_owned()
        })
        .collect()
}

/// The contents of the member `name` of a tar stream.
pub fn tar_member(bytes: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if path.trim_start_matches("./") == name {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            return Some(data);
        }
    }
    None
}

/// The steps of a plain progress log (`--progress plain`), in the order they started:
/// (name, whether it came from the cache).
pub fn steps(stderr: &str) -> Vec<(String, bool)> {
    let mut names: std::collections::BTreeMap<usize, String> = Default::default();
    let mut order = Vec::new();
    let mut cached = BTreeSet::new();
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((n, text)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<usize>() else { continue };
        if text == "CACHED" {
            cached.insert(n);
        } else if text.starts_with('[') && !names.contains_key(&n) {
            names.insert(n, text.to_owned());
            order.push(n);
        }
    }
    order
        .into_iter()
        .map(|n| (names[&n].clone(), cached.contains(&n)))
        .collect()
}

/// The names of the steps of a plain progress log that ran (not cached), FROM lines left out.
pub fn ran(stderr: &str) -> Vec<String> {
    steps(stderr)
        .into_iter()
        .filter(|(name, cached)| !cached && !name.contains("] FROM "))
        .map(|(name, _)| name)
        .collect()
}

/// How many steps of a plain progress log came from a cache.
pub fn cached(stderr: &str) -> usize {
    steps(stderr).iter().filter(|(_, c)| *c).count()
}

/// `berth build --progress plain EXTRA CONTEXT`: (image id, stderr).
pub fn build_plain(root: &Path, context: &Path, extra: &[&str]) -> (String, String) {
    let mut args = vec!["build", "--progress", "plain"];
    args.extend_from_slice(extra);
    args.push(context.to_str().unwrap());
    let (stdout, stderr) = berth(root, &args);
    (stdout.trim().to_owned(), stderr)
}

/// The layer digests of an image of the store, from `berth inspect`.
pub fn image_layers(root: &Path, name: &str) -> Vec<String> {
    let (stdout, _) = berth(root, &["inspect", name]);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    v[0]["Layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no layers in {v}"))
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}
