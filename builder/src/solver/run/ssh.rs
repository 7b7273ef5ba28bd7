//! SSH agents for `RUN --mount=type=ssh`: the `--ssh` values that name them, and the socket a
//! step gets for one.
//!
//! As BuildKit does, a step never sees the host's agent socket itself: it gets a socket of its
//! own (with the mount's `mode`, `uid` and `gid`) in a temporary directory, bound at the
//! mount's target, and each connection to it is forwarded to the agent. Only agent sockets can
//! be given; key files, which buildx loads into an agent of its own, are refused.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The id of an SSH mount or a `--ssh` value that names none.
pub(in crate::solver) const DEFAULT_SSH_ID: &str = "default";

/// Parses a `--ssh` value as buildx does: `ID[=SOCKET]`, where an empty id is
/// [`DEFAULT_SSH_ID`] and no socket (or an empty one) is `$SSH_AUTH_SOCK`. The socket must
/// exist; it is made absolute.
pub fn parse_ssh_spec(spec: &str) -> Result<(String, PathBuf), String> {
    parse_ssh_spec_with(spec, std::env::var_os("SSH_AUTH_SOCK"))
}

/// The SSH agent sockets by id, from `--ssh` values; an id given twice is an error, as in
/// buildx.
pub fn parse_ssh<S: AsRef<str>>(specs: &[S]) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (id, socket) = parse_ssh_spec(spec.as_ref())?;
        if out.contains_key(&id) {
            return Err(format!("invalid duplicate ID {id}"));
        }
        out.insert(id, socket);
    }
    Ok(out)
}

/// [`parse_ssh_spec`] with `auth_sock` as the value of `SSH_AUTH_SOCK`.
fn parse_ssh_spec_with(
    spec: &str,
    auth_sock: Option<OsString>,
) -> Result<(String, PathBuf), String> {
    let (id, paths) = match spec.split_once('=') {
        Some((id, paths)) => (id, paths.split(',').collect::<Vec<_>>()),
        None => (spec, Vec::new()),
    };
    let id = if id.is_empty() { DEFAULT_SSH_ID } else { id };
    let socket = match paths.as_slice() {
        [] | [""] => {
            let sock = auth_sock.filter(|s| !s.is_empty()).ok_or_else(|| {
                format!("{id}: invalid empty ssh agent socket: make sure SSH_AUTH_SOCK is set")
            })?;
            PathBuf::from(sock)
        }
        [path] => PathBuf::from(path),
        [first, ..] => {
            check_socket(Path::new(first))?;
            return Err(format!(
                "{id}: only single socket allowed (berth forwards one SSH agent socket per id)"
            ));
        }
    };
    check_socket(&socket)?;
    let socket = std::path::absolute(&socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    Ok((id.to_owned(), socket))
}

/// Fails unless `path` is a UNIX socket (following symlinks).
fn check_socket(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("failed to stat {}: {e}", path.display()))?;
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{} is not a socket: only SSH agent sockets are supported, not key files \
             (add the key to an agent with ssh-add and give the agent's socket)",
            path.display()
        ));
    }
    Ok(())
}

/// A listening socket that forwards each connection to an SSH agent's socket, until it is
/// dropped. Dropping it stops the listener and closes the connections still open.
#[derive(Debug)]
pub(in crate::solver) struct AgentProxy {
    listener: UnixListener,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<UnixStream>>>,
    accepter: Option<JoinHandle<()>>,
}

impl AgentProxy {
    /// Listens at `path` (which must not exist), a socket with `mode`, `uid` and `gid`, and
    /// forwards to the agent at `agent`.
    pub(in crate::solver) fn start(
        path: &Path,
        agent: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<AgentProxy> {
        let listener = UnixListener::bind(path)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accepting = listener.try_clone()?;
        let accepter = {
            let stop = stop.clone();
            let connections = connections.clone();
            std::thread::Builder::new()
                .name("ssh-agent-proxy".into())
                .spawn(move || accept(accepting, agent, stop, connections))?
        };
        Ok(AgentProxy {
            listener,
            stop,
            connections,
            accepter: Some(accepter),
        })
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread: `accept` on a listener that is shut down fails.
        // SAFETY: the descriptor is valid for the lifetime of `self.listener`.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
        let connections = std::mem::take(
            &mut *self
                .connections
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for stream in connections {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Accepts connections on `listener` until `stop`, forwarding each to `agent` on a thread of
/// its own; both ends of every connection go into `connections`, for the proxy to close.
fn accept(
    listener: UnixListener,
    agent: PathBuf,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<UnixStream>>>,
) {
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let client = match client {
            Ok(client) => client,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                tracing::warn!(%err, "ssh agent forwarding: cannot accept a connection");
                return;
            }
        };
        let upstream = match UnixStream::connect(&agent) {
            Ok(upstream) => upstream,
            Err(err) => {
                tracing::warn!(agent = %agent.display(), %err, "cannot reach the ssh agent");
                continue;
            }
        };
        let clones = (|| Ok::<_, io::Error>((client.try_clone()?, upstream.try_clone()?)))();
        let Ok((client_copy, upstream_copy)) = clones else {
            continue;
        };
        if let Ok(mut open) = connections.lock() {
            open.extend([client_copy, upstream_copy]);
        }
        let spawned = std::thread::Builder::new()
            .name("ssh-agent-conn".into())
            .spawn(move || forward(client, upstream));
        if let Err(err) = spawned {
            tracing::warn!(%err, "ssh agent forwarding: cannot start a thread");
        }
    }
}

/// Copies bytes both ways between `client` and `upstream` until both directions are closed.
fn forward(client: UnixStream, upstream: UnixStream) {
    let (Ok(mut client_in), Ok(mut upstream_out)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let requests = std::thread::Builder::new()
        .name("ssh-agent-conn".into())
        .spawn(move || {
            let _ = io::copy(&mut client_in, &mut upstream_out);
            let _ = upstream_out.shutdown(Shutdown::Write);
        });
    let _ = io::copy(&mut &upstream, &mut &client);
    let _ = client.shutdown(Shutdown::Write);
    if let Ok(requests) = requests {
        let _ = requests.join();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// An "agent" that answers what it reads on each connection, upper-cased, until the
    /// connection is closed.
    fn echo_agent(path: &Path) {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        if stream.write_all(&buf[..n].to_ascii_uppercase()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn ssh_specs_parse_as_buildx_parses_them() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        let env = Some(OsString::from(&sock));
        assert_eq!(
            parse_ssh_spec_with("default", env.clone()).unwrap(),
            ("default".into(), sock.clone())
        );
        assert_eq!(
            parse_ssh_spec_with("default=", env.clone()).unwrap(),
            ("default".into(), sock.clone())
        );
        let spec = format!("git={}", sock.display());
        assert_eq!(
            parse_ssh_spec_with(&spec, None).unwrap(),
            ("git".into(), sock.clone())
        );
        let spec = format!("={}", sock.display());
        assert_eq!(
            parse_ssh_spec_with(&spec, None).unwrap(),
            ("default".into(), sock.clone())
        );

        let e = parse_ssh_spec_with("default", None).unwrap_err();
        assert!(e.contains("SSH_AUTH_SOCK"), "{e}");
        let e = parse_ssh_spec_with("default", Some(OsString::new())).unwrap_err();
        assert!(e.contains("SSH_AUTH_SOCK"), "{e}");
        let missing = dir.path().join("missing");
        let e = parse_ssh_spec_with(&format!("default={}", missing.display()), None).unwrap_err();
        assert!(e.starts_with("failed to stat"), "{e}");
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        let e = parse_ssh_spec_with(&format!("default={}", key.display()), None).unwrap_err();
        assert!(e.contains("only SSH agent sockets are supported"), "{e}");
        let spec = format!("default={},{}", sock.display(), sock.display());
        let e = parse_ssh_spec_with(&spec, None).unwrap_err();
        assert!(e.contains("only single socket allowed"), "{e}");
    }

    #[test]
    fn an_id_given_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        let one = format!("a={}", sock.display());
        let two = format!("b={}", sock.display());
        let parsed = parse_ssh(&[&one, &two]).unwrap();
        assert_eq!(parsed.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            parse_ssh(&[&one, &one]).unwrap_err(),
            "invalid duplicate ID a"
        );
    }

    #[test]
    fn the_proxy_forwards_connections_and_stops_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent.sock");
        echo_agent(&agent);
        let path = dir.path().join("proxy.sock");
        // SAFETY: neither call has preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let proxy = AgentProxy::start(&path, agent, 0o600, uid, gid).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        for _ in 0..2 {
            let mut conn = UnixStream::connect(&path).unwrap();
            conn.write_all(b"list keys").unwrap();
            let mut buf = [0u8; 9];
            conn.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"LIST KEYS");
        }
        // A connection still open when the proxy goes is closed.
        let mut open = UnixStream::connect(&path).unwrap();
        open.write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        open.read_exact(&mut buf).unwrap();
        drop(proxy);
        let mut rest = Vec::new();
        assert_eq!(open.read_to_end(&mut rest).unwrap(), 0);
        assert!(UnixStream::connect(&path).is_err(), "no longer listening");
    }
}
