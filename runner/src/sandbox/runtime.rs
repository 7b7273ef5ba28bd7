//! The OCI runtime binary (runc, or another with the same command line) and the process that
//! runs a container.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::error::Error;
use super::{CancelToken, ExitStatus, Stream};

/// How often the output loop wakes up to look at the cancel token and the runtime process,
/// unless its caller asks for less.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// How long a killed container gets before the runtime process itself is killed.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// An OCI runtime binary.
#[derive(Debug, Clone)]
pub(crate) struct Runtime {
    path: PathBuf,
}

impl Runtime {
    /// Finds the runtime: a path with a `/` is taken as it is, a bare name is looked up on
    /// `PATH`. The file must exist and be executable.
    pub(crate) fn locate(runtime: &Path) -> Result<Runtime, Error> {
        let not_found = || Error::RuntimeNotFound {
            runtime: runtime.to_path_buf(),
        };
        let is_executable = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        };
        let has_slash = runtime.as_os_str().as_encoded_bytes().contains(&b'/');
        let path = if has_slash {
            Some(runtime.to_path_buf()).filter(|p| is_executable(p))
        } else {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(runtime))
                    .find(|p| is_executable(p))
            })
        };
        let path = path.ok_or_else(not_found)?;
        let path = std::fs::canonicalize(&path).map_err(|_| not_found())?;
        Ok(Runtime { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn command(&self, state: &Path) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.arg("--root").arg(state);
        cmd
    }

    /// Starts `runtime run --keep` for the bundle at `bundle`, its output on pipes. With
    /// `pid_file`, the runtime writes the container's init pid there once the container is
    /// started. `--keep` leaves the exited container, and its cgroup, for the caller to read
    /// and then delete (`delete --force`); without it the runtime deletes them as it exits.
    ///
    /// The runtime gets a process group of its own, so that a terminal's Ctrl-C reaches the
    /// caller (which cancels the run and cleans up) rather than the container; and it is killed
    /// if the thread that started it dies, so that a crashed caller does not leave it behind
    /// (the state it leaves is swept by the next [`super::Sandbox`] built on the same root).
    pub(crate) fn spawn_run(
        &self,
        state: &Path,
        log: &Path,
        bundle: &Path,
        id: &str,
        pid_file: Option<&Path>,
    ) -> Result<Child, Error> {
        let mut cmd = self.command(state);
        cmd.arg("--log")
            .arg(log)
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--keep")
            .arg("--bundle")
            .arg(bundle);
        if let Some(pid_file) = pid_file {
            cmd.arg("--pid-file").arg(pid_file);
        }
        cmd.arg(id);
        self.spawn_piped(cmd)
    }

    /// Starts `runtime exec` of `args` in the running container `id`, with `env` added to its
    /// environment, its output on pipes; the runtime writes the new process's pid to
    /// `pid_file`. Guarded as [`Runtime::spawn_run`] is.
    pub(crate) fn spawn_exec(
        &self,
        state: &Path,
        log: &Path,
        pid_file: &Path,
        id: &str,
        args: &[String],
        env: &[String],
    ) -> Result<Child, Error> {
        let mut cmd = self.command(state);
        cmd.arg("--log")
            .arg(log)
            .arg("--log-format")
            .arg("json")
            .arg("exec")
            .arg("--pid-file")
            .arg(pid_file);
        for entry in env {
            cmd.arg("--env").arg(entry);
        }
        cmd.arg(id).args(args);
        self.spawn_piped(cmd)
    }

    fn spawn_piped(&self, mut cmd: Command) -> Result<Child, Error> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().map_err(|source| Error::RuntimeSpawn {
            runtime: self.path.clone(),
            source,
        })
    }

    /// `kill <id> <signal>`: sends `signal` to the container's init process. The runtime's
    /// message is the error when it refuses (the container does not exist, is not running).
    pub(crate) fn signal(&self, state: &Path, id: &str, signal: libc::c_int) -> Result<(), Error> {
        let out = self
            .command(state)
            .arg("kill")
            .arg(id)
            .arg(signal.to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::RuntimeSpawn {
                runtime: self.path.clone(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        Err(Error::Runtime {
            runtime: self.path.clone(),
            action: "kill",
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// Sends SIGKILL to the container's process. Fails while the container does not exist yet
    /// or no longer exists.
    pub(crate) fn kill(&self, state: &Path, id: &str) -> bool {
        self.command(state)
            .args(["kill", id, "KILL"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// `delete --force`: kills whatever is left of the container and removes its state and
    /// cgroups.
    pub(crate) fn delete_force(&self, state: &Path, id: &str) -> Result<(), Error> {
        let out = self
            .command(state)
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::RuntimeSpawn {
                runtime: self.path.clone(),
                source,
            })?;
        if out.status.success() || !state.join(id).exists() {
            return Ok(());
        }
        Err(Error::Runtime {
            runtime: self.path.clone(),
            action: "delete",
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The messages the runtime logged at level `error` or `fatal` (its JSON log, one object a
/// line).
pub(crate) fn logged_errors(log: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(log) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| matches!(entry["level"].as_str(), Some("error" | "fatal")))
        .filter_map(|entry| entry["msg"].as_str().map(str::to_string))
        .collect()
}

/// How the runtime process ended.
pub(crate) struct Ended {
    pub(crate) status: ExitStatus,
    pub(crate) cancelled: bool,
}

/// Converts a wait status to the shell's convention: the exit code, or 128 + the signal.
fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 255,
    };
    ExitStatus::from_code(code)
}

/// Forwards the runtime's stdout and stderr to `on_output` as they arrive, until it exits.
///
/// While `cancel` is set the container is killed through `kill` (retried every second, since
/// the container may not exist yet), and after [`KILL_GRACE`] the runtime process itself.
/// `watch` is called on every turn of the loop, before it waits, and says how long the wait
/// may last (at most [`TICK`] is sensible): a caller waiting for something polls there.
pub(crate) fn pump(
    child: &mut Child,
    on_output: &mut dyn FnMut(Stream, &[u8]),
    cancel: Option<&CancelToken>,
    kill: &mut dyn FnMut(),
    watch: &mut dyn FnMut() -> Duration,
) -> Result<Ended, Error> {
    let mut streams: [(Stream, Option<File>); 2] = [
        (
            Stream::Stdout,
            child.stdout.take().map(|s| File::from(OwnedFd::from(s))),
        ),
        (
            Stream::Stderr,
            child.stderr.take().map(|s| File::from(OwnedFd::from(s))),
        ),
    ];
    let mut buf = vec![0u8; 64 * 1024];
    let mut exited: Option<std::process::ExitStatus> = None;
    let mut cancelled_at: Option<Instant> = None;
    let mut last_kill: Option<Instant> = None;
    loop {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut which: Vec<usize> = Vec::new();
        for (i, (_, stream)) in streams.iter().enumerate() {
            if let Some(stream) = stream {
                fds.push(libc::pollfd {
                    fd: stream.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                which.push(i);
            }
        }
        if fds.is_empty() && exited.is_some() {
            break;
        }
        let tick = watch();
        let timeout = if exited.is_some() {
            0
        } else {
            tick.as_millis().min(libc::c_int::MAX as u128) as libc::c_int
        };
        let ready = if fds.is_empty() {
            std::thread::sleep(tick);
            0
        } else {
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(Error::io("poll", "runtime output", err));
                }
                0
            } else {
                n
            }
        };
        for (fd, &i) in fds.iter().zip(&which) {
            if fd.revents == 0 {
                continue;
            }
            let (kind, stream) = &mut streams[i];
            let Some(reader) = stream else { continue };
            match reader.read(&mut buf) {
                Ok(0) => *stream = None,
                Ok(n) => on_output(*kind, &buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(Error::io("read", "runtime output", err)),
            }
        }
        if exited.is_some() {
            if ready == 0 {
                // The runtime has exited and nothing more is buffered.
                break;
            }
            continue;
        }
        if cancel.is_some_and(CancelToken::is_cancelled) {
            let now = Instant::now();
            let started = *cancelled_at.get_or_insert(now);
            if last_kill.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                kill();
                last_kill = Some(now);
            }
            if now.duration_since(started) >= KILL_GRACE {
                let _ = child.kill();
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => exited = Some(status),
            Ok(None) => {}
            Err(err) => return Err(Error::io("wait for", "the OCI runtime", err)),
        }
    }
    let status = match exited {
        Some(status) => status,
        None => child
            .wait()
            .map_err(|err| Error::io("wait for", "the OCI runtime", err))?,
    };
    Ok(Ended {
        status: exit_status(status),
        cancelled: cancelled_at.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_refuses_missing_and_non_executable_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-runtime");
        assert!(matches!(
            Runtime::locate(&missing),
            Err(Error::RuntimeNotFound { .. })
        ));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        assert!(matches!(
            Runtime::locate(&plain),
            Err(Error::RuntimeNotFound { .. })
        ));
        assert!(matches!(
            Runtime::locate(Path::new("berth-no-such-runtime-on-path")),
            Err(Error::RuntimeNotFound { .. })
        ));
        let sh = Runtime::locate(Path::new("sh")).unwrap();
        assert!(sh.path().is_absolute());
    }

    #[test]
    fn pump_forwards_both_streams_and_the_exit_code() {
        let mut child = Command::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 7"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let ended = pump(
            &mut child,
            &mut |stream, bytes| match stream {
                Stream::Stdout => out.extend_from_slice(bytes),
                Stream::Stderr => err.extend_from_slice(bytes),
            },
            None,
            &mut || {},
            &mut || TICK,
        )
        .unwrap();
        assert_eq!(ended.status.code(), 7);
        assert!(!ended.cancelled);
        assert_eq!(out, b"out\n");
        assert_eq!(err, b"err\n");
    }

    #[test]
    fn signals_become_128_plus_n() {
        let mut child = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let ended = pump(&mut child, &mut |_, _| {}, None, &mut || {}, &mut || TICK).unwrap();
        assert_eq!(ended.status.code(), 137);
    }

    #[test]
    fn logged_errors_reads_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.json");
        std::fs::write(
            &log,
            "{\"level\":\"warning\",\"msg\":\"w\"}\nnot json\n{\"level\":\"error\",\"msg\":\"boom\"}\n",
        )
        .unwrap();
        assert_eq!(logged_errors(&log), vec!["boom".to_string()]);
        assert!(logged_errors(&dir.path().join("missing")).is_empty());
    }
}
