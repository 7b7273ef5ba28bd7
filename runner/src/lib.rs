//! # berth-runner
//!
//! Runs containers, for the builder's RUN steps and for ECS-like tasks.
//!
//! This crate will hold:
//! - `sandbox`: the only code in berth that mounts, unshares or execs containers. It builds an
//!   OCI runtime `config.json` and runs it through runc (or another runtime);
//! - task definitions, tasks and their state machine, services with a TCP load balancer, and the
//!   two capacity pools: EC2 (bin-packed onto registered instances) and Fargate (one sandbox and
//!   one network namespace per task, billed per use).
//!
//! It is not filled in yet.
