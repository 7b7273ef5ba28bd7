//! The build checks that need only the syntax tree.
//!
//! They are reported in the order BuildKit reports them (the parser's findings, then each
//! instruction as it is read, then the stage names and the instruction casing, then each stage
//! as it is dispatched) and handed to the [`Linter`] sorted by line.
//!
//! What BuildKit checks while dispatching a stage (`JSONArgsRecommended`,
//! `MultipleInstructionsDisallowed`, `LegacyKeyValueFormat`, `ExposeProtoCasing`,
//! `ExposeInvalidFormat`) is checked only in the stages a build needs when [`Scope::target`] is
//! set, and in every stage otherwise, as `docker build --check` does.

use std::collections::BTreeMap;
use std::net::IpAddr;

use thiserror::Error;

use super::{Linter, Rule};
use crate::parser::{Args, Dockerfile, Instruction, Node, Separator, Span, go_quote};
use crate::shell::{Lex, NoVars};

/// Which stages to check, and the build arguments in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// `--target`: the stage-level checks run only in this stage and in the stages it needs
    /// (its base stage, the sources of `COPY --from` and `RUN --mount=from=`, transitively).
    /// `None` checks every stage.
    pub target: Option<String>,
    /// `--build-arg` values. They take part in resolving which stage a `FROM` names.
    pub build_args: BTreeMap<String, String>,
}

impl Scope {
    /// Every stage, with no build arguments.
    pub fn all() -> Self {
        Scope::default()
    }

    /// The stages that `target` needs.
    pub fn target(target: impl Into<String>) -> Self {
        Scope {
            target: Some(target.into()),
            build_args: BTreeMap::new(),
        }
    }

    /// Adds build arguments.
    pub fn with_build_args<K: Into<String>, V: Into<String>>(
        mut self,
        args: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.build_args
            .extend(args.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }
}

/// `--target` names no stage.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("target stage {} could not be found", go_quote(.name))]
pub struct UnknownTarget {
    /// The target asked for.
    pub name: String,
}

/// Runs the syntax-tree checks on every stage of `dockerfile`, what `docker build --check` does
/// without `--target`.
///
/// `source` is the text `dockerfile` was parsed from: `InvalidDefinitionDescription` looks at
/// the line above an instruction.
pub fn check(dockerfile: &Dockerfile, source: &str, linter: &mut Linter) {
    let result = check_scoped(dockerfile, source, &Scope::all(), linter);
    debug_assert!(result.is_ok(), "checking every stage cannot miss a target");
}

/// Runs the syntax-tree checks on the stages `scope` selects.
///
/// When the target is not found, the checks that do not depend on it have been reported and
/// the error is returned, as BuildKit reports them before failing.
pub fn check_scoped(
    dockerfile: &Dockerfile,
    source: &str,
    scope: &Scope,
    linter: &mut Linter,
) -> Result<(), UnknownTarget> {
    let tree = Tree::new(dockerfile);
    let lines: Vec<&str> = source.split('\n').collect();
    let lex = Lex::new(dockerfile.escape);
    let mut findings = Findings::default();

    empty_continuations(dockerfile, &mut findings);
    for node in &dockerfile.instructions {
        instruction(node, &lines, &mut findings);
    }
    stage_names(&tree, &mut findings);
    instruction_casing(&tree, &mut findings);

    let resolved = Resolved::new(&tree, &lex, &scope.build_args);
    let in_scope = match &scope.target {
        None => vec![true; tree.stages.len()],
        Some(target) => match resolved.needed_by(&tree, target) {
            Some(needed) => needed,
            None => {
                findings.flush(linter);
                return Err(UnknownTarget {
                    name: target.clone(),
                });
            }
        },
    };
    let mut shell_at_end = vec![false; tree.stages.len()];
    for (i, stage) in tree.stages.iter().enumerate() {
        let inherited = resolved.base[i].is_some_and(|b| shell_at_end[b]);
        shell_at_end[i] = dispatch(stage, inherited, &lex, in_scope[i], &mut findings);
    }
    findings.flush(linter);
    Ok(())
}

/// Findings in the order they were made, before the `# check=` directive is applied.
#[derive(Default)]
struct Findings(Vec<(Rule, Span, String)>);

impl Findings {
    fn add(&mut self, rule: Rule, span: &Span, message: String) {
        self.0.push((rule, span.clone(), message));
    }

    /// Hands the findings to the linter, sorted by line (findings on one line keep their order).
    fn flush(self, linter: &mut Linter) {
        let mut list = self.0;
        list.sort_by_key(|(_, span, _)| span.line);
        for (rule, span, message) in list {
            linter.report(rule, &span, message);
        }
    }
}

/// The instructions grouped as BuildKit groups them: the global ones before the first `FROM`,
/// then one stage per `FROM`.
struct Tree<'a> {
    meta: Vec<&'a Node>,
    stages: Vec<Stage<'a>>,
}

struct Stage<'a> {
    from: &'a Node,
    /// The name after `AS`, lower-cased as BuildKit keys stages; empty when there is none (or
    /// when it is not a valid name, which the lowering reports).
    name: String,
    /// The base image or stage, as written.
    base: String,
    commands: Vec<&'a Node>,
}

impl<'a> Tree<'a> {
    fn new(dockerfile: &'a Dockerfile) -> Self {
        let mut tree = Tree {
            meta: Vec::new(),
            stages: Vec::new(),
        };
        for node in &dockerfile.instructions {
            if node.instruction == Instruction::From {
                let args = words(node);
                tree.stages.push(Stage {
                    from: node,
                    name: stage_name(args).unwrap_or_default(),
                    base: args.first().cloned().unwrap_or_default(),
                    commands: Vec::new(),
                });
            } else if let Some(stage) = tree.stages.last_mut() {
                stage.commands.push(node);
            } else {
                tree.meta.push(node);
            }
        }
        tree
    }
}

fn words(node: &Node) -> &[String] {
    match &node.args {
        Args::Words(words) => words,
        _ => &[],
    }
}

/// The stage name of `FROM image AS name`, lower-cased, when it is a valid one.
fn stage_name(args: &[String]) -> Option<String> {
    if args.len() != 3 || !args[1].eq_ignore_ascii_case("as") {
        return None;
    }
    let name = args[2].to_lowercase();
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    valid.then_some(name)
}

fn is_lower(s: &str) -> bool {
    s == s.to_lowercase()
}

fn is_upper(s: &str) -> bool {
    s == s.to_uppercase()
}

/// `NoEmptyContinuation`, from the parser's findings. BuildKit places it on the last line of
/// the instruction (before any here-document body).
fn empty_continuations(dockerfile: &Dockerfile, findings: &mut Findings) {
    for warning in &dockerfile.warnings {
        if warning.rule != Rule::NoEmptyContinuation.name() {
            continue;
        }
        let line = dockerfile
            .instructions
            .iter()
            .find(|n| n.span.line <= warning.span.line && warning.span.line <= n.span.end_line)
            .map_or(warning.span.line, last_line_of_text);
        let span = Span {
            line,
            column: 1,
            end_line: line,
            ..warning.span.clone()
        };
        findings.add(
            Rule::NoEmptyContinuation,
            &span,
            "Empty continuation line".to_string(),
        );
    }
}

/// The last line of an instruction's own text: its last continuation line, before the bodies
/// of its here-documents.
fn last_line_of_text(node: &Node) -> usize {
    let target = match &node.args {
        Args::Onbuild(inner) => inner.as_ref(),
        _ => node,
    };
    match target.heredocs.first() {
        Some(heredoc) => {
            let body = heredoc.content.split_inclusive('\n').count();
            heredoc.span.end_line.saturating_sub(body + 1)
        }
        None => node.span.end_line,
    }
}

/// What BuildKit checks as it reads each instruction: `MaintainerDeprecated`,
/// `StageNameCasing`, `FromAsCasing` and `InvalidDefinitionDescription`.
fn instruction(node: &Node, lines: &[&str], findings: &mut Findings) {
    match node.instruction {
        Instruction::Maintainer => findings.add(
            Rule::MaintainerDeprecated,
            &node.span,
            "Maintainer instruction is deprecated in favor of using label".to_string(),
        ),
        Instruction::From => {
            let args = words(node);
            if args.len() == 3 && !is_lower(&args[2]) {
                findings.add(
                    Rule::StageNameCasing,
                    &node.span,
                    format!("Stage name '{}' should be lowercase", args[2]),
                );
            }
            if !from_matches_as(&node.keyword, args) {
                findings.add(
                    Rule::FromAsCasing,
                    &node.span,
                    format!(
                        "'{}' and '{}' keywords' casing do not match",
                        args[1], node.keyword
                    ),
                );
            }
            if let Some(name) = stage_name(args) {
                definition_description("FROM", &[name], node, lines, findings);
            }
        }
        Instruction::Arg => {
            let keys: Vec<String> = words(node)
                .iter()
                .map(|w| w.split_once('=').map_or(w.as_str(), |(k, _)| k).to_string())
                .collect();
            definition_description("ARG", &keys, node, lines, findings);
        }
        _ => {}
    }
}

/// Whether `AS` is cased like `FROM`. A `FROM` keyword of mixed case is left to
/// `ConsistentInstructionCasing`.
fn from_matches_as(keyword: &str, args: &[String]) -> bool {
    if args.len() < 3 {
        return true;
    }
    if is_lower(keyword) {
        is_lower(&args[1])
    } else if is_upper(keyword) {
        is_upper(&args[1])
    } else {
        true
    }
}

/// `InvalidDefinitionDescription`: the comment right above a named stage or an `ARG` should
/// start with the name it describes.
///
/// Only a comment on the line directly above counts: the rule's documentation has a blank line
/// separate a comment from the instruction.
fn definition_description(
    instruction: &str,
    keys: &[String],
    node: &Node,
    lines: &[&str],
    findings: &mut Findings,
) {
    let Some(comment) = node.comments.last() else {
        return;
    };
    if keys.is_empty() {
        return;
    }
    let above = node
        .span
        .line
        .checked_sub(2)
        .and_then(|i| lines.get(i))
        .is_some_and(|l| l.trim_start().starts_with('#'));
    if !above {
        return;
    }
    let first = comment.split(' ').next().unwrap_or_default();
    if keys.iter().any(|k| k == first) {
        return;
    }
    let example = if keys.len() > 1 {
        "<arg_key>"
    } else {
        keys[0].as_str()
    };
    findings.add(
        Rule::InvalidDefinitionDescription,
        &node.span,
        format!("Comment for {instruction} should follow the format: `# {example} <description>`"),
    );
}

/// `ReservedStageName` and `DuplicateStageName`.
fn stage_names(tree: &Tree<'_>, findings: &mut Findings) {
    let mut seen: Vec<&str> = Vec::new();
    for stage in &tree.stages {
        if stage.name.is_empty() {
            continue;
        }
        if matches!(stage.name.as_str(), "context" | "scratch") {
            findings.add(
                Rule::ReservedStageName,
                &stage.from.span,
                format!(
                    "Stage name should not use the same name as reserved stage {}",
                    go_quote(&stage.name)
                ),
            );
        }
        if seen.contains(&stage.name.as_str()) {
            findings.add(
                Rule::DuplicateStageName,
                &stage.from.span,
                format!(
                    "Duplicate stage name {}, stage names should be unique",
                    go_quote(&stage.name)
                ),
            );
        }
        seen.push(&stage.name);
    }
}

/// `ConsistentInstructionCasing`: every instruction keyword of the stages (the global `ARG`s
/// do not count) should be all lower or all upper case, like the majority; a tie counts as
/// upper case.
fn instruction_casing(tree: &Tree<'_>, findings: &mut Findings) {
    let keywords = || {
        tree.stages
            .iter()
            .flat_map(|s| std::iter::once(s.from).chain(s.commands.iter().copied()))
    };
    let (mut lower, mut upper) = (0usize, 0usize);
    for node in keywords() {
        if is_lower(&node.keyword) {
            lower += 1;
        } else if is_upper(&node.keyword) {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    for node in keywords() {
        let casing = if majority_lower && !is_lower(&node.keyword) {
            "lowercase"
        } else if !majority_lower && !is_upper(&node.keyword) {
            "uppercase"
        } else {
            continue;
        };
        findings.add(
            Rule::ConsistentInstructionCasing,
            &node.span,
            format!(
                "Command '{}' should match the case of the command majority ({casing})",
                node.keyword
            ),
        );
    }
}

/// What BuildKit checks as it dispatches one stage. `shell` tells whether a `SHELL` is in
/// force from the base stage; findings are made only when `report` is set. Returns whether a
/// `SHELL` is in force at the end of the stage.
fn dispatch(
    stage: &Stage<'_>,
    mut shell: bool,
    lex: &Lex,
    report: bool,
    findings: &mut Findings,
) -> bool {
    let mut scratch = Findings::default();
    let out = if report { findings } else { &mut scratch };
    let (mut cmd, mut entrypoint, mut healthcheck) = (None, None, None);
    for node in &stage.commands {
        let seen = match node.instruction {
            Instruction::Cmd => Some(&mut cmd),
            Instruction::Entrypoint => Some(&mut entrypoint),
            Instruction::Healthcheck => Some(&mut healthcheck),
            _ => None,
        };
        if let Some(seen) = seen {
            // The earlier instruction is the one that gets ignored, so it is the one reported.
            if let Some(previous) = seen.replace(&node.span) {
                out.add(
                    Rule::MultipleInstructionsDisallowed,
                    previous,
                    format!(
                        "Multiple {} instructions should not be used in the same stage because \
                         only the last one will be used",
                        node.keyword
                    ),
                );
            }
        }
        match node.instruction {
            Instruction::Cmd | Instruction::Entrypoint if !node.args.is_exec() && !shell => {
                out.add(
                    Rule::JSONArgsRecommended,
                    &node.span,
                    format!(
                        "JSON arguments recommended for {} to prevent unintended behavior \
                         related to OS signals",
                        node.keyword
                    ),
                );
            }
            Instruction::Shell => {
                shell = matches!(&node.args, Args::Exec(items) if !items.is_empty());
            }
            Instruction::Env | Instruction::Label => {
                if let Args::KeyValues(pairs) = &node.args {
                    for _ in pairs.iter().filter(|p| p.separator == Separator::Space) {
                        let kw = &node.keyword;
                        out.add(
                            Rule::LegacyKeyValueFormat,
                            &node.span,
                            format!(
                                "\"{kw} key=value\" should be used instead of legacy \"{kw} key \
                                 value\" format"
                            ),
                        );
                    }
                }
            }
            Instruction::Expose => expose(node, lex, out),
            _ => {}
        }
    }
    shell
}

/// `ExposeProtoCasing` and `ExposeInvalidFormat`, checked port by port as BuildKit parses
/// them: the first port that does not parse ends the instruction (the build fails there).
///
/// A word that refers to a variable is skipped: its value is known only once the instruction
/// is lowered with the ARG and ENV values in scope.
fn expose(node: &Node, lex: &Lex, findings: &mut Findings) {
    for word in words(node) {
        let Ok(expansion) = lex.expand(word, &NoVars) else {
            return;
        };
        if !expansion.matched.is_empty() || !expansion.unmatched.is_empty() {
            continue;
        }
        for port in &expansion.words {
            let (ip, host_port, container) = split_parts(port);
            let Some((container_port, proto)) = split_proto_port(container) else {
                return;
            };
            if !is_lower(proto) {
                findings.add(
                    Rule::ExposeProtoCasing,
                    &node.span,
                    format!("Defined protocol '{port}' in EXPOSE instruction should be lowercase"),
                );
            }
            if !ip.is_empty() || !host_port.is_empty() {
                findings.add(
                    Rule::ExposeInvalidFormat,
                    &node.span,
                    format!(
                        "EXPOSE instruction should not define an IP address or host-port \
                         mapping, found '{port}'"
                    ),
                );
            }
            if !port_spec_is_valid(&ip, host_port, container_port) {
                return;
            }
        }
    }
}

/// `[ip:]host_port:container_port[/proto]` into its three parts (an IPv6 address keeps its
/// colons).
fn split_parts(raw: &str) -> (String, &str, &str) {
    let parts: Vec<&str> = raw.split(':').collect();
    match parts.len() {
        1 => (String::new(), "", parts[0]),
        2 => (String::new(), parts[0], parts[1]),
        n => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    }
}

/// `port[/proto]` into the port and the protocol as written (`tcp` when there is none), or
/// `None` when the port is missing or the protocol is not tcp, udp or sctp.
fn split_proto_port(raw: &str) -> Option<(&str, &str)> {
    let (port, proto) = raw.split_once('/').unwrap_or((raw, ""));
    if port.is_empty() {
        return None;
    }
    match proto.to_ascii_lowercase().as_str() {
        "" => Some((port, "tcp")),
        "tcp" | "udp" | "sctp" => Some((port, proto)),
        _ => None,
    }
}

/// Whether BuildKit accepts the rest of a port spec: the IP address and the port ranges.
fn port_spec_is_valid(ip: &str, host_port: &str, container_port: &str) -> bool {
    let ip = match ip.strip_prefix('[') {
        Some(rest) => match rest.strip_suffix(']') {
            Some(inner) => inner,
            None => return false,
        },
        None => ip,
    };
    if !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
        return false;
    }
    let Some((start, end)) = port_range(container_port) else {
        return false;
    };
    if !host_port.is_empty() {
        let Some((host_start, host_end)) = port_range(host_port) else {
            return false;
        };
        if end - start != host_end - host_start && end != start {
            return false;
        }
    }
    true
}

/// `port` or `start-end`, each from 0 to 65535, `end` not below `start`.
fn port_range(spec: &str) -> Option<(i64, i64)> {
    let number = |s: &str| s.parse::<i64>().ok().filter(|p| (0..=65535).contains(p));
    let (start, end) = match spec.split_once('-') {
        Some((s, e)) if s != e => (s, Some(e)),
        Some((s, _)) => (s, None),
        None => (spec, None),
    };
    let start = number(start)?;
    match end {
        None => Some((start, start)),
        Some(end) => {
            let end = number(end)?;
            (end >= start).then_some((start, end))
        }
    }
}

/// Which stage each `FROM` builds on, and what else each stage reads from, with the global
/// `ARG`s and the build arguments applied.
struct Resolved {
    /// The earlier stage a stage's `FROM` names.
    base: Vec<Option<usize>>,
    /// The stages each stage needs: its base and its `COPY --from` and `RUN --mount=from=`
    /// sources.
    deps: Vec<Vec<usize>>,
}

impl Resolved {
    fn new(tree: &Tree<'_>, lex: &Lex, build_args: &BTreeMap<String, String>) -> Self {
        let env = global_args(&tree.meta, lex, build_args);
        let by_name = |name: &str, before: usize| {
            tree.stages[..before]
                .iter()
                .rposition(|s| !s.name.is_empty() && s.name == name)
        };
        let mut resolved = Resolved {
            base: Vec::with_capacity(tree.stages.len()),
            deps: Vec::with_capacity(tree.stages.len()),
        };
        for (i, stage) in tree.stages.iter().enumerate() {
            let base_name = lex
                .process_word(&stage.base, env.as_slice())
                .unwrap_or_else(|_| stage.base.clone());
            let base = by_name(&base_name, i);
            let mut deps: Vec<usize> = base.into_iter().collect();
            for node in &stage.commands {
                match node.instruction {
                    Instruction::Copy => {
                        if let Some(from) = node.flag("from").and_then(|f| f.value.as_deref()) {
                            let source = match from.parse::<usize>() {
                                Ok(index) => (index < tree.stages.len()).then_some(index),
                                Err(_) => by_name(&from.to_lowercase(), tree.stages.len()),
                            };
                            deps.extend(source);
                        }
                    }
                    Instruction::Run => {
                        for flag in node.flags.iter().filter(|f| f.name == "mount") {
                            let from = flag.value.as_deref().and_then(mount_source);
                            if let Some(from) = from {
                                deps.extend(by_name(&from.to_lowercase(), tree.stages.len()));
                            }
                        }
                    }
                    _ => {}
                }
            }
            resolved.base.push(base);
            resolved.deps.push(deps);
        }
        resolved
    }

    /// The stages `target` needs (itself included), or `None` when no stage has that name.
    fn needed_by(&self, tree: &Tree<'_>, target: &str) -> Option<Vec<bool>> {
        let target = target.to_lowercase();
        let start = tree
            .stages
            .iter()
            .rposition(|s| !s.name.is_empty() && s.name == target)?;
        let mut needed = vec![false; tree.stages.len()];
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut needed[i], true) {
                stack.extend(self.deps[i].iter().copied());
            }
        }
        Some(needed)
    }
}

/// The `from=` of a `RUN --mount` value, unless the mount is a tmpfs.
fn mount_source(value: &str) -> Option<&str> {
    let mut from = None;
    for field in value.split(',') {
        let (key, v) = field.split_once('=').unwrap_or((field, ""));
        let v = v.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "from" if !v.is_empty() => from = Some(v),
            "type" if v.eq_ignore_ascii_case("tmpfs") => return None,
            _ => {}
        }
    }
    from
}

/// The global `ARG`s: build arguments win over defaults, and a default may use the `ARG`s
/// before it.
fn global_args(
    meta: &[&Node],
    lex: &Lex,
    build_args: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for node in meta.iter().filter(|n| n.instruction == Instruction::Arg) {
        for word in words(node) {
            let (key, default) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word.as_str(), None),
            };
            let value = match (build_args.get(key), default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => lex
                    .process_word(d, env.as_slice())
                    .unwrap_or_else(|_| d.to_string()),
                (None, None) => continue,
            };
            env.push((key.to_string(), value));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() {
        assert_eq!(split_parts("80"), (String::new(), "", "80"));
        assert_eq!(split_parts("8080:80"), (String::new(), "8080", "80"));
        assert_eq!(
            split_parts("127.0.0.1:80:80/tcp"),
            ("127.0.0.1".to_string(), "80", "80/tcp")
        );
        assert_eq!(
            split_parts("[::1]:80:80"),
            ("[::1]".to_string(), "80", "80")
        );
        assert_eq!(split_proto_port("80/TcP"), Some(("80", "TcP")));
        assert_eq!(split_proto_port("80"), Some(("80", "tcp")));
        assert_eq!(split_proto_port("80/http"), None);
        assert_eq!(split_proto_port("/tcp"), None);
        assert_eq!(port_range("8000-8010"), Some((8000, 8010)));
        assert_eq!(port_range("80-80"), Some((80, 80)));
        assert_eq!(port_range("90-80"), None);
        assert_eq!(port_range("70000"), None);
        assert!(port_spec_is_valid("[::1]", "80", "80"));
        assert!(!port_spec_is_valid("nope", "80", "80"));
        assert!(!port_spec_is_valid("", "80-81", "90-92"));
    }

    #[test]
    fn mount_sources() {
        assert_eq!(
            mount_source("type=bind,from=build,target=/x"),
            Some("build")
        );
        assert_eq!(mount_source("from=\"b\",type=cache"), Some("b"));
        assert_eq!(mount_source("type=tmpfs,from=b"), None);
        assert_eq!(mount_source("type=secret,id=x"), None);
    }

    #[test]
    fn stage_names_are_lowercased_and_validated() {
        let args = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(stage_name(&args("a AS Build")), Some("build".to_string()));
        assert_eq!(
            stage_name(&args("a as b-1.x_y")),
            Some("b-1.x_y".to_string())
        );
        assert_eq!(stage_name(&args("a AS 1b")), None);
        assert_eq!(stage_name(&args("a")), None);
        assert_eq!(stage_name(&args("a BY b")), None);
    }
}
