//! Checked address types: an IPv4 [`Subnet`] and a [`MacAddr`].

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Error;

/// An IPv4 subnet in CIDR form, such as `10.89.0.0/16`: a network address with no host bits
/// set and a prefix length of at most 30, so that it holds a gateway and at least one task.
///
/// The first host address is the gateway (the bridge's own address); the addresses after it,
/// up to the one before the broadcast address, are handed to tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// The longest prefix a subnet may have: a /30 holds a gateway and one task.
    pub const MAX_PREFIX: u8 = 30;

    /// A subnet from its network address and prefix length.
    ///
    /// # Errors
    /// [`Error::InvalidSubnet`] when the prefix is longer than [`Subnet::MAX_PREFIX`] or the
    /// address has host bits set (the message names the network it was probably meant to be).
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidSubnet {
            value: format!("{network}/{prefix}"),
            reason,
        };
        if prefix > Self::MAX_PREFIX {
            return Err(invalid(format!(
                "the prefix length must be at most {}, to leave room for a gateway and a task",
                Self::MAX_PREFIX
            )));
        }
        let masked = u32::from(network) & mask(prefix);
        if masked != u32::from(network) {
            return Err(invalid(format!(
                "host bits are set; the network is {}/{prefix}",
                Ipv4Addr::from(masked)
            )));
        }
        Ok(Subnet { network, prefix })
    }

    /// The network address (`10.89.0.0`).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length (`16`).
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// The netmask (`255.255.0.0`).
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix))
    }

    /// The broadcast address (`10.89.255.255`).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// The gateway: the first host address (`10.89.0.1`), which the bridge holds.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The first address handed to a task: the one after the gateway.
    pub fn first_task_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 2)
    }

    /// The last address handed to a task: the one before the broadcast address.
    pub fn last_task_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.broadcast()) - 1)
    }

    /// How many addresses can be handed to tasks (all hosts but the gateway).
    pub fn task_capacity(&self) -> u32 {
        u32::from(self.last_task_address()) - u32::from(self.first_task_address()) + 1
    }

    /// Whether `ip` is in the subnet (network and broadcast addresses included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidSubnet {
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| invalid("expected CIDR notation, such as 10.89.0.0/16"))?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| invalid("the network is not an IPv4 address"))?;
        // u8::from_str accepts a leading '+'; CIDR does not.
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("the prefix length is not a number"));
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| invalid("the prefix length is out of range"))?;
        if prefix > 32 {
            return Err(invalid("the prefix length is out of range"));
        }
        Subnet::new(network, prefix).map_err(|e| match e {
            Error::InvalidSubnet { reason, .. } => Error::InvalidSubnet {
                value: s.to_owned(),
                reason,
            },
            other => other,
        })
    }
}

impl Serialize for Subnet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An Ethernet MAC address, written as six lower-case hex octets separated by colons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The MAC address Docker gives a container on a bridge: `02:42` followed by the four
    /// octets of its IPv4 address. It is locally administered and unicast, and it is the same
    /// every time an address is handed out again, so a neighbour's ARP cache never holds a
    /// stale entry for a reused address.
    pub fn from_ipv4(ip: Ipv4Addr) -> Self {
        let [a, b, c, d] = ip.octets();
        MacAddr([0x02, 0x42, a, b, c, d])
    }

    /// The six octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts
                .next()
                .filter(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| Error::InvalidMac(s.to_owned()))?;
            *octet = u8::from_str_radix(part, 16).map_err(|_| Error::InvalidMac(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(Error::InvalidMac(s.to_owned()));
        }
        Ok(MacAddr(octets))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_parses_and_derives_its_addresses() {
        let s: Subnet = "10.89.0.0/16".parse().unwrap();
        assert_eq!(s.network(), Ipv4Addr::new(10, 89, 0, 0));
        assert_eq!(s.prefix_len(), 16);
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 89, 255, 255));
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 89, 0, 1));
        assert_eq!(s.first_task_address(), Ipv4Addr::new(10, 89, 0, 2));
        assert_eq!(s.last_task_address(), Ipv4Addr::new(10, 89, 255, 254));
        assert_eq!(s.task_capacity(), 65533);
        assert_eq!(s.to_string(), "10.89.0.0/16");
        assert!(s.contains(Ipv4Addr::new(10, 89, 200, 3)));
        assert!(!s.contains(Ipv4Addr::new(10, 90, 0, 1)));
    }

    #[test]
    fn smallest_subnet_holds_a_gateway_and_one_task() {
        let s: Subnet = "192.168.7.4/30".parse().unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(192, 168, 7, 5));
        assert_eq!(s.first_task_address(), Ipv4Addr::new(192, 168, 7, 6));
        assert_eq!(s.last_task_address(), Ipv4Addr::new(192, 168, 7, 6));
        assert_eq!(s.task_capacity(), 1);
    }

    #[test]
    fn subnet_rejects_what_it_cannot_use() {
        let reason = |s: &str| match s.parse::<Subnet>() {
            Err(Error::InvalidSubnet { value, reason }) => {
                assert_eq!(value, s);
                reason
            }
            other => panic!("{s}: expected InvalidSubnet, got {other:?}"),
        };
        assert_eq!(
            reason("10.89.0.5/16"),
            "host bits are set; the network is 10.89.0.0/16"
        );
        assert!(reason("10.0.0.0/31").contains("at most 30"));
        assert!(reason("10.0.0.0/33").contains("out of range"));
        assert!(reason("10.0.0.0").contains("CIDR"));
        assert!(reason("10.0.0/8").contains("IPv4"));
        assert!(reason("10.0.0.0/+8").contains("not a number"));
        assert!(reason("fd00::/64").contains("IPv4"));
    }

    #[test]
    fn subnets_overlap_when_they_share_addresses() {
        let a: Subnet = "10.89.0.0/16".parse().unwrap();
        let b: Subnet = "10.89.4.0/24".parse().unwrap();
        let c: Subnet = "10.90.0.0/16".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }

    #[test]
    fn subnet_round_trips_through_json_as_a_string() {
        let s: Subnet = "172.30.0.0/20".parse().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#""172.30.0.0/20""#);
        assert_eq!(serde_json::from_str::<Subnet>(&json).unwrap(), s);
        assert!(serde_json::from_str::<Subnet>(r#""172.30.0.1/20""#).is_err());
    }

    #[test]
    fn mac_follows_docker_and_round_trips() {
        let mac = MacAddr::from_ipv4(Ipv4Addr::new(10, 89, 0, 2));
        assert_eq!(mac.to_string(), "02:42:0a:59:00:02");
        assert_eq!("02:42:0a:59:00:02".parse::<MacAddr>().unwrap(), mac);
        assert_eq!("02:42:0A:59:00:02".parse::<MacAddr>().unwrap(), mac);
        for bad in [
            "02:42:0a:59:00",
            "02:42:0a:59:00:02:03",
            "2:42:0a:59:00:02",
            "zz:42:0a:59:00:02",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&mac).unwrap();
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), mac);
    }
}
