//! `CreateService`, `UpdateService`, `DeleteService`, `ListServices`, `DescribeServices`.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::ecs::arn;
use crate::ecs::placement::{PlacementConstraint, PlacementPolicy, PlacementStrategy};
use crate::ecs::service::{DeploymentConfiguration, SchedulingStrategy, Service, ServiceStatus};
use crate::ecs::status::LaunchType;
use crate::ecs::taskdef::{Compatibility, TaskDefinition};
use crate::ecs::validate::is_valid_family;

use super::{active_cluster, cluster_name, missing, page_value, paginate, scoped_arn, to_value};
use crate::control::balancers::{Listener, ServiceLoadBalancer};
use crate::control::scheduler::{self, constraints_for};
use crate::control::services::bind_listeners;
use crate::control::store::{ServiceRecord, TaskFilter, Tx};
use crate::control::{ApiError, ControlState};

/// The most load balancers a service may have, as in ECS.
const MAX_LOAD_BALANCERS: usize = 5;

/// A service as `DescribeServices` gives it: its counts from its tasks, and its load
/// balancers with their listener ports.
fn describe_service(db: &Tx<'_>, record: &ServiceRecord) -> Result<Value, ApiError> {
    let mut service = record.service.clone();
    if service.status != ServiceStatus::Inactive {
        let tasks = db.tasks(&TaskFilter {
            cluster: Some(&record.cluster),
            service: Some(&service.service_name),
            active: true,
            ..TaskFilter::default()
        })?;
        service.running_count = tasks
            .iter()
            .filter(|t| t.task.last_status == crate::ecs::status::TaskStatus::Running)
            .count() as u32;
        service.pending_count = tasks
            .iter()
            .filter(|t| t.task.last_status.is_pending())
            .count() as u32;
    }
    let mut value = to_value(&service)?;
    value["loadBalancers"] = to_value(&record.load_balancers)?;
    Ok(value)
}

/// The ARN of a service named by name or ARN in `cluster`.
fn service_name(cluster: &str, given: &str) -> Result<String, ApiError> {
    scoped_arn(cluster, "service", given, arn::service)
        .map(|arn| arn.rsplit('/').next().unwrap_or_default().to_owned())
        .ok_or_else(ApiError::service_not_found)
}

/// The service `name` of the ACTIVE cluster `cluster`, whatever its status.
fn existing_service(db: &Tx<'_>, cluster: &str, name: &str) -> Result<ServiceRecord, ApiError> {
    active_cluster(db, cluster)?;
    db.service(cluster, name)?
        .ok_or_else(ApiError::service_not_found)
}

/// Checks a definition against the service's launch type and load balancers.
fn check_definition(
    definition: &TaskDefinition,
    launch_type: LaunchType,
    load_balancers: &[ServiceLoadBalancer],
) -> Result<(), ApiError> {
    let compatibility = match launch_type {
        LaunchType::Ec2 => Compatibility::Ec2,
        LaunchType::Fargate => Compatibility::Fargate,
    };
    if !definition.is_compatible_with(compatibility) {
        return Err(ApiError::client(format!(
            "Task definition does not support launch_type {launch_type}."
        )));
    }
    for lb in load_balancers {
        let container = definition.container(&lb.container_name).ok_or_else(|| {
            ApiError::invalid(format!(
                "The container {} does not exist in the task definition.",
                lb.container_name
            ))
        })?;
        if !container
            .port_mappings
            .iter()
            .any(|m| m.container_port == u32::from(lb.container_port))
        {
            return Err(ApiError::invalid(format!(
                "The container {} did not have a container port {} defined.",
                lb.container_name, lb.container_port
            )));
        }
    }
    Ok(())
}

/// Checks constraints and strategies (with the definition's own constraints).
fn check_placement(
    definition: &TaskDefinition,
    launch_type: LaunchType,
    constraints: &[PlacementConstraint],
    strategies: &[PlacementStrategy],
) -> Result<(), ApiError> {
    if launch_type == LaunchType::Fargate && (!constraints.is_empty() || !strategies.is_empty()) {
        return Err(ApiError::invalid(
            "Task placement constraints and strategies are not supported with the FARGATE \
             launch type.",
        ));
    }
    PlacementPolicy::new(&constraints_for(definition, constraints), strategies)
        .map(drop)
        .map_err(|e| ApiError::invalid(e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Create {
    cluster: Option<String>,
    service_name: String,
    task_definition: Option<String>,
    desired_count: Option<u32>,
    launch_type: Option<LaunchType>,
    load_balancers: Vec<ServiceLoadBalancer>,
    deployment_configuration: Option<DeploymentConfiguration>,
    health_check_grace_period_seconds: Option<u32>,
    placement_constraints: Vec<PlacementConstraint>,
    placement_strategy: Vec<PlacementStrategy>,
    scheduling_strategy: Option<SchedulingStrategy>,
    capacity_provider_strategy: Vec<Value>,
}

/// Creates a service and its first deployment; the reconciler starts its tasks. Its load
/// balancers are listening when this answers.
pub(super) async fn create(state: &ControlState, request: Create) -> Result<Value, ApiError> {
    let cluster = cluster_name(request.cluster.as_deref())?;
    let name = request.service_name.clone();
    if !is_valid_family(&name) {
        return Err(ApiError::invalid(format!(
            "Invalid service name '{name}'. Up to 255 letters (uppercase and lowercase), \
             numbers, underscores, and hyphens are allowed."
        )));
    }
    if request.scheduling_strategy == Some(SchedulingStrategy::Daemon) {
        return Err(ApiError::invalid(
            "The DAEMON scheduling strategy is not supported: use REPLICA.",
        ));
    }
    if !request.capacity_provider_strategy.is_empty() {
        return Err(ApiError::invalid(
            "capacityProviderStrategy is not supported: give launchType EC2 or FARGATE.",
        ));
    }
    let desired = request
        .desired_count
        .ok_or_else(|| ApiError::invalid("desiredCount is required for a REPLICA service."))?;
    let given_definition = request
        .task_definition
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::invalid("taskDefinition is required."))?;
    let config = request.deployment_configuration.unwrap_or_default();
    config
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    if request.load_balancers.len() > MAX_LOAD_BALANCERS {
        return Err(ApiError::invalid(format!(
            "A service can have at most {MAX_LOAD_BALANCERS} load balancers."
        )));
    }
    let mut ports = HashSet::new();
    for lb in &request.load_balancers {
        let port = lb.listener_port.ok_or_else(|| {
            ApiError::invalid(
                "loadBalancers[].listenerPort is required: it is the port berth's load balancer \
                 listens on.",
            )
        })?;
        if port == 0 || !ports.insert(port) {
            return Err(ApiError::invalid(format!(
                "Invalid listenerPort {port}: each load balancer needs a port of its own."
            )));
        }
    }
    let launch_type = request.launch_type.unwrap_or(LaunchType::Ec2);

    // Check everything before binding the listeners, and again in the transaction.
    let check = {
        let cluster = cluster.clone();
        let name = name.clone();
        let given_definition = given_definition.clone();
        let request_lbs = request.load_balancers.clone();
        let constraints = request.placement_constraints.clone();
        let strategies = request.placement_strategy.clone();
        move |db: &Tx<'_>| -> Result<TaskDefinition, ApiError> {
            active_cluster(db, &cluster)?;
            if db
                .service(&cluster, &name)?
                .is_some_and(|s| s.service.status != ServiceStatus::Inactive)
            {
                return Err(ApiError::invalid("Creation of service was not idempotent."));
            }
            let definition = super::resolve_task_definition(db, &given_definition, false)?;
            check_definition(&definition, launch_type, &request_lbs)?;
            check_placement(&definition, launch_type, &constraints, &strategies)?;
            Ok(definition)
        }
    };
    {
        let check = check.clone();
        state.read(move |db, _, _| check(db).map(drop)).await?;
    }
    let key = (cluster.clone(), name.clone());
    let listeners: Vec<Listener> = if request.load_balancers.is_empty() {
        Vec::new()
    } else {
        bind_listeners(state, &request.load_balancers)
            .await
            .map_err(|e| ApiError::invalid(format!("The load balancer cannot listen: {e}")))?
    };
    // In place before the service exists, so that the reconciler never binds them twice.
    let bound = listeners.clone();
    if !listeners.is_empty() {
        state.inner.balancers.insert(key.clone(), listeners);
    }
    let created = state
        .write(move |txn| {
            let definition = check(txn.db)?;
            let mut service = Service {
                service_arn: arn::service(&cluster, &name),
                service_name: name.clone(),
                cluster_arn: arn::cluster(&cluster),
                status: ServiceStatus::Active,
                desired_count: desired,
                running_count: 0,
                pending_count: 0,
                launch_type,
                task_definition: definition.task_definition_arn.clone(),
                deployment_configuration: config,
                deployments: Vec::new(),
                events: Vec::new(),
                load_balancers: request
                    .load_balancers
                    .iter()
                    .map(|lb| crate::ecs::service::LoadBalancer {
                        target_group_arn: lb.target_group_arn.clone(),
                        load_balancer_name: lb.load_balancer_name.clone(),
                        container_name: lb.container_name.clone(),
                        container_port: lb.container_port,
                    })
                    .collect(),
                placement_constraints: request.placement_constraints,
                placement_strategy: request.placement_strategy,
                health_check_grace_period_seconds: request.health_check_grace_period_seconds,
                scheduling_strategy: SchedulingStrategy::Replica,
                created_at: txn.now,
            };
            service.start_deployment(
                scheduler::new_deployment_id(),
                definition.task_definition_arn.clone(),
                txn.now,
            );
            let record = ServiceRecord {
                cluster: cluster.clone(),
                service,
                load_balancers: request.load_balancers,
                last_completed: None,
                steady: false,
            };
            txn.db.put_service(&record)?;
            txn.effects.wake = true;
            tracing::info!(cluster = %cluster, service = %name, desired, "service created");
            Ok(json!({ "service": describe_service(txn.db, &record)? }))
        })
        .await;
    if created.is_err() && !bound.is_empty() {
        state.inner.balancers.remove(&key);
        for listener in bound {
            listener.lb.shutdown().await;
        }
    }
    created
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Update {
    cluster: Option<String>,
    service: String,
    desired_count: Option<u32>,
    task_definition: Option<String>,
    deployment_configuration: Option<Value>,
    force_new_deployment: bool,
    health_check_grace_period_seconds: Option<u32>,
    placement_constraints: Option<Vec<PlacementConstraint>>,
    placement_strategy: Option<Vec<PlacementStrategy>>,
}

/// Changes a service. A new task definition, or `forceNewDeployment`, starts a new
/// deployment; `deploymentConfiguration` changes only the fields it gives.
pub(super) async fn update(state: &ControlState, request: Update) -> Result<Value, ApiError> {
    let cluster = cluster_name(request.cluster.as_deref())?;
    let name = service_name(&cluster, &request.service)?;
    state
        .write(move |txn| {
            let mut record = existing_service(txn.db, &cluster, &name)?;
            if record.service.status != ServiceStatus::Active {
                return Err(ApiError::service_not_active());
            }
            let service = &mut record.service;
            if let Some(patch) = &request.deployment_configuration {
                let mut merged = to_value(&service.deployment_configuration)?;
                if let (Some(merged), Some(patch)) = (merged.as_object_mut(), patch.as_object()) {
                    for (key, value) in patch {
                        merged.insert(key.clone(), value.clone());
                    }
                }
                let config: DeploymentConfiguration = serde_json::from_value(merged)
                    .map_err(|e| ApiError::invalid(format!("deploymentConfiguration: {e}")))?;
                config
                    .validate()
                    .map_err(|e| ApiError::invalid(e.to_string()))?;
                service.deployment_configuration = config;
            }
            if let Some(grace) = request.health_check_grace_period_seconds {
                service.health_check_grace_period_seconds = Some(grace);
            }
            let definition = match &request.task_definition {
                Some(given) => super::resolve_task_definition(txn.db, given, false)?,
                None => {
                    let current = service.task_definition.clone();
                    super::resolve_task_definition(txn.db, &current, true)?
                }
            };
            check_definition(&definition, service.launch_type, &record.load_balancers)?;
            let service = &mut record.service;
            if request.placement_constraints.is_some() || request.placement_strategy.is_some() {
                let constraints = request
                    .placement_constraints
                    .clone()
                    .unwrap_or_else(|| service.placement_constraints.clone());
                let strategies = request
                    .placement_strategy
                    .clone()
                    .unwrap_or_else(|| service.placement_strategy.clone());
                check_placement(&definition, service.launch_type, &constraints, &strategies)?;
                service.placement_constraints = constraints;
                service.placement_strategy = strategies;
            }
            if let Some(desired) = request.desired_count {
                service.desired_count = desired;
            }
            let primary_definition = service.primary().map(|d| d.task_definition.clone());
            if request.force_new_deployment
                || primary_definition.as_deref() != Some(&definition.task_definition_arn)
            {
                let id = scheduler::new_deployment_id();
                service.start_deployment(
                    id.clone(),
                    definition.task_definition_arn.clone(),
                    txn.now,
                );
                record.steady = false;
                tracing::info!(
                    cluster = %cluster,
                    service = %name,
                    deployment = %id,
                    definition = %definition.family_revision(),
                    "deployment started"
                );
            }
            let desired = record.service.desired_count;
            for deployment in &mut record.service.deployments {
                if deployment.status == crate::ecs::service::DeploymentStatus::Primary {
                    deployment.desired_count = desired;
                }
            }
            txn.db.put_service(&record)?;
            txn.effects.wake = true;
            Ok(json!({ "service": describe_service(txn.db, &record)? }))
        })
        .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Delete {
    cluster: Option<String>,
    service: String,
    force: bool,
}

/// Deletes a service: DRAINING while its tasks stop, INACTIVE after. A service scaled above 0
/// is only deleted with `force`.
pub(super) async fn delete(state: &ControlState, request: Delete) -> Result<Value, ApiError> {
    let cluster = cluster_name(request.cluster.as_deref())?;
    let name = service_name(&cluster, &request.service)?;
    state
        .write(move |txn| {
            let mut record = existing_service(txn.db, &cluster, &name)?;
            match record.service.status {
                ServiceStatus::Inactive => return Err(ApiError::service_not_active()),
                ServiceStatus::Draining => {}
                ServiceStatus::Active => {
                    if record.service.desired_count > 0 && !request.force {
                        return Err(ApiError::invalid(
                            "The service cannot be stopped while it is scaled above 0.",
                        ));
                    }
                    record.service.desired_count = 0;
                    record.service.status = ServiceStatus::Draining;
                    txn.db.put_service(&record)?;
                    txn.effects.wake = true;
                    tracing::info!(cluster = %cluster, service = %name, "service deleting");
                }
            }
            Ok(json!({ "service": describe_service(txn.db, &record)? }))
        })
        .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct List {
    cluster: Option<String>,
    launch_type: Option<LaunchType>,
    max_results: Option<u32>,
    next_token: Option<String>,
}

/// The ARNs of the cluster's ACTIVE and DRAINING services.
pub(super) async fn list(state: &ControlState, request: List) -> Result<Value, ApiError> {
    let cluster = cluster_name(request.cluster.as_deref())?;
    state
        .read(move |db, _, _| {
            active_cluster(db, &cluster)?;
            let arns = db
                .services(Some(&cluster))?
                .into_iter()
                .filter(|r| r.service.status != ServiceStatus::Inactive)
                .filter(|r| {
                    request
                        .launch_type
                        .is_none_or(|l| r.service.launch_type == l)
                })
                .map(|r| r.service.service_arn)
                .collect();
            let page = paginate(arns, request.max_results, request.next_token.as_deref())?;
            Ok(page_value("serviceArns", page))
        })
        .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Describe {
    cluster: Option<String>,
    services: Vec<String>,
}

/// The services named (by name or ARN), INACTIVE ones included; the others are `failures`.
pub(super) async fn describe(state: &ControlState, request: Describe) -> Result<Value, ApiError> {
    let cluster = cluster_name(request.cluster.as_deref())?;
    state
        .read(move |db, _, _| {
            active_cluster(db, &cluster)?;
            let mut services = Vec::new();
            let mut failures = Vec::new();
            for given in &request.services {
                let found = match service_name(&cluster, given) {
                    Ok(name) => db.service(&cluster, &name)?,
                    Err(_) => None,
                };
                match found {
                    Some(record) => services.push(describe_service(db, &record)?),
                    None => failures.push(missing(
                        scoped_arn(&cluster, "service", given, arn::service)
                            .unwrap_or_else(|| given.clone()),
                    )),
                }
            }
            Ok(json!({ "services": services, "failures": to_value(&failures)? }))
        })
        .await
}
