//! Pull: resolving references, fetching manifests, downloading blobs into a content store.

use std::collections::HashSet;

use berth_layerstore::content::{ContentError, Ingester, Provider};
use berth_layerstore::image::manifest::is_manifest_media_type;
use berth_layerstore::image::{Descriptor, Manifest, descriptor_digest, new_descriptor, platform};
use berth_layerstore::{Digest, media};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode, Url};

use crate::client::blobio::{self, Sink};
use crate::client::error::{ClientError, Result};
use crate::client::progress::{BlobOutcome, ProgressEvent};
use crate::client::transport::{Session, unexpected};
use crate::client::{Client, MANIFEST_ACCEPT, Platforms, PullOptions, auth};
use crate::reference::Reference;

/// The header registries put a content digest in.
pub(crate) const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// A manifest or index as fetched, verified and parsed.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Media type (from the manifest), digest and size of the bytes.
    pub descriptor: Descriptor,
    /// The bytes, exactly as the registry sent them.
    pub bytes: Bytes,
    pub manifest: Manifest,
}

/// What [`Client::pull`] stored.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The reference pulled.
    pub reference: Reference,
    /// The manifest or index at the root of what was stored: the reference's own manifest,
    /// or the platform's manifest when one platform of an index was asked for.
    pub root: Descriptor,
    /// The index the reference named when one platform was picked from it (not stored).
    pub index: Option<Descriptor>,
    /// Every manifest and index stored, children before parents (the root last).
    pub manifests: Vec<Descriptor>,
    /// Every config and layer the manifests reference (non-distributable layers excluded).
    pub blobs: Vec<Descriptor>,
}

fn accept_header() -> String {
    MANIFEST_ACCEPT.join(", ")
}

fn header_str(resp: &reqwest::Response, name: impl reqwest::header::AsHeaderName) -> Option<&str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The media type of a `Content-Type` value without parameters.
fn bare_media_type(value: &str) -> &str {
    value.split(';').next().unwrap_or("").trim()
}

fn content_digest(resp: &reqwest::Response) -> Option<Digest> {
    header_str(resp, DOCKER_CONTENT_DIGEST).and_then(|v| v.trim().parse().ok())
}

impl Client {
    pub(crate) async fn pull_session(
        &self,
        reference: &Reference,
        progress: std::sync::Arc<dyn crate::client::Progress>,
    ) -> Result<Session> {
        let scope = auth::repository_scope(reference.repository.as_str(), &["pull"]);
        Session::new(
            self.inner.clone(),
            &reference.registry,
            reference.repository.clone(),
            vec![scope],
            progress,
        )
        .await
    }

    /// The descriptor of the manifest `reference` names, by `HEAD` (falling back to `GET`
    /// when the registry does not send `Docker-Content-Digest`).
    pub async fn resolve(&self, reference: &Reference) -> Result<Descriptor> {
        let session = self
            .pull_session(reference, crate::client::progress::no_progress())
            .await?;
        let target = reference.tag_or_digest().to_string();
        let url = session.url(&format!("manifests/{target}"))?;
        let resp = session
            .send("resolve manifest", true, |http| {
                Ok(http.head(url.clone()).header(ACCEPT, accept_header()))
            })
            .await?;
        if resp.status() != StatusCode::OK {
            // A HEAD answer has no body to carry the registry's error code: ask with GET.
            tracing::debug!(%url, status = %resp.status(), "HEAD failed; trying GET");
            return Ok(self.fetch_manifest(reference).await?.descriptor);
        }
        let media_type = header_str(&resp, CONTENT_TYPE).map(|v| bare_media_type(v).to_owned());
        let size = header_str(&resp, CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        match (content_digest(&resp), media_type, size) {
            (Some(digest), Some(media_type), Some(size)) if is_manifest_media_type(&media_type) => {
                if let Some(expected) = &reference.digest
                    && expected != &digest
                {
                    return Err(ClientError::DigestMismatch {
                        url: url.to_string(),
                        expected: expected.clone(),
                        actual: digest,
                    });
                }
                Ok(new_descriptor(&media_type, &digest, size))
            }
            _ => Ok(self.fetch_manifest(reference).await?.descriptor),
        }
    }

    /// Fetches, verifies and parses the manifest or index `reference` names.
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<FetchedManifest> {
        let session = self
            .pull_session(reference, crate::client::progress::no_progress())
            .await?;
        self.get_manifest(
            &session,
            &reference.tag_or_digest().to_string(),
            reference.digest.as_ref(),
            None,
        )
        .await
    }

    /// `GET` a manifest by tag or digest and check it against `expected_digest` (and the size
    /// and media type of `expected_desc`, when it comes from an index).
    pub(crate) async fn get_manifest(
        &self,
        session: &Session,
        target: &str,
        expected_digest: Option<&Digest>,
        expected_desc: Option<&Descriptor>,
    ) -> Result<FetchedManifest> {
        let url = session.url(&format!("manifests/{target}"))?;
        let mut resp = session
            .send("fetch manifest", true, |http| {
                Ok(http.get(url.clone()).header(ACCEPT, accept_header()))
            })
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(unexpected(&Method::GET, &url, resp).await);
        }
        let limit = self.inner.opts.max_manifest_size;
        let too_large = || ClientError::ManifestTooLarge {
            url: url.to_string(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let content_type = header_str(&resp, CONTENT_TYPE).map(|v| bare_media_type(v).to_owned());
        let header_digest = content_digest(&resp);
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(|source| ClientError::Http {
            method: "GET".into(),
            url: url.to_string(),
            source: source.without_url(),
        })? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let bytes = body.freeze();
        let algorithm = expected_digest
            .or(header_digest.as_ref())
            .map_or(berth_layerstore::Algorithm::Sha256, Digest::algorithm);
        let actual = Digest::of(algorithm, &bytes);
        for expected in [expected_digest, header_digest.as_ref()]
            .into_iter()
            .flatten()
        {
            if expected.algorithm() == algorithm && expected != &actual {
                return Err(ClientError::DigestMismatch {
                    url: url.to_string(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        if let Some(desc) = expected_desc
            && desc.size() != bytes.len() as u64
        {
            return Err(ClientError::SizeMismatch {
                url: url.to_string(),
                digest: actual,
                expected: desc.size(),
                actual: bytes.len() as u64,
            });
        }
        // The descriptor's media type, else the Content-Type when it names a manifest type;
        // the manifest's own mediaType must agree with either.
        let hint = expected_desc
            .map(|d| d.media_type().to_string())
            .filter(|t| is_manifest_media_type(t))
            .or(content_type.filter(|t| is_manifest_media_type(t)));
        let manifest = Manifest::parse(&bytes, hint.as_deref(), url.as_str())?;
        let mut descriptor = match expected_desc {
            Some(d) => d.clone(),
            None => new_descriptor(manifest.media_type(), &actual, bytes.len() as u64),
        };
        descriptor.set_media_type(manifest.media_type().into());
        Ok(FetchedManifest {
            descriptor,
            bytes,
            manifest,
        })
    }

    /// Pulls `reference` into `store`: the manifest (or index and its children, all or one
    /// platform's), then every config and layer, verified. See the module docs of
    /// [`crate::client`].
    pub async fn pull<S: Provider + Ingester + ?Sized>(
        &self,
        reference: &Reference,
        store: &S,
        opts: &PullOptions,
    ) -> Result<PulledImage> {
        let session = self.pull_session(reference, opts.progress.clone()).await?;
        let target = reference.tag_or_digest().to_string();
        tracing::info!(%reference, "pulling");
        let fetched = self
            .get_manifest(&session, &target, reference.digest.as_ref(), None)
            .await?;
        let (top, index) = match (&opts.platforms, fetched.manifest.is_index()) {
            (Platforms::Only(want), true) => {
                let child = platform::select_or_err(
                    &fetched.manifest.manifests(),
                    want,
                    &format!("{reference}"),
                )?
                .clone();
                let digest = descriptor_digest(&child)?;
                let child_manifest = self
                    .get_manifest(&session, &digest.to_string(), Some(&digest), Some(&child))
                    .await?;
                (child_manifest, Some(fetched.descriptor.clone()))
            }
            _ => (fetched, None),
        };

        // Walk the manifests depth first; collect blobs, and manifests children first.
        let mut manifests: Vec<FetchedManifest> = Vec::new();
        let mut blobs: Vec<Descriptor> = Vec::new();
        let mut seen: HashSet<Digest> = HashSet::new();
        seen.insert(descriptor_digest(&top.descriptor)?);
        // (manifest, index of its next child to visit)
        let mut stack: Vec<(FetchedManifest, usize)> = vec![(top, 0)];
        while let Some((current, next)) = stack.pop() {
            let refs = current.manifest.references();
            if next >= refs.len() {
                manifests.push(current);
                continue;
            }
            let child = refs[next].clone();
            stack.push((current, next + 1));
            let digest = descriptor_digest(&child)?;
            if !seen.insert(digest.clone()) {
                continue;
            }
            let media_type = child.media_type().to_string();
            if is_manifest_media_type(&media_type) {
                let fetched = self
                    .get_manifest(&session, &digest.to_string(), Some(&digest), Some(&child))
                    .await?;
                stack.push((fetched, 0));
            } else if media::is_non_distributable(&media_type) {
                tracing::debug!(%digest, "skipping non-distributable layer");
            } else {
                blobs.push(child);
            }
        }

        futures_util::stream::iter(blobs.iter())
            .map(|desc| self.download_blob(&session, store, desc))
            .buffer_unordered(self.inner.opts.max_concurrent.max(1))
            .try_collect::<Vec<()>>()
            .await?;

        for m in &manifests {
            let digest = descriptor_digest(&m.descriptor)?;
            let present = store
                .exists(&digest)
                .map_err(|e| ClientError::content(&digest, e))?;
            if !present {
                blobio::ingest_bytes(store, m.bytes.clone(), &digest)
                    .await
                    .map_err(|e| ClientError::content(&digest, e))?;
            }
            opts.progress.event(&ProgressEvent::ManifestDone {
                digest: digest.clone(),
                media_type: m.descriptor.media_type().to_string(),
                size: m.descriptor.size(),
                target: digest.to_string(),
            });
        }
        let root = manifests
            .last()
            .map(|m| m.descriptor.clone())
            .ok_or_else(|| ClientError::protocol(reference, "nothing was pulled"))?;
        Ok(PulledImage {
            reference: reference.clone(),
            root,
            index,
            manifests: manifests.into_iter().map(|m| m.descriptor).collect(),
            blobs,
        })
    }

    /// Downloads the blob `desc` of `reference`'s repository into `store`, verified against
    /// the descriptor's digest and size, and resumed after a broken transfer as pulls are. A
    /// blob the store has already is not downloaded. For blobs that no manifest pull reaches
    /// on its own: a build cache's config and the layers of its records, one at a time.
    pub async fn fetch_blob<S: Provider + Ingester + ?Sized>(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        store: &S,
        progress: std::sync::Arc<dyn crate::client::Progress>,
    ) -> Result<()> {
        let session = self.pull_session(reference, progress).await?;
        self.download_blob(&session, store, desc).await
    }

    /// Downloads one blob of `session`'s repository into `store`, resuming broken transfers.
    pub(crate) async fn download_blob<S: Provider + Ingester + ?Sized>(
        &self,
        session: &Session,
        store: &S,
        desc: &Descriptor,
    ) -> Result<()> {
        let digest = descriptor_digest(desc)?;
        let size = desc.size();
        let progress = session.progress.clone();
        progress.event(&ProgressEvent::BlobStart {
            digest: digest.clone(),
            media_type: desc.media_type().to_string(),
            size,
        });
        let present = store
            .exists(&digest)
            .map_err(|e| ClientError::content(&digest, e))?;
        if present {
            progress.event(&ProgressEvent::BlobDone {
                digest,
                outcome: BlobOutcome::AlreadyPresent,
            });
            return Ok(());
        }
        let url = session.url(&format!("blobs/{digest}"))?;
        let open =
            || Sink::open(store, digest.algorithm()).map_err(|e| ClientError::content(&digest, e));
        let mut sink = open()?;
        let policy = self.inner.opts.retry.clone();
        let mut broken: u32 = 0;
        let mut use_range = true;
        loop {
            let offset = sink.written();
            let ranged = use_range && offset > 0;
            let resp = session
                .send("download blob", true, |http| {
                    let rb = http.get(url.clone());
                    Ok(if ranged {
                        rb.header(RANGE, format!("bytes={offset}-"))
                    } else {
                        rb
                    })
                })
                .await;
            let mut resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    sink.abort().await;
                    return Err(e);
                }
            };
            match resp.status() {
                StatusCode::OK if offset > 0 => {
                    // The registry ignored the range: start over.
                    sink.abort().await;
                    sink = open()?;
                }
                StatusCode::OK => {}
                StatusCode::PARTIAL_CONTENT if ranged => {
                    let start = header_str(&resp, CONTENT_RANGE).and_then(content_range_start);
                    if start != Some(offset) {
                        tracing::debug!(%digest, ?start, offset, "unexpected Content-Range; starting over");
                        sink.abort().await;
                        sink = open()?;
                        use_range = false;
                        continue;
                    }
                }
                _ => {
                    sink.abort().await;
                    return Err(unexpected(&Method::GET, &url, resp).await);
                }
            }
            let start = sink.written();
            if let Some(len) = resp.content_length()
                && start + len != size
            {
                sink.abort().await;
                return Err(ClientError::SizeMismatch {
                    url: url.to_string(),
                    digest,
                    expected: size,
                    actual: start + len,
                });
            }
            let failure = loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        let n = chunk.len() as u64;
                        if sink.written() + n > size {
                            sink.abort().await;
                            return Err(ClientError::SizeMismatch {
                                url: url.to_string(),
                                digest,
                                expected: size,
                                actual: start + n,
                            });
                        }
                        if let Err(e) = sink.write(chunk).await {
                            return Err(ClientError::content(&digest, e));
                        }
                        progress.event(&ProgressEvent::BlobAdvance {
                            digest: digest.clone(),
                            bytes: n,
                        });
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            match failure {
                None if sink.written() == size => break,
                None => {
                    let actual = sink.written();
                    sink.abort().await;
                    return Err(ClientError::SizeMismatch {
                        url: url.to_string(),
                        digest,
                        expected: size,
                        actual,
                    });
                }
                Some(e) => {
                    broken += 1;
                    if broken >= policy.max_attempts {
                        sink.abort().await;
                        return Err(ClientError::Http {
                            method: "GET".into(),
                            url: url.to_string(),
                            source: e.without_url(),
                        });
                    }
                    let delay = policy.backoff(broken);
                    tracing::warn!(%digest, offset = sink.written(), error = %e, "download broke off; resuming");
                    progress.event(&ProgressEvent::Retry {
                        what: format!("download {digest}"),
                        attempt: broken,
                        delay,
                        error: e.to_string(),
                    });
                    tokio::time::sleep(delay).await;
                }
            }
        }
        sink.commit(size, &digest)
            .await
            .map_err(|e| blob_error(&url, &digest, e))?;
        progress.event(&ProgressEvent::BlobDone {
            digest,
            outcome: BlobOutcome::Downloaded,
        });
        Ok(())
    }
}

/// Maps a failed commit of a downloaded blob to an error naming the URL and digest.
fn blob_error(url: &Url, digest: &Digest, e: ContentError) -> ClientError {
    match e {
        ContentError::DigestMismatch { expected, actual } => ClientError::DigestMismatch {
            url: url.to_string(),
            expected,
            actual,
        },
        ContentError::SizeMismatch {
            digest,
            expected,
            actual,
        } => ClientError::SizeMismatch {
            url: url.to_string(),
            digest,
            expected,
            actual,
        },
        other => ClientError::content(digest, other),
    }
}

/// The first byte of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (start, _) = rest.split_once('-')?;
    start.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(content_range_start("items 1-2/3"), None);
        assert_eq!(
            bare_media_type("application/json; charset=utf-8"),
            "application/json"
        );
    }
}
