//! `GET /v2/<name>/referrers/<digest>[?artifactType=]`: the manifests of the repository whose
//! `subject` is `<digest>`, as an OCI image index.
//!
//! Each descriptor carries the referrer's `artifactType` (its own, else its config's media
//! type for an image manifest; omitted for an index without one) and its annotations. The
//! answer is always `200`, with an empty `manifests` list when nothing refers to the digest,
//! even in a repository that does not exist: the spec forbids a `404` from a registry that
//! supports the API. An `artifactType` filter is applied and announced with
//! `OCI-Filters-Applied: artifactType`.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Response;
use berth_layerstore::{Digest, media};
use serde::Serialize;

use super::route::{query_pairs, query_param};
use super::{AppState, RegistryError, blocking, build};
use crate::reference::RepositoryName;

/// The header listing the filters that were applied.
const FILTERS_APPLIED_HEADER: &str = "oci-filters-applied";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Referrer>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Referrer {
    media_type: String,
    size: u64,
    digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

/// `GET /v2/<name>/referrers/<digest>`.
pub(crate) async fn list(
    state: &AppState,
    repo: &RepositoryName,
    subject: &Digest,
    req: &Parts,
) -> Result<Response, RegistryError> {
    let query = query_pairs(req.uri.query());
    let filter = query_param(&query, "artifactType")
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let meta = state.storage().meta.clone();
    let (r, s, f) = (repo.clone(), subject.clone(), filter.clone());
    let records = blocking(move || Ok(meta.referrers(&r, &s, f.as_deref())?)).await?;
    let index = Index {
        schema_version: 2,
        media_type: media::OCI_INDEX,
        manifests: records
            .into_iter()
            .map(|m| Referrer {
                media_type: m.media_type,
                size: m.size,
                digest: m.digest.to_string(),
                artifact_type: m.artifact_type,
                annotations: m.annotations,
            })
            .collect(),
    };
    let json = serde_json::to_vec(&index)
        .map_err(|e| RegistryError::Internal(format!("serializing referrers: {e}")))?;
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, media::OCI_INDEX)
        .header(header::CONTENT_LENGTH, json.len());
    if filter.is_some() {
        builder = builder.header(FILTERS_APPLIED_HEADER, "artifactType");
    }
    build(builder, Body::from(json))
}
