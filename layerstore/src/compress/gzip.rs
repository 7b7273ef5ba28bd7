//! Block-parallel gzip, framed the way pigz frames it.
//!
//! The input is cut into fixed-size blocks at fixed offsets (block *k* is bytes
//! `k*block_size .. (k+1)*block_size`). Each block is compressed on its own as raw deflate,
//! primed with the last 32 KiB of the block before it as a preset dictionary, and ends in a
//! sync flush (an empty stored block, so the output is byte-aligned and the deflate stream is
//! not final). The last block ends in a final deflate block instead. The compressed blocks are
//! concatenated, in input order, behind one 10-byte gzip header and followed by the CRC-32 of
//! the whole input (combined from the per-block CRCs) and its length modulo 2^32.
//!
//! The result is **one** gzip member (RFC 1952) that any inflater reads as a single deflate
//! stream.
//!
//! A block whose bytes look incompressible (high order-0 entropy, and a sample that level 1
//! cannot shrink) is written as stored deflate blocks instead of being searched for matches
//! that are not there; see `looks_incompressible`. The decision depends on the block's bytes
//! only.
//!
//! ## Guarantees
//! - **Determinism:** the output depends only on the input bytes, the level and the block
//!   size. It does not depend on the thread count, on how the input was split across
//!   [`Write::write`] calls, or on timing: block boundaries are input offsets, each block is
//!   compressed by a freshly reset deflate state from its own input and dictionary in one call,
//!   and blocks are written in input order. The gzip header carries no name and a zero mtime.
//! - **Bounded memory:** at most [`GzipBuilder::blocks_in_flight`] blocks are queued or being
//!   compressed at any time, plus the block being filled. Each costs about two block sizes
//!   (input and output), so the default configuration stays under a few MiB whatever the input
//!   size. [`Write::write`] blocks the caller (back-pressure) when the limit is reached.
//! - **Errors propagate:** an error from the inner writer or from a worker is returned by the
//!   `write` or `finish` call that observes it, and every later call fails too.
//! - **No leaked threads:** workers are joined when the encoder finishes or is dropped,
//!   including on error paths.
//!
//! ## Why this is hand-written
//! flate2 and zlib compress on the calling thread only, and no crate available here does pigz's
//! multi-threaded framing. The framing is small (a header, a trailer, one CRC combine per
//! block) and all the deflate work goes through flate2 (zlib-rs), so only the scheduling and
//! the framing are written here.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// The deflate window, and so the length of the dictionary each block is primed with.
pub const DICT_SIZE: usize = 32 * 1024;

/// Default block size. Chosen by measurement (see `benches/RESULTS.md`): priming each block
/// with a 32 KiB dictionary costs about 10% of the CPU time with pigz's 128 KiB blocks and 1-2%
/// with 1 MiB ones, for the same ratio; 1 MiB blocks keep the encoder under 10 MiB with two
/// threads.
pub const DEFAULT_BLOCK_SIZE: usize = 1024 * 1024;

/// The smallest block size accepted: a block must hold a full dictionary for the next one.
pub const MIN_BLOCK_SIZE: usize = DICT_SIZE;

/// Default deflate level, the one `gzip` uses.
pub const DEFAULT_LEVEL: u32 = 6;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const CM_DEFLATE: u8 = 8;
/// "Unknown" operating system, as Go's `compress/gzip` writes it.
const OS_UNKNOWN: u8 = 255;

/// Configures a [`GzipEncoder`].
#[derive(Debug, Clone)]
pub struct GzipBuilder {
    config: Config,
}

#[derive(Debug, Clone)]
struct Config {
    level: u32,
    threads: usize,
    block_size: usize,
    in_flight: Option<usize>,
}

impl Default for GzipBuilder {
    fn default() -> Self {
        GzipBuilder::new()
    }
}

impl GzipBuilder {
    /// Level 6, one thread, [`DEFAULT_BLOCK_SIZE`] blocks.
    pub fn new() -> GzipBuilder {
        GzipBuilder {
            config: Config {
                level: DEFAULT_LEVEL,
                threads: 1,
                block_size: DEFAULT_BLOCK_SIZE,
                in_flight: None,
            },
        }
    }

    /// Deflate level, 0 (stored) to 9, handed to zlib-rs as is. zlib-rs follows zlib-ng's
    /// level table, so a level is faster than the same `gzip -N` level for output that is
    /// typically 1-3% larger.
    pub fn level(mut self, level: u32) -> GzipBuilder {
        self.config.level = level;
        self
    }

    /// Number of compression threads. With 1 (or 0), blocks are compressed on the calling
    /// thread and no thread is spawned; with N > 1, N workers compress while the calling
    /// thread fills blocks and writes results. The output is the same either way.
    pub fn threads(mut self, threads: usize) -> GzipBuilder {
        self.config.threads = threads;
        self
    }

    /// Size of the independently compressed blocks, at least [`MIN_BLOCK_SIZE`]. Part of the
    /// output's identity: the same input gives the same bytes only for the same block size.
    pub fn block_size(mut self, bytes: usize) -> GzipBuilder {
        self.config.block_size = bytes;
        self
    }

    /// Maximum number of blocks queued or being compressed at once (default: twice the thread
    /// count). Bounds memory to about `2 * (blocks_in_flight + 1) * block_size`.
    pub fn blocks_in_flight(mut self, blocks: usize) -> GzipBuilder {
        self.config.in_flight = Some(blocks);
        self
    }

    /// Starts an encoder writing to `out`. Nothing is written until the first block is full or
    /// [`GzipEncoder::finish`] is called.
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] for a level above 9 or a block size below
    /// [`MIN_BLOCK_SIZE`], and with the OS error if a worker thread cannot be spawned.
    pub fn build<W: Write>(&self, out: W) -> io::Result<GzipEncoder<W>> {
        let c = &self.config;
        if c.level > 9 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("gzip level {} is out of range 0..=9", c.level),
            ));
        }
        if c.block_size < MIN_BLOCK_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "gzip block size {} is below the minimum of {MIN_BLOCK_SIZE} bytes",
                    c.block_size
                ),
            ));
        }
        let threads = c.threads.max(1);
        let engine = if threads == 1 {
            Engine::Inline { out: Vec::new() }
        } else {
            let in_flight = c.in_flight.unwrap_or(2 * threads).max(1);
            Engine::Pool(Pool::spawn(c.level, threads, in_flight)?)
        };
        Ok(GzipEncoder {
            out,
            level: c.level,
            block_size: c.block_size,
            block: Vec::with_capacity(c.block_size),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            header_written: false,
            engine,
            spare: Spare::default(),
            failed: None,
        })
    }
}

/// A gzip encoder that compresses fixed-size blocks in parallel; see the [module
/// docs](self) for the format and guarantees.
///
/// Call [`finish`](GzipEncoder::finish) to write the last block and the trailer. Dropping the
/// encoder without finishing stops its workers and leaves the output truncated.
pub struct GzipEncoder<W: Write> {
    out: W,
    level: u32,
    block_size: usize,
    /// The block being filled; dispatched once full and more input arrives, so that the last
    /// block is always known to be last when `finish` is called.
    block: Vec<u8>,
    /// Dictionary for `block`: the last [`DICT_SIZE`] bytes of the block before it.
    dict: Vec<u8>,
    /// CRC-32 of every block written so far (the CRC of a block is computed where the block is
    /// compressed and combined here in input order).
    crc: crc32fast::Hasher,
    header_written: bool,
    engine: Engine,
    spare: Spare,
    /// Set by the first error; every later call fails with the same kind and message.
    failed: Option<(io::ErrorKind, String)>,
}

impl<W: Write> fmt::Debug for GzipEncoder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GzipEncoder")
            .field("level", &self.level)
            .field("block_size", &self.block_size)
            .field("threads", &self.threads())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

enum Engine {
    /// One thread: blocks are compressed by the caller.
    Inline { out: Vec<u8> },
    /// Worker threads; results are collected in order by the caller.
    Pool(Pool),
}

/// Buffers returned by finished blocks, reused so that a long stream allocates only as many
/// buffers as there are blocks in flight.
#[derive(Default)]
struct Spare {
    inputs: Vec<Vec<u8>>,
    dicts: Vec<Vec<u8>>,
    outputs: Vec<Vec<u8>>,
}

impl<W: Write> GzipEncoder<W> {
    /// An encoder at `level` with `threads` compression threads and the default block size.
    pub fn new(out: W, level: u32, threads: usize) -> io::Result<GzipEncoder<W>> {
        GzipBuilder::new().level(level).threads(threads).build(out)
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Number of compression threads (1 means the calling thread compresses).
    pub fn threads(&self) -> usize {
        match &self.engine {
            Engine::Inline { .. } => 1,
            Engine::Pool(pool) => pool.workers.len(),
        }
    }

    /// Compresses what is left, waits for every block, writes the trailer and returns the
    /// inner writer (not flushed beyond what `write_all` did).
    pub fn finish(mut self) -> io::Result<W> {
        self.check()?;
        let result = self.finish_inner();
        self.record(result)?;
        // Workers are joined when `engine` is dropped here.
        let GzipEncoder { out, engine, .. } = self;
        drop(engine);
        Ok(out)
    }

    fn finish_inner(&mut self) -> io::Result<()> {
        self.dispatch(true)?;
        if let Engine::Pool(_) = self.engine {
            while self.retire(true)? {}
        }
        if !self.header_written {
            self.write_header()?;
        }
        let crc = self.crc.clone().finalize();
        // ISIZE is the input length modulo 2^32 (RFC 1952, section 2.3.1).
        let isize = self.crc.total_len() as u32;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&crc.to_le_bytes());
        trailer[4..].copy_from_slice(&isize.to_le_bytes());
        self.out.write_all(&trailer)
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            None => Ok(()),
            Some((kind, msg)) => Err(io::Error::new(
                *kind,
                format!("gzip encoder failed earlier: {msg}"),
            )),
        }
    }

    fn record<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            self.failed = Some((e.kind(), e.to_string()));
        }
        result
    }

    fn write_header(&mut self) -> io::Result<()> {
        let xfl = match self.level {
            9 => 2, // maximum compression
            1 => 4, // fastest
            _ => 0,
        };
        let header = [
            GZIP_MAGIC[0],
            GZIP_MAGIC[1],
            CM_DEFLATE,
            0, // FLG: no name, comment, extra field or header CRC
            0,
            0,
            0,
            0, // MTIME: none, so the output does not depend on when it was made
            xfl,
            OS_UNKNOWN,
        ];
        self.header_written = true;
        self.out.write_all(&header)
    }

    fn emit(&mut self, compressed: &[u8], crc: &crc32fast::Hasher) -> io::Result<()> {
        if !self.header_written {
            self.write_header()?;
        }
        self.crc.combine(crc);
        self.out.write_all(compressed)
    }

    /// Sends the current block off (compressing it inline with one thread) and starts the next.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let next = self
            .spare
            .inputs
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.block_size));
        let input = std::mem::replace(&mut self.block, next);
        let mut next_dict = self.spare.dicts.pop().unwrap_or_default();
        next_dict.clear();
        if !last {
            next_dict.extend_from_slice(&input[input.len().saturating_sub(DICT_SIZE)..]);
        }
        let dict = std::mem::replace(&mut self.dict, next_dict);

        match &mut self.engine {
            Engine::Inline { out } => {
                let mut crc = crc32fast::Hasher::new();
                crc.update(&input);
                let written = deflate_block(self.level, &dict, &input, last, out)?;
                let out = std::mem::take(out);
                let emitted = self.emit(&out[..written], &crc);
                if let Engine::Inline { out: slot, .. } = &mut self.engine {
                    *slot = out;
                }
                self.recycle(input, dict, None);
                emitted
            }
            Engine::Pool(pool) => {
                if pool.pending.len() >= pool.in_flight {
                    self.retire(true)?;
                }
                let output = self.spare.outputs.pop().unwrap_or_default();
                let Engine::Pool(pool) = &mut self.engine else {
                    unreachable!("the engine does not change while encoding")
                };
                pool.submit(input, dict, output, last)?;
                // Write whatever finished meanwhile, to keep latency and memory low.
                while self.retire(false)? {}
                Ok(())
            }
        }
    }

    /// Writes out the oldest block in flight. With `wait`, blocks until it is done; without,
    /// returns `Ok(false)` if it is not done yet. Returns `Ok(false)` if nothing is in flight.
    fn retire(&mut self, wait: bool) -> io::Result<bool> {
        let Engine::Pool(pool) = &mut self.engine else {
            return Ok(false);
        };
        let Some(done) = pool.take_front(wait)? else {
            return Ok(false);
        };
        let Done {
            input,
            dict,
            output,
            crc,
            result,
        } = done;
        let written = result?;
        self.emit(&output[..written], &crc)?;
        self.recycle(input, dict, Some(output));
        Ok(true)
    }

    fn recycle(&mut self, mut input: Vec<u8>, mut dict: Vec<u8>, output: Option<Vec<u8>>) {
        input.clear();
        dict.clear();
        self.spare.inputs.push(input);
        self.spare.dicts.push(dict);
        // Output buffers keep their length: `deflate_block` overwrites them without clearing.
        if let Some(output) = output {
            self.spare.outputs.push(output);
        }
    }
}

impl<W: Write> Write for GzipEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        let mut rest = buf;
        while !rest.is_empty() {
            if self.block.len() == self.block_size {
                let result = self.dispatch(false);
                self.record(result)?;
            }
            let n = rest.len().min(self.block_size - self.block.len());
            self.block.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        Ok(buf.len())
    }

    /// Flushes the inner writer. The block being filled is *not* forced out: block boundaries
    /// are fixed input offsets, which is what makes the output deterministic.
    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        let result = self.out.flush();
        self.record(result)
    }
}

/// Room for the compressed form of `len` bytes in one call, at any level: zlib-rs's own
/// conservative bound (level 1 codes every literal with up to 9 bits, so it may expand input
/// by 1/8; stored blocks cost 5 bytes per 64 KiB), plus the sync flush marker and the end of
/// the last block.
fn deflate_bound(len: usize) -> usize {
    len + (len >> 3) + (len >> 6) + 64
}

/// Compresses one block into the start of `out` and returns the compressed length: a new raw
/// deflate state (no zlib header, 32 KiB window) primed with `dict`, all of `input`, then a
/// sync flush, or a final block if `last`. `out` is grown as needed and never shrunk, so that a
/// recycled buffer is neither reallocated nor cleared.
///
/// The state is new for every block, not reset: a reset keeps the previous stream's bytes in
/// the window past the end of the input, where the match finder reads them at the end of a
/// block, so the choice of matches (and the output) would depend on which blocks the same
/// worker compressed before. A new state starts from a zeroed window; it costs an allocation
/// of a few hundred KiB per block, well under 1% of compressing a block.
fn deflate_block(
    level: u32,
    dict: &[u8],
    input: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> io::Result<usize> {
    let level = if level > 0 && looks_incompressible(input) {
        0
    } else {
        level
    };
    let mut deflate = Compress::new_with_window_bits(Compression::new(level), false, 15);
    if !dict.is_empty() {
        deflate.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // The room given to the first call is a function of the input length only: level 0 sizes
    // its stored blocks by the room available, so a room that varied with a recycled buffer's
    // length would vary the output.
    let mut room = deflate_bound(input.len());
    if out.len() < room {
        out.resize(room, 0);
    }
    let mut consumed = 0;
    let mut written = 0;
    loop {
        let (in_before, out_before) = (deflate.total_in(), deflate.total_out());
        let status = deflate
            .compress(&input[consumed..], &mut out[written..room], flush)
            .map_err(io::Error::other)?;
        consumed += (deflate.total_in() - in_before) as usize;
        written += (deflate.total_out() - out_before) as usize;
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete once all input is in and deflate stopped short of
            // filling the output (zlib's contract for Z_SYNC_FLUSH).
            Status::Ok | Status::BufError if !last && consumed == input.len() && written < room => {
                break;
            }
            Status::Ok | Status::BufError => {}
        }
        // Out of room, which the bound rules out: kept so that a wrong bound would cost time,
        // not correctness. At levels 1-9, deflate's output does not depend on how much room
        // each call had.
        room += room.max(64 * 1024);
        if out.len() < room {
            out.resize(room, 0);
        }
    }
    Ok(written)
}

/// Blocks shorter than this are always compressed at the requested level.
const INCOMPRESSIBLE_MIN_LEN: usize = 64 * 1024;
/// Order-0 entropy, in bits per byte, above which a block is a candidate for stored blocks.
/// Uniformly random data of 64 KiB measures about 7.997; compressed formats (gzip, zstd, PNG,
/// JPEG payloads) 7.99 and above; text and code 4.5-6; machine code 5.5-6.5.
const INCOMPRESSIBLE_ENTROPY: f64 = 7.99;
/// Length of the sample that must not shrink under deflate level 1 either.
const INCOMPRESSIBLE_PROBE: usize = 64 * 1024;

/// Whether `block` would not shrink under deflate at any level, so that it can be stored
/// instead (level 0), which is about a hundred times faster than deflate on such data: zlib-rs
/// levels 1-6 spend as long on random bytes as on text (about 30 MB/s at level 6), and a
/// layer holds many already-compressed files.
///
/// Two tests, both functions of the block's bytes only, so the decision (and the output) is
/// the same whatever thread compresses the block:
/// - its order-0 entropy must be at least [`INCOMPRESSIBLE_ENTROPY`] bits per byte: then
///   Huffman coding of literals can save at most 0.1%;
/// - its first [`INCOMPRESSIBLE_PROBE`] bytes must not shrink by 1% at level 1, which catches
///   high-entropy data made of repeats (a random chunk copied over and over), the only kind
///   whose matches deflate could exploit.
///
/// A block that fails either test is compressed at the requested level.
fn looks_incompressible(block: &[u8]) -> bool {
    if block.len() < INCOMPRESSIBLE_MIN_LEN {
        return false;
    }
    // Four interleaved tables, so that runs of the same byte do not serialize on one counter.
    let mut counts = [[0u32; 256]; 4];
    let mut quads = block.chunks_exact(4);
    for q in &mut quads {
        counts[0][usize::from(q[0])] += 1;
        counts[1][usize::from(q[1])] += 1;
        counts[2][usize::from(q[2])] += 1;
        counts[3][usize::from(q[3])] += 1;
    }
    for &b in quads.remainder() {
        counts[0][usize::from(b)] += 1;
    }
    let n = block.len() as f64;
    let entropy: f64 = (0..256)
        .map(|i| counts[0][i] + counts[1][i] + counts[2][i] + counts[3][i])
        .filter(|&c| c > 0)
        .map(|c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    if entropy < INCOMPRESSIBLE_ENTROPY {
        return false;
    }
    let sample = &block[..INCOMPRESSIBLE_PROBE.min(block.len())];
    let mut probe = Compress::new_with_window_bits(Compression::new(1), false, 15);
    let mut out = vec![0u8; deflate_bound(sample.len())];
    match probe.compress(sample, &mut out, FlushCompress::Finish) {
        Ok(Status::StreamEnd) => probe.total_out() as f64 >= 0.99 * sample.len() as f64,
        // Not expected with room for the worst case; compress normally.
        _ => false,
    }
}

struct Job {
    input: Vec<u8>,
    dict: Vec<u8>,
    output: Vec<u8>,
    last: bool,
    reply: SyncSender<Done>,
}

struct Done {
    input: Vec<u8>,
    dict: Vec<u8>,
    output: Vec<u8>,
    crc: crc32fast::Hasher,
    /// The compressed length at the start of `output`.
    result: io::Result<usize>,
}

/// Worker threads plus the in-order queue of blocks in flight. Dropping it closes the job
/// queue and joins every worker.
struct Pool {
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    /// One reply channel per block in flight, oldest first.
    pending: VecDeque<Receiver<Done>>,
    in_flight: usize,
}

impl Pool {
    fn spawn(level: u32, threads: usize, in_flight: usize) -> io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut pool = Pool {
            jobs: Some(tx),
            workers: Vec::with_capacity(threads),
            pending: VecDeque::with_capacity(in_flight),
            in_flight,
        };
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            // On a spawn error, `pool` is dropped, which joins the workers already started.
            let handle = std::thread::Builder::new()
                .name(format!("berth-gzip-{i}"))
                .spawn(move || worker(level, &rx))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    fn submit(
        &mut self,
        input: Vec<u8>,
        dict: Vec<u8>,
        output: Vec<u8>,
        last: bool,
    ) -> io::Result<()> {
        let (reply, rx) = mpsc::sync_channel(1);
        let job = Job {
            input,
            dict,
            output,
            last,
            reply,
        };
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
        match sent {
            Some(Ok(())) => {
                self.pending.push_back(rx);
                Ok(())
            }
            _ => Err(worker_lost()),
        }
    }

    fn take_front(&mut self, wait: bool) -> io::Result<Option<Done>> {
        let Some(front) = self.pending.front() else {
            return Ok(None);
        };
        let done = if wait {
            front.recv().map_err(|_| worker_lost())?
        } else {
            match front.try_recv() {
                Ok(done) => done,
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Disconnected) => return Err(worker_lost()),
            }
        };
        self.pending.pop_front();
        Ok(Some(done))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue ends each worker's loop once it finishes its current block; replies
        // to dropped receivers are discarded.
        self.jobs = None;
        self.pending.clear();
        for handle in self.workers.drain(..) {
            // A worker that panicked has already reported through its dropped reply channel.
            let _ = handle.join();
        }
    }
}

fn worker_lost() -> io::Error {
    io::Error::other("a gzip compression thread stopped unexpectedly")
}

fn worker(level: u32, jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            // The lock guards only `recv`, which leaves the receiver consistent even if a
            // thread panicked while holding it.
            let rx = jobs.lock().unwrap_or_else(PoisonError::into_inner);
            rx.recv()
        };
        let Ok(Job {
            input,
            dict,
            mut output,
            last,
            reply,
        }) = job
        else {
            return;
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&input);
        let result = deflate_block(level, &dict, &input, last, &mut output);
        // The encoder may have been dropped meanwhile; then nobody wants the result.
        let _ = reply.send(Done {
            input,
            dict,
            output,
            crc,
            result,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut d = flate2::read::GzDecoder::new(data);
        let mut out = Vec::new();
        d.read_to_end(&mut out).expect("valid gzip");
        // A single member: nothing may follow it.
        assert!(d.into_inner().is_empty(), "trailing data after the member");
        out
    }

    fn gzip(data: &[u8], threads: usize, block_size: usize) -> Vec<u8> {
        let mut enc = GzipBuilder::new()
            .threads(threads)
            .block_size(block_size)
            .build(Vec::new())
            .unwrap();
        // Uneven write sizes, to show they do not matter.
        for chunk in data.chunks(7919) {
            enc.write_all(chunk).unwrap();
        }
        enc.finish().unwrap()
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 {
                    (x % 7) as u8 + b'a'
                } else {
                    (x >> 24) as u8
                }
            })
            .collect()
    }

    #[test]
    fn round_trips_across_block_boundaries() {
        let bs = MIN_BLOCK_SIZE;
        for len in [0, 1, bs - 1, bs, bs + 1, 3 * bs, 3 * bs + 17] {
            let data = sample(len);
            for threads in [1, 2, 3] {
                let gz = gzip(&data, threads, bs);
                assert_eq!(gunzip(&gz), data, "len {len}, threads {threads}");
            }
        }
    }

    #[test]
    fn same_bytes_for_any_thread_count_at_every_level() {
        let data = sample(5 * MIN_BLOCK_SIZE + 5);
        for level in [0, 1, 4, 6, 9] {
            let encode = |threads| {
                let mut enc = GzipBuilder::new()
                    .level(level)
                    .threads(threads)
                    .block_size(MIN_BLOCK_SIZE)
                    .build(Vec::new())
                    .unwrap();
                enc.write_all(&data).unwrap();
                enc.finish().unwrap()
            };
            let one = encode(1);
            assert_eq!(gunzip(&one), data, "level {level}");
            for threads in [2, 3, 8] {
                assert_eq!(encode(threads), one, "level {level}, threads {threads}");
            }
        }
    }

    #[test]
    fn empty_input_is_a_minimal_member() {
        let gz = gzip(b"", 1, DEFAULT_BLOCK_SIZE);
        // Header, an empty final static block, a zero CRC and a zero length.
        assert_eq!(gz.len(), 10 + 2 + 8);
        assert_eq!(gunzip(&gz), b"");
    }

    #[test]
    fn random_blocks_are_stored_and_repeats_are_not() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let random: Vec<u8> = (0..256 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert!(looks_incompressible(&random));
        // The same high entropy, but every 16 KiB repeats: deflate must see it.
        let repeats: Vec<u8> = random[..16 * 1024].repeat(16);
        assert!(!looks_incompressible(&repeats));
        assert!(!looks_incompressible(&sample(256 * 1024)));
        assert!(!looks_incompressible(&random[..1000]));

        let gz = gzip(&random, 2, MIN_BLOCK_SIZE);
        assert_eq!(gunzip(&gz), random);
        // Stored: five bytes per stored block of at most 64 KiB, plus framing.
        assert!(gz.len() < random.len() + 256, "{}", gz.len());
        let gz = gzip(&repeats, 2, MIN_BLOCK_SIZE);
        assert_eq!(gunzip(&gz), repeats);
        assert!(gz.len() < repeats.len() / 4, "{}", gz.len());
    }

    #[test]
    fn rejects_bad_configuration() {
        let e = GzipBuilder::new().level(10).build(Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = GzipBuilder::new()
            .block_size(MIN_BLOCK_SIZE - 1)
            .build(Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
