//! The network module's one error type.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitStatus;

use super::addr::Subnet;
use super::publish::Protocol;

/// What went wrong while setting up, tearing down or looking at task networking.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command-line tool (`ip`, `iptables`) could not be started at all.
    #[error("cannot run `{program}`: {source} (it comes with the Debian package `{package}`)")]
    ToolSpawn {
        /// The program that was looked up.
        program: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
        /// Why it could not be started.
        #[source]
        source: io::Error,
    },

    /// A command-line tool ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, as a shell would show it.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote on stderr, trimmed.
        stderr: String,
    },

    /// A command-line tool printed something this module cannot read.
    #[error("unexpected output from `{command}`: {reason}")]
    Output {
        /// The command line.
        command: String,
        /// What was wrong with the output.
        reason: String,
    },

    /// A subnet that cannot be parsed or cannot hold a gateway and a task.
    #[error("invalid subnet {value:?}: {reason}")]
    InvalidSubnet {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A MAC address that cannot be parsed.
    #[error("invalid MAC address {0:?}: expected six hex octets separated by colons")]
    InvalidMac(String),

    /// A name (bridge, namespace prefix, task id, test host) that the kernel or this module
    /// cannot use.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// Which kind of name: `bridge name`, `task id`, ...
        what: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A link with the bridge's name exists and is something else.
    #[error("network interface {name} exists and is not a bridge (it is a {kind} link)")]
    NotABridge {
        /// The link's name.
        name: String,
        /// Its kind as the kernel names it (`veth`, `dummy`, ... or `physical`).
        kind: String,
    },

    /// The bridge holds an IPv4 address other than the gateway of the configured subnet, as
    /// when the subnet was changed while the bridge stayed up.
    #[error(
        "bridge {bridge} already has the address {found}, not {expected} (the gateway of its \
         subnet); remove the bridge or configure that subnet"
    )]
    BridgeAddress {
        /// The bridge.
        bridge: String,
        /// The address it has, with its prefix length.
        found: String,
        /// The address it should have, with its prefix length.
        expected: String,
    },

    /// A network namespace with the name this module would give a task already exists and is
    /// not one of this network's.
    #[error(
        "network namespace {name} already exists and is not recorded in {}; remove it with \
         `ip netns delete {name}` if nothing uses it",
        state.display()
    )]
    NamespaceTaken {
        /// The namespace's name.
        name: String,
        /// The state directory that does not know it.
        state: PathBuf,
    },

    /// A task id already has a namespace of the other kind (a loopback-only namespace when
    /// an attachment was asked for, or the reverse).
    #[error("{id} already has a {existing} namespace; release it first")]
    IdInUse {
        /// The task id.
        id: String,
        /// What it has: `bridge-attached` or `loopback-only`.
        existing: &'static str,
    },

    /// Every address of the subnet is leased.
    #[error("no free address left in {subnet} ({leased} leased)")]
    SubnetExhausted {
        /// The subnet.
        subnet: Subnet,
        /// How many addresses are leased.
        leased: usize,
    },

    /// The IPAM state was written for another subnet and still has leases in it.
    #[error(
        "the address leases in {} are for subnet {recorded}, not {requested}, and {leases} of \
         them are still held; release them or use another state directory",
        path.display()
    )]
    SubnetMismatch {
        /// The state file.
        path: PathBuf,
        /// The subnet it records.
        recorded: Subnet,
        /// The subnet asked for.
        requested: Subnet,
        /// How many leases it holds.
        leases: usize,
    },

    /// A state file that is not what this module writes.
    #[error("damaged state file {}: {source}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: serde_json::Error,
    },

    /// A file system operation on the state directory or on `/proc` failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done: `create`, `read`, `lock`, ...
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error, with its errno.
        #[source]
        source: io::Error,
    },

    /// A network namespace could not be entered.
    #[error("cannot enter network namespace {}: {source}", path.display())]
    EnterNamespace {
        /// The namespace's path (`/run/netns/<name>`).
        path: PathBuf,
        /// Why `open(2)` or `setns(2)` failed.
        #[source]
        source: io::Error,
    },

    /// A port mapping that cannot be published, such as container port 0.
    #[error("invalid port mapping: {0}")]
    InvalidMapping(String),

    /// A fixed host port could not be bound.
    #[error("host port {port}/{protocol} on {ip} is not available: {source}")]
    PortUnavailable {
        /// The address the port was bound on.
        ip: IpAddr,
        /// The port.
        port: u16,
        /// The protocol it was bound for.
        protocol: Protocol,
        /// Why `bind(2)` or `listen(2)` failed.
        #[source]
        source: io::Error,
    },

    /// Every port of the dynamic range is in use.
    #[error("no free {protocol} host port in {first}-{last} on {ip}")]
    NoFreePort {
        /// The address ports were bound on.
        ip: IpAddr,
        /// The protocol they were bound for.
        protocol: Protocol,
        /// The range's first port.
        first: u16,
        /// The range's last port.
        last: u16,
    },

    /// The background runtime that carries the port proxies could not start.
    #[error("cannot start the port proxy runtime: {0}")]
    ProxyRuntime(#[source] io::Error),

    /// The subnet overlaps an address that another interface already holds, so routes to
    /// one of them would shadow the other.
    #[error("subnet {subnet} overlaps {address} on {device}; choose another subnet")]
    SubnetInUse {
        /// The subnet asked for.
        subnet: Subnet,
        /// The interface holding the overlapping address.
        device: String,
        /// That address, with its prefix length.
        address: String,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
