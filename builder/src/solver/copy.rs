//! `COPY` from the build context into a step's root (a copy snapshot), and `WORKDIR`'s
//! directory. Paths inside the root are resolved as in a chroot: a symlink met on the way is
//! followed inside the root, never out of it.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, lchown, symlink};
use std::path::{Component, Path, PathBuf};

use crate::context::{Context, Entry, FileKind};
use crate::instructions::{Chmod, Copy};

/// How many symlinks a path may go through.
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` (absolute, inside the container) under `root`, following every symlink
/// inside the root. Missing components are kept as they are.
pub(super) fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut pending: Vec<OsString> = components(path);
    pending.reverse();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        match fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links in {}",
                        path.display()
                    )));
                }
                let target = fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            _ => resolved.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// Creates the directory `dir` (absolute, inside the container) and its missing parents,
/// `0755` and owned by root, as BuildKit's `mkdir -p` does. Returns whether anything was made.
pub(super) fn mkdir_in_root(root: &Path, dir: &Path) -> io::Result<bool> {
    let mut created = false;
    let mut current = PathBuf::from("/");
    for part in components(dir) {
        current.push(&part);
        let host = resolve_in_root(root, &current)?;
        match fs::symlink_metadata(&host) {
            Ok(md) if md.is_dir() => continue,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", current.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new().mode(0o755).create(&host)?;
                fs::set_permissions(&host, fs::Permissions::from_mode(0o755))?;
                lchown(&host, Some(0), Some(0))?;
                created = true;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// Whether the file at `path` is an archive `ADD` would unpack: tar (at offset 257, `ustar`),
/// or gzip, bzip2, xz or zstd compressed.
pub(super) fn is_archive(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 262];
    let Ok(mut file) = fs::File::open(path) else {
        return false;
    };
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let head = &head[..n];
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.get(257..262) == Some(b"ustar")
}

/// Owner and mode for what a COPY writes.
struct Attrs {
    uid: u32,
    gid: u32,
    chmod: Option<u32>,
}

/// `--chown` (uid and gid) and `--chmod`.
type Flags = (Option<(u32, u32)>, Option<u32>);

/// `--chown` (resolved in the destination root) and `--chmod`.
/// Where a COPY of `sources` sources lands: the absolute destination, and whether
/// it is a directory (a trailing `/` or `/.`, `.`, several sources, or an existing directory).
fn destination(
    root: &Path,
    workdir: Option<&str>,
    dest: &str,
    sources: usize,
) -> Result<(String, bool), String> {
    let absolute = super::absolute(workdir, dest);
    let host = resolve_in_root(root, Path::new(&absolute)).map_err(|e| e.to_string())?;
    let is_dir = dest.ends_with('/')
        || dest.ends_with("/.")
        || dest == "."
        || sources > 1
        || fs::metadata(&host).is_ok_and(|m| m.is_dir());
    Ok((absolute, is_dir))
}

fn flags(root: &Path, copy: &Copy) -> Result<Flags, String> {
    let owner = match &copy.chown {
        Some(chown) => {
            let user = berth_runner::sandbox::resolve_user(root, chown)
                .map_err(|e| format!("--chown={chown}: {e}"))?;
            Some((user.uid, user.gid))
        }
        None => None,
    };
    let chmod = match &copy.chmod {
        None => None,
        Some(Chmod::Octal(mode)) => Some(*mode),
        Some(Chmod::Symbolic(s)) => {
            return Err(format!("--chmod={s}: symbolic modes are not supported yet"));
        }
    };
    Ok((owner, chmod))
}

/// Copies the sources of `copy` from the root filesystem `src` (a stage's or an image's, as
/// `COPY --from` names it) into `root`. Sources are resolved inside `src`, symlinks followed;
/// owners are kept unless `--chown` is given. Wildcards are not supported yet.
pub(super) fn copy_from_root(
    src: &Path,
    root: &Path,
    workdir: Option<&str>,
    copy: &Copy,
) -> Result<(), String> {
    let (owner, chmod) = flags(root, copy)?;
    let mut selected: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    for source in &copy.sources {
        if source.contains(['*', '?', '[']) {
            return Err(format!(
                "{source}: wildcards in COPY --from are not supported yet"
            ));
        }
        let path = super::absolute(None, source);
        let host = resolve_in_root(src, Path::new(&path)).map_err(|e| e.to_string())?;
        let md = fs::symlink_metadata(&host)
            .map_err(|e| format!("failed to compute cache key: {source:?}: {e}"))?;
        selected.push((host, md));
    }
    let (dest, dest_is_dir) = destination(root, workdir, &copy.dest, selected.len())?;
    let io_err = |what: &Path, e: io::Error| format!("{}: {e}", what.display());
    for (host, md) in &selected {
        if md.is_dir() {
            mkdir_in_root(root, Path::new(&dest)).map_err(|e| io_err(Path::new(&dest), e))?;
            let walk = walkdir::WalkDir::new(host).min_depth(1).sort_by_file_name();
            for item in walk {
                let item = item.map_err(|e| e.to_string())?;
                let rel = item.path().strip_prefix(host).map_err(|e| e.to_string())?;
                let target = Path::new(&dest).join(rel);
                let md = item.metadata().map_err(|e| e.to_string())?;
                place_host(item.path(), &md, root, &target, owner, chmod)
                    .map_err(|e| io_err(&target, e))?;
            }
        } else {
            let target = if dest_is_dir {
                Path::new(&dest).join(host.file_name().unwrap_or_default())
            } else {
                PathBuf::from(&dest)
            };
            if let Some(parent) = target.parent() {
                mkdir_in_root(root, parent).map_err(|e| io_err(parent, e))?;
            }
            place_host(host, md, root, &target, owner, chmod).map_err(|e| io_err(&target, e))?;
        }
    }
    Ok(())
}

/// Writes the file `src` (metadata `md`, not followed) at `target` (absolute, inside the
/// container), keeping its owner unless `owner` is given.
fn place_host(
    src: &Path,
    md: &fs::Metadata,
    root: &Path,
    target: &Path,
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let parent = target.parent().unwrap_or(Path::new("/"));
    let name = target.file_name().unwrap_or_default();
    let host = resolve_in_root(root, parent)?.join(name);
    let existing = fs::symlink_metadata(&host).ok();
    let (uid, gid) = owner.unwrap_or((md.uid(), md.gid()));
    let mode = chmod.unwrap_or(md.mode() & 0o7777);
    let clear = |existing: Option<fs::Metadata>| -> io::Result<()> {
        match existing {
            Some(e) if e.is_dir() => fs::remove_dir_all(&host),
            Some(_) => fs::remove_file(&host),
            None => Ok(()),
        }
    };
    let kind = md.file_type();
    if kind.is_dir() {
        if !existing.as_ref().is_some_and(fs::Metadata::is_dir) {
            clear(existing)?;
            fs::create_dir(&host)?;
        }
        lchown(&host, Some(uid), Some(gid))?;
        fs::set_permissions(&host, fs::Permissions::from_mode(mode))?;
    } else if kind.is_file() {
        clear(existing)?;
        fs::copy(src, &host)?;
        lchown(&host, Some(uid), Some(gid))?;
        fs::set_permissions(&host, fs::Permissions::from_mode(mode))?;
        let file = fs::File::options().write(true).open(&host)?;
        file.set_modified(md.modified()?)?;
    } else if kind.is_symlink() {
        clear(existing)?;
        symlink(fs::read_link(src)?, &host)?;
        lchown(&host, Some(uid), Some(gid))?;
    } else {
        return Err(io::Error::other(format!(
            "{}: special files cannot be copied yet",
            src.display()
        )));
    }
    Ok(())
}

/// Copies the sources of `copy` from `context` into `root`, as `COPY` does.
pub(super) fn copy_from_context(
    context: &Context,
    root: &Path,
    workdir: Option<&str>,
    copy: &Copy,
) -> Result<(), String> {
    let (owner, chmod) = flags(root, copy)?;
    let (uid, gid) = owner.unwrap_or((0, 0));
    let attrs = Attrs { uid, gid, chmod };

    let mut selected: Vec<Entry> = Vec::new();
    for source in &copy.sources {
        let entries = context
            .select(source)
            .map_err(|e| format!("failed to compute cache key: {e}"))?;
        if entries.is_empty() {
            return Err(format!(
                "no source files were specified or matched {source:?}"
            ));
        }
        selected.extend(entries);
    }
    let (dest, dest_is_dir) = destination(root, workdir, &copy.dest, selected.len())?;
    let io_err = |what: &Path, e: io::Error| format!("{}: {e}", what.display());

    for entry in &selected {
        if entry.is_dir() {
            mkdir_in_root(root, Path::new(&dest)).map_err(|e| io_err(Path::new(&dest), e))?;
            let walk = context
                .walk_dir(&entry.path.to_string_lossy())
                .map_err(|e| e.to_string())?;
            for item in walk {
                let item = item.map_err(|e| e.to_string())?;
                let rel = if entry.path == Path::new(".") {
                    item.path.clone()
                } else {
                    item.path
                        .strip_prefix(&entry.path)
                        .map_err(|e| e.to_string())?
                        .to_path_buf()
                };
                let target = Path::new(&dest).join(rel);
                place(context, root, &item, &target, &attrs).map_err(|e| io_err(&target, e))?;
            }
        } else {
            let target = if dest_is_dir {
                let name = entry.path.file_name().unwrap_or_default();
                Path::new(&dest).join(name)
            } else {
                PathBuf::from(&dest)
            };
            if let Some(parent) = target.parent() {
                mkdir_in_root(root, parent).map_err(|e| io_err(parent, e))?;
            }
            place(context, root, entry, &target, &attrs).map_err(|e| io_err(&target, e))?;
        }
    }
    Ok(())
}

/// Writes one context entry at `target` (absolute, inside the container).
fn place(
    context: &Context,
    root: &Path,
    entry: &Entry,
    target: &Path,
    attrs: &Attrs,
) -> io::Result<()> {
    let parent = target.parent().unwrap_or(Path::new("/"));
    let name = target.file_name().unwrap_or_default();
    let host = resolve_in_root(root, parent)?.join(name);
    let existing = fs::symlink_metadata(&host).ok();
    let mode = attrs.chmod.unwrap_or(entry.mode);
    match entry.kind {
        FileKind::Dir => {
            match existing {
                Some(md) if md.is_dir() => {}
                Some(_) => {
                    fs::remove_file(&host)?;
                    fs::create_dir(&host)?;
                }
                None => fs::create_dir(&host)?,
            }
            lchown(&host, Some(attrs.uid), Some(attrs.gid))?;
            fs::set_permissions(&host, fs::Permissions::from_mode(mode))?;
        }
        FileKind::File => {
            if let Some(md) = existing {
                if md.is_dir() {
                    fs::remove_dir_all(&host)?;
                } else {
                    fs::remove_file(&host)?;
                }
            }
            fs::copy(context.host_path(entry), &host)?;
            lchown(&host, Some(attrs.uid), Some(attrs.gid))?;
            fs::set_permissions(&host, fs::Permissions::from_mode(mode))?;
            let file = fs::File::options().write(true).open(&host)?;
            let mtime = std::time::UNIX_EPOCH
                + std::time::Duration::new(entry.mtime.secs.max(0) as u64, entry.mtime.nanos);
            file.set_modified(mtime)?;
        }
        FileKind::Symlink => {
            if let Some(md) = existing {
                if md.is_dir() {
                    fs::remove_dir_all(&host)?;
                } else {
                    fs::remove_file(&host)?;
                }
            }
            let link = entry.link_target.clone().unwrap_or_default();
            symlink(link, &host)?;
            lchown(&host, Some(attrs.uid), Some(attrs.gid))?;
        }
        other => {
            return Err(io::Error::other(format!(
                "{}: a {other:?} cannot be copied",
                entry.path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("real")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../..", root.join("real/up")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/abs/x")).unwrap(),
            root.join("real/x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/real/up/etc")).unwrap(),
            root.join("etc")
        );
    }

    #[test]
    fn archives_are_recognized() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, "hello").unwrap();
        assert!(!is_archive(&plain));
        let gz = dir.path().join("x.gz");
        fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(is_archive(&gz));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        let t = dir.path().join("x.tar");
        fs::write(&t, tar).unwrap();
        assert!(is_archive(&t));
    }

    #[test]
    fn mkdir_reports_whether_it_made_something() {
        let dir = tempfile::tempdir().unwrap();
        assert!(mkdir_in_root(dir.path(), Path::new("/a/b")).unwrap());
        assert!(dir.path().join("a/b").is_dir());
        assert!(!mkdir_in_root(dir.path(), Path::new("/a/b")).unwrap());
    }
}
