//! `WORKDIR`'s directory, made as BuildKit's file operation makes it: `mkdir -p` with mode
//! `0755`, each directory it creates owned by the stage's `USER`, existing ones untouched.
//!
//! The owner follows BuildKit's `llb.WithUser` and its `readUser`, not runc's rules for the
//! process user: a numeric user is its own group (`USER 4242` makes `4242:4242`), a name is
//! looked up in the image's `/etc/passwd` for its uid and primary gid, and `:group` takes the
//! group by gid or by name from `/etc/group`. A name that is not listed leaves the id at 0, as
//! docker 20.10's BuildKit does.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, lchown};
use std::path::{Component, Path, PathBuf};

use berth_runner::sandbox::resolve_user;

use super::copy::resolve_in_root;

/// The owner (uid, gid) of the directories `WORKDIR` creates while `user` is the stage's
/// `USER`, resolved in the root filesystem at `root`.
pub(super) fn owner(root: &Path, user: &str) -> (u32, u32) {
    if user.is_empty() {
        return (0, 0);
    }
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, mut gid) = match name.parse::<u32>() {
        Ok(id) => (id, id),
        Err(_) => resolve_user(root, name).map_or((0, 0), |u| (u.uid, u.gid)),
    };
    if let Some(group) = group {
        gid = match group.parse::<u32>() {
            Ok(id) => id,
            Err(_) => resolve_user(root, &format!("0:{group}")).map_or(gid, |u| u.gid),
        };
    }
    (uid, gid)
}

/// Creates `dir` (absolute, inside the container) and its missing parents under `root`, mode
/// `0755` and owned by `uid:gid`. Symlinks on the way are followed inside the root.
pub(super) fn mkdir_all(root: &Path, dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let mut current = PathBuf::from("/");
    for part in dir.components() {
        match part {
            Component::Normal(name) => current.push(name),
            Component::ParentDir => {
                current.pop();
                continue;
            }
            _ => continue,
        }
        let host = resolve_in_root(root, &current)?;
        match fs::symlink_metadata(&host) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", current.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new().mode(0o755).create(&host)?;
                fs::set_permissions(&host, fs::Permissions::from_mode(0o755))?;
                lchown(&host, Some(uid), Some(gid))?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn root_with_users() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc")).unwrap();
        fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n\
             nobody:x:65534:65534::/:/bin/false\n",
        )
        .unwrap();
        fs::write(
            root.path().join("etc/group"),
            "root:x:0:\nstaff:x:50:app\napp:x:1000:\n",
        )
        .unwrap();
        root
    }

    #[test]
    fn owners_follow_buildkit() {
        let root = root_with_users();
        let r = root.path();
        assert_eq!(owner(r, ""), (0, 0));
        assert_eq!(owner(r, "app"), (1000, 1000));
        assert_eq!(owner(r, "4242"), (4242, 4242));
        assert_eq!(owner(r, "1000:50"), (1000, 50));
        assert_eq!(owner(r, "app:staff"), (1000, 50));
        assert_eq!(owner(r, "nobody:nogroup"), (65534, 65534));
        assert_eq!(owner(r, "ghost"), (0, 0));
    }

    #[test]
    fn mkdir_all_owns_only_what_it_creates() {
        if !running_as_root() {
            return;
        }
        let root = root_with_users();
        let r = root.path();
        fs::create_dir(r.join("existing")).unwrap();
        mkdir_all(r, Path::new("/existing/a/b"), 1000, 1000).unwrap();
        assert_eq!(fs::metadata(r.join("existing")).unwrap().uid(), 0);
        let made = fs::metadata(r.join("existing/a/b")).unwrap();
        assert_eq!(
            (made.uid(), made.gid(), made.mode() & 0o7777),
            (1000, 1000, 0o755)
        );
        fs::write(r.join("file"), "").unwrap();
        assert!(mkdir_all(r, Path::new("/file/x"), 0, 0).is_err());
    }

    fn running_as_root() -> bool {
        fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }
}
