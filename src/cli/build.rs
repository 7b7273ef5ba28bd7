//! `berth build`: builds the image of a Dockerfile with `berth_builder::solver`, with the
//! flags of `docker buildx build`. The image always lands in the local image store; the
//! outputs (`--output`, `--push`, `--load`, see [`output`]) are made from it. Base images the
//! store lacks are pulled first ([`pull`]); with `--push` the layers are uploaded while later
//! steps still run ([`push`]). Progress goes to stderr ([`progress`]: BuildKit's plain lines,
//! a live view, or nothing), the image id to stdout unless an output writes there.
//! `--metadata-file` and `--iidfile` record the result. `--cache-from` and `--cache-to`
//! ([`cache`]) import the build cache before the build and export it after. `--check` runs
//! BuildKit's build checks on the Dockerfile instead and prints their findings as `docker
//! buildx build --check` does.

mod cache;
mod output;
mod progress;
mod pull;
mod push;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use berth_builder::context::Context;
use berth_builder::instructions;
use berth_builder::lint::{self, Linter, Report, Scope};
use berth_builder::parser::{self, Dockerfile};
use berth_builder::solver::{self, Built, Progress, SolveOptions, Solver};
use berth_layerstore::Digest;
use berth_layerstore::image::platform;
use berth_layerstore::layer::LayerOptions;
use berth_layerstore::media::Compression;
use berth_registry::client::{Client, ClientOptions};
use berth_registry::reference::Reference;
use clap::{Args, ValueEnum};

use self::progress::Display;
use self::push::EarlyUploads;
use super::images::{StoreArgs, normalize, parse_name, snapshot_root};
use super::progress::ProgressMode;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The Dockerfile (default: `CONTEXT/Dockerfile`); `-` reads standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A name for the image (`name:tag`); may be repeated.
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tags: Vec<String>,
    /// A build argument: `KEY=VALUE`, or `KEY` to take the value from the environment; may be
    /// repeated. `BUILDKIT_DOCKERFILE_CHECK` replaces the Dockerfile's `# check=` directive.
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// A secret for `RUN --mount=type=secret`: `id=ID,src=FILE`, or `id=ID,env=VAR` to take it
    /// from an environment variable; may be repeated. Secrets never reach the image.
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    pub secrets: Vec<String>,
    /// An SSH agent socket for `RUN --mount=type=ssh`: `default` (or `ID`) for
    /// `$SSH_AUTH_SOCK`, `ID=SOCKET` for another; may be repeated. Key files are not supported.
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET]")]
    pub ssh: Vec<String>,
    /// The stage to build; the checks that BuildKit runs per stage then look only at the stages
    /// it needs.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Run the build checks instead of building, and print what they find. Exits with 1 when
    /// `# check=error=true` is set and something was found.
    #[arg(long)]
    pub check: bool,
    /// The OCI runtime that runs RUN steps [default: runc on PATH].
    #[arg(long, value_name = "PATH")]
    pub runtime: Option<PathBuf>,
    /// Where else the image goes, as buildx names it: `type=image[,push=true]`,
    /// `type=registry`, `type=oci[,dest=FILE|-]`, `type=docker[,dest=FILE|-]` (without dest:
    /// into `docker load`), `type=local,dest=DIR`, `type=tar[,dest=FILE|-]`; `-o DIR` is
    /// local, `-o -` a tar on stdout. May be repeated.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub output: Vec<String>,
    /// Push the image to the registries of its names (`--output type=registry`); layers go up
    /// while later steps still run.
    #[arg(long)]
    pub push: bool,
    /// Load the image into docker (`--output type=docker`).
    #[arg(long)]
    pub load: bool,
    /// Pull every base image again, even those the local store has.
    #[arg(long)]
    pub pull: bool,
    /// Run every step, taking nothing from the build cache (what the steps make is still
    /// recorded for later builds).
    #[arg(long)]
    pub no_cache: bool,
    /// Run the steps of this stage whatever the cache holds; may be repeated.
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    pub no_cache_filter: Vec<String>,
    /// A build cache to take step results from: `type=registry,ref=REF` (a cache exported
    /// with --cache-to, or an image built with `--cache-to type=inline`; a bare `REF` says the
    /// same) or `type=local,src=DIR[,tag=T]`. May be repeated. A cache that cannot be read is
    /// skipped with a warning.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Where to export the build cache: `type=registry,ref=REF`, `type=local,dest=DIR[,tag=T]`
    /// (an OCI layout) or `type=inline` (in the image's config), with `mode=min` (the target
    /// stage's steps, the default) or `mode=max` (every stage's) and `ignore-error=true` to
    /// only warn when it fails. May be repeated.
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// How many steps may execute at once; independent stages run concurrently
    /// [default: the number of CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// Write the image id to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write the build's result as JSON (`containerimage.digest`, `containerimage.descriptor`,
    /// `containerimage.config.digest`, `image.name`), as buildx does.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// auto (a live view on a terminal, plain lines otherwise), plain, tty or quiet.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Print nothing but the image id (`--progress quiet`).
    #[arg(short, long)]
    pub quiet: bool,
    /// The network of RUN steps that do not choose one with `RUN --network`: default (the
    /// host's), none (loopback only) or host.
    #[arg(long, value_enum, default_value_t = Network::Default)]
    pub network: Network,
    /// Build for reproducibility: the same inputs give the same image digest, wherever and
    /// whenever they are built. `SOURCE_DATE_EPOCH` (a build argument, else the environment;
    /// 0 when neither has it) becomes the `created` of the config and the history, and no
    /// mtime in a new layer is later. A `SOURCE_DATE_EPOCH` alone does the same.
    #[arg(long)]
    pub reproducible: bool,
    /// How new layers are compressed: gzip, zstd or uncompressed [default: gzip].
    #[arg(long, value_name = "KIND", value_parser = output::parse_compression)]
    pub compression: Option<Compression>,
    /// A registry (host or host:port) that may be reached without TLS verification or over
    /// plain HTTP, for pulls and pushes. Loopback registries need no flag. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The build context: a directory.
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    if args.check {
        check(&args)
    } else {
        build(&args)
    }
}

/// `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Network {
    /// The sandbox's default: the host's network.
    Default,
    /// A network namespace with only the loopback interface.
    None,
    /// The host's network.
    Host,
}

impl Network {
    fn mode(self) -> instructions::NetworkMode {
        match self {
            Network::Default => instructions::NetworkMode::Default,
            Network::None => instructions::NetworkMode::None,
            Network::Host => instructions::NetworkMode::Host,
        }
    }
}

/// A `-t` or `name=` name: as written (for `image.name` and archives) and as a reference.
struct Name {
    given: String,
    reference: Reference,
    normalized: String,
}

fn parse_names(names: &[String]) -> anyhow::Result<Vec<Name>> {
    names
        .iter()
        .map(|n| {
            let (reference, normalized) = parse_name(n)?;
            Ok(Name {
                given: n.clone(),
                reference,
                normalized,
            })
        })
        .collect()
}

/// Builds the image: base images pulled when missing, lowering (with the configs of the base
/// images), the solver (layers uploaded as they are made when pushing), then the outputs,
/// `--metadata-file` and `--iidfile`. Progress goes to stderr; the image id to stdout unless
/// an output writes there.
fn build(args: &BuildArgs) -> anyhow::Result<()> {
    let plan = plan(args)?;
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        args.progress
    };
    let display = Arc::new(Display::new(mode));
    let result = build_with(args, plan, &display);
    display.finish(result.is_ok());
    let (id, stdout_used) = result?;
    if !stdout_used {
        println!("{id}");
    }
    Ok(())
}

/// What the flags ask of a build, checked before anything is read or built.
struct Plan {
    outputs: Vec<output::Output>,
    /// `-t` as given.
    tags: Vec<String>,
    /// The names the store records the image under (normalized): the tags and the `name=` of
    /// `image` outputs.
    store_names: Vec<String>,
    /// Where the image is pushed, each once.
    destinations: Vec<Reference>,
    /// Registries reached without TLS checks.
    insecure: Vec<String>,
    layer: LayerOptions,
    cache_from: Vec<cache::Import>,
    cache_to: Vec<cache::Export>,
}

fn plan(args: &BuildArgs) -> anyhow::Result<Plan> {
    let outputs = output::parse_all(&args.output, args.push, args.load)?;
    let tags = parse_names(&args.tags)?;
    let given_tags: Vec<String> = tags.iter().map(|t| t.given.clone()).collect();
    // Names the store records: the tags and the `name=` of image outputs.
    let mut store_names: Vec<String> = tags.iter().map(|t| t.normalized.clone()).collect();
    // Where the image is pushed, each once.
    let mut destinations: Vec<Reference> = Vec::new();
    let mut insecure = args.insecure_registries.clone();
    for o in &outputs {
        if let output::Kind::Image { push, insecure: i } = o.kind {
            let names = parse_names(o.names(&given_tags))?;
            if push && names.is_empty() {
                bail!("tag is needed when pushing to registry: give the image a name with -t");
            }
            for name in names {
                if !store_names.contains(&name.normalized) {
                    store_names.push(name.normalized.clone());
                }
                if i {
                    insecure.push(name.reference.registry.clone());
                }
                if push && !destinations.contains(&name.reference) {
                    destinations.push(name.reference);
                }
            }
        }
    }
    let cache_from = args
        .cache_from
        .iter()
        .map(|spec| cache::parse_import(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cache_to = args
        .cache_to
        .iter()
        .map(|spec| cache::parse_export(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cache_insecure = cache_from
        .iter()
        .filter_map(cache::Import::insecure_registry)
        .chain(cache_to.iter().filter_map(cache::Export::insecure_registry));
    insecure.extend(cache_insecure.map(str::to_owned));
    let (compression, level) = output::compression(args.compression, &outputs)?;
    let mut layer = LayerOptions::default();
    layer.tar.source_date_epoch = source_date_epoch(args)?;
    if let Some(c) = compression {
        layer.compression = c;
    }
    layer.level = level;
    Ok(Plan {
        outputs,
        tags: given_tags,
        store_names,
        destinations,
        insecure,
        layer,
        cache_from,
        cache_to,
    })
}

/// The network client and async runtime of a build, made when first needed.
struct Transfers {
    insecure: Vec<String>,
    made: Option<(tokio::runtime::Runtime, Client)>,
}

impl Transfers {
    fn get(&mut self) -> anyhow::Result<&(tokio::runtime::Runtime, Client)> {
        if self.made.is_none() {
            let client = Client::new(ClientOptions {
                insecure_registries: self.insecure.clone(),
                ..ClientOptions::default()
            })
            .context("setting up the registry client")?;
            self.made = Some((push::runtime()?, client));
        }
        Ok(self.made.as_ref().expect("made above"))
    }
}

/// [`build`] once the arguments are checked: returns the image id and whether an output wrote
/// to stdout.
fn build_with(
    args: &BuildArgs,
    plan: Plan,
    display: &Arc<Display>,
) -> anyhow::Result<(Digest, bool)> {
    let Plan {
        outputs,
        tags: given_tags,
        store_names,
        destinations,
        insecure,
        layer,
        cache_from,
        cache_to,
    } = plan;
    let (source, name) = read_dockerfile(args)?;
    let tree = parser::parse(&source, &name).map_err(|e| anyhow!("{e}"))?;
    let mut transfers = Transfers {
        insecure,
        made: None,
    };
    let mut options = instructions::BuildOptions {
        build_args: build_args_with_epoch(args)?,
        target: args.target.clone(),
        ..instructions::BuildOptions::default()
    };
    let lower = |options: &instructions::BuildOptions| {
        let mut linter = Linter::new(tree.check.clone());
        instructions::lower(&tree, options, &mut linter)
            .map_err(|e| anyhow!("{}", e.with_source(&source)))
    };
    let mut lowered = lower(&options)?;
    // Only a Dockerfile that parses and lowers touches the store.
    let store = args.store.open()?;
    let mut sources = pull::image_sources(&lowered);
    let missing = pull::missing(&store, &sources, args.pull)?;
    if !missing.is_empty() {
        let (runtime, client) = transfers.get()?;
        pull::pull_all(runtime, client, &store, &missing, &source, display)?;
    }
    let bases = solver::base_images(&store, &lowered, &normalize);
    if !bases.is_empty() {
        options.base_images = bases;
        lowered = lower(&options)?;
        // The bases' ONBUILD triggers may read images of their own (`COPY --from`).
        let more: Vec<pull::ImageSource> = pull::image_sources(&lowered)
            .into_iter()
            .filter(|s| !sources.iter().any(|known| known.name == s.name))
            .collect();
        let missing = pull::missing(&store, &more, args.pull)?;
        if !missing.is_empty() {
            let (runtime, client) = transfers.get()?;
            pull::pull_all(runtime, client, &store, &missing, &source, display)?;
        }
        sources.extend(more);
    }
    let dockerfile = match &args.file {
        Some(f) if f.as_os_str() == "-" => None,
        Some(f) => Some(f.clone()),
        None => Some(args.context.join("Dockerfile")),
    };
    let context = Context::open(&args.context, dockerfile.as_deref())
        .with_context(|| format!("opening the build context {}", args.context.display()))?;
    let root = store.root().to_path_buf();
    // The images the build reads may hold blobs of the result in the destination registry:
    // pushes try mounting from them before uploading.
    let mount_from: Vec<Reference> = sources
        .iter()
        .filter_map(|s| parse_name(&s.name).ok())
        .map(|(reference, _)| reference)
        .collect();
    // With --no-cache nothing is taken from any cache: the imports are not even read.
    let cache_from = if args.no_cache || cache_from.is_empty() {
        Vec::new()
    } else {
        let registry = if cache_from.iter().any(cache::Import::uses_registry) {
            Some(transfers.get()?)
        } else {
            None
        };
        let p = &lowered.target_platform;
        let variant = (!p.variant.is_empty()).then_some(p.variant.as_str());
        let platform = platform::platform_of(&p.os, &p.architecture, variant);
        cache::import_all(&cache_from, registry, &platform, display)
    };
    let mut early = None;
    let mut layer_sink = None;
    if !destinations.is_empty() {
        let (runtime, client) = transfers.get()?;
        // Blobs go to repositories: one upload per repository, whatever its tags.
        let mut repositories: Vec<Reference> = Vec::new();
        for d in &destinations {
            if !repositories
                .iter()
                .any(|r| r.registry == d.registry && r.repository == d.repository)
            {
                repositories.push(d.clone());
            }
        }
        let plan = push::EarlyPlan {
            destinations: repositories,
            base_layers: pull::base_layers(&store, &lowered),
            content: store.content().clone(),
            mount_from: mount_from.clone(),
        };
        let (uploads, sender) = EarlyUploads::start(
            runtime.handle().clone(),
            client.clone(),
            plan,
            display.clone(),
        );
        early = Some(uploads);
        layer_sink = Some(sender);
    }
    let solve_options = SolveOptions {
        snapshot_root: snapshot_root(&store),
        sandbox_root: root.join("sandbox"),
        runtime: args.runtime.clone(),
        names: store_names,
        layer,
        network: args.network.mode(),
        layer_sink,
        mounts_root: root.join("run-mounts"),
        secrets: solver::parse_secrets(&args.secrets).map_err(|e| anyhow!("--secret: {e}"))?,
        jobs: args.jobs.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            |n| n as usize,
        ),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        cache_from,
        ssh: solver::parse_ssh(&args.ssh).map_err(|e| anyhow!("--ssh: {e}"))?,
    };
    let mut progress = |event: Progress<'_>| display.solver(event);
    let built = Solver::new(
        &store,
        &context,
        &source,
        &normalize,
        solve_options,
        &mut progress,
    )
    .and_then(|solver| solver.build(&lowered));
    // The solver is gone, and with it the layer sink: the uploads end.
    if let Some(early) = early {
        let report = early.finish();
        tracing::debug!(
            uploaded = report.uploaded,
            failed = report.failed,
            "layers pushed during the build"
        );
    }
    let mut built = built?;
    if !cache_to.is_empty() {
        let registry = if cache_to.iter().any(cache::Export::uses_registry) {
            Some(transfers.get()?)
        } else {
            None
        };
        // The cache's layers may be in the bases' repositories and, pushed while the build
        // ran, in the image's.
        let mut mount_from = mount_from.clone();
        mount_from.extend(destinations.iter().cloned());
        let cx = cache::ExportContext {
            store: &store,
            target: lowered.target,
            registry,
            mount_from,
            display,
        };
        built = cache::export_all(&cache_to, built, &cx)?;
    }

    let mut stdout_used = false;
    for o in &outputs {
        stdout_used |= o.uses_stdout();
        let names = o.names(&given_tags);
        // `image` outputs are the store's names, already recorded; pushes follow below.
        if let output::Kind::Image { .. } | output::Kind::CacheOnly = o.kind {
            continue;
        }
        let vertex = display.start(&export_label(&o.kind));
        let t = Instant::now();
        let done = match &o.kind {
            output::Kind::Image { .. } | output::Kind::CacheOnly => Ok(()),
            output::Kind::Oci { dest } => output::write_oci(&store, &built, names, dest),
            output::Kind::Docker { dest } => {
                output::write_docker(&store, &built, names, dest.as_ref()).map(|report| {
                    for line in report.lines() {
                        display.status(vertex, line);
                    }
                })
            }
            output::Kind::Local { dir } => output::write_local(&store, &built, dir),
            output::Kind::Tar { dest } => output::write_tar(&store, &built, dest),
        };
        match &done {
            Ok(()) => display.done(vertex, t.elapsed().as_secs_f64(), None, false),
            Err(e) => display.error(vertex, &format!("{e:#}")),
        }
        done?;
    }
    for destination in &destinations {
        let (runtime, client) = transfers.get()?;
        push::push_image(
            runtime,
            client,
            &store,
            &built,
            destination,
            mount_from.clone(),
            display,
        )?;
    }
    if let Some(path) = &args.metadata_file {
        let names = outputs
            .iter()
            .find(|o| matches!(o.kind, output::Kind::Image { .. }))
            .map_or(&given_tags[..], |o| o.names(&given_tags));
        write_metadata(path, &built, names)?;
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, built.id.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((built.id, stdout_used))
}

/// The vertex name of an export, as BuildKit names its exporters' work.
fn export_label(kind: &output::Kind) -> String {
    use output::{Dest, Kind, OciDest};
    let dest = |d: &Dest| match d {
        Dest::Stdout => "stdout".to_owned(),
        Dest::File(p) => p.display().to_string(),
    };
    match kind {
        Kind::Image { .. } | Kind::CacheOnly => "exporting to image".to_owned(),
        Kind::Oci {
            dest: OciDest::Tar(d),
        } => format!("exporting to oci image format ({})", dest(d)),
        Kind::Oci {
            dest: OciDest::Dir(d),
        } => format!("exporting to oci image layout {}", d.display()),
        Kind::Docker { dest: None } => "exporting to docker (docker load)".to_owned(),
        Kind::Docker { dest: Some(d) } => {
            format!("exporting to docker image format ({})", dest(d))
        }
        Kind::Local { dir } => format!("exporting to client directory {}", dir.display()),
        Kind::Tar { dest: d } => format!("exporting to client tarball ({})", dest(d)),
    }
}

/// `--metadata-file`: what buildx writes for an image build. `image.name` lists the names as
/// given, comma-separated.
fn write_metadata(path: &Path, built: &Built, names: &[String]) -> anyhow::Result<()> {
    let mut descriptor = serde_json::to_value(&built.manifest)?;
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "config.digest".into(),
        built.config.digest().to_string().into(),
    );
    if let Some(created) = &built.created {
        annotations.insert(
            "org.opencontainers.image.created".into(),
            created.clone().into(),
        );
    }
    descriptor["annotations"] = serde_json::Value::Object(annotations);
    let mut metadata = serde_json::json!({
        "containerimage.config.digest": built.config.digest().to_string(),
        "containerimage.descriptor": descriptor,
        "containerimage.digest": built.manifest.digest().to_string(),
    });
    if !names.is_empty() {
        metadata["image.name"] = names.join(",").into();
    }
    let text = serde_json::to_string_pretty(&metadata)?;
    std::fs::write(path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))
}

/// `--check`: stdout gets the report (nothing when the check failed without findings), and a
/// failure (an unknown target, a lowering error, or findings under `error=true`) is returned
/// after it, as buildx prints it after the findings.
fn check(args: &BuildArgs) -> anyhow::Result<()> {
    let (source, name) = read_dockerfile(args)?;
    // The parse error renders itself like rustc (location, source line, caret, hint).
    let tree = parser::parse(&source, &name).map_err(|e| anyhow!("{e}"))?;
    let build_args = build_args(&args.build_args)?;
    let options = match build_args.get("BUILDKIT_DOCKERFILE_CHECK") {
        Some(value) => parser::parse_check_options(value)
            .map_err(|e| anyhow!("failed to parse check options: {e}"))?,
        None => tree.check.clone(),
    };
    let scope = Scope {
        target: args.target.clone(),
        build_args,
    };
    let mut linter = Linter::new(options);
    let failure = match lint::check_scoped(&tree, &source, &scope, &mut linter) {
        Err(unknown) => Some(anyhow::Error::new(unknown)),
        Ok(()) => lower_for_check(&tree, &source, &scope, &mut linter).err(),
    };
    let report = Report::new(linter, source);
    let failure = failure.or_else(|| report.error_message().map(|m| anyhow!(m)));

    let mut out = std::io::stdout().lock();
    if !report.warnings().is_empty() || failure.is_none() {
        write!(out, "{report}")?;
    }
    match failure {
        Some(err) => {
            if !report.warnings().is_empty() {
                writeln!(out)?;
            }
            out.flush()?;
            Err(err)
        }
        None => Ok(out.flush()?),
    }
}

/// The checks that need ARG/ENV scoping (`UndefinedVar`, `UndefinedArgInFrom`,
/// `InvalidDefaultArgInFrom`, `SecretsUsedInArgOrEnv`, `WorkdirRelativePath`,
/// `RedundantTargetPlatform`, `FromPlatformFlagConstDisallowed`), which
/// `berth_builder::instructions` reports into the same linter while it lowers the tree. An
/// instruction that does not lower is the check's error, printed after the findings.
fn lower_for_check(
    tree: &Dockerfile,
    source: &str,
    scope: &Scope,
    linter: &mut Linter,
) -> anyhow::Result<()> {
    let options = instructions::BuildOptions {
        build_args: scope.build_args.clone(),
        target: scope.target.clone(),
        ..instructions::BuildOptions::default()
    };
    instructions::lower(tree, &options, linter)
        .map_err(|e| anyhow!("{}", e.with_source(source)))?;
    Ok(())
}

/// The Dockerfile's text and the name its findings use: the path as given with `-f`, else
/// `CONTEXT/Dockerfile`, as buildx names it.
fn read_dockerfile(args: &BuildArgs) -> anyhow::Result<(String, String)> {
    let context = &args.context;
    let is_remote = |p: &Path| {
        let s = p.to_string_lossy();
        s == "-" || s.contains("://") || s.starts_with("git@")
    };
    if !is_remote(context) && !context.is_dir() {
        anyhow::bail!(
            "unable to prepare context: path {:?} not found",
            context.display().to_string()
        );
    }
    let path = match &args.file {
        Some(file) if file.as_os_str() == "-" => {
            let mut source = String::new();
            std::io::stdin()
                .read_to_string(&mut source)
                .context("reading the Dockerfile from standard input")?;
            return Ok((source, "Dockerfile".to_string()));
        }
        Some(file) => file.clone(),
        None => context.join("Dockerfile"),
    };
    let source =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.to_string_lossy();
    let name = name.strip_prefix("./").unwrap_or(name.as_ref()).to_string();
    Ok((source, name))
}

/// The build arguments, with `SOURCE_DATE_EPOCH` taken from the environment when no
/// `--build-arg` gives it, as buildx passes it on: the Dockerfile's `ARG SOURCE_DATE_EPOCH`
/// then sees the same value however it was given, and so does the image.
fn build_args_with_epoch(args: &BuildArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = build_args(&args.build_args)?;
    if !map.contains_key("SOURCE_DATE_EPOCH") {
        if let Ok(value) = std::env::var("SOURCE_DATE_EPOCH") {
            if !value.trim().is_empty() {
                map.insert("SOURCE_DATE_EPOCH".to_owned(), value);
            }
        }
    }
    Ok(map)
}

/// The build's `SOURCE_DATE_EPOCH`: the build argument, else the environment variable (as
/// buildx passes it on), else 0 under `--reproducible`; `None` when there is none.
fn source_date_epoch(args: &BuildArgs) -> anyhow::Result<Option<i64>> {
    let value = build_args_with_epoch(args)?.remove("SOURCE_DATE_EPOCH");
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(args.reproducible.then_some(0)),
        Some(v) => match v.parse::<i64>() {
            Ok(secs) if secs >= 0 => Ok(Some(secs)),
            _ => bail!(
                "invalid SOURCE_DATE_EPOCH {v:?}: expected a number of seconds since 1970-01-01"
            ),
        },
    }
}

/// `--build-arg` values: `KEY=VALUE`, or `KEY` alone for the value of the environment
/// variable `KEY` (left out when it is not set), as docker does.
fn build_args(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut args = BTreeMap::new();
    for arg in raw {
        let (key, value) = match arg.split_once('=') {
            Some((key, value)) => (key, Some(value.to_string())),
            None => (arg.as_str(), std::env::var(arg).ok()),
        };
        if key.is_empty() {
            anyhow::bail!("invalid build argument {arg:?}: the name is empty");
        }
        if let Some(value) = value {
            args.insert(key.to_string(), value);
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_take_values_or_the_environment() {
        let args = build_args(&[
            "A=1".to_string(),
            "B=x=y".to_string(),
            "PATH".to_string(),
            "BERTH_SURELY_UNSET_VARIABLE".to_string(),
        ])
        .unwrap();
        assert_eq!(args["A"], "1");
        assert_eq!(args["B"], "x=y");
        assert!(args.contains_key("PATH"));
        assert!(!args.contains_key("BERTH_SURELY_UNSET_VARIABLE"));
        assert!(build_args(&["=1".to_string()]).is_err());
    }
}
