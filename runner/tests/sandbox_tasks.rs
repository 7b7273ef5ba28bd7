//! The sandbox running task containers, as the ECS-like task runner uses it: named containers
//! with a control handle, joined network namespaces, cgroup limits under a task's parent,
//! ulimits, signals, exec, and many containers at once. Against the real runc, as root, in a
//! root filesystem made from busybox.
//!
//! These tests need root, `runc` and a static `/bin/busybox`; `bash scripts/setup.sh` installs
//! the packages. They fail, naming that script, when something is missing. The network
//! namespace test also needs `ip` (iproute2), and says so and returns when it is missing.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_runner::sandbox::{
    ContainerControl, ContainerState, Error, MIB, Mount, Network, Output, ProcessSpec, Resources,
    Rlimit, RootfsSpec, RunSpec, Sandbox, mounts_under,
};
use tempfile::TempDir;

mod sandbox_support;
use sandbox_support::{busybox_root, require_environment};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";
const GROUP: &str = "root:x:0:\n";
/// Generous bounds: runc starts a container in well under a second, but the machines these
/// tests run on are shared and slow.
const START: Duration = Duration::from_secs(30);
const EXIT: Duration = Duration::from_secs(30);

/// A busybox root filesystem: `/bin` with every applet, `/etc/passwd`, `/etc/group`.
fn make_rootfs(dir: &Path) {
    busybox_root(dir, PASSWD, GROUP);
}

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A name no other test (of this process or another) uses.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

struct Fixture {
    tmp: TempDir,
    sandbox: Sandbox,
    rootfs: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        require_environment();
        let tmp = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::builder()
            .root(tmp.path().join("state"))
            .build()
            .expect("build the sandbox");
        // Containers of a task share one image: a plain directory serves them all.
        let rootfs = tmp.path().join("rootfs");
        make_rootfs(&rootfs);
        Fixture {
            tmp,
            sandbox,
            rootfs,
        }
    }

    /// A named container running `script` with a control.
    fn task(&self, name: &str, script: &str) -> (RunSpec, ContainerControl) {
        let mut spec = RunSpec::new(
            RootfsSpec::Dir(self.rootfs.clone()),
            ProcessSpec::new(["/bin/sh", "-c", script]),
        );
        let control = ContainerControl::new();
        spec.name = Some(name.to_string());
        spec.control = Some(control.clone());
        (spec, control)
    }

    /// Nothing left under the state root: no mounts, no directories.
    fn assert_no_leftovers(&self) {
        let root = self.sandbox.root();
        assert!(mounts_under(root).unwrap().is_empty());
        let entries: Vec<String> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != ".lock")
            .collect();
        assert!(
            entries.is_empty(),
            "left in {}: {entries:?}",
            root.display()
        );
    }
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

/// Runs `spec` on a thread of `scope`, sending each chunk of output to the returned receiver.
fn spawn_run<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    sandbox: &'s Sandbox,
    spec: &'s RunSpec,
) -> (
    std::thread::ScopedJoinHandle<'s, Result<Output, Error>>,
    mpsc::Receiver<String>,
) {
    let (tx, rx) = mpsc::channel();
    let handle = scope.spawn(move || {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = sandbox.run(spec, &mut |stream, bytes| {
            let _ = tx.send(text(bytes).to_string());
            match stream {
                berth_runner::sandbox::Stream::Stdout => stdout.extend_from_slice(bytes),
                berth_runner::sandbox::Stream::Stderr => stderr.extend_from_slice(bytes),
            }
        })?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    });
    (handle, rx)
}

/// Waits until the output has carried `marker`.
fn wait_for_output(rx: &mpsc::Receiver<String>, marker: &str) {
    let mut seen = String::new();
    if !read_output_until(rx, &mut seen, marker) {
        panic!("no {marker:?} in the output within {START:?}; got {seen:?}");
    }
}

/// Reads the output into `seen` until it carries `marker` (true), or for at most `START`.
fn read_output_until(rx: &mpsc::Receiver<String>, seen: &mut String, marker: &str) -> bool {
    let deadline = Instant::now() + START;
    while !seen.contains(marker) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.push_str(&chunk),
            Err(_) => return false,
        }
    }
    true
}

/// The host pid of a process whose command line is exactly `args`.
fn find_process(args: &[&str]) -> Option<i32> {
    let want: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        (fs::read(entry.path().join("cmdline")).ok()? == want).then_some(pid)
    })
}

fn process_alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; its state is Z.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn sigterm_stops_a_trapping_shell_and_sigkill_one_that_ignores_it() {
    let f = Fixture::new();

    // A graceful stop: the init traps SIGTERM and exits 0.
    let (spec, control) = f.task(
        &unique("graceful"),
        "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done",
    );
    let out = std::thread::scope(|s| {
        let (run, rx) = spawn_run(s, &f.sandbox, &spec);
        control.wait_started(START).unwrap();
        wait_for_output(&rx, "ready");
        control.signal(libc::SIGTERM).unwrap();
        assert_eq!(control.wait_exited(EXIT).unwrap().code(), 0);
        run.join().unwrap().unwrap()
    });
    assert_eq!(out.status.code(), 0);
    assert_eq!(text(&out.stdout), "ready\ngot TERM\n");

    // The stop sequence a task runner follows: SIGTERM, stopTimeout, then SIGKILL for an init
    // that ignores SIGTERM.
    let (spec, control) = f.task(
        &unique("stubborn"),
        "trap '' TERM; echo ready; while true; do sleep 0.1; done",
    );
    let out = std::thread::scope(|s| {
        let (run, rx) = spawn_run(s, &f.sandbox, &spec);
        control.wait_started(START).unwrap();
        wait_for_output(&rx, "ready");
        control.signal(libc::SIGTERM).unwrap();
        let err = control.wait_exited(Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(err, Error::Timeout { event: "exit", .. }),
            "{err:?}"
        );
        assert!(matches!(control.state(), ContainerState::Running { .. }));
        control.signal(libc::SIGKILL).unwrap();
        assert_eq!(control.wait_exited(EXIT).unwrap().code(), 137);
        run.join().unwrap().unwrap()
    });
    assert_eq!(out.status.code(), 137);
    f.assert_no_leftovers();
}

/// Kills the container when dropped, as when an assertion fails while it runs.
struct KillOnDrop<'a>(&'a ContainerControl);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.signal(libc::SIGKILL);
    }
}

#[test]
fn exec_runs_processes_in_the_running_container() {
    let f = Fixture::new();
    let name = unique("exec");
    let (mut spec, control) = f.task(&name, "unused");
    spec.process = ProcessSpec::new(["sleep", "3600"]);
    spec.process.env = vec!["FROM_SPEC=container".into()];
    spec.hostname = Some("web-1".into());
    std::thread::scope(|s| {
        let (run, _rx) = spawn_run(s, &f.sandbox, &spec);
        control.wait_started(START).unwrap();
        assert_eq!(control.id().as_deref(), Some(name.as_str()));

        // A failed assertion must not leave the scope waiting for `sleep 3600`.
        let _kill = KillOnDrop(&control);

        // The init, seen from the host through its pid and from inside through exec. Its
        // command line reads empty until the runtime's init has exec'd the process.
        let pid = control.pid().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut cmdline = Vec::new();
        while Instant::now() < deadline {
            cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
            if !cmdline.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(cmdline, b"sleep\x003600\x00");
        let out = control
            .exec(["cat", "/proc/1/cmdline"], &[], Duration::from_secs(20))
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(out.stdout, b"sleep\x003600\x00");

        // The container's environment and hostname, plus the exec's own variables; the exit
        // code and both streams come back.
        let out = control
            .exec(
                [
                    "/bin/sh",
                    "-c",
                    "echo $FROM_SPEC $EXTRA $(hostname); echo oops >&2; exit 3",
                ],
                &["EXTRA=health".to_string()],
                Duration::from_secs(20),
            )
            .unwrap();
        assert_eq!(out.status.code(), 3);
        assert_eq!(text(&out.stdout), "container health web-1\n");
        assert_eq!(text(&out.stderr), "oops\n");

        // A program that is not there is the runtime's error, not an exit code.
        let err = control
            .exec(["/no/such/check"], &[], Duration::from_secs(20))
            .unwrap_err();
        match &err {
            Error::Runtime {
                action, message, ..
            } => {
                assert_eq!(*action, "exec");
                assert!(message.contains("/no/such/check"), "{message}");
            }
            other => panic!("expected a runtime error, got {other:?}"),
        }

        // A check that outlives its timeout is killed, and the container goes on.
        let start = Instant::now();
        let err = control
            .exec(["sleep", "4712"], &[], Duration::from_millis(500))
            .unwrap_err();
        assert!(
            matches!(&err, Error::ExecTimeout { container, .. } if *container == name),
            "{err:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{:?}",
            start.elapsed()
        );
        assert!(
            err.to_string().contains("did not finish within 500ms"),
            "{err}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while find_process(&["sleep", "4712"]).is_some_and(process_alive) {
            assert!(
                Instant::now() < deadline,
                "the timed-out exec is still running"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(control.state(), ContainerState::Running { pid });

        // `sleep` as pid 1 has no handler for SIGTERM, so only SIGKILL stops it.
        control.signal(libc::SIGKILL).unwrap();
        let out = run.join().unwrap().unwrap();
        assert_eq!(out.status.code(), 137);
    });
    f.assert_no_leftovers();
}

#[test]
fn operations_on_an_unknown_or_finished_container_fail_clearly() {
    let f = Fixture::new();

    // A control no run has taken: nothing to signal.
    let control = ContainerControl::new();
    let err = control.signal(libc::SIGTERM).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotRunning {
                container: None,
                state: ContainerState::Pending
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the container is not running: it has not started yet"
    );

    // A container that has finished.
    let name = unique("done");
    let (spec, control) = f.task(&name, "exit 4");
    let out = f.sandbox.output(&spec).unwrap();
    assert_eq!(out.status.code(), 4);
    assert_eq!(control.state(), ContainerState::Exited(out.status));
    control.wait_started(Duration::ZERO).unwrap();
    assert_eq!(control.wait_exited(Duration::ZERO).unwrap().code(), 4);
    let err = control.signal(libc::SIGTERM).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("container {name} is not running: it has exited (exit code: 4)")
    );
    assert!(matches!(
        control.exec(["true"], &[], Duration::from_secs(5)),
        Err(Error::NotRunning {
            state: ContainerState::Exited(_),
            ..
        })
    ));
    assert!(matches!(control.pid(), Err(Error::NotRunning { .. })));

    // One control, one run.
    let mut again = spec.clone();
    again.name = None;
    let err = f.sandbox.output(&again).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("the container control is already attached to container {name}")
    );

    // A container the runtime cannot start never runs.
    let (mut spec, control) = f.task(&unique("broken"), "unused");
    spec.process = ProcessSpec::new(["/no/such/init"]);
    assert!(matches!(
        f.sandbox.output(&spec),
        Err(Error::Runtime { .. })
    ));
    assert_eq!(control.state(), ContainerState::Failed);
    let err = control.wait_started(START).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("is not running: it never started"),
        "{err}"
    );
    f.assert_no_leftovers();
}

#[test]
fn named_containers_are_findable_and_unique() {
    let f = Fixture::new();
    let name = unique("web");
    let (spec, control) = f.task(&name, "echo ready; sleep 3600");
    std::thread::scope(|s| {
        let (run, rx) = spawn_run(s, &f.sandbox, &spec);
        control.wait_started(START).unwrap();
        wait_for_output(&rx, "ready");

        // Its state is under its name, for the runtime's own tools.
        let state = f.sandbox.root().join(&name).join("runc");
        let out = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["state", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["status"], "running");
        assert_eq!(json["pid"], control.pid().unwrap());

        // Nobody else gets the name while it runs.
        let (other, other_control) = f.task(&name, "true");
        let err = f.sandbox.output(&other).unwrap_err();
        assert!(
            matches!(&err, Error::NameInUse { name: n, .. } if *n == name),
            "{err:?}"
        );
        assert!(err.to_string().contains("already running"), "{err}");
        // Its control fails at once rather than leaving a waiter to its timeout.
        let start = Instant::now();
        assert!(matches!(
            other_control.wait_started(START),
            Err(Error::NotRunning {
                state: ContainerState::Failed,
                ..
            })
        ));
        assert!(start.elapsed() < Duration::from_secs(1));

        control.signal(libc::SIGKILL).unwrap();
        run.join().unwrap().unwrap();
    });

    // Once it is done, the name is free again.
    let (spec, _) = f.task(&name, "echo again");
    assert_eq!(text(&f.sandbox.output(&spec).unwrap().stdout), "again\n");

    // A dead run's state under the name (an unlocked lock) is swept out of the way.
    let stale = f.sandbox.root().join(&name);
    fs::create_dir_all(stale.join("runc")).unwrap();
    fs::write(stale.join("lock"), "").unwrap();
    let (spec, _) = f.task(&name, "echo reclaimed");
    assert_eq!(
        text(&f.sandbox.output(&spec).unwrap().stdout),
        "reclaimed\n"
    );

    // Names are checked before anything is made.
    let (mut spec, _) = f.task("x", "true");
    spec.name = Some("../escape".into());
    assert!(matches!(
        f.sandbox.output(&spec),
        Err(Error::InvalidSpec(m)) if m.contains("invalid container name")
    ));
    f.assert_no_leftovers();
}

/// A network namespace made with `ip netns add`, deleted when dropped.
struct NetNs {
    name: String,
}

impl NetNs {
    /// `None` (after saying why) when `ip` is not installed.
    fn new() -> Option<NetNs> {
        if Command::new("ip").arg("-V").output().is_err() {
            eprintln!("skipping: `ip` (iproute2) is not installed");
            return None;
        }
        let name = unique("berth-test");
        let ns = NetNs { name };
        ns.ip(&["netns", "add", &ns.name]);
        ns.ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        // The task's "ENI": one end of a veth pair, whose other end stays on the host.
        let host_end = format!(
            "bt{}x{}",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        );
        ns.ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "task0", "netns", &ns.name,
        ]);
        ns.ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            "10.213.0.2/24",
            "dev",
            "task0",
        ]);
        ns.ip(&["-n", &ns.name, "link", "set", "task0", "up"]);
        Some(ns)
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            text(&out.stderr)
        );
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn containers_join_a_network_namespace_made_with_ip_netns() {
    let f = Fixture::new();
    let Some(ns) = NetNs::new() else {
        return;
    };

    // A server and a client in two containers of one "task": they share the namespace, its
    // interfaces and its loopback.
    // The server's nc reads a stdin that stays open: at the end of its stdin, busybox's nc
    // shuts its side of the connection down, and a client that sees that first exits with 0
    // before it has sent anything.
    let (mut server, server_control) = f.task(
        &unique("server"),
        "echo listening; sleep 600 | nc -l -p 7070",
    );
    server.network = Network::Join(ns.path());
    server.hostname = Some("server".into());
    let (mut client, _) = f.task(
        &unique("client"),
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '; echo; \
         ip -o -4 addr show task0 | awk '{print $4}'; \
         cat /etc/hosts; grep -c '^nameserver 127\\.' /etc/resolv.conf; \
         for i in $(seq 100); do echo hello over loopback | nc 127.0.0.1 7070 && exit 0; \
         sleep 0.1; done; exit 1",
    );
    client.network = Network::Join(ns.path());
    client.hostname = Some("client".into());

    let (server_out, client_out) = std::thread::scope(|s| {
        let (run, rx) = spawn_run(s, &f.sandbox, &server);
        server_control.wait_started(START).unwrap();
        let mut seen = String::new();
        assert!(read_output_until(&rx, &mut seen, "listening"), "{seen:?}");

        // The init's network namespace is the one made above (an nsenter-style check).
        let pid = server_control.pid().unwrap();
        let theirs = fs::metadata(format!("/proc/{pid}/ns/net")).unwrap();
        let made = fs::metadata(ns.path()).unwrap();
        assert_eq!((theirs.dev(), theirs.ino()), (made.dev(), made.ino()));

        let client_out = f.sandbox.output(&client).unwrap();
        // The client's nc can exit before the server's has written what it read: give it the
        // time to (the assertions below tell if it never does), then, whatever busybox's nc
        // does at the end of the stream, stop the server.
        read_output_until(&rx, &mut seen, "hello over loopback");
        let _ = server_control.signal(libc::SIGKILL);
        (run.join().unwrap().unwrap(), client_out)
    });
    assert!(client_out.status.success(), "{}", text(&client_out.stderr));
    let stdout = text(&client_out.stdout);
    let mut lines = stdout.lines();
    // Only the namespace's interfaces, none of the host's.
    assert_eq!(lines.next(), Some("lo task0 "));
    assert_eq!(lines.next(), Some("10.213.0.2/24"));
    assert_eq!(
        lines.next(),
        Some("127.0.0.1\tlocalhost client"),
        "the hostname maps to loopback"
    );
    lines.next();
    assert_eq!(
        lines.next(),
        Some("0"),
        "no loopback resolver from the host"
    );
    assert!(
        text(&server_out.stdout).contains("hello over loopback"),
        "server: {:?}",
        text(&server_out.stdout)
    );

    // A file that is not a network namespace is refused before anything runs.
    let (mut spec, _) = f.task(&unique("bad-netns"), "true");
    spec.network = Network::Join("/proc/self/ns/uts".into());
    let err = f.sandbox.output(&spec).unwrap_err();
    assert!(err.to_string().contains("not a network namespace"), "{err}");
    drop(ns);
    f.assert_no_leftovers();
}

/// Where this process is in each cgroup hierarchy: (controllers, path) from /proc/self/cgroup.
fn cgroup_of(pid: &str) -> Vec<(String, String)> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _ = parts.next()?;
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// Whether the memory controller is on a v1 hierarchy (hybrid hosts) rather than v2.
fn memory_is_v1() -> bool {
    cgroup_of("self")
        .iter()
        .any(|(c, _)| c.split(',').any(|c| c == "memory"))
}

/// The directory of `pid`'s cgroup for `controller` (v1), or its v2 cgroup.
fn cgroup_dir(pid: &str, controller: &str) -> PathBuf {
    let groups = cgroup_of(pid);
    if memory_is_v1() {
        let (controllers, path) = groups
            .iter()
            .find(|(c, _)| c.split(',').any(|c| c == controller))
            .unwrap_or_else(|| panic!("no {controller} hierarchy"));
        Path::new("/sys/fs/cgroup")
            .join(controllers)
            .join(path.trim_start_matches('/'))
    } else {
        let (_, path) = groups.iter().find(|(c, _)| c.is_empty()).unwrap();
        Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'))
    }
}

/// The root of the hierarchy that holds `controller` (v1), or of the v2 hierarchy.
fn cgroup_root(controller: &str) -> PathBuf {
    if memory_is_v1() {
        let groups = cgroup_of("self");
        let (controllers, _) = groups
            .iter()
            .find(|(c, _)| c.split(',').any(|c| c == controller))
            .unwrap_or_else(|| panic!("no {controller} hierarchy"));
        Path::new("/sys/fs/cgroup").join(controllers)
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// A task's cgroup, removed when dropped (after a failed assertion too). The tests use
/// absolute paths, so that nothing they make is left under the cgroup of whatever runs them.
struct TaskCgroup<'a> {
    sandbox: &'a Sandbox,
    path: String,
}

impl<'a> TaskCgroup<'a> {
    fn new(sandbox: &'a Sandbox, prefix: &str) -> TaskCgroup<'a> {
        TaskCgroup {
            sandbox,
            path: format!("/{}", unique(prefix)),
        }
    }
}

impl Drop for TaskCgroup<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.sandbox.remove_cgroup(&self.path) {
            eprintln!("cannot remove the test cgroup {}: {err}", self.path);
        }
    }
}

fn read_trimmed(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn limits_reach_the_container_cgroup_under_its_task_parent() {
    let f = Fixture::new();
    let v1 = memory_is_v1();
    let task = TaskCgroup::new(&f.sandbox, "berth-test-task");
    let parent = format!("{}/cgroup", task.path);
    // The task's size on its parent (Fargate 512 cpu / 1024 MiB), the container's own below.
    f.sandbox
        .create_cgroup(&parent, &Resources::task_size(512, 1024).unwrap())
        .unwrap();

    let name = unique("limited");
    let script = if v1 {
        "cd /sys/fs/cgroup; cat memory/memory.limit_in_bytes memory/memory.soft_limit_in_bytes \
         cpu/cpu.shares cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us pids/pids.max; sleep 3600"
    } else {
        "cd /sys/fs/cgroup; cat memory.max memory.low cpu.weight cpu.max pids.max; sleep 3600"
    };
    let (mut spec, control) = f.task(&name, script);
    spec.resources = Some(Resources {
        cpu_shares: Some(Resources::cpu_shares_for_units(Some(256))),
        cpu_quota: Some(25_000),
        cpu_period: Some(100_000),
        memory_limit: Some(64 * MIB),
        memory_reservation: Some(32 * MIB),
        pids_limit: Some(64),
    });
    spec.cgroup_parent = Some(parent.clone());

    let out = std::thread::scope(|s| {
        let (run, rx) = spawn_run(s, &f.sandbox, &spec);
        control.wait_started(START).unwrap();
        wait_for_output(&rx, if v1 { "\n64\n" } else { "\n64" });

        // From outside: the container's cgroup is <parent>/<name>, holding its limit, and the
        // parent holds the task's.
        let pid = control.pid().unwrap().to_string();
        let memory = cgroup_dir(&pid, "memory");
        assert!(
            memory.ends_with(format!("{}/{name}", parent.trim_start_matches('/'))),
            "{}",
            memory.display()
        );
        let task_memory = memory.parent().unwrap();
        let cpu = cgroup_dir(&pid, "cpu");
        let task_cpu = cpu.parent().unwrap();
        if v1 {
            assert_eq!(
                read_trimmed(&memory.join("memory.limit_in_bytes")),
                "67108864"
            );
            assert_eq!(
                read_trimmed(&task_memory.join("memory.limit_in_bytes")),
                "1073741824"
            );
            assert_eq!(read_trimmed(&task_cpu.join("cpu.cfs_quota_us")), "50000");
            assert_eq!(read_trimmed(&cpu.join("cpu.cfs_quota_us")), "25000");
        } else {
            assert_eq!(read_trimmed(&memory.join("memory.max")), "67108864");
            assert_eq!(read_trimmed(&task_memory.join("memory.max")), "1073741824");
            assert_eq!(read_trimmed(&task_cpu.join("cpu.max")), "50000 100000");
        }
        // The parent is busy while a container is in it.
        assert!(matches!(
            f.sandbox.remove_cgroup(&task.path),
            Err(Error::CgroupBusy { .. })
        ));
        control.signal(libc::SIGKILL).unwrap();
        run.join().unwrap().unwrap()
    });
    // From inside: the container sees its own limits.
    let want = if v1 {
        "67108864\n33554432\n256\n25000\n100000\n64\n"
    } else {
        "67108864\n33554432\n10\n25000 100000\n64\n"
    };
    assert_eq!(text(&out.stdout), want);

    // Once the task's containers are gone, its cgroup goes, in every hierarchy.
    f.sandbox.remove_cgroup(&task.path).unwrap();
    for controller in ["memory", "cpu", "pids"] {
        let dir = cgroup_root(controller).join(task.path.trim_start_matches('/'));
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
    f.sandbox.remove_cgroup(&task.path).unwrap();

    // Limits out of range are refused before anything runs, naming the field.
    let (mut spec, _) = f.task(&unique("too-small"), "true");
    spec.resources = Some(Resources {
        memory_limit: Some(MIB),
        ..Resources::default()
    });
    let err = f.sandbox.output(&spec).unwrap_err();
    assert!(
        err.to_string().contains("memory limit 1048576 bytes"),
        "{err}"
    );
    let (mut spec, _) = f.task(&unique("bad-parent"), "true");
    spec.cgroup_parent = Some("../outside".into());
    assert!(matches!(
        f.sandbox.output(&spec),
        Err(Error::InvalidSpec(_))
    ));
    f.assert_no_leftovers();
}

#[test]
fn a_container_over_its_memory_limit_is_oom_killed() {
    let f = Fixture::new();
    // The shell (the init) reads 100 MB into a variable: over the limit, the kernel kills it.
    let (mut spec, _control) = f.task(
        &unique("hog"),
        "v=$(head -c 100000000 /dev/zero | tr '\\0' x); echo ${#v}",
    );
    spec.resources = Some(Resources {
        memory_limit: Some(16 * MIB),
        ..Resources::default()
    });
    let out = f.sandbox.output(&spec).unwrap();
    assert_eq!(out.status.code(), 137, "{}", text(&out.stdout));
    f.assert_no_leftovers();
}

#[test]
fn ulimits_replace_the_defaults() {
    let f = Fixture::new();
    let (mut spec, _) = f.task(
        &unique("ulimits"),
        "ulimit -n; ulimit -Hn; grep -E '^Max (processes|core file size)' /proc/self/limits",
    );
    spec.rlimits = vec![
        Rlimit::new("nofile", 1024, 2048),
        Rlimit::new("nproc", 500, 600),
        Rlimit::new("core", 0, 0),
    ];
    let out = f.sandbox.output(&spec).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Vec<&str>> = text(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["1024"]);
    assert_eq!(lines[1], ["2048"]);
    assert_eq!(lines[2][..5], ["Max", "core", "file", "size", "0"]);
    assert_eq!(lines[2][5], "0");
    assert_eq!(lines[3][..4], ["Max", "processes", "500", "600"]);

    let (mut spec, _) = f.task(&unique("bad-ulimit"), "true");
    spec.rlimits = vec![Rlimit::new("openfiles", 1, 1)];
    let err = f.sandbox.output(&spec).unwrap_err();
    assert!(
        err.to_string().contains("unknown ulimit \"openfiles\""),
        "{err}"
    );
    f.assert_no_leftovers();
}

#[test]
fn readonly_bind_mounts_refuse_writes() {
    let f = Fixture::new();
    let shared = f.tmp.path().join("volume");
    fs::create_dir(&shared).unwrap();
    fs::write(shared.join("config"), "from the host\n").unwrap();
    let (mut spec, _) = f.task(
        &unique("volumes"),
        "cat /ro/config; echo x > /ro/new 2>/dev/null && echo wrote || echo read-only; \
         echo from the container > /rw/out; grep ' /ro ' /proc/self/mounts | grep -c ' ro,'",
    );
    spec.mounts = vec![
        Mount::Bind {
            source: shared.clone(),
            target: "/ro".into(),
            readonly: true,
        },
        Mount::Bind {
            source: shared.clone(),
            target: "/rw".into(),
            readonly: false,
        },
    ];
    let out = f.sandbox.output(&spec).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from the host\nread-only\n1\n");
    assert!(!shared.join("new").exists());
    assert_eq!(
        fs::read_to_string(shared.join("out")).unwrap(),
        "from the container\n"
    );
    f.assert_no_leftovers();
}

#[test]
fn many_task_containers_run_in_parallel_without_interfering() {
    let f = Fixture::new();
    let task = TaskCgroup::new(&f.sandbox, "berth-test-parallel");
    const N: usize = 6;
    let specs: Vec<(RunSpec, ContainerControl)> = (0..N)
        .map(|i| {
            let (mut spec, control) = f.task(
                &unique(&format!("c{i}")),
                &format!("echo c{i} up; sleep 3600"),
            );
            spec.hostname = Some(format!("c{i}"));
            spec.cgroup_parent = Some(task.path.clone());
            spec.resources = Some(Resources {
                memory_limit: Some((16 + i as u64) * MIB),
                ..Resources::default()
            });
            (spec, control)
        })
        .collect();
    let v1 = memory_is_v1();
    std::thread::scope(|s| {
        let runs: Vec<_> = specs
            .iter()
            .map(|(spec, _)| spawn_run(s, &f.sandbox, spec))
            .collect();
        let checks: Vec<_> = specs
            .iter()
            .enumerate()
            .map(|(i, (_, control))| {
                s.spawn(move || {
                    control.wait_started(START).unwrap();
                    let file = if v1 {
                        "memory/memory.limit_in_bytes"
                    } else {
                        "memory.max"
                    };
                    let out = control
                        .exec(
                            [
                                "/bin/sh",
                                "-c",
                                &format!("hostname; cat /sys/fs/cgroup/{file}"),
                            ],
                            &[],
                            Duration::from_secs(60),
                        )
                        .unwrap();
                    assert_eq!(
                        text(&out.stdout),
                        format!("c{i}\n{}\n", (16 + i as u64) * MIB),
                        "{}",
                        text(&out.stderr)
                    );
                    control.signal(libc::SIGKILL).unwrap();
                })
            })
            .collect();
        for check in checks {
            check.join().unwrap();
        }
        for (i, (run, _)) in runs.into_iter().enumerate() {
            let out = run.join().unwrap().unwrap();
            assert_eq!(out.status.code(), 137);
            assert_eq!(text(&out.stdout), format!("c{i} up\n"));
        }
    });
    f.sandbox.remove_cgroup(&task.path).unwrap();
    f.assert_no_leftovers();
}

/// The helper of `a_task_container_whose_owner_died_is_swept`: run in a process of its own,
/// it starts a long-running named container and waits to be killed. Does nothing in a normal
/// test run.
#[test]
fn owner_process_helper() {
    let (Ok(root), Ok(name), Ok(rootfs)) = (
        std::env::var("BERTH_TEST_OWNER_ROOT"),
        std::env::var("BERTH_TEST_OWNER_NAME"),
        std::env::var("BERTH_TEST_OWNER_ROOTFS"),
    ) else {
        return;
    };
    let sandbox = Sandbox::builder().root(root).build().unwrap();
    let mut spec = RunSpec::new(
        RootfsSpec::Dir(rootfs.into()),
        ProcessSpec::new(["sleep", "4713"]),
    );
    spec.name = Some(name);
    let _ = sandbox.output(&spec);
}

#[test]
fn a_task_container_whose_owner_died_is_swept() {
    let f = Fixture::new();
    let name = unique("orphan");
    let mut owner = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "owner_process_helper",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("BERTH_TEST_OWNER_ROOT", f.sandbox.root())
        .env("BERTH_TEST_OWNER_NAME", &name)
        .env("BERTH_TEST_OWNER_ROOTFS", &f.rootfs)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + START;
    let container = loop {
        if let Some(pid) = find_process(&["sleep", "4713"]) {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the owner's container did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    // While its owner lives, the run holds its lock and a sweep leaves it alone.
    assert_eq!(f.sandbox.sweep().unwrap(), 0);
    assert!(process_alive(container));
    assert!(f.sandbox.root().join(&name).is_dir());

    // The owner dies without cleaning up. The runtime process dies with it, but the container
    // outlives both, until a sweep deletes it.
    owner.kill().unwrap();
    owner.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        process_alive(container),
        "the container died with its owner"
    );
    assert_eq!(f.sandbox.sweep().unwrap(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(container) {
        assert!(
            Instant::now() < deadline,
            "the swept container is still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    f.assert_no_leftovers();
}
