//! The target table: registered targets, their connection counts and passive health, and the
//! choice of a target for a new connection.
//!
//! The table does no I/O and never waits; the listener and the drain tasks hold its lock only
//! to read or update a few counters. Time comes in as an argument, so the balancing and the
//! ejection rules are tested here without sockets or clocks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Error;
use super::drain::DrainReport;

/// A target's place in the table. Keys grow with each registration and are never reused, so a
/// connection of a target that was deregistered and registered again under the same id never
/// touches the new entry, and key order is registration order (the round-robin order).
pub(crate) type Key = u64;

/// What a connection needs of the target it was given.
#[derive(Debug, Clone)]
pub(crate) struct Picked {
    pub key: Key,
    pub id: Arc<str>,
    pub addr: SocketAddr,
    /// Cancelled when the target's connections are cut (drain delay over, or shutdown).
    pub cut: CancellationToken,
}

/// How long a target that failed to accept a connection is left out of the rotation: `base`
/// times its consecutive failures, at most `max` (Envoy's outlier ejection, linear in the
/// number of ejections).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ejection {
    pub base: Duration,
    pub max: Duration,
}

impl Ejection {
    fn duration(self, consecutive_failures: u32) -> Duration {
        self.base.saturating_mul(consecutive_failures).min(self.max)
    }
}

/// A target's health as the load balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// In the rotation: new connections may go to it.
    Healthy,
    /// Its last connection attempts failed (refused or timed out), so it is left out of the
    /// rotation for `retry_in`; the next connection after that probes it again. It is still
    /// used when every registered target is unhealthy (fail-open, as NLB does).
    Unhealthy {
        /// Connection attempts that failed in a row.
        consecutive_failures: u32,
        /// How long until it is tried again.
        retry_in: Duration,
    },
    /// Deregistered: no new connections; its open ones are cut when `remaining` runs out.
    Draining {
        /// Time left of the deregistration delay.
        remaining: Duration,
    },
}

/// One registered target, as [`super::LoadBalancer::targets`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetState {
    /// The id it was registered under (for a service, the task's id).
    pub id: String,
    /// Where connections go.
    pub addr: SocketAddr,
    /// Healthy, unhealthy (passively, after failed connects) or draining.
    pub state: HealthState,
    /// Connections open now through the load balancer, including ones being set up.
    pub active_connections: usize,
    /// Connections proxied to it since it was registered.
    pub total_connections: u64,
    /// Connection attempts to it that failed since it was registered.
    pub failed_connects: u64,
}

/// A deregistration in progress.
#[derive(Debug)]
pub(crate) struct DrainState {
    pub started: Instant,
    pub deadline: Instant,
    pub connections_at_start: usize,
    /// Woken when a connection of the target ends or the deadline moves.
    pub wake: Arc<Notify>,
    /// Holds the report once the deregistration is complete.
    pub done: watch::Receiver<Option<DrainReport>>,
}

#[derive(Debug)]
struct Target {
    id: Arc<str>,
    addr: SocketAddr,
    active: usize,
    total: u64,
    failed: u64,
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
    cut: CancellationToken,
    /// Connections that ended because `cut` was cancelled.
    cut_connections: usize,
    drain: Option<DrainState>,
}

impl Target {
    fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| until > now)
    }
}

/// What is left of a drained target.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Removed {
    /// When its drain started.
    pub started: Instant,
    /// Its connections then.
    pub connections_at_start: usize,
    /// Its connections that ended because they were cut.
    pub cut: usize,
}

/// What `begin_drain` did.
#[derive(Debug)]
pub(crate) struct DrainTicket {
    pub key: Key,
    pub id: Arc<str>,
    pub addr: SocketAddr,
    pub done: watch::Receiver<Option<DrainReport>>,
    /// Set when this call started the drain: the caller runs the drain task with these.
    pub started: Option<(watch::Sender<Option<DrainReport>>, Arc<Notify>)>,
}

/// `now + duration`, or a time so far off that it never comes when that overflows (a caller
/// asking for `Duration::MAX` means "never").
fn later(now: Instant, duration: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(duration).unwrap_or(now + CENTURY)
}

#[derive(Debug)]
pub(crate) struct Table {
    targets: BTreeMap<Key, Target>,
    next_key: Key,
    last_picked: Option<Key>,
    ejection: Ejection,
}

impl Table {
    pub fn new(ejection: Ejection) -> Self {
        Table {
            targets: BTreeMap::new(),
            next_key: 0,
            last_picked: None,
            ejection,
        }
    }

    fn find(&self, id: &str) -> Option<(Key, &Target)> {
        self.targets
            .iter()
            .find(|(_, t)| &*t.id == id)
            .map(|(k, t)| (*k, t))
    }

    /// Adds a target, healthy. Registering a target again at the same address is a no-op that
    /// also clears its passive ejection (the caller's health check vouches for it); returns
    /// whether the target is new.
    pub fn register(
        &mut self,
        id: &str,
        addr: SocketAddr,
        parent: &CancellationToken,
    ) -> Result<bool, Error> {
        if let Some((key, target)) = self.find(id) {
            if target.drain.is_some() {
                return Err(Error::Draining { id: id.to_owned() });
            }
            if target.addr != addr {
                return Err(Error::AddressConflict {
                    id: id.to_owned(),
                    registered: target.addr,
                    requested: addr,
                });
            }
            let target = self.targets.get_mut(&key).expect("found above");
            target.consecutive_failures = 0;
            target.ejected_until = None;
            return Ok(false);
        }
        let key = self.next_key;
        self.next_key += 1;
        self.targets.insert(
            key,
            Target {
                id: id.into(),
                addr,
                active: 0,
                total: 0,
                failed: 0,
                consecutive_failures: 0,
                ejected_until: None,
                cut: parent.child_token(),
                cut_connections: 0,
                drain: None,
            },
        );
        Ok(true)
    }

    /// Chooses the target for a new connection and counts the connection as outstanding on it.
    ///
    /// Candidates are the targets that are not draining and not in `tried`. Among them the
    /// healthy ones are used, or all of them when none is healthy (fail-open). The candidate
    /// with the fewest outstanding connections wins; ties go round-robin, to the first tied
    /// target after the one picked last, in registration order.
    pub fn pick(&mut self, tried: &[Key], now: Instant) -> Option<Picked> {
        let candidate = |key: &Key, t: &Target| t.drain.is_none() && !tried.contains(key);
        let any_healthy = self
            .targets
            .iter()
            .any(|(k, t)| candidate(k, t) && !t.ejected(now));
        let eligible =
            |key: &Key, t: &Target| candidate(key, t) && !(any_healthy && t.ejected(now));
        let fewest = self
            .targets
            .iter()
            .filter(|(k, t)| eligible(k, t))
            .map(|(_, t)| t.active)
            .min()?;
        let mut tied = self
            .targets
            .iter()
            .filter(|(k, t)| eligible(k, t) && t.active == fewest)
            .map(|(k, _)| *k);
        let first = tied.next().expect("the minimum is reached by some target");
        let key = match self.last_picked {
            Some(last) if first <= last => tied.find(|k| *k > last).unwrap_or(first),
            _ => first,
        };
        self.last_picked = Some(key);
        let target = self
            .targets
            .get_mut(&key)
            .expect("key taken from the table");
        target.active += 1;
        Some(Picked {
            key,
            id: target.id.clone(),
            addr: target.addr,
            cut: target.cut.clone(),
        })
    }

    /// The connection to the target is established: it counts in the total, and the target is
    /// healthy again if it was not.
    pub fn connected(&mut self, key: Key) {
        if let Some(t) = self.targets.get_mut(&key) {
            t.total += 1;
            t.consecutive_failures = 0;
            t.ejected_until = None;
        }
    }

    /// The connection attempt failed: the attempt no longer counts as outstanding, and the
    /// target is ejected. Returns the target's consecutive failures and how long it is ejected.
    pub fn connect_failed(&mut self, key: Key, now: Instant) -> Option<(u32, Duration)> {
        let ejection = self.ejection;
        let t = self.targets.get_mut(&key)?;
        t.active -= 1;
        t.failed += 1;
        t.consecutive_failures = t.consecutive_failures.saturating_add(1);
        let ejected_for = ejection.duration(t.consecutive_failures);
        t.ejected_until = Some(later(now, ejected_for));
        if let Some(drain) = &t.drain {
            drain.wake.notify_one();
        }
        Some((t.consecutive_failures, ejected_for))
    }

    /// A connection picked on the target has ended; `cut` when it ended because the target's
    /// connections were cut.
    pub fn release(&mut self, key: Key, cut: bool) {
        if let Some(t) = self.targets.get_mut(&key) {
            t.active -= 1;
            t.cut_connections += usize::from(cut);
            if let Some(drain) = &t.drain {
                drain.wake.notify_one();
            }
        }
    }

    /// Starts draining the target `id`, or joins the drain in progress. A drain that is already
    /// in progress keeps the earlier of its deadline and `now + delay`.
    pub fn begin_drain(
        &mut self,
        id: &str,
        delay: Duration,
        now: Instant,
    ) -> Result<DrainTicket, Error> {
        let Some((key, _)) = self.find(id) else {
            return Err(Error::UnknownTarget { id: id.to_owned() });
        };
        let t = self.targets.get_mut(&key).expect("found above");
        let deadline = later(now, delay);
        if let Some(drain) = &mut t.drain {
            if deadline < drain.deadline {
                drain.deadline = deadline;
                drain.wake.notify_one();
            }
            return Ok(DrainTicket {
                key,
                id: t.id.clone(),
                addr: t.addr,
                done: drain.done.clone(),
                started: None,
            });
        }
        let (tx, done) = watch::channel(None);
        let wake = Arc::new(Notify::new());
        t.drain = Some(DrainState {
            started: now,
            deadline,
            connections_at_start: t.active,
            wake: wake.clone(),
            done: done.clone(),
        });
        Ok(DrainTicket {
            key,
            id: t.id.clone(),
            addr: t.addr,
            done,
            started: Some((tx, wake)),
        })
    }

    /// A draining target's outstanding connections and deadline.
    pub fn drain_status(&self, key: Key) -> Option<(usize, Instant)> {
        let t = self.targets.get(&key)?;
        Some((t.active, t.drain.as_ref()?.deadline))
    }

    /// Cuts every connection of the target.
    pub fn cut(&self, key: Key) {
        if let Some(t) = self.targets.get(&key) {
            t.cut.cancel();
        }
    }

    /// Removes a drained target.
    pub fn remove(&mut self, key: Key) -> Option<Removed> {
        let t = self.targets.remove(&key)?;
        let drain = t.drain?;
        Some(Removed {
            started: drain.started,
            connections_at_start: drain.connections_at_start,
            cut: t.cut_connections,
        })
    }

    /// Every registered target, draining ones included, in registration order.
    pub fn snapshot(&self, now: Instant) -> Vec<TargetState> {
        self.targets
            .values()
            .map(|t| TargetState {
                id: t.id.to_string(),
                addr: t.addr,
                state: match &t.drain {
                    Some(d) => HealthState::Draining {
                        remaining: d.deadline.saturating_duration_since(now),
                    },
                    None if t.ejected(now) => HealthState::Unhealthy {
                        consecutive_failures: t.consecutive_failures,
                        retry_in: t
                            .ejected_until
                            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now)),
                    },
                    None => HealthState::Healthy,
                },
                active_connections: t.active,
                total_connections: t.total,
                failed_connects: t.failed,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EJECTION: Ejection = Ejection {
        base: Duration::from_secs(10),
        max: Duration::from_secs(25),
    };

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn table(ids: &[&str]) -> Table {
        let root = CancellationToken::new();
        let mut table = Table::new(EJECTION);
        for (i, id) in ids.iter().enumerate() {
            assert!(table.register(id, addr(9000 + i as u16), &root).unwrap());
        }
        table
    }

    fn pick_id(table: &mut Table, tried: &[Key], now: Instant) -> Option<String> {
        table.pick(tried, now).map(|p| p.id.to_string())
    }

    #[test]
    fn ties_go_round_robin_in_registration_order() {
        let mut t = table(&["a", "b", "c"]);
        let now = Instant::now();
        let mut order = Vec::new();
        for _ in 0..7 {
            let p = t.pick(&[], now).unwrap();
            order.push(p.id.to_string());
            t.release(p.key, false);
        }
        assert_eq!(order, ["a", "b", "c", "a", "b", "c", "a"]);
    }

    #[test]
    fn fewest_outstanding_connections_win() {
        let mut t = table(&["a", "b", "c"]);
        let now = Instant::now();
        let a = t.pick(&[], now).unwrap();
        let b = t.pick(&[], now).unwrap();
        let _c = t.pick(&[], now).unwrap();
        // All hold one; `a` and `b` close, so the next two go there even though the rotation
        // would name `a` next anyway and then `b`, and never `c`, which still holds one.
        t.release(b.key, false);
        assert_eq!(pick_id(&mut t, &[], now).as_deref(), Some("b"));
        t.release(a.key, false);
        assert_eq!(pick_id(&mut t, &[], now).as_deref(), Some("a"));
        // Now 1/1/1 again: the rotation goes on after `a`.
        assert_eq!(pick_id(&mut t, &[], now).as_deref(), Some("b"));
        let snapshot = t.snapshot(now);
        let active: Vec<_> = snapshot.iter().map(|s| s.active_connections).collect();
        assert_eq!(active, [1, 2, 1]);
    }

    #[test]
    fn draining_and_tried_targets_are_not_picked() {
        let mut t = table(&["a", "b", "c"]);
        let now = Instant::now();
        let ticket = t.begin_drain("b", Duration::from_secs(300), now).unwrap();
        assert!(ticket.started.is_some());
        for _ in 0..4 {
            let p = t.pick(&[], now).unwrap();
            assert_ne!(&*p.id, "b");
            t.release(p.key, false);
        }
        let a = t.pick(&[], now).unwrap();
        t.release(a.key, false);
        let c = t.pick(&[a.key], now).unwrap();
        assert_eq!(&*c.id, "c");
        t.release(c.key, false);
        assert!(t.pick(&[a.key, c.key], now).is_none());
    }

    #[test]
    fn failed_target_is_ejected_for_longer_each_time_up_to_the_cap() {
        let mut t = table(&["a", "b"]);
        let now = Instant::now();
        let a = t.pick(&[], now).unwrap();
        assert_eq!(
            t.connect_failed(a.key, now),
            Some((1, Duration::from_secs(10)))
        );
        // Ejected: every pick goes to `b` until the ejection is over.
        for _ in 0..3 {
            assert_eq!(pick_id(&mut t, &[], now).as_deref(), Some("b"));
        }
        assert_eq!(
            t.snapshot(now)[0].state,
            HealthState::Unhealthy {
                consecutive_failures: 1,
                retry_in: Duration::from_secs(10)
            }
        );
        // `b` holds 3 now; once `a` is back it is the least loaded and gets the probe.
        let later = now + Duration::from_secs(10);
        assert_eq!(t.snapshot(later)[0].state, HealthState::Healthy);
        let probe = t.pick(&[], later).unwrap();
        assert_eq!(&*probe.id, "a");
        assert_eq!(
            t.connect_failed(probe.key, later).unwrap().1,
            Duration::from_secs(20)
        );
        let probe = t.pick(&[], later + Duration::from_secs(20)).unwrap();
        assert_eq!(&*probe.id, "a");
        assert_eq!(
            t.connect_failed(probe.key, later).unwrap(),
            (3, Duration::from_secs(25))
        );
        // A success puts it back for good.
        let probe = t.pick(&[], later + Duration::from_secs(25)).unwrap();
        t.connected(probe.key);
        let s = &t.snapshot(later)[0];
        assert_eq!(s.state, HealthState::Healthy);
        assert_eq!((s.total_connections, s.failed_connects), (1, 3));
    }

    #[test]
    fn all_unhealthy_fails_open() {
        let mut t = table(&["a", "b"]);
        let now = Instant::now();
        let a = t.pick(&[], now).unwrap();
        t.connect_failed(a.key, now);
        let b = t.pick(&[a.key], now).unwrap();
        assert_eq!(&*b.id, "b");
        t.connect_failed(b.key, now);
        // Both ejected: a new connection tries them anyway, each once.
        let first = t.pick(&[], now).unwrap();
        t.connect_failed(first.key, now);
        let second = t.pick(&[first.key], now).unwrap();
        assert_ne!(first.key, second.key);
        t.connect_failed(second.key, now);
        assert!(t.pick(&[first.key, second.key], now).is_none());
    }

    #[test]
    fn register_is_idempotent_and_checks_the_address() {
        let root = CancellationToken::new();
        let mut t = table(&["a"]);
        assert!(!t.register("a", addr(9000), &root).unwrap());
        assert!(matches!(
            t.register("a", addr(9999), &root),
            Err(Error::AddressConflict { registered, requested, .. })
                if registered == addr(9000) && requested == addr(9999)
        ));
        let now = Instant::now();
        t.begin_drain("a", Duration::from_secs(1), now).unwrap();
        assert!(matches!(
            t.register("a", addr(9000), &root),
            Err(Error::Draining { .. })
        ));
        assert!(matches!(
            t.begin_drain("zzz", Duration::ZERO, now),
            Err(Error::UnknownTarget { id }) if id == "zzz"
        ));
    }

    #[test]
    fn a_second_deregistration_keeps_the_earlier_deadline() {
        let mut t = table(&["a"]);
        let now = Instant::now();
        let first = t.begin_drain("a", Duration::from_secs(300), now).unwrap();
        let (_, deadline) = t.drain_status(first.key).unwrap();
        assert_eq!(deadline, now + Duration::from_secs(300));
        let second = t.begin_drain("a", Duration::from_secs(5), now).unwrap();
        assert!(second.started.is_none());
        assert_eq!(
            t.drain_status(first.key).unwrap().1,
            now + Duration::from_secs(5)
        );
        t.begin_drain("a", Duration::from_secs(60), now).unwrap();
        assert_eq!(
            t.drain_status(first.key).unwrap().1,
            now + Duration::from_secs(5)
        );
    }

    #[test]
    fn endless_delays_do_not_overflow() {
        let mut t = table(&["a"]);
        let now = Instant::now();
        let ticket = t.begin_drain("a", Duration::MAX, now).unwrap();
        assert!(t.drain_status(ticket.key).unwrap().1 > now + Duration::from_secs(3600));
        let mut t = Table::new(Ejection {
            base: Duration::MAX,
            max: Duration::MAX,
        });
        t.register("a", addr(9000), &CancellationToken::new())
            .unwrap();
        let a = t.pick(&[], now).unwrap();
        assert_eq!(t.connect_failed(a.key, now).unwrap().1, Duration::MAX);
        assert!(matches!(
            t.snapshot(now)[0].state,
            HealthState::Unhealthy { .. }
        ));
    }

    #[test]
    fn keys_are_not_reused_after_removal() {
        let root = CancellationToken::new();
        let mut t = table(&["a"]);
        let now = Instant::now();
        let old = t.pick(&[], now).unwrap();
        let ticket = t.begin_drain("a", Duration::ZERO, now).unwrap();
        t.cut(ticket.key);
        assert!(old.cut.is_cancelled());
        t.release(old.key, true);
        assert_eq!(
            t.remove(ticket.key),
            Some(Removed {
                started: now,
                connections_at_start: 1,
                cut: 1
            })
        );
        assert!(t.register("a", addr(9000), &root).unwrap());
        let new = t.pick(&[], now).unwrap();
        assert_ne!(new.key, old.key);
        assert!(!new.cut.is_cancelled());
        // A late release of the old connection does not touch the new entry.
        t.release(old.key, false);
        assert_eq!(t.snapshot(now)[0].active_connections, 1);
    }
}
