//! The build cache: what each step made, by a key over everything the step depends on.
//!
//! # Keys
//! A step's [`CacheKey`] is a SHA-256 over:
//! - the key of what it builds on: the previous step's, or its stage's base (`scratch` and the
//!   platform; an image's config digest; a stage's last key);
//! - the step's [`StepId`](crate::graph::StepId): the instruction after expansion, with the
//!   build arguments and environment it can see (see [`crate::graph`]);
//! - the keys of the stages it reads from (`COPY --from`, `RUN --mount=from=`), the config
//!   digests of the images it reads from;
//! - for what it reads from the build context (`COPY`, `ADD`, `RUN --mount=type=bind`), a
//!   checksum of the selected files: path, type, mode, owner, link target, xattrs and content,
//!   never mtimes (as BuildKit's content checksums).
//!
//! A step that cannot be keyed before it runs (`ADD` of a URL without `--checksum`) always
//! runs; the steps after it are keyed on its result (its layer's diff_id), so that they can
//! still hit.
//!
//! # Records
//! A [`Record`] is the stage's state after the step: the image config (history included), the
//! layer descriptors, and what the solver tracks beside them (`SHELL`, whether a `CMD` was
//! set, the `ARG`s declared). A hit takes that state as is, so a rebuild gives the same config
//! and the same image digest.
//!
//! [`LocalCache`] keeps records as pins of the image store (set [`PIN_SET`]): the record's
//! layers land in the store with it and gc keeps them, whatever images are removed. A hit is
//! checked before use: every layer must be in the store with its size, else it is a miss with
//! a warning. A record that does not parse is a miss with a warning too, and is replaced when
//! the step has run.
//!
//! [`CacheSource`] is what an imported cache (`--cache-from`) offers: records by key, and
//! their layers fetched into the build's staging area (verified against their digests).

use std::fmt;
use std::sync::Arc;

use berth_layerstore::content::Provider;
use berth_layerstore::image::store::{ImageStore, Staging};
use berth_layerstore::image::{Descriptor, ImageConfig, descriptor_digest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The pin set of the local cache's records in the image store.
pub const PIN_SET: &str = "build-cache";

/// The top-level field of an image config that holds the records of an inline cache
/// (`--cache-to type=inline`). A stage built on such an image does not inherit it.
pub const INLINE_KEY: &str = "berth.build.cache.v1";

/// The version of [`Record`]s and keys; a change in either starts a new cache.
pub const CACHE_VERSION: u32 = 1;

/// The key of a step's result.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The digest in lower-case hex, 64 characters.
    pub fn hex(&self) -> String {
        use fmt::Write;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// Parses [`hex`](Self::hex) back.
    pub fn from_hex(hex: &str) -> Option<CacheKey> {
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(CacheKey(out))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// Builds a [`CacheKey`]: every field is tagged and length-prefixed, so that no two sequences
/// of fields hash alike.
pub struct KeyHasher(Sha256);

impl KeyHasher {
    /// A hasher for keys of the kind `domain` (`step`, `base`, ...).
    pub fn new(domain: &str) -> Self {
        let mut h = KeyHasher(Sha256::new());
        h.str(&format!("berth.cache.v{CACHE_VERSION}"));
        h.str(domain);
        h
    }

    fn field(&mut self, tag: u8, bytes: &[u8]) {
        self.0.update([tag]);
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    /// Adds a string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.field(b's', s.as_bytes());
        self
    }

    /// Adds raw bytes (a digest).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.field(b'b', b);
        self
    }

    /// Adds another key.
    pub fn key(&mut self, k: &CacheKey) -> &mut Self {
        self.field(b'k', &k.0);
        self
    }

    /// The key.
    pub fn finish(self) -> CacheKey {
        CacheKey(self.0.finalize().into())
    }
}

/// A stage's state after a step, as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// [`CACHE_VERSION`].
    pub version: u32,
    /// The image config, history included.
    pub config: ImageConfig,
    /// The layers, in the order of `config.rootfs.diff_ids`.
    pub layers: Vec<Descriptor>,
    /// The stage's `SHELL`.
    #[serde(default)]
    pub shell: Vec<String>,
    /// Whether the stage set a `CMD`.
    #[serde(default)]
    pub cmd_set: bool,
    /// The `ARG`s the stage declared.
    #[serde(default)]
    pub build_args: Vec<String>,
}

impl Record {
    /// Why the record cannot be used, if it cannot: another version, or layers that do not
    /// match the diff_ids.
    pub fn check(&self) -> Result<(), String> {
        if self.version != CACHE_VERSION {
            return Err(format!("cache record version {}", self.version));
        }
        if self.layers.len() != self.config.rootfs.diff_ids.len() {
            return Err(format!(
                "{} layers for {} diff_ids",
                self.layers.len(),
                self.config.rootfs.diff_ids.len()
            ));
        }
        Ok(())
    }
}

/// Records kept in the local image store. See the module docs.
#[derive(Debug, Clone)]
pub struct LocalCache {
    store: ImageStore,
}

impl LocalCache {
    /// The cache of `store`.
    pub fn new(store: &ImageStore) -> Self {
        LocalCache {
            store: store.clone(),
        }
    }

    /// The record of `key` if there is a usable one. `Err` says why a record that exists
    /// cannot be used (damaged, or its layers are gone): a miss to warn about.
    pub fn get(&self, key: &CacheKey) -> Result<Option<Record>, String> {
        let Some((data, _)) = self
            .store
            .read_pin(PIN_SET, &key.hex())
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let record: Record =
            serde_json::from_value(data).map_err(|e| format!("cache record {}: {e}", key.hex()))?;
        record
            .check()
            .map_err(|e| format!("cache record {}: {e}", key.hex()))?;
        for layer in &record.layers {
            let digest = descriptor_digest(layer).map_err(|e| e.to_string())?;
            match self.store.content().info(&digest) {
                Ok(info) if info.size == layer.size() => {}
                Ok(info) => {
                    return Err(format!(
                        "cache record {}: layer {digest} has {} bytes, not {}",
                        key.hex(),
                        info.size,
                        layer.size()
                    ));
                }
                Err(e) => {
                    return Err(format!("cache record {}: layer {digest}: {e}", key.hex()));
                }
            }
        }
        Ok(Some(record))
    }

    /// Records `record` under `key`, landing its layers from `staging`.
    pub fn put(&self, staging: &Staging, key: &CacheKey, record: &Record) -> Result<(), String> {
        let data = serde_json::to_value(record).map_err(|e| e.to_string())?;
        self.store
            .pin(staging, PIN_SET, &key.hex(), &record.layers, &data)
            .map_err(|e| format!("recording cache {}: {e}", key.hex()))
    }
}

/// An imported cache (`--cache-from`). See the module docs.
pub trait CacheSource: Send + Sync + fmt::Debug {
    /// What the cache is, for messages: `type=registry,ref=…`.
    fn describe(&self) -> String;

    /// The record of `key`, if the cache has one.
    fn lookup(&self, key: &CacheKey) -> Option<Record>;

    /// Fetches `layer` into `staging`, verified against its digest.
    fn fetch(&self, layer: &Descriptor, staging: &Staging) -> Result<(), String>;
}

/// Imported caches, shared by the threads of a build.
pub type CacheSources = Vec<Arc<dyn CacheSource>>;

/// A record the build used or made, for `--cache-to`.
#[derive(Debug, Clone)]
pub struct UsedRecord {
    /// The step's key.
    pub key: CacheKey,
    /// What it made.
    pub record: Record,
    /// The stage it belongs to.
    pub stage: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_and_parse_as_hex() {
        let mut h = KeyHasher::new("step");
        h.str("RUN true");
        let k = h.finish();
        assert_eq!(CacheKey::from_hex(&k.hex()), Some(k));
        assert_eq!(k.to_string(), format!("sha256:{}", k.hex()));
        assert_eq!(CacheKey::from_hex("zz"), None);
    }

    #[test]
    fn fields_do_not_run_into_each_other() {
        let key = |parts: &[&str]| {
            let mut h = KeyHasher::new("step");
            for p in parts {
                h.str(p);
            }
            h.finish()
        };
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_ne!(key(&["a"]), key(&["a", ""]));
        let mut h = KeyHasher::new("base");
        h.str("a");
        assert_ne!(h.finish(), key(&["a"]));
    }
}
