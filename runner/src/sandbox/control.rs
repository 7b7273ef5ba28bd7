//! [`ContainerControl`]: a handle on a container while [`super::Sandbox::run`] runs it on
//! another thread, for what a task supervisor does to a running container: wait until it has
//! started (ECS's `START` dependency condition), signal it (a graceful stop is SIGTERM, then
//! SIGKILL after `stopTimeout`), run a process in it (a health check), find its init process
//! (to enter its namespaces) and wait until it has exited.
//!
//! # Lifecycle
//! A control is made before the run and handed to it in [`super::RunSpec::control`]; one
//! control serves one run. Its [`ContainerState`] goes:
//! - [`ContainerState::Pending`] until the runtime has started the container's process (the
//!   runtime writes the init's pid file once it is started; the sandbox looks for it every
//!   10 ms while the container starts);
//! - [`ContainerState::Running`] until that process has exited;
//! - then [`ContainerState::Exited`] with its exit status, or [`ContainerState::Failed`] when
//!   the run ended without the container ever starting (the runtime could not create it, the
//!   run was cancelled first, the spec was refused).
//!
//! [`ContainerControl::signal`], [`ContainerControl::exec`] and [`ContainerControl::pid`] work
//! only while it is running, and give [`Error::NotRunning`] before and after. Once the process
//! has exited no new operation starts; the run waits for those in flight (an exec is bounded by
//! its timeout) before it deletes the container, and [`ContainerControl::wait_exited`] returns
//! only after the container is deleted and its state cleaned up, so that the caller may then
//! remove the cgroup parent or the network namespace it shared.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::error::Error;
use super::runtime::{self, Runtime};
use super::{CancelToken, ExitStatus, Output, Stream};

/// How often a starting container's pid file is looked for.
pub(crate) const START_TICK: Duration = Duration::from_millis(10);
/// How long an operation whose runtime command failed waits for the run to notice that the
/// container has exited, so that it can report that rather than the runtime's message.
const SETTLE: Duration = Duration::from_millis(500);
/// The status of a container the sandbox itself killed while cleaning up after a failure.
const KILLED: ExitStatus = ExitStatus::from_code(128 + libc::SIGKILL);

/// Where a container is in its life, as its [`ContainerControl`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Not started yet: the control is not attached to a run yet, or the runtime is still
    /// creating the container.
    Pending,
    /// The container's init process is running.
    Running {
        /// The init process's pid, in the caller's pid namespace.
        pid: u32,
    },
    /// The container's init process has exited. A container the sandbox had to kill (the run
    /// was cancelled, or failed after the container started) reports 137.
    Exited(ExitStatus),
    /// The run ended without the container ever starting.
    Failed,
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerState::Pending => write!(f, "it has not started yet"),
            ContainerState::Running { pid } => write!(f, "it is running as pid {pid}"),
            ContainerState::Exited(status) => write!(f, "it has exited ({status})"),
            ContainerState::Failed => write!(f, "it never started"),
        }
    }
}

/// A handle on one run's container, usable from any thread; clones share it.
///
/// ```no_run
/// use std::time::Duration;
/// use berth_runner::sandbox::{ContainerControl, ProcessSpec, RootfsSpec, RunSpec, Sandbox};
///
/// let sandbox = Sandbox::builder().build()?;
/// let control = ContainerControl::new();
/// let mut spec = RunSpec::new(
///     RootfsSpec::Dir("/var/lib/berth/rootfs/web".into()),
///     ProcessSpec::new(["/usr/sbin/nginx", "-g", "daemon off;"]),
/// );
/// spec.name = Some("task-1f2e-web".into());
/// spec.control = Some(control.clone());
/// std::thread::scope(|s| {
///     let run = s.spawn(|| sandbox.output(&spec));
///     control.wait_started(Duration::from_secs(30))?;
///     let check = control.exec(["/bin/sh", "-c", "wget -qO- localhost"], &[], Duration::from_secs(5))?;
///     println!("healthy: {}", check.status.success());
///     control.signal(libc::SIGTERM)?;
///     if control.wait_exited(Duration::from_secs(30)).is_err() {
///         control.signal(libc::SIGKILL)?;
///     }
///     run.join().unwrap()?;
///     Ok::<(), berth_runner::sandbox::Error>(())
/// })?;
/// # Ok::<(), berth_runner::sandbox::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ContainerControl {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    shared: Mutex<Shared>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Shared {
    phase: Phase,
    /// Operations using the container's runtime state right now.
    busy: usize,
    /// Execs so far, to name their pid and log files.
    execs: u64,
}

#[derive(Debug, Default)]
enum Phase {
    #[default]
    Detached,
    Starting {
        id: String,
    },
    Running {
        target: Target,
        pid: u32,
    },
    Exited {
        id: String,
        status: ExitStatus,
        cleaned: bool,
    },
    Failed {
        /// `None` for a run refused before it had an id.
        id: Option<String>,
        cleaned: bool,
    },
}

impl Phase {
    fn id(&self) -> Option<&str> {
        match self {
            Phase::Detached => None,
            Phase::Starting { id } | Phase::Exited { id, .. } => Some(id),
            Phase::Failed { id, .. } => id.as_deref(),
            Phase::Running { target, .. } => Some(&target.id),
        }
    }

    fn state(&self) -> ContainerState {
        match self {
            Phase::Detached | Phase::Starting { .. } => ContainerState::Pending,
            Phase::Running { pid, .. } => ContainerState::Running { pid: *pid },
            Phase::Exited { status, .. } => ContainerState::Exited(*status),
            Phase::Failed { .. } => ContainerState::Failed,
        }
    }

    fn cleaned(&self) -> bool {
        matches!(
            self,
            Phase::Exited { cleaned: true, .. } | Phase::Failed { cleaned: true, .. }
        )
    }
}

/// What the runtime needs to reach a running container.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) runtime: Runtime,
    /// The runtime's `--root`.
    pub(crate) state: PathBuf,
    /// The run's state directory, where exec pid and log files go.
    pub(crate) dir: PathBuf,
    /// The container id.
    pub(crate) id: String,
}

impl ContainerControl {
    /// A control not attached to any run yet.
    pub fn new() -> Self {
        ContainerControl::default()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.inner
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self) {
        self.inner.changed.notify_all();
    }

    /// Waits until `done` holds or `timeout` passes; returns the guard and whether it holds.
    fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&Shared) -> bool,
    ) -> (MutexGuard<'_, Shared>, bool) {
        let (guard, _) = self
            .inner
            .changed
            .wait_timeout_while(self.lock(), timeout, |shared| !done(shared))
            .unwrap_or_else(PoisonError::into_inner);
        let holds = done(&guard);
        (guard, holds)
    }

    fn not_running(shared: &Shared) -> Error {
        Error::NotRunning {
            container: shared.phase.id().map(str::to_string),
            state: shared.phase.state(),
        }
    }

    /// The container id, once the control is attached to a run: the run's
    /// [`super::RunSpec::name`], or the id the sandbox made up.
    pub fn id(&self) -> Option<String> {
        self.lock().phase.id().map(str::to_string)
    }

    /// Where the container is now.
    pub fn state(&self) -> ContainerState {
        self.lock().phase.state()
    }

    /// The pid of the container's init process, in the caller's pid namespace: for
    /// `/proc/<pid>/ns/*` and `nsenter`-style checks. Only while it is running.
    pub fn pid(&self) -> Result<u32, Error> {
        let shared = self.lock();
        match &shared.phase {
            Phase::Running { pid, .. } => Ok(*pid),
            _ => Err(ContainerControl::not_running(&shared)),
        }
    }

    /// Waits until the container has started (ECS's `START` condition): `Ok` once its process
    /// has been started, even if it has exited since. [`Error::NotRunning`] if the run ended
    /// without starting it, [`Error::Timeout`] if it is still pending after `timeout`.
    pub fn wait_started(&self, timeout: Duration) -> Result<(), Error> {
        let (shared, _) = self.wait_for(timeout, |s| {
            !matches!(s.phase, Phase::Detached | Phase::Starting { .. })
        });
        match &shared.phase {
            Phase::Running { .. } | Phase::Exited { .. } => Ok(()),
            Phase::Failed { .. } => Err(ContainerControl::not_running(&shared)),
            Phase::Detached | Phase::Starting { .. } => Err(Error::Timeout {
                container: shared.phase.id().map(str::to_string),
                event: "start",
                timeout,
            }),
        }
    }

    /// Waits until the container has exited and the run has cleaned up after it (the
    /// container is deleted, its cgroup removed, its mounts undone), and returns its exit
    /// status. [`Error::NotRunning`] if it never started, [`Error::Timeout`] if it has not
    /// exited after `timeout`.
    pub fn wait_exited(&self, timeout: Duration) -> Result<ExitStatus, Error> {
        let (shared, done) = self.wait_for(timeout, |s| s.phase.cleaned());
        match &shared.phase {
            Phase::Exited { status, .. } if done => Ok(*status),
            Phase::Failed { .. } if done => Err(ContainerControl::not_running(&shared)),
            _ => Err(Error::Timeout {
                container: shared.phase.id().map(str::to_string),
                event: "exit",
                timeout,
            }),
        }
    }

    /// Marks an operation as using the running container; the run waits for it before it
    /// deletes the container.
    fn begin(&self) -> Result<(Busy<'_>, Target, u64), Error> {
        let mut shared = self.lock();
        let target = match &shared.phase {
            Phase::Running { target, .. } => target.clone(),
            _ => return Err(ContainerControl::not_running(&shared)),
        };
        shared.busy += 1;
        shared.execs += 1;
        let n = shared.execs;
        Ok((Busy(self), target, n))
    }

    /// A runtime command against the container failed: if that is because the container has
    /// exited (the run may take a moment to notice), says so; otherwise keeps the error.
    fn explain(&self, err: Error) -> Error {
        if !matches!(err, Error::Runtime { .. }) {
            return err;
        }
        let (shared, exited) = self.wait_for(SETTLE, |s| !matches!(s.phase, Phase::Running { .. }));
        if exited {
            ContainerControl::not_running(&shared)
        } else {
            err
        }
    }

    /// Sends `signal` (`libc::SIGTERM`, `libc::SIGKILL`, ...) to the container's init process,
    /// through the runtime (`kill <id> <signal>`). The init of a pid namespace gets only the
    /// signals it has a handler for, SIGKILL aside: a shell that does not `trap` SIGTERM
    /// ignores it.
    pub fn signal(&self, signal: libc::c_int) -> Result<(), Error> {
        if !(1..=64).contains(&signal) {
            return Err(Error::InvalidSpec(format!(
                "invalid signal number {signal}"
            )));
        }
        let (busy, target, _) = self.begin()?;
        let result = target.runtime.signal(&target.state, &target.id, signal);
        drop(busy);
        result.map_err(|err| self.explain(err))
    }

    /// Runs `args` in the running container (the runtime's `exec`) and collects its output:
    /// with the container's user, working directory, capabilities and environment, plus `env`
    /// (`KEY=value`). The program is looked up on the container's `PATH`; an ECS health check's
    /// `CMD-SHELL, cmd` is `["/bin/sh", "-c", cmd]`.
    ///
    /// A non-zero exit code is a result. A process still running after `timeout` is killed
    /// (SIGKILL) and the call gives [`Error::ExecTimeout`]; a program the runtime cannot start
    /// gives [`Error::Runtime`].
    pub fn exec<I, S>(&self, args: I, env: &[String], timeout: Duration) -> Result<Output, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        if args.is_empty() {
            return Err(Error::InvalidSpec("exec with no arguments".into()));
        }
        if let Some(bad) = env.iter().find(|e| !e.contains('=')) {
            return Err(Error::InvalidSpec(format!(
                "exec environment entry {bad:?} is not KEY=value"
            )));
        }
        let (busy, target, n) = self.begin()?;
        let result = exec(&target, n, &args, env, timeout);
        drop(busy);
        result.map_err(|err| self.explain(err))
    }
}

/// An operation in flight; dropping it lets the run go on with its cleanup.
struct Busy<'a>(&'a ContainerControl);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.lock().busy -= 1;
        self.0.notify();
    }
}

/// Reads a pid file the runtime wrote (it writes a temporary file and renames it into place).
pub(crate) fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Removes files when dropped.
struct RemoveOnDrop<'a>(&'a [&'a Path]);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        for path in self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn exec(
    target: &Target,
    n: u64,
    args: &[String],
    env: &[String],
    timeout: Duration,
) -> Result<Output, Error> {
    let pid_file = target.dir.join(format!("exec-{n}.pid"));
    let log = target.dir.join(format!("exec-{n}.log"));
    let _remove = RemoveOnDrop(&[&pid_file, &log]);
    let mut child =
        target
            .runtime
            .spawn_exec(&target.state, &log, &pid_file, &target.id, args, env)?;
    let deadline = Instant::now() + timeout;
    let expired = CancelToken::new();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let ended = runtime::pump(
        &mut child,
        &mut |stream, bytes| match stream {
            Stream::Stdout => stdout.extend_from_slice(bytes),
            Stream::Stderr => stderr.extend_from_slice(bytes),
        },
        Some(&expired),
        &mut || {
            // The runtime's exec does not pass SIGKILL on: kill the process it started.
            if let Some(pid) = read_pid(&pid_file) {
                // SAFETY: kill has no memory preconditions. The pid cannot have been reused:
                // the process is the runtime's child until the runtime, still running, reaps it.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        },
        &mut || {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                expired.cancel();
            }
            left.clamp(START_TICK, runtime::TICK)
        },
    )?;
    if ended.cancelled {
        return Err(Error::ExecTimeout {
            container: target.id.clone(),
            args: args.to_vec(),
            timeout,
        });
    }
    if !ended.status.success() {
        let errors = runtime::logged_errors(&log);
        if !errors.is_empty() {
            return Err(Error::Runtime {
                runtime: target.runtime.path().to_path_buf(),
                action: "exec",
                message: errors.join("; "),
            });
        }
    }
    Ok(Output {
        status: ended.status,
        stdout,
        stderr,
    })
}

/// A run's hold on its control: attaches it, moves it through its states, and marks it done
/// even when the run unwinds.
#[derive(Debug)]
pub(crate) struct Attachment<'a> {
    control: &'a ContainerControl,
    finished: bool,
}

impl<'a> Attachment<'a> {
    /// Attaches `control` to the container `id`; a control already attached to a run is
    /// refused.
    pub(crate) fn attach(control: &'a ContainerControl, id: &str) -> Result<Self, Error> {
        let mut shared = control.lock();
        if !matches!(shared.phase, Phase::Detached) {
            return Err(Error::ControlInUse {
                container: shared.phase.id().unwrap_or("(refused)").to_string(),
            });
        }
        shared.phase = Phase::Starting { id: id.to_string() };
        drop(shared);
        control.notify();
        Ok(Attachment {
            control,
            finished: false,
        })
    }

    /// A run that `control` was handed to was refused before its container had a state
    /// directory (an invalid spec, a name in use): the control fails at once, so that its
    /// waiters need not wait for their timeouts. A control attached to another run is left
    /// alone.
    pub(crate) fn refuse(control: &ContainerControl, name: Option<&str>) {
        let mut shared = control.lock();
        if matches!(shared.phase, Phase::Detached) {
            shared.phase = Phase::Failed {
                id: name.map(str::to_string),
                cleaned: true,
            };
            drop(shared);
            control.notify();
        }
    }

    /// Whether the container has been seen started.
    pub(crate) fn is_started(&self) -> bool {
        !matches!(self.control.lock().phase, Phase::Starting { .. })
    }

    /// The container's process has started as `pid`.
    pub(crate) fn started(&self, target: Target, pid: u32) {
        let mut shared = self.control.lock();
        if matches!(shared.phase, Phase::Starting { .. }) {
            shared.phase = Phase::Running { target, pid };
            drop(shared);
            self.control.notify();
        }
    }

    /// The run is over: a running container has exited with `status` (killed by the sandbox
    /// when `None`), a starting one never started. Later calls change nothing.
    pub(crate) fn ended(&self, status: Option<ExitStatus>) {
        let mut shared = self.control.lock();
        let next = match &shared.phase {
            Phase::Running { target, .. } => Phase::Exited {
                id: target.id.clone(),
                status: status.unwrap_or(KILLED),
                cleaned: false,
            },
            Phase::Starting { id } => Phase::Failed {
                id: Some(id.clone()),
                cleaned: false,
            },
            _ => return,
        };
        shared.phase = next;
        drop(shared);
        self.control.notify();
    }

    /// Waits, at most `timeout`, for the operations in flight to finish.
    pub(crate) fn drain(&self, timeout: Duration) {
        let (shared, done) = self.control.wait_for(timeout, |s| s.busy == 0);
        drop(shared);
        if !done {
            tracing::warn!(
                "operations on a container are still running after {timeout:?}; cleaning up"
            );
        }
    }

    /// The run has cleaned up.
    pub(crate) fn finish(mut self) {
        self.mark_cleaned();
    }

    fn mark_cleaned(&mut self) {
        self.finished = true;
        self.ended(None);
        let mut shared = self.control.lock();
        match &mut shared.phase {
            Phase::Exited { cleaned, .. } | Phase::Failed { cleaned, .. } => *cleaned = true,
            _ => {}
        }
        drop(shared);
        self.control.notify();
    }
}

impl Drop for Attachment<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.mark_cleaned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: &str) -> Target {
        Target {
            runtime: Runtime::locate(Path::new("true")).unwrap(),
            state: PathBuf::from("/nonexistent/state"),
            dir: PathBuf::from("/nonexistent"),
            id: id.to_string(),
        }
    }

    #[test]
    fn a_detached_control_refuses_operations() {
        let control = ContainerControl::new();
        assert_eq!(control.state(), ContainerState::Pending);
        assert_eq!(control.id(), None);
        let err = control.signal(libc::SIGTERM).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotRunning {
                    container: None,
                    state: ContainerState::Pending
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the container is not running: it has not started yet"
        );
        assert!(matches!(
            control.exec(["true"], &[], Duration::from_secs(1)),
            Err(Error::NotRunning { .. })
        ));
        assert!(matches!(control.pid(), Err(Error::NotRunning { .. })));
        let err = control.wait_started(Duration::from_millis(20)).unwrap_err();
        assert_eq!(err.to_string(), "the container did not start within 20ms");
    }

    #[test]
    fn states_follow_the_run() {
        let control = ContainerControl::new();
        let attachment = Attachment::attach(&control, "c1").unwrap();
        assert_eq!(control.id().as_deref(), Some("c1"));
        assert_eq!(control.state(), ContainerState::Pending);
        // One control, one run.
        let again = Attachment::attach(&control, "c2").unwrap_err();
        assert_eq!(
            again.to_string(),
            "the container control is already attached to container c1"
        );

        std::thread::scope(|s| {
            let waiter = s.spawn(|| control.wait_started(Duration::from_secs(10)));
            std::thread::sleep(Duration::from_millis(50));
            attachment.started(target("c1"), 4242);
            waiter.join().unwrap().unwrap();
        });
        assert_eq!(control.state(), ContainerState::Running { pid: 4242 });
        assert_eq!(control.pid().unwrap(), 4242);
        let err = control.wait_exited(Duration::from_millis(10)).unwrap_err();
        assert_eq!(err.to_string(), "container c1 did not exit within 10ms");

        attachment.ended(Some(ExitStatus::from_code(3)));
        // Exited, but not cleaned up yet: waiting for the exit still waits.
        assert_eq!(
            control.state(),
            ContainerState::Exited(ExitStatus::from_code(3))
        );
        assert!(control.wait_exited(Duration::from_millis(10)).is_err());
        let err = control.pid().unwrap_err();
        assert_eq!(
            err.to_string(),
            "container c1 is not running: it has exited (exit code: 3)"
        );
        std::thread::scope(|s| {
            let waiter = s.spawn(|| control.wait_exited(Duration::from_secs(10)));
            std::thread::sleep(Duration::from_millis(50));
            attachment.finish();
            assert_eq!(waiter.join().unwrap().unwrap().code(), 3);
        });
        control.wait_started(Duration::ZERO).unwrap();
    }

    #[test]
    fn a_run_that_never_starts_fails_its_waiters() {
        let control = ContainerControl::new();
        {
            let _attachment = Attachment::attach(&control, "c1").unwrap();
            // Dropped without finishing, as when the run unwinds.
        }
        assert_eq!(control.state(), ContainerState::Failed);
        let err = control.wait_started(Duration::from_secs(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "container c1 is not running: it never started"
        );
        assert!(matches!(
            control.wait_exited(Duration::from_secs(1)),
            Err(Error::NotRunning {
                state: ContainerState::Failed,
                ..
            })
        ));
    }

    #[test]
    fn a_refused_run_fails_its_control_at_once() {
        let control = ContainerControl::new();
        Attachment::refuse(&control, Some("web"));
        assert_eq!(control.state(), ContainerState::Failed);
        let err = control.wait_started(Duration::from_secs(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "container web is not running: it never started"
        );
        // It served its one run.
        let err = Attachment::attach(&control, "other").unwrap_err();
        assert!(matches!(err, Error::ControlInUse { .. }), "{err:?}");
        // A control that another run holds is not touched.
        let held = ContainerControl::new();
        let _attachment = Attachment::attach(&held, "c1").unwrap();
        Attachment::refuse(&held, Some("c2"));
        assert_eq!(held.state(), ContainerState::Pending);
        assert_eq!(held.id().as_deref(), Some("c1"));
    }

    #[test]
    fn an_unwinding_run_reports_its_started_container_killed() {
        let control = ContainerControl::new();
        {
            let attachment = Attachment::attach(&control, "c1").unwrap();
            attachment.started(target("c1"), 7);
        }
        assert_eq!(control.wait_exited(Duration::ZERO).unwrap().code(), 137);
    }

    #[test]
    fn cleanup_waits_for_operations_in_flight() {
        let control = ContainerControl::new();
        let attachment = Attachment::attach(&control, "c1").unwrap();
        attachment.started(target("c1"), 7);
        let (busy, _, _) = control.begin().unwrap();
        attachment.ended(Some(ExitStatus::from_code(0)));
        // No new operation starts once the container has exited.
        assert!(matches!(control.begin(), Err(Error::NotRunning { .. })));
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                drop(busy);
            });
            attachment.drain(Duration::from_secs(10));
        });
        assert!(start.elapsed() >= Duration::from_millis(100));
        attachment.finish();
    }

    #[test]
    fn bad_arguments_are_refused_first() {
        let control = ContainerControl::new();
        assert!(matches!(
            control.signal(0),
            Err(Error::InvalidSpec(m)) if m.contains("signal number 0")
        ));
        assert!(matches!(
            control.exec(Vec::<String>::new(), &[], Duration::from_secs(1)),
            Err(Error::InvalidSpec(_))
        ));
        assert!(matches!(
            control.exec(["true"], &["NOEQUALS".to_string()], Duration::from_secs(1)),
            Err(Error::InvalidSpec(m)) if m.contains("NOEQUALS")
        ));
    }
}
