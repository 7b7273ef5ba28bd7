//! The local image store: names, tags, removal, garbage collection, resolution, staged imports,
//! concurrent writers and a damaged index.

use std::collections::HashSet;
use std::sync::Arc;

use berth_layerstore::Digest;
use berth_layerstore::content::{Ingester, Manager, Provider};
use berth_layerstore::image::store::{ImageStore, MatchedBy, StoreError};
use berth_layerstore::image::{
    CanonicalBlob, Descriptor, ImageConfig, ImageError, descriptor_digest, new_descriptor,
};
use berth_layerstore::media;
use oci_spec::image::{ImageManifestBuilder, MediaType};

/// A tar holding one file `name` with `content`.
fn layer_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    b.append_data(&mut h, name, content).unwrap();
    b.into_inner().unwrap()
}

/// An image whose layers are the given (uncompressed) tars, put in `store`.
struct Sample {
    manifest: Descriptor,
    config: Digest,
    layers: Vec<Digest>,
}

fn sample<S: Ingester + ?Sized>(store: &S, layers: &[Vec<u8>], label: &str) -> Sample {
    let mut descs = Vec::new();
    let mut config = ImageConfig::new("linux", "amd64");
    for tar in layers {
        let info = store.ingest_bytes(tar).unwrap();
        descs.push(new_descriptor(
            media::OCI_LAYER_TAR,
            &info.digest,
            info.size,
        ));
        config.rootfs.diff_ids.push(info.digest);
    }
    config.author = Some(label.to_owned());
    let config = config
        .to_blob(media::OCI_CONFIG)
        .unwrap()
        .ingest(store)
        .unwrap();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.clone())
        .layers(descs.clone())
        .build()
        .unwrap();
    let manifest = CanonicalBlob::new(media::OCI_MANIFEST, &manifest)
        .unwrap()
        .ingest(store)
        .unwrap();
    Sample {
        manifest,
        config: descriptor_digest(&config).unwrap(),
        layers: descs
            .iter()
            .map(|d| descriptor_digest(d).unwrap())
            .collect(),
    }
}

/// Docker's normalization, enough for these tests.
fn normalize(s: &str) -> Option<String> {
    if s.contains(char::is_uppercase) {
        return None;
    }
    let (name, suffix) = match s.split_once('@') {
        Some((n, d)) => (n, format!("@{d}")),
        None => {
            let last = s.rfind('/').map_or(0, |i| i + 1);
            match s[last..].rfind(':') {
                Some(i) => (&s[..last + i], s[last + i..].to_owned()),
                None => (s, ":latest".to_owned()),
            }
        }
    };
    let first = name.split('/').next().unwrap();
    let full = if name.contains('/') && (first.contains('.') || first.contains(':')) {
        name.to_owned()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    Some(format!("{full}{suffix}"))
}

fn blobs(store: &ImageStore) -> HashSet<Digest> {
    let mut out = HashSet::new();
    store
        .content()
        .walk(&mut |info| {
            out.insert(info.digest);
            Ok(())
        })
        .unwrap();
    out
}

#[test]
fn put_get_list_tag() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    assert!(store.list().unwrap().is_empty());
    let img = sample(store.content(), &[layer_tar("a", b"a")], "a");

    let (record, previous) = store.put("docker.io/library/a:1", &img.manifest).unwrap();
    assert!(previous.is_none());
    assert_eq!(record.id, img.config);
    assert_eq!(record.target, img.manifest);
    assert!(record.created.ends_with('Z'));
    let got = store.get("docker.io/library/a:1").unwrap().unwrap();
    assert_eq!(got, record);
    assert!(store.get("docker.io/library/a:2").unwrap().is_none());

    let tagged = store
        .tag("docker.io/library/a:1", "reg.example/team/a:v2")
        .unwrap();
    assert_eq!(tagged.id, img.config);
    let names: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|r| r.name.unwrap())
        .collect();
    assert_eq!(names, ["docker.io/library/a:1", "reg.example/team/a:v2"]);
    assert!(matches!(
        store.tag("docker.io/library/nope:1", "x"),
        Err(StoreError::NotFound(n)) if n == "docker.io/library/nope:1"
    ));
    assert!(matches!(
        store.tag("docker.io/library/a:1", "has space"),
        Err(StoreError::InvalidName { .. })
    ));

    // Re-pointing a name returns what it named before.
    let other = sample(store.content(), &[layer_tar("b", b"b")], "b");
    let (_, previous) = store.put("docker.io/library/a:1", &other.manifest).unwrap();
    assert_eq!(previous.unwrap().target, img.manifest);
    assert_eq!(store.list().unwrap().len(), 2);
    // Its last name gone, the image stays, untagged, as a dangling image does in Docker.
    store.put("reg.example/team/a:v2", &other.manifest).unwrap();
    let list = store.list().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[2].name, None);
    assert_eq!(list[2].target, img.manifest);
    // Named again, it is no longer listed untagged.
    store.put("docker.io/library/a:old", &img.manifest).unwrap();
    assert!(store.list().unwrap().iter().all(|r| r.name.is_some()));

    // A store reopened sees the same index.
    let again = ImageStore::open(dir.path()).unwrap();
    assert_eq!(again.list().unwrap(), store.list().unwrap());
}

#[test]
fn put_refuses_missing_content_and_non_images() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let elsewhere = berth_layerstore::content::memory::MemoryStore::new();
    let img = sample(&elsewhere, &[layer_tar("a", b"a")], "a");
    match store.put("x:1", &img.manifest) {
        Err(StoreError::Image(ImageError::MissingBlob { digest, .. })) => {
            assert_eq!(digest.to_string(), img.manifest.digest().to_string())
        }
        other => panic!("{other:?}"),
    }
    let blob = store.content().ingest_bytes(b"not a manifest").unwrap();
    let desc = new_descriptor("application/octet-stream", &blob.digest, blob.size);
    assert!(matches!(
        store.put("x:1", &desc),
        Err(StoreError::NotAnImage { .. })
    ));
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn remove_and_gc_keep_shared_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let base = layer_tar("base", b"shared base layer");
    let a = sample(
        store.content(),
        &[base.clone(), layer_tar("a", b"only a")],
        "a",
    );
    let b = sample(store.content(), &[base, layer_tar("b", b"only b")], "b");
    store.put("docker.io/library/a:1", &a.manifest).unwrap();
    store.put("docker.io/library/a:also", &a.manifest).unwrap();
    store.put("docker.io/library/b:1", &b.manifest).unwrap();
    // A blob no image references.
    let stray = store.content().ingest_bytes(b"stray").unwrap();

    let report = store.gc().unwrap();
    assert_eq!(report.removed, std::slice::from_ref(&stray));
    assert_eq!(report.bytes, stray.size);

    // One of two names: the image stays.
    let removed = store.remove("docker.io/library/a:also").unwrap();
    assert!(!removed.unreferenced);
    assert!(store.gc().unwrap().removed.is_empty());

    // The last name: its own blobs go, the shared base stays for b.
    let removed = store.remove("docker.io/library/a:1").unwrap();
    assert!(removed.unreferenced);
    assert_eq!(removed.record.id, a.config);
    let before = blobs(&store);
    let report = store.gc().unwrap();
    let gone: HashSet<Digest> = report.removed.iter().map(|i| i.digest.clone()).collect();
    let expected: HashSet<Digest> = [
        descriptor_digest(&a.manifest).unwrap(),
        a.config.clone(),
        a.layers[1].clone(),
    ]
    .into();
    assert_eq!(gone, expected);
    assert_eq!(blobs(&store), &before - &expected);
    assert!(store.content().exists(&a.layers[0]).unwrap());
    assert_eq!(
        store.size(&b.manifest).unwrap(),
        b.manifest.size()
            + store.content().info(&b.config).unwrap().size
            + b.layers
                .iter()
                .map(|d| store.content().info(d).unwrap().size)
                .sum::<u64>()
    );

    assert!(matches!(
        store.remove("docker.io/library/a:1"),
        Err(StoreError::NotFound(_))
    ));
    let removed = store.remove_id(&b.config).unwrap();
    assert_eq!(removed.len(), 1);
    assert!(removed[0].unreferenced);
    store.gc().unwrap();
    assert!(blobs(&store).is_empty());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn resolves_names_short_names_digests_and_id_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let a = sample(store.content(), &[layer_tar("a", b"a")], "a");
    store
        .put("docker.io/library/busybox:latest", &a.manifest)
        .unwrap();
    store.put("localhost:5000/team/app:1", &a.manifest).unwrap();

    for query in [
        "busybox",
        "busybox:latest",
        "library/busybox",
        "docker.io/library/busybox:latest",
    ] {
        let r = store.resolve(query, &normalize).unwrap();
        assert_eq!(r.matched_by, MatchedBy::Name, "{query}");
        assert_eq!(
            r.record.name.as_deref(),
            Some("docker.io/library/busybox:latest")
        );
    }
    let r = store
        .resolve("localhost:5000/team/app:1", &normalize)
        .unwrap();
    assert_eq!(r.record.name.as_deref(), Some("localhost:5000/team/app:1"));

    let hex = a.config.hex();
    for query in [
        hex[..12].to_owned(),
        format!("sha256:{}", &hex[..5]),
        a.config.to_string(),
        a.manifest.digest().to_string(),
    ] {
        let r = store.resolve(&query, &normalize).unwrap();
        assert_eq!(r.matched_by, MatchedBy::Id, "{query}");
        assert_eq!(r.record.id, a.config);
    }
    let by_digest = format!("busybox@{}", a.manifest.digest());
    let r = store.resolve(&by_digest, &normalize).unwrap();
    assert_eq!(r.matched_by, MatchedBy::RepoDigest);
    assert_eq!(
        r.record.name.as_deref(),
        Some("docker.io/library/busybox:latest")
    );

    match store.resolve("nothing", &normalize) {
        Err(e @ StoreError::NotFound(_)) => assert!(e.to_string().contains("nothing")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.resolve(&format!("other@{}", a.manifest.digest()), &normalize),
        Err(StoreError::NotFound(_))
    ));

    // Enough images that two ids share their first hex digit: one digit is ambiguous.
    let mut first_digits = HashSet::new();
    let mut shared = None;
    for i in 0..17 {
        let img = sample(store.content(), &[layer_tar("x", b"x")], &format!("img{i}"));
        store
            .put(&format!("docker.io/library/many:{i}"), &img.manifest)
            .unwrap();
        let digit = img.config.hex()[..1].to_owned();
        if !first_digits.insert(digit.clone()) {
            shared = Some(digit);
            break;
        }
    }
    let shared = shared.expect("17 ids over 16 digits share one");
    match store.resolve(&shared, &normalize) {
        Err(StoreError::Ambiguous { ids, .. }) => assert!(ids.len() >= 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn concurrent_writers_lose_no_tags() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let img = sample(store.content(), &[layer_tar("a", b"a")], "a");
    store
        .put("docker.io/library/base:1", &img.manifest)
        .unwrap();
    let root = Arc::new(dir.path().to_owned());
    let per_thread = 40;
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let root = Arc::clone(&root);
            let manifest = img.manifest.clone();
            std::thread::spawn(move || {
                // Each thread opens the store itself, as another process would.
                let store = ImageStore::open(&*root).unwrap();
                for i in 0..per_thread {
                    if i % 2 == 0 {
                        store
                            .tag("docker.io/library/base:1", &format!("t{t}/n:{i}"))
                            .unwrap();
                    } else {
                        store.put(&format!("t{t}/n:{i}"), &manifest).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let names: HashSet<String> = store
        .list()
        .unwrap()
        .into_iter()
        .filter_map(|r| r.name)
        .collect();
    assert_eq!(names.len(), 1 + 2 * per_thread);
    for t in 0..2 {
        for i in 0..per_thread {
            assert!(names.contains(&format!("t{t}/n:{i}")), "t{t}/n:{i} lost");
        }
    }
}

#[test]
fn corrupt_index_is_a_clear_error_and_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let img = sample(store.content(), &[layer_tar("a", b"a")], "a");
    store.put("a:1", &img.manifest).unwrap();
    let path = store.index_path();
    std::fs::write(&path, b"{\"version\":1,\"images\":[{\"name\":").unwrap();

    let err = store.list().unwrap_err();
    assert!(matches!(err, StoreError::CorruptIndex { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("corrupt"), "{message}");
    assert!(store.put("b:1", &img.manifest).is_err());
    assert!(store.resolve("a:1", &normalize).is_err());
    assert!(
        store.gc().is_err(),
        "gc must not run on an index it cannot read"
    );
    assert!(store.content().exists(&img.config).unwrap());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"{\"version\":1,\"images\":[{\"name\":"
    );

    std::fs::write(&path, b"{\"version\":7,\"images\":[]}").unwrap();
    assert!(matches!(
        store.list(),
        Err(StoreError::IndexVersion { version: 7, .. })
    ));
}

#[test]
fn staged_imports_land_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let kept = sample(store.content(), &[layer_tar("k", b"kept")], "kept");
    store.put("kept:1", &kept.manifest).unwrap();

    // A good import, one of whose layers the store already has.
    let staging = store.staging().unwrap();
    let staging_dir = staging.dir().to_owned();
    let img = sample(
        &staging,
        &[layer_tar("k", b"kept"), layer_tar("n", b"new")],
        "new",
    );
    assert!(
        !store.content().exists(&img.layers[1]).unwrap(),
        "staged blobs stay out of the store until commit"
    );
    let records = store
        .commit(&staging, &[(None, img.manifest.clone())])
        .unwrap();
    drop(staging);
    assert!(!staging_dir.exists());
    assert_eq!(records[0].name, None);
    assert_eq!(records[0].id, img.config);
    for d in img.layers.iter().chain([&img.config]) {
        assert!(store.content().exists(d).unwrap());
    }
    // Untagged until named; naming it drops the untagged record.
    assert_eq!(store.list().unwrap().len(), 2);
    store.put("new:1", &img.manifest).unwrap();
    let list = store.list().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|r| r.name.is_some()));

    // A bad import: the manifest names a layer nobody has. Nothing lands.
    let before_blobs = blobs(&store);
    let before_index = std::fs::read(store.index_path()).unwrap();
    let staging = store.staging().unwrap();
    let elsewhere = berth_layerstore::content::memory::MemoryStore::new();
    let broken = sample(&elsewhere, &[layer_tar("m", b"missing")], "broken");
    let manifest_bytes = elsewhere
        .read_all(&descriptor_digest(&broken.manifest).unwrap())
        .unwrap();
    staging.ingest_bytes(&manifest_bytes).unwrap();
    let config_bytes = elsewhere.read_all(&broken.config).unwrap();
    staging.ingest_bytes(&config_bytes).unwrap();
    match store.commit(
        &staging,
        &[(Some("broken:1".into()), broken.manifest.clone())],
    ) {
        Err(StoreError::Image(ImageError::MissingBlob { digest, .. })) => {
            assert_eq!(digest, broken.layers[0])
        }
        other => panic!("{other:?}"),
    }
    drop(staging);
    assert_eq!(blobs(&store), before_blobs);
    assert_eq!(std::fs::read(store.index_path()).unwrap(), before_index);
}

#[test]
fn gc_removes_staging_left_by_a_crash_but_not_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let crashed = dir.path().join("images/staging/crashed");
    std::fs::create_dir_all(crashed.join("content")).unwrap();
    std::fs::write(crashed.join("lock"), b"").unwrap();
    let live = store.staging().unwrap();
    let report = store.gc().unwrap();
    assert_eq!(report.stale_staging, 1);
    assert!(!crashed.exists());
    assert!(live.dir().exists());
}

#[test]
fn pins_keep_their_blobs_through_gc() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let staging = store.staging().unwrap();
    let info = staging.ingest_bytes(&layer_tar("p", b"pinned")).unwrap();
    let layer = new_descriptor(media::OCI_LAYER_TAR, &info.digest, info.size);
    let data = serde_json::json!({"step": 1});
    store
        .pin(
            &staging,
            "build-cache",
            "k1",
            std::slice::from_ref(&layer),
            &data,
        )
        .unwrap();
    drop(staging);
    assert!(store.content().exists(&info.digest).unwrap(), "landed");
    assert!(store.gc().unwrap().removed.is_empty(), "kept by the pin");
    let (read, blobs) = store.read_pin("build-cache", "k1").unwrap().unwrap();
    assert_eq!((read, blobs), (data.clone(), vec![layer.clone()]));
    assert_eq!(store.pins("build-cache").unwrap(), ["k1"]);
    assert!(store.read_pin("build-cache", "k2").unwrap().is_none());

    // A pin of a blob nobody has pins nothing.
    let staging = store.staging().unwrap();
    let elsewhere = berth_layerstore::content::memory::MemoryStore::new();
    let missing = elsewhere.ingest_bytes(b"not here").unwrap();
    let missing = new_descriptor(media::OCI_LAYER_TAR, &missing.digest, missing.size);
    assert!(
        store
            .pin(&staging, "build-cache", "k2", &[missing], &data)
            .is_err()
    );
    assert!(store.read_pin("build-cache", "k2").unwrap().is_none());
    // Names that could leave the pins' directory are refused.
    assert!(matches!(
        store.pin(&staging, "build-cache", "../x", &[], &data),
        Err(StoreError::InvalidPin { .. })
    ));
    drop(staging);

    // A damaged pin is an error to its reader and protects nothing.
    let path = dir.path().join("images/pins/build-cache/k1.json");
    std::fs::write(&path, b"{\"blobs\": [").unwrap();
    assert!(matches!(
        store.read_pin("build-cache", "k1"),
        Err(StoreError::CorruptPin { .. })
    ));
    std::fs::remove_file(&path).unwrap();
    store
        .pin(
            &store.staging().unwrap(),
            "build-cache",
            "k1",
            std::slice::from_ref(&layer),
            &data,
        )
        .unwrap();
    assert!(store.unpin("build-cache", "k1").unwrap());
    assert!(!store.unpin("build-cache", "k1").unwrap());
    let report = store.gc().unwrap();
    assert_eq!(report.removed.len(), 1);
    assert!(!store.content().exists(&info.digest).unwrap());
}
