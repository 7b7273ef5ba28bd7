//! Image formats: OCI and Docker schema-2 manifests, indexes and configs; the OCI image layout
//! (directory and tar) and docker-archive.
//!
//! ## Model
//! - OCI manifests, indexes and descriptors are `oci-spec`'s [`ImageManifest`], [`ImageIndex`],
//!   [`Descriptor`] and [`Platform`], re-exported here.
//! - Docker's schema-2 manifest and manifest list have their own types in [`docker`], with the
//!   field names and order Docker writes; [`docker::DockerManifest::from_oci`] and
//!   [`docker::DockerManifest::to_oci`] convert between the two manifest families.
//! - [`Manifest`] is any of the four, parsed from a blob by its media type
//!   ([`Manifest::parse`]), sniffing the shape when the media type is absent.
//! - One configuration type, [`ImageConfig`], serves both families: Docker's image config is
//!   the OCI config plus a few fields (`Healthcheck`, `Shell`, `OnBuild`, `container_config`,
//!   ...), so [`ImageConfig`] carries the union and keeps unknown fields. See [`config`].
//! - [`platform`] parses `os/arch[/variant]` and picks an index entry for a platform.
//!
//! ## Bytes and digests
//! A manifest's identity is the digest of its bytes, so blobs are serialized once
//! ([`CanonicalBlob`], [`to_canonical_json`]) and the same bytes are hashed and stored. Blobs read
//! from a store or an archive are kept as they are and never re-serialized.
//!
//! ## Archives
//! - [`layout`]: the OCI image layout as a directory and as a tar (what `skopeo` calls `oci:` and
//!   `oci-archive:`).
//! - [`docker_archive`]: what `docker save` writes and `docker load` reads.
//!
//! Everything read from outside is checked: digests are recomputed from content, never taken
//! from file names; archive member paths may not escape the archive.

use std::path::PathBuf;

use crate::content::ContentError;
use crate::digest::{Digest, DigestError};

pub mod canonical;
pub mod config;
pub mod docker;
pub mod docker_archive;
pub mod layout;
pub mod manifest;
pub mod platform;
pub mod store;
mod tarball;
mod walk;

pub use canonical::{CanonicalBlob, to_canonical_json};
pub use config::{ContainerConfig, HealthConfig, History, ImageConfig, RootFs};
pub use docker::{DockerDescriptor, DockerManifest, DockerManifestList, DockerPlatform};
pub use manifest::Manifest;
pub use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType, Platform};
pub use walk::reachable;

/// The annotation that names a tag on the entries of an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Errors of the image model and archives. Each variant names the file, archive member, blob
/// digest or value it is about.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what}: invalid JSON: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {source}")]
    Content {
        what: String,
        #[source]
        source: ContentError,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: invalid digest: {source}")]
    Digest {
        what: String,
        #[source]
        source: DigestError,
    },
    #[error("{what}: unsupported media type {media_type:?}")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("{what}: the content says media type {found:?}, but {expected:?} was expected")]
    MediaTypeMismatch {
        what: String,
        expected: String,
        found: String,
    },
    #[error(
        "{what}: not a manifest or index (no mediaType, and neither config+layers nor manifests)"
    )]
    UnknownManifest { what: String },
    #[error("{what}: schemaVersion {version} is not supported (only 2 is)")]
    SchemaVersion { what: String, version: i64 },
    #[error("{what}: media type {media_type:?} has no equivalent in {target}")]
    NoEquivalent {
        what: String,
        media_type: String,
        target: &'static str,
    },
    #[error("{what}: cannot convert: {reason}")]
    Unconvertible { what: String, reason: String },
    #[error("{}: missing", path.display())]
    MissingFile { path: PathBuf },
    #[error("{}: imageLayoutVersion {version:?} is not supported (expected 1.0.0)", path.display())]
    LayoutVersion { path: PathBuf, version: String },
    #[error("{}: content has digest {actual}, but its name says {expected}", path.display())]
    BlobMismatch {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: size is {actual} bytes, but the descriptor says {expected}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{member}: path escapes the archive")]
    UnsafePath { member: String },
    #[error("{member}: {reason}")]
    BadMember { member: String, reason: String },
    #[error("blob {digest} (referenced by {referenced_by}) is missing")]
    MissingBlob {
        digest: Digest,
        referenced_by: String,
    },
    #[error("{member}: layer has diff_id {actual}, but the config lists {expected}")]
    DiffIdMismatch {
        member: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: the config lists {diff_ids} diff_ids but there are {layers} layers")]
    LayerCount {
        what: String,
        diff_ids: usize,
        layers: usize,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("invalid platform {0:?}: expected os/architecture[/variant]")]
    BadPlatform(String),
    #[error("{what}: no manifest for platform {platform}")]
    NoMatchingPlatform { what: String, platform: String },
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ImageError {
        ImageError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn content(what: impl std::fmt::Display, source: ContentError) -> ImageError {
        ImageError::Content {
            what: what.to_string(),
            source,
        }
    }

    pub(crate) fn json(what: impl std::fmt::Display, source: serde_json::Error) -> ImageError {
        ImageError::Json {
            what: what.to_string(),
            source,
        }
    }
}

/// Result of this module.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// A descriptor for a blob of `media_type` with `digest` and `size`.
pub fn new_descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(MediaType::from(media_type), size, digest)
}

/// The checked digest of a descriptor; refuses algorithms berth cannot verify.
pub fn descriptor_digest(desc: &Descriptor) -> Result<Digest> {
    Digest::try_from(desc.digest()).map_err(|source| ImageError::Digest {
        what: format!("descriptor of {}", desc.media_type()),
        source,
    })
}

/// The `org.opencontainers.image.ref.name` annotation of a descriptor, if any.
pub fn ref_name(desc: &Descriptor) -> Option<&str> {
    desc.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME_ANNOTATION))
        .map(String::as_str)
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Sample images for the unit tests of this module.

    use std::io::Write;

    use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};

    use crate::content::Ingester;
    pub use crate::content::memory::MemoryStore;
    use crate::digest::Digest;
    use crate::image::{ContainerConfig, History, ImageConfig, new_descriptor};
    use crate::media;

    /// An image put in a store by [`sample_image`].
    pub struct SampleImage {
        pub manifest: Descriptor,
        pub config: Descriptor,
        pub layers: Vec<Descriptor>,
        pub diff_ids: Vec<Digest>,
        /// The uncompressed layer tars.
        pub layer_tars: Vec<Vec<u8>>,
    }

    /// gzip of `data`.
    pub fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    /// A tar holding one file `file` with `content`.
    pub fn layer_tar(content: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, "file", content).unwrap();
        b.into_inner().unwrap()
    }

    /// Stores an OCI image with one gzip layer per entry of `contents`.
    pub fn sample_image<S: Ingester + ?Sized>(store: &S, contents: &[&[u8]]) -> SampleImage {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_tars = Vec::new();
        for content in contents {
            let tar = layer_tar(content);
            diff_ids.push(Digest::sha256(&tar));
            let gz = gzip(&tar);
            let info = store.ingest_bytes(&gz).unwrap();
            layers.push(new_descriptor(
                media::OCI_LAYER_GZIP,
                &info.digest,
                info.size,
            ));
            layer_tars.push(tar);
        }
        let mut config = ImageConfig::new("linux", "amd64");
        config.config = Some(ContainerConfig {
            cmd: Some(vec!["/file".into()]),
            ..Default::default()
        });
        config.rootfs.diff_ids = diff_ids.clone();
        config.history = Some(vec![History {
            created_by: Some("test".into()),
            ..Default::default()
        }]);
        let config = config
            .to_blob(media::OCI_CONFIG)
            .unwrap()
            .ingest(store)
            .unwrap();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.clone())
            .layers(layers.clone())
            .build()
            .unwrap();
        let manifest = crate::image::CanonicalBlob::new(media::OCI_MANIFEST, &manifest)
            .unwrap()
            .ingest(store)
            .unwrap();
        SampleImage {
            manifest,
            config,
            layers,
            diff_ids,
            layer_tars,
        }
    }
}
