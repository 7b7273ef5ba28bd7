//! The findings of a check, printed as `docker build --check` prints them.

use std::fmt::{self, Write as _};

use super::Linter;
use crate::parser::Warning;

/// The outcome of a check: the findings sorted by file and line, and the source they point
/// into.
///
/// It prints (with `Display`) what `docker buildx build --check` prints on standard output: a
/// summary line, then each finding with its rule, documentation link, message and the source
/// lines around it, the lines of the instruction marked with `>>>`:
///
/// ```text
/// Check complete, 1 warning has been found!
///
/// WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/
/// 'as' and 'FROM' keywords' casing do not match
/// Dockerfile:1
/// --------------------
///    1 | >>> FROM alpine as base
///    2 |     RUN true
///    3 |
/// --------------------
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    source: String,
    warnings: Vec<Warning>,
    error: bool,
}

impl Report {
    /// The report of `linter`'s findings in `source`, the text the Dockerfile was parsed from.
    pub fn new(linter: Linter, source: impl Into<String>) -> Self {
        let error = linter.is_error();
        let mut warnings = linter.into_warnings();
        // Stable: findings on one line keep the order they were reported in.
        warnings.sort_by(|a, b| (&a.span.file, a.span.line).cmp(&(&b.span.file, b.span.line)));
        Report {
            source: source.into(),
            warnings,
            error,
        }
    }

    /// The findings, sorted by file and line.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Whether the findings fail the build: `# check=error=true` and at least one finding.
    pub fn is_error(&self) -> bool {
        self.error
    }

    /// BuildKit's error when the findings fail the build: `lint violation found for rules: A,
    /// B`, each rule once, in the order of their first finding.
    pub fn error_message(&self) -> Option<String> {
        if !self.error {
            return None;
        }
        let mut rules: Vec<&str> = Vec::new();
        for w in &self.warnings {
            if !rules.contains(&w.rule.as_str()) {
                rules.push(&w.rule);
            }
        }
        Some(format!(
            "lint violation found for rules: {}",
            rules.join(", ")
        ))
    }

    /// The summary line: `Check complete, no warnings found.`, `Check complete, 1 warning has
    /// been found!` or `Check complete, N warnings have been found!`.
    pub fn summary(&self) -> String {
        match self.warnings.len() {
            0 => "Check complete, no warnings found.".to_string(),
            1 => "Check complete, 1 warning has been found!".to_string(),
            n => format!("Check complete, {n} warnings have been found!"),
        }
    }

    /// One finding as buildx prints it: a blank line, `WARNING: <rule> - <url>`, the message,
    /// then the source excerpt.
    pub fn render_warning(&self, warning: &Warning) -> String {
        let mut out = String::new();
        out.push_str("\nWARNING: ");
        out.push_str(&warning.rule);
        if !warning.url.is_empty() {
            out.push_str(" - ");
            out.push_str(&warning.url);
        }
        out.push('\n');
        out.push_str(&warning.message);
        out.push('\n');
        excerpt(
            &mut out,
            &warning.span.file,
            &self.source,
            warning.span.line,
            warning.span.end_line,
        );
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        for warning in &self.warnings {
            f.write_str(&self.render_warning(warning))?;
        }
        Ok(())
    }
}

/// The lines `start..=end` of `source` with context, as BuildKit prints a source location: the
/// file and first line, a rule, each line numbered and the located ones marked `>>>`, a rule.
/// One located line gets two lines of context on each side, several get one; the context
/// shifts to the other side at the start or end of the file. Nothing is printed for a line
/// outside the file.
fn excerpt(out: &mut String, file: &str, source: &str, start: usize, end: usize) {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    // As BuildKit splits the source: text after the last line ending is one more (empty) line.
    let lines: Vec<&str> = source.split('\n').collect();
    let count = lines.len();
    if start < 1 || start > count {
        return;
    }
    let located = start..=end.max(start);
    let (mut first, mut last) = (start, end.max(start).min(count));
    let pad = if first == last { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if first > 1 {
            first -= 1;
            p += 1;
        }
        if last != count {
            last += 1;
            p += 1;
        }
        p += 1;
    }
    let _ = writeln!(out, "{file}:{start}");
    out.push_str("--------------------\n");
    for (i, line) in lines.iter().enumerate().take(last).skip(first - 1) {
        let number = i + 1;
        let marker = if located.contains(&number) {
            ">>>"
        } else {
            "   "
        };
        let _ = writeln!(
            out,
            " {number:>3} | {marker} {}",
            line.strip_suffix('\r').unwrap_or(line)
        );
    }
    out.push_str("--------------------\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, start: usize, end: usize) -> String {
        let mut out = String::new();
        excerpt(&mut out, "Dockerfile", source, start, end);
        out
    }

    #[test]
    fn one_line_gets_two_lines_of_context_each_side() {
        let source = "a\nb\nc\nd\ne\nf\ng\n";
        assert_eq!(
            render(source, 4, 4),
            "Dockerfile:4\n--------------------\n   2 |     b\n   3 |     c\n   4 | >>> d\n   5 |     e\n   6 |     f\n--------------------\n"
        );
    }

    #[test]
    fn context_moves_to_the_other_side_at_the_start() {
        let source = "a\nb\nc\nd\ne\n";
        assert_eq!(
            render(source, 1, 1),
            "Dockerfile:1\n--------------------\n   1 | >>> a\n   2 |     b\n   3 |     c\n--------------------\n"
        );
    }

    #[test]
    fn several_lines_get_one_line_of_context() {
        let source = "a\nb\nc\nd\ne\n";
        assert_eq!(
            render(source, 2, 3),
            "Dockerfile:2\n--------------------\n   1 |     a\n   2 | >>> b\n   3 | >>> c\n   4 |     d\n--------------------\n"
        );
    }

    #[test]
    fn the_empty_text_after_the_last_newline_is_a_line() {
        assert_eq!(
            render("FROM a\nCMD x\n", 2, 2),
            "Dockerfile:2\n--------------------\n   1 |     FROM a\n   2 | >>> CMD x\n   3 |     \n--------------------\n"
        );
        assert_eq!(render("FROM a\n", 9, 9), "");
    }
}
