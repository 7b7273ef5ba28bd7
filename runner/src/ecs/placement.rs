//! Task placement on EC2 container instances, as ECS places tasks.
//!
//! For each task, [`PlacementPolicy::place`]:
//! 1. **filters** the cluster's instances, keeping those that
//!    - are ACTIVE (DRAINING and INACTIVE instances take no new tasks),
//!    - have a connected agent (else the failure reason is `AGENT`),
//!    - have every attribute the task requires (`ATTRIBUTE`),
//!    - have the CPU units and memory left that the task reserves (`RESOURCE:CPU`,
//!      `RESOURCE:MEMORY`),
//!    - have the task's static host ports free, per protocol (`RESOURCE:PORTS`); in `bridge`
//!      mode only non-zero `hostPort`s count (dynamic ports are picked when the task starts), in
//!      `host` mode every container port, in `awsvpc` mode none (the task has its own
//!      interface),
//!    - satisfy the constraints: `distinctInstance` (no task of the same group there) and each
//!      `memberOf` expression ([`super::query`]);
//! 2. applies the **strategies** in order, each keeping only the candidates that tie for its
//!    best: `binpack` on `cpu` or `memory` keeps the instances with the least of it left,
//!    `spread` on `instanceId` (or `host`) keeps the instances with the fewest tasks of the
//!    group, `spread` on `attribute:<name>` keeps the instances whose value of the attribute has
//!    the fewest tasks of the group across the whole cluster, and `random` keeps one at random;
//! 3. picks one of the candidates left at random.
//!
//! [`PlacementPolicy::place_tasks`] places several tasks one after the other, reserving each
//! placed task's resources on its instance before placing the next, as `RunTask --count` does.
//! When nothing fits, the failure lists, per instance, the first check it failed, in ECS's
//! `failures[].reason` spelling.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::query::{self, Candidate, Expression};
use super::taskdef::{NetworkMode, TaskDefinition, TransportProtocol};
use super::{Failure, Timestamp};

/// The most constraints `RunTask` and services accept.
pub const MAX_CONSTRAINTS: usize = 10;
/// The most strategies `RunTask` and services accept.
pub const MAX_STRATEGIES: usize = 5;

/// A container instance's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerInstanceStatus {
    /// Takes tasks.
    #[default]
    Active,
    /// Takes no new tasks; its service tasks are being replaced elsewhere.
    Draining,
    /// Deregistered.
    Inactive,
}

/// A container instance's CPU, memory and ports, in ECS's `Resource` list form on the wire:
/// `[{"name": "CPU", "type": "INTEGER", "integerValue": 2048}, {"name": "MEMORY", ...},
/// {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22"]}, {"name": "PORTS_UDP", ...}]`.
///
/// As in ECS, `registeredResources` holds the ports reserved for the host, and
/// `remainingResources` every port taken: the reserved ones and those of the tasks placed there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<Resource>", try_from = "Vec<Resource>")]
pub struct Resources {
    /// CPU units.
    pub cpu: u32,
    /// Memory, MiB.
    pub memory: u32,
    /// TCP ports.
    pub ports: BTreeSet<u16>,
    /// UDP ports.
    pub ports_udp: BTreeSet<u16>,
}

impl Resources {
    /// The ports of one protocol.
    pub fn ports(&self, protocol: TransportProtocol) -> &BTreeSet<u16> {
        match protocol {
            TransportProtocol::Tcp => &self.ports,
            TransportProtocol::Udp => &self.ports_udp,
        }
    }

    fn ports_mut(&mut self, protocol: TransportProtocol) -> &mut BTreeSet<u16> {
        match protocol {
            TransportProtocol::Tcp => &mut self.ports,
            TransportProtocol::Udp => &mut self.ports_udp,
        }
    }
}

/// One entry of ECS's `Resource` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// `CPU`, `MEMORY`, `PORTS` or `PORTS_UDP`.
    pub name: String,
    /// `INTEGER` or `STRINGSET`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For INTEGER resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integer_value: Option<i64>,
    /// For STRINGSET resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_set_value: Option<Vec<String>>,
}

impl From<Resources> for Vec<Resource> {
    fn from(resources: Resources) -> Vec<Resource> {
        let integer = |name: &str, value: u32| Resource {
            name: name.to_owned(),
            kind: "INTEGER".to_owned(),
            integer_value: Some(i64::from(value)),
            string_set_value: None,
        };
        let ports = |name: &str, ports: &BTreeSet<u16>| Resource {
            name: name.to_owned(),
            kind: "STRINGSET".to_owned(),
            integer_value: None,
            string_set_value: Some(ports.iter().map(u16::to_string).collect()),
        };
        vec![
            integer("CPU", resources.cpu),
            integer("MEMORY", resources.memory),
            ports("PORTS", &resources.ports),
            ports("PORTS_UDP", &resources.ports_udp),
        ]
    }
}

/// A `Resource` list that does not describe CPU, memory and ports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resource '{name}': {problem}")]
pub struct ResourceError {
    /// The resource's name.
    pub name: String,
    /// What is wrong.
    pub problem: &'static str,
}

impl TryFrom<Vec<Resource>> for Resources {
    type Error = ResourceError;

    fn try_from(list: Vec<Resource>) -> Result<Resources, ResourceError> {
        let mut resources = Resources::default();
        for resource in list {
            let fail = |problem| ResourceError {
                name: resource.name.clone(),
                problem,
            };
            match resource.name.as_str() {
                "CPU" | "MEMORY" => {
                    let value = resource
                        .integer_value
                        .ok_or_else(|| fail("it has no integerValue"))?;
                    let value = u32::try_from(value).map_err(|_| fail("it is out of range"))?;
                    if resource.name == "CPU" {
                        resources.cpu = value;
                    } else {
                        resources.memory = value;
                    }
                }
                "PORTS" | "PORTS_UDP" => {
                    let ports = resource
                        .string_set_value
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .map(|port| port.parse::<u16>())
                        .collect::<Result<BTreeSet<u16>, _>>()
                        .map_err(|_| fail("it holds a value that is not a port"))?;
                    if resource.name == "PORTS" {
                        resources.ports = ports;
                    } else {
                        resources.ports_udp = ports;
                    }
                }
                // Resources berth does not place on (GPU, ...) are carried by name only.
                _ => {}
            }
        }
        Ok(resources)
    }
}

/// The versions an instance's agent reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The agent's version (`1.14.5`), for `agentVersion` expressions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// The agent's build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_hash: Option<String>,
    /// The container runtime's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,
}

/// An EC2 container instance: a host running berth's agent, as `DescribeContainerInstances`
/// returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstance {
    /// `arn:aws:ecs:local:000000000000:container-instance/<cluster>/<id>`.
    pub container_instance_arn: String,
    /// The host's id (berth: the agent's id), for `ec2InstanceId` expressions.
    pub ec2_instance_id: String,
    /// ACTIVE, DRAINING or INACTIVE.
    pub status: ContainerInstanceStatus,
    /// Whether the agent is in touch.
    pub agent_connected: bool,
    /// What the instance has.
    pub registered_resources: Resources,
    /// What is left after the tasks placed there.
    pub remaining_resources: Resources,
    /// Attributes: `ecs.instance-type`, `ecs.availability-zone`, `ecs.os-type`,
    /// `ecs.cpu-architecture`, and custom ones. A value may be absent.
    #[serde(with = "attribute_list")]
    pub attributes: BTreeMap<String, Option<String>>,
    /// RUNNING tasks on the instance.
    #[serde(default)]
    pub running_tasks_count: u32,
    /// Tasks placed there that are not RUNNING yet.
    #[serde(default)]
    pub pending_tasks_count: u32,
    /// When the instance registered.
    pub registered_at: Timestamp,
    /// The agent's versions.
    #[serde(default)]
    pub version_info: VersionInfo,
}

impl ContainerInstance {
    /// The ports ECS reserves on every instance: SSH, Docker's API and the agent's.
    pub const DEFAULT_RESERVED_PORTS: [u16; 5] = [22, 2375, 2376, 51678, 51679];

    /// An ACTIVE instance with its agent connected, `cpu` units and `memory` MiB, and the TCP
    /// `reserved_ports` taken.
    pub fn new(
        container_instance_arn: impl Into<String>,
        ec2_instance_id: impl Into<String>,
        cpu: u32,
        memory: u32,
        reserved_ports: impl IntoIterator<Item = u16>,
        registered_at: Timestamp,
    ) -> ContainerInstance {
        let registered = Resources {
            cpu,
            memory,
            ports: reserved_ports.into_iter().collect(),
            ports_udp: BTreeSet::new(),
        };
        ContainerInstance {
            container_instance_arn: container_instance_arn.into(),
            ec2_instance_id: ec2_instance_id.into(),
            status: ContainerInstanceStatus::Active,
            agent_connected: true,
            remaining_resources: registered.clone(),
            registered_resources: registered,
            attributes: BTreeMap::new(),
            running_tasks_count: 0,
            pending_tasks_count: 0,
            registered_at,
            version_info: VersionInfo::default(),
        }
    }

    /// Sets an attribute (builder style).
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), Some(value.into()));
        self
    }

    /// The value of an attribute, if the instance has it with a value.
    pub fn attribute_value(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).and_then(|value| value.as_deref())
    }

    /// `ecs.instance-type`.
    pub fn instance_type(&self) -> Option<&str> {
        self.attribute_value("ecs.instance-type")
    }

    /// Whether the task's resources are free here: the first shortage, if any.
    pub fn check_resources(&self, request: &TaskRequest) -> Result<(), FailureReason> {
        let left = &self.remaining_resources;
        if request.cpu > left.cpu {
            return Err(FailureReason::Cpu);
        }
        if request.memory > left.memory {
            return Err(FailureReason::Memory);
        }
        if request
            .host_ports
            .iter()
            .any(|port| left.ports(port.protocol).contains(&port.port))
        {
            return Err(FailureReason::Ports);
        }
        Ok(())
    }

    /// Takes the task's resources, and counts it as pending.
    pub fn reserve(&mut self, request: &TaskRequest) {
        let left = &mut self.remaining_resources;
        left.cpu = left.cpu.saturating_sub(request.cpu);
        left.memory = left.memory.saturating_sub(request.memory);
        for port in &request.host_ports {
            left.ports_mut(port.protocol).insert(port.port);
        }
        self.pending_tasks_count += 1;
    }

    /// Gives the task's resources back, when it has stopped. `was_running` says which count
    /// it was in.
    pub fn release(&mut self, request: &TaskRequest, was_running: bool) {
        let registered = &self.registered_resources;
        let left = &mut self.remaining_resources;
        left.cpu = left.cpu.saturating_add(request.cpu).min(registered.cpu);
        left.memory = left
            .memory
            .saturating_add(request.memory)
            .min(registered.memory);
        for port in &request.host_ports {
            if !registered.ports(port.protocol).contains(&port.port) {
                left.ports_mut(port.protocol).remove(&port.port);
            }
        }
        let count = if was_running {
            &mut self.running_tasks_count
        } else {
            &mut self.pending_tasks_count
        };
        *count = count.saturating_sub(1);
    }

    /// A task placed here reached RUNNING: moves it from the pending count to the running one.
    pub fn task_started(&mut self) {
        self.pending_tasks_count = self.pending_tasks_count.saturating_sub(1);
        self.running_tasks_count += 1;
    }
}

/// `attributes` as ECS's list of `{"name": ..., "value": ...}`.
mod attribute_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Attribute {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
    }

    pub(super) fn serialize<S: Serializer>(
        attributes: &BTreeMap<String, Option<String>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        attributes
            .iter()
            .map(|(name, value)| Attribute {
                name: name.clone(),
                value: value.clone(),
            })
            .collect::<Vec<_>>()
            .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, Option<String>>, D::Error> {
        Ok(Vec::<Attribute>::deserialize(deserializer)?
            .into_iter()
            .map(|a| (a.name, a.value))
            .collect())
    }
}

/// A static host port a task needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPort {
    /// The port.
    pub port: u16,
    /// tcp or udp.
    pub protocol: TransportProtocol,
}

/// What placing one task needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRequest {
    /// The task group, for `distinctInstance`, `spread` and `task:group`: `service:<name>` or
    /// `family:<family>`.
    pub group: String,
    /// CPU units to reserve.
    pub cpu: u32,
    /// Memory to reserve, MiB.
    pub memory: u32,
    /// Static host ports to reserve.
    pub host_ports: Vec<HostPort>,
    /// Attributes the instance must have.
    #[serde(default)]
    pub required_attributes: Vec<String>,
}

impl TaskRequest {
    /// What a task of `definition` needs on an instance: [`TaskDefinition::reserved_cpu`] and
    /// [`TaskDefinition::reserved_memory`], and the static host ports of its network mode.
    pub fn for_task_definition(definition: &TaskDefinition, group: impl Into<String>) -> Self {
        let mode: NetworkMode = definition.network_mode;
        let mut host_ports: Vec<HostPort> = definition
            .container_definitions
            .iter()
            .flat_map(|c| &c.port_mappings)
            .filter_map(|mapping| {
                mapping.instance_port(mode).map(|port| HostPort {
                    port,
                    protocol: mapping.protocol(),
                })
            })
            .collect();
        host_ports.sort();
        host_ports.dedup();
        TaskRequest {
            group: group.into(),
            cpu: definition.reserved_cpu(),
            memory: definition.reserved_memory(),
            host_ports,
            required_attributes: Vec::new(),
        }
    }
}

/// A task already on an instance, as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacedTask {
    /// The instance.
    pub container_instance_arn: String,
    /// The task's group.
    pub group: String,
}

/// `distinctInstance` or `memberOf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementConstraintType {
    /// Each task of the group on a different instance.
    #[serde(rename = "distinctInstance")]
    DistinctInstance,
    /// Only instances that satisfy the expression.
    #[serde(rename = "memberOf")]
    MemberOf,
}

/// A placement constraint of `RunTask` or a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementConstraint {
    /// The kind.
    #[serde(rename = "type")]
    pub kind: PlacementConstraintType,
    /// For `memberOf`, a cluster query language expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

impl PlacementConstraint {
    /// `distinctInstance`.
    pub fn distinct_instance() -> PlacementConstraint {
        PlacementConstraint {
            kind: PlacementConstraintType::DistinctInstance,
            expression: None,
        }
    }

    /// `memberOf` with `expression`.
    pub fn member_of(expression: impl Into<String>) -> PlacementConstraint {
        PlacementConstraint {
            kind: PlacementConstraintType::MemberOf,
            expression: Some(expression.into()),
        }
    }
}

/// `binpack`, `spread` or `random`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementStrategyType {
    /// Least of a resource left.
    Binpack,
    /// Fewest tasks of the group per instance or attribute value.
    Spread,
    /// At random.
    Random,
}

/// A placement strategy of `RunTask` or a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementStrategy {
    /// The kind.
    #[serde(rename = "type")]
    pub kind: PlacementStrategyType,
    /// `cpu` or `memory` for binpack; `instanceId`, `host` or `attribute:<name>` for spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl PlacementStrategy {
    /// `binpack` on `field` (`cpu` or `memory`).
    pub fn binpack(field: impl Into<String>) -> PlacementStrategy {
        PlacementStrategy {
            kind: PlacementStrategyType::Binpack,
            field: Some(field.into()),
        }
    }

    /// `spread` on `field` (`instanceId`, `host` or `attribute:<name>`).
    pub fn spread(field: impl Into<String>) -> PlacementStrategy {
        PlacementStrategy {
            kind: PlacementStrategyType::Spread,
            field: Some(field.into()),
        }
    }

    /// `random`.
    pub fn random() -> PlacementStrategy {
        PlacementStrategy {
            kind: PlacementStrategyType::Random,
            field: None,
        }
    }
}

/// Constraints or strategies that ECS would refuse (`InvalidParameterException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPlacement {
    /// More than [`MAX_CONSTRAINTS`].
    #[error("Too many placement constraints: {count}. The maximum is 10.")]
    TooManyConstraints {
        /// How many.
        count: usize,
    },
    /// More than [`MAX_STRATEGIES`].
    #[error("Too many placement strategies: {count}. The maximum is 5.")]
    TooManyStrategies {
        /// How many.
        count: usize,
    },
    /// `distinctInstance` with an expression.
    #[error("A distinctInstance placement constraint cannot have an expression.")]
    DistinctInstanceWithExpression,
    /// `memberOf` without an expression.
    #[error("A memberOf placement constraint requires an expression.")]
    MemberOfWithoutExpression,
    /// A `memberOf` expression that does not parse.
    #[error("Invalid placement constraint expression '{expression}': {error}")]
    Expression {
        /// The expression.
        expression: String,
        /// Where and why.
        error: query::QueryError,
    },
    /// A strategy field that does not suit the strategy.
    #[error("Invalid placement strategy field '{field}' for {kind}: expected {expected}.")]
    StrategyField {
        /// binpack or spread.
        kind: &'static str,
        /// The field given (empty when missing).
        field: String,
        /// What the strategy takes.
        expected: &'static str,
    },
}

/// Why a container instance cannot take a task, as ECS spells it in `failures[].reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum FailureReason {
    /// The instance is DRAINING or INACTIVE.
    Inactive,
    /// The agent is disconnected.
    Agent,
    /// A required attribute is missing.
    Attribute,
    /// Not enough CPU units left.
    Cpu,
    /// Not enough memory left.
    Memory,
    /// A static host port is taken.
    Ports,
    /// A task of the group is already there.
    DistinctInstance,
    /// A `memberOf` expression is not satisfied.
    MemberOf,
}

impl FailureReason {
    /// ECS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Inactive => "INACTIVE",
            FailureReason::Agent => "AGENT",
            FailureReason::Attribute => "ATTRIBUTE",
            FailureReason::Cpu => "RESOURCE:CPU",
            FailureReason::Memory => "RESOURCE:MEMORY",
            FailureReason::Ports => "RESOURCE:PORTS",
            FailureReason::DistinctInstance => "DistinctInstance placement constraint unsatisfied.",
            FailureReason::MemberOf => "MemberOf placement constraint unsatisfied.",
        }
    }

    /// The end of the ECS service event sentence "The closest matching container-instance X
    /// ...".
    fn closest_match_phrase(self) -> &'static str {
        match self {
            FailureReason::Inactive => "is not ACTIVE",
            FailureReason::Agent => "encountered error \"AGENT\"",
            FailureReason::Attribute => "is missing an attribute required by your task",
            FailureReason::Cpu => "has insufficient CPU units available",
            FailureReason::Memory => "has insufficient memory available",
            FailureReason::Ports => "is already using a port required by your task",
            FailureReason::DistinctInstance => {
                "is already running a task of the group (distinctInstance)"
            }
            FailureReason::MemberOf => "does not satisfy the memberOf placement constraint",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<FailureReason> for String {
    fn from(reason: FailureReason) -> String {
        reason.as_str().to_owned()
    }
}

impl TryFrom<String> for FailureReason {
    type Error = String;

    fn try_from(text: String) -> Result<FailureReason, String> {
        [
            FailureReason::Inactive,
            FailureReason::Agent,
            FailureReason::Attribute,
            FailureReason::Cpu,
            FailureReason::Memory,
            FailureReason::Ports,
            FailureReason::DistinctInstance,
            FailureReason::MemberOf,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
        .ok_or_else(|| format!("unknown placement failure reason '{text}'"))
    }
}

/// A task that fits on no instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementFailure {
    /// The cluster has no container instances (ECS's `InvalidParameterException`).
    #[error("No Container Instances were found in your cluster.")]
    NoContainerInstances,
    /// Every instance failed a check: which, and why.
    #[error("no container instance met all of the task's requirements: {}", summarize(.rejections))]
    NoneFit {
        /// Each instance's ARN and the first check it failed.
        rejections: Vec<(String, FailureReason)>,
    },
}

fn summarize(rejections: &[(String, FailureReason)]) -> String {
    rejections
        .iter()
        .map(|(arn, reason)| format!("{} {reason}", short_id(arn)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn short_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

impl PlacementFailure {
    /// The failures as `RunTask` returns them: one per instance, with its ARN and reason.
    pub fn failures(&self) -> Vec<Failure> {
        match self {
            PlacementFailure::NoContainerInstances => Vec::new(),
            PlacementFailure::NoneFit { rejections } => rejections
                .iter()
                .map(|(arn, reason)| Failure {
                    arn: Some(arn.clone()),
                    reason: reason.to_string(),
                    detail: None,
                })
                .collect(),
        }
    }

    /// The instance that came closest (failed the latest check) and why.
    pub fn closest(&self) -> Option<(&str, FailureReason)> {
        match self {
            PlacementFailure::NoContainerInstances => None,
            PlacementFailure::NoneFit { rejections } => rejections
                .iter()
                .max_by_key(|(_, reason)| *reason)
                .map(|(arn, reason)| (arn.as_str(), *reason)),
        }
    }

    /// The event a service records when it cannot place a task, in ECS's words: "service web
    /// was unable to place a task because no container instance met all of its requirements.
    /// The closest matching container-instance 4f1a... has insufficient memory available."
    pub fn service_event_message(&self, service_name: &str) -> String {
        let head = format!(
            "service {service_name} was unable to place a task because no container instance met \
             all of its requirements."
        );
        match self.closest() {
            Some((arn, reason)) => format!(
                "{head} The closest matching container-instance {} {}.",
                short_id(arn),
                reason.closest_match_phrase()
            ),
            None => format!("{head} Reason: No Container Instances were found in your cluster."),
        }
    }
}

/// Where a task was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// The instance's ARN.
    pub container_instance_arn: String,
    /// The instance's index in the slice given.
    #[serde(skip)]
    pub index: usize,
}

/// What `place_tasks` did: the placements, in order, and, for the tasks left unplaced, the
/// failures (one per instance and reason, as `RunTask` lists them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementOutcome {
    /// One per placed task.
    pub placements: Vec<Placement>,
    /// How many tasks could not be placed.
    pub unplaced: usize,
    /// Why, when `unplaced` is not zero: the first failure.
    pub failure: Option<PlacementFailure>,
}

impl PlacementOutcome {
    /// The `failures` list of a `RunTask` response.
    pub fn failures(&self) -> Vec<Failure> {
        self.failure
            .as_ref()
            .map(PlacementFailure::failures)
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
enum Constraint {
    DistinctInstance,
    MemberOf(Expression),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Strategy {
    BinpackCpu,
    BinpackMemory,
    SpreadInstance,
    SpreadAttribute(String),
    Random,
}

/// Checked constraints and strategies, ready to place tasks.
#[derive(Debug, Clone)]
pub struct PlacementPolicy {
    constraints: Vec<Constraint>,
    strategies: Vec<Strategy>,
}

impl PlacementPolicy {
    /// Checks the constraints and strategies (including the task definition's `memberOf`
    /// constraints, which the caller adds as [`PlacementConstraint::member_of`]).
    pub fn new(
        constraints: &[PlacementConstraint],
        strategies: &[PlacementStrategy],
    ) -> Result<PlacementPolicy, InvalidPlacement> {
        if constraints.len() > MAX_CONSTRAINTS {
            return Err(InvalidPlacement::TooManyConstraints {
                count: constraints.len(),
            });
        }
        if strategies.len() > MAX_STRATEGIES {
            return Err(InvalidPlacement::TooManyStrategies {
                count: strategies.len(),
            });
        }
        let constraints = constraints
            .iter()
            .map(|constraint| match constraint.kind {
                PlacementConstraintType::DistinctInstance => match &constraint.expression {
                    Some(e) if !e.trim().is_empty() => {
                        Err(InvalidPlacement::DistinctInstanceWithExpression)
                    }
                    _ => Ok(Constraint::DistinctInstance),
                },
                PlacementConstraintType::MemberOf => {
                    let expression = constraint
                        .expression
                        .as_deref()
                        .filter(|e| !e.trim().is_empty())
                        .ok_or(InvalidPlacement::MemberOfWithoutExpression)?;
                    Expression::parse(expression)
                        .map(Constraint::MemberOf)
                        .map_err(|error| InvalidPlacement::Expression {
                            expression: expression.to_owned(),
                            error,
                        })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let strategies = strategies
            .iter()
            .map(compile_strategy)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PlacementPolicy {
            constraints,
            strategies,
        })
    }

    /// Places one task on one of `instances`, given the tasks already placed (`running`, for
    /// `distinctInstance`, `spread` and `task:group`).
    pub fn place<R: Rng + ?Sized>(
        &self,
        request: &TaskRequest,
        instances: &[ContainerInstance],
        running: &[PlacedTask],
        rng: &mut R,
    ) -> Result<Placement, PlacementFailure> {
        if instances.is_empty() {
            return Err(PlacementFailure::NoContainerInstances);
        }
        let groups = groups_by_instance(running);
        let mut candidates = Vec::new();
        let mut rejections = Vec::new();
        for (index, instance) in instances.iter().enumerate() {
            match self.check(request, instance, &groups) {
                Ok(()) => candidates.push(index),
                Err(reason) => rejections.push((instance.container_instance_arn.clone(), reason)),
            }
        }
        if candidates.is_empty() {
            return Err(PlacementFailure::NoneFit { rejections });
        }
        for strategy in &self.strategies {
            if candidates.len() == 1 {
                break;
            }
            candidates = apply(strategy, candidates, request, instances, running, rng);
        }
        let index = candidates[rng.gen_range(0..candidates.len())];
        Ok(Placement {
            container_instance_arn: instances[index].container_instance_arn.clone(),
            index,
        })
    }

    /// Places `count` tasks one after the other, reserving each on its instance
    /// ([`ContainerInstance::reserve`]) before placing the next, so that `instances` shows
    /// what is left afterwards.
    pub fn place_tasks<R: Rng + ?Sized>(
        &self,
        request: &TaskRequest,
        count: usize,
        instances: &mut [ContainerInstance],
        running: &[PlacedTask],
        rng: &mut R,
    ) -> PlacementOutcome {
        let mut placed = running.to_vec();
        let mut outcome = PlacementOutcome::default();
        for _ in 0..count {
            match self.place(request, instances, &placed, rng) {
                Ok(placement) => {
                    instances[placement.index].reserve(request);
                    placed.push(PlacedTask {
                        container_instance_arn: placement.container_instance_arn.clone(),
                        group: request.group.clone(),
                    });
                    outcome.placements.push(placement);
                }
                Err(failure) => {
                    outcome.unplaced += 1;
                    outcome.failure.get_or_insert(failure);
                }
            }
        }
        outcome
    }

    /// The first check `instance` fails for `request`, in ECS's order.
    fn check(
        &self,
        request: &TaskRequest,
        instance: &ContainerInstance,
        groups: &HashMap<&str, Vec<&str>>,
    ) -> Result<(), FailureReason> {
        if instance.status != ContainerInstanceStatus::Active {
            return Err(FailureReason::Inactive);
        }
        if !instance.agent_connected {
            return Err(FailureReason::Agent);
        }
        if request
            .required_attributes
            .iter()
            .any(|name| !instance.attributes.contains_key(name))
        {
            return Err(FailureReason::Attribute);
        }
        instance.check_resources(request)?;
        let here = groups
            .get(instance.container_instance_arn.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let view = InstanceView {
            instance,
            groups: here,
        };
        for constraint in &self.constraints {
            match constraint {
                Constraint::DistinctInstance => {
                    if here.contains(&request.group.as_str()) {
                        return Err(FailureReason::DistinctInstance);
                    }
                }
                Constraint::MemberOf(expression) => {
                    if !expression.matches(&view) {
                        return Err(FailureReason::MemberOf);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why [`place`] placed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// The constraints or strategies are invalid.
    #[error(transparent)]
    Invalid(#[from] InvalidPlacement),
    /// The task fits nowhere.
    #[error(transparent)]
    Failed(#[from] PlacementFailure),
}

/// Places one task with constraints and strategies given as `RunTask` takes them: checks them
/// ([`PlacementPolicy::new`]) and places ([`PlacementPolicy::place`]).
pub fn place<R: Rng + ?Sized>(
    request: &TaskRequest,
    instances: &[ContainerInstance],
    running: &[PlacedTask],
    constraints: &[PlacementConstraint],
    strategies: &[PlacementStrategy],
    rng: &mut R,
) -> Result<Placement, PlaceError> {
    let policy = PlacementPolicy::new(constraints, strategies)?;
    Ok(policy.place(request, instances, running, rng)?)
}

fn compile_strategy(strategy: &PlacementStrategy) -> Result<Strategy, InvalidPlacement> {
    let field = strategy.field.as_deref().unwrap_or("");
    match strategy.kind {
        PlacementStrategyType::Binpack => match field.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Strategy::BinpackCpu),
            "memory" => Ok(Strategy::BinpackMemory),
            _ => Err(InvalidPlacement::StrategyField {
                kind: "binpack",
                field: field.to_owned(),
                expected: "cpu or memory",
            }),
        },
        PlacementStrategyType::Spread => {
            if field.eq_ignore_ascii_case("instanceId") || field.eq_ignore_ascii_case("host") {
                return Ok(Strategy::SpreadInstance);
            }
            match field.strip_prefix("attribute:") {
                Some(name) if !name.is_empty() => Ok(Strategy::SpreadAttribute(name.to_owned())),
                _ => Err(InvalidPlacement::StrategyField {
                    kind: "spread",
                    field: field.to_owned(),
                    expected: "instanceId, host or attribute:<name>",
                }),
            }
        }
        // ECS ignores the field of a random strategy.
        PlacementStrategyType::Random => Ok(Strategy::Random),
    }
}

/// The groups of the tasks on each instance.
fn groups_by_instance(running: &[PlacedTask]) -> HashMap<&str, Vec<&str>> {
    let mut groups: HashMap<&str, Vec<&str>> = HashMap::new();
    for task in running {
        groups
            .entry(task.container_instance_arn.as_str())
            .or_default()
            .push(task.group.as_str());
    }
    groups
}

/// Keeps the candidates that tie for the strategy's best.
fn apply<R: Rng + ?Sized>(
    strategy: &Strategy,
    candidates: Vec<usize>,
    request: &TaskRequest,
    instances: &[ContainerInstance],
    running: &[PlacedTask],
    rng: &mut R,
) -> Vec<usize> {
    let in_group = |arn: &str| {
        running
            .iter()
            .filter(|t| t.group == request.group && t.container_instance_arn == arn)
            .count()
    };
    let score: Box<dyn Fn(usize) -> u64 + '_> = match strategy {
        Strategy::BinpackCpu => Box::new(|i| u64::from(instances[i].remaining_resources.cpu)),
        Strategy::BinpackMemory => Box::new(|i| u64::from(instances[i].remaining_resources.memory)),
        Strategy::SpreadInstance => {
            Box::new(|i| in_group(&instances[i].container_instance_arn) as u64)
        }
        Strategy::SpreadAttribute(name) => {
            // Tasks of the group per value of the attribute, over every instance of the cluster
            // (an instance without the attribute counts under "no value").
            let mut per_value: HashMap<Option<&str>, u64> = HashMap::new();
            for instance in instances {
                *per_value.entry(instance.attribute_value(name)).or_default() +=
                    in_group(&instance.container_instance_arn) as u64;
            }
            Box::new(move |i| {
                per_value
                    .get(&instances[i].attribute_value(name))
                    .copied()
                    .unwrap_or(0)
            })
        }
        Strategy::Random => {
            return vec![candidates[rng.gen_range(0..candidates.len())]];
        }
    };
    let best = candidates.iter().map(|&i| score(i)).min().unwrap_or(0);
    candidates
        .into_iter()
        .filter(|&i| score(i) == best)
        .collect()
}

/// A container instance and the groups of its tasks, as the query language sees them.
struct InstanceView<'a> {
    instance: &'a ContainerInstance,
    groups: &'a [&'a str],
}

impl Candidate for InstanceView<'_> {
    fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.instance
            .attributes
            .get(name)
            .map(|value| value.as_deref())
    }

    fn agent_connected(&self) -> bool {
        self.instance.agent_connected
    }

    fn agent_version(&self) -> Option<&str> {
        self.instance.version_info.agent_version.as_deref()
    }

    fn ec2_instance_id(&self) -> &str {
        &self.instance.ec2_instance_id
    }

    fn registered_at(&self) -> Timestamp {
        self.instance.registered_at
    }

    fn running_tasks_count(&self) -> u32 {
        self.instance.running_tasks_count
    }

    fn task_groups(&self) -> Vec<&str> {
        self.groups.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::arn;
    use crate::ecs::taskdef::{RegisterTaskDefinition, TaskDefinition};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn instance(id: &str, cpu: u32, memory: u32, zone: &str) -> ContainerInstance {
        ContainerInstance::new(
            arn::container_instance("default", id),
            format!("i-{id}"),
            cpu,
            memory,
            ContainerInstance::DEFAULT_RESERVED_PORTS,
            Timestamp::from_secs(1_700_000_000),
        )
        .with_attribute("ecs.availability-zone", zone)
        .with_attribute("ecs.instance-type", "m5.large")
        .with_attribute("ecs.os-type", "linux")
    }

    fn request(cpu: u32, memory: u32) -> TaskRequest {
        TaskRequest {
            group: "family:web".into(),
            cpu,
            memory,
            host_ports: vec![],
            required_attributes: vec![],
        }
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn policy(
        constraints: &[PlacementConstraint],
        strategies: &[PlacementStrategy],
    ) -> PlacementPolicy {
        PlacementPolicy::new(constraints, strategies).unwrap()
    }

    fn ids(instances: &[ContainerInstance], placements: &[Placement]) -> Vec<String> {
        placements
            .iter()
            .map(|p| instances[p.index].ec2_instance_id.clone())
            .collect()
    }

    #[test]
    fn binpack_memory_takes_the_fullest_instance_that_fits() {
        let instances = vec![
            instance("a", 2048, 4096, "z1"),
            instance("b", 2048, 1024, "z1"),
            instance("c", 2048, 2048, "z1"),
        ];
        let policy = policy(&[], &[PlacementStrategy::binpack("memory")]);
        let placed = policy
            .place(&request(256, 512), &instances, &[], &mut rng())
            .unwrap();
        assert_eq!(
            placed.container_instance_arn,
            instances[1].container_instance_arn
        );
        // 1500 MiB only fits a and c: c has less left.
        let placed = policy
            .place(&request(256, 1500), &instances, &[], &mut rng())
            .unwrap();
        assert_eq!(placed.index, 2);
    }

    #[test]
    fn binpack_fills_one_instance_before_the_next() {
        let mut instances = vec![
            instance("a", 1024, 2048, "z1"),
            instance("b", 1024, 2048, "z1"),
        ];
        let policy = policy(&[], &[PlacementStrategy::binpack("cpu")]);
        let outcome = policy.place_tasks(&request(512, 256), 4, &mut instances, &[], &mut rng());
        assert_eq!(outcome.unplaced, 0);
        let order = ids(&instances, &outcome.placements);
        // The first placement is a tie; after it, that instance is the fuller one until full.
        assert_eq!(order[0], order[1]);
        assert_eq!(order[2], order[3]);
        assert_ne!(order[0], order[2]);
        assert!(instances.iter().all(|i| i.remaining_resources.cpu == 0));
        assert!(instances.iter().all(|i| i.pending_tasks_count == 2));
    }

    #[test]
    fn spread_across_zones_counts_tasks_of_the_group() {
        let instances = vec![
            instance("a", 4096, 8192, "us-east-1a"),
            instance("b", 4096, 8192, "us-east-1a"),
            instance("c", 4096, 8192, "us-east-1b"),
        ];
        let running = vec![
            PlacedTask {
                container_instance_arn: instances[0].container_instance_arn.clone(),
                group: "family:web".into(),
            },
            // Another group's tasks do not count.
            PlacedTask {
                container_instance_arn: instances[2].container_instance_arn.clone(),
                group: "service:db".into(),
            },
            PlacedTask {
                container_instance_arn: instances[2].container_instance_arn.clone(),
                group: "service:db".into(),
            },
        ];
        let policy = policy(
            &[],
            &[PlacementStrategy::spread("attribute:ecs.availability-zone")],
        );
        let placed = policy
            .place(&request(256, 512), &instances, &running, &mut rng())
            .unwrap();
        assert_eq!(placed.index, 2);
    }

    #[test]
    fn spread_evenly_over_zones_then_instances() {
        let mut instances = vec![
            instance("a", 4096, 8192, "z1"),
            instance("b", 4096, 8192, "z1"),
            instance("c", 4096, 8192, "z2"),
            instance("d", 4096, 8192, "z2"),
        ];
        let policy = policy(
            &[],
            &[
                PlacementStrategy::spread("attribute:ecs.availability-zone"),
                PlacementStrategy::spread("instanceId"),
            ],
        );
        let outcome = policy.place_tasks(&request(256, 512), 8, &mut instances, &[], &mut rng());
        assert_eq!(outcome.placements.len(), 8);
        for instance in &instances {
            assert_eq!(
                instance.pending_tasks_count, 2,
                "{}",
                instance.ec2_instance_id
            );
        }
        // After every pair of placements the zones are level.
        for pair in outcome.placements.chunks(2) {
            let zones: BTreeSet<_> = pair
                .iter()
                .map(|p| {
                    instances[p.index]
                        .attribute_value("ecs.availability-zone")
                        .unwrap()
                })
                .collect();
            assert_eq!(zones.len(), 2);
        }
    }

    #[test]
    fn spread_then_binpack_within_the_zone() {
        let mut small = instance("small", 4096, 1024, "z1");
        small.remaining_resources.memory = 768;
        let instances = vec![
            instance("big", 4096, 8192, "z1"),
            small,
            instance("other", 4096, 8192, "z2"),
        ];
        let running = vec![PlacedTask {
            container_instance_arn: instances[2].container_instance_arn.clone(),
            group: "family:web".into(),
        }];
        let policy = policy(
            &[],
            &[
                PlacementStrategy::spread("attribute:ecs.availability-zone"),
                PlacementStrategy::binpack("memory"),
            ],
        );
        let placed = policy
            .place(&request(256, 512), &instances, &running, &mut rng())
            .unwrap();
        assert_eq!(placed.index, 1);
    }

    #[test]
    fn resources_are_filtered_with_ecs_reasons() {
        let mut instances = vec![instance("a", 512, 4096, "z"), instance("b", 4096, 256, "z")];
        let failure = policy(&[], &[])
            .place(&request(1024, 512), &instances, &[], &mut rng())
            .unwrap_err();
        assert_eq!(
            failure.failures(),
            vec![
                Failure {
                    arn: Some(instances[0].container_instance_arn.clone()),
                    reason: "RESOURCE:CPU".into(),
                    detail: None,
                },
                Failure {
                    arn: Some(instances[1].container_instance_arn.clone()),
                    reason: "RESOURCE:MEMORY".into(),
                    detail: None,
                },
            ]
        );
        instances[0].agent_connected = false;
        instances[1].status = ContainerInstanceStatus::Draining;
        let failure = policy(&[], &[])
            .place(&request(1, 1), &instances, &[], &mut rng())
            .unwrap_err();
        let reasons: Vec<String> = failure.failures().into_iter().map(|f| f.reason).collect();
        assert_eq!(reasons, ["AGENT", "INACTIVE"]);
    }

    #[test]
    fn static_host_ports_are_reserved_per_protocol() {
        let mut instances = vec![instance("a", 4096, 8192, "z")];
        let mut web = request(256, 256);
        web.host_ports = vec![HostPort {
            port: 80,
            protocol: TransportProtocol::Tcp,
        }];
        let policy = policy(&[], &[]);
        let outcome = policy.place_tasks(&web, 2, &mut instances, &[], &mut rng());
        assert_eq!((outcome.placements.len(), outcome.unplaced), (1, 1));
        assert_eq!(outcome.failures()[0].reason, "RESOURCE:PORTS");
        assert!(instances[0].remaining_resources.ports.contains(&80));
        // The same number over UDP is free.
        let mut dns = request(256, 256);
        dns.host_ports = vec![HostPort {
            port: 80,
            protocol: TransportProtocol::Udp,
        }];
        assert!(policy.place(&dns, &instances, &[], &mut rng()).is_ok());
        // The agent's reserved ports are taken from the start.
        let mut ssh = request(1, 1);
        ssh.host_ports = vec![HostPort {
            port: 22,
            protocol: TransportProtocol::Tcp,
        }];
        assert!(policy.place(&ssh, &instances, &[], &mut rng()).is_err());
        // Releasing the task frees its port but never the reserved ones.
        instances[0].release(&web, false);
        assert!(!instances[0].remaining_resources.ports.contains(&80));
        assert!(instances[0].remaining_resources.ports.contains(&22));
        assert_eq!(instances[0].remaining_resources.cpu, 4096);
    }

    #[test]
    fn distinct_instance_keeps_a_group_apart() {
        let mut instances = vec![
            instance("a", 4096, 8192, "z"),
            instance("b", 4096, 8192, "z"),
        ];
        let policy = policy(&[PlacementConstraint::distinct_instance()], &[]);
        let outcome = policy.place_tasks(&request(256, 256), 3, &mut instances, &[], &mut rng());
        assert_eq!(outcome.placements.len(), 2);
        assert_ne!(outcome.placements[0].index, outcome.placements[1].index);
        assert_eq!(outcome.unplaced, 1);
        let reasons: Vec<String> = outcome.failures().into_iter().map(|f| f.reason).collect();
        assert_eq!(
            reasons,
            [
                "DistinctInstance placement constraint unsatisfied.",
                "DistinctInstance placement constraint unsatisfied."
            ]
        );
        // Another group can still go anywhere.
        let mut other = request(256, 256);
        other.group = "family:batch".into();
        let running: Vec<PlacedTask> = outcome
            .placements
            .iter()
            .map(|p| PlacedTask {
                container_instance_arn: p.container_instance_arn.clone(),
                group: "family:web".into(),
            })
            .collect();
        assert!(
            policy
                .place(&other, &instances, &running, &mut rng())
                .is_ok()
        );
    }

    #[test]
    fn member_of_filters_by_expression() {
        let instances = vec![
            instance("a", 4096, 8192, "us-east-1a").with_attribute("ecs.instance-type", "t2.small"),
            instance("b", 4096, 8192, "us-east-1d")
                .with_attribute("ecs.instance-type", "t2.medium"),
            instance("c", 4096, 8192, "us-east-1a"),
        ];
        let policy = policy(
            &[PlacementConstraint::member_of(
                "attribute:ecs.instance-type =~ t2.* and attribute:ecs.availability-zone != us-east-1d",
            )],
            &[],
        );
        for seed in 0..8 {
            let placed = policy
                .place(
                    &request(1, 1),
                    &instances,
                    &[],
                    &mut StdRng::seed_from_u64(seed),
                )
                .unwrap();
            assert_eq!(placed.index, 0);
        }
        let failure = policy
            .place(&request(8192, 1), &instances, &[], &mut rng())
            .unwrap_err();
        let reasons: Vec<String> = failure.failures().into_iter().map(|f| f.reason).collect();
        assert_eq!(reasons, ["RESOURCE:CPU", "RESOURCE:CPU", "RESOURCE:CPU"]);
    }

    #[test]
    fn member_of_task_group_affinity() {
        let instances = vec![
            instance("a", 4096, 8192, "z"),
            instance("b", 4096, 8192, "z"),
        ];
        let running = vec![PlacedTask {
            container_instance_arn: instances[1].container_instance_arn.clone(),
            group: "service:db".into(),
        }];
        let near_db = policy(
            &[PlacementConstraint::member_of("task:group == service:db")],
            &[],
        );
        let placed = near_db
            .place(&request(1, 1), &instances, &running, &mut rng())
            .unwrap();
        assert_eq!(placed.index, 1);
        let away = policy(
            &[PlacementConstraint::member_of(
                "not(task:group == service:db)",
            )],
            &[],
        );
        let placed = away
            .place(&request(1, 1), &instances, &running, &mut rng())
            .unwrap();
        assert_eq!(placed.index, 0);
    }

    #[test]
    fn required_attributes_are_checked() {
        let instances = vec![instance("a", 4096, 8192, "z")];
        let mut needs_eni = request(1, 1);
        needs_eni.required_attributes = vec!["ecs.capability.task-eni".into()];
        let failure = policy(&[], &[])
            .place(&needs_eni, &instances, &[], &mut rng())
            .unwrap_err();
        assert_eq!(failure.failures()[0].reason, "ATTRIBUTE");
    }

    #[test]
    fn random_picks_among_all_that_fit() {
        let instances: Vec<_> = (0..4)
            .map(|i| instance(&format!("n{i}"), 4096, 8192, "z"))
            .collect();
        let policy = policy(&[], &[PlacementStrategy::random()]);
        let mut rng = rng();
        let seen: BTreeSet<usize> = (0..64)
            .map(|_| {
                policy
                    .place(&request(1, 1), &instances, &[], &mut rng)
                    .unwrap()
                    .index
            })
            .collect();
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn no_instances_is_its_own_failure() {
        let failure = policy(&[], &[])
            .place(&request(1, 1), &[], &[], &mut rng())
            .unwrap_err();
        assert_eq!(failure, PlacementFailure::NoContainerInstances);
        assert_eq!(
            failure.to_string(),
            "No Container Instances were found in your cluster."
        );
        assert!(failure.failures().is_empty());
    }

    #[test]
    fn service_event_names_the_closest_instance() {
        let instances = vec![
            instance("aaa", 512, 8192, "z"),
            instance("bbb", 4096, 256, "z"),
        ];
        let failure = policy(&[], &[])
            .place(&request(1024, 512), &instances, &[], &mut rng())
            .unwrap_err();
        assert_eq!(
            failure.service_event_message("web"),
            "service web was unable to place a task because no container instance met all of its \
             requirements. The closest matching container-instance bbb has insufficient memory \
             available."
        );
        assert_eq!(
            failure.to_string(),
            "no container instance met all of the task's requirements: aaa RESOURCE:CPU, bbb \
             RESOURCE:MEMORY"
        );
    }

    #[test]
    fn invalid_constraints_and_strategies_are_refused() {
        let err = PlacementPolicy::new(&[PlacementConstraint::member_of("attribute:x ==")], &[])
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Invalid placement constraint expression 'attribute:x ==': column 15"),
            "{err}"
        );
        let err = PlacementPolicy::new(
            &[PlacementConstraint {
                kind: PlacementConstraintType::MemberOf,
                expression: None,
            }],
            &[],
        )
        .unwrap_err();
        assert_eq!(err, InvalidPlacement::MemberOfWithoutExpression);
        let err = PlacementPolicy::new(
            &[PlacementConstraint {
                kind: PlacementConstraintType::DistinctInstance,
                expression: Some("attribute:x exists".into()),
            }],
            &[],
        )
        .unwrap_err();
        assert_eq!(err, InvalidPlacement::DistinctInstanceWithExpression);
        let err = PlacementPolicy::new(&[], &[PlacementStrategy::binpack("disk")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid placement strategy field 'disk' for binpack: expected cpu or memory."
        );
        let err = PlacementPolicy::new(&[], &[PlacementStrategy::spread("zone")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected instanceId, host or attribute:<name>")
        );
        assert!(PlacementPolicy::new(&[], &[PlacementStrategy::spread("host")]).is_ok());
        let six = vec![PlacementStrategy::random(); 6];
        assert_eq!(
            PlacementPolicy::new(&[], &six).unwrap_err(),
            InvalidPlacement::TooManyStrategies { count: 6 }
        );
        let eleven = vec![PlacementConstraint::distinct_instance(); 11];
        assert_eq!(
            PlacementPolicy::new(&eleven, &[]).unwrap_err(),
            InvalidPlacement::TooManyConstraints { count: 11 }
        );
    }

    #[test]
    fn place_checks_then_places() {
        let instances = vec![instance("a", 4096, 8192, "z")];
        let placed = place(
            &request(1, 1),
            &instances,
            &[],
            &[PlacementConstraint::member_of(
                "attribute:ecs.os-type == linux",
            )],
            &[PlacementStrategy::binpack("memory")],
            &mut rng(),
        )
        .unwrap();
        assert_eq!(placed.index, 0);
        let invalid = place(
            &request(1, 1),
            &instances,
            &[],
            &[],
            &[PlacementStrategy::binpack("x")],
            &mut rng(),
        );
        assert!(
            matches!(invalid, Err(PlaceError::Invalid(_))),
            "{invalid:?}"
        );
        let full = place(&request(9999, 1), &instances, &[], &[], &[], &mut rng());
        assert_eq!(
            full.unwrap_err().to_string(),
            "no container instance met all of the task's requirements: a RESOURCE:CPU"
        );
    }

    #[test]
    fn task_request_from_a_task_definition() {
        let request = RegisterTaskDefinition::from_json(
            r#"{"family": "web", "networkMode": "bridge", "containerDefinitions": [
                {"name": "app", "image": "nginx", "cpu": 256, "memoryReservation": 300, "memory": 512,
                 "portMappings": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 443}]},
                {"name": "dns", "image": "coredns", "cpu": 128, "memory": 64,
                 "portMappings": [{"containerPort": 53, "hostPort": 53, "protocol": "udp"}]}
            ]}"#,
        )
        .unwrap();
        let td = TaskDefinition::register(request, 1, Timestamp::EPOCH).unwrap();
        let task = TaskRequest::for_task_definition(&td, "family:web");
        assert_eq!((task.cpu, task.memory), (384, 364));
        assert_eq!(
            task.host_ports,
            vec![
                HostPort {
                    port: 53,
                    protocol: TransportProtocol::Udp
                },
                HostPort {
                    port: 8080,
                    protocol: TransportProtocol::Tcp
                },
            ]
        );

        let awsvpc = RegisterTaskDefinition::from_json(
            r#"{"family": "web", "networkMode": "awsvpc", "cpu": "512", "memory": "1GB",
                "containerDefinitions": [{"name": "app", "image": "nginx", "portMappings": [{"containerPort": 80}]}]}"#,
        )
        .unwrap();
        let td = TaskDefinition::register(awsvpc, 1, Timestamp::EPOCH).unwrap();
        let task = TaskRequest::for_task_definition(&td, "family:web");
        assert_eq!(
            (task.cpu, task.memory, task.host_ports.len()),
            (512, 1024, 0)
        );
    }

    #[test]
    fn container_instances_serialize_as_ecs_describes_them() {
        let mut instance = instance("a", 2048, 7680, "us-east-1a");
        instance
            .attributes
            .insert("ecs.capability.task-eni".into(), None);
        instance.version_info.agent_version = Some("1.80.0".into());
        instance.reserve(&TaskRequest {
            host_ports: vec![HostPort {
                port: 8080,
                protocol: TransportProtocol::Tcp,
            }],
            ..request(512, 1024)
        });
        let json = serde_json::to_value(&instance).unwrap();
        assert_eq!(
            json["containerInstanceArn"],
            instance.container_instance_arn
        );
        assert_eq!(json["ec2InstanceId"], "i-a");
        assert_eq!(json["status"], "ACTIVE");
        assert_eq!(json["agentConnected"], true);
        assert_eq!(json["registeredResources"][0]["name"], "CPU");
        assert_eq!(json["registeredResources"][0]["type"], "INTEGER");
        assert_eq!(json["registeredResources"][0]["integerValue"], 2048);
        assert_eq!(json["remainingResources"][0]["integerValue"], 1536);
        assert_eq!(json["remainingResources"][1]["integerValue"], 6656);
        assert_eq!(json["remainingResources"][2]["name"], "PORTS");
        assert_eq!(json["remainingResources"][2]["type"], "STRINGSET");
        assert_eq!(
            json["remainingResources"][2]["stringSetValue"],
            serde_json::json!(["22", "2375", "2376", "8080", "51678", "51679"])
        );
        assert_eq!(json["attributes"][0]["name"], "ecs.availability-zone");
        assert_eq!(json["attributes"][0]["value"], "us-east-1a");
        assert!(
            json["attributes"][1].get("value").is_none(),
            "{}",
            json["attributes"]
        );
        assert_eq!(json["pendingTasksCount"], 1);
        assert_eq!(json["versionInfo"]["agentVersion"], "1.80.0");
        let back: ContainerInstance = serde_json::from_value(json).unwrap();
        assert_eq!(back, instance);
    }

    #[test]
    fn started_and_released_tasks_move_between_counts() {
        let mut instance = instance("a", 1024, 1024, "z");
        let task = request(512, 512);
        instance.reserve(&task);
        instance.task_started();
        assert_eq!(
            (instance.pending_tasks_count, instance.running_tasks_count),
            (0, 1)
        );
        instance.release(&task, true);
        assert_eq!(
            (instance.pending_tasks_count, instance.running_tasks_count),
            (0, 0)
        );
        assert_eq!(instance.remaining_resources, instance.registered_resources);
    }

    #[test]
    fn failure_reasons_round_trip_as_ecs_strings() {
        let json = serde_json::to_string(&FailureReason::Memory).unwrap();
        assert_eq!(json, "\"RESOURCE:MEMORY\"");
        assert_eq!(
            serde_json::from_str::<FailureReason>(&json).unwrap(),
            FailureReason::Memory
        );
        assert!(serde_json::from_str::<FailureReason>("\"RESOURCE:GPU\"").is_err());
        let strategy: PlacementStrategy = serde_json::from_str(
            r#"{"type": "spread", "field": "attribute:ecs.availability-zone"}"#,
        )
        .unwrap();
        assert_eq!(
            strategy,
            PlacementStrategy::spread("attribute:ecs.availability-zone")
        );
        let constraint: PlacementConstraint =
            serde_json::from_str(r#"{"type": "distinctInstance"}"#).unwrap();
        assert_eq!(constraint, PlacementConstraint::distinct_instance());
    }
}
