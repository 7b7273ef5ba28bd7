//! The content store: immutable blobs addressed by their [`Digest`].
//!
//! Modelled on containerd's content store, as small role traits:
//! - [`Provider`] reads: [`Provider::info`] and [`Provider::read`] (with an optional byte range);
//! - [`Ingester`] writes: [`Ingester::writer`] opens a [`ContentWriter`] that hashes what it is
//!   given and lands it only on [`ContentWriter::commit`];
//! - [`Manager`] administers: [`Manager::delete`] and [`Manager::walk`].
//!
//! [`ContentStore`] is all three. [`fsck`] re-verifies every blob of any store.
//!
//! A fourth role, [`Adopter`], lands a file that was written outside the store (an upload the
//! registry received, say) as a blob; see [`Adopter::adopt`] for what it checks and what it
//! takes on trust.
//!
//! ## Lifecycle of a write
//! 1. `writer(algorithm)` opens an ingest. Nothing is visible to readers yet.
//! 2. `write` streams bytes in; the writer hashes them as they arrive.
//! 3. `commit(expected_size, expected_digest)` checks the size and digest that were actually
//!    written against the expectations. On a mismatch it returns
//!    [`ContentError::SizeMismatch`] or [`ContentError::DigestMismatch`] and nothing lands. On a
//!    match the blob becomes visible atomically; if the blob already exists the commit is a
//!    no-op that still succeeds. Concurrent ingests of the same content are safe: each has its
//!    own temporary data, and the first commit wins.
//! 4. `abort` (or dropping the writer) discards the ingest.

use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::Path;

use crate::digest::{Algorithm, Digest, Hasher};

pub mod fs;
pub mod memory;

/// What a store knows about a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub digest: Digest,
    pub size: u64,
}

/// Errors of the content store. Every variant names the blob or path it is about.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("blob {0} not found")]
    NotFound(Digest),
    #[error("content has digest {actual}, expected {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content of {digest} is {actual} bytes, expected {expected}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("range {start}..{end} is not satisfiable for blob {digest} of {size} bytes")]
    InvalidRange {
        digest: Digest,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("content writer for {algorithm} cannot commit against a {expected} digest")]
    AlgorithmMismatch {
        algorithm: Algorithm,
        expected: Digest,
    },
    #[error("content store I/O error at {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ContentError {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: io::Error) -> ContentError {
        ContentError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = ContentError> = std::result::Result<T, E>;

/// Reads committed blobs.
pub trait Provider: Send + Sync {
    /// Size and digest of a committed blob, or [`ContentError::NotFound`].
    fn info(&self, digest: &Digest) -> Result<Info>;

    /// A reader over the blob, or over `range` of it (`start..end`, end exclusive). A range
    /// that starts past the end or ends before it starts is [`ContentError::InvalidRange`]; an
    /// `end` past the size is clamped to the size, as HTTP ranges are.
    fn read(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<Box<dyn Read + Send>>;

    /// Whether the blob is committed.
    fn exists(&self, digest: &Digest) -> Result<bool> {
        match self.info(digest) {
            Ok(_) => Ok(true),
            Err(ContentError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The whole blob in memory; meant for manifests and configs, not layers.
    fn read_all(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read(digest, None)?
            .read_to_end(&mut buf)
            .map_err(|e| ContentError::io(digest.to_string(), e))?;
        Ok(buf)
    }
}

/// An ingest in progress. See the module docs for its lifecycle.
pub trait ContentWriter: Write + Send {
    /// Bytes written so far.
    fn written(&self) -> u64;

    /// Verifies and lands the content. `expected_size` and `expected` are checked when given;
    /// the digest is always computed from the bytes written, never taken on trust.
    fn commit(
        self: Box<Self>,
        expected_size: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<Info>;

    /// Discards the ingest.
    fn abort(self: Box<Self>) -> Result<()>;
}

/// Opens ingests.
pub trait Ingester: Send + Sync {
    /// A new writer that hashes with `algorithm`.
    fn writer(&self, algorithm: Algorithm) -> Result<Box<dyn ContentWriter>>;

    /// A new writer for content that the caller hashes itself, over every byte it writes, and
    /// commits with that digest (which is then required): the store may skip hashing the same
    /// bytes a second time and take the caller's digest, as [`Verification::CallerHashed`]
    /// does for adopted files. The layer pipeline, which hashes the compressed stream it
    /// writes, uses it. By default, an ordinary hashing writer.
    fn writer_caller_hashed(&self, algorithm: Algorithm) -> Result<Box<dyn ContentWriter>> {
        self.writer(algorithm)
    }

    /// Streams `reader` in and commits it against the expectations; see [`ContentWriter::commit`].
    fn ingest(
        &self,
        reader: &mut dyn Read,
        expected_size: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<Info> {
        let algorithm = expected.map_or(Algorithm::Sha256, Digest::algorithm);
        let mut w = self.writer(algorithm)?;
        if let Err(e) = io::copy(reader, &mut w) {
            let _ = w.abort();
            return Err(ContentError::io("<ingest>", e));
        }
        w.commit(expected_size, expected)
    }

    /// Ingests an in-memory blob (a manifest or config) and returns its info.
    fn ingest_bytes(&self, data: &[u8]) -> Result<Info> {
        self.ingest(&mut &data[..], Some(data.len() as u64), None)
    }
}

/// How far [`Adopter::adopt`] may trust its caller about the content of the file it lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The caller computed the expected digest from the file's bytes itself (a running hash
    /// over every byte as it wrote them, or a read of the file), has closed every handle it
    /// wrote through, and nothing else writes to the file. The store then checks the size
    /// against the file's metadata and reads none of the file: the digest was already computed
    /// from the bytes themselves, by the caller.
    CallerHashed,
    /// Nothing is known about the content: the store hashes the file before landing it. That
    /// costs one sequential read; a store that can move the file still writes nothing.
    Rehash,
}

/// Lands files written outside the store as blobs.
pub trait Adopter: Ingester {
    /// Lands the file at `path` as the blob `expected` of `size` bytes, and consumes the file:
    /// on success it is gone from `path`, moved into the store or, when the store already has
    /// the blob, removed (the commit is then a no-op, as for [`ContentWriter::commit`]).
    ///
    /// The size is always checked, against the file's metadata before anything is read; a
    /// mismatch is [`ContentError::SizeMismatch`]. `verified` says whether the digest is checked
    /// too ([`Verification::Rehash`]) or taken from the caller, who computed it from the bytes
    /// ([`Verification::CallerHashed`]). A store that cannot move the file copies it through a
    /// normal ingest, which hashes it whatever `verified` says.
    ///
    /// On error nothing lands and the file is left at `path` as it was. Removing the consumed
    /// file of a no-op or a copy is best effort: a failure is logged, not returned, since the
    /// blob has landed by then.
    ///
    /// The default copies the file through [`Ingester::ingest`].
    fn adopt(
        &self,
        path: &Path,
        expected: &Digest,
        size: u64,
        verified: Verification,
    ) -> Result<Info> {
        let _ = verified;
        let mut file = open_sized(path, expected, size)?;
        adopt_by_copy(self, &mut file, path, expected, size)
    }
}

/// Opens the file an adopt lands, refusing anything but a regular file of `size` bytes.
pub(crate) fn open_sized(path: &Path, expected: &Digest, size: u64) -> Result<File> {
    let file = File::open(path).map_err(|e| ContentError::io(path, e))?;
    let meta = file.metadata().map_err(|e| ContentError::io(path, e))?;
    check_adoptable(path, &meta, expected, size)?;
    Ok(file)
}

/// Refuses a file to adopt that is not a regular file of `size` bytes.
pub(crate) fn check_adoptable(
    path: &Path,
    meta: &std::fs::Metadata,
    expected: &Digest,
    size: u64,
) -> Result<()> {
    if !meta.is_file() {
        return Err(ContentError::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    if meta.len() != size {
        return Err(ContentError::SizeMismatch {
            digest: expected.clone(),
            expected: size,
            actual: meta.len(),
        });
    }
    Ok(())
}

/// Adopts `file` (open on `path`, positioned at its start) by streaming it through an ingest,
/// which hashes and verifies it, then removes `path`.
pub(crate) fn adopt_by_copy<S: Ingester + ?Sized>(
    store: &S,
    file: &mut File,
    path: &Path,
    expected: &Digest,
    size: u64,
) -> Result<Info> {
    let mut reader = io::BufReader::with_capacity(256 * 1024, file);
    let info = store.ingest(&mut reader, Some(size), Some(expected))?;
    remove_adopted(path);
    Ok(info)
}

/// Removes the file an adopt consumed without moving it. The blob has landed already, so a
/// failure is only logged.
pub(crate) fn remove_adopted(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            path = %path.display(),
            error = %e,
            "could not remove an adopted file"
        ),
    }
}

/// Administers committed blobs.
pub trait Manager: Send + Sync {
    /// Removes a blob. Removing a blob that is not there is [`ContentError::NotFound`].
    fn delete(&self, digest: &Digest) -> Result<()>;

    /// Calls `f` for every committed blob, in digest order. An error from `f` stops the walk.
    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>) -> Result<()>;
}

/// A full content store.
pub trait ContentStore: Provider + Ingester + Manager {}
impl<T: Provider + Ingester + Manager> ContentStore for T {}

/// One blob that [`fsck`] found damaged.
#[derive(Debug)]
pub struct FsckProblem {
    pub digest: Digest,
    pub error: ContentError,
}

/// Re-reads and re-hashes every blob of `store`, returning the ones whose content no longer
/// matches their digest or size, or that cannot be read. Returns how many blobs were checked.
pub fn fsck<S: Provider + Manager + ?Sized>(store: &S) -> Result<(u64, Vec<FsckProblem>)> {
    let mut infos = Vec::new();
    store.walk(&mut |info| {
        infos.push(info);
        Ok(())
    })?;
    let mut problems = Vec::new();
    for info in &infos {
        if let Err(error) = verify_blob(store, info) {
            problems.push(FsckProblem {
                digest: info.digest.clone(),
                error,
            });
        }
    }
    Ok((infos.len() as u64, problems))
}

fn verify_blob<S: Provider + ?Sized>(store: &S, info: &Info) -> Result<()> {
    let mut reader = store.read(&info.digest, None)?;
    let mut hasher = info.digest.algorithm().hasher();
    let size = io::copy(&mut reader, &mut hasher)
        .map_err(|e| ContentError::io(info.digest.to_string(), e))?;
    let actual = hasher.finish();
    if actual != info.digest {
        return Err(ContentError::DigestMismatch {
            expected: info.digest.clone(),
            actual,
        });
    }
    if size != info.size {
        return Err(ContentError::SizeMismatch {
            digest: info.digest.clone(),
            expected: info.size,
            actual: size,
        });
    }
    Ok(())
}

/// Finishes `hasher` and checks the result against the caller's expectations, in the order
/// algorithm, size, digest. Shared by every store so that they fail alike.
pub(crate) fn check_expectations(
    hasher: Hasher,
    written: u64,
    expected_size: Option<u64>,
    expected: Option<&Digest>,
) -> Result<Info> {
    let algorithm = hasher.algorithm();
    if let Some(expected) = expected {
        if expected.algorithm() != algorithm {
            return Err(ContentError::AlgorithmMismatch {
                algorithm,
                expected: expected.clone(),
            });
        }
    }
    let actual = hasher.finish();
    if let Some(expected_size) = expected_size {
        if expected_size != written {
            return Err(ContentError::SizeMismatch {
                digest: expected.cloned().unwrap_or_else(|| actual.clone()),
                expected: expected_size,
                actual: written,
            });
        }
    }
    if let Some(expected) = expected {
        if *expected != actual {
            return Err(ContentError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(Info {
        digest: actual,
        size: written,
    })
}

/// Resolves an optional `start..end` range against a blob of `size` bytes, as
/// [`Provider::read`] specifies: `end` is clamped to `size`; a start past the size or past the
/// end is [`ContentError::InvalidRange`]. Shared by every store.
pub(crate) fn resolve_range(
    digest: &Digest,
    size: u64,
    range: Option<Range<u64>>,
) -> Result<(u64, u64)> {
    let Some(Range { start, end }) = range else {
        return Ok((0, size));
    };
    if start > size || start > end {
        return Err(ContentError::InvalidRange {
            digest: digest.clone(),
            start,
            end,
            size,
        });
    }
    Ok((start, end.min(size)))
}
