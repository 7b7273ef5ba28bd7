//! `berth dockerfile parse`: shows how berth reads a Dockerfile.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use berth_builder::parser;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum DockerfileCommand {
    /// Parse a Dockerfile and print its syntax tree, or the first error with its location.
    Parse(ParseArgs),
}

#[derive(Debug, Args)]
pub struct ParseArgs {
    /// The Dockerfile to read; `-` reads standard input.
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    pub file: PathBuf,
    /// Print BuildKit's dump format, one S-expression per instruction (the default).
    #[arg(long, conflicts_with = "json")]
    pub dump: bool,
    /// Print the syntax tree as JSON, with the location of every node.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: DockerfileCommand) -> anyhow::Result<()> {
    match cmd {
        DockerfileCommand::Parse(args) => parse(args),
    }
}

fn parse(args: ParseArgs) -> anyhow::Result<()> {
    let (source, name) = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the Dockerfile from standard input")?;
        (s, "Dockerfile".to_owned())
    } else {
        let s = std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
        let name = args.file.file_name().map_or_else(
            || args.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        (s, name)
    };
    // The parse error renders itself like rustc (location, source line, caret, hint), so it is
    // printed as is rather than wrapped in more context.
    let tree = parser::parse(&source, &name).map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in &tree.warnings {
        eprintln!(
            "warning: {}:{}:{}: {} ({}): {}",
            w.span.file, w.span.line, w.span.column, w.rule, w.url, w.message
        );
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &tree)?;
        writeln!(out)?;
    } else {
        out.write_all(parser::dump(&tree).as_bytes())?;
    }
    Ok(())
}
