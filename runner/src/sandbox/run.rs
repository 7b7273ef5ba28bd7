//! One run, from its state directory to its cleanup, and the sweep of dead runs' leftovers.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::control::{self, Attachment, Target};
use super::error::Error;
use super::mount::{self, Overlay, mounts_under};
use super::path::{is_missing, resolve_in_root};
use super::runtime::{self, Runtime};
use super::spec::{self, SpecInput};
use super::stubs::Stubs;
use super::user::{User, resolve_user};
use super::{
    Config, DEFAULT_PATH_ENV, ExitStatus, Mount, Network, RootfsSpec, RunSpec, Stream, cgroup, etc,
    netns, resources,
};

/// Held shared while a run creates its state directory, exclusive while sweeping.
const ROOT_LOCK: &str = ".lock";
/// Held exclusive by a run for as long as it is alive.
const RUN_LOCK: &str = "lock";
/// The runtime's `--root`.
const RUNTIME_STATE: &str = "runc";
/// The runtime's JSON log.
const RUNTIME_LOG: &str = "runtime.log";
/// The overlay's mount point.
const ROOTFS_DIR: &str = "rootfs";
/// The lower directory of an overlay that has none.
const EMPTY_LOWER: &str = "empty";
/// The generated files that are bind-mounted into `/etc`.
const ETC_DIR: &str = "etc";
/// The bundle's config.
const CONFIG_JSON: &str = "config.json";
/// Where the runtime writes the container's init pid once it has started it (only for a run
/// with a [`super::ContainerControl`]).
const INIT_PID: &str = "init.pid";
/// The longest container name: a file name.
const NAME_MAX: usize = 255;
/// The overlays of [`Mount::Layers`]: `mounts/<n>/{merged,upper,work}`, `n` the mount's index.
const MOUNTS_DIR: &str = "mounts";
/// The tmpfs that holds the files of [`Mount::File`], one per mount, named by its index.
const FILES_DIR: &str = "files";
/// The size of that tmpfs: room for the files and the tmpfs's own bookkeeping.
const FILES_TMPFS_SLACK: u64 = 1 << 20;

/// How long a container that is being stopped gets before its runtime process is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A container id that is unique on this host: runc takes `[A-Za-z0-9_+.-]+`.
fn new_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "berth-{:x}-{:08x}-{:x}",
        std::process::id(),
        nanos,
        RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn flock(file: &File, operation: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: the descriptor is valid for the lifetime of `file`.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn lock_root(root: &Path, exclusive: bool) -> Result<File, Error> {
    let path = root.join(ROOT_LOCK);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    flock(&file, op).map_err(|e| Error::io("lock", &path, e))?;
    Ok(file)
}

/// Runs `spec` and cleans up; the run's error wins over a cleanup error, which is then logged.
pub(crate) fn execute(
    config: &Config,
    spec: &RunSpec,
    on_output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<ExitStatus, Error> {
    let refused = |err: Error| {
        if let Some(control) = &spec.control {
            Attachment::refuse(control, spec.name.as_deref());
        }
        err
    };
    validate(spec).map_err(refused)?;
    // Declared first so that, should the caller's callback unwind, it is dropped (marking the
    // control done) only after the run's own cleanup.
    let attachment: Option<Attachment<'_>>;
    let mut run = Run::create(config, spec.name.as_deref()).map_err(refused)?;
    attachment = match &spec.control {
        Some(control) => Some(Attachment::attach(control, &run.id)?),
        None => None,
    };
    let result = run.execute(spec, attachment.as_ref(), on_output);
    if let Some(attachment) = &attachment {
        attachment.ended(None);
        attachment.drain(STOP_GRACE);
    }
    let cleanup = run.cleanup();
    if let Some(attachment) = attachment {
        attachment.finish();
    }
    match (result, cleanup) {
        (Ok(status), Ok(())) => Ok(status),
        (Ok(_), Err(err)) => Err(err),
        (Err(err), Ok(())) => Err(err),
        (Err(err), Err(cleanup)) => {
            tracing::warn!(%cleanup, "sandbox cleanup failed after an error");
            Err(err)
        }
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidSpec(message)
}

fn require_dir(what: &str, path: &Path) -> Result<(), Error> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(invalid(format!(
            "{what} {} is not a directory",
            path.display()
        ))),
        Err(err) => Err(Error::io("open", path, err)),
    }
}

/// Checks a caller's container name: runc's id alphabet, a file name that cannot be hidden.
fn validate_name(name: &str) -> Result<(), Error> {
    let valid = name.len() <= NAME_MAX
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid container name {name:?}: letters, digits, '_', '.', '+' and '-', \
             starting with a letter or a digit, at most {NAME_MAX} bytes"
        )))
    }
}

/// Checks what can be checked before anything is created.
fn validate(spec: &RunSpec) -> Result<(), Error> {
    if let Some(name) = &spec.name {
        validate_name(name)?;
    }
    if let Network::Join(path) = &spec.network {
        netns::check(path)?;
    }
    if let Some(limits) = &spec.resources {
        limits.validate().map_err(invalid)?;
    }
    if let Some(parent) = &spec.cgroup_parent {
        cgroup::validate_path(parent).map_err(invalid)?;
    }
    resources::validate_rlimits(&spec.rlimits).map_err(invalid)?;
    let process = &spec.process;
    if process.args.is_empty() {
        return Err(invalid("the process has no arguments".into()));
    }
    if process.tty {
        return Err(invalid("a terminal (tty) is not supported".into()));
    }
    if !process.cwd.is_absolute() {
        return Err(invalid(format!(
            "the working directory {} is not absolute",
            process.cwd.display()
        )));
    }
    if let Some(hostname) = &spec.hostname {
        super::validate_hostname(hostname)?;
    }
    for m in &spec.mounts {
        if !m.target().is_absolute() {
            return Err(invalid(format!(
                "mount target {} is not absolute",
                m.target().display()
            )));
        }
        match m {
            Mount::Bind { source, .. } => {
                fs::symlink_metadata(source).map_err(|e| Error::io("open", source, e))?;
            }
            Mount::Layers { lower, .. } => {
                if lower.is_empty() {
                    return Err(invalid(format!(
                        "layers mount at {} has no layer directories",
                        m.target().display()
                    )));
                }
                for dir in lower {
                    require_dir("layer directory", dir)?;
                }
            }
            Mount::Tmpfs { .. } | Mount::File { .. } => {}
        }
    }
    match &spec.rootfs {
        RootfsSpec::Dir(dir) => require_dir("root filesystem", dir)?,
        RootfsSpec::Overlay { lower, upper, work } => {
            for dir in lower {
                require_dir("lower directory", dir)?;
            }
            require_dir("upper directory", upper)?;
            require_dir("work directory", work)?;
        }
    }
    Ok(())
}

/// The environment: the caller's, with `PATH` and `HOME` added when missing.
fn environment(env: &[String], user: &User) -> Vec<String> {
    let has = |key: &str| {
        env.iter()
            .any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    };
    let mut out = env.to_vec();
    if !has("PATH") {
        out.push(format!("PATH={DEFAULT_PATH_ENV}"));
    }
    if !has("HOME") {
        out.push(format!("HOME={}", user.home));
    }
    out
}

/// Creates the working directory and its missing parents, owned by the user, as BuildKit does.
fn ensure_cwd(rootfs: &Path, cwd: &Path, user: &User) -> Result<(), Error> {
    let host = resolve_in_root(rootfs, cwd).map_err(|e| Error::io("resolve", cwd, e))?;
    let mut missing = Vec::new();
    let mut path = host;
    while path != rootfs && path.starts_with(rootfs) {
        match fs::symlink_metadata(&path) {
            Ok(_) => break,
            Err(err) if is_missing(&err) => {
                missing.push(path.clone());
                path.pop();
            }
            Err(err) => return Err(Error::io("inspect", &path, err)),
        }
    }
    for dir in missing.iter().rev() {
        DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .map_err(|e| Error::io("create", dir, e))?;
        std::os::unix::fs::lchown(dir, Some(user.uid), Some(user.gid))
            .map_err(|e| Error::io("chown", dir, e))?;
    }
    Ok(())
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), Error> {
    OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o644)
        .open(path)
        .and_then(|mut f| io::Write::write_all(&mut f, contents))
        .map_err(|e| Error::io("write", path, e))
}

fn create_dir(path: &Path, mode: u32) -> Result<(), Error> {
    DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io("create", path, e))
}

fn canonical(path: &Path) -> Result<PathBuf, Error> {
    fs::canonicalize(path).map_err(|e| Error::io("resolve", path, e))
}

/// Removes a state directory, unless something is still mounted under it: removing through a
/// mount would delete the files it shows.
fn remove_state_dir(dir: &Path) -> Result<(), Error> {
    let mounts = mounts_under(dir).map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
    if let Some(target) = mounts.into_iter().next() {
        return Err(Error::StillMounted { target });
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Error::io("remove", dir, err)),
    }
}

/// Stops a runtime process that is still running: kills the container, then the runtime itself
/// if the container does not go away.
fn stop_runtime(runtime: &Runtime, state: &Path, id: &str, child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let deadline = Instant::now() + STOP_GRACE;
    let mut last_kill: Option<Instant> = None;
    while Instant::now() < deadline {
        if last_kill.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            runtime.kill(state, id);
            last_kill = Some(Instant::now());
        }
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A run's state directory and what has been set up in it, undone by [`Run::cleanup`] or, if
/// the caller unwinds, by `Drop`.
struct Run<'a> {
    config: &'a Config,
    id: String,
    dir: PathBuf,
    overlay: Option<Overlay>,
    mounted: Option<PathBuf>,
    /// What the sandbox mounted for the caller's mounts, in the order it was mounted.
    extra_mounted: Vec<PathBuf>,
    stubs: Option<Stubs>,
    child: Option<Child>,
    cleaned: bool,
    /// The run's lock, released (closed) after the state directory is gone.
    _lock: File,
}

impl<'a> Run<'a> {
    /// Creates the run's state directory, named `name` or a made-up id, and takes its lock.
    /// A named directory that a dead run left is swept first.
    fn create(config: &'a Config, name: Option<&str>) -> Result<Run<'a>, Error> {
        let mut reclaimed = false;
        loop {
            let root_lock = lock_root(&config.root, false)?;
            let id = name.map_or_else(new_id, str::to_string);
            let dir = config.root.join(&id);
            match DirBuilder::new().mode(0o711).create(&dir) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    if name.is_none() {
                        continue;
                    }
                    drop(root_lock);
                    if !reclaimed && reclaim(config, &dir)? {
                        reclaimed = true;
                        continue;
                    }
                    return Err(Error::NameInUse {
                        name: id,
                        root: config.root.clone(),
                    });
                }
                Err(err) => return Err(Error::io("create", &dir, err)),
            }
            let lock_path = dir.join(RUN_LOCK);
            let lock = OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&lock_path)
                .and_then(|f| flock(&f, libc::LOCK_EX | libc::LOCK_NB).map(|()| f));
            return match lock {
                Ok(lock) => Ok(Run {
                    config,
                    id,
                    dir,
                    overlay: None,
                    mounted: None,
                    extra_mounted: Vec::new(),
                    stubs: None,
                    child: None,
                    cleaned: false,
                    _lock: lock,
                }),
                Err(err) => {
                    let _ = fs::remove_dir_all(&dir);
                    Err(Error::io("lock", lock_path, err))
                }
            };
        }
    }

    fn execute(
        &mut self,
        spec: &RunSpec,
        attachment: Option<&Attachment<'_>>,
        on_output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<ExitStatus, Error> {
        let rootfs = match &spec.rootfs {
            RootfsSpec::Dir(dir) => canonical(dir)?,
            RootfsSpec::Overlay { lower, upper, work } => {
                let mut lower = lower
                    .iter()
                    .map(|l| canonical(l))
                    .collect::<Result<Vec<_>, _>>()?;
                if lower.is_empty() {
                    let empty = self.dir.join(EMPTY_LOWER);
                    create_dir(&empty, 0o755)?;
                    lower.push(empty);
                }
                let overlay = Overlay {
                    lower,
                    upper: canonical(upper)?,
                    work: canonical(work)?,
                };
                let merged = self.dir.join(ROOTFS_DIR);
                create_dir(&merged, 0o755)?;
                overlay.mount(&merged)?;
                self.mounted = Some(merged.clone());
                self.overlay = Some(overlay);
                merged
            }
        };

        let process = &spec.process;
        let user = resolve_user(&rootfs, &process.user)?;
        ensure_cwd(&rootfs, &process.cwd, &user)?;

        let hostname = spec.hostname.as_deref().unwrap_or(&self.config.hostname);
        let etc_dir = self.dir.join(ETC_DIR);
        create_dir(&etc_dir, 0o755)?;
        let hosts = etc_dir.join("hosts");
        let resolv_conf = etc_dir.join("resolv.conf");
        let hostname_file = etc_dir.join("hostname");
        write_file(&hosts, etc::hosts(hostname).as_bytes())?;
        let host_resolv = fs::read_to_string(etc::HOST_RESOLV_CONF).ok();
        write_file(
            &resolv_conf,
            etc::resolv_conf(host_resolv.as_deref(), own_network_namespace(&spec.network))
                .as_bytes(),
        )?;
        write_file(&hostname_file, etc::hostname_file(hostname).as_bytes())?;

        let mounts = self.prepare_mounts(&spec.mounts)?;
        let config = spec::build(&SpecInput {
            rootfs: &rootfs,
            readonly_rootfs: spec.readonly_rootfs,
            args: &process.args,
            env: environment(&process.env, &user),
            cwd: &process.cwd,
            user: &user,
            hostname,
            network: &spec.network,
            nofile: spec::nofile_limit(),
            rlimits: &spec.rlimits,
            resources: spec.resources.as_ref(),
            cgroups_path: spec
                .cgroup_parent
                .as_ref()
                .map(|parent| format!("{parent}/{}", self.id)),
            resolv_conf: &resolv_conf,
            hosts: &hosts,
            hostname_file: &hostname_file,
            mounts: &mounts,
        })?;
        let json = serde_json::to_vec_pretty(&config)
            .map_err(|e| Error::io("serialize", CONFIG_JSON, e.into()))?;
        write_file(&self.dir.join(CONFIG_JSON), &json)?;

        let destinations = spec::stub_destinations(&spec.mounts);
        self.stubs = Some(
            Stubs::record(
                &rootfs,
                &destinations,
                self.overlay.as_ref(),
                spec.mount_stubs,
            )
            .map_err(|e| Error::io("inspect", &rootfs, e))?,
        );

        let state = self.dir.join(RUNTIME_STATE);
        let log = self.dir.join(RUNTIME_LOG);
        let runtime = &self.config.runtime;
        let pid_file = attachment.map(|_| self.dir.join(INIT_PID));
        let child = self.child.insert(runtime.spawn_run(
            &state,
            &log,
            &self.dir,
            &self.id,
            pid_file.as_deref(),
        )?);
        let (id, dir) = (&self.id, &self.dir);
        // Moves the control to running once the runtime has written the init's pid.
        let look_for_start = || match (attachment, &pid_file) {
            (Some(attachment), Some(pid_file)) if !attachment.is_started() => {
                match control::read_pid(pid_file) {
                    Some(pid) => {
                        let target = Target {
                            runtime: runtime.clone(),
                            state: state.clone(),
                            dir: dir.clone(),
                            id: id.clone(),
                        };
                        attachment.started(target, pid);
                        true
                    }
                    None => false,
                }
            }
            _ => true,
        };
        let ended = runtime::pump(
            child,
            on_output,
            spec.cancel.as_ref(),
            &mut || {
                runtime.kill(&state, id);
            },
            &mut || {
                if look_for_start() {
                    runtime::TICK
                } else {
                    control::START_TICK
                }
            },
        )?;
        // A container that started and exited between two looks has still started.
        look_for_start();
        let mut status = ended.status;
        if !ended.cancelled {
            // The runtime ran with `--keep`: the container's cgroup is still there.
            let cgroup = spec
                .cgroup_parent
                .as_ref()
                .map_or_else(|| id.clone(), |parent| format!("{parent}/{id}"));
            match cgroup::oom_kills(&cgroup) {
                Some(kills) => status.oom_killed = kills > 0,
                None => tracing::debug!(container = %id, %cgroup,
                    "cannot read the container's OOM kill counter"),
            }
        }
        if let Some(attachment) = attachment {
            attachment.ended(Some(status));
        }
        self.child = None;

        if ended.cancelled {
            return Err(Error::Cancelled);
        }
        if !status.success() {
            let errors = runtime::logged_errors(&log);
            if !errors.is_empty() {
                return Err(Error::Runtime {
                    runtime: runtime.path().to_path_buf(),
                    action: "run",
                    message: errors.join("; "),
                });
            }
        }
        Ok(status)
    }

    /// Makes what the caller's mounts need on the host, and returns them as the runtime takes
    /// them: a [`Mount::Layers`] becomes a bind of a path in an overlay mounted under
    /// `mounts/<n>`, a [`Mount::File`] a read-only bind of a file on the run's own tmpfs.
    fn prepare_mounts(&mut self, mounts: &[Mount]) -> Result<Vec<Mount>, Error> {
        let mut out = Vec::with_capacity(mounts.len());
        let mut files: Option<PathBuf> = None;
        for (index, m) in mounts.iter().enumerate() {
            match m {
                Mount::Bind { .. } | Mount::Tmpfs { .. } => out.push(m.clone()),
                Mount::Layers {
                    lower,
                    path,
                    target,
                    readonly,
                } => {
                    let base = self.dir.join(MOUNTS_DIR).join(index.to_string());
                    DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&base)
                        .map_err(|e| Error::io("create", &base, e))?;
                    let merged = base.join("merged");
                    let upper = base.join("upper");
                    let work = base.join("work");
                    for dir in [&merged, &upper, &work] {
                        create_dir(dir, 0o755)?;
                    }
                    let overlay = Overlay {
                        lower: lower
                            .iter()
                            .map(|l| canonical(l))
                            .collect::<Result<_, _>>()?,
                        upper,
                        work,
                    };
                    overlay.mount(&merged)?;
                    self.extra_mounted.push(merged.clone());
                    let source = resolve_in_root(&merged, path)
                        .map_err(|e| Error::io("resolve", path, e))?;
                    fs::symlink_metadata(&source).map_err(|e| Error::io("open", path, e))?;
                    out.push(Mount::Bind {
                        source,
                        target: target.clone(),
                        readonly: *readonly,
                    });
                }
                Mount::File {
                    contents,
                    target,
                    mode,
                    uid,
                    gid,
                } => {
                    let dir = match &files {
                        Some(dir) => dir.clone(),
                        None => {
                            let dir = self.dir.join(FILES_DIR);
                            create_dir(&dir, 0o700)?;
                            let size: u64 = mounts
                                .iter()
                                .map(|m| match m {
                                    Mount::File { contents, .. } => {
                                        contents.as_bytes().len() as u64 + 4096
                                    }
                                    _ => 0,
                                })
                                .sum::<u64>()
                                + FILES_TMPFS_SLACK;
                            mount::mount_tmpfs(&dir, &format!("mode=700,size={size}"))?;
                            self.extra_mounted.push(dir.clone());
                            files.insert(dir).clone()
                        }
                    };
                    let file = dir.join(index.to_string());
                    OpenOptions::new()
                        .create_new(true)
                        .write(true)
                        .mode(0o600)
                        .open(&file)
                        .and_then(|mut f| io::Write::write_all(&mut f, contents.as_bytes()))
                        .map_err(|e| Error::io("write", &file, e))?;
                    std::os::unix::fs::lchown(&file, Some(*uid), Some(*gid))
                        .map_err(|e| Error::io("chown", &file, e))?;
                    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(*mode))
                        .map_err(|e| Error::io("chmod", &file, e))?;
                    out.push(Mount::Bind {
                        source: file,
                        target: target.clone(),
                        readonly: true,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Undoes everything, in order, going on after a failed step; returns the first failure.
    fn cleanup(&mut self) -> Result<(), Error> {
        if self.cleaned {
            return Ok(());
        }
        self.cleaned = true;
        let mut first: Option<Error> = None;
        let mut note = |err: Error| match first {
            None => first = Some(err),
            Some(_) => tracing::warn!(%err, "sandbox cleanup"),
        };

        let runtime = &self.config.runtime;
        let state = self.dir.join(RUNTIME_STATE);
        if let Some(mut child) = self.child.take() {
            stop_runtime(runtime, &state, &self.id, &mut child);
        }
        if state.join(&self.id).exists() {
            if let Err(err) = runtime.delete_force(&state, &self.id) {
                note(err);
            }
        }
        if let Some(stubs) = &self.stubs {
            stubs.remove();
        }
        let mut unmounted = true;
        if let Some(merged) = self.mounted.take() {
            if let Err(err) = mount::unmount(&merged) {
                unmounted = false;
                note(err);
            }
        }
        if let (true, Some(stubs), Some(overlay)) = (unmounted, &self.stubs, &self.overlay) {
            stubs.prune_copy_ups(overlay);
        }
        while let Some(target) = self.extra_mounted.pop() {
            if let Err(err) = mount::unmount(&target) {
                note(err);
            }
        }
        if let Err(err) = remove_state_dir(&self.dir) {
            note(err);
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.cleanup() {
            tracing::warn!(%err, dir = %self.dir.display(), "sandbox cleanup failed");
        }
    }
}

/// Cleans up the state directories under the root whose run is no longer alive.
pub(crate) fn sweep(config: &Config) -> Result<usize, Error> {
    let _root_lock = lock_root(&config.root, true)?;
    let entries = fs::read_dir(&config.root).map_err(|e| Error::io("read", &config.root, e))?;
    let mut removed = 0;
    let mut first: Option<Error> = None;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", &config.root, e))?;
        let dir = entry.path();
        if entry.file_name().as_encoded_bytes().starts_with(b".")
            || !entry.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let _lock = match liveness(&dir) {
            Ok(Liveness::Dead(lock)) => lock,
            Ok(Liveness::Alive) => continue,
            Err(err) => {
                first.get_or_insert(err);
                continue;
            }
        };
        match clean_stale(config, &dir) {
            Ok(()) => removed += 1,
            Err(err) => {
                tracing::warn!(%err, dir = %dir.display(), "cannot clean up a dead sandbox run");
                first.get_or_insert(err);
            }
        }
    }
    match first {
        Some(err) => Err(err),
        None => Ok(removed),
    }
}

/// Whether the run of a state directory is alive.
enum Liveness {
    /// Its run holds its lock.
    Alive,
    /// Its run is gone. The lock is now held here, so that nothing else cleans the directory
    /// up at the same time; `None` for a directory whose run died before it had a lock.
    Dead(Option<File>),
}

/// Judges a state directory by its lock. Called with the root locked exclusively, so that no
/// run is being set up: a directory without a lock is one whose run died while setting up.
fn liveness(dir: &Path) -> Result<Liveness, Error> {
    match File::open(dir.join(RUN_LOCK)) {
        Ok(file) => match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Liveness::Dead(Some(file))),
            Err(_) => Ok(Liveness::Alive),
        },
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Liveness::Dead(None)),
        Err(err) => Err(Error::io("open", dir.join(RUN_LOCK), err)),
    }
}

/// Cleans up the state directory `dir` that a named run found in its way, if its run is dead.
/// Returns whether it was removed.
fn reclaim(config: &Config, dir: &Path) -> Result<bool, Error> {
    let _root_lock = lock_root(&config.root, true)?;
    if fs::symlink_metadata(dir).is_err() {
        // Gone since: cleaned up by its run, or by a sweep.
        return Ok(true);
    }
    let Liveness::Dead(_lock) = liveness(dir)? else {
        return Ok(false);
    };
    tracing::info!(dir = %dir.display(), "removing what a dead run left under its name");
    clean_stale(config, dir)?;
    Ok(true)
}

/// Whether a network mode puts the process in another network namespace than the caller's.
fn own_network_namespace(network: &Network) -> bool {
    match network {
        Network::Host => false,
        Network::None => true,
        Network::Join(path) => !netns::is_own(path),
    }
}

fn clean_stale(config: &Config, dir: &Path) -> Result<(), Error> {
    let state = dir.join(RUNTIME_STATE);
    if let Ok(containers) = fs::read_dir(&state) {
        for container in containers.flatten() {
            if container.path().is_dir() {
                let id = container.file_name().to_string_lossy().into_owned();
                config.runtime.delete_force(&state, &id)?;
            }
        }
    }
    let mut mounts = mounts_under(dir).map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for target in mounts {
        mount::unmount(&target)?;
    }
    remove_state_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_container_ids_and_unique() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_+-.".contains(&c))
        );
    }

    #[test]
    fn container_names() {
        for good in ["web", "task-0123abcd-web", "a.b_c+d", "9lives"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "-flag", "a/b", "sp ace", "ünï"] {
            let err = validate_name(bad).unwrap_err();
            assert!(err.to_string().contains("invalid container name"), "{err}");
        }
        assert!(validate_name(&"x".repeat(255)).is_ok());
        assert!(validate_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn environment_adds_path_and_home_only_when_missing() {
        let user = User {
            uid: 1,
            gid: 1,
            additional_gids: vec![],
            home: "/home/u".into(),
        };
        assert_eq!(
            environment(&["A=1".into()], &user),
            [
                "A=1".to_string(),
                format!("PATH={DEFAULT_PATH_ENV}"),
                "HOME=/home/u".to_string()
            ]
        );
        let env = vec!["PATH=/x".to_string(), "HOME=/y".to_string()];
        assert_eq!(environment(&env, &user), env);
    }

    #[test]
    fn cwd_is_created_with_its_parents_and_owned_by_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("srv")).unwrap();
        let user = User {
            uid: 1234,
            gid: 5678,
            additional_gids: vec![],
            home: "/".into(),
        };
        ensure_cwd(root, Path::new("/srv/app/src"), &user).unwrap();
        use std::os::unix::fs::MetadataExt;
        for p in ["srv/app", "srv/app/src"] {
            let meta = fs::metadata(root.join(p)).unwrap();
            assert!(meta.is_dir());
            assert_eq!((meta.uid(), meta.gid()), (1234, 5678), "{p}");
        }
        let srv = fs::metadata(root.join("srv")).unwrap();
        assert_ne!(srv.uid(), 1234);
    }
}
