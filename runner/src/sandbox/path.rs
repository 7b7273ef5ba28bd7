//! Paths inside a root filesystem, resolved the way the runtime resolves them.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// How many symlinks one resolution may follow, as Linux allows (`MAXSYMLINKS` is 40; the
/// runtime's secure join allows 255).
const MAX_SYMLINKS: usize = 255;

/// Resolves `path`, a path inside the container, to a path on the host under `root`.
///
/// Symlinks are followed with `root` as `/`, so an absolute link target or a `..` can never
/// leave `root`; this is what the runtime does when it resolves a mount destination, so the
/// result names the file the runtime will create or mount over. Components that do not exist
/// are appended as they are (a `..` among them is applied lexically).
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = components(path).collect();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        match std::fs::symlink_metadata(root.join(&candidate)) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(root.join(&candidate))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for part in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(part);
                }
            }
            Ok(_) => resolved = candidate,
            Err(err) if is_missing(&err) => {
                resolved = candidate;
                for part in pending.drain(..) {
                    if part == ".." {
                        resolved.pop();
                    } else {
                        resolved.push(part);
                    }
                }
            }
            Err(err) => return Err(err),
        }
    }
    Ok(root.join(resolved))
}

/// Whether an error from `lstat` means the path does not exist (including a file standing
/// where a directory was expected).
pub(crate) fn is_missing(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ENOTDIR)
}

/// The normal and `..` components of a path; `/` and `.` carry nothing here.
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(part) => Some(part.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn plain_and_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/etc/hosts")).unwrap(),
            root.join("etc/hosts")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/a/b/../c")).unwrap(),
            root.join("a/c")
        );
    }

    #[test]
    fn symlinks_stay_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/etc")).unwrap();
        symlink("/usr/etc", root.join("etc")).unwrap();
        symlink("../../../../../outside", root.join("usr/escape")).unwrap();
        symlink(
            "../run/systemd/resolv.conf",
            root.join("usr/etc/resolv.conf"),
        )
        .unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/etc/passwd")).unwrap(),
            root.join("usr/etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/usr/escape/x")).unwrap(),
            root.join("outside/x")
        );
        // A dangling link resolves to its target, which is where the runtime would mount.
        assert_eq!(
            resolve_in_root(root, Path::new("/etc/resolv.conf")).unwrap(),
            root.join("usr/run/systemd/resolv.conf")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/../../etc")).unwrap(),
            root.join("usr/etc")
        );
    }

    #[test]
    fn symlink_loops_fail() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        symlink("/b", root.join("a")).unwrap();
        symlink("/a", root.join("b")).unwrap();
        let err = resolve_in_root(root, Path::new("/a/x")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    }
}
