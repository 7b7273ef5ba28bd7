//! Services as `DescribeServices` returns them, and the arithmetic of their deployments.
//!
//! A [`Service`] keeps `desiredCount` tasks of its task definition running. A change of task
//! definition starts a new PRIMARY [`Deployment`]; the previous one becomes ACTIVE and drains
//! while the new one fills, within the bounds of [`DeploymentConfiguration`]:
//! - at least [`DeploymentConfiguration::min_healthy_tasks`] tasks stay RUNNING and healthy
//!   (`minimumHealthyPercent` of `desiredCount`, rounded up);
//! - at most [`DeploymentConfiguration::max_tasks`] tasks run at once (`maximumPercent` of
//!   `desiredCount`, rounded down).
//!
//! With the deployment circuit breaker enabled, a deployment whose tasks keep failing
//! ([`DeploymentCircuitBreaker::failure_threshold`] of them) is FAILED, and rolled back to the
//! last COMPLETED deployment when `rollback` is set. The service records what it does as
//! [`ServiceEvent`]s, newest first, as ECS does.

use serde::{Deserialize, Serialize};

use super::Timestamp;
use super::placement::{PlacementConstraint, PlacementStrategy};
use super::status::LaunchType;

/// A service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `arn:aws:ecs:local:000000000000:service/<cluster>/<name>`.
    pub service_arn: String,
    /// The name, unique in the cluster.
    pub service_name: String,
    /// The cluster's ARN.
    pub cluster_arn: String,
    /// ACTIVE, DRAINING (being deleted) or INACTIVE (deleted).
    pub status: ServiceStatus,
    /// How many tasks the service keeps running.
    pub desired_count: u32,
    /// Tasks RUNNING.
    pub running_count: u32,
    /// Tasks not yet RUNNING.
    pub pending_count: u32,
    /// EC2 or FARGATE.
    pub launch_type: LaunchType,
    /// The task definition ARN of the PRIMARY deployment.
    pub task_definition: String,
    /// Deployment bounds and circuit breaker.
    pub deployment_configuration: DeploymentConfiguration,
    /// The deployments under way or kept: the PRIMARY first.
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    /// What the scheduler did, newest first.
    #[serde(default)]
    pub events: Vec<ServiceEvent>,
    /// The load balancers in front of the tasks.
    #[serde(default)]
    pub load_balancers: Vec<LoadBalancer>,
    /// Constraints for placing the service's tasks (EC2).
    #[serde(default)]
    pub placement_constraints: Vec<PlacementConstraint>,
    /// Strategies for placing the service's tasks (EC2).
    #[serde(default)]
    pub placement_strategy: Vec<PlacementStrategy>,
    /// Seconds after a task starts during which failed load balancer health checks are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace_period_seconds: Option<u32>,
    /// REPLICA or DAEMON.
    #[serde(default)]
    pub scheduling_strategy: SchedulingStrategy,
    /// When the service was created.
    pub created_at: Timestamp,
}

impl Service {
    /// The most events a service keeps.
    pub const MAX_EVENTS: usize = 100;

    /// The task group of the service's tasks: `service:<name>`.
    pub fn task_group(&self) -> String {
        format!("service:{}", self.service_name)
    }

    /// The PRIMARY deployment.
    pub fn primary(&self) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|d| d.status == DeploymentStatus::Primary)
    }

    /// Records an event, newest first, keeping at most [`Service::MAX_EVENTS`].
    pub fn record_event(
        &mut self,
        id: impl Into<String>,
        created_at: Timestamp,
        message: impl Into<String>,
    ) {
        self.events.insert(
            0,
            ServiceEvent {
                id: id.into(),
                created_at,
                message: message.into(),
            },
        );
        self.events.truncate(Self::MAX_EVENTS);
    }

    /// Starts a deployment of `task_definition` as the PRIMARY one: the current PRIMARY becomes
    /// ACTIVE (it drains as the new one fills) and the service's `taskDefinition` changes.
    pub fn start_deployment(
        &mut self,
        id: impl Into<String>,
        task_definition: impl Into<String>,
        at: Timestamp,
    ) {
        for deployment in &mut self.deployments {
            if deployment.status == DeploymentStatus::Primary {
                deployment.status = DeploymentStatus::Active;
                deployment.updated_at = at;
            }
        }
        let task_definition = task_definition.into();
        self.task_definition = task_definition.clone();
        self.deployments.insert(
            0,
            Deployment {
                id: id.into(),
                status: DeploymentStatus::Primary,
                task_definition,
                desired_count: self.desired_count,
                pending_count: 0,
                running_count: 0,
                failed_tasks: 0,
                created_at: at,
                updated_at: at,
                launch_type: self.launch_type,
                rollout_state: RolloutState::InProgress,
                rollout_state_reason: Some("ECS deployment in progress.".to_owned()),
            },
        );
    }
}

/// ACTIVE, DRAINING or INACTIVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceStatus {
    /// Running.
    #[default]
    Active,
    /// Being deleted: its tasks are stopping.
    Draining,
    /// Deleted.
    Inactive,
}

/// REPLICA (keep `desiredCount`) or DAEMON (one per instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SchedulingStrategy {
    /// Keep `desiredCount` tasks.
    #[default]
    Replica,
    /// One task per container instance.
    Daemon,
}

/// How a deployment may replace tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    /// The circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_circuit_breaker: Option<DeploymentCircuitBreaker>,
    /// The most tasks, as a percentage of `desiredCount`, that may run during a deployment.
    #[serde(default = "default_maximum_percent")]
    pub maximum_percent: u32,
    /// The fewest healthy RUNNING tasks, as a percentage of `desiredCount`, kept during a
    /// deployment.
    #[serde(default = "default_minimum_healthy_percent")]
    pub minimum_healthy_percent: u32,
}

fn default_maximum_percent() -> u32 {
    200
}

fn default_minimum_healthy_percent() -> u32 {
    100
}

impl Default for DeploymentConfiguration {
    /// ECS's defaults for a REPLICA service: 100% healthy, 200% at most, no circuit breaker.
    fn default() -> DeploymentConfiguration {
        DeploymentConfiguration {
            deployment_circuit_breaker: None,
            maximum_percent: default_maximum_percent(),
            minimum_healthy_percent: default_minimum_healthy_percent(),
        }
    }
}

/// A deployment configuration ECS would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeploymentConfigurationError {
    /// `minimumHealthyPercent` above 100.
    #[error("minimumHealthyPercent must be between 0 and 100, not {0}.")]
    MinimumHealthyPercent(u32),
    /// `maximumPercent` below 100.
    #[error("maximumPercent must be at least 100, not {0}.")]
    MaximumPercent(u32),
    /// Bounds that leave no room to replace a task: 100% healthy and 100% at most.
    #[error(
        "maximumPercent ({maximum}) must be greater than minimumHealthyPercent ({minimum}), or a \
         deployment could neither start nor stop a task."
    )]
    NoRoom {
        /// `minimumHealthyPercent`.
        minimum: u32,
        /// `maximumPercent`.
        maximum: u32,
    },
}

impl DeploymentConfiguration {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), DeploymentConfigurationError> {
        if self.minimum_healthy_percent > 100 {
            return Err(DeploymentConfigurationError::MinimumHealthyPercent(
                self.minimum_healthy_percent,
            ));
        }
        if self.maximum_percent < 100 {
            return Err(DeploymentConfigurationError::MaximumPercent(
                self.maximum_percent,
            ));
        }
        if self.maximum_percent <= self.minimum_healthy_percent {
            return Err(DeploymentConfigurationError::NoRoom {
                minimum: self.minimum_healthy_percent,
                maximum: self.maximum_percent,
            });
        }
        Ok(())
    }

    /// The fewest healthy RUNNING tasks a deployment keeps: `minimumHealthyPercent` of
    /// `desired`, rounded up.
    pub fn min_healthy_tasks(&self, desired: u32) -> u32 {
        (u64::from(desired) * u64::from(self.minimum_healthy_percent)).div_ceil(100) as u32
    }

    /// The most tasks (RUNNING and PENDING, old and new) a deployment may have:
    /// `maximumPercent` of `desired`, rounded down.
    pub fn max_tasks(&self, desired: u32) -> u32 {
        (u64::from(desired) * u64::from(self.maximum_percent) / 100) as u32
    }
}

/// The deployment circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCircuitBreaker {
    /// Whether a failing deployment is stopped.
    pub enable: bool,
    /// Whether a stopped deployment is rolled back to the last completed one.
    pub rollback: bool,
}

impl DeploymentCircuitBreaker {
    /// How many tasks of a deployment may fail to start before it is FAILED: half of
    /// `desired`, rounded up, at least 3 and at most 200 (ECS's formula).
    pub fn failure_threshold(desired: u32) -> u32 {
        desired.div_ceil(2).clamp(3, 200)
    }
}

/// PRIMARY (the newest), ACTIVE (older, still running tasks) or INACTIVE (done).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    /// The deployment being rolled out.
    Primary,
    /// An older deployment whose tasks are being replaced.
    Active,
    /// A deployment with no tasks left.
    Inactive,
}

/// IN_PROGRESS, COMPLETED or FAILED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RolloutState {
    /// Tasks are being replaced.
    InProgress,
    /// Every desired task of the deployment runs and is healthy.
    Completed,
    /// The circuit breaker stopped it.
    Failed,
}

/// One deployment of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `ecs-svc/<number>`.
    pub id: String,
    /// PRIMARY, ACTIVE or INACTIVE.
    pub status: DeploymentStatus,
    /// The task definition ARN it runs.
    pub task_definition: String,
    /// How many tasks it aims for.
    pub desired_count: u32,
    /// Its tasks not yet RUNNING.
    pub pending_count: u32,
    /// Its tasks RUNNING.
    pub running_count: u32,
    /// Its tasks that failed to start or to become healthy.
    #[serde(default)]
    pub failed_tasks: u32,
    /// When it started.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// EC2 or FARGATE.
    pub launch_type: LaunchType,
    /// How the rollout goes.
    pub rollout_state: RolloutState,
    /// Why it is in that state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_state_reason: Option<String>,
}

/// A load balancer in front of a service's tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    /// The target group (berth: the service's listener), if named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,
    /// A classic load balancer's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_name: Option<String>,
    /// The container that receives the traffic.
    pub container_name: String,
    /// Its port.
    pub container_port: u16,
}

/// Something a service's scheduler did or could not do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    /// The event's id.
    pub id: String,
    /// When it happened.
    pub created_at: Timestamp,
    /// What happened: "(service web) has reached a steady state.", ...
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::arn;

    fn service() -> Service {
        Service {
            service_arn: arn::service("default", "web"),
            service_name: "web".into(),
            cluster_arn: arn::cluster("default"),
            status: ServiceStatus::Active,
            desired_count: 4,
            running_count: 4,
            pending_count: 0,
            launch_type: LaunchType::Ec2,
            task_definition: arn::task_definition("web", 1),
            deployment_configuration: DeploymentConfiguration {
                deployment_circuit_breaker: Some(DeploymentCircuitBreaker {
                    enable: true,
                    rollback: true,
                }),
                ..DeploymentConfiguration::default()
            },
            deployments: vec![],
            events: vec![],
            load_balancers: vec![LoadBalancer {
                target_group_arn: None,
                load_balancer_name: None,
                container_name: "app".into(),
                container_port: 8080,
            }],
            placement_constraints: vec![PlacementConstraint::distinct_instance()],
            placement_strategy: vec![PlacementStrategy::spread("attribute:ecs.availability-zone")],
            health_check_grace_period_seconds: Some(30),
            scheduling_strategy: SchedulingStrategy::Replica,
            created_at: Timestamp::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn deployment_bounds_round_as_ecs_does() {
        let config = DeploymentConfiguration::default();
        assert_eq!(
            (config.minimum_healthy_percent, config.maximum_percent),
            (100, 200)
        );
        assert_eq!((config.min_healthy_tasks(4), config.max_tasks(4)), (4, 8));
        let config = DeploymentConfiguration {
            minimum_healthy_percent: 50,
            maximum_percent: 150,
            deployment_circuit_breaker: None,
        };
        // 50% of 3 is 1.5: rounded up. 150% of 3 is 4.5: rounded down.
        assert_eq!((config.min_healthy_tasks(3), config.max_tasks(3)), (2, 4));
        assert_eq!((config.min_healthy_tasks(0), config.max_tasks(0)), (0, 0));
    }

    #[test]
    fn deployment_configuration_validation() {
        assert!(DeploymentConfiguration::default().validate().is_ok());
        let bad = |minimum, maximum| DeploymentConfiguration {
            minimum_healthy_percent: minimum,
            maximum_percent: maximum,
            deployment_circuit_breaker: None,
        };
        assert_eq!(
            bad(120, 200).validate().unwrap_err().to_string(),
            "minimumHealthyPercent must be between 0 and 100, not 120."
        );
        assert_eq!(
            bad(50, 90).validate().unwrap_err(),
            DeploymentConfigurationError::MaximumPercent(90)
        );
        assert!(matches!(
            bad(100, 100).validate(),
            Err(DeploymentConfigurationError::NoRoom { .. })
        ));
        assert!(bad(0, 100).validate().is_ok());
    }

    #[test]
    fn circuit_breaker_threshold() {
        assert_eq!(DeploymentCircuitBreaker::failure_threshold(1), 3);
        assert_eq!(DeploymentCircuitBreaker::failure_threshold(7), 4);
        assert_eq!(DeploymentCircuitBreaker::failure_threshold(10), 5);
        assert_eq!(DeploymentCircuitBreaker::failure_threshold(1000), 200);
    }

    #[test]
    fn a_new_deployment_becomes_primary() {
        let mut service = service();
        service.start_deployment(
            "ecs-svc/1",
            arn::task_definition("web", 1),
            Timestamp::from_secs(1),
        );
        service.start_deployment(
            "ecs-svc/2",
            arn::task_definition("web", 2),
            Timestamp::from_secs(2),
        );
        assert_eq!(service.task_definition, arn::task_definition("web", 2));
        let primary = service.primary().unwrap();
        assert_eq!(
            (primary.id.as_str(), primary.desired_count),
            ("ecs-svc/2", 4)
        );
        assert_eq!(primary.rollout_state, RolloutState::InProgress);
        assert_eq!(service.deployments[1].status, DeploymentStatus::Active);
        assert_eq!(service.deployments[1].updated_at, Timestamp::from_secs(2));
        assert_eq!(service.task_group(), "service:web");
    }

    #[test]
    fn events_are_newest_first_and_bounded() {
        let mut service = service();
        for i in 0..120 {
            service.record_event(
                format!("e{i}"),
                Timestamp::from_secs(i),
                format!("event {i}"),
            );
        }
        assert_eq!(service.events.len(), Service::MAX_EVENTS);
        assert_eq!(service.events[0].message, "event 119");
    }

    #[test]
    fn describe_services_json_uses_ecs_names_and_round_trips() {
        let mut service = service();
        service.start_deployment(
            "ecs-svc/1",
            arn::task_definition("web", 1),
            Timestamp::from_secs(5),
        );
        service.record_event(
            "e1",
            Timestamp::from_secs(6),
            "(service web) has reached a steady state.",
        );
        let json = serde_json::to_value(&service).unwrap();
        assert_eq!(json["serviceName"], "web");
        assert_eq!(json["desiredCount"], 4);
        assert_eq!(json["deploymentConfiguration"]["maximumPercent"], 200);
        assert_eq!(
            json["deploymentConfiguration"]["minimumHealthyPercent"],
            100
        );
        assert_eq!(
            json["deploymentConfiguration"]["deploymentCircuitBreaker"]["rollback"],
            true
        );
        assert_eq!(json["healthCheckGracePeriodSeconds"], 30);
        assert_eq!(json["deployments"][0]["status"], "PRIMARY");
        assert_eq!(json["deployments"][0]["rolloutState"], "IN_PROGRESS");
        assert_eq!(
            json["deployments"][0]["taskDefinition"],
            arn::task_definition("web", 1)
        );
        assert_eq!(json["loadBalancers"][0]["containerPort"], 8080);
        assert_eq!(json["placementConstraints"][0]["type"], "distinctInstance");
        assert_eq!(
            json["placementStrategy"][0]["field"],
            "attribute:ecs.availability-zone"
        );
        assert_eq!(json["schedulingStrategy"], "REPLICA");
        assert_eq!(json["events"][0]["createdAt"], 6);
        let back: Service = serde_json::from_value(json).unwrap();
        assert_eq!(back, service);
    }

    #[test]
    fn deployment_configuration_defaults_when_fields_are_missing() {
        let config: DeploymentConfiguration = serde_json::from_str(
            r#"{"deploymentCircuitBreaker": {"enable": true, "rollback": false}}"#,
        )
        .unwrap();
        assert_eq!(
            (config.maximum_percent, config.minimum_healthy_percent),
            (200, 100)
        );
        assert!(config.deployment_circuit_breaker.unwrap().enable);
    }
}
