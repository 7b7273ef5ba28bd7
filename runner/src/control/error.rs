//! The control plane's errors: [`ApiError`], what a request gets back, in ECS's shape; and
//! [`Error`], what starting or running the control plane can fail with.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The kinds of error the API answers with: ECS's exception types (their `__type`), plus a
/// few of berth's own for the routes ECS does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A request ECS refuses for what it asks (`ClientException`).
    Client,
    /// A parameter is wrong (`InvalidParameterException`).
    InvalidParameter,
    /// No such cluster (`ClusterNotFoundException`).
    ClusterNotFound,
    /// No such service (`ServiceNotFoundException`).
    ServiceNotFound,
    /// The service is DRAINING or INACTIVE (`ServiceNotActiveException`).
    ServiceNotActive,
    /// The cluster still has container instances (`ClusterContainsContainerInstancesException`).
    ClusterContainsContainerInstances,
    /// The cluster still has services (`ClusterContainsServicesException`).
    ClusterContainsServices,
    /// The cluster still has tasks (`ClusterContainsTasksException`).
    ClusterContainsTasks,
    /// The `X-Amz-Target` names no operation (`UnknownOperationException`).
    UnknownOperation,
    /// The body is not the JSON the operation takes (`SerializationException`).
    Serialization,
    /// A berth route's resource does not exist (`ResourceNotFoundException`, 404).
    NotFound,
    /// The agent that holds what was asked for is out of touch (`AgentUnavailableException`,
    /// 503).
    AgentUnavailable,
    /// The agent answered with an error or could not be reached (`AgentException`, 502).
    Agent,
    /// Something failed inside the control plane (`ServerException`, 500). The details are
    /// logged, never returned.
    Server,
}

impl ErrorKind {
    /// The `__type` of the error body.
    pub fn type_name(self) -> &'static str {
        match self {
            ErrorKind::Client => "ClientException",
            ErrorKind::InvalidParameter => "InvalidParameterException",
            ErrorKind::ClusterNotFound => "ClusterNotFoundException",
            ErrorKind::ServiceNotFound => "ServiceNotFoundException",
            ErrorKind::ServiceNotActive => "ServiceNotActiveException",
            ErrorKind::ClusterContainsContainerInstances => {
                "ClusterContainsContainerInstancesException"
            }
            ErrorKind::ClusterContainsServices => "ClusterContainsServicesException",
            ErrorKind::ClusterContainsTasks => "ClusterContainsTasksException",
            ErrorKind::UnknownOperation => "UnknownOperationException",
            ErrorKind::Serialization => "SerializationException",
            ErrorKind::NotFound => "ResourceNotFoundException",
            ErrorKind::AgentUnavailable => "AgentUnavailableException",
            ErrorKind::Agent => "AgentException",
            ErrorKind::Server => "ServerException",
        }
    }

    /// The HTTP status: 400 for every ECS client error, as ECS answers them.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::AgentUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Agent => StatusCode::BAD_GATEWAY,
            ErrorKind::Server => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An error answer: `{"__type": "...Exception", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.type_name())]
pub struct ApiError {
    /// The exception type.
    pub kind: ErrorKind,
    /// ECS's message, or berth's where ECS has none. For [`ErrorKind::Server`], what is logged.
    pub message: String,
}

impl ApiError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    /// `ClientException`.
    pub fn client(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Client, message)
    }

    /// `InvalidParameterException`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::InvalidParameter, message)
    }

    /// `ClusterNotFoundException`, with ECS's message.
    pub fn cluster_not_found() -> ApiError {
        ApiError::new(ErrorKind::ClusterNotFound, "Cluster not found.")
    }

    /// `ServiceNotFoundException`, with ECS's message.
    pub fn service_not_found() -> ApiError {
        ApiError::new(ErrorKind::ServiceNotFound, "Service not found.")
    }

    /// `ServiceNotActiveException`, with ECS's message.
    pub fn service_not_active() -> ApiError {
        ApiError::new(ErrorKind::ServiceNotActive, "Service was not ACTIVE.")
    }

    /// `ServerException`: `detail` is logged, the client sees a generic message.
    pub fn internal(detail: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Server, detail)
    }
}

impl From<super::store::StoreError> for ApiError {
    fn from(error: super::store::StoreError) -> ApiError {
        ApiError::internal(format!("state store: {error}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.kind == ErrorKind::Server {
            tracing::error!(error = %self.message, "internal error");
            "An internal error occurred in the control plane.".to_owned()
        } else {
            self.message
        };
        (
            self.kind.status(),
            [("content-type", "application/x-amz-json-1.1")],
            Json(json!({ "__type": self.kind.type_name(), "message": message })),
        )
            .into_response()
    }
}

/// What opening or serving the control plane can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The state directory could not be created.
    #[error("creating {}: {source}", path.display())]
    CreateRoot {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state database could not be opened or brought up to date.
    #[error("opening the control plane's state in {}: {source}", path.display())]
    Store {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: super::store::StoreError,
    },
    /// The rates file could not be read.
    #[error("reading rates from {}: {source}", path.display())]
    ReadRates {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The rates file is not the JSON of [`crate::ecs::metering::Rates`].
    #[error("rates in {}: {source}", path.display())]
    ParseRates {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The API's listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving the control plane: {0}")]
    Serve(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_as_ecs_json() {
        let response = ApiError::cluster_not_found().into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let response = ApiError::internal("disk on fire").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            ApiError::service_not_active().to_string(),
            "ServiceNotActiveException: Service was not ACTIVE."
        );
    }
}
