//! In-memory content store.
//!
//! Same semantics as the filesystem store (verification on commit, typed mismatches, atomic
//! first-commit-wins, ranges, digest-ordered walk) without durability. Meant for tests and for
//! short-lived stores such as a build's scratch space.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Read, Write};
use std::ops::Range;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{
    Adopter, ContentError, ContentWriter, Info, Ingester, Manager, Provider, Result,
    check_expectations, resolve_range,
};
use crate::digest::{Algorithm, Digest, Hasher};

type Blobs = BTreeMap<Digest, Arc<[u8]>>;

/// A content store that keeps every blob in memory.
///
/// Cheap to clone: clones share the same blobs. A blob is stored once as an `Arc<[u8]>`, so a
/// reader holds its own reference: it keeps reading the content it opened even if the blob is
/// deleted meanwhile.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    blobs: Arc<RwLock<Blobs>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Number of committed blobs.
    pub fn len(&self) -> usize {
        read_lock(&self.blobs).len()
    }

    /// Whether no blob is committed.
    pub fn is_empty(&self) -> bool {
        read_lock(&self.blobs).is_empty()
    }
}

// The lock only guards map operations that leave the map consistent even if the thread holding
// it panicked, so a poisoned lock is still safe to use.
fn read_lock(blobs: &RwLock<Blobs>) -> RwLockReadGuard<'_, Blobs> {
    blobs.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_lock(blobs: &RwLock<Blobs>) -> RwLockWriteGuard<'_, Blobs> {
    blobs.write().unwrap_or_else(PoisonError::into_inner)
}

impl Provider for MemoryStore {
    fn info(&self, digest: &Digest) -> Result<Info> {
        let blobs = read_lock(&self.blobs);
        let data = blobs
            .get(digest)
            .ok_or_else(|| ContentError::NotFound(digest.clone()))?;
        Ok(Info {
            digest: digest.clone(),
            size: data.len() as u64,
        })
    }

    fn read(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<Box<dyn Read + Send>> {
        let data = read_lock(&self.blobs)
            .get(digest)
            .cloned()
            .ok_or_else(|| ContentError::NotFound(digest.clone()))?;
        let (start, end) = resolve_range(digest, data.len() as u64, range)?;
        let mut cursor = Cursor::new(data);
        cursor.set_position(start);
        Ok(Box::new(cursor.take(end - start)))
    }
}

impl Ingester for MemoryStore {
    /// A writer that buffers the content in memory until it is committed.
    fn writer(&self, algorithm: Algorithm) -> Result<Box<dyn ContentWriter>> {
        Ok(Box::new(MemoryWriter {
            blobs: Arc::clone(&self.blobs),
            buf: Vec::new(),
            hasher: algorithm.hasher(),
        }))
    }
}

/// Adopting reads the file in through an ingest (the default), which hashes it.
impl Adopter for MemoryStore {}

impl Manager for MemoryStore {
    fn delete(&self, digest: &Digest) -> Result<()> {
        write_lock(&self.blobs)
            .remove(digest)
            .map(drop)
            .ok_or_else(|| ContentError::NotFound(digest.clone()))
    }

    /// Walks a snapshot taken when the walk starts, so `f` may use the store (even delete
    /// from it) without deadlocking.
    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>) -> Result<()> {
        let infos: Vec<Info> = read_lock(&self.blobs)
            .iter()
            .map(|(digest, data)| Info {
                digest: digest.clone(),
                size: data.len() as u64,
            })
            .collect();
        for info in infos {
            f(info)?;
        }
        Ok(())
    }
}

/// An ingest into a [`MemoryStore`]: a private buffer plus a running hash.
///
/// Nothing is visible until `commit`, which verifies the content and inserts it unless the
/// digest is already present (the first commit wins). `abort` or dropping the writer frees the
/// buffer.
#[derive(Debug)]
pub struct MemoryWriter {
    blobs: Arc<RwLock<Blobs>>,
    buf: Vec<u8>,
    hasher: Hasher,
}

impl Write for MemoryWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        self.hasher.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ContentWriter for MemoryWriter {
    fn written(&self) -> u64 {
        self.buf.len() as u64
    }

    fn commit(
        self: Box<Self>,
        expected_size: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<Info> {
        let MemoryWriter { blobs, buf, hasher } = *self;
        let info = check_expectations(hasher, buf.len() as u64, expected_size, expected)?;
        write_lock(&blobs)
            .entry(info.digest.clone())
            .or_insert_with(|| Arc::from(buf));
        Ok(info)
    }

    fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_outlives_delete() {
        let store = MemoryStore::new();
        let info = store.ingest_bytes(b"held by the reader").unwrap();
        let mut reader = store.read(&info.digest, Some(8..100)).unwrap();
        store.delete(&info.digest).unwrap();
        assert!(store.is_empty());
        let mut out = String::new();
        reader.read_to_string(&mut out).unwrap();
        assert_eq!(out, "the reader");
    }

    #[test]
    fn clones_share_blobs() {
        let store = MemoryStore::new();
        let other = store.clone();
        let info = other.ingest_bytes(b"shared").unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.read_all(&info.digest).unwrap(), b"shared");
    }

    #[test]
    fn first_commit_wins() {
        let store = MemoryStore::new();
        let data = b"same bytes";
        let mut a = store.writer(Algorithm::Sha256).unwrap();
        let mut b = store.writer(Algorithm::Sha256).unwrap();
        a.write_all(data).unwrap();
        b.write_all(data).unwrap();
        let first = a.commit(None, None).unwrap();
        let stored = Arc::clone(&read_lock(&store.blobs)[&first.digest]);
        let second = b
            .commit(Some(data.len() as u64), Some(&first.digest))
            .unwrap();
        assert_eq!(first, second);
        assert_eq!(store.len(), 1);
        // The second commit left the first one's allocation in place.
        assert!(Arc::ptr_eq(
            &stored,
            &read_lock(&store.blobs)[&first.digest]
        ));
    }

    #[test]
    fn dropped_writer_lands_nothing() {
        let store = MemoryStore::new();
        let mut w = store.writer(Algorithm::Sha256).unwrap();
        w.write_all(b"never committed").unwrap();
        assert_eq!(w.written(), 15);
        drop(w);
        assert!(store.is_empty());
    }
}
