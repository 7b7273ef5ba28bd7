//! `CreateCluster`, `ListClusters`, `DescribeClusters`, `DeleteCluster`.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::ecs::cluster::{self, Cluster, ClusterStatus};

use super::{active_cluster, cluster_name, missing, page_value, paginate, to_value};
use crate::control::store::{TaskFilter, Tx};
use crate::control::{ApiError, ControlState, DEFAULT_CLUSTER, ErrorKind};

/// A cluster with its counts filled in.
pub(super) fn describe_cluster(db: &Tx<'_>, mut cluster: Cluster) -> Result<Value, ApiError> {
    if cluster.status == ClusterStatus::Active {
        let counts = db.cluster_counts(&cluster.cluster_name)?;
        cluster.registered_container_instances_count = counts.instances;
        cluster.running_tasks_count = counts.running;
        cluster.pending_tasks_count = counts.pending;
        cluster.active_services_count = counts.services;
    }
    to_value(&cluster)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Create {
    cluster_name: Option<String>,
}

/// Creates a cluster (`default` when unnamed); creating an ACTIVE cluster again returns it.
pub(super) async fn create(state: &ControlState, request: Create) -> Result<Value, ApiError> {
    let name = request
        .cluster_name
        .unwrap_or_else(|| DEFAULT_CLUSTER.to_owned());
    cluster::check_name(&name).map_err(|e| ApiError::invalid(e.to_string()))?;
    state
        .write(move |txn| {
            let cluster = match txn.db.cluster(&name)? {
                Some(existing) if existing.status == ClusterStatus::Active => existing,
                _ => {
                    let cluster = Cluster::new(&name);
                    txn.db.put_cluster(&cluster)?;
                    tracing::info!(cluster = %name, "cluster created");
                    cluster
                }
            };
            Ok(json!({ "cluster": describe_cluster(txn.db, cluster)? }))
        })
        .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct List {
    max_results: Option<u32>,
    next_token: Option<String>,
}

/// The ARNs of the ACTIVE clusters.
pub(super) async fn list(state: &ControlState, request: List) -> Result<Value, ApiError> {
    state
        .read(move |db, _, _| {
            let arns = db
                .clusters()?
                .into_iter()
                .filter(|c| c.status == ClusterStatus::Active)
                .map(|c| c.cluster_arn)
                .collect();
            let page = paginate(arns, request.max_results, request.next_token.as_deref())?;
            Ok(page_value("clusterArns", page))
        })
        .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Describe {
    clusters: Option<Vec<String>>,
}

/// The clusters named (`default` when none is), INACTIVE ones included; the others are
/// `failures` with reason `MISSING`.
pub(super) async fn describe(state: &ControlState, request: Describe) -> Result<Value, ApiError> {
    let names = request
        .clusters
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| vec![DEFAULT_CLUSTER.to_owned()]);
    state
        .read(move |db, _, _| {
            let mut clusters = Vec::new();
            let mut failures = Vec::new();
            for given in names {
                let found = match cluster_name(Some(&given)) {
                    Ok(name) => db.cluster(&name)?,
                    Err(_) => None,
                };
                match found {
                    Some(cluster) => clusters.push(describe_cluster(db, cluster)?),
                    None => failures.push(missing(if given.starts_with("arn:") {
                        given
                    } else {
                        super::cluster_arn(&given)
                    })),
                }
            }
            Ok(json!({ "clusters": clusters, "failures": to_value(&failures)? }))
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Delete {
    cluster: String,
}

/// Deletes an empty cluster: no container instances, services or tasks left. The `default`
/// cluster is always there.
pub(super) async fn delete(state: &ControlState, request: Delete) -> Result<Value, ApiError> {
    let name = cluster_name(Some(&request.cluster))?;
    if name == DEFAULT_CLUSTER {
        return Err(ApiError::invalid("The default cluster cannot be deleted."));
    }
    state
        .write(move |txn| {
            let mut cluster = active_cluster(txn.db, &name)?;
            let counts = txn.db.cluster_counts(&name)?;
            if counts.instances > 0 {
                return Err(ApiError::new(
                    ErrorKind::ClusterContainsContainerInstances,
                    "The Cluster cannot be deleted while Container Instances are active or \
                     draining.",
                ));
            }
            if counts.services > 0 {
                return Err(ApiError::new(
                    ErrorKind::ClusterContainsServices,
                    "The Cluster cannot be deleted while Services are active.",
                ));
            }
            let tasks = txn.db.tasks(&TaskFilter {
                cluster: Some(&name),
                active: true,
                ..TaskFilter::default()
            })?;
            if !tasks.is_empty() {
                return Err(ApiError::new(
                    ErrorKind::ClusterContainsTasks,
                    "The Cluster cannot be deleted while Tasks are active.",
                ));
            }
            cluster.status = ClusterStatus::Inactive;
            txn.db.put_cluster(&cluster)?;
            tracing::info!(cluster = %name, "cluster deleted");
            Ok(json!({ "cluster": describe_cluster(txn.db, cluster)? }))
        })
        .await
}
