//! The deterministic tar writer: a whole directory ([`write_dir`]) or a list of changes
//! ([`write_changes`]) to a layer tar stream.
//!
//! Headers are encoded with [`tar::Header`], but entries are written to the output through an
//! internal 1 MiB staging buffer rather than through `tar::Builder`: file data is read straight
//! into that buffer in large chunks (the builder copies through an 8 KiB buffer), a file whose size
//! changes while it is read is caught, and the PAX records can be laid out as Go's
//! `archive/tar` lays them out for Docker and BuildKit (sorted keys, a `PaxHeaders.0/` name).

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use super::sys::{self, XattrSource};
use super::{ArchiveError, OPAQUE_WHITEOUT, WHITEOUT_PREFIX};

/// Size of the staging buffer, and so of the reads of file data and of the writes to the output.
const CHUNK: usize = 1 << 20;
/// Size of a tar block.
const BLOCK: usize = 512;
/// Largest size the 12-byte octal size field holds (8 GiB - 1).
const MAX_OCTAL_SIZE: u64 = 0o777_7777_7777;
/// Largest id the 8-byte octal uid and gid fields hold.
const MAX_OCTAL_ID: u64 = 0o777_7777;
/// Largest time the 12-byte octal mtime field holds.
const MAX_OCTAL_TIME: i64 = 0o777_7777_7777;
/// Length of the ustar `name` field.
const NAME_LEN: usize = 100;
/// Length of the ustar `prefix` field.
const PREFIX_LEN: usize = 155;

/// overlayfs' opaque-directory markers (`trusted.` when mounted by root, `user.` with `userxattr`).
const OVERLAY_OPAQUE_XATTRS: [&[u8]; 2] = [b"trusted.overlay.opaque", b"user.overlay.opaque"];
/// Prefixes of overlayfs' private attributes, never archived.
const OVERLAY_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];
/// overlayfs attributes whose meaning cannot be carried by a layer diff of the upper directory.
const OVERLAY_UNSUPPORTED: [&str; 2] = ["redirect", "metacopy"];

/// Options of the tar writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarOptions {
    /// When set, every mtime is clamped to at most this many seconds since the epoch, as the
    /// reproducible-builds `SOURCE_DATE_EPOCH` convention asks; whiteouts get this time too.
    /// When unset, files keep their own mtime, in whole seconds, and whiteouts get 0.
    pub source_date_epoch: Option<i64>,
    /// Archive extended attributes as `SCHILY.xattr.<name>` PAX records (default `true`).
    /// overlayfs' own attributes and `security.selinux` (a label of the host, not of the image)
    /// are never archived.
    pub xattrs: bool,
    /// Read the tree as an overlayfs upper directory (default `true`): a character device 0/0 is
    /// a whiteout and is written as `.wh.<name>`, and a directory with `trusted.overlay.opaque`
    /// (or `user.overlay.opaque`) set to `y` is followed by `.wh..wh..opq`. An upper directory
    /// that uses `redirect_dir` or `metacopy` is refused, as its diff is not in the upper
    /// directory alone. Set to `false` to archive such device nodes as they are.
    pub overlay_whiteouts: bool,
}

impl Default for TarOptions {
    fn default() -> Self {
        TarOptions {
            source_date_epoch: None,
            xattrs: true,
            overlay_whiteouts: true,
        }
    }
}

impl TarOptions {
    /// The default options, with `source_date_epoch` read from the `SOURCE_DATE_EPOCH`
    /// environment variable when it is set and not empty.
    pub fn from_env() -> Result<TarOptions, ArchiveError> {
        Self::from_source_date_epoch(std::env::var_os("SOURCE_DATE_EPOCH"))
    }

    /// The default options with `source_date_epoch` parsed from a `SOURCE_DATE_EPOCH` value.
    fn from_source_date_epoch(value: Option<OsString>) -> Result<TarOptions, ArchiveError> {
        let source_date_epoch =
            match value {
                None => None,
                Some(v) if v.is_empty() => None,
                Some(v) => {
                    let s = v.to_string_lossy();
                    Some(s.trim().parse::<i64>().map_err(|_| {
                        ArchiveError::InvalidSourceDateEpoch {
                            value: s.into_owned(),
                        }
                    })?)
                }
            };
        Ok(TarOptions {
            source_date_epoch,
            ..TarOptions::default()
        })
    }

    /// The mtime to record for a file whose own mtime is `mtime`.
    fn clamp(&self, mtime: i64) -> i64 {
        match self.source_date_epoch {
            Some(epoch) => mtime.min(epoch),
            None => mtime,
        }
    }
}

/// What happened to a path, for [`write_changes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The path is new: it is archived as it is now.
    Add,
    /// The path changed (content or metadata): it is archived as it is now.
    Modify,
    /// The path was removed: a whiteout `dir/.wh.<name>` is archived.
    Delete,
    /// The path is a directory that replaces whatever lower layers had there: it is archived as
    /// it is now, followed by `dir/.wh..wh..opq`. (A directory archived by `Add` or `Modify` that
    /// carries overlayfs' opaque attribute gets the same treatment.)
    Opaque,
}

/// One entry of a changeset: a path relative to the root and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    /// Path relative to the root, e.g. `etc/passwd`. A leading `/` is accepted and ignored.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

impl Change {
    /// A change of the given kind.
    pub fn new(path: impl Into<PathBuf>, kind: ChangeKind) -> Change {
        Change {
            path: path.into(),
            kind,
        }
    }

    /// An added path.
    pub fn add(path: impl Into<PathBuf>) -> Change {
        Change::new(path, ChangeKind::Add)
    }

    /// A modified path.
    pub fn modify(path: impl Into<PathBuf>) -> Change {
        Change::new(path, ChangeKind::Modify)
    }

    /// A deleted path.
    pub fn delete(path: impl Into<PathBuf>) -> Change {
        Change::new(path, ChangeKind::Delete)
    }

    /// A directory that hides everything lower layers had under it.
    pub fn opaque(path: impl Into<PathBuf>) -> Change {
        Change::new(path, ChangeKind::Opaque)
    }
}

/// Writes the tree under `root` (not `root` itself) to `out` as an uncompressed tar stream and
/// returns `out` once the end-of-archive blocks are written and `out` is flushed.
///
/// Entries come depth first, siblings sorted byte-wise by name; files with several links inside
/// the tree are archived once and then as hardlink entries; sockets are skipped. See
/// [`TarOptions`] for mtimes, xattrs and overlayfs whiteouts.
pub fn write_dir<W: Write>(root: &Path, out: W, opts: &TarOptions) -> Result<W, ArchiveError> {
    let meta = fs::symlink_metadata(root).map_err(|e| ArchiveError::io(root, "reading", e))?;
    if !meta.is_dir() {
        return Err(ArchiveError::io(
            root,
            "archiving",
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let mut w = TarWriter::new(out, opts);
    let mut abs = root.as_os_str().as_bytes().to_vec();
    if abs.last() != Some(&b'/') {
        abs.push(b'/');
    }
    let abs_base = abs.len();
    let mut rel: Vec<u8> = Vec::new();
    let mut stack = vec![DirLevel {
        children: read_children(root, opts)?.into_iter(),
        rel_len: 0,
    }];
    while let Some(level) = stack.last_mut() {
        let Some(child) = level.children.next() else {
            stack.pop();
            continue;
        };
        rel.truncate(level.rel_len);
        abs.truncate(abs_base);
        rel.extend_from_slice(child.name.as_bytes());
        abs.extend_from_slice(&rel);
        if let Some(out_name) = &child.whiteout {
            rel.truncate(level.rel_len);
            rel.extend_from_slice(out_name.as_bytes());
            w.emit_marker(&rel)?;
            continue;
        }
        let opaque = w.emit(&rel, &abs, &child.meta)?;
        if child.meta.is_dir() {
            if opaque {
                w.emit_opaque(&rel)?;
            }
            let children = read_children(Path::new(OsStr::from_bytes(&abs)), opts)?;
            rel.push(b'/');
            stack.push(DirLevel {
                children: children.into_iter(),
                rel_len: rel.len(),
            });
        }
    }
    w.finish()
}

/// Writes the changes, relative to `root`, to `out` as an uncompressed tar stream (a layer
/// changeset, OCI image spec `layer.md`) and returns `out` once it is complete and flushed.
///
/// `Add` and `Modify` archive the path as it is under `root` (a directory alone, not its
/// contents: list the contents too), `Delete` a whiteout, `Opaque` the directory and its opaque
/// whiteout. Entries are sorted as [`write_dir`] sorts them, duplicate changes are merged, and a
/// deletion under a deleted or opaque directory is dropped as redundant. Hardlinks are kept
/// between the files written.
pub fn write_changes<W: Write>(
    root: &Path,
    changes: &[Change],
    out: W,
    opts: &TarOptions,
) -> Result<W, ArchiveError> {
    let mut normalized: Vec<(PathBuf, ChangeKind)> = Vec::with_capacity(changes.len());
    for change in changes {
        normalized.push((normalize_change_path(&change.path)?, change.kind));
    }
    normalized.sort_by(|a, b| a.0.cmp(&b.0).then(kind_rank(a.1).cmp(&kind_rank(b.1))));

    // Merge changes of the same path: Add and Modify are one entry; Opaque includes the entry.
    let mut merged: Vec<(PathBuf, ChangeKind)> = Vec::with_capacity(normalized.len());
    for (path, kind) in normalized {
        if let Some((last_path, last_kind)) = merged.last_mut() {
            if *last_path == path {
                let last_is_entry = *last_kind != ChangeKind::Delete;
                let is_entry = kind != ChangeKind::Delete;
                if last_is_entry && is_entry {
                    if kind == ChangeKind::Opaque {
                        *last_kind = ChangeKind::Opaque;
                    }
                    continue;
                }
                if !last_is_entry && !is_entry {
                    continue;
                }
            }
        }
        merged.push((path, kind));
    }

    // Directories whose lower contents are gone: deletions below them are redundant.
    let hidden: HashSet<&Path> = merged
        .iter()
        .filter(|(_, k)| matches!(k, ChangeKind::Delete | ChangeKind::Opaque))
        .map(|(p, _)| p.as_path())
        .collect();

    let mut items: Vec<ChangeItem> = Vec::with_capacity(merged.len());
    for (path, kind) in &merged {
        if *kind == ChangeKind::Delete && path.ancestors().skip(1).any(|a| hidden.contains(a)) {
            continue;
        }
        let item = match kind {
            ChangeKind::Delete => ChangeItem {
                out: whiteout_path(path),
                source: None,
                opaque: false,
            },
            ChangeKind::Add | ChangeKind::Modify | ChangeKind::Opaque => {
                let abs = root.join(path);
                let meta =
                    fs::symlink_metadata(&abs).map_err(|e| ArchiveError::io(&abs, "reading", e))?;
                let ft = meta.file_type();
                if *kind == ChangeKind::Opaque && !ft.is_dir() {
                    return Err(ArchiveError::InvalidChange {
                        path: path.clone(),
                        reason: "an opaque change must name a directory",
                    });
                }
                if ft.is_socket() {
                    continue;
                }
                if opts.overlay_whiteouts && is_overlay_whiteout(&meta) {
                    ChangeItem {
                        out: whiteout_path(path),
                        source: None,
                        opaque: false,
                    }
                } else {
                    ChangeItem {
                        out: path.clone(),
                        source: Some((abs, meta)),
                        opaque: *kind == ChangeKind::Opaque,
                    }
                }
            }
        };
        items.push(item);
    }
    items.sort_by(|a, b| a.out.cmp(&b.out));
    if let Some(pair) = items.windows(2).find(|w| w[0].out == w[1].out) {
        return Err(ArchiveError::DuplicateEntry {
            path: pair[0].out.clone(),
        });
    }

    let mut w = TarWriter::new(out, opts);
    for item in &items {
        let rel = item.out.as_os_str().as_bytes();
        match &item.source {
            None => w.emit_marker(rel)?,
            Some((abs, meta)) => {
                let xattr_opaque = w.emit(rel, abs.as_os_str().as_bytes(), meta)?;
                if meta.is_dir() && (item.opaque || xattr_opaque) {
                    w.emit_opaque(rel)?;
                }
            }
        }
    }
    w.finish()
}

/// A change ready to be written: its tar path and, for a file entry, the file it comes from.
struct ChangeItem {
    out: PathBuf,
    source: Option<(PathBuf, Metadata)>,
    opaque: bool,
}

/// Order of kinds for the same path: deletions first, then entries.
fn kind_rank(kind: ChangeKind) -> u8 {
    match kind {
        ChangeKind::Delete => 0,
        ChangeKind::Add | ChangeKind::Modify => 1,
        ChangeKind::Opaque => 2,
    }
}

/// Cleans a change's path to a relative path of normal components.
fn normalize_change_path(path: &Path) -> Result<PathBuf, ArchiveError> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => out.push(name),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ArchiveError::InvalidChange {
                    path: path.to_path_buf(),
                    reason: "the path must not contain `..`",
                });
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(ArchiveError::InvalidChange {
            path: path.to_path_buf(),
            reason: "the path names the root itself",
        });
    }
    Ok(out)
}

/// `dir/name` -> `dir/.wh.name`.
fn whiteout_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(WHITEOUT_PREFIX);
    name.push(path.file_name().unwrap_or_default());
    path.with_file_name(name)
}

/// overlayfs records a deletion in the upper directory as a character device 0/0.
fn is_overlay_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// One directory being walked: its remaining children, sorted.
struct DirLevel {
    children: std::vec::IntoIter<Child>,
    /// Length of the directory's relative path with its trailing `/` (0 for the root).
    rel_len: usize,
}

/// A child of a directory being walked.
struct Child {
    name: OsString,
    meta: Metadata,
    /// `Some(".wh.<name>")` for an overlayfs whiteout.
    whiteout: Option<OsString>,
}

impl Child {
    /// The name the child has in the tar.
    fn out_name(&self) -> &[u8] {
        self.whiteout.as_ref().unwrap_or(&self.name).as_bytes()
    }
}

/// The children of `dir` (with their `lstat`), without sockets, sorted by their name in the tar.
fn read_children(dir: &Path, opts: &TarOptions) -> Result<Vec<Child>, ArchiveError> {
    let read = fs::read_dir(dir).map_err(|e| ArchiveError::io(dir, "listing", e))?;
    let mut children = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| ArchiveError::io(dir, "listing", e))?;
        let meta = entry
            .metadata()
            .map_err(|e| ArchiveError::io(entry.path(), "reading", e))?;
        if meta.file_type().is_socket() {
            continue;
        }
        let name = entry.file_name();
        let whiteout = (opts.overlay_whiteouts && is_overlay_whiteout(&meta)).then(|| {
            let mut w = OsString::from(WHITEOUT_PREFIX);
            w.push(&name);
            w
        });
        children.push(Child {
            name,
            meta,
            whiteout,
        });
    }
    children.sort_unstable_by(|a, b| a.out_name().cmp(b.out_name()));
    Ok(children)
}

/// Writes whole blocks to the output through a staging buffer of [`CHUNK`] bytes.
struct Sink<W: Write> {
    out: W,
    buf: Box<[u8]>,
    fill: usize,
}

impl<W: Write> Sink<W> {
    fn new(out: W) -> Self {
        Sink {
            out,
            buf: vec![0u8; CHUNK].into_boxed_slice(),
            fill: 0,
        }
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if self.fill > 0 {
            self.out.write_all(&self.buf[..self.fill])?;
            self.fill = 0;
        }
        Ok(())
    }

    fn put(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.fill == CHUNK {
                self.flush_buf()?;
            }
            let n = bytes.len().min(CHUNK - self.fill);
            self.buf[self.fill..self.fill + n].copy_from_slice(&bytes[..n]);
            self.fill += n;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn zeros(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            if self.fill == CHUNK {
                self.flush_buf()?;
            }
            let k = n.min(CHUNK - self.fill);
            self.buf[self.fill..self.fill + k].fill(0);
            self.fill += k;
            n -= k;
        }
        Ok(())
    }

    /// Pads the data just written (of `len` bytes) to a whole block.
    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem == 0 {
            Ok(())
        } else {
            self.zeros(BLOCK - rem)
        }
    }

    /// Copies exactly `size` bytes of `file` into the stream, reading straight into the
    /// staging buffer. Returns the bytes the file really had when they differ from `size`.
    fn copy_file(&mut self, file: &mut File, size: u64) -> io::Result<Result<(), u64>> {
        let mut done: u64 = 0;
        loop {
            if self.fill == CHUNK {
                self.flush_buf()?;
            }
            let n = match file.read(&mut self.buf[self.fill..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            done += n as u64;
            if done > size {
                return Ok(Err(done));
            }
            self.fill += n;
        }
        if done != size {
            return Ok(Err(done));
        }
        self.pad(size)?;
        Ok(Ok(()))
    }
}

/// The extended attributes of the current file, sorted by name.
#[derive(Default)]
struct Xattrs {
    /// NUL-separated names, as `listxattr` gives them.
    names: Vec<u8>,
    /// The archived values, concatenated.
    values: Vec<u8>,
    /// (name range in `names`, value range in `values`) of each archived attribute.
    entries: Vec<(Range<usize>, Range<usize>)>,
    /// Scratch buffer for one value.
    value: Vec<u8>,
    /// The file carries overlayfs' opaque attribute set to `y`.
    overlay_opaque: bool,
}

impl Xattrs {
    /// Loads the attributes of the file at `cpath`: the archived ones into `entries`, and
    /// overlayfs' markers into `overlay_opaque` (or an error for unsupported ones).
    fn load(
        &mut self,
        source: XattrSource<'_>,
        path: &Path,
        archive: bool,
        overlay: bool,
    ) -> Result<(), ArchiveError> {
        self.entries.clear();
        self.values.clear();
        self.overlay_opaque = false;
        sys::list_xattrs(source, &mut self.names)
            .map_err(|e| ArchiveError::io(path, "listing extended attributes of", e))?;
        let mut start = 0;
        while start < self.names.len() {
            let end = match self.names[start..].iter().position(|&b| b == 0) {
                Some(i) => start + i,
                None => self.names.len(),
            };
            let range = start..end;
            start = end + 1;
            let name = &self.names[range.clone()];
            if name.is_empty() || end == self.names.len() {
                continue;
            }
            let Ok(key) = CStr::from_bytes_with_nul(&self.names[range.start..=range.end]) else {
                continue;
            };
            if let Some(prefix) = OVERLAY_XATTR_PREFIXES.iter().find(|p| name.starts_with(p)) {
                if !overlay {
                    continue;
                }
                let suffix = &name[prefix.len()..];
                if let Some(what) = OVERLAY_UNSUPPORTED.iter().find(|w| suffix == w.as_bytes()) {
                    return Err(ArchiveError::UnsupportedOverlay {
                        path: path.to_path_buf(),
                        xattr: (*what).to_owned(),
                    });
                }
                if OVERLAY_OPAQUE_XATTRS.contains(&name)
                    && sys::get_xattr(source, key, &mut self.value)
                        .map_err(|e| ArchiveError::io(path, "reading extended attributes of", e))?
                    && self.value == b"y"
                {
                    self.overlay_opaque = true;
                }
                continue;
            }
            if !archive || name == b"security.selinux" {
                continue;
            }
            if !sys::get_xattr(source, key, &mut self.value)
                .map_err(|e| ArchiveError::io(path, "reading extended attributes of", e))?
            {
                continue;
            }
            let v = self.values.len()..self.values.len() + self.value.len();
            self.values.extend_from_slice(&self.value);
            self.entries.push((range, v));
        }
        let names = &self.names;
        self.entries
            .sort_unstable_by(|a, b| names[a.0.clone()].cmp(&names[b.0.clone()]));
        Ok(())
    }
}

/// Encodes entries into a [`Sink`].
struct TarWriter<'o, W: Write> {
    sink: Sink<W>,
    opts: &'o TarOptions,
    /// First path written for each (device, inode) with several links.
    links: HashMap<(u64, u64), Vec<u8>>,
    xattrs: Xattrs,
    /// PAX records of the current entry.
    pax: Vec<u8>,
    /// Tar name of the current entry.
    name: Vec<u8>,
    /// NUL-terminated absolute path of the current file.
    cpath: Vec<u8>,
}

/// The header fields of one entry, before encoding.
struct EntryFields<'a> {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    size: u64,
    link: Option<&'a [u8]>,
    dev: Option<(u32, u32)>,
    /// Whether the current file's archived xattrs go into the PAX records.
    xattrs: bool,
}

impl<'o, W: Write> TarWriter<'o, W> {
    fn new(out: W, opts: &'o TarOptions) -> Self {
        TarWriter {
            sink: Sink::new(out),
            opts,
            links: HashMap::new(),
            xattrs: Xattrs::default(),
            pax: Vec::new(),
            name: Vec::new(),
            cpath: Vec::new(),
        }
    }

    /// Writes the entry for the file at `abs` under the tar path `rel` (without trailing `/`).
    /// Returns whether it is a directory overlayfs marks opaque.
    fn emit(&mut self, rel: &[u8], abs: &[u8], meta: &Metadata) -> Result<bool, ArchiveError> {
        let path = Path::new(OsStr::from_bytes(abs));
        let ft = meta.file_type();
        if ft.is_socket() {
            return Ok(false);
        }
        self.name.clear();
        self.name.extend_from_slice(rel);
        let mtime = self.opts.clamp(meta.mtime());
        let mode = meta.mode() & 0o7777;
        let (uid, gid) = (u64::from(meta.uid()), u64::from(meta.gid()));

        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(target) = self.links.get(&key).cloned() {
                let fields = EntryFields {
                    kind: tar::EntryType::Link,
                    mode,
                    uid,
                    gid,
                    mtime,
                    size: 0,
                    link: Some(&target),
                    dev: None,
                    xattrs: false,
                };
                self.write_header(&fields, path)?;
                return Ok(false);
            }
            self.links.insert(key, rel.to_vec());
        }

        // A regular file with data is opened first, so that its xattrs are read through the
        // descriptor rather than by walking the path again.
        let size = meta.len();
        let mut file = if ft.is_file() && size > 0 {
            Some(
                File::options()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .map_err(|e| ArchiveError::io(path, "opening", e))?,
            )
        } else {
            None
        };
        if self.opts.xattrs || self.opts.overlay_whiteouts {
            let source = match &file {
                Some(f) => XattrSource::Fd(f.as_fd()),
                None => {
                    self.cpath.clear();
                    self.cpath.extend_from_slice(abs);
                    self.cpath.push(0);
                    XattrSource::Path(CStr::from_bytes_with_nul(&self.cpath).map_err(|_| {
                        ArchiveError::io(
                            path,
                            "reading",
                            io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"),
                        )
                    })?)
                }
            };
            self.xattrs
                .load(source, path, self.opts.xattrs, self.opts.overlay_whiteouts)?;
        } else {
            self.xattrs.entries.clear();
            self.xattrs.overlay_opaque = false;
        }

        let mut fields = EntryFields {
            kind: tar::EntryType::Regular,
            mode,
            uid,
            gid,
            mtime,
            size: 0,
            link: None,
            dev: None,
            xattrs: true,
        };
        if ft.is_dir() {
            fields.kind = tar::EntryType::Directory;
            self.name.push(b'/');
            self.write_header(&fields, path)?;
            return Ok(self.xattrs.overlay_opaque);
        }
        if ft.is_symlink() {
            let target =
                fs::read_link(path).map_err(|e| ArchiveError::io(path, "reading link", e))?;
            fields.kind = tar::EntryType::Symlink;
            fields.link = Some(target.as_os_str().as_bytes());
            self.write_header(&fields, path)?;
            return Ok(false);
        }
        if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            fields.kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            };
            if !ft.is_fifo() {
                let rdev = meta.rdev() as libc::dev_t;
                fields.dev = Some((libc::major(rdev), libc::minor(rdev)));
            }
            self.write_header(&fields, path)?;
            return Ok(false);
        }

        fields.size = size;
        let Some(file) = file.as_mut() else {
            self.write_header(&fields, path)?;
            return Ok(false);
        };
        self.write_header(&fields, path)?;
        match self
            .sink
            .copy_file(file, size)
            .map_err(|e| ArchiveError::io(path, "reading", e))?
        {
            Ok(()) => Ok(false),
            Err(actual) => Err(ArchiveError::FileChanged {
                path: path.to_path_buf(),
                expected: size,
                actual,
            }),
        }
    }

    /// Writes an empty regular file named `rel`: a whiteout marker.
    fn emit_marker(&mut self, rel: &[u8]) -> Result<(), ArchiveError> {
        self.name.clear();
        self.name.extend_from_slice(rel);
        let fields = EntryFields {
            kind: tar::EntryType::Regular,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: self.opts.source_date_epoch.unwrap_or(0),
            size: 0,
            link: None,
            dev: None,
            xattrs: false,
        };
        let path = PathBuf::from(OsStr::from_bytes(rel));
        self.write_header(&fields, &path)
    }

    /// Writes `rel/.wh..wh..opq`.
    fn emit_opaque(&mut self, rel: &[u8]) -> Result<(), ArchiveError> {
        let mut marker = Vec::with_capacity(rel.len() + 1 + OPAQUE_WHITEOUT.len());
        marker.extend_from_slice(rel);
        marker.push(b'/');
        marker.extend_from_slice(OPAQUE_WHITEOUT.as_bytes());
        self.emit_marker(&marker)
    }

    /// Encodes the header (and PAX header if needed) of the entry named `self.name`.
    fn write_header(&mut self, f: &EntryFields<'_>, path: &Path) -> Result<(), ArchiveError> {
        // A value too large for its octal field goes into a PAX record below; the header field
        // then holds it in GNU base-256 (the tar crate's encoding), for readers without PAX.
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(f.kind);
        header.set_mode(f.mode);
        header.set_uid(f.uid);
        header.set_gid(f.gid);
        header.set_size(f.size);
        header.set_mtime(u64::try_from(f.mtime).unwrap_or(0));
        let name_fits = {
            let ustar = header
                .as_ustar_mut()
                .expect("Header::new_ustar builds a ustar header");
            let (major, minor) = f.dev.unwrap_or((0, 0));
            ustar.set_device_major(major);
            ustar.set_device_minor(minor);
            let fits = split_ustar_name(&self.name, &mut ustar.prefix, &mut ustar.name);
            if !fits {
                let n = self.name.len().min(NAME_LEN);
                ustar.name[..n].copy_from_slice(&self.name[..n]);
            }
            if let Some(link) = f.link {
                let n = link.len().min(NAME_LEN);
                ustar.linkname[..n].copy_from_slice(&link[..n]);
            }
            fits
        };

        // PAX records, sorted by key as Go's archive/tar writes them ("SCHILY..." sorts first).
        self.pax.clear();
        if f.xattrs {
            for (name, value) in &self.xattrs.entries {
                pax_record(
                    &mut self.pax,
                    &[b"SCHILY.xattr.", &self.xattrs.names[name.clone()]],
                    &self.xattrs.values[value.clone()],
                );
            }
        }
        if f.gid > MAX_OCTAL_ID {
            pax_record(&mut self.pax, &[b"gid"], f.gid.to_string().as_bytes());
        }
        if let Some(link) = f.link.filter(|l| l.len() > NAME_LEN) {
            pax_record(&mut self.pax, &[b"linkpath"], link);
        }
        if !(0..=MAX_OCTAL_TIME).contains(&f.mtime) {
            pax_record(&mut self.pax, &[b"mtime"], f.mtime.to_string().as_bytes());
        }
        if !name_fits {
            pax_record(&mut self.pax, &[b"path"], &self.name);
        }
        if f.size > MAX_OCTAL_SIZE {
            pax_record(&mut self.pax, &[b"size"], f.size.to_string().as_bytes());
        }
        if f.uid > MAX_OCTAL_ID {
            pax_record(&mut self.pax, &[b"uid"], f.uid.to_string().as_bytes());
        }

        let result = (|| -> io::Result<()> {
            if !self.pax.is_empty() {
                let mut pax_header = tar::Header::new_ustar();
                pax_header.set_entry_type(tar::EntryType::XHeader);
                pax_header.set_mode(0);
                pax_header.set_uid(0);
                pax_header.set_gid(0);
                pax_header.set_mtime(0);
                pax_header.set_size(self.pax.len() as u64);
                {
                    let ustar = pax_header
                        .as_ustar_mut()
                        .expect("Header::new_ustar builds a ustar header");
                    ustar.set_device_major(0);
                    ustar.set_device_minor(0);
                    pax_header_name(&self.name, &mut ustar.name);
                }
                pax_header.set_cksum();
                self.sink.put(pax_header.as_bytes())?;
                self.sink.put(&self.pax)?;
                self.sink.pad(self.pax.len() as u64)?;
            }
            header.set_cksum();
            self.sink.put(header.as_bytes())
        })();
        result.map_err(|e| ArchiveError::io(path, "writing tar entry for", e))
    }

    /// Writes the end-of-archive blocks, flushes and returns the output.
    fn finish(mut self) -> Result<W, ArchiveError> {
        let result = (|| -> io::Result<()> {
            self.sink.zeros(2 * BLOCK)?;
            self.sink.flush_buf()?;
            self.sink.out.flush()
        })();
        result.map_err(|e| ArchiveError::io("(end of archive)", "writing", e))?;
        Ok(self.sink.out)
    }
}

/// Puts `path` into the ustar `prefix` and `name` fields when it fits (splitting at a `/` as
/// Go's `splitUSTARPath` does); returns `false`, leaving them untouched, when it does not.
fn split_ustar_name(path: &[u8], prefix: &mut [u8; PREFIX_LEN], name: &mut [u8; NAME_LEN]) -> bool {
    if path.len() <= NAME_LEN {
        name[..path.len()].copy_from_slice(path);
        return true;
    }
    let mut limit = path.len();
    if limit > PREFIX_LEN + 1 {
        limit = PREFIX_LEN + 1;
    } else if path[limit - 1] == b'/' {
        limit -= 1;
    }
    let Some(i) = path[..limit].iter().rposition(|&b| b == b'/') else {
        return false;
    };
    let suffix_len = path.len() - i - 1;
    if i == 0 || suffix_len == 0 || suffix_len > NAME_LEN || i > PREFIX_LEN {
        return false;
    }
    prefix[..i].copy_from_slice(&path[..i]);
    name[..suffix_len].copy_from_slice(&path[i + 1..]);
    true
}

/// The name of the PAX header of the entry `path`: `dir/PaxHeaders.0/file`, cut to 100 bytes.
fn pax_header_name(path: &[u8], out: &mut [u8; NAME_LEN]) {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    let (dir, file) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    let parts: [&[u8]; 3] = [dir, b"PaxHeaders.0/", file];
    let mut n = 0;
    for part in parts {
        let k = part.len().min(NAME_LEN - n);
        out[n..n + k].copy_from_slice(&part[..k]);
        n += k;
    }
}

/// Appends the PAX record `"<len> <key>=<value>\n"`, `len` counting the whole record.
fn pax_record(buf: &mut Vec<u8>, key: &[&[u8]], value: &[u8]) {
    let key_len: usize = key.iter().map(|k| k.len()).sum();
    let base = key_len + value.len() + 3;
    let mut digits = 1;
    let total = loop {
        let total = base + digits;
        if decimal_digits(total) == digits {
            break total;
        }
        digits += 1;
    };
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "{total} ");
    for k in key {
        buf.extend_from_slice(k);
    }
    buf.push(b'=');
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

fn decimal_digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, u64, Option<String>)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    e.header().entry_type(),
                    e.size(),
                    e.link_name_bytes()
                        .map(|l| String::from_utf8(l.into_owned()).unwrap()),
                )
            })
            .collect()
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut buf = Vec::new();
        pax_record(&mut buf, &[b"path"], b"abc");
        assert_eq!(buf, b"12 path=abc\n");
        // 99 bytes without the length: one digit makes 100, which needs three, so 102.
        buf.clear();
        pax_record(&mut buf, &[b"k"], &[b'v'; 95]);
        assert_eq!(buf.len(), 102);
        assert!(buf.starts_with(b"102 k="));
        // Split keys are concatenated.
        buf.clear();
        pax_record(&mut buf, &[b"SCHILY.xattr.", b"user.a"], b"1");
        assert_eq!(buf, b"25 SCHILY.xattr.user.a=1\n");
    }

    #[test]
    fn ustar_split_follows_go() {
        let mut prefix = [0u8; PREFIX_LEN];
        let mut name = [0u8; NAME_LEN];
        assert!(split_ustar_name(b"short", &mut prefix, &mut name));
        assert_eq!(&name[..5], b"short");

        let long = format!("{}/{}", "d".repeat(150), "f".repeat(99));
        let (mut prefix, mut name) = ([0u8; PREFIX_LEN], [0u8; NAME_LEN]);
        assert!(split_ustar_name(long.as_bytes(), &mut prefix, &mut name));
        assert_eq!(&prefix[..150], "d".repeat(150).as_bytes());
        assert_eq!(&name[..99], "f".repeat(99).as_bytes());

        // A last component longer than 100 bytes cannot be split.
        let long = format!("d/{}", "f".repeat(101));
        assert!(!split_ustar_name(long.as_bytes(), &mut prefix, &mut name));
        // Nor a prefix longer than 155 bytes.
        let long = format!("{}/f", "d".repeat(156));
        assert!(!split_ustar_name(long.as_bytes(), &mut prefix, &mut name));
        // A directory's trailing slash stays with the name.
        let long = format!("{}/{}/", "d".repeat(60), "e".repeat(60));
        let (mut prefix, mut name) = ([0u8; PREFIX_LEN], [0u8; NAME_LEN]);
        assert!(split_ustar_name(long.as_bytes(), &mut prefix, &mut name));
        assert_eq!(&name[..61], format!("{}/", "e".repeat(60)).as_bytes());
    }

    #[test]
    fn pax_header_names_like_go() {
        let mut out = [0u8; NAME_LEN];
        pax_header_name(b"a/b/c", &mut out);
        assert_eq!(&out[..19], b"a/b/PaxHeaders.0/c\0");
        let mut out = [0u8; NAME_LEN];
        pax_header_name(b"dir/", &mut out);
        assert_eq!(&out[..17], b"PaxHeaders.0/dir\0");
    }

    #[test]
    fn writes_sorted_entries_with_dir_slashes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("a")).unwrap();
        fs::write(root.join("a/b"), b"hello").unwrap();
        fs::write(root.join("a-c"), b"").unwrap();
        fs::write(root.join("Z"), b"z").unwrap();
        symlink("../x", root.join("a/link")).unwrap();
        let tar = write_dir(root, Vec::new(), &TarOptions::default()).unwrap();
        assert_eq!(tar.len() % BLOCK, 0);
        let got = entries(&tar);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["Z", "a/", "a/b", "a/link", "a-c"]);
        assert_eq!(got[1].1, tar::EntryType::Directory);
        assert_eq!(got[2].2, 5);
        assert_eq!(got[3].1, tar::EntryType::Symlink);
        assert_eq!(got[3].3.as_deref(), Some("../x"));
    }

    #[test]
    fn hardlinks_point_at_the_first_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("b"), b"data").unwrap();
        fs::hard_link(root.join("b"), root.join("a")).unwrap();
        fs::hard_link(root.join("b"), root.join("c")).unwrap();
        let tar = write_dir(root, Vec::new(), &TarOptions::default()).unwrap();
        let got = entries(&tar);
        assert_eq!(got[0].0, "a");
        assert_eq!(got[0].1, tar::EntryType::Regular);
        assert_eq!(got[0].2, 4);
        for e in &got[1..] {
            assert_eq!(e.1, tar::EntryType::Link);
            assert_eq!(e.3.as_deref(), Some("a"));
        }
    }

    #[test]
    fn clamps_mtimes_and_keeps_mode_bits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("f"), b"x").unwrap();
        fs::set_permissions(root.join("f"), fs::Permissions::from_mode(0o6755)).unwrap();
        filetime::set_file_mtime(root.join("f"), filetime::FileTime::from_unix_time(2_000, 0))
            .unwrap();
        fs::write(root.join("old"), b"x").unwrap();
        filetime::set_file_mtime(root.join("old"), filetime::FileTime::from_unix_time(500, 0))
            .unwrap();
        let opts = TarOptions {
            source_date_epoch: Some(1_000),
            ..TarOptions::default()
        };
        let tar = write_dir(root, Vec::new(), &opts).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut seen = 0;
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            match &*e.path_bytes() {
                b"f" => {
                    assert_eq!(e.header().mtime().unwrap(), 1_000);
                    assert_eq!(e.header().mode().unwrap(), 0o6755);
                }
                b"old" => assert_eq!(e.header().mtime().unwrap(), 500),
                other => panic!("unexpected entry {other:?}"),
            }
            seen += 1;
        }
        assert_eq!(seen, 2);
    }

    #[test]
    fn detects_a_file_that_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"0123456789").unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        fs::write(&path, b"0123456789abcdef").unwrap();
        let opts = TarOptions::default();
        let mut w = TarWriter::new(Vec::new(), &opts);
        let err = w
            .emit(b"f", path.as_os_str().as_bytes(), &meta)
            .unwrap_err();
        match err {
            ArchiveError::FileChanged {
                expected, actual, ..
            } => {
                assert_eq!(expected, 10);
                assert!(actual > 10);
            }
            other => panic!("unexpected error {other}"),
        }
        fs::write(&path, b"01").unwrap();
        let mut w = TarWriter::new(Vec::new(), &opts);
        let err = w
            .emit(b"f", path.as_os_str().as_bytes(), &meta)
            .unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::FileChanged {
                    expected: 10,
                    actual: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn change_lists_are_normalized() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc/app.d")).unwrap();
        fs::write(root.join("etc/app.d/default.cfg"), b"x").unwrap();
        let changes = [
            Change::add("/etc/app.d/default.cfg"),
            Change::modify("etc/app.d"),
            Change::add("etc/app.d"),
            Change::delete("etc/my-app-config"),
            Change::delete("gone"),
            Change::delete("gone/sub/file"),
            Change::opaque("etc"),
        ];
        // `etc` is opaque and `gone` deleted, so the deletions below them are redundant.
        let tar = write_changes(root, &changes, Vec::new(), &TarOptions::default()).unwrap();
        let got = entries(&tar);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                ".wh.gone",
                "etc/",
                "etc/.wh..wh..opq",
                "etc/app.d/",
                "etc/app.d/default.cfg"
            ]
        );
        assert!(matches!(
            write_changes(
                root,
                &[Change::add("a/../b")],
                Vec::new(),
                &TarOptions::default()
            ),
            Err(ArchiveError::InvalidChange { .. })
        ));
        assert!(matches!(
            write_changes(
                root,
                &[Change::opaque("etc/app.d/default.cfg")],
                Vec::new(),
                &TarOptions::default()
            ),
            Err(ArchiveError::InvalidChange { .. })
        ));
        assert!(matches!(
            write_changes(
                root,
                &[Change::add("missing")],
                Vec::new(),
                &TarOptions::default()
            ),
            Err(ArchiveError::Io { .. })
        ));
    }

    #[test]
    fn source_date_epoch_values() {
        let parse = |v: Option<&str>| TarOptions::from_source_date_epoch(v.map(OsString::from));
        assert_eq!(parse(Some("1234")).unwrap().source_date_epoch, Some(1234));
        assert_eq!(parse(Some(" 99\n")).unwrap().source_date_epoch, Some(99));
        assert_eq!(parse(Some("")).unwrap().source_date_epoch, None);
        assert_eq!(parse(None).unwrap().source_date_epoch, None);
        assert!(matches!(
            parse(Some("soon")),
            Err(ArchiveError::InvalidSourceDateEpoch { .. })
        ));
    }
}
