//! `berth registry serve` against real clients: `docker push`, `docker pull`, `docker run`, and
//! `skopeo inspect` and `skopeo copy`; and, with token authentication on, `docker login` with
//! a credential from `berth registry credential`, and skopeo with `--creds`.
//!
//! Needs docker.io (the daemon is started if it does not answer), skopeo and busybox-static.
//! Without them the test fails and says to run `scripts/setup.sh`.

mod registry_support;

use std::process::Command;

use registry_support::*;

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

/// A root filesystem with a static busybox as `/bin/busybox` and `/bin/sh`, as a tar.
fn busybox_rootfs_tar(dir: &std::path::Path) -> std::path::PathBuf {
    require_tool(BUSYBOX, "busybox-static");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    let tar = dir.join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    tar
}

#[test]
fn docker_push_pull_run_and_skopeo() {
    ensure_docker();
    require_tool(SKOPEO, "skopeo");
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("registry");
    let mut server = Server::start(&root);
    let tar = busybox_rootfs_tar(work.path());

    let unique = std::process::id();
    let image = format!("{}/test/busybox:{unique}", server.addr);
    let copied = format!("{}/test/copied:{unique}", server.addr);
    let _cleanup = DockerImages(vec![image.clone(), copied.clone()]);

    run(Command::new(DOCKER).arg("import").arg(&tar).arg(&image));
    let pushed = run(Command::new(DOCKER).args(["push", &image]));
    assert!(
        pushed.contains("digest: sha256:"),
        "docker push said: {pushed}"
    );
    run(Command::new(DOCKER).args(["rmi", &image]));
    run(Command::new(DOCKER).args(["pull", &image]));
    let out = run(Command::new(DOCKER).args(["run", "--rm", &image, "/bin/busybox", "echo", "ok"]));
    assert_eq!(out.trim(), "ok");

    let inspect = run(Command::new(SKOPEO).args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]));
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["RepoTags"], serde_json::json!([unique.to_string()]));
    assert_eq!(inspect["Os"], "linux");
    let digest = inspect["Digest"].as_str().unwrap().to_owned();
    assert!(pushed.contains(&digest), "{pushed} vs {digest}");

    // skopeo copies within the registry (HEAD, mount, manifest push) and docker pulls the copy.
    run(Command::new(SKOPEO).args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{image}"),
        &format!("docker://{copied}"),
    ]));
    run(Command::new(DOCKER).args(["pull", &copied]));
    let out =
        run(Command::new(DOCKER).args(["run", "--rm", &copied, "/bin/busybox", "echo", "copied"]));
    assert_eq!(out.trim(), "copied");

    // skopeo can also take the image out as an OCI layout.
    let layout = work.path().join("layout");
    run(Command::new(SKOPEO).args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci:{}:v", layout.display()),
    ]));
    assert!(layout.join("index.json").is_file());

    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

/// Runs `cmd` and returns its combined output, expecting it to fail.
fn fails(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(!out.status.success(), "{cmd:?} succeeded");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn docker_and_skopeo_log_in_to_a_registry_with_token_authentication() {
    ensure_docker();
    require_tool(SKOPEO, "skopeo");
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("registry.key");
    let config = work.path().join("registry.json");
    std::fs::write(
        &config,
        serde_json::json!({"auth": {"key_file": key, "service": "berth-test"}}).to_string(),
    )
    .unwrap();
    // The key is the operator's: made here, read by the registry and by `credential`.
    run(Command::new("sh").arg("-c").arg(format!(
        "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {}",
        key.display()
    )));
    let mut server = Server::start_with(
        &work.path().join("registry"),
        "127.0.0.1:0",
        &["--config", config.to_str().unwrap()],
    );
    let credential = credential(&key, "ci", "pull,push:team/*");
    let tar = busybox_rootfs_tar(work.path());
    let unique = std::process::id();
    let image = format!("{}/team/app:{unique}", server.addr);
    let outside = format!("{}/other/app:{unique}", server.addr);
    let _cleanup = DockerImages(vec![image.clone(), outside.clone()]);
    let client_config = work.path().join("docker");
    let docker = || {
        let mut command = Command::new(DOCKER);
        command.arg("--config").arg(&client_config);
        command
    };

    // Anonymous: refused.
    run(docker().arg("import").arg(&tar).arg(&image));
    run(docker().args(["tag", &image, &outside]));
    let refused = fails(docker().args(["push", &image]));
    assert!(
        refused.contains("unauthorized") || refused.contains("authentication required"),
        "{refused}"
    );

    // docker login trades the credential at the token endpoint, then push and pull work
    // within the credential's repositories only.
    let mut login = docker()
        .args(["login", &server.addr, "-u", "ci", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        login
            .stdin
            .take()
            .unwrap()
            .write_all(credential.as_bytes())
            .unwrap();
    }
    let login = login.wait_with_output().unwrap();
    assert!(
        login.status.success(),
        "docker login: {}",
        String::from_utf8_lossy(&login.stderr)
    );
    let pushed = run(docker().args(["push", &image]));
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    let denied = fails(docker().args(["push", &outside]));
    assert!(
        denied.contains("denied") || denied.contains("unauthorized"),
        "{denied}"
    );
    run(docker().args(["rmi", &image]));
    run(docker().args(["pull", &image]));
    let out = run(docker().args(["run", "--rm", &image, "/bin/busybox", "echo", "ok"]));
    assert_eq!(out.trim(), "ok");

    // skopeo with the same credential; without it, nothing.
    let inspect = run(Command::new(SKOPEO).args([
        "inspect",
        "--tls-verify=false",
        "--creds",
        &format!("ci:{credential}"),
        &format!("docker://{image}"),
    ]));
    assert!(inspect.contains("\"Digest\""), "{inspect}");
    fails(Command::new(SKOPEO).args([
        "inspect",
        "--tls-verify=false",
        "--no-creds",
        &format!("docker://{image}"),
    ]));

    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}
