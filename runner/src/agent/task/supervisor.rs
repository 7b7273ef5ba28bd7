//! A task's supervisor: the thread that moves one task through ECS's lifecycle.
//!
//! Like the ECS agent's task engine it is level-triggered: the container threads, health
//! checks and stop requests only record facts in the task's state and wake the supervisor,
//! which then looks at the whole state and decides what to do next (start the containers whose
//! dependencies are met, give up on those whose dependencies cannot be, signal or kill what
//! must stop, move the task on). A missed wake-up therefore costs at most a timeout, never a
//! wrong decision.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::container::{self, Inputs, Plan, PlanError};
use super::network::{self, TaskNetwork};
use super::{Engine, Phase, TaskShared, TaskState, Transition, VOLUMES_DIR, health};
use crate::agent::image::PreparedImage;
use crate::agent::logs::LogWriter;
use crate::agent::protocol::TaskAssignment;
use crate::ecs::Timestamp;
use crate::ecs::fargate::CgroupLimits;
use crate::ecs::status::{
    ContainerStatus, DesiredStatus, HealthStatus, LaunchType, StopCode, TaskStatus,
};
use crate::ecs::taskdef::{ContainerCondition, ContainerDefinition, IpcMode, NetworkMode, PidMode};
use crate::sandbox::{ContainerState, Resources};
use berth_registry::client::Credential;

/// The reason ECS gives a task whose essential container exited.
pub(crate) const ESSENTIAL_EXITED: &str = "Essential container in task exited";
/// The reason ECS gives a container the kernel's OOM killer killed (Docker's
/// `State.OOMKilled`), whatever its exit code.
pub(crate) const OUT_OF_MEMORY: &str = "OutOfMemoryError: Container killed due to memory usage";
/// How long the supervisor sleeps when nothing is due: a safety net for a lost wake-up.
const IDLE: Duration = Duration::from_secs(5);
/// How long a container thread waits for its container to start.
const START_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Starts the supervisor of `shared` on a thread of its own.
pub(crate) fn spawn(engine: Arc<Engine>, shared: Arc<TaskShared>) -> std::io::Result<()> {
    let name = format!("task-{}", &shared.id[..shared.id.len().min(10)]);
    std::thread::Builder::new().name(name).spawn(move || {
        let containers = shared
            .assignment
            .task_definition
            .container_definitions
            .len();
        let dependents = dependents(&shared.assignment.task_definition.container_definitions);
        Supervisor {
            engine,
            shared,
            network: None,
            cgroup: None,
            volumes: HashMap::new(),
            images: (0..containers).map(|_| None).collect(),
            plans: (0..containers).map(|_| None).collect(),
            stop_signals: vec![libc::SIGTERM; containers],
            writers: (0..containers).map(|_| None).collect(),
            dependents,
            threads: Vec::new(),
        }
        .run();
    })?;
    Ok(())
}

/// A failure before any container runs: the task stops with `TaskFailedToStart`.
struct Failure {
    /// The reason, in ECS's words (`CannotPullContainerError: ...`).
    reason: String,
    /// The container it is about, which gets the reason too.
    container: Option<usize>,
}

impl Failure {
    fn task(reason: String) -> Failure {
        Failure {
            reason,
            container: None,
        }
    }
}

/// What the supervisor does outside the task's lock.
enum Action {
    Start(usize),
    Signal(usize, libc::c_int),
}

struct Supervisor {
    engine: Arc<Engine>,
    shared: Arc<TaskShared>,
    network: Option<TaskNetwork>,
    cgroup: Option<String>,
    volumes: HashMap<String, std::path::PathBuf>,
    /// Per container, its image, whose lease keeps the snapshots for the task's life.
    images: Vec<Option<Arc<PreparedImage>>>,
    plans: Vec<Option<Plan>>,
    /// Per container, the signal that asks it to stop.
    stop_signals: Vec<libc::c_int>,
    writers: Vec<Option<LogWriter>>,
    /// Per container, the containers that depend on it (or link to it).
    dependents: Vec<Vec<usize>>,
    threads: Vec<JoinHandle<()>>,
}

impl Supervisor {
    fn run(mut self) {
        tracing::info!(task = %self.shared.arn, "task received");
        match self.prepare() {
            Ok(()) => self.supervise(),
            Err(failure) => self.fail(failure),
        }
        for thread in std::mem::take(&mut self.threads) {
            let _ = thread.join();
        }
        self.deprovision();
        self.finish();
    }

    fn assignment(&self) -> &TaskAssignment {
        &self.shared.assignment
    }

    fn defs(&self) -> &[ContainerDefinition] {
        &self.shared.assignment.task_definition.container_definitions
    }

    fn stop_wanted(&self) -> bool {
        self.shared.lock().task.desired_status == DesiredStatus::Stopped
    }

    /// PROVISIONING, then PENDING: network, cgroup, credentials, images, containers.
    fn prepare(&mut self) -> Result<(), Failure> {
        self.provision()?;
        if self.stop_wanted() {
            return Ok(());
        }
        {
            let mut state = self.shared.lock();
            transition(&self.shared, &mut state, TaskStatus::Pending);
        }
        self.shared.notify();
        self.pull()?;
        if self.stop_wanted() {
            return Ok(());
        }
        self.create()
    }

    fn provision(&mut self) -> Result<(), Failure> {
        let init = |detail: String| Failure::task(format!("ResourceInitializationError: {detail}"));
        let shared = self.shared.clone();
        let definition = &shared.assignment.task_definition;
        if let Some(mode) = definition.pid_mode {
            let mode = match mode {
                PidMode::Host => "host",
                PidMode::Task => "task",
            };
            return Err(init(format!(
                "pidMode {mode} is not supported: each container has a PID namespace of its own"
            )));
        }
        if let Some(mode @ (IpcMode::Host | IpcMode::Task)) = definition.ipc_mode {
            let mode = if mode == IpcMode::Host {
                "host"
            } else {
                "task"
            };
            return Err(init(format!(
                "ipcMode {mode} is not supported: each container has an IPC namespace of its own"
            )));
        }
        self.volumes = container::prepare_volumes(
            &self.shared.dir,
            &self.engine.config.root.join(VOLUMES_DIR),
            definition,
        )
        .map_err(init)?;

        let mode = super::network_mode(&shared.assignment);
        let provisioned = network::provision(
            self.engine.network.as_ref(),
            &self.engine.publisher,
            &self.shared.id,
            mode,
            definition,
        )
        .map_err(init)?;
        {
            let mut state = self.shared.lock();
            state.network = Some(provisioned.info.clone());
            if let Some(eni) = provisioned.eni {
                state.task.attach_eni(eni);
            }
            for (container, bindings) in state.task.containers.iter_mut().zip(provisioned.bindings)
            {
                container.network_bindings = bindings;
            }
        }
        self.network = Some(provisioned.network);

        let cgroup = self.engine.cgroup_of(&self.shared.id);
        let limits = task_limits(&shared.assignment);
        if !limits.is_empty() {
            self.engine
                .sandbox
                .create_cgroup(&cgroup, &limits)
                .map_err(|e| init(format!("cannot make the task's cgroup: {e}")))?;
        }
        self.cgroup = Some(cgroup);

        self.shared.notify();
        Ok(())
    }

    /// Finds or pulls each image and extracts its layers, between `pullStartedAt` and
    /// `pullStoppedAt`.
    fn pull(&mut self) -> Result<(), Failure> {
        self.shared.lock().task.pull_started_at = Some(Timestamp::now());
        self.shared.notify();
        let mut cache: HashMap<String, Arc<PreparedImage>> = HashMap::new();
        let mut result = Ok(());
        // The execution role's credentials, for the registries that accept them.
        let credentials: Vec<(String, Credential)> = self
            .shared
            .lock()
            .execution_credentials
            .as_ref()
            .map(|issued| {
                issued
                    .registries
                    .iter()
                    .map(|host| {
                        let credential = Credential::Basic {
                            username: issued.access_key_id.clone(),
                            password: issued.session_token.clone(),
                        };
                        (host.clone(), credential)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for i in 0..self.defs().len() {
            if self.stop_wanted() {
                break;
            }
            let image = self.defs()[i].image.clone();
            let prepared = match cache.get(&image) {
                Some(prepared) => prepared.clone(),
                None => match self
                    .engine
                    .images
                    .prepare(&image, &credentials, &self.engine.runtime)
                {
                    Ok(prepared) => {
                        let prepared = Arc::new(prepared);
                        cache.insert(image, prepared.clone());
                        prepared
                    }
                    Err(err) => {
                        result = Err(Failure {
                            reason: format!("CannotPullContainerError: {err}"),
                            container: Some(i),
                        });
                        break;
                    }
                },
            };
            let mut state = self.shared.lock();
            state.task.containers[i].image_digest = Some(prepared.manifest_digest.to_string());
            state.containers[i].image_id = Some(prepared.image_id.to_string());
            drop(state);
            self.images[i] = Some(prepared);
        }
        self.shared.lock().task.pull_stopped_at = Some(Timestamp::now());
        self.shared.notify();
        result
    }

    /// Sets up each container's run: root filesystem, process, mounts, limits, log.
    fn create(&mut self) -> Result<(), Failure> {
        let mode = super::network_mode(self.assignment());
        let metadata = match mode {
            NetworkMode::Host => self.engine.config.metadata_host,
            NetworkMode::Awsvpc | NetworkMode::Bridge => self.engine.config.metadata_bridge,
            NetworkMode::None => None,
        };
        let (info, credentials) = {
            let state = self.shared.lock();
            (
                state.network.clone().expect("provisioned before create"),
                state
                    .credentials
                    .as_ref()
                    .map(|c| (c.id.clone(), c.authorization.clone())),
            )
        };
        let sandbox_network = self
            .network
            .as_ref()
            .expect("provisioned before create")
            .sandbox_network();
        let execution_env = match self.assignment().launch_type {
            LaunchType::Fargate => "AWS_ECS_FARGATE",
            LaunchType::Ec2 => "AWS_ECS_EC2",
        };
        for i in 0..self.defs().len() {
            let mut agent_env = vec![("AWS_EXECUTION_ENV".to_owned(), execution_env.to_owned())];
            if let Some(addr) = metadata {
                agent_env.push((
                    "ECS_CONTAINER_METADATA_URI_V4".to_owned(),
                    format!("http://{addr}/v4/{}", self.shared.tokens[i]),
                ));
                if let Some((id, authorization)) = &credentials {
                    if self.engine.config.relative_credentials && mode != NetworkMode::None {
                        agent_env.push((
                            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI".to_owned(),
                            format!("/v2/credentials/{id}"),
                        ));
                    }
                    agent_env.push((
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_owned(),
                        format!("http://{addr}/v2/credentials/{id}"),
                    ));
                    agent_env.push((
                        "AWS_CONTAINER_AUTHORIZATION_TOKEN".to_owned(),
                        authorization.clone(),
                    ));
                }
            }
            let (control, runtime_id) = {
                let state = self.shared.lock();
                (
                    state.containers[i].control.clone(),
                    state.task.containers[i]
                        .runtime_id
                        .clone()
                        .expect("every container has a runtime id"),
                )
            };
            let image = self.images[i].clone().expect("pulled before create");
            let planned = container::plan(Inputs {
                task_dir: &self.shared.dir,
                definition: &self.assignment().task_definition,
                index: i,
                image: &image,
                network: sandbox_network.clone(),
                info: &info,
                volumes: &self.volumes,
                agent_env: &agent_env,
                cgroup_parent: self.cgroup.clone(),
                runtime_id: &runtime_id,
                control,
            })
            .and_then(|plan| {
                let writer = self.shared.logs[i].writer().map_err(|e| {
                    PlanError::Start(format!(
                        "cannot open the log {}: {e}",
                        self.shared.logs[i].path().display()
                    ))
                })?;
                Ok((plan, writer))
            });
            match planned {
                Ok((plan, writer)) => {
                    self.stop_signals[i] = plan.stop_signal;
                    self.plans[i] = Some(plan);
                    self.writers[i] = Some(writer);
                    let mut state = self.shared.lock();
                    state.containers[i].created_at = Some(Timestamp::now());
                    state.containers[i].waiting_since = Some(Instant::now());
                }
                Err(err @ PlanError::Secrets(_)) => {
                    return Err(Failure {
                        reason: err.reason(),
                        container: Some(i),
                    });
                }
                Err(err) if self.defs()[i].is_essential() => {
                    return Err(Failure {
                        reason: err.reason(),
                        container: Some(i),
                    });
                }
                Err(err) => {
                    let mut state = self.shared.lock();
                    not_started(&mut state, i, Some(err.reason()));
                }
            }
        }
        self.shared.notify();
        Ok(())
    }

    /// A failure before any container ran: the containers that did not run are STOPPED, and
    /// the task stops with `TaskFailedToStart`.
    fn fail(&mut self, failure: Failure) {
        tracing::warn!(task = %self.shared.arn, reason = %failure.reason, "task failed to start");
        let mut state = self.shared.lock();
        for i in 0..state.containers.len() {
            if state.containers[i].phase == Phase::Waiting {
                let reason = (failure.container == Some(i)).then(|| failure.reason.clone());
                not_started(&mut state, i, reason);
            }
        }
        state
            .task
            .request_stop(StopCode::TaskFailedToStart, failure.reason);
        drop(state);
        self.shared.notify();
    }

    /// Starts containers as their dependencies allow, watches them, and stops them when the
    /// task is to stop; returns once every container is done.
    fn supervise(&mut self) {
        loop {
            let mut state = self.shared.lock();
            let version = state.task.version;
            let (actions, wake, done) = self.decide(&mut state, Instant::now());
            let changed = state.task.version != version;
            if actions.is_empty() && !done {
                if changed {
                    drop(state);
                    self.shared.notify();
                } else {
                    drop(self.shared.wait(state, wake.unwrap_or(IDLE)));
                }
                continue;
            }
            drop(state);
            self.shared.notify();
            for action in actions {
                match action {
                    Action::Start(i) => self.start_container(i),
                    Action::Signal(i, signal) => self.signal(i, signal),
                }
            }
            if done {
                return;
            }
        }
    }

    /// Looks at the task and decides: the actions to take now, when to look again (at the
    /// latest), and whether every container is done.
    fn decide(&self, state: &mut TaskState, now: Instant) -> (Vec<Action>, Option<Duration>, bool) {
        let defs = self.defs();
        let mut actions = Vec::new();
        let mut wake: Option<Duration> = None;
        let soon = |d: Duration, wake: &mut Option<Duration>| {
            *wake = Some(wake.map_or(d, |w| w.min(d)));
        };

        if state.task.desired_status != DesiredStatus::Stopped {
            for (i, def) in defs.iter().enumerate() {
                if !def.is_essential() {
                    continue;
                }
                match state.containers[i].phase {
                    Phase::Exited(code) => {
                        tracing::info!(task = %self.shared.arn, container = %def.name, code,
                            "essential container exited");
                        state
                            .task
                            .request_stop(StopCode::EssentialContainerExited, ESSENTIAL_EXITED);
                        break;
                    }
                    Phase::NotStarted => {
                        let reason = state.task.containers[i].reason.clone().unwrap_or_else(|| {
                            format!("Essential container {} did not start", def.name)
                        });
                        state.task.request_stop(StopCode::TaskFailedToStart, reason);
                        break;
                    }
                    _ => {}
                }
            }
        }

        if state.task.desired_status != DesiredStatus::Stopped {
            let mut changed = false;
            for i in 0..defs.len() {
                if state.containers[i].phase != Phase::Waiting {
                    continue;
                }
                match dependencies(defs, state, i) {
                    Deps::Met => {
                        state.containers[i].phase = Phase::Starting;
                        actions.push(Action::Start(i));
                    }
                    Deps::Never(reason) => {
                        not_started(state, i, Some(reason));
                        changed = true;
                    }
                    Deps::Pending(missing) => {
                        let timeout = defs[i]
                            .start_timeout
                            .map(|s| Duration::from_secs(u64::from(s)))
                            .unwrap_or(self.engine.config.start_timeout);
                        let since = *state.containers[i].waiting_since.get_or_insert(now);
                        let waited = now.saturating_duration_since(since);
                        if waited >= timeout {
                            let reason = format!(
                                "{} timed out after {}s (startTimeout) waiting for {}",
                                defs[i].name,
                                timeout.as_secs(),
                                missing.join(", ")
                            );
                            not_started(state, i, Some(reason));
                            changed = true;
                        } else {
                            soon(timeout - waited, &mut wake);
                        }
                    }
                }
            }
            if changed {
                // A container that will never run may stop the task: look again at once.
                soon(Duration::ZERO, &mut wake);
            }
            let all_started = state
                .containers
                .iter()
                .all(|c| matches!(c.phase, Phase::Running) || c.phase.is_final());
            if all_started && state.task.last_status == TaskStatus::Pending && !changed {
                transition(&self.shared, state, TaskStatus::Activating);
                transition(&self.shared, state, TaskStatus::Running);
            }
            return (actions, wake, false);
        }

        // The task is to stop.
        let ever_started = state
            .containers
            .iter()
            .any(|c| matches!(c.phase, Phase::Starting | Phase::Running | Phase::Exited(_)));
        match state.task.last_status {
            TaskStatus::Activating | TaskStatus::Running => {
                transition(&self.shared, state, TaskStatus::Deactivating);
                transition(&self.shared, state, TaskStatus::Stopping);
            }
            TaskStatus::Pending if ever_started => {
                transition(&self.shared, state, TaskStatus::Stopping);
            }
            _ => {}
        }
        for i in 0..defs.len() {
            if state.containers[i].phase == Phase::Waiting {
                not_started(state, i, None);
            }
        }
        for (i, def) in defs.iter().enumerate() {
            if state.containers[i].phase != Phase::Running || state.containers[i].killed {
                continue;
            }
            match state.containers[i].signalled_at {
                None => {
                    let dependents_done = self.dependents[i]
                        .iter()
                        .all(|&j| state.containers[j].phase.is_final());
                    if dependents_done {
                        let signal = self.stop_signals[i];
                        state.containers[i].signalled_at = Some(now);
                        actions.push(Action::Signal(i, signal));
                        soon(self.stop_timeout(i), &mut wake);
                    }
                }
                Some(at) => {
                    let timeout = self.stop_timeout(i);
                    let elapsed = now.saturating_duration_since(at);
                    if elapsed >= timeout {
                        tracing::info!(task = %self.shared.arn, container = %def.name,
                            ?timeout, "container did not stop in time; killing it");
                        state.containers[i].killed = true;
                        actions.push(Action::Signal(i, libc::SIGKILL));
                    } else {
                        soon(timeout - elapsed, &mut wake);
                    }
                }
            }
        }
        let done = state.containers.iter().all(|c| c.phase.is_final());
        (actions, wake, done)
    }

    /// Container `i`'s `stopTimeout`, else the engine's default.
    fn stop_timeout(&self, i: usize) -> Duration {
        self.defs()[i]
            .stop_timeout
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(self.engine.config.stop_timeout)
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        let control = self.shared.lock().containers[i].control.clone();
        match control.signal(signal) {
            Ok(()) => {
                tracing::debug!(task = %self.shared.arn, container = %self.defs()[i].name, signal, "signalled")
            }
            Err(crate::sandbox::Error::NotRunning { .. }) => {}
            Err(err) => {
                tracing::warn!(task = %self.shared.arn, container = %self.defs()[i].name, signal, %err,
                    "cannot signal the container")
            }
        }
    }

    /// Runs container `i` on a thread of its own, with a second one that notes its start.
    fn start_container(&mut self, i: usize) {
        let (Some(plan), Some(mut writer)) = (self.plans[i].take(), self.writers[i].take()) else {
            let mut state = self.shared.lock();
            not_started(
                &mut state,
                i,
                Some("CannotStartContainerError: the container was not created".to_owned()),
            );
            drop(state);
            self.shared.notify();
            return;
        };
        let name = self.defs()[i].name.clone();
        let control = plan.spec.control.clone().expect("every plan has a control");
        tracing::info!(task = %self.shared.arn, container = %name, "starting container");

        let shared = self.shared.clone();
        let sandbox = self.engine.sandbox.clone();
        let run_control = control.clone();
        let run = std::thread::Builder::new()
            .name(format!("ctr-{}", &name[..name.len().min(11)]))
            .spawn(move || {
                let result = sandbox.run(&plan.spec, &mut |_, bytes| writer.write(bytes));
                drop(writer);
                let outcome = match result {
                    Ok(status) => Ok(status),
                    Err(err) => match run_control.state() {
                        ContainerState::Exited(status) => {
                            tracing::warn!(task = %shared.arn, %err, "container run ended with an error");
                            Ok(status)
                        }
                        _ => Err(format!("CannotStartContainerError: {err}")),
                    },
                };
                let mut state = shared.lock();
                let now = Timestamp::now();
                match outcome {
                    Ok(status) => {
                        let code = status.code();
                        let runtime = &mut state.containers[i];
                        runtime.started_at.get_or_insert(now);
                        runtime.finished_at = Some(now);
                        runtime.phase = Phase::Exited(code);
                        let container = &mut state.task.containers[i];
                        container.last_status = ContainerStatus::Stopped;
                        container.exit_code = Some(code);
                        if status.oom_killed() {
                            // As the ECS agent does when Docker reports `OOMKilled`.
                            container.reason = Some(OUT_OF_MEMORY.to_owned());
                        }
                        tracing::info!(task = %shared.arn, container = %container.name, code,
                            oom_killed = status.oom_killed(), "container exited");
                    }
                    Err(reason) => {
                        tracing::warn!(task = %shared.arn, %reason, "container did not start");
                        not_started(&mut state, i, Some(reason));
                    }
                }
                state.task.version += 1;
                drop(state);
                shared.notify();
            });
        let run = match run {
            Ok(run) => run,
            Err(err) => {
                let mut state = self.shared.lock();
                not_started(
                    &mut state,
                    i,
                    Some(format!(
                        "CannotStartContainerError: no thread to run it: {err}"
                    )),
                );
                drop(state);
                self.shared.notify();
                return;
            }
        };
        self.threads.push(run);

        let shared = self.shared.clone();
        let check = self.defs()[i].health_check.clone();
        let watcher = std::thread::Builder::new()
            .name(format!("start-{}", &name[..name.len().min(10)]))
            .spawn(move || {
                if control.wait_started(START_WAIT).is_err() {
                    return;
                }
                let started = Instant::now();
                let mut state = shared.lock();
                if state.containers[i].phase != Phase::Starting {
                    return;
                }
                state.containers[i].phase = Phase::Running;
                state.containers[i].started_at = Some(Timestamp::now());
                state.task.containers[i].last_status = ContainerStatus::Running;
                state.task.version += 1;
                drop(state);
                shared.notify();
                if let Some(check) = check {
                    health::spawn(shared, i, check, control, started);
                }
            });
        match watcher {
            Ok(watcher) => self.threads.push(watcher),
            Err(err) => tracing::warn!(%err, "cannot start a container's start watcher"),
        }
    }

    /// DEPROVISIONING: releases the network, the cgroup and the credentials.
    fn deprovision(&mut self) {
        {
            let mut state = self.shared.lock();
            if state
                .task
                .last_status
                .can_move_to(TaskStatus::Deprovisioning)
            {
                transition(&self.shared, &mut state, TaskStatus::Deprovisioning);
            } else if state.task.last_status != TaskStatus::Deprovisioning {
                transition(&self.shared, &mut state, TaskStatus::Stopping);
                transition(&self.shared, &mut state, TaskStatus::Deprovisioning);
            }
            state.credentials = None;
        }
        self.shared.notify();
        if let Some(made) = self.network.take() {
            network::release(self.engine.network.as_ref(), &self.shared.id, made);
        }
        if let Some(cgroup) = self.cgroup.take() {
            if let Err(err) = self.engine.sandbox.remove_cgroup(&cgroup) {
                tracing::warn!(task = %self.shared.arn, %cgroup, %err, "cannot remove the task's cgroup");
            }
        }
        self.plans.iter_mut().for_each(|p| *p = None);
        self.writers.iter_mut().for_each(|w| *w = None);
        self.images.iter_mut().for_each(|i| *i = None);
    }

    /// STOPPED.
    fn finish(&mut self) {
        let mut state = self.shared.lock();
        transition(&self.shared, &mut state, TaskStatus::Stopped);
        state.clean_after = Some(Timestamp::now().saturating_add(self.engine.config.cleanup_wait));
        self.shared.save(&state);
        tracing::info!(task = %self.shared.arn, stop_code = ?state.task.stop_code,
            reason = ?state.task.stopped_reason, "task stopped");
        drop(state);
        // Followers of a container that never ran end too.
        for log in &self.shared.logs {
            log.close();
        }
        self.shared.notify();
    }
}

/// Moves the task to `status`, noting the transition and saving the record. A move the
/// lifecycle does not allow is a bug; it is logged and not made.
fn transition(shared: &TaskShared, state: &mut TaskState, status: TaskStatus) {
    let now = Timestamp::now();
    match state.task.move_to(status, now) {
        Ok(()) => {
            state.transitions.push(Transition { status, at: now });
            shared.save(state);
            tracing::info!(task = %shared.arn, %status, "task status");
        }
        Err(err) => tracing::error!(%err, "task lifecycle"),
    }
}

/// Container `i` will never run: STOPPED, with `reason` if any.
fn not_started(state: &mut TaskState, i: usize, reason: Option<String>) {
    state.containers[i].phase = Phase::NotStarted;
    let container = &mut state.task.containers[i];
    container.last_status = ContainerStatus::Stopped;
    if reason.is_some() {
        container.reason = reason;
    }
    state.task.version += 1;
}

/// The task's health from its essential containers that have a health check.
pub(crate) fn update_task_health(state: &mut TaskState, assignment: &TaskAssignment) {
    let defs = &assignment.task_definition.container_definitions;
    let statuses: Vec<HealthStatus> = defs
        .iter()
        .zip(&state.task.containers)
        .filter(|(def, _)| def.is_essential() && def.health_check.is_some())
        .map(|(_, c)| c.health_status)
        .collect();
    state.task.health_status = HealthStatus::of_task(statuses);
}

/// Where a container's dependencies are.
#[derive(Debug, PartialEq, Eq)]
enum Deps {
    /// All met: it may start.
    Met,
    /// One can no longer be met.
    Never(String),
    /// Some are not met yet (described).
    Pending(Vec<String>),
}

/// Container `i`'s `dependsOn` conditions, with each `links` target as START.
fn dependencies(defs: &[ContainerDefinition], state: &TaskState, i: usize) -> Deps {
    let me = &defs[i].name;
    let links = defs[i].links.iter().map(|link| {
        (
            link.split_once(':').map_or(link.as_str(), |(name, _)| name),
            ContainerCondition::Start,
        )
    });
    let conditions = defs[i]
        .depends_on
        .iter()
        .map(|d| (d.container_name.as_str(), d.condition))
        .chain(links);
    let mut pending = Vec::new();
    for (name, condition) in conditions {
        let Some(j) = defs.iter().position(|d| d.name == name) else {
            return Deps::Never(format!(
                "{me} depends on container {name}, which the task does not have"
            ));
        };
        let phase = state.containers[j].phase;
        let never_started = || Deps::Never(format!("dependency container {name} did not start"));
        match condition {
            ContainerCondition::Start => match phase {
                Phase::Running | Phase::Exited(_) => {}
                Phase::NotStarted => return never_started(),
                Phase::Waiting | Phase::Starting => pending.push(format!("{name} to start")),
            },
            ContainerCondition::Complete => match phase {
                Phase::Exited(_) => {}
                Phase::NotStarted => return never_started(),
                _ => pending.push(format!("{name} to complete")),
            },
            ContainerCondition::Success => match phase {
                Phase::Exited(0) => {}
                Phase::Exited(code) => {
                    return Deps::Never(format!(
                        "dependency container {name} exited with code {code}, and {me} needs \
                         it to exit with code 0 (SUCCESS)"
                    ));
                }
                Phase::NotStarted => return never_started(),
                _ => pending.push(format!("{name} to exit with code 0")),
            },
            ContainerCondition::Healthy => {
                if defs[j].health_check.is_none() {
                    return Deps::Never(format!(
                        "dependency container {name} has no health check, and {me} waits for \
                         it to be HEALTHY"
                    ));
                }
                if state.containers[j].health.ever_healthy {
                    continue;
                }
                match phase {
                    Phase::Exited(_) | Phase::NotStarted => {
                        return Deps::Never(format!(
                            "dependency container {name} stopped before it was HEALTHY"
                        ));
                    }
                    _ => pending.push(format!("{name} to be HEALTHY")),
                }
            }
        }
    }
    if pending.is_empty() {
        Deps::Met
    } else {
        Deps::Pending(pending)
    }
}

/// Per container, the containers that depend on it or link to it: they stop first.
fn dependents(defs: &[ContainerDefinition]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); defs.len()];
    for (j, def) in defs.iter().enumerate() {
        let targets = def
            .depends_on
            .iter()
            .map(|d| d.container_name.as_str())
            .chain(
                def.links
                    .iter()
                    .map(|l| l.split_once(':').map_or(l.as_str(), |(name, _)| name)),
            );
        for target in targets {
            if let Some(i) = defs.iter().position(|d| d.name == target) {
                if i != j && !out[i].contains(&j) {
                    out[i].push(j);
                }
            }
        }
    }
    out
}

/// The task's cgroup limits: its size's CPU shares and quota and its memory limit, when the
/// assignment (or definition) gives a task-level `cpu` and `memory`.
fn task_limits(assignment: &TaskAssignment) -> Resources {
    let cpu = assignment.cpu_units();
    let memory = assignment.memory_mib();
    let mut limits = Resources::default();
    if let Some(cpu) = cpu {
        let size = CgroupLimits::new(cpu, memory.unwrap_or(0));
        limits.cpu_shares = Some(size.cpu_shares.clamp(
            crate::sandbox::MIN_CPU_SHARES,
            crate::sandbox::MAX_CPU_SHARES,
        ));
        // A quota under the kernel's minimum (a task of fewer than 11 units) is left out.
        if Resources::cpu_quota_for_units(u64::from(cpu)).is_some() {
            limits.cpu_quota = u64::try_from(size.cpu_quota).ok();
            limits.cpu_period = Some(size.cpu_period);
        }
    }
    if let Some(memory) = memory {
        let size = CgroupLimits::new(cpu.unwrap_or(0), memory);
        limits.memory_limit = u64::try_from(size.memory_bytes).ok();
    }
    limits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::taskdef::ContainerDependency;
    use crate::sandbox::ContainerControl;

    fn defs() -> Vec<ContainerDefinition> {
        let mut init = ContainerDefinition {
            name: "init".into(),
            essential: Some(false),
            ..ContainerDefinition::default()
        };
        init.image = "busybox".into();
        let db = ContainerDefinition {
            name: "db".into(),
            health_check: Some(crate::ecs::taskdef::HealthCheck {
                command: vec!["CMD".into(), "true".into()],
                ..Default::default()
            }),
            ..ContainerDefinition::default()
        };
        let app = ContainerDefinition {
            name: "app".into(),
            depends_on: vec![
                ContainerDependency {
                    container_name: "init".into(),
                    condition: ContainerCondition::Success,
                },
                ContainerDependency {
                    container_name: "db".into(),
                    condition: ContainerCondition::Healthy,
                },
            ],
            links: vec!["db:database".into()],
            ..ContainerDefinition::default()
        };
        vec![init, db, app]
    }

    fn state(phases: &[Phase]) -> TaskState {
        let request = crate::ecs::taskdef::RegisterTaskDefinition {
            family: "t".into(),
            container_definitions: defs(),
            ..Default::default()
        };
        let mut definition = crate::ecs::taskdef::TaskDefinition::register(
            crate::ecs::taskdef::RegisterTaskDefinition {
                container_definitions: request
                    .container_definitions
                    .into_iter()
                    .map(|mut c| {
                        c.image = "busybox".into();
                        c.memory = Some(64);
                        c
                    })
                    .collect(),
                ..request
            },
            1,
            Timestamp::from_secs(1),
        )
        .unwrap();
        definition.container_definitions[0].essential = Some(false);
        let task = crate::ecs::task::Task::new(
            "arn:aws:ecs:local:000000000000:task/default/t1",
            "arn:aws:ecs:local:000000000000:cluster/default",
            &definition,
            LaunchType::Ec2,
            None,
            Timestamp::from_secs(2),
        );
        TaskState {
            task,
            containers: phases
                .iter()
                .map(|&phase| super::super::ContainerRuntime {
                    phase,
                    control: ContainerControl::new(),
                    health: Default::default(),
                    created_at: None,
                    started_at: None,
                    finished_at: None,
                    image_id: None,
                    waiting_since: None,
                    signalled_at: None,
                    killed: false,
                })
                .collect(),
            transitions: Vec::new(),
            network: None,
            credentials: None,
            execution_credentials: None,
            clean_after: None,
        }
    }

    #[test]
    fn conditions_wait_then_pass_or_fail() {
        let defs = defs();
        let mut s = state(&[Phase::Running, Phase::Running, Phase::Waiting]);
        assert_eq!(
            dependencies(&defs, &s, 2),
            Deps::Pending(vec![
                "init to exit with code 0".into(),
                "db to be HEALTHY".into()
            ])
        );
        s.containers[0].phase = Phase::Exited(0);
        s.containers[1].health.ever_healthy = true;
        assert_eq!(dependencies(&defs, &s, 2), Deps::Met);
        s.containers[0].phase = Phase::Exited(3);
        let Deps::Never(reason) = dependencies(&defs, &s, 2) else {
            panic!("a failed SUCCESS dependency can never be met");
        };
        assert_eq!(
            reason,
            "dependency container init exited with code 3, and app needs it to exit with code 0 \
             (SUCCESS)"
        );
        s.containers[0].phase = Phase::Exited(0);
        s.containers[1].health.ever_healthy = false;
        s.containers[1].phase = Phase::Exited(0);
        assert_eq!(
            dependencies(&defs, &s, 2),
            Deps::Never("dependency container db stopped before it was HEALTHY".into())
        );
    }

    #[test]
    fn dependents_stop_before_what_they_depend_on() {
        let defs = defs();
        assert_eq!(dependents(&defs), vec![vec![2], vec![2], vec![]]);
    }

    #[test]
    fn task_sizes_become_the_task_cgroup_limits() {
        let request = crate::ecs::taskdef::RegisterTaskDefinition::from_json(
            r#"{"family": "f", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
                "requiresCompatibilities": ["FARGATE"],
                "containerDefinitions": [{"name": "a", "image": "busybox"}]}"#,
        )
        .unwrap();
        let definition =
            crate::ecs::taskdef::TaskDefinition::register(request, 1, Timestamp::from_secs(1))
                .unwrap();
        let assignment = TaskAssignment::new("t", "c", definition, LaunchType::Fargate);
        let limits = task_limits(&assignment);
        assert_eq!(limits.cpu_shares, Some(256));
        assert_eq!(limits.cpu_quota, Some(25_000));
        assert_eq!(limits.cpu_period, Some(100_000));
        assert_eq!(limits.memory_limit, Some(512 * 1024 * 1024));
        let mut unsized_task = assignment.clone();
        unsized_task.cpu = None;
        unsized_task.memory = None;
        unsized_task.task_definition.cpu = None;
        unsized_task.task_definition.memory = None;
        assert!(task_limits(&unsized_task).is_empty());
    }
}
