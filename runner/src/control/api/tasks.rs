//! `RunTask`, `ListTasks`, `DescribeTasks`, `StopTask`.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::ecs::Failure;
use crate::ecs::arn;
use crate::ecs::placement::{PlacementConstraint, PlacementFailure, PlacementStrategy};
use crate::ecs::status::{DesiredStatus, LaunchType, StopCode};
use crate::ecs::taskdef::Compatibility;

use super::{active_cluster, cluster_name, missing, page_value, paginate, scoped_arn, to_value};
use crate::control::scheduler::{self, Launch, NO_FARGATE_CAPACITY, Unplaced};
use crate::control::store::TaskFilter;
use crate::control::{ApiError, ControlState};

/// The most tasks one `RunTask` starts.
const MAX_COUNT: u32 = 10;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Run {
    cluster: Option<String>,
    task_definition: String,
    count: Option<u32>,
    launch_type: Option<LaunchType>,
    group: Option<String>,
    placement_constraints: Vec<PlacementConstraint>,
    placement_strategy: Vec<PlacementStrategy>,
    started_by: Option<String>,
    overrides: Option<Value>,
    capacity_provider_strategy: Vec<Value>,
}

/// Whether `overrides` asks for anything (`{}` and empty lists do not).
fn asks_for_something(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Object(map) => map.values().any(asks_for_something),
        Value::Array(items) => !items.is_empty(),
        _ => true,
    }
}

/// Starts `count` tasks of a definition; those that cannot be placed are `failures`.
pub(super) async fn run(state: &ControlState, request: Run) -> Result<Value, ApiError> {
    let cluster = cluster_name(request.cluster.as_deref())?;
    let count = request.count.unwrap_or(1);
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(ApiError::invalid(format!(
            "count must be between 1 and {MAX_COUNT}, not {count}."
        )));
    }
    if request.overrides.as_ref().is_some_and(asks_for_something) {
        return Err(ApiError::invalid(
            "Task overrides are not supported: register a task definition revision instead.",
        ));
    }
    if !request.capacity_provider_strategy.is_empty() {
        return Err(ApiError::invalid(
            "capacityProviderStrategy is not supported: give launchType EC2 or FARGATE.",
        ));
    }
    let launch_type = request.launch_type.unwrap_or(LaunchType::Ec2);
    if launch_type == LaunchType::Fargate
        && (!request.placement_constraints.is_empty() || !request.placement_strategy.is_empty())
    {
        return Err(ApiError::invalid(
            "Task placement constraints and strategies are not supported with the FARGATE \
             launch type.",
        ));
    }
    let started = state
        .write(move |txn| {
            active_cluster(txn.db, &cluster)?;
            let definition =
                super::resolve_task_definition(txn.db, &request.task_definition, false)?;
            let compatibility = match launch_type {
                LaunchType::Ec2 => Compatibility::Ec2,
                LaunchType::Fargate => Compatibility::Fargate,
            };
            if !definition.is_compatible_with(compatibility) {
                return Err(ApiError::client(format!(
                    "Task definition does not support launch_type {launch_type}."
                )));
            }
            let group = request
                .group
                .clone()
                .unwrap_or_else(|| format!("family:{}", definition.family));
            // ECS places standalone tasks at random when no strategy is given.
            let strategies = if request.placement_strategy.is_empty() {
                vec![PlacementStrategy::random()]
            } else {
                request.placement_strategy.clone()
            };
            let launched = scheduler::launch(
                txn,
                Launch {
                    cluster: &cluster,
                    definition: &definition,
                    launch_type,
                    count: count as usize,
                    group,
                    started_by: request.started_by.clone(),
                    constraints: &request.placement_constraints,
                    strategies: &strategies,
                    service: None,
                },
            )?;
            let failures = match &launched.why {
                Some(Unplaced::Placement(PlacementFailure::NoContainerInstances))
                    if launched.tasks.is_empty() =>
                {
                    return Err(ApiError::invalid(
                        PlacementFailure::NoContainerInstances.to_string(),
                    ));
                }
                Some(Unplaced::Placement(failure)) => failure.failures(),
                Some(Unplaced::NoFargateCapacity) => vec![Failure {
                    arn: None,
                    reason: NO_FARGATE_CAPACITY.to_owned(),
                    detail: None,
                }],
                None => Vec::new(),
            };
            Ok(json!({
                "tasks": to_value(&launched.tasks)?,
                "failures": to_value(&failures)?,
            }))
        })
        .await?;
    Ok(started)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct List {
    cluster: Option<String>,
    container_instance: Option<String>,
    family: Option<String>,
    started_by: Option<String>,
    service_name: Option<String>,
    desired_status: Option<DesiredStatus>,
    launch_type: Option<LaunchType>,
    max_results: Option<u32>,
    next_token: Option<String>,
}

/// The ARNs of the cluster's tasks with desired status RUNNING (ECS's default) or the one
/// asked for, filtered by instance, family, `startedBy`, service or launch type.
pub(super) async fn list(state: &ControlState, request: List) -> Result<Value, ApiError> {
    let cluster = cluster_name(request.cluster.as_deref())?;
    state
        .read(move |db, _, _| {
            active_cluster(db, &cluster)?;
            let instance = match request.container_instance.as_deref() {
                Some(given) => Some(
                    scoped_arn(
                        &cluster,
                        "container-instance",
                        given,
                        arn::container_instance,
                    )
                    .ok_or_else(|| {
                        ApiError::invalid("The referenced container instance was not found.")
                    })?,
                ),
                None => None,
            };
            let service = request
                .service_name
                .as_deref()
                .map(|s| s.rsplit('/').next().unwrap_or(s));
            let tasks = db.tasks(&TaskFilter {
                cluster: Some(&cluster),
                service,
                container_instance_arn: instance.as_deref(),
                family: request.family.as_deref(),
                started_by: request.started_by.as_deref(),
                desired_status: Some(request.desired_status.unwrap_or_default()),
                launch_type: request.launch_type,
                ..TaskFilter::default()
            })?;
            let arns = tasks.into_iter().map(|t| t.task.task_arn).collect();
            let page = paginate(arns, request.max_results, request.next_token.as_deref())?;
            Ok(page_value("taskArns", page))
        })
        .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Describe {
    cluster: Option<String>,
    tasks: Vec<String>,
}

/// The tasks named (by id or ARN), stopped ones included; the others are `failures`.
pub(super) async fn describe(state: &ControlState, request: Describe) -> Result<Value, ApiError> {
    let cluster = cluster_name(request.cluster.as_deref())?;
    if request.tasks.len() > 100 {
        return Err(ApiError::invalid("DescribeTasks takes at most 100 tasks."));
    }
    state
        .read(move |db, _, _| {
            active_cluster(db, &cluster)?;
            let mut tasks = Vec::new();
            let mut failures = Vec::new();
            for given in &request.tasks {
                let arn = scoped_arn(&cluster, "task", given, arn::task);
                let found = match &arn {
                    Some(arn) => db.task(arn)?.filter(|t| t.meta.cluster == cluster),
                    None => None,
                };
                match found {
                    Some(record) => tasks.push(to_value(&record.task)?),
                    None => failures.push(missing(arn.unwrap_or_else(|| given.clone()))),
                }
            }
            Ok(json!({ "tasks": tasks, "failures": to_value(&failures)? }))
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Stop {
    cluster: Option<String>,
    task: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Stops a task (a service's is drained from its load balancers first, and replaced).
pub(super) async fn stop(state: &ControlState, request: Stop) -> Result<Value, ApiError> {
    let cluster = cluster_name(request.cluster.as_deref())?;
    let stopped = state
        .write(move |txn| {
            active_cluster(txn.db, &cluster)?;
            let not_found = || ApiError::invalid("The referenced task was not found.");
            let arn =
                scoped_arn(&cluster, "task", &request.task, arn::task).ok_or_else(not_found)?;
            let mut record = txn
                .db
                .task(&arn)?
                .filter(|t| t.meta.cluster == cluster)
                .ok_or_else(not_found)?;
            let reason = request
                .reason
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "Task stopped by user".to_owned());
            scheduler::stop_task(txn, &mut record, StopCode::UserInitiated, &reason)?;
            txn.effects.wake = true;
            tracing::info!(task = %arn, reason, "task stop requested");
            Ok(json!({ "task": to_value(&record.task)? }))
        })
        .await?;
    Ok(stopped)
}
