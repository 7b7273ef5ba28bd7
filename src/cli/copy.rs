//! `berth copy SRC DST`: copy an image between registries, OCI layouts and archives, with the
//! location syntax of `skopeo copy` (`docker://REF`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
//! `docker-archive:FILE[:REF]`).
//!
//! The image goes through a temporary content store on disk (under `--tmpdir`), so memory use
//! does not grow with the image. As with skopeo, an index is reduced to the host platform's
//! manifest unless `--all` or `--platform` says otherwise. Progress goes to stderr; the
//! digest of the manifest written goes to stdout.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use berth_layerstore::Digest;
use berth_layerstore::content::fs::FsStore;
use berth_layerstore::image::platform;
use berth_registry::client::{
    BlobOutcome, Client, ClientOptions, CopyOptions, ImageLocation, NoProgress, Platforms,
    Progress, ProgressEvent, UploadMethod, copy,
};
use clap::{Args, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source: docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:REF|:@N].
    pub src: String,
    /// Destination: docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:REF].
    pub dst: String,
    /// A registry (host or host:port) that may be reached without TLS verification or over
    /// plain HTTP. Loopback registries need no flag. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// Copy every platform of an index, and the index itself.
    #[arg(long, conflicts_with = "platform")]
    pub all: bool,
    /// Copy only the manifest for this platform (os/arch[/variant]) from an index.
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// auto (a live view on a terminal, plain lines otherwise), plain, tty or quiet.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Where the temporary content store goes (default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub tmpdir: Option<PathBuf>,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    Auto,
    Plain,
    Tty,
    Quiet,
}

pub fn run(args: CopyArgs) -> anyhow::Result<()> {
    let src: ImageLocation = args
        .src
        .parse()
        .with_context(|| format!("source {:?}", args.src))?;
    let dst: ImageLocation = args
        .dst
        .parse()
        .with_context(|| format!("destination {:?}", args.dst))?;
    if src == dst {
        bail!("source and destination are the same: {src}");
    }
    let platforms = match (&args.platform, args.all) {
        (_, true) => Platforms::All,
        (Some(p), false) => {
            Platforms::Only(platform::parse(p).with_context(|| format!("--platform {p}"))?)
        }
        (None, false) => Platforms::Only(platform::host()),
    };
    let client = Client::new(ClientOptions {
        insecure_registries: args.insecure_registries.clone(),
        ..ClientOptions::default()
    })
    .context("setting up the registry client")?;
    let tmp_parent = args.tmpdir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("berth-copy-")
        .tempdir_in(&tmp_parent)
        .with_context(|| format!("creating a temporary store in {}", tmp_parent.display()))?;
    let store = Arc::new(
        FsStore::open(tmp.path().join("content"))
            .with_context(|| format!("opening a content store in {}", tmp.path().display()))?,
    );
    let progress = make_progress(args.progress);
    let opts = CopyOptions {
        platforms,
        progress: progress.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime
        .block_on(copy::copy(&client, store, &src, &dst, &opts))
        .with_context(|| format!("copying {src} to {dst}"))?;
    drop(progress);
    println!("{}", result.digest);
    Ok(())
}

fn make_progress(mode: ProgressMode) -> Arc<dyn Progress> {
    let mode = match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
        ProgressMode::Auto => ProgressMode::Plain,
        other => other,
    };
    match mode {
        ProgressMode::Quiet => Arc::new(NoProgress),
        ProgressMode::Tty => Arc::new(TtyProgress::new()),
        _ => Arc::new(PlainProgress),
    }
}

/// The first 12 hex digits, as docker shows layer ids.
fn short(digest: &Digest) -> &str {
    let hex = digest.hex();
    &hex[..hex.len().min(12)]
}

fn outcome_text(outcome: &BlobOutcome) -> String {
    match outcome {
        BlobOutcome::Downloaded => "Pull complete".into(),
        BlobOutcome::AlreadyPresent => "Already exists".into(),
        BlobOutcome::Exists => "Layer already exists".into(),
        BlobOutcome::Mounted { from } => format!("Mounted from {from}"),
        BlobOutcome::Uploaded(UploadMethod::Monolithic) => "Pushed".into(),
        BlobOutcome::Uploaded(UploadMethod::Chunked { chunks }) => {
            format!("Pushed ({chunks} chunks)")
        }
    }
}

fn manifest_text(digest: &Digest, size: u64, target: &str) -> String {
    if target == digest.to_string() {
        format!("{}: manifest {digest} size: {size}", short(digest))
    } else {
        format!("{target}: digest: {digest} size: {size}")
    }
}

/// One line per finished blob and manifest, for logs and pipes.
struct PlainProgress;

impl Progress for PlainProgress {
    fn event(&self, event: &ProgressEvent) {
        match event {
            ProgressEvent::BlobDone { digest, outcome } => {
                eprintln!("{}: {}", short(digest), outcome_text(outcome));
            }
            ProgressEvent::ManifestDone {
                digest,
                size,
                target,
                ..
            } => eprintln!("{}", manifest_text(digest, *size, target)),
            ProgressEvent::Retry {
                what,
                attempt,
                delay,
                error,
            } => eprintln!("{what}: try {attempt} failed ({error}); retrying in {delay:?}"),
            ProgressEvent::BlobStart { .. } | ProgressEvent::BlobAdvance { .. } => {}
        }
    }
}

/// A live bar per blob on a terminal.
struct TtyProgress {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
    style: ProgressStyle,
}

impl TtyProgress {
    fn new() -> TtyProgress {
        let style = ProgressStyle::with_template(
            "{prefix}: {msg:<14} [{bar:30}] {bytes:>10}/{total_bytes:<10}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        TtyProgress {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
            style,
        }
    }
}

impl Progress for TtyProgress {
    fn event(&self, event: &ProgressEvent) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        match event {
            ProgressEvent::BlobStart { digest, size, .. } => {
                let bar = self.multi.add(ProgressBar::new(*size));
                bar.set_style(self.style.clone());
                bar.set_prefix(short(digest).to_owned());
                bar.set_message("Waiting");
                bars.insert(digest.clone(), bar);
            }
            ProgressEvent::BlobAdvance { digest, bytes } => {
                if let Some(bar) = bars.get(digest) {
                    if bar.position() == 0 {
                        bar.set_message("Transferring");
                    }
                    bar.inc(*bytes);
                }
            }
            ProgressEvent::BlobDone { digest, outcome } => {
                if let Some(bar) = bars.get(digest) {
                    bar.set_position(bar.length().unwrap_or(0));
                    bar.finish_with_message(outcome_text(outcome));
                }
            }
            ProgressEvent::ManifestDone {
                digest,
                size,
                target,
                ..
            } => {
                let _ = self.multi.println(manifest_text(digest, *size, target));
            }
            ProgressEvent::Retry {
                what,
                attempt,
                delay,
                error,
            } => {
                let _ = self.multi.println(format!(
                    "{what}: try {attempt} failed ({error}); retrying in {delay:?}"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use berth_layerstore::content::memory::MemoryStore;
    use berth_layerstore::content::{Ingester, Provider};
    use berth_layerstore::image::{CanonicalBlob, ImageConfig, layout, new_descriptor};
    use berth_layerstore::media;
    use clap::Parser;

    #[test]
    fn parses_arguments() {
        let cli = Cli::try_parse_from([
            "berth",
            "copy",
            "--insecure-registry",
            "a.example:5000",
            "--insecure-registry",
            "b.example",
            "--platform",
            "linux/arm64",
            "oci:dir:v1",
            "docker://a.example:5000/x:1",
        ])
        .unwrap();
        let crate::cli::Command::Copy(args) = cli.command else {
            panic!("not a copy command")
        };
        assert_eq!(args.insecure_registries, ["a.example:5000", "b.example"]);
        assert_eq!(args.platform.as_deref(), Some("linux/arm64"));
        assert!(!args.all);
        assert!(
            Cli::try_parse_from([
                "berth",
                "copy",
                "--all",
                "--platform",
                "linux/amd64",
                "a",
                "b"
            ])
            .is_err(),
            "--all and --platform exclude each other"
        );
    }

    #[test]
    fn progress_lines() {
        let d = Digest::sha256(b"x");
        assert_eq!(short(&d).len(), 12);
        assert_eq!(
            outcome_text(&BlobOutcome::Mounted { from: "a/b".into() }),
            "Mounted from a/b"
        );
        assert!(manifest_text(&d, 12, "v1").starts_with("v1: digest: sha256:"));
    }

    /// oci-archive -> oci dir -> docker-archive -> oci-archive, all local, through `run`.
    #[test]
    fn local_round_trip() {
        let work = tempfile::tempdir().unwrap();
        let store = MemoryStore::new();
        let tar = {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("hello"), b"hello\n").unwrap();
            berth_layerstore::archive::write_dir(dir.path(), Vec::new(), &Default::default())
                .unwrap()
        };
        let layer = store.ingest_bytes(&tar).unwrap();
        let mut config = ImageConfig::new("linux", "amd64");
        config.rootfs.diff_ids.push(layer.digest.clone());
        let config = config
            .to_blob(media::OCI_CONFIG)
            .unwrap()
            .ingest(&store)
            .unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": config,
            "layers": [new_descriptor(media::OCI_LAYER_TAR, &layer.digest, layer.size)],
        });
        let manifest = CanonicalBlob::new(media::OCI_MANIFEST, &manifest)
            .unwrap()
            .ingest(&store)
            .unwrap();
        let archive = work.path().join("in.tar");
        layout::export_tar(
            &store,
            &[(Some("t".into()), manifest.clone())],
            std::fs::File::create(&archive).unwrap(),
        )
        .unwrap();

        let copy = |src: String, dst: String| {
            run(CopyArgs {
                src,
                dst,
                insecure_registries: Vec::new(),
                all: false,
                platform: None,
                progress: ProgressMode::Quiet,
                tmpdir: Some(work.path().to_owned()),
            })
            .unwrap()
        };
        let dir = work.path().join("layout");
        copy(
            format!("oci-archive:{}:t", archive.display()),
            format!("oci:{}:u", dir.display()),
        );
        let docker = work.path().join("docker.tar");
        copy(
            format!("oci:{}:u", dir.display()),
            format!("docker-archive:{}:img:1", docker.display()),
        );
        let out = work.path().join("out.tar");
        copy(
            format!("docker-archive:{}", docker.display()),
            format!("oci-archive:{}:final", out.display()),
        );
        let check = MemoryStore::new();
        let entries = layout::import_tar(std::fs::File::open(&out).unwrap(), &check).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0.as_deref(), Some("final"));
        // docker-archive keeps the config and the (uncompressed) layer; the manifest is made
        // anew on reading it.
        let (read_back, _) =
            berth_layerstore::image::Manifest::read(&check, &entries[0].1).unwrap();
        assert_eq!(read_back.config().unwrap().digest(), config.digest());
        assert_eq!(
            berth_layerstore::image::descriptor_digest(&read_back.layers()[0]).unwrap(),
            layer.digest
        );
        assert!(check.exists(&layer.digest).unwrap());
        // Only the temporary stores' parent is left behind: they were removed.
        let leftovers: Vec<_> = std::fs::read_dir(work.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("berth-copy-"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
