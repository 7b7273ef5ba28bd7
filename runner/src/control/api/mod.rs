//! ECS's API: `POST /` with `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Operation>`
//! (the JSON 1.1 protocol), one handler per operation.
//!
//! Requests are ECS's JSON with ECS's field names; fields berth does not use are ignored, as
//! the AWS JSON protocol ignores unknown members, except where ignoring them would change what
//! the caller gets (task `overrides`, capacity provider strategies), which are refused.
//! Resources are named as ECS names them: by name or id, or by ARN.

mod clusters;
mod instances;
mod services;
mod taskdefs;
mod tasks;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ecs::Failure;
use crate::ecs::arn::{self, Arn};
use crate::ecs::cluster::{Cluster, ClusterStatus};
use crate::ecs::taskdef::{TaskDefinition, TaskDefinitionRef, TaskDefinitionStatus};

use super::store::Tx;
use super::{ApiError, ControlState, DEFAULT_CLUSTER, ErrorKind, TARGET_PREFIX};

/// The JSON 1.1 protocol's content type.
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// `POST /`: sends the operation named by `X-Amz-Target` to its handler.
pub(crate) async fn dispatch(
    State(state): State<ControlState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let operation = target
        .strip_prefix(TARGET_PREFIX)
        .and_then(|rest| rest.strip_prefix('.'));
    let result = match operation {
        Some(operation) => call(&state, operation, &body).await,
        None => Err(ApiError::new(
            ErrorKind::UnknownOperation,
            format!("Missing or unknown X-Amz-Target '{target}'."),
        )),
    };
    match result {
        Ok(value) => (
            StatusCode::OK,
            [("content-type", CONTENT_TYPE)],
            Json(value),
        )
            .into_response(),
        Err(error) => error.into_response(),
    }
}

async fn call(state: &ControlState, operation: &str, body: &[u8]) -> Result<Value, ApiError> {
    match operation {
        "RegisterTaskDefinition" => taskdefs::register(state, body).await,
        "DescribeTaskDefinition" => taskdefs::describe(state, parse(body)?).await,
        "ListTaskDefinitions" => taskdefs::list(state, parse(body)?).await,
        "DeregisterTaskDefinition" => taskdefs::deregister(state, parse(body)?).await,
        "CreateCluster" => clusters::create(state, parse(body)?).await,
        "ListClusters" => clusters::list(state, parse(body)?).await,
        "DescribeClusters" => clusters::describe(state, parse(body)?).await,
        "DeleteCluster" => clusters::delete(state, parse(body)?).await,
        "ListContainerInstances" => instances::list(state, parse(body)?).await,
        "DescribeContainerInstances" => instances::describe(state, parse(body)?).await,
        "DeregisterContainerInstance" => instances::deregister(state, parse(body)?).await,
        "RunTask" => tasks::run(state, parse(body)?).await,
        "ListTasks" => tasks::list(state, parse(body)?).await,
        "DescribeTasks" => tasks::describe(state, parse(body)?).await,
        "StopTask" => tasks::stop(state, parse(body)?).await,
        "CreateService" => services::create(state, parse(body)?).await,
        "UpdateService" => services::update(state, parse(body)?).await,
        "DeleteService" => services::delete(state, parse(body)?).await,
        "ListServices" => services::list(state, parse(body)?).await,
        "DescribeServices" => services::describe(state, parse(body)?).await,
        _ => Err(ApiError::new(
            ErrorKind::UnknownOperation,
            format!("Operation {operation} is not supported by berth's control plane."),
        )),
    }
}

/// Parses an operation's body; an empty body is `{}`.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| ApiError::new(ErrorKind::Serialization, e.to_string()))
}

/// A cluster's name from a request's `cluster` (a name or an ARN; `default` when absent).
fn cluster_name(given: Option<&str>) -> Result<String, ApiError> {
    let given = given.filter(|g| !g.is_empty()).unwrap_or(DEFAULT_CLUSTER);
    if given.starts_with("arn:") {
        let parsed: Arn = given.parse().map_err(|_| ApiError::cluster_not_found())?;
        if parsed.resource_type != "cluster" {
            return Err(ApiError::invalid(format!(
                "'{given}' is not a cluster ARN."
            )));
        }
        return Ok(parsed.resource);
    }
    Ok(given.to_owned())
}

/// The ACTIVE cluster `name`, or `ClusterNotFoundException`.
fn active_cluster(db: &Tx<'_>, name: &str) -> Result<Cluster, ApiError> {
    db.cluster(name)?
        .filter(|c| c.status == ClusterStatus::Active)
        .ok_or_else(ApiError::cluster_not_found)
}

/// The ARN of a cluster-scoped resource named by id or ARN; `None` when an ARN names another
/// cluster or another kind of resource.
fn scoped_arn(
    cluster: &str,
    kind: &str,
    given: &str,
    make: fn(&str, &str) -> String,
) -> Option<String> {
    if given.starts_with("arn:") {
        let parsed: Arn = given.parse().ok()?;
        (parsed.resource_type == kind && parsed.cluster_name() == Some(cluster))
            .then(|| make(cluster, parsed.id()))
    } else {
        Some(make(cluster, given))
    }
}

/// A task definition named as `RunTask` and `CreateService` name it: `family` is its latest
/// ACTIVE revision; `family:revision` and ARNs must be ACTIVE unless `inactive_ok`.
fn resolve_task_definition(
    db: &Tx<'_>,
    given: &str,
    inactive_ok: bool,
) -> Result<TaskDefinition, ApiError> {
    let missing = || ApiError::client("Unable to describe task definition.");
    let reference: TaskDefinitionRef = given.parse().map_err(|_| missing())?;
    let definition = match &reference {
        TaskDefinitionRef::Family(family) => db.latest_task_definition(family)?,
        TaskDefinitionRef::Revision { family, revision } => {
            db.task_definition(family, *revision)?
        }
    }
    .ok_or_else(missing)?;
    if !inactive_ok && definition.status == TaskDefinitionStatus::Inactive {
        return Err(ApiError::client("TaskDefinition is inactive"));
    }
    Ok(definition)
}

/// A `failures` entry for a resource that does not exist.
fn missing(arn: String) -> Failure {
    Failure {
        arn: Some(arn),
        reason: "MISSING".to_owned(),
        detail: None,
    }
}

/// One page of `items`: `maxResults` (1 to 100, default 100) from the offset in `nextToken`.
fn paginate(
    items: Vec<String>,
    max_results: Option<u32>,
    next_token: Option<&str>,
) -> Result<(Vec<String>, Option<String>), ApiError> {
    let size = match max_results {
        None => 100,
        Some(n @ 1..=100) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "maxResults must be between 1 and 100, not {n}."
            )));
        }
    };
    let start = match next_token {
        None | Some("") => 0,
        Some(token) => token
            .parse::<usize>()
            .map_err(|_| ApiError::invalid("Invalid nextToken."))?,
    };
    let end = (start + size).min(items.len());
    let page = items
        .get(start..end)
        .map(<[String]>::to_vec)
        .unwrap_or_default();
    let next = (end < items.len()).then(|| end.to_string());
    Ok((page, next))
}

/// `{<key>: page, "nextToken": ...}`.
fn page_value(key: &str, page: (Vec<String>, Option<String>)) -> Value {
    let mut value = serde_json::json!({ key: page.0 });
    if let Some(token) = page.1 {
        value["nextToken"] = Value::String(token);
    }
    value
}

fn to_value<T: serde::Serialize>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::internal(format!("serializing: {e}")))
}

/// ECS's ARN of a cluster, from its name.
fn cluster_arn(name: &str) -> String {
    arn::cluster(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_next_tokens() {
        let items: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let (page, next) = paginate(items.clone(), Some(2), None).unwrap();
        assert_eq!(
            (page, next.as_deref()),
            (vec!["0".into(), "1".into()], Some("2"))
        );
        let (page, next) = paginate(items.clone(), Some(2), Some("4")).unwrap();
        assert_eq!((page, next), (vec!["4".to_owned()], None));
        assert!(paginate(items.clone(), Some(0), None).is_err());
        assert!(paginate(items, None, Some("x")).is_err());
    }

    #[test]
    fn clusters_by_name_or_arn() {
        assert_eq!(cluster_name(None).unwrap(), "default");
        assert_eq!(
            cluster_name(Some("arn:aws:ecs:local:000000000000:cluster/prod")).unwrap(),
            "prod"
        );
        assert_eq!(
            scoped_arn("prod", "task", "abc", arn::task).as_deref(),
            Some("arn:aws:ecs:local:000000000000:task/prod/abc")
        );
        assert_eq!(
            scoped_arn("prod", "task", &arn::task("dev", "abc"), arn::task),
            None
        );
    }
}
