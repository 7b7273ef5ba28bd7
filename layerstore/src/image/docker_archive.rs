//! docker-archive: what `docker save` writes and `docker load` reads.
//!
//! ```text
//! manifest.json         [{"Config":"<hex>.json","RepoTags":["repo:tag"],"Layers":["<dir>/layer.tar",...]}]
//! repositories          {"repo":{"tag":"<top layer dir>"}}   (legacy, for pre-1.10 readers)
//! <hex>.json            the image config, named by its sha256
//! <dir>/layer.tar       each layer, an uncompressed tar whose sha256 is its diff_id
//! ```
//!
//! **Write** ([`write()`]) takes images from a store by their OCI or Docker manifest. Layers may be
//! stored compressed; each is written as an uncompressed `layer.tar` in a directory named by its
//! diff_id, after checking that the uncompressed content hashes to the diff_id the config lists
//! (a layer stored compressed is decompressed twice: once to learn its size and check it, once
//! into the archive). Every docker 1.10 and later, including 20.10, loads this. Layers shared
//! between images are written once. The legacy per-layer `VERSION` and `json` files are not
//! written: `docker load` reads `manifest.json` and does not need them.
//!
//! **Read** ([`read`]) accepts what `docker save` writes: the classic layout above (docker
//! 20.10; skopeo's variant has layers as `<hex>.tar` and symlinks `<dir>/layer.tar` to them), and
//! the layout of docker 25 and later, where `manifest.json` sits beside an OCI image layout and
//! points into `blobs/sha256/`, and layers may be compressed. The stream is read once: every
//! member that may be a config or layer is ingested into the store as it passes (members named
//! by a digest, `<hex>.json` and `blobs/<alg>/<hex>`, are verified against that name), links are
//! resolved inside the archive, and then `manifest.json` is followed. For each image the config
//! is parsed, each layer's diff_id is checked against the config (decompressing compressed
//! layers), and an OCI manifest is made and ingested (config `application/vnd.oci.image.config.v1+json`,
//! layers `application/vnd.oci.image.layer.v1.tar[+gzip|+zstd]` as their content is). Members
//! that no image references stay in the store as unreferenced blobs. Archives without
//! `manifest.json` (docker before 1.10) are refused. Errors name the bad member.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};

use oci_spec::image::{Descriptor, ImageManifest, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};

use crate::content::{ContentError, Info, Ingester, Provider};
use crate::digest::{Algorithm, Digest};
use crate::image::docker::DockerDescriptor;
use crate::image::manifest::Manifest;
use crate::image::tarball::{self, HashingReader};
use crate::image::{
    CanonicalBlob, ImageConfig, ImageError, Result, descriptor_digest, new_descriptor,
};
use crate::media::{self, Compression};

/// Name of the archive's manifest file.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Name of the legacy repositories file.
pub const REPOSITORIES_FILE: &str = "repositories";

/// One entry of `manifest.json`, with Docker's field names and order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManifestEntry {
    /// Member name of the config.
    pub config: String,
    /// `repo:tag` names (Docker writes `null` for an untagged image).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub repo_tags: Vec<String>,
    /// Member names of the layers, from the base up.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub layers: Vec<String>,
    /// Legacy parent image id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Descriptors of layers that are not in the archive (foreign layers), by diff_id; docker
    /// 25 and later also list the ones that are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_sources: Option<BTreeMap<Digest, DockerDescriptor>>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// An image to write: its manifest (OCI or Docker schema 2, in the store) and its names.
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    pub manifest: Descriptor,
    /// `repo:tag` names; a name without a tag gets `:latest`.
    pub repo_tags: Vec<String>,
}

/// An image read from an archive. Its config, layers and the OCI manifest made for it are in
/// the store.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// The names the archive gave it.
    pub repo_tags: Vec<String>,
    /// Descriptor of the OCI manifest made for the image.
    pub manifest: Descriptor,
    /// That manifest.
    pub image_manifest: ImageManifest,
    /// Descriptor of the config (its digest is Docker's image id).
    pub config: Descriptor,
    /// The layers' diff_ids, from the config.
    pub diff_ids: Vec<Digest>,
}

/// Splits `repo:tag` into its two parts, adding `latest` when there is no tag. Digest
/// references cannot name an image in a docker-archive.
fn split_repo_tag(name: &str) -> Result<(String, String)> {
    let bad = |reason: &str| ImageError::Invalid {
        what: format!("repo tag {name:?}"),
        reason: reason.to_owned(),
    };
    if name.is_empty() || name.contains('@') || name.chars().any(char::is_whitespace) {
        return Err(bad("expected repo[:tag]"));
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) => {
            if tag.is_empty() {
                return Err(bad("empty tag"));
            }
            let repo = &name[..name.len() - tag.len() - 1];
            Ok((repo.to_owned(), tag.to_owned()))
        }
        None => Ok((name.to_owned(), "latest".to_owned())),
    }
}

/// The compression of a stored blob, from its first bytes.
fn sniff_blob<S: Provider + ?Sized>(store: &S, digest: &Digest) -> Result<Compression> {
    let mut head = Vec::with_capacity(4);
    store
        .read(digest, Some(0..4))
        .map_err(|e| ImageError::content(digest, e))?
        .take(4)
        .read_to_end(&mut head)
        .map_err(|e| ImageError::io(digest.to_string(), e))?;
    Ok(Compression::sniff(&head))
}

/// A reader over the uncompressed content of a stored layer.
fn uncompressed<'a, S: Provider + ?Sized>(
    store: &'a S,
    digest: &Digest,
    compression: Compression,
) -> Result<Box<dyn Read + Send + 'a>> {
    let raw = store
        .read(digest, None)
        .map_err(|e| ImageError::content(digest, e))?;
    tarball::decompress(compression, raw).map_err(|e| ImageError::io(digest.to_string(), e))
}

/// The diff_id and uncompressed size of a stored layer.
fn diff_id_of<S: Provider + ?Sized>(
    store: &S,
    digest: &Digest,
    compression: Compression,
    algorithm: Algorithm,
) -> Result<(Digest, u64)> {
    let mut hashing = HashingReader::new(
        uncompressed(store, digest, compression)?,
        algorithm.hasher(),
    );
    io::copy(&mut hashing, &mut io::sink())
        .map_err(|e| ImageError::io(format!("layer {digest}"), e))?;
    Ok(hashing.finish())
}

fn read_config<S: Provider + ?Sized>(store: &S, desc: &Descriptor) -> Result<(Digest, Vec<u8>)> {
    let digest = descriptor_digest(desc)?;
    let bytes = store.read_all(&digest).map_err(|e| match e {
        ContentError::NotFound(_) => ImageError::MissingBlob {
            digest: digest.clone(),
            referenced_by: "the image manifest".into(),
        },
        e => ImageError::content(&digest, e),
    })?;
    if bytes.len() as u64 != desc.size() {
        return Err(ImageError::SizeMismatch {
            what: digest.to_string(),
            expected: desc.size(),
            actual: bytes.len() as u64,
        });
    }
    Ok((digest, bytes))
}

/// Writes one layer as an uncompressed tar member, checking it against `diff_id`.
fn write_layer<S: Provider + ?Sized, W: Write>(
    store: &S,
    tar: &mut tar::Builder<W>,
    layer: &Descriptor,
    diff_id: &Digest,
    member: &str,
) -> Result<()> {
    let digest = descriptor_digest(layer)?;
    let info = store.info(&digest).map_err(|e| match e {
        ContentError::NotFound(_) => ImageError::MissingBlob {
            digest: digest.clone(),
            referenced_by: format!("layer {diff_id}"),
        },
        e => ImageError::content(&digest, e),
    })?;
    let compression = sniff_blob(store, &digest)?;
    let size = if compression == Compression::None {
        if &digest != diff_id {
            return Err(ImageError::DiffIdMismatch {
                member: format!("layer {digest}"),
                expected: diff_id.clone(),
                actual: digest,
            });
        }
        info.size
    } else {
        let (actual, size) = diff_id_of(store, &digest, compression, diff_id.algorithm())?;
        if &actual != diff_id {
            return Err(ImageError::DiffIdMismatch {
                member: format!("layer {digest}"),
                expected: diff_id.clone(),
                actual,
            });
        }
        size
    };
    let mut hashing = HashingReader::new(
        uncompressed(store, &digest, compression)?,
        diff_id.algorithm().hasher(),
    );
    tarball::append_file(tar, member, size, &mut hashing)?;
    let (actual, _) = hashing.finish();
    if &actual != diff_id {
        return Err(ImageError::DiffIdMismatch {
            member: member.to_owned(),
            expected: diff_id.clone(),
            actual,
        });
    }
    Ok(())
}

/// Writes `images` as a docker-archive to `out` and returns `out`. See the module docs.
pub fn write<S: Provider + ?Sized, W: Write>(
    store: &S,
    images: &[ArchiveImage],
    out: W,
) -> Result<W> {
    let mut tar = tar::Builder::new(out);
    let mut configs_written: HashMap<Digest, String> = HashMap::new();
    let mut layers_written: HashMap<Digest, String> = HashMap::new();
    let mut entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();

    for image in images {
        let (manifest, _) = Manifest::read(store, &image.manifest)?;
        let what = format!("manifest {}", image.manifest.digest());
        let config_desc = manifest.config().ok_or_else(|| ImageError::Invalid {
            what: what.clone(),
            reason: "an index cannot go in a docker-archive; pick a platform's manifest".into(),
        })?;
        let (config_digest, config_bytes) = read_config(store, &config_desc)?;
        let config = ImageConfig::from_slice(&config_bytes, &format!("config {config_digest}"))?;
        let layers = manifest.layers();
        if config.diff_ids().len() != layers.len() {
            return Err(ImageError::LayerCount {
                what,
                diff_ids: config.diff_ids().len(),
                layers: layers.len(),
            });
        }

        let config_member = match configs_written.get(&config_digest) {
            Some(name) => name.clone(),
            None => {
                let name = format!("{}.json", config_digest.hex());
                tarball::append_bytes(&mut tar, &name, &config_bytes)?;
                configs_written.insert(config_digest.clone(), name.clone());
                name
            }
        };

        let mut layer_members = Vec::with_capacity(layers.len());
        for (layer, diff_id) in layers.iter().zip(config.diff_ids()) {
            let member = match layers_written.get(diff_id) {
                Some(name) => name.clone(),
                None => {
                    let dir = diff_id.hex().to_owned();
                    tarball::append_dir(&mut tar, &dir)?;
                    let name = format!("{dir}/layer.tar");
                    write_layer(store, &mut tar, layer, diff_id, &name)?;
                    layers_written.insert(diff_id.clone(), name.clone());
                    name
                }
            };
            layer_members.push(member);
        }

        let mut repo_tags = Vec::with_capacity(image.repo_tags.len());
        for name in &image.repo_tags {
            let (repo, tag) = split_repo_tag(name)?;
            if let Some(top) = config.diff_ids().last() {
                repositories
                    .entry(repo.clone())
                    .or_default()
                    .insert(tag.clone(), top.hex().to_owned());
            }
            repo_tags.push(format!("{repo}:{tag}"));
        }
        entries.push(ManifestEntry {
            config: config_member,
            repo_tags,
            layers: layer_members,
            parent: None,
            layer_sources: None,
        });
    }

    let manifest_json = CanonicalBlob::new("application/json", &entries)?;
    tarball::append_bytes(&mut tar, MANIFEST_FILE, manifest_json.bytes())?;
    if !repositories.is_empty() {
        let repositories_json = CanonicalBlob::new("application/json", &repositories)?;
        tarball::append_bytes(&mut tar, REPOSITORIES_FILE, repositories_json.bytes())?;
    }
    tar.into_inner()
        .map_err(|e| ImageError::io("<docker-archive>", e))
}

/// What one pass over the archive found.
#[derive(Default)]
struct Members {
    /// Regular files ingested into the store, by member name.
    blobs: HashMap<String, Info>,
    /// Links, by member name, to the member they point to.
    links: HashMap<String, String>,
    manifest_json: Option<Vec<u8>>,
}

impl Members {
    /// The blob a member name refers to, following links inside the archive.
    fn resolve(&self, name: &str, referenced_by: &str) -> Result<Option<&Info>> {
        let mut current = tarball::normalize_member(name)?;
        for _ in 0..32 {
            if let Some(info) = self.blobs.get(&current) {
                return Ok(Some(info));
            }
            match self.links.get(&current) {
                Some(target) => current = target.clone(),
                None => return Ok(None),
            }
        }
        Err(ImageError::BadMember {
            member: name.to_owned(),
            reason: format!("too many levels of links (referenced by {referenced_by})"),
        })
    }

    fn require(&self, name: &str, referenced_by: &str) -> Result<&Info> {
        self.resolve(name, referenced_by)?
            .ok_or_else(|| ImageError::BadMember {
                member: name.to_owned(),
                reason: format!("referenced by {referenced_by} but not in the archive"),
            })
    }
}

/// The digest a member's name claims: `<hex>.json` at the top (docker's config files) and
/// `blobs/<alg>/<hex>`.
fn claimed_digest(name: &str) -> Option<Digest> {
    if let Some(hex) = name.strip_suffix(".json")
        && !hex.contains('/')
    {
        return Digest::from_parts(Algorithm::Sha256, hex).ok();
    }
    let rest = name.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    Digest::from_parts(alg.parse().ok()?, hex).ok()
}

/// Whether a member is one of the legacy per-layer files that nothing needs.
fn is_legacy_metadata(name: &str) -> bool {
    matches!(name.rsplit_once('/'), Some((dir, "json" | "VERSION")) if !dir.contains('/'))
}

fn scan<S: Ingester + ?Sized, R: Read>(src: R, store: &S) -> Result<Members> {
    let mut members = Members::default();
    let mut archive = tar::Archive::new(src);
    let entries = archive
        .entries()
        .map_err(|e| ImageError::io("<docker-archive>", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::io("<docker-archive>", e))?;
        let name = tarball::entry_name(&entry)?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            let target = tarball::link_target(&name, &target, kind.is_hard_link())?;
            members.links.insert(name, target);
            continue;
        }
        if !kind.is_file() || name.is_empty() {
            continue;
        }
        match name.as_str() {
            MANIFEST_FILE => members.manifest_json = Some(tarball::read_small(&mut entry, &name)?),
            REPOSITORIES_FILE | "index.json" | "oci-layout" => {}
            _ if is_legacy_metadata(&name) => {}
            _ => {
                let expected = claimed_digest(&name);
                let size = entry.header().size().ok();
                let info =
                    store
                        .ingest(&mut entry, size, expected.as_ref())
                        .map_err(|e| match e {
                            ContentError::DigestMismatch { expected, actual } => {
                                ImageError::BlobMismatch {
                                    path: name.clone().into(),
                                    expected,
                                    actual,
                                }
                            }
                            e => ImageError::content(&name, e),
                        })?;
                members.blobs.insert(name, info);
            }
        }
    }
    Ok(members)
}

/// Reads a docker-archive from `src` into `store` and returns its images. See the module docs.
pub fn read<S: Provider + Ingester + ?Sized, R: Read>(
    src: R,
    store: &S,
) -> Result<Vec<LoadedImage>> {
    let members = scan(src, store)?;
    let manifest_json =
        members
            .manifest_json
            .as_deref()
            .ok_or_else(|| ImageError::MissingFile {
                path: MANIFEST_FILE.into(),
            })?;
    let entries: Vec<ManifestEntry> =
        serde_json::from_slice(manifest_json).map_err(|e| ImageError::json(MANIFEST_FILE, e))?;

    // diff_id checks already done, by layer digest.
    let mut verified: HashMap<Digest, Digest> = HashMap::new();
    let mut images = Vec::with_capacity(entries.len());
    for entry in entries {
        let config_info = members.require(&entry.config, MANIFEST_FILE)?;
        let config_bytes = store
            .read_all(&config_info.digest)
            .map_err(|e| ImageError::content(&entry.config, e))?;
        let config = ImageConfig::from_slice(&config_bytes, &entry.config)?;
        let diff_ids = config.diff_ids().to_vec();
        if diff_ids.len() != entry.layers.len() {
            return Err(ImageError::LayerCount {
                what: format!("{MANIFEST_FILE} entry for {}", entry.config),
                diff_ids: diff_ids.len(),
                layers: entry.layers.len(),
            });
        }

        let mut layers = Vec::with_capacity(diff_ids.len());
        for (member, diff_id) in entry.layers.iter().zip(&diff_ids) {
            let referenced_by = format!("{MANIFEST_FILE} entry for {}", entry.config);
            let Some(info) = members.resolve(member, &referenced_by)? else {
                // A foreign layer that the archive only describes.
                if let Some(source) = entry.layer_sources.as_ref().and_then(|s| s.get(diff_id)) {
                    let mut d = source.to_oci();
                    if source.media_type == media::DOCKER_LAYER_FOREIGN_GZIP {
                        d.set_media_type(MediaType::from(media::OCI_LAYER_NONDIST_GZIP));
                    }
                    layers.push(d);
                    continue;
                }
                return Err(ImageError::BadMember {
                    member: member.clone(),
                    reason: format!("referenced by {referenced_by} but not in the archive"),
                });
            };
            let compression = sniff_blob(store, &info.digest)?;
            if verified.get(&info.digest) != Some(diff_id) {
                let actual = if compression == Compression::None
                    && info.digest.algorithm() == diff_id.algorithm()
                {
                    info.digest.clone()
                } else {
                    diff_id_of(store, &info.digest, compression, diff_id.algorithm())?.0
                };
                if &actual != diff_id {
                    return Err(ImageError::DiffIdMismatch {
                        member: member.clone(),
                        expected: diff_id.clone(),
                        actual,
                    });
                }
                verified.insert(info.digest.clone(), diff_id.clone());
            }
            layers.push(new_descriptor(
                compression.oci_layer_media_type(),
                &info.digest,
                info.size,
            ));
        }

        let config_desc = new_descriptor(media::OCI_CONFIG, &config_info.digest, config_info.size);
        let image_manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_desc.clone())
            .layers(layers)
            .build()
            .map_err(|e| ImageError::Invalid {
                what: format!("{MANIFEST_FILE} entry for {}", entry.config),
                reason: e.to_string(),
            })?;
        let manifest = CanonicalBlob::new(media::OCI_MANIFEST, &image_manifest)?.ingest(store)?;
        images.push(LoadedImage {
            repo_tags: entry.repo_tags,
            manifest,
            image_manifest,
            config: config_desc,
            diff_ids,
        });
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::docker::DockerManifest;
    use crate::image::layout;
    use crate::image::testutil::{MemoryStore, sample_image};

    fn members_of(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, data)
            })
            .collect()
    }

    #[test]
    fn round_trip_decompresses_layers() {
        let store = MemoryStore::new();
        let image = sample_image(&store, &[b"base", b"top"]);
        let archive = write(
            &store,
            &[ArchiveImage {
                manifest: image.manifest.clone(),
                repo_tags: vec!["example.com/app".into(), "app:1.0".into()],
            }],
            Vec::new(),
        )
        .unwrap();

        let members = members_of(&archive);
        let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
        let config_name = format!("{}.json", descriptor_digest(&image.config).unwrap().hex());
        assert!(names.contains(&config_name.as_str()));
        for diff_id in &image.diff_ids {
            let (_, data) = members
                .iter()
                .find(|(n, _)| *n == format!("{}/layer.tar", diff_id.hex()))
                .unwrap();
            assert_eq!(&Digest::sha256(data), diff_id);
        }
        let manifest_json = &members.iter().find(|(n, _)| n == MANIFEST_FILE).unwrap().1;
        let entries: Vec<ManifestEntry> = serde_json::from_slice(manifest_json).unwrap();
        assert_eq!(entries[0].repo_tags, ["example.com/app:latest", "app:1.0"]);
        assert!(
            std::str::from_utf8(manifest_json)
                .unwrap()
                .starts_with(r#"[{"Config":""#)
        );
        let repositories = &members
            .iter()
            .find(|(n, _)| n == REPOSITORIES_FILE)
            .unwrap()
            .1;
        let repositories: serde_json::Value = serde_json::from_slice(repositories).unwrap();
        assert_eq!(repositories["app"]["1.0"], image.diff_ids[1].hex());

        let other = MemoryStore::new();
        let loaded = read(&archive[..], &other).unwrap();
        assert_eq!(loaded.len(), 1);
        let l = &loaded[0];
        assert_eq!(l.config.digest(), image.config.digest());
        assert_eq!(l.diff_ids, image.diff_ids);
        assert_eq!(l.repo_tags, ["example.com/app:latest", "app:1.0"]);
        for (layer, diff_id) in l.image_manifest.layers().iter().zip(&image.diff_ids) {
            assert_eq!(layer.media_type().to_string(), media::OCI_LAYER_TAR);
            assert_eq!(&descriptor_digest(layer).unwrap(), diff_id);
        }
        let (m, _) = Manifest::read(&other, &l.manifest).unwrap();
        assert_eq!(m.layers().len(), 2);
    }

    #[test]
    fn writes_zstd_and_uncompressed_layers_uncompressed() {
        let store = MemoryStore::new();
        let tars = [
            crate::image::testutil::layer_tar(b"zstd layer"),
            crate::image::testutil::layer_tar(b"plain layer"),
        ];
        let zstd_blob = zstd::encode_all(&tars[0][..], 3).unwrap();
        let mut layers = Vec::new();
        for (data, media_type) in [
            (&zstd_blob, media::OCI_LAYER_ZSTD),
            (&tars[1], media::OCI_LAYER_TAR),
        ] {
            let info = store.ingest_bytes(data).unwrap();
            layers.push(new_descriptor(media_type, &info.digest, info.size));
        }
        let mut config = ImageConfig::new("linux", "amd64");
        config.rootfs.diff_ids = tars.iter().map(|t| Digest::sha256(t)).collect();
        let config = config
            .to_blob(media::OCI_CONFIG)
            .unwrap()
            .ingest(&store)
            .unwrap();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .config(config)
            .layers(layers)
            .build()
            .unwrap();
        let manifest = CanonicalBlob::new(media::OCI_MANIFEST, &manifest)
            .unwrap()
            .ingest(&store)
            .unwrap();
        let archive = write(
            &store,
            &[ArchiveImage {
                manifest,
                repo_tags: vec!["z:1".into()],
            }],
            Vec::new(),
        )
        .unwrap();
        let members = members_of(&archive);
        for tar in &tars {
            let name = format!("{}/layer.tar", Digest::sha256(tar).hex());
            let (_, data) = members.iter().find(|(n, _)| *n == name).unwrap();
            assert_eq!(data, tar);
        }
        let loaded = read(&archive[..], &MemoryStore::new()).unwrap();
        assert_eq!(loaded[0].image_manifest.layers().len(), 2);
    }

    #[test]
    fn writes_from_a_docker_manifest_and_shares_layers() {
        let store = MemoryStore::new();
        let image = sample_image(&store, &[b"shared"]);
        let (oci, _) = Manifest::read(&store, &image.manifest).unwrap();
        let Manifest::Oci(oci) = oci else { panic!() };
        let docker = DockerManifest::from_oci(&oci).unwrap();
        let docker_desc = docker.to_blob().unwrap().ingest(&store).unwrap();
        let archive = write(
            &store,
            &[
                ArchiveImage {
                    manifest: image.manifest.clone(),
                    repo_tags: vec!["a:1".into()],
                },
                ArchiveImage {
                    manifest: docker_desc,
                    repo_tags: vec!["b:2".into()],
                },
            ],
            Vec::new(),
        )
        .unwrap();
        let layer_members = members_of(&archive)
            .iter()
            .filter(|(n, _)| n.ends_with("layer.tar"))
            .count();
        assert_eq!(layer_members, 1);
        let loaded = read(&archive[..], &MemoryStore::new()).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].manifest, loaded[1].manifest);
    }

    #[test]
    fn refuses_bad_inputs_when_writing() {
        let store = MemoryStore::new();
        let image = sample_image(&store, &[b"x"]);
        let bad_tag = ArchiveImage {
            manifest: image.manifest.clone(),
            repo_tags: vec!["app@sha256:abc".into()],
        };
        assert!(matches!(
            write(&store, &[bad_tag], Vec::new()),
            Err(ImageError::Invalid { .. })
        ));
        // A manifest whose layer is not the one the config's diff_id names.
        let other = sample_image(&store, &[b"y"]);
        let (m, _) = Manifest::read(&store, &image.manifest).unwrap();
        let Manifest::Oci(mut m) = m else { panic!() };
        m.set_layers(other.layers.clone());
        let mixed = CanonicalBlob::new(media::OCI_MANIFEST, &m)
            .unwrap()
            .ingest(&store)
            .unwrap();
        let mixed = ArchiveImage {
            manifest: mixed,
            repo_tags: vec![],
        };
        match write(&store, &[mixed], Vec::new()) {
            Err(ImageError::DiffIdMismatch {
                expected, actual, ..
            }) => {
                assert_eq!(expected, image.diff_ids[0]);
                assert_eq!(actual, other.diff_ids[0]);
            }
            other => panic!("{other:?}"),
        }
        // An index cannot be written.
        let index = oci_spec::image::ImageIndexBuilder::default()
            .schema_version(2u32)
            .manifests(vec![image.manifest.clone()])
            .build()
            .unwrap();
        let index = CanonicalBlob::new(media::OCI_INDEX, &index)
            .unwrap()
            .ingest(&store)
            .unwrap();
        assert!(matches!(
            write(
                &store,
                &[ArchiveImage {
                    manifest: index,
                    repo_tags: vec![]
                }],
                Vec::new()
            ),
            Err(ImageError::Invalid { .. })
        ));
    }

    /// A member for [`build_tar`].
    enum M<'a> {
        File(&'a str, &'a [u8]),
        Link(&'a str, &'a str),
    }

    /// Builds a tar from members, writing unsafe names as they are.
    fn build_tar(members: &[M<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for member in members {
            let mut h = tar::Header::new_gnu();
            match member {
                M::File(name, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    h.set_mode(0o644);
                    if name.contains("..") || name.starts_with('/') {
                        let raw = h.as_old_mut();
                        raw.name[..name.len()].copy_from_slice(name.as_bytes());
                        h.set_cksum();
                        b.append(&h, *data).unwrap();
                    } else {
                        b.append_data(&mut h, name, *data).unwrap();
                    }
                }
                M::Link(name, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, name, target).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn reads_skopeo_layout_with_symlinks() {
        let store = MemoryStore::new();
        let image = sample_image(&store, &[b"skopeo"]);
        let config = store
            .read_all(&descriptor_digest(&image.config).unwrap())
            .unwrap();
        let config_name = format!("{}.json", descriptor_digest(&image.config).unwrap().hex());
        let layer_tar = image.layer_tars[0].clone();
        let layer_name = format!("{}.tar", image.diff_ids[0].hex());
        let manifest = format!(
            r#"[{{"Config":"{config_name}","RepoTags":["docker.io/library/x:9"],"Layers":["{layer_name}"]}}]"#
        );
        let v1 = "713235c55576a7c00d7dfa3aed0ec464f591c766f08ce529456f9f7953288119";
        let link_name = format!("{v1}/layer.tar");
        let link_target = format!("../{layer_name}");
        let manifest_via_link = manifest.replace(&layer_name, &link_name);
        let tar = build_tar(&[
            M::File(&layer_name, &layer_tar),
            M::File(&config_name, &config),
            M::Link(&link_name, &link_target),
            M::File(&format!("{v1}/VERSION"), b"1.0"),
            M::File(&format!("{v1}/json"), b"{}"),
            M::File("manifest.json", manifest_via_link.as_bytes()),
        ]);
        let loaded = read(&tar[..], &MemoryStore::new()).unwrap();
        assert_eq!(loaded[0].diff_ids, image.diff_ids);
        assert_eq!(loaded[0].repo_tags, ["docker.io/library/x:9"]);

        // A link that climbs out of the archive.
        let escaping = build_tar(&[
            M::Link(&link_name, "../../etc/passwd"),
            M::File("manifest.json", manifest.as_bytes()),
        ]);
        match read(&escaping[..], &MemoryStore::new()) {
            Err(ImageError::UnsafePath { member }) => assert!(member.starts_with(&link_name)),
            other => panic!("{other:?}"),
        }
        // A member that does.
        let escaping = build_tar(&[M::File("../evil.json", b"{}")]);
        assert!(matches!(
            read(&escaping[..], &MemoryStore::new()),
            Err(ImageError::UnsafePath { member }) if member == "../evil.json"
        ));
        // manifest.json naming a path outside.
        let outside = manifest.replace(&layer_name, "../x.tar");
        let tar = build_tar(&[
            M::File(&config_name, &config),
            M::File("manifest.json", outside.as_bytes()),
        ]);
        assert!(matches!(
            read(&tar[..], &MemoryStore::new()),
            Err(ImageError::UnsafePath { .. })
        ));
        // A missing layer names the member.
        let tar = build_tar(&[
            M::File(&config_name, &config),
            M::File("manifest.json", manifest.as_bytes()),
        ]);
        match read(&tar[..], &MemoryStore::new()) {
            Err(ImageError::BadMember { member, .. }) => assert_eq!(member, layer_name),
            other => panic!("{other:?}"),
        }
        // A config whose content does not match its name.
        let tar = build_tar(&[
            M::File(&config_name, b"{}"),
            M::File("manifest.json", manifest.as_bytes()),
        ]);
        assert!(matches!(
            read(&tar[..], &MemoryStore::new()),
            Err(ImageError::BlobMismatch { path, .. }) if path == std::path::Path::new(&config_name)
        ));
        // A layer that is not what the config says.
        let tar = build_tar(&[
            M::File(&layer_name, b"garbage"),
            M::File(&config_name, &config),
            M::File("manifest.json", manifest.as_bytes()),
        ]);
        match read(&tar[..], &MemoryStore::new()) {
            Err(ImageError::DiffIdMismatch { member, .. }) => assert_eq!(member, layer_name),
            other => panic!("{other:?}"),
        }
        // No manifest.json.
        let tar = build_tar(&[M::File(&config_name, &config)]);
        assert!(matches!(
            read(&tar[..], &MemoryStore::new()),
            Err(ImageError::MissingFile { .. })
        ));
    }

    /// The layout docker 25 and later write: an OCI layout with manifest.json beside it.
    #[test]
    fn reads_docker_25_oci_layout_variant() {
        let store = MemoryStore::new();
        let image = sample_image(&store, &[b"gz-layer"]);
        // docker 25 keeps a compressed layer as it is when the image store has it so.
        let mut tar = tar::Builder::new(Vec::new());
        let oci = layout::export_tar(
            &store,
            &[(Some("latest".into()), image.manifest.clone())],
            Vec::new(),
        )
        .unwrap();
        for (name, data) in members_of(&oci) {
            if name.ends_with('/') {
                continue;
            }
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, &name, &data[..]).unwrap();
        }
        let layer = descriptor_digest(&image.layers[0]).unwrap();
        let manifest = format!(
            r#"[{{"Config":"blobs/sha256/{}","RepoTags":["busybox:latest"],"Layers":["blobs/sha256/{}"],"LayerSources":{{"{}":{{"mediaType":"{}","size":{},"digest":"{}"}}}}}}]"#,
            descriptor_digest(&image.config).unwrap().hex(),
            layer.hex(),
            image.diff_ids[0],
            media::OCI_LAYER_GZIP,
            image.layers[0].size(),
            layer,
        );
        let mut h = tar::Header::new_gnu();
        h.set_size(manifest.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, MANIFEST_FILE, manifest.as_bytes())
            .unwrap();
        let bytes = tar.into_inner().unwrap();

        let other = MemoryStore::new();
        let loaded = read(&bytes[..], &other).unwrap();
        assert_eq!(loaded[0].repo_tags, ["busybox:latest"]);
        assert_eq!(loaded[0].config.digest(), image.config.digest());
        let layer_desc = &loaded[0].image_manifest.layers()[0];
        assert_eq!(layer_desc.media_type().to_string(), media::OCI_LAYER_GZIP);
        assert_eq!(descriptor_digest(layer_desc).unwrap(), layer);
        // The same archive is a valid OCI layout too.
        let entries = layout::import_tar(&bytes[..], &MemoryStore::new()).unwrap();
        assert_eq!(entries[0].0.as_deref(), Some("latest"));
    }

    #[test]
    fn splits_repo_tags() {
        let s = |n: &str| split_repo_tag(n).unwrap();
        assert_eq!(s("app"), ("app".into(), "latest".into()));
        assert_eq!(s("app:1"), ("app".into(), "1".into()));
        assert_eq!(
            s("localhost:5000/app"),
            ("localhost:5000/app".into(), "latest".into())
        );
        assert_eq!(
            s("localhost:5000/app:v2"),
            ("localhost:5000/app".into(), "v2".into())
        );
        assert!(split_repo_tag("app:").is_err());
        assert!(split_repo_tag("").is_err());
    }
}
