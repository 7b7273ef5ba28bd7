//! The build executor: runs the stages the target needs and writes the image.
//!
//! Stages run on threads of their own, each as soon as the stages it reads from are built
//! (`FROM <stage>`, `COPY --from`, `RUN --mount=from=`, from [`Graph`]); a stage's steps run in
//! order, and at most [`SolveOptions::jobs`] steps execute at once.
//! - `FROM scratch` starts from BuildKit's empty config (`PATH`, working directory `/`);
//!   `FROM <image>` resolves the image in the local [`ImageStore`], extracts its layers into
//!   the [`SnapshotStore`] (once per diff_id) and starts from its config; `FROM <stage>` starts
//!   from that stage's result. Either way the base's `ONBUILD` triggers leave the config
//!   (lowering made them the stage's first steps). The layers of steps taken from the cache
//!   are extracted only when a step that runs needs them;
//! - `ENV`, `LABEL`, `USER`, `EXPOSE`, `VOLUME`, `ENTRYPOINT`, `CMD`, `SHELL`, `STOPSIGNAL`,
//!   `HEALTHCHECK`, `MAINTAINER` and `ARG` change the config and add a history entry with
//!   `empty_layer: true`; `ONBUILD` changes the config only. The history text is BuildKit's
//!   (see `history.rs`);
//! - `WORKDIR` other than `/` makes a layer, as BuildKit does: `mkdir -p` of the directory,
//!   owned by the stage's `USER`, and an empty layer when it exists;
//! - `RUN` runs in the sandbox on an overlay of the step's parents with a fresh upper
//!   directory (or a copy of them where overlayfs is unavailable), and the upper directory is
//!   the layer;
//! - `COPY` and `ADD` write through an overlay of the parents (see `root.rs`), whose upper
//!   directory is the layer.
//!
//! Every step has a cache key ([`crate::cache`]): before it runs, the solver looks for its
//! result in this build, the local cache, then the imported caches, and takes the state it
//! recorded when there is one (progress reports it `CACHED`). Identical steps of several
//! stages run once: the others wait for its key and take its result. What a step makes is
//! recorded under its key.
//!
//! Every layer lands in a [`Staging`] area of the image store, and is handed at once to
//! [`SolveOptions::layer_sink`] when there is one (so that a push can upload it while later
//! steps run); the config and manifest follow, and [`ImageStore::commit`] records the image
//! under the requested names. [`Progress`] reports each step as BuildKit's plain progress
//! does, with the layer a finished step made. A failing step
//! leaves no active snapshot and no mount behind: an [`Active`] snapshot removes its directory
//! when dropped, and the sandbox unmounts whatever happens.

mod add;
mod checksum;
mod copy;
mod history;
mod root;
mod run;

pub use run::{
    MAX_SECRET_SIZE, SecretSource, parse_secret, parse_secrets, parse_ssh, parse_ssh_spec,
};
mod workdir;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use berth_layerstore::content::Provider;
use berth_layerstore::digest::Digest;
use berth_layerstore::image::manifest::Manifest;
use berth_layerstore::image::store::{ImageStore, Staging, format_rfc3339};
use berth_layerstore::image::{
    CanonicalBlob, ContainerConfig, Descriptor, HealthConfig, History, ImageConfig, new_descriptor,
};
use berth_layerstore::layer::LayerOptions;
use berth_layerstore::snapshot::{Active, Lease, SnapshotStore};
use berth_runner::sandbox::Sandbox;

use crate::cache::{
    CacheKey, CacheSource, CacheSources, KeyHasher, LocalCache, Record, UsedRecord,
};
use crate::context::Context;
use crate::graph::Graph;
use crate::instructions::Command;
use crate::instructions::{BaseImage, BaseRef, CommandLine, FromRef, HealthcheckKind, Lowered};
use crate::parser::Span;

/// The media type of the configs the solver writes.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The media type of the manifests the solver writes.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// The default shell of `RUN`, `CMD` and `ENTRYPOINT` in shell form.
const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// What went wrong in a build.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// A step failed; `location` is `FILE:LINE`.
    #[error("{location}: {instruction}: {message}")]
    Step {
        /// `Dockerfile:5`.
        location: String,
        /// The instruction as written (first line).
        instruction: String,
        /// What happened.
        message: String,
    },
    /// The build could not be set up or finished (store, snapshots, sandbox).
    #[error("{0}")]
    Setup(String),
}

/// One line of progress, as BuildKit's plain progress prints it.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// Step `n` starts: `[stage i/n] INSTRUCTION`.
    Start {
        /// The vertex number, from 1.
        vertex: usize,
        /// `[stage-0 2/5] RUN echo hi`.
        name: &'a str,
    },
    /// Output of a step.
    Output {
        /// The vertex number.
        vertex: usize,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// Step `n` failed.
    Error {
        /// The vertex number.
        vertex: usize,
        /// What happened.
        message: &'a str,
    },
    /// Step `n` is done.
    #[non_exhaustive]
    Done {
        /// The vertex number.
        vertex: usize,
        /// How long it took, in seconds.
        seconds: f64,
        /// The layer the step made, for steps that make one (its size is what the progress
        /// displays show).
        layer: Option<&'a Descriptor>,
        /// Whether the step's result came from the cache instead of being built: displays
        /// print BuildKit's `CACHED` for it.
        cached: bool,
    },
}

/// Where and how to build.
#[derive(Debug, Clone)]
pub struct SolveOptions {
    /// The snapshot store's directory.
    pub snapshot_root: PathBuf,
    /// The sandbox's state directory.
    pub sandbox_root: PathBuf,
    /// The OCI runtime; `runc` on `PATH` when `None`.
    pub runtime: Option<PathBuf>,
    /// Names to record the image under (already normalized); untagged when empty.
    pub names: Vec<String>,
    /// How layers are written.
    pub layer: LayerOptions,
    /// The network of `RUN` steps that do not ask for one with `RUN --network`
    /// ([`Default`](crate::instructions::NetworkMode::Default) is the sandbox's default, the host's network).
    pub network: crate::instructions::NetworkMode,
    /// Where each layer goes as soon as the solver has written it, while later steps run
    /// (`berth build --push` uploads them from there). Dropped with the solver, so the
    /// receiving end sees the channel close when the build is over.
    pub layer_sink: Option<std::sync::mpsc::Sender<LayerBlob>>,
    /// Where `RUN --mount` keeps its caches (`cache/`, across builds) and the temporary copies
    /// of the build context that bind mounts of it need (`tmp/`).
    pub mounts_root: PathBuf,
    /// The build secrets (`--secret`) by id, for `RUN --mount=type=secret`.
    pub secrets: BTreeMap<String, SecretSource>,
    /// The SSH agent sockets (`--ssh`) by id, for `RUN --mount=type=ssh`: each step that
    /// mounts one gets a socket of its own forwarding to it ([`parse_ssh`] reads the flags).
    pub ssh: BTreeMap<String, PathBuf>,
    /// How many steps may execute at once (`--jobs`); stages run concurrently as soon as the
    /// stages they read from are built.
    pub jobs: usize,
    /// Run every step, taking nothing from any cache (`--no-cache`). Results are still
    /// recorded.
    pub no_cache: bool,
    /// The stages (by name, any case) whose steps run whatever the caches hold
    /// (`--no-cache-filter`).
    pub no_cache_filter: Vec<String>,
    /// Imported caches (`--cache-from`), looked up after the local one.
    pub cache_from: CacheSources,
}

impl SolveOptions {
    /// The network a `RUN` step asking for `step` gets: its own choice, else the build's.
    pub fn network_for(
        &self,
        step: crate::instructions::NetworkMode,
    ) -> crate::instructions::NetworkMode {
        match step {
            crate::instructions::NetworkMode::Default => self.network,
            other => other,
        }
    }
}

/// A layer the solver has just written, sent to [`SolveOptions::layer_sink`].
#[derive(Debug)]
pub struct LayerBlob {
    /// The layer's descriptor, as the manifest will list it.
    pub descriptor: Descriptor,
    /// The uncompressed digest, as the config's `rootfs.diff_ids` will list it.
    pub diff_id: Digest,
    /// The blob, open for reading. It stays readable whatever becomes of the build's staging
    /// area (committed into the store or dropped), so read it with positioned reads
    /// (`FileExt::read_at`) from as many threads as needed.
    pub file: std::fs::File,
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image id: the config's digest.
    pub id: Digest,
    /// The manifest's descriptor.
    pub manifest: Descriptor,
    /// The config's descriptor.
    pub config: Descriptor,
    /// The layers, base image layers first, as the manifest lists them.
    pub layers: Vec<Descriptor>,
    /// The config's `created` time (RFC 3339).
    pub created: Option<String>,
    /// The names the image was recorded under in the store (normalized).
    pub names: Vec<String>,
    /// The cache record of every step of the build, whether it ran or came from a cache,
    /// for `--cache-to`.
    pub cache: Vec<UsedRecord>,
}

/// A stage's state while it is built: what the cache records after each step.
#[derive(Debug, Clone)]
struct State {
    config: ImageConfig,
    layers: Vec<Descriptor>,
    /// `SHELL` (not part of OCI configs' required fields; kept here and in the config).
    shell: Vec<String>,
    /// Whether a `CMD` was given in this stage: an `ENTRYPOINT` then keeps it, where it resets
    /// the `CMD` the stage inherited.
    cmd_set: bool,
    /// The `ARG` names declared in this stage so far (triggers included), in order: the
    /// `|<n> K=V` prefix of `RUN` history entries. BuildKit 0.8 does not carry them over to a
    /// stage built on this one.
    build_args: Vec<String>,
}

impl State {
    fn new(config: ImageConfig, layers: Vec<Descriptor>, shell: Vec<String>) -> Self {
        State {
            config,
            layers,
            shell,
            cmd_set: false,
            build_args: Vec::new(),
        }
    }

    fn from_record(record: Record) -> Self {
        State {
            config: record.config,
            layers: record.layers,
            shell: record.shell,
            cmd_set: record.cmd_set,
            build_args: record.build_args,
        }
    }

    fn record(&self) -> Record {
        Record {
            version: crate::cache::CACHE_VERSION,
            config: self.config.clone(),
            layers: self.layers.clone(),
            shell: self.shell.clone(),
            cmd_set: self.cmd_set,
            build_args: self.build_args.clone(),
        }
    }

    /// Starts a stage on this state: what only lasts for one stage is reset, and the base's
    /// `ONBUILD` triggers (which lowering turned into the stage's first steps) are dropped
    /// from the config, as BuildKit drops them.
    fn start_stage(&mut self) {
        self.cmd_set = false;
        self.build_args.clear();
        let c = self.config.config.get_or_insert_with(Default::default);
        c.on_build = None;
        // BuildKit makes sure every stage has a PATH.
        let env = c.env.get_or_insert_with(Vec::new);
        if !env
            .iter()
            .any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == "PATH")
        {
            env.push(format!("PATH={}", berth_runner::sandbox::DEFAULT_PATH_ENV));
        }
    }
}

/// Base image configurations for lowering: the env and ONBUILD triggers of every image
/// `lowered` names that the local store has.
pub fn base_images(
    store: &ImageStore,
    lowered: &Lowered,
    normalize: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, BaseImage> {
    let mut bases = BTreeMap::new();
    for name in lowered.base_image_names() {
        let Ok((config, _, _)) = load_image(store, name, normalize, &target_platform(lowered))
        else {
            continue;
        };
        let container = config.config.unwrap_or_default();
        let env = container
            .env
            .unwrap_or_default()
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (e.clone(), String::new()),
            })
            .collect();
        bases.insert(
            name.to_owned(),
            BaseImage {
                env,
                onbuild: container.on_build.unwrap_or_default(),
            },
        );
    }
    bases
}

/// The build's target platform as the image types name it.
fn target_platform(lowered: &Lowered) -> berth_layerstore::image::Platform {
    let p = &lowered.target_platform;
    let mut config = ImageConfig::new(&p.os, &p.architecture);
    config.variant = (!p.variant.is_empty()).then(|| p.variant.clone());
    config.platform()
}

/// Reads an image of the store: its config, layer descriptors and config digest.
fn load_image(
    store: &ImageStore,
    name: &str,
    normalize: &dyn Fn(&str) -> Option<String>,
    platform: &berth_layerstore::image::Platform,
) -> Result<(ImageConfig, Vec<Descriptor>, Digest), SolveError> {
    let setup = |e: &dyn std::fmt::Display| SolveError::Setup(format!("{name}: {e}"));
    let resolved = store.resolve(name, normalize).map_err(|e| setup(&e))?;
    let content = store.content();
    let (mut manifest, _) =
        Manifest::read(content, &resolved.record.target).map_err(|e| setup(&e))?;
    if manifest.is_index() {
        let desc = manifest
            .select_platform(platform)
            .ok_or_else(|| setup(&"no manifest for the build's platform"))?;
        manifest = Manifest::read(content, &desc).map_err(|e| setup(&e))?.0;
    }
    let config_desc = manifest
        .config()
        .ok_or_else(|| setup(&"the manifest has no config"))?;
    let digest = descriptor_digest(&config_desc).map_err(|e| setup(&e))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut content.read(&digest, None).map_err(|e| setup(&e))?,
        &mut bytes,
    )
    .map_err(|e| setup(&e))?;
    let config = ImageConfig::from_slice(&bytes, name).map_err(|e| setup(&e))?;
    Ok((config, manifest.layers(), digest))
}
fn descriptor_digest(desc: &Descriptor) -> Result<Digest, berth_layerstore::image::ImageError> {
    berth_layerstore::image::descriptor_digest(desc)
}

/// How many steps may execute at once: a counting semaphore over `--jobs`.
struct Jobs {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Jobs {
    fn new(n: usize) -> Self {
        Jobs {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self) -> JobPermit<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        JobPermit(self)
    }
}

struct JobPermit<'a>(&'a Jobs);

impl Drop for JobPermit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.freed.notify_one();
    }
}

/// Locks `m`, whatever a panicking holder left: the solver's shared state stays consistent
/// at every unlock, and a panic fails the build anyway.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a step runs: its stage, its progress vertex, and whether the caches may serve it.
#[derive(Debug, Clone, Copy)]
struct At {
    stage: usize,
    vertex: usize,
    no_cache: bool,
}

/// A stage's result: its state and the cache key of its last step.
#[derive(Debug, Clone)]
struct Solved {
    state: State,
    key: CacheKey,
}

/// The executor of one build. Its methods take `&self`: the stages of a build run on threads
/// of their own (see [`Solver::build`]), and share the solver.
pub struct Solver<'a> {
    store: &'a ImageStore,
    snapshots: SnapshotStore,
    sandbox: Sandbox,
    context: &'a Context,
    source: &'a str,
    normalize: &'a (dyn Fn(&str) -> Option<String> + Sync),
    staging: Staging,
    leases: Mutex<Vec<Lease>>,
    /// The stages built so far, by index.
    stages: Mutex<BTreeMap<usize, Solved>>,
    progress: Mutex<&'a mut (dyn FnMut(Progress<'_>) + Send)>,
    vertex: AtomicUsize,
    options: SolveOptions,
    cache: LocalCache,
    jobs: Jobs,
    /// One lock per cache key being looked up or built: identical steps of several stages
    /// run once, the others wait and take its result.
    in_flight: Mutex<HashMap<CacheKey, Arc<Mutex<()>>>>,
    /// What each key this build looked up or built gave, and in which stage.
    used: Mutex<Vec<UsedRecord>>,
    /// The layers handed to [`SolveOptions::layer_sink`] so far.
    sent: Mutex<HashSet<Digest>>,
}

impl<'a> Solver<'a> {
    /// A solver over the image store `store`, building from `context`. `source` is the
    /// Dockerfile's text (for step names), `normalize` turns image names into the store's.
    pub fn new(
        store: &'a ImageStore,
        context: &'a Context,
        source: &'a str,
        normalize: &'a (dyn Fn(&str) -> Option<String> + Sync),
        options: SolveOptions,
        progress: &'a mut (dyn FnMut(Progress<'_>) + Send),
    ) -> Result<Self, SolveError> {
        let snapshots = SnapshotStore::open(&options.snapshot_root)
            .map_err(|e| SolveError::Setup(format!("opening the snapshot store: {e}")))?;
        let mut sandbox = Sandbox::builder().root(&options.sandbox_root);
        if let Some(runtime) = &options.runtime {
            sandbox = sandbox.runtime(runtime);
        }
        let sandbox = sandbox
            .build()
            .map_err(|e| SolveError::Setup(format!("setting up the sandbox: {e}")))?;
        let staging = store
            .staging()
            .map_err(|e| SolveError::Setup(format!("opening a staging area: {e}")))?;
        let jobs = Jobs::new(options.jobs);
        Ok(Solver {
            store,
            snapshots,
            sandbox,
            context,
            source,
            normalize,
            staging,
            leases: Mutex::new(Vec::new()),
            stages: Mutex::new(BTreeMap::new()),
            progress: Mutex::new(progress),
            vertex: AtomicUsize::new(0),
            cache: LocalCache::new(store),
            jobs,
            options,
            in_flight: Mutex::new(HashMap::new()),
            used: Mutex::new(Vec::new()),
            sent: Mutex::new(HashSet::new()),
        })
    }

    /// Builds the target stage of `lowered` and records the image. The stages the target
    /// needs run on threads of their own as soon as the stages they read from are built
    /// (their steps in order); at most [`SolveOptions::jobs`] steps execute at once. After a
    /// failure no stage starts, and the build ends once the running ones are over.
    pub fn build(self, lowered: &Lowered) -> Result<Built, SolveError> {
        let graph = Graph::build(lowered, None).map_err(|e| SolveError::Setup(e.to_string()))?;
        let mut failure: Option<SolveError> = None;
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel();
            let mut done = BTreeSet::new();
            let mut started = BTreeSet::new();
            loop {
                if failure.is_none() {
                    for index in graph.ready(&done) {
                        if !started.insert(index) {
                            continue;
                        }
                        let tx = tx.clone();
                        let (solver, graph) = (&self, &graph);
                        scope.spawn(move || {
                            let result = solver.solve_stage(lowered, graph, index);
                            let _ = tx.send((index, result));
                        });
                    }
                }
                if started.len() == done.len() {
                    break;
                }
                let Ok((index, result)) = rx.recv() else {
                    break;
                };
                done.insert(index);
                if let Err(e) = result {
                    failure.get_or_insert(e);
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        let solved = self
            .finished(lowered.target)
            .map_err(|e| SolveError::Setup(format!("the target stage: {e}")))?;
        let vertex = self.start("exporting to image");
        let t = Instant::now();
        let mut built = self.write_image(&solved.state).inspect_err(|e| {
            self.emit(Progress::Error {
                vertex,
                message: &e.to_string(),
            });
        })?;
        self.done(vertex, t, None, false);
        built.cache = std::mem::take(&mut *lock(&self.used));
        Ok(built)
    }

    /// The result of stage `index`, built already (the scheduler starts a stage once those
    /// it reads from are done).
    fn finished(&self, index: usize) -> Result<Solved, String> {
        lock(&self.stages)
            .get(&index)
            .cloned()
            .ok_or_else(|| format!("stage {index} is not built"))
    }

    fn solve_stage(
        &self,
        lowered: &Lowered,
        graph: &Graph,
        index: usize,
    ) -> Result<(), SolveError> {
        let stage = &lowered.stages[index];
        let node = graph
            .stage(index)
            .ok_or_else(|| SolveError::Setup(format!("stage {index} is not in the graph")))?;
        let steps: Vec<&Command> = stage.steps().collect();
        let total = steps.len() + 1;
        let name = stage.display_name();
        let from_line = self.line_text(&stage.span);
        let mut base_key = KeyHasher::new("base");
        base_key.bytes(node.base_id.as_bytes());
        let mut state = match &stage.base {
            BaseRef::Scratch => {
                // BuildKit's empty image: PATH and the working directory `/`.
                let platform = &node.platform;
                let mut c = ImageConfig::new(&platform.os, &platform.architecture);
                if !platform.variant.is_empty() {
                    c.variant = Some(platform.variant.clone());
                }
                c.rootfs.kind = "layers".to_owned();
                c.config = Some(ContainerConfig {
                    env: Some(vec![format!(
                        "PATH={}",
                        berth_runner::sandbox::DEFAULT_PATH_ENV
                    )]),
                    working_dir: Some("/".to_owned()),
                    ..Default::default()
                });
                State::new(c, Vec::new(), Vec::new())
            }
            BaseRef::Stage(i) => {
                let solved = self.finished(*i).map_err(SolveError::Setup)?;
                base_key.key(&solved.key);
                solved.state
            }
            BaseRef::Image(image) => {
                let vertex = self.start(&format!("[{name} 1/{total}] {from_line}"));
                let t = Instant::now();
                // The base's layers are extracted here, so that a bad one fails its FROM.
                let base = self.base_image(image, &target_platform(lowered)).and_then(
                    |(state, digest)| {
                        self.ensure_snapshots(&state)?;
                        Ok((state, digest))
                    },
                );
                let (state, config_digest) = match base {
                    Ok(base) => base,
                    Err(message) => {
                        self.emit(Progress::Error {
                            vertex,
                            message: &message,
                        });
                        return Err(self.step_error(&stage.span, message));
                    }
                };
                base_key.str(&config_digest.to_string());
                self.done(vertex, t, None, false);
                state
            }
        };
        state.start_stage();
        let mut key = base_key.finish();
        let no_cache = self.options.no_cache
            || self.options.no_cache_filter.iter().any(|s| {
                stage
                    .name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(s))
            });
        for (i, (command, step)) in steps.iter().zip(&node.steps).enumerate() {
            let label = format!(
                "[{name} {}/{total}] {}",
                i + 2,
                self.line_text(command.span())
            );
            let vertex = self.start(&label);
            let t = Instant::now();
            let parents = state.layers.len();
            let at = At {
                stage: index,
                vertex,
                no_cache,
            };
            let outcome = self.step(lowered, step, command, &mut state, key, at);
            match outcome {
                Ok((next, cached)) => {
                    key = next;
                    // As BuildKit, a cached step shows no layer of its own.
                    let layer = state
                        .layers
                        .get(parents..)
                        .and_then(|l| l.last())
                        .filter(|_| !cached);
                    self.done(vertex, t, layer, cached);
                }
                Err(message) => {
                    self.emit(Progress::Error {
                        vertex,
                        message: &message,
                    });
                    return Err(self.step_error(command.span(), message));
                }
            }
        }
        lock(&self.stages).insert(index, Solved { state, key });
        Ok(())
    }

    /// An image of the store as a stage's starting state, and its config's digest. Its layers
    /// are not extracted here ([`Solver::ensure_snapshots`] does it).
    fn base_image(
        &self,
        image: &str,
        platform: &berth_layerstore::image::Platform,
    ) -> Result<(State, Digest), String> {
        let (mut config, layers, config_digest) =
            load_image(self.store, image, self.normalize, platform).map_err(|e| e.to_string())?;
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(format!(
                "{image}: {} layers but {} diff_ids",
                layers.len(),
                config.rootfs.diff_ids.len()
            ));
        }
        let shell = config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .unwrap_or_default();
        config.history.get_or_insert_with(Vec::new);
        config.created = None;
        config.extra.remove(crate::cache::INLINE_KEY);
        Ok((State::new(config, layers, shell), config_digest))
    }

    /// Extracts the snapshots of `state`'s layers that the snapshot store lacks, and keeps
    /// them all from being pruned while the build lasts. A step taken from the cache leaves
    /// its layers unextracted until a step that runs needs them.
    fn ensure_snapshots(&self, state: &State) -> Result<(), String> {
        let diff_ids = state.config.diff_ids();
        for (layer, diff_id) in state.layers.iter().zip(diff_ids) {
            if self.snapshots.exists(diff_id) {
                continue;
            }
            let digest = descriptor_digest(layer).map_err(|e| e.to_string())?;
            let reader = self
                .staging
                .read(&digest, None)
                .map_err(|e| format!("layer {digest}: {e}"))?;
            self.snapshots
                .extract(diff_id, reader)
                .map_err(|e| format!("layer {digest}: {e}"))?;
        }
        let lease = self
            .snapshots
            .lease(diff_ids)
            .map_err(|e| format!("keeping the snapshots of the step's parents: {e}"))?;
        lock(&self.leases).push(lease);
        Ok(())
    }

    /// The state of stage `i` for a step that reads it, its snapshots extracted.
    fn stage_source(&self, i: usize) -> Result<State, String> {
        let state = self.finished(i)?.state;
        self.ensure_snapshots(&state)?;
        Ok(state)
    }

    /// The state of image `name` for a step that reads it, its snapshots extracted.
    fn image_source(&self, lowered: &Lowered, name: &str) -> Result<State, String> {
        let (state, _) = self.base_image(name, &target_platform(lowered))?;
        self.ensure_snapshots(&state)?;
        Ok(state)
    }

    /// The cache key of `command` on `parent`, or `None` when it cannot be known before the
    /// step runs (see the [`crate::cache`] docs). A source that cannot be read gives `None`
    /// too: the step then runs and reports it.
    fn step_key(
        &self,
        lowered: &Lowered,
        step: &crate::graph::Step,
        command: &Command,
        parent: CacheKey,
    ) -> Result<Option<CacheKey>, String> {
        let mut h = KeyHasher::new("step");
        h.key(&parent).bytes(step.id.as_bytes());
        // What the build's options change in the step's result: the layers' compression and
        // mtime clamp (and the history's time), and the network of a RUN.
        let layer = &self.options.layer;
        h.str(&format!(
            "{:?} {:?} {:?}",
            layer.compression, layer.level, layer.tar.source_date_epoch
        ));
        if let Command::Run(run) = command {
            h.str(&format!("{:?}", self.options.network_for(run.network)));
        }
        for dep in &step.deps {
            h.key(&self.finished(*dep)?.key);
        }
        for from in command.sources() {
            if let FromRef::Image(name) = from {
                let platform = target_platform(lowered);
                match load_image(self.store, name, self.normalize, &platform) {
                    Ok((_, _, digest)) => h.str(&digest.to_string()),
                    Err(_) => return Ok(None),
                };
            }
        }
        let from_context = |from: &Option<FromRef>| matches!(from, None | Some(FromRef::Context));
        let sum = match command {
            Command::Copy(c) if from_context(&c.from) && !c.sources.is_empty() => Some(
                checksum::context_sources(self.context, &c.sources, c.parents, &c.exclude),
            ),
            Command::Add(a) => {
                if a.checksum.is_none() && a.sources.iter().any(|s| add::is_url(s)) {
                    return Ok(None);
                }
                Some(checksum::context_sources(
                    self.context,
                    &a.sources,
                    false,
                    &a.exclude,
                ))
            }
            _ => None,
        };
        if let Some(sum) = sum {
            match sum {
                Ok(sum) => h.bytes(&sum),
                Err(_) => return Ok(None),
            };
        }
        if let Command::Run(run) = command {
            for m in &run.mounts {
                if m.kind == crate::instructions::MountType::Bind && from_context(&m.from_ref) {
                    match checksum::context_path(self.context, m.source.as_deref().unwrap_or("/")) {
                        Ok(sum) => h.bytes(&sum),
                        Err(_) => return Ok(None),
                    };
                }
            }
        }
        Ok(Some(h.finish()))
    }

    /// Runs one step on `state`, or takes its result from the cache. Returns the step's key
    /// and whether the result came from the cache. The result is in [`Solver::used`] before
    /// the key's lock is released, so that an identical step waiting for it finds it.
    fn step(
        &self,
        lowered: &Lowered,
        step: &crate::graph::Step,
        command: &Command,
        state: &mut State,
        parent: CacheKey,
        at: At,
    ) -> Result<(CacheKey, bool), String> {
        let key = self.step_key(lowered, step, command, parent)?;
        let slot = key.map(|k| {
            lock(&self.in_flight)
                .entry(k)
                .or_insert_with(|| Arc::new(Mutex::new(())))
                .clone()
        });
        let _building = slot.as_ref().map(|s| lock(s));
        if let Some(key) = key
            && let Some(record) = self.lookup(&key, at.no_cache)
        {
            *state = State::from_record(record.clone());
            self.send_state_layer(state);
            lock(&self.used).push(UsedRecord {
                key,
                record,
                stage: at.stage,
            });
            return Ok((key, true));
        }
        let parents = state.layers.len();
        self.execute(lowered, at.vertex, command, state)?;
        let key = key.unwrap_or_else(|| {
            // Keyed on its result, so that the steps after it can still hit.
            let mut h = KeyHasher::new("result");
            h.key(&parent).bytes(step.id.as_bytes());
            for diff_id in state.config.diff_ids().get(parents..).unwrap_or_default() {
                h.str(&diff_id.to_string());
            }
            h.finish()
        });
        let record = state.record();
        if let Err(e) = self.cache.put(&self.staging, &key, &record) {
            tracing::warn!("{e}");
        }
        lock(&self.used).push(UsedRecord {
            key,
            record,
            stage: at.stage,
        });
        Ok((key, false))
    }

    /// A usable record of `key`: this build's own, else (unless `no_cache`) the local
    /// cache's, else an imported cache's, whose layers are then fetched and recorded locally.
    /// A record that cannot be used is a miss, with a warning.
    fn lookup(&self, key: &CacheKey, no_cache: bool) -> Option<Record> {
        if let Some(used) = lock(&self.used).iter().rev().find(|u| u.key == *key) {
            return Some(used.record.clone());
        }
        if no_cache {
            return None;
        }
        match self.cache.get(key) {
            Ok(Some(record)) => return Some(record),
            Ok(None) => {}
            Err(e) => tracing::warn!("ignoring the cached result of a step: {e}"),
        }
        for source in &self.options.cache_from {
            let Some(record) = source.lookup(key) else {
                continue;
            };
            match self.import(source.as_ref(), key, &record) {
                Ok(()) => return Some(record),
                Err(e) => tracing::warn!(
                    "{}: ignoring the cached result of a step: {e}",
                    source.describe()
                ),
            }
        }
        None
    }

    /// Fetches the layers of an imported record that the store lacks, and records it in the
    /// local cache.
    fn import(
        &self,
        source: &dyn CacheSource,
        key: &CacheKey,
        record: &Record,
    ) -> Result<(), String> {
        record.check()?;
        for layer in &record.layers {
            let digest = descriptor_digest(layer).map_err(|e| e.to_string())?;
            if self.staging.exists(&digest).unwrap_or(false) {
                continue;
            }
            source.fetch(layer, &self.staging)?;
        }
        self.cache.put(&self.staging, key, record)
    }

    /// Applies `command` to `state`: metadata into the config, RUN, COPY, ADD and WORKDIR
    /// into a new layer (each holding a job slot while it executes), plus the history entry.
    fn execute(
        &self,
        lowered: &Lowered,
        vertex: usize,
        command: &Command,
        state: &mut State,
    ) -> Result<(), String> {
        let created_by = history::created_by(
            command,
            &history::Scope {
                shell: &state.shell,
                workdir: state
                    .config
                    .config
                    .as_ref()
                    .and_then(|c| c.working_dir.as_deref()),
                build_args: &state.build_args,
            },
        );
        if matches!(
            command,
            Command::Run(_) | Command::Copy(_) | Command::Add(_) | Command::Workdir(_)
        ) {
            self.ensure_snapshots(state)?;
        }
        let c = state.config.config.get_or_insert_with(Default::default);
        let mut empty = true;
        match command {
            Command::Env(env) => {
                // As BuildKit's addEnv: a variable already set keeps its place.
                let list = c.env.get_or_insert_with(Vec::new);
                for (k, v) in &env.pairs {
                    let entry = format!("{k}={v}");
                    match list
                        .iter_mut()
                        .find(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k)
                    {
                        Some(existing) => *existing = entry,
                        None => list.push(entry),
                    }
                }
            }
            Command::Label(label) => {
                let labels = c.labels.get_or_insert_with(BTreeMap::new);
                for (k, v) in &label.pairs {
                    labels.insert(k.clone(), v.clone());
                }
            }
            Command::User(user) => c.user = Some(user.user.clone()),
            Command::Expose(expose) => {
                let ports = c.exposed_ports.get_or_insert_with(BTreeSet::new);
                for p in &expose.ports {
                    ports.extend(p.keys());
                }
            }
            Command::Volume(volume) => {
                let vols = c.volumes.get_or_insert_with(BTreeSet::new);
                vols.extend(volume.paths.iter().cloned());
            }
            Command::Entrypoint(e) => {
                c.entrypoint = Some(command_line(&e.command, &state.shell));
                if !state.cmd_set {
                    c.cmd = None;
                }
            }
            Command::Cmd(cmd) => {
                c.cmd = Some(command_line(&cmd.command, &state.shell));
                // BuildKit 0.8 marks every CMD so, whatever its form.
                c.args_escaped = Some(true);
                state.cmd_set = true;
            }
            Command::Shell(shell) => {
                state.shell = shell.shell.clone();
                c.shell = Some(shell.shell.clone());
            }
            Command::StopSignal(s) => c.stop_signal = Some(s.signal.clone()),
            Command::Healthcheck(h) => {
                c.healthcheck = Some(match &h.check {
                    HealthcheckKind::None => HealthConfig {
                        test: Some(vec!["NONE".to_owned()]),
                        ..Default::default()
                    },
                    HealthcheckKind::Cmd {
                        command,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => {
                        let nanos = |d: &Option<std::time::Duration>| {
                            d.map(|d| d.as_nanos() as i64).filter(|n| *n != 0)
                        };
                        let test = match command {
                            CommandLine::Exec(args) => {
                                let mut t = vec!["CMD".to_owned()];
                                t.extend(args.iter().cloned());
                                t
                            }
                            CommandLine::Shell(s) => vec!["CMD-SHELL".to_owned(), s.clone()],
                        };
                        HealthConfig {
                            test: Some(test),
                            interval: nanos(interval),
                            timeout: nanos(timeout),
                            start_period: nanos(start_period),
                            start_interval: nanos(start_interval),
                            retries: retries.map(i64::from),
                        }
                    }
                });
            }
            Command::OnBuild(o) => {
                c.on_build
                    .get_or_insert_with(Vec::new)
                    .push(o.expression.clone());
            }
            Command::Maintainer(m) => state.config.author = Some(m.name.clone()),
            Command::Arg(arg) => {
                // ARG changes no config; RUN history entries list it from now on.
                state
                    .build_args
                    .extend(arg.args.iter().map(|a| a.name.clone()));
            }
            Command::Workdir(w) => {
                let dir = absolute(c.working_dir.as_deref(), &w.path);
                c.working_dir = Some(dir.clone());
                // BuildKit makes a layer for every WORKDIR but `/`, even when the directory
                // exists.
                if dir != "/" {
                    let _job = self.jobs.acquire();
                    self.workdir(state, &dir)?;
                    empty = false;
                }
            }
            Command::Run(run) => {
                let _job = self.jobs.acquire();
                self.run(lowered, vertex, state, run)?;
                empty = false;
            }
            Command::Copy(copy) => {
                let _job = self.jobs.acquire();
                self.copy(lowered, state, copy)?;
                empty = false;
            }
            Command::Add(add) => {
                let _job = self.jobs.acquire();
                self.add(state, add)?;
                empty = false;
            }
        }
        if let Some(created_by) = created_by {
            let history = state.config.history.get_or_insert_with(Vec::new);
            history.push(History {
                created: Some(now(self.options.layer.tar.source_date_epoch)),
                created_by: Some(created_by),
                comment: Some("buildkit.dockerfile.v0".to_owned()),
                empty_layer: empty.then_some(true),
                ..Default::default()
            });
        }
        Ok(())
    }

    /// Creates `dir` and its missing parents, owned by the stage's `USER`, in a new layer
    /// (empty when the directory exists).
    fn workdir(&self, state: &mut State, dir: &str) -> Result<(), String> {
        let step_root =
            root::StepRoot::prepare(&self.snapshots, "workdir", state.config.diff_ids())?;
        let root = step_root.path().to_path_buf();
        let user = state
            .config
            .config
            .as_ref()
            .and_then(|c| c.user.as_deref())
            .unwrap_or_default();
        let (uid, gid) = workdir::owner(&root, user);
        workdir::mkdir_all(&root, Path::new(dir), uid, gid)
            .map_err(|e| format!("mkdir {dir}: {e}"))?;
        self.commit(step_root.finish()?, state)
    }

    fn commit(&self, active: Active, state: &mut State) -> Result<(), String> {
        let (info, lease) = active
            .commit_in_store(&self.staging, &self.options.layer)
            .map_err(|e| e.to_string())?;
        lock(&self.leases).push(lease);
        let descriptor = new_descriptor(&info.media_type, &info.digest, info.size);
        self.send_layer(&descriptor, &info.diff_id);
        state.layers.push(descriptor);
        state.config.rootfs.kind = "layers".to_owned();
        state.config.rootfs.diff_ids.push(info.diff_id);
        Ok(())
    }

    /// Hands the layers of a state taken from the cache to [`SolveOptions::layer_sink`], as
    /// if the steps had made them: a push then uploads them while later steps run.
    fn send_state_layer(&self, state: &State) {
        if self.options.layer_sink.is_none() {
            return;
        }
        for (layer, diff_id) in state.layers.iter().zip(state.config.diff_ids()) {
            self.send_layer(layer, diff_id);
        }
    }

    /// Hands a layer of the build to [`SolveOptions::layer_sink`], once. A layer that cannot
    /// be opened is not sent: the outputs read the image from the store once it is written
    /// anyway.
    fn send_layer(&self, descriptor: &Descriptor, diff_id: &Digest) {
        let Some(sink) = &self.options.layer_sink else {
            return;
        };
        let Ok(digest) = descriptor_digest(descriptor) else {
            return;
        };
        if !lock(&self.sent).insert(digest.clone()) {
            return;
        }
        let staged = self
            .staging
            .dir()
            .join(berth_layerstore::image::store::CONTENT_DIR);
        let opened = berth_layerstore::content::fs::FsStore::open(staged)
            .ok()
            .and_then(|staged| std::fs::File::open(staged.blob_path(&digest)).ok())
            .or_else(|| std::fs::File::open(self.store.content().blob_path(&digest)).ok());
        if let Some(file) = opened {
            // A receiver that has gone away wants no more layers.
            let _ = sink.send(LayerBlob {
                descriptor: descriptor.clone(),
                diff_id: diff_id.clone(),
                file,
            });
        }
    }

    fn write_image(&self, state: &State) -> Result<Built, SolveError> {
        let setup =
            |e: &dyn std::fmt::Display| SolveError::Setup(format!("writing the image: {e}"));
        let mut config = state.config.clone();
        // The last step's time: a build whose steps all come from the cache gives the same
        // image as the build that made them.
        let last_step = config
            .history
            .as_ref()
            .and_then(|h| h.last())
            .and_then(|h| h.created.clone());
        config.created =
            Some(last_step.unwrap_or_else(|| now(self.options.layer.tar.source_date_epoch)));
        let blob = config.to_blob(CONFIG_MEDIA_TYPE).map_err(|e| setup(&e))?;
        let config_desc = blob.ingest(&self.staging).map_err(|e| setup(&e))?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config_desc,
            "layers": state.layers,
        });
        let blob = CanonicalBlob::new(MANIFEST_MEDIA_TYPE, &manifest).map_err(|e| setup(&e))?;
        let manifest_desc = blob.ingest(&self.staging).map_err(|e| setup(&e))?;
        let roots: Vec<(Option<String>, Descriptor)> = if self.options.names.is_empty() {
            vec![(None, manifest_desc.clone())]
        } else {
            self.options
                .names
                .iter()
                .map(|n| (Some(n.clone()), manifest_desc.clone()))
                .collect()
        };
        self.store
            .commit(&self.staging, &roots)
            .map_err(|e| setup(&e))?;
        Ok(Built {
            id: descriptor_digest(&config_desc).map_err(|e| setup(&e))?,
            manifest: manifest_desc,
            config: config_desc,
            layers: state.layers.clone(),
            created: config.created,
            names: self.options.names.clone(),
            cache: Vec::new(),
        })
    }

    fn emit(&self, event: Progress<'_>) {
        (lock(&self.progress))(event);
    }

    fn start(&self, name: &str) -> usize {
        let vertex = self.vertex.fetch_add(1, Ordering::Relaxed) + 1;
        self.emit(Progress::Start { vertex, name });
        vertex
    }

    fn done(&self, vertex: usize, t: Instant, layer: Option<&Descriptor>, cached: bool) {
        self.emit(Progress::Done {
            vertex,
            seconds: t.elapsed().as_secs_f64(),
            layer,
            cached,
        });
    }

    /// The instruction's source text, continuation lines joined.
    fn line_text(&self, span: &Span) -> String {
        line_text(self.source, span)
    }

    fn step_error(&self, span: &Span, message: String) -> SolveError {
        SolveError::Step {
            location: format!("{}:{}", span.file, span.line),
            instruction: self
                .source
                .lines()
                .nth(span.line.saturating_sub(1))
                .unwrap_or_default()
                .trim()
                .to_owned(),
            message,
        }
    }
}

/// The text of the instruction at `span` in `source` on one line: continuation lines joined,
/// their escape characters, blank lines and comments dropped.
fn line_text(source: &str, span: &Span) -> String {
    let lines: Vec<&str> = source
        .lines()
        .skip(span.line.saturating_sub(1))
        .take(span.end_line.saturating_sub(span.line) + 1)
        .map(|l| {
            let l = l.trim();
            l.strip_suffix(['\\', '`']).map_or(l, str::trim_end)
        })
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    lines.join(" ")
}

fn shell_of(shell: &[String]) -> Vec<String> {
    if shell.is_empty() {
        DEFAULT_SHELL.iter().map(|s| (*s).to_owned()).collect()
    } else {
        shell.to_vec()
    }
}

fn command_line(command: &CommandLine, shell: &[String]) -> Vec<String> {
    match command {
        CommandLine::Exec(args) => args.clone(),
        CommandLine::Shell(s) => {
            let mut a = shell_of(shell);
            a.push(s.clone());
            a
        }
    }
}

/// `path` made absolute against the working directory `cwd`.
fn absolute(cwd: Option<&str>, path: &str) -> String {
    let joined = if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new(cwd.filter(|c| !c.is_empty()).unwrap_or("/")).join(path)
    };
    let mut parts: Vec<String> = Vec::new();
    for c in joined.components() {
        match c {
            std::path::Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// The time a build records (the config's and the history's `created`): `SOURCE_DATE_EPOCH`
/// when the build has one (the same value clamps the layers' mtimes, through
/// [`LayerOptions`]), so that the same inputs give the same image; else now.
fn now(source_date_epoch: Option<i64>) -> String {
    let secs = source_date_epoch
        .map(|s| u64::try_from(s).unwrap_or(0))
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    format_rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdir_paths_are_absolute_and_clean() {
        assert_eq!(absolute(None, "app"), "/app");
        assert_eq!(absolute(Some("/app"), "sub/../x"), "/app/x");
        assert_eq!(absolute(Some("/app"), "/abs/"), "/abs");
    }

    #[test]
    fn step_names_join_continuation_lines() {
        let source = "FROM scratch\nENV A=1 \\\n    # note\n    B=2\nCMD x\n";
        let span = Span {
            file: "Dockerfile".into(),
            line: 2,
            column: 1,
            end_line: 4,
        };
        assert_eq!(line_text(source, &span), "ENV A=1 B=2");
    }

    #[test]
    fn shell_forms_use_the_shell() {
        let cmd = CommandLine::Shell("echo hi".into());
        assert_eq!(command_line(&cmd, &[]), ["/bin/sh", "-c", "echo hi"]);
        let bash = ["/bin/bash".to_owned(), "-c".to_owned()];
        assert_eq!(command_line(&cmd, &bash), ["/bin/bash", "-c", "echo hi"]);
        let exec = CommandLine::Exec(vec!["a".into(), "b".into()]);
        assert_eq!(command_line(&exec, &bash), ["a", "b"]);
    }
}
