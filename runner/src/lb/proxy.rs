//! The listener and the per-connection proxy.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::copy_bidirectional_with_sizes;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::Shared;
use super::splice::{self, Pipe};
use super::table::{Key, Picked};

/// How long the listener pauses after an accept error that is not about one connection
/// (out of file descriptors, out of memory), so as not to spin while it lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections until the load balancer shuts down, each served on a task of its own.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = shared.root.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                shared.tracker.spawn(serve(shared.clone(), client, peer));
            }
            // The client gave up between the handshake and accept: nothing to serve.
            Err(e) if is_per_connection(&e) => {
                tracing::debug!(error = %e, "accept failed for one connection");
            }
            Err(e) => {
                tracing::error!(error = %e, "accept failed; pausing the listener");
                tokio::select! {
                    () = shared.root.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    tracing::debug!(addr = ?listener.local_addr().ok(), "listener closed");
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Counts a connection as outstanding on its target until it is dropped.
struct Outstanding {
    shared: Arc<Shared>,
    key: Key,
    armed: bool,
    /// The connection ends because its target's connections were cut.
    cut: bool,
}

impl Outstanding {
    /// The connection attempt failed: it stops counting, and the target is marked.
    fn failed(mut self, picked: &Picked, error: &dyn std::fmt::Display) {
        self.armed = false;
        let marked = self.shared.table().connect_failed(self.key, Instant::now());
        self.shared
            .stats
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
        if let Some((consecutive_failures, ejected_for)) = marked {
            tracing::warn!(
                target_id = %picked.id, addr = %picked.addr, error = %error,
                consecutive_failures, ?ejected_for,
                "cannot connect to target; trying another"
            );
        }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        if self.armed {
            self.shared.table().release(self.key, self.cut);
        }
    }
}

enum Connect {
    Connected(TcpStream),
    Failed(io::Error),
    Cut,
}

/// Serves one client connection: finds a target that accepts a connection, trying each target
/// at most once, then relays bytes both ways until both sides have closed, the connection
/// fails, or the target's connections are cut.
async fn serve(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr) {
    if let Err(e) = client.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY on the client connection");
    }
    let mut tried: Vec<Key> = Vec::new();
    let (picked, mut outstanding, mut upstream) = loop {
        let Some(picked) = shared.table().pick(&tried, Instant::now()) else {
            shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                %peer, tried = tried.len(), "no target available; closing the connection"
            );
            abort(client);
            return;
        };
        let mut outstanding = Outstanding {
            shared: shared.clone(),
            key: picked.key,
            armed: true,
            cut: false,
        };
        let attempt = tokio::select! {
            biased;
            () = picked.cut.cancelled() => Connect::Cut,
            connected = tokio::time::timeout(
                shared.config.connect_timeout,
                TcpStream::connect(picked.addr),
            ) => match connected {
                Ok(Ok(stream)) => Connect::Connected(stream),
                Ok(Err(e)) => Connect::Failed(e),
                Err(_) => Connect::Failed(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", shared.config.connect_timeout),
                )),
            },
        };
        match attempt {
            Connect::Connected(stream) => {
                shared.table().connected(picked.key);
                break (picked, outstanding, stream);
            }
            Connect::Failed(e) => {
                outstanding.failed(&picked, &e);
                tried.push(picked.key);
            }
            Connect::Cut => {
                outstanding.cut = true;
                shared.stats.cut.fetch_add(1, Ordering::Relaxed);
                abort(client);
                return;
            }
        }
    };
    if let Err(e) = upstream.set_nodelay(true) {
        tracing::debug!(
            target_id = %picked.id, error = %e, "cannot set TCP_NODELAY on the target connection"
        );
    }
    tracing::debug!(%peer, target_id = %picked.id, addr = %picked.addr, "proxying");

    let mut client = client;
    let pipes = match shared.config.splice.then(|| shared.pipes.take()) {
        Some(Ok(pipes)) => Some(pipes),
        Some(Err(e)) => {
            // Out of descriptors, most likely: this connection is copied instead.
            tracing::debug!(error = %e, "no pipe for splice; copying through buffers");
            None
        }
        None => None,
    };
    let size = shared.config.buffer_size;
    let copied = tokio::select! {
        biased;
        () = picked.cut.cancelled() => None,
        copied = relay(&mut client, &mut upstream, pipes.as_ref(), size) => Some(copied),
    };
    if let (Some(Ok(_)), Some(pipes)) = (&copied, pipes) {
        // Both directions ran to their end, so both pipes are empty.
        shared.pipes.give(pipes);
    }
    match copied {
        Some(Ok((sent, received))) => {
            tracing::debug!(
                %peer, target_id = %picked.id, sent, received, "connection closed"
            );
        }
        Some(Err(e)) => {
            // One side failed (reset, most often): pass the abort on to the other side rather
            // than a clean end of stream that could pass for a complete reply.
            tracing::debug!(
                %peer, target_id = %picked.id, error = %e,
                "connection failed; resetting both sides"
            );
            abort(client);
            abort(upstream);
        }
        None => {
            outstanding.cut = true;
            shared.stats.cut.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, target_id = %picked.id, "connection cut");
            abort(client);
            abort(upstream);
        }
    }
    drop(outstanding);
}

/// Relays both ways until both directions have ended: through `pipes` with `splice(2)`, or
/// through user-space buffers of `size` bytes.
async fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    pipes: Option<&(Pipe, Pipe)>,
    size: usize,
) -> io::Result<(u64, u64)> {
    match pipes {
        Some(pipes) => splice::relay(client, upstream, pipes).await,
        None => copy_bidirectional_with_sizes(client, upstream, size, size).await,
    }
}

/// Closes a connection with a reset: `SO_LINGER` 0, then close. The peer sees an abort, not an
/// end of stream, and no TIME_WAIT is left behind.
fn abort(stream: TcpStream) {
    if let Err(e) = stream.set_zero_linger() {
        tracing::debug!(error = %e, "cannot set SO_LINGER to reset a connection");
    }
    drop(stream);
}
