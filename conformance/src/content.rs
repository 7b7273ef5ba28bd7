//! The content the suite pushes: random blobs, image configs, image manifests, image indexes and
//! artifacts with a `subject`, built as bytes with their digests.
//!
//! Manifests are serialized pretty-printed rather than compact, so a registry that re-encodes
//! what it was given (instead of storing the exact bytes, as the spec requires) is caught.

use rand::RngCore;
use serde_json::{Map, Value, json};

use crate::digest;

/// Media types the suite pushes or asks for.
pub mod media_type {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI empty descriptor (`{}`), the config of artifacts.
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker schema 2 manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";

    /// An `Accept` header value naming every manifest type the suite understands.
    pub fn accept_manifests() -> String {
        [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
        ]
        .join(", ")
    }
}

/// `len` random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// A random lower-case hexadecimal string of `len` characters, usable in tags and names.
pub fn random_id(len: usize) -> String {
    let bytes = random_bytes(len.div_ceil(2));
    let mut id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    id.truncate(len);
    id
}

/// A blob with its media type and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The media type its descriptors carry.
    pub media_type: String,
    /// The content.
    pub bytes: Vec<u8>,
    /// The sha256 digest of the content.
    pub digest: String,
}

impl Blob {
    /// A blob holding `bytes`.
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Self {
        let digest = digest::sha256(&bytes);
        Self {
            media_type: media_type.to_owned(),
            bytes,
            digest,
        }
    }

    /// A layer of `len` random bytes (registries do not look inside layers).
    pub fn random_layer(len: usize) -> Self {
        Self::new(media_type::OCI_LAYER, random_bytes(len))
    }

    /// A valid, unique OCI image config for `layers`, which become its `diff_ids`.
    pub fn image_config(layers: &[&Blob]) -> Self {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Labels": { "org.opencontainers.conformance.nonce": random_id(16) }
            },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        Self::new(
            media_type::OCI_CONFIG,
            serde_json::to_vec(&config).expect("JSON values serialize"),
        )
    }

    /// The OCI empty blob `{}`, the conventional config of artifacts.
    pub fn empty_config() -> Self {
        Self::new(media_type::OCI_EMPTY, b"{}".to_vec())
    }

    /// The content length in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// The blob's descriptor.
    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size() })
    }
}

/// A manifest (image manifest or image index) as the bytes that are pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The `mediaType` field, which is also the `Content-Type` it is pushed with.
    pub media_type: String,
    /// The exact bytes pushed.
    pub bytes: Vec<u8>,
    /// The sha256 digest of the bytes.
    pub digest: String,
    /// The `artifactType` field, if any.
    pub artifact_type: Option<String>,
    /// The config descriptor's media type (image manifests only).
    pub config_media_type: Option<String>,
    /// The manifest's annotations.
    pub annotations: Map<String, Value>,
}

impl Manifest {
    /// An image manifest with `config` and `layers`; refine it with the builder's methods.
    pub fn image(config: &Blob, layers: &[&Blob]) -> ManifestBuilder {
        ManifestBuilder {
            kind: Kind::Image {
                config: config.descriptor(),
                config_media_type: config.media_type.clone(),
                layers: layers.iter().map(|l| l.descriptor()).collect(),
            },
            artifact_type: None,
            subject: None,
            annotations: Map::new(),
        }
    }

    /// An image index over `manifests`.
    pub fn index(manifests: &[&Manifest]) -> ManifestBuilder {
        ManifestBuilder {
            kind: Kind::Index {
                manifests: manifests.iter().map(|m| m.platform_descriptor()).collect(),
            },
            artifact_type: None,
            subject: None,
            annotations: Map::new(),
        }
    }

    /// The content length in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// The manifest's plain descriptor.
    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size() })
    }

    /// The descriptor with a `linux/amd64` platform, as image indexes list manifests.
    fn platform_descriptor(&self) -> Value {
        let mut descriptor = self.descriptor();
        descriptor["platform"] = json!({ "architecture": "amd64", "os": "linux" });
        descriptor
    }

    /// The `artifactType` a referrers list must give this manifest: its own `artifactType`, else
    /// for an image manifest its config's media type, else none.
    pub fn referrer_artifact_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .or(self.config_media_type.as_deref())
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Image {
        config: Value,
        config_media_type: String,
        layers: Vec<Value>,
    },
    Index {
        manifests: Vec<Value>,
    },
}

/// Optional fields of a manifest under construction.
#[derive(Debug, Clone)]
pub struct ManifestBuilder {
    kind: Kind,
    artifact_type: Option<String>,
    subject: Option<Value>,
    annotations: Map<String, Value>,
}

impl ManifestBuilder {
    /// Sets the `artifactType` field.
    pub fn artifact_type(mut self, artifact_type: &str) -> Self {
        self.artifact_type = Some(artifact_type.to_owned());
        self
    }

    /// Sets the `subject` field to `subject`'s descriptor.
    pub fn subject(mut self, subject: &Manifest) -> Self {
        self.subject = Some(subject.descriptor());
        self
    }

    /// Adds an annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations
            .insert(key.to_owned(), Value::String(value.to_owned()));
        self
    }

    /// Serializes the manifest.
    pub fn build(self) -> Manifest {
        let mut doc = Map::new();
        doc.insert("schemaVersion".into(), json!(2));
        let (media_type, config_media_type) = match self.kind {
            Kind::Image {
                config,
                config_media_type,
                layers,
            } => {
                doc.insert("mediaType".into(), json!(media_type::OCI_MANIFEST));
                if let Some(artifact_type) = &self.artifact_type {
                    doc.insert("artifactType".into(), json!(artifact_type));
                }
                doc.insert("config".into(), config);
                doc.insert("layers".into(), Value::Array(layers));
                (media_type::OCI_MANIFEST, Some(config_media_type))
            }
            Kind::Index { manifests } => {
                doc.insert("mediaType".into(), json!(media_type::OCI_INDEX));
                if let Some(artifact_type) = &self.artifact_type {
                    doc.insert("artifactType".into(), json!(artifact_type));
                }
                doc.insert("manifests".into(), Value::Array(manifests));
                (media_type::OCI_INDEX, None)
            }
        };
        if let Some(subject) = self.subject {
            doc.insert("subject".into(), subject);
        }
        if !self.annotations.is_empty() {
            doc.insert(
                "annotations".into(),
                Value::Object(self.annotations.clone()),
            );
        }
        let mut bytes = serde_json::to_vec_pretty(&Value::Object(doc)).expect("JSON serializes");
        bytes.push(b'\n');
        Manifest {
            media_type: media_type.to_owned(),
            digest: digest::sha256(&bytes),
            bytes,
            artifact_type: self.artifact_type,
            config_media_type,
            annotations: self.annotations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_manifest_shape_and_digest() {
        let layer = Blob::random_layer(32);
        let config = Blob::image_config(&[&layer]);
        let manifest = Manifest::image(&config, &[&layer])
            .annotation("a", "b")
            .build();
        let doc: Value = serde_json::from_slice(&manifest.bytes).unwrap();
        assert_eq!(doc["schemaVersion"], 2);
        assert_eq!(doc["mediaType"], media_type::OCI_MANIFEST);
        assert_eq!(doc["config"]["digest"], config.digest.as_str());
        assert_eq!(doc["layers"][0]["size"], 32);
        assert_eq!(doc["annotations"]["a"], "b");
        assert!(doc.get("subject").is_none());
        assert_eq!(manifest.digest, digest::sha256(&manifest.bytes));
        assert_ne!(
            manifest.bytes,
            serde_json::to_vec(&doc).unwrap(),
            "pushed bytes are not the compact encoding"
        );
        assert_eq!(
            manifest.referrer_artifact_type(),
            Some(media_type::OCI_CONFIG)
        );
    }

    #[test]
    fn artifact_with_subject() {
        let layer = Blob::random_layer(8);
        let subject = Manifest::image(&Blob::image_config(&[&layer]), &[&layer]).build();
        let artifact = Manifest::image(&Blob::empty_config(), &[&layer])
            .artifact_type("application/x.test")
            .subject(&subject)
            .build();
        let doc: Value = serde_json::from_slice(&artifact.bytes).unwrap();
        assert_eq!(doc["artifactType"], "application/x.test");
        assert_eq!(doc["subject"]["digest"], subject.digest.as_str());
        assert_eq!(
            artifact.referrer_artifact_type(),
            Some("application/x.test")
        );
    }

    #[test]
    fn index_lists_manifests_and_has_no_fallback_artifact_type() {
        let layer = Blob::random_layer(8);
        let image = Manifest::image(&Blob::image_config(&[&layer]), &[&layer]).build();
        let index = Manifest::index(&[&image]).build();
        let doc: Value = serde_json::from_slice(&index.bytes).unwrap();
        assert_eq!(doc["mediaType"], media_type::OCI_INDEX);
        assert_eq!(doc["manifests"][0]["digest"], image.digest.as_str());
        assert_eq!(doc["manifests"][0]["platform"]["os"], "linux");
        assert_eq!(index.referrer_artifact_type(), None);
    }

    #[test]
    fn configs_are_unique() {
        assert_ne!(
            Blob::image_config(&[]).digest,
            Blob::image_config(&[]).digest
        );
        assert_eq!(random_id(7).len(), 7);
    }
}
