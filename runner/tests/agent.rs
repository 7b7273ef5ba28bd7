//! The agent and its task engine against the real kernel and runc, as root: ECS tasks of
//! busybox containers through their whole lifecycle, their networks, dependencies, health
//! checks, stop timeouts, logs, cgroup limits and metadata, and the agent process against a
//! small control plane played by the test.
//!
//! These tests need root, `runc`, iproute2's `ip` and a static `/bin/busybox`; `bash
//! scripts/setup.sh` installs them. They fail, naming that script, when something is missing:
//! they are never skipped.
//!
//! Each test has a bridge, a namespace prefix and a subnet of its own (`bag<n>`,
//! `10.233.<n>.0/24`) and a temporary root with an image store holding a busybox image made
//! here (a layer of the static busybox and its applets, a config and a manifest, committed with
//! the layerstore's own APIs), so the tests run in parallel; a lock file held for the life of
//! the test process keeps two runs of this suite on one machine apart.
//!
//! ECS's smallest health check `interval` is 5 seconds. Registration enforces it; the engine
//! runs whatever the definition says, so some tests lower it to 1 second after registering,
//! to keep the suite quick.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth_layerstore::image::store::ImageStore;
use berth_layerstore::image::{CanonicalBlob, ContainerConfig, History, ImageConfig};
use berth_layerstore::layer::{self, LayerOptions};
use berth_layerstore::media;
use berth_runner::agent::image::Images;
use berth_runner::agent::protocol::{
    PollRequest, PollResponse, RegisterRequest, RegisterResponse, RoleType, StopInstruction,
    TaskAssignment, TaskReport,
};
use berth_runner::agent::task::{TaskEngine, TaskHandle};
use berth_runner::agent::{AgentOptions, LINK_LOCAL_ENDPOINT, NetworkOptions, server};
use berth_runner::ecs::Timestamp;
use berth_runner::ecs::status::{
    ContainerStatus, DesiredStatus, HealthStatus, LaunchType, StopCode, TaskStatus,
};
use berth_runner::ecs::task::Task;
use berth_runner::ecs::taskdef::{RegisterTaskDefinition, TaskDefinition};
use berth_runner::net::{Network, Subnet};
use oci_spec::image::{ImageManifestBuilder, MediaType};
use tempfile::TempDir;

const BUSYBOX: &str = "/bin/busybox";
const IMAGE: &str = "localhost/berth-test/busybox:1";
const MACHINE_LOCK: &str = "/run/berth-agent-tests.lock";
/// Generous bounds: the machines these tests run on are shared and slow.
const STEP: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Environment, image and fixture

/// Fails the test, loudly, when the machine cannot run it; then takes the machine-wide lock
/// for the rest of this process's life.
fn require_environment() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the agent tests need root (mounts, namespaces, runc); run them as root after \
         `bash scripts/setup.sh`"
    );
    for (tool, package) in [("runc", "runc"), ("ip", "iproute2")] {
        let found = Command::new(tool)
            .arg(if tool == "ip" { "-V" } else { "--version" })
            .output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "`{tool}` is not installed: run `bash scripts/setup.sh` (installs {package})"
        );
    }
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: run `bash scripts/setup.sh` (installs busybox-static)"
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

/// The image config's architecture for this machine, as Go names it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Puts a busybox image under [`IMAGE`] into the store at `store_root`: one layer with the
/// static busybox and a link per applet, `/etc/passwd`, `/etc/group` and `/tmp`; ENV
/// `PATH=/bin` and `FROM_IMAGE=yes`; CMD `/bin/sh`.
fn make_image(work: &Path, store_root: &Path) {
    let tree = work.join("image-tree");
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::create_dir_all(tree.join("tmp")).unwrap();
    fs::copy(BUSYBOX, tree.join("bin/busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            symlink("busybox", tree.join("bin").join(applet)).unwrap();
        }
    }
    fs::write(tree.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(tree.join("etc/group"), "root:x:0:\n").unwrap();

    let store = ImageStore::open(store_root).unwrap();
    let staging = store.staging().unwrap();
    let info = layer::create_in_store(&tree, &staging, &LayerOptions::default()).unwrap();
    let mut config = ImageConfig::new("linux", go_arch());
    config.config = Some(ContainerConfig {
        env: Some(vec!["PATH=/bin".into(), "FROM_IMAGE=yes".into()]),
        cmd: Some(vec!["/bin/sh".into()]),
        ..ContainerConfig::default()
    });
    config.rootfs.diff_ids = vec![info.diff_id.clone()];
    config.history = Some(vec![History {
        created_by: Some("agent test busybox".into()),
        ..History::default()
    }]);
    let config = config
        .to_blob(media::OCI_CONFIG)
        .unwrap()
        .ingest(&staging)
        .unwrap();
    let layer = berth_layerstore::image::new_descriptor(&info.media_type, &info.digest, info.size);
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(vec![layer])
        .build()
        .unwrap();
    let manifest = CanonicalBlob::new(media::OCI_MANIFEST, &manifest)
        .unwrap()
        .ingest(&staging)
        .unwrap();
    store
        .commit(&staging, &[(Some(IMAGE.to_owned()), manifest)])
        .unwrap();
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A task ARN no other test (of this process or another) uses.
fn task_arn() -> String {
    let id = format!(
        "{:08x}{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    format!("arn:aws:ecs:local:000000000000:task/default/{id}")
}

/// A registered task definition from `RegisterTaskDefinition` JSON.
fn definition(json: &str) -> TaskDefinition {
    let request = RegisterTaskDefinition::from_json(json).expect("a valid task definition");
    TaskDefinition::register(request, 1, Timestamp::now()).expect("a valid task definition")
}

/// Lowers every health check's interval to one second (see the module docs).
fn quick_health_checks(definition: &mut TaskDefinition) {
    for container in &mut definition.container_definitions {
        if let Some(check) = &mut container.health_check {
            check.interval = Some(1);
        }
    }
}

/// One test's engine, network, store and directories; stops its tasks and removes its bridge
/// when dropped.
struct Fixture {
    n: u8,
    work: TempDir,
    network: Network,
    engine: TaskEngine,
}

impl Fixture {
    /// A fixture for test number `n`, its engine built by `configure` from a builder that has
    /// the network and the image store.
    fn with(
        n: u8,
        configure: impl FnOnce(
            berth_runner::agent::task::TaskEngineBuilder,
        ) -> berth_runner::agent::task::TaskEngineBuilder,
    ) -> Fixture {
        require_environment();
        let options = network_options(n, &std::env::temp_dir());
        remove_leftovers(&options);
        let work = tempfile::tempdir().unwrap();
        let options = network_options(n, work.path());
        let network = options.build().expect("bring the test bridge up");
        let store = work.path().join("store");
        make_image(work.path(), &store);
        let builder = TaskEngine::builder(work.path().join("agent"))
            .network(network.clone())
            .images(Images::open(&store).unwrap())
            .stop_timeout(Duration::from_secs(5));
        let engine = configure(builder).build().expect("build the task engine");
        Fixture {
            n,
            work,
            network,
            engine,
        }
    }

    fn new(n: u8) -> Fixture {
        Fixture::with(n, |builder| builder)
    }

    fn start(&self, definition: TaskDefinition, launch: LaunchType) -> TaskHandle {
        self.engine
            .start(TaskAssignment::new(
                task_arn(),
                "arn:aws:ecs:local:000000000000:cluster/default",
                definition,
                launch,
            ))
            .expect("start the task")
    }

    fn gateway(&self) -> std::net::Ipv4Addr {
        self.network.gateway()
    }
}

/// Every regular file under `dir`, symbolic links not followed.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(kind) if kind.is_file() => files.push(entry.path()),
                _ => {}
            }
        }
    }
    files
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.engine
            .stop_all(StopCode::UserInitiated, "the test is over");
        if !self.engine.wait_all_stopped(STEP) {
            eprintln!("test {}: some tasks did not stop", self.n);
        }
        let network = self.network.clone();
        if let Err(err) = network.remove() {
            eprintln!("test {}: cannot remove the test network: {err}", self.n);
        }
    }
}

fn network_options(n: u8, dir: &Path) -> NetworkOptions {
    NetworkOptions {
        bridge: format!("bag{n}"),
        subnet: Some(format!("10.233.{n}.0/24").parse::<Subnet>().unwrap()),
        netns_prefix: format!("bag{n}-"),
        state_dir: dir.join("net"),
    }
}

/// Removes the namespaces and bridge of test `n` that a crashed run left behind.
fn remove_leftovers(options: &NetworkOptions) {
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&options.netns_prefix) {
                let _ = Command::new("ip").args(["netns", "delete", &name]).output();
            }
        }
    }
    let _ = Command::new("ip")
        .args(["link", "delete", "dev", &options.bridge])
        .output();
}

fn log_of(task: &TaskHandle, container: &str) -> String {
    fs::read_to_string(task.log_path(container).expect("a container of the task"))
        .unwrap_or_default()
}

/// Waits until container `name` of `task` is RUNNING.
fn wait_running(task: &TaskHandle, name: &str) -> Task {
    task.wait_until(STEP, &format!("run {name}"), |t| {
        t.container(name)
            .is_some_and(|c| c.last_status == ContainerStatus::Running)
    })
    .unwrap()
}

/// Checks that `task` stopped because an essential container exited, with ECS's code and
/// reason.
fn assert_stopped_by_essential_exit(task: &Task) {
    assert_eq!(task.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(
        task.stopped_reason.as_deref(),
        Some("Essential container in task exited")
    );
}

fn statuses(task: &TaskHandle) -> Vec<TaskStatus> {
    task.transitions().iter().map(|t| t.status).collect()
}

const FULL_LIFECYCLE: [TaskStatus; 8] = [
    TaskStatus::Provisioning,
    TaskStatus::Pending,
    TaskStatus::Activating,
    TaskStatus::Running,
    TaskStatus::Deactivating,
    TaskStatus::Stopping,
    TaskStatus::Deprovisioning,
    TaskStatus::Stopped,
];

/// Sends an HTTP/1.0 GET to `addr` and returns the body, retrying until `deadline` while the
/// server is not up yet.
fn http_get(addr: SocketAddr, path: &str, deadline: Instant) -> String {
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            match response.split_once("\r\n\r\n") {
                Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
                    Ok(body.to_owned())
                }
                _ => Err(std::io::Error::other(format!("bad answer: {response:?}"))),
            }
        })();
        match attempt {
            Ok(body) => return body,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(err) => panic!("GET http://{addr}{path}: {err}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The task engine

#[test]
fn an_oom_killed_container_gets_ecs_out_of_memory_reason() {
    let fx = Fixture::new(15);
    let task = fx.start(
        definition(
            r#"{"family": "oom", "networkMode": "none",
                "containerDefinitions": [
                  {"name": "hog", "image": "localhost/berth-test/busybox:1", "memory": 16,
                   "dependsOn": [{"containerName": "side", "condition": "START"}],
                   "command": ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]},
                  {"name": "side", "image": "localhost/berth-test/busybox:1", "memory": 16,
                   "essential": false, "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]}
                ]}"#,
        ),
        LaunchType::Ec2,
    );
    let stopped = task.wait_stopped(STEP).unwrap();
    assert_stopped_by_essential_exit(&stopped);
    let hog = stopped.container("hog").unwrap();
    assert_eq!(hog.exit_code, Some(137), "{}", log_of(&task, "hog"));
    assert_eq!(
        hog.reason.as_deref(),
        Some("OutOfMemoryError: Container killed due to memory usage")
    );
    assert_eq!(hog.last_status, ContainerStatus::Stopped);
    // The container the task's stop ended normally has no reason.
    let side = stopped.container("side").unwrap();
    assert_eq!(side.exit_code, Some(0));
    assert_eq!(side.reason, None);
    let report = task.report();
    assert_eq!(
        report.container("hog").unwrap().reason.as_deref(),
        Some("OutOfMemoryError: Container killed due to memory usage")
    );
}

#[test]
fn an_essential_container_exit_stops_the_task_and_a_non_essential_one_does_not() {
    let fx = Fixture::new(1);
    let task = fx.start(
        definition(
            r#"{"family": "exit", "networkMode": "none",
                "containerDefinitions": [
                  {"name": "app", "image": "localhost/berth-test/busybox:1", "memory": 64,
                   "command": ["sh", "-c", "echo out; echo err >&2; echo image=$FROM_IMAGE; sleep 3; exit 3"]},
                  {"name": "short", "image": "localhost/berth-test/busybox:1", "memory": 64,
                   "essential": false, "command": ["true"]},
                  {"name": "side", "image": "localhost/berth-test/busybox:1", "memory": 64,
                   "essential": false, "stopTimeout": 2, "command": ["sleep", "600"]}
                ]}"#,
        ),
        LaunchType::Ec2,
    );
    let after_short = task
        .wait_until(STEP, "see short exit", |t| {
            t.container("short").unwrap().exit_code.is_some()
        })
        .unwrap();
    assert_eq!(after_short.container("short").unwrap().exit_code, Some(0));
    assert_eq!(
        after_short.desired_status,
        DesiredStatus::Running,
        "a non-essential container's exit does not stop the task"
    );

    let stopped = task.wait_stopped(STEP).unwrap();
    assert_stopped_by_essential_exit(&stopped);
    let app = stopped.container("app").unwrap();
    assert_eq!(app.exit_code, Some(3));
    assert_eq!(app.last_status, ContainerStatus::Stopped);
    let side = stopped.container("side").unwrap();
    assert_eq!(
        side.exit_code,
        Some(137),
        "sleep ignores SIGTERM as PID 1 and is killed after its stopTimeout"
    );
    assert_eq!(statuses(&task), FULL_LIFECYCLE);
    let times = [
        stopped.pull_started_at,
        stopped.pull_stopped_at,
        stopped.started_at,
        stopped.stopping_at,
        stopped.execution_stopped_at,
        stopped.stopped_at,
    ]
    .map(|t| t.expect("every lifecycle time is stamped"));
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(stopped.desired_status, DesiredStatus::Stopped);

    let log = log_of(&task, "app");
    assert!(log.contains("out\n") && log.contains("err\n"), "{log:?}");
    assert!(
        log.contains("image=yes\n"),
        "the image's ENV reaches the process: {log:?}"
    );
    let report = task.report();
    assert_eq!(report.last_status, TaskStatus::Stopped);
    assert_eq!(report.container("app").unwrap().exit_code, Some(3));
    assert!(report.container("app").unwrap().runtime_id.is_some());
    assert!(
        report
            .container("app")
            .unwrap()
            .image_digest
            .as_deref()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
}

#[test]
fn containers_start_in_depends_on_order_and_stop_in_reverse() {
    let fx = Fixture::new(2);
    let host = fx.work.path().join("order");
    fs::create_dir_all(&host).unwrap();
    let mut def = definition(&format!(
        r#"{{"family": "deps", "networkMode": "host",
            "volumes": [{{"name": "shared"}}, {{"name": "order", "host": {{"sourcePath": "{}"}}}}],
            "containerDefinitions": [
              {{"name": "init", "image": "localhost/berth-test/busybox:1", "memory": 64,
                "essential": false,
                "mountPoints": [{{"sourceVolume": "shared", "containerPath": "/shared"}}],
                "command": ["sh", "-c", "sleep 1; echo init-done > /shared/init"]}},
              {{"name": "db", "image": "localhost/berth-test/busybox:1", "memory": 64,
                "mountPoints": [{{"sourceVolume": "shared", "containerPath": "/shared"}},
                                {{"sourceVolume": "order", "containerPath": "/order"}}],
                "healthCheck": {{"command": ["CMD-SHELL", "test -f /tmp/ready"], "retries": 1}},
                "command": ["sh", "-c", "trap 'echo db >> /order/stopped; exit 0' TERM; sleep 2; touch /tmp/ready /shared/db-ready; while :; do sleep 1 & wait $!; done"]}},
              {{"name": "app", "image": "localhost/berth-test/busybox:1", "memory": 64,
                "dependsOn": [{{"containerName": "init", "condition": "SUCCESS"}},
                              {{"containerName": "db", "condition": "HEALTHY"}}],
                "mountPoints": [{{"sourceVolume": "shared", "containerPath": "/shared"}},
                                {{"sourceVolume": "order", "containerPath": "/order"}}],
                "command": ["sh", "-c", "cat /shared/init; test -f /shared/db-ready && echo saw-db-ready; trap 'echo app >> /order/stopped; exit 0' TERM; while :; do sleep 1 & wait $!; done"]}}
            ]}}"#,
        host.display()
    ));
    quick_health_checks(&mut def);
    let task = fx.start(def, LaunchType::Ec2);
    let running = task
        .wait_until(STEP, "reach RUNNING", |t| {
            t.last_status == TaskStatus::Running
        })
        .unwrap();
    assert_eq!(running.container("init").unwrap().exit_code, Some(0));
    assert_eq!(
        running.container("db").unwrap().health_status,
        HealthStatus::Healthy
    );
    assert_eq!(running.health_status, HealthStatus::Healthy);
    wait_running(&task, "app");
    let deadline = Instant::now() + STEP;
    while !log_of(&task, "app").contains("saw-db-ready") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = log_of(&task, "app");
    assert!(
        log.contains("init-done\n"),
        "app started after init succeeded: {log:?}"
    );
    assert!(
        log.contains("saw-db-ready\n"),
        "app started after db was healthy: {log:?}"
    );

    task.stop(StopCode::UserInitiated, "Task stopped by user");
    let stopped = task.wait_stopped(STEP).unwrap();
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
    assert_eq!(
        fs::read_to_string(host.join("stopped")).unwrap(),
        "app\ndb\n",
        "app depends on db, so it is stopped first"
    );
}

#[test]
fn a_success_dependency_that_fails_keeps_its_dependent_from_starting() {
    let fx = Fixture::new(3);
    let task = fx.start(
        definition(
            r#"{"family": "faildep", "networkMode": "host",
                "containerDefinitions": [
                  {"name": "migrate", "image": "localhost/berth-test/busybox:1", "memory": 64,
                   "essential": false, "command": ["sh", "-c", "exit 1"]},
                  {"name": "app", "image": "localhost/berth-test/busybox:1", "memory": 64,
                   "dependsOn": [{"containerName": "migrate", "condition": "SUCCESS"}],
                   "command": ["sleep", "600"]}
                ]}"#,
        ),
        LaunchType::Ec2,
    );
    let stopped = task.wait_stopped(STEP).unwrap();
    let app = stopped.container("app").unwrap();
    assert_eq!(app.last_status, ContainerStatus::Stopped);
    assert_eq!(app.exit_code, None, "app never ran");
    let reason = app.reason.as_deref().unwrap();
    assert_eq!(
        reason,
        "dependency container migrate exited with code 1, and app needs it to exit with code 0 \
         (SUCCESS)"
    );
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    assert_eq!(stopped.stopped_reason.as_deref(), Some(reason));
    assert!(!statuses(&task).contains(&TaskStatus::Running));
}

#[test]
fn a_failing_health_check_makes_the_container_and_the_task_unhealthy() {
    let fx = Fixture::new(4);
    let mut def = definition(
        r#"{"family": "health", "networkMode": "none",
            "containerDefinitions": [
              {"name": "web", "image": "localhost/berth-test/busybox:1", "memory": 64,
               "stopTimeout": 1,
               "healthCheck": {"command": ["CMD-SHELL", "echo probe-failed; exit 1"], "retries": 2},
               "command": ["sleep", "600"]},
              {"name": "sidecar", "image": "localhost/berth-test/busybox:1", "memory": 64,
               "essential": false, "stopTimeout": 1,
               "healthCheck": {"command": ["CMD", "true"], "retries": 2},
               "command": ["sleep", "600"]}
            ]}"#,
    );
    quick_health_checks(&mut def);
    let task = fx.start(def, LaunchType::Ec2);
    let unhealthy = task
        .wait_until(STEP, "become UNHEALTHY", |t| {
            t.container("web").unwrap().health_status == HealthStatus::Unhealthy
                && t.container("sidecar").unwrap().health_status == HealthStatus::Healthy
        })
        .unwrap();
    assert_eq!(
        unhealthy.health_status,
        HealthStatus::Unhealthy,
        "an unhealthy essential container makes the task unhealthy"
    );
    assert_eq!(
        unhealthy.last_status,
        TaskStatus::Running,
        "an unhealthy container is reported, not stopped"
    );
    assert_eq!(task.report().health_status, HealthStatus::Unhealthy);
}

#[test]
fn stop_sends_sigterm_then_sigkill_after_the_stop_timeout() {
    let fx = Fixture::new(5);
    let host = fx.work.path().join("host-data");
    fs::create_dir_all(&host).unwrap();
    let task = fx.start(
        definition(&format!(
            r#"{{"family": "stop", "networkMode": "none",
                "volumes": [{{"name": "data", "host": {{"sourcePath": "{}"}}}}],
                "containerDefinitions": [
                  {{"name": "graceful", "image": "localhost/berth-test/busybox:1", "memory": 64,
                    "mountPoints": [{{"sourceVolume": "data", "containerPath": "/data"}}],
                    "command": ["sh", "-c", "trap 'echo got-term > /data/term; exit 0' TERM; touch /data/ready; while :; do sleep 1 & wait $!; done"]}},
                  {{"name": "stubborn", "image": "localhost/berth-test/busybox:1", "memory": 64,
                    "stopTimeout": 2,
                    "command": ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]}}
                ]}}"#,
            host.display()
        )),
        LaunchType::Ec2,
    );
    task.wait_until(STEP, "reach RUNNING", |t| {
        t.last_status == TaskStatus::Running
    })
    .unwrap();
    // SIGTERM before the shell has set its trap would be ignored (it is PID 1): wait for it.
    let deadline = Instant::now() + STEP;
    while !host.join("ready").exists() {
        assert!(
            Instant::now() < deadline,
            "the graceful container never set its trap"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let asked = Instant::now();
    task.stop(StopCode::UserInitiated, "Task stopped by user");
    let stopped = task.wait_stopped(STEP).unwrap();
    let took = asked.elapsed();
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
    assert_eq!(
        stopped.stopped_reason.as_deref(),
        Some("Task stopped by user")
    );
    assert_eq!(stopped.container("graceful").unwrap().exit_code, Some(0));
    assert_eq!(fs::read_to_string(host.join("term")).unwrap(), "got-term\n");
    assert_eq!(
        stopped.container("stubborn").unwrap().exit_code,
        Some(137),
        "SIGKILL after stopTimeout"
    );
    assert!(
        took >= Duration::from_secs(2),
        "stubborn got its 2 s before SIGKILL (took {took:?})"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(statuses(&task), FULL_LIFECYCLE);
}

#[test]
fn logs_keep_each_containers_output_as_written_and_can_be_followed() {
    let fx = Fixture::new(6);
    let task = fx.start(
        definition(
            r#"{"family": "logs", "networkMode": "none",
                "containerDefinitions": [
                  {"name": "talker", "image": "localhost/berth-test/busybox:1", "memory": 64,
                   "command": ["sh", "-c", "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three; sleep 1"]},
                  {"name": "quiet", "image": "localhost/berth-test/busybox:1", "memory": 64,
                   "essential": false, "command": ["sh", "-c", "echo just-me"]}
                ]}"#,
        ),
        LaunchType::Ec2,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Follow while the container runs: the body ends when it exits.
    let followed = runtime.block_on(async {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let request = axum::http::Request::get(format!("/logs/{}/talker?follow=true", task.id()))
            .body(axum::body::Body::empty())
            .unwrap();
        let response = server::app(fx.engine.clone())
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        tokio::time::timeout(STEP, response.into_body().collect())
            .await
            .expect("a followed log ends when its container exits")
            .unwrap()
            .to_bytes()
    });
    assert_eq!(&followed[..], b"one\ntwo\nthree\n");
    task.wait_stopped(STEP).unwrap();
    assert_eq!(log_of(&task, "talker"), "one\ntwo\nthree\n");
    assert_eq!(log_of(&task, "quiet"), "just-me\n");
    let path = task.log_path("talker").unwrap();
    assert_eq!(path, task.dir().join("talker.log"));

    let missing = runtime.block_on(async {
        use tower::ServiceExt;
        let request = axum::http::Request::get(format!("/logs/{}/nobody", task.id()))
            .body(axum::body::Body::empty())
            .unwrap();
        server::app(fx.engine.clone())
            .oneshot(request)
            .await
            .unwrap()
            .status()
    });
    assert_eq!(missing, 404);
}

#[test]
fn awsvpc_tasks_get_their_own_addresses_and_reach_each_other() {
    let fx = Fixture::new(7);
    let server = fx.start(
        definition(
            r#"{"family": "web", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
                "requiresCompatibilities": ["FARGATE"],
                "containerDefinitions": [
                  {"name": "httpd", "image": "localhost/berth-test/busybox:1",
                   "portMappings": [{"containerPort": 8080}],
                   "command": ["sh", "-c", "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]}
                ]}"#,
        ),
        LaunchType::Fargate,
    );
    let running = wait_running(&server, "httpd");
    let ip = running
        .private_ipv4()
        .expect("an awsvpc task has an address")
        .to_owned();
    let eni = running.eni().expect("an ENI attachment");
    assert_eq!(
        eni.status,
        berth_runner::ecs::task::AttachmentStatus::Attached
    );
    for detail in [
        "macAddress",
        "subnetId",
        "networkInterfaceId",
        "privateDnsName",
    ] {
        assert!(
            eni.detail(detail).is_some(),
            "{detail} missing from {eni:?}"
        );
    }
    assert_eq!(
        running.containers[0].network_interfaces[0]
            .private_ipv4_address
            .as_deref(),
        Some(ip.as_str())
    );
    assert!(
        format!("10.233.{}.0/24", fx.n)
            .parse::<Subnet>()
            .unwrap()
            .contains(ip.parse().unwrap())
    );

    let client = fx.start(
        definition(&format!(
            r#"{{"family": "client", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
                "requiresCompatibilities": ["FARGATE"],
                "containerDefinitions": [
                  {{"name": "wget", "image": "localhost/berth-test/busybox:1",
                    "command": ["sh", "-c", "for i in $(seq 50); do wget -qO- http://{ip}:8080/ && exit 0; sleep 0.2; done; exit 1"]}}
                ]}}"#
        )),
        LaunchType::Fargate,
    );
    let done = client.wait_stopped(STEP).unwrap();
    let client_ip = done.private_ipv4().unwrap();
    assert_ne!(client_ip, ip, "each awsvpc task has its own address");
    assert_eq!(
        done.container("wget").unwrap().exit_code,
        Some(0),
        "log: {}",
        log_of(&client, "wget")
    );
    let hostname = format!("ip-{}.local.compute.internal", ip.replace('.', "-"));
    assert_eq!(log_of(&client, "wget"), format!("hello-from-{hostname}\n"));
}

#[test]
fn bridge_mode_publishes_a_dynamic_host_port() {
    let fx = Fixture::new(8);
    let task = fx.start(
        definition(
            r#"{"family": "bridged", "networkMode": "bridge",
                "containerDefinitions": [
                  {"name": "httpd", "image": "localhost/berth-test/busybox:1", "memory": 64,
                   "portMappings": [{"containerPort": 8080}],
                   "command": ["sh", "-c", "mkdir -p /www && echo published > /www/index.html && exec httpd -f -p 8080 -h /www"]}
                ]}"#,
        ),
        LaunchType::Ec2,
    );
    let running = wait_running(&task, "httpd");
    let binding = &running.containers[0].network_bindings[0];
    assert_eq!(binding.container_port, 8080);
    assert_eq!(binding.bind_ip, "0.0.0.0");
    assert!(
        berth_runner::net::EPHEMERAL_PORTS.contains(&binding.host_port),
        "a dynamic host port from ECS's range: {binding:?}"
    );
    assert!(running.attachments.is_empty(), "bridge tasks have no ENI");
    let addr = SocketAddr::from(([127, 0, 0, 1], binding.host_port));
    assert_eq!(http_get(addr, "/", Instant::now() + STEP), "published\n");
    let port = binding.host_port;
    task.stop(StopCode::UserInitiated, "Task stopped by user");
    task.wait_stopped(STEP).unwrap();
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "host port {port} is closed with the task"
    );
}

#[test]
fn the_metadata_and_credentials_endpoints_answer_inside_the_task() {
    require_environment();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("0.0.0.0:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let gateway = format!("10.233.9.1:{port}").parse().unwrap();
    let fx = Fixture::with(9, |builder| {
        builder
            .runtime(runtime.handle().clone())
            .metadata_endpoints(
                Some(SocketAddr::from(([127, 0, 0, 1], port))),
                Some(gateway),
            )
            .relative_credentials(true)
    });
    assert_eq!(fx.gateway().to_string(), "10.233.9.1");
    let app = server::app(fx.engine.clone());
    // The link-local endpoint, as the agent serves it, on this fixture's bridge.
    fx.network
        .add_host_address(std::net::Ipv4Addr::new(169, 254, 170, 2))
        .unwrap();
    let link_local = runtime
        .block_on(tokio::net::TcpListener::bind(LINK_LOCAL_ENDPOINT))
        .unwrap_or_else(|e| panic!("bind {LINK_LOCAL_ENDPOINT} (is an agent running?): {e}"));
    let again = app.clone();
    runtime.spawn(async move { axum::serve(link_local, again).await });
    runtime.spawn(async move { axum::serve(listener, app).await });

    // The credentials come with the assignment, as the control plane sends them.
    let key = berth_registry::auth::TokenKey::from_bytes(vec![5; 32]).unwrap();
    let roles = berth_runner::control::Roles::new(key.clone()).policy(
        "arn:aws:iam::000000000000:role/app",
        berth_registry::auth::Policy::allow(&["pull"], &["app/*"]),
    );
    let mut assignment = TaskAssignment::new(
        task_arn(),
        "arn:aws:ecs:local:000000000000:cluster/default",
        definition(
            r#"{"family": "meta", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
                "requiresCompatibilities": ["FARGATE"],
                "taskRoleArn": "arn:aws:iam::000000000000:role/app",
                "containerDefinitions": [
                  {"name": "probe", "image": "localhost/berth-test/busybox:1",
                   "command": ["sh", "-c", "for i in $(seq 100); do wget -qO- $ECS_CONTAINER_METADATA_URI_V4/task | grep -q 'KnownStatus.:.RUNNING' && break; sleep 0.1; done; wget -qO- $ECS_CONTAINER_METADATA_URI_V4/task; echo; wget -qO- $ECS_CONTAINER_METADATA_URI_V4; echo; wget -qO- --header \"Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN\" $AWS_CONTAINER_CREDENTIALS_FULL_URI; echo; wget -qO- $ECS_CONTAINER_METADATA_URI_V4/stats; echo; wget -qO- http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI; echo; wget -qO- --header 'Authorization: wrong' $AWS_CONTAINER_CREDENTIALS_FULL_URI || echo refused"]}
                ]}"#,
        ),
        LaunchType::Fargate,
    );
    let issued = roles.issue(
        &assignment.task_arn,
        RoleType::TaskApplication,
        "arn:aws:iam::000000000000:role/app",
    );
    assignment.credentials.push(issued.clone());
    let task = fx.engine.start(assignment).expect("start the task");
    let stopped = task.wait_stopped(STEP).unwrap();
    let log = log_of(&task, "probe");
    assert_eq!(
        stopped.container("probe").unwrap().exit_code,
        Some(0),
        "log: {log}"
    );
    let mut lines = log.lines();
    let task_json: serde_json::Value =
        serde_json::from_str(lines.next().unwrap()).expect("task metadata JSON");
    assert_eq!(task_json["TaskARN"], task.arn());
    assert_eq!(task_json["Family"], "meta");
    assert_eq!(task_json["Revision"], "1");
    assert_eq!(task_json["LaunchType"], "FARGATE");
    assert_eq!(task_json["KnownStatus"], "RUNNING");
    assert_eq!(task_json["Limits"]["CPU"], 0.25);
    assert_eq!(task_json["Limits"]["Memory"], 512);
    assert_eq!(task_json["AvailabilityZone"], "local-1a");
    assert!(task_json["PullStartedAt"].as_str().unwrap().ends_with('Z'));
    let ip = stopped.private_ipv4().unwrap();
    assert_eq!(task_json["Networks"][0]["NetworkMode"], "awsvpc");
    assert_eq!(task_json["Networks"][0]["IPv4Addresses"][0], ip);
    assert_eq!(task_json["Containers"][0]["Name"], "probe");
    let container: serde_json::Value =
        serde_json::from_str(lines.next().unwrap()).expect("container metadata JSON");
    assert_eq!(container["Name"], "probe");
    assert_eq!(container["KnownStatus"], "RUNNING");
    assert_eq!(
        container["DockerId"],
        stopped
            .container("probe")
            .unwrap()
            .runtime_id
            .clone()
            .unwrap()
    );
    assert_eq!(
        container["Labels"]["com.amazonaws.ecs.task-arn"],
        task.arn()
    );
    let credentials: serde_json::Value =
        serde_json::from_str(lines.next().unwrap()).expect("credentials JSON");
    assert_eq!(credentials["RoleArn"], "arn:aws:iam::000000000000:role/app");
    assert!(
        credentials["AccessKeyId"]
            .as_str()
            .unwrap()
            .starts_with("ASIA")
    );
    assert_eq!(credentials["AccessKeyId"], issued.access_key_id.as_str());
    assert!(credentials["Expiration"].as_str().is_some());
    let claims = key
        .verify_credential(credentials["Token"].as_str().unwrap())
        .expect("the Token is a registry credential");
    assert!(claims.policy.allows("app/web", "pull"));
    assert!(!claims.policy.allows("app/web", "push"));
    // Secrets stay in memory: nothing under the agent's root holds the token but the output
    // of the container that printed it.
    for entry in walk(fx.work.path()) {
        if entry.file_name().is_some_and(|name| name == "probe.log") {
            continue;
        }
        if let Ok(text) = fs::read_to_string(&entry) {
            assert!(
                !text.contains(&issued.session_token),
                "{} holds the session token",
                entry.display()
            );
        }
    }
    let stats: serde_json::Value = serde_json::from_str(lines.next().unwrap()).expect("stats JSON");
    assert!(
        stats["memory_stats"]["usage"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert!(
        stats["pids_stats"]["current"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert!(
        stats["cpu_stats"]["cpu_usage"]["total_usage"]
            .as_u64()
            .is_some(),
        "{stats}"
    );
    // The SDKs' way: 169.254.170.2 and the relative URI, with no Authorization header.
    let relative: serde_json::Value =
        serde_json::from_str(lines.next().unwrap()).expect("link-local credentials JSON");
    assert_eq!(relative["AccessKeyId"], credentials["AccessKeyId"]);
    // A wrong Authorization header is refused even with the right id. wget's error goes to
    // stderr and the shell's "refused" to stdout, two pipes whose lines can reach the log in
    // either order.
    let rest: Vec<&str> = lines.collect();
    assert!(rest.contains(&"refused"), "{rest:?}");
    assert!(
        rest.iter()
            .any(|line| line.contains("server returned error: HTTP/1.1 400")),
        "{rest:?}"
    );
    drop(fx);
    runtime.shutdown_background();
}

/// `/proc/<pid>/cgroup`'s path of the v1 `controller` hierarchy, else of the unified one, as a
/// directory under `/sys/fs/cgroup`.
fn cgroup_dir(pid: u32, controller: &str) -> (PathBuf, bool) {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let _ = parts.next();
        let (controllers, path) = (parts.next().unwrap(), parts.next().unwrap());
        if controllers.split(',').any(|c| c == controller) {
            let dir = Path::new("/sys/fs/cgroup")
                .join(controllers)
                .join(path.trim_start_matches('/'));
            if dir.is_dir() {
                return (dir, false);
            }
            return (
                Path::new("/sys/fs/cgroup")
                    .join(controller)
                    .join(path.trim_start_matches('/')),
                false,
            );
        }
    }
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup");
    (
        Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')),
        true,
    )
}

fn read_number(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

#[test]
fn a_fargate_task_gets_its_size_as_cgroup_limits() {
    let fx = Fixture::new(10);
    let task = fx.start(
        definition(
            r#"{"family": "sized", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
                "requiresCompatibilities": ["FARGATE"],
                "containerDefinitions": [
                  {"name": "app", "image": "localhost/berth-test/busybox:1", "memory": 128,
                   "cpu": 128, "stopTimeout": 1, "command": ["sleep", "600"]}
                ]}"#,
        ),
        LaunchType::Fargate,
    );
    wait_running(&task, "app");
    let pid = task.container_pid("app").expect("the container runs");
    let (memory, unified) = cgroup_dir(pid, "memory");
    let parent = memory.parent().unwrap();
    assert!(
        parent.ends_with(format!("berth/{}", task.id())),
        "the container's cgroup is under the task's: {}",
        memory.display()
    );
    let mib = 1024 * 1024;
    if unified {
        assert_eq!(
            read_number(&parent.join("memory.max")),
            (512 * mib).to_string()
        );
        assert_eq!(
            read_number(&memory.join("memory.max")),
            (128 * mib).to_string()
        );
        assert_eq!(read_number(&parent.join("cpu.max")), "25000 100000");
    } else {
        assert_eq!(
            read_number(&parent.join("memory.limit_in_bytes")),
            (512 * mib).to_string()
        );
        assert_eq!(
            read_number(&memory.join("memory.limit_in_bytes")),
            (128 * mib).to_string()
        );
        let (cpu, _) = cgroup_dir(pid, "cpu");
        assert_eq!(
            read_number(&cpu.parent().unwrap().join("cpu.cfs_quota_us")),
            "25000"
        );
        assert_eq!(read_number(&cpu.join("cpu.shares")), "128");
    }
    task.stop(StopCode::UserInitiated, "Task stopped by user");
    task.wait_stopped(STEP).unwrap();
    assert!(!parent.exists(), "the task's cgroup goes with it");
}

#[test]
fn a_missing_image_fails_the_task_with_cannot_pull_container_error() {
    let fx = Fixture::new(11);
    let task = fx.start(
        definition(
            r#"{"family": "nopull", "networkMode": "none",
                "containerDefinitions": [
                  {"name": "app", "image": "127.0.0.1:1/nothing/here:1", "memory": 64}
                ]}"#,
        ),
        LaunchType::Ec2,
    );
    let stopped = task.wait_stopped(STEP).unwrap();
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = stopped.stopped_reason.unwrap();
    assert!(reason.starts_with("CannotPullContainerError: "), "{reason}");
    assert!(reason.contains("127.0.0.1:1/nothing/here:1"), "{reason}");
    assert_eq!(
        stopped.containers[0].reason.as_deref(),
        Some(reason.as_str())
    );
    assert!(stopped.pull_started_at.is_some() && stopped.pull_stopped_at.is_some());
    assert_eq!(
        statuses(&task),
        [
            TaskStatus::Provisioning,
            TaskStatus::Pending,
            TaskStatus::Deprovisioning,
            TaskStatus::Stopped
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// The agent process

/// A control plane played by the test: it registers the agent, hands out one task on its first
/// poll, records every report, answers 503 to a few polls and then 404 once (the agent must
/// register again under its id), and asks for the task to stop once asked to.
#[derive(Default)]
struct FakeControlPlane {
    registrations: Vec<RegisterRequest>,
    reports: Vec<TaskReport>,
    pending: Option<TaskAssignment>,
    stop: Option<StopInstruction>,
    failures: Vec<u16>,
    polls: usize,
}

type Shared = Arc<Mutex<FakeControlPlane>>;

fn fake_control_plane(state: Shared) -> axum::Router {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::post;
    axum::Router::new()
        .route(
            "/berth/v1/agents/register",
            post(
                |State(state): State<Shared>, axum::Json(request): axum::Json<RegisterRequest>| async move {
                    state.lock().unwrap().registrations.push(request);
                    axum::Json(RegisterResponse {
                        agent_id: "agent-7".into(),
                        container_instance_arn: Some(
                            "arn:aws:ecs:local:000000000000:container-instance/default/agent-7"
                                .into(),
                        ),
                        heartbeat_seconds: 1,
                    })
                },
            ),
        )
        .route(
            "/berth/v1/agents/{id}/poll",
            post(
                |State(state): State<Shared>,
                 UrlPath(id): UrlPath<String>,
                 axum::Json(request): axum::Json<PollRequest>| async move {
                    assert_eq!(id, "agent-7");
                    let mut state = state.lock().unwrap();
                    state.polls += 1;
                    if !state.failures.is_empty() {
                        let status = state.failures.remove(0);
                        return StatusCode::from_u16(status).unwrap().into_response();
                    }
                    state.reports.extend(request.tasks);
                    let answer = PollResponse {
                        start: state.pending.take().into_iter().collect(),
                        stop: state.stop.take().into_iter().collect(),
                        credentials: Vec::new(),
                    };
                    axum::Json(answer).into_response()
                },
            ),
        )
        .with_state(state)
}

/// Waits until `done` holds for the control plane's state.
fn wait_for(state: &Shared, what: &str, done: impl Fn(&FakeControlPlane) -> bool) {
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        if done(&state.lock().unwrap()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = state.lock().unwrap();
    panic!(
        "the control plane did not see {what}; last report: {:?}",
        state.reports.last()
    );
}

fn last_report(state: &Shared, arn: &str) -> Option<TaskReport> {
    state
        .lock()
        .unwrap()
        .reports
        .iter()
        .rev()
        .find(|r| r.task_arn == arn)
        .cloned()
}

#[test]
fn the_agent_registers_runs_its_assignments_reports_and_survives_a_control_plane_outage() {
    require_environment();
    let n = 12;
    remove_leftovers(&network_options(n, &std::env::temp_dir()));
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    make_image(work.path(), &store);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let state: Shared = Arc::default();
    let arn = task_arn();
    state.lock().unwrap().pending = Some(TaskAssignment::new(
        arn.clone(),
        "arn:aws:ecs:local:000000000000:cluster/default",
        definition(
            r#"{"family": "assigned", "networkMode": "awsvpc",
                "containerDefinitions": [
                  {"name": "app", "image": "localhost/berth-test/busybox:1", "memory": 64,
                   "command": ["sh", "-c", "echo assigned-and-running; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]}
                ]}"#,
        ),
        LaunchType::Ec2,
    ));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let control_plane = listener.local_addr().unwrap();
    let app = fake_control_plane(state.clone());
    runtime.spawn(async move { axum::serve(listener, app).await });

    let agent_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut options = AgentOptions::new(
        format!("http://{control_plane}").parse().unwrap(),
        work.path().join("agent"),
    );
    options.store = Some(store);
    options.network = network_options(n, work.path());
    options.listen = SocketAddr::from(([127, 0, 0, 1], agent_port));
    options.fargate = true;
    options.cpu = Some(2048);
    options.memory = Some(4096);
    options.attributes.insert("stack".into(), "test".into());
    options.stop_timeout = Some(Duration::from_secs(5));
    // 169.254.170.2:80 is the metadata test's while the suite runs in parallel.
    options.link_local = false;
    let shutdown = options.shutdown.clone();
    let agent = runtime.spawn(berth_runner::agent::run(options));

    wait_for(&state, "a registration", |s| !s.registrations.is_empty());
    {
        let s = state.lock().unwrap();
        let registration = &s.registrations[0];
        assert_eq!(registration.cluster, "default");
        assert_eq!(registration.agent_id, None, "a new agent has no id yet");
        assert_eq!((registration.cpu, registration.memory), (2048, 4096));
        assert!(registration.ec2 && registration.fargate);
        assert_eq!(
            registration.address,
            format!("http://127.0.0.1:{agent_port}")
        );
        assert_eq!(registration.attributes["ecs.instance-type"], "berth.local");
        assert_eq!(registration.attributes["ecs.availability-zone"], "local-1a");
        assert_eq!(registration.attributes["ecs.os-type"], "linux");
        assert_eq!(registration.attributes["stack"], "test");
    }
    // The agent saves its id once the answer to its registration is in: poll for it.
    let saved_at = work.path().join("agent/agent.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !saved_at.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let saved: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&fs::read(&saved_at).expect("agent.json is saved")).unwrap();
    assert_eq!(saved["agentId"], "agent-7");

    wait_for(&state, "the task RUNNING", |s| {
        s.reports
            .iter()
            .any(|r| r.task_arn == arn && r.last_status == TaskStatus::Running)
    });
    let running = last_report(&state, &arn).unwrap();
    assert_eq!(
        running.container("app").unwrap().last_status,
        ContainerStatus::Running
    );
    assert_eq!(running.attachments[0].kind, "ElasticNetworkInterface");
    let task_id = arn.rsplit('/').next().unwrap();
    let log = http_get(
        SocketAddr::from(([127, 0, 0, 1], agent_port)),
        &format!("/logs/{task_id}/app"),
        Instant::now() + STEP,
    );
    assert_eq!(log, "assigned-and-running\n");

    // The control plane fails for a while, then forgets the agent: the task keeps running,
    // and the agent registers again under its id.
    let polls = {
        let mut s = state.lock().unwrap();
        s.failures = vec![503, 503, 503, 404];
        s.polls
    };
    wait_for(&state, "a second registration", |s| {
        s.registrations.len() >= 2
    });
    {
        let s = state.lock().unwrap();
        assert!(s.polls >= polls + 4);
        assert_eq!(s.registrations[1].agent_id.as_deref(), Some("agent-7"));
    }
    let reports_before = state.lock().unwrap().reports.len();
    wait_for(&state, "reports after the outage", |s| {
        s.reports.len() > reports_before
    });
    assert_eq!(
        last_report(&state, &arn).unwrap().last_status,
        TaskStatus::Running,
        "the task kept running while the control plane was away"
    );

    state.lock().unwrap().stop = Some(StopInstruction {
        task_arn: arn.clone(),
        reason: Some("Task stopped by user".into()),
        stop_code: Some(StopCode::UserInitiated),
    });
    wait_for(&state, "the task STOPPED", |s| {
        s.reports
            .iter()
            .any(|r| r.task_arn == arn && r.last_status == TaskStatus::Stopped)
    });
    let stopped = last_report(&state, &arn).unwrap();
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
    assert_eq!(
        stopped.stopped_reason.as_deref(),
        Some("Task stopped by user")
    );
    assert_eq!(stopped.container("app").unwrap().exit_code, Some(0));
    assert!(stopped.stopped_at.is_some());

    shutdown.cancel();
    runtime
        .block_on(async { tokio::time::timeout(STEP, agent).await })
        .expect("the agent stops when asked")
        .unwrap()
        .expect("the agent ran without error");
    let network = network_options(n, work.path()).build().unwrap();
    network.remove().unwrap();
    runtime.shutdown_background();
}

#[test]
fn a_containers_settings_reach_its_process() {
    let fx = Fixture::new(13);
    let secret = fx.work.path().join("token");
    fs::write(&secret, "s3cret\n").unwrap();
    let assignment = TaskAssignment::new(
        task_arn(),
        "arn:aws:ecs:local:000000000000:cluster/default",
        definition(&format!(
            r#"{{"family": "settings", "networkMode": "none",
                "containerDefinitions": [
                  {{"name": "app", "image": "localhost/berth-test/busybox:1", "memory": 64,
                    "environment": [{{"name": "MODE", "value": "prod"}},
                                    {{"name": "FROM_IMAGE", "value": "overridden"}}],
                    "secrets": [{{"name": "TOKEN", "valueFrom": "file://{}"}}],
                    "workingDirectory": "/srv/app",
                    "hostname": "box-1",
                    "readonlyRootFilesystem": true,
                    "ulimits": [{{"name": "nofile", "softLimit": 4096, "hardLimit": 8192}}],
                    "linuxParameters": {{"tmpfs": [{{"containerPath": "/scratch", "size": 16}}]}},
                    "extraHosts": [{{"hostname": "db.internal", "ipAddress": "10.1.2.3"}}],
                    "entryPoint": ["sh", "-c"],
                    "command": ["echo env=$MODE image=$FROM_IMAGE secret=$TOKEN exec=$AWS_EXECUTION_ENV; pwd; ulimit -n; hostname; if touch /probe 2>/dev/null; then echo writable; else echo read-only; fi; touch /scratch/ok && echo tmpfs-ok; grep db.internal /etc/hosts"]}}
                ]}}"#,
            secret.display()
        )),
        LaunchType::Ec2,
    );
    let task = fx.engine.start(assignment.clone()).unwrap();
    let again = fx.engine.start(assignment).unwrap();
    assert_eq!(
        again.arn(),
        task.arn(),
        "starting a task twice starts it once"
    );
    let stopped = task.wait_stopped(STEP).unwrap();
    assert_eq!(
        stopped.container("app").unwrap().exit_code,
        Some(0),
        "log: {}",
        log_of(&task, "app")
    );
    assert_eq!(
        log_of(&task, "app"),
        "env=prod image=overridden secret=s3cret exec=AWS_ECS_EC2\n/srv/app\n4096\nbox-1\n\
         read-only\ntmpfs-ok\n10.1.2.3\tdb.internal\n"
    );

    let refused = fx.start(
        definition(
            r#"{"family": "vault", "networkMode": "none",
                "containerDefinitions": [
                  {"name": "app", "image": "localhost/berth-test/busybox:1", "memory": 64,
                   "secrets": [{"name": "DB", "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db"}],
                   "command": ["true"]}
                ]}"#,
        ),
        LaunchType::Ec2,
    );
    let stopped = refused.wait_stopped(STEP).unwrap();
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    let reason = stopped.stopped_reason.unwrap();
    assert!(
        reason.starts_with("ResourceInitializationError: unable to pull secrets or registry auth:"),
        "{reason}"
    );
    assert!(
        reason.contains("file://"),
        "the reason says what is supported: {reason}"
    );
}

#[test]
fn a_restarted_engine_reports_its_previous_tasks_stopped_and_cleans_them_up() {
    let fx = Fixture::new(14);
    let task = fx.start(
        definition(
            r#"{"family": "previous", "networkMode": "awsvpc",
                "containerDefinitions": [
                  {"name": "app", "image": "localhost/berth-test/busybox:1", "memory": 64,
                   "stopTimeout": 1, "command": ["sh", "-c", "echo hello; sleep 600"]}
                ]}"#,
        ),
        LaunchType::Ec2,
    );
    task.wait_until(STEP, "reach RUNNING", |t| {
        t.last_status == TaskStatus::Running
    })
    .unwrap();
    // The record as the engine wrote it while the task ran: what a dead agent leaves.
    let record = task.dir().join("task.json");
    let while_running = fs::read(&record).unwrap();
    task.stop(StopCode::UserInitiated, "Task stopped by user");
    task.wait_stopped(STEP).unwrap();
    fs::write(&record, &while_running).unwrap();

    let engine = TaskEngine::builder(fx.engine.root())
        .network(fx.network.clone())
        .images(Images::open(&fx.work.path().join("store")).unwrap())
        .cleanup_wait(Duration::ZERO)
        .build()
        .unwrap();
    let restored = engine.restore().unwrap();
    assert_eq!(restored, vec![task.arn().to_owned()]);
    let again = engine.task(task.id()).expect("the restored task");
    let view = again.describe();
    assert_eq!(view.last_status, TaskStatus::Stopped);
    assert_stopped_by_essential_exit(&view);
    let app = view.container("app").unwrap();
    assert_eq!(app.last_status, ContainerStatus::Stopped);
    assert!(
        app.reason.as_deref().unwrap().contains("agent restarted"),
        "{app:?}"
    );
    assert_eq!(log_of(&again, "app"), "hello\n", "the logs are still there");
    assert_eq!(engine.reports()[0].last_status, TaskStatus::Stopped);

    assert_eq!(engine.clean_up(), vec![task.arn().to_owned()]);
    assert!(
        !task.dir().exists(),
        "cleaning up removes the task's directory"
    );
    assert!(engine.tasks().is_empty());
}
