//! Placing tasks and telling agents about them: the path `RunTask` and the service scheduler
//! share, and the one way a task is stopped.
//!
//! - [`launch`] creates tasks of a definition and places them: on EC2 with
//!   [`crate::ecs::placement`] over the cluster's instances (what each has left derived from the
//!   tasks on it, [`instance_view`]), on FARGATE with a valid size on a FARGATE agent. A placed
//!   task is PENDING with a start queued for its agent.
//! - [`stop_task`] asks for a task to stop: at once when its agent never heard of it, after
//!   its load balancer targets have drained when it is in a service's rotation, else by a stop
//!   queued for its agent.
//! - [`advance`] moves a task forward to a reported status through the states in between.

use std::collections::BTreeMap;

use rand::Rng;

use crate::agent::protocol::{StopInstruction, TaskAssignment};
use crate::ecs::Timestamp;
use crate::ecs::arn;
use crate::ecs::fargate::{self, FargateSize};
use crate::ecs::placement::{
    ContainerInstance, ContainerInstanceStatus, PlacedTask, PlacementConstraint, PlacementFailure,
    PlacementPolicy, PlacementStrategy, TaskRequest,
};
use crate::ecs::status::{Connectivity, DesiredStatus, LaunchType, StopCode, TaskStatus};
use crate::ecs::task::Task;
use crate::ecs::taskdef::TaskDefinition;

use super::store::{InstanceRecord, TaskFilter, TaskMeta, TaskRecord, Tx, WorkKind};
use super::{ApiError, DrainRequest, Txn};

/// ECS's reason when Fargate has no capacity for a task.
pub(crate) const NO_FARGATE_CAPACITY: &str = "Capacity is unavailable at this time. Please try again later or in a different availability zone";

/// What to launch.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub cluster: &'a str,
    pub definition: &'a TaskDefinition,
    pub launch_type: LaunchType,
    pub count: usize,
    pub group: String,
    pub started_by: Option<String>,
    /// The caller's constraints; the definition's `memberOf` ones are added.
    pub constraints: &'a [PlacementConstraint],
    pub strategies: &'a [PlacementStrategy],
    /// The service and deployment, for a service's tasks.
    pub service: Option<(String, String)>,
}

/// Why tasks were left unplaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unplaced {
    /// No container instance could take them.
    Placement(PlacementFailure),
    /// No FARGATE agent is connected.
    NoFargateCapacity,
}

/// What [`launch`] did.
#[derive(Debug)]
pub(crate) struct Launched {
    /// The tasks placed, PENDING.
    pub tasks: Vec<Task>,
    /// Why some could not be placed, if any.
    pub why: Option<Unplaced>,
}

/// Creates and places `launch.count` tasks.
pub(crate) fn launch(txn: &mut Txn<'_>, launch: Launch<'_>) -> Result<Launched, ApiError> {
    match launch.launch_type {
        LaunchType::Ec2 => launch_ec2(txn, launch),
        LaunchType::Fargate => launch_fargate(txn, launch),
    }
}

/// The definition's `memberOf` constraints followed by `extra`.
pub(crate) fn constraints_for(
    definition: &TaskDefinition,
    extra: &[PlacementConstraint],
) -> Vec<PlacementConstraint> {
    definition
        .placement_constraints
        .iter()
        .filter_map(|c| c.expression.clone())
        .map(PlacementConstraint::member_of)
        .chain(extra.iter().cloned())
        .collect()
}

fn launch_ec2(txn: &mut Txn<'_>, launch: Launch<'_>) -> Result<Launched, ApiError> {
    let constraints = constraints_for(launch.definition, launch.constraints);
    let policy = PlacementPolicy::new(&constraints, launch.strategies)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let view = PlacementView::load(txn.db, launch.cluster)?;
    let mut instances = view.instances;
    let request = TaskRequest::for_task_definition(launch.definition, launch.group.clone());
    let outcome = {
        let mut rng = txn.inner.rng();
        policy.place_tasks(
            &request,
            launch.count,
            &mut instances,
            &view.placed,
            &mut *rng,
        )
    };
    let mut tasks = Vec::new();
    for placement in &outcome.placements {
        let instance = &instances[placement.index];
        let agent_id = view.agents[placement.index].clone();
        let mut task = new_task(txn, &launch, LaunchType::Ec2);
        task.container_instance_arn = Some(instance.container_instance_arn.clone());
        task.availability_zone = instance
            .attribute_value("ecs.availability-zone")
            .map(str::to_owned);
        let mut record = TaskRecord {
            task,
            meta: new_meta(&launch, agent_id, Some(request.clone())),
        };
        assign(txn, &mut record, launch.definition)?;
        tasks.push(record.task);
    }
    Ok(Launched {
        tasks,
        why: outcome.failure.map(Unplaced::Placement),
    })
}

fn launch_fargate(txn: &mut Txn<'_>, launch: Launch<'_>) -> Result<Launched, ApiError> {
    let definition = launch.definition;
    let cpu = definition.cpu_units().unwrap_or(0);
    let memory = definition.memory_mib().unwrap_or(0);
    let size = fargate::nearest(cpu, memory, &txn.inner.rates).ok_or_else(|| {
        ApiError::invalid(format!(
            "No Fargate configuration exists for given values: {cpu} CPU, {memory} memory."
        ))
    })?;
    // FARGATE agents of the task's cluster first, then those of other clusters (Fargate has
    // no instances: its capacity is not the cluster's own); fewest FARGATE tasks first.
    let mut candidates: Vec<(bool, usize, String, Option<String>)> = Vec::new();
    for agent in txn.db.agents()? {
        if !agent.connected || !agent.fargate {
            continue;
        }
        let load = txn
            .db
            .tasks(&TaskFilter {
                agent_id: Some(&agent.agent_id),
                launch_type: Some(LaunchType::Fargate),
                active: true,
                ..TaskFilter::default()
            })?
            .len();
        let zone = agent.attributes.get("ecs.availability-zone").cloned();
        candidates.push((agent.cluster != launch.cluster, load, agent.agent_id, zone));
    }
    let mut tasks = Vec::new();
    for _ in 0..launch.count {
        let Some(best) = candidates
            .iter_mut()
            .min_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)))
        else {
            break;
        };
        best.1 += 1;
        let (agent_id, zone) = (best.2.clone(), best.3.clone());
        let mut task = new_task(txn, &launch, LaunchType::Fargate);
        task.cpu = Some(size.cpu.to_string());
        task.memory = Some(size.memory.to_string());
        task.availability_zone = zone;
        let mut record = TaskRecord {
            task,
            meta: new_meta(&launch, agent_id, None),
        };
        assign(txn, &mut record, definition)?;
        tasks.push(record.task);
    }
    let unplaced = tasks.len() < launch.count;
    Ok(Launched {
        tasks,
        why: unplaced.then_some(Unplaced::NoFargateCapacity),
    })
}

/// The size a FARGATE task of `definition` gets.
pub(crate) fn fargate_size(task: &Task) -> Option<FargateSize> {
    let cpu = task.cpu.as_deref()?.parse().ok()?;
    let memory = task.memory.as_deref()?.parse().ok()?;
    Some(FargateSize { cpu, memory })
}

fn new_task(txn: &Txn<'_>, launch: &Launch<'_>, launch_type: LaunchType) -> Task {
    let id = new_id();
    let mut task = Task::new(
        arn::task(launch.cluster, &id),
        arn::cluster(launch.cluster),
        launch.definition,
        launch_type,
        Some(launch.group.clone()),
        txn.now,
    );
    task.started_by = launch.started_by.clone();
    for (index, container) in task.containers.iter_mut().enumerate() {
        container.container_arn = Some(arn::container(
            launch.cluster,
            &id,
            &format!("{id}-{index}"),
        ));
    }
    task
}

fn new_meta(launch: &Launch<'_>, agent_id: String, reservation: Option<TaskRequest>) -> TaskMeta {
    TaskMeta {
        cluster: launch.cluster.to_owned(),
        agent_id: Some(agent_id),
        service: launch.service.as_ref().map(|(name, _)| name.clone()),
        deployment: launch.service.as_ref().map(|(_, id)| id.clone()),
        reservation,
        acknowledged: false,
        accounted: false,
    }
}

/// Queues the task's start for its agent and moves it to PENDING.
fn assign(
    txn: &mut Txn<'_>,
    record: &mut TaskRecord,
    definition: &TaskDefinition,
) -> Result<(), ApiError> {
    let task = &record.task;
    let agent_id = record
        .meta
        .agent_id
        .clone()
        .ok_or_else(|| ApiError::internal("assigning a task without an agent"))?;
    let assignment = TaskAssignment {
        task_arn: task.task_arn.clone(),
        cluster_arn: task.cluster_arn.clone(),
        task_definition: definition.clone(),
        launch_type: task.launch_type,
        group: task.group.clone(),
        started_by: task.started_by.clone(),
        cpu: task.cpu.clone(),
        memory: task.memory.clone(),
        desired_status: DesiredStatus::Running,
        credentials: Vec::new(),
    };
    txn.db.queue_work(
        &agent_id,
        &task.task_arn,
        WorkKind::Start,
        &assignment,
        txn.now,
    )?;
    record
        .task
        .move_to(TaskStatus::Pending, txn.now)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    txn.db.put_task(record)?;
    txn.notify(&agent_id);
    tracing::info!(
        task = %record.task.task_arn,
        agent = %agent_id,
        definition = %definition.family_revision(),
        "task placed"
    );
    Ok(())
}

/// Asks for a task to stop with `code` and `reason` (the first reason given is kept), and
/// writes it.
pub(crate) fn stop_task(
    txn: &mut Txn<'_>,
    record: &mut TaskRecord,
    code: StopCode,
    reason: &str,
) -> Result<(), ApiError> {
    if record.task.last_status == TaskStatus::Stopped {
        return Ok(());
    }
    record.task.request_stop(code, reason);
    let arn = record.task.task_arn.clone();
    let Some(agent_id) = record.meta.agent_id.clone() else {
        advance(&mut record.task, TaskStatus::Stopped, txn.now);
        txn.db.put_task(record)?;
        return Ok(());
    };
    // A start the agent never received: the task ends here.
    let start = txn.db.work_for_task(&arn, WorkKind::Start)?;
    if !record.meta.acknowledged && start.is_some_and(|w| w.delivered_at.is_none()) {
        txn.db.drop_work(&arn, None)?;
        advance(&mut record.task, TaskStatus::Stopped, txn.now);
        txn.db.put_task(record)?;
        txn.effects.wake = true;
        return Ok(());
    }
    if let Some(service) = record.meta.service.clone() {
        let key = (record.meta.cluster.clone(), service);
        let task_id = record.task.id().to_owned();
        let running = matches!(
            record.task.last_status,
            TaskStatus::Activating | TaskStatus::Running
        );
        if running && txn.inner.balancers.in_rotation(&key, &task_id) {
            advance(&mut record.task, TaskStatus::Deactivating, txn.now);
            txn.db.put_task(record)?;
            txn.effects.drains.push(DrainRequest {
                key,
                task_arn: arn,
                task_id,
            });
            return Ok(());
        }
    }
    queue_stop(txn, record, &agent_id)?;
    txn.db.put_task(record).map_err(ApiError::from)
}

/// Queues the stop of a task for its agent.
pub(crate) fn queue_stop(
    txn: &mut Txn<'_>,
    record: &TaskRecord,
    agent_id: &str,
) -> Result<(), ApiError> {
    let instruction = StopInstruction {
        task_arn: record.task.task_arn.clone(),
        reason: record.task.stopped_reason.clone(),
        stop_code: record.task.stop_code,
    };
    txn.db.queue_work(
        agent_id,
        &record.task.task_arn,
        WorkKind::Stop,
        &instruction,
        txn.now,
    )?;
    txn.notify(agent_id);
    Ok(())
}

/// A drained task: its stop goes to its agent now.
pub(crate) fn finish_drain(txn: &mut Txn<'_>, task_arn: &str) -> Result<(), ApiError> {
    let Some(record) = txn.db.task(task_arn)? else {
        return Ok(());
    };
    if record.task.last_status == TaskStatus::Stopped
        || record.task.desired_status != DesiredStatus::Stopped
    {
        return Ok(());
    }
    if let Some(agent_id) = record.meta.agent_id.clone() {
        queue_stop(txn, &record, &agent_id)?;
    }
    Ok(())
}

/// Marks a task whose agent is gone as STOPPED: it will never report again.
pub(crate) fn mark_lost(
    txn: &mut Txn<'_>,
    record: &mut TaskRecord,
    code: StopCode,
    reason: &str,
) -> Result<(), ApiError> {
    record.task.request_stop(code, reason);
    record.task.connectivity = Some(Connectivity::Disconnected);
    record.task.connectivity_at = Some(txn.now);
    advance(&mut record.task, TaskStatus::Stopped, txn.now);
    txn.db.drop_work(&record.task.task_arn, None)?;
    txn.db.put_task(record)?;
    txn.effects.wake = true;
    tracing::warn!(task = %record.task.task_arn, reason, "task lost");
    Ok(())
}

/// Moves `task` forward to `target` through the states the lifecycle requires on the way
/// (a report may skip some: RUNNING then STOPPED goes through STOPPING). Moves backwards are
/// ignored. Whether the task is at `target` afterwards.
pub(crate) fn advance(task: &mut Task, target: TaskStatus, at: Timestamp) -> bool {
    while task.last_status != target {
        let current = task.last_status;
        let next = if current.can_move_to(target) {
            target
        } else {
            match TaskStatus::ALL
                .into_iter()
                .filter(|&s| s < target && current.can_move_to(s))
                .max()
            {
                Some(step) => step,
                None => return false,
            }
        };
        if task.move_to(next, at).is_err() {
            return false;
        }
    }
    true
}

/// A cluster as placement sees it.
pub(crate) struct PlacementView {
    /// The instances that are not INACTIVE, with what they have left.
    pub instances: Vec<ContainerInstance>,
    /// The agent of each instance.
    pub agents: Vec<String>,
    /// The tasks placed on them, with their groups.
    pub placed: Vec<PlacedTask>,
}

impl PlacementView {
    pub(crate) fn load(db: &Tx<'_>, cluster: &str) -> Result<PlacementView, ApiError> {
        let active = db.tasks(&TaskFilter {
            cluster: Some(cluster),
            active: true,
            ..TaskFilter::default()
        })?;
        let mut by_instance: BTreeMap<&str, Vec<&TaskRecord>> = BTreeMap::new();
        for record in &active {
            if let Some(arn) = record.task.container_instance_arn.as_deref() {
                by_instance.entry(arn).or_default().push(record);
            }
        }
        let mut instances = Vec::new();
        let mut agents = Vec::new();
        for record in db.instances(cluster)? {
            if record.instance.status == ContainerInstanceStatus::Inactive {
                continue;
            }
            let tasks = by_instance
                .get(record.instance.container_instance_arn.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            agents.push(record.agent_id.clone());
            instances.push(instance_view(&record, tasks));
        }
        let placed = active
            .iter()
            .filter_map(|record| {
                Some(PlacedTask {
                    container_instance_arn: record.task.container_instance_arn.clone()?,
                    group: record.task.group.clone().unwrap_or_default(),
                })
            })
            .collect();
        Ok(PlacementView {
            instances,
            agents,
            placed,
        })
    }
}

/// An instance as `DescribeContainerInstances` gives it: what it has left and its task counts,
/// from the tasks placed on it that are not STOPPED.
pub(crate) fn instance_view(record: &InstanceRecord, tasks: &[&TaskRecord]) -> ContainerInstance {
    let mut instance = record.instance.clone();
    instance.remaining_resources = instance.registered_resources.clone();
    instance.running_tasks_count = 0;
    instance.pending_tasks_count = 0;
    for task in tasks {
        if task.task.last_status == TaskStatus::Stopped {
            continue;
        }
        match &task.meta.reservation {
            Some(reservation) => instance.reserve(reservation),
            None => instance.pending_tasks_count += 1,
        }
        if task.task.last_status >= TaskStatus::Running {
            instance.task_started();
        }
    }
    instance
}

/// A new id for a task, agent or container instance: 32 hex digits, as ECS's task ids.
pub(crate) fn new_id() -> String {
    let bytes: [u8; 16] = rand::thread_rng().r#gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new deployment id: `ecs-svc/` and 19 digits, as ECS's.
pub(crate) fn new_deployment_id() -> String {
    let n: u64 =
        rand::thread_rng().gen_range(1_000_000_000_000_000_000..=9_999_999_999_999_999_999);
    format!("ecs-svc/{n}")
}

/// A new event id: a UUID, as ECS's.
pub(crate) fn new_event_id() -> String {
    let bytes: [u8; 16] = rand::thread_rng().r#gen();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-4{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::taskdef::RegisterTaskDefinition;

    fn task() -> Task {
        let request = RegisterTaskDefinition::from_json(
            r#"{"family": "web", "containerDefinitions": [
                {"name": "app", "image": "busybox", "memory": 128}]}"#,
        )
        .unwrap();
        let definition = TaskDefinition::register(request, 1, Timestamp::EPOCH).unwrap();
        Task::new(
            arn::task("default", "t"),
            arn::cluster("default"),
            &definition,
            LaunchType::Ec2,
            None,
            Timestamp::EPOCH,
        )
    }

    #[test]
    fn advance_walks_through_the_states_a_report_skipped() {
        let mut task = task();
        assert!(advance(
            &mut task,
            TaskStatus::Running,
            Timestamp::from_secs(3)
        ));
        assert_eq!(task.started_at, Some(Timestamp::from_secs(3)));
        assert!(advance(
            &mut task,
            TaskStatus::Stopped,
            Timestamp::from_secs(9)
        ));
        assert_eq!(task.stopping_at, Some(Timestamp::from_secs(9)));
        assert_eq!(task.stopped_at, Some(Timestamp::from_secs(9)));
        assert!(!advance(
            &mut task,
            TaskStatus::Running,
            Timestamp::from_secs(10)
        ));
        assert_eq!(task.last_status, TaskStatus::Stopped);
    }

    #[test]
    fn ids_look_like_ecs_ids() {
        let id = new_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        let deployment = new_deployment_id();
        assert_eq!(deployment.len(), "ecs-svc/".len() + 19);
        let event = new_event_id();
        assert_eq!(event.len(), 36);
        assert_eq!(&event[14..15], "4");
    }
}
