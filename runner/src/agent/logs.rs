//! Container logs: each container's stdout and stderr, interleaved as written, in
//! `<root>/tasks/<task id>/<container>.log`, and readers that follow a log as it grows.
//!
//! A [`LogWriter`] appends what the container writes and tells the followers how far the
//! file goes; [`follow`] streams a log from its start and, until the writer is closed (the
//! container has exited), waits for more instead of ending at the end of the file. The file
//! stays when the container exits: it goes with the task's directory when the task is cleaned
//! up.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// How much a follower reads at once.
const CHUNK: usize = 64 * 1024;

/// The state a log's writer shares with its followers.
#[derive(Debug, Clone)]
pub(crate) struct LogHandle {
    path: PathBuf,
    progress: Arc<watch::Sender<Progress>>,
}

/// How far a log is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    /// Bytes written.
    len: u64,
    /// No more will be.
    closed: bool,
}

impl LogHandle {
    /// The log at `path`, created empty (or emptied) for a writer to come.
    pub(crate) fn create(path: PathBuf) -> io::Result<LogHandle> {
        File::create(&path)?;
        Ok(LogHandle {
            path,
            progress: Arc::new(watch::Sender::new(Progress::default())),
        })
    }

    /// The log at `path` as a past run left it: closed, nothing more will be written.
    pub(crate) fn existing(path: PathBuf) -> LogHandle {
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        LogHandle {
            path,
            progress: Arc::new(watch::Sender::new(Progress { len, closed: true })),
        }
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A writer that appends to the log; it closes the log when dropped.
    pub(crate) fn writer(&self) -> io::Result<LogWriter> {
        let file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(LogWriter {
            file,
            handle: self.clone(),
        })
    }

    /// Marks the log closed: followers end at its end.
    pub(crate) fn close(&self) {
        self.progress.send_modify(|p| p.closed = true);
    }
}

/// Appends a container's output to its log.
#[derive(Debug)]
pub(crate) struct LogWriter {
    file: File,
    handle: LogHandle,
}

impl LogWriter {
    /// Appends `bytes`. A failed write is logged once per call and the bytes dropped: a full
    /// disk must not stop the container.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        match self.file.write_all(bytes) {
            Ok(()) => self
                .handle
                .progress
                .send_modify(|p| p.len += bytes.len() as u64),
            Err(err) => {
                tracing::warn!(log = %self.handle.path.display(), %err, "cannot write container output")
            }
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.handle.close();
    }
}

/// The log's bytes from its start: all of it and then the end when `follow` is false or the
/// log is closed; otherwise what is written next as it comes, until the log is closed.
pub(crate) fn follow(
    handle: &LogHandle,
    follow: bool,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    struct State {
        file: Option<tokio::fs::File>,
        path: PathBuf,
        progress: watch::Receiver<Progress>,
        follow: bool,
        done: bool,
    }
    let state = State {
        file: None,
        path: handle.path.clone(),
        progress: handle.progress.subscribe(),
        follow,
        done: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        if state.file.is_none() {
            match tokio::fs::File::open(&state.path).await {
                Ok(file) => state.file = Some(file),
                Err(err) => {
                    state.done = true;
                    return Some((Err(err), state));
                }
            }
        }
        let mut buf = vec![0; CHUNK];
        loop {
            // Seen before the read: a close noted here means every byte is in the file.
            let seen = *state.progress.borrow_and_update();
            let file = state.file.as_mut().expect("the file was opened above");
            match file.read(&mut buf).await {
                Ok(0) => {
                    if !state.follow || seen.closed {
                        return None;
                    }
                    if state.progress.changed().await.is_err() {
                        // The writer's handle is gone: nothing more will come.
                        state.follow = false;
                    }
                }
                Ok(n) => {
                    buf.truncate(n);
                    return Some((Ok(Bytes::from(buf)), state));
                }
                Err(err) => {
                    state.done = true;
                    return Some((Err(err), state));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn collect(stream: impl Stream<Item = io::Result<Bytes>>) -> Vec<u8> {
        let mut out = Vec::new();
        futures_util::pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_follower_sees_everything_until_the_writer_closes() {
        let dir = tempfile::tempdir().unwrap();
        let handle = LogHandle::create(dir.path().join("app.log")).unwrap();
        let mut writer = handle.writer().unwrap();
        writer.write(b"one\n");
        let follower = tokio::spawn(collect(follow(&handle, true)));
        let snapshot = collect(follow(&handle, false)).await;
        assert_eq!(snapshot, b"one\n");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let writing = std::thread::spawn(move || {
            writer.write(b"two\n");
            writer.write(b"three\n");
            drop(writer);
        });
        writing.join().unwrap();
        let all = tokio::time::timeout(std::time::Duration::from_secs(5), follower)
            .await
            .expect("the follower ends once the log is closed")
            .unwrap();
        assert_eq!(all, b"one\ntwo\nthree\n");
        let again = collect(follow(&handle, true)).await;
        assert_eq!(
            again, b"one\ntwo\nthree\n",
            "a closed log is read to its end"
        );

        let past = LogHandle::existing(handle.path().to_owned());
        assert_eq!(collect(follow(&past, true)).await, b"one\ntwo\nthree\n");
    }
}
