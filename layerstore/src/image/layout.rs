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
//! missing blob.
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

use crate::content::{ContentError, Ingester, Provider};
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

/// Copies a blob out of the store, checking that it is what its descriptor says.
fn copy_blob<S: Provider + ?Sized>(
    store: &S,
    desc: &Descriptor,
    digest: &Digest,
    out: &mut dyn Write,
) -> Result<()> {
    let reader = store
        .read(digest, None)
        .map_err(|e| ImageError::content(digest, e))?;
    let mut hashing = HashingReader::new(reader, digest.algorithm().hasher());
    io::copy(&mut hashing, out).map_err(|e| ImageError::io(blob_path(digest), e))?;
    check_copied(hashing, desc, digest)
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
    let dir = path.parent().unwrap_or(Path::new("."));
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
    Ok(())
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
    fs::create_dir_all(dest).map_err(|e| ImageError::io(dest, e))?;
    let layout_path = dest.join(OCI_LAYOUT_FILE);
    let index_path = dest.join(INDEX_FILE);
    let existing = if layout_path.exists() {
        check_layout_header(&read_file(&layout_path)?, &layout_path)?;
        if index_path.exists() {
            parse_index(&read_file(&index_path)?, &index_path)?
                .manifests()
                .clone()
        } else {
            Vec::new()
        }
    } else {
        let header = layout_header_bytes()?;
        write_atomic(&layout_path, |f| {
            f.write_all(&header)
                .map_err(|e| ImageError::io(&layout_path, e))
        })?;
        Vec::new()
    };
    fs::create_dir_all(dest.join(BLOBS_DIR))
        .map_err(|e| ImageError::io(dest.join(BLOBS_DIR), e))?;

    let roots: Vec<Descriptor> = images.iter().map(|(_, d)| d.clone()).collect();
    for desc in reachable(store, &roots)? {
        let digest = descriptor_digest(&desc)?;
        let path = dest.join(blob_path(&digest));
        if let Ok(meta) = fs::metadata(&path)
            && meta.is_file()
            && meta.len() == desc.size()
        {
            continue;
        }
        let dir = path.parent().unwrap_or(dest);
        fs::create_dir_all(dir).map_err(|e| ImageError::io(dir, e))?;
        write_atomic(&path, |f| {
            let mut w = io::BufWriter::new(f);
            copy_blob(store, &desc, &digest, &mut w)?;
            w.flush().map_err(|e| ImageError::io(&path, e))
        })?;
    }

    let index = build_index(merge_entries(existing, images))?;
    let bytes = CanonicalBlob::new(media::OCI_INDEX, &index)?.into_bytes();
    write_atomic(&index_path, |f| {
        f.write_all(&bytes)
            .map_err(|e| ImageError::io(&index_path, e))
    })?;
    Ok(index)
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

/// Reads the layout in directory `src`, ingests into `store` every blob its `index.json`
/// reaches (each verified against its digest), and returns the entries of `index.json`.
pub fn import<S: Provider + Ingester + ?Sized>(src: &Path, store: &S) -> Result<Vec<LayoutEntry>> {
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
    while let Some((desc, referenced_by)) = stack.pop() {
        let digest = descriptor_digest(&desc)?;
        if !seen.insert(digest.clone()) {
            continue;
        }
        let media_type = desc.media_type().to_string();
        let path = src.join(blob_path(&digest));
        let is_manifest = is_manifest_media_type(&media_type);
        if !path.exists() {
            let in_store = store
                .exists(&digest)
                .map_err(|e| ImageError::content(&digest, e))?;
            if in_store && is_manifest {
                let (manifest, _) = Manifest::read(store, &desc)?;
                let parent = format!("{media_type} {digest}");
                stack.extend(
                    manifest
                        .references()
                        .into_iter()
                        .rev()
                        .map(|c| (c, parent.clone())),
                );
            }
            if in_store || media::is_non_distributable(&media_type) {
                continue;
            }
            return Err(ImageError::MissingBlob {
                digest,
                referenced_by,
            });
        }
        if is_manifest {
            let bytes = read_file(&path)?;
            let actual = Digest::of(digest.algorithm(), &bytes);
            if actual != digest {
                return Err(ImageError::BlobMismatch {
                    path,
                    expected: digest,
                    actual,
                });
            }
            if bytes.len() as u64 != desc.size() {
                return Err(ImageError::SizeMismatch {
                    what: path.display().to_string(),
                    expected: desc.size(),
                    actual: bytes.len() as u64,
                });
            }
            let manifest = Manifest::parse(&bytes, Some(&media_type), &path.display().to_string())?;
            store
                .ingest(&mut &bytes[..], Some(desc.size()), Some(&digest))
                .map_err(|e| ingest_error(&path, &digest, e))?;
            let parent = format!("{media_type} {digest}");
            stack.extend(
                manifest
                    .references()
                    .into_iter()
                    .rev()
                    .map(|c| (c, parent.clone())),
            );
        } else {
            let mut file = fs::File::open(&path).map_err(|e| ImageError::io(&path, e))?;
            store
                .ingest(&mut file, Some(desc.size()), Some(&digest))
                .map_err(|e| ingest_error(&path, &digest, e))?;
        }
    }
    Ok(entries_of(&index))
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
