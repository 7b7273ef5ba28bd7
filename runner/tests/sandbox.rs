//! The sandbox against the real runc, as root, in a root filesystem made from busybox.
//!
//! These tests need root, `runc` and a static `/bin/busybox`; `bash scripts/setup.sh` installs
//! the packages. They fail, naming that script, when something is missing: they are never
//! skipped.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runner::sandbox::{
    CancelToken, DEFAULT_HOSTNAME, DEFAULT_PATH_ENV, Error, MIB, Mount, MountStubs, NOFILE_LIMIT,
    Network, Output, ProcessSpec, Resources, RootfsSpec, RunSpec, Sandbox, Stream, mounts_under,
};
use tempfile::TempDir;

mod sandbox_support;
use sandbox_support::{busybox_root, require_environment};

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
alice:x:1000:1000:Alice:/home/alice:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";

const GROUP: &str = "\
root:x:0:
wheel:x:10:root,alice
alice:x:1000:
dev:x:2000:alice
nogroup:x:65534:
";

/// A busybox root filesystem: `/bin` with every applet, `/etc/passwd`, `/etc/group`, and
/// `/data` with two files.
fn make_rootfs(dir: &Path) {
    busybox_root(dir, PASSWD, GROUP);
    fs::create_dir_all(dir.join("data")).unwrap();
    fs::write(dir.join("data/keep.txt"), "kept\n").unwrap();
    fs::write(dir.join("data/gone.txt"), "to be deleted\n").unwrap();
}

struct Fixture {
    tmp: TempDir,
    sandbox: Sandbox,
}

impl Fixture {
    fn new() -> Fixture {
        require_environment();
        let tmp = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::builder()
            .root(tmp.path().join("state"))
            .build()
            .expect("build the sandbox");
        Fixture { tmp, sandbox }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A fresh busybox root filesystem directory.
    fn rootfs(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        make_rootfs(&dir);
        dir
    }

    /// An overlay over one busybox lower directory, with empty upper and work directories.
    fn overlay(&self) -> (RootfsSpec, PathBuf, PathBuf) {
        let lower = self.rootfs("lower");
        let upper = self.path("upper");
        let work = self.path("work");
        fs::create_dir(&upper).unwrap();
        fs::create_dir(&work).unwrap();
        let spec = RootfsSpec::Overlay {
            lower: vec![lower.clone()],
            upper: upper.clone(),
            work,
        };
        (spec, lower, upper)
    }

    fn run(&self, spec: &RunSpec) -> Output {
        self.sandbox.output(spec).expect("run the sandbox")
    }

    /// Nothing left under the state root: no mounts, no directories (the root lock file is the
    /// root's own).
    fn assert_no_leftovers(&self) {
        let root = self.sandbox.root();
        let mounts = mounts_under(root).unwrap();
        assert!(
            mounts.is_empty(),
            "mounts left under {}: {mounts:?}",
            root.display()
        );
        let entries: Vec<String> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != ".lock")
            .collect();
        assert!(
            entries.is_empty(),
            "left in {}: {entries:?}",
            root.display()
        );
    }
}

fn sh(rootfs: RootfsSpec, script: &str) -> RunSpec {
    RunSpec::new(rootfs, ProcessSpec::new(["/bin/sh", "-c", script]))
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

/// Every entry under `dir`, relative, with a short description of its type.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                "dir".to_string()
            } else if ft.is_char_device() {
                format!("char {}", meta.rdev())
            } else if ft.is_symlink() {
                "symlink".to_string()
            } else {
                format!(
                    "file {}",
                    fs::read_to_string(&path).unwrap_or_default().trim()
                )
            };
            out.insert(rel, kind);
            if ft.is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The stubs the runtime leaves in a root filesystem that lacks them: `docker build` keeps the
/// `/dev`, `/proc` and `/sys` directories in its images, and so does the sandbox.
const RUNTIME_STUBS: [(&str, &str); 3] = [("dev", "dir"), ("proc", "dir"), ("sys", "dir")];

/// `entries` and the runtime's stubs.
fn with_runtime_stubs(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut out = map(entries);
    out.extend(map(&RUNTIME_STUBS));
    out
}

#[test]
fn echo_to_stdout() {
    let f = Fixture::new();
    let rootfs = f.rootfs("rootfs");
    let out = f.run(&sh(RootfsSpec::Dir(rootfs.clone()), "echo hello"));
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "hello\n");
    assert_eq!(text(&out.stderr), "");
    f.assert_no_leftovers();
}

#[test]
fn output_is_streamed_as_it_comes() {
    let f = Fixture::new();
    let rootfs = f.rootfs("rootfs");
    let spec = sh(
        RootfsSpec::Dir(rootfs),
        "echo first; sleep 1; echo second >&2; sleep 1; echo third",
    );
    let start = Instant::now();
    let mut chunks: Vec<(Stream, String, Duration)> = Vec::new();
    let status = f
        .sandbox
        .run(&spec, &mut |stream, bytes| {
            chunks.push((stream, text(bytes).to_string(), start.elapsed()))
        })
        .unwrap();
    assert!(status.success());
    let joined: Vec<(Stream, &str)> = chunks.iter().map(|(s, t, _)| (*s, t.as_str())).collect();
    assert_eq!(
        joined,
        [
            (Stream::Stdout, "first\n"),
            (Stream::Stderr, "second\n"),
            (Stream::Stdout, "third\n")
        ]
    );
    // The first line arrived while the command was still running.
    assert!(chunks[2].2 - chunks[0].2 >= Duration::from_millis(1500));
    f.assert_no_leftovers();
}

#[test]
fn exit_code_is_a_result_not_an_error() {
    let f = Fixture::new();
    let rootfs = f.rootfs("rootfs");
    let out = f.run(&sh(RootfsSpec::Dir(rootfs), "echo before; exit 3"));
    assert_eq!(out.status.code(), 3);
    assert!(!out.status.success());
    assert_eq!(text(&out.stdout), "before\n");
    f.assert_no_leftovers();
}

/// The host pid of a process whose command line is exactly `args`.
fn find_process(args: &[&str]) -> Option<i32> {
    let want: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        (fs::read(entry.path().join("cmdline")).ok()? == want).then_some(pid)
    })
}

/// Runs `spec`, sending SIGKILL from outside the container, as the OOM killer or an operator
/// would, to its process running `args` once that shows up.
fn run_killed_from_outside(f: &Fixture, spec: &RunSpec, args: &[&str]) -> Output {
    std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Some(pid) = find_process(args) {
                    // SAFETY: kill has no memory preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        f.run(spec)
    })
}

#[test]
fn killed_process_reports_128_plus_signal() {
    let f = Fixture::new();
    let rootfs = f.rootfs("rootfs");
    // The container's init is killed from outside.
    let spec = RunSpec::new(RootfsSpec::Dir(rootfs), ProcessSpec::new(["sleep", "4711"]));
    let out = run_killed_from_outside(&f, &spec, &["sleep", "4711"]);
    assert_eq!(out.status.code(), 137);
    assert!(!out.status.oom_killed(), "a SIGKILL is not an OOM kill");
    f.assert_no_leftovers();
}

#[test]
fn an_oom_killed_container_is_reported_and_other_exits_are_not() {
    let f = Fixture::new();
    let rootfs = f.rootfs("rootfs");
    let limited = |args: &[&str]| {
        let mut spec = RunSpec::new(
            RootfsSpec::Dir(rootfs.clone()),
            ProcessSpec::new(args.iter().copied()),
        );
        spec.resources = Some(Resources {
            memory_limit: Some(16 * MIB),
            ..Resources::default()
        });
        spec
    };

    // dd's 64 MiB buffer does not fit in 16 MiB: the kernel kills it.
    let out = f.run(&limited(&[
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]));
    assert_eq!(out.status.code(), 137, "{}", text(&out.stderr));
    assert!(out.status.oom_killed(), "{}", out.status);
    assert_eq!(out.status.to_string(), "exit code: 137, OOM-killed");
    f.assert_no_leftovers();

    // Within the limit: a normal exit, failing or not.
    let out = f.run(&limited(&[
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=1M count=4 && exit 5",
    ]));
    assert_eq!(out.status.code(), 5, "{}", text(&out.stderr));
    assert!(!out.status.oom_killed());

    // Killed from outside with the signal the OOM killer uses.
    let spec = limited(&["sleep", "4712"]);
    let out = run_killed_from_outside(&f, &spec, &["sleep", "4712"]);
    assert_eq!(out.status.code(), 137);
    assert!(!out.status.oom_killed(), "{}", out.status);
    f.assert_no_leftovers();
}

#[test]
fn stderr_is_captured_apart() {
    let f = Fixture::new();
    let rootfs = f.rootfs("rootfs");
    let out = f.run(&sh(RootfsSpec::Dir(rootfs), "echo oops >&2; echo fine"));
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "oops\n");
    assert_eq!(text(&out.stdout), "fine\n");
    f.assert_no_leftovers();
}

#[test]
fn env_and_cwd_are_honoured() {
    let f = Fixture::new();
    let rootfs = f.rootfs("rootfs");
    let mut spec = sh(
        RootfsSpec::Dir(rootfs.clone()),
        "echo $FOO; pwd; echo $PATH; echo $HOME",
    );
    spec.process.env = vec!["FOO=bar baz".into()];
    spec.process.cwd = PathBuf::from("/work/dir");
    let out = f.run(&spec);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("bar baz\n/work/dir\n{DEFAULT_PATH_ENV}\n/root\n")
    );
    // The missing working directory was created, as docker build creates it.
    assert!(rootfs.join("work/dir").is_dir());

    let mut spec = sh(RootfsSpec::Dir(rootfs), "echo $PATH; echo $HOME");
    spec.process.env = vec!["PATH=/bin".into(), "HOME=/elsewhere".into()];
    let out = f.run(&spec);
    assert_eq!(text(&out.stdout), "/bin\n/elsewhere\n");
    f.assert_no_leftovers();
}

#[test]
fn user_forms_resolve_through_the_image_files() {
    let f = Fixture::new();
    let rootfs = f.rootfs("rootfs");
    let cases = [
        ("", "0 0 0 10 /root"),
        ("root", "0 0 0 10 /root"),
        ("alice", "1000 1000 1000 10 2000 /home/alice"),
        ("1000", "1000 1000 1000 10 2000 /home/alice"),
        ("alice:dev", "1000 2000 2000 /home/alice"),
        ("alice:10", "1000 10 10 /home/alice"),
        ("1000:2000", "1000 2000 2000 /home/alice"),
        ("4242", "4242 0 0 /"),
        ("4242:4343", "4242 4343 4343 /"),
        ("nobody", "65534 65534 65534 /nonexistent"),
    ];
    for (user, want) in cases {
        let mut spec = sh(
            RootfsSpec::Dir(rootfs.clone()),
            r#"echo "$(id -u) $(id -g) $(id -G) $HOME""#,
        );
        spec.process.user = user.to_string();
        let out = f.run(&spec);
        assert!(out.status.success(), "USER {user:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), want, "USER {user:?}");
    }

    // Names that are not in the files are errors that name the file.
    let mut spec = sh(RootfsSpec::Dir(rootfs.clone()), "id");
    spec.process.user = "mallory".into();
    let err = f.sandbox.output(&spec).unwrap_err();
    assert!(matches!(err, Error::UnknownUser { .. }), "{err:?}");
    assert!(err.to_string().contains("/etc/passwd"), "{err}");
    spec.process.user = "alice:nosuchgroup".into();
    let err = f.sandbox.output(&spec).unwrap_err();
    assert!(matches!(err, Error::UnknownGroup { .. }), "{err:?}");
    assert!(err.to_string().contains("/etc/group"), "{err}");
    f.assert_no_leftovers();
}

#[test]
fn capabilities_and_limits() {
    let f = Fixture::new();
    let rootfs = f.rootfs("rootfs");
    let out = f.run(&sh(
        RootfsSpec::Dir(rootfs),
        "grep -E '^Cap(Bnd|Eff|Inh|Amb)' /proc/self/status; ulimit -n; ulimit -Hn; \
         grep NoNewPrivs /proc/self/status",
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Docker's 14 default capabilities: bits 0-8 and 10, 13, 18, 27, 29, 31 -> 0xa80425fb.
    let nofile = expected_nofile();
    assert_eq!(
        text(&out.stdout),
        format!(
            "CapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n\
             CapAmb:\t0000000000000000\n{nofile}\n{nofile}\nNoNewPrivs:\t0\n"
        )
    );
    f.assert_no_leftovers();
}

/// docker build's 1048576, unless this test process may not raise its hard limit that far
/// (no `CAP_SYS_RESOURCE`, as in some CI sandboxes).
fn expected_nofile() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    let nr_open: u64 = fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut limit = NOFILE_LIMIT.min(nr_open);
    if cap_eff & (1 << 24) == 0 {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `rl` is a valid rlimit for getrlimit to fill.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
        limit = limit.min(rl.rlim_max);
    }
    limit
}

#[test]
fn network_none_has_only_loopback() {
    let f = Fixture::new();
    let rootfs = f.rootfs("rootfs");
    let mut spec = sh(
        RootfsSpec::Dir(rootfs),
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ip link show lo",
    );
    spec.network = Network::None;
    let out = f.run(&spec);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("lo"));
    let link = lines.collect::<Vec<_>>().join("\n");
    assert!(link.contains("lo:") && link.contains(",UP"), "{link}");
    f.assert_no_leftovers();
}

fn interfaces(proc_net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn host_network_sees_host_interfaces() {
    let f = Fixture::new();
    let rootfs = f.rootfs("rootfs");
    let out = f.run(&sh(RootfsSpec::Dir(rootfs), "cat /proc/net/dev"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let host = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
    assert!(
        host.iter().any(|n| n != "lo"),
        "this host has no interface besides lo: {host:?}"
    );
    assert_eq!(interfaces(text(&out.stdout)), host);
    f.assert_no_leftovers();
}

#[test]
fn etc_files_are_generated_and_never_left_in_the_rootfs() {
    let f = Fixture::new();
    let rootfs = f.rootfs("rootfs");
    let before = tree(&rootfs);
    let mtime = |p: &Path| fs::metadata(p).unwrap().modified().unwrap();
    let times_before = (mtime(&rootfs), mtime(&rootfs.join("etc")));
    let script = "cat /etc/hosts; echo --; hostname; cat /etc/hostname; echo --; \
                  test -s /etc/resolv.conf && echo resolv; echo hack >> /etc/hosts || echo read-only";
    let out = f.run(&sh(RootfsSpec::Dir(rootfs.clone()), script));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "127.0.0.1\tlocalhost {DEFAULT_HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             --\n{DEFAULT_HOSTNAME}\n{DEFAULT_HOSTNAME}\n--\nresolv\nread-only\n"
        )
    );

    let mut spec = sh(
        RootfsSpec::Dir(rootfs.clone()),
        "hostname; grep -c builder1 /etc/hosts",
    );
    spec.hostname = Some("builder1".into());
    let out = f.run(&spec);
    assert_eq!(text(&out.stdout), "builder1\n1\n");

    // The stubs of /etc/hosts, /etc/resolv.conf and /etc/hostname are gone, and /etc kept its
    // times; the runtime's /dev, /proc and /sys stay, as docker build keeps them.
    let mut want = before.clone();
    want.extend(map(&RUNTIME_STUBS));
    assert_eq!(tree(&rootfs), want);
    assert_eq!(mtime(&rootfs.join("etc")), times_before.1);
    assert_ne!(mtime(&rootfs), times_before.0, "the root gained the stubs");
    f.assert_no_leftovers();
}

#[test]
fn overlay_changes_land_in_upper_only() {
    let f = Fixture::new();
    let (rootfs, lower, upper) = f.overlay();
    let lower_before = tree(&lower);
    let etc_mtime = fs::metadata(lower.join("etc")).unwrap().modified().unwrap();
    let script = "echo new > /data/new.txt && rm /data/gone.txt && mkdir -p /made/deep && \
                  echo hi > /made/deep/x && cat /data/keep.txt && test ! -e /data/gone.txt";
    let out = f.run(&sh(rootfs, script));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "kept\n");

    // Only the command's own changes and the runtime's /dev, /proc and /sys: no other mount
    // stubs, no copied-up /etc, and the deleted lower file is a whiteout (a 0/0 character
    // device).
    assert_eq!(
        tree(&upper),
        with_runtime_stubs(&[
            ("data", "dir"),
            ("data/gone.txt", "char 0"),
            ("data/new.txt", "file new"),
            ("made", "dir"),
            ("made/deep", "dir"),
            ("made/deep/x", "file hi"),
        ])
    );
    assert_eq!(
        tree(&lower),
        lower_before,
        "the lower directory was changed"
    );
    assert_eq!(
        fs::metadata(lower.join("etc")).unwrap().modified().unwrap(),
        etc_mtime
    );
    f.assert_no_leftovers();
}

#[test]
fn a_real_change_to_a_directory_holding_stubs_is_kept() {
    let f = Fixture::new();
    let (rootfs, _lower, upper) = f.overlay();
    let out = f.run(&sh(rootfs, "chmod 0700 /etc"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(tree(&upper), with_runtime_stubs(&[("etc", "dir")]));
    let mode = fs::metadata(upper.join("etc")).unwrap().mode();
    assert_eq!(mode & 0o7777, 0o700);
    f.assert_no_leftovers();
}

#[test]
fn overlay_with_no_change_leaves_upper_empty() {
    let f = Fixture::new();
    let (rootfs, _lower, upper) = f.overlay();
    let mut spec = sh(
        rootfs,
        "cat /etc/hosts /etc/resolv.conf /etc/hostname > /dev/null; ls /",
    );
    spec.mounts = vec![
        Mount::Tmpfs {
            target: "/scratch/tmp".into(),
            size: Some(1 << 20),
            mode: None,
        },
        Mount::Bind {
            source: f.tmp.path().join("lower/data"),
            target: "/mnt/data".into(),
            readonly: true,
        },
    ];
    let out = f.run(&spec);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("scratch"));
    assert_eq!(tree(&upper), with_runtime_stubs(&[]));
    f.assert_no_leftovers();
}

#[test]
fn overlay_lowers_are_top_first_and_may_be_empty() {
    let f = Fixture::new();
    let base = f.rootfs("base");
    let top = f.path("top");
    fs::create_dir_all(top.join("data")).unwrap();
    fs::write(top.join("data/keep.txt"), "from the top layer\n").unwrap();
    let upper = f.path("upper");
    let work = f.path("work");
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    let rootfs = RootfsSpec::Overlay {
        lower: vec![top.clone(), base.clone()],
        upper: upper.clone(),
        work: work.clone(),
    };
    let out = f.run(&sh(rootfs, "cat /data/keep.txt"));
    assert_eq!(text(&out.stdout), "from the top layer\n");
    assert_eq!(tree(&upper), with_runtime_stubs(&[]));

    // No lower directory at all: the upper directory is the whole root (FROM scratch plus
    // earlier steps), and gets no stubs but the runtime's.
    let mut upper_before = tree(&base);
    upper_before.extend(map(&RUNTIME_STUBS));
    fs::remove_dir_all(&work).unwrap();
    fs::create_dir(&work).unwrap();
    let rootfs = RootfsSpec::Overlay {
        lower: vec![],
        upper: base.clone(),
        work,
    };
    let out = f.run(&sh(rootfs, "echo empty lower"));
    assert_eq!(text(&out.stdout), "empty lower\n");
    assert_eq!(tree(&base), upper_before);
    f.assert_no_leftovers();
}

#[test]
fn no_leftovers_after_failures() {
    let f = Fixture::new();
    let (rootfs, _lower, upper) = f.overlay();

    // The runtime cannot start the program: an error of its own, not an exit code.
    let spec = RunSpec::new(rootfs.clone(), ProcessSpec::new(["/no/such/program"]));
    let err = f.sandbox.output(&spec).unwrap_err();
    match &err {
        Error::Runtime {
            action, message, ..
        } => {
            assert_eq!(*action, "run");
            assert!(message.contains("/no/such/program"), "{message}");
        }
        other => panic!("expected a runtime error, got {other:?}"),
    }
    f.assert_no_leftovers();

    // A failure after the overlay is mounted (an unknown user) unmounts it again.
    let mut spec = sh(rootfs.clone(), "true");
    spec.process.user = "nosuchuser".into();
    assert!(matches!(
        f.sandbox.output(&spec),
        Err(Error::UnknownUser { .. })
    ));
    f.assert_no_leftovers();

    // A failing command.
    let out = f.run(&sh(rootfs, "echo partial > /data/partial; exit 1"));
    assert_eq!(out.status.code(), 1);
    assert_eq!(
        tree(&upper),
        with_runtime_stubs(&[("data", "dir"), ("data/partial", "file partial")])
    );
    f.assert_no_leftovers();
}

#[test]
fn cancel_kills_and_cleans_up() {
    let f = Fixture::new();
    let (rootfs, _lower, _upper) = f.overlay();
    let token = CancelToken::new();
    let mut spec = sh(rootfs, "echo started; sleep 60");
    spec.cancel = Some(token.clone());
    let start = Instant::now();
    let mut started = false;
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            token.cancel();
        });
        f.sandbox.run(&spec, &mut |_, bytes| {
            started |= text(bytes).contains("started");
        })
    });
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert!(started);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    f.assert_no_leftovers();
}

#[test]
fn a_panicking_output_callback_still_cleans_up() {
    let f = Fixture::new();
    let (rootfs, _lower, upper) = f.overlay();
    let spec = sh(rootfs, "echo boom; sleep 60");
    let start = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        f.sandbox.run(&spec, &mut |_, _| panic!("the caller fails"))
    }));
    assert!(result.is_err());
    assert!(start.elapsed() < Duration::from_secs(15));
    assert_eq!(tree(&upper), with_runtime_stubs(&[]));
    f.assert_no_leftovers();
}

#[test]
fn sweep_removes_dead_runs_only() {
    let f = Fixture::new();
    let root = f.sandbox.root().to_path_buf();

    // What a run killed with its caller leaves: a state directory with an unlocked lock and a
    // mounted overlay.
    let dead = root.join("berth-dead");
    for d in ["rootfs", "upper", "work", "lower"] {
        fs::create_dir_all(dead.join(d)).unwrap();
    }
    fs::write(dead.join("lock"), "").unwrap();
    let target = std::ffi::CString::new(dead.join("rootfs").to_str().unwrap()).unwrap();
    let data = std::ffi::CString::new(format!(
        "lowerdir={},upperdir={},workdir={}",
        dead.join("lower").display(),
        dead.join("upper").display(),
        dead.join("work").display()
    ))
    .unwrap();
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(rc, 0, "mount: {}", std::io::Error::last_os_error());
    assert_eq!(mounts_under(&dead).unwrap().len(), 1);

    // A live run is left alone by a sweep that happens while it runs.
    let rootfs = f.rootfs("rootfs");
    let spec = sh(RootfsSpec::Dir(rootfs), "sleep 2; echo survived");
    let (out, swept) = std::thread::scope(|s| {
        let run = s.spawn(|| f.sandbox.output(&spec));
        std::thread::sleep(Duration::from_millis(700));
        let swept = f.sandbox.sweep();
        (run.join().unwrap(), swept)
    });
    assert_eq!(swept.unwrap(), 1);
    assert_eq!(text(&out.unwrap().stdout), "survived\n");
    assert!(!dead.exists());
    f.assert_no_leftovers();
}

#[test]
fn a_missing_runtime_is_a_clear_error() {
    require_environment();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("bin/no-runc");
    let err = Sandbox::builder()
        .runtime(&missing)
        .root(tmp.path().join("state"))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::RuntimeNotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "OCI runtime {} not found or not executable",
            missing.display()
        )
    );
    let err = Sandbox::builder()
        .runtime("no-such-oci-runtime")
        .root(tmp.path().join("state"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("no-such-oci-runtime"), "{err}");
}

#[test]
fn invalid_specs_are_refused_before_anything_runs() {
    let f = Fixture::new();
    let rootfs = f.rootfs("rootfs");
    let mut spec = sh(RootfsSpec::Dir(rootfs.clone()), "true");
    spec.process.cwd = "relative".into();
    assert!(matches!(
        f.sandbox.output(&spec),
        Err(Error::InvalidSpec(_))
    ));
    let mut spec = sh(RootfsSpec::Dir(rootfs.clone()), "true");
    spec.process.tty = true;
    assert!(matches!(
        f.sandbox.output(&spec),
        Err(Error::InvalidSpec(_))
    ));
    let spec = RunSpec::new(
        RootfsSpec::Dir(rootfs),
        ProcessSpec::new(Vec::<String>::new()),
    );
    assert!(matches!(
        f.sandbox.output(&spec),
        Err(Error::InvalidSpec(_))
    ));
    let spec = sh(RootfsSpec::Dir(f.path("missing")), "true");
    assert!(matches!(f.sandbox.output(&spec), Err(Error::Io { .. })));
    f.assert_no_leftovers();
}

/// Two layer directories as a snapshot store keeps them: the top one adds a file and deletes
/// one of the bottom's with a whiteout (a 0/0 character device).
fn make_layers(f: &Fixture) -> (PathBuf, PathBuf) {
    let bottom = f.path("layer-bottom");
    let top = f.path("layer-top");
    fs::create_dir_all(bottom.join("out")).unwrap();
    fs::write(bottom.join("out/base.txt"), "from the bottom\n").unwrap();
    fs::write(bottom.join("out/deleted.txt"), "deleted above\n").unwrap();
    fs::create_dir_all(top.join("out")).unwrap();
    fs::write(top.join("out/tool.txt"), "from the top\n").unwrap();
    let whiteout = std::ffi::CString::new(top.join("out/deleted.txt").to_str().unwrap()).unwrap();
    // SAFETY: `whiteout` is a valid NUL-terminated path.
    let rc = unsafe { libc::mknod(whiteout.as_ptr(), libc::S_IFCHR | 0o644, 0) };
    assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
    (top, bottom)
}

#[test]
fn layers_mounts_are_merged_and_their_writes_discarded() {
    let f = Fixture::new();
    let (rootfs, _lower, upper) = f.overlay();
    let (top, bottom) = make_layers(&f);
    let layers_before = (tree(&top), tree(&bottom));
    let mut spec = sh(
        rootfs.clone(),
        "ls /tools; cat /tools/tool.txt /tools/base.txt; \
         echo x > /tools/new 2>/dev/null || echo read-only; \
         echo scribble > /all/out/scribble && ls /all/out",
    );
    spec.mounts = vec![
        Mount::Layers {
            lower: vec![top.clone(), bottom.clone()],
            path: "/out".into(),
            target: "/tools".into(),
            readonly: true,
        },
        Mount::Layers {
            lower: vec![top.clone(), bottom.clone()],
            path: "/".into(),
            target: "/all".into(),
            readonly: false,
        },
    ];
    let out = f.run(&spec);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "base.txt\ntool.txt\nfrom the top\nfrom the bottom\nread-only\n\
         base.txt\nscribble\ntool.txt\n"
    );
    // The layers are untouched, the writes are gone, and the root filesystem holds nothing of
    // either mount: not even the stubs of their targets.
    assert_eq!((tree(&top), tree(&bottom)), layers_before);
    assert_eq!(tree(&upper), with_runtime_stubs(&[]));
    f.assert_no_leftovers();

    // A path that is not in the layers fails the run after the first overlay was mounted; it
    // is unmounted again.
    spec.mounts[1] = Mount::Layers {
        lower: vec![top, bottom],
        path: "/no/such/dir".into(),
        target: "/missing".into(),
        readonly: true,
    };
    let err = f.sandbox.output(&spec).unwrap_err();
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
    f.assert_no_leftovers();
}

#[test]
fn file_mounts_stay_on_a_tmpfs_and_out_of_the_rootfs() {
    let f = Fixture::new();
    let (rootfs, _lower, upper) = f.overlay();
    const SECRET: &str = "s3cr3t-value-never-on-disk";
    let mut spec = sh(
        rootfs,
        "stat -c '%a %u:%g' /run/secrets/token; cat /run/secrets/token; echo; \
         grep -c ' /run/secrets/token ' /proc/self/mounts; \
         /dev/pipes/script; echo x > /run/secrets/token 2>/dev/null || echo read-only",
    );
    spec.mounts = vec![
        Mount::File {
            contents: SECRET.as_bytes().into(),
            target: "/run/secrets/token".into(),
            mode: 0o400,
            uid: 1000,
            gid: 2000,
        },
        Mount::File {
            contents: b"#!/bin/sh\necho run by its shebang\n".to_vec().into(),
            target: "/dev/pipes/script".into(),
            mode: 0o755,
            uid: 0,
            gid: 0,
        },
    ];
    // The contents never show in the spec's Debug output (logs).
    assert!(!format!("{spec:?}").contains(SECRET));
    let out = f.run(&spec);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("400 1000:2000\n{SECRET}\n1\nrun by its shebang\nread-only\n")
    );
    // By default no stub is left: not the file, not the /run and /run/secrets made for it; the
    // script under /dev was on the runtime's tmpfs and never touched the root filesystem.
    assert_eq!(tree(&upper), with_runtime_stubs(&[]));
    f.assert_no_leftovers();
}

#[test]
fn keep_directories_leaves_directory_stubs_as_docker_20_10_does() {
    let f = Fixture::new();
    let (rootfs, _lower, upper) = f.overlay();
    let cache = f.path("cache");
    fs::create_dir(&cache).unwrap();
    let mut spec = sh(
        rootfs,
        "echo cached > /var/cache/app/entry; echo temp > /scratch/t; \
         cat /run/secrets/token; echo",
    );
    spec.mount_stubs = MountStubs::KeepDirectories;
    spec.mounts = vec![
        Mount::Bind {
            source: cache.clone(),
            target: "/var/cache/app".into(),
            readonly: false,
        },
        Mount::Tmpfs {
            target: "/scratch".into(),
            size: Some(1 << 20),
            mode: None,
        },
        Mount::File {
            contents: b"token".to_vec().into(),
            target: "/run/secrets/token".into(),
            mode: 0o400,
            uid: 0,
            gid: 0,
        },
    ];
    let out = f.run(&spec);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "token\n");
    assert_eq!(fs::read_to_string(cache.join("entry")).unwrap(), "cached\n");
    // The directories the runtime made for the mounts stay, empty; the file stub of the secret
    // goes, and nothing any mount held is in the root filesystem.
    assert_eq!(
        tree(&upper),
        with_runtime_stubs(&[
            ("run", "dir"),
            ("run/secrets", "dir"),
            ("scratch", "dir"),
            ("var", "dir"),
            ("var/cache", "dir"),
            ("var/cache/app", "dir"),
        ])
    );
    f.assert_no_leftovers();
}
