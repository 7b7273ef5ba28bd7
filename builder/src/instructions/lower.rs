//! Lowering: scoping, expansion, stage resolution and the scoped lint rules.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::check::{Checked, What, check};
use super::error::{InstructionError, InstructionErrorKind as E};
use super::flags::Given;
use super::mount::parse_mount;
use super::values::{
    check_chmod, heredoc_name, is_identifier, is_signal, is_valid_reference, looks_secret,
    parse_port, suggest,
};
use super::{
    Add, Arg, ArgDecl, BaseRef, Cmd, Command, Copy, Entrypoint, Env, Expose, FromRef, Healthcheck,
    InlineFile, Label, Maintainer, OnBuild, Platform, Run, Shell, Stage, StopSignal, User, Volume,
    Workdir,
};
use crate::lint::{Linter, Rule};
use crate::parser::{Dockerfile, Instruction, Node, Span};
use crate::shell::{Expansion, Lex};

/// What a build is asked for, besides the Dockerfile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--platform`: the platform of the result; the build platform when `None`.
    pub target_platform: Option<Platform>,
    /// The platform the build runs on; [`Platform::host`] when `None`.
    pub build_platform: Option<Platform>,
    /// `--target`: the stage to build; the last one when `None`.
    pub target: Option<String>,
    /// What is known of the base images, by the name `FROM` gives after expansion (see
    /// [`base_image_names`](Lowered::base_image_names)). An image not listed here has an
    /// unknown environment: `UndefinedVar` is not checked in stages built on it, and its
    /// `ONBUILD` triggers are not run.
    pub base_images: BTreeMap<String, BaseImage>,
}

/// What lowering needs of a base image's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImage {
    /// Its environment (`Config.Env`), in order.
    pub env: Vec<(String, String)>,
    /// Its `ONBUILD` triggers (`Config.OnBuild`), run at the start of a stage built on it.
    pub onbuild: Vec<String>,
}

/// A global `ARG` (one declared before the first `FROM`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaArg {
    /// The name.
    pub name: String,
    /// The default as written, if any.
    pub default: Option<String>,
    /// The value: the build argument, else the default expanded with the earlier global ARGs
    /// and the predefined platform ARGs; `None` when there is none.
    pub value: Option<String>,
    /// Where the `ARG` is.
    pub span: Span,
}

/// A lowered Dockerfile: its stages, typed and expanded, and what the build was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lowered {
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// The global `ARG`s, in order.
    pub meta_args: Vec<MetaArg>,
    /// The predefined platform ARGs (`BUILDPLATFORM`, ..., `TARGETVARIANT`) and their values.
    pub predefined_args: Vec<(String, String)>,
    /// The stage to build.
    pub target: usize,
    /// The platform of the result.
    pub target_platform: Platform,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// The proxy build arguments (`HTTP_PROXY`, `https_proxy`, ...): `RUN` gets them in its
    /// environment without an `ARG`, and they are not part of any step's identity unless a
    /// stage declares them.
    pub proxy_env: Vec<(String, String)>,
    /// Build arguments nothing in the build used, sorted.
    pub unused_build_args: Vec<String>,
}

impl Lowered {
    /// The stage called `name` (any case).
    pub fn stage_by_name(&self, name: &str) -> Option<&Stage> {
        let lower = name.to_lowercase();
        self.stages
            .iter()
            .rev()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
    }

    /// The target stage.
    pub fn target_stage(&self) -> Option<&Stage> {
        self.stages.get(self.target)
    }

    /// The images the stages start from, sorted and without duplicates: the names to look up
    /// for [`BuildOptions::base_images`].
    pub fn base_image_names(&self) -> Vec<&str> {
        let names: BTreeSet<&str> = self
            .stages
            .iter()
            .filter_map(|s| match &s.base {
                BaseRef::Image(name) => Some(name.as_str()),
                _ => None,
            })
            .collect();
        names.into_iter().collect()
    }

    /// The warning for [`Lowered::unused_build_args`], as Docker words it, if there are any.
    pub fn unused_build_args_warning(&self) -> Option<String> {
        (!self.unused_build_args.is_empty()).then(|| {
            format!(
                "One or more build-args [{}] were not consumed",
                self.unused_build_args.join(" ")
            )
        })
    }
}

/// The build arguments that are predefined for proxies.
const PROXY_ARGS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "all_proxy",
];

/// The default `PATH` of a stage built from nothing, as BuildKit sets it.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn is_proxy_arg(name: &str) -> bool {
    PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// A lint finding, kept until it is known whether its stage is built.
struct Finding {
    rule: Rule,
    span: Span,
    message: String,
}

/// The variables of a stage at some point of it.
#[derive(Clone, Default)]
struct Scope {
    /// What expansion sees: `ENV`s and `ARG` values, the later one winning.
    vars: BTreeMap<String, String>,
    /// The stage's declared `ARG` names (values or not), inherited from the base stage.
    declared: HashSet<String>,
    /// Whether `vars` holds everything the base image defines.
    env_known: bool,
    /// Whether a `WORKDIR` was given in the stage or its base stages.
    workdir_set: bool,
    /// The `ONBUILD` triggers registered in the stage itself.
    registered: Vec<OnBuild>,
    /// The environment of `RUN`, built when a `RUN` needs it after a change.
    snapshot: Option<Arc<[(String, String)]>>,
}

impl Scope {
    fn set(&mut self, name: String, value: String) {
        self.vars.insert(name, value);
        self.snapshot = None;
    }

    fn run_env(&mut self) -> Arc<[(String, String)]> {
        if let Some(s) = &self.snapshot {
            return s.clone();
        }
        let env: Arc<[(String, String)]> = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.snapshot = Some(env.clone());
        env
    }
}

/// The values the global scope gives: predefined and global ARGs, later ones winning; a global
/// `ARG` without a value is set to the empty string, as BuildKit does for `FROM`.
struct MetaScope {
    /// Name and value of each, in order (predefined ones first).
    args: Vec<(String, Option<String>)>,
    /// Name to value, for expansion.
    vars: BTreeMap<String, String>,
    /// The names each global ARG's default referred to, by name.
    deps: HashMap<String, BTreeSet<String>>,
}

impl MetaScope {
    fn new(predefined: &[(String, String)]) -> Self {
        let mut scope = MetaScope {
            args: Vec::new(),
            vars: BTreeMap::new(),
            deps: HashMap::new(),
        };
        for (k, v) in predefined {
            scope.push(k.clone(), Some(v.clone()));
        }
        scope
    }

    fn push(&mut self, name: String, value: Option<String>) {
        self.vars
            .insert(name.clone(), value.clone().unwrap_or_default());
        self.args.push((name, value));
    }

    /// The value a stage's `ARG name` (without a default) takes: the last global one.
    fn value(&self, name: &str) -> Option<&Option<String>> {
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    fn keys(&self) -> Vec<&str> {
        self.args.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// The result of lowering one stage, before it is known whether the build needs it.
struct StageResult {
    scope: Scope,
    findings: Vec<Finding>,
    error: Option<InstructionError>,
}

/// Lowers `dockerfile` for the build `options` describe, reporting the scoped lint rules to
/// `linter`.
///
/// Fails on the first instruction that does not check (in the order of the file), then on a
/// global `ARG` or a `FROM` that does not expand, then on an unknown `--target`, then on the
/// first error in a stage the target needs.
pub fn lower(
    dockerfile: &Dockerfile,
    options: &BuildOptions,
    linter: &mut Linter,
) -> Result<Lowered, InstructionError> {
    let lex = Lex::new(dockerfile.escape);
    let build_platform = options
        .build_platform
        .clone()
        .unwrap_or_else(Platform::host);
    let target_platform = options
        .target_platform
        .clone()
        .unwrap_or_else(|| build_platform.clone());

    // 1. Check every instruction, in order, and group them: global ARGs, then stages.
    let mut globals: Vec<Checked<'_>> = Vec::new();
    let mut groups: Vec<(Checked<'_>, Vec<Checked<'_>>)> = Vec::new();
    for node in &dockerfile.instructions {
        let checked = check(node)?;
        if node.instruction == Instruction::From {
            groups.push((checked, Vec::new()));
        } else if let Some((_, commands)) = groups.last_mut() {
            commands.push(checked);
        } else if node.instruction == Instruction::Arg {
            globals.push(checked);
        } else {
            return Err(InstructionError::at_node(E::NoStage, node));
        }
    }
    if groups.is_empty() {
        return Err(match dockerfile.instructions.first() {
            Some(node) => InstructionError::at_node(E::NoStages, node),
            None => InstructionError::new(E::NoStages),
        });
    }

    // 2. The global scope: predefined platform ARGs, then the global ARGs.
    let mut predefined = vec![
        ("BUILDPLATFORM".to_string(), build_platform.to_string()),
        ("BUILDOS".to_string(), build_platform.os.clone()),
        ("BUILDARCH".to_string(), build_platform.architecture.clone()),
        ("BUILDVARIANT".to_string(), build_platform.variant.clone()),
        ("TARGETPLATFORM".to_string(), target_platform.to_string()),
        ("TARGETOS".to_string(), target_platform.os.clone()),
        (
            "TARGETARCH".to_string(),
            target_platform.architecture.clone(),
        ),
        ("TARGETVARIANT".to_string(), target_platform.variant.clone()),
    ];
    for (name, value) in &mut predefined {
        if let Some(v) = options.build_args.get(name.as_str()) {
            value.clone_from(v);
        }
    }
    let no_build_args = BTreeMap::new();
    let defaults_only = meta_scope(&lex, &predefined, &globals, &no_build_args).ok();
    let meta = meta_scope(&lex, &predefined, &globals, &options.build_args)?;
    let meta_args: Vec<MetaArg> = globals
        .iter()
        .flat_map(|c| {
            let What::Arg(decls) = &c.what else {
                return Vec::new();
            };
            decls
                .iter()
                .map(|(name, default)| MetaArg {
                    name: name.to_string(),
                    default: default.map(str::to_string),
                    value: None,
                    span: c.node.span.clone(),
                })
                .collect()
        })
        .zip(meta.args.iter().skip(predefined.len()))
        .map(|(mut m, (_, value))| {
            m.value.clone_from(value);
            m
        })
        .collect();

    // 3. Each FROM, with the global scope only.
    if let Some(defaults) = &defaults_only {
        for (from, _) in &groups {
            let What::From { image, .. } = &from.what else {
                continue;
            };
            match lex_expand(&lex, image, &defaults.vars) {
                Ok(e) if !is_valid_reference(&e.value) => linter.report(
                    Rule::InvalidDefaultArgInFrom,
                    &from.node.span,
                    "Using the global ARGs with default values should produce a valid build.",
                ),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    let meta_keys = meta.keys();
    let mut used: HashSet<String> = HashSet::new();
    let mut stages: Vec<Stage> = Vec::with_capacity(groups.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut from_used: Vec<BTreeSet<String>> = Vec::with_capacity(groups.len());
    for (index, (from, _)) in groups.iter().enumerate() {
        let node = from.node;
        let What::From { image, name } = &from.what else {
            return Err(InstructionError::at_node(E::NoStage, node));
        };
        let mut matched = BTreeSet::new();
        let expansion =
            lex_expand(&lex, image, &meta.vars).map_err(|e| InstructionError::at_node(e, node))?;
        report_undeclared_in_from(linter, &expansion, &meta_keys, &node.span);
        matched.extend(expansion.matched.iter().cloned());
        let base_name = expansion.value;
        if base_name.is_empty() {
            return Err(InstructionError::at_node(
                E::BlankBaseName {
                    name: image.to_string(),
                },
                node,
            ));
        }
        let platform = match from.flags.string("platform") {
            None => None,
            Some(given) => {
                let flag_error =
                    |kind| InstructionError::at(kind, node, given.span, given.raw.chars().count());
                let expansion = lex_expand(&lex, given.value, &meta.vars).map_err(flag_error)?;
                report_undeclared_in_from(linter, &expansion, &meta_keys, &node.span);
                report_platform_rules(
                    linter,
                    given.value,
                    &expansion,
                    &meta.vars,
                    name.as_deref().unwrap_or(""),
                    &node.span,
                );
                matched.extend(expansion.matched.iter().cloned());
                if expansion.value.is_empty() {
                    return Err(flag_error(E::EmptyPlatform {
                        expression: given.value.to_string(),
                    }));
                }
                Some(Platform::parse(&expansion.value).map_err(|source| {
                    flag_error(E::InvalidPlatform {
                        value: expansion.value.clone(),
                        source,
                    })
                })?)
            }
        };
        let base = if let Some(&i) = names.get(&base_name) {
            BaseRef::Stage(i)
        } else if base_name == "scratch" {
            BaseRef::Scratch
        } else {
            if !is_valid_reference(&base_name) {
                return Err(InstructionError::at_node(
                    E::InvalidReference {
                        name: base_name.clone(),
                    },
                    node,
                ));
            }
            BaseRef::Image(base_name.clone())
        };
        if let Some(name) = name {
            names.insert(name.clone(), index);
        }
        from_used.push(matched);
        stages.push(Stage {
            name: name.clone(),
            index,
            base_name,
            base,
            platform,
            triggers: Vec::new(),
            commands: Vec::new(),
            reachable: false,
            error: None,
            span: node.span.clone(),
        });
    }

    // 4. The target.
    let target = match &options.target {
        None => stages.len().saturating_sub(1),
        Some(t) => match names.get(&t.to_lowercase()) {
            Some(&i) => i,
            None => {
                let mut known: Vec<&str> = names.keys().map(String::as_str).collect();
                known.sort_unstable();
                return Err(InstructionError::new(E::UnknownTarget {
                    name: t.clone(),
                    suggestion: suggest(&t.to_lowercase(), &known).map(|s| s.to_string()),
                }));
            }
        },
    };

    // 5. Each stage, in order.
    let mut ctx = Ctx {
        lex,
        raw_lex: Lex::new('\\').skip_quotes(true),
        options,
        meta: &meta,
        names: &names,
        stage_count: stages.len(),
        findings: Vec::new(),
        reported: BTreeSet::new(),
    };
    let mut results: Vec<StageResult> = Vec::with_capacity(stages.len());
    for (index, (_, commands)) in groups.iter().enumerate() {
        let Some(stage) = stages.get_mut(index) else {
            continue;
        };
        let (mut scope, triggers) = match &stage.base {
            BaseRef::Stage(i) => match results.get(*i) {
                Some(parent) => {
                    let mut scope = parent.scope.clone();
                    let triggers: Vec<TriggerSource> = scope
                        .registered
                        .drain(..)
                        .map(|t| TriggerSource::Stage(t.node))
                        .collect();
                    (scope, triggers)
                }
                None => (Scope::default(), Vec::new()),
            },
            BaseRef::Scratch => {
                let mut scope = Scope {
                    env_known: true,
                    ..Scope::default()
                };
                scope.set("PATH".into(), DEFAULT_PATH.into());
                (scope, Vec::new())
            }
            BaseRef::Image(name) => match options.base_images.get(name) {
                Some(image) => {
                    let mut scope = Scope {
                        env_known: true,
                        ..Scope::default()
                    };
                    for (k, v) in &image.env {
                        scope.set(k.clone(), v.clone());
                    }
                    // BuildKit gives every stage a PATH.
                    if !scope.vars.contains_key("PATH") {
                        scope.set("PATH".into(), DEFAULT_PATH.into());
                    }
                    let triggers = image
                        .onbuild
                        .iter()
                        .map(|t| TriggerSource::Image(t.clone()))
                        .collect();
                    (scope, triggers)
                }
                None => (Scope::default(), Vec::new()),
            },
        };
        let mut error = None;
        for trigger in triggers {
            match ctx.run_trigger(trigger, stage, &mut scope) {
                Ok(command) => stage.triggers.push(command),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if error.is_none() {
            for checked in commands {
                match ctx.build(checked, &mut scope) {
                    Ok(command) => stage.commands.push(command),
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
        }
        results.push(StageResult {
            scope,
            findings: std::mem::take(&mut ctx.findings),
            error,
        });
    }

    // 6. What the target needs.
    let mut reachable = vec![false; stages.len()];
    let mut stack = vec![target];
    while let Some(i) = stack.pop() {
        let Some(seen) = reachable.get_mut(i) else {
            continue;
        };
        if *seen {
            continue;
        }
        *seen = true;
        if let Some(stage) = stages.get(i) {
            stack.extend(stage.dependencies().into_iter().map(|(d, _)| d));
        }
    }
    for ((stage, result), reach) in stages.iter_mut().zip(results).zip(&reachable) {
        stage.reachable = *reach;
        if *reach {
            if let Some(e) = result.error {
                return Err(e);
            }
            for f in result.findings {
                linter.report(f.rule, &f.span, f.message);
            }
            used.extend(result.scope.declared.iter().cloned());
        } else {
            stage.error = result.error.map(Box::new);
        }
    }

    // 7. Build arguments: the proxies, and the ones nothing used.
    for (i, matched) in from_used.iter().enumerate() {
        if reachable.get(i).copied().unwrap_or(false) {
            let mut pending: Vec<String> = matched.iter().cloned().collect();
            while let Some(name) = pending.pop() {
                if let Some(deps) = meta.deps.get(&name) {
                    pending.extend(deps.iter().filter(|d| !used.contains(*d)).cloned());
                }
                used.insert(name);
            }
        }
    }
    let proxy_env: Vec<(String, String)> = options
        .build_args
        .iter()
        .filter(|(k, _)| is_proxy_arg(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let unused_build_args = options
        .build_args
        .keys()
        .filter(|k| {
            !used.contains(*k)
                && !is_proxy_arg(k)
                && !k.starts_with("BUILDKIT_")
                && k.as_str() != "SOURCE_DATE_EPOCH"
        })
        .cloned()
        .collect();

    Ok(Lowered {
        stages,
        meta_args,
        predefined_args: predefined,
        target,
        target_platform,
        build_platform,
        proxy_env,
        unused_build_args,
    })
}

/// Evaluates the global ARGs on top of the predefined ones.
fn meta_scope(
    lex: &Lex,
    predefined: &[(String, String)],
    globals: &[Checked<'_>],
    build_args: &BTreeMap<String, String>,
) -> Result<MetaScope, InstructionError> {
    let mut meta = MetaScope::new(predefined);
    for checked in globals {
        let What::Arg(decls) = &checked.what else {
            continue;
        };
        for (name, default) in decls {
            let value = if let Some(v) = build_args.get(*name) {
                Some(v.clone())
            } else if let Some(default) = default {
                let e = lex_expand(lex, default, &meta.vars)
                    .map_err(|e| InstructionError::at_node(e, checked.node))?;
                meta.deps.insert(name.to_string(), e.matched);
                Some(e.value)
            } else {
                None
            };
            meta.push(name.to_string(), value);
        }
    }
    Ok(meta)
}

/// `UndefinedArgInFrom`: a variable in `FROM` that no global ARG declares.
fn report_undeclared_in_from(
    linter: &mut Linter,
    expansion: &Expansion,
    keys: &[&str],
    span: &Span,
) {
    for name in &expansion.unmatched {
        if !is_identifier(name) || keys.contains(&name.as_str()) {
            continue;
        }
        let mut message = format!("FROM argument '{name}' is not declared");
        if let Some(s) = suggest(name, keys) {
            message.push_str(&format!(" (did you mean {s}?)"));
        }
        linter.report(Rule::UndefinedArgInFrom, span, message);
    }
}

/// `RedundantTargetPlatform` and `FromPlatformFlagConstDisallowed`.
fn report_platform_rules(
    linter: &mut Linter,
    written: &str,
    expansion: &Expansion,
    vars: &BTreeMap<String, String>,
    stage_name: &str,
    span: &Span,
) {
    if expansion.matched.len() == 1
        && expansion.matched.contains("TARGETPLATFORM")
        && vars.get("TARGETPLATFORM") == Some(&expansion.value)
    {
        linter.report(
            Rule::RedundantTargetPlatform,
            span,
            format!(
                "Setting platform to predefined {written} in FROM is redundant as this is the \
                 default behavior"
            ),
        );
    }
    if expansion.matched.is_empty()
        && expansion.unmatched.is_empty()
        && let Ok(p) = Platform::parse(&expansion.value)
        && !stage_name.contains(p.os.as_str())
        && !stage_name.contains(p.architecture.as_str())
    {
        linter.report(
            Rule::FromPlatformFlagConstDisallowed,
            span,
            format!(
                "FROM --platform flag should not use constant value {:?}",
                expansion.value
            ),
        );
    }
}

/// Where an `ONBUILD` trigger comes from.
enum TriggerSource {
    /// A base stage's `ONBUILD`.
    Stage(Box<Node>),
    /// A base image's configuration.
    Image(String),
}

/// What lowering a stage needs besides the stage.
struct Ctx<'a> {
    lex: Lex,
    /// The lexer for here-document bodies: `\` escapes, quotes are kept.
    raw_lex: Lex,
    options: &'a BuildOptions,
    meta: &'a MetaScope,
    names: &'a HashMap<String, usize>,
    stage_count: usize,
    findings: Vec<Finding>,
    /// The undefined variables already reported for the current instruction.
    reported: BTreeSet<String>,
}

impl Ctx<'_> {
    fn run_trigger(
        &mut self,
        trigger: TriggerSource,
        stage: &Stage,
        scope: &mut Scope,
    ) -> Result<Command, InstructionError> {
        match trigger {
            TriggerSource::Stage(node) => {
                let checked = check(&node)?;
                self.build(&checked, scope)
            }
            TriggerSource::Image(text) => {
                let invalid = |message: String| {
                    let mut e = InstructionError::new(E::InvalidTrigger {
                        trigger: text.clone(),
                        message,
                    });
                    e.location = Some(Box::new(super::Location {
                        span: stage.span.clone(),
                        width: 4,
                        source_line: String::new(),
                    }));
                    e
                };
                let parsed = crate::parser::parse(&text, &stage.span.file)
                    .map_err(|e| invalid(e.kind.to_string()))?;
                let [node] = parsed.instructions.as_slice() else {
                    return Err(invalid("a trigger is one instruction".into()));
                };
                if matches!(
                    node.instruction,
                    Instruction::Onbuild | Instruction::From | Instruction::Maintainer
                ) {
                    return Err(invalid(format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        node.keyword.to_uppercase()
                    )));
                }
                let checked = check(node).map_err(|e| invalid(e.kind.to_string()))?;
                let mut command = self
                    .build(&checked, scope)
                    .map_err(|e| invalid(e.kind.to_string()))?;
                set_span(&mut command, stage.span.clone());
                Ok(command)
            }
        }
    }

    /// Expands `word` in `scope`, reporting `UndefinedVar` for what is neither set nor declared.
    fn expand(
        &mut self,
        lex: Lex,
        word: &str,
        scope: &Scope,
        node: &Node,
        at: Option<&Given<'_>>,
    ) -> Result<String, InstructionError> {
        let mut unmatched = Vec::new();
        let quotes = lex != self.raw_lex;
        let value = match expand_simple(word, lex.escape(), quotes, &scope.vars, &mut unmatched) {
            Some(value) => value,
            None => {
                let expansion = lex_expand(&lex, word, &scope.vars).map_err(|kind| match at {
                    Some(g) => InstructionError::at(kind, node, g.span, g.raw.chars().count()),
                    None => InstructionError::at_node(kind, node),
                })?;
                unmatched.extend(expansion.unmatched.into_iter().map(Cow::Owned));
                expansion.value
            }
        };
        if scope.env_known && !unmatched.is_empty() {
            unmatched.sort_unstable();
            unmatched.dedup();
            for name in unmatched {
                if !is_identifier(&name)
                    || scope.declared.contains(name.as_ref())
                    || self.reported.contains(name.as_ref())
                {
                    continue;
                }
                let mut options: Vec<&str> = self.meta.keys();
                options.extend(scope.vars.keys().map(String::as_str));
                options.sort_unstable();
                options.dedup();
                let mut message = format!("Usage of undefined variable '${name}'");
                if let Some(s) = suggest(&name, &options) {
                    message.push_str(&format!(" (did you mean ${s}?)"));
                }
                self.findings.push(Finding {
                    rule: Rule::UndefinedVar,
                    span: node.span.clone(),
                    message,
                });
                self.reported.insert(name.into_owned());
            }
        }
        Ok(value)
    }

    fn word(&mut self, word: &str, scope: &Scope, node: &Node) -> Result<String, InstructionError> {
        self.expand(self.lex, word, scope, node, None)
    }

    fn flag(
        &mut self,
        given: Option<&Given<'_>>,
        scope: &Scope,
        node: &Node,
    ) -> Result<Option<String>, InstructionError> {
        match given {
            None => Ok(None),
            Some(g) => self
                .expand(self.lex, g.value, scope, node, Some(g))
                .map(Some),
        }
    }

    fn report(&mut self, rule: Rule, node: &Node, message: String) {
        self.findings.push(Finding {
            rule,
            span: node.span.clone(),
            message,
        });
    }

    /// What `COPY --from` or a mount's `from` names.
    fn resolve(&self, from: &str) -> Result<FromRef, E> {
        if let Some(index) = go_atoi(from) {
            return match usize::try_from(index) {
                Ok(i) if i < self.stage_count => Ok(FromRef::Stage(i)),
                _ => Err(E::InvalidStageIndex { index }),
            };
        }
        if let Some(&i) = self.names.get(&from.to_lowercase()) {
            return Ok(FromRef::Stage(i));
        }
        match from {
            "context" => Ok(FromRef::Context),
            "scratch" => Ok(FromRef::Scratch),
            _ if is_valid_reference(from) => Ok(FromRef::Image(from.to_string())),
            _ => Err(E::InvalidReference {
                name: from.to_string(),
            }),
        }
    }

    /// Builds the command `checked` describes, in `scope`, and applies it to the scope.
    fn build(
        &mut self,
        checked: &Checked<'_>,
        scope: &mut Scope,
    ) -> Result<Command, InstructionError> {
        self.reported.clear();
        let node = checked.node;
        let span = node.span.clone();
        let flags = &checked.flags;
        let command = match &checked.what {
            What::From { .. } => {
                // Stages are split at FROM: a FROM never reaches here.
                return Err(InstructionError::at_node(E::NoStage, node));
            }
            What::Run {
                network,
                security,
                mounts,
                command,
            } => {
                let mut typed = Vec::with_capacity(mounts.len());
                for (fields, given) in mounts {
                    let mut expanded = Vec::with_capacity(fields.len());
                    for field in fields {
                        match field.split_once('=') {
                            Some((k, v)) => {
                                let v = self.expand(self.lex, v, scope, node, Some(given))?;
                                let mut field = String::with_capacity(k.len() + 1 + v.len());
                                field.push_str(k);
                                field.push('=');
                                field.push_str(&v);
                                expanded.push(field);
                            }
                            None => expanded.push(field.clone()),
                        }
                    }
                    let fail = |kind| {
                        InstructionError::at(kind, node, given.span, given.raw.chars().count())
                    };
                    let mut mount = parse_mount(&expanded).map_err(|e| fail(E::Mount(e)))?;
                    if let Some(from) = &mount.from {
                        mount.from_ref = Some(self.resolve(from).map_err(fail)?);
                    }
                    typed.push(mount);
                }
                Command::Run(Run {
                    mounts: typed,
                    network: *network,
                    security: *security,
                    command: command.clone(),
                    heredocs: node.heredocs.clone(),
                    env: scope.run_env(),
                    span,
                })
            }
            What::Copy { sources, dest } | What::Add { sources, dest } => {
                let chown = self.flag(flags.string("chown"), scope, node)?;
                let chmod = match flags.string("chmod") {
                    None => None,
                    Some(g) => {
                        let value = self.expand(self.lex, g.value, scope, node, Some(g))?;
                        Some(check_chmod(&value).map_err(|()| {
                            InstructionError::at(
                                E::InvalidFlagValue {
                                    flag: "chmod".into(),
                                    value: value.clone(),
                                    reason: "use octal (755) or symbolic (u=rwX,go=rX) notation"
                                        .into(),
                                },
                                node,
                                g.span,
                                g.raw.chars().count(),
                            )
                        })?)
                    }
                };
                let mut exclude = Vec::new();
                for g in flags.strings("exclude") {
                    exclude.push(self.expand(self.lex, g.value, scope, node, Some(g))?);
                }
                let mut paths = Vec::with_capacity(sources.len());
                let mut heredocs = Vec::new();
                for source in *sources {
                    if let Some(name) = heredoc_name(source) {
                        let doc = node.heredocs.iter().find(|h| h.name == name);
                        let data = match doc {
                            Some(h) if h.expand => {
                                self.expand(self.raw_lex, &h.content, scope, node, None)?
                            }
                            Some(h) => h.content.clone(),
                            None => String::new(),
                        };
                        heredocs.push(InlineFile {
                            name: name.to_string(),
                            data,
                        });
                    } else {
                        paths.push(self.word(source, scope, node)?);
                    }
                }
                let dest = self.word(dest, scope, node)?;
                let link = flags.bool("link").unwrap_or(false);
                if matches!(checked.what, What::Copy { .. }) {
                    let from = match flags.string("from") {
                        None => None,
                        Some(g) => {
                            let value = self.expand(self.lex, g.value, scope, node, Some(g))?;
                            Some(self.resolve(&value).map_err(|kind| {
                                InstructionError::at(kind, node, g.span, g.raw.chars().count())
                            })?)
                        }
                    };
                    Command::Copy(Copy {
                        from,
                        chown,
                        chmod,
                        link,
                        parents: flags.bool("parents").unwrap_or(false),
                        exclude,
                        sources: paths,
                        heredocs,
                        dest,
                        span,
                    })
                } else {
                    let checksum = self.flag(flags.string("checksum"), scope, node)?;
                    let checksum = checksum.filter(|c| !c.is_empty());
                    if checksum.is_some() && paths.len() != 1 {
                        return Err(InstructionError::at_node(E::ChecksumSources, node));
                    }
                    Command::Add(Add {
                        checksum,
                        keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
                        unpack: flags.bool("unpack"),
                        chown,
                        chmod,
                        link,
                        exclude,
                        sources: paths,
                        heredocs,
                        dest,
                        span,
                    })
                }
            }
            What::Env(pairs) | What::Label(pairs) => {
                let mut expanded = Vec::with_capacity(pairs.len());
                for pair in *pairs {
                    let key = self.word(&pair.key, scope, node)?;
                    let value = self.word(&pair.value, scope, node)?;
                    expanded.push((key, value));
                }
                if matches!(checked.what, What::Env(_)) {
                    for (key, value) in &expanded {
                        if looks_secret(key) {
                            self.report(Rule::SecretsUsedInArgOrEnv, node, secret_message());
                        }
                        scope.set(key.clone(), value.clone());
                    }
                    Command::Env(Env {
                        pairs: expanded,
                        span,
                    })
                } else {
                    Command::Label(Label {
                        pairs: expanded,
                        span,
                    })
                }
            }
            What::Arg(decls) => {
                let mut args = Vec::with_capacity(decls.len());
                for (name, default) in decls {
                    if looks_secret(name) {
                        self.report(Rule::SecretsUsedInArgOrEnv, node, secret_message());
                    }
                    let mut expanded_default = None;
                    let value = if let Some(v) = self.options.build_args.get(*name) {
                        // The default is not used, so it is expanded without lint findings and
                        // without failing: only the history shows it.
                        expanded_default = default.map(|d| {
                            lex_expand(&self.lex, d, &scope.vars)
                                .map_or_else(|_| d.to_string(), |e| e.value)
                        });
                        Some(v.clone())
                    } else if let Some(default) = default {
                        let expanded = self.word(default, scope, node)?;
                        expanded_default = Some(expanded.clone());
                        Some(expanded)
                    } else {
                        self.meta.value(name).cloned().flatten()
                    };
                    if let Some(v) = &value {
                        scope.set(name.to_string(), v.clone());
                    }
                    scope.declared.insert(name.to_string());
                    args.push(ArgDecl {
                        name: name.to_string(),
                        default: default.map(str::to_string),
                        expanded_default,
                        value,
                    });
                }
                Command::Arg(Arg { args, span })
            }
            What::Expose(words) => {
                let mut ports = Vec::new();
                for word in *words {
                    let split = lex_expand(&self.lex, word, &scope.vars)
                        .map_err(|e| InstructionError::at_node(e, node))?;
                    for port in split.words {
                        ports.push(parse_port(&port).map_err(|message| {
                            InstructionError::at_node(E::InvalidPort(message), node)
                        })?);
                    }
                }
                Command::Expose(Expose { ports, span })
            }
            What::User(user) => Command::User(User {
                user: self.word(user, scope, node)?,
                span,
            }),
            What::Workdir(path) => {
                let path = self.word(path, scope, node)?;
                if !path.starts_with('/') && !scope.workdir_set {
                    self.report(
                        Rule::WorkdirRelativePath,
                        node,
                        format!(
                            "Relative workdir '{path}' can have unexpected results if the base \
                             image changes"
                        ),
                    );
                }
                scope.workdir_set = true;
                Command::Workdir(Workdir { path, span })
            }
            What::Volume(paths) => {
                let mut expanded = Vec::with_capacity(paths.len());
                for path in *paths {
                    let path = self.word(path, scope, node)?;
                    if path.is_empty() {
                        return Err(InstructionError::at_node(E::EmptyVolume, node));
                    }
                    expanded.push(path);
                }
                Command::Volume(Volume {
                    paths: expanded,
                    span,
                })
            }
            What::Entrypoint(command) => Command::Entrypoint(Entrypoint {
                command: command.clone(),
                span,
            }),
            What::Cmd(command) => Command::Cmd(Cmd {
                command: command.clone(),
                span,
            }),
            What::Shell(shell) => Command::Shell(Shell {
                shell: shell.clone(),
                span,
            }),
            What::Healthcheck(check) => Command::Healthcheck(Healthcheck {
                check: check.clone(),
                span,
            }),
            What::StopSignal(signal) => {
                let signal = self.word(signal, scope, node)?;
                if !is_signal(&signal) {
                    return Err(InstructionError::at_node(E::InvalidSignal(signal), node));
                }
                Command::StopSignal(StopSignal { signal, span })
            }
            What::OnBuild {
                instruction,
                expression,
                inner,
            } => {
                let onbuild = OnBuild {
                    instruction: *instruction,
                    expression: expression.clone(),
                    node: Box::new((*inner).clone()),
                    span,
                };
                scope.registered.push(onbuild.clone());
                Command::OnBuild(onbuild)
            }
            What::Maintainer(name) => Command::Maintainer(Maintainer {
                name: name.to_string(),
                span,
            }),
        };
        Ok(command)
    }
}

/// Expands a word as [`Lex`] would when it has no escape character and only `$name` and
/// `${name}` references (in or out of quotes), without the lexer's bookkeeping; the names that
/// were not set are added to `unmatched`. `quotes` says whether quotes are syntax (they are
/// text in here-document bodies). `None` when the word needs the full lexer: an escape, a
/// modifier, or a syntax error to report.
fn expand_simple<'w>(
    word: &'w str,
    escape: char,
    quotes: bool,
    vars: &BTreeMap<String, String>,
    unmatched: &mut Vec<Cow<'w, str>>,
) -> Option<String> {
    if word.contains(escape) {
        return None;
    }
    let special: &[char] = if quotes { &['$', '\'', '"'] } else { &['$'] };
    let mut out = String::with_capacity(word.len());
    let mut quote: Option<char> = None;
    let mut rest = word;
    loop {
        let Some(i) = rest.find(special) else {
            if quote.is_some() {
                return None;
            }
            out.push_str(rest);
            return Some(out);
        };
        out.push_str(rest.get(..i)?);
        let tail = rest.get(i..)?;
        let c = tail.chars().next()?;
        let after = tail.get(1..)?;
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => {
                quote = None;
                rest = after;
                continue;
            }
            (Some('\''), _) | (Some('"'), '\'') => {
                out.push(c);
                rest = after;
                continue;
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                rest = after;
                continue;
            }
            _ => {}
        }
        // A `$`.
        let Some(braced) = after.strip_prefix('{') else {
            let name = parameter_name(after);
            if name.is_empty() {
                out.push('$');
                rest = after;
                continue;
            }
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => unmatched.push(Cow::Borrowed(name)),
            }
            rest = after.get(name.len()..)?;
            continue;
        };
        let name = parameter_name(braced);
        if name.is_empty() {
            return None;
        }
        let tail = braced.get(name.len()..)?;
        let value = vars.get(name);
        if value.is_none() {
            unmatched.push(Cow::Borrowed(name));
        }
        if let Some(after_brace) = tail.strip_prefix('}') {
            out.push_str(value.map_or("", String::as_str));
            rest = after_brace;
            continue;
        }
        // `${name:-word}`, `${name-word}`, `${name:+word}`, `${name+word}` with a plain word.
        let (null_is_unset, tail) = match tail.strip_prefix(':') {
            Some(t) => (true, t),
            None => (false, tail),
        };
        let mut chars = tail.chars();
        let modifier = chars.next().filter(|m| matches!(m, '-' | '+'))?;
        let body = chars.as_str();
        let end = body.find('}')?;
        let word = body.get(..end)?;
        if word.contains(['$', '{', '\'', '"']) {
            return None;
        }
        let unset = match value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match (modifier, unset) {
            ('-', true) | ('+', false) => out.push_str(word),
            ('-', false) => out.push_str(value.map_or("", String::as_str)),
            _ => {}
        }
        rest = body.get(end + 1..)?;
    }
}

/// The parameter name at the start of `s`, as the shell lexer reads it: a run of digits, one
/// special parameter character, or letters, digits and `_`.
fn parameter_name(s: &str) -> &str {
    let mut chars = s.char_indices();
    let end = match chars.next() {
        None => 0,
        Some((_, c)) if c.is_numeric() => s
            .char_indices()
            .find(|(_, c)| !c.is_numeric())
            .map_or(s.len(), |(i, _)| i),
        Some((_, c)) if matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') => c.len_utf8(),
        Some(_) => s
            .char_indices()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
            .map_or(s.len(), |(i, _)| i),
    };
    s.get(..end).unwrap_or("")
}

/// How deeply `${...}` may nest in one word: the lexer recurses once per level, and nothing
/// real comes near this.
const MAX_NESTING: usize = 100;

/// Expands `word` with `lex`, refusing words nested deeper than [`MAX_NESTING`].
fn lex_expand(lex: &Lex, word: &str, vars: &BTreeMap<String, String>) -> Result<Expansion, E> {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut previous = '\0';
    for c in word.chars() {
        if previous == '$' && c == '{' {
            depth += 1;
            deepest = deepest.max(depth);
        } else if c == '}' {
            depth = depth.saturating_sub(1);
        }
        previous = c;
    }
    if deepest > MAX_NESTING {
        return Err(E::NestedTooDeep { limit: MAX_NESTING });
    }
    lex.expand(word, vars)
        .map_err(|e| E::Expansion(Box::new(e)))
}

fn secret_message() -> String {
    "Potentially sensitive data should not be used in the ARG or ENV commands".to_string()
}

/// Go's `strconv.Atoi`: an optional sign and decimal digits.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().or(Some(if s.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    }))
}

fn set_span(command: &mut Command, span: Span) {
    match command {
        Command::Run(c) => c.span = span,
        Command::Copy(c) => c.span = span,
        Command::Add(c) => c.span = span,
        Command::Env(c) => c.span = span,
        Command::Arg(c) => c.span = span,
        Command::Label(c) => c.span = span,
        Command::Expose(c) => c.span = span,
        Command::User(c) => c.span = span,
        Command::Workdir(c) => c.span = span,
        Command::Volume(c) => c.span = span,
        Command::Entrypoint(c) => c.span = span,
        Command::Cmd(c) => c.span = span,
        Command::Shell(c) => c.span = span,
        Command::Healthcheck(c) => c.span = span,
        Command::StopSignal(c) => c.span = span,
        Command::OnBuild(c) => c.span = span,
        Command::Maintainer(c) => c.span = span,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The short cut gives what the lexer gives, whenever it answers.
    #[test]
    fn simple_expansion_agrees_with_the_lexer() {
        let vars: BTreeMap<String, String> =
            [("A", "1"), ("B_c", "two words"), ("é", "x"), ("E", "")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let pieces = [
            "$A",
            "${A}",
            "$",
            "${",
            "}",
            "a",
            "/",
            "$1",
            "$12x",
            "$$",
            "${B_c}",
            "$B_c",
            "é",
            "$é",
            "${A:-x}",
            " ",
            ":",
            "-",
            "$-",
            "{",
            "${}",
            "${:}",
            "${-}",
            "${1}",
            "$@",
            "$0",
            "${A",
            "$Z",
            "${Z}",
            "\\",
            "`",
            "'",
            "\"",
            "\"$A\"",
            "'$A'",
            "\"'\"",
            "'\"'",
            "${A:-d}",
            "${A-d e}",
            "${A:+p}",
            "${A+p}",
            "${Z:-d}",
            "${Z-d}",
            "${Z:+p}",
            "${Z+}",
            "${E:-d}",
            "${E-d}",
            "${E:+p}",
            "${E+p}",
            "${A:-}",
            "${A:=x}",
            "${A:-$Z}",
            "${A#x}",
            "${A:-'q'}",
        ];
        let lexers = [
            (Lex::new('\\'), true),
            (Lex::new('`'), true),
            (Lex::new('\\').skip_quotes(true), false),
        ];
        let mut checked = 0;
        for (lex, quotes) in lexers {
            for a in pieces {
                for b in pieces {
                    for c in ["", "'", "\"", "$A", "x", "${Z}"] {
                        let word = format!("{a}{b}{c}");
                        let mut unmatched = Vec::new();
                        let Some(fast) =
                            expand_simple(&word, lex.escape(), quotes, &vars, &mut unmatched)
                        else {
                            continue;
                        };
                        let full = lex
                            .expand(&word, &vars)
                            .expect("the short cut only takes valid words");
                        assert_eq!(fast, full.value, "{word}");
                        let mut names: Vec<String> =
                            unmatched.into_iter().map(Cow::into_owned).collect();
                        names.sort();
                        names.dedup();
                        let expected: Vec<String> = full.unmatched.into_iter().collect();
                        assert_eq!(names, expected, "{word}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 5_000, "{checked}");
    }
}
