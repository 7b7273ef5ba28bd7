//! `COPY`, and the half of `ADD` that copies, as BuildKit's file operation does them (its copy
//! backend over tonistiigi/fsutil's `copy.Copy`, as docker 20.10 runs it):
//!
//! - a source is resolved in its tree (the build context, a stage's or an image's root, or a
//!   directory the step filled itself: a download, a here-document) as in a chroot; wildcards
//!   (`*`, `?`, `[..]`) are Go's `filepath.Match` on the path below the last directory without
//!   one, a matching directory is not searched further, and a match that is a symlink is
//!   followed but keeps its own name. A wildcard that matches nothing copies nothing, as in
//!   BuildKit, but the directory it searches must exist; a plain source that is missing fails
//!   the step (saying so when a symlink on its way leads out of the tree: symlinks are
//!   followed inside it, never out);
//! - the destination is resolved in the step's root as in a chroot. The directories COPY makes
//!   for it (`mkdir -p` of its parent, or of itself when it is named as a directory: a trailing
//!   `/`, or several sources) are `0755` and owned by the `--chown` owner;
//! - a file is copied to the destination, or into it when it is a directory; a directory's
//!   contents are copied into the destination, which, when COPY has to make it, is made like
//!   its parents (not with the source directory's mode or owner);
//! - what is copied keeps its mode, mtime and extended attributes, and its owner unless
//!   `--chown` is given (the files of the build context are owned by root: the docker client
//!   sends them so). Files of one source that are hard links of each other stay linked; two
//!   sources never share a link, as each is its own `copy.Copy`;
//! - `--chmod` (octal, or symbolic as chmod(1) writes it) sets the mode of every file and
//!   directory copied, not of the directories made for the destination;
//! - `--exclude` patterns (`.dockerignore` syntax, `**` and `!` included) are matched against
//!   the paths below each source directory, and against a wildcard match's path below the
//!   wildcard's directory;
//! - `--parents` copies each match with its path below the context root, or below the
//!   `/./` pivot of the source (`COPY --parents ./src/./a/b.txt /d/` makes `/d/a/b.txt`);
//!   the source is a `.dockerignore`-style pattern there, so `**` spans directories. The
//!   directories on the way take their mode and owner from the source's;
//! - `--link` changes how BuildKit makes the layer (on an empty tree, merged afterwards), not
//!   what the image holds, so here it copies the same way.
//!
//! Where a source file replaces a directory of the destination, or a source directory meets a
//! non-directory, the step fails, as BuildKit's does. `super::add` has the archives and URLs
//! of `ADD`.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Component, Path, PathBuf};

use filetime::FileTime;

use super::State;
use super::add::{self, Compression};
use super::root::StepRoot;
use crate::context::pattern::contains_wildcards;
use crate::context::{
    Context, ContextError, Dockerignore, Entry, FileKind, FinalSymlink, PathPattern, Syntax,
    Timestamp, clean_path, glob_below,
};
use crate::instructions::{Add, Chmod, Copy, FromRef, InlineFile, Lowered};

/// How many symlinks a path may go through.
const MAX_SYMLINKS: usize = 40;

/// Extended attribute prefixes never copied: overlayfs reads them as its own markers, and an
/// SELinux label belongs to the host that made the file, not to the image.
pub(super) const SKIPPED_XATTR_PREFIXES: [&[u8]; 3] =
    [b"trusted.overlay.", b"user.overlay.", b"security.selinux"];

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

/// `mkdir -p` of `dir` (absolute, inside the container) under `root`, as BuildKit's `MkdirAll`:
/// what it creates is `0755` and owned by `owner`, what exists is left alone, and a
/// non-directory on the way is an error.
pub(super) fn mkdir_all(root: &Path, dir: &Path, owner: (u32, u32)) -> io::Result<()> {
    super::workdir::mkdir_all(root, dir, owner.0, owner.1)
}

/// A tree files are copied from, resolved as a chroot by [`Context`] (with no ignore rules
/// for anything but the build context).
pub(super) struct Tree {
    files: Context,
    /// Whether what is copied from it is owned by root whatever the host says: the docker
    /// client sends the build context with every owner reset to 0:0.
    reset_owner: bool,
}

impl Tree {
    /// The build context.
    pub(super) fn context(context: &Context) -> Tree {
        Tree {
            files: context.clone(),
            reset_owner: true,
        }
    }

    /// A root directory (a stage's or image's root, a directory the step prepared), owners
    /// kept.
    pub(super) fn dir(dir: &Path) -> Result<Tree, String> {
        Ok(Tree {
            files: Context::new(dir, Dockerignore::empty()).map_err(|e| e.to_string())?,
            reset_owner: false,
        })
    }

    pub(super) fn host_path(&self, entry: &Entry) -> PathBuf {
        self.files.host_path(entry)
    }

    /// The tree in an error message.
    fn what(&self) -> &'static str {
        // Only the build context has its owners reset.
        if self.reset_owner {
            "the build context"
        } else {
            "the source's root"
        }
    }

    /// The owner what is copied from `entry` gets without `--chown`.
    pub(super) fn owner(&self, entry: &Entry) -> (u32, u32) {
        if self.reset_owner {
            (0, 0)
        } else {
            (entry.uid, entry.gid)
        }
    }
}

/// A source matched in a tree.
#[derive(Debug, Clone)]
pub(super) struct Matched {
    /// What it is, a symlink followed.
    pub entry: Entry,
    /// Its name as the source reached it: a file copied into a directory takes it.
    pub name: OsString,
    /// For a wildcard match, its path below the wildcard's directory, which `--exclude`
    /// patterns are matched against.
    pub below_glob: Option<String>,
}

/// Resolves `source` in `tree`: the entry a plain path names (an error when it is missing), or
/// every match of a source with wildcards, in walk order (none is not an error). Without
/// `wildcards` the source is a plain path whatever characters it has.
pub(super) fn resolve_source(
    tree: &Tree,
    source: &str,
    wildcards: bool,
) -> Result<Vec<Matched>, String> {
    let cleaned = clean_path(source);
    let relative = cleaned.trim_start_matches('/');
    let parts: Vec<&str> = relative.split('/').collect();
    let first_glob = parts.iter().position(|c| contains_wildcards(c));
    let Some(first_glob) = first_glob.filter(|_| wildcards) else {
        let entry = tree
            .files
            .resolve(source, FinalSymlink::Follow)
            .map_err(|e| source_error(tree, source, &cleaned, e))?;
        let name = Path::new(&cleaned)
            .file_name()
            .map_or_else(|| entry_name(&entry), OsStr::to_os_string);
        return Ok(vec![Matched {
            entry,
            name,
            below_glob: None,
        }]);
    };
    let prefix = parts[..first_glob].join("/");
    let rest = parts[first_glob..].join("/");
    let pattern = PathPattern::new(&rest, Syntax::Go)
        .map_err(|e| format!("invalid source pattern {source:?}: {e}"))?;
    // As BuildKit: a wildcard may match nothing, but the directory it searches must exist.
    let base = match tree.files.resolve(
        if prefix.is_empty() { "." } else { &prefix },
        FinalSymlink::Follow,
    ) {
        Ok(base) if base.is_dir() => base,
        Ok(_) => return Ok(Vec::new()),
        Err(ContextError::NotFound { .. }) => {
            let why = dangling_symlink(tree, &prefix)
                .map(|why| format!(": {why}"))
                .unwrap_or_default();
            return Err(format!(
                "failed to compute cache key: {source:?}: the wildcard's directory {prefix:?} \
                 not found{why}"
            ));
        }
        Err(e) => return Err(cache_key_error(source, e)),
    };
    let mut out = Vec::new();
    let found = glob_below(tree.files.root(), tree.files.ignore(), &base, &pattern)
        .map_err(|e| cache_key_error(source, e))?;
    for (entry, sub) in found {
        let name = entry_name(&entry);
        let entry = if entry.kind == FileKind::Symlink {
            tree.files
                .resolve(&entry.path.to_string_lossy(), FinalSymlink::Follow)
                .map_err(|e| cache_key_error(source, e))?
        } else {
            entry
        };
        out.push(Matched {
            entry,
            name,
            below_glob: Some(sub),
        });
    }
    Ok(out)
}

fn entry_name(entry: &Entry) -> OsString {
    entry
        .path
        .file_name()
        .map_or_else(|| OsString::from("."), OsStr::to_os_string)
}

/// The error of a source that cannot be resolved (`cleaned` is its clean path). A source that
/// is missing because a symlink on its way leads to nothing in `tree` says so: symlinks are
/// followed inside the tree, never out of it.
fn source_error(tree: &Tree, source: &str, cleaned: &str, e: ContextError) -> String {
    match (&e, dangling_symlink(tree, cleaned)) {
        (ContextError::NotFound { .. }, Some(why)) => {
            format!("failed to compute cache key: {source:?} not found: {why}")
        }
        _ => cache_key_error(source, e),
    }
}

/// Why `cleaned` is missing from `tree` when a symlink on its way leads to nothing there.
fn dangling_symlink(tree: &Tree, cleaned: &str) -> Option<String> {
    let parts: Vec<&str> = cleaned
        .trim_start_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    for n in 1..=parts.len() {
        let prefix = parts[..n].join("/");
        let entry = tree.files.resolve(&prefix, FinalSymlink::Keep).ok()?;
        let Some(target) = entry.link_target.as_ref() else {
            continue;
        };
        if let Err(ContextError::NotFound { .. }) =
            tree.files.resolve(&prefix, FinalSymlink::Follow)
        {
            return Some(format!(
                "{prefix} is a symlink to {target:?}, which leads to nothing in {} (symlinks \
                 are never followed out of it)",
                tree.what()
            ));
        }
    }
    None
}

fn cache_key_error(source: &str, e: ContextError) -> String {
    match e {
        ContextError::NotFound { .. } => {
            format!("failed to compute cache key: {source:?} not found")
        }
        other => format!("failed to compute cache key: {other}"),
    }
}

/// A `--parents` source: the directory its paths are kept below (the context root, or the
/// part before a `/./` pivot) and the pattern for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ParentsSource {
    /// The pivot directory, relative to the tree's root (`.` for the root).
    pub base: String,
    /// The pattern below it, cleaned and relative.
    pub pattern: String,
}

/// Splits a `--parents` source at its optional `/./` pivot, as BuildKit's Dockerfile frontend
/// does.
pub(super) fn parents_source(source: &str) -> ParentsSource {
    let (base, pattern) = match source.split_once("/./") {
        Some((base, pattern)) => (base, pattern),
        None => ("/", source),
    };
    let base = clean_path(&format!("/{base}"));
    let base = base.trim_start_matches('/');
    let pattern = clean_path(&format!("/{pattern}"));
    ParentsSource {
        base: if base.is_empty() {
            ".".into()
        } else {
            base.into()
        },
        pattern: pattern.trim_start_matches('/').to_owned(),
    }
}

/// `--chmod`: an octal mode, or chmod(1)'s symbolic clauses applied to each file's own mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mode {
    /// The mode itself (permission bits with setuid, setgid and sticky).
    Octal(u32),
    /// `u+x,go=rX`: clauses applied in order.
    Symbolic(Vec<Clause>),
}

/// One clause of a symbolic mode: who, then operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Clause {
    /// The bits the clause may touch (`u` is `0o4700`, `g` `0o2070`, `o` `0o1007`, none or `a`
    /// all of them).
    who: u32,
    ops: Vec<(char, Perms)>,
}

/// What an operation of a clause adds, removes or sets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Perms {
    /// `rwxXst` letters.
    Letters(String),
    /// `u`, `g` or `o`: the bits that class has now.
    CopyOf(char),
}

impl Mode {
    /// The mode of `--chmod=value`.
    pub(super) fn parse(chmod: &Chmod) -> Result<Mode, String> {
        let text = match chmod {
            Chmod::Octal(mode) => return Ok(Mode::Octal(mode & 0o7777)),
            Chmod::Symbolic(text) => text,
        };
        let bad = || format!("--chmod={text}: invalid mode");
        let mut clauses = Vec::new();
        for clause in text.split(',') {
            let ops_at = clause.find(['+', '-', '=']).ok_or_else(bad)?;
            let mut who = 0;
            for c in clause[..ops_at].chars() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => return Err(bad()),
                };
            }
            if who == 0 {
                who = 0o7777;
            }
            let mut ops = Vec::new();
            let mut rest = &clause[ops_at..];
            while let Some(op) = rest.chars().next() {
                if !matches!(op, '+' | '-' | '=') {
                    return Err(bad());
                }
                rest = &rest[1..];
                let end = rest.find(['+', '-', '=']).unwrap_or(rest.len());
                let perms = &rest[..end];
                rest = &rest[end..];
                let perms = match perms {
                    "u" | "g" | "o" => Perms::CopyOf(perms.chars().next().unwrap_or('u')),
                    p if p.chars().all(|c| "rwxXst".contains(c)) => Perms::Letters(p.to_owned()),
                    _ => return Err(bad()),
                };
                ops.push((op, perms));
            }
            clauses.push(Clause { who, ops });
        }
        Ok(Mode::Symbolic(clauses))
    }

    /// The mode a file whose own mode is `mode` gets (`is_dir` for `X`).
    pub(super) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Mode::Octal(m) => return *m,
            Mode::Symbolic(clauses) => clauses,
        };
        let mut mode = mode & 0o7777;
        for clause in clauses {
            for (op, perms) in &clause.ops {
                let bits = match perms {
                    Perms::Letters(letters) => {
                        let mut bits = 0;
                        for c in letters.chars() {
                            bits |= match c {
                                'r' => 0o444,
                                'w' => 0o222,
                                'x' => 0o111,
                                'X' if is_dir || mode & 0o111 != 0 => 0o111,
                                's' => 0o6000,
                                't' => 0o1000,
                                _ => 0,
                            };
                        }
                        bits
                    }
                    Perms::CopyOf(class) => {
                        let v = match class {
                            'u' => (mode >> 6) & 7,
                            'g' => (mode >> 3) & 7,
                            _ => mode & 7,
                        };
                        (v << 6) | (v << 3) | v
                    }
                } & clause.who;
                mode = match op {
                    '+' => mode | bits,
                    '-' => mode & !bits,
                    _ => (mode & !clause.who) | bits,
                };
            }
        }
        mode
    }
}

/// One thing a COPY or ADD step puts in place, wildcards expanded.
pub(super) enum Item {
    /// A match in `trees[tree]`: a file is copied to or into the destination, a directory's
    /// contents into it.
    Copy {
        /// Index into the step's trees.
        tree: usize,
        /// What was matched.
        matched: Matched,
    },
    /// A `--parents` source of `trees[tree]`.
    Parents {
        /// Index into the step's trees.
        tree: usize,
        /// The source as written, for errors.
        source: String,
        /// Its pivot and pattern.
        split: ParentsSource,
    },
    /// A local archive `ADD` unpacks into the destination.
    Unpack {
        /// The archive on the host.
        archive: PathBuf,
        /// How it is compressed.
        compression: Compression,
    },
}

/// Where and how one COPY or ADD step writes.
pub(super) struct Job<'r> {
    /// The step's root (a copy snapshot).
    pub root: &'r Path,
    /// The destination: absolute, cleaned, inside the container.
    pub dest: PathBuf,
    /// Whether the destination names a directory (a trailing `/`, `.`, several sources).
    pub dest_is_dir: bool,
    /// `--chown`, resolved.
    pub owner: Option<(u32, u32)>,
    /// `--chmod`.
    pub mode: Option<Mode>,
    /// `--exclude`.
    pub exclude: Option<Dockerignore>,
}

/// Hard links already made by one source: (device, inode) to the first copy.
type Links = HashMap<(u64, u64), PathBuf>;

/// What is finished once every entry of a match has its place: the content (then owner,
/// mode, extended attributes and times) of the regular files, copied on several threads, and
/// then the mtimes of the directories, deepest first, once everything below them is in place.
#[derive(Default)]
struct Deferred {
    dirs: Vec<(PathBuf, Timestamp)>,
    files: Vec<PendingFile>,
}

/// A regular file created empty at `target`, whose content and metadata come from `src`.
struct PendingFile {
    src: PathBuf,
    target: PathBuf,
    owner: (u32, u32),
    mode: u32,
    mtime: Timestamp,
}

/// At most this many threads copy the files of one match; the copies are mostly kernel work
/// (`copy_file_range`) and the disk is shared, so more would only contend.
const MAX_COPY_THREADS: usize = 4;

impl Job<'_> {
    /// Puts every item in place, in order.
    pub(super) fn run(&self, trees: &[Tree], items: &[Item]) -> Result<(), String> {
        for item in items {
            match item {
                Item::Copy { tree, matched } => self.copy_matched(&trees[*tree], matched)?,
                Item::Parents {
                    tree,
                    source,
                    split,
                } => self.copy_parents(&trees[*tree], source, split)?,
                Item::Unpack {
                    archive,
                    compression,
                } => add::unpack(
                    self.root,
                    &self.dest,
                    self.owner.unwrap_or((0, 0)),
                    archive,
                    *compression,
                )?,
            }
        }
        Ok(())
    }

    fn made_owner(&self) -> (u32, u32) {
        self.owner.unwrap_or((0, 0))
    }

    fn io_error(&self, path: &Path, e: io::Error) -> String {
        let shown = path
            .strip_prefix(self.root)
            .map_or_else(|_| path.to_path_buf(), |p| Path::new("/").join(p));
        format!("{}: {e}", shown.display())
    }

    /// `copy.Copy` of one match: the destination's directory made, then the file, or the
    /// directory's contents.
    fn copy_matched(&self, tree: &Tree, matched: &Matched) -> Result<(), String> {
        let ensure = if self.dest_is_dir {
            self.dest.as_path()
        } else {
            self.dest.parent().unwrap_or(Path::new("/"))
        };
        mkdir_all(self.root, ensure, self.made_owner()).map_err(|e| self.io_error(ensure, e))?;
        let dest_host =
            resolve_in_root(self.root, &self.dest).map_err(|e| self.io_error(&self.dest, e))?;
        let dest_md = fs::metadata(&dest_host).ok();
        let mut links = Links::new();
        let mut dirs = Deferred::default();
        if matched.entry.is_dir() {
            match dest_md {
                None => mkdir_all(self.root, &self.dest, self.made_owner())
                    .map_err(|e| self.io_error(&self.dest, e))?,
                Some(md) if md.is_dir() => {}
                Some(_) => {
                    return Err(format!(
                        "cannot copy the directory {} to the non-directory {}",
                        matched.entry.path.display(),
                        self.dest.display()
                    ));
                }
            }
            self.copy_contents(tree, &matched.entry, &dest_host, &mut links, &mut dirs)?;
        } else {
            let target = if dest_md.is_some_and(|m| m.is_dir()) {
                dest_host.join(&matched.name)
            } else {
                dest_host
            };
            self.place(tree, &matched.entry, &target, &mut links, &mut dirs)?;
        }
        self.finish(dirs)
    }

    /// Copies everything below the directory `dir` of `tree` into `target_dir` (which exists).
    fn copy_contents(
        &self,
        tree: &Tree,
        dir: &Entry,
        target_dir: &Path,
        links: &mut Links,
        dirs: &mut Deferred,
    ) -> Result<(), String> {
        walk_contents(tree, dir, self.exclude.as_ref(), |rel, item| {
            self.place(tree, item, &target_dir.join(rel), links, dirs)
        })
    }

    /// `COPY --parents`: every entry below the pivot whose path matches the pattern (with
    /// everything below a matching directory), at the same path below the destination; the
    /// directories on the way are made from the source's as they are needed.
    fn copy_parents(&self, tree: &Tree, source: &str, split: &ParentsSource) -> Result<(), String> {
        mkdir_all(self.root, &self.dest, self.made_owner())
            .map_err(|e| self.io_error(&self.dest, e))?;
        let dest_host =
            resolve_in_root(self.root, &self.dest).map_err(|e| self.io_error(&self.dest, e))?;
        if !fs::metadata(&dest_host).is_ok_and(|m| m.is_dir()) {
            return Err(format!("{} is not a directory", self.dest.display()));
        }
        let mut links = Links::new();
        let mut dirs = Deferred::default();
        walk_parents(
            tree,
            source,
            split,
            self.exclude.as_ref(),
            |selected| match selected {
                ParentsEntry::Parent(parent, dir) => {
                    let target = dest_host.join(parent);
                    match fs::symlink_metadata(&target) {
                        Ok(md) if md.is_dir() => Ok(()),
                        _ => {
                            let Some(dir) = dir else {
                                return Err(format!(
                                    "{}: parent directory not found in the source",
                                    parent.display()
                                ));
                            };
                            self.place(tree, dir, &target, &mut links, &mut dirs)
                        }
                    }
                }
                ParentsEntry::Entry(rel, item) => {
                    self.place(tree, item, &dest_host.join(rel), &mut links, &mut dirs)
                }
            },
        )?;
        self.finish(dirs)
    }

    /// Writes one entry of `tree` at `target` (a host path whose parent exists), as fsutil's
    /// `copy` does for the entries below a source: a directory is made or kept, anything else
    /// replaces what is there (but never a directory); then owner, mode, extended attributes
    /// and times.
    fn place(
        &self,
        tree: &Tree,
        entry: &Entry,
        target: &Path,
        links: &mut Links,
        dirs: &mut Deferred,
    ) -> Result<(), String> {
        let src = tree.host_path(entry);
        let err = |e: io::Error| self.io_error(target, e);
        let existing = fs::symlink_metadata(target).ok();
        match entry.kind {
            FileKind::Dir => match existing {
                Some(md) if md.is_dir() => {}
                Some(_) => {
                    return Err(format!(
                        "cannot copy the directory {} to the non-directory {}",
                        entry.path.display(),
                        self.shown(target).display()
                    ));
                }
                None => fs::create_dir(target).map_err(err)?,
            },
            _ => match existing {
                Some(md) if md.is_dir() => {
                    return Err(format!(
                        "cannot replace the directory {} with a file",
                        self.shown(target).display()
                    ));
                }
                Some(_) => fs::remove_file(target).map_err(err)?,
                None => {}
            },
        }
        match entry.kind {
            FileKind::Dir => {}
            FileKind::File => {
                let key = (entry.dev, entry.ino);
                match links.get(&key) {
                    Some(first) if entry.nlink > 1 => {
                        fs::hard_link(first, target).map_err(err)?;
                    }
                    _ => {
                        // The content is copied in `finish`, with the other files', and the
                        // metadata after it (a write would clear setuid bits and file
                        // capabilities set before it). The file exists from now on, so that
                        // later hardlinks to it can be made.
                        fs::File::create(target).map_err(err)?;
                        if entry.nlink > 1 {
                            links.insert(key, target.to_path_buf());
                        }
                        dirs.files.push(PendingFile {
                            src,
                            target: target.to_path_buf(),
                            owner: self.owner.unwrap_or_else(|| tree.owner(entry)),
                            mode: self.file_mode(entry),
                            mtime: entry.mtime,
                        });
                        return Ok(());
                    }
                }
            }
            FileKind::Symlink => {
                let link = entry.link_target.clone().unwrap_or_default();
                symlink(link, target).map_err(err)?;
            }
            FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo | FileKind::Socket => {
                mknod(target, entry.kind, entry.mode, entry.rdev).map_err(err)?;
            }
        }
        let (uid, gid) = self.owner.unwrap_or_else(|| tree.owner(entry));
        lchown(target, Some(uid), Some(gid)).map_err(err)?;
        if entry.kind != FileKind::Symlink {
            let mode = self.file_mode(entry);
            fs::set_permissions(target, fs::Permissions::from_mode(mode)).map_err(err)?;
            copy_xattrs(&src, target);
        }
        if entry.is_dir() {
            dirs.dirs.push((target.to_path_buf(), entry.mtime));
        } else {
            set_times(target, entry.mtime).map_err(err)?;
        }
        Ok(())
    }

    /// The mode `entry` gets: its own, or `--chmod`'s.
    fn file_mode(&self, entry: &Entry) -> u32 {
        self.mode
            .as_ref()
            .map_or(entry.mode, |m| m.apply(entry.mode, entry.is_dir()))
    }

    /// Copies a pending file's content, then sets its owner, mode, extended attributes and
    /// times, in the order `place` sets them for other entries.
    fn complete(&self, file: &PendingFile) -> Result<(), String> {
        let err = |e: io::Error| self.io_error(&file.target, e);
        let mut src = fs::File::open(&file.src).map_err(err)?;
        // The file `place` created, empty: its content goes in by `copy_file_range` (what
        // `io::copy` between two files does on Linux), and its writeback starts at once, so
        // that the disk works while the copy goes on and the sync when the step's snapshot is
        // committed finds little left to write.
        let mut dst = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&file.target)
            .map_err(err)?;
        io::copy(&mut src, &mut dst).map_err(err)?;
        berth_layerstore::content::fs::start_writeback(&dst, 0, 0);
        drop(dst);
        lchown(&file.target, Some(file.owner.0), Some(file.owner.1)).map_err(err)?;
        fs::set_permissions(&file.target, fs::Permissions::from_mode(file.mode)).map_err(err)?;
        copy_xattrs(&file.src, &file.target);
        set_times(&file.target, file.mtime).map_err(err)
    }

    /// Completes the pending files on up to [`MAX_COPY_THREADS`] threads; the first error
    /// stops the others from taking more.
    fn complete_all(&self, files: &[PendingFile]) -> Result<(), String> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_COPY_THREADS);
        berth_layerstore::parallel::try_for_each(files, threads, |f| self.complete(f))
    }

    fn shown(&self, host: &Path) -> PathBuf {
        host.strip_prefix(self.root)
            .map_or_else(|_| host.to_path_buf(), |p| Path::new("/").join(p))
    }

    /// Copies the files' content, then sets the mtimes of the directories copied, deepest
    /// first.
    fn finish(&self, deferred: Deferred) -> Result<(), String> {
        self.complete_all(&deferred.files)?;
        for (dir, mtime) in deferred.dirs.into_iter().rev() {
            set_times(&dir, mtime).map_err(|e| self.io_error(&dir, e))?;
        }
        Ok(())
    }
}

/// Whether `--exclude` (`exclude`) leaves out `path` (relative to the source). A directory that
/// an exception could bring something back from is kept, and its contents decided one by one.
fn excluded(exclude: Option<&Dockerignore>, path: &str, is_dir: bool) -> bool {
    let Some(exclude) = exclude else {
        return false;
    };
    exclude.is_excluded(path) && !(is_dir && exclude.may_reinclude_below(path))
}

/// Visits what a copy of the directory `dir`'s contents writes: every entry below it in `tree`,
/// in walk order, each with its path below `dir`, less what `--exclude` leaves out. Both the
/// copy and the checksum of a step's sources (`super::checksum`) select this way.
pub(super) fn walk_contents(
    tree: &Tree,
    dir: &Entry,
    exclude: Option<&Dockerignore>,
    mut visit: impl FnMut(&Path, &Entry) -> Result<(), String>,
) -> Result<(), String> {
    let walk = tree
        .files
        .walk_dir(&dir.path.to_string_lossy())
        .map_err(|e| e.to_string())?;
    let mut skipped: Option<PathBuf> = None;
    for item in walk {
        let item = item.map_err(|e| e.to_string())?;
        let rel = if dir.path == Path::new(".") {
            item.path.clone()
        } else {
            item.path
                .strip_prefix(&dir.path)
                .map_err(|e| e.to_string())?
                .to_path_buf()
        };
        if skipped.as_ref().is_some_and(|s| rel.starts_with(s)) {
            continue;
        }
        if excluded(exclude, &rel.to_string_lossy(), item.is_dir()) {
            if item.is_dir() {
                skipped = Some(rel);
            }
            continue;
        }
        visit(&rel, &item)?;
    }
    Ok(())
}

/// What a `--parents` source puts in place, by its path below the pivot.
pub(super) enum ParentsEntry<'a> {
    /// A directory between the pivot and a match, met just before the match, which needs it in
    /// place; `None` when the walk has not seen it.
    Parent(&'a Path, Option<&'a Entry>),
    /// A match, or an entry below a matching directory.
    Entry(&'a Path, &'a Entry),
}

/// Visits what the `--parents` source `source` (split at its pivot) of `tree` puts in place, in
/// walk order, less what `--exclude` leaves out: every entry below the pivot whose path matches
/// the pattern, with everything below a matching directory, each match preceded by the
/// directories between the pivot and it. A pivot that is a file is the file itself, by its
/// name. A source without wildcards that matches nothing is an error.
pub(super) fn walk_parents(
    tree: &Tree,
    source: &str,
    split: &ParentsSource,
    exclude: Option<&Dockerignore>,
    mut visit: impl FnMut(ParentsEntry<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let pattern = PathPattern::new(&split.pattern, Syntax::Dockerignore)
        .map_err(|e| format!("invalid source pattern {source:?}: {e}"))?;
    let base = tree
        .files
        .resolve(&split.base, FinalSymlink::Follow)
        .map_err(|e| cache_key_error(source, e))?;
    let mut found = false;
    if !base.is_dir() {
        // A pivot that is a file: the file itself, by its name.
        if pattern.matches(".") || split.pattern.is_empty() {
            let name = entry_name(&base);
            visit(ParentsEntry::Entry(Path::new(&name), &base))?;
            found = true;
        }
    } else {
        let walk = tree
            .files
            .walk_dir(&base.path.to_string_lossy())
            .map_err(|e| e.to_string())?;
        // Directories seen so far, by path below the pivot: the parents of a match.
        let mut seen: HashMap<PathBuf, Entry> = HashMap::new();
        let mut included: Option<PathBuf> = None;
        let mut skipped: Option<PathBuf> = None;
        for item in walk {
            let item = item.map_err(|e| e.to_string())?;
            let rel = if base.path == Path::new(".") {
                item.path.clone()
            } else {
                item.path
                    .strip_prefix(&base.path)
                    .map_err(|e| e.to_string())?
                    .to_path_buf()
            };
            if skipped.as_ref().is_some_and(|s| rel.starts_with(s)) {
                continue;
            }
            let rel_str = rel.to_string_lossy().into_owned();
            if excluded(exclude, &rel_str, item.is_dir()) {
                if item.is_dir() {
                    skipped = Some(rel);
                }
                continue;
            }
            let inside = included.as_ref().is_some_and(|i| rel.starts_with(i));
            if !inside {
                included = None;
                if !pattern.matches(&rel_str) {
                    if item.is_dir() {
                        if pattern.may_match_with_prefix(&format!("{rel_str}/")) {
                            seen.insert(rel.clone(), item);
                        } else {
                            skipped = Some(rel);
                        }
                    }
                    continue;
                }
                found = true;
                // The directories between the pivot and the match.
                let mut parents: Vec<&Path> = rel.ancestors().skip(1).collect();
                parents.reverse();
                for parent in parents.into_iter().filter(|p| !p.as_os_str().is_empty()) {
                    visit(ParentsEntry::Parent(parent, seen.get(parent)))?;
                }
                if item.is_dir() {
                    included = Some(rel.clone());
                }
            }
            visit(ParentsEntry::Entry(&rel, &item))?;
        }
    }
    if !found && !contains_wildcards(&split.pattern) {
        return Err(format!("failed to compute cache key: {source:?} not found"));
    }
    Ok(())
}

/// Sets access and modification time of `path` (not following a symlink).
pub(super) fn set_times(path: &Path, t: Timestamp) -> io::Result<()> {
    let ft = FileTime::from_unix_time(t.secs, t.nanos);
    filetime::set_symlink_file_times(path, ft, ft)
}

/// Copies the extended attributes of `src` to `dst`, as fsutil does: what the file system
/// refuses is skipped, and overlayfs' own attributes are never copied.
fn copy_xattrs(src: &Path, dst: &Path) {
    let Ok(names) = xattr::list(src) else {
        return;
    };
    for name in names {
        if SKIPPED_XATTR_PREFIXES
            .iter()
            .any(|p| name.as_bytes().starts_with(p))
        {
            continue;
        }
        if let Ok(Some(value)) = xattr::get(src, &name) {
            let _ = xattr::set(dst, &name, &value);
        }
    }
}

/// Makes a device, FIFO or socket node at `path`.
pub(super) fn mknod(path: &Path, kind: FileKind, mode: u32, rdev: u64) -> io::Result<()> {
    let kind_bits = match kind {
        FileKind::CharDevice => libc::S_IFCHR,
        FileKind::BlockDevice => libc::S_IFBLK,
        FileKind::Fifo => libc::S_IFIFO,
        FileKind::Socket => libc::S_IFSOCK,
        _ => return Err(io::Error::other("not a special file")),
    };
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call; mknod reads
    // nothing else from our memory.
    let rc = unsafe { libc::mknod(c_path.as_ptr(), kind_bits | (mode & 0o7777), rdev) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The destination of a COPY or ADD: absolute and cleaned, and whether it names a directory
/// (a trailing `/` or `/.`, `.`, or more than one thing to copy).
fn destination(workdir: Option<&str>, dest: &str, items: usize) -> (PathBuf, bool) {
    let absolute = super::absolute(workdir, dest);
    let is_dir =
        dest.ends_with('/') || dest.ends_with("/.") || dest == "." || dest.is_empty() || items > 1;
    (PathBuf::from(absolute), is_dir)
}

/// What a step copies, gathered before anything is written.
#[derive(Default)]
pub(super) struct Gathered {
    /// The trees the items are in.
    pub(super) trees: Vec<Tree>,
    /// What is put in place, in order.
    pub(super) items: Vec<Item>,
    /// Directories the step filled (downloads, here-documents), removed when it is done.
    scratch: Vec<tempfile::TempDir>,
}

impl Gathered {
    /// Adds `tree`; returns its index.
    pub(super) fn tree(&mut self, tree: Tree) -> usize {
        self.trees.push(tree);
        self.trees.len() - 1
    }

    /// The matches of `source` in `trees[tree]`, wildcard matches filtered by `--exclude`.
    pub(super) fn add_source(
        &mut self,
        tree: usize,
        source: &str,
        parents: bool,
        exclude: Option<&Dockerignore>,
    ) -> Result<(), String> {
        if parents {
            self.items.push(Item::Parents {
                tree,
                source: source.to_owned(),
                split: parents_source(source),
            });
            return Ok(());
        }
        for matched in resolve_source(&self.trees[tree], source, true)? {
            let left_out = matched
                .below_glob
                .as_deref()
                .zip(exclude)
                .is_some_and(|(path, ex)| ex.is_excluded(path));
            if !left_out {
                self.items.push(Item::Copy { tree, matched });
            }
        }
        Ok(())
    }

    /// A here-document, as the file BuildKit makes for it: named after the document, mode
    /// `0644` (`0664` less the umask), owned by root, its mtime the time it is made.
    fn add_heredoc(&mut self, scratch_root: &Path, doc: &InlineFile) -> Result<(), String> {
        let dir = scratch_dir(scratch_root)?;
        let name = Path::new(&doc.name)
            .file_name()
            .map_or_else(|| OsString::from("__unnamed__"), OsStr::to_os_string);
        let path = dir.path().join(&name);
        fs::write(&path, &doc.data).map_err(|e| format!("{}: {e}", doc.name))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .map_err(|e| format!("{}: {e}", doc.name))?;
        let tree = self.tree(Tree::dir(dir.path())?);
        self.scratch.push(dir);
        for matched in resolve_source(&self.trees[tree], &name.to_string_lossy(), false)? {
            self.items.push(Item::Copy { tree, matched });
        }
        Ok(())
    }
}

/// A fresh directory beside the step's root, on its file system, removed when dropped.
pub(super) fn scratch_dir(scratch_root: &Path) -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("scratch-")
        .tempdir_in(scratch_root)
        .map_err(|e| format!("{}: {e}", scratch_root.display()))
}

/// The `--exclude` patterns, as one ignore file; `None` without any.
pub(super) fn exclude_patterns(exclude: &[String]) -> Result<Option<Dockerignore>, String> {
    if exclude.is_empty() {
        return Ok(None);
    }
    Dockerignore::from_patterns(exclude)
        .map(Some)
        .map_err(|e| format!("--exclude: {e}"))
}

impl super::Solver<'_> {
    /// `COPY`: from the context, a stage or an image, and here-documents.
    pub(super) fn copy(
        &self,
        lowered: &Lowered,
        state: &mut State,
        copy: &Copy,
    ) -> Result<(), String> {
        let from = match &copy.from {
            None | Some(FromRef::Context) => None,
            Some(FromRef::Scratch) => Some(Vec::new()),
            Some(FromRef::Stage(i)) => Some(self.stage_source(*i)?.config.rootfs.diff_ids),
            Some(FromRef::Image(name)) => {
                Some(self.image_source(lowered, name)?.config.rootfs.diff_ids)
            }
        };
        let step_root = StepRoot::prepare(&self.snapshots, "copy", state.config.diff_ids())?;
        let root = step_root.path().to_path_buf();
        let scratch_root = step_root.scratch().to_path_buf();
        // The source stage or image is read through a root of its own, whose writes (there
        // are none) are never committed.
        let source = match &from {
            Some(diff_ids) => Some(StepRoot::prepare(&self.snapshots, "copy-from", diff_ids)?),
            None => None,
        };
        let exclude = exclude_patterns(&copy.exclude)?;
        let mut gathered = Gathered::default();
        let tree = match &source {
            Some(source) => Tree::dir(source.path())?,
            None => Tree::context(self.context),
        };
        let tree = gathered.tree(tree);
        for src in &copy.sources {
            // A stage's root is a chroot: `..` stops at its root, as in BuildKit.
            let src = if from.is_some() {
                format!("/{}", src.trim_start_matches('/'))
            } else {
                src.clone()
            };
            gathered.add_source(tree, &src, copy.parents, exclude.as_ref())?;
        }
        for doc in &copy.heredocs {
            gathered.add_heredoc(&scratch_root, doc)?;
        }
        let workdir = working_dir(state);
        let (dest, dest_is_dir) = destination(workdir.as_deref(), &copy.dest, gathered.items.len());
        let job = Job {
            root: &root,
            dest,
            dest_is_dir: dest_is_dir || copy.parents,
            owner: copy
                .chown
                .as_deref()
                .map(|c| super::workdir::owner(&root, c)),
            mode: copy.chmod.as_ref().map(Mode::parse).transpose()?,
            exclude,
        };
        job.run(&gathered.trees, &gathered.items)?;
        drop(gathered);
        if let Some(source) = source {
            source.abort()?;
        }
        self.commit(step_root.finish()?, state)
    }

    /// `ADD`: local files (archives unpacked), http(s) URLs (downloaded, checked against
    /// `--checksum`) and here-documents.
    pub(super) fn add(&self, state: &mut State, add: &Add) -> Result<(), String> {
        let checksum = add
            .checksum
            .as_deref()
            .map(add::Checksum::parse)
            .transpose()?;
        if checksum.is_some() && add.sources.iter().any(|s| !add::is_url(s)) {
            return Err("checksum can't be specified for non-HTTP(S) sources".into());
        }
        for source in &add.sources {
            if add::is_git(source) {
                return Err(format!(
                    "{source}: ADD of git repositories is not supported yet"
                ));
            }
        }
        let step_root = StepRoot::prepare(&self.snapshots, "add", state.config.diff_ids())?;
        let root = step_root.path().to_path_buf();
        let scratch_root = step_root.scratch().to_path_buf();
        let exclude = exclude_patterns(&add.exclude)?;
        let mut gathered = Gathered::default();
        let context = gathered.tree(Tree::context(self.context));
        for source in &add.sources {
            if add::is_url(source) {
                let dir = scratch_dir(&scratch_root)?;
                let name = add::download(source, dir.path(), checksum.as_ref())?;
                let tree = gathered.tree(Tree::dir(dir.path())?);
                gathered.scratch.push(dir);
                for matched in resolve_source(&gathered.trees[tree], &name, false)? {
                    // Remote archives are unpacked only when asked to.
                    let unpack = add.unpack == Some(true);
                    gathered.items.push(archive_or_copy(
                        &gathered.trees[tree],
                        tree,
                        matched,
                        unpack,
                    )?);
                }
                continue;
            }
            let before = gathered.items.len();
            gathered.add_source(context, source, false, exclude.as_ref())?;
            if add.unpack != Some(false) {
                let added: Vec<Item> = gathered.items.drain(before..).collect();
                for item in added {
                    gathered.items.push(match item {
                        Item::Copy { tree, matched } => {
                            archive_or_copy(&gathered.trees[tree], tree, matched, true)?
                        }
                        other => other,
                    });
                }
            }
        }
        for doc in &add.heredocs {
            gathered.add_heredoc(&scratch_root, doc)?;
        }
        let workdir = working_dir(state);
        let (dest, dest_is_dir) = destination(workdir.as_deref(), &add.dest, gathered.items.len());
        let job = Job {
            root: &root,
            dest,
            dest_is_dir,
            owner: add
                .chown
                .as_deref()
                .map(|c| super::workdir::owner(&root, c)),
            mode: add.chmod.as_ref().map(Mode::parse).transpose()?,
            exclude,
        };
        job.run(&gathered.trees, &gathered.items)?;
        drop(gathered);
        self.commit(step_root.finish()?, state)
    }
}

/// An archive `ADD` unpacks when `unpack` allows it and the match is one, else a copy.
fn archive_or_copy(
    tree: &Tree,
    index: usize,
    matched: Matched,
    unpack: bool,
) -> Result<Item, String> {
    if unpack && matched.entry.kind == FileKind::File {
        let path = tree.host_path(&matched.entry);
        let compression = add::archive_compression(&path)
            .map_err(|e| format!("{}: {e}", matched.entry.path.display()))?;
        if let Some(compression) = compression {
            return Ok(Item::Unpack {
                archive: path,
                compression,
            });
        }
    }
    Ok(Item::Copy {
        tree: index,
        matched,
    })
}

fn working_dir(state: &State) -> Option<String> {
    state
        .config
        .config
        .as_ref()
        .and_then(|c| c.working_dir.clone())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn running_as_root() -> bool {
        fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }

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
    fn parents_sources_split_at_the_pivot() {
        let split = |s| parents_source(s);
        assert_eq!(
            split("src/*/one.txt"),
            ParentsSource {
                base: ".".into(),
                pattern: "src/*/one.txt".into()
            }
        );
        assert_eq!(
            split("./src/./a/b.txt"),
            ParentsSource {
                base: "src".into(),
                pattern: "a/b.txt".into()
            }
        );
        assert_eq!(
            split("/x/y/./**/*.go"),
            ParentsSource {
                base: "x/y".into(),
                pattern: "**/*.go".into()
            }
        );
        assert_eq!(split("../a").pattern, "a");
    }

    #[test]
    fn symbolic_modes_apply_like_chmod() {
        let m = |s: &str| Mode::parse(&Chmod::Symbolic(s.into())).unwrap();
        assert_eq!(m("u=rwx,go=rx").apply(0o600, false), 0o755);
        assert_eq!(m("go-w").apply(0o666, false), 0o644);
        assert_eq!(m("+x").apply(0o644, false), 0o755);
        assert_eq!(m("a+X").apply(0o644, false), 0o644);
        assert_eq!(m("a+X").apply(0o644, true), 0o755);
        assert_eq!(m("a+X").apply(0o744, false), 0o755);
        assert_eq!(m("u+s").apply(0o755, false), 0o4755);
        assert_eq!(m("g=u").apply(0o750, false), 0o770);
        assert_eq!(m("o=").apply(0o777, false), 0o770);
        assert_eq!(m("+t").apply(0o777, true), 0o1777);
        let octal = Mode::parse(&Chmod::Octal(0o4755)).unwrap();
        assert_eq!(octal.apply(0o600, false), 0o4755);
        assert!(Mode::parse(&Chmod::Symbolic("u!x".into())).is_err());
        assert!(Mode::parse(&Chmod::Symbolic("q+x".into())).is_err());
    }

    #[test]
    fn destinations_that_name_directories() {
        assert_eq!(destination(None, "/a/", 1), (PathBuf::from("/a"), true));
        assert_eq!(destination(Some("/w"), ".", 1), (PathBuf::from("/w"), true));
        assert_eq!(
            destination(Some("/w"), "f", 1),
            (PathBuf::from("/w/f"), false)
        );
        assert_eq!(destination(None, "/m", 2), (PathBuf::from("/m"), true));
    }

    /// A context with `files` (path, content) and the hard links `links` (new, existing).
    fn context_with(files: &[(&str, &str)], links: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            if path.ends_with('/') {
                fs::create_dir_all(&p).unwrap();
                continue;
            }
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, content).unwrap();
        }
        for (new, existing) in links {
            fs::hard_link(dir.path().join(existing), dir.path().join(new)).unwrap();
        }
        dir
    }

    fn job<'r>(root: &'r Path, dest: &str, items: usize) -> Job<'r> {
        let (dest, dest_is_dir) = destination(None, dest, items);
        Job {
            root,
            dest,
            dest_is_dir,
            owner: None,
            mode: None,
            exclude: None,
        }
    }

    fn copy_sources(job: &Job<'_>, context: &Path, sources: &[&str], parents: bool) {
        let mut gathered = Gathered::default();
        let tree = gathered.tree(Tree::context(
            &Context::new(context, Dockerignore::empty()).unwrap(),
        ));
        for s in sources {
            gathered
                .add_source(tree, s, parents, job.exclude.as_ref())
                .unwrap();
        }
        job.run(&gathered.trees, &gathered.items).unwrap();
    }

    fn listing(root: &Path) -> Vec<String> {
        let mut out: Vec<String> = walkdir::WalkDir::new(root)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                if e.file_type().is_dir() {
                    format!("{rel}/")
                } else {
                    rel
                }
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn hard_links_are_kept_within_one_source_only() {
        let ctx = context_with(
            &[("h1", "linked\n"), ("sub/", "")],
            &[("h2", "h1"), ("sub/h3", "h1")],
        );
        let root = tempfile::tempdir().unwrap();
        copy_sources(&job(root.path(), "/all/", 1), ctx.path(), &["."], false);
        let ino = |p: &str| fs::metadata(root.path().join(p)).unwrap().ino();
        assert_eq!(ino("all/h1"), ino("all/h2"));
        assert_eq!(ino("all/h1"), ino("all/sub/h3"));
        copy_sources(
            &job(root.path(), "/two/", 2),
            ctx.path(),
            &["h1", "h2"],
            false,
        );
        assert_ne!(ino("two/h1"), ino("two/h2"));
    }

    #[test]
    fn parents_keep_the_source_path() {
        let ctx = context_with(
            &[
                ("src/a/one.txt", "1"),
                ("src/b/one.txt", "1b"),
                ("src/b/two.txt", "2"),
                ("src/b/deep/three.txt", "3"),
                ("src/c/other.txt", "x"),
            ],
            &[],
        );
        let root = tempfile::tempdir().unwrap();
        copy_sources(
            &job(root.path(), "/out/", 2),
            ctx.path(),
            &["src/*/one.txt", "src/b/two.txt"],
            true,
        );
        copy_sources(
            &job(root.path(), "/keep/", 1),
            ctx.path(),
            &["src/b/deep"],
            true,
        );
        copy_sources(
            &job(root.path(), "/pivot/", 1),
            ctx.path(),
            &["src/./**/three.txt"],
            true,
        );
        assert_eq!(
            listing(root.path()),
            [
                "keep/",
                "keep/src/",
                "keep/src/b/",
                "keep/src/b/deep/",
                "keep/src/b/deep/three.txt",
                "out/",
                "out/src/",
                "out/src/a/",
                "out/src/a/one.txt",
                "out/src/b/",
                "out/src/b/one.txt",
                "out/src/b/two.txt",
                "pivot/",
                "pivot/b/",
                "pivot/b/deep/",
                "pivot/b/deep/three.txt",
            ]
        );
    }

    #[test]
    fn excludes_match_below_each_source() {
        let ctx = context_with(
            &[
                ("app/main.txt", "m"),
                ("app/notes.md", "n"),
                ("app/debug.log", "d"),
                ("app/sub/keep.txt", "k"),
                ("app/sub/deeper.log", "l"),
                ("app/sub/readme.md", "r"),
            ],
            &[],
        );
        let root = tempfile::tempdir().unwrap();
        let mut j = job(root.path(), "/app/", 1);
        j.exclude = exclude_patterns(&["**/*.log".into(), "*.md".into()]).unwrap();
        copy_sources(&j, ctx.path(), &["app/"], false);
        let mut j = job(root.path(), "/added/", 1);
        j.exclude = exclude_patterns(&["sub".into()]).unwrap();
        copy_sources(&j, ctx.path(), &["app"], false);
        let mut j = job(root.path(), "/globbed/", 1);
        j.exclude = exclude_patterns(&["*.md".into()]).unwrap();
        copy_sources(&j, ctx.path(), &["app/*"], false);
        assert_eq!(
            listing(root.path()),
            [
                "added/",
                "added/debug.log",
                "added/main.txt",
                "added/notes.md",
                "app/",
                "app/main.txt",
                "app/sub/",
                "app/sub/keep.txt",
                "app/sub/readme.md",
                "globbed/",
                "globbed/debug.log",
                "globbed/deeper.log",
                "globbed/keep.txt",
                "globbed/main.txt",
            ]
        );
    }

    #[test]
    fn wildcard_matches_keep_their_own_names() {
        let ctx = context_with(&[("target.txt", "t")], &[]);
        symlink("target.txt", ctx.path().join("link.txt")).unwrap();
        let root = tempfile::tempdir().unwrap();
        copy_sources(&job(root.path(), "/g/", 1), ctx.path(), &["link.*"], false);
        copy_sources(
            &job(root.path(), "/p/", 1),
            ctx.path(),
            &["link.txt"],
            false,
        );
        copy_sources(
            &job(root.path(), "/none/", 1),
            ctx.path(),
            &["*.nothing"],
            false,
        );
        assert_eq!(
            listing(root.path()),
            ["g/", "g/link.txt", "p/", "p/link.txt"]
        );
        assert!(
            fs::symlink_metadata(root.path().join("g/link.txt"))
                .unwrap()
                .is_file()
        );
    }

    #[test]
    fn missing_plain_sources_fail() {
        let ctx = context_with(&[("a", "a")], &[]);
        let tree = Tree::context(&Context::new(ctx.path(), Dockerignore::empty()).unwrap());
        let err = resolve_source(&tree, "missing.txt", true).unwrap_err();
        assert!(err.contains("\"missing.txt\" not found"), "{err}");
    }

    #[test]
    fn created_parents_get_the_chown_owner() {
        if !running_as_root() {
            return;
        }
        let ctx = context_with(&[("dir/h.txt", "h"), ("f1.txt", "f")], &[]);
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("existing")).unwrap();
        let mut j = job(root.path(), "/existing/new-parent/deeper/", 1);
        j.owner = Some((1000, 50));
        copy_sources(&j, ctx.path(), &["dir"], false);
        let mut j = job(root.path(), "/o/numeric.txt", 1);
        j.owner = Some((1000, 50));
        j.mode = Some(Mode::Octal(0o640));
        copy_sources(&j, ctx.path(), &["f1.txt"], false);
        let owner = |p: &str| {
            let md = fs::symlink_metadata(root.path().join(p)).unwrap();
            (md.uid(), md.gid(), md.mode() & 0o7777)
        };
        assert_eq!(owner("existing"), (0, 0, 0o755));
        assert_eq!(owner("existing/new-parent"), (1000, 50, 0o755));
        assert_eq!(owner("existing/new-parent/deeper"), (1000, 50, 0o755));
        assert_eq!(owner("existing/new-parent/deeper/h.txt").0, 1000);
        assert_eq!(owner("o"), (1000, 50, 0o755));
        assert_eq!(owner("o/numeric.txt"), (1000, 50, 0o640));
    }
}
