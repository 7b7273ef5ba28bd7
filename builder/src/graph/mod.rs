//! The build graph: stages and their steps as a DAG with edges from `FROM <stage>`,
//! `COPY --from` and `RUN --mount=from=`, pruned to `--target`, with cycle detection, ready sets
//! for parallel execution and a stable identity per step.
//!
//! [`Graph::build`] takes a [`Lowered`] build and a target and keeps the stages the target
//! reaches: a stage nothing needs is never run. It refuses
//! - a cycle among the stages (checked over every stage, as BuildKit does), naming the stages
//!   and the instructions that close it;
//! - a needed stage that reads from a later stage, which BuildKit refuses too
//!   ("needs to be defined before");
//! - a needed stage whose lowering failed (see [`Stage::error`]).
//!
//! Scheduling works on stages: a stage is ready once every stage it needs is built.
//! [`Graph::batches`] gives the stages level by level (each batch can run in parallel once the
//! batches before it are done); [`Graph::ready`] answers "what can start now" for a scheduler
//! that tracks completions itself. Steps within a stage run in order.
//!
//! Each [`Step`] has a [`StepId`]: a SHA-256 over the identity of what it starts from (its
//! parent step, or the base), the expanded instruction in a canonical binary form, and the
//! identities of the stages it reads from. `ARG` and `ENV` steps carry their values, and a `RUN`
//! carries the whole environment the Dockerfile gives it, so a build argument changes the
//! identity of every step that sees it. Spans, comments, keyword case, stage indices and the
//! other stages never enter it: the identity is the same across runs, directories and edits
//! elsewhere in the file. A base image enters as its reference as written and its platform:
//! the cache keys on the identity, adding what only a build knows (the digest the reference
//! resolves to, the content of the files a step reads from the build context).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::instructions::{
    BaseRef, Chmod, Command, CommandLine, FromRef, HealthcheckKind, InlineFile, InstructionError,
    Lowered, Mount, Platform, Stage,
};
use crate::parser::{Instruction, Span};

/// The identity of a step: a SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId([u8; 32]);

impl StepId {
    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest in lower-case hex, 64 characters.
    pub fn hex(&self) -> String {
        use fmt::Write;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

impl fmt::Display for StepId {
    /// `sha256:<hex>`, like an OCI digest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StepId({})", self)
    }
}

/// Where a step comes from in its stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepOrigin {
    /// [`Stage::triggers`]`[i]`: an `ONBUILD` trigger of the base.
    Trigger(usize),
    /// [`Stage::commands`]`[i]`.
    Command(usize),
}

/// One step of a stage: one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The step's identity.
    pub id: StepId,
    /// The identity it builds on: the previous step's, or the stage's base.
    pub parent: StepId,
    /// Which command of the stage it is.
    pub origin: StepOrigin,
    /// The command's instruction.
    pub instruction: Instruction,
    /// The stages whose result the step reads (`COPY --from`, `RUN --mount=from=`).
    pub deps: Vec<usize>,
    /// Where the command was written.
    pub span: Span,
}

/// A stage in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageNode {
    /// The stage's index in [`Lowered::stages`].
    pub index: usize,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// What it starts from.
    pub base: BaseRef,
    /// The platform it builds for: its `--platform`, else its base stage's, else the target
    /// platform.
    pub platform: Platform,
    /// The stages it needs (its base stage, and what its steps read), sorted.
    pub deps: Vec<usize>,
    /// The identity of its base.
    pub base_id: StepId,
    /// Its steps, in order.
    pub steps: Vec<Step>,
    /// The identity of its result: its last step's, or its base's when it has no step.
    pub id: StepId,
    /// Where its `FROM` is.
    pub span: Span,
}

/// An image the build reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    /// The reference, as written (after expansion).
    pub reference: String,
    /// The platform it is needed for.
    pub platform: Platform,
    /// The stages that read it (as base, `COPY --from` or mount), sorted.
    pub stages: Vec<usize>,
}

/// One link of a dependency cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleLink {
    /// The stage that needs the next one.
    pub stage: String,
    /// The stage it needs.
    pub needs: String,
    /// The instruction that makes it need it (`FROM`, `COPY --from`, `RUN --mount`).
    pub span: Span,
}

/// Why a graph cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GraphError {
    /// `--target` names no stage.
    #[error("target stage {name:?} could not be found")]
    UnknownTarget {
        /// The name given.
        name: String,
    },
    /// Stages that need each other.
    #[error("circular dependency detected on stage: {}{}", .links.first().map(|l| l.stage.as_str()).unwrap_or(""), render_cycle(.links))]
    Cycle {
        /// The cycle, link by link, back to its first stage.
        links: Vec<CycleLink>,
    },
    /// A needed stage that reads from a stage defined after it.
    #[error(
        "{span}: cannot use stage {needs:?} from stage {stage:?}, it needs to be defined before the current stage"
    )]
    ForwardReference {
        /// The stage that reads.
        stage: String,
        /// The later stage it reads from.
        needs: String,
        /// The instruction that reads.
        span: Span,
    },
    /// A needed stage that failed to lower.
    #[error("{0}")]
    Stage(Box<InstructionError>),
}

fn render_cycle(links: &[CycleLink]) -> String {
    let mut out = String::new();
    for link in links {
        out.push_str(&format!(
            "\n  {}: {} needs {}",
            link.span, link.stage, link.needs
        ));
    }
    out
}

/// The stage DAG of a build, pruned to its target, with step identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// The stages the target needs, in a topological order (every stage after what it needs).
    stages: Vec<StageNode>,
    /// Position in `stages` of each stage index in the graph.
    positions: BTreeMap<usize, usize>,
    target: usize,
    images: Vec<ImageInput>,
}

impl Graph {
    /// Builds the graph of `lowered` for `target` (a stage name, any case; `None` for the
    /// target `lowered` was lowered for).
    pub fn build(lowered: &Lowered, target: Option<&str>) -> Result<Graph, GraphError> {
        let stages = &lowered.stages;
        let target = match target {
            None => lowered.target,
            Some(name) => lowered
                .stage_by_name(name)
                .map(|s| s.index)
                .ok_or_else(|| GraphError::UnknownTarget {
                    name: name.to_string(),
                })?,
        };
        let deps: Vec<Vec<(usize, &Span)>> = stages.iter().map(Stage::dependencies).collect();
        detect_cycle(stages, &deps)?;

        // What the target reaches.
        let mut needed = BTreeSet::new();
        let mut stack = vec![target];
        while let Some(i) = stack.pop() {
            if i < stages.len() && needed.insert(i) {
                stack.extend(deps.get(i).into_iter().flatten().map(|(d, _)| *d));
            }
        }
        for &i in &needed {
            let Some(stage) = stages.get(i) else { continue };
            if let Some(e) = &stage.error {
                return Err(GraphError::Stage(e.clone()));
            }
            for (d, span) in deps.get(i).into_iter().flatten() {
                if *d > i {
                    return Err(GraphError::ForwardReference {
                        stage: stage.display_name(),
                        needs: stages.get(*d).map(Stage::display_name).unwrap_or_default(),
                        span: (*span).clone(),
                    });
                }
            }
        }

        // Every edge now points to an earlier stage: index order is topological.
        let mut nodes: Vec<StageNode> = Vec::with_capacity(needed.len());
        let mut positions = BTreeMap::new();
        let mut images: BTreeMap<(String, String), (Platform, BTreeSet<usize>)> = BTreeMap::new();
        for &i in &needed {
            let Some(stage) = stages.get(i) else { continue };
            let lookup = |j: usize| positions.get(&j).and_then(|&p: &usize| nodes.get(p));
            let platform = match (&stage.platform, &stage.base) {
                (Some(p), _) => p.clone(),
                (None, BaseRef::Stage(j)) => lookup(*j)
                    .map(|n: &StageNode| n.platform.clone())
                    .unwrap_or_else(|| lowered.target_platform.clone()),
                (None, _) => lowered.target_platform.clone(),
            };
            let base_id = {
                let mut c = Canon::new("base");
                match &stage.base {
                    BaseRef::Scratch => c.str("scratch"),
                    BaseRef::Image(r) => {
                        c.str("image");
                        c.str(r);
                    }
                    BaseRef::Stage(j) => {
                        c.str("stage");
                        c.id(&lookup(*j).map(|n| n.id).unwrap_or(StepId([0; 32])));
                    }
                }
                c.str(&platform.to_string());
                c.finish()
            };
            let stage_ids: BTreeMap<usize, StepId> = deps
                .get(i)
                .into_iter()
                .flatten()
                .filter_map(|(d, _)| lookup(*d).map(|n| (*d, n.id)))
                .collect();
            let mut steps = Vec::with_capacity(stage.triggers.len() + stage.commands.len());
            let mut parent = base_id;
            let origins = (0..stage.triggers.len())
                .map(StepOrigin::Trigger)
                .chain((0..stage.commands.len()).map(StepOrigin::Command));
            for (origin, command) in origins.zip(stage.steps()) {
                let mut c = Canon::new("step");
                c.id(&parent);
                canonical(&mut c, command, &stage_ids, &platform);
                let id = c.finish();
                let mut step_deps: Vec<usize> = command
                    .sources()
                    .into_iter()
                    .filter_map(|f| match f {
                        FromRef::Stage(d) => Some(*d),
                        _ => None,
                    })
                    .collect();
                step_deps.sort_unstable();
                step_deps.dedup();
                for f in command.sources() {
                    if let FromRef::Image(r) = f {
                        images
                            .entry((r.clone(), platform.to_string()))
                            .or_insert_with(|| (platform.clone(), BTreeSet::new()))
                            .1
                            .insert(i);
                    }
                }
                steps.push(Step {
                    id,
                    parent,
                    origin,
                    instruction: command.instruction(),
                    deps: step_deps,
                    span: command.span().clone(),
                });
                parent = id;
            }
            if let BaseRef::Image(r) = &stage.base {
                images
                    .entry((r.clone(), platform.to_string()))
                    .or_insert_with(|| (platform.clone(), BTreeSet::new()))
                    .1
                    .insert(i);
            }
            let mut stage_deps: Vec<usize> =
                deps.get(i).into_iter().flatten().map(|(d, _)| *d).collect();
            stage_deps.sort_unstable();
            stage_deps.dedup();
            positions.insert(i, nodes.len());
            nodes.push(StageNode {
                index: i,
                name: stage.name.clone(),
                base: stage.base.clone(),
                platform,
                deps: stage_deps,
                base_id,
                steps,
                id: parent,
                span: stage.span.clone(),
            });
        }
        let images = images
            .into_iter()
            .map(|((reference, _), (platform, users))| ImageInput {
                reference,
                platform,
                stages: users.into_iter().collect(),
            })
            .collect();
        Ok(Graph {
            stages: nodes,
            positions,
            target,
            images,
        })
    }

    /// The target stage's index.
    pub fn target(&self) -> usize {
        self.target
    }

    /// The target stage.
    pub fn target_stage(&self) -> Option<&StageNode> {
        self.stage(self.target)
    }

    /// The stages of the graph, every stage after the stages it needs.
    pub fn stages(&self) -> &[StageNode] {
        &self.stages
    }

    /// The stage with index `index`, if the graph has it.
    pub fn stage(&self, index: usize) -> Option<&StageNode> {
        self.positions.get(&index).and_then(|&p| self.stages.get(p))
    }

    /// Whether the build needs stage `index`.
    pub fn contains(&self, index: usize) -> bool {
        self.positions.contains_key(&index)
    }

    /// The images the build reads, sorted by reference.
    pub fn images(&self) -> &[ImageInput] {
        &self.images
    }

    /// The stages level by level: the first batch needs nothing, each later batch needs only
    /// stages of earlier batches. Within a batch, stages are sorted by index and can run in
    /// parallel.
    pub fn batches(&self) -> Vec<Vec<usize>> {
        let mut level: BTreeMap<usize, usize> = BTreeMap::new();
        let mut batches: Vec<Vec<usize>> = Vec::new();
        for node in &self.stages {
            let l = node
                .deps
                .iter()
                .filter_map(|d| level.get(d))
                .map(|l| l + 1)
                .max()
                .unwrap_or(0);
            level.insert(node.index, l);
            if batches.len() <= l {
                batches.resize_with(l + 1, Vec::new);
            }
            if let Some(batch) = batches.get_mut(l) {
                batch.push(node.index);
            }
        }
        for batch in &mut batches {
            batch.sort_unstable();
        }
        batches
    }

    /// The stages that can start once the stages in `completed` are built: those not in
    /// `completed` whose every dependency is. Sorted by index; a scheduler leaves out the ones
    /// it already started.
    pub fn ready(&self, completed: &BTreeSet<usize>) -> Vec<usize> {
        let mut ready: Vec<usize> = self
            .stages
            .iter()
            .filter(|n| !completed.contains(&n.index))
            .filter(|n| n.deps.iter().all(|d| completed.contains(d)))
            .map(|n| n.index)
            .collect();
        ready.sort_unstable();
        ready
    }
}

/// Finds a cycle among all stages (DFS in index order), reporting the first one met.
fn detect_cycle(stages: &[Stage], deps: &[Vec<(usize, &Span)>]) -> Result<(), GraphError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; stages.len()];
    for start in 0..stages.len() {
        if marks.get(start) != Some(&Mark::New) {
            continue;
        }
        // An explicit stack of (stage, next edge to look at), and the edges taken.
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        let mut path: Vec<(usize, usize, &Span)> = Vec::new();
        if let Some(m) = marks.get_mut(start) {
            *m = Mark::Open;
        }
        while let Some(top) = stack.last_mut() {
            let (node, edge) = *top;
            top.1 += 1;
            let Some(&(next, span)) = deps.get(node).and_then(|d| d.get(edge)) else {
                if let Some(m) = marks.get_mut(node) {
                    *m = Mark::Done;
                }
                stack.pop();
                path.pop();
                continue;
            };
            match marks.get(next) {
                Some(Mark::New) => {
                    if let Some(m) = marks.get_mut(next) {
                        *m = Mark::Open;
                    }
                    path.push((node, next, span));
                    stack.push((next, 0));
                }
                Some(Mark::Open) => {
                    path.push((node, next, span));
                    let from = path.iter().position(|(s, _, _)| *s == next).unwrap_or(0);
                    let name =
                        |i: usize| stages.get(i).map(Stage::display_name).unwrap_or_default();
                    let links = path
                        .get(from..)
                        .unwrap_or_default()
                        .iter()
                        .map(|(s, n, span)| CycleLink {
                            stage: name(*s),
                            needs: name(*n),
                            span: (*span).clone(),
                        })
                        .collect();
                    return Err(GraphError::Cycle { links });
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// A length-prefixed binary encoding fed to SHA-256, so that no two different instructions
/// encode alike.
struct Canon(Sha256);

impl Canon {
    fn new(domain: &str) -> Self {
        let mut c = Canon(Sha256::new());
        c.str("berth.graph.v1");
        c.str(domain);
        c
    }

    fn bytes(&mut self, tag: u8, bytes: &[u8]) {
        self.0.update([tag]);
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn str(&mut self, s: &str) {
        self.bytes(b's', s.as_bytes());
    }

    fn opt(&mut self, s: Option<&str>) {
        match s {
            None => self.bytes(b'n', &[]),
            Some(s) => self.str(s),
        }
    }

    fn num(&mut self, n: u64) {
        self.bytes(b'u', &n.to_le_bytes());
    }

    fn flag(&mut self, b: bool) {
        self.bytes(b'b', &[u8::from(b)]);
    }

    fn list<S: AsRef<str>>(&mut self, items: &[S]) {
        self.num(items.len() as u64);
        for item in items {
            self.str(item.as_ref());
        }
    }

    fn pairs(&mut self, pairs: &[(String, String)]) {
        self.num(pairs.len() as u64);
        for (k, v) in pairs {
            self.str(k);
            self.str(v);
        }
    }

    fn id(&mut self, id: &StepId) {
        self.bytes(b'i', &id.0);
    }

    fn finish(self) -> StepId {
        let mut id = [0u8; 32];
        id.copy_from_slice(&self.0.finalize());
        StepId(id)
    }
}

fn canonical_line(c: &mut Canon, line: &CommandLine) {
    match line {
        CommandLine::Exec(items) => {
            c.str("exec");
            c.list(items);
        }
        CommandLine::Shell(text) => {
            c.str("shell");
            c.str(text);
        }
    }
}

fn canonical_from(
    c: &mut Canon,
    from: Option<&FromRef>,
    stage_ids: &BTreeMap<usize, StepId>,
    platform: &Platform,
) {
    match from {
        None => c.str("none"),
        Some(FromRef::Stage(i)) => {
            c.str("stage");
            c.id(stage_ids.get(i).unwrap_or(&StepId([0; 32])));
        }
        Some(FromRef::Image(r)) => {
            c.str("image");
            c.str(r);
            c.str(&platform.to_string());
        }
        Some(FromRef::Scratch) => c.str("scratch"),
        Some(FromRef::Context) => c.str("context"),
    }
}

fn canonical_chmod(c: &mut Canon, chmod: Option<&Chmod>) {
    match chmod {
        None => c.str("none"),
        Some(Chmod::Octal(m)) => {
            c.str("octal");
            c.num(u64::from(*m));
        }
        Some(Chmod::Symbolic(s)) => {
            c.str("symbolic");
            c.str(s);
        }
    }
}

fn canonical_inline(c: &mut Canon, files: &[InlineFile]) {
    c.num(files.len() as u64);
    for f in files {
        c.str(&f.name);
        c.str(&f.data);
    }
}

fn canonical_mount(
    c: &mut Canon,
    m: &Mount,
    stage_ids: &BTreeMap<usize, StepId>,
    platform: &Platform,
) {
    c.str(m.kind.as_str());
    canonical_from(c, m.from_ref.as_ref(), stage_ids, platform);
    c.opt(m.source.as_deref());
    c.opt(m.target.as_deref());
    c.flag(m.read_only);
    c.opt(m.id.as_deref());
    c.opt(m.sharing.map(|s| s.as_str()));
    c.flag(m.required);
    c.opt(m.size.map(|s| s.to_string()).as_deref());
    c.opt(m.env.as_deref());
    for n in [m.mode, m.uid, m.gid] {
        c.opt(n.map(|n| n.to_string()).as_deref());
    }
}

/// The canonical form of a command: everything expanded that affects its result, nothing of
/// where or how it was written.
fn canonical(
    c: &mut Canon,
    command: &Command,
    stage_ids: &BTreeMap<usize, StepId>,
    platform: &Platform,
) {
    c.str(command.instruction().as_str());
    match command {
        Command::Run(r) => {
            canonical_line(c, &r.command);
            c.num(r.heredocs.len() as u64);
            for h in &r.heredocs {
                c.str(&h.name);
                c.num(u64::from(h.file_descriptor));
                c.flag(h.expand);
                c.flag(h.chomp);
                c.str(&h.content);
            }
            c.str(&format!("{:?}", r.network));
            c.str(&format!("{:?}", r.security));
            c.num(r.mounts.len() as u64);
            for m in &r.mounts {
                canonical_mount(c, m, stage_ids, platform);
            }
            c.pairs(&r.env);
        }
        Command::Copy(cp) => {
            canonical_from(c, cp.from.as_ref(), stage_ids, platform);
            c.opt(cp.chown.as_deref());
            canonical_chmod(c, cp.chmod.as_ref());
            c.flag(cp.link);
            c.flag(cp.parents);
            c.list(&cp.exclude);
            c.list(&cp.sources);
            canonical_inline(c, &cp.heredocs);
            c.str(&cp.dest);
        }
        Command::Add(a) => {
            c.opt(a.checksum.as_deref());
            c.flag(a.keep_git_dir);
            c.opt(a.unpack.map(|u| if u { "true" } else { "false" }));
            c.opt(a.chown.as_deref());
            canonical_chmod(c, a.chmod.as_ref());
            c.flag(a.link);
            c.list(&a.exclude);
            c.list(&a.sources);
            canonical_inline(c, &a.heredocs);
            c.str(&a.dest);
        }
        Command::Env(e) => c.pairs(&e.pairs),
        Command::Label(l) => c.pairs(&l.pairs),
        Command::Arg(a) => {
            c.num(a.args.len() as u64);
            for arg in &a.args {
                c.str(&arg.name);
                c.opt(arg.value.as_deref());
            }
        }
        Command::Expose(e) => {
            c.num(e.ports.len() as u64);
            for p in &e.ports {
                c.num(u64::from(p.start));
                c.num(u64::from(p.end));
                c.str(p.protocol.as_str());
            }
        }
        Command::User(u) => c.str(&u.user),
        Command::Workdir(w) => c.str(&w.path),
        Command::Volume(v) => c.list(&v.paths),
        Command::Entrypoint(e) => canonical_line(c, &e.command),
        Command::Cmd(cmd) => canonical_line(c, &cmd.command),
        Command::Shell(s) => c.list(&s.shell),
        Command::Healthcheck(h) => match &h.check {
            HealthcheckKind::None => c.str("none"),
            HealthcheckKind::Cmd {
                command,
                interval,
                timeout,
                start_period,
                start_interval,
                retries,
            } => {
                c.str("cmd");
                canonical_line(c, command);
                for d in [interval, timeout, start_period, start_interval] {
                    c.opt(d.map(|d| d.as_nanos().to_string()).as_deref());
                }
                c.opt(retries.map(|r| r.to_string()).as_deref());
            }
        },
        Command::StopSignal(s) => c.str(&s.signal),
        Command::OnBuild(o) => c.str(&o.expression),
        Command::Maintainer(m) => c.str(&m.name),
    }
}
