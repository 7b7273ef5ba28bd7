//! Errors of lowering, rendered like the parser's: location, source line with a caret, hint.

use std::fmt;

use thiserror::Error;

use super::mount::MountError;
use super::platform::PlatformError;
use crate::parser::{Node, Span, render_diagnostic};
use crate::shell::ExpandError;

/// What is wrong with an instruction, a stage or the build options.
///
/// Messages follow BuildKit's where it has one, so that users find them in its issue tracker.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InstructionErrorKind {
    /// A flag the instruction does not take.
    #[error("unknown flag: --{flag}")]
    UnknownFlag {
        /// The flag's name, without the dashes.
        flag: String,
        /// The closest flag the instruction takes, when one is close enough to be a typo.
        suggestion: Option<String>,
    },
    /// `--name` or `--name=` where a value is needed.
    #[error("missing a value on flag: --{flag}")]
    MissingFlagValue {
        /// The flag.
        flag: String,
    },
    /// A boolean flag with something other than `true` or `false`.
    #[error("expecting boolean value for flag --{flag}, not: {value}")]
    NotBoolean {
        /// The flag.
        flag: String,
        /// What was given.
        value: String,
    },
    /// A flag given twice that may be given once.
    #[error("duplicate flag specified: --{flag}")]
    DuplicateFlag {
        /// The flag.
        flag: String,
    },
    /// A flag whose value is not one the instruction accepts.
    #[error("invalid value {value:?} for flag --{flag}: {reason}")]
    InvalidFlagValue {
        /// The flag.
        flag: String,
        /// The value, after expansion where the flag is expanded.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A `RUN --mount` that does not parse or is inconsistent.
    #[error("{0}")]
    Mount(MountError),
    /// An instruction with too few (or too many) arguments.
    #[error("{instruction} requires {expected}")]
    Arguments {
        /// The instruction, upper case.
        instruction: &'static str,
        /// What it requires, e.g. `at least one argument`.
        expected: &'static str,
    },
    /// `FROM` with a word count other than 1 or 3 (`image AS name`).
    #[error("FROM requires either one or three arguments")]
    FromArguments,
    /// `FROM image AS name` with a name that is not a valid stage name.
    #[error(
        "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
    )]
    InvalidStageName {
        /// The name as written.
        name: String,
    },
    /// An `ARG`, `ENV` or `LABEL` with an empty name.
    #[error("{instruction} names can not be blank")]
    BlankName {
        /// The instruction, upper case.
        instruction: &'static str,
    },
    /// An instruction other than `ARG` before the first `FROM`.
    #[error("no build stage in current context")]
    NoStage,
    /// A Dockerfile with global `ARG`s but no `FROM`.
    #[error("dockerfile contains no stages to build")]
    NoStages,
    /// `ONBUILD ONBUILD ...`.
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChain,
    /// `ONBUILD FROM` or `ONBUILD MAINTAINER`.
    #[error("{instruction} isn't allowed as an ONBUILD trigger")]
    OnbuildForbidden {
        /// The trigger's instruction, upper case.
        instruction: String,
    },
    /// An `ONBUILD` trigger of a base image's configuration that does not parse.
    #[error("invalid ONBUILD trigger {trigger:?} of the base image: {message}")]
    InvalidTrigger {
        /// The trigger text.
        trigger: String,
        /// Why it does not parse.
        message: String,
    },
    /// `SHELL` in shell form.
    #[error("SHELL requires the arguments to be in JSON form")]
    ShellNotJson,
    /// `HEALTHCHECK NONE` followed by something.
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArguments,
    /// `HEALTHCHECK CMD` with no command.
    #[error("Missing command after HEALTHCHECK CMD")]
    HealthcheckMissingCommand,
    /// `HEALTHCHECK` with a type other than `CMD` or `NONE`.
    #[error("Unknown type {kind:?} in HEALTHCHECK (try CMD)")]
    HealthcheckType {
        /// The type, upper case.
        kind: String,
    },
    /// A health check interval below the minimum of 1ms (zero means the default).
    #[error("Interval {flag:?} cannot be less than 1ms")]
    IntervalTooShort {
        /// The flag.
        flag: String,
    },
    /// `--retries` below zero.
    #[error("--retries cannot be negative ({value})")]
    NegativeRetries {
        /// The value given.
        value: i64,
    },
    /// `COPY`/`ADD` with a here-document as destination.
    #[error("{instruction} cannot accept a heredoc as a destination")]
    HeredocDestination {
        /// The instruction, upper case.
        instruction: &'static str,
    },
    /// `ADD --checksum` with more than one source.
    #[error("checksum can't be specified for multiple sources")]
    ChecksumSources,
    /// A `VOLUME` path that is empty.
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    /// An `EXPOSE` port that does not parse.
    #[error("{0}")]
    InvalidPort(String),
    /// A `STOPSIGNAL` that names no signal.
    #[error("Invalid signal: {0}")]
    InvalidSignal(String),
    /// A word that cannot be expanded (bad syntax, `${v:?message}` on an unset variable...).
    #[error("{0}")]
    Expansion(Box<ExpandError>),
    /// A word with `${...}` nested deeper than lowering expands.
    #[error("variable substitution nested more than {limit} levels deep")]
    NestedTooDeep {
        /// The deepest nesting expanded.
        limit: usize,
    },
    /// `FROM` whose image expands to nothing.
    #[error("base name ({name}) should not be blank")]
    BlankBaseName {
        /// The image as written.
        name: String,
    },
    /// `FROM --platform` that expands to nothing.
    #[error("empty platform value from expression {expression}")]
    EmptyPlatform {
        /// The flag's value as written.
        expression: String,
    },
    /// A platform that does not parse.
    #[error("failed to parse platform {value}: {source}")]
    InvalidPlatform {
        /// The platform, after expansion.
        value: String,
        /// Why it does not parse.
        source: PlatformError,
    },
    /// `FROM` with an image name that is not a valid reference.
    #[error("failed to parse stage name {name:?}: invalid reference format")]
    InvalidReference {
        /// The name, after expansion.
        name: String,
    },
    /// `COPY --from=<n>` (or a mount's `from=<n>`) with no stage `n`.
    #[error("invalid stage index {index}")]
    InvalidStageIndex {
        /// The index given.
        index: i64,
    },
    /// `--target` names no stage.
    #[error("target stage {name:?} could not be found")]
    UnknownTarget {
        /// The name given.
        name: String,
        /// The closest stage name, when one is close enough to be a typo.
        suggestion: Option<String>,
    },
}

impl InstructionErrorKind {
    /// A suggestion for fixing the error, when there is a useful one.
    pub fn hint(&self) -> Option<String> {
        match self {
            InstructionErrorKind::UnknownFlag {
                suggestion: Some(s),
                ..
            } => Some(format!("did you mean --{s}?")),
            InstructionErrorKind::MissingFlagValue { flag } => {
                Some(format!("write `--{flag}=<value>`"))
            }
            InstructionErrorKind::NotBoolean { flag, .. } => Some(format!(
                "write `--{flag}`, `--{flag}=true` or `--{flag}=false`"
            )),
            InstructionErrorKind::DuplicateFlag { .. } => Some("give the flag once".to_string()),
            InstructionErrorKind::FromArguments => {
                Some("write `FROM <image> [AS <name>]`".to_string())
            }
            InstructionErrorKind::InvalidStageName { .. } => Some(
                "a stage name starts with a letter and has only letters, digits, `-`, `_` and `.`"
                    .to_string(),
            ),
            InstructionErrorKind::NoStage | InstructionErrorKind::NoStages => Some(
                "only ARG may come before the first FROM; start a stage with `FROM <image>`"
                    .to_string(),
            ),
            InstructionErrorKind::ShellNotJson => {
                Some("write `SHELL [\"executable\", \"parameters\"]`".to_string())
            }
            InstructionErrorKind::HealthcheckType { .. } => Some(
                "write `HEALTHCHECK [OPTIONS] CMD <command>` or `HEALTHCHECK NONE`".to_string(),
            ),
            InstructionErrorKind::IntervalTooShort { .. } => {
                Some("use a duration of at least 1ms, or 0 for the default".to_string())
            }
            InstructionErrorKind::Arguments {
                instruction: "COPY" | "ADD",
                ..
            } => Some("the last argument is the destination".to_string()),
            InstructionErrorKind::InvalidStageIndex { .. } => {
                Some("stages are numbered from 0 in the order of their FROM".to_string())
            }
            InstructionErrorKind::UnknownTarget {
                suggestion: Some(s),
                ..
            } => Some(format!("did you mean {s}?")),
            InstructionErrorKind::Mount(e) => e.hint(),
            _ => None,
        }
    }
}

/// Where an error is: the span, how many characters the fault covers, and the text of the
/// line for the caret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Where the fault starts.
    pub span: Span,
    /// How many characters it covers on its line (at least 1).
    pub width: usize,
    /// The text of line `span.line`, as well as lowering knows it (see
    /// [`InstructionError::with_source`]).
    pub source_line: String,
}

/// An instruction that cannot be lowered, with where and why.
///
/// `Display` renders it like the parser's errors:
///
/// ```text
/// Dockerfile:3:6: unknown flag: --frm
///   |
/// 3 | COPY --frm=build /out /out
///   |      ^^^^^^^^^^^
///   = hint: did you mean --from?
/// ```
///
/// Lowering sees the syntax tree, not the text: the source line is rebuilt from the
/// instruction and is exact for instructions on one line. [`InstructionError::with_source`]
/// puts in the real line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructionError {
    /// What is wrong.
    pub kind: InstructionErrorKind,
    /// Where, when the error has a place in the Dockerfile (`--target` naming no stage has none).
    pub location: Option<Box<Location>>,
}

impl InstructionError {
    /// An error with no place in the Dockerfile.
    pub fn new(kind: InstructionErrorKind) -> Self {
        InstructionError {
            kind,
            location: None,
        }
    }

    /// An error on the whole instruction `node` (its keyword is underlined).
    pub(crate) fn at_node(kind: InstructionErrorKind, node: &Node) -> Self {
        let width = node.keyword.chars().count();
        Self::at(kind, node, &node.span, width)
    }

    /// An error at `span`, inside instruction `node`, covering `width` characters.
    pub(crate) fn at(kind: InstructionErrorKind, node: &Node, span: &Span, width: usize) -> Self {
        let source_line = if span.line == node.span.line {
            let pad = " ".repeat(node.span.column.saturating_sub(1));
            let first = node.original.lines().next().unwrap_or("");
            format!("{pad}{first}")
        } else {
            String::new()
        };
        InstructionError {
            kind,
            location: Some(Box::new(Location {
                span: span.clone(),
                width: width.max(1),
                source_line,
            })),
        }
    }

    /// The span, if the error has a place.
    pub fn span(&self) -> Option<&Span> {
        self.location.as_ref().map(|l| &l.span)
    }

    /// The hint, if any.
    pub fn hint(&self) -> Option<String> {
        self.kind.hint()
    }

    /// Takes the source line for the caret from `source`, the text the Dockerfile was parsed
    /// from.
    pub fn with_source(mut self, source: &str) -> Self {
        if let Some(location) = &mut self.location {
            let source = source.strip_prefix('\u{feff}').unwrap_or(source);
            if let Some(line) = location
                .span
                .line
                .checked_sub(1)
                .and_then(|i| source.split('\n').nth(i))
            {
                location.source_line = line.trim_end_matches('\r').to_string();
            }
        }
        self
    }
}

impl std::error::Error for InstructionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.kind)
    }
}

impl fmt::Display for InstructionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) => render_diagnostic(
                f,
                &l.span,
                &self.kind,
                l.width,
                &l.source_line,
                self.hint().as_deref(),
            ),
            None => {
                write!(f, "{}", self.kind)?;
                if let Some(hint) = self.hint() {
                    write!(f, "\n  = hint: {hint}")?;
                }
                Ok(())
            }
        }
    }
}

impl From<MountError> for InstructionErrorKind {
    fn from(e: MountError) -> Self {
        InstructionErrorKind::Mount(e)
    }
}
