//! The runner's commands: `berth taskdef`, `cluster`, `task`, `service` talk to the control
//! plane (`berth runner serve`) over its HTTP API, whose operations are ECS's own: a `POST /`
//! with `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Operation>` and an ECS JSON body
//! (the JSON 1.1 protocol of the ECS API, so ECS's field names are the contract). What ECS
//! leaves to other services has routes of berth's own under `/berth/v1/`: a task's container
//! logs (CloudWatch Logs in AWS) and a cluster's cost (the bill). See `berth_runner::control`.
//!
//! The control plane is found at `--url`, else `$BERTH_RUNNER_URL`, else
//! `http://127.0.0.1:5400`. Output is a table, or with `--json` the API's answer as it is.

mod daemon;

pub use daemon::{AgentArgs, ServeArgs, agent};

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

/// The default address of the control plane.
pub const DEFAULT_URL: &str = "http://127.0.0.1:5400";
/// The `X-Amz-Target` prefix of ECS's operations.
pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";

/// Where the control plane is, and how to print.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The control plane's URL [default: $BERTH_RUNNER_URL, else http://127.0.0.1:5400].
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Print the API's JSON answer, with ECS's field names.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ApiArgs {
    fn client(&self) -> anyhow::Result<Api> {
        let url = self
            .url
            .clone()
            .or_else(|| std::env::var("BERTH_RUNNER_URL").ok())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        Api::new(&url)
    }
}

/// A blocking client of the control plane's API.
pub struct Api {
    base: String,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Api {
    /// A client of the control plane at `url`.
    pub fn new(url: &str) -> anyhow::Result<Api> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the HTTP client")?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("starting the HTTP client")?;
        Ok(Api {
            base: url.trim_end_matches('/').to_owned(),
            runtime,
            http,
        })
    }

    /// Calls the ECS operation `op` with `body`.
    pub fn call(&self, op: &str, body: &Value) -> anyhow::Result<Value> {
        let request = self
            .http
            .post(format!("{}/", self.base))
            .header("X-Amz-Target", format!("{TARGET_PREFIX}.{op}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .body(serde_json::to_vec(body)?);
        self.send(op, request)
    }

    /// GETs `path` (a route of berth's own) as JSON.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(path, request)
    }

    /// GETs `path` and writes the body to stdout as it arrives.
    pub fn stream(&self, path: &str) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        self.runtime.block_on(async {
            let mut response = self
                .http
                .get(&url)
                .send()
                .await
                .with_context(|| unreachable_message(&self.base))?;
            if !response.status().is_success() {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                return Err(api_error(path, status, &body));
            }
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = response.chunk().await? {
                out.write_all(&chunk)?;
                out.flush()?;
            }
            Ok(())
        })
    }

    fn send(&self, what: &str, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        self.runtime.block_on(async {
            let response = request
                .send()
                .await
                .with_context(|| unreachable_message(&self.base))?;
            let status = response.status();
            let body = response.text().await.context("reading the answer")?;
            if !status.is_success() {
                return Err(api_error(what, status, &body));
            }
            serde_json::from_str(&body).with_context(|| format!("{what}: the answer is not JSON"))
        })
    }
}

fn unreachable_message(base: &str) -> String {
    format!(
        "cannot reach the control plane at {base} (start it with `berth runner serve`, or set \
         $BERTH_RUNNER_URL)"
    )
}

/// An error answer as ECS gives it: `{"__type": "...Exception", "message": "..."}`.
fn api_error(what: &str, status: reqwest::StatusCode, body: &str) -> anyhow::Error {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let kind = parsed
        .as_ref()
        .and_then(|v| v["__type"].as_str())
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned());
    let message = parsed
        .as_ref()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    match kind {
        Some(kind) => anyhow!("{kind}: {message}"),
        None => anyhow!("{what}: {status}: {message}"),
    }
}

// ---- runner ----

#[derive(Debug, Subcommand)]
pub enum RunnerCommand {
    /// Runs the control plane; this machine joins as the first EC2 instance and serves the
    /// FARGATE pool.
    Serve(ServeArgs),
}

pub fn runner(cmd: RunnerCommand) -> anyhow::Result<()> {
    match cmd {
        RunnerCommand::Serve(args) => daemon::serve(args),
    }
}

// ---- taskdef ----

#[derive(Debug, Subcommand)]
pub enum TaskdefCommand {
    /// Registers a task definition: ECS's RegisterTaskDefinition input, as JSON.
    Register {
        /// The JSON file; `-` reads standard input.
        file: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Lists the task definitions, newest revision last.
    Ls {
        /// Only the families that start with this.
        #[arg(long)]
        family_prefix: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Shows a task definition: `FAMILY` (its latest revision), `FAMILY:REV` or an ARN.
    Describe {
        #[arg(value_name = "FAMILY[:REV]")]
        task_definition: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

pub fn taskdef(cmd: TaskdefCommand) -> anyhow::Result<()> {
    match cmd {
        TaskdefCommand::Register { file, api } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", file.display()))?;
            let out = api.client()?.call("RegisterTaskDefinition", &body)?;
            print_or(&api, &out, |v| {
                println!(
                    "{}",
                    v["taskDefinition"]["taskDefinitionArn"]
                        .as_str()
                        .unwrap_or_default()
                );
            })
        }
        TaskdefCommand::Ls { family_prefix, api } => {
            let mut body = json!({});
            if let Some(p) = family_prefix {
                body["familyPrefix"] = json!(p);
            }
            let out = api.client()?.call("ListTaskDefinitions", &body)?;
            print_or(&api, &out, |v| {
                for arn in strings(&v["taskDefinitionArns"]) {
                    println!("{arn}");
                }
            })
        }
        TaskdefCommand::Describe {
            task_definition,
            api,
        } => {
            let out = api.client()?.call(
                "DescribeTaskDefinition",
                &json!({ "taskDefinition": task_definition }),
            )?;
            // The description is JSON whatever the flag: it is what a task definition is.
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
    }
}

// ---- cluster ----

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Creates a cluster (its FARGATE pool comes with it; EC2 instances join with `berth
    /// agent --join`).
    Create {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Lists the clusters with their instances and tasks.
    Ls {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// What a cluster has cost: EC2 instance-seconds, Fargate vCPU- and GB-seconds.
    Cost {
        #[arg(default_value = "default")]
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

pub fn cluster(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Create { name, api } => {
            let out = api
                .client()?
                .call("CreateCluster", &json!({ "clusterName": name }))?;
            print_or(&api, &out, |v| {
                println!(
                    "{}",
                    v["cluster"]["clusterArn"].as_str().unwrap_or_default()
                );
            })
        }
        ClusterCommand::Ls { api } => {
            let client = api.client()?;
            let arns = client.call("ListClusters", &json!({}))?;
            let out = client.call(
                "DescribeClusters",
                &json!({ "clusters": arns["clusterArns"].clone() }),
            )?;
            print_or(&api, &out, |v| {
                let mut rows = vec![row(&[
                    "NAME",
                    "INSTANCES",
                    "RUNNING",
                    "PENDING",
                    "SERVICES",
                ])];
                for c in v["clusters"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        text(&c["clusterName"]),
                        text(&c["registeredContainerInstancesCount"]),
                        text(&c["runningTasksCount"]),
                        text(&c["pendingTasksCount"]),
                        text(&c["activeServicesCount"]),
                    ]);
                }
                print_table(&rows);
            })
        }
        ClusterCommand::Cost { name, api } => {
            let out = api
                .client()?
                .get(&format!("/berth/v1/clusters/{name}/cost"))?;
            print_or(&api, &out, |v| {
                let mut rows = vec![row(&["POOL", "WHAT", "SECONDS", "USAGE", "USD"])];
                for item in v["items"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        text(&item["pool"]),
                        text(&item["what"]),
                        text(&item["seconds"]),
                        text(&item["usage"]),
                        text(&item["usd"]),
                    ]);
                }
                print_table(&rows);
                println!("total: {} USD", text(&v["totalUsd"]));
            })
        }
    }
}

// ---- task ----

/// ECS's launch types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum LaunchType {
    Ec2,
    Fargate,
}

impl LaunchType {
    fn as_str(self) -> &'static str {
        match self {
            LaunchType::Ec2 => "EC2",
            LaunchType::Fargate => "FARGATE",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Starts tasks from a task definition.
    Run {
        #[arg(long, default_value = "default")]
        cluster: String,
        #[arg(long, value_name = "FAMILY[:REV]")]
        task_definition: String,
        #[arg(long, value_enum, default_value_t = LaunchType::Ec2)]
        launch_type: LaunchType,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// The task group (`distinctInstance` and `spread` count the tasks of a group).
        #[arg(long)]
        group: Option<String>,
        /// A placement strategy, `TYPE[:FIELD]` (`binpack:memory`, `spread:attribute:ecs.
        /// availability-zone`, `random`); repeatable, applied in order.
        #[arg(long = "placement-strategy", value_name = "TYPE[:FIELD]")]
        placement_strategy: Vec<String>,
        /// A placement constraint: `distinctInstance` or `memberOf:EXPRESSION`; repeatable.
        #[arg(long = "placement-constraint", value_name = "TYPE[:EXPRESSION]")]
        placement_constraint: Vec<String>,
        /// Return once every task started is RUNNING (as `aws ecs wait tasks-running`); fail
        /// if one stops first, or after this many seconds.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "600")]
        wait: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Lists the tasks of a cluster.
    Ps {
        #[arg(long, default_value = "default")]
        cluster: String,
        /// Stopped tasks too.
        #[arg(short, long)]
        all: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Shows tasks, as ECS's DescribeTasks does.
    Describe {
        #[arg(long, default_value = "default")]
        cluster: String,
        #[arg(required = true)]
        tasks: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stops a task: SIGTERM to its containers, SIGKILL after their stopTimeout.
    Stop {
        #[arg(long, default_value = "default")]
        cluster: String,
        task: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Prints the output of a task's container (its only or first container by default).
    Logs {
        #[arg(long, default_value = "default")]
        cluster: String,
        task: String,
        #[arg(long)]
        container: Option<String>,
        /// Keep printing as the container writes, until the task stops.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `TYPE[:FIELD]` into ECS's `{type, field}`.
fn placement_strategy(spec: &str) -> anyhow::Result<Value> {
    let (kind, field) = match spec.split_once(':') {
        Some((k, f)) => (k, Some(f)),
        None => (spec, None),
    };
    if !matches!(kind, "binpack" | "spread" | "random") {
        bail!("--placement-strategy {spec}: use binpack, spread or random");
    }
    let mut v = json!({ "type": kind });
    if let Some(f) = field {
        v["field"] = json!(f);
    }
    Ok(v)
}

/// `distinctInstance` or `memberOf:EXPRESSION` into ECS's `{type, expression}`.
fn placement_constraint(spec: &str) -> anyhow::Result<Value> {
    match spec.split_once(':') {
        None if spec == "distinctInstance" => Ok(json!({ "type": "distinctInstance" })),
        Some(("memberOf", expr)) => Ok(json!({ "type": "memberOf", "expression": expr })),
        _ => bail!("--placement-constraint {spec}: use distinctInstance or memberOf:EXPRESSION"),
    }
}

pub fn task(cmd: TaskCommand) -> anyhow::Result<()> {
    match cmd {
        TaskCommand::Run {
            cluster,
            task_definition,
            launch_type,
            count,
            group,
            placement_strategy: strategies,
            placement_constraint: constraints,
            wait,
            api,
        } => {
            let mut body = json!({
                "cluster": cluster,
                "taskDefinition": task_definition,
                "launchType": launch_type.as_str(),
                "count": count,
            });
            if let Some(g) = group {
                body["group"] = json!(g);
            }
            if !strategies.is_empty() {
                body["placementStrategy"] = Value::Array(
                    strategies
                        .iter()
                        .map(|s| placement_strategy(s))
                        .collect::<anyhow::Result<_>>()?,
                );
            }
            if !constraints.is_empty() {
                body["placementConstraints"] = Value::Array(
                    constraints
                        .iter()
                        .map(|s| placement_constraint(s))
                        .collect::<anyhow::Result<_>>()?,
                );
            }
            let client = api.client()?;
            let out = client.call("RunTask", &body)?;
            print_or(&api, &out, |v| {
                for t in v["tasks"].as_array().into_iter().flatten() {
                    println!("{}", text(&t["taskArn"]));
                }
                for f in v["failures"].as_array().into_iter().flatten() {
                    eprintln!("failure: {} {}", text(&f["reason"]), text(&f["detail"]));
                }
            })?;
            let Some(tasks) = out["tasks"].as_array().filter(|t| !t.is_empty()) else {
                bail!("no task was started");
            };
            if let Some(seconds) = wait {
                let arns: Vec<Value> = tasks.iter().map(|t| t["taskArn"].clone()).collect();
                wait_running(&client, &cluster, &arns, Duration::from_secs(seconds))?;
            }
            Ok(())
        }
        TaskCommand::Ps { cluster, all, api } => {
            let client = api.client()?;
            let mut arns: Vec<Value> = Vec::new();
            let statuses: &[&str] = if all {
                &["RUNNING", "STOPPED"]
            } else {
                &["RUNNING"]
            };
            for status in statuses {
                let list = client.call(
                    "ListTasks",
                    &json!({ "cluster": cluster, "desiredStatus": status }),
                )?;
                arns.extend(list["taskArns"].as_array().cloned().unwrap_or_default());
            }
            let out = if arns.is_empty() {
                json!({ "tasks": [], "failures": [] })
            } else {
                client.call(
                    "DescribeTasks",
                    &json!({ "cluster": cluster, "tasks": arns }),
                )?
            };
            print_or(&api, &out, |v| {
                let mut rows = vec![row(&[
                    "TASK",
                    "DEFINITION",
                    "LAUNCH",
                    "LAST",
                    "DESIRED",
                    "HEALTH",
                    "WHERE",
                ])];
                for t in v["tasks"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        short_id(&t["taskArn"]),
                        text(&t["taskDefinitionArn"])
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                        text(&t["launchType"]),
                        text(&t["lastStatus"]),
                        text(&t["desiredStatus"]),
                        text(&t["healthStatus"]),
                        where_it_runs(t),
                    ]);
                }
                print_table(&rows);
            })
        }
        TaskCommand::Describe {
            cluster,
            tasks,
            api,
        } => {
            let out = api.client()?.call(
                "DescribeTasks",
                &json!({ "cluster": cluster, "tasks": tasks }),
            )?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            if out["tasks"].as_array().is_none_or(Vec::is_empty) {
                bail!("no such task");
            }
            Ok(())
        }
        TaskCommand::Stop {
            cluster,
            task,
            reason,
            api,
        } => {
            let mut body = json!({ "cluster": cluster, "task": task });
            if let Some(r) = reason {
                body["reason"] = json!(r);
            }
            let out = api.client()?.call("StopTask", &body)?;
            print_or(&api, &out, |v| {
                println!("{}", text(&v["task"]["taskArn"]));
            })
        }
        TaskCommand::Logs {
            cluster,
            task,
            container,
            follow,
            api,
        } => {
            let mut path = format!(
                "/berth/v1/clusters/{cluster}/tasks/{}/logs?follow={follow}",
                task.rsplit('/').next().unwrap_or(&task)
            );
            if let Some(c) = container {
                path.push_str(&format!("&container={c}"));
            }
            api.client()?.stream(&path)
        }
    }
}

/// Polls DescribeTasks until every task of `arns` is RUNNING; an error when one stops first,
/// or at `limit`.
fn wait_running(api: &Api, cluster: &str, arns: &[Value], limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let out = api.call(
            "DescribeTasks",
            &json!({ "cluster": cluster, "tasks": arns }),
        )?;
        let tasks = out["tasks"].as_array().cloned().unwrap_or_default();
        if let Some(stopped) = tasks.iter().find(|t| t["lastStatus"] == "STOPPED") {
            bail!(
                "task {} stopped: {}",
                short_id(&stopped["taskArn"]),
                text(&stopped["stoppedReason"])
            );
        }
        if tasks.len() == arns.len() && tasks.iter().all(|t| t["lastStatus"] == "RUNNING") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the tasks are not RUNNING after {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- service ----

#[derive(Debug, Args)]
pub struct ServiceSpec {
    /// The task definition of new tasks.
    #[arg(long, value_name = "FAMILY[:REV]")]
    task_definition: Option<String>,
    /// How many tasks to keep running (1 for a new service).
    #[arg(long)]
    desired_count: Option<u32>,
    /// minimumHealthyPercent of rolling deployments.
    #[arg(long)]
    minimum_healthy_percent: Option<u32>,
    /// maximumPercent of rolling deployments.
    #[arg(long)]
    maximum_percent: Option<u32>,
    /// Seconds a new task's failing health checks are ignored.
    #[arg(long)]
    health_check_grace_period: Option<u32>,
    /// The deployment circuit breaker: `on`, `rollback` (on, and roll back) or `off`.
    #[arg(long, value_name = "on|rollback|off")]
    circuit_breaker: Option<String>,
}

impl ServiceSpec {
    fn fill(&self, body: &mut Value) -> anyhow::Result<()> {
        if let Some(t) = &self.task_definition {
            body["taskDefinition"] = json!(t);
        }
        if let Some(n) = self.desired_count {
            body["desiredCount"] = json!(n);
        }
        let mut config = json!({});
        if let Some(p) = self.minimum_healthy_percent {
            config["minimumHealthyPercent"] = json!(p);
        }
        if let Some(p) = self.maximum_percent {
            config["maximumPercent"] = json!(p);
        }
        if let Some(cb) = &self.circuit_breaker {
            config["deploymentCircuitBreaker"] = match cb.as_str() {
                "on" => json!({ "enable": true, "rollback": false }),
                "rollback" => json!({ "enable": true, "rollback": true }),
                "off" => json!({ "enable": false, "rollback": false }),
                other => bail!("--circuit-breaker {other}: use on, rollback or off"),
            };
        }
        if config.as_object().is_some_and(|o| !o.is_empty()) {
            body["deploymentConfiguration"] = config;
        }
        if let Some(g) = self.health_check_grace_period {
            body["healthCheckGracePeriodSeconds"] = json!(g);
        }
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Creates a service, optionally behind a TCP load balancer.
    Create {
        #[arg(long, default_value = "default")]
        cluster: String,
        name: String,
        #[arg(long, value_enum, default_value_t = LaunchType::Ec2)]
        launch_type: LaunchType,
        /// The load balancer: `PORT:CONTAINER:CONTAINER_PORT` (listens on PORT, spreads
        /// connections over the healthy tasks' CONTAINER_PORT of CONTAINER).
        #[arg(long, value_name = "PORT:CONTAINER:CONTAINER_PORT")]
        load_balancer: Option<String>,
        #[command(flatten)]
        spec: ServiceSpec,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Changes a service's desired count or task definition (a new deployment).
    Update {
        #[arg(long, default_value = "default")]
        cluster: String,
        name: String,
        /// Start a new deployment even when nothing changed.
        #[arg(long)]
        force_new_deployment: bool,
        #[command(flatten)]
        spec: ServiceSpec,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Lists the services of a cluster.
    Ls {
        #[arg(long, default_value = "default")]
        cluster: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Deletes a service; `--force` scales it to 0 first.
    Rm {
        #[arg(long, default_value = "default")]
        cluster: String,
        name: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `PORT:CONTAINER:CONTAINER_PORT` into ECS's `loadBalancers` entry, with the listener port
/// as berth's `listenerPort` (ECS names a target group of an ELB instead).
fn load_balancer(spec: &str) -> anyhow::Result<Value> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [port, container, container_port] = parts[..] else {
        bail!("--load-balancer {spec}: use PORT:CONTAINER:CONTAINER_PORT");
    };
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("--load-balancer {spec}: {port:?} is not a port"))?;
    let container_port: u16 = container_port
        .parse()
        .map_err(|_| anyhow!("--load-balancer {spec}: {container_port:?} is not a port"))?;
    Ok(json!([{
        "containerName": container,
        "containerPort": container_port,
        "listenerPort": port,
    }]))
}

pub fn service(cmd: ServiceCommand) -> anyhow::Result<()> {
    match cmd {
        ServiceCommand::Create {
            cluster,
            name,
            launch_type,
            load_balancer: lb,
            spec,
            api,
        } => {
            let mut body = json!({
                "cluster": cluster,
                "serviceName": name,
                "launchType": launch_type.as_str(),
            });
            spec.fill(&mut body)?;
            if body.get("taskDefinition").is_none() {
                bail!("--task-definition is required");
            }
            if body.get("desiredCount").is_none() {
                body["desiredCount"] = json!(1);
            }
            if let Some(lb) = lb {
                body["loadBalancers"] = load_balancer(&lb)?;
            }
            let out = api.client()?.call("CreateService", &body)?;
            print_or(&api, &out, |v| {
                println!("{}", text(&v["service"]["serviceArn"]));
            })
        }
        ServiceCommand::Update {
            cluster,
            name,
            force_new_deployment,
            spec,
            api,
        } => {
            let mut body = json!({ "cluster": cluster, "service": name });
            spec.fill(&mut body)?;
            if force_new_deployment {
                body["forceNewDeployment"] = json!(true);
            }
            let out = api.client()?.call("UpdateService", &body)?;
            print_or(&api, &out, |v| {
                println!("{}", text(&v["service"]["serviceArn"]));
            })
        }
        ServiceCommand::Ls { cluster, api } => {
            let client = api.client()?;
            let list = client.call("ListServices", &json!({ "cluster": cluster }))?;
            let arns = list["serviceArns"].as_array().cloned().unwrap_or_default();
            let out = if arns.is_empty() {
                json!({ "services": [], "failures": [] })
            } else {
                client.call(
                    "DescribeServices",
                    &json!({ "cluster": cluster, "services": arns }),
                )?
            };
            print_or(&api, &out, |v| {
                let mut rows = vec![row(&[
                    "SERVICE",
                    "STATUS",
                    "DESIRED",
                    "RUNNING",
                    "PENDING",
                    "DEFINITION",
                    "ROLLOUT",
                ])];
                for s in v["services"].as_array().into_iter().flatten() {
                    let primary = s["deployments"]
                        .as_array()
                        .and_then(|d| d.iter().find(|d| d["status"] == "PRIMARY"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    rows.push(vec![
                        text(&s["serviceName"]),
                        text(&s["status"]),
                        text(&s["desiredCount"]),
                        text(&s["runningCount"]),
                        text(&s["pendingCount"]),
                        text(&s["taskDefinition"])
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                        text(&primary["rolloutState"]),
                    ]);
                }
                print_table(&rows);
            })
        }
        ServiceCommand::Rm {
            cluster,
            name,
            force,
            api,
        } => {
            let out = api.client()?.call(
                "DeleteService",
                &json!({ "cluster": cluster, "service": name, "force": force }),
            )?;
            print_or(&api, &out, |v| {
                println!("{}", text(&v["service"]["serviceArn"]));
            })
        }
    }
}

// ---- printing ----

fn print_or(api: &ApiArgs, value: &Value, table: impl FnOnce(&Value)) -> anyhow::Result<()> {
    if api.json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        table(value);
    }
    Ok(())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// A JSON value as a table cell: strings bare, numbers as written, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// The last part of an ARN: the task's id.
fn short_id(arn: &Value) -> String {
    text(arn).rsplit('/').next().unwrap_or_default().to_owned()
}

/// Where a task runs: its ENI's address, else its container instance.
fn where_it_runs(task: &Value) -> String {
    let eni = task["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["details"].as_array().cloned().unwrap_or_default())
        .find(|d| d["name"] == "privateIPv4Address")
        .map(|d| text(&d["value"]));
    eni.unwrap_or_else(|| short_id(&task["containerInstanceArn"]))
}

fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_flags_become_ecs_json() {
        assert_eq!(
            placement_strategy("binpack:memory").unwrap(),
            json!({"type": "binpack", "field": "memory"})
        );
        assert_eq!(
            placement_strategy("spread:attribute:ecs.availability-zone").unwrap(),
            json!({"type": "spread", "field": "attribute:ecs.availability-zone"})
        );
        assert_eq!(
            placement_strategy("random").unwrap(),
            json!({"type": "random"})
        );
        assert!(placement_strategy("pack").is_err());
        assert_eq!(
            placement_constraint("memberOf:attribute:ecs.instance-type == t2.small").unwrap(),
            json!({"type": "memberOf", "expression": "attribute:ecs.instance-type == t2.small"})
        );
        assert_eq!(
            placement_constraint("distinctInstance").unwrap(),
            json!({"type": "distinctInstance"})
        );
        assert!(placement_constraint("memberOf").is_err());
    }

    #[test]
    fn load_balancer_flag() {
        assert_eq!(
            load_balancer("8080:web:80").unwrap(),
            json!([{"containerName": "web", "containerPort": 80, "listenerPort": 8080}])
        );
        assert!(load_balancer("8080:web").is_err());
        assert!(load_balancer("x:web:80").is_err());
    }

    #[test]
    fn ecs_errors_read_as_ecs_prints_them() {
        let e = api_error(
            "RunTask",
            reqwest::StatusCode::BAD_REQUEST,
            r#"{"__type":"com.amazonaws.ecs#ClusterNotFoundException","message":"Cluster not found."}"#,
        );
        assert_eq!(
            e.to_string(),
            "ClusterNotFoundException: Cluster not found."
        );
        let e = api_error("x", reqwest::StatusCode::BAD_GATEWAY, "oops");
        assert_eq!(e.to_string(), "x: 502 Bad Gateway: oops");
    }
}
