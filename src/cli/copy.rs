//! `berth copy SRC DST`: copy an image between registries, OCI layouts and archives, with the
//! location syntax of `skopeo copy` (`docker://REF`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
//! `docker-archive:FILE[:REF]`).
//!
//! An `oci:` source is read in place and a pull into `oci:` writes straight into the layout;
//! other copies go through a temporary content store on disk (under `--tmpdir`). Either way memory
//! use does not grow with the image. As with skopeo, an index is reduced to the host platform's
//! manifest unless `--all` or `--platform` says otherwise. Progress goes to stderr; the digest of
//! the manifest written goes to stdout.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use berth_layerstore::content::fs::FsStore;
use berth_layerstore::image::platform;
use berth_registry::client::{Client, ClientOptions, CopyOptions, ImageLocation, Platforms, copy};
use clap::Args;

pub use crate::cli::progress::ProgressMode;
use crate::cli::progress::make_progress;

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
