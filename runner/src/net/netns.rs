//! Named network namespaces, as `ip netns` keeps them: a namespace bind-mounted on
//! `/run/netns/<name>`, which outlives every process in it until it is deleted. A container
//! joins one by that path (the sandbox's `Network::Join`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::Error;
use super::cmd::{ABSENT, IP};

/// Where `ip netns` keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The path of the named network namespace `name`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether the named namespace exists.
pub(crate) fn exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// `ip netns add NAME`, then `lo` up inside it.
pub(crate) fn add(name: &str) -> Result<(), Error> {
    IP.run(&["netns", "add", name])?;
    IP.run(&["-n", name, "link", "set", "dev", "lo", "up"])?;
    Ok(())
}

/// `ip netns delete NAME`; `Ok(false)` when it did not exist. The namespace itself lives on
/// while a process is still in it, but its name and its devices' links to the host go.
pub(crate) fn delete(name: &str) -> Result<bool, Error> {
    IP.run_unless(&["netns", "delete", name], ABSENT)
}

/// Runs `f` on a thread of its own that has joined the network namespace at `netns` (as CNI's
/// `ns.WithNetNSPath` does), and returns what it returns.
///
/// Sockets that `f` creates belong to that namespace for good, whichever thread uses them
/// afterwards: a listener made here accepts connections inside the namespace, and a stream
/// connected here talks from inside it. The calling thread's own namespace never changes.
///
/// # Errors
/// [`Error::EnterNamespace`] when the namespace cannot be opened or joined (`setns(2)` needs
/// `CAP_SYS_ADMIN`). A panic in `f` is resumed on the calling thread.
pub fn within<T, F>(netns: &Path, f: F) -> Result<T, Error>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let enter_error = |source| Error::EnterNamespace {
        path: netns.to_owned(),
        source,
    };
    let file = File::open(netns).map_err(enter_error)?;
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("berth-netns".into())
            .spawn_scoped(scope, move || {
                // SAFETY: setns on a descriptor that `file` keeps open; it changes only this
                // thread's network namespace, which this thread alone uses and which ends with it.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                drop(file);
                Ok(f())
            })
            .map_err(enter_error)?;
        match worker.join() {
            Ok(result) => result.map_err(enter_error),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
