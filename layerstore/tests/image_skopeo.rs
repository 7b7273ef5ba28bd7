//! The OCI image layout and docker-archive against skopeo: skopeo reads what berth writes, and
//! berth reads what skopeo writes, keeping the config digest and the layer diff_ids.
//!
//! Needs `/usr/bin/skopeo` and a static `/bin/busybox` (busybox-static). Without them the tests
//! fail and say to run `scripts/setup.sh`.

mod image_support;

use std::fs::File;
use std::path::Path;
use std::process::Command;

use berth_layerstore::content::Provider;
use berth_layerstore::content::memory::MemoryStore;
use berth_layerstore::image::docker_archive::{self, ArchiveImage};
use berth_layerstore::image::layout::{self, LayoutEntry};
use berth_layerstore::image::{Descriptor, ImageConfig, descriptor_digest};
use image_support::{SKOPEO, TestImage, busybox_image, check_image, require_tool, run};

fn skopeo() -> Command {
    require_tool(SKOPEO, "skopeo");
    let mut cmd = Command::new(SKOPEO);
    cmd.arg("--insecure-policy");
    cmd
}

fn skopeo_copy(src: &str, dest: &str) {
    run(skopeo().args(["copy", "--quiet", src, dest]));
}

/// Writes `image` tagged `tag` as an OCI layout tar at `path`.
fn write_oci_archive(store: &MemoryStore, image: &TestImage, tag: &str, path: &Path) {
    let file = File::create(path).unwrap();
    layout::export_tar(
        store,
        &[(Some(tag.to_owned()), image.manifest.clone())],
        file,
    )
    .expect("export oci-archive")
    .sync_all()
    .unwrap();
}

/// The entry tagged `tag`.
fn entry<'a>(entries: &'a [LayoutEntry], tag: &str) -> &'a Descriptor {
    &entries
        .iter()
        .find(|(name, _)| name.as_deref() == Some(tag))
        .unwrap_or_else(|| panic!("no entry tagged {tag} in {entries:?}"))
        .1
}

/// The `Cmd` of the config `digest` in `store`.
fn command(store: &MemoryStore, digest: &berth_layerstore::Digest) -> Vec<String> {
    let bytes = store.read_all(digest).unwrap();
    let config = ImageConfig::from_slice(&bytes, "config").unwrap();
    config.config.and_then(|c| c.cmd).unwrap_or_default()
}

fn digest_of(d: &Descriptor) -> berth_layerstore::Digest {
    descriptor_digest(d).unwrap()
}

#[test]
fn skopeo_copies_berth_oci_archive_to_archive_and_dir() {
    let store = MemoryStore::new();
    let image = busybox_image(&store, &["/bin/echo", "hello from berth"]);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.tar");
    write_oci_archive(&store, &image, "v1", &a);

    // skopeo can parse it.
    let raw = run(skopeo()
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}:v1", a.display())));
    let bytes = raw.stdout;
    assert_eq!(
        berth_layerstore::Digest::sha256(&bytes),
        digest_of(&image.manifest)
    );

    // oci-archive -> oci-archive
    let b = dir.path().join("b.tar");
    skopeo_copy(
        &format!("oci-archive:{}:v1", a.display()),
        &format!("oci-archive:{}:v2", b.display()),
    );
    let out = MemoryStore::new();
    let entries =
        layout::import_tar(File::open(&b).unwrap(), &out).expect("import skopeo's oci-archive");
    let (config, diff_ids) = check_image(&out, entry(&entries, "v2"));
    assert_eq!(config, digest_of(&image.config));
    assert_eq!(diff_ids, image.diff_ids);

    // oci-archive -> oci:DIR, twice with different tags into the same layout.
    let layout_dir = dir.path().join("layout");
    for tag in ["v3", "v4"] {
        skopeo_copy(
            &format!("oci-archive:{}:v1", a.display()),
            &format!("oci:{}:{tag}", layout_dir.display()),
        );
    }
    let out = MemoryStore::new();
    let entries = layout::import(&layout_dir, &out).expect("import skopeo's layout");
    for tag in ["v3", "v4"] {
        let (config, diff_ids) = check_image(&out, entry(&entries, tag));
        assert_eq!(config, digest_of(&image.config));
        assert_eq!(diff_ids, image.diff_ids);
    }
}

#[test]
fn skopeo_converts_berth_oci_archive_to_docker_archive() {
    let store = MemoryStore::new();
    let image = busybox_image(&store, &["/bin/echo", "converted"]);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.tar");
    write_oci_archive(&store, &image, "latest", &a);
    let d = dir.path().join("d.tar");
    skopeo_copy(
        &format!("oci-archive:{}:latest", a.display()),
        &format!("docker-archive:{}:berth/converted:1", d.display()),
    );
    let out = MemoryStore::new();
    let loaded =
        docker_archive::read(File::open(&d).unwrap(), &out).expect("read skopeo's docker-archive");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].repo_tags, ["docker.io/berth/converted:1"]);
    assert_eq!(loaded[0].config.digest(), image.config.digest());
    assert_eq!(loaded[0].diff_ids, image.diff_ids);
    let (config, diff_ids) = check_image(&out, &loaded[0].manifest);
    assert_eq!(config, digest_of(&image.config));
    assert_eq!(diff_ids, image.diff_ids);
}

#[test]
fn berth_reads_layouts_skopeo_makes_from_a_docker_archive() {
    // Start from a docker-archive so that skopeo builds the OCI layout itself: it converts the
    // schema-2 image to OCI, re-serializing the config as an OCI config (so its digest changes;
    // the command and the diff_ids do not) and choosing the layer blobs.
    let store = MemoryStore::new();
    let image = busybox_image(&store, &["/bin/echo", "from docker-archive"]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.tar");
    docker_archive::write(
        &store,
        &[ArchiveImage {
            manifest: image.manifest.clone(),
            repo_tags: vec!["berth/src:1".into()],
        }],
        File::create(&src).unwrap(),
    )
    .expect("write docker-archive");

    let layout_dir = dir.path().join("oci");
    skopeo_copy(
        &format!("docker-archive:{}", src.display()),
        &format!("oci:{}:t", layout_dir.display()),
    );
    let out = MemoryStore::new();
    let entries = layout::import(&layout_dir, &out).expect("import skopeo's layout");
    let (config, diff_ids) = check_image(&out, entry(&entries, "t"));
    assert_eq!(diff_ids, image.diff_ids);
    assert_eq!(command(&out, &config), ["/bin/echo", "from docker-archive"]);

    let archive = dir.path().join("oci.tar");
    skopeo_copy(
        &format!("docker-archive:{}", src.display()),
        &format!("oci-archive:{}:t", archive.display()),
    );
    let out2 = MemoryStore::new();
    let entries = layout::import_tar(File::open(&archive).unwrap(), &out2)
        .expect("import skopeo's oci-archive");
    let (config2, diff_ids) = check_image(&out2, entry(&entries, "t"));
    assert_eq!(diff_ids, image.diff_ids);
    assert_eq!(config2, config, "same conversion, same config");

    // Export what berth imported from skopeo's layout back out, and let skopeo read it.
    let again = dir.path().join("again");
    layout::export(
        &out2,
        &[(Some("back".into()), entry(&entries, "t").clone())],
        &again,
    )
    .expect("export");
    run(skopeo()
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:back", again.display())));
}
