//! The layer pipeline: one pass over a tar stream yields the layer's `diff_id`, its compressed
//! bytes with their `digest` and `size`, and its OCI media type.
//!
//! ```text
//! tar writer / reader ──► diff_id sha256 ──► compressor ──► digest sha256 + count ──► out
//!      (feeding thread, one pass)          (pool: gzip blocks or libzstd workers)
//! ```
//!
//! Each tar byte is read once. One thread (the caller's) feeds the tar stream, hashes it as it
//! is produced, hands it to the compressor, and hashes and writes the compressed bytes as they
//! come back in order. Compression runs on [`LayerOptions::threads`] threads.
//!
//! ## Guarantees
//! - **Determinism:** for the same tar stream, compression and level, the output bytes (and so
//!   `digest`) are the same whatever the thread count; `diff_id` depends only on the tar stream.
//!   [`create_from_dir`] and [`create_from_changes`] write a deterministic tar stream (sorted
//!   entries, mtimes clamped to `SOURCE_DATE_EPOCH` when set; see [`archive::TarOptions`]).
//! - **Bounded memory:** a fixed number of compression blocks (gzip) or jobs (zstd) are in
//!   flight, whatever the layer size: a few tens of MiB at most.
//! - **One pass:** nothing is read twice, and no temporary copy of the tar is made.

use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::archive::{self, ArchiveError, Change};
use crate::compress::{CompressError, Encoder};
use crate::content::{ContentError, Ingester};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::media::Compression;

/// Reads from a tar stream are this large, so the feeding thread makes few calls.
const READ_CHUNK: usize = 1 << 20;
/// Writes of compressed bytes below this size are gathered before reaching the output; larger
/// ones (every gzip block) go straight through.
const OUT_BUFFER: usize = 128 * 1024;

/// How to turn a tar stream into a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerOptions {
    /// gzip (default), zstd or none.
    pub compression: Compression,
    /// Compression level; `None` is the compression's default (gzip 6, zstd 3). Ignored for
    /// [`Compression::None`]. For gzip, the level is zlib-rs's, whose levels follow zlib-ng's
    /// table: faster than `gzip -N` at the same N, for output typically 1-3% larger.
    pub level: Option<i32>,
    /// Compression threads (default: the machine's available parallelism). The output does not
    /// depend on it.
    pub threads: usize,
    /// Options of the tar writer, for [`create_from_dir`] and [`create_from_changes`].
    pub tar: archive::TarOptions,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Compression::Gzip,
            level: None,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            tar: archive::TarOptions::default(),
        }
    }
}

/// What the pipeline computed for a layer, as `berth layer create` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerInfo {
    /// sha256 of the bytes written (the compressed layer): the blob's digest in a manifest.
    pub digest: Digest,
    /// sha256 of the uncompressed tar stream: the layer's entry in the image config's
    /// `rootfs.diff_ids`.
    pub diff_id: Digest,
    /// Number of bytes written.
    pub size: u64,
    /// The OCI layer media type for the compression used.
    pub media_type: String,
}

/// Errors of the layer pipeline, each naming the stage that failed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The options are unusable (a level out of range).
    #[error("invalid layer options: {0}")]
    Options(#[source] CompressError),
    /// Reading the input tar stream failed.
    #[error("reading the tar stream: {0}")]
    ReadTar(#[source] io::Error),
    /// Writing the tar stream of a directory failed while reading the tree.
    #[error("archiving {}: {source}", .dir.display())]
    Archive {
        dir: PathBuf,
        #[source]
        source: ArchiveError,
    },
    /// The compressor failed (a worker error).
    #[error("{compression} compression failed: {source}")]
    Compress {
        compression: Compression,
        #[source]
        source: io::Error,
    },
    /// Writing the compressed layer to its destination failed.
    #[error("writing the layer: {0}")]
    Write(#[source] io::Error),
    /// The content store refused the layer (opening the ingest or committing it).
    #[error("storing the layer: {0}")]
    Store(#[from] ContentError),
}

/// Compresses the tar stream `tar` into `out` in one pass; returns the layer's info and `out`.
///
/// `out` receives exactly the compressed bytes (`info.size` of them, hashing to
/// `info.digest`); it is flushed but not synced.
pub fn compress_tar<R: Read, W: Write>(
    mut tar: R,
    out: W,
    opts: &LayerOptions,
) -> Result<(LayerInfo, W), LayerError> {
    let mut pipe = Pipeline::new(out, opts)?;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match tar.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LayerError::ReadTar(e)),
        };
        if let Err(e) = pipe.write_all(&buf[..n]) {
            return Err(pipe.classify(e));
        }
    }
    pipe.finish()
}

/// Archives the tree under `dir` (see [`archive::write_dir`]) and compresses it into `out` in
/// one pass; returns the layer's info and `out`.
pub fn create_from_dir<W: Write>(
    dir: &Path,
    out: W,
    opts: &LayerOptions,
) -> Result<(LayerInfo, W), LayerError> {
    let pipe = Pipeline::new(out, opts)?;
    match archive::write_dir(dir, pipe, &opts.tar) {
        Ok(pipe) => pipe.finish(),
        Err(e) => Err(archive_error(dir, e)),
    }
}

/// Archives `changes` relative to `root` (see [`archive::write_changes`]: whiteouts for
/// deletions, opaque markers) and compresses them into `out` in one pass.
pub fn create_from_changes<W: Write>(
    root: &Path,
    changes: &[Change],
    out: W,
    opts: &LayerOptions,
) -> Result<(LayerInfo, W), LayerError> {
    let pipe = Pipeline::new(out, opts)?;
    match archive::write_changes(root, changes, pipe, &opts.tar) {
        Ok(pipe) => pipe.finish(),
        Err(e) => Err(archive_error(root, e)),
    }
}

/// Archives and compresses `dir` straight into a content store ingest, and commits it against
/// the digest and size computed on the way. Nothing is visible in the store unless the whole
/// layer was written and verified; on error the ingest is discarded.
pub fn create_in_store(
    dir: &Path,
    store: &dyn Ingester,
    opts: &LayerOptions,
) -> Result<LayerInfo, LayerError> {
    let writer = store.writer_caller_hashed(Algorithm::Sha256)?;
    // On error the writer is dropped inside `create_from_dir`, which aborts the ingest.
    let (info, writer) = create_from_dir(dir, writer, opts)?;
    writer.commit(Some(info.size), Some(&info.digest))?;
    Ok(info)
}

/// Maps an error of the tar writer to the stage that caused it: the tar writer wraps errors
/// of its output (the pipeline) as I/O errors, which are recognized by their origin.
fn archive_error(dir: &Path, e: ArchiveError) -> LayerError {
    match e {
        ArchiveError::Io { source, .. } if PipelineError::is(&source) => {
            PipelineError::unwrap(source)
        }
        other => LayerError::Archive {
            dir: dir.to_owned(),
            source: other,
        },
    }
}

/// The feeding end of the pipeline: hashes the tar stream (diff_id) and hands it to the
/// compressor, whose output is hashed (digest), counted and written by [`Output`].
///
/// Its `Write` errors carry a [`PipelineError`] that says which stage failed, so that a caller
/// that only sees `io::Error`s (the tar writer) can still be told apart from its own errors.
struct Pipeline<W: Write> {
    diff_id: Hasher,
    encoder: Encoder<BufWriter<Output<W>>>,
    /// Shared with [`Output::failed`], readable even after the encoder is consumed.
    output_failed: Arc<AtomicBool>,
}

impl<W: Write> Pipeline<W> {
    fn new(out: W, opts: &LayerOptions) -> Result<Pipeline<W>, LayerError> {
        let output_failed = Arc::new(AtomicBool::new(false));
        let output = BufWriter::with_capacity(
            OUT_BUFFER,
            Output {
                inner: out,
                digest: Algorithm::Sha256.hasher(),
                size: 0,
                failed: Arc::clone(&output_failed),
            },
        );
        let encoder = Encoder::new(output, opts.compression, opts.level, opts.threads)
            .map_err(LayerError::Options)?;
        Ok(Pipeline {
            diff_id: Algorithm::Sha256.hasher(),
            encoder,
            output_failed,
        })
    }

    /// Turns an error of the encoder into the stage that failed: the output if it reported a
    /// failure, the compressor otherwise.
    fn stage_error(&self, e: io::Error) -> LayerError {
        if self.output_failed.load(Ordering::Relaxed) {
            LayerError::Write(e)
        } else {
            LayerError::Compress {
                compression: self.encoder.compression(),
                source: e,
            }
        }
    }

    /// Classifies an error returned by this pipeline's own `Write` methods.
    fn classify(&self, e: io::Error) -> LayerError {
        if PipelineError::is(&e) {
            PipelineError::unwrap(e)
        } else {
            self.stage_error(e)
        }
    }

    fn finish(self) -> Result<(LayerInfo, W), LayerError> {
        let compression = self.encoder.compression();
        let diff_id = self.diff_id.finish();
        let buffered = match self.encoder.finish() {
            Ok(buffered) => buffered,
            Err(e) if self.output_failed.load(Ordering::Relaxed) => {
                return Err(LayerError::Write(e));
            }
            Err(e) => {
                return Err(LayerError::Compress {
                    compression,
                    source: e,
                });
            }
        };
        let mut output = buffered
            .into_inner()
            .map_err(|e| LayerError::Write(e.into_error()))?;
        output.inner.flush().map_err(LayerError::Write)?;
        let Output {
            inner,
            digest,
            size,
            ..
        } = output;
        Ok((
            LayerInfo {
                digest: digest.finish(),
                diff_id,
                size,
                media_type: compression.oci_layer_media_type().to_owned(),
            },
            inner,
        ))
    }
}

impl<W: Write> Write for Pipeline<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.diff_id.update(buf);
        self.encoder
            .write_all(buf)
            .map_err(|e| PipelineError::wrap(self.stage_error(e)))
    }

    /// Does nothing: the whole stream reaches the output when the pipeline finishes, and
    /// flushing the compressor part-way would change its output.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A [`LayerError`] carried through an `io::Error`, so that it survives the tar writer.
#[derive(Debug)]
struct PipelineError(LayerError);

impl std::fmt::Display for PipelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for PipelineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

impl PipelineError {
    fn wrap(e: LayerError) -> io::Error {
        io::Error::other(PipelineError(e))
    }

    fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<PipelineError>())
    }

    fn unwrap(e: io::Error) -> LayerError {
        let kind = e.kind();
        match e
            .into_inner()
            .map(|inner| inner.downcast::<PipelineError>())
        {
            Some(Ok(p)) => p.0,
            Some(Err(other)) => LayerError::Write(io::Error::new(kind, other)),
            None => LayerError::Write(io::Error::from(kind)),
        }
    }
}

/// The far end of the pipeline: hashes and counts the compressed bytes as they are written to
/// the destination, and remembers whether the destination failed.
struct Output<W: Write> {
    inner: W,
    digest: Hasher,
    size: u64,
    failed: Arc<AtomicBool>,
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.inner.write(buf) {
            Ok(n) => {
                self.digest.update(&buf[..n]);
                self.size += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed.store(true, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner
            .flush()
            .inspect_err(|_| self.failed.store(true, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(compression: Compression, threads: usize) -> LayerOptions {
        LayerOptions {
            compression,
            threads,
            ..LayerOptions::default()
        }
    }

    /// A small tar stream built with the `tar` crate.
    fn tar_bytes() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, len) in [("a.txt", 10usize), ("dir/b.bin", 300_000), ("dir/c", 0)] {
            let data: Vec<u8> = (0..len).map(|i| (i % 97) as u8).collect();
            let mut h = tar::Header::new_ustar();
            h.set_size(len as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn uncompressed_digest_is_diff_id() {
        let tar = tar_bytes();
        let (info, out) = compress_tar(&tar[..], Vec::new(), &opts(Compression::None, 2)).unwrap();
        assert_eq!(out, tar);
        assert_eq!(info.digest, info.diff_id);
        assert_eq!(info.diff_id, Digest::sha256(&tar));
        assert_eq!(info.size, tar.len() as u64);
        assert_eq!(info.media_type, crate::media::OCI_LAYER_TAR);
    }

    #[test]
    fn digest_and_size_describe_the_bytes_written() {
        let tar = tar_bytes();
        for c in [Compression::Gzip, Compression::Zstd] {
            let (info, out) = compress_tar(&tar[..], Vec::new(), &opts(c, 2)).unwrap();
            assert_eq!(info.digest, Digest::sha256(&out), "{c}");
            assert_eq!(info.size, out.len() as u64, "{c}");
            assert_eq!(info.diff_id, Digest::sha256(&tar), "{c}");
            assert_eq!(info.media_type, c.oci_layer_media_type(), "{c}");
        }
    }

    #[test]
    fn an_invalid_level_is_an_options_error() {
        let o = LayerOptions {
            level: Some(42),
            ..opts(Compression::Gzip, 1)
        };
        assert!(matches!(
            compress_tar(&b""[..], Vec::new(), &o),
            Err(LayerError::Options(_))
        ));
    }

    #[test]
    fn a_failing_reader_is_a_read_error() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let e = compress_tar(Broken, Vec::new(), &opts(Compression::Gzip, 2)).unwrap_err();
        assert!(matches!(e, LayerError::ReadTar(_)), "{e}");
    }
}
