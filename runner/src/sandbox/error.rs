//! The sandbox's one error type.

use std::io;
use std::path::PathBuf;

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
