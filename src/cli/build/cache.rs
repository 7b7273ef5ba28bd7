//! `--cache-to` and `--cache-from`: the build cache (see `berth_builder::cache`) exported to a
//! registry, an OCI layout directory or the image itself, and imported from them, with the
//! specs buildx takes.
//!
//! # Specs
//! CSV fields, as `--output` takes them:
//! - `type=registry,ref=REF[,mode=min|max]`: an artifact in the registry at `REF`; a bare
//!   `REF` (no `=`) is `type=registry,ref=REF`. As a source, `REF` may also name an image
//!   built with `--cache-to type=inline`;
//! - `type=local,dest=DIR[,mode=min|max][,tag=T]` / `type=local,src=DIR[,tag=T]`: the same
//!   artifact in an OCI image layout at `DIR`, named `T` (`latest`) in its `index.json`;
//! - `type=inline` (export only): the records in the image's own config.
//!
//! `mode=min` (the default) exports the records of the target stage's steps, `mode=max` those
//! of every stage the build ran. `ignore-error=true` makes a failed export a warning.
//! `registry.insecure=true` lets the cache's registry be plain HTTP or unverified HTTPS, as
//! `--insecure-registry` does.
//!
//! # Format
//! An OCI image manifest (`application/vnd.oci.image.manifest.v1+json`) with the
//! `artifactType` [`ARTIFACT_TYPE`]. Its config (media type [`CONFIG_MEDIA_TYPE`]) is
//! `{"version":1,"records":[{"key":"<hex>","record":{…}}]}`: each step's cache key and the
//! stage's state after it (`berth_builder::cache::Record`), sorted by key. Its `layers` are
//! every distinct layer the records name, so the registry keeps them and they can be fetched
//! from the same repository or layout. The inline form puts the same object in the image
//! config's top-level field [`INLINE_KEY`], as BuildKit puts its own under
//! `moby.buildkit.cache.v0`.
//!
//! # Import
//! Before the build, each source's manifest and config are read and its records indexed by
//! key. A source that cannot be read (not found, unreachable, not a cache, a config that does
//! not parse, another version) is skipped with a warning, and the build goes on. The solver
//! asks the sources for the keys the local cache lacks; a hit's layers are then fetched one
//! by one into the build's staging area, each checked against its digest and size, and a
//! layer that cannot be fetched makes the step run (the solver warns).
//!
//! # Export
//! After the image is written, before the outputs. A failed export fails the build, naming
//! the cache, unless `ignore-error=true`. A layout is written blobs first and `index.json`
//! last, each by rename, so a failed export leaves the previous index whole. The inline form
//! writes a new config and manifest for the image, records it under the build's names and
//! drops the record of the image the solver wrote, when no name holds it any more.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use berth_builder::cache::{CacheKey, CacheSource, CacheSources, Record, UsedRecord};
use berth_builder::solver::Built;
use berth_layerstore::Digest;
use berth_layerstore::content::fs::FsStore;
use berth_layerstore::content::memory::MemoryStore;
use berth_layerstore::content::{ContentError, Info, Ingester, Provider};
use berth_layerstore::image::manifest::{Manifest, is_manifest_media_type};
use berth_layerstore::image::store::{ImageStore, Staging};
use berth_layerstore::image::{
    CanonicalBlob, Descriptor, ImageConfig, Platform, descriptor_digest, layout, ref_name,
};
use berth_layerstore::media;
use berth_registry::client::progress::no_progress;
use berth_registry::client::{Client, ClientError, PushOptions};
use berth_registry::reference::Reference;

use super::output::csv_fields;
use super::progress::Display;
use super::push::VertexProgress;
use crate::cli::images::parse_name;

/// The `artifactType` of a cache manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.berth.build.cache.v1";
/// The media type of a cache manifest's config: the records.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.berth.build.cache.config.v1+json";
pub use berth_builder::cache::INLINE_KEY;
/// The version of the records' container ([`CacheConfig`]).
pub const FORMAT_VERSION: u32 = 1;
/// The name of the cache in a layout's `index.json` when `tag=` does not give one.
const DEFAULT_TAG: &str = "latest";
/// The largest cache manifest or config read.
const MAX_METADATA: u64 = 64 << 20;

/// `mode=`: which records are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The target stage's steps.
    Min,
    /// Every stage's steps.
    Max,
}

/// Where a cache is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// In a registry, at `reference`.
    Registry {
        reference: Reference,
        /// `registry.insecure=true`.
        insecure: bool,
    },
    /// In the OCI layout at `dir`, named `tag` in its index.
    Local { dir: PathBuf, tag: String },
}

impl Location {
    fn describe(&self, flag: Flag) -> String {
        match (self, flag) {
            (Location::Registry { reference, .. }, _) => {
                format!("type=registry,ref={reference}")
            }
            (Location::Local { dir, .. }, Flag::From) => {
                format!("type=local,src={}", dir.display())
            }
            (Location::Local { dir, .. }, Flag::To) => format!("type=local,dest={}", dir.display()),
        }
    }

    /// The registry host that may be reached without TLS checks, if the spec says so.
    fn insecure_registry(&self) -> Option<&str> {
        match self {
            Location::Registry {
                reference,
                insecure: true,
            } => Some(&reference.registry),
            _ => None,
        }
    }
}

/// A `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub location: Location,
}

impl Import {
    /// Whether reading it needs the registry client.
    pub fn uses_registry(&self) -> bool {
        matches!(self.location, Location::Registry { .. })
    }

    /// See [`Location::insecure_registry`].
    pub fn insecure_registry(&self) -> Option<&str> {
        self.location.insecure_registry()
    }

    /// `type=registry,ref=…` or `type=local,src=…`.
    pub fn describe(&self) -> String {
        self.location.describe(Flag::From)
    }
}

/// Where a `--cache-to` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    To(Location),
    /// Into the image's config.
    Inline,
}

/// A `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub target: Target,
    pub mode: Mode,
    /// `ignore-error=true`: a failed export is a warning.
    pub ignore_error: bool,
}

impl Export {
    /// Whether writing it needs the registry client.
    pub fn uses_registry(&self) -> bool {
        matches!(self.target, Target::To(Location::Registry { .. }))
    }

    /// See [`Location::insecure_registry`].
    pub fn insecure_registry(&self) -> Option<&str> {
        match &self.target {
            Target::To(location) => location.insecure_registry(),
            Target::Inline => None,
        }
    }

    /// `type=registry,ref=…`, `type=local,dest=…` or `type=inline`.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::To(location) => location.describe(Flag::To),
            Target::Inline => "type=inline".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    From,
    To,
}

impl Flag {
    fn name(self) -> &'static str {
        match self {
            Flag::From => "--cache-from",
            Flag::To => "--cache-to",
        }
    }
}

/// The fields of a spec: `type` and the rest, by lower-case key. A value without `=` is a
/// registry reference, as buildx reads it.
fn fields(flag: Flag, spec: &str) -> anyhow::Result<(String, BTreeMap<String, String>)> {
    let name = flag.name();
    if !spec.contains('=') {
        if spec.trim().is_empty() {
            bail!("{name}: the cache spec is empty");
        }
        let attrs = BTreeMap::from([("ref".to_owned(), spec.to_owned())]);
        return Ok(("registry".to_owned(), attrs));
    }
    let mut kind = None;
    let mut attrs = BTreeMap::new();
    for field in csv_fields(spec).with_context(|| name.to_owned())? {
        let Some((key, value)) = field.split_once('=') else {
            bail!("{name} {spec}: invalid value {field:?}: fields are KEY=VALUE");
        };
        match key.trim().to_lowercase().as_str() {
            "type" => kind = Some(value.to_owned()),
            key => {
                attrs.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    let Some(kind) = kind else {
        bail!("{name} {spec}: type is required (registry, local or inline)");
    };
    Ok((kind, attrs))
}

/// Refuses fields outside `known`.
fn check_fields(
    flag: Flag,
    spec: &str,
    kind: &str,
    attrs: &BTreeMap<String, String>,
    known: &[&str],
) -> anyhow::Result<()> {
    for key in attrs.keys() {
        if !known.contains(&key.as_str()) {
            let takes = if known.is_empty() {
                "no fields".to_owned()
            } else {
                known.join(", ")
            };
            bail!(
                "{} {spec}: unknown field {key:?} for type={kind} (it takes {takes})",
                flag.name()
            );
        }
    }
    Ok(())
}

/// Go's `strconv.ParseBool`, for `KEY=VALUE` of `spec`.
fn flag_value(
    flag: Flag,
    spec: &str,
    attrs: &BTreeMap<String, String>,
    key: &str,
) -> anyhow::Result<bool> {
    match attrs.get(key).map(String::as_str) {
        None => Ok(false),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
        Some(other) => bail!(
            "{} {spec}: {key}={other}: not a boolean (true or false)",
            flag.name()
        ),
    }
}

/// BuildKit's fields for OCI media types and image manifests: berth always writes both, so
/// they are accepted when true.
fn check_always_true(
    flag: Flag,
    spec: &str,
    attrs: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    for key in ["oci-mediatypes", "image-manifest"] {
        if attrs.contains_key(key) && !flag_value(flag, spec, attrs, key)? {
            bail!(
                "{} {spec}: {key}=false is not supported: the cache is always an OCI image manifest",
                flag.name()
            );
        }
    }
    Ok(())
}

fn registry_location(
    flag: Flag,
    spec: &str,
    attrs: &BTreeMap<String, String>,
) -> anyhow::Result<Location> {
    let Some(given) = attrs.get("ref").filter(|r| !r.is_empty()) else {
        bail!("{} {spec}: ref is required for type=registry", flag.name());
    };
    let (reference, _) = parse_name(given).with_context(|| format!("{} {spec}", flag.name()))?;
    Ok(Location::Registry {
        reference,
        insecure: flag_value(flag, spec, attrs, "registry.insecure")?,
    })
}

fn local_location(
    flag: Flag,
    spec: &str,
    attrs: &BTreeMap<String, String>,
    path_key: &str,
) -> anyhow::Result<Location> {
    let Some(dir) = attrs.get(path_key).filter(|d| !d.is_empty()) else {
        bail!(
            "{} {spec}: {path_key} is required for type=local",
            flag.name()
        );
    };
    let tag = attrs
        .get("tag")
        .cloned()
        .unwrap_or_else(|| DEFAULT_TAG.to_owned());
    if tag.is_empty() {
        bail!("{} {spec}: tag is empty", flag.name());
    }
    Ok(Location::Local {
        dir: PathBuf::from(dir),
        tag,
    })
}

/// Parses one `--cache-from`.
pub fn parse_import(spec: &str) -> anyhow::Result<Import> {
    let flag = Flag::From;
    let (kind, attrs) = fields(flag, spec)?;
    let location = match kind.as_str() {
        "registry" => {
            check_fields(flag, spec, &kind, &attrs, &["ref", "registry.insecure"])?;
            registry_location(flag, spec, &attrs)?
        }
        "local" => {
            check_fields(flag, spec, &kind, &attrs, &["src", "tag"])?;
            local_location(flag, spec, &attrs, "src")?
        }
        "inline" => bail!(
            "--cache-from {spec}: type=inline is for --cache-to; to read the records of an image built with it, use type=registry,ref=IMAGE"
        ),
        other => bail!("--cache-from {spec}: unknown cache type {other:?}: use registry or local"),
    };
    Ok(Import { location })
}

/// Parses one `--cache-to`.
pub fn parse_export(spec: &str) -> anyhow::Result<Export> {
    let flag = Flag::To;
    let (kind, attrs) = fields(flag, spec)?;
    let known: &[&str] = match kind.as_str() {
        "registry" => &[
            "ref",
            "mode",
            "ignore-error",
            "registry.insecure",
            "oci-mediatypes",
            "image-manifest",
        ],
        "local" => &[
            "dest",
            "mode",
            "tag",
            "ignore-error",
            "oci-mediatypes",
            "image-manifest",
        ],
        "inline" => &["mode"],
        other => {
            bail!("--cache-to {spec}: unknown cache type {other:?}: use registry, local or inline")
        }
    };
    check_fields(flag, spec, &kind, &attrs, known)?;
    check_always_true(flag, spec, &attrs)?;
    let mode = match attrs.get("mode").map(String::as_str) {
        None | Some("min") => Mode::Min,
        Some("max") => Mode::Max,
        Some(other) => bail!("--cache-to {spec}: invalid mode {other:?}: use min or max"),
    };
    let target = match kind.as_str() {
        "registry" => Target::To(registry_location(flag, spec, &attrs)?),
        "local" => Target::To(local_location(flag, spec, &attrs, "dest")?),
        _ => {
            if mode == Mode::Max {
                bail!(
                    "--cache-to {spec}: type=inline supports only mode=min: use type=registry or type=local for mode=max"
                );
            }
            Target::Inline
        }
    };
    Ok(Export {
        target,
        mode,
        ignore_error: flag_value(flag, spec, &attrs, "ignore-error")?,
    })
}

/// The records of a cache, as the config of a cache manifest holds them (and the
/// [`INLINE_KEY`] field of an image config): `{"version":1,"records":[{"key","record"}]}`.
struct CacheConfig;

impl CacheConfig {
    /// The JSON of `records`.
    fn value(records: &[(CacheKey, Record)]) -> anyhow::Result<serde_json::Value> {
        let entries = records
            .iter()
            .map(|(key, record)| {
                Ok(serde_json::json!({
                    "key": key.hex(),
                    "record": serde_json::to_value(record)?,
                }))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(serde_json::json!({ "version": FORMAT_VERSION, "records": entries }))
    }

    /// Parses the records, refusing another version.
    fn parse(value: serde_json::Value) -> Result<HashMap<CacheKey, Record>, String> {
        match value.get("version").map(serde_json::Value::as_u64) {
            Some(Some(v)) if v == u64::from(FORMAT_VERSION) => {}
            Some(Some(v)) => {
                return Err(format!(
                    "cache format version {v} (this berth reads version {FORMAT_VERSION})"
                ));
            }
            _ => return Err("the cache config has no version".to_owned()),
        }
        let serde_json::Value::Object(mut object) = value else {
            return Err("the cache config is not an object".to_owned());
        };
        let Some(serde_json::Value::Array(entries)) = object.remove("records") else {
            return Err("the cache config has no records".to_owned());
        };
        let mut records = HashMap::with_capacity(entries.len());
        for (i, mut entry) in entries.into_iter().enumerate() {
            let key = entry
                .get("key")
                .and_then(serde_json::Value::as_str)
                .and_then(CacheKey::from_hex)
                .ok_or_else(|| format!("the cache config: record {i} has no sha256 key"))?;
            let record: Record = serde_json::from_value(entry["record"].take())
                .map_err(|e| format!("the cache config: record {i}: {e}"))?;
            records.insert(key, record);
        }
        Ok(records)
    }

    fn parse_bytes(bytes: &[u8]) -> Result<HashMap<CacheKey, Record>, String> {
        let value = serde_json::from_slice(bytes).map_err(|e| format!("the cache config: {e}"))?;
        CacheConfig::parse(value)
    }
}

/// The records of a config blob: a cache config, or an image config's inline records.
fn records_of(config: &Descriptor, bytes: &[u8]) -> Result<HashMap<CacheKey, Record>, String> {
    let media_type = config.media_type().to_string();
    match media_type.as_str() {
        CONFIG_MEDIA_TYPE => CacheConfig::parse_bytes(bytes),
        media::OCI_CONFIG | media::DOCKER_CONFIG => {
            let mut image: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| format!("the image config: {e}"))?;
            match image.get_mut(INLINE_KEY).map(serde_json::Value::take) {
                Some(inline) => CacheConfig::parse(inline),
                None => Err("an image without inline cache records (build it with \
                             --cache-to type=inline, or export the cache with --cache-to \
                             type=registry)"
                    .to_owned()),
            }
        }
        other => Err(format!("not a build cache: its config is {other}")),
    }
}

/// A cache read from a registry; layers are fetched from its repository.
#[derive(Debug)]
struct RegistrySource {
    reference: Reference,
    records: HashMap<CacheKey, Record>,
    runtime: tokio::runtime::Handle,
    client: Client,
    /// Set when the registry stopped answering (a transport failure, a server error, after
    /// the client's retries): the source then serves no more records, so that each step does
    /// not wait through the retries again.
    unreachable: AtomicBool,
}

impl CacheSource for RegistrySource {
    fn describe(&self) -> String {
        format!("type=registry,ref={}", self.reference)
    }

    fn lookup(&self, key: &CacheKey) -> Option<Record> {
        if self.unreachable.load(Ordering::Relaxed) {
            return None;
        }
        self.records.get(key).cloned()
    }

    fn fetch(&self, layer: &Descriptor, staging: &Staging) -> Result<(), String> {
        let t = Instant::now();
        self.runtime
            .block_on(
                self.client
                    .fetch_blob(&self.reference, layer, staging, no_progress()),
            )
            .map_err(|e| {
                let down = matches!(e, ClientError::Http { .. })
                    || e.status().is_some_and(|status| status >= 500);
                if down {
                    self.unreachable.store(true, Ordering::Relaxed);
                }
                let after = if down {
                    "; no more steps are taken from this cache"
                } else {
                    ""
                };
                format!("fetching layer {}: {e}{after}", layer.digest())
            })?;
        tracing::debug!(digest = %layer.digest(), seconds = t.elapsed().as_secs_f64(),
            "fetched a cached layer");
        Ok(())
    }
}

/// A cache read from an OCI layout.
#[derive(Debug)]
struct LocalSource {
    dir: PathBuf,
    records: HashMap<CacheKey, Record>,
}

impl CacheSource for LocalSource {
    fn describe(&self) -> String {
        format!("type=local,src={}", self.dir.display())
    }

    fn lookup(&self, key: &CacheKey) -> Option<Record> {
        self.records.get(key).cloned()
    }

    fn fetch(&self, layer: &Descriptor, staging: &Staging) -> Result<(), String> {
        let digest = descriptor_digest(layer).map_err(|e| e.to_string())?;
        let path = self.dir.join(layout::blob_path(&digest));
        let file = File::open(&path).map_err(|e| format!("layer {digest}: {e}"))?;
        staging
            .ingest(&mut BufReader::new(file), Some(layer.size()), Some(&digest))
            .map_err(|e| format!("layer {digest} ({}): {e}", path.display()))?;
        Ok(())
    }
}

/// Reads every `--cache-from` before the build, one progress vertex each. A source that
/// cannot be read is left out with a warning. `registry` is the async runtime and client,
/// needed when a source is in a registry; `platform` picks the manifest of an index.
pub fn import_all(
    imports: &[Import],
    registry: Option<&(tokio::runtime::Runtime, Client)>,
    platform: &Platform,
    display: &Arc<Display>,
) -> CacheSources {
    let mut sources: CacheSources = Vec::new();
    for import in imports {
        let name = match &import.location {
            Location::Registry { reference, .. } => reference.to_string(),
            Location::Local { dir, .. } => dir.display().to_string(),
        };
        let vertex = display.start(&format!("importing cache manifest from {name}"));
        let t = Instant::now();
        let loaded: Result<Arc<dyn CacheSource>, String> = match (&import.location, registry) {
            (Location::Registry { reference, .. }, Some((runtime, client))) => runtime
                .block_on(load_registry(client, reference, platform))
                .map(|records| {
                    Arc::new(RegistrySource {
                        reference: reference.clone(),
                        records,
                        runtime: runtime.handle().clone(),
                        client: client.clone(),
                        unreachable: AtomicBool::new(false),
                    }) as Arc<dyn CacheSource>
                }),
            (Location::Registry { .. }, None) => Err("no registry client".to_owned()),
            (Location::Local { dir, tag }, _) => load_local(dir, tag).map(|records| {
                Arc::new(LocalSource {
                    dir: dir.clone(),
                    records,
                }) as Arc<dyn CacheSource>
            }),
        };
        match loaded {
            Ok(source) => {
                display.done(vertex, t.elapsed().as_secs_f64(), None, false);
                sources.push(source);
            }
            Err(reason) => {
                display.error(vertex, &reason);
                tracing::warn!(
                    "{}: cannot import the build cache, building without it: {reason}",
                    import.describe()
                );
            }
        }
    }
    sources
}

/// The records of the cache (or image) at `reference`.
async fn load_registry(
    client: &Client,
    reference: &Reference,
    platform: &Platform,
) -> Result<HashMap<CacheKey, Record>, String> {
    let mut fetched = client
        .fetch_manifest(reference)
        .await
        .map_err(|e| e.to_string())?;
    if fetched.manifest.is_index() {
        let child = fetched
            .manifest
            .select_platform(platform)
            .ok_or_else(|| "an index without a manifest for the build's platform".to_owned())?;
        let digest = descriptor_digest(&child).map_err(|e| e.to_string())?;
        let by_digest = Reference {
            digest: Some(digest),
            ..reference.clone()
        };
        fetched = client
            .fetch_manifest(&by_digest)
            .await
            .map_err(|e| e.to_string())?;
    }
    let config = fetched
        .manifest
        .config()
        .ok_or_else(|| "not an image manifest".to_owned())?;
    if config.size() > MAX_METADATA {
        return Err(format!(
            "its config has {} bytes; at most {MAX_METADATA} are read",
            config.size()
        ));
    }
    let digest = descriptor_digest(&config).map_err(|e| e.to_string())?;
    let blobs = MemoryStore::new();
    client
        .fetch_blob(reference, &config, &blobs, no_progress())
        .await
        .map_err(|e| format!("fetching the config: {e}"))?;
    let bytes = blobs
        .read_all(&digest)
        .map_err(|e| format!("reading the config: {e}"))?;
    records_of(&config, &bytes)
}

/// A metadata blob of the layout at `dir`, checked against `desc`.
fn read_layout_blob(dir: &Path, desc: &Descriptor) -> Result<Vec<u8>, String> {
    let digest = descriptor_digest(desc).map_err(|e| e.to_string())?;
    if desc.size() > MAX_METADATA {
        return Err(format!(
            "{digest} has {} bytes; at most {MAX_METADATA} are read",
            desc.size()
        ));
    }
    let path = dir.join(layout::blob_path(&digest));
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|f| f.take(desc.size() + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let actual = Digest::of(digest.algorithm(), &bytes);
    if bytes.len() as u64 != desc.size() || actual != digest {
        return Err(format!(
            "{}: the content does not match its digest (damaged)",
            path.display()
        ));
    }
    Ok(bytes)
}

/// The records of the cache named `tag` in the layout at `dir` (or of its only entry).
fn load_local(dir: &Path, tag: &str) -> Result<HashMap<CacheKey, Record>, String> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let header: serde_json::Value = serde_json::from_slice(&read(layout::OCI_LAYOUT_FILE)?)
        .map_err(|e| format!("{}: {e}", layout::OCI_LAYOUT_FILE))?;
    if header["imageLayoutVersion"] != layout::LAYOUT_VERSION {
        return Err(format!(
            "{}: not an OCI layout version {}",
            layout::OCI_LAYOUT_FILE,
            layout::LAYOUT_VERSION
        ));
    }
    let index = Manifest::parse(&read(layout::INDEX_FILE)?, None, layout::INDEX_FILE)
        .map_err(|e| e.to_string())?;
    let entries = index.manifests();
    let entry = match entries.iter().find(|d| ref_name(d) == Some(tag)) {
        Some(entry) => entry.clone(),
        None if entries.len() == 1 => entries[0].clone(),
        None => return Err(format!("{}: no cache named {tag:?}", layout::INDEX_FILE)),
    };
    let media_type = entry.media_type().to_string();
    if !is_manifest_media_type(&media_type) {
        return Err(format!(
            "{}: {media_type} is not a manifest",
            entry.digest()
        ));
    }
    let bytes = read_layout_blob(dir, &entry)?;
    let manifest = Manifest::parse(&bytes, Some(&media_type), entry.digest().as_ref())
        .map_err(|e| e.to_string())?;
    let config = manifest
        .config()
        .ok_or_else(|| format!("{}: not an image manifest", entry.digest()))?;
    records_of(&config, &read_layout_blob(dir, &config)?)
}

/// The records `mode` exports, each key once, sorted by key; records whose layers the store
/// lacks are left out with a warning.
fn select(
    store: &ImageStore,
    used: &[UsedRecord],
    mode: Mode,
    target: usize,
) -> Vec<(CacheKey, Record)> {
    let mut records: BTreeMap<CacheKey, Record> = BTreeMap::new();
    for u in used {
        if mode == Mode::Min && u.stage != target {
            continue;
        }
        records.entry(u.key).or_insert_with(|| u.record.clone());
    }
    records
        .into_iter()
        .filter(|(key, record)| {
            let missing = record.layers.iter().find(|l| {
                descriptor_digest(l)
                    .ok()
                    .and_then(|d| store.content().info(&d).ok())
                    .is_none_or(|info| info.size != l.size())
            });
            if let Some(layer) = missing {
                tracing::warn!(
                    "not exporting the cache record {}: its layer {} is not in the store",
                    key.hex(),
                    layer.digest()
                );
            }
            missing.is_none()
        })
        .collect()
}

/// A cache manifest and its config, in memory; the layers stay in the store.
struct Artifact {
    blobs: MemoryStore,
    manifest: Descriptor,
    layers: usize,
}

impl Artifact {
    fn new(records: &[(CacheKey, Record)]) -> anyhow::Result<Artifact> {
        let config = CanonicalBlob::new(CONFIG_MEDIA_TYPE, &CacheConfig::value(records)?)?;
        let mut seen = HashSet::new();
        let layers: Vec<&Descriptor> = records
            .iter()
            .flat_map(|(_, r)| &r.layers)
            .filter(|l| seen.insert(l.digest().to_string()))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": config.descriptor(),
            "layers": layers,
        });
        let manifest = CanonicalBlob::new(media::OCI_MANIFEST, &manifest)?;
        let blobs = MemoryStore::new();
        config.ingest(&blobs)?;
        let descriptor = manifest.ingest(&blobs)?;
        Ok(Artifact {
            blobs,
            manifest: descriptor,
            layers: layers.len(),
        })
    }
}

/// The blobs of an export: the artifact's own, then the store's.
struct ExportContent<'a> {
    own: &'a MemoryStore,
    store: &'a FsStore,
}

impl Provider for ExportContent<'_> {
    fn info(&self, digest: &Digest) -> Result<Info, ContentError> {
        match self.own.info(digest) {
            Err(ContentError::NotFound(_)) => self.store.info(digest),
            other => other,
        }
    }

    fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Box<dyn std::io::Read + Send>, ContentError> {
        match self.own.read(digest, range.clone()) {
            Err(ContentError::NotFound(_)) => self.store.read(digest, range),
            other => other,
        }
    }
}

/// What the exports need besides the build's result.
pub struct ExportContext<'a> {
    pub store: &'a ImageStore,
    /// The target stage's index (`Lowered::target`).
    pub target: usize,
    /// The async runtime and registry client, when an export goes to a registry.
    pub registry: Option<&'a (tokio::runtime::Runtime, Client)>,
    /// Repositories the layers may be mounted from (the bases, the image's destinations).
    pub mount_from: Vec<Reference>,
    pub display: &'a Arc<Display>,
}

/// Runs every `--cache-to`: inline first (it gives the image a new config, so it returns the
/// build's result as it then is), then the registries and directories, in the order given.
pub fn export_all(
    exports: &[Export],
    built: Built,
    cx: &ExportContext<'_>,
) -> anyhow::Result<Built> {
    let mut built = built;
    let (inline, others): (Vec<&Export>, Vec<&Export>) =
        exports.iter().partition(|e| e.target == Target::Inline);
    if !inline.is_empty() {
        let vertex = cx.display.start("preparing layers for inline cache");
        let t = Instant::now();
        match embed_inline(cx.store, &built, cx.target) {
            Ok((new, records)) => {
                cx.display.status(
                    vertex,
                    &format!(
                        "{records} cache records in the config {}",
                        new.config.digest()
                    ),
                );
                cx.display
                    .done(vertex, t.elapsed().as_secs_f64(), None, false);
                built = new;
            }
            Err(e) => {
                let message = format!("exporting the build cache inline: {e:#}");
                cx.display.error(vertex, &message);
                if !inline.iter().all(|e| e.ignore_error) {
                    return Err(anyhow!(message));
                }
                tracing::warn!("{message}");
            }
        }
    }
    for export in others {
        let Target::To(location) = &export.target else {
            continue;
        };
        let label = match location {
            Location::Registry { .. } => "exporting cache to registry",
            Location::Local { .. } => "exporting cache to client directory",
        };
        let vertex = cx.display.start(label);
        let t = Instant::now();
        match export_to(export.mode, location, &built, cx, vertex) {
            Ok(()) => cx
                .display
                .done(vertex, t.elapsed().as_secs_f64(), None, false),
            Err(e) => {
                let message = format!("exporting the build cache to {}: {e:#}", export.describe());
                cx.display.error(vertex, &message);
                if !export.ignore_error {
                    return Err(anyhow!(message));
                }
                tracing::warn!("{message}");
            }
        }
    }
    Ok(built)
}

/// Writes the cache manifest of `mode`'s records to `location`.
fn export_to(
    mode: Mode,
    location: &Location,
    built: &Built,
    cx: &ExportContext<'_>,
    vertex: usize,
) -> anyhow::Result<()> {
    cx.display
        .status(vertex, "preparing build cache for export");
    let records = select(cx.store, &built.cache, mode, cx.target);
    let artifact = Artifact::new(&records)?;
    let content = ExportContent {
        own: &artifact.blobs,
        store: cx.store.content(),
    };
    let digest = artifact.manifest.digest();
    match location {
        Location::Registry { reference, .. } => {
            let (runtime, client) = cx.registry.ok_or_else(|| anyhow!("no registry client"))?;
            let opts = PushOptions {
                mount_from: cx.mount_from.clone(),
                progress: VertexProgress::new(
                    cx.display.clone(),
                    vertex,
                    Some(reference.to_string()),
                ),
            };
            runtime.block_on(client.push(&content, &artifact.manifest, reference, &opts))?;
        }
        Location::Local { dir, tag } => {
            layout::export(
                &content,
                &[(Some(tag.clone()), artifact.manifest.clone())],
                dir,
            )
            .with_context(|| format!("writing the OCI layout {}", dir.display()))?;
        }
    }
    cx.display.status(
        vertex,
        &format!(
            "writing cache manifest {digest} ({} records, {} layers) done",
            records.len(),
            artifact.layers
        ),
    );
    Ok(())
}

/// Gives the built image a config with the target stage's records under [`INLINE_KEY`]:
/// a new config and manifest, recorded under the build's names. Returns the new result and
/// the number of records.
fn embed_inline(
    store: &ImageStore,
    built: &Built,
    target: usize,
) -> anyhow::Result<(Built, usize)> {
    let mut records = select(store, &built.cache, Mode::Min, target);
    // A base built with inline records passes them on in its config; they have no place in
    // this image's records, and would nest deeper with every generation.
    for (_, record) in &mut records {
        record.config.extra.remove(INLINE_KEY);
    }
    let bytes = store
        .content()
        .read_all(&built.id)
        .context("reading the image config")?;
    let mut config = ImageConfig::from_slice(&bytes, &built.id.to_string())?;
    config
        .extra
        .insert(INLINE_KEY.to_owned(), CacheConfig::value(&records)?);
    let (_, manifest_bytes) = Manifest::read(store.content(), &built.manifest)?;
    let mut manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes)?;
    let staging = store.staging()?;
    let config_desc = config
        .to_blob(built.config.media_type().as_ref())?
        .ingest(&staging)?;
    manifest["config"] = serde_json::to_value(&config_desc)?;
    let manifest_desc =
        CanonicalBlob::new(built.manifest.media_type().as_ref(), &manifest)?.ingest(&staging)?;
    let roots: Vec<(Option<String>, Descriptor)> = if built.names.is_empty() {
        vec![(None, manifest_desc.clone())]
    } else {
        built
            .names
            .iter()
            .map(|n| (Some(n.clone()), manifest_desc.clone()))
            .collect()
    };
    store.commit(&staging, &roots)?;
    // The image the solver wrote is now untagged: drop it unless a name still holds it.
    let held = store
        .list()?
        .iter()
        .any(|r| r.id == built.id && r.name.is_some());
    if !held {
        match store.remove_id(&built.id) {
            Ok(_) | Err(berth_layerstore::image::store::StoreError::NotFound(_)) => {}
            Err(e) => tracing::warn!("removing the image without inline cache: {e}"),
        }
    }
    let id = descriptor_digest(&config_desc)?;
    let count = records.len();
    Ok((
        Built {
            id,
            manifest: manifest_desc,
            config: config_desc,
            ..built.clone()
        },
        count,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_as_buildx_reads_them() {
        let e = parse_export("type=registry,ref=127.0.0.1:5000/cache:1,mode=max").unwrap();
        assert_eq!(e.mode, Mode::Max);
        assert!(e.uses_registry());
        assert_eq!(e.describe(), "type=registry,ref=127.0.0.1:5000/cache:1");
        let e = parse_export("type=local,dest=/tmp/c").unwrap();
        assert_eq!(e.mode, Mode::Min);
        assert_eq!(
            e.target,
            Target::To(Location::Local {
                dir: PathBuf::from("/tmp/c"),
                tag: "latest".into()
            })
        );
        assert_eq!(parse_export("type=inline").unwrap().target, Target::Inline);
        let e = parse_export(
            "type=registry,ref=reg.example/c,ignore-error=true,image-manifest=true,registry.insecure=true",
        )
        .unwrap();
        assert!(e.ignore_error);
        assert_eq!(e.insecure_registry(), Some("reg.example"));

        let i = parse_import("127.0.0.1:5000/cache:1").unwrap();
        assert_eq!(i.describe(), "type=registry,ref=127.0.0.1:5000/cache:1");
        let i = parse_import("type=local,src=dir,tag=v2").unwrap();
        assert_eq!(
            i.location,
            Location::Local {
                dir: PathBuf::from("dir"),
                tag: "v2".into()
            }
        );

        for (bad, needle) in [
            ("type=registry", "ref is required"),
            ("type=local", "dest is required"),
            ("type=gha", "unknown cache type"),
            ("ref=x", "type is required"),
            ("type=registry,ref=x,mode=all", "invalid mode"),
            ("type=inline,mode=max", "only mode=min"),
            ("type=local,dest=d,src=e", "unknown field \"src\""),
            ("type=registry,ref=x,image-manifest=false", "not supported"),
            ("type=registry,ref=x,ignore-error=maybe", "not a boolean"),
        ] {
            let e = parse_export(bad).unwrap_err();
            assert!(format!("{e:#}").contains(needle), "{bad}: {e:#}");
        }
        for (bad, needle) in [
            ("type=inline", "for --cache-to"),
            ("type=local,dest=d", "unknown field \"dest\""),
            ("type=registry,ref=x,mode=max", "unknown field \"mode\""),
            ("", "empty"),
        ] {
            let e = parse_import(bad).unwrap_err();
            assert!(format!("{e:#}").contains(needle), "{bad:?}: {e:#}");
        }
    }

    fn record(layers: &[&str]) -> Record {
        let mut config = ImageConfig::new("linux", "amd64");
        let mut descriptors = Vec::new();
        for l in layers {
            let digest = Digest::sha256(l.as_bytes());
            config.rootfs.diff_ids.push(digest.clone());
            descriptors.push(berth_layerstore::image::new_descriptor(
                media::OCI_LAYER_GZIP,
                &digest,
                l.len() as u64,
            ));
        }
        Record {
            version: berth_builder::cache::CACHE_VERSION,
            config,
            layers: descriptors,
            shell: Vec::new(),
            cmd_set: false,
            build_args: Vec::new(),
        }
    }

    fn key(s: &str) -> CacheKey {
        let mut h = berth_builder::cache::KeyHasher::new("test");
        h.str(s);
        h.finish()
    }

    #[test]
    fn artifacts_name_each_layer_once_and_read_back() {
        let records = vec![
            (key("a"), record(&["base", "one"])),
            (key("b"), record(&["base", "one", "two"])),
        ];
        let artifact = Artifact::new(&records).unwrap();
        assert_eq!(artifact.layers, 3);
        let digest = descriptor_digest(&artifact.manifest).unwrap();
        let (manifest, bytes) = Manifest::read(&artifact.blobs, &artifact.manifest).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["artifactType"], ARTIFACT_TYPE);
        assert_eq!(manifest.layers().len(), 3);
        let config = manifest.config().unwrap();
        assert_eq!(config.media_type().to_string(), CONFIG_MEDIA_TYPE);
        let config_bytes = artifact
            .blobs
            .read_all(&descriptor_digest(&config).unwrap())
            .unwrap();
        let read = records_of(&config, &config_bytes).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[&key("b")], records[1].1);
        // The same records give the same manifest.
        let again = Artifact::new(&records).unwrap();
        assert_eq!(descriptor_digest(&again.manifest).unwrap(), digest);
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let config =
            berth_layerstore::image::new_descriptor(CONFIG_MEDIA_TYPE, &Digest::sha256(b"x"), 1);
        let err = |bytes: &[u8]| records_of(&config, bytes).unwrap_err();
        assert!(err(b"{not json").contains("cache config"));
        assert!(err(br#"{"version":2,"records":[]}"#).contains("version 2"));
        assert!(err(br#"{"records":[]}"#).contains("no version"));
        assert!(
            err(br#"{"version":1,"records":[{"key":"zz","record":{}}]}"#).contains("cache config")
        );
        let image =
            berth_layerstore::image::new_descriptor(media::OCI_CONFIG, &Digest::sha256(b"x"), 1);
        assert!(
            records_of(&image, br#"{"os":"linux"}"#)
                .unwrap_err()
                .contains("without inline cache records")
        );
        let inline = serde_json::json!({
            "os": "linux",
            INLINE_KEY: {"version": 1, "records": [{"key": key("a").hex(), "record": record(&["x"])}]},
        });
        let read = records_of(&image, &serde_json::to_vec(&inline).unwrap()).unwrap();
        assert_eq!(read[&key("a")], record(&["x"]));
    }
}
