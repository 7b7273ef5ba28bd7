//! The command line: one clap `Subcommand` per verb, each in a module of its own that turns
//! arguments into library calls. Library crates return typed errors; this layer adds context
//! with `anyhow` and prints them.

mod build;
mod copy;
mod dockerfile;
mod images;
mod layer;
mod progress;
mod registry;
mod runner;

use clap::{Parser, Subcommand};

/// berth: build images from Dockerfiles, serve them from an OCI registry, run them as tasks.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). `BERTH_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile into the local image store (`--check` runs the build
    /// checks instead).
    Build(Box<build::BuildArgs>),
    /// Copy an image between registries, OCI layouts and archives (skopeo's location syntax).
    Copy(copy::CopyArgs),
    /// Inspect Dockerfiles as berth reads them.
    #[command(subcommand)]
    Dockerfile(dockerfile::DockerfileCommand),
    /// The local image store: images, pull, push, tag, rmi, inspect, save, load.
    #[command(flatten)]
    Image(images::ImageCommand),
    /// Create and apply image layers (differential tar archives).
    #[command(subcommand)]
    Layer(layer::LayerCommand),
    /// Run the OCI registry.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// The runner's control plane.
    #[command(subcommand)]
    Runner(runner::RunnerCommand),
    /// Joins a runner's cluster as a container instance (and FARGATE capacity with
    /// `--fargate`).
    Agent(runner::AgentArgs),
    /// Task definitions of the runner (ECS's RegisterTaskDefinition JSON).
    #[command(subcommand)]
    Taskdef(runner::TaskdefCommand),
    /// The runner's clusters: an EC2 pool of instances and a FARGATE pool.
    #[command(subcommand)]
    Cluster(runner::ClusterCommand),
    /// The runner's tasks.
    #[command(subcommand)]
    Task(runner::TaskCommand),
    /// The runner's services: tasks kept running behind a load balancer.
    #[command(subcommand)]
    Service(runner::ServiceCommand),
    /// Serve the OCI registry (alias of `berth registry serve`).
    Serve(registry::ServeArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build(args) => build::run(*args),
        Command::Copy(args) => copy::run(args),
        Command::Dockerfile(cmd) => dockerfile::run(cmd),
        Command::Image(cmd) => images::run(cmd),
        Command::Layer(cmd) => layer::run(cmd),
        Command::Registry(cmd) => registry::run(cmd),
        Command::Runner(cmd) => runner::runner(cmd),
        Command::Agent(args) => runner::agent(args),
        Command::Taskdef(cmd) => runner::taskdef(cmd),
        Command::Cluster(cmd) => runner::cluster(cmd),
        Command::Task(cmd) => runner::task(cmd),
        Command::Service(cmd) => runner::service(cmd),
        Command::Serve(args) => registry::serve(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
