//! The first pass over an instruction, before any expansion: its flags, its arguments, and what
//! BuildKit's `instructions.Parse` refuses.

use super::error::{InstructionError, InstructionErrorKind as E};
use super::flags::{Flags, Given, Kind};
use super::mount::split_csv;
use super::values::{IntervalError, health_interval, heredoc_name};
use super::{CommandLine, HealthcheckKind, NetworkMode, SecurityMode};
use crate::parser::{Args, Instruction, KeyValue, Node};

/// An instruction that passed the first checks, with what lowering needs of it.
pub(crate) struct Checked<'a> {
    /// The instruction.
    pub node: &'a Node,
    /// Its flags.
    pub flags: Flags<'a>,
    /// Its arguments, sorted out.
    pub what: What<'a>,
}

/// The arguments of each instruction.
pub(crate) enum What<'a> {
    From {
        image: &'a str,
        name: Option<String>,
    },
    Run {
        network: NetworkMode,
        security: SecurityMode,
        /// Each `--mount`: its CSV fields and the flag.
        mounts: Vec<(Vec<String>, Given<'a>)>,
        command: CommandLine,
    },
    Copy {
        sources: &'a [String],
        dest: &'a str,
    },
    Add {
        sources: &'a [String],
        dest: &'a str,
    },
    Env(&'a [KeyValue]),
    Label(&'a [KeyValue]),
    Arg(Vec<(&'a str, Option<&'a str>)>),
    Expose(&'a [String]),
    User(&'a str),
    Workdir(&'a str),
    Volume(&'a [String]),
    Entrypoint(CommandLine),
    Cmd(CommandLine),
    Shell(Vec<String>),
    Healthcheck(HealthcheckKind),
    StopSignal(&'a str),
    OnBuild {
        instruction: Instruction,
        expression: String,
        inner: &'a Node,
    },
    Maintainer(&'a str),
}

fn words(args: &Args) -> &[String] {
    match args {
        Args::Words(w) | Args::Exec(w) => w,
        Args::Text(t) | Args::Shell(t) => std::slice::from_ref(t),
        Args::KeyValues(_) | Args::Healthcheck { .. } | Args::Onbuild(_) | Args::Empty => &[],
    }
}

fn command_line(args: &Args) -> CommandLine {
    match args {
        Args::Exec(items) => CommandLine::Exec(items.clone()),
        Args::Shell(t) | Args::Text(t) => CommandLine::Shell(t.clone()),
        Args::Words(w) => CommandLine::Shell(w.join(" ")),
        _ => CommandLine::Shell(String::new()),
    }
}

const NO_FLAGS: &[(&str, Kind)] = &[];

/// Checks `node` (an instruction of a stage, or the `FROM` that starts one).
pub(crate) fn check(node: &Node) -> Result<Checked<'_>, InstructionError> {
    let at = |kind| InstructionError::at_node(kind, node);
    let upper: &'static str = match node.instruction {
        Instruction::Add => "ADD",
        Instruction::Arg => "ARG",
        Instruction::Cmd => "CMD",
        Instruction::Copy => "COPY",
        Instruction::Entrypoint => "ENTRYPOINT",
        Instruction::Env => "ENV",
        Instruction::Expose => "EXPOSE",
        Instruction::From => "FROM",
        Instruction::Healthcheck => "HEALTHCHECK",
        Instruction::Label => "LABEL",
        Instruction::Maintainer => "MAINTAINER",
        Instruction::Onbuild => "ONBUILD",
        Instruction::Run => "RUN",
        Instruction::Shell => "SHELL",
        Instruction::Stopsignal => "STOPSIGNAL",
        Instruction::User => "USER",
        Instruction::Volume => "VOLUME",
        Instruction::Workdir => "WORKDIR",
    };
    let at_least_one = || {
        at(E::Arguments {
            instruction: upper,
            expected: "at least one argument",
        })
    };
    let exactly_one = || {
        at(E::Arguments {
            instruction: upper,
            expected: "exactly one argument",
        })
    };
    let (flags, what) = match node.instruction {
        Instruction::From => {
            let w = words(&node.args);
            let name = match w {
                [_] => None,
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    let lower = name.to_lowercase();
                    if !is_stage_name(&lower) {
                        return Err(at(E::InvalidStageName {
                            name: name.to_string(),
                        }));
                    }
                    Some(lower)
                }
                _ => return Err(at(E::FromArguments)),
            };
            let flags = Flags::parse(node, &[("platform", Kind::String)])?;
            let image = w.first().map_or("", String::as_str);
            (flags, What::From { image, name })
        }
        Instruction::Run => {
            let flags = Flags::parse(
                node,
                &[
                    ("mount", Kind::Strings),
                    ("network", Kind::String),
                    ("security", Kind::String),
                ],
            )?;
            let flag_error = |given: &Given<'_>, kind| {
                InstructionError::at(kind, node, given.span, given.raw.chars().count())
            };
            let network = match flags.string("network") {
                None => NetworkMode::Default,
                Some(g) => match g.value {
                    "default" => NetworkMode::Default,
                    "none" => NetworkMode::None,
                    "host" => NetworkMode::Host,
                    other => {
                        return Err(flag_error(
                            g,
                            E::InvalidFlagValue {
                                flag: "network".into(),
                                value: other.into(),
                                reason: "use default, none or host".into(),
                            },
                        ));
                    }
                },
            };
            let security = match flags.string("security") {
                None => SecurityMode::Sandbox,
                Some(g) => match g.value {
                    "sandbox" => SecurityMode::Sandbox,
                    "insecure" => SecurityMode::Insecure,
                    other => {
                        return Err(flag_error(
                            g,
                            E::InvalidFlagValue {
                                flag: "security".into(),
                                value: other.into(),
                                reason: "use sandbox or insecure".into(),
                            },
                        ));
                    }
                },
            };
            let mut mounts = Vec::new();
            for given in flags.strings("mount") {
                let fields = split_csv(given.value).map_err(|e| flag_error(given, E::Mount(e)))?;
                mounts.push((fields, given.clone()));
            }
            let what = What::Run {
                network,
                security,
                mounts,
                command: command_line(&node.args),
            };
            (flags, what)
        }
        Instruction::Copy | Instruction::Add => {
            let flags = if node.instruction == Instruction::Copy {
                Flags::parse(
                    node,
                    &[
                        ("exclude", Kind::Strings),
                        ("parents", Kind::Bool),
                        ("chown", Kind::String),
                        ("from", Kind::String),
                        ("chmod", Kind::String),
                        ("link", Kind::Bool),
                    ],
                )?
            } else {
                Flags::parse(
                    node,
                    &[
                        ("exclude", Kind::Strings),
                        ("chown", Kind::String),
                        ("chmod", Kind::String),
                        ("link", Kind::Bool),
                        ("keep-git-dir", Kind::Bool),
                        ("checksum", Kind::String),
                        ("unpack", Kind::Bool),
                    ],
                )?
            };
            let Some((dest, w)) = words(&node.args)
                .split_last()
                .filter(|(_, w)| !w.is_empty())
            else {
                return Err(at(E::Arguments {
                    instruction: upper,
                    expected: "at least two arguments, but only one was provided. Destination \
                               could not be determined",
                }));
            };
            if heredoc_name(dest).is_some() {
                return Err(at(E::HeredocDestination { instruction: upper }));
            }
            let what = if node.instruction == Instruction::Copy {
                What::Copy { sources: w, dest }
            } else {
                What::Add { sources: w, dest }
            };
            (flags, what)
        }
        Instruction::Env | Instruction::Label => {
            let flags = Flags::parse(node, NO_FLAGS)?;
            let pairs: &[KeyValue] = match &node.args {
                Args::KeyValues(pairs) => pairs,
                _ => &[],
            };
            if pairs.is_empty() {
                return Err(at_least_one());
            }
            if pairs.iter().any(|p| p.key.is_empty()) {
                return Err(at(E::BlankName { instruction: upper }));
            }
            let what = if node.instruction == Instruction::Env {
                What::Env(pairs)
            } else {
                What::Label(pairs)
            };
            (flags, what)
        }
        Instruction::Arg => {
            // BuildKit does not look at the flags of ARG.
            let w = words(&node.args);
            if w.is_empty() {
                return Err(at_least_one());
            }
            let mut decls = Vec::with_capacity(w.len());
            for word in w {
                let word = word.as_str();
                let (name, default) = match word.split_once('=') {
                    Some((n, d)) => (n, Some(d)),
                    None => (word, None),
                };
                if name.is_empty() {
                    return Err(at(E::BlankName { instruction: upper }));
                }
                decls.push((name, default));
            }
            (Flags::default(), What::Arg(decls))
        }
        Instruction::Expose => {
            let flags = Flags::parse(node, NO_FLAGS)?;
            let w = words(&node.args);
            if w.is_empty() {
                return Err(at_least_one());
            }
            (flags, What::Expose(w))
        }
        Instruction::User | Instruction::Workdir | Instruction::Maintainer => {
            let flags = Flags::parse(node, NO_FLAGS)?;
            let [one] = words(&node.args) else {
                return Err(exactly_one());
            };
            let what = match node.instruction {
                Instruction::User => What::User(one),
                Instruction::Workdir => What::Workdir(one),
                _ => What::Maintainer(one),
            };
            (flags, what)
        }
        Instruction::Stopsignal => {
            // BuildKit does not look at the flags of STOPSIGNAL.
            let [one] = words(&node.args) else {
                return Err(exactly_one());
            };
            (Flags::default(), What::StopSignal(one))
        }
        Instruction::Volume => {
            let flags = Flags::parse(node, NO_FLAGS)?;
            let w = words(&node.args);
            if w.is_empty() {
                return Err(at_least_one());
            }
            if w.iter().any(|v| v.trim().is_empty()) {
                return Err(at(E::EmptyVolume));
            }
            (flags, What::Volume(w))
        }
        Instruction::Cmd | Instruction::Entrypoint => {
            let flags = Flags::parse(node, NO_FLAGS)?;
            let line = command_line(&node.args);
            let what = if node.instruction == Instruction::Cmd {
                What::Cmd(line)
            } else {
                What::Entrypoint(line)
            };
            (flags, what)
        }
        Instruction::Shell => {
            let flags = Flags::parse(node, NO_FLAGS)?;
            match &node.args {
                Args::Exec(items) if !items.is_empty() => (flags, What::Shell(items.clone())),
                Args::Exec(_) | Args::Empty => return Err(at_least_one()),
                _ => return Err(at(E::ShellNotJson)),
            }
        }
        Instruction::Healthcheck => {
            let Args::Healthcheck { kind, command } = &node.args else {
                return Err(at_least_one());
            };
            let typ = kind.to_uppercase();
            if typ == "NONE" {
                // BuildKit does not look at the flags of HEALTHCHECK NONE.
                if !matches!(**command, Args::Empty) {
                    return Err(at(E::HealthcheckNoneArguments));
                }
                (Flags::default(), What::Healthcheck(HealthcheckKind::None))
            } else {
                let flags = Flags::parse(
                    node,
                    &[
                        ("interval", Kind::String),
                        ("timeout", Kind::String),
                        ("start-period", Kind::String),
                        ("start-interval", Kind::String),
                        ("retries", Kind::String),
                    ],
                )?;
                if typ != "CMD" {
                    return Err(at(E::HealthcheckType { kind: typ }));
                }
                let line = match &**command {
                    Args::Exec(items) if !items.is_empty() => CommandLine::Exec(items.clone()),
                    Args::Shell(t) if !t.is_empty() => CommandLine::Shell(t.clone()),
                    _ => return Err(at(E::HealthcheckMissingCommand)),
                };
                let interval = |name: &str| match flags.string(name) {
                    None => Ok(None),
                    Some(g) => health_interval(g.value).map_err(|e| {
                        let kind = match e {
                            IntervalError::TooShort => E::IntervalTooShort { flag: name.into() },
                            IntervalError::Invalid => E::InvalidFlagValue {
                                flag: name.into(),
                                value: g.value.into(),
                                reason: "not a duration such as 30s or 1m30s".into(),
                            },
                        };
                        InstructionError::at(kind, node, g.span, g.raw.chars().count())
                    }),
                };
                let check = HealthcheckKind::Cmd {
                    command: line,
                    interval: interval("interval")?,
                    timeout: interval("timeout")?,
                    start_period: interval("start-period")?,
                    start_interval: interval("start-interval")?,
                    retries: match flags.string("retries") {
                        None => None,
                        Some(g) if g.value.is_empty() => None,
                        Some(g) => {
                            let fail = |kind| {
                                InstructionError::at(kind, node, g.span, g.raw.chars().count())
                            };
                            let n: i64 = g
                                .value
                                .parse()
                                .ok()
                                .filter(|n| i32::try_from(*n).is_ok())
                                .ok_or_else(|| {
                                    fail(E::InvalidFlagValue {
                                        flag: "retries".into(),
                                        value: g.value.into(),
                                        reason: "not a whole number".into(),
                                    })
                                })?;
                            let n = u32::try_from(n)
                                .map_err(|_| fail(E::NegativeRetries { value: n }))?;
                            Some(n)
                        }
                    },
                };
                (flags, What::Healthcheck(check))
            }
        }
        Instruction::Onbuild => {
            let flags = Flags::parse(node, NO_FLAGS)?;
            let Args::Onbuild(inner) = &node.args else {
                return Err(at_least_one());
            };
            match inner.instruction {
                Instruction::Onbuild => return Err(at(E::OnbuildChain)),
                Instruction::From | Instruction::Maintainer => {
                    return Err(at(E::OnbuildForbidden {
                        instruction: inner.keyword.to_uppercase(),
                    }));
                }
                _ => {}
            }
            let mut expression = inner.original.clone();
            for heredoc in &inner.heredocs {
                expression.push('\n');
                expression.push_str(&heredoc.content);
                expression.push_str(&heredoc.name);
            }
            let what = What::OnBuild {
                instruction: inner.instruction,
                expression,
                inner,
            };
            (flags, what)
        }
    };
    Ok(Checked { node, flags, what })
}

/// `^[a-z][a-z0-9-_.]*$`
fn is_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}
