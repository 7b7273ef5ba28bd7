//! Copying images between locations, named as `skopeo` names them:
//!
//! | location | meaning |
//! |---|---|
//! | `docker://REF` | a registry (`REF` as `docker pull` takes it) |
//! | `oci:DIR[:TAG]` | an OCI image layout directory; `TAG` is the ref-name annotation |
//! | `oci-archive:FILE[:TAG]` | the same layout as a tar file |
//! | `docker-archive:FILE[:REF]` | what `docker save` writes; as a source, `REF` picks an image by name or `@N` by position |
//!
//! As in skopeo, the path ends at the first `:`. An `oci:` source is read in place
//! ([`layout::open`]): its manifests and configs are checked on opening, its layers as they
//! are streamed out (by the registry a push uploads them to, or by the exporter writing the
//! destination), and a push that the registry refuses has them all checked to name the file
//! at fault. A registry pulled into an `oci:` destination is written straight into the layout
//! ([`LayoutWriter`]), each blob verified as it lands. Every other copy goes through the
//! content store it is given: the source is read into it (pulled, or imported with every
//! digest checked), then the destination is written from it. When the source is an index and
//! one platform is asked for, only that platform's manifest is copied, and it becomes the
//! root. A docker-archive holds single-platform images only.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use berth_layerstore::Digest;
use berth_layerstore::content::{ContentStore, Provider};
use berth_layerstore::image::docker_archive::{self, ArchiveImage, LoadedImage};
use berth_layerstore::image::layout::{self, LayoutBlobs, LayoutEntry, LayoutWriter};
use berth_layerstore::image::{Descriptor, Manifest, descriptor_digest, platform};

use crate::client::error::{ClientError, Result};
use crate::client::progress::{Progress, no_progress};
use crate::client::{Client, Platforms, PullOptions, PushOptions};
use crate::reference::Reference;

/// Where an image is read from or written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageLocation {
    /// `docker://REF`
    Registry(Reference),
    /// `oci:DIR[:TAG]`
    OciDir { path: PathBuf, tag: Option<String> },
    /// `oci-archive:FILE[:TAG]`
    OciArchive { path: PathBuf, tag: Option<String> },
    /// `docker-archive:FILE[:REF]`
    DockerArchive {
        path: PathBuf,
        reference: Option<String>,
    },
}

fn split_path(location: &str, rest: &str) -> Result<(PathBuf, Option<String>)> {
    let (path, name) = match rest.split_once(':') {
        Some((p, n)) => (p, Some(n.to_owned())),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(ClientError::Location {
            location: location.to_owned(),
            reason: "the path is empty".into(),
        });
    }
    if name.as_deref() == Some("") {
        return Err(ClientError::Location {
            location: location.to_owned(),
            reason: "the name after ':' is empty".into(),
        });
    }
    Ok((PathBuf::from(path), name))
}

impl FromStr for ImageLocation {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| ClientError::Location {
            location: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (transport, rest) = s.split_once(':').ok_or_else(|| {
            bad("expected docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:REF]")
        })?;
        match transport {
            "docker" => {
                let r = rest
                    .strip_prefix("//")
                    .ok_or_else(|| bad("expected docker://REF"))?;
                Ok(ImageLocation::Registry(r.parse()?))
            }
            "oci" => {
                let (path, tag) = split_path(s, rest)?;
                Ok(ImageLocation::OciDir { path, tag })
            }
            "oci-archive" => {
                let (path, tag) = split_path(s, rest)?;
                Ok(ImageLocation::OciArchive { path, tag })
            }
            "docker-archive" => {
                let (path, reference) = split_path(s, rest)?;
                Ok(ImageLocation::DockerArchive { path, reference })
            }
            other => Err(bad(&format!(
                "unknown transport {other:?}: expected docker, oci, oci-archive or docker-archive"
            ))),
        }
    }
}

impl fmt::Display for ImageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with = |f: &mut fmt::Formatter<'_>, t: &str, p: &Path, n: &Option<String>| {
            write!(f, "{t}:{}", p.display())?;
            match n {
                Some(n) => write!(f, ":{n}"),
                None => Ok(()),
            }
        };
        match self {
            ImageLocation::Registry(r) => write!(f, "docker://{r}"),
            ImageLocation::OciDir { path, tag } => with(f, "oci", path, tag),
            ImageLocation::OciArchive { path, tag } => with(f, "oci-archive", path, tag),
            ImageLocation::DockerArchive { path, reference } => {
                with(f, "docker-archive", path, reference)
            }
        }
    }
}

/// Options of [`copy`].
#[derive(Clone)]
pub struct CopyOptions {
    /// For an index: every platform, or the one manifest that fits a platform.
    pub platforms: Platforms,
    pub progress: Arc<dyn Progress>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            platforms: Platforms::All,
            progress: no_progress(),
        }
    }
}

/// What [`copy`] wrote.
#[derive(Debug, Clone)]
pub struct CopyResult {
    /// The root manifest or index written to the destination.
    pub root: Descriptor,
    /// Its digest.
    pub digest: Digest,
    /// The source's index when one platform was picked from it.
    pub source_index: Option<Descriptor>,
}

/// Runs blocking archive work on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(ClientError::Io {
            path: PathBuf::from("<copy>"),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Copies the image at `src` to `dst`, through `store` unless the copy can go without it. See
/// the module docs.
pub async fn copy<S: ContentStore + 'static>(
    client: &Client,
    store: Arc<S>,
    src: &ImageLocation,
    dst: &ImageLocation,
    opts: &CopyOptions,
) -> Result<CopyResult> {
    if let (ImageLocation::Registry(reference), ImageLocation::OciDir { path, tag }) = (src, dst) {
        return pull_into_layout(client, reference, path, tag, opts).await;
    }
    let Source {
        blobs: store,
        root,
        index: source_index,
        layout,
    } = read_source(client, store, src, opts).await?;
    let digest = descriptor_digest(&root)?;
    tracing::info!(%src, %dst, %digest, "copying");
    match dst {
        ImageLocation::Registry(reference) => {
            let mount_from = match src {
                ImageLocation::Registry(r) => vec![r.clone()],
                _ => Vec::new(),
            };
            let push = PushOptions {
                mount_from,
                progress: opts.progress.clone(),
            };
            if let Err(e) = client.push(&*store, &root, reference, &push).await {
                // A registry refuses an upload whose bytes do not match its digest with a 400
                // (`DIGEST_INVALID`, `SIZE_INVALID`): name the layout file at fault, if one is.
                if let (Some(layout), Some(400)) = (layout, e.status()) {
                    blocking(move || Ok(layout.verify()?)).await?;
                }
                return Err(e);
            }
        }
        ImageLocation::OciDir { path, tag } => {
            let entries: Vec<LayoutEntry> = vec![(tag.clone(), root.clone())];
            let path = path.clone();
            let store = store.clone();
            blocking(move || Ok(layout::export(&*store, &entries, &path).map(|_| ())?)).await?;
        }
        ImageLocation::OciArchive { path, tag } => {
            let entries: Vec<LayoutEntry> = vec![(tag.clone(), root.clone())];
            let path = path.clone();
            let store = store.clone();
            blocking(move || {
                write_file_atomic(&path, |file| {
                    let out = layout::export_tar(&*store, &entries, BufWriter::new(file))?;
                    finish_file(out, &path)
                })
            })
            .await?;
        }
        ImageLocation::DockerArchive { path, reference } => {
            let (manifest, _) = Manifest::read(&*store, &root)?;
            if manifest.is_index() {
                return Err(ClientError::Location {
                    location: dst.to_string(),
                    reason:
                        "a docker-archive holds single-platform images; pick one with a platform"
                            .into(),
                });
            }
            let images = vec![ArchiveImage {
                manifest: root.clone(),
                repo_tags: reference.iter().cloned().collect(),
            }];
            let path = path.clone();
            let store = store.clone();
            blocking(move || {
                write_file_atomic(&path, |file| {
                    let out = docker_archive::write(&*store, &images, BufWriter::new(file))?;
                    finish_file(out, &path)
                })
            })
            .await?;
        }
    }
    Ok(CopyResult {
        root,
        digest,
        source_index,
    })
}

fn finish_file(out: BufWriter<File>, path: &Path) -> Result<()> {
    let file = out
        .into_inner()
        .map_err(|e| io_error(path)(e.into_error()))?;
    file.sync_all().map_err(io_error(path))
}

/// Writes `path` through a temporary file beside it, renamed into place on success.
fn write_file_atomic(path: &Path, write: impl FnOnce(File) -> Result<()>) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| ClientError::Location {
            location: path.display().to_string(),
            reason: "not a file name".into(),
        })?
        .to_string_lossy()
        .into_owned();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let file = File::create(&tmp).map_err(io_error(&tmp))?;
    match write(file) {
        Ok(()) => std::fs::rename(&tmp, path).map_err(io_error(path)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// `docker://REF` to `oci:DIR[:TAG]`: the pull lands each blob, verified, in the layout's
/// `blobs/`, and the entry is added to `index.json` once they are all there.
async fn pull_into_layout(
    client: &Client,
    reference: &Reference,
    path: &Path,
    tag: &Option<String>,
    opts: &CopyOptions,
) -> Result<CopyResult> {
    let dest = path.to_owned();
    let writer = blocking(move || Ok(LayoutWriter::create(&dest)?)).await?;
    let pull = PullOptions {
        platforms: opts.platforms.clone(),
        progress: opts.progress.clone(),
    };
    let pulled = client.pull(reference, writer.blobs(), &pull).await?;
    let digest = descriptor_digest(&pulled.root)?;
    tracing::info!(%reference, dst = %path.display(), %digest, "copied");
    let entries: Vec<LayoutEntry> = vec![(tag.clone(), pulled.root.clone())];
    blocking(move || Ok(writer.finish(&entries).map(drop)?)).await?;
    Ok(CopyResult {
        root: pulled.root,
        digest,
        source_index: pulled.index,
    })
}

/// The image to copy: where its blobs are read from, its root, and the index the root was
/// picked from.
struct Source {
    blobs: Arc<dyn Provider>,
    root: Descriptor,
    index: Option<Descriptor>,
    /// For an `oci:` source, its blobs again, to find a bad layer when a push fails.
    layout: Option<Arc<LayoutBlobs>>,
}

/// Reads `src`: in place for an `oci:` directory, into `store` otherwise.
async fn read_source<S: ContentStore + 'static>(
    client: &Client,
    store: Arc<S>,
    src: &ImageLocation,
    opts: &CopyOptions,
) -> Result<Source> {
    let mut blobs: Arc<dyn Provider> = store.clone();
    let mut layout = None;
    let named = match src {
        ImageLocation::Registry(reference) => {
            let pull = PullOptions {
                platforms: opts.platforms.clone(),
                progress: opts.progress.clone(),
            };
            let pulled = client.pull(reference, &*store, &pull).await?;
            return Ok(Source {
                blobs,
                root: pulled.root,
                index: pulled.index,
                layout,
            });
        }
        ImageLocation::OciDir { path, tag } => {
            let path = path.clone();
            let (opened, entries) = blocking(move || Ok(layout::open(&path)?)).await?;
            let opened = Arc::new(opened);
            blobs = opened.clone();
            layout = Some(opened);
            pick_layout_entry(src, entries, tag.as_deref())?
        }
        ImageLocation::OciArchive { path, tag } => {
            let (path, s) = (path.clone(), store.clone());
            let entries = blocking(move || {
                let file = File::open(&path).map_err(io_error(&path))?;
                Ok(layout::import_tar(BufReader::new(file), &*s)?)
            })
            .await?;
            pick_layout_entry(src, entries, tag.as_deref())?
        }
        ImageLocation::DockerArchive { path, reference } => {
            let (path, s) = (path.clone(), store.clone());
            let images = blocking(move || {
                let file = File::open(&path).map_err(io_error(&path))?;
                Ok(docker_archive::read(BufReader::new(file), &*s)?)
            })
            .await?;
            pick_archive_image(src, images, reference.as_deref())?
        }
    };
    let (root, index) = match &opts.platforms {
        Platforms::All => (named, None),
        Platforms::Only(want) => {
            let (manifest, _) = Manifest::read(&*blobs, &named)?;
            if manifest.is_index() {
                let child =
                    platform::select_or_err(&manifest.manifests(), want, &src.to_string())?.clone();
                (child, Some(named))
            } else {
                (named, None)
            }
        }
    };
    Ok(Source {
        blobs,
        root,
        index,
        layout,
    })
}

fn pick_layout_entry(
    src: &ImageLocation,
    entries: Vec<LayoutEntry>,
    tag: Option<&str>,
) -> Result<Descriptor> {
    let bad = |reason: String| ClientError::Location {
        location: src.to_string(),
        reason,
    };
    match tag {
        Some(tag) => entries
            .into_iter()
            .find(|(name, _)| name.as_deref() == Some(tag))
            .map(|(_, d)| d)
            .ok_or_else(|| bad(format!("no image tagged {tag:?}"))),
        None => {
            let n = entries.len();
            let mut it = entries.into_iter();
            match (it.next(), n) {
                (Some((_, d)), 1) => Ok(d),
                (None, _) => Err(bad("the layout holds no image".into())),
                _ => Err(bad(format!(
                    "the layout holds {n} images; name one with :TAG"
                ))),
            }
        }
    }
}

/// `name` and `docker.io/library/name:latest` name the same image.
fn same_image_name(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<Reference>(), b.parse::<Reference>()) {
        (Ok(x), Ok(y)) => {
            x.registry == y.registry
                && x.repository == y.repository
                && x.tag_or_latest() == y.tag_or_latest()
        }
        _ => false,
    }
}

fn pick_archive_image(
    src: &ImageLocation,
    images: Vec<LoadedImage>,
    reference: Option<&str>,
) -> Result<Descriptor> {
    let bad = |reason: String| ClientError::Location {
        location: src.to_string(),
        reason,
    };
    match reference {
        Some(r) if r.starts_with('@') => {
            let index: usize = r[1..]
                .parse()
                .map_err(|_| bad(format!("{r:?} is not @N")))?;
            let n = images.len();
            images
                .into_iter()
                .nth(index)
                .map(|i| i.manifest)
                .ok_or_else(|| {
                    bad(format!(
                        "the archive holds {n} images; there is no @{index}"
                    ))
                })
        }
        Some(r) => images
            .into_iter()
            .find(|i| i.repo_tags.iter().any(|t| same_image_name(t, r)))
            .map(|i| i.manifest)
            .ok_or_else(|| bad(format!("no image named {r:?}"))),
        None => {
            let n = images.len();
            let mut it = images.into_iter();
            match (it.next(), n) {
                (Some(i), 1) => Ok(i.manifest),
                (None, _) => Err(bad("the archive holds no image".into())),
                _ => Err(bad(format!(
                    "the archive holds {n} images; name one with :REF or :@N"
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        let l: ImageLocation = "docker://127.0.0.1:5000/a/b:1".parse().unwrap();
        let ImageLocation::Registry(r) = &l else {
            panic!("{l:?}")
        };
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(l.to_string(), "docker://127.0.0.1:5000/a/b:1");

        assert_eq!(
            "oci:/tmp/x:v1".parse::<ImageLocation>().unwrap(),
            ImageLocation::OciDir {
                path: "/tmp/x".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            "oci-archive:img.tar".parse::<ImageLocation>().unwrap(),
            ImageLocation::OciArchive {
                path: "img.tar".into(),
                tag: None
            }
        );
        assert_eq!(
            "docker-archive:a.tar:busybox:1"
                .parse::<ImageLocation>()
                .unwrap(),
            ImageLocation::DockerArchive {
                path: "a.tar".into(),
                reference: Some("busybox:1".into())
            }
        );
        for bad in [
            "",
            "nothing",
            "docker:busybox",
            "ftp://x",
            "oci:",
            "oci:dir:",
            "docker://",
        ] {
            assert!(bad.parse::<ImageLocation>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn image_names_compare_normalized() {
        assert!(same_image_name(
            "busybox",
            "docker.io/library/busybox:latest"
        ));
        assert!(same_image_name("reg.example/a:1", "reg.example/a:1"));
        assert!(!same_image_name("busybox:1", "busybox:2"));
    }
}
