//! Task networking against the real kernel, as root: bridges, network namespaces, veth pairs,
//! address leases shared between processes, published ports, sweeping after a crash, and test
//! hosts standing for separate machines.
//!
//! These tests need root and iproute2's `ip`; they use `iptables` where it is installed.
//! `bash scripts/setup.sh` installs both. They fail, naming that script, when something is
//! missing: they are never skipped.
//!
//! Each test has a bridge, a namespace prefix and a subnet of its own (10.231.<n>.0/24, test
//! hosts on 10.232.<n>.0/30), so they run in parallel; a lock file held for the life of the
//! test process keeps two runs of this suite on one machine apart. A [`Fixture`] removes
//! everything a test made, even when it fails. Some tests run this very binary again as a
//! helper process (a second IPAM client, an owner that crashes, a process inside a test
//! host): see [`child_process_helper`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Duration;

use berth_runner::net::testhost::TestHost;
use berth_runner::net::{
    EPHEMERAL_PORTS, Error, Ipam, MacAddr, NETNS_DIR, Namespace, Network, PortMapping, Protocol,
    Publisher, Subnet, within,
};
use tempfile::TempDir;

const HELPER_MODE: &str = "BERTH_NET_TEST_HELPER";
const HELPER_ARGS: &str = "BERTH_NET_TEST_HELPER_ARGS";
const MACHINE_LOCK: &str = "/run/berth-net-tests.lock";

// ---------------------------------------------------------------------------------------------
// Environment and cleanup

/// Fails the test, loudly, when the machine cannot run it; then takes the machine-wide lock
/// for the rest of this process's life.
fn require_environment() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the network tests need root (namespaces, links, iptables); run them as root after \
         `bash scripts/setup.sh`"
    );
    let ip = Command::new("ip").arg("-V").output();
    assert!(
        ip.is_ok_and(|o| o.status.success()),
        "`ip` is not installed: run `bash scripts/setup.sh` (installs iproute2)"
    );
    static LOCK: OnceLock<File> = OnceLock::new();
    LOCK.get_or_init(|| {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(MACHINE_LOCK)
            .unwrap_or_else(|e| panic!("cannot open {MACHINE_LOCK}: {e}"));
        // SAFETY: flock on a descriptor owned by `file`, which the static keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "cannot lock {MACHINE_LOCK}");
        file
    });
}

fn iptables_installed() -> bool {
    Command::new("iptables")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `ip` and returns its output whatever its status.
fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .output()
        .expect("cannot run ip")
}

/// Runs `ip -j ...` and parses the JSON it prints; panics when it fails.
fn ip_json(args: &[&str]) -> serde_json::Value {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ip {args:?}: {e}"))
}

fn link_exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).status.success()
}

/// One test's network: its names and subnet, its state directory, and the cleanup of
/// everything made under those names when it is dropped.
struct Fixture {
    bridge: String,
    prefix: String,
    subnet: Subnet,
    state: TempDir,
    network: Option<Network>,
}

impl Fixture {
    /// A fixture for test number `n` (which picks its bridge and subnet). Removes whatever an
    /// earlier, crashed run of the same test left behind.
    fn new(n: u8) -> Fixture {
        require_environment();
        let fixture = Fixture {
            bridge: format!("btn{n}"),
            prefix: format!("btn{n}-"),
            subnet: format!("10.231.{n}.0/24").parse().unwrap(),
            state: tempfile::tempdir().unwrap(),
            network: None,
        };
        fixture.clean();
        fixture
    }

    fn builder(&self) -> berth_runner::net::NetworkBuilder {
        Network::builder()
            .bridge(&self.bridge)
            .subnet(self.subnet)
            .netns_prefix(&self.prefix)
            .state_dir(self.state.path())
    }

    /// Builds the network and keeps a handle for the cleanup.
    fn network(&mut self) -> Network {
        let network = self.builder().build().expect("build the network");
        self.network = Some(network.clone());
        network
    }

    /// Removes every namespace with the fixture's prefix, the bridge and its iptables rules.
    fn clean(&self) {
        if let Ok(entries) = fs::read_dir(NETNS_DIR) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&self.prefix) {
                    ip(&["netns", "delete", &name]);
                }
            }
        }
        ip(&["link", "delete", "dev", &self.bridge]);
        if iptables_installed() {
            delete_rules_tagged(&format!("berth:{}", self.bridge));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(network) = self.network.take() {
            if let Err(e) = network.remove() {
                eprintln!("cleanup: {e}");
            }
        }
        self.clean();
    }
}

/// Deletes every FORWARD and POSTROUTING rule whose comment is `tag`.
fn delete_rules_tagged(tag: &str) {
    for (table, chain) in [("filter", "FORWARD"), ("nat", "POSTROUTING")] {
        let out = Command::new("iptables")
            .args(["-w", "-t", table, "-S", chain])
            .output()
            .expect("iptables -S");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(rule) = line.strip_prefix("-A ") else {
                continue;
            };
            if !rule.split_whitespace().any(|word| word == tag) {
                continue;
            }
            let mut args = vec!["-w", "-t", table, "-D"];
            args.extend(rule.split_whitespace());
            Command::new("iptables").args(&args).output().ok();
        }
    }
}

/// Whether iptables has `rule` (the arguments after the chain) in `table`/`chain`.
fn iptables_has(table: &str, chain: &str, rule: &[&str]) -> bool {
    let mut args = vec!["-w", "-t", table, "-C", chain];
    args.extend(rule);
    Command::new("iptables")
        .args(&args)
        .output()
        .expect("iptables -C")
        .status
        .success()
}

// ---------------------------------------------------------------------------------------------
// TCP helpers

/// Accepts one connection, echoes what it reads until the peer's half-close, and returns the
/// peer's address.
fn echo_once(listener: TcpListener) -> JoinHandle<SocketAddr> {
    std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).expect("read");
        conn.write_all(&buf).expect("write");
        peer
    })
}

/// Connects, sends `message`, half-closes and returns the reply.
fn exchange(addr: SocketAddr, message: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(message.as_bytes())?;
    conn.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    Ok(reply)
}

/// `exchange` from inside the namespace at `netns`.
fn exchange_from(netns: &Path, addr: SocketAddr, message: &str) -> std::io::Result<String> {
    within(netns, || exchange(addr, message)).expect("enter the namespace")
}

/// A listener bound inside the namespace at `netns`.
fn listen_in(netns: &Path, addr: SocketAddr) -> TcpListener {
    within(netns, || TcpListener::bind(addr))
        .expect("enter the namespace")
        .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", netns.display()))
}

// ---------------------------------------------------------------------------------------------
// UDP helpers

/// A UDP socket bound inside the namespace at `netns`.
fn udp_bind_in(netns: &Path, addr: SocketAddr) -> UdpSocket {
    within(netns, || UdpSocket::bind(addr))
        .expect("enter the namespace")
        .unwrap_or_else(|e| panic!("bind {addr}/udp in {}: {e}", netns.display()))
}

/// Answers each datagram with `<sender>|<datagram>` until it gets `stop`; returns the senders
/// it answered, in order.
fn udp_echo(socket: UdpSocket) -> JoinHandle<Vec<SocketAddr>> {
    std::thread::spawn(move || {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut peers = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            let (len, peer) = socket.recv_from(&mut buf).expect("recv");
            if &buf[..len] == b"stop" {
                return peers;
            }
            let mut reply = format!("{peer}|").into_bytes();
            reply.extend_from_slice(&buf[..len]);
            socket.send_to(&reply, peer).expect("send");
            peers.push(peer);
        }
    })
}

/// A UDP client socket on 127.0.0.1 that waits for replies for a while.
fn udp_client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
}

/// Sends `message` to `addr` and returns the reply of a [`udp_echo`]: the sender it saw and
/// the message. The reply must come from `addr`.
fn udp_ask(socket: &UdpSocket, addr: SocketAddr, message: &str) -> (SocketAddr, String) {
    socket.send_to(message.as_bytes(), addr).unwrap();
    let mut buf = [0u8; 2048];
    let (len, from) = socket.recv_from(&mut buf).expect("no UDP reply");
    assert_eq!(from, addr, "the reply came from elsewhere");
    let reply = std::str::from_utf8(&buf[..len]).unwrap();
    let (peer, message) = reply.split_once('|').unwrap();
    (peer.parse().unwrap(), message.to_owned())
}

/// A port free for both TCP and UDP on every address a moment ago.
fn free_port_for_both() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            return port;
        }
    }
    panic!("no port is free for both TCP and UDP");
}

// ---------------------------------------------------------------------------------------------
// Helper processes

/// Runs this test binary again as a helper process; returns its output. `mode` and `args` say
/// what [`child_process_helper`] does in it.
fn helper(mode: &str, args: &[&str], wrap: Option<&TestHost>) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut command = match wrap {
        Some(host) => host.command(&exe),
        None => Command::new(&exe),
    };
    command
        .args([
            "--exact",
            "child_process_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_MODE, mode)
        .env(HELPER_ARGS, args.join(" "))
        .stdin(Stdio::null());
    command
}

/// The lines a helper printed with the `helper: ` marker.
fn helper_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // The harness prints "test child_process_helper ... " with no newline first.
        .filter_map(|l| l.split_once("helper: "))
        .map(|(_, line)| line.to_owned())
        .collect()
}

/// Not a test of its own: the body of the helper processes the other tests start. Without
/// the helper variables it does nothing.
#[test]
fn child_process_helper() {
    let Ok(mode) = std::env::var(HELPER_MODE) else {
        return;
    };
    let args: Vec<String> = std::env::var(HELPER_ARGS)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    match mode.as_str() {
        // ipam DIR SUBNET TAG COUNT: leases COUNT addresses, printing each.
        "ipam" => {
            let ipam = Ipam::open(&args[0], args[1].parse().unwrap()).unwrap();
            let count: usize = args[3].parse().unwrap();
            for i in 0..count {
                let owner = format!("{}-{i}", args[2]);
                let ip = ipam.allocate(&owner).unwrap();
                println!("helper: {owner} {ip}");
            }
        }
        // crash STATE BRIDGE SUBNET PREFIX ID...: attaches the ids, then is killed.
        "crash" => {
            let network = Network::builder()
                .state_dir(&args[0])
                .bridge(&args[1])
                .subnet(args[2].parse().unwrap())
                .netns_prefix(&args[3])
                .build()
                .unwrap();
            for id in &args[4..] {
                let a = network.attach(id).unwrap();
                println!("helper: {id} {}", a.ip);
            }
            std::io::stdout().flush().unwrap();
            // SAFETY: kill and getpid have no preconditions; SIGKILL ends this process here.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        // connect ADDR MESSAGE: one exchange, printing the reply.
        "connect" => {
            let reply = exchange(args[0].parse().unwrap(), &args[1]).unwrap();
            println!("helper: {reply}");
        }
        // inside STATE: a whole network with the default bridge and subnet, in a test host.
        "inside" => {
            let network = Network::builder()
                .state_dir(&args[0])
                .netns_prefix("btn-inside-")
                .build()
                .unwrap();
            let result = std::panic::catch_unwind(|| {
                let x = network.attach("x").unwrap();
                let y = network.attach("y").unwrap();
                let listener = listen_in(&y.netns_path, SocketAddr::new(y.ip.into(), 7000));
                let echo = echo_once(listener);
                let reply =
                    exchange_from(&x.netns_path, SocketAddr::new(y.ip.into(), 7000), "inside")
                        .unwrap();
                assert_eq!(echo.join().unwrap().ip(), IpAddr::V4(x.ip));
                println!("helper: {} {} {reply}", x.ip, y.ip);
            });
            network.remove().unwrap();
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
        }
        other => panic!("unknown helper mode {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The bridge

#[test]
fn bridge_comes_up_with_its_gateway_idempotently_and_goes_away() {
    let mut fx = Fixture::new(1);
    let network = fx.network();
    assert_eq!(network.gateway(), Ipv4Addr::new(10, 231, 1, 1));

    let link = ip_json(&["-j", "-d", "link", "show", "dev", &fx.bridge]);
    assert_eq!(link[0]["linkinfo"]["info_kind"], "bridge");
    assert!(
        link[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP"),
        "the bridge is not up: {link}"
    );
    let addresses = || {
        ip_json(&["-j", "-4", "addr", "show", "dev", &fx.bridge])[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect::<Vec<_>>()
    };
    assert_eq!(addresses(), ["10.231.1.1/24"]);

    if iptables_installed() {
        assert!(network.outbound_nat());
        assert_eq!(
            fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap()
                .trim(),
            "1"
        );
        let tag = format!("berth:{}", fx.bridge);
        let masquerade = [
            "-s",
            "10.231.1.0/24",
            "!",
            "-o",
            &fx.bridge,
            "-m",
            "comment",
            "--comment",
            &tag,
            "-j",
            "MASQUERADE",
        ];
        assert!(iptables_has("nat", "POSTROUTING", &masquerade));
        let intra = [
            "-i",
            &fx.bridge,
            "-o",
            &fx.bridge,
            "-m",
            "comment",
            "--comment",
            &tag,
            "-j",
            "ACCEPT",
        ];
        assert!(iptables_has("filter", "FORWARD", &intra));

        // Building again changes nothing: one address, one copy of each rule.
        let again = fx.builder().build().unwrap();
        assert_eq!(addresses(), ["10.231.1.1/24"]);
        let out = Command::new("iptables")
            .args(["-w", "-t", "nat", "-S", "POSTROUTING"])
            .output()
            .unwrap();
        let copies = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&tag))
            .count();
        assert_eq!(copies, 1);

        again.remove().unwrap();
        assert!(!iptables_has("nat", "POSTROUTING", &masquerade));
        assert!(!iptables_has("filter", "FORWARD", &intra));
    } else {
        assert!(!network.outbound_nat());
        fx.builder().build().unwrap().remove().unwrap();
    }
    assert!(!link_exists(&fx.bridge), "the bridge is still there");
    fx.network = None;
}

#[test]
fn a_subnet_in_use_or_a_bridge_with_another_address_is_refused() {
    let mut fx = Fixture::new(2);
    fx.network();

    // Another bridge on an overlapping subnet would shadow this one's route.
    let overlapping = Network::builder()
        .bridge("btn2-other")
        .subnet("10.231.2.128/25".parse().unwrap())
        .state_dir(fx.state.path())
        .build();
    match overlapping {
        Err(Error::SubnetInUse {
            device, address, ..
        }) => {
            assert_eq!(device, fx.bridge);
            assert_eq!(address, "10.231.2.1/24");
        }
        other => panic!("expected SubnetInUse, got {other:?}"),
    }
    assert!(!link_exists("btn2-other"));

    // The same bridge with a changed subnet: the bridge holds the old gateway.
    let changed = Network::builder()
        .bridge(&fx.bridge)
        .subnet("10.233.2.0/24".parse().unwrap())
        .state_dir(fx.state.path().join("other"))
        .build();
    match changed {
        Err(Error::BridgeAddress {
            found, expected, ..
        }) => {
            assert_eq!(found, "10.231.2.1/24");
            assert_eq!(expected, "10.233.2.1/24");
        }
        other => panic!("expected BridgeAddress, got {other:?}"),
    }

    // A name the kernel would refuse.
    assert!(matches!(
        Network::builder().bridge("a-too-long-bridge").build(),
        Err(Error::InvalidName { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Attachments

#[test]
fn attachments_get_distinct_addresses_and_reach_each_other_through_the_bridge() {
    let mut fx = Fixture::new(3);
    let network = fx.network();
    let a = network.attach("a").unwrap();
    let b = network.attach("b").unwrap();

    assert_ne!(a.ip, b.ip);
    for attachment in [&a, &b] {
        assert!(fx.subnet.contains(attachment.ip));
        assert_ne!(attachment.ip, network.gateway());
        assert_eq!(attachment.gateway, network.gateway());
        assert_eq!(attachment.mac, MacAddr::from_ipv4(attachment.ip));
        assert_eq!(
            attachment.netns_path,
            Path::new(NETNS_DIR).join(format!("{}{}", fx.prefix, attachment.id))
        );
        assert!(attachment.netns_path.exists());

        // Inside: lo and eth0 up, the address, the MAC and the default route.
        let ns = attachment.netns.as_str();
        let links = ip_json(&["-n", ns, "-j", "link", "show"]);
        let mut names: Vec<&str> = links
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["eth0", "lo"]);
        let eth0 = ip_json(&["-n", ns, "-j", "addr", "show", "dev", "eth0"]);
        assert_eq!(eth0[0]["address"], attachment.mac.to_string());
        assert_eq!(eth0[0]["operstate"], "UP");
        let inet: Vec<String> = eth0[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["family"] == "inet")
            .map(|i| format!("{}/{}", i["local"].as_str().unwrap(), i["prefixlen"]))
            .collect();
        assert_eq!(inet, [attachment.cidr()]);
        let routes = ip_json(&["-n", ns, "-j", "route", "show", "default"]);
        assert_eq!(routes[0]["gateway"], network.gateway().to_string());
        assert_eq!(routes[0]["dev"], "eth0");

        // Outside: the host end is a port of the bridge, tagged with the task id.
        let host_end = ip_json(&["-j", "link", "show", "dev", &attachment.veth_host]);
        assert_eq!(host_end[0]["master"], fx.bridge.as_str());
        assert_eq!(
            host_end[0]["ifalias"],
            format!("berth:{}:{}", fx.bridge, attachment.id)
        );
    }

    // A to B, seen by B as coming from A's own address: bridged, not routed or NATed.
    let b_addr = SocketAddr::new(b.ip.into(), 7000);
    let echo = echo_once(listen_in(&b.netns_path, b_addr));
    assert_eq!(
        exchange_from(&a.netns_path, b_addr, "hello b").unwrap(),
        "hello b"
    );
    assert_eq!(echo.join().unwrap().ip(), IpAddr::V4(a.ip));

    // The host reaches a task through the gateway.
    let a_addr = SocketAddr::new(a.ip.into(), 7001);
    let echo = echo_once(listen_in(&a.netns_path, a_addr));
    assert_eq!(exchange(a_addr, "hello a").unwrap(), "hello a");
    assert_eq!(echo.join().unwrap().ip(), IpAddr::V4(network.gateway()));

    // Only through the bridge: with B's port taken off it, A cannot reach B.
    let listener = listen_in(&b.netns_path, SocketAddr::new(b.ip.into(), 7002));
    let out = ip(&["link", "set", "dev", &b.veth_host, "nomaster"]);
    assert!(out.status.success());
    let cut = exchange_from(&a.netns_path, SocketAddr::new(b.ip.into(), 7002), "x");
    assert!(cut.is_err(), "A reached B without the bridge: {cut:?}");
    let out = ip(&["link", "set", "dev", &b.veth_host, "master", &fx.bridge]);
    assert!(out.status.success());
    drop(listener);

    network.detach(&a).unwrap();
    network.detach(&b).unwrap();
}

#[test]
fn detach_removes_the_namespace_the_veth_pair_and_the_lease() {
    let mut fx = Fixture::new(4);
    let network = fx.network();
    let t = network.attach("t1").unwrap();
    assert_eq!(network.ipam().lease("t1").unwrap(), Some(t.ip));
    assert_eq!(
        network.lookup("t1").unwrap(),
        Some(Namespace::Attached(t.clone()))
    );

    network.detach(&t).unwrap();
    assert!(!t.netns_path.exists(), "the namespace is still there");
    assert!(!link_exists(&t.veth_host), "the veth pair is still there");
    assert_eq!(network.ipam().lease("t1").unwrap(), None);
    assert_eq!(network.lookup("t1").unwrap(), None);
    assert!(network.namespaces().unwrap().is_empty());

    // Again: nothing left to do, and no error.
    network.detach(&t).unwrap();
    assert!(!network.release("t1").unwrap());
}

#[test]
fn attach_is_idempotent_and_repairs_a_broken_attachment() {
    let mut fx = Fixture::new(5);
    let network = fx.network();
    let first = network.attach("t").unwrap();
    assert_eq!(network.attach("t").unwrap(), first);

    // Someone removed the host end: attaching again makes it whole.
    assert!(
        ip(&["link", "delete", "dev", &first.veth_host])
            .status
            .success()
    );
    let repaired = network.attach("t").unwrap();
    assert!(repaired.netns_path.exists());
    let host_end = ip_json(&["-j", "link", "show", "dev", &repaired.veth_host]);
    assert_eq!(host_end[0]["master"], fx.bridge.as_str());
    let addr = SocketAddr::new(repaired.ip.into(), 7000);
    let echo = echo_once(listen_in(&repaired.netns_path, addr));
    assert_eq!(exchange(addr, "repaired").unwrap(), "repaired");
    echo.join().unwrap();

    // An id has one kind of namespace.
    assert!(matches!(
        network.isolate("t"),
        Err(Error::IdInUse {
            existing: "bridge-attached",
            ..
        })
    ));
    // A namespace of the same name that the network does not know is not taken over.
    let stray = format!("{}stray", fx.prefix);
    assert!(ip(&["netns", "add", &stray]).status.success());
    match network.attach("stray") {
        Err(Error::NamespaceTaken { name, .. }) => assert_eq!(name, stray),
        other => panic!("expected NamespaceTaken, got {other:?}"),
    }
    assert!(
        Path::new(NETNS_DIR).join(&stray).exists(),
        "the stray namespace was removed"
    );
    assert_eq!(network.ipam().lease("stray").unwrap(), None);
    // Ids are checked before they name anything.
    assert!(matches!(
        network.attach("../x"),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn a_failed_attach_names_the_command_and_leaves_nothing_behind() {
    let mut fx = Fixture::new(10);
    let network = fx.network();
    // The bridge vanishes under the network: the host end cannot join it.
    assert!(ip(&["link", "delete", "dev", &fx.bridge]).status.success());
    match network.attach("u") {
        Err(Error::Command {
            command, stderr, ..
        }) => {
            assert!(
                command.contains("link set dev veth") && command.contains(&fx.bridge),
                "{command}"
            );
            assert!(
                !stderr.is_empty() && !stderr.contains("Command failed"),
                "{stderr}"
            );
        }
        other => panic!("expected a failed ip command, got {other:?}"),
    }
    assert!(
        !Path::new(NETNS_DIR)
            .join(format!("{}u", fx.prefix))
            .exists()
    );
    assert_eq!(network.ipam().lease("u").unwrap(), None);
    assert_eq!(network.lookup("u").unwrap(), None);
    assert!(
        fs::read_dir(network.state_dir().join("tasks"))
            .unwrap()
            .next()
            .is_none(),
        "a task record was left"
    );
    let veths = ip_json(&["-j", "link", "show", "type", "veth"]);
    let tag = format!("berth:{}:", fx.bridge);
    assert!(
        !veths
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["ifalias"].as_str().is_some_and(|a| a.starts_with(&tag))),
        "a veth pair was left"
    );

    // Building the network again brings the bridge back, and attaching works.
    let network = fx.network();
    let u = network.attach("u").unwrap();
    network.detach(&u).unwrap();
}

#[test]
fn a_loopback_only_namespace_has_lo_and_nothing_else() {
    let mut fx = Fixture::new(6);
    let network = fx.network();
    let quiet = network.isolate("quiet").unwrap();
    assert_eq!(network.isolate("quiet").unwrap(), quiet);
    let links = ip_json(&["-n", &quiet.netns, "-j", "link", "show"]);
    let links = links.as_array().unwrap();
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0]["ifname"], "lo");
    assert!(
        links[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP")
    );
    // lo works: a listener on 127.0.0.1 inside answers from inside.
    let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    let echo = echo_once(listen_in(&quiet.netns_path, addr));
    assert_eq!(exchange_from(&quiet.netns_path, addr, "lo").unwrap(), "lo");
    echo.join().unwrap();
    assert_eq!(network.ipam().lease("quiet").unwrap(), None);
    assert_eq!(
        network.namespaces().unwrap(),
        [Namespace::Isolated(quiet.clone())]
    );
    assert!(matches!(
        network.attach("quiet"),
        Err(Error::IdInUse {
            existing: "loopback-only",
            ..
        })
    ));

    assert!(network.release("quiet").unwrap());
    assert!(!quiet.netns_path.exists());
}

// ---------------------------------------------------------------------------------------------
// IPAM

#[test]
fn ipam_never_repeats_a_live_address_across_processes() {
    require_environment();
    let dir = tempfile::tempdir().unwrap();
    let subnet = "10.231.7.0/24";
    let ipam = Ipam::open(dir.path(), subnet.parse().unwrap()).unwrap();
    // Addresses held before the helpers start must stay theirs.
    let held: BTreeMap<String, Ipv4Addr> = (0..10)
        .map(|i| {
            let owner = format!("parent-{i}");
            let ip = ipam.allocate(&owner).unwrap();
            (owner, ip)
        })
        .collect();
    for i in (0..10).step_by(2) {
        ipam.release(&format!("parent-{i}")).unwrap();
    }

    let dir_arg = dir.path().to_str().unwrap().to_owned();
    let children: Vec<_> = (0..3)
        .map(|c| {
            helper(
                "ipam",
                &[&dir_arg, subnet, &format!("child{c}"), "60"],
                None,
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut seen = BTreeMap::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "helper failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = helper_lines(&out);
        assert_eq!(lines.len(), 60);
        for line in lines {
            let (owner, ip) = line.split_once(' ').unwrap();
            let ip: Ipv4Addr = ip.parse().unwrap();
            if let Some(other) = seen.insert(ip, owner.to_owned()) {
                panic!("{ip} was leased to both {other} and {owner}");
            }
        }
    }
    let still_held: BTreeSet<Ipv4Addr> = (1..10)
        .step_by(2)
        .map(|i| held[&format!("parent-{i}")])
        .collect();
    for ip in &still_held {
        assert!(!seen.contains_key(ip), "{ip} is held and was leased again");
    }
    let leases = ipam.leases().unwrap();
    assert_eq!(leases.len(), 180 + still_held.len());
    let distinct: BTreeSet<_> = leases.values().collect();
    assert_eq!(distinct.len(), leases.len(), "the state holds a duplicate");
}

// ---------------------------------------------------------------------------------------------
// Published ports

#[test]
fn a_published_dynamic_port_forwards_tcp_into_a_namespace() {
    let mut fx = Fixture::new(8);
    let network = fx.network();
    let task = network.attach("web").unwrap();
    let listener = listen_in(&task.netns_path, "0.0.0.0:8080".parse().unwrap());

    let published = Publisher::new()
        .publish(task.ip.into(), &[PortMapping::tcp(8080)])
        .unwrap();
    let binding = published.bindings()[0];
    assert!(
        EPHEMERAL_PORTS.contains(&binding.host_port),
        "{} is not in ECS's ephemeral range",
        binding.host_port
    );
    assert_eq!(binding.container_port, 8080);
    assert_eq!(binding.protocol, Protocol::Tcp);
    assert_eq!(binding.bind_ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert_eq!(
        serde_json::to_value(published.bindings()).unwrap(),
        serde_json::json!([{"bindIP": "0.0.0.0", "containerPort": 8080,
                            "hostPort": binding.host_port, "protocol": "tcp"}])
    );

    let echo = echo_once(listener);
    let host_port = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), binding.host_port);
    assert_eq!(
        exchange(host_port, "through the host port").unwrap(),
        "through the host port"
    );
    // The task sees the proxy, which talks to it from the gateway.
    assert_eq!(echo.join().unwrap().ip(), IpAddr::V4(network.gateway()));

    // The same host port again is refused, naming it.
    match Publisher::new().publish(
        task.ip.into(),
        &[PortMapping::tcp(8080).with_host_port(binding.host_port)],
    ) {
        Err(Error::PortUnavailable { port, .. }) => assert_eq!(port, binding.host_port),
        other => panic!("expected PortUnavailable, got {other:?}"),
    }
    // A second dynamic mapping gets another port.
    let second = Publisher::new()
        .publish(task.ip.into(), &[PortMapping::tcp(8080)])
        .unwrap();
    assert_ne!(second.bindings()[0].host_port, binding.host_port);
    drop(second);

    published.close();
    assert!(
        TcpStream::connect_timeout(&host_port, Duration::from_secs(1)).is_err(),
        "the host port still accepts after close"
    );
    network.detach(&task).unwrap();
}

#[test]
fn published_udp_ports_relay_each_client_and_share_a_port_number_with_tcp() {
    let mut fx = Fixture::new(11);
    let network = fx.network();
    let task = network.attach("dns").unwrap();
    // The task serves port 5353 over both protocols, as a DNS server serves 53.
    let container: SocketAddr = "0.0.0.0:5353".parse().unwrap();
    let listener = listen_in(&task.netns_path, container);
    let udp_echo = udp_echo(udp_bind_in(&task.netns_path, container));

    let port = free_port_for_both();
    let published = Publisher::new()
        .publish(
            task.ip.into(),
            &[
                PortMapping::tcp(5353).with_host_port(port),
                PortMapping::udp(5353).with_host_port(port),
                PortMapping::udp(5353),
            ],
        )
        .unwrap();
    let bindings = published.bindings();
    assert_eq!(
        serde_json::to_value(&bindings[..2]).unwrap(),
        serde_json::json!([
            {"bindIP": "0.0.0.0", "containerPort": 5353, "hostPort": port, "protocol": "tcp"},
            {"bindIP": "0.0.0.0", "containerPort": 5353, "hostPort": port, "protocol": "udp"},
        ])
    );
    let dynamic = bindings[2];
    assert_eq!(dynamic.protocol, Protocol::Udp);
    assert!(
        EPHEMERAL_PORTS.contains(&dynamic.host_port),
        "{} is not in ECS's ephemeral range",
        dynamic.host_port
    );

    // Two clients on the shared port, interleaved: each gets its own replies, and the task
    // sees each as a peer of its own on the gateway.
    let host_port = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
    let (a, b) = (udp_client(), udp_client());
    let (a_peer, reply) = udp_ask(&a, host_port, "a0");
    assert_eq!(reply, "a0");
    let (b_peer, reply) = udp_ask(&b, host_port, "b0");
    assert_eq!(reply, "b0");
    assert_eq!(a_peer.ip(), IpAddr::V4(network.gateway()));
    assert_eq!(b_peer.ip(), IpAddr::V4(network.gateway()));
    assert_ne!(a_peer, b_peer);
    for i in 1..4 {
        assert_eq!(
            udp_ask(&a, host_port, &format!("a{i}")),
            (a_peer, format!("a{i}"))
        );
        assert_eq!(
            udp_ask(&b, host_port, &format!("b{i}")),
            (b_peer, format!("b{i}"))
        );
    }
    // The dynamic port reaches the same task.
    let dynamic_port = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), dynamic.host_port);
    assert_eq!(udp_ask(&a, dynamic_port, "dynamic").1, "dynamic");

    // TCP on the same port number.
    let echo = echo_once(listener);
    assert_eq!(exchange(host_port, "over tcp").unwrap(), "over tcp");
    assert_eq!(echo.join().unwrap().ip(), IpAddr::V4(network.gateway()));

    // The same UDP host port again is refused, naming it and its protocol.
    match Publisher::new().publish(
        task.ip.into(),
        &[PortMapping::udp(5353).with_host_port(port)],
    ) {
        Err(Error::PortUnavailable {
            port: refused,
            protocol,
            ..
        }) => assert_eq!((refused, protocol), (port, Protocol::Udp)),
        other => panic!("expected PortUnavailable, got {other:?}"),
    }

    published.close();
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).expect("the UDP host port is still bound");
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, dynamic.host_port))
        .expect("the dynamic UDP host port is still bound");
    assert!(
        TcpStream::connect_timeout(&host_port, Duration::from_secs(1)).is_err(),
        "the TCP host port still accepts after close"
    );
    let stop = SocketAddr::new(task.ip.into(), 5353);
    UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .send_to(b"stop", stop)
        .unwrap();
    let peers = udp_echo.join().unwrap();
    assert_eq!(peers.len(), 9, "{peers:?}");
    network.detach(&task).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Sweep

#[test]
fn sweep_removes_what_a_crashed_owner_left() {
    let mut fx = Fixture::new(9);
    let state = fx.state.path().to_str().unwrap().to_owned();
    let subnet = fx.subnet.to_string();
    let out = helper(
        "crash",
        &[
            &state, &fx.bridge, &subnet, &fx.prefix, "live", "dead-1", "dead-2",
        ],
        None,
    )
    .output()
    .unwrap();
    assert!(!out.status.success(), "the helper was meant to be killed");
    let attached: BTreeMap<String, Ipv4Addr> = helper_lines(&out)
        .iter()
        .map(|l| {
            let (id, ip) = l.split_once(' ').unwrap();
            (id.to_owned(), ip.parse().unwrap())
        })
        .collect();
    assert_eq!(
        attached.keys().collect::<Vec<_>>(),
        ["dead-1", "dead-2", "live"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let network = fx.network();
    // And one the owner died in the middle of making: a pending record, a namespace, a lease.
    let half = format!("{}half", fx.prefix);
    fs::write(
        network.state_dir().join("tasks/half.json"),
        r#"{"state":"pending","id":"half"}"#,
    )
    .unwrap();
    assert!(ip(&["netns", "add", &half]).status.success());
    network.ipam().allocate("half").unwrap();

    let removed = network.sweep(["live"]).unwrap();
    assert_eq!(removed, ["dead-1", "dead-2", "half"]);
    for id in ["dead-1", "dead-2", "half"] {
        let netns = Path::new(NETNS_DIR).join(format!("{}{id}", fx.prefix));
        assert!(!netns.exists(), "{} is still there", netns.display());
        assert_eq!(network.ipam().lease(id).unwrap(), None);
        assert_eq!(network.lookup(id).unwrap(), None);
    }
    let leftovers = ip_json(&["-j", "link", "show", "master", &fx.bridge]);
    let ports: Vec<&str> = leftovers
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap())
        .collect();
    assert_eq!(ports.len(), 1, "ports left on the bridge: {ports:?}");

    // The live one is untouched and still works.
    let Some(Namespace::Attached(live)) = network.lookup("live").unwrap() else {
        panic!("the live attachment is gone");
    };
    assert_eq!(live.ip, attached["live"]);
    assert_eq!(ports, [live.veth_host.as_str()]);
    let addr = SocketAddr::new(live.ip.into(), 7000);
    let echo = echo_once(listen_in(&live.netns_path, addr));
    assert_eq!(exchange(addr, "alive").unwrap(), "alive");
    echo.join().unwrap();

    assert!(network.sweep(["live"]).unwrap().is_empty());
    assert_eq!(network.sweep::<_, &str>([]).unwrap(), ["live"]);
    assert!(!live.netns_path.exists());
}

// ---------------------------------------------------------------------------------------------
// Test hosts

#[test]
fn test_hosts_reach_the_host_and_each_other() {
    require_environment();
    let a = TestHost::create("btn-host-a", "10.232.1.0/30".parse().unwrap()).unwrap();
    let b = TestHost::create("btn-host-b", "10.232.2.0/30".parse().unwrap()).unwrap();
    assert_eq!(a.ip(), Ipv4Addr::new(10, 232, 1, 2));
    assert_eq!(a.host_ip(), Ipv4Addr::new(10, 232, 1, 1));

    // A process in the test host reaches a "control plane" on the host.
    let control = TcpListener::bind("0.0.0.0:0").unwrap();
    let control_addr = SocketAddr::new(a.host_ip().into(), control.local_addr().unwrap().port());
    let echo = echo_once(control);
    let out = helper(
        "connect",
        &[&control_addr.to_string(), "from-agent"],
        Some(&a),
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "the helper in the test host failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(helper_lines(&out), ["from-agent"]);
    assert_eq!(echo.join().unwrap().ip(), IpAddr::V4(a.ip()));

    // The host reaches a listener in the test host.
    let agent_addr = SocketAddr::new(a.ip().into(), 7000);
    let echo = echo_once(a.within(|| TcpListener::bind(agent_addr)).unwrap().unwrap());
    assert_eq!(exchange(agent_addr, "to-agent").unwrap(), "to-agent");
    echo.join().unwrap();

    // Test hosts reach each other through the host.
    let b_addr = SocketAddr::new(b.ip().into(), 7000);
    let echo = echo_once(b.within(|| TcpListener::bind(b_addr)).unwrap().unwrap());
    assert_eq!(
        a.within(|| exchange(b_addr, "a-to-b")).unwrap().unwrap(),
        "a-to-b"
    );
    assert_eq!(echo.join().unwrap().ip(), IpAddr::V4(a.ip()));

    let (path, veth) = (a.netns_path().to_owned(), a.veth_host().to_owned());
    a.remove().unwrap();
    assert!(!path.exists());
    assert!(!link_exists(&veth));
    let (path, veth) = (b.netns_path().to_owned(), b.veth_host().to_owned());
    drop(b);
    assert!(!path.exists());
    assert!(!link_exists(&veth));
}

#[test]
fn a_network_runs_inside_a_test_host() {
    require_environment();
    let host = TestHost::create("btn-host-c", "10.232.3.0/30".parse().unwrap()).unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = helper("inside", &[state.path().to_str().unwrap()], Some(&host))
        .output()
        .unwrap();
    // Whatever happened, nothing of the inner network may outlive the test.
    let leftovers: Vec<PathBuf> = fs::read_dir(NETNS_DIR)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("btn-inside-"))
                })
                .collect()
        })
        .unwrap_or_default();
    for path in &leftovers {
        ip(&[
            "netns",
            "delete",
            &path.file_name().unwrap().to_string_lossy(),
        ]);
    }
    assert!(
        out.status.success(),
        "the network inside the test host failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    let lines = helper_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let words: Vec<&str> = lines[0].split(' ').collect();
    let x: Ipv4Addr = words[0].parse().unwrap();
    let y: Ipv4Addr = words[1].parse().unwrap();
    let default: Subnet = berth_runner::net::DEFAULT_SUBNET.parse().unwrap();
    assert!(default.contains(x) && default.contains(y) && x != y);
    assert_eq!(words[2], "inside");
    // The inner bridge lives in the test host, not here.
    let inner = ip(&["-n", host.name(), "link", "show", "dev", "berth0"]);
    assert!(
        !inner.status.success(),
        "the inner network's bridge was not removed"
    );
}
