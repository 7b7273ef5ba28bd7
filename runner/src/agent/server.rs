//! The agent's own HTTP server: container logs for the control plane, and the task metadata and
//! credentials endpoints for the tasks' containers.
//!
//! ```text
//! GET /logs/{taskId}/{container}?follow=true|false   text/plain, stdout and stderr as written
//! GET /v4/{token}                                    the container's metadata
//! GET /v4/{token}/task                               the task's metadata
//! GET /v4/{token}/stats, /v4/{token}/task/stats      Docker-style stats
//! GET /v2/credentials/{id}                           the task role's credentials
//! ```
//!
//! A container's token (in its `ECS_CONTAINER_METADATA_URI_V4`) and a task's credentials id
//! are random, so a container reaches only its own task's metadata. A credentials request that
//! carries an `Authorization` header must carry the task's `AWS_CONTAINER_AUTHORIZATION_TOKEN`;
//! one without (the AWS SDKs' requests to `169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`,
//! as on ECS) is answered on the strength of the id, which only the task knows. Errors are JSON
//! `{"code", "message"}` for the metadata and credentials endpoints, plain text for logs;
//! internal details are logged, not returned.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::metadata;
use super::task::TaskEngine;

/// The server's routes over `engine`'s tasks.
pub fn app(engine: TaskEngine) -> Router {
    Router::new()
        .route("/logs/{task}/{container}", get(logs))
        .route("/v4/{token}", get(container_metadata))
        .route("/v4/{token}/task", get(task_metadata))
        .route("/v4/{token}/stats", get(container_stats))
        .route("/v4/{token}/task/stats", get(task_stats))
        .route("/v2/credentials/{id}", get(credentials))
        .with_state(engine)
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: Option<String>,
}

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response()
}

async fn logs(
    State(engine): State<TaskEngine>,
    Path((task, container)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let follow = match query.follow.as_deref() {
        None | Some("") | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("follow={other:?}: expected true or false\n"),
            );
        }
    };
    let Some(handle) = engine.task(&task) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no task {task} on this agent\n"),
        );
    };
    let Some(log) = handle.log(&container) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("task {task} has no container {container}\n"),
        );
    };
    let stream = super::logs::follow(&log, follow);
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

fn by_token(
    engine: &TaskEngine,
    token: &str,
) -> Result<(super::task::TaskHandle, usize), Box<Response>> {
    engine.by_token(token).ok_or_else(|| {
        Box::new(json_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no container of a task on this agent has that metadata token",
        ))
    })
}

async fn container_metadata(
    State(engine): State<TaskEngine>,
    Path(token): Path<String>,
) -> Response {
    match by_token(&engine, &token) {
        Ok((task, index)) => axum::Json(metadata::container(&task, index)).into_response(),
        Err(response) => *response,
    }
}

async fn task_metadata(State(engine): State<TaskEngine>, Path(token): Path<String>) -> Response {
    match by_token(&engine, &token) {
        Ok((task, _)) => axum::Json(metadata::task(&task)).into_response(),
        Err(response) => *response,
    }
}

async fn container_stats(State(engine): State<TaskEngine>, Path(token): Path<String>) -> Response {
    match by_token(&engine, &token) {
        Ok((task, index)) => {
            let stats = tokio::task::spawn_blocking(move || metadata::stats(&task, index))
                .await
                .ok()
                .flatten();
            axum::Json(stats.unwrap_or(serde_json::Value::Null)).into_response()
        }
        Err(response) => *response,
    }
}

async fn task_stats(State(engine): State<TaskEngine>, Path(token): Path<String>) -> Response {
    match by_token(&engine, &token) {
        Ok((task, _)) => {
            let all = tokio::task::spawn_blocking(move || {
                let count = task
                    .assignment()
                    .task_definition
                    .container_definitions
                    .len();
                let mut out = serde_json::Map::new();
                for index in 0..count {
                    let id = task.with_state(|s| {
                        s.task.containers[index]
                            .runtime_id
                            .clone()
                            .unwrap_or_default()
                    });
                    out.insert(
                        id,
                        metadata::stats(&task, index).unwrap_or(serde_json::Value::Null),
                    );
                }
                serde_json::Value::Object(out)
            })
            .await
            .unwrap_or(serde_json::Value::Null);
            axum::Json(all).into_response()
        }
        Err(response) => *response,
    }
}

async fn credentials(
    State(engine): State<TaskEngine>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    // With `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, as on ECS, the id is the secret and SDKs
    // may send no Authorization; one that is sent must match.
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .filter(|v| !v.is_empty());
    match engine.credentials(&id, authorization) {
        Some(credentials) => axum::Json(credentials).into_response(),
        None => json_error(
            StatusCode::BAD_REQUEST,
            "InvalidIdInRequest",
            "no credentials for that id and authorization token",
        ),
    }
}
