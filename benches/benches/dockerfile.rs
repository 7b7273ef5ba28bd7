//! Criterion benches of the Dockerfile front end on a generated 10,000-line Dockerfile: parsing,
//! lowering (typed stages, ARG/ENV scoping, word expansion, the scoped lint rules) and building
//! the stage graph (pruning, cycle check, step identities), each alone and all together.
//!
//! The Dockerfile is deterministic and shaped like a real multi-stage one: global ARGs used in
//! `FROM`, 40 stages built on images and on earlier stages, `ARG` and `ENV` with `${...}`
//! expansions, `RUN` with continuation lines, `--mount` flags and here-documents, `COPY --from`
//! of earlier stages, `COPY` here-documents, `LABEL`s and comments. The last stage reaches every
//! other one, so the graph holds them all.
//!
//! `cargo bench -p berth-benches --bench dockerfile`; the target is the whole front end in under
//! 20 ms. Each bench runs twice: `dockerfile/*` measures wall time, `dockerfile-cpu/*` the CPU
//! time of the benchmarking thread (`CLOCK_THREAD_CPUTIME_ID`), which other processes on a busy
//! machine barely move.

use std::fmt::Write as _;
use std::hint::black_box;

use berth_builder::graph::Graph;
use berth_builder::instructions::{BuildOptions, Lowered, lower};
use berth_builder::lint::Linter;
use berth_builder::parser::{self, Dockerfile};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The number of lines of the generated Dockerfile.
const LINES: usize = 10_000;

/// The number of stages.
const STAGES: usize = 40;

const PACKAGES: &[&str] = &[
    "ca-certificates",
    "curl",
    "git",
    "build-essential",
    "pkg-config",
    "libssl-dev",
    "zlib1g-dev",
    "python3",
    "unzip",
    "jq",
];

/// One stage of about `LINES / STAGES` lines.
fn stage(out: &mut String, i: usize) {
    let name = format!("stage-{i}");
    let _ = writeln!(out, "# Stage {i}: builds component {i} of the application.");
    match i % 4 {
        0 if i > 0 => {
            let _ = writeln!(out, "FROM stage-{} AS {name}", i - 1);
        }
        1 => {
            let _ = writeln!(
                out,
                "FROM --platform=$BUILDPLATFORM ${{REGISTRY}}/library/golang:${{GO_VERSION}}-alpine${{ALPINE_VERSION}} AS {name}"
            );
        }
        2 => {
            let _ = writeln!(
                out,
                "FROM ${{REGISTRY}}/library/debian:${{DEBIAN_RELEASE:-bookworm}}-slim AS {name}"
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "FROM ${{REGISTRY}}/library/alpine:${{ALPINE_VERSION}} AS {name}"
            );
        }
    }
    let _ = writeln!(out, "ARG GO_VERSION");
    let _ = writeln!(out, "ARG TARGETOS TARGETARCH");
    let _ = writeln!(out, "ARG VERSION=1.{i}.0");
    let _ = writeln!(out, "ARG COMPONENT_{i}=component-{i}");
    let _ = writeln!(
        out,
        "ENV APP_HOME=/opt/app-${{VERSION}} \\\n    PATH=/opt/{name}/bin:$PATH \\\n    GOFLAGS=\"-mod=vendor -trimpath\" \\\n    CGO_ENABLED=0"
    );
    let _ = writeln!(
        out,
        "ENV BUILD_DIR=${{APP_HOME}}/build/${{COMPONENT_{i}:-default}} CACHE=${{XDG_CACHE_HOME:-/root/.cache}}"
    );
    let _ = writeln!(out, "WORKDIR ${{APP_HOME}}/src");
    let _ = writeln!(
        out,
        "LABEL org.opencontainers.image.title=\"{name}\" \\\n      org.opencontainers.image.version=\"${{VERSION}}\" \\\n      com.example.component=${{COMPONENT_{i}}}"
    );
    out.push('\n');

    let start = out.len();
    let lines_before = out.lines().count();
    let mut step = 0;
    // Fill up to the stage's share of the lines, leaving room for its tail and for the last
    // stage.
    let budget = (i + 1) * (LINES - 2 * STAGES) / (STAGES - 1) - 10;
    while lines_before + out[start..].lines().count() < budget {
        step += 1;
        let _ = writeln!(out, "# Step {step} of {name}.");
        match step % 6 {
            0 => {
                // An install with continuation lines.
                let _ = writeln!(out, "RUN set -eux; \\");
                let _ = writeln!(out, "    apt-get update; \\");
                for p in PACKAGES.iter().cycle().skip(step % PACKAGES.len()).take(6) {
                    let _ = writeln!(
                        out,
                        "    apt-get install -y --no-install-recommends {p}; \\"
                    );
                }
                let _ = writeln!(out, "    rm -rf /var/lib/apt/lists/*");
            }
            1 => {
                // A here-document script.
                let _ = writeln!(out, "RUN <<EOF");
                let _ = writeln!(out, "set -e");
                let _ = writeln!(out, "mkdir -p \"$BUILD_DIR/{step}\"");
                let _ = writeln!(out, "cd \"$BUILD_DIR/{step}\"");
                let _ = writeln!(
                    out,
                    "echo \"building {name} step {step} for $TARGETOS/$TARGETARCH\""
                );
                let _ = writeln!(out, "go build -o /out/{name}-{step} ./cmd/{step}");
                let _ = writeln!(out, "EOF");
            }
            2 => {
                // Cache and bind mounts, flags over continuation lines.
                let _ = writeln!(
                    out,
                    "RUN --mount=type=cache,target=/root/.cache/go-build,id=go-{i},sharing=locked \\"
                );
                let _ = writeln!(out, "    --mount=type=bind,source=go.sum,target=go.sum \\");
                let _ = writeln!(
                    out,
                    "    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -ldflags=\"-X main.version=${{VERSION}}\" -o /out/{name}-{step} ./..."
                );
            }
            3 => {
                // Copies, from the context and from an earlier stage.
                let _ = writeln!(
                    out,
                    "COPY --chown=1000:1000 --chmod=0644 config/{step}.yaml ${{APP_HOME}}/etc/"
                );
                if i > 0 {
                    let from = (i + step) % i;
                    let _ = writeln!(
                        out,
                        "COPY --from=stage-{from} /out/ ${{APP_HOME}}/vendor/stage-{from}/"
                    );
                } else {
                    let _ = writeln!(out, "COPY . ${{APP_HOME}}/src/");
                }
            }
            4 => {
                // A file written by a here-document, expanded.
                let _ = writeln!(out, "COPY <<EOF ${{APP_HOME}}/etc/{step}.env");
                let _ = writeln!(out, "VERSION=${{VERSION}}");
                let _ = writeln!(out, "COMPONENT=${{COMPONENT_{i}}}");
                let _ = writeln!(out, "HOME=${{APP_HOME:-/opt/app}}");
                let _ = writeln!(out, "EOF");
            }
            _ => {
                // Scope changes between steps.
                let _ = writeln!(out, "ARG STEP_{step}=${{VERSION%%.*}}-{step}");
                let _ = writeln!(
                    out,
                    "ENV STEP_DIR_{step}=${{BUILD_DIR}}/${{STEP_{step}}} LAST_STEP={step}"
                );
                let _ = writeln!(out, "WORKDIR ${{STEP_DIR_{step}}}");
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "USER 1000:1000");
    let _ = writeln!(out, "EXPOSE {}/tcp", 8000 + i);
    let _ = writeln!(
        out,
        "HEALTHCHECK --interval=30s --timeout=3s CMD [\"/out/{name}-1\", \"health\"]"
    );
    let _ = writeln!(out, "ENTRYPOINT [\"/out/{name}-1\"]");
    let _ = writeln!(out, "CMD [\"serve\", \"--port\", \"{}\"]", 8000 + i);
    out.push('\n');
}

/// The Dockerfile: exactly [`LINES`] lines.
fn generate() -> String {
    let mut out = String::with_capacity(LINES * 48);
    out.push_str("# syntax=docker/dockerfile:1\n");
    out.push_str("ARG REGISTRY=docker.io\n");
    out.push_str("ARG GO_VERSION=1.22\n");
    out.push_str("ARG ALPINE_VERSION=3.19\n");
    out.push_str("ARG DEBIAN_RELEASE\n\n");
    for i in 0..STAGES - 1 {
        stage(&mut out, i);
    }
    // The target: it copies from every other stage, so the build needs them all.
    out.push_str("FROM scratch AS release\n");
    for i in 0..STAGES - 1 {
        let _ = writeln!(out, "COPY --from=stage-{i} /out/ /bin/");
    }
    out.push_str("ENTRYPOINT [\"/bin/stage-0-1\"]\n");
    let mut lines = out.lines().count();
    assert!(lines <= LINES, "the generator wrote {lines} lines");
    while lines < LINES {
        out.push_str("# padding\n");
        lines += 1;
    }
    out
}

fn parse(source: &str) -> Dockerfile {
    parser::parse(source, "Dockerfile").expect("the generated Dockerfile parses")
}

fn lower_all(dockerfile: &Dockerfile) -> Lowered {
    let mut linter = Linter::new(dockerfile.check.clone());
    lower(dockerfile, &BuildOptions::default(), &mut linter)
        .unwrap_or_else(|e| panic!("the generated Dockerfile lowers:\n{e}"))
}

/// The CPU time of the calling thread, in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Durations print as wall time's do.
static WALL_TIME: WallTime = WallTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL_TIME.formatter()
    }
}

/// The generated Dockerfile and what each stage makes of it.
struct Inputs {
    source: String,
    dockerfile: Dockerfile,
    lowered: Lowered,
}

fn inputs() -> Inputs {
    let source = generate();
    let dockerfile = parse(&source);
    let lowered = lower_all(&dockerfile);
    let graph = Graph::build(&lowered, None).expect("the graph builds");
    let steps: usize = graph.stages().iter().map(|s| s.steps.len()).sum();
    eprintln!(
        "Dockerfile: {} lines, {} bytes, {} instructions, {} stages, {} steps in the graph",
        source.lines().count(),
        source.len(),
        dockerfile.instructions.len(),
        graph.stages().len(),
        steps
    );
    assert_eq!(source.lines().count(), LINES);
    assert_eq!(graph.stages().len(), STAGES, "the target needs every stage");
    Inputs {
        source,
        dockerfile,
        lowered,
    }
}

fn group<M: Measurement>(c: &mut Criterion<M>, name: &str, inputs: &Inputs) {
    let Inputs {
        source,
        dockerfile,
        lowered,
    } = inputs;
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(source.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| parser::parse(black_box(source), "Dockerfile"))
    });
    g.bench_function("lower", |b| {
        b.iter(|| {
            let mut linter = Linter::new(dockerfile.check.clone());
            lower(black_box(dockerfile), &BuildOptions::default(), &mut linter)
        })
    });
    g.bench_function("graph", |b| {
        b.iter(|| Graph::build(black_box(lowered), None))
    });
    g.bench_function("parse+lower+graph", |b| {
        b.iter(|| {
            let dockerfile = parse(black_box(source));
            let lowered = lower_all(&dockerfile);
            Graph::build(&lowered, None).expect("the graph builds")
        })
    });
    g.finish();
}

fn wall_time(c: &mut Criterion) {
    group(c, "dockerfile", &inputs());
}

fn cpu_time(c: &mut Criterion<ThreadCpuTime>) {
    group(c, "dockerfile-cpu", &inputs());
}

criterion_group!(wall, wall_time);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu_time
}
criterion_main!(wall, cpu);
