//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (new session, monolithic upload, or
//! cross-repository mount) and `GET`/`PATCH`/`PUT`/`DELETE` of the session URL.
//!
//! ## Sessions
//! [`Sessions`] keeps, per upload id, an async mutex around the session's state, so requests on
//! one upload run one at a time while different uploads proceed in parallel. The state is
//! loaded from the [`UploadStore`] on first use, which is how sessions survive a restart; the
//! running hash stays in memory between requests and is rebuilt from disk when missing (see
//! [`crate::storage::uploads`]).
//!
//! ## Writing a request body
//! The body is streamed through a bounded channel to a blocking thread that appends to the
//! session's data file and hashes as it writes; small frames travel in batches (see
//! [`BATCH`]). When the body ends, the thread flushes the file and the new offset is
//! checkpointed; only then is the request acknowledged.
//! A body that fails midway, or a chunk whose length differs from its `Content-Range`, is
//! rolled back: the upload stays exactly as the last acknowledged request left it. Nothing is
//! fsynced per chunk; the data is made durable once, when the upload completes.
//!
//! ## Completing
//! The closing `PUT ?digest=` (and a monolithic `POST ?digest=`) checks the client's digest
//! against the running hash, which was computed from the bytes as they were written to the
//! data file (or, after a restart, by reading it back). On a match, the data file itself
//! becomes the blob: the blob store checks its size, fsyncs it and renames it into place
//! ([`BlobStore::adopt`](crate::storage::BlobStore::adopt)), so completing costs one fsync and
//! a rename, not a second copy of the blob. Then the blob is linked into the repository and
//! the session removed. A monolithic `POST ?digest=` uses a transient session, never
//! checkpointed, since nothing can resume it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use berth_layerstore::content::ContentError;
use berth_layerstore::{Algorithm, Digest};
use futures_util::StreamExt;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use super::route::{query_pairs, query_param};
use super::{
    AppState, CONTENT_DIGEST_HEADER, RegistryError, UPLOAD_UUID_HEADER, blocking, build, empty,
};
use crate::reference::RepositoryName;
use crate::storage::StorageError;
use crate::storage::uploads::{Upload, UploadStore};

/// Batches buffered between the connection and the writing thread.
const CHANNEL_DEPTH: usize = 8;

/// Frames are handed to the writing thread in batches of at least this many bytes. A body sent
/// with chunked transfer encoding, as Go clients (docker, skopeo, containerd) send a streamed
/// PATCH, arrives in frames of about 32 KiB; passing each one through the channel would wake
/// the writing thread tens of thousands of times per GiB. Larger frames pass as they are.
const BATCH: usize = 256 * 1024;

type Slot = Arc<tokio::sync::Mutex<Option<Upload>>>;

/// Upload sessions: the on-disk store plus one lock per session in use.
#[derive(Debug)]
pub(crate) struct Sessions {
    store: UploadStore,
    live: Mutex<HashMap<Uuid, Slot>>,
}

/// A locked session. Holding it excludes every other request on the same upload. The slot
/// is empty when the session was removed, or when a failed storage call lost its in-memory
/// state, in which case the next request reloads it from disk.
struct Locked {
    guard: OwnedMutexGuard<Option<Upload>>,
}

impl Locked {
    fn upload(&self) -> Result<&Upload, RegistryError> {
        self.guard.as_ref().ok_or(RegistryError::BlobUploadUnknown)
    }

    fn take(&mut self) -> Result<Upload, RegistryError> {
        self.guard.take().ok_or(RegistryError::BlobUploadUnknown)
    }
}

impl Sessions {
    pub(crate) fn new(store: UploadStore) -> Sessions {
        Sessions {
            store,
            live: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, id: Uuid) -> Slot {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.entry(id).or_default().clone()
    }

    fn forget(&self, id: Uuid) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(&id);
    }

    /// Starts a session and returns it locked. A transient one backs a single request (see
    /// [`UploadStore::create_transient`]).
    async fn create(
        &self,
        repo: &RepositoryName,
        algorithm: Algorithm,
        transient: bool,
    ) -> Result<Locked, RegistryError> {
        let store = self.store.clone();
        let repo = repo.clone();
        let upload = blocking(move || {
            Ok(if transient {
                store.create_transient(&repo, algorithm)?
            } else {
                store.create(&repo, algorithm)?
            })
        })
        .await?;
        let slot = self.slot(upload.id);
        let mut guard = slot.lock_owned().await;
        *guard = Some(upload);
        Ok(Locked { guard })
    }

    /// Locks the session `id` of repository `repo`, loading it from disk if needed. An id
    /// that is not a UUID, unknown, or of another repository is `BLOB_UPLOAD_UNKNOWN`.
    async fn lock(&self, repo: &RepositoryName, id: &str) -> Result<Locked, RegistryError> {
        let id = Uuid::try_parse(id).map_err(|_| RegistryError::BlobUploadUnknown)?;
        let slot = self.slot(id);
        let mut guard = slot.lock_owned().await;
        if guard.is_none() {
            let store = self.store.clone();
            *guard = blocking(move || Ok(store.load(id)?)).await?;
        }
        match guard.as_ref() {
            Some(upload) if upload.repository == *repo => Ok(Locked { guard }),
            Some(_) => Err(RegistryError::BlobUploadUnknown),
            None => {
                drop(guard);
                self.forget(id);
                Err(RegistryError::BlobUploadUnknown)
            }
        }
    }

    /// Removes a locked session from disk and memory.
    async fn remove(&self, locked: &mut Locked) -> Result<(), RegistryError> {
        let Some(upload) = locked.guard.take() else {
            return Ok(());
        };
        let store = self.store.clone();
        let id = upload.id;
        blocking(move || Ok(store.remove(id)?)).await?;
        self.forget(id);
        Ok(())
    }

    /// Removes sessions idle for longer than `idle`.
    pub(crate) async fn expire(&self, idle: Duration) -> Result<usize, RegistryError> {
        let store = self.store.clone();
        let ids = blocking(move || Ok(store.idle_sessions(idle)?)).await?;
        let mut removed = 0;
        for id in ids {
            let slot = self.slot(id);
            let mut guard = slot.lock_owned().await;
            *guard = None;
            let store = self.store.clone();
            blocking(move || Ok(store.remove(id)?)).await?;
            drop(guard);
            self.forget(id);
            removed += 1;
        }
        Ok(removed)
    }

    /// Appends a request body to a locked session. `expected` is the length a `Content-Range`
    /// announced, if any. Returns the number of bytes appended.
    async fn append(
        &self,
        locked: &mut Locked,
        body: Body,
        expected: Option<u64>,
    ) -> Result<u64, RegistryError> {
        let mut upload = locked.take()?;
        // Re-hash (after a restart) and open the writer off the async threads.
        let store = self.store.clone();
        let (writer, upload) = blocking(move || {
            store.ensure_hasher(&mut upload)?;
            let writer = store.writer(&upload)?;
            Ok((writer, upload))
        })
        .await?;

        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(CHANNEL_DEPTH);
        let writing = tokio::task::spawn_blocking(move || {
            let mut writer = writer;
            while let Some(frame) = rx.blocking_recv() {
                writer.write(&frame)?;
            }
            writer.finish()
        });
        let mut stream = body.into_data_stream();
        let mut received: u64 = 0;
        let mut frames: u64 = 0;
        let mut failure = None;
        let new_batch = || bytes::BytesMut::with_capacity(BATCH + 64 * 1024);
        let mut batch = new_batch();
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(frame) => {
                    received += frame.len() as u64;
                    frames += 1;
                    if let Some(e) = expected
                        && received > e
                    {
                        failure = Some(RegistryError::SizeInvalid(format!(
                            "chunk is longer than its Content-Range ({e} bytes)"
                        )));
                        break;
                    }
                    let ready = if batch.is_empty() && frame.len() >= BATCH {
                        frame
                    } else {
                        batch.extend_from_slice(&frame);
                        if batch.len() < BATCH {
                            continue;
                        }
                        std::mem::replace(&mut batch, new_batch()).freeze()
                    };
                    if tx.send(ready).await.is_err() {
                        // The writer stopped; its error is reported below.
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(RegistryError::BlobUploadInvalid(format!(
                        "request body failed: {e}"
                    )));
                    break;
                }
            }
        }
        // What a failed body left in the batch is dropped with the rest of it (see below).
        if failure.is_none() && !batch.is_empty() {
            let _ = tx.send(batch.freeze()).await;
        }
        drop(tx);
        let written = writing.await?;
        tracing::debug!(upload = %upload.id, received, frames, "request body written");
        if failure.is_none()
            && let Some(e) = expected
            && received != e
        {
            failure = Some(RegistryError::SizeInvalid(format!(
                "chunk has {received} bytes, its Content-Range says {e}"
            )));
        }
        let outcome = match (written, failure) {
            (Ok((_, 0)), None) => Ok((upload, 0)),
            (Ok((hasher, n)), None) => {
                let mut next = upload.clone();
                next.offset += n;
                next.hasher = Some(hasher);
                let store = self.store.clone();
                match blocking(move || {
                    store.checkpoint(&next)?;
                    Ok(next)
                })
                .await
                {
                    Ok(next) => Ok((next, n)),
                    Err(e) => Err((upload, e)),
                }
            }
            (Ok(_), Some(f)) => Err((upload, f)),
            (Err(e), f) => Err((upload, f.unwrap_or_else(|| e.into()))),
        };
        match outcome {
            Ok((upload, n)) => {
                *locked.guard = Some(upload);
                Ok(n)
            }
            Err((upload, e)) => {
                // Back to the last acknowledged state: drop the unacknowledged tail.
                let store = self.store.clone();
                match blocking(move || {
                    store.rollback(&upload)?;
                    Ok(upload)
                })
                .await
                {
                    Ok(upload) => *locked.guard = Some(upload),
                    Err(rollback) => {
                        tracing::error!(error = %rollback, "could not roll back upload");
                    }
                }
                Err(e)
            }
        }
    }
}

fn upload_location(repo: &RepositoryName, id: Uuid) -> String {
    format!("/v2/{repo}/blobs/uploads/{}", id.hyphenated())
}

fn blob_location(repo: &RepositoryName, digest: &Digest) -> String {
    format!("/v2/{repo}/blobs/{digest}")
}

/// `202 Accepted` (or `204` for a status check) with the session's `Location` and `Range`.
fn session_response(upload: &Upload, status: StatusCode) -> Result<Response, RegistryError> {
    build(
        empty(status)
            .header(
                header::LOCATION,
                upload_location(&upload.repository, upload.id),
            )
            .header(header::RANGE, upload.range_header())
            .header(UPLOAD_UUID_HEADER, upload.id.hyphenated().to_string()),
        Body::empty(),
    )
}

/// `201 Created` for a blob now in the repository.
fn created(repo: &RepositoryName, digest: &Digest) -> Result<Response, RegistryError> {
    build(
        empty(StatusCode::CREATED)
            .header(header::LOCATION, blob_location(repo, digest))
            .header(CONTENT_DIGEST_HEADER, digest.to_string()),
        Body::empty(),
    )
}

fn parse_digest(value: &str) -> Result<Digest, RegistryError> {
    value.parse().map_err(
        |e: berth_layerstore::DigestError| RegistryError::DigestInvalid {
            reason: e.to_string(),
            digest: Some(value.to_owned()),
        },
    )
}

/// Whether the request says it has no body.
fn empty_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0")
}

/// `POST /v2/<name>/blobs/uploads/`: a mount (`?mount=&from=`), a monolithic upload
/// (`?digest=`), or a new session (`?digest-algorithm=` picks its hash).
pub(crate) async fn start(
    state: &AppState,
    repo: RepositoryName,
    req: Request,
) -> Result<Response, RegistryError> {
    let query = query_pairs(req.uri().query());
    if let Some(mount) = query_param(&query, "mount") {
        if let Some(response) = try_mount(state, &repo, mount, query_param(&query, "from")).await? {
            return Ok(response);
        }
        // Not mountable: fall back to a fresh session, as the spec says.
        let locked = state
            .sessions()
            .create(&repo, Algorithm::Sha256, false)
            .await?;
        return session_response(locked.upload()?, StatusCode::ACCEPTED);
    }
    if let Some(digest) = query_param(&query, "digest") {
        let digest = parse_digest(digest)?;
        let mut locked = state
            .sessions()
            .create(&repo, digest.algorithm(), true)
            .await?;
        let result = complete(state, &mut locked, Some(req.into_body()), None, &digest).await;
        if result.is_err() {
            // Nothing can resume a transient session.
            if let Err(e) = state.sessions().remove(&mut locked).await {
                tracing::warn!(error = %e, "could not remove a failed monolithic upload");
            }
        }
        return result;
    }
    let algorithm =
        match query_param(&query, "digest-algorithm") {
            None => Algorithm::Sha256,
            Some(a) => a.parse().map_err(|e: berth_layerstore::DigestError| {
                RegistryError::DigestInvalid {
                    reason: e.to_string(),
                    digest: None,
                }
            })?,
        };
    let locked = state.sessions().create(&repo, algorithm, false).await?;
    session_response(locked.upload()?, StatusCode::ACCEPTED)
}

/// Links `mount` from repository `from` into `repo` when `from` holds it. `None` when the
/// mount cannot be done (bad or missing parameters, blob not in `from`).
async fn try_mount(
    state: &AppState,
    repo: &RepositoryName,
    mount: &str,
    from: Option<&str>,
) -> Result<Option<Response>, RegistryError> {
    let (Ok(digest), Some(Ok(from))) = (mount.parse::<Digest>(), from.map(RepositoryName::new))
    else {
        return Ok(None);
    };
    let storage = state.storage().clone();
    let (target, d) = (repo.clone(), digest.clone());
    let mounted = blocking(move || match storage.repository_blob(&from, &d)? {
        Some(size) => {
            storage.meta.link_blob(&target, &d, size)?;
            Ok(true)
        }
        None => Ok(false),
    })
    .await?;
    if mounted {
        created(repo, &digest).map(Some)
    } else {
        Ok(None)
    }
}

/// `GET <location>`: where the upload stands.
pub(crate) async fn status(
    state: &AppState,
    repo: &RepositoryName,
    id: &str,
) -> Result<Response, RegistryError> {
    let locked = state.sessions().lock(repo, id).await?;
    session_response(locked.upload()?, StatusCode::NO_CONTENT)
}

/// The `start-end` of a chunk's `Content-Range` (inclusive), tolerating a `bytes ` prefix and a
/// `/total` suffix. `None` when malformed.
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let value = value.trim();
    let value = value.strip_prefix("bytes ").unwrap_or(value);
    let value = value.split_once('/').map_or(value, |(r, _)| r);
    let (start, end) = value.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(start) || !digits(end) {
        return None;
    }
    let (start, end) = (start.parse().ok()?, end.parse().ok()?);
    (start <= end).then_some((start, end))
}

/// Checks a chunk's `Content-Range` against the upload and returns the chunk length it
/// announces, or `None` when the request has no `Content-Range`.
fn check_chunk(upload: &Upload, headers: &HeaderMap) -> Result<Option<u64>, RegistryError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let out_of_order = |reason: String| RegistryError::UploadRangeInvalid {
        reason,
        location: upload_location(&upload.repository, upload.id),
        range: upload.range_header(),
        upload_id: upload.id.hyphenated().to_string(),
    };
    let text = value.to_str().unwrap_or_default();
    let (start, end) = parse_content_range(text)
        .ok_or_else(|| out_of_order(format!("malformed Content-Range {text:?}")))?;
    if start != upload.offset {
        return Err(out_of_order(format!(
            "chunk starts at {start}, the upload has {} bytes",
            upload.offset
        )));
    }
    let len = end - start + 1;
    if let Some(declared) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        && declared != len
    {
        return Err(RegistryError::SizeInvalid(format!(
            "Content-Length {declared} does not match Content-Range {start}-{end}"
        )));
    }
    Ok(Some(len))
}

/// `PATCH <location>`: appends a chunk (with `Content-Range`) or a stream (without).
pub(crate) async fn patch(
    state: &AppState,
    repo: &RepositoryName,
    id: &str,
    req: Request,
) -> Result<Response, RegistryError> {
    let mut locked = state.sessions().lock(repo, id).await?;
    let expected = check_chunk(locked.upload()?, req.headers())?;
    state
        .sessions()
        .append(&mut locked, req.into_body(), expected)
        .await?;
    session_response(locked.upload()?, StatusCode::ACCEPTED)
}

/// `PUT <location>?digest=`: appends the optional last chunk and completes the upload.
pub(crate) async fn finish(
    state: &AppState,
    repo: &RepositoryName,
    id: &str,
    req: Request,
) -> Result<Response, RegistryError> {
    let query = query_pairs(req.uri().query());
    let mut locked = state.sessions().lock(repo, id).await?;
    let digest = match query_param(&query, "digest") {
        Some(d) => parse_digest(d)?,
        None => {
            return Err(RegistryError::DigestInvalid {
                reason: "the digest query parameter is required to complete an upload".into(),
                digest: None,
            });
        }
    };
    let expected = check_chunk(locked.upload()?, req.headers())?;
    let body = (!empty_body(req.headers())).then(|| req.into_body());
    complete(state, &mut locked, body, expected, &digest).await
}

/// Appends the optional last `body` and completes the upload as `digest`.
async fn complete(
    state: &AppState,
    locked: &mut Locked,
    body: Option<Body>,
    expected: Option<u64>,
    digest: &Digest,
) -> Result<Response, RegistryError> {
    let sessions = state.sessions();
    if let Some(body) = body {
        sessions.append(locked, body, expected).await?;
    }

    // Verify the client's digest against what was actually received.
    let mut upload = locked.take()?;
    let store = sessions.store.clone();
    let algorithm = digest.algorithm();
    let (actual, upload) = blocking(move || {
        let actual = store.digest(&mut upload, algorithm)?;
        Ok((actual, upload))
    })
    .await?;
    let repo = upload.repository.clone();
    let size = upload.offset;
    *locked.guard = Some(upload.clone());
    if actual != *digest {
        sessions.remove(locked).await?;
        return Err(RegistryError::DigestInvalid {
            reason: format!("the uploaded content has digest {actual}"),
            digest: Some(digest.to_string()),
        });
    }

    // The data file becomes the blob (unless the blob store has it already), then the blob is
    // linked and the session dropped. The digest and size were checked above against what was
    // received, so any failure from here on is the registry's, not the client's.
    let storage = state.storage().clone();
    let store = sessions.store.clone();
    let d = digest.clone();
    let link_repo = repo.clone();
    blocking(move || {
        let internal = |what: &str, e: StorageError| {
            RegistryError::Internal(format!("completing upload {}: {what}: {e}", upload.id))
        };
        let present = storage.blobs.stat(&d).map_err(|e| internal("stat", e))?;
        if present != Some(size) {
            let data = store.data_path(upload.id);
            match storage.blobs.adopt(&data, size, &d) {
                Ok(()) => {}
                Err(StorageError::Content(ContentError::SizeMismatch { actual, .. })) => {
                    // The data file is not of the acknowledged length, which only a failed
                    // rollback leaves: copy the acknowledged bytes instead, verified again.
                    tracing::warn!(
                        upload = %upload.id,
                        acknowledged = size,
                        on_disk = actual,
                        "upload data file has an unexpected length; copying it"
                    );
                    let mut reader = store.open_data(&upload).map_err(|e| internal("open", e))?;
                    storage
                        .blobs
                        .put(&mut reader, size, &d)
                        .map_err(|e| internal("copy", e))?;
                }
                Err(e) => return Err(internal("adopt", e)),
            }
        }
        storage
            .meta
            .link_blob(&link_repo, &d, size)
            .map_err(|e| internal("link", e))?;
        Ok(())
    })
    .await?;
    sessions.remove(locked).await?;
    tracing::debug!(%repo, %digest, size, "blob committed");
    created(&repo, digest)
}

/// `DELETE <location>`: cancels the upload and removes its bytes.
pub(crate) async fn cancel(
    state: &AppState,
    repo: &RepositoryName,
    id: &str,
) -> Result<Response, RegistryError> {
    let mut locked = state.sessions().lock(repo, id).await?;
    state.sessions().remove(&mut locked).await?;
    build(empty(StatusCode::NO_CONTENT), Body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-9"), Some((0, 9)));
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((10, 19)));
        assert_eq!(parse_content_range("10-19/*"), Some((10, 19)));
        assert_eq!(parse_content_range("9-0"), None);
        assert_eq!(parse_content_range("-9"), None);
        assert_eq!(parse_content_range("a-b"), None);
        assert_eq!(parse_content_range(""), None);
    }
}
