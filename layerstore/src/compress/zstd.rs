//! zstd through the library's own multithreaded mode.
//!
//! ## Guarantees
//! - **Determinism:** the encoder always runs libzstd in multithreaded mode (at least one
//!   worker), whose output depends only on the input, the level and the job parameters, not on
//!   the number of workers. (Single-threaded mode, `nbWorkers = 0`, frames its output
//!   differently, so it is never used.) No content size or checksum is written: the layer
//!   digest already covers integrity, and the size is unknown while streaming.
//! - **Bounded memory:** libzstd buffers a fixed number of jobs of [`DEFAULT_JOB_SIZE`] bytes
//!   per worker, whatever the input size.

use std::fmt;
use std::io::{self, Write};

use zstd::stream::raw::Encoder as RawEncoder;
use zstd::stream::write::Encoder;
use zstd::stream::zio;
use zstd::zstd_safe::CParameter;

/// Default level, the one the `zstd` CLI uses.
pub const DEFAULT_LEVEL: i32 = 3;

/// Size of each multithreaded job. libzstd's default for level 3 is 8 MiB (four windows),
/// which makes it buffer about 40 MiB of input with two workers (the `zstd -T2` CLI peaks at
/// 60-70 MiB RSS); with 2 MiB jobs `berth layer create` peaks at 25-35 MiB, for output about
/// 0.2% larger and no loss of speed (measured in `benches/RESULTS.md`).
pub const DEFAULT_JOB_SIZE: u32 = 2 << 20;

/// Output buffer between libzstd and the inner writer (libzstd's `ZSTD_CStreamOutSize`).
const OUT_BUFFER: usize = 128 * 1024;

/// Configures a [`ZstdEncoder`].
#[derive(Debug, Clone)]
pub struct ZstdBuilder {
    config: Config,
}

#[derive(Debug, Clone)]
struct Config {
    level: i32,
    threads: usize,
    job_size: u32,
}

impl Default for ZstdBuilder {
    fn default() -> Self {
        ZstdBuilder::new()
    }
}

impl ZstdBuilder {
    /// Level 3, one worker, [`DEFAULT_JOB_SIZE`] jobs.
    pub fn new() -> ZstdBuilder {
        ZstdBuilder {
            config: Config {
                level: DEFAULT_LEVEL,
                threads: 1,
                job_size: DEFAULT_JOB_SIZE,
            },
        }
    }

    /// Compression level, as the `zstd` CLI takes it (negative levels are the `--fast` ones).
    pub fn level(mut self, level: i32) -> ZstdBuilder {
        self.config.level = level;
        self
    }

    /// Number of libzstd worker threads (0 is taken as 1). The calling thread only hands input
    /// to them and writes their output.
    pub fn threads(mut self, threads: usize) -> ZstdBuilder {
        self.config.threads = threads;
        self
    }

    /// Size of each multithreaded job in bytes (libzstd raises values below 512 KiB to
    /// 512 KiB). Part of the output's identity, like the level.
    pub fn job_size(mut self, bytes: u32) -> ZstdBuilder {
        self.config.job_size = bytes;
        self
    }

    /// Starts an encoder writing to `out`.
    pub fn build<W: Write>(&self, out: W) -> io::Result<ZstdEncoder<W>> {
        let c = &self.config;
        let range = zstd::compression_level_range();
        if !range.contains(&c.level) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "zstd level {} is out of range {}..={}",
                    c.level,
                    range.start(),
                    range.end()
                ),
            ));
        }
        let workers = u32::try_from(c.threads.max(1)).unwrap_or(u32::MAX);
        let raw = RawEncoder::new(c.level)?;
        let writer = zio::Writer::new_with_capacity(out, raw, OUT_BUFFER);
        let mut inner = Encoder::with_writer(writer);
        inner.multithread(workers)?;
        inner.include_checksum(false)?;
        inner.include_contentsize(false)?;
        inner.long_distance_matching(false)?;
        inner.set_parameter(CParameter::JobSize(c.job_size))?;
        Ok(ZstdEncoder {
            inner,
            threads: c.threads.max(1),
        })
    }
}

/// A zstd encoder running libzstd's worker threads; see the [module docs](self).
///
/// Call [`finish`](ZstdEncoder::finish) to end the frame. Dropping it unfinished stops the
/// workers (libzstd joins them when its context is freed) and leaves the output truncated.
pub struct ZstdEncoder<W: Write> {
    inner: Encoder<'static, W>,
    threads: usize,
}

impl<W: Write> fmt::Debug for ZstdEncoder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZstdEncoder")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl<W: Write> ZstdEncoder<W> {
    /// An encoder at `level` with `threads` workers and the default job size.
    pub fn new(out: W, level: i32, threads: usize) -> io::Result<ZstdEncoder<W>> {
        ZstdBuilder::new().level(level).threads(threads).build(out)
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        self.inner.get_ref()
    }

    /// Ends the frame and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        self.inner.finish()
    }
}

impl<W: Write> Write for ZstdEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)
    }

    /// Flushes libzstd and the inner writer. This ends the current job early, so a stream that
    /// is flushed part-way is not byte-identical to one that is not.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i * 7 % 251) as u8 ^ (i >> 12) as u8)
            .collect()
    }

    fn encode(data: &[u8], threads: usize) -> Vec<u8> {
        let mut enc = ZstdBuilder::new()
            .threads(threads)
            .job_size(512 * 1024)
            .build(Vec::new())
            .unwrap();
        for chunk in data.chunks(100_003) {
            enc.write_all(chunk).unwrap();
        }
        enc.finish().unwrap()
    }

    #[test]
    fn round_trips_and_is_the_same_for_any_thread_count() {
        let data = sample(3 << 20);
        let one = encode(&data, 1);
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
        for threads in [2, 3] {
            assert_eq!(encode(&data, threads), one, "threads {threads}");
        }
    }

    #[test]
    fn rejects_an_out_of_range_level() {
        let e = ZstdBuilder::new().level(99).build(Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
