//! Manifest endpoints: `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.
//!
//! ## Push
//! The body is read up to [`Config::max_manifest_bytes`](super::Config) (`413` past it) and
//! parsed as an OCI image manifest or index, or a Docker schema-2 manifest or manifest list.
//! The `Content-Type`, when given, must be the body's `mediaType` (parameters ignored). The
//! manifest is refused with one `MANIFEST_BLOB_UNKNOWN` per missing reference unless the
//! repository holds its config and layers (non-distributable layers excepted) or, for an
//! index, its child manifests. A `subject` need not exist (the spec lets referrers arrive
//! first); a manifest with one is answered with `OCI-Subject`. The bytes are stored exactly as
//! sent, and its digest is computed from them: a push by digest must match it.
//!
//! ## Pull and content negotiation
//! The manifest is returned as stored, with its pushed media type as `Content-Type`, whatever
//! the `Accept` header lists: berth does not rewrite manifests into schema 1, and a client that
//! lists neither the stored type nor `*/*` still gets it, as distribution does for schema 2.
//! One case follows distribution's pull path for old clients: a manifest list or index
//! requested by tag by a client whose `Accept` names image manifest types but no index type is
//! answered with the `linux/amd64` manifest of the list, when the repository holds it.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use berth_layerstore::image::manifest::is_manifest_media_type;
use berth_layerstore::image::{Manifest, descriptor_digest, platform};
use berth_layerstore::{Digest, media};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::route::query_pairs;
use super::{AppState, CONTENT_DIGEST_HEADER, RegistryError, blocking, build, empty};
use crate::reference::{RepositoryName, Tag, TagOrDigest};
use crate::storage::{ManifestRecord, NewManifest, PutManifest, ReferenceKind};

/// The header a registry that processed a manifest's `subject` answers with.
const SUBJECT_HEADER: &str = "oci-subject";
/// The header naming each tag created by a push by digest with `?tag=`.
const TAG_HEADER: &str = "oci-tag";
/// The platform served to clients that cannot take a manifest list.
const DEFAULT_PLATFORM: &str = "linux/amd64";

/// The media type of a `Content-Type` or `Accept` entry, without parameters.
fn essence(value: &str) -> &str {
    value.split(';').next().unwrap_or_default().trim()
}

/// The media types an `Accept` header lists (all `Accept` headers, comma-separated entries).
fn accepted(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| essence(v).to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Whether a client with this `Accept` must be given a platform manifest instead of the
/// stored index `media_type`.
fn wants_platform_manifest(media_type: &str, accept: &[String]) -> bool {
    let is_index = matches!(media_type, media::OCI_INDEX | media::DOCKER_MANIFEST_LIST);
    let takes_index = accept.iter().any(|a| {
        matches!(
            a.as_str(),
            media::OCI_INDEX | media::DOCKER_MANIFEST_LIST | "*/*" | "application/*"
        )
    });
    let takes_manifest = accept
        .iter()
        .any(|a| matches!(a.as_str(), media::OCI_MANIFEST | media::DOCKER_MANIFEST));
    is_index && !takes_index && takes_manifest
}

/// Resolves a reference to a manifest of the repository.
async fn resolve(
    state: &AppState,
    repo: &RepositoryName,
    reference: &TagOrDigest,
) -> Result<ManifestRecord, RegistryError> {
    let meta = state.storage().meta.clone();
    let (r, reference) = (repo.clone(), reference.clone());
    let unknown = RegistryError::ManifestUnknown(format!("{repo}:{reference}"));
    let found = blocking(move || {
        let digest = match &reference {
            TagOrDigest::Digest(d) => d.clone(),
            TagOrDigest::Tag(t) => match meta.tag(&r, t)? {
                Some(d) => d,
                None => return Ok(None),
            },
        };
        Ok(meta.manifest(&r, &digest)?)
    })
    .await?;
    found.ok_or(unknown)
}

/// Reads a manifest's bytes from the blob store.
async fn read_bytes(state: &AppState, record: &ManifestRecord) -> Result<Vec<u8>, RegistryError> {
    let blobs = state.storage().blobs.clone();
    let digest = record.digest.clone();
    let limit = state.config().max_manifest_bytes.max(record.size as usize) as u64;
    match blocking(move || match blobs.stat(&digest)? {
        Some(_) => Ok(Some(blobs.read_all(&digest, limit)?)),
        None => Ok(None),
    })
    .await?
    {
        Some(bytes) => Ok(bytes),
        None => {
            tracing::error!(digest = %record.digest, "manifest is recorded but its blob is missing");
            Err(RegistryError::ManifestUnknown(record.digest.to_string()))
        }
    }
}

/// `GET`/`HEAD /v2/<name>/manifests/<reference>`.
pub(crate) async fn get(
    state: &AppState,
    repo: &RepositoryName,
    reference: &TagOrDigest,
    req: &Parts,
) -> Result<Response, RegistryError> {
    let mut record = resolve(state, repo, reference).await?;
    let mut bytes = None;
    if matches!(reference, TagOrDigest::Tag(_))
        && wants_platform_manifest(&record.media_type, &accepted(&req.headers))
    {
        let list = read_bytes(state, &record).await?;
        if let Some(child) = platform_child(state, repo, &record, &list).await? {
            record = child;
        } else {
            bytes = Some(list);
        }
    }
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &record.media_type)
        .header(header::CONTENT_LENGTH, record.size)
        .header(header::ETAG, format!("\"{}\"", record.digest))
        .header(CONTENT_DIGEST_HEADER, record.digest.to_string());
    if req.method == axum::http::Method::HEAD {
        return build(builder, Body::empty());
    }
    let bytes = match bytes {
        Some(b) => b,
        None => read_bytes(state, &record).await?,
    };
    build(builder, Body::from(bytes))
}

/// The `linux/amd64` entry of a stored list, if the repository holds it.
async fn platform_child(
    state: &AppState,
    repo: &RepositoryName,
    list: &ManifestRecord,
    bytes: &[u8],
) -> Result<Option<ManifestRecord>, RegistryError> {
    let Ok(parsed) = Manifest::parse(bytes, Some(&list.media_type), &list.digest.to_string())
    else {
        return Ok(None);
    };
    let Ok(want) = platform::parse(DEFAULT_PLATFORM) else {
        return Ok(None);
    };
    let Some(child) = parsed
        .select_platform(&want)
        .and_then(|d| descriptor_digest(&d).ok())
    else {
        return Ok(None);
    };
    let meta = state.storage().meta.clone();
    let r = repo.clone();
    blocking(move || Ok(meta.manifest(&r, &child)?)).await
}

/// Reads a request body of at most `limit` bytes.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, RegistryError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(RegistryError::ManifestTooLarge { limit }),
        Err(e) => Err(RegistryError::ManifestInvalid(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// What a parsed manifest tells the metadata store.
fn describe(
    manifest: &Manifest,
) -> (
    Option<Digest>,
    Option<String>,
    Option<BTreeMap<String, String>>,
) {
    let sorted = |a: &Option<std::collections::HashMap<String, String>>| {
        a.as_ref()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    };
    match manifest {
        Manifest::Oci(m) => (
            m.subject().as_ref().and_then(|s| descriptor_digest(s).ok()),
            m.artifact_type()
                .as_ref()
                .map(|t| t.to_string())
                .or_else(|| Some(m.config().media_type().to_string())),
            sorted(m.annotations()),
        ),
        Manifest::OciIndex(i) => (
            i.subject().as_ref().and_then(|s| descriptor_digest(s).ok()),
            i.artifact_type().as_ref().map(|t| t.to_string()),
            sorted(i.annotations()),
        ),
        Manifest::Docker(_) | Manifest::DockerList(_) => (None, None, None),
    }
}

/// What the repository must hold for `manifest` to be accepted.
fn references(manifest: &Manifest) -> Result<Vec<(Digest, ReferenceKind)>, RegistryError> {
    let digest = |d: &berth_layerstore::image::Descriptor| {
        descriptor_digest(d).map_err(|e| RegistryError::ManifestInvalid(e.to_string()))
    };
    let mut refs = Vec::new();
    if manifest.is_index() {
        for child in manifest.manifests() {
            let kind = if is_manifest_media_type(child.media_type().as_ref()) {
                ReferenceKind::Manifest
            } else {
                ReferenceKind::Blob
            };
            refs.push((digest(&child)?, kind));
        }
    } else {
        if let Some(config) = manifest.config() {
            refs.push((digest(&config)?, ReferenceKind::Blob));
        }
        for layer in manifest.layers() {
            if !media::is_non_distributable(layer.media_type().as_ref()) {
                refs.push((digest(&layer)?, ReferenceKind::Blob));
            }
        }
    }
    Ok(refs)
}

/// `PUT /v2/<name>/manifests/<reference>` (and `?tag=` on a push by digest).
pub(crate) async fn put(
    state: &AppState,
    repo: &RepositoryName,
    reference: &TagOrDigest,
    req: Request,
) -> Result<Response, RegistryError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .map(|s| essence(s).to_owned())
                .map_err(|_| RegistryError::ManifestInvalid("Content-Type is not text".into()))
        })
        .transpose()?
        .filter(|t| !t.is_empty());
    let query = query_pairs(req.uri().query());
    let mut tags = Vec::new();
    match reference {
        TagOrDigest::Tag(t) => tags.push(t.clone()),
        TagOrDigest::Digest(_) => {
            for (key, value) in &query {
                if key == "tag" {
                    tags.push(
                        Tag::new(value).map_err(|e| RegistryError::TagInvalid(e.to_string()))?,
                    );
                }
            }
        }
    }
    let limit = state.config().max_manifest_bytes;
    if let Some(declared) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        && declared > limit as u64
    {
        return Err(RegistryError::ManifestTooLarge { limit });
    }
    let body = read_limited(req.into_body(), limit).await?;

    let manifest = Manifest::parse(&body, content_type.as_deref(), "manifest")
        .map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
    let digest = match reference {
        TagOrDigest::Digest(expected) => {
            let actual = Digest::of(expected.algorithm(), &body);
            if actual != *expected {
                return Err(RegistryError::DigestInvalid {
                    reason: format!("the manifest has digest {actual}"),
                    digest: Some(expected.to_string()),
                });
            }
            actual
        }
        TagOrDigest::Tag(_) => Digest::sha256(&body),
    };
    let (subject, artifact_type, annotations) = describe(&manifest);
    let new = NewManifest {
        record: ManifestRecord {
            digest: digest.clone(),
            media_type: manifest.media_type().to_owned(),
            size: body.len() as u64,
            subject: subject.clone(),
            artifact_type,
            annotations,
        },
        references: references(&manifest)?,
        tags: tags.clone(),
    };

    let storage = state.storage().clone();
    let r = repo.clone();
    let d = digest.clone();
    let outcome = blocking(move || {
        storage.blobs.put(&mut &body[..], body.len() as u64, &d)?;
        Ok(storage.meta.put_manifest(&r, &new)?)
    })
    .await?;
    if let PutManifest::MissingReferences(missing) = outcome {
        return Err(RegistryError::ManifestBlobUnknown(missing));
    }
    tracing::debug!(%repo, %digest, media_type = manifest.media_type(), ?tags, "manifest stored");

    let mut builder = empty(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{repo}/manifests/{digest}"))
        .header(CONTENT_DIGEST_HEADER, digest.to_string());
    if let Some(subject) = subject {
        builder = builder.header(SUBJECT_HEADER, subject.to_string());
    }
    if matches!(reference, TagOrDigest::Digest(_)) {
        for tag in &tags {
            builder = builder.header(TAG_HEADER, tag.as_str());
        }
    }
    build(builder, Body::empty())
}

/// `DELETE /v2/<name>/manifests/<reference>`: by digest, the manifest and its tags; by tag,
/// only the tag.
pub(crate) async fn delete(
    state: &AppState,
    repo: &RepositoryName,
    reference: &TagOrDigest,
) -> Result<Response, RegistryError> {
    let meta = state.storage().meta.clone();
    let (r, reference_owned) = (repo.clone(), reference.clone());
    let deleted = blocking(move || match &reference_owned {
        TagOrDigest::Digest(d) => Ok(meta.delete_manifest(&r, d)?),
        TagOrDigest::Tag(t) => Ok(meta.delete_tag(&r, t)?),
    })
    .await?;
    if !deleted {
        return Err(RegistryError::ManifestUnknown(format!(
            "{repo}:{reference}"
        )));
    }
    build(empty(StatusCode::ACCEPTED), Body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_serves_a_platform_only_to_list_unaware_clients() {
        let accept = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let list = media::DOCKER_MANIFEST_LIST;
        assert!(wants_platform_manifest(
            list,
            &accept(&[media::DOCKER_MANIFEST])
        ));
        assert!(!wants_platform_manifest(
            list,
            &accept(&[media::DOCKER_MANIFEST, media::OCI_INDEX])
        ));
        assert!(!wants_platform_manifest(list, &accept(&[])));
        assert!(!wants_platform_manifest(list, &accept(&["*/*"])));
        assert!(!wants_platform_manifest(
            media::OCI_MANIFEST,
            &accept(&[media::DOCKER_MANIFEST])
        ));
    }

    #[test]
    fn accept_headers_are_split_and_stripped() {
        let mut h = HeaderMap::new();
        h.append(
            header::ACCEPT,
            "application/vnd.oci.image.index.v1+json; q=0.9, Application/JSON"
                .parse()
                .unwrap(),
        );
        h.append(header::ACCEPT, "*/*".parse().unwrap());
        assert_eq!(
            accepted(&h),
            vec![media::OCI_INDEX, "application/json", "*/*"]
        );
    }
}
