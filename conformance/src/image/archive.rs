//! Reading an image: a docker-archive (`manifest.json` at the top, as `docker save` writes it,
//! whether the layers are `<id>/layer.tar` or `blobs/sha256/<hex>`) or an OCI image layout
//! (`oci-layout` + `index.json` + `blobs/`), as a directory or as a tar of one. Blobs are
//! checked against their digests and layers against their `diff_id`s.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::ImageError;
use super::fs::Filesystem;

/// One image: its config and its layers, uncompressed, bottom first.
#[derive(Debug, Clone)]
pub struct Image {
    /// The image config as JSON.
    pub config: Value,
    /// Each layer's uncompressed tar stream, bottom first.
    pub layers: Vec<Vec<u8>>,
}

/// The members of an image archive or directory.
enum Source {
    Dir(PathBuf),
    Tar(HashMap<String, Vec<u8>>),
}

impl Source {
    fn open(path: &Path) -> Result<Source, ImageError> {
        if path.is_dir() {
            return Ok(Source::Dir(path.to_path_buf()));
        }
        let io = |source| ImageError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut archive = tar::Archive::new(std::io::BufReader::new(file));
        let mut members = HashMap::new();
        // `docker save` writes a layer that another layer already holds as a symlink to it.
        let mut links = Vec::new();
        for entry in archive.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            let name = clean(&String::from_utf8_lossy(&entry.path_bytes()));
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut data = Vec::with_capacity(entry.size() as usize);
                    entry.read_to_end(&mut data).map_err(io)?;
                    members.insert(name, data);
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned());
                    if let Some(target) = target {
                        links.push((name, target));
                    }
                }
                _ => {}
            }
        }
        for (name, target) in links {
            let resolved = resolve_member(&name, &target);
            if let Some(data) = members.get(&resolved).cloned() {
                members.insert(name, data);
            }
        }
        Ok(Source::Tar(members))
    }

    fn exists(&self, name: &str) -> bool {
        match self {
            Source::Dir(dir) => dir.join(name).is_file(),
            Source::Tar(members) => members.contains_key(&clean(name)),
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        match self {
            Source::Dir(dir) => std::fs::read(dir.join(name)).map_err(|source| ImageError::Io {
                path: dir.join(name).display().to_string(),
                source,
            }),
            Source::Tar(members) => members
                .get(&clean(name))
                .cloned()
                .ok_or_else(|| ImageError::Malformed(format!("the archive has no {name}"))),
        }
    }

    fn json(&self, name: &str) -> Result<Value, ImageError> {
        serde_json::from_slice(&self.read(name)?)
            .map_err(|e| ImageError::Malformed(format!("{name} is not JSON: {e}")))
    }

    /// The blob named by `digest`, checked against it.
    fn blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let Some(("sha256", hex)) = digest.split_once(':') else {
            return Err(ImageError::Malformed(format!(
                "unsupported digest {digest:?}"
            )));
        };
        let data = self.read(&format!("blobs/sha256/{hex}"))?;
        let actual = sha256(&data);
        if actual != digest {
            return Err(ImageError::Digest {
                what: format!("blob {digest}"),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(data)
    }
}

/// An archive member name without `./` or a leading `/`.
fn clean(name: &str) -> String {
    let mut name = name;
    loop {
        if let Some(rest) = name.strip_prefix("./") {
            name = rest;
        } else if let Some(rest) = name.strip_prefix('/') {
            name = rest;
        } else {
            return name.to_string();
        }
    }
}

/// The member a symlink at `name` pointing to `target` names: relative targets resolve from the
/// link's directory.
fn resolve_member(name: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        name.split('/').collect()
    };
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// A layer blob, decompressed according to its leading bytes (gzip, zstd or plain tar).
fn decompress(data: Vec<u8>, what: &str) -> Result<Vec<u8>, ImageError> {
    let io = |source| ImageError::Io {
        path: what.to_string(),
        source,
    };
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&data[..])
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::decode_all(&data[..]).map_err(io)
    } else {
        Ok(data)
    }
}

fn str_field<'a>(value: &'a Value, field: &str, what: &str) -> Result<&'a str, ImageError> {
    value[field]
        .as_str()
        .ok_or_else(|| ImageError::Malformed(format!("{what} has no string {field:?}")))
}

impl Image {
    /// Reads the image at `path`: a docker-archive tar, or an OCI layout directory or tar. A
    /// docker-archive holding several images yields the first; an OCI index yields its first
    /// manifest (its `linux/amd64` one when it is an index of platforms).
    pub fn open(path: &Path) -> Result<Image, ImageError> {
        let source = Source::open(path)?;
        let image = if source.exists("manifest.json") {
            Image::docker_archive(&source)?
        } else if source.exists("index.json") {
            Image::oci_layout(&source)?
        } else {
            return Err(ImageError::Malformed(format!(
                "{} holds neither manifest.json nor index.json",
                path.display()
            )));
        };
        image.check_diff_ids()?;
        Ok(image)
    }

    fn docker_archive(source: &Source) -> Result<Image, ImageError> {
        let manifest = source.json("manifest.json")?;
        let first = manifest
            .as_array()
            .and_then(|images| images.first())
            .ok_or_else(|| ImageError::Malformed("manifest.json lists no image".into()))?;
        let config_name = str_field(first, "Config", "manifest.json")?;
        let config = source.json(config_name)?;
        let mut layers = Vec::new();
        for name in first["Layers"].as_array().into_iter().flatten() {
            let name = name
                .as_str()
                .ok_or_else(|| ImageError::Malformed("a layer name is not a string".into()))?;
            layers.push(decompress(source.read(name)?, name)?);
        }
        Ok(Image { config, layers })
    }

    fn oci_layout(source: &Source) -> Result<Image, ImageError> {
        let index = source.json("index.json")?;
        let mut descriptor = first_manifest(&index, "index.json")?.clone();
        // Indexes nest: follow them down to an image manifest.
        for _ in 0..8 {
            let media_type = descriptor["mediaType"].as_str().unwrap_or_default();
            let digest = str_field(&descriptor, "digest", "a descriptor")?;
            let blob = source.blob(digest)?;
            let document: Value = serde_json::from_slice(&blob)
                .map_err(|e| ImageError::Malformed(format!("{digest} is not JSON: {e}")))?;
            let is_index = media_type.ends_with("image.index.v1+json")
                || media_type.ends_with("manifest.list.v2+json")
                || document.get("manifests").is_some();
            if is_index {
                descriptor = first_manifest(&document, digest)?.clone();
                continue;
            }
            let config_digest = str_field(&document["config"], "digest", "the manifest config")?;
            let config: Value = serde_json::from_slice(&source.blob(config_digest)?)
                .map_err(|e| ImageError::Malformed(format!("the config is not JSON: {e}")))?;
            let mut layers = Vec::new();
            for layer in document["layers"].as_array().into_iter().flatten() {
                let digest = str_field(layer, "digest", "a layer descriptor")?;
                layers.push(decompress(source.blob(digest)?, digest)?);
            }
            return Ok(Image { config, layers });
        }
        Err(ImageError::Malformed("indexes nest too deep".into()))
    }

    /// Checks that the config lists one `diff_id` per layer and that each is the sha256 of the
    /// layer's uncompressed bytes, as `docker load` does.
    fn check_diff_ids(&self) -> Result<(), ImageError> {
        let diff_ids = self.config["rootfs"]["diff_ids"]
            .as_array()
            .ok_or_else(|| ImageError::Malformed("the config has no rootfs.diff_ids".into()))?;
        if diff_ids.len() != self.layers.len() {
            return Err(ImageError::Malformed(format!(
                "the config lists {} diff_ids for {} layers",
                diff_ids.len(),
                self.layers.len()
            )));
        }
        for (i, (diff_id, layer)) in diff_ids.iter().zip(&self.layers).enumerate() {
            let actual = sha256(layer);
            if diff_id.as_str() != Some(actual.as_str()) {
                return Err(ImageError::Digest {
                    what: format!("layer {i}"),
                    expected: diff_id.to_string(),
                    actual,
                });
            }
        }
        Ok(())
    }

    /// The filesystem the layers make, applied bottom to top.
    pub fn filesystem(&self) -> Result<Filesystem, ImageError> {
        Filesystem::from_layers(&self.layers)
    }
}

/// The first manifest of an index, preferring `linux/amd64` when entries name platforms.
fn first_manifest<'a>(index: &'a Value, what: &str) -> Result<&'a Value, ImageError> {
    let manifests = index["manifests"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ImageError::Malformed(format!("{what} lists no manifest")))?;
    Ok(manifests
        .iter()
        .find(|m| {
            m["platform"]["os"].as_str() == Some("linux")
                && m["platform"]["architecture"].as_str() == Some("amd64")
        })
        .unwrap_or(&manifests[0]))
}
