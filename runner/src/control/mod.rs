//! The control plane behind `berth runner serve`: ECS's API over HTTP, the agents' protocol,
//! placement, the service scheduler, load balancers, metering and logs.
//!
//! ## The API
//! [`app`] is the router; [`serve`] opens the state under a root directory and serves it on an
//! address until a shutdown future completes. It answers:
//! - **ECS's API**: `POST /` with `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Operation>`
//!   and an ECS JSON body (the JSON 1.1 protocol), answering ECS's shapes with ECS's field names,
//!   and errors as ECS gives them: `{"__type": "ClusterNotFoundException", "message": "Cluster
//!   not found."}` ([`ApiError`]). The operations: task definitions (`RegisterTaskDefinition`,
//!   `DescribeTaskDefinition`, `ListTaskDefinitions`, `DeregisterTaskDefinition`), clusters
//!   (`CreateCluster`, `ListClusters`, `DescribeClusters`, `DeleteCluster`), container instances
//!   (`ListContainerInstances`, `DescribeContainerInstances`, `DeregisterContainerInstance`),
//!   tasks (`RunTask`, `ListTasks`, `DescribeTasks`, `StopTask`) and services (`CreateService`,
//!   `UpdateService`, `DeleteService`, `ListServices`, `DescribeServices`). A cluster named
//!   `default` always exists.
//! - **the agent protocol** (`/berth/v1/agents/...`, the messages of
//!   [`crate::agent::protocol`]): an agent registers (an EC2 container instance, FARGATE
//!   capacity, or both), then long-polls: each poll reports every task it has and answers with
//!   work (starts and stops) as soon as there is some, or after `wait` seconds (at most 20).
//!   Polls are the heartbeat: an agent silent for three heartbeats is disconnected and its
//!   tasks are lost (STOPPED, `TerminationNotice`), which services replace elsewhere.
//! - **berth's routes**: `GET /berth/v1/clusters/{cluster}/cost` (metering, [`crate::ecs::metering`])
//!   and `GET /berth/v1/clusters/{cluster}/tasks/{task}/logs?container=&follow=` (a container's
//!   output, streamed from the agent that runs the task), and `GET /healthz`.
//!
//! ## State
//! Everything lives in SQLite under `<root>/control.db` (WAL, `synchronous=FULL`): each call,
//! poll and scheduling step is one transaction, so a crash leaves all of an operation or none,
//! and a restarted control plane carries on from the database. What is not persisted is only
//! what cannot outlive the process: when each agent last polled (a restarted control plane
//! gives every agent a full disconnect timeout to poll again, and adopts the tasks it
//! reports), the long polls waiting, and the load balancers' sockets (bound again on start).
//!
//! ## Scheduling
//! `RunTask` and the service scheduler place tasks the same way. On EC2, with
//! [`crate::ecs::placement`] over the cluster's ACTIVE instances whose agent is connected, with
//! the task definition's `memberOf` constraints plus the request's, and the request's
//! strategies; without strategies a standalone task is placed at random (ECS's default for
//! `RunTask`), and a service's task spread over `attribute:ecs.availability-zone` then
//! `instanceId` (the service scheduler's default). On FARGATE, the task gets the cheapest valid
//! size that covers its definition (its own size when it is a valid one) and goes to the
//! connected FARGATE agent with the fewest FARGATE tasks, preferring the cluster's own agents.
//! A placed task is PENDING, with a start queued for its agent; what its instance has left is
//! derived from the tasks placed there, so a task's resources are free again once it is
//! STOPPED.
//!
//! ## Services
//! A reconciler ([`ControlState::reconcile`]; every second and whenever something changes,
//! once [`ControlState::spawn_background`] runs it) keeps each service's PRIMARY deployment at
//! `desiredCount` RUNNING and healthy tasks: see the `services` module for the rules (rolling
//! deployments within `minimumHealthyPercent`/`maximumPercent`, health check replacements after
//! `healthCheckGracePeriodSeconds`, the deployment circuit breaker with rollback, and the
//! service events in ECS's words). A service with `loadBalancers` gets a TCP load balancer per
//! entry, on the entry's `listenerPort`; its tasks are registered when healthy and drained
//! before they are told to stop (below).
//!
//! ## Load balancers
//! They listen on [`Builder::load_balancer_address`], `0.0.0.0` by default (as an
//! internet-facing ELB would); `127.0.0.1` keeps them local. A task's target is its ENI's
//! address and the container port (`awsvpc`), or the host port bound to the container port on
//! its agent's host (`bridge`, `host`). It is registered once the task is RUNNING and healthy
//! (RUNNING, without container health checks), and deregistered, with draining, before its
//! agent is told to stop it (the task is DEACTIVATING meanwhile) and as soon as it is no longer
//! healthy. Draining waits for the target's connections to close, at most
//! [`Builder::deregistration_delay`] (ELB's 300 s by default). [`ControlState::listeners`]
//! shows the listeners and their targets.
//!
//! ## Time
//! Every time the control plane stamps or measures (ECS timestamps, heartbeats, grace periods,
//! bills) comes from a [`Clock`]: [`SystemClock`] in production, [`ManualClock`] in tests.

mod agents;
mod api;
mod balancers;
mod clock;
mod cost;
mod error;
mod logs;
mod roles;
mod scheduler;
mod services;
mod store;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::ecs::Timestamp;
use crate::ecs::cluster::Cluster;
use crate::ecs::metering::Rates;

pub use balancers::{ListenerState, ServiceLoadBalancer};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ApiError, Error, ErrorKind};
pub use roles::{DEFAULT_LIFETIME as DEFAULT_CREDENTIALS_LIFETIME, Roles, RolesError};
pub use store::StoreError;

use balancers::{Balancers, ServiceKey};
use store::{Store, Tx};

/// The control plane's default address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:5400";
/// The `X-Amz-Target` prefix of ECS's operations.
pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
/// The cluster that always exists.
pub const DEFAULT_CLUSTER: &str = "default";
/// The state database's file name under the root.
pub const DB_FILE: &str = "control.db";

/// Settings of a [`ControlState`]; see [`Builder`].
#[derive(Debug, Clone)]
struct Config {
    heartbeat: Duration,
    missed_heartbeats: u32,
    redelivery: Duration,
    reconcile_interval: Duration,
    load_balancer_address: IpAddr,
    deregistration_delay: Duration,
    placement_seed: Option<u64>,
    event_repeat: Duration,
    shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            heartbeat: Duration::from_secs(crate::agent::protocol::DEFAULT_HEARTBEAT_SECS),
            missed_heartbeats: 3,
            redelivery: Duration::from_secs(10),
            reconcile_interval: Duration::from_secs(1),
            load_balancer_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            deregistration_delay: crate::lb::DEFAULT_DEREGISTRATION_DELAY,
            placement_seed: None,
            event_repeat: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl Config {
    fn disconnect_timeout(&self) -> Duration {
        self.heartbeat.saturating_mul(self.missed_heartbeats)
    }
}

/// Sets up a [`ControlState`].
#[derive(Debug)]
pub struct Builder {
    root: PathBuf,
    rates: Rates,
    clock: Arc<dyn Clock>,
    config: Config,
    roles: Option<Roles>,
}

impl Builder {
    /// Prices for metering; the public us-east-1 ones by default.
    pub fn rates(mut self, rates: Rates) -> Self {
        self.rates = rates;
        self
    }

    /// The roles tasks may have, and the key that signs their credentials. Without them,
    /// tasks get no role credentials.
    pub fn roles(mut self, roles: Roles) -> Self {
        self.roles = Some(roles);
        self
    }

    /// Where the time comes from; the system clock by default.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How often agents must poll (2 s by default).
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.config.heartbeat = heartbeat;
        self
    }

    /// How many heartbeats an agent may miss before it is disconnected (3 by default).
    pub fn missed_heartbeats(mut self, missed: u32) -> Self {
        self.config.missed_heartbeats = missed.max(1);
        self
    }

    /// The address services' load balancers listen on (`0.0.0.0` by default).
    pub fn load_balancer_address(mut self, address: IpAddr) -> Self {
        self.config.load_balancer_address = address;
        self
    }

    /// The longest a target's connections may drain before its task is stopped (300 s, ELB's
    /// default).
    pub fn deregistration_delay(mut self, delay: Duration) -> Self {
        self.config.deregistration_delay = delay;
        self
    }

    /// How often the reconciler runs when nothing wakes it (1 s by default).
    pub fn reconcile_interval(mut self, interval: Duration) -> Self {
        self.config.reconcile_interval = interval;
        self
    }

    /// Seeds the choices placement makes at random (ties, `random`), for reproducible runs.
    pub fn placement_seed(mut self, seed: u64) -> Self {
        self.config.placement_seed = Some(seed);
        self
    }

    /// Opens (creating as needed) the state under the root, and makes sure the `default`
    /// cluster exists.
    pub fn open(self) -> Result<ControlState, Error> {
        std::fs::create_dir_all(&self.root).map_err(|source| Error::CreateRoot {
            path: self.root.clone(),
            source,
        })?;
        let path = self.root.join(DB_FILE);
        let store = Store::open(&path).map_err(|source| Error::Store {
            path: path.clone(),
            source,
        })?;
        let store_error = |source| Error::Store {
            path: path.clone(),
            source,
        };
        let now = self.clock.now();
        let connected = store
            .write(|tx| -> Result<Vec<String>, StoreError> {
                if tx.cluster(DEFAULT_CLUSTER)?.is_none() {
                    tx.put_cluster(&Cluster::new(DEFAULT_CLUSTER))?;
                }
                Ok(tx
                    .agents()?
                    .into_iter()
                    .filter(|agent| agent.connected)
                    .map(|agent| agent.agent_id)
                    .collect())
            })
            .map_err(store_error)?;
        // Agents that were connected get a whole disconnect timeout to poll the restarted
        // control plane, and have their tasks adopted when they do.
        let agents = connected
            .into_iter()
            .map(|id| (id, AgentLive::new(now)))
            .collect();
        let rng = match self.config.placement_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Serve(std::io::Error::other(e)))?;
        tracing::info!(root = %self.root.display(), "control plane state opened");
        Ok(ControlState {
            inner: Arc::new(Inner {
                store,
                clock: self.clock,
                config: self.config,
                rates: self.rates,
                rng: Mutex::new(rng),
                agents: Mutex::new(agents),
                balancers: Balancers::default(),
                draining: Mutex::new(HashSet::new()),
                wake: Notify::new(),
                shutdown: CancellationToken::new(),
                http,
                roles: self.roles,
            }),
        })
    }
}

/// What the control plane knows of an agent that is not worth persisting.
#[derive(Debug)]
struct AgentLive {
    last_seen: Timestamp,
    /// Polls of the agent in progress: an agent holding a long poll is in touch.
    polling: usize,
    /// Woken when work is queued for the agent, and when a newer poll supersedes a held one.
    notify: Arc<Notify>,
    /// The number of the agent's latest poll: a held poll that is no longer the latest
    /// answers at once, with no work, so that an agent can poll again with fresh reports
    /// without waiting for the poll it abandoned.
    generation: u64,
}

impl AgentLive {
    fn new(now: Timestamp) -> AgentLive {
        AgentLive {
            last_seen: now,
            polling: 0,
            notify: Arc::new(Notify::new()),
            generation: 0,
        }
    }
}

/// Everything the handlers, the reconciler and the agent monitor share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    config: Config,
    rates: Rates,
    rng: Mutex<StdRng>,
    agents: Mutex<HashMap<String, AgentLive>>,
    balancers: Balancers,
    /// Tasks whose load balancer targets are draining; their stop is sent when it is done.
    draining: Mutex<HashSet<String>>,
    /// Wakes the reconciler.
    wake: Notify,
    /// Cancelled when the control plane shuts down: long polls answer at once.
    shutdown: CancellationToken,
    http: reqwest::Client,
    /// Signs tasks' role credentials.
    roles: Option<Roles>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn rng(&self) -> MutexGuard<'_, StdRng> {
        lock(&self.rng)
    }

    fn is_draining(&self, task_arn: &str) -> bool {
        lock(&self.draining).contains(task_arn)
    }
}

/// One transaction of the control plane, with what to do once it has committed.
pub(crate) struct Txn<'a> {
    db: &'a Tx<'a>,
    now: Timestamp,
    inner: &'a Inner,
    effects: Effects,
}

/// What a transaction leaves to do after its commit: waking agents and the reconciler, and
/// changing load balancers. Nothing here may happen before the commit: an agent woken too early
/// would find no work, and a load balancer changed for a rolled-back transaction would be wrong.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    notify: BTreeSet<String>,
    wake: bool,
    register: Vec<Registration>,
    deregister: Vec<Deregistration>,
    drains: Vec<DrainRequest>,
    close: Vec<ServiceKey>,
}

/// Puts a task in a listener's rotation.
#[derive(Debug)]
struct Registration {
    key: ServiceKey,
    listener: usize,
    task_id: String,
    addr: SocketAddr,
}

/// Takes a task out of a service's rotation, with its own drain delay.
#[derive(Debug)]
struct Deregistration {
    key: ServiceKey,
    task_id: String,
    delay: Duration,
}

/// Drains a task from its service's listeners, then tells its agent to stop it.
#[derive(Debug)]
struct DrainRequest {
    key: ServiceKey,
    task_arn: String,
    task_id: String,
}

impl Txn<'_> {
    /// Wakes the agent's long poll once this commits.
    fn notify(&mut self, agent_id: &str) {
        self.effects.notify.insert(agent_id.to_owned());
    }
}

impl ControlState {
    /// A builder for the state under `root`.
    pub fn builder(root: impl Into<PathBuf>) -> Builder {
        Builder {
            root: root.into(),
            rates: Rates::default(),
            clock: Arc::new(SystemClock),
            config: Config::default(),
            roles: None,
        }
    }

    /// Opens the state under `root` with the default settings.
    pub fn open(root: impl Into<PathBuf>) -> Result<ControlState, Error> {
        ControlState::builder(root).open()
    }

    /// The current time, from the state's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The metering rates.
    pub fn rates(&self) -> &Rates {
        &self.inner.rates
    }

    /// Runs `f` in a write transaction on the blocking pool, then carries out its effects.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut Txn<'_>) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let state = self.clone();
        let (value, effects) = tokio::task::spawn_blocking(move || {
            let inner = &*state.inner;
            inner.store.write(|db| {
                let mut txn = Txn {
                    db,
                    now: inner.clock.now(),
                    inner,
                    effects: Effects::default(),
                };
                let value = f(&mut txn)?;
                Ok::<_, ApiError>((value, txn.effects))
            })
        })
        .await
        .map_err(|e| ApiError::internal(format!("state transaction: {e}")))??;
        self.apply(effects);
        Ok(value)
    }

    /// Runs `f` in a read transaction on the blocking pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Tx<'_>, Timestamp, &Inner) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            let inner = &*state.inner;
            inner.store.read(|db| f(db, inner.clock.now(), inner))
        })
        .await
        .map_err(|e| ApiError::internal(format!("state transaction: {e}")))?
    }

    /// Carries out what a committed transaction left to do.
    fn apply(&self, effects: Effects) {
        for agent in &effects.notify {
            self.notify_agent(agent);
        }
        for registration in effects.register {
            let listeners = self.inner.balancers.of(&registration.key);
            let Some(listener) = listeners.get(registration.listener) else {
                continue;
            };
            if let Err(error) = listener
                .lb
                .register(&registration.task_id, registration.addr)
            {
                tracing::warn!(task = %registration.task_id, %error, "cannot register target");
            }
        }
        for deregistration in effects.deregister {
            for listener in self.inner.balancers.of(&deregistration.key) {
                // The drain runs by itself; nothing waits for it.
                drop(
                    listener
                        .lb
                        .deregister(&deregistration.task_id, deregistration.delay),
                );
            }
        }
        for drain in effects.drains {
            self.start_drain(drain);
        }
        for key in effects.close {
            for listener in self.inner.balancers.remove(&key) {
                tokio::spawn(async move { listener.lb.shutdown().await });
            }
        }
        if effects.wake {
            self.inner.wake.notify_one();
        }
    }

    /// Deregisters a task from its service's listeners and, once its connections have
    /// drained, queues its stop.
    fn start_drain(&self, request: DrainRequest) {
        let delay = self.inner.config.deregistration_delay;
        let drains: Vec<_> = self
            .inner
            .balancers
            .of(&request.key)
            .iter()
            .filter_map(|listener| listener.lb.deregister(&request.task_id, delay).ok())
            .collect();
        lock(&self.inner.draining).insert(request.task_arn.clone());
        let state = self.clone();
        tokio::spawn(async move {
            for drain in drains {
                let report = drain.await;
                tracing::info!(
                    task = %request.task_id,
                    outcome = ?report.outcome,
                    elapsed = ?report.elapsed,
                    "target drained"
                );
            }
            let arn = request.task_arn.clone();
            if let Err(error) = state
                .write(move |txn| scheduler::finish_drain(txn, &arn))
                .await
            {
                tracing::error!(task = %request.task_arn, %error, "cannot stop drained task");
            }
            lock(&state.inner.draining).remove(&request.task_arn);
        });
    }

    /// Wakes the long poll of `agent_id`, if it has one (or makes its next poll answer at
    /// once).
    fn notify_agent(&self, agent_id: &str) {
        let agents = lock(&self.inner.agents);
        if let Some(live) = agents.get(agent_id) {
            live.notify.notify_one();
        }
    }

    /// Runs the service scheduler once over every service: what the background reconciler does
    /// every second and whenever something changes.
    pub async fn reconcile(&self) {
        services::reconcile(self).await;
    }

    /// Looks for agents that have missed their heartbeats, disconnects them and marks their
    /// tasks lost: what the background monitor does every half heartbeat.
    pub async fn check_agents(&self) {
        agents::check(self).await;
    }

    /// The listeners of a service, and their targets.
    pub fn listeners(&self, cluster: &str, service: &str) -> Vec<ListenerState> {
        let key = (cluster.to_owned(), service.to_owned());
        self.inner
            .balancers
            .of(&key)
            .into_iter()
            .map(|listener| ListenerState {
                listener: listener.lb.local_addr(),
                targets: listener.lb.targets(),
                spec: listener.spec,
            })
            .collect()
    }

    /// Starts the reconciler and the agent monitor on the current runtime. They run until the
    /// returned handle is stopped or dropped, or the state shuts down.
    pub fn spawn_background(&self) -> Background {
        let token = self.inner.shutdown.child_token();
        let reconciler = {
            let state = self.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let interval = state.inner.config.reconcile_interval;
                loop {
                    state.reconcile().await;
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = state.inner.wake.notified() => {}
                        () = tokio::time::sleep(interval) => {}
                    }
                }
            })
        };
        let monitor = {
            let state = self.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let period = (state.inner.config.heartbeat / 2).max(Duration::from_millis(100));
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = token.cancelled() => break,
                        _ = tick.tick() => state.check_agents().await,
                    }
                }
            })
        };
        Background {
            token,
            tasks: vec![reconciler, monitor],
        }
    }

    /// Stops the control plane's own activity: long polls answer at once, and every load
    /// balancer is shut down (its port is free when this returns). The state stays readable.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        for listener in self.inner.balancers.all() {
            listener.lb.shutdown().await;
        }
    }
}

/// The reconciler and the agent monitor, running. Dropping it stops them.
#[derive(Debug)]
pub struct Background {
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// Stops them and waits until they have.
    pub async fn stop(mut self) {
        self.token.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// The control plane's router: ECS's API on `POST /`, the agent protocol and berth's own
/// routes under `/berth/v1/`, and `/healthz`. Requests are traced; a panicking handler answers
/// `500 ServerException` without details.
pub fn app(state: ControlState) -> Router {
    let middleware = ServiceBuilder::new()
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(DefaultOnFailure::new().level(Level::ERROR)),
        )
        .layer(CatchPanicLayer::custom(|_panic| {
            ApiError::internal("handler panicked").into_response()
        }));
    Router::new()
        .route("/", post(api::dispatch))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            crate::agent::protocol::REGISTER_PATH,
            post(agents::register_route),
        )
        .route("/berth/v1/agents/{agent_id}/poll", post(agents::poll_route))
        .route("/berth/v1/clusters/{cluster}/cost", get(cost::route))
        .route(
            "/berth/v1/clusters/{cluster}/tasks/{task}/logs",
            get(logs::route),
        )
        .fallback(|| async { ApiError::new(ErrorKind::NotFound, "No such route.") })
        .layer(middleware)
        .with_state(state)
}

/// What [`serve`] needs.
#[derive(Debug)]
pub struct ServeOptions<S> {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The state directory (`control.db` goes there).
    pub root: PathBuf,
    /// Metering prices.
    pub rates: Rates,
    /// The roles tasks may have (see [`Roles`]).
    pub roles: Option<Roles>,
    /// Completes when the control plane should stop.
    pub shutdown: S,
}

/// Opens the state under `options.root` and serves the control plane on `options.addr` until
/// `options.shutdown` completes. See [`serve_listener`].
pub async fn serve<S>(options: ServeOptions<S>) -> Result<(), Error>
where
    S: Future<Output = ()> + Send + 'static,
{
    let mut builder = ControlState::builder(options.root).rates(options.rates);
    if let Some(roles) = options.roles {
        builder = builder.roles(roles);
    }
    let state = builder.open()?;
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|source| Error::Bind {
            addr: options.addr,
            source,
        })?;
    serve_listener(listener, state, options.shutdown).await
}

/// Serves `state` on `listener` with the reconciler and the agent monitor running, until
/// `shutdown` completes. Then it stops accepting, answers the long polls, waits up to 30 s
/// for requests in flight, and shuts the load balancers down. Tasks keep running on their
/// agents; a control plane started again on the same state adopts them.
pub async fn serve_listener<S>(
    listener: tokio::net::TcpListener,
    state: ControlState,
    shutdown: S,
) -> Result<(), Error>
where
    S: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().map_err(Error::Serve)?;
    tracing::info!(%addr, "control plane listening");
    let background = state.spawn_background();
    let grace = state.inner.config.shutdown_grace;
    let stopping = state.inner.shutdown.clone();
    let signalled = {
        let stopping = stopping.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                () = stopping.cancelled() => {}
            }
            tracing::info!("shutting down: no new connections, answering long polls");
            stopping.cancel();
        }
    };
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown(signalled);
    let deadline = async {
        stopping.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = server => result.map_err(Error::Serve),
        () = deadline => {
            tracing::warn!(?grace, "requests still in flight after the grace period; stopping");
            Ok(())
        }
    };
    background.stop().await;
    state.shutdown().await;
    result
}

/// Reads metering rates from a JSON file: the fields of [`Rates`] (`fargateVcpuHourly`,
/// `fargateGbHourly`, `instanceHourly` by instance type, `defaultInstanceHourly`); those it
/// leaves out keep their default (us-east-1) values, and `instanceHourly` adds to the default
/// table.
pub fn load_rates(path: &Path) -> Result<Rates, Error> {
    let text = std::fs::read(path).map_err(|source| Error::ReadRates {
        path: path.to_owned(),
        source,
    })?;
    let parse_error = |source| Error::ParseRates {
        path: path.to_owned(),
        source,
    };
    let given: serde_json::Value = serde_json::from_slice(&text).map_err(parse_error)?;
    let mut merged = serde_json::to_value(Rates::default()).map_err(parse_error)?;
    if let (Some(merged), Some(given)) = (merged.as_object_mut(), given.as_object()) {
        for (key, value) in given {
            match (merged.get_mut(key), value) {
                (Some(serde_json::Value::Object(table)), serde_json::Value::Object(extra)) => {
                    table.extend(extra.clone());
                }
                _ => {
                    merged.insert(key.clone(), value.clone());
                }
            }
        }
    }
    serde_json::from_value(merged).map_err(parse_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_file_overrides_some_prices_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rates.json");
        std::fs::write(
            &path,
            r#"{"fargateVcpuHourly": 0.05, "instanceHourly": {"berth.local": 0.01}}"#,
        )
        .unwrap();
        let rates = load_rates(&path).unwrap();
        assert_eq!(rates.fargate_vcpu_hourly, 0.05);
        assert_eq!(rates.fargate_gb_hourly, Rates::default().fargate_gb_hourly);
        assert_eq!(rates.instance_rate("berth.local"), 0.01);
        assert_eq!(rates.instance_rate("m5.xlarge"), 0.192);
        std::fs::write(&path, r#"{"fargateVcpuHourly": "cheap"}"#).unwrap();
        assert!(matches!(load_rates(&path), Err(Error::ParseRates { .. })));
    }
}
