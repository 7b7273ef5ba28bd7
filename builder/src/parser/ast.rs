//! The syntax tree: what [`parse`](super::parse) returns.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// Where a node starts in the source, and on which line it ends.
///
/// Lines and columns count from 1; columns count characters, not bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Span {
    /// The file name given to the parser.
    #[serde(serialize_with = "serialize_arc_str")]
    pub file: Arc<str>,
    /// The line of the first character.
    pub line: usize,
    /// The column of the first character.
    pub column: usize,
    /// The last line that belongs to the node (continuation lines and here-document bodies
    /// included).
    pub end_line: usize,
}

fn serialize_arc_str<S: Serializer>(value: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value)
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// The parser directives at the top of the file (`syntax`, `escape`, `check`), in order.
    pub directives: Vec<Directive>,
    /// The instructions, in order.
    pub instructions: Vec<Node>,
    /// Things that parse but are deprecated.
    pub warnings: Vec<Warning>,
    /// The escape character in force: `\` or, after `# escape=``, a backtick.
    pub escape: char,
    /// The `check` directive, parsed (all checks on, as warnings, when there is none).
    pub check: CheckOptions,
}

impl Dockerfile {
    /// The directive called `name` (lower case), if the file has it.
    pub fn directive(&self, name: &str) -> Option<&Directive> {
        self.directives.iter().find(|d| d.name == name)
    }

    /// The value of the `syntax` directive: the frontend image the file asks for.
    pub fn syntax(&self) -> Option<&str> {
        self.directive("syntax").map(|d| d.value.as_str())
    }
}

/// A parser directive: `# name=value` at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// The directive's name, lower-cased (`syntax`, `escape` or `check`).
    pub name: String,
    /// Its value, surrounding white space removed.
    pub value: String,
    /// Where the directive's comment starts.
    pub span: Span,
}

/// How the `check` directive configures the build checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckOptions {
    /// `skip=all`: no check runs.
    pub skip_all: bool,
    /// `skip=A,B`: the checks that do not run.
    pub skip: Vec<String>,
    /// `error=true`: a failing check fails the build.
    pub error: bool,
    /// `experimental=all`: every experimental check runs.
    pub experimental_all: bool,
    /// `experimental=A,B`: the experimental checks that run (they are off by default, and
    /// `skip` does not apply to them).
    pub experimental: Vec<String>,
}

/// Something that parses but deserves a warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The build check this belongs to, as BuildKit names it.
    pub rule: String,
    /// What was found.
    pub message: String,
    /// Documentation of the rule.
    pub url: String,
    /// Where it was found.
    pub span: Span,
}

/// The Dockerfile instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Instruction {
    /// `ADD`
    Add,
    /// `ARG`
    Arg,
    /// `CMD`
    Cmd,
    /// `COPY`
    Copy,
    /// `ENTRYPOINT`
    Entrypoint,
    /// `ENV`
    Env,
    /// `EXPOSE`
    Expose,
    /// `FROM`
    From,
    /// `HEALTHCHECK`
    Healthcheck,
    /// `LABEL`
    Label,
    /// `MAINTAINER` (deprecated)
    Maintainer,
    /// `ONBUILD`
    Onbuild,
    /// `RUN`
    Run,
    /// `SHELL`
    Shell,
    /// `STOPSIGNAL`
    Stopsignal,
    /// `USER`
    User,
    /// `VOLUME`
    Volume,
    /// `WORKDIR`
    Workdir,
}

impl Instruction {
    /// Every instruction, in alphabetical order.
    pub const ALL: [Instruction; 18] = [
        Instruction::Add,
        Instruction::Arg,
        Instruction::Cmd,
        Instruction::Copy,
        Instruction::Entrypoint,
        Instruction::Env,
        Instruction::Expose,
        Instruction::From,
        Instruction::Healthcheck,
        Instruction::Label,
        Instruction::Maintainer,
        Instruction::Onbuild,
        Instruction::Run,
        Instruction::Shell,
        Instruction::Stopsignal,
        Instruction::User,
        Instruction::Volume,
        Instruction::Workdir,
    ];

    /// The lower-case name, as the dump prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Instruction::Add => "add",
            Instruction::Arg => "arg",
            Instruction::Cmd => "cmd",
            Instruction::Copy => "copy",
            Instruction::Entrypoint => "entrypoint",
            Instruction::Env => "env",
            Instruction::Expose => "expose",
            Instruction::From => "from",
            Instruction::Healthcheck => "healthcheck",
            Instruction::Label => "label",
            Instruction::Maintainer => "maintainer",
            Instruction::Onbuild => "onbuild",
            Instruction::Run => "run",
            Instruction::Shell => "shell",
            Instruction::Stopsignal => "stopsignal",
            Instruction::User => "user",
            Instruction::Volume => "volume",
            Instruction::Workdir => "workdir",
        }
    }

    /// Whether the instruction may carry here-documents (`RUN`, `COPY`, `ADD`).
    pub fn takes_heredocs(self) -> bool {
        matches!(
            self,
            Instruction::Run | Instruction::Copy | Instruction::Add
        )
    }
}

impl fmt::Display for Instruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Instruction {
    type Err = ();

    /// Case-insensitive.
    fn from_str(s: &str) -> Result<Self, ()> {
        Instruction::ALL
            .into_iter()
            .find(|i| i.as_str().eq_ignore_ascii_case(s))
            .ok_or(())
    }
}

impl Serialize for Instruction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Which instruction this is.
    pub instruction: Instruction,
    /// The instruction keyword as written (`RUN`, `Run`, ...).
    pub keyword: String,
    /// The `--name[=value]` flags at the start of the arguments, in order.
    pub flags: Vec<Flag>,
    /// The arguments.
    pub args: Args,
    /// The here-documents the arguments open, in order, with their bodies.
    pub heredocs: Vec<Heredoc>,
    /// The instruction's text: its lines joined without the line continuations and comments,
    /// leading white space removed.
    pub original: String,
    /// The comment lines right above the instruction, without the `#`.
    pub comments: Vec<String>,
    /// Where the keyword is, and the last line of the instruction.
    pub span: Span,
}

impl Node {
    /// The lower-case instruction name.
    pub fn name(&self) -> &'static str {
        self.instruction.as_str()
    }

    /// The flag called `name` (without the dashes), if present.
    pub fn flag(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().find(|f| f.name == name)
    }
}

/// A builder flag such as `--from=build` or `--link`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// The name, without the leading `--`.
    pub name: String,
    /// The value after the first `=`, if there is one (quotes and backslash escapes resolved).
    pub value: Option<String>,
    /// The flag exactly as written in the source.
    pub raw: String,
    /// Where the flag is.
    pub span: Span,
}

/// How an instruction's arguments were written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "snake_case")]
pub enum Args {
    /// No arguments.
    Empty,
    /// The exec (JSON array) form: `["executable", "param"]`.
    Exec(Vec<String>),
    /// The shell form of `RUN`, `CMD`, `ENTRYPOINT`, `SHELL` or `HEALTHCHECK CMD`: the rest of
    /// the line, as written.
    Shell(String),
    /// The rest of the line as one string: `USER`, `WORKDIR`, `STOPSIGNAL`, `MAINTAINER`.
    Text(String),
    /// White-space separated words: `FROM`, `EXPOSE`, the non-JSON form of `ADD`, `COPY` and
    /// `VOLUME`, and `ARG` (where quotes group words and are kept).
    Words(Vec<String>),
    /// `ENV` and `LABEL` pairs.
    KeyValues(Vec<KeyValue>),
    /// `HEALTHCHECK NONE` or `HEALTHCHECK CMD ...`.
    Healthcheck {
        /// The first word (`CMD`, `NONE`), as written.
        kind: String,
        /// The command after it: empty, exec or shell form.
        command: Box<Args>,
    },
    /// The instruction `ONBUILD` wraps.
    Onbuild(Box<Node>),
}

impl Args {
    /// Whether this is the exec (JSON) form.
    pub fn is_exec(&self) -> bool {
        match self {
            Args::Exec(_) => true,
            Args::Healthcheck { command, .. } => command.is_exec(),
            _ => false,
        }
    }
}

/// One `key=value` (or legacy `key value`) pair of `ENV` or `LABEL`.
///
/// Key and value are as written: quotes and escapes are resolved later, during word expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// How key and value were separated.
    pub separator: Separator,
}

/// The separator between a key and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Separator {
    /// `key=value`.
    Equals,
    /// The legacy `ENV key value` form (one pair per instruction, the value is the rest of the
    /// line).
    Space,
}

/// A here-document: `<<EOF` (or `<<-EOF`, `<<"EOF"`, `2<<EOF`) and its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word, quotes removed.
    pub name: String,
    /// The file descriptor written before `<<` (0 when there is none).
    pub file_descriptor: u32,
    /// Whether variables in the body are expanded: false when any part of the delimiter was
    /// quoted.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body lines and the delimiter line.
    pub chomp: bool,
    /// The body: the lines between the instruction and the delimiter line, each with its line
    /// ending, leading tabs already stripped when `chomp` is set.
    pub content: String,
    /// Where the `<<` word is, and the line of the closing delimiter.
    pub span: Span,
}
