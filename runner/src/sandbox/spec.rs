//! The OCI runtime `config.json`.
//!
//! Every field is set here explicitly rather than taken from `oci-spec`'s defaults (which are
//! youki's, not Docker's). The choices and where they come from are listed in the `sandbox`
//! module's documentation, under "config.json".

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount as OciMount, MountBuilder, PosixRlimit, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

use super::error::Error;
use super::resources::{Resources, Rlimit};
use super::user::User;
use super::{Mount, Network};

/// The OCI runtime spec version the config claims.
const OCI_VERSION: &str = "1.0.2";

/// `docker build`'s open-files limit for a step.
pub const NOFILE_LIMIT: u64 = 1_048_576;

/// `CAP_SYS_RESOURCE`, which raising a hard rlimit needs.
const CAP_SYS_RESOURCE: u32 = 24;

/// The open-files limit to give a process: [`NOFILE_LIMIT`], lowered to what this process can
/// set (the runtime sets it with this process's privileges).
pub(crate) fn nofile_limit() -> u64 {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(NOFILE_LIMIT);
    let mut limit = NOFILE_LIMIT.min(nr_open);
    let can_raise = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0);
    if !can_raise {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `current` is a valid rlimit for getrlimit to fill.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) } == 0 {
            limit = limit.min(current.rlim_max);
        }
    }
    limit
}

/// Docker's default capability set (`moby/oci/caps.DefaultCapabilities`).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Docker's masked paths: a file is covered by `/dev/null`, a directory by an empty tmpfs.
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The container paths of the generated files, in the order they are mounted.
pub(crate) const RESOLV_CONF: &str = "/etc/resolv.conf";
pub(crate) const HOSTS: &str = "/etc/hosts";
pub(crate) const HOSTNAME: &str = "/etc/hostname";

/// Everything `config.json` is made from, resolved by the caller.
pub(crate) struct SpecInput<'a> {
    pub(crate) rootfs: &'a Path,
    pub(crate) readonly_rootfs: bool,
    pub(crate) args: &'a [String],
    pub(crate) env: Vec<String>,
    pub(crate) cwd: &'a Path,
    pub(crate) user: &'a User,
    pub(crate) hostname: &'a str,
    pub(crate) network: &'a Network,
    /// The default open-files limit, soft and hard, unless `rlimits` names `nofile`.
    pub(crate) nofile: u64,
    /// The caller's rlimits (validated).
    pub(crate) rlimits: &'a [Rlimit],
    /// The cgroup limits (validated).
    pub(crate) resources: Option<&'a Resources>,
    /// `linux.cgroupsPath`; the runtime's default when `None`.
    pub(crate) cgroups_path: Option<String>,
    /// Host paths of the generated `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname`.
    pub(crate) resolv_conf: &'a Path,
    pub(crate) hosts: &'a Path,
    pub(crate) hostname_file: &'a Path,
    pub(crate) mounts: &'a [Mount],
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<OciMount, Error> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn bind(dest: &str, source: &Path, readonly: bool) -> Result<OciMount, Error> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(vec![
            "rbind".to_string(),
            if readonly { "ro" } else { "rw" }.to_string(),
        ])
        .build()?)
}

/// Docker's default mounts, in Docker's order.
fn default_mounts() -> Result<Vec<OciMount>, Error> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    ])
}

/// The filesystems the runtime mounts itself, whose stubs in the root filesystem are kept:
/// every default mount lies on or under one of them.
pub(crate) const RUNTIME_FILESYSTEMS: [&str; 3] = ["/proc", "/dev", "/sys"];

/// Whether the container path `path` is on or under one of [`RUNTIME_FILESYSTEMS`]: a mount
/// there is made inside the runtime's own filesystem (a tmpfs, procfs, sysfs), never in the root
/// filesystem. Judged lexically, `..` applied.
pub(crate) fn on_runtime_filesystem(path: &Path) -> bool {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::Normal(p) => parts.push(p),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.first().is_some_and(|first| {
        RUNTIME_FILESYSTEMS
            .iter()
            .any(|fs| Path::new(fs).strip_prefix("/").ok() == Some(Path::new(first)))
    })
}

/// The container paths whose stubs the sandbox may remove after a run: the generated `/etc`
/// files and the caller's mounts, except those on the runtime's own filesystems. The stubs of
/// the default mounts themselves (`/proc`, `/dev`, `/sys`) are never listed: they stay, as in
/// `docker build`'s images.
pub(crate) fn stub_destinations(mounts: &[Mount]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = [RESOLV_CONF, HOSTS, HOSTNAME]
        .iter()
        .map(PathBuf::from)
        .collect();
    out.extend(
        mounts
            .iter()
            .map(|m| m.target().to_path_buf())
            .filter(|t| !on_runtime_filesystem(t)),
    );
    out
}

fn caller_mount(m: &Mount) -> Result<OciMount, Error> {
    match m {
        Mount::Bind {
            source,
            target,
            readonly,
        } => Ok(MountBuilder::default()
            .destination(target)
            .typ("bind")
            .source(source)
            .options(vec![
                "rbind".to_string(),
                if *readonly { "ro" } else { "rw" }.to_string(),
            ])
            .build()?),
        Mount::Tmpfs { target, size, mode } => {
            let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
            if let Some(size) = size {
                options.push(format!("size={size}"));
            }
            if let Some(mode) = mode {
                options.push(format!("mode={mode:o}"));
            }
            Ok(MountBuilder::default()
                .destination(target)
                .typ("tmpfs")
                .source("tmpfs")
                .options(options)
                .build()?)
        }
        Mount::Layers { target, .. } | Mount::File { target, .. } => {
            Err(Error::InvalidSpec(format!(
                "mount {} must be made a bind mount before the config is built",
                target.display()
            )))
        }
    }
}

/// The process's rlimits: the default open-files limit unless the caller gives `nofile`, then
/// the caller's, in their order.
fn rlimits(nofile: u64, given: &[Rlimit]) -> Result<Vec<PosixRlimit>, Error> {
    let mut out = Vec::with_capacity(given.len() + 1);
    if !given.iter().any(|l| l.name == "nofile") {
        out.push(
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(nofile)
                .soft(nofile)
                .build()?,
        );
    }
    for limit in given {
        out.push(
            PosixRlimitBuilder::default()
                .typ(limit.kind().map_err(Error::InvalidSpec)?)
                .hard(limit.hard)
                .soft(limit.soft)
                .build()?,
        );
    }
    Ok(out)
}

/// `linux.resources`: the device cgroup's deny-all (the runtime adds its default allow list),
/// and the caller's cpu, memory and pids limits (validated, so they fit in an `i64`).
fn resources(limits: Option<&Resources>) -> Result<oci_spec::runtime::LinuxResources, Error> {
    let mut builder = LinuxResourcesBuilder::default().devices(vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?,
    ]);
    let Some(limits) = limits else {
        return Ok(builder.build()?);
    };
    let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    if limits.cpu_shares.is_some() || limits.cpu_quota.is_some() || limits.cpu_period.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(shares) = limits.cpu_shares {
            cpu = cpu.shares(shares);
        }
        if let Some(quota) = limits.cpu_quota {
            cpu = cpu.quota(signed(quota));
        }
        if let Some(period) = limits.effective_cpu_period() {
            cpu = cpu.period(period);
        }
        builder = builder.cpu(cpu.build()?);
    }
    if limits.memory_limit.is_some() || limits.memory_reservation.is_some() {
        let mut memory = LinuxMemoryBuilder::default();
        if let Some(limit) = limits.memory_limit {
            memory = memory.limit(signed(limit));
        }
        if let Some(reservation) = limits.memory_reservation {
            memory = memory.reservation(signed(reservation));
        }
        builder = builder.memory(memory.build()?);
    }
    if let Some(pids) = limits.pids_limit {
        builder = builder.pids(LinuxPidsBuilder::default().limit(signed(pids)).build()?);
    }
    Ok(builder.build()?)
}

/// Builds the runtime config.
pub(crate) fn build(input: &SpecInput<'_>) -> Result<Spec, Error> {
    let caps: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;

    let user = UserBuilder::default()
        .uid(input.user.uid)
        .gid(input.user.gid)
        .additional_gids(input.user.additional_gids.clone())
        .build()?;

    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(input.args.to_vec())
        .env(input.env.clone())
        .cwd(input.cwd)
        .capabilities(capabilities)
        .rlimits(rlimits(input.nofile, input.rlimits)?)
        .no_new_privileges(false)
        .build()?;

    let mut mounts = default_mounts()?;
    mounts.push(bind(RESOLV_CONF, input.resolv_conf, true)?);
    mounts.push(bind(HOSTS, input.hosts, true)?);
    mounts.push(bind(HOSTNAME, input.hostname_file, true)?);
    for m in input.mounts {
        mounts.push(caller_mount(m)?);
    }

    let mut namespaces = Vec::new();
    let mut kinds = vec![
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
    ];
    if *input.network == Network::None {
        kinds.push(LinuxNamespaceType::Network);
    }
    for typ in kinds {
        namespaces.push(LinuxNamespaceBuilder::default().typ(typ).build()?);
    }
    if let Network::Join(path) = input.network {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.clone())
                .build()?,
        );
    }

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(input.resources)?)
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
        );
    if let Some(path) = &input.cgroups_path {
        linux = linux.cgroups_path(PathBuf::from(path));
    }
    let linux = linux.build()?;

    let root = RootBuilder::default()
        .path(input.rootfs)
        .readonly(input.readonly_rootfs)
        .build()?;

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string());
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts));
    spec.set_process(Some(process));
    spec.set_hostname(Some(input.hostname.to_string()));
    spec.set_domainname(None);
    spec.set_annotations(None);
    spec.set_hooks(None);
    spec.set_linux(Some(linux));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn spec_json(network: Network, mounts: &[Mount]) -> Value {
        spec_json_with(network, mounts, &[], None, None)
    }

    fn spec_json_with(
        network: Network,
        mounts: &[Mount],
        rlimits: &[Rlimit],
        resources: Option<&Resources>,
        cgroups_path: Option<&str>,
    ) -> Value {
        let user = User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![2000],
            home: "/home/u".into(),
        };
        let args = vec!["sh".to_string(), "-c".to_string(), "true".to_string()];
        let input = SpecInput {
            rootfs: Path::new("/state/rootfs"),
            readonly_rootfs: false,
            args: &args,
            env: vec!["PATH=/bin".into()],
            cwd: Path::new("/work"),
            user: &user,
            hostname: "box",
            network: &network,
            nofile: NOFILE_LIMIT,
            rlimits,
            resources,
            cgroups_path: cgroups_path.map(str::to_string),
            resolv_conf: Path::new("/state/etc/resolv.conf"),
            hosts: Path::new("/state/etc/hosts"),
            hostname_file: Path::new("/state/etc/hostname"),
            mounts,
        };
        serde_json::to_value(build(&input).unwrap()).unwrap()
    }

    fn strings(v: &Value) -> Vec<String> {
        let mut out: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn process_fields() {
        let v = spec_json(Network::Host, &[]);
        let p = &v["process"];
        assert_eq!(p["terminal"], false);
        assert_eq!(p["args"], serde_json::json!(["sh", "-c", "true"]));
        assert_eq!(p["cwd"], "/work");
        assert_eq!(p["noNewPrivileges"], false);
        assert_eq!(
            p["user"],
            serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [2000]})
        );
        assert_eq!(
            p["rlimits"],
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}])
        );
        let caps = strings(&p["capabilities"]["bounding"]);
        assert_eq!(
            caps,
            [
                "CAP_AUDIT_WRITE",
                "CAP_CHOWN",
                "CAP_DAC_OVERRIDE",
                "CAP_FOWNER",
                "CAP_FSETID",
                "CAP_KILL",
                "CAP_MKNOD",
                "CAP_NET_BIND_SERVICE",
                "CAP_NET_RAW",
                "CAP_SETFCAP",
                "CAP_SETGID",
                "CAP_SETPCAP",
                "CAP_SETUID",
                "CAP_SYS_CHROOT",
            ]
        );
        assert_eq!(strings(&p["capabilities"]["effective"]), caps);
        assert_eq!(strings(&p["capabilities"]["permitted"]), caps);
        assert!(strings(&p["capabilities"]["inheritable"]).is_empty());
        assert!(strings(&p["capabilities"]["ambient"]).is_empty());
        assert_eq!(v["hostname"], "box");
        assert_eq!(v["root"]["path"], "/state/rootfs");
    }

    #[test]
    fn namespaces_follow_the_network_mode() {
        let kinds = |v: &Value| -> Vec<String> {
            v["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["type"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            kinds(&spec_json(Network::Host, &[])),
            ["mount", "pid", "ipc", "uts"]
        );
        assert_eq!(
            kinds(&spec_json(Network::None, &[])),
            ["mount", "pid", "ipc", "uts", "network"]
        );
    }

    #[test]
    fn a_joined_network_namespace_is_named_by_its_path() {
        let v = spec_json(Network::Join("/run/netns/task-1".into()), &[]);
        assert_eq!(
            v["linux"]["namespaces"],
            serde_json::json!([
                {"type": "mount"}, {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "network", "path": "/run/netns/task-1"}
            ])
        );
    }

    #[test]
    fn rlimits_replace_the_default_of_their_name() {
        let v = spec_json_with(
            Network::Host,
            &[],
            &[Rlimit::new("core", 0, 0), Rlimit::new("nproc", 100, 200)],
            None,
            None,
        );
        assert_eq!(
            v["process"]["rlimits"],
            serde_json::json!([
                {"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576},
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
                {"type": "RLIMIT_NPROC", "hard": 200, "soft": 100},
            ])
        );
        let v = spec_json_with(
            Network::Host,
            &[],
            &[Rlimit::new("nofile", 1024, 4096)],
            None,
            None,
        );
        assert_eq!(
            v["process"]["rlimits"],
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024}])
        );
    }

    #[test]
    fn resources_and_cgroups_path() {
        let limits = Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: None,
            memory_limit: Some(64 << 20),
            memory_reservation: Some(32 << 20),
            pids_limit: Some(100),
        };
        let v = spec_json_with(
            Network::Host,
            &[],
            &[],
            Some(&limits),
            Some("berth/task-1/web"),
        );
        assert_eq!(
            v["linux"]["resources"],
            serde_json::json!({
                "devices": [{"allow": false, "access": "rwm"}],
                "cpu": {"shares": 512, "quota": 50000, "period": 100000},
                "memory": {"limit": 67108864, "reservation": 33554432},
                "pids": {"limit": 100},
            })
        );
        assert_eq!(v["linux"]["cgroupsPath"], "berth/task-1/web");
        // Without them, as before: devices only, the runtime's default path.
        let v = spec_json(Network::Host, &[]);
        assert_eq!(
            v["linux"]["resources"],
            serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]})
        );
        assert!(v["linux"].get("cgroupsPath").is_none());
    }

    #[test]
    fn mounts_masks_and_devices() {
        let extra = [
            Mount::Bind {
                source: "/host/cache".into(),
                target: "/cache".into(),
                readonly: false,
            },
            Mount::Tmpfs {
                target: "/tmp".into(),
                size: Some(1 << 20),
                mode: Some(0o1777),
            },
        ];
        let v = spec_json(Network::Host, &extra);
        let mounts = v["mounts"].as_array().unwrap();
        let dests: Vec<&str> = mounts
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm",
                "/etc/resolv.conf",
                "/etc/hosts",
                "/etc/hostname",
                "/cache",
                "/tmp",
            ]
        );
        assert_eq!(
            mounts[8],
            serde_json::json!({"destination": "/etc/hosts", "type": "bind",
                "source": "/state/etc/hosts", "options": ["rbind", "ro"]})
        );
        assert_eq!(mounts[10]["options"], serde_json::json!(["rbind", "rw"]));
        assert_eq!(
            mounts[11]["options"],
            serde_json::json!(["nosuid", "nodev", "size=1048576", "mode=1777"])
        );
        let stubs: Vec<PathBuf> = dests[7..].iter().map(PathBuf::from).collect();
        assert_eq!(stub_destinations(&extra), stubs);
        assert_eq!(
            strings(&v["linux"]["maskedPaths"]).len(),
            MASKED_PATHS.len()
        );
        assert_eq!(
            strings(&v["linux"]["readonlyPaths"]).len(),
            READONLY_PATHS.len()
        );
        assert_eq!(
            v["linux"]["resources"]["devices"],
            serde_json::json!([{"allow": false, "access": "rwm"}])
        );
        assert!(v["linux"].get("seccomp").is_none());
    }

    #[test]
    fn stubs_on_the_runtime_filesystems_are_not_listed() {
        assert!(on_runtime_filesystem(Path::new("/dev/pipes/EOF")));
        assert!(on_runtime_filesystem(Path::new("/proc")));
        assert!(on_runtime_filesystem(Path::new("/x/../sys/kernel")));
        assert!(!on_runtime_filesystem(Path::new("/device")));
        assert!(!on_runtime_filesystem(Path::new("/run/secrets/id")));
        let mounts = [
            Mount::Tmpfs {
                target: "/dev/pipes".into(),
                size: None,
                mode: None,
            },
            Mount::Tmpfs {
                target: "/scratch".into(),
                size: None,
                mode: None,
            },
        ];
        assert_eq!(
            stub_destinations(&mounts),
            [RESOLV_CONF, HOSTS, HOSTNAME, "/scratch"]
                .iter()
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        );
    }
}
