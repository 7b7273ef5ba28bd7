//! Port publishing for bridge-mode tasks: a task's `containerPort` reached through a port of
//! the host, as Docker's `-p` and ECS's `portMappings` in `bridge` mode give it.
//!
//! Each TCP mapping gets a userspace proxy, as Docker's `docker-proxy` is: a listener on the
//! host port (on [`Publisher::bind_ip`], by default every address, `0.0.0.0`) whose
//! connections are each forwarded to `<task ip>:<containerPort>` by copying bytes both ways,
//! half-closes included. A proxy, unlike iptables DNAT, needs nothing of the host's firewall,
//! works for connections from the host itself (`127.0.0.1:<hostPort>`), and goes away with
//! the process that owns the task, leaving no rule behind; its cost is a copy through user
//! space, which the tasks' load balancer pays anyway.
//!
//! A mapping without a host port, or with host port 0, gets a dynamic one from ECS's
//! ephemeral range [`EPHEMERAL_PORTS`] (49153-65535). Ports are tried in turn from a cursor
//! that starts at a point of its own in each process and moves on after every port handed
//! out, so a port just released is not handed out again at once; a port that something on the
//! host holds fails to bind and is skipped. UDP mappings are refused for now.
//!
//! The proxies run on the tokio runtime given with [`Publisher::runtime`], else on the runtime
//! of the calling context, else on a small runtime of this module's own (one worker thread,
//! started on first use). [`Published`] owns them: dropping it or calling
//! [`Published::close`] stops them, closes the host ports and cuts the connections in flight.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Handle, Runtime};
use tokio::task::{JoinHandle, JoinSet};

use super::Error;

/// ECS's range of dynamic host ports for bridge-mode tasks.
pub const EPHEMERAL_PORTS: RangeInclusive<u16> = 49153..=65535;

/// How long a proxy waits for the task to accept a forwarded connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Published::close`] waits for the host ports to be closed.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A transport protocol, spelled as ECS spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP, the default.
    #[default]
    Tcp,
    /// UDP: not supported by the publisher yet.
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
    runtime: Option<Handle>,
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher {
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ephemeral: EPHEMERAL_PORTS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
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
    /// [`Error::InvalidMapping`] for container port 0; [`Error::UnsupportedProtocol`] for UDP;
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
            if mapping.protocol != Protocol::Tcp {
                return Err(Error::UnsupportedProtocol {
                    protocol: mapping.protocol,
                    container_port: mapping.container_port,
                });
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
        let mut listeners = Vec::with_capacity(mappings.len());
        for mapping in mappings {
            let (listener, host_port) = match mapping.host_port {
                Some(port) if port != 0 => (
                    bind(self.bind_ip, port).map_err(|source| Error::PortUnavailable {
                        ip: self.bind_ip,
                        port,
                        source,
                    })?,
                    port,
                ),
                _ => bind_dynamic(self.bind_ip, &self.ephemeral)?,
            };
            listeners.push((listener, *mapping, host_port));
        }

        let _context = handle.enter();
        for (listener, mapping, host_port) in listeners {
            let listener =
                TcpListener::from_std(listener).map_err(|source| Error::PortUnavailable {
                    ip: self.bind_ip,
                    port: host_port,
                    source,
                })?;
            let upstream = SocketAddr::new(target, mapping.container_port);
            let listening = Listening {
                listener,
                _closed: ClosedGuard(closed_tx.clone()),
            };
            published
                .proxies
                .push(handle.spawn(serve(listening, upstream, self.connect_timeout)));
            published.bindings.push(NetworkBinding {
                bind_ip: self.bind_ip,
                container_port: mapping.container_port,
                host_port,
                protocol: mapping.protocol,
            });
            tracing::debug!(host_port, %upstream, "published port");
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

/// Tells [`Published::close`] that a proxy's listener is gone.
struct ClosedGuard(mpsc::Sender<()>);

impl Drop for ClosedGuard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Binds a listener; the error is the kernel's.
fn bind(ip: IpAddr, port: u16) -> io::Result<StdListener> {
    let listener = StdListener::bind(SocketAddr::new(ip, port))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Binds the next free port of `range`, from this process's cursor.
fn bind_dynamic(ip: IpAddr, range: &RangeInclusive<u16>) -> Result<(StdListener, u16), Error> {
    let (first, last) = (*range.start(), *range.end());
    let no_free = || Error::NoFreePort { ip, first, last };
    if first > last {
        return Err(no_free());
    }
    let len = u32::from(last - first) + 1;
    for _ in 0..len {
        let offset = cursor().fetch_add(1, Ordering::Relaxed) % len;
        let port = first + offset as u16;
        match bind(ip, port) {
            Ok(listener) => return Ok((listener, port)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
                ) =>
            {
                continue;
            }
            Err(source) => return Err(Error::PortUnavailable { ip, port, source }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn mappings_and_bindings_use_ecs_field_names() {
        let mapping: PortMapping =
            serde_json::from_str(r#"{"containerPort":80,"hostPort":0,"protocol":"tcp"}"#).unwrap();
        assert_eq!(mapping, PortMapping::tcp(80).with_host_port(0));
        let mapping: PortMapping = serde_json::from_str(r#"{"containerPort":53}"#).unwrap();
        assert_eq!(mapping, PortMapping::tcp(53));
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
    }

    #[test]
    fn udp_and_port_zero_are_refused_before_anything_is_bound() {
        let target = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let udp = PortMapping {
            protocol: Protocol::Udp,
            ..PortMapping::tcp(53)
        };
        let err = publish(target, &[PortMapping::tcp(80), udp]).unwrap_err();
        assert!(matches!(
            err,
            Error::UnsupportedProtocol {
                protocol: Protocol::Udp,
                container_port: 53
            }
        ));
        assert_eq!(
            err.to_string(),
            "udp port mappings are not supported yet (container port 53)"
        );
        assert!(matches!(
            publish(target, &[PortMapping::tcp(0)]),
            Err(Error::InvalidMapping(_))
        ));
    }

    #[test]
    fn dynamic_ports_skip_ports_in_use_and_stay_in_range() {
        let held = StdListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        // A range holding the busy port and the next: every pick is the next one.
        let Some(next) = port.checked_add(1) else {
            return;
        };
        let range = port..=next;
        for _ in 0..4 {
            match bind_dynamic(ip, &range) {
                Ok((_listener, picked)) => assert_eq!(picked, next),
                // The next port happens to be busy too: then nothing in the range is free.
                Err(Error::NoFreePort { first, last, .. }) => {
                    assert_eq!((first, last), (port, next));
                    assert!(StdListener::bind((Ipv4Addr::LOCALHOST, next)).is_err());
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert!(matches!(
            bind_dynamic(ip, &(port..=port)),
            Err(Error::NoFreePort { .. })
        ));
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
        let published = Publisher::new()
            .bind_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .publish(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                &[PortMapping::tcp(container_port)],
            )
            .unwrap();
        let binding = published.bindings()[0];
        assert!(EPHEMERAL_PORTS.contains(&binding.host_port));
        assert_eq!(binding.container_port, container_port);

        let mut client =
            std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, binding.host_port)).unwrap();
        client.write_all(b"hello through the proxy").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "hello through the proxy");
        echo.join().unwrap();

        published.close();
        assert!(
            std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, binding.host_port)).is_err(),
            "the host port is still open after close"
        );
    }
}
