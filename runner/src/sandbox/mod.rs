//! The container sandbox: runs one process in a root filesystem through an OCI runtime.
//!
//! This is the only code in berth that mounts, unshares or execs containers. The builder's RUN
//! steps and the task runner describe what to run with a [`RunSpec`] and get back the exit code
//! and the output; they never mount anything themselves. Everything a task container needs
//! beyond a build step is opt-in, and a [`RunSpec::new`] without it runs exactly as a RUN step
//! does (see "Task containers" below).
//!
//! ```no_run
//! use berth_runner::sandbox::{ProcessSpec, RootfsSpec, RunSpec, Sandbox};
//!
//! let sandbox = Sandbox::builder().root("/var/lib/berth/sandbox").build()?;
//! let spec = RunSpec::new(
//!     RootfsSpec::Overlay {
//!         lower: vec!["/snapshots/2/fs".into(), "/snapshots/1/fs".into()],
//!         upper: "/snapshots/3/fs".into(),
//!         work: "/snapshots/3/work".into(),
//!     },
//!     ProcessSpec::new(["/bin/sh", "-c", "apk add curl"]),
//! );
//! let status = sandbox.run(&spec, &mut |_stream, bytes| {
//!     print!("{}", String::from_utf8_lossy(bytes));
//! })?;
//! println!("exit code {}", status.code());
//! # Ok::<(), berth_runner::sandbox::Error>(())
//! ```
//!
//! # One run
//! A run gets a state directory `<root>/<id>` holding its lock, the runtime's own state
//! (`runc/`), `config.json` (the directory is the bundle), the generated `etc/hosts`,
//! `etc/resolv.conf` and `etc/hostname`, and for an overlay the merged mount point `rootfs/`.
//! The id is [`RunSpec::name`] when the caller chose one, else made up; it is also the
//! runtime's container id.
//! In order, [`Sandbox::run`]:
//! 1. mounts the overlay (lower directories read-only, top first, plus the upper and work
//!    directories) on `rootfs/`, or takes the plain directory as it is. `index`, `redirect_dir`
//!    and `metacopy` are turned off where the kernel knows them, as Docker's overlay2 driver
//!    does, so that the upper directory is a plain diff (whiteouts are 0/0 character devices,
//!    opaque directories carry `trusted.overlay.opaque`);
//! 2. resolves `USER` through the image's `/etc/passwd` and `/etc/group` (see [`resolve_user`]),
//!    and creates the working directory if it is missing, owned by that user;
//! 3. makes what the caller's mounts need on the host ([`Mount::Layers`]: an overlay under
//!    `mounts/<n>`; [`Mount::File`]: a file on a tmpfs of the run's own, `files/`), writes
//!    `config.json` (below) and notes which mount destinations are missing, since the runtime
//!    will create stubs for them;
//! 4. runs `<runtime> --root <state>/runc run --keep --bundle <state> <id>`, streaming stdout
//!    and stderr to the caller as they arrive (with a [`ContainerControl`], also `--pid-file
//!    <state>/init.pid`, which tells it when the container has started). `--keep` leaves the
//!    exited container and its cgroup in place, so that once the process has exited the
//!    sandbox reads the `oom_kill` counter of the container's memory cgroup
//!    ([`ExitStatus::oom_killed`]) before anything deletes it;
//! 5. cleans up, whatever happened: kills and deletes the container (and so its cgroup), removes
//!    the mount stubs the runtime created (and the directories overlayfs copied up for them),
//!    unmounts the overlay and the caller's overlays and tmpfs, and removes the state directory.
//!    A guard does the same when the caller's output callback panics.
//!
//! The upper directory then holds the command's own changes and the stubs `docker build` keeps:
//! the diff for a layer. Those are the `/proc`, `/dev` and `/sys` directories the runtime creates
//! when the root filesystem lacks them (BuildKit never removes them, so every image `docker
//! build` makes with a RUN step on such a base has them); the stubs of the generated `/etc`
//! files and of [`RunSpec::mounts`] go as [`RunSpec::mount_stubs`] says: all of them by
//! default, or only the empty files, as docker 20.10 does. Nothing a mount holds reaches the
//! root filesystem.
//!
//! # config.json
//! Built with `oci-spec`, every field set explicitly, to match what `docker build` gives a RUN
//! step (BuildKit's runc executor over containerd's and Docker's default specs):
//! - namespaces: mount, pid, ipc and uts; network for [`Network::None`] (a new one: the runtime
//!   brings up `lo` in it) and [`Network::Join`] (`{"type": "network", "path": ...}`: the
//!   runtime joins it and configures nothing). No user or cgroup namespace;
//! - capabilities: Docker's default set ([`DEFAULT_CAPABILITIES`]) in the bounding, effective and
//!   permitted sets; the inheritable and ambient sets empty, as Docker has done since 23.0;
//! - `noNewPrivileges` false, so setuid binaries such as `su` work in a step;
//! - rlimits: `RLIMIT_NOFILE` [`NOFILE_LIMIT`] soft and hard, as `docker build` gives a step,
//!   lowered to what this process may set: `fs.nr_open`, and its own hard limit when it lacks
//!   `CAP_SYS_RESOURCE` (the runtime would fail to set more); then [`RunSpec::rlimits`], each
//!   replacing the default of its name, as Docker's `--ulimit` replaces the daemon's
//!   `default-ulimits`;
//! - mounts: Docker's `/proc`, `/dev` (tmpfs), `/dev/pts`, `/sys` (read-only), `/sys/fs/cgroup`
//!   (read-only), `/dev/mqueue` and `/dev/shm`; then the generated `/etc/resolv.conf`,
//!   `/etc/hosts` and `/etc/hostname`, bound read-only as BuildKit binds them; then
//!   [`RunSpec::mounts`], a layers mount or a file as the bind mount of what step 3 made;
//! - masked and read-only paths: Docker's ([`MASKED_PATHS`], [`READONLY_PATHS`]);
//! - device cgroup: deny everything and let the runtime add its default allow list (null, zero,
//!   full, random, urandom, tty, ptmx, pts), as containerd's default spec does;
//! - resources: [`RunSpec::resources`] as `linux.resources.{cpu,memory,pids}` (none by default);
//! - cgroups path: `<`[`RunSpec::cgroup_parent`]`>/<id>` when a parent is given, else none (the
//!   runtime's default: runc's cgroupfs driver takes the id, relative to its own cgroup);
//! - hostname: [`DEFAULT_HOSTNAME`] unless the run or the sandbox names another; no seccomp and
//!   no AppArmor profile.
//!
//! # Task containers
//! The task runner runs each container of a task through [`Sandbox::run`] on a thread of its
//! own, with:
//! - [`RunSpec::name`]: the container's id, so that its state is at `<root>/<name>` and the
//!   runtime's tools find it (`runc --root <root>/<name>/runc state <name>`);
//! - [`RunSpec::control`]: a [`ContainerControl`] to wait for the start (ECS's `START`
//!   condition), send SIGTERM and then SIGKILL after `stopTimeout`, run health checks in the
//!   container (`exec`, with a timeout), find the init's pid and wait for the exit;
//! - [`Network::Join`]: the task's network namespace, which all its containers share (awsvpc,
//!   bridge); [`Network::Host`] and [`Network::None`] serve the `host` and `none` modes;
//! - [`RunSpec::resources`] and [`RunSpec::rlimits`]: the container's `cpu`, `memory`,
//!   `memoryReservation` and `ulimits` ([`Resources::ecs_container`]);
//! - [`RunSpec::cgroup_parent`]: the task's cgroup, which [`Sandbox::create_cgroup`] makes with
//!   the task size ([`Resources::task_size`]) and [`Sandbox::remove_cgroup`] removes after the
//!   last container. A relative path (`berth/<task>`) is under this process's own cgroup in
//!   each hierarchy, an absolute one under the hierarchy's root, as runc's cgroupfs driver takes
//!   `cgroupsPath`; cgroup v1 hierarchies (hybrid hosts) and the unified v2 one are handled;
//! - [`Mount::Bind`] (read-only or not) for volumes and [`Mount::Tmpfs`], and
//!   [`RunSpec::hostname`]; the output callback for the container's logs.
//!
//! The [`ExitStatus`] (returned, and in [`ContainerState::Exited`]) carries the exit code and
//! [`ExitStatus::oom_killed`], Docker's `State.OOMKilled`, from which the task runner gives
//! the container ECS's `OutOfMemoryError` reason.
//!
//! The runtime process of a run is killed if the thread that started it dies; the container
//! itself is not (the runtime has no such option), which is why the sweep below exists.
//!
//! # Leftovers
//! A run that is killed with the calling process leaves its state directory behind. Every
//! directory holds a lock while its run is alive; [`Sandbox::sweep`], which
//! [`SandboxBuilder::build`] calls, deletes the containers of directories whose lock is free,
//! unmounts what is mounted under them (the caller's overlays and file tmpfs included) and
//! removes them. The mount stubs such a run left in an upper directory are not removed: a step
//! whose run was killed has no layer to take.
//!
//! A task container runs for as long as its task does, and its run holds the lock all that
//! time, so a sweep (by another sandbox on the same root, in this process or another) never
//! touches it. When the owning process dies, the runtime process dies with it but the
//! container goes on running, orphaned, with nobody reading its output, until the next sweep
//! kills and deletes it: a task runner that restarts builds its sandbox (which sweeps) and
//! starts its tasks again; it cannot adopt them. A run whose [`RunSpec::name`] is held by such
//! a dead run sweeps that one directory first. The sweep does not remove a task's cgroup
//! parent (the runtime removes each container's own cgroup when it deletes the container):
//! [`Sandbox::remove_cgroup`] does.

mod cgroup;
mod control;
mod error;
mod etc;
mod mount;
mod netns;
mod path;
mod resources;
mod run;
mod runtime;
mod spec;
mod stubs;
mod user;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use control::{ContainerControl, ContainerState};
pub use error::Error;
pub use mount::{OverlayMount, mounts_under};
pub use resources::{
    CPU_PERIOD_US, CPU_UNITS_PER_VCPU, MAX_CPU_SHARES, MIB, MIN_CPU_SHARES, MIN_MEMORY_BYTES,
    RLIM_INFINITY, RLIMIT_NAMES, Resources, Rlimit,
};
pub use spec::{DEFAULT_CAPABILITIES, MASKED_PATHS, NOFILE_LIMIT, READONLY_PATHS};
pub use user::{GROUP_PATH, PASSWD_PATH, User, resolve_user};

use runtime::Runtime;

/// The runtime used when none is given: `runc`, looked up on `PATH`.
pub const DEFAULT_RUNTIME: &str = "runc";
/// The state root used when none is given.
pub const DEFAULT_ROOT: &str = "/run/berth/sandbox";
/// The hostname a process sees when none is given: `docker build`'s.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";
/// The `PATH` a process gets when its environment has none: Docker's.
pub const DEFAULT_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs processes in containers. Cheap to share: [`Sandbox::run`] takes `&self`, and runs on
/// different threads are independent.
#[derive(Debug, Clone)]
pub struct Sandbox {
    config: Config,
}

/// The sandbox's settings, fixed when it is built.
#[derive(Debug, Clone)]
struct Config {
    runtime: Runtime,
    root: PathBuf,
    hostname: String,
}

/// Builds a [`Sandbox`].
#[derive(Debug, Clone, Default)]
pub struct SandboxBuilder {
    runtime: Option<PathBuf>,
    root: Option<PathBuf>,
    hostname: Option<String>,
}

impl SandboxBuilder {
    /// The OCI runtime: a path, or a name looked up on `PATH`. Default: [`DEFAULT_RUNTIME`].
    /// Any runtime with runc's command line (`--root`, `--log`, `run --keep --bundle`, `kill`,
    /// `delete --force`) will do.
    pub fn runtime(mut self, runtime: impl Into<PathBuf>) -> Self {
        self.runtime = Some(runtime.into());
        self
    }

    /// The directory that holds one state directory per run. Default: [`DEFAULT_ROOT`].
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// The hostname processes see unless a run names its own. Default: [`DEFAULT_HOSTNAME`].
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Checks that the runtime exists, creates the state root and sweeps what crashed runs
    /// left in it.
    pub fn build(self) -> Result<Sandbox, Error> {
        let runtime = Runtime::locate(
            self.runtime
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_RUNTIME)),
        )?;
        let root = self.root.unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(&root)
            .map_err(|e| Error::io("create", &root, e))?;
        let root = std::fs::canonicalize(&root).map_err(|e| Error::io("resolve", &root, e))?;
        let hostname = self
            .hostname
            .unwrap_or_else(|| DEFAULT_HOSTNAME.to_string());
        validate_hostname(&hostname)?;
        let sandbox = Sandbox {
            config: Config {
                runtime,
                root,
                hostname,
            },
        };
        if let Err(err) = sandbox.sweep() {
            tracing::warn!(%err, "cannot sweep the sandbox state root");
        }
        Ok(sandbox)
    }
}

impl Sandbox {
    /// A builder with the defaults.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// The runtime binary, resolved to an absolute path.
    pub fn runtime(&self) -> &Path {
        self.config.runtime.path()
    }

    /// The state root, resolved to an absolute path.
    pub fn root(&self) -> &Path {
        &self.config.root
    }

    /// Runs `spec` to completion, handing its output to `on_output` as it arrives.
    ///
    /// Returns the process's exit code, non-zero included, and whether the kernel's OOM killer
    /// killed a process of the container: a failing command is a result, not an error. Errors are
    /// the sandbox's own failures (a runtime that cannot start the container, an unknown user, a
    /// mount that fails, ...) and cancellation. The calling thread is blocked until the run is over
    /// and cleaned up.
    pub fn run(
        &self,
        spec: &RunSpec,
        on_output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<ExitStatus, Error> {
        run::execute(&self.config, spec, on_output)
    }

    /// Runs `spec` and collects its output.
    pub fn output(&self, spec: &RunSpec) -> Result<Output, Error> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let status = self.run(spec, &mut |stream, bytes| match stream {
            Stream::Stdout => stdout.extend_from_slice(bytes),
            Stream::Stderr => stderr.extend_from_slice(bytes),
        })?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Cleans up the state directories of runs that are no longer alive (their process was
    /// killed): deletes their containers, unmounts and removes them. Returns how many were
    /// removed.
    pub fn sweep(&self) -> Result<usize, Error> {
        run::sweep(&self.config)
    }

    /// Creates the cgroup `path` to hold a task's containers ([`RunSpec::cgroup_parent`]), with
    /// the `resources` they share: a task size's cpu quota and memory limit. An existing cgroup
    /// gets the new limits. `path` is relative to this process's own cgroup (`berth/<task>`)
    /// or, with a leading `/`, to the hierarchy's root, as the runtime takes `cgroupsPath`
    /// (see "Task containers" in the module docs). With no limits it does nothing, since the
    /// runtime creates the parent itself when it creates a container under it.
    ///
    /// A container's own limits should fit in its parent's: on cgroup v1 the kernel refuses a
    /// container's cpu quota above its parent's (v2 caps it), and a memory limit above the
    /// parent's is never reached.
    pub fn create_cgroup(&self, path: &str, resources: &Resources) -> Result<(), Error> {
        cgroup::create(path, resources)
    }

    /// Removes the cgroup `path` and any cgroups left under it, in every hierarchy. Call it
    /// once the task's runs have all returned (the runtime removes each container's own cgroup
    /// when it deletes the container). A cgroup that does not exist is not an error; one that
    /// still holds processes gives [`Error::CgroupBusy`].
    pub fn remove_cgroup(&self, path: &str) -> Result<(), Error> {
        cgroup::remove(path)
    }
}

/// What to run and in what.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The root filesystem.
    pub rootfs: RootfsSpec,
    /// The process.
    pub process: ProcessSpec,
    /// The network the process sees. Default: the host's.
    pub network: Network,
    /// The hostname; default: the sandbox's.
    pub hostname: Option<String>,
    /// Mounts beyond the standard ones, mounted in order after them.
    pub mounts: Vec<Mount>,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// What happens to the mount stubs after the run. Default: [`MountStubs::Remove`].
    pub mount_stubs: MountStubs,
    /// Cancels the run from another thread.
    pub cancel: Option<CancelToken>,
    /// The container's id, chosen by the caller so that its state can be found: the runtime's
    /// container id and the name of the run's state directory under the sandbox's root
    /// (`runc --root <root>/<name>/runc state <name>` shows it). Letters, digits, `_`, `.`, `+`
    /// and `-`, starting with a letter or a digit, at most 255 bytes. A name that a live run
    /// holds is refused with [`Error::NameInUse`]; the state a dead run left under it is swept
    /// first. Default: an id made up for the run (`berth-<pid>-...`).
    pub name: Option<String>,
    /// cgroup limits of the container: cpu shares and quota, memory limit and reservation,
    /// pids. Default: none (the parent's limits apply).
    pub resources: Option<Resources>,
    /// The cgroup the container's own cgroup is made in: `linux.cgroupsPath` is
    /// `<parent>/<container id>`, so that a task's containers sit under one parent (see
    /// [`Sandbox::create_cgroup`] for the path's form and for limits on the parent). Default:
    /// the runtime's (runc's: the container id, relative to the runtime's own cgroup).
    pub cgroup_parent: Option<String>,
    /// Rlimits of the process, as ECS's `ulimits`. Each replaces the sandbox's default for the
    /// same limit (only `nofile` has one, [`NOFILE_LIMIT`]); the others are inherited from the
    /// caller. Raising a hard limit above the caller's needs `CAP_SYS_RESOURCE`. Default: none.
    pub rlimits: Vec<Rlimit>,
    /// A handle to signal the running container, run processes in it and wait for it from
    /// another thread. One control serves one run.
    pub control: Option<ContainerControl>,
}

impl RunSpec {
    /// A run of `process` in `rootfs` with the host's network and no extra mounts.
    pub fn new(rootfs: RootfsSpec, process: ProcessSpec) -> Self {
        RunSpec {
            rootfs,
            process,
            network: Network::default(),
            hostname: None,
            mounts: Vec::new(),
            readonly_rootfs: false,
            mount_stubs: MountStubs::default(),
            cancel: None,
            name: None,
            resources: None,
            cgroup_parent: None,
            rlimits: Vec::new(),
            control: None,
        }
    }
}

/// The process to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The program and its arguments; the program is looked up on the process's `PATH`.
    pub args: Vec<String>,
    /// `KEY=value` entries. `PATH` ([`DEFAULT_PATH_ENV`]) and `HOME` (the user's home from
    /// passwd, else `/`) are added when missing.
    pub env: Vec<String>,
    /// The working directory, absolute; created (owned by the user) when missing.
    pub cwd: PathBuf,
    /// The `USER` value: `name`, `uid`, `name:group`, `uid:gid`, ...; empty for root.
    pub user: String,
    /// A terminal for the process. Not supported yet: must be false.
    pub tty: bool,
}

impl ProcessSpec {
    /// `args` as root in `/`, with an empty environment.
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ProcessSpec {
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            user: String::new(),
            tty: false,
        }
    }
}

/// The root filesystem of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsSpec {
    /// A directory used as it is: the process's changes are made in it.
    Dir(PathBuf),
    /// An overlay the sandbox mounts for the run and unmounts afterwards: the process's changes
    /// land in `upper`, and deleted lower files become whiteouts (0/0 character devices).
    Overlay {
        /// Read-only lower directories, top first. May be empty (an empty root).
        lower: Vec<PathBuf>,
        /// The directory that receives the changes.
        upper: PathBuf,
        /// overlayfs's work directory: empty, on the same filesystem as `upper`.
        work: PathBuf,
    },
}

/// A mount beyond the standard ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A recursive bind mount of a host path.
    Bind {
        /// The host path.
        source: PathBuf,
        /// The container path.
        target: PathBuf,
        /// Read-only.
        readonly: bool,
    },
    /// A tmpfs (`nosuid`, `nodev`).
    Tmpfs {
        /// The container path.
        target: PathBuf,
        /// Its size in bytes; default: the kernel's (half the memory).
        size: Option<u64>,
        /// The mode of its root directory; default: the kernel's (1777).
        mode: Option<u32>,
    },
    /// The merged view of layer directories, or the part of it at `path`: the sandbox mounts an
    /// overlay of `lower` in the run's state directory and binds `path` inside it at `target`.
    /// The layers are never changed: a read-write mount gets an upper directory of its own,
    /// and what the process writes there is discarded with the run.
    Layers {
        /// Read-only directories with overlay-style whiteouts, top first; at least one.
        lower: Vec<PathBuf>,
        /// The path inside the merged view (symlinks resolved inside it); `/` for all of it.
        path: PathBuf,
        /// The container path.
        target: PathBuf,
        /// Read-only.
        readonly: bool,
    },
    /// A file made for the run, bound read-only: a build secret, a here-document script. Its
    /// contents are written to a tmpfs of the run's own, so they never reach a disk, and are
    /// gone when the run ends.
    File {
        /// What the file holds.
        contents: FileContents,
        /// The container path.
        target: PathBuf,
        /// The permission bits.
        mode: u32,
        /// The owner's user id.
        uid: u32,
        /// The owner's group id.
        gid: u32,
    },
}

impl Mount {
    /// The container path.
    pub fn target(&self) -> &Path {
        match self {
            Mount::Bind { target, .. }
            | Mount::Tmpfs { target, .. }
            | Mount::Layers { target, .. }
            | Mount::File { target, .. } => target,
        }
    }
}

/// The contents of a [`Mount::File`]. They may be secret, so `Debug` shows only their length.
#[derive(Clone, PartialEq, Eq)]
pub struct FileContents(Arc<[u8]>);

impl FileContents {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for FileContents {
    fn from(bytes: Vec<u8>) -> Self {
        FileContents(bytes.into())
    }
}

impl From<&[u8]> for FileContents {
    fn from(bytes: &[u8]) -> Self {
        FileContents(bytes.into())
    }
}

impl std::fmt::Debug for FileContents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileContents({} bytes)", self.0.len())
    }
}

/// What happens after a run to the mount stubs: the empty files and directories the runtime
/// creates in the root filesystem for mount destinations that are missing.
///
/// The stubs of `/proc`, `/dev` and `/sys` always stay, as they do in the images `docker build`
/// makes (BuildKit never removes them). The others are the stubs of the generated
/// `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` and of [`RunSpec::mounts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MountStubs {
    /// The other stubs are removed when they are still empty, with the missing parent
    /// directories that were created for them: the root filesystem keeps nothing of a mount.
    /// This is what BuildKit does since v0.11.
    #[default]
    Remove,
    /// Only the empty file stubs are removed; directory stubs, and the parents created for any
    /// stub, stay. This is what docker 20.10's BuildKit (v0.8) does, whose cleaner removed only
    /// stubs of size 0, and so never a directory.
    KeepDirectories,
}

/// The network a process sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Network {
    /// The host's network namespace, as `docker build` gives a step by default; `/etc/resolv.conf`
    /// is the host's.
    #[default]
    Host,
    /// A network namespace of its own with only the loopback interface, up.
    None,
    /// An existing network namespace, named by a file that holds it: `/run/netns/<name>` as
    /// `ip netns add` makes it, or `/proc/<pid>/ns/net`. The containers of one task join the
    /// same one (ECS's awsvpc and bridge modes) and reach each other on loopback. The sandbox
    /// sets nothing up in it: its interfaces (`lo` included, which `ip netns add` leaves down),
    /// addresses and routes are its maker's. `/etc/hosts` maps the hostname to loopback, as for
    /// the other modes; `/etc/resolv.conf` is the host's without its loopback nameservers
    /// (unreachable from another namespace), or Docker's default nameservers when none remain;
    /// the host's file as it is when the namespace is the caller's own.
    Join(PathBuf),
}

/// Which output stream bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error (which also carries the runtime's own error messages).
    Stderr,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    code: i32,
    oom_killed: bool,
}

impl ExitStatus {
    /// A status with exit code `code`, not OOM-killed.
    pub(crate) const fn from_code(code: i32) -> ExitStatus {
        ExitStatus {
            code,
            oom_killed: false,
        }
    }

    /// The exit code; a process killed by signal `n` gives `128 + n`, as a shell reports it.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// Whether the code is 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Whether the kernel's OOM killer killed a process of the container during the run, as
    /// Docker's `State.OOMKilled` says (usually the init itself, which then exits with 137).
    /// It is the `oom_kill` counter of the container's own memory cgroup (cgroup v1
    /// `memory.oom_control`, v2 `memory.events`), read after the process has exited and before
    /// the container is deleted: whichever limit was reached (the container's, its cgroup
    /// parent's, the host's), the kill is counted in the cgroup of the process killed. False
    /// when the counter cannot be read (kernels before 4.13 have none on v1).
    pub fn oom_killed(&self) -> bool {
        self.oom_killed
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code: {}", self.code)?;
        if self.oom_killed {
            write!(f, ", OOM-killed")?;
        }
        Ok(())
    }
}

/// A finished run with its collected output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything written to standard output.
    pub stdout: Vec<u8>,
    /// Everything written to standard error.
    pub stderr: Vec<u8>,
}

/// Cancels a run from another thread: the container is killed, cleaned up, and
/// [`Sandbox::run`] returns [`Error::Cancelled`].
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Cancels every run that holds a clone of this token.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A hostname the kernel takes: 1 to 64 bytes, letters, digits, `-` and `.`.
fn validate_hostname(hostname: &str) -> Result<(), Error> {
    let valid = !hostname.is_empty()
        && hostname.len() <= 64
        && hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidSpec(format!("invalid hostname {hostname:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(validate_hostname("buildkitsandbox").is_ok());
        assert!(validate_hostname("a-b.c").is_ok());
        assert!(validate_hostname("").is_err());
        assert!(validate_hostname("has space").is_err());
        assert!(validate_hostname(&"x".repeat(65)).is_err());
    }

    #[test]
    fn process_spec_defaults() {
        let p = ProcessSpec::new(["true"]);
        assert_eq!(p.args, ["true"]);
        assert_eq!(p.cwd, Path::new("/"));
        assert!(p.user.is_empty() && p.env.is_empty() && !p.tty);
    }

    #[test]
    fn cancel_token_is_shared() {
        let token = CancelToken::new();
        let clone = token.clone();
        assert!(!clone.is_cancelled());
        token.cancel();
        assert!(clone.is_cancelled());
    }
}
