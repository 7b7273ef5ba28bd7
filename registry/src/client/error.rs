//! [`ClientError`]: everything that can go wrong talking to a registry, with the request, the
//! registry's own error codes and the digest involved.

use std::fmt;
use std::path::PathBuf;

use berth_layerstore::Digest;
use berth_layerstore::content::ContentError;
use berth_layerstore::image::ImageError;
use serde::Deserialize;

use crate::reference::ReferenceError;

/// An error code of the distribution spec's error body (`{"errors":[{"code":...}]}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `BLOB_UNKNOWN`: blob unknown to registry.
    BlobUnknown,
    /// `BLOB_UPLOAD_INVALID`: blob upload invalid.
    BlobUploadInvalid,
    /// `BLOB_UPLOAD_UNKNOWN`: blob upload unknown to registry.
    BlobUploadUnknown,
    /// `DIGEST_INVALID`: provided digest did not match uploaded content.
    DigestInvalid,
    /// `MANIFEST_BLOB_UNKNOWN`: manifest references a manifest or blob unknown to registry.
    ManifestBlobUnknown,
    /// `MANIFEST_INVALID`: manifest invalid.
    ManifestInvalid,
    /// `MANIFEST_UNKNOWN`: manifest unknown to registry.
    ManifestUnknown,
    /// `NAME_INVALID`: invalid repository name.
    NameInvalid,
    /// `NAME_UNKNOWN`: repository name not known to registry.
    NameUnknown,
    /// `SIZE_INVALID`: provided length did not match content length.
    SizeInvalid,
    /// `UNAUTHORIZED`: authentication required.
    Unauthorized,
    /// `DENIED`: requested access to the resource is denied.
    Denied,
    /// `UNSUPPORTED`: the operation is unsupported.
    Unsupported,
    /// `TOOMANYREQUESTS`: too many requests.
    TooManyRequests,
    /// Any other code a registry sends.
    Other(String),
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Other(s) => s,
        }
    }

    /// Parses a wire code; unknown codes are kept as [`ErrorCode::Other`].
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "BLOB_UNKNOWN" => ErrorCode::BlobUnknown,
            "BLOB_UPLOAD_INVALID" => ErrorCode::BlobUploadInvalid,
            "BLOB_UPLOAD_UNKNOWN" => ErrorCode::BlobUploadUnknown,
            "DIGEST_INVALID" => ErrorCode::DigestInvalid,
            "MANIFEST_BLOB_UNKNOWN" => ErrorCode::ManifestBlobUnknown,
            "MANIFEST_INVALID" => ErrorCode::ManifestInvalid,
            "MANIFEST_UNKNOWN" => ErrorCode::ManifestUnknown,
            "NAME_INVALID" => ErrorCode::NameInvalid,
            "NAME_UNKNOWN" => ErrorCode::NameUnknown,
            "SIZE_INVALID" => ErrorCode::SizeInvalid,
            "UNAUTHORIZED" => ErrorCode::Unauthorized,
            "DENIED" => ErrorCode::Denied,
            "UNSUPPORTED" => ErrorCode::Unsupported,
            "TOOMANYREQUESTS" => ErrorCode::TooManyRequests,
            other => ErrorCode::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a registry's error body.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub message: String,
    /// Unstructured detail, as the registry sent it.
    pub detail: Option<serde_json::Value>,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        match &self.detail {
            None | Some(serde_json::Value::Null) => Ok(()),
            Some(serde_json::Value::String(s)) if s.is_empty() => Ok(()),
            Some(d) => write!(f, " ({d})"),
        }
    }
}

#[derive(Deserialize)]
struct WireErrors {
    #[serde(default)]
    errors: Vec<WireError>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    detail: Option<serde_json::Value>,
}

/// Parses a distribution-spec error body. A body that is not one yields no entries.
pub fn parse_error_body(body: &[u8]) -> Vec<RegistryError> {
    match serde_json::from_slice::<WireErrors>(body) {
        Ok(w) => w
            .errors
            .into_iter()
            .map(|e| RegistryError {
                code: ErrorCode::parse(&e.code),
                message: e.message,
                detail: e.detail,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Errors of the registry client. Each names the request (method and URL), the blob or the file
/// it is about.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry answered with an unexpected status; `errors` holds its spec error entries.
    #[error("{method} {url}: {}{}", status_text(*.status), fmt_registry_errors(.errors, .body))]
    Registry {
        method: String,
        url: String,
        status: u16,
        errors: Vec<RegistryError>,
        /// The start of a body that was not a spec error body, for the message.
        body: Option<String>,
    },
    /// The request did not get an HTTP answer (connection, TLS, timeout), or its body broke off.
    #[error("{method} {url}: {source}")]
    Http {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// What arrived does not hash to the digest it was asked for.
    #[error("{url}: content does not match digest {expected} (got {actual})")]
    DigestMismatch {
        url: String,
        expected: Digest,
        actual: Digest,
    },
    /// What arrived is not the size the descriptor says.
    #[error("{url}: blob {digest} is {actual} bytes, expected {expected}")]
    SizeMismatch {
        url: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    /// A manifest larger than the client accepts.
    #[error("{url}: manifest exceeds the {limit}-byte limit")]
    ManifestTooLarge { url: String, limit: u64 },
    /// The token server refused or gave no usable token.
    #[error("authentication against {realm} failed: {reason}")]
    Auth { realm: String, reason: String },
    /// Credentials could not be read (config file, credential helper).
    #[error("credentials for {registry}: {reason}")]
    Credentials { registry: String, reason: String },
    /// The registry broke the protocol (a missing `Location`, a malformed header, ...).
    #[error("{url}: {reason}")]
    Protocol { url: String, reason: String },
    /// The local content store failed.
    #[error("{what}: {source}")]
    Content {
        what: String,
        #[source]
        source: ContentError,
    },
    /// A manifest, index or archive is invalid.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An invalid reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// An image location (`docker://...`, `oci:...`) that cannot be used as asked.
    #[error("image location {location:?}: {reason}")]
    Location { location: String, reason: String },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Setup(#[source] reqwest::Error),
}

fn status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

fn fmt_registry_errors(errors: &[RegistryError], body: &Option<String>) -> String {
    if errors.is_empty() {
        return match body {
            Some(b) if !b.trim().is_empty() => format!(": {}", b.trim()),
            _ => String::new(),
        };
    }
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!(": {}", list.join("; "))
}

impl ClientError {
    /// The HTTP status of a [`ClientError::Registry`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Registry { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The registry's error codes, if the registry sent any.
    pub fn codes(&self) -> Vec<&ErrorCode> {
        match self {
            ClientError::Registry { errors, .. } => errors.iter().map(|e| &e.code).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the registry said the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    pub(crate) fn content(what: impl fmt::Display, source: ContentError) -> ClientError {
        ClientError::Content {
            what: what.to_string(),
            source,
        }
    }

    pub(crate) fn protocol(url: impl fmt::Display, reason: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            url: url.to_string(),
            reason: reason.into(),
        }
    }
}

/// Result of the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spec_error_bodies() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}},{"code":"X_CUSTOM","message":"m"}]}"#;
        let errors = parse_error_body(body);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].code, ErrorCode::ManifestUnknown);
        assert_eq!(errors[1].code, ErrorCode::Other("X_CUSTOM".into()));
        let e = ClientError::Registry {
            method: "GET".into(),
            url: "http://r/v2/a/manifests/x".into(),
            status: 404,
            errors,
            body: None,
        };
        let text = e.to_string();
        assert!(
            text.contains("MANIFEST_UNKNOWN: manifest unknown"),
            "{text}"
        );
        assert!(text.contains("X_CUSTOM: m"), "{text}");
        assert!(e.is_not_found());
        assert_eq!(e.codes()[0], &ErrorCode::ManifestUnknown);
        assert!(parse_error_body(b"<html>").is_empty());
        for code in ["BLOB_UNKNOWN", "DENIED", "TOOMANYREQUESTS", "SIZE_INVALID"] {
            assert_eq!(ErrorCode::parse(code).as_str(), code);
        }
    }
}
