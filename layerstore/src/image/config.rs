//! The image configuration, one type for OCI and Docker.
//!
//! Docker's image config (`application/vnd.docker.container.image.v1+json`) is the OCI config
//! (`application/vnd.oci.image.config.v1+json`) with extra fields: in the execution parameters,
//! `Healthcheck`, `OnBuild`, `Shell`, `StopTimeout` and `ArgsEscaped`, which the Dockerfile
//! instructions `HEALTHCHECK`, `ONBUILD` and `SHELL` need; at the top level, `id`, `parent`,
//! `comment`, `container`, `container_config` and `docker_version`. [`ImageConfig`] carries the
//! union, so one type reads and writes both media types. `oci_spec::image::ImageConfiguration`
//! is not used for this because it cannot hold the Docker fields and keeps labels in a
//! `HashMap`; [`ImageConfig::to_oci_spec`] and [`ImageConfig::from_oci_spec`] convert when a
//! caller needs it.
//!
//! Fields this type does not know (for example Docker's `Hostname` or `AttachStdin`) are kept in
//! the `extra` maps, so reading and writing a config loses nothing. The bytes of a config read
//! from a store are still the source of truth for its digest: a config is parsed to be read, and
//! serialized ([`ImageConfig::to_blob`]) only when a new one is made.
//!
//! Docker writes `null` for empty lists and maps (`"Env":null`), so those fields are `Option`s.

use std::collections::{BTreeMap, BTreeSet};

use oci_spec::image::{ImageConfiguration, Platform};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::image::platform::platform_of;
use crate::image::{CanonicalBlob, ImageError, Result};

/// An image configuration (OCI `config.md`, plus Docker's fields).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// When the image was created, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Who created the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture, in Go's `GOARCH` terms (`amd64`, `arm64`).
    #[serde(default)]
    pub architecture: String,
    /// Operating system, in Go's `GOOS` terms (`linux`).
    #[serde(default)]
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
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Execution parameters for a container made from the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    /// The layers' diff_ids, in order from the base.
    #[serde(default)]
    pub rootfs: RootFs,
    /// One entry per build step, including those that made no layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<History>>,

    /// Docker: the legacy v1 image id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Docker: the parent image's id, for locally built images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Docker: commit message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Docker: id of the container the image was committed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Docker: configuration of that container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_config: Option<ContainerConfig>,
    /// Docker: version of the daemon that made the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,

    /// Top-level fields not listed above, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Execution parameters (the config's `config` object, Docker's `container.Config`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Ports as `port/proto`; JSON has them as an object whose values are `{}`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "set_as_object"
    )]
    pub exposed_ports: Option<BTreeSet<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Volume paths; JSON has them as an object whose values are `{}`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "set_as_object"
    )]
    pub volumes: Option<BTreeSet<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Whether `Cmd`/`Entrypoint` are already escaped for Windows (Docker and OCI, deprecated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    /// Docker: `HEALTHCHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// Docker: `ONBUILD` triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// Docker: `SHELL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Docker: seconds to wait after `StopSignal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    /// Fields not listed above (Docker's `Hostname`, `Tty`, ...), kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Docker's health check (`HEALTHCHECK`). Durations are nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

/// The config's `rootfs`: the layer diff_ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// sha256 of each uncompressed layer tar, from the base up.
    #[serde(default, deserialize_with = "null_as_default")]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".to_owned(),
            diff_ids: Vec::new(),
        }
    }
}

/// One step of the image's history.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step made no layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
}

impl ImageConfig {
    /// A config for `os`/`architecture` with no layers.
    pub fn new(os: &str, architecture: &str) -> Self {
        ImageConfig {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            ..Default::default()
        }
    }

    /// Parses a config blob; `what` names it in errors (a file, member or digest).
    pub fn from_slice(bytes: &[u8], what: &str) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| ImageError::json(what, e))
    }

    /// The layers' diff_ids.
    pub fn diff_ids(&self) -> &[Digest] {
        &self.rootfs.diff_ids
    }

    /// The platform this config is for.
    pub fn platform(&self) -> Platform {
        platform_of(&self.os, &self.architecture, self.variant.as_deref())
    }

    /// Serializes the config canonically as `media_type` (OCI or Docker config).
    pub fn to_blob(&self, media_type: &str) -> Result<CanonicalBlob> {
        CanonicalBlob::new(media_type, self)
    }

    /// Converts to `oci-spec`'s type; the Docker-only fields are dropped.
    pub fn to_oci_spec(&self) -> Result<ImageConfiguration> {
        let value = serde_json::to_value(self).map_err(|e| ImageError::json("image config", e))?;
        serde_json::from_value(value).map_err(|e| ImageError::json("image config", e))
    }

    /// Converts from `oci-spec`'s type.
    pub fn from_oci_spec(config: &ImageConfiguration) -> Result<Self> {
        let value =
            serde_json::to_value(config).map_err(|e| ImageError::json("image config", e))?;
        serde_json::from_value(value).map_err(|e| ImageError::json("image config", e))
    }
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A set of strings written as a JSON object whose values are `{}`, as Go's
/// `map[string]struct{}` is.
mod set_as_object {
    use std::collections::{BTreeMap, BTreeSet};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize, Default)]
    struct Empty {}

    pub fn serialize<S: Serializer>(
        set: &Option<BTreeSet<String>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match set {
            Some(set) => s.collect_map(set.iter().map(|k| (k, Empty {}))),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<BTreeSet<String>>, D::Error> {
        let map = Option::<BTreeMap<String, serde::de::IgnoredAny>>::deserialize(d)?;
        Ok(map.map(|m| m.into_keys().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `docker save` (20.10) wrote for an imported image.
    const DOCKER_CONFIG: &str = r#"{"architecture":"amd64","comment":"Imported from -","config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":["/bin/sh"],"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null,"ExposedPorts":{"80/tcp":{}},"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":1000000000}},"container_config":{"Hostname":"","Cmd":null},"created":"2026-11-29T16:36:12.106004304Z","docker_version":"20.10.24+dfsg1","history":[{"created":"2026-11-29T16:36:12.106004304Z","comment":"Imported from -"}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:00a13316799b158e608b0b58b2e7b9595981df919970beb3d716da779e6f8df6"]}}"#;

    #[test]
    fn reads_docker_config_and_keeps_unknown_fields() {
        let c = ImageConfig::from_slice(DOCKER_CONFIG.as_bytes(), "config").unwrap();
        assert_eq!(c.architecture, "amd64");
        assert_eq!(c.diff_ids().len(), 1);
        let cc = c.config.as_ref().unwrap();
        assert_eq!(cc.cmd.as_deref(), Some(&["/bin/sh".to_owned()][..]));
        assert_eq!(cc.env, None);
        assert_eq!(
            cc.exposed_ports.as_ref().unwrap().iter().next().unwrap(),
            "80/tcp"
        );
        assert_eq!(
            cc.healthcheck.as_ref().unwrap().interval,
            Some(1_000_000_000)
        );
        assert_eq!(cc.extra["Hostname"], serde_json::json!(""));
        assert_eq!(c.docker_version.as_deref(), Some("20.10.24+dfsg1"));
        // Round trip through the type keeps every non-null value.
        let blob = c.to_blob(crate::media::DOCKER_CONFIG).unwrap();
        let back = ImageConfig::from_slice(blob.bytes(), "again").unwrap();
        assert_eq!(back, c);
        let v: serde_json::Value = serde_json::from_slice(blob.bytes()).unwrap();
        assert_eq!(
            v["config"]["ExposedPorts"],
            serde_json::json!({"80/tcp": {}})
        );
        assert_eq!(v["config"]["AttachStdin"], serde_json::json!(false));
    }

    #[test]
    fn converts_to_and_from_oci_spec() {
        let mut c = ImageConfig::new("linux", "arm64");
        c.variant = Some("v8".into());
        c.config = Some(ContainerConfig {
            cmd: Some(vec!["/bin/echo".into(), "hi".into()]),
            labels: Some([("a".to_owned(), "b".to_owned())].into()),
            shell: Some(vec!["/bin/sh".into(), "-c".into()]),
            ..Default::default()
        });
        c.rootfs.diff_ids.push(Digest::sha256(b"layer"));
        let oci = c.to_oci_spec().unwrap();
        assert_eq!(oci.architecture().to_string(), "arm64");
        assert_eq!(oci.rootfs().diff_ids().len(), 1);
        let back = ImageConfig::from_oci_spec(&oci).unwrap();
        assert_eq!(
            back.config.as_ref().unwrap().cmd,
            c.config.as_ref().unwrap().cmd
        );
        // SHELL is Docker-only and does not survive the OCI type.
        assert_eq!(back.config.unwrap().shell, None);
        assert_eq!(c.platform().variant().as_deref(), Some("v8"));
    }
}
