//! `ListContainerInstances`, `DescribeContainerInstances`, `DeregisterContainerInstance`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::ecs::Timestamp;
use crate::ecs::arn;
use crate::ecs::placement::{ContainerInstance, ContainerInstanceStatus};
use crate::ecs::query::{Candidate, Expression};
use crate::ecs::status::StopCode;

use super::{active_cluster, cluster_name, missing, page_value, paginate, scoped_arn, to_value};
use crate::control::scheduler::{self, instance_view};
use crate::control::store::{InstanceRecord, TaskFilter, TaskRecord, Tx};
use crate::control::{ApiError, ControlState};

/// The cluster's instances as `DescribeContainerInstances` gives them, with the groups of
/// their tasks, by registration.
fn views(
    db: &Tx<'_>,
    cluster: &str,
) -> Result<Vec<(InstanceRecord, ContainerInstance, Vec<String>)>, ApiError> {
    let tasks = db.tasks(&TaskFilter {
        cluster: Some(cluster),
        active: true,
        ..TaskFilter::default()
    })?;
    let mut by_instance: BTreeMap<&str, Vec<&TaskRecord>> = BTreeMap::new();
    for task in &tasks {
        if let Some(arn) = task.task.container_instance_arn.as_deref() {
            by_instance.entry(arn).or_default().push(task);
        }
    }
    Ok(db
        .instances(cluster)?
        .into_iter()
        .map(|record| {
            let on = by_instance
                .get(record.instance.container_instance_arn.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let view = instance_view(&record, on);
            let groups = on.iter().filter_map(|t| t.task.group.clone()).collect();
            (record, view, groups)
        })
        .collect())
}

/// An instance as the cluster query language sees it.
struct Queried<'a> {
    instance: &'a ContainerInstance,
    groups: &'a [String],
}

impl Candidate for Queried<'_> {
    fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.instance.attributes.get(name).map(Option::as_deref)
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
        self.groups.iter().map(String::as_str).collect()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct List {
    cluster: Option<String>,
    filter: Option<String>,
    status: Option<ContainerInstanceStatus>,
    max_results: Option<u32>,
    next_token: Option<String>,
}

/// The ARNs of the cluster's instances: every status but INACTIVE unless `status` says, and
/// only those matching `filter` (a cluster query language expression) when given.
pub(super) async fn list(state: &ControlState, request: List) -> Result<Value, ApiError> {
    let cluster = cluster_name(request.cluster.as_deref())?;
    let filter = request
        .filter
        .as_deref()
        .filter(|f| !f.trim().is_empty())
        .map(Expression::parse)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("Invalid filter: {e}")))?;
    state
        .read(move |db, _, _| {
            active_cluster(db, &cluster)?;
            let arns = views(db, &cluster)?
                .into_iter()
                .filter(|(_, view, _)| match request.status {
                    Some(status) => view.status == status,
                    None => view.status != ContainerInstanceStatus::Inactive,
                })
                .filter(|(_, view, groups)| {
                    filter.as_ref().is_none_or(|f| {
                        f.matches(&Queried {
                            instance: view,
                            groups,
                        })
                    })
                })
                .map(|(_, view, _)| view.container_instance_arn)
                .collect();
            let page = paginate(arns, request.max_results, request.next_token.as_deref())?;
            Ok(page_value("containerInstanceArns", page))
        })
        .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Describe {
    cluster: Option<String>,
    container_instances: Vec<String>,
}

/// The instances named (by id or ARN), with what they have left and their task counts.
pub(super) async fn describe(state: &ControlState, request: Describe) -> Result<Value, ApiError> {
    let cluster = cluster_name(request.cluster.as_deref())?;
    state
        .read(move |db, _, _| {
            active_cluster(db, &cluster)?;
            let all = views(db, &cluster)?;
            let mut found = Vec::new();
            let mut failures = Vec::new();
            for given in &request.container_instances {
                let arn = scoped_arn(
                    &cluster,
                    "container-instance",
                    given,
                    arn::container_instance,
                );
                match all
                    .iter()
                    .find(|(_, view, _)| Some(&view.container_instance_arn) == arn.as_ref())
                {
                    Some((_, view, _)) => found.push(to_value(view)?),
                    None => failures.push(missing(arn.unwrap_or_else(|| given.clone()))),
                }
            }
            Ok(json!({ "containerInstances": found, "failures": to_value(&failures)? }))
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Deregister {
    cluster: Option<String>,
    container_instance: String,
    #[serde(default)]
    force: bool,
}

/// Deregisters an instance: INACTIVE, no longer billed. With tasks on it, only with `force`,
/// and its tasks are stopped (services replace theirs elsewhere).
pub(super) async fn deregister(
    state: &ControlState,
    request: Deregister,
) -> Result<Value, ApiError> {
    let cluster = cluster_name(request.cluster.as_deref())?;
    state
        .write(move |txn| {
            active_cluster(txn.db, &cluster)?;
            let arn = scoped_arn(
                &cluster,
                "container-instance",
                &request.container_instance,
                arn::container_instance,
            )
            .ok_or_else(|| ApiError::invalid("The referenced container instance was not found."))?;
            let mut record = txn
                .db
                .instance(&arn)?
                .filter(|r| r.cluster == cluster)
                .ok_or_else(|| {
                    ApiError::invalid("The referenced container instance was not found.")
                })?;
            let tasks = txn.db.tasks(&TaskFilter {
                container_instance_arn: Some(&arn),
                active: true,
                ..TaskFilter::default()
            })?;
            if !tasks.is_empty() && !request.force {
                return Err(ApiError::invalid(
                    "The container instance has tasks that are not stopped: stop them first, or \
                     deregister it with force.",
                ));
            }
            for mut task in tasks {
                scheduler::stop_task(
                    txn,
                    &mut task,
                    StopCode::TerminationNotice,
                    "Container instance deregistration forced by user",
                )?;
            }
            if record.instance.status != ContainerInstanceStatus::Inactive {
                record.instance.status = ContainerInstanceStatus::Inactive;
                record.deregistered_at = Some(txn.now);
                txn.db.put_instance(&record)?;
                txn.effects.wake = true;
                tracing::info!(instance = %arn, "container instance deregistered");
            }
            Ok(json!({ "containerInstance": to_value(&instance_view(&record, &[]))? }))
        })
        .await
}
