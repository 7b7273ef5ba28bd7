//! Round trips through the tar writer and the layer applier: random trees (proptest), gzip and
//! zstd layers, `SOURCE_DATE_EPOCH`, determinism, and GNU tar as an independent reader.
//!
//! These tests chown, mknod and set `user.*` xattrs: they run as root on a filesystem with user
//! xattrs, as the full suite does.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_layerstore::archive::{
    ApplyOptions, ArchiveError, TarOptions, apply_layer, write_changes, write_dir,
};
use filetime::FileTime;
use proptest::prelude::*;

/// Everything the layer format carries about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
    /// The first path (in walk order) of the same inode, for files with several links.
    hardlink_of: Option<PathBuf>,
    xattrs: Vec<(OsString, Vec<u8>)>,
    mtime: i64,
    rdev: u64,
}

/// The tree under `root` (not `root` itself), keyed by relative path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut inodes: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .follow_links(false)
    {
        let entry = entry.unwrap();
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let meta = fs::symlink_metadata(path).unwrap();
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_fifo() {
                "fifo"
            } else if ft.is_char_device() {
                "char"
            } else if ft.is_block_device() {
                "block"
            } else {
                "other"
            }
        };
        let hardlink_of = if !ft.is_dir() && meta.nlink() > 1 {
            Some(
                inodes
                    .entry((meta.dev(), meta.ino()))
                    .or_insert_with(|| rel.clone())
                    .clone(),
            )
        } else {
            None
        };
        let mut xattrs: Vec<(OsString, Vec<u8>)> = xattr::list(path)
            .unwrap()
            .filter(|k| k.as_bytes() != b"security.selinux")
            .map(|k| {
                let v = xattr::get(path, &k).unwrap().unwrap_or_default();
                (k, v)
            })
            .collect();
        xattrs.sort();
        out.insert(
            rel,
            Node {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    meta.mode() & 0o7777
                },
                uid: meta.uid(),
                gid: meta.gid(),
                size: if ft.is_file() { meta.len() } else { 0 },
                content: ft.is_file().then(|| fs::read(path).unwrap()),
                link: ft.is_symlink().then(|| fs::read_link(path).unwrap()),
                hardlink_of,
                xattrs,
                mtime: meta.mtime(),
                rdev: meta.rdev(),
            },
        );
    }
    out
}

fn mkfifo(path: &Path, mode: u32) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    let ret = unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) };
    assert_eq!(ret, 0, "mkfifo {}", path.display());
}

fn mknod_char(path: &Path, major: u32, minor: u32) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    let ret = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(ret, 0, "mknod {}", path.display());
}

fn set_mtime(path: &Path, secs: i64) {
    filetime::set_symlink_file_times(
        path,
        FileTime::from_unix_time(secs, 0),
        FileTime::from_unix_time(secs, 0),
    )
    .unwrap();
}

fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn tar_of(root: &Path, opts: &TarOptions) -> Vec<u8> {
    write_dir(root, Vec::new(), opts).unwrap()
}

/// One item of a random tree.
#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(usize),
    Fifo,
}

#[derive(Debug, Clone)]
struct Item {
    parent: usize,
    name: String,
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattr: Option<(String, Vec<u8>)>,
}

fn name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,11}",
        1 => "[a-z]{100,200}",
    ]
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Dir),
        4 => prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..2048),
            1 => proptest::collection::vec(any::<u8>(), 0..300_000),
        ].prop_map(Kind::File),
        1 => prop_oneof!["[a-z./]{1,30}", "/[a-z]{120,160}"].prop_map(Kind::Symlink),
        1 => any::<usize>().prop_map(Kind::Hardlink),
        1 => Just(Kind::Fifo),
    ]
}

fn id_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![6 => 0u32..70_000, 1 => Just(3_000_000u32)]
}

fn item_strategy() -> impl Strategy<Value = Item> {
    (
        any::<usize>(),
        name_strategy(),
        kind_strategy(),
        0u32..0o10000,
        id_strategy(),
        id_strategy(),
        0i64..2_000_000_000,
        proptest::option::of((
            "user\\.[a-z]{1,10}",
            proptest::collection::vec(any::<u8>(), 0..64),
        )),
    )
        .prop_map(|(parent, name, kind, mode, uid, gid, mtime, xattr)| Item {
            parent,
            name,
            kind,
            mode,
            uid,
            gid,
            mtime,
            xattr,
        })
}

/// Builds the tree the items describe under `root`.
fn build_tree(root: &Path, items: &[Item]) {
    let mut dirs: Vec<(PathBuf, &Item)> = Vec::new();
    let mut dir_paths: Vec<PathBuf> = vec![root.to_path_buf()];
    let mut files: Vec<PathBuf> = Vec::new();
    for item in items {
        let parent = &dir_paths[item.parent % dir_paths.len()];
        let path = parent.join(&item.name);
        if path.as_os_str().len() > 3000 || fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        let kind = match (&item.kind, files.is_empty()) {
            (Kind::Hardlink(_), true) => Kind::File(Vec::new()),
            (k, _) => k.clone(),
        };
        match kind {
            Kind::Dir => {
                fs::create_dir(&path).unwrap();
                lchown(&path, item.uid, item.gid);
                if let Some((k, v)) = &item.xattr {
                    xattr::set(&path, k, v).unwrap();
                }
                dir_paths.push(path.clone());
                dirs.push((path, item));
            }
            Kind::File(data) => {
                fs::write(&path, data).unwrap();
                lchown(&path, item.uid, item.gid);
                fs::set_permissions(&path, fs::Permissions::from_mode(item.mode)).unwrap();
                if let Some((k, v)) = &item.xattr {
                    xattr::set(&path, k, v).unwrap();
                }
                set_mtime(&path, item.mtime);
                files.push(path);
            }
            Kind::Symlink(target) => {
                symlink(&target, &path).unwrap();
                lchown(&path, item.uid, item.gid);
                set_mtime(&path, item.mtime);
            }
            Kind::Hardlink(i) => {
                let target = &files[i % files.len()];
                fs::hard_link(target, &path).unwrap();
            }
            Kind::Fifo => {
                mkfifo(&path, 0o600);
                lchown(&path, item.uid, item.gid);
                fs::set_permissions(&path, fs::Permissions::from_mode(item.mode)).unwrap();
                set_mtime(&path, item.mtime);
            }
        }
    }
    // Directory modes and mtimes last, deepest first, once nothing is added below them.
    for (path, item) in dirs.iter().rev() {
        fs::set_permissions(path, fs::Permissions::from_mode(item.mode)).unwrap();
        set_mtime(path, item.mtime);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// write_dir then apply_layer reproduces the tree exactly, and writing the copy gives the
    /// same bytes.
    #[test]
    fn random_trees_round_trip(items in proptest::collection::vec(item_strategy(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let dst = tmp.path().join("dst");
        fs::create_dir(&src).unwrap();
        build_tree(&src, &items);

        let tar = tar_of(&src, &TarOptions::default());
        let stats = apply_layer(&tar[..], &dst, &ApplyOptions::default()).unwrap();
        let want = snapshot(&src);
        let got = snapshot(&dst);
        prop_assert_eq!(stats.entries, want.len() as u64);
        prop_assert_eq!(stats.xattrs_skipped, 0);
        prop_assert_eq!(&got, &want);
        prop_assert!(tar == tar_of(&dst, &TarOptions::default()), "re-archived copy differs");
    }
}

/// A fixed tree with every kind of entry and every header extension.
fn rich_tree(root: &Path) {
    let long_dir = root.join("d".repeat(120));
    let deep = long_dir.join("e".repeat(100)).join("f".repeat(90));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("g".repeat(99)), b"deep and long").unwrap(); // > 255 bytes
    fs::write(long_dir.join("short"), b"x").unwrap(); // > 100 bytes, ustar prefix split
    fs::write(root.join("h".repeat(150)), b"y").unwrap(); // a single name > 100 bytes
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir(root.join("setgid")).unwrap();
    fs::set_permissions(root.join("setgid"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::write(root.join("big-ids"), b"ids").unwrap();
    lchown(&root.join("big-ids"), 3_000_000, 4_000_000);
    symlink(
        "/usr/lib/".to_string() + &"t".repeat(150),
        root.join("long-link"),
    )
    .unwrap();
    symlink("setuid", root.join("rel-link")).unwrap();
    fs::hard_link(root.join("setuid"), root.join("zz-hardlink")).unwrap();
    mkfifo(&root.join("fifo"), 0o640);
    mknod_char(&root.join("null"), 1, 3);
    xattr::set(root.join("setuid"), "user.comment", b"hello\nworld=1").unwrap();
    xattr::set(
        root.join("setuid"),
        "security.capability",
        &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    )
    .unwrap();
    xattr::set(root.join("sticky"), "user.dir", b"1").unwrap();
    for entry in walkdir::WalkDir::new(root)
        .min_depth(1)
        .contents_first(true)
    {
        set_mtime(entry.unwrap().path(), 1_600_000_000);
    }
    set_mtime(&root.join("fifo"), 1_700_000_000);
}

#[test]
fn rich_tree_round_trips_and_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    rich_tree(&src);
    let tar = tar_of(&src, &TarOptions::default());
    assert_eq!(
        tar,
        tar_of(&src, &TarOptions::default()),
        "same tree, same bytes"
    );

    let dst = tmp.path().join("dst");
    apply_layer(&tar[..], &dst, &ApplyOptions::default()).unwrap();
    assert_eq!(snapshot(&dst), snapshot(&src));
    assert_eq!(tar, tar_of(&dst, &TarOptions::default()));

    // Entry names: relative, directories with a trailing slash, sorted depth first.
    let mut archive = tar::Archive::new(&tar[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| Path::new(a).cmp(Path::new(b)));
    assert_eq!(names, sorted);
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with('/') && !n.starts_with("./"))
    );
    assert!(names.contains(&"sticky/".to_string()));
    assert!(names.iter().any(|n| n.len() > 255));
}

#[test]
fn gzip_and_zstd_layers_apply_like_plain_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    rich_tree(&src);
    let tar = tar_of(&src, &TarOptions::default());
    let want = snapshot(&src);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();

    for (name, layer) in [("gzip", gz), ("zstd", zst)] {
        let dst = tmp.path().join(name);
        let stats = apply_layer(&layer[..], &dst, &ApplyOptions::default()).unwrap();
        assert_eq!(stats.stream_bytes, tar.len() as u64, "{name}");
        assert_eq!(snapshot(&dst), want, "{name}");
    }

    // A corrupt gzip trailer is caught: the applier reads the layer to its end.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).unwrap();
    let mut gz = gz.finish().unwrap();
    let n = gz.len();
    gz[n - 6] ^= 0xff; // inside the CRC32
    let err = apply_layer(&gz[..], &tmp.path().join("bad"), &ApplyOptions::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::Stream { .. }), "{err}");
}

#[test]
fn source_date_epoch_clamps_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/new"), b"n").unwrap();
    fs::write(src.join("old"), b"o").unwrap();
    symlink("old", src.join("link")).unwrap();
    set_mtime(&src.join("dir/new"), 2_000_000_000);
    set_mtime(&src.join("old"), 1_000);
    set_mtime(&src.join("link"), 1_999_999_999);
    set_mtime(&src.join("dir"), 1_900_000_000);

    let epoch = 1_500_000_000;
    let opts = TarOptions {
        source_date_epoch: Some(epoch),
        ..TarOptions::default()
    };
    let tar = tar_of(&src, &opts);
    let dst = tmp.path().join("dst");
    apply_layer(&tar[..], &dst, &ApplyOptions::default()).unwrap();
    let got = snapshot(&dst);
    assert_eq!(got[Path::new("dir")].mtime, epoch);
    assert_eq!(got[Path::new("dir/new")].mtime, epoch);
    assert_eq!(got[Path::new("link")].mtime, epoch);
    assert_eq!(got[Path::new("old")].mtime, 1_000);

    // Without the option, mtimes are the files' own.
    let tar = tar_of(&src, &TarOptions::default());
    let dst = tmp.path().join("dst2");
    apply_layer(&tar[..], &dst, &ApplyOptions::default()).unwrap();
    assert_eq!(snapshot(&dst)[Path::new("dir/new")].mtime, 2_000_000_000);

    // Whiteouts get the epoch as their time.
    let tar = write_changes(
        &src,
        &[berth_layerstore::archive::Change::delete("gone")],
        Vec::new(),
        &opts,
    )
    .unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let entry = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(&*entry.path_bytes(), b".wh.gone");
    assert_eq!(entry.header().mtime().unwrap(), epoch as u64);
}

#[test]
fn gnu_tar_reads_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    rich_tree(&src);
    let tar_path = tmp.path().join("layer.tar");
    fs::write(&tar_path, tar_of(&src, &TarOptions::default())).unwrap();

    let list = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-tvf")
        .arg(&tar_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8(list.stdout).unwrap();
    let stderr = String::from_utf8(list.stderr).unwrap();
    assert!(list.status.success(), "tar -tvf failed: {stderr}");
    assert!(stderr.is_empty(), "tar -tvf warned: {stderr}");
    let deep = format!(
        "{}/{}/{}/{}",
        "d".repeat(120),
        "e".repeat(100),
        "f".repeat(90),
        "g".repeat(99)
    );
    // Each expected line: its start (mode, owner) and its end (size or device, name).
    let lines: Vec<&str> = stdout.lines().collect();
    let expect = |start: &str, end: &str| {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(start) && l.ends_with(end)),
            "no line `{start} ... {end}` in:\n{stdout}"
        );
    };
    expect("-rwsr-xr-x 0/0", " setuid");
    expect("hrwsr-xr-x 0/0", " zz-hardlink link to setuid");
    expect("drwxrwxrwt 0/0", " sticky/");
    expect("drwxrwsr-x 0/0", " setgid/");
    expect("-rw-r--r-- 3000000/4000000", " big-ids");
    expect("prw-r----- 0/0", " fifo");
    expect("crw-r--r-- 0/0", " null");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" 1,3 ") && l.ends_with(" null"))
    );
    expect("lrwxrwxrwx 0/0", " rel-link -> setuid");
    expect(
        "lrwxrwxrwx 0/0",
        &format!(" long-link -> /usr/lib/{}", "t".repeat(150)),
    );
    expect("-rw-r--r-- 0/0", &format!(" {deep}"));
    expect("-rw-r--r-- 0/0", &format!(" {}", "h".repeat(150)));
    assert_eq!(lines.len(), snapshot(&src).len());

    // GNU tar extracts it to the same tree, xattrs included.
    let out = tmp.path().join("gnu");
    fs::create_dir(&out).unwrap();
    let extract = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&tar_path)
        .arg("-C")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        extract.status.success(),
        "tar -x failed: {}",
        String::from_utf8_lossy(&extract.stderr)
    );
    assert_eq!(snapshot(&out), snapshot(&src));
}

#[test]
fn files_of_8_gib_and_more_get_a_pax_size() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let size = (8u64 << 30) + 1;
    let f = fs::File::create(src.join("huge")).unwrap();
    f.set_len(size).unwrap();
    drop(f);

    /// Keeps the first bytes written and counts the rest.
    struct Head {
        head: Vec<u8>,
        total: u64,
    }
    impl Write for Head {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let keep = buf.len().min(4096usize.saturating_sub(self.head.len()));
            self.head.extend_from_slice(&buf[..keep]);
            self.total += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let out = write_dir(
        &src,
        Head {
            head: Vec::new(),
            total: 0,
        },
        &TarOptions::default(),
    )
    .unwrap();
    // PAX header + its data block + header + data rounded up + two end blocks.
    assert_eq!(out.total, 512 + 512 + 512 + size.div_ceil(512) * 512 + 1024);
    let pax = String::from_utf8_lossy(&out.head[512..1024]);
    assert!(pax.starts_with("19 size=8589934593\n"), "{pax:?}");
    let mut archive = tar::Archive::new(&out.head[..]);
    let entry = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(&*entry.path_bytes(), b"huge");
    assert_eq!(entry.size(), size);
}

#[test]
fn apply_reports_what_it_did() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::write(src.join("a/f"), vec![7u8; 10_000]).unwrap();
    let tar = tar_of(&src, &TarOptions::default());
    let stats = apply_layer(&tar[..], &tmp.path().join("dst"), &ApplyOptions::default()).unwrap();
    assert_eq!(stats.entries, 2);
    assert_eq!(stats.bytes, 10_000);
    assert_eq!(stats.stream_bytes, tar.len() as u64);
    assert_eq!(stats.whiteouts, 0);
    let mut data = Vec::new();
    fs::File::open(tmp.path().join("dst/a/f"))
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert_eq!(data, vec![7u8; 10_000]);
}
