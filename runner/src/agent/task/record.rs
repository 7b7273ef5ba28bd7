//! A task's record on disk, so that an agent that restarts knows the tasks it had.
//!
//! ```text
//! <root>/tasks/<id>/assignment.json   the TaskAssignment, written once
//! <root>/tasks/<id>/task.json         {"task": <the DescribeTasks view>, "cleanAfter": ...},
//!                                     rewritten (temporary file, then rename) at every move
//!                                     of `lastStatus`
//! ```
//!
//! Container names cannot contain `.`, so neither file can be a container's log or directory.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};

use super::{
    ContainerRuntime, Engine, Health, Phase, TASKS_DIR, TaskShared, TaskState, Transition,
};
use crate::agent::credentials::random_hex;
use crate::agent::error::Error;
use crate::agent::logs::LogHandle;
use crate::agent::protocol::TaskAssignment;
use crate::ecs::Timestamp;
use crate::ecs::status::{ContainerStatus, StopCode, TaskStatus};
use crate::ecs::task::Task;
use crate::files::{self, Durability};
use crate::sandbox::ContainerControl;

const ASSIGNMENT: &str = "assignment.json";
const STATE: &str = "task.json";

/// The container reason of a task found running when the agent restarted.
pub(crate) const AGENT_RESTARTED: &str =
    "The agent restarted, and its containers were stopped with it";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    task: Task,
    #[serde(default)]
    clean_after: Option<Timestamp>,
}

/// Writes `assignment.json`.
pub(crate) fn save_assignment(dir: &Path, assignment: &TaskAssignment) -> Result<(), Error> {
    write_json(&dir.join(ASSIGNMENT), assignment)
}

/// Writes `task.json`.
pub(crate) fn save_state(dir: &Path, state: &TaskState) -> Result<(), Error> {
    write_json(
        &dir.join(STATE),
        &Record {
            task: state.task.clone(),
            clean_after: state.clean_after,
        },
    )
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::State {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    // Not synced: the record serves an agent that restarts, and a machine that crashes loses
    // its tasks anyway; the rename keeps a reader from seeing half a record.
    files::replace(path, &bytes, Durability::Atomic).map_err(|e| Error::io("write", path, e))
}

/// Loads every task record under the engine's root. Tasks that were not STOPPED are stopped
/// (see the module docs of [`super`]); records that cannot be read are logged and their
/// directories left for the operator.
pub(crate) fn restore(engine: &Arc<Engine>) -> Result<Vec<Arc<TaskShared>>, Error> {
    let dir = engine.config.root.join(TASKS_DIR);
    let entries = fs::read_dir(&dir).map_err(|e| Error::io("read", &dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
        let task_dir = entry.path();
        if !task_dir.is_dir() {
            continue;
        }
        match restore_one(engine, &task_dir) {
            Ok(task) => out.push(Arc::new(task)),
            Err(err) => {
                tracing::warn!(dir = %task_dir.display(), %err, "cannot restore a task record")
            }
        }
    }
    Ok(out)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, Error> {
    let bytes = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::State {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn restore_one(engine: &Arc<Engine>, dir: &Path) -> Result<TaskShared, Error> {
    let assignment: TaskAssignment = read_json(&dir.join(ASSIGNMENT))?;
    let Record {
        mut task,
        clean_after,
    } = read_json(&dir.join(STATE))?;
    let definitions = &assignment.task_definition.container_definitions;
    if task.containers.len() != definitions.len() {
        return Err(Error::State {
            path: dir.join(STATE),
            reason: "the record's containers do not match its task definition".to_owned(),
        });
    }
    let mut transitions = Vec::new();
    let mut clean_after = clean_after;
    if !task.last_status.is_stopped() {
        let now = Timestamp::now();
        let id = assignment.task_id().to_owned();
        tracing::info!(task = %task.task_arn, status = %task.last_status,
            "stopping a task of the previous agent");
        if let Some(network) = &engine.network {
            if let Err(err) = network.release(&id) {
                tracing::warn!(task = %task.task_arn, %err, "cannot release the task's network");
            }
        }
        if let Err(err) = engine.sandbox.remove_cgroup(&engine.cgroup_of(&id)) {
            tracing::warn!(task = %task.task_arn, %err, "cannot remove the task's cgroup");
        }
        for container in &mut task.containers {
            if container.last_status != ContainerStatus::Stopped {
                if container.last_status == ContainerStatus::Running {
                    container.reason = Some(AGENT_RESTARTED.to_owned());
                }
                container.last_status = ContainerStatus::Stopped;
            }
        }
        task.request_stop(
            StopCode::EssentialContainerExited,
            super::supervisor::ESSENTIAL_EXITED,
        );
        for status in [
            TaskStatus::Stopping,
            TaskStatus::Deprovisioning,
            TaskStatus::Stopped,
        ] {
            if task.last_status.can_move_to(status) && task.move_to(status, now).is_ok() {
                transitions.push(Transition { status, at: now });
            }
        }
        clean_after = Some(now.saturating_add(engine.config.cleanup_wait));
    }
    let clean_after =
        clean_after.or_else(|| Some(Timestamp::now().saturating_add(engine.config.cleanup_wait)));
    let logs = definitions
        .iter()
        .map(|c| LogHandle::existing(dir.join(format!("{}.log", c.name))))
        .collect();
    let containers = task
        .containers
        .iter()
        .map(|c| ContainerRuntime {
            phase: c.exit_code.map_or(Phase::NotStarted, Phase::Exited),
            control: ContainerControl::new(),
            health: Health {
                status: c.health_status,
                ..Health::default()
            },
            created_at: None,
            started_at: None,
            finished_at: None,
            image_id: None,
            waiting_since: None,
            signalled_at: None,
            killed: false,
        })
        .collect();
    let state = TaskState {
        task,
        containers,
        transitions,
        network: None,
        credentials: None,
        execution_credentials: None,
        clean_after,
    };
    if let Err(err) = save_state(dir, &state) {
        tracing::warn!(dir = %dir.display(), %err, "cannot save a restored task's record");
    }
    Ok(TaskShared {
        arn: assignment.task_arn.clone(),
        id: assignment.task_id().to_owned(),
        dir: dir.to_owned(),
        tokens: definitions.iter().map(|_| random_hex(32)).collect(),
        logs,
        state: Mutex::new(state),
        changed: Condvar::new(),
        changes: engine.changes.clone(),
        assignment,
    })
}
