//! [`RegistryError`]: every way a request can fail, and the one place that maps each to the
//! spec's error code, HTTP status and response headers.
//!
//! The body is always the spec's `{"errors":[{"code","message","detail"}]}`. Internal errors
//! (storage, I/O, a failed blocking task) are logged with their details and answered with a
//! generic message: nothing about the server's files or database reaches the client.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_layerstore::Digest;
use berth_layerstore::content::ContentError;
use serde::Serialize;

use crate::storage::StorageError;

/// A failed registry request.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(Digest),
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    /// A digest that does not parse, uses an unsupported algorithm, or does not match the
    /// content.
    #[error("provided digest did not match uploaded content: {reason}")]
    DigestInvalid {
        reason: String,
        digest: Option<String>,
    },
    /// References of a manifest that the repository does not hold.
    #[error("manifest references unknown blobs: {0:?}")]
    ManifestBlobUnknown(Vec<Digest>),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest is larger than the {limit} bytes this registry accepts")]
    ManifestTooLarge { limit: usize },
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    #[error("invalid tag: {0}")]
    TagInvalid(String),
    #[error("provided length did not match content length: {0}")]
    SizeInvalid(String),
    #[error("invalid number of results requested: {0:?}")]
    PaginationNumberInvalid(String),
    /// A chunk that does not start where the upload ends, or a malformed `Content-Range`.
    /// Carries what the `416` needs to tell the client where to resume.
    #[error("chunk out of order: {reason}")]
    UploadRangeInvalid {
        reason: String,
        location: String,
        range: String,
        upload_id: String,
    },
    /// A `Range` that the blob cannot satisfy.
    #[error("requested range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("the operation is unsupported: {0}")]
    Unsupported(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("no such endpoint")]
    NotFound,
    /// Anything that is not the client's fault. Logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RegistryError {
    /// The spec's error code.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::BlobUnknown(_) => "BLOB_UNKNOWN",
            RegistryError::BlobUploadInvalid(_) => "BLOB_UPLOAD_INVALID",
            RegistryError::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            RegistryError::DigestInvalid { .. } => "DIGEST_INVALID",
            RegistryError::ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
            RegistryError::ManifestInvalid(_) | RegistryError::ManifestTooLarge { .. } => {
                "MANIFEST_INVALID"
            }
            RegistryError::ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            RegistryError::NameInvalid(_) => "NAME_INVALID",
            RegistryError::NameUnknown(_) => "NAME_UNKNOWN",
            RegistryError::TagInvalid(_) => "TAG_INVALID",
            RegistryError::SizeInvalid(_) => "SIZE_INVALID",
            RegistryError::PaginationNumberInvalid(_) => "PAGINATION_NUMBER_INVALID",
            RegistryError::UploadRangeInvalid { .. }
            | RegistryError::RangeNotSatisfiable { .. } => "RANGE_INVALID",
            RegistryError::Unsupported(_)
            | RegistryError::MethodNotAllowed(_)
            | RegistryError::NotFound => "UNSUPPORTED",
            RegistryError::Internal(_) => "UNKNOWN",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            RegistryError::BlobUnknown(_)
            | RegistryError::BlobUploadUnknown
            | RegistryError::ManifestUnknown(_)
            | RegistryError::NameUnknown(_)
            | RegistryError::NotFound => StatusCode::NOT_FOUND,
            RegistryError::BlobUploadInvalid(_)
            | RegistryError::DigestInvalid { .. }
            | RegistryError::ManifestBlobUnknown(_)
            | RegistryError::ManifestInvalid(_)
            | RegistryError::NameInvalid(_)
            | RegistryError::TagInvalid(_)
            | RegistryError::SizeInvalid(_)
            | RegistryError::PaginationNumberInvalid(_)
            | RegistryError::Unsupported(_) => StatusCode::BAD_REQUEST,
            RegistryError::ManifestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RegistryError::UploadRangeInvalid { .. }
            | RegistryError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            RegistryError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            RegistryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The spec's short message for the code.
    fn message(&self) -> String {
        match self {
            RegistryError::Internal(_) => "internal server error".to_owned(),
            RegistryError::ManifestBlobUnknown(_) => {
                "manifest references a manifest or blob unknown to registry".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// One entry per error; a manifest with several unknown references gets one each.
    fn entries(&self) -> Vec<ErrorEntry> {
        let entry = |detail: serde_json::Value| ErrorEntry {
            code: self.code(),
            message: self.message(),
            detail,
        };
        match self {
            RegistryError::ManifestBlobUnknown(digests) => digests
                .iter()
                .map(|d| ErrorEntry {
                    code: self.code(),
                    message: "blob unknown to registry".to_owned(),
                    detail: serde_json::json!({ "digest": d.to_string() }),
                })
                .collect(),
            RegistryError::BlobUnknown(d) => {
                vec![entry(serde_json::json!({ "digest": d.to_string() }))]
            }
            RegistryError::DigestInvalid {
                digest: Some(d), ..
            } => vec![entry(serde_json::json!({ "digest": d }))],
            RegistryError::ManifestTooLarge { limit } => {
                vec![entry(serde_json::json!({ "limit": limit }))]
            }
            RegistryError::RangeNotSatisfiable { size } => {
                vec![entry(serde_json::json!({ "size": size }))]
            }
            _ => vec![entry(serde_json::Value::Null)],
        }
    }

    /// Headers that go with the error.
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mut set = |name: HeaderName, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        };
        match self {
            RegistryError::UploadRangeInvalid {
                location,
                range,
                upload_id,
                ..
            } => {
                set(header::LOCATION, location);
                set(header::RANGE, range);
                set(HeaderName::from_static("docker-upload-uuid"), upload_id);
            }
            RegistryError::RangeNotSatisfiable { size } => {
                set(header::CONTENT_RANGE, &format!("bytes */{size}"));
            }
            _ => {}
        }
        headers
    }
}

#[derive(Serialize)]
struct ErrorBody {
    errors: Vec<ErrorEntry>,
}

#[derive(Serialize)]
struct ErrorEntry {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    detail: serde_json::Value,
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        if let RegistryError::Internal(details) = &self {
            tracing::error!(error = %details, "internal error");
        }
        let body = ErrorBody {
            errors: self.entries(),
        };
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"errors\":[]}".to_vec());
        let mut response = (self.status(), self.headers(), json).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl From<StorageError> for RegistryError {
    /// Content mismatches are the client's (wrong digest or length); the rest is internal.
    fn from(e: StorageError) -> RegistryError {
        match e {
            StorageError::Content(ContentError::DigestMismatch { expected, actual }) => {
                RegistryError::DigestInvalid {
                    reason: format!("content has digest {actual}"),
                    digest: Some(expected.to_string()),
                }
            }
            StorageError::Content(ContentError::SizeMismatch {
                expected, actual, ..
            }) => RegistryError::SizeInvalid(format!("expected {expected} bytes, got {actual}")),
            other => RegistryError::Internal(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for RegistryError {
    fn from(e: tokio::task::JoinError) -> RegistryError {
        RegistryError::Internal(format!("blocking task failed: {e}"))
    }
}
