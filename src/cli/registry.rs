//! `berth registry serve` (also `berth serve`): the OCI distribution registry.

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
    /// "upload_expiry_secs", "shutdown_grace_secs"}. Flags win over the file.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(cmd: RegistryCommand) -> anyhow::Result<()> {
    match cmd {
        RegistryCommand::Serve(args) => serve(args),
    }
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
