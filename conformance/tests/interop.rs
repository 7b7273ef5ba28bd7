//! Real clients against `berth registry serve`: docker, skopeo, containerd's `ctr` and podman
//! push to it and pull from it. Each test starts its own server, uses repository names of its
//! own, and removes what it put in the docker daemon or containerd. A missing tool fails the
//! test with the tool's name; nothing is skipped silently.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use berth_conformance::digest;
use common::{Registry, find_tool, require_tool, run, run_unchecked, unique};
use serde_json::Value;

/// The Debian docker client, which speaks the API version of the Debian daemon.
const DOCKER: &str = "/usr/bin/docker";
/// Docker's containerd, which `ctr` talks to.
const CONTAINERD_SOCKET: &str = "/run/docker/containerd/containerd.sock";
/// The containerd namespace the `ctr` test works in.
const CTR_NAMESPACE: &str = "berthtest";

/// The docker client, after checking that the daemon answers.
fn docker() -> PathBuf {
    let docker = require_tool(DOCKER);
    let info = run_unchecked(&docker, &["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        info.status.success(),
        "the docker daemon does not answer: run scripts/setup.sh\n{}",
        String::from_utf8_lossy(&info.stderr)
    );
    docker
}

/// Removes an image from the docker daemon when dropped.
struct DockerImage<'a> {
    docker: &'a Path,
    reference: String,
}

impl Drop for DockerImage<'_> {
    fn drop(&mut self) {
        let _ = run_unchecked(self.docker, &["rmi", "-f", &self.reference]);
    }
}

/// Removes images from the `ctr` test namespace when dropped.
struct CtrImages<'a> {
    ctr: &'a Path,
    references: Vec<String>,
}

impl Drop for CtrImages<'_> {
    fn drop(&mut self) {
        for reference in &self.references {
            let _ = run_unchecked(
                self.ctr,
                &[
                    "--address",
                    CONTAINERD_SOCKET,
                    "-n",
                    CTR_NAMESPACE,
                    "images",
                    "rm",
                    reference,
                ],
            );
        }
    }
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The repository part of `host/repository:tag`.
fn repository_of<'a>(registry: &Registry, reference: &'a str) -> &'a str {
    let rest = reference
        .strip_prefix(&format!("{}/", registry.host()))
        .expect("reference on this registry");
    rest.rsplit_once(':').map_or(rest, |(repo, _)| repo)
}

#[test]
fn docker_pushes_pulls_and_runs_an_image() {
    let docker = docker();
    let registry = common::start_berth();
    let work = tempfile::tempdir().expect("temp dir");
    let tar = common::busybox_rootfs_tar(work.path());
    let reference = format!("{}/test/{}:1", registry.host(), unique("busybox"));
    let _cleanup = DockerImage {
        docker: &docker,
        reference: reference.clone(),
    };

    run(&docker, &["import", path_str(&tar), &reference]);
    let pushed = stdout(&run(&docker, &["push", &reference]));
    let pushed_digest = pushed
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("docker push printed no digest:\n{pushed}"))
        .to_owned();
    let repository = repository_of(&registry, &reference);
    assert_eq!(
        common::head_manifest(&registry, repository, "1"),
        (200, Some(pushed_digest.clone())),
        "berth does not serve the manifest docker pushed"
    );

    run(&docker, &["rmi", &reference]);
    run(&docker, &["pull", &reference]);
    let repo_digests = stdout(&run(
        &docker,
        &[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &reference,
        ],
    ));
    assert!(
        repo_digests.contains(&pushed_digest),
        "pulled image has digests {repo_digests}, expected {pushed_digest}"
    );
    let ran = run(
        &docker,
        &["run", "--rm", &reference, "/bin/busybox", "echo", "ok"],
    );
    assert_eq!(stdout(&ran).trim(), "ok");
}

/// Checks every blob of an OCI layout hashes to its name and returns the image's config.
fn verify_layout(layout: &Path) -> (Value, Vec<Value>) {
    let blobs = layout.join("blobs/sha256");
    for entry in fs::read_dir(&blobs).expect("read blobs") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("blob name");
        let bytes = fs::read(&path).expect("read blob");
        assert_eq!(
            digest::sha256(&bytes),
            format!("sha256:{name}"),
            "corrupt blob {}",
            path.display()
        );
    }
    let read = |digest: &str| -> Value {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        serde_json::from_slice(&fs::read(blobs.join(hex)).expect("read blob")).expect("JSON")
    };
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index.json"))
            .expect("JSON");
    let manifest = read(index["manifests"][0]["digest"].as_str().expect("digest"));
    let config = read(
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    );
    let layers = manifest["layers"].as_array().expect("layers").clone();
    (config, layers)
}

/// The sha256 of a layer's uncompressed tar, which must equal the config's diff_id.
fn diff_id(layout: &Path, layer: &Value) -> String {
    let digest = layer["digest"].as_str().expect("layer digest");
    let path = layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("sha256"));
    let media_type = layer["mediaType"].as_str().unwrap_or_default();
    if media_type.ends_with("gzip") {
        let gzip = require_tool("gzip");
        let out = run(&gzip, &["-dc", path_str(&path)]);
        digest::sha256(&out.stdout)
    } else {
        assert!(
            media_type.ends_with(".tar"),
            "unexpected layer type {media_type}"
        );
        digest::sha256(&fs::read(&path).expect("read layer"))
    }
}

#[test]
fn skopeo_copies_to_and_from_berth_and_inspects() {
    let skopeo = require_tool("skopeo");
    let registry = common::start_berth();
    let work = tempfile::tempdir().expect("temp dir");
    let (layout, _) = common::busybox_oci_layout(work.path(), "1");
    let rootfs_digest = digest::sha256(&fs::read(work.path().join("r.tar")).expect("r.tar"));
    let from_oci = format!("{}/test/{}:1", registry.host(), unique("skopeo-oci"));
    let from_archive = format!("{}/test/{}:1", registry.host(), unique("skopeo-archive"));

    // oci: -> berth
    run(
        &skopeo,
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:1", path_str(&layout)),
            &format!("docker://{from_oci}"),
        ],
    );
    let inspected: Value = serde_json::from_slice(
        &run(
            &skopeo,
            &[
                "inspect",
                "--tls-verify=false",
                &format!("docker://{from_oci}"),
            ],
        )
        .stdout,
    )
    .expect("skopeo inspect prints JSON");
    assert_eq!(inspected["Architecture"], "amd64");
    assert_eq!(inspected["Os"], "linux");
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(1));
    let (status, served) =
        common::head_manifest(&registry, repository_of(&registry, &from_oci), "1");
    assert_eq!(status, 200);
    assert_eq!(served.as_deref(), inspected["Digest"].as_str());

    // berth -> docker-archive: -> berth
    let archive = work.path().join("image.tar");
    run(
        &skopeo,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{from_oci}"),
            &format!("docker-archive:{}:test/archived:1", path_str(&archive)),
        ],
    );
    run(
        &skopeo,
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("docker-archive:{}", path_str(&archive)),
            &format!("docker://{from_archive}"),
        ],
    );
    let raw: Value = serde_json::from_slice(
        &run(
            &skopeo,
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{from_archive}"),
            ],
        )
        .stdout,
    )
    .expect("raw manifest is JSON");
    assert_eq!(raw["schemaVersion"], 2);

    // berth -> oci:, and the layer still holds the original root filesystem
    let back = work.path().join("back");
    run(
        &skopeo,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{from_archive}"),
            &format!("oci:{}:1", path_str(&back)),
        ],
    );
    let (config, layers) = verify_layout(&back);
    assert_eq!(layers.len(), 1);
    assert_eq!(config["rootfs"]["diff_ids"][0], rootfs_digest.as_str());
    assert_eq!(diff_id(&back, &layers[0]), rootfs_digest);
}

#[test]
fn ctr_pulls_from_and_pushes_to_berth() {
    let ctr = require_tool("ctr");
    assert!(
        Path::new(CONTAINERD_SOCKET).exists(),
        "{CONTAINERD_SOCKET} is missing (docker's containerd is not running): run scripts/setup.sh"
    );
    let registry = common::start_berth();
    let work = tempfile::tempdir().expect("temp dir");
    let (layout, manifest_digest) = common::busybox_oci_layout(work.path(), "1");
    let repository = format!("test/{}", unique("ctr"));
    common::push_layout(&registry, &layout, &repository, "1");
    let reference = format!("{}/{repository}:1", registry.host());
    let pushed = format!("{}/test/{}:1", registry.host(), unique("ctr-pushed"));
    let _cleanup = CtrImages {
        ctr: &ctr,
        references: vec![reference.clone(), pushed.clone()],
    };
    let ctr_args = |args: &[&str]| -> Vec<String> {
        ["--address", CONTAINERD_SOCKET, "-n", CTR_NAMESPACE]
            .iter()
            .chain(args)
            .map(|s| (*s).to_owned())
            .collect()
    };
    let ctr_run = |args: &[&str]| {
        let args = ctr_args(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&ctr, &args)
    };

    ctr_run(&["images", "pull", "--plain-http", &reference]);
    let listed = stdout(&ctr_run(&["images", "ls"]));
    let line = listed
        .lines()
        .find(|l| l.starts_with(&reference))
        .unwrap_or_else(|| panic!("{reference} is not listed by ctr:\n{listed}"));
    assert!(
        line.contains(&manifest_digest),
        "ctr pulled another manifest than {manifest_digest}: {line}"
    );

    ctr_run(&["images", "tag", &reference, &pushed]);
    ctr_run(&["images", "push", "--plain-http", &pushed]);
    assert_eq!(
        common::head_manifest(&registry, repository_of(&registry, &pushed), "1"),
        (200, Some(manifest_digest)),
        "berth does not serve the manifest ctr pushed"
    );
}

#[test]
fn podman_pushes_to_and_pulls_from_berth() {
    let podman = find_tool("podman").unwrap_or_else(|| {
        panic!(
            "`podman` is not installed: run scripts/setup.sh (its package list must include \
             podman for this test)"
        )
    });
    let registry = common::start_berth();
    // podman names an image pulled from `oci:DIR` after DIR, and image names must be lower
    // case, so the layout goes in a directory whose name has no capitals (unlike tempdir's).
    let work = LowercaseTempDir::new();
    let (layout, _) = common::busybox_oci_layout(work.path(), "1");
    let reference = format!("{}/test/{}:1", registry.host(), unique("podman"));
    let _cleanup = PodmanImage {
        podman: &podman,
        references: vec![reference.clone()],
    };

    let loaded = stdout(&run(
        &podman,
        &["pull", &format!("oci:{}:1", path_str(&layout))],
    ));
    let image_id = loaded
        .lines()
        .last()
        .unwrap_or_else(|| panic!("podman pull printed no image id"))
        .trim()
        .to_owned();
    run(&podman, &["tag", &image_id, &reference]);
    run(&podman, &["push", "--tls-verify=false", &reference]);
    let (status, _) = common::head_manifest(&registry, repository_of(&registry, &reference), "1");
    assert_eq!(status, 200, "berth does not serve what podman pushed");
    run(&podman, &["rmi", "-f", &reference, &image_id]);
    run(&podman, &["pull", "--tls-verify=false", &reference]);
    let listed = stdout(&run(
        &podman,
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    ));
    assert!(listed.lines().any(|l| l == reference), "{listed}");
}

/// A temporary directory whose whole path is lower case, removed when dropped.
struct LowercaseTempDir(PathBuf);

impl LowercaseTempDir {
    fn new() -> Self {
        let dir = PathBuf::from("/tmp").join(unique("berth-podman"));
        std::fs::create_dir(&dir).expect("create temp dir");
        LowercaseTempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for LowercaseTempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes images from podman's store when dropped.
struct PodmanImage<'a> {
    podman: &'a Path,
    references: Vec<String>,
}

impl Drop for PodmanImage<'_> {
    fn drop(&mut self) {
        for reference in &self.references {
            let _ = run_unchecked(self.podman, &["rmi", "-f", reference]);
        }
    }
}
