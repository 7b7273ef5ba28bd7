//! The OCI image layout (`image-layout.md`), as a directory and as a tar archive.
//!
//! ```text
//! oci-layout            {"imageLayoutVersion":"1.0.0"}
//! index.json            an image index; tags are the org.opencontainers.image.ref.name
//!                       annotation of its entries
//! blobs/<alg>/<hex>     every blob, named by its digest
//! ```
//!
//! The tar form is the same tree in a tar stream: what `skopeo copy … oci-archive:FILE:TAG`
//! reads and writes.
//!
//! **Export** ([`export`], [`export_tar`]) writes the entries given and every blob they reach
//! ([`crate::image::reachable`]), verifying each blob's digest as it is copied out of the store.
//! Exporting into a directory that already holds a layout adds to it, as skopeo does: an entry
//! whose ref name is exported again is replaced, other entries are kept. Blob files that exist
//! with the right size are not rewritten; files are written to a temporary name and renamed,
//! and `index.json` last, so an interrupted export never leaves an index that references a
//! missing blob. A directory export goes through a [`LayoutWriter`], which a pull can also
//! write into directly: its blobs are a content store over the layout's `blobs/`.
//!
//! **Reading in place** ([`open`]) checks a directory layout without copying it: the returned
//! [`LayoutBlobs`] reads the layout's own files, and the layers' digests are checked as they
//! are streamed out (see [`LayoutBlobs`]).
//!
//! **Import** ([`import`], [`import_tar`]) ingests blobs into a store, each checked against the
//! digest its name claims (the name is never trusted), and returns the entries of `index.json`.
//! A directory import ingests what the index reaches; a tar import ingests every blob member in
//! one pass over the stream, so the tar may come from a pipe. Blobs that the layout lacks but
//! the store already has are accepted, as the spec allows ("fulfilled by an external blob
//! store"); otherwise a missing blob is an error, except a non-distributable layer. Files other
//! than these are ignored. Errors name the bad file or member: a missing `oci-layout` or
//! `index.json`, a wrong `imageLayoutVersion`, a blob whose content does not match its name, a
//! member whose path escapes the archive.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};
use serde::{Deserialize, Serialize};

use std::ops::Range;

use crate::content::fs::FsStore;
use crate::content::{ContentError, Info, Ingester, Provider};
use crate::digest::{Algorithm, Digest};
use crate::image::manifest::{Manifest, is_manifest_media_type};
use crate::image::tarball::{self, HashingReader, MAX_JSON};
use crate::image::{
    CanonicalBlob, ImageError, REF_NAME_ANNOTATION, Result, descriptor_digest, reachable, ref_name,
};
use crate::media;

/// Name of the layout marker file.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// Name of the index file.
pub const INDEX_FILE: &str = "index.json";
/// Name of the blobs directory.
pub const BLOBS_DIR: &str = "blobs";
/// Blobs up to this size that [`open`] finds in a layout are checked there; larger ones are
/// layers, checked as they are streamed out (see [`LayoutBlobs`]).
pub const CHECKED_ON_OPEN: u64 = 1 << 20;
/// Read buffer of [`open`]'s verification.
const VERIFY_BUFFER: usize = 256 * 1024;
/// The only `imageLayoutVersion` there is.
pub const LAYOUT_VERSION: &str = "1.0.0";

/// An entry of `index.json`: its tag (the `org.opencontainers.image.ref.name` annotation), if
/// any, and its descriptor (a manifest or index, or any other blob).
pub type LayoutEntry = (Option<String>, Descriptor);

/// The `oci-layout` file.
#[derive(Debug, Serialize, Deserialize)]
struct LayoutHeader {
    #[serde(rename = "imageLayoutVersion")]
    image_layout_version: String,
}

/// The path of a blob inside a layout: `blobs/<alg>/<hex>`.
pub fn blob_path(digest: &Digest) -> String {
    format!("{BLOBS_DIR}/{}/{}", digest.algorithm(), digest.hex())
}

/// The digest a `blobs/<alg>/<hex>` member name claims, or `None` if the name is not one.
fn digest_of_blob_name(name: &str) -> Option<Result<Digest>> {
    let rest = name.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    if hex.is_empty() || hex.contains('/') {
        return None;
    }
    Some(
        alg.parse::<Algorithm>()
            .and_then(|a| Digest::from_parts(a, hex))
            .map_err(|source| ImageError::Digest {
                what: name.to_owned(),
                source,
            }),
    )
}

fn layout_header_bytes() -> Result<Vec<u8>> {
    Ok(CanonicalBlob::new(
        "application/vnd.oci.layout.header.v1+json",
        &LayoutHeader {
            image_layout_version: LAYOUT_VERSION.to_owned(),
        },
    )?
    .into_bytes())
}

fn check_layout_header(bytes: &[u8], path: &Path) -> Result<()> {
    let header: LayoutHeader =
        serde_json::from_slice(bytes).map_err(|e| ImageError::json(path.display(), e))?;
    if header.image_layout_version != LAYOUT_VERSION {
        return Err(ImageError::LayoutVersion {
            path: path.to_owned(),
            version: header.image_layout_version,
        });
    }
    Ok(())
}

fn parse_index(bytes: &[u8], path: &Path) -> Result<ImageIndex> {
    match Manifest::parse(bytes, None, &path.display().to_string())? {
        Manifest::OciIndex(index) => Ok(index),
        other => Err(ImageError::MediaTypeMismatch {
            what: path.display().to_string(),
            expected: media::OCI_INDEX.to_owned(),
            found: other.media_type().to_owned(),
        }),
    }
}

fn entries_of(index: &ImageIndex) -> Vec<LayoutEntry> {
    index
        .manifests()
        .iter()
        .map(|d| (ref_name(d).map(str::to_owned), d.clone()))
        .collect()
}

/// The index entry for `desc` tagged `name`: the descriptor with the ref-name annotation set.
fn tagged(name: Option<&str>, desc: &Descriptor) -> Descriptor {
    let mut d = desc.clone();
    if let Some(name) = name {
        let mut annotations = d.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME_ANNOTATION.to_owned(), name.to_owned());
        d.set_annotations(Some(annotations));
    }
    d
}

fn build_index(manifests: Vec<Descriptor>) -> Result<ImageIndex> {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| ImageError::Invalid {
            what: INDEX_FILE.to_owned(),
            reason: e.to_string(),
        })
}

/// Merges new entries into existing ones: an existing entry with the same ref name as a new
/// one is replaced, and an unnamed entry for the same digest is not repeated.
fn merge_entries(existing: Vec<Descriptor>, new: &[LayoutEntry]) -> Vec<Descriptor> {
    let names: HashSet<&str> = new.iter().filter_map(|(n, _)| n.as_deref()).collect();
    let unnamed: HashSet<String> = new
        .iter()
        .filter(|(n, _)| n.is_none())
        .map(|(_, d)| d.digest().to_string())
        .collect();
    let mut out: Vec<Descriptor> = existing
        .into_iter()
        .filter(|d| match ref_name(d) {
            Some(name) => !names.contains(name),
            None => !unnamed.contains(&d.digest().to_string()),
        })
        .collect();
    out.extend(new.iter().map(|(n, d)| tagged(n.as_deref(), d)));
    out
}

fn check_copied<R>(hashing: HashingReader<R>, desc: &Descriptor, digest: &Digest) -> Result<()>
where
    R: Read,
{
    let (actual, size) = hashing.finish();
    if &actual != digest {
        return Err(ImageError::content(
            "store",
            ContentError::DigestMismatch {
                expected: digest.clone(),
                actual,
            },
        ));
    }
    if size != desc.size() {
        return Err(ImageError::SizeMismatch {
            what: digest.to_string(),
            expected: desc.size(),
            actual: size,
        });
    }
    Ok(())
}

fn write_atomic(path: &Path, write: impl FnOnce(&mut fs::File) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| ImageError::io(dir, e))?;
    write(tmp.as_file_mut())?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| ImageError::io(tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| ImageError::io(path, e.error))?;
    // The rename itself outlives a machine crash once the directory is synced.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ImageError::io(dir, e))
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    match fs::metadata(path) {
        Ok(m) if m.len() > MAX_JSON => {
            return Err(ImageError::Invalid {
                what: path.display().to_string(),
                reason: format!("{} bytes is too large for a metadata file", m.len()),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ImageError::MissingFile {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(ImageError::io(path, e)),
    }
    fs::read(path).map_err(|e| ImageError::io(path, e))
}

/// Writes the layout for `images` (and every blob they reach) into the directory `dest`,
/// creating it if needed or adding to the layout already there. Returns the new `index.json`.
pub fn export<S: Provider + ?Sized>(
    store: &S,
    images: &[LayoutEntry],
    dest: &Path,
) -> Result<ImageIndex> {
    let writer = LayoutWriter::create(dest)?;
    let roots: Vec<Descriptor> = images.iter().map(|(_, d)| d.clone()).collect();
    for desc in reachable(store, &roots)? {
        let digest = descriptor_digest(&desc)?;
        if let Ok(info) = writer.blobs().info(&digest)
            && info.size == desc.size()
        {
            continue;
        }
        let mut reader = store
            .read(&digest, None)
            .map_err(|e| ImageError::content(&digest, e))?;
        // The layout's writer hashes what it is given and lands it only if it matches.
        writer
            .blobs()
            .ingest(&mut reader, Some(desc.size()), Some(&digest))
            .map_err(|e| match e {
                ContentError::SizeMismatch {
                    expected, actual, ..
                } => ImageError::SizeMismatch {
                    what: digest.to_string(),
                    expected,
                    actual,
                },
                other => ImageError::content("store", other),
            })?;
    }
    writer.finish(images)
}

/// An OCI layout directory being written in place: blobs land in it through
/// [`LayoutWriter::blobs`], a store that hashes, fsyncs and renames each one into
/// `blobs/<alg>/<hex>` (ingests go to a hidden directory inside the layout, removed with the
/// writer), and [`LayoutWriter::finish`] adds the entries to `index.json` last. So a writer that
/// stops half way leaves the layout's index as it was, never one that references a missing
/// blob; blobs it landed stay, as a skopeo copy's do.
pub struct LayoutWriter {
    dest: PathBuf,
    blobs: FsStore,
    // Declared after `blobs`, which may still have an ingest open in it.
    _ingest: tempfile::TempDir,
}

impl LayoutWriter {
    /// Creates the layout in `dest` (the directory, `oci-layout` and `blobs/`) or opens the one
    /// there, after checking its `oci-layout`.
    pub fn create(dest: &Path) -> Result<LayoutWriter> {
        fs::create_dir_all(dest).map_err(|e| ImageError::io(dest, e))?;
        let layout_path = dest.join(OCI_LAYOUT_FILE);
        if layout_path.exists() {
            check_layout_header(&read_file(&layout_path)?, &layout_path)?;
        } else {
            let header = layout_header_bytes()?;
            write_atomic(&layout_path, |f| {
                f.write_all(&header)
                    .map_err(|e| ImageError::io(&layout_path, e))
            })?;
        }
        let blobs = dest.join(BLOBS_DIR);
        fs::create_dir_all(&blobs).map_err(|e| ImageError::io(&blobs, e))?;
        let ingest = tempfile::Builder::new()
            .prefix(".ingest-")
            .tempdir_in(dest)
            .map_err(|e| ImageError::io(dest, e))?;
        Ok(LayoutWriter {
            blobs: FsStore::oci_layout(dest, ingest.path()),
            dest: dest.to_owned(),
            _ingest: ingest,
        })
    }

    /// The layout's blobs, to read and to write into.
    pub fn blobs(&self) -> &FsStore {
        &self.blobs
    }

    /// Checks that the layout holds everything `images` reach, at their sizes (a
    /// non-distributable layer may be missing), then adds them to `index.json`: an entry whose
    /// ref name is written again is replaced, other entries are kept. Returns the new index.
    pub fn finish(self, images: &[LayoutEntry]) -> Result<ImageIndex> {
        let roots: Vec<Descriptor> = images.iter().map(|(_, d)| d.clone()).collect();
        reachable(&self.blobs, &roots)?;
        let index_path = self.dest.join(INDEX_FILE);
        let existing = if index_path.exists() {
            parse_index(&read_file(&index_path)?, &index_path)?
                .manifests()
                .clone()
        } else {
            Vec::new()
        };
        let index = build_index(merge_entries(existing, images))?;
        let bytes = CanonicalBlob::new(media::OCI_INDEX, &index)?.into_bytes();
        write_atomic(&index_path, |f| {
            f.write_all(&bytes)
                .map_err(|e| ImageError::io(&index_path, e))
        })?;
        Ok(index)
    }
}

/// Writes the layout for `images` (and every blob they reach) as a tar stream to `out`, and
/// returns `out`. The archive is deterministic: fixed metadata, `oci-layout` first, then the
/// blobs in reference order, then `index.json`.
pub fn export_tar<S: Provider + ?Sized, W: Write>(
    store: &S,
    images: &[LayoutEntry],
    out: W,
) -> Result<W> {
    let mut tar = tar::Builder::new(out);
    tarball::append_bytes(&mut tar, OCI_LAYOUT_FILE, &layout_header_bytes()?)?;
    tarball::append_dir(&mut tar, BLOBS_DIR)?;
    let roots: Vec<Descriptor> = images.iter().map(|(_, d)| d.clone()).collect();
    let mut dirs: HashSet<Algorithm> = HashSet::new();
    for desc in reachable(store, &roots)? {
        let digest = descriptor_digest(&desc)?;
        if dirs.insert(digest.algorithm()) {
            tarball::append_dir(&mut tar, &format!("{BLOBS_DIR}/{}", digest.algorithm()))?;
        }
        let reader = store
            .read(&digest, None)
            .map_err(|e| ImageError::content(&digest, e))?;
        let mut hashing = HashingReader::new(reader, digest.algorithm().hasher());
        tarball::append_file(&mut tar, &blob_path(&digest), desc.size(), &mut hashing)?;
        check_copied(hashing, &desc, &digest)?;
    }
    let index = build_index(merge_entries(Vec::new(), images))?;
    let bytes = CanonicalBlob::new(media::OCI_INDEX, &index)?.into_bytes();
    tarball::append_bytes(&mut tar, INDEX_FILE, &bytes)?;
    tar.into_inner().map_err(|e| ImageError::io("<tar>", e))
}

/// Maps a failed commit of a blob read from `path` to an error that names the file.
fn ingest_error(path: &Path, digest: &Digest, e: ContentError) -> ImageError {
    match e {
        ContentError::DigestMismatch { expected, actual } => ImageError::BlobMismatch {
            path: path.to_owned(),
            expected,
            actual,
        },
        ContentError::SizeMismatch {
            expected, actual, ..
        } => ImageError::SizeMismatch {
            what: path.display().to_string(),
            expected,
            actual,
        },
        other => ImageError::content(format!("{} ({digest})", path.display()), other),
    }
}

/// A blob file that a layout's `index.json` reaches, as [`walk_dir`] finds it.
enum Found<'a> {
    /// A manifest or index, already read, checked against its digest and size, and parsed.
    Manifest {
        path: &'a Path,
        digest: &'a Digest,
        desc: &'a Descriptor,
        bytes: &'a [u8],
    },
    /// Any other blob, not yet read.
    Blob {
        path: &'a Path,
        digest: &'a Digest,
        desc: &'a Descriptor,
    },
}

/// Reads the `oci-layout` and `index.json` of the layout in directory `src`, then walks every
/// blob file the index reaches, manifests first-seen first, and hands each to `visit`. A blob
/// missing from the directory is looked for in `elsewhere` (the external blob store the spec
/// allows) and is an error if it is not there either, unless it is a non-distributable layer.
/// Returns the entries of `index.json`.
fn walk_dir<P: Provider + ?Sized>(
    src: &Path,
    elsewhere: Option<&P>,
    visit: &mut dyn FnMut(Found<'_>) -> Result<()>,
) -> Result<Vec<LayoutEntry>> {
    let layout_path = src.join(OCI_LAYOUT_FILE);
    check_layout_header(&read_file(&layout_path)?, &layout_path)?;
    let index_path = src.join(INDEX_FILE);
    let index = parse_index(&read_file(&index_path)?, &index_path)?;

    let mut seen: HashSet<Digest> = HashSet::new();
    let mut stack: Vec<(Descriptor, String)> = index
        .manifests()
        .iter()
        .rev()
        .map(|d| (d.clone(), index_path.display().to_string()))
        .collect();
    let children = |manifest: &Manifest, media_type: &str, digest: &Digest| {
        let parent = format!("{media_type} {digest}");
        manifest
            .references()
            .into_iter()
            .rev()
            .map(move |c| (c, parent.clone()))
    };
    while let Some((desc, referenced_by)) = stack.pop() {
        let digest = descriptor_digest(&desc)?;
        if !seen.insert(digest.clone()) {
            continue;
        }
        let media_type = desc.media_type().to_string();
        let path = src.join(blob_path(&digest));
        let is_manifest = is_manifest_media_type(&media_type);
        if !path.exists() {
            let found = match elsewhere {
                Some(store) => store
                    .exists(&digest)
                    .map_err(|e| ImageError::content(&digest, e))?,
                None => false,
            };
            if let (true, Some(store)) = (found && is_manifest, elsewhere) {
                let (manifest, _) = Manifest::read(store, &desc)?;
                stack.extend(children(&manifest, &media_type, &digest));
            }
            if found || media::is_non_distributable(&media_type) {
                continue;
            }
            return Err(ImageError::MissingBlob {
                digest,
                referenced_by,
            });
        }
        if !is_manifest {
            visit(Found::Blob {
                path: &path,
                digest: &digest,
                desc: &desc,
            })?;
            continue;
        }
        let bytes = read_file(&path)?;
        check_blob_file(
            &path,
            &digest,
            desc.size(),
            Digest::of(digest.algorithm(), &bytes),
            bytes.len() as u64,
        )?;
        let manifest = Manifest::parse(&bytes, Some(&media_type), &path.display().to_string())?;
        visit(Found::Manifest {
            path: &path,
            digest: &digest,
            desc: &desc,
            bytes: &bytes,
        })?;
        stack.extend(children(&manifest, &media_type, &digest));
    }
    Ok(entries_of(&index))
}

/// Checks what the blob file `path` hashed to (`actual`) and how long it is (`read`) against the
/// digest its name claims and the size its descriptor gives.
fn check_blob_file(
    path: &Path,
    expected: &Digest,
    size: u64,
    actual: Digest,
    read: u64,
) -> Result<()> {
    if &actual != expected {
        return Err(ImageError::BlobMismatch {
            path: path.to_owned(),
            expected: expected.clone(),
            actual,
        });
    }
    if read != size {
        return Err(ImageError::SizeMismatch {
            what: path.display().to_string(),
            expected: size,
            actual: read,
        });
    }
    Ok(())
}

/// Reads the layout in directory `src`, ingests into `store` every blob its `index.json`
/// reaches (each verified against its digest), and returns the entries of `index.json`.
pub fn import<S: Provider + Ingester + ?Sized>(src: &Path, store: &S) -> Result<Vec<LayoutEntry>> {
    walk_dir(src, Some(store), &mut |found| match found {
        Found::Manifest {
            path,
            digest,
            desc,
            bytes,
        } => store
            .ingest(&mut &bytes[..], Some(desc.size()), Some(digest))
            .map(drop)
            .map_err(|e| ingest_error(path, digest, e)),
        Found::Blob { path, digest, desc } => {
            let mut file = fs::File::open(path).map_err(|e| ImageError::io(path, e))?;
            store
                .ingest(&mut file, Some(desc.size()), Some(digest))
                .map(drop)
                .map_err(|e| ingest_error(path, digest, e))
        }
    })
}

/// The blobs of a layout opened in place by [`open`]: read straight from its directory.
///
/// Its manifests, indexes and every blob up to [`CHECKED_ON_OPEN`] bytes (configs) were checked
/// against their digests when the layout was opened. Larger blobs (layers) were found at
/// their sizes, and their content is checked by whoever streams them, as every consumer in
/// this crate does on its way out: [`export`] and [`export_tar`] hash what they copy, a
/// docker-archive checks each layer against its diff_id, and a registry checks the digest of
/// every upload. [`LayoutBlobs::verify`] checks them all here, to tell which file is wrong.
#[derive(Debug, Clone)]
pub struct LayoutBlobs {
    blobs: FsStore,
    /// The blobs not yet checked: `(path, digest, size)`.
    unchecked: Vec<(PathBuf, Digest, u64)>,
}

impl LayoutBlobs {
    /// Hashes every blob that [`open`] did not, on as many threads as there are CPUs; the
    /// first that does not match its digest and size is the error, naming its file.
    pub fn verify(&self) -> Result<()> {
        verify_files(&self.unchecked)
    }
}

impl Provider for LayoutBlobs {
    fn info(&self, digest: &Digest) -> Result<Info, ContentError> {
        self.blobs.info(digest)
    }

    fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Box<dyn Read + Send>, ContentError> {
        self.blobs.read(digest, range)
    }
}

/// Opens the layout in directory `src` to be read in place, without copying it anywhere:
/// checks its `oci-layout` and `index.json`, that every blob the index reaches is there at
/// its size, and the digests of the manifests and small blobs (see [`LayoutBlobs`] for who
/// checks the layers). Returns the layout's blobs, which nothing else may change while they are
/// read, and the entries of `index.json`.
pub fn open(src: &Path) -> Result<(LayoutBlobs, Vec<LayoutEntry>)> {
    let mut small = Vec::new();
    let mut unchecked = Vec::new();
    let entries = walk_dir::<FsStore>(src, None, &mut |found| {
        if let Found::Blob { path, digest, desc } = found {
            let meta = fs::metadata(path).map_err(|e| ImageError::io(path, e))?;
            if meta.len() != desc.size() {
                return Err(ImageError::SizeMismatch {
                    what: path.display().to_string(),
                    expected: desc.size(),
                    actual: meta.len(),
                });
            }
            let file = (path.to_owned(), digest.clone(), desc.size());
            if desc.size() <= CHECKED_ON_OPEN {
                small.push(file);
            } else {
                unchecked.push(file);
            }
        }
        Ok(())
    })?;
    verify_files(&small)?;
    // Only read through `LayoutBlobs`, so the ingest directory is never made.
    let blobs = FsStore::oci_layout(src, src.join(".ingest"));
    Ok((LayoutBlobs { blobs, unchecked }, entries))
}

/// Hashes each `(path, digest, size)` file and checks it against its digest and size, on up
/// to one thread per CPU; the first mismatch or failure is the error.
fn verify_files(files: &[(PathBuf, Digest, u64)]) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    crate::parallel::try_for_each(files, threads, |(path, digest, size)| {
        let file = fs::File::open(path).map_err(|e| ImageError::io(path, e))?;
        let mut hashing = HashingReader::new(
            io::BufReader::with_capacity(VERIFY_BUFFER, file),
            digest.algorithm().hasher(),
        );
        io::copy(&mut hashing, &mut io::sink()).map_err(|e| ImageError::io(path, e))?;
        let (actual, read) = hashing.finish();
        check_blob_file(path, digest, *size, actual, read)
    })
}

/// Reads a layout tar from `src` in one pass, ingesting every `blobs/<alg>/<hex>` member into
/// `store` (each verified against its name), then checks that everything `index.json` reaches
/// is in the store. Returns the entries of `index.json`.
pub fn import_tar<S: Provider + Ingester + ?Sized, R: Read>(
    src: R,
    store: &S,
) -> Result<Vec<LayoutEntry>> {
    let mut archive = tar::Archive::new(src);
    let mut layout_header: Option<Vec<u8>> = None;
    let mut index_bytes: Option<Vec<u8>> = None;
    let entries = archive
        .entries()
        .map_err(|e| ImageError::io("<layout archive>", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::io("<layout archive>", e))?;
        let name = tarball::entry_name(&entry)?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            tarball::link_target(&name, &target, kind.is_hard_link())?;
            if name.starts_with("blobs/") || name == INDEX_FILE || name == OCI_LAYOUT_FILE {
                return Err(ImageError::BadMember {
                    member: name,
                    reason: "links are not supported in an OCI layout archive".into(),
                });
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        if name == OCI_LAYOUT_FILE {
            layout_header = Some(tarball::read_small(&mut entry, &name)?);
        } else if name == INDEX_FILE {
            index_bytes = Some(tarball::read_small(&mut entry, &name)?);
        } else if let Some(digest) = digest_of_blob_name(&name) {
            let digest = digest?;
            let size = entry.header().size().ok();
            let path = PathBuf::from(&name);
            store
                .ingest(&mut entry, size, Some(&digest))
                .map_err(|e| ingest_error(&path, &digest, e))?;
        }
    }
    let layout_path = Path::new(OCI_LAYOUT_FILE);
    let header = layout_header.ok_or_else(|| ImageError::MissingFile {
        path: layout_path.to_owned(),
    })?;
    check_layout_header(&header, layout_path)?;
    let index_path = Path::new(INDEX_FILE);
    let index_bytes = index_bytes.ok_or_else(|| ImageError::MissingFile {
        path: index_path.to_owned(),
    })?;
    let index = parse_index(&index_bytes, index_path)?;
    reachable(store, index.manifests())?;
    Ok(entries_of(&index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::testutil::{MemoryStore, sample_image};

    fn names(entries: &[LayoutEntry]) -> Vec<Option<String>> {
        entries.iter().map(|(n, _)| n.clone()).collect()
    }

    #[test]
    fn directory_round_trip() {
        let store = MemoryStore::new();
        let image = sample_image(&store, &[b"one", b"two"]);
        let dir = tempfile::tempdir().unwrap();
        let index = export(
            &store,
            &[(Some("v1".into()), image.manifest.clone())],
            dir.path(),
        )
        .unwrap();
        assert_eq!(index.manifests().len(), 1);
        assert_eq!(
            fs::read_to_string(dir.path().join(OCI_LAYOUT_FILE)).unwrap(),
            r#"{"imageLayoutVersion":"1.0.0"}"#
        );
        for d in [&image.manifest, &image.config] {
            let digest = descriptor_digest(d).unwrap();
            assert!(dir.path().join(blob_path(&digest)).is_file());
        }

        let other = MemoryStore::new();
        let entries = import(dir.path(), &other).unwrap();
        assert_eq!(names(&entries), vec![Some("v1".to_owned())]);
        assert_eq!(entries[0].1.digest(), image.manifest.digest());
        assert_eq!(other.len(), store.len());

        // Exporting again adds a tag and replaces a retagged entry.
        export(
            &store,
            &[(Some("v2".into()), image.manifest.clone())],
            dir.path(),
        )
        .unwrap();
        let index = export(
            &store,
            &[(Some("v1".into()), image.config.clone())],
            dir.path(),
        )
        .unwrap();
        let tags: Vec<_> = index
            .manifests()
            .iter()
            .map(|d| ref_name(d).unwrap().to_owned())
            .collect();
        assert_eq!(tags, ["v2", "v1"]);
        assert_eq!(index.manifests()[1].digest(), image.config.digest());
    }

    #[test]
    fn tar_round_trip_is_deterministic() {
        let store = MemoryStore::new();
        let image = sample_image(&store, &[b"layer"]);
        let images = [
            (Some("latest".to_owned()), image.manifest.clone()),
            (None, image.manifest.clone()),
        ];
        let tar1 = export_tar(&store, &images, Vec::new()).unwrap();
        let tar2 = export_tar(&store, &images, Vec::new()).unwrap();
        assert_eq!(tar1, tar2);

        let other = MemoryStore::new();
        let entries = import_tar(&tar1[..], &other).unwrap();
        assert_eq!(names(&entries), vec![Some("latest".to_owned()), None]);
        assert_eq!(other.len(), store.len());
        let (m, _) = Manifest::read(&other, &entries[0].1).unwrap();
        assert_eq!(m.layers().len(), 1);
    }

    /// Rebuilds a tar, changing members with `edit` (name, data) -> Option<(name, data)>.
    fn rewrite_tar(
        tar_bytes: &[u8],
        mut edit: impl FnMut(&str, Vec<u8>) -> Option<(String, Vec<u8>)>,
    ) -> Vec<u8> {
        let mut out = tar::Builder::new(Vec::new());
        let mut archive = tar::Archive::new(tar_bytes);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            let mut header = entry.header().clone();
            if let Some((name, data)) = edit(&name, data) {
                header.set_size(data.len() as u64);
                if name.len() >= 100 || name.contains("..") {
                    // Write the raw name, bypassing the builder's path checks.
                    let bytes = header.as_old_mut();
                    bytes.name = [0; 100];
                    bytes.name[..name.len()].copy_from_slice(name.as_bytes());
                    header.set_cksum();
                    out.append(&header, &data[..]).unwrap();
                } else {
                    out.append_data(&mut header, &name, &data[..]).unwrap();
                }
            }
        }
        out.into_inner().unwrap()
    }

    #[test]
    fn tampered_blob_is_refused_with_its_name() {
        let store = MemoryStore::new();
        let image = sample_image(&store, &[b"layer"]);
        let tar = export_tar(
            &store,
            &[(Some("t".into()), image.manifest.clone())],
            Vec::new(),
        )
        .unwrap();
        let layer = descriptor_digest(&image.layers[0]).unwrap();
        let target = blob_path(&layer);
        let bad = rewrite_tar(&tar, |name, mut data| {
            if name == target {
                let last = data.len() - 10;
                data[last] ^= 0xff;
            }
            Some((name.to_owned(), data))
        });
        match import_tar(&bad[..], &MemoryStore::new()) {
            Err(ImageError::BlobMismatch { path, expected, .. }) => {
                assert_eq!(path, PathBuf::from(&target));
                assert_eq!(expected, layer);
            }
            other => panic!("{other:?}"),
        }

        // Same in a directory.
        let dir = tempfile::tempdir().unwrap();
        export(
            &store,
            &[(Some("t".into()), image.manifest.clone())],
            dir.path(),
        )
        .unwrap();
        let file = dir.path().join(&target);
        let mut data = fs::read(&file).unwrap();
        data[0] ^= 1;
        fs::write(&file, data).unwrap();
        match import(dir.path(), &MemoryStore::new()) {
            Err(ImageError::BlobMismatch { path, .. }) => assert_eq!(path, file),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_layouts_are_refused() {
        let store = MemoryStore::new();
        let image = sample_image(&store, &[b"layer"]);
        let tar = export_tar(
            &store,
            &[(Some("t".into()), image.manifest.clone())],
            Vec::new(),
        )
        .unwrap();

        let escaping = rewrite_tar(&tar, |name, data| {
            Some((
                if name == INDEX_FILE {
                    "../index.json".into()
                } else {
                    name.into()
                },
                data,
            ))
        });
        match import_tar(&escaping[..], &MemoryStore::new()) {
            Err(ImageError::UnsafePath { member }) => assert_eq!(member, "../index.json"),
            other => panic!("{other:?}"),
        }

        let no_layout = rewrite_tar(&tar, |name, data| {
            (name != OCI_LAYOUT_FILE).then(|| (name.into(), data))
        });
        match import_tar(&no_layout[..], &MemoryStore::new()) {
            Err(ImageError::MissingFile { path }) => assert_eq!(path, Path::new(OCI_LAYOUT_FILE)),
            other => panic!("{other:?}"),
        }

        let version = rewrite_tar(&tar, |name, data| {
            Some(if name == OCI_LAYOUT_FILE {
                (name.into(), br#"{"imageLayoutVersion":"2.0.0"}"#.to_vec())
            } else {
                (name.into(), data)
            })
        });
        assert!(matches!(
            import_tar(&version[..], &MemoryStore::new()),
            Err(ImageError::LayoutVersion { version, .. }) if version == "2.0.0"
        ));

        let layer = descriptor_digest(&image.layers[0]).unwrap();
        let missing = rewrite_tar(&tar, |name, data| {
            (name != blob_path(&layer)).then(|| (name.into(), data))
        });
        match import_tar(&missing[..], &MemoryStore::new()) {
            Err(ImageError::MissingBlob {
                digest,
                referenced_by,
            }) => {
                assert_eq!(digest, layer);
                assert!(referenced_by.contains(&image.manifest.digest().to_string()));
            }
            other => panic!("{other:?}"),
        }
        // ... unless the store already has it.
        assert!(import_tar(&missing[..], &store).is_ok());

        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            import(dir.path(), &MemoryStore::new()),
            Err(ImageError::MissingFile { path }) if path == dir.path().join(OCI_LAYOUT_FILE)
        ));
    }

    #[test]
    fn open_reads_in_place_and_checks_the_small_blobs() {
        let store = MemoryStore::new();
        let image = sample_image(&store, &[b"one", b"two"]);
        let dir = tempfile::tempdir().unwrap();
        export(
            &store,
            &[(Some("v1".into()), image.manifest.clone())],
            dir.path(),
        )
        .unwrap();
        let (blobs, entries) = open(dir.path()).unwrap();
        assert_eq!(names(&entries), vec![Some("v1".to_owned())]);
        for d in reachable(&store, std::slice::from_ref(&image.manifest)).unwrap() {
            let digest = descriptor_digest(&d).unwrap();
            assert_eq!(
                blobs.read_all(&digest).unwrap(),
                store.read_all(&digest).unwrap()
            );
        }
        let layer = descriptor_digest(&image.layers[1]).unwrap();
        let range = blobs.read_all(&layer).unwrap();
        let mut part = Vec::new();
        blobs
            .read(&layer, Some(1..3))
            .unwrap()
            .read_to_end(&mut part)
            .unwrap();
        assert_eq!(part, range[1..3]);
        // Nothing was written into the layout.
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [BLOBS_DIR, INDEX_FILE, OCI_LAYOUT_FILE]);

        // A layer changed after the export is found before anything reads it.
        let file = dir.path().join(blob_path(&layer));
        let good = fs::read(&file).unwrap();
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        fs::write(&file, &bad).unwrap();
        match open(dir.path()) {
            Err(ImageError::BlobMismatch { path, expected, .. }) => {
                assert_eq!(path, file);
                assert_eq!(expected, layer);
            }
            other => panic!("{other:?}"),
        }
        // So is one that went missing.
        fs::remove_file(&file).unwrap();
        match open(dir.path()) {
            Err(ImageError::MissingBlob { digest, .. }) => assert_eq!(digest, layer),
            other => panic!("{other:?}"),
        }
        fs::write(&file, &good).unwrap();
        assert!(open(dir.path()).is_ok());
    }

    #[test]
    fn open_leaves_large_layers_to_their_readers_and_verify_finds_them() {
        let store = MemoryStore::new();
        // Incompressible, so that the gzip layer is larger than what `open` checks itself.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let big: Vec<u8> = (0..CHECKED_ON_OPEN + 4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let image = sample_image(&store, &[&big[..]]);
        let dir = tempfile::tempdir().unwrap();
        export(&store, &[(None, image.manifest.clone())], dir.path()).unwrap();
        let layer = descriptor_digest(&image.layers[0]).unwrap();
        let file = dir.path().join(blob_path(&layer));
        let mut bytes = fs::read(&file).unwrap();
        bytes[7] ^= 1;
        fs::write(&file, &bytes).unwrap();

        let (blobs, _) = open(dir.path()).unwrap();
        match blobs.verify() {
            Err(ImageError::BlobMismatch { path, expected, .. }) => {
                assert_eq!(path, file);
                assert_eq!(expected, layer);
            }
            other => panic!("{other:?}"),
        }
        // Exporting it checks it on the way out.
        let out = tempfile::tempdir().unwrap();
        assert!(export(&blobs, &[(None, image.manifest.clone())], out.path()).is_err());
        assert!(!out.path().join(blob_path(&layer)).exists());
        // A layer of the wrong size is found on opening.
        bytes.pop();
        fs::write(&file, &bytes).unwrap();
        assert!(matches!(
            open(dir.path()),
            Err(ImageError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn layout_writer_lands_blobs_then_the_index() {
        let store = MemoryStore::new();
        let image = sample_image(&store, &[b"one"]);
        let dir = tempfile::tempdir().unwrap();
        let all = reachable(&store, std::slice::from_ref(&image.manifest)).unwrap();

        // A writer that stops before its last blob leaves no index.
        let writer = LayoutWriter::create(dir.path()).unwrap();
        for d in &all[1..] {
            let digest = descriptor_digest(d).unwrap();
            writer
                .blobs()
                .ingest(
                    &mut &store.read_all(&digest).unwrap()[..],
                    Some(d.size()),
                    Some(&digest),
                )
                .unwrap();
            assert!(dir.path().join(blob_path(&digest)).is_file());
        }
        let entries = [(Some("t".to_owned()), image.manifest.clone())];
        assert!(matches!(
            writer.finish(&entries),
            Err(ImageError::MissingBlob { digest, .. })
                if digest == descriptor_digest(&image.manifest).unwrap()
        ));
        assert!(!dir.path().join(INDEX_FILE).exists());

        // A wrong blob does not land.
        let writer = LayoutWriter::create(dir.path()).unwrap();
        let manifest = descriptor_digest(&image.manifest).unwrap();
        assert!(matches!(
            writer
                .blobs()
                .ingest(&mut &b"not it"[..], None, Some(&manifest)),
            Err(ContentError::DigestMismatch { .. })
        ));
        writer
            .blobs()
            .ingest(
                &mut &store.read_all(&manifest).unwrap()[..],
                None,
                Some(&manifest),
            )
            .unwrap();
        let index = writer.finish(&entries).unwrap();
        assert_eq!(index.manifests().len(), 1);
        assert_eq!(ref_name(&index.manifests()[0]), Some("t"));
        // The writers' ingest directories went with them, and the layout reads back.
        let stray: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
        let other = MemoryStore::new();
        assert_eq!(
            names(&import(dir.path(), &other).unwrap()),
            vec![Some("t".to_owned())]
        );
        assert_eq!(other.len(), all.len());
    }

    #[test]
    fn exports_an_index_and_everything_below_it() {
        let store = MemoryStore::new();
        let amd64 = sample_image(&store, &[b"amd64"]);
        let arm64 = sample_image(&store, &[b"arm64", b"more"]);
        let mut entries = Vec::new();
        for (image, platform) in [(&amd64, "linux/amd64"), (&arm64, "linux/arm64/v8")] {
            let mut d = image.manifest.clone();
            d.set_platform(Some(crate::image::platform::parse(platform).unwrap()));
            entries.push(d);
        }
        let index = build_index(entries).unwrap();
        let index = CanonicalBlob::new(media::OCI_INDEX, &index)
            .unwrap()
            .ingest(&store)
            .unwrap();
        let all = reachable(&store, std::slice::from_ref(&index)).unwrap();
        // index, 2 manifests, 2 configs, 3 layers
        assert_eq!(all.len(), 8);
        assert_eq!(all[0], index);

        let tar = export_tar(&store, &[(Some("multi".into()), index.clone())], Vec::new()).unwrap();
        let other = MemoryStore::new();
        let imported = import_tar(&tar[..], &other).unwrap();
        assert_eq!(other.len(), 8);
        let (m, _) = Manifest::read(&other, &imported[0].1).unwrap();
        let pick = m
            .select_platform(&crate::image::platform::parse("linux/aarch64").unwrap())
            .unwrap();
        assert_eq!(pick.digest(), arm64.manifest.digest());

        let dir = tempfile::tempdir().unwrap();
        export(&store, &[(Some("multi".into()), index)], dir.path()).unwrap();
        let third = MemoryStore::new();
        import(dir.path(), &third).unwrap();
        assert_eq!(third.len(), 8);
    }

    #[test]
    fn reads_skopeo_style_index_without_media_type() {
        let store = MemoryStore::new();
        let image = sample_image(&store, &[b"layer"]);
        let dir = tempfile::tempdir().unwrap();
        export(&store, &[], dir.path()).unwrap();
        for d in reachable(&store, std::slice::from_ref(&image.manifest)).unwrap() {
            let digest = descriptor_digest(&d).unwrap();
            let path = dir.path().join(blob_path(&digest));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, store.read_all(&digest).unwrap()).unwrap();
        }
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"t1"}}}},{{"mediaType":"application/xml","digest":"{}","size":1}}]}}"#,
            media::OCI_MANIFEST,
            image.manifest.digest(),
            image.manifest.size(),
            Digest::sha256(b"x"),
        );
        fs::write(dir.path().join(INDEX_FILE), index).unwrap();
        fs::write(dir.path().join(blob_path(&Digest::sha256(b"x"))), b"x").unwrap();
        fs::write(dir.path().join("manifest.json"), b"[]").unwrap();
        let entries = import(dir.path(), &MemoryStore::new()).unwrap();
        assert_eq!(names(&entries), vec![Some("t1".to_owned()), None]);
    }
}
