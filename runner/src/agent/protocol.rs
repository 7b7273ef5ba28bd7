//! The agent protocol's messages: what an agent sends the control plane and what it gets back,
//! with the field names of the runner's HTTP API (ECS's where ECS has the field).
//!
//! ```text
//! POST /berth/v1/agents/register            RegisterRequest  -> RegisterResponse
//! POST /berth/v1/agents/{agentId}/poll?wait=SECONDS
//!                                           PollRequest      -> PollResponse
//! ```
//!
//! A poll carries the full state of every task the agent has ([`TaskReport`]), STOPPED ones
//! included until their directory is cleaned up, so that a control plane that restarted adopts
//! running tasks from the first poll. Its answer is the work for the agent: tasks to start
//! ([`TaskAssignment`]) and tasks to stop ([`StopInstruction`]). Both sides ignore fields they
//! do not know, so either may add some.
//!
//! Role credentials ([`RoleCredentials`]) come with a task's assignment, for its task role and
//! its execution role, as ECS's control plane sends them with the task. They are never stored
//! with the task: before the task role's expire, the agent names the task in its poll's
//! `refreshCredentials` and the answer's `credentials` carries new ones.
//!
//! Times are ECS's: seconds since the Unix epoch, with a fractional part
//! ([`crate::ecs::Timestamp`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ecs::Timestamp;
use crate::ecs::status::{
    Connectivity, ContainerStatus, DesiredStatus, HealthStatus, LaunchType, StopCode, TaskStatus,
};
use crate::ecs::task::{Attachment, NetworkBinding, NetworkInterface, Task};
use crate::ecs::taskdef::{TaskDefinition, string_or_number};

/// The path of the registration call.
pub const REGISTER_PATH: &str = "/berth/v1/agents/register";

/// The path of the poll call of agent `agent_id`.
pub fn poll_path(agent_id: &str) -> String {
    format!("/berth/v1/agents/{agent_id}/poll")
}

/// The longest a poll may be held by the control plane, in seconds.
pub const MAX_POLL_WAIT_SECS: u64 = 20;

/// The heartbeat the control plane asks for when its answer names none, in seconds.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 2;

/// `POST /berth/v1/agents/register`: an agent offers itself to a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    /// The cluster's name (`default`).
    pub cluster: String,
    /// The id this agent had before: an agent that restarts or reconnects gives it back and
    /// keeps its container instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// CPU units the agent offers, 1024 per CPU.
    pub cpu: u64,
    /// MiB of memory the agent offers.
    pub memory: u64,
    /// The container instance's attributes (`ecs.instance-type`, `ecs.availability-zone`, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Whether the agent also serves the cluster's FARGATE pool.
    #[serde(default)]
    pub fargate: bool,
    /// Whether the agent is an EC2 container instance.
    #[serde(default)]
    pub ec2: bool,
    /// The agent's own HTTP server, `http://IP:PORT`: logs and task metadata.
    pub address: String,
}

/// The control plane's answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    /// The agent's id, to poll with and to give back on the next registration.
    pub agent_id: String,
    /// The container instance the agent is (`null` for an agent that serves FARGATE only).
    #[serde(default)]
    pub container_instance_arn: Option<String>,
    /// How often the agent must poll: the control plane counts an agent with no poll for
    /// three heartbeats as disconnected.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u64,
}

fn default_heartbeat() -> u64 {
    DEFAULT_HEARTBEAT_SECS
}

/// The body of a poll: the state of every task the agent has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollRequest {
    /// One report per task, STOPPED tasks included until they are cleaned up.
    #[serde(default)]
    pub tasks: Vec<TaskReport>,
    /// Tasks (ARNs) whose task role credentials expire soon.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refresh_credentials: Vec<String>,
}

/// The answer to a poll: the agent's work.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollResponse {
    /// Tasks to start. Starting a task the agent already has does nothing.
    #[serde(default)]
    pub start: Vec<TaskAssignment>,
    /// Tasks to stop.
    #[serde(default)]
    pub stop: Vec<StopInstruction>,
    /// New credentials for tasks the poll named in `refreshCredentials`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<RoleCredentials>,
}

impl PollResponse {
    /// Whether the answer holds nothing to do.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty() && self.stop.is_empty() && self.credentials.is_empty()
    }
}

/// Which of a task's roles credentials are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleType {
    /// `taskRoleArn`: served to the task's containers by the credentials endpoint.
    TaskApplication,
    /// `executionRoleArn`: used by the agent to pull the task's images.
    TaskExecution,
}

/// Temporary credentials of a role for one task, in the shape of STS's. The session token is
/// a credential for berth registries that trust the control plane's key
/// ([`berth_registry::auth`]): the password of Basic auth at their token endpoint.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleCredentials {
    /// The task.
    pub task_arn: String,
    /// Which role.
    pub role_type: RoleType,
    /// The role's ARN.
    pub role_arn: String,
    /// `ASIA...`, 20 characters.
    pub access_key_id: String,
    /// 40 characters.
    pub secret_access_key: String,
    /// The signed credential.
    pub session_token: String,
    /// When they stop being valid.
    pub expiration: Timestamp,
    /// The registries (`host[:port]`) that accept them, for the execution role's pulls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registries: Vec<String>,
}

impl std::fmt::Debug for RoleCredentials {
    // Never print secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("task_arn", &self.task_arn)
            .field("role_type", &self.role_type)
            .field("role_arn", &self.role_arn)
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .field("registries", &self.registries)
            .finish_non_exhaustive()
    }
}

/// A task the control plane places on an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAssignment {
    /// `arn:aws:ecs:local:000000000000:task/<cluster>/<id>`.
    pub task_arn: String,
    /// The cluster's ARN.
    pub cluster_arn: String,
    /// The whole registered task definition.
    pub task_definition: TaskDefinition,
    /// EC2 or FARGATE. A FARGATE task always gets its own network namespace (awsvpc).
    pub launch_type: LaunchType,
    /// The task group (`family:<family>`, `service:<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Who started the task (`ecs-svc/<deployment>` for a service's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// Task CPU units: for FARGATE the size chosen, else the definition's, if any. A string
    /// of digits, as ECS gives it; a JSON number is accepted too.
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu: Option<String>,
    /// Task memory in MiB, as `cpu`.
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<String>,
    /// RUNNING.
    #[serde(default)]
    pub desired_status: DesiredStatus,
    /// Credentials of the task's roles, added when the assignment is delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<RoleCredentials>,
}

impl TaskAssignment {
    /// An assignment of `definition` as task `task_arn` of `cluster_arn`, with the
    /// definition's task size.
    pub fn new(
        task_arn: impl Into<String>,
        cluster_arn: impl Into<String>,
        definition: TaskDefinition,
        launch_type: LaunchType,
    ) -> TaskAssignment {
        TaskAssignment {
            task_arn: task_arn.into(),
            cluster_arn: cluster_arn.into(),
            cpu: definition.cpu.clone(),
            memory: definition.memory.clone(),
            task_definition: definition,
            launch_type,
            group: None,
            started_by: None,
            desired_status: DesiredStatus::Running,
            credentials: Vec::new(),
        }
    }

    /// The task id: the last part of its ARN.
    pub fn task_id(&self) -> &str {
        self.task_arn.rsplit('/').next().unwrap_or(&self.task_arn)
    }

    /// Task CPU units, from the assignment or else the definition.
    pub fn cpu_units(&self) -> Option<u32> {
        self.cpu
            .as_deref()
            .and_then(|cpu| cpu.trim().parse().ok())
            .or_else(|| self.task_definition.cpu_units())
    }

    /// Task memory in MiB, from the assignment or else the definition.
    pub fn memory_mib(&self) -> Option<u32> {
        self.memory
            .as_deref()
            .and_then(|memory| memory.trim().parse().ok())
            .or_else(|| self.task_definition.memory_mib())
    }
}

/// A task the control plane wants stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopInstruction {
    /// The task.
    pub task_arn: String,
    /// The `stoppedReason`; "Task stopped by user" when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The `stopCode`; `UserInitiated` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<StopCode>,
}

/// The state of one task, as an agent reports it on every poll: the fields of ECS's
/// `DescribeTasks` that the agent knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReport {
    /// The task.
    pub task_arn: String,
    /// Where the task is in ECS's lifecycle.
    pub last_status: TaskStatus,
    /// RUNNING, or STOPPED once a stop was asked for or an essential container exited.
    pub desired_status: DesiredStatus,
    /// The task's health, from its essential containers that have a health check.
    #[serde(default)]
    pub health_status: HealthStatus,
    /// The containers.
    #[serde(default)]
    pub containers: Vec<ContainerReport>,
    /// The task's ENI (`awsvpc` tasks): `privateIPv4Address`, `macAddress`, `subnetId`,
    /// `networkInterfaceId`.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// Why the task stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<StopCode>,
    /// Why the task stopped, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    /// When the first image pull started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<Timestamp>,
    /// When the last image pull finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<Timestamp>,
    /// When the task reached RUNNING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the task went to STOPPING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<Timestamp>,
    /// When the task reached STOPPED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Timestamp>,
    /// When the task's containers had all exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<Timestamp>,
    /// CONNECTED: the agent reporting it is in touch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectivity: Option<Connectivity>,
}

impl TaskReport {
    /// The report of `task`, as the agent knows it.
    pub fn of(task: &Task) -> TaskReport {
        TaskReport {
            task_arn: task.task_arn.clone(),
            last_status: task.last_status,
            desired_status: task.desired_status,
            health_status: task.health_status,
            containers: task
                .containers
                .iter()
                .map(|c| ContainerReport {
                    name: c.name.clone(),
                    last_status: c.last_status,
                    exit_code: c.exit_code,
                    reason: c.reason.clone(),
                    health_status: c.health_status,
                    network_bindings: c.network_bindings.clone(),
                    network_interfaces: c.network_interfaces.clone(),
                    runtime_id: c.runtime_id.clone(),
                    image_digest: c.image_digest.clone(),
                })
                .collect(),
            attachments: task.attachments.clone(),
            stop_code: task.stop_code,
            stopped_reason: task.stopped_reason.clone(),
            pull_started_at: task.pull_started_at,
            pull_stopped_at: task.pull_stopped_at,
            started_at: task.started_at,
            stopping_at: task.stopping_at,
            stopped_at: task.stopped_at,
            execution_stopped_at: task.execution_stopped_at,
            connectivity: Some(Connectivity::Connected),
        }
    }

    /// The container called `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerReport> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// The state of one container of a reported task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerReport {
    /// Its name in the task definition.
    pub name: String,
    /// PENDING, RUNNING or STOPPED.
    pub last_status: ContainerStatus,
    /// The exit code, once it has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it stopped or could not start (`CannotPullContainerError: ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its health check's verdict; UNKNOWN without one, or before the first.
    #[serde(default)]
    pub health_status: HealthStatus,
    /// Published ports (`bridge` and `host` modes).
    #[serde(default)]
    pub network_bindings: Vec<NetworkBinding>,
    /// The task's interface (`awsvpc` mode).
    #[serde(default)]
    pub network_interfaces: Vec<NetworkInterface>,
    /// The runtime's id for the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    /// The manifest digest the image resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::taskdef::RegisterTaskDefinition;

    fn definition() -> TaskDefinition {
        let request = RegisterTaskDefinition::from_json(
            r#"{"family": "web", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
                "requiresCompatibilities": ["FARGATE"],
                "containerDefinitions": [{"name": "app", "image": "busybox"}]}"#,
        )
        .unwrap();
        TaskDefinition::register(request, 3, Timestamp::from_secs(10)).unwrap()
    }

    #[test]
    fn assignments_take_sizes_as_strings_or_numbers() {
        let json = serde_json::json!({
            "taskArn": "arn:aws:ecs:local:000000000000:task/default/abc123",
            "clusterArn": "arn:aws:ecs:local:000000000000:cluster/default",
            "taskDefinition": definition(),
            "launchType": "FARGATE",
            "cpu": 512,
            "memory": "1024",
            "desiredStatus": "RUNNING",
            "someFutureField": true
        });
        let assignment: TaskAssignment = serde_json::from_value(json).unwrap();
        assert_eq!(assignment.task_id(), "abc123");
        assert_eq!(assignment.cpu_units(), Some(512));
        assert_eq!(assignment.memory_mib(), Some(1024));
        assert_eq!(assignment.launch_type, LaunchType::Fargate);
        let back = serde_json::to_value(&assignment).unwrap();
        assert_eq!(back["cpu"], "512");
        assert_eq!(back["taskDefinition"]["revision"], 3);

        let plain = TaskAssignment::new("t", "c", definition(), LaunchType::Ec2);
        assert_eq!(plain.cpu_units(), Some(256));
        assert_eq!(plain.memory_mib(), Some(512));
    }

    #[test]
    fn reports_use_the_contract_names() {
        let mut task = Task::new(
            "arn:aws:ecs:local:000000000000:task/default/abc123",
            "arn:aws:ecs:local:000000000000:cluster/default",
            &definition(),
            LaunchType::Fargate,
            None,
            Timestamp::from_secs(100),
        );
        task.pull_started_at = Some(Timestamp::from_millis(100_250));
        task.request_stop(StopCode::UserInitiated, "Task stopped by user");
        task.containers[0].exit_code = Some(143);
        let json = serde_json::to_value(PollRequest {
            tasks: vec![TaskReport::of(&task)],
            refresh_credentials: Vec::new(),
        })
        .unwrap();
        let report = &json["tasks"][0];
        assert_eq!(report["lastStatus"], "PROVISIONING");
        assert_eq!(report["desiredStatus"], "STOPPED");
        assert_eq!(report["healthStatus"], "UNKNOWN");
        assert_eq!(report["stopCode"], "UserInitiated");
        assert_eq!(report["stoppedReason"], "Task stopped by user");
        assert_eq!(report["pullStartedAt"], 100.25);
        assert_eq!(report["connectivity"], "CONNECTED");
        assert_eq!(report["containers"][0]["name"], "app");
        assert_eq!(report["containers"][0]["exitCode"], 143);
        assert_eq!(report["containers"][0]["lastStatus"], "PENDING");
        assert!(report["containers"][0]["networkBindings"].is_array());
        let back: PollRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back.tasks[0], TaskReport::of(&task));
    }

    #[test]
    fn poll_answers_default_to_no_work() {
        let empty: PollResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, PollResponse::default());
        let stop: PollResponse =
            serde_json::from_str(r#"{"stop": [{"taskArn": "t", "stopCode": "UserInitiated"}]}"#)
                .unwrap();
        assert_eq!(stop.stop[0].stop_code, Some(StopCode::UserInitiated));
        assert_eq!(stop.stop[0].reason, None);
        let registered: RegisterResponse =
            serde_json::from_str(r#"{"agentId": "a1", "containerInstanceArn": null}"#).unwrap();
        assert_eq!(registered.heartbeat_seconds, DEFAULT_HEARTBEAT_SECS);
        assert_eq!(registered.container_instance_arn, None);
    }
}
