//! `berth build` with `RUN --mount`, `--secret` and `--ssh`: a secret reaches the step that
//! mounts it and nothing else (no layer, no config, no history, no file left in the store); a
//! required secret that was not given fails its step by name; an SSH agent socket reaches the
//! steps that mount it (connections arrive at the agent) and no layer, a required one that was
//! not given fails its step, an optional one is skipped; a cache outlives the build that filled
//! it, and a read-write bind of the context leaves the context as it was.
//!
//! Needs runc and busybox-static (root, as every RUN test); without them the tests fail and say
//! to run `scripts/setup.sh`.

mod build_support;
mod registry_support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use build_support::*;
use registry_support::*;

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A blob as stored, and decompressed when it is a gzip or zstd stream.
fn blob_bytes(blob: &[u8]) -> Vec<u8> {
    if blob.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut out)
            .unwrap();
        out
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::decode_all(blob).unwrap()
    } else {
        blob.to_vec()
    }
}

/// The regular files of a layer, by path; `None` when `bytes` is not a tar stream.
fn layer_files(bytes: &[u8]) -> Option<BTreeMap<String, Vec<u8>>> {
    if bytes.len() < 1024 || &bytes[257..262] != b"ustar" {
        return None;
    }
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        let path = entry.path().ok()?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).ok()?;
        out.insert(path.trim_start_matches("./").to_owned(), data);
    }
    Some(out)
}

/// The layers of an OCI archive, decompressed, as their files.
fn oci_layers(archive: &[u8]) -> Vec<BTreeMap<String, Vec<u8>>> {
    tar_members(archive)
        .iter()
        .filter(|name| name.contains("blobs/"))
        .filter_map(|name| layer_files(&blob_bytes(&tar_member(archive, name).unwrap())))
        .collect()
}

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && fs::read(&path).is_ok_and(|b| contains(&blob_bytes(&b), needle))
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn secrets_never_reach_a_layer_the_history_or_the_store() {
    require_tool("/usr/sbin/runc", "runc");
    let (work, root, base) = work_with_base("mounts-base");

    let secret = format!("berth-secret-{}-do-not-leak", std::process::id());
    let secret_file = work.path().join("token.txt");
    fs::write(&secret_file, &secret).unwrap();
    let context = work.path().join("context");
    write_context(
        &context,
        &[(
            "Dockerfile",
            &format!(
                "FROM {base}\n\
                 RUN --mount=type=secret,id=token cat /run/secrets/token > /dev/null && \
                     test -s /run/secrets/token\n\
                 RUN --mount=type=secret,id=token,target=/etc/app-token,mode=0440,uid=1000,env=TOKEN \
                     test \"$TOKEN\" = \"$(cat /etc/app-token)\" && \
                     busybox stat -c '%a %u' /etc/app-token > /mode.txt && \
                     echo \"${{#TOKEN}}\" > /length.txt\n\
                 RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent\n"
            ),
        )],
    );
    let oci = work.path().join("image.tar");
    let (_, stderr) = berth(
        &root,
        &[
            "build",
            "-t",
            "secret-test",
            "--secret",
            &format!("id=token,src={}", secret_file.display()),
            "--output",
            &format!("type=oci,dest={}", oci.display()),
            context.to_str().unwrap(),
        ],
    );
    assert!(!stderr.contains(&secret), "the progress shows the secret");

    // Every blob of the image (layers decompressed, the config with its history, manifests).
    let archive = fs::read(&oci).unwrap();
    for name in tar_members(&archive) {
        let bytes = blob_bytes(&tar_member(&archive, &name).unwrap());
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "the secret is in {name}"
        );
    }
    let mut layers_seen = 0;
    for files in oci_layers(&archive) {
        if !files.contains_key("mode.txt") {
            continue;
        }
        layers_seen += 1;
        // The step's own files are there; the secret's target is not.
        assert_eq!(files["mode.txt"], b"440 1000\n");
        assert_eq!(
            files["length.txt"],
            format!("{}\n", secret.len()).into_bytes()
        );
        assert!(
            !files.keys().any(|m| m.contains("app-token")),
            "{:?}",
            files.keys()
        );
    }
    assert_eq!(layers_seen, 1, "the layer of the second RUN");
    // Nor anywhere in the store: not in a blob, a snapshot, the sandbox's state or a cache.
    assert_eq!(
        files_holding(&root, secret.as_bytes()),
        Vec::<String>::new()
    );
    assert!(mounts_under(&root).is_empty(), "{:?}", mounts_under(&root));
}

#[test]
fn a_missing_required_secret_fails_its_step_by_name() {
    require_tool("/usr/sbin/runc", "runc");
    let (work, root, base) = work_with_base("mounts-base");
    let context = work.path().join("context");
    write_context(
        &context,
        &[(
            "Dockerfile",
            &format!(
                "FROM {base}\n\
                 RUN true\n\
                 RUN --mount=type=secret,id=api-key,required=true cat /run/secrets/api-key\n"
            ),
        )],
    );
    let stderr = berth_fails(&root, &["build", context.to_str().unwrap()]);
    assert!(stderr.contains("Dockerfile:3"), "{stderr}");
    assert!(stderr.contains("secret api-key"), "{stderr}");
    assert!(stderr.contains("--secret id=api-key"), "{stderr}");
    assert!(active_snapshots(&root).is_empty());
    assert!(mounts_under(&root).is_empty(), "{:?}", mounts_under(&root));
}

/// A stand-in for an SSH agent: a socket at `path` whose connections are each read to the end
/// on a thread, what they sent recorded in the returned list.
fn fake_agent(path: &Path) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let listener = UnixListener::bind(path).unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let record = record.clone();
            std::thread::spawn(move || {
                let mut data = Vec::new();
                let _ = stream.read_to_end(&mut data);
                record.lock().unwrap().push(data);
            });
        }
    });
    received
}

#[test]
fn ssh_agents_reach_the_steps_that_mount_them_and_no_layer() {
    require_tool("/usr/sbin/runc", "runc");
    let (work, root, base) = work_with_base("mounts-base");
    let agent = work.path().join("agent.sock");
    let received = fake_agent(&agent);
    let context = work.path().join("context");
    write_context(
        &context,
        &[(
            "Dockerfile",
            &format!(
                "FROM {base}\n\
                 RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && \
                     test \"$SSH_AUTH_SOCK\" = /run/buildkit/ssh_agent.0 && \
                     busybox stat -c '%a %u %g' \"$SSH_AUTH_SOCK\" > /default-mode.txt\n\
                 RUN --mount=type=ssh,id=git,target=/tmp/git.sock,mode=0660,uid=1000,gid=1000 \
                     --mount=type=ssh \
                     test \"$SSH_AUTH_SOCK\" = /tmp/git.sock && test -S /run/buildkit/ssh_agent.1 && \
                     busybox stat -c '%a %u %g' /tmp/git.sock > /git-mode.txt\n\
                 RUN --mount=type=ssh,target=/dev/log busybox logger berth-ssh-probe\n\
                 RUN test -z \"$SSH_AUTH_SOCK\" && test ! -e /run/buildkit/ssh_agent.0 && \
                     echo done > /done.txt\n"
            ),
        )],
    );
    let oci = work.path().join("image.tar");
    let default = format!("default={}", agent.display());
    let git = format!("git={}", agent.display());
    berth(
        &root,
        &[
            "build",
            "--ssh",
            &default,
            "--ssh",
            &git,
            "--output",
            &format!("type=oci,dest={}", oci.display()),
            context.to_str().unwrap(),
        ],
    );

    // `logger` writes to /dev/log: the connection went through to the agent.
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe_arrived = || {
        received
            .lock()
            .unwrap()
            .iter()
            .any(|data| contains(data, b"berth-ssh-probe"))
    };
    while !probe_arrived() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(probe_arrived(), "{:?}", received.lock().unwrap());

    let layers = oci_layers(&fs::read(&oci).unwrap());
    let file = |name: &str| layers.iter().find_map(|files| files.get(name).cloned());
    assert_eq!(file("default-mode.txt").as_deref(), Some(&b"600 0 0\n"[..]));
    assert_eq!(
        file("git-mode.txt").as_deref(),
        Some(&b"660 1000 1000\n"[..])
    );
    assert_eq!(file("done.txt").as_deref(), Some(&b"done\n"[..]));
    for files in &layers {
        assert!(
            !files.keys().any(|f| f.contains("ssh_agent")
                || f.contains("git.sock")
                || f.trim_end_matches('/') == "dev/log"),
            "{:?}",
            files.keys()
        );
    }
    assert_eq!(leftovers(&root), Vec::<String>::new());
}

#[test]
fn a_missing_required_ssh_agent_fails_its_step_and_an_optional_one_is_skipped() {
    require_tool("/usr/sbin/runc", "runc");
    let (work, root, base) = work_with_base("mounts-base");
    let context = work.path().join("context");
    write_context(
        &context,
        &[(
            "Dockerfile",
            &format!(
                "FROM {base}\n\
                 RUN --mount=type=ssh test \"$SSH_AUTH_SOCK\" = /run/buildkit/ssh_agent.0 && \
                     test ! -e /run/buildkit/ssh_agent.0 && echo skipped > /skipped.txt\n"
            ),
        )],
    );
    berth(&root, &["build", context.to_str().unwrap()]);

    fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM {base}\n\
             RUN true\n\
             RUN --mount=type=ssh,id=deploy,required=true true\n"
        ),
    )
    .unwrap();
    let stderr = berth_fails(&root, &["build", context.to_str().unwrap()]);
    assert!(stderr.contains("Dockerfile:3"), "{stderr}");
    assert!(
        stderr.contains("no SSH key \"deploy\" forwarded from the client"),
        "{stderr}"
    );
    assert!(stderr.contains("--ssh deploy"), "{stderr}");
    // Given for another id, it still fails.
    let agent = work.path().join("agent.sock");
    let _received = fake_agent(&agent);
    let other = format!("default={}", agent.display());
    let stderr = berth_fails(
        &root,
        &["build", "--ssh", &other, context.to_str().unwrap()],
    );
    assert!(stderr.contains("no SSH key \"deploy\""), "{stderr}");

    // A key file in place of an agent's socket.
    let key = work.path().join("id_ed25519");
    fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    let key_spec = format!("deploy={}", key.display());
    let stderr = berth_fails(
        &root,
        &["build", "--ssh", &key_spec, context.to_str().unwrap()],
    );
    assert!(stderr.contains("--ssh"), "{stderr}");
    assert!(
        stderr.contains("only SSH agent sockets are supported"),
        "{stderr}"
    );
    assert_eq!(leftovers(&root), Vec::<String>::new());
}

#[test]
fn caches_outlive_their_build_and_context_binds_discard_writes() {
    require_tool("/usr/sbin/runc", "runc");
    let (work, root, base) = work_with_base("mounts-base");
    let context = work.path().join("context");
    write_context(
        &context,
        &[
            ("input.txt", "from the context\n"),
            ("ignored.txt", "not in the context\n"),
            (".dockerignore", "ignored.txt\n"),
        ],
    );
    let build = |n: u32| {
        fs::write(
            context.join("Dockerfile"),
            format!(
                "FROM {base}\n\
                 RUN --mount=type=cache,target=/cache,id=counter \
                     echo build-{n} >> /cache/log && cat /cache/log > /log-{n}.txt\n\
                 RUN --mount=type=bind,target=/ctx,rw \
                     ls /ctx > /ctx-listing.txt && echo scribble > /ctx/input.txt\n"
            ),
        )
        .unwrap();
        let oci = work.path().join(format!("image-{n}.tar"));
        berth(
            &root,
            &[
                "build",
                "--output",
                &format!("type=oci,dest={}", oci.display()),
                context.to_str().unwrap(),
            ],
        );
        fs::read(&oci).unwrap()
    };
    build(1);
    let second = build(2);
    let layers = oci_layers(&second);
    let file = |name: &str| layers.iter().find_map(|files| files.get(name).cloned());
    let log = file("log-2.txt");
    let listing = file("ctx-listing.txt");
    assert_eq!(log.as_deref(), Some(&b"build-1\nbuild-2\n"[..]));
    assert_eq!(
        listing.as_deref(),
        Some(&b"Dockerfile\ninput.txt\n"[..]),
        ".dockerignore applies to the mount"
    );
    assert_eq!(
        fs::read_to_string(context.join("input.txt")).unwrap(),
        "from the context\n"
    );
    assert!(mounts_under(&root).is_empty(), "{:?}", mounts_under(&root));
}
