//! Instruction flags, checked as BuildKit's `instructions/bflag.go` checks them.

use super::error::{InstructionError, InstructionErrorKind};
use super::values::suggest;
use crate::parser::{Node, Span};

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `--name`, `--name=true`, `--name=false` (any case); given once.
    Bool,
    /// `--name=value`; given once.
    String,
    /// `--name=value`, any number of times.
    Strings,
}

/// One use of a flag.
#[derive(Debug, Clone)]
pub(crate) struct Given<'a> {
    pub value: &'a str,
    pub span: &'a Span,
    pub raw: &'a str,
}

/// The flags of one instruction, checked against what it takes.
#[derive(Debug, Default)]
pub(crate) struct Flags<'a> {
    given: Vec<(&'static str, Given<'a>)>,
}

impl<'a> Flags<'a> {
    /// Checks `node`'s flags against `spec` (name and kind of each flag it takes).
    pub fn parse(node: &'a Node, spec: &[(&'static str, Kind)]) -> Result<Self, InstructionError> {
        let mut flags = Flags::default();
        for flag in &node.flags {
            let width = flag.raw.chars().count();
            let fail = |kind| InstructionError::at(kind, node, &flag.span, width);
            let Some(&(name, kind)) = spec.iter().find(|(n, _)| *n == flag.name) else {
                let names: Vec<&str> = spec.iter().map(|(n, _)| *n).collect();
                return Err(fail(InstructionErrorKind::UnknownFlag {
                    flag: flag.name.clone(),
                    suggestion: suggest(&flag.name, &names).map(|s| s.to_string()),
                }));
            };
            if kind != Kind::Strings && flags.given.iter().any(|(n, _)| *n == name) {
                return Err(fail(InstructionErrorKind::DuplicateFlag {
                    flag: name.to_string(),
                }));
            }
            let value = match (kind, flag.value.as_deref()) {
                (Kind::Bool, None) => "true",
                (Kind::Bool, Some("")) | (Kind::String | Kind::Strings, None) => {
                    return Err(fail(InstructionErrorKind::MissingFlagValue {
                        flag: name.to_string(),
                    }));
                }
                (Kind::Bool, Some(v)) => {
                    if v.eq_ignore_ascii_case("true") {
                        "true"
                    } else if v.eq_ignore_ascii_case("false") {
                        "false"
                    } else {
                        return Err(fail(InstructionErrorKind::NotBoolean {
                            flag: name.to_string(),
                            value: v.to_string(),
                        }));
                    }
                }
                (Kind::String | Kind::Strings, Some(v)) => v,
            };
            flags.given.push((
                name,
                Given {
                    value,
                    span: &flag.span,
                    raw: &flag.raw,
                },
            ));
        }
        Ok(flags)
    }

    /// The value of a `String` flag, if given.
    pub fn string(&self, name: &str) -> Option<&Given<'a>> {
        self.given.iter().find(|(n, _)| *n == name).map(|(_, g)| g)
    }

    /// The value of a `Bool` flag: `None` when not given.
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|g| g.value == "true")
    }

    /// Every value of a `Strings` flag, in order.
    pub fn strings(&self, name: &str) -> impl Iterator<Item = &Given<'a>> {
        self.given
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, g)| g)
    }
}
