//! `berth pull` and `berth push`: between a registry and the local store.
//!
//! A pull lands in a staging area of the store and is committed, blobs and name together,
//! only once every digest has been verified; blobs the store has already are not fetched.
//! From an index, the manifest for `--platform` (default: this host's) is pulled and stored
//! as the image. A push sends the stored root and everything it reaches, mounting blobs from
//! other repositories of the same registry that hold the same image. Registries on loopback
//! addresses are reached over plain HTTP, as Docker does; `--insecure-registry` adds others.
//! Credentials come from `~/.docker/config.json`. Progress goes to stderr, the name to stdout.

use std::sync::Arc;

use anyhow::{Context, bail};
use berth_layerstore::image::platform;
use berth_registry::client::{
    Client, ClientOptions, Platforms, Progress, PullOptions, PushOptions,
};
use berth_registry::reference::Reference;
use clap::Args;

use super::{StoreArgs, familiar, parse_name, resolve, short_id};
use crate::cli::progress::{ProgressMode, make_progress};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// `[REGISTRY/]REPOSITORY[:TAG|@DIGEST]`; Docker Hub when no registry is named.
    pub reference: String,
    /// The platform to pull from an index (os/arch[/variant]; default: this host's).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub transfer: TransferArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image's name, `[REGISTRY/]REPOSITORY[:TAG]`; the registry is the one it names.
    pub reference: String,
    #[command(flatten)]
    pub transfer: TransferArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Flags shared by `pull` and `push`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// A registry (host or host:port) that may be reached without TLS verification or over
    /// plain HTTP. Loopback registries need no flag. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// auto (a live view on a terminal, plain lines otherwise), plain, tty or quiet.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// No progress output (same as --progress quiet).
    #[arg(short, long)]
    pub quiet: bool,
}

impl TransferArgs {
    fn client(&self) -> anyhow::Result<Client> {
        Client::new(ClientOptions {
            insecure_registries: self.insecure_registries.clone(),
            ..ClientOptions::default()
        })
        .context("setting up the registry client")
    }

    fn progress(&self) -> Arc<dyn Progress> {
        make_progress(if self.quiet {
            ProgressMode::Quiet
        } else {
            self.progress
        })
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn pull(args: PullArgs) -> anyhow::Result<()> {
    let (reference, name) = parse_name(&args.reference)?;
    let want = match &args.platform {
        Some(p) => platform::parse(p).with_context(|| format!("--platform {p}"))?,
        None => platform::host(),
    };
    let store = args.store.open()?;
    let client = args.transfer.client()?;
    let progress = args.transfer.progress();
    let staging = store.staging().context("preparing the pull")?;
    let opts = PullOptions {
        platforms: Platforms::Only(want),
        progress: progress.clone(),
    };
    if !args.transfer.quiet {
        eprintln!(
            "{}: Pulling from {}",
            reference.tag_or_digest(),
            familiar(&format!("{}/{}", reference.registry, reference.repository))
        );
    }
    let pulled = runtime()?
        .block_on(client.pull(&reference, &staging, &opts))
        .with_context(|| format!("pulling {reference}"))?;
    drop(progress);
    let records = store
        .commit(&staging, &[(Some(name.clone()), pulled.root.clone())])
        .with_context(|| format!("storing {reference}"))?;
    let digest = pulled.index.as_ref().unwrap_or(&pulled.root).digest();
    if !args.transfer.quiet {
        eprintln!("Digest: {digest}");
        eprintln!(
            "Status: Downloaded image {} for {}",
            short_id(&records[0].id),
            familiar(&name)
        );
    }
    println!("{name}");
    Ok(())
}

pub fn push(args: PushArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let resolved = resolve(&store, &args.reference)?;
    let Some(name) = resolved.record.name.clone() else {
        bail!(
            "{}: an image is pushed by name; tag it first (berth tag {} REGISTRY/REPOSITORY:TAG)",
            args.reference,
            args.reference
        );
    };
    let (reference, _) = parse_name(&name)?;
    // Other names of the same image on the same registry may let the registry mount blobs.
    let mount_from: Vec<Reference> = store
        .list()?
        .into_iter()
        .filter(|r| r.id == resolved.record.id && r.name.as_deref() != Some(&name))
        .filter_map(|r| r.name?.parse::<Reference>().ok())
        .filter(|r| r.registry == reference.registry)
        .collect();
    let client = args.transfer.client()?;
    let progress = args.transfer.progress();
    if !args.transfer.quiet {
        eprintln!(
            "The push refers to repository [{}/{}]",
            reference.registry, reference.repository
        );
    }
    let opts = PushOptions {
        mount_from,
        progress: progress.clone(),
    };
    let pushed = runtime()?
        .block_on(client.push(store.content(), &resolved.record.target, &reference, &opts))
        .with_context(|| format!("pushing {reference}"))?;
    drop(progress);
    println!("{}", pushed.root.digest());
    Ok(())
}
