//! `berth dockerfile parse` end to end: the dump format on stdout, rustc-style errors on stderr.

use std::io::Write;
use std::process::{Command, Stdio};

fn berth_parse(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["dockerfile", "parse", "-f", "-"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write Dockerfile");
    child.wait_with_output().expect("wait for berth")
}

#[test]
fn dumps_instructions() {
    let out = berth_parse(
        &["--dump"],
        "FROM busybox AS base\nRUN echo \\\n  hi\nCMD [\"sh\"]\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "(from \"busybox\" \"AS\" \"base\")\n(run \"echo   hi\")\n(cmd \"sh\")\n"
    );
}

#[test]
fn json_carries_locations() {
    let out = berth_parse(&["--json"], "FROM scratch\n\nCOPY a b\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let copy = &tree["instructions"][1];
    assert_eq!(copy["span"]["line"], 3);
    assert_eq!(copy["span"]["column"], 1);
}

#[test]
fn errors_point_at_the_fault() {
    let out = berth_parse(&[], "FROM busybox\nCOPPY a b\n");
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("Dockerfile:2:1"), "{err}");
    assert!(err.contains("COPPY a b"), "{err}");
    assert!(err.contains('^'), "{err}");
    assert!(err.contains("did you mean COPY?"), "{err}");
}
