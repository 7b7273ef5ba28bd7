//! Deregistration with connection draining: the task that watches a draining target, and the
//! future that the caller awaits.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::Shared;
use super::table::Key;

/// How a deregistration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every connection of the target closed before the delay ran out (or it had none).
    Drained,
    /// The deregistration delay ran out; the connections still open were cut (reset on both
    /// sides).
    DelayExpired {
        /// How many connections were cut.
        cut: usize,
    },
    /// The load balancer shut down before the target drained; its connections were cut.
    Shutdown {
        /// How many connections were cut.
        cut: usize,
    },
}

/// What a completed deregistration reports. Once it is out, the target is no longer
/// registered and no connection of the load balancer's reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    /// The target's id.
    pub id: String,
    /// The target's address.
    pub addr: SocketAddr,
    /// Whether it drained or was cut.
    pub outcome: DrainOutcome,
    /// Connections open (or being set up) when the deregistration began.
    pub connections_at_start: usize,
    /// Time from the deregistration to its completion.
    pub elapsed: Duration,
}

/// A deregistration in progress: resolves to its [`DrainReport`] once the target has no
/// connection left, or its delay has run out and its connections are cut.
///
/// The drain runs on the load balancer's runtime whether or not this future is polled:
/// dropping it does not cancel the deregistration. Every `Drain` of one target resolves to the
/// same report.
#[must_use = "a Drain does nothing by itself; await it to know when the target is gone"]
pub struct Drain {
    inner: Pin<Box<dyn Future<Output = DrainReport> + Send + 'static>>,
}

impl Drain {
    pub(crate) fn new(
        id: &str,
        addr: SocketAddr,
        mut done: watch::Receiver<Option<DrainReport>>,
    ) -> Self {
        // Should the drain task be dropped without reporting (its runtime shut down), the
        // load balancer is gone, and so are its connections.
        let fallback = DrainReport {
            id: id.to_owned(),
            addr,
            outcome: DrainOutcome::Shutdown { cut: 0 },
            connections_at_start: 0,
            elapsed: Duration::ZERO,
        };
        Drain {
            inner: Box::pin(async move {
                match done.wait_for(Option::is_some).await {
                    Ok(report) => report.clone().unwrap_or(fallback),
                    Err(_) => fallback,
                }
            }),
        }
    }
}

impl Future for Drain {
    type Output = DrainReport;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<DrainReport> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain").finish_non_exhaustive()
    }
}

/// Watches the draining target `key` until it has no connection left, cutting its connections
/// when its deadline passes (shutdown cuts them too), then removes it from the table and
/// publishes the report.
pub(crate) async fn run(
    shared: Arc<Shared>,
    key: Key,
    id: Arc<str>,
    addr: SocketAddr,
    wake: Arc<Notify>,
    report: watch::Sender<Option<DrainReport>>,
) {
    let mut cutting = false;
    loop {
        let Some((active, deadline)) = shared.table().drain_status(key) else {
            break;
        };
        if active == 0 {
            break;
        }
        // Once the connections are cut, they end at their next poll: wait for their accounting.
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep_until(deadline), if !cutting => {
                shared.table().cut(key);
                cutting = true;
            }
            // Shutdown cancels every target's connections itself.
            () = shared.root.cancelled(), if !cutting => cutting = true,
        }
    }
    let removed = shared.table().remove(key);
    let (started, connections_at_start, cut) = removed
        .map(|r| (r.started, r.connections_at_start, r.cut))
        .unwrap_or((Instant::now(), 0, 0));
    let outcome = match cut {
        0 => DrainOutcome::Drained,
        cut if shared.root.is_cancelled() => DrainOutcome::Shutdown { cut },
        cut => DrainOutcome::DelayExpired { cut },
    };
    let done = DrainReport {
        id: id.to_string(),
        addr,
        outcome,
        connections_at_start,
        elapsed: started.elapsed(),
    };
    match outcome {
        DrainOutcome::Drained => tracing::info!(
            target_id = %id, %addr, elapsed = ?done.elapsed, "target drained and deregistered"
        ),
        DrainOutcome::DelayExpired { cut } | DrainOutcome::Shutdown { cut } => tracing::info!(
            target_id = %id, %addr, cut, elapsed = ?done.elapsed, ?outcome,
            "target deregistered; open connections cut"
        ),
    }
    report.send_replace(Some(done));
}
