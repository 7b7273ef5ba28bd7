//! The S-expression dump of a syntax tree, as BuildKit's parser tests print it.
//!
//! One instruction a line: `(name ["--flag" ...] "arg" ...)`. Strings are quoted the way Go's
//! `strconv.Quote` does it, so the output can be compared with BuildKit's `result` files.

use super::ast::{Args, Dockerfile, KeyValue, Node, Separator};

/// Dumps every instruction of `dockerfile`, one per line, each line ending with `\n`.
pub fn dump(dockerfile: &Dockerfile) -> String {
    let mut out = String::new();
    for node in &dockerfile.instructions {
        out.push_str(&dump_node(node));
        out.push('\n');
    }
    out
}

/// Dumps one instruction: `(name ["--flag" ...] "arg" ...)`.
pub fn dump_node(node: &Node) -> String {
    let mut out = String::from("(");
    out.push_str(node.name());
    if !node.flags.is_empty() {
        let flags: Vec<String> = node.flags.iter().map(|f| go_quote(&f.raw)).collect();
        out.push_str(" [");
        out.push_str(&flags.join(" "));
        out.push(']');
    }
    dump_args(&node.args, &mut out);
    out.push(')');
    out
}

fn dump_args(args: &Args, out: &mut String) {
    let mut quoted = |s: &str| {
        out.push(' ');
        out.push_str(&go_quote(s));
    };
    match args {
        Args::Empty => {}
        Args::Exec(items) | Args::Words(items) => items.iter().for_each(|s| quoted(s)),
        Args::Shell(text) | Args::Text(text) => quoted(text),
        Args::KeyValues(pairs) => {
            for KeyValue {
                key,
                value,
                separator,
            } in pairs
            {
                quoted(key);
                quoted(value);
                quoted(match separator {
                    Separator::Equals => "=",
                    Separator::Space => "",
                });
            }
        }
        Args::Healthcheck { kind, command } => {
            quoted(kind);
            dump_args(command, out);
        }
        Args::Onbuild(inner) => {
            out.push(' ');
            out.push_str(&dump_node(inner));
        }
    }
}

/// Quotes `s` as Go's `strconv.Quote` does: `\"`, `\\`, the C escapes (`\a \b \f \n \r \t
/// \v`), `\xNN` for other ASCII control characters, `\uNNNN`/`\UNNNNNNNN` for other
/// non-printable characters; printable characters, non-ASCII ones included, are kept.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint` without Unicode tables: control characters,
/// white space other than the ASCII space, the format characters, private-use characters and
/// non-characters are not printable.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format = matches!(
        u,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    );
    let private_use = matches!(u, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD);
    let noncharacter = (0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE;
    !(format || private_use || noncharacter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("abc 123"), "\"abc 123\"");
        assert_eq!(go_quote("♥☃"), "\"♥☃\"");
        assert_eq!(
            go_quote("\" \\ / \u{8} \u{c} \n \r \t \0"),
            "\"\\\" \\\\ / \\b \\f \\n \\r \\t \\x00\""
        );
        assert_eq!(
            go_quote("\u{7f}\u{a0}\u{200b}\u{feff}"),
            "\"\\x7f\\u00a0\\u200b\\ufeff\""
        );
        assert_eq!(go_quote("\u{10ffff}"), "\"\\U0010ffff\"");
        assert_eq!(go_quote("한국어"), "\"한국어\"");
    }
}
