//! The command line: one clap `Subcommand` per verb, each in a module of its own that turns
//! arguments into library calls. Library crates return typed errors; this layer adds context
//! with `anyhow` and prints them.

mod layer;

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
    /// Create and apply image layers (differential tar archives).
    #[command(subcommand)]
    Layer(layer::LayerCommand),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Layer(cmd) => layer::run(cmd),
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
