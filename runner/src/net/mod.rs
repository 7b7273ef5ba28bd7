//! Task networking: the cluster's bridge, per-task network namespaces ("ENIs"), address
//! management and published ports, for ECS's network modes.
//!
//! ```no_run
//! use berth_runner::net::{Network, PortMapping, Publisher};
//!
//! // The cluster's "VPC": bridge berth0 with 10.89.0.1/16, forwarding and outbound NAT.
//! let network = Network::builder().state_dir("/run/berth/net").build()?;
//! // One task's ENI: /run/netns/berth-<id>, eth0 with an address of the subnet.
//! let eni = network.attach("3f2a9c1e")?;
//! // The sandbox runs the task's containers in eni.netns_path (`Network::Join`).
//! // Bridge mode: port 80 of the task on a dynamic host port.
//! let published = Publisher::new().publish(eni.ip.into(), &[PortMapping::tcp(80)])?;
//! println!("{:?}", published.bindings());
//! // ... and when the task stops:
//! published.close();
//! network.detach(&eni)?;
//! # Ok::<(), berth_runner::net::Error>(())
//! ```
//!
//! # Network modes
//! - **awsvpc** (and every Fargate task): [`Network::attach`] gives the task a named network
//!   namespace of its own, `/run/netns/<prefix><id>`, joined to the bridge by a veth pair:
//!   `eth0` inside, with an address leased from the subnet, the MAC address Docker would give
//!   it ([`MacAddr::from_ipv4`]) and a default route through the gateway; the host end is a
//!   port of the bridge. Every container of the task joins that namespace, so they share
//!   `localhost`, as in ECS.
//! - **bridge** (EC2): the same attachment, plus the task's `portMappings` published on the
//!   host with a [`Publisher`] (a userspace proxy per port, TCP or UDP, dynamic host ports
//!   from ECS's ephemeral range; see [`publish`](mod@publish)). The returned
//!   [`NetworkBinding`]s are ECS's `networkBindings`.
//! - **host**: nothing here; the sandbox runs the containers in the host's namespace.
//! - **none**: [`Network::isolate`] gives the task a named namespace with `lo` only, which its
//!   containers share (the sandbox's own `Network::None` gives each container a private one).
//!
//! # The bridge
//! [`NetworkBuilder::build`] brings the bridge up idempotently: created if missing, the
//! gateway (the subnet's first host address) on it, up, and, where `iptables` exists, the
//! rules that let bridged traffic through a `FORWARD` chain whose policy is `DROP` and that
//! masquerade the subnet's traffic leaving the host (see [`Network::outbound_nat`]). A subnet
//! that overlaps an address of another interface is refused.
//!
//! # State and crash safety
//! A network keeps its state under `<state_dir>/<bridge>/`: `ipam.json` with the address
//! leases ([`Ipam`], shared safely between processes through `flock`), `tasks/<id>.json` with
//! one record per task namespace, and `lock`, held while a namespace is made or removed.
//! The default state directory is under `/run`, a tmpfs: namespaces, links and leases all go
//! at a reboot.
//!
//! The record is written first, as `pending`, before anything is made for the task, and
//! completed once the namespace is ready; it is removed last, after the namespace, the veth
//! pair and the lease. So whatever point a process dies at, the record names what may be
//! left, and [`Network::sweep`], given the ids of the tasks that are still alive, removes the
//! rest. It trusts the records, the leases and the host ends of veth pairs (tagged with the
//! alias `berth:<bridge>:<id>`), never a scan of `/run/netns` by name: that directory is shared
//! by every network namespace on the machine, including those of other agents.
//!
//! Names are derived from the task id: the namespace is `<prefix><id>` and the host end of
//! the veth pair is `veth` followed by 11 hex digits of a hash of the bridge and the id (15
//! characters, the kernel's limit), so a namespace can be removed from its id alone.
//!
//! # Tools
//! Links, addresses, routes and namespaces are made with iproute2's `ip`, rules with
//! `iptables`, one command per change, with the tool's stderr in the error when one fails
//! ([`Error::Command`]). [`within`] runs code on a thread inside a namespace (for a listener
//! or a health check that must live there), and [`testhost`] makes namespaces that stand for
//! separate machines in tests.

mod addr;
mod bridge;
mod cmd;
mod error;
pub mod ipam;
mod netns;
pub mod publish;
mod state;
pub mod testhost;

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use addr::{MacAddr, Subnet};
pub use error::Error;
pub use ipam::Ipam;
pub use netns::{NETNS_DIR, netns_path, within};
pub use publish::{
    EPHEMERAL_PORTS, NetworkBinding, PortMapping, Protocol, Published, Publisher, publish,
};

use cmd::{ABSENT, IP};
use state::Lock;

/// The bridge used when none is given.
pub const DEFAULT_BRIDGE: &str = "berth0";
/// The subnet used when none is given.
pub const DEFAULT_SUBNET: &str = "10.89.0.0/16";
/// The prefix of task namespaces' names when none is given: `/run/netns/berth-<id>`.
pub const DEFAULT_NETNS_PREFIX: &str = "berth-";
/// The state directory used when none is given.
pub const DEFAULT_STATE_DIR: &str = "/run/berth/net";
/// The name of a task's interface inside its namespace.
pub const IFNAME: &str = "eth0";

/// The longest task id: namespaces are named after it.
pub const MAX_ID_LEN: usize = 64;

const TASKS_DIR: &str = "tasks";
const LOCK_FILE: &str = "lock";

/// A task's "ENI": its network namespace, joined to the bridge. Serialised with camelCase
/// field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The task id it was made for.
    pub id: String,
    /// The namespace's name (`berth-<id>`).
    pub netns: String,
    /// The namespace's path (`/run/netns/berth-<id>`), for the sandbox to join.
    pub netns_path: PathBuf,
    /// The interface inside the namespace: [`IFNAME`].
    pub ifname: String,
    /// The task's address.
    pub ip: Ipv4Addr,
    /// The subnet the address belongs to.
    pub subnet: Subnet,
    /// The default gateway: the bridge's address.
    pub gateway: Ipv4Addr,
    /// The MAC address of the task's interface.
    pub mac: MacAddr,
    /// The bridge.
    pub bridge: String,
    /// The host end of the veth pair, a port of the bridge.
    pub veth_host: String,
}

impl Attachment {
    /// The task's address with the subnet's prefix length (`10.89.0.2/16`).
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.subnet.prefix_len())
    }
}

/// A task's namespace with `lo` only (network mode `none`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Isolated {
    /// The task id it was made for.
    pub id: String,
    /// The namespace's name.
    pub netns: String,
    /// The namespace's path, for the sandbox to join.
    pub netns_path: PathBuf,
}

/// A task namespace of a network, as [`Network::lookup`] and [`Network::namespaces`] give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// Joined to the bridge.
    Attached(Attachment),
    /// `lo` only.
    Isolated(Isolated),
}

impl Namespace {
    /// The task id.
    pub fn id(&self) -> &str {
        match self {
            Namespace::Attached(a) => &a.id,
            Namespace::Isolated(i) => &i.id,
        }
    }

    /// The namespace's path.
    pub fn netns_path(&self) -> &Path {
        match self {
            Namespace::Attached(a) => &a.netns_path,
            Namespace::Isolated(i) => &i.netns_path,
        }
    }
}

/// What a task record says, on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
enum Record {
    /// Written before anything is made: the namespace, the veth pair and the lease may be
    /// there in part.
    Pending { id: String },
    /// Complete.
    Attached(Attachment),
    /// Complete.
    Isolated(Isolated),
}

/// Builds a [`Network`].
#[derive(Debug, Clone)]
pub struct NetworkBuilder {
    bridge: String,
    subnet: Option<Subnet>,
    netns_prefix: String,
    state_dir: PathBuf,
    outbound: bool,
}

impl Default for NetworkBuilder {
    fn default() -> Self {
        NetworkBuilder {
            bridge: DEFAULT_BRIDGE.to_owned(),
            subnet: None,
            netns_prefix: DEFAULT_NETNS_PREFIX.to_owned(),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            outbound: true,
        }
    }
}

impl NetworkBuilder {
    /// The bridge's name (at most 15 characters). Default: [`DEFAULT_BRIDGE`].
    pub fn bridge(mut self, name: impl Into<String>) -> Self {
        self.bridge = name.into();
        self
    }

    /// The subnet. Default: [`DEFAULT_SUBNET`].
    pub fn subnet(mut self, subnet: Subnet) -> Self {
        self.subnet = Some(subnet);
        self
    }

    /// The prefix of task namespaces' names. Default: [`DEFAULT_NETNS_PREFIX`].
    pub fn netns_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.netns_prefix = prefix.into();
        self
    }

    /// The directory the state is kept in (the network's own is the bridge's subdirectory).
    /// Default: [`DEFAULT_STATE_DIR`].
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    /// Whether tasks may reach other networks through the host (forwarding and masquerade).
    /// Default: true.
    pub fn outbound(mut self, outbound: bool) -> Self {
        self.outbound = outbound;
        self
    }

    /// Checks the settings, opens the state and brings the bridge up (idempotently; see the
    /// module docs).
    ///
    /// # Errors
    /// [`Error::InvalidName`] for an unusable bridge name or prefix; [`Error::SubnetInUse`]
    /// when another interface holds an address of the subnet; [`Error::NotABridge`] and
    /// [`Error::BridgeAddress`] when a link of the bridge's name is not what it should be;
    /// [`Error::SubnetMismatch`] when the state holds leases of another subnet; and the
    /// errors of the tools.
    pub fn build(self) -> Result<Network, Error> {
        check_name("bridge name", &self.bridge, 15)?;
        if !self.netns_prefix.is_empty() {
            check_name("namespace prefix", &self.netns_prefix, MAX_ID_LEN)?;
        }
        let subnet = match self.subnet {
            Some(subnet) => subnet,
            None => DEFAULT_SUBNET.parse()?,
        };
        for (device, address) in cmd::ipv4_addresses(None, None)? {
            if device == self.bridge {
                continue;
            }
            let (ip, prefix) = address.split_once('/').unwrap_or((&address, "32"));
            let (Ok(ip), Ok(prefix)) = (ip.parse::<Ipv4Addr>(), prefix.parse::<u8>()) else {
                continue;
            };
            // Two CIDR blocks overlap when they agree on the shorter prefix.
            let mask = u32::from(netmask(prefix.min(subnet.prefix_len())));
            if u32::from(ip) & mask == u32::from(subnet.network()) & mask {
                return Err(Error::SubnetInUse {
                    subnet,
                    device,
                    address,
                });
            }
        }

        let dir = self.state_dir.join(&self.bridge);
        state::create_dir(&dir.join(TASKS_DIR))?;
        let ipam = Ipam::open(&dir, subnet)?;
        let outbound = {
            let _lock = Lock::exclusive(&dir.join(LOCK_FILE))?;
            bridge::ensure(&self.bridge, subnet, self.outbound)?
        };
        Ok(Network {
            config: Arc::new(Config {
                bridge: self.bridge,
                subnet,
                netns_prefix: self.netns_prefix,
                dir,
                nat: outbound.nat,
                ipam,
            }),
        })
    }
}

fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0),
    )
}

/// The cluster's bridge and the task namespaces on it. Cheap to clone and to share between
/// threads; every change to the namespaces takes the network's lock, which also keeps other
/// processes using the same state directory out.
#[derive(Debug, Clone)]
pub struct Network {
    config: Arc<Config>,
}

#[derive(Debug)]
struct Config {
    bridge: String,
    subnet: Subnet,
    netns_prefix: String,
    dir: PathBuf,
    nat: bool,
    ipam: Ipam,
}

impl Network {
    /// A builder with the defaults.
    pub fn builder() -> NetworkBuilder {
        NetworkBuilder::default()
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.config.bridge
    }

    /// The subnet.
    pub fn subnet(&self) -> Subnet {
        self.config.subnet
    }

    /// The gateway: the bridge's address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.config.subnet.gateway()
    }

    /// Gives the host `address` as well, on the bridge (a /32): tasks reach it through their
    /// default route, as ECS tasks reach their agent at `169.254.170.2`. Idempotent; the
    /// address goes away with the bridge.
    pub fn add_host_address(&self, address: Ipv4Addr) -> Result<(), Error> {
        IP.run(&[
            "addr",
            "replace",
            &format!("{address}/32"),
            "dev",
            self.bridge(),
        ])?;
        Ok(())
    }

    /// The network's own state directory, `<state_dir>/<bridge>`.
    pub fn state_dir(&self) -> &Path {
        &self.config.dir
    }

    /// Whether traffic from tasks to other networks is forwarded and masqueraded: outbound
    /// traffic was asked for, `iptables` exists and forwarding could be turned on.
    pub fn outbound_nat(&self) -> bool {
        self.config.nat
    }

    /// The address leases.
    pub fn ipam(&self) -> &Ipam {
        &self.config.ipam
    }

    /// The name of the namespace task `id` gets.
    pub fn netns_name(&self, id: &str) -> String {
        format!("{}{id}", self.config.netns_prefix)
    }

    /// Gives task `id` its own namespace on the bridge; see the module docs. Asking again for
    /// an id whose attachment is intact returns it unchanged; one left half made is removed
    /// and made again.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for an unusable id; [`Error::IdInUse`] when the id has a
    /// loopback-only namespace; [`Error::NamespaceTaken`] when a namespace of that name exists
    /// and is not this network's; [`Error::SubnetExhausted`]; the errors of the tools (after
    /// whatever was made has been removed again).
    pub fn attach(&self, id: &str) -> Result<Attachment, Error> {
        check_name("task id", id, MAX_ID_LEN)?;
        let _lock = self.lock()?;
        match self.read_record(id)? {
            Some(Record::Attached(attachment)) if self.is_intact(&attachment)? => {
                return Ok(attachment);
            }
            Some(Record::Isolated(_)) => {
                return Err(Error::IdInUse {
                    id: id.to_owned(),
                    existing: "loopback-only",
                });
            }
            Some(_) => self.teardown(id)?,
            None => {}
        }
        let netns = self.netns_name(id);
        if netns::exists(&netns) {
            return Err(Error::NamespaceTaken {
                name: netns,
                state: self.config.dir.clone(),
            });
        }
        self.write_record(id, &Record::Pending { id: id.to_owned() })?;
        let made = self.make_attachment(id).and_then(|attachment| {
            self.write_record(id, &Record::Attached(attachment.clone()))?;
            Ok(attachment)
        });
        if made.is_err() {
            if let Err(e) = self.teardown(id) {
                tracing::warn!(id, error = %e, "cannot remove a half-made attachment");
            }
        }
        made
    }

    /// Gives task `id` a namespace with `lo` only (network mode `none`). Idempotent as
    /// [`Network::attach`] is.
    ///
    /// # Errors
    /// As [`Network::attach`]; [`Error::IdInUse`] when the id is attached to the bridge.
    pub fn isolate(&self, id: &str) -> Result<Isolated, Error> {
        check_name("task id", id, MAX_ID_LEN)?;
        let _lock = self.lock()?;
        match self.read_record(id)? {
            Some(Record::Isolated(isolated)) if isolated.netns_path.exists() => {
                return Ok(isolated);
            }
            Some(Record::Attached(_)) => {
                return Err(Error::IdInUse {
                    id: id.to_owned(),
                    existing: "bridge-attached",
                });
            }
            Some(_) => self.teardown(id)?,
            None => {}
        }
        let netns = self.netns_name(id);
        if netns::exists(&netns) {
            return Err(Error::NamespaceTaken {
                name: netns,
                state: self.config.dir.clone(),
            });
        }
        self.write_record(id, &Record::Pending { id: id.to_owned() })?;
        let isolated = Isolated {
            id: id.to_owned(),
            netns_path: netns_path(&netns),
            netns,
        };
        let made = netns::add(&isolated.netns)
            .and_then(|()| self.write_record(id, &Record::Isolated(isolated.clone())));
        if let Err(e) = made {
            if let Err(cleanup) = self.teardown(id) {
                tracing::warn!(id, error = %cleanup, "cannot remove a half-made namespace");
            }
            return Err(e);
        }
        Ok(isolated)
    }

    /// Removes an attachment: the veth pair, the namespace, the lease and the record.
    /// Removing one that is already gone is not an error.
    pub fn detach(&self, attachment: &Attachment) -> Result<(), Error> {
        self.release(&attachment.id).map(drop)
    }

    /// Removes whatever task `id` has on this network (an attachment, a loopback-only
    /// namespace, or the remains of one); returns whether it had anything. A namespace of the
    /// id's name that this network has no record of is left alone.
    pub fn release(&self, id: &str) -> Result<bool, Error> {
        check_name("task id", id, MAX_ID_LEN)?;
        let _lock = self.lock()?;
        if self.read_record(id)?.is_some() {
            self.teardown(id)?;
            return Ok(true);
        }
        Ok(self.config.ipam.release(id)?.is_some())
    }

    /// The namespace task `id` has, if it is complete.
    pub fn lookup(&self, id: &str) -> Result<Option<Namespace>, Error> {
        check_name("task id", id, MAX_ID_LEN)?;
        Ok(self.read_record(id)?.and_then(Record::into_namespace))
    }

    /// Every complete task namespace, by id.
    pub fn namespaces(&self) -> Result<Vec<Namespace>, Error> {
        let mut found = Vec::new();
        for id in self.record_ids()? {
            if let Some(namespace) = self.read_record(&id)?.and_then(Record::into_namespace) {
                found.push(namespace);
            }
        }
        Ok(found)
    }

    /// Removes the namespaces, veth pairs, leases and records of every task not in `live`,
    /// as left by a process that died (or by tasks that ended while no one watched). Returns
    /// the ids it removed something of, sorted. It goes on past a failure and returns the
    /// first one at the end.
    pub fn sweep<I, S>(&self, live: I) -> Result<Vec<String>, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let live: HashSet<String> = live.into_iter().map(|s| s.as_ref().to_owned()).collect();
        let _lock = self.lock()?;
        let mut removed = BTreeSet::new();
        let mut first_error = None;
        let mut note = |result: Result<(), Error>| {
            if let Err(e) = result {
                tracing::warn!(error = %e, "sweep");
                first_error.get_or_insert(e);
            }
        };

        for id in self.record_ids()? {
            if !live.contains(&id) {
                note(self.teardown(&id));
                removed.insert(id);
            }
        }
        for owner in self.config.ipam.leases()?.into_keys() {
            if !live.contains(&owner) {
                note(self.config.ipam.release(&owner).map(drop));
                removed.insert(owner);
            }
        }
        let tag = self.alias_prefix();
        for link in cmd::links(None, &["type", "veth"])? {
            let Some(id) = link.alias.as_deref().and_then(|a| a.strip_prefix(&tag)) else {
                continue;
            };
            if !live.contains(id) {
                note(
                    IP.run_unless(&["link", "delete", "dev", &link.name], ABSENT)
                        .map(drop),
                );
                removed.insert(id.to_owned());
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(removed.into_iter().collect()),
        }
    }

    /// Removes every task namespace of this network, then the bridge and its iptables rules.
    pub fn remove(self) -> Result<(), Error> {
        self.sweep(std::iter::empty::<&str>())?;
        let _lock = self.lock()?;
        bridge::remove(&self.config.bridge, self.config.subnet)
    }

    fn make_attachment(&self, id: &str) -> Result<Attachment, Error> {
        let config = &self.config;
        let ip = config.ipam.allocate(id)?;
        let netns = self.netns_name(id);
        let attachment = Attachment {
            id: id.to_owned(),
            netns_path: netns_path(&netns),
            netns,
            ifname: IFNAME.to_owned(),
            ip,
            subnet: config.subnet,
            gateway: config.subnet.gateway(),
            mac: MacAddr::from_ipv4(ip),
            bridge: config.bridge.clone(),
            veth_host: self.veth_name(id),
        };
        let ns = attachment.netns.as_str();
        let veth = attachment.veth_host.as_str();
        let line = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        // Three processes: the namespace, the host side, the namespace's side.
        IP.run(&["netns", "add", ns])?;
        IP.batch(
            None,
            &[
                line(&[
                    "link", "add", "name", veth, "type", "veth", "peer", "name", IFNAME, "netns",
                    ns,
                ]),
                line(&[
                    "link",
                    "set",
                    "dev",
                    veth,
                    "alias",
                    &format!("{}{id}", self.alias_prefix()),
                    "master",
                    &config.bridge,
                    "up",
                ]),
            ],
        )?;
        IP.batch(
            Some(ns),
            &[
                line(&["link", "set", "dev", "lo", "up"]),
                line(&[
                    "link",
                    "set",
                    "dev",
                    IFNAME,
                    "address",
                    &attachment.mac.to_string(),
                    "up",
                ]),
                line(&[
                    "addr",
                    "add",
                    &attachment.cidr(),
                    "broadcast",
                    &config.subnet.broadcast().to_string(),
                    "dev",
                    IFNAME,
                ]),
                line(&[
                    "route",
                    "add",
                    "default",
                    "via",
                    &attachment.gateway.to_string(),
                    "dev",
                    IFNAME,
                ]),
            ],
        )?;
        Ok(attachment)
    }

    /// Whether an attachment's namespace and host link are still there, the link on the
    /// bridge.
    fn is_intact(&self, attachment: &Attachment) -> Result<bool, Error> {
        if !attachment.netns_path.exists() {
            return Ok(false);
        }
        Ok(cmd::link(None, &attachment.veth_host)?
            .is_some_and(|link| link.master.as_deref() == Some(self.bridge()) && link.up))
    }

    /// Removes everything of task `id`, in the reverse order of making it. The lock is held.
    fn teardown(&self, id: &str) -> Result<(), Error> {
        // Deleting either end of a veth pair deletes both; the host end goes first so the
        // bridge loses the port even when a process keeps the namespace alive.
        IP.run_unless(&["link", "delete", "dev", &self.veth_name(id)], ABSENT)?;
        netns::delete(&self.netns_name(id))?;
        self.config.ipam.release(id)?;
        state::remove_file(&self.record_path(id))
    }

    fn lock(&self) -> Result<Lock, Error> {
        Lock::exclusive(&self.config.dir.join(LOCK_FILE))
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.config.dir.join(TASKS_DIR).join(format!("{id}.json"))
    }

    fn read_record(&self, id: &str) -> Result<Option<Record>, Error> {
        state::read_json(&self.record_path(id))
    }

    fn write_record(&self, id: &str, record: &Record) -> Result<(), Error> {
        state::write_json(&self.record_path(id), record)
    }

    /// The ids that have a record, sorted.
    fn record_ids(&self) -> Result<Vec<String>, Error> {
        let dir = self.config.dir.join(TASKS_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", dir, e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue; // a temporary file of an interrupted write
            };
            if check_name("task id", id, MAX_ID_LEN).is_ok() {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The alias the host end of each of this network's veth pairs carries, up to the id.
    fn alias_prefix(&self) -> String {
        format!("berth:{}:", self.config.bridge)
    }

    /// The host end of task `id`'s veth pair: `veth` and 11 hex digits of a hash of the
    /// bridge and the id.
    fn veth_name(&self, id: &str) -> String {
        veth_name(&self.config.bridge, id)
    }
}

impl Record {
    fn into_namespace(self) -> Option<Namespace> {
        match self {
            Record::Pending { .. } => None,
            Record::Attached(a) => Some(Namespace::Attached(a)),
            Record::Isolated(i) => Some(Namespace::Isolated(i)),
        }
    }
}

pub(crate) fn veth_name(scope: &str, id: &str) -> String {
    format!("veth{:011x}", fnv1a(&[scope, id]) & ((1 << 44) - 1))
}

/// FNV-1a over the parts, each followed by a NUL byte: a stable hash for interface names.
pub(crate) fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// Checks a name used for a link, a namespace or a file: 1 to `max` characters out of ASCII
/// letters, digits, `_`, `.` and `-`, starting with a letter or digit (so no tool takes it
/// for an option, and it is never `.` or `..`).
pub(crate) fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), Error> {
    let invalid = |reason| Error::InvalidName {
        what,
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > max {
        return Err(invalid(if max == 15 {
            "it is longer than 15 characters, the kernel's limit for interface names"
        } else {
            "it is longer than 64 characters"
        }));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid("it must start with a letter or a digit"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(invalid(
            "only ASCII letters, digits, '_', '.' and '-' are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_stable_distinct_and_fit_the_kernel() {
        let a = veth_name("berth0", "task-a");
        assert_eq!(a, veth_name("berth0", "task-a"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("veth"));
        assert_ne!(a, veth_name("berth0", "task-b"));
        assert_ne!(a, veth_name("berth1", "task-a"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(veth_name("ab", "c"), veth_name("a", "bc"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("task id", "3f2a9c1e-77b0_x.1", MAX_ID_LEN).is_ok());
        for bad in ["", "-n", ".", "..", "a/b", "a b", "tâche", &"x".repeat(65)] {
            assert!(
                check_name("task id", bad, MAX_ID_LEN).is_err(),
                "{bad:?} was accepted"
            );
        }
        let err = check_name("bridge name", "a-very-long-bridge", 15).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid bridge name \"a-very-long-bridge\": it is longer than 15 characters, the \
             kernel's limit for interface names"
        );
    }

    #[test]
    fn records_are_tagged_with_their_state() {
        let json = serde_json::to_value(Record::Pending { id: "t1".into() }).unwrap();
        assert_eq!(json, serde_json::json!({"state": "pending", "id": "t1"}));
        let isolated = Record::Isolated(Isolated {
            id: "t2".into(),
            netns: "berth-t2".into(),
            netns_path: "/run/netns/berth-t2".into(),
        });
        let json = serde_json::to_value(&isolated).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"state": "isolated", "id": "t2", "netns": "berth-t2",
                               "netnsPath": "/run/netns/berth-t2"})
        );
        let back: Record = serde_json::from_value(json).unwrap();
        assert!(matches!(back.into_namespace(), Some(Namespace::Isolated(i)) if i.id == "t2"));
    }

    #[test]
    fn netmask_covers_every_prefix() {
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(8), Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
    }
}
