//! Docker's image manifest v2 schema 2 and manifest list (`manifest-v2-2.md`).
//!
//! `oci-spec` has no types for these, so they are defined here with the field names and order
//! Docker writes: `schemaVersion`, `mediaType`, then `config` and `layers` (a manifest) or
//! `manifests` (a list); descriptors as `mediaType`, `size`, `digest`, then the optional
//! `urls`, `annotations` and `platform`.
//!
//! [`DockerManifest::from_oci`] and [`DockerManifest::to_oci`] convert an image manifest between
//! the two families. The config blob is the same JSON in both (see [`crate::image::config`]),
//! so only media types change and the config and layer digests stay valid:
//!
//! | OCI | Docker |
//! |---|---|
//! | `application/vnd.oci.image.config.v1+json` | `application/vnd.docker.container.image.v1+json` |
//! | `application/vnd.oci.image.layer.v1.tar+gzip` | `application/vnd.docker.image.rootfs.diff.tar.gzip` |
//! | `application/vnd.oci.image.layer.nondistributable.v1.tar+gzip` | `application/vnd.docker.image.rootfs.foreign.diff.tar.gzip` |
//!
//! Schema 2 defines gzip layers only: an uncompressed or zstd layer has no Docker equivalent and
//! is refused with [`ImageError::NoEquivalent`], as are an OCI manifest's `subject` and
//! `artifactType`, which Docker cannot carry. Manifest-level annotations are dropped (schema 2
//! has none); descriptor annotations and URLs are kept.

use std::collections::BTreeMap;

use oci_spec::image::{Descriptor, ImageManifest, ImageManifestBuilder, MediaType, Platform};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::image::platform::platform_of;
use crate::image::{CanonicalBlob, ImageError, Result, descriptor_digest, new_descriptor};
use crate::media;

/// A descriptor as Docker writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerDescriptor {
    pub media_type: String,
    pub size: u64,
    pub digest: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<DockerPlatform>,
}

/// A manifest list entry's platform.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DockerPlatform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
}

/// Image manifest, schema 2 (`application/vnd.docker.distribution.manifest.v2+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerManifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`media::DOCKER_MANIFEST`].
    pub media_type: String,
    pub config: DockerDescriptor,
    pub layers: Vec<DockerDescriptor>,
}

/// Manifest list (`application/vnd.docker.distribution.manifest.list.v2+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerManifestList {
    /// Always 2.
    pub schema_version: u32,
    /// [`media::DOCKER_MANIFEST_LIST`].
    pub media_type: String,
    pub manifests: Vec<DockerDescriptor>,
}

impl DockerDescriptor {
    /// A descriptor with only the required fields.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        DockerDescriptor {
            media_type: media_type.to_owned(),
            size,
            digest,
            urls: None,
            annotations: None,
            platform: None,
        }
    }

    /// Converts to an `oci-spec` descriptor, keeping every field (the media type unchanged).
    pub fn to_oci(&self) -> Descriptor {
        let mut d = new_descriptor(&self.media_type, &self.digest, self.size);
        d.set_urls(self.urls.clone());
        d.set_annotations(
            self.annotations
                .as_ref()
                .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        );
        d.set_platform(self.platform.as_ref().map(DockerPlatform::to_oci));
        d
    }

    /// Converts from an `oci-spec` descriptor, keeping every field Docker has (the media type
    /// unchanged).
    pub fn from_oci(d: &Descriptor) -> Result<Self> {
        Ok(DockerDescriptor {
            media_type: d.media_type().to_string(),
            size: d.size(),
            digest: descriptor_digest(d)?,
            urls: d.urls().clone(),
            annotations: d
                .annotations()
                .as_ref()
                .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            platform: d.platform().as_ref().map(DockerPlatform::from_oci),
        })
    }
}

impl DockerPlatform {
    /// Converts to an `oci-spec` platform (`os.version` and `os.features` are left out; see
    /// [`crate::image::platform`]).
    pub fn to_oci(&self) -> Platform {
        let mut p = platform_of(&self.os, &self.architecture, self.variant.as_deref());
        p.set_features(self.features.clone());
        p
    }

    /// Converts from an `oci-spec` platform.
    pub fn from_oci(p: &Platform) -> Self {
        DockerPlatform {
            architecture: p.architecture().to_string(),
            os: p.os().to_string(),
            os_version: p.os_version().clone(),
            os_features: p.os_features().clone(),
            variant: p.variant().clone(),
            features: p.features().clone(),
        }
    }
}

/// The Docker media type for an OCI config or layer media type.
fn oci_to_docker_media_type(media_type: &str, what: &str) -> Result<&'static str> {
    match media_type {
        media::OCI_CONFIG => Ok(media::DOCKER_CONFIG),
        media::OCI_LAYER_GZIP => Ok(media::DOCKER_LAYER_GZIP),
        media::OCI_LAYER_NONDIST_GZIP => Ok(media::DOCKER_LAYER_FOREIGN_GZIP),
        // Already Docker's: a manifest that mixes the two is accepted as it is.
        media::DOCKER_CONFIG => Ok(media::DOCKER_CONFIG),
        media::DOCKER_LAYER_GZIP => Ok(media::DOCKER_LAYER_GZIP),
        media::DOCKER_LAYER_FOREIGN_GZIP => Ok(media::DOCKER_LAYER_FOREIGN_GZIP),
        other => Err(ImageError::NoEquivalent {
            what: what.to_owned(),
            media_type: other.to_owned(),
            target: "Docker schema 2",
        }),
    }
}

/// The OCI media type for a Docker config or layer media type.
fn docker_to_oci_media_type(media_type: &str, what: &str) -> Result<&'static str> {
    match media_type {
        media::DOCKER_CONFIG | media::OCI_CONFIG => Ok(media::OCI_CONFIG),
        media::DOCKER_LAYER_GZIP | media::OCI_LAYER_GZIP => Ok(media::OCI_LAYER_GZIP),
        media::DOCKER_LAYER_FOREIGN_GZIP | media::OCI_LAYER_NONDIST_GZIP => {
            Ok(media::OCI_LAYER_NONDIST_GZIP)
        }
        media::OCI_LAYER_TAR => Ok(media::OCI_LAYER_TAR),
        media::OCI_LAYER_ZSTD => Ok(media::OCI_LAYER_ZSTD),
        other => Err(ImageError::NoEquivalent {
            what: what.to_owned(),
            media_type: other.to_owned(),
            target: "OCI",
        }),
    }
}

impl DockerManifest {
    /// A schema-2 manifest of `config` and `layers`, which must already carry Docker media
    /// types.
    pub fn new(config: DockerDescriptor, layers: Vec<DockerDescriptor>) -> Self {
        DockerManifest {
            schema_version: 2,
            media_type: media::DOCKER_MANIFEST.to_owned(),
            config,
            layers,
        }
    }

    /// Converts an OCI image manifest (see the module docs for what maps and what is refused).
    pub fn from_oci(m: &ImageManifest) -> Result<Self> {
        if let Some(subject) = m.subject() {
            return Err(ImageError::Unconvertible {
                what: "OCI manifest".into(),
                reason: format!(
                    "it has a subject ({}), which Docker schema 2 cannot carry",
                    subject.digest()
                ),
            });
        }
        if let Some(artifact_type) = m.artifact_type() {
            return Err(ImageError::Unconvertible {
                what: "OCI manifest".into(),
                reason: format!("it is an artifact of type {artifact_type}, not an image"),
            });
        }
        let convert = |d: &Descriptor, role: &str| -> Result<DockerDescriptor> {
            let mut out = DockerDescriptor::from_oci(d)?;
            out.media_type =
                oci_to_docker_media_type(&out.media_type, &format!("{role} {}", out.digest))?
                    .to_owned();
            out.platform = None;
            Ok(out)
        };
        let config = convert(m.config(), "config")?;
        let layers = m
            .layers()
            .iter()
            .map(|l| convert(l, "layer"))
            .collect::<Result<Vec<_>>>()?;
        Ok(DockerManifest::new(config, layers))
    }

    /// Converts to an OCI image manifest.
    pub fn to_oci(&self) -> Result<ImageManifest> {
        let convert = |d: &DockerDescriptor, role: &str| -> Result<Descriptor> {
            let media_type =
                docker_to_oci_media_type(&d.media_type, &format!("{role} {}", d.digest))?;
            let mut out = d.to_oci();
            out.set_media_type(MediaType::from(media_type));
            out.set_platform(None);
            Ok(out)
        };
        let config = convert(&self.config, "config")?;
        let layers = self
            .layers
            .iter()
            .map(|l| convert(l, "layer"))
            .collect::<Result<Vec<_>>>()?;
        ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(layers)
            .build()
            .map_err(|e| ImageError::Unconvertible {
                what: "Docker manifest".into(),
                reason: e.to_string(),
            })
    }

    /// Serializes the manifest canonically.
    pub fn to_blob(&self) -> Result<CanonicalBlob> {
        CanonicalBlob::new(media::DOCKER_MANIFEST, self)
    }
}

impl DockerManifestList {
    /// A manifest list of `manifests`.
    pub fn new(manifests: Vec<DockerDescriptor>) -> Self {
        DockerManifestList {
            schema_version: 2,
            media_type: media::DOCKER_MANIFEST_LIST.to_owned(),
            manifests,
        }
    }

    /// Serializes the list canonically.
    pub fn to_blob(&self) -> Result<CanonicalBlob> {
        CanonicalBlob::new(media::DOCKER_MANIFEST_LIST, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oci_manifest(layer_type: &str) -> ImageManifest {
        ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(new_descriptor(media::OCI_CONFIG, &Digest::sha256(b"c"), 1))
            .layers(vec![
                new_descriptor(media::OCI_LAYER_GZIP, &Digest::sha256(b"l1"), 10),
                new_descriptor(layer_type, &Digest::sha256(b"l2"), 20),
            ])
            .build()
            .unwrap()
    }

    #[test]
    fn oci_to_docker_and_back() {
        let oci = oci_manifest(media::OCI_LAYER_NONDIST_GZIP);
        let docker = DockerManifest::from_oci(&oci).unwrap();
        assert_eq!(docker.config.media_type, media::DOCKER_CONFIG);
        assert_eq!(docker.layers[0].media_type, media::DOCKER_LAYER_GZIP);
        assert_eq!(
            docker.layers[1].media_type,
            media::DOCKER_LAYER_FOREIGN_GZIP
        );
        assert_eq!(docker.layers[1].size, 20);
        let blob = docker.to_blob().unwrap();
        let text = std::str::from_utf8(blob.bytes()).unwrap();
        assert!(
            text.starts_with(&format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","size":1,"digest":"sha256:"#,
                media::DOCKER_MANIFEST,
                media::DOCKER_CONFIG
            )),
            "{text}"
        );
        let back = docker.to_oci().unwrap();
        assert_eq!(back, oci);
    }

    #[test]
    fn zstd_and_plain_tar_have_no_docker_equivalent() {
        for t in [media::OCI_LAYER_ZSTD, media::OCI_LAYER_TAR] {
            match DockerManifest::from_oci(&oci_manifest(t)) {
                Err(ImageError::NoEquivalent { media_type, .. }) => assert_eq!(media_type, t),
                other => panic!("{t}: {other:?}"),
            }
        }
    }

    #[test]
    fn subject_is_refused() {
        let mut m = oci_manifest(media::OCI_LAYER_GZIP);
        m.set_subject(Some(new_descriptor(
            media::OCI_MANIFEST,
            &Digest::sha256(b"s"),
            3,
        )));
        assert!(matches!(
            DockerManifest::from_oci(&m),
            Err(ImageError::Unconvertible { .. })
        ));
    }

    #[test]
    fn manifest_list_platforms() {
        let json = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f","size":7143,"platform":{"architecture":"arm","os":"linux","variant":"v7","features":["sse4"]}}]}"#;
        let list: DockerManifestList = serde_json::from_str(json).unwrap();
        let oci = list.manifests[0].to_oci();
        assert_eq!(
            oci.platform().as_ref().unwrap().variant().as_deref(),
            Some("v7")
        );
        let back = DockerDescriptor::from_oci(&oci).unwrap();
        assert_eq!(back, list.manifests[0]);
        // Docker's key order when written again.
        let text = String::from_utf8(list.to_blob().unwrap().into_bytes()).unwrap();
        assert!(text.contains(r#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":7143,"digest":"sha256:e69"#));
        assert!(text.contains(
            r#""platform":{"architecture":"arm","os":"linux","variant":"v7","features":["sse4"]}"#
        ));
    }
}
