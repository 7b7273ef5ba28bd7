//! The service scheduler: one reconciliation per service, each in one transaction.
//!
//! A pass over a service:
//! 1. **accounts** for its tasks that stopped since the last pass: a task that stopped on its
//!    own (`TaskFailedToStart`, `EssentialContainerExited`) counts as a failed task of its
//!    deployment;
//! 2. **replaces unhealthy tasks**: a RUNNING task whose health is UNHEALTHY, once
//!    `healthCheckGracePeriodSeconds` have passed since it started, is stopped ("Task failed
//!    container health checks") and counts as failed;
//! 3. runs the **deployment circuit breaker**, when enabled: a PRIMARY deployment IN_PROGRESS
//!    with at least `max(3, min(200, ⌈desiredCount / 2⌉))` failed tasks is FAILED, and stops
//!    launching tasks; with `rollback`, a new deployment of the task definition of the last
//!    deployment that COMPLETED takes over;
//! 4. **scales** the PRIMARY deployment: stops its tasks beyond `desiredCount` (those not
//!    healthy first, then the newest), and starts the missing ones as long as the service has
//!    fewer than `maximumPercent` of `desiredCount` tasks in all; a task that fits nowhere is
//!    not created: the service records why, and the next pass tries again (every second, and
//!    at once when an agent registers or a task stops);
//! 5. **drains older deployments**: their tasks that are not healthy are stopped, and their
//!    healthy ones as long as `minimumHealthyPercent` of `desiredCount` healthy tasks remain
//!    (with 100/200, an old task stops only when a new one has become healthy in its place);
//!    a deployment with no task left is dropped;
//! 6. marks the PRIMARY deployment COMPLETED once it alone runs `desiredCount` healthy tasks,
//!    and records a steady state;
//! 7. keeps the **load balancers** in step: healthy tasks are registered, tasks no longer
//!    healthy deregistered (with draining), targets of stopped tasks dropped.
//!
//! A task is healthy when it is RUNNING and its health is HEALTHY, or UNKNOWN when no essential
//! container of its definition has a health check. Stopping a task that is in a load
//! balancer's rotation drains it first ([`super::scheduler::stop_task`]).
//!
//! A DRAINING service (deleted) has all its tasks stopped, and is INACTIVE once they are,
//! its load balancers closed.
//!
//! Events are ECS's: "(service web) has started 2 tasks: (task 1a2b) (task 3c4d).", "(service
//! web) has reached a steady state.", "(service web) (deployment ecs-svc/...) deployment
//! completed.", ...; a placement failure is recorded again only after five minutes.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::ecs::placement::PlacementStrategy;
use crate::ecs::service::{
    DeploymentCircuitBreaker, DeploymentStatus, RolloutState, Service, ServiceStatus,
};
use crate::ecs::status::{DesiredStatus, HealthStatus, StopCode, TaskStatus};
use crate::ecs::task::Task;
use crate::ecs::taskdef::TaskDefinition;
use crate::ecs::{Timestamp, service::Deployment};
use crate::lb::{HealthState, LoadBalancer};

use super::balancers::{Listener, ServiceKey, ServiceLoadBalancer, agent_host, target_address};
use super::scheduler::{self, Launch, Unplaced};
use super::store::{ServiceRecord, TaskFilter, TaskRecord, Tx};
use super::{ApiError, ControlState, Deregistration, Registration, Txn};

/// One pass over every service that is not INACTIVE.
pub(crate) async fn reconcile(state: &ControlState) {
    let services = state
        .read(|db, _, _| {
            Ok(db
                .services(None)?
                .into_iter()
                .filter(|r| r.service.status != ServiceStatus::Inactive)
                .map(|r| {
                    let key = (r.cluster, r.service.service_name);
                    (key, r.load_balancers, r.service.status)
                })
                .collect::<Vec<_>>())
        })
        .await;
    let services = match services {
        Ok(services) => services,
        Err(error) => {
            tracing::error!(%error, "cannot list services to reconcile");
            return;
        }
    };
    for (key, specs, status) in services {
        if status == ServiceStatus::Active && !specs.is_empty() && !state.inner.balancers.has(&key)
        {
            match bind_listeners(state, &specs).await {
                Ok(listeners) => state.inner.balancers.insert(key.clone(), listeners),
                Err(error) => tracing::warn!(
                    cluster = %key.0,
                    service = %key.1,
                    %error,
                    "cannot start the service's load balancer; trying again"
                ),
            }
        }
        let service_key = key.clone();
        if let Err(error) = state
            .write(move |txn| reconcile_service(txn, &service_key))
            .await
        {
            tracing::error!(cluster = %key.0, service = %key.1, %error, "reconciliation failed");
        }
    }
}

/// Binds one load balancer per `loadBalancers` entry.
pub(crate) async fn bind_listeners(
    state: &ControlState,
    specs: &[ServiceLoadBalancer],
) -> Result<Vec<Listener>, crate::lb::Error> {
    let mut listeners: Vec<Listener> = Vec::new();
    for spec in specs {
        let addr = SocketAddr::new(
            state.inner.config.load_balancer_address,
            spec.listener_port.unwrap_or(0),
        );
        match LoadBalancer::bind(addr).await {
            Ok(lb) => listeners.push(Listener {
                spec: spec.clone(),
                lb: Arc::new(lb),
            }),
            Err(error) => {
                for listener in listeners {
                    listener.lb.shutdown().await;
                }
                return Err(error);
            }
        }
    }
    Ok(listeners)
}

/// The strategies of a service's tasks when it names none: spread over availability zones,
/// then over instances, as ECS's service scheduler places them.
pub(crate) fn default_strategies() -> Vec<PlacementStrategy> {
    vec![
        PlacementStrategy::spread("attribute:ecs.availability-zone"),
        PlacementStrategy::spread("instanceId"),
    ]
}

/// Task definitions by ARN, read once per pass.
#[derive(Default)]
struct Definitions {
    cache: HashMap<String, Option<TaskDefinition>>,
}

impl Definitions {
    fn get(&mut self, db: &Tx<'_>, arn: &str) -> Result<Option<&TaskDefinition>, ApiError> {
        if !self.cache.contains_key(arn) {
            let found = db.task_definition_by_arn(arn)?;
            self.cache.insert(arn.to_owned(), found);
        }
        Ok(self.cache.get(arn).and_then(Option::as_ref))
    }
}

/// Whether an essential container of the definition has a health check.
fn has_health_check(definition: &TaskDefinition) -> bool {
    definition
        .container_definitions
        .iter()
        .any(|c| c.is_essential() && c.health_check.is_some())
}

/// RUNNING and healthy (or RUNNING without health checks).
fn is_healthy(task: &Task, definition: Option<&TaskDefinition>) -> bool {
    task.last_status == TaskStatus::Running
        && match task.health_status {
            HealthStatus::Healthy => true,
            HealthStatus::Unhealthy => false,
            HealthStatus::Unknown => !definition.is_some_and(has_health_check),
        }
}

/// Whether a stopped task failed (rather than being stopped).
fn failed(task: &Task) -> bool {
    matches!(
        task.stop_code,
        Some(StopCode::TaskFailedToStart | StopCode::EssentialContainerExited)
    )
}

fn deployment_mut<'s>(service: &'s mut Service, id: Option<&str>) -> Option<&'s mut Deployment> {
    let id = id?;
    service.deployments.iter_mut().find(|d| d.id == id)
}

fn event(record: &mut ServiceRecord, now: Timestamp, message: String) {
    tracing::info!(service = %record.service.service_name, "{message}");
    record
        .service
        .record_event(scheduler::new_event_id(), now, message);
}

/// Records `message` unless the same was recorded less than `window` ago.
fn event_throttled(record: &mut ServiceRecord, now: Timestamp, message: String, window: Duration) {
    let recent = record
        .service
        .events
        .iter()
        .any(|e| e.message == message && now.saturating_duration_since(e.created_at) < window);
    if !recent {
        event(record, now, message);
    }
}

fn task_list(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("(task {id})"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn scaling_reason(deployment: &str) -> String {
    format!("Scaling activity initiated by (deployment {deployment})")
}

/// Stops the tasks at `indices` for the scheduler, with events.
fn stop_for_scheduler(
    txn: &mut Txn<'_>,
    record: &mut ServiceRecord,
    tasks: &mut [TaskRecord],
    indices: &[usize],
    reason: &str,
) -> Result<(), ApiError> {
    if indices.is_empty() {
        return Ok(());
    }
    let mut stopped = Vec::new();
    let mut draining = 0;
    for &index in indices {
        let task = &mut tasks[index];
        scheduler::stop_task(txn, task, StopCode::ServiceSchedulerInitiated, reason)?;
        if task.task.last_status == TaskStatus::Deactivating {
            draining += 1;
        }
        stopped.push(task.task.id().to_owned());
    }
    let name = record.service.service_name.clone();
    if draining > 0 {
        event(
            record,
            txn.now,
            format!("(service {name}) has begun draining connections on {draining} tasks."),
        );
    }
    event(
        record,
        txn.now,
        format!(
            "(service {name}) has stopped {} running tasks: {}.",
            stopped.len(),
            task_list(&stopped)
        ),
    );
    Ok(())
}

/// One pass over one service (see the module documentation).
pub(crate) fn reconcile_service(txn: &mut Txn<'_>, key: &ServiceKey) -> Result<(), ApiError> {
    let (cluster, name) = (key.0.as_str(), key.1.as_str());
    let Some(mut record) = txn.db.service(cluster, name)? else {
        return Ok(());
    };
    if record.service.status == ServiceStatus::Inactive {
        return Ok(());
    }
    let original = record.clone();
    let now = txn.now;
    let mut definitions = Definitions::default();

    // 1. Account for the tasks that stopped.
    let mut tasks = Vec::new();
    for mut task in txn.db.tasks(&TaskFilter {
        cluster: Some(cluster),
        service: Some(name),
        active_or_unaccounted: true,
        ..TaskFilter::default()
    })? {
        if task.task.last_status == TaskStatus::Stopped {
            task.meta.accounted = true;
            if failed(&task.task) {
                if let Some(deployment) =
                    deployment_mut(&mut record.service, task.meta.deployment.as_deref())
                {
                    deployment.failed_tasks += 1;
                }
            }
            txn.db.put_task(&task)?;
        } else {
            tasks.push(task);
        }
    }

    if record.service.status == ServiceStatus::Draining {
        return drain_service(txn, key, record, &original, tasks);
    }

    // 2. Replace the tasks that failed their health checks after the grace period.
    let grace = Duration::from_secs(
        record
            .service
            .health_check_grace_period_seconds
            .unwrap_or(0)
            .into(),
    );
    let mut unhealthy = Vec::new();
    for (index, task) in tasks.iter().enumerate() {
        let t = &task.task;
        if t.desired_status == DesiredStatus::Running
            && t.last_status == TaskStatus::Running
            && t.health_status == HealthStatus::Unhealthy
            && t.started_at
                .is_none_or(|started| now.saturating_duration_since(started) >= grace)
        {
            unhealthy.push(index);
        }
    }
    for &index in &unhealthy {
        let id = tasks[index].task.id().to_owned();
        event(
            &mut record,
            now,
            format!("(service {name}) (task {id}) failed container health checks."),
        );
        if let Some(deployment) =
            deployment_mut(&mut record.service, tasks[index].meta.deployment.as_deref())
        {
            deployment.failed_tasks += 1;
        }
        scheduler::stop_task(
            txn,
            &mut tasks[index],
            StopCode::ServiceSchedulerInitiated,
            "Task failed container health checks",
        )?;
    }

    // 3. The deployment circuit breaker.
    circuit_breaker(txn, &mut record, &mut definitions)?;

    let primary =
        record.service.primary().cloned().ok_or_else(|| {
            ApiError::internal(format!("service {name} has no PRIMARY deployment"))
        })?;
    let desired = record.service.desired_count as usize;
    let config = record.service.deployment_configuration;
    let launching = primary.rollout_state != RolloutState::Failed;
    let mut healthy = Vec::with_capacity(tasks.len());
    for task in &tasks {
        let definition = definitions.get(txn.db, &task.task.task_definition_arn)?;
        healthy.push(is_healthy(&task.task, definition));
    }
    let wanted = |tasks: &[TaskRecord], index: usize| {
        tasks[index].task.desired_status == DesiredStatus::Running
    };
    let mut new: Vec<usize> = (0..tasks.len())
        .filter(|&i| wanted(&tasks, i) && tasks[i].meta.deployment.as_deref() == Some(&primary.id))
        .collect();
    let old: Vec<usize> = (0..tasks.len())
        .filter(|&i| wanted(&tasks, i) && tasks[i].meta.deployment.as_deref() != Some(&primary.id))
        .collect();

    // 4. Scale the PRIMARY deployment: first in, then out.
    if new.len() > desired {
        let mut extra = new.clone();
        extra.sort_by_key(|&i| (healthy[i], std::cmp::Reverse(tasks[i].task.created_at)));
        extra.truncate(new.len() - desired);
        new.retain(|i| !extra.contains(i));
        stop_for_scheduler(
            txn,
            &mut record,
            &mut tasks,
            &extra,
            &scaling_reason(&primary.id),
        )?;
    }
    if launching && new.len() < desired {
        let most = (config.max_tasks(desired as u32) as usize).max(desired);
        let room = most.saturating_sub(new.len() + old.len());
        let count = (desired - new.len()).min(room);
        if count > 0 {
            start_tasks(txn, &mut record, &mut definitions, &primary, cluster, count)?;
        }
    }

    // 5. Drain the older deployments, keeping minimumHealthyPercent.
    if launching && !old.is_empty() {
        let floor = config.min_healthy_tasks(desired as u32) as usize;
        let mut healthy_total = new.iter().chain(&old).filter(|&&i| healthy[i]).count();
        let mut order = old.clone();
        order.sort_by_key(|&i| (healthy[i], tasks[i].task.created_at));
        let mut stopping = Vec::new();
        for i in order {
            if !healthy[i] {
                stopping.push(i);
            } else if healthy_total > floor {
                healthy_total -= 1;
                stopping.push(i);
            }
        }
        stop_for_scheduler(
            txn,
            &mut record,
            &mut tasks,
            &stopping,
            &scaling_reason(&primary.id),
        )?;
    }

    // 6. Counts, completion, steady state.
    let current = txn.db.tasks(&TaskFilter {
        cluster: Some(cluster),
        service: Some(name),
        active: true,
        ..TaskFilter::default()
    })?;
    let mut current_healthy = Vec::with_capacity(current.len());
    for task in &current {
        let definition = definitions.get(txn.db, &task.task.task_definition_arn)?;
        current_healthy.push(is_healthy(&task.task, definition));
    }
    update_counts(&mut record.service, &current, now);
    let primary_id = primary.id.clone();
    let in_primary = |t: &TaskRecord| t.meta.deployment.as_deref() == Some(&primary_id);
    let primary_tasks = current
        .iter()
        .filter(|t| in_primary(t) && t.task.desired_status == DesiredStatus::Running)
        .count();
    let primary_healthy = current
        .iter()
        .zip(&current_healthy)
        .filter(|(t, h)| **h && in_primary(t) && t.task.desired_status == DesiredStatus::Running)
        .count();
    let others = current.iter().any(|t| !in_primary(t));
    let settled = !others && primary_tasks == desired && primary_healthy == desired;
    if settled {
        complete(&mut record, now);
    }
    let stopping = current
        .iter()
        .any(|t| t.task.desired_status == DesiredStatus::Stopped);
    let steady = settled && !stopping && record.service.deployments.len() == 1;
    if steady && !record.steady {
        event(
            &mut record,
            now,
            format!("(service {name}) has reached a steady state."),
        );
    }
    record.steady = steady;

    // 7. Load balancer targets.
    sync_targets(
        txn,
        key,
        &mut record,
        &current,
        &current_healthy,
        &mut definitions,
    )?;

    if record != original {
        txn.db.put_service(&record)?;
    }
    Ok(())
}

/// A DRAINING service: stops its tasks; INACTIVE once none is left.
fn drain_service(
    txn: &mut Txn<'_>,
    key: &ServiceKey,
    mut record: ServiceRecord,
    original: &ServiceRecord,
    mut tasks: Vec<TaskRecord>,
) -> Result<(), ApiError> {
    let reason = record
        .service
        .primary()
        .map_or_else(|| "Service deleted".to_owned(), |p| scaling_reason(&p.id));
    let running: Vec<usize> = (0..tasks.len())
        .filter(|&i| tasks[i].task.desired_status == DesiredStatus::Running)
        .collect();
    stop_for_scheduler(txn, &mut record, &mut tasks, &running, &reason)?;
    let left: Vec<TaskRecord> = tasks
        .into_iter()
        .filter(|t| t.task.last_status != TaskStatus::Stopped)
        .collect();
    update_counts(&mut record.service, &left, txn.now);
    if left.is_empty() {
        record.service.status = ServiceStatus::Inactive;
        for deployment in &mut record.service.deployments {
            deployment.status = DeploymentStatus::Inactive;
        }
        txn.effects.close.push(key.clone());
        tracing::info!(cluster = %key.0, service = %key.1, "service deleted");
    }
    if record != *original {
        txn.db.put_service(&record)?;
    }
    Ok(())
}

/// Trips the circuit breaker of a failing PRIMARY deployment, and rolls back if asked.
fn circuit_breaker(
    txn: &mut Txn<'_>,
    record: &mut ServiceRecord,
    definitions: &mut Definitions,
) -> Result<(), ApiError> {
    let Some(breaker) = record
        .service
        .deployment_configuration
        .deployment_circuit_breaker
        .filter(|b| b.enable)
    else {
        return Ok(());
    };
    let threshold = DeploymentCircuitBreaker::failure_threshold(record.service.desired_count);
    let now = txn.now;
    let name = record.service.service_name.clone();
    let Some(primary) = record
        .service
        .deployments
        .iter_mut()
        .find(|d| d.status == DeploymentStatus::Primary)
    else {
        return Ok(());
    };
    if primary.rollout_state != RolloutState::InProgress || primary.failed_tasks < threshold {
        return Ok(());
    }
    primary.rollout_state = RolloutState::Failed;
    primary.rollout_state_reason =
        Some("ECS deployment circuit breaker: tasks failed to start.".to_owned());
    primary.updated_at = now;
    let failed_id = primary.id.clone();
    let failed_definition = primary.task_definition.clone();
    event(
        record,
        now,
        format!(
            "(service {name}) (deployment {failed_id}) deployment failed: tasks failed to start."
        ),
    );
    if !breaker.rollback {
        return Ok(());
    }
    let target = record
        .last_completed
        .clone()
        .filter(|arn| *arn != failed_definition);
    match target {
        Some(arn) => {
            let label = definitions
                .get(txn.db, &arn)?
                .map_or_else(|| arn.clone(), TaskDefinition::family_revision);
            let id = scheduler::new_deployment_id();
            record.service.start_deployment(id.clone(), arn, now);
            record.steady = false;
            event(
                record,
                now,
                format!(
                    "(service {name}) rolling back to task definition {label} with (deployment {id})."
                ),
            );
        }
        None => event(
            record,
            now,
            format!(
                "(service {name}) (deployment {failed_id}) cannot roll back: no deployment of \
                 the service has completed."
            ),
        ),
    }
    Ok(())
}

/// Starts `count` tasks of the PRIMARY deployment, with events.
fn start_tasks(
    txn: &mut Txn<'_>,
    record: &mut ServiceRecord,
    definitions: &mut Definitions,
    primary: &Deployment,
    cluster: &str,
    count: usize,
) -> Result<(), ApiError> {
    let name = record.service.service_name.clone();
    let now = txn.now;
    let Some(definition) = definitions.get(txn.db, &primary.task_definition)?.cloned() else {
        event_throttled(
            record,
            now,
            format!(
                "(service {name}) was unable to place a task: its task definition {} no longer \
                 exists.",
                primary.task_definition
            ),
            txn.inner.config.event_repeat,
        );
        return Ok(());
    };
    let strategies = if record.service.placement_strategy.is_empty() {
        default_strategies()
    } else {
        record.service.placement_strategy.clone()
    };
    let constraints = record.service.placement_constraints.clone();
    let launched = scheduler::launch(
        txn,
        Launch {
            cluster,
            definition: &definition,
            launch_type: record.service.launch_type,
            count,
            group: record.service.task_group(),
            started_by: Some(primary.id.clone()),
            constraints: &constraints,
            strategies: &strategies,
            service: Some((name.clone(), primary.id.clone())),
        },
    );
    let launched = match launched {
        Ok(launched) => launched,
        Err(error) if error.kind != super::ErrorKind::Server => {
            event_throttled(
                record,
                now,
                format!(
                    "(service {name}) was unable to place a task: {}",
                    error.message
                ),
                txn.inner.config.event_repeat,
            );
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    if !launched.tasks.is_empty() {
        let ids: Vec<String> = launched.tasks.iter().map(|t| t.id().to_owned()).collect();
        record.steady = false;
        event(
            record,
            now,
            format!(
                "(service {name}) has started {} tasks: {}.",
                ids.len(),
                task_list(&ids)
            ),
        );
    }
    if let Some(why) = launched.why {
        let message = match why {
            Unplaced::Placement(failure) => failure.service_event_message(&name),
            Unplaced::NoFargateCapacity => format!(
                "(service {name}) was unable to place a task. Reason: {}.",
                scheduler::NO_FARGATE_CAPACITY
            ),
        };
        event_throttled(record, now, message, txn.inner.config.event_repeat);
    }
    Ok(())
}

/// Running and pending counts of the service and its deployments; drops the deployments other
/// than the PRIMARY that have no task left.
fn update_counts(service: &mut Service, current: &[TaskRecord], now: Timestamp) {
    fn of<'t>(current: &'t [TaskRecord], id: &'t str) -> impl Iterator<Item = &'t TaskRecord> {
        current
            .iter()
            .filter(move |t| t.meta.deployment.as_deref() == Some(id))
    }
    let desired = service.desired_count;
    for deployment in &mut service.deployments {
        let running = of(current, &deployment.id)
            .filter(|t| t.task.last_status == TaskStatus::Running)
            .count() as u32;
        let pending = of(current, &deployment.id)
            .filter(|t| t.task.last_status.is_pending())
            .count() as u32;
        let wanted = if deployment.status == DeploymentStatus::Primary {
            desired
        } else {
            of(current, &deployment.id)
                .filter(|t| t.task.desired_status == DesiredStatus::Running)
                .count() as u32
        };
        if (
            deployment.running_count,
            deployment.pending_count,
            deployment.desired_count,
        ) != (running, pending, wanted)
        {
            deployment.running_count = running;
            deployment.pending_count = pending;
            deployment.desired_count = wanted;
            deployment.updated_at = now;
        }
    }
    let ids: HashSet<&str> = current
        .iter()
        .filter_map(|t| t.meta.deployment.as_deref())
        .collect();
    if service.status != ServiceStatus::Draining {
        service
            .deployments
            .retain(|d| d.status == DeploymentStatus::Primary || ids.contains(d.id.as_str()));
    }
    service.running_count = current
        .iter()
        .filter(|t| t.task.last_status == TaskStatus::Running)
        .count() as u32;
    service.pending_count = current
        .iter()
        .filter(|t| t.task.last_status.is_pending())
        .count() as u32;
}

/// The PRIMARY deployment alone runs its tasks, all healthy: COMPLETED.
fn complete(record: &mut ServiceRecord, now: Timestamp) {
    let name = record.service.service_name.clone();
    let Some(primary) = record
        .service
        .deployments
        .iter_mut()
        .find(|d| d.status == DeploymentStatus::Primary)
    else {
        return;
    };
    if primary.rollout_state != RolloutState::InProgress {
        return;
    }
    primary.rollout_state = RolloutState::Completed;
    primary.rollout_state_reason = Some(format!("ECS deployment {} completed.", primary.id));
    primary.updated_at = now;
    let id = primary.id.clone();
    record.last_completed = Some(primary.task_definition.clone());
    event(
        record,
        now,
        format!("(service {name}) (deployment {id}) deployment completed."),
    );
}

/// Registers the healthy tasks with the service's listeners, and deregisters the others.
fn sync_targets(
    txn: &mut Txn<'_>,
    key: &ServiceKey,
    record: &mut ServiceRecord,
    current: &[TaskRecord],
    healthy: &[bool],
    definitions: &mut Definitions,
) -> Result<(), ApiError> {
    let listeners = txn.inner.balancers.of(key);
    if listeners.is_empty() {
        return Ok(());
    }
    let delay = txn.inner.config.deregistration_delay;
    let mut hosts: HashMap<String, Option<IpAddr>> = HashMap::new();
    let mut registered = vec![0usize; listeners.len()];
    let mut deregistered = 0usize;
    let targets: Vec<_> = listeners.iter().map(|l| l.lb.targets()).collect();
    for (task, &is_healthy) in current.iter().zip(healthy) {
        let id = task.task.id();
        let wanted = task.task.desired_status == DesiredStatus::Running;
        let should = wanted && is_healthy;
        let Some(definition) = definitions.get(txn.db, &task.task.task_definition_arn)? else {
            continue;
        };
        let definition = definition.clone();
        let host = match &task.meta.agent_id {
            Some(agent) => {
                if !hosts.contains_key(agent) {
                    let address = txn.db.agent(agent)?.map(|a| a.address);
                    hosts.insert(agent.clone(), address.as_deref().and_then(agent_host));
                }
                hosts[agent]
            }
            None => None,
        };
        let mut out_of_rotation = false;
        for (index, listener) in listeners.iter().enumerate() {
            let present = targets[index].iter().find(|t| t.id == id);
            match present {
                None if should => {
                    if let Some(addr) =
                        target_address(&task.task, &definition, host, &listener.spec)
                    {
                        txn.effects.register.push(Registration {
                            key: key.clone(),
                            listener: index,
                            task_id: id.to_owned(),
                            addr,
                        });
                        registered[index] += 1;
                    }
                }
                Some(target)
                    if !should
                        && wanted
                        && !matches!(target.state, HealthState::Draining { .. }) =>
                {
                    out_of_rotation = true;
                }
                _ => {}
            }
        }
        if out_of_rotation {
            txn.effects.deregister.push(Deregistration {
                key: key.clone(),
                task_id: id.to_owned(),
                delay,
            });
            deregistered += 1;
        }
    }
    // Targets whose task has stopped.
    let active: HashSet<&str> = current.iter().map(|t| t.task.id()).collect();
    let mut gone = HashSet::new();
    for target in targets.iter().flatten() {
        if !active.contains(target.id.as_str())
            && !matches!(target.state, HealthState::Draining { .. })
            && gone.insert(target.id.clone())
        {
            txn.effects.deregister.push(Deregistration {
                key: key.clone(),
                task_id: target.id.clone(),
                delay: Duration::ZERO,
            });
        }
    }
    let name = record.service.service_name.clone();
    let now = txn.now;
    for (listener, count) in listeners.iter().zip(registered) {
        if count > 0 {
            event(
                record,
                now,
                format!(
                    "(service {name}) registered {count} targets in {}.",
                    listener.describe()
                ),
            );
        }
    }
    if deregistered > 0 {
        event(
            record,
            now,
            format!("(service {name}) has begun draining connections on {deregistered} tasks."),
        );
    }
    Ok(())
}
