//! Push: blobs (HEAD, cross-repository mount, single-request, monolithic or chunked upload),
//! then manifests.

use std::sync::atomic::Ordering;

use berth_layerstore::content::Provider;
use berth_layerstore::image::manifest::is_manifest_media_type;
use berth_layerstore::image::{Descriptor, Manifest, descriptor_digest, reachable};
use berth_layerstore::{Digest, media};
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};

use crate::client::blobio::body_from_reader;
use crate::client::error::{ClientError, Result};
use crate::client::progress::{BlobOutcome, ProgressEvent, UploadMethod, no_progress};
use crate::client::pull::DOCKER_CONTENT_DIGEST;
use crate::client::transport::{Session, unexpected};
use crate::client::{Client, PushOptions, auth};
use crate::reference::{Reference, RepositoryName, TagOrDigest};

/// The header a registry names its minimum chunk size in.
const CHUNK_MIN_LENGTH: &str = "oci-chunk-min-length";
const OCTET_STREAM: &str = "application/octet-stream";

/// What [`Client::push`] did.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// Where the image went.
    pub reference: Reference,
    /// The root manifest or index as pushed; its digest is the image's digest.
    pub root: Descriptor,
    /// Manifests and indexes pushed or found present, the root included.
    pub manifests: usize,
    /// Configs and layers pushed, mounted or found present. Non-distributable layers, which
    /// are not pushed, are not counted.
    pub blobs: usize,
}

/// An upload session: where to send the next request.
#[derive(Debug, Clone)]
struct Upload {
    location: Url,
    /// The registry's `OCI-Chunk-Min-Length`, if it sent one.
    min_chunk: Option<u64>,
}

/// Whether an error is worth starting the blob's upload over for.
fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Http { .. } => true,
        ClientError::Registry { status, .. } => {
            matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
        }
        _ => false,
    }
}

/// The next offset from an upload's `Range: 0-<last>` header. `0-0` is ambiguous (nothing,
/// or one byte, depending on the registry); `hint` is the offset the client expects.
fn next_offset(range: Option<&str>, hint: u64) -> Option<u64> {
    let value = range?.trim();
    let value = value.strip_prefix("bytes=").unwrap_or(value);
    let (_, last) = value.split_once('-')?;
    let last: u64 = last.trim().parse().ok()?;
    if last == 0 {
        return Some(if hint == 1 { 1 } else { 0 });
    }
    Some(last + 1)
}

fn with_digest(url: &Url, digest: &Digest) -> Url {
    let mut url = url.clone();
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    url
}

impl Client {
    /// Pushes `root` (a manifest or index in `store`) and everything it reaches to
    /// `reference`: blobs first (in parallel), then manifests children first, the root last,
    /// tagged with the reference's tag (or put by digest when the reference has none).
    pub async fn push<S: Provider + ?Sized>(
        &self,
        store: &S,
        root: &Descriptor,
        reference: &Reference,
        opts: &PushOptions,
    ) -> Result<PushedImage> {
        let root_digest = descriptor_digest(root)?;
        if let Some(d) = &reference.digest
            && d != &root_digest
        {
            return Err(ClientError::Location {
                location: reference.to_string(),
                reason: format!("the reference names {d}, but the image is {root_digest}"),
            });
        }
        let all = reachable(store, std::slice::from_ref(root))?;
        let (manifests, blobs): (Vec<Descriptor>, Vec<Descriptor>) = all
            .into_iter()
            .partition(|d| is_manifest_media_type(d.media_type().as_ref()));
        // Foreign layers stay where their URLs say, as containerd's push does by default.
        let (foreign, blobs): (Vec<Descriptor>, Vec<Descriptor>) = blobs
            .into_iter()
            .partition(|d| media::is_non_distributable(d.media_type().as_ref()));
        for d in &foreign {
            tracing::debug!(digest = %d.digest(), "not pushing a non-distributable layer");
        }

        let mount_from: Vec<RepositoryName> = opts
            .mount_from
            .iter()
            .filter(|r| r.registry == reference.registry && r.repository != reference.repository)
            .map(|r| r.repository.clone())
            .collect();
        let mut scopes = vec![auth::repository_scope(
            reference.repository.as_str(),
            &["pull", "push"],
        )];
        scopes.extend(
            mount_from
                .iter()
                .map(|r| auth::repository_scope(r.as_str(), &["pull"])),
        );
        let session = Session::new(
            self.inner.clone(),
            &reference.registry,
            reference.repository.clone(),
            scopes,
            opts.progress.clone(),
        )
        .await?;
        tracing::info!(%reference, blobs = blobs.len(), manifests = manifests.len(), "pushing");

        futures_util::stream::iter(blobs.iter())
            .map(|desc| self.push_blob(&session, store, desc, &mount_from))
            .buffer_unordered(self.inner.opts.max_concurrent.max(1))
            .try_collect::<Vec<()>>()
            .await?;

        // `reachable` lists parents first: push in reverse so children land first.
        for desc in manifests.iter().rev() {
            let digest = descriptor_digest(desc)?;
            let is_root = digest == root_digest;
            let target = match (is_root, reference.tag_or_digest()) {
                (true, TagOrDigest::Tag(t)) if reference.digest.is_none() => t.to_string(),
                _ => digest.to_string(),
            };
            if !is_root && self.manifest_exists(&session, &digest).await? {
                tracing::debug!(%digest, "manifest already present");
            } else {
                self.put_manifest(&session, store, desc, &target).await?;
            }
            opts.progress.event(&ProgressEvent::ManifestDone {
                digest,
                media_type: desc.media_type().to_string(),
                size: desc.size(),
                target,
            });
        }
        Ok(PushedImage {
            reference: reference.clone(),
            root: root.clone(),
            manifests: manifests.len(),
            blobs: blobs.len(),
        })
    }

    async fn manifest_exists(&self, session: &Session, digest: &Digest) -> Result<bool> {
        let url = session.url(&format!("manifests/{digest}"))?;
        let resp = session
            .send("check manifest", true, |http| {
                Ok(http.head(url.clone()).header(
                    reqwest::header::ACCEPT,
                    crate::client::MANIFEST_ACCEPT.join(", "),
                ))
            })
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(unexpected(&Method::HEAD, &url, resp).await),
        }
    }

    async fn put_manifest<S: Provider + ?Sized>(
        &self,
        session: &Session,
        store: &S,
        desc: &Descriptor,
        target: &str,
    ) -> Result<()> {
        let digest = descriptor_digest(desc)?;
        let (manifest, bytes) = Manifest::read(store, desc)?;
        let media_type = manifest.media_type();
        let bytes = bytes::Bytes::from(bytes);
        let url = session.url(&format!("manifests/{target}"))?;
        let resp = session
            .send("put manifest", true, |http| {
                Ok(http
                    .put(url.clone())
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.clone()))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(unexpected(&Method::PUT, &url, resp).await);
        }
        self.check_returned_digest(&resp, &url, &digest)?;
        tracing::debug!(%digest, %target, "manifest pushed");
        Ok(())
    }

    /// Checks a `Docker-Content-Digest` answer against what was sent, when the registry gave
    /// one in the same algorithm.
    fn check_returned_digest(
        &self,
        resp: &reqwest::Response,
        url: &Url,
        sent: &Digest,
    ) -> Result<()> {
        let returned = resp
            .headers()
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<Digest>().ok());
        match returned {
            Some(d) if d.algorithm() == sent.algorithm() && &d != sent => {
                Err(ClientError::DigestMismatch {
                    url: url.to_string(),
                    expected: sent.clone(),
                    actual: d,
                })
            }
            _ => Ok(()),
        }
    }

    /// Pushes one blob: HEAD, mount, or upload (retried from the start on transient
    /// failures).
    async fn push_blob<S: Provider + ?Sized>(
        &self,
        session: &Session,
        store: &S,
        desc: &Descriptor,
        mount_from: &[RepositoryName],
    ) -> Result<()> {
        let digest = descriptor_digest(desc)?;
        let progress = session.progress.clone();
        progress.event(&ProgressEvent::BlobStart {
            digest: digest.clone(),
            media_type: desc.media_type().to_string(),
            size: desc.size(),
        });
        if self.blob_exists(session, &digest).await? {
            progress.event(&ProgressEvent::BlobDone {
                digest,
                outcome: BlobOutcome::Exists,
            });
            return Ok(());
        }
        let mut upload = None;
        if let Some(from) = mount_from.first() {
            match self.mount(session, &digest, from).await? {
                None => {
                    progress.event(&ProgressEvent::BlobDone {
                        digest,
                        outcome: BlobOutcome::Mounted {
                            from: from.to_string(),
                        },
                    });
                    return Ok(());
                }
                Some(u) => upload = Some(u),
            }
        }
        let policy = self.inner.opts.retry.clone();
        let mut attempt = 0;
        let method = loop {
            attempt += 1;
            match self
                .upload(session, store, desc, &digest, upload.take())
                .await
            {
                Ok(m) => break m,
                Err(e) if transient(&e) && attempt < policy.max_attempts => {
                    let delay = policy.backoff(attempt);
                    tracing::warn!(%digest, attempt, error = %e, "upload failed; starting over");
                    progress.event(&ProgressEvent::Retry {
                        what: format!("upload {digest}"),
                        attempt,
                        delay,
                        error: e.to_string(),
                    });
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        };
        progress.event(&ProgressEvent::BlobDone {
            digest,
            outcome: BlobOutcome::Uploaded(method),
        });
        Ok(())
    }

    async fn blob_exists(&self, session: &Session, digest: &Digest) -> Result<bool> {
        let url = session.url(&format!("blobs/{digest}"))?;
        let resp = session
            .send("check blob", true, |http| Ok(http.head(url.clone())))
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(unexpected(&Method::HEAD, &url, resp).await),
        }
    }

    /// Asks for a cross-repository mount. `None` when mounted; an upload session when the
    /// registry could not mount and opened an upload instead.
    async fn mount(
        &self,
        session: &Session,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<Option<Upload>> {
        let mut url = session.url("blobs/uploads/")?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from.as_str());
        let resp = session
            .send("mount blob", true, |http| {
                Ok(http.post(url.clone()).header(CONTENT_LENGTH, 0))
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => {
                tracing::debug!(%digest, %from, "mounted");
                Ok(None)
            }
            StatusCode::ACCEPTED => {
                tracing::debug!(%digest, %from, "mount refused; uploading");
                Ok(Some(upload_of(session, &resp)?))
            }
            _ => Err(unexpected(&Method::POST, &url, resp).await),
        }
    }

    /// Opens an upload session (`POST /v2/<name>/blobs/uploads/`).
    async fn start_upload(&self, session: &Session) -> Result<Upload> {
        let url = session.url("blobs/uploads/")?;
        let resp = session
            .send("start upload", true, |http| {
                Ok(http.post(url.clone()).header(CONTENT_LENGTH, 0))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(unexpected(&Method::POST, &url, resp).await);
        }
        upload_of(session, &resp)
    }

    /// Uploads a blob over `upload`, or else in a single `POST ?digest=` when it is small
    /// enough, or else over a new session: monolithic up to the threshold, chunked above it.
    async fn upload<S: Provider + ?Sized>(
        &self,
        session: &Session,
        store: &S,
        desc: &Descriptor,
        digest: &Digest,
        upload: Option<Upload>,
    ) -> Result<UploadMethod> {
        let size = desc.size();
        let opts = &self.inner.opts;
        let single_post = size <= opts.single_post_threshold.min(opts.monolithic_threshold)
            && !session.host.single_post_refused.load(Ordering::Relaxed);
        let upload = match upload {
            Some(u) => u,
            None if single_post => match self
                .upload_single_post(session, store, digest, size)
                .await?
            {
                None => return Ok(UploadMethod::Monolithic),
                Some(u) => u,
            },
            None => self.start_upload(session).await?,
        };
        let result = if size <= opts.monolithic_threshold {
            self.upload_monolithic(session, store, digest, size, &upload)
                .await
                .map(|()| UploadMethod::Monolithic)
        } else {
            self.upload_chunked(session, store, digest, size, upload.clone())
                .await
        };
        if result.is_err() {
            self.cancel_upload(session, &upload.location).await;
        }
        result
    }

    /// `POST /v2/<name>/blobs/uploads/?digest=` with the blob as the body. `None` when the
    /// registry stored it (`201`); otherwise the session to upload it over: the one a `202`
    /// opened (the body was not taken), or a new one when the single request failed. Either
    /// way the host is remembered as not taking single requests, so that its later blobs do
    /// not send their bytes twice.
    async fn upload_single_post<S: Provider + ?Sized>(
        &self,
        session: &Session,
        store: &S,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<Upload>> {
        let mut url = session.url("blobs/uploads/")?;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let sent = session
            .send("upload blob", false, |http| {
                let reader = store
                    .read(digest, None)
                    .map_err(|e| ClientError::content(digest, e))?;
                // Progress is reported once the registry took the blob: a refused request
                // sends the bytes again.
                Ok(http
                    .post(url.clone())
                    .header(CONTENT_TYPE, OCTET_STREAM)
                    .header(CONTENT_LENGTH, size)
                    .body(body_from_reader(
                        reader,
                        size,
                        digest.clone(),
                        no_progress(),
                    )))
            })
            .await;
        let refused = || {
            session
                .host
                .single_post_refused
                .store(true, Ordering::Relaxed)
        };
        let resp = match sent {
            Ok(resp) => resp,
            Err(e @ ClientError::Http { .. }) => {
                // A registry that answers early and closes the connection, or a real
                // transport failure: either way, the usual upload copes.
                tracing::debug!(%digest, error = %e, "single-request upload failed; uploading by session");
                refused();
                return self.start_upload(session).await.map(Some);
            }
            Err(e) => return Err(e),
        };
        match resp.status() {
            StatusCode::CREATED => {
                self.check_returned_digest(&resp, &url, digest)?;
                session.progress.event(&ProgressEvent::BlobAdvance {
                    digest: digest.clone(),
                    bytes: size,
                });
                Ok(None)
            }
            StatusCode::ACCEPTED => {
                tracing::debug!(%digest, registry = %session.host.name, "single-request upload not supported; uploading by session");
                refused();
                upload_of(session, &resp).map(Some)
            }
            status => {
                tracing::debug!(%digest, %status, "single-request upload refused; uploading by session");
                refused();
                self.start_upload(session).await.map(Some)
            }
        }
    }

    async fn upload_monolithic<S: Provider + ?Sized>(
        &self,
        session: &Session,
        store: &S,
        digest: &Digest,
        size: u64,
        upload: &Upload,
    ) -> Result<()> {
        let url = with_digest(&upload.location, digest);
        let progress = session.progress.clone();
        let resp = session
            .send("upload blob", false, |http| {
                let reader = store
                    .read(digest, None)
                    .map_err(|e| ClientError::content(digest, e))?;
                Ok(http
                    .put(url.clone())
                    .header(CONTENT_TYPE, OCTET_STREAM)
                    .header(CONTENT_LENGTH, size)
                    .body(body_from_reader(
                        reader,
                        size,
                        digest.clone(),
                        progress.clone(),
                    )))
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(unexpected(&Method::PUT, &url, resp).await);
        }
        self.check_returned_digest(&resp, &url, digest)
    }

    async fn upload_chunked<S: Provider + ?Sized>(
        &self,
        session: &Session,
        store: &S,
        digest: &Digest,
        size: u64,
        mut upload: Upload,
    ) -> Result<UploadMethod> {
        let chunk = self
            .inner
            .opts
            .chunk_size
            .max(upload.min_chunk.unwrap_or(0))
            .max(1);
        let policy = self.inner.opts.retry.clone();
        let progress = session.progress.clone();
        let mut offset = 0u64;
        let mut chunks = 0u32;
        let mut failures = 0u32;
        while offset < size {
            let end = (offset + chunk).min(size);
            let location = upload.location.clone();
            let sent = session
                .send("upload chunk", false, |http| {
                    let reader = store
                        .read(digest, Some(offset..end))
                        .map_err(|e| ClientError::content(digest, e))?;
                    Ok(http
                        .patch(location.clone())
                        .header(CONTENT_TYPE, OCTET_STREAM)
                        .header("Content-Range", format!("{offset}-{}", end - 1))
                        .header(CONTENT_LENGTH, end - offset)
                        .body(body_from_reader(
                            reader,
                            end - offset,
                            digest.clone(),
                            progress.clone(),
                        )))
                })
                .await;
            let resume = match sent {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    chunks += 1;
                    upload.location = session.location(&resp).unwrap_or(location);
                    let range = resp.headers().get("range").and_then(|v| v.to_str().ok());
                    match next_offset(range, end) {
                        Some(next) if next <= end => offset = next,
                        _ => offset = end,
                    }
                    continue;
                }
                Ok(resp) if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
                    tracing::debug!(%digest, offset, "416: asking where the upload stands");
                    None
                }
                Ok(resp) if transient_status(resp.status()) => {
                    Some(unexpected(&Method::PATCH, &location, resp).await)
                }
                Ok(resp) => return Err(unexpected(&Method::PATCH, &location, resp).await),
                Err(e) if transient(&e) => Some(e),
                Err(e) => return Err(e),
            };
            failures += 1;
            if failures >= policy.max_attempts {
                return Err(resume.unwrap_or_else(|| {
                    ClientError::protocol(
                        &location,
                        "the registry keeps refusing the chunk's range",
                    )
                }));
            }
            if let Some(e) = resume {
                let delay = policy.backoff(failures);
                tracing::warn!(%digest, offset, error = %e, "chunk failed; resuming");
                progress.event(&ProgressEvent::Retry {
                    what: format!("upload {digest}"),
                    attempt: failures,
                    delay,
                    error: e.to_string(),
                });
                tokio::time::sleep(delay).await;
            }
            let (location, next) = self
                .upload_status(session, &upload.location, offset)
                .await?;
            upload.location = location;
            offset = next.min(size);
        }
        let url = with_digest(&upload.location, digest);
        let resp = session
            .send("finish upload", true, |http| {
                Ok(http.put(url.clone()).header(CONTENT_LENGTH, 0))
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(unexpected(&Method::PUT, &url, resp).await);
        }
        self.check_returned_digest(&resp, &url, digest)?;
        Ok(UploadMethod::Chunked { chunks })
    }

    /// `GET <location>`: where an upload stands. Returns the location to use next and the
    /// offset of the next byte.
    async fn upload_status(
        &self,
        session: &Session,
        location: &Url,
        hint: u64,
    ) -> Result<(Url, u64)> {
        let resp = session
            .send("upload status", true, |http| Ok(http.get(location.clone())))
            .await?;
        if resp.status() != StatusCode::NO_CONTENT {
            return Err(unexpected(&Method::GET, location, resp).await);
        }
        let range = resp.headers().get("range").and_then(|v| v.to_str().ok());
        let next = next_offset(range, hint).ok_or_else(|| {
            ClientError::protocol(location, "the upload status has no usable Range header")
        })?;
        let next_location = session.location(&resp).unwrap_or_else(|_| location.clone());
        Ok((next_location, next))
    }

    /// Cancels an upload session; failures are ignored, as the spec says.
    async fn cancel_upload(&self, session: &Session, location: &Url) {
        let result = session
            .send("cancel upload", false, |http| {
                Ok(http.delete(location.clone()))
            })
            .await;
        if let Err(e) = result {
            tracing::debug!(%location, error = %e, "cancelling the upload failed");
        }
    }
}

fn transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

fn upload_of(session: &Session, resp: &reqwest::Response) -> Result<Upload> {
    let location = session.location(resp)?;
    let min_chunk = resp
        .headers()
        .get(CHUNK_MIN_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    Ok(Upload {
        location,
        min_chunk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upload_ranges() {
        assert_eq!(next_offset(Some("0-1023"), 1024), Some(1024));
        assert_eq!(next_offset(Some("bytes=0-9"), 10), Some(10));
        assert_eq!(next_offset(Some("0-0"), 0), Some(0));
        assert_eq!(next_offset(Some("0-0"), 1), Some(1));
        assert_eq!(next_offset(Some("garbage"), 1), None);
        assert_eq!(next_offset(None, 1), None);
    }

    #[test]
    fn adds_digest_to_locations() {
        let d = Digest::sha256(b"x");
        let u = Url::parse("http://r/v2/a/blobs/uploads/123?_state=abc").unwrap();
        let with = with_digest(&u, &d);
        assert_eq!(with.query_pairs().count(), 2);
        assert!(with.as_str().contains("digest=sha256%3A"));
    }
}
