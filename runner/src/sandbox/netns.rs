//! Network namespaces that containers join ([`super::Network::Join`]).
//!
//! The sandbox only checks the file it is given; making the namespace and its interfaces
//! (`ip netns add`, a veth into a bridge, addresses, routes, `lo` up) is the caller's.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::error::Error;

/// `NS_GET_NSTYPE` (`_IO(0xb7, 0x3)`, Linux 4.11): the `CLONE_NEW*` type of a namespace file.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// The network namespace the calling thread is in; the runtime it spawns starts there.
const OWN_NETWORK_NAMESPACE: &str = "/proc/thread-self/ns/net";

/// Checks that `path` holds a network namespace: a bind mount made by `ip netns add`
/// (`/run/netns/<name>`) or a process's `/proc/<pid>/ns/net`.
pub(crate) fn check(path: &Path) -> Result<(), Error> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    // SAFETY: the descriptor is valid for the lifetime of `file`; NS_GET_NSTYPE takes no
    // argument.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if kind < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EINVAL) => Error::InvalidSpec(format!(
                "{} is not a namespace file (expected a network namespace such as \
                 /run/netns/NAME or /proc/PID/ns/net)",
                path.display()
            )),
            _ => Error::io("inspect", path, err),
        });
    }
    if kind != libc::CLONE_NEWNET {
        return Err(Error::InvalidSpec(format!(
            "{} is a namespace, but not a network namespace",
            path.display()
        )));
    }
    Ok(())
}

/// Whether `path` is the network namespace the calling thread is in: joining it is the same as
/// the host's network.
pub(crate) fn is_own(path: &Path) -> bool {
    match (
        std::fs::metadata(path),
        std::fs::metadata(OWN_NETWORK_NAMESPACE),
    ) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_files_are_told_apart() {
        check(Path::new("/proc/self/ns/net")).unwrap();
        assert!(is_own(Path::new("/proc/self/ns/net")));

        let err = check(Path::new("/proc/self/ns/uts")).unwrap_err();
        assert!(err.to_string().contains("not a network namespace"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        let err = check(&plain).unwrap_err();
        assert!(err.to_string().contains("is not a namespace file"), "{err}");
        assert!(!is_own(&plain));
        let err = check(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
    }
}
