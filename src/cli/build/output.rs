//! `--output`, `--push` and `--load`: where the image goes besides the local store, parsed as
//! buildx parses them, and the exporters that write it there once the build is done.
//!
//! An output is CSV: `type=TYPE,dest=PATH,KEY=VALUE...` (a field holding a comma is quoted,
//! `"name=a,b"`). A value that is one field without `type=` is a shorthand: `-o DIR` is
//! `type=local,dest=DIR` and `-o -` is `type=tar,dest=-`. The types:
//! - `image`: the image under its names in the store, pushed to them with `push=true`;
//!   `registry` is `image` with `push=true`;
//! - `oci`: an OCI image layout, as a tar (`dest=FILE`, `-` for stdout) or, with `tar=false`,
//!   a directory;
//! - `docker`: a docker-archive (what `docker load` reads), to `dest`, or without `dest`
//!   straight into `docker load`;
//! - `local`: the image's root filesystem, written to the directory `dest`;
//! - `tar`: the same root filesystem as a tar (`dest=FILE`, `-` for stdout).
//!
//! `--push` sets `push=true` on every `image` output, adding one when there is none;
//! `--load` adds a `docker` output without `dest` unless there is one. Every output is made
//! from the image the build recorded in the local store.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use berth_builder::solver::Built;
use berth_layerstore::archive::{self, ApplyOptions, TarOptions};
use berth_layerstore::content::Provider;
use berth_layerstore::image::docker_archive::{self, ArchiveImage};
use berth_layerstore::image::layout;
use berth_layerstore::image::store::ImageStore;
use berth_layerstore::image::{Descriptor, descriptor_digest};
use berth_layerstore::media::Compression;

use crate::cli::images::{familiar, parse_name};

/// containerd's annotation for an image's full name in an OCI layout's `index.json`, as
/// BuildKit's `oci` exporter and `berth save --format oci` write it.
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// Where a file output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Standard output (`dest=-`).
    Stdout,
    /// A file, created (with its parent directories) or replaced.
    File(PathBuf),
}

/// One output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The image in the store under `names`; pushed to them when `push`.
    Image {
        push: bool,
        /// `registry.insecure=true`: the names' registries may be plain HTTP or unverified
        /// HTTPS.
        insecure: bool,
    },
    /// An OCI layout: a tar, or a directory (`tar=false`).
    Oci { dest: OciDest },
    /// A docker-archive to `dest`, or into `docker load` when `None`.
    Docker { dest: Option<Dest> },
    /// The root filesystem into a directory.
    Local { dir: PathBuf },
    /// The root filesystem as a tar.
    Tar { dest: Dest },
    /// Nothing beyond the local store and the build cache (`--cache-to`).
    CacheOnly,
}

/// Where an `oci` output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciDest {
    Tar(Dest),
    Dir(PathBuf),
}

/// An output as given, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub kind: Kind,
    /// `name=`: the names this output gives the image (comma-separated, as written); the
    /// `-t` names when not given.
    pub names: Option<Vec<String>>,
    /// `compression=` (`uncompressed`, `gzip`, `zstd`).
    pub compression: Option<Compression>,
    /// `compression-level=`.
    pub level: Option<i32>,
}

impl Output {
    fn new(kind: Kind) -> Output {
        Output {
            kind,
            names: None,
            compression: None,
            level: None,
        }
    }

    /// The names this output uses: its own `name=`, else `tags`.
    pub fn names<'a>(&'a self, tags: &'a [String]) -> &'a [String] {
        self.names.as_deref().unwrap_or(tags)
    }

    /// Whether the output writes to standard output.
    pub fn uses_stdout(&self) -> bool {
        matches!(
            self.kind,
            Kind::Oci {
                dest: OciDest::Tar(Dest::Stdout)
            } | Kind::Docker {
                dest: Some(Dest::Stdout)
            } | Kind::Tar { dest: Dest::Stdout }
        )
    }

    /// The output's type, as `type=` names it.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Image { .. } => "image",
            Kind::Oci { .. } => "oci",
            Kind::Docker { .. } => "docker",
            Kind::Local { .. } => "local",
            Kind::Tar { .. } => "tar",
            Kind::CacheOnly => "cacheonly",
        }
    }
}

/// Splits a CSV record as Go's `encoding/csv` reads one line: fields separated by commas, a
/// field that starts with `"` quoted up to its closing quote, `""` inside quotes for one `"`.
pub(super) fn csv_fields(s: &str) -> anyhow::Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => bail!("{s}: a quoted field is not closed"),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(c) => bail!("{s}: {c:?} after a quoted field"),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
        }
        fields.push(field);
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(key: &str, value: &str) -> anyhow::Result<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => bail!("{key}={value}: not a boolean (true or false)"),
    }
}

/// The `--compression` and `compression=` names.
pub fn parse_compression(value: &str) -> anyhow::Result<Compression> {
    match value {
        "gzip" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        "uncompressed" => Ok(Compression::None),
        "estargz" => bail!("compression estargz is not supported: use gzip, zstd or uncompressed"),
        other => bail!("unknown compression {other:?}: use gzip, zstd or uncompressed"),
    }
}

/// The attributes each type accepts besides `type` and `dest`.
fn known_attributes(kind: &str) -> &'static [&'static str] {
    const IMAGE: &[&str] = &[
        "name",
        "push",
        "registry.insecure",
        "compression",
        "compression-level",
        "force-compression",
        "oci-mediatypes",
        "store",
        "unpack",
    ];
    const ARCHIVE: &[&str] = &[
        "name",
        "tar",
        "compression",
        "compression-level",
        "force-compression",
        "oci-mediatypes",
    ];
    match kind {
        "image" | "registry" => IMAGE,
        "oci" | "docker" => ARCHIVE,
        _ => &[],
    }
}

/// Parses one `--output` value.
pub fn parse(spec: &str) -> anyhow::Result<Output> {
    let fields = csv_fields(spec)?;
    if fields.len() == 1 && fields[0] == spec && !spec.starts_with("type=") {
        return Ok(match spec {
            "-" => Output::new(Kind::Tar { dest: Dest::Stdout }),
            dir => Output::new(Kind::Local {
                dir: PathBuf::from(dir),
            }),
        });
    }
    let mut kind = None;
    let mut dest = None;
    let mut attrs: BTreeMap<String, String> = BTreeMap::new();
    for field in &fields {
        let Some((key, value)) = field.split_once('=') else {
            bail!("--output {spec}: invalid value {field:?}: fields are KEY=VALUE");
        };
        match key.trim().to_lowercase().as_str() {
            "type" => kind = Some(value.to_owned()),
            "dest" => dest = Some(value.to_owned()),
            key => {
                attrs.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    let Some(kind) = kind else {
        bail!("--output {spec}: type is required for output");
    };
    let known = match kind.as_str() {
        "image" | "registry" | "oci" | "docker" | "local" | "tar" | "cacheonly" => {
            known_attributes(&kind)
        }
        other => bail!(
            "--output {spec}: unknown output type {other:?}: use image, registry, oci, docker, local, tar or cacheonly"
        ),
    };
    for key in attrs.keys() {
        if !known.contains(&key.as_str()) {
            let known = if known.is_empty() {
                "only dest".to_owned()
            } else {
                format!("dest, {}", known.join(", "))
            };
            bail!("--output {spec}: unknown field {key:?} for type={kind} (it takes {known})");
        }
    }
    let wants = |key: &str| attrs.get(key).map(String::as_str);
    let flag = |key: &str, default: bool| -> anyhow::Result<bool> {
        match wants(key) {
            Some(v) => parse_bool(key, v).with_context(|| format!("--output {spec}")),
            None => Ok(default),
        }
    };
    let file_dest = |dest: Option<String>| match dest.as_deref() {
        None | Some("-") => Dest::Stdout,
        Some(path) => Dest::File(PathBuf::from(path)),
    };
    let kind = match kind.as_str() {
        "cacheonly" => {
            if dest.is_some() {
                bail!("--output {spec}: type=cacheonly takes no dest");
            }
            Kind::CacheOnly
        }
        "image" | "registry" => {
            if dest.is_some() {
                bail!("--output {spec}: type={kind} takes no dest");
            }
            if !flag("store", true)? {
                bail!(
                    "--output {spec}: store=false is not supported: the image is always kept in the local store"
                );
            }
            Kind::Image {
                push: kind == "registry" || flag("push", false)?,
                insecure: flag("registry.insecure", false)?,
            }
        }
        "oci" => {
            if flag("tar", true)? {
                Kind::Oci {
                    dest: OciDest::Tar(file_dest(dest)),
                }
            } else {
                match dest.as_deref() {
                    None | Some("") => bail!("--output {spec}: dest is required for oci exporter"),
                    Some("-") => bail!("--output {spec}: dest cannot be stdout for oci exporter"),
                    Some(dir) => Kind::Oci {
                        dest: OciDest::Dir(PathBuf::from(dir)),
                    },
                }
            }
        }
        "docker" => {
            if !flag("tar", true)? {
                bail!("--output {spec}: tar=false is not supported for type=docker");
            }
            Kind::Docker {
                dest: dest.map(|d| file_dest(Some(d))),
            }
        }
        "local" => match dest.as_deref() {
            None | Some("") => bail!("--output {spec}: dest is required for local exporter"),
            Some("-") => bail!("--output {spec}: dest cannot be stdout for local exporter"),
            Some(dir) => Kind::Local {
                dir: PathBuf::from(dir),
            },
        },
        _ => Kind::Tar {
            dest: file_dest(dest),
        },
    };
    if !flag("oci-mediatypes", true)? {
        bail!("--output {spec}: oci-mediatypes=false is not supported: berth writes OCI images");
    }
    let mut output = Output::new(kind);
    if let Some(names) = wants("name") {
        let names: Vec<String> = names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        for name in &names {
            parse_name(name).with_context(|| format!("--output {spec}"))?;
        }
        output.names = Some(names);
    }
    if let Some(c) = wants("compression") {
        output.compression =
            Some(parse_compression(c).with_context(|| format!("--output {spec}"))?);
    }
    if let Some(l) = wants("compression-level") {
        output.level =
            Some(l.parse().with_context(|| {
                format!("--output {spec}: compression-level={l} is not a number")
            })?);
    }
    Ok(output)
}

/// All the outputs of a build: `--output` values, then what `--push` and `--load` add, each
/// checked as buildx checks them before the build starts.
pub fn parse_all(specs: &[String], push: bool, load: bool) -> anyhow::Result<Vec<Output>> {
    let mut outputs = specs
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if push {
        let mut found = false;
        for output in &mut outputs {
            if let Kind::Image { push, .. } = &mut output.kind {
                *push = true;
                found = true;
            }
        }
        if !found {
            outputs.push(Output::new(Kind::Image {
                push: true,
                insecure: false,
            }));
        }
    }
    if load
        && !outputs
            .iter()
            .any(|o| matches!(o.kind, Kind::Docker { dest: None }))
    {
        outputs.push(Output::new(Kind::Docker { dest: None }));
    }
    let mut stdout_used = false;
    for output in &outputs {
        if output.uses_stdout() {
            if stdout_used {
                bail!("multiple outputs configured to write to stdout");
            }
            if io::stdout().is_terminal() {
                bail!(
                    "dest file is required for {} exporter. refusing to write to console",
                    output.type_name()
                );
            }
            stdout_used = true;
        }
        match &output.kind {
            Kind::Local { dir }
            | Kind::Oci {
                dest: OciDest::Dir(dir),
            } if dir.exists() && !dir.is_dir() => {
                bail!("destination directory {} is a file", dir.display());
            }
            Kind::Oci {
                dest: OciDest::Tar(Dest::File(file)),
            }
            | Kind::Docker {
                dest: Some(Dest::File(file)),
            }
            | Kind::Tar {
                dest: Dest::File(file),
            } if file.is_dir() => {
                bail!("destination file {} is a directory", file.display());
            }
            _ => {}
        }
    }
    Ok(outputs)
}

/// The layers' compression for a build: `--compression`, or what the outputs ask for with
/// `compression=`. Layers are written once for all outputs, so the outputs must agree.
pub fn compression(
    flag: Option<Compression>,
    outputs: &[Output],
) -> anyhow::Result<(Option<Compression>, Option<i32>)> {
    let mut chosen = flag;
    let mut level = None;
    for output in outputs {
        if let Some(c) = output.compression {
            match chosen {
                Some(have) if have != c => bail!(
                    "the outputs ask for different compressions ({have:?} and {c:?}); berth writes each layer once for all outputs"
                ),
                _ => chosen = Some(c),
            }
        }
        if let Some(l) = output.level {
            match level {
                Some(have) if have != l => {
                    bail!("the outputs ask for different compression levels ({have} and {l})")
                }
                _ => level = Some(l),
            }
        }
    }
    Ok((chosen, level))
}

/// Writes through `write` to standard output, or to `path` by way of a temporary file beside
/// it that is renamed into place once complete (so a failed export leaves no partial file).
fn write_to(
    dest: &Dest,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match dest {
        Dest::Stdout => {
            let stdout = io::stdout();
            let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
            write(&mut out)?;
            out.flush().context("writing to stdout")
        }
        Dest::File(path) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut tmp = tempfile::Builder::new()
                .prefix(".berth-output-")
                .tempfile_in(dir)
                .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
            {
                let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
                write(&mut out)?;
                out.flush()?;
            }
            // Not fsynced, as `docker save` and buildx's exporters do not: the output is a file
            // for the next command, and the rename keeps a failed export from leaving a partial
            // one.
            tmp.persist(path)
                .map_err(|e| e.error)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(())
        }
    }
}

/// The OCI layout entries for `names` (normalized, each annotated with its full name as
/// containerd reads it), or one unnamed entry.
fn layout_entries(
    manifest: &Descriptor,
    names: &[String],
) -> anyhow::Result<Vec<(Option<String>, Descriptor)>> {
    if names.is_empty() {
        return Ok(vec![(None, manifest.clone())]);
    }
    names
        .iter()
        .map(|n| {
            let (_, name) = parse_name(n)?;
            let mut desc = manifest.clone();
            let mut annotations = desc.annotations().clone().unwrap_or_default();
            annotations.insert(CONTAINERD_NAME_ANNOTATION.to_owned(), name.clone());
            desc.set_annotations(Some(annotations));
            Ok((Some(name), desc))
        })
        .collect()
}

/// `type=oci`.
pub fn write_oci(
    store: &ImageStore,
    built: &Built,
    names: &[String],
    dest: &OciDest,
) -> anyhow::Result<()> {
    let entries = layout_entries(&built.manifest, names)?;
    match dest {
        OciDest::Tar(dest) => write_to(dest, |out| {
            layout::export_tar(store.content(), &entries, out)?;
            Ok(())
        }),
        OciDest::Dir(dir) => {
            layout::export(store.content(), &entries, dir)
                .with_context(|| format!("writing the OCI layout {}", dir.display()))?;
            Ok(())
        }
    }
}

/// The docker-archive of the image, named as Docker shows `names`.
fn docker_archive_to(
    store: &ImageStore,
    built: &Built,
    names: &[String],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut repo_tags = Vec::new();
    for n in names {
        let (reference, name) = parse_name(n)?;
        if reference.digest.is_some() {
            bail!("{n}: a docker-archive names images by tag, not by digest");
        }
        let tag = familiar(&name).to_owned();
        if !repo_tags.contains(&tag) {
            repo_tags.push(tag);
        }
    }
    let image = ArchiveImage {
        manifest: built.manifest.clone(),
        repo_tags,
    };
    docker_archive::write(store.content(), &[image], out)?;
    Ok(())
}

/// `type=docker`: to `dest`, or into `docker load` (`docker` on `PATH`, or `$BERTH_DOCKER`);
/// returns what `docker load` said (`Loaded image: NAME`).
pub fn write_docker(
    store: &ImageStore,
    built: &Built,
    names: &[String],
    dest: Option<&Dest>,
) -> anyhow::Result<String> {
    if let Some(dest) = dest {
        write_to(dest, |out| docker_archive_to(store, built, names, out))?;
        return Ok(String::new());
    }
    let docker = std::env::var_os("BERTH_DOCKER").unwrap_or_else(|| "docker".into());
    let mut child = Command::new(&docker)
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} load", docker.to_string_lossy()))?;
    let stdin = child.stdin.take().context("docker load has no stdin")?;
    let written = {
        let mut out = BufWriter::with_capacity(1 << 20, stdin);
        docker_archive_to(store, built, names, &mut out).and_then(|()| Ok(out.flush()?))
    };
    let result = child
        .wait_with_output()
        .context("waiting for docker load")?;
    let report = String::from_utf8_lossy(&result.stdout);
    if !result.status.success() {
        bail!(
            "docker load failed ({}): {}",
            result.status,
            String::from_utf8_lossy(&result.stderr).trim()
        );
    }
    written.context("writing to docker load")?;
    Ok(report.into_owned())
}

/// Whether this process runs as root, so that applied files may keep their owners.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Applies the image's layers in order onto `dir` (which must be empty or missing).
fn unpack(store: &ImageStore, built: &Built, dir: &Path) -> anyhow::Result<()> {
    let opts = ApplyOptions {
        preserve_owner: is_root(),
        ..ApplyOptions::default()
    };
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for layer in &built.layers {
        let digest = descriptor_digest(layer)?;
        let reader = store
            .content()
            .read(&digest, None)
            .with_context(|| format!("reading layer {digest}"))?;
        archive::apply_layer(reader, dir, &opts)
            .with_context(|| format!("unpacking layer {digest} into {}", dir.display()))?;
    }
    Ok(())
}

/// Moves what `from` holds into `to`: entries missing from `to` are renamed into it,
/// directories present in both are merged, anything else in `to` is replaced.
fn merge_into(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let source = entry.path();
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() && entry.file_type()?.is_dir() => {
                merge_into(&source, &target)?;
                continue;
            }
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&target)?,
            Ok(_) => fs::remove_file(&target)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context(target.display().to_string())),
        }
        fs::rename(&source, &target)
            .with_context(|| format!("moving {} to {}", source.display(), target.display()))?;
    }
    Ok(())
}

/// `type=local`: the root filesystem into `dir`, unpacked beside it first and moved in once
/// complete. Files already in `dir` stay unless the image has the same path.
pub fn write_local(store: &ImageStore, built: &Built, dir: &Path) -> anyhow::Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".berth-output-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    let rootfs = tmp.path().join("rootfs");
    unpack(store, built, &rootfs)?;
    let empty = match fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(anyhow::Error::new(e).context(dir.display().to_string())),
    };
    if empty {
        if dir.exists() {
            fs::remove_dir(dir).with_context(|| format!("replacing {}", dir.display()))?;
        }
        fs::rename(&rootfs, dir).with_context(|| format!("moving the files to {}", dir.display()))
    } else {
        merge_into(&rootfs, dir)
    }
}

/// `type=tar`: the root filesystem as a tar, unpacked in a scratch directory of the store and
/// written with the deterministic tar writer.
pub fn write_tar(store: &ImageStore, built: &Built, dest: &Dest) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix(".berth-rootfs-")
        .tempdir_in(store.root())
        .context("creating a scratch directory in the store")?;
    let rootfs = tmp.path().join("rootfs");
    unpack(store, built, &rootfs)?;
    let opts = TarOptions {
        overlay_whiteouts: false,
        ..TarOptions::from_env()?
    };
    write_to(dest, |out| {
        archive::write_dir(&rootfs, out, &opts).context("writing the root filesystem")?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_outputs_as_buildx_does() {
        assert_eq!(
            parse("out").unwrap().kind,
            Kind::Local {
                dir: PathBuf::from("out")
            }
        );
        assert_eq!(parse("-").unwrap().kind, Kind::Tar { dest: Dest::Stdout });
        assert_eq!(parse("type=cacheonly").unwrap().kind, Kind::CacheOnly);
        assert!(parse("type=cacheonly,dest=x").is_err());
        // One field without type= is a directory, whatever it looks like, as in buildx.
        assert_eq!(
            parse("dest=x").unwrap().kind,
            Kind::Local {
                dir: PathBuf::from("dest=x")
            }
        );
        assert_eq!(
            parse("type=oci,dest=a.tar").unwrap().kind,
            Kind::Oci {
                dest: OciDest::Tar(Dest::File("a.tar".into()))
            }
        );
        assert_eq!(
            parse("type=oci,dest=dir,tar=false").unwrap().kind,
            Kind::Oci {
                dest: OciDest::Dir("dir".into())
            }
        );
        assert_eq!(
            parse("type=docker").unwrap().kind,
            Kind::Docker { dest: None }
        );
        assert_eq!(
            parse("type=registry").unwrap().kind,
            Kind::Image {
                push: true,
                insecure: false
            }
        );
        let image = parse("type=image,\"name=a:1,b:2\",push=true,registry.insecure=true").unwrap();
        assert_eq!(
            image.kind,
            Kind::Image {
                push: true,
                insecure: true
            }
        );
        assert_eq!(image.names.unwrap(), ["a:1", "b:2"]);
        let zstd = parse("type=oci,dest=-,compression=zstd,compression-level=9").unwrap();
        assert_eq!(zstd.compression, Some(Compression::Zstd));
        assert_eq!(zstd.level, Some(9));

        for (bad, says) in [
            ("type=nope", "unknown output type"),
            ("type=oci,foo=bar", "unknown field \"foo\" for type=oci"),
            ("type=local", "dest is required for local exporter"),
            ("type=local,dest=-", "dest cannot be stdout"),
            ("type=local,dest=d,name=x", "unknown field \"name\""),
            ("type=image,push=maybe", "not a boolean"),
            ("dest=x,y", "invalid value \"y\""),
            ("dest=x,tar=true", "type is required"),
            ("type=oci,compression=lz4", "unknown compression"),
        ] {
            let err = format!("{:#}", parse(bad).unwrap_err());
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn push_and_load_add_outputs() {
        let outputs = parse_all(&[], true, false).unwrap();
        assert_eq!(
            outputs[0].kind,
            Kind::Image {
                push: true,
                insecure: false
            }
        );
        let outputs = parse_all(&["type=image,name=x:1".into()], true, false).unwrap();
        assert_eq!(outputs.len(), 1);
        assert_eq!(
            outputs[0].kind,
            Kind::Image {
                push: true,
                insecure: false
            }
        );
        let outputs = parse_all(&["type=docker".into()], false, true).unwrap();
        assert_eq!(outputs.len(), 1);
        let outputs = parse_all(&["type=docker,dest=a.tar".into()], false, true).unwrap();
        assert_eq!(outputs.len(), 2);
    }

    #[test]
    fn outputs_agree_on_compression() {
        let outputs = parse_all(
            &[
                "type=oci,dest=a,compression=zstd".into(),
                "type=image,compression=zstd".into(),
            ],
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            compression(None, &outputs).unwrap(),
            (Some(Compression::Zstd), None)
        );
        assert!(compression(Some(Compression::Gzip), &outputs).is_err());
    }

    #[test]
    fn csv_fields_follow_go() {
        assert_eq!(csv_fields("a,b").unwrap(), ["a", "b"]);
        assert_eq!(csv_fields("\"a,b\",c").unwrap(), ["a,b", "c"]);
        assert_eq!(csv_fields("\"a\"\"b\"").unwrap(), ["a\"b"]);
        assert_eq!(csv_fields("").unwrap(), [""]);
        assert!(csv_fields("\"a").is_err());
    }
}
