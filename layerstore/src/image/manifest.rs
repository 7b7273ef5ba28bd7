//! [`Manifest`]: any of the four manifest kinds, parsed from a blob by media type.
//!
//! The media type comes from where the blob was found (a descriptor, an HTTP `Content-Type`)
//! or from the blob's own `mediaType` field. When both are known they must agree. When neither
//! is (the OCI spec lets manifests and indexes omit `mediaType`), the shape decides, as the
//! distribution spec allows: `config` and `layers` make an OCI manifest, `manifests` an OCI
//! index. Docker's schema-2 types always carry `mediaType`. Schema 1 is refused.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, Platform};

use crate::content::Provider;
use crate::image::docker::{DockerManifest, DockerManifestList};
use crate::image::{CanonicalBlob, ImageError, Result, descriptor_digest, platform};
use crate::media;

/// An image manifest or index, OCI or Docker.
// Manifests are few and short-lived; boxing the variants would only complicate matching.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    /// `application/vnd.oci.image.manifest.v1+json`
    Oci(ImageManifest),
    /// `application/vnd.oci.image.index.v1+json`
    OciIndex(ImageIndex),
    /// `application/vnd.docker.distribution.manifest.v2+json`
    Docker(DockerManifest),
    /// `application/vnd.docker.distribution.manifest.list.v2+json`
    DockerList(DockerManifestList),
}

/// Whether `media_type` is one of the four manifest or index media types.
pub fn is_manifest_media_type(media_type: &str) -> bool {
    matches!(
        media_type,
        media::OCI_MANIFEST
            | media::OCI_INDEX
            | media::DOCKER_MANIFEST
            | media::DOCKER_MANIFEST_LIST
    )
}

/// Whether `media_type` is an index or manifest list.
pub fn is_index_media_type(media_type: &str) -> bool {
    matches!(media_type, media::OCI_INDEX | media::DOCKER_MANIFEST_LIST)
}

impl Manifest {
    /// Parses a manifest blob. `media_type` is what the blob's descriptor or transport said, if
    /// anything; `what` names the blob in errors (a digest, file or member).
    pub fn parse(bytes: &[u8], media_type: Option<&str>, what: &str) -> Result<Manifest> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ImageError::json(what, e))?;
        let object = value.as_object().ok_or_else(|| ImageError::Invalid {
            what: what.to_owned(),
            reason: "a manifest must be a JSON object".into(),
        })?;
        let version = object
            .get("schemaVersion")
            .and_then(serde_json::Value::as_i64);
        if let Some(version) = version
            && version != 2
        {
            return Err(ImageError::SchemaVersion {
                what: what.to_owned(),
                version,
            });
        }
        let field = match object.get("mediaType") {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                return Err(ImageError::Invalid {
                    what: what.to_owned(),
                    reason: "mediaType must be a string".into(),
                });
            }
        };
        let kind = match (media_type, field) {
            (Some(expected), Some(found)) if expected != found => {
                return Err(ImageError::MediaTypeMismatch {
                    what: what.to_owned(),
                    expected: expected.to_owned(),
                    found: found.to_owned(),
                });
            }
            (Some(t), _) | (None, Some(t)) => t.to_owned(),
            (None, None) => {
                if object.contains_key("manifests") {
                    media::OCI_INDEX.to_owned()
                } else if object.contains_key("config") && object.contains_key("layers") {
                    media::OCI_MANIFEST.to_owned()
                } else {
                    return Err(ImageError::UnknownManifest {
                        what: what.to_owned(),
                    });
                }
            }
        };
        if version.is_none() {
            return Err(ImageError::Invalid {
                what: what.to_owned(),
                reason: "schemaVersion is missing".into(),
            });
        }
        let json = |e| ImageError::json(what, e);
        let manifest = match kind.as_str() {
            media::OCI_MANIFEST => Manifest::Oci(serde_json::from_value(value).map_err(json)?),
            media::OCI_INDEX => Manifest::OciIndex(serde_json::from_value(value).map_err(json)?),
            media::DOCKER_MANIFEST => {
                Manifest::Docker(serde_json::from_value(value).map_err(json)?)
            }
            media::DOCKER_MANIFEST_LIST => {
                Manifest::DockerList(serde_json::from_value(value).map_err(json)?)
            }
            other => {
                return Err(ImageError::UnsupportedMediaType {
                    what: what.to_owned(),
                    media_type: other.to_owned(),
                });
            }
        };
        manifest.check_digests(what)?;
        Ok(manifest)
    }

    /// Reads and parses the manifest `desc` points to, checking its size against the
    /// descriptor. Returns the manifest and its bytes.
    pub fn read<S: Provider + ?Sized>(store: &S, desc: &Descriptor) -> Result<(Manifest, Vec<u8>)> {
        let digest = descriptor_digest(desc)?;
        let bytes = store
            .read_all(&digest)
            .map_err(|e| ImageError::content(&digest, e))?;
        if bytes.len() as u64 != desc.size() {
            return Err(ImageError::SizeMismatch {
                what: digest.to_string(),
                expected: desc.size(),
                actual: bytes.len() as u64,
            });
        }
        let media_type = desc.media_type().to_string();
        let manifest = Manifest::parse(&bytes, Some(&media_type), &digest.to_string())?;
        Ok((manifest, bytes))
    }

    /// Every descriptor must have a digest berth can verify.
    fn check_digests(&self, what: &str) -> Result<()> {
        for d in self.references() {
            descriptor_digest(&d).map_err(|e| match e {
                ImageError::Digest { source, .. } => ImageError::Digest {
                    what: what.to_owned(),
                    source,
                },
                other => other,
            })?;
        }
        Ok(())
    }

    /// The manifest's media type.
    pub fn media_type(&self) -> &'static str {
        match self {
            Manifest::Oci(_) => media::OCI_MANIFEST,
            Manifest::OciIndex(_) => media::OCI_INDEX,
            Manifest::Docker(_) => media::DOCKER_MANIFEST,
            Manifest::DockerList(_) => media::DOCKER_MANIFEST_LIST,
        }
    }

    /// Whether this is an index or manifest list rather than an image manifest.
    pub fn is_index(&self) -> bool {
        matches!(self, Manifest::OciIndex(_) | Manifest::DockerList(_))
    }

    /// The config descriptor of an image manifest.
    pub fn config(&self) -> Option<Descriptor> {
        match self {
            Manifest::Oci(m) => Some(m.config().clone()),
            Manifest::Docker(m) => Some(m.config.to_oci()),
            _ => None,
        }
    }

    /// The layer descriptors of an image manifest (empty for an index).
    pub fn layers(&self) -> Vec<Descriptor> {
        match self {
            Manifest::Oci(m) => m.layers().clone(),
            Manifest::Docker(m) => m.layers.iter().map(|l| l.to_oci()).collect(),
            _ => Vec::new(),
        }
    }

    /// The entries of an index or manifest list (empty for an image manifest).
    pub fn manifests(&self) -> Vec<Descriptor> {
        match self {
            Manifest::OciIndex(i) => i.manifests().clone(),
            Manifest::DockerList(l) => l.manifests.iter().map(|m| m.to_oci()).collect(),
            _ => Vec::new(),
        }
    }

    /// Everything the manifest references and an archive must carry with it: config and
    /// layers, or the index entries. An OCI `subject` is not included: it is another image
    /// that this one refers to, not part of it.
    pub fn references(&self) -> Vec<Descriptor> {
        if self.is_index() {
            self.manifests()
        } else {
            let mut refs: Vec<Descriptor> = self.config().into_iter().collect();
            refs.extend(self.layers());
            refs
        }
    }

    /// The index entry that best fits `want`; see [`platform::select`].
    pub fn select_platform(&self, want: &Platform) -> Option<Descriptor> {
        platform::select(&self.manifests(), want).cloned()
    }

    /// Serializes the manifest canonically. Only for manifests made in memory: a manifest read
    /// from somewhere keeps its original bytes.
    pub fn to_blob(&self) -> Result<CanonicalBlob> {
        match self {
            Manifest::Oci(m) => CanonicalBlob::new(media::OCI_MANIFEST, m),
            Manifest::OciIndex(i) => CanonicalBlob::new(media::OCI_INDEX, i),
            Manifest::Docker(m) => m.to_blob(),
            Manifest::DockerList(l) => l.to_blob(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    const D1: &str = "sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f";
    const D2: &str = "sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270";

    fn oci_manifest_json(media_type: bool) -> String {
        format!(
            r#"{{"schemaVersion":2,{}"config":{{"mediaType":"{}","digest":"{D1}","size":7}},"layers":[{{"mediaType":"{}","digest":"{D2}","size":9}}]}}"#,
            if media_type {
                format!(r#""mediaType":"{}","#, media::OCI_MANIFEST)
            } else {
                String::new()
            },
            media::OCI_CONFIG,
            media::OCI_LAYER_GZIP
        )
    }

    #[test]
    fn parses_by_field_by_hint_and_by_shape() {
        let with = oci_manifest_json(true);
        let without = oci_manifest_json(false);
        for (json, hint) in [
            (&with, None),
            (&with, Some(media::OCI_MANIFEST)),
            (&without, None),
            (&without, Some(media::OCI_MANIFEST)),
        ] {
            let m = Manifest::parse(json.as_bytes(), hint, "m").unwrap();
            assert_eq!(m.media_type(), media::OCI_MANIFEST);
            assert_eq!(m.layers().len(), 1);
            assert_eq!(m.references().len(), 2);
            assert_eq!(
                descriptor_digest(&m.config().unwrap()).unwrap().to_string(),
                D1
            );
        }
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","size":7,"digest":"{D1}","platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
            media::OCI_MANIFEST
        );
        let i = Manifest::parse(index.as_bytes(), None, "i").unwrap();
        assert!(i.is_index());
        assert!(
            i.select_platform(&platform::parse("linux/arm64").unwrap())
                .is_some()
        );
        assert!(
            i.select_platform(&platform::parse("linux/amd64").unwrap())
                .is_none()
        );
    }

    #[test]
    fn parses_docker_manifest() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","size":7,"digest":"{D1}"}},"layers":[{{"mediaType":"{}","size":9,"digest":"{D2}"}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER_GZIP
        );
        let m = Manifest::parse(json.as_bytes(), Some(media::DOCKER_MANIFEST), "d").unwrap();
        let Manifest::Docker(d) = &m else {
            panic!("{m:?}")
        };
        assert_eq!(d.layers[0].size, 9);
        assert_eq!(
            m.layers()[0].media_type().to_string(),
            media::DOCKER_LAYER_GZIP
        );
    }

    #[test]
    fn refuses_bad_manifests() {
        let with = oci_manifest_json(true);
        assert!(matches!(
            Manifest::parse(with.as_bytes(), Some(media::OCI_INDEX), "m"),
            Err(ImageError::MediaTypeMismatch { .. })
        ));
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":1,"name":"x"}"#, None, "m"),
            Err(ImageError::SchemaVersion { version: 1, .. })
        ));
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":2}"#, None, "m"),
            Err(ImageError::UnknownManifest { .. })
        ));
        assert!(matches!(
            Manifest::parse(b"[]", None, "m"),
            Err(ImageError::Invalid { .. })
        ));
        assert!(matches!(
            Manifest::parse(with.as_bytes(), Some("text/plain"), "m"),
            Err(ImageError::MediaTypeMismatch { .. })
        ));
        let without = oci_manifest_json(false);
        assert!(matches!(
            Manifest::parse(without.as_bytes(), Some("text/plain"), "m"),
            Err(ImageError::UnsupportedMediaType { .. })
        ));
        let md5 = without.replace(D2, "md5:d41d8cd98f00b204e9800998ecf8427e");
        match Manifest::parse(md5.as_bytes(), None, "blob-x") {
            Err(ImageError::Digest { what, .. }) => assert_eq!(what, "blob-x"),
            Err(ImageError::Json { what, .. }) => assert_eq!(what, "blob-x"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn canonical_blob_round_trips() {
        let m = Manifest::parse(oci_manifest_json(true).as_bytes(), None, "m").unwrap();
        let blob = m.to_blob().unwrap();
        assert_eq!(blob.bytes(), oci_manifest_json(true).as_bytes());
        assert_eq!(
            blob.digest(),
            &Digest::sha256(oci_manifest_json(true).as_bytes())
        );
        let again = Manifest::parse(blob.bytes(), Some(blob.media_type()), "m").unwrap();
        assert_eq!(again, m);
    }
}
