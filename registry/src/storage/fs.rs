//! [`FsBlobStore`]: the [`BlobStore`] over the layerstore's filesystem content store.

use std::io::Read;
use std::ops::Range;
use std::path::Path;

use berth_layerstore::Digest;
use berth_layerstore::content::fs::FsStore;
use berth_layerstore::content::{Adopter, ContentError, Ingester, Manager, Provider, Verification};

use super::{BlobStore, Result};

/// Blobs at `<root>/blobs/<algorithm>/<2 hex>/<hex>`, written through `<root>/ingest/` with
/// temp file, fsync and rename, and verified on the way in. [`BlobStore::adopt`] renames an
/// upload's data file into place instead (fsync, rename, directory fsync), when it is on the
/// same filesystem.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    store: FsStore,
}

impl FsBlobStore {
    /// Opens (creating as needed) the content store at `root`.
    pub fn open(root: &Path) -> Result<FsBlobStore> {
        Ok(FsBlobStore {
            store: FsStore::open(root)?,
        })
    }

    /// The underlying content store, for maintenance such as `fsck` and ingest pruning.
    pub fn content(&self) -> &FsStore {
        &self.store
    }
}

impl BlobStore for FsBlobStore {
    fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.store.info(digest) {
            Ok(info) => Ok(Some(info.size)),
            Err(ContentError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<Box<dyn Read + Send>> {
        Ok(self.store.read(digest, range)?)
    }

    fn put(&self, reader: &mut dyn Read, size: u64, digest: &Digest) -> Result<()> {
        self.store.ingest(reader, Some(size), Some(digest))?;
        Ok(())
    }

    /// The caller's digest is its running hash over the bytes it wrote, hence
    /// [`Verification::CallerHashed`]: the file is checked for its size and moved, not read.
    fn adopt(&self, path: &Path, size: u64, digest: &Digest) -> Result<()> {
        self.store
            .adopt(path, digest, size, Verification::CallerHashed)?;
        Ok(())
    }

    fn delete(&self, digest: &Digest) -> Result<bool> {
        match self.store.delete(digest) {
            Ok(()) => Ok(true),
            Err(ContentError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
