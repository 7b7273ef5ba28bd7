//! The cluster's "VPC": a Linux bridge holding the subnet's gateway address, with forwarding
//! and outbound NAT.
//!
//! [`ensure`] is idempotent and safe to run from several processes: it creates the bridge only
//! when it is missing (a link of that name that is not a bridge is an error), adds the gateway
//! address only when it is not there (another IPv4 address on the bridge is an error: the
//! subnet was changed under a live bridge), and brings the bridge up. Where `iptables` exists,
//! it then adds, each only when `iptables -C` does not find it, and each tagged with the
//! comment `berth:<bridge>`:
//! - `filter FORWARD -i BR -o BR -j ACCEPT`: tasks reach each other through the bridge even
//!   when `br_netfilter` sends bridged frames through a `FORWARD` chain whose policy is `DROP`
//!   (Docker sets that policy);
//! - with outbound traffic on: `FORWARD -i BR ! -o BR -j ACCEPT`, `FORWARD -o BR -m conntrack
//!   --ctstate RELATED,ESTABLISHED -j ACCEPT` and `nat POSTROUTING -s SUBNET ! -o BR -j
//!   MASQUERADE`, after turning on `net.ipv4.ip_forward`, as Docker's bridge driver does.
//!
//! Without `iptables` the bridge still works for traffic between tasks and between the host
//! and tasks; tasks just cannot leave the host.

use std::fs;

use super::Error;
use super::addr::Subnet;
use super::cmd::{self, ABSENT, IP, IPTABLES};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// What iptables says when the rule to check or delete is not there.
const NO_RULE: &[&str] = &[
    "Bad rule",
    "does a matching rule exist",
    "No chain/target/match",
];

/// What [`ensure`] managed to set up for traffic leaving the subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outbound {
    /// Whether tasks' traffic to other networks is forwarded and masqueraded.
    pub(crate) nat: bool,
}

/// One iptables rule: its table, its chain and its match and target.
pub(crate) struct Rule {
    table: &'static str,
    chain: &'static str,
    spec: Vec<String>,
}

impl Rule {
    /// A rule of `table` and `chain`; `spec` is its match and target.
    pub(crate) fn new(table: &'static str, chain: &'static str, spec: Vec<String>) -> Self {
        Rule { table, chain, spec }
    }

    fn args(&self, op: &str) -> Vec<String> {
        let mut args: Vec<String> = ["-w", "-t", self.table, op, self.chain]
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.extend(self.spec.iter().cloned());
        args
    }

    /// Inserts the rule at the head of its chain unless it is there already.
    pub(crate) fn ensure(&self) -> Result<(), Error> {
        if IPTABLES.output(&self.args("-C"))?.status.success() {
            return Ok(());
        }
        IPTABLES.run(&self.args("-I")).map(drop)
    }

    /// Deletes every copy of the rule.
    pub(crate) fn delete(&self) -> Result<(), Error> {
        while IPTABLES.run_unless(&self.args("-D"), NO_RULE)? {}
        Ok(())
    }
}

fn rules(bridge: &str, subnet: Subnet, outbound: bool) -> Vec<Rule> {
    let comment = format!("berth:{bridge}");
    let rule = |table, chain, spec: &[&str]| {
        let mut spec: Vec<String> = spec.iter().map(|s| (*s).to_owned()).collect();
        spec.splice(
            spec.len() - 2..spec.len() - 2,
            ["-m", "comment", "--comment", &comment].map(str::to_owned),
        );
        Rule { table, chain, spec }
    };
    let subnet = subnet.to_string();
    let mut rules = vec![rule(
        "filter",
        "FORWARD",
        &["-i", bridge, "-o", bridge, "-j", "ACCEPT"],
    )];
    if outbound {
        rules.extend([
            rule(
                "filter",
                "FORWARD",
                &["-i", bridge, "!", "-o", bridge, "-j", "ACCEPT"],
            ),
            rule(
                "filter",
                "FORWARD",
                &[
                    "-o",
                    bridge,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "RELATED,ESTABLISHED",
                    "-j",
                    "ACCEPT",
                ],
            ),
            rule(
                "nat",
                "POSTROUTING",
                &["-s", &subnet, "!", "-o", bridge, "-j", "MASQUERADE"],
            ),
        ]);
    }
    rules
}

/// Brings up the bridge `name` with the gateway of `subnet`; see the module docs.
pub(crate) fn ensure(name: &str, subnet: Subnet, outbound: bool) -> Result<Outbound, Error> {
    match cmd::link(None, name)? {
        Some(link) => check_is_bridge(&link)?,
        None => {
            let created = IP.run_unless(
                &["link", "add", "name", name, "type", "bridge"],
                &["File exists"],
            )?;
            if !created {
                // Another process made it meanwhile; it must still be a bridge.
                let link = cmd::link(None, name)?.ok_or_else(|| Error::Output {
                    command: format!("ip link show dev {name}"),
                    reason: "the bridge vanished while it was being created".into(),
                })?;
                check_is_bridge(&link)?;
            }
        }
    }

    let expected = format!("{}/{}", subnet.gateway(), subnet.prefix_len());
    let addresses: Vec<String> = cmd::ipv4_addresses(None, Some(name))?
        .into_iter()
        .map(|(_, address)| address)
        .collect();
    if !addresses.contains(&expected) {
        if let Some(found) = addresses.into_iter().next() {
            return Err(Error::BridgeAddress {
                bridge: name.to_owned(),
                found,
                expected,
            });
        }
        let broadcast = subnet.broadcast().to_string();
        IP.run_unless(
            &[
                "addr",
                "add",
                &expected,
                "broadcast",
                &broadcast,
                "dev",
                name,
            ],
            &["File exists", "already assigned"],
        )?;
    }
    IP.run(&["link", "set", "dev", name, "up"])?;

    if !IPTABLES.available() {
        tracing::warn!(
            bridge = name,
            "iptables is not installed (Debian package `iptables`): tasks on the bridge cannot \
             reach other networks"
        );
        return Ok(Outbound { nat: false });
    }
    let forwarding = outbound && enable_forwarding(name);
    for rule in rules(name, subnet, forwarding) {
        rule.ensure()?;
    }
    Ok(Outbound { nat: forwarding })
}

/// Deletes the bridge and the rules [`ensure`] added for it (those of both settings of
/// outbound traffic). Forwarding stays on: other bridges may need it.
pub(crate) fn remove(name: &str, subnet: Subnet) -> Result<(), Error> {
    if IPTABLES.available() {
        for rule in rules(name, subnet, true) {
            rule.delete()?;
        }
    }
    if let Some(link) = cmd::link(None, name)? {
        check_is_bridge(&link)?;
        IP.run_unless(&["link", "delete", "dev", name], ABSENT)?;
    }
    Ok(())
}

fn check_is_bridge(link: &cmd::Link) -> Result<(), Error> {
    match link.kind.as_deref() {
        Some("bridge") => Ok(()),
        kind => Err(Error::NotABridge {
            name: link.name.clone(),
            kind: kind.unwrap_or("physical").to_owned(),
        }),
    }
}

/// Turns on `net.ipv4.ip_forward` in the current network namespace; `false`, with a warning,
/// when it cannot.
pub(crate) fn enable_forwarding(context: &str) -> bool {
    match fs::read_to_string(IP_FORWARD) {
        Ok(value) if value.trim() == "1" => return true,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(%context, error = %e, "cannot read {IP_FORWARD}");
            return false;
        }
    }
    match fs::write(IP_FORWARD, "1") {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(%context, error = %e, "cannot turn on IP forwarding");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_carry_the_bridge_comment_before_their_target() {
        let subnet: Subnet = "10.89.0.0/16".parse().unwrap();
        let rules = rules("berth0", subnet, true);
        assert_eq!(rules.len(), 4);
        assert_eq!(
            rules[3].args("-C").join(" "),
            "-w -t nat -C POSTROUTING -s 10.89.0.0/16 ! -o berth0 -m comment --comment \
             berth:berth0 -j MASQUERADE"
        );
        assert_eq!(
            rules[0].args("-I").join(" "),
            "-w -t filter -I FORWARD -i berth0 -o berth0 -m comment --comment berth:berth0 -j \
             ACCEPT"
        );
        assert_eq!(super::rules("berth0", subnet, false).len(), 1);
    }
}
