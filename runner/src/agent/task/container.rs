//! One container's run: its definition and its image merged into the sandbox's [`RunSpec`], as
//! Docker merges a container's config with its image's for the ECS agent.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use super::network::NetworkInfo;
use crate::agent::image::PreparedImage;
use crate::ecs::taskdef::{ContainerDefinition, NetworkMode, TaskDefinition, Volume, VolumeScope};
use crate::sandbox::{
    ContainerControl, FileContents, Mount, ProcessSpec, RLIM_INFINITY, Resources, Rlimit,
    RootfsSpec, RunSpec,
};

/// Why a container cannot be set up, as the reason ECS gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PlanError {
    /// A secret cannot be read: the task fails (`ResourceInitializationError`).
    Secrets(String),
    /// The container cannot start as defined (`CannotStartContainerError`).
    Start(String),
}

impl PlanError {
    /// The reason in ECS's words.
    pub(crate) fn reason(&self) -> String {
        match self {
            PlanError::Secrets(detail) => format!(
                "ResourceInitializationError: unable to pull secrets or registry auth: {detail}"
            ),
            PlanError::Start(detail) => format!("CannotStartContainerError: {detail}"),
        }
    }
}

/// What a container runs with, besides its definition and image.
pub(crate) struct Inputs<'a> {
    /// `<root>/tasks/<id>`.
    pub(crate) task_dir: &'a Path,
    pub(crate) definition: &'a TaskDefinition,
    pub(crate) index: usize,
    pub(crate) image: &'a PreparedImage,
    /// The task's network namespace.
    pub(crate) network: crate::sandbox::Network,
    pub(crate) info: &'a NetworkInfo,
    /// The task's volumes: name to host directory.
    pub(crate) volumes: &'a HashMap<String, PathBuf>,
    /// Variables the agent adds (metadata, credentials).
    pub(crate) agent_env: &'a [(String, String)],
    pub(crate) cgroup_parent: Option<String>,
    pub(crate) runtime_id: &'a str,
    pub(crate) control: ContainerControl,
}

/// A container ready to run.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) spec: RunSpec,
    /// The signal that asks it to stop: the image's STOPSIGNAL, else SIGTERM.
    pub(crate) stop_signal: libc::c_int,
}

/// Makes the host directories of the task's volumes: `host.sourcePath` as given (created when
/// missing, as Docker creates a bind's source), a task-scoped directory for a volume without a
/// source path or a docker volume of `task` scope, `<volumes root>/<name>` for a `shared`
/// docker volume. The error is the reason, for `ResourceInitializationError`.
pub(crate) fn prepare_volumes(
    task_dir: &Path,
    volumes_root: &Path,
    definition: &TaskDefinition,
) -> Result<HashMap<String, PathBuf>, String> {
    let mut out = HashMap::new();
    for volume in &definition.volumes {
        let dir = volume_dir(task_dir, volumes_root, volume)?;
        fs::create_dir_all(&dir).map_err(|e| {
            format!(
                "volume {}: cannot create {}: {e}",
                volume.name,
                dir.display()
            )
        })?;
        out.insert(volume.name.clone(), dir);
    }
    Ok(out)
}

fn volume_dir(task_dir: &Path, volumes_root: &Path, volume: &Volume) -> Result<PathBuf, String> {
    if let Some(source) = volume.host.as_ref().and_then(|h| h.source_path.as_deref()) {
        let path = Path::new(source);
        if !path.is_absolute() {
            return Err(format!(
                "volume {}: host sourcePath {source:?} is not an absolute path",
                volume.name
            ));
        }
        return Ok(path.to_owned());
    }
    check_volume_name(&volume.name)?;
    let shared = volume
        .docker_volume_configuration
        .as_ref()
        .is_some_and(|c| c.scope == Some(VolumeScope::Shared));
    if let Some(config) = &volume.docker_volume_configuration {
        if let Some(driver) = config.driver.as_deref().filter(|d| *d != "local") {
            return Err(format!(
                "volume {}: volume driver {driver:?} is not supported (only \"local\")",
                volume.name
            ));
        }
        if shared
            && config.autoprovision == Some(false)
            && !volumes_root.join(&volume.name).is_dir()
        {
            return Err(format!(
                "volume {}: the shared volume does not exist and autoprovision is false",
                volume.name
            ));
        }
    }
    Ok(if shared {
        volumes_root.join(&volume.name)
    } else {
        task_dir.join(".volumes").join(&volume.name)
    })
}

/// A volume name usable as a directory name.
fn check_volume_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "volume name {name:?} must be letters, numbers, hyphens and underscores"
        ))
    }
}

/// The container's run: see the module docs of [`super`] for what each field becomes.
pub(crate) fn plan(inputs: Inputs<'_>) -> Result<Plan, PlanError> {
    let definition = inputs.definition;
    let def = &definition.container_definitions[inputs.index];
    let image_config = inputs.image.config.config.clone().unwrap_or_default();
    refuse_unsupported(def)?;

    let args = process_args(
        def,
        image_config.entrypoint.as_deref(),
        image_config.cmd.as_deref(),
    )?;
    let mut env = merge_env(image_config.env.as_deref().unwrap_or_default(), def);
    for secret in &def.secrets {
        let value = read_secret(&secret.name, &secret.value_from).map_err(PlanError::Secrets)?;
        set_env(&mut env, &secret.name, &value);
    }
    for (key, value) in inputs.agent_env {
        set_env(&mut env, key, value);
    }
    let cwd = match def.working_directory.as_deref().filter(|d| !d.is_empty()) {
        Some(dir) => dir.to_owned(),
        None => image_config
            .working_dir
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/".to_owned()),
    };
    if !cwd.starts_with('/') {
        return Err(PlanError::Start(format!(
            "the working directory {cwd:?} is invalid, it needs to be an absolute path"
        )));
    }
    let user = def
        .user
        .clone()
        .or(image_config.user.clone())
        .unwrap_or_default();

    let dir = inputs.task_dir.join(&def.name);
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    for d in [&upper, &work] {
        fs::create_dir_all(d)
            .map_err(|e| PlanError::Start(format!("cannot create {}: {e}", d.display())))?;
    }

    let hostname = hostname(def, inputs.info, inputs.runtime_id);
    let mut mounts = mounts(definition, def, inputs.volumes)?;
    if let Some(files) = etc_files(def, inputs.info, &hostname, &inputs.network) {
        mounts.extend(files);
    }
    if let Some(params) = &def.linux_parameters {
        if let Some(size) = params.shared_memory_size {
            mounts.push(Mount::Tmpfs {
                target: PathBuf::from("/dev/shm"),
                size: Some(u64::from(size) * crate::sandbox::MIB),
                mode: Some(0o1777),
            });
        }
        for tmpfs in &params.tmpfs {
            mounts.push(Mount::Tmpfs {
                target: PathBuf::from(&tmpfs.container_path),
                size: Some(u64::from(tmpfs.size) * crate::sandbox::MIB),
                mode: None,
            });
        }
    }

    let mut process = ProcessSpec::new(args);
    process.env = env;
    process.cwd = PathBuf::from(cwd);
    process.user = user;
    let mut spec = RunSpec::new(
        RootfsSpec::Overlay {
            lower: inputs.image.lowerdirs.clone(),
            upper,
            work,
        },
        process,
    );
    spec.network = if def.disable_networking == Some(true) {
        crate::sandbox::Network::None
    } else {
        inputs.network
    };
    spec.hostname = Some(hostname);
    spec.mounts = mounts;
    spec.readonly_rootfs = def.readonly_root_filesystem == Some(true);
    spec.name = Some(inputs.runtime_id.to_owned());
    spec.resources = Some(Resources::ecs_container(
        Some(u64::from(def.cpu)),
        def.memory.map(u64::from),
        def.memory_reservation.map(u64::from),
    ));
    spec.cgroup_parent = inputs.cgroup_parent;
    spec.rlimits = def
        .ulimits
        .iter()
        .map(|u| {
            let limit = |v: i64| u64::try_from(v).unwrap_or(RLIM_INFINITY);
            Rlimit::new(
                u.name
                    .rlimit()
                    .trim_start_matches("RLIMIT_")
                    .to_ascii_lowercase(),
                limit(u.soft_limit),
                limit(u.hard_limit),
            )
        })
        .collect();
    spec.control = Some(inputs.control);
    Ok(Plan {
        spec,
        stop_signal: image_config
            .stop_signal
            .as_deref()
            .and_then(signal_number)
            .unwrap_or(libc::SIGTERM),
    })
}

/// Settings the sandbox cannot honour: refused, rather than run differently.
fn refuse_unsupported(def: &ContainerDefinition) -> Result<(), PlanError> {
    let refuse = |what: &str| {
        Err(PlanError::Start(format!(
            "{what} is not supported by berth's sandbox"
        )))
    };
    if def.pseudo_terminal == Some(true) {
        return refuse("pseudoTerminal");
    }
    if let Some(params) = &def.linux_parameters {
        if params
            .capabilities
            .as_ref()
            .is_some_and(|c| !c.add.is_empty() || !c.drop.is_empty())
        {
            return refuse("linuxParameters.capabilities");
        }
        if params.init_process_enabled == Some(true) {
            return refuse("linuxParameters.initProcessEnabled");
        }
        for tmpfs in &params.tmpfs {
            if let Some(option) = tmpfs
                .mount_options
                .iter()
                .find(|o| !matches!(o.as_str(), "nosuid" | "nodev" | "rw" | "defaults"))
            {
                return refuse(&format!(
                    "tmpfs mount option {option:?} (at {})",
                    tmpfs.container_path
                ));
            }
        }
    }
    Ok(())
}

/// ENTRYPOINT and CMD as Docker merges a container's with its image's: a container
/// `entryPoint` replaces the image's ENTRYPOINT and drops the image's CMD; a container
/// `command` replaces the CMD.
pub(crate) fn process_args(
    def: &ContainerDefinition,
    image_entrypoint: Option<&[String]>,
    image_cmd: Option<&[String]>,
) -> Result<Vec<String>, PlanError> {
    let entrypoint_set = def.entry_point.as_ref().is_some_and(|e| !e.is_empty());
    let entrypoint: Vec<String> = if entrypoint_set {
        def.entry_point.clone().unwrap_or_default()
    } else {
        image_entrypoint.unwrap_or_default().to_vec()
    };
    let cmd: Vec<String> = match &def.command {
        Some(command) if !command.is_empty() => command.clone(),
        _ if entrypoint_set => Vec::new(),
        _ => image_cmd.unwrap_or_default().to_vec(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(PlanError::Start(
            "no command specified: the container definition and the image have neither an \
             entry point nor a command"
                .to_owned(),
        ));
    }
    Ok(args)
}

/// The image's environment, then the definition's `environment`, a later value replacing an
/// earlier one of the same name.
pub(crate) fn merge_env(image_env: &[String], def: &ContainerDefinition) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    for entry in image_env {
        let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
        set_env(&mut env, key, value);
    }
    for pair in &def.environment {
        set_env(&mut env, &pair.name, &pair.value);
    }
    env
}

fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

/// A secret's value: `file:///absolute/path` on the agent's host, less one trailing newline.
pub(crate) fn read_secret(name: &str, value_from: &str) -> Result<String, String> {
    let Some(path) = value_from.strip_prefix("file://") else {
        return Err(format!(
            "secret {name}: valueFrom {value_from:?} cannot be retrieved: berth reads secrets \
             only from file:///absolute/path on the agent's host"
        ));
    };
    if !path.starts_with('/') {
        return Err(format!(
            "secret {name}: valueFrom {value_from:?} must name an absolute path (file:///...)"
        ));
    }
    let mut value =
        fs::read_to_string(path).map_err(|e| format!("secret {name}: cannot read {path}: {e}"))?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

/// The container's mounts: its `mountPoints`, then those of each `volumesFrom` container.
fn mounts(
    definition: &TaskDefinition,
    def: &ContainerDefinition,
    volumes: &HashMap<String, PathBuf>,
) -> Result<Vec<Mount>, PlanError> {
    let mut out = Vec::new();
    let mut add = |points: &[crate::ecs::taskdef::MountPoint],
                   force_readonly: Option<bool>,
                   of: &str|
     -> Result<(), PlanError> {
        for point in points {
            let source = volumes.get(&point.source_volume).ok_or_else(|| {
                PlanError::Start(format!(
                    "mount point {} of container {of} names volume {:?}, which the task \
                     definition does not have",
                    point.container_path, point.source_volume
                ))
            })?;
            if !point.container_path.starts_with('/') {
                return Err(PlanError::Start(format!(
                    "mount point {:?} of container {of} is not an absolute path",
                    point.container_path
                )));
            }
            out.push(Mount::Bind {
                source: source.clone(),
                target: PathBuf::from(&point.container_path),
                readonly: force_readonly.unwrap_or(point.read_only == Some(true)),
            });
        }
        Ok(())
    };
    add(&def.mount_points, None, &def.name)?;
    for from in &def.volumes_from {
        let source = definition
            .container(&from.source_container)
            .ok_or_else(|| {
                PlanError::Start(format!(
                    "volumesFrom names container {:?}, which the task does not have",
                    from.source_container
                ))
            })?;
        add(
            &source.mount_points,
            from.read_only.filter(|r| *r),
            &source.name,
        )?;
    }
    Ok(out)
}

/// The container's hostname: its definition's, else the private DNS name of an awsvpc task's
/// address, the host's in host mode, and otherwise the first 12 digits of its id, as Docker
/// names a container.
fn hostname(def: &ContainerDefinition, info: &NetworkInfo, runtime_id: &str) -> String {
    if let Some(name) = def.hostname.as_deref().filter(|h| !h.is_empty()) {
        return name.to_owned();
    }
    match info.mode {
        NetworkMode::Awsvpc => info
            .private_dns_name
            .clone()
            .unwrap_or_else(|| runtime_id[..12].to_owned()),
        NetworkMode::Host => fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty() && h.len() <= 64)
            .unwrap_or_else(|| runtime_id[..12].to_owned()),
        NetworkMode::Bridge | NetworkMode::None => runtime_id[..12].to_owned(),
    }
}

/// `/etc/hosts` and `/etc/resolv.conf` for a container that sets `extraHosts`, `links`,
/// `dnsServers` or `dnsSearchDomains`; `None` for one that sets none (the sandbox's own files
/// serve it).
fn etc_files(
    def: &ContainerDefinition,
    info: &NetworkInfo,
    hostname: &str,
    network: &crate::sandbox::Network,
) -> Option<Vec<Mount>> {
    let hosts_needed = !def.extra_hosts.is_empty() || !def.links.is_empty();
    let resolv_needed = !def.dns_servers.is_empty() || !def.dns_search_domains.is_empty();
    if !hosts_needed && !resolv_needed {
        return None;
    }
    let file = |target: &str, text: String| Mount::File {
        contents: FileContents::from(text.into_bytes()),
        target: PathBuf::from(target),
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let mut out = Vec::new();
    if hosts_needed {
        out.push(file("/etc/hosts", hosts(def, info, hostname)));
    }
    if resolv_needed {
        let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let own_namespace = !matches!(network, crate::sandbox::Network::Host);
        out.push(file(
            "/etc/resolv.conf",
            resolv_conf(
                &host,
                own_namespace,
                &def.dns_servers,
                &def.dns_search_domains,
            ),
        ));
    }
    Some(out)
}

fn hosts(def: &ContainerDefinition, info: &NetworkInfo, hostname: &str) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let own = info
        .ipv4
        .map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string());
    let _ = writeln!(out, "{own}\t{hostname}");
    for entry in &def.extra_hosts {
        let _ = writeln!(out, "{}\t{}", entry.ip_address, entry.hostname);
    }
    // The containers of a task share its network namespace: a linked container is on
    // loopback.
    for link in &def.links {
        let (name, alias) = link.split_once(':').unwrap_or((link, link));
        if name == alias {
            let _ = writeln!(out, "127.0.0.1\t{name}");
        } else {
            let _ = writeln!(out, "127.0.0.1\t{alias} {name}");
        }
    }
    out
}

/// `/etc/resolv.conf`: `dnsServers` (else the host's, less loopback ones in another network
/// namespace, else Docker's defaults), `dnsSearchDomains` (else the host's search line), and
/// the host's options.
pub(crate) fn resolv_conf(
    host: &str,
    own_namespace: bool,
    servers: &[String],
    search: &[String],
) -> String {
    let mut host_servers = Vec::new();
    let mut host_search = None;
    let mut options = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(addr) = words.next() {
                    let loopback = addr
                        .split('%')
                        .next()
                        .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                        .is_some_and(|ip| ip.is_loopback());
                    if !(own_namespace && loopback) {
                        host_servers.push(addr.to_owned());
                    }
                }
            }
            Some("search") | Some("domain") => {
                host_search = Some(words.collect::<Vec<_>>().join(" "));
            }
            Some("options") => options.push(line.trim().to_owned()),
            _ => {}
        }
    }
    let servers: Vec<String> = if !servers.is_empty() {
        servers.to_vec()
    } else if !host_servers.is_empty() {
        host_servers
    } else {
        vec!["8.8.8.8".to_owned(), "8.8.4.4".to_owned()]
    };
    let mut out = String::new();
    if !search.is_empty() {
        let _ = writeln!(out, "search {}", search.join(" "));
    } else if let Some(line) = host_search.filter(|s| !s.is_empty()) {
        let _ = writeln!(out, "search {line}");
    }
    for server in servers {
        let _ = writeln!(out, "nameserver {server}");
    }
    for line in options {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// A STOPSIGNAL value (`SIGTERM`, `TERM`, `15`) as a signal number.
pub(crate) fn signal_number(text: &str) -> Option<libc::c_int> {
    if let Ok(n) = text.trim().parse::<libc::c_int>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = text.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => {
            let n: libc::c_int = name.strip_prefix("RTMIN+")?.parse().ok()?;
            let signal = libc::SIGRTMIN() + n;
            return (signal <= libc::SIGRTMAX()).then_some(signal);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::taskdef::KeyValuePair;

    fn def() -> ContainerDefinition {
        ContainerDefinition {
            name: "app".into(),
            image: "busybox".into(),
            ..ContainerDefinition::default()
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn entrypoint_and_command_merge_as_docker_merges_them() {
        let ep = strings(&["/entry"]);
        let cmd = strings(&["serve", "--port", "80"]);
        let mut c = def();
        assert_eq!(
            process_args(&c, Some(&ep), Some(&cmd)).unwrap(),
            strings(&["/entry", "serve", "--port", "80"])
        );
        c.command = Some(strings(&["check"]));
        assert_eq!(
            process_args(&c, Some(&ep), Some(&cmd)).unwrap(),
            strings(&["/entry", "check"])
        );
        c.command = None;
        c.entry_point = Some(strings(&["/bin/sh", "-c"]));
        assert_eq!(
            process_args(&c, Some(&ep), Some(&cmd)).unwrap(),
            strings(&["/bin/sh", "-c"]),
            "an entry point drops the image's CMD"
        );
        c.command = Some(strings(&["echo hi"]));
        assert_eq!(
            process_args(&c, None, Some(&cmd)).unwrap(),
            strings(&["/bin/sh", "-c", "echo hi"])
        );
        let err = process_args(&def(), None, None).unwrap_err();
        assert!(
            err.reason()
                .starts_with("CannotStartContainerError: no command specified")
        );
    }

    #[test]
    fn the_definition_environment_overrides_the_image() {
        let mut c = def();
        c.environment = vec![
            KeyValuePair::new("MODE", "prod"),
            KeyValuePair::new("EXTRA", "1"),
        ];
        let env = merge_env(&strings(&["PATH=/bin", "MODE=dev", "BARE"]), &c);
        assert_eq!(
            env,
            strings(&["PATH=/bin", "MODE=prod", "BARE=", "EXTRA=1"])
        );
    }

    #[test]
    fn secrets_come_from_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        fs::write(&file, "s3cret\n").unwrap();
        let value = read_secret("TOKEN", &format!("file://{}", file.display())).unwrap();
        assert_eq!(value, "s3cret");
        let err = read_secret(
            "DB",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
        )
        .unwrap_err();
        assert!(
            err.contains("berth reads secrets only from file://"),
            "{err}"
        );
        assert!(
            PlanError::Secrets(err)
                .reason()
                .starts_with("ResourceInitializationError: unable to pull secrets")
        );
        assert!(read_secret("X", "file://relative").is_err());
    }

    #[test]
    fn stop_signals_parse() {
        assert_eq!(signal_number("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(signal_number("term"), Some(libc::SIGTERM));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGRTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(signal_number("SIGNOPE"), None);
        assert_eq!(signal_number("99"), None);
    }

    #[test]
    fn resolv_conf_takes_the_definition_first() {
        let host =
            "search corp.example\nnameserver 127.0.0.53\nnameserver 10.0.0.2\noptions ndots:2\n";
        assert_eq!(
            resolv_conf(host, true, &strings(&["1.1.1.1"]), &[]),
            "search corp.example\nnameserver 1.1.1.1\noptions ndots:2\n"
        );
        assert_eq!(
            resolv_conf(host, true, &[], &strings(&["svc.local"])),
            "search svc.local\nnameserver 10.0.0.2\noptions ndots:2\n"
        );
        assert_eq!(
            resolv_conf("nameserver 127.0.0.1\n", true, &[], &strings(&["a"])),
            "search a\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }

    #[test]
    fn volumes_resolve_per_scope() {
        let task = Path::new("/agent/tasks/t1");
        let shared = Path::new("/agent/volumes");
        let mut volume = Volume {
            name: "data".into(),
            ..Volume::default()
        };
        assert_eq!(
            volume_dir(task, shared, &volume).unwrap(),
            task.join(".volumes/data")
        );
        volume.docker_volume_configuration = Some(crate::ecs::taskdef::DockerVolumeConfiguration {
            scope: Some(VolumeScope::Shared),
            ..Default::default()
        });
        assert_eq!(
            volume_dir(task, shared, &volume).unwrap(),
            shared.join("data")
        );
        volume.docker_volume_configuration = None;
        volume.host = Some(crate::ecs::taskdef::HostVolumeProperties {
            source_path: Some("/srv/data".into()),
        });
        assert_eq!(
            volume_dir(task, shared, &volume).unwrap(),
            Path::new("/srv/data")
        );
        volume.host = Some(crate::ecs::taskdef::HostVolumeProperties {
            source_path: Some("relative".into()),
        });
        assert!(volume_dir(task, shared, &volume).is_err());
    }
}
