//! The task metadata endpoint, version 4, with ECS's field names: what
//! `$ECS_CONTAINER_METADATA_URI_V4`, `/task`, `/stats` and `/task/stats` answer inside a task.
//!
//! Times are RFC 3339 strings, as ECS gives them there. The stats are Docker's stats shape,
//! with what the kernel tells of the container's cgroup: memory usage and limit, CPU time,
//! process count.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use serde::Serialize;

use super::task::{NetworkInfo, TaskHandle, TaskState};
use crate::ecs::Timestamp;
use crate::ecs::status::{DesiredStatus, LaunchType};
use crate::ecs::taskdef::NetworkMode;

/// `GET /v4/<token>`: one container.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerMetadata {
    /// The runtime's id.
    #[serde(rename = "DockerId")]
    pub docker_id: String,
    /// The name in the task definition.
    pub name: String,
    /// `ecs-<family>-<revision>-<name>-<id prefix>`.
    pub docker_name: String,
    /// The image reference.
    pub image: String,
    /// The image id (its config's digest).
    #[serde(rename = "ImageID", skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// ECS's labels and the definition's `dockerLabels`.
    pub labels: BTreeMap<String, String>,
    /// RUNNING or STOPPED.
    pub desired_status: String,
    /// PENDING, RUNNING or STOPPED.
    pub known_status: String,
    /// `CPU` units and `Memory` MiB.
    pub limits: ContainerLimits,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Once it has exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// `NORMAL`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The `logConfiguration` driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<String>,
    /// Its options.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub log_options: BTreeMap<String, String>,
    /// The container's ARN.
    #[serde(rename = "ContainerARN", skip_serializing_if = "Option::is_none")]
    pub container_arn: Option<String>,
    /// Its health check's verdict, for a container that has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthMetadata>,
    /// The task's network, as the container sees it.
    pub networks: Vec<NetworkMetadata>,
    /// Its port mappings, with the host ports bound.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMetadata>,
}

/// `Limits` of a container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerLimits {
    /// CPU units.
    #[serde(rename = "CPU")]
    pub cpu: u32,
    /// Hard memory limit, MiB.
    #[serde(rename = "Memory", skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
}

/// `Health` of a container, with ECS's lowercase keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthMetadata {
    /// HEALTHY, UNHEALTHY or UNKNOWN.
    pub status: String,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_since: Option<String>,
    /// The last check's output.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
}

/// One entry of `Networks`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkMetadata {
    /// `awsvpc`, `bridge`, `host` or `none`.
    #[serde(rename = "NetworkMode")]
    pub network_mode: String,
    /// The task's address, if it has one of its own.
    #[serde(rename = "IPv4Addresses")]
    pub ipv4_addresses: Vec<String>,
    /// 0.
    #[serde(rename = "AttachmentIndex", skip_serializing_if = "Option::is_none")]
    pub attachment_index: Option<u32>,
    /// The interface's MAC address.
    #[serde(rename = "MACAddress", skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// The subnet, `10.89.0.0/16`.
    #[serde(
        rename = "IPv4SubnetCIDRBlock",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_subnet_cidr_block: Option<String>,
    /// The address's private DNS name.
    #[serde(rename = "PrivateDNSName", skip_serializing_if = "Option::is_none")]
    pub private_dns_name: Option<String>,
    /// The gateway with the prefix length, `10.89.0.1/16`.
    #[serde(
        rename = "SubnetGatewayIpv4Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub subnet_gateway_ipv4_address: Option<String>,
}

/// One entry of `Ports`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortMetadata {
    /// The container's port.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The host port.
    pub host_port: u16,
    /// The host address bound.
    pub host_ip: String,
}

/// `GET /v4/<token>/task`: the task and its containers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskMetadata {
    /// The cluster's ARN.
    pub cluster: String,
    /// The task's ARN.
    #[serde(rename = "TaskARN")]
    pub task_arn: String,
    /// The definition's family.
    pub family: String,
    /// The definition's revision, as a string.
    pub revision: String,
    /// RUNNING or STOPPED.
    pub desired_status: String,
    /// The task's `lastStatus`.
    pub known_status: String,
    /// `CPU` in vCPUs and `Memory` in MiB, for a task with a size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<TaskLimits>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<String>,
    /// The agent's availability zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// EC2 or FARGATE.
    pub launch_type: String,
    /// The containers.
    pub containers: Vec<ContainerMetadata>,
    /// The task's network.
    pub networks: Vec<NetworkMetadata>,
}

/// `Limits` of a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskLimits {
    /// vCPUs (`0.25`).
    #[serde(rename = "CPU", skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// MiB.
    #[serde(rename = "Memory", skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
}

fn time(t: Option<Timestamp>) -> Option<String> {
    t.map(Timestamp::to_rfc3339)
}

fn networks(info: Option<&NetworkInfo>) -> Vec<NetworkMetadata> {
    let Some(info) = info else {
        return Vec::new();
    };
    let prefix = info
        .subnet
        .as_deref()
        .and_then(|s| s.split_once('/'))
        .map(|(_, p)| p.to_owned());
    vec![NetworkMetadata {
        network_mode: info.mode.as_str().to_owned(),
        ipv4_addresses: info.ipv4.iter().map(ToString::to_string).collect(),
        attachment_index: (info.mode == NetworkMode::Awsvpc).then_some(0),
        mac_address: info.mac.clone(),
        ipv4_subnet_cidr_block: info.subnet.clone(),
        private_dns_name: info.private_dns_name.clone(),
        subnet_gateway_ipv4_address: match (info.gateway, prefix) {
            (Some(gateway), Some(prefix)) => Some(format!("{gateway}/{prefix}")),
            _ => None,
        },
    }]
}

/// The metadata of container `index` of `task`.
pub fn container(task: &TaskHandle, index: usize) -> ContainerMetadata {
    task.with_state(|state| container_of(task, state, index))
}

fn container_of(task: &TaskHandle, state: &TaskState, index: usize) -> ContainerMetadata {
    let assignment = task.assignment();
    let definition = &assignment.task_definition;
    let def = &definition.container_definitions[index];
    let view = &state.task.containers[index];
    let runtime = &state.containers[index];
    let docker_id = view.runtime_id.clone().unwrap_or_default();
    let mut labels = BTreeMap::from([
        (
            "com.amazonaws.ecs.cluster".to_owned(),
            assignment.cluster_arn.clone(),
        ),
        (
            "com.amazonaws.ecs.container-name".to_owned(),
            def.name.clone(),
        ),
        (
            "com.amazonaws.ecs.task-arn".to_owned(),
            assignment.task_arn.clone(),
        ),
        (
            "com.amazonaws.ecs.task-definition-family".to_owned(),
            definition.family.clone(),
        ),
        (
            "com.amazonaws.ecs.task-definition-version".to_owned(),
            definition.revision.to_string(),
        ),
    ]);
    labels.extend(def.docker_labels.clone());
    let desired = if state.task.desired_status == DesiredStatus::Stopped {
        "STOPPED"
    } else {
        "RUNNING"
    };
    ContainerMetadata {
        docker_name: format!(
            "ecs-{}-{}-{}-{}",
            definition.family,
            definition.revision,
            def.name,
            &docker_id[..docker_id.len().min(12)]
        ),
        docker_id,
        name: def.name.clone(),
        image: def.image.clone(),
        image_id: runtime.image_id.clone(),
        labels,
        desired_status: desired.to_owned(),
        known_status: view.last_status.to_string(),
        limits: ContainerLimits {
            cpu: def.cpu,
            memory: def.memory,
        },
        created_at: time(runtime.created_at),
        started_at: time(runtime.started_at),
        finished_at: time(runtime.finished_at),
        exit_code: view.exit_code,
        kind: "NORMAL".to_owned(),
        log_driver: def
            .log_configuration
            .as_ref()
            .map(|l| l.log_driver.to_string()),
        log_options: def
            .log_configuration
            .as_ref()
            .map(|l| l.options.clone())
            .unwrap_or_default(),
        container_arn: view.container_arn.clone(),
        health: def.health_check.as_ref().map(|_| HealthMetadata {
            status: runtime.health.status.to_string(),
            status_since: time(runtime.health.since),
            output: runtime.health.output.clone(),
        }),
        networks: networks(state.network.as_ref()),
        ports: view
            .network_bindings
            .iter()
            .map(|b| PortMetadata {
                container_port: b.container_port,
                protocol: b.protocol.to_string(),
                host_port: b.host_port,
                host_ip: b.bind_ip.clone(),
            })
            .collect(),
    }
}

/// The metadata of `task`.
pub fn task(task: &TaskHandle) -> TaskMetadata {
    task.with_state(|state| {
        let assignment = task.assignment();
        let definition = &assignment.task_definition;
        let cpu = assignment.cpu_units();
        let memory = assignment.memory_mib();
        TaskMetadata {
            cluster: assignment.cluster_arn.clone(),
            task_arn: assignment.task_arn.clone(),
            family: definition.family.clone(),
            revision: definition.revision.to_string(),
            desired_status: state.task.desired_status.to_string(),
            known_status: state.task.last_status.to_string(),
            limits: (cpu.is_some() || memory.is_some()).then(|| TaskLimits {
                cpu: cpu.map(|c| f64::from(c) / 1024.0),
                memory,
            }),
            pull_started_at: time(state.task.pull_started_at),
            pull_stopped_at: time(state.task.pull_stopped_at),
            execution_stopped_at: time(state.task.execution_stopped_at),
            availability_zone: state.task.availability_zone.clone(),
            launch_type: match assignment.launch_type {
                LaunchType::Ec2 => "EC2",
                LaunchType::Fargate => "FARGATE",
            }
            .to_owned(),
            containers: (0..definition.container_definitions.len())
                .map(|i| container_of(task, state, i))
                .collect(),
            networks: networks(state.network.as_ref()),
        }
    })
}

/// Docker's stats of one container, as far as its cgroup tells them; `None` when it does not
/// run.
pub fn stats(task: &TaskHandle, index: usize) -> Option<serde_json::Value> {
    let name = task.assignment().task_definition.container_definitions[index]
        .name
        .clone();
    let pid = task.container_pid(&name)?;
    let id = task.with_state(|s| {
        s.task.containers[index]
            .runtime_id
            .clone()
            .unwrap_or_default()
    });
    let cgroups = Cgroups::of(pid);
    let memory_usage = cgroups.read_u64("memory", "memory.usage_in_bytes", "memory.current");
    let memory_limit = cgroups.read_u64("memory", "memory.limit_in_bytes", "memory.max");
    let cpu_total = cgroups.cpu_usage_ns();
    let pids = cgroups.read_u64("pids", "pids.current", "pids.current");
    Some(serde_json::json!({
        "read": Timestamp::now().to_rfc3339(),
        "name": format!("/{name}"),
        "id": id,
        "pids_stats": {"current": pids},
        "memory_stats": {"usage": memory_usage, "limit": memory_limit},
        "cpu_stats": {
            "cpu_usage": {"total_usage": cpu_total},
            "system_cpu_usage": system_cpu_ns(),
            "online_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        },
    }))
}

/// A process's cgroups: `(controllers, path)` per line of `/proc/<pid>/cgroup`.
struct Cgroups(Vec<(String, String)>);

impl Cgroups {
    fn of(pid: u32) -> Cgroups {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        Cgroups(
            text.lines()
                .filter_map(|line| {
                    let mut parts = line.splitn(3, ':');
                    let _id = parts.next()?;
                    Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
                })
                .collect(),
        )
    }

    /// The directory of the v1 hierarchy of `controller`, else of the unified one.
    fn dir(&self, controller: &str) -> Option<(PathBuf, bool)> {
        for (controllers, path) in &self.0 {
            if controllers.split(',').any(|c| c == controller) {
                let path = path.trim_start_matches('/');
                for mount in [controller.to_owned(), controllers.clone()] {
                    let dir = PathBuf::from("/sys/fs/cgroup").join(mount).join(path);
                    if dir.is_dir() {
                        return Some((dir, false));
                    }
                }
            }
        }
        let (_, path) = self.0.iter().find(|(c, _)| c.is_empty())?;
        let path = path.trim_start_matches('/');
        ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .iter()
            .map(|root| PathBuf::from(root).join(path))
            .find(|dir| dir.join("cgroup.controllers").is_file())
            .map(|dir| (dir, true))
    }

    fn read_u64(&self, controller: &str, v1: &str, v2: &str) -> Option<u64> {
        let (dir, unified) = self.dir(controller)?;
        let text = fs::read_to_string(dir.join(if unified { v2 } else { v1 })).ok()?;
        text.trim().parse().ok()
    }

    fn cpu_usage_ns(&self) -> Option<u64> {
        let (dir, unified) = self.dir("cpuacct")?;
        if !unified {
            return fs::read_to_string(dir.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse()
                .ok();
        }
        let stat = fs::read_to_string(dir.join("cpu.stat")).ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|usec| usec * 1000)
    }
}

/// The machine's CPU time since boot, in nanoseconds, from `/proc/stat`.
fn system_cpu_ns() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: u64 = line
        .split_whitespace()
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some(ticks.saturating_mul(1_000_000_000 / hz))
}
