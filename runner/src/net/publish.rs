//! Port publishing for bridge-mode tasks: a task's `containerPort` reached through a port of
//! the host, as Docker's `-p` and ECS's `portMappings` in `bridge` mode give it.
//!
//! Each mapping gets a userspace proxy, as Docker's `docker-proxy` is, bound on the host port
//! on [`Publisher::bind_ip`] (by default every address, `0.0.0.0`). A proxy, unlike iptables
//! DNAT, needs nothing of the host's firewall, works for traffic from the host itself
//! (`127.0.0.1:<hostPort>`), and goes away with the process that owns the task, leaving no
//! rule behind; its cost is a copy through user space, which the tasks' load balancer pays
//! anyway.
//!
//! - **TCP**: a listener whose connections are each forwarded to `<task ip>:<containerPort>`
//!   by copying bytes both ways, half-closes included.
//! - **UDP**: a socket that relays datagrams. Each client address is a *flow* with a socket of
//!   its own connected to `<task ip>:<containerPort>`, so the task sees one peer per client,
//!   and what the task sends back on a flow is sent to that client from the host port. A flow
//!   is closed after [`DEFAULT_UDP_IDLE_TIMEOUT`] (docker-proxy's 90 s) without a datagram
//!   either way. A mapping keeps at most [`DEFAULT_UDP_MAX_FLOWS`] flows: a new client beyond
//!   that takes the place of the flow idle the longest, so that a flood of source addresses
//!   cannot use up the process's file descriptors while busy clients keep their flows. Both
//!   limits can be changed on the [`Publisher`]. Replies leave from the address the kernel
//!   picks for the client's route; on a host with several addresses, where a client must get
//!   its reply from the very address it wrote to, bind the address with
//!   [`Publisher::bind_ip`].
//!
//! TCP and UDP ports are separate: a TCP and a UDP mapping may use the same host port number,
//! as `-p 53:53/tcp -p 53:53/udp` does.
//!
//! A mapping without a host port, or with host port 0, gets a dynamic one from ECS's
//! ephemeral range [`EPHEMERAL_PORTS`] (49153-65535), a port free for the mapping's protocol.
//! Ports are tried in turn from a cursor that starts at a point of its own in each process and
//! moves on after every port handed out, so a port just released is not handed out again at
//! once; a port that something on the host holds fails to bind and is skipped.
//!
//! The proxies run on the tokio runtime given with [`Publisher::runtime`], else on the runtime
//! of the calling context, else on a small runtime of this module's own (one worker thread,
//! started on first use). [`Published`] owns them: dropping it or calling
//! [`Published::close`] stops them, closes the host ports and cuts the TCP connections and UDP
//! flows in flight.

use std::collections::HashMap;
use std::io;
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener as StdListener, UdpSocket as StdUdpSocket,
};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::{AbortHandle, Aborted, abortable};
use futures_util::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::{Handle, Runtime};
use tokio::task::{JoinHandle, JoinSet};

use super::Error;

/// ECS's range of dynamic host ports for bridge-mode tasks.
pub const EPHEMERAL_PORTS: RangeInclusive<u16> = 49153..=65535;

/// How long a proxy waits for the task to accept a forwarded connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a UDP flow may go without a datagram, either way, before its socket to the task is
/// closed: docker-proxy's conntrack timeout.
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How many UDP flows (client addresses) one mapping keeps at most, each with a socket of its
/// own.
pub const DEFAULT_UDP_MAX_FLOWS: usize = 1024;

/// How long [`Published::close`] waits for the host ports to be closed.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The largest UDP payload, with room to spare: 65507 bytes over IPv4, 65527 over IPv6.
const MAX_DATAGRAM: usize = 65535;

/// How many datagrams from the task a UDP relay passes on for one flow before it turns to the
/// other flows and the clients.
const REPLY_BURST: usize = 64;

/// How often, at most, a UDP relay warns about flows it drops or cannot open.
const UDP_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// A transport protocol, spelled as ECS spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP, the default.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One port to publish: ECS's `portMappings` entry, as far as the host needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port the task listens on.
    pub container_port: u16,
    /// The host port; `None` or `Some(0)` for a dynamic one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// The protocol.
    #[serde(default)]
    pub protocol: Protocol,
}

impl PortMapping {
    /// A TCP mapping of `container_port` to a dynamic host port.
    pub fn tcp(container_port: u16) -> Self {
        PortMapping {
            container_port,
            host_port: None,
            protocol: Protocol::Tcp,
        }
    }

    /// A UDP mapping of `container_port` to a dynamic host port.
    pub fn udp(container_port: u16) -> Self {
        PortMapping {
            container_port,
            host_port: None,
            protocol: Protocol::Udp,
        }
    }

    /// The same mapping with a fixed host port (0 for a dynamic one).
    pub fn with_host_port(mut self, host_port: u16) -> Self {
        self.host_port = Some(host_port);
        self
    }
}

/// A published port: ECS's `networkBindings` entry, serialised with ECS's field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    /// The host address the port is bound on.
    #[serde(rename = "bindIP")]
    pub bind_ip: IpAddr,
    /// The task's port.
    pub container_port: u16,
    /// The host port, dynamic or as asked.
    pub host_port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

/// Publishes task ports on the host. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    bind_ip: IpAddr,
    ephemeral: RangeInclusive<u16>,
    connect_timeout: Duration,
    udp_idle_timeout: Duration,
    udp_max_flows: usize,
    runtime: Option<Handle>,
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher {
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ephemeral: EPHEMERAL_PORTS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            udp_idle_timeout: DEFAULT_UDP_IDLE_TIMEOUT,
            udp_max_flows: DEFAULT_UDP_MAX_FLOWS,
            runtime: None,
        }
    }
}

impl Publisher {
    /// A publisher with the defaults: every host address, ECS's ephemeral range.
    pub fn new() -> Self {
        Self::default()
    }

    /// The host address to bind ports on. Default: `0.0.0.0`.
    pub fn bind_ip(mut self, ip: IpAddr) -> Self {
        self.bind_ip = ip;
        self
    }

    /// The range dynamic host ports are taken from. Default: [`EPHEMERAL_PORTS`].
    pub fn ephemeral_ports(mut self, range: RangeInclusive<u16>) -> Self {
        self.ephemeral = range;
        self
    }

    /// How long a proxy waits for the task to accept a connection before it drops the
    /// client's. Default: [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a UDP flow may go without a datagram, either way, before it is closed.
    /// Default: [`DEFAULT_UDP_IDLE_TIMEOUT`].
    pub fn udp_idle_timeout(mut self, timeout: Duration) -> Self {
        self.udp_idle_timeout = timeout;
        self
    }

    /// How many UDP flows one mapping keeps at most (at least one); a new client beyond that
    /// takes the place of the flow idle the longest. Default: [`DEFAULT_UDP_MAX_FLOWS`].
    pub fn udp_max_flows(mut self, flows: usize) -> Self {
        self.udp_max_flows = flows.max(1);
        self
    }

    /// The runtime the proxies run on. Default: the calling context's, else one of this
    /// module's own.
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Publishes every mapping to `target` (the task's address), all or none: when one
    /// cannot be published, those already bound are closed again.
    ///
    /// # Errors
    /// [`Error::InvalidMapping`] for container port 0;
    /// [`Error::PortUnavailable`] when a fixed host port cannot be bound;
    /// [`Error::NoFreePort`] when no port of the dynamic range is free;
    /// [`Error::ProxyRuntime`] when the proxy runtime cannot start.
    pub fn publish(&self, target: IpAddr, mappings: &[PortMapping]) -> Result<Published, Error> {
        for mapping in mappings {
            if mapping.container_port == 0 {
                return Err(Error::InvalidMapping(
                    "container port 0 is not a port".to_owned(),
                ));
            }
        }
        let (closed_tx, closed_rx) = mpsc::channel();
        let mut published = Published {
            bindings: Vec::with_capacity(mappings.len()),
            proxies: Vec::with_capacity(mappings.len()),
            closed: closed_rx,
        };
        if mappings.is_empty() {
            return Ok(published);
        }
        let handle = self.handle()?;
        let mut sockets = Vec::with_capacity(mappings.len());
        for mapping in mappings {
            let protocol = mapping.protocol;
            let (socket, host_port) = match mapping.host_port {
                Some(port) if port != 0 => (
                    bind(self.bind_ip, port, protocol).map_err(|source| {
                        Error::PortUnavailable {
                            ip: self.bind_ip,
                            port,
                            protocol,
                            source,
                        }
                    })?,
                    port,
                ),
                _ => bind_dynamic(self.bind_ip, &self.ephemeral, protocol)?,
            };
            sockets.push((socket, *mapping, host_port));
        }

        let _context = handle.enter();
        for (socket, mapping, host_port) in sockets {
            let unavailable = |source| Error::PortUnavailable {
                ip: self.bind_ip,
                port: host_port,
                protocol: mapping.protocol,
                source,
            };
            let upstream = SocketAddr::new(target, mapping.container_port);
            let closed = ClosedGuard(closed_tx.clone());
            let proxy = match socket {
                HostSocket::Tcp(listener) => {
                    let listening = Listening {
                        listener: TcpListener::from_std(listener).map_err(unavailable)?,
                        _closed: closed,
                    };
                    handle.spawn(serve(listening, upstream, self.connect_timeout))
                }
                HostSocket::Udp(socket) => {
                    let relaying = Relaying {
                        socket: UdpSocket::from_std(socket).map_err(unavailable)?,
                        _closed: closed,
                    };
                    let limits = UdpLimits {
                        idle_timeout: self.udp_idle_timeout,
                        max_flows: self.udp_max_flows,
                    };
                    handle.spawn(relay(relaying, upstream, limits))
                }
            };
            published.proxies.push(proxy);
            published.bindings.push(NetworkBinding {
                bind_ip: self.bind_ip,
                container_port: mapping.container_port,
                host_port,
                protocol: mapping.protocol,
            });
            tracing::debug!(host_port, protocol = %mapping.protocol, %upstream, "published port");
        }
        Ok(published)
    }

    fn handle(&self) -> Result<Handle, Error> {
        if let Some(handle) = &self.runtime {
            return Ok(handle.clone());
        }
        if let Ok(handle) = Handle::try_current() {
            return Ok(handle);
        }
        static RUNTIME: OnceLock<Runtime> = OnceLock::new();
        if let Some(runtime) = RUNTIME.get() {
            return Ok(runtime.handle().clone());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("berth-proxy")
            .enable_all()
            .build()
            .map_err(Error::ProxyRuntime)?;
        // Another thread may have won the race; its runtime is kept and this one dropped.
        let _ = RUNTIME.set(runtime);
        Ok(RUNTIME
            .get()
            .expect("the runtime was just set")
            .handle()
            .clone())
    }
}

/// Publishes `mappings` to `target` with a default [`Publisher`].
pub fn publish(target: IpAddr, mappings: &[PortMapping]) -> Result<Published, Error> {
    Publisher::new().publish(target, mappings)
}

/// The published ports of one task. Dropping it stops the proxies.
#[derive(Debug)]
pub struct Published {
    bindings: Vec<NetworkBinding>,
    proxies: Vec<JoinHandle<()>>,
    closed: mpsc::Receiver<()>,
}

impl Published {
    /// The bindings, in the order of the mappings.
    pub fn bindings(&self) -> &[NetworkBinding] {
        &self.bindings
    }

    /// Stops the proxies. Called outside an async context, it returns once the host ports are
    /// closed (or after two seconds); inside one it cannot wait without blocking the runtime,
    /// so it returns at once and the ports close as soon as the runtime gets to it: use
    /// [`Published::shutdown`] there.
    pub fn close(self) {
        self.abort();
        if Handle::try_current().is_err() {
            let deadline = Instant::now() + CLOSE_WAIT;
            for _ in 0..self.proxies.len() {
                let left = deadline.saturating_duration_since(Instant::now());
                if self.closed.recv_timeout(left).is_err() {
                    break;
                }
            }
        }
    }

    /// Stops the proxies and waits until the host ports are closed.
    pub async fn shutdown(mut self) {
        self.abort();
        for proxy in std::mem::take(&mut self.proxies) {
            let _ = proxy.await;
        }
    }

    fn abort(&self) {
        for proxy in &self.proxies {
            proxy.abort();
        }
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Tells [`Published::close`] that a proxy's host socket is gone.
struct ClosedGuard(mpsc::Sender<()>);

impl Drop for ClosedGuard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// A bound host port, not yet handed to the runtime.
enum HostSocket {
    Tcp(StdListener),
    Udp(StdUdpSocket),
}

/// Binds a host port for `protocol`, non-blocking; the error is the kernel's.
fn bind(ip: IpAddr, port: u16, protocol: Protocol) -> io::Result<HostSocket> {
    let addr = SocketAddr::new(ip, port);
    Ok(match protocol {
        Protocol::Tcp => {
            let listener = StdListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            HostSocket::Tcp(listener)
        }
        Protocol::Udp => {
            let socket = StdUdpSocket::bind(addr)?;
            socket.set_nonblocking(true)?;
            HostSocket::Udp(socket)
        }
    })
}

/// Binds the next port of `range` free for `protocol`, from this process's cursor.
fn bind_dynamic(
    ip: IpAddr,
    range: &RangeInclusive<u16>,
    protocol: Protocol,
) -> Result<(HostSocket, u16), Error> {
    let (first, last) = (*range.start(), *range.end());
    let no_free = || Error::NoFreePort {
        ip,
        protocol,
        first,
        last,
    };
    if first > last {
        return Err(no_free());
    }
    let len = u32::from(last - first) + 1;
    for _ in 0..len {
        let offset = cursor().fetch_add(1, Ordering::Relaxed) % len;
        let port = first + offset as u16;
        match bind(ip, port, protocol) {
            Ok(socket) => return Ok((socket, port)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
                ) =>
            {
                continue;
            }
            Err(source) => {
                return Err(Error::PortUnavailable {
                    ip,
                    port,
                    protocol,
                    source,
                });
            }
        }
    }
    Err(no_free())
}

/// The process's dynamic-port cursor, started at a point derived from the process id and the
/// clock, so that processes publishing at once try different ports first.
fn cursor() -> &'static AtomicU32 {
    static CURSOR: OnceLock<AtomicU32> = OnceLock::new();
    CURSOR.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        AtomicU32::new(std::process::id().wrapping_mul(7919) ^ nanos)
    })
}

/// A proxy's listener and the guard that reports it closed. Fields drop in order: the
/// listener is closed before the guard speaks.
struct Listening {
    listener: TcpListener,
    _closed: ClosedGuard,
}

/// Accepts connections and forwards each to `upstream` until the task is aborted, which drops
/// the listener and every connection in flight.
async fn serve(listening: Listening, upstream: SocketAddr, connect_timeout: Duration) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listening.listener.accept() => match accepted {
                Ok((client, peer)) => {
                    connections.spawn(forward(client, peer, upstream, connect_timeout));
                }
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    tracing::warn!(%upstream, error = %e, "port proxy cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn forward(
    mut client: TcpStream,
    peer: SocketAddr,
    upstream: SocketAddr,
    connect_timeout: Duration,
) {
    let mut task = match tokio::time::timeout(connect_timeout, TcpStream::connect(upstream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, %upstream, error = %e, "port proxy cannot reach the task");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, %upstream, "port proxy timed out reaching the task");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = task.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut task).await {
        tracing::debug!(%peer, %upstream, error = %e, "port proxy connection ended");
    }
}

/// A UDP relay's host socket and the guard that reports it closed. Fields drop in order: the
/// socket is closed before the guard speaks.
struct Relaying {
    socket: UdpSocket,
    _closed: ClosedGuard,
}

/// The limits of a UDP relay's flows.
#[derive(Debug, Clone, Copy)]
struct UdpLimits {
    idle_timeout: Duration,
    max_flows: usize,
}

/// One client's flow through a UDP relay.
struct Flow {
    /// Tells this flow apart from a later one of the same client.
    id: u64,
    /// Bound on an ephemeral port and connected to the task: the task's replies to this
    /// client, and nothing else, arrive on it.
    upstream: Arc<UdpSocket>,
    /// The last datagram either way.
    last_active: tokio::time::Instant,
    /// Cancels the flow's pending [`watch`].
    watch: AbortHandle,
}

/// What [`watch`] saw of a flow's socket.
enum Watched {
    /// A datagram from the task may be waiting.
    Readable,
    /// Nothing came from the task before the deadline.
    Deadline,
    /// The socket failed.
    Failed(io::Error),
}

/// Waits until a flow's socket has something to read, or until `deadline`. The relay reads the
/// datagrams itself, into its one buffer, so an idle flow holds no buffer of its own.
async fn watch(
    client: SocketAddr,
    id: u64,
    upstream: Arc<UdpSocket>,
    deadline: tokio::time::Instant,
) -> (SocketAddr, u64, Watched) {
    let watched = match tokio::time::timeout_at(deadline, upstream.readable()).await {
        Ok(Ok(())) => Watched::Readable,
        Ok(Err(e)) => Watched::Failed(e),
        Err(_) => Watched::Deadline,
    };
    (client, id, watched)
}

/// What woke a UDP relay.
enum Event {
    /// A datagram from a client, of this length, in the relay's buffer, or the host socket's
    /// error.
    Client(io::Result<(usize, SocketAddr)>),
    /// A flow's watch ended, or was aborted.
    Flow(Result<(SocketAddr, u64, Watched), Aborted>),
}

/// Relays datagrams between the clients of the host port and `upstream` until the task is
/// aborted, which drops the host socket and every flow's socket.
///
/// Everything runs on this one task: the host socket, the flows and their watches are its
/// locals, so they are all closed the moment it is dropped.
async fn relay(relaying: Relaying, upstream: SocketAddr, limits: UdpLimits) {
    let host = &relaying.socket;
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut watches = FuturesUnordered::new();
    let mut next_id: u64 = 0;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut dropped = Throttled::default();
    let mut unopened = Throttled::default();
    loop {
        let event = tokio::select! {
            received = host.recv_from(&mut buf) => Event::Client(received),
            Some(watched) = watches.next(), if !watches.is_empty() => Event::Flow(watched),
        };
        match event {
            Event::Client(Ok((len, client))) => {
                let now = tokio::time::Instant::now();
                if !flows.contains_key(&client) {
                    if flows.len() >= limits.max_flows {
                        evict_idlest(&mut flows, upstream, limits.max_flows, &mut dropped);
                    }
                    let socket = match connect_upstream(upstream) {
                        Ok(socket) => Arc::new(socket),
                        Err(e) => {
                            if let Some(count) = unopened.count(now) {
                                tracing::warn!(
                                    %client, %upstream, error = %e, count,
                                    "UDP port proxy cannot open flows; datagrams dropped"
                                );
                            }
                            continue;
                        }
                    };
                    next_id += 1;
                    let (watching, handle) = abortable(watch(
                        client,
                        next_id,
                        Arc::clone(&socket),
                        now + limits.idle_timeout,
                    ));
                    watches.push(watching);
                    tracing::debug!(%client, %upstream, "UDP flow opened");
                    flows.insert(
                        client,
                        Flow {
                            id: next_id,
                            upstream: socket,
                            last_active: now,
                            watch: handle,
                        },
                    );
                }
                let Some(flow) = flows.get_mut(&client) else {
                    continue;
                };
                flow.last_active = now;
                if let Err(e) = flow.upstream.send(&buf[..len]).await {
                    // ECONNREFUSED here reports an earlier datagram that found no listener.
                    tracing::debug!(
                        %client, %upstream, error = %e,
                        "UDP port proxy cannot send to the task"
                    );
                }
            }
            Event::Client(Err(e)) => {
                // Out of memory, most likely: back off instead of spinning.
                tracing::warn!(%upstream, error = %e, "UDP port proxy cannot receive");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // The flow was dropped: its socket went with the watch.
            Event::Flow(Err(Aborted)) => {}
            Event::Flow(Ok((client, id, watched))) => {
                let Some(flow) = flows.get_mut(&client).filter(|flow| flow.id == id) else {
                    continue;
                };
                let ended = match watched {
                    Watched::Readable => pass_replies(host, flow, client, &mut buf).await.err(),
                    Watched::Deadline => {
                        if flow.last_active + limits.idle_timeout <= tokio::time::Instant::now() {
                            tracing::debug!(%client, %upstream, "UDP flow idle, closed");
                            flows.remove(&client);
                            continue;
                        }
                        None
                    }
                    Watched::Failed(e) => Some(e),
                };
                if let Some(e) = ended {
                    tracing::debug!(%client, %upstream, error = %e, "UDP flow failed, closed");
                    flows.remove(&client);
                    continue;
                }
                let (watching, handle) = abortable(watch(
                    client,
                    id,
                    Arc::clone(&flow.upstream),
                    flow.last_active + limits.idle_timeout,
                ));
                watches.push(watching);
                flow.watch = handle;
            }
        }
    }
}

/// Sends what the task wrote on `flow` to `client`, from the host port, up to [`REPLY_BURST`]
/// datagrams. An error is the flow's socket's, and ends the flow.
async fn pass_replies(
    host: &UdpSocket,
    flow: &mut Flow,
    client: SocketAddr,
    buf: &mut [u8],
) -> io::Result<()> {
    for _ in 0..REPLY_BURST {
        match flow.upstream.try_recv(buf) {
            Ok(len) => {
                flow.last_active = tokio::time::Instant::now();
                if let Err(e) = host.send_to(&buf[..len], client).await {
                    tracing::debug!(
                        %client, error = %e,
                        "UDP port proxy cannot reply to the client"
                    );
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            // An ICMP port unreachable from the task, for a datagram that found no listener:
            // the task may listen again, so the flow stays, as in docker-proxy.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Drops the flow that has gone longest without a datagram, to make room for a new client.
fn evict_idlest(
    flows: &mut HashMap<SocketAddr, Flow>,
    upstream: SocketAddr,
    max_flows: usize,
    dropped: &mut Throttled,
) {
    let Some(idlest) = flows
        .iter()
        .min_by_key(|(_, flow)| flow.last_active)
        .map(|(client, _)| *client)
    else {
        return;
    };
    if let Some(flow) = flows.remove(&idlest) {
        flow.watch.abort();
    }
    tracing::debug!(client = %idlest, %upstream, "UDP flow dropped for a new client");
    if let Some(count) = dropped.count(tokio::time::Instant::now()) {
        tracing::warn!(
            %upstream, max_flows, count,
            "UDP port proxy has too many clients; dropped the flows idle the longest"
        );
    }
}

/// A socket of its own for a new flow, bound on an ephemeral port and connected to `upstream`.
fn connect_upstream(upstream: SocketAddr) -> io::Result<UdpSocket> {
    let local = match upstream {
        SocketAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        SocketAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
    };
    let socket = StdUdpSocket::bind(local)?;
    socket.connect(upstream)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Counts events that each deserve a warning, and says when to give one: at the first, then at
/// most once every [`UDP_WARN_INTERVAL`], so that a flood does not flood the log too.
#[derive(Default)]
struct Throttled {
    last_warned: Option<tokio::time::Instant>,
    since: u64,
}

impl Throttled {
    /// Counts one event; returns how many to warn about now (this one and those not yet
    /// warned about), if it is time to warn.
    fn count(&mut self, now: tokio::time::Instant) -> Option<u64> {
        self.since += 1;
        if self
            .last_warned
            .is_some_and(|last| now.duration_since(last) < UDP_WARN_INTERVAL)
        {
            return None;
        }
        self.last_warned = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::thread::JoinHandle as ThreadHandle;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// A publisher on 127.0.0.1 only, so that tests do not open ports to the network.
    fn local() -> Publisher {
        Publisher::new().bind_ip(LOCALHOST)
    }

    #[test]
    fn mappings_and_bindings_use_ecs_field_names() {
        let mapping: PortMapping =
            serde_json::from_str(r#"{"containerPort":80,"hostPort":0,"protocol":"tcp"}"#).unwrap();
        assert_eq!(mapping, PortMapping::tcp(80).with_host_port(0));
        let mapping: PortMapping = serde_json::from_str(r#"{"containerPort":53}"#).unwrap();
        assert_eq!(mapping, PortMapping::tcp(53));
        let mapping: PortMapping =
            serde_json::from_str(r#"{"containerPort":53,"hostPort":5353,"protocol":"udp"}"#)
                .unwrap();
        assert_eq!(mapping, PortMapping::udp(53).with_host_port(5353));
        let binding = NetworkBinding {
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            container_port: 80,
            host_port: 49153,
            protocol: Protocol::Tcp,
        };
        assert_eq!(
            serde_json::to_value(binding).unwrap(),
            serde_json::json!({"bindIP":"0.0.0.0","containerPort":80,"hostPort":49153,"protocol":"tcp"})
        );
        let binding = NetworkBinding {
            protocol: Protocol::Udp,
            ..binding
        };
        assert_eq!(serde_json::to_value(binding).unwrap()["protocol"], "udp");
    }

    #[test]
    fn port_zero_is_refused_before_anything_is_bound() {
        let port = free_port(Protocol::Udp);
        let err = local()
            .publish(
                LOCALHOST,
                &[
                    PortMapping::udp(53).with_host_port(port),
                    PortMapping::tcp(0),
                ],
            )
            .unwrap_err();
        assert!(matches!(err, Error::InvalidMapping(_)), "{err}");
        StdUdpSocket::bind((Ipv4Addr::LOCALHOST, port)).expect("the UDP port was bound");
    }

    #[test]
    fn a_mapping_that_cannot_be_bound_names_its_protocol_and_releases_the_others() {
        let held = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_port = held.local_addr().unwrap().port();
        let tcp_port = free_port(Protocol::Tcp);
        let err = local()
            .publish(
                LOCALHOST,
                &[
                    PortMapping::tcp(80).with_host_port(tcp_port),
                    PortMapping::udp(53).with_host_port(udp_port),
                ],
            )
            .unwrap_err();
        match &err {
            Error::PortUnavailable {
                port,
                protocol: Protocol::Udp,
                ..
            } => assert_eq!(*port, udp_port),
            other => panic!("expected PortUnavailable for UDP, got {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with(&format!("host port {udp_port}/udp on 127.0.0.1 ")),
            "{err}"
        );
        StdListener::bind((Ipv4Addr::LOCALHOST, tcp_port)).expect("the TCP port was kept");
    }

    #[test]
    fn dynamic_ports_skip_ports_in_use_and_stay_in_range() {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let (_held, port) = hold_any_port(protocol);
            // A range holding the busy port and the next: every pick is the next one.
            let Some(next) = port.checked_add(1) else {
                continue;
            };
            let range = port..=next;
            for _ in 0..4 {
                match bind_dynamic(LOCALHOST, &range, protocol) {
                    Ok((socket, picked)) => {
                        assert_eq!(picked, next);
                        let is_udp = matches!(socket, HostSocket::Udp(_));
                        assert_eq!(is_udp, protocol == Protocol::Udp);
                    }
                    // The next port happens to be busy too: then nothing in the range is free.
                    Err(Error::NoFreePort {
                        first,
                        last,
                        protocol: reported,
                        ..
                    }) => {
                        assert_eq!((first, last, reported), (port, next, protocol));
                        assert!(bind(LOCALHOST, next, protocol).is_err());
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
            }
            assert!(matches!(
                bind_dynamic(LOCALHOST, &(port..=port), protocol),
                Err(Error::NoFreePort { .. })
            ));
        }
    }

    #[test]
    fn a_port_held_for_tcp_is_still_free_for_udp() {
        let (_held, port) = hold_any_port(Protocol::Tcp);
        match bind_dynamic(LOCALHOST, &(port..=port), Protocol::Udp) {
            Ok((HostSocket::Udp(socket), picked)) => {
                assert_eq!(picked, port);
                assert_eq!(socket.local_addr().unwrap().port(), port);
            }
            Ok((HostSocket::Tcp(_), _)) => panic!("a UDP mapping got a TCP socket"),
            // Something else holds the UDP port of that number.
            Err(Error::NoFreePort { .. }) => {
                assert!(StdUdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_err());
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn a_published_port_forwards_both_ways_and_closes() {
        let upstream = StdListener::bind("127.0.0.1:0").unwrap();
        let container_port = upstream.local_addr().unwrap().port();
        let echo = std::thread::spawn(move || {
            let (mut conn, _) = upstream.accept().unwrap();
            let mut buf = Vec::new();
            conn.read_to_end(&mut buf).unwrap(); // until the client's half-close
            conn.write_all(&buf).unwrap();
        });
        let published = local()
            .publish(LOCALHOST, &[PortMapping::tcp(container_port)])
            .unwrap();
        let binding = published.bindings()[0];
        assert!(EPHEMERAL_PORTS.contains(&binding.host_port));
        assert_eq!(binding.container_port, container_port);

        assert_eq!(
            tcp_exchange(binding.host_port, "hello through the proxy"),
            "hello through the proxy"
        );
        echo.join().unwrap();

        published.close();
        assert!(
            std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, binding.host_port)).is_err(),
            "the host port is still open after close"
        );
    }

    #[test]
    fn udp_replies_go_back_to_the_client_that_asked() {
        let echo = UdpEcho::start();
        let published = local()
            .publish(LOCALHOST, &[PortMapping::udp(echo.port)])
            .unwrap();
        let binding = published.bindings()[0];
        assert_eq!(binding.protocol, Protocol::Udp);
        assert_eq!(binding.container_port, echo.port);
        let host_port = binding.host_port;

        let a = client();
        let b = client();
        // Interleaved, so that each reply could go astray if flows were mixed up.
        let (a_peer, reply) = ask(&a, host_port, "a1");
        assert_eq!(reply, "a1");
        let (b_peer, reply) = ask(&b, host_port, "b1");
        assert_eq!(reply, "b1");
        for i in 2..6 {
            let (peer, reply) = ask(&a, host_port, &format!("a{i}"));
            assert_eq!((peer, reply.as_str()), (a_peer, format!("a{i}").as_str()));
            let (peer, reply) = ask(&b, host_port, &format!("b{i}"));
            assert_eq!((peer, reply.as_str()), (b_peer, format!("b{i}").as_str()));
        }
        // One socket of its own per client, none of them the client's own address.
        assert_ne!(a_peer, b_peer);
        assert_ne!(a_peer, a.local_addr().unwrap());
        assert_ne!(b_peer, b.local_addr().unwrap());

        // Several datagrams in flight at once from both clients: each gets all of its own.
        for i in 0..20 {
            send(&a, host_port, &format!("burst-a{i}"));
            send(&b, host_port, &format!("burst-b{i}"));
        }
        for (socket, name, peer) in [(&a, "a", a_peer), (&b, "b", b_peer)] {
            let mut got: Vec<String> = (0..20)
                .map(|_| {
                    let (seen, reply) = receive(socket, host_port);
                    assert_eq!(seen, peer);
                    reply
                })
                .collect();
            got.sort();
            let mut expected: Vec<String> = (0..20).map(|i| format!("burst-{name}{i}")).collect();
            expected.sort();
            assert_eq!(got, expected);
        }
        published.close();
        echo.stop();
    }

    #[test]
    fn a_dynamic_udp_port_comes_from_the_ephemeral_range_and_is_released_on_close() {
        let echo = UdpEcho::start();
        let published = local()
            .publish(LOCALHOST, &[PortMapping::udp(echo.port).with_host_port(0)])
            .unwrap();
        let host_port = published.bindings()[0].host_port;
        assert!(
            EPHEMERAL_PORTS.contains(&host_port),
            "{host_port} is not in ECS's ephemeral range"
        );
        assert_eq!(ask(&client(), host_port, "ping").1, "ping");
        assert_eq!(
            StdUdpSocket::bind((Ipv4Addr::LOCALHOST, host_port))
                .unwrap_err()
                .kind(),
            io::ErrorKind::AddrInUse
        );

        published.close();
        StdUdpSocket::bind((Ipv4Addr::LOCALHOST, host_port))
            .expect("the UDP host port is still bound after close");
        echo.stop();
    }

    #[test]
    fn udp_relays_stop_when_published_is_dropped_inside_a_runtime() {
        let echo = UdpEcho::start();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let host_port = runtime.block_on(async {
            let published = local()
                .publish(LOCALHOST, &[PortMapping::udp(echo.port)])
                .unwrap();
            let host_port = published.bindings()[0].host_port;
            let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            a.send_to(b"async", (Ipv4Addr::LOCALHOST, host_port))
                .await
                .unwrap();
            let mut buf = [0u8; 128];
            let (len, _) = tokio::time::timeout(Duration::from_secs(5), a.recv_from(&mut buf))
                .await
                .expect("no reply through the relay")
                .unwrap();
            assert!(buf[..len].ends_with(b"|async"));
            published.shutdown().await;
            host_port
        });
        StdUdpSocket::bind((Ipv4Addr::LOCALHOST, host_port))
            .expect("the UDP host port is still bound after shutdown");
        echo.stop();
    }

    #[test]
    fn tcp_and_udp_mappings_share_a_host_port() {
        let echo = UdpEcho::start();
        let upstream = StdListener::bind("127.0.0.1:0").unwrap();
        let tcp_container = upstream.local_addr().unwrap().port();
        let tcp_echo = std::thread::spawn(move || {
            let (mut conn, _) = upstream.accept().unwrap();
            let mut buf = Vec::new();
            conn.read_to_end(&mut buf).unwrap();
            conn.write_all(&buf).unwrap();
        });
        let port = free_port_for_both();
        let published = local()
            .publish(
                LOCALHOST,
                &[
                    PortMapping::tcp(tcp_container).with_host_port(port),
                    PortMapping::udp(echo.port).with_host_port(port),
                ],
            )
            .unwrap();
        let bindings = published.bindings();
        assert_eq!(
            (bindings[0].host_port, bindings[0].protocol),
            (port, Protocol::Tcp)
        );
        assert_eq!(
            (bindings[1].host_port, bindings[1].protocol),
            (port, Protocol::Udp)
        );

        assert_eq!(ask(&client(), port, "over udp").1, "over udp");
        assert_eq!(tcp_exchange(port, "over tcp"), "over tcp");
        tcp_echo.join().unwrap();

        published.close();
        StdListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the TCP port is still bound");
        StdUdpSocket::bind((Ipv4Addr::LOCALHOST, port)).expect("the UDP port is still bound");
        echo.stop();
    }

    #[test]
    fn an_idle_udp_flow_is_closed_and_an_active_one_is_kept() {
        let echo = UdpEcho::start();
        let idle = Duration::from_millis(1000);
        let published = local()
            .udp_idle_timeout(idle)
            .publish(LOCALHOST, &[PortMapping::udp(echo.port)])
            .unwrap();
        let host_port = published.bindings()[0].host_port;
        let a = client();

        // Active: the same flow throughout, well past the idle timeout.
        let (first, _) = ask(&a, host_port, "start");
        for _ in 0..12 {
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(ask(&a, host_port, "again").0, first);
        }
        // Datagrams from the client alone, unanswered, keep the flow too.
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(200));
            send(&a, host_port, "quiet");
        }
        assert_eq!(ask(&a, host_port, "answered").0, first);
        // Idle: the flow is closed, and the client's next datagram opens another.
        std::thread::sleep(idle * 2);
        let (next, reply) = ask(&a, host_port, "back");
        assert_eq!(reply, "back");
        assert_ne!(next, first, "the idle flow was kept");
        published.close();
        echo.stop();
    }

    #[test]
    fn beyond_the_flow_limit_the_idlest_flow_is_dropped() {
        let echo = UdpEcho::start();
        let published = local()
            .udp_max_flows(2)
            .publish(LOCALHOST, &[PortMapping::udp(echo.port)])
            .unwrap();
        let host_port = published.bindings()[0].host_port;
        let (a, b, c) = (client(), client(), client());

        let (a_peer, _) = ask(&a, host_port, "a");
        let (b_peer, _) = ask(&b, host_port, "b");
        // a is now the more recent of the two; b is the idlest when c comes.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(ask(&a, host_port, "a").0, a_peer);
        std::thread::sleep(Duration::from_millis(20));
        let (c_peer, reply) = ask(&c, host_port, "c");
        assert_eq!(reply, "c");
        assert!(c_peer != a_peer && c_peer != b_peer);

        assert_eq!(ask(&a, host_port, "a").0, a_peer, "a's flow was dropped");
        assert_eq!(ask(&c, host_port, "c").0, c_peer, "c's flow was dropped");
        // b's flow is gone: b is served again, through a flow of its own.
        let (b_again, reply) = ask(&b, host_port, "b");
        assert_eq!(reply, "b");
        assert_ne!(b_again, b_peer, "b's flow was kept beyond the limit");
        published.close();
        echo.stop();
    }

    // -----------------------------------------------------------------------------------------
    // Helpers

    /// A UDP echo server on 127.0.0.1 standing for the task: it answers each datagram with
    /// `<sender>|<datagram>`, so that a client sees which flow carried it, except those that
    /// start with `quiet`, which it leaves unanswered.
    struct UdpEcho {
        port: u16,
        thread: ThreadHandle<()>,
    }

    impl UdpEcho {
        fn start() -> UdpEcho {
            let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
            let port = socket.local_addr().unwrap().port();
            socket
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let thread = std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while let Ok((len, peer)) = socket.recv_from(&mut buf) {
                    if &buf[..len] == b"stop" {
                        return;
                    }
                    if buf[..len].starts_with(b"quiet") {
                        continue;
                    }
                    let mut reply = format!("{peer}|").into_bytes();
                    reply.extend_from_slice(&buf[..len]);
                    socket.send_to(&reply, peer).unwrap();
                }
            });
            UdpEcho { port, thread }
        }

        /// Stops the server, talking to it directly.
        fn stop(self) {
            client()
                .send_to(b"stop", (Ipv4Addr::LOCALHOST, self.port))
                .unwrap();
            self.thread.join().unwrap();
        }
    }

    fn client() -> StdUdpSocket {
        let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
    }

    fn send(socket: &StdUdpSocket, host_port: u16, message: &str) {
        socket
            .send_to(message.as_bytes(), (Ipv4Addr::LOCALHOST, host_port))
            .unwrap();
    }

    /// One reply, which must come from the host port: the address the echo server saw, and
    /// what it echoed.
    fn receive(socket: &StdUdpSocket, host_port: u16) -> (SocketAddr, String) {
        let mut buf = [0u8; 2048];
        let (len, from) = socket
            .recv_from(&mut buf)
            .expect("no reply through the relay");
        assert_eq!(from, SocketAddr::new(LOCALHOST, host_port));
        let reply = std::str::from_utf8(&buf[..len]).unwrap();
        let (peer, message) = reply.split_once('|').unwrap();
        (peer.parse().unwrap(), message.to_owned())
    }

    fn ask(socket: &StdUdpSocket, host_port: u16, message: &str) -> (SocketAddr, String) {
        send(socket, host_port, message);
        receive(socket, host_port)
    }

    fn tcp_exchange(host_port: u16, message: &str) -> String {
        let mut conn = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, host_port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(message.as_bytes()).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        reply
    }

    /// A port of 127.0.0.1 that something of `protocol` holds, and the holder.
    fn hold_any_port(protocol: Protocol) -> (HostSocket, u16) {
        let socket = bind(LOCALHOST, 0, protocol).unwrap();
        let port = match &socket {
            HostSocket::Tcp(listener) => listener.local_addr().unwrap().port(),
            HostSocket::Udp(socket) => socket.local_addr().unwrap().port(),
        };
        (socket, port)
    }

    /// A port of 127.0.0.1 free for `protocol` a moment ago.
    fn free_port(protocol: Protocol) -> u16 {
        hold_any_port(protocol).1
    }

    /// A port of 127.0.0.1 free for both TCP and UDP a moment ago.
    fn free_port_for_both() -> u16 {
        for _ in 0..100 {
            let (_tcp, port) = hold_any_port(Protocol::Tcp);
            if StdUdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return port;
            }
        }
        panic!("no port of 127.0.0.1 is free for both TCP and UDP");
    }
}
