//! The control plane, driven through its router (`tower::ServiceExt::oneshot`) by ECS calls
//! and by fake agents: plain HTTP clients that register, poll, and report task states as a
//! real agent would, without running containers. Time is a `ManualClock`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use berth_registry::auth::{Policy, TokenKey};
use berth_runner::agent::protocol::{
    ContainerReport, PollRequest, PollResponse, RegisterRequest, RegisterResponse, RoleType,
    TaskAssignment, TaskReport,
};
use berth_runner::control::{Builder, ControlState, ManualClock, Roles, app};
use berth_runner::ecs::Timestamp;
use berth_runner::ecs::status::{ContainerStatus, DesiredStatus, HealthStatus, TaskStatus};
use berth_runner::ecs::task::NetworkBinding;
use berth_runner::ecs::taskdef::TransportProtocol;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const TARGET: &str = "AmazonEC2ContainerServiceV20141113";
const START: i64 = 1_700_000_000;

/// A control plane over a temporary root, with a manual clock.
struct Plane {
    state: ControlState,
    app: Router,
    clock: ManualClock,
}

impl Plane {
    fn open(root: &std::path::Path, clock: ManualClock) -> Plane {
        Plane::open_with(root, clock, |builder| builder)
    }

    /// A plane whose builder `configure` finishes.
    fn open_with(
        root: &std::path::Path,
        clock: ManualClock,
        configure: impl FnOnce(Builder) -> Builder,
    ) -> Plane {
        let builder = ControlState::builder(root)
            .clock(clock.clone())
            .load_balancer_address("127.0.0.1".parse().unwrap())
            .deregistration_delay(Duration::from_secs(30))
            .placement_seed(7);
        let state = configure(builder).open().unwrap();
        Plane {
            app: app(state.clone()),
            state,
            clock,
        }
    }

    fn now(&self) -> Timestamp {
        self.state.now()
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    async fn post(&self, path: &str, body: &impl serde::Serialize) -> (StatusCode, Value) {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.send(request).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    /// Calls an ECS operation.
    async fn ecs(&self, operation: &str, body: Value) -> (StatusCode, Value) {
        let request = Request::post("/")
            .header("x-amz-target", format!("{TARGET}.{operation}"))
            .header("content-type", "application/x-amz-json-1.1")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        self.send(request).await
    }

    /// Calls an ECS operation that must succeed.
    async fn ok(&self, operation: &str, body: Value) -> Value {
        let (status, value) = self.ecs(operation, body).await;
        assert_eq!(status, StatusCode::OK, "{operation}: {value}");
        value
    }

    /// Calls an ECS operation that must fail: its `__type` and message.
    async fn fails(&self, operation: &str, body: Value) -> (String, String) {
        let (status, value) = self.ecs(operation, body).await;
        assert_ne!(status, StatusCode::OK, "{operation} succeeded: {value}");
        (
            value["__type"].as_str().unwrap_or_default().to_owned(),
            value["message"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Runs one task of `family` in availability zone z1 and returns its ARN.
    async fn run_in_z1(&self, family: &str) -> String {
        let run = self
            .ok(
                "RunTask",
                json!({"taskDefinition": family, "placementConstraints":
                       [{"type": "memberOf", "expression": "attribute:ecs.availability-zone == z1"}]}),
            )
            .await;
        run["tasks"][0]["taskArn"].as_str().unwrap().to_owned()
    }

    async fn register_definition(&self, definition: Value) -> Value {
        self.ok("RegisterTaskDefinition", definition).await["taskDefinition"].clone()
    }

    /// `Describe<What>` of one resource: `field` names both the request's list and the
    /// answer's.
    async fn describe_one(&self, operation: &str, field: &str, cluster: &str, id: &str) -> Value {
        let out = self
            .ok(operation, json!({"cluster": cluster, field: [id]}))
            .await;
        out[field][0].clone()
    }

    async fn task(&self, cluster: &str, arn: &str) -> Value {
        self.describe_one("DescribeTasks", "tasks", cluster, arn)
            .await
    }

    async fn service(&self, cluster: &str, name: &str) -> Value {
        self.describe_one("DescribeServices", "services", cluster, name)
            .await
    }

    async fn instance(&self, cluster: &str, arn: &str) -> Value {
        self.describe_one(
            "DescribeContainerInstances",
            "containerInstances",
            cluster,
            arn,
        )
        .await
    }

    /// Registers a fake agent.
    async fn agent(&self, spec: AgentSpec) -> FakeAgent {
        let request = RegisterRequest {
            cluster: spec.cluster.to_owned(),
            agent_id: None,
            cpu: spec.cpu,
            memory: spec.memory,
            attributes: spec
                .attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            fargate: spec.fargate,
            ec2: spec.ec2,
            address: spec.address.clone(),
        };
        let (status, value) = self.post("/berth/v1/agents/register", &request).await;
        assert_eq!(status, StatusCode::OK, "{value}");
        let registered: RegisterResponse = serde_json::from_value(value).unwrap();
        FakeAgent {
            id: registered.agent_id,
            instance: registered.container_instance_arn,
            request,
            tasks: BTreeMap::new(),
            assignments: BTreeMap::new(),
            host_port: None,
            refresh: Vec::new(),
        }
    }
}

/// What a fake agent registers with.
struct AgentSpec {
    cluster: &'static str,
    cpu: u64,
    memory: u64,
    attributes: Vec<(&'static str, &'static str)>,
    fargate: bool,
    ec2: bool,
    address: String,
}

impl AgentSpec {
    fn ec2(memory: u64, zone: &'static str) -> AgentSpec {
        AgentSpec {
            cluster: "default",
            cpu: 4096,
            memory,
            attributes: vec![
                ("ecs.availability-zone", zone),
                ("ecs.instance-type", "m5.large"),
            ],
            fargate: false,
            ec2: true,
            address: "http://127.0.0.1:9".to_owned(),
        }
    }

    fn fargate() -> AgentSpec {
        AgentSpec {
            cluster: "default",
            cpu: 0,
            memory: 0,
            attributes: vec![("ecs.availability-zone", "local-1a")],
            fargate: true,
            ec2: false,
            address: "http://127.0.0.1:9".to_owned(),
        }
    }
}

/// An agent that runs nothing: it keeps the state of its tasks as a real agent reports them,
/// and the test moves them along.
struct FakeAgent {
    id: String,
    instance: Option<String>,
    request: RegisterRequest,
    tasks: BTreeMap<String, TaskReport>,
    assignments: BTreeMap<String, TaskAssignment>,
    /// The host port its tasks publish their container port 80 on, if any.
    host_port: Option<u16>,
    /// Tasks whose credentials the next poll asks to renew.
    refresh: Vec<String>,
}

impl FakeAgent {
    /// Reports every task and takes the work: starts become PENDING tasks, stops STOPPED ones.
    async fn poll(&mut self, plane: &Plane) -> PollResponse {
        let body = PollRequest {
            tasks: self.tasks.values().cloned().collect(),
            refresh_credentials: std::mem::take(&mut self.refresh),
        };
        let (status, value) = plane
            .post(&format!("/berth/v1/agents/{}/poll?wait=0", self.id), &body)
            .await;
        assert_eq!(status, StatusCode::OK, "poll: {value}");
        let work: PollResponse = serde_json::from_value(value).unwrap();
        let now = plane.now();
        for start in &work.start {
            self.assignments
                .insert(start.task_arn.clone(), start.clone());
            self.tasks
                .entry(start.task_arn.clone())
                .or_insert_with(|| TaskReport {
                    task_arn: start.task_arn.clone(),
                    last_status: TaskStatus::Pending,
                    desired_status: DesiredStatus::Running,
                    health_status: HealthStatus::Unknown,
                    containers: start
                        .task_definition
                        .container_definitions
                        .iter()
                        .map(|c| ContainerReport {
                            name: c.name.clone(),
                            last_status: ContainerStatus::Pending,
                            exit_code: None,
                            reason: None,
                            health_status: HealthStatus::Unknown,
                            network_bindings: Vec::new(),
                            network_interfaces: Vec::new(),
                            runtime_id: None,
                            image_digest: None,
                        })
                        .collect(),
                    attachments: Vec::new(),
                    stop_code: None,
                    stopped_reason: None,
                    pull_started_at: Some(now),
                    pull_stopped_at: None,
                    started_at: None,
                    stopping_at: None,
                    stopped_at: None,
                    execution_stopped_at: None,
                    connectivity: None,
                });
        }
        for stop in &work.stop {
            if let Some(report) = self.tasks.get_mut(&stop.task_arn) {
                report.desired_status = DesiredStatus::Stopped;
                report.stop_code = report.stop_code.or(stop.stop_code);
                if report.stopped_reason.is_none() {
                    report.stopped_reason.clone_from(&stop.reason);
                }
                stop_report(report, now, 143);
            }
        }
        work
    }

    /// PENDING tasks become RUNNING, with `health`.
    fn run_pending(&mut self, now: Timestamp, health: HealthStatus) {
        let port = self.host_port;
        for report in self.tasks.values_mut() {
            if report.last_status == TaskStatus::Pending {
                report.last_status = TaskStatus::Running;
                report.started_at = Some(now);
                report.pull_stopped_at = Some(now);
                report.health_status = health;
                for container in &mut report.containers {
                    container.last_status = ContainerStatus::Running;
                    container.health_status = health;
                    if let Some(port) = port {
                        container.network_bindings = vec![NetworkBinding {
                            bind_ip: "0.0.0.0".into(),
                            container_port: 80,
                            host_port: port,
                            protocol: TransportProtocol::Tcp,
                        }];
                    }
                }
            }
        }
    }

    /// RUNNING tasks whose health is not known yet pass their checks.
    fn pass_health_checks(&mut self) {
        for report in self.tasks.values_mut() {
            if report.last_status == TaskStatus::Running
                && report.health_status == HealthStatus::Unknown
            {
                report.health_status = HealthStatus::Healthy;
                for container in &mut report.containers {
                    container.health_status = HealthStatus::Healthy;
                }
            }
        }
    }

    /// A task's essential container exits with `code`: the agent stops the task.
    fn exit(&mut self, arn: &str, code: i32, now: Timestamp) {
        let report = self.tasks.get_mut(arn).expect("no such task on this agent");
        report.desired_status = DesiredStatus::Stopped;
        report.stop_code = Some(berth_runner::ecs::status::StopCode::EssentialContainerExited);
        report.stopped_reason = Some("Essential container in task exited".into());
        stop_report(report, now, code);
    }

    /// Tasks RUNNING, healthy and not being stopped.
    fn healthy(&self) -> usize {
        self.tasks
            .values()
            .filter(|r| {
                r.last_status == TaskStatus::Running
                    && r.health_status == HealthStatus::Healthy
                    && r.desired_status == DesiredStatus::Running
            })
            .count()
    }

    /// Tasks not STOPPED.
    fn active(&self) -> Vec<&TaskReport> {
        self.tasks
            .values()
            .filter(|r| r.last_status != TaskStatus::Stopped)
            .collect()
    }

    fn definition_of(&self, arn: &str) -> String {
        self.assignments[arn].task_definition.family_revision()
    }

    /// Registers again with its id (after a control plane restart, say).
    async fn reregister(&mut self, plane: &Plane) {
        let mut request = self.request.clone();
        request.agent_id = Some(self.id.clone());
        let (status, value) = plane.post("/berth/v1/agents/register", &request).await;
        assert_eq!(status, StatusCode::OK, "{value}");
        let registered: RegisterResponse = serde_json::from_value(value).unwrap();
        assert_eq!(registered.agent_id, self.id);
        assert_eq!(registered.container_instance_arn, self.instance);
    }
}

fn stop_report(report: &mut TaskReport, now: Timestamp, code: i32) {
    report.last_status = TaskStatus::Stopped;
    report.stopping_at.get_or_insert(now);
    report.execution_stopped_at = Some(now);
    report.stopped_at = Some(now);
    for container in &mut report.containers {
        container.last_status = ContainerStatus::Stopped;
        container.exit_code = Some(code);
    }
}

/// An EC2 (bridge mode) task definition with one container of `memory` MiB.
fn bridge_definition(family: &str, memory: u32) -> Value {
    json!({
        "family": family,
        "containerDefinitions": [{
            "name": "app",
            "image": "busybox",
            "memory": memory,
            "portMappings": [{"containerPort": 80}]
        }]
    })
}

/// A definition whose container has a health check.
fn checked_definition(family: &str, image: &str) -> Value {
    json!({
        "family": family,
        "containerDefinitions": [{
            "name": "app",
            "image": image,
            "memory": 256,
            "healthCheck": {"command": ["CMD-SHELL", "true"]}
        }]
    })
}

fn arns(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_owned())
        .collect()
}

fn remaining(instance: &Value, name: &str) -> i64 {
    instance["remainingResources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()["integerValue"]
        .as_i64()
        .unwrap()
}

fn events(service: &Value) -> Vec<String> {
    service["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect()
}

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_secs(START))
}

#[tokio::test]
async fn task_definitions_keep_revisions_and_answer_with_ecs_errors() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    let first = plane
        .register_definition(bridge_definition("web", 128))
        .await;
    assert_eq!(first["revision"], 1);
    assert_eq!(
        first["taskDefinitionArn"],
        "arn:aws:ecs:local:000000000000:task-definition/web:1"
    );
    let second = plane
        .register_definition(bridge_definition("web", 256))
        .await;
    assert_eq!(second["revision"], 2);
    assert_eq!(second["networkMode"], "bridge");
    assert_eq!(second["compatibilities"], json!(["EC2"]));

    let latest = plane
        .ok("DescribeTaskDefinition", json!({"taskDefinition": "web"}))
        .await;
    assert_eq!(latest["taskDefinition"]["revision"], 2);
    let one = plane
        .ok("DescribeTaskDefinition", json!({"taskDefinition": "web:1"}))
        .await;
    assert_eq!(
        one["taskDefinition"]["containerDefinitions"][0]["memory"],
        128
    );

    // Deregistering the latest revision makes the family mean the one before.
    let gone = plane
        .ok(
            "DeregisterTaskDefinition",
            json!({"taskDefinition": "web:2"}),
        )
        .await;
    assert_eq!(gone["taskDefinition"]["status"], "INACTIVE");
    let latest = plane
        .ok("DescribeTaskDefinition", json!({"taskDefinition": "web"}))
        .await;
    assert_eq!(latest["taskDefinition"]["revision"], 1);
    let listed = plane.ok("ListTaskDefinitions", json!({})).await;
    assert_eq!(
        listed["taskDefinitionArns"],
        json!(["arn:aws:ecs:local:000000000000:task-definition/web:1"])
    );
    let inactive = plane
        .ok("ListTaskDefinitions", json!({"status": "INACTIVE"}))
        .await;
    assert_eq!(inactive["taskDefinitionArns"].as_array().unwrap().len(), 1);
    // The next registration is revision 3: revisions are never reused.
    let third = plane
        .register_definition(bridge_definition("web", 64))
        .await;
    assert_eq!(third["revision"], 3);

    // Validation, with ECS's messages.
    let (kind, message) = plane
        .fails(
            "RegisterTaskDefinition",
            json!({"family": "api", "requiresCompatibilities": ["FARGATE"], "cpu": "256",
                   "memory": "512", "networkMode": "bridge",
                   "containerDefinitions": [{"name": "app", "image": "busybox"}]}),
        )
        .await;
    assert_eq!(kind, "ClientException");
    assert_eq!(message, "Fargate only supports network mode ‘awsvpc’.");
    let (kind, message) = plane
        .fails(
            "RegisterTaskDefinition",
            json!({"family": "api", "containerDefinitions": [
                {"name": "app", "image": "busybox", "memory": 64},
                {"name": "app", "image": "busybox", "memory": 64}]}),
        )
        .await;
    assert_eq!(
        (kind.as_str(), message.as_str()),
        ("ClientException", "Duplicate container name found: app")
    );
    let (kind, message) = plane
        .fails(
            "RegisterTaskDefinition",
            json!({"family": "api", "memory": "128", "containerDefinitions": [
                {"name": "app", "image": "busybox", "memory": 256}]}),
        )
        .await;
    assert_eq!(kind, "ClientException");
    assert_eq!(
        message,
        "The 'memory' setting for container 'app' is greater than for the task."
    );
    let (kind, message) = plane
        .fails(
            "RegisterTaskDefinition",
            json!({"family": "api", "containerDefinitions": [
                {"name": "app", "image": "busybox", "memory": 64, "memoryReservaton": 32}]}),
        )
        .await;
    assert_eq!(kind, "ClientException");
    assert!(message.contains("memoryReservaton"), "{message}");
    let (kind, message) = plane
        .fails("DescribeTaskDefinition", json!({"taskDefinition": "nope"}))
        .await;
    assert_eq!(
        (kind.as_str(), message.as_str()),
        ("ClientException", "Unable to describe task definition.")
    );
    let (kind, _) = plane.fails("DescribeWidgets", json!({})).await;
    assert_eq!(kind, "UnknownOperationException");
    let (kind, message) = plane
        .fails(
            "RunTask",
            json!({"cluster": "nowhere", "taskDefinition": "web"}),
        )
        .await;
    assert_eq!(
        (kind.as_str(), message.as_str()),
        ("ClusterNotFoundException", "Cluster not found.")
    );
    let (kind, message) = plane
        .fails("RunTask", json!({"taskDefinition": "web:2"}))
        .await;
    assert_eq!(
        (kind.as_str(), message.as_str()),
        ("ClientException", "TaskDefinition is inactive")
    );
}

#[tokio::test]
async fn clusters_exist_and_delete_as_ecs_says() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    let listed = plane.ok("ListClusters", json!({})).await;
    assert_eq!(
        listed["clusterArns"],
        json!(["arn:aws:ecs:local:000000000000:cluster/default"])
    );
    let created = plane
        .ok("CreateCluster", json!({"clusterName": "prod"}))
        .await;
    assert_eq!(created["cluster"]["status"], "ACTIVE");
    assert_eq!(
        created["cluster"]["capacityProviders"],
        json!(["EC2", "FARGATE"])
    );
    let (kind, _) = plane
        .fails("CreateCluster", json!({"clusterName": "no spaces"}))
        .await;
    assert_eq!(kind, "InvalidParameterException");

    let mut agent = plane
        .agent(AgentSpec {
            cluster: "prod",
            ..AgentSpec::ec2(1024, "z1")
        })
        .await;
    let described = plane
        .ok("DescribeClusters", json!({"clusters": ["prod", "ghost"]}))
        .await;
    assert_eq!(
        described["clusters"][0]["registeredContainerInstancesCount"],
        1
    );
    assert_eq!(described["failures"][0]["reason"], "MISSING");
    assert_eq!(
        described["failures"][0]["arn"],
        "arn:aws:ecs:local:000000000000:cluster/ghost"
    );
    let (kind, message) = plane
        .fails("DeleteCluster", json!({"cluster": "prod"}))
        .await;
    assert_eq!(kind, "ClusterContainsContainerInstancesException");
    assert_eq!(
        message,
        "The Cluster cannot be deleted while Container Instances are active or draining."
    );
    let instance = agent.instance.clone().unwrap();
    plane
        .ok(
            "DeregisterContainerInstance",
            json!({"cluster": "prod", "containerInstance": instance}),
        )
        .await;
    agent.poll(&plane).await;
    let deleted = plane.ok("DeleteCluster", json!({"cluster": "prod"})).await;
    assert_eq!(deleted["cluster"]["status"], "INACTIVE");
    let listed = plane.ok("ListClusters", json!({})).await;
    assert_eq!(listed["clusterArns"].as_array().unwrap().len(), 1);
    let (kind, _) = plane
        .fails("DeleteCluster", json!({"cluster": "default"}))
        .await;
    assert_eq!(kind, "InvalidParameterException");
}

#[tokio::test]
async fn binpack_on_memory_fills_the_fullest_instance_first() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    let mut medium = plane.agent(AgentSpec::ec2(4096, "z1")).await;
    let mut small = plane.agent(AgentSpec::ec2(2048, "z1")).await;
    let mut large = plane.agent(AgentSpec::ec2(8192, "z2")).await;
    plane
        .register_definition(bridge_definition("web", 512))
        .await;

    let run = plane
        .ok(
            "RunTask",
            json!({"taskDefinition": "web", "count": 6,
                   "placementStrategy": [{"type": "binpack", "field": "memory"}]}),
        )
        .await;
    assert_eq!(run["failures"], json!([]));
    let placed: Vec<String> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["containerInstanceArn"].as_str().unwrap().to_owned())
        .collect();
    // The small instance (least memory) takes four 512 MiB tasks, then the medium one the rest.
    let small_arn = small.instance.clone().unwrap();
    let medium_arn = medium.instance.clone().unwrap();
    assert_eq!(placed[..4], vec![small_arn.clone(); 4][..]);
    assert_eq!(placed[4..], vec![medium_arn.clone(); 2][..]);
    assert!(
        run["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["lastStatus"] == "PENDING")
    );

    assert_eq!(
        remaining(&plane.instance("default", &small_arn).await, "MEMORY"),
        0
    );
    let medium_view = plane.instance("default", &medium_arn).await;
    assert_eq!(remaining(&medium_view, "MEMORY"), 3072);
    assert_eq!(medium_view["pendingTasksCount"], 2);
    assert_eq!(
        remaining(
            &plane
                .instance("default", large.instance.as_deref().unwrap())
                .await,
            "MEMORY"
        ),
        8192
    );
    // Each agent gets exactly its own tasks.
    assert_eq!(small.poll(&plane).await.start.len(), 4);
    assert_eq!(medium.poll(&plane).await.start.len(), 2);
    assert!(large.poll(&plane).await.start.is_empty());
}

#[tokio::test]
async fn spread_over_availability_zones_alternates_zones() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    let mut zones = BTreeMap::new();
    for zone in ["us-east-1a", "us-east-1a", "us-east-1b"] {
        let agent = plane.agent(AgentSpec::ec2(8192, zone)).await;
        zones.insert(agent.instance.clone().unwrap(), zone);
    }
    plane
        .register_definition(bridge_definition("web", 256))
        .await;
    let run = plane
        .ok(
            "RunTask",
            json!({"taskDefinition": "web", "count": 6, "placementStrategy": [
                {"type": "spread", "field": "attribute:ecs.availability-zone"}]}),
        )
        .await;
    let placed: Vec<&str> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| zones[t["containerInstanceArn"].as_str().unwrap()])
        .collect();
    assert_eq!(placed.len(), 6);
    // Every task goes to the zone with fewer tasks of the group: after each one the zones differ
    // by at most one task, and each pair of tasks covers both zones.
    for end in 1..=placed.len() {
        let b = placed[..end].iter().filter(|z| **z == "us-east-1b").count();
        let a = end - b;
        assert!(a.abs_diff(b) <= 1, "zones out of balance: {placed:?}");
    }
    for pair in placed.chunks(2) {
        assert_ne!(pair[0], pair[1], "zones should alternate: {placed:?}");
    }
    assert_eq!(
        run["tasks"][0]["availabilityZone"], placed[0],
        "tasks carry their instance's zone"
    );
    assert_eq!(placed.iter().filter(|z| **z == "us-east-1b").count(), 3);
}

#[tokio::test]
async fn a_task_that_fits_nowhere_is_a_failure_with_ecs_reason() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    plane
        .register_definition(bridge_definition("big", 2048))
        .await;
    let (kind, message) = plane
        .fails("RunTask", json!({"taskDefinition": "big"}))
        .await;
    assert_eq!(
        (kind.as_str(), message.as_str()),
        (
            "InvalidParameterException",
            "No Container Instances were found in your cluster."
        )
    );
    let agent = plane.agent(AgentSpec::ec2(1024, "z1")).await;
    let run = plane
        .ok("RunTask", json!({"taskDefinition": "big", "count": 2}))
        .await;
    assert_eq!(run["tasks"], json!([]));
    assert_eq!(
        run["failures"],
        json!([{"arn": agent.instance.unwrap(), "reason": "RESOURCE:MEMORY"}])
    );
    let listed = plane.ok("ListTasks", json!({})).await;
    assert_eq!(listed["taskArns"], json!([]));
}

#[tokio::test]
async fn tasks_get_their_roles_credentials_with_the_assignment_and_on_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let key = TokenKey::from_bytes(vec![4; 32]).unwrap();
    let web_role = "arn:aws:iam::000000000000:role/web";
    let pull_role = "arn:aws:iam::000000000000:role/pull";
    let roles = Roles::new(key.clone())
        .registries(vec!["127.0.0.1:5000".into()])
        .policy(web_role, Policy::allow(&["pull", "push"], &["web/*"]))
        .policy(pull_role, Policy::allow(&["pull"], &["*"]));
    let plane = Plane::open_with(dir.path(), clock(), |b| b.roles(roles));
    let mut agent = plane.agent(AgentSpec::ec2(8192, "z1")).await;
    let mut other = plane.agent(AgentSpec::ec2(8192, "z2")).await;
    let mut definition = bridge_definition("web", 128);
    definition["taskRoleArn"] = json!(web_role);
    definition["executionRoleArn"] = json!(pull_role);
    plane.register_definition(definition).await;
    plane
        .register_definition(bridge_definition("plain", 128))
        .await;
    let arn = plane.run_in_z1("web").await;

    let work = agent.poll(&plane).await;
    let start = &work.start[0];
    assert_eq!(start.credentials.len(), 2, "{:?}", start.credentials);
    let task_role = start
        .credentials
        .iter()
        .find(|c| c.role_type == RoleType::TaskApplication)
        .unwrap();
    assert_eq!(
        (task_role.role_arn.as_str(), task_role.task_arn.as_str()),
        (web_role, arn.as_str())
    );
    assert!(task_role.registries.is_empty());
    let claims = key.verify_credential(&task_role.session_token).unwrap();
    assert!(claims.policy.allows("web/app", "push"));
    assert!(!claims.policy.allows("other", "pull"));
    let execution = start
        .credentials
        .iter()
        .find(|c| c.role_type == RoleType::TaskExecution)
        .unwrap();
    assert_eq!(execution.registries, ["127.0.0.1:5000"]);
    let claims = key.verify_credential(&execution.session_token).unwrap();
    assert!(claims.policy.allows("anything", "pull"));
    assert!(!claims.policy.allows("anything", "push"));

    // The stored assignment holds no secrets: a redelivery mints new credentials.
    let db = std::fs::read(dir.path().join("control.db")).unwrap();
    let token = task_role.session_token.as_bytes();
    assert!(
        !db.windows(token.len()).any(|w| w == token),
        "the token reached the database"
    );

    // Renewal: the agent names the task and gets new task role credentials at once.
    agent.refresh.push(arn.clone());
    let renewed = agent.poll(&plane).await;
    assert!(renewed.start.is_empty());
    assert_eq!(renewed.credentials.len(), 1);
    assert_eq!(renewed.credentials[0].role_type, RoleType::TaskApplication);
    assert_eq!(renewed.credentials[0].task_arn, arn);
    assert_ne!(
        renewed.credentials[0].session_token,
        task_role.session_token
    );

    // Another agent cannot get the task's credentials, nor can anyone for a roleless task.
    other.refresh.push(arn.clone());
    assert!(other.poll(&plane).await.credentials.is_empty());
    let plain_arn = plane.run_in_z1("plain").await;
    let work = agent.poll(&plane).await;
    assert!(work.start[0].credentials.is_empty());
    agent.refresh.push(plain_arn);
    assert!(agent.poll(&plane).await.credentials.is_empty());
}

#[tokio::test]
async fn fargate_tasks_go_to_the_fargate_agent_with_their_size() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    let mut ec2 = plane.agent(AgentSpec::ec2(8192, "z1")).await;
    let mut fargate = plane.agent(AgentSpec::fargate()).await;
    assert_eq!(fargate.instance, None);
    plane
        .register_definition(json!({
            "family": "api", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc",
            "cpu": "0.5 vCPU", "memory": "2 GB",
            "containerDefinitions": [{"name": "app", "image": "busybox"}]
        }))
        .await;
    plane
        .register_definition(bridge_definition("web", 128))
        .await;
    let run = plane
        .ok(
            "RunTask",
            json!({"taskDefinition": "api", "launchType": "FARGATE"}),
        )
        .await;
    let task = &run["tasks"][0];
    assert_eq!(task["launchType"], "FARGATE");
    assert_eq!(
        (task["cpu"].as_str(), task["memory"].as_str()),
        (Some("512"), Some("2048"))
    );
    assert!(task.get("containerInstanceArn").is_none());
    assert_eq!(task["availabilityZone"], "local-1a");
    let work = fargate.poll(&plane).await;
    assert_eq!(work.start.len(), 1);
    assert_eq!(
        (
            work.start[0].cpu.as_deref(),
            work.start[0].memory.as_deref()
        ),
        (Some("512"), Some("2048"))
    );
    assert!(ec2.poll(&plane).await.start.is_empty());
    // FARGATE tasks take nothing from EC2 instances.
    let instance = plane
        .instance("default", ec2.instance.as_deref().unwrap())
        .await;
    assert_eq!(remaining(&instance, "MEMORY"), 8192);

    let (kind, message) = plane
        .fails(
            "RunTask",
            json!({"taskDefinition": "web", "launchType": "FARGATE"}),
        )
        .await;
    assert_eq!(
        (kind.as_str(), message.as_str()),
        (
            "ClientException",
            "Task definition does not support launch_type FARGATE."
        )
    );
}

#[tokio::test]
async fn stop_task_reaches_the_agent_and_frees_the_instance() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    let mut agent = plane.agent(AgentSpec::ec2(1024, "z1")).await;
    plane
        .register_definition(bridge_definition("web", 1024))
        .await;
    let run = plane.ok("RunTask", json!({"taskDefinition": "web"})).await;
    let arn = arns(&run["tasks"])[0].clone();
    agent.poll(&plane).await;
    plane.advance(2);
    agent.run_pending(plane.now(), HealthStatus::Unknown);
    agent.poll(&plane).await;
    let task = plane.task("default", &arn).await;
    assert_eq!(task["lastStatus"], "RUNNING");
    assert_eq!(task["startedAt"], START + 2);
    assert_eq!(task["connectivity"], "CONNECTED");
    let instance = agent.instance.clone().unwrap();
    assert_eq!(
        plane.instance("default", &instance).await["runningTasksCount"],
        1
    );
    // Full: another task fits nowhere.
    let run = plane.ok("RunTask", json!({"taskDefinition": "web"})).await;
    assert_eq!(run["failures"][0]["reason"], "RESOURCE:MEMORY");

    let stopped = plane
        .ok("StopTask", json!({"task": arn, "reason": "maintenance"}))
        .await;
    assert_eq!(stopped["task"]["desiredStatus"], "STOPPED");
    assert_eq!(stopped["task"]["stopCode"], "UserInitiated");
    let work = agent.poll(&plane).await;
    assert_eq!(work.stop.len(), 1);
    assert_eq!(work.stop[0].task_arn, arn);
    assert_eq!(work.stop[0].reason.as_deref(), Some("maintenance"));
    plane.advance(1);
    let work = agent.poll(&plane).await;
    assert!(work.stop.is_empty(), "a stop is sent once");
    let task = plane.task("default", &arn).await;
    assert_eq!(task["lastStatus"], "STOPPED");
    assert_eq!(task["stoppedReason"], "maintenance");
    assert_eq!(task["containers"][0]["exitCode"], 143);
    assert_eq!(
        remaining(&plane.instance("default", &instance).await, "MEMORY"),
        1024
    );
    let running = plane.ok("ListTasks", json!({})).await;
    assert_eq!(running["taskArns"], json!([]));
    let stopped = plane
        .ok("ListTasks", json!({"desiredStatus": "STOPPED"}))
        .await;
    assert_eq!(stopped["taskArns"], json!([arn]));
    let (kind, message) = plane.fails("StopTask", json!({"task": "nope"})).await;
    assert_eq!(
        (kind.as_str(), message.as_str()),
        (
            "InvalidParameterException",
            "The referenced task was not found."
        )
    );
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_work_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    let agent = plane.agent(AgentSpec::ec2(4096, "z1")).await;
    plane
        .register_definition(bridge_definition("web", 128))
        .await;
    let app = plane.app.clone();
    let path = format!("/berth/v1/agents/{}/poll?wait=15", agent.id);
    let started = std::time::Instant::now();
    let waiting = tokio::spawn(async move {
        let request = Request::post(path)
            .body(Body::from(r#"{"tasks": []}"#))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<PollResponse>(&bytes).unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "the poll waits while there is no work"
    );
    let run = plane.ok("RunTask", json!({"taskDefinition": "web"})).await;
    let work = waiting.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(work.start.len(), 1);
    assert_eq!(work.start[0].task_arn, arns(&run["tasks"])[0]);
    assert_eq!(work.start[0].task_definition.family, "web");
}

#[tokio::test]
async fn a_service_replaces_a_task_that_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    let mut agent = plane.agent(AgentSpec::ec2(4096, "z1")).await;
    plane
        .register_definition(bridge_definition("web", 256))
        .await;
    let created = plane
        .ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
        )
        .await;
    assert_eq!(created["service"]["status"], "ACTIVE");
    assert_eq!(created["service"]["deployments"][0]["status"], "PRIMARY");
    assert_eq!(
        created["service"]["deployments"][0]["rolloutState"],
        "IN_PROGRESS"
    );
    plane.state.reconcile().await;
    assert_eq!(agent.poll(&plane).await.start.len(), 2);
    agent.run_pending(plane.now(), HealthStatus::Unknown);
    agent.poll(&plane).await;
    plane.state.reconcile().await;
    let service = plane.service("default", "web").await;
    assert_eq!(service["runningCount"], 2);
    assert_eq!(service["deployments"][0]["rolloutState"], "COMPLETED");
    let messages = events(&service);
    assert_eq!(messages[0], "(service web) has reached a steady state.");
    assert!(messages[1].starts_with("(service web) (deployment ecs-svc/"));
    assert!(messages[1].ends_with(") deployment completed."));
    assert!(messages[2].starts_with("(service web) has started 2 tasks: (task "));

    // An essential container exits: the agent stops the task, the service starts another.
    let dead = agent.active()[0].task_arn.clone();
    plane.advance(5);
    agent.exit(&dead, 1, plane.now());
    agent.poll(&plane).await;
    let task = plane.task("default", &dead).await;
    assert_eq!(task["lastStatus"], "STOPPED");
    assert_eq!(task["stopCode"], "EssentialContainerExited");
    assert_eq!(task["containers"][0]["exitCode"], 1);
    assert_eq!(task["group"], "service:web");
    plane.state.reconcile().await;
    let work = agent.poll(&plane).await;
    assert_eq!(work.start.len(), 1);
    assert_ne!(work.start[0].task_arn, dead);
    assert!(
        work.start[0]
            .started_by
            .as_deref()
            .unwrap()
            .starts_with("ecs-svc/")
    );
    agent.run_pending(plane.now(), HealthStatus::Unknown);
    agent.poll(&plane).await;
    plane.state.reconcile().await;
    let service = plane.service("default", "web").await;
    assert_eq!(service["runningCount"], 2);
    let listed = plane.ok("ListTasks", json!({"serviceName": "web"})).await;
    assert_eq!(listed["taskArns"].as_array().unwrap().len(), 2);

    // Scaling in stops one task; deleting the service stops the rest.
    plane
        .ok(
            "UpdateService",
            json!({"service": "web", "desiredCount": 1}),
        )
        .await;
    plane.state.reconcile().await;
    assert_eq!(agent.poll(&plane).await.stop.len(), 1);
    let (kind, message) = plane
        .fails("DeleteService", json!({"service": "web"}))
        .await;
    assert_eq!(
        (kind.as_str(), message.as_str()),
        (
            "InvalidParameterException",
            "The service cannot be stopped while it is scaled above 0."
        )
    );
    let deleting = plane
        .ok("DeleteService", json!({"service": "web", "force": true}))
        .await;
    assert_eq!(deleting["service"]["status"], "DRAINING");
    plane.state.reconcile().await;
    assert_eq!(agent.poll(&plane).await.stop.len(), 1);
    agent.poll(&plane).await;
    plane.state.reconcile().await;
    assert_eq!(plane.service("default", "web").await["status"], "INACTIVE");
    let listed = plane.ok("ListServices", json!({})).await;
    assert_eq!(listed["serviceArns"], json!([]));
    let (kind, _) = plane
        .fails(
            "UpdateService",
            json!({"service": "web", "desiredCount": 1}),
        )
        .await;
    assert_eq!(kind, "ServiceNotActiveException");
    let (kind, _) = plane
        .fails(
            "UpdateService",
            json!({"service": "ghost", "desiredCount": 1}),
        )
        .await;
    assert_eq!(kind, "ServiceNotFoundException");
}

#[tokio::test]
async fn an_unhealthy_task_is_replaced_once_the_grace_period_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    let mut agent = plane.agent(AgentSpec::ec2(4096, "z1")).await;
    plane
        .register_definition(checked_definition("web", "busybox"))
        .await;
    plane
        .ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
                   "healthCheckGracePeriodSeconds": 30}),
        )
        .await;
    plane.state.reconcile().await;
    agent.poll(&plane).await;
    agent.run_pending(plane.now(), HealthStatus::Unhealthy);
    agent.poll(&plane).await;
    let sick = agent.active()[0].task_arn.clone();

    // Within the grace period, failing checks are ignored.
    plane.advance(29);
    plane.state.reconcile().await;
    assert!(agent.poll(&plane).await.stop.is_empty());
    assert_eq!(
        plane.task("default", &sick).await["healthStatus"],
        "UNHEALTHY"
    );

    plane.advance(1);
    plane.state.reconcile().await;
    let work = agent.poll(&plane).await;
    assert_eq!(work.stop.len(), 1);
    assert_eq!(work.stop[0].task_arn, sick);
    assert_eq!(
        work.stop[0].reason.as_deref(),
        Some("Task failed container health checks")
    );
    assert_eq!(work.start.len(), 1, "its replacement starts at once");
    let id = sick.rsplit('/').next().unwrap();
    let service = plane.service("default", "web").await;
    let messages = events(&service);
    assert!(
        messages.contains(&format!(
            "(service web) (task {id}) failed container health checks."
        )),
        "{messages:#?}"
    );
    assert_eq!(service["deployments"][0]["failedTasks"], 1);
    agent.poll(&plane).await;
    let task = plane.task("default", &sick).await;
    assert_eq!(task["lastStatus"], "STOPPED");
    assert_eq!(task["stopCode"], "ServiceSchedulerInitiated");
}

#[tokio::test]
async fn a_service_that_cannot_place_says_why_and_retries_when_capacity_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    let mut small = plane.agent(AgentSpec::ec2(512, "z1")).await;
    plane
        .register_definition(bridge_definition("web", 1024))
        .await;
    plane
        .ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1}),
        )
        .await;
    plane.state.reconcile().await;
    plane.state.reconcile().await;
    let service = plane.service("default", "web").await;
    let messages = events(&service);
    assert_eq!(
        messages.len(),
        1,
        "the reason is recorded once: {messages:?}"
    );
    let id = small
        .instance
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    assert_eq!(
        messages[0],
        format!(
            "service web was unable to place a task because no container instance met all of \
             its requirements. The closest matching container-instance {id} has insufficient \
             memory available."
        )
    );
    assert!(small.poll(&plane).await.start.is_empty());
    let mut big = plane.agent(AgentSpec::ec2(4096, "z1")).await;
    plane.state.reconcile().await;
    assert_eq!(big.poll(&plane).await.start.len(), 1);
}

#[tokio::test]
async fn a_disconnected_agents_tasks_are_rescheduled_on_another_agent() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    let mut a = plane.agent(AgentSpec::ec2(4096, "z1")).await;
    let mut b = plane.agent(AgentSpec::ec2(4096, "z2")).await;
    plane
        .register_definition(bridge_definition("web", 256))
        .await;
    plane
        .ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
        )
        .await;
    plane.state.reconcile().await;
    // Spread over zones: one task each.
    for agent in [&mut a, &mut b] {
        assert_eq!(agent.poll(&plane).await.start.len(), 1);
        agent.run_pending(plane.now(), HealthStatus::Unknown);
        agent.poll(&plane).await;
    }
    plane.state.reconcile().await;
    let lost = a.active()[0].task_arn.clone();

    // A goes silent; B keeps polling.
    plane.advance(4);
    b.poll(&plane).await;
    plane.state.check_agents().await;
    assert_eq!(plane.task("default", &lost).await["lastStatus"], "RUNNING");
    plane.advance(3);
    b.poll(&plane).await;
    plane.state.check_agents().await;
    let task = plane.task("default", &lost).await;
    assert_eq!(task["lastStatus"], "STOPPED");
    assert_eq!(task["stopCode"], "TerminationNotice");
    assert_eq!(task["connectivity"], "DISCONNECTED");
    assert!(
        task["stoppedReason"]
            .as_str()
            .unwrap()
            .starts_with("Agent disconnected: container instance"),
        "{}",
        task["stoppedReason"]
    );
    let a_instance = plane
        .instance("default", a.instance.as_deref().unwrap())
        .await;
    assert_eq!(a_instance["agentConnected"], false);
    assert_eq!(a_instance["runningTasksCount"], 0);

    plane.state.reconcile().await;
    let work = b.poll(&plane).await;
    assert_eq!(work.start.len(), 1, "the lost task is replaced on B");
    b.run_pending(plane.now(), HealthStatus::Unknown);
    b.poll(&plane).await;
    plane.state.reconcile().await;
    assert_eq!(plane.service("default", "web").await["runningCount"], 2);

    // A comes back with its old task still running: it is told to stop it.
    let work = a.poll(&plane).await;
    assert_eq!(work.stop.len(), 1);
    assert_eq!(work.stop[0].task_arn, lost);
    let a_instance = plane
        .instance("default", a.instance.as_deref().unwrap())
        .await;
    assert_eq!(a_instance["agentConnected"], true);
    plane.state.reconcile().await;
    assert!(a.poll(&plane).await.start.is_empty());
    assert_eq!(plane.service("default", "web").await["runningCount"], 2);
}

/// Drives the `web` service of the default cluster with fake agents until `done` says so of
/// its description, checking `invariant` after every poll. `fail` may crash tasks once they
/// run.
async fn drive(
    plane: &Plane,
    agents: &mut [FakeAgent],
    steps: usize,
    invariant: impl Fn(&[FakeAgent]),
    fail: impl Fn(&mut FakeAgent, Timestamp),
    done: impl Fn(&Value) -> bool,
) {
    for _ in 0..steps {
        plane.advance(1);
        plane.state.reconcile().await;
        let wanted = plane.ok("ListTasks", json!({"serviceName": "web"})).await;
        let service = plane.service("default", "web").await;
        let most = service["deploymentConfiguration"]["maximumPercent"]
            .as_u64()
            .unwrap()
            * service["desiredCount"].as_u64().unwrap()
            / 100;
        let counted = wanted["taskArns"].as_array().unwrap().len() as u64;
        assert!(
            counted <= most,
            "{counted} tasks exceed maximumPercent ({most})"
        );
        for index in 0..agents.len() {
            agents[index].poll(plane).await;
            invariant(agents);
            let now = plane.now();
            let agent = &mut agents[index];
            agent.pass_health_checks();
            agent.run_pending(now, HealthStatus::Unknown);
            fail(agent, now);
            agent.poll(plane).await;
        }
        if done(&plane.service("default", "web").await) {
            return;
        }
    }
    panic!("the service did not settle in {steps} steps");
}

/// Whether the service runs only one deployment, COMPLETED, of the definition `revision`.
fn completed_with(service: &Value, revision: &str) -> bool {
    service["deployments"].as_array().unwrap().len() == 1
        && service["deployments"][0]["rolloutState"] == "COMPLETED"
        && service["taskDefinition"]
            .as_str()
            .unwrap()
            .ends_with(&format!("task-definition/{revision}"))
}

fn total_healthy(agents: &[FakeAgent]) -> usize {
    agents.iter().map(FakeAgent::healthy).sum()
}

#[tokio::test]
async fn a_rolling_update_at_100_200_never_drops_below_the_desired_healthy_count() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    // Room for three 256 MiB tasks per instance: six in all, so the update has to roll.
    let mut agents = vec![
        plane.agent(AgentSpec::ec2(768, "z1")).await,
        plane.agent(AgentSpec::ec2(768, "z2")).await,
    ];
    plane
        .register_definition(checked_definition("web", "web:1"))
        .await;
    plane
        .register_definition(checked_definition("web", "web:2"))
        .await;
    plane
        .ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web:1", "desiredCount": 4,
                   "deploymentConfiguration": {"minimumHealthyPercent": 100,
                                               "maximumPercent": 200}}),
        )
        .await;
    drive(
        &plane,
        &mut agents,
        20,
        |_| {},
        |_, _| {},
        |s| completed_with(s, "web:1"),
    )
    .await;
    assert_eq!(total_healthy(&agents), 4);

    plane
        .ok(
            "UpdateService",
            json!({"service": "web", "taskDefinition": "web:2"}),
        )
        .await;
    let lowest = std::cell::Cell::new(usize::MAX);
    let most = std::cell::Cell::new(0);
    let never_below = |agents: &[FakeAgent]| {
        let healthy = total_healthy(agents);
        assert!(healthy >= 4, "healthy tasks fell to {healthy}");
        lowest.set(lowest.get().min(healthy));
        let active: usize = agents.iter().map(|a| a.active().len()).sum();
        most.set(most.get().max(active));
    };
    drive(
        &plane,
        &mut agents,
        30,
        never_below,
        |_, _| {},
        |s| completed_with(s, "web:2"),
    )
    .await;
    assert!(most.get() > 4, "new tasks started before old ones stopped");
    assert_eq!(lowest.get(), 4);
    let running: Vec<String> = agents
        .iter()
        .flat_map(|a| {
            a.active()
                .iter()
                .map(|r| a.definition_of(&r.task_arn))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(running, vec!["web:2".to_owned(); 4]);
    let service = plane.service("default", "web").await;
    let messages = events(&service);
    assert_eq!(messages[0], "(service web) has reached a steady state.");
    // Old tasks stopped in steps, each once new ones had become healthy in their place, while
    // the new ones that did not fit waited for room.
    let stops = messages
        .iter()
        .filter(|m| m.starts_with("(service web) has stopped"))
        .count();
    assert!(stops >= 2, "{messages:#?}");
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("service web was unable to place a task")),
        "{messages:#?}"
    );
}

#[tokio::test]
async fn the_circuit_breaker_rolls_back_a_deployment_whose_tasks_keep_failing() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    let mut agents = vec![plane.agent(AgentSpec::ec2(8192, "z1")).await];
    plane
        .register_definition(checked_definition("web", "good"))
        .await;
    plane
        .register_definition(checked_definition("web", "broken"))
        .await;
    plane
        .ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web:1", "desiredCount": 2,
                   "deploymentConfiguration": {"deploymentCircuitBreaker":
                        {"enable": true, "rollback": true}}}),
        )
        .await;
    drive(
        &plane,
        &mut agents,
        20,
        |_| {},
        |_, _| {},
        |s| completed_with(s, "web:1"),
    )
    .await;

    plane
        .ok(
            "UpdateService",
            json!({"service": "web", "taskDefinition": "web:2"}),
        )
        .await;
    // Every task of the broken revision exits as soon as it runs.
    let crash = |agent: &mut FakeAgent, now: Timestamp| {
        let broken: Vec<String> = agent
            .active()
            .iter()
            .filter(|r| r.last_status == TaskStatus::Running)
            .map(|r| r.task_arn.clone())
            .filter(|arn| agent.assignments[arn].task_definition.revision == 2)
            .collect();
        for arn in broken {
            agent.exit(&arn, 1, now);
        }
    };
    let keep_two = |agents: &[FakeAgent]| {
        let healthy = total_healthy(agents);
        assert!(healthy >= 2, "healthy tasks fell to {healthy}");
    };
    drive(&plane, &mut agents, 40, keep_two, crash, |s| {
        completed_with(s, "web:1")
    })
    .await;

    let service = plane.service("default", "web").await;
    let messages = events(&service);
    let failed = messages
        .iter()
        .find(|m| m.ends_with("deployment failed: tasks failed to start."))
        .expect("the circuit breaker tripped");
    assert!(failed.starts_with("(service web) (deployment ecs-svc/"));
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("(service web) rolling back to task definition web:1")),
        "{messages:?}"
    );
    // The threshold for 2 desired tasks is 3 failures; they fail two at a time.
    let stopped = plane
        .ok(
            "ListTasks",
            json!({"serviceName": "web", "desiredStatus": "STOPPED"}),
        )
        .await;
    let mut failures = 0;
    for arn in stopped["taskArns"].as_array().unwrap() {
        let task = plane.task("default", arn.as_str().unwrap()).await;
        if task["stopCode"] == "EssentialContainerExited" {
            failures += 1;
        }
    }
    assert!((3..=4).contains(&failures), "{failures} failed tasks");
    let running: Vec<String> = agents[0]
        .active()
        .iter()
        .map(|r| agents[0].definition_of(&r.task_arn))
        .collect();
    assert_eq!(running, ["web:1", "web:1"]);
}

#[tokio::test]
async fn a_restarted_control_plane_keeps_its_state_and_adopts_reported_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, mut silent, standalone, lost) = {
        let plane = Plane::open(dir.path(), clock());
        plane
            .ok("CreateCluster", json!({"clusterName": "prod"}))
            .await;
        plane
            .register_definition(bridge_definition("web", 256))
            .await;
        let mut agent = plane
            .agent(AgentSpec {
                cluster: "prod",
                ..AgentSpec::ec2(4096, "z1")
            })
            .await;
        let run = plane
            .ok(
                "RunTask",
                json!({"cluster": "prod", "taskDefinition": "web"}),
            )
            .await;
        let standalone = arns(&run["tasks"])[0].clone();
        plane
            .ok(
                "CreateService",
                json!({"cluster": "prod", "serviceName": "api", "taskDefinition": "web",
                       "desiredCount": 1, "placementConstraints": [
                           {"type": "memberOf",
                            "expression": "attribute:ecs.availability-zone == z1"}]}),
            )
            .await;
        plane.state.reconcile().await;
        agent.poll(&plane).await;
        agent.run_pending(plane.now(), HealthStatus::Unknown);
        agent.poll(&plane).await;
        plane.state.reconcile().await;
        assert_eq!(plane.service("prod", "api").await["runningCount"], 1);
        // A second agent whose task will not survive the restart.
        let mut silent = plane
            .agent(AgentSpec {
                cluster: "prod",
                ..AgentSpec::ec2(4096, "z2")
            })
            .await;
        let run = plane
            .ok(
                "RunTask",
                json!({"cluster": "prod", "taskDefinition": "web", "placementConstraints": [
                    {"type": "memberOf",
                     "expression": "attribute:ecs.availability-zone == z2"}]}),
            )
            .await;
        let lost = arns(&run["tasks"])[0].clone();
        silent.poll(&plane).await;
        silent.run_pending(plane.now(), HealthStatus::Unknown);
        silent.poll(&plane).await;
        plane.state.shutdown().await;
        (agent, silent, standalone, lost)
    };

    // Reopened later; the agents' tasks kept running meanwhile.
    let clock = ManualClock::new(Timestamp::from_secs(START + 60));
    let plane = Plane::open(dir.path(), clock);
    let described = plane
        .ok("DescribeClusters", json!({"clusters": ["prod"]}))
        .await;
    assert_eq!(described["clusters"][0]["status"], "ACTIVE");
    assert_eq!(described["clusters"][0]["runningTasksCount"], 3);
    assert_eq!(described["clusters"][0]["activeServicesCount"], 1);
    let definition = plane
        .ok("DescribeTaskDefinition", json!({"taskDefinition": "web"}))
        .await;
    assert_eq!(definition["taskDefinition"]["revision"], 1);
    let service = plane.service("prod", "api").await;
    assert_eq!(service["desiredCount"], 1);
    assert_eq!(
        service["placementConstraints"][0]["expression"],
        "attribute:ecs.availability-zone == z1"
    );

    // The first agent comes back: its tasks are adopted, nothing is started twice.
    agent.reregister(&plane).await;
    assert!(agent.poll(&plane).await.start.is_empty());
    plane.state.reconcile().await;
    assert!(agent.poll(&plane).await.start.is_empty());
    plane.advance(4);
    agent.poll(&plane).await;
    plane.advance(4);
    agent.poll(&plane).await;
    plane.state.check_agents().await;
    let task = plane.task("prod", &standalone).await;
    assert_eq!(task["lastStatus"], "RUNNING");
    assert_eq!(task["connectivity"], "CONNECTED");
    assert_eq!(plane.service("prod", "api").await["runningCount"], 1);
    // The other never polled within the disconnect timeout: its task is lost.
    let task = plane.task("prod", &lost).await;
    assert_eq!(task["lastStatus"], "STOPPED");
    assert_eq!(task["stopCode"], "TerminationNotice");
    // ... and stopped if it ever reports it again.
    let work = silent.poll(&plane).await;
    assert_eq!(work.stop.len(), 1);
    assert_eq!(work.stop[0].task_arn, lost);
}

#[tokio::test]
async fn cost_matches_hand_computed_figures() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    let ec2 = plane.agent(AgentSpec::ec2(8192, "z1")).await;
    let mut fargate = plane.agent(AgentSpec::fargate()).await;
    plane
        .register_definition(json!({
            "family": "small", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc",
            "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "app", "image": "busybox"}]
        }))
        .await;
    plane
        .register_definition(json!({
            "family": "big", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc",
            "cpu": "1024", "memory": "2048",
            "containerDefinitions": [{"name": "app", "image": "busybox"}]
        }))
        .await;
    // A short task: pulls at +10 s, stopped at +40 s, billed the one-minute minimum.
    plane.advance(10);
    let short = plane
        .ok(
            "RunTask",
            json!({"taskDefinition": "small", "launchType": "FARGATE"}),
        )
        .await;
    let short = arns(&short["tasks"])[0].clone();
    fargate.poll(&plane).await;
    fargate.run_pending(plane.now(), HealthStatus::Unknown);
    fargate.poll(&plane).await;
    plane.advance(30);
    plane.ok("StopTask", json!({"task": short})).await;
    fargate.poll(&plane).await;
    fargate.poll(&plane).await;
    // A long task: pulls at +100 s, still running at +3700 s.
    plane.advance(60);
    let long = plane
        .ok(
            "RunTask",
            json!({"taskDefinition": "big", "launchType": "FARGATE"}),
        )
        .await;
    let long = arns(&long["tasks"])[0].clone();
    fargate.poll(&plane).await;
    fargate.run_pending(plane.now(), HealthStatus::Unknown);
    fargate.poll(&plane).await;
    plane.advance(3600);

    let (status, cost) = plane.get("/berth/v1/clusters/default/cost").await;
    assert_eq!(status, StatusCode::OK, "{cost}");
    let items = cost["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let item = |what: &str| {
        items
            .iter()
            .find(|i| i["what"] == what)
            .unwrap_or_else(|| panic!("no line for {what}: {cost}"))
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;

    let instance = item(ec2.instance.as_deref().unwrap());
    assert_eq!(instance["pool"], "EC2");
    assert_eq!(instance["seconds"], 3700);
    assert_eq!(instance["usage"], "m5.large");
    let ec2_usd = 3700.0 / 3600.0 * 0.096;
    assert!(close(instance["usd"].as_f64().unwrap(), ec2_usd));

    let short_line = item(&short);
    assert_eq!(short_line["pool"], "FARGATE");
    assert_eq!(short_line["seconds"], 60);
    assert_eq!(short_line["usage"], "0.25 vCPU, 0.5 GB");
    let short_usd = 0.25 * 60.0 / 3600.0 * 0.04048 + 0.5 * 60.0 / 3600.0 * 0.004445;
    assert!(close(short_line["usd"].as_f64().unwrap(), short_usd));

    let long_line = item(&long);
    assert_eq!(long_line["seconds"], 3600);
    assert_eq!(long_line["usage"], "1 vCPU, 2 GB");
    let long_usd = 0.04048 + 2.0 * 0.004445;
    assert!(close(long_line["usd"].as_f64().unwrap(), long_usd));

    assert!(close(
        cost["totalUsd"].as_f64().unwrap(),
        ec2_usd + short_usd + long_usd
    ));
    assert_eq!(cost["ec2InstanceSeconds"], 3700);
    assert!(close(
        cost["fargateVcpuSeconds"].as_f64().unwrap(),
        15.0 + 3600.0
    ));
    assert_eq!(cost["rates"]["fargateVcpuHourly"], 0.04048);
    let (status, _) = plane.get("/berth/v1/clusters/ghost/cost").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A free port on 127.0.0.1.
async fn free_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A "container": answers every connection with `name`, then keeps it open until the client
/// closes it.
async fn container(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = socket.write_all(name.as_bytes()).await;
                let mut sink = [0u8; 64];
                while let Ok(n) = socket.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_load_balancer_routes_to_healthy_tasks_and_drains_before_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    let target = container("task-one").await;
    let mut agent = plane.agent(AgentSpec::ec2(4096, "z1")).await;
    agent.host_port = Some(target.port());
    plane
        .register_definition(json!({
            "family": "web",
            "containerDefinitions": [{
                "name": "app", "image": "busybox", "memory": 256,
                "portMappings": [{"containerPort": 80}],
                "healthCheck": {"command": ["CMD-SHELL", "true"]}
            }]
        }))
        .await;
    let port = free_port().await;
    let (kind, _) = plane
        .fails(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
                   "loadBalancers": [{"containerName": "app", "containerPort": 8080,
                                      "listenerPort": port}]}),
        )
        .await;
    assert_eq!(kind, "InvalidParameterException");
    let created = plane
        .ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
                   "loadBalancers": [{"containerName": "app", "containerPort": 80,
                                      "listenerPort": port}]}),
        )
        .await;
    assert_eq!(created["service"]["loadBalancers"][0]["listenerPort"], port);
    let listeners = plane.state.listeners("default", "web");
    assert_eq!(listeners.len(), 1);
    assert_eq!(listeners[0].listener.port(), port);

    plane.state.reconcile().await;
    agent.poll(&plane).await;
    agent.run_pending(plane.now(), HealthStatus::Unknown);
    agent.poll(&plane).await;
    plane.state.reconcile().await;
    assert!(
        plane.state.listeners("default", "web")[0]
            .targets
            .is_empty(),
        "a task is registered only once healthy"
    );
    agent.pass_health_checks();
    agent.poll(&plane).await;
    plane.state.reconcile().await;
    let targets = &plane.state.listeners("default", "web")[0].targets;
    assert_eq!(targets.len(), 1);
    assert_eq!(
        targets[0].addr,
        format!("127.0.0.1:{}", target.port()).parse().unwrap()
    );
    let task_arn = agent.active()[0].task_arn.clone();
    assert!(task_arn.ends_with(&targets[0].id));
    assert!(events(&plane.service("default", "web").await).iter().any(
        |m| m == &format!("(service web) registered 1 targets in (listener 127.0.0.1:{port}).")
    ));

    // Through the load balancer to the task.
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut greeting = [0u8; 8];
    client.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"task-one");

    // Stopping the task drains it first: the agent hears nothing while the connection is open.
    let stopping = plane.ok("StopTask", json!({"task": task_arn})).await;
    assert_eq!(stopping["task"]["lastStatus"], "DEACTIVATING");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(agent.poll(&plane).await.stop.is_empty());
    let targets = &plane.state.listeners("default", "web")[0].targets;
    assert!(matches!(
        targets[0].state,
        berth_runner::lb::HealthState::Draining { .. }
    ));
    drop(client);
    let mut stop = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop = agent.poll(&plane).await.stop;
        if !stop.is_empty() {
            break;
        }
    }
    assert_eq!(stop.len(), 1, "the stop follows the drain");
    assert_eq!(stop[0].task_arn, task_arn);
    assert!(
        plane.state.listeners("default", "web")[0]
            .targets
            .is_empty()
    );
    plane.state.shutdown().await;
    assert!(
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .is_ok(),
        "shutdown frees the listener's port"
    );
}

#[tokio::test]
async fn logs_are_streamed_from_the_agent_and_errors_say_where_things_stand() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Plane::open(dir.path(), clock());
    // The agent's own server: `/logs/{task}/{container}`.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", server.local_addr().unwrap());
    let agent_app = Router::new().route(
        "/logs/{task}/{container}",
        axum::routing::get(
            |axum::extract::Path((task, container)): axum::extract::Path<(String, String)>,
             axum::extract::RawQuery(query): axum::extract::RawQuery| async move {
                format!(
                    "hello from {container} of {task} ({})\n",
                    query.unwrap_or_default()
                )
            },
        ),
    );
    tokio::spawn(async move { axum::serve(server, agent_app).await });
    let mut agent = plane
        .agent(AgentSpec {
            address,
            ..AgentSpec::ec2(4096, "z1")
        })
        .await;
    plane
        .register_definition(bridge_definition("web", 128))
        .await;
    let run = plane.ok("RunTask", json!({"taskDefinition": "web"})).await;
    let arn = arns(&run["tasks"])[0].clone();
    let id = arn.rsplit('/').next().unwrap().to_owned();
    agent.poll(&plane).await;

    let (status, body) = plane
        .get(&format!("/berth/v1/clusters/default/tasks/{id}/logs"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, format!("hello from app of {id} (follow=false)\n"));
    let (status, body) = plane
        .get(&format!(
            "/berth/v1/clusters/default/tasks/{id}/logs?container=app&follow=true"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, format!("hello from app of {id} (follow=true)\n"));
    let (status, body) = plane
        .get(&format!(
            "/berth/v1/clusters/default/tasks/{id}/logs?container=db"
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["message"],
        format!("Task {id} has no container named db.")
    );
    let (status, _) = plane
        .get("/berth/v1/clusters/default/tasks/0123/logs")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    plane.advance(10);
    plane.state.check_agents().await;
    let (status, body) = plane
        .get(&format!("/berth/v1/clusters/default/tasks/{id}/logs"))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["__type"], "AgentUnavailableException");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("is disconnected"),
        "{body}"
    );
}

#[tokio::test]
async fn serving_answers_long_polls_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let state = ControlState::builder(dir.path())
        .load_balancer_address("127.0.0.1".parse().unwrap())
        .open()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(berth_runner::control::serve_listener(
        listener,
        state,
        async move {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let health = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    let registered: RegisterResponse = http
        .post(format!("{url}/berth/v1/agents/register"))
        .json(
            &json!({"cluster": "default", "cpu": 1024, "memory": 1024, "ec2": true,
                      "address": "http://127.0.0.1:9"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let poll = http
        .post(format!(
            "{url}/berth/v1/agents/{}/poll?wait=20",
            registered.agent_id
        ))
        .json(&json!({"tasks": []}))
        .send();
    let started = std::time::Instant::now();
    let polling = tokio::spawn(poll);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    let answer = polling.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    server.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
}
