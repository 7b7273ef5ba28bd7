//! docker-archive against a real Docker daemon: `docker load` takes what berth writes and runs
//! it, and berth reads back what `docker save` writes.
//!
//! Needs `/usr/bin/docker` and `/usr/sbin/dockerd` (docker.io) and a static `/bin/busybox`
//! (busybox-static); the daemon is started if it does not answer. Without them the tests fail
//! and say to run `scripts/setup.sh`.

mod image_support;

use std::fs::File;
use std::io::BufWriter;
use std::process::Command;

use berth_layerstore::content::fs::FsStore;
use berth_layerstore::content::memory::MemoryStore;
use berth_layerstore::image::docker_archive::{self, ArchiveImage};
use berth_layerstore::image::{DockerManifest, Manifest, descriptor_digest};
use berth_layerstore::media;
use image_support::{DOCKER, busybox_image, check_image, ensure_docker, run, unique};

/// Removes an image from the daemon when dropped, so a failing test leaves nothing behind.
struct DockerImage(String);

impl Drop for DockerImage {
    fn drop(&mut self) {
        let _ = Command::new(DOCKER)
            .args(["rmi", "--force", &self.0])
            .output();
    }
}

/// Writes `image` as a docker-archive tagged `tag` and `docker load`s it.
fn load_into_docker(
    store: &FsStore,
    manifest: &berth_layerstore::image::Descriptor,
    tag: &str,
) -> DockerImage {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.tar");
    let file = BufWriter::new(File::create(&path).unwrap());
    docker_archive::write(
        store,
        &[ArchiveImage {
            manifest: manifest.clone(),
            repo_tags: vec![tag.to_owned()],
        }],
        file,
    )
    .expect("write docker-archive")
    .into_inner()
    .unwrap()
    .sync_all()
    .unwrap();
    let out = run(Command::new(DOCKER).args(["load", "-i"]).arg(&path));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(tag), "docker load said: {text}");
    DockerImage(tag.to_owned())
}

#[test]
fn docker_loads_and_runs_what_berth_writes() {
    ensure_docker();
    let root = tempfile::tempdir().unwrap();
    let store = FsStore::open(root.path().join("content")).unwrap();
    let image = busybox_image(&store, &["/bin/echo", "hello from berth"]);
    let tag = format!("berth-test/hello:{}", unique("load"));
    let _cleanup = load_into_docker(&store, &image.manifest, &tag);

    // Docker's image id is the digest of the config bytes berth wrote.
    let id = run(Command::new(DOCKER).args(["image", "inspect", "--format", "{{.Id}}", &tag]));
    assert_eq!(
        String::from_utf8_lossy(&id.stdout).trim(),
        image.config.digest().to_string()
    );
    let out = run(Command::new(DOCKER).args(["run", "--rm", "--network", "none", &tag]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from berth\n");
    // The symlinked applets work too.
    let out = run(Command::new(DOCKER).args([
        "run",
        "--rm",
        "--network",
        "none",
        &tag,
        "/bin/sh",
        "-c",
        "echo $((6 * 7))",
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");
}

#[test]
fn docker_loads_an_archive_written_from_a_docker_manifest() {
    ensure_docker();
    let root = tempfile::tempdir().unwrap();
    let store = FsStore::open(root.path().join("content")).unwrap();
    let image = busybox_image(&store, &["/bin/echo", "schema 2"]);
    let Manifest::Oci(oci) = Manifest::read(&store, &image.manifest).unwrap().0 else {
        panic!("expected an OCI manifest")
    };
    let docker = DockerManifest::from_oci(&oci).unwrap();
    assert_eq!(docker.layers[0].media_type, media::DOCKER_LAYER_GZIP);
    let docker_desc = docker.to_blob().unwrap().ingest(&store).unwrap();
    let tag = format!("berth-test/schema2:{}", unique("s2"));
    let _cleanup = load_into_docker(&store, &docker_desc, &tag);
    let out = run(Command::new(DOCKER).args(["run", "--rm", "--network", "none", &tag]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "schema 2\n");
}

#[test]
fn berth_reads_what_docker_save_writes() {
    ensure_docker();
    let root = tempfile::tempdir().unwrap();
    let store = FsStore::open(root.path().join("content")).unwrap();
    let image = busybox_image(&store, &["/bin/echo", "saved"]);
    let tag = format!("berth-test/saved:{}", unique("save"));
    let second_tag = format!("berth-test/saved2:{}", unique("save"));
    let _cleanup = load_into_docker(&store, &image.manifest, &tag);
    run(Command::new(DOCKER).args(["tag", &tag, &second_tag]));
    let _cleanup2 = DockerImage(second_tag.clone());

    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.tar");
    run(Command::new(DOCKER)
        .args(["save", "-o"])
        .arg(&saved)
        .args([&tag, &second_tag]));

    let loaded_store = MemoryStore::new();
    let loaded = docker_archive::read(File::open(&saved).unwrap(), &loaded_store)
        .expect("read docker save output");
    assert_eq!(loaded.len(), 1, "one image with two tags");
    let l = &loaded[0];
    let mut tags = l.repo_tags.clone();
    tags.sort();
    let mut want = vec![tag.clone(), second_tag.clone()];
    want.sort();
    assert_eq!(tags, want);
    assert_eq!(l.config.digest(), image.config.digest(), "config digest");
    assert_eq!(l.diff_ids, image.diff_ids, "diff_ids");
    // The layers docker saved are uncompressed: their digests are the diff_ids.
    for (layer, diff_id) in l.image_manifest.layers().iter().zip(&image.diff_ids) {
        assert_eq!(layer.media_type().to_string(), media::OCI_LAYER_TAR);
        assert_eq!(&descriptor_digest(layer).unwrap(), diff_id);
    }
    let (config, diff_ids) = check_image(&loaded_store, &l.manifest);
    assert_eq!(config, descriptor_digest(&image.config).unwrap());
    assert_eq!(diff_ids, image.diff_ids);
}
