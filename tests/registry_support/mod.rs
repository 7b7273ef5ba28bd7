//! Shared by the tests that run `berth registry serve` as a real process: starting and stopping
//! the server, and a minimal HTTP/1.1 client on `std::net` (one request per connection). `oci`
//! holds the hand-made images that the tests of the image verbs and of `berth build` load.

#![allow(dead_code)]

mod oci;
// Not every test binary that includes this module uses these helpers.
#[allow(unused_imports)]
pub use oci::*;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `berth registry serve`.
pub struct Server {
    child: Option<Child>,
    /// `host:port` it listens on.
    pub addr: String,
}

impl Server {
    /// Starts the server on a free loopback port over `root` and waits until it answers.
    pub fn start(root: &Path) -> Server {
        Server::start_on(root, "127.0.0.1:0")
    }

    /// Starts the server on `addr` over `root`.
    pub fn start_on(root: &Path, addr: &str) -> Server {
        Server::start_with(root, addr, &[])
    }

    /// Starts the server on `addr` over `root`, with more arguments (`--config FILE`).
    pub fn start_with(root: &Path, addr: &str, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["registry", "serve", "--addr", addr, "--root"])
            .arg(root)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("BERTH_LOG", "warn")
            .spawn()
            .expect("spawn berth registry serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
            .to_owned();
        let server = Server {
            child: Some(child),
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // `/healthz`, which answers with or without authentication.
            if let Ok(reply) = server.request("GET", "/healthz", &[], b"")
                && reply.status == 200
            {
                return server;
            }
            assert!(Instant::now() < deadline, "the registry did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the server");
            child.wait().expect("reap the server");
        }
    }

    /// SIGTERM, then waits for a graceful exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the server did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One request on a fresh connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> io::Result<Reply> {
        request(&self.addr, method, path, headers, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A credential from `berth registry credential` for `subject`, allowing `allow`
/// (`ACTIONS:PATTERN`), signed with the key file `key`.
pub fn credential(key: &Path, subject: &str, allow: &str) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "registry",
            "credential",
            "--subject",
            subject,
            "--allow",
            allow,
        ])
        .arg("--key")
        .arg(key))
    .trim()
    .to_owned()
}

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first error code of a spec error body.
    pub fn code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["errors"][0]["code"].as_str().map(str::to_owned)
    }
}

/// Sends one HTTP/1.1 request with `Connection: close` and reads the whole response.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> io::Result<Reply> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head_only: bool) -> io::Result<Reply> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("incomplete response head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    if head_only {
        body.clear();
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok())
        && body.len() != len
    {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("body has {} bytes, expected {len}", body.len()),
        ));
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The Debian docker client, which speaks to the Debian daemon.
pub const DOCKER: &str = "/usr/bin/docker";
pub const DOCKERD: &str = "/usr/sbin/dockerd";
pub const SKOPEO: &str = "/usr/bin/skopeo";
/// A static busybox (Debian package busybox-static), runnable in an image with nothing else.
pub const BUSYBOX: &str = "/bin/busybox";

/// Panics, naming the setup script, unless `path` exists.
pub fn require_tool(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} not found (Debian package {package}): run scripts/setup.sh"
    );
}

/// Runs a command and returns its stdout, panicking with its stderr when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}; run scripts/setup.sh"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker_answers() -> bool {
    Command::new(DOCKER)
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Makes sure the Docker daemon answers, starting it if it does not.
pub fn ensure_docker() {
    require_tool(DOCKER, "docker.io");
    require_tool(DOCKERD, "docker.io");
    if docker_answers() {
        return;
    }
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("(setsid {DOCKERD} >/var/log/dockerd.log 2>&1 &)"))
        .status()
        .expect("start dockerd");
    assert!(status.success(), "starting {DOCKERD} failed: {status}");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !docker_answers() {
        assert!(
            Instant::now() < deadline,
            "dockerd did not answer within 90 s: run scripts/setup.sh"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
