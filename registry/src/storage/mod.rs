//! Registry storage, as two narrow traits and an upload area.
//!
//! - [`BlobStore`]: global, content-addressed blob bytes. Every blob is stored once whatever
//!   the number of repositories holding it. [`fs::FsBlobStore`] keeps them in the layerstore's
//!   [`FsStore`](berth_layerstore::content::fs::FsStore).
//! - [`MetaStore`]: everything that is not blob bytes: repositories, which blobs each
//!   repository holds (its *links*), manifests (their bytes live in the [`BlobStore`], their
//!   metadata here), tags and the `subject` relation behind the referrers API.
//!   [`sqlite::SqliteMetaStore`] keeps them in one SQLite database in WAL mode.
//! - [`uploads::UploadStore`]: blob upload sessions in progress, one directory each.
//!
//! Per-repository membership is metadata: a blob that was never pushed or mounted into a
//! repository is unknown there even when another repository holds the same bytes.
//! [`Storage::repository_blob`] is the one place that combines the link with the bytes.
//!
//! The traits are deliberately small so that an object store (S3) and a network database
//! (PostgreSQL) can replace the two local implementations without touching the server. Their
//! methods block; the server calls them from tokio's blocking pool.
//!
//! ## Disk layout of the local implementations
//! ```text
//! <root>/blobs/<algorithm>/<2 hex>/<hex>   committed blobs (FsStore)
//! <root>/ingest/<uuid>                     FsStore ingests in progress
//! <root>/uploads/<uuid>/data               upload session bytes received so far, renamed
//!                                          into blobs/ when the upload completes
//! <root>/uploads/<uuid>/state.json         upload session state (repository, algorithm, offset)
//! <root>/meta.db (+ -wal, -shm)            SQLite metadata
//! ```
//!
//! ## Ordering, for crash safety
//! Bytes land before the metadata that names them: a blob is committed to the [`BlobStore`]
//! before it is linked into a repository, and a manifest's bytes before its row. A crash in
//! between leaves an unreferenced blob for garbage collection, never a reference to nothing.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_layerstore::Digest;
use berth_layerstore::content::ContentError;

use crate::reference::{RepositoryName, Tag};

pub mod fs;
pub mod sqlite;
pub mod uploads;

/// Errors of the storage layer. None of them is the client's fault: the server logs them and
/// answers with a generic internal error, except for the content mismatches, which it maps to
/// the spec's `DIGEST_INVALID` and `SIZE_INVALID`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// From the content store, including [`ContentError::DigestMismatch`] and
    /// [`ContentError::SizeMismatch`] when bytes do not match what they were stored as.
    #[error("content store: {0}")]
    Content(#[from] ContentError),
    /// From the metadata database.
    #[error("metadata store: {0}")]
    Meta(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The metadata database holds a value that does not parse.
    #[error("metadata store holds an invalid {what}: {value:?}")]
    Corrupt { what: &'static str, value: String },
    /// File system error outside the content store (uploads, database directory).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An upload's state file cannot be used.
    #[error("upload state {}: {reason}", path.display())]
    UploadState { path: PathBuf, reason: String },
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> StorageError {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result of this module.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Global, content-addressed blob bytes.
///
/// A blob is immutable once stored. Implementations verify what they store: [`BlobStore::put`]
/// hashes the bytes it is given and fails with [`ContentError::DigestMismatch`] or
/// [`ContentError::SizeMismatch`] instead of storing them under the wrong name.
pub trait BlobStore: Send + Sync + 'static {
    /// The size of the blob, or `None` when it is not stored.
    fn stat(&self, digest: &Digest) -> Result<Option<u64>>;

    /// A reader over the blob, or over `range` of it (end exclusive, clamped to the size).
    fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<Box<dyn Read + Send>>;

    /// Streams `reader` in and stores it as `digest`, verifying size and digest. Storing a
    /// blob that is already there succeeds (after verifying the new bytes).
    fn put(&self, reader: &mut dyn Read, size: u64, digest: &Digest) -> Result<()>;

    /// Stores the file at `path`, of `size` bytes, as `digest`, and consumes the file: on
    /// success it is gone from `path`. The caller vouches for `digest`: it computed it from the
    /// file's bytes itself (an upload's running hash), so an implementation may take the file
    /// as it is, checking only its size, instead of reading it again. Storing a blob that is
    /// already there succeeds. On error nothing is stored and the file is left in place.
    ///
    /// The default streams the file through [`BlobStore::put`], which verifies it, then
    /// removes it.
    fn adopt(&self, path: &Path, size: u64, digest: &Digest) -> Result<()> {
        let file = std::fs::File::open(path).map_err(|e| StorageError::io(path, e))?;
        // One byte past the size, so that a longer file is caught as a size mismatch.
        let mut reader =
            io::BufReader::with_capacity(256 * 1024, file.take(size.saturating_add(1)));
        self.put(&mut reader, size, digest)?;
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove an adopted file");
        }
        Ok(())
    }

    /// Removes the blob; `false` when it was not stored.
    fn delete(&self, digest: &Digest) -> Result<bool>;

    /// The whole blob in memory, for manifests; refuses blobs larger than `limit` bytes.
    fn read_all(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open(digest, None)?
            .take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| StorageError::io(digest.to_string(), e))?;
        if buf.len() as u64 > limit {
            return Err(StorageError::io(
                digest.to_string(),
                io::Error::new(io::ErrorKind::InvalidData, "blob exceeds the size limit"),
            ));
        }
        Ok(buf)
    }
}

/// What the registry knows about one manifest in one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    /// The media type it was pushed as, returned as `Content-Type`.
    pub media_type: String,
    pub size: u64,
    /// The OCI `subject` it refers to, if any.
    pub subject: Option<Digest>,
    /// What the referrers API reports: the manifest's `artifactType`, else (for an image
    /// manifest) its config's media type.
    pub artifact_type: Option<String>,
    /// The manifest's own annotations, copied into referrers descriptors.
    pub annotations: Option<BTreeMap<String, String>>,
}

/// What a manifest must find in its repository to be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceKind {
    /// A blob linked into the repository (config, layer).
    Blob,
    /// A manifest of the repository (an index entry).
    Manifest,
}

/// A manifest to record, with what it references and the tags to point at it.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub record: ManifestRecord,
    /// Must all be present in the repository, or nothing is recorded.
    pub references: Vec<(Digest, ReferenceKind)>,
    /// Tags to create or move to this manifest.
    pub tags: Vec<Tag>,
}

/// Outcome of [`MetaStore::put_manifest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutManifest {
    Stored,
    /// These references are not in the repository; nothing was recorded.
    MissingReferences(Vec<Digest>),
}

/// Repositories, blob links, manifests, tags and referrers.
///
/// Every method is atomic. Listing methods return entries in byte order of their names and
/// page with `last` (exclusive) and `limit`.
pub trait MetaStore: Send + Sync + 'static {
    /// Repository names after `last`, at most `limit`.
    fn repositories(&self, last: Option<&str>, limit: usize) -> Result<Vec<RepositoryName>>;

    /// Whether anything was ever pushed to the repository.
    fn repository_exists(&self, repo: &RepositoryName) -> Result<bool>;

    /// Links a stored blob into the repository, creating the repository. Idempotent.
    fn link_blob(&self, repo: &RepositoryName, digest: &Digest, size: u64) -> Result<()>;

    /// The size of a blob linked into the repository, or `None`.
    fn blob_link(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<u64>>;

    /// Removes a blob's link from the repository; `false` when it was not linked.
    fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool>;

    /// Records a manifest whose bytes are already in the [`BlobStore`]: checks its references,
    /// creates the repository, links the manifest's own blob, and moves its tags, all in one
    /// transaction. Recording a manifest again updates it.
    fn put_manifest(&self, repo: &RepositoryName, manifest: &NewManifest) -> Result<PutManifest>;

    /// A manifest of the repository by digest.
    fn manifest(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<ManifestRecord>>;

    /// What a tag points at.
    fn tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<Option<Digest>>;

    /// Tags after `last`, at most `limit`; `None` when the repository does not exist.
    fn tags(
        &self,
        repo: &RepositoryName,
        last: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<Tag>>>;

    /// Deletes a manifest, the tags pointing at it and its blob link; `false` when unknown.
    fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest) -> Result<bool>;

    /// Deletes a tag (not the manifest); `false` when unknown.
    fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<bool>;

    /// Manifests of the repository whose `subject` is `subject`, optionally only those with
    /// the given artifact type, in digest order.
    fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ManifestRecord>>;
}

/// The two stores together, shared by the server's handlers.
#[derive(Clone)]
pub struct Storage {
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn MetaStore>,
}

impl Storage {
    /// The size of a blob as the repository sees it: linked there and present in the blob
    /// store. A link whose bytes are gone (deleted behind the registry's back) counts as
    /// unknown, with a warning.
    pub fn repository_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<Option<u64>> {
        if self.meta.blob_link(repo, digest)?.is_none() {
            return Ok(None);
        }
        let size = self.blobs.stat(digest)?;
        if size.is_none() {
            tracing::warn!(%repo, %digest, "blob is linked but missing from the blob store");
        }
        Ok(size)
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").finish_non_exhaustive()
    }
}
