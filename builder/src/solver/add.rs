//! What `ADD` does beyond COPY: it unpacks local tar archives, and downloads http(s) URLs.
//!
//! # Archives
//!
//! A local source is an archive when docker would unpack it: its content, not its name, says
//! so. It may be compressed (gzip, bzip2, xz or zstd, told by their magic bytes, as docker's
//! `DecompressStream`), and the first header of the (decompressed) tar stream must be a valid
//! one: Go's `tar.Reader.Next` must succeed, which comes down to a non-zero first block whose
//! checksum is right. Anything else, a gzipped text file for one, is copied as it is.
//!
//! An archive is unpacked into the destination (a directory, made as COPY makes the
//! directories it needs, with the `--chown` owner; `--chown` and `--chmod` do nothing else to
//! an archive), the way docker's `archive.Unpack` does it in a chroot at the destination: an
//! entry replaces what is there, unless both are directories (then the directory takes the
//! entry's metadata); owners, modes (setuid and friends included), mtimes and `SCHILY.xattr`
//! attributes come from the archive; missing parent directories are made `0755` and owned by
//! root; hard links link to paths of the destination.
//!
//! Every path is resolved inside the destination, symlinks followed as in that chroot, so
//! nothing outside it is ever touched. An entry or hard link target that climbs out with `..`
//! is refused (docker's breakout error); an absolute entry path lands below the destination.
//!
//! The layer applier of `berth_layerstore::archive` is not used here: it refuses paths through
//! symlinks (a `lib/...` entry onto a base whose `/lib` is a symlink, which docker follows)
//! and reads `.wh.` entries as whiteouts (docker unpacks them as plain files), both right for
//! layers and wrong for ADD.
//!
//! # URLs
//!
//! `ADD http(s)://...` downloads the file as BuildKit's HTTP source does: it is named after the
//! last segment of the URL's path (query and fragment left out, `__unnamed__` when there is
//! none), mode `0600`, owned by root, its mtime the response's `Last-Modified` (or the epoch),
//! and then copied like a local file; a remote archive is not unpacked unless `--unpack=true`.
//! `--checksum=<algorithm>:<hex>` (sha256, sha384 or sha512) is checked against the bytes
//! downloaded, and a mismatch fails the step. Git sources are not supported yet.

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use sha2::Digest as _;

use super::copy::{mkdir_all, mknod, resolve_in_root, set_times};
use crate::context::{FileKind, Timestamp};

/// How a local archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    /// A plain tar.
    None,
    /// gzip (`1f 8b 08`).
    Gzip,
    /// bzip2 (`BZh`).
    Bzip2,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// The compression the first bytes of a file tell, as docker's `DetectCompression`.
    pub(super) fn detect(head: &[u8]) -> Compression {
        if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0x1f, 0x8b, 0x08]) {
            Compression::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// A reader of the decompressed bytes of `input`.
    fn decoder<'a>(self, input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(input),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
            Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(input)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
        })
    }
}

/// Whether the file at `path` is an archive `ADD` unpacks, and how it is compressed.
pub(super) fn archive_compression(path: &Path) -> io::Result<Option<Compression>> {
    let mut file = fs::File::open(path)?;
    let mut head = [0u8; 6];
    let n = read_up_to(&mut file, &mut head)?;
    let compression = Compression::detect(&head[..n]);
    let Ok(mut decoded) = compression.decoder(BufReader::new((&head[..n]).chain(file))) else {
        return Ok(None);
    };
    // Go's reader looks at one block, and at a second one when the first is all zeros.
    let mut blocks = [0u8; 1024];
    let Ok(n) = read_up_to(&mut decoded, &mut blocks) else {
        return Ok(None);
    };
    Ok(is_tar_start(&blocks[..n]).then_some(compression))
}

fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether `data` (the first bytes of a stream) starts with a tar header Go's `tar.Reader`
/// accepts: a whole block that is not all zeros (two zero blocks are the end of an empty
/// archive, one zero block and then anything else is a bad header) with a valid checksum.
pub(super) fn is_tar_start(data: &[u8]) -> bool {
    let Some(block) = data.get(..512) else {
        return false;
    };
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text = String::from_utf8_lossy(field);
    let text = text.trim_matches([' ', '\0']);
    let Ok(recorded) = (if text.is_empty() {
        Ok(0)
    } else {
        i64::from_str_radix(text, 8)
    }) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    recorded == unsigned || recorded == signed
}

/// Unpacks the archive at `archive` into the directory `dest` (absolute, inside the container
/// whose root is `root`), which is made first with `owner` for what it creates.
pub(super) fn unpack(
    root: &Path,
    dest: &Path,
    owner: (u32, u32),
    archive: &Path,
    compression: Compression,
) -> Result<(), String> {
    let shown = archive.file_name().unwrap_or_default().to_string_lossy();
    mkdir_all(root, dest, owner).map_err(|e| format!("{}: {e}", dest.display()))?;
    let dest_host = resolve_in_root(root, dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let file = fs::File::open(archive).map_err(|e| format!("{shown}: {e}"))?;
    let reader = compression
        .decoder(BufReader::with_capacity(256 << 10, file))
        .map_err(|e| format!("{shown}: {e}"))?;
    Unpacker::new(&dest_host)
        .run(reader)
        .map_err(|e| format!("unpacking {shown} into {}: {e}", dest.display()))
}

/// What one archive entry sets, PAX records applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timestamp,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// The state of one unpack: the destination (the chroot) and the directories whose mtimes are
/// set at the end.
struct Unpacker<'d> {
    dest: &'d Path,
    dirs: Vec<(PathBuf, Timestamp)>,
    /// Host paths of directories already resolved, by path inside the destination. Only a
    /// removal can change what an existing directory path resolves to, so removals clear it.
    resolved: std::collections::HashMap<String, PathBuf>,
}

impl<'d> Unpacker<'d> {
    fn new(dest: &'d Path) -> Self {
        Unpacker {
            dest,
            dirs: Vec::new(),
            resolved: std::collections::HashMap::new(),
        }
    }

    fn run(mut self, reader: impl Read) -> io::Result<()> {
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries()? {
            let mut entry = entry?;
            self.entry(&mut entry)?;
        }
        for (dir, mtime) in &self.dirs {
            set_times(dir, *mtime)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> io::Result<()> {
        let header = entry.header().clone();
        let mut kind = header.entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let Some(parts) = clean(&raw) else {
            return Err(breakout(&shown));
        };
        if kind == tar::EntryType::Regular && raw.ends_with(b"/") {
            // Old tars mark directories with the trailing slash alone.
            kind = tar::EntryType::Directory;
        }
        let meta = meta(entry, &header)?;
        let Some((name, parents)) = parts.split_last() else {
            // The destination itself, which exists as a directory: docker leaves it alone.
            return Ok(());
        };
        let parent = self.dir(&parents.join("/"))?;
        let path = parent.join(name);
        let existing = fs::symlink_metadata(&path).ok();
        let existing_dir = existing.as_ref().is_some_and(fs::Metadata::is_dir);
        if let Some(md) = &existing {
            if !(md.is_dir() && kind.is_dir()) {
                self.resolved.clear();
                if md.is_dir() {
                    fs::remove_dir_all(&path)?;
                } else {
                    fs::remove_file(&path)?;
                }
            }
        }
        let mut link_to_symlink = false;
        match kind {
            tar::EntryType::Directory => {
                if !existing_dir {
                    fs::DirBuilder::new()
                        .mode(meta.mode & 0o777)
                        .create(&path)?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(meta.mode & 0o777)
                    .open(&path)?;
                io::copy(entry, &mut file)?;
                file.flush()?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| {
                        io::Error::other(format!("{shown}: hard link without a target"))
                    })?
                    .into_owned();
                let Some(target_parts) = clean(&target) else {
                    return Err(breakout(&String::from_utf8_lossy(&target)));
                };
                let Some((target_name, target_parents)) = target_parts.split_last() else {
                    return Err(io::Error::other(format!(
                        "{shown}: hard link to the destination directory"
                    )));
                };
                let target_parent =
                    resolve_in_root(self.dest, &Path::new("/").join(target_parents.join("/")))?;
                let target_host = target_parent.join(target_name);
                link_to_symlink =
                    fs::symlink_metadata(&target_host).is_ok_and(|m| m.file_type().is_symlink());
                fs::hard_link(&target_host, &path)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| io::Error::other(format!("{shown}: symlink without a target")))?
                    .into_owned();
                symlink(target, &path)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let node = match kind {
                    tar::EntryType::Char => FileKind::CharDevice,
                    tar::EntryType::Block => FileKind::BlockDevice,
                    _ => FileKind::Fifo,
                };
                let major = header.device_major()?.unwrap_or(0);
                let minor = header.device_minor()?.unwrap_or(0);
                mknod(&path, node, meta.mode, libc::makedev(major, minor))?;
            }
            other => {
                return Err(io::Error::other(format!(
                    "{shown}: unhandled tar header type {:?}",
                    other.as_byte() as char
                )));
            }
        }
        let is_symlink = kind == tar::EntryType::Symlink;
        lchown(&path, Some(meta.uid), Some(meta.gid))?;
        for (name, value) in &meta.xattrs {
            // What the file system refuses is skipped, as docker does.
            let _ = xattr::set(&path, name, value);
        }
        if !is_symlink && !link_to_symlink {
            fs::set_permissions(&path, fs::Permissions::from_mode(meta.mode))?;
        }
        if kind.is_dir() {
            self.dirs.push((path, meta.mtime));
        } else if !link_to_symlink {
            set_times(&path, meta.mtime)?;
        }
        Ok(())
    }

    /// The host path of the directory `rel` (inside the destination, `/`-separated), made
    /// (`0755`, root) when it is missing, as docker makes the parents of an entry.
    fn dir(&mut self, rel: &str) -> io::Result<PathBuf> {
        if let Some(host) = self.resolved.get(rel) {
            return Ok(host.clone());
        }
        let inside = Path::new("/").join(rel);
        let mut host = resolve_in_root(self.dest, &inside)?;
        match fs::symlink_metadata(&host) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", inside.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                mkdir_all(self.dest, &inside, (0, 0))?;
                host = resolve_in_root(self.dest, &inside)?;
            }
            Err(e) => return Err(e),
        }
        self.resolved.insert(rel.to_owned(), host.clone());
        Ok(host)
    }
}

fn breakout(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{name:?} is outside of the destination"),
    )
}

/// An entry's path as Go's `filepath.Clean` leaves it, split into its components: `.` and
/// empty components dropped, `..` resolved; a leading `/` means the destination. `None` when
/// the path climbs above the destination.
pub(super) fn clean(raw: &[u8]) -> Option<Vec<String>> {
    let text = String::from_utf8_lossy(raw);
    let mut parts: Vec<String> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other.to_owned()),
        }
    }
    Some(parts)
}

/// The metadata of an entry: the header's, with PAX `uid`, `gid`, `mtime` and `SCHILY.xattr.*`
/// records applied.
fn meta<R: Read>(entry: &mut tar::Entry<'_, R>, header: &tar::Header) -> io::Result<Meta> {
    let old = header.as_old();
    let id = |field: &[u8]| {
        u32::try_from(go_numeric(field)?).map_err(|_| io::Error::other("uid or gid out of range"))
    };
    let mut meta = Meta {
        mode: (go_numeric(&old.mode)? & 0o7777) as u32,
        uid: id(&old.uid)?,
        gid: id(&old.gid)?,
        mtime: Timestamp {
            secs: i64::try_from(go_numeric(&old.mtime)?).unwrap_or(0),
            nanos: 0,
        },
        xattrs: Vec::new(),
    };
    if let Some(records) = entry.pax_extensions()? {
        for record in records {
            let record = record?;
            let Ok(key) = record.key() else {
                continue;
            };
            let value = record.value().unwrap_or_default();
            match key {
                "uid" => meta.uid = value.parse().map_err(|_| io::Error::other("bad PAX uid"))?,
                "gid" => meta.gid = value.parse().map_err(|_| io::Error::other("bad PAX gid"))?,
                "mtime" => {
                    if let Some(t) = parse_pax_time(value) {
                        meta.mtime = t;
                    }
                }
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        meta.xattrs
                            .push((name.to_owned(), record.value_bytes().to_vec()));
                    }
                }
            }
        }
    }
    Ok(meta)
}

/// A numeric header field as Go's tar reader reads it: base-256 when the high bit of its first
/// byte is set, else octal with spaces and NULs around it ignored (empty is 0).
fn go_numeric(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| io::Error::other("numeric header field out of range"))?;
        }
        return Ok(value);
    }
    let text = String::from_utf8_lossy(field);
    let text = text.trim_matches([' ', '\0']);
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8)
        .map_err(|_| io::Error::other(format!("invalid numeric header field {text:?}")))
}

/// A PAX time (`1700000000.123456789`, maybe negative).
fn parse_pax_time(value: &str) -> Option<Timestamp> {
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    Some(Timestamp { secs, nanos })
}

/// Whether an ADD source is a URL BuildKit downloads.
pub(super) fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// Whether an ADD source is a git repository, as BuildKit's `ParseGitRef` tells them:
/// `git://`, `ssh://`, `git@host:...`, or an http(s) URL whose path ends with `.git`.
pub(super) fn is_git(source: &str) -> bool {
    if source.starts_with("git://") || source.starts_with("git@") || source.starts_with("ssh://") {
        return true;
    }
    if !is_url(source) {
        return false;
    }
    let path = source.split(['?', '#']).next().unwrap_or_default();
    path.trim_end_matches('/').ends_with(".git")
}

/// The name BuildKit gives the file of `ADD <url>`: Go's `path.Base` of the URL's path
/// (percent-decoded, query and fragment left out), `__unnamed__` when that is empty or `/`.
pub(super) fn url_file_name(url: &str) -> String {
    const UNNAMED: &str = "__unnamed__";
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let without_fragment = after_scheme.split('#').next().unwrap_or_default();
    let without_query = without_fragment.split('?').next().unwrap_or_default();
    let path = without_query
        .find('/')
        .map_or("", |at| &without_query[at..]);
    let decoded = percent_decode(path);
    let trimmed = decoded.trim_end_matches('/');
    let base = trimmed.rsplit('/').next().unwrap_or_default();
    match base {
        "" | "." | ".." => UNNAMED.to_owned(),
        name => name.to_owned(),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `--checksum`: the digest the downloaded bytes must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Checksum {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Checksum {
    /// Parses `<algorithm>:<hex>`.
    pub(super) fn parse(value: &str) -> Result<Checksum, String> {
        let bad = |why: &str| format!("invalid checksum digest {value:?}: {why}");
        let (algorithm, hex) = value
            .split_once(':')
            .ok_or_else(|| bad("expected <algorithm>:<hex>"))?;
        let (algorithm, len) = match algorithm {
            "sha256" => (Algorithm::Sha256, 64),
            "sha384" => (Algorithm::Sha384, 96),
            "sha512" => (Algorithm::Sha512, 128),
            _ => return Err(bad("unsupported algorithm (sha256, sha384 or sha512)")),
        };
        if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad(&format!("expected {len} lowercase hex digits")));
        }
        Ok(Checksum {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    fn prefix(&self) -> &'static str {
        match self.algorithm {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }
}

/// A running hash of the downloaded bytes, for `--checksum`.
enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha384(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    fn hex(self) -> String {
        let bytes = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Downloads `url` into the directory `dir` as the file BuildKit's HTTP source makes (see the
/// module's docs), checking `checksum`. Returns the file's name.
pub(super) fn download(
    url: &str,
    dir: &Path,
    checksum: Option<&Checksum>,
) -> Result<String, String> {
    let name = url_file_name(url);
    let path = dir.join(&name);
    // The blocking client runs a runtime of its own, which must not live on a thread that is
    // inside one; a thread of its own keeps the solver usable from async callers too.
    std::thread::scope(|s| {
        s.spawn(|| fetch(url, &path, checksum))
            .join()
            .unwrap_or_else(|_| Err(format!("{url}: the download failed")))
    })?;
    Ok(name)
}

fn fetch(url: &str, path: &Path, checksum: Option<&Checksum>) -> Result<(), String> {
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(None)
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
    let mut response = client
        .get(url)
        .send()
        .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{url}: invalid response status {status}"));
    }
    let mtime = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .unwrap_or(UNIX_EPOCH);
    let io_err = |e: io::Error| format!("{url}: {e}");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err)?;
    let mut hasher = checksum.map(|c| Hasher::new(c.algorithm));
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match response.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("{url}: reading the response: {e}")),
        };
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        file.write_all(&buf[..n]).map_err(io_err)?;
    }
    if let (Some(c), Some(h)) = (checksum, hasher) {
        let got = h.hex();
        if got != c.hex {
            return Err(format!(
                "checksum mismatch for {url}: expected {}:{}, downloaded {}:{got}",
                c.prefix(),
                c.hex,
                c.prefix()
            ));
        }
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    let since = mtime.duration_since(UNIX_EPOCH);
    let stamp = match since {
        Ok(d) => Timestamp {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        },
        Err(_) => Timestamp { secs: 0, nanos: 0 },
    };
    drop(file);
    set_times(path, stamp).map_err(io_err)
}

/// An error and its causes, joined (reqwest's own message leaves out why a request failed).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn running_as_root() -> bool {
        fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }

    /// A tar with a directory, a file, a symlink, a hard link and a setuid file.
    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_ustar();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o750);
        dir.set_uid(1000);
        dir.set_gid(50);
        dir.set_size(0);
        b.append_data(&mut dir, "pkg/", io::empty()).unwrap();
        let mut file = tar::Header::new_ustar();
        file.set_mode(0o640);
        file.set_uid(1000);
        file.set_gid(50);
        file.set_size(5);
        b.append_data(&mut file, "pkg/file.txt", &b"hello"[..])
            .unwrap();
        let mut link = tar::Header::new_ustar();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        b.append_link(&mut link, "pkg/link", "file.txt").unwrap();
        let mut hard = tar::Header::new_ustar();
        hard.set_entry_type(tar::EntryType::Link);
        hard.set_mode(0o640);
        hard.set_uid(1000);
        hard.set_gid(50);
        hard.set_size(0);
        b.append_link(&mut hard, "pkg/hard", "pkg/file.txt")
            .unwrap();
        let mut suid = tar::Header::new_ustar();
        suid.set_mode(0o4755);
        suid.set_size(1);
        b.append_data(&mut suid, "top/setuid", &b"s"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn archives_are_told_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            fs::write(&p, bytes).unwrap();
            p
        };
        let tar = sample_tar();
        assert_eq!(
            archive_compression(&write("plain.bin", &tar)).unwrap(),
            Some(Compression::None)
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        assert_eq!(
            archive_compression(&write("x.tgz", &gz.finish().unwrap())).unwrap(),
            Some(Compression::Gzip)
        );
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar).unwrap();
        assert_eq!(
            archive_compression(&write("x.bz2", &bz.finish().unwrap())).unwrap(),
            Some(Compression::Bzip2)
        );
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&tar).unwrap();
        assert_eq!(
            archive_compression(&write("x.xz", &xz.finish().unwrap())).unwrap(),
            Some(Compression::Xz)
        );
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        assert_eq!(
            archive_compression(&write("x.zst", &zst)).unwrap(),
            Some(Compression::Zstd)
        );
        // A gzipped text file, a text file, an empty file and zeros are not archives.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"a gzipped text file, not a tar\n").unwrap();
        assert_eq!(
            archive_compression(&write("notatar.txt.gz", &gz.finish().unwrap())).unwrap(),
            None
        );
        assert_eq!(
            archive_compression(&write("t.tar", b"hello")).unwrap(),
            None
        );
        assert_eq!(archive_compression(&write("e.tar", b"")).unwrap(), None);
        assert_eq!(
            archive_compression(&write("z.tar", &[0; 1024])).unwrap(),
            None
        );
        // A corrupted checksum is not a tar.
        let mut bad = tar.clone();
        bad[148] = b'7';
        bad[149] = b'7';
        assert_eq!(archive_compression(&write("bad.tar", &bad)).unwrap(), None);
    }

    #[test]
    fn tar_checksums_accept_signed_and_unsigned_sums() {
        let mut block = vec![0u8; 512];
        block[..4].copy_from_slice(b"name");
        block[156] = b'0';
        let sum: u32 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        assert!(is_tar_start(&block));
        block[0] = 0xff;
        assert!(!is_tar_start(&block));
        assert!(!is_tar_start(&block[..511]));
    }

    #[test]
    fn entry_paths_never_leave_the_destination() {
        assert_eq!(clean(b"./a/b/../c").unwrap(), ["a", "c"]);
        assert_eq!(clean(b"/etc/passwd").unwrap(), ["etc", "passwd"]);
        assert!(clean(b"./").unwrap().is_empty());
        assert!(clean(b"../x").is_none());
        assert!(clean(b"a/../../x").is_none());
    }

    #[test]
    fn unpacking_keeps_the_archive_metadata() {
        if !running_as_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar");
        fs::write(&archive, sample_tar()).unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        // A symlinked directory in the destination is followed inside it, as in a chroot.
        fs::create_dir_all(root.join("x/real")).unwrap();
        symlink("/real", root.join("x/top")).unwrap();
        unpack(
            &root,
            Path::new("/x"),
            (1000, 1000),
            &archive,
            Compression::None,
        )
        .unwrap();
        unpack(
            &root,
            Path::new("/x"),
            (1000, 1000),
            &archive,
            Compression::None,
        )
        .unwrap();
        unpack(
            &root,
            Path::new("/new"),
            (1000, 1000),
            &archive,
            Compression::None,
        )
        .unwrap();
        let md = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
        assert_eq!(md("new").uid(), 1000);
        assert_eq!(
            (
                md("x/pkg").mode() & 0o7777,
                md("x/pkg").uid(),
                md("x/pkg").gid()
            ),
            (0o750, 1000, 50)
        );
        assert_eq!(md("x/pkg/file.txt").mode() & 0o7777, 0o640);
        assert_eq!(md("x/pkg/file.txt").ino(), md("x/pkg/hard").ino());
        assert_eq!(
            fs::read_link(root.join("x/pkg/link")).unwrap(),
            Path::new("file.txt")
        );
        assert_eq!(md("x/real/setuid").mode() & 0o7777, 0o4755);
        assert!(md("x/top").file_type().is_symlink());
    }

    #[test]
    fn unpacking_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        // `append_data` refuses `..`, so the name goes into the header by hand.
        h.as_gnu_mut().unwrap().name[..8].copy_from_slice(b"../evil\0");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let archive = dir.path().join("evil.tar");
        fs::write(&archive, b.into_inner().unwrap()).unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let err = unpack(&root, Path::new("/d"), (0, 0), &archive, Compression::None);
        if running_as_root() {
            assert!(err.unwrap_err().contains("outside of the destination"));
        }
        assert!(!dir.path().join("evil").exists());
        assert!(!root.join("evil").exists());
    }

    #[test]
    fn url_file_names_follow_buildkit() {
        assert_eq!(url_file_name("http://h:1/file.txt"), "file.txt");
        assert_eq!(url_file_name("http://h/dir/file.txt?version=1"), "file.txt");
        assert_eq!(url_file_name("https://h/a/b/#frag"), "b");
        assert_eq!(url_file_name("https://h/a%20b.txt"), "a b.txt");
        assert_eq!(url_file_name("https://h"), "__unnamed__");
        assert_eq!(url_file_name("https://h/"), "__unnamed__");
        assert_eq!(url_file_name("https://h/?q=/x"), "__unnamed__");
    }

    #[test]
    fn git_sources_are_recognized() {
        assert!(is_git("git@github.com:moby/buildkit.git"));
        assert!(is_git("https://github.com/moby/buildkit.git#v0.10"));
        assert!(is_git("git://host/repo"));
        assert!(!is_git("https://host/file.tar.gz"));
        assert!(!is_git("src/thing.git"));
    }

    #[test]
    fn checksums_parse() {
        let hex = "1e0abc60bfb7d7bc3fc0edc55ccf6234e5eed9c96753a996804b4f86ccd6a0fb";
        assert!(Checksum::parse(&format!("sha256:{hex}")).is_ok());
        assert!(Checksum::parse(hex).is_err());
        assert!(Checksum::parse("md5:abc").is_err());
        assert!(Checksum::parse("sha256:ABC").is_err());
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"");
        assert_eq!(
            h.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn numeric_fields_read_as_go_reads_them() {
        assert_eq!(go_numeric(b"0000644\0").unwrap(), 0o644);
        assert_eq!(go_numeric(b" 755 \0\0").unwrap(), 0o755);
        assert_eq!(go_numeric(b"\0\0\0\0\0\0\0\0").unwrap(), 0);
        assert_eq!(go_numeric(&[0x80, 0, 0, 0, 0, 0, 0x01, 0x00]).unwrap(), 256);
        assert!(go_numeric(b"9").is_err());
    }

    #[test]
    fn pax_times_parse() {
        assert_eq!(
            parse_pax_time("1700000000.5"),
            Some(Timestamp {
                secs: 1_700_000_000,
                nanos: 500_000_000
            })
        );
        assert_eq!(parse_pax_time("12").unwrap().nanos, 0);
        assert!(parse_pax_time("x").is_none());
    }
}
