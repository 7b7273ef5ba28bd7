//! State files: an exclusive `flock(2)` lock and atomic JSON writes.
//!
//! Every file this module keeps is rewritten whole, through a temporary file in the same
//! directory that is synced and renamed into place, so that a crash leaves either the old
//! content or the new, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Error;
use crate::files::{self, Durability};

/// An exclusive lock on a file, held until it is dropped. Locks of different open files
/// exclude each other whether they belong to one process or to several, so threads that each
/// take the lock are serialised too.
#[derive(Debug)]
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock, waiting for it; creates the file if it is missing.
    pub(crate) fn exclusive(path: &Path) -> Result<Lock, Error> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        loop {
            // SAFETY: flock on a descriptor this function owns; it has no memory effects.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Lock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(Error::io("lock", path, err));
            }
        }
    }
}

/// Reads a JSON file; `None` when it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::State {
                path: path.to_owned(),
                source,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Writes a JSON file atomically: temporary file, `fsync`, rename, `fsync` of the directory.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::State {
        path: path.to_owned(),
        source,
    })?;
    bytes.push(b'\n');
    files::replace(path, &bytes, Durability::Durable).map_err(|e| Error::io("write", path, e))
}

/// Removes a file; a missing one is fine.
pub(crate) fn remove_file(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Creates a directory and its parents.
pub(crate) fn create_dir(path: &Path) -> Result<(), Error> {
    fs::create_dir_all(path).map_err(|e| Error::io("create", path, e))
}
