//! The few system calls the snapshot store needs beyond `std`: advisory locks, a rename that
//! never replaces, device nodes, `syncfs`, and a tree removal that copes with read-only
//! directories.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// How [`flock`] locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    Shared,
    Exclusive,
}

/// `flock(2)`: waits for the lock when `wait`, else returns `Ok(false)` when another open file
/// description holds a conflicting lock. Locks belong to the open file description, so two
/// opens of the same file in one process exclude each other as two processes do.
pub(crate) fn flock(file: &File, lock: Lock, wait: bool) -> io::Result<bool> {
    let mut op = match lock {
        Lock::Shared => libc::LOCK_SH,
        Lock::Exclusive => libc::LOCK_EX,
    };
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

/// Renames `from` to `to` unless `to` exists: `Ok(false)` then, and `from` is left alone.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<bool> {
    let (f, t) = (cstring(from)?, cstring(to)?);
    // SAFETY: both paths are NUL-terminated; AT_FDCWD resolves them as given.
    let ret = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if ret == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => Ok(false),
        // A filesystem without RENAME_NOREPLACE: a plain rename still refuses a non-empty
        // directory, and nothing in the store makes an empty one at a snapshot's path.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => match fs::rename(from, to) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) => {
                Ok(false)
            }
            Err(e) => Err(e),
        },
        _ => Err(err),
    }
}

/// `mknod(2)`: `mode` carries the file type bits.
pub(crate) fn mknod(path: &Path, mode: u32, dev: u64) -> io::Result<()> {
    let p = cstring(path)?;
    // SAFETY: `p` is NUL-terminated.
    check(unsafe { libc::mknod(p.as_ptr(), mode as libc::mode_t, dev as libc::dev_t) })
}

/// `syncfs(2)` on the filesystem that holds `file`.
pub(crate) fn syncfs(file: &File) -> io::Result<()> {
    // SAFETY: a descriptor owned by `file`, which outlives the call.
    check(unsafe { libc::syncfs(file.as_raw_fd()) })
}

/// The effective user id of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Makes the directory entries of `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes `path` and everything under it, without following symlinks; a missing `path` is not
/// an error. Directories whose permissions forbid it (a layer's `0555` directory, when not
/// root) are opened up first.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return match fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            for entry in walkdir::WalkDir::new(path).follow_links(false) {
                let Ok(entry) = entry else { continue };
                if entry.file_type().is_dir() {
                    if let Ok(meta) = entry.metadata() {
                        let mode = meta.mode() & 0o7777;
                        if mode & 0o700 != 0o700 {
                            let _ = fs::set_permissions(
                                entry.path(),
                                fs::Permissions::from_mode(mode | 0o700),
                            );
                        }
                    }
                }
            }
            match fs::remove_dir_all(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_noreplace_keeps_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        fs::create_dir(&a).unwrap();
        fs::write(a.join("f"), b"a").unwrap();
        fs::create_dir(&b).unwrap();
        fs::write(b.join("f"), b"b").unwrap();
        assert!(!rename_noreplace(&a, &b).unwrap());
        assert_eq!(fs::read(b.join("f")).unwrap(), b"b");
        assert!(a.exists());
        assert!(rename_noreplace(&a, &c).unwrap());
        assert!(!a.exists());
        assert_eq!(fs::read(c.join("f")).unwrap(), b"a");
    }

    #[test]
    fn flock_excludes_other_open_file_descriptions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let one = File::create(&path).unwrap();
        let two = File::open(&path).unwrap();
        assert!(flock(&one, Lock::Exclusive, false).unwrap());
        assert!(!flock(&two, Lock::Shared, false).unwrap());
        drop(one);
        assert!(flock(&two, Lock::Shared, false).unwrap());
    }

    #[test]
    fn remove_tree_opens_up_read_only_directories() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("t");
        fs::create_dir_all(top.join("ro/sub")).unwrap();
        fs::write(top.join("ro/sub/f"), b"x").unwrap();
        fs::set_permissions(top.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        remove_tree(&top).unwrap();
        assert!(!top.exists());
        remove_tree(&top).unwrap();
    }
}
