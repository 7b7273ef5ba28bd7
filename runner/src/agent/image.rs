//! Images for task containers: found in the local image store (the one `berth build` and
//! `berth pull` fill), pulled with the registry client when missing, and extracted into the
//! snapshot store once per layer, so that a container's root filesystem is an overlay of
//! snapshots that every container of the same image shares.
//!
//! [`Images::prepare`] does all three for one image reference and gives a [`PreparedImage`]:
//! the image's config (for its ENTRYPOINT, CMD, ENV, WORKDIR, USER and STOPSIGNAL), the
//! snapshot directories to use as overlay lower directories, and a lease that keeps them from
//! being pruned for as long as the task holds it.
//!
//! A reference is looked up as `docker` looks it up (a name, short or full, `name@digest`, or
//! an image id; `busybox` is `docker.io/library/busybox:latest`). A missing image is pulled for
//! the host's platform into a staging area of the store and committed under its normalized
//! name; registries on loopback addresses are reached over plain HTTP, as Docker reaches them.
//! Two tasks that need the same missing image at once pull it once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use berth_layerstore::Digest;
use berth_layerstore::content::Provider;
use berth_layerstore::image::store::{ImageStore, StoreError};
use berth_layerstore::image::{ImageConfig, Manifest, descriptor_digest, platform};
use berth_layerstore::snapshot::{Lease, SnapshotError, SnapshotStore};
use berth_registry::client::{
    Client, ClientError, ClientOptions, Credential, Platforms, PullOptions,
};
use berth_registry::reference::Reference;
use tokio::runtime::Handle;

/// Where the snapshots of a store's layers live: `<store>/snapshots`, as `berth build` keeps
/// them.
pub fn snapshot_root(store_root: &Path) -> PathBuf {
    store_root.join("snapshots")
}

/// Why an image could not be made ready for a container. Each names the image as the task
/// definition gives it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The image store or snapshot store cannot be opened.
    #[error("cannot open the image store at {}: {source}", root.display())]
    Open {
        /// The store's root.
        root: PathBuf,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The registry client cannot be made (its TLS or credentials configuration).
    #[error("cannot make the registry client: {0}")]
    Client(#[source] Box<ClientError>),

    /// The reference is not an image name.
    #[error("invalid image reference {image:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        image: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The image is not in the store and pulling it failed.
    #[error("pull image {image}: {source}")]
    Pull {
        /// The normalized reference.
        image: String,
        /// The registry client's error.
        #[source]
        source: Box<ClientError>,
    },

    /// The local store failed while looking the image up or landing a pull.
    #[error("image {image}: {source}")]
    Store {
        /// The reference as given.
        image: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },

    /// The image's manifest or config cannot be read or does not fit this host.
    #[error("image {image}: {source}")]
    Image {
        /// The reference as given.
        image: String,
        /// The image model's error.
        #[source]
        source: berth_layerstore::image::ImageError,
    },

    /// The config lists a different number of layers than the manifest.
    #[error(
        "image {image}: the manifest has {layers} layers but the config lists {diff_ids} diff_ids"
    )]
    LayerMismatch {
        /// The reference as given.
        image: String,
        /// Layers in the manifest.
        layers: usize,
        /// `rootfs.diff_ids` in the config.
        diff_ids: usize,
    },

    /// A layer cannot be read from the store.
    #[error("image {image}: layer {digest}: {source}")]
    Layer {
        /// The reference as given.
        image: String,
        /// The layer's digest.
        digest: Digest,
        /// The content store's error.
        #[source]
        source: berth_layerstore::content::ContentError,
    },

    /// A layer cannot be extracted into the snapshot store, or its snapshots leased.
    #[error("image {image}: {source}")]
    Snapshot {
        /// The reference as given.
        image: String,
        /// The snapshot store's error.
        #[source]
        source: SnapshotError,
    },
}

/// An image ready to be the root of containers.
#[derive(Debug)]
pub struct PreparedImage {
    /// The store's name for it (`docker.io/library/busybox:latest`), or the reference as
    /// given when it named an id.
    pub name: String,
    /// The digest of the image's manifest (for an index, of the host platform's manifest).
    pub manifest_digest: Digest,
    /// Docker's image id: the config's digest.
    pub image_id: Digest,
    /// The image's config.
    pub config: ImageConfig,
    /// The snapshots of its layers, top first: overlay lower directories as they are.
    pub lowerdirs: Vec<PathBuf>,
    /// Whether it was pulled for this call.
    pub pulled: bool,
    _lease: Lease,
}

/// The local image store and snapshot store, and a registry client for what they lack.
/// Cheap to clone.
#[derive(Clone)]
pub struct Images {
    inner: Arc<Inner>,
}

struct Inner {
    store: ImageStore,
    snapshots: SnapshotStore,
    client_options: ClientOptions,
    client: OnceLock<Client>,
    /// One lock per normalized name being pulled.
    pulls: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Images")
            .field("store", &self.inner.store.root())
            .field("snapshots", &self.inner.snapshots.root())
            .finish_non_exhaustive()
    }
}

impl Images {
    /// Opens the image store at `store_root` (creating it if needed) and its snapshot store
    /// ([`snapshot_root`]), with the registry client's default options (Docker's credentials
    /// from `~/.docker/config.json`, plain HTTP for loopback registries).
    pub fn open(store_root: &Path) -> Result<Images, ImageError> {
        Images::with_client_options(store_root, ClientOptions::default())
    }

    /// As [`Images::open`], with the registry client's options given.
    pub fn with_client_options(
        store_root: &Path,
        client_options: ClientOptions,
    ) -> Result<Images, ImageError> {
        let open_error = |source: Box<dyn std::error::Error + Send + Sync>| ImageError::Open {
            root: store_root.to_owned(),
            source,
        };
        let store = ImageStore::open(store_root).map_err(|e| open_error(Box::new(e)))?;
        let snapshots = SnapshotStore::open(snapshot_root(store.root()))
            .map_err(|e| open_error(Box::new(e)))?;
        Ok(Images {
            inner: Arc::new(Inner {
                store,
                snapshots,
                client_options,
                client: OnceLock::new(),
                pulls: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The image store.
    pub fn store(&self) -> &ImageStore {
        &self.inner.store
    }

    /// The snapshot store.
    pub fn snapshots(&self) -> &SnapshotStore {
        &self.inner.snapshots
    }

    /// Finds `image` in the store, pulling it when missing (on `runtime`, which must not be
    /// the calling thread's), extracts the snapshots it lacks and leases them all. A pull uses
    /// `credentials` (registry host, credential) before the client's own.
    pub fn prepare(
        &self,
        image: &str,
        credentials: &[(String, Credential)],
        runtime: &Handle,
    ) -> Result<PreparedImage, ImageError> {
        let normalized = normalize(image);
        let (resolved, pulled) = match self.lookup(image)? {
            Some(found) => (found, false),
            None => {
                let Some(name) = normalized else {
                    return Err(ImageError::InvalidReference {
                        image: image.to_owned(),
                        reason: "it is neither a local image nor a valid reference".to_owned(),
                    });
                };
                (self.pull(image, &name, credentials, runtime)?, true)
            }
        };
        self.ready(image, resolved, pulled)
    }

    /// The store's record for `image`, if it has one.
    fn lookup(
        &self,
        image: &str,
    ) -> Result<Option<berth_layerstore::image::store::Resolved>, ImageError> {
        match self.inner.store.resolve(image, &normalize) {
            Ok(resolved) => Ok(Some(resolved)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(source) => Err(ImageError::Store {
                image: image.to_owned(),
                source,
            }),
        }
    }

    /// Pulls `name` (the normalized form of `image`) and returns the store's new record. A pull
    /// of the same name by another task is waited for and its result used.
    fn pull(
        &self,
        image: &str,
        name: &str,
        credentials: &[(String, Credential)],
        runtime: &Handle,
    ) -> Result<berth_layerstore::image::store::Resolved, ImageError> {
        let gate = {
            let mut pulls = self
                .inner
                .pulls
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            pulls.entry(name.to_owned()).or_default().clone()
        };
        let _pulling = gate.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = self.lookup(image)? {
            return Ok(found);
        }
        let reference: Reference = name.parse().map_err(|e| ImageError::InvalidReference {
            image: image.to_owned(),
            reason: format!("{e}"),
        })?;
        let client = self.client(credentials)?;
        let store_error = |source| ImageError::Store {
            image: image.to_owned(),
            source,
        };
        let staging = self.inner.store.staging().map_err(store_error)?;
        let options = PullOptions {
            platforms: Platforms::Only(platform::host()),
            ..PullOptions::default()
        };
        tracing::info!(image = name, "pulling");
        let pulled = runtime
            .block_on(client.pull(&reference, &staging, &options))
            .map_err(|source| ImageError::Pull {
                image: name.to_owned(),
                source: Box::new(source),
            })?;
        self.inner
            .store
            .commit(&staging, &[(Some(name.to_owned()), pulled.root.clone())])
            .map_err(store_error)?;
        drop(staging);
        self.lookup(image)?.ok_or_else(|| {
            store_error(StoreError::NotFound(format!(
                "{name} (just pulled, then removed)"
            )))
        })
    }

    /// The shared client, or one of its own when there are `credentials` to add.
    fn client(&self, credentials: &[(String, Credential)]) -> Result<Client, ImageError> {
        if !credentials.is_empty() {
            let mut options = self.inner.client_options.clone();
            options
                .credentials
                .splice(0..0, credentials.iter().cloned());
            return Client::new(options).map_err(|e| ImageError::Client(Box::new(e)));
        }
        if let Some(client) = self.inner.client.get() {
            return Ok(client.clone());
        }
        let client = Client::new(self.inner.client_options.clone())
            .map_err(|e| ImageError::Client(Box::new(e)))?;
        Ok(self.inner.client.get_or_init(|| client).clone())
    }

    /// Reads the manifest and config of a store record, extracts the snapshots and leases them.
    fn ready(
        &self,
        image: &str,
        resolved: berth_layerstore::image::store::Resolved,
        pulled: bool,
    ) -> Result<PreparedImage, ImageError> {
        let image_error = |source| ImageError::Image {
            image: image.to_owned(),
            source,
        };
        let content = self.inner.store.content();
        let mut desc = resolved.record.target.clone();
        let (mut manifest, _) = Manifest::read(content, &desc).map_err(image_error)?;
        if manifest.is_index() {
            desc = platform::select_or_err(&manifest.manifests(), &platform::host(), image)
                .map_err(image_error)?
                .clone();
            manifest = Manifest::read(content, &desc).map_err(image_error)?.0;
        }
        let manifest_digest = descriptor_digest(&desc).map_err(image_error)?;
        let config_desc = manifest
            .config()
            .ok_or_else(|| ImageError::InvalidReference {
                image: image.to_owned(),
                reason: format!("manifest {manifest_digest} has no config"),
            })?;
        let image_id = descriptor_digest(&config_desc).map_err(image_error)?;
        let bytes = content
            .read_all(&image_id)
            .map_err(|source| ImageError::Layer {
                image: image.to_owned(),
                digest: image_id.clone(),
                source,
            })?;
        let config =
            ImageConfig::from_slice(&bytes, &format!("config {image_id}")).map_err(image_error)?;
        let layers = manifest.layers();
        let diff_ids = config.diff_ids().to_vec();
        if layers.len() != diff_ids.len() {
            return Err(ImageError::LayerMismatch {
                image: image.to_owned(),
                layers: layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let snapshots = &self.inner.snapshots;
        let snapshot_error = |source| ImageError::Snapshot {
            image: image.to_owned(),
            source,
        };
        // The lease comes first, so that a prune between an extraction and the lease cannot
        // take a snapshot away.
        let lease = snapshots.lease(&diff_ids).map_err(snapshot_error)?;
        for (layer, diff_id) in layers.iter().zip(&diff_ids) {
            if snapshots.exists(diff_id) {
                continue;
            }
            let digest = descriptor_digest(layer).map_err(image_error)?;
            let reader = content
                .read(&digest, None)
                .map_err(|source| ImageError::Layer {
                    image: image.to_owned(),
                    digest: digest.clone(),
                    source,
                })?;
            snapshots.extract(diff_id, reader).map_err(snapshot_error)?;
        }
        Ok(PreparedImage {
            name: resolved
                .record
                .name
                .clone()
                .unwrap_or_else(|| image.to_owned()),
            manifest_digest,
            image_id,
            config,
            lowerdirs: lowerdirs(snapshots, &diff_ids),
            pulled,
            _lease: lease,
        })
    }
}

/// The snapshot directories of `diff_ids` (bottom to top) as overlay lower directories, top
/// first; a layer listed twice is used once, at its topmost place (overlayfs refuses a
/// directory given twice, and the lower occurrence changes nothing the upper one does not).
fn lowerdirs(snapshots: &SnapshotStore, diff_ids: &[Digest]) -> Vec<PathBuf> {
    let mut seen = Vec::new();
    let mut dirs = Vec::new();
    for diff_id in diff_ids.iter().rev() {
        if !seen.contains(&diff_id) {
            seen.push(diff_id);
            dirs.push(snapshots.path(diff_id));
        }
    }
    dirs
}

/// The store's name for a reference: `registry/repository:tag`, or `@digest` when pinned
/// (`busybox` is `docker.io/library/busybox:latest`); `None` when `s` is not a reference.
pub fn normalize(s: &str) -> Option<String> {
    let reference: Reference = s.parse().ok()?;
    Some(match (&reference.digest, reference.tag_or_latest()) {
        (Some(d), _) => format!("{}/{}@{d}", reference.registry, reference.repository),
        (None, Some(tag)) => format!("{}/{}:{tag}", reference.registry, reference.repository),
        (None, None) => format!("{}/{}:latest", reference.registry, reference.repository),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_as_docker_does() {
        assert_eq!(
            normalize("busybox").as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(
            normalize("127.0.0.1:5000/app:1").as_deref(),
            Some("127.0.0.1:5000/app:1")
        );
        assert_eq!(normalize("Not A Name"), None);
    }

    #[test]
    fn lowerdirs_are_top_first_without_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotStore::open(dir.path()).unwrap();
        let a = Digest::sha256(b"a");
        let b = Digest::sha256(b"b");
        let dirs = lowerdirs(&snapshots, &[a.clone(), b.clone(), a.clone()]);
        assert_eq!(dirs, vec![snapshots.path(&a), snapshots.path(&b)]);
    }
}
