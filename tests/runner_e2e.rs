//! The runner end to end, through the `berth` binary and real containers: `berth runner serve`
//! with this machine's agent, a second agent on a "host" of its own (a network namespace joined
//! to this one by a veth pair, as `ip netns` makes it) in another availability zone, and a
//! service of two tasks behind the load balancer. The service spreads its tasks over the zones;
//! connections through the load balancer reach both; a container that is killed is replaced; an
//! agent that is killed has its tasks rescheduled on the other instance, and comes back cleaning
//! up what it left. Then task roles: a registry with token authentication, a control plane
//! with role policies signing with the registry's key, and a task whose execution role pulls
//! its image and whose task role's credentials, fetched inside the task, pull but do not push.
//!
//! Needs root, runc, iproute2, nsenter and busybox-static (`scripts/setup.sh`).

mod build_support;
mod registry_support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_runner::net::testhost::TestHost;
use build_support::*;
use registry_support::*;
use serde_json::{Value, json};

/// The tests take turns: each starts this machine's agent, and this machine has one task bridge
/// and one `169.254.170.2:80`.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A free TCP port on every address.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The control plane, its agents and the test host; all stopped when dropped.
struct Runner {
    store: PathBuf,
    /// Agents started by the test, reaped when it ends.
    children: Vec<Child>,
    url: String,
    serve: Child,
    /// Roots of agents to stop (their pid is in `agent.lock`).
    agents: Vec<PathBuf>,
    /// The command line of the test's web servers.
    server: String,
    host: Option<TestHost>,
}

/// `berth runner serve` on `addr` over `root`, its output in `root/serve.{log,err}`.
fn spawn_serve(root: &Path, store: &Path, addr: &str, extra: &[&std::ffi::OsStr]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["runner", "serve", "--addr", addr, "--root"])
        .arg(root)
        .args(extra)
        .env("BERTH_ROOT", store)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(root.join("serve.log")).unwrap())
        .stderr(std::fs::File::create(root.join("serve.err")).unwrap())
        .spawn()
        .unwrap()
}

impl Runner {
    /// The control plane `serve` on `port` with this machine's agent under `root/agent`.
    fn new(store: &Path, port: u16, serve: Child, root: &Path) -> Runner {
        Runner {
            store: store.to_owned(),
            children: Vec::new(),
            url: format!("http://127.0.0.1:{port}"),
            serve,
            agents: vec![root.join("agent")],
            server: String::new(),
            host: None,
        }
    }

    fn berth(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(&all)
            .env("BERTH_RUNNER_URL", &self.url)
            .env("BERTH_ROOT", &self.store)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "berth {args:?}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }

    /// The service's RUNNING tasks.
    fn service_tasks(&self, service: &str) -> Vec<Value> {
        let tasks = self.berth(&["task", "ps"]);
        tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["group"] == format!("service:{service}") && t["lastStatus"] == "RUNNING")
            .cloned()
            .collect()
    }

    /// Waits until `done` holds of the service's RUNNING tasks.
    fn wait_for(&self, service: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let tasks = self.service_tasks(service);
            if done(&tasks) {
                return tasks;
            }
            if Instant::now() > deadline {
                let all = self.berth(&["task", "ps", "--all"]);
                let reasons: BTreeSet<String> = all["tasks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|t| t["lastStatus"] == "STOPPED")
                    .map(|t| {
                        format!(
                            "{} {} {}",
                            t["containerInstanceArn"], t["stopCode"], t["stoppedReason"]
                        )
                    })
                    .collect();
                let logs: Vec<String> = self
                    .agents
                    .iter()
                    .map(|a| {
                        let log = std::fs::read_to_string(a.with_extension("log"))
                            .or_else(|_| std::fs::read_to_string(a.join("agent.log")))
                            .unwrap_or_default();
                        let tail: Vec<&str> = log.lines().rev().take(15).collect();
                        format!("{}:\n{}", a.display(), tail.join("\n"))
                    })
                    .collect();
                panic!(
                    "{what}: not after 90 s; running: {}; stopped: {reasons:#?}\nagents: {}",
                    tasks.len(),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until `count` container instances have joined the default cluster.
    fn wait_for_instances(&self, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let clusters = Command::new(env!("CARGO_BIN_EXE_berth"))
                .args(["cluster", "ls", "--json"])
                .env("BERTH_RUNNER_URL", &self.url)
                .output()
                .unwrap();
            let ok = clusters.status.success()
                && serde_json::from_slice::<Value>(&clusters.stdout).is_ok_and(|v| {
                    v["clusters"][0]["registeredContainerInstancesCount"] == json!(count)
                });
            if ok {
                return;
            }
            let logs: Vec<String> = self
                .agents
                .iter()
                .map(|a| {
                    std::fs::read_to_string(a.with_extension("log"))
                        .or_else(|_| std::fs::read_to_string(a.join("agent.log")))
                        .unwrap_or_default()
                })
                .collect();
            assert!(
                Instant::now() < deadline,
                "the agents did not join: {}\n{}",
                String::from_utf8_lossy(&clusters.stderr),
                logs.join("\n")
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn start_agent(&self, host: &TestHost, root: &Path, control_port: u16) -> Child {
        let log = std::fs::File::create(root.with_extension("log")).unwrap();
        // Only the network namespace changes (`ip netns exec` would also remount /sys, hiding
        // the cgroup mounts the runtime needs): the agent's machine is another network host.
        Command::new("nsenter")
            .arg(format!("--net={}", host.netns_path().display()))
            .arg(env!("CARGO_BIN_EXE_berth"))
            .args(["agent", "--join"])
            .arg(format!("http://{}:{control_port}", host.host_ip()))
            .arg("--root")
            .arg(root)
            .args([
                "--bridge",
                "be2e1",
                "--subnet",
                "10.236.1.0/24",
                "--attribute",
                "ecs.availability-zone=zone-b",
            ])
            .env("BERTH_ROOT", &self.store)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["service", "rm", "web", "--force"])
            .env("BERTH_RUNNER_URL", &self.url)
            .output();
        // Every agent is asked to stop at once, and killed if it is still there after 20 s
        // (its tasks are stopped by then: the service is gone).
        let pids: Vec<i32> = self
            .agents
            .iter()
            .filter_map(|root| std::fs::read_to_string(root.join("agent.lock")).ok())
            .filter_map(|pid| pid.trim().parse().ok())
            .collect();
        for &pid in &pids {
            // SAFETY: kill(2) with a pid read from the agent's lock file.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        // SAFETY: signal 0 only checks that the process exists.
        while pids.iter().any(|&pid| unsafe { libc::kill(pid, 0) } == 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        for &pid in &pids {
            // SAFETY: as above; a process that already exited makes this fail harmlessly.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.serve.kill();
        let _ = self.serve.wait();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever container a killed agent left behind and nothing swept.
        for pid in pids_of(&self.server) {
            // SAFETY: kill(2) of a test container's process found in /proc.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(host) = self.host.take() {
            let _ = host.remove();
        }
    }
}

/// GETs `/` through `port` and returns the body.
fn get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split("\r\n\r\n").nth(1).map(|b| b.trim().to_owned())
}

/// The pid of the process whose command line is exactly `cmdline` (NUL-separated).
fn pids_of(cmdline: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&bytes).replace('\0', " ").trim() == cmdline {
                pids.push(pid);
            }
        }
    }
    pids
}

#[test]
fn services_spread_over_agents_survive_killed_containers_and_agents() {
    require_tool("/usr/sbin/runc", "runc");
    let _turn = one_at_a_time();
    let (work, store, base) = work_with_base("runner-e2e");
    let root = work.path().join("runner");
    std::fs::create_dir_all(&root).unwrap();
    let port = free_port();
    let serve = spawn_serve(&root, &store, &format!("0.0.0.0:{port}"), &[]);
    let host = TestHost::create(
        &format!("berth-e2e-{}", std::process::id() % 100_000),
        "10.237.1.0/30".parse().unwrap(),
    )
    .unwrap();
    let mut runner = Runner::new(&store, port, serve, &root);
    let agent2 = work.path().join("agent2");
    std::fs::create_dir_all(&agent2).unwrap();
    runner.agents.push(agent2.clone());
    let mut agent2_process = runner.start_agent(&host, &agent2, port);
    runner.host = Some(host);

    // Both instances join.
    runner.wait_for_instances(2);

    // A web server that answers with its hostname, in bridge mode on a dynamic host port.
    let marker = format!("/www{}", std::process::id());
    let server = format!("busybox httpd -f -p 80 -h {marker}");
    runner.server = server.clone();
    let definition = json!({
        "family": "web",
        "networkMode": "bridge",
        "containerDefinitions": [{
            "name": "web",
            "image": base,
            "memory": 64,
            "essential": true,
            // busybox httpd as PID 1 ignores SIGTERM: do not wait 30 s for it at every stop.
            "stopTimeout": 2,
            "command": ["sh", "-c", format!("mkdir -p {marker} && hostname > {marker}/index.html && exec {server}")],
            "portMappings": [{"containerPort": 80}],
            "healthCheck": {
                "command": ["CMD-SHELL", "wget -qO- http://127.0.0.1/ > /dev/null"],
                "interval": 5, "retries": 2, "timeout": 2
            }
        }]
    });
    let file = work.path().join("web.json");
    std::fs::write(&file, definition.to_string()).unwrap();
    runner.berth(&["taskdef", "register", file.to_str().unwrap()]);
    // `task run --wait` returns once the task runs, and fails when it stops instead.
    let once = json!({
        "family": "once",
        "containerDefinitions": [{
            "name": "main", "image": base, "memory": 32, "essential": true,
            "command": ["sleep", "300"], "stopTimeout": 1
        }]
    });
    let file = work.path().join("once.json");
    std::fs::write(&file, once.to_string()).unwrap();
    runner.berth(&["taskdef", "register", file.to_str().unwrap()]);
    let run = runner.berth(&["task", "run", "--task-definition", "once", "--wait", "60"]);
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_owned();
    let described = runner.berth(&["task", "describe", &arn]);
    assert_eq!(
        described["tasks"][0]["lastStatus"], "RUNNING",
        "{described:#}"
    );
    runner.berth(&["task", "stop", &arn]);
    let failing = json!({
        "family": "fails",
        "containerDefinitions": [{
            "name": "main", "image": base, "memory": 32, "essential": true,
            "entryPoint": ["/no/such/program"]
        }]
    });
    let file = work.path().join("fails.json");
    std::fs::write(&file, failing.to_string()).unwrap();
    runner.berth(&["taskdef", "register", file.to_str().unwrap()]);
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["task", "run", "--task-definition", "fails", "--wait", "60"])
        .env("BERTH_RUNNER_URL", &runner.url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("stopped: ") && stderr.contains("/no/such/program"),
        "{stderr}"
    );

    let lb_port = free_port();
    runner.berth(&[
        "service",
        "create",
        "web",
        "--task-definition",
        "web",
        "--desired-count",
        "2",
        "--load-balancer",
        &format!("{lb_port}:web:80"),
    ]);

    // Spread over the two zones: one task on each instance.
    let tasks = runner.wait_for("web", "two RUNNING tasks", |t| t.len() == 2);
    let instances: BTreeSet<String> = tasks
        .iter()
        .map(|t| t["containerInstanceArn"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(instances.len(), 2, "{tasks:#?}");

    // The load balancer reaches both tasks, once they are healthy.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        if let Some(body) = get(lb_port) {
            seen.insert(body);
        }
        assert!(
            Instant::now() < deadline,
            "the load balancer reached only {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Kill one web server: its task stops and the service replaces it.
    let before: BTreeSet<String> = tasks
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_owned())
        .collect();
    let pids = pids_of(&server);
    assert_eq!(pids.len(), 2, "{pids:?}");
    // SAFETY: kill(2) of a container's process found in /proc.
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    runner.wait_for("web", "a replacement task", |t| {
        t.len() == 2
            && t.iter()
                .any(|t| !before.contains(t["taskArn"].as_str().unwrap()))
    });
    let stopped = runner.berth(&["task", "ps", "--all"]);
    let killed = stopped["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["lastStatus"] == "STOPPED" && t["group"] == "service:web")
        .cloned()
        .unwrap_or_else(|| panic!("no stopped task: {stopped:#}"));
    assert_eq!(killed["stopCode"], "EssentialContainerExited", "{killed:#}");

    // Kill the second agent: its task is rescheduled on this machine's instance.
    agent2_process.kill().unwrap();
    agent2_process.wait().unwrap();
    let instances_left: BTreeSet<String> = runner
        .wait_for("web", "both tasks on the remaining instance", |t| {
            t.len() == 2
                && t.iter()
                    .map(|t| t["containerInstanceArn"].as_str().unwrap_or_default())
                    .collect::<BTreeSet<_>>()
                    .len()
                    == 1
        })
        .iter()
        .map(|t| t["containerInstanceArn"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(instances_left.len(), 1);
    // Once the new task is healthy, the load balancer answers from it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(lb_port).is_none() {
        assert!(
            Instant::now() < deadline,
            "the load balancer does not answer"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // The agent comes back under the same id and cleans up the containers it left.
    let host = runner.host.as_ref().unwrap();
    let again = runner.start_agent(host, &agent2, port);
    runner.children.push(again);
    let deadline = Instant::now() + Duration::from_secs(60);
    while pids_of(&server).len() > 2 {
        assert!(
            Instant::now() < deadline,
            "the restarted agent left its old container running: {:?}",
            pids_of(&server)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Runs `berth` with the store and control plane of the test; its stdout.
fn berth_ok(runner: &Runner, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args(args)
        .env("BERTH_RUNNER_URL", &runner.url)
        .env("BERTH_ROOT", &runner.store);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "berth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits for the task to stop and returns its description.
fn stopped_task(runner: &Runner, arn: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let task = runner.berth(&["task", "describe", arn])["tasks"][0].clone();
        if task["lastStatus"] == "STOPPED" {
            return task;
        }
        assert!(Instant::now() < deadline, "the task did not stop: {task:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn task_roles_get_credentials_that_the_registry_honours_within_their_policies() {
    require_tool("/usr/sbin/runc", "runc");
    let _turn = one_at_a_time();
    let (work, store, base) = work_with_base("runner-roles");
    let root = work.path().join("runner");
    std::fs::create_dir_all(&root).unwrap();

    // A registry with token authentication, trusting the key the control plane signs with.
    let key = work.path().join("registry.key");
    berth_registry::auth::TokenKey::load_or_create(&key).unwrap();
    let config = work.path().join("registry.json");
    std::fs::write(&config, json!({"auth": {"key_file": key}}).to_string()).unwrap();
    let registry = Server::start_with(
        &work.path().join("registry"),
        "127.0.0.1:0",
        &["--config", config.to_str().unwrap()],
    );
    let reg = registry.addr.clone();

    // CI pushes the image with a credential of its own (docker login's config.json).
    let admin = credential(&key, "ci", "*:*");
    let docker_config = work.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::fs::write(
        docker_config.join("config.json"),
        json!({"auths": {reg.clone(): {"username": "ci", "password": admin}}}).to_string(),
    )
    .unwrap();

    // Roles: `exec` may pull app/* (ECR's words), `app` may pull app/web, `nothing` is unknown.
    let roles = work.path().join("roles.json");
    std::fs::write(
        &roles,
        json!({
            "arn:aws:iam::000000000000:role/exec": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow",
                "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                "Resource": "arn:aws:ecr:us-east-1:000000000000:repository/app/*"}]},
            "arn:aws:iam::000000000000:role/app": {"Statement": [{
                "Effect": "Allow", "Action": "pull", "Resource": "app/web"}]}
        })
        .to_string(),
    )
    .unwrap();
    let port = free_port();
    let serve = spawn_serve(
        &root,
        &store,
        &format!("127.0.0.1:{port}"),
        &[
            "--roles".as_ref(),
            roles.as_os_str(),
            "--registry-key".as_ref(),
            key.as_os_str(),
            "--trusted-registry".as_ref(),
            reg.as_ref(),
        ],
    );
    let runner = Runner::new(&store, port, serve, &root);
    runner.wait_for_instances(1);
    let image = format!("{reg}/app/web:1");
    berth_ok(&runner, &["tag", &base, &image], &[]);
    berth_ok(
        &runner,
        &["push", "-q", &image],
        &[("DOCKER_CONFIG", &docker_config)],
    );
    // The agent must pull it, with the execution role's credentials.
    berth_ok(&runner, &["rmi", &image], &[]);

    // The task asks the credentials endpoint, trades the credentials at the registry's token
    // endpoint, and tries what its role allows and what it does not.
    let token_of = r#"sed 's/.*"token":"\([^"]*\)".*/\1/'"#;
    let script = format!(
        r#"set -e
C=$(wget -qO- --header "Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN" "$AWS_CONTAINER_CREDENTIALS_FULL_URI")
echo "$C" | grep -q '"RoleArn":"arn:aws:iam::000000000000:role/app"'
T=$(echo "$C" | sed 's/.*"Token":"\([^"]*\)".*/\1/')
A=$(wget -qO- "http://task:$T@{reg}/token?service=berth-registry&scope=repository:app/web:pull" | {token_of})
wget -qO /dev/null --header "Authorization: Bearer $A" --header "Accept: application/vnd.oci.image.manifest.v1+json" "http://{reg}/v2/app/web/manifests/1" && echo pull-allowed
B=$(wget -qO- "http://task:$T@{reg}/token?service=berth-registry&scope=repository:app/web:pull,push&scope=repository:app/other:pull" | {token_of})
wget -qO /dev/null --header "Authorization: Bearer $B" "http://{reg}/v2/app/other/tags/list" || echo other-denied
wget -qO /dev/null --post-data '' --header "Authorization: Bearer $B" "http://{reg}/v2/app/web/blobs/uploads/" || echo push-denied
wget -qO- "http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" | grep -q '"Token":"' && echo link-local-ok
"#
    );
    let definition = json!({
        "family": "roles",
        "networkMode": "host",
        "taskRoleArn": "arn:aws:iam::000000000000:role/app",
        "executionRoleArn": "arn:aws:iam::000000000000:role/exec",
        "containerDefinitions": [{
            "name": "main", "image": image, "memory": 32, "essential": true,
            "command": ["sh", "-c", script]
        }]
    });
    // First, an execution role that allows no pull: the image cannot be pulled.
    let mut denied = definition.clone();
    denied["family"] = json!("denied");
    denied["executionRoleArn"] = json!("arn:aws:iam::000000000000:role/nothing");
    let file = work.path().join("denied-task.json");
    std::fs::write(&file, denied.to_string()).unwrap();
    runner.berth(&["taskdef", "register", file.to_str().unwrap()]);
    let run = runner.berth(&["task", "run", "--task-definition", "denied"]);
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_owned();
    let task = stopped_task(&runner, &arn);
    let reason = task["stoppedReason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("CannotPullContainerError") && reason.contains(&reg),
        "{task:#}"
    );

    // Then the roles that allow it.
    let file = work.path().join("roles-task.json");
    std::fs::write(&file, definition.to_string()).unwrap();
    runner.berth(&["taskdef", "register", file.to_str().unwrap()]);
    let run = runner.berth(&["task", "run", "--task-definition", "roles"]);
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_owned();
    let task = stopped_task(&runner, &arn);
    let logs = berth_ok(&runner, &["task", "logs", &arn], &[]);
    assert_eq!(
        task["containers"][0]["exitCode"],
        0,
        "{task:#}\nlogs:\n{logs}\nagent:\n{}",
        std::fs::read_to_string(root.join("agent/agent.log")).unwrap_or_default()
    );
    for line in [
        "pull-allowed",
        "other-denied",
        "push-denied",
        "link-local-ok",
    ] {
        assert!(
            logs.contains(line),
            "{line} missing from the task's output:\n{logs}"
        );
    }
}
