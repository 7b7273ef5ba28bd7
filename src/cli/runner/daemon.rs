//! The runner's long-running processes: `berth runner serve` (the control plane) and `berth
//! agent --join URL` (a container instance, and the FARGATE capacity of the machine).
//!
//! `runner serve` also starts this machine's agent, as a process of its own in a process group
//! of its own (`berth agent --join http://ADDR --root ROOT/agent`, serving both pools), so that
//! the tasks it runs outlive a restart of the control plane: the agent reconnects, reports them,
//! and they are adopted again. An agent takes `ROOT/agent.lock` for its whole life, so a second
//! one for the same root refuses to start, and a restarted control plane finds the first one
//! still there. The lock file holds the agent's pid.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, anyhow, bail};
use berth_registry::auth::TokenKey;
use berth_runner::agent::{AgentOptions, NetworkOptions};
use berth_runner::control::{Roles, ServeOptions};
use berth_runner::ecs::metering::Rates;
use clap::Args;

use super::DEFAULT_URL;
use crate::cli::images::data_root;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address the API listens on.
    #[arg(long, default_value = "127.0.0.1:5400")]
    pub addr: SocketAddr,
    /// The control plane's directory (its database; the local agent's directory is `agent/`
    /// in it) [default: DATA_ROOT/runner].
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Metering prices, as JSON (`berth_runner::ecs::metering::Rates`) [default: the public
    /// us-east-1 Linux/x86 prices].
    #[arg(long, value_name = "FILE")]
    pub rates: Option<PathBuf>,
    /// Do not start this machine's agent: the cluster then has only the instances that join.
    #[arg(long)]
    pub no_local_agent: bool,
    /// The roles tasks may have: a JSON object from role ARN to IAM policy document. The
    /// policies' ECR actions and repositories decide what the roles' credentials may do on
    /// berth registries that trust --registry-key.
    #[arg(long, value_name = "FILE")]
    pub roles: Option<PathBuf>,
    /// The key that signs task role credentials; give the same file as `auth.key_file` to the
    /// registries that should accept them [default: ROOT/registry-token.key, made if missing].
    #[arg(long, value_name = "FILE")]
    pub registry_key: Option<PathBuf>,
    /// A registry (HOST[:PORT]) that accepts the credentials: agents pull from it with the
    /// task's execution role credentials; repeatable.
    #[arg(long = "trusted-registry", value_name = "HOST[:PORT]")]
    pub trusted_registries: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The control plane to join.
    #[arg(long, value_name = "URL", default_value = DEFAULT_URL)]
    pub join: String,
    /// The agent's directory (its id, task logs, volumes) [default: DATA_ROOT/agent].
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The cluster to join.
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// CPU units offered (1024 per CPU) [default: this machine's].
    #[arg(long)]
    pub cpu: Option<u64>,
    /// Memory offered, in MiB [default: this machine's].
    #[arg(long)]
    pub memory: Option<u64>,
    /// An attribute of the instance, `NAME=VALUE` (`ecs.availability-zone=zone-b`); repeatable.
    #[arg(long = "attribute", value_name = "NAME=VALUE")]
    pub attributes: Vec<String>,
    /// Serve the cluster's FARGATE pool too.
    #[arg(long)]
    pub fargate: bool,
    /// Serve only the FARGATE pool (no EC2 container instance).
    #[arg(long, conflicts_with = "fargate")]
    pub fargate_only: bool,
    /// Where the agent's own server (logs, task metadata) listens.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub listen: SocketAddr,
    /// The task bridge's name (agents sharing a network namespace need their own).
    #[arg(long)]
    pub bridge: Option<String>,
    /// The task bridge's subnet, `10.89.0.0/16` by default.
    #[arg(long)]
    pub subnet: Option<String>,
}

/// `berth runner serve`.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let root = match &args.root {
        Some(root) => root.clone(),
        None => data_root()?.join("runner"),
    };
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let rates = match &args.rates {
        Some(path) => berth_runner::control::load_rates(path)
            .with_context(|| format!("--rates {}", path.display()))?,
        None => Rates::default(),
    };
    let key_file = args
        .registry_key
        .clone()
        .unwrap_or_else(|| root.join("registry-token.key"));
    let key = TokenKey::load_or_create(&key_file)?;
    let mut roles = Roles::new(key).registries(args.trusted_registries.clone());
    if let Some(path) = &args.roles {
        roles = roles.load_policies(path)?;
    }
    if !args.no_local_agent {
        start_local_agent(&root.join("agent"), args.addr)?;
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        berth_runner::control::serve(ServeOptions {
            addr: args.addr,
            root,
            rates,
            roles: Some(roles),
            shutdown: berth_registry::server::shutdown_signal(),
        })
        .await
        .context("serving the control plane")
    })
}

/// Starts `berth agent` for this machine, detached: its own process group, output to
/// `ROOT/agent.log`. An agent already running for `root` keeps its lock and the new one exits.
fn start_local_agent(root: &Path, addr: SocketAddr) -> anyhow::Result<()> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("agent.log"))
        .with_context(|| format!("opening {}", root.join("agent.log").display()))?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    let exe = std::env::current_exe().context("finding the berth binary")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("agent")
        .arg("--join")
        .arg(format!("http://{host}:{}", addr.port()))
        .arg("--root")
        .arg(root)
        .arg("--fargate")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let child = command.spawn().context("starting this machine's agent")?;
    tracing::info!(pid = child.id(), root = %root.display(), "started this machine's agent");
    Ok(())
}

/// `berth agent --join URL`.
pub fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let root = match &args.root {
        Some(root) => root.clone(),
        None => data_root()?.join("agent"),
    };
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let _lock = lock_root(&root)?;
    let join = args
        .join
        .parse()
        .map_err(|e| anyhow!("--join {}: {e}", args.join))?;
    let mut options = AgentOptions::new(join, &root);
    options.cluster = args.cluster.clone();
    options.cpu = args.cpu;
    options.memory = args.memory;
    options.attributes = parse_attributes(&args.attributes)?;
    options.fargate = args.fargate || args.fargate_only;
    options.ec2 = !args.fargate_only;
    options.listen = args.listen;
    let mut network = NetworkOptions::default();
    if let Some(bridge) = &args.bridge {
        network.bridge = bridge.clone();
        network.netns_prefix = format!("{bridge}-");
    }
    if let Some(subnet) = &args.subnet {
        network.subnet = Some(
            subnet
                .parse()
                .map_err(|e| anyhow!("--subnet {subnet}: {e}"))?,
        );
    }
    options.network = network;
    let shutdown = options.shutdown.clone();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        tokio::spawn(async move {
            berth_registry::server::shutdown_signal().await;
            shutdown.cancel();
        });
        berth_runner::agent::run(options)
            .await
            .context("running the agent")
    })
}

/// Takes `ROOT/agent.lock` for the life of the process: one agent per directory.
fn lock_root(root: &Path) -> anyhow::Result<std::fs::File> {
    let path = root.join("agent.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor `file` owns and keeps open; no memory is passed.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !taken {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "an agent already runs for {} (process {}, which holds {})",
            root.display(),
            pid.trim(),
            path.display()
        );
    }
    // The holder's pid, for whoever needs to stop it.
    file.set_len(0)
        .and_then(|()| (&file).write_all(format!("{}\n", std::process::id()).as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(file)
}

/// `NAME=VALUE` attributes.
fn parse_attributes(specs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    specs
        .iter()
        .map(|s| {
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| anyhow!("--attribute {s}: use NAME=VALUE"))?;
            if k.is_empty() {
                bail!("--attribute {s}: the name is empty");
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_parse() {
        let a =
            parse_attributes(&["ecs.availability-zone=zone-b".into(), "stack=".into()]).unwrap();
        assert_eq!(a["ecs.availability-zone"], "zone-b");
        assert_eq!(a["stack"], "");
        assert!(parse_attributes(&["novalue".into()]).is_err());
        assert!(parse_attributes(&["=x".into()]).is_err());
    }

    #[test]
    fn one_agent_per_root() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_root(dir.path()).unwrap();
        let err = lock_root(dir.path()).unwrap_err().to_string();
        assert!(err.contains("an agent already runs"), "{err}");
        drop(first);
        lock_root(dir.path()).unwrap();
    }
}
