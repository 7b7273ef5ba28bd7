//! The command-line tools this module drives: `ip` (iproute2) and `iptables`.
//!
//! Links, addresses, routes and namespaces are made with `ip`, as CNI's reference plugins and
//! ECS's agent make them through netlink: one command per change, each checked, and the
//! tool's own stderr in the error when it fails. The tools are looked up on `PATH` and then in
//! `/usr/sbin` and `/sbin`, where Debian keeps them (a non-login shell's `PATH` may lack them).
//! They run with `LC_ALL=C`, so that the messages this module recognises are the English ones.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use super::Error;

/// A command-line tool and the Debian package that provides it.
pub(crate) struct Tool {
    program: &'static str,
    package: &'static str,
    resolved: OnceLock<Option<PathBuf>>,
}

/// iproute2's `ip`.
pub(crate) static IP: Tool = Tool::new("ip", "iproute2");
/// `iptables` (the nf_tables or legacy variant, whichever the system selected).
pub(crate) static IPTABLES: Tool = Tool::new("iptables", "iptables");

const FALLBACK_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

impl Tool {
    const fn new(program: &'static str, package: &'static str) -> Self {
        Tool {
            program,
            package,
            resolved: OnceLock::new(),
        }
    }

    /// The tool's path, or `None` when it is not installed.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.resolved
            .get_or_init(|| {
                let path_dirs = std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                    .unwrap_or_default();
                path_dirs
                    .into_iter()
                    .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
                    .map(|dir| dir.join(self.program))
                    .find(|candidate| is_executable(candidate))
            })
            .as_deref()
    }

    /// Whether the tool is installed.
    pub(crate) fn available(&self) -> bool {
        self.path().is_some()
    }

    /// Runs the tool and returns its output whatever its exit status.
    pub(crate) fn output<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output, Error> {
        let path = self.path().ok_or_else(|| Error::ToolSpawn {
            program: self.program,
            package: self.package,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not found on PATH, /usr/sbin or /sbin",
            ),
        })?;
        Command::new(path)
            .args(args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::ToolSpawn {
                program: self.program,
                package: self.package,
                source,
            })
    }

    /// Runs the tool and returns its stdout; a non-zero exit is an [`Error::Command`].
    pub(crate) fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String, Error> {
        let out = self.output(args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(self.failure(args, &out))
        }
    }

    /// Runs several `ip` commands in one process (`ip [-n NETNS] -batch -`), one per line,
    /// stopping at the first that fails; the error names that command.
    pub(crate) fn batch(&self, netns: Option<&str>, lines: &[Vec<String>]) -> Result<(), Error> {
        let mut args: Vec<&str> = Vec::new();
        if let Some(ns) = netns {
            args.extend(["-n", ns]);
        }
        args.extend(["-batch", "-"]);
        let path = self.path().ok_or_else(|| Error::ToolSpawn {
            program: self.program,
            package: self.package,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not found on PATH, /usr/sbin or /sbin",
            ),
        })?;
        let spawn_error = |source| Error::ToolSpawn {
            program: self.program,
            package: self.package,
            source,
        };
        let mut child = Command::new(path)
            .args(&args)
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        let script: String = lines
            .iter()
            .map(|line| {
                debug_assert!(
                    line.iter()
                        .all(|w| !w.is_empty() && !w.contains(char::is_whitespace))
                );
                line.join(" ") + "\n"
            })
            .collect();
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // A write error means `ip` exited early; its status and stderr say why.
        let _ = stdin.write_all(script.as_bytes());
        drop(stdin);
        let out = child.wait_with_output().map_err(spawn_error)?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        // "Command failed -:N" names the line.
        let failed = stderr
            .rsplit_once("Command failed -:")
            .and_then(|(_, n)| n.trim().parse::<usize>().ok())
            .and_then(|n| lines.get(n.checked_sub(1)?));
        let mut shown: Vec<&str> = netns.map(|ns| vec!["-n", ns]).unwrap_or_default();
        let command = match failed {
            Some(line) => {
                shown.extend(line.iter().map(String::as_str));
                self.command_line(&shown)
            }
            // A bad argument stops `ip` before it says which line: show them all.
            None => {
                shown.extend(["-batch", "-"]);
                let all: Vec<String> = lines.iter().map(|l| l.join(" ")).collect();
                format!("{} ({})", self.command_line(&shown), all.join("; "))
            }
        };
        Err(Error::Command {
            command,
            status: out.status,
            stderr: stderr
                .lines()
                .filter(|l| !l.starts_with("Command failed"))
                .collect::<Vec<_>>()
                .join("; ")
                .trim()
                .to_owned(),
        })
    }

    /// Runs the tool; a failure whose stderr contains one of `absent` (the tool's way of
    /// saying that the object to remove is not there) is `Ok(false)`, success `Ok(true)`.
    pub(crate) fn run_unless<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        absent: &[&str],
    ) -> Result<bool, Error> {
        let out = self.output(args)?;
        if out.status.success() {
            return Ok(true);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if absent.iter().any(|a| stderr.contains(a)) {
            Ok(false)
        } else {
            Err(self.failure(args, &out))
        }
    }

    /// The error for a failed run.
    pub(crate) fn failure<S: AsRef<OsStr>>(&self, args: &[S], out: &Output) -> Error {
        Error::Command {
            command: self.command_line(args),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }
    }

    /// The command line as a shell would show it.
    pub(crate) fn command_line<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let mut line = self.program.to_owned();
        for arg in args {
            let arg = arg.as_ref().to_string_lossy();
            line.push(' ');
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '!') {
                line.push('\'');
                line.push_str(&arg);
                line.push('\'');
            } else {
                line.push_str(&arg);
            }
        }
        line
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// What `ip` says when the link, address or namespace to look at or remove is not there.
pub(crate) const ABSENT: &[&str] = &[
    "does not exist",
    "Cannot find device",
    "No such file or directory",
    "No such device",
];

/// One link as `ip -j -d link show` describes it.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) name: String,
    /// `linkinfo.info_kind` (`bridge`, `veth`, ...), `None` for a physical device.
    pub(crate) kind: Option<String>,
    pub(crate) master: Option<String>,
    pub(crate) alias: Option<String>,
    pub(crate) up: bool,
}

/// `ip [-n NETNS] -j -d link show [ARGS]`: the links, parsed.
pub(crate) fn links(netns: Option<&str>, filter: &[&str]) -> Result<Vec<Link>, Error> {
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["-j", "-d", "link", "show"]);
    args.extend(filter);
    let stdout = IP.run(&args)?;
    parse_links(&args, &stdout)
}

fn parse_links(args: &[&str], stdout: &str) -> Result<Vec<Link>, Error> {
    let value = parse_json(args, stdout)?;
    let array = value.as_array().ok_or_else(|| Error::Output {
        command: IP.command_line(args),
        reason: "expected a JSON array".into(),
    })?;
    Ok(array
        .iter()
        .filter_map(|link| {
            let name = link.get("ifname")?.as_str()?.to_owned();
            let text = |key: &str| link.get(key).and_then(Value::as_str).map(str::to_owned);
            Some(Link {
                kind: link
                    .get("linkinfo")
                    .and_then(|i| i.get("info_kind"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                master: text("master"),
                alias: text("ifalias"),
                up: link
                    .get("flags")
                    .and_then(Value::as_array)
                    .is_some_and(|f| f.iter().any(|f| f == "UP")),
                name,
            })
        })
        .collect())
}

/// One link by name, `None` when it does not exist.
pub(crate) fn link(netns: Option<&str>, name: &str) -> Result<Option<Link>, Error> {
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["-j", "-d", "link", "show", "dev", name]);
    let out = IP.output(&args)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if ABSENT.iter().any(|a| stderr.contains(a)) {
            return Ok(None);
        }
        return Err(IP.failure(&args, &out));
    }
    let found = parse_links(&args, &String::from_utf8_lossy(&out.stdout))?;
    Ok(found.into_iter().find(|l| l.name == name))
}

/// IPv4 addresses as `(device, address/prefix)` pairs: those of `dev`, or of every device.
pub(crate) fn ipv4_addresses(
    netns: Option<&str>,
    dev: Option<&str>,
) -> Result<Vec<(String, String)>, Error> {
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["-j", "-4", "addr", "show"]);
    if let Some(dev) = dev {
        args.extend(["dev", dev]);
    }
    let stdout = IP.run(&args)?;
    let value = parse_json(&args, &stdout)?;
    let mut found = Vec::new();
    for link in value.as_array().into_iter().flatten() {
        let Some(name) = link.get("ifname").and_then(Value::as_str) else {
            continue;
        };
        for info in link
            .get("addr_info")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(local), Some(prefix)) = (
                info.get("local").and_then(Value::as_str),
                info.get("prefixlen").and_then(Value::as_u64),
            ) {
                found.push((name.to_owned(), format!("{local}/{prefix}")));
            }
        }
    }
    Ok(found)
}

fn parse_json(args: &[&str], stdout: &str) -> Result<Value, Error> {
    // Old iproute2 prints nothing at all for an empty list.
    if stdout.trim().is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    serde_json::from_str(stdout).map_err(|e| Error::Output {
        command: IP.command_line(args),
        reason: format!("not JSON: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        assert_eq!(
            IPTABLES.command_line(&["-t", "nat", "!", "-o", "berth0", "--comment", "a b"]),
            "iptables -t nat '!' -o berth0 --comment 'a b'"
        );
    }
}
