//! The snapshot store: extraction by diff_id, the overlayfs and copy paths run on the same
//! operations (they must give the same changes and the same layer), reference counting, and
//! cleanup. The overlayfs cases mount (the store itself never does), so these tests run as root,
//! as the full suite does.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};

use berth_layerstore::Digest;
use berth_layerstore::archive::{ApplyOptions, Change, ChangeKind, TarOptions, apply_layer};
use berth_layerstore::layer::{LayerInfo, LayerOptions, create_from_dir};
use berth_layerstore::media::Compression;
use berth_layerstore::snapshot::{
    Active, Extracted, SnapshotError, SnapshotStore, overlay_support, overlay_supported,
};

/// mtimes of the base layers are clamped to this.
const LOWER_EPOCH: i64 = 1_000;
/// mtimes of the step's layer are clamped to this, so that both paths give the same bytes.
const STEP_EPOCH: i64 = 2_000;

/// Relative path -> (kind, mode, uid, gid, content or link target) of every entry under `root`.
type Tree = BTreeMap<String, (char, u32, u32, u32, Vec<u8>)>;

fn tree(root: &Path) -> Tree {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let ft = meta.file_type();
            let (kind, data) = if ft.is_dir() {
                ('d', Vec::new())
            } else if ft.is_symlink() {
                (
                    'l',
                    fs::read_link(e.path())
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if ft.is_file() {
                ('f', fs::read(e.path()).unwrap())
            } else if ft.is_char_device() {
                ('c', meta.rdev().to_string().into_bytes())
            } else {
                ('?', Vec::new())
            };
            (
                rel,
                (kind, meta.mode() & 0o7777, meta.uid(), meta.gid(), data),
            )
        })
        .collect()
}

fn write(path: &Path, data: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

fn whiteout(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = Command::new("mknod")
        .arg(path)
        .args(["c", "0", "0"])
        .status()
        .unwrap();
    assert!(status.success(), "mknod {}", path.display());
}

fn opaque(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    xattr::set(dir, "trusted.overlay.opaque", b"y").unwrap();
}

fn is_opaque(dir: &Path) -> bool {
    xattr::get(dir, "trusted.overlay.opaque")
        .unwrap()
        .as_deref()
        == Some(b"y")
}

fn layer_opts(compression: Compression, epoch: i64) -> LayerOptions {
    LayerOptions {
        compression,
        threads: 2,
        tar: TarOptions {
            source_date_epoch: Some(epoch),
            ..TarOptions::default()
        },
        ..LayerOptions::default()
    }
}

/// A gzip layer of the tree under `dir` (overlay-style whiteouts become `.wh.` entries).
fn layer(dir: &Path) -> (LayerInfo, Vec<u8>) {
    create_from_dir(dir, Vec::new(), &layer_opts(Compression::Gzip, LOWER_EPOCH)).unwrap()
}

/// Three layers: a base, then one with a deletion and an opaque directory, then one that
/// deletes a whole directory and brings back what the second deleted.
fn base_layers(scratch: &Path) -> Vec<(LayerInfo, Vec<u8>)> {
    let one = scratch.join("src1");
    write(&one.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
    write(&one.join("etc/group"), "root:x:0:\n");
    write(&one.join("etc/app/a.conf"), "a");
    write(&one.join("etc/app/b.conf"), "b");
    write(&one.join("usr/bin/tool"), "tool v1");
    fs::set_permissions(one.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    write(&one.join("usr/lib/lib.so"), "library");
    write(&one.join("data/keep"), "keep");
    write(&one.join("data/gone"), "gone");
    write(&one.join("data/file"), "a file");
    write(&one.join("data/dir1/x"), "x");
    write(&one.join("data/dir1/y"), "y");
    write(&one.join("dir2/f"), "f");
    write(&one.join("dir2/sub/g"), "g");
    write(&one.join("var/log/messages"), "log v1");
    write(&one.join("rmdir/inner/deep"), "deep");
    write(&one.join("hard1"), "hard");
    fs::hard_link(one.join("hard1"), one.join("hard2")).unwrap();
    symlink("usr/bin/tool", one.join("link")).unwrap();
    fs::set_permissions(one.join("data"), fs::Permissions::from_mode(0o750)).unwrap();

    let two = scratch.join("src2");
    write(&two.join("usr/bin/tool"), "tool v2");
    fs::set_permissions(two.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(two.join("data")).unwrap();
    fs::set_permissions(two.join("data"), fs::Permissions::from_mode(0o750)).unwrap();
    whiteout(&two.join("data/gone"));
    opaque(&two.join("etc/app"));
    write(&two.join("etc/app/c.conf"), "c");
    write(&two.join("opt/new"), "new");

    let three = scratch.join("src3");
    whiteout(&three.join("dir2"));
    fs::create_dir_all(three.join("data")).unwrap();
    fs::set_permissions(three.join("data"), fs::Permissions::from_mode(0o750)).unwrap();
    write(&three.join("data/gone"), "back again");
    write(&three.join("etc/app/d.conf"), "d");

    vec![layer(&one), layer(&two), layer(&three)]
}

/// The layers applied one after the other, the way the image spec applies changesets.
fn applied(layers: &[&[u8]], dest: &Path) {
    for l in layers {
        apply_layer(*l, dest, &ApplyOptions::default()).unwrap();
    }
}

/// Unmounts on drop, so a failing assertion does not leave the mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_overlay(options: &str, target: &Path, cwd: Option<&Path>) -> Mount {
    fs::create_dir_all(target).unwrap();
    let mut cmd = Command::new("mount");
    cmd.args(["-t", "overlay", "overlay", "-o", options])
        .arg(target);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "mounting overlayfs with {options}");
    Mount(target.to_path_buf())
}

/// What the step does, in the merged directory or in the copy.
fn step(root: &Path) {
    // Add a file to a directory of a lower layer.
    write(&root.join("opt/added"), "added");
    // Modify a file.
    fs::write(root.join("var/log/messages"), "log v2").unwrap();
    // Delete a file of a lower layer.
    fs::remove_file(root.join("data/keep")).unwrap();
    // Replace a directory with a file.
    fs::remove_dir_all(root.join("data/dir1")).unwrap();
    fs::write(root.join("data/dir1"), "now a file").unwrap();
    // Replace a file with a directory.
    fs::remove_file(root.join("data/file")).unwrap();
    write(&root.join("data/file/inner"), "inner");
    // Remove a directory and make it again: opaque.
    fs::remove_dir_all(root.join("rmdir")).unwrap();
    write(&root.join("rmdir/new"), "fresh");
    // Change a mode only.
    fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
    // Hardlink a file of a lower layer.
    fs::hard_link(root.join("usr/lib/lib.so"), root.join("usr/lib/lib.so.1")).unwrap();
    // A symlink in a new directory.
    fs::create_dir(root.join("bin")).unwrap();
    symlink("../usr/bin/tool", root.join("bin/tool")).unwrap();
    // Delete a directory that is opaque in a lower layer.
    fs::remove_dir_all(root.join("etc/app")).unwrap();
    // Modify a file that a higher layer brought back over a whiteout.
    fs::write(root.join("data/gone"), "changed").unwrap();
}

/// The entries of a tar: name, type, mode, uid, gid, mtime, link name, content.
type Entry = (String, u8, u32, u64, u64, u64, Option<String>, Vec<u8>);

fn entries(tar_bytes: &[u8]) -> Vec<Entry> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).unwrap());
            let h = e.header().clone();
            let mut data = Vec::new();
            io::Read::read_to_end(&mut e, &mut data).unwrap();
            (
                name,
                h.entry_type().as_byte(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                link,
                data,
            )
        })
        .collect()
}

fn extract_all(store: &SnapshotStore, layers: &[(LayerInfo, Vec<u8>)]) -> Vec<Digest> {
    layers
        .iter()
        .map(|(info, blob)| {
            let got = store.extract(&info.diff_id, &blob[..]).unwrap();
            assert!(matches!(got, Extracted::New(_)), "{got:?}");
            info.diff_id.clone()
        })
        .collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn change(path: &str, kind: ChangeKind) -> Change {
    Change::new(path, kind)
}

#[test]
fn overlay_and_copy_give_the_same_layer() {
    assert!(
        overlay_supported(),
        "overlayfs is not available on this machine"
    );
    assert!(
        overlay_support().index,
        "/sys/module/overlay/parameters/index"
    );
    let tmp = tempfile::tempdir().unwrap();
    let layers = base_layers(tmp.path());
    let blobs: Vec<&[u8]> = layers.iter().map(|(_, b)| &b[..]).collect();
    let truth = tmp.path().join("truth");
    applied(&blobs, &truth);

    let store_o = SnapshotStore::open(tmp.path().join("store-overlay")).unwrap();
    let store_c = SnapshotStore::open(tmp.path().join("store-copy")).unwrap();
    let ids = extract_all(&store_o, &layers);
    assert_eq!(extract_all(&store_c, &layers), ids);
    assert_eq!(store_o.list().unwrap(), {
        let mut sorted = ids.clone();
        sorted.sort();
        sorted
    });
    // The snapshots keep their whiteouts as overlayfs does.
    let second = store_o.path(&ids[1]);
    let gone = fs::symlink_metadata(second.join("data/gone")).unwrap();
    assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
    assert!(is_opaque(&second.join("etc/app")));
    assert!(
        fs::symlink_metadata(store_o.path(&ids[2]).join("dir2"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    // Extracting again finds it there.
    assert_eq!(
        store_o.extract(&ids[0], blobs[0]).unwrap(),
        Extracted::Present
    );

    // 1. overlayfs: the test mounts what `prepare` describes.
    let active_o = store_o.prepare("step", &ids).unwrap();
    let lowerdirs: Vec<PathBuf> = ids.iter().rev().map(|d| store_o.path(d)).collect();
    assert_eq!(active_o.lowerdirs(), &lowerdirs[..]);
    let options = active_o.overlay_options().unwrap();
    assert!(options.contains(",index=off"), "{options}");
    assert_eq!(store_o.references(&ids[0]).unwrap(), 1);
    let merged = tmp.path().join("merged");
    let mount = mount_overlay(&options, &merged, None);
    assert_eq!(
        tree(&merged),
        tree(&truth),
        "the merged view is the layers applied"
    );
    step(&merged);
    let want = tree(&merged);
    drop(mount);
    let changes_o = active_o.diff().unwrap();

    // 2. copy: the same operations in the copy.
    let active_c = store_c.prepare_copy("step", &ids).unwrap();
    assert!(active_c.lowerdirs().is_empty());
    assert!(active_c.overlay_options().is_none());
    let copy = active_c.copy_dir().unwrap().to_path_buf();
    assert_eq!(tree(&copy), tree(&truth), "the copy is the layers applied");
    step(&copy);
    assert_eq!(tree(&copy), want);
    let changes_c = active_c.diff().unwrap();

    let expected = vec![
        change("bin", ChangeKind::Add),
        change("bin/tool", ChangeKind::Add),
        change("data", ChangeKind::Modify),
        change("data/dir1", ChangeKind::Modify),
        change("data/file", ChangeKind::Opaque),
        change("data/file/inner", ChangeKind::Add),
        change("data/gone", ChangeKind::Modify),
        change("data/keep", ChangeKind::Delete),
        change("etc", ChangeKind::Modify),
        change("etc/app", ChangeKind::Delete),
        change("opt", ChangeKind::Modify),
        change("opt/added", ChangeKind::Add),
        change("rmdir", ChangeKind::Opaque),
        change("rmdir/new", ChangeKind::Add),
        change("usr", ChangeKind::Modify),
        change("usr/bin", ChangeKind::Modify),
        change("usr/bin/tool", ChangeKind::Modify),
        change("usr/lib", ChangeKind::Modify),
        change("usr/lib/lib.so", ChangeKind::Modify),
        change("usr/lib/lib.so.1", ChangeKind::Add),
        change("var", ChangeKind::Modify),
        change("var/log", ChangeKind::Modify),
        change("var/log/messages", ChangeKind::Modify),
    ];
    assert_eq!(changes_o, expected, "overlayfs upper directory");
    assert_eq!(changes_c, expected, "two-tree walk of the copy");

    let opts = layer_opts(Compression::None, STEP_EPOCH);
    let commit_o = active_o.commit(Vec::new(), &opts).unwrap();
    let commit_c = active_c.commit(Vec::new(), &opts).unwrap();
    let (tar_o, tar_c) = (&commit_o.out, &commit_c.out);
    let got = entries(tar_o);
    assert_eq!(got, entries(tar_c), "same tar entries");
    assert_eq!(commit_o.info.diff_id, commit_c.info.diff_id);
    assert_eq!(tar_o, tar_c);
    let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin/",
            "bin/tool",
            "data/",
            "data/.wh.keep",
            "data/dir1",
            "data/file/",
            "data/file/.wh..wh..opq",
            "data/file/inner",
            "data/gone",
            "etc/",
            "etc/.wh.app",
            "opt/",
            "opt/added",
            "rmdir/",
            "rmdir/.wh..wh..opq",
            "rmdir/new",
            "usr/",
            "usr/bin/",
            "usr/bin/tool",
            "usr/lib/",
            "usr/lib/lib.so",
            "usr/lib/lib.so.1",
            "var/",
            "var/log/",
            "var/log/messages",
        ]
    );
    let tool = got.iter().find(|e| e.0 == "usr/bin/tool").unwrap();
    assert_eq!((tool.2, &tool.7[..]), (0o700, &b"tool v2"[..]));
    let link = got.iter().find(|e| e.0 == "usr/lib/lib.so.1").unwrap();
    assert_eq!((link.1, link.6.as_deref()), (b'1', Some("usr/lib/lib.so")));
    assert!(got.iter().all(|e| e.5 <= STEP_EPOCH as u64));

    // Both stores now hold the step's layer as a snapshot (the renamed upper directory, the
    // extraction of the copy's changes); either one stacked on the base gives what the step saw.
    let new = commit_o.info.diff_id.clone();
    let mut chain = ids.clone();
    chain.push(new.clone());
    assert_eq!(commit_o.lease.diff_ids(), &chain[..]);
    let mut with_step = truth.clone();
    with_step.set_file_name("truth-with-step");
    applied(&[blobs[0], blobs[1], blobs[2], &tar_o[..]], &with_step);
    assert_eq!(tree(&with_step), want);
    for store in [&store_o, &store_c] {
        assert!(store.exists(&new));
        assert!(is_opaque(&store.path(&new).join("rmdir")));
        let again = store.prepare_copy("next", &chain).unwrap();
        assert_eq!(tree(again.copy_dir().unwrap()), want);
        assert!(
            again.diff().unwrap().is_empty(),
            "an untouched copy has no changes"
        );
        drop(again);
        let next = store.prepare("next", &chain).unwrap();
        let (base, relative) = next.overlay_options_relative().unwrap();
        assert!(relative.starts_with("lowerdir=sha256/"), "{relative}");
        let merged = tmp.path().join("merged-next");
        let mount = mount_overlay(&relative, &merged, Some(&base));
        assert_eq!(tree(&merged), want);
        drop(mount);
        assert!(next.diff().unwrap().is_empty());
        next.abort().unwrap();
    }
    drop((commit_o, commit_c));
    for store in [&store_o, &store_c] {
        assert!(names_in(&store.root().join("active")).is_empty());
        assert!(names_in(&store.root().join("tmp")).is_empty());
        assert!(names_in(&store.root().join("leases")).is_empty());
    }
}

#[test]
fn a_step_on_no_parents() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path().join("store")).unwrap();
    let active = store.prepare("scratch", &[]).unwrap();
    assert_eq!(active.lowerdirs().len(), 1);
    let merged = tmp.path().join("merged");
    let mount = mount_overlay(&active.overlay_options().unwrap(), &merged, None);
    write(&merged.join("hello/world"), "hi");
    drop(mount);
    let copy = store.prepare_copy("scratch", &[]).unwrap();
    write(&copy.copy_dir().unwrap().join("hello/world"), "hi");
    let expected = vec![
        change("hello", ChangeKind::Add),
        change("hello/world", ChangeKind::Add),
    ];
    assert_eq!(active.diff().unwrap(), expected);
    assert_eq!(copy.diff().unwrap(), expected);
    let opts = layer_opts(Compression::Gzip, STEP_EPOCH);
    let a = active.commit(Vec::new(), &opts).unwrap();
    let b = copy.commit(Vec::new(), &opts).unwrap();
    assert_eq!(a.info, b.info);
    assert_eq!(tree(&store.path(&a.info.diff_id)).len(), 2);
}

#[test]
fn concurrent_extractions_of_one_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = base_layers(tmp.path());
    let (info, blob) = &layers[0];
    let store = SnapshotStore::open(tmp.path().join("store")).unwrap();
    let barrier = Arc::new(Barrier::new(4));
    let results: Vec<Extracted> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (store, barrier) = (store.clone(), Arc::clone(&barrier));
                s.spawn(move || {
                    barrier.wait();
                    store.extract(&info.diff_id, &blob[..]).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let new = results
        .iter()
        .filter(|r| matches!(r, Extracted::New(_)))
        .count();
    assert_eq!(new, 1, "{results:?}");
    let want = tmp.path().join("want");
    applied(&[&blob[..]], &want);
    assert_eq!(tree(&store.path(&info.diff_id)), tree(&want));
    assert!(names_in(&store.root().join("tmp")).is_empty());
}

#[test]
fn a_layer_that_is_not_its_diff_id_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = base_layers(tmp.path());
    let (info, blob) = &layers[0];
    let store = SnapshotStore::open(tmp.path().join("store")).unwrap();

    let wrong = Digest::sha256(b"something else");
    let err = store.extract(&wrong, &blob[..]).unwrap_err();
    match &err {
        SnapshotError::DiffIdMismatch { expected, actual } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &info.diff_id);
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains(&wrong.to_string()), "{err}");

    // A truncated layer: the stream error names the snapshot.
    let err = store
        .extract(&info.diff_id, &blob[..blob.len() / 2])
        .unwrap_err();
    assert!(matches!(err, SnapshotError::Extract { .. }), "{err}");
    assert!(err.to_string().contains(&info.diff_id.to_string()), "{err}");

    assert!(!store.exists(&wrong));
    assert!(!store.exists(&info.diff_id));
    assert!(store.list().unwrap().is_empty());
    for dir in ["snapshots", "tmp", "active", "leases"] {
        assert!(
            names_in(&store.root().join(dir)).is_empty(),
            "{dir} is not empty"
        );
    }
}

#[test]
fn references_keep_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = base_layers(tmp.path());
    let store = SnapshotStore::open(tmp.path().join("store")).unwrap();
    let ids = extract_all(&store, &layers);

    let active = store.prepare("step", &ids[..1]).unwrap();
    let copy = store.prepare_copy("other step", &ids[..1]).unwrap();
    let lease = store.lease(&ids[1..2]).unwrap();
    assert_eq!(store.references(&ids[0]).unwrap(), 2);
    assert_eq!(store.references(&ids[1]).unwrap(), 1);
    assert_eq!(store.references(&ids[2]).unwrap(), 0);
    match store.remove(&ids[0]).unwrap_err() {
        SnapshotError::InUse {
            diff_id,
            references,
            ..
        } => assert_eq!((diff_id, references), (ids[0].clone(), 2)),
        other => panic!("unexpected error {other}"),
    }
    assert!(matches!(
        store.remove(&ids[1]),
        Err(SnapshotError::InUse { references: 1, .. })
    ));
    // A parent missing from the store is refused, and leaves nothing behind.
    let missing = Digest::sha256(b"missing");
    assert!(matches!(
        store.prepare("step", &[ids[0].clone(), missing.clone()]),
        Err(SnapshotError::NotFound { diff_id, .. }) if diff_id == missing
    ));
    assert_eq!(names_in(&store.root().join("active")).len(), 4);

    // prune keeps what is referenced, and what the caller keeps.
    let report = store.prune(|d| d == &ids[2]).unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    let mut referenced = ids[..2].to_vec();
    referenced.sort();
    assert_eq!(report.in_use, referenced);
    drop(copy);
    drop(lease);
    assert_eq!(store.references(&ids[0]).unwrap(), 1);
    let report = store.prune(|d| d == &ids[2]).unwrap();
    assert_eq!(report.removed, [ids[1].clone()]);
    assert_eq!(report.in_use, [ids[0].clone()]);
    assert!(!store.exists(&ids[1]));
    assert!(store.exists(&ids[0]));
    active.abort().unwrap();
    store.remove(&ids[0]).unwrap();
    assert!(matches!(
        store.remove(&ids[0]),
        Err(SnapshotError::NotFound { .. })
    ));
    assert_eq!(store.list().unwrap(), [ids[2].clone()]);
    for dir in ["tmp", "active", "leases"] {
        assert!(
            names_in(&store.root().join(dir)).is_empty(),
            "{dir} is not empty"
        );
    }
}

#[test]
fn prune_removes_what_dead_processes_left() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = base_layers(tmp.path());
    let store = SnapshotStore::open(tmp.path().join("store")).unwrap();
    let ids = extract_all(&store, &layers[..2]);
    let root = store.root().to_path_buf();

    // An active snapshot of a process that was killed: its lock file is there, unlocked.
    let state = format!(
        r#"{{"kind":"overlay","key":"killed","diff_ids":["{}"],"pid":1}}"#,
        ids[0]
    );
    fs::write(root.join("active/dead.lock"), &state).unwrap();
    write(&root.join("active/dead/upper/file"), "x");
    fs::create_dir_all(root.join("active/dead/work/work")).unwrap();
    fs::set_permissions(
        root.join("active/dead/work/work"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    // An extraction cut short, with and without its lock file; a lease of a dead process.
    write(&root.join("tmp/cut/fs/etc/passwd"), "x");
    fs::write(root.join("tmp/cut.lock"), b"").unwrap();
    write(&root.join("tmp/orphan/fs/x"), "x");
    fs::write(
        root.join("leases/old.lock"),
        format!(r#"{{"kind":"lease","diff_ids":["{}"],"pid":1}}"#, ids[1]),
    )
    .unwrap();
    // A lease held by another live process (flock(1) holds the lock while `sleep` runs).
    let live = root.join("leases/live.lock");
    fs::write(
        &live,
        format!(r#"{{"kind":"lease","diff_ids":["{}"],"pid":1}}"#, ids[1]),
    )
    .unwrap();
    // One process (the shell, then the `sleep` it becomes) holds the lock on its descriptor 9.
    let mut holder = Command::new("sh")
        .args([
            "-c",
            "exec 9<\"$0\" && flock -x 9 && echo locked && exec sleep 600",
        ])
        .arg(&live)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    io::BufRead::read_line(
        &mut io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "locked\n");
    assert_eq!(store.references(&ids[1]).unwrap(), 1);
    assert_eq!(
        store.references(&ids[0]).unwrap(),
        0,
        "a dead process references nothing"
    );

    let report = store.prune(|_| false).unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(report.stale_active, 1, "{report:?}");
    assert_eq!(report.stale_other, 3, "{report:?}");
    assert_eq!(report.removed, [ids[0].clone()]);
    assert_eq!(report.in_use, [ids[1].clone()]);
    assert!(names_in(&root.join("active")).is_empty());
    assert!(names_in(&root.join("tmp")).is_empty());
    assert_eq!(names_in(&root.join("leases")), ["live.lock"]);

    // Its holder gone, the lease is stale too.
    let report = store.prune(|_| false).unwrap();
    assert_eq!(report.removed, [ids[1].clone()]);
    assert_eq!(report.stale_other, 1);
    assert!(names_in(&root.join("leases")).is_empty());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn nothing_is_left_after_drop_or_a_failed_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = base_layers(tmp.path());
    let store = SnapshotStore::open(tmp.path().join("store")).unwrap();
    let ids = extract_all(&store, &layers);
    let active_dir = store.root().join("active");

    let overlay = store.prepare("dropped", &ids).unwrap();
    write(&overlay.upper().unwrap().join("new"), "x");
    let copy = store.prepare_copy("dropped", &ids).unwrap();
    write(&copy.copy_dir().unwrap().join("new"), "x");
    assert_eq!(names_in(&active_dir).len(), 4);
    drop(overlay);
    drop(copy);
    assert!(names_in(&active_dir).is_empty());
    assert_eq!(store.references(&ids[0]).unwrap(), 0);

    // A commit whose output fails: no layer, no snapshot, no active directory.
    #[derive(Debug)]
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let before = store.list().unwrap();
    for copy in [false, true] {
        let active = if copy {
            store.prepare_copy("failing", &ids).unwrap()
        } else {
            store.prepare("failing", &ids).unwrap()
        };
        let root = active.copy_dir().or(active.upper()).unwrap().to_path_buf();
        write(&root.join("big"), &"x".repeat(1 << 20));
        let err = active
            .commit(Broken, &layer_opts(Compression::Gzip, STEP_EPOCH))
            .unwrap_err();
        assert!(matches!(err, SnapshotError::Commit { .. }), "{err}");
        assert!(err.to_string().contains("failing"), "{err}");
        assert_eq!(store.list().unwrap(), before);
        assert!(names_in(&active_dir).is_empty());
        assert!(names_in(&store.root().join("tmp")).is_empty());
        assert!(names_in(&store.root().join("leases")).is_empty());
    }
}

#[test]
fn a_mounted_snapshot_is_neither_committed_nor_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let layers = base_layers(tmp.path());
    let store = SnapshotStore::open(tmp.path().join("store")).unwrap();
    let ids = extract_all(&store, &layers[..1]);
    let active = store.prepare("mounted", &ids).unwrap();
    let dir = active.dir().to_path_buf();
    let merged = tmp.path().join("merged");
    let mount = mount_overlay(&active.overlay_options().unwrap(), &merged, None);
    write(&merged.join("new"), "x");

    let err = active
        .commit(Vec::new(), &layer_opts(Compression::None, STEP_EPOCH))
        .unwrap_err();
    assert!(matches!(err, SnapshotError::Mounted { .. }), "{err}");
    // Dropped while mounted: left in place, for prune; and its lower snapshot stays too.
    assert!(dir.join("upper/new").exists());
    let report = store.prune(|_| false).unwrap();
    assert_eq!(report.stale_active, 0);
    assert_eq!(report.in_use, ids);
    assert!(matches!(
        store.remove(&ids[0]),
        Err(SnapshotError::Mounted { .. })
    ));
    assert!(dir.exists());

    drop(mount);
    let report = store.prune(|_| false).unwrap();
    assert_eq!(report.stale_active, 1);
    assert_eq!(report.removed, ids);
    assert!(!dir.exists());
    assert!(names_in(&store.root().join("active")).is_empty());
}

#[test]
fn the_copy_ignores_what_the_step_did_not_touch() {
    // Files the step rewrote with the same bytes and metadata are not changes; files it only
    // read are not even compared.
    let tmp = tempfile::tempdir().unwrap();
    let layers = base_layers(tmp.path());
    let store = SnapshotStore::open(tmp.path().join("store")).unwrap();
    let ids = extract_all(&store, &layers);
    let active: Active = store.prepare_copy("noop", &ids).unwrap();
    let root = active.copy_dir().unwrap().to_path_buf();
    let meta = fs::symlink_metadata(root.join("etc/passwd")).unwrap();
    let data = fs::read(root.join("etc/passwd")).unwrap();
    fs::write(root.join("etc/passwd"), &data).unwrap();
    filetime::set_file_mtime(
        root.join("etc/passwd"),
        filetime::FileTime::from_last_modification_time(&meta),
    )
    .unwrap();
    let _ = fs::read(root.join("usr/lib/lib.so")).unwrap();
    assert_eq!(active.diff().unwrap(), Vec::<Change>::new());
    // Same size and mtime, other bytes: the content decides.
    fs::write(
        root.join("etc/passwd"),
        data.iter().map(|b| b ^ 1).collect::<Vec<u8>>(),
    )
    .unwrap();
    filetime::set_file_mtime(
        root.join("etc/passwd"),
        filetime::FileTime::from_last_modification_time(&meta),
    )
    .unwrap();
    assert_eq!(
        active.diff().unwrap(),
        [
            change("etc", ChangeKind::Modify),
            change("etc/passwd", ChangeKind::Modify)
        ]
    );
}

#[test]
fn a_directory_over_a_whiteout_of_its_own_layer_is_opaque() {
    // `.wh.d` then `d/` in one layer: `d` replaces the lower `d`, whose content must not show.
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write(&base.join("d/old"), "old");
    write(&base.join("e/kept"), "kept");
    let (base_info, base_blob) = layer(&base);
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in [
        (".wh.d", tar::EntryType::Regular, &b""[..]),
        ("d/", tar::EntryType::Directory, &b""[..]),
        ("d/new", tar::EntryType::Regular, &b"new"[..]),
        ("e/", tar::EntryType::Directory, &b""[..]),
        ("e/.wh.gone-anyway", tar::EntryType::Regular, &b""[..]),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }
    let top = b.into_inner().unwrap();
    let top_id = Digest::sha256(&top);

    let store = SnapshotStore::open(tmp.path().join("store")).unwrap();
    store.extract(&base_info.diff_id, &base_blob[..]).unwrap();
    store.extract(&top_id, &top[..]).unwrap();
    let snap = store.path(&top_id);
    assert!(is_opaque(&snap.join("d")));
    assert!(!is_opaque(&snap.join("e")));
    let wh = fs::symlink_metadata(snap.join("e/gone-anyway")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);

    let truth = tmp.path().join("truth");
    applied(&[&base_blob[..], &top[..]], &truth);
    let parents = [base_info.diff_id.clone(), top_id.clone()];
    let copy = store.prepare_copy("c", &parents).unwrap();
    assert_eq!(tree(copy.copy_dir().unwrap()), tree(&truth));
    let active = store.prepare("o", &parents).unwrap();
    let merged = tmp.path().join("merged");
    let mount = mount_overlay(&active.overlay_options().unwrap(), &merged, None);
    assert_eq!(tree(&merged), tree(&truth));
    drop(mount);
}
