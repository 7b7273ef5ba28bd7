//! Blob endpoints: `GET`/`HEAD` (with `Range`) and `DELETE` of `/v2/<name>/blobs/<digest>`.
//!
//! A blob is served only from a repository it was pushed or mounted into. Its bytes are
//! streamed from the blob store through a bounded channel, so a download holds at most a few
//! chunks in memory whatever the blob's size.

use std::io::Read;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use berth_layerstore::Digest;
use bytes::BytesMut;

use super::{AppState, CONTENT_DIGEST_HEADER, RegistryError, blocking, build, empty};
use crate::reference::RepositoryName;

/// Size of the chunks a download is streamed in.
const CHUNK: usize = 256 * 1024;
/// Chunks buffered between the reading thread and the connection.
const CHANNEL_DEPTH: usize = 4;

/// What a `Range` request header asks of a blob of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// No usable range: send everything (also for syntax this server does not honour, such as
    /// several ranges, as RFC 9110 allows).
    Full,
    /// Bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// A well-formed range that does not overlap the blob.
    Unsatisfiable,
}

/// Interprets a `Range` header (`bytes=a-b`, `bytes=a-`, `bytes=-n`) against `size`.
pub(crate) fn parse_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match number(last) {
            None => ByteRange::Full,
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Partial {
                start: size.saturating_sub(n),
                end: size - 1,
            },
        },
        // bytes=a-: from a to the end.
        (false, true) => match number(first) {
            None => ByteRange::Full,
            Some(a) if a >= size => ByteRange::Unsatisfiable,
            Some(a) => ByteRange::Partial {
                start: a,
                end: size - 1,
            },
        },
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= size {
                    ByteRange::Unsatisfiable
                } else {
                    ByteRange::Partial {
                        start: a,
                        end: b.min(size - 1),
                    }
                }
            }
            _ => ByteRange::Full,
        },
        (true, true) => ByteRange::Full,
    }
}

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`.
pub(crate) async fn get(
    state: &AppState,
    name: &RepositoryName,
    digest: &Digest,
    req: &Parts,
) -> Result<Response, RegistryError> {
    let storage = state.storage().clone();
    let (repo, d) = (name.clone(), digest.clone());
    let size = blocking(move || Ok(storage.repository_blob(&repo, &d)?))
        .await?
        .ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))?;

    let range = parse_range(
        req.headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    );
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""))
        .header(CONTENT_DIGEST_HEADER, digest.to_string());
    let (builder, start, len) = match range {
        ByteRange::Full => (builder.status(StatusCode::OK), 0, size),
        ByteRange::Partial { start, end } => (
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")),
            start,
            end - start + 1,
        ),
        ByteRange::Unsatisfiable => return Err(RegistryError::RangeNotSatisfiable { size }),
    };
    let builder = builder.header(header::CONTENT_LENGTH, len);
    if req.method == Method::HEAD || len == 0 {
        return build(builder, Body::empty());
    }
    let blobs = state.storage().blobs.clone();
    let d = digest.clone();
    let reader = blocking(move || Ok(blobs.open(&d, Some(start..start + len))?)).await?;
    build(builder, stream_reader(reader))
}

/// A body that streams `reader` from a blocking thread through a bounded channel.
fn stream_reader(mut reader: Box<dyn Read + Send>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut buf = BytesMut::zeroed(CHUNK);
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    // The client went away: stop reading.
                    if tx.blocking_send(Ok(buf.freeze())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!(error = %e, "reading blob for download");
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// `DELETE /v2/<name>/blobs/<digest>`: removes the blob from the repository. The bytes stay
/// in the blob store (other repositories may hold them) until garbage collection.
pub(crate) async fn delete(
    state: &AppState,
    name: &RepositoryName,
    digest: &Digest,
) -> Result<Response, RegistryError> {
    let meta = state.storage().meta.clone();
    let (repo, d) = (name.clone(), digest.clone());
    if !blocking(move || Ok(meta.unlink_blob(&repo, &d)?)).await? {
        return Err(RegistryError::BlobUnknown(digest.clone()));
    }
    let mut builder = empty(StatusCode::ACCEPTED);
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        builder = builder.header(CONTENT_DIGEST_HEADER, v);
    }
    build(builder, Body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use ByteRange::*;
        let p = |h: &str, size| parse_range(Some(h), size);
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(p("bytes=0-4", 10), Partial { start: 0, end: 4 });
        assert_eq!(p("bytes=5-", 10), Partial { start: 5, end: 9 });
        assert_eq!(p("bytes=-3", 10), Partial { start: 7, end: 9 });
        assert_eq!(p("bytes=-30", 10), Partial { start: 0, end: 9 });
        assert_eq!(p("bytes=8-100", 10), Partial { start: 8, end: 9 });
        assert_eq!(p("bytes=10-", 10), Unsatisfiable);
        assert_eq!(p("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(p("bytes=-0", 10), Unsatisfiable);
        assert_eq!(p("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(p("bytes=5-2", 10), Full);
        assert_eq!(p("bytes=0-1,3-4", 10), Full);
        assert_eq!(p("items=0-1", 10), Full);
        assert_eq!(p("bytes=a-b", 10), Full);
        assert_eq!(p("bytes=+1-2", 10), Full);
    }
}
