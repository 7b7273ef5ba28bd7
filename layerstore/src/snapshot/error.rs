//! The snapshot store's errors: each names the snapshot (`diff_id`) and the path concerned.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::archive::ArchiveError;
use crate::digest::Digest;
use crate::layer::LayerError;

/// Errors of the [`SnapshotStore`](super::SnapshotStore) and of its active snapshots.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A system call failed.
    #[error("{op} {path}{snapshot}: {source}", path = .path.display(), snapshot = Of(.diff_id))]
    Io {
        /// What was being done, e.g. "creating" or "renaming".
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The snapshot concerned, when there is one.
        diff_id: Option<Digest>,
        #[source]
        source: io::Error,
    },
    /// A layer could not be extracted (a corrupt stream, an entry escaping its root, a limit).
    // The directory is not shown: it is a temporary one, removed by the time this is read.
    #[error("extracting the layer of snapshot {diff_id}: {source}")]
    Extract {
        /// The layer's expected diff_id.
        diff_id: Digest,
        /// The directory it was being extracted into (removed since).
        path: PathBuf,
        #[source]
        source: Box<ArchiveError>,
    },
    /// A layer's uncompressed stream does not hash to the diff_id it was extracted under:
    /// nothing was stored.
    #[error("layer for snapshot {expected} has diff_id {actual}; nothing was stored")]
    DiffIdMismatch {
        /// The diff_id asked for.
        expected: Digest,
        /// The sha256 of the uncompressed stream that was read.
        actual: Digest,
    },
    /// A snapshot named as a parent (or to remove) is not in the store.
    #[error("snapshot {diff_id} is not in the store (no {path})", path = .path.display())]
    NotFound {
        /// The snapshot.
        diff_id: Digest,
        /// Where it would be.
        path: PathBuf,
    },
    /// A snapshot is referenced by live leases or active snapshots and cannot be removed.
    #[error(
        "snapshot {diff_id} ({path}) is in use by {references} lease(s) or active snapshot(s)",
        path = .path.display()
    )]
    InUse {
        /// The snapshot.
        diff_id: Digest,
        /// Its directory.
        path: PathBuf,
        /// How many live leases reference it.
        references: usize,
    },
    /// A directory is still part of a mount (or holds one): unmount it first.
    #[error("{path}{snapshot} is still mounted; unmount it first", path = .path.display(), snapshot = Of(.diff_id))]
    Mounted {
        /// The directory.
        path: PathBuf,
        /// The snapshot concerned, when there is one.
        diff_id: Option<Digest>,
    },
    /// Reading an active snapshot's changes failed.
    #[error("diff of active snapshot {key:?} ({path}): {source}", path = .path.display())]
    Diff {
        /// The active snapshot's key.
        key: String,
        /// The file being compared.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The layer pipeline failed while committing an active snapshot.
    #[error("committing active snapshot {key:?} ({path}): {source}", path = .path.display())]
    Commit {
        /// The active snapshot's key.
        key: String,
        /// Its directory.
        path: PathBuf,
        #[source]
        source: Box<LayerError>,
    },
    /// Extracting a committed layer as a snapshot (the copy fallback) failed.
    #[error(
        "storing the layer of active snapshot {key:?} as a snapshot ({path}): {source}",
        path = .path.display()
    )]
    Materialize {
        /// The active snapshot's key.
        key: String,
        /// The directory being filled.
        path: PathBuf,
        #[source]
        source: Box<ArchiveError>,
    },
    /// An operation was asked of an active snapshot of the other kind (lower directories of a
    /// copy, for instance), or with an unusable argument.
    #[error("active snapshot {key:?}: {reason}")]
    Invalid {
        /// The active snapshot's key.
        key: String,
        /// What was wrong.
        reason: &'static str,
    },
}

impl SnapshotError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SnapshotError::Io {
            op,
            path: path.into(),
            diff_id: None,
            source,
        }
    }

    pub(crate) fn io_of(
        op: &'static str,
        path: impl Into<PathBuf>,
        diff_id: &Digest,
        source: io::Error,
    ) -> Self {
        SnapshotError::Io {
            op,
            path: path.into(),
            diff_id: Some(diff_id.clone()),
            source,
        }
    }
}

/// Displays ` (snapshot <diff_id>)` when there is a snapshot, nothing otherwise.
struct Of<'a>(&'a Option<Digest>);

impl fmt::Display for Of<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, " (snapshot {d})"),
            None => Ok(()),
        }
    }
}
