//! `.dockerignore` files: reading, lookup and matching, with Docker's semantics.
//!
//! Reading follows `dockerignore.ReadAll` (moby's `ignorefile` package), line by line:
//! - a UTF-8 byte order mark at the start of the file is dropped; lines end at `\n`, and a `\r`
//!   before it is dropped;
//! - a line whose first character is `#` is a comment; a `#` anywhere else is part of a pattern;
//! - leading and trailing white space is trimmed, and blank lines are skipped;
//! - a leading `!` makes the pattern an exception (white space after it is trimmed too);
//! - the pattern is cleaned like Go's `filepath.Clean`, and a leading `/` is dropped, so `/a/`,
//!   `./a` and `a` are the same pattern.
//!
//! Compiling follows `patternmatcher.New`: the pattern (with its `!`) is cleaned once more, a
//! pattern that is only `!` is an error, and each pattern must be well formed (see
//! [`pattern`](super::pattern) for the syntax, with `**`).
//!
//! Matching follows `patternmatcher.MatchesOrParentMatches`: a path is excluded when the last
//! pattern that matches the path itself *or any of its parent directories* is not an
//! exception. So `docs` excludes `docs/a/b`, and `!docs/keep.md` after it brings that file
//! back, while `!docs/keep.md` before `docs` does nothing.
//!
//! Paths are relative to the context root, `/`-separated, without a leading `./`. Ignore files
//! are read as UTF-8 (an invalid byte becomes U+FFFD), and file names that are not UTF-8 are
//! matched the same way, so `*` and `?` still match them but a literal pattern cannot name
//! them.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::pattern::{PathPattern, PatternError, Syntax, clean_path};

/// The name of the context-wide ignore file, at the root of the context.
pub const DOCKERIGNORE: &str = ".dockerignore";

/// An ignore file or pattern list that could not be read or compiled.
#[derive(Debug, Error)]
pub enum IgnoreError {
    /// A malformed pattern.
    #[error("{}: invalid pattern `{pattern}`: {reason}", location(.file, *.line))]
    Pattern {
        /// The ignore file, when the patterns came from one.
        file: Option<PathBuf>,
        /// The 1-based line of the file (or position in the pattern list).
        line: usize,
        /// The pattern as written, trimmed.
        pattern: String,
        /// What is wrong with it.
        reason: PatternError,
    },
    /// A pattern that is only `!` (after cleaning).
    #[error("{}: illegal exclusion pattern: \"!\"", location(.file, *.line))]
    LoneExclamation {
        /// The ignore file, when the patterns came from one.
        file: Option<PathBuf>,
        /// The 1-based line of the file (or position in the pattern list).
        line: usize,
    },
    /// The ignore file exists but could not be read.
    #[error("reading {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn location(file: &Option<PathBuf>, line: usize) -> String {
    match file {
        Some(file) => format!("{}:{line}", file.display()),
        None => format!("line {line}"),
    }
}

/// One compiled pattern of an ignore file.
#[derive(Debug, Clone)]
pub struct IgnorePattern {
    pattern: PathPattern,
    exclusion: bool,
    line: usize,
}

impl IgnorePattern {
    /// The cleaned pattern, without its `!`.
    pub fn as_str(&self) -> &str {
        self.pattern.as_str()
    }

    /// Whether this is an exception (`!pattern`), which re-includes what it matches.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// The 1-based line of the ignore file this pattern came from (or its position in the
    /// pattern list).
    pub fn line(&self) -> usize {
        self.line
    }

    /// Whether the pattern matches `path` itself (parents are not considered).
    pub fn matches(&self, path: &str) -> bool {
        self.pattern.matches(path)
    }
}

impl fmt::Display for IgnorePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exclusion {
            f.write_str("!")?;
        }
        f.write_str(self.as_str())
    }
}

/// Which patterns match a path or one of its parents: the walker keeps one per directory so
/// that a child only tests the patterns against its own path, as BuildKit's walker does with
/// `MatchesUsingParentResults`.
#[derive(Debug, Clone, Default)]
pub(crate) struct MatchState {
    hits: Vec<bool>,
}

impl MatchState {
    /// The index of the last pattern that matches, which decides.
    fn last(&self) -> Option<usize> {
        self.hits.iter().rposition(|hit| *hit)
    }
}

/// A compiled `.dockerignore`: an ordered list of patterns, the last match deciding.
#[derive(Debug, Clone, Default)]
pub struct Dockerignore {
    patterns: Vec<IgnorePattern>,
    source: Option<PathBuf>,
}

impl Dockerignore {
    /// An ignore list that excludes nothing.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses the contents of an ignore file.
    pub fn parse(text: &str) -> Result<Self, IgnoreError> {
        Self::parse_with_file(text, None)
    }

    /// Reads and parses the ignore file at `path`; errors name the file.
    pub fn read(path: &Path) -> Result<Self, IgnoreError> {
        let bytes = fs::read(path).map_err(|source| IgnoreError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut ignore = Self::parse_with_file(&String::from_utf8_lossy(&bytes), Some(path))?;
        ignore.source = Some(path.to_owned());
        Ok(ignore)
    }

    /// Loads the ignore file that applies to a build of `context` with `dockerfile` (see
    /// [`find_dockerignore`] for which file that is), or an empty list when there is none.
    /// [`Dockerignore::source`] tells which file was used.
    pub fn load(context: &Path, dockerfile: Option<&Path>) -> Result<Self, IgnoreError> {
        match find_dockerignore(context, dockerfile)? {
            Some(path) => Self::read(&path),
            None => Ok(Self::empty()),
        }
    }

    /// Compiles a list of patterns given directly (as `patternmatcher.New` takes them, for
    /// example the `--exclude` patterns of COPY): each is trimmed and cleaned, blank ones are
    /// skipped, and errors give the 1-based position in the list as the line.
    pub fn from_patterns<I, S>(patterns: I) -> Result<Self, IgnoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for (index, pattern) in patterns.into_iter().enumerate() {
            let pattern = pattern.as_ref();
            if let Some(compiled) = compile(pattern, pattern.trim(), index + 1, None)? {
                out.push(compiled);
            }
        }
        Ok(Self {
            patterns: out,
            source: None,
        })
    }

    fn parse_with_file(text: &str, file: Option<&Path>) -> Result<Self, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.starts_with('#') {
                continue;
            }
            let written = line.trim();
            if written.is_empty() {
                continue;
            }
            let (invert, rest) = match written.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, written),
            };
            let mut normalized = String::new();
            if invert {
                normalized.push('!');
            }
            if !rest.is_empty() {
                let cleaned = clean_path(rest);
                match cleaned.strip_prefix('/') {
                    Some(relative) if !relative.is_empty() => normalized.push_str(relative),
                    _ => normalized.push_str(&cleaned),
                }
            }
            if let Some(compiled) = compile(&normalized, written, index + 1, file)? {
                patterns.push(compiled);
            }
        }
        Ok(Self {
            patterns,
            source: None,
        })
    }

    /// The file these patterns were read from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The compiled patterns, in order.
    pub fn patterns(&self) -> &[IgnorePattern] {
        &self.patterns
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is an exception (`!pattern`).
    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `path` (relative to the context root) is excluded: the last pattern that
    /// matches it or one of its parent directories is not an exception. The path is cleaned
    /// first; the context root itself (`.` or empty) is never excluded.
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean_path(path);
        let path = path.trim_start_matches('/');
        if path.is_empty() || path == "." {
            return false;
        }
        self.excluded(&self.state(path, None))
    }

    /// Whether an exception could bring back something below the directory `dir`, assuming
    /// `dir` is excluded: the walker must then descend into `dir` rather than skip it.
    pub fn may_reinclude_below(&self, dir: &str) -> bool {
        let dir = clean_path(dir);
        let dir = dir.trim_start_matches('/');
        if dir.is_empty() || dir == "." {
            return self.has_exclusions();
        }
        self.may_reinclude(dir, &self.state(dir, None))
    }

    /// The match state of `path`, from its parent's state when the caller has it, or by
    /// testing every parent directory of `path` otherwise.
    pub(crate) fn state(&self, path: &str, parent: Option<&MatchState>) -> MatchState {
        let hits = self
            .patterns
            .iter()
            .enumerate()
            .map(|(i, p)| match parent {
                Some(parent) => parent.hits.get(i).copied().unwrap_or(false) || p.matches(path),
                None => {
                    p.matches(path)
                        || path
                            .match_indices('/')
                            .any(|(end, _)| p.matches(&path[..end]))
                }
            })
            .collect();
        MatchState { hits }
    }

    /// Whether a path with this state is excluded.
    pub(crate) fn excluded(&self, state: &MatchState) -> bool {
        state.last().is_some_and(|i| !self.patterns[i].exclusion)
    }

    /// Whether something strictly below the directory `dir` (with match state `state`) could
    /// be re-included. Every pattern that matches `dir` or a parent also matches everything
    /// below it, so only an exception that comes after the last of those, and that can match
    /// some path starting with `dir/`, can change the outcome.
    pub(crate) fn may_reinclude(&self, dir: &str, state: &MatchState) -> bool {
        let from = state.last().map_or(0, |i| i + 1);
        let prefix = format!("{dir}/");
        self.patterns[from..]
            .iter()
            .any(|p| p.exclusion && p.pattern.may_match_with_prefix(&prefix))
    }
}

/// Compiles one pattern as `patternmatcher.New` does; `Ok(None)` for a blank one.
fn compile(
    pattern: &str,
    written: &str,
    line: usize,
    file: Option<&Path>,
) -> Result<Option<IgnorePattern>, IgnoreError> {
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return Ok(None);
    }
    let cleaned = clean_path(pattern);
    let (exclusion, body) = match cleaned.strip_prefix('!') {
        Some("") => {
            return Err(IgnoreError::LoneExclamation {
                file: file.map(Path::to_owned),
                line,
            });
        }
        Some(body) => (true, body),
        None => (false, cleaned.as_str()),
    };
    let compiled =
        PathPattern::new(body, Syntax::Dockerignore).map_err(|reason| IgnoreError::Pattern {
            file: file.map(Path::to_owned),
            line,
            pattern: written.to_owned(),
            reason,
        })?;
    Ok(Some(IgnorePattern {
        pattern: compiled,
        exclusion,
        line,
    }))
}

/// The ignore files that apply to a build, most specific first: `<Dockerfile>.dockerignore`
/// beside the Dockerfile (when there is a Dockerfile on disk), then `.dockerignore` at the
/// root of the context.
///
/// `dockerfile` is the path of the Dockerfile as the process can open it (absolute, or
/// relative to the current directory); pass `None` when it comes from standard input.
pub fn dockerignore_candidates(context: &Path, dockerfile: Option<&Path>) -> Vec<PathBuf> {
    let mut candidates = Vec::with_capacity(2);
    if let Some((dockerfile, name)) = dockerfile.and_then(|d| Some((d, d.file_name()?))) {
        let mut name = name.to_os_string();
        name.push(".dockerignore");
        candidates.push(dockerfile.with_file_name(name));
    }
    candidates.push(context.join(DOCKERIGNORE));
    candidates
}

/// The ignore file that applies to a build of `context` with `dockerfile`, if any: the first
/// of [`dockerignore_candidates`] that exists. As in BuildKit, a `<Dockerfile>.dockerignore`
/// replaces the context's `.dockerignore` entirely; the two are never merged.
pub fn find_dockerignore(
    context: &Path,
    dockerfile: Option<&Path>,
) -> Result<Option<PathBuf>, IgnoreError> {
    for candidate in dockerignore_candidates(context, dockerfile) {
        match fs::metadata(&candidate) {
            Ok(_) => return Ok(Some(candidate)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(IgnoreError::Read {
                    path: candidate,
                    source,
                });
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(ignore: &Dockerignore) -> Vec<String> {
        ignore.patterns().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn reads_like_docker() {
        let text = "\u{feff}# comment\n\
                    \n\
                    \t node_modules/ \r\n\
                    /abs/path\n\
                    ./rel//dir/./x\n\
                    ! keep.md\n\
                    !/root-keep\n\
                    \x20# not a comment\n\
                    a/../b\n\
                    ../outside\n\
                    last";
        let ignore = Dockerignore::parse(text).expect("parses");
        assert_eq!(
            strings(&ignore),
            [
                "node_modules",
                "abs/path",
                "rel/dir/x",
                "!keep.md",
                "!root-keep",
                "# not a comment",
                "b",
                "../outside",
                "last",
            ]
        );
        let lines: Vec<usize> = ignore.patterns().iter().map(IgnorePattern::line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn lone_exclamation_is_an_error() {
        for text in ["a\n!\n", "a\n! \n", "a\n!/\n"] {
            let err = Dockerignore::parse(text).expect_err("must fail");
            assert!(
                matches!(err, IgnoreError::LoneExclamation { line: 2, .. }),
                "{err:?}"
            );
            assert_eq!(err.to_string(), "line 2: illegal exclusion pattern: \"!\"");
        }
    }

    #[test]
    fn malformed_pattern_names_line_and_pattern() {
        let err = Dockerignore::parse("ok\n\n  [a-  \n").expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "line 3: invalid pattern `[a-`: unterminated character class: missing `]`"
        );
        let err = Dockerignore::from_patterns(["a", "b\\"]).expect_err("must fail");
        assert!(matches!(
            err,
            IgnoreError::Pattern {
                line: 2,
                reason: PatternError::TrailingEscape,
                ..
            }
        ));
    }

    #[test]
    fn parent_directories_match() {
        let ignore = Dockerignore::parse("docs\n").expect("parses");
        assert!(ignore.is_excluded("docs"));
        assert!(ignore.is_excluded("docs/a/b.md"));
        assert!(!ignore.is_excluded("docsx"));
        assert!(!ignore.is_excluded("src/docs"));
        assert!(!ignore.is_excluded("."));
    }

    #[test]
    fn last_match_wins() {
        let ignore = Dockerignore::parse("*.md\n!README*.md\nREADME-secret.md\n").expect("ok");
        assert!(ignore.is_excluded("CHANGES.md"));
        assert!(!ignore.is_excluded("README.md"));
        assert!(!ignore.is_excluded("README-en.md"));
        assert!(ignore.is_excluded("README-secret.md"));
        // An exception before the exclusion does nothing.
        let ignore = Dockerignore::parse("!keep\nkeep\n").expect("ok");
        assert!(ignore.is_excluded("keep"));
    }

    #[test]
    fn state_from_parent_equals_state_from_scratch() {
        let ignore = Dockerignore::parse("a\n!a/b/**\na/b/c\n!**/keep\n").expect("ok");
        let paths = [
            "a",
            "a/b",
            "a/b/c",
            "a/b/c/d",
            "a/b/c/keep",
            "a/x",
            "z/keep",
        ];
        for path in paths {
            let parent = match path.rfind('/') {
                Some(end) => ignore.state(&path[..end], None),
                None => MatchState::default(),
            };
            let from_parent = ignore.state(path, Some(&parent));
            let from_scratch = ignore.state(path, None);
            assert_eq!(from_parent.hits, from_scratch.hits, "{path}");
        }
        assert!(ignore.is_excluded("a/x"));
        // `a/b/**` matches below `a/b`, not `a/b` itself.
        assert!(ignore.is_excluded("a/b"));
        assert!(!ignore.is_excluded("a/b/x"));
        assert!(ignore.is_excluded("a/b/c/d"));
        assert!(!ignore.is_excluded("a/b/c/keep"));
    }

    #[test]
    fn reinclusion_below_directories() {
        let ignore = Dockerignore::parse("build\n!build/keep\nvendor\n").expect("ok");
        assert!(ignore.may_reinclude_below("build"));
        assert!(!ignore.may_reinclude_below("vendor"));
        // An exception that only comes before the deciding pattern cannot re-include.
        let ignore = Dockerignore::parse("!out/keep\nout\n").expect("ok");
        assert!(!ignore.may_reinclude_below("out"));
        // Wildcard exceptions are looked at too, not only literal prefixes.
        let ignore = Dockerignore::parse("*\n!**/*.go\n").expect("ok");
        assert!(ignore.may_reinclude_below("pkg"));
        let ignore = Dockerignore::parse("*\n!*/*.go\n").expect("ok");
        assert!(ignore.may_reinclude_below("pkg"));
        assert!(!ignore.may_reinclude_below("pkg/sub"));
    }

    #[test]
    fn candidates_prefer_the_dockerfile_specific_file() {
        let got = dockerignore_candidates(
            Path::new("/ctx"),
            Some(Path::new("/ctx/build/app.Dockerfile")),
        );
        assert_eq!(
            got,
            [
                PathBuf::from("/ctx/build/app.Dockerfile.dockerignore"),
                PathBuf::from("/ctx/.dockerignore"),
            ]
        );
        let got = dockerignore_candidates(Path::new("/ctx"), None);
        assert_eq!(got, [PathBuf::from("/ctx/.dockerignore")]);
    }
}
