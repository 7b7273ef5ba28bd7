//! Line-level scanning: continuations, comments, directives, the instruction keyword, builder
//! flags, quoted words and here-document markers.
//!
//! Every function here works on text and byte offsets into it; turning offsets into lines and
//! columns is the caller's business.

use crate::shell::{ExpandError, Lex, NoVars};

/// White space as Go's `unicode.IsSpace` sees it (the same set as Rust's `char::is_whitespace`).
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// The separators BuildKit's `[\t\v\f\r ]+` regular expression knows.
pub(crate) fn is_token_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Removes the line ending (every trailing `\r` and `\n`).
pub(crate) fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// The number of bytes of leading white space.
pub(crate) fn leading_space(text: &str) -> usize {
    text.len() - text.trim_start_matches(is_space).len()
}

/// Whether the line is a comment: `#` after optional white space.
pub(crate) fn is_comment(line: &str) -> bool {
    line.trim_start_matches(is_space).starts_with('#')
}

/// Removes a line continuation (the escape character, then only blanks and tabs, at the end of
/// the line). Returns the remaining text and whether the instruction ends on this line.
///
/// As in BuildKit, an escape character preceded by another escape character is not a
/// continuation.
pub(crate) fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (line, true);
    };
    if before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}

/// A `# name = value` parser directive line, already stripped of leading white space:
/// `(name as written, value, byte offset of the value)`.
pub(crate) fn directive_parts(line: &str) -> Option<(&str, &str, usize)> {
    // Go's `\s` is [\t\n\f\r ].
    let ws = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let rest = line.strip_prefix('#')?;
    let rest = rest.trim_start_matches(ws);
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let rest = rest.trim_start_matches(ws).strip_prefix('=')?;
    let value = rest.trim_start_matches(ws).trim_end_matches(ws);
    if value.is_empty() {
        return None;
    }
    let offset = line.len() - rest.trim_start_matches(ws).len();
    Some((name, value, offset))
}

/// The keyword and the rest of an instruction line: `(keyword start, keyword end, rest start)`
/// as byte offsets into `line`; `rest start` is past the separating white space.
pub(crate) fn split_command(line: &str) -> (usize, usize, usize) {
    let start = leading_space(line);
    let body = line[start..].trim_end_matches(is_space);
    let kw_len = body.find(is_token_space).unwrap_or(body.len());
    let after = &body[kw_len..];
    let rest = kw_len + (after.len() - after.trim_start_matches(is_token_space).len());
    (start, start + kw_len, start + rest)
}

/// A builder flag found by [`extract_flags`], with offsets into the scanned text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawFlag {
    pub start: usize,
    pub end: usize,
    /// The flag with quotes and backslash escapes resolved (`--name=value`).
    pub text: String,
}

/// Reads the `--flag` words at the start of `text`. Returns the flags and the byte offset where
/// the arguments start (past a `--` separator, if any).
///
/// Quotes group and are removed, a backslash makes the next character literal, and a word
/// `--` ends the flags without being one.
pub(crate) fn extract_flags(text: &str) -> (Vec<RawFlag>, usize) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut chars = text.char_indices().peekable();
    let mut flags = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut word_start = 0;
    loop {
        let Some((pos, mut c)) = chars.next() else {
            if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
                flags.push(RawFlag {
                    start: word_start,
                    end: text.len(),
                    text: word,
                });
            }
            return (flags, text.len());
        };
        match phase {
            Phase::Spaces => {
                if is_space(c) {
                    continue;
                }
                if c != '-' || chars.peek().map(|&(_, n)| n) != Some('-') {
                    return (flags, pos);
                }
                // The first `-` of the word.
                phase = Phase::Word;
                word_start = pos;
                word.push(c);
            }
            Phase::Word => {
                if is_space(c) {
                    phase = Phase::Spaces;
                    if word == "--" {
                        return (flags, pos);
                    }
                    if blank_ok || !word.is_empty() {
                        flags.push(RawFlag {
                            start: word_start,
                            end: pos,
                            text: std::mem::take(&mut word),
                        });
                    }
                    word.clear();
                    blank_ok = false;
                    continue;
                }
                if c == '\'' || c == '"' {
                    phase = Phase::Quote(c);
                    blank_ok = true;
                    continue;
                }
                if c == '\\' {
                    match chars.next() {
                        Some((_, n)) => c = n,
                        None => continue,
                    }
                }
                word.push(c);
            }
            Phase::Quote(q) => {
                if c == q {
                    phase = Phase::Word;
                    continue;
                }
                if c == '\\' {
                    match chars.next() {
                        Some((_, n)) => c = n,
                        None => {
                            phase = Phase::Word;
                            continue;
                        }
                    }
                }
                word.push(c);
            }
        }
    }
}

/// Splits `text` into words the way `ENV`, `LABEL` and `ARG` do: white space separates words,
/// quotes group them, and quotes and escape characters are kept in the words. Returns each word
/// with its byte offset.
pub(crate) fn parse_words(text: &str, escape: char) -> Vec<(usize, String)> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut start = 0;
    let mut i = 0;
    while let Some(&(pos, c)) = chars.get(i) {
        i += 1;
        match phase {
            Phase::Spaces => {
                if !is_space(c) {
                    phase = Phase::Word;
                    start = pos;
                    i -= 1;
                }
            }
            Phase::Word => {
                if is_space(c) {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push((start, std::mem::take(&mut word)));
                    }
                    blank_ok = false;
                    continue;
                }
                if c == '\'' || c == '"' {
                    phase = Phase::Quote(c);
                    blank_ok = true;
                }
                if c == escape {
                    // An escape at the very end is dropped; otherwise it and the next character
                    // are kept, even if that character is a quote.
                    let Some(&(_, next)) = chars.get(i) else {
                        continue;
                    };
                    word.push(c);
                    word.push(next);
                    i += 1;
                    continue;
                }
                word.push(c);
            }
            Phase::Quote(q) => {
                if c == q {
                    phase = Phase::Word;
                }
                // Inside single quotes the escape character is an ordinary character.
                if c == escape && q != '\'' {
                    let Some(&(_, next)) = chars.get(i) else {
                        phase = Phase::Word;
                        continue;
                    };
                    word.push(c);
                    word.push(next);
                    i += 1;
                    continue;
                }
                word.push(c);
            }
        }
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push((start, word));
    }
    words
}

/// Splits on runs of BuildKit's separator set (`[\t\v\f\r ]+`), with byte offsets.
pub(crate) fn split_token_space(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        match (is_token_space(c), start) {
            (true, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

/// A here-document marker found in an instruction line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeredocMarker {
    /// The marker word as it appears on the line (`<<"EOF"`).
    pub word: String,
    pub name: String,
    pub file_descriptor: u32,
    pub expand: bool,
    pub chomp: bool,
}

/// The here-document markers in an instruction line, in order.
///
/// The line is split into words with quotes and escapes kept and unset variables left as
/// written; every word of the form `[fd]<<[-]WORD` opens a here-document.
pub(crate) fn heredoc_markers(line: &str) -> Result<Vec<HeredocMarker>, ExpandError> {
    // Words keep their quotes and escapes and variables are not expanded, so a marker's `<<`
    // is on the line as written.
    if !line.contains("<<") {
        return Ok(Vec::new());
    }
    let lex = Lex::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset(true);
    // A line that does not split cleanly (say, an unbalanced quote) has no here-documents.
    let words = lex.process_words(line, &NoVars).unwrap_or_default();
    let mut markers = Vec::new();
    for word in words {
        if let Some(marker) = heredoc_marker(&word)? {
            markers.push(marker);
        }
    }
    Ok(markers)
}

/// Reads one `[fd]<<[-]WORD` marker.
fn heredoc_marker(word: &str) -> Result<Option<HeredocMarker>, ExpandError> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, after),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let lex = Lex::new('\\').skip_unset(true);
    let words = lex.process_words(rest, &NoVars)?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    let raw = lex.raw_quotes(true).process_words(rest, &NoVars)?;
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    // Quoting any part of the delimiter turns expansion off.
    let expand = raw.len() == 1 && quotes(name) == quotes(&raw[0]);
    Ok(Some(HeredocMarker {
        word: word.to_string(),
        name: name.clone(),
        file_descriptor: word[..digits].parse().unwrap_or(0),
        expand,
        chomp,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\ \t", '\\'), ("a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\", true));
        assert_eq!(trim_continuation("a`", '`'), ("a", false));
        assert_eq!(trim_continuation("a\\", '`'), ("a\\", true));
        assert_eq!(trim_continuation("abc", '\\'), ("abc", true));
    }

    #[test]
    fn directives() {
        assert_eq!(directive_parts("# escape=`"), Some(("escape", "`", 9)));
        assert_eq!(
            directive_parts("#\tSyntax = a/b:1  "),
            Some(("Syntax", "a/b:1", 11))
        );
        assert_eq!(
            directive_parts("# check=skip=A,B"),
            Some(("check", "skip=A,B", 8))
        );
        assert_eq!(directive_parts("# escape="), None);
        assert_eq!(directive_parts("# not a directive"), None);
        assert_eq!(directive_parts("# 1x=y"), None);
        assert_eq!(directive_parts("FROM x"), None);
    }

    #[test]
    fn command_split() {
        let line = "  RUN \t echo hi  ";
        let (s, e, r) = split_command(line);
        assert_eq!(&line[s..e], "RUN");
        assert_eq!(&line[r..], "echo hi  ");
        let (s, e, r) = split_command("CMD");
        assert_eq!((s, e, r), (0, 3, 3));
    }

    #[test]
    fn flags() {
        let text = "--from=build --chown=\"a b\" --link -- src dst";
        let (flags, rest) = extract_flags(text);
        let texts: Vec<&str> = flags.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(texts, ["--from=build", "--chown=a b", "--link"]);
        assert_eq!(&text[flags[1].start..flags[1].end], "--chown=\"a b\"");
        assert_eq!(&text[rest..], " src dst");
        let (flags, rest) = extract_flags("-x --y");
        assert!(flags.is_empty());
        assert_eq!(rest, 0);
        let (flags, rest) = extract_flags("--doit --");
        assert_eq!(flags.len(), 1);
        assert_eq!(rest, 9);
    }

    #[test]
    fn words() {
        let words: Vec<String> = parse_words(r#"a="b c" d\ e 'f\g' "h\"i" j"#, '\\')
            .into_iter()
            .map(|(_, w)| w)
            .collect();
        assert_eq!(words, [r#"a="b c""#, r"d\ e", r"'f\g'", r#""h\"i""#, "j"]);
        // In single quotes the escape character is literal, so this quote closes early.
        assert_eq!(parse_words(r"'f\'g' h", '\\').len(), 1);
        assert_eq!(
            parse_words("x=\"unterminated", '\\')[0].1,
            "x=\"unterminated"
        );
        assert_eq!(parse_words("  k=v", '\\'), vec![(2, "k=v".to_string())]);
    }

    #[test]
    fn heredoc_marker_forms() {
        let m = heredoc_markers("RUN <<EOF cat").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].name.as_str(), m[0].expand, m[0].chomp),
            ("EOF", true, false)
        );
        let m = heredoc_markers("RUN <<-'E O' 2<<\"X\"").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].name.as_str(), m[0].expand, m[0].chomp),
            ("E O", false, true)
        );
        assert_eq!((m[1].name.as_str(), m[1].file_descriptor), ("X", 2));
        assert!(heredoc_markers("RUN echo a<<b").unwrap().is_empty());
        assert!(heredoc_markers("RUN echo '<<EOF").unwrap().is_empty());
        assert!(heredoc_markers("RUN <<< x").unwrap().is_empty());
    }
}
