//! The control plane's state in SQLite: `<root>/control.db`.
//!
//! The database is the source of truth: every API call, poll and reconciliation step is one
//! transaction that reads what it needs and writes what it changed, so a crash (or a restart)
//! leaves either all of an operation or none of it, and a restarted control plane carries on
//! from the last committed step. It runs in WAL mode with `synchronous=FULL`, as the registry's
//! metadata does: a call that answered is on disk. One connection behind a mutex serves every
//! caller; callers run on tokio's blocking pool.
//!
//! Rows hold ECS's own JSON (the `DescribeTasks`, `DescribeServices`, ... shapes of
//! [`crate::ecs`]) in a `body` column, with the fields that queries filter on copied into
//! indexed columns beside it.
//!
//! ## Schema (version 1)
//! - `clusters(name, status, body)`;
//! - `task_definitions(family, revision, status, body)`;
//! - `agents(id, cluster, body)`: registered agents, their address and capacity;
//! - `container_instances(arn, cluster, agent_id, status, registered_at, deregistered_at,
//!   body)`: EC2 instances with their registered resources. What is left on an instance is not
//!   stored: it is derived from the tasks placed there whenever it is read, so it cannot drift;
//! - `tasks(arn, cluster, family, service, agent_id, container_instance_arn, launch_type,
//!   last_status, desired_status, started_by, accounted, created_at, body, meta)`: `body` is
//!   the task as `DescribeTasks` gives it, `meta` what the control plane keeps beside it (the
//!   agent, the service and deployment, the resources reserved);
//! - `services(cluster, name, status, body)`: the service with its deployments and events;
//! - `work(agent_id, task_arn, kind, body, queued_at, delivered_at)`: starts and stops queued
//!   for an agent, kept until the agent's reports show them done (redelivered if a poll's
//!   answer was lost).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ecs::Timestamp;
use crate::ecs::cluster::Cluster;
use crate::ecs::placement::{ContainerInstance, TaskRequest};
use crate::ecs::service::Service;
use crate::ecs::status::{DesiredStatus, LaunchType, TaskStatus};
use crate::ecs::task::Task;
use crate::ecs::taskdef::{TaskDefinition, TaskDefinitionStatus};

use super::balancers::ServiceLoadBalancer;

/// The schema version this code reads and writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS clusters (
    name TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS task_definitions (
    family TEXT NOT NULL,
    revision INTEGER NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (family, revision)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS container_instances (
    arn TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    status TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    deregistered_at INTEGER,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS container_instances_cluster ON container_instances(cluster);
CREATE INDEX IF NOT EXISTS container_instances_agent ON container_instances(agent_id);
CREATE TABLE IF NOT EXISTS tasks (
    arn TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    family TEXT NOT NULL,
    service TEXT,
    agent_id TEXT,
    container_instance_arn TEXT,
    launch_type TEXT NOT NULL,
    last_status TEXT NOT NULL,
    desired_status TEXT NOT NULL,
    started_by TEXT,
    accounted INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    body TEXT NOT NULL,
    meta TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_cluster ON tasks(cluster, desired_status);
CREATE INDEX IF NOT EXISTS tasks_service ON tasks(cluster, service);
CREATE INDEX IF NOT EXISTS tasks_agent ON tasks(agent_id, last_status);
CREATE INDEX IF NOT EXISTS tasks_instance ON tasks(container_instance_arn, last_status);
CREATE TABLE IF NOT EXISTS services (
    cluster TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (cluster, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS work (
    agent_id TEXT NOT NULL,
    task_arn TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    queued_at INTEGER NOT NULL,
    delivered_at INTEGER,
    PRIMARY KEY (agent_id, task_arn, kind)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS work_task ON work(task_arn);
";

/// What the store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row holds JSON this code cannot read (or a value it cannot write).
    #[error("{what}: {source}")]
    Json {
        /// Which row.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The database was written by a newer berth.
    #[error("schema version {0} is newer than this berth's ({SCHEMA_VERSION})")]
    NewerSchema(i64),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The database.
#[derive(Debug)]
pub(crate) struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating as needed) the database at `path` and brings its schema up to date.
    pub(crate) fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous=FULL;")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema(version));
        }
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}"))?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held cannot leave a transaction half-applied (rusqlite
        // rolls back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in a write transaction, committed when `f` returns `Ok` and rolled back
    /// otherwise (or if `f` panics).
    pub(crate) fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let tx = Tx { tx };
        let value = f(&tx)?;
        tx.tx.commit().map_err(StoreError::from)?;
        Ok(value)
    }

    /// Runs `f` in a read transaction: one consistent view, nothing written.
    pub(crate) fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.lock();
        let tx = Tx {
            tx: conn.transaction().map_err(StoreError::from)?,
        };
        f(&tx)
    }
}

/// A container instance as stored. Its `remainingResources` and task counts are derived from
/// the tasks placed on it when it is read ([`super::scheduler::instance_view`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceRecord {
    /// The cluster's name.
    pub cluster: String,
    /// The agent that is this instance.
    pub agent_id: String,
    /// The instance, with its registered resources.
    pub instance: ContainerInstance,
    /// When it was deregistered (it is INACTIVE then): where its bill stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregistered_at: Option<Timestamp>,
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AgentRecord {
    /// Its id.
    pub agent_id: String,
    /// The cluster it joined.
    pub cluster: String,
    /// Its container instance, when it is an EC2 instance.
    #[serde(default)]
    pub container_instance_arn: Option<String>,
    /// Its own HTTP server, `http://IP:PORT`.
    pub address: String,
    /// The attributes it registered with (`ecs.availability-zone`, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Whether it serves the FARGATE pool.
    pub fargate: bool,
    /// Whether it is an EC2 container instance.
    pub ec2: bool,
    /// Whether it is in touch.
    pub connected: bool,
    /// When it first registered.
    pub registered_at: Timestamp,
    /// When it was last found out of touch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_at: Option<Timestamp>,
}

/// What the control plane keeps beside a task's description.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TaskMeta {
    /// The cluster's name.
    pub cluster: String,
    /// The agent running it, once assigned.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Its service, for a service's task.
    #[serde(default)]
    pub service: Option<String>,
    /// Its deployment, for a service's task.
    #[serde(default)]
    pub deployment: Option<String>,
    /// What it holds on its container instance (EC2 tasks).
    #[serde(default)]
    pub reservation: Option<TaskRequest>,
    /// Whether its agent has reported it at least once.
    #[serde(default)]
    pub acknowledged: bool,
    /// Whether its service has counted its stop (circuit breaker, events).
    #[serde(default)]
    pub accounted: bool,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskRecord {
    /// The task, as `DescribeTasks` gives it.
    pub task: Task,
    /// The rest.
    pub meta: TaskMeta,
}

/// A service as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceRecord {
    /// The cluster's name.
    pub cluster: String,
    /// The service, as `DescribeServices` gives it (but for `loadBalancers`).
    pub service: Service,
    /// Its load balancers, with their listener ports.
    #[serde(default)]
    pub load_balancers: Vec<ServiceLoadBalancer>,
    /// The task definition of the last deployment that COMPLETED: where a circuit breaker
    /// rolls back to.
    #[serde(default)]
    pub last_completed: Option<String>,
    /// Whether the service was in a steady state at the last reconciliation.
    #[serde(default)]
    pub steady: bool,
}

/// Work queued for an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkKind {
    /// Start a task.
    Start,
    /// Stop a task.
    Stop,
}

impl WorkKind {
    fn as_str(self) -> &'static str {
        match self {
            WorkKind::Start => "start",
            WorkKind::Stop => "stop",
        }
    }
}

/// A queued start or stop.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WorkItem {
    /// The task.
    pub task_arn: String,
    /// Start or stop.
    pub kind: WorkKind,
    /// The assignment or the stop instruction, as JSON.
    pub body: String,
    /// When it was last handed to the agent.
    pub delivered_at: Option<Timestamp>,
}

/// Which tasks [`Tx::tasks`] lists. Unset fields do not filter.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskFilter<'a> {
    pub cluster: Option<&'a str>,
    pub service: Option<&'a str>,
    pub agent_id: Option<&'a str>,
    pub container_instance_arn: Option<&'a str>,
    pub family: Option<&'a str>,
    pub started_by: Option<&'a str>,
    pub desired_status: Option<DesiredStatus>,
    pub launch_type: Option<LaunchType>,
    /// Only tasks that are not STOPPED.
    pub active: bool,
    /// Only tasks that are not STOPPED, or STOPPED and not yet accounted by their service.
    pub active_or_unaccounted: bool,
}

/// One transaction.
pub(crate) struct Tx<'c> {
    tx: Transaction<'c>,
}

fn to_json<T: Serialize>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|source| StoreError::Json {
        what: what.to_owned(),
        source,
    })
}

fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| StoreError::Json {
        what: what.to_owned(),
        source,
    })
}

/// An enum's serde spelling (`"RUNNING"`), for the indexed columns.
pub(crate) fn spelling<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// The family of a task definition ARN (`.../task-definition/web:3` is `web`).
fn family_of(task_definition_arn: &str) -> &str {
    let tail = task_definition_arn
        .rsplit('/')
        .next()
        .unwrap_or(task_definition_arn);
    tail.rsplit_once(':').map_or(tail, |(family, _)| family)
}

impl Tx<'_> {
    fn bodies<T: DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<T>> {
        let mut statement = self.tx.prepare_cached(sql)?;
        let rows = statement.query_map(args, |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(from_json(what, &row?)?);
        }
        Ok(out)
    }

    fn body<T: DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Option<T>> {
        let text: Option<String> = self.tx.query_row(sql, args, |r| r.get(0)).optional()?;
        text.map(|text| from_json(what, &text)).transpose()
    }

    // ---- clusters ----

    pub(crate) fn cluster(&self, name: &str) -> Result<Option<Cluster>> {
        self.body(
            "cluster",
            "SELECT body FROM clusters WHERE name = ?1",
            [name],
        )
    }

    pub(crate) fn put_cluster(&self, cluster: &Cluster) -> Result<()> {
        self.tx.execute(
            "INSERT INTO clusters (name, status, body) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET status = excluded.status, body = excluded.body",
            params![
                cluster.cluster_name,
                spelling(&cluster.status),
                to_json("cluster", cluster)?
            ],
        )?;
        Ok(())
    }

    pub(crate) fn clusters(&self) -> Result<Vec<Cluster>> {
        self.bodies("cluster", "SELECT body FROM clusters ORDER BY name", [])
    }

    // ---- task definitions ----

    /// The revision the next registration in `family` gets.
    pub(crate) fn next_revision(&self, family: &str) -> Result<u32> {
        let last: Option<i64> = self.tx.query_row(
            "SELECT MAX(revision) FROM task_definitions WHERE family = ?1",
            [family],
            |r| r.get(0),
        )?;
        Ok(u32::try_from(last.unwrap_or(0)).unwrap_or(u32::MAX - 1) + 1)
    }

    pub(crate) fn put_task_definition(&self, definition: &TaskDefinition) -> Result<()> {
        self.tx.execute(
            "INSERT INTO task_definitions (family, revision, status, body) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(family, revision) DO UPDATE
             SET status = excluded.status, body = excluded.body",
            params![
                definition.family,
                definition.revision,
                spelling(&definition.status),
                to_json("task definition", definition)?
            ],
        )?;
        Ok(())
    }

    pub(crate) fn task_definition(
        &self,
        family: &str,
        revision: u32,
    ) -> Result<Option<TaskDefinition>> {
        self.body(
            "task definition",
            "SELECT body FROM task_definitions WHERE family = ?1 AND revision = ?2",
            params![family, revision],
        )
    }

    /// The definition a task definition ARN (`...:task-definition/FAMILY:REVISION`) names;
    /// `None` for an ARN that names none.
    pub(crate) fn task_definition_by_arn(&self, arn: &str) -> Result<Option<TaskDefinition>> {
        let Ok(parsed) = arn.parse::<crate::ecs::arn::Arn>() else {
            return Ok(None);
        };
        match parsed.resource.rsplit_once(':') {
            Some((family, revision)) => match revision.parse() {
                Ok(revision) => self.task_definition(family, revision),
                Err(_) => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// The latest ACTIVE revision of `family`.
    pub(crate) fn latest_task_definition(&self, family: &str) -> Result<Option<TaskDefinition>> {
        self.body(
            "task definition",
            "SELECT body FROM task_definitions WHERE family = ?1 AND status = ?2
             ORDER BY revision DESC LIMIT 1",
            params![family, spelling(&TaskDefinitionStatus::Active)],
        )
    }

    /// Task definitions whose family starts with `prefix`, with `status`, by family then
    /// revision.
    pub(crate) fn task_definitions(
        &self,
        prefix: &str,
        status: TaskDefinitionStatus,
    ) -> Result<Vec<TaskDefinition>> {
        let escaped = prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        self.bodies(
            "task definition",
            "SELECT body FROM task_definitions WHERE family LIKE ?1 ESCAPE '\\' AND status = ?2
             ORDER BY family, revision",
            params![format!("{escaped}%"), spelling(&status)],
        )
    }

    // ---- agents and instances ----

    pub(crate) fn agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        self.body("agent", "SELECT body FROM agents WHERE id = ?1", [id])
    }

    pub(crate) fn put_agent(&self, agent: &AgentRecord) -> Result<()> {
        self.tx.execute(
            "INSERT INTO agents (id, cluster, body) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET cluster = excluded.cluster, body = excluded.body",
            params![agent.agent_id, agent.cluster, to_json("agent", agent)?],
        )?;
        Ok(())
    }

    pub(crate) fn agents(&self) -> Result<Vec<AgentRecord>> {
        self.bodies("agent", "SELECT body FROM agents ORDER BY id", [])
    }

    pub(crate) fn instance(&self, arn: &str) -> Result<Option<InstanceRecord>> {
        self.body(
            "container instance",
            "SELECT body FROM container_instances WHERE arn = ?1",
            [arn],
        )
    }

    pub(crate) fn put_instance(&self, record: &InstanceRecord) -> Result<()> {
        let instance = &record.instance;
        self.tx.execute(
            "INSERT INTO container_instances
                 (arn, cluster, agent_id, status, registered_at, deregistered_at, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(arn) DO UPDATE SET cluster = excluded.cluster,
                 agent_id = excluded.agent_id, status = excluded.status,
                 registered_at = excluded.registered_at,
                 deregistered_at = excluded.deregistered_at, body = excluded.body",
            params![
                instance.container_instance_arn,
                record.cluster,
                record.agent_id,
                spelling(&instance.status),
                instance.registered_at.as_millis(),
                record.deregistered_at.map(Timestamp::as_millis),
                to_json("container instance", record)?
            ],
        )?;
        Ok(())
    }

    /// The container instances of `cluster`, every status, by registration.
    pub(crate) fn instances(&self, cluster: &str) -> Result<Vec<InstanceRecord>> {
        self.bodies(
            "container instance",
            "SELECT body FROM container_instances WHERE cluster = ?1
             ORDER BY registered_at, arn",
            [cluster],
        )
    }

    // ---- tasks ----

    pub(crate) fn task(&self, arn: &str) -> Result<Option<TaskRecord>> {
        let row: Option<(String, String)> = self
            .tx
            .query_row("SELECT body, meta FROM tasks WHERE arn = ?1", [arn], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        row.map(|(body, meta)| task_record(&body, &meta))
            .transpose()
    }

    pub(crate) fn put_task(&self, record: &TaskRecord) -> Result<()> {
        let task = &record.task;
        let meta = &record.meta;
        self.tx.execute(
            "INSERT INTO tasks (arn, cluster, family, service, agent_id, container_instance_arn,
                 launch_type, last_status, desired_status, started_by, accounted, created_at,
                 body, meta)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT(arn) DO UPDATE SET cluster = excluded.cluster,
                 family = excluded.family, service = excluded.service,
                 agent_id = excluded.agent_id,
                 container_instance_arn = excluded.container_instance_arn,
                 launch_type = excluded.launch_type, last_status = excluded.last_status,
                 desired_status = excluded.desired_status, started_by = excluded.started_by,
                 accounted = excluded.accounted, created_at = excluded.created_at,
                 body = excluded.body, meta = excluded.meta",
            params![
                task.task_arn,
                meta.cluster,
                family_of(&task.task_definition_arn),
                meta.service,
                meta.agent_id,
                task.container_instance_arn,
                spelling(&task.launch_type),
                spelling(&task.last_status),
                spelling(&task.desired_status),
                task.started_by,
                meta.accounted,
                task.created_at.as_millis(),
                to_json("task", task)?,
                to_json("task meta", meta)?
            ],
        )?;
        Ok(())
    }

    /// The tasks that `filter` selects, oldest first.
    pub(crate) fn tasks(&self, filter: &TaskFilter<'_>) -> Result<Vec<TaskRecord>> {
        let mut sql = String::from("SELECT body, meta FROM tasks WHERE 1 = 1");
        let mut args: Vec<SqlValue> = Vec::new();
        let mut add = |column: &str, value: SqlValue| {
            args.push(value);
            sql.push_str(&format!(" AND {column} = ?{}", args.len()));
        };
        if let Some(cluster) = filter.cluster {
            add("cluster", SqlValue::Text(cluster.to_owned()));
        }
        if let Some(service) = filter.service {
            add("service", SqlValue::Text(service.to_owned()));
        }
        if let Some(agent) = filter.agent_id {
            add("agent_id", SqlValue::Text(agent.to_owned()));
        }
        if let Some(instance) = filter.container_instance_arn {
            add(
                "container_instance_arn",
                SqlValue::Text(instance.to_owned()),
            );
        }
        if let Some(family) = filter.family {
            add("family", SqlValue::Text(family.to_owned()));
        }
        if let Some(started_by) = filter.started_by {
            add("started_by", SqlValue::Text(started_by.to_owned()));
        }
        if let Some(desired) = filter.desired_status {
            add("desired_status", SqlValue::Text(spelling(&desired)));
        }
        if let Some(launch_type) = filter.launch_type {
            add("launch_type", SqlValue::Text(spelling(&launch_type)));
        }
        let stopped = spelling(&TaskStatus::Stopped);
        if filter.active {
            sql.push_str(&format!(" AND last_status != '{stopped}'"));
        }
        if filter.active_or_unaccounted {
            sql.push_str(&format!(
                " AND (last_status != '{stopped}' OR accounted = 0)"
            ));
        }
        sql.push_str(" ORDER BY created_at, arn");
        let mut statement = self.tx.prepare(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (body, meta) = row?;
            out.push(task_record(&body, &meta)?);
        }
        Ok(out)
    }

    // ---- services ----

    pub(crate) fn service(&self, cluster: &str, name: &str) -> Result<Option<ServiceRecord>> {
        self.body(
            "service",
            "SELECT body FROM services WHERE cluster = ?1 AND name = ?2",
            [cluster, name],
        )
    }

    pub(crate) fn put_service(&self, record: &ServiceRecord) -> Result<()> {
        self.tx.execute(
            "INSERT INTO services (cluster, name, status, body) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(cluster, name) DO UPDATE
             SET status = excluded.status, body = excluded.body",
            params![
                record.cluster,
                record.service.service_name,
                spelling(&record.service.status),
                to_json("service", record)?
            ],
        )?;
        Ok(())
    }

    /// The services of `cluster` (every cluster when `None`), by cluster then name.
    pub(crate) fn services(&self, cluster: Option<&str>) -> Result<Vec<ServiceRecord>> {
        match cluster {
            Some(cluster) => self.bodies(
                "service",
                "SELECT body FROM services WHERE cluster = ?1 ORDER BY name",
                [cluster],
            ),
            None => self.bodies(
                "service",
                "SELECT body FROM services ORDER BY cluster, name",
                [],
            ),
        }
    }

    // ---- work ----

    /// Queues work for an agent, replacing work of the same kind for the same task (which is
    /// then delivered again).
    pub(crate) fn queue_work(
        &self,
        agent_id: &str,
        task_arn: &str,
        kind: WorkKind,
        body: &impl Serialize,
        now: Timestamp,
    ) -> Result<()> {
        self.tx.execute(
            "INSERT INTO work (agent_id, task_arn, kind, body, queued_at, delivered_at)
             VALUES (?1, ?2, ?3, ?4, ?5, NULL)
             ON CONFLICT(agent_id, task_arn, kind) DO UPDATE
             SET body = excluded.body, queued_at = excluded.queued_at, delivered_at = NULL",
            params![
                agent_id,
                task_arn,
                kind.as_str(),
                to_json("work", body)?,
                now.as_millis()
            ],
        )?;
        Ok(())
    }

    /// The work queued for `agent_id`, oldest first.
    pub(crate) fn work(&self, agent_id: &str) -> Result<Vec<WorkItem>> {
        let mut statement = self.tx.prepare_cached(
            "SELECT task_arn, kind, body, delivered_at FROM work WHERE agent_id = ?1
             ORDER BY queued_at, task_arn, kind",
        )?;
        let rows = statement.query_map([agent_id], |r| {
            let kind: String = r.get(1)?;
            Ok(WorkItem {
                task_arn: r.get(0)?,
                kind: if kind == WorkKind::Stop.as_str() {
                    WorkKind::Stop
                } else {
                    WorkKind::Start
                },
                body: r.get(2)?,
                delivered_at: r.get::<_, Option<i64>>(3)?.map(Timestamp::from_millis),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The queued work of `kind` for `task_arn`, if any.
    pub(crate) fn work_for_task(&self, task_arn: &str, kind: WorkKind) -> Result<Option<WorkItem>> {
        Ok(self
            .tx
            .query_row(
                "SELECT body, delivered_at FROM work WHERE task_arn = ?1 AND kind = ?2
                 ORDER BY queued_at LIMIT 1",
                params![task_arn, kind.as_str()],
                |r| {
                    Ok(WorkItem {
                        task_arn: task_arn.to_owned(),
                        kind,
                        body: r.get(0)?,
                        delivered_at: r.get::<_, Option<i64>>(1)?.map(Timestamp::from_millis),
                    })
                },
            )
            .optional()?)
    }

    pub(crate) fn mark_delivered(
        &self,
        agent_id: &str,
        task_arn: &str,
        kind: WorkKind,
        at: Timestamp,
    ) -> Result<()> {
        self.tx.execute(
            "UPDATE work SET delivered_at = ?4 WHERE agent_id = ?1 AND task_arn = ?2 AND kind = ?3",
            params![agent_id, task_arn, kind.as_str(), at.as_millis()],
        )?;
        Ok(())
    }

    /// Drops the work of `kind` for `task_arn` (every kind when `None`), whatever the agent.
    pub(crate) fn drop_work(&self, task_arn: &str, kind: Option<WorkKind>) -> Result<()> {
        match kind {
            Some(kind) => self.tx.execute(
                "DELETE FROM work WHERE task_arn = ?1 AND kind = ?2",
                params![task_arn, kind.as_str()],
            )?,
            None => self
                .tx
                .execute("DELETE FROM work WHERE task_arn = ?1", [task_arn])?,
        };
        Ok(())
    }
}

fn task_record(body: &str, meta: &str) -> Result<TaskRecord> {
    Ok(TaskRecord {
        task: from_json("task", body)?,
        meta: from_json("task meta", meta)?,
    })
}

/// Counts of a cluster's tasks, instances and services, for `DescribeClusters`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ClusterCounts {
    pub instances: u32,
    pub running: u32,
    pub pending: u32,
    pub services: u32,
}

impl Tx<'_> {
    pub(crate) fn cluster_counts(&self, cluster: &str) -> Result<ClusterCounts> {
        let count = |sql: &str| -> Result<u32> {
            let n: i64 = self.tx.query_row(sql, [cluster], |r| r.get(0))?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        };
        Ok(ClusterCounts {
            instances: count(
                "SELECT COUNT(*) FROM container_instances
                 WHERE cluster = ?1 AND status != 'INACTIVE'",
            )?,
            running: count(
                "SELECT COUNT(*) FROM tasks WHERE cluster = ?1 AND last_status = 'RUNNING'",
            )?,
            pending: count(
                "SELECT COUNT(*) FROM tasks WHERE cluster = ?1
                 AND last_status IN ('PROVISIONING', 'PENDING', 'ACTIVATING')",
            )?,
            services: count(
                "SELECT COUNT(*) FROM services WHERE cluster = ?1
                 AND status IN ('ACTIVE', 'DRAINING')",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::arn;
    use crate::ecs::taskdef::RegisterTaskDefinition;

    fn definition(revision: u32) -> TaskDefinition {
        let request = RegisterTaskDefinition::from_json(
            r#"{"family": "web", "containerDefinitions": [
                {"name": "app", "image": "busybox", "memory": 128}]}"#,
        )
        .unwrap();
        TaskDefinition::register(request, revision, Timestamp::from_secs(1)).unwrap()
    }

    fn task_record(id: &str) -> TaskRecord {
        TaskRecord {
            task: Task::new(
                arn::task("default", id),
                arn::cluster("default"),
                &definition(1),
                LaunchType::Ec2,
                None,
                Timestamp::from_secs(5),
            ),
            meta: TaskMeta {
                cluster: "default".into(),
                agent_id: Some("agent-1".into()),
                ..TaskMeta::default()
            },
        }
    }

    #[test]
    fn rows_round_trip_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("control.db")).unwrap();
        store
            .write(|tx| -> Result<()> {
                tx.put_cluster(&Cluster::new("default"))?;
                assert_eq!(tx.next_revision("web")?, 1);
                tx.put_task_definition(&definition(1))?;
                let mut second = definition(2);
                second.deregister(Timestamp::from_secs(2));
                tx.put_task_definition(&second)?;
                tx.put_task(&task_record("a"))?;
                let mut stopped = task_record("b");
                stopped
                    .task
                    .move_to(TaskStatus::Stopped, Timestamp::from_secs(9))
                    .unwrap();
                tx.put_task(&stopped)?;
                Ok(())
            })
            .unwrap();
        store
            .read(|tx| -> Result<()> {
                assert_eq!(tx.next_revision("web")?, 3);
                assert_eq!(
                    tx.latest_task_definition("web")?.map(|d| d.revision),
                    Some(1)
                );
                assert_eq!(
                    tx.task_definitions("w", TaskDefinitionStatus::Inactive)?
                        .len(),
                    1
                );
                assert!(
                    tx.task_definitions("web_", TaskDefinitionStatus::Active)?
                        .is_empty()
                );
                let active = tx.tasks(&TaskFilter {
                    active: true,
                    ..TaskFilter::default()
                })?;
                assert_eq!(active.len(), 1);
                assert_eq!(active[0], task_record("a"));
                let web = tx.tasks(&TaskFilter {
                    family: Some("web"),
                    agent_id: Some("agent-1"),
                    ..TaskFilter::default()
                })?;
                assert_eq!(web.len(), 2);
                assert_eq!(tx.cluster_counts("default")?.pending, 1);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("control.db")).unwrap();
        let result = store.write(|tx| -> Result<(), StoreError> {
            tx.put_task(&task_record("a"))?;
            tx.queue_work("agent-1", "t", WorkKind::Start, &"x", Timestamp::EPOCH)?;
            Err(StoreError::NewerSchema(99))
        });
        assert!(result.is_err());
        store
            .read(|tx| -> Result<()> {
                assert!(tx.task(&arn::task("default", "a"))?.is_none());
                assert!(tx.work("agent-1")?.is_empty());
                Ok(())
            })
            .unwrap();
    }

    /// The child half of `a_crash_mid_transaction_leaves_nothing`: when `BERTH_CRASH_DB` is
    /// set, writes rows in a transaction and aborts the process before committing.
    #[test]
    fn crash_child() {
        let Some(path) = std::env::var_os("BERTH_CRASH_DB") else {
            return;
        };
        let store = Store::open(Path::new(&path)).unwrap();
        store
            .write(|tx| -> Result<()> {
                tx.put_cluster(&Cluster::new("committed"))?;
                Ok(())
            })
            .unwrap();
        let _: Result<()> = store.write(|tx| {
            tx.put_cluster(&Cluster::new("half"))?;
            tx.put_task(&task_record("half"))?;
            tx.queue_work("agent-1", "half", WorkKind::Start, &"x", Timestamp::EPOCH)?;
            // The process dies with the transaction open: no commit, no rollback, no cleanup.
            std::process::abort();
        });
    }

    #[test]
    fn a_crash_mid_transaction_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.db");
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "control::store::tests::crash_child",
                "--nocapture",
            ])
            .env("BERTH_CRASH_DB", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child was meant to abort");
        let store = Store::open(&path).unwrap();
        store
            .read(|tx| -> Result<()> {
                let names: Vec<String> =
                    tx.clusters()?.into_iter().map(|c| c.cluster_name).collect();
                assert_eq!(names, ["committed"]);
                assert!(tx.task(&arn::task("default", "half"))?.is_none());
                assert!(tx.work("agent-1")?.is_empty());
                Ok(())
            })
            .unwrap();
    }
}
