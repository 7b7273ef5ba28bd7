//! `copy` between `oci-archive:`, `docker://`, `oci:` and `docker-archive:` locations, with
//! `skopeo` (a peer implementation) checking what landed in the registry.

mod client_support;

use std::io::BufReader;
use std::process::Command;
use std::sync::Arc;

use berth_layerstore::Digest;
use berth_layerstore::content::fs::FsStore;
use berth_layerstore::content::memory::MemoryStore;
use berth_layerstore::image::{docker_archive, layout, platform};
use berth_registry::client::{Client, CopyOptions, Counters, ImageLocation, Platforms, copy};
use client_support::*;

/// `skopeo inspect` of a location; `raw` gives the manifest bytes instead of the summary.
fn skopeo_inspect(location: &str, raw: bool) -> Vec<u8> {
    let skopeo = require_program("skopeo", "`apt-get install skopeo`");
    let mut cmd = Command::new(skopeo);
    cmd.arg("inspect");
    if raw {
        cmd.arg("--raw");
    }
    if location.starts_with("docker://") {
        cmd.arg("--tls-verify=false");
    }
    let out = cmd.arg(location).output().expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {location} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The digest skopeo reports for a registry image.
fn skopeo_digest(location: &str) -> String {
    let v: serde_json::Value = serde_json::from_slice(&skopeo_inspect(location, false)).unwrap();
    v["Digest"].as_str().expect("Digest field").to_owned()
}

async fn run_copy(
    client: &Client,
    src: &str,
    dst: &str,
    platforms: Platforms,
) -> berth_registry::client::CopyResult {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::open(dir.path().join("store")).unwrap());
    let counters = Arc::new(Counters::default());
    copy::copy(
        client,
        store,
        &src.parse::<ImageLocation>().unwrap(),
        &dst.parse::<ImageLocation>().unwrap(),
        &CopyOptions {
            platforms,
            progress: counters,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("copy {src} -> {dst}: {e}"))
}

#[tokio::test]
async fn round_trip_through_every_location_kind() {
    let registry = PeerRegistry::start();
    let client = test_client(|_| {});
    let work = tempfile::tempdir().unwrap();

    // The starting point: an OCI archive written from a store.
    let store = MemoryStore::new();
    let image = sample_image(
        &store,
        "amd64",
        &[
            ("etc-hostname", b"berth\n"),
            ("data.bin", &noise(200_000, 1)),
        ],
    );
    let archive = work.path().join("image.tar");
    let file = std::fs::File::create(&archive).unwrap();
    layout::export_tar(&store, &[(Some("v1".into()), image.manifest.clone())], file).unwrap();
    let digest = image.manifest.digest().to_string();

    // oci-archive -> registry: skopeo sees the same manifest digest.
    let dst = format!("docker://{}/copy/test:v1", registry.addr);
    let r = run_copy(
        &client,
        &format!("oci-archive:{}:v1", archive.display()),
        &dst,
        Platforms::All,
    )
    .await;
    assert_eq!(r.digest.to_string(), digest);
    assert_eq!(skopeo_digest(&dst), digest);

    // registry -> oci directory.
    let dir = work.path().join("layout");
    let r = run_copy(
        &client,
        &dst,
        &format!("oci:{}:v2", dir.display()),
        Platforms::All,
    )
    .await;
    assert_eq!(r.digest.to_string(), digest);
    let check = MemoryStore::new();
    let entries = layout::import(&dir, &check).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0.as_deref(), Some("v2"));
    assert_eq!(entries[0].1.digest().to_string(), digest);
    assert_complete(&check, &entries[0].1);
    // skopeo reads the layout too.
    assert_eq!(
        Digest::sha256(&skopeo_inspect(&format!("oci:{}:v2", dir.display()), true)).to_string(),
        digest
    );

    // oci directory -> docker-archive, which skopeo (and docker load) can read.
    let docker_tar = work.path().join("docker.tar");
    run_copy(
        &client,
        &format!("oci:{}:v2", dir.display()),
        &format!("docker-archive:{}:copy/test:v3", docker_tar.display()),
        Platforms::All,
    )
    .await;
    let loaded = docker_archive::read(
        BufReader::new(std::fs::File::open(&docker_tar).unwrap()),
        &MemoryStore::new(),
    )
    .unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].repo_tags, vec!["copy/test:v3".to_owned()]);
    assert_eq!(loaded[0].config.digest(), image.config.digest());
    let summary: serde_json::Value = serde_json::from_slice(&skopeo_inspect(
        &format!("docker-archive:{}", docker_tar.display()),
        false,
    ))
    .unwrap();
    assert_eq!(
        summary["Layers"].as_array().map(Vec::len),
        Some(2),
        "{summary}"
    );

    // docker-archive -> registry: layers become uncompressed tar, so the digest is new;
    // skopeo agrees with the digest copy printed.
    let back = format!("docker://{}/copy/from-archive:v1", registry.addr);
    let r = run_copy(
        &client,
        &format!("docker-archive:{}:copy/test:v3", docker_tar.display()),
        &back,
        Platforms::All,
    )
    .await;
    assert_eq!(skopeo_digest(&back), r.digest.to_string());

    // registry -> registry on the same host mounts instead of uploading.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = Arc::new(FsStore::open(dir2.path().join("store")).unwrap());
    let counters = Arc::new(Counters::default());
    let moved = format!("docker://{}/copy/moved:v1", registry.addr);
    copy::copy(
        &client,
        store2,
        &dst.parse().unwrap(),
        &moved.parse().unwrap(),
        &CopyOptions {
            platforms: Platforms::All,
            progress: counters.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(Counters::get(&counters.mounted), 3);
    assert_eq!(counters.uploaded(), 0);
    assert_eq!(skopeo_digest(&moved), digest);
}

#[tokio::test]
async fn indexes_copy_whole_or_one_platform() {
    let registry = PeerRegistry::start();
    let client = test_client(|_| {});
    let work = tempfile::tempdir().unwrap();
    let store = MemoryStore::new();
    let amd = sample_image(&store, "amd64", &[("f", b"amd64")]);
    let arm = sample_image(&store, "arm64", &[("f", b"arm64")]);
    let index = sample_index(
        &store,
        &[("amd64", &amd.manifest), ("arm64", &arm.manifest)],
    );
    let dir = work.path().join("multi");
    layout::export(&store, &[(Some("latest".into()), index.clone())], &dir).unwrap();

    // --all: the index itself lands in the registry.
    let all = format!("docker://{}/multi/all:latest", registry.addr);
    let r = run_copy(
        &client,
        &format!("oci:{}:latest", dir.display()),
        &all,
        Platforms::All,
    )
    .await;
    assert_eq!(r.digest.to_string(), index.digest().to_string());
    assert_eq!(
        Digest::sha256(&skopeo_inspect(&all, true)).to_string(),
        index.digest().to_string()
    );

    // --platform linux/arm64: only that manifest.
    let one = format!("docker://{}/multi/arm:latest", registry.addr);
    let r = run_copy(
        &client,
        &format!("oci:{}:latest", dir.display()),
        &one,
        Platforms::Only(platform::parse("linux/arm64").unwrap()),
    )
    .await;
    assert_eq!(r.digest.to_string(), arm.manifest.digest().to_string());
    assert_eq!(r.source_index.unwrap().digest(), index.digest());
    assert_eq!(skopeo_digest(&one), arm.manifest.digest().to_string());

    // A docker-archive cannot hold the whole index.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = Arc::new(FsStore::open(dir2.path().join("store")).unwrap());
    let err = copy::copy(
        &client,
        store2,
        &all.parse().unwrap(),
        &format!("docker-archive:{}", work.path().join("x.tar").display())
            .parse()
            .unwrap(),
        &CopyOptions::default(),
    )
    .await
    .expect_err("an index does not fit a docker-archive");
    assert!(err.to_string().contains("single-platform"), "{err}");
    assert!(!work.path().join("x.tar").exists());
}

/// Every path under `dir`, sorted.
fn paths_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(paths_under(&path));
        }
        out.push(path);
    }
    out.sort();
    out
}

#[tokio::test]
async fn oci_layouts_are_read_in_place_and_pulled_into_in_place() {
    let registry = PeerRegistry::start();
    let client = test_client(|_| {});
    let work = tempfile::tempdir().unwrap();
    let store = MemoryStore::new();
    // One layer larger than what opening a layout checks itself.
    let image = sample_image(&store, "amd64", &[("big.bin", &noise(3 << 20, 7))]);
    let src = work.path().join("src");
    layout::export(&store, &[(Some("v1".into()), image.manifest.clone())], &src).unwrap();
    let layer = image.layers[0].digest().to_string();
    let layer_file = src
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    assert!(std::fs::metadata(&layer_file).unwrap().len() > layout::CHECKED_ON_OPEN);

    // A layer changed in the source layout: the registry refuses its digest, and the error
    // names the file; the tag never appears.
    let good = std::fs::read(&layer_file).unwrap();
    let mut bad = good.clone();
    bad[100] ^= 0xff;
    std::fs::write(&layer_file, &bad).unwrap();
    let dst = format!("docker://{}/inplace/img:v1", registry.addr);
    let dir = tempfile::tempdir().unwrap();
    let err = copy::copy(
        &client,
        Arc::new(FsStore::open(dir.path().join("store")).unwrap()),
        &format!("oci:{}:v1", src.display()).parse().unwrap(),
        &dst.parse().unwrap(),
        &CopyOptions::default(),
    )
    .await
    .expect_err("a changed layer cannot be pushed");
    let text = format!("{err:#}");
    assert!(text.contains(&layer_file.display().to_string()), "{text}");
    let tags = reqwest::get(format!("http://{}/v2/inplace/img/tags/list", registry.addr))
        .await
        .unwrap();
    assert_eq!(tags.status(), 404, "no tag was pushed");

    // Put right, it pushes; nothing is written into the source layout.
    std::fs::write(&layer_file, &good).unwrap();
    let before = paths_under(&src);
    let r = run_copy(
        &client,
        &format!("oci:{}:v1", src.display()),
        &dst,
        Platforms::All,
    )
    .await;
    assert_eq!(r.digest.to_string(), image.manifest.digest().to_string());
    assert_eq!(skopeo_digest(&dst), image.manifest.digest().to_string());
    let after = paths_under(&src);
    assert_eq!(before, after);

    // Pulled into a layout that holds another image already: both entries are there, with
    // every blob in the layout's own blobs/, and no ingest directory is left behind.
    let out = work.path().join("out");
    let other = sample_image(&store, "arm64", &[("f", b"other")]);
    layout::export(
        &store,
        &[(Some("other".into()), other.manifest.clone())],
        &out,
    )
    .unwrap();
    run_copy(
        &client,
        &dst,
        &format!("oci:{}:pulled", out.display()),
        Platforms::All,
    )
    .await;
    let check = MemoryStore::new();
    let entries = layout::import(&out, &check).unwrap();
    let names: Vec<_> = entries.iter().map(|(n, _)| n.clone().unwrap()).collect();
    assert_eq!(names, ["other", "pulled"]);
    assert_eq!(entries[1].1.digest(), image.manifest.digest());
    assert_complete(&check, &entries[1].1);
    let hidden: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
    assert_eq!(
        Digest::sha256(&skopeo_inspect(
            &format!("oci:{}:pulled", out.display()),
            true
        ))
        .to_string(),
        image.manifest.digest().to_string()
    );
}
