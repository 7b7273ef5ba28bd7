//! Deterministic tar writer (from a directory or a list of changes) and the safe layer applier.
//!
//! The writer ([`write_dir`], [`write_changes`]) produces the layer tar streams that the layer
//! pipeline hashes and compresses:
//! - entries come depth first with siblings sorted byte-wise by name, which is the order of
//!   [`Path`](std::path::Path)'s component-wise comparison, so a directory always precedes its
//!   contents and the same tree always gives the same bytes;
//! - names are relative (no leading `./` or `/`) and directories end in `/`, as Docker writes
//!   them; headers are ustar, with PAX extended headers for long names and link names, sizes of
//!   8 GiB and more, large ids and extended attributes (`SCHILY.xattr.*`), as Docker and BuildKit
//!   write them;
//! - deletions become whiteout files (`dir/.wh.name`) and opaque directories a
//!   `dir/.wh..wh..opq` entry right after the directory, following the OCI image spec's
//!   `layer.md`.
//!
//! The applier ([`apply_layer`]) extracts a gzip, zstd or plain layer onto a directory the way the
//! spec's "Applying Changesets" describes, without ever following a symlink or writing outside
//! the destination, and within bounds on the bytes and entries it will expand. With
//! [`WhiteoutMode::Overlay`] it keeps whiteouts the way overlayfs keeps them in an upper
//! directory instead of applying them, so that the result can serve as an overlayfs lower
//! directory (the snapshot store extracts layers so).

mod apply;
mod reader;
mod sys;
mod writer;

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use apply::{ApplyOptions, ApplyStats, WhiteoutMode, apply_layer};
pub use writer::{Change, ChangeKind, TarOptions, write_changes, write_dir};

/// Prefix of a whiteout file's name: `.wh.name` deletes `name` of the lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque whiteout: `dir/.wh..wh..opq` hides everything lower layers put in `dir`.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// Prefix of the AUFS metadata names (`.wh..wh.plnk`, ...): such entries are skipped on apply.
pub const WHITEOUT_META_PREFIX: &str = ".wh..wh.";

/// The extended attribute namespace of overlayfs' own attributes: `trusted.` when the mount is
/// made with `CAP_SYS_ADMIN`, `user.` with the `userxattr` mount option (in a user namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverlayNamespace {
    /// `trusted.overlay.*`.
    Trusted,
    /// `user.overlay.*` (mount option `userxattr`).
    User,
}

impl OverlayNamespace {
    /// The attribute that marks a directory opaque (set to `y`).
    pub fn opaque_xattr(self) -> &'static CStr {
        match self {
            OverlayNamespace::Trusted => c"trusted.overlay.opaque",
            OverlayNamespace::User => c"user.overlay.opaque",
        }
    }
}

/// Errors of the tar writer and of the layer applier. Each names the file or entry it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// A system call failed on a file of the source tree or of the destination.
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        /// The file (source tree) or entry (layer) concerned.
        path: PathBuf,
        /// What was being done, e.g. "reading" or "creating".
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A file's size changed between its `lstat` and the end of its data; the tar would be corrupt.
    #[error(
        "{path} changed size while being archived: expected {expected} bytes, read {actual}",
        path = .path.display()
    )]
    FileChanged {
        /// The file in the source tree.
        path: PathBuf,
        /// The size `lstat` reported, written in the entry header.
        expected: u64,
        /// The bytes read before the mismatch was seen.
        actual: u64,
    },
    /// A [`Change`] names a path that cannot be archived.
    #[error("invalid change {path}: {reason}", path = .path.display())]
    InvalidChange {
        /// The path of the change as given.
        path: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Two changes would produce the same tar entry.
    #[error("duplicate entry {path} in the change list", path = .path.display())]
    DuplicateEntry {
        /// The entry's path in the tar.
        path: PathBuf,
    },
    /// An overlayfs upper directory uses a feature whose diff cannot be read from the upper
    /// directory alone (`redirect_dir`, `metacopy`).
    #[error("{path}: overlayfs {xattr} is not supported in a layer diff", path = .path.display())]
    UnsupportedOverlay {
        /// The file in the upper directory.
        path: PathBuf,
        /// The overlayfs attribute that was found.
        xattr: String,
    },
    /// `SOURCE_DATE_EPOCH` is set but is not a number of seconds.
    #[error("SOURCE_DATE_EPOCH={value:?} is not an integer number of seconds")]
    InvalidSourceDateEpoch {
        /// The variable's value.
        value: String,
    },
    /// The layer stream could not be read: bad compression, bad tar header, early end.
    #[error("layer stream is corrupt after entry {}: {source}", AfterEntry(.after))]
    Stream {
        /// The last entry read successfully (empty at the start of the layer).
        after: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An entry's header is invalid (a NUL in its name, a malformed PAX record, ...).
    #[error("entry {entry}: {reason}", entry = .entry.display())]
    InvalidEntry {
        /// The entry's path as written in the layer.
        entry: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An entry's path is absolute (`/etc/passwd`). Layers written by Docker, BuildKit and berth
    /// only hold relative names, so an absolute one is refused rather than reinterpreted.
    #[error("entry {entry}: absolute paths are not allowed in a layer", entry = .entry.display())]
    AbsolutePath {
        /// The entry's path (or hardlink target) as written in the layer.
        entry: PathBuf,
    },
    /// An entry's path resolves outside the destination (`../x`, `a/../../x`).
    #[error("entry {entry}: path resolves outside the destination", entry = .entry.display())]
    PathEscapesRoot {
        /// The entry's path as written in the layer.
        entry: PathBuf,
    },
    /// An entry's path passes through a symlink of the destination.
    #[error(
        "entry {entry}: path passes through symlink {component}",
        entry = .entry.display(),
        component = .component.display()
    )]
    ThroughSymlink {
        /// The entry's path as written in the layer.
        entry: PathBuf,
        /// The symlink, relative to the destination.
        component: PathBuf,
    },
    /// An entry's parent path has a component that exists and is not a directory.
    #[error(
        "entry {entry}: {component} is not a directory",
        entry = .entry.display(),
        component = .component.display()
    )]
    NotADirectory {
        /// The entry's path as written in the layer.
        entry: PathBuf,
        /// The offending component, relative to the destination.
        component: PathBuf,
    },
    /// A hardlink's target resolves outside the destination.
    #[error(
        "hardlink {entry}: target {target} resolves outside the destination",
        entry = .entry.display(),
        target = .target.display()
    )]
    LinkTargetEscapesRoot {
        /// The hardlink entry's path.
        entry: PathBuf,
        /// Its target as written in the layer.
        target: PathBuf,
    },
    /// A hardlink's target passes through, or is reached through, a symlink.
    #[error(
        "hardlink {entry}: target {target} passes through symlink {component}",
        entry = .entry.display(),
        target = .target.display(),
        component = .component.display()
    )]
    LinkTargetThroughSymlink {
        /// The hardlink entry's path.
        entry: PathBuf,
        /// Its target as written in the layer.
        target: PathBuf,
        /// The symlink, relative to the destination.
        component: PathBuf,
    },
    /// A hardlink's target does not exist in the destination, or is a directory.
    #[error(
        "hardlink {entry}: target {target} {reason}",
        entry = .entry.display(),
        target = .target.display()
    )]
    LinkTargetInvalid {
        /// The hardlink entry's path.
        entry: PathBuf,
        /// Its target as written in the layer.
        target: PathBuf,
        /// "does not exist" or "is a directory".
        reason: &'static str,
    },
    /// A whiteout entry without a name to delete (`.wh.` alone).
    #[error("entry {entry}: whiteout without a name to delete", entry = .entry.display())]
    InvalidWhiteout {
        /// The whiteout entry's path.
        entry: PathBuf,
    },
    /// Applying the layer would expand past [`ApplyOptions::max_size`].
    #[error(
        "entry {entry}: layer expands past the limit of {limit} bytes",
        entry = .entry.display()
    )]
    SizeLimit {
        /// The entry being read when the limit was reached.
        entry: PathBuf,
        /// The limit in force.
        limit: u64,
    },
    /// The layer has more entries than [`ApplyOptions::max_entries`].
    #[error("entry {entry}: layer has more than {limit} entries", entry = .entry.display())]
    EntryLimit {
        /// The first entry past the limit.
        entry: PathBuf,
        /// The limit in force.
        limit: u64,
    },
    /// The extension headers (PAX, GNU long names) of one entry exceed
    /// [`ApplyOptions::max_header_bytes`].
    #[error(
        "extension headers after entry {} exceed {limit} bytes",
        AfterEntry(.after)
    )]
    HeaderLimit {
        /// The last entry read before the oversized headers.
        after: PathBuf,
        /// The limit in force.
        limit: u64,
    },
    /// An entry's data ended before the size its header announced.
    #[error(
        "entry {entry}: data truncated at {actual} of {expected} bytes",
        entry = .entry.display()
    )]
    Truncated {
        /// The entry's path.
        entry: PathBuf,
        /// The size in its header.
        expected: u64,
        /// The bytes actually present.
        actual: u64,
    },
    /// An entry of a type that cannot be applied (GNU volume labels, multi-volume parts, ...).
    #[error(
        "entry {entry}: unsupported tar entry type {kind:?}",
        entry = .entry.display(),
        kind = char::from(*.type_flag)
    )]
    UnsupportedEntryType {
        /// The entry's path.
        entry: PathBuf,
        /// The typeflag byte of its header.
        type_flag: u8,
    },
}

impl ArchiveError {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        ArchiveError::Io {
            path: path.into(),
            op,
            source,
        }
    }
}

/// Displays the entry a stream error follows, or the start of the layer.
struct AfterEntry<'a>(&'a Path);

impl fmt::Display for AfterEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.as_os_str().is_empty() {
            f.write_str("(start of layer)")
        } else {
            write!(f, "{}", self.0.display())
        }
    }
}
