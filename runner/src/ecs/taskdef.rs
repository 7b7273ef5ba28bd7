//! Task definitions: the `RegisterTaskDefinition` input and the registered `TaskDefinition`.
//!
//! [`RegisterTaskDefinition`] is ECS's request body, field for field, with ECS's camelCase names.
//! Like ECS, it refuses fields it does not know ([`RegisterTaskDefinition::from_json`] names the
//! field and where it is), so that a misspelt `memoryReservaton` is an error rather than a
//! silently missing limit. It accepts what ECS accepts, and a little more: task-level `cpu` and
//! `memory` may be JSON numbers as well as the strings ECS's API takes.
//!
//! [`TaskDefinition::register`] validates a request (see [`super::validate`]) and gives the
//! registered definition as `DescribeTaskDefinition` returns it:
//! - `taskDefinitionArn` `arn:aws:ecs:local:000000000000:task-definition/<family>:<revision>`,
//!   `revision`, `status` ACTIVE, `registeredAt`;
//! - task `cpu` in CPU units and `memory` in MiB, as strings of digits (`"0.25 vCPU"` becomes
//!   `"256"`, `"1 GB"` becomes `"1024"`);
//! - `networkMode` resolved (`bridge` when none was given, as on EC2 Linux);
//! - `compatibilities`: EC2 always, and FARGATE when the definition meets Fargate's rules;
//! - the container defaults ECS fills in: `essential` true, port mappings with `protocol` tcp and
//!   `hostPort` (the container port in `awsvpc` and `host` modes, 0 for a dynamic port in `bridge`
//!   mode), health checks with `interval` 30, `timeout` 5 and `retries` 3.
//!
//! `requiresAttributes` is not computed: berth's instances all run the same agent.
//!
//! `privileged` is parsed, so that ECS task definitions that carry `"privileged": false` load, but
//! validation refuses `"privileged": true`: berth runs no privileged containers.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use super::validate::{self, ValidationError};
use super::{Tag, Timestamp, arn};

/// The body of ECS's `RegisterTaskDefinition` call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterTaskDefinition {
    /// The family: up to 255 letters, numbers, hyphens and underscores. Each registration in a
    /// family gets the next revision.
    #[serde(default)]
    pub family: String,
    /// The IAM role the task's containers assume (served by the task's credentials endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    /// The role the agent uses to pull images and fetch secrets for the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    /// `bridge`, `host`, `awsvpc` or `none`; `bridge` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
    /// The containers of the task (1 to 10).
    #[serde(default)]
    pub container_definitions: Vec<ContainerDefinition>,
    /// Volumes that containers mount with `mountPoints`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// `memberOf` constraints applied whenever a task of this definition is placed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_constraints: Vec<TaskDefinitionPlacementConstraint>,
    /// The launch types the definition must be valid for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires_compatibilities: Vec<Compatibility>,
    /// Task CPU: CPU units (`"1024"`) or vCPUs (`"1 vCPU"`, `"0.25 vcpu"`).
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu: Option<String>,
    /// Task memory: MiB (`"2048"`) or GB (`"2 GB"`, `"2GB"`, `"0.5 GB"`).
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<String>,
    /// The PID namespace the containers use: `host` or `task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_mode: Option<PidMode>,
    /// The IPC namespace the containers use: `host`, `task` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc_mode: Option<IpcMode>,
    /// The operating system and CPU architecture the task needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_platform: Option<RuntimePlatform>,
    /// The task's ephemeral storage on Fargate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<EphemeralStorage>,
    /// Tags of the task definition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

impl RegisterTaskDefinition {
    /// Parses a `RegisterTaskDefinition` JSON body (what `aws ecs register-task-definition
    /// --cli-input-json` takes). Unknown fields are refused, naming the field and its line.
    pub fn from_json(json: &str) -> Result<RegisterTaskDefinition, ParseError> {
        serde_json::from_str(json).map_err(|source| ParseError {
            message: source.to_string(),
            line: source.line(),
            column: source.column(),
        })
    }
}

/// A task definition body that is not valid JSON for `RegisterTaskDefinition`: bad syntax, a
/// field ECS does not know, a value of the wrong type or an unknown enum value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid task definition JSON: {message}")]
pub struct ParseError {
    /// serde's description, which names the field or value and ends with the position.
    pub message: String,
    /// The line of the error, from 1.
    pub line: usize,
    /// The column of the error, from 1.
    pub column: usize,
}

/// A container of a task, as `containerDefinitions[]` describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerDefinition {
    /// The container's name, unique in the task: up to 255 letters, numbers, hyphens and
    /// underscores.
    #[serde(default)]
    pub name: String,
    /// The image reference the container runs.
    #[serde(default)]
    pub image: String,
    /// Whether the task stops when this container stops. `true` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub essential: Option<bool>,
    /// Overrides the image's ENTRYPOINT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<Vec<String>>,
    /// Overrides the image's CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment variables.
    #[serde(default)]
    pub environment: Vec<KeyValuePair>,
    /// Environment variables whose values come from a secret store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
    /// Overrides the image's WORKDIR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    /// Overrides the image's USER: `user`, `user:group`, `uid`, `uid:gid`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// CPU units reserved for the container (1024 = one vCPU); also its CPU shares.
    #[serde(default)]
    pub cpu: u32,
    /// Hard memory limit in MiB: the container is killed above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// Soft memory limit in MiB: what placement reserves for the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<u32>,
    /// Ports the container listens on and how they are published.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Containers that must reach a condition before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ContainerDependency>,
    /// A health check run inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Where the container's output goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_configuration: Option<LogConfiguration>,
    /// Seconds to wait for the container's dependencies before giving up on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout: Option<u32>,
    /// Seconds between SIGTERM and SIGKILL when the container is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u32>,
    /// Resource limits (`nofile`, `nproc`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// Task volumes mounted in the container.
    #[serde(default)]
    pub mount_points: Vec<MountPoint>,
    /// Containers whose volumes this container mounts.
    #[serde(default)]
    pub volumes_from: Vec<VolumeFrom>,
    /// `name` or `name:alias` of containers to link to (bridge mode only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// The container's hostname (not in `awsvpc` mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Mount the root filesystem read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_root_filesystem: Option<bool>,
    /// Accepted for compatibility; `true` is refused by validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// Labels set on the container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub docker_labels: BTreeMap<String, String>,
    /// DNS servers for the container's resolv.conf.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<String>,
    /// DNS search domains for the container's resolv.conf.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search_domains: Vec<String>,
    /// Extra `/etc/hosts` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<HostEntry>,
    /// Run the container without networking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_networking: Option<bool>,
    /// Keep stdin open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<bool>,
    /// Allocate a TTY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudo_terminal: Option<bool>,
    /// Linux-specific settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_parameters: Option<LinuxParameters>,
}

impl ContainerDefinition {
    /// Whether the container is essential (`essential` defaults to true).
    pub fn is_essential(&self) -> bool {
        self.essential.unwrap_or(true)
    }

    /// The memory placement reserves for the container: `memoryReservation` if set, else
    /// `memory`, else nothing.
    pub fn reserved_memory(&self) -> Option<u32> {
        self.memory_reservation.or(self.memory)
    }

    /// The value of an environment variable, the last one when it is given twice.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.environment
            .iter()
            .rev()
            .find(|pair| pair.name == name)
            .map(|pair| pair.value.as_str())
    }
}

/// `bridge`, `host`, `awsvpc` or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Each container on the host's bridge, ports published with `hostPort`.
    #[default]
    Bridge,
    /// The host's network namespace.
    Host,
    /// The task's own network namespace and IP address (its elastic network interface).
    Awsvpc,
    /// Loopback only.
    None,
}

impl NetworkMode {
    /// ECS's spelling: `bridge`, `host`, `awsvpc`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::Awsvpc => "awsvpc",
            NetworkMode::None => "none",
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A launch type a task definition can be compatible with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Compatibility {
    /// Registered container instances.
    #[serde(rename = "EC2")]
    Ec2,
    /// One sandbox per task, sized by the task's cpu and memory.
    #[serde(rename = "FARGATE")]
    Fargate,
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compatibility::Ec2 => "EC2",
            Compatibility::Fargate => "FARGATE",
        })
    }
}

/// `host` or `task`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PidMode {
    /// The host's PID namespace.
    Host,
    /// One PID namespace shared by the task's containers.
    Task,
}

/// `host`, `task` or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpcMode {
    /// The host's IPC namespace.
    Host,
    /// One IPC namespace shared by the task's containers.
    Task,
    /// A private IPC namespace per container.
    None,
}

/// `{"name": ..., "value": ...}`, as in `environment`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyValuePair {
    /// The variable's name.
    #[serde(default)]
    pub name: String,
    /// The variable's value.
    #[serde(default)]
    pub value: String,
}

impl KeyValuePair {
    /// A name and a value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> KeyValuePair {
        KeyValuePair {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// An environment variable whose value is fetched from a secret store (`valueFrom`: an ARN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    /// The variable's name.
    pub name: String,
    /// The secret's ARN or parameter name.
    pub value_from: String,
}

/// `tcp` or `udp`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TransportProtocol {
    /// TCP, the default.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for TransportProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportProtocol::Tcp => "tcp",
            TransportProtocol::Udp => "udp",
        })
    }
}

/// The application protocol of a port mapping, for Service Connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// HTTP/1.1.
    Http,
    /// HTTP/2.
    Http2,
    /// gRPC.
    Grpc,
}

/// A port the container listens on, and how it is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    /// The port inside the container (1-65535).
    #[serde(default)]
    pub container_port: u32,
    /// The port on the host: equal to `containerPort` in `awsvpc` and `host` modes; in `bridge`
    /// mode, 0 or absent picks a dynamic port when the task starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u32>,
    /// `tcp` (default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<TransportProtocol>,
    /// A name for the mapping, for Service Connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The application protocol, for Service Connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<AppProtocol>,
}

impl PortMapping {
    /// The protocol, `tcp` when absent.
    pub fn protocol(&self) -> TransportProtocol {
        self.protocol.unwrap_or_default()
    }

    /// The static host port this mapping needs, if any: the container port in `awsvpc` and
    /// `host` modes, a non-zero `hostPort` in `bridge` mode. `awsvpc` ports are on the task's own
    /// interface, so they take nothing from the instance; see [`PortMapping::instance_port`].
    pub fn static_host_port(&self, mode: NetworkMode) -> Option<u16> {
        match mode {
            NetworkMode::Awsvpc | NetworkMode::Host => u16::try_from(
                self.host_port
                    .filter(|&port| port != 0)
                    .unwrap_or(self.container_port),
            )
            .ok(),
            NetworkMode::Bridge => self
                .host_port
                .filter(|&port| port != 0)
                .and_then(|port| u16::try_from(port).ok()),
            NetworkMode::None => None,
        }
    }

    /// The port this mapping takes on the container instance it is placed on: the static host
    /// port in `host` and `bridge` modes; nothing in `awsvpc` (the port is on the task's own
    /// interface) or `none` mode.
    pub fn instance_port(&self, mode: NetworkMode) -> Option<u16> {
        match mode {
            NetworkMode::Host | NetworkMode::Bridge => self.static_host_port(mode),
            NetworkMode::Awsvpc | NetworkMode::None => None,
        }
    }
}

/// The condition a container waits for on another before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ContainerCondition {
    /// The other container has started.
    Start,
    /// The other container has run to completion (any exit code).
    Complete,
    /// The other container has exited with code 0.
    Success,
    /// The other container's health check passes.
    Healthy,
}

impl fmt::Display for ContainerCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContainerCondition::Start => "START",
            ContainerCondition::Complete => "COMPLETE",
            ContainerCondition::Success => "SUCCESS",
            ContainerCondition::Healthy => "HEALTHY",
        })
    }
}

/// `{"containerName": ..., "condition": ...}` of `dependsOn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerDependency {
    /// The container depended on.
    pub container_name: String,
    /// What it must reach.
    pub condition: ContainerCondition,
}

/// A health check run inside the container, as Docker's HEALTHCHECK.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// `["CMD", "curl", "-f", "http://localhost/"]` (exec) or `["CMD-SHELL", "curl -f
    /// http://localhost/ || exit 1"]` (through `/bin/sh -c`).
    pub command: Vec<String>,
    /// Seconds between checks (5-300, default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u32>,
    /// Seconds a check may take before it counts as failed (2-60, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// Consecutive failures before the container is UNHEALTHY (1-10, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Seconds after start during which failures do not count (0-300, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<u32>,
}

impl HealthCheck {
    /// ECS's default `interval`, in seconds.
    pub const DEFAULT_INTERVAL: u32 = 30;
    /// ECS's default `timeout`, in seconds.
    pub const DEFAULT_TIMEOUT: u32 = 5;
    /// ECS's default `retries`.
    pub const DEFAULT_RETRIES: u32 = 3;

    /// `interval`, or its default.
    pub fn interval(&self) -> u32 {
        self.interval.unwrap_or(Self::DEFAULT_INTERVAL)
    }

    /// `timeout`, or its default.
    pub fn timeout(&self) -> u32 {
        self.timeout.unwrap_or(Self::DEFAULT_TIMEOUT)
    }

    /// `retries`, or its default.
    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(Self::DEFAULT_RETRIES)
    }

    /// `startPeriod`, or 0.
    pub fn start_period(&self) -> u32 {
        self.start_period.unwrap_or(0)
    }

    /// The process to run for one check: `CMD` runs the rest as argv, `CMD-SHELL` runs its one
    /// argument through `/bin/sh -c`. `None` for a command that is neither.
    pub fn argv(&self) -> Option<Vec<String>> {
        let (kind, rest) = self.command.split_first()?;
        match kind.as_str() {
            "CMD" if !rest.is_empty() => Some(rest.to_vec()),
            "CMD-SHELL" if !rest.is_empty() => Some(
                ["/bin/sh", "-c"]
                    .into_iter()
                    .map(String::from)
                    .chain(std::iter::once(rest.join(" ")))
                    .collect(),
            ),
            _ => None,
        }
    }
}

/// The log drivers ECS knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogDriver {
    /// Docker's JSON file driver.
    #[serde(rename = "json-file")]
    JsonFile,
    /// syslog.
    #[serde(rename = "syslog")]
    Syslog,
    /// journald.
    #[serde(rename = "journald")]
    Journald,
    /// GELF.
    #[serde(rename = "gelf")]
    Gelf,
    /// Fluentd.
    #[serde(rename = "fluentd")]
    Fluentd,
    /// CloudWatch Logs.
    #[serde(rename = "awslogs")]
    Awslogs,
    /// Splunk.
    #[serde(rename = "splunk")]
    Splunk,
    /// FireLens.
    #[serde(rename = "awsfirelens")]
    Awsfirelens,
}

impl LogDriver {
    /// The options ECS requires for this driver.
    pub fn required_options(self) -> &'static [&'static str] {
        match self {
            LogDriver::Awslogs => &["awslogs-region", "awslogs-group"],
            _ => &[],
        }
    }
}

impl fmt::Display for LogDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogDriver::JsonFile => "json-file",
            LogDriver::Syslog => "syslog",
            LogDriver::Journald => "journald",
            LogDriver::Gelf => "gelf",
            LogDriver::Fluentd => "fluentd",
            LogDriver::Awslogs => "awslogs",
            LogDriver::Splunk => "splunk",
            LogDriver::Awsfirelens => "awsfirelens",
        })
    }
}

/// `logConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogConfiguration {
    /// The driver.
    pub log_driver: LogDriver,
    /// The driver's options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Options whose values are secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_options: Vec<Secret>,
}

/// The resource limits a `ulimits` entry can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum UlimitName {
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

impl UlimitName {
    /// The `RLIMIT_*` name an OCI runtime spec uses.
    pub fn rlimit(self) -> &'static str {
        match self {
            UlimitName::Core => "RLIMIT_CORE",
            UlimitName::Cpu => "RLIMIT_CPU",
            UlimitName::Data => "RLIMIT_DATA",
            UlimitName::Fsize => "RLIMIT_FSIZE",
            UlimitName::Locks => "RLIMIT_LOCKS",
            UlimitName::Memlock => "RLIMIT_MEMLOCK",
            UlimitName::Msgqueue => "RLIMIT_MSGQUEUE",
            UlimitName::Nice => "RLIMIT_NICE",
            UlimitName::Nofile => "RLIMIT_NOFILE",
            UlimitName::Nproc => "RLIMIT_NPROC",
            UlimitName::Rss => "RLIMIT_RSS",
            UlimitName::Rtprio => "RLIMIT_RTPRIO",
            UlimitName::Rttime => "RLIMIT_RTTIME",
            UlimitName::Sigpending => "RLIMIT_SIGPENDING",
            UlimitName::Stack => "RLIMIT_STACK",
        }
    }
}

/// One `ulimits` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ulimit {
    /// Which limit.
    pub name: UlimitName,
    /// The soft limit.
    pub soft_limit: i64,
    /// The hard limit.
    pub hard_limit: i64,
}

/// A task volume mounted in a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountPoint {
    /// The name of a volume in the task definition's `volumes`.
    #[serde(default)]
    pub source_volume: String,
    /// Where it is mounted in the container.
    #[serde(default)]
    pub container_path: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// `volumesFrom`: mount every volume of another container of the task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeFrom {
    /// The container whose volumes are mounted.
    #[serde(default)]
    pub source_container: String,
    /// Mount them read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// A task volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    /// The name `mountPoints` use.
    #[serde(default)]
    pub name: String,
    /// A bind mount: `sourcePath` on the host, or, without it, a directory that lives as long as
    /// the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostVolumeProperties>,
    /// A Docker-style named volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_volume_configuration: Option<DockerVolumeConfiguration>,
}

/// `host` of a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostVolumeProperties {
    /// The host path; absent for a task-scoped directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
}

/// `task` or `shared`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeScope {
    /// Removed when the task stops.
    Task,
    /// Kept after the task stops.
    Shared,
}

/// `dockerVolumeConfiguration` of a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerVolumeConfiguration {
    /// `task` (default) or `shared`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<VolumeScope>,
    /// Create a `shared` volume that does not exist yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoprovision: Option<bool>,
    /// The volume driver (`local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The driver's options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// Labels of the volume.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The one constraint type a task definition may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskDefinitionPlacementConstraintType {
    /// Place on instances that satisfy a cluster query language expression.
    #[serde(rename = "memberOf")]
    MemberOf,
}

/// A placement constraint in a task definition (only `memberOf`; `distinctInstance` belongs to
/// `RunTask` and services, and is refused here, as ECS refuses it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskDefinitionPlacementConstraint {
    /// `memberOf`.
    #[serde(rename = "type")]
    pub kind: TaskDefinitionPlacementConstraintType,
    /// A cluster query language expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// An `/etc/hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostEntry {
    /// The host name.
    pub hostname: String,
    /// Its address.
    pub ip_address: String,
}

/// `linuxParameters` of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinuxParameters {
    /// Capabilities added to or dropped from Docker's default set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<KernelCapabilities>,
    /// Run an init process as PID 1 that reaps zombies and forwards signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_process_enabled: Option<bool>,
    /// The size of `/dev/shm` in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_memory_size: Option<u32>,
    /// tmpfs mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<Tmpfs>,
    /// Swap the container may use, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_swap: Option<u32>,
    /// The container's swappiness (0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swappiness: Option<u32>,
}

/// `capabilities` of `linuxParameters`: names without the `CAP_` prefix, as Docker takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelCapabilities {
    /// Capabilities to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Capabilities to drop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

/// A tmpfs mount of `linuxParameters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tmpfs {
    /// Where it is mounted.
    pub container_path: String,
    /// Its size in MiB.
    pub size: u32,
    /// Mount options (`noexec`, `nosuid`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_options: Vec<String>,
}

/// `runtimePlatform`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimePlatform {
    /// `X86_64` or `ARM64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_architecture: Option<CpuArchitecture>,
    /// `LINUX`, or a Windows family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_system_family: Option<String>,
}

/// `X86_64` or `ARM64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuArchitecture {
    /// amd64.
    #[serde(rename = "X86_64")]
    X86_64,
    /// arm64.
    #[serde(rename = "ARM64")]
    Arm64,
}

/// `ephemeralStorage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EphemeralStorage {
    /// GiB of ephemeral storage (21-200 on Fargate).
    #[serde(rename = "sizeInGiB")]
    pub size_in_gib: u32,
}

/// ACTIVE or INACTIVE (deregistered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskDefinitionStatus {
    /// Usable for new tasks and services.
    #[default]
    Active,
    /// Deregistered: running tasks go on, new ones cannot use it.
    Inactive,
}

/// A registered task definition, as `DescribeTaskDefinition` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    /// `arn:aws:ecs:local:000000000000:task-definition/<family>:<revision>`.
    pub task_definition_arn: String,
    /// The containers, with ECS's defaults filled in.
    pub container_definitions: Vec<ContainerDefinition>,
    /// The family.
    pub family: String,
    /// The task role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    /// The execution role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    /// The network mode, resolved.
    pub network_mode: NetworkMode,
    /// The revision in the family, from 1.
    pub revision: u32,
    /// The volumes.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// ACTIVE or INACTIVE.
    pub status: TaskDefinitionStatus,
    /// The `memberOf` constraints.
    #[serde(default)]
    pub placement_constraints: Vec<TaskDefinitionPlacementConstraint>,
    /// The launch types the definition is valid for.
    pub compatibilities: Vec<Compatibility>,
    /// The launch types asked for at registration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires_compatibilities: Vec<Compatibility>,
    /// Task CPU in CPU units, as a string of digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Task memory in MiB, as a string of digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// The PID mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_mode: Option<PidMode>,
    /// The IPC mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc_mode: Option<IpcMode>,
    /// The runtime platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_platform: Option<RuntimePlatform>,
    /// Ephemeral storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<EphemeralStorage>,
    /// When it was registered.
    pub registered_at: Timestamp,
    /// When it was deregistered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregistered_at: Option<Timestamp>,
    /// Tags given at registration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

impl TaskDefinition {
    /// Validates `request` and registers it as `revision` of its family at `registered_at`.
    ///
    /// The caller keeps the revisions: `revision` is one more than the family's last (from 1).
    pub fn register(
        request: RegisterTaskDefinition,
        revision: u32,
        registered_at: Timestamp,
    ) -> Result<TaskDefinition, ValidationError> {
        let checked = validate::validate(&request)?;
        let network_mode = checked.network_mode;
        let mut compatibilities = vec![Compatibility::Ec2];
        if validate::fargate_rules(&request, &checked).is_ok() {
            compatibilities.push(Compatibility::Fargate);
        }
        let container_definitions = request
            .container_definitions
            .into_iter()
            .map(|container| with_defaults(container, network_mode))
            .collect();
        Ok(TaskDefinition {
            task_definition_arn: arn::task_definition(&request.family, revision),
            container_definitions,
            family: request.family,
            task_role_arn: request.task_role_arn,
            execution_role_arn: request.execution_role_arn,
            network_mode,
            revision,
            volumes: request.volumes,
            status: TaskDefinitionStatus::Active,
            placement_constraints: request.placement_constraints,
            compatibilities,
            requires_compatibilities: request.requires_compatibilities,
            cpu: checked.cpu.map(|units| units.to_string()),
            memory: checked.memory.map(|mib| mib.to_string()),
            pid_mode: request.pid_mode,
            ipc_mode: request.ipc_mode,
            runtime_platform: request.runtime_platform,
            ephemeral_storage: request.ephemeral_storage,
            registered_at,
            deregistered_at: None,
            tags: request.tags,
        })
    }

    /// Marks the definition INACTIVE, as `DeregisterTaskDefinition` does.
    pub fn deregister(&mut self, at: Timestamp) {
        self.status = TaskDefinitionStatus::Inactive;
        self.deregistered_at = Some(at);
    }

    /// `family:revision`.
    pub fn family_revision(&self) -> String {
        format!("{}:{}", self.family, self.revision)
    }

    /// Task CPU in CPU units, when the task sets it.
    pub fn cpu_units(&self) -> Option<u32> {
        self.cpu.as_deref().and_then(|cpu| cpu.parse().ok())
    }

    /// Task memory in MiB, when the task sets it.
    pub fn memory_mib(&self) -> Option<u32> {
        self.memory
            .as_deref()
            .and_then(|memory| memory.parse().ok())
    }

    /// Whether the definition can run with the given launch type.
    pub fn is_compatible_with(&self, launch_type: Compatibility) -> bool {
        self.compatibilities.contains(&launch_type)
    }

    /// The container called `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerDefinition> {
        self.container_definitions.iter().find(|c| c.name == name)
    }

    /// The containers in an order that starts every container after those it depends on
    /// (`dependsOn`) and links to, keeping the definition's order otherwise.
    pub fn start_order(&self) -> Vec<&ContainerDefinition> {
        validate::start_order(&self.container_definitions)
            .unwrap_or_else(|_| (0..self.container_definitions.len()).collect())
            .into_iter()
            .map(|index| &self.container_definitions[index])
            .collect()
    }

    /// The CPU units placement reserves on an EC2 instance: the task's `cpu`, else the sum of
    /// the containers' `cpu`.
    pub fn reserved_cpu(&self) -> u32 {
        self.cpu_units().unwrap_or_else(|| {
            self.container_definitions
                .iter()
                .map(|c| c.cpu)
                .fold(0, u32::saturating_add)
        })
    }

    /// The memory placement reserves on an EC2 instance, in MiB: the task's `memory`, else the
    /// sum over the containers of `memoryReservation`, or `memory` where no reservation is set.
    pub fn reserved_memory(&self) -> u32 {
        self.memory_mib().unwrap_or_else(|| {
            self.container_definitions
                .iter()
                .filter_map(ContainerDefinition::reserved_memory)
                .fold(0, u32::saturating_add)
        })
    }
}

/// Fills in the defaults ECS returns in a registered container definition.
fn with_defaults(mut container: ContainerDefinition, mode: NetworkMode) -> ContainerDefinition {
    container.essential = Some(container.is_essential());
    for mapping in &mut container.port_mappings {
        mapping.protocol = Some(mapping.protocol());
        mapping.host_port = Some(match mode {
            NetworkMode::Awsvpc | NetworkMode::Host => mapping
                .host_port
                .filter(|&port| port != 0)
                .unwrap_or(mapping.container_port),
            NetworkMode::Bridge | NetworkMode::None => mapping.host_port.unwrap_or(0),
        });
    }
    if let Some(check) = &mut container.health_check {
        check.interval = Some(check.interval());
        check.timeout = Some(check.timeout());
        check.retries = Some(check.retries());
    }
    container
}

/// How a task definition is named on the command line and in `RunTask`: `family` (the latest
/// ACTIVE revision), `family:revision`, or a full task definition ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskDefinitionRef {
    /// The latest ACTIVE revision of the family.
    Family(String),
    /// One revision.
    Revision {
        /// The family.
        family: String,
        /// The revision.
        revision: u32,
    },
}

impl TaskDefinitionRef {
    /// The family named.
    pub fn family(&self) -> &str {
        match self {
            TaskDefinitionRef::Family(family) | TaskDefinitionRef::Revision { family, .. } => {
                family
            }
        }
    }
}

/// Text that names no task definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid task definition '{text}': expected FAMILY, FAMILY:REVISION or a task definition ARN"
)]
pub struct TaskDefinitionRefError {
    /// The text as given.
    pub text: String,
}

impl FromStr for TaskDefinitionRef {
    type Err = TaskDefinitionRefError;

    fn from_str(text: &str) -> Result<TaskDefinitionRef, TaskDefinitionRefError> {
        let fail = || TaskDefinitionRefError {
            text: text.to_owned(),
        };
        if text.starts_with("arn:") {
            // An ARN always names one revision.
            let parsed: arn::Arn = text.parse().map_err(|_| fail())?;
            if parsed.resource_type != "task-definition" {
                return Err(fail());
            }
            return parse_family_revision(&parsed.resource).ok_or_else(fail);
        }
        if text.contains(':') {
            return parse_family_revision(text).ok_or_else(fail);
        }
        if validate::is_valid_family(text) {
            Ok(TaskDefinitionRef::Family(text.to_owned()))
        } else {
            Err(fail())
        }
    }
}

fn parse_family_revision(text: &str) -> Option<TaskDefinitionRef> {
    let (family, revision) = text.rsplit_once(':')?;
    let revision: u32 = revision.parse().ok().filter(|&r| r > 0)?;
    validate::is_valid_family(family).then(|| TaskDefinitionRef::Revision {
        family: family.to_owned(),
        revision,
    })
}

impl fmt::Display for TaskDefinitionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskDefinitionRef::Family(family) => f.write_str(family),
            TaskDefinitionRef::Revision { family, revision } => write!(f, "{family}:{revision}"),
        }
    }
}

/// Parses task-level `cpu` as ECS does: CPU units (`"1024"`) or vCPUs (`"1 vCPU"`, `"0.25
/// vcpu"`, `"2vCPU"`; case does not matter), giving CPU units (1024 per vCPU). `None` for text
/// that is neither, or vCPUs that are not a whole number of units.
pub fn parse_cpu(text: &str) -> Option<u32> {
    parse_quantity(text, "vcpu", 1024)
}

/// Parses task-level `memory` as ECS does: MiB (`"2048"`) or GB (`"2 GB"`, `"2GB"`, `"0.5 gb"`),
/// giving MiB (1024 per GB). `None` for text that is neither, or GB that are not a whole number
/// of MiB.
pub fn parse_memory(text: &str) -> Option<u32> {
    parse_quantity(text, "gb", 1024)
}

/// `<digits>` as is, or `<decimal> <unit>` times `scale`, exactly.
fn parse_quantity(text: &str, unit: &str, scale: u64) -> Option<u32> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let lower = text.to_ascii_lowercase();
    let number = lower.strip_suffix(unit)?.trim_end();
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 9
    {
        return None;
    }
    let denominator = 10u64.pow(fraction.len() as u32);
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction: u64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let numerator = whole
        .checked_mul(denominator)?
        .checked_add(fraction)?
        .checked_mul(scale)?;
    if numerator % denominator != 0 {
        return None;
    }
    u32::try_from(numerator / denominator).ok()
}

/// Accepts a JSON string, or a number that it turns into its decimal string (`"256"` or `256`):
/// how ECS takes task sizes, here and in the agent protocol.
pub(crate) fn string_or_number<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Text(String),
        Integer(u64),
        Float(f64),
    }
    Ok(match Option::<Value>::deserialize(deserializer)? {
        None => None,
        Some(Value::Text(text)) => Some(text),
        Some(Value::Integer(number)) => Some(number.to_string()),
        Some(Value::Float(number)) => Some(number.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NGINX: &str = r#"{
        "family": "web",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "0.25 vCPU",
        "memory": "0.5 GB",
        "executionRoleArn": "arn:aws:iam::000000000000:role/ecsTaskExecutionRole",
        "containerDefinitions": [
            {
                "name": "nginx",
                "image": "nginx:1.27",
                "portMappings": [{"containerPort": 80}],
                "environment": [{"name": "MODE", "value": "prod"}],
                "healthCheck": {"command": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]},
                "logConfiguration": {"logDriver": "json-file", "options": {"max-size": "10m"}},
                "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
                "stopTimeout": 10
            },
            {
                "name": "sidecar",
                "image": "busybox",
                "essential": false,
                "dependsOn": [{"containerName": "nginx", "condition": "HEALTHY"}],
                "command": ["sleep", "infinity"]
            }
        ]
    }"#;

    #[test]
    fn register_fills_ecs_defaults_and_normalizes_sizes() {
        let request = RegisterTaskDefinition::from_json(NGINX).unwrap();
        let td = TaskDefinition::register(request, 4, Timestamp::from_secs(1_700_000_000)).unwrap();
        assert_eq!(
            td.task_definition_arn,
            "arn:aws:ecs:local:000000000000:task-definition/web:4"
        );
        assert_eq!((td.revision, td.status), (4, TaskDefinitionStatus::Active));
        assert_eq!(
            (td.cpu.as_deref(), td.memory.as_deref()),
            (Some("256"), Some("512"))
        );
        assert_eq!((td.cpu_units(), td.memory_mib()), (Some(256), Some(512)));
        assert_eq!(
            td.compatibilities,
            vec![Compatibility::Ec2, Compatibility::Fargate]
        );
        let nginx = td.container("nginx").unwrap();
        assert_eq!(nginx.essential, Some(true));
        assert_eq!(nginx.port_mappings[0].host_port, Some(80));
        assert_eq!(
            nginx.port_mappings[0].protocol,
            Some(TransportProtocol::Tcp)
        );
        let check = nginx.health_check.as_ref().unwrap();
        assert_eq!(
            (check.interval, check.timeout, check.retries),
            (Some(30), Some(5), Some(3))
        );
        assert_eq!(check.start_period, None);
        assert_eq!(td.container("sidecar").unwrap().essential, Some(false));
        assert_eq!(td.family_revision(), "web:4");
    }

    #[test]
    fn registered_definition_serializes_with_ecs_names_and_round_trips() {
        let request = RegisterTaskDefinition::from_json(NGINX).unwrap();
        let td = TaskDefinition::register(request, 1, Timestamp::from_millis(1_700_000_000_500))
            .unwrap();
        let json = serde_json::to_value(&td).unwrap();
        assert_eq!(json["taskDefinitionArn"], arn::task_definition("web", 1));
        assert_eq!(json["networkMode"], "awsvpc");
        assert_eq!(json["requiresCompatibilities"][0], "FARGATE");
        assert_eq!(json["compatibilities"][1], "FARGATE");
        assert_eq!(json["registeredAt"], 1_700_000_000.5);
        assert_eq!(json["status"], "ACTIVE");
        let nginx = &json["containerDefinitions"][0];
        assert_eq!(nginx["portMappings"][0]["containerPort"], 80);
        assert_eq!(nginx["portMappings"][0]["hostPort"], 80);
        assert_eq!(nginx["logConfiguration"]["logDriver"], "json-file");
        assert_eq!(nginx["ulimits"][0]["softLimit"], 1024);
        assert_eq!(nginx["mountPoints"], serde_json::json!([]));
        assert_eq!(
            json["containerDefinitions"][1]["dependsOn"][0]["condition"],
            "HEALTHY"
        );
        let back: TaskDefinition = serde_json::from_value(json).unwrap();
        assert_eq!(back, td);
    }

    #[test]
    fn request_round_trips_through_json() {
        let request = RegisterTaskDefinition::from_json(NGINX).unwrap();
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(RegisterTaskDefinition::from_json(&json).unwrap(), request);
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let err = RegisterTaskDefinition::from_json(
            r#"{"family": "web", "containerDefinitions": [
                {"name": "a", "image": "busybox", "memoryReservaton": 64}
            ]}"#,
        )
        .unwrap_err();
        assert!(
            err.message.contains("unknown field `memoryReservaton`"),
            "{err}"
        );
        assert_eq!(err.line, 2);
        assert!(
            err.to_string()
                .starts_with("invalid task definition JSON: ")
        );

        let err =
            RegisterTaskDefinition::from_json(r#"{"family": "web", "taskDefinitionArn": "x"}"#)
                .unwrap_err();
        assert!(
            err.message.contains("unknown field `taskDefinitionArn`"),
            "{err}"
        );
    }

    #[test]
    fn enum_values_are_checked_with_ecs_spellings() {
        let err = RegisterTaskDefinition::from_json(
            r#"{"family": "w", "containerDefinitions": [{"name": "a", "image": "b",
                "portMappings": [{"containerPort": 53, "protocol": "sctp"}]}]}"#,
        )
        .unwrap_err();
        assert!(
            err.message
                .contains("unknown variant `sctp`, expected `tcp` or `udp`"),
            "{err}"
        );

        let err = RegisterTaskDefinition::from_json(r#"{"family": "w", "networkMode": "nat"}"#)
            .unwrap_err();
        assert!(err.message.contains("unknown variant `nat`"), "{err}");

        let err = RegisterTaskDefinition::from_json(
            r#"{"family": "w", "placementConstraints": [{"type": "distinctInstance"}]}"#,
        )
        .unwrap_err();
        assert!(err.message.contains("expected `memberOf`"), "{err}");
    }

    #[test]
    fn cpu_and_memory_accept_every_ecs_form() {
        for (text, units) in [
            ("256", 256),
            ("1024", 1024),
            ("1 vCPU", 1024),
            ("1 vcpu", 1024),
            ("0.25 vCPU", 256),
            ("0.5vCPU", 512),
            (".25 vCPU", 256),
            ("4 VCPU", 4096),
            (" 2 vCPU ", 2048),
        ] {
            assert_eq!(parse_cpu(text), Some(units), "{text}");
        }
        for text in [
            "", "vCPU", "0.3 vCPU", "1 cpu", "-1", "1.5", "one vCPU", "1 vCPUs",
        ] {
            assert_eq!(parse_cpu(text), None, "{text}");
        }
        for (text, mib) in [
            ("512", 512),
            ("1 GB", 1024),
            ("1GB", 1024),
            ("0.5 GB", 512),
            ("2 gb", 2048),
            ("30GB", 30720),
        ] {
            assert_eq!(parse_memory(text), Some(mib), "{text}");
        }
        for text in ["", "GB", "1 MB", "1 GiB", "0.0001 GB", "1e3"] {
            assert_eq!(parse_memory(text), None, "{text}");
        }
    }

    #[test]
    fn cpu_and_memory_may_be_json_numbers() {
        let request = RegisterTaskDefinition::from_json(
            r#"{"family": "w", "cpu": 512, "memory": 1024, "containerDefinitions": []}"#,
        )
        .unwrap();
        assert_eq!(
            (request.cpu.as_deref(), request.memory.as_deref()),
            (Some("512"), Some("1024"))
        );
    }

    #[test]
    fn bridge_mode_is_the_default_and_dynamic_ports_are_zero() {
        let request = RegisterTaskDefinition::from_json(
            r#"{"family": "w", "containerDefinitions": [{"name": "a", "image": "b", "memory": 128,
                "portMappings": [{"containerPort": 8080}, {"containerPort": 53, "hostPort": 5353, "protocol": "udp"}]}]}"#,
        )
        .unwrap();
        let td = TaskDefinition::register(request, 1, Timestamp::EPOCH).unwrap();
        assert_eq!(td.network_mode, NetworkMode::Bridge);
        assert_eq!(td.compatibilities, vec![Compatibility::Ec2]);
        let mappings = &td.container_definitions[0].port_mappings;
        assert_eq!(mappings[0].host_port, Some(0));
        assert_eq!(mappings[0].static_host_port(NetworkMode::Bridge), None);
        assert_eq!(
            mappings[1].static_host_port(NetworkMode::Bridge),
            Some(5353)
        );
        assert_eq!(mappings[1].instance_port(NetworkMode::Bridge), Some(5353));
    }

    #[test]
    fn reserved_resources_follow_ecs_rules() {
        let request = RegisterTaskDefinition::from_json(
            r#"{"family": "w", "containerDefinitions": [
                {"name": "a", "image": "b", "cpu": 128, "memory": 512, "memoryReservation": 256},
                {"name": "c", "image": "d", "cpu": 64, "memory": 128}
            ]}"#,
        )
        .unwrap();
        let td = TaskDefinition::register(request.clone(), 1, Timestamp::EPOCH).unwrap();
        assert_eq!((td.reserved_cpu(), td.reserved_memory()), (192, 384));

        let mut sized = request;
        sized.cpu = Some("1 vCPU".into());
        sized.memory = Some("1GB".into());
        let td = TaskDefinition::register(sized, 2, Timestamp::EPOCH).unwrap();
        assert_eq!((td.reserved_cpu(), td.reserved_memory()), (1024, 1024));
    }

    #[test]
    fn start_order_puts_dependencies_first() {
        let request = RegisterTaskDefinition::from_json(
            r#"{"family": "w", "memory": "512", "containerDefinitions": [
                {"name": "app", "image": "a", "dependsOn": [{"containerName": "db", "condition": "START"}]},
                {"name": "proxy", "image": "p", "links": ["app:backend"]},
                {"name": "db", "image": "d", "essential": false}
            ]}"#,
        )
        .unwrap();
        let td = TaskDefinition::register(request, 1, Timestamp::EPOCH).unwrap();
        let order: Vec<&str> = td.start_order().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(order, ["db", "app", "proxy"]);
    }

    #[test]
    fn health_check_argv_follows_cmd_and_cmd_shell() {
        let shell = HealthCheck {
            command: vec![
                "CMD-SHELL".into(),
                "curl -f http://localhost/ || exit 1".into(),
            ],
            ..HealthCheck::default()
        };
        assert_eq!(
            shell.argv().unwrap(),
            ["/bin/sh", "-c", "curl -f http://localhost/ || exit 1"]
        );
        let exec = HealthCheck {
            command: vec!["CMD".into(), "/bin/check".into(), "--quick".into()],
            ..HealthCheck::default()
        };
        assert_eq!(exec.argv().unwrap(), ["/bin/check", "--quick"]);
        let bad = HealthCheck {
            command: vec!["curl".into()],
            ..HealthCheck::default()
        };
        assert_eq!(bad.argv(), None);
        assert_eq!(
            (
                bad.interval(),
                bad.timeout(),
                bad.retries(),
                bad.start_period()
            ),
            (30, 5, 3, 0)
        );
    }

    #[test]
    fn task_definition_refs_parse_family_revision_and_arn() {
        assert_eq!(
            "web".parse::<TaskDefinitionRef>().unwrap(),
            TaskDefinitionRef::Family("web".into())
        );
        assert_eq!(
            "web:7".parse::<TaskDefinitionRef>().unwrap(),
            TaskDefinitionRef::Revision {
                family: "web".into(),
                revision: 7
            }
        );
        let from_arn: TaskDefinitionRef = arn::task_definition("api_v2", 12).parse().unwrap();
        assert_eq!(from_arn.to_string(), "api_v2:12");
        assert_eq!(from_arn.family(), "api_v2");
        for bad in [
            "web:0",
            "web:x",
            "we b",
            "",
            "arn:aws:ecs:local:0:task/c/id",
        ] {
            let err = bad.parse::<TaskDefinitionRef>().unwrap_err();
            assert!(err.to_string().contains("expected FAMILY"), "{bad}");
        }
    }

    #[test]
    fn deregister_marks_inactive() {
        let request = RegisterTaskDefinition::from_json(NGINX).unwrap();
        let mut td = TaskDefinition::register(request, 1, Timestamp::EPOCH).unwrap();
        td.deregister(Timestamp::from_secs(60));
        assert_eq!(td.status, TaskDefinitionStatus::Inactive);
        assert_eq!(
            serde_json::to_value(&td).unwrap()["deregisteredAt"],
            serde_json::json!(60)
        );
    }
}
