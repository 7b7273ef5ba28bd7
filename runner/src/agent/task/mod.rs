//! The task engine: runs ECS tasks on this machine, through ECS's lifecycle, and keeps their
//! state for the agent to report.
//!
//! ```no_run
//! use berth_runner::agent::image::Images;
//! use berth_runner::agent::protocol::TaskAssignment;
//! use berth_runner::agent::task::TaskEngine;
//! use berth_runner::ecs::status::{LaunchType, StopCode};
//! # fn definition() -> berth_runner::ecs::taskdef::TaskDefinition { unimplemented!() }
//!
//! let engine = TaskEngine::builder("/var/lib/berth/agent")
//!     .images(Images::open("/var/lib/berth".as_ref())?)
//!     .network(berth_runner::net::Network::builder().build()?)
//!     .build()?;
//! let task = engine.start(TaskAssignment::new(
//!     "arn:aws:ecs:local:000000000000:task/default/0f3c9a7e",
//!     "arn:aws:ecs:local:000000000000:cluster/default",
//!     definition(),
//!     LaunchType::Fargate,
//! ))?;
//! task.wait_until(std::time::Duration::from_secs(60), "reach RUNNING", |t| {
//!     t.last_status >= berth_runner::ecs::status::TaskStatus::Running
//! })?;
//! task.stop(StopCode::UserInitiated, "Task stopped by user");
//! let stopped = task.wait_stopped(std::time::Duration::from_secs(60))?;
//! println!("{:?}", stopped.stopped_reason);
//! # Ok::<(), berth_runner::agent::Error>(())
//! ```
//!
//! # Lifecycle
//! Each task has a supervisor thread that moves it through ECS's states, as the ECS agent's
//! task engine does, stamping the times ECS stamps ([`crate::ecs::task::Task::move_to`]):
//! - **PROVISIONING**: the task's directory (`<root>/tasks/<id>/`), its network (below), its
//!   cgroup with the task size's limits, its role credentials;
//! - **PENDING** (`pullStartedAt` .. `pullStoppedAt`): each image found in the local store or
//!   pulled, its layers extracted once into the snapshot store; each container's root
//!   filesystem is an overlay of those snapshots and an upper directory of its own under
//!   `<root>/tasks/<id>/<container>/`; then the containers start in `dependsOn` order;
//! - **ACTIVATING**, then **RUNNING** (`startedAt`) once every container has started (or has
//!   already finished, for a dependency of another);
//! - **DEACTIVATING**, **STOPPING** (`stoppingAt`) when the task is to stop: an essential
//!   container exited (`EssentialContainerExited`, "Essential container in task exited"), the
//!   control plane asked ([`TaskEngine::stop`]), or a container could not start
//!   (`TaskFailedToStart`). Each running container gets its image's STOPSIGNAL (SIGTERM by
//!   default), then SIGKILL after its `stopTimeout` (default [`DEFAULT_STOP_TIMEOUT`], or
//!   `ECS_CONTAINER_STOP_TIMEOUT`); containers stop in the reverse of their `dependsOn`
//!   order, as ECS stops them: a container is signalled once those that depend on it have
//!   exited;
//! - **DEPROVISIONING** (`executionStoppedAt`) once every container has exited: the network,
//!   the cgroup and the credentials are released;
//! - **STOPPED** (`stoppedAt`).
//!
//! A task that fails before its containers run leaves from where it is (PROVISIONING or
//! PENDING) to DEPROVISIONING and STOPPED, with stop code `TaskFailedToStart` and ECS's reason:
//! `CannotPullContainerError: ...` for an image, `ResourceInitializationError: ...` for the
//! network, cgroup or secrets, `CannotStartContainerError: ...` for a container the runtime
//! refused. A non-essential container that exits or cannot start does not stop the task.
//!
//! # Dependencies and health
//! A container waits for its `dependsOn` conditions (and its `links`, as START): START (the
//! other has started), COMPLETE (it has exited), SUCCESS (it has exited 0), HEALTHY (its
//! health check has passed). A condition that can no longer be met (a SUCCESS dependency
//! exited 1, a dependency that never started) or is not met within the container's
//! `startTimeout` (default [`DEFAULT_START_TIMEOUT`]) leaves the container STOPPED with the
//! reason; an essential one stops the task.
//!
//! Health checks run inside the container (the runtime's `exec`; `CMD-SHELL` through
//! `/bin/sh -c`) as Docker runs them for ECS: the first `interval` seconds after the start, then
//! every `interval`; a check that exits non-zero or takes longer than `timeout` fails; after
//! `retries` failures in a row the container is UNHEALTHY, and one success makes it HEALTHY
//! again; failures within `startPeriod` do not count until the first success. The task is
//! UNHEALTHY when an essential container with a health check is, HEALTHY when all of them
//! are, UNKNOWN otherwise. An unhealthy container is reported, not stopped: replacing it is
//! the service scheduler's business.
//!
//! # Networks
//! The network mode is the definition's `networkMode`, and awsvpc for every FARGATE task. All
//! containers of a task share its network namespace:
//! - **awsvpc**: [`crate::net::Network::attach`] gives the task its own namespace and address on
//!   the bridge, its "ENI", reported as an `ElasticNetworkInterface` attachment
//!   (`privateIPv4Address`, `macAddress`, `subnetId`, `networkInterfaceId`) and on each
//!   container's `networkInterfaces`; the hostname is the address's private DNS name;
//! - **bridge**: the same namespace, plus each container's `portMappings` published on the host
//!   (a fixed `hostPort`, or a dynamic one from ECS's ephemeral range), reported as the
//!   container's `networkBindings`;
//! - **host**: the host's namespace; `portMappings` are reported as bindings of the same port;
//! - **none**: a namespace with loopback only ([`crate::net::Network::isolate`]).
//!
//! # Containers
//! Each container runs through [`crate::sandbox::Sandbox`] on a thread of its own, named by a
//! random 64-hex-digit id (its `runtimeId`), with:
//! - ENTRYPOINT and CMD as Docker merges them: `entryPoint` replaces the image's ENTRYPOINT and
//!   drops its CMD; `command` replaces the CMD;
//! - the image's ENV, then `environment`, then `secrets`, then the agent's own variables
//!   (`ECS_CONTAINER_METADATA_URI_V4`, `AWS_CONTAINER_CREDENTIALS_FULL_URI` and
//!   `AWS_CONTAINER_AUTHORIZATION_TOKEN` for a task role, `AWS_EXECUTION_ENV`); a secret's
//!   `valueFrom` must be a `file:///absolute/path` on the agent's host, whose content (less one
//!   trailing newline) is the value; any other `valueFrom` (Secrets Manager or SSM ARNs) fails
//!   the task with `ResourceInitializationError`, since berth reaches no secret store;
//! - `workingDirectory` and `user` over the image's WORKDIR and USER; `ulimits`; `hostname`;
//!   `readonlyRootFilesystem`; `dnsServers`, `dnsSearchDomains`, `extraHosts` and `links` in
//!   its `/etc/resolv.conf` and `/etc/hosts`; `linuxParameters.tmpfs` and `sharedMemorySize`;
//!   `disableNetworking` (loopback only);
//! - `mountPoints` of the task's `volumes`: `host.sourcePath` is bound (and created when
//!   missing, as Docker does); a volume without a source path, or a docker volume of `task`
//!   scope, is a directory of the task's (`<root>/tasks/<id>/.volumes/<name>`) that its
//!   containers share and that goes with the task; a `shared` docker volume is
//!   `<root>/volumes/<name>`, kept; `volumesFrom` mounts another container's mount points;
//! - cgroup limits: `cpu` as CPU shares, `memory` as the hard limit, `memoryReservation` as the
//!   soft one, under the task's cgroup, which has the task size's CPU quota and memory limit
//!   ([`crate::ecs::fargate::CgroupLimits`]) when the task has one (every FARGATE task);
//! - its stdout and stderr, interleaved as written, in `<root>/tasks/<id>/<container>.log`.
//!
//! Not supported, and refused with the reason rather than run differently: `pidMode`, and
//! `ipcMode` other than `none` (each container has its own PID and IPC namespaces),
//! `linuxParameters` capabilities, `initProcessEnabled` and tmpfs mount options beyond
//! `nosuid`/`nodev`, `pseudoTerminal` and volume drivers other than `local`. Accepted and not
//! applied: `logConfiguration` (the agent keeps the output, whatever the driver),
//! `linuxParameters.maxSwap` and `swappiness` (swap is not limited), `interactive`.
//!
//! # After the task
//! A STOPPED task keeps its directory (its logs) and is reported until
//! [`TaskEngine::clean_up`] removes it, [`DEFAULT_CLEANUP_WAIT`] after it stopped. A task's
//! record (`task.json`) is rewritten at every change, so that an agent that restarts finds
//! the tasks it had ([`TaskEngine::restore`]): their containers died with the old agent (the
//! sandbox sweeps what is left of them), so they are reported STOPPED, and cleaned up later
//! like any other.

mod container;
mod health;
mod network;
mod record;
mod supervisor;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;

use super::credentials::{Credentials, TaskCredentials, random_hex};
use super::error::Error;
use super::image::Images;
use super::logs::LogHandle;
use super::protocol::{RoleCredentials, RoleType};
use super::protocol::{TaskAssignment, TaskReport};
use crate::ecs::Timestamp;
use crate::ecs::status::{HealthStatus, StopCode, TaskStatus};
use crate::ecs::task::Task;
use crate::ecs::taskdef::NetworkMode;
use crate::net::{Network, Publisher};
use crate::sandbox::{ContainerControl, Sandbox};

pub use network::NetworkInfo;

/// How long a container gets between its stop signal and SIGKILL when its definition sets no
/// `stopTimeout` and `ECS_CONTAINER_STOP_TIMEOUT` is not set: ECS's default.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The environment variable that changes [`DEFAULT_STOP_TIMEOUT`], as the ECS agent reads it
/// (`30s`, `2m`, or a number of seconds).
pub const STOP_TIMEOUT_ENV: &str = "ECS_CONTAINER_STOP_TIMEOUT";
/// How long a container waits for its dependencies when its definition sets no
/// `startTimeout`: the ECS agent's default on Linux.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(3 * 60);
/// How long a STOPPED task's directory (its logs) is kept.
pub const DEFAULT_CLEANUP_WAIT: Duration = Duration::from_secs(60 * 60);
/// The cgroup (relative to the agent's own) that holds the tasks' cgroups.
pub const DEFAULT_CGROUP_ROOT: &str = "berth";
/// The directory of tasks under the engine's root.
pub const TASKS_DIR: &str = "tasks";
/// The directory of `shared` docker volumes under the engine's root.
pub const VOLUMES_DIR: &str = "volumes";

/// One move of a task's `lastStatus`, as the engine made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The status entered.
    pub status: TaskStatus,
    /// When.
    pub at: Timestamp,
}

/// Builds a [`TaskEngine`].
#[derive(Debug)]
pub struct TaskEngineBuilder {
    root: PathBuf,
    sandbox: Option<Sandbox>,
    network: Option<Network>,
    images: Option<Images>,
    publisher: Option<Publisher>,
    runtime: Option<Handle>,
    container_instance_arn: Option<String>,
    availability_zone: String,
    stop_timeout: Option<Duration>,
    start_timeout: Duration,
    cleanup_wait: Duration,
    metadata_host: Option<SocketAddr>,
    metadata_bridge: Option<SocketAddr>,
    relative_credentials: bool,
    cgroup_root: String,
}

impl TaskEngineBuilder {
    /// The sandbox containers run in. Default: runc, with its state in `<root>/sandbox`.
    pub fn sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// The network tasks in `awsvpc`, `bridge` and `none` modes get their namespaces from.
    /// Without one, only `host` tasks can run; others fail with
    /// `ResourceInitializationError`.
    pub fn network(mut self, network: Network) -> Self {
        self.network = Some(network);
        self
    }

    /// The image and snapshot stores. Default: the berth store ([`super::default_store_root`]).
    pub fn images(mut self, images: Images) -> Self {
        self.images = Some(images);
        self
    }

    /// Publishes bridge-mode ports. Default: every host address, ECS's ephemeral range, on the
    /// engine's runtime.
    pub fn publisher(mut self, publisher: Publisher) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// The tokio runtime image pulls and port proxies run on. Default: one of the engine's own
    /// (one worker thread).
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// The container instance the tasks run on (EC2), for their description.
    pub fn container_instance_arn(mut self, arn: Option<String>) -> Self {
        self.container_instance_arn = arn;
        self
    }

    /// The availability zone tasks report (`local-1a` by default).
    pub fn availability_zone(mut self, zone: impl Into<String>) -> Self {
        self.availability_zone = zone.into();
        self
    }

    /// The stop timeout of containers whose definition sets none. Default:
    /// `ECS_CONTAINER_STOP_TIMEOUT`, else [`DEFAULT_STOP_TIMEOUT`].
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = Some(timeout);
        self
    }

    /// The dependency timeout of containers whose definition sets no `startTimeout`. Default:
    /// [`DEFAULT_START_TIMEOUT`].
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long a STOPPED task is kept. Default: [`DEFAULT_CLEANUP_WAIT`].
    pub fn cleanup_wait(mut self, wait: Duration) -> Self {
        self.cleanup_wait = wait;
        self
    }

    /// Where containers reach the agent's server (task metadata, credentials): `host` for
    /// `host`-mode tasks (a loopback or host address), `bridge` for tasks on the bridge (the
    /// bridge's gateway address). Without them containers get no metadata variables.
    pub fn metadata_endpoints(
        mut self,
        host: Option<SocketAddr>,
        bridge: Option<SocketAddr>,
    ) -> Self {
        self.metadata_host = host;
        self.metadata_bridge = bridge;
        self
    }

    /// Whether the agent's server answers at [`crate::agent::LINK_LOCAL_ENDPOINT`], so that
    /// containers also get `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, which the AWS SDKs read
    /// first. Off by default.
    pub fn relative_credentials(mut self, on: bool) -> Self {
        self.relative_credentials = on;
        self
    }

    /// The cgroup, relative to this process's, under which each task gets
    /// `<cgroup root>/<task id>`. Default: [`DEFAULT_CGROUP_ROOT`].
    pub fn cgroup_root(mut self, root: impl Into<String>) -> Self {
        self.cgroup_root = root.into();
        self
    }

    /// Creates the root's directories, and the sandbox, images and runtime not given.
    pub fn build(self) -> Result<TaskEngine, Error> {
        let root = self.root;
        for dir in [root.join(TASKS_DIR), root.join(VOLUMES_DIR)] {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        }
        let root = std::fs::canonicalize(&root).map_err(|e| Error::io("resolve", &root, e))?;
        let sandbox = match self.sandbox {
            Some(sandbox) => sandbox,
            None => Sandbox::builder().root(root.join("sandbox")).build()?,
        };
        let images = match self.images {
            Some(images) => images,
            None => Images::open(&super::default_store_root()?)?,
        };
        let (runtime, owned) = match self.runtime {
            Some(handle) => (handle, None),
            None => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("berth-engine")
                    .enable_all()
                    .build()
                    .map_err(Error::Runtime)?;
                (runtime.handle().clone(), Some(runtime))
            }
        };
        let publisher = self.publisher.unwrap_or_default().runtime(runtime.clone());
        let stop_timeout = match self.stop_timeout {
            Some(timeout) => timeout,
            None => stop_timeout_from_env()?,
        };
        crate::net::check_name("cgroup root", &self.cgroup_root, 64).map_err(|e| {
            Error::InvalidOption(format!("cgroup root {:?}: {e}", self.cgroup_root))
        })?;
        let (changes, _) = watch::channel(0);
        Ok(TaskEngine {
            inner: Arc::new(Engine {
                config: Config {
                    root,
                    container_instance_arn: self.container_instance_arn,
                    availability_zone: self.availability_zone,
                    stop_timeout,
                    start_timeout: self.start_timeout,
                    cleanup_wait: self.cleanup_wait,
                    metadata_host: self.metadata_host,
                    metadata_bridge: self.metadata_bridge,
                    relative_credentials: self.relative_credentials,
                    cgroup_root: self.cgroup_root,
                },
                sandbox,
                network: self.network,
                images,
                publisher,
                runtime,
                _owned_runtime: OwnedRuntime(owned),
                tasks: Mutex::new(BTreeMap::new()),
                changes: Arc::new(changes),
            }),
        })
    }
}

/// `ECS_CONTAINER_STOP_TIMEOUT` as the ECS agent reads it: a Go duration (`30s`, `1m30s`,
/// `500ms`) or a number of seconds; [`DEFAULT_STOP_TIMEOUT`] when unset.
fn stop_timeout_from_env() -> Result<Duration, Error> {
    match std::env::var(STOP_TIMEOUT_ENV) {
        Ok(value) if !value.trim().is_empty() => parse_duration(value.trim()).ok_or_else(|| {
            Error::InvalidOption(format!(
                "{STOP_TIMEOUT_ENV}={value:?} is not a duration (30s, 2m, 1m30s, or seconds)"
            ))
        }),
        _ => Ok(DEFAULT_STOP_TIMEOUT),
    }
}

/// A Go-style duration (`1h2m3s`, `500ms`, `1.5s`) or a plain number of seconds.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// The engine's settings.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) root: PathBuf,
    pub(crate) container_instance_arn: Option<String>,
    pub(crate) availability_zone: String,
    pub(crate) stop_timeout: Duration,
    pub(crate) start_timeout: Duration,
    pub(crate) cleanup_wait: Duration,
    pub(crate) metadata_host: Option<SocketAddr>,
    pub(crate) metadata_bridge: Option<SocketAddr>,
    pub(crate) relative_credentials: bool,
    pub(crate) cgroup_root: String,
}

/// A runtime the engine made itself; shut down without waiting when the engine goes, so that
/// dropping the engine inside another runtime does not panic.
#[derive(Debug)]
struct OwnedRuntime(Option<Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What the engine's threads share.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) config: Config,
    pub(crate) sandbox: Sandbox,
    pub(crate) network: Option<Network>,
    pub(crate) images: Images,
    pub(crate) publisher: Publisher,
    pub(crate) runtime: Handle,
    _owned_runtime: OwnedRuntime,
    tasks: Mutex<BTreeMap<String, Arc<TaskShared>>>,
    changes: Arc<watch::Sender<u64>>,
}

/// Runs ECS tasks; see the module docs. Cheap to clone: clones share the engine.
#[derive(Debug, Clone)]
pub struct TaskEngine {
    inner: Arc<Engine>,
}

impl TaskEngine {
    /// A builder for an engine whose tasks live under `root/tasks`.
    pub fn builder(root: impl Into<PathBuf>) -> TaskEngineBuilder {
        TaskEngineBuilder {
            root: root.into(),
            sandbox: None,
            network: None,
            images: None,
            publisher: None,
            runtime: None,
            container_instance_arn: None,
            availability_zone: super::DEFAULT_AVAILABILITY_ZONE.to_owned(),
            stop_timeout: None,
            start_timeout: DEFAULT_START_TIMEOUT,
            cleanup_wait: DEFAULT_CLEANUP_WAIT,
            metadata_host: None,
            metadata_bridge: None,
            relative_credentials: false,
            cgroup_root: DEFAULT_CGROUP_ROOT.to_owned(),
        }
    }

    /// The engine's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.config.root
    }

    /// The sandbox containers run in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.inner.sandbox
    }

    /// The task network, if the engine has one.
    pub fn network(&self) -> Option<&Network> {
        self.inner.network.as_ref()
    }

    /// Starts the task `assignment` describes, and returns at once: the task moves through its
    /// lifecycle on a thread of its own. Starting a task the engine already has (the same
    /// ARN) returns that task and starts nothing.
    ///
    /// # Errors
    /// [`Error::InvalidAssignment`] for a task id that cannot name a directory, namespace and
    /// cgroup, or a definition with no containers; [`Error::Io`] when the task's directory
    /// cannot be made.
    pub fn start(&self, assignment: TaskAssignment) -> Result<TaskHandle, Error> {
        let engine = &self.inner;
        let mut tasks = engine.lock_tasks();
        if let Some(task) = tasks.get(&assignment.task_arn) {
            return Ok(TaskHandle {
                shared: task.clone(),
            });
        }
        let invalid = |reason: String| Error::InvalidAssignment {
            task_arn: assignment.task_arn.clone(),
            reason,
        };
        let id = assignment.task_id().to_owned();
        crate::net::check_name("task id", &id, crate::net::MAX_ID_LEN)
            .map_err(|e| invalid(e.to_string()))?;
        if tasks.values().any(|t| t.id == id) {
            return Err(invalid(format!(
                "another task with id {id} runs on this agent"
            )));
        }
        if assignment.task_definition.container_definitions.is_empty() {
            return Err(invalid("the task definition has no containers".to_owned()));
        }
        let dir = engine.config.root.join(TASKS_DIR).join(&id);
        if dir.exists() {
            // A task of the same id that was cleaned from memory but not from disk.
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io("remove", &dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let shared = Arc::new(TaskShared::new(engine, assignment, dir)?);
        record::save_assignment(&shared.dir, &shared.assignment)?;
        shared.save(&shared.lock());
        tasks.insert(shared.arn.clone(), shared.clone());
        drop(tasks);
        supervisor::spawn(engine.clone(), shared.clone())
            .map_err(|e| Error::io("start a supervisor thread for", &shared.dir, e))?;
        engine.notify();
        Ok(TaskHandle { shared })
    }

    /// Asks the task `task_arn` (an ARN or an id) to stop, with ECS's stop code and reason (the
    /// first ones given are kept). Returns whether the engine has the task.
    pub fn stop(&self, task_arn: &str, code: StopCode, reason: &str) -> bool {
        match self.find(task_arn) {
            Some(task) => {
                task.request_stop(code, reason);
                true
            }
            None => false,
        }
    }

    /// Asks every task to stop.
    pub fn stop_all(&self, code: StopCode, reason: &str) {
        for task in self.inner.lock_tasks().values() {
            task.request_stop(code, reason);
        }
    }

    /// The task `task` (an ARN or an id), if the engine has it.
    pub fn task(&self, task: &str) -> Option<TaskHandle> {
        self.find(task).map(|shared| TaskHandle { shared })
    }

    /// Every task the engine has, by ARN.
    pub fn tasks(&self) -> Vec<TaskHandle> {
        self.inner
            .lock_tasks()
            .values()
            .map(|shared| TaskHandle {
                shared: shared.clone(),
            })
            .collect()
    }

    /// The report of every task, for a poll.
    pub fn reports(&self) -> Vec<TaskReport> {
        self.tasks().iter().map(TaskHandle::report).collect()
    }

    /// A receiver that sees a new value whenever a task changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Removes the STOPPED tasks whose cleanup time has come (their directories, logs
    /// included), and returns their ARNs.
    pub fn clean_up(&self) -> Vec<String> {
        let now = Timestamp::now();
        let due: Vec<Arc<TaskShared>> = self
            .inner
            .lock_tasks()
            .values()
            .filter(|t| t.lock().clean_after.is_some_and(|at| at <= now))
            .cloned()
            .collect();
        let mut removed = Vec::new();
        for task in due {
            if let Err(err) = std::fs::remove_dir_all(&task.dir) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(task = %task.arn, dir = %task.dir.display(), %err,
                        "cannot remove a stopped task's directory");
                    continue;
                }
            }
            self.inner.lock_tasks().remove(&task.arn);
            tracing::info!(task = %task.arn, "cleaned up");
            removed.push(task.arn.clone());
        }
        if !removed.is_empty() {
            self.inner.notify();
        }
        removed
    }

    /// Waits until every task is STOPPED, or `timeout` passes; returns whether they all are.
    pub fn wait_all_stopped(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.tasks().iter().all(|task| {
            let left = deadline.saturating_duration_since(Instant::now());
            task.wait_stopped(left).is_ok()
        })
    }

    /// Loads the tasks a previous run of the agent left under the root (see the module docs)
    /// and returns their ARNs. Tasks that were not STOPPED are stopped now: what is left of
    /// their network and cgroup is released, and they are reported STOPPED.
    pub fn restore(&self) -> Result<Vec<String>, Error> {
        let restored = record::restore(&self.inner)?;
        let arns: Vec<String> = restored.iter().map(|t| t.arn.clone()).collect();
        let mut tasks = self.inner.lock_tasks();
        for task in restored {
            tasks.entry(task.arn.clone()).or_insert(task);
        }
        drop(tasks);
        self.inner.notify();
        Ok(arns)
    }

    fn find(&self, task: &str) -> Option<Arc<TaskShared>> {
        self.inner.find(task)
    }

    /// The task and container index that a metadata token names.
    pub(crate) fn by_token(&self, token: &str) -> Option<(TaskHandle, usize)> {
        let tasks = self.inner.lock_tasks();
        for shared in tasks.values() {
            if let Some(index) = shared.tokens.iter().position(|t| t == token) {
                return Some((
                    TaskHandle {
                        shared: shared.clone(),
                    },
                    index,
                ));
            }
        }
        None
    }

    /// The credentials served under `id`, for a request that carried `authorization` (if
    /// any); `None` when no live task has them or the authorization does not match.
    pub(crate) fn credentials(&self, id: &str, authorization: Option<&str>) -> Option<Credentials> {
        let tasks = self.inner.lock_tasks();
        for shared in tasks.values() {
            let state = shared.lock();
            if let Some(credentials) = state.credentials.as_ref() {
                if constant_time_eq(credentials.id.as_bytes(), id.as_bytes()) {
                    let authorized = authorization.is_none_or(|given| {
                        constant_time_eq(credentials.authorization.as_bytes(), given.as_bytes())
                    });
                    return authorized.then(|| credentials.current());
                }
            }
        }
        None
    }

    /// The tasks (ARNs) whose task role credentials are due for renewal.
    pub fn credentials_due(&self) -> Vec<String> {
        let now = Timestamp::now();
        self.inner
            .lock_tasks()
            .values()
            .filter(|shared| {
                let state = shared.lock();
                state.task.last_status != TaskStatus::Stopped
                    && state.credentials.as_ref().is_some_and(|c| c.due(now))
            })
            .map(|shared| shared.arn.clone())
            .collect()
    }

    /// Takes renewed credentials from the control plane. Credentials for a task the engine
    /// does not have, or that has no credentials to renew, are dropped.
    pub fn renew_credentials(&self, issued: RoleCredentials) {
        let Some(task) = self.find(&issued.task_arn) else {
            tracing::debug!(task = %issued.task_arn, "credentials for a task this agent does not have");
            return;
        };
        let mut state = task.lock();
        match (issued.role_type, state.credentials.as_mut()) {
            (RoleType::TaskApplication, Some(credentials)) => {
                credentials.renew(issued, Timestamp::now());
                tracing::debug!(task = %task.arn, "task role credentials renewed");
            }
            (RoleType::TaskExecution, _) => state.execution_credentials = Some(issued),
            (RoleType::TaskApplication, None) => {
                tracing::debug!(task = %task.arn, "credentials for a task that serves none");
            }
        }
    }
}

/// Compares two secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Engine {
    fn lock_tasks(&self) -> MutexGuard<'_, BTreeMap<String, Arc<TaskShared>>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn find(&self, task: &str) -> Option<Arc<TaskShared>> {
        let tasks = self.lock_tasks();
        tasks
            .get(task)
            .or_else(|| tasks.values().find(|t| t.id == task))
            .cloned()
    }

    pub(crate) fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The cgroup of task `id`.
    pub(crate) fn cgroup_of(&self, id: &str) -> String {
        format!("{}/{id}", self.config.cgroup_root)
    }
}

/// A task the engine runs: its state, for reports, waits and the agent's server.
#[derive(Debug, Clone)]
pub struct TaskHandle {
    shared: Arc<TaskShared>,
}

impl TaskHandle {
    /// The task's ARN.
    pub fn arn(&self) -> &str {
        &self.shared.arn
    }

    /// The task's id: the last part of its ARN.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The task's directory: `<root>/tasks/<id>`.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// What the task was started with.
    pub fn assignment(&self) -> &TaskAssignment {
        &self.shared.assignment
    }

    /// The task as `DescribeTasks` shows it, now.
    pub fn describe(&self) -> Task {
        self.shared.lock().task.clone()
    }

    /// The task's report, for a poll.
    pub fn report(&self) -> TaskReport {
        TaskReport::of(&self.shared.lock().task)
    }

    /// Every move of `lastStatus` so far, in order.
    pub fn transitions(&self) -> Vec<Transition> {
        self.shared.lock().transitions.clone()
    }

    /// The task's network, once it is provisioned.
    pub fn network_info(&self) -> Option<NetworkInfo> {
        self.shared.lock().network.clone()
    }

    /// Asks the task to stop; see [`TaskEngine::stop`].
    pub fn stop(&self, code: StopCode, reason: &str) {
        self.shared.request_stop(code, reason);
    }

    /// The log of container `name`: its stdout and stderr as written.
    pub fn log_path(&self, name: &str) -> Option<PathBuf> {
        let index = self.container_index(name)?;
        Some(self.shared.logs[index].path().to_owned())
    }

    pub(crate) fn log(&self, name: &str) -> Option<LogHandle> {
        let index = self.container_index(name)?;
        Some(self.shared.logs[index].clone())
    }

    /// The pid (in this process's pid namespace) of container `name`'s init process, while
    /// it runs.
    pub fn container_pid(&self, name: &str) -> Option<u32> {
        let index = self.container_index(name)?;
        let control = self.shared.lock().containers[index].control.clone();
        control.pid().ok()
    }

    fn container_index(&self, name: &str) -> Option<usize> {
        self.shared
            .assignment
            .task_definition
            .container_definitions
            .iter()
            .position(|c| c.name == name)
    }

    /// Waits until `done` holds for the task, and returns the task then. `what` names the wait
    /// in the error.
    ///
    /// # Errors
    /// [`Error::WaitTimedOut`], with a summary of the task, after `timeout`.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Task) -> bool,
    ) -> Result<Task, Error> {
        let guard = self.shared.lock();
        let (guard, _) = self
            .shared
            .changed
            .wait_timeout_while(guard, timeout, |state| !done(&state.task))
            .unwrap_or_else(PoisonError::into_inner);
        if done(&guard.task) {
            Ok(guard.task.clone())
        } else {
            Err(Error::WaitTimedOut {
                task_arn: self.shared.arn.clone(),
                what: what.to_owned(),
                timeout,
                state: summary(&guard.task),
            })
        }
    }

    /// Waits until the task is STOPPED.
    pub fn wait_stopped(&self, timeout: Duration) -> Result<Task, Error> {
        self.wait_until(timeout, "stop", |task| task.last_status.is_stopped())
    }

    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&TaskState) -> T) -> T {
        f(&self.shared.lock())
    }
}

/// `RUNNING (desired RUNNING); app RUNNING, db STOPPED exit 1 (reason)`.
fn summary(task: &Task) -> String {
    let mut out = format!(
        "{} (desired {}, health {})",
        task.last_status, task.desired_status, task.health_status
    );
    if let Some(reason) = &task.stopped_reason {
        let _ = write!(out, ", stopped: {reason}");
    }
    for (i, c) in task.containers.iter().enumerate() {
        out.push_str(if i == 0 { "; " } else { ", " });
        let _ = write!(out, "{} {} {}", c.name, c.last_status, c.health_status);
        if let Some(code) = c.exit_code {
            let _ = write!(out, " exit {code}");
        }
        if let Some(reason) = &c.reason {
            let _ = write!(out, " ({reason})");
        }
    }
    out
}

/// A task's state and the handles its threads share.
#[derive(Debug)]
pub(crate) struct TaskShared {
    pub(crate) arn: String,
    pub(crate) id: String,
    pub(crate) dir: PathBuf,
    pub(crate) assignment: TaskAssignment,
    /// Per container: its metadata token.
    pub(crate) tokens: Vec<String>,
    /// Per container: its log.
    pub(crate) logs: Vec<LogHandle>,
    state: Mutex<TaskState>,
    changed: Condvar,
    changes: Arc<watch::Sender<u64>>,
}

/// What changes while a task runs.
#[derive(Debug)]
pub(crate) struct TaskState {
    /// The ECS view: statuses, times, stop code, containers.
    pub(crate) task: Task,
    /// Per container, what the engine knows beyond the ECS view.
    pub(crate) containers: Vec<ContainerRuntime>,
    pub(crate) transitions: Vec<Transition>,
    pub(crate) network: Option<NetworkInfo>,
    /// The task role's credentials, served to its containers.
    pub(crate) credentials: Option<TaskCredentials>,
    /// The execution role's, for pulling its images.
    pub(crate) execution_credentials: Option<RoleCredentials>,
    /// When a STOPPED task is to be cleaned up.
    pub(crate) clean_after: Option<Timestamp>,
}

/// Where a container is, as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not started: waiting for its image, its dependencies or its turn.
    Waiting,
    /// Handed to the sandbox, not started yet.
    Starting,
    /// Its process runs.
    Running,
    /// Its process exited with this code.
    Exited(i32),
    /// It will never run (it could not start, or the task stopped first).
    NotStarted,
}

impl Phase {
    /// Whether the container is done, one way or the other.
    pub(crate) fn is_final(self) -> bool {
        matches!(self, Phase::Exited(_) | Phase::NotStarted)
    }
}

/// A container's health, as its checks found it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Health {
    pub(crate) status: HealthStatus,
    pub(crate) since: Option<Timestamp>,
    pub(crate) output: String,
    /// Whether a check has ever passed.
    pub(crate) ever_healthy: bool,
}

/// What the engine knows of a container beyond its ECS view.
#[derive(Debug)]
pub(crate) struct ContainerRuntime {
    pub(crate) phase: Phase,
    pub(crate) control: ContainerControl,
    pub(crate) health: Health,
    pub(crate) created_at: Option<Timestamp>,
    pub(crate) started_at: Option<Timestamp>,
    pub(crate) finished_at: Option<Timestamp>,
    /// The image's id (its config's digest).
    pub(crate) image_id: Option<String>,
    /// When it began waiting for its dependencies.
    pub(crate) waiting_since: Option<Instant>,
    /// When its stop signal was sent.
    pub(crate) signalled_at: Option<Instant>,
    /// Whether it was sent SIGKILL.
    pub(crate) killed: bool,
}

impl TaskShared {
    fn new(
        engine: &Engine,
        mut assignment: TaskAssignment,
        dir: PathBuf,
    ) -> Result<TaskShared, Error> {
        let now = Timestamp::now();
        // Credentials live in memory only: the assignment is saved with the task's record.
        let mut credentials = None;
        let mut execution_credentials = None;
        for issued in std::mem::take(&mut assignment.credentials) {
            match issued.role_type {
                RoleType::TaskApplication => {
                    credentials = Some(TaskCredentials::new(issued, now));
                }
                RoleType::TaskExecution => execution_credentials = Some(issued),
            }
        }
        let definition = &assignment.task_definition;
        let mut task = Task::new(
            assignment.task_arn.clone(),
            assignment.cluster_arn.clone(),
            definition,
            assignment.launch_type,
            assignment.group.clone(),
            now,
        );
        task.cpu = assignment.cpu_units().map(|c| c.to_string());
        task.memory = assignment.memory_mib().map(|m| m.to_string());
        task.started_by = assignment.started_by.clone();
        task.container_instance_arn = engine.config.container_instance_arn.clone();
        task.availability_zone = Some(engine.config.availability_zone.clone());
        task.connectivity = Some(crate::ecs::status::Connectivity::Connected);
        task.connectivity_at = Some(now);
        let cluster = cluster_name(&assignment.task_arn);
        let id = assignment.task_id().to_owned();
        let mut logs = Vec::new();
        let mut containers = Vec::new();
        let mut tokens = Vec::new();
        for (i, c) in definition.container_definitions.iter().enumerate() {
            let runtime_id = random_hex(64);
            let container = &mut task.containers[i];
            container.container_arn = Some(crate::ecs::arn::container(
                &cluster,
                &id,
                &format!(
                    "{}-{}-{}-{}-{}",
                    &runtime_id[..8],
                    &runtime_id[8..12],
                    &runtime_id[12..16],
                    &runtime_id[16..20],
                    &runtime_id[20..32]
                ),
            ));
            container.runtime_id = Some(runtime_id);
            let log = dir.join(format!("{}.log", c.name));
            logs.push(LogHandle::create(log.clone()).map_err(|e| Error::io("create", log, e))?);
            tokens.push(format!("{}-{}", random_hex(32), i));
            containers.push(ContainerRuntime {
                phase: Phase::Waiting,
                control: ContainerControl::new(),
                health: Health::default(),
                created_at: None,
                started_at: None,
                finished_at: None,
                image_id: None,
                waiting_since: None,
                signalled_at: None,
                killed: false,
            });
        }
        Ok(TaskShared {
            arn: assignment.task_arn.clone(),
            id,
            dir,
            tokens,
            logs,
            state: Mutex::new(TaskState {
                task,
                containers,
                transitions: vec![Transition {
                    status: TaskStatus::Provisioning,
                    at: now,
                }],
                network: None,
                credentials,
                execution_credentials,
                clean_after: None,
            }),
            changed: Condvar::new(),
            changes: engine.changes.clone(),
            assignment,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, TaskState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the task's waiters and the agent.
    pub(crate) fn notify(&self) {
        self.changed.notify_all();
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits for a change, at most `timeout`.
    pub(crate) fn wait<'a>(
        &'a self,
        guard: MutexGuard<'a, TaskState>,
        timeout: Duration,
    ) -> MutexGuard<'a, TaskState> {
        self.changed
            .wait_timeout(guard, timeout)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    fn request_stop(&self, code: StopCode, reason: &str) {
        let mut state = self.lock();
        if state.task.last_status.is_stopped() {
            return;
        }
        state.task.request_stop(code, reason);
        drop(state);
        self.notify();
    }

    /// Writes the task's record; a failure is logged (the task goes on).
    pub(crate) fn save(&self, state: &TaskState) {
        if let Err(err) = record::save_state(&self.dir, state) {
            tracing::warn!(task = %self.arn, %err, "cannot save the task's record");
        }
    }
}

/// The cluster's name in a task ARN (`task/<cluster>/<id>`), `default` when it has none.
fn cluster_name(task_arn: &str) -> String {
    task_arn
        .parse::<crate::ecs::arn::Arn>()
        .ok()
        .and_then(|arn| arn.cluster_name().map(str::to_owned))
        .unwrap_or_else(|| "default".to_owned())
}

/// The network mode a task runs with: awsvpc for every FARGATE task, else its definition's.
pub fn network_mode(assignment: &TaskAssignment) -> NetworkMode {
    match assignment.launch_type {
        crate::ecs::status::LaunchType::Fargate => NetworkMode::Awsvpc,
        crate::ecs::status::LaunchType::Ec2 => assignment.task_definition.network_mode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_the_ecs_agent_reads_them() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "s", "10x", "-1s", "1m30"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn clusters_come_from_task_arns() {
        assert_eq!(
            cluster_name("arn:aws:ecs:local:000000000000:task/prod/abc"),
            "prod"
        );
        assert_eq!(cluster_name("not-an-arn"), "default");
    }
}
