//! Changesets over lower layers: whiteouts, opaque directories, overwrite rules, and an
//! overlayfs upper directory turned into a layer (this test mounts overlayfs, so it runs as root,
//! as the full suite does).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_layerstore::archive::{
    ApplyOptions, ArchiveError, Change, ChangeKind, TarOptions, apply_layer, write_changes,
    write_dir,
};

/// Relative path -> (kind, mode, content or link target) of every entry under `root`.
fn tree(root: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
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
            } else {
                ('s', Vec::new())
            };
            (rel, (kind, meta.mode() & 0o7777, data))
        })
        .collect()
}

fn names(root: &Path) -> Vec<String> {
    tree(root).into_keys().collect()
}

fn entry_names(tar: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect()
}

fn write(path: &Path, data: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// The spec's example base layer, plus a few more paths, applied to `dest`.
fn lower(dest: &Path, scratch: &Path) {
    let src = scratch.join("lower-src");
    write(&src.join("etc/my-app-config"), "old config");
    write(&src.join("etc/keep"), "keep");
    write(&src.join("bin/my-app-binary"), "binary");
    write(&src.join("bin/my-app-tools"), "tools v1");
    write(&src.join("bin/tools/my-app-tool-one"), "one");
    write(&src.join("a/b/c/bar"), "bar");
    write(&src.join("a/other"), "other");
    write(&src.join("gone/deep/file"), "gone");
    write(&src.join("x"), "file x");
    symlink("bin", src.join("link")).unwrap();
    let tar = write_dir(&src, Vec::new(), &TarOptions::default()).unwrap();
    apply_layer(&tar[..], dest, &ApplyOptions::default()).unwrap();
}

#[test]
fn changesets_apply_over_a_lower_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("rootfs");
    lower(&dest, tmp.path());

    // The new state of the changed paths.
    let up = tmp.path().join("upper");
    write(&up.join("etc/my-app.d/default.cfg"), "new config");
    write(&up.join("bin/my-app-tools"), "tools v2");
    write(&up.join("a/b/c/foo"), "foo");
    write(&up.join("x/inner"), "x is a directory now");
    write(&up.join("link"), "link is a file now");
    fs::set_permissions(up.join("bin"), fs::Permissions::from_mode(0o700)).unwrap();
    let changes = [
        Change::delete("/etc/my-app-config"),
        Change::add("etc/my-app.d"),
        Change::add("etc/my-app.d/default.cfg"),
        Change::modify("bin/my-app-tools"),
        Change::modify("bin"),
        Change::new("a", ChangeKind::Opaque),
        Change::add("a/b"),
        Change::add("a/b/c"),
        Change::add("a/b/c/foo"),
        Change::delete("gone"),
        Change::delete("gone/deep/file"),
        Change::modify("x"),
        Change::add("x/inner"),
        Change::modify("link"),
    ];
    let tar = write_changes(&up, &changes, Vec::new(), &TarOptions::default()).unwrap();
    assert_eq!(
        entry_names(&tar),
        [
            ".wh.gone",
            "a/",
            "a/.wh..wh..opq",
            "a/b/",
            "a/b/c/",
            "a/b/c/foo",
            "bin/",
            "bin/my-app-tools",
            "etc/.wh.my-app-config",
            "etc/my-app.d/",
            "etc/my-app.d/default.cfg",
            "link",
            "x/",
            "x/inner",
        ]
    );

    let stats = apply_layer(&tar[..], &dest, &ApplyOptions::default()).unwrap();
    assert_eq!(stats.whiteouts, 3);
    let got = tree(&dest);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        [
            "a",
            "a/b",
            "a/b/c",
            "a/b/c/foo",
            "bin",
            "bin/my-app-binary",
            "bin/my-app-tools",
            "bin/tools",
            "bin/tools/my-app-tool-one",
            "etc",
            "etc/keep",
            "etc/my-app.d",
            "etc/my-app.d/default.cfg",
            "link",
            "x",
            "x/inner",
        ]
    );
    assert_eq!(got["bin/my-app-tools"].2, b"tools v2");
    // A directory over a directory keeps its contents and takes the new metadata.
    assert_eq!(got["bin"].1, 0o700);
    assert_eq!(got["link"].0, 'f');
    assert_eq!(got["x"].0, 'd');
}

#[test]
fn opaque_whiteout_after_its_siblings_keeps_them() {
    // The spec's second opaque example: the marker comes last and still applies first.
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("rootfs");
    lower(&dest, tmp.path());

    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_path(path).unwrap();
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add("a/", tar::EntryType::Directory, b"");
    add("a/b/", tar::EntryType::Directory, b"");
    add("a/b/c/", tar::EntryType::Directory, b"");
    add("a/b/c/foo", tar::EntryType::Regular, b"foo");
    add("a/.wh..wh..opq", tar::EntryType::Regular, b"");
    let tar = b.into_inner().unwrap();
    apply_layer(&tar[..], &dest, &ApplyOptions::default()).unwrap();
    let got = names(&dest);
    assert!(got.contains(&"a/b/c/foo".to_string()));
    assert!(!got.contains(&"a/b/c/bar".to_string()));
    assert!(!got.contains(&"a/other".to_string()));
    assert!(got.contains(&"bin/my-app-binary".to_string()));
}

#[test]
fn whiteouts_hide_lower_layers_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("rootfs");
    lower(&dest, tmp.path());
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_path(path).unwrap();
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add("new", b"from this layer");
    add(".wh.new", b"");
    add(".wh.x", b"");
    add(".wh.missing", b"");
    add("nowhere/.wh.missing", b"");
    let tar = b.into_inner().unwrap();
    let stats = apply_layer(&tar[..], &dest, &ApplyOptions::default()).unwrap();
    assert_eq!(stats.whiteouts, 4);
    let got = names(&dest);
    assert!(got.contains(&"new".to_string()));
    assert!(!got.contains(&"x".to_string()));
    assert!(!got.iter().any(|n| n.contains(".wh.")));
    assert!(!got.contains(&"nowhere".to_string()));
}

#[test]
fn opaque_directories_from_overlay_attributes() {
    // An upper directory laid out by hand as overlayfs lays it out.
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("rootfs");
    lower(&dest, tmp.path());
    let up = tmp.path().join("upper");
    write(&up.join("a/new"), "new");
    xattr::set(up.join("a"), "trusted.overlay.opaque", b"y").unwrap();
    let wh = CString::new(up.join("x").as_os_str().as_bytes()).unwrap();
    // SAFETY: `wh` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR, 0) }, 0);

    let tar = write_dir(&up, Vec::new(), &TarOptions::default()).unwrap();
    assert_eq!(
        entry_names(&tar),
        [".wh.x", "a/", "a/.wh..wh..opq", "a/new"]
    );
    // The overlay attribute itself is not archived.
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        assert!(entry.pax_extensions().unwrap().is_none());
    }
    apply_layer(&tar[..], &dest, &ApplyOptions::default()).unwrap();
    let got = names(&dest);
    assert!(got.contains(&"a/new".to_string()));
    assert!(!got.contains(&"a/b".to_string()));
    assert!(!got.contains(&"a/other".to_string()));
    assert!(!got.contains(&"x".to_string()));

    // write_changes sees the same markers.
    let changes = [
        Change::modify("a"),
        Change::add("a/new"),
        Change::modify("x"),
    ];
    let tar = write_changes(&up, &changes, Vec::new(), &TarOptions::default()).unwrap();
    assert_eq!(
        entry_names(&tar),
        [".wh.x", "a/", "a/.wh..wh..opq", "a/new"]
    );

    // Without overlay handling the device node is archived as it is.
    let opts = TarOptions {
        overlay_whiteouts: false,
        ..TarOptions::default()
    };
    let tar = write_dir(&up, Vec::new(), &opts).unwrap();
    assert_eq!(entry_names(&tar), ["a/", "a/new", "x"]);

    // Upper directories that use redirects cannot be diffed from the upper directory alone.
    xattr::set(up.join("a"), "trusted.overlay.redirect", b"/b").unwrap();
    let err = write_dir(&up, Vec::new(), &TarOptions::default()).unwrap_err();
    assert!(
        matches!(err, ArchiveError::UnsupportedOverlay { .. }),
        "{err}"
    );
}

#[test]
fn overlay_attributes_in_a_layer_are_not_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    h.set_path("d/").unwrap();
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    let tar = b.into_inner().unwrap();
    let dest = tmp.path().join("rootfs");
    let stats = apply_layer(&tar[..], &dest, &ApplyOptions::default()).unwrap();
    assert_eq!(stats.xattrs_skipped, 1);
    assert_eq!(
        xattr::get(dest.join("d"), "trusted.overlay.opaque").unwrap(),
        None
    );
}

/// Unmounts on drop, so a failing assertion does not leave the mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn an_overlayfs_upper_directory_is_a_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let lowerdir = tmp.path().join("lower");
    lower(&lowerdir, tmp.path());
    let (upper, work, merged) = (
        tmp.path().join("upper"),
        tmp.path().join("work"),
        tmp.path().join("merged"),
    );
    for d in [&upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            lowerdir.display(),
            upper.display(),
            work.display()
        ))
        .arg(&merged)
        .status()
        .unwrap();
    assert!(status.success(), "mounting overlayfs");
    let mount = Mount(merged.clone());

    // What a RUN step might do.
    fs::remove_file(merged.join("etc/my-app-config")).unwrap();
    fs::remove_dir_all(merged.join("gone")).unwrap();
    fs::remove_dir_all(merged.join("a")).unwrap();
    write(&merged.join("a/b/c/foo"), "foo");
    fs::write(merged.join("bin/my-app-tools"), "tools v2").unwrap();
    fs::set_permissions(merged.join("etc/keep"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&merged.join("etc/my-app.d/default.cfg"), "new config");
    fs::remove_file(merged.join("x")).unwrap();
    fs::create_dir(merged.join("x")).unwrap();
    let want = tree(&merged);
    drop(mount);

    let tar = write_dir(&upper, Vec::new(), &TarOptions::default()).unwrap();
    let names = entry_names(&tar);
    assert!(
        names.contains(&"etc/.wh.my-app-config".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&".wh.gone".to_string()), "{names:?}");
    assert!(names.contains(&"a/.wh..wh..opq".to_string()), "{names:?}");

    // The lower layer plus this one gives what the container saw.
    let rootfs = tmp.path().join("rootfs");
    lower(&rootfs, &tmp.path().join("again"));
    apply_layer(&tar[..], &rootfs, &ApplyOptions::default()).unwrap();
    assert_eq!(tree(&rootfs), want);
}
