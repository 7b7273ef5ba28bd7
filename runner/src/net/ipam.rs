//! IP address management: leases of a subnet's addresses, kept in a file that several
//! processes share.
//!
//! The state is one JSON file, `ipam.json`, beside a lock file, `ipam.lock`, in a directory the
//! caller chooses:
//!
//! ```json
//! {
//!   "subnet": "10.89.0.0/16",
//!   "last": "10.89.0.3",
//!   "leases": { "task-a": "10.89.0.2", "task-b": "10.89.0.3" }
//! }
//! ```
//!
//! Every operation reads, changes and rewrites the file while it holds an exclusive `flock`
//! on the lock file, so two processes never hand out the same address. A lease is keyed by its
//! owner (a task id): asking again for the same owner gives the same address, and releasing
//! frees it. Like CNI's host-local plugin, allocation goes round-robin from the last address
//! handed out, so a released address is reused as late as possible (a peer still holding a
//! connection to the old task is less likely to reach a new one). The gateway (the subnet's
//! first host address), the network and the broadcast addresses are never leased.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;
use super::addr::Subnet;
use super::state::{self, Lock};

/// The state file's name in the IPAM directory.
pub const STATE_FILE: &str = "ipam.json";
/// The lock file's name in the IPAM directory.
pub const LOCK_FILE: &str = "ipam.lock";

/// Address leases of one subnet, persisted in a directory. Cheap to clone; every method takes
/// the file lock, so handles in different threads and processes can be used at once.
#[derive(Debug, Clone)]
pub struct Ipam {
    subnet: Subnet,
    dir: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subnet: Option<Subnet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<Ipv4Addr>,
    #[serde(default)]
    leases: BTreeMap<String, Ipv4Addr>,
}

impl Ipam {
    /// Opens (creating if needed) the leases of `subnet` kept in `dir`.
    ///
    /// # Errors
    /// [`Error::SubnetMismatch`] when the directory holds leases of another subnet (leases of a
    /// subnet with none held are dropped and the state starts over); [`Error::State`] when the
    /// state file is damaged; [`Error::Io`] when the directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>, subnet: Subnet) -> Result<Self, Error> {
        let ipam = Ipam {
            subnet,
            dir: dir.into(),
        };
        state::create_dir(&ipam.dir)?;
        ipam.transact(|_| Ok(((), false)))?;
        Ok(ipam)
    }

    /// The subnet leases are taken from.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The directory the state is kept in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Leases an address to `owner`, or returns the one it already holds.
    ///
    /// # Errors
    /// [`Error::SubnetExhausted`] when every task address is leased.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, Error> {
        let subnet = self.subnet;
        self.transact(|state| {
            if let Some(ip) = state.leases.get(owner) {
                return Ok((*ip, false));
            }
            let ip = next_free(subnet, state).ok_or(Error::SubnetExhausted {
                subnet,
                leased: state.leases.len(),
            })?;
            state.leases.insert(owner.to_owned(), ip);
            state.last = Some(ip);
            Ok((ip, true))
        })
    }

    /// Releases `owner`'s lease; returns the address it held, `None` if it held none.
    pub fn release(&self, owner: &str) -> Result<Option<Ipv4Addr>, Error> {
        self.transact(|state| {
            let released = state.leases.remove(owner);
            Ok((released, released.is_some()))
        })
    }

    /// The address `owner` holds, if any.
    pub fn lease(&self, owner: &str) -> Result<Option<Ipv4Addr>, Error> {
        self.transact(|state| Ok((state.leases.get(owner).copied(), false)))
    }

    /// Every lease, by owner.
    pub fn leases(&self) -> Result<BTreeMap<String, Ipv4Addr>, Error> {
        self.transact(|state| Ok((state.leases.clone(), false)))
    }

    /// Runs `f` on the state under the lock; writes the state back when `f` says it changed it.
    fn transact<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<(T, bool), Error>,
    ) -> Result<T, Error> {
        let _lock = Lock::exclusive(&self.dir.join(LOCK_FILE))?;
        let path = self.dir.join(STATE_FILE);
        let mut state: State = state::read_json(&path)?.unwrap_or_default();
        let mut dirty = false;
        match state.subnet {
            Some(recorded) if recorded != self.subnet => {
                if !state.leases.is_empty() {
                    return Err(Error::SubnetMismatch {
                        path,
                        recorded,
                        requested: self.subnet,
                        leases: state.leases.len(),
                    });
                }
                state = State {
                    subnet: Some(self.subnet),
                    ..State::default()
                };
                dirty = true;
            }
            Some(_) => {}
            None => {
                state.subnet = Some(self.subnet);
                dirty = true;
            }
        }
        let (value, changed) = f(&mut state)?;
        if dirty || changed {
            state::write_json(&path, &state)?;
        }
        Ok(value)
    }
}

/// The first free task address after the last one handed out, wrapping around.
fn next_free(subnet: Subnet, state: &State) -> Option<Ipv4Addr> {
    let first = u32::from(subnet.first_task_address());
    let count = subnet.task_capacity();
    let used: HashSet<u32> = state.leases.values().map(|ip| u32::from(*ip)).collect();
    let start = state
        .last
        .filter(|ip| subnet.contains(*ip))
        .map(|ip| u32::from(ip).wrapping_sub(first).wrapping_add(1))
        .filter(|offset| *offset <= count)
        .unwrap_or(0);
    (0..count)
        .map(|i| first + (start + i) % count)
        .find(|candidate| !used.contains(candidate))
        .map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(subnet: &str) -> (tempfile::TempDir, Ipam) {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path().join("ipam"), subnet.parse().unwrap()).unwrap();
        (dir, ipam)
    }

    #[test]
    fn allocates_after_the_gateway_and_keeps_an_owners_address() {
        let (_dir, ipam) = ipam("10.1.2.0/24");
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 1, 2, 2));
        assert_eq!(ipam.allocate("b").unwrap(), Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 1, 2, 2));
        assert_eq!(ipam.lease("b").unwrap(), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(ipam.lease("c").unwrap(), None);
    }

    #[test]
    fn released_addresses_are_reused_last_round_robin() {
        let (_dir, ipam) = ipam("10.1.2.0/29"); // tasks: .2 to .6
        for owner in ["a", "b", "c"] {
            ipam.allocate(owner).unwrap();
        }
        assert_eq!(ipam.release("a").unwrap(), Some(Ipv4Addr::new(10, 1, 2, 2)));
        assert_eq!(ipam.release("a").unwrap(), None);
        assert_eq!(ipam.allocate("d").unwrap(), Ipv4Addr::new(10, 1, 2, 5));
        assert_eq!(ipam.allocate("e").unwrap(), Ipv4Addr::new(10, 1, 2, 6));
        // Wraps around to the released .2, skipping nothing else (it is the only free one).
        assert_eq!(ipam.allocate("f").unwrap(), Ipv4Addr::new(10, 1, 2, 2));
        match ipam.allocate("g") {
            Err(Error::SubnetExhausted { leased, .. }) => assert_eq!(leased, 5),
            other => panic!("expected SubnetExhausted, got {other:?}"),
        }
    }

    #[test]
    fn leases_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let subnet: Subnet = "10.1.2.0/24".parse().unwrap();
        let first = Ipam::open(dir.path(), subnet).unwrap();
        first.allocate("a").unwrap();
        let again = Ipam::open(dir.path(), subnet).unwrap();
        assert_eq!(
            again.leases().unwrap(),
            BTreeMap::from([("a".to_owned(), Ipv4Addr::new(10, 1, 2, 2))])
        );
        assert_eq!(again.allocate("b").unwrap(), Ipv4Addr::new(10, 1, 2, 3));
    }

    #[test]
    fn another_subnet_is_refused_while_leases_are_held() {
        let dir = tempfile::tempdir().unwrap();
        let a = Ipam::open(dir.path(), "10.1.2.0/24".parse().unwrap()).unwrap();
        a.allocate("x").unwrap();
        match Ipam::open(dir.path(), "10.9.0.0/16".parse().unwrap()) {
            Err(Error::SubnetMismatch { leases: 1, .. }) => {}
            other => panic!("expected SubnetMismatch, got {other:?}"),
        }
        a.release("x").unwrap();
        let b = Ipam::open(dir.path(), "10.9.0.0/16".parse().unwrap()).unwrap();
        assert_eq!(b.allocate("y").unwrap(), Ipv4Addr::new(10, 9, 0, 2));
    }

    #[test]
    fn a_damaged_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        match Ipam::open(dir.path(), "10.1.2.0/24".parse().unwrap()) {
            Err(Error::State { path, .. }) => assert_eq!(path, dir.path().join(STATE_FILE)),
            other => panic!("expected State, got {other:?}"),
        }
    }

    #[test]
    fn threads_with_their_own_handles_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let subnet: Subnet = "10.1.0.0/22".parse().unwrap();
        let all: Vec<Ipv4Addr> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|t| {
                    let path = dir.path().to_owned();
                    s.spawn(move || {
                        let ipam = Ipam::open(path, subnet).unwrap();
                        (0..50)
                            .map(|i| ipam.allocate(&format!("t{t}-{i}")).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let distinct: HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 200);
    }
}
