//! On-disk liveness. Whatever a process is using (a lease, an active snapshot, a work
//! directory) is described by a lock file that the process creates and holds with `flock` for
//! as long as it uses it. The kernel drops the lock when the process dies, however it dies, so
//! a lock file that can be locked by someone else belongs to nobody: what it describes is stale
//! and may be cleaned up.
//!
//! The store-wide lock file (`<root>/lock`) orders registrations against removals: whatever
//! registers a reference or publishes a snapshot holds it shared; `prune` and `remove` hold it
//! exclusive while they decide what to remove, so they never see half-registered state and never
//! remove what a registration has just checked.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::sys::{self, Lock};
use crate::digest::Digest;

/// The store-wide lock, held until dropped.
pub(crate) struct StoreLock {
    _file: File,
}

/// Takes the store-wide lock at `path`, waiting for it.
pub(crate) fn store_lock(path: &Path, lock: Lock) -> io::Result<StoreLock> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    sys::flock(&file, lock, true)?;
    Ok(StoreLock { _file: file })
}

/// What a lock file describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// A [`Lease`](super::Lease).
    Lease,
    /// An active snapshot over overlayfs.
    Overlay,
    /// An active snapshot copied into one directory.
    Copy,
}

/// The content of a lease's or an active snapshot's lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    pub kind: Kind,
    /// The caller's name for an active snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The snapshots referenced.
    pub diff_ids: Vec<Digest>,
    /// The process holding the lock (for people reading the file).
    pub pid: u32,
}

/// A lock file this process holds. On drop the file is removed, then the lock released.
#[derive(Debug)]
pub(crate) struct Held {
    file: File,
    path: PathBuf,
    /// Whether dropping removes the file (not when what it describes is left for later).
    remove: bool,
}

impl Held {
    /// Creates the lock file `path`, which must not exist, and locks it.
    pub(crate) fn create(path: &Path) -> io::Result<Held> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        if !sys::flock(&file, Lock::Exclusive, false)? {
            // Nobody else can have opened a file created a moment ago with O_EXCL, unless
            // a cleanup probed it in between: it will see a live lock on its next look.
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "a fresh lock file is already locked",
            ));
        }
        Ok(Held {
            file,
            path: path.to_path_buf(),
            remove: true,
        })
    }

    /// Locks `path`, creating it if needed and waiting for whoever holds it: a mutex between
    /// processes. The file is removed when the lock is dropped, so a waiter that wakes up
    /// holding a removed file tries again.
    pub(crate) fn acquire(path: &Path) -> io::Result<Held> {
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)?;
            sys::flock(&file, Lock::Exclusive, true)?;
            if same_file(&file, path)? {
                return Ok(Held {
                    file,
                    path: path.to_path_buf(),
                    remove: true,
                });
            }
        }
    }

    /// Replaces the recorded state.
    pub(crate) fn write_state(&self, state: &State) -> io::Result<()> {
        let json = serde_json::to_vec(state).map_err(io::Error::other)?;
        self.file.set_len(0)?;
        self.file.write_all_at(&json, 0)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Releases the lock but leaves the file, so that a later cleanup finds what it describes
    /// stale and deals with it.
    pub(crate) fn release(mut self) {
        self.remove = false;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.remove {
            return;
        }
        // Removed while still locked: nobody can take over a lock file that is about to go.
        if let Err(e) = fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "removing lock file");
            }
        }
    }
}

/// Whether `file` is still the file at `path`.
fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    match fs::metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// What [`probe`] found at a lock file.
#[derive(Debug)]
pub(crate) enum Probe {
    /// There is no such lock file (any more).
    Gone,
    /// A live process holds it.
    Alive,
    /// Nobody held it: now this process does, to clean up what it describes.
    Stale(Held),
}

/// Tells whether the lock file `path` is held by a live process.
pub(crate) fn probe(path: &Path) -> io::Result<Probe> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Gone),
        Err(e) => return Err(e),
    };
    if !sys::flock(&file, Lock::Exclusive, false)? {
        return Ok(Probe::Alive);
    }
    // The owner may have removed and released it between the open and the lock.
    if !same_file(&file, path)? {
        return Ok(Probe::Gone);
    }
    Ok(Probe::Stale(Held {
        file,
        path: path.to_path_buf(),
        remove: true,
    }))
}

/// The state recorded in a lock file, if it can be read.
pub(crate) fn read_state(path: &Path) -> Option<State> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A directory under `<root>/tmp` owned through its lock file `<name>.lock`: an extraction in
/// progress, a snapshot being removed. Dropping it removes the directory, then the lock.
#[derive(Debug)]
pub(crate) struct Workspace {
    dir: PathBuf,
    /// Dropped after the directory is removed (`Drop::drop` runs before the fields drop);
    /// `None` once abandoned.
    lock: Option<Held>,
}

impl Workspace {
    /// Creates `<tmp>/<fresh id>` with its lock.
    pub(crate) fn create(tmp: &Path) -> io::Result<Workspace> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let lock = Held::create(&tmp.join(format!("{id}.lock")))?;
        let dir = tmp.join(&id);
        fs::create_dir(&dir)?;
        Ok(Workspace {
            dir,
            lock: Some(lock),
        })
    }

    /// Takes over an existing directory of `tmp` (left by a dead process) by creating its lock.
    pub(crate) fn adopt(tmp: &Path, name: &str) -> io::Result<Workspace> {
        let lock = Held::create(&tmp.join(format!("{name}.lock")))?;
        Ok(Workspace {
            dir: tmp.join(name),
            lock: Some(lock),
        })
    }

    /// Takes over a stale workspace whose lock this process now holds.
    pub(crate) fn from_stale(dir: PathBuf, lock: Held) -> Workspace {
        Workspace {
            dir,
            lock: Some(lock),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Leaves the directory and its lock file in place, unlocked, for a later cleanup.
    pub(crate) fn abandon(mut self) {
        if let Some(lock) = self.lock.take() {
            lock.release();
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let Some(lock) = self.lock.take() else {
            return;
        };
        if let Err(e) = sys::remove_tree(&self.dir) {
            tracing::warn!(path = %self.dir.display(), error = %e, "removing work directory");
            // Keep the lock file, so that the next prune tries again.
            lock.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_alive_and_a_released_one_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = Held::create(&path).unwrap();
        held.write_state(&State {
            kind: Kind::Lease,
            key: None,
            diff_ids: vec![Digest::sha256(b"a")],
            pid: 1,
        })
        .unwrap();
        assert!(matches!(probe(&path).unwrap(), Probe::Alive));
        assert_eq!(read_state(&path).unwrap().diff_ids, [Digest::sha256(b"a")]);
        drop(held);
        assert!(!path.exists());
        assert!(matches!(probe(&path).unwrap(), Probe::Gone));
    }

    #[test]
    fn a_lock_file_nobody_holds_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        fs::write(&path, b"{}").unwrap();
        let Probe::Stale(held) = probe(&path).unwrap() else {
            panic!("expected a stale lock");
        };
        // While this process holds it, it is alive to everyone else.
        assert!(matches!(probe(&path).unwrap(), Probe::Alive));
        drop(held);
        assert!(!path.exists());
    }

    #[test]
    fn acquire_is_a_mutex() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.lock");
        let first = Held::acquire(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let held = Held::acquire(&p).unwrap();
            tx.send(()).unwrap();
            drop(held);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            rx.try_recv().is_err(),
            "the waiter got the lock while it was held"
        );
        drop(first);
        rx.recv().unwrap();
        waiter.join().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_workspace_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::create(dir.path()).unwrap();
        fs::create_dir_all(ws.path().join("a/b")).unwrap();
        drop(ws);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
