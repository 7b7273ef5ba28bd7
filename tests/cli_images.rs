//! The local image store's verbs end to end: `berth load`, `images`, `tag`, `inspect`, `push`
//! to and `pull` from `berth registry serve`, `rmi`, and `save`; and archives crossing over
//! to and from `docker load`/`docker save`/`docker run` and `skopeo copy`/`skopeo inspect`.
//!
//! The image is built by the test: a static busybox tree made into a layer by
//! `berth layer create`, a config and a manifest written here, packed as an OCI archive.
//!
//! Needs docker.io (the daemon is started if it does not answer), skopeo and busybox-static.
//! Without them the tests fail and say to run `scripts/setup.sh`.

mod registry_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_layerstore::Digest;
use registry_support::*;
use serde_json::{Value, json};

/// Runs berth and returns its stdout, panicking with its stderr when it fails.
fn berth(root: &Path, args: &[&str]) -> String {
    let out = berth_out(root, args);
    assert!(
        out.status.success(),
        "berth {args:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs berth expecting failure; returns its stderr.
fn berth_fails(root: &Path, args: &[&str]) -> String {
    let out = berth_out(root, args);
    assert!(
        !out.status.success(),
        "berth {args:?} should have failed:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `berth images --format json`, one object per line.
fn images(root: &Path) -> Vec<Value> {
    berth(root, &["images", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn inspect(root: &Path, image: &str) -> Value {
    let out: Value = serde_json::from_str(&berth(root, &["inspect", image])).unwrap();
    out[0].clone()
}

/// Every blob file of the store's content.
fn blob_count(root: &Path) -> usize {
    let blobs = root.join("content/blobs");
    if !blobs.exists() {
        return 0;
    }
    walk_files(&blobs)
}

fn walk_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() { walk_files(&path) } else { 1 }
        })
        .sum()
}

/// Removes images from the daemon when dropped, so a failing test leaves nothing behind.
struct DockerImages(Vec<String>);

impl Drop for DockerImages {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new(DOCKER)
                .args(["rmi", "--force", image])
                .output();
        }
    }
}

/// The host's architecture in Go's terms.
/// The test image, packed as an OCI archive.
struct TinyImage {
    archive: PathBuf,
    manifest: Digest,
    config: Digest,
    diff_id: Digest,
}

/// The busybox layer: `berth layer create` over a tree with `/bin/busybox` and its `sh` and
/// `echo` links. Returns the layer's blob and what `berth layer create` printed.
fn busybox_layer(dir: &Path) -> (Vec<u8>, Value) {
    require_tool(BUSYBOX, "busybox-static");
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::copy(BUSYBOX, tree.join("bin/busybox")).unwrap();
    for link in ["sh", "echo"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(link)).unwrap();
    }
    let layer_file = dir.join("layer.tar.gz");
    let layer: Value = serde_json::from_str(&berth(
        &dir.join("unused-root"),
        &[
            "layer",
            "create",
            tree.to_str().unwrap(),
            "-o",
            layer_file.to_str().unwrap(),
        ],
    ))
    .unwrap();
    (fs::read(&layer_file).unwrap(), layer)
}

/// A config for `arch` whose command prints `message`, and a manifest over it and `layer`.
/// Returns (config bytes, manifest bytes).
fn config_and_manifest(layer: &Value, arch: &str, message: &str) -> (Vec<u8>, Vec<u8>) {
    let config = json!({
        "created": "2026-01-02T03:04:05Z",
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/sh", "-c", format!("echo {message}")],
        },
        "rootfs": {"type": "layers", "diff_ids": [layer["diff_id"]]},
        "history": [{"created": "2026-01-02T03:04:05Z", "created_by": "cli_images test"}],
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let manifest = manifest_over(&config_bytes, layer);
    (config_bytes, manifest)
}

/// Builds a busybox image whose command prints `message`, as an OCI archive naming it `name`.
fn tiny_image(dir: &Path, name: &str, message: &str) -> TinyImage {
    let (layer_bytes, layer) = busybox_layer(dir);
    let (config_bytes, manifest_bytes) = config_and_manifest(&layer, go_arch(), message);
    let archive = dir.join("tiny-oci.tar");
    let root = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": Digest::sha256(&manifest_bytes).to_string(),
        "size": manifest_bytes.len(),
    });
    pack_oci(
        &archive,
        &[&layer_bytes, &config_bytes, &manifest_bytes],
        root,
        name,
    );
    TinyImage {
        archive,
        manifest: Digest::sha256(&manifest_bytes),
        config: Digest::sha256(&config_bytes),
        diff_id: layer["diff_id"].as_str().unwrap().parse().unwrap(),
    }
}

#[test]
fn load_list_tag_inspect_push_rmi_pull() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let tiny = tiny_image(work.path(), "localhost/test/tiny:1", "hello");

    let loaded = berth(&root, &["load", "-i", tiny.archive.to_str().unwrap()]);
    assert_eq!(loaded.trim(), "Loaded image: localhost/test/tiny:1");
    let rows = images(&root);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["Repository"], "localhost/test/tiny");
    assert_eq!(rows[0]["Tag"], "1");
    assert_eq!(rows[0]["FullID"], tiny.config.to_string());
    assert_eq!(rows[0]["ID"], &tiny.config.hex()[..12]);
    assert_eq!(rows[0]["Digest"], tiny.manifest.to_string());
    let table = berth(&root, &["images"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split("   ").map(str::trim).collect();
    assert_eq!(
        header
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>(),
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row[..3],
        ["localhost/test/tiny", "1", &tiny.config.hex()[..12]]
    );

    // Tag with a short name; inspect sees both names.
    berth(&root, &["tag", "localhost/test/tiny:1", "tiny"]);
    assert_eq!(images(&root).len(), 2);
    let info = inspect(&root, "tiny");
    assert_eq!(info["Id"], tiny.config.to_string());
    assert_eq!(
        info["RepoTags"],
        json!(["tiny:latest", "localhost/test/tiny:1"])
    );
    assert_eq!(info["RootFS"]["Layers"], json!([tiny.diff_id.to_string()]));
    assert_eq!(
        info["Config"]["Cmd"],
        json!(["/bin/sh", "-c", "echo hello"])
    );
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Descriptor"]["digest"], tiny.manifest.to_string());
    assert!(info["Size"].as_u64().unwrap() > 500_000);
    // By id prefix and by docker.io's full name.
    let by_id = inspect(&root, &tiny.config.hex()[..10]);
    assert_eq!(by_id["Id"], tiny.config.to_string());
    let by_full = inspect(&root, "docker.io/library/tiny:latest");
    assert_eq!(by_full["Id"], tiny.config.to_string());
    let err = berth_fails(&root, &["inspect", "nope:1"]);
    assert!(err.contains("no such image: nope:1"), "{err}");

    // Push to a registry, remove everything, pull it back.
    let mut server = Server::start(&work.path().join("registry"));
    let remote = format!("{}/test/tiny:1", server.addr);
    berth(&root, &["tag", "tiny", &remote]);
    let pushed = berth(&root, &["push", "--progress", "plain", &remote]);
    assert_eq!(pushed.trim(), tiny.manifest.to_string());

    let out = berth(&root, &["rmi", &remote]);
    assert_eq!(out.trim(), format!("Untagged: {remote}"));
    let err = berth_fails(&root, &["rmi", &tiny.config.hex()[..12]]);
    assert!(err.contains("must be forced"), "{err}");
    let out = berth(&root, &["rmi", "tiny", "localhost/test/tiny:1"]);
    assert!(out.contains("Untagged: tiny:latest"), "{out}");
    assert!(out.contains(&format!("Deleted: {}", tiny.config)), "{out}");
    assert!(images(&root).is_empty());
    assert_eq!(blob_count(&root), 0, "rmi leaves no blob behind");
    let err = berth_fails(&root, &["rmi", "tiny"]);
    assert!(err.contains("no such image: tiny"), "{err}");

    let pulled = berth(&root, &["pull", "--progress", "plain", &remote]);
    assert_eq!(pulled.trim(), remote);
    let info = inspect(&root, &remote);
    assert_eq!(info["Descriptor"]["digest"], tiny.manifest.to_string());
    assert_eq!(info["Id"], tiny.config.to_string());
    assert_eq!(blob_count(&root), 3);
    // Pulling again fetches nothing and changes nothing.
    berth(&root, &["pull", "-q", &remote]);
    assert_eq!(images(&root).len(), 1);

    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_archives_are_refused_and_harm_nothing() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let tiny = tiny_image(work.path(), "localhost/test/tiny:1", "hello");
    berth(&root, &["load", "-i", tiny.archive.to_str().unwrap()]);
    let index_before = fs::read(root.join("images/index.json")).unwrap();
    let blobs_before = blob_count(&root);

    // The config's bytes no longer match its name.
    let original = fs::read(&tiny.archive).unwrap();
    let mut archive = tar::Archive::new(&original[..]);
    let mut out = tar::Builder::new(Vec::new());
    let config_member = format!("blobs/sha256/{}", tiny.config.hex());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        if name == config_member {
            data = String::from_utf8(data)
                .unwrap()
                .replace("echo hello", "echo HACKED")
                .into_bytes();
        }
        let mut h = entry.header().clone();
        h.set_size(data.len() as u64);
        out.append_data(&mut h, &name, &data[..]).unwrap();
    }
    let bad = work.path().join("bad.tar");
    fs::write(&bad, out.into_inner().unwrap()).unwrap();
    let err = berth_fails(&root, &["load", "-i", bad.to_str().unwrap()]);
    assert!(err.contains(bad.to_str().unwrap()), "names the file: {err}");
    assert!(
        err.contains(&tiny.config.to_string()),
        "names the blob: {err}"
    );

    let junk = work.path().join("junk.tar");
    fs::write(&junk, b"this is not an archive at all").unwrap();
    let err = berth_fails(&root, &["load", "-i", junk.to_str().unwrap()]);
    assert!(err.contains("not a tar archive"), "{err}");
    let err = berth_fails(&root, &["load", "-i", "/nonexistent/x.tar"]);
    assert!(err.contains("/nonexistent/x.tar"), "{err}");

    assert_eq!(
        fs::read(root.join("images/index.json")).unwrap(),
        index_before
    );
    assert_eq!(blob_count(&root), blobs_before);
    let staging: Vec<_> = fs::read_dir(root.join("images/staging")).unwrap().collect();
    assert!(staging.is_empty(), "staging areas are removed: {staging:?}");
    assert_eq!(
        inspect(&root, "localhost/test/tiny:1")["Config"]["Cmd"],
        json!(["/bin/sh", "-c", "echo hello"])
    );
}

#[test]
fn docker_loads_and_runs_what_berth_saves_and_berth_loads_docker_save() {
    ensure_docker();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let unique = std::process::id();
    let first = format!("localhost/berth-test/one:{unique}");
    let second = format!("localhost/berth-test/two:{unique}");
    let imported = format!("localhost/berth-test/imported:{unique}");
    let _cleanup = DockerImages(vec![first.clone(), second.clone(), imported.clone()]);

    let dir_one = work.path().join("one");
    let dir_two = work.path().join("two");
    fs::create_dir_all(&dir_one).unwrap();
    fs::create_dir_all(&dir_two).unwrap();
    let one = tiny_image(&dir_one, &first, "hello-from-one");
    let two = tiny_image(&dir_two, &second, "hello-from-two");
    berth(&root, &["load", "-i", one.archive.to_str().unwrap()]);
    berth(&root, &["load", "-i", two.archive.to_str().unwrap()]);

    // Two images in one docker-archive; the busybox layer is the same in both.
    let saved = work.path().join("saved.tar");
    berth(
        &root,
        &["save", "-o", saved.to_str().unwrap(), &first, &second],
    );
    let loaded = run(Command::new(DOCKER).args(["load", "-i", saved.to_str().unwrap()]));
    assert!(
        loaded.contains(&format!("Loaded image: {first}")),
        "{loaded}"
    );
    assert!(
        loaded.contains(&format!("Loaded image: {second}")),
        "{loaded}"
    );
    let out = run(Command::new(DOCKER).args(["run", "--rm", &first]));
    assert_eq!(out.trim(), "hello-from-one");
    let out = run(Command::new(DOCKER).args(["run", "--rm", &second]));
    assert_eq!(out.trim(), "hello-from-two");
    let docker_id =
        run(Command::new(DOCKER).args(["image", "inspect", "--format", "{{.Id}}", &first]));
    assert_eq!(docker_id.trim(), one.config.to_string());

    // What docker save writes, berth loads, under the same id.
    let rootfs = work.path().join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(dir_one.join("tree"))
        .arg("-cf")
        .arg(&rootfs)
        .arg("."));
    run(Command::new(DOCKER)
        .arg("import")
        .arg(&rootfs)
        .arg(&imported));
    let docker_saved = work.path().join("docker-saved.tar");
    run(Command::new(DOCKER).args(["save", "-o", docker_saved.to_str().unwrap(), &imported]));
    let out = berth(&root, &["load", "-i", docker_saved.to_str().unwrap()]);
    assert_eq!(out.trim(), format!("Loaded image: {imported}"));
    let docker_id =
        run(Command::new(DOCKER).args(["image", "inspect", "--format", "{{.Id}}", &imported]));
    assert_eq!(inspect(&root, &imported)["Id"], docker_id.trim());
    assert_eq!(images(&root).len(), 3);

    // And back: berth's archive of the docker image runs under docker.
    run(Command::new(DOCKER).args(["rmi", &imported]));
    let again = work.path().join("again.tar");
    berth(&root, &["save", "-o", again.to_str().unwrap(), &imported]);
    run(Command::new(DOCKER).args(["load", "-i", again.to_str().unwrap()]));
    let out =
        run(Command::new(DOCKER).args(["run", "--rm", &imported, "/bin/busybox", "echo", "ok"]));
    assert_eq!(out.trim(), "ok");
}

#[test]
fn skopeo_archives_load_and_berth_oci_archives_inspect() {
    require_tool(SKOPEO, "skopeo");
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let tiny = tiny_image(work.path(), "localhost/test/tiny:1", "hello");
    berth(&root, &["load", "-i", tiny.archive.to_str().unwrap()]);

    // berth's OCI archive, read by skopeo, by the only image and by its name.
    let oci = work.path().join("saved-oci.tar");
    berth(
        &root,
        &[
            "save",
            "--format",
            "oci",
            "-o",
            oci.to_str().unwrap(),
            "localhost/test/tiny:1",
        ],
    );
    for location in [
        format!("oci-archive:{}", oci.display()),
        format!("oci-archive:{}:localhost/test/tiny:1", oci.display()),
    ] {
        let out = run(Command::new(SKOPEO).args(["inspect", &location]));
        let out: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["Digest"], tiny.manifest.to_string(), "{location}");
        assert_eq!(out["Layers"].as_array().unwrap().len(), 1);
    }
    // berth loads its own OCI archive back under the same name and digest.
    let other_root = work.path().join("other-root");
    let out = berth(&other_root, &["load", "-i", oci.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: localhost/test/tiny:1");
    assert_eq!(
        inspect(&other_root, "localhost/test/tiny:1")["Descriptor"]["digest"],
        tiny.manifest.to_string()
    );

    // skopeo's OCI archive of berth's docker-archive loads under the name skopeo gave it.
    let docker_archive = work.path().join("saved-docker.tar");
    berth(
        &root,
        &[
            "save",
            "-o",
            docker_archive.to_str().unwrap(),
            "localhost/test/tiny:1",
        ],
    );
    let copied = work.path().join("skopeo-oci.tar");
    run(Command::new(SKOPEO).args([
        "copy",
        &format!("docker-archive:{}", docker_archive.display()),
        &format!("oci-archive:{}:localhost/skopeo/copied:2", copied.display()),
    ]));
    let out = berth(&root, &["load", "-i", copied.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: localhost/skopeo/copied:2");
    let info = inspect(&root, "localhost/skopeo/copied:2");
    // skopeo rewrites the config as it converts to OCI, so the id differs; the content not.
    assert_eq!(
        info["Config"]["Cmd"],
        json!(["/bin/sh", "-c", "echo hello"])
    );
    assert_eq!(info["RootFS"]["Layers"], json!([tiny.diff_id.to_string()]));

    // A bare tag names no repository: the image loads untagged.
    let tagged = work.path().join("skopeo-tag.tar");
    run(Command::new(SKOPEO).args([
        "copy",
        &format!("docker-archive:{}", docker_archive.display()),
        &format!("oci-archive:{}:latest", tagged.display()),
    ]));
    let fresh = work.path().join("fresh-root");
    let out = berth(&fresh, &["load", "-i", tagged.to_str().unwrap()]);
    assert_eq!(
        out.trim(),
        format!("Loaded image ID: {}", info["Id"].as_str().unwrap())
    );
    let rows = images(&fresh);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["Repository"], "<none>");
    assert_eq!(rows[0]["Tag"], "<none>");
}

#[test]
fn an_index_is_kept_whole_and_pulled_one_platform_at_a_time() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let (layer_bytes, layer) = busybox_layer(work.path());
    // The host's platform and one no test host is.
    let (native_config, native) = config_and_manifest(&layer, go_arch(), "native");
    let (other_config, other) = config_and_manifest(&layer, "s390x", "other");
    let entry = |manifest: &[u8], arch: &str| {
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": Digest::sha256(manifest).to_string(),
            "size": manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        })
    };
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&native, go_arch()), entry(&other, "s390x")],
    }))
    .unwrap();
    let index_digest = Digest::sha256(&index);
    let archive = work.path().join("multi.tar");
    pack_oci(
        &archive,
        &[
            &layer_bytes,
            &native_config,
            &native,
            &other_config,
            &other,
            &index,
        ],
        json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest.to_string(),
            "size": index.len(),
        }),
        "localhost/test/multi:1",
    );
    berth(&root, &["load", "-i", archive.to_str().unwrap()]);

    // The index is the image: its digest is the id; inspect shows a platform's manifest.
    let rows = images(&root);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["FullID"], index_digest.to_string());
    let info = inspect(&root, "localhost/test/multi:1");
    assert_eq!(info["Descriptor"]["digest"], index_digest.to_string());
    assert_eq!(
        info["Manifest"]["digest"],
        Digest::sha256(&native).to_string()
    );
    let info: Value = serde_json::from_str(&berth(
        &root,
        &[
            "inspect",
            "--platform",
            "linux/s390x",
            "localhost/test/multi:1",
        ],
    ))
    .unwrap();
    assert_eq!(info[0]["Architecture"], "s390x");
    assert_eq!(info[0]["Config"]["Cmd"][2], "echo other");

    // An OCI archive keeps the index; a docker-archive takes the asked platform's manifest.
    let oci = work.path().join("multi-out.tar");
    berth(
        &root,
        &[
            "save",
            "--format",
            "oci",
            "-o",
            oci.to_str().unwrap(),
            "localhost/test/multi:1",
        ],
    );
    let copy_root = work.path().join("copy-root");
    berth(&copy_root, &["load", "-i", oci.to_str().unwrap()]);
    assert_eq!(
        inspect(&copy_root, "localhost/test/multi:1")["Descriptor"]["digest"],
        index_digest.to_string()
    );
    let docker = work.path().join("multi-docker.tar");
    berth(
        &root,
        &[
            "save",
            "--platform",
            "linux/s390x",
            "-o",
            docker.to_str().unwrap(),
            "localhost/test/multi:1",
        ],
    );
    let docker_root = work.path().join("docker-root");
    berth(&docker_root, &["load", "-i", docker.to_str().unwrap()]);
    assert_eq!(
        inspect(&docker_root, "localhost/test/multi:1")["Id"],
        Digest::sha256(&other_config).to_string()
    );

    // Through a registry: the index is pushed whole; a pull takes one platform.
    let mut server = Server::start(&work.path().join("registry"));
    let remote = format!("{}/test/multi:1", server.addr);
    berth(&root, &["tag", "localhost/test/multi:1", &remote]);
    let pushed = berth(&root, &["push", "-q", &remote]);
    assert_eq!(pushed.trim(), index_digest.to_string());
    let pull_root = work.path().join("pull-root");
    berth(
        &pull_root,
        &["pull", "-q", "--platform", "linux/s390x", &remote],
    );
    let info = inspect(&pull_root, &remote);
    assert_eq!(
        info["Descriptor"]["digest"],
        Digest::sha256(&other).to_string()
    );
    assert_eq!(info["Id"], Digest::sha256(&other_config).to_string());
    // Pulling the host's platform moves the name; the other image stays, untagged.
    berth(&pull_root, &["pull", "-q", &remote]);
    let info = inspect(&pull_root, &remote);
    assert_eq!(
        info["Descriptor"]["digest"],
        Digest::sha256(&native).to_string()
    );
    let rows = images(&pull_root);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let dangling: Vec<&Value> = rows.iter().filter(|r| r["Tag"] == "<none>").collect();
    assert_eq!(dangling.len(), 1);
    assert_eq!(
        dangling[0]["FullID"],
        Digest::sha256(&other_config).to_string()
    );
    let id = Digest::sha256(&other_config);
    let out = berth(&pull_root, &["rmi", &id.hex()[..12]]);
    assert_eq!(out.trim(), format!("Deleted: {id}"));
    assert_eq!(images(&pull_root).len(), 1);

    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

/// `rmi` removes the snapshots `berth build` left for the layers no image has any more, and
/// keeps those another image still uses.
#[test]
fn rmi_prunes_the_snapshots_of_removed_layers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let context = dir.path().join("context");
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("a.txt"), "shared\n").unwrap();
    fs::write(context.join("b.txt"), "only in the second image\n").unwrap();
    fs::write(context.join("Dockerfile"), "FROM scratch\nCOPY a.txt /\n").unwrap();
    fs::write(
        context.join("second.Dockerfile"),
        "FROM scratch\nCOPY a.txt /\nCOPY b.txt /\n",
    )
    .unwrap();
    let ctx = context.to_str().unwrap();
    let second = context.join("second.Dockerfile");
    berth(&root, &["build", "-t", "first", ctx]);
    berth(
        &root,
        &["build", "-t", "second", "-f", second.to_str().unwrap(), ctx],
    );
    let snapshots = || {
        berth_layerstore::snapshot::SnapshotStore::open(root.join("snapshots"))
            .unwrap()
            .list()
            .unwrap()
    };
    let diff_ids = |image: &str| -> Vec<String> {
        inspect(&root, image)["RootFS"]["Layers"]
            .as_array()
            .unwrap_or_else(|| panic!("no layers in {}", inspect(&root, image)))
            .iter()
            .map(|d| d.as_str().unwrap().to_owned())
            .collect()
    };
    let first = diff_ids("first");
    let both = diff_ids("second");
    assert_eq!(first.len(), 1);
    assert_eq!(both.len(), 2);
    assert_eq!(first[0], both[0], "the same COPY makes the same layer");
    assert_eq!(snapshots().len(), 2);

    berth(&root, &["rmi", "second"]);
    let left: Vec<String> = snapshots().iter().map(ToString::to_string).collect();
    assert_eq!(
        left, first,
        "the second image's own layer is pruned, the shared one kept"
    );
    berth(&root, &["rmi", "first"]);
    assert!(snapshots().is_empty(), "no image left, no snapshot left");
}
