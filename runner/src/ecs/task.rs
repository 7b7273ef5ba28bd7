//! Tasks and their containers as `DescribeTasks` returns them.
//!
//! [`Task`] is what the control plane stores per task and what `berth task describe --json`
//! prints: ECS's field names (`taskArn`, `lastStatus`, `desiredStatus`, `stopCode`,
//! `containers[].networkBindings`, ...), timestamps as epoch seconds. A task in `awsvpc` mode
//! carries its network interface as ECS does, an `ElasticNetworkInterface` attachment whose
//! details hold `privateIPv4Address`, `macAddress` and `subnetId`, and the same address in each
//! container's `networkInterfaces`.
//!
//! [`Task::move_to`] is the one way `lastStatus` changes: it refuses moves the lifecycle does
//! not allow ([`TaskStatus::can_move_to`]), stamps `startedAt`, `stoppingAt`,
//! `executionStoppedAt` and `stoppedAt`, and bumps `version`, as ECS does on every change.

use serde::{Deserialize, Serialize};

use super::Timestamp;
use super::status::{
    Connectivity, ContainerStatus, DesiredStatus, HealthStatus, LaunchType, StopCode, TaskStatus,
};
use super::taskdef::{KeyValuePair, TaskDefinition, TransportProtocol};

/// A task, as `DescribeTasks` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// `arn:aws:ecs:local:000000000000:task/<cluster>/<id>`.
    pub task_arn: String,
    /// The cluster's ARN.
    pub cluster_arn: String,
    /// The task definition's ARN.
    pub task_definition_arn: String,
    /// The container instance it runs on (EC2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_instance_arn: Option<String>,
    /// EC2 or FARGATE.
    pub launch_type: LaunchType,
    /// Where the task is in its lifecycle.
    pub last_status: TaskStatus,
    /// Where the control plane wants it.
    pub desired_status: DesiredStatus,
    /// Task CPU units, as a string, when the task has a task-level size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Task memory in MiB, as a string, when the task has a task-level size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// The containers.
    pub containers: Vec<Container>,
    /// The task group: `service:<name>` for a service's tasks, `family:<family>` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Who started it (`ecs-svc/<deployment>` for a service's tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// The task's health, from its essential containers'.
    #[serde(default)]
    pub health_status: HealthStatus,
    /// Why it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<StopCode>,
    /// Why it stopped, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    /// Whether its agent is in touch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectivity: Option<Connectivity>,
    /// When `connectivity` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectivity_at: Option<Timestamp>,
    /// The ENI attachment of an `awsvpc` task.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// The availability zone (the instance's `ecs.availability-zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// When the task was created (RunTask or the service scheduler).
    pub created_at: Timestamp,
    /// When the first image pull started: where Fargate billing starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<Timestamp>,
    /// When the last image pull finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<Timestamp>,
    /// When it reached RUNNING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it went to STOPPING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<Timestamp>,
    /// When its containers had all exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<Timestamp>,
    /// When it reached STOPPED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Timestamp>,
    /// Bumped on every change.
    #[serde(default)]
    pub version: u64,
}

/// A move [`TaskStatus::can_move_to`] does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {task_arn} cannot move from {from} to {to}")]
pub struct TransitionError {
    /// The task.
    pub task_arn: String,
    /// Its current status.
    pub from: TaskStatus,
    /// The status asked for.
    pub to: TaskStatus,
}

impl Task {
    /// A new task of `definition`, PROVISIONING with desired status RUNNING, its containers
    /// PENDING. `group` defaults to `family:<family>`, as ECS's does for standalone tasks.
    pub fn new(
        task_arn: impl Into<String>,
        cluster_arn: impl Into<String>,
        definition: &TaskDefinition,
        launch_type: LaunchType,
        group: Option<String>,
        created_at: Timestamp,
    ) -> Task {
        let task_arn = task_arn.into();
        let containers = definition
            .container_definitions
            .iter()
            .map(|c| Container {
                container_arn: None,
                task_arn: task_arn.clone(),
                name: c.name.clone(),
                image: c.image.clone(),
                image_digest: None,
                runtime_id: None,
                last_status: ContainerStatus::Pending,
                exit_code: None,
                reason: None,
                network_bindings: Vec::new(),
                network_interfaces: Vec::new(),
                health_status: HealthStatus::Unknown,
                cpu: Some(c.cpu.to_string()),
                memory: c.memory.map(|m| m.to_string()),
                memory_reservation: c.memory_reservation.map(|m| m.to_string()),
            })
            .collect();
        Task {
            task_arn,
            cluster_arn: cluster_arn.into(),
            task_definition_arn: definition.task_definition_arn.clone(),
            container_instance_arn: None,
            launch_type,
            last_status: TaskStatus::Provisioning,
            desired_status: DesiredStatus::Running,
            cpu: definition.cpu.clone(),
            memory: definition.memory.clone(),
            containers,
            group: Some(group.unwrap_or_else(|| format!("family:{}", definition.family))),
            started_by: None,
            health_status: HealthStatus::Unknown,
            stop_code: None,
            stopped_reason: None,
            connectivity: None,
            connectivity_at: None,
            attachments: Vec::new(),
            availability_zone: None,
            created_at,
            pull_started_at: None,
            pull_stopped_at: None,
            started_at: None,
            stopping_at: None,
            execution_stopped_at: None,
            stopped_at: None,
            version: 1,
        }
    }

    /// Moves `lastStatus` to `next` at `at`, stamping the times ECS stamps.
    pub fn move_to(&mut self, next: TaskStatus, at: Timestamp) -> Result<(), TransitionError> {
        if !self.last_status.can_move_to(next) {
            return Err(TransitionError {
                task_arn: self.task_arn.clone(),
                from: self.last_status,
                to: next,
            });
        }
        match next {
            TaskStatus::Running => {
                self.started_at.get_or_insert(at);
            }
            TaskStatus::Stopping => {
                self.stopping_at.get_or_insert(at);
            }
            TaskStatus::Deprovisioning => {
                self.execution_stopped_at.get_or_insert(at);
            }
            TaskStatus::Stopped => {
                self.execution_stopped_at.get_or_insert(at);
                self.stopped_at = Some(at);
                self.desired_status = DesiredStatus::Stopped;
            }
            _ => {}
        }
        self.last_status = next;
        self.version += 1;
        Ok(())
    }

    /// Asks for the task to stop: desired status STOPPED, with the stop code and reason. The
    /// first reason given is kept, as ECS keeps it.
    pub fn request_stop(&mut self, code: StopCode, reason: impl Into<String>) {
        if self.stop_code.is_none() {
            self.stop_code = Some(code);
            self.stopped_reason = Some(reason.into());
        }
        if self.desired_status != DesiredStatus::Stopped {
            self.desired_status = DesiredStatus::Stopped;
            self.version += 1;
        }
    }

    /// The container called `name`.
    pub fn container(&self, name: &str) -> Option<&Container> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The container called `name`, to change.
    pub fn container_mut(&mut self, name: &str) -> Option<&mut Container> {
        self.containers.iter_mut().find(|c| c.name == name)
    }

    /// The task id: the last part of its ARN.
    pub fn id(&self) -> &str {
        self.task_arn.rsplit('/').next().unwrap_or(&self.task_arn)
    }

    /// The ENI attachment, for an `awsvpc` task.
    pub fn eni(&self) -> Option<&Attachment> {
        self.attachments
            .iter()
            .find(|a| a.kind == Attachment::ELASTIC_NETWORK_INTERFACE)
    }

    /// The task's private IPv4 address, for an `awsvpc` task.
    pub fn private_ipv4(&self) -> Option<&str> {
        self.eni()
            .and_then(|eni| eni.detail(Attachment::PRIVATE_IPV4_ADDRESS))
    }

    /// Gives an `awsvpc` task its network interface: the attachment, and the address on every
    /// container's `networkInterfaces`.
    pub fn attach_eni(&mut self, attachment: Attachment) {
        let address = attachment
            .detail(Attachment::PRIVATE_IPV4_ADDRESS)
            .map(str::to_owned);
        for container in &mut self.containers {
            container.network_interfaces = vec![NetworkInterface {
                attachment_id: Some(attachment.id.clone()),
                private_ipv4_address: address.clone(),
                ipv6_address: None,
            }];
        }
        self.attachments
            .retain(|a| a.kind != Attachment::ELASTIC_NETWORK_INTERFACE);
        self.attachments.push(attachment);
        self.version += 1;
    }
}

/// A container of a task, as `DescribeTasks` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// The container's ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_arn: Option<String>,
    /// Its task's ARN.
    pub task_arn: String,
    /// Its name in the task definition.
    pub name: String,
    /// The image reference from the task definition.
    pub image: String,
    /// The manifest digest the image reference resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// The runtime's id for the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    /// PENDING, RUNNING or STOPPED.
    pub last_status: ContainerStatus,
    /// The exit code, once stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it stopped or failed to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Published ports (`bridge` and `host` modes).
    #[serde(default)]
    pub network_bindings: Vec<NetworkBinding>,
    /// The task's interface (`awsvpc` mode).
    #[serde(default)]
    pub network_interfaces: Vec<NetworkInterface>,
    /// The container's health.
    #[serde(default)]
    pub health_status: HealthStatus,
    /// CPU units, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Hard memory limit in MiB, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Soft memory limit in MiB, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<String>,
}

/// A published port: `hostPort` on `bindIP` reaches `containerPort`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    /// The host address bound (`0.0.0.0`).
    #[serde(rename = "bindIP")]
    pub bind_ip: String,
    /// The port in the container.
    pub container_port: u16,
    /// The port on the host.
    pub host_port: u16,
    /// tcp or udp.
    pub protocol: TransportProtocol,
}

/// A container's view of the task's network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    /// The ENI attachment's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_id: Option<String>,
    /// The private IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ipv4_address: Option<String>,
    /// The IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
}

/// The state of an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum AttachmentStatus {
    Precreated,
    Created,
    Attaching,
    Attached,
    Detaching,
    Detached,
    Deleted,
    Failed,
}

/// Something attached to a task: for an `awsvpc` task, its elastic network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The attachment's id.
    pub id: String,
    /// `ElasticNetworkInterface`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it is in its life.
    pub status: AttachmentStatus,
    /// `{name, value}` pairs: `subnetId`, `networkInterfaceId`, `macAddress`,
    /// `privateIPv4Address`, `privateDnsName`.
    #[serde(default)]
    pub details: Vec<KeyValuePair>,
}

/// What an ENI attachment records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eni {
    /// The subnet (berth: the cluster's bridge network, `subnet-...`).
    pub subnet_id: String,
    /// The interface's id (`eni-...`).
    pub network_interface_id: String,
    /// The interface's MAC address.
    pub mac_address: String,
    /// The task's address.
    pub private_ipv4_address: String,
    /// A DNS name for the address, if any.
    pub private_dns_name: Option<String>,
}

impl Attachment {
    /// The `type` of an ENI attachment.
    pub const ELASTIC_NETWORK_INTERFACE: &'static str = "ElasticNetworkInterface";
    /// The detail holding an ENI's address.
    pub const PRIVATE_IPV4_ADDRESS: &'static str = "privateIPv4Address";

    /// An ENI attachment with ECS's detail names.
    pub fn eni(id: impl Into<String>, status: AttachmentStatus, eni: Eni) -> Attachment {
        let mut details = vec![
            KeyValuePair::new("subnetId", eni.subnet_id),
            KeyValuePair::new("networkInterfaceId", eni.network_interface_id),
            KeyValuePair::new("macAddress", eni.mac_address),
            KeyValuePair::new(Self::PRIVATE_IPV4_ADDRESS, eni.private_ipv4_address),
        ];
        if let Some(name) = eni.private_dns_name {
            details.push(KeyValuePair::new("privateDnsName", name));
        }
        Attachment {
            id: id.into(),
            kind: Self::ELASTIC_NETWORK_INTERFACE.to_owned(),
            status,
            details,
        }
    }

    /// The value of the detail `name`.
    pub fn detail(&self, name: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|pair| pair.name == name)
            .map(|pair| pair.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::arn;
    use crate::ecs::taskdef::{RegisterTaskDefinition, TaskDefinition};

    fn definition() -> TaskDefinition {
        let request = RegisterTaskDefinition::from_json(
            r#"{"family": "web", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
                "requiresCompatibilities": ["FARGATE"],
                "containerDefinitions": [
                    {"name": "app", "image": "nginx", "memoryReservation": 128},
                    {"name": "log", "image": "busybox", "essential": false}
                ]}"#,
        )
        .unwrap();
        TaskDefinition::register(request, 2, Timestamp::from_secs(10)).unwrap()
    }

    fn task() -> Task {
        Task::new(
            arn::task("default", "4f6c"),
            arn::cluster("default"),
            &definition(),
            LaunchType::Fargate,
            None,
            Timestamp::from_secs(100),
        )
    }

    #[test]
    fn a_new_task_is_provisioning_with_pending_containers() {
        let task = task();
        assert_eq!(task.last_status, TaskStatus::Provisioning);
        assert_eq!(task.desired_status, DesiredStatus::Running);
        assert_eq!(task.group.as_deref(), Some("family:web"));
        assert_eq!(
            (task.cpu.as_deref(), task.memory.as_deref()),
            (Some("256"), Some("512"))
        );
        assert_eq!(task.task_definition_arn, arn::task_definition("web", 2));
        assert_eq!(task.containers.len(), 2);
        let app = task.container("app").unwrap();
        assert_eq!(app.last_status, ContainerStatus::Pending);
        assert_eq!(app.memory_reservation.as_deref(), Some("128"));
        assert_eq!(app.task_arn, task.task_arn);
        assert_eq!(task.id(), "4f6c");
    }

    #[test]
    fn moves_stamp_times_and_bump_the_version() {
        let mut task = task();
        let v = task.version;
        task.move_to(TaskStatus::Pending, Timestamp::from_secs(101))
            .unwrap();
        task.move_to(TaskStatus::Running, Timestamp::from_secs(105))
            .unwrap();
        assert_eq!(task.started_at, Some(Timestamp::from_secs(105)));
        task.request_stop(StopCode::UserInitiated, "Task stopped by user");
        task.request_stop(StopCode::EssentialContainerExited, "later reason");
        assert_eq!(task.stop_code, Some(StopCode::UserInitiated));
        assert_eq!(task.stopped_reason.as_deref(), Some("Task stopped by user"));
        assert_eq!(task.desired_status, DesiredStatus::Stopped);
        task.move_to(TaskStatus::Stopping, Timestamp::from_secs(200))
            .unwrap();
        task.move_to(TaskStatus::Deprovisioning, Timestamp::from_secs(205))
            .unwrap();
        task.move_to(TaskStatus::Stopped, Timestamp::from_secs(207))
            .unwrap();
        assert_eq!(task.stopping_at, Some(Timestamp::from_secs(200)));
        assert_eq!(task.execution_stopped_at, Some(Timestamp::from_secs(205)));
        assert_eq!(task.stopped_at, Some(Timestamp::from_secs(207)));
        assert_eq!(task.version, v + 6);
    }

    #[test]
    fn illegal_moves_are_refused() {
        let mut task = task();
        task.move_to(TaskStatus::Pending, Timestamp::from_secs(1))
            .unwrap();
        task.move_to(TaskStatus::Running, Timestamp::from_secs(2))
            .unwrap();
        let error = task
            .move_to(TaskStatus::Pending, Timestamp::from_secs(3))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("task {} cannot move from RUNNING to PENDING", task.task_arn)
        );
        assert!(
            task.move_to(TaskStatus::Stopped, Timestamp::from_secs(3))
                .is_err()
        );
        assert_eq!(task.last_status, TaskStatus::Running);
    }

    #[test]
    fn eni_attachment_gives_the_task_and_containers_an_address() {
        let mut task = task();
        task.attach_eni(Attachment::eni(
            "a1b2",
            AttachmentStatus::Attached,
            Eni {
                subnet_id: "subnet-berth0".into(),
                network_interface_id: "eni-0001".into(),
                mac_address: "02:42:ac:11:00:02".into(),
                private_ipv4_address: "10.88.0.2".into(),
                private_dns_name: None,
            },
        ));
        assert_eq!(task.private_ipv4(), Some("10.88.0.2"));
        assert_eq!(
            task.containers[1].network_interfaces[0]
                .private_ipv4_address
                .as_deref(),
            Some("10.88.0.2")
        );
        let json = serde_json::to_value(&task).unwrap();
        let attachment = &json["attachments"][0];
        assert_eq!(attachment["type"], "ElasticNetworkInterface");
        assert_eq!(attachment["status"], "ATTACHED");
        assert_eq!(attachment["details"][3]["name"], "privateIPv4Address");
        assert_eq!(attachment["details"][2]["value"], "02:42:ac:11:00:02");
        assert_eq!(
            json["containers"][0]["networkInterfaces"][0]["privateIpv4Address"],
            "10.88.0.2"
        );
    }

    #[test]
    fn describe_tasks_json_uses_ecs_names_and_round_trips() {
        let mut task = task();
        task.container_instance_arn = None;
        task.pull_started_at = Some(Timestamp::from_millis(100_500));
        let app = task.container_mut("app").unwrap();
        app.last_status = ContainerStatus::Stopped;
        app.exit_code = Some(137);
        app.reason = Some("OutOfMemoryError: Container killed due to memory usage".into());
        app.network_bindings = vec![NetworkBinding {
            bind_ip: "0.0.0.0".into(),
            container_port: 80,
            host_port: 32768,
            protocol: TransportProtocol::Tcp,
        }];
        task.request_stop(
            StopCode::EssentialContainerExited,
            "Essential container in task exited",
        );
        let json = serde_json::to_value(&task).unwrap();
        for field in [
            "taskArn",
            "clusterArn",
            "taskDefinitionArn",
            "lastStatus",
            "desiredStatus",
            "launchType",
            "cpu",
            "memory",
            "containers",
            "stopCode",
            "stoppedReason",
            "createdAt",
            "pullStartedAt",
            "group",
            "healthStatus",
            "version",
        ] {
            assert!(json.get(field).is_some(), "{field} missing from {json}");
        }
        assert_eq!(json["lastStatus"], "PROVISIONING");
        assert_eq!(json["desiredStatus"], "STOPPED");
        assert_eq!(json["launchType"], "FARGATE");
        assert_eq!(json["stopCode"], "EssentialContainerExited");
        assert_eq!(json["pullStartedAt"], 100.5);
        let binding = &json["containers"][0]["networkBindings"][0];
        assert_eq!(binding["bindIP"], "0.0.0.0");
        assert_eq!(binding["hostPort"], 32768);
        assert_eq!(binding["protocol"], "tcp");
        assert_eq!(json["containers"][0]["exitCode"], 137);
        assert_eq!(json["containers"][0]["lastStatus"], "STOPPED");
        let back: Task = serde_json::from_value(json).unwrap();
        assert_eq!(back, task);
    }
}
