//! Dockerfile text to a syntax tree, as BuildKit's `frontend/dockerfile/parser` reads it.
//!
//! [`parse`] takes the text and a file name (used only in locations) and returns a
//! [`Dockerfile`] or a [`ParseError`]. It does no I/O.
//!
//! What it understands:
//! - parser directives `# syntax=`, `# escape=` (`\` or `` ` ``) and `# check=` at the top of
//!   the file, before any instruction, comment or blank line; keys are case-insensitive and
//!   each may appear once;
//! - comments (`#` first on a line), and line continuations with the escape character,
//!   including comment and blank lines inside a continued instruction (blank ones give a
//!   `NoEmptyContinuation` warning) and a continuation on the last line;
//! - `--name[=value]` flags at the start of every instruction's arguments;
//! - the exec (JSON array) form of `RUN`, `CMD`, `ENTRYPOINT`, `SHELL`, `COPY`, `ADD`,
//!   `VOLUME` and `HEALTHCHECK CMD`, falling back to the shell form (or a word list) when the
//!   text is not valid JSON, exactly as BuildKit does;
//! - `ENV`/`LABEL` pairs (`k=v ...` or the legacy `k v`), `ARG` words, `FROM image AS name`,
//!   `HEALTHCHECK NONE|CMD`, `ONBUILD <instruction>`, `MAINTAINER` and the rest;
//! - here-documents on `RUN`, `COPY` and `ADD` (also under `ONBUILD`): `<<EOF`, `<<-EOF`
//!   (leading tabs stripped), `<<"EOF"`/`<<'EOF'` (no expansion), `2<<EOF`, several on one
//!   line, their bodies following in order.
//!
//! An unknown instruction is an error at its location. Arguments are kept as written: quotes
//! and variables are resolved later by [`crate::shell`].
//!
//! [`dump`] prints the tree in BuildKit's S-expression test format; [`format_dockerfile`]
//! prints it back as Dockerfile text; the tree implements `serde::Serialize` for JSON output.

mod ast;
mod dump;
mod error;
mod format;
mod json;
mod scan;

use std::sync::Arc;

pub use ast::{
    Args, CheckOptions, Directive, Dockerfile, Flag, Heredoc, Instruction, KeyValue, Node,
    Separator, Span, Warning,
};
pub use dump::{dump, dump_node, go_quote};
pub use error::{ParseError, ParseErrorKind};
pub(crate) use error::{edit_distance, render as render_diagnostic};
pub use format::{format_dockerfile, format_node};

use error::suggest_instruction;
use json::{JsonArgs, parse_json_args};
use scan::{
    directive_parts, extract_flags, heredoc_markers, is_comment, is_space, leading_space,
    parse_words, split_command, split_token_space, trim_continuation, trim_newline,
};

/// Parses `source`, naming it `file` in locations and errors.
pub fn parse(source: &str, file: &str) -> Result<Dockerfile, ParseError> {
    Parser::new(source, file).run()
}

/// The default escape character.
pub const DEFAULT_ESCAPE: char = '\\';

/// An instruction's text with its continuation lines joined, and where each piece came from.
#[derive(Default)]
struct Logical {
    text: String,
    segments: Vec<Segment>,
}

/// A piece of a [`Logical`] line: it starts at byte `at` of the joined text, and at byte `col`
/// of source line `line`.
struct Segment {
    at: usize,
    line: usize,
    col: usize,
}

impl Logical {
    fn push(&mut self, piece: &str, line: usize, col: usize) {
        self.segments.push(Segment {
            at: self.text.len(),
            line,
            col,
        });
        self.text.push_str(piece);
    }
}

struct Parser<'a> {
    file: Arc<str>,
    /// The source lines, each with its line ending; the byte order mark is removed.
    lines: Vec<&'a str>,
    /// The index of the next line to read.
    next: usize,
    escape: char,
    directives_done: bool,
    directives: Vec<Directive>,
    check: CheckOptions,
    warnings: Vec<Warning>,
}

impl<'a> Parser<'a> {
    fn new(source: &'a str, file: &str) -> Self {
        let source = source.strip_prefix('\u{feff}').unwrap_or(source);
        Parser {
            file: Arc::from(file),
            lines: source.split_inclusive('\n').collect(),
            next: 0,
            escape: DEFAULT_ESCAPE,
            directives_done: false,
            directives: Vec::new(),
            check: CheckOptions::default(),
            warnings: Vec::new(),
        }
    }

    /// The text of line `number` (from 1), without its line ending.
    fn line_text(&self, number: usize) -> &'a str {
        number
            .checked_sub(1)
            .and_then(|i| self.lines.get(i))
            .map_or("", |l| trim_newline(l))
    }

    /// Reads the next source line: its number and its text without the line ending.
    fn read_line(&mut self) -> Option<(usize, &'a str)> {
        let line = self.lines.get(self.next)?;
        self.next += 1;
        Some((self.next, trim_newline(line)))
    }

    fn run(mut self) -> Result<Dockerfile, ParseError> {
        let mut instructions: Vec<Node> = Vec::new();
        let mut comments: Vec<String> = Vec::new();
        while let Some((start_line, text)) = self.read_line() {
            if is_comment(text) {
                let comment = text.trim_start_matches(is_space)[1..].trim();
                if comment.is_empty() {
                    comments.clear();
                } else {
                    comments.push(comment.to_string());
                }
            }
            let lead = leading_space(text);
            let token = &text[lead..];
            if self.directive(token, start_line, lead)? {
                comments.pop();
            }
            let token = if is_comment(token) { "" } else { token };
            let (first, mut ends) = trim_continuation(token, self.escape);
            if ends && first.is_empty() {
                continue;
            }

            let mut logical = Logical::default();
            logical.push(first, start_line, lead);
            let mut empty_line = None;
            while !ends {
                let Some((number, text)) = self.read_line() else {
                    break;
                };
                if is_comment(text) {
                    continue;
                }
                if text.trim_start_matches(is_space).is_empty() {
                    empty_line.get_or_insert(number);
                    continue;
                }
                let (piece, e) = trim_continuation(text, self.escape);
                logical.push(piece, number, 0);
                ends = e;
            }
            let end_line = self.next;
            // A lone continuation with nothing after it is not an instruction.
            if logical.text.trim_matches(is_space).is_empty() {
                continue;
            }
            if let Some(line) = empty_line {
                self.warnings.push(Warning {
                    rule: "NoEmptyContinuation".to_string(),
                    message: format!("Empty continuation line found in: {}", logical.text),
                    url: "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/"
                        .to_string(),
                    span: self.span(line, 1, line),
                });
            }

            let follows_instruction = instructions
                .last()
                .is_some_and(|n| n.span.end_line + 1 == start_line);
            let context = NodeContext {
                end_line,
                follows_instruction,
            };
            let mut node = self.node(&logical, 0, context)?;
            node.comments = std::mem::take(&mut comments);
            self.read_heredocs(&mut node, &logical)?;
            instructions.push(node);
        }

        if instructions.is_empty() {
            let line = self.lines.len().max(1);
            return Err(self.error(ParseErrorKind::NoInstructions, line, 1, 1));
        }
        Ok(Dockerfile {
            directives: self.directives,
            instructions,
            warnings: self.warnings,
            escape: self.escape,
            check: self.check,
        })
    }

    /// Handles a possible parser directive (`token` is the line without leading white space).
    /// Returns whether the line was one.
    fn directive(&mut self, token: &str, line: usize, lead: usize) -> Result<bool, ParseError> {
        if self.directives_done {
            return Ok(false);
        }
        let Some((name, value, value_at)) = directive_parts(token) else {
            self.directives_done = true;
            return Ok(false);
        };
        let key = name.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.directives_done = true;
            return Ok(false);
        }
        let column = |byte: usize| self.line_text(line)[..lead + byte].chars().count() + 1;
        if self.directives.iter().any(|d| d.name == key) {
            let kind = ParseErrorKind::DuplicateDirective { name: key };
            return Err(self.error(kind, line, lead + 1, token.chars().count()));
        }
        let value_column = column(value_at);
        let width = value.chars().count();
        match key.as_str() {
            "escape" => match value {
                "\\" => self.escape = '\\',
                "`" => self.escape = '`',
                _ => {
                    let kind = ParseErrorKind::InvalidEscapeToken {
                        value: value.to_string(),
                    };
                    return Err(self.error(kind, line, value_column, width));
                }
            },
            "check" => {
                self.check = parse_check_options(value).map_err(|message| {
                    let kind = ParseErrorKind::InvalidCheckDirective { message };
                    self.error(kind, line, value_column, width)
                })?;
            }
            _ => {}
        }
        self.directives.push(Directive {
            name: key,
            value: value.to_string(),
            span: self.span(line, lead + 1, line),
        });
        Ok(true)
    }

    fn span(&self, line: usize, column: usize, end_line: usize) -> Span {
        Span {
            file: self.file.clone(),
            line,
            column,
            end_line,
        }
    }

    fn error(&self, kind: ParseErrorKind, line: usize, column: usize, width: usize) -> ParseError {
        ParseError {
            kind,
            span: self.span(line, column, line),
            width: width.max(1),
            source_line: self.line_text(line).to_string(),
        }
    }

    /// The source line and column of byte `offset` of a logical line.
    fn position(&self, logical: &Logical, offset: usize) -> (usize, usize) {
        let Some(segment) = logical
            .segments
            .iter()
            .rev()
            .find(|s| s.at <= offset)
            .or(logical.segments.first())
        else {
            return (1, 1);
        };
        let text = self.line_text(segment.line);
        let mut byte = (segment.col + offset.saturating_sub(segment.at)).min(text.len());
        while !text.is_char_boundary(byte) {
            byte -= 1;
        }
        (segment.line, text[..byte].chars().count() + 1)
    }

    fn span_at(&self, logical: &Logical, offset: usize, end_line: usize) -> Span {
        let (line, column) = self.position(logical, offset);
        self.span(line, column, end_line)
    }

    fn error_at(
        &self,
        logical: &Logical,
        offset: usize,
        width: usize,
        kind: ParseErrorKind,
    ) -> ParseError {
        let (line, column) = self.position(logical, offset);
        self.error(kind, line, column, width)
    }

    /// Builds the node for the instruction that starts at byte `from` of `logical`.
    fn node(
        &self,
        logical: &Logical,
        from: usize,
        context: NodeContext,
    ) -> Result<Node, ParseError> {
        let line = &logical.text[from..];
        let (kw_start, kw_end, rest_start) = split_command(line);
        let keyword = &line[kw_start..kw_end];
        let instruction: Instruction = keyword.parse().map_err(|()| {
            let kind = ParseErrorKind::UnknownInstruction {
                keyword: keyword.to_string(),
                suggestion: suggest_instruction(keyword),
                follows_instruction: context.follows_instruction,
            };
            self.error_at(logical, from + kw_start, keyword.chars().count(), kind)
        })?;

        let rest_at = from + rest_start.min(line.len());
        let rest = logical.text[rest_at..].trim_end_matches(is_space);
        let (raw_flags, args_start) = extract_flags(rest);
        let flags = raw_flags
            .into_iter()
            .map(|f| {
                let body = f.text.strip_prefix("--").unwrap_or(&f.text);
                let (name, value) = match body.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (body.to_string(), None),
                };
                Flag {
                    name,
                    value,
                    raw: rest[f.start..f.end].to_string(),
                    span: self.span_at(logical, rest_at + f.start, context.end_line),
                }
            })
            .collect();
        let args_text = &rest[args_start..];
        let args_at = rest_at + args_start + leading_space(args_text);
        let args_text = args_text.trim_matches(is_space);
        let args = self.args(instruction, args_text, args_at, logical, context)?;

        let original = if from == 0 {
            line.to_string()
        } else {
            line.trim_end_matches(is_space).to_string()
        };
        Ok(Node {
            instruction,
            keyword: keyword.to_string(),
            flags,
            args,
            heredocs: Vec::new(),
            original,
            comments: Vec::new(),
            span: self.span_at(logical, from + kw_start, context.end_line),
        })
    }

    /// Parses the arguments `text`, found at byte `at` of `logical`, for `instruction`.
    fn args(
        &self,
        instruction: Instruction,
        text: &str,
        at: usize,
        logical: &Logical,
        context: NodeContext,
    ) -> Result<Args, ParseError> {
        let width = text.chars().count();
        let json_error = || self.error_at(logical, at, width, ParseErrorKind::JsonNotStringArray);
        let words = |text: &str| {
            let words: Vec<String> = split_token_space(text)
                .into_iter()
                .map(|(_, w)| w.to_string())
                .collect();
            if words.is_empty() {
                Args::Empty
            } else {
                Args::Words(words)
            }
        };
        // RUN, CMD, ENTRYPOINT, SHELL and HEALTHCHECK CMD: exec form or the whole text.
        let maybe_json = |text: &str| {
            if text.is_empty() {
                return Ok(Args::Empty);
            }
            match parse_json_args(text) {
                JsonArgs::Strings(items) => Ok(Args::Exec(items)),
                JsonArgs::NotStrings => Err(json_error()),
                JsonArgs::NotJson => Ok(Args::Shell(text.to_string())),
            }
        };
        match instruction {
            Instruction::Add | Instruction::Copy | Instruction::Volume => {
                match parse_json_args(text) {
                    JsonArgs::Strings(items) => Ok(Args::Exec(items)),
                    JsonArgs::NotStrings => Err(json_error()),
                    JsonArgs::NotJson => Ok(words(text)),
                }
            }
            Instruction::Cmd | Instruction::Entrypoint | Instruction::Run | Instruction::Shell => {
                maybe_json(text)
            }
            Instruction::Expose | Instruction::From => Ok(words(text)),
            Instruction::Arg => {
                let words: Vec<String> = parse_words(text, self.escape)
                    .into_iter()
                    .map(|(_, w)| w)
                    .collect();
                Ok(if words.is_empty() {
                    Args::Empty
                } else {
                    Args::Words(words)
                })
            }
            Instruction::Env | Instruction::Label => {
                self.key_values(instruction, text, at, logical)
            }
            Instruction::Maintainer
            | Instruction::Stopsignal
            | Instruction::User
            | Instruction::Workdir => Ok(if text.is_empty() {
                Args::Empty
            } else {
                Args::Text(text.to_string())
            }),
            Instruction::Healthcheck => {
                if text.is_empty() {
                    return Ok(Args::Empty);
                }
                let sep = text.find(is_space).unwrap_or(text.len());
                let command_start = sep + leading_space(&text[sep..]);
                Ok(Args::Healthcheck {
                    kind: text[..sep].to_string(),
                    command: Box::new(maybe_json(&text[command_start..])?),
                })
            }
            Instruction::Onbuild => {
                if text.is_empty() {
                    return Ok(Args::Empty);
                }
                let inner = NodeContext {
                    follows_instruction: false,
                    ..context
                };
                Ok(Args::Onbuild(Box::new(self.node(logical, at, inner)?)))
            }
        }
    }

    /// `ENV`/`LABEL` arguments: `k=v ...` pairs, or the legacy `k v` (one pair, the value being
    /// the rest of the line).
    fn key_values(
        &self,
        instruction: Instruction,
        text: &str,
        at: usize,
        logical: &Logical,
    ) -> Result<Args, ParseError> {
        let words = parse_words(text, self.escape);
        let Some((_, first)) = words.first() else {
            return Ok(Args::Empty);
        };
        if !first.contains('=') {
            let key_end = text.find(scan::is_token_space);
            let Some(key_end) = key_end else {
                let kind = ParseErrorKind::MissingValue {
                    instruction: instruction.as_str().to_ascii_uppercase(),
                };
                return Err(self.error_at(logical, at, text.chars().count(), kind));
            };
            let value = text[key_end..].trim_start_matches(scan::is_token_space);
            return Ok(Args::KeyValues(vec![KeyValue {
                key: text[..key_end].to_string(),
                value: value.to_string(),
                separator: Separator::Space,
            }]));
        }
        let mut pairs = Vec::with_capacity(words.len());
        for (offset, word) in words {
            let Some((key, value)) = word.split_once('=') else {
                let width = word.chars().count();
                let kind = ParseErrorKind::MissingEquals { word };
                return Err(self.error_at(logical, at + offset, width, kind));
            };
            pairs.push(KeyValue {
                key: key.to_string(),
                value: value.to_string(),
                separator: Separator::Equals,
            });
        }
        Ok(Args::KeyValues(pairs))
    }

    /// Reads the bodies of the here-documents that `node` opens, from the lines that follow.
    fn read_heredocs(&mut self, node: &mut Node, logical: &Logical) -> Result<(), ParseError> {
        let target = match &node.args {
            Args::Onbuild(inner) => inner.as_ref(),
            _ => &*node,
        };
        if !target.instruction.takes_heredocs()
            || target.args.is_exec()
            || !logical.text.contains("<<")
        {
            return Ok(());
        }
        let markers = heredoc_markers(&logical.text).map_err(|e| {
            let width = logical.text.chars().count();
            self.error_at(
                logical,
                0,
                width,
                ParseErrorKind::InvalidHeredoc(Box::new(e)),
            )
        })?;
        if markers.is_empty() {
            return Ok(());
        }
        let mut cursor = 0;
        let mut heredocs = Vec::with_capacity(markers.len());
        for marker in markers {
            let at = match logical.text[cursor..].find(&marker.word) {
                Some(i) => {
                    cursor += i + marker.word.len();
                    cursor - marker.word.len()
                }
                None => 0,
            };
            let (line, column) = self.position(logical, at);
            let mut content = String::new();
            let mut terminated = false;
            while let Some(raw) = self.lines.get(self.next) {
                self.next += 1;
                let body = if marker.chomp {
                    raw.trim_start_matches('\t')
                } else {
                    raw
                };
                if trim_newline(body) == marker.name {
                    terminated = true;
                    break;
                }
                content.push_str(body);
            }
            if !terminated {
                let kind = ParseErrorKind::UnterminatedHeredoc { name: marker.name };
                return Err(self.error(kind, line, column, marker.word.chars().count()));
            }
            heredocs.push(Heredoc {
                name: marker.name,
                file_descriptor: marker.file_descriptor,
                expand: marker.expand,
                chomp: marker.chomp,
                content,
                span: self.span(line, column, self.next),
            });
        }
        let end_line = self.next;
        node.span.end_line = end_line;
        match &mut node.args {
            Args::Onbuild(inner) => {
                inner.heredocs = heredocs;
                inner.span.end_line = end_line;
            }
            _ => node.heredocs = heredocs,
        }
        Ok(())
    }
}

/// What a node needs to know about its surroundings.
#[derive(Debug, Clone, Copy)]
struct NodeContext {
    /// The last line of the instruction.
    end_line: usize,
    /// Whether the instruction starts right below the previous one.
    follows_instruction: bool,
}

/// Parses the value of a `check` directive (or of the `BUILDKIT_DOCKERFILE_CHECK` build
/// argument): `skip=<checks|all>`, `error=<bool>` and `experimental=<checks|all>`, separated by
/// `;`.
pub fn parse_check_options(value: &str) -> Result<CheckOptions, String> {
    let mut options = CheckOptions::default();
    let value = value.trim();
    if value.is_empty() {
        return Ok(options);
    }
    for part in value.splitn(3, ';') {
        let Some((key, v)) = part.split_once('=') else {
            return Err(format!("invalid check option {part:?}"));
        };
        match key.trim() {
            "skip" => {
                let v = v.trim();
                if v == "all" {
                    options.skip_all = true;
                } else {
                    options.skip = v.split(',').map(|s| s.trim().to_string()).collect();
                }
            }
            "experimental" => {
                let v = v.trim();
                if v == "all" {
                    options.experimental_all = true;
                } else {
                    options.experimental = v.split(',').map(|s| s.trim().to_string()).collect();
                }
            }
            "error" => {
                options.error = match v.trim() {
                    "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
                    "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
                    _ => return Err(format!("failed to parse check option {part:?}")),
                };
            }
            other => return Err(format!("invalid check option {other:?}")),
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests;
