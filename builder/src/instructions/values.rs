//! Small value grammars the instructions check: durations, file modes, signals, ports, image
//! references, here-document words, and typo suggestions.

use std::time::Duration;

use crate::parser::edit_distance;

/// The option closest to `word` by edit distance, when it is close enough to be a typo. An
/// option equal to `word` but for case wins.
pub(crate) fn suggest<'a, S: AsRef<str>>(word: &str, options: &'a [S]) -> Option<&'a S> {
    // Names this long are no typos of anything, and comparing them costs their square.
    const LONGEST: usize = 64;
    if word.is_empty() || word.len() > LONGEST {
        return None;
    }
    if let Some(same) = options.iter().find(|o| {
        let o = o.as_ref();
        o != word && o.eq_ignore_ascii_case(word)
    }) {
        return Some(same);
    }
    let limit = (word.chars().count() / 3).max(1);
    options
        .iter()
        .filter(|o| o.as_ref() != word && o.as_ref().len() <= LONGEST)
        .map(|o| (edit_distance(word, o.as_ref()), o))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

/// Whether `name` can be a variable name (a letter or `_`, then letters, digits, `_`): positional
/// and special parameters (`$1`, `$@`) are never set and never reported.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// Parses a Go duration (`300ms`, `1.5h`, `2h45m`, `-5s`, `0`) into nanoseconds.
pub(crate) fn parse_go_duration(s: &str) -> Option<i128> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    let mut chars = rest.char_indices().peekable();
    while chars.peek().is_some() {
        // The number: digits, optionally a fraction.
        let mut whole: i128 = 0;
        let mut fraction: i128 = 0;
        let mut scale: i128 = 1;
        let mut digits = 0;
        while let Some(&(_, c)) = chars.peek() {
            let Some(d) = c.to_digit(10) else { break };
            whole = whole.checked_mul(10)?.checked_add(i128::from(d))?;
            digits += 1;
            chars.next();
        }
        if let Some(&(_, '.')) = chars.peek() {
            chars.next();
            while let Some(&(_, c)) = chars.peek() {
                let Some(d) = c.to_digit(10) else { break };
                if scale < 1_000_000_000_000_000_000 {
                    fraction = fraction * 10 + i128::from(d);
                    scale *= 10;
                }
                digits += 1;
                chars.next();
            }
        }
        if digits == 0 {
            return None;
        }
        // The unit.
        let start = chars.peek().map(|&(i, _)| i)?;
        let mut end = start;
        while let Some(&(i, c)) = chars.peek() {
            if c.is_ascii_digit() || c == '.' {
                break;
            }
            end = i + c.len_utf8();
            chars.next();
        }
        let unit: i128 = match rest.get(start..end)? {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let value = whole
            .checked_mul(unit)?
            .checked_add(fraction.checked_mul(unit)? / scale)?;
        total = total.checked_add(value)?;
        if total > i128::from(i64::MAX) {
            return None;
        }
    }
    Some(if negative { -total } else { total })
}

/// A health check interval: `None` for zero (the default), an error message for anything that
/// is not a duration or is below 1ms.
pub(crate) fn health_interval(value: &str) -> Result<Option<Duration>, IntervalError> {
    if value.is_empty() {
        return Ok(None);
    }
    let nanos = parse_go_duration(value).ok_or(IntervalError::Invalid)?;
    if nanos == 0 {
        return Ok(None);
    }
    if nanos < 1_000_000 {
        return Err(IntervalError::TooShort);
    }
    let nanos = u64::try_from(nanos).map_err(|_| IntervalError::Invalid)?;
    Ok(Some(Duration::from_nanos(nanos)))
}

/// Why a health check interval is refused.
pub(crate) enum IntervalError {
    Invalid,
    TooShort,
}

/// A `--chmod` value: octal (`755`) or symbolic (`u=rwX,go=rX`, `+x`, `g=u`).
pub(crate) fn check_chmod(value: &str) -> Result<super::Chmod, ()> {
    if !value.is_empty() && value.chars().all(|c| c.is_digit(8)) {
        return u32::from_str_radix(value, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(super::Chmod::Octal)
            .ok_or(());
    }
    for clause in value.split(',') {
        let rest = clause.trim_start_matches(['u', 'g', 'o', 'a']);
        if rest.is_empty() {
            return Err(());
        }
        let mut chars = rest.chars().peekable();
        while let Some(op) = chars.next() {
            if !matches!(op, '+' | '-' | '=') {
                return Err(());
            }
            match chars.peek() {
                Some('u' | 'g' | 'o') => {
                    chars.next();
                }
                _ => {
                    while matches!(chars.peek(), Some('r' | 'w' | 'x' | 'X' | 's' | 't')) {
                        chars.next();
                    }
                }
            }
        }
    }
    Ok(super::Chmod::Symbolic(value.to_string()))
}

/// The Linux signal names moby's `signal.ParseSignal` knows (without `SIG`).
const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
];

/// Whether `value` names a signal: a positive number, or a name with or without `SIG`, any
/// case, including `RTMIN+n` and `RTMAX-n` (n from 1 to 15 or 14).
pub(crate) fn is_signal(value: &str) -> bool {
    if let Ok(n) = value.parse::<i64>() {
        return n > 0 && n <= i64::from(i32::MAX);
    }
    let upper = value.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNALS.contains(&name) {
        return true;
    }
    let offset = |s: Option<&str>, max: u32| {
        s.and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=max).contains(&n) && !s.unwrap_or("").starts_with('+'))
    };
    offset(name.strip_prefix("RTMIN+"), 15) || offset(name.strip_prefix("RTMAX-"), 14)
}

/// Parses one `EXPOSE` word (`80`, `80/udp`, `8000-8010/tcp`, and the `[ip:][host:]port` forms
/// BuildKit still accepts) into the container port range and protocol.
pub(crate) fn parse_port(raw: &str) -> Result<super::ExposedPort, String> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => ("".to_string(), "", *c),
        [h, c] => ("".to_string(), *h, *c),
        [i, h, c] => (i.to_string(), *h, *c),
        [rest @ .., h, c] => (rest.join(":"), *h, *c),
        [] => ("".to_string(), "", ""),
    };
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    if port.is_empty() {
        return Err(format!("no port specified: {container}<empty>"));
    }
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "" | "tcp" => super::Protocol::Tcp,
        "udp" => super::Protocol::Udp,
        "sctp" => super::Protocol::Sctp,
        other => return Err(format!("invalid proto: {other}")),
    };
    if !ip.is_empty() {
        let bare = ip
            .strip_prefix('[')
            .and_then(|i| i.strip_suffix(']'))
            .unwrap_or(&ip);
        if bare.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("invalid IP address: {ip}"));
        }
    }
    let (start, end) =
        parse_port_range(port).ok_or_else(|| format!("invalid containerPort: {port}"))?;
    if !host.is_empty() {
        let (host_start, host_end) =
            parse_port_range(host).ok_or_else(|| format!("invalid hostPort: {host}"))?;
        if end - start != host_end - host_start && end != start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {port} and {host}"
            ));
        }
    }
    Ok(super::ExposedPort {
        start,
        end,
        protocol,
    })
}

fn parse_port_range(ports: &str) -> Option<(u16, u16)> {
    let number = |s: &str| {
        (!s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u16>().ok())
            .flatten()
    };
    match ports.split_once('-') {
        None => number(ports).map(|p| (p, p)),
        Some((a, b)) => {
            let (start, end) = (number(a)?, number(b)?);
            (end >= start).then_some((start, end))
        }
    }
}

/// Whether `name` is a valid image reference once normalised as Docker normalises it
/// (`busybox` is `docker.io/library/busybox`): the check behind `InvalidDefaultArgInFrom`.
pub(crate) fn is_valid_reference(name: &str) -> bool {
    if name.len() == 64 && name.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        return false;
    }
    let (domain, remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first, rest)
        }
        _ => ("docker.io", name),
    };
    let remote = remainder.split(':').next().unwrap_or("");
    if remote.to_lowercase() != remote {
        return false;
    }
    if !is_valid_domain(domain) {
        return false;
    }
    let (rest, digest) = match remainder.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (remainder, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match rest.get(last_slash..).and_then(|tail| tail.find(':')) {
        Some(i) => {
            let at = last_slash + i;
            (rest.get(..at).unwrap_or(""), rest.get(at + 1..))
        }
        None => (rest, None),
    };
    if !path.split('/').all(is_path_component) {
        return false;
    }
    if domain.len() + 1 + path.len() > 255 {
        return false;
    }
    if let Some(tag) = tag {
        let mut chars = tag.chars();
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let ok = matches!(chars.next(), Some(c) if word(c))
            && tag.len() <= 128
            && chars.all(|c| word(c) || c == '.' || c == '-');
        if !ok {
            return false;
        }
    }
    if let Some(digest) = digest {
        let Some((algorithm, hex)) = digest.split_once(':') else {
            return false;
        };
        let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
            let mut c = part.chars();
            matches!(c.next(), Some(x) if x.is_ascii_alphabetic())
                && c.all(|x| x.is_ascii_alphanumeric())
        });
        if !algorithm_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return false;
        }
    }
    true
}

fn is_valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) => {
                if ip.is_empty() || !ip.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
                    return false;
                }
                ("", port)
            }
            None => return false,
        }
    } else {
        match domain.split_once(':') {
            Some((h, _)) => (h, &domain[h.len()..]),
            None => (domain, ""),
        }
    };
    if !port.is_empty() {
        let digits = port.strip_prefix(':').unwrap_or("");
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    if domain.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let mut need_alnum = true;
    while let Some(&b) = bytes.get(i) {
        if alnum(b) {
            need_alnum = false;
            i += 1;
            continue;
        }
        if need_alnum {
            return false;
        }
        // A separator: `.`, `_`, `__` or a run of `-`.
        match b {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        need_alnum = true;
    }
    !need_alnum
}

/// The name a word such as `<<EOF`, `<<-"EOF"` or `2<<'EOF'` opens a here-document with.
pub(crate) fn heredoc_name(word: &str) -> Option<&str> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix("<<")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let name = match rest.chars().next()? {
        q @ ('"' | '\'') => rest.strip_prefix(q)?.strip_suffix(q)?,
        _ => rest,
    };
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some(name)
}

/// Whether an `ARG` or `ENV` name looks like it holds a secret: one of its `_`-separated words
/// is `apikey`, `auth`, `credential(s)`, `key`, `password`, `pword`, `passwd`, `secret` or
/// `token`, in any case.
pub(crate) fn looks_secret(name: &str) -> bool {
    const TOKENS: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    name.split('_')
        .any(|word| TOKENS.iter().any(|t| t.eq_ignore_ascii_case(word)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("5s"), Some(5_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_go_duration("-2s"), Some(-2_000_000_000));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("0s"), Some(0));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("99999999999999999999h"), None);
        assert!(matches!(
            health_interval("500us"),
            Err(IntervalError::TooShort)
        ));
        assert!(matches!(health_interval("0s"), Ok(None)));
    }

    #[test]
    fn chmod() {
        assert_eq!(
            check_chmod("755"),
            Ok(crate::instructions::Chmod::Octal(0o755))
        );
        assert!(check_chmod("+x").is_ok());
        assert!(check_chmod("u=rwX,go=rX").is_ok());
        assert!(check_chmod("g=u").is_ok());
        assert!(check_chmod("a-w+t").is_ok());
        assert!(check_chmod("").is_err());
        assert!(check_chmod("u").is_err());
        assert!(check_chmod("rwx").is_err());
        assert!(check_chmod("98").is_err());
        assert!(check_chmod("77777").is_err());
    }

    #[test]
    fn signals() {
        assert!(is_signal("SIGTERM"));
        assert!(is_signal("term"));
        assert!(is_signal("9"));
        assert!(is_signal("SIGRTMIN+3"));
        assert!(!is_signal("0"));
        assert!(!is_signal("SIGFOO"));
        assert!(!is_signal("RTMIN+16"));
    }

    #[test]
    fn ports() {
        let p = parse_port("8000-8010/UDP").unwrap();
        assert_eq!((p.start, p.end), (8000, 8010));
        assert_eq!(p.protocol, crate::instructions::Protocol::Udp);
        assert!(parse_port("80/icmp").is_err());
        assert!(parse_port("abc").is_err());
        assert!(parse_port("70000").is_err());
        assert!(parse_port("/tcp").is_err());
        assert!(parse_port("127.0.0.1:80:80").is_ok());
        assert!(parse_port("nope:80:80").is_err());
    }

    #[test]
    fn references() {
        for ok in [
            "busybox",
            "busybox:1.36",
            "library/busybox",
            "ghcr.io/owner/repo:tag",
            "localhost:5000/a/b",
            "a__b/c-d--e.f",
            "busybox:stable",
            "scratch",
            "alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(is_valid_reference(ok), "{ok}");
        }
        for bad in [
            "",
            "busybox:",
            "Busybox",
            "a:b:c",
            "a//b",
            "-a",
            "a_",
            "repo@sha256:12",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(!is_valid_reference(bad), "{bad}");
        }
    }

    #[test]
    fn heredoc_words() {
        assert_eq!(heredoc_name("<<EOF"), Some("EOF"));
        assert_eq!(heredoc_name("<<-\"EOF\""), Some("EOF"));
        assert_eq!(heredoc_name("2<<'X1'"), Some("X1"));
        assert_eq!(heredoc_name("<<"), None);
        assert_eq!(heredoc_name("file"), None);
        assert_eq!(heredoc_name("<<\"EOF"), None);
    }

    #[test]
    fn secrets_and_names() {
        assert!(looks_secret("AWS_SECRET_ACCESS_KEY"));
        assert!(looks_secret("api_key"));
        assert!(looks_secret("GITHUB_TOKEN"));
        assert!(looks_secret("auth"));
        assert!(!looks_secret("KEYBOARD"));
        assert!(!looks_secret("AUTHOR"));
        assert!(is_identifier("_a1"));
        assert!(!is_identifier("1"));
        assert!(!is_identifier("@"));
        assert_eq!(suggest("PAHT", &["PATH", "HOME"]).copied(), Some("PATH"));
        assert_eq!(suggest("frm", &["from", "chown"]).copied(), Some("from"));
        assert_eq!(suggest("path", &["PATH"]).copied(), Some("PATH"));
        assert_eq!(suggest("zzz", &["from"]).copied(), None);
    }
}
