//! `GET /berth/v1/clusters/{cluster}/tasks/{task}/logs?container=NAME&follow=true|false`: a
//! container's output, proxied from the agent that runs (or ran) the task, at
//! `<agent address>/logs/{taskId}/{container}?follow=`.
//!
//! The container defaults to the task's first. The body is streamed as the agent sends it
//! (`text/plain`; with `follow`, until the task stops). Errors are clear about where things
//! stand: no such task or container (404), its agent disconnected (503), its agent not
//! reachable or answering with an error (502, with the agent's message).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::ecs::arn;

use super::{ApiError, ControlState, ErrorKind};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogsQuery {
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    follow: Option<bool>,
}

/// Where a task's logs are.
struct Source {
    address: String,
    task_id: String,
    container: String,
}

/// The route.
pub(crate) async fn route(
    State(state): State<ControlState>,
    Path((cluster, task)): Path<(String, String)>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let task_id = task.rsplit('/').next().unwrap_or(&task).to_owned();
    let wanted = query.container.clone();
    let source = state
        .read(move |db, _, _| {
            let not_found = |what: String| ApiError::new(ErrorKind::NotFound, what);
            db.cluster(&cluster)?
                .ok_or_else(ApiError::cluster_not_found)?;
            let record = db.task(&arn::task(&cluster, &task_id))?.ok_or_else(|| {
                not_found(format!("Task {task_id} not found in cluster {cluster}."))
            })?;
            let container = match wanted {
                Some(name) => record
                    .task
                    .container(&name)
                    .map(|c| c.name.clone())
                    .ok_or_else(|| {
                        not_found(format!("Task {task_id} has no container named {name}."))
                    })?,
                None => record
                    .task
                    .containers
                    .first()
                    .map(|c| c.name.clone())
                    .ok_or_else(|| not_found(format!("Task {task_id} has no containers.")))?,
            };
            let agent_id = record.meta.agent_id.ok_or_else(|| {
                ApiError::new(
                    ErrorKind::AgentUnavailable,
                    format!("Task {task_id} was never placed on an agent: it has no logs."),
                )
            })?;
            let agent = db.agent(&agent_id)?.ok_or_else(|| {
                ApiError::new(
                    ErrorKind::AgentUnavailable,
                    format!("The agent {agent_id} of task {task_id} is no longer registered."),
                )
            })?;
            if !agent.connected {
                return Err(ApiError::new(
                    ErrorKind::AgentUnavailable,
                    format!(
                        "The agent {agent_id} of task {task_id} is disconnected; its logs can be \
                         read again when it reconnects."
                    ),
                ));
            }
            Ok(Source {
                address: agent.address,
                task_id,
                container,
            })
        })
        .await?;
    let url = format!(
        "{}/logs/{}/{}?follow={}",
        source.address.trim_end_matches('/'),
        source.task_id,
        source.container,
        query.follow.unwrap_or(false)
    );
    let response = state.inner.http.get(&url).send().await.map_err(|e| {
        ApiError::new(
            ErrorKind::Agent,
            format!("Cannot reach the agent at {}: {e}", source.address),
        )
    })?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.trim().to_owned());
        let kind = if status == StatusCode::NOT_FOUND {
            ErrorKind::NotFound
        } else {
            ErrorKind::Agent
        };
        return Err(ApiError::new(
            kind,
            format!("The agent answered {status}: {message}"),
        ));
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain; charset=utf-8")
        .to_owned();
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(response.bytes_stream()),
    )
        .into_response())
}
