//! The local image store's verbs, as `docker` names them: `berth images`, `pull`, `push`,
//! `tag`, `rmi`, `inspect`, `save` and `load`.
//!
//! The store lives under the data root (`--root`, else `$BERTH_ROOT`, else
//! `$XDG_DATA_HOME/berth`, else `~/.local/share/berth`): blobs in `content/`, names in
//! `images/index.json` (see [`berth_layerstore::image::store`]). Names are kept normalized
//! (`docker.io/library/busybox:latest`) and shown the way Docker shows them (`busybox`,
//! `latest`). An argument naming an image is looked up as Docker does: a name, short or full,
//! `name@digest`, or a prefix of the image id.
//!
//! `pull` and `push` live in [`transfer`], `save` and `load` in [`archive`].

mod archive;
mod transfer;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use berth_layerstore::Digest;
use berth_layerstore::content::Provider;
use berth_layerstore::image::store::{
    ImageRecord, ImageStore, MatchedBy, Resolved, StoreError, parse_rfc3339,
};
use berth_layerstore::image::{Descriptor, ImageConfig, Manifest, descriptor_digest, platform};
use berth_layerstore::snapshot::SnapshotStore;
use berth_registry::reference::Reference;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

/// The image verbs, flattened into the top-level command.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List the images in the local store.
    Images(ImagesArgs),
    /// Pull an image from a registry into the local store.
    Pull(transfer::PullArgs),
    /// Push an image from the local store to a registry.
    Push(transfer::PushArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Remove names from the local store, and the images no name uses any more.
    Rmi(RmiArgs),
    /// Show an image's id, names, config and layers as JSON.
    Inspect(InspectArgs),
    /// Write images to a docker-archive (what `docker load` reads) or an OCI archive.
    Save(archive::SaveArgs),
    /// Read images from a docker-archive or an OCI archive into the local store.
    Load(archive::LoadArgs),
}

/// Where the store is.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Data root that holds the image store [default: $BERTH_ROOT, else
    /// $XDG_DATA_HOME/berth, else ~/.local/share/berth].
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

impl StoreArgs {
    /// Opens the store, creating it if needed.
    pub fn open(&self) -> anyhow::Result<ImageStore> {
        let root = match &self.root {
            Some(root) => root.clone(),
            None => data_root()?,
        };
        ImageStore::open(&root)
            .with_context(|| format!("opening the image store at {}", root.display()))
    }
}

/// `$BERTH_ROOT`, else `$XDG_DATA_HOME/berth`, else `~/.local/share/berth`.
pub(crate) fn data_root() -> anyhow::Result<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(root) = non_empty("BERTH_ROOT") {
        return Ok(PathBuf::from(root));
    }
    if let Some(data) = non_empty("XDG_DATA_HOME") {
        return Ok(PathBuf::from(data).join("berth"));
    }
    let home = non_empty("HOME").context("cannot find the data directory: HOME is not set")?;
    Ok(PathBuf::from(home).join(".local/share/berth"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// Docker's columns.
    Table,
    /// One JSON object per image and name, one per line.
    Json,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only images of this repository (`busybox`, `reg.example/app`), or this name
    /// (`busybox:1`).
    pub reference: Option<String>,
    /// table or json.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Print image ids only.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show whole ids.
    #[arg(long)]
    pub no_trunc: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image: a name or an id.
    pub source: String,
    /// The new name, `[REGISTRY/]REPOSITORY[:TAG]`.
    pub target: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Names or ids.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove every name of an image given by id, even when it has several.
    #[arg(short, long)]
    pub force: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Names or ids.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// For an index, the platform whose config and layers to show (default: this host's).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Images(args) => images(args),
        ImageCommand::Pull(args) => transfer::pull(args),
        ImageCommand::Push(args) => transfer::push(args),
        ImageCommand::Tag(args) => tag(args),
        ImageCommand::Rmi(args) => rmi(args),
        ImageCommand::Inspect(args) => inspect(args),
        ImageCommand::Save(args) => archive::save(args),
        ImageCommand::Load(args) => archive::load(args),
    }
}

/// The normalized name for a reference: `registry/repository:tag`, or `@digest` when pinned.
pub fn name_of(reference: &Reference) -> String {
    match (&reference.digest, reference.tag_or_latest()) {
        (Some(d), _) => format!("{}/{}@{d}", reference.registry, reference.repository),
        (None, Some(tag)) => format!("{}/{}:{tag}", reference.registry, reference.repository),
        (None, None) => format!("{}/{}:latest", reference.registry, reference.repository),
    }
}

/// `busybox` -> `docker.io/library/busybox:latest`; `None` when `s` is not a reference.
pub fn normalize(s: &str) -> Option<String> {
    s.parse::<Reference>().ok().map(|r| name_of(&r))
}

/// Parses and normalizes a name given on the command line.
pub fn parse_name(s: &str) -> anyhow::Result<(Reference, String)> {
    let reference: Reference = s
        .parse()
        .with_context(|| format!("{s:?} is not a valid image name"))?;
    let name = name_of(&reference);
    Ok((reference, name))
}

/// A normalized name as Docker shows it: `docker.io/library/` and `docker.io/` dropped.
pub fn familiar(name: &str) -> &str {
    name.strip_prefix("docker.io/library/")
        .filter(|rest| !rest.contains('/'))
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
}

/// Splits a familiar name into repository and tag (or digest).
fn split_name(name: &str) -> (&str, Option<&str>, Option<&str>) {
    if let Some((repo, digest)) = name.split_once('@') {
        return (repo, None, Some(digest));
    }
    let last = name.rfind('/').map_or(0, |i| i + 1);
    match name[last..].rfind(':') {
        Some(i) => (&name[..last + i], Some(&name[last + i + 1..]), None),
        None => (name, None, None),
    }
}

/// Resolves an argument naming an image, with an error that names it.
pub fn resolve(store: &ImageStore, query: &str) -> anyhow::Result<Resolved> {
    store.resolve(query, &normalize).map_err(|e| match e {
        StoreError::NotFound(_) => anyhow::anyhow!("no such image: {query}"),
        e => anyhow::Error::new(e).context(format!("looking up {query}")),
    })
}

/// The first 12 hex digits of an id, as Docker shows it.
pub fn short_id(id: &Digest) -> &str {
    &id.hex()[..12.min(id.hex().len())]
}

/// An image as shown by `images` and `inspect`: for an index, the manifest of one platform.
pub struct Details {
    /// The manifest the config and layers come from.
    pub manifest: Descriptor,
    pub config_desc: Descriptor,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
}

/// Reads the manifest and config of `target`, choosing `want`'s manifest from an index.
pub fn details(
    store: &ImageStore,
    target: &Descriptor,
    want: &berth_layerstore::image::Platform,
) -> anyhow::Result<Details> {
    let content = store.content();
    let (mut manifest, _) = Manifest::read(content, target)
        .with_context(|| format!("reading manifest {}", target.digest()))?;
    let mut desc = target.clone();
    if manifest.is_index() {
        desc =
            platform::select_or_err(&manifest.manifests(), want, target.digest().as_ref())?.clone();
        manifest = Manifest::read(content, &desc)
            .with_context(|| format!("reading manifest {}", desc.digest()))?
            .0;
    }
    let config_desc = manifest
        .config()
        .with_context(|| format!("manifest {} has no config", desc.digest()))?;
    let config_digest = descriptor_digest(&config_desc)?;
    let bytes = content
        .read_all(&config_digest)
        .with_context(|| format!("reading config {config_digest}"))?;
    let config = ImageConfig::from_slice(&bytes, &format!("config {config_digest}"))?;
    Ok(Details {
        layers: manifest.layers(),
        manifest: desc,
        config_desc,
        config,
    })
}

/// Writes `text` to stdout; a reader that went away (`berth images | head`) is not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to stdout"))
        }
        _ => Ok(()),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Docker's `units.HumanDuration`, with " ago".
pub fn since(created: Option<&str>) -> String {
    let Some(then) = created.and_then(parse_rfc3339) else {
        return "N/A".to_owned();
    };
    let secs = now_secs().saturating_sub(then);
    let text = match secs {
        0 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".to_owned(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s => {
            let hours = (s + 1800) / 3600;
            match hours {
                1 => "About an hour".to_owned(),
                h if h < 48 => format!("{h} hours"),
                h if h < 24 * 7 * 2 => format!("{} days", h / 24),
                h if h < 24 * 30 * 2 => format!("{} weeks", h / 24 / 7),
                h if h < 24 * 365 * 2 => format!("{} months", h / 24 / 30),
                h => format!("{} years", h / 24 / 365),
            }
        }
    };
    format!("{text} ago")
}

/// Docker's `units.HumanSizeWithPrecision(size, 3)`: decimal units, three significant digits.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    format!("{text}{}", UNITS[unit])
}

/// One row of `berth images`.
struct Row {
    name: Option<String>,
    repository: String,
    tag: String,
    digest: Digest,
    id: Digest,
    created: Option<String>,
    size: u64,
}

fn images(args: ImagesArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let filter = match &args.reference {
        Some(r) => Some(parse_name(r)?.0),
        None => None,
    };
    let host = platform::host();
    let mut rows = Vec::new();
    for record in store.list()? {
        if let Some(filter) = &filter {
            let Some(name) = &record.name else { continue };
            let Ok(r) = name.parse::<Reference>() else {
                continue;
            };
            if r.registry != filter.registry || r.repository != filter.repository {
                continue;
            }
            if filter.tag.is_some() && r.tag != filter.tag {
                continue;
            }
        }
        let created = details(&store, &record.target, &host)
            .ok()
            .and_then(|d| d.config.created);
        let size = store
            .size(&record.target)
            .with_context(|| format!("walking image {}", record.id))?;
        let (repository, tag) = match &record.name {
            Some(name) => match split_name(familiar(name)) {
                (repo, Some(tag), _) => (repo.to_owned(), tag.to_owned()),
                (repo, None, _) => (repo.to_owned(), "<none>".to_owned()),
            },
            None => ("<none>".to_owned(), "<none>".to_owned()),
        };
        rows.push(Row {
            name: record.name.clone(),
            repository,
            tag,
            digest: record.digest()?,
            id: record.id.clone(),
            created,
            size,
        });
    }
    // Newest first, as docker lists them; then by name.
    rows.sort_by(|a, b| {
        let time = |r: &Row| r.created.as_deref().and_then(parse_rfc3339).unwrap_or(0);
        time(b)
            .cmp(&time(a))
            .then_with(|| a.repository.cmp(&b.repository))
            .then_with(|| a.tag.cmp(&b.tag))
    });
    let id_text = |id: &Digest| {
        if args.no_trunc {
            id.to_string()
        } else {
            short_id(id).to_owned()
        }
    };
    let mut text = String::new();
    if args.quiet {
        let mut seen = BTreeSet::new();
        for row in &rows {
            if seen.insert(row.id.clone()) {
                text.push_str(&id_text(&row.id));
                text.push('\n');
            }
        }
        return print_out(&text);
    }
    match args.format {
        ListFormat::Json => {
            for row in &rows {
                let line = json!({
                    "Repository": row.repository,
                    "Tag": row.tag,
                    "ID": id_text(&row.id),
                    "Digest": row.digest.to_string(),
                    "CreatedAt": row.created,
                    "CreatedSince": since(row.created.as_deref()),
                    "Size": human_size(row.size),
                    "Name": row.name,
                    "FullID": row.id.to_string(),
                    "SizeBytes": row.size,
                });
                text.push_str(&format!("{line}\n"));
            }
        }
        ListFormat::Table => {
            let table: Vec<[String; 5]> = rows
                .iter()
                .map(|r| {
                    [
                        r.repository.clone(),
                        r.tag.clone(),
                        id_text(&r.id),
                        since(r.created.as_deref()),
                        human_size(r.size),
                    ]
                })
                .collect();
            text = table_text(
                &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
                &table,
            );
        }
    }
    print_out(&text)
}

/// Columns padded to their widest cell plus three spaces, as docker's tabwriter does.
fn table_text<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut text = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        text.push_str(out.trim_end());
        text.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    text
}

fn tag(args: TagArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let source = resolve(&store, &args.source)?;
    let (reference, name) = parse_name(&args.target)?;
    if reference.digest.is_some() {
        bail!(
            "{}: a tag cannot name a digest; use REPOSITORY[:TAG]",
            args.target
        );
    }
    store
        .put(&name, &source.record.target)
        .with_context(|| format!("tagging {} as {}", args.source, args.target))?;
    Ok(())
}

/// Where `berth build` keeps the snapshots of the store's layers.
pub fn snapshot_root(store: &ImageStore) -> PathBuf {
    store.root().join("snapshots")
}

/// Removes the snapshots of layers that no image of the store has any more (and whatever
/// crashed builds left there); those of running builds are leased and stay.
fn prune_snapshots(store: &ImageStore) -> anyhow::Result<()> {
    let root = snapshot_root(store);
    if !root.exists() {
        return Ok(());
    }
    let live = store
        .live_diff_ids()
        .context("listing the layers the store's images use")?;
    let snapshots = SnapshotStore::open(&root)
        .with_context(|| format!("opening the snapshot store {}", root.display()))?;
    let report = snapshots
        .prune(|diff_id| live.contains(diff_id))
        .context("removing unused snapshots")?;
    tracing::info!(
        removed = report.removed.len(),
        in_use = report.in_use.len(),
        "removed unused snapshots"
    );
    Ok(())
}

fn rmi(args: RmiArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let mut failures = Vec::new();
    let mut released: Vec<ImageRecord> = Vec::new();
    for query in &args.images {
        match untag(&store, query, args.force) {
            Ok(mut gone) => released.append(&mut gone),
            Err(e) => {
                eprintln!("berth: error: {e:#}");
                failures.push(query.clone());
            }
        }
    }
    if !released.is_empty() {
        let report = store.gc().context("removing unused blobs")?;
        let mut printed = BTreeSet::new();
        for record in &released {
            if printed.insert(record.id.clone()) {
                println!("Deleted: {}", record.id);
            }
        }
        tracing::info!(
            blobs = report.removed.len(),
            bytes = report.bytes,
            "removed unused blobs"
        );
        prune_snapshots(&store)?;
    }
    if !failures.is_empty() {
        bail!("could not remove {}", failures.join(", "));
    }
    Ok(())
}

/// Removes the names `query` stands for; returns the records whose root no name uses now.
fn untag(store: &ImageStore, query: &str, force: bool) -> anyhow::Result<Vec<ImageRecord>> {
    let resolved = resolve(store, query)?;
    let removed = match (resolved.matched_by, &resolved.record.name) {
        (MatchedBy::Name | MatchedBy::RepoDigest, Some(name)) => vec![
            store
                .remove(name)
                .with_context(|| format!("removing {query}"))?,
        ],
        _ => {
            let id = &resolved.record.id;
            let names: Vec<String> = store
                .list()?
                .into_iter()
                .filter(|r| &r.id == id)
                .filter_map(|r| r.name)
                .collect();
            if names.len() > 1 && !force {
                bail!(
                    "unable to delete {} (must be forced): the image has several names: {}",
                    short_id(id),
                    names
                        .iter()
                        .map(|n| familiar(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            store
                .remove_id(id)
                .with_context(|| format!("removing {query}"))?
        }
    };
    let mut released = Vec::new();
    for r in removed {
        if let Some(name) = &r.record.name {
            println!("Untagged: {}", familiar(name));
        }
        if r.unreferenced {
            released.push(r.record);
        }
    }
    Ok(released)
}

/// `docker image inspect`'s shape for one image, plus the root descriptor and the layers.
fn inspect_one(
    store: &ImageStore,
    query: &str,
    want: &berth_layerstore::image::Platform,
) -> anyhow::Result<Value> {
    let resolved = resolve(store, query)?;
    let record = &resolved.record;
    let details = details(store, &record.target, want)?;
    let all = store.list()?;
    let same_image: Vec<&ImageRecord> = all.iter().filter(|r| r.id == record.id).collect();
    let mut repo_tags = Vec::new();
    let mut repo_digests = BTreeSet::new();
    for r in &same_image {
        let Some(name) = &r.name else { continue };
        let (repo, tag, digest) = split_name(familiar(name));
        if tag.is_some() {
            repo_tags.push(familiar(name).to_owned());
        }
        match digest {
            Some(d) => repo_digests.insert(format!("{repo}@{d}")),
            None => repo_digests.insert(format!("{repo}@{}", r.target.digest())),
        };
    }
    let config = &details.config;
    let mut out = json!({
        "Id": record.id.to_string(),
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Parent": config.parent.clone().unwrap_or_default(),
        "Comment": config.comment.clone().unwrap_or_default(),
        "Created": config.created,
        "DockerVersion": config.docker_version.clone().unwrap_or_default(),
        "Author": config.author.clone().unwrap_or_default(),
        "Config": config.config,
        "Architecture": config.architecture,
        "Os": config.os,
        "Size": store.size(&record.target)?,
        "RootFS": {"Type": "layers", "Layers": config.diff_ids()},
        "Metadata": {"LastTagTime": record.created},
        "Descriptor": record.target,
        "Manifest": details.manifest,
        "ConfigDescriptor": details.config_desc,
        "Layers": details.layers,
    });
    if let Some(variant) = &config.variant {
        out["Variant"] = json!(variant);
    }
    Ok(out)
}

fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let want = match &args.platform {
        Some(p) => platform::parse(p).with_context(|| format!("--platform {p}"))?,
        None => platform::host(),
    };
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for query in &args.images {
        match inspect_one(&store, query, &want) {
            Ok(v) => out.push(v),
            Err(e) => {
                eprintln!("berth: error: {e:#}");
                failures.push(query.clone());
            }
        }
    }
    print_out(&format!("{}\n", serde_json::to_string_pretty(&out)?))?;
    if !failures.is_empty() {
        bail!("could not inspect {}", failures.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_and_read_back_as_docker_shows_them() {
        assert_eq!(
            normalize("busybox").as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(
            normalize("localhost:5000/a/b").as_deref(),
            Some("localhost:5000/a/b:latest")
        );
        assert_eq!(normalize("Upper"), None);
        assert_eq!(familiar("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(familiar("docker.io/team/app:1"), "team/app:1");
        assert_eq!(familiar("localhost:5000/a:1"), "localhost:5000/a:1");
        assert_eq!(
            split_name("localhost:5000/a:1"),
            ("localhost:5000/a", Some("1"), None)
        );
        assert_eq!(split_name("a@sha256:00"), ("a", None, Some("sha256:00")));
    }

    #[test]
    fn sizes_and_durations_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(123), "123B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1240), "1.24kB");
        assert_eq!(human_size(4_261_450), "4.26MB");
        assert_eq!(human_size(12_300_000), "12.3MB");
        assert_eq!(since(None), "N/A");
        assert_eq!(
            since(Some("1970-01-01T00:00:00Z")).split(' ').nth(1),
            Some("years")
        );
        let now = berth_layerstore::image::store::format_rfc3339(now_secs() - 3 * 86_400);
        assert_eq!(since(Some(&now)), "3 days ago");
    }
}
