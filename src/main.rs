//! `berth`: one binary for the image builder, the OCI registry and the task runner.
//!
//! This file only sets up logging and hands the parsed command line to [`cli::run`].

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    init_tracing(args.verbose);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("berth: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr through `tracing`. `BERTH_LOG` (an `EnvFilter` directive such as
/// `berth_layerstore=debug`) wins over `-v`.
fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
