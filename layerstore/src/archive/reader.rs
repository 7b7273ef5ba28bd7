//! The tar stream reader of the applier.
//!
//! Header blocks are decoded with [`tar::Header`], but the stream itself is walked here rather
//! than by `tar::Archive`, for three reasons: PAX records are length-prefixed and their values
//! may hold any byte (a binary `security.capability` often holds a newline, which the tar crate's
//! record iterator splits on); extension headers are held in memory, so their size is bounded
//! before they are read; and the stream's size is bounded as it is read.

use std::cell::Cell;
use std::ffi::CString;
use std::io::{self, Read};
use std::ops::Range;
use std::rc::Rc;

/// Size of a tar block.
const BLOCK: usize = 512;
/// Prefix of the PAX records that carry extended attributes.
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Why [`TarReader::next_entry`] stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The stream failed or ended early (or went past the size budget: see [`Budget`]).
    Io(io::Error),
    /// The extension headers of one entry exceed the bound.
    HeaderLimit,
    /// A header is malformed.
    Invalid(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// One entry of the stream, with its PAX and GNU extensions folded in.
pub(crate) struct RawEntry {
    /// The header block (type, mode, device numbers come from it).
    pub(crate) header: tar::Header,
    /// Path: PAX `path`, else GNU long name, else ustar prefix and name.
    pub(crate) path: Vec<u8>,
    /// Link target: PAX `linkpath`, else GNU long link, else the header's.
    pub(crate) link: Option<Vec<u8>>,
    /// Data size: PAX `size`, else the header's.
    pub(crate) size: u64,
    /// Permission bits, with setuid, setgid and sticky.
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    /// Seconds and nanoseconds since the epoch: PAX `mtime`, else the header's.
    pub(crate) mtime: (i64, u32),
    /// `SCHILY.xattr.*` records: attribute name and value.
    pub(crate) xattrs: Vec<(CString, Vec<u8>)>,
}

/// The byte budget of one apply, shared between the reader that enforces it and the applier.
pub(crate) struct Budget {
    pub(crate) limit: u64,
    /// Bytes of uncompressed stream read so far.
    pub(crate) read: Cell<u64>,
    /// Set once a read went past `limit`.
    pub(crate) exceeded: Cell<bool>,
}

impl Budget {
    pub(crate) fn new(limit: u64) -> Rc<Budget> {
        Rc::new(Budget {
            limit,
            read: Cell::new(0),
            exceeded: Cell::new(false),
        })
    }
}

/// A reader that counts what it reads and fails once the stream goes past the [`Budget`].
pub(crate) struct Limited<R> {
    pub(crate) inner: R,
    pub(crate) budget: Rc<Budget>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let b = &self.budget;
        let read = b.read.get();
        let allowed = b.limit.saturating_sub(read);
        if allowed == 0 {
            // At the bound: only an error if the stream has more.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    b.exceeded.set(true);
                    Err(io::Error::other("layer expands past its size limit"))
                }
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        b.read.set(read + n as u64);
        Ok(n)
    }
}

/// Walks a tar stream entry by entry; reading it (`Read`) gives the current entry's data.
pub(crate) struct TarReader<R> {
    inner: R,
    /// Bytes consumed from `inner`.
    pos: u64,
    /// Data bytes of the current entry not read yet.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        TarReader {
            inner,
            pos: 0,
            remaining: 0,
            padding: 0,
        }
    }

    /// Bytes of the stream consumed so far.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// The underlying stream, positioned after the last entry read.
    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    /// Skips what is left of the current entry's data and its padding.
    pub(crate) fn skip_rest(&mut self) -> io::Result<()> {
        let n = self.remaining + self.padding;
        if n > 0 {
            let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
            self.pos += copied;
            if copied < n {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.remaining = 0;
        self.padding = 0;
        Ok(())
    }

    /// Reads a whole block; `false` at a clean end of stream.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> io::Result<bool> {
        let mut n = 0;
        while n < BLOCK {
            match self.inner.read(&mut block[n..]) {
                Ok(0) if n == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stream ends inside a header",
                    ));
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += BLOCK as u64;
        Ok(true)
    }

    /// Reads the data of an extension header into memory.
    fn read_extension(&mut self, size: u64) -> io::Result<Vec<u8>> {
        let len = usize::try_from(size).map_err(io::Error::other)?;
        let mut data = vec![0u8; len];
        self.inner.read_exact(&mut data)?;
        self.pos += size;
        self.remaining = 0;
        self.padding = padding(size);
        self.skip_rest()?;
        Ok(data)
    }

    /// The next entry, after skipping the rest of the current one; `None` at the end of the
    /// archive. The extension headers before one entry may hold at most `max_ext` bytes.
    pub(crate) fn next_entry(&mut self, max_ext: u64) -> Result<Option<RawEntry>, ReadError> {
        self.skip_rest()?;
        let mut pax: Option<Vec<u8>> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut ext_total: u64 = 0;
        loop {
            let mut header = tar::Header::new_old();
            if !self.read_block(header.as_mut_bytes())? {
                if pax.is_some() || long_name.is_some() || long_link.is_some() {
                    return Err(ReadError::Invalid(
                        "extension header without an entry".into(),
                    ));
                }
                return Ok(None);
            }
            if header.as_bytes().iter().all(|&b| b == 0) {
                return Ok(None);
            }
            verify_checksum(&header)?;
            let size = numeric(&header, SIZE_FIELD, tar::Header::entry_size)?;
            let type_flag = header.entry_type().as_byte();
            if matches!(type_flag, b'x' | b'g' | b'L' | b'K') {
                ext_total = ext_total.saturating_add(size);
                if ext_total > max_ext {
                    return Err(ReadError::HeaderLimit);
                }
                let data = self.read_extension(size)?;
                match type_flag {
                    b'x' => pax = Some(data),
                    b'L' => long_name = Some(trim_nul(data)),
                    b'K' => long_link = Some(trim_nul(data)),
                    // A global header sets defaults for the rest of the archive; layer writers
                    // do not use them and containerd ignores them too.
                    _ => {}
                }
                continue;
            }

            let mut entry = RawEntry {
                path: long_name.unwrap_or_else(|| header.path_bytes().into_owned()),
                link: long_link.or_else(|| header.link_name_bytes().map(|l| l.into_owned())),
                size,
                mode: numeric(&header, MODE_FIELD, |h| h.mode().map(u64::from))? as u32 & 0o7777,
                uid: numeric(&header, UID_FIELD, tar::Header::uid)?,
                gid: numeric(&header, GID_FIELD, tar::Header::gid)?,
                mtime: (
                    i64::try_from(numeric(&header, MTIME_FIELD, tar::Header::mtime)?)
                        .unwrap_or(i64::MAX),
                    0,
                ),
                xattrs: Vec::new(),
                header,
            };
            if let Some(data) = &pax {
                apply_pax(&mut entry, data)?;
            }
            self.remaining = entry.size;
            self.padding = padding(entry.size);
            return Ok(Some(entry));
        }
    }
}

impl<R: Read> Read for TarReader<R> {
    /// Reads the current entry's data; 0 at its end (or where the stream ends early).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Byte ranges of the numeric header fields that some writers leave empty.
const MODE_FIELD: Range<usize> = 100..108;
const UID_FIELD: Range<usize> = 108..116;
const GID_FIELD: Range<usize> = 116..124;
const SIZE_FIELD: Range<usize> = 124..136;
const MTIME_FIELD: Range<usize> = 136..148;

/// A numeric header field decoded by `decode` (octal or base-256), or 0 when the field is empty
/// (all NULs and spaces), as Go's `archive/tar` reads it.
fn numeric(
    header: &tar::Header,
    field: Range<usize>,
    decode: fn(&tar::Header) -> io::Result<u64>,
) -> Result<u64, ReadError> {
    if header.as_bytes()[field]
        .iter()
        .all(|&b| b == 0 || b == b' ')
    {
        return Ok(0);
    }
    decode(header).map_err(|e| ReadError::Invalid(e.to_string()))
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn trim_nul(mut data: Vec<u8>) -> Vec<u8> {
    while data.last() == Some(&0) {
        data.pop();
    }
    data
}

/// Checks a header's checksum, summed as unsigned bytes or (as some old writers do) signed.
fn verify_checksum(header: &tar::Header) -> Result<(), ReadError> {
    let bytes = header.as_bytes();
    let field = 148..156;
    let (mut unsigned, mut signed) = (0u32, 0i32);
    for (i, &b) in bytes.iter().enumerate() {
        let b = if field.contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i32::from(b as i8);
    }
    let want = header
        .cksum()
        .map_err(|e| ReadError::Invalid(e.to_string()))?;
    if want == unsigned || i64::from(want) == i64::from(signed) {
        Ok(())
    } else {
        Err(ReadError::Invalid("header checksum mismatch".into()))
    }
}

/// Folds PAX records into the entry.
fn apply_pax(entry: &mut RawEntry, data: &[u8]) -> Result<(), ReadError> {
    for (key, value) in parse_pax(data)? {
        let number = || -> Result<u64, ReadError> {
            std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ReadError::Invalid(invalid_record(key, value)))
        };
        match key {
            b"path" => entry.path = value.to_vec(),
            b"linkpath" => entry.link = Some(value.to_vec()),
            b"size" => entry.size = number()?,
            b"uid" => entry.uid = number()?,
            b"gid" => entry.gid = number()?,
            b"mtime" => {
                entry.mtime = parse_pax_time(value)
                    .ok_or_else(|| ReadError::Invalid(invalid_record(key, value)))?;
            }
            _ => {
                if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    let name = CString::new(name).map_err(|_| {
                        ReadError::Invalid("NUL byte in an extended attribute name".into())
                    })?;
                    entry.xattrs.push((name, value.to_vec()));
                }
            }
        }
    }
    Ok(())
}

fn invalid_record(key: &[u8], value: &[u8]) -> String {
    format!(
        "invalid PAX record {}={:?}",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(value)
    )
}

/// One PAX record: key and value.
pub(crate) type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// Splits PAX extended header data into (key, value) records: `"<len> <key>=<value>\n"` where
/// `len` counts the whole record, so values may hold any byte. Trailing NUL padding is ignored.
pub(crate) fn parse_pax(mut data: &[u8]) -> Result<Vec<PaxRecord<'_>>, ReadError> {
    let bad = |why: &str| ReadError::Invalid(format!("malformed PAX record: {why}"));
    let mut records = Vec::new();
    while let Some(&first) = data.first() {
        if first == 0 {
            break;
        }
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("no length"))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad length"))?;
        if len <= space + 1 || len > data.len() {
            return Err(bad("length out of range"));
        }
        let record = &data[space + 1..len];
        let Some(record) = record.strip_suffix(b"\n") else {
            return Err(bad("no newline"));
        };
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("no `=`"))?;
        records.push((&record[..eq], &record[eq + 1..]));
        data = &data[len..];
    }
    Ok(records)
}

/// Parses a PAX time, `[-]seconds[.fraction]`, to (seconds, nanoseconds) with the nanoseconds
/// counted forward from the seconds.
pub(crate) fn parse_pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(value).ok()?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    if !negative {
        Some((secs, nanos))
    } else if nanos == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pax_times() {
        assert_eq!(parse_pax_time(b"1234"), Some((1234, 0)));
        assert_eq!(parse_pax_time(b"1234.5"), Some((1234, 500_000_000)));
        assert_eq!(parse_pax_time(b"1.0000000019"), Some((1, 1)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"-3"), Some((-3, 0)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"1.x"), None);
        assert_eq!(parse_pax_time(b""), None);
    }

    #[test]
    fn pax_values_may_hold_newlines() {
        let data = b"29 SCHILY.xattr.user.a=x\ny=z\n12 path=abc\n\0\0\0";
        let records = parse_pax(data).unwrap();
        assert_eq!(
            records,
            vec![
                (&b"SCHILY.xattr.user.a"[..], &b"x\ny=z"[..]),
                (&b"path"[..], &b"abc"[..])
            ]
        );
        for bad in [
            &b"99 path=abc\n"[..],
            b"x path=abc\n",
            b"12 pathabc\n\n",
            b"12 path=abcd",
        ] {
            assert!(
                matches!(parse_pax(bad), Err(ReadError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limited_reader_fails_past_the_bound_only() {
        let budget = Budget::new(10);
        let mut exact = Limited {
            inner: &[1u8; 10][..],
            budget: Rc::clone(&budget),
        };
        let mut out = Vec::new();
        exact.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 10);
        assert!(!budget.exceeded.get());

        let budget = Budget::new(10);
        let mut over = Limited {
            inner: &[1u8; 11][..],
            budget: Rc::clone(&budget),
        };
        assert!(over.read_to_end(&mut Vec::new()).is_err());
        assert!(budget.exceeded.get());
    }

    #[test]
    fn reads_entries_and_extensions() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        let long = "l".repeat(300);
        builder.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        builder
            .append_pax_extensions([("SCHILY.xattr.user.k", &b"v\n"[..]), ("mtime", b"5.5")])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Directory);
        h.set_path("d/").unwrap();
        h.set_cksum();
        builder.append(&h, &[][..]).unwrap();
        let bytes = builder.into_inner().unwrap();

        let mut reader = TarReader::new(&bytes[..]);
        let first = reader.next_entry(1 << 20).unwrap().unwrap();
        assert_eq!(first.path, long.as_bytes());
        assert_eq!(first.size, 3);
        let mut data = Vec::new();
        reader.read_to_end(&mut data).unwrap();
        assert_eq!(data, b"abc");
        let second = reader.next_entry(1 << 20).unwrap().unwrap();
        assert_eq!(second.path, b"d/");
        assert_eq!(second.mtime, (5, 500_000_000));
        assert_eq!(second.xattrs.len(), 1);
        assert_eq!(second.xattrs[0].1, b"v\n");
        assert!(reader.next_entry(1 << 20).unwrap().is_none());

        let mut reader = TarReader::new(&bytes[..]);
        assert!(matches!(
            reader.next_entry(100),
            Err(ReadError::HeaderLimit)
        ));
    }
}
