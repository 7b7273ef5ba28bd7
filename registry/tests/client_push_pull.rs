//! Push and pull against the peer registry (CNCF distribution): round trips, HEAD skips,
//! cross-repository mounts, chunked uploads and multi-platform indexes.

mod client_support;

use std::sync::Arc;

use berth_layerstore::content::Provider;
use berth_layerstore::content::memory::MemoryStore;
use berth_layerstore::image::{descriptor_digest, platform};
use berth_registry::client::{Counters, Platforms, PullOptions, PushOptions};
use client_support::*;

fn counters() -> Arc<Counters> {
    Arc::new(Counters::default())
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    Counters::get(c)
}

#[tokio::test]
async fn push_then_pull_round_trips_and_second_push_skips_blobs() {
    let registry = PeerRegistry::start();
    let client = test_client(|_| {});
    let (_d, src) = fs_store();
    let image = sample_image(
        &src,
        "amd64",
        &[
            ("a.txt", b"layer one"),
            ("b.txt", b"layer two"),
            ("c.txt", &noise(300_000, 7)),
        ],
    );
    let reference = registry.reference("team/app:1.0");

    let first = counters();
    let pushed = client
        .push(
            &src,
            &image.manifest,
            &reference,
            &PushOptions {
                progress: first.clone(),
                ..PushOptions::default()
            },
        )
        .await
        .expect("push");
    assert_eq!(pushed.root.digest(), image.manifest.digest());
    assert_eq!(pushed.blobs, 4, "config and three layers");
    assert_eq!(first.uploaded(), 4);
    assert_eq!(get(&first.exists), 0);
    assert_eq!(get(&first.manifests), 1);

    // The registry resolves the tag to the same digest.
    let resolved = client.resolve(&reference).await.expect("resolve");
    assert_eq!(resolved.digest(), image.manifest.digest());
    assert_eq!(resolved.size(), image.manifest.size());

    // Pull into a fresh store: same digests, every blob intact.
    let (_d2, dst) = fs_store();
    let pulled_counters = counters();
    let pulled = client
        .pull(
            &reference,
            &dst,
            &PullOptions {
                progress: pulled_counters.clone(),
                ..PullOptions::default()
            },
        )
        .await
        .expect("pull");
    assert_eq!(pulled.root.digest(), image.manifest.digest());
    assert!(pulled.index.is_none());
    assert_eq!(pulled.blobs.len(), 4);
    assert_eq!(get(&pulled_counters.downloaded), 4);
    let all = assert_complete(&dst, &pulled.root);
    assert_eq!(all.len(), 5);
    for layer in &image.layers {
        let d = descriptor_digest(layer).unwrap();
        assert_eq!(dst.read_all(&d).unwrap(), src.read_all(&d).unwrap());
    }

    // Pulling again into the same store downloads nothing.
    let again = counters();
    client
        .pull(
            &reference,
            &dst,
            &PullOptions {
                progress: again.clone(),
                ..PullOptions::default()
            },
        )
        .await
        .expect("second pull");
    assert_eq!(get(&again.downloaded), 0);
    assert_eq!(get(&again.already_present), 4);

    // A second push HEADs every blob and uploads none.
    let second = counters();
    client
        .push(
            &src,
            &image.manifest,
            &reference,
            &PushOptions {
                progress: second.clone(),
                ..PushOptions::default()
            },
        )
        .await
        .expect("second push");
    assert_eq!(second.uploaded(), 0, "nothing is uploaded twice");
    assert_eq!(get(&second.exists), 4);

    // Pull by digest works too, and fetch_manifest returns the same bytes.
    let by_digest = registry.reference(&format!("team/app@{}", image.manifest.digest()));
    let fetched = client
        .fetch_manifest(&by_digest)
        .await
        .expect("fetch by digest");
    assert_eq!(
        fetched.bytes.as_ref(),
        src.read_all(&descriptor_digest(&image.manifest).unwrap())
            .unwrap()
    );

    // A tag that does not exist is a 404 carrying the registry's error code.
    let missing = client
        .resolve(&registry.reference("team/app:nope"))
        .await
        .expect_err("missing tag");
    assert!(missing.is_not_found(), "{missing}");
    let text = missing.to_string();
    assert!(
        text.contains("MANIFEST_UNKNOWN") && text.contains("/v2/team/app/manifests/nope"),
        "{text}"
    );
}

#[tokio::test]
async fn cross_repository_mount() {
    let registry = PeerRegistry::start();
    let client = test_client(|_| {});
    let store = MemoryStore::new();
    let image = sample_image(
        &store,
        "amd64",
        &[("x", b"mounted layer"), ("y", &noise(50_000, 3))],
    );
    let from = registry.reference("source/repo:v1");
    client
        .push(&store, &image.manifest, &from, &PushOptions::default())
        .await
        .expect("push source");

    let to = registry.reference("other/repo:v1");
    let c = counters();
    client
        .push(
            &store,
            &image.manifest,
            &to,
            &PushOptions {
                mount_from: vec![from.clone()],
                progress: c.clone(),
            },
        )
        .await
        .expect("push with mount");
    assert_eq!(get(&c.mounted), 3, "config and both layers are mounted");
    assert_eq!(c.uploaded(), 0);

    // The mounted repository serves the image.
    let fresh = MemoryStore::new();
    let pulled = client
        .pull(&to, &fresh, &PullOptions::default())
        .await
        .expect("pull mounted image");
    assert_eq!(pulled.root.digest(), image.manifest.digest());
    assert_complete(&fresh, &pulled.root);

    // A mount source on another registry is ignored: plain uploads.
    let elsewhere: berth_registry::reference::Reference =
        "reg.invalid/source/repo:v1".parse().unwrap();
    let third = registry.reference("third/repo:v1");
    let c = counters();
    client
        .push(
            &store,
            &image.manifest,
            &third,
            &PushOptions {
                mount_from: vec![elsewhere],
                progress: c.clone(),
            },
        )
        .await
        .expect("push without usable mount");
    assert_eq!(get(&c.mounted), 0);
    assert_eq!(c.uploaded(), 3);
}

#[tokio::test]
async fn chunked_upload_of_a_multi_mib_blob() {
    let registry = PeerRegistry::start();
    const MIB: u64 = 1024 * 1024;
    let client = test_client(|o| {
        o.monolithic_threshold = MIB;
        o.chunk_size = MIB;
    });
    let (_d, store) = fs_store();
    // Stored (not gzip) so the blob stays 5.5 MiB.
    let big = noise((5 * MIB + MIB / 2) as usize, 11);
    let image = sample_image(&store, "amd64", &[("small", b"tiny")]);
    let info = berth_layerstore::content::Ingester::ingest_bytes(&store, &big).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": berth_layerstore::media::OCI_MANIFEST,
        "config": image.config,
        "layers": [
            image.layers[0],
            berth_layerstore::image::new_descriptor(
                berth_layerstore::media::OCI_LAYER_GZIP, &info.digest, info.size),
        ],
    });
    let manifest = berth_layerstore::image::CanonicalBlob::new(
        berth_layerstore::media::OCI_MANIFEST,
        &manifest,
    )
    .unwrap()
    .ingest(&store)
    .unwrap();
    let reference = registry.reference("big/blob:latest");
    let c = counters();
    client
        .push(
            &store,
            &manifest,
            &reference,
            &PushOptions {
                progress: c.clone(),
                ..PushOptions::default()
            },
        )
        .await
        .expect("push");
    assert_eq!(get(&c.uploaded_chunked), 1, "only the big blob is chunked");
    assert_eq!(get(&c.chunks), 6, "5.5 MiB in 1 MiB chunks");
    assert_eq!(get(&c.uploaded_monolithic), 2);
    assert!(get(&c.bytes) >= big.len() as u64);

    let (_d2, fresh) = fs_store();
    let pulled = client
        .pull(&reference, &fresh, &PullOptions::default())
        .await
        .expect("pull");
    assert_complete(&fresh, &pulled.root);
    assert_eq!(fresh.read_all(&info.digest).unwrap(), big);
}

#[tokio::test]
async fn index_with_two_platforms() {
    let registry = PeerRegistry::start();
    let client = test_client(|_| {});
    let store = MemoryStore::new();
    let amd = sample_image(&store, "amd64", &[("arch", b"amd64 layer")]);
    let arm = sample_image(&store, "arm64", &[("arch", b"arm64 layer")]);
    let index = sample_index(
        &store,
        &[("amd64", &amd.manifest), ("arm64", &arm.manifest)],
    );
    let reference = registry.reference("multi/arch:1");
    let c = counters();
    let pushed = client
        .push(
            &store,
            &index,
            &reference,
            &PushOptions {
                progress: c.clone(),
                ..PushOptions::default()
            },
        )
        .await
        .expect("push index");
    assert_eq!(pushed.manifests, 3);
    assert_eq!(get(&c.manifests), 3);
    assert_eq!(c.uploaded(), 4);

    // Everything.
    let all = MemoryStore::new();
    let pulled = client
        .pull(&reference, &all, &PullOptions::default())
        .await
        .expect("pull all");
    assert_eq!(pulled.root.digest(), index.digest());
    assert_eq!(pulled.manifests.len(), 3);
    assert_eq!(
        pulled.manifests.last().unwrap().digest(),
        index.digest(),
        "index stored last"
    );
    assert_complete(&all, &pulled.root);

    // One platform: the arm64 manifest becomes the root; amd64's layer is not fetched.
    let one = MemoryStore::new();
    let pulled = client
        .pull(
            &reference,
            &one,
            &PullOptions {
                platforms: Platforms::Only(platform::parse("linux/arm64").unwrap()),
                ..PullOptions::default()
            },
        )
        .await
        .expect("pull arm64");
    assert_eq!(pulled.root.digest(), arm.manifest.digest());
    assert_eq!(pulled.index.as_ref().unwrap().digest(), index.digest());
    assert_complete(&one, &pulled.root);
    let amd_layer = descriptor_digest(&amd.layers[0]).unwrap();
    assert!(!one.exists(&amd_layer).unwrap());
    assert!(!one.exists(&descriptor_digest(&index).unwrap()).unwrap());

    // A platform the index lacks is an error naming it.
    let err = client
        .pull(
            &reference,
            &MemoryStore::new(),
            &PullOptions {
                platforms: Platforms::Only(platform::parse("linux/s390x").unwrap()),
                ..PullOptions::default()
            },
        )
        .await
        .expect_err("no s390x");
    assert!(err.to_string().contains("linux/s390x"), "{err}");
}
