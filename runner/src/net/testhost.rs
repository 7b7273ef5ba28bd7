//! Separate "hosts" on one machine, for tests: a named network namespace joined to the
//! current one by a veth pair, as each EC2 instance of a multi-agent test.
//!
//! ```no_run
//! use berth_runner::net::testhost::TestHost;
//!
//! let host = TestHost::create("berth-agent-1", "10.250.1.0/30".parse()?)?;
//! // An agent that reaches the control plane at 10.250.1.1 (which must listen on that
//! // address or on 0.0.0.0, not only on 127.0.0.1):
//! let status = host
//!     .command("berth")
//!     .args(["agent", "--join", &format!("http://{}:5400", host.host_ip())])
//!     .status();
//! // The control plane reaches the agent at host.ip(), 10.250.1.2.
//! # Ok::<(), berth_runner::net::Error>(())
//! ```
//!
//! [`TestHost::create`] makes the namespace `name` (`/run/netns/<name>`, `lo` up), and a veth
//! pair on the link subnet given (a /30 is enough): the first host address on the host end,
//! the second on `eth0` inside, with a default route back through the host. Forwarding is
//! turned on in the current namespace, and where `iptables` exists two `FORWARD` rules accept
//! the veth's traffic (commented `berth-testhost:<name>`), so test hosts reach one another
//! through the host even when the `FORWARD` policy is `DROP`. A namespace of the same name left
//! by an earlier run that crashed is replaced. Dropping the [`TestHost`] removes everything it
//! made; [`TestHost::remove`] does the same and reports failures.
//!
//! A process started with [`TestHost::command`] (`ip netns exec <name> ...`) lives in the
//! namespace and sees a `/sys` of its own; it can make bridges, namespaces and veth pairs
//! there, so a whole [`super::Network`] can run inside a test host.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::bridge::{self, Rule};
use super::cmd::{ABSENT, IP, IPTABLES};
use super::netns;
use super::{Error, IFNAME, MAX_ID_LEN, Subnet, check_name, fnv1a};

/// A network namespace standing for a separate machine; see the module docs.
#[derive(Debug)]
pub struct TestHost {
    name: String,
    netns_path: PathBuf,
    veth_host: String,
    link: Subnet,
    removed: bool,
}

impl TestHost {
    /// Makes the namespace `name` joined to this one over `link`; see the module docs.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for an unusable name; the errors of the tools, after whatever
    /// was made has been removed again.
    pub fn create(name: &str, link: Subnet) -> Result<TestHost, Error> {
        check_name("test host name", name, MAX_ID_LEN)?;
        let mut host = TestHost {
            name: name.to_owned(),
            netns_path: netns::netns_path(name),
            veth_host: format!("th{:013x}", fnv1a(&["testhost", name]) & ((1 << 52) - 1)),
            link,
            removed: false,
        };
        host.teardown()?; // the leftovers of an earlier run
        if let Err(e) = host.make() {
            host.removed = true;
            if let Err(cleanup) = host.teardown() {
                tracing::warn!(name, error = %cleanup, "cannot remove a half-made test host");
            }
            return Err(e);
        }
        Ok(host)
    }

    fn make(&self) -> Result<(), Error> {
        let (ns, veth) = (self.name.as_str(), self.veth_host.as_str());
        let prefix = self.link.prefix_len();
        netns::add(ns)?;
        IP.run(&[
            "link", "add", "name", veth, "type", "veth", "peer", "name", IFNAME, "netns", ns,
        ])?;
        IP.run(&[
            "addr",
            "add",
            &format!("{}/{prefix}", self.host_ip()),
            "dev",
            veth,
        ])?;
        IP.run(&["link", "set", "dev", veth, "up"])?;
        IP.run(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/{prefix}", self.ip()),
            "dev",
            IFNAME,
        ])?;
        IP.run(&["-n", ns, "link", "set", "dev", IFNAME, "up"])?;
        IP.run(&[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &self.host_ip().to_string(),
            "dev",
            IFNAME,
        ])?;
        bridge::enable_forwarding(ns);
        if IPTABLES.available() {
            for rule in self.rules() {
                rule.ensure()?;
            }
        }
        Ok(())
    }

    fn rules(&self) -> [Rule; 2] {
        let comment = format!("berth-testhost:{}", self.name);
        let rule = |direction: &str| {
            Rule::new(
                "filter",
                "FORWARD",
                [
                    direction,
                    &self.veth_host,
                    "-m",
                    "comment",
                    "--comment",
                    &comment,
                    "-j",
                    "ACCEPT",
                ]
                .map(str::to_owned)
                .to_vec(),
            )
        };
        [rule("-i"), rule("-o")]
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's path.
    pub fn netns_path(&self) -> &Path {
        &self.netns_path
    }

    /// The test host's address: the link's second host address, on `eth0` inside.
    pub fn ip(&self) -> Ipv4Addr {
        self.link.first_task_address()
    }

    /// The address the test host reaches this host at: the link's first host address.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.link.gateway()
    }

    /// The link subnet.
    pub fn link(&self) -> Subnet {
        self.link
    }

    /// The host end of the veth pair.
    pub fn veth_host(&self) -> &str {
        &self.veth_host
    }

    /// `ip netns exec <name> <program>`: a command that runs `program` inside the test host.
    /// Add arguments, environment and stdio to it as to any [`Command`].
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let ip = IP
            .path()
            .map_or_else(|| PathBuf::from("ip"), Path::to_owned);
        let mut command = Command::new(ip);
        command
            .args(["netns", "exec", self.name.as_str()])
            .arg(program.as_ref());
        command
    }

    /// Runs `f` on a thread inside the test host; see [`super::within`].
    pub fn within<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        netns::within(&self.netns_path, f)
    }

    /// Removes the namespace, the veth pair and the rules.
    pub fn remove(mut self) -> Result<(), Error> {
        self.removed = true;
        self.teardown()
    }

    fn teardown(&self) -> Result<(), Error> {
        if IPTABLES.available() {
            for rule in self.rules() {
                rule.delete()?;
            }
        }
        IP.run_unless(&["link", "delete", "dev", &self.veth_host], ABSENT)?;
        netns::delete(&self.name)?;
        Ok(())
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = self.teardown() {
                tracing::warn!(name = %self.name, error = %e, "cannot remove test host");
            }
        }
    }
}
