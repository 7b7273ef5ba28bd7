//! What an agent offers by default: this machine's CPUs and memory, and the address the
//! control plane reaches it at.

use std::net::{IpAddr, SocketAddr};

/// CPU units of this machine: 1024 per CPU the process may run on.
pub fn cpu_units() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1024
}

/// MiB of memory of this machine (`MemTotal` of `/proc/meminfo`); `None` when unreadable.
pub fn memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    let scale = match words.next() {
        Some("kB") | None => 1024,
        Some("MB") => 1024 * 1024,
        Some(_) => return None,
    };
    Some(value * scale / (1024 * 1024))
}

/// ECS's `ecs.cpu-architecture` of this machine: `x86_64` or `arm64`.
pub fn cpu_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    }
}

/// The address of this machine that packets to `peer` leave from: the one the peer can reach
/// it at. Nothing is sent (a UDP socket is only connected).
pub fn local_address_toward(peer: SocketAddr) -> std::io::Result<IpAddr> {
    let bind: SocketAddr = match peer {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("a socket address"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("a socket address"),
    };
    let socket = std::net::UdpSocket::bind(bind)?;
    socket.connect(peer)?;
    Ok(socket.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_mib() {
        let text = "MemTotal:       24683584 kB\nMemFree:  100 kB\n";
        assert_eq!(parse_mem_total(text), Some(24105));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert!(cpu_units() >= 1024);
    }

    #[test]
    fn loopback_peers_are_reached_from_loopback() {
        let ip = local_address_toward("127.0.0.1:5400".parse().unwrap()).unwrap();
        assert!(ip.is_loopback(), "{ip}");
    }
}
