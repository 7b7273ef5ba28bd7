//! The agent protocol: registration, the long poll that carries task reports one way and work
//! the other, and the monitor that disconnects silent agents.
//!
//! ## Reports
//! Each poll carries the full state of every task the agent has. For each report:
//! - a task the control plane does not know, or has given to another agent, or already counts
//!   as STOPPED (lost while its agent was away), is told to stop;
//! - otherwise the report is merged into the task: its status moves forward (through the
//!   states a report skipped), its containers' states, exit codes, bindings and health, its
//!   ENI, its times (the agent's own: `pullStartedAt`, `startedAt`, `stoppedAt`, ...), and,
//!   when the agent stopped it (an essential container exited), its desired status and stop
//!   code. This is also how a restarted control plane adopts the tasks that kept running.
//!
//! A task the agent had reported and no longer reports is gone (STOPPED). Work is kept until
//! the reports show it done: a start until the task is reported, a stop until the task is
//! reported stopping; if a poll's answer was lost, it is sent again after 10 s.
//!
//! ## Heartbeats
//! Polls are the heartbeat. An agent with no poll (and none in progress) for
//! `missed_heartbeats` heartbeats is disconnected: its container instance shows
//! `agentConnected: false`, takes no new tasks, and its tasks are lost: STOPPED with stop code
//! `TerminationNotice`, so that services replace them elsewhere. An agent that comes back is
//! connected again; the tasks it still runs are told to stop, since they were replaced.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use crate::agent::protocol::{
    MAX_POLL_WAIT_SECS, PollRequest, PollResponse, RegisterRequest, RegisterResponse,
    RoleCredentials, RoleType, StopInstruction, TaskAssignment, TaskReport,
};
use crate::ecs::Timestamp;
use crate::ecs::arn;
use crate::ecs::cluster::ClusterStatus;
use crate::ecs::placement::{ContainerInstance, ContainerInstanceStatus, Resources, VersionInfo};
use crate::ecs::status::{Connectivity, DesiredStatus, StopCode, TaskStatus};

use super::scheduler::{self, advance};
use super::store::{AgentRecord, InstanceRecord, TaskFilter, TaskRecord, WorkKind};
use super::{AgentLive, ApiError, ControlState, ErrorKind, Txn, lock};

/// Work not acknowledged after this long is sent again.
fn redelivery(txn: &Txn<'_>) -> Duration {
    txn.inner.config.redelivery
}

/// `POST /berth/v1/agents/register`.
pub(crate) async fn register_route(
    State(state): State<ControlState>,
    body: Bytes,
) -> Result<Json<RegisterResponse>, ApiError> {
    let request: RegisterRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorKind::Serialization, e.to_string()))?;
    Ok(Json(register(&state, request).await?))
}

/// Registers an agent, or registers it again (keeping its container instance) when it gives
/// its id back.
pub(crate) async fn register(
    state: &ControlState,
    request: RegisterRequest,
) -> Result<RegisterResponse, ApiError> {
    let url = reqwest::Url::parse(&request.address)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid agent address '{}': expected http://HOST:PORT.",
                request.address
            ))
        })?;
    if !request.ec2 && !request.fargate {
        return Err(ApiError::invalid(
            "An agent serves the EC2 pool (\"ec2\": true), the FARGATE pool (\"fargate\": true) \
             or both.",
        ));
    }
    if request.ec2 && (request.cpu == 0 || request.memory == 0) {
        return Err(ApiError::invalid(
            "An EC2 container instance must register its cpu and memory.",
        ));
    }
    if let Some(id) = &request.agent_id {
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ApiError::invalid(format!("Invalid agent id '{id}'.")));
        }
    }
    let agent_port = url.port_or_known_default();
    let heartbeat = state.inner.config.heartbeat;
    let response = state
        .write(move |txn| register_txn(txn, request, agent_port, heartbeat))
        .await?;
    touch(state, &response.agent_id);
    Ok(response)
}

fn register_txn(
    txn: &mut Txn<'_>,
    request: RegisterRequest,
    agent_port: Option<u16>,
    heartbeat: Duration,
) -> Result<RegisterResponse, ApiError> {
    let cluster = txn
        .db
        .cluster(&request.cluster)?
        .filter(|c| c.status == ClusterStatus::Active)
        .ok_or_else(ApiError::cluster_not_found)?;
    let cluster_name = cluster.cluster_name;
    let existing = match &request.agent_id {
        Some(id) => txn.db.agent(id)?,
        None => None,
    };
    if let Some(existing) = &existing {
        if existing.cluster != cluster_name {
            return Err(ApiError::client(format!(
                "Agent {} is registered in cluster {}; it cannot join cluster {cluster_name}.",
                existing.agent_id, existing.cluster
            )));
        }
    }
    let agent_id = request.agent_id.clone().unwrap_or_else(scheduler::new_id);
    let now = txn.now;
    let current = match existing
        .as_ref()
        .and_then(|a| a.container_instance_arn.as_deref())
    {
        Some(arn) => txn
            .db
            .instance(arn)?
            .filter(|r| r.instance.status != ContainerInstanceStatus::Inactive),
        None => None,
    };
    let cpu = u32::try_from(request.cpu).unwrap_or(u32::MAX);
    let memory = u32::try_from(request.memory).unwrap_or(u32::MAX);
    let mut attributes: BTreeMap<String, Option<String>> = request
        .attributes
        .iter()
        .map(|(name, value)| (name.clone(), Some(value.clone())))
        .collect();
    attributes
        .entry("ecs.os-type".into())
        .or_insert_with(|| Some("linux".into()));
    attributes
        .entry("ecs.cpu-architecture".into())
        .or_insert_with(|| Some(cpu_architecture().into()));
    let mut reserved: Vec<u16> = ContainerInstance::DEFAULT_RESERVED_PORTS.to_vec();
    reserved.extend(agent_port);
    let mut container_instance_arn = None;
    if request.ec2 {
        let record = match current {
            Some(mut record) => {
                let instance = &mut record.instance;
                instance.registered_resources = Resources {
                    cpu,
                    memory,
                    ports: reserved.iter().copied().collect(),
                    ports_udp: Default::default(),
                };
                instance.attributes = attributes;
                instance.agent_connected = true;
                record
            }
            None => {
                let arn = arn::container_instance(&cluster_name, &scheduler::new_id());
                let mut instance =
                    ContainerInstance::new(arn, agent_id.clone(), cpu, memory, reserved, now);
                instance.attributes = attributes;
                instance.version_info = VersionInfo {
                    agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
                    agent_hash: None,
                    docker_version: None,
                };
                tracing::info!(
                    agent = %agent_id,
                    instance = %instance.container_instance_arn,
                    cpu,
                    memory,
                    "container instance registered"
                );
                InstanceRecord {
                    cluster: cluster_name.clone(),
                    agent_id: agent_id.clone(),
                    instance,
                    deregistered_at: None,
                }
            }
        };
        txn.db.put_instance(&record)?;
        container_instance_arn = Some(record.instance.container_instance_arn.clone());
    } else if let Some(mut record) = current {
        // The agent no longer serves as an EC2 instance.
        record.instance.status = ContainerInstanceStatus::Inactive;
        record.instance.agent_connected = false;
        record.deregistered_at = Some(now);
        txn.db.put_instance(&record)?;
    }
    let agent = AgentRecord {
        agent_id: agent_id.clone(),
        cluster: cluster_name,
        container_instance_arn: container_instance_arn.clone(),
        address: request.address,
        attributes: request.attributes,
        fargate: request.fargate,
        ec2: request.ec2,
        connected: true,
        registered_at: existing.map_or(now, |a| a.registered_at),
        disconnected_at: None,
    };
    txn.db.put_agent(&agent)?;
    txn.effects.wake = true;
    tracing::info!(agent = %agent_id, fargate = agent.fargate, ec2 = agent.ec2, "agent registered");
    Ok(RegisterResponse {
        agent_id,
        container_instance_arn,
        heartbeat_seconds: heartbeat.as_secs().max(1),
    })
}

/// `ecs.cpu-architecture` of this machine, in ECS's spelling.
fn cpu_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    }
}

/// Records that `agent_id` was heard from now.
fn touch(state: &ControlState, agent_id: &str) {
    let now = state.now();
    let mut agents = lock(&state.inner.agents);
    agents
        .entry(agent_id.to_owned())
        .or_insert_with(|| AgentLive::new(now))
        .last_seen = now;
}

#[derive(Debug, Deserialize)]
pub(crate) struct PollQuery {
    #[serde(default)]
    wait: Option<u64>,
}

/// `POST /berth/v1/agents/{agentId}/poll?wait=SECONDS`.
pub(crate) async fn poll_route(
    State(state): State<ControlState>,
    Path(agent_id): Path<String>,
    Query(query): Query<PollQuery>,
    body: Bytes,
) -> Result<Json<PollResponse>, ApiError> {
    let request: PollRequest = if body.is_empty() {
        PollRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(ErrorKind::Serialization, e.to_string()))?
    };
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_POLL_WAIT_SECS));
    Ok(Json(poll(&state, agent_id, wait, request).await?))
}

/// Counts a poll in progress: the agent is in touch while it holds one.
struct Polling<'a> {
    state: &'a ControlState,
    agent_id: String,
}

impl<'a> Polling<'a> {
    fn start(state: &'a ControlState, agent_id: &str) -> Polling<'a> {
        let now = state.now();
        lock(&state.inner.agents)
            .entry(agent_id.to_owned())
            .or_insert_with(|| AgentLive::new(now))
            .polling += 1;
        Polling {
            state,
            agent_id: agent_id.to_owned(),
        }
    }
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        let now = self.state.now();
        if let Some(live) = lock(&self.state.inner.agents).get_mut(&self.agent_id) {
            live.polling = live.polling.saturating_sub(1);
            live.last_seen = now;
        }
    }
}

/// Takes an agent's reports, then answers with its work as soon as there is some, or after
/// `wait`.
pub(crate) async fn poll(
    state: &ControlState,
    agent_id: String,
    wait: Duration,
    request: PollRequest,
) -> Result<PollResponse, ApiError> {
    // The agent is in touch from now until its poll is answered.
    let _polling = Polling::start(state, &agent_id);
    let id = agent_id.clone();
    let refresh = request.refresh_credentials;
    let tasks = request.tasks;
    let mut credentials = state
        .write(move |txn| {
            merge_reports(txn, &id, &tasks)?;
            refreshed_credentials(txn, &id, &refresh)
        })
        .await?;
    let (notify, generation) = {
        let mut agents = lock(&state.inner.agents);
        let live = agents
            .get_mut(&agent_id)
            .ok_or_else(|| ApiError::internal("agent vanished from the live table"))?;
        live.generation += 1;
        // Older polls of this agent, still held, answer now (see `AgentLive::generation`).
        live.notify.notify_waiters();
        (live.notify.clone(), live.generation)
    };
    let superseded = || {
        lock(&state.inner.agents)
            .get(&agent_id)
            .is_none_or(|live| live.generation != generation)
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if superseded() {
            // A notification meant for the newer poll is passed on to it.
            notify.notify_one();
            return Ok(PollResponse::default());
        }
        let id = agent_id.clone();
        let mut work = state.write(move |txn| take_work(txn, &id)).await?;
        work.credentials.append(&mut credentials);
        if !work.is_empty() {
            return Ok(work);
        }
        // Work queued from now on wakes `notify` (or leaves it a permit, if it is queued
        // before the wait below starts).
        tokio::select! {
            () = notify.notified() => {}
            () = tokio::time::sleep_until(deadline) => return Ok(work),
            () = state.inner.shutdown.cancelled() => return Ok(work),
        }
    }
}

/// Hands out the agent's work that was never delivered, or delivered long enough ago to have
/// been lost.
fn take_work(txn: &mut Txn<'_>, agent_id: &str) -> Result<PollResponse, ApiError> {
    let mut response = PollResponse::default();
    let resend_before = Timestamp::from_millis(
        txn.now
            .as_millis()
            .saturating_sub(i64::try_from(redelivery(txn).as_millis()).unwrap_or(i64::MAX)),
    );
    for item in txn.db.work(agent_id)? {
        if item.delivered_at.is_some_and(|at| at > resend_before) {
            continue;
        }
        let parsed = match item.kind {
            WorkKind::Start => {
                serde_json::from_str::<TaskAssignment>(&item.body).map(|mut start| {
                    attach_credentials(txn.inner, &mut start);
                    response.start.push(start);
                })
            }
            WorkKind::Stop => serde_json::from_str::<StopInstruction>(&item.body)
                .map(|stop| response.stop.push(stop)),
        };
        if let Err(e) = parsed {
            return Err(ApiError::internal(format!(
                "work for task {} does not parse: {e}",
                item.task_arn
            )));
        }
        txn.db
            .mark_delivered(agent_id, &item.task_arn, item.kind, txn.now)?;
    }
    Ok(response)
}

/// Adds credentials for the task's roles to an assignment on its way to the agent.
fn attach_credentials(inner: &super::Inner, assignment: &mut TaskAssignment) {
    let Some(roles) = &inner.roles else {
        return;
    };
    let definition = &assignment.task_definition;
    let wanted = [
        (RoleType::TaskApplication, definition.task_role_arn.clone()),
        (
            RoleType::TaskExecution,
            definition.execution_role_arn.clone(),
        ),
    ];
    for (role_type, role) in wanted {
        if let Some(role) = role {
            let issued = roles.issue(&assignment.task_arn, role_type, &role);
            assignment.credentials.push(issued);
        }
    }
}

/// New task role credentials for the tasks an agent named, among those it runs.
fn refreshed_credentials(
    txn: &mut Txn<'_>,
    agent_id: &str,
    task_arns: &[String],
) -> Result<Vec<RoleCredentials>, ApiError> {
    let Some(roles) = &txn.inner.roles else {
        return Ok(Vec::new());
    };
    let mut issued = Vec::new();
    for arn in task_arns {
        let Some(record) = txn.db.task(arn)? else {
            tracing::debug!(task = %arn, "credentials asked for an unknown task");
            continue;
        };
        if record.meta.agent_id.as_deref() != Some(agent_id)
            || record.task.last_status == TaskStatus::Stopped
        {
            tracing::warn!(task = %arn, agent = agent_id,
                "credentials asked for a task this agent does not run");
            continue;
        }
        let definition = txn
            .db
            .task_definition_by_arn(&record.task.task_definition_arn)?;
        if let Some(role) = definition.and_then(|d| d.task_role_arn) {
            issued.push(roles.issue(arn, RoleType::TaskApplication, &role));
        }
    }
    Ok(issued)
}

/// Merges an agent's reports into its tasks (see the module documentation).
fn merge_reports(
    txn: &mut Txn<'_>,
    agent_id: &str,
    reports: &[TaskReport],
) -> Result<(), ApiError> {
    let mut agent = txn.db.agent(agent_id)?.ok_or_else(|| {
        ApiError::new(
            ErrorKind::NotFound,
            format!("Agent {agent_id} is not registered: register again."),
        )
    })?;
    if !agent.connected {
        reconnect(txn, &mut agent)?;
    }
    let reported: HashSet<&str> = reports.iter().map(|r| r.task_arn.as_str()).collect();
    for report in reports {
        merge_report(txn, agent_id, report)?;
    }
    // Tasks this agent had and no longer reports.
    let mine = txn.db.tasks(&TaskFilter {
        agent_id: Some(agent_id),
        active: true,
        ..TaskFilter::default()
    })?;
    for mut record in mine {
        if reported.contains(record.task.task_arn.as_str()) {
            continue;
        }
        let arn = record.task.task_arn.clone();
        let stop_delivered = txn
            .db
            .work_for_task(&arn, WorkKind::Stop)?
            .is_some_and(|w| w.delivered_at.is_some());
        if record.meta.acknowledged || stop_delivered {
            if record.task.desired_status == DesiredStatus::Stopped {
                // Stopped and cleaned up between two polls.
                advance(&mut record.task, TaskStatus::Stopped, txn.now);
                txn.db.drop_work(&arn, None)?;
                txn.db.put_task(&record)?;
                txn.effects.wake = true;
            } else {
                let reason = format!("Task is no longer reported by its agent {agent_id}.");
                scheduler::mark_lost(txn, &mut record, StopCode::TerminationNotice, &reason)?;
            }
        }
    }
    // Stops of tasks the agent no longer has (or never had).
    for item in txn.db.work(agent_id)? {
        if item.kind == WorkKind::Stop
            && item.delivered_at.is_some()
            && !reported.contains(item.task_arn.as_str())
        {
            let active = txn
                .db
                .task(&item.task_arn)?
                .is_some_and(|r| r.task.last_status != TaskStatus::Stopped);
            if !active {
                txn.db.drop_work(&item.task_arn, Some(WorkKind::Stop))?;
            }
        }
    }
    Ok(())
}

fn reconnect(txn: &mut Txn<'_>, agent: &mut AgentRecord) -> Result<(), ApiError> {
    agent.connected = true;
    agent.disconnected_at = None;
    txn.db.put_agent(agent)?;
    if let Some(arn) = &agent.container_instance_arn {
        if let Some(mut record) = txn.db.instance(arn)? {
            record.instance.agent_connected = true;
            txn.db.put_instance(&record)?;
        }
    }
    txn.effects.wake = true;
    tracing::info!(agent = %agent.agent_id, "agent reconnected");
    Ok(())
}

/// Asks `agent_id` to stop a task it reports but should not run.
fn refuse(
    txn: &mut Txn<'_>,
    agent_id: &str,
    report: &TaskReport,
    reason: &str,
) -> Result<(), ApiError> {
    if report.last_status == TaskStatus::Stopped || report.desired_status == DesiredStatus::Stopped
    {
        return Ok(());
    }
    if txn
        .db
        .work_for_task(&report.task_arn, WorkKind::Stop)?
        .is_some()
    {
        return Ok(());
    }
    tracing::warn!(task = %report.task_arn, agent = agent_id, reason, "stopping reported task");
    let instruction = StopInstruction {
        task_arn: report.task_arn.clone(),
        reason: Some(reason.to_owned()),
        stop_code: Some(StopCode::TerminationNotice),
    };
    txn.db.queue_work(
        agent_id,
        &report.task_arn,
        WorkKind::Stop,
        &instruction,
        txn.now,
    )?;
    txn.notify(agent_id);
    Ok(())
}

fn merge_report(txn: &mut Txn<'_>, agent_id: &str, report: &TaskReport) -> Result<(), ApiError> {
    let arn = report.task_arn.as_str();
    let Some(mut record) = txn.db.task(arn)? else {
        return refuse(
            txn,
            agent_id,
            report,
            "Task is not known to the control plane.",
        );
    };
    if record.meta.agent_id.as_deref() != Some(agent_id) {
        return refuse(txn, agent_id, report, "Task belongs to another agent.");
    }
    if record.task.last_status == TaskStatus::Stopped {
        // Lost while its agent was away (and replaced), or stopped here first.
        if report.desired_status == DesiredStatus::Stopped {
            txn.db.drop_work(arn, Some(WorkKind::Stop))?;
            return Ok(());
        }
        let reason = record
            .task
            .stopped_reason
            .clone()
            .unwrap_or_else(|| "Task was stopped while its agent was away.".to_owned());
        return refuse(txn, agent_id, report, &reason);
    }
    let before = record.clone();
    merge_into(&mut record, report, txn.now);
    record.meta.acknowledged = true;
    txn.db.drop_work(arn, Some(WorkKind::Start))?;
    if report.desired_status == DesiredStatus::Stopped || report.last_status == TaskStatus::Stopped
    {
        txn.db.drop_work(arn, Some(WorkKind::Stop))?;
    } else if record.task.desired_status == DesiredStatus::Stopped
        && !txn.inner.is_draining(arn)
        && txn.db.work_for_task(arn, WorkKind::Stop)?.is_none()
    {
        // Asked to stop (before a restart, say) and never told: tell it.
        scheduler::queue_stop(txn, &record, agent_id)?;
    }
    if record != before {
        if record.task == before.task {
            txn.db.put_task(&record)?;
        } else {
            if record.task.version == before.task.version {
                record.task.version += 1;
            }
            txn.db.put_task(&record)?;
            txn.effects.wake = true;
        }
    }
    Ok(())
}

/// Merges one report into its task.
pub(crate) fn merge_into(record: &mut TaskRecord, report: &TaskReport, now: Timestamp) {
    let task = &mut record.task;
    if report.desired_status == DesiredStatus::Stopped
        && task.desired_status == DesiredStatus::Running
    {
        // The agent stopped it: an essential container exited, or it could not start.
        let code = report
            .stop_code
            .unwrap_or(StopCode::EssentialContainerExited);
        let reason = report
            .stopped_reason
            .clone()
            .unwrap_or_else(|| "Essential container in task exited".to_owned());
        task.request_stop(code, reason);
    }
    if task.stop_code.is_none() {
        task.stop_code = report.stop_code;
    }
    if task.stopped_reason.is_none() {
        task.stopped_reason.clone_from(&report.stopped_reason);
    }
    if report.last_status > task.last_status {
        advance(task, report.last_status, now);
    }
    // The agent's times are the true ones.
    let times = [
        (&mut task.pull_started_at, report.pull_started_at),
        (&mut task.pull_stopped_at, report.pull_stopped_at),
        (&mut task.started_at, report.started_at),
        (&mut task.stopping_at, report.stopping_at),
        (&mut task.execution_stopped_at, report.execution_stopped_at),
        (&mut task.stopped_at, report.stopped_at),
    ];
    for (field, reported) in times {
        if reported.is_some() {
            *field = reported;
        }
    }
    task.health_status = report.health_status;
    for container in &report.containers {
        let Some(mine) = task.container_mut(&container.name) else {
            continue;
        };
        if container.last_status > mine.last_status {
            mine.last_status = container.last_status;
        }
        if container.exit_code.is_some() {
            mine.exit_code = container.exit_code;
        }
        if container.reason.is_some() {
            mine.reason.clone_from(&container.reason);
        }
        mine.health_status = container.health_status;
        if !container.network_bindings.is_empty() {
            mine.network_bindings
                .clone_from(&container.network_bindings);
        }
        if !container.network_interfaces.is_empty() {
            mine.network_interfaces
                .clone_from(&container.network_interfaces);
        }
        if container.runtime_id.is_some() {
            mine.runtime_id.clone_from(&container.runtime_id);
        }
        if container.image_digest.is_some() {
            mine.image_digest.clone_from(&container.image_digest);
        }
    }
    for attachment in &report.attachments {
        if task.attachments.iter().all(|a| a != attachment) {
            if attachment.kind == crate::ecs::task::Attachment::ELASTIC_NETWORK_INTERFACE {
                task.attach_eni(attachment.clone());
            } else {
                task.attachments.retain(|a| a.id != attachment.id);
                task.attachments.push(attachment.clone());
            }
        }
    }
    if task.connectivity != Some(Connectivity::Connected) {
        task.connectivity = Some(Connectivity::Connected);
        task.connectivity_at = Some(now);
    }
}

/// Disconnects the agents that missed their heartbeats and marks their tasks lost.
pub(crate) async fn check(state: &ControlState) {
    let now = state.now();
    let timeout = state.inner.config.disconnect_timeout();
    let silent: Vec<String> = lock(&state.inner.agents)
        .iter()
        .filter(|(_, live)| {
            live.polling == 0 && now.saturating_duration_since(live.last_seen) > timeout
        })
        .map(|(id, _)| id.clone())
        .collect();
    if silent.is_empty() {
        return;
    }
    let result = state
        .write(move |txn| {
            let mut gone = Vec::new();
            for id in silent {
                if disconnect(txn, &id, timeout)? {
                    gone.push(id);
                }
            }
            Ok(gone)
        })
        .await;
    match result {
        Ok(gone) => {
            // They are only watched again when they poll.
            let mut agents = lock(&state.inner.agents);
            for id in gone {
                if agents.get(&id).is_some_and(|live| {
                    live.polling == 0 && now.saturating_duration_since(live.last_seen) > timeout
                }) {
                    agents.remove(&id);
                }
            }
        }
        Err(error) => tracing::error!(%error, "cannot disconnect silent agents"),
    }
}

/// Disconnects one agent, if it is still connected. Whether it was.
fn disconnect(txn: &mut Txn<'_>, agent_id: &str, timeout: Duration) -> Result<bool, ApiError> {
    if let Some(live) = lock(&txn.inner.agents).get(agent_id) {
        // It may have polled since the check began.
        if live.polling > 0 || txn.now.saturating_duration_since(live.last_seen) <= timeout {
            return Ok(false);
        }
    }
    let Some(mut agent) = txn.db.agent(agent_id)? else {
        return Ok(true);
    };
    if !agent.connected {
        return Ok(true);
    }
    agent.connected = false;
    agent.disconnected_at = Some(txn.now);
    txn.db.put_agent(&agent)?;
    let mut what = format!("agent {agent_id}");
    if let Some(arn) = &agent.container_instance_arn {
        if let Some(mut record) = txn.db.instance(arn)? {
            record.instance.agent_connected = false;
            txn.db.put_instance(&record)?;
            what = format!(
                "container instance {}",
                arn.rsplit('/').next().unwrap_or(arn)
            );
        }
    }
    tracing::warn!(
        agent = agent_id,
        ?timeout,
        "agent missed its heartbeats: disconnected"
    );
    let reason = format!(
        "Agent disconnected: {what} sent no heartbeat for {} s.",
        timeout.as_secs()
    );
    let tasks = txn.db.tasks(&TaskFilter {
        agent_id: Some(agent_id),
        active: true,
        ..TaskFilter::default()
    })?;
    for mut record in tasks {
        scheduler::mark_lost(txn, &mut record, StopCode::TerminationNotice, &reason)?;
    }
    txn.effects.wake = true;
    Ok(true)
}
