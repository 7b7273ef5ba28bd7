//! The `created_by` text of the history entries a build adds, as docker 20.10's BuildKit
//! Dockerfile frontend (`dockerfile2llb`, BuildKit 0.8) writes it. Tools and people compare
//! histories, so the text follows BuildKit's Go formatting exactly:
//!
//! - `RUN <args joined by spaces>`, prefixed with `|<n> K=V ...` when the stage has declared
//!   `ARG`s (every one declared so far in the stage, in order, with its value in the step's
//!   environment, empty when it has none); the args of the shell form are the shell's;
//! - `COPY <sources> <dest>` and `ADD <sources> <dest>`, without flags;
//! - `CMD` and `ENTRYPOINT` print their final argument list with Go's `%q` (`["a" "b"]`), the
//!   shell form wrapped in the shell first;
//! - `SHELL` and `VOLUME` print their list with `%v` (`[/bin/sh -c]`);
//! - `ENV` and `LABEL` print `k=v` pairs, unquoted;
//! - `EXPOSE` prints the ports of the instruction as a Go map (`map[80/tcp:{}]`, keys sorted);
//! - `HEALTHCHECK` prints the health config with `%q`: the test list, the interval, timeout
//!   and start period as quoted Go durations and the retries as a Go rune literal;
//! - `ARG K[=default]`, the default expanded but never the build argument;
//! - `WORKDIR <absolute path>`, `USER`, `STOPSIGNAL` and `MAINTAINER` print their value;
//! - `ONBUILD` writes no history entry at all.
//!
//! BuildKit also appends ` # buildkit` to the steps it ran itself (RUN, COPY and ADD).

use std::fmt::Write as _;
use std::time::Duration;

use crate::instructions::{ArgDecl, Command, CommandLine, ExposedPort, HealthcheckKind};

/// The suffix BuildKit appends to the `created_by` of the steps that ran (RUN, COPY, ADD).
const BUILDKIT_MARK: &str = " # buildkit";

/// What `created_by` needs beyond the command.
pub(super) struct Scope<'a> {
    /// The stage's `SHELL` (empty for the default).
    pub shell: &'a [String],
    /// The working directory before the command.
    pub workdir: Option<&'a str>,
    /// The `ARG` names declared in the stage before the command, in order.
    pub build_args: &'a [String],
}

/// The history's `created_by` for `command`, or `None` when BuildKit records no entry for it
/// (`ONBUILD`).
pub(super) fn created_by(command: &Command, scope: &Scope<'_>) -> Option<String> {
    let line = |c: &CommandLine| super::command_line(c, scope.shell);
    Some(match command {
        Command::Run(r) => {
            let mut text = String::from("RUN ");
            let env = |name: &str| {
                r.env
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or("", |(_, v)| v.as_str())
            };
            let args: Vec<(&str, &str)> = scope
                .build_args
                .iter()
                .map(|name| (name.as_str(), env(name)))
                .collect();
            text.push_str(&run_command_string(&line(&r.command), &args));
            text.push_str(BUILDKIT_MARK);
            text
        }
        Command::Copy(c) => copy_text("COPY", &c.sources, &c.dest),
        Command::Add(a) => copy_text("ADD", &a.sources, &a.dest),
        Command::Env(e) => pairs_text("ENV", &e.pairs),
        Command::Label(l) => pairs_text("LABEL", &l.pairs),
        Command::Arg(a) => arg_text(&a.args),
        Command::Expose(e) => format!("EXPOSE {}", expose_map(&e.ports)),
        Command::User(u) => format!("USER {}", u.user),
        Command::Workdir(w) => format!("WORKDIR {}", super::absolute(scope.workdir, &w.path)),
        Command::Volume(v) => format!("VOLUME {}", plain_list(&v.paths)),
        Command::Entrypoint(e) => format!("ENTRYPOINT {}", quoted_list(&line(&e.command))),
        Command::Cmd(c) => format!("CMD {}", quoted_list(&line(&c.command))),
        Command::Shell(s) => format!("SHELL {}", plain_list(&s.shell)),
        Command::StopSignal(s) => format!("STOPSIGNAL {}", s.signal),
        Command::Maintainer(m) => format!("MAINTAINER {}", m.name),
        Command::Healthcheck(h) => format!("HEALTHCHECK {}", healthcheck_text(&h.check)),
        Command::OnBuild(_) => return None,
    })
}

/// BuildKit's `runCommandString`: `|<n> K=V ... args...`, or the args alone without build args.
/// Every declaration counts, so a name declared twice is listed twice, as BuildKit 0.8 does.
pub(super) fn run_command_string(args: &[String], build_args: &[(&str, &str)]) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(build_args.len() + args.len() + 1);
    if !build_args.is_empty() {
        parts.push(format!("|{}", build_args.len()));
        parts.extend(build_args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

fn copy_text(instruction: &str, sources: &[String], dest: &str) -> String {
    let mut text = instruction.to_owned();
    for source in sources {
        text.push(' ');
        text.push_str(source);
    }
    text.push(' ');
    text.push_str(dest);
    text.push_str(BUILDKIT_MARK);
    text
}

fn pairs_text(instruction: &str, pairs: &[(String, String)]) -> String {
    let mut text = instruction.to_owned();
    for (k, v) in pairs {
        let _ = write!(text, " {k}={v}");
    }
    text
}

fn arg_text(args: &[ArgDecl]) -> String {
    let mut text = String::from("ARG");
    for arg in args {
        text.push(' ');
        text.push_str(&arg.name);
        if let Some(default) = &arg.expanded_default {
            text.push('=');
            text.push_str(default);
        }
    }
    text
}

/// Go's `%v` of a `map[nat.Port]struct{}` holding the ports of one `EXPOSE`: `map[80/tcp:{}]`,
/// keys in byte order, each once.
pub(super) fn expose_map(ports: &[ExposedPort]) -> String {
    let keys: std::collections::BTreeSet<String> = ports.iter().flat_map(|p| p.keys()).collect();
    let entries: Vec<String> = keys.iter().map(|k| format!("{k}:{{}}")).collect();
    format!("map[{}]", entries.join(" "))
}

/// Go's `%q` of BuildKit's `*HealthConfig`: `&{["CMD" "x"] "30s" "5s" "0s" '\x03'}` (test,
/// interval, timeout, start period, retries; docker 20.10's struct has no start interval).
pub(super) fn healthcheck_text(check: &HealthcheckKind) -> String {
    let zero = Duration::ZERO;
    let (test, interval, timeout, start_period, retries) = match check {
        HealthcheckKind::None => (vec!["NONE".to_owned()], zero, zero, zero, 0),
        HealthcheckKind::Cmd {
            command,
            interval,
            timeout,
            start_period,
            retries,
            ..
        } => {
            let test = match command {
                CommandLine::Exec(args) => {
                    let mut t = vec!["CMD".to_owned()];
                    t.extend(args.iter().cloned());
                    t
                }
                CommandLine::Shell(s) => vec!["CMD-SHELL".to_owned(), s.clone()],
            };
            (
                test,
                interval.unwrap_or(zero),
                timeout.unwrap_or(zero),
                start_period.unwrap_or(zero),
                retries.unwrap_or(0),
            )
        }
    };
    format!(
        "&{{{} {} {} {} {}}}",
        quoted_list(&test),
        go_quote(&go_duration(interval)),
        go_quote(&go_duration(timeout)),
        go_quote(&go_duration(start_period)),
        go_quote_rune(u64::from(retries)),
    )
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub(super) fn quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%v` of a `[]string`: `[a b]`.
pub(super) fn plain_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `strconv.Quote`: double quotes, `\"` and `\\`, the C escapes, `\xNN` below space,
/// `\uNNNN` or `\UNNNNNNNN` for other characters that are not printable.
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
            out.push(c);
        } else {
            escape_char(&mut out, c);
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of an integer: a rune literal (`'\x04'`, `'A'`), `'�'` past the last code point.
pub(super) fn go_quote_rune(n: u64) -> String {
    let c = u32::try_from(n)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or(char::REPLACEMENT_CHARACTER);
    let mut out = String::from("'");
    if c == '\'' || c == '\\' {
        out.push('\\');
        out.push(c);
    } else {
        escape_char(&mut out, c);
    }
    out.push('\'');
    out
}

fn escape_char(out: &mut String, c: char) {
    if is_go_printable(c) {
        out.push(c);
        return;
    }
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// An approximation of Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols
/// and the ASCII space. Control and format characters and other spaces are not printable.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{e000}'..='\u{f8ff}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{e0000}'..='\u{10ffff}'
    )
}

/// Go's `time.Duration.String`: `0s`, `1.5s`, `1m30s`, `1h0m0s`, `500ms`, `2µs`, `7ns`.
pub(super) fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos().min(i64::MAX as u128) as u64;
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (prec, unit) = if nanos < 1_000 {
            (0, "ns")
        } else if nanos < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let (frac, whole) = go_frac(nanos, prec);
        return format!("{whole}{frac}{unit}");
    }
    let (frac, secs) = go_frac(nanos, 9);
    let mut out = String::new();
    let minutes = secs / 60;
    if minutes > 0 {
        let hours = minutes / 60;
        if hours > 0 {
            let _ = write!(out, "{hours}h");
        }
        let _ = write!(out, "{}m", minutes % 60);
    }
    let _ = write!(out, "{}{frac}s", secs % 60);
    out
}

/// Go's `fmtFrac`: the fraction of `v / 10^prec` without trailing zeros (`.25`, or nothing),
/// and the integer part.
fn go_frac(mut v: u64, prec: u32) -> (String, u64) {
    let mut digits = Vec::new();
    let mut print = false;
    for _ in 0..prec {
        let digit = v % 10;
        print = print || digit != 0;
        if print {
            digits.push(char::from(b'0' + digit as u8));
        }
        v /= 10;
    }
    if !print {
        return (String::new(), v);
    }
    digits.push('.');
    (digits.iter().rev().collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instructions::{
        Arg, Cmd, Entrypoint, Expose, Label, OnBuild, Protocol, Run, Shell, Volume, Workdir,
    };
    use crate::parser::Span;

    fn span() -> Span {
        Span {
            file: "Dockerfile".into(),
            line: 1,
            column: 1,
            end_line: 1,
        }
    }

    fn scope<'a>(shell: &'a [String], build_args: &'a [String]) -> Scope<'a> {
        Scope {
            shell,
            workdir: None,
            build_args,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("cat"), "\"cat\"");
        assert_eq!(go_quote("echo \"$0 $*\""), "\"echo \\\"$0 $*\\\"\"");
        assert_eq!(go_quote("a\\b\tc\nd"), "\"a\\\\b\\tc\\nd\"");
        assert_eq!(go_quote("\u{1}\u{7f}"), "\"\\x01\\x7f\"");
        assert_eq!(go_quote("héllo ✓"), "\"héllo ✓\"");
        assert_eq!(go_quote("\u{200b}\u{a0}"), "\"\\u200b\\u00a0\"");
        assert_eq!(
            quoted_list(&strings(&["cat", "/hello.txt"])),
            "[\"cat\" \"/hello.txt\"]"
        );
        assert_eq!(quoted_list(&[]), "[]");
        assert_eq!(
            plain_list(&strings(&["/bin/sh", "-e", "-c"])),
            "[/bin/sh -e -c]"
        );
    }

    #[test]
    fn go_rune_literals() {
        assert_eq!(go_quote_rune(0), "'\\x00'");
        assert_eq!(go_quote_rune(4), "'\\x04'");
        assert_eq!(go_quote_rune(9), "'\\t'");
        assert_eq!(go_quote_rune(65), "'A'");
        assert_eq!(go_quote_rune(39), "'\\''");
        assert_eq!(go_quote_rune(34), "'\"'");
        assert_eq!(go_quote_rune(0x85), "'\\u0085'");
        assert_eq!(go_quote_rune(0x11_0000), "'\u{fffd}'");
    }

    #[test]
    fn go_durations() {
        let s = Duration::from_secs;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(s(30)), "30s");
        assert_eq!(go_duration(s(90)), "1m30s");
        assert_eq!(go_duration(s(3600)), "1h0m0s");
        assert_eq!(go_duration(s(3661)), "1h1m1s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_nanos(2000)), "2µs");
        assert_eq!(go_duration(Duration::from_nanos(7)), "7ns");
        assert_eq!(
            go_duration(Duration::from_nanos(60_000_000_001)),
            "1m0.000000001s"
        );
    }

    #[test]
    fn healthchecks_print_as_go_structs() {
        let check = HealthcheckKind::Cmd {
            command: CommandLine::Exec(strings(&["sh", "-c", "test -f /tmp/healthy"])),
            interval: Some(Duration::from_secs(30)),
            timeout: Some(Duration::from_secs(5)),
            start_period: Some(Duration::from_secs(10)),
            start_interval: None,
            retries: Some(4),
        };
        assert_eq!(
            healthcheck_text(&check),
            r#"&{["CMD" "sh" "-c" "test -f /tmp/healthy"] "30s" "5s" "10s" '\x04'}"#
        );
        let shell = HealthcheckKind::Cmd {
            command: CommandLine::Shell("test -e / || exit 1".into()),
            interval: Some(Duration::from_secs(90)),
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        };
        assert_eq!(
            healthcheck_text(&shell),
            r#"&{["CMD-SHELL" "test -e / || exit 1"] "1m30s" "0s" "0s" '\x00'}"#
        );
        assert_eq!(
            healthcheck_text(&HealthcheckKind::None),
            r#"&{["NONE"] "0s" "0s" "0s" '\x00'}"#
        );
    }

    #[test]
    fn expose_prints_a_sorted_go_map() {
        let port = |start, end, protocol| ExposedPort {
            start,
            end,
            protocol,
        };
        let ports = [
            port(80, 80, Protocol::Tcp),
            port(443, 443, Protocol::Tcp),
            port(53, 53, Protocol::Udp),
            port(80, 80, Protocol::Tcp),
        ];
        assert_eq!(expose_map(&ports), "map[443/tcp:{} 53/udp:{} 80/tcp:{}]");
        assert_eq!(
            expose_map(&[port(8000, 8002, Protocol::Tcp)]),
            "map[8000/tcp:{} 8001/tcp:{} 8002/tcp:{}]"
        );
        let expose = Command::Expose(Expose {
            ports: vec![port(80, 80, Protocol::Tcp)],
            span: span(),
        });
        assert_eq!(
            created_by(&expose, &scope(&[], &[])).as_deref(),
            Some("EXPOSE map[80/tcp:{}]")
        );
    }

    #[test]
    fn run_lists_the_stage_build_args() {
        let run = |command| {
            Command::Run(Run {
                mounts: Vec::new(),
                network: Default::default(),
                security: Default::default(),
                command,
                heredocs: Vec::new(),
                env: vec![
                    ("GREETING".to_owned(), "from-build-arg".to_owned()),
                    ("PATH".to_owned(), "/bin".to_owned()),
                ]
                .into(),
                span: span(),
            })
        };
        let shell_form = run(CommandLine::Shell("echo $GREETING".into()));
        assert_eq!(
            created_by(&shell_form, &scope(&[], &[])).as_deref(),
            Some("RUN /bin/sh -c echo $GREETING # buildkit")
        );
        let declared = strings(&["GREETING", "UNSET"]);
        assert_eq!(
            created_by(&shell_form, &scope(&[], &declared)).as_deref(),
            Some("RUN |2 GREETING=from-build-arg UNSET= /bin/sh -c echo $GREETING # buildkit")
        );
        let bash = strings(&["/bin/bash", "-e", "-c"]);
        let exec = run(CommandLine::Exec(strings(&["touch", "/x y"])));
        assert_eq!(
            created_by(&exec, &scope(&bash, &declared[..1])).as_deref(),
            Some("RUN |1 GREETING=from-build-arg touch /x y # buildkit")
        );
        assert_eq!(
            created_by(&shell_form, &scope(&bash, &[])).as_deref(),
            Some("RUN /bin/bash -e -c echo $GREETING # buildkit")
        );
    }

    #[test]
    fn metadata_instructions() {
        let none = scope(&[], &[]);
        let text = |c: &Command| created_by(c, &none).unwrap();
        let label = Command::Label(Label {
            pairs: vec![
                ("org.example.quoted key".into(), "value with spaces".into()),
                ("org.example.empty".into(), String::new()),
            ],
            span: span(),
        });
        assert_eq!(
            text(&label),
            "LABEL org.example.quoted key=value with spaces org.example.empty="
        );
        let cmd = Command::Cmd(Cmd {
            command: CommandLine::Shell("echo \"hi\"".into()),
            span: span(),
        });
        assert_eq!(text(&cmd), r#"CMD ["/bin/sh" "-c" "echo \"hi\""]"#);
        let entrypoint = Command::Entrypoint(Entrypoint {
            command: CommandLine::Exec(strings(&["/bin/busybox"])),
            span: span(),
        });
        assert_eq!(text(&entrypoint), r#"ENTRYPOINT ["/bin/busybox"]"#);
        let shell = Command::Shell(Shell {
            shell: strings(&["/bin/sh", "-e", "-u", "-c"]),
            span: span(),
        });
        assert_eq!(text(&shell), "SHELL [/bin/sh -e -u -c]");
        let volume = Command::Volume(Volume {
            paths: strings(&["/data", "/logs"]),
            span: span(),
        });
        assert_eq!(text(&volume), "VOLUME [/data /logs]");
        let arg = Command::Arg(Arg {
            args: vec![
                ArgDecl {
                    name: "VERSION".into(),
                    default: Some("$V".into()),
                    expanded_default: Some("1.2.3".into()),
                    value: Some("from-build-arg".into()),
                },
                ArgDecl {
                    name: "GREETING".into(),
                    default: None,
                    expanded_default: None,
                    value: Some("x".into()),
                },
            ],
            span: span(),
        });
        assert_eq!(text(&arg), "ARG VERSION=1.2.3 GREETING");
        let workdir = Command::Workdir(Workdir {
            path: "b/../c".into(),
            span: span(),
        });
        let in_a = Scope {
            shell: &[],
            workdir: Some("/a"),
            build_args: &[],
        };
        assert_eq!(created_by(&workdir, &in_a).as_deref(), Some("WORKDIR /a/c"));
        let onbuild = Command::OnBuild(OnBuild {
            instruction: crate::parser::Instruction::Run,
            expression: "RUN true".into(),
            node: Box::new(
                crate::parser::parse("RUN true\n", "Dockerfile")
                    .unwrap()
                    .instructions[0]
                    .clone(),
            ),
            span: span(),
        });
        assert_eq!(created_by(&onbuild, &none), None);
    }
}
