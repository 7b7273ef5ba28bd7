//! `berth build` given bad input, end to end: a failing RUN, a missing COPY source, an unknown
//! stage or image, a path outside the build context, a malicious base layer and a Dockerfile
//! that does not parse. Each fails with an error that names the Dockerfile line and the
//! instruction and says what was wrong; each leaves nothing behind (no active snapshot, lease,
//! mount, sandbox state, temporary copy, staging area or ingest: see
//! `build_support::leftovers`); and the store works afterwards: the images it held are still
//! there, every blob still hashes to its digest, and a good build succeeds.
//!
//! Every build runs with its proxies pointed at a loopback port that refuses connections
//! (`berth_offline`), and images that exist nowhere are named on `127.0.0.1:1`, so no test
//! reaches the network.
//!
//! Needs root, runc and busybox-static. Without them the tests fail and say to run
//! `scripts/setup.sh`.

mod build_support;
mod registry_support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use berth_layerstore::Digest;
use build_support::*;
use registry_support::*;
use serde_json::json;

/// A store holding the busybox base and an image built on it, a build context, and what a
/// failed build is checked against.
struct Bench {
    work: tempfile::TempDir,
    root: PathBuf,
    context: PathBuf,
    /// Unique to the test, for names.
    unique: String,
    base: String,
    /// An image built on `base` before the bad input.
    earlier: String,
    /// The name the failing builds are given: it must never be recorded.
    never: String,
    /// The store's images before the bad input.
    images: BTreeSet<(String, String, String)>,
}

impl Bench {
    fn new(test: &str) -> Bench {
        require_tool("/usr/sbin/runc", "runc");
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("root");
        let unique = format!("{}-{test}", std::process::id());
        let base = format!("localhost/berth-test/errors-base:{unique}");
        load_busybox_base(work.path(), &root, &base);
        let earlier = format!("localhost/berth-test/errors-earlier:{unique}");
        let earlier_context = work.path().join("earlier-context");
        write_context(
            &earlier_context,
            &[(
                "Dockerfile",
                &format!("FROM {base}\nRUN echo earlier > /earlier\n"),
            )],
        );
        berth(
            &root,
            &["build", "-t", &earlier, earlier_context.to_str().unwrap()],
        );
        let context = work.path().join("context");
        fs::create_dir_all(&context).unwrap();
        let images = image_records(&root);
        assert_eq!(images.len(), 2, "{images:?}");
        assert_eq!(leftovers(&root), Vec::<String>::new());
        Bench {
            never: format!("localhost/berth-test/errors-never:{unique}"),
            work,
            root,
            context,
            unique,
            base,
            earlier,
            images,
        }
    }

    /// Builds `dockerfile` over the context, expecting it to fail; returns its stderr.
    fn build_fails(&self, dockerfile: &str) -> String {
        fs::write(self.context.join("Dockerfile"), dockerfile).unwrap();
        let out = berth_offline(
            &self.root,
            &["build", "-t", &self.never, self.context.to_str().unwrap()],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "the build of\n{dockerfile}succeeded:\n{stderr}"
        );
        stderr
    }

    /// Builds `dockerfile`, expecting it to fail with every one of `expected` in its error, and
    /// checks that it left nothing behind.
    fn fails_with(&self, dockerfile: &str, expected: &[&str]) -> String {
        let stderr = self.build_fails(dockerfile);
        for e in expected {
            assert!(
                stderr.contains(e),
                "the error of\n{dockerfile}does not say {e:?}:\n{stderr}"
            );
        }
        self.assert_nothing_left(&stderr);
        stderr
    }

    /// Builds `dockerfile`, expecting it to succeed; returns its stderr.
    fn builds(&self, dockerfile: &str) -> String {
        fs::write(self.context.join("Dockerfile"), dockerfile).unwrap();
        let out = berth_offline(&self.root, &["build", self.context.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "the build of\n{dockerfile}failed:\n{stderr}"
        );
        assert_eq!(leftovers(&self.root), Vec::<String>::new(), "{stderr}");
        stderr
    }

    /// Nothing left behind by a failed build, and nothing recorded under its name.
    fn assert_nothing_left(&self, stderr: &str) {
        assert_eq!(leftovers(&self.root), Vec::<String>::new(), "{stderr}");
        assert_eq!(mounts_under(self.work.path()), Vec::<String>::new());
        let images = image_records(&self.root);
        assert!(
            images.iter().all(|(name, _, _)| name != &self.never),
            "{images:?}"
        );
    }

    /// The store works after the bad input: the images it had are intact, its blobs
    /// undamaged, and a build on the earlier image (RUN, COPY and a bind mount of the context)
    /// succeeds, is recorded and leaves nothing behind.
    fn assert_store_works(&self) {
        let images = image_records(&self.root);
        for record in &self.images {
            assert!(images.contains(record), "{record:?} is gone: {images:?}");
        }
        assert_eq!(damaged_blobs(&self.root), Vec::<String>::new());
        let context = self.work.path().join("after-context");
        write_context(
            &context,
            &[
                (
                    "Dockerfile",
                    &format!(
                        "FROM {}\n\
                         RUN test \"$(cat /earlier)\" = earlier && test -x /bin/busybox\n\
                         COPY good.txt /good.txt\n\
                         RUN --mount=type=bind,target=/ctx test \"$(cat /ctx/good.txt)\" = good\n",
                        self.earlier
                    ),
                ),
                ("good.txt", "good\n"),
            ],
        );
        let after = format!("localhost/berth-test/errors-after:{}", self.unique);
        berth(
            &self.root,
            &["build", "-t", &after, context.to_str().unwrap()],
        );
        let images = image_records(&self.root);
        assert!(
            images.iter().any(|(name, _, _)| name == &after),
            "{images:?}"
        );
        assert_eq!(leftovers(&self.root), Vec::<String>::new());
        assert_eq!(mounts_under(self.work.path()), Vec::<String>::new());
    }
}

#[test]
fn a_failing_run_names_its_line_and_exit_code_and_removes_its_mounts() {
    let b = Bench::new("run");
    let base = &b.base;
    write_context(&b.context, &[("hello.txt", "hello from the context\n")]);

    // The command fails, with the context bind-mounted (a copy of it under run-mounts/tmp).
    let stderr = b.fails_with(
        &format!(
            "FROM {base}\n\
             RUN echo fine > /fine\n\
             RUN --mount=type=bind,target=/ctx cat /ctx/hello.txt; exit 7\n\
             CMD true\n"
        ),
        &[
            "Dockerfile:3: RUN --mount=type=bind,target=/ctx cat /ctx/hello.txt; exit 7: ",
            "did not complete successfully: exit code: 7",
        ],
    );
    // Its output, from the mounted copy, is shown on the step's vertex.
    assert!(stderr.contains("hello from the context"), "{stderr}");
    assert!(stderr.contains("#3 ERROR: process"), "{stderr}");

    // A writable bind mount: the copy the command wrote to goes too, and the context is
    // untouched.
    b.fails_with(
        &format!(
            "FROM {base}\n\
             RUN --mount=type=bind,target=/ctx,rw echo scribble > /ctx/new.txt && exit 3\n"
        ),
        &[
            "Dockerfile:2: RUN --mount=type=bind,target=/ctx,rw ",
            "exit code: 3",
        ],
    );
    assert!(!b.context.join("new.txt").exists());

    // A later mount fails once the context is copied for the first one.
    b.fails_with(
        &format!(
            "FROM {base}\n\
             RUN --mount=type=bind,target=/ctx --mount=type=bind,source=missing.txt,target=/m true\n"
        ),
        &[
            "Dockerfile:2: RUN --mount=type=bind,target=/ctx --mount=type=bind,source=missing.txt,target=/m true: ",
            "mount source missing.txt",
            "not found in the build context",
        ],
    );

    // The runtime cannot start the command.
    b.fails_with(
        &format!("FROM {base}\nRUN --mount=type=bind,target=/ctx [\"/no/such/program\"]\n"),
        &[
            "Dockerfile:2: RUN --mount=type=bind,target=/ctx [\"/no/such/program\"]: ",
            "/no/such/program",
            "no such file or directory",
        ],
    );

    // The sandbox refuses the run before it starts: USER names nobody the image knows.
    b.fails_with(
        &format!("FROM {base}\nUSER nobody\nRUN --mount=type=bind,target=/ctx true\n"),
        &[
            "Dockerfile:3: RUN --mount=type=bind,target=/ctx true: ",
            "unable to find user nobody",
        ],
    );

    // A RUN of a stage that `COPY --from` needs: both lines are named.
    b.fails_with(
        &format!(
            "FROM {base} AS one\n\
             RUN exit 5\n\
             FROM {base}\n\
             COPY --from=one /x /\n"
        ),
        &[
            // The stage runs on its own, as BuildKit runs it: its error is its RUN's.
            "Dockerfile:2: RUN exit 5: ",
            "exit code: 5",
        ],
    );
    b.assert_store_works();
}

#[test]
fn a_missing_copy_source_is_named() {
    let b = Bench::new("copy");
    let base = &b.base;
    write_context(
        &b.context,
        &[("hello.txt", "hello\n"), ("sub/other.md", "other\n")],
    );

    b.fails_with(
        &format!("FROM {base}\nCOPY hello.txt /app/\nCOPY missing.txt /app/\n"),
        &[
            "Dockerfile:3: COPY missing.txt /app/: ",
            "\"missing.txt\" not found",
        ],
    );
    b.fails_with(
        &format!("FROM {base}\nADD missing.tar.gz /\n"),
        &[
            "Dockerfile:2: ADD missing.tar.gz /: ",
            "\"missing.tar.gz\" not found",
        ],
    );
    b.fails_with(
        &format!(
            "FROM {base} AS builder\n\
             RUN mkdir /out\n\
             FROM {base}\n\
             COPY --from=builder /out/missing /app/\n"
        ),
        &[
            "Dockerfile:4: COPY --from=builder /out/missing /app/: ",
            "\"/out/missing\" not found",
        ],
    );
    // A wildcard may match nothing, but BuildKit (docker 20.10) fails when the directory it
    // searches is missing: `lstat /nodir: no such file or directory`.
    b.fails_with(
        &format!("FROM {base}\nCOPY nodir/*.txt /app/\n"),
        &[
            "Dockerfile:2: COPY nodir/*.txt /app/: ",
            "the wildcard's directory \"nodir\" not found",
        ],
    );
    // ...and, as in BuildKit, a wildcard that matches nothing in a directory that exists
    // copies nothing, beside a source that matches or alone.
    b.builds(&format!(
        "FROM {base}\n\
         COPY hello.txt *.nomatch /app/\n\
         COPY sub/*.nomatch /none/\n\
         RUN test \"$(cat /app/hello.txt)\" = hello && test ! -e /app/sub\n"
    ));
    b.assert_store_works();
}

#[test]
fn an_unknown_stage_or_image_is_named_without_reaching_the_network() {
    let b = Bench::new("unknown");
    let base = &b.base;

    // A misspelt stage is taken for a Docker Hub image, as BuildKit takes it; the error says
    // that no stage has the name. The refusing proxy keeps the pull on this machine.
    b.fails_with(
        &format!(
            "FROM {base} AS builder\n\
             RUN echo built > /artifact\n\
             FROM {base}\n\
             COPY --from=buidler /artifact /\n"
        ),
        &[
            "Dockerfile:4: COPY --from=buidler /artifact /: ",
            "failed to resolve source metadata for docker.io/library/buidler:latest",
            "Connection refused",
            "no stage is named \"buidler\" (the stages are builder)",
        ],
    );
    // A stage index past the last stage fails before anything is built.
    b.fails_with(
        &format!("FROM {base}\nCOPY --from=9 /x /\n"),
        &[
            "Dockerfile:2",
            "COPY --from=9 /x /",
            "invalid stage index 9",
        ],
    );
    // An image that exists nowhere, as a base and as a mount source.
    b.fails_with(
        "FROM 127.0.0.1:1/nope:1\nRUN true\n",
        &[
            "Dockerfile:1: FROM 127.0.0.1:1/nope:1: ",
            "failed to resolve source metadata for 127.0.0.1:1/nope:1",
            "Connection refused",
        ],
    );
    b.fails_with(
        &format!("FROM {base}\nRUN --mount=from=127.0.0.1:1/nope:2,target=/m true\n"),
        &[
            "Dockerfile:2: RUN --mount=from=127.0.0.1:1/nope:2,target=/m true: ",
            "failed to resolve source metadata for 127.0.0.1:1/nope:2",
        ],
    );
    b.assert_store_works();
}

#[test]
fn paths_outside_the_context_are_refused_and_symlinks_stay_symlinks() {
    let b = Bench::new("outside");
    let base = &b.base;
    fs::write(b.work.path().join("outside.txt"), "outside secret\n").unwrap();
    write_context(
        &b.context,
        &[("hello.txt", "hello\n"), ("sub/in.txt", "in\n")],
    );
    symlink("../outside.txt", b.context.join("uplink")).unwrap();
    symlink("/etc", b.context.join("hostetc")).unwrap();

    for add in ["COPY", "ADD"] {
        b.fails_with(
            &format!("FROM {base}\n{add} ../outside.txt /\n"),
            &[
                &format!("Dockerfile:2: {add} ../outside.txt /: "),
                "forbidden path outside the build context: ../outside.txt",
            ],
        );
    }
    b.fails_with(
        &format!("FROM {base}\nCOPY sub/../../outside.txt /\n"),
        &[
            "Dockerfile:2: COPY sub/../../outside.txt /: ",
            "forbidden path outside the build context",
        ],
    );
    b.fails_with(
        &format!("FROM {base}\nRUN --mount=type=bind,source=../outside.txt,target=/m cat /m\n"),
        &[
            "Dockerfile:2: RUN --mount=type=bind,source=../outside.txt,target=/m cat /m: ",
            "mount source ../outside.txt: forbidden path outside the build context",
        ],
    );
    // A symlink is followed inside the context, never out of it.
    b.fails_with(
        &format!("FROM {base}\nCOPY uplink /x\n"),
        &[
            "Dockerfile:2: COPY uplink /x: ",
            "\"uplink\" not found: uplink is a symlink to \"../outside.txt\", which leads to \
             nothing in the build context",
        ],
    );
    b.fails_with(
        &format!("FROM {base}\nCOPY hostetc/passwd /p\n"),
        &[
            "Dockerfile:2: COPY hostetc/passwd /p: ",
            "hostetc is a symlink to \"/etc\", which leads to nothing in the build context",
        ],
    );
    // Copied with the rest of the context, or bind-mounted, the symlinks are symlinks: what
    // they point at is not read.
    b.builds(&format!(
        "FROM {base}\n\
         COPY . /app/\n\
         RUN --mount=type=bind,target=/ctx \
             test -L /app/uplink && test \"$(busybox readlink /app/uplink)\" = ../outside.txt \
             && test -L /app/hostetc && test \"$(busybox readlink /app/hostetc)\" = /etc \
             && test ! -e /app/uplink && test ! -e /outside.txt \
             && test -L /ctx/uplink && test \"$(busybox readlink /ctx/uplink)\" = ../outside.txt \
             && test ! -e /ctx/uplink && test \"$(cat /app/sub/in.txt)\" = in\n"
    ));
    b.assert_store_works();
}

/// A member of a layer tar written by hand: the `tar` crate refuses `..` in names, so names
/// and link targets go into the header as they are.
enum Member<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

/// An uncompressed layer of `members`, in order.
fn raw_layer(members: &[Member]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for member in members {
        let (name, link, kind, data, mode): (&str, &str, tar::EntryType, &[u8], u32) = match member
        {
            Member::File(name, data) => (name, "", tar::EntryType::Regular, data, 0o644),
            Member::Symlink(name, target) => (name, target, tar::EntryType::Symlink, b"", 0o777),
            Member::Hardlink(name, target) => (name, target, tar::EntryType::Link, b"", 0o644),
        };
        assert!(name.len() < 100 && link.len() < 100);
        let mut header = tar::Header::new_ustar();
        let raw = header.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        tar.append(&header, data).unwrap();
    }
    tar.into_inner().unwrap()
}

/// Writes an OCI archive at `path` holding one image named `name` whose one layer is
/// `layer` (uncompressed).
fn pack_image(path: &Path, name: &str, layer: &[u8]) {
    let diff_id = Digest::sha256(layer).to_string();
    let config = serde_json::to_vec(&json!({
        "architecture": go_arch(),
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let descriptor = json!({
        "media_type": "application/vnd.oci.image.layer.v1.tar",
        "digest": diff_id,
        "size": layer.len(),
    });
    let manifest = manifest_over(&config, &descriptor);
    let root = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": Digest::sha256(&manifest).to_string(),
        "size": manifest.len(),
    });
    pack_oci(path, &[layer, &config, &manifest], root, name);
}

/// Paths below `dir` whose file name is one of `names`; symlinks are not followed.
fn find_named(dir: &Path, names: &[String], found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let path = entry.path();
        if names.iter().any(|n| entry.file_name() == n.as_str()) {
            found.push(path.clone());
        }
        if entry.file_type().unwrap().is_dir() {
            find_named(&path, names, found);
        }
    }
}

#[test]
fn a_malicious_base_layer_is_refused_and_writes_nothing_outside() {
    let b = Bench::new("malicious");
    let u = &b.unique;
    let escape = format!("escape-{u}.txt");
    let pwned = format!("pwned-{u}");
    // A file beside the store that a hardlink climbing out of the extraction directory
    // (`<root>/snapshots/tmp/<id>/fs`) would reach.
    let linked = format!("linked-{u}.txt");
    fs::write(b.work.path().join(&linked), "not to be linked\n").unwrap();
    let dotdot = format!("../../{escape}");
    let deep = format!("{}tmp/{escape}", "../".repeat(16));
    let through = format!("evil/tmp/{pwned}");
    let hardlink = format!("../../../../../{linked}");
    // Each image, its layer, and what the error says of it.
    let cases: [(&str, Vec<Member>, String); 4] = [
        (
            "dotdot",
            vec![
                Member::File("ok.txt", b"ok\n"),
                Member::File(&dotdot, b"escaped\n"),
            ],
            format!("entry {dotdot}: path resolves outside the destination"),
        ),
        (
            "deep",
            vec![Member::File(&deep, b"escaped\n")],
            format!("entry {deep}: path resolves outside the destination"),
        ),
        (
            "symlink",
            vec![
                Member::Symlink("evil", "/"),
                Member::File(&through, b"pwned\n"),
            ],
            format!("entry {through}: path passes through symlink evil"),
        ),
        (
            "hardlink",
            vec![Member::Hardlink("h", &hardlink)],
            format!("hardlink h: target {hardlink} resolves outside the destination"),
        ),
    ];
    for (name, members, expected) in &cases {
        let layer = raw_layer(members);
        let diff_id = Digest::sha256(&layer);
        let image = format!("localhost/berth-test/evil-{name}:{u}");
        let archive = b.work.path().join(format!("evil-{name}.tar"));
        pack_image(&archive, &image, &layer);
        let out = berth_out(&b.root, &["load", "-i", archive.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            // Refusing the image at load is as good, if it says why.
            assert!(stderr.contains(expected.as_str()), "{stderr}");
            b.assert_nothing_left(&stderr);
            continue;
        }
        let stderr = b.fails_with(
            &format!("FROM {image}\nRUN true\n"),
            &[&format!("Dockerfile:1: FROM {image}: "), expected],
        );
        // The FROM step is shown failed, not done.
        assert!(stderr.contains("#1 ERROR: "), "{stderr}");
        assert!(!stderr.contains("#1 DONE"), "{stderr}");
        // No snapshot of the layer was kept.
        let snapshot = b
            .root
            .join("snapshots/snapshots")
            .join(diff_id.algorithm().to_string())
            .join(diff_id.hex());
        assert!(!snapshot.exists(), "{}", snapshot.display());
    }
    // Nothing was written where the entries point, nor anywhere beside the store.
    let mut found = Vec::new();
    find_named(b.work.path(), &[escape.clone(), pwned.clone()], &mut found);
    assert_eq!(found, Vec::<PathBuf>::new());
    for path in [
        format!("/{escape}"),
        format!("/tmp/{escape}"),
        format!("/tmp/{pwned}"),
    ] {
        assert!(!Path::new(&path).exists(), "{path}");
    }
    let nlink = fs::metadata(b.work.path().join(&linked)).unwrap().nlink();
    assert_eq!(nlink, 1, "{linked} was hard-linked");
    b.assert_store_works();
}

/// Every path under `dir` with its type, size, mode and modification time.
fn tree_state(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let md = entry.metadata().unwrap();
            out.push(format!(
                "{} {:o} {} {}.{}",
                entry.path().display(),
                md.mode(),
                md.len(),
                md.mtime(),
                md.mtime_nsec()
            ));
            if md.is_dir() {
                todo.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_dockerfile_that_does_not_parse_fails_before_touching_the_store() {
    let b = Bench::new("syntax");
    let base = &b.base;
    write_context(&b.context, &[("hello.txt", "hello\n")]);
    let fresh = b.work.path().join("fresh-root");
    let cases: &[(String, &[&str])] = &[
        (
            format!("FROM {base}\nRUNN echo typo\n"),
            &[
                "Dockerfile:2",
                "RUNN echo typo",
                "unknown instruction: RUNN",
            ],
        ),
        (
            format!("FROM {base}\nRUN <<EOF\necho never ends\n"),
            &["Dockerfile:2", "RUN <<EOF", "unterminated heredoc EOF"],
        ),
        (
            format!("FROM {base}\nCOPY --chown hello.txt /\n"),
            &[
                "Dockerfile:2",
                "COPY --chown hello.txt /",
                "missing a value on flag: --chown",
            ],
        ),
        (
            format!("FROM {base}\nCOPY hello.txt\n"),
            &[
                "Dockerfile:2",
                "COPY hello.txt",
                "COPY requires at least two arguments",
            ],
        ),
        (
            "FROM\nRUN true\n".to_owned(),
            &[
                "Dockerfile:1",
                "FROM requires either one or three arguments",
            ],
        ),
    ];
    let before = tree_state(&b.root);
    for (dockerfile, expected) in cases {
        let stderr = b.fails_with(dockerfile, expected);
        assert!(!stderr.contains("#1 "), "a step ran:\n{stderr}");
        // A store that does not exist is not made...
        fs::write(b.context.join("Dockerfile"), dockerfile).unwrap();
        let out = berth_offline(&fresh, &["build", b.context.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(!fresh.exists(), "{dockerfile}");
    }
    // ...and one that does is not changed.
    assert_eq!(tree_state(&b.root), before);
    b.assert_store_works();
}
