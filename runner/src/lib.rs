//! # berth-runner
//!
//! Runs containers, for the builder's RUN steps and for ECS-like tasks.
//!
//! - [`sandbox`]: the only code in berth that mounts, unshares or execs containers. It runs one
//!   process in a root filesystem (a directory, or an overlay of lower directories plus an upper
//!   directory that it mounts and unmounts itself) through an OCI runtime: runc by default, or
//!   another with the same command line. It builds the runtime's `config.json` with `oci-spec`,
//!   resolves `USER` through the image's own passwd and group files, generates `/etc/hosts`,
//!   `/etc/resolv.conf` and `/etc/hostname`, makes the caller's extra mounts (host binds, tmpfs,
//!   overlays of layer directories, files such as secrets kept on a tmpfs), streams the output,
//!   reports the exit code and cleans up after itself whatever happens.
//! - [`agent`]: the agent that runs ECS tasks on a machine for the control plane: the task
//!   engine (ECS's lifecycle, images from the local store or pulled, containers through
//!   [`sandbox`], `dependsOn`, health checks, stop timeouts, logs, networks through [`net`]),
//!   registration and long polls, and its HTTP server (logs, task metadata v4, credentials).
//! - [`control`]: the control plane behind `berth runner serve`: ECS's API over HTTP (task
//!   definitions, clusters, container instances, tasks, services), the agents' register and
//!   long-poll protocol, placement on EC2 instances and FARGATE agents, the service scheduler
//!   (rolling deployments, health check replacements, the deployment circuit breaker, load
//!   balancers with draining), metering and log streaming, with its state in SQLite.
//! - [`ecs`]: the ECS model, pure logic with no I/O: task definitions in ECS's
//!   `RegisterTaskDefinition` JSON and their validation with ECS's messages, Fargate sizes,
//!   placement on EC2 container instances (constraints, the cluster query language, binpack,
//!   spread and random strategies), metering of both pools, and the task, service and cluster
//!   descriptions that the control plane stores and returns, with ECS's field names.
//! - [`lb`]: a service's TCP load balancer. It spreads connections over the healthy registered
//!   targets (least outstanding connections, round-robin among ties), skips targets that refuse,
//!   and deregisters with connection draining.
//! - [`net`]: task networking for ECS's network modes. The cluster's bridge (`berth0`,
//!   `10.89.0.0/16`, forwarding and outbound NAT), one named network namespace per awsvpc or
//!   bridge-mode task joined to it by a veth pair with an address from a file-backed IPAM,
//!   loopback-only namespaces for `none`, published ports with dynamic host ports through a
//!   userspace proxy, a crash-safe sweep, and test hosts (namespaces standing for machines).
//!
//! `berth runner serve` runs a [`control`] plane and starts this machine's [`agent`] as a
//! process of its own; other machines join with `berth agent --join URL`. The CLI, the control
//! plane and the agents speak ECS's API and a long-poll protocol of berth's own over HTTP.

pub mod agent;
pub mod control;
pub mod ecs;
mod files;
pub mod lb;
pub mod net;
pub mod sandbox;
