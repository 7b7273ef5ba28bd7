//! Media types of the OCI image spec and of Docker's image manifest v2 schema 2.
//!
//! These are plain string constants so that they can be compared with what a registry or an
//! archive sends without allocating; [`Compression`] ties a layer's compression to the two
//! families.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image configuration.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI empty descriptor, for artifacts without a config.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// OCI layer, uncompressed tar.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip-compressed tar.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd-compressed tar.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable layers (deprecated in image-spec 1.1 but still to be accepted).
pub const OCI_LAYER_NONDIST_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_LAYER_NONDIST_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (the schema-2 multi-platform index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image configuration.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer, gzip-compressed tar.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker foreign (non-distributable) layer.
pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// How a layer's tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (RFC 1952), the default everywhere.
    #[default]
    Gzip,
    /// zstd (RFC 8878).
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub const fn oci_layer_media_type(self) -> &'static str {
        match self {
            Compression::None => OCI_LAYER_TAR,
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        }
    }

    /// The compression a layer media type names, for OCI and Docker layers alike.
    pub fn from_layer_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            OCI_LAYER_TAR | OCI_LAYER_NONDIST_TAR => Some(Compression::None),
            OCI_LAYER_GZIP
            | OCI_LAYER_NONDIST_GZIP
            | DOCKER_LAYER_GZIP
            | DOCKER_LAYER_FOREIGN_GZIP => Some(Compression::Gzip),
            OCI_LAYER_ZSTD | OCI_LAYER_NONDIST_ZSTD => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Guesses the compression of a stream from its first bytes (gzip and zstd magic numbers).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" | "uncompressed" => Ok(Compression::None),
            other => Err(format!(
                "unknown compression {other:?}: expected gzip, zstd or none"
            )),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// Whether a layer of this media type is non-distributable ("foreign"): registries accept a
/// manifest that references one without holding the blob.
pub fn is_non_distributable(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_LAYER_NONDIST_TAR
            | OCI_LAYER_NONDIST_GZIP
            | OCI_LAYER_NONDIST_ZSTD
            | DOCKER_LAYER_FOREIGN_GZIP
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_media_types_round_trip() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(
                Compression::from_layer_media_type(c.oci_layer_media_type()),
                Some(c)
            );
            assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
        }
        assert_eq!(
            Compression::from_layer_media_type(DOCKER_LAYER_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::from_layer_media_type(OCI_CONFIG), None);
    }

    #[test]
    fn sniffs_magic() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
    }
}
