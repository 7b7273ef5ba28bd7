//! Mount stubs: the empty files and directories the runtime creates in the root filesystem for
//! mount destinations that do not exist (`/proc`, `/etc/hosts`, ...).
//!
//! With an overlay root filesystem they would land in the upper directory and so in the
//! layer. As BuildKit does, the sandbox notes every destination that is missing before the run
//! (and every missing parent), and afterwards removes those that are still empty; the times of
//! the directory that held them are put back. On top of that, a directory that overlayfs copied
//! up only because a stub was created in it is removed from the upper directory once the overlay
//! is unmounted, when it is empty, not opaque and identical to its lower copy.
//!
//! Which destinations are noted is the caller's list ([`super::spec::stub_destinations`]):
//! the stubs of `/proc`, `/dev` and `/sys` are never among them and stay, as they stay in
//! `docker build`'s images. With [`MountStubs::KeepDirectories`] only empty file stubs are
//! removed, as docker 20.10 does.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsString};
use std::fs::{self, File, FileTimes};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::MountStubs;
use super::mount::Overlay;
use super::path::{is_missing, resolve_in_root};

/// The xattr overlayfs marks an opaque directory with.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The prefix of overlayfs's private xattrs, which copy-up may add and which carry no content.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// A directory that existed before the run and that a stub chain starts in.
#[derive(Debug)]
struct Anchor {
    path: PathBuf,
    accessed: SystemTime,
    modified: SystemTime,
    entries: BTreeSet<OsString>,
}

/// What was missing before the run, and what is needed to undo the runtime's stubs.
#[derive(Debug)]
pub(crate) struct Stubs {
    /// Host paths of missing destinations and their missing parents, deepest first.
    missing: Vec<PathBuf>,
    anchors: Vec<Anchor>,
    /// For an overlay: every anchor and its parents, relative to the root, with whether the
    /// upper directory held it before the run.
    upper_before: BTreeMap<PathBuf, bool>,
    /// Which stubs are removed.
    policy: MountStubs,
}

fn depth(path: &Path) -> usize {
    path.components().count()
}

impl Stubs {
    /// Notes which of `destinations` (container paths) are missing in the root filesystem at
    /// `rootfs` (the merged directory for an overlay).
    pub(crate) fn record(
        rootfs: &Path,
        destinations: &[PathBuf],
        overlay: Option<&Overlay>,
        policy: MountStubs,
    ) -> io::Result<Stubs> {
        let mut missing = BTreeSet::new();
        let mut anchors: BTreeMap<PathBuf, Anchor> = BTreeMap::new();
        for dest in destinations {
            let mut path = resolve_in_root(rootfs, dest)?;
            let mut walked = false;
            while path != rootfs && path.starts_with(rootfs) {
                match fs::symlink_metadata(&path) {
                    Ok(_) => break,
                    Err(err) if is_missing(&err) => {
                        missing.insert(path.clone());
                        walked = true;
                        path.pop();
                    }
                    Err(err) => return Err(err),
                }
            }
            if walked && !anchors.contains_key(&path) {
                let meta = fs::metadata(&path)?;
                let entries = fs::read_dir(&path)?
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<io::Result<_>>()?;
                anchors.insert(
                    path.clone(),
                    Anchor {
                        path,
                        accessed: meta.accessed()?,
                        modified: meta.modified()?,
                        entries,
                    },
                );
            }
        }
        let mut missing: Vec<PathBuf> = missing.into_iter().collect();
        missing.sort_by_key(|p| std::cmp::Reverse(depth(p)));

        let mut upper_before = BTreeMap::new();
        if let Some(overlay) = overlay {
            for anchor in anchors.keys() {
                let mut rel = anchor
                    .strip_prefix(rootfs)
                    .unwrap_or(Path::new(""))
                    .to_path_buf();
                while rel.components().next().is_some() {
                    let existed = fs::symlink_metadata(overlay.upper.join(&rel)).is_ok();
                    upper_before.insert(rel.clone(), existed);
                    rel.pop();
                }
            }
        }
        Ok(Stubs {
            missing,
            anchors: anchors.into_values().collect(),
            upper_before,
            policy,
        })
    }

    /// Removes the stubs that are still empty (only the files with
    /// [`MountStubs::KeepDirectories`]), deepest first, and puts back the times of the
    /// directories that held them. Run while the root filesystem is still mounted.
    pub(crate) fn remove(&self) {
        // The times the runtime left, to put back when the command changed the directory too.
        let after: Vec<Option<(SystemTime, SystemTime)>> = self
            .anchors
            .iter()
            .map(|a| {
                let meta = fs::metadata(&a.path).ok()?;
                Some((meta.accessed().ok()?, meta.modified().ok()?))
            })
            .collect();

        for path in &self.missing {
            let Ok(meta) = fs::symlink_metadata(path) else {
                continue;
            };
            let result = if meta.is_dir() {
                if self.policy == MountStubs::KeepDirectories {
                    continue;
                }
                match fs::read_dir(path).map(|mut entries| entries.next().is_none()) {
                    Ok(true) => fs::remove_dir(path),
                    _ => continue,
                }
            } else if meta.file_type().is_file() && meta.len() == 0 {
                fs::remove_file(path)
            } else {
                continue;
            };
            if let Err(err) = result {
                tracing::warn!(path = %path.display(), %err, "cannot remove mount stub");
            }
        }

        for (anchor, after) in self.anchors.iter().zip(after) {
            let Ok(meta) = fs::metadata(&anchor.path) else {
                continue;
            };
            let entries: Option<BTreeSet<OsString>> = fs::read_dir(&anchor.path)
                .and_then(|d| d.map(|e| e.map(|e| e.file_name())).collect())
                .ok();
            // Unchanged apart from the stubs: its times before the run are the right ones.
            // Otherwise the command changed it as well, and the times it had are kept.
            let target = if entries.as_ref() == Some(&anchor.entries) {
                Some((anchor.accessed, anchor.modified))
            } else {
                after
            };
            let Some((accessed, modified)) = target else {
                continue;
            };
            if meta.accessed().ok() == Some(accessed) && meta.modified().ok() == Some(modified) {
                continue;
            }
            let times = FileTimes::new()
                .set_accessed(accessed)
                .set_modified(modified);
            if let Err(err) = File::open(&anchor.path).and_then(|f| f.set_times(times)) {
                tracing::warn!(path = %anchor.path.display(), %err, "cannot restore directory times");
            }
        }
    }

    /// After the overlay is unmounted: removes from the upper directory the directories that
    /// overlayfs copied up only to hold stubs.
    pub(crate) fn prune_copy_ups(&self, overlay: &Overlay) {
        let mut candidates: Vec<&PathBuf> = self
            .upper_before
            .iter()
            .filter(|(_, existed)| !**existed)
            .map(|(rel, _)| rel)
            .collect();
        candidates.sort_by_key(|p| std::cmp::Reverse(depth(p)));
        for rel in candidates {
            let upper = overlay.upper.join(rel);
            match is_pure_copy_up(&upper, rel, overlay) {
                Ok(true) => {
                    if let Err(err) = fs::remove_dir(&upper) {
                        tracing::warn!(path = %upper.display(), %err, "cannot remove copied-up directory");
                    }
                }
                Ok(false) => {}
                Err(err) if is_missing(&err) => {}
                Err(err) => {
                    tracing::warn!(path = %upper.display(), %err, "cannot inspect copied-up directory");
                }
            }
        }
    }
}

/// Whether `upper` is an empty, non-opaque directory with the same mode, owner, times and
/// xattrs as the topmost lower directory at `rel`.
fn is_pure_copy_up(upper: &Path, rel: &Path, overlay: &Overlay) -> io::Result<bool> {
    let meta = fs::symlink_metadata(upper)?;
    if !meta.is_dir() || fs::read_dir(upper)?.next().is_some() {
        return Ok(false);
    }
    if get_xattr(upper, OPAQUE_XATTR)?.is_some() {
        return Ok(false);
    }
    let Some(lower) = overlay
        .lower
        .iter()
        .map(|l| l.join(rel))
        .find(|p| fs::symlink_metadata(p).is_ok())
    else {
        return Ok(false);
    };
    let lower_meta = fs::symlink_metadata(&lower)?;
    if !lower_meta.is_dir() {
        return Ok(false);
    }
    let same = meta.mode() == lower_meta.mode()
        && meta.uid() == lower_meta.uid()
        && meta.gid() == lower_meta.gid()
        && meta.mtime() == lower_meta.mtime()
        && meta.mtime_nsec() == lower_meta.mtime_nsec()
        && content_xattrs(upper)? == content_xattrs(&lower)?;
    Ok(same)
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// One xattr of `path` (not following a symlink), or `None` when it is not set.
fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = cpath(path)?;
    let n = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `p` and `n` are NUL-terminated; `buf` is valid for `buf.len()` bytes.
        let len =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if len >= 0 {
            buf.truncate(len as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// The xattrs of `path` other than overlayfs's own.
fn content_xattrs(path: &Path) -> io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let p = cpath(path)?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: `p` is NUL-terminated; `names` is valid for `names.len()` bytes.
        let len = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if len >= 0 {
            break len as usize;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(BTreeMap::new()),
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            _ => return Err(err),
        }
    };
    let mut out = BTreeMap::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        let name_str = String::from_utf8_lossy(name).into_owned();
        if let Some(value) = get_xattr(path, &name_str)? {
            out.insert(name.to_vec(), value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_empty_stubs_and_restores_times() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/passwd"), "root:x:0:0::/:\n").unwrap();
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::open(root.join("etc"))
            .unwrap()
            .set_times(FileTimes::new().set_accessed(old).set_modified(old))
            .unwrap();

        let dests: Vec<PathBuf> = ["/proc", "/dev/pts", "/etc/hosts", "/etc/passwd", "/data"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let stubs = Stubs::record(&root, &dests, None, MountStubs::Remove).unwrap();

        // What a runtime does: stubs for every missing destination.
        fs::create_dir_all(root.join("proc")).unwrap();
        fs::create_dir_all(root.join("dev/pts")).unwrap();
        fs::write(root.join("etc/hosts"), "").unwrap();
        // The command wrote into one of the mount points: that one is kept.
        fs::create_dir_all(root.join("data")).unwrap();
        fs::write(root.join("data/out"), "x").unwrap();

        stubs.remove();
        assert!(!root.join("proc").exists());
        assert!(!root.join("dev").exists());
        assert!(!root.join("etc/hosts").exists());
        assert!(root.join("etc/passwd").exists());
        assert!(root.join("data/out").exists());
        assert_eq!(
            fs::metadata(root.join("etc")).unwrap().modified().unwrap(),
            old
        );
    }

    #[test]
    fn non_empty_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        let stubs = Stubs::record(
            root,
            &[PathBuf::from("/etc/hostname")],
            None,
            MountStubs::Remove,
        )
        .unwrap();
        fs::write(root.join("etc/hostname"), "written by the command\n").unwrap();
        stubs.remove();
        assert!(root.join("etc/hostname").exists());
    }

    #[test]
    fn keep_directories_removes_only_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        let dests: Vec<PathBuf> = ["/etc/hosts", "/run/secrets/token", "/cache/app"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let stubs = Stubs::record(root, &dests, None, MountStubs::KeepDirectories).unwrap();
        fs::write(root.join("etc/hosts"), "").unwrap();
        fs::create_dir_all(root.join("run/secrets")).unwrap();
        fs::write(root.join("run/secrets/token"), "").unwrap();
        fs::create_dir_all(root.join("cache/app")).unwrap();
        stubs.remove();
        assert!(!root.join("etc/hosts").exists());
        assert!(!root.join("run/secrets/token").exists());
        assert!(root.join("run/secrets").is_dir());
        assert!(root.join("cache/app").is_dir());
    }
}
