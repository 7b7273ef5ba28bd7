//! The patterns of the cluster query language's `=~` and `!~` operators.
//!
//! ECS documents them as Java regular expressions matched against the whole value
//! (`Pattern.matches`), so `attribute:ecs.instance-type =~ t2.*` selects every t2 instance and
//! `t2` alone selects only a type named exactly `t2`. This is the subset of that syntax that
//! instance attributes need, matched by backtracking over characters:
//!
//! - literals, and `\` escapes of any punctuation (`\.`, `\*`, `\-`);
//! - `.` (any character), character classes `[abc]`, `[a-z0-9]`, `[^-]`, and `\d`, `\w`, `\s`
//!   with their capitals;
//! - groups `( )` and `(?: )`, alternation `|`;
//! - quantifiers `*`, `+`, `?`, `{n}`, `{n,}`, `{n,m}`, greedy, and their lazy forms (`*?`),
//!   which match the same strings under whole-value matching;
//! - `^` and `$`, which can only match at the ends of the value.
//!
//! A pattern outside that subset (a lookaround, a backreference, a dangling `*`) is an error
//! naming its offset in the pattern.
//!
//! Patterns come from users of the control plane, and nested quantifiers (`(a*)*b`) make
//! backtracking exponential in the length of the value. A match therefore has a budget of
//! [`STEP_BUDGET`] steps; a match that would take more counts as no match.

use std::cell::Cell;
use std::fmt;

/// The most atoms a single match may try before it gives up and reports no match.
pub(crate) const STEP_BUDGET: usize = 200_000;

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    root: Alternation,
}

/// Why a pattern does not compile, with the character offset in the pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternError {
    pub(crate) offset: usize,
    pub(crate) message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Alternation(Vec<Sequence>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sequence(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    atom: Atom,
    min: u32,
    max: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    Literal(char),
    Any,
    Class {
        items: Vec<ClassItem>,
        negated: bool,
    },
    Group(Alternation),
    Start,
    End,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ClassItem {
    Range(char, char),
    Digit(bool),
    Word(bool),
    Space(bool),
}

impl ClassItem {
    fn matches(&self, c: char) -> bool {
        match *self {
            ClassItem::Range(low, high) => (low..=high).contains(&c),
            ClassItem::Digit(positive) => c.is_ascii_digit() == positive,
            ClassItem::Word(positive) => (c.is_ascii_alphanumeric() || c == '_') == positive,
            ClassItem::Space(positive) => {
                matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r') == positive
            }
        }
    }
}

impl Pattern {
    /// Compiles `source`.
    pub(crate) fn new(source: &str) -> Result<Pattern, PatternError> {
        let mut parser = Parser {
            chars: source.chars().collect(),
            pos: 0,
        };
        let root = parser.alternation()?;
        if parser.pos < parser.chars.len() {
            return Err(parser.error("unmatched closing ')'"));
        }
        Ok(Pattern { root })
    }

    /// Whether the pattern matches the whole of `text`.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let input = Input {
            text: &chars,
            budget: Cell::new(STEP_BUDGET),
        };
        match_alternation(&self.root, &input, 0, &|end| end == chars.len())
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn error(&self, message: &str) -> PatternError {
        PatternError {
            offset: self.pos,
            message: message.to_owned(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn alternation(&mut self) -> Result<Alternation, PatternError> {
        let mut branches = vec![self.sequence()?];
        while self.eat('|') {
            branches.push(self.sequence()?);
        }
        Ok(Alternation(branches))
    }

    fn sequence(&mut self) -> Result<Sequence, PatternError> {
        let mut pieces = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            let (min, max) = self.quantifier()?;
            if (min, max) != (1, Some(1)) && matches!(atom, Atom::Start | Atom::End) {
                return Err(self.error("an anchor cannot be repeated"));
            }
            pieces.push(Piece { atom, min, max });
        }
        Ok(Sequence(pieces))
    }

    fn atom(&mut self) -> Result<Atom, PatternError> {
        let Some(c) = self.peek() else {
            return Err(self.error("the pattern ends too early"));
        };
        match c {
            '*' | '+' | '?' | '{' => Err(self.error(&format!("dangling meta character '{c}'"))),
            '(' => {
                self.pos += 1;
                if self.eat('?') && !self.eat(':') {
                    return Err(
                        self.error("only non-capturing groups '(?:' are supported after '(?'")
                    );
                }
                let inner = self.alternation()?;
                if !self.eat(')') {
                    return Err(self.error("unclosed group"));
                }
                Ok(Atom::Group(inner))
            }
            '[' => {
                self.pos += 1;
                self.class()
            }
            '.' => {
                self.pos += 1;
                Ok(Atom::Any)
            }
            '^' => {
                self.pos += 1;
                Ok(Atom::Start)
            }
            '$' => {
                self.pos += 1;
                Ok(Atom::End)
            }
            '\\' => {
                self.pos += 1;
                match self.escape()? {
                    ClassItem::Range(low, _) => Ok(Atom::Literal(low)),
                    shorthand => Ok(Atom::Class {
                        items: vec![shorthand],
                        negated: false,
                    }),
                }
            }
            _ => {
                self.pos += 1;
                Ok(Atom::Literal(c))
            }
        }
    }

    /// After a `\`: a literal (as a one-character range) or a shorthand class.
    fn escape(&mut self) -> Result<ClassItem, PatternError> {
        let Some(c) = self.peek() else {
            return Err(self.error("a trailing '\\' escapes nothing"));
        };
        self.pos += 1;
        Ok(match c {
            'd' => ClassItem::Digit(true),
            'D' => ClassItem::Digit(false),
            'w' => ClassItem::Word(true),
            'W' => ClassItem::Word(false),
            's' => ClassItem::Space(true),
            'S' => ClassItem::Space(false),
            't' => ClassItem::Range('\t', '\t'),
            'n' => ClassItem::Range('\n', '\n'),
            c if c.is_ascii_alphanumeric() => {
                self.pos -= 1;
                return Err(self.error(&format!("unsupported escape '\\{c}'")));
            }
            c => ClassItem::Range(c, c),
        })
    }

    fn class(&mut self) -> Result<Atom, PatternError> {
        let negated = self.eat('^');
        let mut items = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error("unclosed character class"));
            };
            if c == ']' && !first {
                self.pos += 1;
                break;
            }
            first = false;
            self.pos += 1;
            let low = match c {
                '\\' => match self.escape()? {
                    ClassItem::Range(low, _) => low,
                    shorthand => {
                        items.push(shorthand);
                        continue;
                    }
                },
                '[' => return Err(self.error("nested character classes are not supported")),
                c => c,
            };
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&n| n != ']') {
                self.pos += 1;
                let high = match self.peek() {
                    Some('\\') => {
                        self.pos += 1;
                        match self.escape()? {
                            ClassItem::Range(high, _) => high,
                            _ => return Err(self.error("a range cannot end with a class")),
                        }
                    }
                    Some(high) => {
                        self.pos += 1;
                        high
                    }
                    None => return Err(self.error("unclosed character class")),
                };
                if high < low {
                    return Err(self.error(&format!("illegal character range {low}-{high}")));
                }
                items.push(ClassItem::Range(low, high));
            } else {
                items.push(ClassItem::Range(low, low));
            }
        }
        Ok(Atom::Class { items, negated })
    }

    fn quantifier(&mut self) -> Result<(u32, Option<u32>), PatternError> {
        let bounds = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                let open = self.pos;
                self.pos += 1;
                let min = self
                    .number()
                    .ok_or_else(|| self.error("expected a number after '{'"))?;
                let max = if self.eat(',') {
                    if self.peek() == Some('}') {
                        None
                    } else {
                        Some(
                            self.number()
                                .ok_or_else(|| self.error("expected a number after ','"))?,
                        )
                    }
                } else {
                    Some(min)
                };
                if self.peek() != Some('}') {
                    return Err(self.error("unclosed repetition '{'"));
                }
                if max.is_some_and(|max| max < min) {
                    self.pos = open;
                    return Err(self.error("a repetition's maximum is below its minimum"));
                }
                (min, max)
            }
            _ => return Ok((1, Some(1))),
        };
        self.pos += 1;
        // Lazy and possessive forms match the same whole values.
        if !self.eat('?') {
            self.eat('+');
        }
        if matches!(self.peek(), Some('*' | '+' | '?' | '{')) {
            return Err(self.error(&format!(
                "dangling meta character '{}'",
                self.peek().unwrap_or('*')
            )));
        }
        Ok(bounds)
    }

    fn number(&mut self) -> Option<u32> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.chars[start..self.pos]
            .iter()
            .collect::<String>()
            .parse()
            .ok()
    }
}

/// The value being matched, and the steps left.
struct Input<'a> {
    text: &'a [char],
    budget: Cell<usize>,
}

impl Input<'_> {
    /// Takes one step; false once the budget is spent.
    fn step(&self) -> bool {
        let left = self.budget.get();
        if left == 0 {
            return false;
        }
        self.budget.set(left - 1);
        true
    }
}

type Continuation<'a> = &'a dyn Fn(usize) -> bool;

fn match_alternation(
    alternation: &Alternation,
    input: &Input<'_>,
    at: usize,
    next: Continuation<'_>,
) -> bool {
    alternation
        .0
        .iter()
        .any(|sequence| match_sequence(&sequence.0, input, at, next))
}

fn match_sequence(pieces: &[Piece], input: &Input<'_>, at: usize, next: Continuation<'_>) -> bool {
    match pieces.split_first() {
        None => next(at),
        Some((piece, rest)) => match_piece(piece, 0, input, at, &|end| {
            match_sequence(rest, input, end, next)
        }),
    }
}

/// Matches `piece` having matched it `count` times already: greedily one more time, then, if
/// that fails, stopping here.
fn match_piece(
    piece: &Piece,
    count: u32,
    input: &Input<'_>,
    at: usize,
    next: Continuation<'_>,
) -> bool {
    let may_repeat = piece.max.is_none_or(|max| count < max);
    if may_repeat
        && match_atom(&piece.atom, input, at, &|end| {
            // An iteration that consumes nothing cannot lead anywhere new, except to reach
            // the minimum count.
            (end != at || count < piece.min) && match_piece(piece, count + 1, input, end, next)
        })
    {
        return true;
    }
    count >= piece.min && next(at)
}

fn match_atom(atom: &Atom, input: &Input<'_>, at: usize, next: Continuation<'_>) -> bool {
    if !input.step() {
        return false;
    }
    let text = input.text;
    match atom {
        Atom::Literal(c) => text.get(at) == Some(c) && next(at + 1),
        Atom::Any => at < text.len() && next(at + 1),
        Atom::Class { items, negated } => {
            text.get(at)
                .is_some_and(|&c| items.iter().any(|item| item.matches(c)) != *negated)
                && next(at + 1)
        }
        Atom::Group(inner) => match_alternation(inner, input, at, next),
        Atom::Start => at == 0 && next(at),
        Atom::End => at == text.len() && next(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        Pattern::new(pattern).unwrap().matches(text)
    }

    #[test]
    fn dot_star_is_the_wildcard() {
        assert!(matches("t2.*", "t2.small"));
        assert!(matches("t2.*", "t2.micro"));
        assert!(matches("t2.*", "t2"));
        assert!(!matches("t2.*", "m5.large"));
        assert!(!matches("t2.*", "xt2.small"), "the whole value must match");
        assert!(matches(".*large", "m5.2xlarge"));
        assert!(matches("g2.*", "g2.2xlarge"));
        assert!(matches("us-east-1.*", "us-east-1a"));
    }

    #[test]
    fn whole_value_semantics() {
        assert!(matches("t2", "t2"));
        assert!(!matches("t2", "t2.small"));
        assert!(matches("^t2\\.small$", "t2.small"));
        assert!(!matches("t2\\.small", "t2xsmall"));
        assert!(
            matches("t2.small", "t2xsmall"),
            "an unescaped dot is any character"
        );
    }

    #[test]
    fn classes_groups_and_quantifiers() {
        assert!(matches("(t2|t3)\\.(micro|small)", "t3.micro"));
        assert!(!matches("(t2|t3)\\.(micro|small)", "t3.large"));
        assert!(matches("(?:m5|c5)\\..+", "c5.xlarge"));
        assert!(matches("us-east-1[a-c]", "us-east-1b"));
        assert!(!matches("us-east-1[a-c]", "us-east-1d"));
        assert!(matches("[^-]+-[0-9]+", "web-12"));
        assert!(matches("m\\d\\.\\w+", "m5.large"));
        assert!(matches("a{2,3}", "aaa"));
        assert!(!matches("a{2,3}", "aaaa"));
        assert!(matches("a{2}b?", "aa"));
        assert!(matches("a{2,}", "aaaaa"));
        assert!(matches("(a|ab)(c|bcd)(d*)", "abcd"));
        assert!(matches("(a*)*b", "aaab"));
        assert!(!matches("(a*)*b", "aaaa"));
        assert!(matches("x.*?y", "x123y"));
        assert!(matches("[a\\-z]+", "a-z"));
        assert!(matches("[-a]+", "-a-"));
        assert!(matches("(a?){2}", ""));
    }

    #[test]
    fn catastrophic_patterns_give_up_instead_of_hanging() {
        let pattern = Pattern::new("(a*)*b").unwrap();
        let value = "a".repeat(128);
        let started = std::time::Instant::now();
        assert!(!pattern.matches(&value));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // The budget does not get in the way of ordinary matches on long values.
        assert!(Pattern::new("a*b").unwrap().matches(&format!("{value}b")));
        assert!(
            Pattern::new(".*-prod-.*")
                .unwrap()
                .matches(&format!("{value}-prod-{value}"))
        );
    }

    #[test]
    fn errors_name_the_offset() {
        for (pattern, offset, message) in [
            ("*.large", 0, "dangling meta character '*'"),
            ("t2.**", 4, "dangling meta character '*'"),
            ("(t2|t3", 6, "unclosed group"),
            ("t2)", 2, "unmatched closing ')'"),
            ("[a-", 3, "unclosed character class"),
            ("[z-a]", 4, "illegal character range z-a"),
            ("a{3,1}", 1, "a repetition's maximum is below its minimum"),
            (
                "(?=x)",
                2,
                "only non-capturing groups '(?:' are supported after '(?'",
            ),
            ("\\1", 1, "unsupported escape '\\1'"),
            ("a\\", 2, "a trailing '\\' escapes nothing"),
        ] {
            let error = Pattern::new(pattern).unwrap_err();
            assert_eq!(
                (error.offset, error.message.as_str()),
                (offset, message),
                "{pattern}"
            );
        }
    }
}
