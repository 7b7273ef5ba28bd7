//! `berth build` end to end: a Dockerfile over a busybox base image in a temporary store,
//! built with RUN (through runc), COPY, ENV, WORKDIR and CMD, saved with `berth save`, and
//! run by `docker load` + `docker run`; and a failing RUN, whose error names the line and
//! which leaves no mount and no active snapshot behind.
//!
//! The base image is made by `build_support`: a static busybox tree made into a layer, packed
//! as an OCI archive and given to `berth load`. The outputs, progress displays and flags of
//! `berth build` are tested in `cli_build_outputs.rs`, pulls and pushes in
//! `cli_build_registry.rs`.
//!
//! Needs docker.io (the daemon is started if it does not answer), runc and busybox-static.
//! Without them the tests fail and say to run `scripts/setup.sh`.

mod build_support;
mod registry_support;

use std::fs;
use std::process::Command;

use build_support::*;
use registry_support::*;

#[test]
fn builds_an_image_that_docker_runs() {
    ensure_docker();
    require_tool("/usr/sbin/runc", "runc");
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let unique = std::process::id();
    let base = format!("localhost/berth-test/build-base:{unique}");
    let app = format!("localhost/berth-test/build-app:{unique}");
    let _cleanup = DockerImages(vec![app.clone()]);
    load_busybox_base(work.path(), &root, &base);

    let context = work.path().join("context");
    fs::create_dir_all(context.join("data")).unwrap();
    fs::write(context.join("greeting.txt"), "hello from the context\n").unwrap();
    fs::write(context.join("data/one.txt"), "one\n").unwrap();
    fs::write(context.join("ignored.txt"), "must not be copied\n").unwrap();
    fs::write(context.join(".dockerignore"), "ignored.txt\n").unwrap();
    fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM {base}\n\
             ENV GREETING=hi\n\
             WORKDIR /app\n\
             RUN echo \"$GREETING $BASE\" > made.txt && rm /etc/doomed\n\
             COPY greeting.txt data/ ./\n\
             COPY --chown=app:app --chmod=600 greeting.txt /home/app/own.txt\n\
             CMD [\"/bin/sh\", \"-c\", \"cat made.txt greeting.txt one.txt; pwd; test -e /etc/doomed || echo doomed-gone; test -e ignored.txt || echo ignored-absent; ls -ln /home/app/own.txt\"]\n"
        ),
    )
    .unwrap();
    let (stdout, stderr) = berth(&root, &["build", "-t", &app, context.to_str().unwrap()]);
    assert!(stderr.contains("#1 [stage-0 1/7] FROM"), "{stderr}");
    assert!(stderr.contains("[stage-0 4/7] RUN echo"), "{stderr}");
    assert!(stderr.contains("DONE "), "{stderr}");
    let id = stdout.trim();
    assert!(id.starts_with("sha256:"), "{stdout}");

    let saved = work.path().join("app.tar");
    berth(&root, &["save", "-o", saved.to_str().unwrap(), &app]);
    let loaded = run(Command::new(DOCKER).args(["load", "-i", saved.to_str().unwrap()]));
    assert!(loaded.contains(&format!("Loaded image: {app}")), "{loaded}");
    let docker_id =
        run(Command::new(DOCKER).args(["image", "inspect", "--format", "{{.Id}}", &app]));
    assert_eq!(docker_id.trim(), id);
    let out = run(Command::new(DOCKER).args(["run", "--rm", &app]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..6],
        [
            "hi from-base",
            "hello from the context",
            "one",
            "/app",
            "doomed-gone",
            "ignored-absent",
        ],
        "{out}"
    );
    assert!(lines[6].starts_with("-rw-------"), "{out}");
    assert!(
        lines[6].contains(" 1000 ") && lines[6].contains("1000"),
        "{out}"
    );

    let env = run(Command::new(DOCKER).args([
        "image",
        "inspect",
        "--format",
        "{{json .Config.Env}} {{.Config.WorkingDir}}",
        &app,
    ]));
    assert!(
        env.contains("GREETING=hi") && env.contains("BASE=from-base"),
        "{env}"
    );
    assert!(env.trim().ends_with("/app"), "{env}");
    assert!(active_snapshots(&root).is_empty());
}

#[test]
fn a_failing_run_names_its_line_and_leaves_nothing_behind() {
    require_tool("/usr/sbin/runc", "runc");
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let unique = std::process::id();
    let base = format!("localhost/berth-test/fail-base:{unique}");
    load_busybox_base(work.path(), &root, &base);
    let context = work.path().join("context");
    fs::create_dir_all(&context).unwrap();
    fs::write(
        context.join("Dockerfile"),
        format!("FROM {base}\nRUN echo fine > /fine\nRUN echo about to fail; exit 3\nCMD true\n"),
    )
    .unwrap();
    let out = berth_out(
        &root,
        &[
            "build",
            "-t",
            "localhost/never:1",
            context.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("Dockerfile:3"), "{stderr}");
    assert!(
        stderr.contains("RUN echo about to fail; exit 3"),
        "{stderr}"
    );
    assert!(stderr.contains("exit code: 3"), "{stderr}");
    assert!(stderr.contains("#3 ERROR: process"), "{stderr}");
    assert!(stderr.contains("about to fail"), "{stderr}");
    assert!(
        mounts_under(work.path()).is_empty(),
        "{:?}",
        mounts_under(work.path())
    );
    assert!(
        active_snapshots(&root).is_empty(),
        "{:?}",
        active_snapshots(&root)
    );
    let (images, _) = berth(&root, &["images", "--format", "json"]);
    assert!(!images.contains("localhost/never"), "{images}");
}

#[test]
fn copy_from_takes_files_from_an_earlier_stage_and_add_from_the_context() {
    require_tool("/usr/sbin/runc", "runc");
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let unique = std::process::id();
    let base = format!("localhost/berth-test/stages-base:{unique}");
    load_busybox_base(work.path(), &root, &base);
    let context = work.path().join("context");
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("extra.txt"), "extra\n").unwrap();
    fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM {base} AS builder\n\
             RUN mkdir -p /out && echo built > /out/artifact && ln -s artifact /out/link\n\
             FROM {base}\n\
             COPY --from=builder /out/ /dist/\n\
             COPY --from=builder /out/artifact /single\n\
             ADD extra.txt /added.txt\n\
             RUN test \"$(cat /dist/artifact)\" = built && test -L /dist/link \
                 && test \"$(cat /single)\" = built && test ! -e /out \
                 && test \"$(cat /added.txt)\" = extra\n"
        ),
    )
    .unwrap();
    let (stdout, stderr) = berth(&root, &["build", context.to_str().unwrap()]);
    assert!(stdout.trim().starts_with("sha256:"), "{stdout}");
    assert!(stderr.contains("[builder 2/2] RUN mkdir"), "{stderr}");
    assert!(stderr.contains("[stage-1 5/5] RUN test"), "{stderr}");
    assert!(active_snapshots(&root).is_empty());
}
