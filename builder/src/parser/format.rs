//! Printing a syntax tree back as Dockerfile text.
//!
//! The output parses to a tree with the same dump: directives first, then each instruction on
//! one line (continuations joined, word lists separated by one space, exec forms as compact
//! JSON), the comments above it, and here-document bodies after it. Where the plain form would
//! read differently, white space the parser ignores keeps it apart: a vertical tab ends a line
//! whose text ends with the escape character, or separates words that would read as JSON.

use super::ast::{Args, Dockerfile, Heredoc, Instruction, Node, Separator};
use super::json::{JsonArgs, parse_json_args};
use super::scan::{directive_parts, trim_continuation};

/// The whole file as text.
pub fn format_dockerfile(dockerfile: &Dockerfile) -> String {
    let mut out = String::new();
    for d in &dockerfile.directives {
        out.push_str(&format!("# {}={}\n", d.name, d.value));
    }
    // A blank line ends the directives, so no comment below can be read as one.
    let first_comment_looks_like_directive = dockerfile
        .instructions
        .first()
        .and_then(|n| n.comments.first())
        .is_some_and(|c| directive_parts(&format!("# {c}")).is_some());
    if !dockerfile.directives.is_empty() || first_comment_looks_like_directive {
        out.push('\n');
    }
    for node in &dockerfile.instructions {
        for comment in &node.comments {
            out.push_str("# ");
            out.push_str(comment);
            out.push('\n');
        }
        let line = format_node(node);
        out.push_str(&line);
        // Text that ends with the escape character (after a carriage return, say, or continued
        // up to the end of the file) would read as continued: a vertical tab after it is not
        // space or tab, so the line does not continue, and it is trimmed from the arguments.
        if !trim_continuation(&line, dockerfile.escape).1 {
            out.push('\u{b}');
        }
        out.push('\n');
        for heredoc in heredocs(node) {
            out.push_str(&heredoc.content);
            if !heredoc.content.is_empty() && !heredoc.content.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&heredoc.name);
            out.push('\n');
        }
    }
    out
}

/// The here-documents of a node, or of the instruction an `ONBUILD` wraps.
fn heredocs(node: &Node) -> &[Heredoc] {
    match &node.args {
        Args::Onbuild(inner) => &inner.heredocs,
        _ => &node.heredocs,
    }
}

/// One instruction on one line, without its here-document bodies.
pub fn format_node(node: &Node) -> String {
    let mut out = node.keyword.clone();
    for flag in &node.flags {
        out.push(' ');
        out.push_str(&flag.raw);
    }
    let mut args = format_args(&node.args);
    // `ADD`, `COPY` and `VOLUME` words that read as a JSON array once joined with spaces (`[`
    // and `]`) are kept apart with a vertical tab instead: it separates words but is not JSON
    // white space.
    if let Args::Words(words) = &node.args
        && matches!(
            node.instruction,
            Instruction::Add | Instruction::Copy | Instruction::Volume
        )
        && words.len() > 1
        && parse_json_args(&args) != JsonArgs::NotJson
    {
        args = words.join("\u{b}");
    }
    if !args.is_empty() {
        // Arguments that start with `--` would be read as flags without the separator.
        if args.starts_with("--") {
            out.push_str(" --");
        }
        out.push(' ');
        out.push_str(&args);
    }
    out
}

fn format_args(args: &Args) -> String {
    match args {
        Args::Empty => String::new(),
        Args::Exec(items) => {
            let items: Vec<String> = items.iter().map(|s| json_quote(s)).collect();
            format!("[{}]", items.join(", "))
        }
        Args::Shell(text) | Args::Text(text) => text.clone(),
        Args::Words(words) => words.join(" "),
        Args::KeyValues(pairs) => pairs
            .iter()
            .map(|kv| match kv.separator {
                Separator::Equals => format!("{}={}", kv.key, kv.value),
                // A key ending with an escape character escapes one space after it (`\ ` is
                // part of a word): a second one still ends the key.
                Separator::Space if kv.key.ends_with(['\\', '`']) => {
                    format!("{}  {}", kv.key, kv.value)
                }
                Separator::Space => format!("{} {}", kv.key, kv.value),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Args::Healthcheck { kind, command } => {
            let command = format_args(command);
            if command.is_empty() {
                kind.clone()
            } else {
                format!("{kind} {command}")
            }
        }
        Args::Onbuild(inner) => format_node(inner),
    }
}

/// A JSON string literal.
pub(crate) fn json_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
