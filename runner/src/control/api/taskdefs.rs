//! `RegisterTaskDefinition`, `DescribeTaskDefinition`, `ListTaskDefinitions`,
//! `DeregisterTaskDefinition`.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::ecs::taskdef::{
    RegisterTaskDefinition, TaskDefinition, TaskDefinitionRef, TaskDefinitionStatus,
};

use super::{page_value, paginate, to_value};
use crate::control::{ApiError, ControlState};

/// ECS's answer with a definition: `{"taskDefinition": ..., "tags": [...]}`.
fn with_tags(definition: &TaskDefinition) -> Result<Value, ApiError> {
    Ok(json!({
        "taskDefinition": to_value(definition)?,
        "tags": to_value(&definition.tags)?,
    }))
}

/// Registers the next revision of the definition's family. The body is ECS's
/// `RegisterTaskDefinition` input, which refuses fields ECS does not know.
pub(super) async fn register(state: &ControlState, body: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::client("The task definition is not UTF-8 JSON."))?;
    let request =
        RegisterTaskDefinition::from_json(text).map_err(|e| ApiError::client(e.to_string()))?;
    state
        .write(move |txn| {
            let revision = txn.db.next_revision(&request.family)?;
            let definition = TaskDefinition::register(request, revision, txn.now)
                .map_err(|e| ApiError::client(e.to_string()))?;
            txn.db.put_task_definition(&definition)?;
            tracing::info!(definition = %definition.family_revision(), "task definition registered");
            with_tags(&definition)
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Describe {
    task_definition: String,
}

/// `family` (its latest ACTIVE revision), `family:revision` or an ARN, whatever its status.
pub(super) async fn describe(state: &ControlState, request: Describe) -> Result<Value, ApiError> {
    state
        .read(move |db, _, _| {
            let definition = super::resolve_task_definition(db, &request.task_definition, true)?;
            with_tags(&definition)
        })
        .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct List {
    family_prefix: Option<String>,
    status: Option<TaskDefinitionStatus>,
    sort: Option<String>,
    max_results: Option<u32>,
    next_token: Option<String>,
}

/// The ARNs, by family then revision (`"sort": "DESC"` reverses), ACTIVE by default.
pub(super) async fn list(state: &ControlState, request: List) -> Result<Value, ApiError> {
    let descending = match request.sort.as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "Invalid sort '{other}': expected ASC or DESC."
            )));
        }
    };
    state
        .read(move |db, _, _| {
            let mut arns: Vec<String> = db
                .task_definitions(
                    request.family_prefix.as_deref().unwrap_or_default(),
                    request.status.unwrap_or_default(),
                )?
                .into_iter()
                .map(|d| d.task_definition_arn)
                .collect();
            if descending {
                arns.reverse();
            }
            let page = paginate(arns, request.max_results, request.next_token.as_deref())?;
            Ok(page_value("taskDefinitionArns", page))
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Deregister {
    task_definition: String,
}

/// Marks one revision INACTIVE: its tasks and services go on, new ones cannot use it.
pub(super) async fn deregister(
    state: &ControlState,
    request: Deregister,
) -> Result<Value, ApiError> {
    state
        .write(move |txn| {
            let reference: TaskDefinitionRef = request
                .task_definition
                .parse()
                .map_err(|e: crate::ecs::taskdef::TaskDefinitionRefError| {
                    ApiError::client(e.to_string())
                })?;
            let TaskDefinitionRef::Revision { family, revision } = reference else {
                return Err(ApiError::client(
                    "Deregistering a task definition takes family:revision or its full ARN.",
                ));
            };
            let mut definition = txn
                .db
                .task_definition(&family, revision)?
                .ok_or_else(|| ApiError::client("The specified task definition does not exist."))?;
            if definition.status == TaskDefinitionStatus::Active {
                definition.deregister(txn.now);
                txn.db.put_task_definition(&definition)?;
                tracing::info!(definition = %definition.family_revision(), "task definition deregistered");
            }
            Ok(json!({ "taskDefinition": to_value(&definition)? }))
        })
        .await
}
