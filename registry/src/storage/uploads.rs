//! [`UploadStore`]: blob upload sessions on disk, resumable across restarts.
//!
//! ## Layout
//! ```text
//! <dir>/<uuid>/data         the bytes acknowledged so far, then the bytes of the request in flight
//! <dir>/<uuid>/state.json   {"repository", "algorithm", "offset", "created_at"}
//! ```
//!
//! ## Durability and resumption
//! A request's bytes become part of an upload only when the request completes: the data file
//! is flushed, then `state.json` is replaced (temp file, rename) with the new `offset`. That
//! offset is what the registry acknowledged (`Range: 0-<offset-1>`). Whatever lies past it in
//! the data file, the tail of a request that failed or was cut short by a crash, is truncated
//! away when the session is next loaded or rolled back. So after the server process is killed
//! and restarted, an upload is either resumable from exactly its acknowledged offset or, if
//! its state is unusable, unknown.
//!
//! Nothing of a session is fsynced until it completes: the data file is fsynced once, when the
//! completed upload becomes a blob (it is renamed into the blob store, see
//! [`BlobStore::adopt`](super::BlobStore::adopt)); what the session stores before that is
//! only as durable as the page cache. On ext4 every fsync commits the journal, which waits for
//! the data other uploads are writing back, so an fsync per request would make concurrent
//! uploads wait on one another's disk writes. After a crash of the whole machine a session
//! may therefore come back with an older `state.json` (resumable from that earlier offset,
//! which a client learns from the upload's status as the spec has it), with no `state.json`
//! (unknown), or with an offset that names bytes that never reached the disk. None of that
//! harms anything stored: a data file shorter than its offset makes the session unknown, and
//! bytes that differ from what was received are re-hashed on resumption (see below), so the
//! completing `PUT` fails its digest check and stores nothing.
//!
//! A *transient* session ([`UploadStore::create_transient`]) is never checkpointed: it backs a
//! single request (a monolithic `POST ?digest=`), is never resumed, and a crash leaves only a
//! directory without `state.json`, which loading or expiry removes.
//!
//! ## Hash state
//! The running hash of an upload lives in memory ([`Upload::hasher`]). `sha2` cannot
//! serialize its state, so it is not checkpointed: an upload loaded from disk (after a restart
//! or eviction) has no hasher, and [`UploadStore::ensure_hasher`] re-hashes its data file once,
//! when the upload is next written to or completed. Checking an upload's status never needs
//! the hash. Re-hashing costs one sequential read of the partial upload, which is rare and
//! cheaper than a checkpoint on every request.
//!
//! The running hash is what verifies the upload when it completes: it was computed from the
//! bytes as they were written to the data file (or, after a restart, from the data file
//! itself), so the blob store may take the data file as it is, without reading it again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_layerstore::content::fs::Writeback;
use berth_layerstore::digest::Hasher;
use berth_layerstore::{Algorithm, Digest};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Result, StorageError};
use crate::reference::RepositoryName;

const DATA: &str = "data";
const STATE: &str = "state.json";
const STATE_TMP: &str = "state.json.tmp";
/// Buffer for reading a data file back (re-hashing, digest checks).
const READ_BUFFER: usize = 256 * 1024;

/// On-disk form of an upload's state.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    repository: String,
    algorithm: String,
    offset: u64,
    created_at: u64,
}

/// One upload session.
#[derive(Debug, Clone)]
pub struct Upload {
    pub id: Uuid,
    /// The repository the blob will be linked into; requests for another repository do not
    /// see the session.
    pub repository: RepositoryName,
    /// The algorithm of the running hash (`digest-algorithm` of the `POST`, else sha256).
    pub algorithm: Algorithm,
    /// Bytes acknowledged so far.
    pub offset: u64,
    /// Seconds since the epoch when the session was created.
    pub created_at: u64,
    /// Hash of the first `offset` bytes; `None` until re-hashed after a load.
    pub hasher: Option<Hasher>,
    /// A session of one request, never checkpointed (see the module docs).
    pub transient: bool,
}

impl Upload {
    /// The value of the `Range` header for this upload, as distribution writes it:
    /// `0-<offset-1>`, and `0-0` for an empty upload.
    pub fn range_header(&self) -> String {
        format!("0-{}", self.offset.saturating_sub(1))
    }
}

/// Appends one request's bytes to an upload, hashing them as they are written.
#[derive(Debug)]
pub struct ChunkWriter {
    file: BufWriter<File>,
    path: PathBuf,
    hasher: Hasher,
    written: u64,
    /// The file offset this writer started at.
    start: u64,
    /// So that the fsync when the upload completes finds little left to write.
    writeback: Writeback,
}

impl ChunkWriter {
    /// Writes and hashes `data`.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        let on_file = self.start + self.written - self.file.buffer().len() as u64;
        self.writeback.advance(self.file.get_ref(), on_file);
        Ok(())
    }

    /// Bytes written by this writer.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes the data file and closes it; returns the hash of the whole upload so far and
    /// the number of bytes this writer added. The data is not fsynced here: that happens once,
    /// when the upload completes (see the module docs).
    pub fn finish(self) -> Result<(Hasher, u64)> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| StorageError::io(&self.path, e.into_error()))?;
        drop(file);
        Ok((self.hasher, self.written))
    }
}

/// Upload sessions under one directory.
#[derive(Debug, Clone)]
pub struct UploadStore {
    dir: PathBuf,
}

impl UploadStore {
    /// Opens (creating as needed) the upload directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<UploadStore> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        Ok(UploadStore { dir })
    }

    fn session_dir(&self, id: Uuid) -> PathBuf {
        self.dir.join(id.hyphenated().to_string())
    }

    /// Where an upload's bytes are.
    pub fn data_path(&self, id: Uuid) -> PathBuf {
        self.session_dir(id).join(DATA)
    }

    /// Starts a session for `repository`, hashing with `algorithm`.
    pub fn create(&self, repository: &RepositoryName, algorithm: Algorithm) -> Result<Upload> {
        let upload = self.create_session(repository, algorithm, false)?;
        self.checkpoint(&upload)?;
        Ok(upload)
    }

    /// Starts a transient session: one that a single request creates and completes, never
    /// checkpointed, never resumed, and removed when the request is done (see the module docs).
    pub fn create_transient(
        &self,
        repository: &RepositoryName,
        algorithm: Algorithm,
    ) -> Result<Upload> {
        self.create_session(repository, algorithm, true)
    }

    fn create_session(
        &self,
        repository: &RepositoryName,
        algorithm: Algorithm,
        transient: bool,
    ) -> Result<Upload> {
        let id = Uuid::new_v4();
        let dir = self.session_dir(id);
        fs::create_dir(&dir).map_err(|e| StorageError::io(&dir, e))?;
        let data = dir.join(DATA);
        File::create(&data).map_err(|e| StorageError::io(&data, e))?;
        Ok(Upload {
            id,
            repository: repository.clone(),
            algorithm,
            offset: 0,
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            hasher: Some(algorithm.hasher()),
            transient,
        })
    }

    /// Loads a session from disk, truncating its data file to the acknowledged offset.
    /// Returns `None` for an unknown session; a session whose state is unusable is removed and
    /// reported as unknown too, with a warning.
    pub fn load(&self, id: Uuid) -> Result<Option<Upload>> {
        let dir = self.session_dir(id);
        let state_path = dir.join(STATE);
        let text = match fs::read(&state_path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if dir.exists() {
                    // Created but never checkpointed: a crash inside `create`.
                    self.remove(id)?;
                }
                return Ok(None);
            }
            Err(e) => return Err(StorageError::io(&state_path, e)),
        };
        match self.recover(id, &state_path, &text) {
            Ok(upload) => Ok(Some(upload)),
            Err(StorageError::UploadState { path, reason }) => {
                tracing::warn!(path = %path.display(), reason, "dropping unusable upload");
                self.remove(id)?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn recover(&self, id: Uuid, state_path: &Path, text: &[u8]) -> Result<Upload> {
        let bad = |reason: String| StorageError::UploadState {
            path: state_path.to_owned(),
            reason,
        };
        let state: StateFile =
            serde_json::from_slice(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let repository = RepositoryName::new(&state.repository).map_err(|e| bad(e.to_string()))?;
        let algorithm: Algorithm = state.algorithm.parse().map_err(|e| bad(format!("{e}")))?;
        let data = self.data_path(id);
        let len = match fs::metadata(&data) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(bad("data file is missing".into()));
            }
            Err(e) => return Err(StorageError::io(&data, e)),
        };
        if len < state.offset {
            return Err(bad(format!(
                "data file has {len} bytes but {} were acknowledged",
                state.offset
            )));
        }
        if len > state.offset {
            truncate(&data, state.offset)?;
        }
        Ok(Upload {
            id,
            repository,
            algorithm,
            offset: state.offset,
            created_at: state.created_at,
            hasher: None,
            transient: false,
        })
    }

    /// Records `upload.offset` as acknowledged: replaces `state.json` atomically (durably only
    /// once the kernel writes it back; see the module docs).
    /// Call after [`ChunkWriter::finish`] has written the bytes. Does nothing for a transient
    /// session.
    pub fn checkpoint(&self, upload: &Upload) -> Result<()> {
        if upload.transient {
            return Ok(());
        }
        let dir = self.session_dir(upload.id);
        let state = StateFile {
            repository: upload.repository.to_string(),
            algorithm: upload.algorithm.to_string(),
            offset: upload.offset,
            created_at: upload.created_at,
        };
        let json = serde_json::to_vec(&state).map_err(|e| StorageError::UploadState {
            path: dir.join(STATE),
            reason: e.to_string(),
        })?;
        let tmp = dir.join(STATE_TMP);
        let mut file = File::create(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
        file.write_all(&json)
            .map_err(|e| StorageError::io(&tmp, e))?;
        drop(file);
        let path = dir.join(STATE);
        fs::rename(&tmp, &path).map_err(|e| StorageError::io(&path, e))
    }

    /// Makes sure `upload.hasher` covers its acknowledged bytes, re-hashing the data file if
    /// the session was loaded from disk.
    pub fn ensure_hasher(&self, upload: &mut Upload) -> Result<()> {
        if upload.hasher.is_none() {
            upload.hasher = Some(self.hash_data(upload, upload.algorithm)?);
        }
        Ok(())
    }

    fn hash_data(&self, upload: &Upload, algorithm: Algorithm) -> Result<Hasher> {
        let path = self.data_path(upload.id);
        let file = File::open(&path).map_err(|e| StorageError::io(&path, e))?;
        let mut reader = io::BufReader::with_capacity(READ_BUFFER, file.take(upload.offset));
        let mut hasher = algorithm.hasher();
        let n = io::copy(&mut reader, &mut hasher).map_err(|e| StorageError::io(&path, e))?;
        if n != upload.offset {
            return Err(StorageError::UploadState {
                path,
                reason: format!("data file has {n} bytes, expected {}", upload.offset),
            });
        }
        Ok(hasher)
    }

    /// The digest of the acknowledged bytes under `algorithm`: from the running hash when it is
    /// of that algorithm, else by reading the data file.
    pub fn digest(&self, upload: &mut Upload, algorithm: Algorithm) -> Result<Digest> {
        if algorithm == upload.algorithm {
            self.ensure_hasher(upload)?;
            if let Some(hasher) = &upload.hasher {
                return Ok(hasher.clone().finish());
            }
        }
        Ok(self.hash_data(upload, algorithm)?.finish())
    }

    /// A writer that appends to the upload at its acknowledged offset, continuing its hash.
    /// Call [`UploadStore::ensure_hasher`] first.
    pub fn writer(&self, upload: &Upload) -> Result<ChunkWriter> {
        let path = self.data_path(upload.id);
        let hasher = upload
            .hasher
            .clone()
            .ok_or_else(|| StorageError::UploadState {
                path: path.clone(),
                reason: "writer opened before the upload was re-hashed".into(),
            })?;
        let mut file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        file.set_len(upload.offset)
            .and_then(|()| file.seek(SeekFrom::Start(upload.offset)))
            .map_err(|e| StorageError::io(&path, e))?;
        Ok(ChunkWriter {
            file: BufWriter::with_capacity(READ_BUFFER, file),
            path,
            hasher,
            written: 0,
            start: upload.offset,
            writeback: Writeback::from_offset(upload.offset),
        })
    }

    /// Discards whatever follows the acknowledged offset (the tail of a failed request).
    pub fn rollback(&self, upload: &Upload) -> Result<()> {
        truncate(&self.data_path(upload.id), upload.offset)
    }

    /// Opens the acknowledged bytes for reading, to copy them.
    pub fn open_data(&self, upload: &Upload) -> Result<io::BufReader<io::Take<File>>> {
        let path = self.data_path(upload.id);
        let file = File::open(&path).map_err(|e| StorageError::io(&path, e))?;
        Ok(io::BufReader::with_capacity(
            READ_BUFFER,
            file.take(upload.offset),
        ))
    }

    /// Removes a session and its bytes. Removing an unknown session is not an error.
    pub fn remove(&self, id: Uuid) -> Result<()> {
        let dir = self.session_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(&dir, e)),
        }
    }

    /// Sessions not written to for longer than `idle`: their ids, by the modification time
    /// of their directory's newest entry. Entries that are not sessions are skipped.
    pub fn idle_sessions(&self, idle: Duration) -> Result<Vec<Uuid>> {
        let now = SystemTime::now();
        let mut ids = Vec::new();
        let read = fs::read_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))?;
        for entry in read {
            let entry = entry.map_err(|e| StorageError::io(&self.dir, e))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| Uuid::try_parse(n).ok())
            else {
                continue;
            };
            let dir = entry.path();
            let newest = [dir.join(STATE), dir.join(DATA), dir.clone()]
                .iter()
                .filter_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
                .max();
            let age = newest
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or(Duration::ZERO);
            if age > idle {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io(path, e))?;
    file.set_len(len)
        .and_then(|()| file.sync_data())
        .map_err(|e| StorageError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> RepositoryName {
        RepositoryName::new("a/b").unwrap()
    }

    fn append(store: &UploadStore, upload: &mut Upload, data: &[u8]) {
        store.ensure_hasher(upload).unwrap();
        let mut w = store.writer(upload).unwrap();
        w.write(data).unwrap();
        let (hasher, n) = w.finish().unwrap();
        upload.offset += n;
        upload.hasher = Some(hasher);
        store.checkpoint(upload).unwrap();
    }

    #[test]
    fn resumes_after_reload_from_the_acknowledged_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = UploadStore::open(dir.path()).unwrap();
        let mut up = store.create(&repo(), Algorithm::Sha256).unwrap();
        assert_eq!(up.range_header(), "0-0");
        append(&store, &mut up, b"hello ");
        assert_eq!(up.range_header(), "0-5");

        // An unacknowledged tail, as a crash mid-request leaves it.
        let mut w = store.writer(&up).unwrap();
        w.write(b"garbage").unwrap();
        drop(w);

        let mut again = store.load(up.id).unwrap().unwrap();
        assert_eq!(again.offset, 6);
        assert!(again.hasher.is_none());
        assert_eq!(fs::metadata(store.data_path(up.id)).unwrap().len(), 6);
        append(&store, &mut again, b"world");
        assert_eq!(
            store.digest(&mut again, Algorithm::Sha256).unwrap(),
            Digest::sha256(b"hello world")
        );
        assert_eq!(
            store.digest(&mut again, Algorithm::Sha512).unwrap(),
            Digest::of(Algorithm::Sha512, b"hello world")
        );
        let mut data = Vec::new();
        store
            .open_data(&again)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(data, b"hello world");
        store.remove(up.id).unwrap();
        assert!(store.load(up.id).unwrap().is_none());
    }

    #[test]
    fn transient_sessions_are_never_checkpointed_nor_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let store = UploadStore::open(dir.path()).unwrap();
        let mut up = store.create_transient(&repo(), Algorithm::Sha256).unwrap();
        assert!(up.transient);
        append(&store, &mut up, b"one request");
        assert_eq!(up.offset, 11);
        assert!(!store.session_dir(up.id).join(STATE).exists());
        assert_eq!(
            store.digest(&mut up, Algorithm::Sha256).unwrap(),
            Digest::sha256(b"one request")
        );
        // What a crash leaves is unknown, and removed.
        assert!(store.load(up.id).unwrap().is_none());
        assert!(!store.session_dir(up.id).exists());
    }

    #[test]
    fn unusable_state_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let store = UploadStore::open(dir.path()).unwrap();
        let up = store.create(&repo(), Algorithm::Sha256).unwrap();
        fs::write(store.session_dir(up.id).join(STATE), b"{not json").unwrap();
        assert!(store.load(up.id).unwrap().is_none());
        assert!(!store.session_dir(up.id).exists());
        assert!(store.load(Uuid::new_v4()).unwrap().is_none());
    }

    #[test]
    fn idle_sessions_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = UploadStore::open(dir.path()).unwrap();
        let up = store.create(&repo(), Algorithm::Sha256).unwrap();
        fs::create_dir(dir.path().join("not-a-session")).unwrap();
        assert!(
            store
                .idle_sessions(Duration::from_secs(60))
                .unwrap()
                .is_empty()
        );
        std::thread::sleep(Duration::from_millis(20));
        let idle = store.idle_sessions(Duration::from_millis(5)).unwrap();
        assert_eq!(idle, vec![up.id]);
    }
}
