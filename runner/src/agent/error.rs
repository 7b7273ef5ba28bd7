//! The agent's one error type.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::image::ImageError;

/// What went wrong in the agent or its task engine.
///
/// A task that fails (an image that cannot be pulled, a container that cannot start, an
/// essential container that exits) is not an error: it is a task that stops, with ECS's
/// `stopCode` and `stoppedReason`. These are the failures of the agent itself and of its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation on the agent's own state failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `write`, `read`, ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The container sandbox cannot be set up.
    #[error("container sandbox: {0}")]
    Sandbox(#[from] crate::sandbox::Error),

    /// The task network (the bridge, its state) cannot be set up.
    #[error("task network: {0}")]
    Network(#[from] crate::net::Error),

    /// The image store cannot be opened.
    #[error(transparent)]
    Images(Box<ImageError>),

    /// A task assignment that cannot be run as given.
    #[error("invalid task assignment {task_arn}: {reason}")]
    InvalidAssignment {
        /// The task.
        task_arn: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A task did not reach the state waited for in time.
    #[error("task {task_arn} did not {what} within {timeout:?}; it is {state}")]
    WaitTimedOut {
        /// The task.
        task_arn: String,
        /// What was waited for.
        what: String,
        /// How long was waited.
        timeout: Duration,
        /// A summary of where the task is.
        state: String,
    },

    /// The async runtime the engine needs cannot be started.
    #[error("cannot start the agent's async runtime: {0}")]
    Runtime(#[source] io::Error),

    /// The agent's HTTP server cannot listen where asked.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error from `bind(2)`.
        #[source]
        source: io::Error,
    },

    /// The control plane refused the agent (it answered, with an error that retrying will not
    /// fix).
    #[error("control plane {url}: {reason}")]
    ControlPlane {
        /// The URL called.
        url: String,
        /// The control plane's answer.
        reason: String,
    },

    /// The agent's saved state (`agent.json`) cannot be read.
    #[error("agent state {}: {reason}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// An agent option that cannot be used.
    #[error("invalid agent option: {0}")]
    InvalidOption(String),
}

impl From<ImageError> for Error {
    fn from(error: ImageError) -> Self {
        Error::Images(Box::new(error))
    }
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
