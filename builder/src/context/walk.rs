//! The walker over the build context: entries in a deterministic order, with the ignore rules
//! applied and symlinks never followed.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::ContextError;
use super::ignore::{Dockerignore, MatchState};

/// The type of a file in the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed by the walker).
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
}

impl FileKind {
    fn of(file_type: fs::FileType) -> Self {
        if file_type.is_dir() {
            Self::Dir
        } else if file_type.is_symlink() {
            Self::Symlink
        } else if file_type.is_char_device() {
            Self::CharDevice
        } else if file_type.is_block_device() {
            Self::BlockDevice
        } else if file_type.is_fifo() {
            Self::Fifo
        } else if file_type.is_socket() {
            Self::Socket
        } else {
            Self::File
        }
    }
}

/// A point in time: whole seconds since the Unix epoch (negative before it) and the
/// nanoseconds within that second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds, below 1e9.
    pub nanos: u32,
}

/// One file of the build context, with the metadata that checksums and layers need. The
/// metadata is the file's own (`lstat`): a symlink is described, not its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path relative to the context root, without a leading `./`; `.` for the root.
    pub path: PathBuf,
    /// The type of file.
    pub kind: FileKind,
    /// The permission bits, with set-user-id, set-group-id and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// The owner's user id.
    pub uid: u32,
    /// The owner's group id.
    pub gid: u32,
    /// The size in bytes of a regular file; 0 for every other kind.
    pub size: u64,
    /// The last modification time.
    pub mtime: Timestamp,
    /// What a symlink points to, exactly as stored; `None` for other kinds.
    pub link_target: Option<PathBuf>,
    /// The device number of a character or block device (`st_rdev`); 0 otherwise.
    pub rdev: u64,
    /// The device the file is on (`st_dev`); with `ino` it identifies hard links.
    pub dev: u64,
    /// The inode number (`st_ino`).
    pub ino: u64,
    /// The number of hard links (`st_nlink`).
    pub nlink: u64,
}

impl Entry {
    /// Describes the file at `host` (metadata from `lstat`, already taken) as `path`.
    pub(crate) fn from_metadata(
        path: PathBuf,
        host: &Path,
        md: &fs::Metadata,
    ) -> Result<Self, ContextError> {
        let kind = FileKind::of(md.file_type());
        let link_target = match kind {
            FileKind::Symlink => Some(fs::read_link(host).map_err(|e| ContextError::io(host, e))?),
            _ => None,
        };
        Ok(Self {
            path,
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if kind == FileKind::File { md.size() } else { 0 },
            mtime: Timestamp {
                secs: md.mtime(),
                nanos: u32::try_from(md.mtime_nsec()).unwrap_or(0),
            },
            link_target,
            rdev: match kind {
                FileKind::CharDevice | FileKind::BlockDevice => md.rdev(),
                _ => 0,
            },
            dev: md.dev(),
            ino: md.ino(),
            nlink: md.nlink(),
        })
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }
}

/// A callback that may keep the walker out of a directory: it gets the directory's path
/// relative to the context root and whether the directory itself is excluded, and returns
/// `true` to skip everything below it.
pub(crate) type Prune<'a> = Box<dyn FnMut(&str, bool) -> bool + 'a>;

/// A directory the walk is inside of.
struct Frame {
    depth: usize,
    rel: String,
    state: MatchState,
    /// An excluded directory not yet yielded: it is, just before the first thing below it
    /// that is not excluded, so that every yielded entry's parent is yielded too.
    pending: Option<Entry>,
}

/// An iterator over the entries of the context below one directory (made by
/// [`Context::walk`](super::Context::walk) and [`Context::walk_dir`](super::Context::walk_dir)).
///
/// - Order: depth first, siblings sorted byte-wise by name, so a directory comes before its
///   contents and the same tree always gives the same sequence (the order of the layer tar
///   writer, and of BuildKit's walker).
/// - Ignore rules: an excluded file is skipped. An excluded directory is skipped with
///   everything below it, unless an exception could re-include something below it: then the
///   walker descends, and yields the directory (with its real metadata) just before the first
///   re-included entry below it, as BuildKit does; if nothing below is re-included, the
///   directory does not appear at all.
/// - Symlinks are yielded as symlinks and never followed, so the walk cannot leave the
///   context through one.
/// - A directory that cannot be read is an error, except when it is excluded (its contents
///   could only matter through an exception): a permission error there is skipped, as in
///   BuildKit.
///
/// The walk reads the file system by path as it goes, as BuildKit's does: the context is
/// expected not to change during the walk. Files changed meanwhile may or may not be seen, and
/// a directory swapped for a symlink between being listed and being read would be read
/// through that symlink.
pub struct Walk<'a> {
    root: &'a Path,
    ignore: &'a Dockerignore,
    iter: walkdir::IntoIter,
    base_state: MatchState,
    stack: Vec<Frame>,
    out: VecDeque<Entry>,
    prune: Option<Prune<'a>>,
}

impl<'a> Walk<'a> {
    /// Walks below `base_rel` (relative to `root`, `""` for the root itself), a directory
    /// whose every component is a real directory (no symlinks).
    pub(crate) fn new(
        root: &'a Path,
        ignore: &'a Dockerignore,
        base_rel: &Path,
        prune: Option<Prune<'a>>,
    ) -> Self {
        let base_str = base_rel.to_string_lossy();
        let (base_state, start) = if base_str.is_empty() || base_str == "." {
            (MatchState::default(), root.to_path_buf())
        } else {
            (ignore.state(&base_str, None), root.join(base_rel))
        };
        let iter = walkdir::WalkDir::new(start)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        Self {
            root,
            ignore,
            iter,
            base_state,
            stack: Vec::new(),
            out: VecDeque::new(),
            prune,
        }
    }

    fn visit(&mut self, dent: walkdir::DirEntry) -> Result<(), ContextError> {
        let depth = dent.depth();
        while self.stack.last().is_some_and(|frame| frame.depth >= depth) {
            self.stack.pop();
        }
        let host = dent.path();
        let rel_path = host
            .strip_prefix(self.root)
            .map_err(|_| {
                ContextError::io(host, io::Error::other("walked outside the context root"))
            })?
            .to_path_buf();
        let rel = rel_path.to_string_lossy().into_owned();
        let parent = self.stack.last().map_or(&self.base_state, |f| &f.state);
        let state = self.ignore.state(&rel, Some(parent));
        let is_dir = dent.file_type().is_dir();

        if self.ignore.excluded(&state) {
            if is_dir && self.ignore.may_reinclude(&rel, &state) && !self.pruned(&rel, true) {
                let md = dent.metadata().map_err(walk_error)?;
                let entry = Entry::from_metadata(rel_path, host, &md)?;
                self.stack.push(Frame {
                    depth,
                    rel,
                    state,
                    pending: Some(entry),
                });
            } else if is_dir {
                self.iter.skip_current_dir();
            }
            return Ok(());
        }

        let md = dent.metadata().map_err(walk_error)?;
        let entry = Entry::from_metadata(rel_path, host, &md)?;
        for frame in &mut self.stack {
            if let Some(parent) = frame.pending.take() {
                self.out.push_back(parent);
            }
        }
        self.out.push_back(entry);
        if is_dir {
            if self.pruned(&rel, false) {
                self.iter.skip_current_dir();
            } else {
                self.stack.push(Frame {
                    depth,
                    rel,
                    state,
                    pending: None,
                });
            }
        }
        Ok(())
    }

    fn pruned(&mut self, rel: &str, excluded: bool) -> bool {
        self.prune
            .as_mut()
            .is_some_and(|prune| prune(rel, excluded))
    }

    /// Whether a walk error may be skipped: a directory that cannot be read for lack of
    /// permission, when that directory is excluded.
    fn tolerable(&self, err: &walkdir::Error) -> bool {
        let denied = err
            .io_error()
            .is_some_and(|e| e.kind() == io::ErrorKind::PermissionDenied);
        let Some(rel) = err.path().and_then(|p| p.strip_prefix(self.root).ok()) else {
            return false;
        };
        let rel = rel.to_string_lossy();
        denied
            && self
                .stack
                .iter()
                .any(|f| f.rel == rel && self.ignore.excluded(&f.state))
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<Entry, ContextError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.out.pop_front() {
                return Some(Ok(entry));
            }
            match self.iter.next()? {
                Ok(dent) => {
                    if let Err(e) = self.visit(dent) {
                        return Some(Err(e));
                    }
                }
                Err(err) if self.tolerable(&err) => {}
                Err(err) => return Some(Err(walk_error(err))),
            }
        }
    }
}

fn walk_error(err: walkdir::Error) -> ContextError {
    let path = err.path().map(Path::to_path_buf).unwrap_or_default();
    let source = err
        .into_io_error()
        .unwrap_or_else(|| io::Error::other("file system loop"));
    ContextError::Io { path, source }
}
