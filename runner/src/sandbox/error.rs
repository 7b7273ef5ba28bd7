//! The sandbox's one error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::ContainerState;

/// What went wrong while preparing, running or cleaning up a sandboxed process.
///
/// A process that exits with a non-zero code is not an error: [`super::Sandbox::run`] reports
/// its exit code. These variants are the failures of the sandbox itself and of its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The OCI runtime binary does not exist, is not executable, or is not on `PATH`.
    #[error("OCI runtime {} not found or not executable", runtime.display())]
    RuntimeNotFound {
        /// The path or name that was looked up.
        runtime: PathBuf,
    },

    /// The OCI runtime could not be started.
    #[error("cannot start OCI runtime {}: {source}", runtime.display())]
    RuntimeSpawn {
        /// The runtime binary.
        runtime: PathBuf,
        /// Why `exec` failed.
        #[source]
        source: io::Error,
    },

    /// The OCI runtime reported a failure of its own (it could not create or start the
    /// container), as opposed to the container's process exiting non-zero.
    #[error("{} {action} failed: {message}", runtime.display())]
    Runtime {
        /// The runtime binary.
        runtime: PathBuf,
        /// The runtime command that failed (`run`, `delete`, ...).
        action: &'static str,
        /// The runtime's own error message.
        message: String,
    },

    /// A user named in `USER` is not in the image's passwd file.
    #[error("unable to find user {user}: no matching entries in {}", file.display())]
    UnknownUser {
        /// The user name as given.
        user: String,
        /// The file that was searched, as a path inside the container (`/etc/passwd`).
        file: PathBuf,
    },

    /// A group named in `USER user:group` is not in the image's group file.
    #[error("unable to find group {group}: no matching entries in {}", file.display())]
    UnknownGroup {
        /// The group name as given.
        group: String,
        /// The file that was searched, as a path inside the container (`/etc/group`).
        file: PathBuf,
    },

    /// A `USER` value that cannot name a user, such as an id out of range.
    #[error("invalid user {user:?}: {reason}")]
    InvalidUser {
        /// The value as given.
        user: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The run description is unusable (a relative working directory, no arguments, ...).
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),

    /// A mount the sandbox makes itself failed.
    #[error("cannot mount {fstype} on {}: {source}", target.display())]
    Mount {
        /// The filesystem type (`overlay`).
        fstype: &'static str,
        /// The mount point.
        target: PathBuf,
        /// The error from `mount(2)`, with its errno.
        #[source]
        source: io::Error,
    },

    /// Unmounting a mount the sandbox made failed.
    #[error("cannot unmount {}: {source}", target.display())]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The error from `umount2(2)`, with its errno.
        #[source]
        source: io::Error,
    },

    /// Something is still mounted under a state directory that is about to be removed, so it is
    /// kept instead of deleting through the mount.
    #[error("{} is still mounted; the state directory is kept", target.display())]
    StillMounted {
        /// The mount point that is still there.
        target: PathBuf,
    },

    /// A file operation on the sandbox's state or on the root filesystem failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `write`, `read`, `remove`, ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The OCI runtime configuration could not be built.
    #[error("cannot build the OCI runtime config: {0}")]
    Spec(#[from] oci_spec::OciSpecError),

    /// The run was cancelled through its [`super::CancelToken`]; the container was killed and
    /// everything was cleaned up.
    #[error("the sandboxed process was cancelled")]
    Cancelled,

    /// A run asked for a container name ([`super::RunSpec::name`]) that a live run under the same
    /// state root holds.
    #[error("a container named {name} is already running under {}", root.display())]
    NameInUse {
        /// The name.
        name: String,
        /// The sandbox's state root.
        root: PathBuf,
    },

    /// A [`super::ContainerControl`] was handed to a second run; each run needs its own.
    #[error("the container control is already attached to container {container}")]
    ControlInUse {
        /// The container the control belongs to.
        container: String,
    },

    /// An operation on a [`super::ContainerControl`] needs a running container, and this one
    /// has not started yet, has exited, or never started.
    #[error("{} is not running: {state}", container_label(container))]
    NotRunning {
        /// The container id; `None` while the control is not attached to a run yet.
        container: Option<String>,
        /// Where the container is.
        state: ContainerState,
    },

    /// Waiting for a container to start or to exit took longer than the caller allowed.
    #[error("{} did not {event} within {timeout:?}", container_label(container))]
    Timeout {
        /// The container id; `None` while the control is not attached to a run yet.
        container: Option<String>,
        /// What was waited for: `start` or `exit`.
        event: &'static str,
        /// How long was waited.
        timeout: Duration,
    },

    /// A process run in a container with [`super::ContainerControl::exec`] did not finish in
    /// time, and was killed.
    #[error("{args:?} in container {container} did not finish within {timeout:?} and was killed")]
    ExecTimeout {
        /// The container id.
        container: String,
        /// The process's arguments.
        args: Vec<String>,
        /// The time it was given.
        timeout: Duration,
    },

    /// A cgroup cannot be made or set as asked (an invalid path, a limit out of range, a
    /// controller that is not mounted).
    #[error("cgroup {cgroup}: {reason}")]
    Cgroup {
        /// The cgroup path as given.
        cgroup: String,
        /// What is wrong.
        reason: String,
    },

    /// A cgroup cannot be removed because processes are still in it.
    #[error("cannot remove cgroup {}: processes are still in it", path.display())]
    CgroupBusy {
        /// The cgroup's directory.
        path: PathBuf,
    },
}

/// "container ID", or "the container" for a control that is not attached to a run yet.
fn container_label(container: &Option<String>) -> String {
    match container {
        Some(id) => format!("container {id}"),
        None => "the container".to_string(),
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
