//! Progress reporting: the client tells a [`Progress`] what happens to each blob and manifest,
//! so a front end can draw lines like `docker push` does.
//!
//! For every blob of a pull or push there is one [`ProgressEvent::BlobStart`], any number of
//! [`ProgressEvent::BlobAdvance`] (bytes moved since the last one) and one
//! [`ProgressEvent::BlobDone`] with its [`BlobOutcome`], unless the operation fails first.
//! Blobs move in parallel, so events of different blobs interleave. A retried transfer may
//! advance past the size and start again from a lower count, announced by
//! [`ProgressEvent::Retry`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_layerstore::Digest;

/// How a blob got where it had to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Pull: the blob was downloaded and verified.
    Downloaded,
    /// Pull: the local store already had the blob.
    AlreadyPresent,
    /// Push: the registry already had the blob in the repository (HEAD said so).
    Exists,
    /// Push: the registry mounted the blob from another repository.
    Mounted { from: String },
    /// Push: the blob was uploaded.
    Uploaded(UploadMethod),
}

/// How a blob was uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMethod {
    /// One request carried the whole blob: a single `POST ?digest=`, or `PUT` after the
    /// `POST` that opened the session.
    Monolithic,
    /// `PATCH` requests with `Content-Range`, then a closing `PUT`; `chunks` counts the
    /// `PATCH`es that were accepted.
    Chunked { chunks: u32 },
}

/// What happened; see the module docs for the order.
#[derive(Debug, Clone)]
pub enum ProgressEvent {
    /// Work on a blob begins.
    BlobStart {
        digest: Digest,
        media_type: String,
        size: u64,
    },
    /// `bytes` more bytes of the blob were transferred.
    BlobAdvance { digest: Digest, bytes: u64 },
    /// The blob is done.
    BlobDone {
        digest: Digest,
        outcome: BlobOutcome,
    },
    /// A manifest or index was stored (pull) or put (push; `target` is the tag or digest).
    ManifestDone {
        digest: Digest,
        media_type: String,
        size: u64,
        target: String,
    },
    /// A transfer failed and will be tried again after `delay`.
    Retry {
        what: String,
        attempt: u32,
        delay: Duration,
        error: String,
    },
}

/// Receives [`ProgressEvent`]s. Called from the tasks that move the blobs, so it must be quick.
pub trait Progress: Send + Sync {
    fn event(&self, event: &ProgressEvent);
}

/// Discards every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: &ProgressEvent) {}
}

/// A shared [`NoProgress`].
pub fn no_progress() -> Arc<dyn Progress> {
    Arc::new(NoProgress)
}

/// Counts bytes and outcomes; handy in tests and summaries.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes: AtomicU64,
    pub downloaded: AtomicU64,
    pub already_present: AtomicU64,
    pub exists: AtomicU64,
    pub mounted: AtomicU64,
    pub uploaded_monolithic: AtomicU64,
    pub uploaded_chunked: AtomicU64,
    /// `PATCH` requests of chunked uploads, summed over blobs.
    pub chunks: AtomicU64,
    pub manifests: AtomicU64,
    pub retries: AtomicU64,
}

impl Progress for Counters {
    fn event(&self, event: &ProgressEvent) {
        let add = |c: &AtomicU64, n: u64| {
            c.fetch_add(n, Ordering::Relaxed);
        };
        match event {
            ProgressEvent::BlobStart { .. } => {}
            ProgressEvent::BlobAdvance { bytes, .. } => add(&self.bytes, *bytes),
            ProgressEvent::BlobDone { outcome, .. } => match outcome {
                BlobOutcome::Downloaded => add(&self.downloaded, 1),
                BlobOutcome::AlreadyPresent => add(&self.already_present, 1),
                BlobOutcome::Exists => add(&self.exists, 1),
                BlobOutcome::Mounted { .. } => add(&self.mounted, 1),
                BlobOutcome::Uploaded(UploadMethod::Monolithic) => {
                    add(&self.uploaded_monolithic, 1)
                }
                BlobOutcome::Uploaded(UploadMethod::Chunked { chunks }) => {
                    add(&self.uploaded_chunked, 1);
                    add(&self.chunks, u64::from(*chunks));
                }
            },
            ProgressEvent::ManifestDone { .. } => add(&self.manifests, 1),
            ProgressEvent::Retry { .. } => add(&self.retries, 1),
        }
    }
}

impl Counters {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Blobs uploaded, either way.
    pub fn uploaded(&self) -> u64 {
        Counters::get(&self.uploaded_monolithic) + Counters::get(&self.uploaded_chunked)
    }
}
