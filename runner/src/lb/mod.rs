//! A service's TCP load balancer: one listener that spreads client connections over the
//! service's healthy targets, with registration and deregistration with connection draining,
//! as an ELB target group does.
//!
//! ```no_run
//! use std::time::Duration;
//! use berth_runner::lb::{DrainOutcome, LoadBalancer};
//!
//! # async fn example() -> Result<(), berth_runner::lb::Error> {
//! let lb = LoadBalancer::bind("0.0.0.0:8080".parse().unwrap()).await?;
//! // The scheduler registers a task once its health checks pass...
//! lb.register("task-1", "10.88.0.5:80".parse().unwrap())?;
//! lb.register("task-2", "10.88.0.6:80".parse().unwrap())?;
//! // ...and before stopping one, deregisters it and waits for it to drain.
//! let report = lb.deregister("task-1", Duration::from_secs(30))?.await;
//! if let DrainOutcome::DelayExpired { cut } = report.outcome {
//!     tracing::warn!(cut, "task-1 still had connections at the end of the delay");
//! }
//! lb.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Targets
//! A target is an id (for a service, its task's id) and the address its connections go to. It
//! is registered when the scheduler has seen it healthy; from then on it is in one of three
//! states ([`HealthState`]):
//! - **healthy**: in the rotation;
//! - **unhealthy**: a connection to it was refused or timed out
//!   ([`Builder::connect_timeout`]), so it is left out of the rotation for a while (passive
//!   health checking, as Envoy's outlier detection does): [`Builder::ejection_time`] times its
//!   consecutive failures, at most [`Builder::max_ejection_time`]. The first connection after
//!   that probes it; one that succeeds makes it healthy again, and so does registering it again.
//!   When every target is unhealthy, they are all used anyway (fail-open, as NLB does): a guess
//!   that may work beats a certain refusal;
//! - **draining**: deregistered ([`LoadBalancer::deregister`]). It gets no new connections; its
//!   open ones may finish until the deregistration delay runs out (ELB's default is
//!   [`DEFAULT_DEREGISTRATION_DELAY`], 300 s), and are then cut. The deregistration completes,
//!   and the target leaves the table, when it has no connection left or the delay has run out
//!   and its connections are gone: the returned [`Drain`] resolves then, with a [`DrainReport`].
//!   Deregistering a draining target again joins the drain in progress, keeping the earlier
//!   deadline, so a later call can shorten the delay but never extend it.
//!
//! # Balancing: least outstanding connections, round-robin among ties
//! A new connection goes to the healthy target with the fewest connections open through this
//! load balancer (connections being set up count), and ties go round-robin in registration
//! order, as ALB's least outstanding requests and HAProxy's `leastconn` do.
//!
//! Why not NLB's flow hash: NLB hashes the 5-tuple because it runs as many nodes that share
//! no state; one process sees exact counts. And why not plain round-robin: TCP connections live
//! from milliseconds (a health probe) to hours (a WebSocket, a database session), and
//! round-robin evens out the number of connections handed out, not the number open, so a task
//! holding long connections keeps getting its share of new ones. Least outstanding evens out
//! what a task actually carries, and the round-robin among ties makes it exact rotation when
//! connections are short and the load light. Its known costs: a newly registered target takes
//! every new connection until it has caught up (ALB's slow start mode spreads that over a
//! ramp; not done here), and a target that accepts connections and closes them at once keeps a
//! low count and attracts traffic, which only the scheduler's health checks (deregistering it)
//! can catch at layer 4.
//!
//! # Connections
//! Each client connection is served by a task of its own on the caller's runtime:
//! 1. pick a target (above) and connect to it; when the connection is refused or times out,
//!    mark the target unhealthy and pick another, trying each target at most once;
//! 2. if no target is left, close the client connection at once with a reset: the client is
//!    never left hanging, and a reset cannot pass for an empty reply;
//! 3. relay bytes both ways with `TCP_NODELAY` on both sockets, so small writes are not delayed
//!    by Nagle's algorithm twice; a half-close is passed on (the client's FIN becomes a
//!    `shutdown(SHUT_WR)` towards the target, and the other way round), and the connection
//!    ends when both directions have;
//! 4. a reset or error on one side resets the other; a cut (drain delay over, shutdown) resets
//!    both.
//!
//! Bytes are relayed with `splice(2)`, socket to pipe to socket, as HAProxy does: they never
//! enter user space. Pipes are pooled between connections. A connection that cannot have a pipe
//! (out of descriptors), or every connection with [`Builder::splice`] off, is relayed with
//! `tokio::io::copy_bidirectional` through buffers instead, with the same semantics. On this
//! project's 2-CPU machines splice cuts the load balancer's own CPU per byte relayed by more
//! than half (`benches/src/bin/lb-bench.rs`). Each connection holds two sockets and, while it is open, two
//! pipes: six descriptors, so `RLIMIT_NOFILE` bounds the connections a process can relay.
//!
//! There is no idle timeout: a connection lasts as long as its two ends keep it open, or until
//! its target's drain delay runs out.
//!
//! # Logs
//! Through `tracing`: registrations, deregistrations and their outcome at `info`; failed
//! connection attempts and clients turned away at `warn`; each connection's start and end at
//! `debug`.

mod drain;
mod error;
mod proxy;
mod splice;
mod table;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use drain::{Drain, DrainOutcome, DrainReport};
pub use error::Error;
pub use table::{HealthState, TargetState};

use splice::PipePool;
use table::{Ejection, Table};

/// ELB's default deregistration delay: how long a draining target's connections may go on.
pub const DEFAULT_DEREGISTRATION_DELAY: Duration = Duration::from_secs(300);

/// Default for [`Builder::connect_timeout`], as HAProxy's usual `timeout connect` and Envoy's
/// cluster `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default for [`Builder::ejection_time`].
pub const DEFAULT_EJECTION_TIME: Duration = Duration::from_secs(10);

/// Default for [`Builder::max_ejection_time`].
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(60);

/// Default for [`Builder::buffer_size`]: a pipe's default capacity on Linux. Larger pipes cut
/// the load balancer's own CPU per byte a little but cost the receiving ends more than that
/// (measured with `benches/src/bin/lb-bench.rs`).
pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;

/// The smallest copy buffer [`Builder::buffer_size`] accepts; smaller sizes are raised to it.
pub const MIN_BUFFER_SIZE: usize = 1024;

/// Idle pipe pairs kept for splice (four descriptors each).
const IDLE_PIPE_PAIRS: usize = 64;

#[derive(Debug, Clone)]
struct Config {
    connect_timeout: Duration,
    ejection: Ejection,
    buffer_size: usize,
    splice: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ejection: Ejection {
                base: DEFAULT_EJECTION_TIME,
                max: DEFAULT_MAX_EJECTION_TIME,
            },
            buffer_size: DEFAULT_BUFFER_SIZE,
            splice: true,
        }
    }
}

/// Sets up a [`LoadBalancer`] with other than the default settings.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    config: Config,
}

impl Builder {
    /// How long a connection to a target may take before the target counts as failed and the
    /// next one is tried. Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long a target that failed to accept a connection is left out of the rotation, per
    /// consecutive failure. Default [`DEFAULT_EJECTION_TIME`].
    pub fn ejection_time(mut self, base: Duration) -> Self {
        self.config.ejection.base = base;
        self
    }

    /// The longest a failing target is left out of the rotation. Default
    /// [`DEFAULT_MAX_EJECTION_TIME`].
    pub fn max_ejection_time(mut self, max: Duration) -> Self {
        self.config.ejection.max = max;
        self
    }

    /// How many bytes each direction of a connection holds in flight: the capacity of its
    /// pipe with [`Builder::splice`] (the kernel may cap it at `fs.pipe-max-size`), else the
    /// size of its copy buffer. Default [`DEFAULT_BUFFER_SIZE`]; at least [`MIN_BUFFER_SIZE`].
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.config.buffer_size = bytes.max(MIN_BUFFER_SIZE);
        self
    }

    /// Whether bytes are relayed with `splice(2)` through a pipe per direction, never entering
    /// user space (the default), or copied through user-space buffers. A connection for which
    /// no pipe can be had (out of file descriptors) is copied whatever this says.
    pub fn splice(mut self, on: bool) -> Self {
        self.config.splice = on;
        self
    }

    /// Listens on `addr` (port 0 picks a free port; see [`LoadBalancer::local_addr`]) and
    /// starts accepting connections on the current tokio runtime. It has no targets yet: until
    /// one is registered, clients are turned away.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn bind(self, addr: SocketAddr) -> Result<LoadBalancer, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            table: Mutex::new(Table::new(self.config.ejection)),
            config: self.config.clone(),
            root: CancellationToken::new(),
            tracker: TaskTracker::new(),
            handle: Handle::current(),
            stats: Counters::default(),
            pipes: PipePool::new(self.config.buffer_size, IDLE_PIPE_PAIRS),
        });
        shared
            .tracker
            .spawn(proxy::accept_loop(shared.clone(), listener));
        tracing::info!(addr = %local_addr, "load balancer listening");
        Ok(LoadBalancer { shared, local_addr })
    }
}

/// Counts of the load balancer's connections since it started, for display and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client connections accepted.
    pub accepted: u64,
    /// Client connections closed because no target could take them.
    pub rejected: u64,
    /// Connection attempts to targets that failed (refused or timed out).
    pub connect_failures: u64,
    /// Connections cut because their target's drain delay ran out or the load balancer shut
    /// down.
    pub cut: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    rejected: AtomicU64,
    connect_failures: AtomicU64,
    cut: AtomicU64,
}

/// What the listener, the connections and the drains share.
#[derive(Debug)]
struct Shared {
    table: Mutex<Table>,
    config: Config,
    /// Cancelled at shutdown; every target's cut token is a child of it.
    root: CancellationToken,
    /// The listener, every connection and every drain, so that shutdown can wait for them.
    tracker: TaskTracker,
    /// The runtime the load balancer was bound on, where drains are spawned.
    handle: Handle,
    stats: Counters,
    /// Pipes for splice, kept between connections.
    pipes: PipePool,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        // The table's updates cannot be left half done by a panic elsewhere.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A TCP load balancer listening on one address. See the [module docs](self).
///
/// Dropping it stops it as [`LoadBalancer::shutdown`] does, without waiting.
#[derive(Debug)]
pub struct LoadBalancer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl LoadBalancer {
    /// A builder, to change the default settings.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Listens on `addr` with the default settings; see [`Builder::bind`].
    pub async fn bind(addr: SocketAddr) -> Result<LoadBalancer, Error> {
        Builder::default().bind(addr).await
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Adds the target `id` at `addr` to the rotation, healthy.
    ///
    /// Registering a target again at the same address changes nothing but clearing its
    /// passive health marks (the caller vouches for it). Fails when `id` is registered at
    /// another address, or is draining.
    pub fn register(&self, id: &str, addr: SocketAddr) -> Result<(), Error> {
        let added = self.shared.table().register(id, addr, &self.shared.root)?;
        if added {
            tracing::info!(target_id = id, %addr, "target registered");
        }
        Ok(())
    }

    /// Deregisters the target `id` with connection draining: from now on it gets no new
    /// connections; its open ones may go on for `delay`, and are then cut. The returned future
    /// resolves when the target has no connection left or the delay has run out and its
    /// connections are gone; by then the target is no longer registered.
    ///
    /// The drain starts now, on the load balancer's runtime, whether or not the future is
    /// awaited. Deregistering a target that is already draining returns another future for the
    /// same drain, whose deadline becomes the earlier of the two. Fails when no target `id` is
    /// registered.
    pub fn deregister(&self, id: &str, delay: Duration) -> Result<Drain, Error> {
        let ticket = self.shared.table().begin_drain(id, delay, Instant::now())?;
        if let Some((report, wake)) = ticket.started {
            tracing::info!(target_id = id, addr = %ticket.addr, ?delay, "target draining");
            self.shared.tracker.spawn_on(
                drain::run(
                    self.shared.clone(),
                    ticket.key,
                    ticket.id.clone(),
                    ticket.addr,
                    wake,
                    report,
                ),
                &self.shared.handle,
            );
        }
        Ok(Drain::new(&ticket.id, ticket.addr, ticket.done))
    }

    /// Every registered target, draining ones included, in registration order.
    pub fn targets(&self) -> Vec<TargetState> {
        self.shared.table().snapshot(Instant::now())
    }

    /// Connection counts since the load balancer started.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.stats;
        Stats {
            accepted: c.accepted.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            connect_failures: c.connect_failures.load(Ordering::Relaxed),
            cut: c.cut.load(Ordering::Relaxed),
        }
    }

    /// Stops the load balancer: closes the listener (the port is free when this returns), cuts
    /// every connection, completes the drains in progress with [`DrainOutcome::Shutdown`], and
    /// waits until all of that is done. Drain the targets first for a graceful stop.
    pub async fn shutdown(&self) {
        self.shared.root.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        tracing::info!(addr = %self.local_addr, "load balancer stopped");
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        self.shared.root.cancel();
    }
}
