//! A black-box judge of container images: it reads an image from what `docker save` writes
//! (a docker-archive) or from an OCI image layout (a directory or its tar), flattens its layers
//! the way `docker load` applies them (whiteouts, opaque directories, hardlinks), and compares
//! two images as a user meets them:
//!
//! - the flattened filesystem, entry by entry: type, permission bits (with setuid, setgid and
//!   sticky), uid, gid, size, sha256 of the content, link target, hardlink group and xattrs
//!   ([`Filesystem`]);
//! - the image config, field by field ([`ConfigView`]), after the normalisations listed in
//!   [`NORMALISATIONS`], each with the reason it is needed.
//!
//! It uses the `tar`, `flate2` and `zstd` crates directly and none of berth's own crates, so a
//! bug in berth's layer code cannot hide itself by being shared with its judge.
//!
//! ```no_run
//! use berth_conformance::image::{Image, Normalisation, compare};
//!
//! let docker = Image::open("docker.tar".as_ref()).expect("docker save output");
//! let berth = Image::open("berth-oci.tar".as_ref()).expect("an OCI archive");
//! let normalisation = Normalisation::default(); // no base image: every history entry is new

//! let differences = compare(&docker, &berth, &normalisation).expect("both flatten");
//! assert!(differences.is_empty(), "{differences:#?}");
//! ```

mod archive;
mod config;
mod fs;
#[cfg(test)]
mod tests;

use std::fmt;

pub use archive::Image;
pub use config::{BUILT, ConfigView, NORMALISATIONS, Normalisation, Rule, parse_rfc3339};
pub use fs::{Entry, Filesystem, Kind};

/// Why an image could not be read or flattened.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file of the image could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file (or the member of an archive).
        path: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The image is not laid out as a docker-archive or an OCI layout says it must be.
    #[error("malformed image: {0}")]
    Malformed(String),
    /// A blob's bytes do not match the digest that names them, or a layer's uncompressed bytes
    /// do not match its `diff_id`.
    #[error("{what}: expected {expected}, found {actual}")]
    Digest {
        /// The blob or layer.
        what: String,
        /// The digest the image declares.
        expected: String,
        /// The digest of the bytes.
        actual: String,
    },
    /// A layer holds an entry that cannot be applied (a hardlink to nothing, a path through a
    /// file, a `..` component).
    #[error("layer {layer}: {path}: {reason}")]
    Layer {
        /// The layer's index, from 0 at the bottom.
        layer: usize,
        /// The entry's path in the layer.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One field or path on which two images disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// `fs:/path` for a filesystem entry, or the config field (`config.Env`,
    /// `history[3].created_by`, `rootfs.diff_ids.len`, ...).
    pub key: String,
    /// How the left image has it (`<absent>` when it has nothing there).
    pub left: String,
    /// How the right image has it.
    pub right: String,
}

/// Rendered for an absent path or field.
pub const ABSENT: &str = "<absent>";

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n    left:  {}\n    right: {}",
            self.key, self.left, self.right
        )
    }
}

/// Compares two images: their flattened filesystems, then their configs after normalisation.
/// An empty result means they are the same image for every purpose this judge knows.
pub fn compare(
    left: &Image,
    right: &Image,
    normalisation: &Normalisation,
) -> Result<Vec<Difference>, ImageError> {
    let mut differences = left.filesystem()?.compare(&right.filesystem()?);
    differences.extend(
        ConfigView::new(&left.config, normalisation)
            .compare(&ConfigView::new(&right.config, normalisation)),
    );
    Ok(differences)
}
