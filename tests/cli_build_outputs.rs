//! `berth build`'s outputs and flags, as buildx has them: `--output` of every type (`oci`,
//! `docker`, `local`, `tar`, to files and to stdout), `--load`, `--metadata-file`,
//! `--iidfile`, `--progress plain|tty|quiet` and `-q`, `--network` and `--compression`, and
//! the errors of outputs that make no sense.
//!
//! Needs docker.io (the daemon is started if it does not answer), runc and busybox-static.

mod build_support;
mod registry_support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use build_support::*;
use registry_support::*;
use serde_json::Value;

/// A store with a busybox base named `base`, and a context whose Dockerfile adds a file by
/// RUN, deletes one of the base's and copies one from the context.
fn setup(work: &Path, label: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let root = work.join("root");
    let base = format!("localhost/berth-test/{label}-base:{}", std::process::id());
    load_busybox_base(work, &root, &base);
    let context = work.join("context");
    write_context(
        &context,
        &[
            ("hello.txt", "hello from the context\n"),
            (
                "Dockerfile",
                &format!(
                    "FROM {base}\n\
                     RUN echo made > /made.txt && rm /etc/doomed\n\
                     COPY hello.txt /hello.txt\n\
                     CMD [\"cat\", \"/made.txt\", \"/hello.txt\"]\n"
                ),
            ),
        ],
    );
    (root, context, base)
}

#[test]
fn every_output_type_writes_the_image() {
    ensure_docker();
    require_tool("/usr/sbin/runc", "runc");
    let work = tempfile::tempdir().unwrap();
    let (root, context, _) = setup(work.path(), "outputs");
    let name = format!("localhost/berth-test/outputs-app:{}", std::process::id());
    let _cleanup = DockerImages(vec![name.clone()]);
    let out = work.path().join("out");
    let oci = out.join("nested/app-oci.tar");
    let docker = out.join("app-docker.tar");
    let local = out.join("rootfs");
    let rootfs_tar = out.join("rootfs.tar");
    let layout = out.join("layout");
    let metadata = out.join("metadata.json");
    let iidfile = out.join("iid");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("kept.txt"), "already here\n").unwrap();
    let (stdout, stderr) = berth(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            &name,
            "-o",
            &format!("type=oci,dest={}", oci.display()),
            "--output",
            &format!("type=docker,dest={}", docker.display()),
            "-o",
            &format!("type=local,dest={}", local.display()),
            "-o",
            &format!("type=tar,dest={}", rootfs_tar.display()),
            "-o",
            &format!("type=oci,tar=false,dest={}", layout.display()),
            "--metadata-file",
            metadata.to_str().unwrap(),
            "--iidfile",
            iidfile.to_str().unwrap(),
            context.to_str().unwrap(),
        ],
    );
    let id = stdout.trim();
    assert!(id.starts_with("sha256:"), "{stdout}");
    assert_eq!(fs::read_to_string(&iidfile).unwrap(), id);
    assert!(stderr.contains("exporting to oci image format"), "{stderr}");
    assert!(stderr.contains("exporting to client directory"), "{stderr}");
    assert!(stderr.contains("writing layer sha256:"), "{stderr}");

    // --metadata-file, as buildx writes it.
    let meta: Value = serde_json::from_str(&fs::read_to_string(&metadata).unwrap()).unwrap();
    assert_eq!(meta["containerimage.config.digest"], id, "{meta}");
    assert_eq!(meta["image.name"], name.as_str(), "{meta}");
    let digest = meta["containerimage.digest"].as_str().unwrap().to_owned();
    assert_eq!(meta["containerimage.descriptor"]["digest"], digest.as_str());
    assert_eq!(
        meta["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        meta["containerimage.descriptor"]["annotations"]["config.digest"],
        id
    );
    assert!(meta["containerimage.descriptor"]["size"].as_u64().unwrap() > 0);

    // type=oci: an OCI layout tar whose index names the image, and the same as a directory.
    let oci_bytes = fs::read(&oci).unwrap();
    let index: Value =
        serde_json::from_slice(&tar_member(&oci_bytes, "index.json").unwrap()).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], digest.as_str(), "{index}");
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"],
        name.as_str(),
        "{index}"
    );
    assert!(tar_member(&oci_bytes, "oci-layout").is_some());
    let hex = digest.strip_prefix("sha256:").unwrap();
    assert!(layout.join("blobs/sha256").join(hex).is_file());
    assert!(layout.join("index.json").is_file());

    // type=docker: docker loads it under its name, with the same id.
    let loaded = run(Command::new(DOCKER).args(["load", "-i", docker.to_str().unwrap()]));
    assert!(
        loaded.contains(&format!("Loaded image: {name}")),
        "{loaded}"
    );
    let docker_id =
        run(Command::new(DOCKER).args(["image", "inspect", "--format", "{{.Id}}", &name]));
    assert_eq!(docker_id.trim(), id);
    let ran = run(Command::new(DOCKER).args(["run", "--rm", &name]));
    assert_eq!(ran, "made\nhello from the context\n");

    // type=local: the root filesystem, merged into what the directory held.
    assert_eq!(
        fs::read_to_string(local.join("made.txt")).unwrap(),
        "made\n"
    );
    assert_eq!(
        fs::read_to_string(local.join("hello.txt")).unwrap(),
        "hello from the context\n"
    );
    assert_eq!(
        fs::read_to_string(local.join("kept.txt")).unwrap(),
        "already here\n"
    );
    assert!(local.join("bin/busybox").is_file());
    assert!(!local.join("etc/doomed").exists());
    assert!(
        fs::symlink_metadata(local.join("bin/sh"))
            .unwrap()
            .is_symlink()
    );

    // type=tar: the same tree as a tar.
    let members = tar_members(&fs::read(&rootfs_tar).unwrap());
    let has = |m: &str| {
        members
            .iter()
            .any(|n| n.trim_start_matches("./").trim_end_matches('/') == m)
    };
    assert!(
        has("made.txt") && has("hello.txt") && has("bin/busybox"),
        "{members:?}"
    );
    assert!(!has("etc/doomed"), "{members:?}");
    assert!(active_snapshots(&root).is_empty());
}

#[test]
fn outputs_to_stdout_leave_the_id_out() {
    require_tool("/usr/sbin/runc", "runc");
    let work = tempfile::tempdir().unwrap();
    let (root, context, _) = setup(work.path(), "stdout");
    let out = berth_out(&root, &["build", "-o", "-", context.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let members = tar_members(&out.stdout);
    assert!(
        members.iter().any(|m| m.ends_with("made.txt")),
        "{members:?}"
    );

    let out = berth_out(
        &root,
        &[
            "build",
            "-q",
            "--output",
            "type=oci,dest=-",
            context.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tar_member(&out.stdout, "index.json").is_some());

    let stderr = berth_fails(
        &root,
        &[
            "build",
            "-o",
            "-",
            "-o",
            "type=oci",
            context.to_str().unwrap(),
        ],
    );
    assert!(
        stderr.contains("multiple outputs configured to write to stdout"),
        "{stderr}"
    );
}

#[test]
fn load_puts_the_image_into_docker() {
    ensure_docker();
    require_tool("/usr/sbin/runc", "runc");
    let work = tempfile::tempdir().unwrap();
    let (root, context, _) = setup(work.path(), "load");
    let name = format!("localhost/berth-test/load-app:{}", std::process::id());
    let _cleanup = DockerImages(vec![name.clone()]);
    let (stdout, stderr) = berth(
        &root,
        &["build", "--load", "-t", &name, context.to_str().unwrap()],
    );
    assert!(
        stderr.contains(&format!("Loaded image: {name}")),
        "{stderr}"
    );
    let docker_id =
        run(Command::new(DOCKER).args(["image", "inspect", "--format", "{{.Id}}", &name]));
    assert_eq!(docker_id.trim(), stdout.trim());
}

#[test]
fn bad_outputs_are_refused_before_building() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let context = work.path().join("context");
    write_context(&context, &[("Dockerfile", "FROM scratch\n")]);
    let ctx = context.to_str().unwrap();
    for (args, says) in [
        (vec!["-o", "type=nope"], "unknown output type \"nope\""),
        (
            vec!["-o", "type=oci,colour=red"],
            "unknown field \"colour\" for type=oci",
        ),
        (
            vec!["-o", "type=local"],
            "dest is required for local exporter",
        ),
        (vec!["--push"], "tag is needed when pushing to registry"),
        (
            vec!["-o", "type=registry"],
            "tag is needed when pushing to registry",
        ),
        (vec!["--compression", "lz4"], "unknown compression \"lz4\""),
        (
            vec![
                "--compression",
                "gzip",
                "-o",
                "type=oci,dest=x,compression=zstd",
            ],
            "different compressions",
        ),
        (vec!["--network", "bridge"], "invalid value 'bridge'"),
        (vec!["--progress", "fancy"], "invalid value 'fancy'"),
    ] {
        let mut all = vec!["build"];
        all.extend(args.iter().copied());
        all.push(ctx);
        let stderr = berth_fails(&root, &all);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn compression_sets_the_new_layers_media_type() {
    require_tool("/usr/sbin/runc", "runc");
    let work = tempfile::tempdir().unwrap();
    let (root, context, _) = setup(work.path(), "compression");
    for (flag, media_type) in [
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
        ("uncompressed", "application/vnd.oci.image.layer.v1.tar"),
        ("gzip", "application/vnd.oci.image.layer.v1.tar+gzip"),
    ] {
        let name = format!("localhost/berth-test/compressed:{flag}");
        berth(
            &root,
            &[
                "build",
                "--compression",
                flag,
                "-t",
                &name,
                context.to_str().unwrap(),
            ],
        );
        let (inspect, _) = berth(&root, &["inspect", &name]);
        let inspect: Value = serde_json::from_str(&inspect).unwrap();
        let layers = inspect[0]["Layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3, "{inspect}");
        // The base layer keeps its compression; the two new ones have the chosen one.
        assert_eq!(
            layers[0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        for layer in &layers[1..] {
            assert_eq!(layer["mediaType"], media_type, "{flag}: {inspect}");
        }
    }
    // The compression an output asks for is the build's.
    let oci = work.path().join("zstd-oci.tar");
    berth(
        &root,
        &[
            "build",
            "-o",
            &format!("type=oci,dest={},compression=zstd", oci.display()),
            context.to_str().unwrap(),
        ],
    );
    let bytes = fs::read(&oci).unwrap();
    let index: Value = serde_json::from_slice(&tar_member(&bytes, "index.json").unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: Value = serde_json::from_slice(
        &tar_member(&bytes, &format!("blobs/sha256/{}", &manifest[7..])).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["layers"][2]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
}

#[test]
fn network_is_the_default_of_run_steps() {
    require_tool("/usr/sbin/runc", "runc");
    let (work, root, base) = work_with_base("network-base");
    let context = work.path().join("context");
    write_context(
        &context,
        &[(
            "Dockerfile",
            &format!(
                "FROM {base}\n\
                 RUN cut -d: -f1 /proc/net/dev | tr -d ' ' | grep -v '|' > /interfaces\n\
                 RUN --network=host cut -d: -f1 /proc/net/dev | tr -d ' ' | grep -v '|' > /host-interfaces\n"
            ),
        )],
    );
    let interfaces = |network: &str| {
        let dir = work.path().join(format!("out-{network}"));
        berth(
            &root,
            &[
                "build",
                "--network",
                network,
                "-o",
                &format!("type=local,dest={}", dir.display()),
                context.to_str().unwrap(),
            ],
        );
        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
        (read("interfaces"), read("host-interfaces"))
    };
    let (none, host_step) = interfaces("none");
    assert_eq!(none.trim(), "lo", "{none}");
    // RUN --network still wins over the build's default.
    assert!(host_step.lines().count() > 1, "{host_step}");
    let (host, _) = interfaces("host");
    assert!(host.lines().count() > 1, "{host}");
    let (default, _) = interfaces("default");
    // The host's network, as `host` sees it. Other processes may add or remove interfaces
    // between the two builds (task bridges, veth pairs), so compare the ones both list.
    let listed = |s: &str| s.lines().map(str::to_owned).collect::<BTreeSet<String>>();
    let common: BTreeSet<String> = listed(&default)
        .intersection(&listed(&host))
        .cloned()
        .collect();
    assert!(
        common.len() > 1 && common.contains("lo"),
        "{default} / {host}"
    );
}

#[test]
fn progress_modes() {
    require_tool("/usr/sbin/runc", "runc");
    let work = tempfile::tempdir().unwrap();
    let (root, context, _) = setup(work.path(), "progress");
    let ctx = context.to_str().unwrap();

    let (stdout, stderr) = berth(&root, &["build", "--progress", "plain", ctx]);
    assert!(
        stderr.contains("#2 [stage-0 2/4] RUN echo made"),
        "{stderr}"
    );
    assert!(stderr.contains("#2 DONE "), "{stderr}");
    // Steps that make a layer name it and its size before they end.
    let layer_line = stderr
        .lines()
        .find(|l| l.starts_with("#3 writing layer sha256:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(layer_line.ends_with("B done"), "{layer_line}");
    assert!(stdout.trim().starts_with("sha256:"));

    for quiet in [
        &["build", "-q", ctx][..],
        &["build", "--progress", "quiet", ctx][..],
    ] {
        let (stdout, stderr) = berth(&root, quiet);
        assert!(stderr.is_empty(), "{quiet:?}: {stderr}");
        assert!(stdout.trim().starts_with("sha256:"), "{stdout}");
    }

    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        // Run again, not from the cache: the finished lines show the layers made.
        .args(["build", "--no-cache", "--progress", "tty", ctx])
        .env("BERTH_ROOT", &root)
        .env("BERTH_LOG", "warn")
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // One finished line per step, with the layer's size for steps that made one and the
    // time; the live view is drawn with escapes (indicatif fills each line to the terminal's
    // width instead of ending it) and ends with the summary.
    let run = stderr
        .split("\u{1b}[")
        .map(|s| s.split("[+]").next().unwrap().trim_end())
        .find(|s| s.contains(" => [stage-0 2/4] RUN echo made") && s.contains("B "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(run.ends_with('s'), "{run}");
    assert!(stderr.contains("\u{1b}["), "{stderr}");
    assert!(stderr.contains("[+] Building "), "{stderr}");
    assert!(stderr.contains("FINISHED"), "{stderr}");
}
