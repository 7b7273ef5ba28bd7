//! The build executor: runs the steps of the target stage and writes the image.
//!
//! For now the stages the target needs run one after the other, each step in order:
//! - `FROM scratch` starts from BuildKit's empty config (`PATH`, working directory `/`);
//!   `FROM <image>` resolves the image in the local [`ImageStore`], extracts its layers into the
//!   [`SnapshotStore`] (once per diff_id) and starts from its config; `FROM <stage>` starts from
//!   that stage's result. Either way the base's `ONBUILD` triggers leave the config (lowering
//!   made them the stage's first steps);
//! - `ENV`, `LABEL`, `USER`, `EXPOSE`, `VOLUME`, `ENTRYPOINT`, `CMD`, `SHELL`, `STOPSIGNAL`,
//!   `HEALTHCHECK`, `MAINTAINER` and `ARG` change the config and add a history entry with
//!   `empty_layer: true`; `ONBUILD` changes the config only. The history text is BuildKit's
//!   (see `history.rs`);
//! - `WORKDIR` other than `/` makes a layer, as BuildKit does: `mkdir -p` of the directory,
//!   owned by the stage's `USER`, and an empty layer when it exists;
//! - `RUN` runs in the sandbox on an overlay of the step's parents with a fresh upper
//!   directory (or a copy of them where overlayfs is unavailable), and the upper directory is
//!   the layer;
//! - `COPY` copies from the build context into a copy of the parents, whose diff is the layer.
//!
//! Every layer lands in a [`Staging`] area of the image store, and is handed at once to
//! [`SolveOptions::layer_sink`] when there is one (so that a push can upload it while later
//! steps run); the config and manifest follow, and [`ImageStore::commit`] records the image
//! under the requested names. [`Progress`] reports each step as BuildKit's plain progress
//! does, with the layer a finished step made. A failing step
//! leaves no active snapshot and no mount behind: an [`Active`] snapshot removes its directory
//! when dropped, and the sandbox unmounts whatever happens.

mod add;
mod copy;
mod history;
mod root;
mod run;

pub use run::{MAX_SECRET_SIZE, SecretSource, parse_secret, parse_secrets};
mod workdir;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
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

use crate::context::Context;
use crate::instructions::Command;
use crate::instructions::{BaseImage, BaseRef, CommandLine, HealthcheckKind, Lowered};
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
        /// Whether the step's result came from the cache instead of being built. Always
        /// `false` until the solver has a cache; displays already print BuildKit's `CACHED`
        /// for it.
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
}

/// A stage's state while it is built.
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
        let Ok((config, _)) = load_image(store, name, normalize, &target_platform(lowered)) else {
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

/// Reads an image of the store: its config and layer descriptors.
fn load_image(
    store: &ImageStore,
    name: &str,
    normalize: &dyn Fn(&str) -> Option<String>,
    platform: &berth_layerstore::image::Platform,
) -> Result<(ImageConfig, Vec<Descriptor>), SolveError> {
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
    Ok((config, manifest.layers()))
}

fn descriptor_digest(desc: &Descriptor) -> Result<Digest, berth_layerstore::image::ImageError> {
    berth_layerstore::image::descriptor_digest(desc)
}

/// The executor of one build.
pub struct Solver<'a> {
    store: &'a ImageStore,
    snapshots: SnapshotStore,
    sandbox: Sandbox,
    context: &'a Context,
    source: &'a str,
    normalize: &'a dyn Fn(&str) -> Option<String>,
    staging: Staging,
    leases: Vec<Lease>,
    /// The stages built so far, by index.
    stages: BTreeMap<usize, State>,
    progress: &'a mut dyn FnMut(Progress<'_>),
    vertex: usize,
    options: SolveOptions,
    /// The layer of the step running now, once it has one: [`Progress::Done`] reports it.
    last_layer: Option<Descriptor>,
}

impl<'a> Solver<'a> {
    /// A solver over the image store `store`, building from `context`. `source` is the
    /// Dockerfile's text (for step names), `normalize` turns image names into the store's.
    pub fn new(
        store: &'a ImageStore,
        context: &'a Context,
        source: &'a str,
        normalize: &'a dyn Fn(&str) -> Option<String>,
        options: SolveOptions,
        progress: &'a mut dyn FnMut(Progress<'_>),
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
        Ok(Solver {
            store,
            snapshots,
            sandbox,
            context,
            source,
            normalize,
            staging,
            leases: Vec::new(),
            stages: BTreeMap::new(),
            progress,
            vertex: 0,
            options,
            last_layer: None,
        })
    }

    /// Builds the target stage of `lowered` and records the image.
    pub fn build(mut self, lowered: &Lowered) -> Result<Built, SolveError> {
        let state = self.solve_stage(lowered, lowered.target)?;
        let vertex = self.start("exporting to image");
        let t = Instant::now();
        let built = self.write_image(&state).inspect_err(|e| {
            (self.progress)(Progress::Error {
                vertex,
                message: &e.to_string(),
            });
        })?;
        self.done(vertex, t);
        Ok(built)
    }

    fn solve_stage(&mut self, lowered: &Lowered, index: usize) -> Result<State, SolveError> {
        if let Some(state) = self.stages.get(&index) {
            return Ok(state.clone());
        }
        let stage = &lowered.stages[index];
        let platform = &lowered.target_platform;
        let steps: Vec<&Command> = stage.steps().collect();
        let total = steps.len() + 1;
        let name = stage.display_name();
        let from_line = self.line_text(&stage.span);
        let mut state = match &stage.base {
            BaseRef::Scratch => {
                // BuildKit's empty image: PATH and the working directory `/`.
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
            BaseRef::Stage(i) => self.solve_stage(lowered, *i)?,
            BaseRef::Image(image) => {
                let vertex = self.start(&format!("[{name} 1/{total}] {from_line}"));
                let t = Instant::now();
                let state = match self.base_image(image, &target_platform(lowered)) {
                    Ok(state) => state,
                    Err(message) => {
                        (self.progress)(Progress::Error {
                            vertex,
                            message: &message,
                        });
                        return Err(self.step_error(&stage.span, message));
                    }
                };
                self.done(vertex, t);
                state
            }
        };
        state.start_stage();
        for (i, command) in steps.iter().enumerate() {
            let label = format!(
                "[{name} {}/{total}] {}",
                i + 2,
                self.line_text(command.span())
            );
            // The step's own vertex: a stage it builds first (`COPY --from`) adds others.
            let vertex = self.vertex + 1;
            if let Err(message) = self.step(lowered, command, &label, &mut state) {
                (self.progress)(Progress::Error {
                    vertex,
                    message: &message,
                });
                return Err(self.step_error(command.span(), message));
            }
        }
        self.stages.insert(index, state.clone());
        Ok(state)
    }

    fn base_image(
        &mut self,
        image: &str,
        platform: &berth_layerstore::image::Platform,
    ) -> Result<State, String> {
        let (mut config, layers) =
            load_image(self.store, image, self.normalize, platform).map_err(|e| e.to_string())?;
        let diff_ids = config.rootfs.diff_ids.clone();
        if diff_ids.len() != layers.len() {
            return Err(format!(
                "{image}: {} layers but {} diff_ids",
                layers.len(),
                diff_ids.len()
            ));
        }
        for (layer, diff_id) in layers.iter().zip(&diff_ids) {
            if self.snapshots.exists(diff_id) {
                continue;
            }
            let digest = descriptor_digest(layer).map_err(|e| e.to_string())?;
            let reader = self
                .store
                .content()
                .read(&digest, None)
                .map_err(|e| format!("{image}: {e}"))?;
            self.snapshots
                .extract(diff_id, reader)
                .map_err(|e| format!("{image}: {e}"))?;
        }
        let lease = self
            .snapshots
            .lease(&diff_ids)
            .map_err(|e| format!("{image}: {e}"))?;
        self.leases.push(lease);
        let shell = config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .unwrap_or_default();
        config.created = None;
        Ok(State::new(config, layers, shell))
    }

    fn step(
        &mut self,
        lowered: &Lowered,
        command: &Command,
        label: &str,
        state: &mut State,
    ) -> Result<(), String> {
        let vertex = self.start(label);
        let t = Instant::now();
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
                    self.workdir(state, &dir)?;
                    empty = false;
                }
            }
            Command::Run(run) => {
                self.run(lowered, vertex, state, run)?;
                empty = false;
            }
            Command::Copy(copy) => {
                self.copy(lowered, state, copy)?;
                empty = false;
            }
            Command::Add(add) => {
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
        self.done(vertex, t);
        Ok(())
    }

    /// Creates `dir` and its missing parents, owned by the stage's `USER`, in a new layer
    /// (empty when the directory exists).
    fn workdir(&mut self, state: &mut State, dir: &str) -> Result<(), String> {
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

    fn commit(&mut self, active: Active, state: &mut State) -> Result<(), String> {
        let (info, lease) = active
            .commit_in_store(&self.staging, &self.options.layer)
            .map_err(|e| e.to_string())?;
        self.leases.push(lease);
        let descriptor = new_descriptor(&info.media_type, &info.digest, info.size);
        self.send_layer(&descriptor, &info.diff_id);
        self.last_layer = Some(descriptor.clone());
        state.layers.push(descriptor);
        state.config.rootfs.kind = "layers".to_owned();
        state.config.rootfs.diff_ids.push(info.diff_id);
        Ok(())
    }

    /// Hands a layer just committed to the staging area to [`SolveOptions::layer_sink`]. A
    /// layer that cannot be opened is not sent: the outputs read the image from the store
    /// once it is written anyway.
    fn send_layer(&self, descriptor: &Descriptor, diff_id: &Digest) {
        let Some(sink) = &self.options.layer_sink else {
            return;
        };
        let Ok(digest) = descriptor_digest(descriptor) else {
            return;
        };
        let content = self
            .staging
            .dir()
            .join(berth_layerstore::image::store::CONTENT_DIR);
        let Ok(staged) = berth_layerstore::content::fs::FsStore::open(content) else {
            return;
        };
        if let Ok(file) = std::fs::File::open(staged.blob_path(&digest)) {
            // A receiver that has gone away wants no more layers.
            let _ = sink.send(LayerBlob {
                descriptor: descriptor.clone(),
                diff_id: diff_id.clone(),
                file,
            });
        }
    }

    fn write_image(&mut self, state: &State) -> Result<Built, SolveError> {
        let setup =
            |e: &dyn std::fmt::Display| SolveError::Setup(format!("writing the image: {e}"));
        let mut config = state.config.clone();
        config.created = Some(now(self.options.layer.tar.source_date_epoch));
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
        })
    }

    fn start(&mut self, name: &str) -> usize {
        self.last_layer = None;
        self.vertex += 1;
        (self.progress)(Progress::Start {
            vertex: self.vertex,
            name,
        });
        self.vertex
    }

    fn done(&mut self, vertex: usize, t: Instant) {
        let layer = self.last_layer.take();
        (self.progress)(Progress::Done {
            vertex,
            seconds: t.elapsed().as_secs_f64(),
            layer: layer.as_ref(),
            cached: false,
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
