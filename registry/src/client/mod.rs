//! The registry client: pull and push whole images between a registry and a content store.
//!
//! ```text
//! Client::new(ClientOptions)            one per process; cheap to clone
//!   ├─ resolve / fetch_manifest          HEAD or GET /v2/<name>/manifests/<ref>
//!   ├─ pull(reference, store, opts)      manifests, configs and layers into an Ingester
//!   └─ push(store, root, reference, opts)
//!                                        blobs (HEAD, mount, upload), then manifests
//! ```
//!
//! ## Pull
//! The manifest is fetched with an `Accept` list of the OCI and Docker manifest and index
//! types, and checked against the digest it was asked by (or against `Docker-Content-Digest`
//! when asked by tag). For an index, every child manifest is fetched, or only the one for
//! [`Platforms::Only`]. Configs and layers are then downloaded in parallel (at most
//! [`ClientOptions::max_concurrent`] at once) straight into the store, which hashes and counts
//! the bytes as they arrive and refuses to commit a blob whose digest or size is wrong. A
//! download that breaks off is resumed with a `Range` request after a backoff. Blobs the store
//! already has are not downloaded, and neither are non-distributable (foreign) layers
//! (`application/vnd.docker.image.rootfs.foreign.diff.tar.gzip`,
//! `application/vnd.oci.image.layer.nondistributable.*`): they live at the URLs their
//! descriptors name, and the manifests that reference them are stored unchanged. Manifests are
//! stored last, children first, so a stored manifest implies that what it references is stored
//! too, foreign layers apart.
//!
//! ## Push
//! Every blob the root reaches is pushed in parallel: `HEAD` first (skipped when the
//! repository has it), then a cross-repository mount when [`PushOptions::mount_from`] names a
//! repository on the same registry, else an upload. Blobs up to
//! [`ClientOptions::single_post_threshold`] (configs, small layers) go in a single
//! `POST ?digest=`, falling back to the next way when the registry opens a session instead;
//! blobs up to [`ClientOptions::monolithic_threshold`] go in one `PUT` after the `POST`; larger
//! ones in `PATCH` chunks of [`ClientOptions::chunk_size`] with `Content-Range`, resuming from
//! the registry's `Range` after a `416` or a broken connection. Bodies stream from the store.
//! Non-distributable (foreign) layers are not pushed, as containerd does by default: registries
//! accept manifests that reference them without the blob. Then manifests are put children
//! first, by digest, and the root last, by tag.
//!
//! ## Auth and transport
//! See [`auth`], [`credentials`] and the transport notes on [`ClientOptions`].
//!
//! ## Copy
//! [`copy`] moves an image between any two of `docker://`, `oci:`, `oci-archive:` and
//! `docker-archive:` locations through a content store, as `skopeo copy` does.

pub mod auth;
mod blobio;
pub mod copy;
pub mod credentials;
pub mod error;
pub mod progress;
mod pull;
mod push;
mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_layerstore::image::Platform;

pub use copy::{CopyOptions, CopyResult, ImageLocation};
pub use credentials::{Credential, DockerConfig};
pub use error::{ClientError, ErrorCode, RegistryError, Result};
pub use progress::{BlobOutcome, Counters, NoProgress, Progress, ProgressEvent, UploadMethod};
pub use pull::{FetchedManifest, PulledImage};
pub use push::PushedImage;

use crate::client::progress::no_progress;

/// The manifest and index media types the client accepts, most preferred first.
pub const MANIFEST_ACCEPT: &[&str] = &[
    berth_layerstore::media::OCI_INDEX,
    berth_layerstore::media::OCI_MANIFEST,
    berth_layerstore::media::DOCKER_MANIFEST_LIST,
    berth_layerstore::media::DOCKER_MANIFEST,
];

/// How transient failures are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    /// The wait before the second try; it doubles for each further one.
    pub initial_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// One try, no retry.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait after failed try number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Settings of a [`Client`].
///
/// Transport: registries on loopback addresses are reached over plain HTTP; hosts in
/// `insecure_registries` (`host` or `host:port`) over HTTPS without certificate checks, or
/// plain HTTP when HTTPS fails; every other host over HTTPS with certificates checked against
/// the bundled web roots and the system's.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Hosts that may be reached without TLS checks or over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Credentials by registry host, used before Docker's configuration.
    pub credentials: Vec<(String, Credential)>,
    /// Whether to read Docker's `config.json` (and run its credential helpers).
    pub use_docker_config: bool,
    /// The `config.json` to read; `None` for `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
    /// Blobs moved at once in a pull or push.
    pub max_concurrent: usize,
    /// Blobs up to this size are uploaded in one request after the `POST` that opens the
    /// session (`POST` then `PUT`).
    pub monolithic_threshold: u64,
    /// Blobs up to this size (configs, small layers) are first offered in a single request,
    /// `POST /v2/<name>/blobs/uploads/?digest=` with the blob as its body. A registry that
    /// answers with a session instead (`202`, as distribution does) gets the blob again by
    /// `PUT`, and later blobs the usual way. 0 turns single requests off; they are never used
    /// above `monolithic_threshold`.
    pub single_post_threshold: u64,
    /// The size of each `PATCH` of a chunked upload (raised to the registry's
    /// `OCI-Chunk-Min-Length`).
    pub chunk_size: u64,
    /// The largest manifest accepted.
    pub max_manifest_size: u64,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    /// How long a response may stay silent.
    pub read_timeout: Duration,
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            credentials: Vec::new(),
            use_docker_config: true,
            docker_config: None,
            max_concurrent: 4,
            monolithic_threshold: 16 * 1024 * 1024,
            single_post_threshold: 1024 * 1024,
            chunk_size: 32 * 1024 * 1024,
            max_manifest_size: 8 * 1024 * 1024,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Which manifests of an index to pull or copy.
#[derive(Debug, Clone, Default)]
pub enum Platforms {
    /// Every manifest; the index is kept.
    #[default]
    All,
    /// Only the manifest that best fits the platform; it becomes the root.
    Only(Platform),
}

/// Options of [`Client::pull`].
#[derive(Clone)]
pub struct PullOptions {
    pub platforms: Platforms,
    pub progress: Arc<dyn Progress>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platforms: Platforms::All,
            progress: no_progress(),
        }
    }
}

/// Options of [`Client::push`].
#[derive(Clone)]
pub struct PushOptions {
    /// Repositories of the destination registry that may hold the blobs already; each blob
    /// is mounted from the first that has it. Ignored for other registries.
    pub mount_from: Vec<crate::reference::Reference>,
    pub progress: Arc<dyn Progress>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            mount_from: Vec::new(),
            progress: no_progress(),
        }
    }
}

/// A registry client. Clones share connections, token caches and credentials.
#[derive(Clone)]
pub struct Client {
    inner: Arc<transport::Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("insecure_registries", &self.inner.opts.insecure_registries)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with `options`. Nothing is contacted until the first request.
    pub fn new(options: ClientOptions) -> Result<Client> {
        Ok(Client {
            inner: Arc::new(transport::Inner::new(options)?),
        })
    }

    /// The options the client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }
}
