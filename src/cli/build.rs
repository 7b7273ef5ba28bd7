//! `berth build`: for now only `--check`, which runs BuildKit's build checks on the Dockerfile
//! and prints their findings as `docker buildx build --check` does. Building images waits for
//! the executor.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use berth_builder::instructions;
use berth_builder::lint::{self, Linter, Report, Scope};
use berth_builder::parser::{self, Dockerfile};
use clap::Args;

/// Exit status of `berth build` without `--check`, until images can be built.
const NOT_AVAILABLE: i32 = 2;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The Dockerfile (default: `CONTEXT/Dockerfile`); `-` reads standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A name for the image (`name:tag`); may be repeated.
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tags: Vec<String>,
    /// A build argument: `KEY=VALUE`, or `KEY` to take the value from the environment; may be
    /// repeated. `BUILDKIT_DOCKERFILE_CHECK` replaces the Dockerfile's `# check=` directive.
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// The stage to build; the checks that BuildKit runs per stage then look only at the stages
    /// it needs.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Run the build checks instead of building, and print what they find. Exits with 1 when
    /// `# check=error=true` is set and something was found.
    #[arg(long)]
    pub check: bool,
    /// The build context: a directory.
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    if !args.check {
        let what = match args.tags.first() {
            Some(tag) => format!("{tag} was not built"),
            None => "nothing was built".to_string(),
        };
        // The binary maps every error to exit status 1; this one has its own status.
        eprintln!(
            "berth: error: building images is not available yet ({what}); \
             `berth build --check` runs the build checks on the Dockerfile"
        );
        std::process::exit(NOT_AVAILABLE);
    }
    check(&args)
}

/// `--check`: stdout gets the report (nothing when the check failed without findings), and a
/// failure (an unknown target, a lowering error, or findings under `error=true`) is returned
/// after it, as buildx prints it after the findings.
fn check(args: &BuildArgs) -> anyhow::Result<()> {
    let (source, name) = read_dockerfile(args)?;
    // The parse error renders itself like rustc (location, source line, caret, hint).
    let tree = parser::parse(&source, &name).map_err(|e| anyhow!("{e}"))?;
    let build_args = build_args(&args.build_args)?;
    let options = match build_args.get("BUILDKIT_DOCKERFILE_CHECK") {
        Some(value) => parser::parse_check_options(value)
            .map_err(|e| anyhow!("failed to parse check options: {e}"))?,
        None => tree.check.clone(),
    };
    let scope = Scope {
        target: args.target.clone(),
        build_args,
    };
    let mut linter = Linter::new(options);
    let failure = match lint::check_scoped(&tree, &source, &scope, &mut linter) {
        Err(unknown) => Some(anyhow::Error::new(unknown)),
        Ok(()) => lower_for_check(&tree, &source, &scope, &mut linter).err(),
    };
    let report = Report::new(linter, source);
    let failure = failure.or_else(|| report.error_message().map(|m| anyhow!(m)));

    let mut out = std::io::stdout().lock();
    if !report.warnings().is_empty() || failure.is_none() {
        write!(out, "{report}")?;
    }
    match failure {
        Some(err) => {
            if !report.warnings().is_empty() {
                writeln!(out)?;
            }
            out.flush()?;
            Err(err)
        }
        None => Ok(out.flush()?),
    }
}

/// The checks that need ARG/ENV scoping (`UndefinedVar`, `UndefinedArgInFrom`,
/// `InvalidDefaultArgInFrom`, `SecretsUsedInArgOrEnv`, `WorkdirRelativePath`,
/// `RedundantTargetPlatform`, `FromPlatformFlagConstDisallowed`), which
/// `berth_builder::instructions` reports into the same linter while it lowers the tree. An
/// instruction that does not lower is the check's error, printed after the findings.
fn lower_for_check(
    tree: &Dockerfile,
    source: &str,
    scope: &Scope,
    linter: &mut Linter,
) -> anyhow::Result<()> {
    let options = instructions::BuildOptions {
        build_args: scope.build_args.clone(),
        target: scope.target.clone(),
        ..instructions::BuildOptions::default()
    };
    instructions::lower(tree, &options, linter)
        .map_err(|e| anyhow!("{}", e.with_source(source)))?;
    Ok(())
}

/// The Dockerfile's text and the name its findings use: the path as given with `-f`, else
/// `CONTEXT/Dockerfile`, as buildx names it.
fn read_dockerfile(args: &BuildArgs) -> anyhow::Result<(String, String)> {
    let context = &args.context;
    let is_remote = |p: &Path| {
        let s = p.to_string_lossy();
        s == "-" || s.contains("://") || s.starts_with("git@")
    };
    if !is_remote(context) && !context.is_dir() {
        anyhow::bail!(
            "unable to prepare context: path {:?} not found",
            context.display().to_string()
        );
    }
    let path = match &args.file {
        Some(file) if file.as_os_str() == "-" => {
            let mut source = String::new();
            std::io::stdin()
                .read_to_string(&mut source)
                .context("reading the Dockerfile from standard input")?;
            return Ok((source, "Dockerfile".to_string()));
        }
        Some(file) => file.clone(),
        None => context.join("Dockerfile"),
    };
    let source =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.to_string_lossy();
    let name = name.strip_prefix("./").unwrap_or(name.as_ref()).to_string();
    Ok((source, name))
}

/// `--build-arg` values: `KEY=VALUE`, or `KEY` alone for the value of the environment
/// variable `KEY` (left out when it is not set), as docker does.
fn build_args(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut args = BTreeMap::new();
    for arg in raw {
        let (key, value) = match arg.split_once('=') {
            Some((key, value)) => (key, Some(value.to_string())),
            None => (arg.as_str(), std::env::var(arg).ok()),
        };
        if key.is_empty() {
            anyhow::bail!("invalid build argument {arg:?}: the name is empty");
        }
        if let Some(value) = value {
            args.insert(key.to_string(), value);
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_take_values_or_the_environment() {
        let args = build_args(&[
            "A=1".to_string(),
            "B=x=y".to_string(),
            "PATH".to_string(),
            "BERTH_SURELY_UNSET_VARIABLE".to_string(),
        ])
        .unwrap();
        assert_eq!(args["A"], "1");
        assert_eq!(args["B"], "x=y");
        assert!(args.contains_key("PATH"));
        assert!(!args.contains_key("BERTH_SURELY_UNSET_VARIABLE"));
        assert!(build_args(&["=1".to_string()]).is_err());
    }
}
