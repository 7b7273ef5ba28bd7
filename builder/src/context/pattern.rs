//! Path patterns: Go's `filepath.Match` syntax, and the `**` extension that `.dockerignore`
//! files get from moby's `patternmatcher`.
//!
//! The syntax, as Go defines it:
//! - `*` matches any run of characters other than `/`, possibly empty;
//! - `?` matches one character other than `/`;
//! - `[...]` matches one character from a set of characters and ranges (`[abc]`, `[a-z]`),
//!   negated only with `^` (`[^a-z]`): in Go `[!a]` is the set of `!` and `a`. Inside brackets
//!   `\` escapes the next character, and `-` and `]` must be escaped unless `]` closes the set;
//! - `\c` matches the character `c` itself;
//! - anything else matches itself.
//!
//! [`Syntax::Dockerignore`] adds `**`, translated as `patternmatcher` translates it to a regular
//! expression: `**` (and `**/`, whose slash it absorbs) matches nothing or any run of characters
//! ending in `/`, so `a/**/b` matches `a/b` and `a/x/y/b`; a trailing `**` matches any run of
//! characters, `/` included. `patternmatcher` also has a fast path for patterns that start with
//! `**` and contain no other special character: `**foo` then matches any path ending in `foo`
//! (`xfoo`, `a/xfoo`), and that is reproduced too.
//!
//! Malformed patterns are errors, as Go's `filepath.Match` reports them (an unterminated or
//! empty set, an unescaped `-` or `]` inside a set, a trailing `\`), plus ranges written
//! backwards (`[z-a]`), which `patternmatcher`'s regular expressions refuse.
//!
//! No crate matches these semantics: `glob` and `globset` negate sets with `!`, treat `**` only
//! as a whole path component, and accept or reject different malformed patterns. So the
//! matcher is written here: a pattern compiles to a list of tokens, and matching runs them as
//! a small NFA over the characters of the path, which is linear in the path for each token and
//! never backtracks. Matching is on characters, not bytes, as Go's is on runes.

use thiserror::Error;

/// Which dialect a pattern is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Go's `filepath.Match`, as COPY and ADD sources use it: `**` is just two `*`.
    Go,
    /// `.dockerignore` patterns: Go's syntax plus `**`.
    Dockerignore,
}

/// Why a pattern is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternError {
    /// A `[` whose set never ends with `]`.
    #[error("unterminated character class: missing `]`")]
    UnterminatedClass,
    /// `[]` or `[^]`: a set must name at least one character.
    #[error("empty character class")]
    EmptyClass,
    /// A `-` or `]` inside a set where a character was expected (escape it with `\`).
    #[error("unescaped `{0}` in character class")]
    MisplacedInClass(char),
    /// A range whose bounds are the wrong way round, such as `[z-a]`.
    #[error("character range `{lo}-{hi}` is out of order")]
    ReversedRange {
        /// The first bound as written.
        lo: char,
        /// The second bound as written.
        hi: char,
    },
    /// A `\` with nothing after it.
    #[error("trailing backslash")]
    TrailingEscape,
}

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Exactly this character.
    Literal(char),
    /// `?`: any character but `/`.
    AnyChar,
    /// `*`: any run of characters but `/`.
    Star,
    /// Trailing `**` (and the `**` of the suffix fast path): any run of characters.
    AnyPath,
    /// `**` elsewhere: nothing, or any run of characters that ends in `/`.
    Dirs,
    /// `[...]`: one character in (or, negated, not in) the inclusive ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    tokens: Vec<Token>,
}

impl PathPattern {
    /// Compiles `pattern`, written in `syntax`. The pattern is taken as is: callers clean it
    /// first if they want Go's `filepath.Clean` applied.
    pub fn new(pattern: &str, syntax: Syntax) -> Result<Self, PatternError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' if syntax == Syntax::Dockerignore && chars.get(i + 1) == Some(&'*') => {
                    let at_start = i == 0;
                    i += 2;
                    let slash = chars.get(i) == Some(&'/');
                    if slash {
                        i += 1;
                    }
                    let token = if i == chars.len() || (at_start && !slash && is_plain(&chars[i..]))
                    {
                        Token::AnyPath
                    } else {
                        Token::Dirs
                    };
                    tokens.push(token);
                }
                '*' => {
                    tokens.push(Token::Star);
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::AnyChar);
                    i += 1;
                }
                '[' => {
                    let (token, next) = parse_class(&chars, i + 1)?;
                    tokens.push(token);
                    i = next;
                }
                '\\' => match chars.get(i + 1) {
                    Some(&c) => {
                        tokens.push(Token::Literal(c));
                        i += 2;
                    }
                    None => return Err(PatternError::TrailingEscape),
                },
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Ok(Self {
            source: pattern.to_owned(),
            tokens,
        })
    }

    /// The pattern as it was written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        self.run(path)
            .is_some_and(|states| states[self.tokens.len()])
    }

    /// Whether some path that starts with `prefix` (`prefix` itself included) could match.
    /// The walker asks this with `dir/` to learn whether anything below `dir` could match.
    pub fn may_match_with_prefix(&self, prefix: &str) -> bool {
        self.run(prefix).is_some()
    }

    /// Runs the NFA over `text` and returns the live states, or `None` once none is left.
    ///
    /// State `t` (for `t` in `0..=n`) means "the next token to match is `t`", so `n` is the
    /// accepting state; state `n + 1 + t` means "inside the `.*` part of the [`Token::Dirs`]
    /// at `t`, still owing a `/`".
    fn run(&self, text: &str) -> Option<Vec<bool>> {
        let n = self.tokens.len();
        let mut cur = vec![false; 2 * n + 1];
        cur[0] = true;
        self.close(&mut cur);
        for c in text.chars() {
            let mut next = vec![false; 2 * n + 1];
            for (t, token) in self.tokens.iter().enumerate() {
                if cur[t] {
                    match token {
                        Token::Literal(l) => next[t + 1] |= *l == c,
                        Token::AnyChar => next[t + 1] |= c != '/',
                        Token::Class { negated, ranges } => {
                            let hit = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                            next[t + 1] |= hit != *negated;
                        }
                        Token::Star => next[t] |= c != '/',
                        Token::AnyPath => next[t] = true,
                        Token::Dirs => {
                            next[n + 1 + t] = true;
                            next[t + 1] |= c == '/';
                        }
                    }
                }
                if cur[n + 1 + t] {
                    next[n + 1 + t] = true;
                    next[t + 1] |= c == '/';
                }
            }
            self.close(&mut next);
            if !next.contains(&true) {
                return None;
            }
            cur = next;
        }
        Some(cur)
    }

    /// Adds the states reachable without reading a character: past any token that may match
    /// nothing. Empty transitions only go forward, so one ascending pass is enough.
    fn close(&self, states: &mut [bool]) {
        for (t, token) in self.tokens.iter().enumerate() {
            if states[t] && matches!(token, Token::Star | Token::AnyPath | Token::Dirs) {
                states[t + 1] = true;
            }
        }
    }
}

/// Whether `rest` holds no character that `patternmatcher` would translate to a regular
/// expression, which is the condition of its suffix fast path for a leading `**`.
fn is_plain(rest: &[char]) -> bool {
    !rest
        .iter()
        .any(|c| matches!(c, '*' | '?' | '[' | ']' | '\\'))
}

/// Parses a set whose `[` is just before `start`; returns the token and the index after `]`.
fn parse_class(chars: &[char], start: usize) -> Result<(Token, usize), PatternError> {
    let mut i = start;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        match chars.get(i) {
            None => return Err(PatternError::UnterminatedClass),
            Some(']') if !ranges.is_empty() => {
                return Ok((Token::Class { negated, ranges }, i + 1));
            }
            Some(']') => return Err(PatternError::EmptyClass),
            Some(_) => {}
        }
        let (lo, next) = class_char(chars, i)?;
        i = next;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            let (h, next) = class_char(chars, i + 1)?;
            hi = h;
            i = next;
        }
        if hi < lo {
            return Err(PatternError::ReversedRange { lo, hi });
        }
        ranges.push((lo, hi));
    }
}

/// Reads one (possibly escaped) character of a set, as Go's `getEsc` does.
fn class_char(chars: &[char], i: usize) -> Result<(char, usize), PatternError> {
    match chars.get(i) {
        None => Err(PatternError::UnterminatedClass),
        Some(&c) if c == '-' || c == ']' => Err(PatternError::MisplacedInClass(c)),
        Some('\\') => match chars.get(i + 1) {
            Some(&c) => Ok((c, i + 2)),
            None => Err(PatternError::UnterminatedClass),
        },
        Some(&c) => Ok((c, i + 1)),
    }
}

/// Go's `filepath.Clean` for `/`-separated paths: collapses repeated slashes, drops `.`
/// components and a trailing slash, resolves `dir/..` lexically, drops `..` at the start of a
/// rooted path, and gives `.` for an empty result.
pub fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(comp),
        }
    }
    let body = parts.join("/");
    if rooted {
        format!("/{body}")
    } else if body.is_empty() {
        ".".to_owned()
    } else {
        body
    }
}

/// Whether a COPY source component holds a wildcard (`*`, `?` or `[`), skipping escaped
/// characters, as BuildKit decides whether to expand a source.
pub(crate) fn contains_wildcards(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(p: &str, s: &str) -> bool {
        PathPattern::new(p, Syntax::Go)
            .expect("valid pattern")
            .matches(s)
    }

    fn di(p: &str, s: &str) -> bool {
        PathPattern::new(p, Syntax::Dockerignore)
            .expect("valid pattern")
            .matches(s)
    }

    #[test]
    fn go_match_table() {
        // Cases from Go's own `filepath.Match` tests.
        let cases = [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("a[^a][^a][^a]b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "x", true),
            ("[\\-x]", "a", false),
            ("*x", "xxx", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(go(p, s), want, "Match({p:?}, {s:?})");
        }
    }

    #[test]
    fn go_negates_with_caret_only() {
        assert!(go("[!a]", "!"));
        assert!(go("[!a]", "a"));
        assert!(!go("[!a]", "b"));
        assert!(go("[^a]", "b"));
    }

    #[test]
    fn go_double_star_is_two_stars() {
        assert!(go("**", "abc"));
        assert!(!go("**", "a/b"));
        assert!(!go("a/**/b", "a/b"));
    }

    #[test]
    fn malformed_patterns() {
        let cases = [
            ("[]a]", PatternError::EmptyClass),
            ("[^]", PatternError::EmptyClass),
            ("[-]", PatternError::MisplacedInClass('-')),
            ("[x-]", PatternError::MisplacedInClass(']')),
            ("[a-b-c]", PatternError::MisplacedInClass('-')),
            ("[", PatternError::UnterminatedClass),
            ("[^", PatternError::UnterminatedClass),
            ("[^bc", PatternError::UnterminatedClass),
            ("a[", PatternError::UnterminatedClass),
            ("[a-", PatternError::UnterminatedClass),
            ("[\\", PatternError::UnterminatedClass),
            ("a\\", PatternError::TrailingEscape),
            ("[z-a]", PatternError::ReversedRange { lo: 'z', hi: 'a' }),
        ];
        for (p, want) in cases {
            for syntax in [Syntax::Go, Syntax::Dockerignore] {
                assert_eq!(PathPattern::new(p, syntax), Err(want.clone()), "{p:?}");
            }
        }
    }

    #[test]
    fn double_star_table() {
        let cases = [
            ("**", "a", true),
            ("**", "a/b/c", true),
            ("**/foo", "foo", true),
            ("**/foo", "a/foo", true),
            ("**/foo", "a/b/foo", true),
            ("**/foo", "afoo", false),
            ("**/foo", "foo/bar", false),
            ("**/*.go", "main.go", true),
            ("**/*.go", "a/b/main.go", true),
            ("**/*.go", "a/b/main.c", false),
            ("a/**", "a/b", true),
            ("a/**", "a/b/c", true),
            ("a/**", "a", false),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**/b", "a/xb", false),
            ("a/**/b", "b", false),
            ("a**", "abc/d", true),
            // The suffix fast path: a leading `**` followed only by plain characters.
            ("**foo", "foo", true),
            ("**foo", "xfoo", true),
            ("**foo", "a/xfoo", true),
            ("**.go", "a/b.go", true),
            // With any other special character the regular expression applies.
            ("**foo*", "xfoo", false),
            ("**foo*", "a/foobar", true),
            // Escaped stars are literal.
            ("a\\*\\*", "a**", true),
            ("a\\*\\*", "ab", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(di(p, s), want, "{p:?} against {s:?}");
        }
    }

    #[test]
    fn prefix_liveness() {
        let p = PathPattern::new("a/*/c", Syntax::Dockerignore).expect("valid");
        assert!(p.may_match_with_prefix("a/"));
        assert!(p.may_match_with_prefix("a/b/"));
        assert!(!p.may_match_with_prefix("b/"));
        assert!(!p.may_match_with_prefix("a/b/d/"));
        let p = PathPattern::new("**/keep", Syntax::Dockerignore).expect("valid");
        assert!(p.may_match_with_prefix("x/y/"));
        let p = PathPattern::new("docs", Syntax::Dockerignore).expect("valid");
        assert!(!p.may_match_with_prefix("docs/"));
    }

    #[test]
    fn clean_like_go() {
        let cases = [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("/", "/"),
            ("a/", "a"),
            ("./a", "a"),
            ("a//b", "a/b"),
            ("a/./b", "a/b"),
            ("a/../b", "b"),
            ("a/..", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("a/../..", ".."),
            ("../a/../b", "../b"),
            ("/..", "/"),
            ("/../a", "/a"),
            ("//a//b/", "/a/b"),
            ("!a/../b", "b"),
        ];
        for (input, want) in cases {
            assert_eq!(clean_path(input), want, "Clean({input:?})");
        }
    }

    #[test]
    fn wildcard_detection() {
        assert!(contains_wildcards("*.txt"));
        assert!(contains_wildcards("a?"));
        assert!(contains_wildcards("[ab]"));
        assert!(!contains_wildcards("plain.txt"));
        assert!(!contains_wildcards("a\\*b"));
    }
}
