//! The exec form: deciding whether arguments are a JSON array of strings.
//!
//! The rules follow BuildKit, which decodes the arguments with Go's `encoding/json` into a list
//! of arbitrary values:
//! - not starting with `[`, or not valid JSON (trailing text included): not JSON, the
//!   instruction falls back to its shell (or word list) form;
//! - valid JSON with a number too large for a float64: Go reports a type error, which BuildKit
//!   also treats as not JSON;
//! - a valid array with anything but strings in it: an error;
//! - otherwise the strings. Go's decoding details are kept: `\u` escapes of lone surrogates
//!   decode to U+FFFD, nesting deeper than 10000 levels is invalid.

/// The result of looking at an instruction's arguments as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonArgs {
    /// Not a JSON array: use the non-JSON form.
    NotJson,
    /// A JSON array with a non-string element.
    NotStrings,
    /// A JSON array of strings.
    Strings(Vec<String>),
}

/// Go's `encoding/json` nesting limit.
const MAX_DEPTH: usize = 10_000;

/// Classifies `text` (the instruction's arguments).
pub(crate) fn parse_json_args(text: &str) -> JsonArgs {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('[') {
        return JsonArgs::NotJson;
    }
    let mut reader = Reader {
        bytes: trimmed.as_bytes(),
        text: trimmed,
        pos: 0,
        overflow: false,
    };
    match reader.top_level() {
        Some(elements) if !reader.overflow => {
            match elements.into_iter().collect::<Option<Vec<_>>>() {
                Some(strings) => JsonArgs::Strings(strings),
                None => JsonArgs::NotStrings,
            }
        }
        _ => JsonArgs::NotJson,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    /// A number did not fit a float64.
    overflow: bool,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Some(())
        } else {
            None
        }
    }

    /// The top-level array: each element as `Some(string)`, or `None` for a non-string.
    fn top_level(&mut self) -> Option<Vec<Option<String>>> {
        self.ws();
        self.eat(b'[')?;
        let mut elements = Vec::new();
        self.ws();
        if self.eat(b']').is_none() {
            loop {
                self.ws();
                if self.peek() == Some(b'"') {
                    elements.push(Some(self.string()?));
                } else {
                    self.skip_value(1)?;
                    elements.push(None);
                }
                self.ws();
                match self.peek()? {
                    b',' => self.pos += 1,
                    b']' => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.ws();
        (self.pos == self.bytes.len()).then_some(elements)
    }

    /// Validates one value of any kind, without recursion.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        let mut stack: Vec<u8> = Vec::new();
        loop {
            // A value is expected here.
            self.ws();
            match self.peek()? {
                b'"' => {
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal("true")?,
                b'f' => self.literal("false")?,
                b'n' => self.literal("null")?,
                open @ (b'[' | b'{') => {
                    self.pos += 1;
                    self.ws();
                    let close = if open == b'[' { b']' } else { b'}' };
                    if self.eat(close).is_none() {
                        stack.push(open);
                        if depth + stack.len() > MAX_DEPTH {
                            return None;
                        }
                        if open == b'{' {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                _ => return None,
            }
            // After a value: close containers until one continues with `,`.
            loop {
                let Some(&top) = stack.last() else {
                    return Some(());
                };
                self.ws();
                match (self.peek()?, top) {
                    (b',', _) => {
                        self.pos += 1;
                        if top == b'{' {
                            self.member_key()?;
                        }
                        break;
                    }
                    (b']', b'[') | (b'}', b'{') => {
                        self.pos += 1;
                        stack.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// `"key" :` inside an object.
    fn member_key(&mut self) -> Option<()> {
        self.ws();
        if self.peek() != Some(b'"') {
            return None;
        }
        self.string()?;
        self.ws();
        self.eat(b':')
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Option<()> {
        let start = self.pos;
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        let value: f64 = self.text[start..self.pos].parse().ok()?;
        if value.is_infinite() {
            self.overflow = true;
        }
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.pos..self.pos + 4)?;
        let value = u32::from_str_radix(digits, 16).ok()?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        Some(value)
    }

    /// A string, decoded.
    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            let rest = &self.text[self.pos..];
            let c = rest.chars().next()?;
            self.pos += c.len_utf8();
            match c {
                '"' => return Some(out),
                '\\' => {
                    let e = self.peek()?;
                    self.pos += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let unit = self.hex4()?;
                            out.push(self.unicode_escape(unit));
                        }
                        _ => return None,
                    }
                }
                c if (c as u32) < 0x20 => return None,
                c => out.push(c),
            }
        }
    }

    /// The character of a `\uXXXX` escape, pairing surrogates as Go does: a high surrogate
    /// followed by a `\u` low surrogate is one character, any other surrogate is U+FFFD.
    fn unicode_escape(&mut self, unit: u32) -> char {
        if !(0xD800..0xE000).contains(&unit) {
            return char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER);
        }
        if unit < 0xDC00 && self.text[self.pos..].starts_with("\\u") {
            let save = self.pos;
            self.pos += 2;
            if let Some(low) = self.hex4()
                && (0xDC00..0xE000).contains(&low)
            {
                let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                return char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER);
            }
            self.pos = save;
        }
        char::REPLACEMENT_CHARACTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> JsonArgs {
        JsonArgs::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn string_arrays() {
        assert_eq!(parse_json_args("[]"), strings(&[]));
        assert_eq!(parse_json_args("[ \"a\",\t\"b\" ]  "), strings(&["a", "b"]));
        assert_eq!(
            parse_json_args(r#"["\" \\ \/ \b \f \n \r \t \u0000 \u00e9"]"#),
            strings(&["\" \\ / \u{8} \u{c} \n \r \t \0 é"])
        );
        assert_eq!(parse_json_args(r#"["\ud83d\ude00"]"#), strings(&["😀"]));
        assert_eq!(parse_json_args(r#"["\ud800x"]"#), strings(&["\u{fffd}x"]));
        assert_eq!(
            parse_json_args(r#"["\udc00\ud800"]"#),
            strings(&["\u{fffd}\u{fffd}"])
        );
    }

    #[test]
    fn invalid_json_falls_back() {
        for text in [
            "echo hi",
            "['a']",
            "[\"a\"",
            "[\"a]",
            "[\"a\",]",
            "[\"a\"] x",
            "[\"a\tb\"]",
            "[\"\\x\"]",
            "[01]",
            "[1.]",
            "[1e]",
            "[tru]",
            "[{\"a\" 1}]",
            "[{1: 2}]",
            "[1e400]",
            "[\"a\", [1e999]]",
        ] {
            assert_eq!(parse_json_args(text), JsonArgs::NotJson, "{text}");
        }
    }

    #[test]
    fn non_strings_are_an_error() {
        for text in [
            "[1]",
            "[\"a\", null]",
            "[ \"echo\", [ \"nested json\" ] ]",
            "[{\"a\": [1, {\"b\": true}]}, \"x\"]",
            "[-0.5e+3, false]",
        ] {
            assert_eq!(parse_json_args(text), JsonArgs::NotStrings, "{text}");
        }
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let deep = format!("[{}{}]", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(parse_json_args(&deep), JsonArgs::NotJson);
        let ok = format!("[{}{}]", "[".repeat(100), "]".repeat(100));
        assert_eq!(parse_json_args(&ok), JsonArgs::NotStrings);
    }
}
