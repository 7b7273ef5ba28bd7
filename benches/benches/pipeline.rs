//! Criterion benches of the layer pipeline's parts, on an in-memory tar of a generated tree:
//! gzip at 1 and 2 threads, zstd at 2 threads, sha256, and the whole pipeline.
//!
//! `BERTH_BENCH_SIZE` (default `32M`) sets the size of the generated tree.
//!
//! The sha256 bench also shows that the `sha2` crate runs its SHA-NI code on this CPU. `sha2`
//! 0.10 (`src/sha256/x86.rs`) declares `cpufeatures::new!(shani_cpuid, "sha", "sse2", "ssse3",
//! "sse4.1")` and its `compress` calls the `#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]`
//! `digest_blocks` when `shani_cpuid::get()` is true (a cached CPUID check), and the portable
//! `soft::compress` otherwise. The portable code hashes at about 0.3-0.5 GB/s; the SHA-NI code
//! at 1.5-2 GB/s, so a throughput above 1 GB/s can only come from the SHA-NI path.

use std::hint::black_box;
use std::io::{self, Write};

use berth_layerstore::archive::{self, TarOptions};
use berth_layerstore::compress::{GzipBuilder, ZstdBuilder};
use berth_layerstore::digest::{Algorithm, sha_ni_available};
use berth_layerstore::layer::{self, LayerOptions};
use berth_layerstore::media::Compression;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Chunks the tar writer hands to the pipeline.
const CHUNK: usize = 1 << 20;

fn tar_of_generated_tree() -> Vec<u8> {
    let size = std::env::var("BERTH_BENCH_SIZE")
        .ok()
        .and_then(|s| berth_benches::parse_size(&s))
        .unwrap_or(32 << 20);
    let dir = tempfile::tempdir().expect("temporary directory");
    berth_benches::generate(dir.path(), size, 1).expect("generating the tree");
    archive::write_dir(dir.path(), Vec::new(), &TarOptions::default()).expect("archiving the tree")
}

/// A writer that discards its input, so that only compression is measured.
struct Discard;

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(black_box(buf).len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn benches(c: &mut Criterion) {
    let tar = tar_of_generated_tree();
    eprintln!(
        "tar stream: {} bytes; sha_ni_available() = {}",
        tar.len(),
        sha_ni_available()
    );

    let mut g = c.benchmark_group("compress");
    g.throughput(Throughput::Bytes(tar.len() as u64));
    g.sample_size(10);
    for threads in [1, 2] {
        g.bench_with_input(BenchmarkId::new("gzip-6", threads), &tar, |b, tar| {
            b.iter(|| {
                let mut enc = GzipBuilder::new()
                    .level(6)
                    .threads(threads)
                    .build(Discard)
                    .expect("gzip encoder");
                for chunk in tar.chunks(CHUNK) {
                    enc.write_all(chunk).expect("compressing");
                }
                enc.finish().expect("finishing")
            })
        });
    }
    g.bench_with_input(BenchmarkId::new("zstd-3", 2), &tar, |b, tar| {
        b.iter(|| {
            let mut enc = ZstdBuilder::new()
                .level(3)
                .threads(2)
                .build(Discard)
                .expect("zstd encoder");
            for chunk in tar.chunks(CHUNK) {
                enc.write_all(chunk).expect("compressing");
            }
            enc.finish().expect("finishing")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(tar.len() as u64));
    g.bench_function(
        if sha_ni_available() {
            "sha-ni"
        } else {
            "portable"
        },
        |b| {
            b.iter(|| {
                let mut h = Algorithm::Sha256.hasher();
                for chunk in tar.chunks(CHUNK) {
                    h.update(chunk);
                }
                h.finish()
            })
        },
    );
    g.finish();

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(tar.len() as u64));
    g.sample_size(10);
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let opts = LayerOptions {
            compression,
            threads: 2,
            ..LayerOptions::default()
        };
        g.bench_with_input(
            BenchmarkId::new(compression.to_string(), 2),
            &tar,
            |b, tar| b.iter(|| layer::compress_tar(&tar[..], Discard, &opts).expect("pipeline")),
        );
    }
    g.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
