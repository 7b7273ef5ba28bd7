//! Filesystem content store.
//!
//! ## Layout
//! ```text
//! <root>/blobs/<algorithm>/<first 2 hex>/<hex>   committed blobs, read-only
//! <root>/ingest/<uuid>                            ingests in progress
//! ```
//!
//! Ingests live under the same root as the blobs, so landing one is a `rename(2)` within a single
//! filesystem: readers see either no blob or the whole, verified blob, never a partial one.
//!
//! [`FsStore::oci_layout`] opens the blobs of an OCI image layout directory instead, named
//! `blobs/<algorithm>/<hex>` as `image-layout.md` names them, so that a copy reads a layout in
//! place and a pull writes straight into one (see [`crate::image::layout`]).
//!
//! [`FsStore`]'s [`Adopter::adopt`] lands a file written elsewhere on the same filesystem (a
//! registry upload) the same way, by renaming it into `blobs/`, so a large blob is never
//! copied a second time.
//!
//! Architecture Invariant: a file under `blobs/` has been hashed on the way in (by the store's
//! writer, or by the caller of `adopt` that wrote it) and matched its expected size and digest
//! before it was renamed there; nothing ever writes to it in place. The blobs of an OCI layout
//! are the exception on the way in: whoever wrote the layout put them there, so a reader that
//! opens a layout it did not write checks them itself ([`crate::image::layout::open`] does).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{
    Adopter, ContentError, ContentWriter, Info, Ingester, Manager, Provider, Result, Verification,
    adopt_by_copy, check_adoptable, check_expectations, remove_adopted, resolve_range,
};
use crate::digest::{Algorithm, Digest, Hasher};

/// Size of a writer's buffer. Writes of at least this size bypass it and go straight to the
/// file, so streaming a multi-GB layer in large chunks costs one `write(2)` per chunk.
const WRITE_BUFFER: usize = 128 * 1024;

/// Size of the buffer an adopt that re-hashes reads its file with.
const READ_BUFFER: usize = 256 * 1024;

/// Every algorithm the store lays out, in the order [`Digest`]'s `Ord` puts them (algorithm
/// first, then hex), so walking them in this order walks digests in order.
const ALGORITHMS: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

/// A content store on a local filesystem.
///
/// Cheap to clone: clones share the same root. Any number of stores (in this process or others)
/// may use the same root at once; every write goes through its own ingest file and lands with
/// an atomic rename.
///
/// ## Guarantees
/// - A committed blob was verified against the size and digest computed from the bytes written,
///   then fsynced, renamed into place, and its directory fsynced: once `commit` returns, the blob
///   survives a crash.
/// - Committed blob files are made read-only and never modified in place.
/// - A failed, aborted or dropped ingest removes its temporary file. Ingests left behind by a
///   crash are removed with [`FsStore::prune_ingests`].
/// - An adopted file lands the same way (read-only, fsync, rename, directory fsync), after its
///   size was checked and its digest computed from its bytes, by the store or by the caller
///   that wrote it (see [`Adopter::adopt`] on [`FsStore`]).
#[derive(Debug, Clone)]
pub struct FsStore {
    inner: Arc<Layout>,
}

#[derive(Debug)]
struct Layout {
    root: PathBuf,
    blobs: PathBuf,
    ingest: PathBuf,
    naming: Naming,
}

/// How blob files are named under `blobs/<algorithm>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// `<first 2 hex>/<hex>`: the store's own layout, which keeps directories small.
    Sharded,
    /// `<hex>`: the OCI image layout's.
    Flat,
}

impl Layout {
    fn algorithm_dir(&self, algorithm: Algorithm) -> PathBuf {
        self.blobs.join(algorithm.as_str())
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        let dir = self.algorithm_dir(digest.algorithm());
        match self.naming {
            // A checked digest's hex is at least 64 ASCII characters, so this slice is in
            // bounds and on a character boundary.
            Naming::Sharded => dir.join(&hex[..2]).join(hex),
            Naming::Flat => dir.join(hex),
        }
    }
}

impl FsStore {
    /// Opens the store at `root`, creating `root`, `blobs/<algorithm>` and `ingest/` as needed.
    /// Existing blobs are kept; leftover ingests are not touched (see
    /// [`FsStore::prune_ingests`]).
    pub fn open(root: impl Into<PathBuf>) -> Result<FsStore> {
        let root = root.into();
        let layout = Layout {
            blobs: root.join("blobs"),
            ingest: root.join("ingest"),
            root,
            naming: Naming::Sharded,
        };
        for algorithm in ALGORITHMS {
            let dir = layout.algorithm_dir(algorithm);
            fs::create_dir_all(&dir).map_err(|e| ContentError::io(&dir, e))?;
        }
        fs::create_dir_all(&layout.ingest).map_err(|e| ContentError::io(&layout.ingest, e))?;
        Ok(FsStore {
            inner: Arc::new(layout),
        })
    }

    /// The blobs of the OCI image layout in directory `dir`, `blobs/<algorithm>/<hex>`, with
    /// ingests in `ingest`, which must be on the same filesystem (a directory inside `dir`, say).
    /// Nothing is created or checked until a writer needs it: `ingest` when the first writer
    /// opens, `blobs/<algorithm>` when the first blob lands. The `oci-layout` and `index.json`
    /// files are [`crate::image::layout`]'s business.
    ///
    /// Blobs written through the store keep every guarantee above. Blobs it did not write are
    /// read as they are: see the module's invariant.
    pub fn oci_layout(dir: impl Into<PathBuf>, ingest: impl Into<PathBuf>) -> FsStore {
        let root = dir.into();
        FsStore {
            inner: Arc::new(Layout {
                blobs: root.join("blobs"),
                ingest: ingest.into(),
                root,
                naming: Naming::Flat,
            }),
        }
    }

    /// The directory the store was opened at.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where the blob `digest` lives, or would live once committed:
    /// `<root>/blobs/<algorithm>/<first 2 hex>/<hex>` (`<root>/blobs/<algorithm>/<hex>` in an
    /// OCI layout). The path is computed, not checked.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner.blob_path(digest)
    }

    /// The directory that holds ingests in progress, one file per writer.
    pub fn ingest_dir(&self) -> &Path {
        &self.inner.ingest
    }

    /// Removes ingest files that have not been modified for more than `older_than`, such as
    /// those a crashed process left behind, and returns how many it removed.
    ///
    /// An ingest's modification time advances as its writer flushes data to it, so a writer
    /// that keeps writing is never stale. A writer idle for longer than `older_than` loses its
    /// file: its later `commit` fails with [`ContentError::Io`] and lands nothing. Entries of
    /// `ingest/` that are not regular files are left alone, with a warning.
    pub fn prune_ingests(&self, older_than: Duration) -> Result<usize> {
        let dir = &self.inner.ingest;
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in fs::read_dir(dir).map_err(|e| ContentError::io(dir, e))? {
            let entry = entry.map_err(|e| ContentError::io(dir, e))?;
            let path = entry.path();
            // `None`: committed, aborted or pruned since the directory was listed, or stray.
            let Some(meta) = listed_file(&path, entry.metadata())? else {
                continue;
            };
            let modified = meta.modified().map_err(|e| ContentError::io(&path, e))?;
            // A modification time in the future (clock step) counts as fresh.
            let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
            if age <= older_than {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), ?age, "pruned stale ingest");
                    removed += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ContentError::io(&path, e)),
            }
        }
        Ok(removed)
    }
}

impl Provider for FsStore {
    fn info(&self, digest: &Digest) -> Result<Info> {
        let path = self.blob_path(digest);
        let meta = fs::metadata(&path).map_err(|e| not_found_or_io(digest, &path, e))?;
        check_regular_file(&path, &meta)?;
        Ok(Info {
            digest: digest.clone(),
            size: meta.len(),
        })
    }

    fn read(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<Box<dyn Read + Send>> {
        let path = self.blob_path(digest);
        let mut file = File::open(&path).map_err(|e| not_found_or_io(digest, &path, e))?;
        let meta = file.metadata().map_err(|e| ContentError::io(&path, e))?;
        check_regular_file(&path, &meta)?;
        let (start, end) = resolve_range(digest, meta.len(), range)?;
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .map_err(|e| ContentError::io(&path, e))?;
        }
        Ok(Box::new(file.take(end - start)))
    }
}

impl Ingester for FsStore {
    /// Opens `<root>/ingest/<uuid>`, a new file that only this writer uses.
    fn writer(&self, algorithm: Algorithm) -> Result<Box<dyn ContentWriter>> {
        self.new_writer(algorithm, true)
    }

    fn writer_caller_hashed(&self, algorithm: Algorithm) -> Result<Box<dyn ContentWriter>> {
        self.new_writer(algorithm, false)
    }
}

impl FsStore {
    /// A writer into a new ingest file, hashing what it is given unless the caller does.
    fn new_writer(&self, algorithm: Algorithm, hash: bool) -> Result<Box<dyn ContentWriter>> {
        let path = self
            .inner
            .ingest
            .join(uuid::Uuid::new_v4().hyphenated().to_string());
        let create = || OpenOptions::new().write(true).create_new(true).open(&path);
        let file = match create() {
            // A layout's ingest directory is made on first use.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.inner.ingest)
                    .map_err(|e| ContentError::io(&self.inner.ingest, e))?;
                create()
            }
            other => other,
        }
        .map_err(|e| ContentError::io(&path, e))?;
        Ok(Box::new(FsWriter {
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            ingest: IngestFile { path, armed: true },
            hasher: hash.then(|| algorithm.hasher()),
            algorithm,
            written: 0,
            writeback: Writeback::from_offset(0),
            layout: Arc::clone(&self.inner),
        }))
    }
}

impl Adopter for FsStore {
    /// Moves the file into `blobs/` by `rename(2)`: one fsync of the file and of the blob's
    /// directory, no copy. With [`Verification::CallerHashed`] nothing of the file is read;
    /// with [`Verification::Rehash`] it is hashed once before it is moved.
    ///
    /// The file must be a regular file (a symbolic link is refused, never followed) of exactly
    /// `size` bytes, checked with `fstat` on the opened file. It is copied through an ingest,
    /// which hashes it whatever `verified` says, instead of moved when it is on another
    /// filesystem than the store (found out up front from the device numbers, or from an
    /// `EXDEV` rename), or when it has other hard links, through which it could change once it
    /// is a blob.
    ///
    /// Concurrent adopts and commits of the same digest are safe: each lands its own
    /// verified file, and a later rename atomically replaces the blob with identical content.
    /// An error leaves the file where it was, with its permissions, except when fsyncing the
    /// blob's directory fails after the rename: the blob is then in place, its durability
    /// unknown, and the error is returned.
    fn adopt(
        &self,
        path: &Path,
        expected: &Digest,
        size: u64,
        verified: Verification,
    ) -> Result<Info> {
        // Look before opening: opening a FIFO would block.
        let meta = fs::symlink_metadata(path).map_err(|e| ContentError::io(path, e))?;
        check_adoptable(path, &meta, expected, size)?;
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| ContentError::io(path, e))?;
        let opened = file.metadata().map_err(|e| ContentError::io(path, e))?;
        check_adoptable(path, &opened, expected, size)?;
        if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
            return Err(ContentError::io(
                path,
                io::Error::other("the file was replaced while it was being adopted"),
            ));
        }

        if verified == Verification::Rehash {
            let mut hasher = expected.algorithm().hasher();
            let read = io::copy(
                &mut BufReader::with_capacity(READ_BUFFER, &mut file),
                &mut hasher,
            )
            .map_err(|e| ContentError::io(path, e))?;
            check_expectations(hasher, read, Some(size), Some(expected))?;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| ContentError::io(path, e))?;
        }
        let info = Info {
            digest: expected.clone(),
            size,
        };

        let blobs = &self.inner.blobs;
        let store_dev = fs::metadata(blobs)
            .map_err(|e| ContentError::io(blobs, e))?
            .dev();
        if opened.dev() != store_dev || opened.nlink() != 1 {
            return adopt_by_copy(self, &mut file, path, expected, size);
        }
        let target = self.blob_path(expected);
        if blob_exists(&target)? {
            drop(file);
            remove_adopted(path);
            return Ok(info);
        }
        match land(&self.inner, &file, path, &target, expected.algorithm()) {
            Ok(()) => Ok(info),
            // A bind mount of the same filesystem also refuses the rename.
            Err(ContentError::Io { source, .. })
                if source.kind() == io::ErrorKind::CrossesDevices =>
            {
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| ContentError::io(path, e))?;
                adopt_by_copy(self, &mut file, path, expected, size)
            }
            Err(e) => Err(e),
        }
    }
}

impl Manager for FsStore {
    /// Unlinks the blob file. Readers that already opened it keep reading the old content.
    /// The `<first 2 hex>` directory is kept, so a concurrent commit into it cannot fail.
    fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        fs::remove_file(&path).map_err(|e| not_found_or_io(digest, &path, e))
    }

    /// Lists `blobs/` one `<first 2 hex>` directory at a time, in digest order. Entries that
    /// are not valid blobs (names that are not digests of the directory's algorithm, blobs
    /// under the wrong prefix, non-files) are skipped with a warning. A blob deleted while the
    /// walk runs may or may not be reported.
    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>) -> Result<()> {
        let blobs = &self.inner.blobs;
        for (name, path) in sorted_entries(blobs)? {
            if !ALGORITHMS.iter().any(|a| a.as_str() == name) {
                skip_stray(&path, "unknown algorithm");
            }
        }
        for algorithm in ALGORITHMS {
            let algorithm_dir = self.inner.algorithm_dir(algorithm);
            if self.inner.naming == Naming::Flat {
                walk_blob_dir(&algorithm_dir, algorithm, "", f)?;
                continue;
            }
            for (prefix, dir) in sorted_entries(&algorithm_dir)? {
                if !is_prefix(&prefix) || !dir.is_dir() {
                    skip_stray(&dir, "not a prefix directory");
                    continue;
                }
                walk_blob_dir(&dir, algorithm, &prefix, f)?;
            }
        }
        Ok(())
    }
}

/// Reports the blobs in `dir`, the files named by a digest of `algorithm` that starts with
/// `prefix`, in digest order.
fn walk_blob_dir(
    dir: &Path,
    algorithm: Algorithm,
    prefix: &str,
    f: &mut dyn FnMut(Info) -> Result<()>,
) -> Result<()> {
    let mut infos = Vec::new();
    for (name, path) in sorted_entries(dir)? {
        let digest = match Digest::from_parts(algorithm, &name) {
            Ok(digest) if name.starts_with(prefix) => digest,
            _ => {
                skip_stray(&path, "not a digest under its prefix");
                continue;
            }
        };
        let Some(meta) = listed_file(&path, fs::symlink_metadata(&path))? else {
            continue;
        };
        infos.push(Info {
            digest,
            size: meta.len(),
        });
    }
    // Names were sorted as strings and are all lowercase hex of one length, so `infos` is
    // already in digest order.
    for info in infos {
        f(info)?;
    }
    Ok(())
}

/// The info of a caller-hashed ingest: the caller's digest (required, of the writer's
/// algorithm) and the bytes written, checked against the expected size.
fn caller_hashed(
    algorithm: Algorithm,
    written: u64,
    expected_size: Option<u64>,
    expected: Option<&Digest>,
) -> Result<Info> {
    let Some(expected) = expected else {
        return Err(ContentError::io(
            "<ingest>",
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "an ingest the caller hashes is committed with its digest",
            ),
        ));
    };
    if expected.algorithm() != algorithm {
        return Err(ContentError::AlgorithmMismatch {
            algorithm,
            expected: expected.clone(),
        });
    }
    if let Some(expected_size) = expected_size {
        if expected_size != written {
            return Err(ContentError::SizeMismatch {
                digest: expected.clone(),
                expected: expected_size,
                actual: written,
            });
        }
    }
    Ok(Info {
        digest: expected.clone(),
        size: written,
    })
}

/// Starts the writeback of bytes `from..to` of `file` (the whole file when `to` is 0) without
/// waiting for it: the disk then works while the writer goes on, and the fsync that makes the
/// bytes durable later (a blob's commit, an upload's completion, a snapshot's sync) finds
/// little left to write. A hint: failures are ignored.
pub fn start_writeback(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    let len = if to == 0 { 0 } else { to.saturating_sub(from) };
    let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for as long as `file` lives; the call only reads it.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Every this many bytes, a [`Writeback`] starts the writeback of what the file has so far.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Starts the writeback of a file as it grows, every [`WRITEBACK_STEP`] bytes
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), so that the disk works
/// while the writer does and the fsync that later makes the file durable finds little left to
/// write. Blob ingests and the registry's uploads use it.
#[derive(Debug)]
pub struct Writeback {
    /// Where the bytes not yet handed to the kernel's writeback start.
    from: u64,
}

impl Writeback {
    /// For a file whose writes start at `offset`.
    pub fn from_offset(offset: u64) -> Writeback {
        Writeback { from: offset }
    }

    /// Notes that `file` now holds the bytes up to `end` (not counting what a buffer in front
    /// of it still holds), and starts their writeback once there are enough of them.
    pub fn advance(&mut self, file: &File, end: u64) {
        if end.saturating_sub(self.from) >= WRITEBACK_STEP {
            start_writeback(file, self.from, end);
            self.from = end;
        }
    }
}

/// An ingest into an [`FsStore`]: a file `<root>/ingest/<uuid>` plus a running hash.
///
/// Bytes are hashed as they are accepted and buffered into the file. `commit` verifies, fsyncs
/// and renames the file into `blobs/`; `abort`, a failed `commit` or dropping the writer removes
/// it.
#[derive(Debug)]
pub struct FsWriter {
    // Declared before `ingest` so the file is closed before the guard removes it.
    file: BufWriter<File>,
    ingest: IngestFile,
    /// `None` when the caller hashes the bytes itself ([`Ingester::writer_caller_hashed`]).
    hasher: Option<Hasher>,
    algorithm: Algorithm,
    written: u64,
    writeback: Writeback,
    layout: Arc<Layout>,
}

impl Write for FsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        // Only what the file accepted is part of the content.
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.written += n as u64;
        let on_file = self.written - self.file.buffer().len() as u64;
        self.writeback.advance(self.file.get_ref(), on_file);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl ContentWriter for FsWriter {
    fn written(&self) -> u64 {
        self.written
    }

    fn commit(
        self: Box<Self>,
        expected_size: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<Info> {
        let FsWriter {
            file,
            ingest,
            hasher,
            algorithm,
            written,
            layout,
            ..
        } = *self;
        // On every early return below, `ingest` is dropped and removes the temporary file.
        let file = file
            .into_inner()
            .map_err(|e| ContentError::io(&ingest.path, e.into_error()))?;
        let info = match hasher {
            Some(hasher) => check_expectations(hasher, written, expected_size, expected)?,
            None => caller_hashed(algorithm, written, expected_size, expected)?,
        };
        let target = layout.blob_path(&info.digest);
        if blob_exists(&target)? {
            drop(file);
            return Ok(info);
        }
        land(
            &layout,
            &file,
            &ingest.path,
            &target,
            info.digest.algorithm(),
        )?;
        drop(file);
        ingest.disarm();
        Ok(info)
    }

    fn abort(self: Box<Self>) -> Result<()> {
        let FsWriter { file, ingest, .. } = *self;
        // Close the file without flushing what is still buffered: it is being thrown away.
        let (file, _unflushed) = file.into_parts();
        drop(file);
        ingest.remove()
    }
}

/// Removes its ingest file when dropped, unless disarmed after the file was renamed away.
#[derive(Debug)]
struct IngestFile {
    path: PathBuf,
    armed: bool,
}

impl IngestFile {
    fn disarm(mut self) {
        self.armed = false;
    }

    /// Removes the file now, reporting failure. A file that is already gone (pruned) is fine.
    fn remove(mut self) -> Result<()> {
        self.armed = false;
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContentError::io(&self.path, e)),
        }
    }
}

impl Drop for IngestFile {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(
                    path = %self.path.display(),
                    error = %e,
                    "could not remove discarded ingest"
                );
            }
        }
    }
}

/// Lands the verified file `file`, open on `from`, as the blob at `target`: makes it
/// read-only, fsyncs it, renames it into place and fsyncs the directory the rename changed
/// (and `blobs/<algorithm>` when the prefix directory is new). A concurrent commit of the same
/// content may land first; the rename then atomically replaces that file with an identical,
/// verified one.
///
/// When the rename fails, the file is still at `from` with its permissions restored. When
/// fsyncing a directory fails, the blob is in place but its durability is unknown.
fn land(
    layout: &Layout,
    file: &File,
    from: &Path,
    target: &Path,
    algorithm: Algorithm,
) -> Result<()> {
    let original = file
        .metadata()
        .map_err(|e| ContentError::io(from, e))?
        .permissions();
    let restore = |e: io::Error| {
        if let Err(restoring) = file.set_permissions(original.clone()) {
            tracing::warn!(
                path = %from.display(),
                error = %restoring,
                "could not restore the permissions of a file that did not land"
            );
        }
        ContentError::io(from, e)
    };
    let mut readonly = original.clone();
    readonly.set_readonly(true);
    file.set_permissions(readonly)
        .map_err(|e| ContentError::io(from, e))?;
    file.sync_all().map_err(restore)?;

    // `blob_path` always has `<algorithm>/<prefix>` (or, in an OCI layout, `blobs/<algorithm>`)
    // above the file.
    let blob_dir = target
        .parent()
        .ok_or_else(|| ContentError::io(target, io::Error::other("blob path has no parent")))?;
    let created_dir = match ensure_dir(blob_dir) {
        Ok(created) => created,
        Err(e) => {
            let _ = file.set_permissions(original.clone());
            return Err(e);
        }
    };
    fs::rename(from, target).map_err(restore)?;
    sync_dir(blob_dir)?;
    if created_dir {
        match layout.naming {
            Naming::Sharded => sync_dir(&layout.algorithm_dir(algorithm))?,
            Naming::Flat => sync_dir(&layout.blobs)?,
        }
    }
    Ok(())
}

fn not_found_or_io(digest: &Digest, path: &Path, e: io::Error) -> ContentError {
    if e.kind() == io::ErrorKind::NotFound {
        ContentError::NotFound(digest.clone())
    } else {
        ContentError::io(path, e)
    }
}

fn check_regular_file(path: &Path, meta: &fs::Metadata) -> Result<()> {
    if meta.is_file() {
        Ok(())
    } else {
        Err(ContentError::io(
            path,
            io::Error::new(io::ErrorKind::InvalidData, "blob is not a regular file"),
        ))
    }
}

fn blob_exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(meta) => {
            check_regular_file(path, &meta)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ContentError::io(path, e)),
    }
}

/// Creates `dir` if it is missing and returns whether it did. Losing a creation race to another
/// writer is not an error.
fn ensure_dir(dir: &Path) -> Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // `blobs/<algorithm>` itself went missing behind the store's back.
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(dir)
            .map(|()| true)
            .map_err(|e| ContentError::io(dir, e)),
        Err(e) => Err(ContentError::io(dir, e)),
    }
}

/// The metadata of a listed directory entry that should be a regular file: `None` when it is
/// gone since the listing, or is not a regular file (logged as stray).
fn listed_file(path: &Path, meta: io::Result<fs::Metadata>) -> Result<Option<fs::Metadata>> {
    match meta {
        Ok(meta) if meta.is_file() => Ok(Some(meta)),
        Ok(_) => {
            skip_stray(path, "not a regular file");
            Ok(None)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ContentError::io(path, e)),
    }
}

/// Logs an entry of the store's directories that is not what the layout puts there.
fn skip_stray(path: &Path, reason: &'static str) {
    tracing::warn!(path = %path.display(), reason, "skipping stray entry in content store");
}

/// Makes the entries of `dir` durable (a rename or creation inside it).
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ContentError::io(dir, e))
}

/// Directories cannot be opened for fsync here; the platform's rename durability applies.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

/// The entries of `dir` as (name, path), sorted by name. A missing directory has no entries.
/// Names that are not UTF-8 cannot be digests or prefixes: they are skipped with a warning.
fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ContentError::io(dir, e)),
    };
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| ContentError::io(dir, e))?;
        let path = entry.path();
        match entry.file_name().into_string() {
            Ok(name) => entries.push((name, path)),
            Err(_) => {
                skip_stray(&path, "name is not UTF-8");
            }
        }
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// Whether `name` is a `<first 2 hex>` directory name.
fn is_prefix(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::sha256(b"range")
    }

    /// A caller-hashed ingest lands under the caller's digest, needs that digest, and still
    /// checks the size and the algorithm.
    #[test]
    fn caller_hashed_writers_take_the_callers_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let data = b"layer bytes";
        let d = Digest::sha256(data);

        let mut w = store.writer_caller_hashed(Algorithm::Sha256).unwrap();
        w.write_all(data).unwrap();
        let info = w.commit(Some(data.len() as u64), Some(&d)).unwrap();
        assert_eq!(info.digest, d);
        let mut back = Vec::new();
        store
            .read(&d, None)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);

        let mut w = store.writer_caller_hashed(Algorithm::Sha256).unwrap();
        w.write_all(b"other").unwrap();
        assert!(w.commit(None, None).is_err(), "the digest is required");
        let mut w = store.writer_caller_hashed(Algorithm::Sha256).unwrap();
        w.write_all(b"other").unwrap();
        let e = w
            .commit(Some(4), Some(&Digest::sha256(b"other")))
            .unwrap_err();
        assert!(matches!(e, ContentError::SizeMismatch { .. }), "{e}");
        let mut w = store.writer_caller_hashed(Algorithm::Sha256).unwrap();
        w.write_all(b"other").unwrap();
        let sha512 = Digest::of(Algorithm::Sha512, b"other");
        let e = w.commit(None, Some(&sha512)).unwrap_err();
        assert!(matches!(e, ContentError::AlgorithmMismatch { .. }), "{e}");
        let ingests = fs::read_dir(dir.path().join("ingest")).unwrap().count();
        assert_eq!(ingests, 0, "failed commits leave no ingest behind");
    }

    #[test]
    fn algorithms_are_in_digest_order() {
        let mut sorted = ALGORITHMS;
        sorted.sort();
        assert_eq!(sorted, ALGORITHMS);
        let a = Digest::of(Algorithm::Sha256, b"x");
        let b = Digest::of(Algorithm::Sha512, b"x");
        assert!(a < b);
    }

    #[test]
    fn resolve_range_clamps_and_refuses() {
        let d = digest();
        assert_eq!(resolve_range(&d, 10, None).unwrap(), (0, 10));
        assert_eq!(resolve_range(&d, 10, Some(2..5)).unwrap(), (2, 5));
        assert_eq!(resolve_range(&d, 10, Some(2..50)).unwrap(), (2, 10));
        assert_eq!(resolve_range(&d, 10, Some(10..10)).unwrap(), (10, 10));
        assert_eq!(resolve_range(&d, 0, Some(0..1)).unwrap(), (0, 0));
        assert!(matches!(
            resolve_range(&d, 10, Some(11..20)),
            Err(ContentError::InvalidRange {
                start: 11,
                end: 20,
                size: 10,
                ..
            })
        ));
        assert!(matches!(
            resolve_range(&d, 10, Some(Range { start: 5, end: 4 })),
            Err(ContentError::InvalidRange {
                start: 5,
                end: 4,
                ..
            })
        ));
    }

    #[test]
    fn expectations_are_checked_algorithm_then_size_then_digest() {
        let hash = |data: &[u8], alg: Algorithm| {
            let mut h = alg.hasher();
            h.update(data);
            h
        };
        let right = Digest::sha256(b"abc");
        let wrong = Digest::sha256(b"abd");
        let sha512 = Digest::of(Algorithm::Sha512, b"abc");

        let info =
            check_expectations(hash(b"abc", Algorithm::Sha256), 3, Some(3), Some(&right)).unwrap();
        assert_eq!(
            info,
            Info {
                digest: right.clone(),
                size: 3
            }
        );
        let info = check_expectations(hash(b"abc", Algorithm::Sha256), 3, None, None).unwrap();
        assert_eq!(info.digest, right);

        assert!(matches!(
            check_expectations(hash(b"abc", Algorithm::Sha256), 3, Some(4), Some(&sha512)),
            Err(ContentError::AlgorithmMismatch {
                algorithm: Algorithm::Sha256,
                ..
            })
        ));
        match check_expectations(hash(b"abc", Algorithm::Sha256), 3, Some(4), Some(&wrong)) {
            Err(ContentError::SizeMismatch {
                digest,
                expected: 4,
                actual: 3,
            }) => {
                assert_eq!(digest, wrong)
            }
            other => panic!("expected SizeMismatch, got {other:?}"),
        }
        match check_expectations(hash(b"abc", Algorithm::Sha256), 3, Some(3), Some(&wrong)) {
            Err(ContentError::DigestMismatch { expected, actual }) => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, right);
            }
            other => panic!("expected DigestMismatch, got {other:?}"),
        }
    }

    #[test]
    fn prefixes_are_two_lowercase_hex() {
        assert!(is_prefix("ab"));
        assert!(is_prefix("09"));
        assert!(!is_prefix("AB"));
        assert!(!is_prefix("abc"));
        assert!(!is_prefix("g0"));
        assert!(!is_prefix(""));
    }

    #[test]
    fn oci_layout_names_blobs_flat_and_makes_directories_on_first_write() {
        let dir = tempfile::tempdir().unwrap();
        let ingest = dir.path().join(".ingest");
        let store = FsStore::oci_layout(dir.path(), &ingest);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let one = store.ingest_bytes(b"one").unwrap();
        let two = store.ingest_bytes(b"two").unwrap();
        assert_eq!(
            store.blob_path(&one.digest),
            dir.path().join("blobs/sha256").join(one.digest.hex())
        );
        assert_eq!(fs::read(store.blob_path(&two.digest)).unwrap(), b"two");
        assert_eq!(fs::read_dir(&ingest).unwrap().count(), 0);
        let mut walked = Vec::new();
        store
            .walk(&mut |info| {
                walked.push(info.digest);
                Ok(())
            })
            .unwrap();
        let mut expected = vec![one.digest, two.digest];
        expected.sort();
        assert_eq!(walked, expected);
    }

    #[test]
    fn open_creates_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("nested/store");
        let store = FsStore::open(&root).unwrap();
        assert_eq!(store.root(), root);
        assert!(root.join("blobs/sha256").is_dir());
        assert!(root.join("blobs/sha512").is_dir());
        assert_eq!(store.ingest_dir(), root.join("ingest"));
        assert!(store.ingest_dir().is_dir());
        // Opening again keeps what is there.
        let info = store.ingest_bytes(b"kept").unwrap();
        let again = FsStore::open(&root).unwrap();
        assert_eq!(again.read_all(&info.digest).unwrap(), b"kept");
    }

    #[test]
    fn committed_blobs_are_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let info = store.ingest_bytes(b"sealed").unwrap();
        let perms = fs::metadata(store.blob_path(&info.digest))
            .unwrap()
            .permissions();
        assert!(perms.readonly());
    }
}
