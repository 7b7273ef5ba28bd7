//! The build context: `.dockerignore` (and `<Dockerfile>.dockerignore`) with Docker's matching
//! rules, and a walker over the context directory that applies it and never leaves the context.
//!
//! - [`pattern`]: Go's `filepath.Match` syntax, with `.dockerignore`'s `**`, and Go's
//!   `filepath.Clean`;
//! - [`ignore`]: reading ignore files as `dockerignore.ReadAll` does, BuildKit's lookup
//!   (`<Dockerfile>.dockerignore` beside the Dockerfile wins over the context's
//!   `.dockerignore`), and matching as `patternmatcher` does: last match wins, `!` re-includes,
//!   a pattern that matches a directory matches everything below it;
//! - [`walk`]: the entries of the context, sorted, with the ignore rules applied and symlinks
//!   reported, never followed;
//! - [`Context`]: ties them together, and resolves COPY sources (paths and globs) inside the
//!   context the way BuildKit does, treating the context root as a chroot.
//!
//! # The Dockerfile and the ignore file
//!
//! The classic `docker build` always sends the Dockerfile and `.dockerignore` to the daemon,
//! even when the ignore file excludes them, because the daemon needs them to build; the daemon
//! then removes them from the context if they are excluded, and BuildKit sends the Dockerfile
//! apart from the context. Either way, an excluded Dockerfile or `.dockerignore` can be read
//! by the builder but is not seen by `COPY . .`.
//!
//! This module does the same. The front end reads the Dockerfile and the ignore file directly
//! (see [`Dockerignore::load`]), so excluding them never stops a build, and the context
//! ([`Context::walk`], [`Context::select`], [`Context::resolve`]) applies the ignore rules to
//! them like to any other file, so that COPY sees what it sees with Docker.
//!
//! # Where this differs from Docker
//!
//! - A `\` before a letter in a `.dockerignore` pattern matches that letter, as in Go's
//!   `filepath.Match`; `patternmatcher` passes it to a regular expression, where `\d` is a
//!   digit class and `\q` an error. Likewise `*` and `?` inside `[...]` are plain characters
//!   here, as in Go.
//! - A source path that climbs out of the context lexically (`../x`, `a/../../x`) is refused
//!   with [`ContextError::OutsideContext`], as the classic builder refuses it; BuildKit clamps
//!   it to the root instead. A leading `/` means the context root, as in both, and a symlink
//!   that points outside (`/etc`, `../../x`) is resolved as if the context were the root of the
//!   file system, as in BuildKit.

pub mod ignore;
pub mod pattern;
pub mod walk;

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

pub use ignore::{
    DOCKERIGNORE, Dockerignore, IgnoreError, IgnorePattern, dockerignore_candidates,
    find_dockerignore,
};
pub use pattern::{PathPattern, PatternError, Syntax, clean_path};
pub use walk::{Entry, FileKind, Timestamp, Walk};

use pattern::contains_wildcards;

/// How many symlinks one resolution may follow before it gives up, as BuildKit's resolver.
const MAX_SYMLINKS: usize = 255;

/// Errors of the build context.
#[derive(Debug, Error)]
pub enum ContextError {
    /// The ignore file could not be read or has a malformed pattern.
    #[error(transparent)]
    Ignore(#[from] IgnoreError),
    /// The context root is missing or not a directory.
    #[error("build context {}: {source}", .path.display())]
    Root {
        /// The context directory as given.
        path: PathBuf,
        /// Why it cannot be used.
        source: io::Error,
    },
    /// A requested path climbs out of the context.
    #[error("forbidden path outside the build context: {path}")]
    OutsideContext {
        /// The path as requested.
        path: String,
    },
    /// A requested path does not exist in the context, or is excluded by the ignore file.
    #[error("{path}: not found in the build context")]
    NotFound {
        /// The path as requested.
        path: String,
    },
    /// A path that must be a directory is not one.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The path as requested.
        path: String,
    },
    /// Resolving a path followed too many symlinks (a loop).
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop {
        /// The path as requested.
        path: String,
    },
    /// A COPY source glob is malformed.
    #[error("invalid source pattern `{pattern}`: {reason}")]
    Pattern {
        /// The source as written.
        pattern: String,
        /// What is wrong with it.
        reason: PatternError,
    },
    /// A file system operation failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file it failed on.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

impl ContextError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Whether [`Context::resolve`] follows a symlink in the last component of the path. Symlinks
/// in the other components are always followed, inside the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalSymlink {
    /// Follow it, as COPY does for its sources.
    Follow,
    /// Return the symlink itself.
    Keep,
}

/// A build context: a directory and the ignore rules that apply to it.
#[derive(Debug, Clone)]
pub struct Context {
    root: PathBuf,
    ignore: Dockerignore,
}

impl Context {
    /// A context over the directory `root` with the given ignore rules. The root's own path is
    /// resolved once (it may be reached through symlinks); nothing under it ever is, except
    /// inside the context as [`Context::resolve`] describes.
    pub fn new(root: impl AsRef<Path>, ignore: Dockerignore) -> Result<Self, ContextError> {
        let given = root.as_ref();
        let root_error = |source| ContextError::Root {
            path: given.to_owned(),
            source,
        };
        let root = fs::canonicalize(given).map_err(root_error)?;
        let md = fs::metadata(&root).map_err(root_error)?;
        if !md.is_dir() {
            return Err(root_error(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        Ok(Self { root, ignore })
    }

    /// A context over `root`, with the ignore file that applies to a build with `dockerfile`
    /// (see [`find_dockerignore`]); `None` when the Dockerfile comes from standard input.
    pub fn open(root: impl AsRef<Path>, dockerfile: Option<&Path>) -> Result<Self, ContextError> {
        let ignore = Dockerignore::load(root.as_ref(), dockerfile)?;
        Self::new(root, ignore)
    }

    /// The context directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The ignore rules.
    pub fn ignore(&self) -> &Dockerignore {
        &self.ignore
    }

    /// Where `entry` is on the host.
    pub fn host_path(&self, entry: &Entry) -> PathBuf {
        self.root.join(&entry.path)
    }

    /// Whether `path` (relative to the root) is excluded by the ignore rules.
    pub fn is_ignored(&self, path: &str) -> bool {
        self.ignore.is_excluded(path)
    }

    /// Walks the whole context (the root itself is not yielded).
    pub fn walk(&self) -> Walk<'_> {
        Walk::new(&self.root, &self.ignore, Path::new(""), None)
    }

    /// Walks everything below the directory `path` (resolved as [`Context::resolve`] does,
    /// following a final symlink). Entry paths stay relative to the context root.
    pub fn walk_dir(&self, path: &str) -> Result<Walk<'_>, ContextError> {
        let dir = self.resolve(path, FinalSymlink::Follow)?;
        if !dir.is_dir() {
            return Err(ContextError::NotADirectory { path: path.into() });
        }
        Ok(Walk::new(&self.root, &self.ignore, &dir.path, None))
    }

    /// Resolves `path` inside the context and describes what it names.
    ///
    /// The path is cleaned lexically first; one that climbs out of the context (`../x`) is
    /// refused, and a leading `/` means the context root. Symlinks met on the way are followed
    /// as if the context were the root of the file system (a chroot): an absolute target starts
    /// again from the context root, and `..` never climbs above it. So the result is always
    /// inside the context. The returned entry's path is the resolved one.
    ///
    /// Excluded files do not exist for this purpose, as they are not in the context BuildKit
    /// sends: an excluded path, or a path through an excluded symlink, is
    /// [`ContextError::NotFound`]. An excluded directory is found only if something below it
    /// is re-included.
    pub fn resolve(&self, path: &str, last: FinalSymlink) -> Result<Entry, ContextError> {
        let components = request_components(path)?;
        self.resolve_components(path, components, last)
    }

    /// Resolves a COPY or ADD source to the entries it names, in walk order.
    ///
    /// A source without wildcards names one entry, resolved as [`Context::resolve`] does
    /// (following a final symlink, as COPY does). A source with wildcards (`*`, `?`, `[`) is
    /// split, as BuildKit splits it, into the directories before the first component with a
    /// wildcard, which are resolved, and a Go `filepath.Match` pattern for the rest; every
    /// entry below those directories whose path (relative to them) matches is returned, and
    /// nothing below a matching directory is. A matching symlink is followed. A glob that
    /// matches nothing, or whose directories do not exist, gives an empty list.
    ///
    /// The contents of a returned directory come from [`Context::walk_dir`].
    pub fn select(&self, source: &str) -> Result<Vec<Entry>, ContextError> {
        let cleaned = clean_path(source);
        check_inside(source, &cleaned)?;
        let cleaned = cleaned.trim_start_matches('/');
        let components: Vec<&str> = cleaned.split('/').collect();
        let Some(first_glob) = components.iter().position(|c| contains_wildcards(c)) else {
            return Ok(vec![self.resolve(source, FinalSymlink::Follow)?]);
        };
        let rest = components[first_glob..].join("/");
        let pattern =
            PathPattern::new(&rest, Syntax::Go).map_err(|reason| ContextError::Pattern {
                pattern: source.to_owned(),
                reason,
            })?;
        let prefix = components[..first_glob].join("/");
        let base = match self.resolve(&prefix, FinalSymlink::Follow) {
            Ok(base) if base.is_dir() => base,
            Ok(_) | Err(ContextError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut matches = Vec::new();
        for (entry, _) in glob_below(&self.root, &self.ignore, &base, &pattern)? {
            if entry.kind == FileKind::Symlink {
                let components = entry.path.iter().map(OsStr::to_os_string).collect();
                let display = entry.path.to_string_lossy().into_owned();
                matches.push(self.resolve_components(
                    &display,
                    components,
                    FinalSymlink::Follow,
                )?);
            } else {
                matches.push(entry);
            }
        }
        Ok(matches)
    }

    /// Resolves the components of a request (already checked not to climb out), as
    /// [`Context::resolve`] describes. `request` is only used in errors.
    fn resolve_components(
        &self,
        request: &str,
        components: VecDeque<OsString>,
        last: FinalSymlink,
    ) -> Result<Entry, ContextError> {
        let not_found = || ContextError::NotFound {
            path: request.to_owned(),
        };
        let mut todo = components;
        let mut done = PathBuf::new();
        let mut followed = 0;
        while let Some(component) = todo.pop_front() {
            if component == ".." {
                done.pop();
                continue;
            }
            if component.is_empty() || component == "." {
                continue;
            }
            let candidate = done.join(&component);
            let host = self.root.join(&candidate);
            let md = match fs::symlink_metadata(&host) {
                Ok(md) => md,
                Err(e) if is_missing(&e) => return Err(not_found()),
                Err(e) => return Err(ContextError::io(&host, e)),
            };
            let follow = !todo.is_empty() || last == FinalSymlink::Follow;
            if md.file_type().is_symlink() && follow {
                if self.ignore.is_excluded(&candidate.to_string_lossy()) {
                    return Err(not_found());
                }
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(ContextError::SymlinkLoop {
                        path: request.to_owned(),
                    });
                }
                let target = fs::read_link(&host).map_err(|e| ContextError::io(&host, e))?;
                if target.has_root() {
                    done = PathBuf::new();
                }
                for component in target.components().rev() {
                    match component {
                        Component::Normal(name) => todo.push_front(name.to_os_string()),
                        Component::ParentDir => todo.push_front(OsString::from("..")),
                        Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                    }
                }
                continue;
            }
            done = candidate;
        }

        let host = self.root.join(&done);
        let md = fs::symlink_metadata(&host).map_err(|e| {
            if is_missing(&e) {
                not_found()
            } else {
                ContextError::io(&host, e)
            }
        })?;
        let path = if done.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            done
        };
        if !self.visible(&path, md.is_dir())? {
            return Err(not_found());
        }
        Entry::from_metadata(path, &host, &md)
    }

    /// Whether `path` exists in the context as BuildKit would send it: not excluded, or an
    /// excluded directory with something re-included below it.
    fn visible(&self, path: &Path, is_dir: bool) -> Result<bool, ContextError> {
        let rel = path.to_string_lossy();
        if rel == "." {
            return Ok(true);
        }
        let state = self.ignore.state(&rel, None);
        if !self.ignore.excluded(&state) {
            return Ok(true);
        }
        if !is_dir || !self.ignore.may_reinclude(&rel, &state) {
            return Ok(false);
        }
        match Walk::new(&self.root, &self.ignore, path, None).next() {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(e),
        }
    }
}

/// Splits a requested path into components after cleaning it, refusing one that climbs out.
fn request_components(path: &str) -> Result<VecDeque<OsString>, ContextError> {
    let cleaned = clean_path(path);
    check_inside(path, &cleaned)?;
    Ok(cleaned
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(OsString::from)
        .collect())
}

/// Refuses a cleaned relative path that starts with `..`.
fn check_inside(path: &str, cleaned: &str) -> Result<(), ContextError> {
    if cleaned == ".." || cleaned.starts_with("../") {
        return Err(ContextError::OutsideContext { path: path.into() });
    }
    Ok(())
}

/// The entries below the directory `base` of the tree at `root` (less what `ignore` leaves
/// out) whose path relative to `base` matches `pattern`, in walk order, each with that
/// relative path. A matching directory is one match: its contents are not. Directories below
/// which nothing can match are not entered. An excluded directory that matches is the
/// exception: it only exists if something below it is re-included, so the walk goes on below
/// it, unpruned, until it finds out. Both the context's wildcard sources and `COPY --from`'s
/// (in a stage's root) are found this way.
pub(crate) fn glob_below(
    root: &Path,
    ignore: &Dockerignore,
    base: &Entry,
    pattern: &PathPattern,
) -> Result<Vec<(Entry, String)>, ContextError> {
    let base_str = match base.path.to_string_lossy() {
        p if p == "." => String::new(),
        p => format!("{p}/"),
    };
    let below = |rel: &str| {
        rel.strip_prefix(base_str.as_str())
            .unwrap_or(rel)
            .to_owned()
    };
    let prune_pattern = pattern.clone();
    let prune_below = below;
    let mut excluded_match: Option<String> = None;
    let prune = move |rel: &str, excluded: bool| {
        let sub = prune_below(rel);
        if excluded_match
            .as_deref()
            .is_some_and(|dir| is_below(&sub, dir))
        {
            return false;
        }
        let matches = prune_pattern.matches(&sub);
        if excluded && matches {
            excluded_match = Some(sub);
            return false;
        }
        matches || !prune_pattern.may_match_with_prefix(&format!("{sub}/"))
    };
    let walk_base = if base_str.is_empty() {
        PathBuf::new()
    } else {
        base.path.clone()
    };
    let walk = Walk::new(root, ignore, &walk_base, Some(Box::new(prune)));
    let mut matches = Vec::new();
    let mut matched_dir: Option<String> = None;
    for entry in walk {
        let entry = entry?;
        let sub = below(&entry.path.to_string_lossy());
        if matched_dir
            .as_deref()
            .is_some_and(|dir| is_below(&sub, dir))
        {
            continue;
        }
        if !pattern.matches(&sub) {
            continue;
        }
        if entry.is_dir() {
            matched_dir = Some(sub.clone());
        }
        matches.push((entry, sub));
    }
    Ok(matches)
}

/// Whether `path` is strictly below the directory `dir` (both relative, `/`-separated).
pub(crate) fn is_below(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether an error means that the path is not there (including a file used as a directory).
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_cleaned_and_checked() {
        let got: Vec<String> = request_components("/a//b/./c/../d/")
            .expect("inside")
            .into_iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, ["a", "b", "d"]);
        assert!(request_components(".").expect("inside").is_empty());
        assert!(request_components("/../x").is_ok());
        for bad in ["..", "../x", "a/../../x", "./../x"] {
            assert!(
                matches!(
                    request_components(bad),
                    Err(ContextError::OutsideContext { .. })
                ),
                "{bad}"
            );
        }
    }
}
