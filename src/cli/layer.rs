//! `berth layer create` and `berth layer apply`.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use berth_layerstore::archive::{self, ApplyOptions, TarOptions};
use berth_layerstore::compress;
use berth_layerstore::layer::{self, LayerOptions};
use berth_layerstore::media::Compression;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum LayerCommand {
    /// Turn a directory into a layer and print {digest, diff_id, size, media_type} as JSON.
    Create(CreateArgs),
    /// Extract a layer (gzip, zstd or plain tar) into a directory, honouring whiteouts.
    Apply(ApplyArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The directory whose contents become the layer.
    pub dir: PathBuf,
    /// Where to write the compressed layer.
    #[arg(short, long)]
    pub output: PathBuf,
    /// gzip, zstd or none.
    #[arg(long, default_value = "gzip")]
    pub compression: Compression,
    /// Compression level: 0-9 for gzip (default 6), libzstd's range for zstd (default 3).
    #[arg(long)]
    pub level: Option<i32>,
    /// Compression threads (default: the number of CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The layer file.
    pub file: PathBuf,
    /// The directory to extract into; created if missing.
    pub dir: PathBuf,
}

pub fn run(cmd: LayerCommand) -> anyhow::Result<()> {
    match cmd {
        LayerCommand::Create(args) => create(args),
        LayerCommand::Apply(args) => apply(args),
    }
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        bail!("{}: not a directory", args.dir.display());
    }
    if let Some(level) = args.level {
        // The library owns the valid ranges; this only turns them into a usage error up front.
        let Some(range) = compress::level_range(args.compression) else {
            bail!("--level makes no sense with --compression none");
        };
        if !range.contains(&level) {
            bail!(
                "--level {level} is out of range for {}: expected {}..={}",
                args.compression,
                range.start(),
                range.end()
            );
        }
    }
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let mut opts = LayerOptions {
        compression: args.compression,
        level: args.level,
        tar: TarOptions::from_env().context("reading SOURCE_DATE_EPOCH from the environment")?,
        ..LayerOptions::default()
    };
    if let Some(threads) = args.threads {
        opts.threads = threads;
    }

    // Write next to the destination and rename at the end, so that a failed or interrupted
    // run never leaves a truncated layer under the requested name.
    let parent = parent_dir(&args.output);
    let tmp = tempfile::Builder::new()
        .prefix(".berth-layer-")
        .tempfile_in(parent)
        .with_context(|| format!("creating a temporary file in {}", parent.display()))?;
    let started = Instant::now();
    let (info, tmp) = layer::create_from_dir(&args.dir, tmp, &opts)
        .with_context(|| format!("creating a layer from {}", args.dir.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", args.output.display()))?;
    tmp.persist(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    tracing::info!(
        digest = %info.digest,
        size = info.size,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "layer created"
    );

    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &info)?;
    writeln!(stdout)?;
    Ok(())
}

fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let file =
        File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let stats = archive::apply_layer(
        BufReader::with_capacity(1 << 20, file),
        &args.dir,
        &ApplyOptions::default(),
    )
    .with_context(|| format!("applying {} to {}", args.file.display(), args.dir.display()))?;
    tracing::info!(
        entries = stats.entries,
        bytes = stats.bytes,
        "layer applied"
    );
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
