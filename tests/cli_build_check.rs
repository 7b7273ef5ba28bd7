//! `berth build --check` end to end: buildx's report on stdout, exit status 0 unless
//! `# check=error=true` (or a failure such as an unknown target), and `berth build` without
//! `--check` refusing with status 2 until images can be built.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn berth(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait for berth")
}

/// A build context holding `Dockerfile` with `content`.
fn context(content: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("Dockerfile"), content).expect("write Dockerfile");
    dir
}

fn check(content: &str, extra: &[&str]) -> Output {
    let dir = context(content);
    let mut args = vec!["build", "--check"];
    args.extend_from_slice(extra);
    args.push(".");
    berth(dir.path(), &args, None)
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("UTF-8 stderr")
}

const FROM_AS: &str = "FROM alpine as base\nRUN true\n";

const FROM_AS_REPORT: &str = "Check complete, 1 warning has been found!\n\
\n\
WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n\
'as' and 'FROM' keywords' casing do not match\n\
Dockerfile:1\n\
--------------------\n\
\x20  1 | >>> FROM alpine as base\n\
\x20  2 |     RUN true\n\
\x20  3 |     \n\
--------------------\n";

#[test]
fn a_clean_dockerfile() {
    let out = check("FROM alpine\nCMD [\"sh\"]\n", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Check complete, no warnings found.\n");
}

#[test]
fn warnings_are_printed_and_the_check_passes() {
    let out = check(FROM_AS, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), FROM_AS_REPORT);
    assert_eq!(stderr(&out), "");
}

#[test]
fn error_true_fails_on_a_finding() {
    let out = check(&format!("# check=error=true\n{FROM_AS}"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.starts_with("Check complete, 1 warning has been found!\n"),
        "{text}"
    );
    assert!(text.contains("Dockerfile:2\n"), "{text}");
    assert!(text.ends_with("--------------------\n\n"), "{text}");
    assert!(
        stderr(&out).contains("lint violation found for rules: FromAsCasing"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn error_true_passes_without_findings() {
    let out = check("# check=error=true\nFROM alpine\n", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Check complete, no warnings found.\n");
}

#[test]
fn skip_all_and_skip_some() {
    let out = check(&format!("# check=skip=all;error=true\n{FROM_AS}"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Check complete, no warnings found.\n");

    let out = check(
        "# check=skip=JSONArgsRecommended\nFROM alpine AS Base\nCMD run\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("WARNING: StageNameCasing"), "{text}");
    assert!(!text.contains("WARNING: JSONArgsRecommended"), "{text}");
}

#[test]
fn the_check_build_argument_replaces_the_directive() {
    let out = check(
        &format!("# check=error=true\n{FROM_AS}"),
        &["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Check complete, no warnings found.\n");

    let out = check(
        FROM_AS,
        &["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=error=true"],
    );
    assert_eq!(out.status.code(), Some(1));

    let out = check(FROM_AS, &["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=bogus"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("failed to parse check options"));
}

#[test]
fn findings_are_sorted_by_line_and_counted() {
    let out = check("FROM alpine\nCMD a\nCMD b\nMAINTAINER me\n", &[]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.starts_with("Check complete, 4 warnings have been found!\n"),
        "{text}"
    );
    let rules: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("WARNING: "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        rules,
        [
            "JSONArgsRecommended",
            "MultipleInstructionsDisallowed",
            "JSONArgsRecommended",
            "MaintainerDeprecated"
        ]
    );
}

#[test]
fn the_target_limits_the_stage_checks() {
    let dockerfile = "FROM alpine AS a\nCMD [\"x\"]\nCMD [\"y\"]\n\nFROM alpine AS b\nRUN true\n";
    let out = check(dockerfile, &[]);
    assert!(stdout(&out).contains("MultipleInstructionsDisallowed"));
    let out = check(dockerfile, &["--target", "b"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Check complete, no warnings found.\n");
}

#[test]
fn an_unknown_target_fails() {
    let out = check(FROM_AS, &["--target", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("target stage \"nope\" could not be found"),
        "{}",
        stderr(&out)
    );
    // The findings made before the target was looked up are still shown.
    assert!(stdout(&out).contains("WARNING: FromAsCasing"));
}

#[test]
fn file_flag_and_standard_input() {
    let dir = context("FROM alpine\n");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/Dockerfile.dev"), FROM_AS).unwrap();
    let out = berth(
        dir.path(),
        &["build", "--check", "-f", "sub/Dockerfile.dev", "."],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("\nsub/Dockerfile.dev:1\n"),
        "{}",
        stdout(&out)
    );

    let out = berth(
        dir.path(),
        &["build", "--check", "-f", "-", "."],
        Some(FROM_AS),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), FROM_AS_REPORT);
}

#[test]
fn parse_errors_fail_with_their_location() {
    let out = check("FROM alpine\nCOPPY a b\n", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:2:1"), "{err}");
    assert!(err.contains("did you mean COPY?"), "{err}");
    assert_eq!(stdout(&out), "");
}

#[test]
fn a_missing_context_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = berth(dir.path(), &["build", "--check", "missing"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[test]
fn a_build_without_check_needs_its_base_image_in_the_store() {
    let dir = context("FROM alpine\n");
    let out = berth(
        dir.path(),
        &["build", "--root", "store", "-t", "app:1", "."],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:1"), "{err}");
    assert!(err.contains("alpine"), "{err}");
    assert_eq!(stdout(&out), "");
}

#[test]
fn the_lowering_adds_its_checks_and_its_errors() {
    let out = check("FROM alpine\nWORKDIR app/\n", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("WARNING: WorkdirRelativePath"),
        "{}",
        stdout(&out)
    );

    // Findings come first, then the instruction that does not lower.
    let out = check("FROM alpine AS Base\nCOPY --frm=x a b\n", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("WARNING: StageNameCasing"));
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:2:6") && err.contains("--frm"),
        "{err}"
    );
}
