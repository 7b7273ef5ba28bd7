//! Shell patterns (globs) as used by the `${v#p}`, `${v%p}` and `${v/p/r}` modifiers.
//!
//! A pattern is made of literal characters, `?` (any one character), `*` (any run of
//! characters, possibly empty) and bracket expressions `[...]` (`[abc]`, `[a-z]`, negated with
//! `[!...]` or `[^...]`). A backslash makes the next character literal; as in BuildKit, `\}` and
//! `\/` stand for `}` and `/` (they had to be escaped to appear inside `${...}`), and escaping a
//! letter, a digit, white space or nothing at all is an error. A `[` without a closing `]` is
//! a literal `[`.
//!
//! Matching works on characters, not bytes, so multi-byte text is never split.

use thiserror::Error;

/// A pattern that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternError {
    /// A backslash at the very end of the pattern.
    #[error("trailing escape character")]
    TrailingEscape,
    /// A backslash before a character that cannot be escaped.
    #[error("invalid escape '\\{0}'")]
    InvalidEscape(char),
}

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Matches exactly this character.
    Literal(char),
    /// `?`: any single character.
    AnyChar,
    /// `*`: any run of characters.
    Star,
    /// `[...]`: one character from (or, if negated, not from) the set.
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ClassItem {
    Char(char),
    Range(char, char),
}

impl Token {
    /// Whether this single-character token accepts `c`. Never called for [`Token::Star`].
    fn accepts(&self, c: char) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::AnyChar => true,
            Token::Star => true,
            Token::Class { negated, items } => {
                let hit = items.iter().any(|item| match item {
                    ClassItem::Char(x) => *x == c,
                    ClassItem::Range(lo, hi) => *lo <= c && c <= *hi,
                });
                hit != *negated
            }
        }
    }
}

/// A compiled shell pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Result<Self, PatternError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '*' => {
                    // Consecutive stars match the same as one.
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::AnyChar);
                    i += 1;
                }
                '\\' => {
                    let next = *chars.get(i + 1).ok_or(PatternError::TrailingEscape)?;
                    if next.is_alphanumeric() || next.is_whitespace() {
                        return Err(PatternError::InvalidEscape(next));
                    }
                    tokens.push(Token::Literal(next));
                    i += 2;
                }
                '[' => match parse_class(&chars, i) {
                    Some((token, next)) => {
                        tokens.push(token);
                        i = next;
                    }
                    None => {
                        tokens.push(Token::Literal('['));
                        i += 1;
                    }
                },
                _ => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Ok(Pattern { tokens })
    }

    /// Whether the pattern matches all of `text`.
    pub fn matches(&self, text: &[char]) -> bool {
        // Iterative wildcard matching: remember the last star and retry from it with one
        // more character consumed whenever a later token fails.
        let tokens = &self.tokens;
        let (mut t, mut p) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if p < tokens.len() && tokens[p] == Token::Star {
                star = Some((p, t));
                p += 1;
            } else if p < tokens.len() && tokens[p].accepts(text[t]) {
                p += 1;
                t += 1;
            } else if let Some((sp, st)) = star {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        tokens[p..].iter().all(|tok| *tok == Token::Star)
    }

    /// The shortest (or, with `longest`, the longest) prefix of `text` matched by the pattern,
    /// as a number of characters.
    pub fn match_prefix(&self, text: &[char], longest: bool) -> Option<usize> {
        let mut ends: Box<dyn Iterator<Item = usize>> = if longest {
            Box::new((0..=text.len()).rev())
        } else {
            Box::new(0..=text.len())
        };
        ends.find(|&end| self.matches(&text[..end]))
    }

    /// The start of the shortest (or, with `longest`, the longest) suffix of `text` matched
    /// by the pattern.
    pub fn match_suffix(&self, text: &[char], longest: bool) -> Option<usize> {
        let mut starts: Box<dyn Iterator<Item = usize>> = if longest {
            Box::new(0..=text.len())
        } else {
            Box::new((0..=text.len()).rev())
        };
        starts.find(|&start| self.matches(&text[start..]))
    }

    /// The leftmost match in `text` at or after `from`, longest at that position, as a
    /// half-open range of character indices.
    pub fn find(&self, text: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=text.len()).find_map(|start| {
            (start..=text.len())
                .rev()
                .find(|&end| self.matches(&text[start..end]))
                .map(|end| (start, end))
        })
    }
}

/// Parses a bracket expression starting at `chars[open]` (a `[`). Returns the token and the
/// index after the closing `]`, or `None` if there is no closing `]`.
fn parse_class(chars: &[char], open: usize) -> Option<(Token, usize)> {
    let mut i = open + 1;
    let negated = matches!(chars.get(i), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Token::Class { negated, items }, i + 1));
        }
        first = false;
        let (lo, after) = if c == '\\' {
            (*chars.get(i + 1)?, i + 2)
        } else {
            (c, i + 1)
        };
        // A range `a-z`, unless the `-` is the last character before `]`.
        if chars.get(after) == Some(&'-') && chars.get(after + 1).is_some_and(|&h| h != ']') {
            let (hi, next) = if chars[after + 1] == '\\' {
                (*chars.get(after + 2)?, after + 3)
            } else {
                (chars[after + 1], after + 2)
            };
            items.push(ClassItem::Range(lo, hi));
            i = next;
        } else {
            items.push(ClassItem::Char(lo));
            i = after;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    fn full(p: &str, t: &str) -> bool {
        Pattern::new(p)
            .map(|p| p.matches(&chars(t)))
            .unwrap_or(false)
    }

    #[test]
    fn literals_and_wildcards() {
        assert!(full("abc", "abc"));
        assert!(!full("abc", "abcd"));
        assert!(full("a?c", "abc"));
        assert!(full("a*", "a"));
        assert!(full("a*", "abcdef"));
        assert!(full("*x*y", "xxy"));
        assert!(!full("*x*y", "xxyx"));
        assert!(full("", ""));
        assert!(!full("", "a"));
        assert!(full("**", ""));
    }

    #[test]
    fn bracket_expressions() {
        assert!(full("[abc]", "b"));
        assert!(!full("[abc]", "d"));
        assert!(full("[a-z]x", "qx"));
        assert!(full("[!a-z]", "Q"));
        assert!(full("[^a-z]", "1"));
        assert!(!full("[!a-z]", "q"));
        assert!(full("[]a]", "]"));
        assert!(full("[a-]", "-"));
        // No closing bracket: the `[` is literal.
        assert!(full("[]", "[]"));
        assert!(full("a[b", "a[b"));
    }

    #[test]
    fn escapes() {
        assert!(full("\\*", "*"));
        assert!(!full("\\*", "x"));
        assert!(full("\\?\\\\", "?\\"));
        assert!(full("\\}\\/", "}/"));
        assert!(full("\\[a]", "[a]"));
        assert_eq!(Pattern::new("\\"), Err(PatternError::TrailingEscape));
        assert_eq!(Pattern::new("\\x"), Err(PatternError::InvalidEscape('x')));
    }

    #[test]
    fn prefix_suffix_and_find() {
        let p = Pattern::new("f*b").unwrap();
        let text = chars("foobarbaz");
        assert_eq!(p.match_prefix(&text, false), Some(4));
        assert_eq!(p.match_prefix(&text, true), Some(7));
        let s = Pattern::new("b*").unwrap();
        assert_eq!(s.match_suffix(&text, false), Some(6));
        assert_eq!(s.match_suffix(&text, true), Some(3));
        let f = Pattern::new("ba").unwrap();
        assert_eq!(f.find(&text, 0), Some((3, 5)));
        assert_eq!(f.find(&text, 4), Some((6, 8)));
        assert_eq!(f.find(&chars("xyz"), 0), None);
    }

    #[test]
    fn unicode_is_matched_by_character() {
        let p = Pattern::new("?녕*").unwrap();
        assert!(p.matches(&chars("안녕하세요")));
    }
}
