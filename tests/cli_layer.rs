//! `berth layer create` and `berth layer apply` end to end, as a CI job would call them.

use std::fs;
use std::process::Command;

use berth_layerstore::Digest;

fn berth(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .output()
        .expect("run berth")
}

#[test]
fn create_prints_what_the_file_holds_and_apply_restores_the_tree() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/motd"), b"hello\n").unwrap();
    std::os::unix::fs::symlink("motd", tree.join("etc/link")).unwrap();
    let layer = work.path().join("layer.tar.zst");

    let out = berth(&[
        "layer",
        "create",
        tree.to_str().unwrap(),
        "-o",
        layer.to_str().unwrap(),
        "--compression",
        "zstd",
        "--threads",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bytes = fs::read(&layer).unwrap();
    assert_eq!(info["digest"], Digest::sha256(&bytes).to_string());
    assert_eq!(info["size"], bytes.len() as u64);
    assert_eq!(
        info["media_type"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let tar = zstd::decode_all(&bytes[..]).unwrap();
    assert_eq!(info["diff_id"], Digest::sha256(&tar).to_string());

    let dest = work.path().join("dest");
    let out = berth(&[
        "layer",
        "apply",
        layer.to_str().unwrap(),
        dest.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(dest.join("etc/motd")).unwrap(), b"hello\n");
    assert_eq!(
        fs::read_link(dest.join("etc/link")).unwrap().to_str(),
        Some("motd")
    );
}

#[test]
fn bad_arguments_are_refused_without_leaving_output() {
    let work = tempfile::tempdir().unwrap();
    let layer = work.path().join("layer.tgz");
    let out = berth(&[
        "layer",
        "create",
        work.path().to_str().unwrap(),
        "-o",
        layer.to_str().unwrap(),
        "--level",
        "12",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--level 12 is out of range for gzip"), "{err}");
    assert!(!layer.exists());

    let missing = work.path().join("missing");
    let out = berth(&[
        "layer",
        "create",
        missing.to_str().unwrap(),
        "-o",
        layer.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
    assert!(!layer.exists());
}

#[test]
fn apply_refuses_a_layer_that_escapes_and_names_the_entry() {
    let work = tempfile::tempdir().unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    // Written byte by byte: the tar crate's own setters refuse `..`, as they should.
    header.as_old_mut().name[..9].copy_from_slice(b"../escape");
    header.set_cksum();
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(b"evil");
    bytes.resize(bytes.len() + 508 + 1024, 0);
    let layer = work.path().join("evil.tar");
    fs::write(&layer, &bytes).unwrap();

    let dest = work.path().join("dest");
    let out = berth(&[
        "layer",
        "apply",
        layer.to_str().unwrap(),
        dest.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("../escape"), "{err}");
    assert!(err.contains("outside the destination"), "{err}");
    assert!(!work.path().join("escape").exists());
}
