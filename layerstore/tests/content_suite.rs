//! One behavioural suite for every content store implementation, written against the role
//! traits only, plus checks that only make sense for the filesystem store.
//!
//! `content_suite!` stamps each check in [`checks`] out as a `#[test]` per implementation, so a
//! failure names both the implementation and the check.

use std::io::{Read, Write};
use std::ops::Range;

use berth_layerstore::content::fs::FsStore;
use berth_layerstore::content::memory::MemoryStore;
use berth_layerstore::content::{
    Adopter, ContentError, ContentStore, Info, Ingester, Provider, Verification, fsck,
};
use berth_layerstore::{Algorithm, Digest};

/// Every digest the store reports through `walk`, in the order it reports them.
fn walked<S: ContentStore + ?Sized>(store: &S) -> Vec<Info> {
    let mut infos = Vec::new();
    store
        .walk(&mut |info| {
            infos.push(info);
            Ok(())
        })
        .expect("walk");
    infos
}

fn read_range<S: ContentStore + ?Sized>(store: &S, digest: &Digest, range: Range<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .read(digest, Some(range))
        .expect("read")
        .read_to_end(&mut out)
        .expect("read_to_end");
    out
}

/// Deterministic, incompressible-looking test data.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes `data` to a new file `name` in `dir` and returns its path.
fn file_with(dir: &std::path::Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write file to adopt");
    path
}

/// Checks that hold for every [`ContentStore`]. Each takes a fresh, empty store.
mod checks {
    use std::sync::Barrier;

    use super::*;

    const BOTH: [Verification; 2] = [Verification::CallerHashed, Verification::Rehash];

    pub fn adopt_lands_and_consumes_the_file<S: ContentStore + Adopter>(store: &S) {
        let dir = tempfile::tempdir().unwrap();
        for (i, verified) in BOTH.into_iter().enumerate() {
            let data = pattern(100_000 + i, 21 + i as u64);
            let digest = Digest::sha256(&data);
            let path = file_with(dir.path(), "upload", &data);
            let info = store
                .adopt(&path, &digest, data.len() as u64, verified)
                .unwrap();
            assert_eq!(
                info,
                Info {
                    digest: digest.clone(),
                    size: data.len() as u64
                }
            );
            assert!(!path.exists(), "{verified:?}: the adopted file is consumed");
            assert_eq!(store.info(&digest).unwrap(), info);
            assert_eq!(store.read_all(&digest).unwrap(), data);
        }
        assert_eq!(walked(store).len(), 2);

        // sha512 and the empty blob too.
        let d512 = Digest::of(Algorithm::Sha512, b"five hundred and twelve");
        let path = file_with(dir.path(), "sha512", b"five hundred and twelve");
        store.adopt(&path, &d512, 23, Verification::Rehash).unwrap();
        assert_eq!(store.read_all(&d512).unwrap(), b"five hundred and twelve");
        let empty = Digest::sha256(b"");
        let path = file_with(dir.path(), "empty", b"");
        store
            .adopt(&path, &empty, 0, Verification::CallerHashed)
            .unwrap();
        assert_eq!(store.info(&empty).unwrap().size, 0);
        assert_eq!(walked(store).len(), 4);
    }

    pub fn adopt_of_the_wrong_size_lands_nothing<S: ContentStore + Adopter>(store: &S) {
        let dir = tempfile::tempdir().unwrap();
        let data = b"twelve bytes";
        let digest = Digest::sha256(data);
        let path = file_with(dir.path(), "upload", data);
        for verified in BOTH {
            for size in [11, 13, 0] {
                match store.adopt(&path, &digest, size, verified) {
                    Err(ContentError::SizeMismatch {
                        digest: d,
                        expected,
                        actual,
                    }) => {
                        assert_eq!(d, digest);
                        assert_eq!(expected, size);
                        assert_eq!(actual, 12);
                    }
                    other => {
                        panic!("{verified:?}, size {size}: expected SizeMismatch, got {other:?}")
                    }
                }
            }
        }
        assert!(!store.exists(&digest).unwrap());
        assert!(walked(store).is_empty());
        // The file is left as it was, still writable by its owner.
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert!(!std::fs::metadata(&path).unwrap().permissions().readonly());
    }

    pub fn adopt_with_rehash_refuses_the_wrong_digest<S: ContentStore + Adopter>(store: &S) {
        let dir = tempfile::tempdir().unwrap();
        let data = b"actual content";
        let claimed = Digest::sha256(b"claimed content");
        let path = file_with(dir.path(), "upload", data);
        match store.adopt(&path, &claimed, data.len() as u64, Verification::Rehash) {
            Err(ContentError::DigestMismatch { expected, actual }) => {
                assert_eq!(expected, claimed);
                assert_eq!(actual, Digest::sha256(data));
            }
            other => panic!("expected DigestMismatch, got {other:?}"),
        }
        let sha512 = Digest::of(Algorithm::Sha512, b"claimed content");
        assert!(matches!(
            store.adopt(&path, &sha512, data.len() as u64, Verification::Rehash),
            Err(ContentError::DigestMismatch { .. })
        ));
        assert!(walked(store).is_empty());
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    pub fn adopt_refuses_what_is_not_a_regular_file<S: ContentStore + Adopter>(store: &S) {
        let dir = tempfile::tempdir().unwrap();
        let digest = Digest::sha256(b"");
        for verified in BOTH {
            assert!(matches!(
                store.adopt(&dir.path().join("missing"), &digest, 0, verified),
                Err(ContentError::Io { .. })
            ));
            assert!(matches!(
                store.adopt(dir.path(), &digest, 0, verified),
                Err(ContentError::Io { .. }) | Err(ContentError::SizeMismatch { .. })
            ));
        }
        assert!(dir.path().is_dir());
        assert!(walked(store).is_empty());
    }

    pub fn adopting_an_existing_blob_is_a_no_op<S: ContentStore + Adopter>(store: &S) {
        let dir = tempfile::tempdir().unwrap();
        let data = b"already here";
        let first = store.ingest_bytes(data).unwrap();
        for verified in BOTH {
            let path = file_with(dir.path(), "again", data);
            let second = store
                .adopt(&path, &first.digest, data.len() as u64, verified)
                .unwrap();
            assert_eq!(second, first);
            assert!(!path.exists(), "{verified:?}: the file is removed");
        }
        assert_eq!(walked(store), vec![first.clone()]);
        assert_eq!(store.read_all(&first.digest).unwrap(), data);
        // A file of other content cannot damage the blob when the store checks it.
        let path = file_with(dir.path(), "other", b"something el");
        assert!(matches!(
            store.adopt(&path, &first.digest, 12, Verification::Rehash),
            Err(ContentError::DigestMismatch { .. })
        ));
        assert_eq!(store.read_all(&first.digest).unwrap(), data);
        assert!(path.exists());
    }

    pub fn concurrent_adopts_of_the_same_content<S: ContentStore + Adopter>(store: &S) {
        const THREADS: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(256 * 1024, 9);
        let digest = Digest::sha256(&data);
        let paths: Vec<_> = (0..THREADS)
            .map(|i| file_with(dir.path(), &format!("upload-{i}"), &data))
            .collect();
        let barrier = Barrier::new(THREADS + 1);
        let results: Vec<_> = std::thread::scope(|scope| {
            let mut handles: Vec<_> = paths
                .iter()
                .enumerate()
                .map(|(i, path)| {
                    let (barrier, digest) = (&barrier, &digest);
                    let size = data.len() as u64;
                    scope.spawn(move || {
                        barrier.wait();
                        store.adopt(path, digest, size, BOTH[i % 2])
                    })
                })
                .collect();
            // A writer committing the same content joins the race.
            let commit = scope.spawn(|| {
                let mut w = store.writer(Algorithm::Sha256)?;
                w.write_all(&data).map_err(|e| ContentError::Io {
                    path: "<test>".into(),
                    source: e,
                })?;
                barrier.wait();
                w.commit(Some(data.len() as u64), Some(&digest))
            });
            handles.push(commit);
            handles
                .into_iter()
                .map(|h| h.join().expect("adopt thread panicked"))
                .collect()
        });
        let expected = Info {
            digest: digest.clone(),
            size: data.len() as u64,
        };
        for result in results {
            assert_eq!(result.unwrap(), expected);
        }
        assert_eq!(walked(store), vec![expected]);
        assert_eq!(store.read_all(&digest).unwrap(), data);
        for path in &paths {
            assert!(!path.exists(), "{} is consumed", path.display());
        }
    }

    pub fn round_trip<S: ContentStore>(store: &S) {
        let data = b"hello, content store";
        let digest = Digest::sha256(data);
        assert!(!store.exists(&digest).unwrap());

        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(&data[..5]).unwrap();
        w.write_all(&data[5..]).unwrap();
        assert_eq!(w.written(), data.len() as u64);
        let info = w.commit(Some(data.len() as u64), Some(&digest)).unwrap();

        assert_eq!(
            info,
            Info {
                digest: digest.clone(),
                size: data.len() as u64
            }
        );
        assert!(store.exists(&digest).unwrap());
        assert_eq!(store.info(&digest).unwrap(), info);
        assert_eq!(store.read_all(&digest).unwrap(), data);
        assert_eq!(walked(store), vec![info]);
    }

    pub fn commit_without_expectations_computes_the_digest<S: ContentStore>(store: &S) {
        let data = b"trust nothing, compute everything";
        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(data).unwrap();
        let info = w.commit(None, None).unwrap();
        assert_eq!(info.digest, Digest::sha256(data));
        assert_eq!(info.size, data.len() as u64);
        assert_eq!(store.read_all(&info.digest).unwrap(), data);
    }

    pub fn ingest_helpers<S: ContentStore>(store: &S) {
        let config = br#"{"architecture":"amd64"}"#;
        let info = store.ingest_bytes(config).unwrap();
        assert_eq!(info.digest, Digest::sha256(config));
        assert_eq!(store.read_all(&info.digest).unwrap(), config);

        let layer = pattern(10_000, 7);
        let digest = Digest::sha256(&layer);
        let info = store
            .ingest(&mut &layer[..], Some(layer.len() as u64), Some(&digest))
            .unwrap();
        assert_eq!(info.digest, digest);
        assert_eq!(store.read_all(&digest).unwrap(), layer);
    }

    pub fn empty_blob<S: ContentStore>(store: &S) {
        let info = store.ingest_bytes(b"").unwrap();
        assert_eq!(info.size, 0);
        assert_eq!(info.digest, Digest::sha256(b""));
        assert_eq!(store.info(&info.digest).unwrap().size, 0);
        assert!(store.read_all(&info.digest).unwrap().is_empty());
        assert!(read_range(store, &info.digest, 0..10).is_empty());
    }

    pub fn digest_mismatch_lands_nothing<S: ContentStore>(store: &S) {
        let data = b"actual content";
        let claimed = Digest::sha256(b"claimed content");
        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(data).unwrap();
        match w.commit(Some(data.len() as u64), Some(&claimed)) {
            Err(ContentError::DigestMismatch { expected, actual }) => {
                assert_eq!(expected, claimed);
                assert_eq!(actual, Digest::sha256(data));
            }
            other => panic!("expected DigestMismatch, got {other:?}"),
        }
        assert!(!store.exists(&claimed).unwrap());
        assert!(!store.exists(&Digest::sha256(data)).unwrap());
        assert!(walked(store).is_empty());
    }

    pub fn size_mismatch_lands_nothing<S: ContentStore>(store: &S) {
        let data = b"twelve bytes";
        let digest = Digest::sha256(data);
        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(data).unwrap();
        match w.commit(Some(13), Some(&digest)) {
            Err(ContentError::SizeMismatch {
                digest: d,
                expected,
                actual,
            }) => {
                assert_eq!(d, digest);
                assert_eq!(expected, 13);
                assert_eq!(actual, 12);
            }
            other => panic!("expected SizeMismatch, got {other:?}"),
        }
        // The size alone is also checked when no digest is expected.
        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(data).unwrap();
        assert!(matches!(
            w.commit(Some(11), None),
            Err(ContentError::SizeMismatch {
                expected: 11,
                actual: 12,
                ..
            })
        ));
        assert!(!store.exists(&digest).unwrap());
        assert!(walked(store).is_empty());
    }

    pub fn algorithm_mismatch_lands_nothing<S: ContentStore>(store: &S) {
        let data = b"hashed with sha256";
        let sha512 = Digest::of(Algorithm::Sha512, data);
        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(data).unwrap();
        match w.commit(None, Some(&sha512)) {
            Err(ContentError::AlgorithmMismatch {
                algorithm,
                expected,
            }) => {
                assert_eq!(algorithm, Algorithm::Sha256);
                assert_eq!(expected, sha512);
            }
            other => panic!("expected AlgorithmMismatch, got {other:?}"),
        }
        assert!(walked(store).is_empty());
    }

    pub fn sha512_ingest<S: ContentStore>(store: &S) {
        let data = pattern(4096, 512);
        let digest = Digest::of(Algorithm::Sha512, &data);
        // `ingest` picks the writer's algorithm from the expected digest.
        let info = store
            .ingest(&mut &data[..], Some(data.len() as u64), Some(&digest))
            .unwrap();
        assert_eq!(info.digest, digest);
        assert_eq!(info.digest.algorithm(), Algorithm::Sha512);
        assert_eq!(store.read_all(&digest).unwrap(), data);
        assert!(!store.exists(&Digest::sha256(&data)).unwrap());

        let mut w = store.writer(Algorithm::Sha512).unwrap();
        w.write_all(b"abc").unwrap();
        let info = w.commit(None, None).unwrap();
        assert_eq!(
            info.digest.to_string(),
            "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert_eq!(walked(store).len(), 2);
    }

    pub fn committing_an_existing_blob_is_a_no_op<S: ContentStore>(store: &S) {
        let data = b"already here";
        let first = store.ingest_bytes(data).unwrap();
        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(data).unwrap();
        let second = w
            .commit(Some(data.len() as u64), Some(&first.digest))
            .unwrap();
        assert_eq!(first, second);
        assert_eq!(walked(store), vec![first.clone()]);
        assert_eq!(store.read_all(&first.digest).unwrap(), data);
        // A mismatching writer cannot damage the existing blob either.
        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(b"something else").unwrap();
        assert!(matches!(
            w.commit(None, Some(&first.digest)),
            Err(ContentError::DigestMismatch { .. })
        ));
        assert_eq!(store.read_all(&first.digest).unwrap(), data);
    }

    pub fn concurrent_ingests_of_the_same_content<S: ContentStore>(store: &S) {
        const THREADS: usize = 8;
        let data = pattern(256 * 1024, 8);
        let digest = Digest::sha256(&data);
        let barrier = Barrier::new(THREADS);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        let mut w = store.writer(Algorithm::Sha256)?;
                        for chunk in data.chunks(10_000) {
                            w.write_all(chunk).map_err(|e| ContentError::Io {
                                path: "<test>".into(),
                                source: e,
                            })?;
                        }
                        // Everyone has written everything; now race the commits.
                        barrier.wait();
                        w.commit(Some(data.len() as u64), Some(&digest))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("ingest thread panicked"))
                .collect()
        });
        let expected = Info {
            digest: digest.clone(),
            size: data.len() as u64,
        };
        for result in results {
            assert_eq!(result.unwrap(), expected);
        }
        assert_eq!(walked(store), vec![expected]);
        assert_eq!(store.read_all(&digest).unwrap(), data);
    }

    pub fn byte_ranges<S: ContentStore>(store: &S) {
        let data: Vec<u8> = (0..100).collect();
        let d = store.ingest_bytes(&data).unwrap().digest;

        assert_eq!(read_range(store, &d, 10..20), &data[10..20]);
        assert_eq!(read_range(store, &d, 0..1), &data[..1]);
        assert_eq!(read_range(store, &d, 90..100), &data[90..]);
        assert_eq!(read_range(store, &d, 0..100), data);
        // An end past the size is clamped, as HTTP ranges are.
        assert_eq!(read_range(store, &d, 90..1000), &data[90..]);
        assert_eq!(read_range(store, &d, 0..u64::MAX), data);
        // Empty ranges are fine, including one that starts exactly at the end.
        assert!(read_range(store, &d, 50..50).is_empty());
        assert!(read_range(store, &d, 100..200).is_empty());

        for (start, end) in [(101, 200), (u64::MAX, u64::MAX), (20, 10)] {
            match store.read(&d, Some(Range { start, end })) {
                Err(ContentError::InvalidRange {
                    digest,
                    start: s,
                    end: e,
                    size,
                }) => {
                    assert_eq!((digest, s, e, size), (d.clone(), start, end, 100));
                }
                Err(other) => panic!("{start}..{end}: expected InvalidRange, got {other:?}"),
                Ok(_) => panic!("{start}..{end}: expected InvalidRange, got a reader"),
            }
        }
    }

    pub fn missing_blobs_are_not_found<S: ContentStore>(store: &S) {
        let missing = Digest::sha256(b"never ingested");
        assert!(!store.exists(&missing).unwrap());
        assert!(matches!(store.info(&missing), Err(ContentError::NotFound(d)) if d == missing));
        assert!(matches!(
            store.read(&missing, None),
            Err(ContentError::NotFound(d)) if d == missing
        ));
        assert!(matches!(
            store.read(&missing, Some(0..1)),
            Err(ContentError::NotFound(_))
        ));
        assert!(matches!(
            store.delete(&missing),
            Err(ContentError::NotFound(d)) if d == missing
        ));
    }

    pub fn delete_then_not_found<S: ContentStore>(store: &S) {
        let kept = store.ingest_bytes(b"kept").unwrap();
        let gone = store.ingest_bytes(b"gone").unwrap();
        store.delete(&gone.digest).unwrap();
        assert!(!store.exists(&gone.digest).unwrap());
        assert!(matches!(
            store.info(&gone.digest),
            Err(ContentError::NotFound(_))
        ));
        assert!(matches!(
            store.read(&gone.digest, None),
            Err(ContentError::NotFound(_))
        ));
        assert!(matches!(
            store.delete(&gone.digest),
            Err(ContentError::NotFound(_))
        ));
        assert_eq!(walked(store), vec![kept.clone()]);
        assert_eq!(store.read_all(&kept.digest).unwrap(), b"kept");
        // The same content can be ingested again after a delete.
        assert_eq!(store.ingest_bytes(b"gone").unwrap(), gone);
        assert_eq!(store.read_all(&gone.digest).unwrap(), b"gone");
    }

    pub fn walk_is_sorted_and_complete<S: ContentStore>(store: &S) {
        let mut expected = Vec::new();
        for i in 0..40u32 {
            let data = pattern(i as usize * 3, u64::from(i));
            let algorithm = if i % 4 == 0 {
                Algorithm::Sha512
            } else {
                Algorithm::Sha256
            };
            let mut w = store.writer(algorithm).unwrap();
            w.write_all(&data).unwrap();
            expected.push(w.commit(Some(data.len() as u64), None).unwrap());
        }
        expected.sort_by(|a, b| a.digest.cmp(&b.digest));
        expected.dedup();
        let infos = walked(store);
        assert_eq!(infos, expected);
        assert!(infos.windows(2).all(|w| w[0].digest < w[1].digest));
        // sha256 digests come before sha512 ones.
        let first_512 = infos
            .iter()
            .position(|i| i.digest.algorithm() == Algorithm::Sha512)
            .unwrap();
        assert!(
            infos[first_512..]
                .iter()
                .all(|i| i.digest.algorithm() == Algorithm::Sha512)
        );
    }

    pub fn walk_stops_on_error<S: ContentStore>(store: &S) {
        for i in 0..5u8 {
            store.ingest_bytes(&[i]).unwrap();
        }
        let stop = Digest::sha256(b"stop");
        let mut seen = 0;
        let result = store.walk(&mut |_| {
            seen += 1;
            if seen == 2 {
                Err(ContentError::NotFound(stop.clone()))
            } else {
                Ok(())
            }
        });
        assert!(matches!(result, Err(ContentError::NotFound(d)) if d == stop));
        assert_eq!(seen, 2);
    }

    pub fn abort_discards<S: ContentStore>(store: &S) {
        let data = b"aborted";
        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(data).unwrap();
        w.abort().unwrap();
        assert!(!store.exists(&Digest::sha256(data)).unwrap());
        assert!(walked(store).is_empty());

        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(data).unwrap();
        drop(w);
        assert!(!store.exists(&Digest::sha256(data)).unwrap());
        assert!(walked(store).is_empty());
    }

    pub fn fsck_healthy_store<S: ContentStore>(store: &S) {
        let (checked, problems) = fsck(store).unwrap();
        assert_eq!(checked, 0);
        assert!(problems.is_empty());

        store.ingest_bytes(b"one").unwrap();
        store.ingest_bytes(&pattern(70_000, 2)).unwrap();
        store
            .ingest(
                &mut &b"three"[..],
                None,
                Some(&Digest::of(Algorithm::Sha512, b"three")),
            )
            .unwrap();
        let (checked, problems) = fsck(store).unwrap();
        assert_eq!(checked, 3);
        assert!(problems.is_empty(), "{problems:?}");
    }
}

macro_rules! content_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            content_suite!(@checks $make;
                round_trip,
                commit_without_expectations_computes_the_digest,
                ingest_helpers,
                empty_blob,
                digest_mismatch_lands_nothing,
                size_mismatch_lands_nothing,
                algorithm_mismatch_lands_nothing,
                sha512_ingest,
                committing_an_existing_blob_is_a_no_op,
                concurrent_ingests_of_the_same_content,
                byte_ranges,
                missing_blobs_are_not_found,
                delete_then_not_found,
                walk_is_sorted_and_complete,
                walk_stops_on_error,
                abort_discards,
                fsck_healthy_store,
                adopt_lands_and_consumes_the_file,
                adopt_of_the_wrong_size_lands_nothing,
                adopt_with_rehash_refuses_the_wrong_digest,
                adopt_refuses_what_is_not_a_regular_file,
                adopting_an_existing_blob_is_a_no_op,
                concurrent_adopts_of_the_same_content,
            );
        }
    };
    (@checks $make:expr; $($check:ident),+ $(,)?) => {
        $(
            #[test]
            fn $check() {
                // The second element keeps whatever backs the store (a temporary directory)
                // alive until the check is done.
                let (store, _backing) = ($make)();
                checks::$check(&store);
            }
        )+
    };
}

content_suite!(memory, || (MemoryStore::new(), ()));
content_suite!(fs, || {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStore::open(dir.path().join("store")).expect("open store");
    (store, dir)
});

/// Checks that reach behind the traits into the filesystem store's files.
mod fs_only {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use filetime::FileTime;
    use tempfile::TempDir;

    use super::*;

    fn store() -> (FsStore, TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path().join("store")).unwrap();
        (store, dir)
    }

    fn ingest_entries(store: &FsStore) -> Vec<std::path::PathBuf> {
        fs::read_dir(store.ingest_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    /// Opens a committed (read-only) blob file for writing, as something outside the store might.
    fn tamper(path: &Path) -> fs::File {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::OpenOptions::new().write(true).open(path).unwrap()
    }

    #[test]
    fn blob_layout_is_algorithm_prefix_hex() {
        let (store, dir) = store();
        let root = dir.path().join("store");

        let info = store.ingest_bytes(b"layout").unwrap();
        let hex = info.digest.hex().to_owned();
        let expected = root.join("blobs").join("sha256").join(&hex[..2]).join(&hex);
        assert_eq!(store.blob_path(&info.digest), expected);
        assert_eq!(fs::read(&expected).unwrap(), b"layout");
        assert!(fs::metadata(&expected).unwrap().permissions().readonly());

        let d512 = Digest::of(Algorithm::Sha512, b"layout");
        store
            .ingest(&mut &b"layout"[..], Some(6), Some(&d512))
            .unwrap();
        let hex = d512.hex();
        let expected = root.join("blobs/sha512").join(&hex[..2]).join(hex);
        assert_eq!(store.blob_path(&d512), expected);
        assert_eq!(fs::read(&expected).unwrap(), b"layout");

        assert_eq!(store.ingest_dir(), root.join("ingest"));
        assert!(ingest_entries(&store).is_empty());
    }

    #[test]
    fn blobs_survive_reopening() {
        let (store, dir) = store();
        let info = store.ingest_bytes(b"durable").unwrap();
        drop(store);
        let reopened = FsStore::open(dir.path().join("store")).unwrap();
        assert_eq!(reopened.info(&info.digest).unwrap(), info);
        assert_eq!(reopened.read_all(&info.digest).unwrap(), b"durable");
    }

    #[test]
    fn writer_keeps_its_data_in_ingest_until_commit() {
        let (store, _dir) = store();
        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(b"in flight").unwrap();
        w.flush().unwrap();
        let entries = ingest_entries(&store);
        assert_eq!(entries.len(), 1);
        let name = entries[0].file_name().unwrap().to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&name).is_ok(), "{name} is not a uuid");
        assert_eq!(fs::read(&entries[0]).unwrap(), b"in flight");
        assert!(walked(&store).is_empty());

        let info = w.commit(None, None).unwrap();
        assert!(ingest_entries(&store).is_empty());
        assert!(store.blob_path(&info.digest).is_file());
    }

    #[test]
    fn dropped_writer_leaves_nothing_in_ingest() {
        let (store, _dir) = store();
        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(&pattern(300_000, 3)).unwrap();
        assert_eq!(ingest_entries(&store).len(), 1);
        drop(w);
        assert!(ingest_entries(&store).is_empty());
        assert!(walked(&store).is_empty());
    }

    #[test]
    fn failed_and_aborted_commits_leave_nothing_in_ingest() {
        let (store, _dir) = store();
        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(b"abc").unwrap();
        assert!(w.commit(Some(4), None).is_err());
        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(b"abc").unwrap();
        assert!(w.commit(None, Some(&Digest::sha256(b"abd"))).is_err());
        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(b"abc").unwrap();
        w.abort().unwrap();
        // A no-op commit of existing content removes its ingest too.
        store.ingest_bytes(b"abc").unwrap();
        store.ingest_bytes(b"abc").unwrap();
        assert!(ingest_entries(&store).is_empty());
        assert_eq!(walked(&store).len(), 1);
    }

    #[test]
    fn concurrent_ingests_leave_nothing_in_ingest() {
        let (store, _dir) = store();
        checks::concurrent_ingests_of_the_same_content(&store);
        assert!(ingest_entries(&store).is_empty());
    }

    #[test]
    fn fsck_detects_corrupted_and_truncated_blobs() {
        let (store, _dir) = store();
        let healthy = store.ingest_bytes(b"healthy blob").unwrap();
        let corrupted = store.ingest_bytes(&pattern(10_000, 11)).unwrap();
        let truncated = store.ingest_bytes(&pattern(10_000, 12)).unwrap();

        // Same size, different bytes.
        let mut f = tamper(&store.blob_path(&corrupted.digest));
        f.write_all(b"bit rot").unwrap();
        drop(f);
        // Cut short.
        tamper(&store.blob_path(&truncated.digest))
            .set_len(4000)
            .unwrap();

        let (checked, problems) = fsck(&store).unwrap();
        assert_eq!(checked, 3);
        let mut bad: Vec<&Digest> = problems.iter().map(|p| &p.digest).collect();
        bad.sort();
        let mut expected = vec![&corrupted.digest, &truncated.digest];
        expected.sort();
        assert_eq!(bad, expected);
        assert!(!bad.contains(&&healthy.digest));
        for problem in &problems {
            match &problem.error {
                ContentError::DigestMismatch { expected, actual } => {
                    assert_eq!(expected, &problem.digest);
                    assert_ne!(actual, &problem.digest);
                }
                other => panic!("expected DigestMismatch, got {other:?}"),
            }
        }
        // `info` reports what is on disk, so the truncation is visible there too.
        assert_eq!(store.info(&truncated.digest).unwrap().size, 4000);
    }

    #[test]
    fn walk_skips_stray_files() {
        let (store, dir) = store();
        let a = store.ingest_bytes(b"a").unwrap();
        let b = store.ingest_bytes(b"b").unwrap();
        let blobs = dir.path().join("store/blobs");
        let prefix_dir = store.blob_path(&a.digest).parent().unwrap().to_owned();

        fs::write(prefix_dir.join("not-a-digest"), b"x").unwrap();
        fs::write(prefix_dir.join(format!("{}.tmp", a.digest.hex())), b"x").unwrap();
        fs::write(blobs.join("sha256/README"), b"x").unwrap();
        fs::create_dir(blobs.join("sha256/zz")).unwrap();
        fs::write(blobs.join("md5"), b"x").unwrap();
        // A valid digest filed under the wrong prefix.
        let misfiled = Digest::sha256(b"misfiled");
        let wrong = if misfiled.hex().starts_with("00") {
            "01"
        } else {
            "00"
        };
        fs::create_dir_all(blobs.join("sha256").join(wrong)).unwrap();
        fs::write(
            blobs.join("sha256").join(wrong).join(misfiled.hex()),
            b"misfiled",
        )
        .unwrap();
        // A directory where a blob should be.
        let dir_blob = Digest::sha256(b"directory");
        fs::create_dir_all(store.blob_path(&dir_blob)).unwrap();

        let mut expected = vec![a, b];
        expected.sort_by(|x, y| x.digest.cmp(&y.digest));
        assert_eq!(walked(&store), expected);
        let (checked, problems) = fsck(&store).unwrap();
        assert_eq!(checked, 2);
        assert!(problems.is_empty());
    }

    #[test]
    fn prune_removes_only_stale_ingests() {
        let (store, _dir) = store();
        let stale = store.ingest_dir().join(uuid::Uuid::new_v4().to_string());
        fs::write(&stale, b"left by a crash").unwrap();
        let two_hours_ago =
            FileTime::from_system_time(SystemTime::now() - Duration::from_secs(2 * 60 * 60));
        filetime::set_file_mtime(&stale, two_hours_ago).unwrap();
        fs::create_dir(store.ingest_dir().join("not-a-file")).unwrap();

        let mut active = store.writer(Algorithm::Sha256).unwrap();
        active.write_all(b"still going").unwrap();
        active.flush().unwrap();

        assert_eq!(
            store.prune_ingests(Duration::from_secs(60 * 60)).unwrap(),
            1
        );
        assert!(!stale.exists());
        assert_eq!(ingest_entries(&store).len(), 2);
        // Nothing else is old enough now.
        assert_eq!(
            store.prune_ingests(Duration::from_secs(60 * 60)).unwrap(),
            0
        );

        let info = active.commit(None, None).unwrap();
        assert_eq!(store.read_all(&info.digest).unwrap(), b"still going");
    }

    #[test]
    fn commit_of_a_pruned_ingest_fails_and_lands_nothing() {
        let (store, _dir) = store();
        let mut idle = store.writer(Algorithm::Sha256).unwrap();
        idle.write_all(b"idle too long").unwrap();
        idle.flush().unwrap();
        let entries = ingest_entries(&store);
        assert_eq!(entries.len(), 1);
        let old = FileTime::from_system_time(SystemTime::now() - Duration::from_secs(600));
        filetime::set_file_mtime(&entries[0], old).unwrap();

        assert_eq!(store.prune_ingests(Duration::from_secs(60)).unwrap(), 1);
        assert!(matches!(
            idle.commit(None, None),
            Err(ContentError::Io { .. })
        ));
        assert!(!store.exists(&Digest::sha256(b"idle too long")).unwrap());
        assert!(walked(&store).is_empty());
        assert!(ingest_entries(&store).is_empty());
    }

    /// The inode of a file, to tell a move from a copy.
    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(path).unwrap().ino()
    }

    #[test]
    fn adopt_moves_the_file_and_seals_it() {
        let (store, dir) = store();
        for (i, verified) in [Verification::CallerHashed, Verification::Rehash]
            .into_iter()
            .enumerate()
        {
            let data = pattern(300_000, 40 + 2 * i as u64);
            let digest = Digest::sha256(&data);
            // Beside the store, as the registry keeps its uploads.
            let path = file_with(dir.path(), "upload", &data);
            let before = inode(&path);
            store
                .adopt(&path, &digest, data.len() as u64, verified)
                .unwrap();
            let blob = store.blob_path(&digest);
            assert_eq!(inode(&blob), before, "{verified:?}: moved, not copied");
            assert!(fs::metadata(&blob).unwrap().permissions().readonly());
            assert_eq!(fs::read(&blob).unwrap(), data);
            assert!(!path.exists());
        }
        assert!(ingest_entries(&store).is_empty());
        let (checked, problems) = fsck(&store).unwrap();
        assert_eq!(checked, 2);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn adopt_takes_the_callers_digest_without_reading() {
        // What `CallerHashed` means: the store does not read the file. A caller that vouches
        // for a digest it did not compute gets what it asked for, which is why only a caller
        // that hashed the bytes itself may pass it.
        let (store, dir) = store();
        let path = file_with(dir.path(), "upload", b"0123456789");
        let vouched = Digest::sha256(b"9876543210");
        store
            .adopt(&path, &vouched, 10, Verification::CallerHashed)
            .unwrap();
        let (_, problems) = fsck(&store).unwrap();
        assert_eq!(problems.len(), 1, "fsck finds the mislabelled blob");
    }

    #[test]
    fn adopt_refuses_symbolic_links() {
        let (store, dir) = store();
        let data = b"behind a link";
        let digest = Digest::sha256(data);
        let target = file_with(dir.path(), "target", data);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for verified in [Verification::CallerHashed, Verification::Rehash] {
            assert!(matches!(
                store.adopt(&link, &digest, data.len() as u64, verified),
                Err(ContentError::Io { .. })
            ));
        }
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(fs::read(&target).unwrap(), data);
        assert!(walked(&store).is_empty());
    }

    #[test]
    fn adopt_copies_a_hard_linked_file() {
        let (store, dir) = store();
        let data = pattern(50_000, 44);
        let digest = Digest::sha256(&data);
        let path = file_with(dir.path(), "upload", &data);
        let other = dir.path().join("other-name");
        fs::hard_link(&path, &other).unwrap();
        store
            .adopt(
                &path,
                &digest,
                data.len() as u64,
                Verification::CallerHashed,
            )
            .unwrap();
        // The blob is a copy: writing through the other name cannot reach it.
        let blob = store.blob_path(&digest);
        assert_ne!(inode(&blob), inode(&other));
        assert!(!path.exists());
        fs::write(&other, b"changed").unwrap();
        assert_eq!(store.read_all(&digest).unwrap(), data);
        assert!(ingest_entries(&store).is_empty());

        // A copy verifies whatever the caller vouches for.
        let path = file_with(dir.path(), "mislabelled", b"content");
        fs::hard_link(&path, dir.path().join("second-name")).unwrap();
        assert!(matches!(
            store.adopt(
                &path,
                &Digest::sha256(b"CONTENT"),
                7,
                Verification::CallerHashed
            ),
            Err(ContentError::DigestMismatch { .. })
        ));
        assert!(path.exists());
        assert_eq!(walked(&store).len(), 1);
    }

    #[test]
    fn adopt_from_another_filesystem_copies() {
        // /dev/shm is a tmpfs on Linux, so never the filesystem of the temporary directory.
        let shm = Path::new("/dev/shm");
        assert!(shm.is_dir(), "this test needs /dev/shm (a tmpfs)");
        let (store, dir) = store();
        let elsewhere = tempfile::tempdir_in(shm).unwrap();
        {
            use std::os::unix::fs::MetadataExt;
            assert_ne!(
                fs::metadata(elsewhere.path()).unwrap().dev(),
                fs::metadata(dir.path()).unwrap().dev(),
                "/dev/shm must be another filesystem than {}",
                dir.path().display()
            );
        }
        let data = pattern(200_000, 45);
        let digest = Digest::sha256(&data);
        let path = file_with(elsewhere.path(), "upload", &data);
        let info = store
            .adopt(
                &path,
                &digest,
                data.len() as u64,
                Verification::CallerHashed,
            )
            .unwrap();
        assert_eq!(info.size, data.len() as u64);
        assert!(!path.exists());
        assert_eq!(store.read_all(&digest).unwrap(), data);
        assert!(
            fs::metadata(store.blob_path(&digest))
                .unwrap()
                .permissions()
                .readonly()
        );
        assert!(ingest_entries(&store).is_empty());

        // The copy hashes, so a wrong digest is caught even when the caller vouches for it.
        let path = file_with(elsewhere.path(), "mislabelled", b"content");
        assert!(matches!(
            store.adopt(
                &path,
                &Digest::sha256(b"CONTENT"),
                7,
                Verification::CallerHashed
            ),
            Err(ContentError::DigestMismatch { .. })
        ));
        assert!(path.exists());
        assert!(ingest_entries(&store).is_empty());
        assert_eq!(walked(&store).len(), 1);
    }

    #[test]
    fn concurrent_adopts_leave_nothing_behind() {
        let (store, _dir) = store();
        checks::concurrent_adopts_of_the_same_content(&store);
        assert!(ingest_entries(&store).is_empty());
        let (checked, problems) = fsck(&store).unwrap();
        assert_eq!(checked, 1);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn large_streamed_ingest() {
        const CHUNK: usize = 1024 * 1024;
        const CHUNKS: usize = 64;
        let (store, _dir) = store();
        let base = pattern(CHUNK, 64);
        let chunk = |i: usize| {
            let mut c = base.clone();
            c[..8].copy_from_slice(&(i as u64).to_le_bytes());
            c
        };

        // Computed independently of berth (Python's hashlib over the same generator), so the
        // store's own hashing is what is under test.
        let expected: Digest =
            "sha256:6b71b78b2b2b42f0be9678e4283bfac3548f14c3657768dde07ae0f4869f9d72"
                .parse()
                .unwrap();

        let mut w = store.writer(Algorithm::Sha256).unwrap();
        for i in 0..CHUNKS {
            w.write_all(&chunk(i)).unwrap();
        }
        let size = (CHUNK * CHUNKS) as u64;
        assert_eq!(w.written(), size);
        let info = w.commit(Some(size), Some(&expected)).unwrap();
        assert_eq!(info.size, size);
        assert_eq!(store.info(&expected).unwrap(), info);
        assert_eq!(
            fs::metadata(store.blob_path(&expected)).unwrap().len(),
            size
        );

        // Stream it back one chunk at a time rather than into one buffer.
        let mut reader = store.read(&expected, None).unwrap();
        let mut buf = vec![0; CHUNK];
        for i in 0..CHUNKS {
            reader.read_exact(&mut buf).unwrap();
            assert!(buf == chunk(i), "chunk {i} differs");
        }
        assert_eq!(reader.read(&mut buf).unwrap(), 0, "data past the end");

        // A range across the boundary of the last two chunks.
        let start = (CHUNK * (CHUNKS - 1) - 4) as u64;
        let got = read_range(&store, &expected, start..start + 16);
        let mut want = chunk(CHUNKS - 2)[CHUNK - 4..].to_vec();
        want.extend_from_slice(&chunk(CHUNKS - 1)[..12]);
        assert_eq!(got, want);
        assert!(ingest_entries(&store).is_empty());
    }
}
