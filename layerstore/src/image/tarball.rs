//! Tar plumbing shared by the OCI layout archive and docker-archive: safe member names,
//! deterministic headers, and readers that hash and count what passes through them.

use std::io::{self, Read, Write};

use crate::digest::{Digest, Hasher};
use crate::image::{ImageError, Result};
use crate::media::Compression;

/// Largest JSON member (manifest.json, index.json, ...) read into memory.
pub(crate) const MAX_JSON: u64 = 16 << 20;

/// Normalizes an archive member name: strips `./` and empty components, and refuses absolute
/// names and any `..` component. The archive root itself normalizes to `""`.
pub(crate) fn normalize_member(raw: &str) -> Result<String> {
    if raw.starts_with('/') {
        return Err(ImageError::UnsafePath {
            member: raw.to_owned(),
        });
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(ImageError::UnsafePath {
                    member: raw.to_owned(),
                });
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// The member name of a tar entry, normalized.
pub(crate) fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String> {
    let path = entry.path_bytes();
    let raw = std::str::from_utf8(&path).map_err(|_| ImageError::BadMember {
        member: String::from_utf8_lossy(&path).into_owned(),
        reason: "member name is not UTF-8".into(),
    })?;
    normalize_member(raw)
}

/// Resolves the target of a link member to a member name. A symlink's target is relative to
/// the directory holding the link; a hard link's is relative to the archive root. Targets that
/// are absolute or climb out of the archive are refused.
pub(crate) fn link_target(member: &str, target: &[u8], hard: bool) -> Result<String> {
    let unsafe_path = || ImageError::UnsafePath {
        member: format!("{member} -> {}", String::from_utf8_lossy(target)),
    };
    let target = std::str::from_utf8(target).map_err(|_| unsafe_path())?;
    if target.starts_with('/') {
        return Err(unsafe_path());
    }
    let mut parts: Vec<&str> = if hard {
        Vec::new()
    } else {
        let mut p: Vec<&str> = member.split('/').collect();
        p.pop();
        p
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or_else(unsafe_path)?;
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Reads a member into memory, refusing members larger than [`MAX_JSON`].
pub(crate) fn read_small<R: Read>(entry: &mut tar::Entry<'_, R>, member: &str) -> Result<Vec<u8>> {
    let size = entry.header().size().unwrap_or(0);
    if size > MAX_JSON {
        return Err(ImageError::BadMember {
            member: member.to_owned(),
            reason: format!("{size} bytes is too large for a metadata file"),
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry
        .take(MAX_JSON + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ImageError::io(member, e))?;
    Ok(buf)
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Appends a directory entry with fixed metadata.
pub(crate) fn append_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    let name = format!("{}/", name.trim_end_matches('/'));
    tar.append_data(&mut h, &name, io::empty())
        .map_err(|e| ImageError::io(&name, e))
}

/// Appends a regular file of exactly `size` bytes from `data`, with fixed metadata. The data
/// is cut at `size`; a reader that ends early is an error.
pub(crate) fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    data: impl Read,
) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, size, 0o644);
    let mut counted = CountingReader {
        inner: data.take(size),
        count: 0,
    };
    tar.append_data(&mut h, name, &mut counted)
        .map_err(|e| ImageError::io(name, e))?;
    if counted.count != size {
        return Err(ImageError::SizeMismatch {
            what: name.to_owned(),
            expected: size,
            actual: counted.count,
        });
    }
    Ok(())
}

/// Appends an in-memory file.
pub(crate) fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
) -> Result<()> {
    append_file(tar, name, data.len() as u64, data)
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// A reader that hashes and counts the bytes read through it.
///
/// Once more than [`BACKGROUND_HASH_AFTER`] bytes have gone through, the hashing moves to a
/// thread of its own, fed in [`HASH_CHUNK`] pieces over a short channel: copying a big blob
/// out of the store (into an archive or a layout) then costs about the larger of reading and
/// writing or hashing, not their sum. Small blobs (configs, manifests) are hashed inline.
pub(crate) struct HashingReader<R> {
    inner: R,
    state: HashState,
    pending: Vec<u8>,
    count: u64,
}

/// Bytes hashed inline before the hashing moves to its own thread.
const BACKGROUND_HASH_AFTER: u64 = 1 << 20;
/// The pieces the background hasher gets.
const HASH_CHUNK: usize = 1 << 20;
/// Pieces in flight at most (bounded memory).
const HASH_QUEUE: usize = 4;

enum HashState {
    Inline(Hasher),
    Background {
        pieces: std::sync::mpsc::SyncSender<Vec<u8>>,
        worker: std::thread::JoinHandle<Hasher>,
    },
    /// Only while switching from one to the other.
    Switching,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R, hasher: Hasher) -> Self {
        HashingReader {
            inner,
            state: HashState::Inline(hasher),
            pending: Vec::new(),
            count: 0,
        }
    }

    /// The digest and length of what was read.
    pub(crate) fn finish(mut self) -> (Digest, u64) {
        let hasher = match std::mem::replace(&mut self.state, HashState::Switching) {
            HashState::Inline(hasher) => hasher,
            HashState::Background { pieces, worker } => {
                if !self.pending.is_empty() {
                    // A send fails only if the worker is gone, which `join` reports.
                    let _ = pieces.send(std::mem::take(&mut self.pending));
                }
                drop(pieces);
                worker.join().expect("the hashing thread does not panic")
            }
            HashState::Switching => unreachable!("a HashingReader is never left switching"),
        };
        (hasher.finish(), self.count)
    }

    fn hash(&mut self, data: &[u8]) {
        match &mut self.state {
            HashState::Inline(hasher) => {
                hasher.update(data);
                if self.count > BACKGROUND_HASH_AFTER {
                    let HashState::Inline(mut hasher) =
                        std::mem::replace(&mut self.state, HashState::Switching)
                    else {
                        unreachable!()
                    };
                    let (pieces, queue) = std::sync::mpsc::sync_channel::<Vec<u8>>(HASH_QUEUE);
                    let worker = std::thread::Builder::new()
                        .name("berth-hash".into())
                        .spawn(move || {
                            for piece in queue {
                                hasher.update(&piece);
                            }
                            hasher
                        })
                        .expect("spawning the hashing thread");
                    self.state = HashState::Background { pieces, worker };
                    self.pending = Vec::with_capacity(HASH_CHUNK);
                }
            }
            HashState::Background { pieces, .. } => {
                self.pending.extend_from_slice(data);
                if self.pending.len() >= HASH_CHUNK {
                    let piece =
                        std::mem::replace(&mut self.pending, Vec::with_capacity(HASH_CHUNK));
                    // A send fails only if the worker is gone, which `finish` reports.
                    let _ = pieces.send(piece);
                }
            }
            HashState::Switching => unreachable!("a HashingReader is never left switching"),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        self.hash(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod hashing_tests {
    use super::*;
    use crate::digest::Algorithm;

    /// Inline and background hashing give the digest of everything read, whatever the size
    /// of the reads.
    #[test]
    fn hashes_small_and_big_inputs_alike() {
        for len in [0usize, 1, 1 << 20, (1 << 20) + 1, 5 * (1 << 20) + 12345] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            for read_size in [7usize, 8192, 3 << 20] {
                let mut reader = HashingReader::new(&data[..], Algorithm::Sha256.hasher());
                let mut buf = vec![0; read_size];
                while reader.read(&mut buf).unwrap() > 0 {}
                let (digest, count) = reader.finish();
                assert_eq!(count, len as u64);
                assert_eq!(
                    digest,
                    Digest::sha256(&data),
                    "len {len}, reads of {read_size}"
                );
            }
        }
    }
}

/// Wraps `reader` in a decompressor for `compression`.
pub(crate) fn decompress<'a>(
    compression: Compression,
    reader: Box<dyn Read + Send + 'a>,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match compression {
        Compression::None => reader,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_member_names() {
        assert_eq!(normalize_member("./index.json").unwrap(), "index.json");
        assert_eq!(normalize_member("blobs//sha256/").unwrap(), "blobs/sha256");
        assert_eq!(normalize_member("./").unwrap(), "");
        for bad in ["/etc/passwd", "../x", "blobs/../../x", "a/.."] {
            assert!(matches!(
                normalize_member(bad),
                Err(ImageError::UnsafePath { .. })
            ));
        }
    }

    #[test]
    fn resolves_links_inside_the_archive() {
        assert_eq!(
            link_target("abc/layer.tar", b"../def.tar", false).unwrap(),
            "def.tar"
        );
        assert_eq!(
            link_target("abc/layer.tar", b"def/layer.tar", true).unwrap(),
            "def/layer.tar"
        );
        assert!(link_target("abc/layer.tar", b"../../etc/passwd", false).is_err());
        assert!(link_target("layer.tar", b"/etc/passwd", false).is_err());
        assert!(link_target("x", b"../y", true).is_err());
    }
}
