//! [`Route`]: the one extractor behind `/v2/*`.
//!
//! A repository name may contain `/`, so the path cannot be matched with fixed segments. The
//! extractor reads it from the right, where the endpoint's fixed words are:
//!
//! ```text
//! /v2/<name>/blobs/uploads/            start an upload (or mount)
//! /v2/<name>/blobs/uploads/<id>        an upload session
//! /v2/<name>/blobs/<digest>            a blob
//! /v2/<name>/manifests/<reference>     a manifest, by tag or digest
//! /v2/<name>/tags/list                 the repository's tags
//! /v2/<name>/referrers/<digest>        manifests whose subject is <digest>
//! /v2/_catalog                         every repository
//! ```
//!
//! What is left of the path is the name, checked with [`RepositoryName`]; the digest and
//! reference are checked with [`Digest`] and [`TagOrDigest`]. A bad name is `NAME_INVALID`,
//! a bad digest `DIGEST_INVALID`, a bad tag `TAG_INVALID`, and a path that is none of the above
//! `404 UNSUPPORTED`.

use std::borrow::Cow;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use berth_layerstore::Digest;
use percent_encoding::percent_decode_str;

use super::error::RegistryError;
use crate::reference::{ReferenceError, RepositoryName, TagOrDigest};

/// Which endpoint a `/v2/...` request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/blobs/<digest>`
    Blob {
        name: RepositoryName,
        digest: Digest,
    },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart { name: RepositoryName },
    /// `/v2/<name>/blobs/uploads/<id>`; the id is checked by the upload handlers, which answer
    /// `BLOB_UPLOAD_UNKNOWN` for anything they did not issue.
    Upload { name: RepositoryName, id: String },
    /// `/v2/<name>/manifests/<reference>`
    Manifest {
        name: RepositoryName,
        reference: TagOrDigest,
    },
    /// `/v2/<name>/tags/list`
    Tags { name: RepositoryName },
    /// `/v2/<name>/referrers/<digest>`
    Referrers {
        name: RepositoryName,
        digest: Digest,
    },
}

impl Route {
    /// Parses the part of a path after `/v2/`.
    pub fn parse(rest: &str) -> Result<Route, RegistryError> {
        if rest.is_empty() {
            return Ok(Route::Base);
        }
        if rest == "_catalog" {
            return Ok(Route::Catalog);
        }
        let segments: Vec<Cow<'_, str>> = rest
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8_lossy())
            .collect();
        let n = segments.len();
        let at = |i: usize| segments[i].as_ref();
        // Longest patterns first: `blobs/uploads/<id>` before `blobs/<digest>`.
        if n >= 4 && at(n - 3) == "blobs" && at(n - 2) == "uploads" {
            let name = name(&segments[..n - 3])?;
            let id = at(n - 1);
            return Ok(if id.is_empty() {
                Route::UploadStart { name }
            } else {
                Route::Upload {
                    name,
                    id: id.to_owned(),
                }
            });
        }
        if n >= 3 && at(n - 2) == "blobs" && at(n - 1) == "uploads" {
            return Ok(Route::UploadStart {
                name: name(&segments[..n - 2])?,
            });
        }
        if n >= 3 && at(n - 2) == "tags" && at(n - 1) == "list" {
            return Ok(Route::Tags {
                name: name(&segments[..n - 2])?,
            });
        }
        if n >= 3 {
            let last = at(n - 1);
            match at(n - 2) {
                "blobs" => {
                    let name = name(&segments[..n - 2])?;
                    return Ok(Route::Blob {
                        name,
                        digest: digest(last)?,
                    });
                }
                "referrers" => {
                    let name = name(&segments[..n - 2])?;
                    return Ok(Route::Referrers {
                        name,
                        digest: digest(last)?,
                    });
                }
                "manifests" => {
                    let name = name(&segments[..n - 2])?;
                    let reference = last.parse::<TagOrDigest>().map_err(|e| match e {
                        ReferenceError::Digest { reference, source } => {
                            RegistryError::DigestInvalid {
                                reason: source.to_string(),
                                digest: Some(reference),
                            }
                        }
                        other => RegistryError::TagInvalid(other.to_string()),
                    })?;
                    return Ok(Route::Manifest { name, reference });
                }
                _ => {}
            }
        }
        Err(RegistryError::NotFound)
    }

    /// The repository the route is about, if any.
    pub fn name(&self) -> Option<&RepositoryName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Manifest { name, .. }
            | Route::Tags { name }
            | Route::Referrers { name, .. } => Some(name),
        }
    }
}

fn name(segments: &[Cow<'_, str>]) -> Result<RepositoryName, RegistryError> {
    let joined = segments.join("/");
    RepositoryName::new(&joined).map_err(|e| RegistryError::NameInvalid(e.to_string()))
}

fn digest(s: &str) -> Result<Digest, RegistryError> {
    s.parse().map_err(
        |e: berth_layerstore::DigestError| RegistryError::DigestInvalid {
            reason: e.to_string(),
            digest: Some(s.to_owned()),
        },
    )
}

impl<S: Send + Sync> FromRequestParts<S> for Route {
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let path = parts.uri.path();
        let rest = path
            .strip_prefix("/v2/")
            .or_else(|| (path == "/v2").then_some(""))
            .ok_or(RegistryError::NotFound)?;
        Route::parse(rest)
    }
}

/// The query string's parameters, decoded, in order.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The first value of query parameter `key`.
pub fn query_param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Percent-encodes a query value.
pub fn encode_query_value(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn repo(s: &str) -> RepositoryName {
        RepositoryName::new(s).unwrap()
    }

    #[test]
    fn parses_from_the_right() {
        assert_eq!(Route::parse("").unwrap(), Route::Base);
        assert_eq!(Route::parse("_catalog").unwrap(), Route::Catalog);
        assert_eq!(
            Route::parse(&format!("a/b/c/blobs/{D}")).unwrap(),
            Route::Blob {
                name: repo("a/b/c"),
                digest: D.parse().unwrap()
            }
        );
        // A repository may itself be called `blobs` or `manifests`.
        assert_eq!(
            Route::parse(&format!("x/blobs/blobs/{D}")).unwrap(),
            Route::Blob {
                name: repo("x/blobs"),
                digest: D.parse().unwrap()
            }
        );
        assert_eq!(
            Route::parse("x/blobs/blobs/uploads/").unwrap(),
            Route::UploadStart {
                name: repo("x/blobs")
            }
        );
        assert_eq!(
            Route::parse("x/blobs/uploads").unwrap(),
            Route::UploadStart { name: repo("x") }
        );
        assert_eq!(
            Route::parse("x/blobs/uploads/abc").unwrap(),
            Route::Upload {
                name: repo("x"),
                id: "abc".into()
            }
        );
        assert_eq!(
            Route::parse("manifests/manifests/latest").unwrap(),
            Route::Manifest {
                name: repo("manifests"),
                reference: "latest".parse().unwrap()
            }
        );
        assert_eq!(
            Route::parse(&format!("r/manifests/{}", D.replace(':', "%3A"))).unwrap(),
            Route::Manifest {
                name: repo("r"),
                reference: D.parse().unwrap()
            }
        );
        assert_eq!(
            Route::parse("t/tags/list").unwrap(),
            Route::Tags { name: repo("t") }
        );
        assert_eq!(
            Route::parse(&format!("t/referrers/{D}")).unwrap(),
            Route::Referrers {
                name: repo("t"),
                digest: D.parse().unwrap()
            }
        );
    }

    #[test]
    fn refuses_bad_parts() {
        let code = |p: &str| Route::parse(p).unwrap_err().code();
        assert_eq!(code(&format!("Upper/blobs/{D}")), "NAME_INVALID");
        assert_eq!(code(&format!("a/../b/blobs/{D}")), "NAME_INVALID");
        assert_eq!(code(&format!("a//b/blobs/{D}")), "NAME_INVALID");
        assert_eq!(code(&format!("/blobs/{D}")), "NAME_INVALID");
        assert_eq!(code("a/blobs/sha256:abc"), "DIGEST_INVALID");
        assert_eq!(code("a/manifests/md5:abc"), "DIGEST_INVALID");
        assert_eq!(code("a/manifests/-bad"), "TAG_INVALID");
        assert_eq!(code("a/referrers/nope"), "DIGEST_INVALID");
        assert_eq!(code("a/b"), "UNSUPPORTED");
        assert_eq!(code("a/tags"), "UNSUPPORTED");
    }
}
