//! Reproducible builds: with `SOURCE_DATE_EPOCH` (a build argument or the environment) or
//! `--reproducible`, two clean builds of the same inputs, in different directories, with
//! contexts whose files carry different mtimes, at different times, give the same image digest;
//! without it they do not.
//!
//! Needs runc and busybox-static (`scripts/setup.sh`).

mod build_support;
mod registry_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use build_support::*;
use registry_support::*;
use serde_json::Value;

const EPOCH: &str = "1700000000";
const EPOCH_RFC3339: &str = "2023-11-14T22:13:20Z";

/// A build of the same Dockerfile in a directory of its own: a store root, and a context whose
/// files' mtimes are `touched` (a `touch -d` date).
struct Build {
    _work: tempfile::TempDir,
    root: PathBuf,
    context: PathBuf,
}

/// `base_archive`: the base image, saved once, so that both builds start from the same one.
fn prepare(base: &str, base_archive: &Path, touched: &str) -> Build {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    berth(&root, &["load", "-i", base_archive.to_str().unwrap()]);
    let context = work.path().join("some").join("checkout");
    write_context(
        &context,
        &[
            (
                "Dockerfile",
                &format!(
                    "FROM {base}\n\
                     ARG SOURCE_DATE_EPOCH\n\
                     WORKDIR /app\n\
                     COPY . /app/\n\
                     RUN echo built > /app/run.txt && mkdir -p /var/made/deeper\n\
                     ENV GREETING=hi\n\
                     CMD [\"cat\", \"/app/run.txt\"]\n"
                ),
            ),
            ("a.txt", "a\n"),
            ("sub/b.txt", "b\n"),
        ],
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "find {} -exec touch -h -d '{touched}' {{}} +",
            context.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    Build {
        _work: work,
        root,
        context,
    }
}

fn build(b: &Build, args: &[&str], env_epoch: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.env("BERTH_ROOT", &b.root)
        .env_remove("SOURCE_DATE_EPOCH");
    if let Some(epoch) = env_epoch {
        cmd.env("SOURCE_DATE_EPOCH", epoch);
    }
    let out = cmd
        .args(["build", "-q", "-t", "repro:1"])
        .args(args)
        .arg(&b.context)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "berth build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn config(root: &Path) -> Value {
    let (stdout, _) = berth(root, &["inspect", "repro:1"]);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    v[0].clone()
}

#[test]
fn the_same_inputs_give_the_same_digest() {
    require_tool("/usr/sbin/runc", "runc");
    let (work, root, base) = work_with_base("repro-base");
    let base_archive = work.path().join("base.tar");
    berth(
        &root,
        &["save", "-o", base_archive.to_str().unwrap(), &base],
    );
    let first = prepare(&base, &base_archive, "2026-01-02 03:04:05");
    let second = prepare(&base, &base_archive, "2026-03-04 05:06:07");

    let a = build(
        &first,
        &["--build-arg", &format!("SOURCE_DATE_EPOCH={EPOCH}")],
        None,
    );
    // A later second, another directory, other mtimes; the epoch from the environment.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = build(&second, &[], Some(EPOCH));
    assert!(a.starts_with("sha256:"), "{a}");
    assert_eq!(a, b, "two clean builds of the same inputs differ");
    let inspected = config(&first.root);
    assert_eq!(inspected["Created"], EPOCH_RFC3339, "{inspected}");

    // `--reproducible` alone: the epoch is 0, and the builds agree too.
    let c = build(&first, &["--reproducible"], None);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let d = build(&second, &["--reproducible"], None);
    assert_eq!(c, d);
    assert_ne!(c, a, "another epoch, another image");
    assert_eq!(config(&first.root)["Created"], "1970-01-01T00:00:00Z");

    // Without an epoch the build time shows, so the same check fails: the test has teeth.
    let e = build(&first, &[], None);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let f = build(&second, &[], None);
    assert_ne!(e, f);

    let bad = Command::new(env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_ROOT", &first.root)
        .args(["build", "--build-arg", "SOURCE_DATE_EPOCH=yesterday"])
        .arg(&first.context)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("invalid SOURCE_DATE_EPOCH \"yesterday\""),
        "{stderr}"
    );
    let _ = fs::remove_dir_all(&first.root);
}
