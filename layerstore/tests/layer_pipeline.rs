//! The layer pipeline and its encoders, checked against the reference tools: `gzip`, `pigz`,
//! `zstd` and `sha256sum` must be installed (`scripts/setup.sh` installs them); a missing tool
//! fails the test rather than skipping it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use berth_layerstore::archive::{self, TarOptions};
use berth_layerstore::compress::gzip::{self, DEFAULT_BLOCK_SIZE, GzipBuilder};
use berth_layerstore::compress::{Encoder, ZstdBuilder};
use berth_layerstore::content::Provider;
use berth_layerstore::content::fs::FsStore;
use berth_layerstore::content::memory::MemoryStore;
use berth_layerstore::digest::{Digest, sha_ni_available};
use berth_layerstore::layer::{self, LayerError, LayerOptions};
use berth_layerstore::media::{self, Compression};
use rand::{RngCore, SeedableRng};

/// Runs `cmd args` with `input` on stdin; returns stdout, failing the test on a non-zero exit.
fn run(cmd: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd} is required by this test (scripts/setup.sh): {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let output = std::thread::scope(|s| {
        s.spawn(move || {
            // The tool may stop reading early on bad input; its exit status reports that.
            let _ = stdin.write_all(input);
        });
        child.wait_with_output().expect("waiting for the tool")
    });
    assert!(
        output.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `sha256sum FILE` as a digest.
fn sha256sum(path: &Path) -> Digest {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum is required by this test (scripts/setup.sh)");
    assert!(out.status.success(), "sha256sum {}", path.display());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let hex = text.split_whitespace().next().expect("a digest");
    format!("sha256:{hex}").parse().expect("a sha256 digest")
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

fn compressible(len: usize) -> Vec<u8> {
    let words = [
        "layer ", "digest ", "sha256 ", "tar\n", "berth ", "blob ", "zstd ",
    ];
    let mut out = Vec::with_capacity(len + 8);
    let mut i = 0usize;
    while out.len() < len {
        out.extend_from_slice(words[(i * 7 + i / 13) % words.len()].as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// Words picked at random: text that compresses about as well as real text does.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "the ",
        "layer ",
        "of ",
        "a ",
        "digest ",
        "sha256 ",
        "tar\n",
        "berth ",
        "blob ",
        "zstd ",
        "gzip ",
        "and ",
        "to ",
        "image ",
        "manifest ",
        "config ",
        "registry ",
        "push\n",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(words[(rng.next_u32() % words.len() as u32) as usize].as_bytes());
    }
    out.truncate(len);
    out
}

fn gzip_with(data: &[u8], threads: usize) -> Vec<u8> {
    let mut enc = GzipBuilder::new()
        .threads(threads)
        .build(Vec::new())
        .expect("gzip encoder");
    // Writes of varying sizes, crossing block boundaries anywhere.
    let mut rest = data;
    let mut step = 1usize;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        enc.write_all(&rest[..n]).expect("compressing");
        rest = &rest[n..];
        step = step * 3 + 1;
        if step > 3 * DEFAULT_BLOCK_SIZE {
            step = 1;
        }
    }
    enc.finish().expect("finishing")
}

fn flate2_gunzip(gz: &[u8]) -> Vec<u8> {
    let mut d = flate2::read::GzDecoder::new(gz);
    let mut out = Vec::new();
    d.read_to_end(&mut out).expect("flate2 reads the member");
    assert!(
        d.into_inner().is_empty(),
        "one gzip member, nothing after it"
    );
    out
}

const B: usize = DEFAULT_BLOCK_SIZE;

#[test]
fn gzip_output_is_valid_for_every_size_and_kind() {
    let sizes = [0, 1, B - 1, B, B + 1, 2 * B, 7 * B + 4321];
    for &len in &sizes {
        for (kind, data) in [
            ("random", random(len, len as u64)),
            ("compressible", compressible(len)),
        ] {
            let gz = gzip_with(&data, 2);
            run("gzip", &["-t"], &gz);
            run("pigz", &["-t"], &gz);
            assert_eq!(flate2_gunzip(&gz), data, "flate2, {kind} {len}");
            assert!(run("gzip", &["-dc"], &gz) == data, "gzip -dc, {kind} {len}");
            assert!(run("pigz", &["-dc"], &gz) == data, "pigz -dc, {kind} {len}");
        }
    }
}

#[test]
fn gzip_output_does_not_depend_on_thread_count() {
    let mut data = compressible(5 * B + 99);
    data.extend_from_slice(&random(3 * B + 7, 3));
    data.extend_from_slice(&compressible(2 * B));
    let one = gzip_with(&data, 1);
    for threads in [2, 3, 8] {
        assert!(gzip_with(&data, threads) == one, "threads {threads}");
    }
    assert_eq!(flate2_gunzip(&one), data);
}

#[test]
fn gzip_blocks_do_not_depend_on_what_a_worker_compressed_before() {
    // Each worker compresses a different sequence of blocks depending on scheduling. A deflate
    // state reused across blocks keeps stale window bytes past the end of the input, which can
    // steer match selection at a block's end; the output must not depend on that.
    let data = text(96 * gzip::MIN_BLOCK_SIZE, 8);
    let encode = |threads, data: &[u8]| {
        let mut enc = GzipBuilder::new()
            .threads(threads)
            .block_size(gzip::MIN_BLOCK_SIZE)
            .build(Vec::new())
            .unwrap();
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    };
    let one = encode(1, &data);
    for threads in [2, 3, 5] {
        assert!(encode(threads, &data) == one, "threads {threads}");
    }
    // And the same stream after the encoder saw other data first is impossible to tell apart:
    // compress a shifted copy, whose blocks end elsewhere, with the same thread counts.
    let shifted = encode(1, &data[1000..]);
    for threads in [2, 3] {
        assert!(
            encode(threads, &data[1000..]) == shifted,
            "threads {threads}"
        );
    }
}

#[test]
fn gzip_compresses_like_gzip() {
    // Not a benchmark: only that the framing costs no more than a fraction of a percent against
    // one deflate stream of the same level.
    let data = text(6 * B, 4);
    let ours = gzip_with(&data, 2);
    let whole = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(&data).unwrap();
        e.finish().unwrap()
    };
    assert!(
        ours.len() as f64 <= whole.len() as f64 * 1.01 + 64.0,
        "{} vs {}",
        ours.len(),
        whole.len()
    );
}

#[test]
fn zstd_output_is_valid_and_the_same_for_any_thread_count() {
    let mut data = compressible(3 << 20);
    data.extend_from_slice(&random(1 << 20, 9));
    let encode = |threads| {
        let mut e = ZstdBuilder::new()
            .threads(threads)
            .build(Vec::new())
            .expect("zstd encoder");
        for chunk in data.chunks(100_000) {
            e.write_all(chunk).unwrap();
        }
        e.finish().unwrap()
    };
    let one = encode(1);
    run("zstd", &["-t"], &one);
    assert!(run("zstd", &["-dc"], &one) == data);
    for threads in [2, 3, 8] {
        assert!(encode(threads) == one, "threads {threads}");
    }
}

/// A small tar stream made with the `tar` crate: a directory, a text file, a large random file.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, data).expect("tar entry");
    };
    add("etc/motd", &compressible(10_000));
    add("usr/lib/blob.bin", &random(3 * B + 5, 11));
    add("usr/share/doc.txt", &compressible(2 * B + 3));
    b.into_inner().expect("tar stream")
}

#[test]
fn written_file_hashes_to_digest_and_its_content_to_diff_id() {
    let tar = sample_tar();
    let dir = tempfile::tempdir().unwrap();
    for (compression, ext, decompress) in [
        (Compression::Gzip, "gz", "gzip"),
        (Compression::Zstd, "zst", "zstd"),
    ] {
        let path = dir.path().join(format!("layer.tar.{ext}"));
        let opts = LayerOptions {
            compression,
            threads: 2,
            ..LayerOptions::default()
        };
        let (info, file) =
            layer::compress_tar(&tar[..], File::create(&path).unwrap(), &opts).unwrap();
        drop(file);
        assert_eq!(sha256sum(&path), info.digest, "{compression}");
        assert_eq!(fs::metadata(&path).unwrap().len(), info.size);
        assert_eq!(info.media_type, compression.oci_layer_media_type());

        let status = Command::new(decompress)
            .args(["-d", "-k", "-q"])
            .arg(&path)
            .status()
            .expect("decompressor");
        assert!(status.success());
        let plain = dir.path().join("layer.tar");
        assert_eq!(sha256sum(&plain), info.diff_id, "{compression}");
        assert_eq!(info.diff_id, Digest::sha256(&tar));
        fs::remove_file(&plain).unwrap();
    }
}

#[test]
fn uncompressed_layer_has_digest_equal_to_diff_id() {
    let tar = sample_tar();
    let opts = LayerOptions {
        compression: Compression::None,
        ..LayerOptions::default()
    };
    let (info, out) = layer::compress_tar(&tar[..], Vec::new(), &opts).unwrap();
    assert_eq!(out, tar);
    assert_eq!(info.digest, info.diff_id);
    assert_eq!(info.media_type, media::OCI_LAYER_TAR);
}

#[test]
fn digest_does_not_depend_on_thread_count() {
    let tar = sample_tar();
    for compression in [Compression::Gzip, Compression::Zstd] {
        let info = |threads| {
            let opts = LayerOptions {
                compression,
                threads,
                ..LayerOptions::default()
            };
            layer::compress_tar(&tar[..], io::sink(), &opts).unwrap().0
        };
        let one = info(1);
        for threads in [2, 3, 8] {
            assert_eq!(info(threads), one, "{compression}, threads {threads}");
        }
    }
}

/// A destination that accepts `budget` bytes and then fails.
#[derive(Debug)]
struct FailingWriter {
    budget: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_destination_error_propagates() {
    let tar = sample_tar();
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        for budget in [0, 100, 300_000] {
            for threads in [1, 2] {
                let opts = LayerOptions {
                    compression,
                    threads,
                    ..LayerOptions::default()
                };
                let e = layer::compress_tar(&tar[..], FailingWriter { budget }, &opts)
                    .expect_err("the destination fails");
                match &e {
                    LayerError::Write(io) => assert_eq!(io.kind(), io::ErrorKind::StorageFull),
                    other => panic!("{compression}/{budget}/{threads}: {other}"),
                }
            }
        }
    }
}

#[test]
fn gzip_encoder_reports_the_inner_error_and_stays_failed() {
    let data = random(20 * gzip::MIN_BLOCK_SIZE, 5);
    let mut enc = GzipBuilder::new()
        .threads(3)
        .block_size(gzip::MIN_BLOCK_SIZE)
        .build(FailingWriter { budget: 10 })
        .unwrap();
    let first = enc.write_all(&data).expect_err("the inner writer fails");
    assert_eq!(first.kind(), io::ErrorKind::StorageFull);
    let again = enc.write_all(b"more").expect_err("still failed");
    assert_eq!(again.kind(), io::ErrorKind::StorageFull);
    assert!(enc.finish().is_err());
}

#[test]
fn create_from_dir_matches_the_tar_writer() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("usr/bin/tool"), random(B + 17, 1)).unwrap();
    fs::write(root.join("README"), compressible(5000)).unwrap();
    let tar_opts = TarOptions {
        source_date_epoch: Some(1_600_000_000),
        ..TarOptions::default()
    };
    let tar = archive::write_dir(&root, Vec::new(), &tar_opts).unwrap();
    let opts = LayerOptions {
        compression: Compression::Gzip,
        threads: 2,
        tar: tar_opts,
        ..LayerOptions::default()
    };
    let (info, gz) = layer::create_from_dir(&root, Vec::new(), &opts).unwrap();
    assert_eq!(info.diff_id, Digest::sha256(&tar));
    assert_eq!(info.digest, Digest::sha256(&gz));
    assert!(flate2_gunzip(&gz) == tar);
    // Through a tar stream or from the directory, the same layer.
    let (same, _) = layer::compress_tar(&tar[..], io::sink(), &opts).unwrap();
    assert_eq!(same, info);
}

#[test]
fn create_from_dir_reports_a_destination_error_as_such() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("big"), random(3 * B, 2)).unwrap();
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let opts = LayerOptions {
            compression,
            threads: 2,
            ..LayerOptions::default()
        };
        let e = layer::create_from_dir(dir.path(), FailingWriter { budget: 1000 }, &opts)
            .expect_err("the destination fails");
        match &e {
            LayerError::Write(io) => assert_eq!(io.kind(), io::ErrorKind::StorageFull),
            other => panic!("{compression}: {other}"),
        }
    }
}

#[test]
fn create_from_changes_writes_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("etc")).unwrap();
    fs::write(dir.path().join("etc/new.conf"), b"x = 1\n").unwrap();
    let changes = [
        archive::Change::add("etc"),
        archive::Change::add("etc/new.conf"),
        archive::Change::delete("etc/old.conf"),
    ];
    let opts = LayerOptions {
        compression: Compression::Gzip,
        threads: 2,
        ..LayerOptions::default()
    };
    let (info, gz) = layer::create_from_changes(dir.path(), &changes, Vec::new(), &opts).unwrap();
    assert_eq!(info.digest, Digest::sha256(&gz));
    let tar = flate2_gunzip(&gz);
    assert_eq!(info.diff_id, Digest::sha256(&tar));
    let mut names = Vec::new();
    for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
        names.push(entry.unwrap().path().unwrap().display().to_string());
    }
    assert_eq!(names, ["etc/", "etc/.wh.old.conf", "etc/new.conf"]);
}

#[test]
fn create_in_store_commits_the_verified_blob() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("file"), compressible(300_000)).unwrap();
    let store = MemoryStore::new();
    let opts = LayerOptions {
        compression: Compression::Zstd,
        threads: 2,
        ..LayerOptions::default()
    };
    let info = layer::create_in_store(dir.path(), &store, &opts).unwrap();
    let stored = store.info(&info.digest).unwrap();
    assert_eq!(stored.size, info.size);
    let blob = store.read_all(&info.digest).unwrap();
    let tar = zstd::decode_all(&blob[..]).unwrap();
    assert_eq!(Digest::sha256(&tar), info.diff_id);
}

#[test]
fn create_in_fs_store_lands_a_blob_that_sha256sum_agrees_with() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("data"), text(2 * B + 1, 6)).unwrap();
    let store = FsStore::open(dir.path().join("store")).unwrap();
    let info = layer::create_in_store(&tree, &store, &LayerOptions::default()).unwrap();
    let blob = store.blob_path(&info.digest);
    assert_eq!(sha256sum(&blob), info.digest);
    assert_eq!(fs::metadata(&blob).unwrap().len(), info.size);
    run("gzip", &["-t"], &fs::read(&blob).unwrap());
}

#[test]
fn create_from_dir_names_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let e = layer::create_from_dir(&missing, Vec::new(), &LayerOptions::default()).unwrap_err();
    assert!(matches!(e, LayerError::Archive { .. }), "{e}");
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn encoder_enum_round_trips_each_compression() {
    let data = compressible(3 * B);
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let mut e = Encoder::new(Vec::new(), compression, None, 2).unwrap();
        e.write_all(&data).unwrap();
        let out = e.finish().unwrap();
        let back = match compression {
            Compression::None => out,
            Compression::Gzip => flate2_gunzip(&out),
            Compression::Zstd => zstd::decode_all(&out[..]).unwrap(),
        };
        assert!(back == data, "{compression}");
    }
}

#[test]
fn sha_ni_detection_matches_the_cpu() {
    // `sha_ni_available` must agree with what the kernel reports, so that the bench's claim
    // about which sha256 path ran is grounded.
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo");
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .expect("a flags line");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let expected = has("sha_ni") && has("sse2") && has("ssse3") && has("sse4_1");
    assert_eq!(sha_ni_available(), expected);
}
