//! `berth registry serve` (also `berth serve`): the OCI distribution registry; and
//! `berth registry credential`, which signs credentials for a registry with token
//! authentication.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use berth_registry::server::{self, AppState, Config};
use clap::{Args, Subcommand};

/// The address the registry listens on unless told otherwise.
const DEFAULT_ADDR: &str = "127.0.0.1:5000";

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Serve the OCI distribution API (docker push/pull, skopeo, oras) over plain HTTP.
    Serve(ServeArgs),
    /// Print a credential for a registry whose configuration has an `auth` section: the
    /// password for `docker login -u NAME --password-stdin`.
    Credential(CredentialArgs),
}

#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// The key file the registry's `auth.key_file` names.
    #[arg(long)]
    pub key: PathBuf,
    /// Who the credential is for (shown in the registry's logs and tokens).
    #[arg(long)]
    pub subject: String,
    /// ACTIONS:PATTERN, for example `pull,push:team/*` or `*:*`; repeatable. Actions are
    /// pull, push, delete, catalog or *; `*` in a pattern matches anything, `/` included.
    #[arg(long = "allow", value_name = "ACTIONS:PATTERN")]
    pub allow: Vec<String>,
    /// An IAM-style policy document (JSON) instead of, or besides, --allow.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// How long the credential is valid, in seconds.
    #[arg(long, default_value_t = 12 * 3600)]
    pub lifetime_secs: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:5000; port 0 picks a free port].
    #[arg(long)]
    pub addr: Option<String>,
    /// Storage root [default: $BERTH_ROOT/registry, else $XDG_DATA_HOME/berth/registry, else
    /// ~/.local/share/berth/registry].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// JSON configuration: {"addr", "root", "max_manifest_bytes", "max_page_size",
    /// "upload_expiry_secs", "shutdown_grace_secs", "auth": {"key_file", "service", "realm",
    /// "token_lifetime_secs"}}. Flags win over the file.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(cmd: RegistryCommand) -> anyhow::Result<()> {
    match cmd {
        RegistryCommand::Serve(args) => serve(args),
        RegistryCommand::Credential(args) => credential(args),
    }
}

fn credential(args: CredentialArgs) -> anyhow::Result<()> {
    use berth_registry::auth::{Policy, TokenKey};
    let key = TokenKey::load(&args.key)?;
    let mut policy = match &args.policy {
        Some(path) => {
            let text = std::fs::read(path)
                .with_context(|| format!("reading the policy {}", path.display()))?;
            let document: serde_json::Value = serde_json::from_slice(&text)
                .with_context(|| format!("the policy {} is not JSON", path.display()))?;
            Policy::from_document(&document)
                .with_context(|| format!("the policy {}", path.display()))?
        }
        None => Policy::default(),
    };
    for allow in &args.allow {
        let (actions, pattern) = allow
            .split_once(':')
            .with_context(|| format!("--allow {allow:?}: expected ACTIONS:PATTERN"))?;
        let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
        if let Some(bad) = actions
            .iter()
            .find(|a| !matches!(**a, "pull" | "push" | "delete" | "catalog" | "*"))
        {
            anyhow::bail!(
                "--allow {allow:?}: unknown action {bad:?} (pull, push, delete, catalog or *)"
            );
        }
        if actions.is_empty() || pattern.is_empty() {
            anyhow::bail!("--allow {allow:?}: expected ACTIONS:PATTERN");
        }
        policy
            .statements
            .extend(Policy::allow(&actions, &[pattern]).statements);
    }
    if policy.statements.is_empty() {
        anyhow::bail!("the credential would allow nothing: give --allow or --policy");
    }
    let issued = key.issue_credential(
        &args.subject,
        &policy,
        std::time::Duration::from_secs(args.lifetime_secs),
    );
    println!("{}", issued.token);
    Ok(())
}

/// `$BERTH_ROOT`, else `$XDG_DATA_HOME/berth`, else `~/.local/share/berth`.
fn data_root() -> anyhow::Result<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(root) = non_empty("BERTH_ROOT") {
        return Ok(PathBuf::from(root));
    }
    if let Some(data) = non_empty("XDG_DATA_HOME") {
        return Ok(PathBuf::from(data).join("berth"));
    }
    let home = non_empty("HOME").context("cannot find the data directory: HOME is not set")?;
    Ok(PathBuf::from(home).join(".local/share/berth"))
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::from_file(path).context("reading the registry configuration")?,
        None => Config::default(),
    };
    let addr_text = args
        .addr
        .clone()
        .or_else(|| config.addr.clone())
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let addr: SocketAddr = addr_text
        .parse()
        .with_context(|| format!("--addr {addr_text:?} is not an IP address and port"))?;
    let root = match args.root.clone().or_else(|| config.root.clone()) {
        Some(root) => root,
        None => data_root()?.join("registry"),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let state = AppState::open(&root, config)
            .with_context(|| format!("opening the registry storage at {}", root.display()))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        // One line on stdout so scripts (and tests) learn the address, even for port 0.
        println!(
            "berth registry listening on http://{bound} (root {})",
            root.display()
        );
        tracing::info!(%bound, root = %root.display(), "registry listening");
        server::serve_listener(listener, state, server::shutdown_signal())
            .await
            .context("serving the registry")
    })
}
