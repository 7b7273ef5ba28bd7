//! Typed commands per stage, lowered from the syntax tree: validated flags, ARG/ENV scoping with
//! build-arg overrides and the predefined platform and proxy args, and word expansion in exactly
//! the places Docker expands.
//!
//! [`lower`] takes a parsed [`Dockerfile`](crate::parser::Dockerfile) and [`BuildOptions`] and
//! returns the [`Lowered`] build: one [`Stage`] per `FROM`, each with its [`Command`]s. It works
//! as BuildKit's `instructions` package and `dockerfile2llb` do:
//!
//! 1. every instruction is checked, in order: its flags (an unknown, duplicate or malformed flag
//!    is an error at the flag), its argument count, stage names, `ONBUILD` restrictions;
//! 2. the global `ARG`s (before the first `FROM`) are evaluated, each build argument replacing
//!    a default, on top of the predefined `TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`,
//!    `TARGETVARIANT`, `BUILDPLATFORM`, `BUILDOS`, `BUILDARCH` and `BUILDVARIANT`;
//! 3. each `FROM` is expanded with those global values only, which names the base: `scratch`,
//!    an earlier stage, or an image;
//! 4. each stage is lowered in order. A stage starts with its base stage's variables and
//!    `ONBUILD` triggers (or, for an image, what [`BuildOptions::base_images`] says of it),
//!    runs the inherited triggers, then its own commands. A global `ARG` is visible in a stage
//!    only once the stage declares it again (`ARG NAME` with no value takes the global value);
//!    an `ARG` value is a build argument if one is given, else its default. `ENV` and `ARG`
//!    values share one scope, the later one winning.
//!
//! Words are expanded (with every `${v...}` modifier of [`crate::shell`]) where Docker expands
//! them: `ADD`, `COPY` (sources, destination, `--from`, `--chown`, `--chmod`, `--exclude`, the
//! bodies of unquoted here-documents), `ENV` and `LABEL` (keys and values), `EXPOSE`, `FROM`
//! (image and `--platform`, with the global ARGs), `STOPSIGNAL`, `USER`, `VOLUME`, `WORKDIR`,
//! `ARG` defaults, `RUN --mount` values and `ADD --checksum`. The command text of `RUN`, `CMD`,
//! `ENTRYPOINT`, `SHELL` and `HEALTHCHECK` is left to the shell, and an `ONBUILD` trigger is
//! kept as written until a stage built on it runs it.
//!
//! The stages the target needs (the target, and what it reaches through `FROM <stage>`,
//! `COPY --from` and `RUN --mount=from=`) are the build. The others are lowered too, but, as
//! BuildKit never dispatches them, their lint findings are dropped and an error in them does not
//! fail [`lower`]: it is kept in [`Stage::error`].
//!
//! Lint rules that need scoping are reported to the [`Linter`](crate::lint::Linter) here:
//! `UndefinedVar`, `UndefinedArgInFrom`, `InvalidDefaultArgInFrom`, `SecretsUsedInArgOrEnv`,
//! `WorkdirRelativePath`, `RedundantTargetPlatform` and `FromPlatformFlagConstDisallowed`.

mod check;
mod error;
mod flags;
mod lower;
mod mount;
mod platform;
mod values;

use std::sync::Arc;
use std::time::Duration;

pub use error::{InstructionError, InstructionErrorKind, Location};
pub use lower::{BaseImage, BuildOptions, Lowered, MetaArg, lower};
pub use mount::{CacheSharing, Mount, MountError, MountType};
pub use platform::{Platform, PlatformError};

use crate::parser::{Heredoc, Instruction, Node, Span};

/// One build stage: a `FROM` and the commands after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The name given with `AS`, lower-cased.
    pub name: Option<String>,
    /// The position among the stages, from 0.
    pub index: usize,
    /// The image of `FROM`, expanded with the global ARGs.
    pub base_name: String,
    /// What the stage starts from.
    pub base: BaseRef,
    /// `FROM --platform`, expanded and parsed; `None` when not given (the target platform, or
    /// the base stage's platform).
    pub platform: Option<Platform>,
    /// The `ONBUILD` triggers of the base (stage or image), lowered in this stage; they run
    /// before [`Stage::commands`].
    pub triggers: Vec<Command>,
    /// The commands, in order.
    pub commands: Vec<Command>,
    /// Whether the build target needs this stage.
    pub reachable: bool,
    /// The error that stopped lowering this stage, for a stage the target does not need (for
    /// one it needs, [`lower`] fails). Its commands are the ones before the error.
    pub error: Option<Box<InstructionError>>,
    /// Where the `FROM` is.
    pub span: Span,
}

impl Stage {
    /// The triggers, then the commands: every step of the stage in order.
    pub fn steps(&self) -> impl Iterator<Item = &Command> {
        self.triggers.iter().chain(&self.commands)
    }

    /// The stages this one needs, each with the span of what needs it: its base stage, and the
    /// stages of `COPY --from` and `RUN --mount=from=` (in triggers and commands), in order.
    pub fn dependencies(&self) -> Vec<(usize, &Span)> {
        let mut deps = Vec::new();
        if let BaseRef::Stage(i) = self.base {
            deps.push((i, &self.span));
        }
        for command in self.steps() {
            for from in command.sources() {
                if let FromRef::Stage(i) = from {
                    deps.push((*i, command.span()));
                }
            }
        }
        deps
    }

    /// A name for messages: the stage name, or `stage-<index>`.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("stage-{}", self.index),
        }
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BaseRef {
    /// `FROM scratch`: nothing.
    Scratch,
    /// `FROM <stage>`: an earlier stage, by index.
    Stage(usize),
    /// `FROM <image>`: an image reference, as written (after expansion).
    Image(String),
}

/// What `COPY --from` or `RUN --mount=from=` reads from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FromRef {
    /// A stage, by name or index.
    Stage(usize),
    /// An image (any other name), as written.
    Image(String),
    /// `scratch`: nothing.
    Scratch,
    /// `context`: the build context (when no stage has that name).
    Context,
}

/// A command line: the exec (JSON) form or the shell form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CommandLine {
    /// `["executable", "param"]`, run as is.
    Exec(Vec<String>),
    /// The text, run with the stage's `SHELL` (`/bin/sh -c` by default). Never expanded by the
    /// builder.
    Shell(String),
}

/// A typed instruction of a stage. Each carries where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `RUN`.
    Run(Run),
    /// `COPY`.
    Copy(Copy),
    /// `ADD`.
    Add(Add),
    /// `ENV`.
    Env(Env),
    /// `ARG` inside a stage.
    Arg(Arg),
    /// `LABEL`.
    Label(Label),
    /// `EXPOSE`.
    Expose(Expose),
    /// `USER`.
    User(User),
    /// `WORKDIR`.
    Workdir(Workdir),
    /// `VOLUME`.
    Volume(Volume),
    /// `ENTRYPOINT`.
    Entrypoint(Entrypoint),
    /// `CMD`.
    Cmd(Cmd),
    /// `SHELL`.
    Shell(Shell),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `STOPSIGNAL`.
    StopSignal(StopSignal),
    /// `ONBUILD`.
    OnBuild(OnBuild),
    /// `MAINTAINER`.
    Maintainer(Maintainer),
}

impl Command {
    /// Where the instruction was written.
    pub fn span(&self) -> &Span {
        match self {
            Command::Run(c) => &c.span,
            Command::Copy(c) => &c.span,
            Command::Add(c) => &c.span,
            Command::Env(c) => &c.span,
            Command::Arg(c) => &c.span,
            Command::Label(c) => &c.span,
            Command::Expose(c) => &c.span,
            Command::User(c) => &c.span,
            Command::Workdir(c) => &c.span,
            Command::Volume(c) => &c.span,
            Command::Entrypoint(c) => &c.span,
            Command::Cmd(c) => &c.span,
            Command::Shell(c) => &c.span,
            Command::Healthcheck(c) => &c.span,
            Command::StopSignal(c) => &c.span,
            Command::OnBuild(c) => &c.span,
            Command::Maintainer(c) => &c.span,
        }
    }

    /// Which instruction this is.
    pub fn instruction(&self) -> Instruction {
        match self {
            Command::Run(_) => Instruction::Run,
            Command::Copy(_) => Instruction::Copy,
            Command::Add(_) => Instruction::Add,
            Command::Env(_) => Instruction::Env,
            Command::Arg(_) => Instruction::Arg,
            Command::Label(_) => Instruction::Label,
            Command::Expose(_) => Instruction::Expose,
            Command::User(_) => Instruction::User,
            Command::Workdir(_) => Instruction::Workdir,
            Command::Volume(_) => Instruction::Volume,
            Command::Entrypoint(_) => Instruction::Entrypoint,
            Command::Cmd(_) => Instruction::Cmd,
            Command::Shell(_) => Instruction::Shell,
            Command::Healthcheck(_) => Instruction::Healthcheck,
            Command::StopSignal(_) => Instruction::Stopsignal,
            Command::OnBuild(_) => Instruction::Onbuild,
            Command::Maintainer(_) => Instruction::Maintainer,
        }
    }

    /// What the command reads from besides the stage itself: `COPY --from` and the `from` of
    /// `RUN --mount`s.
    pub fn sources(&self) -> Vec<&FromRef> {
        match self {
            Command::Copy(c) => c.from.iter().collect(),
            Command::Run(r) => r
                .mounts
                .iter()
                .filter_map(|m| m.from_ref.as_ref())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// `RUN [--mount=...] [--network=...] [--security=...] <command>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// `--mount`s, in order.
    pub mounts: Vec<Mount>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--security`.
    pub security: SecurityMode,
    /// The command, as written.
    pub command: CommandLine,
    /// The here-documents of the command, as written (the shell expands them).
    pub heredocs: Vec<Heredoc>,
    /// The environment the Dockerfile gives the command, sorted by name: the base image's
    /// (when [`BuildOptions::base_images`] has it, `PATH` for `scratch`), the base stages' and
    /// this stage's `ENV`s and `ARG` values, the later one winning. Proxy build arguments are
    /// in [`Lowered::proxy_env`], not here.
    pub env: Arc<[(String, String)]>,
    /// Where the instruction was written.
    pub span: Span,
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NetworkMode {
    /// The build's network (the default).
    #[default]
    Default,
    /// No network.
    None,
    /// The host's network.
    Host,
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecurityMode {
    /// The normal sandbox (the default).
    #[default]
    Sandbox,
    /// No sandbox: like `docker run --privileged`.
    Insecure,
}

/// A file given inline with a here-document (`COPY <<EOF /dest`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InlineFile {
    /// The here-document's name: the file name.
    pub name: String,
    /// The content: expanded unless the delimiter was quoted.
    pub data: String,
}

/// A `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Chmod {
    /// Octal, e.g. `755`.
    Octal(u32),
    /// Symbolic, e.g. `u=rwX,go=rX`.
    Symbolic(String),
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// `--from`: a stage, an image or the context.
    pub from: Option<FromRef>,
    /// `--chown`, expanded.
    pub chown: Option<String>,
    /// `--chmod`, expanded and checked.
    pub chmod: Option<Chmod>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns, expanded.
    pub exclude: Vec<String>,
    /// The source paths, expanded (here-documents are in [`Copy::heredocs`]).
    pub sources: Vec<String>,
    /// Sources given as here-documents.
    pub heredocs: Vec<InlineFile>,
    /// The destination, expanded.
    pub dest: String,
    /// Where the instruction was written.
    pub span: Span,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    /// `--checksum`, expanded.
    pub checksum: Option<String>,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--unpack`: `None` when not given (local archives are unpacked, remote ones are not).
    pub unpack: Option<bool>,
    /// `--chown`, expanded.
    pub chown: Option<String>,
    /// `--chmod`, expanded and checked.
    pub chmod: Option<Chmod>,
    /// `--link`.
    pub link: bool,
    /// `--exclude` patterns, expanded.
    pub exclude: Vec<String>,
    /// The sources (paths or URLs), expanded.
    pub sources: Vec<String>,
    /// Sources given as here-documents.
    pub heredocs: Vec<InlineFile>,
    /// The destination, expanded.
    pub dest: String,
    /// Where the instruction was written.
    pub span: Span,
}

/// `ENV k=v ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// The pairs, keys and values expanded (all against the scope before the instruction).
    pub pairs: Vec<(String, String)>,
    /// Where the instruction was written.
    pub span: Span,
}

/// One name of an `ARG` inside a stage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// The default as written, if any.
    pub default: Option<String>,
    /// The default expanded in the scope before the instruction, even when a build argument
    /// overrides it: the history of the image records this (`ARG NAME=<default>`), never the
    /// build argument.
    pub expanded_default: Option<String>,
    /// The value in effect: the build argument, else the expanded default, else the global
    /// `ARG`'s value; `None` when there is none (the variable stays unset).
    pub value: Option<String>,
}

/// `ARG name[=default] ...` inside a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    /// The names declared.
    pub args: Vec<ArgDecl>,
    /// Where the instruction was written.
    pub span: Span,
}

/// `LABEL k=v ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The pairs, keys and values expanded.
    pub pairs: Vec<(String, String)>,
    /// Where the instruction was written.
    pub span: Span,
}

/// A port protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A port or range of ports of `EXPOSE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExposedPort {
    /// The first port.
    pub start: u16,
    /// The last port (equal to `start` for one port).
    pub end: u16,
    /// The protocol.
    pub protocol: Protocol,
}

impl ExposedPort {
    /// Each port as the image configuration lists it: `80/tcp`.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        (self.start..=self.end).map(move |p| format!("{p}/{}", self.protocol.as_str()))
    }
}

/// `EXPOSE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expose {
    /// The ports, expanded and parsed.
    pub ports: Vec<ExposedPort>,
    /// Where the instruction was written.
    pub span: Span,
}

/// `USER user[:group]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user, expanded.
    pub user: String,
    /// Where the instruction was written.
    pub span: Span,
}

/// `WORKDIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workdir {
    /// The path, expanded; relative to the previous working directory unless absolute.
    pub path: String,
    /// Where the instruction was written.
    pub span: Span,
}

/// `VOLUME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The paths, expanded.
    pub paths: Vec<String>,
    /// Where the instruction was written.
    pub span: Span,
}

/// `ENTRYPOINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entrypoint {
    /// The command, as written; an empty exec form clears the entrypoint.
    pub command: CommandLine,
    /// Where the instruction was written.
    pub span: Span,
}

/// `CMD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// The command, as written.
    pub command: CommandLine,
    /// Where the instruction was written.
    pub span: Span,
}

/// `SHELL ["executable", "parameters"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shell {
    /// The shell and its parameters.
    pub shell: Vec<String>,
    /// Where the instruction was written.
    pub span: Span,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// What the instruction sets.
    pub check: HealthcheckKind,
    /// Where the instruction was written.
    pub span: Span,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [OPTIONS] CMD ...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HealthcheckKind {
    /// `NONE`: no health check, not even the base image's.
    None,
    /// `CMD`: the check and its options; `None` and zero mean the runtime's default.
    Cmd {
        /// The command.
        command: CommandLine,
        /// `--interval`.
        interval: Option<Duration>,
        /// `--timeout`.
        timeout: Option<Duration>,
        /// `--start-period`.
        start_period: Option<Duration>,
        /// `--start-interval`.
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}

/// `STOPSIGNAL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopSignal {
    /// The signal, expanded and checked (a name such as `SIGTERM`, or a number).
    pub signal: String,
    /// Where the instruction was written.
    pub span: Span,
}

/// `ONBUILD <instruction>`: a trigger kept for stages and images built on this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnBuild {
    /// The trigger's instruction.
    pub instruction: Instruction,
    /// The trigger as written (here-document bodies appended), as the image configuration
    /// stores it.
    pub expression: String,
    /// The trigger's syntax tree; it is lowered when a stage built on this one runs it.
    pub node: Box<Node>,
    /// Where the instruction was written.
    pub span: Span,
}

/// `MAINTAINER` (deprecated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintainer {
    /// The text, as written.
    pub name: String,
    /// Where the instruction was written.
    pub span: Span,
}
