//! The parent cgroups that group a task's containers.
//!
//! A container's own cgroup is the runtime's business: `config.json` names it
//! (`linux.cgroupsPath`, `<parent>/<container id>`) and carries its limits, and the runtime
//! creates it, writes the limits and removes it with the container. The parent it sits under is
//! the sandbox's: [`create`] makes it, with the task-level limits (a Fargate task size, or an EC2
//! task's `cpu` and `memory`) that all the task's containers share, and [`remove`] deletes it
//! once they are gone. This is how the ECS agent lays out a task with task-level limits.
//!
//! A cgroup path is resolved the way runc's cgroupfs driver resolves `cgroupsPath`, so that the
//! parent made here is the one the runtime puts containers under: an absolute path
//! (`/berth/<task>`) is taken from the root of each hierarchy; a relative one (`berth/<task>`)
//! from the cgroup this process is in, in each hierarchy (so a berth that runs in a cgroup of its
//! own keeps its containers inside it). Both cgroup v1 (one hierarchy per controller, as on the
//! hybrid hosts these tests run on) and the unified v2 hierarchy are handled; on v2 the
//! controllers are enabled in `cgroup.subtree_control` on the way down, as runc does.
//!
//! [`oom_kills`] reads a container's own memory cgroup, found the same way from its
//! `cgroupsPath`: how many of its processes the kernel's OOM killer has killed.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::error::Error;
use super::mount::unescape_mountinfo;
use super::resources::{Resources, shares_to_weight};

/// The v1 memory controller's file with the `oom_kill` counter (kernel 4.13 and later).
const V1_OOM_CONTROL: &str = "memory.oom_control";
/// The v2 file with the `oom_kill` counter.
const V2_MEMORY_EVENTS: &str = "memory.events";
/// Where this process's mounts are listed.
const MOUNTINFO: &str = "/proc/self/mountinfo";
/// Where this process's cgroups are listed, one line per hierarchy.
const PROC_CGROUP: &str = "/proc/self/cgroup";
/// How long removing a cgroup that still holds exiting processes is retried.
const REMOVE_RETRIES: u32 = 50;
const REMOVE_RETRY_DELAY: Duration = Duration::from_millis(20);
/// The longest name of one path component.
const NAME_MAX: usize = 255;

/// Checks a cgroup path given by a caller: `/`-separated names of letters, digits, `_`, `.`,
/// `+` and `-`, none empty, none starting with `.`; a leading `/` makes it absolute.
pub(crate) fn validate_path(path: &str) -> Result<(), String> {
    let relative = path.strip_prefix('/').unwrap_or(path);
    if relative.is_empty() {
        return Err(format!(
            "cgroup path {path:?} names no cgroup (the root cannot be a parent)"
        ));
    }
    for name in relative.split('/') {
        let valid = !name.is_empty()
            && name.len() <= NAME_MAX
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
        if !valid {
            return Err(format!(
                "cgroup path {path:?}: {name:?} is not a valid cgroup name \
                 (letters, digits, '_', '.', '+', '-'; not starting with '.')"
            ));
        }
    }
    Ok(())
}

/// One mounted cgroup hierarchy and where this process is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    /// The mount point (`/sys/fs/cgroup/memory`).
    pub(crate) mount: PathBuf,
    /// v1 controllers (`memory`, `cpu`, `cpuacct`, `name=systemd`); empty for v2.
    pub(crate) controllers: Vec<String>,
    /// Whether this is the unified (v2) hierarchy.
    pub(crate) unified: bool,
    /// This process's cgroup, relative to the mount point.
    pub(crate) own: PathBuf,
}

impl Hierarchy {
    /// The directory of `path` (validated) in this hierarchy.
    pub(crate) fn dir(&self, path: &str) -> PathBuf {
        match path.strip_prefix('/') {
            Some(absolute) => self.mount.join(absolute),
            None => self.mount.join(&self.own).join(path),
        }
    }

    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// Parses `/proc/self/mountinfo` and `/proc/self/cgroup` into the mounted hierarchies.
///
/// A hierarchy mounted more than once is listed once, at its first mount point. A hierarchy
/// this process is not in (it cannot tell where it is) is left out.
pub(crate) fn parse_hierarchies(mountinfo: &str, proc_cgroup: &str) -> Vec<Hierarchy> {
    // (controllers, path) from /proc/self/cgroup: "4:memory:/a/b", "0::/a" for v2.
    let memberships: Vec<(Vec<&str>, &str)> = proc_cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let controllers = controllers.split(',').filter(|c| !c.is_empty()).collect();
            Some((controllers, path))
        })
        .collect();
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(root), Some(mount), Some(fstype), Some(options)) = (
            fields.get(3),
            fields.get(4),
            fields.get(dash + 1),
            fields.get(dash + 3),
        ) else {
            continue;
        };
        let mount = PathBuf::from(unescape_mountinfo(mount));
        let root = unescape_mountinfo(root);
        let (unified, controllers, path) = match *fstype {
            "cgroup2" => {
                let Some((_, path)) = memberships.iter().find(|(c, _)| c.is_empty()) else {
                    continue;
                };
                (true, Vec::new(), *path)
            }
            "cgroup" => {
                let options: Vec<&str> = options.split(',').collect();
                let Some((controllers, path)) = memberships
                    .iter()
                    .find(|(c, _)| !c.is_empty() && c.iter().all(|c| options.contains(c)))
                else {
                    continue;
                };
                (
                    false,
                    controllers.iter().map(|c| c.to_string()).collect(),
                    *path,
                )
            }
            _ => continue,
        };
        if out
            .iter()
            .any(|h| h.unified == unified && h.controllers == controllers)
        {
            continue;
        }
        // The process's path is relative to the mount's root (a cgroup namespace or a bind
        // mount of a sub-tree shows only part of the hierarchy).
        let own = Path::new(path)
            .strip_prefix(&root)
            .unwrap_or(Path::new(""))
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect::<PathBuf>();
        out.push(Hierarchy {
            mount,
            controllers,
            unified,
            own,
        });
    }
    out
}

/// The hierarchies of this process.
pub(crate) fn hierarchies() -> Result<Vec<Hierarchy>, Error> {
    let mountinfo = fs::read_to_string(MOUNTINFO).map_err(|e| Error::io("read", MOUNTINFO, e))?;
    let proc_cgroup =
        fs::read_to_string(PROC_CGROUP).map_err(|e| Error::io("read", PROC_CGROUP, e))?;
    Ok(parse_hierarchies(&mountinfo, &proc_cgroup))
}

/// The files and values that set `resources` in one hierarchy: for a v1 hierarchy those of its
/// controllers, for v2 all of them, with the controller each needs.
pub(crate) fn settings(
    hierarchy: &Hierarchy,
    resources: &Resources,
) -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    let period = resources.effective_cpu_period();
    if hierarchy.unified {
        if let Some(shares) = resources.cpu_shares {
            out.push(("cpu", "cpu.weight", shares_to_weight(shares).to_string()));
        }
        if let (Some(quota), Some(period)) = (resources.cpu_quota, period) {
            out.push(("cpu", "cpu.max", format!("{quota} {period}")));
        }
        if let Some(limit) = resources.memory_limit {
            out.push(("memory", "memory.max", limit.to_string()));
        }
        if let Some(reservation) = resources.memory_reservation {
            out.push(("memory", "memory.low", reservation.to_string()));
        }
        if let Some(pids) = resources.pids_limit {
            out.push(("pids", "pids.max", pids.to_string()));
        }
        return out;
    }
    if hierarchy.has("cpu") {
        if let Some(shares) = resources.cpu_shares {
            out.push(("cpu", "cpu.shares", shares.to_string()));
        }
        if let (Some(quota), Some(period)) = (resources.cpu_quota, period) {
            out.push(("cpu", "cpu.cfs_period_us", period.to_string()));
            out.push(("cpu", "cpu.cfs_quota_us", quota.to_string()));
        }
    }
    if hierarchy.has("memory") {
        if let Some(limit) = resources.memory_limit {
            out.push(("memory", "memory.limit_in_bytes", limit.to_string()));
        }
        if let Some(reservation) = resources.memory_reservation {
            out.push((
                "memory",
                "memory.soft_limit_in_bytes",
                reservation.to_string(),
            ));
        }
    }
    if hierarchy.has("pids") {
        if let Some(pids) = resources.pids_limit {
            out.push(("pids", "pids.max", pids.to_string()));
        }
    }
    out
}

/// The controllers `resources` needs.
fn needed_controllers(resources: &Resources) -> Vec<&'static str> {
    let mut out = Vec::new();
    if resources.cpu_shares.is_some() || resources.cpu_quota.is_some() {
        out.push("cpu");
    }
    if resources.memory_limit.is_some() || resources.memory_reservation.is_some() {
        out.push("memory");
    }
    if resources.pids_limit.is_some() {
        out.push("pids");
    }
    out
}

fn cgroup_error(path: &str, reason: impl Into<String>) -> Error {
    Error::Cgroup {
        cgroup: path.to_string(),
        reason: reason.into(),
    }
}

fn write(file: &Path, value: &str) -> Result<(), Error> {
    fs::write(file, value).map_err(|e| Error::io("write", file, e))
}

/// Creates the cgroup `path` in the hierarchies that `resources` needs and sets them there.
/// An existing cgroup is updated. With no limits it only checks the path.
pub(crate) fn create(path: &str, resources: &Resources) -> Result<(), Error> {
    validate_path(path).map_err(|reason| cgroup_error(path, reason))?;
    resources
        .validate()
        .map_err(|reason| cgroup_error(path, reason))?;
    let hierarchies = hierarchies()?;
    let unified_available = |h: &Hierarchy| -> Vec<String> {
        fs::read_to_string(h.mount.join("cgroup.controllers"))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    // Unified mode (v2 only) has no v1 hierarchies with controllers; hybrid mode has them and
    // an empty v2 hierarchy, which takes no limits.
    let v2_mode = hierarchies.iter().all(|h| h.unified);
    for controller in needed_controllers(resources) {
        let served = hierarchies.iter().any(|h| {
            if h.unified {
                v2_mode && unified_available(h).iter().any(|c| c == controller)
            } else {
                h.has(controller)
            }
        });
        if !served {
            return Err(cgroup_error(
                path,
                format!("no mounted cgroup hierarchy has the {controller} controller"),
            ));
        }
    }
    for hierarchy in &hierarchies {
        if hierarchy.unified && !v2_mode {
            continue;
        }
        let settings = settings(hierarchy, resources);
        if settings.is_empty() {
            continue;
        }
        let dir = hierarchy.dir(path);
        if hierarchy.unified {
            let controllers: Vec<&str> = settings.iter().map(|(c, _, _)| *c).collect();
            create_v2(hierarchy, path, &controllers)?;
        } else {
            fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        }
        for (_, file, value) in &settings {
            write(&dir.join(file), value)?;
        }
    }
    Ok(())
}

/// Creates `path` in the unified hierarchy, enabling `controllers` in the `subtree_control` of
/// every cgroup above it, from this process's own (or the root, for an absolute path) down.
fn create_v2(hierarchy: &Hierarchy, path: &str, controllers: &[&str]) -> Result<(), Error> {
    let mut dir = match path.strip_prefix('/') {
        Some(_) => hierarchy.mount.clone(),
        None => hierarchy.mount.join(&hierarchy.own),
    };
    let enable: String = {
        let mut unique: Vec<&str> = controllers.to_vec();
        unique.sort_unstable();
        unique.dedup();
        unique
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for name in path.trim_start_matches('/').split('/') {
        let control = dir.join("cgroup.subtree_control");
        fs::write(&control, &enable).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                cgroup_error(
                    path,
                    format!(
                        "cannot enable {enable} in {}: the cgroup holds processes \
                         (cgroup v2 allows controllers only below cgroups without them; \
                         use an absolute path or run berth in a cgroup of its own)",
                        dir.display()
                    ),
                )
            } else {
                Error::io("write", &control, e)
            }
        })?;
        dir.push(name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(Error::io("create", &dir, err)),
        }
    }
    Ok(())
}

/// Removes the cgroup `path` and every cgroup under it, in every hierarchy, deepest first.
/// A cgroup that does not exist is not an error; one that still holds processes is
/// [`Error::CgroupBusy`] (after a short wait for exiting ones). Goes on after a failure in one
/// hierarchy and reports the first.
pub(crate) fn remove(path: &str) -> Result<(), Error> {
    validate_path(path).map_err(|reason| cgroup_error(path, reason))?;
    let mut first: Option<Error> = None;
    for hierarchy in hierarchies()? {
        if let Err(err) = remove_tree(&hierarchy.dir(path)) {
            first.get_or_insert(err);
        }
    }
    first.map_or(Ok(()), Err)
}

fn remove_tree(dir: &Path) -> Result<(), Error> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::io("read", dir, err)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    for attempt in 0..REMOVE_RETRIES {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                if attempt + 1 == REMOVE_RETRIES {
                    return Err(Error::CgroupBusy {
                        path: dir.to_path_buf(),
                    });
                }
                std::thread::sleep(REMOVE_RETRY_DELAY);
            }
            Err(err) => return Err(Error::io("remove", dir, err)),
        }
    }
    Ok(())
}

/// How many processes in the cgroup `path` the kernel's OOM killer has killed: the `oom_kill`
/// counter of its memory cgroup (v1 `memory.oom_control`, v2 `memory.events`), which counts a
/// kill in the cgroup of the process killed, whichever limit was reached. `path` is a
/// container's `cgroupsPath`, or its id when it has none (runc's default is the id, relative).
/// `None` when the cgroup or the counter cannot be read: no memory controller is mounted, the
/// cgroup is gone (the runtime deletes it with the container), or the kernel is older than
/// 4.13.
pub(crate) fn oom_kills(path: &str) -> Option<u64> {
    let hierarchies = match hierarchies() {
        Ok(hierarchies) => hierarchies,
        Err(err) => {
            tracing::debug!(%err, "cannot list the cgroup hierarchies");
            return None;
        }
    };
    oom_counter_files(&hierarchies, path)
        .iter()
        .find_map(|file| parse_oom_kill(&fs::read_to_string(file).ok()?))
}

/// The files that may hold the `oom_kill` counter of the cgroup `path`, most likely first: in
/// the v1 memory hierarchy when there is one (hybrid hosts), else in the unified one. On v2
/// runc puts a relative path under the parent of its own cgroup rather than under its own
/// (which holds processes, and so cannot have controllers enabled below it): both are given.
pub(crate) fn oom_counter_files(hierarchies: &[Hierarchy], path: &str) -> Vec<PathBuf> {
    if let Some(memory) = hierarchies.iter().find(|h| !h.unified && h.has("memory")) {
        return vec![memory.dir(path).join(V1_OOM_CONTROL)];
    }
    if !hierarchies.iter().all(|h| h.unified) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for unified in hierarchies {
        let dir = unified.dir(path);
        if !out.contains(&dir) {
            out.push(dir);
        }
        if !path.starts_with('/') {
            let parent = unified
                .mount
                .join(unified.own.parent().unwrap_or(Path::new("")))
                .join(path);
            if !out.contains(&parent) {
                out.push(parent);
            }
        }
    }
    out.into_iter()
        .map(|dir| dir.join(V2_MEMORY_EVENTS))
        .collect()
}

/// The value of the `oom_kill` line of `memory.oom_control` or `memory.events`.
pub(crate) fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next()) {
            (Some("oom_kill"), Some(value)) => value.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:13 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/pids rw,nosuid shared:14 - cgroup cgroup rw,pids
36 25 0:30 / /mnt/memory\\040again rw - cgroup cgroup rw,memory
";

    const HYBRID_CGROUP: &str = "\
5:pids:/
4:memory:/agent/a1
3:cpu,cpuacct:/
1:name=systemd:/
0::/
";

    #[test]
    fn hybrid_hierarchies_and_paths() {
        let hs = parse_hierarchies(HYBRID_MOUNTINFO, HYBRID_CGROUP);
        let mounts: Vec<&Path> = hs.iter().map(|h| h.mount.as_path()).collect();
        assert_eq!(
            mounts,
            [
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/pids",
            ]
            .map(Path::new)
        );
        let memory = &hs[3];
        assert_eq!(memory.controllers, ["memory"]);
        assert_eq!(memory.own, Path::new("agent/a1"));
        assert_eq!(
            memory.dir("berth/t1"),
            Path::new("/sys/fs/cgroup/memory/agent/a1/berth/t1")
        );
        assert_eq!(
            memory.dir("/berth/t1"),
            Path::new("/sys/fs/cgroup/memory/berth/t1")
        );
        assert!(hs[0].unified && hs[0].controllers.is_empty());
        assert_eq!(hs[2].controllers, ["cpu", "cpuacct"]);
        assert_eq!(hs[1].controllers, ["name=systemd"]);
    }

    #[test]
    fn a_mount_of_a_sub_tree_is_relative_to_its_root() {
        let mountinfo = "40 30 0:35 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let hs = parse_hierarchies(mountinfo, "0::/kubepods/pod1/c1\n");
        assert_eq!(hs.len(), 1);
        assert!(hs[0].unified);
        assert_eq!(hs[0].own, Path::new("c1"));
        assert_eq!(hs[0].dir("berth/t"), Path::new("/sys/fs/cgroup/c1/berth/t"));
    }

    #[test]
    fn settings_per_hierarchy() {
        let hs = parse_hierarchies(HYBRID_MOUNTINFO, HYBRID_CGROUP);
        let resources = Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(25_000),
            cpu_period: None,
            memory_limit: Some(64 << 20),
            memory_reservation: Some(32 << 20),
            pids_limit: Some(100),
        };
        let files = |h: &Hierarchy| -> Vec<(String, String)> {
            settings(h, &resources)
                .into_iter()
                .map(|(_, f, v)| (f.to_string(), v))
                .collect()
        };
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            files(&hs[2]),
            pairs(&[
                ("cpu.shares", "512"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "25000")
            ])
        );
        assert_eq!(
            files(&hs[3]),
            pairs(&[
                ("memory.limit_in_bytes", "67108864"),
                ("memory.soft_limit_in_bytes", "33554432")
            ])
        );
        assert_eq!(files(&hs[4]), pairs(&[("pids.max", "100")]));
        assert!(files(&hs[1]).is_empty());
        assert_eq!(
            files(&hs[0]),
            pairs(&[
                ("cpu.weight", "20"),
                ("cpu.max", "25000 100000"),
                ("memory.max", "67108864"),
                ("memory.low", "33554432"),
                ("pids.max", "100")
            ])
        );
    }

    #[test]
    fn oom_counters_are_read_from_the_memory_hierarchy() {
        let hs = parse_hierarchies(HYBRID_MOUNTINFO, HYBRID_CGROUP);
        assert_eq!(
            oom_counter_files(&hs, "berth/t1/web"),
            [Path::new(
                "/sys/fs/cgroup/memory/agent/a1/berth/t1/web/memory.oom_control"
            )]
        );
        assert_eq!(
            oom_counter_files(&hs, "/berth/t1/web"),
            [Path::new(
                "/sys/fs/cgroup/memory/berth/t1/web/memory.oom_control"
            )]
        );
        let v2 = parse_hierarchies(
            "40 30 0:35 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/system.slice/berth.service\n",
        );
        assert_eq!(
            oom_counter_files(&v2, "berth/t1/web"),
            [
                "/sys/fs/cgroup/system.slice/berth.service/berth/t1/web/memory.events",
                "/sys/fs/cgroup/system.slice/berth/t1/web/memory.events",
            ]
            .map(Path::new)
        );
        assert_eq!(
            oom_counter_files(&v2, "/berth/t1/web"),
            [Path::new("/sys/fs/cgroup/berth/t1/web/memory.events")]
        );
        // Hybrid without a memory hierarchy: the unified one has no controllers.
        let no_memory: Vec<Hierarchy> = hs.into_iter().filter(|h| !h.has("memory")).collect();
        assert!(oom_counter_files(&no_memory, "web").is_empty());
    }

    #[test]
    fn oom_kill_lines() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(parse_oom_kill(v1), Some(2));
        let v2 = "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(v2), Some(1));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn paths_are_checked() {
        assert!(validate_path("berth/0123abcd").is_ok());
        assert!(validate_path("/berth/task-1.a_b+c").is_ok());
        for bad in [
            "", "/", "a//b", "a/../b", "a/./b", ".hidden", "a/b/", "sp ace",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
        assert!(validate_path(&"x".repeat(256)).is_err());
    }
}
