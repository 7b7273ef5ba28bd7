//! `berth build`: builds the image of a Dockerfile with `berth_builder::solver` into the local
//! image store (and, with `--output type=oci,dest=FILE`, an OCI archive), printing BuildKit's
//! plain progress on stderr and the image id on stdout. `--check` runs BuildKit's build checks
//! on the Dockerfile instead and prints their findings as `docker buildx build --check` does.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use std::time::Instant;

use anyhow::{Context as _, anyhow};
use berth_builder::context::Context;
use berth_builder::instructions;
use berth_builder::lint::{self, Linter, Report, Scope};
use berth_builder::parser::{self, Dockerfile};
use berth_builder::solver::{self, Progress, SolveOptions, Solver};
use berth_layerstore::image::layout;
use berth_layerstore::layer::LayerOptions;
use clap::Args;

use super::images::{StoreArgs, normalize, parse_name};

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
    /// The OCI runtime that runs RUN steps [default: runc on PATH].
    #[arg(long, value_name = "PATH")]
    pub runtime: Option<PathBuf>,
    /// Where else the image goes: `type=oci,dest=FILE` writes an OCI archive.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub output: Vec<String>,
    /// Write the image id to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The build context: a directory.
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    if args.check {
        check(&args)
    } else {
        build(&args)
    }
}

/// Where `--output` sends the image besides the store.
enum Output {
    OciArchive(PathBuf),
}

fn parse_output(spec: &str) -> anyhow::Result<Output> {
    let mut kind = None;
    let mut dest = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_owned()),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            _ => anyhow::bail!("--output {spec}: unknown or unsupported field {part:?}"),
        }
    }
    match (kind.as_deref(), dest) {
        (Some("oci"), Some(dest)) => Ok(Output::OciArchive(dest)),
        (Some("oci"), None) => anyhow::bail!("--output {spec}: type=oci needs dest=FILE"),
        _ => anyhow::bail!("--output {spec}: only type=oci,dest=FILE is supported"),
    }
}

/// Builds the image: lowering (with the configs of the base images the store has), then the
/// solver, progress on stderr as BuildKit's plain lines, the id on stdout.
fn build(args: &BuildArgs) -> anyhow::Result<()> {
    let outputs = args
        .output
        .iter()
        .map(|o| parse_output(o))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let names = args
        .tags
        .iter()
        .map(|t| parse_name(t).map(|(_, name)| name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (source, name) = read_dockerfile(args)?;
    let tree = parser::parse(&source, &name).map_err(|e| anyhow!("{e}"))?;
    let store = args.store.open()?;
    let mut options = instructions::BuildOptions {
        build_args: build_args(&args.build_args)?,
        target: args.target.clone(),
        ..instructions::BuildOptions::default()
    };
    let lower = |options: &instructions::BuildOptions| {
        let mut linter = Linter::new(tree.check.clone());
        instructions::lower(&tree, options, &mut linter)
            .map_err(|e| anyhow!("{}", e.with_source(&source)))
    };
    let mut lowered = lower(&options)?;
    let bases = solver::base_images(&store, &lowered, &normalize);
    if !bases.is_empty() {
        options.base_images = bases;
        lowered = lower(&options)?;
    }
    let dockerfile = match &args.file {
        Some(f) if f.as_os_str() == "-" => None,
        Some(f) => Some(f.clone()),
        None => Some(args.context.join("Dockerfile")),
    };
    let context = Context::open(&args.context, dockerfile.as_deref())
        .with_context(|| format!("opening the build context {}", args.context.display()))?;
    let root = store.root().to_path_buf();
    let solve_options = SolveOptions {
        snapshot_root: root.join("snapshots"),
        sandbox_root: root.join("sandbox"),
        runtime: args.runtime.clone(),
        names,
        layer: LayerOptions::default(),
    };
    let started = Instant::now();
    let stderr = std::io::stderr();
    let mut progress = |event: Progress<'_>| {
        let mut err = stderr.lock();
        let _ = match event {
            Progress::Start { vertex, name } => writeln!(err, "#{vertex} {name}"),
            Progress::Output { vertex, bytes } => {
                let at = started.elapsed().as_secs_f64();
                let text = String::from_utf8_lossy(bytes);
                let mut r = Ok(());
                for line in text.lines() {
                    r = writeln!(err, "#{vertex} {at:.3} {line}");
                }
                r
            }
            Progress::Error { vertex, message } => writeln!(err, "#{vertex} ERROR: {message}\n"),
            Progress::Done { vertex, seconds } => {
                writeln!(err, "#{vertex} DONE {seconds:.1}s\n")
            }
        };
    };
    let solver = Solver::new(
        &store,
        &context,
        &source,
        &normalize,
        solve_options,
        &mut progress,
    )?;
    let built = solver.build(&lowered)?;
    for output in outputs {
        match output {
            Output::OciArchive(dest) => {
                let entry = (names_first(args)?, built.manifest.clone());
                let file = std::fs::File::create(&dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                layout::export_tar(store.content(), &[entry], std::io::BufWriter::new(file))
                    .with_context(|| format!("writing {}", dest.display()))?
                    .flush()?;
            }
        }
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, built.id.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", built.id);
    Ok(())
}

fn names_first(args: &BuildArgs) -> anyhow::Result<Option<String>> {
    args.tags
        .first()
        .map(|t| parse_name(t).map(|(_, name)| name))
        .transpose()
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
