//! `RUN --mount`: what each mount type becomes in the sandbox.
//!
//! - `type=bind` (the default): `source` (default `/`) of the build context, a stage, an image or
//!   `scratch` (`from=`). A stage or an image is mounted as the overlay of its layer snapshots
//!   ([`Mount::Layers`]); the context is copied (its `.dockerignore` applied) into a temporary
//!   directory under [`SolveOptions::mounts_root`]. Read-only unless `rw`; what a read-write
//!   mount's writes change is thrown away after the step.
//! - `type=cache`: a directory kept across builds at `<mounts_root>/cache/<sha256 of id>`
//!   (`id` defaults to the target), made on first use with `mode` (0755), `uid` and `gid` (0),
//!   filled from `from`/`source` when given. `sharing=shared` (the default) lets any number of
//!   steps use it at once, `locked` waits for the steps using it to finish and keeps the others
//!   out, `private` takes a directory of its own (`<hash>-<n>`) when the cache is in use. The
//!   locks are `flock`s on `<hash>.lock`, so they hold across processes and die with them.
//! - `type=tmpfs`: a tmpfs of `size` bytes (the kernel's default when not given).
//! - `type=secret`: the build secret `id` (or `source`, else the target's base name) as a file
//!   at `target` (default `/run/secrets/<id>`; mode 0400, `uid`, `gid`), kept on a tmpfs of the
//!   sandbox's, and with `env=` as that environment variable too. A secret that was not given
//!   is skipped, unless `required`, which fails the step.
//! - `type=ssh`: the SSH agent `id` (default `default`) that `--ssh` gave, as a socket at
//!   `target` (default `/run/buildkit/ssh_agent.<n>`, `n` counting the step's SSH mounts from
//!   0; mode 0600, `uid`, `gid`) that forwards each connection to the agent (see [`ssh`]).
//!   `SSH_AUTH_SOCK` is the target of the step's first SSH mount, unless the step's environment
//!   has one. An agent that was not given is skipped, unless `required`, which fails the step.
//!   The socket is a file of a temporary directory under the mounts root, bound at the target:
//!   only the empty stub the runtime made for it touches the root filesystem, and it is removed.
//!
//! A relative target is taken from the working directory, as BuildKit takes it.
//!
//! [`SolveOptions::mounts_root`]: super::super::SolveOptions::mounts_root
//! [`ssh`]: super::ssh

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt, lchown};
use std::path::{Component, Path, PathBuf};

use berth_layerstore::digest::Digest;
use berth_layerstore::snapshot::{Active, overlay_supported};
use berth_runner::sandbox::{FileContents, Mount};
use filetime::FileTime;
use sha2::{Digest as _, Sha256};

use super::super::{Solver, absolute};
use super::ssh::{AgentProxy, DEFAULT_SSH_ID};
use crate::context::{Context, FileKind, FinalSymlink};
use crate::instructions::{CacheSharing, FromRef, Lowered, Mount as RunMount, MountType, Run};

/// Where cache mounts live under the mounts root.
const CACHE_DIR: &str = "cache";
/// Where temporary copies of the build context are made under the mounts root.
const TMP_DIR: &str = "tmp";
/// Temporary copies are named `mount-<pid>-<random>`, so that those of a build that was
/// killed can be told from those of builds still running.
const TMP_PREFIX: &str = "mount-";

/// Removes the temporary copies under `parent` whose build process is gone (killed before it
/// could remove them). A reused pid only keeps a stale copy a little longer. Failures are
/// logged: the sweep is housekeeping, never a reason to fail a build.
fn sweep_stale_temp_dirs(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TMP_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        if let Err(err) = std::fs::remove_dir_all(entry.path()) {
            tracing::warn!(path = %entry.path().display(), %err, "cannot remove a stale mount copy");
        }
    }
}

/// The sandbox mounts of one RUN step and what they need until the run is over: the
/// temporary copies, the snapshots and the cache locks are released when this is dropped.
#[derive(Debug, Default)]
pub(in crate::solver) struct RunMounts {
    /// The mounts, in the order the Dockerfile gives them.
    pub(in crate::solver) mounts: Vec<Mount>,
    /// `NAME=value` entries for secrets mounted as environment variables, and `SSH_AUTH_SOCK`.
    pub(in crate::solver) env: Vec<String>,
    /// The SSH agent sockets; before `temp`, so that they stop before their directories go.
    agents: Vec<AgentProxy>,
    temp: Vec<tempfile::TempDir>,
    snapshots: Vec<Active>,
    locks: Vec<File>,
}

/// What a bind mount or a cache's initial content comes from.
enum Source {
    /// The build context.
    Context,
    /// The layers of a stage or an image, bottom first (none for `scratch`).
    Layers(Vec<Digest>),
}

fn flock(file: &File, operation: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: the descriptor is valid for the lifetime of `file`.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn create_dir_all(path: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))
}

/// `path` inside `root`, lexically: `..` never climbs above `root`.
fn inside(root: &Path, path: &str) -> PathBuf {
    let mut out = root.to_path_buf();
    let mut depth = 0;
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => {
                out.push(p);
                depth += 1;
            }
            Component::ParentDir if depth > 0 => {
                out.pop();
                depth -= 1;
            }
            _ => {}
        }
    }
    out
}

/// A mount's target: absolute, against the working directory when relative.
fn target_of(m: &RunMount, cwd: &str) -> Result<PathBuf, String> {
    let target = m.target.as_deref().ok_or_else(|| {
        format!(
            "RUN --mount=type={} needs a target (target=PATH)",
            m.kind.as_str()
        )
    })?;
    let target = absolute(Some(cwd), target);
    if target == "/" {
        return Err(format!("invalid mount target {target:?}"));
    }
    Ok(PathBuf::from(target))
}

/// The hex sha256 of `text`: a cache id as a file name.
fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Solver<'_> {
    /// Makes the mounts of `run`, whose working directory is `cwd`.
    pub(in crate::solver) fn run_mounts(
        &self,
        lowered: &Lowered,
        run: &Run,
        cwd: &str,
    ) -> Result<RunMounts, String> {
        let mut out = RunMounts::default();
        let mut ssh_mounts = 0;
        for m in &run.mounts {
            match m.kind {
                MountType::Bind => {
                    let target = target_of(m, cwd)?;
                    let source = self.mount_source(lowered, m)?;
                    let path = m.source.as_deref().unwrap_or("/");
                    let mount = self.bind_view(source, path, target, m.read_only, &mut out)?;
                    out.mounts.push(mount);
                }
                MountType::Cache => {
                    let target = target_of(m, cwd)?;
                    let mount = self.cache_mount(lowered, m, target, &mut out)?;
                    out.mounts.push(mount);
                }
                MountType::Tmpfs => out.mounts.push(Mount::Tmpfs {
                    target: target_of(m, cwd)?,
                    size: m.size,
                    mode: None,
                }),
                MountType::Secret => self.secret_mount(m, cwd, &mut out)?,
                MountType::Ssh => {
                    let target = match &m.target {
                        Some(_) => target_of(m, cwd)?,
                        None => PathBuf::from(format!("/run/buildkit/ssh_agent.{ssh_mounts}")),
                    };
                    // BuildKit sets it whether the agent is there or not.
                    if ssh_mounts == 0 && !run.env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK") {
                        out.env
                            .push(format!("SSH_AUTH_SOCK={}", target.to_string_lossy()));
                    }
                    ssh_mounts += 1;
                    self.ssh_mount(m, target, &mut out)?;
                }
            }
        }
        Ok(out)
    }

    fn mount_source(&self, lowered: &Lowered, m: &RunMount) -> Result<Source, String> {
        Ok(match &m.from_ref {
            None | Some(FromRef::Context) => Source::Context,
            Some(FromRef::Scratch) => Source::Layers(Vec::new()),
            Some(FromRef::Stage(i)) => {
                Source::Layers(self.stage_source(*i)?.config.rootfs.diff_ids)
            }
            Some(FromRef::Image(name)) => {
                Source::Layers(self.image_source(lowered, name)?.config.rootfs.diff_ids)
            }
        })
    }

    fn temp_dir(&self, out: &mut RunMounts) -> Result<PathBuf, String> {
        let parent = self.options.mounts_root.join(TMP_DIR);
        create_dir_all(&parent)?;
        sweep_stale_temp_dirs(&parent);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{TMP_PREFIX}{}-", std::process::id()))
            .tempdir_in(&parent)
            .map_err(|e| format!("creating a directory in {}: {e}", parent.display()))?;
        let path = dir.path().to_path_buf();
        out.temp.push(dir);
        Ok(path)
    }

    /// A bind mount of `path` in `source`.
    fn bind_view(
        &self,
        source: Source,
        path: &str,
        target: PathBuf,
        readonly: bool,
        out: &mut RunMounts,
    ) -> Result<Mount, String> {
        match source {
            Source::Context => {
                let dir = self.temp_dir(out)?;
                let copy = copy_context(self.context, path, &dir)?;
                Ok(Mount::Bind {
                    source: copy,
                    target,
                    readonly,
                })
            }
            Source::Layers(diff_ids) if diff_ids.is_empty() => {
                let dir = self.temp_dir(out)?;
                let source = inside(&dir, path);
                if source != dir {
                    return Err(format!("mount source {path}: not found in scratch"));
                }
                Ok(Mount::Bind {
                    source,
                    target,
                    readonly,
                })
            }
            Source::Layers(diff_ids) if overlay_supported() => {
                // Top first, each once at its topmost place.
                let mut lower: Vec<PathBuf> = Vec::new();
                for d in diff_ids.iter().rev() {
                    let p = self.snapshots.path(d);
                    if !lower.contains(&p) {
                        lower.push(p);
                    }
                }
                Ok(Mount::Layers {
                    lower,
                    path: inside(Path::new("/"), path),
                    target,
                    readonly,
                })
            }
            Source::Layers(diff_ids) => {
                let active = self
                    .snapshots
                    .prepare_copy("mount", &diff_ids)
                    .map_err(|e| e.to_string())?;
                let dir = active
                    .copy_dir()
                    .ok_or("a copy snapshot without a directory")?
                    .to_path_buf();
                out.snapshots.push(active);
                let source = inside(&dir, path);
                fs::symlink_metadata(&source).map_err(|e| format!("mount source {path}: {e}"))?;
                Ok(Mount::Bind {
                    source,
                    target,
                    readonly,
                })
            }
        }
    }

    fn cache_mount(
        &self,
        lowered: &Lowered,
        m: &RunMount,
        target: PathBuf,
        out: &mut RunMounts,
    ) -> Result<Mount, String> {
        let id =
            m.id.clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| target.to_string_lossy().into_owned());
        let root = self.options.mounts_root.join(CACHE_DIR);
        create_dir_all(&root)?;
        let key = hex_sha256(&id);
        let open_lock = |name: &str| -> Result<File, String> {
            let path = root.join(format!("{name}.lock"));
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("opening {}: {e}", path.display()))
        };
        let name = match m.sharing.unwrap_or(CacheSharing::Shared) {
            CacheSharing::Shared | CacheSharing::Locked => {
                let lock = open_lock(&key)?;
                let op = if m.sharing == Some(CacheSharing::Locked) {
                    libc::LOCK_EX
                } else {
                    libc::LOCK_SH
                };
                flock(&lock, op).map_err(|e| format!("locking cache {id:?}: {e}"))?;
                out.locks.push(lock);
                key
            }
            CacheSharing::Private => {
                let mut n = 0usize;
                loop {
                    let name = if n == 0 {
                        key.clone()
                    } else {
                        format!("{key}-{n}")
                    };
                    let lock = open_lock(&name)?;
                    match flock(&lock, libc::LOCK_EX | libc::LOCK_NB) {
                        Ok(()) => {
                            out.locks.push(lock);
                            break name;
                        }
                        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => n += 1,
                        Err(e) => return Err(format!("locking cache {id:?}: {e}")),
                    }
                }
            }
        };
        let dir = root.join(&name);
        if !dir.exists() {
            self.new_cache(lowered, m, &id, &root, &dir)?;
        }
        Ok(Mount::Bind {
            source: dir,
            target,
            readonly: m.read_only,
        })
    }

    /// Makes the cache directory `dir`: filled from the mount's `from` when given, else empty
    /// with the mount's mode and owner. It is built aside and renamed into place, so a step
    /// sharing the cache never sees it half made.
    fn new_cache(
        &self,
        lowered: &Lowered,
        m: &RunMount,
        id: &str,
        root: &Path,
        dir: &Path,
    ) -> Result<(), String> {
        let fail = |e: &dyn std::fmt::Display| format!("creating cache {id:?}: {e}");
        let staging = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(root)
            .map_err(|e| fail(&e))?;
        let mut data = staging.path().join("data");
        let path = m.source.as_deref().unwrap_or("/");
        match m
            .from
            .as_ref()
            .map(|_| self.mount_source(lowered, m))
            .transpose()?
        {
            Some(Source::Context) => {
                data = copy_context(self.context, path, staging.path())?;
                if !data.is_dir() {
                    return Err(fail(&format_args!("{path} is not a directory")));
                }
            }
            Some(Source::Layers(diff_ids)) if !diff_ids.is_empty() => {
                let active = self
                    .snapshots
                    .prepare_copy("cache-from", &diff_ids)
                    .map_err(|e| e.to_string())?;
                let merged = active
                    .copy_dir()
                    .ok_or("a copy snapshot without a directory")?;
                let from = inside(merged, path);
                if !from.is_dir() {
                    return Err(fail(&format_args!("{path} is not a directory")));
                }
                copy_tree(&from, &data).map_err(|e| fail(&e))?;
            }
            // Empty, with the mount's mode and owner.
            None | Some(Source::Layers(_)) => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&data)
                    .map_err(|e| fail(&e))?;
                lchown(&data, Some(m.uid.unwrap_or(0)), Some(m.gid.unwrap_or(0)))
                    .map_err(|e| fail(&e))?;
                fs::set_permissions(&data, fs::Permissions::from_mode(m.mode.unwrap_or(0o755)))
                    .map_err(|e| fail(&e))?;
            }
        }
        match fs::rename(&data, dir) {
            Ok(()) => {}
            // Another build made it first: use theirs.
            Err(_) if dir.is_dir() => {}
            Err(e) => return Err(fail(&e)),
        }
        let _ = fs::write(root.join(format!("{}.id", hex_sha256(id))), id);
        Ok(())
    }

    fn secret_mount(&self, m: &RunMount, cwd: &str, out: &mut RunMounts) -> Result<(), String> {
        let basename = |p: &str| {
            Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let id = match (&m.source, &m.id, &m.target) {
            (Some(source), _, _) => source.clone(),
            (None, Some(id), _) if !id.is_empty() => id.clone(),
            (None, _, Some(target)) => basename(target),
            _ => return Err("a secret mount needs an id or a target".into()),
        };
        let target = match (&m.target, &m.env) {
            (Some(_), _) => Some(target_of(m, cwd)?),
            (None, None) => Some(PathBuf::from("/run/secrets").join(basename(&id))),
            (None, Some(_)) => None,
        };
        let value = match self.options.secrets.get(&id) {
            Some(source) => source.read()?,
            None => None,
        };
        let Some(value) = value else {
            if m.required {
                return Err(format!(
                    "secret {id}: not found; the step requires it: give it with \
                     --secret id={id},src=FILE"
                ));
            }
            return Ok(());
        };
        if let Some(env) = &m.env {
            out.env
                .push(format!("{env}={}", String::from_utf8_lossy(&value)));
        }
        if let Some(target) = target {
            out.mounts.push(Mount::File {
                contents: FileContents::from(value),
                target,
                mode: m.mode.unwrap_or(0o400),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
            });
        }
        Ok(())
    }

    /// Forwards the SSH agent of `m` to a socket at `target`.
    fn ssh_mount(&self, m: &RunMount, target: PathBuf, out: &mut RunMounts) -> Result<(), String> {
        let id =
            m.id.as_deref()
                .filter(|id| !id.is_empty())
                .unwrap_or(DEFAULT_SSH_ID);
        let Some(agent) = self.options.ssh.get(id).cloned() else {
            if m.required {
                return Err(format!(
                    "no SSH key {id:?} forwarded from the client: give it with --ssh {id}[=SOCKET]"
                ));
            }
            return Ok(());
        };
        let dir = self.temp_dir(out)?;
        let socket = dir.join("agent");
        let proxy = AgentProxy::start(
            &socket,
            agent,
            m.mode.unwrap_or(0o600),
            m.uid.unwrap_or(0),
            m.gid.unwrap_or(0),
        )
        .map_err(|e| format!("ssh {id}: making a socket at {}: {e}", socket.display()))?;
        out.agents.push(proxy);
        out.mounts.push(Mount::Bind {
            source: socket,
            target,
            readonly: m.read_only,
        });
        Ok(())
    }
}

/// Sets the owner, the mode and the times of `path` from `meta` (a symlink: its owner only).
fn copy_metadata(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    lchown(path, Some(meta.uid()), Some(meta.gid()))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    filetime::set_file_times(
        path,
        FileTime::from_last_access_time(meta),
        FileTime::from_last_modification_time(meta),
    )
}

/// Copies one file, directory (without its contents) or symlink from `from` to `to`; other
/// kinds are skipped.
fn copy_one(from: &Path, meta: &fs::Metadata, to: &Path) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_dir() {
        fs::DirBuilder::new().mode(0o700).create(to)?;
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else if ft.is_file() {
        fs::copy(from, to)?;
    } else {
        return Ok(());
    }
    if !ft.is_dir() {
        copy_metadata(to, meta)?;
    }
    Ok(())
}

/// Copies the tree at `from` to `to` (which must not exist), keeping owners, modes and times,
/// never following a symlink.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry.path().strip_prefix(from).map_err(io::Error::other)?;
        let dest = if rel.as_os_str().is_empty() {
            to.to_path_buf()
        } else {
            to.join(rel)
        };
        let meta = entry.path().symlink_metadata()?;
        copy_one(entry.path(), &meta, &dest)?;
        if meta.is_dir() {
            dirs.push((dest, meta));
        }
    }
    // Directories last, deepest first, so that their times are not changed again.
    for (dir, meta) in dirs.iter().rev() {
        copy_metadata(dir, meta)?;
    }
    Ok(())
}

/// Copies `path` of the build context (its ignore rules applied) into `dir`; returns the copy:
/// `dir/root` for a directory, `dir/<name>` for a file.
fn copy_context(context: &Context, path: &str, dir: &Path) -> Result<PathBuf, String> {
    let fail = |e: &dyn std::fmt::Display| format!("mount source {path}: {e}");
    let base = context
        .resolve(path, FinalSymlink::Follow)
        .map_err(|e| fail(&e))?;
    let base_host = context.host_path(&base);
    let base_meta = fs::metadata(&base_host).map_err(|e| fail(&e))?;
    if base.kind != FileKind::Dir {
        let name = base_host
            .file_name()
            .map(|n| n.to_owned())
            .unwrap_or_else(|| "file".into());
        let to = dir.join(name);
        copy_one(&base_host, &base_meta, &to).map_err(|e| fail(&e))?;
        return Ok(to);
    }
    let root = dir.join("root");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&root)
        .map_err(|e| fail(&e))?;
    let mut dirs = vec![(root.clone(), base_meta)];
    for entry in context.walk_dir(path).map_err(|e| fail(&e))? {
        let entry = entry.map_err(|e| fail(&e))?;
        let rel = if base.path == Path::new(".") {
            entry.path.clone()
        } else {
            entry
                .path
                .strip_prefix(&base.path)
                .map_err(|e| fail(&e))?
                .to_path_buf()
        };
        let from = context.host_path(&entry);
        let meta = fs::symlink_metadata(&from).map_err(|e| fail(&e))?;
        let to = root.join(rel);
        copy_one(&from, &meta, &to).map_err(|e| fail(&e))?;
        if meta.is_dir() {
            dirs.push((to, meta));
        }
    }
    for (d, meta) in dirs.iter().rev() {
        copy_metadata(d, meta).map_err(|e| fail(&e))?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_their_root() {
        let root = Path::new("/r");
        assert_eq!(inside(root, "/"), Path::new("/r"));
        assert_eq!(inside(root, "sub/../x"), Path::new("/r/x"));
        assert_eq!(inside(root, "../../etc"), Path::new("/r/etc"));
    }

    #[test]
    fn stale_temp_copies_of_dead_builds_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(format!("{TMP_PREFIX}{}-abc", u32::MAX - 1));
        let alive = dir
            .path()
            .join(format!("{TMP_PREFIX}{}-def", std::process::id()));
        let other = dir.path().join("unrelated");
        for d in [&dead, &alive, &other] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
        }
        sweep_stale_temp_dirs(dir.path());
        assert!(!dead.exists(), "the copy of a dead build is removed");
        assert!(alive.exists(), "a running build's copy is kept");
        assert!(other.exists(), "what the sweep does not name is kept");
    }

    #[test]
    fn copies_keep_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        fs::create_dir_all(from.join("sub")).unwrap();
        fs::write(from.join("sub/f"), "x").unwrap();
        fs::set_permissions(from.join("sub/f"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("sub/f", from.join("link")).unwrap();
        let to = dir.path().join("to");
        copy_tree(&from, &to).unwrap();
        assert_eq!(fs::read_to_string(to.join("sub/f")).unwrap(), "x");
        let mode = fs::metadata(to.join("sub/f")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert_eq!(fs::read_link(to.join("link")).unwrap(), Path::new("sub/f"));
    }
}
