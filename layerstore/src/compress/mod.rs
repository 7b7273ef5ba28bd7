//! Layer compression: block-parallel gzip ([`gzip`]), multithreaded zstd ([`zstd`]) and plain
//! pass-through, behind one [`Encoder`] chosen by [`Compression`].
//!
//! Every encoder is a [`Write`] that the tar writer can write straight into, ended by
//! `finish()`, which returns the inner writer. For the same input, compression, level and
//! block/job size, the output bytes are the same whatever the thread count.

pub mod gzip;
pub mod zstd;

use std::io::{self, Write};
use std::ops::RangeInclusive;

use crate::media::Compression;

pub use self::gzip::{GzipBuilder, GzipEncoder};
pub use self::zstd::{ZstdBuilder, ZstdEncoder};

/// Why an encoder could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("{compression} level {level} is out of range {}..={}", .range.start(), .range.end())]
    InvalidLevel {
        compression: Compression,
        level: i32,
        range: RangeInclusive<i32>,
    },
    #[error("starting the {compression} encoder: {source}")]
    Start {
        compression: Compression,
        #[source]
        source: io::Error,
    },
}

/// The level used when none is given: 6 for gzip (as `gzip`), 3 for zstd (as `zstd`), and
/// `None` for no compression.
pub const fn default_level(compression: Compression) -> Option<i32> {
    match compression {
        Compression::None => None,
        Compression::Gzip => Some(gzip::DEFAULT_LEVEL as i32),
        Compression::Zstd => Some(self::zstd::DEFAULT_LEVEL),
    }
}

/// The levels accepted for a compression: 0 (stored) to 9 for gzip, libzstd's range for zstd
/// (negative levels are its `--fast` ones), and `None` for no compression.
pub fn level_range(compression: Compression) -> Option<RangeInclusive<i32>> {
    match compression {
        Compression::None => None,
        Compression::Gzip => Some(0..=9),
        Compression::Zstd => Some(::zstd::compression_level_range()),
    }
}

/// An encoder for any [`Compression`].
#[derive(Debug)]
pub enum Encoder<W: Write> {
    /// Pass-through: bytes go to the inner writer unchanged.
    None(W),
    Gzip(GzipEncoder<W>),
    Zstd(ZstdEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// An encoder for `compression` at `level` (the default level when `None`; ignored for
    /// [`Compression::None`]) with `threads` compression threads (0 is taken as 1).
    pub fn new(
        out: W,
        compression: Compression,
        level: Option<i32>,
        threads: usize,
    ) -> Result<Encoder<W>, CompressError> {
        let level = level.or(default_level(compression));
        if let (Some(level), Some(range)) = (level, level_range(compression)) {
            if !range.contains(&level) {
                return Err(CompressError::InvalidLevel {
                    compression,
                    level,
                    range,
                });
            }
        }
        let start = |source| CompressError::Start {
            compression,
            source,
        };
        Ok(match (compression, level) {
            (Compression::Gzip, Some(level)) => Encoder::Gzip(
                GzipBuilder::new()
                    // In range 0..=9, checked above.
                    .level(level.unsigned_abs())
                    .threads(threads)
                    .build(out)
                    .map_err(start)?,
            ),
            (Compression::Zstd, Some(level)) => Encoder::Zstd(
                ZstdBuilder::new()
                    .level(level)
                    .threads(threads)
                    .build(out)
                    .map_err(start)?,
            ),
            _ => Encoder::None(out),
        })
    }

    /// The compression this encoder applies.
    pub fn compression(&self) -> Compression {
        match self {
            Encoder::None(_) => Compression::None,
            Encoder::Gzip(_) => Compression::Gzip,
            Encoder::Zstd(_) => Compression::Zstd,
        }
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        match self {
            Encoder::None(w) => w,
            Encoder::Gzip(e) => e.get_ref(),
            Encoder::Zstd(e) => e.get_ref(),
        }
    }

    /// Ends the stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.write_all(buf),
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_is_checked_per_compression() {
        assert!(matches!(
            Encoder::new(Vec::new(), Compression::Gzip, Some(10), 1),
            Err(CompressError::InvalidLevel { level: 10, .. })
        ));
        assert!(Encoder::new(Vec::new(), Compression::Zstd, Some(19), 1).is_ok());
        // A level means nothing without compression and is ignored.
        let e = Encoder::new(Vec::new(), Compression::None, Some(3), 1).unwrap();
        assert_eq!(e.compression(), Compression::None);
    }

    #[test]
    fn pass_through_is_unchanged() {
        let mut e = Encoder::new(Vec::new(), Compression::None, None, 4).unwrap();
        e.write_all(b"plain tar").unwrap();
        assert_eq!(e.finish().unwrap(), b"plain tar");
    }
}
