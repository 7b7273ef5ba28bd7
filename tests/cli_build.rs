//! `berth build` end to end: a Dockerfile over a busybox base image in a temporary store,
//! built with RUN (through runc), COPY, ENV, WORKDIR and CMD, saved with `berth save`, and
//! run by `docker load` + `docker run`; and a failing RUN, whose error names the line and
//! which leaves no mount and no active snapshot behind.
//!
//! The base image is made here: a static busybox tree with its links and `/etc/passwd`, made
//! into a layer by `berth layer create`, with a config and a manifest written here, packed as
//! an OCI archive and given to `berth load`.
//!
//! Needs docker.io (the daemon is started if it does not answer), runc and busybox-static.
//! Without them the tests fail and say to run `scripts/setup.sh`.

mod registry_support;

use std::fs;
use std::path::Path;
use std::process::Command;

use berth_layerstore::Digest;
use registry_support::*;
use serde_json::{Value, json};

/// Runs berth and returns (stdout, stderr), panicking with its stderr when it fails.
fn berth(root: &Path, args: &[&str]) -> (String, String) {
    let out = berth_out(root, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "berth {args:?} failed with {}:\nstdout: {stdout}\nstderr: {stderr}",
        out.status,
    );
    (stdout, stderr)
}

/// Removes images from the daemon when dropped, so a failing test leaves nothing behind.
struct DockerImages(Vec<String>);

impl Drop for DockerImages {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new(DOCKER)
                .args(["rmi", "--force", image])
                .output();
        }
    }
}

/// Loads a busybox base image named `name` into the store under `root`.
fn load_busybox_base(dir: &Path, root: &Path, name: &str) {
    require_tool(BUSYBOX, "busybox-static");
    let tree = dir.join("base");
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::create_dir_all(tree.join("tmp")).unwrap();
    fs::copy(BUSYBOX, tree.join("bin/busybox")).unwrap();
    for link in [
        "sh", "echo", "cat", "rm", "ls", "test", "mkdir", "pwd", "id", "false",
    ] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(link)).unwrap();
    }
    fs::write(
        tree.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(tree.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    fs::write(tree.join("etc/doomed"), "to be deleted\n").unwrap();
    let layer_file = dir.join("base.tar.gz");
    let (out, _) = berth(
        &dir.join("unused-root"),
        &[
            "layer",
            "create",
            tree.to_str().unwrap(),
            "-o",
            layer_file.to_str().unwrap(),
        ],
    );
    let layer: Value = serde_json::from_str(&out).unwrap();
    let layer_bytes = fs::read(&layer_file).unwrap();
    let config = json!({
        "created": "2026-01-02T03:04:05Z",
        "architecture": go_arch(),
        "os": "linux",
        "config": {"Env": ["PATH=/bin", "BASE=from-base"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer["diff_id"]]},
        "history": [{"created": "2026-01-02T03:04:05Z", "created_by": "cli_build base"}],
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let manifest_bytes = manifest_over(&config_bytes, &layer);
    let root_descriptor = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": Digest::sha256(&manifest_bytes).to_string(),
        "size": manifest_bytes.len(),
    });
    let archive = dir.join("base-oci.tar");
    pack_oci(
        &archive,
        &[&layer_bytes, &config_bytes, &manifest_bytes],
        root_descriptor,
        name,
    );
    berth(root, &["load", "-i", archive.to_str().unwrap()]);
}

/// Active snapshots left in the store under `root`.
fn active_snapshots(root: &Path) -> Vec<String> {
    match fs::read_dir(root.join("snapshots/active")) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Lines of `/proc/self/mountinfo` that mention `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

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
