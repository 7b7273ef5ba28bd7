//! The agent: what runs tasks on a machine for the control plane, as the ECS container agent
//! does on an EC2 container instance (and, with `fargate`, for the cluster's FARGATE pool).
//!
//! ```no_run
//! use berth_runner::agent::{AgentOptions, run};
//!
//! # async fn agent() -> Result<(), berth_runner::agent::Error> {
//! let options = AgentOptions::new(
//!     "http://10.0.0.1:5400".parse().unwrap(),
//!     "/var/lib/berth/agent",
//! );
//! run(options).await
//! # }
//! ```
//!
//! # Parts
//! - [`task`]: the task engine. It runs one task through ECS's lifecycle, from PROVISIONING to
//!   STOPPED, with its network, images, containers (through [`crate::sandbox`]), dependencies,
//!   health checks, stop timeouts and logs; see its docs for the whole behaviour.
//! - [`image`]: images from the local store, pulled when missing, extracted into the snapshot
//!   store once per layer.
//! - [`protocol`]: the messages of the agent protocol (registration, polls, reports and
//!   assignments), shared with the control plane.
//! - [`server`]: the agent's HTTP server: logs, task metadata v4, task role credentials.
//! - [`metadata`]: the metadata endpoint's documents.
//!
//! # The agent process
//! [`run`], in order:
//! 1. opens its root (`agent.json`, `tasks/`, `volumes/`, the sandbox's `sandbox/`), the
//!    image store, and the cluster's bridge ([`crate::net::Network`], named by
//!    [`NetworkOptions`]);
//! 2. builds the task engine and restores the tasks a previous run left ([`task::TaskEngine::restore`]:
//!    they are reported STOPPED), then removes every namespace of its bridge that no task of
//!    its own holds ([`crate::net::Network::sweep`]);
//! 3. serves its HTTP server on [`AgentOptions::listen`] (by default every address, port
//!    chosen by the kernel; the bound address is logged). Containers on the bridge reach it at
//!    the bridge's gateway address, host-network containers on loopback; when it listens on one
//!    address only, a second listener on the gateway serves the bridged tasks;
//! 4. registers with the control plane (giving back the id saved in `agent.json`, so that it
//!    keeps its container instance), then polls it with the report of every task it has, and
//!    starts and stops what each answer says. Polls are its heartbeat: one every
//!    `heartbeatSeconds`, and one at once after each answer. When the control plane cannot be
//!    reached it tries again with a backoff of up to 5 s, and its tasks keep running; when the
//!    control plane no longer knows it (404 on a poll), it registers again under the same id;
//! 5. every minute, removes the STOPPED tasks whose cleanup time has come;
//! 6. when [`AgentOptions::shutdown`] is cancelled: stops every task (`TerminationNotice`),
//!    reports them once more, and returns.

pub mod client;
mod credentials;
mod error;
pub mod host;
pub mod image;
mod logs;
pub mod metadata;
pub mod protocol;
pub mod server;
pub mod task;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use error::Error;

use client::{Backoff, CallError, ControlPlane};
use image::Images;
use protocol::{PollRequest, PollResponse, RegisterRequest, RegisterResponse};
use task::TaskEngine;

use crate::ecs::status::StopCode;
use crate::net::{Network, Subnet};

/// `ecs.instance-type` when none is given.
pub const DEFAULT_INSTANCE_TYPE: &str = "berth.local";
/// `ecs.availability-zone` when none is given.
pub const DEFAULT_AVAILABILITY_ZONE: &str = "local-1a";
/// The file under the agent's root that keeps its id.
pub const STATE_FILE: &str = "agent.json";
/// How often stopped tasks are looked at for cleanup.
const CLEANUP_EVERY: Duration = Duration::from_secs(60);
/// The longest `stopTimeout` ECS accepts.
const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a shutting-down agent waits for its tasks beyond their stop timeouts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// The berth data root: `$BERTH_ROOT`, else `$XDG_DATA_HOME/berth`, else
/// `~/.local/share/berth`, as the `berth` commands find it. The image store lives there.
pub fn default_store_root() -> Result<PathBuf, Error> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(root) = non_empty("BERTH_ROOT") {
        return Ok(PathBuf::from(root));
    }
    if let Some(data) = non_empty("XDG_DATA_HOME") {
        return Ok(PathBuf::from(data).join("berth"));
    }
    let home = non_empty("HOME").ok_or_else(|| {
        Error::InvalidOption(
            "cannot find the berth store: none of BERTH_ROOT, XDG_DATA_HOME and HOME is set"
                .to_owned(),
        )
    })?;
    Ok(PathBuf::from(home).join(".local/share/berth"))
}

/// The task network an agent uses: the cluster's "VPC" bridge on this machine. Agents that
/// share a machine (tests, several agents in separate network namespaces) each need their own
/// bridge and namespace prefix, and subnets that do not overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOptions {
    /// The bridge: [`crate::net::DEFAULT_BRIDGE`].
    pub bridge: String,
    /// Its subnet: [`crate::net::DEFAULT_SUBNET`].
    pub subnet: Option<Subnet>,
    /// The prefix of task namespaces' names: [`crate::net::DEFAULT_NETNS_PREFIX`].
    pub netns_prefix: String,
    /// Where the network keeps its leases and records: [`crate::net::DEFAULT_STATE_DIR`].
    pub state_dir: PathBuf,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        NetworkOptions {
            bridge: crate::net::DEFAULT_BRIDGE.to_owned(),
            subnet: None,
            netns_prefix: crate::net::DEFAULT_NETNS_PREFIX.to_owned(),
            state_dir: PathBuf::from(crate::net::DEFAULT_STATE_DIR),
        }
    }
}

impl NetworkOptions {
    /// Brings the bridge up (see [`crate::net::NetworkBuilder::build`]).
    pub fn build(&self) -> Result<Network, crate::net::Error> {
        let mut builder = Network::builder()
            .bridge(&self.bridge)
            .netns_prefix(&self.netns_prefix)
            .state_dir(&self.state_dir);
        if let Some(subnet) = self.subnet {
            builder = builder.subnet(subnet);
        }
        builder.build()
    }
}

/// How an agent runs; [`AgentOptions::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The control plane (`http://127.0.0.1:5400`).
    pub join: Url,
    /// The agent's own directory: `agent.json`, tasks, volumes, sandbox state.
    pub root: PathBuf,
    /// The cluster to join: `default`.
    pub cluster: String,
    /// CPU units offered: 1024 per CPU of this machine by default.
    pub cpu: Option<u64>,
    /// MiB of memory offered: this machine's `MemTotal` by default.
    pub memory: Option<u64>,
    /// Attributes, over the defaults (`ecs.instance-type` [`DEFAULT_INSTANCE_TYPE`],
    /// `ecs.availability-zone` [`DEFAULT_AVAILABILITY_ZONE`], `ecs.os-type` linux,
    /// `ecs.cpu-architecture` this machine's).
    pub attributes: BTreeMap<String, String>,
    /// Whether the agent serves the cluster's FARGATE pool.
    pub fargate: bool,
    /// Whether the agent is an EC2 container instance.
    pub ec2: bool,
    /// Where the agent's HTTP server listens: `0.0.0.0:0` (every address, a port the kernel
    /// picks).
    pub listen: SocketAddr,
    /// The address the control plane is given for the server; by default
    /// `http://<this machine's address toward the control plane>:<port>`.
    pub advertise: Option<Url>,
    /// The image store: [`default_store_root`].
    pub store: Option<PathBuf>,
    /// The task network.
    pub network: NetworkOptions,
    /// The stop timeout of containers without `stopTimeout` (`ECS_CONTAINER_STOP_TIMEOUT`, else
    /// 30 s).
    pub stop_timeout: Option<Duration>,
    /// How long STOPPED tasks (and their logs) are kept: one hour.
    pub cleanup_wait: Duration,
    /// Whether to serve credentials at [`LINK_LOCAL_ENDPOINT`] too (on by default; one agent
    /// per network namespace can).
    pub link_local: bool,
    /// Cancel it to stop the agent.
    pub shutdown: CancellationToken,
}

impl AgentOptions {
    /// The defaults, for an EC2 container instance of cluster `default`.
    pub fn new(join: Url, root: impl Into<PathBuf>) -> AgentOptions {
        AgentOptions {
            join,
            root: root.into(),
            cluster: "default".to_owned(),
            cpu: None,
            memory: None,
            attributes: BTreeMap::new(),
            fargate: false,
            ec2: true,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            advertise: None,
            store: None,
            network: NetworkOptions::default(),
            stop_timeout: None,
            cleanup_wait: task::DEFAULT_CLEANUP_WAIT,
            link_local: true,
            shutdown: CancellationToken::new(),
        }
    }

    /// The attributes the agent registers with: the defaults, then [`AgentOptions::attributes`].
    pub fn effective_attributes(&self) -> BTreeMap<String, String> {
        let mut attributes = BTreeMap::from([
            (
                "ecs.instance-type".to_owned(),
                DEFAULT_INSTANCE_TYPE.to_owned(),
            ),
            (
                "ecs.availability-zone".to_owned(),
                DEFAULT_AVAILABILITY_ZONE.to_owned(),
            ),
            ("ecs.os-type".to_owned(), "linux".to_owned()),
            (
                "ecs.cpu-architecture".to_owned(),
                host::cpu_architecture().to_owned(),
            ),
        ]);
        attributes.extend(self.attributes.clone());
        attributes
    }
}

/// What `agent.json` keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    /// The id the control plane gave.
    pub agent_id: String,
    /// The cluster it was given in.
    pub cluster: String,
    /// The control plane.
    pub control_plane: String,
    /// The container instance, if the agent is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_instance_arn: Option<String>,
}

impl AgentState {
    /// Reads `<root>/agent.json`; `None` when there is none.
    pub fn load(root: &Path) -> Result<Option<AgentState>, Error> {
        let path = root.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::State {
                    path,
                    reason: format!("{e}; remove it to register as a new agent"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// Writes `<root>/agent.json` durably: the id must outlive a machine crash, and a torn
    /// file would keep the agent from starting.
    fn save(&self, root: &Path) -> Result<(), Error> {
        let path = root.join(STATE_FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        crate::files::replace(&path, &bytes, crate::files::Durability::Durable)
            .map_err(|e| Error::io("write", &path, e))
    }
}

/// Runs the agent until [`AgentOptions::shutdown`] is cancelled; see the module docs.
///
/// # Errors
/// What keeps the agent from starting (its root, the bridge, the image store, the listen
/// address), and a control plane that refuses the registration (an unknown cluster): the
/// error names it. A control plane that cannot be reached is not an error: the agent keeps
/// trying.
pub async fn run(options: AgentOptions) -> Result<(), Error> {
    if !options.ec2 && !options.fargate {
        return Err(Error::InvalidOption(
            "the agent must serve the EC2 pool, the FARGATE pool, or both".to_owned(),
        ));
    }
    let root = options.root.clone();
    std::fs::create_dir_all(&root).map_err(|e| Error::io("create", &root, e))?;
    let saved = AgentState::load(&root)?;
    let control = ControlPlane::new(options.join.clone()).map_err(Error::InvalidOption)?;

    let network = {
        let network_options = options.network.clone();
        blocking(move || network_options.build().map_err(Error::from)).await?
    };
    let store_root = match &options.store {
        Some(store) => store.clone(),
        None => default_store_root()?,
    };
    let images = blocking(move || Images::open(&store_root).map_err(Error::from)).await?;

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: options.listen,
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("read the address of", root.join("listener"), e))?;
    let gateway = network.gateway();
    let (metadata_host, metadata_bridge, bridge_listener) = if local.ip().is_unspecified() {
        (
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port()),
            SocketAddr::new(IpAddr::V4(gateway), local.port()),
            None,
        )
    } else {
        let addr = SocketAddr::new(IpAddr::V4(gateway), 0);
        let bridge = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })?;
        let bound = bridge
            .local_addr()
            .map_err(|e| Error::io("read the address of", root.join("listener"), e))?;
        (local, bound, Some(bridge))
    };
    tracing::info!(address = %local, bridge = %metadata_bridge, "agent server listening");
    let link_local = if options.link_local {
        link_local_listener(&network).await
    } else {
        None
    };
    let relative_credentials = link_local.is_some();

    let engine = {
        let root = root.clone();
        let runtime = tokio::runtime::Handle::current();
        let zone = options.effective_attributes()["ecs.availability-zone"].clone();
        let stop_timeout = options.stop_timeout;
        let cleanup_wait = options.cleanup_wait;
        let network = network.clone();
        blocking(move || {
            let mut builder = TaskEngine::builder(root)
                .network(network)
                .images(images)
                .runtime(runtime)
                .availability_zone(zone)
                .cleanup_wait(cleanup_wait)
                .metadata_endpoints(Some(metadata_host), Some(metadata_bridge))
                .relative_credentials(relative_credentials);
            if let Some(timeout) = stop_timeout {
                builder = builder.stop_timeout(timeout);
            }
            let engine = builder.build()?;
            let restored = engine.restore()?;
            if !restored.is_empty() {
                tracing::info!(
                    tasks = restored.len(),
                    "restored the tasks of the previous agent"
                );
            }
            Ok(engine)
        })
        .await?
    };
    {
        let network = network.clone();
        let live: Vec<String> = engine
            .tasks()
            .iter()
            .filter(|t| !t.describe().last_status.is_stopped())
            .map(|t| t.id().to_owned())
            .collect();
        let swept = blocking(move || network.sweep(live).map_err(Error::from)).await;
        match swept {
            Ok(ids) if !ids.is_empty() => {
                tracing::info!(
                    ?ids,
                    "removed the namespaces of tasks this agent does not have"
                )
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "cannot sweep the task network"),
        }
    }

    let shutdown = options.shutdown.clone();
    let app = server::app(engine.clone());
    let mut servers = tokio::task::JoinSet::new();
    for listener in std::iter::once(listener)
        .chain(bridge_listener)
        .chain(link_local)
    {
        let app = app.clone();
        let stop = shutdown.clone();
        servers.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(err) = served {
                tracing::error!(%err, "agent server failed");
            }
        });
    }

    let address = match &options.advertise {
        Some(url) => url.as_str().trim_end_matches('/').to_owned(),
        None => {
            let ip = if local.ip().is_unspecified() {
                toward(&options.join)
                    .await
                    .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
            } else {
                local.ip()
            };
            format!("http://{}", SocketAddr::new(ip, local.port()))
        }
    };
    let request = RegisterRequest {
        cluster: options.cluster.clone(),
        agent_id: saved
            .filter(|s| s.cluster == options.cluster)
            .map(|s| s.agent_id),
        cpu: options.cpu.unwrap_or_else(host::cpu_units),
        memory: options.memory.or_else(host::memory_mib).unwrap_or(0),
        attributes: options.effective_attributes(),
        fargate: options.fargate,
        ec2: options.ec2,
        address,
    };
    let result = Agent {
        root: root.clone(),
        control: control.clone(),
        engine: engine.clone(),
        request,
        shutdown: shutdown.clone(),
    }
    .serve()
    .await;

    // Shutting down: the tasks stop, the control plane hears of it once more if it can.
    shutdown.cancel();
    engine.stop_all(StopCode::TerminationNotice, "The agent was shut down");
    let wait = options
        .stop_timeout
        .unwrap_or(task::DEFAULT_STOP_TIMEOUT)
        .max(MAX_STOP_TIMEOUT)
        + SHUTDOWN_GRACE;
    let stopping = engine.clone();
    let stopped = blocking(move || Ok(stopping.wait_all_stopped(wait))).await?;
    if !stopped {
        tracing::warn!("some tasks had not stopped when the agent exited");
    }
    if let Ok(Some(registered)) = &result {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            control.poll(
                &registered.agent_id,
                Duration::ZERO,
                &PollRequest {
                    tasks: engine.reports(),
                    refresh_credentials: Vec::new(),
                },
            ),
        )
        .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    servers.abort_all();
    result.map(drop)
}

/// Runs blocking work off the async threads.
/// Where ECS tasks reach their agent's credentials endpoint:
/// `http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, the only address besides
/// loopback that the AWS SDKs fetch container credentials from over plain HTTP.
pub const LINK_LOCAL_ENDPOINT: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)), 80);

/// The agent's server at [`LINK_LOCAL_ENDPOINT`], the address added to the task bridge; `None`
/// (tasks then have only `AWS_CONTAINER_CREDENTIALS_FULL_URI`) when the address cannot be
/// added or another agent of this host serves it already.
async fn link_local_listener(network: &Network) -> Option<tokio::net::TcpListener> {
    let added = {
        let network = network.clone();
        let address = match LINK_LOCAL_ENDPOINT.ip() {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => unreachable!("the endpoint is IPv4"),
        };
        blocking(move || network.add_host_address(address).map_err(Error::from)).await
    };
    if let Err(err) = added {
        tracing::warn!(%err, "cannot serve credentials at {LINK_LOCAL_ENDPOINT}");
        return None;
    }
    match tokio::net::TcpListener::bind(LINK_LOCAL_ENDPOINT).await {
        Ok(listener) => Some(listener),
        Err(err) => {
            tracing::warn!(%err, "cannot serve credentials at {LINK_LOCAL_ENDPOINT}; \
                tasks use AWS_CONTAINER_CREDENTIALS_FULL_URI");
            None
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// This machine's address toward the control plane at `url`.
async fn toward(url: &Url) -> Option<IpAddr> {
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = url.port_or_known_default()?;
    let peer = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
    host::local_address_toward(peer).ok()
}

/// The registered agent's loop.
struct Agent {
    root: PathBuf,
    control: ControlPlane,
    engine: TaskEngine,
    request: RegisterRequest,
    shutdown: CancellationToken,
}

impl Agent {
    /// Registers and polls until shutdown; returns the last registration.
    async fn serve(mut self) -> Result<Option<RegisterResponse>, Error> {
        let mut backoff = Backoff::new();
        let mut registered: Option<RegisterResponse> = None;
        let mut last_cleanup = tokio::time::Instant::now();
        let mut changes = self.engine.changes();
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(registered);
            }
            if last_cleanup.elapsed() >= CLEANUP_EVERY {
                last_cleanup = tokio::time::Instant::now();
                let engine = self.engine.clone();
                let _ = tokio::task::spawn_blocking(move || engine.clean_up()).await;
            }
            let Some(agent) = &registered else {
                match self.control.register(&self.request).await {
                    Ok(answer) => {
                        tracing::info!(agent_id = %answer.agent_id,
                            instance = ?answer.container_instance_arn, "registered");
                        self.request.agent_id = Some(answer.agent_id.clone());
                        AgentState {
                            agent_id: answer.agent_id.clone(),
                            cluster: self.request.cluster.clone(),
                            control_plane: self.control.base().to_string(),
                            container_instance_arn: answer.container_instance_arn.clone(),
                        }
                        .save(&self.root)?;
                        registered = Some(answer);
                        backoff.reset();
                    }
                    Err(CallError::Refused(reason)) => {
                        return Err(Error::ControlPlane {
                            url: self.control.base().to_string(),
                            reason,
                        });
                    }
                    Err(err) => {
                        tracing::warn!(%err, "cannot register; trying again");
                        self.pause(backoff.next_wait()).await;
                    }
                }
                continue;
            };
            let agent_id = agent.agent_id.clone();
            let wait = Duration::from_secs(agent.heartbeat_seconds.clamp(1, 20));
            changes.borrow_and_update();
            let request = PollRequest {
                tasks: self.engine.reports(),
                refresh_credentials: self.engine.credentials_due(),
            };
            let polled_at = tokio::time::Instant::now();
            // A task that changes while the poll is held is reported at once, by a new poll:
            // the control plane answers the superseded one with no work, so none is lost
            // (and work an answer lost in flight carried is delivered again).
            let answer = tokio::select! {
                answer = self.control.poll(&agent_id, wait, &request) => answer,
                _ = changes.changed() => continue,
                () = self.shutdown.cancelled() => return Ok(registered),
            };
            match answer {
                Ok(work) => {
                    backoff.reset();
                    let idle = work.is_empty();
                    self.apply(work).await;
                    // A control plane that answered early with nothing to do is not polled
                    // again before the heartbeat, unless a task changed meanwhile.
                    let left = wait.saturating_sub(polled_at.elapsed());
                    if idle && !left.is_zero() {
                        tokio::select! {
                            () = tokio::time::sleep(left) => {}
                            _ = changes.changed() => {}
                            () = self.shutdown.cancelled() => {}
                        }
                    }
                }
                Err(CallError::UnknownAgent) => {
                    tracing::warn!("the control plane does not know this agent; registering again");
                    registered = None;
                }
                Err(err) => {
                    tracing::warn!(%err, "poll failed; the tasks keep running");
                    self.pause(backoff.next_wait()).await;
                }
            }
        }
    }

    /// Sleeps `wait`, or until shutdown.
    async fn pause(&self, wait: Duration) {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    /// Starts and stops what the control plane said, and takes renewed credentials.
    async fn apply(&self, work: PollResponse) {
        for credentials in work.credentials {
            self.engine.renew_credentials(credentials);
        }
        for assignment in work.start {
            let engine = self.engine.clone();
            let arn = assignment.task_arn.clone();
            match tokio::task::spawn_blocking(move || engine.start(assignment)).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::error!(task = %arn, %err, "cannot start the task"),
                Err(err) => tracing::error!(task = %arn, %err, "the task's start panicked"),
            }
        }
        for stop in work.stop {
            let code = stop.stop_code.unwrap_or(StopCode::UserInitiated);
            let reason = stop.reason.as_deref().unwrap_or("Task stopped by user");
            if !self.engine.stop(&stop.task_arn, code, reason) {
                tracing::debug!(task = %stop.task_arn, "asked to stop a task this agent does not have");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_default_and_can_be_overridden() {
        let mut options = AgentOptions::new("http://127.0.0.1:5400".parse().unwrap(), "/tmp/agent");
        options
            .attributes
            .insert("ecs.instance-type".into(), "m5.large".into());
        options.attributes.insert("stack".into(), "prod".into());
        let attributes = options.effective_attributes();
        assert_eq!(attributes["ecs.instance-type"], "m5.large");
        assert_eq!(attributes["ecs.availability-zone"], "local-1a");
        assert_eq!(attributes["ecs.os-type"], "linux");
        assert_eq!(attributes["stack"], "prod");
        assert!(attributes.contains_key("ecs.cpu-architecture"));
    }

    #[test]
    fn agent_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(AgentState::load(dir.path()).unwrap(), None);
        let state = AgentState {
            agent_id: "a-1".into(),
            cluster: "default".into(),
            control_plane: "http://127.0.0.1:5400/".into(),
            container_instance_arn: None,
        };
        state.save(dir.path()).unwrap();
        assert_eq!(AgentState::load(dir.path()).unwrap(), Some(state));
        std::fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        let err = AgentState::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("remove it"), "{err}");
    }
}
