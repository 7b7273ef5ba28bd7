//! `RUN`: the step's root filesystem, its mounts and its process, run in the sandbox.
//!
//! The command runs as BuildKit's Dockerfile frontend has it run:
//! - a shell-form command whose whole text is one here-document (`RUN <<EOF`) runs the
//!   document as a script: with a `#!` line it is written to `/dev/pipes/<name>` (mode 0755,
//!   on the runtime's `/dev` tmpfs, so nothing of it reaches the root filesystem) and that path
//!   is run with the shell; otherwise the document itself is the shell's command;
//! - any other command with here-documents (`RUN cat <<EOF > file`) gets the documents back
//!   after its first line, each followed by its delimiter, and the shell reads them;
//! - the mounts of `RUN --mount` are made as [`mounts`] describes (SSH agents: [`ssh`]).
//!
//! The mount stubs are left as docker 20.10 leaves them (see [`MountStubs::KeepDirectories`]):
//! the directories the runtime creates for mount targets that are missing stay in the layer,
//! empty; file stubs (a secret's, `/etc/hosts`') do not. Nothing a mount holds ever does.

mod mounts;
mod ssh;

pub use ssh::{parse_ssh, parse_ssh_spec};

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_layerstore::snapshot::{Rootfs, overlay_supported};
use berth_runner::sandbox::{
    FileContents, Mount, MountStubs, ProcessSpec, RootfsSpec, RunSpec, Stream,
};

use super::{Progress, Solver, State, shell_of};
use crate::instructions::{CommandLine, Lowered, NetworkMode, Run};

/// Where a here-document script with a `#!` line is put: BuildKit's directory, under the
/// runtime's `/dev` tmpfs.
const HEREDOC_SCRIPT_DIR: &str = "/dev/pipes";

/// The largest secret BuildKit accepts (`secretsprovider.MaxSecretSize`).
pub const MAX_SECRET_SIZE: u64 = 500 * 1024;

/// Where a build secret (`--secret`) comes from. It is read when a step mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file's contents.
    File(PathBuf),
    /// An environment variable's value.
    Env(String),
}

impl SecretSource {
    /// The secret, or `None` when its file or variable is missing.
    fn read(&self) -> Result<Option<Vec<u8>>, String> {
        match self {
            SecretSource::File(path) => match std::fs::read(path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("reading secret file {}: {e}", path.display())),
            },
            SecretSource::Env(name) => {
                Ok(std::env::var_os(name).map(std::os::unix::ffi::OsStringExt::into_vec))
            }
        }
    }
}

/// Parses a `--secret` value as buildx does: `id=ID` with `src=FILE` (or `source=`), `env=VAR`,
/// and `type=file|env` (`type=env,src=VAR` names a variable). With neither a file nor a variable,
/// the id names a variable when one is set, else a file. A file must exist and hold at most
/// [`MAX_SECRET_SIZE`] bytes.
pub fn parse_secret(spec: &str) -> Result<(String, SecretSource), String> {
    let mut typ = None;
    let mut id = None;
    let mut src = None;
    let mut env = None;
    for field in spec.split(',') {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("invalid field {field:?}: must be a key=value pair"))?;
        match key.to_ascii_lowercase().as_str() {
            "type" => match value {
                "file" | "env" => typ = Some(value.to_owned()),
                _ => return Err(format!("unsupported secret type {value:?}")),
            },
            "id" => id = Some(value.to_owned()),
            "source" | "src" => src = Some(value.to_owned()),
            "env" => env = Some(value.to_owned()),
            _ => return Err(format!("unexpected key {key:?} in {field:?}")),
        }
    }
    if typ.as_deref() == Some("env") && env.is_none() {
        env = src.take();
    }
    let id = id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| format!("secret {spec:?} has no id"))?;
    if env.is_none() && src.is_none() {
        if std::env::var_os(&id).is_some() {
            env = Some(id.clone());
        } else {
            src = Some(id.clone());
        }
    }
    // A variable wins over a file, as BuildKit's file store reads it.
    if let Some(env) = env {
        return Ok((id, SecretSource::Env(env)));
    }
    let path = PathBuf::from(src.unwrap_or_default());
    let meta =
        std::fs::metadata(&path).map_err(|e| format!("secret {id}: {}: {e}", path.display()))?;
    if meta.len() > MAX_SECRET_SIZE {
        return Err(format!(
            "secret {id}: {} is {} bytes, over the {MAX_SECRET_SIZE} bytes a secret may be",
            path.display(),
            meta.len()
        ));
    }
    Ok((id, SecretSource::File(path)))
}

/// The build secrets by id, from `--secret` values; a later value for an id wins.
pub fn parse_secrets<S: AsRef<str>>(specs: &[S]) -> Result<BTreeMap<String, SecretSource>, String> {
    specs.iter().map(|s| parse_secret(s.as_ref())).collect()
}

/// How a RUN's command is run, its here-documents applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invocation {
    /// The process's arguments: also what the history's `created_by` shows after `RUN `.
    pub(super) args: Vec<String>,
    /// A here-document script to put at a path (under `/dev/pipes`) before the run.
    pub(super) script: Option<(PathBuf, String)>,
}

/// The here-document name of a command that is nothing but one here-document (`<<EOF`,
/// `<<-EOF`, `<<'EOF'`, `0<<"EOF"`), as BuildKit's `MustParseHeredoc` recognises it.
fn sole_heredoc(command: &str) -> Option<&str> {
    let rest = command
        .trim()
        .trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix("<<")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest).trim_start();
    let name = match rest.chars().next()? {
        q @ ('"' | '\'') => rest.strip_prefix(q)?.strip_suffix(q)?,
        _ => rest,
    };
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some(name)
}

/// What `run` runs with the stage's `shell`, as BuildKit's frontend turns a RUN with
/// here-documents into a process (see the module documentation).
pub(super) fn invocation(run: &Run, shell: &[String]) -> Invocation {
    let command = match &run.command {
        CommandLine::Exec(args) => {
            return Invocation {
                args: args.clone(),
                script: None,
            };
        }
        CommandLine::Shell(command) => command,
    };
    let mut script = None;
    let text = match run.heredocs.first() {
        None => command.clone(),
        Some(doc) if sole_heredoc(command) == Some(doc.name.as_str()) => {
            if doc.content.starts_with("#!") {
                let path = PathBuf::from(HEREDOC_SCRIPT_DIR).join(&doc.name);
                let text = path.to_string_lossy().into_owned();
                script = Some((path, doc.content.clone()));
                text
            } else {
                doc.content.clone()
            }
        }
        Some(_) => {
            let mut full = command.clone();
            for doc in &run.heredocs {
                full.push('\n');
                full.push_str(&doc.content);
                full.push_str(&doc.name);
            }
            full
        }
    };
    let mut args = shell_of(shell);
    args.push(text);
    Invocation { args, script }
}

impl Solver<'_> {
    pub(super) fn run(
        &self,
        lowered: &Lowered,
        vertex: usize,
        state: &mut State,
        run: &Run,
    ) -> Result<(), String> {
        let Invocation { args, script } = invocation(run, &state.shell);
        let c = state.config.config.clone().unwrap_or_default();
        let cwd = c
            .working_dir
            .as_deref()
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
            .to_owned();
        // Held until the run is over: cache locks, temporary copies, snapshots of mount sources.
        let prepared = self.run_mounts(lowered, run, &cwd)?;

        let parents = state.config.diff_ids().to_vec();
        let active = if overlay_supported() {
            self.snapshots.prepare("run", &parents)
        } else {
            self.snapshots.prepare_copy("run", &parents)
        }
        .map_err(|e| e.to_string())?;
        let rootfs = match active.rootfs() {
            Rootfs::Overlay {
                lowerdirs,
                upper,
                work,
            } => RootfsSpec::Overlay {
                lower: lowerdirs.clone(),
                upper: upper.clone(),
                work: work.clone(),
            },
            Rootfs::Copy { dir } => RootfsSpec::Dir(dir.clone()),
        };
        let mut process = ProcessSpec::new(args.clone());
        process.env = run.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for entry in &prepared.env {
            let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
            process
                .env
                .retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
            process.env.push(entry.clone());
        }
        process.cwd = PathBuf::from(&cwd);
        process.user = c.user.unwrap_or_default();
        let mut spec = RunSpec::new(rootfs, process);
        spec.network = match self.options.network_for(run.network) {
            NetworkMode::None => berth_runner::sandbox::Network::None,
            _ => berth_runner::sandbox::Network::Host,
        };
        spec.mounts = prepared.mounts.clone();
        if let Some((path, data)) = script {
            spec.mounts.push(Mount::File {
                contents: FileContents::from(data.into_bytes()),
                target: path,
                mode: 0o755,
                uid: 0,
                gid: 0,
            });
        }
        // docker 20.10 keeps the directories made for mount targets (see the module docs).
        spec.mount_stubs = MountStubs::KeepDirectories;
        let status = self
            .sandbox
            .run(&spec, &mut |_stream: Stream, bytes: &[u8]| {
                self.emit(Progress::Output { vertex, bytes });
            })
            .map_err(|e| e.to_string())?;
        drop(prepared);
        if !status.success() {
            drop(active);
            return Err(format!(
                "process {:?} did not complete successfully: exit code: {}",
                args.join(" "),
                status.code()
            ));
        }
        self.commit(active, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{Heredoc, Span};

    fn span() -> Span {
        Span {
            file: "Dockerfile".into(),
            line: 1,
            column: 1,
            end_line: 1,
        }
    }

    fn heredoc(name: &str, content: &str) -> Heredoc {
        Heredoc {
            name: name.into(),
            file_descriptor: 0,
            expand: true,
            chomp: false,
            content: content.into(),
            span: span(),
        }
    }

    fn run(command: &str, heredocs: Vec<Heredoc>) -> Run {
        Run {
            mounts: Vec::new(),
            network: Default::default(),
            security: Default::default(),
            command: CommandLine::Shell(command.into()),
            heredocs,
            env: Vec::new().into(),
            span: span(),
        }
    }

    #[test]
    fn sole_heredocs_are_recognised_as_buildkit_does() {
        assert_eq!(sole_heredoc("<<EOF"), Some("EOF"));
        assert_eq!(sole_heredoc("<<-EOF"), Some("EOF"));
        assert_eq!(sole_heredoc("<<'EOF'"), Some("EOF"));
        assert_eq!(sole_heredoc("0<<\"END\""), Some("END"));
        assert_eq!(sole_heredoc("cat <<EOF"), None);
        assert_eq!(sole_heredoc("<<EOF > file"), None);
        assert_eq!(sole_heredoc("<<'EOF"), None);
    }

    #[test]
    fn a_sole_heredoc_is_the_script() {
        let inv = invocation(&run("<<EOF", vec![heredoc("EOF", "echo a\necho b\n")]), &[]);
        assert_eq!(inv.args, ["/bin/sh", "-c", "echo a\necho b\n"]);
        assert_eq!(inv.script, None);
    }

    #[test]
    fn a_heredoc_with_a_shebang_is_run_from_dev_pipes() {
        let body = "#!/bin/sh -e\necho hi\n";
        let inv = invocation(&run("<<EOF", vec![heredoc("EOF", body)]), &[]);
        assert_eq!(inv.args, ["/bin/sh", "-c", "/dev/pipes/EOF"]);
        assert_eq!(
            inv.script,
            Some((PathBuf::from("/dev/pipes/EOF"), body.to_owned()))
        );
    }

    #[test]
    fn other_heredocs_are_given_back_to_the_shell() {
        let inv = invocation(
            &run(
                "cat <<A > /a && cat <<B > /b",
                vec![heredoc("A", "one $X\n"), heredoc("B", "two\n")],
            ),
            &[],
        );
        assert_eq!(
            inv.args,
            [
                "/bin/sh",
                "-c",
                "cat <<A > /a && cat <<B > /b\none $X\nA\ntwo\nB"
            ]
        );
    }

    #[test]
    fn secrets_parse_as_buildx_parses_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "t").unwrap();
        let spec = format!("id=token,src={}", file.display());
        assert_eq!(
            parse_secret(&spec).unwrap(),
            ("token".into(), SecretSource::File(file.clone()))
        );
        assert_eq!(
            parse_secret("id=k,env=HOME").unwrap(),
            ("k".into(), SecretSource::Env("HOME".into()))
        );
        assert_eq!(
            parse_secret("type=env,id=k,src=HOME").unwrap(),
            ("k".into(), SecretSource::Env("HOME".into()))
        );
        assert!(parse_secret("src=/x").unwrap_err().contains("no id"));
        assert!(parse_secret("id=x,src=/no/such/file").is_err());
        assert!(parse_secret("id=x,bogus=1").is_err());
        std::fs::write(&file, vec![0u8; MAX_SECRET_SIZE as usize + 1]).unwrap();
        assert!(parse_secret(&spec).unwrap_err().contains("over"));
    }
}
