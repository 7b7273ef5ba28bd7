//! The Dockerfile corpus (`conformance/dockerfiles/`) built by docker and by `berth build`,
//! and the images compared as users meet them: flattened filesystem and config.
//!
//! - `docker_builds_agree_with_each_other_and_the_golden_files` proves the judge: every case is
//!   built by docker twice (the second time with `--no-cache`), and the two images must be equal
//!   after normalisation, equal to the case's golden listing (`expected.txt`), and must run and
//!   print what the case says. A case whose syntax docker's built-in frontend lacks must be
//!   refused by docker, and its `equivalent.Dockerfile` is built instead.
//! - `berth_builds_match_docker` is the judgement: each case is built by `berth build`, and the
//!   image must equal docker's but for the differences the case allows (each with its reason),
//!   must `docker load`, compare equal again as docker saves it back, and `docker run` alike.
//!
//! What the berth half runs (the CLI of `design.md`), with `BERTH_ROOT` set to a fresh
//! directory for the whole run:
//! `berth load -i <base>.tar` for each base image (busybox, and the bases docker builds), so that
//! `FROM` finds them in berth's local image store as docker finds them in its own; then, per
//! case, `berth build -f <case>/Dockerfile -t <tag> [--build-arg K=V]... [--target T]
//! [--secret id=X,src=F]... --output type=oci,dest=<file> <context>` and
//! `berth save --format docker -o <file> <tag>`. Both archives are judged, and the second is
//! the one `docker load` reads.
//!
//! The docker reference is docker 20.10's daemon with BuildKit (`DOCKER_BUILDKIT=1`); base images
//! are made here from busybox-static, as the machine has no network. The HTTP server that `ADD`
//! of URLs reads from is started by the test on 127.0.0.1 and serves
//! `conformance/dockerfiles/served/`.
//!
//! docker's images stay tagged `berth-conformance/case:<case>-docker` (and the bases under their
//! names), so that the next run, and the berth half, build them from docker's cache.
//!
//! Environment: `BERTH_BIN` (the berth binary), `BERTH_CONFORMANCE_BLESS=1` (rewrite the golden
//! files from docker's images), `BERTH_CONFORMANCE_CASES=01-,17-add` (only cases whose name
//! starts with one of these), `BERTH_CONFORMANCE_JOBS` (cases built at once; 4 by default).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use berth_conformance::corpus::{self, Case, Corpus, DockerBuild, Expect};
use berth_conformance::image::{
    self, ConfigView, Difference, Filesystem, Image, NORMALISATIONS, Normalisation, parse_rfc3339,
};
use common::{require_tool, workspace_root};
use serde_json::json;

/// The Debian docker client, which speaks the API version of the Debian daemon and has BuildKit
/// built in (the newer client in /usr/local/bin needs the buildx plugin for it).
const DOCKER: &str = "/usr/bin/docker";
/// The busybox base image every case starts from.
const BUSYBOX: &str = "berth-conformance/busybox:latest";
/// When the busybox base was "made": every timestamp of its config.
const BASE_CREATED: &str = "2024-01-01T00:00:00Z";
/// Repository of the images the cases build.
const REPOSITORY: &str = "berth-conformance/case";

/// Everything the cases share: the corpus, the docker client, the base images and the server.
struct Harness {
    corpus: Corpus,
    docker: PathBuf,
    /// `http://127.0.0.1:<port>`, serving `dockerfiles/served/`.
    server: String,
    /// The busybox base's filesystem, which golden listings are taken against.
    busybox: Filesystem,
    /// Every base image as a docker-archive, in order, for `berth load`.
    base_archives: Vec<PathBuf>,
    normalisation: Normalisation,
    /// This run's scratch directory.
    work: PathBuf,
}

/// `<target>/tmp/dockerfile-corpus-<pid>`, after removing those of runs that are over (the
/// harness lives in a static, which is never dropped).
fn work_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    const PREFIX: &str = "dockerfile-corpus-";
    for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(PREFIX) {
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let work = root.join(format!("{PREFIX}{}", std::process::id()));
    fs::create_dir_all(&work).expect("create the work directory");
    work
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let docker = require_tool(DOCKER);
        let info =
            run_command(Command::new(&docker).args(["info", "--format", "{{.ServerVersion}}"]));
        assert!(
            info.status.success(),
            "the docker daemon does not answer: run scripts/setup.sh\n{}",
            String::from_utf8_lossy(&info.stderr)
        );
        let dir = workspace_root().join("conformance/dockerfiles");
        let corpus = Corpus::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        let work = work_dir();
        let server = serve(dir.join("served"));

        let busybox_archive = work.join("busybox.tar");
        write_busybox_archive(&busybox_archive);
        docker_ok(
            &docker,
            &["load", "-i", path_str(&busybox_archive)],
            "load the busybox base",
        );
        let busybox = Image::open(&busybox_archive)
            .and_then(|image| image.filesystem())
            .unwrap_or_else(|e| panic!("the busybox base: {e}"));
        let mut base_archives = vec![busybox_archive];
        for base in &corpus.bases {
            let base_dir = corpus.dir.join(&base.dir);
            let context = work.join(format!("base-{}", base.name.replace(['/', ':'], "_")));
            corpus::copy_tree(&base_dir.join("context"), &context)
                .unwrap_or_else(|e| panic!("{e}"));
            let output = docker_build(
                &docker,
                &base_dir.join("Dockerfile"),
                &context,
                &base.name,
                &BuildOptions::default(),
            );
            assert!(
                output.status.success(),
                "docker build of base {}: {}",
                base.name,
                tail(&output)
            );
            let archive = work.join(format!("base-{}.tar", base_archives.len()));
            docker_ok(
                &docker,
                &["save", "-o", path_str(&archive), &base.name],
                "save a base",
            );
            base_archives.push(archive);
        }
        let normalisation = Normalisation {
            base_histories: base_archives
                .iter()
                .map(|archive| {
                    let image =
                        Image::open(archive).unwrap_or_else(|e| panic!("a base image: {e}"));
                    image.config["history"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .collect(),
        };
        Harness {
            corpus,
            docker,
            server,
            busybox,
            base_archives,
            normalisation,
            work,
        }
    })
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn run_command(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// The last lines of a command's output, for failure messages.
fn tail(output: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "{}\n{}",
        output.status,
        lines[lines.len().saturating_sub(30)..].join("\n")
    )
}

fn docker_ok(docker: &Path, args: &[&str], what: &str) -> Output {
    let output = run_command(Command::new(docker).args(args));
    assert!(
        output.status.success(),
        "{what}: docker {args:?}: {}",
        tail(&output)
    );
    output
}

/// The busybox base as a docker-archive with fixed timestamps, so that its image ID is the same
/// on every run: busybox with its applets as symlinks in /bin, users root, app (1000:1000, also
/// in staff) and nobody, and /tmp.
fn write_busybox_archive(dest: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("busybox is not installed: run scripts/setup.sh"));
    let binary = fs::read(&busybox).expect("read busybox");
    let list = run_command(Command::new(&busybox).arg("--list"));
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
        .map(str::to_owned)
        .collect();
    applets.sort();
    let mtime = parse_rfc3339(BASE_CREATED).expect("a valid time") as u64;
    let mut layer = tar::Builder::new(Vec::new());
    let mut add =
        |path: &str, kind: tar::EntryType, mode: u32, owner: u64, data: &[u8], link: &str| {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_uid(owner);
            header.set_gid(owner);
            header.set_mtime(mtime);
            header.set_size(data.len() as u64);
            if kind == tar::EntryType::Symlink {
                layer
                    .append_link(&mut header, path, link)
                    .expect("tar symlink");
            } else {
                layer
                    .append_data(&mut header, path, data)
                    .expect("tar entry");
            }
        };
    use tar::EntryType::{Directory, Regular, Symlink};
    add("bin/", Directory, 0o755, 0, b"", "");
    for applet in &applets {
        add(&format!("bin/{applet}"), Symlink, 0o777, 0, b"", "busybox");
    }
    add("bin/busybox", Regular, 0o755, 0, &binary, "");
    add("etc/", Directory, 0o755, 0, b"", "");
    add(
        "etc/group",
        Regular,
        0o644,
        0,
        b"root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n",
        "",
    );
    add(
        "etc/passwd",
        Regular,
        0o644,
        0,
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n\
          nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        "",
    );
    add("home/", Directory, 0o755, 0, b"", "");
    add("home/app/", Directory, 0o755, 1000, b"", "");
    add("root/", Directory, 0o700, 0, b"", "");
    add("tmp/", Directory, 0o1777, 0, b"", "");
    let layer = layer.into_inner().expect("finish the layer");
    let diff_id = berth_conformance::digest::sha256(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": BASE_CREATED,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": BASE_CREATED, "created_by": "busybox-static root filesystem" }],
    }))
    .expect("serialize the config");
    let config_name = format!("{}.json", &berth_conformance::digest::sha256(&config)[7..]);
    let layer_name = format!("{}/layer.tar", &diff_id[7..]);
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name, "RepoTags": [BUSYBOX], "Layers": [layer_name],
    }]))
    .expect("serialize the manifest");
    let mut archive = tar::Builder::new(fs::File::create(dest).expect("create the base archive"));
    for (name, data) in [
        ("manifest.json", &manifest),
        (config_name.as_str(), &config),
        (layer_name.as_str(), &layer),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_size(data.len() as u64);
        archive
            .append_data(&mut header, name, &data[..])
            .expect("write the base archive");
    }
    archive.finish().expect("finish the base archive");
}

/// Serves the files of `root` over HTTP/1.1 on 127.0.0.1, with a fixed Last-Modified, for as
/// long as the test process lives. Returns its URL.
fn serve(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the HTTP server");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let _ = answer(stream, &root);
            });
        }
    });
    url
}

fn answer(mut stream: TcpStream, root: &Path) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let name = target
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_start_matches('/');
    let file = (!name.is_empty() && !name.split('/').any(|p| p == ".." || p.is_empty()))
        .then(|| root.join(name))
        .filter(|p| p.is_file());
    let (status, body) = match file {
        Some(path) => ("200 OK", fs::read(path)?),
        None => ("404 Not Found", b"not found\n".to_vec()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
         Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        stream.write_all(&body)?;
    }
    stream.flush()
}

/// What varies between the builds of one case.
#[derive(Default)]
struct BuildOptions {
    build_args: Vec<(String, String)>,
    target: Option<String>,
    secrets: Vec<(String, PathBuf)>,
    no_cache: bool,
}

impl BuildOptions {
    fn for_case(harness: &Harness, case: &Case) -> BuildOptions {
        let case_dir = harness.corpus.case_dir(case);
        BuildOptions {
            build_args: case.build_args(&harness.server),
            target: case.target.clone(),
            secrets: case
                .secrets
                .iter()
                .map(|(id, file)| (id.clone(), case_dir.join(file)))
                .collect(),
            no_cache: false,
        }
    }

    /// The flags docker and berth share.
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (key, value) in &self.build_args {
            args.extend(["--build-arg".to_string(), format!("{key}={value}")]);
        }
        if let Some(target) = &self.target {
            args.extend(["--target".to_string(), target.clone()]);
        }
        for (id, file) in &self.secrets {
            args.extend([
                "--secret".to_string(),
                format!("id={id},src={}", file.display()),
            ]);
        }
        args
    }
}

/// Holds docker's tag `tag` for the caller. Both halves of the suite, which run at once, build
/// a case's docker image under the same tag, and [`docker_build`] removes the image the tag
/// named before by id: were the other half to do that between one half's build and its use of
/// the tag, the tag would be gone.
fn hold_tag(tag: &str) -> MutexGuard<'static, ()> {
    static TAGS: OnceLock<Mutex<BTreeMap<String, &'static Mutex<()>>>> = OnceLock::new();
    let lock: &'static Mutex<()> = TAGS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(tag.to_owned())
        .or_insert_with(|| Box::leak(Box::new(Mutex::new(()))));
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `docker build` of `dockerfile` tagged `tag`. The image the tag named before, now untagged,
/// is removed, so that runs do not pile up dangling images.
fn docker_build(
    docker: &Path,
    dockerfile: &Path,
    context: &Path,
    tag: &str,
    options: &BuildOptions,
) -> Output {
    let image_id = || {
        let output =
            run_command(Command::new(docker).args(["image", "inspect", "-f", "{{.Id}}", tag]));
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let before = image_id();
    let mut command = Command::new(docker);
    command
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "--progress=plain", "-f"])
        .arg(dockerfile)
        .args(["-t", tag])
        .args(options.args());
    if options.no_cache {
        command.arg("--no-cache");
    }
    let output = run_command(command.arg(context));
    if let Some(before) = before {
        if output.status.success() && image_id().as_ref() != Some(&before) {
            let _ = run_command(Command::new(docker).args(["rmi", &before]));
        }
    }
    output
}

/// `docker save`s `tag` into `dir` and reads it back.
fn docker_image(harness: &Harness, tag: &str, dir: &Path) -> Result<Image, String> {
    let archive = dir.join(format!("{}.tar", tag.replace(['/', ':'], "_")));
    let output =
        run_command(Command::new(&harness.docker).args(["save", "-o", path_str(&archive), tag]));
    if !output.status.success() {
        return Err(format!("docker save {tag}: {}", tail(&output)));
    }
    Image::open(&archive).map_err(|e| format!("reading docker save of {tag}: {e}"))
}

/// `docker run --rm` of `tag` as the case says; Err unless it prints what the case expects.
fn run_image(harness: &Harness, case: &Case, tag: &str) -> Result<(), String> {
    let Some(run) = &case.run else { return Ok(()) };
    let mut command = Command::new(&harness.docker);
    command.args(["run", "--rm", "--network", "none"]);
    if let Some(entrypoint) = &run.entrypoint {
        command.args(["--entrypoint", entrypoint]);
    }
    let output = run_command(command.arg(tag).args(&run.args));
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || stdout != run.stdout {
        return Err(format!(
            "docker run {tag} {:?}: expected {:?}, got {:?} ({})",
            run.args,
            run.stdout,
            stdout,
            tail(&output)
        ));
    }
    Ok(())
}

fn render(differences: &[Difference], left: &str, right: &str) -> String {
    corpus::render_differences(differences, left, right)
}

/// The cases `BERTH_CONFORMANCE_CASES` selects (all by default).
fn selected(corpus: &Corpus) -> Vec<&Case> {
    let filter = std::env::var("BERTH_CONFORMANCE_CASES").unwrap_or_default();
    let prefixes: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    corpus
        .cases
        .iter()
        .filter(|case| prefixes.is_empty() || prefixes.iter().any(|p| case.name.starts_with(p)))
        .collect()
}

/// Runs `check` on every case, a few at a time, and returns each case's name, outcome and time.
fn for_each_case<'a>(
    cases: &[&'a Case],
    check: impl Fn(&'a Case) -> Result<String, String> + Sync,
) -> Vec<(&'a Case, Result<String, String>, Duration)> {
    let jobs: usize = std::env::var("BERTH_CONFORMANCE_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(4)
        .max(1);
    let next = AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&case) = cases.get(i) else { break };
                    let started = Instant::now();
                    let outcome =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(case)))
                            .unwrap_or_else(|panic| {
                                Err(panic
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_else(|| "panicked".into()))
                            });
                    results
                        .lock()
                        .expect("results")
                        .push((i, case, outcome, started.elapsed()));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(i, ..)| *i);
    results
        .into_iter()
        .map(|(_, case, outcome, time)| (case, outcome, time))
        .collect()
}

/// Prints one line per case and panics with every failure.
fn report(title: &str, results: &[(&Case, Result<String, String>, Duration)], started: Instant) {
    let mut failures = Vec::new();
    println!("{title}");
    for (case, outcome, time) in results {
        match outcome {
            Ok(summary) => println!(
                "  ok    {:<28} {:>5.1}s  {summary}",
                case.name,
                time.as_secs_f64()
            ),
            Err(reason) => {
                println!("  FAIL  {:<28} {:>5.1}s", case.name, time.as_secs_f64());
                failures.push(format!("== {}\n{reason}", case.name));
            }
        }
    }
    println!(
        "{} cases, {} failed, in {:.1}s",
        results.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The golden listing of docker's image for `case`.
fn golden_text(harness: &Harness, case: &Case, image: &Image) -> Result<String, String> {
    let fs = image.filesystem().map_err(|e| e.to_string())?;
    let base = match case.golden_base.as_deref() {
        Some("scratch") => Filesystem::default(),
        None => harness.busybox.clone(),
        Some(other) => return Err(format!("unknown golden_base {other:?}")),
    };
    let base_name = if case.golden_base.is_some() {
        "scratch"
    } else {
        BUSYBOX
    };
    let title = format!(
        "{}: docker's image, as paths that differ from {base_name} and config fields after \
         normalisation.\n# Regenerate with BERTH_CONFORMANCE_BLESS=1.",
        case.name
    );
    // The server's port changes every run; the times in the bases docker builds, whenever the
    // builder's cache is cold; the busybox binary, with the Debian package.
    let mut replacements = vec![(harness.server.clone(), "${SERVER}".to_string())];
    for history in harness.normalisation.base_histories.iter().skip(1) {
        for step in history {
            if let Some(created) = step["created"].as_str() {
                if created != BASE_CREATED {
                    replacements.push((
                        format!("\"{created}\""),
                        "\"<set when docker built the base>\"".to_string(),
                    ));
                }
            }
        }
    }
    if let Some(entry) = harness.busybox.entries.get("/bin/busybox") {
        replacements.push((
            format!(
                "size={} {}",
                entry.size,
                entry.sha256.as_deref().unwrap_or_default()
            ),
            "size=${BUSYBOX_SIZE} ${BUSYBOX_SHA256}".to_string(),
        ));
    }
    Ok(corpus::golden(
        &title,
        &fs,
        &base,
        &ConfigView::new(&image.config, &harness.normalisation),
        &replacements,
    ))
}

/// The Dockerfile docker builds for `case`: its own, or, when docker's frontend lacks its
/// syntax, `equivalent.Dockerfile`, after checking that docker does refuse the case's own.
fn docker_dockerfile(harness: &Harness, case: &Case, context: &Path) -> Result<PathBuf, String> {
    let case_dir = harness.corpus.case_dir(case);
    if case.docker == DockerBuild::Buildkit {
        return Ok(case_dir.join("Dockerfile"));
    }
    let tag = format!("{REPOSITORY}:{}-refused", case.name);
    let options = BuildOptions::for_case(harness, case);
    let output = docker_build(
        &harness.docker,
        &case_dir.join("Dockerfile"),
        context,
        &tag,
        &options,
    );
    if output.status.success() {
        let _ = run_command(Command::new(&harness.docker).args(["rmi", "-f", &tag]));
        return Err(format!(
            "docker now builds this Dockerfile itself, though the case says docker lacks {}: \
             make it a \"buildkit\" case",
            case.docker_lacks.as_deref().unwrap_or_default()
        ));
    }
    Ok(case_dir.join("equivalent.Dockerfile"))
}

/// The docker half of one case; Ok with a short summary.
fn check_docker(harness: &Harness, case: &Case) -> Result<String, String> {
    let dir = tempfile::tempdir_in(&harness.work).map_err(|e| e.to_string())?;
    let context = case
        .prepare_context(&harness.corpus, &dir.path().join("context"))
        .map_err(|e| e.to_string())?;
    let clock = Instant::now();
    let dockerfile = docker_dockerfile(harness, case, &context)?;
    let mut options = BuildOptions::for_case(harness, case);
    let tag = format!("{REPOSITORY}:{}-docker", case.name);
    let _held = hold_tag(&tag);
    let first = docker_build(&harness.docker, &dockerfile, &context, &tag, &options);
    let cached = clock.elapsed();
    if case.expect == Expect::Failure {
        return if first.status.success() {
            Err(format!(
                "docker built {} though the case must fail",
                case.name
            ))
        } else {
            Ok("docker refuses it, as expected".into())
        };
    }
    if !first.status.success() {
        return Err(format!("docker build: {}", tail(&first)));
    }
    options.no_cache = true;
    let again = format!("{REPOSITORY}:{}-docker-nocache", case.name);
    let second = docker_build(&harness.docker, &dockerfile, &context, &again, &options);
    if !second.status.success() {
        return Err(format!("docker build --no-cache: {}", tail(&second)));
    }
    let uncached = clock.elapsed() - cached;
    let left = docker_image(harness, &tag, dir.path())?;
    let right = docker_image(harness, &again, dir.path());
    let _ = run_command(Command::new(&harness.docker).args(["rmi", &again]));
    let right = right?;
    let differences =
        image::compare(&left, &right, &harness.normalisation).map_err(|e| e.to_string())?;
    if !differences.is_empty() {
        return Err(format!(
            "two docker builds differ after normalisation (the judge or the case is not \
             deterministic):\n{}",
            render(&differences, "docker", "docker --no-cache")
        ));
    }
    let golden = golden_text(harness, case, &left)?;
    let golden_path = harness.corpus.case_dir(case).join("expected.txt");
    if std::env::var_os("BERTH_CONFORMANCE_BLESS").is_some() {
        fs::write(&golden_path, &golden).map_err(|e| e.to_string())?;
    } else {
        let expected = fs::read_to_string(&golden_path).unwrap_or_default();
        if expected != golden {
            return Err(format!(
                "docker's image differs from {} (BERTH_CONFORMANCE_BLESS=1 rewrites it):\n{}",
                golden_path.display(),
                line_diff(&expected, &golden)
            ));
        }
    }
    let judged = clock.elapsed() - cached - uncached;
    run_image(harness, case, &tag)?;
    let ran = clock.elapsed() - cached - uncached - judged;
    let how = match case.docker {
        DockerBuild::Buildkit => "BuildKit",
        DockerBuild::Equivalent => "BuildKit, equivalent.Dockerfile",
    };
    Ok(format!(
        "{how}, {} layers (build {:.1}s, --no-cache {:.1}s, save+judge {:.1}s, run {:.1}s)",
        left.layers.len(),
        cached.as_secs_f64(),
        uncached.as_secs_f64(),
        judged.as_secs_f64(),
        ran.as_secs_f64()
    ))
}

/// The lines only in `expected` (`-`) and only in `actual` (`+`).
fn line_diff(expected: &str, actual: &str) -> String {
    let count = |text: &str| {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for line in text.lines() {
            *counts.entry(line.to_string()).or_default() += 1;
        }
        counts
    };
    let (old, new) = (count(expected), count(actual));
    let mut out = String::new();
    for line in expected.lines() {
        if new.get(line).copied().unwrap_or(0) < old[line] {
            out.push_str(&format!("  - {line}\n"));
        }
    }
    for line in actual.lines() {
        if old.get(line).copied().unwrap_or(0) < new[line] {
            out.push_str(&format!("  + {line}\n"));
        }
    }
    out
}

#[test]
fn docker_builds_agree_with_each_other_and_the_golden_files() {
    let started = Instant::now();
    let harness = harness();
    println!("normalisations applied before comparing:");
    for rule in NORMALISATIONS {
        println!("  {}: {}", rule.field, rule.rule);
    }
    let cases = selected(&harness.corpus);
    let results = for_each_case(&cases, |case| check_docker(harness, case));
    report(
        "docker half: docker --no-cache == docker == expected.txt, and docker run",
        &results,
        started,
    );
}

/// `berth load -i` of every base image into the run's `BERTH_ROOT`.
fn berth_root(harness: &Harness, berth: &Path) -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = harness.work.join("berth-root");
        for archive in &harness.base_archives {
            let output = run_command(
                Command::new(berth)
                    .env("BERTH_ROOT", &root)
                    .args(["load", "-i"])
                    .arg(archive),
            );
            assert!(
                output.status.success(),
                "berth load -i {}: {}",
                archive.display(),
                tail(&output)
            );
        }
        root
    })
}

/// The berth half of one case.
fn check_berth(harness: &Harness, berth: &Path, case: &Case) -> Result<String, String> {
    let root = berth_root(harness, berth);
    let dir = tempfile::tempdir_in(&harness.work).map_err(|e| e.to_string())?;
    let context = case
        .prepare_context(&harness.corpus, &dir.path().join("context"))
        .map_err(|e| e.to_string())?;
    let options = BuildOptions::for_case(harness, case);
    let dockerfile = harness.corpus.case_dir(case).join("Dockerfile");
    let tag = format!("{REPOSITORY}:{}-berth", case.name);
    let oci_archive = dir.path().join("berth-oci.tar");
    let built = run_command(
        Command::new(berth)
            .env("BERTH_ROOT", root)
            .args(["build", "-f"])
            .arg(&dockerfile)
            .args(["-t", &tag])
            .args(options.args())
            .arg("--output")
            .arg(format!("type=oci,dest={}", oci_archive.display()))
            .arg(&context),
    );
    if case.expect == Expect::Failure {
        return if built.status.success() {
            Err("berth built it, though the case must fail".into())
        } else {
            Ok("berth refuses it, as expected".into())
        };
    }
    if !built.status.success() {
        return Err(format!("berth build: {}", tail(&built)));
    }
    let docker_archive = dir.path().join("berth-docker.tar");
    let saved = run_command(
        Command::new(berth)
            .env("BERTH_ROOT", root)
            .args(["save", "--format", "docker", "-o"])
            .arg(&docker_archive)
            .arg(&tag),
    );
    if !saved.status.success() {
        return Err(format!("berth save --format docker: {}", tail(&saved)));
    }

    // Docker's reference image, from the cache the docker half left.
    let reference_tag = format!("{REPOSITORY}:{}-docker", case.name);
    let held = hold_tag(&reference_tag);
    let reference_dockerfile = docker_dockerfile(harness, case, &context)?;
    let output = docker_build(
        &harness.docker,
        &reference_dockerfile,
        &context,
        &reference_tag,
        &options,
    );
    if !output.status.success() {
        return Err(format!("docker build: {}", tail(&output)));
    }
    let reference = docker_image(harness, &reference_tag, dir.path())?;
    drop(held);

    let mut report = String::new();
    let mut used = vec![false; case.allow.len()];
    let mut judge = |what: &str, image: Result<Image, String>| -> Result<(), String> {
        let image = image?;
        let differences = image::compare(&reference, &image, &harness.normalisation)
            .map_err(|e| format!("{what}: {e}"))?;
        let (allowed, denied): (Vec<Difference>, Vec<Difference>) =
            differences.into_iter().partition(|d| {
                case.allow.iter().enumerate().any(|(i, a)| {
                    let hit = a.matches(d);
                    used[i] |= hit;
                    hit
                })
            });
        if !denied.is_empty() {
            return Err(format!(
                "{what} differs from docker's image:\n{}",
                render(&denied, "docker", "berth")
            ));
        }
        if !allowed.is_empty() {
            report.push_str(&format!(
                "{what}: {} allowed difference(s); ",
                allowed.len()
            ));
        }
        Ok(())
    };
    judge(
        "berth save --format docker",
        Image::open(&docker_archive).map_err(|e| e.to_string()),
    )?;
    judge(
        "--output type=oci",
        Image::open(&oci_archive).map_err(|e| e.to_string()),
    )?;
    let loaded =
        run_command(Command::new(&harness.docker).args(["load", "-i", path_str(&docker_archive)]));
    if !loaded.status.success() {
        return Err(format!("docker load of berth's image: {}", tail(&loaded)));
    }
    let after_load = judge(
        "berth's image as docker saves it back",
        docker_image(harness, &tag, dir.path()),
    )
    .and_then(|()| run_image(harness, case, &tag));
    let _ = run_command(Command::new(&harness.docker).args(["rmi", &tag]));
    after_load?;
    let stale: Vec<&str> = case
        .allow
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|(a, _)| a.key.as_str())
        .collect();
    if !stale.is_empty() {
        report.push_str(&format!("allowances no longer needed: {stale:?}"));
    }
    Ok(if report.is_empty() {
        "equal to docker's".into()
    } else {
        report
    })
}

#[test]
fn berth_builds_match_docker() {
    let started = Instant::now();
    let harness = harness();
    let berth = common::berth_binary();
    let cases = selected(&harness.corpus);
    let results = for_each_case(&cases, |case| check_berth(harness, &berth, case));
    report(
        "berth half: berth build == docker build, docker load, docker run",
        &results,
        started,
    );
}

/// Each case's `classic` field says whether docker's classic builder (`DOCKER_BUILDKIT=0`)
/// builds it; this checks those claims. It documents the machine rather than judging berth.
#[test]
#[ignore = "documents docker's classic builder; run on demand"]
fn classic_builder_claims_hold() {
    let started = Instant::now();
    let harness = harness();
    let cases = selected(&harness.corpus);
    let results = for_each_case(&cases, |case| {
        let dir = tempfile::tempdir_in(&harness.work).map_err(|e| e.to_string())?;
        let context = case
            .prepare_context(&harness.corpus, &dir.path().join("context"))
            .map_err(|e| e.to_string())?;
        // The classic builder has no --secret: only build args and the target carry over.
        let options = BuildOptions {
            secrets: Vec::new(),
            ..BuildOptions::for_case(harness, case)
        };
        let tag = format!("{REPOSITORY}:{}-classic", case.name);
        let mut command = Command::new(&harness.docker);
        command
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-f"])
            .arg(harness.corpus.case_dir(case).join("Dockerfile"))
            .args(["-t", &tag])
            .args(options.args());
        let output = run_command(command.arg(&context));
        let _ = run_command(Command::new(&harness.docker).args(["rmi", &tag]));
        let as_expected = output.status.success() == (case.expect == Expect::Image);
        let claim = case.classic == json!(true);
        if as_expected == claim {
            Ok(match (claim, case.expect) {
                (true, Expect::Image) => "classic builds it".into(),
                (true, Expect::Failure) => "classic refuses it too".into(),
                (false, _) => format!("classic: {}", case.classic),
            })
        } else {
            Err(format!(
                "the case claims classic = {}, but: {}",
                case.classic,
                tail(&output)
            ))
        }
    });
    report("classic builder claims", &results, started);
}
