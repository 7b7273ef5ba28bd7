//! Trees: the merged view of a stack of snapshots, a copy of that view (the fallback when
//! overlayfs is not available), the two-tree diff of such a copy against the view, and the
//! changes an overlayfs upper directory records.
//!
//! Snapshots keep their whiteouts the way overlayfs keeps them in an upper directory: a
//! character device 0/0 for a deleted name, the `overlay.opaque` attribute for a directory that
//! hides what lower layers had. The merged view follows overlayfs' rules: the topmost layer that
//! has a name decides what it is; a directory merges with the directories of the same name
//! below it, down to the first layer where it is opaque, or where the name is a whiteout or not
//! a directory.
//!
//! Every walk is iterative, so a deep tree cannot overflow the stack.

use std::collections::btree_map::{self, BTreeMap};
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use filetime::FileTime;

use super::sys;
use crate::archive::{Change, ChangeKind, OverlayNamespace};

/// Prefixes of overlayfs' own attributes: never copied, never compared.
const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// An I/O error on a path of one of the trees.
#[derive(Debug)]
pub(crate) struct TreeError {
    pub path: PathBuf,
    pub op: &'static str,
    pub source: io::Error,
}

trait At<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T, TreeError>;
}

impl<T> At<T> for io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T, TreeError> {
        self.map_err(|source| TreeError {
            path: path.to_path_buf(),
            op,
            source,
        })
    }
}

/// overlayfs records a deletion as a character device 0/0.
pub(crate) fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether the directory at `path` is marked opaque in the namespace `ns`.
pub(crate) fn is_opaque(path: &Path, ns: OverlayNamespace) -> io::Result<bool> {
    let name = OsStr::from_bytes(ns.opaque_xattr().to_bytes());
    match xattr::get(path, name) {
        Ok(value) => Ok(value.as_deref() == Some(b"y")),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(false),
        Err(e) => Err(e),
    }
}

/// An entry of the merged view.
#[derive(Debug)]
pub(crate) enum Lower {
    /// A non-directory, from the topmost layer that has the name.
    File { path: PathBuf, meta: Metadata },
    /// A directory: its paths in the layers it merges (top first; the last may be opaque).
    Dir { paths: Vec<PathBuf>, meta: Metadata },
}

/// The layers of the merged root: the snapshot roots (top first), down to the first opaque one.
pub(crate) fn root_sources(
    roots_top_first: &[PathBuf],
    ns: OverlayNamespace,
) -> Result<Vec<PathBuf>, TreeError> {
    let mut out = Vec::with_capacity(roots_top_first.len());
    for root in roots_top_first {
        out.push(root.clone());
        if is_opaque(root, ns).at("reading attributes of", root)? {
            break;
        }
    }
    Ok(out)
}

/// The children of the merged directory made of `sources` (top first), whiteouts applied.
pub(crate) fn merged_children(
    sources: &[PathBuf],
    ns: OverlayNamespace,
) -> Result<BTreeMap<OsString, Lower>, TreeError> {
    let mut out: BTreeMap<OsString, Lower> = BTreeMap::new();
    // Names whose merge is over: a non-directory, a whiteout, an opaque directory.
    let mut sealed: HashSet<OsString> = HashSet::new();
    for src in sources {
        for entry in fs::read_dir(src).at("listing", src)? {
            let entry = entry.at("listing", src)?;
            let name = entry.file_name();
            if sealed.contains(&name) {
                continue;
            }
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).at("reading", &path)?;
            if is_whiteout(&meta) {
                sealed.insert(name);
                continue;
            }
            let is_dir = meta.is_dir();
            let opaque = is_dir && is_opaque(&path, ns).at("reading attributes of", &path)?;
            match out.entry(name.clone()) {
                btree_map::Entry::Vacant(v) => {
                    if is_dir {
                        v.insert(Lower::Dir {
                            paths: vec![path],
                            meta,
                        });
                        if opaque {
                            sealed.insert(name);
                        }
                    } else {
                        v.insert(Lower::File { path, meta });
                        sealed.insert(name);
                    }
                }
                btree_map::Entry::Occupied(mut o) => match o.get_mut() {
                    Lower::Dir { paths, .. } if is_dir => {
                        paths.push(path);
                        if opaque {
                            sealed.insert(name);
                        }
                    }
                    // A non-directory under a directory of a higher layer is hidden, and so is
                    // everything below it.
                    _ => {
                        sealed.insert(name);
                    }
                },
            }
        }
    }
    Ok(out)
}

/// The children of a directory of a plain tree, sorted, with their `lstat`.
fn children(dir: &Path) -> Result<BTreeMap<OsString, Metadata>, TreeError> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).at("listing", dir)? {
        let entry = entry.at("listing", dir)?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).at("reading", &path)?;
        out.insert(entry.file_name(), meta);
    }
    Ok(out)
}

/// The (device, inode) of a file.
fn inode(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

// ---------------------------------------------------------------------------------------------
// Copy
// ---------------------------------------------------------------------------------------------

/// Copies the merged view of `sources` (top first; empty for no parents) into the existing,
/// empty directory `dest`: contents, owners, modes, extended attributes (overlayfs' own
/// excepted), times, and the hardlinks within each layer. `dest` itself takes the metadata of
/// the top layer's root. Returns the inodes of the directories created.
pub(crate) fn copy_merged(
    sources: &[PathBuf],
    dest: &Path,
    ns: OverlayNamespace,
) -> Result<HashSet<(u64, u64)>, TreeError> {
    struct Frame {
        dest: PathBuf,
        /// Where the directory's own metadata comes from.
        src: Option<(PathBuf, Metadata)>,
        entries: btree_map::IntoIter<OsString, Lower>,
    }
    let mut dirs = HashSet::new();
    dirs.insert(inode(&fs::symlink_metadata(dest).at("reading", dest)?));
    let root_src = match sources.first() {
        Some(top) => Some((top.clone(), fs::symlink_metadata(top).at("reading", top)?)),
        None => None,
    };
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack = vec![Frame {
        dest: dest.to_path_buf(),
        src: root_src,
        entries: merged_children(sources, ns)?.into_iter(),
    }];
    while let Some(top) = stack.last_mut() {
        let Some((name, lower)) = top.entries.next() else {
            let done = stack.pop().expect("the stack is not empty");
            if let Some((src, meta)) = &done.src {
                copy_metadata(src, meta, &done.dest)?;
            }
            continue;
        };
        let target = top.dest.join(&name);
        match lower {
            Lower::File { path, meta } => copy_node(&path, &meta, &target, &mut links)?,
            Lower::Dir { paths, meta } => {
                fs::create_dir(&target).at("creating", &target)?;
                dirs.insert(inode(
                    &fs::symlink_metadata(&target).at("reading", &target)?,
                ));
                let entries = merged_children(&paths, ns)?.into_iter();
                let src = paths[0].clone();
                stack.push(Frame {
                    dest: target,
                    src: Some((src, meta)),
                    entries,
                });
            }
        }
    }
    Ok(dirs)
}

/// Copies one non-directory (its data or target, then its metadata), or links it to the copy
/// of another name of the same file.
fn copy_node(
    src: &Path,
    meta: &Metadata,
    dest: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), TreeError> {
    let ft = meta.file_type();
    if ft.is_socket() {
        return Ok(());
    }
    if meta.nlink() > 1 {
        if let Some(first) = links.get(&inode(meta)) {
            return fs::hard_link(first, dest).at("linking", dest);
        }
    }
    if ft.is_file() {
        fs::copy(src, dest).at("copying", dest)?;
    } else if ft.is_symlink() {
        let target = fs::read_link(src).at("reading link", src)?;
        std::os::unix::fs::symlink(&target, dest).at("creating symlink", dest)?;
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
        let kind = if ft.is_char_device() {
            libc::S_IFCHR
        } else if ft.is_block_device() {
            libc::S_IFBLK
        } else {
            libc::S_IFIFO
        };
        sys::mknod(dest, kind | 0o600, meta.rdev()).at("creating device node", dest)?;
    } else {
        return Ok(());
    }
    copy_metadata(src, meta, dest)?;
    if meta.nlink() > 1 {
        links.insert(inode(meta), dest.to_path_buf());
    }
    Ok(())
}

/// Gives `dest` the owner, mode, extended attributes and times of `src`.
fn copy_metadata(src: &Path, meta: &Metadata, dest: &Path) -> Result<(), TreeError> {
    let symlink = meta.file_type().is_symlink();
    match std::os::unix::fs::lchown(dest, Some(meta.uid()), Some(meta.gid())) {
        Ok(()) => {}
        // Without privileges the copy is owned by whoever copies.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && sys::euid() != 0 => {}
        Err(e) => return Err(e).at("changing owner of", dest),
    }
    if !symlink {
        // After the owner: chown clears the set-id bits.
        fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .at("changing mode of", dest)?;
    }
    for (name, value) in xattrs(src)? {
        if let Err(e) = xattr::set(dest, &name, &value) {
            if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) {
                tracing::debug!(path = %dest.display(), xattr = ?name, error = %e, "extended attribute not copied");
                continue;
            }
            return Err(e).at("setting extended attributes of", dest);
        }
    }
    filetime::set_symlink_file_times(
        dest,
        FileTime::from_last_access_time(meta),
        FileTime::from_last_modification_time(meta),
    )
    .at("setting times of", dest)
}

/// The extended attributes of `path` (not following a symlink), overlayfs' own excepted.
fn xattrs(path: &Path) -> Result<BTreeMap<OsString, Vec<u8>>, TreeError> {
    let mut out = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(e).at("listing extended attributes of", path),
    };
    for name in names {
        if OVERLAY_XATTR_PREFIXES
            .iter()
            .any(|p| name.as_bytes().starts_with(p))
        {
            continue;
        }
        if let Some(value) = xattr::get(path, &name).at("reading extended attributes of", path)? {
            out.insert(name, value);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Diffs
// ---------------------------------------------------------------------------------------------

/// A point in time as the filesystem records it: (seconds, nanoseconds).
pub(crate) type Stamp = (i64, i64);

/// What a copy looked like when the step got it, to tell what the step touched.
#[derive(Debug, Clone)]
pub(crate) struct CopyMarks {
    /// Every file the copy holds has a change time before this, and anything the step does
    /// after it stamps its files at or after it.
    pub threshold: Stamp,
    /// The filesystem records birth times (statx `btime`): a directory born at or after the
    /// threshold was made by the step.
    pub btime: bool,
    /// The directories of the copy, when birth times are not available.
    pub dirs: HashSet<(u64, u64)>,
}

impl CopyMarks {
    /// Whether the step changed the file's data or metadata (or linked it) since the copy.
    fn touched(&self, meta: &Metadata) -> bool {
        (meta.ctime(), meta.ctime_nsec()) >= self.threshold
    }

    /// Whether the step created this file (known only with birth times).
    fn born_after(&self, meta: &Metadata) -> bool {
        self.btime && birth(meta).is_some_and(|b| b >= self.threshold)
    }

    /// Whether the step made this directory (rather than the copy).
    fn new_dir(&self, meta: &Metadata) -> bool {
        if self.btime {
            self.born_after(meta)
        } else {
            !self.dirs.contains(&inode(meta))
        }
    }
}

/// A file's birth time, when the filesystem records it.
pub(crate) fn birth(meta: &Metadata) -> Option<Stamp> {
    let t = meta.created().ok()?;
    Some(stamp(t))
}

pub(crate) fn stamp(t: SystemTime) -> Stamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
        Err(e) => {
            let d = e.duration();
            let nanos = i64::from(d.subsec_nanos());
            if nanos == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000_000 - nanos)
            }
        }
    }
}

/// The changes collected by a diff, with what is needed to close them over parents and links.
#[derive(Default)]
struct Changes {
    map: BTreeMap<PathBuf, ChangeKind>,
    /// Names of each multiply-linked file of the copy.
    aliases: HashMap<(u64, u64), Vec<PathBuf>>,
    /// Multiply-linked files that changed.
    linked_changes: HashSet<(u64, u64)>,
}

impl Changes {
    fn record(&mut self, path: PathBuf, kind: ChangeKind) {
        self.map.insert(path, kind);
    }

    /// The change list: every change, every other name of a changed multiply-linked file (as
    /// overlayfs copies up the file a link is made to), and every parent directory of a change
    /// (as overlayfs copies up the parents of whatever changes), sorted by path.
    fn finish(mut self) -> Vec<Change> {
        for key in &self.linked_changes {
            for alias in self.aliases.get(key).into_iter().flatten() {
                self.map.entry(alias.clone()).or_insert(ChangeKind::Modify);
            }
        }
        let paths: Vec<PathBuf> = self.map.keys().cloned().collect();
        for path in paths {
            for parent in path.ancestors().skip(1) {
                if parent.as_os_str().is_empty() {
                    break;
                }
                if self.map.contains_key(parent) {
                    // Its own parents were (or will be) added from it.
                    break;
                }
                self.map.insert(parent.to_path_buf(), ChangeKind::Modify);
            }
        }
        self.map
            .into_iter()
            .map(|(path, kind)| Change { path, kind })
            .collect()
    }
}

/// The changes of the copy `root` against the merged view of `sources` (its root layers, top
/// first), as a two-tree walk.
///
/// A path only in the copy is added, only in the view deleted. A directory the step made where
/// the view has something (it was removed and made again, or replaces a file) is opaque, and
/// everything under it added. A non-directory that replaces a directory, or that the step
/// created, is modified. Otherwise an entry the step did not touch (its change time is from the
/// copy) is unchanged, and a touched one is compared: type, mode, owner, mtime, size, device
/// number, link target and extended attributes, then the content when all those are equal.
pub(crate) fn diff_copy(
    root: &Path,
    sources: &[PathBuf],
    ns: OverlayNamespace,
    marks: &CopyMarks,
) -> Result<Vec<Change>, TreeError> {
    struct Frame {
        abs: PathBuf,
        rel: PathBuf,
        /// The view's layers for this directory, `None` when everything under it is new.
        lower: Option<Vec<PathBuf>>,
    }
    let mut changes = Changes::default();
    let mut stack = vec![Frame {
        abs: root.to_path_buf(),
        rel: PathBuf::new(),
        lower: Some(sources.to_vec()),
    }];
    while let Some(frame) = stack.pop() {
        let mine = children(&frame.abs)?;
        let mut theirs = match &frame.lower {
            Some(layers) => merged_children(layers, ns)?,
            None => BTreeMap::new(),
        };
        for (name, meta) in &mine {
            let abs = frame.abs.join(name);
            let rel = frame.rel.join(name);
            let lower = theirs.remove(name);
            if meta.is_dir() {
                match lower {
                    None => {
                        changes.record(rel.clone(), ChangeKind::Add);
                        stack.push(Frame {
                            abs,
                            rel,
                            lower: None,
                        });
                    }
                    Some(Lower::Dir { paths, meta: lmeta }) if !marks.new_dir(meta) => {
                        if marks.touched(meta) && dir_differs(&abs, meta, &paths[0], &lmeta)? {
                            changes.record(rel.clone(), ChangeKind::Modify);
                        }
                        stack.push(Frame {
                            abs,
                            rel,
                            lower: Some(paths),
                        });
                    }
                    Some(_) => {
                        changes.record(rel.clone(), ChangeKind::Opaque);
                        stack.push(Frame {
                            abs,
                            rel,
                            lower: None,
                        });
                    }
                }
                continue;
            }
            let linked = meta.nlink() > 1;
            if linked {
                changes
                    .aliases
                    .entry(inode(meta))
                    .or_default()
                    .push(rel.clone());
            }
            let kind = match lower {
                None => Some(ChangeKind::Add),
                Some(Lower::Dir { .. }) => Some(ChangeKind::Modify),
                Some(Lower::File { .. }) if marks.born_after(meta) => Some(ChangeKind::Modify),
                Some(Lower::File { .. }) if !marks.touched(meta) => None,
                Some(Lower::File { path, meta: lmeta }) => {
                    file_differs(&abs, meta, &path, &lmeta)?.then_some(ChangeKind::Modify)
                }
            };
            if let Some(kind) = kind {
                if linked {
                    changes.linked_changes.insert(inode(meta));
                }
                changes.record(rel, kind);
            }
        }
        for name in theirs.into_keys() {
            changes.record(frame.rel.join(name), ChangeKind::Delete);
        }
    }
    Ok(changes.finish())
}

/// The changes an overlayfs upper directory records, against the merged view of `sources` (its
/// lower root layers, top first): a 0/0 character device is a deletion, an opaque directory an
/// opaque change; any other entry is modified when the view has the name and added otherwise.
pub(crate) fn diff_upper(
    upper: &Path,
    sources: &[PathBuf],
    ns: OverlayNamespace,
) -> Result<Vec<Change>, TreeError> {
    let mut changes = Changes::default();
    let mut stack = vec![(upper.to_path_buf(), PathBuf::new(), Some(sources.to_vec()))];
    while let Some((abs, rel, lower)) = stack.pop() {
        let mine = children(&abs)?;
        let mut theirs = match &lower {
            Some(layers) => merged_children(layers, ns)?,
            None => BTreeMap::new(),
        };
        for (name, meta) in &mine {
            let (abs, rel) = (abs.join(name), rel.join(name));
            let lower = theirs.remove(name);
            if is_whiteout(meta) {
                changes.record(rel, ChangeKind::Delete);
                continue;
            }
            if meta.is_dir() {
                if is_opaque(&abs, ns).at("reading attributes of", &abs)? {
                    changes.record(rel.clone(), ChangeKind::Opaque);
                    stack.push((abs, rel, None));
                    continue;
                }
                let kind = if lower.is_some() {
                    ChangeKind::Modify
                } else {
                    ChangeKind::Add
                };
                changes.record(rel.clone(), kind);
                let below = match lower {
                    Some(Lower::Dir { paths, .. }) => Some(paths),
                    _ => None,
                };
                stack.push((abs, rel, below));
                continue;
            }
            if meta.file_type().is_socket() {
                continue;
            }
            let kind = if lower.is_some() {
                ChangeKind::Modify
            } else {
                ChangeKind::Add
            };
            changes.record(rel, kind);
        }
    }
    Ok(changes.finish())
}

fn dir_differs(
    mine: &Path,
    meta: &Metadata,
    theirs: &Path,
    lmeta: &Metadata,
) -> Result<bool, TreeError> {
    Ok(meta.mode() != lmeta.mode()
        || meta.uid() != lmeta.uid()
        || meta.gid() != lmeta.gid()
        || (meta.mtime(), meta.mtime_nsec()) != (lmeta.mtime(), lmeta.mtime_nsec())
        || xattrs(mine)? != xattrs(theirs)?)
}

fn file_differs(
    mine: &Path,
    meta: &Metadata,
    theirs: &Path,
    lmeta: &Metadata,
) -> Result<bool, TreeError> {
    if meta.mode() != lmeta.mode()
        || meta.uid() != lmeta.uid()
        || meta.gid() != lmeta.gid()
        || (meta.mtime(), meta.mtime_nsec()) != (lmeta.mtime(), lmeta.mtime_nsec())
        || meta.len() != lmeta.len()
    {
        return Ok(true);
    }
    let ft = meta.file_type();
    if (ft.is_char_device() || ft.is_block_device()) && meta.rdev() != lmeta.rdev() {
        return Ok(true);
    }
    if ft.is_symlink()
        && fs::read_link(mine).at("reading link", mine)?
            != fs::read_link(theirs).at("reading link", theirs)?
    {
        return Ok(true);
    }
    if xattrs(mine)? != xattrs(theirs)? {
        return Ok(true);
    }
    if ft.is_file() {
        return Ok(!same_content(mine, theirs)?);
    }
    Ok(false)
}

/// Whether two regular files hold the same bytes.
fn same_content(a: &Path, b: &Path) -> Result<bool, TreeError> {
    let mut fa = File::open(a).at("opening", a)?;
    let mut fb = File::open(b).at("opening", b)?;
    let mut ba = vec![0u8; 64 << 10];
    let mut bb = vec![0u8; 64 << 10];
    loop {
        let n = read_full(&mut fa, &mut ba).at("reading", a)?;
        let m = read_full(&mut fb, &mut bb).at("reading", b)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

// ---------------------------------------------------------------------------------------------
// Upper directories becoming snapshots
// ---------------------------------------------------------------------------------------------

/// Makes an upper directory look like the extraction of the layer just written from it, so it
/// can become that layer's snapshot: sockets (which a layer cannot hold) are removed, and every
/// mtime is set to what the tar recorded, whole seconds clamped to `source_date_epoch`.
pub(crate) fn normalize_upper(
    upper: &Path,
    source_date_epoch: Option<i64>,
) -> Result<(), TreeError> {
    for entry in walkdir::WalkDir::new(upper).min_depth(1) {
        let entry = entry.map_err(walk_error)?;
        if entry.file_type().is_socket() {
            fs::remove_file(entry.path()).at("removing socket", entry.path())?;
        }
    }
    for entry in walkdir::WalkDir::new(upper)
        .min_depth(1)
        .contents_first(true)
    {
        let entry = entry.map_err(walk_error)?;
        let path = entry.path();
        let meta = fs::symlink_metadata(path).at("reading", path)?;
        if is_whiteout(&meta) {
            continue;
        }
        let secs = match source_date_epoch {
            Some(epoch) => meta.mtime().min(epoch),
            None => meta.mtime(),
        };
        if (meta.mtime(), meta.mtime_nsec()) != (secs, 0) {
            let t = FileTime::from_unix_time(secs, 0);
            filetime::set_symlink_file_times(path, t, t).at("setting times of", path)?;
        }
    }
    Ok(())
}

fn walk_error(e: walkdir::Error) -> TreeError {
    let path = e.path().map(Path::to_path_buf).unwrap_or_default();
    TreeError {
        path,
        op: "walking",
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: OverlayNamespace = OverlayNamespace::Trusted;

    fn whiteout(path: &Path) {
        sys::mknod(path, libc::S_IFCHR, 0).unwrap();
    }

    fn opaque(path: &Path) {
        xattr::set(path, "trusted.overlay.opaque", b"y").unwrap();
    }

    fn names(map: &BTreeMap<OsString, Lower>) -> Vec<String> {
        map.keys()
            .map(|k| k.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn merges_layers_with_whiteouts_and_opaque_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let (top, mid, bottom) = (
            tmp.path().join("top"),
            tmp.path().join("mid"),
            tmp.path().join("bottom"),
        );
        for d in ["a/x", "b", "c", "d"] {
            fs::create_dir_all(bottom.join(d)).unwrap();
        }
        fs::write(bottom.join("a/x/old"), b"").unwrap();
        fs::write(bottom.join("b/old"), b"").unwrap();
        fs::write(bottom.join("f"), b"bottom").unwrap();
        fs::create_dir_all(mid.join("a")).unwrap();
        fs::write(mid.join("a/new"), b"").unwrap();
        fs::create_dir_all(mid.join("b")).unwrap();
        opaque(&mid.join("b"));
        fs::write(mid.join("b/mid"), b"").unwrap();
        whiteout(&mid.join("c"));
        fs::write(mid.join("d"), b"file over dir").unwrap();
        fs::create_dir_all(&top).unwrap();
        fs::write(top.join("f"), b"top").unwrap();
        fs::create_dir(top.join("c")).unwrap();

        let sources = vec![top.clone(), mid.clone(), bottom.clone()];
        let root = merged_children(&sources, NS).unwrap();
        assert_eq!(names(&root), ["a", "b", "c", "d", "f"]);
        match &root[OsStr::new("f")] {
            Lower::File { path, .. } => assert_eq!(path, &top.join("f")),
            other => panic!("{other:?}"),
        }
        match &root[OsStr::new("d")] {
            Lower::File { path, .. } => assert_eq!(path, &mid.join("d")),
            other => panic!("{other:?}"),
        }
        // `c` is a fresh directory over a whiteout: nothing of the bottom's `c` shows.
        let Lower::Dir { paths, .. } = &root[OsStr::new("c")] else {
            panic!()
        };
        assert_eq!(paths, &[top.join("c")]);
        let Lower::Dir { paths, .. } = &root[OsStr::new("b")] else {
            panic!()
        };
        assert_eq!(paths, &[mid.join("b")]);
        assert_eq!(names(&merged_children(paths, NS).unwrap()), ["mid"]);
        let Lower::Dir { paths, .. } = &root[OsStr::new("a")] else {
            panic!()
        };
        assert_eq!(paths, &[mid.join("a"), bottom.join("a")]);
        assert_eq!(names(&merged_children(paths, NS).unwrap()), ["new", "x"]);
    }

    #[test]
    fn stamps_before_the_epoch_order_correctly() {
        let before = UNIX_EPOCH - std::time::Duration::from_millis(1500);
        assert_eq!(stamp(before), (-2, 500_000_000));
        assert!(stamp(before) < stamp(UNIX_EPOCH));
    }
}
