//! Active snapshots: the root filesystem of one step, over overlayfs or as a copy, until it is
//! committed as a layer or dropped.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use super::state::{Held, Kind, State};
use super::sys::{self, Lock};
use super::tree::{self, CopyMarks, Stamp, TreeError};
use super::{HashingReader, Lease, Result, SnapshotError, SnapshotStore, overlay};
use crate::archive::{
    ApplyOptions, ArchiveError, Change, WhiteoutMode, apply_layer, write_changes,
};
use crate::content::Ingester;
use crate::digest::{Algorithm, Digest};
use crate::layer::{self, LayerError, LayerInfo, LayerOptions};

/// Where a step's root filesystem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// To be mounted by the sandbox: `mount -t overlay overlay -o <options> <target>`, the
    /// options being [`Active::overlay_options`].
    Overlay {
        /// The lower directories, top first, as overlayfs' `lowerdir=` lists them. Without
        /// parents, one empty directory.
        lowerdirs: Vec<PathBuf>,
        /// The upper directory: after the step, its diff.
        upper: PathBuf,
        /// overlayfs' work directory.
        work: PathBuf,
    },
    /// A plain directory holding a copy of the parents' merged view (bind-mounted by the
    /// sandbox, if at all).
    Copy {
        /// The directory.
        dir: PathBuf,
    },
}

/// An active snapshot: the root filesystem of one step, made by [`SnapshotStore::prepare`] or
/// [`SnapshotStore::prepare_copy`].
///
/// While it lives it holds a lease on its parents. [`commit`](Active::commit) turns its changes
/// into a layer (and a new snapshot); dropping it without committing removes its directory, as
/// does a failed commit. If the process dies instead, its directory is left for
/// [`SnapshotStore::prune`].
#[derive(Debug)]
pub struct Active {
    store: SnapshotStore,
    key: String,
    dir: PathBuf,
    /// Bottom to top, each once.
    parents: Vec<Digest>,
    rootfs: Rootfs,
    marks: Option<CopyMarks>,
    /// The lease on the parents; `None` once the directory is gone or handed over.
    lock: Option<Held>,
}

/// What [`Active::commit`] made.
#[derive(Debug)]
pub struct Commit<W> {
    /// The layer.
    pub info: LayerInfo,
    /// The writer the compressed layer went to.
    pub out: W,
    /// A lease on the parents and on the new snapshot (`info.diff_id`), so that the next step
    /// can be prepared on them; drop it when done.
    pub lease: Lease,
}

pub(super) fn prepare(
    store: &SnapshotStore,
    key: &str,
    parents: &[Digest],
    kind: Kind,
) -> Result<Active> {
    // A diff_id listed twice is kept at its topmost place.
    let mut seen = HashSet::new();
    let mut parents: Vec<Digest> = parents
        .iter()
        .rev()
        .filter(|d| seen.insert((*d).clone()))
        .cloned()
        .collect();
    parents.reverse();

    let id = uuid::Uuid::new_v4().simple().to_string();
    let base = store.dir("active");
    let dir = base.join(&id);
    let lock = {
        let _shared = store.store_lock(Lock::Shared)?;
        let path = base.join(format!("{id}.lock"));
        let held = Held::create(&path).map_err(|e| SnapshotError::io("creating", &path, e))?;
        held.write_state(&State {
            kind,
            key: Some(key.to_owned()),
            diff_ids: parents.clone(),
            pid: std::process::id(),
        })
        .map_err(|e| SnapshotError::io("writing", &path, e))?;
        for parent in &parents {
            if !store.exists(parent) {
                return Err(SnapshotError::NotFound {
                    diff_id: parent.clone(),
                    path: store.path(parent),
                });
            }
        }
        held
    };

    let rootfs = match kind {
        Kind::Overlay => {
            let mut lowerdirs: Vec<PathBuf> = parents.iter().rev().map(|d| store.path(d)).collect();
            if lowerdirs.is_empty() {
                lowerdirs.push(dir.join("lower"));
            }
            Rootfs::Overlay {
                lowerdirs,
                upper: dir.join("upper"),
                work: dir.join("work"),
            }
        }
        Kind::Copy | Kind::Lease => Rootfs::Copy {
            dir: dir.join("rootfs"),
        },
    };
    // From here on, an error drops `active`, which removes its directory.
    let mut active = Active {
        store: store.clone(),
        key: key.to_owned(),
        dir,
        parents,
        rootfs,
        marks: None,
        lock: Some(lock),
    };
    let mut builder = fs::DirBuilder::new();
    builder.mode(0o700);
    builder
        .create(&active.dir)
        .map_err(|e| SnapshotError::io("creating", &active.dir, e))?;
    let top = active.parents.last().map(|d| store.path(d));
    // The root of the step's filesystem takes the owner and mode of the top parent's root,
    // as the merged view shows it (containerd gives the upper directory the parent's owner).
    let root_meta = match &top {
        Some(t) => Some(fs::symlink_metadata(t).map_err(|e| SnapshotError::io("reading", t, e))?),
        None => None,
    };
    match &active.rootfs {
        Rootfs::Overlay {
            lowerdirs,
            upper,
            work,
        } => {
            if top.is_none() {
                make_dir(&lowerdirs[0], 0o755, None)?;
            }
            make_dir(upper, 0o755, root_meta.as_ref())?;
            make_dir(work, 0o711, None)?;
        }
        Rootfs::Copy { dir } => {
            make_dir(dir, 0o755, None)?;
            let roots = active.lower_roots();
            let ns = store.overlay_namespace();
            let copy = tree::root_sources(&roots, ns)
                .and_then(|sources| tree::copy_merged(&sources, dir, ns))
                .map_err(|e| tree_io(e, None))?;
            let stamp_path = active.dir.join("stamp");
            let (threshold, btime) =
                stamp(&stamp_path).map_err(|e| SnapshotError::io("writing", &stamp_path, e))?;
            active.marks = Some(CopyMarks {
                threshold,
                btime,
                dirs: copy,
            });
        }
    }
    Ok(active)
}

/// Creates `path` with `mode`, and the owner (and mode) of `like` when given.
fn make_dir(path: &Path, mode: u32, like: Option<&fs::Metadata>) -> Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|e| SnapshotError::io("creating", path, e))?;
    let mode = like.map_or(mode, |m| m.mode() & 0o7777);
    if let Some(m) = like {
        match std::os::unix::fs::lchown(path, Some(m.uid()), Some(m.gid())) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && sys::euid() != 0 => {}
            Err(e) => return Err(SnapshotError::io("changing owner of", path, e)),
        }
    }
    // Explicitly, as the umask applies to `DirBuilder`.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| SnapshotError::io("changing mode of", path, e))
}

/// Stamps `path` until the filesystem clock has moved past everything written before, and
/// returns that later time (every change made from now on is stamped at or after it) and
/// whether the filesystem records birth times.
fn stamp(path: &Path) -> io::Result<(Stamp, bool)> {
    let touch = |n: u32| -> io::Result<fs::Metadata> {
        fs::write(path, n.to_string())?;
        fs::symlink_metadata(path)
    };
    let first = touch(0)?;
    let before = (first.ctime(), first.ctime_nsec());
    for n in 1..=3000 {
        std::thread::sleep(Duration::from_millis(1));
        let now = touch(n)?;
        let t = (now.ctime(), now.ctime_nsec());
        if t > before {
            return Ok((t, tree::birth(&now).is_some()));
        }
    }
    Err(io::Error::other(
        "the filesystem clock did not move in 3 seconds",
    ))
}

fn tree_io(e: TreeError, diff_id: Option<&Digest>) -> SnapshotError {
    SnapshotError::Io {
        op: e.op,
        path: e.path,
        diff_id: diff_id.cloned(),
        source: e.source,
    }
}

impl Active {
    /// The caller's name for this snapshot.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its directory, `<root>/active/<id>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parents, bottom to top, each once.
    pub fn parents(&self) -> &[Digest] {
        &self.parents
    }

    /// Where the step's root filesystem is.
    pub fn rootfs(&self) -> &Rootfs {
        &self.rootfs
    }

    /// The lower directories, top first (empty for a copy).
    pub fn lowerdirs(&self) -> &[PathBuf] {
        match &self.rootfs {
            Rootfs::Overlay { lowerdirs, .. } => lowerdirs,
            Rootfs::Copy { .. } => &[],
        }
    }

    /// The upper directory (`None` for a copy).
    pub fn upper(&self) -> Option<&Path> {
        match &self.rootfs {
            Rootfs::Overlay { upper, .. } => Some(upper),
            Rootfs::Copy { .. } => None,
        }
    }

    /// overlayfs' work directory (`None` for a copy).
    pub fn work(&self) -> Option<&Path> {
        match &self.rootfs {
            Rootfs::Overlay { work, .. } => Some(work),
            Rootfs::Copy { .. } => None,
        }
    }

    /// The copy the step runs in (`None` over overlayfs).
    pub fn copy_dir(&self) -> Option<&Path> {
        match &self.rootfs {
            Rootfs::Copy { dir } => Some(dir),
            Rootfs::Overlay { .. } => None,
        }
    }

    /// The overlayfs mount options (`lowerdir=…,upperdir=…,workdir=…` plus `index=off`,
    /// `redirect_dir=off`, `metacopy=off` where the kernel knows them, or `userxattr` for the
    /// `user` namespace), `None` for a copy. Separators in paths are escaped. Beyond
    /// [`MAX_MOUNT_DATA`](super::MAX_MOUNT_DATA) bytes (a long chain of parents), use
    /// [`overlay_options_relative`](Active::overlay_options_relative).
    pub fn overlay_options(&self) -> Option<String> {
        let Rootfs::Overlay {
            lowerdirs,
            upper,
            work,
        } = &self.rootfs
        else {
            return None;
        };
        Some(overlay::mount_options(
            lowerdirs,
            upper,
            work,
            self.store.overlay_namespace(),
            &self.store.inner.overlay,
        ))
    }

    /// The overlayfs mount options with the lower directories relative to the returned
    /// directory (`<root>/snapshots`), which the mounting process makes its working directory
    /// for the `mount(2)` call, as containerd does for long chains. `None` for a copy.
    pub fn overlay_options_relative(&self) -> Option<(PathBuf, String)> {
        let Rootfs::Overlay {
            lowerdirs,
            upper,
            work,
        } = &self.rootfs
        else {
            return None;
        };
        let base = self.store.dir("snapshots");
        let relative: Vec<PathBuf> = lowerdirs
            .iter()
            .map(|l| {
                l.strip_prefix(&base)
                    .map_or_else(|_| l.clone(), Path::to_path_buf)
            })
            .collect();
        let opts = overlay::mount_options(
            &relative,
            upper,
            work,
            self.store.overlay_namespace(),
            &self.store.inner.overlay,
        );
        Some((base, opts))
    }

    /// The parents' snapshot roots, top first.
    fn lower_roots(&self) -> Vec<PathBuf> {
        self.parents
            .iter()
            .rev()
            .map(|d| self.store.path(d))
            .collect()
    }

    /// What the step changed, against the merged view of the parents, sorted by path, as
    /// [`archive::write_changes`](crate::archive::write_changes) takes it.
    ///
    /// Over overlayfs the upper directory is read (call it once the step's mount is gone). For
    /// a copy, the copy and the parents are walked side by side, by the rules of
    /// [the store's docs](super#two-paths-one-result). Either way every parent directory of a
    /// change is listed as modified, as overlayfs copies up the parents of what changes, so
    /// both give the same list for the same operations.
    pub fn diff(&self) -> Result<Vec<Change>> {
        let ns = self.store.overlay_namespace();
        let roots = self.lower_roots();
        let result = tree::root_sources(&roots, ns).and_then(|sources| match &self.rootfs {
            Rootfs::Overlay { upper, .. } => tree::diff_upper(upper, &sources, ns),
            Rootfs::Copy { dir } => {
                let marks = self.marks.as_ref().expect("a copy has its marks");
                tree::diff_copy(dir, &sources, ns, marks)
            }
        });
        result.map_err(|e| SnapshotError::Diff {
            key: self.key.clone(),
            path: e.path,
            source: e.source,
        })
    }

    /// Turns the step's changes into a layer written (compressed as `opts` says) to `out`, and
    /// the layer into a snapshot, so that the next step needs no extraction.
    ///
    /// Over overlayfs the layer is the tar of the upper directory
    /// ([`layer::create_from_dir`]), and the upper directory is then renamed into the store as
    /// the new snapshot (its mtimes set to what the tar recorded first, sockets removed). The
    /// mount must be gone: a directory still mounted is refused. For a copy the layer is the
    /// tar of [`diff`](Active::diff)'s changes ([`layer::create_from_changes`]), extracted as
    /// the new snapshot in the same pass. overlayfs' whiteouts in the tree are always read as
    /// whiteouts, whatever `opts.tar.overlay_whiteouts` says.
    ///
    /// On success the active snapshot is gone and a lease holds its parents and the new
    /// snapshot; on error it is gone too.
    pub fn commit<W: Write>(self, out: W, opts: &LayerOptions) -> Result<Commit<W>> {
        let mut opts = opts.clone();
        opts.tar.overlay_whiteouts = true;
        let staged = self.dir.join("commit");
        let layer_error = |source: LayerError| SnapshotError::Commit {
            key: self.key.clone(),
            path: self.dir.clone(),
            source: Box::new(source),
        };
        let (info, out) = match &self.rootfs {
            Rootfs::Overlay { upper, .. } => {
                if overlay::in_use(&overlay::mounts(), &self.dir) {
                    return Err(SnapshotError::Mounted {
                        path: self.dir.clone(),
                        diff_id: None,
                    });
                }
                let (info, out) = layer::create_from_dir(upper, out, &opts).map_err(layer_error)?;
                tree::normalize_upper(upper, opts.tar.source_date_epoch)
                    .map_err(|e| tree_io(e, Some(&info.diff_id)))?;
                fs::create_dir(&staged)
                    .map_err(|e| SnapshotError::io_of("creating", &staged, &info.diff_id, e))?;
                let fs_dir = staged.join("fs");
                fs::rename(upper, &fs_dir)
                    .map_err(|e| SnapshotError::io_of("renaming", upper, &info.diff_id, e))?;
                (info, out)
            }
            Rootfs::Copy { dir } => {
                let changes = self.diff()?;
                fs::create_dir(&staged).map_err(|e| SnapshotError::io("creating", &staged, e))?;
                let apply = ApplyOptions {
                    whiteouts: WhiteoutMode::Overlay(self.store.overlay_namespace()),
                    ..self.store.inner.config.limits.clone()
                };
                self.commit_changes(dir, &changes, out, &opts, &staged.join("fs"), &apply)?
            }
        };
        let mut ids = self.parents.clone();
        ids.push(info.diff_id.clone());
        let lease = self.store.lease(&ids)?;
        // `false`: the same layer is already a snapshot; ours goes with the directory.
        self.store.publish(&staged, &info.diff_id)?;
        drop(self);
        Ok(Commit { info, out, lease })
    }

    /// [`commit`](Active::commit) into a content store: the layer is ingested and committed
    /// against the digest and size computed on the way.
    pub fn commit_in_store(
        self,
        store: &dyn Ingester,
        opts: &LayerOptions,
    ) -> Result<(LayerInfo, Lease)> {
        let key = self.key.clone();
        let path = self.dir.clone();
        // The layer pipeline hashes every compressed byte it writes: the store need not.
        let writer =
            store
                .writer_caller_hashed(Algorithm::Sha256)
                .map_err(|e| SnapshotError::Commit {
                    key: key.clone(),
                    path: path.clone(),
                    source: Box::new(LayerError::Store(e)),
                })?;
        let Commit { info, out, lease } = self.commit(writer, opts)?;
        out.commit(Some(info.size), Some(&info.digest))
            .map_err(|e| SnapshotError::Commit {
                key,
                path,
                source: Box::new(LayerError::Store(e)),
            })?;
        Ok((info, lease))
    }

    /// Writes the tar of `changes` once, to the layer pipeline (on this thread) and to the
    /// applier that extracts it into `dest` (on another), with the tar writer on a third.
    fn commit_changes<W: Write>(
        &self,
        root: &Path,
        changes: &[Change],
        out: W,
        opts: &LayerOptions,
        dest: &Path,
        apply: &ApplyOptions,
    ) -> Result<(LayerInfo, W)> {
        let (to_layer, from_writer) = sync_channel::<Chunk>(CHANNEL_DEPTH);
        let (to_snapshot, for_snapshot) = sync_channel::<Chunk>(CHANNEL_DEPTH);
        let tar_opts = opts.tar.clone();
        let (written, applied, layer) = std::thread::scope(|s| {
            let writer = s.spawn(move || {
                let tee = Tee {
                    outs: [to_layer, to_snapshot],
                };
                write_changes(root, changes, tee, &tar_opts).and_then(|tee| {
                    tee.end().map_err(|e| ArchiveError::Io {
                        path: root.to_path_buf(),
                        op: "writing",
                        source: e,
                    })
                })
            });
            let applier = s.spawn(move || {
                let mut reader = HashingReader {
                    inner: ChannelReader::new(for_snapshot),
                    hasher: Algorithm::Sha256.hasher(),
                };
                apply_layer(&mut reader, dest, apply).map(|_| reader.hasher.finish())
            });
            let layer = layer::compress_tar(ChannelReader::new(from_writer), out, opts);
            (
                writer.join().expect("the tar writer does not panic"),
                applier.join().expect("the applier does not panic"),
                layer,
            )
        });
        let commit_error = |source: LayerError| SnapshotError::Commit {
            key: self.key.clone(),
            path: root.to_path_buf(),
            source: Box::new(source),
        };
        let materialize_error = |source: ArchiveError| SnapshotError::Materialize {
            key: self.key.clone(),
            path: dest.to_path_buf(),
            source: Box::new(source),
        };
        // The first failure is the cause; the others only saw their channel close.
        let written = match written {
            Err(e) if !archive_hangup(&e) => {
                return Err(commit_error(LayerError::Archive {
                    dir: root.to_path_buf(),
                    source: e,
                }));
            }
            other => other,
        };
        let (info, out) = match layer {
            Ok(done) => done,
            Err(LayerError::ReadTar(e)) if is_hangup(&e) => match applied {
                Err(a) => return Err(materialize_error(a)),
                Ok(_) => return Err(commit_error(LayerError::ReadTar(e))),
            },
            Err(e) => return Err(commit_error(e)),
        };
        let actual = applied.map_err(materialize_error)?;
        if let Err(e) = written {
            return Err(commit_error(LayerError::Archive {
                dir: root.to_path_buf(),
                source: e,
            }));
        }
        if actual != info.diff_id {
            return Err(SnapshotError::DiffIdMismatch {
                expected: info.diff_id,
                actual,
            });
        }
        Ok((info, out))
    }

    /// Removes the active snapshot now, reporting what [`Drop`] can only log.
    pub fn abort(mut self) -> Result<()> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> Result<()> {
        let Some(lock) = self.lock.take() else {
            return Ok(());
        };
        if overlay::in_use(&overlay::mounts(), &self.dir) {
            // Left for prune, which removes it once the mount is gone.
            lock.release();
            return Err(SnapshotError::Mounted {
                path: self.dir.clone(),
                diff_id: None,
            });
        }
        if let Err(e) = sys::remove_tree(&self.dir) {
            lock.release();
            return Err(SnapshotError::io("removing", &self.dir, e));
        }
        drop(lock);
        Ok(())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            tracing::warn!(key = %self.key, error = %e, "active snapshot left for prune");
        }
    }
}

/// Chunks in flight between the tar writer and each of its readers.
const CHANNEL_DEPTH: usize = 4;

/// A piece of the tar stream, or its end.
enum Chunk {
    Data(Vec<u8>),
    End,
}

/// The error a channel end sees when the other end went away early.
#[derive(Debug)]
struct Hangup;

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the other end of the tar stream stopped")
    }
}

impl std::error::Error for Hangup {}

fn hangup() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, Hangup)
}

fn is_hangup(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Hangup>())
}

fn archive_hangup(e: &ArchiveError) -> bool {
    match e {
        ArchiveError::Io { source, .. } | ArchiveError::Stream { source, .. } => is_hangup(source),
        _ => false,
    }
}

/// Sends every write to two channels.
struct Tee {
    outs: [SyncSender<Chunk>; 2],
}

impl Tee {
    /// Marks the end of the stream, so that the readers can tell it from a writer that died.
    fn end(self) -> io::Result<()> {
        for out in &self.outs {
            out.send(Chunk::End).map_err(|_| hangup())?;
        }
        Ok(())
    }
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for out in &self.outs {
            out.send(Chunk::Data(buf.to_vec())).map_err(|_| hangup())?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads what a [`Tee`] sends; a writer gone before the end is an error.
struct ChannelReader {
    rx: Receiver<Chunk>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ChannelReader {
    fn new(rx: Receiver<Chunk>) -> Self {
        ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Chunk::Data(data)) => {
                    self.buf = data;
                    self.pos = 0;
                }
                Ok(Chunk::End) => self.done = true,
                Err(_) => return Err(hangup()),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tee_feeds_both_readers_and_marks_the_end() {
        let (a_tx, a_rx) = sync_channel(1);
        let (b_tx, b_rx) = sync_channel(1);
        let t = std::thread::spawn(move || {
            let mut tee = Tee { outs: [a_tx, b_tx] };
            tee.write_all(b"hello ").unwrap();
            tee.write_all(b"world").unwrap();
            tee.end().unwrap();
        });
        let rb = std::thread::spawn(move || {
            let mut s = Vec::new();
            ChannelReader::new(b_rx).read_to_end(&mut s).unwrap();
            s
        });
        let mut a = Vec::new();
        ChannelReader::new(a_rx).read_to_end(&mut a).unwrap();
        t.join().unwrap();
        assert_eq!(a, b"hello world");
        assert_eq!(rb.join().unwrap(), b"hello world");
    }

    #[test]
    fn a_writer_gone_early_is_an_error() {
        let (tx, rx) = sync_channel(1);
        tx.send(Chunk::Data(b"partial".to_vec())).unwrap();
        drop(tx);
        let mut s = Vec::new();
        let e = ChannelReader::new(rx).read_to_end(&mut s).unwrap_err();
        assert!(is_hangup(&e));
    }
}
