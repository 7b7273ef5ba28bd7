//! The layer applier: extracts a layer changeset onto a directory, honouring whiteouts, without
//! following symlinks or writing outside the destination, within bounds on what it expands.
//!
//! Every path is resolved component by component from a descriptor of the destination, with
//! `lstat` and `O_NOFOLLOW` at each step, and every file is created relative to the descriptor of
//! its parent (`openat`, `mkdirat`, `symlinkat`, `linkat`, `mknodat`). The descriptors of the
//! current parent chain are kept open, so a sorted layer costs a constant number of system calls
//! per entry.

use std::collections::HashSet;
use std::ffi::{CString, OsString};
use std::fs::{FileTimes, Permissions};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use crate::media::Compression;

use super::reader::{Budget, Limited, RawEntry, ReadError, TarReader};
use super::{
    ArchiveError, OPAQUE_WHITEOUT, OverlayNamespace, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX, sys,
};

/// Size of the buffer file data is copied through.
const COPY_CHUNK: usize = 1 << 20;
/// Size of the read-ahead buffer on the uncompressed stream.
const READ_AHEAD: usize = 128 << 10;
/// Extended attribute prefixes never applied: overlayfs reads them as its own markers, so a layer
/// could otherwise make a directory opaque or redirect it when the result is used as a lower dir.
const REFUSED_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// Bounds and switches of [`apply_layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Most bytes of uncompressed tar stream the layer may expand to (headers included), which
    /// also bounds the file data written. Default 64 GiB.
    pub max_size: u64,
    /// Most entries the layer may have. Default 10 million.
    pub max_entries: u64,
    /// Most bytes of extension headers (PAX records, GNU long names) one entry may have; they
    /// are held in memory. Default 16 MiB.
    pub max_header_bytes: u64,
    /// Set owners from the entries' uid and gid (default `true`; needs root or CAP_CHOWN).
    pub preserve_owner: bool,
    /// Apply extended attributes from `SCHILY.xattr.*` PAX records (default `true`). Attributes
    /// the filesystem refuses (`ENOTSUP`, `EPERM`) are skipped and counted, as Docker does.
    pub xattrs: bool,
    /// What whiteout entries do (default [`WhiteoutMode::Apply`]).
    pub whiteouts: WhiteoutMode,
}

/// How [`apply_layer`] treats whiteout entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// Delete what lower layers put in the destination, as the image spec's "Applying
    /// Changesets" describes.
    #[default]
    Apply,
    /// Record them in the destination the way overlayfs records deletions in an upper
    /// directory, so that the destination can serve as an overlayfs lower directory (as
    /// containerd unpacks layers for its overlay snapshotter): `dir/.wh.name` becomes a
    /// character device 0/0 `dir/name`, `dir/.wh..wh..opq` sets the namespace's
    /// `overlay.opaque` attribute of `dir` to `y`, and a directory of the layer that replaces a
    /// whiteout of the same layer is marked opaque as well. The device needs `CAP_MKNOD` (or
    /// Linux 5.8, which lets anyone create a 0/0 whiteout), the `trusted.` namespace needs
    /// `CAP_SYS_ADMIN`.
    Overlay(OverlayNamespace),
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            max_size: 64 << 30,
            max_entries: 10_000_000,
            max_header_bytes: 16 << 20,
            preserve_owner: true,
            xattrs: true,
            whiteouts: WhiteoutMode::Apply,
        }
    }
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries read from the layer (extension headers not counted), whiteouts included.
    pub entries: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Bytes of uncompressed tar stream read.
    pub stream_bytes: u64,
    /// Whiteouts and opaque whiteouts applied.
    pub whiteouts: u64,
    /// Extended attributes that were not set (refused by the filesystem, or overlayfs' own).
    pub xattrs_skipped: u64,
}

/// Applies the layer read from `layer` (gzip, zstd or plain tar, told apart by its first bytes)
/// onto `dest`, which is created if missing, and reads the layer to its end so that the
/// compression's checksum is verified.
///
/// Whiteouts delete what lower layers put in `dest` (never what this layer adds); an entry
/// replaces an existing non-directory, and a directory entry over an existing directory keeps it
/// and updates its metadata. Paths are cleaned as containerd cleans them: a leading `/` is
/// ignored and `..` is resolved lexically, and an entry that resolves outside `dest`, passes
/// through a symlink or hardlinks to such a target is refused. Directory modes and mtimes are set
/// once all entries are in place.
///
/// On error the destination holds the entries applied so far.
pub fn apply_layer<R: Read>(
    layer: R,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, ArchiveError> {
    let mut layer = layer;
    let mut head = [0u8; 4];
    let mut head_len = 0;
    while head_len < head.len() {
        match layer.read(&mut head[head_len..]) {
            Ok(0) => break,
            Ok(n) => head_len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(ArchiveError::Stream {
                    after: PathBuf::new(),
                    source: e,
                });
            }
        }
    }
    let stream = (&head[..head_len]).chain(layer);
    let decoded: Box<dyn Read + '_> = match Compression::sniff(&head[..head_len]) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(stream).map_err(|e| {
            ArchiveError::Stream {
                after: PathBuf::new(),
                source: e,
            }
        })?),
        Compression::None => Box::new(stream),
    };

    std::fs::create_dir_all(dest).map_err(|e| ArchiveError::io(dest, "creating", e))?;
    let root = sys::cstring(dest.as_os_str().as_bytes())
        .and_then(|c| sys::open_dir(&c))
        .map_err(|e| ArchiveError::io(dest, "opening", e))?;

    let budget = Budget::new(opts.max_size);
    // Headers are read 512 bytes at a time: buffer them; large data reads bypass the buffer.
    let mut reader = TarReader::new(BufReader::with_capacity(
        READ_AHEAD,
        Limited {
            inner: decoded,
            budget: Rc::clone(&budget),
        },
    ));
    let mut applier = Applier {
        opts,
        dirs: DirCache {
            root,
            stack: Vec::new(),
        },
        layer_paths: HashSet::new(),
        whiteout_nodes: HashSet::new(),
        deferred: Vec::new(),
        buf: vec![0u8; COPY_CHUNK],
        stats: ApplyStats::default(),
    };

    let mut last = PathBuf::new();
    loop {
        let entry = match reader.next_entry(opts.max_header_bytes) {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(e) => return Err(read_error(&budget, opts, &last, e)),
        };
        let entry_path = PathBuf::from(OsString::from_vec(entry.path.clone()));
        applier.stats.entries += 1;
        if applier.stats.entries > opts.max_entries {
            return Err(ArchiveError::EntryLimit {
                entry: entry_path,
                limit: opts.max_entries,
            });
        }
        applier.apply_entry(&entry, &mut reader, &entry_path, &budget)?;
        last = entry_path;
    }
    // Read the stream to its end, so that a compressed layer's checksum is verified.
    let mut rest = reader.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| read_error(&budget, opts, &last, ReadError::Io(e)))?;
    applier.finish()?;
    applier.stats.stream_bytes = budget.read.get();
    if applier.stats.xattrs_skipped > 0 {
        tracing::warn!(
            dest = %dest.display(),
            skipped = applier.stats.xattrs_skipped,
            "some extended attributes of the layer were not applied"
        );
    }
    Ok(applier.stats)
}

/// The typed error for a failure of the tar reader after the entry `after`.
fn read_error(budget: &Budget, opts: &ApplyOptions, after: &Path, e: ReadError) -> ArchiveError {
    let after = after.to_path_buf();
    if budget.exceeded.get() {
        return ArchiveError::SizeLimit {
            entry: after,
            limit: budget.limit,
        };
    }
    match e {
        ReadError::Io(source) => ArchiveError::Stream { after, source },
        ReadError::HeaderLimit => ArchiveError::HeaderLimit {
            after,
            limit: opts.max_header_bytes,
        },
        ReadError::Invalid(reason) => ArchiveError::Stream {
            after,
            source: io::Error::new(io::ErrorKind::InvalidData, reason),
        },
    }
}

/// The typed error for an I/O error raised while reading an entry's data.
fn data_error(budget: &Budget, entry: &Path, source: io::Error) -> ArchiveError {
    if budget.exceeded.get() {
        ArchiveError::SizeLimit {
            entry: entry.to_path_buf(),
            limit: budget.limit,
        }
    } else {
        ArchiveError::io(entry, "reading data of", source)
    }
}

/// Open descriptors of the destination and of the current parent chain below it.
struct DirCache {
    root: OwnedFd,
    /// Component names and descriptors from the root down to the last parent resolved.
    stack: Vec<(Vec<u8>, OwnedFd)>,
}

/// How [`DirCache::resolve`] treats missing and unusable components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolve {
    /// Create missing directories (mode 0755); refuse symlinks and non-directories.
    Create,
    /// `None` when a component is missing; refuse symlinks and non-directories.
    Existing,
    /// `None` when a component is missing, a symlink or not a directory.
    Lenient,
}

impl DirCache {
    /// The descriptor of the directory `comps` (relative to the root), resolved without
    /// following symlinks. `entry` names the entry in errors.
    fn resolve(
        &mut self,
        comps: &[&[u8]],
        mode: Resolve,
        entry: &Path,
    ) -> Result<Option<BorrowedFd<'_>>, ArchiveError> {
        let common = self
            .stack
            .iter()
            .zip(comps)
            .take_while(|((name, _), comp)| name.as_slice() == **comp)
            .count();
        self.stack.truncate(common);
        for (i, comp) in comps.iter().enumerate().skip(common) {
            let name = sys::cstring(comp).map_err(|_| invalid_name(entry))?;
            let fd = {
                let cur = match self.stack.last() {
                    Some((_, fd)) => fd.as_fd(),
                    None => self.root.as_fd(),
                };
                let component = || join(&comps[..=i]);
                match sys::lstat_at(cur, &name)
                    .map_err(|e| ArchiveError::io(entry, "resolving", e))?
                {
                    None => match mode {
                        Resolve::Create => match sys::mkdir_at(cur, &name, 0o755) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                            Err(e) => {
                                return Err(ArchiveError::io(entry, "creating parent of", e));
                            }
                        },
                        Resolve::Existing | Resolve::Lenient => return Ok(None),
                    },
                    Some(st) => match sys::file_type(&st) {
                        libc::S_IFDIR => {}
                        _ if mode == Resolve::Lenient => return Ok(None),
                        libc::S_IFLNK => {
                            return Err(ArchiveError::ThroughSymlink {
                                entry: entry.to_path_buf(),
                                component: component(),
                            });
                        }
                        _ => {
                            return Err(ArchiveError::NotADirectory {
                                entry: entry.to_path_buf(),
                                component: component(),
                            });
                        }
                    },
                }
                sys::open_dir_at(cur, &name)
                    .map_err(|e| ArchiveError::io(entry, "opening parent of", e))?
            };
            self.stack.push((comp.to_vec(), fd));
        }
        Ok(Some(match self.stack.last() {
            Some((_, fd)) => fd.as_fd(),
            None => self.root.as_fd(),
        }))
    }
}

/// A directory whose mode and mtime are set once the layer is in place.
struct DeferredDir {
    path: Vec<u8>,
    mode: u32,
    mtime: (i64, u32),
}

/// The metadata an entry sets on what it creates.
struct NodeMeta<'a> {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    xattrs: &'a [(CString, Vec<u8>)],
}

/// State of one apply.
struct Applier<'o> {
    opts: &'o ApplyOptions,
    dirs: DirCache,
    /// Paths this layer put in place, with all their ancestors (so the set is closed under
    /// taking parents): whiteouts leave them alone and opaque directories keep them.
    layer_paths: HashSet<Vec<u8>>,
    /// Whiteouts this layer recorded as 0/0 devices ([`WhiteoutMode::Overlay`]): a directory of
    /// the layer that replaces one is made opaque, as it hides what lower layers had there.
    whiteout_nodes: HashSet<Vec<u8>>,
    deferred: Vec<DeferredDir>,
    buf: Vec<u8>,
    stats: ApplyStats,
}

impl Applier<'_> {
    fn apply_entry<R: Read>(
        &mut self,
        entry: &RawEntry,
        data: &mut TarReader<R>,
        entry_path: &Path,
        budget: &Budget,
    ) -> Result<(), ArchiveError> {
        let raw = entry.path.as_slice();
        let header = &entry.header;
        let mut kind = header.entry_type();
        if raw.first() == Some(&b'/') {
            return Err(ArchiveError::AbsolutePath {
                entry: entry_path.to_path_buf(),
            });
        }
        let Some(comps) = clean_path(raw) else {
            return Err(ArchiveError::PathEscapesRoot {
                entry: entry_path.to_path_buf(),
            });
        };
        let Some((&name, parent)) = comps.split_last() else {
            // The root itself (`./`, `/`): its metadata belongs to whoever made `dest`.
            return Ok(());
        };
        if kind == tar::EntryType::Regular && raw.ends_with(b"/") {
            // Old tars mark directories by the trailing slash alone.
            kind = tar::EntryType::Directory;
        }

        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.apply_whiteout(parent, name, target, entry_path);
        }

        let meta = NodeMeta {
            mode: entry.mode,
            uid: id(entry.uid, entry_path)?,
            gid: id(entry.gid, entry_path)?,
            mtime: entry.mtime,
            xattrs: &entry.xattrs,
        };
        let name_c = sys::cstring(name).map_err(|_| invalid_name(entry_path))?;

        // A hardlink's target is resolved first, from the root and apart from the parent cache.
        let link_target = if kind == tar::EntryType::Link {
            let target_raw = entry
                .link
                .clone()
                .ok_or_else(|| ArchiveError::InvalidEntry {
                    entry: entry_path.to_path_buf(),
                    reason: "hardlink without a target".into(),
                })?;
            let target = PathBuf::from(OsString::from_vec(target_raw));
            if target.is_absolute() {
                return Err(ArchiveError::AbsolutePath { entry: target });
            }
            let Some(target_comps) = clean_path(target.as_os_str().as_bytes()) else {
                return Err(ArchiveError::LinkTargetEscapesRoot {
                    entry: entry_path.to_path_buf(),
                    target,
                });
            };
            if target_comps == comps {
                // A link to itself: nothing to do.
                self.mark(&comps);
                return Ok(());
            }
            Some(self.resolve_link_target(&target_comps, entry_path, &target)?)
        } else {
            None
        };

        let opts = self.opts;
        let pfd = self
            .dirs
            .resolve(parent, Resolve::Create, entry_path)?
            .ok_or_else(|| {
                ArchiveError::io(entry_path, "resolving", io::ErrorKind::NotFound.into())
            })?;
        let existing =
            sys::lstat_at(pfd, &name_c).map_err(|e| ArchiveError::io(entry_path, "reading", e))?;
        let existing_is_dir = existing.is_some_and(|st| sys::file_type(&st) == libc::S_IFDIR);

        if kind == tar::EntryType::Directory {
            if let Some(st) = existing.filter(|_| !existing_is_dir) {
                remove_at(pfd, &name_c, &st)
                    .map_err(|e| ArchiveError::io(entry_path, "replacing", e))?;
            }
            if !existing_is_dir {
                sys::mkdir_at(pfd, &name_c, 0o700)
                    .map_err(|e| ArchiveError::io(entry_path, "creating", e))?;
            }
            let dir = sys::open_dir_at(pfd, &name_c)
                .map_err(|e| ArchiveError::io(entry_path, "opening", e))?;
            if let WhiteoutMode::Overlay(ns) = opts.whiteouts {
                if !existing_is_dir && self.whiteout_nodes.remove(&join_bytes(&comps)) {
                    sys::fsetxattr(dir.as_fd(), ns.opaque_xattr(), b"y")
                        .map_err(|e| ArchiveError::io(entry_path, "marking opaque", e))?;
                }
            }
            if opts.preserve_owner {
                std::os::unix::fs::fchown(&dir, Some(meta.uid), Some(meta.gid))
                    .map_err(|e| ArchiveError::io(entry_path, "changing owner of", e))?;
            }
            self.stats.xattrs_skipped += set_xattrs(meta.xattrs, opts, entry_path, |k, v| {
                sys::fsetxattr(dir.as_fd(), k, v)
            })?;
            self.deferred.push(DeferredDir {
                path: join_bytes(&comps),
                mode: meta.mode,
                mtime: meta.mtime,
            });
            self.mark(&comps);
            return Ok(());
        }

        if let Some(st) = &existing {
            remove_at(pfd, &name_c, st)
                .map_err(|e| ArchiveError::io(entry_path, "replacing", e))?;
        }

        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let declared = entry.size;
                if data.position().saturating_add(declared) > budget.limit {
                    return Err(ArchiveError::SizeLimit {
                        entry: entry_path.to_path_buf(),
                        limit: budget.limit,
                    });
                }
                let mut file = sys::create_file_at(pfd, &name_c)
                    .map_err(|e| ArchiveError::io(entry_path, "creating", e))?;
                let mut written: u64 = 0;
                loop {
                    let n = match data.read(&mut self.buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(data_error(budget, entry_path, e)),
                    };
                    if n == 0 {
                        break;
                    }
                    written += n as u64;
                    file.write_all(&self.buf[..n])
                        .map_err(|e| ArchiveError::io(entry_path, "writing", e))?;
                }
                if written != declared {
                    return Err(ArchiveError::Truncated {
                        entry: entry_path.to_path_buf(),
                        expected: declared,
                        actual: written,
                    });
                }
                self.stats.bytes += written;
                if opts.preserve_owner {
                    std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid))
                        .map_err(|e| ArchiveError::io(entry_path, "changing owner of", e))?;
                }
                file.set_permissions(Permissions::from_mode(meta.mode))
                    .map_err(|e| ArchiveError::io(entry_path, "changing mode of", e))?;
                self.stats.xattrs_skipped += set_xattrs(meta.xattrs, opts, entry_path, |k, v| {
                    sys::fsetxattr(file.as_fd(), k, v)
                })?;
                file.set_times(file_times(meta.mtime))
                    .map_err(|e| ArchiveError::io(entry_path, "setting times of", e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link
                    .as_deref()
                    .ok_or_else(|| ArchiveError::InvalidEntry {
                        entry: entry_path.to_path_buf(),
                        reason: "symlink without a target".into(),
                    })?;
                let target = sys::cstring(target).map_err(|_| invalid_name(entry_path))?;
                sys::symlink_at(&target, pfd, &name_c)
                    .map_err(|e| ArchiveError::io(entry_path, "creating symlink", e))?;
                self.stats.xattrs_skipped +=
                    finish_node(pfd, name, &name_c, &meta, false, opts, entry_path)?;
            }
            tar::EntryType::Link => {
                let Some((target_dir, target_name)) = &link_target else {
                    return Err(ArchiveError::InvalidEntry {
                        entry: entry_path.to_path_buf(),
                        reason: "hardlink without a target".into(),
                    });
                };
                sys::link_at(target_dir.as_fd(), target_name, pfd, &name_c)
                    .map_err(|e| ArchiveError::io(entry_path, "creating hardlink", e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (file_type, dev) = if kind == tar::EntryType::Fifo {
                    (libc::S_IFIFO, 0)
                } else {
                    let major = header.device_major().map_err(|e| invalid(entry_path, e))?;
                    let minor = header.device_minor().map_err(|e| invalid(entry_path, e))?;
                    let dev = libc::makedev(major.unwrap_or(0), minor.unwrap_or(0));
                    let file_type = if kind == tar::EntryType::Char {
                        libc::S_IFCHR
                    } else {
                        libc::S_IFBLK
                    };
                    (file_type, dev)
                };
                sys::mknod_at(pfd, &name_c, file_type | 0o600, dev)
                    .map_err(|e| ArchiveError::io(entry_path, "creating device node", e))?;
                self.stats.xattrs_skipped +=
                    finish_node(pfd, name, &name_c, &meta, true, opts, entry_path)?;
            }
            other => {
                return Err(ArchiveError::UnsupportedEntryType {
                    entry: entry_path.to_path_buf(),
                    type_flag: other.as_byte(),
                });
            }
        }
        self.mark(&comps);
        Ok(())
    }

    /// Applies `.wh.<target>` (or the opaque whiteout) found in the directory `parent`.
    fn apply_whiteout(
        &mut self,
        parent: &[&[u8]],
        name: &[u8],
        target: &[u8],
        entry_path: &Path,
    ) -> Result<(), ArchiveError> {
        let overlay = match self.opts.whiteouts {
            WhiteoutMode::Apply => None,
            WhiteoutMode::Overlay(ns) => Some(ns),
        };
        if name == OPAQUE_WHITEOUT.as_bytes() {
            self.stats.whiteouts += 1;
            // Recorded as overlayfs does, the marker needs its directory even when the layer
            // did not list it; applied, it only clears what is there.
            let resolve = if overlay.is_some() {
                Resolve::Create
            } else {
                Resolve::Existing
            };
            let Some(dir) = self.dirs.resolve(parent, resolve, entry_path)? else {
                return Ok(());
            };
            let dir = dir
                .try_clone_to_owned()
                .map_err(|e| ArchiveError::io(entry_path, "opening", e))?;
            let mut base = join_bytes(parent);
            let layer_paths = &self.layer_paths;
            if let Some(ns) = overlay {
                sys::fsetxattr(dir.as_fd(), ns.opaque_xattr(), b"y")
                    .map_err(|e| ArchiveError::io(entry_path, "marking opaque", e))?;
            }
            prune(dir, &mut base, &|p| layer_paths.contains(p))
                .map_err(|e| ArchiveError::io(entry_path, "clearing opaque directory for", e))?;
            return Ok(());
        }
        if name.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(ArchiveError::InvalidWhiteout {
                entry: entry_path.to_path_buf(),
            });
        }
        self.stats.whiteouts += 1;
        let mut victim = join_bytes(parent);
        if !victim.is_empty() {
            victim.push(b'/');
        }
        victim.extend_from_slice(target);
        if self.layer_paths.contains(&victim) {
            // Whiteouts hide lower layers only, not what this layer adds.
            return Ok(());
        }
        let target_c = sys::cstring(target).map_err(|_| invalid_name(entry_path))?;
        let resolve = if overlay.is_some() {
            Resolve::Create
        } else {
            Resolve::Existing
        };
        let Some(dir) = self.dirs.resolve(parent, resolve, entry_path)? else {
            return Ok(());
        };
        if let Some(st) =
            sys::lstat_at(dir, &target_c).map_err(|e| ArchiveError::io(entry_path, "reading", e))?
        {
            remove_at(dir, &target_c, &st)
                .map_err(|e| ArchiveError::io(entry_path, "applying whiteout", e))?;
        }
        if overlay.is_some() {
            // overlayfs' whiteout: a character device 0/0, mode 0.
            sys::mknod_at(dir, &target_c, libc::S_IFCHR, 0)
                .map_err(|e| ArchiveError::io(entry_path, "creating whiteout for", e))?;
            self.whiteout_nodes.insert(victim);
        }
        Ok(())
    }

    /// Resolves a hardlink target to (descriptor of its directory, its name), refusing targets
    /// that are missing, directories, or reached through a symlink.
    fn resolve_link_target(
        &self,
        comps: &[&[u8]],
        entry_path: &Path,
        target: &Path,
    ) -> Result<(OwnedFd, CString), ArchiveError> {
        let invalid_target = |reason| ArchiveError::LinkTargetInvalid {
            entry: entry_path.to_path_buf(),
            target: target.to_path_buf(),
            reason,
        };
        let Some((&name, parent)) = comps.split_last() else {
            return Err(invalid_target("is a directory"));
        };
        let mut dir = self
            .dirs
            .root
            .try_clone()
            .map_err(|e| ArchiveError::io(entry_path, "opening", e))?;
        for (i, comp) in parent.iter().enumerate() {
            let c = sys::cstring(comp).map_err(|_| invalid_name(entry_path))?;
            match sys::lstat_at(dir.as_fd(), &c)
                .map_err(|e| ArchiveError::io(entry_path, "resolving", e))?
            {
                None => return Err(invalid_target("does not exist")),
                Some(st) => match sys::file_type(&st) {
                    libc::S_IFDIR => {}
                    libc::S_IFLNK => {
                        return Err(ArchiveError::LinkTargetThroughSymlink {
                            entry: entry_path.to_path_buf(),
                            target: target.to_path_buf(),
                            component: join(&comps[..=i]),
                        });
                    }
                    _ => return Err(invalid_target("does not exist")),
                },
            }
            dir = sys::open_dir_at(dir.as_fd(), &c)
                .map_err(|e| ArchiveError::io(entry_path, "resolving", e))?;
        }
        let name_c = sys::cstring(name).map_err(|_| invalid_name(entry_path))?;
        match sys::lstat_at(dir.as_fd(), &name_c)
            .map_err(|e| ArchiveError::io(entry_path, "resolving", e))?
        {
            None => Err(invalid_target("does not exist")),
            Some(st) if sys::file_type(&st) == libc::S_IFDIR => {
                Err(invalid_target("is a directory"))
            }
            Some(_) => Ok((dir, name_c)),
        }
    }

    /// Records that this layer put `comps` in place (with its ancestors).
    fn mark(&mut self, comps: &[&[u8]]) {
        let mut path = join_bytes(comps);
        // The set is closed under taking parents: stop at the first ancestor already in it.
        loop {
            if self.layer_paths.contains(&path) {
                return;
            }
            let cut = path.iter().rposition(|&b| b == b'/');
            self.layer_paths.insert(path.clone());
            match cut {
                Some(i) => path.truncate(i),
                None => return,
            }
        }
    }

    /// Sets the modes and mtimes of the directories of the layer, now that their contents are in
    /// place. A directory that a later entry replaced is left alone.
    fn finish(&mut self) -> Result<(), ArchiveError> {
        let deferred = std::mem::take(&mut self.deferred);
        for dir in &deferred {
            let entry_path = PathBuf::from(OsString::from_vec(dir.path.clone()));
            let comps: Vec<&[u8]> = dir.path.split(|&b| b == b'/').collect();
            let Some((&name, parent)) = comps.split_last() else {
                continue;
            };
            let name_c = sys::cstring(name).map_err(|_| invalid_name(&entry_path))?;
            let Some(pfd) = self.dirs.resolve(parent, Resolve::Lenient, &entry_path)? else {
                continue;
            };
            match sys::lstat_at(pfd, &name_c)
                .map_err(|e| ArchiveError::io(&entry_path, "reading", e))?
            {
                Some(st) if sys::file_type(&st) == libc::S_IFDIR => {}
                _ => continue,
            }
            sys::chmod_at(pfd, &name_c, dir.mode)
                .map_err(|e| ArchiveError::io(&entry_path, "changing mode of", e))?;
            sys::set_times_at(pfd, &name_c, dir.mtime.0, dir.mtime.1)
                .map_err(|e| ArchiveError::io(&entry_path, "setting times of", e))?;
        }
        Ok(())
    }
}

/// Owner, mode (unless a symlink), xattrs and times of a symlink or special file, set through its
/// parent. Returns the number of xattrs skipped.
fn finish_node(
    pfd: BorrowedFd<'_>,
    name: &[u8],
    name_c: &CString,
    meta: &NodeMeta<'_>,
    set_mode: bool,
    opts: &ApplyOptions,
    entry_path: &Path,
) -> Result<u64, ArchiveError> {
    if opts.preserve_owner {
        sys::chown_at(pfd, name_c, meta.uid, meta.gid)
            .map_err(|e| ArchiveError::io(entry_path, "changing owner of", e))?;
    }
    if set_mode {
        sys::chmod_at(pfd, name_c, meta.mode)
            .map_err(|e| ArchiveError::io(entry_path, "changing mode of", e))?;
    }
    let skipped = set_xattrs(meta.xattrs, opts, entry_path, |k, v| {
        sys::lsetxattr_at(pfd, name, k, v)
    })?;
    sys::set_times_at(pfd, name_c, meta.mtime.0, meta.mtime.1)
        .map_err(|e| ArchiveError::io(entry_path, "setting times of", e))?;
    Ok(skipped)
}

/// Sets extended attributes with `set`, skipping (and counting) overlayfs' own and those the
/// filesystem refuses.
fn set_xattrs(
    xattrs: &[(CString, Vec<u8>)],
    opts: &ApplyOptions,
    entry_path: &Path,
    set: impl Fn(&CString, &[u8]) -> io::Result<()>,
) -> Result<u64, ArchiveError> {
    if !opts.xattrs {
        return Ok(xattrs.len() as u64);
    }
    let mut skipped = 0;
    for (key, value) in xattrs {
        if REFUSED_XATTR_PREFIXES
            .iter()
            .any(|p| key.as_bytes().starts_with(p))
        {
            tracing::debug!(entry = %entry_path.display(), xattr = ?key, "overlayfs attribute not applied");
            skipped += 1;
            continue;
        }
        match set(key, value) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
                tracing::debug!(entry = %entry_path.display(), xattr = ?key, error = %e, "extended attribute not applied");
                skipped += 1;
            }
            Err(e) => {
                return Err(ArchiveError::io(
                    entry_path,
                    "setting extended attributes of",
                    e,
                ));
            }
        }
    }
    Ok(skipped)
}

/// Access and modification times both set to `mtime`.
fn file_times((secs, nanos): (i64, u32)) -> FileTimes {
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            + Duration::from_nanos(u64::from(nanos))
    };
    FileTimes::new().set_accessed(t).set_modified(t)
}

/// Removes whatever is at `dir/name` (described by `st`), a whole tree for a directory.
fn remove_at(dir: BorrowedFd<'_>, name: &CString, st: &libc::stat) -> io::Result<()> {
    if sys::file_type(st) != libc::S_IFDIR {
        return sys::unlink_at(dir, name, false);
    }
    let sub = sys::open_dir_at(dir, name)?;
    prune(sub, &mut Vec::new(), &|_| false)?;
    sys::unlink_at(dir, name, true)
}

/// Removes everything under the directory `dir` (whose path relative to the destination is
/// `base`) for which `keep` is false, descending into kept directories. `keep` must be closed
/// under taking parents. Iterative, so a deep tree cannot overflow the stack.
fn prune(dir: OwnedFd, base: &mut Vec<u8>, keep: &dyn Fn(&[u8]) -> bool) -> io::Result<()> {
    struct Frame {
        fd: OwnedFd,
        names: std::vec::IntoIter<OsString>,
        base_len: usize,
        /// The name to remove this directory by, in its parent's frame, once it is empty.
        remove_as: Option<CString>,
    }
    let names = sys::list_dir(dir.as_fd())?;
    let mut stack = vec![Frame {
        fd: dir,
        names: names.into_iter(),
        base_len: base.len(),
        remove_as: None,
    }];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.next() else {
            let Some(done) = stack.pop() else { break };
            if let (Some(name), Some(parent)) = (done.remove_as, stack.last()) {
                drop(done.fd);
                sys::unlink_at(parent.fd.as_fd(), &name, true)?;
            }
            continue;
        };
        base.truncate(top.base_len);
        if top.base_len > 0 {
            base.push(b'/');
        }
        base.extend_from_slice(name.as_bytes());
        let kept = keep(base);
        let name_c = sys::cstring(name.as_bytes())?;
        let Some(st) = sys::lstat_at(top.fd.as_fd(), &name_c)? else {
            continue;
        };
        if sys::file_type(&st) == libc::S_IFDIR {
            let fd = sys::open_dir_at(top.fd.as_fd(), &name_c)?;
            let names = sys::list_dir(fd.as_fd())?;
            let base_len = base.len();
            stack.push(Frame {
                fd,
                names: names.into_iter(),
                base_len,
                remove_as: (!kept).then_some(name_c),
            });
        } else if !kept {
            sys::unlink_at(top.fd.as_fd(), &name_c, false)?;
        }
    }
    Ok(())
}

/// Cleans a relative tar path as containerd does: `.` components are dropped and `..` removes
/// the previous component. (Absolute paths are refused before this.) `None` when the path climbs above the root.
fn clean_path(raw: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

fn join_bytes(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

fn join(comps: &[&[u8]]) -> PathBuf {
    PathBuf::from(OsString::from_vec(join_bytes(comps)))
}

fn id(value: u64, entry_path: &Path) -> Result<u32, ArchiveError> {
    u32::try_from(value).map_err(|_| ArchiveError::InvalidEntry {
        entry: entry_path.to_path_buf(),
        reason: format!("owner id {value} does not fit 32 bits"),
    })
}

fn invalid(entry_path: &Path, e: io::Error) -> ArchiveError {
    ArchiveError::InvalidEntry {
        entry: entry_path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn invalid_name(entry_path: &Path) -> ArchiveError {
    ArchiveError::InvalidEntry {
        entry: entry_path.to_path_buf(),
        reason: "NUL byte in a name".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_paths_like_containerd() {
        let c = |p: &str| clean_path(p.as_bytes()).map(|v| join_bytes(&v));
        assert_eq!(c("a/b/c"), Some(b"a/b/c".to_vec()));
        assert_eq!(c("./a//b/"), Some(b"a/b".to_vec()));
        assert_eq!(c("a/../b"), Some(b"b".to_vec()));
        assert_eq!(c("./"), Some(Vec::new()));
        assert_eq!(c("../x"), None);
        assert_eq!(c("a/../../x"), None);
    }

    #[test]
    fn prune_keeps_marked_paths_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("d/keep/old")).unwrap();
        std::fs::create_dir_all(root.join("d/gone/deeper")).unwrap();
        std::fs::write(root.join("d/keep/new"), b"").unwrap();
        std::fs::write(root.join("d/keep/old/f"), b"").unwrap();
        std::fs::write(root.join("d/gone/deeper/f"), b"").unwrap();
        std::fs::write(root.join("d/file"), b"").unwrap();
        let keep: HashSet<Vec<u8>> = ["d", "d/keep", "d/keep/new"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let fd =
            sys::open_dir(&sys::cstring(root.join("d").as_os_str().as_bytes()).unwrap()).unwrap();
        prune(fd, &mut b"d".to_vec(), &|p| keep.contains(p)).unwrap();
        let mut left: Vec<_> = walkdir::WalkDir::new(root.join("d"))
            .min_depth(1)
            .into_iter()
            .map(|e| {
                e.unwrap()
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        left.sort();
        assert_eq!(left, ["d/keep", "d/keep/new"]);
    }
}
