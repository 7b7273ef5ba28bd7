//! The local image store: a content store plus an index of names, as `docker images` shows them.
//!
//! ## Layout
//! ```text
//! <root>/content/                 an FsStore: blobs/<alg>/<2 hex>/<hex>, ingest/
//! <root>/images/index.json        the reference index (below)
//! <root>/images/lock              flock(2) taken by every change of the index
//! <root>/images/staging/<uuid>/   content being imported (an FsStore of its own) and its lock
//! <root>/images/pins/<set>/<name>.json  blobs kept without an image (the build cache's records)
//! ```
//!
//! The index maps a name to the root of an image, a manifest or an index, with the image's id
//! and the time the name was recorded:
//!
//! ```json
//! {"version":1,"images":[{"name":"docker.io/library/busybox:latest","id":"sha256:…",
//!   "target":{"mediaType":"…","digest":"sha256:…","size":527},"created":"2026-01-02T03:04:05Z"}]}
//! ```
//!
//! Names are opaque, already normalized strings (`docker.io/library/busybox:latest`,
//! `reg.example/app@sha256:…`): this crate knows nothing of registries, so the caller normalizes
//! them. A record without a name is an untagged image (what `docker images` shows as
//! `<none>`): an image loaded from an archive without a name, or one whose last name was given
//! to another image, kept as Docker keeps a dangling image. The id is Docker's image id: the
//! config's digest for an image manifest, the index's own digest for an index.
//!
//! ## Imports and garbage collection
//! Content arrives through a [`Staging`] area: a store of its own under `images/staging/`,
//! which reads through to the main store, so that blobs already there are not fetched again.
//! [`ImageStore::commit`] then, under the lock, checks that everything the new roots reach is
//! present (every digest was verified by the store it was written to), moves the staged blobs
//! into the main store by `rename(2)` and records the names. A failed import leaves nothing in
//! the main store, and the index is written only at the end. [`ImageStore::gc`] takes the same
//! lock, marks every blob reachable from a record and deletes the rest, so it can never delete
//! a blob between its arrival and its record. Blobs written straight into
//! [`ImageStore::content`] are unprotected until [`ImageStore::put`] records them; prefer a
//! staging area.
//!
//! ## Pins
//! A pin keeps blobs without naming an image: [`ImageStore::pin`] lands them from a staging
//! area like a commit does and writes `{"blobs":[descriptors],"data":…}` under a set and a
//! name; [`ImageStore::gc`] treats every pin's blobs as roots. The build cache records each
//! step's result as a pin, so that `rmi` leaves the layers a later build can reuse, as
//! Docker's build cache outlives the images built from it. A pin file that does not parse
//! protects nothing: gc ignores it, and the reader that finds it gets an error to warn about.
//!
//! ## Concurrency and crashes
//! Every change of the index is a read-modify-write under an exclusive `flock(2)` on
//! `images/lock`, opened anew for each change, so threads of one process exclude each other as
//! processes do and no update is lost. The index is written to a temporary file, fsynced and
//! renamed over the old one, then the directory is fsynced: a reader sees the old index or the
//! new one, never a mix, and readers take no lock. A staging area holds a lock of its own while
//! it lives; [`ImageStore::gc`] removes the ones whose lock it can take (left by a crashed
//! process).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};

use crate::content::fs::FsStore;
use crate::content::{
    Adopter, ContentError, ContentWriter, Info, Ingester, Manager, Provider, Verification,
};
use crate::digest::{Algorithm, Digest};
use crate::image::manifest::{Manifest, is_manifest_media_type};
use crate::image::{ImageError, descriptor_digest, reachable};

/// The version of `index.json` this code reads and writes.
pub const INDEX_VERSION: u32 = 1;
/// Name of the content store's directory under the root.
pub const CONTENT_DIR: &str = "content";
/// Name of the directory that holds the index, its lock and staging areas.
pub const IMAGES_DIR: &str = "images";
/// Name of the index file.
pub const INDEX_FILE: &str = "index.json";
/// Name of the directory of pins, under [`IMAGES_DIR`].
pub const PINS_DIR: &str = "pins";

/// Ingests left in the content store by a crashed writer are removed by [`ImageStore::gc`]
/// once they are this old.
const STALE_INGEST: Duration = Duration::from_secs(24 * 60 * 60);

/// Errors of the image store. Each names the image, name or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image store: {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "image index {} is corrupt ({source}); move it aside to start with an empty index (the blobs under content/ are kept)",
        path.display()
    )]
    CorruptIndex {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("image index {}: version {version} is not supported (expected {INDEX_VERSION})", path.display())]
    IndexVersion { path: PathBuf, version: u32 },
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("{query:?} matches several images: {}", ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Ambiguous { query: String, ids: Vec<Digest> },
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("{what}: not an image: media type {media_type:?} is neither a manifest nor an index")]
    NotAnImage { what: String, media_type: String },
    #[error("invalid pin {set}/{name}: use 1 to 128 of a-z, 0-9, '.', '_' and '-'")]
    InvalidPin { set: String, name: String },
    #[error("pin {}: {source}", path.display())]
    CorruptPin {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Content(#[from] ContentError),
}

impl StoreError {
    fn io(path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result of this module.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One entry of the index: a name (or none, for an untagged image) and the image it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The normalized name, or `None` for an untagged image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Docker's image id: the config digest of a manifest, the digest of an index.
    pub id: Digest,
    /// The image's root: a manifest or an index.
    pub target: Descriptor,
    /// When the name was recorded (RFC 3339, UTC).
    pub created: String,
}

impl ImageRecord {
    /// The digest of the root manifest or index.
    pub fn digest(&self) -> Result<Digest> {
        Ok(descriptor_digest(&self.target)?)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    images: Vec<ImageRecord>,
}

/// How [`ImageStore::resolve`] found an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// By its name, exactly or once normalized.
    Name,
    /// By `name@digest`: a record of that repository whose root has that digest.
    RepoDigest,
    /// By its id, whole or a prefix, or by the root's whole digest.
    Id,
}

/// What [`ImageStore::resolve`] found.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub record: ImageRecord,
    pub matched_by: MatchedBy,
}

/// What [`ImageStore::remove`] did.
#[derive(Debug, Clone)]
pub struct Removed {
    /// The record removed.
    pub record: ImageRecord,
    /// Whether no record names the same root any more, so its blobs may now be collected.
    pub unreferenced: bool,
}

/// What [`ImageStore::gc`] removed.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Blobs deleted, with their sizes.
    pub removed: Vec<Info>,
    /// Bytes those blobs held.
    pub bytes: u64,
    /// Staging areas of crashed processes removed.
    pub stale_staging: usize,
}

/// The local image store. Cheap to clone; any number of instances, in any number of
/// processes, may use one root at once. See the module docs.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    content: FsStore,
    dir: PathBuf,
}

impl ImageStore {
    /// Opens the store at `root`, creating its directories as needed. The index is not read
    /// until it is needed.
    pub fn open(root: impl Into<PathBuf>) -> Result<ImageStore> {
        let root = root.into();
        let content = FsStore::open(root.join(CONTENT_DIR))?;
        let dir = root.join(IMAGES_DIR);
        fs::create_dir_all(dir.join("staging")).map_err(|e| StoreError::io(&dir, e))?;
        Ok(ImageStore { root, content, dir })
    }

    /// The directory the store was opened at.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content store that holds every blob.
    pub fn content(&self) -> &FsStore {
        &self.content
    }

    /// The index file's path.
    pub fn index_path(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }

    /// Every record, named ones first in name order, then untagged ones in id order.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.read_index()?.images)
    }

    /// The record named `name` (exactly), if any.
    pub fn get(&self, name: &str) -> Result<Option<ImageRecord>> {
        Ok(self
            .read_index()?
            .images
            .into_iter()
            .find(|r| r.name.as_deref() == Some(name)))
    }

    /// Names `target` (already in the content store with everything it reaches) `name`,
    /// replacing what the name pointed to. Returns the new record and the one it replaced.
    pub fn put(
        &self,
        name: &str,
        target: &Descriptor,
    ) -> Result<(ImageRecord, Option<ImageRecord>)> {
        let _lock = self.lock()?;
        reachable(&self.content, std::slice::from_ref(target))?;
        let record = self.new_record(&self.content, Some(name), target)?;
        let mut index = self.read_index()?;
        let previous = insert(&mut index, record.clone());
        self.write_index(index)?;
        Ok((record, previous))
    }

    /// Gives the image named `src` (exactly) the name `dst` too.
    pub fn tag(&self, src: &str, dst: &str) -> Result<ImageRecord> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let source = index
            .images
            .iter()
            .find(|r| r.name.as_deref() == Some(src))
            .cloned()
            .ok_or_else(|| StoreError::NotFound(src.to_owned()))?;
        check_name(dst)?;
        let record = ImageRecord {
            name: Some(dst.to_owned()),
            created: now_rfc3339(),
            ..source
        };
        insert(&mut index, record.clone());
        self.write_index(index)?;
        Ok(record)
    }

    /// Removes the name `name`. The blobs stay until [`ImageStore::gc`].
    pub fn remove(&self, name: &str) -> Result<Removed> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let pos = index
            .images
            .iter()
            .position(|r| r.name.as_deref() == Some(name))
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        let record = index.images.remove(pos);
        let unreferenced = !index
            .images
            .iter()
            .any(|r| r.target.digest() == record.target.digest());
        self.write_index(index)?;
        Ok(Removed {
            record,
            unreferenced,
        })
    }

    /// Removes every record whose image id is `id`, named or not.
    pub fn remove_id(&self, id: &Digest) -> Result<Vec<Removed>> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let (gone, kept): (Vec<ImageRecord>, Vec<ImageRecord>) =
            index.images.into_iter().partition(|r| &r.id == id);
        if gone.is_empty() {
            return Err(StoreError::NotFound(id.to_string()));
        }
        index.images = kept;
        let removed = gone
            .into_iter()
            .map(|record| {
                let unreferenced = !index
                    .images
                    .iter()
                    .any(|r| r.target.digest() == record.target.digest());
                Removed {
                    record,
                    unreferenced,
                }
            })
            .collect();
        self.write_index(index)?;
        Ok(removed)
    }

    /// Finds an image as `docker` does, trying in turn:
    /// 1. a whole id or root digest (`sha256:<hex>`);
    /// 2. `query` as a name, exactly, then as `normalize` makes it (`busybox` ->
    ///    `docker.io/library/busybox:latest`; `None` when it is not a valid name);
    /// 3. `name@digest`: a record of that repository whose root has that digest;
    /// 4. a prefix of an id (`sha256:<hex prefix>` or bare hex), which must be unambiguous.
    pub fn resolve(
        &self,
        query: &str,
        normalize: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Resolved> {
        let images = self.read_index()?.images;
        let found = |record: &ImageRecord, matched_by| {
            Ok(Resolved {
                record: record.clone(),
                matched_by,
            })
        };
        if let Ok(digest) = query.parse::<Digest>() {
            let by_id = images.iter().find(|r| r.id == digest);
            let by_root = || {
                images
                    .iter()
                    .find(|r| r.target.digest().to_string() == digest.to_string())
            };
            if let Some(record) = by_id.or_else(by_root) {
                return found(record, MatchedBy::Id);
            }
        }
        let normalized = normalize(query);
        for name in [Some(query), normalized.as_deref()].into_iter().flatten() {
            if let Some(record) = images.iter().find(|r| r.name.as_deref() == Some(name)) {
                return found(record, MatchedBy::Name);
            }
        }
        if let Some((repo, digest)) = normalized.as_deref().and_then(|n| n.split_once('@')) {
            let hit = images.iter().find(|r| {
                r.target.digest().to_string() == digest
                    && r.name.as_deref().is_some_and(|n| repository_of(n) == repo)
            });
            if let Some(record) = hit {
                return found(record, MatchedBy::RepoDigest);
            }
        }
        if let Some(prefix) = id_prefix(query) {
            let mut ids: Vec<&ImageRecord> = Vec::new();
            for r in &images {
                if r.id.hex().starts_with(prefix) && !ids.iter().any(|x| x.id == r.id) {
                    ids.push(r);
                }
            }
            match ids.as_slice() {
                [] => {}
                [one] => {
                    // Prefer a named record of that image.
                    let record = images
                        .iter()
                        .find(|r| r.id == one.id && r.name.is_some())
                        .unwrap_or(one);
                    return found(record, MatchedBy::Id);
                }
                many => {
                    return Err(StoreError::Ambiguous {
                        query: query.to_owned(),
                        ids: many.iter().map(|r| r.id.clone()).collect(),
                    });
                }
            }
        }
        Err(StoreError::NotFound(query.to_owned()))
    }

    /// A new staging area for an import. See the module docs.
    pub fn staging(&self) -> Result<Staging> {
        let dir = self
            .dir
            .join("staging")
            .join(uuid::Uuid::new_v4().hyphenated().to_string());
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let lock = open_lock(&dir.join("lock"))?;
        flock(&lock, true).map_err(|e| StoreError::io(dir.join("lock"), e))?;
        let store = match FsStore::open(dir.join(CONTENT_DIR)) {
            Ok(store) => store,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e.into());
            }
        };
        Ok(Staging {
            store,
            main: self.content.clone(),
            dir,
            _lock: lock,
        })
    }

    /// Lands what `staging` holds and records `images` (name, or `None` for untagged, and
    /// root), all or nothing: everything the roots reach must be in the staging area or the
    /// store, every manifest must parse, and only then are blobs moved and the index written.
    /// Blobs of the staging area that no root reaches are dropped with it. Returns the new
    /// records, in the order given.
    pub fn commit(
        &self,
        staging: &Staging,
        images: &[(Option<String>, Descriptor)],
    ) -> Result<Vec<ImageRecord>> {
        for (name, _) in images {
            if let Some(name) = name {
                check_name(name)?;
            }
        }
        let _lock = self.lock()?;
        let roots: Vec<Descriptor> = images.iter().map(|(_, d)| d.clone()).collect();
        let all = reachable(staging, &roots)?;
        let mut records = Vec::with_capacity(images.len());
        for (name, target) in images {
            records.push(self.new_record(staging, name.as_deref(), target)?);
        }
        for desc in &all {
            let digest = descriptor_digest(desc)?;
            if self.content.exists(&digest)? {
                continue;
            }
            let path = staging.store.blob_path(&digest);
            self.content
                .adopt(&path, &digest, desc.size(), Verification::CallerHashed)?;
        }
        let mut index = self.read_index()?;
        for record in &records {
            insert(&mut index, record.clone());
        }
        self.write_index(index)?;
        Ok(records)
    }

    /// Deletes every blob that no record reaches (manifests, indexes, configs, layers), the
    /// staging areas of crashed processes, and day-old ingests. Fails, deleting nothing, when
    /// a recorded image cannot be walked (a missing or damaged blob).
    pub fn gc(&self) -> Result<GcReport> {
        let _lock = self.lock()?;
        let mut report = GcReport::default();
        let images = self.read_index()?.images;
        let mut roots: Vec<Descriptor> = images.iter().map(|r| r.target.clone()).collect();
        roots.extend(self.pinned_blobs()?);
        let live: HashSet<Digest> = reachable(&self.content, &roots)?
            .iter()
            .map(descriptor_digest)
            .collect::<Result<_, _>>()?;
        let mut dead = Vec::new();
        self.content.walk(&mut |info| {
            if !live.contains(&info.digest) {
                dead.push(info);
            }
            Ok(())
        })?;
        for info in dead {
            match self.content.delete(&info.digest) {
                Ok(()) | Err(ContentError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            tracing::debug!(digest = %info.digest, size = info.size, "removed unreferenced blob");
            report.bytes += info.size;
            report.removed.push(info);
        }
        report.stale_staging = self.remove_stale_staging()?;
        self.content.prune_ingests(STALE_INGEST)?;
        Ok(report)
    }

    /// Lands `blobs` (from `staging`, or already in the store) and records them with `data`
    /// as the pin `set`/`name`, replacing a pin of that name. Fails, pinning nothing, when a
    /// blob is in neither place. See the module docs.
    pub fn pin(
        &self,
        staging: &Staging,
        set: &str,
        name: &str,
        blobs: &[Descriptor],
        data: &serde_json::Value,
    ) -> Result<()> {
        let path = self.pin_path(set, name)?;
        let _lock = self.lock()?;
        for desc in blobs {
            let digest = descriptor_digest(desc)?;
            if self.content.exists(&digest)? {
                continue;
            }
            let staged = staging.store.blob_path(&digest);
            if !staged.exists() {
                return Err(ContentError::NotFound(digest).into());
            }
            self.content
                .adopt(&staged, &digest, desc.size(), Verification::CallerHashed)?;
        }
        let body = serde_json::to_vec(&serde_json::json!({ "blobs": blobs, "data": data }))
            .map_err(|e| StoreError::io(&path, io::Error::other(e)))?;
        let dir = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        write_atomically(&path, &body)
    }

    /// The data of the pin `set`/`name`, and its blobs; `None` when there is no such pin.
    pub fn read_pin(
        &self,
        set: &str,
        name: &str,
    ) -> Result<Option<(serde_json::Value, Vec<Descriptor>)>> {
        let path = self.pin_path(set, name)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let pin: PinFile = serde_json::from_slice(&bytes)
            .map_err(|source| StoreError::CorruptPin { path, source })?;
        Ok(Some((pin.data, pin.blobs)))
    }

    /// Removes the pin `set`/`name`; its blobs go at the next gc unless something else keeps
    /// them. Whether there was such a pin.
    pub fn unpin(&self, set: &str, name: &str) -> Result<bool> {
        let path = self.pin_path(set, name)?;
        let _lock = self.lock()?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// The names of the pins of `set`, sorted.
    pub fn pins(&self, set: &str) -> Result<Vec<String>> {
        check_pin_part(set, "x")?;
        let dir = self.dir.join(PINS_DIR).join(set);
        let mut names = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(StoreError::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            if let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn pin_path(&self, set: &str, name: &str) -> Result<PathBuf> {
        check_pin_part(set, name)?;
        Ok(self
            .dir
            .join(PINS_DIR)
            .join(set)
            .join(format!("{name}.json")))
    }

    /// The blobs of every pin, for gc (called under the lock). Unreadable pins keep nothing.
    fn pinned_blobs(&self) -> Result<Vec<Descriptor>> {
        let root = self.dir.join(PINS_DIR);
        let mut blobs = Vec::new();
        let sets = match fs::read_dir(&root) {
            Ok(sets) => sets,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(blobs),
            Err(e) => return Err(StoreError::io(&root, e)),
        };
        for set in sets {
            let set = set.map_err(|e| StoreError::io(&root, e))?.path();
            let Ok(pins) = fs::read_dir(&set) else {
                continue;
            };
            for pin in pins.flatten() {
                let path = pin.path();
                let parsed = fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<PinFile>(&b).map_err(|e| e.to_string()));
                match parsed {
                    Ok(pin) => blobs.extend(pin.blobs),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable pin")
                    }
                }
            }
        }
        Ok(blobs)
    }

    /// The diff_ids of every layer of every image the store names, read from their configs:
    /// what a snapshot store serving this image store keeps when it is pruned
    /// ([`SnapshotStore::prune`](crate::snapshot::SnapshotStore::prune)). An image committed
    /// after the index was read may lose its snapshots to such a prune once its build has
    /// released them; snapshots are a cache of the layers, so that only costs an extraction.
    pub fn live_diff_ids(&self) -> Result<HashSet<Digest>> {
        let roots: Vec<Descriptor> = {
            let _lock = self.lock()?;
            self.read_index()?
                .images
                .iter()
                .map(|r| r.target.clone())
                .collect()
        };
        let mut ids = HashSet::new();
        for desc in reachable(&self.content, &roots)? {
            let media_type = desc.media_type().to_string();
            if media_type != crate::media::OCI_CONFIG && media_type != crate::media::DOCKER_CONFIG {
                continue;
            }
            let digest = descriptor_digest(&desc)?;
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut self.content.read(&digest, None)?, &mut bytes)
                .map_err(|e| StoreError::io(self.content.root(), e))?;
            let config = crate::image::ImageConfig::from_slice(&bytes, &digest.to_string())?;
            ids.extend(config.rootfs.diff_ids);
        }
        Ok(ids)
    }

    /// The bytes of every distinct blob `target` reaches, itself included: what the image
    /// takes in the content store.
    pub fn size(&self, target: &Descriptor) -> Result<u64> {
        Ok(reachable(&self.content, std::slice::from_ref(target))?
            .iter()
            .map(Descriptor::size)
            .sum())
    }

    fn remove_stale_staging(&self) -> Result<usize> {
        let dir = self.dir.join("staging");
        let mut removed = 0;
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            let path = entry.path();
            let lock_path = path.join("lock");
            let Ok(lock) = File::open(&lock_path) else {
                // Being created (the lock comes first), or not a staging area.
                continue;
            };
            if flock(&lock, false).map_err(|e| StoreError::io(&lock_path, e))? {
                match fs::remove_dir_all(&path) {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!(path = %path.display(), error = %e,
                        "could not remove a stale staging area"),
                }
            }
        }
        Ok(removed)
    }

    fn new_record<S: Provider + ?Sized>(
        &self,
        store: &S,
        name: Option<&str>,
        target: &Descriptor,
    ) -> Result<ImageRecord> {
        if let Some(name) = name {
            check_name(name)?;
        }
        let media_type = target.media_type().to_string();
        let digest = descriptor_digest(target)?;
        if !is_manifest_media_type(&media_type) {
            return Err(StoreError::NotAnImage {
                what: digest.to_string(),
                media_type,
            });
        }
        let (manifest, _) = Manifest::read(store, target)?;
        let id = match manifest.config() {
            Some(config) => descriptor_digest(&config)?,
            None => digest,
        };
        Ok(ImageRecord {
            name: name.map(str::to_owned),
            id,
            target: target.clone(),
            created: now_rfc3339(),
        })
    }

    fn lock(&self) -> Result<File> {
        let path = self.dir.join("lock");
        let file = open_lock(&path)?;
        flock(&file, true).map_err(|e| StoreError::io(&path, e))?;
        Ok(file)
    }

    fn read_index(&self) -> Result<IndexFile> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(IndexFile {
                    version: INDEX_VERSION,
                    images: Vec::new(),
                });
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        // The version first, so that a newer index is not reported as corrupt.
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let version: Version =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::CorruptIndex {
                path: path.clone(),
                source,
            })?;
        if version.version != INDEX_VERSION {
            return Err(StoreError::IndexVersion {
                path,
                version: version.version,
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| StoreError::CorruptIndex { path, source })
    }

    fn write_index(&self, mut index: IndexFile) -> Result<()> {
        index.version = INDEX_VERSION;
        index.images.sort_by(|a, b| match (&a.name, &b.name) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.id.cmp(&b.id),
        });
        let mut bytes =
            serde_json::to_vec_pretty(&index).map_err(|source| StoreError::CorruptIndex {
                path: self.index_path(),
                source,
            })?;
        bytes.push(b'\n');
        write_atomically(&self.index_path(), &bytes)
    }
}

/// Adds `record` to `index`: it replaces the record of the same name, and an untagged record
/// of the same root is dropped once the root has a name (or is not repeated). An image that
/// loses its last name this way stays, untagged, as Docker keeps a dangling image, until it
/// is removed by id. Returns the record replaced.
fn insert(index: &mut IndexFile, record: ImageRecord) -> Option<ImageRecord> {
    let root = record.target.digest().clone();
    let mut previous = None;
    match &record.name {
        Some(name) => {
            if let Some(pos) = index
                .images
                .iter()
                .position(|r| r.name.as_deref() == Some(name))
            {
                let old = index.images.remove(pos);
                let old_root = old.target.digest();
                if *old_root != root && !index.images.iter().any(|r| r.target.digest() == old_root)
                {
                    index.images.push(ImageRecord {
                        name: None,
                        ..old.clone()
                    });
                }
                previous = Some(old);
            }
            index
                .images
                .retain(|r| !(r.name.is_none() && *r.target.digest() == root));
        }
        None => {
            if index.images.iter().any(|r| *r.target.digest() == root) {
                return None;
            }
        }
    }
    index.images.push(record);
    previous
}

/// Refuses names that cannot be an image reference in any form.
/// Writes `bytes` to `path` through a temporary file beside it, fsynced and renamed over it,
/// then fsyncs the directory: a reader sees the old file or the new one, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| StoreError::io(dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| StoreError::io(tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| StoreError::io(tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| StoreError::io(path, e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// A pin as stored. See the module docs.
#[derive(Deserialize)]
struct PinFile {
    blobs: Vec<Descriptor>,
    #[serde(default)]
    data: serde_json::Value,
}

fn check_pin_part(set: &str, name: &str) -> Result<()> {
    let ok = |s: &str| {
        (1..=128).contains(&s.len())
            && !s.starts_with('.')
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
    };
    if ok(set) && ok(name) {
        Ok(())
    } else {
        Err(StoreError::InvalidPin {
            set: set.to_owned(),
            name: name.to_owned(),
        })
    }
}

fn check_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(StoreError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 4096 {
        return bad("it is too long");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("it contains whitespace or control characters");
    }
    Ok(())
}

/// The repository part of a normalized name: without `@digest` and `:tag`.
fn repository_of(name: &str) -> &str {
    let name = name.split_once('@').map_or(name, |(n, _)| n);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    }
}

/// The hex an id query starts with: `sha256:<hex>` or bare lowercase hex, 1 to 64 digits.
fn id_prefix(query: &str) -> Option<&str> {
    let hex = query.strip_prefix("sha256:").unwrap_or(query);
    let ok = !hex.is_empty()
        && hex.len() <= 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(hex)
}

fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::io(path, e))
}

/// An exclusive `flock(2)` on `file`, waiting for it when `wait`; `Ok(false)` when not
/// waiting and another open file description holds it. The lock goes with the file.
fn flock(file: &File, wait: bool) -> io::Result<bool> {
    let mut op = libc::LOCK_EX;
    if !wait {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock on a descriptor owned by `file`, which outlives the call.
        let ret = unsafe { libc::flock(file.as_raw_fd(), op) };
        if ret == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if !wait => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Now, as RFC 3339 in UTC with second precision.
fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_rfc3339(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses RFC 3339 (`2026-01-02T03:04:05.123456789Z`, `…+02:00`) to seconds since the epoch.
/// Fractions are dropped. `None` for anything else or a time before the epoch.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let t = rest.get(1..)?;
            if t.len() != 5 || t.as_bytes()[2] != b':' {
                return None;
            }
            sign * (t[..2].parse::<i64>().ok()? * 3600 + t[3..].parse::<i64>().ok()? * 60)
        }
    };
    // Civil date to days (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(secs).ok()
}

/// Content being imported: blobs land in a store of their own, and reads fall through to the
/// image store's content, so blobs it already has are not fetched or written again. Hand it
/// to [`ImageStore::commit`]; dropping it removes whatever was not committed.
#[derive(Debug)]
pub struct Staging {
    store: FsStore,
    main: FsStore,
    dir: PathBuf,
    _lock: File,
}

impl Staging {
    /// The directory of this staging area.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A scratch directory inside the staging area (on the store's filesystem), removed
    /// with it.
    pub fn scratch_dir(&self) -> Result<PathBuf> {
        let path = self.dir.join("scratch");
        fs::create_dir_all(&path).map_err(|e| StoreError::io(&path, e))?;
        Ok(path)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(path = %self.dir.display(), error = %e,
                "could not remove a staging area; gc removes it later");
        }
    }
}

impl Provider for Staging {
    fn info(&self, digest: &Digest) -> crate::content::Result<Info> {
        match self.store.info(digest) {
            Err(ContentError::NotFound(_)) => self.main.info(digest),
            other => other,
        }
    }

    fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> crate::content::Result<Box<dyn io::Read + Send>> {
        match self.store.read(digest, range.clone()) {
            Err(ContentError::NotFound(_)) => self.main.read(digest, range),
            other => other,
        }
    }
}

impl Ingester for Staging {
    fn writer(&self, algorithm: Algorithm) -> crate::content::Result<Box<dyn ContentWriter>> {
        self.store.writer(algorithm)
    }

    fn writer_caller_hashed(
        &self,
        algorithm: Algorithm,
    ) -> crate::content::Result<Box<dyn ContentWriter>> {
        self.store.writer_caller_hashed(algorithm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_767_323_045), "2026-01-02T03:04:05Z");
        for secs in [0, 951_782_400, 1_767_323_045, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&format_rfc3339(secs)), Some(secs));
        }
        assert_eq!(
            parse_rfc3339("2026-01-02T05:04:05.123456789+02:00"),
            Some(1_767_323_045)
        );
        for bad in [
            "",
            "2026-01-02",
            "2026-13-02T03:04:05Z",
            "2026-01-02T03:04:05",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn repository_and_id_prefix() {
        assert_eq!(
            repository_of("docker.io/library/a:1"),
            "docker.io/library/a"
        );
        assert_eq!(repository_of("localhost:5000/a"), "localhost:5000/a");
        assert_eq!(
            repository_of("localhost:5000/a@sha256:00"),
            "localhost:5000/a"
        );
        assert_eq!(id_prefix("sha256:ab"), Some("ab"));
        assert_eq!(id_prefix("abc123"), Some("abc123"));
        assert_eq!(id_prefix("busybox"), None);
        assert_eq!(id_prefix(""), None);
    }
}
