//! Word expansion, as BuildKit's shell lexer does it for Dockerfile arguments.
//!
//! [`Lex`] takes one word of a Dockerfile (the value of an `ENV`, a `COPY` source, a `FROM`
//! image, ...) and the variables in scope, and
//! - removes quotes: text in `'...'` is literal, text in `"..."` is literal except for `$`
//!   expansions and the escapes `\"`, `\$` and `\\`;
//! - handles the escape character (`\` or, after `# escape=``, a backtick): outside quotes it
//!   makes the next character literal, and one at the very end of the word is dropped;
//! - expands `$name`, `${name}` and the modifiers `${name:-word}`, `${name-word}`,
//!   `${name:+word}`, `${name+word}`, `${name:?message}`, `${name?message}`,
//!   `${name#pattern}`, `${name##pattern}`, `${name%pattern}`, `${name%%pattern}`,
//!   `${name/pattern/replacement}` and `${name//pattern/replacement}`, where patterns are shell
//!   globs (see [`glob`]). Positional (`$1`) and special (`$@`, `$#`, `$?`, ...) parameters are
//!   never set and expand to nothing.
//!
//! [`Lex::expand`] returns the expanded string, the same text split into words (quoted text
//! and escaped white space are never split, expanded values are), and which variable names were
//! looked up and found ([`Expansion::matched`]) or not ([`Expansion::unmatched`]); the later
//! stages use those for the `UndefinedVar` check and for unused build arguments.
//!
//! Expansion does no I/O and never runs commands.

pub mod glob;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::BuildHasher;

use thiserror::Error;

use glob::{Pattern, PatternError};

/// The variables visible to an expansion.
pub trait Vars {
    /// The value of `name`, or `None` if it is not set (an empty value is set).
    fn get(&self, name: &str) -> Option<&str>;
}

impl<S: BuildHasher> Vars for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl Vars for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

/// A list of `(name, value)` pairs; when a name appears more than once the last one wins, as
/// with repeated `ENV` instructions.
impl<K: AsRef<str>, V: AsRef<str>> Vars for [(K, V)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Vars for Vec<(K, V)> {
    fn get(&self, name: &str) -> Option<&str> {
        Vars::get(self.as_slice(), name)
    }
}

/// No variables at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoVars;

impl Vars for NoVars {
    fn get(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// What went wrong while expanding a word.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExpandErrorKind {
    /// `'...` without the closing quote.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// `"...` without the closing quote.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// A nested word ended before the character that closes it.
    #[error("unexpected end of statement while looking for matching {0}")]
    UnexpectedEnd(char),
    /// `${...` without the closing brace.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${name/pattern` without the `/` that starts the replacement.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${{...}`, `${:...}` or a name that is not a name.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// A modifier this lexer does not know, such as `${name:=word}`.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${name?message}` or `${name:?message}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message from the word, or the default one.
        message: String,
    },
    /// The pattern of `#`, `%` or `/` does not compile.
    #[error("invalid pattern ({pattern}) in substitution: {source}")]
    InvalidPattern {
        /// The pattern after expansion.
        pattern: String,
        /// Why it is invalid.
        source: PatternError,
    },
}

/// A word that could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("failed to process {word:?}: {kind}")]
pub struct ExpandError {
    /// The whole word that was being expanded.
    pub word: String,
    /// Where in `word` (in characters from its start) the error was found.
    pub offset: usize,
    /// What went wrong.
    pub kind: ExpandErrorKind,
}

/// The result of expanding one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word, white space kept.
    pub value: String,
    /// The expanded word split into words: unquoted white space separates words, including white
    /// space that comes from an expanded value; quoted or escaped white space does not.
    pub words: Vec<String>,
    /// Variables that were looked up and were set.
    pub matched: BTreeSet<String>,
    /// Variables that were looked up and were not set.
    pub unmatched: BTreeSet<String>,
}

/// Shell-like word expansion with a given escape character.
///
/// The options beyond the escape character exist for the parser's here-document detection and
/// are off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lex {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset: bool,
    skip_quotes: bool,
}

impl Default for Lex {
    fn default() -> Self {
        Lex::new('\\')
    }
}

impl Lex {
    /// A lexer that uses `escape` (`\` or `` ` ``) as its escape character.
    pub fn new(escape: char) -> Self {
        Lex {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
            skip_quotes: false,
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Keep quote characters in the result instead of removing them.
    pub fn raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keep escape characters in the result instead of removing them.
    pub fn raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Leave references to unset variables as they were written instead of expanding them.
    pub fn skip_unset(mut self, on: bool) -> Self {
        self.skip_unset = on;
        self
    }

    /// Treat quotes as ordinary characters.
    pub fn skip_quotes(mut self, on: bool) -> Self {
        self.skip_quotes = on;
        self
    }

    /// Expands `word` with `vars`: the value, the words and the variables used.
    pub fn expand<V: Vars + ?Sized>(&self, word: &str, vars: &V) -> Result<Expansion, ExpandError> {
        let lookup = |name: &str| vars.get(name).map(str::to_string);
        let mut state = State {
            lex: *self,
            chars: word.chars().collect(),
            pos: 0,
            vars: &lookup,
            raw_escapes: self.raw_escapes,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match state.process_until(None, self.raw_escapes) {
            Ok((value, words)) => Ok(Expansion {
                value,
                words,
                matched: state.matched,
                unmatched: state.unmatched,
            }),
            Err(kind) => Err(ExpandError {
                word: word.to_string(),
                offset: state.pos,
                kind,
            }),
        }
    }

    /// Expands `word` into one string (BuildKit's `ProcessWord`).
    pub fn process_word<V: Vars + ?Sized>(
        &self,
        word: &str,
        vars: &V,
    ) -> Result<String, ExpandError> {
        self.expand(word, vars).map(|e| e.value)
    }

    /// Expands `word` and splits it into words (BuildKit's `ProcessWords`).
    pub fn process_words<V: Vars + ?Sized>(
        &self,
        word: &str,
        vars: &V,
    ) -> Result<Vec<String>, ExpandError> {
        self.expand(word, vars).map(|e| e.words)
    }
}

/// Builds the split-into-words form next to the plain result.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    /// An unquoted character: white space ends the current word.
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.buf.push(c);
        self.in_word = true;
    }

    /// Expanded text: split on its white space.
    fn add_string(&mut self, s: &str) {
        for c in s.chars() {
            self.add_char(c);
        }
    }

    /// Quoted text: never split.
    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

struct State<'a> {
    lex: Lex,
    chars: Vec<char>,
    pos: usize,
    vars: &'a dyn Fn(&str) -> Option<String>,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

type Step<T> = Result<T, ExpandErrorKind>;

impl State<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        let value = (self.vars)(name);
        if value.is_some() {
            self.matched.insert(name.to_string());
        } else {
            self.unmatched.insert(name.to_string());
        }
        value
    }

    /// Processes characters until `stop` (consumed) or, with no stop character, the end.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Step<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let result = self.process_until_inner(stop);
        self.raw_escapes = saved;
        result
    }

    fn process_until_inner(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match c {
                '$' => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                    words.add_string(&value);
                }
                '\'' if !self.lex.skip_quotes => {
                    let value = self.process_single_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                '"' if !self.lex.skip_quotes => {
                    let value = self.process_double_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                _ => {
                    self.pos += 1;
                    if c == self.lex.escape {
                        if self.raw_escapes {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                        // An escape at the very end is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(c);
                        result.push(c);
                    }
                }
            }
        }
        match stop {
            Some(s) => Err(ExpandErrorKind::UnexpectedEnd(s)),
            None => Ok((result, words.finish())),
        }
    }

    fn process_single_quote(&mut self) -> Step<String> {
        // Everything up to the next single quote is literal; it cannot be escaped.
        let mut result = String::new();
        self.pos += 1;
        if self.lex.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.next() {
                None => return Err(ExpandErrorKind::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Step<String> {
        // Literal except for `$` expansions and the escapes of `"`, `$` and the escape
        // character; any other escape character stays as it is.
        let mut result = String::new();
        self.pos += 1;
        if self.lex.raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(ExpandErrorKind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(c) => {
                    self.pos += 1;
                    if c != self.lex.escape {
                        result.push(c);
                        continue;
                    }
                    let escapable = matches!(self.peek(), Some(n) if n == '"' || n == '$' || n == self.lex.escape);
                    if self.raw_escapes {
                        result.push(c);
                        if escapable {
                            result.extend(self.next());
                        }
                    } else if escapable {
                        result.extend(self.next());
                    } else if self.peek().is_some() {
                        result.push(c);
                    }
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Step<String> {
        self.pos += 1; // the `$`
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lex.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // the `{`
        match self.peek() {
            None => return Err(ExpandErrorKind::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandErrorKind::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        if name.is_empty() {
            return Err(ExpandErrorKind::BadSubstitution);
        }
        match self.next() {
            None => Err(ExpandErrorKind::MissingBrace),
            Some('}') => Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lex.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':') => {
                let modifier = self.next().ok_or(ExpandErrorKind::MissingBrace)?;
                self.process_modifier(&name, modifier, true)
            }
            Some(m @ ('+' | '-' | '?' | '#' | '%')) => self.process_modifier(&name, m, false),
            Some('/') => self.process_replace(&name),
            Some(other) => Err(ExpandErrorKind::UnsupportedModifier(other.to_string())),
        }
    }

    /// `${name[:]<modifier>word}`, after the modifier character has been read.
    fn process_modifier(
        &mut self,
        name: &str,
        modifier: char,
        null_is_unset: bool,
    ) -> Step<String> {
        let written = if null_is_unset {
            format!(":{modifier}")
        } else {
            modifier.to_string()
        };
        let pattern_like = modifier == '#' || modifier == '%';
        if !matches!(modifier, '+' | '-' | '?' | '#' | '%') || (null_is_unset && pattern_like) {
            return Err(ExpandErrorKind::UnsupportedModifier(written));
        }
        let (mut word, _) = self.nested_until('}', pattern_like, ExpandErrorKind::MissingBrace)?;
        let value = self.lookup(name);
        if self.lex.skip_unset && value.is_none() {
            return Ok(format!("${{{name}{written}{word}}}"));
        }
        let unset_or_null = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match modifier {
            '-' => Ok(if unset_or_null {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if unset_or_null { String::new() } else { word }),
            '?' => {
                if unset_or_null {
                    let message = if !word.is_empty() {
                        word
                    } else if value.is_none() {
                        "is not allowed to be unset".to_string()
                    } else {
                        "is not allowed to be empty".to_string()
                    };
                    return Err(ExpandErrorKind::Required {
                        name: name.to_string(),
                        message,
                    });
                }
                Ok(value.unwrap_or_default())
            }
            _ => {
                // `#`/`%` remove the shortest match, `##`/`%%` the longest.
                let longest = word.starts_with(modifier);
                if longest {
                    word.remove(0);
                }
                let pattern = compile(&word)?;
                let text: Vec<char> = value.unwrap_or_default().chars().collect();
                let kept: String = if modifier == '#' {
                    match pattern.match_prefix(&text, longest) {
                        Some(end) => text[end..].iter().collect(),
                        None => text.iter().collect(),
                    }
                } else {
                    match pattern.match_suffix(&text, longest) {
                        Some(start) => text[..start].iter().collect(),
                        None => text.iter().collect(),
                    }
                };
                Ok(kept)
            }
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`, after the first `/`.
    fn process_replace(&mut self, name: &str) -> Step<String> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let (pattern, _) = self.nested_until('/', true, ExpandErrorKind::MissingSlash)?;
        let (replacement, _) = self.nested_until('}', true, ExpandErrorKind::MissingBrace)?;
        let value = self.lookup(name);
        let Some(value) = value else {
            if self.lex.skip_unset {
                let slashes = if all { "//" } else { "/" };
                return Ok(format!("${{{name}{slashes}{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        let compiled = compile(&pattern)?;
        let text: Vec<char> = value.chars().collect();
        if !all {
            return Ok(match compiled.find(&text, 0) {
                Some((s, e)) => {
                    let mut out: String = text[..s].iter().collect();
                    out.push_str(&replacement);
                    out.extend(&text[e..]);
                    out
                }
                None => value,
            });
        }
        // Replace every non-overlapping match, left to right; an empty match right after
        // another match is not replaced, and the search always moves on by one character.
        let mut out = String::new();
        let (mut last_end, mut search) = (0usize, 0usize);
        while search <= text.len() {
            let Some((s, e)) = compiled.find(&text, search) else {
                break;
            };
            out.extend(&text[last_end..s]);
            if e > last_end || s == 0 {
                out.push_str(&replacement);
            }
            last_end = e;
            search = if search + 1 > e { search + 1 } else { e };
        }
        out.extend(&text[last_end.min(text.len())..]);
        Ok(out)
    }

    /// A nested word up to `stop`; running out of input gives `at_end` instead of the generic
    /// error.
    fn nested_until(
        &mut self,
        stop: char,
        raw_escapes: bool,
        at_end: ExpandErrorKind,
    ) -> Step<(String, Vec<String>)> {
        self.process_until(Some(stop), raw_escapes)
            .map_err(|e| if self.peek().is_none() { at_end } else { e })
    }

    /// A variable name: letters, digits and `_`; or a run of digits (a positional parameter);
    /// or one special parameter character.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_numeric() {
                while let Some(d) = self.peek().filter(|d| d.is_numeric()) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_param(c) {
                self.pos += 1;
                return c.to_string();
            }
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }
}

fn compile(pattern: &str) -> Step<Pattern> {
    Pattern::new(pattern).map_err(|source| ExpandErrorKind::InvalidPattern {
        pattern: pattern.to_string(),
        source,
    })
}

/// The POSIX special parameters.
fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

impl fmt::Display for Expansion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(&'static str, &'static str)> {
        vec![
            ("PWD", "/home"),
            ("SHELL", "bash"),
            ("NULL", ""),
            ("FOO", "foobarbaz"),
        ]
    }

    fn word(w: &str) -> Result<String, ExpandError> {
        Lex::new('\\').process_word(w, &vars())
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(word("he'll'o").unwrap(), "hello");
        assert_eq!(word(r#""a\"b\$c\\d\e""#).unwrap(), r#"a"b$c\d\e"#);
        assert_eq!(word(r"a\ b\").unwrap(), "a b");
        assert_eq!(word("'$PWD'").unwrap(), "$PWD");
        assert_eq!(
            word("'abc").unwrap_err().kind,
            ExpandErrorKind::UnterminatedSingleQuote
        );
        assert_eq!(
            word("\"abc").unwrap_err().kind,
            ExpandErrorKind::UnterminatedDoubleQuote
        );
    }

    #[test]
    fn backtick_escape() {
        let lex = Lex::new('`');
        assert_eq!(
            lex.process_word(r"c:\dir`$PWD", &vars()).unwrap(),
            r"c:\dir$PWD"
        );
        assert_eq!(lex.process_word(r#""a`"b""#, &vars()).unwrap(), r#"a"b"#);
    }

    #[test]
    fn defaults_and_alternatives() {
        assert_eq!(word("${X:-a}${NULL:-b}${PWD:-c}").unwrap(), "ab/home");
        assert_eq!(word("${X-a}${NULL-b}${PWD-c}").unwrap(), "a/home");
        assert_eq!(word("${X:+a}${NULL:+b}${PWD:+c}").unwrap(), "c");
        assert_eq!(word("${X+a}${NULL+b}${PWD+c}").unwrap(), "bc");
    }

    #[test]
    fn required_variables() {
        let e = word("${X:?need X}").unwrap_err();
        assert_eq!(
            e.kind,
            ExpandErrorKind::Required {
                name: "X".into(),
                message: "need X".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "failed to process \"${X:?need X}\": X: need X"
        );
        assert!(word("${NULL:?}").is_err());
        assert_eq!(word("${NULL?}").unwrap(), "");
        let e = word("${X?}").unwrap_err();
        assert_eq!(e.kind.to_string(), "X: is not allowed to be unset");
    }

    #[test]
    fn prefix_and_suffix_removal() {
        assert_eq!(word("${FOO#f*b}").unwrap(), "arbaz");
        assert_eq!(word("${FOO##f*b}").unwrap(), "az");
        assert_eq!(word("${FOO%b*}").unwrap(), "foobar");
        assert_eq!(word("${FOO%%b*}").unwrap(), "foo");
        assert_eq!(word("${FOO#[a-f]o}").unwrap(), "obarbaz");
        assert_eq!(word("${FOO%?}").unwrap(), "foobarba");
        assert!(word("${FOO:#x}").is_err());
        assert!(word("${FOO#\\x}").is_err());
    }

    #[test]
    fn replacement() {
        assert_eq!(word("${FOO/ba/fo}").unwrap(), "fooforbaz");
        assert_eq!(word("${FOO//ba/fo}").unwrap(), "fooforfoz");
        assert_eq!(word("${FOO//[ab]/_}").unwrap(), "foo__r__z");
        assert_eq!(word("${FOO/x/y}").unwrap(), "foobarbaz");
        assert_eq!(word("${X/a/b}").unwrap(), "");
        assert_eq!(word("${FOO///}").unwrap(), "foobarbaz");
        assert_eq!(
            word("${FOO//ww}").unwrap_err().kind,
            ExpandErrorKind::MissingSlash
        );
        let slashes = vec![("P", "/tmp/foo.txt")];
        assert_eq!(
            Lex::new('\\')
                .process_word(r"${P//\//\/}", &slashes)
                .unwrap(),
            r"\/tmp\/foo.txt"
        );
    }

    #[test]
    fn malformed_syntax() {
        for bad in [
            "${}", "${", "${a", "${a:-b", "${{a}", "${:}", "${.}", "${a:=b}", "${a/b",
        ] {
            assert!(word(bad).is_err(), "{bad} should fail");
        }
        assert_eq!(word("${a").unwrap_err().kind, ExpandErrorKind::MissingBrace);
        assert_eq!(
            word("${}").unwrap_err().kind,
            ExpandErrorKind::BadSubstitution
        );
        assert_eq!(word("x${}").unwrap_err().offset, 3);
    }

    #[test]
    fn tracks_referenced_variables() {
        let e = Lex::new('\\')
            .expand("$PWD ${X:-$SHELL} ${NULL} $1 ${Y/a/b}", &vars())
            .unwrap();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(e.matched, set(&["NULL", "PWD", "SHELL"]));
        assert_eq!(e.unmatched, set(&["1", "X", "Y"]));
    }

    #[test]
    fn splits_words() {
        let v = vec![("SP", "a  b")];
        let lex = Lex::new('\\');
        assert_eq!(
            lex.process_words("x${SP}y \"${SP}\" z\\ w", &v).unwrap(),
            ["xa", "by", "a  b", "z w"]
        );
    }

    #[test]
    fn raw_modes_keep_source_text() {
        let lex = Lex::new('\\')
            .raw_quotes(true)
            .raw_escapes(true)
            .skip_unset(true);
        let words = lex
            .process_words(r#"RUN <<"EOF" a\ b $X ${Y:-z}"#, &NoVars)
            .unwrap();
        assert_eq!(words, ["RUN", "<<\"EOF\"", r"a\ b", "$X", "${Y:-z}"]);
    }

    #[test]
    fn other_variable_containers() {
        let mut map = HashMap::new();
        map.insert("A".to_string(), "1".to_string());
        assert_eq!(Lex::default().process_word("$A", &map).unwrap(), "1");
        let mut tree = BTreeMap::new();
        tree.insert("A".to_string(), "2".to_string());
        assert_eq!(Lex::default().process_word("$A", &tree).unwrap(), "2");
        let list = vec![("A", "3"), ("A", "4")];
        assert_eq!(Lex::default().process_word("$A", &list).unwrap(), "4");
    }
}
