//! Parse errors, rendered like rustc's: location, source line with a caret, hint.

use std::fmt;

use thiserror::Error;

use super::ast::{Instruction, Span};
use crate::shell::ExpandError;

/// What is wrong with the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseErrorKind {
    /// A line starts with a word that is not an instruction.
    #[error("unknown instruction: {keyword}")]
    UnknownInstruction {
        /// The word, as written.
        keyword: String,
        /// The closest instruction name, when one is close enough.
        suggestion: Option<Instruction>,
        /// Whether the line directly follows another instruction, so it may be a forgotten
        /// line continuation.
        follows_instruction: bool,
    },
    /// A parser directive appears twice.
    #[error("only one {name} parser directive can be used")]
    DuplicateDirective {
        /// The directive.
        name: String,
    },
    /// `# escape=` with something other than a backslash or a backtick.
    #[error("invalid escape token '{value}' does not match ` or \\")]
    InvalidEscapeToken {
        /// The value given.
        value: String,
    },
    /// `# check=` with a value that does not parse.
    #[error("invalid check directive: {message}")]
    InvalidCheckDirective {
        /// What is wrong with it.
        message: String,
    },
    /// A JSON array with something other than strings in it.
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    JsonNotStringArray,
    /// The legacy `ENV key value` (or `LABEL`) form with no value.
    #[error("{instruction} must have two arguments")]
    MissingValue {
        /// `ENV` or `LABEL`.
        instruction: String,
    },
    /// A `key=value` list with an item that has no `=`.
    #[error("Syntax error - can't find = in {word:?}. Must be of the form: name=value")]
    MissingEquals {
        /// The item.
        word: String,
    },
    /// A here-document whose delimiter line never comes.
    #[error("unterminated heredoc {name}")]
    UnterminatedHeredoc {
        /// The delimiter that was expected.
        name: String,
    },
    /// A here-document delimiter that cannot be read.
    #[error("invalid heredoc delimiter: {0}")]
    InvalidHeredoc(Box<ExpandError>),
    /// Nothing but comments and blank lines.
    #[error("file with no instructions")]
    NoInstructions,
}

impl ParseErrorKind {
    /// A suggestion for fixing the error, when there is a useful one.
    pub fn hint(&self) -> Option<String> {
        match self {
            ParseErrorKind::UnknownInstruction {
                suggestion: Some(instruction),
                ..
            } => Some(format!(
                "did you mean {}?",
                instruction.as_str().to_ascii_uppercase()
            )),
            ParseErrorKind::UnknownInstruction {
                follows_instruction: true,
                ..
            } => Some(
                "if this line continues the instruction above, end that line with the escape \
                 character"
                    .to_string(),
            ),
            ParseErrorKind::UnknownInstruction { .. } => None,
            ParseErrorKind::DuplicateDirective { .. } => {
                Some("each parser directive may be given once, at the top of the file".to_string())
            }
            ParseErrorKind::InvalidEscapeToken { .. } => {
                Some("use `# escape=\\` or `# escape=``".to_string())
            }
            ParseErrorKind::InvalidCheckDirective { .. } => Some(
                "write `# check=skip=<checks|all>`, `# check=error=<bool>` or both, separated by `;`"
                    .to_string(),
            ),
            ParseErrorKind::JsonNotStringArray => {
                Some("quote every element, e.g. [\"echo\", \"1\"]".to_string())
            }
            ParseErrorKind::MissingValue { instruction } => {
                Some(format!("write `{instruction} key=value`"))
            }
            ParseErrorKind::MissingEquals { .. } => {
                Some("in the `key=value` form every item needs an `=`".to_string())
            }
            ParseErrorKind::UnterminatedHeredoc { name } => Some(format!(
                "end the here-document with a line that holds only `{name}`"
            )),
            ParseErrorKind::InvalidHeredoc(_) => None,
            ParseErrorKind::NoInstructions => {
                Some("a Dockerfile needs at least a FROM instruction".to_string())
            }
        }
    }
}

/// A Dockerfile that does not parse, with where and why.
///
/// `Display` renders it like a compiler diagnostic:
///
/// ```text
/// Dockerfile:3:1: unknown instruction: COPPY
///   |
/// 3 | COPPY . /app
///   | ^^^^^
///   = hint: did you mean COPY?
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// Where.
    pub span: Span,
    /// How many characters the fault covers on its line (at least 1).
    pub width: usize,
    /// The text of the line `span.line` (empty when there is none, e.g. an empty file).
    pub source_line: String,
}

impl ParseError {
    /// The hint, if any.
    pub fn hint(&self) -> Option<String> {
        self.kind.hint()
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.kind)
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        render(
            f,
            &self.span,
            &self.kind,
            self.width,
            &self.source_line,
            self.hint().as_deref(),
        )
    }
}

/// Renders a diagnostic like rustc: `file:line:column: message`, then the source line with a
/// caret under the `width` characters at the span's column, then the hint.
pub(crate) fn render(
    f: &mut fmt::Formatter<'_>,
    span: &Span,
    message: &dyn fmt::Display,
    width: usize,
    source_line: &str,
    hint: Option<&str>,
) -> fmt::Result {
    write!(f, "{span}: {message}")?;
    let gutter = " ".repeat(span.line.to_string().len());
    if !source_line.is_empty() || span.column > 1 {
        // Tabs are shown as four spaces, on the source line and under it alike.
        let shown = source_line.replace('\t', "    ");
        let before: usize = source_line
            .chars()
            .take(span.column.saturating_sub(1))
            .map(|c| if c == '\t' { 4 } else { 1 })
            .sum();
        let remaining = source_line
            .chars()
            .count()
            .saturating_sub(span.column.saturating_sub(1));
        let width = width.min(remaining).max(1);
        write!(f, "\n{gutter} |")?;
        write!(f, "\n{} | {}", span.line, shown.trim_end())?;
        write!(
            f,
            "\n{gutter} | {}{}",
            " ".repeat(before),
            "^".repeat(width)
        )?;
    }
    if let Some(hint) = hint {
        write!(f, "\n{gutter} = hint: {hint}")?;
    }
    Ok(())
}

/// The instruction closest to `word` by edit distance, if it is close enough to be a typo.
pub(crate) fn suggest_instruction(word: &str) -> Option<Instruction> {
    let lower = word.to_lowercase();
    let limit = (lower.chars().count() / 3).max(1);
    Instruction::ALL
        .into_iter()
        .map(|i| (edit_distance(&lower, i.as_str()), i))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, i)| i)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and transpositions
/// of adjacent characters each cost one.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn suggestions() {
        assert_eq!(suggest_instruction("COPPY"), Some(Instruction::Copy));
        assert_eq!(suggest_instruction("FORM"), Some(Instruction::From));
        assert_eq!(suggest_instruction("rn"), Some(Instruction::Run));
        assert_eq!(suggest_instruction("WROKDIR"), Some(Instruction::Workdir));
        assert_eq!(suggest_instruction("apt-get"), None);
        assert_eq!(suggest_instruction("&&"), None);
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn renders_with_caret_under_tabs() {
        let err = ParseError {
            kind: ParseErrorKind::JsonNotStringArray,
            span: Span {
                file: Arc::from("Dockerfile"),
                line: 12,
                column: 5,
                end_line: 12,
            },
            width: 3,
            source_line: "CMD\t[1]".to_string(),
        };
        let text = err.to_string();
        assert_eq!(
            text,
            "Dockerfile:12:5: when using JSON array syntax, arrays must be comprised of strings only\n   |\n12 | CMD    [1]\n   |        ^^^\n   = hint: quote every element, e.g. [\"echo\", \"1\"]"
        );
    }
}
