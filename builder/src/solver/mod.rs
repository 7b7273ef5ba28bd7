//! The build executor: runs the steps of the target stage and writes the image.
//!
//! For now the stages the target needs run one after the other, each step in order:
//! - `FROM scratch` starts from an empty config; `FROM <image>` resolves the image in the local
//!   [`ImageStore`], extracts its layers into the [`SnapshotStore`] (once per diff_id) and starts
//!   from its config; `FROM <stage>` starts from that stage's result;
//! - `ENV`, `LABEL`, `USER`, `EXPOSE`, `VOLUME`, `ENTRYPOINT`, `CMD`, `SHELL`, `STOPSIGNAL`,
//!   `HEALTHCHECK`, `ONBUILD`, `MAINTAINER` and `ARG` change the config and add a history entry
//!   with `empty_layer: true`;
//! - `WORKDIR` creates the directory when it is missing (a layer, as BuildKit makes one), else
//!   is an empty-layer entry;
//! - `RUN` runs in the sandbox on an overlay of the step's parents with a fresh upper
//!   directory (or a copy of them where overlayfs is unavailable), and the upper directory is
//!   the layer;
//! - `COPY` copies from the build context into a copy of the parents, whose diff is the layer.
//!
//! Every layer lands in a [`Staging`] area of the image store; the config and manifest follow,
//! and [`ImageStore::commit`] records the image under the requested names. A failing step
//! leaves no active snapshot and no mount behind: an [`Active`] snapshot removes its directory
//! when dropped, and the sandbox unmounts whatever happens.

mod copy;

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
use berth_layerstore::snapshot::{Active, Lease, Rootfs, SnapshotStore, overlay_supported};
use berth_runner::sandbox::{ProcessSpec, RootfsSpec, RunSpec, Sandbox, Stream};

use crate::context::Context;
use crate::instructions::{
    BaseImage, BaseRef, CommandLine, FromRef, HealthcheckKind, Lowered, NetworkMode,
};
use crate::instructions::{Command, Copy as CopyCmd};
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
    Done {
        /// The vertex number.
        vertex: usize,
        /// How long it took, in seconds.
        seconds: f64,
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
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image id: the config's digest.
    pub id: Digest,
    /// The manifest's descriptor.
    pub manifest: Descriptor,
}

/// A stage's state while it is built.
#[derive(Debug, Clone)]
struct State {
    config: ImageConfig,
    layers: Vec<Descriptor>,
    /// `SHELL` (not part of OCI configs' required fields; kept here and in the config).
    shell: Vec<String>,
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
        })
    }

    /// Builds the target stage of `lowered` and records the image.
    pub fn build(mut self, lowered: &Lowered) -> Result<Built, SolveError> {
        let state = self.solve_stage(lowered, lowered.target)?;
        let vertex = self.start("exporting to image");
        let t = Instant::now();
        let built = self.write_image(&state)?;
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
            BaseRef::Scratch => State {
                config: {
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
                        ..Default::default()
                    });
                    c
                },
                layers: Vec::new(),
                shell: Vec::new(),
            },
            BaseRef::Stage(i) => self.solve_stage(lowered, *i)?,
            BaseRef::Image(image) => {
                let vertex = self.start(&format!("[{name} 1/{total}] {from_line}"));
                let t = Instant::now();
                let state = self
                    .base_image(image, &target_platform(lowered))
                    .map_err(|e| self.step_error(&stage.span, e))?;
                self.done(vertex, t);
                state
            }
        };
        for (i, command) in steps.iter().enumerate() {
            let label = format!(
                "[{name} {}/{total}] {}",
                i + 2,
                self.line_text(command.span())
            );
            if let Err(message) = self.step(lowered, command, &label, &mut state) {
                (self.progress)(Progress::Error {
                    vertex: self.vertex,
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
        Ok(State {
            config,
            layers,
            shell,
        })
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
        let created_by = created_by(command, state);
        let c = state.config.config.get_or_insert_with(Default::default);
        let mut empty = true;
        match command {
            Command::Env(env) => {
                let list = c.env.get_or_insert_with(Vec::new);
                for (k, v) in &env.pairs {
                    list.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
                    list.push(format!("{k}={v}"));
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
                c.cmd = None;
            }
            Command::Cmd(cmd) => c.cmd = Some(command_line(&cmd.command, &state.shell)),
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
            Command::Arg(_) => {
                // ARG changes no config; BuildKit records no history for it.
                self.done(vertex, t);
                return Ok(());
            }
            Command::Workdir(w) => {
                let dir = absolute(c.working_dir.as_deref(), &w.path);
                c.working_dir = Some(dir.clone());
                empty = !self.workdir(state, &dir)?;
            }
            Command::Run(run) => {
                self.run(vertex, state, run)?;
                empty = false;
            }
            Command::Copy(copy) => {
                self.copy(lowered, state, copy)?;
                empty = false;
            }
            Command::Add(add) => {
                let copy = add_as_copy(self.context, add)?;
                self.copy(lowered, state, &copy)?;
                empty = false;
            }
        }
        let history = state.config.history.get_or_insert_with(Vec::new);
        history.push(History {
            created: Some(now()),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".to_owned()),
            empty_layer: empty.then_some(true),
            ..Default::default()
        });
        self.done(vertex, t);
        Ok(())
    }

    /// Creates `dir` in a new layer when the parents lack it; `false` when nothing changed.
    fn workdir(&mut self, state: &mut State, dir: &str) -> Result<bool, String> {
        let active = self
            .snapshots
            .prepare_copy("workdir", state.config.diff_ids())
            .map_err(|e| e.to_string())?;
        let Rootfs::Copy { dir: root } = active.rootfs().clone() else {
            return Err("a copy snapshot without a directory".into());
        };
        let created = copy::mkdir_in_root(&root, Path::new(dir)).map_err(|e| e.to_string())?;
        if !created {
            active.abort().map_err(|e| e.to_string())?;
            return Ok(false);
        }
        self.commit(active, state)?;
        Ok(true)
    }

    fn run(
        &mut self,
        vertex: usize,
        state: &mut State,
        run: &crate::instructions::Run,
    ) -> Result<(), String> {
        if !run.mounts.is_empty() {
            return Err("RUN --mount is not supported by the executor yet".into());
        }
        let args = match &run.command {
            CommandLine::Exec(args) => args.clone(),
            CommandLine::Shell(cmd) => {
                let mut a = shell_of(&state.shell);
                a.push(cmd.clone());
                a
            }
        };
        let parents = state.config.diff_ids().to_vec();
        let active = if overlay_supported() {
            self.snapshots.prepare("run", &parents)
        } else {
            self.snapshots.prepare_copy("run", &parents)
        }
        .map_err(|e| e.to_string())?;
        let rootfs = match active.rootfs() {
            Rootfs::Overlay {
                lowerdirs,
                upper,
                work,
            } => RootfsSpec::Overlay {
                lower: lowerdirs.clone(),
                upper: upper.clone(),
                work: work.clone(),
            },
            Rootfs::Copy { dir } => RootfsSpec::Dir(dir.clone()),
        };
        let c = state.config.config.clone().unwrap_or_default();
        let mut process = ProcessSpec::new(args.clone());
        process.env = run.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        process.cwd = PathBuf::from(
            c.working_dir
                .as_deref()
                .filter(|w| !w.is_empty())
                .unwrap_or("/"),
        );
        process.user = c.user.unwrap_or_default();
        let mut spec = RunSpec::new(rootfs, process);
        spec.network = match run.network {
            NetworkMode::None => berth_runner::sandbox::Network::None,
            _ => berth_runner::sandbox::Network::Host,
        };
        let progress = &mut *self.progress;
        let status = self
            .sandbox
            .run(&spec, &mut |_stream: Stream, bytes: &[u8]| {
                progress(Progress::Output { vertex, bytes });
            })
            .map_err(|e| e.to_string())?;
        if !status.success() {
            drop(active);
            return Err(format!(
                "process {:?} did not complete successfully: exit code: {}",
                args.join(" "),
                status.code()
            ));
        }
        self.commit(active, state)
    }

    fn copy(&mut self, lowered: &Lowered, state: &mut State, copy: &CopyCmd) -> Result<(), String> {
        let from = match &copy.from {
            None | Some(FromRef::Context) => None,
            Some(FromRef::Scratch) => Some(Vec::new()),
            Some(FromRef::Stage(i)) => Some(
                self.solve_stage(lowered, *i)
                    .map_err(|e| e.to_string())?
                    .config
                    .rootfs
                    .diff_ids,
            ),
            Some(FromRef::Image(name)) => Some(
                self.base_image(name, &target_platform(lowered))?
                    .config
                    .rootfs
                    .diff_ids,
            ),
        };
        if copy.parents || !copy.exclude.is_empty() || !copy.heredocs.is_empty() {
            return Err("COPY --parents, --exclude and here-documents are not supported by the executor yet".into());
        }
        let active = self
            .snapshots
            .prepare_copy("copy", state.config.diff_ids())
            .map_err(|e| e.to_string())?;
        let Rootfs::Copy { dir: root } = active.rootfs().clone() else {
            return Err("a copy snapshot without a directory".into());
        };
        let workdir = state
            .config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone());
        match from {
            None => copy::copy_from_context(self.context, &root, workdir.as_deref(), copy)?,
            Some(diff_ids) => {
                let source = self
                    .snapshots
                    .prepare_copy("copy-from", &diff_ids)
                    .map_err(|e| e.to_string())?;
                let Rootfs::Copy { dir: src } = source.rootfs().clone() else {
                    return Err("a copy snapshot without a directory".into());
                };
                copy::copy_from_root(&src, &root, workdir.as_deref(), copy)?;
                source.abort().map_err(|e| e.to_string())?;
            }
        }
        self.commit(active, state)
    }

    fn commit(&mut self, active: Active, state: &mut State) -> Result<(), String> {
        let (info, lease) = active
            .commit_in_store(&self.staging, &self.options.layer)
            .map_err(|e| e.to_string())?;
        self.leases.push(lease);
        state
            .layers
            .push(new_descriptor(&info.media_type, &info.digest, info.size));
        state.config.rootfs.kind = "layers".to_owned();
        state.config.rootfs.diff_ids.push(info.diff_id);
        Ok(())
    }

    fn write_image(&mut self, state: &State) -> Result<Built, SolveError> {
        let setup =
            |e: &dyn std::fmt::Display| SolveError::Setup(format!("writing the image: {e}"));
        let mut config = state.config.clone();
        config.created = Some(now());
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
        })
    }

    fn start(&mut self, name: &str) -> usize {
        self.vertex += 1;
        (self.progress)(Progress::Start {
            vertex: self.vertex,
            name,
        });
        self.vertex
    }

    fn done(&mut self, vertex: usize, t: Instant) {
        (self.progress)(Progress::Done {
            vertex,
            seconds: t.elapsed().as_secs_f64(),
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

/// `ADD` of local files, which is `COPY` from the context. Remote sources and local archives
/// (which `ADD` would unpack) are refused for now.
fn add_as_copy(context: &Context, add: &crate::instructions::Add) -> Result<CopyCmd, String> {
    for source in &add.sources {
        if source.contains("://") || source.starts_with("git@") {
            return Err(format!(
                "{source}: remote ADD sources are not supported yet"
            ));
        }
        if add.unpack == Some(false) {
            continue;
        }
        for entry in context.select(source).map_err(|e| e.to_string())? {
            if !entry.is_dir() && copy::is_archive(&context.host_path(&entry)) {
                return Err(format!(
                    "{source}: unpacking archives with ADD is not supported yet"
                ));
            }
        }
    }
    Ok(CopyCmd {
        from: None,
        chown: add.chown.clone(),
        chmod: add.chmod.clone(),
        link: add.link,
        parents: false,
        exclude: add.exclude.clone(),
        sources: add.sources.clone(),
        heredocs: add.heredocs.clone(),
        dest: add.dest.clone(),
        span: add.span.clone(),
    })
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

/// The history's `created_by`, as BuildKit writes it.
fn created_by(command: &Command, state: &State) -> String {
    let joined = |c: &CommandLine| match c {
        CommandLine::Exec(a) => format!("{a:?}"),
        CommandLine::Shell(s) => format!(
            "{:?}",
            command_line(&CommandLine::Shell(s.clone()), &state.shell)
        ),
    };
    match command {
        Command::Run(r) => match &r.command {
            CommandLine::Exec(a) => format!("RUN {} # buildkit", a.join(" ")),
            CommandLine::Shell(s) => {
                format!("RUN {} {s} # buildkit", shell_of(&state.shell).join(" "))
            }
        },
        Command::Copy(c) => format!("COPY {} {} # buildkit", c.sources.join(" "), c.dest),
        Command::Add(a) => format!("ADD {} {} # buildkit", a.sources.join(" "), a.dest),
        Command::Env(e) => format!(
            "ENV {}",
            e.pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Command::Workdir(w) => format!("WORKDIR {}", w.path),
        Command::Cmd(c) => format!("CMD {}", joined(&c.command)),
        Command::Entrypoint(e) => format!("ENTRYPOINT {}", joined(&e.command)),
        Command::User(u) => format!("USER {}", u.user),
        other => format!("{}", other.instruction()).to_uppercase(),
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

fn now() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
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
