//! The snapshot store: each layer extracted once, keyed by its `diff_id`, and the root
//! filesystems of build steps made of those snapshots, following containerd's overlay
//! snapshotter.
//!
//! ```text
//! blob ──decompress──sha256 (must equal the diff_id)──▶ apply ──▶ snapshots/sha256/<hex>/fs
//!                                                             (whiteouts kept, overlay-style)
//! prepare(key, [base…top])  ──▶ active/<id>/{upper,work}   + lowerdirs (top first)
//!   the sandbox mounts overlayfs; the step runs; the sandbox unmounts
//! commit ──▶ layer (tar of upper) ──▶ upper renamed to snapshots/sha256/<new diff_id>/fs
//!
//! prepare_copy(key, [base…top]) ──▶ active/<id>/rootfs (a copy of the merged view)
//!   the step runs in it
//! commit ──▶ two-tree diff ──▶ layer (tar of the changes) ──▶ also extracted as a snapshot
//! ```
//!
//! ## Two paths, one result
//! A snapshot keeps its whiteouts as overlayfs keeps them (a character device 0/0 for a
//! deleted name, `overlay.opaque=y` on a directory that hides the layers below), so it is a
//! lower directory as it is, and the copy fallback merges the same directories by overlayfs'
//! rules. Over overlayfs the step's diff is its upper directory. For a copy,
//! [`Active::diff`] walks the copy and the merged parents side by side and reports what
//! overlayfs would have put in an upper directory for the same operations:
//! - a name only in the copy is added, a name only in the parents deleted;
//! - a directory the step made (its birth time, or without birth times its inode, tells) where
//!   the parents have something is opaque, everything under it added: overlayfs marks a
//!   directory made over a whiteout opaque;
//! - a non-directory that replaces a directory, or that the step created, is modified;
//! - an entry whose change time predates the step is unchanged; a touched one is compared
//!   (type, mode, owner, mtime, size, device, link target, extended attributes, then the bytes
//!   when all those are equal);
//! - every other name of a changed multiply-linked file is modified (overlayfs copies up the
//!   file a link is made to), and every parent directory of a change is modified (overlayfs
//!   copies up the parents of what changes).
//!
//! Both give the same changes and, with the same tar options, the same layer. They differ
//! where overlayfs copies up without a change (a `chmod` to the same mode: the copy finds the
//! file identical) and for hardlinks that span layers below the step: the copy keeps a lower
//! layer's hardlinks, so writing through one name changes all of them, where overlayfs breaks
//! the link on copy-up.
//!
//! ## On disk
//! ```text
//! <root>/lock                          store-wide lock (see below)
//! <root>/snapshots/<alg>/<hex>/fs      a committed snapshot: the layer applied to an empty
//!                                      directory, whiteouts kept as overlayfs keeps them
//! <root>/active/<id>.lock              an active snapshot's lock: JSON {kind, key, diff_ids}
//! <root>/active/<id>/                  upper/, work/ (and an empty lower/ without parents),
//!                                      or rootfs/ (a copy) and stamp
//! <root>/leases/<id>.lock              a lease's lock: JSON {kind, diff_ids}
//! <root>/tmp/<id>.lock, <root>/tmp/<id>/    work in progress (an extraction, a removal)
//! <root>/tmp/extract-<alg>-<hex>.lock  one extraction of a diff_id at a time
//! ```
//!
//! ## Invariants
//! - A directory appears under `snapshots/` only by a rename that never replaces, once its
//!   content is complete and synced (`syncfs`), so a snapshot is complete or absent, even after
//!   a crash; an extraction whose uncompressed stream does not hash to the diff_id leaves
//!   nothing. Concurrent extractions of one diff_id are serialized, and one rename wins anyway.
//! - Snapshots are read-only by contract: overlayfs only reads lower directories, and the copy
//!   fallback copies them.
//! - Snapshots are reference-counted by leases. A lease (and every active snapshot, which holds
//!   one on its parents) is a lock file held with `flock` by the process that uses it: the
//!   kernel releases it when the process dies, however it dies, so references never outlive
//!   their holder and need no recovery. [`SnapshotStore::references`] counts the live ones;
//!   [`SnapshotStore::remove`] refuses a referenced snapshot and [`SnapshotStore::prune`] keeps
//!   it, and removes whatever a dead process left (active directories, work in progress).
//! - Registering a reference holds the store lock shared; `remove` and `prune` hold it
//!   exclusive while they decide, then remove outside it (after renaming what goes into
//!   `tmp/`). So a snapshot checked by `prepare` or leased stays until the reference goes.
//! - A directory that a current mount uses (as its mount point or as an overlay layer, read from
//!   `/proc/self/mountinfo`) is never removed.
//! - The store never mounts, unshares or execs: [`Active`] gives the sandbox the directories
//!   and the overlay options, and [`overlay_support`] reads what the kernel offers from `/proc`
//!   and `/sys`.

mod active;
mod error;
mod overlay;
mod state;
mod sys;
mod tree;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use active::{Active, Commit, Rootfs};
pub use error::SnapshotError;
pub use overlay::{MAX_MOUNT_DATA, OverlaySupport, overlay_support, overlay_supported};

use crate::archive::{ApplyOptions, ApplyStats, OverlayNamespace, WhiteoutMode, apply_layer};
use crate::digest::{Digest, Hasher};
use crate::media::Compression;
use state::{Held, Kind, Probe, State, Workspace};
use sys::Lock;

/// The result of the store's operations.
pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// What [`SnapshotStore::extract`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extracted {
    /// The layer was extracted into a new snapshot.
    New(ApplyStats),
    /// The snapshot was already there (extracted before, or by a concurrent extraction).
    Present,
}

/// What [`SnapshotStore::prune`] removed and kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Snapshots removed.
    pub removed: Vec<Digest>,
    /// Snapshots kept because a live lease or active snapshot references them, or a mount uses
    /// them.
    pub in_use: Vec<Digest>,
    /// Active snapshots left by dead processes, removed.
    pub stale_active: usize,
    /// Leases and work directories left by dead processes, removed.
    pub stale_other: usize,
}

/// Builds a [`SnapshotStore`] (see [`SnapshotStore::builder`]).
#[derive(Debug, Clone)]
pub struct SnapshotStoreBuilder {
    config: Config,
}

#[derive(Debug, Clone)]
struct Config {
    root: PathBuf,
    namespace: OverlayNamespace,
    limits: ApplyOptions,
    sync: bool,
}

impl SnapshotStoreBuilder {
    /// The namespace of the overlayfs attributes the snapshots carry and the mounts read
    /// (default: `trusted` for root, `user` otherwise, with the `userxattr` mount option).
    pub fn overlay_namespace(mut self, namespace: OverlayNamespace) -> Self {
        self.config.namespace = namespace;
        self
    }

    /// The limits and switches of extraction (default [`ApplyOptions::default`]); whiteouts are
    /// always kept overlay-style, whatever `whiteouts` says.
    pub fn apply_options(mut self, options: ApplyOptions) -> Self {
        self.config.limits = options;
        self
    }

    /// Whether a snapshot's filesystem is synced (`syncfs`) before the snapshot appears
    /// (default `true`). Without it a machine crash can leave a snapshot with missing data.
    pub fn sync(mut self, sync: bool) -> Self {
        self.config.sync = sync;
        self
    }

    /// Opens the store, creating its directories.
    pub fn open(self) -> Result<SnapshotStore> {
        let root = self.config.root.clone();
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder
            .create(&root)
            .map_err(|e| SnapshotError::io("creating", &root, e))?;
        let root = root
            .canonicalize()
            .map_err(|e| SnapshotError::io("resolving", &root, e))?;
        for dir in ["snapshots", "active", "leases", "tmp"] {
            let path = root.join(dir);
            builder
                .create(&path)
                .map_err(|e| SnapshotError::io("creating", &path, e))?;
        }
        let lock = root.join("lock");
        drop(
            state::store_lock(&lock, Lock::Shared)
                .map_err(|e| SnapshotError::io("locking", &lock, e))?,
        );
        Ok(SnapshotStore {
            inner: Arc::new(Inner {
                config: Config {
                    root,
                    ..self.config
                },
                overlay: overlay_support(),
            }),
        })
    }
}

/// The snapshot store. Cheap to clone; clones share the store.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    overlay: OverlaySupport,
}

impl SnapshotStore {
    /// Opens (creating if needed) the store at `root` with the default settings.
    pub fn open(root: impl Into<PathBuf>) -> Result<SnapshotStore> {
        SnapshotStore::builder(root).open()
    }

    /// A builder for the store at `root`.
    pub fn builder(root: impl Into<PathBuf>) -> SnapshotStoreBuilder {
        SnapshotStoreBuilder {
            config: Config {
                root: root.into(),
                namespace: if sys::euid() == 0 {
                    OverlayNamespace::Trusted
                } else {
                    OverlayNamespace::User
                },
                limits: ApplyOptions::default(),
                sync: true,
            },
        }
    }

    /// The store's root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.inner.config.root
    }

    /// The namespace of the overlayfs attributes of the snapshots.
    pub fn overlay_namespace(&self) -> OverlayNamespace {
        self.inner.config.namespace
    }

    /// What the kernel offered for overlayfs when the store was opened.
    pub fn overlay_support(&self) -> OverlaySupport {
        self.inner.overlay
    }

    /// The directory that holds the extracted layer `diff_id` (whether or not it exists):
    /// `<root>/snapshots/<alg>/<hex>/fs`.
    pub fn path(&self, diff_id: &Digest) -> PathBuf {
        self.snapshot_dir(diff_id).join("fs")
    }

    /// Whether the snapshot `diff_id` is in the store.
    pub fn exists(&self, diff_id: &Digest) -> bool {
        self.path(diff_id).is_dir()
    }

    /// The snapshots in the store, sorted.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        let base = self.dir("snapshots");
        for alg in read_names(&base)? {
            let alg_dir = base.join(&alg);
            for hex in read_names(&alg_dir)? {
                if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Extracts the layer read from `layer` (gzip, zstd or plain tar, told apart by its first
    /// bytes) as the snapshot `diff_id`, unless it is already there.
    ///
    /// The uncompressed stream is hashed as it is applied; when it does not hash to `diff_id`
    /// the extraction is discarded and nothing lands. Whiteouts are kept as overlayfs keeps
    /// them ([`WhiteoutMode::Overlay`]), so the snapshot serves as a lower directory as it is.
    /// Concurrent extractions of the same `diff_id`, in this process or others, are safe: one
    /// extracts, the others wait and find it present.
    pub fn extract<R: Read>(&self, diff_id: &Digest, layer: R) -> Result<Extracted> {
        if self.exists(diff_id) {
            return Ok(Extracted::Present);
        }
        let mutex_path = self.dir("tmp").join(format!(
            "extract-{}-{}.lock",
            diff_id.algorithm(),
            diff_id.hex()
        ));
        let _mutex = Held::acquire(&mutex_path)
            .map_err(|e| SnapshotError::io_of("locking", &mutex_path, diff_id, e))?;
        if self.exists(diff_id) {
            return Ok(Extracted::Present);
        }
        let ws = self.workspace(Some(diff_id))?;
        let dest = ws.path().join("fs");

        let mut reader = HashingReader {
            inner: decompress(layer).map_err(|e| SnapshotError::Extract {
                diff_id: diff_id.clone(),
                path: dest.clone(),
                source: Box::new(crate::archive::ArchiveError::Stream {
                    after: PathBuf::new(),
                    source: e,
                }),
            })?,
            hasher: diff_id.algorithm().hasher(),
        };
        let opts = ApplyOptions {
            whiteouts: WhiteoutMode::Overlay(self.overlay_namespace()),
            ..self.inner.config.limits.clone()
        };
        let stats =
            apply_layer(&mut reader, &dest, &opts).map_err(|source| SnapshotError::Extract {
                diff_id: diff_id.clone(),
                path: dest.clone(),
                source: Box::new(source),
            })?;
        let actual = reader.hasher.finish();
        if &actual != diff_id {
            return Err(SnapshotError::DiffIdMismatch {
                expected: diff_id.clone(),
                actual,
            });
        }
        if self.publish(ws.path(), diff_id)? {
            Ok(Extracted::New(stats))
        } else {
            Ok(Extracted::Present)
        }
    }

    /// Takes a lease on `diff_ids`: while it lives, none of them is removed by
    /// [`remove`](Self::remove) or [`prune`](Self::prune), whether it exists yet or is
    /// extracted later. The lease ends when dropped, or when this process dies.
    pub fn lease(&self, diff_ids: &[Digest]) -> Result<Lease> {
        let _shared = self.store_lock(Lock::Shared)?;
        self.new_lease(diff_ids.to_vec())
    }

    /// How many live leases and active snapshots reference `diff_id`.
    pub fn references(&self, diff_id: &Digest) -> Result<usize> {
        let _exclusive = self.store_lock(Lock::Exclusive)?;
        let mut refs = HashMap::new();
        self.scan(&mut refs, None)?;
        Ok(refs.get(diff_id).copied().unwrap_or(0))
    }

    /// Opens an active snapshot for a step over overlayfs: the snapshots `parents` (bottom to
    /// top, as in an image config's `rootfs.diff_ids`) as lower directories, and a fresh upper
    /// and work directory under `<root>/active/<id>`. `key` names it for people and logs.
    ///
    /// Every parent must be in the store; the active snapshot holds a lease on them until it is
    /// committed or dropped. A diff_id listed twice is used once, at its topmost place (the
    /// lower occurrence changes nothing the upper one does not redo).
    pub fn prepare(&self, key: &str, parents: &[Digest]) -> Result<Active> {
        active::prepare(self, key, parents, Kind::Overlay)
    }

    /// Opens an active snapshot for a step without overlayfs: the merged view of `parents`
    /// (bottom to top) is copied into `<root>/active/<id>/rootfs`, whiteouts applied, and
    /// [`Active::diff`] later compares it with that view.
    pub fn prepare_copy(&self, key: &str, parents: &[Digest]) -> Result<Active> {
        active::prepare(self, key, parents, Kind::Copy)
    }

    /// Removes the snapshot `diff_id`, unless a live lease or active snapshot references it or
    /// a mount uses it.
    pub fn remove(&self, diff_id: &Digest) -> Result<()> {
        let dir = self.snapshot_dir(diff_id);
        let ws = {
            let _exclusive = self.store_lock(Lock::Exclusive)?;
            if !dir.is_dir() {
                return Err(SnapshotError::NotFound {
                    diff_id: diff_id.clone(),
                    path: self.path(diff_id),
                });
            }
            let mut refs = HashMap::new();
            self.scan(&mut refs, None)?;
            if let Some(&references) = refs.get(diff_id) {
                return Err(SnapshotError::InUse {
                    diff_id: diff_id.clone(),
                    path: dir,
                    references,
                });
            }
            if overlay::in_use(&overlay::mounts(), &dir) {
                return Err(SnapshotError::Mounted {
                    path: dir,
                    diff_id: Some(diff_id.clone()),
                });
            }
            self.retire(&dir, diff_id)?
        };
        drop(ws);
        Ok(())
    }

    /// Removes every snapshot that no live lease or active snapshot references, that no
    /// current mount uses and that `keep` does not want (an image store keeps the layers of its
    /// images), and whatever dead processes left: active snapshots, leases, work directories.
    pub fn prune(&self, keep: impl Fn(&Digest) -> bool) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let mut doomed: Vec<Workspace> = Vec::new();
        {
            let _exclusive = self.store_lock(Lock::Exclusive)?;
            let mounts = overlay::mounts();
            let mut refs = HashMap::new();
            let mut stale = Vec::new();
            self.scan(&mut refs, Some(&mut stale))?;
            for (what, ws) in stale {
                if overlay::in_use(&mounts, ws.path()) {
                    tracing::warn!(path = %ws.path().display(), "left behind but still mounted; not removed");
                    ws.abandon();
                    continue;
                }
                match what {
                    Kind::Overlay | Kind::Copy => report.stale_active += 1,
                    Kind::Lease => report.stale_other += 1,
                }
                doomed.push(ws);
            }
            report.stale_other += self.stale_tmp(&mut doomed)?;
            for diff_id in self.list()? {
                let dir = self.snapshot_dir(&diff_id);
                if refs.contains_key(&diff_id) || overlay::in_use(&mounts, &dir) {
                    report.in_use.push(diff_id);
                    continue;
                }
                if keep(&diff_id) {
                    continue;
                }
                doomed.push(self.retire(&dir, &diff_id)?);
                report.removed.push(diff_id);
            }
        }
        // The removals themselves happen outside the store lock.
        drop(doomed);
        Ok(report)
    }

    // -----------------------------------------------------------------------------------------

    fn dir(&self, name: &str) -> PathBuf {
        self.inner.config.root.join(name)
    }

    fn snapshot_dir(&self, diff_id: &Digest) -> PathBuf {
        self.dir("snapshots")
            .join(diff_id.algorithm().as_str())
            .join(diff_id.hex())
    }

    fn store_lock(&self, lock: Lock) -> Result<state::StoreLock> {
        let path = self.dir("lock");
        state::store_lock(&path, lock).map_err(|e| SnapshotError::io("locking", &path, e))
    }

    /// A fresh work directory under `tmp/`.
    fn workspace(&self, diff_id: Option<&Digest>) -> Result<Workspace> {
        let tmp = self.dir("tmp");
        let _shared = self.store_lock(Lock::Shared)?;
        Workspace::create(&tmp).map_err(|e| SnapshotError::Io {
            op: "creating work directory in",
            path: tmp,
            diff_id: diff_id.cloned(),
            source: e,
        })
    }

    /// Creates a lease file. The store lock must be held shared.
    fn new_lease(&self, diff_ids: Vec<Digest>) -> Result<Lease> {
        let path = self
            .dir("leases")
            .join(format!("{}.lock", uuid::Uuid::new_v4().simple()));
        let held = Held::create(&path).map_err(|e| SnapshotError::io("creating", &path, e))?;
        let lease = Lease {
            store: self.clone(),
            held,
            state: State {
                kind: Kind::Lease,
                key: None,
                diff_ids,
                pid: std::process::id(),
            },
        };
        lease
            .held
            .write_state(&lease.state)
            .map_err(|e| SnapshotError::io("writing", &path, e))?;
        Ok(lease)
    }

    /// Makes the complete directory `staged` (holding `fs/`) the snapshot `diff_id`. Returns
    /// `false` when the snapshot already exists (`staged` is then left alone).
    fn publish(&self, staged: &Path, diff_id: &Digest) -> Result<bool> {
        if self.inner.config.sync {
            let f = File::open(staged)
                .map_err(|e| SnapshotError::io_of("opening", staged, diff_id, e))?;
            sys::syncfs(&f).map_err(|e| SnapshotError::io_of("syncing", staged, diff_id, e))?;
        }
        let target = self.snapshot_dir(diff_id);
        let parent = target.parent().expect("a snapshot directory has a parent");
        let _shared = self.store_lock(Lock::Shared)?;
        fs::create_dir_all(parent)
            .map_err(|e| SnapshotError::io_of("creating", parent, diff_id, e))?;
        let renamed = sys::rename_noreplace(staged, &target)
            .map_err(|e| SnapshotError::io_of("renaming into", &target, diff_id, e))?;
        if renamed && self.inner.config.sync {
            sys::fsync_dir(parent)
                .map_err(|e| SnapshotError::io_of("syncing", parent, diff_id, e))?;
        }
        Ok(renamed)
    }

    /// Moves a snapshot's directory into a work directory, which removes it when dropped. The
    /// store lock must be held exclusive.
    fn retire(&self, dir: &Path, diff_id: &Digest) -> Result<Workspace> {
        let tmp = self.dir("tmp");
        let ws = Workspace::create(&tmp)
            .map_err(|e| SnapshotError::io_of("creating work directory in", &tmp, diff_id, e))?;
        let to = ws.path().join("snapshot");
        fs::rename(dir, &to).map_err(|e| SnapshotError::io_of("renaming", dir, diff_id, e))?;
        Ok(ws)
    }

    /// Reads every lease and active snapshot: the live ones' references are counted into
    /// `refs`; with `stale`, the stale ones (their lock now held here) are pushed to it with
    /// their directories, to be removed. The store lock must be held exclusive.
    fn scan(
        &self,
        refs: &mut HashMap<Digest, usize>,
        mut stale: Option<&mut Vec<(Kind, Workspace)>>,
    ) -> Result<()> {
        for (dir, kind_of_dir) in [("active", None), ("leases", Some(Kind::Lease))] {
            let base = self.dir(dir);
            let names = read_names(&base)?;
            for name in &names {
                let path = base.join(name);
                let Some(id) = name.strip_suffix(".lock") else {
                    // A directory of an active snapshot: its lock says whether it is alive.
                    if let Some(stale) = stale.as_deref_mut() {
                        if !names.contains(&format!("{name}.lock")) && path.is_dir() {
                            // Its owner died while removing it: finish the job.
                            let ws = Workspace::adopt(&base, name)
                                .map_err(|e| SnapshotError::io("locking", &path, e))?;
                            stale.push((Kind::Overlay, ws));
                        }
                    }
                    continue;
                };
                match state::probe(&path).map_err(|e| SnapshotError::io("locking", &path, e))? {
                    Probe::Gone => {}
                    Probe::Alive => {
                        let Some(st) = state::read_state(&path) else {
                            tracing::debug!(path = %path.display(), "unreadable state of a live lock");
                            continue;
                        };
                        let mut seen = std::collections::HashSet::new();
                        for d in st.diff_ids {
                            if seen.insert(d.clone()) {
                                *refs.entry(d).or_insert(0) += 1;
                            }
                        }
                    }
                    Probe::Stale(held) => match stale.as_deref_mut() {
                        Some(stale) => {
                            let kind = kind_of_dir
                                .or_else(|| state::read_state(&path).map(|s| s.kind))
                                .unwrap_or(Kind::Overlay);
                            stale.push((kind, Workspace::from_stale(base.join(id), held)));
                        }
                        // Left for prune.
                        None => held.release(),
                    },
                }
            }
        }
        Ok(())
    }

    /// Work directories and extraction locks of `tmp/` whose owner is gone, taken over into
    /// `doomed`. The store lock must be held exclusive.
    fn stale_tmp(&self, doomed: &mut Vec<Workspace>) -> Result<usize> {
        let base = self.dir("tmp");
        let names = read_names(&base)?;
        let mut count = 0;
        for name in &names {
            let path = base.join(name);
            match name.strip_suffix(".lock") {
                Some(id) => {
                    if let Probe::Stale(held) =
                        state::probe(&path).map_err(|e| SnapshotError::io("locking", &path, e))?
                    {
                        doomed.push(Workspace::from_stale(base.join(id), held));
                        count += 1;
                    }
                }
                None => {
                    if !names.contains(&format!("{name}.lock")) {
                        let ws = Workspace::adopt(&base, name)
                            .map_err(|e| SnapshotError::io("locking", &path, e))?;
                        doomed.push(ws);
                        count += 1;
                    }
                }
            }
        }
        Ok(count)
    }
}

/// A reference to snapshots: while it lives, they are not removed. See
/// [`SnapshotStore::lease`].
#[derive(Debug)]
pub struct Lease {
    store: SnapshotStore,
    held: Held,
    state: State,
}

impl Lease {
    /// The snapshots the lease references.
    pub fn diff_ids(&self) -> &[Digest] {
        &self.state.diff_ids
    }

    /// Adds `diff_id` to the lease.
    pub fn add(&mut self, diff_id: &Digest) -> Result<()> {
        if self.state.diff_ids.contains(diff_id) {
            return Ok(());
        }
        let _shared = self.store.store_lock(Lock::Shared)?;
        self.state.diff_ids.push(diff_id.clone());
        self.held
            .write_state(&self.state)
            .map_err(|e| SnapshotError::io_of("writing", self.held.path(), diff_id, e))
    }
}

/// The names in a directory (missing: none).
fn read_names(dir: &Path) -> Result<Vec<String>> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SnapshotError::io("listing", dir, e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| SnapshotError::io("listing", dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Wraps `layer` in the decompressor its first bytes call for.
fn decompress<'a, R: Read + 'a>(mut layer: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut head = [0u8; 4];
    let mut len = 0;
    while len < head.len() {
        match layer.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let stream = io::Cursor::new(head[..len].to_vec()).chain(layer);
    Ok(match Compression::sniff(&head[..len]) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(stream)?),
        Compression::None => Box::new(stream),
    })
}

/// Hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
