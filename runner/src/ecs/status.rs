//! Task and container states, as ECS names them.
//!
//! A task's `lastStatus` moves forward through ECS's lifecycle and never back:
//!
//! ```text
//! PROVISIONING -> PENDING -> ACTIVATING -> RUNNING -> DEACTIVATING -> STOPPING -> DEPROVISIONING -> STOPPED
//! ```
//!
//! - PROVISIONING: berth prepares what the task needs before its containers (its network
//!   namespace and address in `awsvpc` mode, its place on an instance).
//! - PENDING: the agent pulls images and creates the containers.
//! - ACTIVATING: the containers run; the task is being registered with its load balancer.
//! - RUNNING: the task is up.
//! - DEACTIVATING: the task is being drained from its load balancer.
//! - STOPPING: the containers get SIGTERM, then SIGKILL after `stopTimeout`.
//! - DEPROVISIONING: what PROVISIONING made is torn down.
//! - STOPPED: done; `stopCode`, `stoppedReason` and the exit codes say why.
//!
//! Steps a task does not need are skipped (a `bridge` task has nothing to deprovision), and a
//! task that fails early leaves from where it is: [`TaskStatus::can_move_to`] lists the moves.
//! `desiredStatus` ([`DesiredStatus`]) is where the control plane wants the task to end up.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A task's `lastStatus`. Ordered by the lifecycle.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Resources are being prepared before the containers.
    #[default]
    Provisioning,
    /// Images are pulled and containers created.
    Pending,
    /// Containers run; load balancer registration is under way.
    Activating,
    /// The task is up.
    Running,
    /// Load balancer deregistration and draining are under way.
    Deactivating,
    /// The containers are being stopped.
    Stopping,
    /// Resources made by PROVISIONING are being released.
    Deprovisioning,
    /// The task has stopped.
    Stopped,
}

impl TaskStatus {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskStatus; 8] = [
        TaskStatus::Provisioning,
        TaskStatus::Pending,
        TaskStatus::Activating,
        TaskStatus::Running,
        TaskStatus::Deactivating,
        TaskStatus::Stopping,
        TaskStatus::Deprovisioning,
        TaskStatus::Stopped,
    ];

    /// Whether a task may go from `self` to `next`.
    ///
    /// | from | to |
    /// |---|---|
    /// | PROVISIONING | PENDING, DEPROVISIONING, STOPPED |
    /// | PENDING | ACTIVATING, RUNNING, STOPPING, DEPROVISIONING, STOPPED |
    /// | ACTIVATING | RUNNING, DEACTIVATING, STOPPING |
    /// | RUNNING | DEACTIVATING, STOPPING |
    /// | DEACTIVATING | STOPPING |
    /// | STOPPING | DEPROVISIONING, STOPPED |
    /// | DEPROVISIONING | STOPPED |
    /// | STOPPED | nothing |
    ///
    /// A task whose containers ran (ACTIVATING and later) must pass through STOPPING, so its
    /// containers are stopped; DEACTIVATING only undoes what ACTIVATING did.
    pub fn can_move_to(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        match self {
            Provisioning => matches!(next, Pending | Deprovisioning | Stopped),
            Pending => matches!(
                next,
                Activating | Running | Stopping | Deprovisioning | Stopped
            ),
            Activating => matches!(next, Running | Deactivating | Stopping),
            Running => matches!(next, Deactivating | Stopping),
            Deactivating => matches!(next, Stopping),
            Stopping => matches!(next, Deprovisioning | Stopped),
            Deprovisioning => matches!(next, Stopped),
            Stopped => false,
        }
    }

    /// Whether the task has reached STOPPED.
    pub fn is_stopped(self) -> bool {
        self == TaskStatus::Stopped
    }

    /// Whether the task is on its way out (DEACTIVATING and after).
    pub fn is_stopping(self) -> bool {
        self >= TaskStatus::Deactivating
    }

    /// Whether the task counts as pending for a service or a cluster (PROVISIONING, PENDING or
    /// ACTIVATING).
    pub fn is_pending(self) -> bool {
        self < TaskStatus::Running
    }

    /// ECS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Activating => "ACTIVATING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Deactivating => "DEACTIVATING",
            TaskStatus::Stopping => "STOPPING",
            TaskStatus::Deprovisioning => "DEPROVISIONING",
            TaskStatus::Stopped => "STOPPED",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the control plane wants a task to be: RUNNING or STOPPED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesiredStatus {
    /// Keep it running.
    #[default]
    Running,
    /// Stop it.
    Stopped,
}

impl fmt::Display for DesiredStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DesiredStatus::Running => "RUNNING",
            DesiredStatus::Stopped => "STOPPED",
        })
    }
}

/// Why a task stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopCode {
    /// It never got running: placement, image pull or container creation failed.
    TaskFailedToStart,
    /// An essential container exited.
    EssentialContainerExited,
    /// Someone stopped it (`berth task stop`, `StopTask`).
    UserInitiated,
    /// Its service stopped it (scale-in, deployment, failed health checks).
    ServiceSchedulerInitiated,
    /// Its Spot capacity was reclaimed.
    SpotInterruption,
    /// Its instance is going away (the agent left or was deregistered).
    TerminationNotice,
}

impl fmt::Display for StopCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopCode::TaskFailedToStart => "TaskFailedToStart",
            StopCode::EssentialContainerExited => "EssentialContainerExited",
            StopCode::UserInitiated => "UserInitiated",
            StopCode::ServiceSchedulerInitiated => "ServiceSchedulerInitiated",
            StopCode::SpotInterruption => "SpotInterruption",
            StopCode::TerminationNotice => "TerminationNotice",
        })
    }
}

/// A container's `lastStatus`: PENDING, RUNNING, STOPPED. Ordered.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerStatus {
    /// Not started yet (pulling, created, or waiting on `dependsOn`).
    #[default]
    Pending,
    /// Its process runs.
    Running,
    /// Its process exited, or it never started.
    Stopped,
}

impl ContainerStatus {
    /// Containers move forward only: PENDING to RUNNING or STOPPED, RUNNING to STOPPED.
    pub fn can_move_to(self, next: ContainerStatus) -> bool {
        next > self
    }
}

impl fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContainerStatus::Pending => "PENDING",
            ContainerStatus::Running => "RUNNING",
            ContainerStatus::Stopped => "STOPPED",
        })
    }
}

/// The result of a container's health checks, and of a task's (UNHEALTHY when an essential
/// container is, HEALTHY when every essential container with a check is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    /// The checks pass.
    Healthy,
    /// `retries` checks in a row failed after the start period.
    Unhealthy,
    /// No check, or no result yet.
    #[default]
    Unknown,
}

impl HealthStatus {
    /// The task's health from its essential containers' (ECS's rule): UNHEALTHY if any is
    /// UNHEALTHY, else UNKNOWN if any is UNKNOWN, else HEALTHY. Containers without a health
    /// check must be left out by the caller; with none left, the task is UNKNOWN.
    pub fn of_task(essential: impl IntoIterator<Item = HealthStatus>) -> HealthStatus {
        let mut seen = false;
        let mut unknown = false;
        for status in essential {
            seen = true;
            match status {
                HealthStatus::Unhealthy => return HealthStatus::Unhealthy,
                HealthStatus::Unknown => unknown = true,
                HealthStatus::Healthy => {}
            }
        }
        if !seen || unknown {
            HealthStatus::Unknown
        } else {
            HealthStatus::Healthy
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Unhealthy => "UNHEALTHY",
            HealthStatus::Unknown => "UNKNOWN",
        })
    }
}

/// Whether the control plane hears from the task's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Connectivity {
    /// The agent reports.
    Connected,
    /// The agent is out of touch.
    Disconnected,
}

/// Where a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LaunchType {
    /// On a registered container instance.
    #[serde(rename = "EC2")]
    Ec2,
    /// In a sandbox of its own.
    #[serde(rename = "FARGATE")]
    Fargate,
}

impl fmt::Display for LaunchType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LaunchType::Ec2 => "EC2",
            LaunchType::Fargate => "FARGATE",
        })
    }
}

/// Text that is not a launch type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid launch type '{text}': expected EC2 or FARGATE")]
pub struct InvalidLaunchType {
    /// The text as given.
    pub text: String,
}

impl std::str::FromStr for LaunchType {
    type Err = InvalidLaunchType;

    /// `EC2` or `FARGATE`, in any case.
    fn from_str(text: &str) -> Result<LaunchType, InvalidLaunchType> {
        match text.to_ascii_uppercase().as_str() {
            "EC2" => Ok(LaunchType::Ec2),
            "FARGATE" => Ok(LaunchType::Fargate),
            _ => Err(InvalidLaunchType {
                text: text.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_happy_path_is_allowed() {
        for pair in TaskStatus::ALL.windows(2) {
            assert!(pair[0].can_move_to(pair[1]), "{} -> {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn tasks_never_move_back_or_stay() {
        for from in TaskStatus::ALL {
            for to in TaskStatus::ALL {
                if to <= from {
                    assert!(!from.can_move_to(to), "{from} -> {to}");
                }
            }
        }
    }

    #[test]
    fn skips_and_early_exits() {
        use TaskStatus::*;
        assert!(
            Pending.can_move_to(Running),
            "no load balancer to register with"
        );
        assert!(Running.can_move_to(Stopping), "nothing to drain");
        assert!(Stopping.can_move_to(Stopped), "nothing to deprovision");
        assert!(Provisioning.can_move_to(Stopped), "placement failed");
        assert!(Pending.can_move_to(Stopped), "image pull failed");
        assert!(Provisioning.can_move_to(Deprovisioning));
        assert!(
            !Running.can_move_to(Stopped),
            "running containers must be stopped first"
        );
        assert!(!Running.can_move_to(Deprovisioning));
        assert!(!Pending.can_move_to(Deactivating), "nothing was activated");
        assert!(!Provisioning.can_move_to(Running));
    }

    #[test]
    fn status_groups() {
        assert!(TaskStatus::Activating.is_pending());
        assert!(!TaskStatus::Running.is_pending());
        assert!(TaskStatus::Deactivating.is_stopping());
        assert!(!TaskStatus::Running.is_stopping());
        assert!(TaskStatus::Stopped.is_stopped());
    }

    #[test]
    fn serde_spellings() {
        let json = serde_json::to_string(&TaskStatus::ALL).unwrap();
        assert_eq!(
            json,
            r#"["PROVISIONING","PENDING","ACTIVATING","RUNNING","DEACTIVATING","STOPPING","DEPROVISIONING","STOPPED"]"#
        );
        assert_eq!(
            serde_json::from_str::<Vec<TaskStatus>>(&json).unwrap(),
            TaskStatus::ALL
        );
        for status in TaskStatus::ALL {
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{status}\"")
            );
        }
        assert_eq!(
            serde_json::to_string(&DesiredStatus::Stopped).unwrap(),
            "\"STOPPED\""
        );
        assert_eq!(
            serde_json::to_string(&StopCode::EssentialContainerExited).unwrap(),
            "\"EssentialContainerExited\""
        );
        assert_eq!(
            serde_json::from_str::<StopCode>("\"ServiceSchedulerInitiated\"").unwrap(),
            StopCode::ServiceSchedulerInitiated
        );
        assert_eq!(
            serde_json::to_string(&HealthStatus::Unhealthy).unwrap(),
            "\"UNHEALTHY\""
        );
        assert_eq!(
            serde_json::to_string(&ContainerStatus::Running).unwrap(),
            "\"RUNNING\""
        );
        assert_eq!(
            serde_json::to_string(&Connectivity::Connected).unwrap(),
            "\"CONNECTED\""
        );
        assert_eq!(
            serde_json::to_string(&LaunchType::Fargate).unwrap(),
            "\"FARGATE\""
        );
        assert_eq!(StopCode::UserInitiated.to_string(), "UserInitiated");
    }

    #[test]
    fn containers_move_forward() {
        use ContainerStatus::*;
        assert!(Pending.can_move_to(Running));
        assert!(Pending.can_move_to(Stopped));
        assert!(Running.can_move_to(Stopped));
        assert!(!Stopped.can_move_to(Running));
        assert!(!Running.can_move_to(Running));
    }

    #[test]
    fn task_health_from_essential_containers() {
        use HealthStatus::*;
        assert_eq!(HealthStatus::of_task([Healthy, Healthy]), Healthy);
        assert_eq!(HealthStatus::of_task([Healthy, Unknown]), Unknown);
        assert_eq!(HealthStatus::of_task([Unknown, Unhealthy]), Unhealthy);
        assert_eq!(HealthStatus::of_task([]), Unknown);
    }

    #[test]
    fn launch_type_parses() {
        assert_eq!("fargate".parse::<LaunchType>(), Ok(LaunchType::Fargate));
        assert_eq!("EC2".parse::<LaunchType>(), Ok(LaunchType::Ec2));
        assert_eq!(
            "EXTERNAL".parse::<LaunchType>().unwrap_err().to_string(),
            "invalid launch type 'EXTERNAL': expected EC2 or FARGATE"
        );
    }
}
