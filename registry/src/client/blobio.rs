//! Bridges between the blocking content store and async HTTP bodies.
//!
//! The content store's readers and writers do blocking file I/O and hashing, so they run on
//! tokio's blocking pool and exchange bounded chunks with the async side over channels:
//! memory stays bounded whatever the blob size.

use std::io::{self, Read, Write};
use std::sync::Arc;

use berth_layerstore::content::{ContentError, ContentWriter, Info, Ingester};
use berth_layerstore::{Algorithm, Digest};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::progress::{Progress, ProgressEvent};

/// Chunks in flight between the async side and the blocking side.
const CHANNEL_DEPTH: usize = 8;
/// Bytes read from the store per chunk of an upload body.
const READ_CHUNK: usize = 256 * 1024;

/// An ingest fed from async code: chunks are written and hashed on a blocking thread.
pub(crate) struct Sink {
    tx: Option<mpsc::Sender<Bytes>>,
    task: Option<JoinHandle<io::Result<Box<dyn ContentWriter>>>>,
    written: u64,
}

impl Sink {
    /// Opens an ingest in `store`.
    pub fn open<S: Ingester + ?Sized>(
        store: &S,
        algorithm: Algorithm,
    ) -> Result<Sink, ContentError> {
        let mut writer = store.writer(algorithm)?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
        let task = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = rx.blocking_recv() {
                writer.write_all(&chunk)?;
            }
            Ok(writer)
        });
        Ok(Sink {
            tx: Some(tx),
            task: Some(task),
            written: 0,
        })
    }

    /// Bytes handed over so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Hands a chunk to the writer. An error means the writer failed.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), ContentError> {
        let n = chunk.len() as u64;
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            self.written += n;
            return Ok(());
        }
        // The writer thread stopped: find out why.
        self.tx = None;
        Err(match self.finish_writes().await {
            Err(e) => e,
            Ok(_) => stopped(),
        })
    }

    /// Closes the channel and waits for the writer thread.
    async fn finish_writes(&mut self) -> Result<Box<dyn ContentWriter>, ContentError> {
        self.tx = None;
        let Some(task) = self.task.take() else {
            return Err(stopped());
        };
        match task.await {
            Ok(Ok(w)) => Ok(w),
            Ok(Err(e)) => Err(ContentError::Io {
                path: "<ingest>".into(),
                source: e,
            }),
            Err(_) => Err(stopped()),
        }
    }

    /// Waits for the writes, then commits against `size` and `digest`.
    pub async fn commit(mut self, size: u64, digest: &Digest) -> Result<Info, ContentError> {
        let writer = self.finish_writes().await?;
        let digest = digest.clone();
        match tokio::task::spawn_blocking(move || writer.commit(Some(size), Some(&digest))).await {
            Ok(r) => r,
            Err(_) => Err(stopped()),
        }
    }

    /// Discards the ingest.
    pub async fn abort(mut self) {
        if let Ok(writer) = self.finish_writes().await {
            let _ = tokio::task::spawn_blocking(move || writer.abort()).await;
        }
    }
}

fn stopped() -> ContentError {
    ContentError::Io {
        path: "<ingest>".into(),
        source: io::Error::other("the ingest writer stopped"),
    }
}

/// Ingests an in-memory blob (a manifest) through a [`Sink`].
pub(crate) async fn ingest_bytes<S: Ingester + ?Sized>(
    store: &S,
    bytes: Bytes,
    digest: &Digest,
) -> Result<Info, ContentError> {
    let size = bytes.len() as u64;
    let mut sink = Sink::open(store, digest.algorithm())?;
    sink.write(bytes).await?;
    sink.commit(size, digest).await
}

/// An HTTP body that streams `len` bytes from `reader` (read on the blocking pool), reporting
/// progress for `digest`. If the reader ends early or fails, the body fails, so the request
/// does.
pub(crate) fn body_from_reader(
    reader: Box<dyn Read + Send>,
    len: u64,
    digest: Digest,
    progress: Arc<dyn Progress>,
) -> reqwest::Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut reader = reader.take(len);
        let mut remaining = len;
        loop {
            let want = READ_CHUNK.min(usize::try_from(remaining).unwrap_or(READ_CHUNK));
            if want == 0 {
                break;
            }
            let mut buf = vec![0u8; want];
            let n = match reader.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("blob ended {remaining} bytes early"),
                    )));
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            buf.truncate(n);
            remaining -= n as u64;
            progress.event(&ProgressEvent::BlobAdvance {
                digest: digest.clone(),
                bytes: n as u64,
            });
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                // The request was dropped.
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    reqwest::Body::wrap_stream(stream)
}
