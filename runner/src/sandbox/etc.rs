//! The generated `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.
//!
//! They live in the run's state directory and are bind-mounted read-only over the image's
//! files, as BuildKit does, so they never land in the root filesystem or in a layer.

/// Where the host's resolver configuration is read from.
pub(crate) const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The nameservers used when the host's are unusable inside the container: Docker's defaults.
const DEFAULT_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// `/etc/hosts`: localhost lines, with the container's hostname on the IPv4 one.
pub(crate) fn hosts(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

/// `/etc/hostname`.
pub(crate) fn hostname_file(hostname: &str) -> String {
    format!("{hostname}\n")
}

/// `/etc/resolv.conf` from the host's file (`None` when it is missing), for a container in the
/// host's network namespace or, with `own_namespace`, in another one.
///
/// With the host's network the host's file is used as it is: its loopback resolvers are
/// reachable. In another network namespace ([`super::Network::None`], or a namespace joined
/// with [`super::Network::Join`]) the container cannot reach them, so loopback nameservers are
/// dropped, and Docker's default nameservers are used if none remain; the rest of the host's
/// file (search domains, options) is kept, as Docker does for its bridge networks.
pub(crate) fn resolv_conf(host: Option<&str>, own_namespace: bool) -> String {
    match (own_namespace, host) {
        (false, Some(text)) => {
            let mut out = text.to_string();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out
        }
        (_, host) => {
            let mut out = String::new();
            let mut nameservers = 0;
            for line in host.unwrap_or("").lines() {
                let mut words = line.split_whitespace();
                if words.next() == Some("nameserver") {
                    match words.next() {
                        Some(addr) if !is_loopback(addr) => nameservers += 1,
                        _ => continue,
                    }
                }
                out.push_str(line);
                out.push('\n');
            }
            if nameservers == 0 {
                for addr in DEFAULT_NAMESERVERS {
                    out.push_str(&format!("nameserver {addr}\n"));
                }
            }
            out
        }
    }
}

fn is_loopback(addr: &str) -> bool {
    // A zone suffix (`fe80::1%eth0`) does not make an address loopback; strip it to parse.
    let addr = addr.split('%').next().unwrap_or(addr);
    addr.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_names_the_hostname() {
        let text = hosts("box");
        assert_eq!(
            text,
            "127.0.0.1\tlocalhost box\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        );
        assert_eq!(hostname_file("box"), "box\n");
    }

    #[test]
    fn host_network_keeps_the_host_file() {
        let host = "search example.org\nnameserver 127.0.0.53\noptions edns0";
        assert_eq!(resolv_conf(Some(host), false), format!("{host}\n"));
    }

    #[test]
    fn own_namespace_drops_loopback_resolvers() {
        let host =
            "search example.org\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.2\n";
        assert_eq!(
            resolv_conf(Some(host), true),
            "search example.org\nnameserver 10.0.0.2\n"
        );
        assert_eq!(
            resolv_conf(Some("nameserver 127.0.0.1\n"), true),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(
            resolv_conf(None, true),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }

    #[test]
    fn missing_host_file_with_host_network() {
        assert_eq!(
            resolv_conf(None, false),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }
}
