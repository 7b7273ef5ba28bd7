//! `berth save` and `berth load`: images between the local store and archive files.
//!
//! `save` writes a docker-archive by default (what `docker save` writes and `docker load`
//! reads: uncompressed layers, `manifest.json` with the names as Docker shows them), several
//! images into one archive, layers shared between them written once. An index is reduced to
//! the manifest of `--platform` (default: this host's), since a docker-archive holds
//! single-platform images. `--format oci` writes an OCI image layout as a tar instead (what
//! `skopeo` calls `oci-archive:`), indexes kept whole, each image named by both
//! `org.opencontainers.image.ref.name` and containerd's `io.containerd.image.name`
//! annotations, with its full name. The file is written beside its final name and renamed
//! into place once complete.
//!
//! `load` tells the two kinds apart by their members (`manifest.json` for a docker-archive,
//! `oci-layout` and `index.json` for an OCI archive), gzip- or zstd-compressed or not, from a
//! file or from stdin. Every blob is verified (configs and OCI blobs against the digests their
//! names claim, docker-archive layers against the config's diff_ids) into a staging area,
//! and the images and their names are committed to the store only when all of them are good.
//! An OCI entry is named by its `io.containerd.image.name` annotation, else by its ref name
//! when that is a full name (`busybox:1`, `reg.example/app:2`); a bare tag (`latest`) names no
//! repository, so that image is loaded untagged, as an image without `RepoTags` is.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, IsTerminal, Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_layerstore::image::docker_archive::{self, ArchiveImage};
use berth_layerstore::image::layout::{self, LayoutEntry};
use berth_layerstore::image::manifest::is_manifest_media_type;
use berth_layerstore::image::store::{ImageStore, MatchedBy};
use berth_layerstore::image::{Descriptor, Manifest, REF_NAME_ANNOTATION, platform, ref_name};
use berth_layerstore::media::Compression;
use clap::{Args, ValueEnum};

use super::{StoreArgs, familiar, normalize, resolve, short_id};

/// containerd's annotation for an image's full name in an OCI layout's `index.json`.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchiveFormat {
    /// docker-archive, for `docker load`.
    Docker,
    /// OCI image layout in a tar (`oci-archive:`).
    Oci,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The archive to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// docker or oci.
    #[arg(long, value_enum, default_value_t = ArchiveFormat::Docker)]
    pub format: ArchiveFormat,
    /// For a docker-archive, the platform to take from an index (default: this host's).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Names or ids of the images to write.
    #[arg(required = true)]
    pub images: Vec<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The archive to read (default: stdin).
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print nothing.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn save(args: SaveArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let want = match &args.platform {
        Some(p) => platform::parse(p).with_context(|| format!("--platform {p}"))?,
        None => platform::host(),
    };
    let mut docker: Vec<ArchiveImage> = Vec::new();
    let mut oci: Vec<LayoutEntry> = Vec::new();
    for query in &args.images {
        let resolved = resolve(&store, query)?;
        let record = resolved.record;
        // An image asked for by id carries no name into the archive, as with docker.
        let name = match resolved.matched_by {
            MatchedBy::Name | MatchedBy::RepoDigest => record.name.clone(),
            MatchedBy::Id => None,
        };
        match args.format {
            ArchiveFormat::Docker => {
                let manifest = single_platform(&store, &record.target, &want)
                    .with_context(|| format!("saving {query}"))?;
                let tag = name
                    .as_deref()
                    .filter(|n| !n.contains('@'))
                    .map(|n| familiar(n).to_owned());
                match docker
                    .iter_mut()
                    .find(|i| i.manifest.digest() == manifest.digest())
                {
                    Some(image) => image
                        .repo_tags
                        .extend(tag.filter(|t| !image.repo_tags.contains(t))),
                    None => docker.push(ArchiveImage {
                        manifest,
                        repo_tags: tag.into_iter().collect(),
                    }),
                }
            }
            ArchiveFormat::Oci => {
                let mut desc = record.target.clone();
                if let Some(name) = &name {
                    let mut annotations = desc.annotations().clone().unwrap_or_default();
                    annotations.insert(CONTAINERD_NAME_ANNOTATION.to_owned(), name.clone());
                    desc.set_annotations(Some(annotations));
                }
                let entry = (name, desc);
                if !oci.contains(&entry) {
                    oci.push(entry);
                }
            }
        }
    }
    let content = store.content();
    write_atomic(&args.output, |out| match args.format {
        ArchiveFormat::Docker => Ok(docker_archive::write(content, &docker, out)?),
        ArchiveFormat::Oci => Ok(layout::export_tar(content, &oci, out)?),
    })
    .with_context(|| format!("writing {}", args.output.display()))
}

/// `target` itself, or the manifest for `want` when it is an index.
fn single_platform(
    store: &ImageStore,
    target: &Descriptor,
    want: &berth_layerstore::image::Platform,
) -> anyhow::Result<Descriptor> {
    let (manifest, _) = Manifest::read(store.content(), target)?;
    if !manifest.is_index() {
        return Ok(target.clone());
    }
    let what = format!("index {}", target.digest());
    Ok(platform::select_or_err(&manifest.manifests(), want, &what)?.clone())
}

/// Writes `path` through a temporary file in its directory, fsynced and renamed into place
/// when `write` succeeds; on failure nothing is left behind.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(BufWriter<&mut File>) -> anyhow::Result<BufWriter<&mut File>>,
) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".berth-save-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let out = write(BufWriter::with_capacity(1 << 20, tmp.as_file_mut()))?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .context("flushing")?
        .sync_all()
        .context("syncing")?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// What an archive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    DockerArchive,
    OciArchive,
}

/// Opens `path` for reading, decompressing gzip or zstd.
fn open_archive(path: &Path) -> anyhow::Result<(Box<dyn Read>, Compression)> {
    let mut file = File::open(path)?;
    let mut head = Vec::with_capacity(4);
    (&mut file).take(4).read_to_end(&mut head)?;
    file.rewind()?;
    let compression = Compression::sniff(&head);
    let file = BufReader::with_capacity(1 << 20, file);
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file)?),
    };
    Ok((reader, compression))
}

/// Tells a docker-archive from an OCI archive by the names of their members.
fn detect(path: &Path) -> anyhow::Result<Kind> {
    let (mut manifest_json, mut index_json, mut oci_layout) = (false, false, false);
    let mut note = |name: &Path| {
        let name = name.strip_prefix("./").unwrap_or(name);
        if name == Path::new(docker_archive::MANIFEST_FILE) {
            manifest_json = true;
        } else if name == Path::new(layout::INDEX_FILE) {
            index_json = true;
        } else if name == Path::new(layout::OCI_LAYOUT_FILE) {
            oci_layout = true;
        }
    };
    let (reader, compression) = open_archive(path)?;
    let names = if compression == Compression::None {
        // Skip over member data instead of reading it.
        let mut archive = tar::Archive::new(BufReader::new(File::open(path)?));
        member_names(archive.entries_with_seek()?)
    } else {
        let mut archive = tar::Archive::new(reader);
        member_names(archive.entries()?)
    };
    let names = match compression {
        Compression::None => names?,
        other => names.with_context(|| format!("inside the {other:?} compression"))?,
    };
    for name in &names {
        note(name);
    }
    if manifest_json {
        Ok(Kind::DockerArchive)
    } else if index_json && oci_layout {
        Ok(Kind::OciArchive)
    } else {
        bail!(
            "not an image archive: a docker-archive has manifest.json, an OCI archive has oci-layout and index.json"
        )
    }
}

/// The member names of a tar stream.
fn member_names<'a, R: Read + 'a>(
    entries: impl Iterator<Item = io::Result<tar::Entry<'a, R>>>,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut names = Vec::new();
    for entry in entries {
        // The tar crate quotes a bad header's bytes, which says nothing useful about a file
        // that is no tar at all.
        let entry = entry.map_err(|e| match names.is_empty() {
            true => anyhow::anyhow!("not a tar archive"),
            false => anyhow::Error::new(e).context("reading the archive's members"),
        })?;
        names.push(entry.path()?.into_owned());
    }
    Ok(names)
}

/// The name an OCI layout entry gives its image, if any.
fn oci_entry_name(tag: Option<&str>, desc: &Descriptor) -> anyhow::Result<Option<String>> {
    let annotated = desc
        .annotations()
        .as_ref()
        .and_then(|a| a.get(CONTAINERD_NAME_ANNOTATION));
    if let Some(name) = annotated {
        return normalize(name)
            .map(Some)
            .with_context(|| format!("{CONTAINERD_NAME_ANNOTATION} {name:?} is not a valid name"));
    }
    match tag {
        Some(t) if t.contains(['/', ':', '@']) => normalize(t)
            .map(Some)
            .with_context(|| format!("{REF_NAME_ANNOTATION} {t:?} is not a valid image name")),
        Some(t) => {
            eprintln!(
                "note: {REF_NAME_ANNOTATION} {t:?} names no repository; loading {} untagged",
                desc.digest()
            );
            Ok(None)
        }
        None => Ok(None),
    }
}

pub fn load(args: LoadArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let staging = store.staging().context("preparing the load")?;
    let path = match &args.input {
        Some(path) => path.clone(),
        None => {
            if io::stdin().is_terminal() {
                bail!("no archive given: use -i FILE or pipe one to stdin");
            }
            let path = staging.scratch_dir()?.join("stdin.tar");
            let mut file = File::create(&path)?;
            io::copy(&mut io::stdin().lock(), &mut file).context("reading stdin")?;
            file.flush()?;
            path
        }
    };
    let what = match &args.input {
        Some(p) => p.display().to_string(),
        None => "stdin".to_owned(),
    };
    let kind = detect(&path).with_context(|| format!("loading {what}"))?;
    let (reader, _) = open_archive(&path).with_context(|| format!("loading {what}"))?;
    let mut images: Vec<(Option<String>, Descriptor)> = Vec::new();
    match kind {
        Kind::DockerArchive => {
            let loaded = docker_archive::read(reader, &staging)
                .with_context(|| format!("loading docker-archive {what}"))?;
            for image in loaded {
                if image.repo_tags.is_empty() {
                    images.push((None, image.manifest.clone()));
                }
                for tag in &image.repo_tags {
                    let name = normalize(tag).with_context(|| {
                        format!("loading {what}: RepoTags {tag:?} is not a valid image name")
                    })?;
                    images.push((Some(name), image.manifest.clone()));
                }
            }
        }
        Kind::OciArchive => {
            let entries = layout::import_tar(reader, &staging)
                .with_context(|| format!("loading OCI archive {what}"))?;
            for (tag, desc) in entries {
                if !is_manifest_media_type(desc.media_type().as_ref()) {
                    eprintln!(
                        "note: skipping {} in {what}: {} is not an image",
                        desc.digest(),
                        desc.media_type()
                    );
                    continue;
                }
                let name = oci_entry_name(tag.as_deref().or(ref_name(&desc)), &desc)
                    .with_context(|| format!("loading {what}"))?;
                images.push((name, strip_name_annotations(desc)));
            }
        }
    }
    if images.is_empty() {
        bail!("loading {what}: the archive holds no image");
    }
    let records = store
        .commit(&staging, &images)
        .with_context(|| format!("storing the images of {what}"))?;
    if !args.quiet {
        for record in &records {
            match &record.name {
                Some(name) => println!("Loaded image: {}", familiar(name)),
                None => println!("Loaded image ID: {}", record.id),
            }
        }
    }
    tracing::debug!(
        images = records.len(),
        "loaded; first id {}",
        short_id(&records[0].id)
    );
    Ok(())
}

/// The descriptor as the store keeps it: without the annotations that named it in the
/// archive's index.
fn strip_name_annotations(mut desc: Descriptor) -> Descriptor {
    if let Some(mut annotations) = desc.annotations().clone() {
        annotations.remove(REF_NAME_ANNOTATION);
        annotations.remove(CONTAINERD_NAME_ANNOTATION);
        desc.set_annotations((!annotations.is_empty()).then_some(annotations));
    }
    desc
}
