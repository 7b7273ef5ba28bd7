//! The checks `RegisterTaskDefinition` makes before it registers a task definition.
//!
//! [`validate`] returns the first problem it finds as a [`ValidationError`], whose message is
//! the `ClientException` text ECS gives for it where ECS's text is known (for example "Fargate
//! only supports network mode ‘awsvpc’." or "The 'memory' setting for container 'web' is greater
//! than for the task."). Where ECS's text is not known, the message follows ECS's style and says
//! which container and which setting are wrong.
//!
//! The checks, in the order they are made:
//! 1. the family: 1 to 255 letters, numbers, hyphens and underscores;
//! 2. the containers: 1 to 10, each with a valid, unique name and an image; none privileged;
//! 3. task `cpu` and `memory` in a form ECS accepts ([`super::taskdef::parse_cpu`]);
//! 4. when `requiresCompatibilities` holds FARGATE, Fargate's rules ([`fargate_rules`]):
//!    `awsvpc`, task cpu and memory set and one of the published combinations, no host paths,
//!    Docker volumes or host PID/IPC namespaces, `stopTimeout` at most 120 seconds;
//! 5. memory: each container's `memoryReservation` at most its `memory`, neither below 6 MiB,
//!    each `memory` at most the task's, the reservations' sum at most the task's, and, without
//!    task memory, `memory` or `memoryReservation` on every container;
//! 6. CPU: the containers' `cpu` sum at most the task's;
//! 7. at least one essential container;
//! 8. port mappings: ports in range, `hostPort` equal to `containerPort` in `awsvpc` and `host`
//!    modes, no mappings in `none` mode, no port mapped twice in the task;
//! 9. `dependsOn` and `links`: targets that exist, `HEALTHY` only on containers with a health
//!    check, `SUCCESS`/`COMPLETE` only on non-essential containers, links only in `bridge`
//!    mode, no cycles;
//! 10. volumes, `mountPoints` and `volumesFrom` that name what exists;
//! 11. health checks, log drivers' required options, ulimits, environment names and secrets;
//! 12. placement constraints: at most 10, `memberOf` with an expression that parses.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::fargate;
use super::query::{self, QueryError};
use super::taskdef::{
    Compatibility, ContainerCondition, ContainerDefinition, NetworkMode, PidMode,
    RegisterTaskDefinition, TransportProtocol, parse_cpu, parse_memory,
};

/// The most containers a task definition may have.
pub const MAX_CONTAINERS: usize = 10;
/// The most placement constraints a task definition may have.
pub const MAX_PLACEMENT_CONSTRAINTS: usize = 10;
/// The least memory, in MiB, a container may be given (Docker 20.10's minimum).
pub const MIN_CONTAINER_MEMORY: u32 = 6;
/// Task CPU bounds for EC2, in CPU units (0.125 to 192 vCPUs).
pub const TASK_CPU_RANGE: std::ops::RangeInclusive<u32> = 128..=196_608;
/// The longest `stopTimeout` Fargate allows, in seconds.
pub const FARGATE_MAX_STOP_TIMEOUT: u32 = 120;

/// Why ECS would refuse a task definition. The message is the `ClientException` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The family is empty.
    #[error("Family should not be null or empty.")]
    FamilyEmpty,
    /// The family has characters other than letters, numbers, hyphens and underscores, or is
    /// longer than 255 characters.
    #[error(
        "Family contains invalid characters: '{family}'. Up to 255 letters (uppercase and \
         lowercase), numbers, hyphens, and underscores are allowed."
    )]
    FamilyInvalid {
        /// The family as given.
        family: String,
    },
    /// No containers.
    #[error("Container list cannot be empty.")]
    NoContainers,
    /// More than [`MAX_CONTAINERS`] containers.
    #[error("Too many containers: {count}. A task definition can have at most 10.")]
    TooManyContainers {
        /// How many there are.
        count: usize,
    },
    /// A container has no name.
    #[error("Container.name should not be null or empty.")]
    ContainerNameEmpty,
    /// A container name has characters other than letters, numbers, hyphens and underscores,
    /// or is longer than 255 characters.
    #[error(
        "Invalid container name '{name}'. Up to 255 letters (uppercase and lowercase), numbers, \
         underscores, and hyphens are allowed."
    )]
    ContainerNameInvalid {
        /// The name as given.
        name: String,
    },
    /// Two containers have the same name.
    #[error("Duplicate container name found: {name}")]
    DuplicateContainerName {
        /// The name.
        name: String,
    },
    /// A container has no image.
    #[error("Container.image should not be null or empty. (container '{container}')")]
    ImageEmpty {
        /// The container.
        container: String,
    },
    /// A container asks for privileged mode.
    #[error(
        "Invalid setting for container '{container}'. 'privileged' is not supported: berth runs \
         no privileged containers."
    )]
    PrivilegedNotSupported {
        /// The container.
        container: String,
    },
    /// Task `cpu` in no form ECS accepts, or out of range.
    #[error(
        "Invalid 'cpu' setting for task: '{value}'. Give CPU units from 128 to 196608 (\"256\") \
         or vCPUs (\"0.25 vCPU\")."
    )]
    InvalidTaskCpu {
        /// The value as given.
        value: String,
    },
    /// Task `memory` in no form ECS accepts.
    #[error("Invalid 'memory' setting for task: '{value}'. Give MiB (\"512\") or GB (\"0.5 GB\").")]
    InvalidTaskMemory {
        /// The value as given.
        value: String,
    },
    /// FARGATE with a network mode other than `awsvpc`.
    #[error("Fargate only supports network mode ‘awsvpc’.")]
    FargateNetworkMode,
    /// FARGATE without task `cpu`.
    #[error("Fargate requires that 'cpu' be defined at the task level.")]
    FargateCpuRequired,
    /// FARGATE without task `memory`.
    #[error("Fargate requires that 'memory' be defined at the task level.")]
    FargateMemoryRequired,
    /// FARGATE with a cpu/memory pair that is not a published Fargate size.
    #[error(
        "No Fargate configuration exists for given values: {cpu} CPU, {memory} memory. See the \
         Amazon ECS documentation for the valid values."
    )]
    NoFargateConfiguration {
        /// Task CPU units.
        cpu: u32,
        /// Task memory, MiB.
        memory: u32,
    },
    /// FARGATE with a setting Fargate does not support.
    #[error("Fargate does not support {setting}.")]
    FargateUnsupported {
        /// The setting, and where it is.
        setting: String,
    },
    /// A container's `memoryReservation` is above its `memory`.
    #[error(
        "Invalid setting for container '{container}'. 'memory' ({memory}) must be greater than \
         or equal to 'memoryReservation' ({reservation})."
    )]
    ReservationAboveLimit {
        /// The container.
        container: String,
        /// Its `memory`.
        memory: u32,
        /// Its `memoryReservation`.
        reservation: u32,
    },
    /// A container's `memory` or `memoryReservation` is below [`MIN_CONTAINER_MEMORY`].
    #[error(
        "Invalid '{setting}' setting for container '{container}': {value} MiB. The minimum is \
         6 MiB."
    )]
    ContainerMemoryTooSmall {
        /// The container.
        container: String,
        /// `memory` or `memoryReservation`.
        setting: &'static str,
        /// The value.
        value: u32,
    },
    /// A container's `memory` is above the task's.
    #[error("The 'memory' setting for container '{container}' is greater than for the task.")]
    ContainerMemoryAboveTask {
        /// The container.
        container: String,
    },
    /// The containers' `memoryReservation` values add up to more than the task's memory.
    #[error(
        "The sum of all container 'memoryReservation' values cannot be greater than the value of \
         the task 'memory'."
    )]
    ReservationSumAboveTask {
        /// The sum, MiB.
        sum: u64,
        /// The task's memory, MiB.
        task: u32,
    },
    /// Without task memory, a container sets neither `memory` nor `memoryReservation`.
    #[error(
        "Invalid setting for container '{container}'. At least one of 'memory' or \
         'memoryReservation' must be specified."
    )]
    ContainerMemoryRequired {
        /// The container.
        container: String,
    },
    /// The containers' `cpu` values add up to more than the task's.
    #[error(
        "The sum of all container 'cpu' values cannot be greater than the value of the task 'cpu'."
    )]
    CpuSumAboveTask {
        /// The sum, CPU units.
        sum: u64,
        /// The task's CPU units.
        task: u32,
    },
    /// Every container is `essential: false`.
    #[error("Task definition doesn't have any essential container.")]
    NoEssentialContainer,
    /// `containerPort` missing or out of range.
    #[error("Invalid 'containerPort' setting for container '{container}'.")]
    InvalidContainerPort {
        /// The container.
        container: String,
    },
    /// `hostPort` out of range.
    #[error("Invalid 'hostPort' setting for container '{container}'.")]
    InvalidHostPort {
        /// The container.
        container: String,
    },
    /// In `awsvpc` or `host` mode, a `hostPort` differs from its `containerPort`.
    #[error(
        "When networkMode={network_mode}, the host ports and container ports in port mappings \
         must match."
    )]
    HostPortMismatch {
        /// The task's network mode.
        network_mode: NetworkMode,
        /// The container.
        container: String,
    },
    /// Port mappings in `none` mode.
    #[error(
        "Invalid 'portMappings' setting for container '{container}'. Port mappings are not \
         supported when networkMode=none."
    )]
    PortMappingsWithoutNetwork {
        /// The container.
        container: String,
    },
    /// The same port is taken twice in the task.
    #[error(
        "Port {port}/{protocol} is mapped more than once in the task (container '{container}')."
    )]
    DuplicatePort {
        /// The port.
        port: u16,
        /// Its protocol.
        protocol: TransportProtocol,
        /// The container with the second mapping.
        container: String,
    },
    /// `dependsOn` names a container the task does not have. (The '+' is in ECS's own text.)
    #[error("Cannot depend on container + '{target}' because it does not exist")]
    DependencyNotFound {
        /// The container that declares the dependency.
        container: String,
        /// The missing container.
        target: String,
    },
    /// `HEALTHY` on a container without a health check.
    #[error(
        "Invalid 'dependsOn' setting for container '{container}'. The HEALTHY condition requires \
         container '{target}' to have a healthCheck."
    )]
    HealthyWithoutHealthCheck {
        /// The dependent container.
        container: String,
        /// The container without a health check.
        target: String,
    },
    /// `SUCCESS` or `COMPLETE` on an essential container.
    #[error(
        "A dependency container with SUCCESS or COMPLETE condition cannot be an essential container"
    )]
    ExitConditionOnEssential {
        /// The dependent container.
        container: String,
        /// The essential container depended on.
        target: String,
    },
    /// `dependsOn` and `links` together form a cycle.
    #[error("Container dependencies should not have a cycle: {}", cycle.join(" -> "))]
    DependencyCycle {
        /// The containers of the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// `links` form a cycle.
    #[error("Container links should not have a cycle")]
    LinkCycle {
        /// The containers of the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// `links` outside `bridge` mode.
    #[error("Links are not supported when networkMode={network_mode}.")]
    LinksNotSupported {
        /// The task's network mode.
        network_mode: NetworkMode,
    },
    /// A link names a container the task does not have.
    #[error(
        "Invalid 'links' setting for container '{container}'. Container '{target}' does not exist."
    )]
    LinkTargetNotFound {
        /// The linking container.
        container: String,
        /// The missing container.
        target: String,
    },
    /// A volume has no name, an invalid one, or one used twice.
    #[error("Invalid volume name '{name}': {problem}.")]
    InvalidVolumeName {
        /// The name.
        name: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A mount point names no volume of the task, or has no container path.
    #[error("Invalid 'mountPoints' setting for container '{container}'. {problem}")]
    InvalidMountPoint {
        /// The container.
        container: String,
        /// What is wrong.
        problem: String,
    },
    /// `volumesFrom` names a container the task does not have, or the container itself.
    #[error(
        "Invalid 'volumesFrom' setting for container '{container}'. Container '{source_container}' {problem}."
    )]
    InvalidVolumesFrom {
        /// The mounting container.
        container: String,
        /// The container named.
        source_container: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A health check's command is not `CMD ...` or `CMD-SHELL ...`.
    #[error(
        "Invalid 'healthCheck' setting for container '{container}'. The command must be \
         [\"CMD\", <argv>...] or [\"CMD-SHELL\", <shell command>]."
    )]
    HealthCheckCommand {
        /// The container.
        container: String,
    },
    /// A health check setting out of range.
    #[error(
        "Invalid 'healthCheck' setting for container '{container}'. '{setting}' must be between \
         {min} and {max}, not {value}."
    )]
    HealthCheckRange {
        /// The container.
        container: String,
        /// `interval`, `timeout`, `retries` or `startPeriod`.
        setting: &'static str,
        /// The least allowed.
        min: u32,
        /// The most allowed.
        max: u32,
        /// The value given.
        value: u32,
    },
    /// A log driver without the options ECS requires for it.
    #[error("Log driver {driver} requires options: {}", missing.join(", "))]
    LogDriverOptions {
        /// The container.
        container: String,
        /// The driver.
        driver: String,
        /// The options missing.
        missing: Vec<String>,
    },
    /// A ulimit whose soft limit is above its hard limit.
    #[error(
        "Invalid 'ulimits' setting for container '{container}'. The soft limit of '{name}' \
         ({soft}) is greater than its hard limit ({hard})."
    )]
    UlimitSoftAboveHard {
        /// The container.
        container: String,
        /// The limit's name.
        name: String,
        /// Soft limit.
        soft: i64,
        /// Hard limit.
        hard: i64,
    },
    /// An environment variable or secret without a name, or a secret without `valueFrom`.
    #[error("Invalid '{setting}' setting for container '{container}'. {problem}")]
    InvalidEnvironment {
        /// The container.
        container: String,
        /// `environment` or `secrets`.
        setting: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// More than [`MAX_PLACEMENT_CONSTRAINTS`] placement constraints.
    #[error("Too many placement constraints: {count}. The maximum is 10.")]
    TooManyPlacementConstraints {
        /// How many there are.
        count: usize,
    },
    /// A `memberOf` constraint without an expression.
    #[error("A memberOf placement constraint requires an expression.")]
    MemberOfWithoutExpression,
    /// A `memberOf` expression that does not parse.
    #[error("Invalid placement constraint expression '{expression}': {error}")]
    InvalidPlacementExpression {
        /// The expression.
        expression: String,
        /// Where and why it does not parse.
        error: QueryError,
    },
    /// `ephemeralStorage` out of range.
    #[error(
        "Invalid 'ephemeralStorage' setting: sizeInGiB must be between 21 and 200, not {size}."
    )]
    InvalidEphemeralStorage {
        /// The size given.
        size: u32,
    },
}

/// What validation resolved: the task's size and network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Task CPU units, when set.
    pub cpu: Option<u32>,
    /// Task memory in MiB, when set.
    pub memory: Option<u32>,
    /// The network mode (`bridge` when none was given).
    pub network_mode: NetworkMode,
}

/// Whether `name` is a valid family (or container) name: 1 to 255 letters, numbers, hyphens
/// and underscores.
pub fn is_valid_family(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks `request` as `RegisterTaskDefinition` does. See the module documentation for the
/// checks and their order.
pub fn validate(request: &RegisterTaskDefinition) -> Result<Checked, ValidationError> {
    if request.family.is_empty() {
        return Err(ValidationError::FamilyEmpty);
    }
    if !is_valid_family(&request.family) {
        return Err(ValidationError::FamilyInvalid {
            family: request.family.clone(),
        });
    }
    let containers = &request.container_definitions;
    check_containers(containers)?;

    let cpu = match &request.cpu {
        Some(value) => Some(
            parse_cpu(value)
                .filter(|units| TASK_CPU_RANGE.contains(units))
                .ok_or_else(|| ValidationError::InvalidTaskCpu {
                    value: value.clone(),
                })?,
        ),
        None => None,
    };
    let memory = match &request.memory {
        Some(value) => Some(parse_memory(value).filter(|&mib| mib > 0).ok_or_else(|| {
            ValidationError::InvalidTaskMemory {
                value: value.clone(),
            }
        })?),
        None => None,
    };
    let checked = Checked {
        cpu,
        memory,
        network_mode: request.network_mode.unwrap_or_default(),
    };
    if request
        .requires_compatibilities
        .contains(&Compatibility::Fargate)
    {
        fargate_rules(request, &checked)?;
    }

    check_memory(containers, checked.memory)?;
    if let Some(task_cpu) = checked.cpu {
        let sum: u64 = containers.iter().map(|c| u64::from(c.cpu)).sum();
        if sum > u64::from(task_cpu) {
            return Err(ValidationError::CpuSumAboveTask {
                sum,
                task: task_cpu,
            });
        }
    }
    if !containers.iter().any(ContainerDefinition::is_essential) {
        return Err(ValidationError::NoEssentialContainer);
    }
    check_ports(containers, checked.network_mode)?;
    check_dependencies(containers, checked.network_mode)?;
    check_volumes(request)?;
    for container in containers {
        check_container_settings(container)?;
    }
    check_placement_constraints(request)?;
    if let Some(storage) = request.ephemeral_storage {
        if !(21..=200).contains(&storage.size_in_gib) {
            return Err(ValidationError::InvalidEphemeralStorage {
                size: storage.size_in_gib,
            });
        }
    }
    Ok(checked)
}

/// Fargate's own rules, beyond those every task definition follows: `awsvpc`, task `cpu` and
/// `memory` set to one of the published combinations ([`fargate::is_valid`]), no host paths,
/// Docker volumes or host PID/IPC namespaces, and `stopTimeout` at most 120 seconds.
///
/// [`validate`] applies them when `requiresCompatibilities` holds FARGATE; registration applies
/// them to every definition to decide whether `compatibilities` lists FARGATE.
pub fn fargate_rules(
    request: &RegisterTaskDefinition,
    checked: &Checked,
) -> Result<(), ValidationError> {
    if checked.network_mode != NetworkMode::Awsvpc {
        return Err(ValidationError::FargateNetworkMode);
    }
    let cpu = checked.cpu.ok_or(ValidationError::FargateCpuRequired)?;
    let memory = checked
        .memory
        .ok_or(ValidationError::FargateMemoryRequired)?;
    if !fargate::is_valid(cpu, memory) {
        return Err(ValidationError::NoFargateConfiguration { cpu, memory });
    }
    let unsupported = |setting: String| Err(ValidationError::FargateUnsupported { setting });
    for volume in &request.volumes {
        if volume
            .host
            .as_ref()
            .is_some_and(|host| host.source_path.is_some())
        {
            return unsupported(format!("'host.sourcePath' (volume '{}')", volume.name));
        }
        if volume.docker_volume_configuration.is_some() {
            return unsupported(format!(
                "'dockerVolumeConfiguration' (volume '{}')",
                volume.name
            ));
        }
    }
    if request.pid_mode == Some(PidMode::Host) {
        return unsupported("pidMode 'host'".into());
    }
    if request.ipc_mode.is_some() {
        return unsupported("'ipcMode'".into());
    }
    for container in &request.container_definitions {
        if let Some(timeout) = container
            .stop_timeout
            .filter(|&timeout| timeout > FARGATE_MAX_STOP_TIMEOUT)
        {
            return unsupported(format!(
                "a 'stopTimeout' above 120 seconds ({timeout} for container '{}')",
                container.name
            ));
        }
    }
    Ok(())
}

fn check_containers(containers: &[ContainerDefinition]) -> Result<(), ValidationError> {
    if containers.is_empty() {
        return Err(ValidationError::NoContainers);
    }
    if containers.len() > MAX_CONTAINERS {
        return Err(ValidationError::TooManyContainers {
            count: containers.len(),
        });
    }
    let mut names = HashSet::new();
    for container in containers {
        if container.name.is_empty() {
            return Err(ValidationError::ContainerNameEmpty);
        }
        if !is_valid_family(&container.name) {
            return Err(ValidationError::ContainerNameInvalid {
                name: container.name.clone(),
            });
        }
        if !names.insert(container.name.as_str()) {
            return Err(ValidationError::DuplicateContainerName {
                name: container.name.clone(),
            });
        }
        if container.image.trim().is_empty() {
            return Err(ValidationError::ImageEmpty {
                container: container.name.clone(),
            });
        }
        if container.privileged == Some(true) {
            return Err(ValidationError::PrivilegedNotSupported {
                container: container.name.clone(),
            });
        }
    }
    Ok(())
}

fn check_memory(
    containers: &[ContainerDefinition],
    task_memory: Option<u32>,
) -> Result<(), ValidationError> {
    for container in containers {
        for (setting, value) in [
            ("memory", container.memory),
            ("memoryReservation", container.memory_reservation),
        ] {
            if let Some(value) = value.filter(|&value| value < MIN_CONTAINER_MEMORY) {
                return Err(ValidationError::ContainerMemoryTooSmall {
                    container: container.name.clone(),
                    setting,
                    value,
                });
            }
        }
        if let (Some(memory), Some(reservation)) = (container.memory, container.memory_reservation)
        {
            if reservation > memory {
                return Err(ValidationError::ReservationAboveLimit {
                    container: container.name.clone(),
                    memory,
                    reservation,
                });
            }
        }
        match (task_memory, container.memory) {
            (Some(task), Some(memory)) if memory > task => {
                return Err(ValidationError::ContainerMemoryAboveTask {
                    container: container.name.clone(),
                });
            }
            (None, None) if container.memory_reservation.is_none() => {
                return Err(ValidationError::ContainerMemoryRequired {
                    container: container.name.clone(),
                });
            }
            _ => {}
        }
    }
    if let Some(task) = task_memory {
        let sum: u64 = containers
            .iter()
            .filter_map(|c| c.memory_reservation)
            .map(u64::from)
            .sum();
        if sum > u64::from(task) {
            return Err(ValidationError::ReservationSumAboveTask { sum, task });
        }
    }
    Ok(())
}

fn check_ports(
    containers: &[ContainerDefinition],
    mode: NetworkMode,
) -> Result<(), ValidationError> {
    let mut taken = BTreeSet::new();
    for container in containers {
        let name = || container.name.clone();
        if mode == NetworkMode::None && !container.port_mappings.is_empty() {
            return Err(ValidationError::PortMappingsWithoutNetwork { container: name() });
        }
        for mapping in &container.port_mappings {
            if !(1..=65535).contains(&mapping.container_port) {
                return Err(ValidationError::InvalidContainerPort { container: name() });
            }
            if mapping.host_port.is_some_and(|port| port > 65535) {
                return Err(ValidationError::InvalidHostPort { container: name() });
            }
            if matches!(mode, NetworkMode::Awsvpc | NetworkMode::Host)
                && mapping
                    .host_port
                    .is_some_and(|port| port != 0 && port != mapping.container_port)
            {
                return Err(ValidationError::HostPortMismatch {
                    network_mode: mode,
                    container: name(),
                });
            }
            // The ports the task takes in its network namespace (awsvpc: the task's own; host
            // and bridge: the instance's published ports).
            if let Some(port) = mapping
                .static_host_port(mode)
                .filter(|&port| !taken.insert((port, mapping.protocol())))
            {
                return Err(ValidationError::DuplicatePort {
                    port,
                    protocol: mapping.protocol(),
                    container: name(),
                });
            }
        }
    }
    Ok(())
}

fn check_dependencies(
    containers: &[ContainerDefinition],
    mode: NetworkMode,
) -> Result<(), ValidationError> {
    let by_name: HashMap<&str, &ContainerDefinition> =
        containers.iter().map(|c| (c.name.as_str(), c)).collect();
    for container in containers {
        for dependency in &container.depends_on {
            let target = by_name
                .get(dependency.container_name.as_str())
                .ok_or_else(|| ValidationError::DependencyNotFound {
                    container: container.name.clone(),
                    target: dependency.container_name.clone(),
                })?;
            match dependency.condition {
                ContainerCondition::Healthy if target.health_check.is_none() => {
                    return Err(ValidationError::HealthyWithoutHealthCheck {
                        container: container.name.clone(),
                        target: target.name.clone(),
                    });
                }
                ContainerCondition::Success | ContainerCondition::Complete
                    if target.is_essential() =>
                {
                    return Err(ValidationError::ExitConditionOnEssential {
                        container: container.name.clone(),
                        target: target.name.clone(),
                    });
                }
                _ => {}
            }
        }
        if !container.links.is_empty() && mode != NetworkMode::Bridge {
            return Err(ValidationError::LinksNotSupported { network_mode: mode });
        }
        for link in &container.links {
            let target = link_target(link);
            if !by_name.contains_key(target) {
                return Err(ValidationError::LinkTargetNotFound {
                    container: container.name.clone(),
                    target: target.to_owned(),
                });
            }
        }
    }
    let names = |cycle: Vec<usize>| -> Vec<String> {
        cycle
            .into_iter()
            .map(|index| containers[index].name.clone())
            .collect()
    };
    let links = edges(containers, false, true);
    if let Err(cycle) = topological_order(containers.len(), &links) {
        return Err(ValidationError::LinkCycle {
            cycle: names(cycle),
        });
    }
    start_order(containers).map(|_| ())
}

/// The indexes of `containers` in an order that puts every container after those it depends on
/// (`dependsOn`) or links to, keeping the given order otherwise. Targets that do not exist are
/// ignored; a cycle is a [`ValidationError::DependencyCycle`].
pub fn start_order(containers: &[ContainerDefinition]) -> Result<Vec<usize>, ValidationError> {
    let edges = edges(containers, true, true);
    topological_order(containers.len(), &edges).map_err(|cycle| ValidationError::DependencyCycle {
        cycle: cycle
            .into_iter()
            .map(|index| containers[index].name.clone())
            .collect(),
    })
}

/// `name:alias` or `name`: the container linked to.
fn link_target(link: &str) -> &str {
    link.split_once(':').map_or(link, |(name, _)| name)
}

/// Edges `(before, after)`: the container depended on or linked to comes before.
fn edges(containers: &[ContainerDefinition], depends_on: bool, links: bool) -> Vec<(usize, usize)> {
    let index: HashMap<&str, usize> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut edges = Vec::new();
    for (after, container) in containers.iter().enumerate() {
        let targets = container
            .depends_on
            .iter()
            .filter(|_| depends_on)
            .map(|d| d.container_name.as_str())
            .chain(
                container
                    .links
                    .iter()
                    .filter(|_| links)
                    .map(|l| link_target(l)),
            );
        for target in targets {
            if let Some(&before) = index.get(target) {
                edges.push((before, after));
            }
        }
    }
    edges
}

/// Kahn's algorithm, always taking the lowest ready index. On a cycle, returns one cycle's
/// nodes, the first repeated at the end.
fn topological_order(count: usize, edges: &[(usize, usize)]) -> Result<Vec<usize>, Vec<usize>> {
    let mut indegree = vec![0usize; count];
    let mut successors = vec![Vec::new(); count];
    for &(before, after) in edges {
        indegree[after] += 1;
        successors[before].push(after);
    }
    let mut ready: BTreeSet<usize> = (0..count).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(count);
    while let Some(next) = ready.pop_first() {
        order.push(next);
        for &after in &successors[next] {
            indegree[after] -= 1;
            if indegree[after] == 0 {
                ready.insert(after);
            }
        }
    }
    if order.len() == count {
        return Ok(order);
    }
    // Every node left has a predecessor that is also left: walk predecessors until one repeats.
    let mut predecessors = vec![Vec::new(); count];
    for &(before, after) in edges {
        if indegree[after] > 0 && indegree[before] > 0 {
            predecessors[after].push(before);
        }
    }
    let start = (0..count).find(|&i| indegree[i] > 0).unwrap_or(0);
    let mut path = vec![start];
    let mut seen = HashMap::from([(start, 0usize)]);
    let mut node = start;
    loop {
        let Some(&previous) = predecessors[node].iter().min() else {
            return Err(path);
        };
        if let Some(&at) = seen.get(&previous) {
            // path[k] depends on path[k + 1], and the last on path[at]: listed in that order,
            // each container is followed by one it waits for.
            let mut cycle: Vec<usize> = path[at..].to_vec();
            cycle.push(cycle[0]);
            return Err(cycle);
        }
        seen.insert(previous, path.len());
        path.push(previous);
        node = previous;
    }
}

fn check_volumes(request: &RegisterTaskDefinition) -> Result<(), ValidationError> {
    let mut volumes = HashSet::new();
    for volume in &request.volumes {
        let problem = if volume.name.is_empty() {
            Some("a volume needs a name")
        } else if !is_valid_family(&volume.name) {
            Some(
                "up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed",
            )
        } else if !volumes.insert(volume.name.as_str()) {
            Some("another volume of the task has the same name")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ValidationError::InvalidVolumeName {
                name: volume.name.clone(),
                problem,
            });
        }
    }
    let containers: HashSet<&str> = request
        .container_definitions
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for container in &request.container_definitions {
        for mount in &container.mount_points {
            let problem = if !volumes.contains(mount.source_volume.as_str()) {
                Some(format!(
                    "Volume '{}' is not defined in the task definition's volumes.",
                    mount.source_volume
                ))
            } else if !mount.container_path.starts_with('/') {
                Some(format!(
                    "The containerPath of volume '{}' must be an absolute path, not '{}'.",
                    mount.source_volume, mount.container_path
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ValidationError::InvalidMountPoint {
                    container: container.name.clone(),
                    problem,
                });
            }
        }
        for from in &container.volumes_from {
            let problem = if from.source_container == container.name {
                Some("is the container itself")
            } else if !containers.contains(from.source_container.as_str()) {
                Some("does not exist")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ValidationError::InvalidVolumesFrom {
                    container: container.name.clone(),
                    source_container: from.source_container.clone(),
                    problem,
                });
            }
        }
    }
    Ok(())
}

fn check_container_settings(container: &ContainerDefinition) -> Result<(), ValidationError> {
    let name = || container.name.clone();
    if let Some(check) = &container.health_check {
        if check.argv().is_none() {
            return Err(ValidationError::HealthCheckCommand { container: name() });
        }
        for (setting, value, min, max) in [
            ("interval", check.interval(), 5, 300),
            ("timeout", check.timeout(), 2, 60),
            ("retries", check.retries(), 1, 10),
            ("startPeriod", check.start_period(), 0, 300),
        ] {
            if !(min..=max).contains(&value) {
                return Err(ValidationError::HealthCheckRange {
                    container: name(),
                    setting,
                    min,
                    max,
                    value,
                });
            }
        }
    }
    if let Some(log) = &container.log_configuration {
        let missing: Vec<String> = log
            .log_driver
            .required_options()
            .iter()
            .filter(|option| !log.options.contains_key(**option))
            .map(|option| option.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(ValidationError::LogDriverOptions {
                container: name(),
                driver: log.log_driver.to_string(),
                missing,
            });
        }
    }
    for limit in &container.ulimits {
        if limit.soft_limit > limit.hard_limit {
            return Err(ValidationError::UlimitSoftAboveHard {
                container: name(),
                name: format!("{:?}", limit.name).to_ascii_lowercase(),
                soft: limit.soft_limit,
                hard: limit.hard_limit,
            });
        }
    }
    if container
        .environment
        .iter()
        .any(|pair| pair.name.is_empty())
    {
        return Err(ValidationError::InvalidEnvironment {
            container: name(),
            setting: "environment",
            problem: "Every variable needs a name.",
        });
    }
    if container
        .secrets
        .iter()
        .any(|secret| secret.name.is_empty())
    {
        return Err(ValidationError::InvalidEnvironment {
            container: name(),
            setting: "secrets",
            problem: "Every secret needs a name.",
        });
    }
    if container
        .secrets
        .iter()
        .any(|secret| secret.value_from.is_empty())
    {
        return Err(ValidationError::InvalidEnvironment {
            container: name(),
            setting: "secrets",
            problem: "Every secret needs a 'valueFrom'.",
        });
    }
    Ok(())
}

fn check_placement_constraints(request: &RegisterTaskDefinition) -> Result<(), ValidationError> {
    let constraints = &request.placement_constraints;
    if constraints.len() > MAX_PLACEMENT_CONSTRAINTS {
        return Err(ValidationError::TooManyPlacementConstraints {
            count: constraints.len(),
        });
    }
    for constraint in constraints {
        let expression = constraint
            .expression
            .as_deref()
            .filter(|e| !e.trim().is_empty())
            .ok_or(ValidationError::MemberOfWithoutExpression)?;
        query::Expression::parse(expression).map_err(|error| {
            ValidationError::InvalidPlacementExpression {
                expression: expression.to_owned(),
                error,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::taskdef::{
        ContainerDependency, DockerVolumeConfiguration, EphemeralStorage, HealthCheck,
        HostVolumeProperties, KeyValuePair, LogConfiguration, LogDriver, MountPoint, PortMapping,
        Secret, TaskDefinitionPlacementConstraint, TaskDefinitionPlacementConstraintType, Ulimit,
        UlimitName, Volume, VolumeFrom,
    };

    fn container(name: &str) -> ContainerDefinition {
        ContainerDefinition {
            name: name.into(),
            image: "busybox".into(),
            memory: Some(128),
            ..ContainerDefinition::default()
        }
    }

    fn request(containers: Vec<ContainerDefinition>) -> RegisterTaskDefinition {
        RegisterTaskDefinition {
            family: "app".into(),
            container_definitions: containers,
            ..RegisterTaskDefinition::default()
        }
    }

    fn fargate(
        cpu: &str,
        memory: &str,
        containers: Vec<ContainerDefinition>,
    ) -> RegisterTaskDefinition {
        RegisterTaskDefinition {
            network_mode: Some(NetworkMode::Awsvpc),
            requires_compatibilities: vec![Compatibility::Fargate],
            cpu: Some(cpu.into()),
            memory: Some(memory.into()),
            ..request(containers)
        }
    }

    fn message(request: &RegisterTaskDefinition) -> String {
        validate(request).unwrap_err().to_string()
    }

    fn depends(target: &str, condition: ContainerCondition) -> ContainerDependency {
        ContainerDependency {
            container_name: target.into(),
            condition,
        }
    }

    fn port(container_port: u32, host_port: Option<u32>) -> PortMapping {
        PortMapping {
            container_port,
            host_port,
            ..PortMapping::default()
        }
    }

    #[test]
    fn a_plain_ec2_definition_is_valid() {
        let checked = validate(&request(vec![container("web")])).unwrap();
        assert_eq!(
            checked,
            Checked {
                cpu: None,
                memory: None,
                network_mode: NetworkMode::Bridge
            }
        );
    }

    #[test]
    fn family_rules() {
        let mut r = request(vec![container("web")]);
        r.family = String::new();
        assert_eq!(message(&r), "Family should not be null or empty.");
        r.family = "my app".into();
        assert!(message(&r).starts_with("Family contains invalid characters: 'my app'."));
        r.family = "a".repeat(256);
        assert!(message(&r).starts_with("Family contains invalid characters"));
        r.family = format!("{}_-9", "a".repeat(252));
        assert!(validate(&r).is_ok());
    }

    #[test]
    fn container_list_rules() {
        assert_eq!(message(&request(vec![])), "Container list cannot be empty.");
        let many = (0..11).map(|i| container(&format!("c{i}"))).collect();
        assert_eq!(
            message(&request(many)),
            "Too many containers: 11. A task definition can have at most 10."
        );
        assert_eq!(
            message(&request(vec![container("")])),
            "Container.name should not be null or empty."
        );
        assert!(
            message(&request(vec![container("web.1")]))
                .starts_with("Invalid container name 'web.1'.")
        );
        assert_eq!(
            message(&request(vec![container("web"), container("web")])),
            "Duplicate container name found: web"
        );
        let mut no_image = container("web");
        no_image.image = String::new();
        assert_eq!(
            message(&request(vec![no_image])),
            "Container.image should not be null or empty. (container 'web')"
        );
        let mut privileged = container("root");
        privileged.privileged = Some(true);
        assert_eq!(
            message(&request(vec![privileged])),
            "Invalid setting for container 'root'. 'privileged' is not supported: berth runs no \
             privileged containers."
        );
    }

    #[test]
    fn task_cpu_and_memory_must_parse() {
        let mut r = request(vec![container("web")]);
        r.cpu = Some("lots".into());
        assert!(message(&r).starts_with("Invalid 'cpu' setting for task: 'lots'."));
        r.cpu = Some("64".into());
        assert!(message(&r).starts_with("Invalid 'cpu' setting for task: '64'."));
        r.cpu = Some("1 vCPU".into());
        r.memory = Some("1 TB".into());
        assert!(message(&r).starts_with("Invalid 'memory' setting for task: '1 TB'."));
        r.memory = Some("1 GB".into());
        let checked = validate(&r).unwrap();
        assert_eq!((checked.cpu, checked.memory), (Some(1024), Some(1024)));
    }

    #[test]
    fn fargate_requires_awsvpc() {
        let mut r = fargate("256", "512", vec![container("web")]);
        r.network_mode = None;
        assert_eq!(message(&r), "Fargate only supports network mode ‘awsvpc’.");
        r.network_mode = Some(NetworkMode::Bridge);
        assert_eq!(message(&r), "Fargate only supports network mode ‘awsvpc’.");
    }

    #[test]
    fn fargate_requires_task_cpu_and_memory() {
        let mut r = fargate("256", "512", vec![container("web")]);
        r.cpu = None;
        assert_eq!(
            message(&r),
            "Fargate requires that 'cpu' be defined at the task level."
        );
        r.cpu = Some("256".into());
        r.memory = None;
        assert_eq!(
            message(&r),
            "Fargate requires that 'memory' be defined at the task level."
        );
    }

    #[test]
    fn fargate_requires_a_published_size() {
        let r = fargate("512", "128", vec![container("web")]);
        assert_eq!(
            message(&r),
            "No Fargate configuration exists for given values: 512 CPU, 128 memory. See the \
             Amazon ECS documentation for the valid values."
        );
        let r = fargate("1 vCPU", "1 GB", vec![container("web")]);
        assert_eq!(
            message(&r),
            "No Fargate configuration exists for given values: 1024 CPU, 1024 memory. See the \
             Amazon ECS documentation for the valid values."
        );
        assert!(validate(&fargate("0.5 vCPU", "3GB", vec![container("web")])).is_ok());
    }

    #[test]
    fn fargate_refuses_what_it_cannot_run() {
        let mut r = fargate("256", "512", vec![container("web")]);
        r.volumes = vec![Volume {
            name: "data".into(),
            host: Some(HostVolumeProperties {
                source_path: Some("/srv".into()),
            }),
            docker_volume_configuration: None,
        }];
        assert_eq!(
            message(&r),
            "Fargate does not support 'host.sourcePath' (volume 'data')."
        );
        r.volumes[0] = Volume {
            name: "data".into(),
            host: None,
            docker_volume_configuration: Some(DockerVolumeConfiguration::default()),
        };
        assert!(message(&r).contains("'dockerVolumeConfiguration' (volume 'data')"));
        r.volumes[0].docker_volume_configuration = None;
        r.volumes[0].host = Some(HostVolumeProperties::default());
        assert!(
            validate(&r).is_ok(),
            "a task-scoped host volume is fine on Fargate"
        );

        let mut slow = container("web");
        slow.stop_timeout = Some(300);
        let r = fargate("256", "512", vec![slow]);
        assert!(message(&r).contains("'stopTimeout' above 120 seconds (300 for container 'web')"));
        let mut r = fargate("256", "512", vec![container("web")]);
        r.pid_mode = Some(PidMode::Host);
        assert_eq!(message(&r), "Fargate does not support pidMode 'host'.");
    }

    #[test]
    fn container_memory_must_fit_the_task() {
        let mut big = container("worker");
        big.memory = Some(1024);
        let mut r = request(vec![container("web"), big]);
        r.memory = Some("512".into());
        assert_eq!(
            message(&r),
            "The 'memory' setting for container 'worker' is greater than for the task."
        );
    }

    #[test]
    fn reservations_must_sum_within_the_task() {
        let mut a = container("a");
        a.memory_reservation = Some(100);
        let mut b = container("b");
        b.memory_reservation = Some(100);
        let mut r = request(vec![a, b]);
        r.memory = Some("128".into());
        assert_eq!(
            validate(&r).unwrap_err(),
            ValidationError::ReservationSumAboveTask {
                sum: 200,
                task: 128
            }
        );
        assert_eq!(
            message(&r),
            "The sum of all container 'memoryReservation' values cannot be greater than the value \
             of the task 'memory'."
        );
    }

    #[test]
    fn ec2_containers_need_memory_without_task_memory() {
        let mut bare = container("web");
        bare.memory = None;
        assert_eq!(
            message(&request(vec![bare.clone()])),
            "Invalid setting for container 'web'. At least one of 'memory' or \
             'memoryReservation' must be specified."
        );
        bare.memory_reservation = Some(64);
        assert!(validate(&request(vec![bare.clone()])).is_ok());
        bare.memory_reservation = None;
        let mut with_task_memory = request(vec![bare]);
        with_task_memory.memory = Some("256".into());
        assert!(validate(&with_task_memory).is_ok());
    }

    #[test]
    fn reservation_must_not_exceed_the_limit() {
        let mut web = container("web");
        web.memory = Some(128);
        web.memory_reservation = Some(256);
        assert_eq!(
            message(&request(vec![web.clone()])),
            "Invalid setting for container 'web'. 'memory' (128) must be greater than or equal to \
             'memoryReservation' (256)."
        );
        web.memory_reservation = Some(128);
        assert!(validate(&request(vec![web.clone()])).is_ok());
        web.memory = Some(4);
        web.memory_reservation = None;
        assert_eq!(
            message(&request(vec![web])),
            "Invalid 'memory' setting for container 'web': 4 MiB. The minimum is 6 MiB."
        );
    }

    #[test]
    fn container_cpu_must_sum_within_the_task() {
        let mut a = container("a");
        a.cpu = 200;
        let mut b = container("b");
        b.cpu = 100;
        let mut r = request(vec![a, b]);
        r.cpu = Some("256".into());
        assert_eq!(
            message(&r),
            "The sum of all container 'cpu' values cannot be greater than the value of the task \
             'cpu'."
        );
    }

    #[test]
    fn one_container_must_be_essential() {
        let mut a = container("a");
        a.essential = Some(false);
        let mut b = container("b");
        b.essential = Some(false);
        assert_eq!(
            message(&request(vec![a.clone(), b])),
            "Task definition doesn't have any essential container."
        );
        assert!(validate(&request(vec![a, container("c")])).is_ok());
    }

    #[test]
    fn host_ports_must_match_in_awsvpc_and_host_modes() {
        let mut web = container("web");
        web.port_mappings = vec![port(80, Some(8080))];
        for mode in [NetworkMode::Awsvpc, NetworkMode::Host] {
            let mut r = request(vec![web.clone()]);
            r.network_mode = Some(mode);
            assert_eq!(
                message(&r),
                format!(
                    "When networkMode={mode}, the host ports and container ports in port \
                     mappings must match."
                )
            );
        }
        let mut r = request(vec![web.clone()]);
        r.network_mode = Some(NetworkMode::Bridge);
        assert!(validate(&r).is_ok());
        web.port_mappings = vec![port(80, Some(80)), port(443, None), port(8443, Some(0))];
        r = request(vec![web]);
        r.network_mode = Some(NetworkMode::Awsvpc);
        assert!(validate(&r).is_ok());
    }

    #[test]
    fn port_numbers_and_modes_are_checked() {
        let mut web = container("web");
        web.port_mappings = vec![port(0, None)];
        assert_eq!(
            message(&request(vec![web.clone()])),
            "Invalid 'containerPort' setting for container 'web'."
        );
        web.port_mappings = vec![port(80, Some(70_000))];
        assert_eq!(
            message(&request(vec![web.clone()])),
            "Invalid 'hostPort' setting for container 'web'."
        );
        web.port_mappings = vec![port(80, None)];
        let mut none = request(vec![web]);
        none.network_mode = Some(NetworkMode::None);
        assert!(message(&none).contains("Port mappings are not supported when networkMode=none."));
    }

    #[test]
    fn a_port_cannot_be_taken_twice() {
        let mut a = container("a");
        a.port_mappings = vec![port(80, Some(8080))];
        let mut b = container("b");
        b.port_mappings = vec![port(81, Some(8080))];
        assert_eq!(
            message(&request(vec![a.clone(), b.clone()])),
            "Port 8080/tcp is mapped more than once in the task (container 'b')."
        );
        b.port_mappings[0].protocol = Some(TransportProtocol::Udp);
        assert!(validate(&request(vec![a.clone(), b])).is_ok());
        // Dynamic host ports never collide.
        let mut c = container("c");
        c.port_mappings = vec![port(80, None)];
        let mut d = container("d");
        d.port_mappings = vec![port(80, Some(0))];
        assert!(validate(&request(vec![c, d])).is_ok());
    }

    #[test]
    fn depends_on_must_name_existing_containers() {
        let mut app = container("app");
        app.depends_on = vec![depends("db", ContainerCondition::Start)];
        assert_eq!(
            message(&request(vec![app])),
            "Cannot depend on container + 'db' because it does not exist"
        );
    }

    #[test]
    fn healthy_needs_a_health_check_on_the_target() {
        let mut app = container("app");
        app.depends_on = vec![depends("db", ContainerCondition::Healthy)];
        let mut db = container("db");
        assert_eq!(
            message(&request(vec![app.clone(), db.clone()])),
            "Invalid 'dependsOn' setting for container 'app'. The HEALTHY condition requires \
             container 'db' to have a healthCheck."
        );
        db.health_check = Some(HealthCheck {
            command: vec!["CMD".into(), "pg_isready".into()],
            ..HealthCheck::default()
        });
        assert!(validate(&request(vec![app, db])).is_ok());
    }

    #[test]
    fn exit_conditions_need_a_non_essential_target() {
        let mut app = container("app");
        app.depends_on = vec![depends("migrate", ContainerCondition::Success)];
        let mut migrate = container("migrate");
        assert_eq!(
            message(&request(vec![app.clone(), migrate.clone()])),
            "A dependency container with SUCCESS or COMPLETE condition cannot be an essential \
             container"
        );
        migrate.essential = Some(false);
        assert!(validate(&request(vec![app, migrate])).is_ok());
    }

    #[test]
    fn dependency_cycles_are_refused_and_named() {
        let mut a = container("a");
        a.depends_on = vec![depends("b", ContainerCondition::Start)];
        let mut b = container("b");
        b.depends_on = vec![depends("c", ContainerCondition::Start)];
        let mut c = container("c");
        c.depends_on = vec![depends("a", ContainerCondition::Start)];
        let error = validate(&request(vec![a, b, c.clone()])).unwrap_err();
        let ValidationError::DependencyCycle { cycle } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(cycle.len(), 4);
        assert_eq!(cycle.first(), cycle.last());
        assert!(
            error
                .to_string()
                .starts_with("Container dependencies should not have a cycle: ")
        );

        c.depends_on = vec![depends("c", ContainerCondition::Start)];
        assert_eq!(
            message(&request(vec![c])),
            "Container dependencies should not have a cycle: c -> c"
        );
    }

    #[test]
    fn links_are_bridge_only_exist_and_have_no_cycles() {
        let mut web = container("web");
        web.links = vec!["api:backend".into()];
        let mut api = container("api");
        assert_eq!(
            message(&request(vec![web.clone()])),
            "Invalid 'links' setting for container 'web'. Container 'api' does not exist."
        );
        let mut awsvpc = request(vec![web.clone(), api.clone()]);
        awsvpc.network_mode = Some(NetworkMode::Awsvpc);
        assert_eq!(
            message(&awsvpc),
            "Links are not supported when networkMode=awsvpc."
        );
        assert!(validate(&request(vec![web.clone(), api.clone()])).is_ok());
        api.links = vec!["web".into()];
        assert_eq!(
            message(&request(vec![web, api])),
            "Container links should not have a cycle"
        );
    }

    #[test]
    fn mounts_must_name_volumes_and_containers() {
        let mut web = container("web");
        web.mount_points = vec![MountPoint {
            source_volume: "data".into(),
            container_path: "/data".into(),
            read_only: None,
        }];
        assert_eq!(
            message(&request(vec![web.clone()])),
            "Invalid 'mountPoints' setting for container 'web'. Volume 'data' is not defined in \
             the task definition's volumes."
        );
        let mut r = request(vec![web.clone()]);
        r.volumes = vec![Volume {
            name: "data".into(),
            ..Volume::default()
        }];
        assert!(validate(&r).is_ok());
        r.volumes.push(r.volumes[0].clone());
        assert_eq!(
            message(&r),
            "Invalid volume name 'data': another volume of the task has the same name."
        );
        r.volumes.pop();
        r.container_definitions[0].mount_points[0].container_path = "data".into();
        assert!(message(&r).contains("must be an absolute path, not 'data'"));

        web.mount_points.clear();
        web.volumes_from = vec![VolumeFrom {
            source_container: "sidecar".into(),
            read_only: Some(true),
        }];
        assert_eq!(
            message(&request(vec![web])),
            "Invalid 'volumesFrom' setting for container 'web'. Container 'sidecar' does not exist."
        );
    }

    #[test]
    fn health_checks_are_checked() {
        let mut web = container("web");
        web.health_check = Some(HealthCheck {
            command: vec!["curl localhost".into()],
            ..HealthCheck::default()
        });
        assert!(message(&request(vec![web.clone()])).contains("The command must be [\"CMD\""));
        web.health_check = Some(HealthCheck {
            command: vec!["CMD-SHELL".into(), "true".into()],
            interval: Some(1),
            ..HealthCheck::default()
        });
        assert_eq!(
            message(&request(vec![web.clone()])),
            "Invalid 'healthCheck' setting for container 'web'. 'interval' must be between 5 and \
             300, not 1."
        );
        web.health_check.as_mut().unwrap().interval = None;
        web.health_check.as_mut().unwrap().retries = Some(11);
        assert!(
            message(&request(vec![web])).contains("'retries' must be between 1 and 10, not 11")
        );
    }

    #[test]
    fn awslogs_requires_its_options() {
        let mut web = container("web");
        web.log_configuration = Some(LogConfiguration {
            log_driver: LogDriver::Awslogs,
            options: [("awslogs-group".to_owned(), "/ecs/web".to_owned())].into(),
            secret_options: vec![],
        });
        assert_eq!(
            message(&request(vec![web])),
            "Log driver awslogs requires options: awslogs-region"
        );
    }

    #[test]
    fn ulimits_environment_and_secrets_are_checked() {
        let mut web = container("web");
        web.ulimits = vec![Ulimit {
            name: UlimitName::Nofile,
            soft_limit: 8192,
            hard_limit: 1024,
        }];
        assert_eq!(
            message(&request(vec![web.clone()])),
            "Invalid 'ulimits' setting for container 'web'. The soft limit of 'nofile' (8192) is \
             greater than its hard limit (1024)."
        );
        web.ulimits.clear();
        web.environment = vec![KeyValuePair::new("", "x")];
        assert!(message(&request(vec![web.clone()])).contains("Every variable needs a name."));
        web.environment.clear();
        web.secrets = vec![Secret {
            name: "TOKEN".into(),
            value_from: String::new(),
        }];
        assert!(message(&request(vec![web])).contains("Every secret needs a 'valueFrom'."));
    }

    #[test]
    fn placement_constraints_must_parse() {
        let mut r = request(vec![container("web")]);
        r.placement_constraints = vec![TaskDefinitionPlacementConstraint {
            kind: TaskDefinitionPlacementConstraintType::MemberOf,
            expression: Some("attribute:ecs.instance-type =~ t2.*".into()),
        }];
        assert!(validate(&r).is_ok());
        r.placement_constraints[0].expression = Some("attribute:stack ==".into());
        let error = message(&r);
        assert!(
            error.starts_with("Invalid placement constraint expression 'attribute:stack ==': "),
            "{error}"
        );
        assert!(error.contains("column"), "{error}");
        r.placement_constraints[0].expression = None;
        assert_eq!(
            message(&r),
            "A memberOf placement constraint requires an expression."
        );
        r.placement_constraints = vec![
            TaskDefinitionPlacementConstraint {
                kind: TaskDefinitionPlacementConstraintType::MemberOf,
                expression: Some("attribute:a exists".into()),
            };
            11
        ];
        assert_eq!(
            message(&r),
            "Too many placement constraints: 11. The maximum is 10."
        );
    }

    #[test]
    fn ephemeral_storage_range() {
        let mut r = fargate("256", "512", vec![container("web")]);
        r.ephemeral_storage = Some(EphemeralStorage { size_in_gib: 20 });
        assert_eq!(
            message(&r),
            "Invalid 'ephemeralStorage' setting: sizeInGiB must be between 21 and 200, not 20."
        );
        r.ephemeral_storage = Some(EphemeralStorage { size_in_gib: 50 });
        assert!(validate(&r).is_ok());
    }

    #[test]
    fn fargate_rules_decide_compatibility_without_being_required() {
        let r = request(vec![container("web")]);
        let checked = validate(&r).unwrap();
        assert_eq!(
            fargate_rules(&r, &checked),
            Err(ValidationError::FargateNetworkMode)
        );
        let mut r = fargate("256", "1024", vec![container("web")]);
        r.requires_compatibilities = vec![Compatibility::Ec2];
        let checked = validate(&r).unwrap();
        assert_eq!(fargate_rules(&r, &checked), Ok(()));
    }
}
