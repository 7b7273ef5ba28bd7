//! Zero-copy relaying with `splice(2)`, as HAProxy forwards TCP: each direction moves bytes from
//! one socket into a pipe and from the pipe into the other socket, so they never cross into
//! user space. Against a copy through a user-space buffer this saves two copies of every byte
//! and, because a pipe holds more than a read buffer sensibly would, most of the system calls.
//!
//! The same semantics as `tokio::io::copy_bidirectional`: each direction runs until its source
//! reaches end of stream, then shuts down the sending side of its destination (a half-close is
//! passed on), and the relay ends when both directions have; the first error ends it.
//!
//! A `splice` into a socket whose peer is gone fails with `EPIPE`, which the kernel also
//! signals with `SIGPIPE`; Rust programs ignore that signal (the standard library sets it to
//! `SIG_IGN` before `main`), as a proxy must.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// One direction's pipe.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its capacity: how much one `splice` from a socket may move.
    capacity: usize,
}

impl Pipe {
    /// A non-blocking pipe, resized to `capacity` bytes if the kernel allows (an unprivileged
    /// process gets at most `fs.pipe-max-size`; a smaller pipe only means more splices).
    pub fn new(capacity: usize) -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [0; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both are open descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let wanted = libc::c_int::try_from(capacity).unwrap_or(libc::c_int::MAX);
        // SAFETY: fcntl on a descriptor owned above; on failure the pipe keeps its size.
        let mut got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, wanted) };
        if got <= 0 {
            // SAFETY: as above; F_GETPIPE_SZ only reads.
            got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        }
        if got <= 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Pipe {
            read,
            write,
            capacity: got as usize,
        })
    }
}

/// Idle pipe pairs kept for the next connections, so that a connection costs no pipe set-up
/// (four system calls per pipe) in the common case, as HAProxy keeps a pool of pipes.
#[derive(Debug)]
pub(crate) struct PipePool {
    idle: Mutex<Vec<(Pipe, Pipe)>>,
    /// The capacity each new pipe asks for.
    capacity: usize,
    /// At most this many pairs are kept idle; each holds four descriptors.
    max_idle: usize,
}

impl PipePool {
    pub fn new(capacity: usize, max_idle: usize) -> PipePool {
        PipePool {
            idle: Mutex::new(Vec::new()),
            capacity,
            max_idle,
        }
    }

    /// A pair of empty pipes: an idle one, or a new one.
    pub fn take(&self) -> io::Result<(Pipe, Pipe)> {
        if let Some(pair) = self.lock().pop() {
            return Ok(pair);
        }
        Ok((Pipe::new(self.capacity)?, Pipe::new(self.capacity)?))
    }

    /// Keeps a pair for later, if the pool has room. Both pipes must be empty.
    pub fn give(&self, pair: (Pipe, Pipe)) {
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push(pair);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(Pipe, Pipe)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed from owners that outlive the call; pipes and
    // sockets take no offsets, so both offset pointers are null.
    let n = unsafe {
        libc::splice(
            from,
            ptr::null_mut(),
            to,
            ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `shutdown(SHUT_WR)`: sends FIN once the queued bytes are out. A peer that is already gone
/// is not an error here; the other direction reports what happened to it.
fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    // SAFETY: the descriptor is borrowed from `stream`, which outlives the call.
    if unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOTCONN) {
            return Err(e);
        }
    }
    Ok(())
}

/// Moves `from`'s bytes to `to` until `from` reaches end of stream, then shuts down `to`'s
/// sending side. Returns the bytes moved.
async fn forward(from: &TcpStream, to: &TcpStream, pipe: &Pipe) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        // The pipe is empty here, so a splice that would block means the socket has nothing.
        let filled = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice(from.as_raw_fd(), pipe.write.as_raw_fd(), pipe.capacity)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if filled == 0 {
            shutdown_write(to)?;
            return Ok(total);
        }
        let mut left = filled;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    left -= n;
                    total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Relays both ways between `a` and `b` until both directions have ended; returns the bytes
/// moved from `a` to `b` and from `b` to `a`.
pub(crate) async fn relay(
    a: &TcpStream,
    b: &TcpStream,
    pipes: &(Pipe, Pipe),
) -> io::Result<(u64, u64)> {
    tokio::try_join!(forward(a, b, &pipes.0), forward(b, a, &pipes.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[test]
    fn pipe_is_resized_within_the_kernel_limit() {
        let pipe = Pipe::new(256 * 1024).unwrap();
        // At least the default size; the limit may cap the rest.
        assert!(pipe.capacity >= 4096, "{}", pipe.capacity);
        let small = Pipe::new(1).unwrap();
        assert_eq!(small.capacity, 4096, "the kernel rounds up to a page");
    }

    #[test]
    fn pool_reuses_pipes_up_to_its_limit() {
        let pool = PipePool::new(64 * 1024, 1);
        let first = pool.take().unwrap();
        let second = pool.take().unwrap();
        let fd = first.0.read.as_raw_fd();
        pool.give(first);
        pool.give(second);
        assert_eq!(pool.lock().len(), 1);
        assert_eq!(pool.take().unwrap().0.read.as_raw_fd(), fd);
        assert!(pool.lock().is_empty());
    }

    #[tokio::test]
    async fn relays_both_ways_and_passes_on_half_close() {
        // client <-> (a | relay | b) <-> server
        let (mut client, a) = pair().await;
        let (b, mut server) = pair().await;
        let pipes = (Pipe::new(64 * 1024).unwrap(), Pipe::new(64 * 1024).unwrap());
        let relay = tokio::spawn(async move { relay(&a, &b, &pipes).await });

        let up: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = up.clone();
        let sender = tokio::spawn(async move {
            client.write_all(&up).await.unwrap();
            client.shutdown().await.unwrap();
            let mut down = Vec::new();
            client.read_to_end(&mut down).await.unwrap();
            down
        });
        let mut received = Vec::new();
        server.read_to_end(&mut received).await.unwrap();
        assert!(received == expected);
        // The client's end of stream came through; the server can still answer.
        server.write_all(b"done").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(sender.await.unwrap(), b"done");
        assert_eq!(relay.await.unwrap().unwrap(), (3_000_000, 4));
    }
}
