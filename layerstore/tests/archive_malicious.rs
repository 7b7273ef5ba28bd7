//! Hostile layers: each is refused with the error that names the problem, and nothing is written
//! outside the destination (a canary directory next to it stays as it was).

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_layerstore::archive::{ApplyOptions, ArchiveError, apply_layer};
use tar::EntryType;

/// A destination with a canary directory beside it.
struct Sandbox {
    tmp: tempfile::TempDir,
    dest: PathBuf,
    canary: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let canary = tmp.path().join("canary");
        fs::create_dir(&dest).unwrap();
        fs::create_dir(&canary).unwrap();
        fs::write(canary.join("secret"), b"keep").unwrap();
        Sandbox { tmp, dest, canary }
    }

    /// The canary, as an absolute path without its leading `/`.
    fn canary_rel(&self) -> String {
        self.canary
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .to_string()
    }

    fn apply(&self, layer: &[u8]) -> Result<(), ArchiveError> {
        self.apply_with(layer, &ApplyOptions::default())
    }

    fn apply_with(&self, layer: &[u8], opts: &ApplyOptions) -> Result<(), ArchiveError> {
        apply_layer(layer, &self.dest, opts).map(|_| ())
    }

    /// Nothing but `dest` and the untouched canary next to it.
    fn assert_outside_untouched(&self) {
        let mut names: Vec<String> = fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["canary", "dest"]);
        let canary: Vec<String> = fs::read_dir(&self.canary)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(canary, ["secret"]);
        let secret = self.canary.join("secret");
        assert_eq!(fs::read(&secret).unwrap(), b"keep");
        let meta = fs::symlink_metadata(&secret).unwrap();
        assert_eq!(meta.nlink(), 1, "the canary was hardlinked");
        assert_eq!(meta.mode() & 0o7777, 0o644);
    }
}

/// Builds tars entry by entry with raw names, which `tar::Header::set_path` would refuse.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn entry(mut self, kind: EntryType, path: &str, link: Option<&str>, data: &[u8]) -> Layer {
        let mut records: Vec<(&str, &[u8])> = Vec::new();
        if path.len() > 100 {
            records.push(("path", path.as_bytes()));
        }
        if let Some(link) = link.filter(|l| l.len() > 100) {
            records.push(("linkpath", link.as_bytes()));
        }
        if !records.is_empty() {
            self.0.append_pax_extensions(records).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h.set_size(data.len() as u64);
        let ustar = h.as_ustar_mut().unwrap();
        ustar.set_device_major(0);
        ustar.set_device_minor(0);
        let n = path.len().min(100);
        ustar.name[..n].copy_from_slice(&path.as_bytes()[..n]);
        if let Some(link) = link {
            let n = link.len().min(100);
            ustar.linkname[..n].copy_from_slice(&link.as_bytes()[..n]);
        }
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(self, path: &str, data: &[u8]) -> Layer {
        self.entry(EntryType::Regular, path, None, data)
    }

    fn dir(self, path: &str) -> Layer {
        self.entry(EntryType::Directory, path, None, b"")
    }

    fn symlink(self, path: &str, target: &str) -> Layer {
        self.entry(EntryType::Symlink, path, Some(target), b"")
    }

    fn hardlink(self, path: &str, target: &str) -> Layer {
        self.entry(EntryType::Link, path, Some(target), b"")
    }

    fn pax(mut self, records: &[(&str, &[u8])]) -> Layer {
        self.0
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

#[test]
fn parent_dir_escape_is_refused() {
    let sb = Sandbox::new();
    let err = sb
        .apply(&Layer::new().file("../canary/x", b"pwned").bytes())
        .unwrap_err();
    assert!(
        matches!(&err, ArchiveError::PathEscapesRoot { entry } if entry == Path::new("../canary/x")),
        "{err}"
    );
    sb.assert_outside_untouched();
}

#[test]
fn nested_parent_dir_escape_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .dir("a/")
        .file("a/../../canary/x", b"pwned")
        .bytes();
    let err = sb.apply(&layer).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::PathEscapesRoot { entry } if entry == Path::new("a/../../canary/x")),
        "{err}"
    );
    assert!(err.to_string().contains("a/../../canary/x"));
    sb.assert_outside_untouched();
}

#[test]
fn parent_dir_inside_the_root_is_cleaned() {
    let sb = Sandbox::new();
    sb.apply(&Layer::new().dir("a/").file("a/../b", b"ok").bytes())
        .unwrap();
    assert_eq!(fs::read(sb.dest.join("b")).unwrap(), b"ok");
    sb.assert_outside_untouched();
}

#[test]
fn absolute_paths_are_refused() {
    let sb = Sandbox::new();
    let abs = format!("{}/x", sb.canary.display());
    let err = sb
        .apply(
            &Layer::new()
                .file("ok", b"fine")
                .file(&abs, b"pwned")
                .bytes(),
        )
        .unwrap_err();
    match &err {
        ArchiveError::AbsolutePath { entry } => assert_eq!(entry, Path::new(&abs)),
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("absolute"), "{err}");
    assert!(fs::symlink_metadata(sb.dest.join(sb.canary_rel()).join("x")).is_err());
    sb.assert_outside_untouched();
}

#[test]
fn symlink_to_parent_then_file_through_it_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("a", "..")
        .file("a/canary/x", b"pwned")
        .bytes();
    let err = sb.apply(&layer).unwrap_err();
    match &err {
        ArchiveError::ThroughSymlink { entry, component } => {
            assert_eq!(entry, Path::new("a/canary/x"));
            assert_eq!(component, Path::new("a"));
        }
        other => panic!("unexpected error {other}"),
    }
    // The symlink itself is fine (a target may point anywhere); it was never followed.
    assert_eq!(
        fs::read_link(sb.dest.join("a")).unwrap(),
        PathBuf::from("..")
    );
    sb.assert_outside_untouched();
}

#[test]
fn symlink_to_root_then_file_through_it_is_refused() {
    let sb = Sandbox::new();
    let through = format!("root/{}/x", sb.canary_rel());
    let layer = Layer::new()
        .symlink("root", "/")
        .file(&through, b"pwned")
        .bytes();
    let err = sb.apply(&layer).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::ThroughSymlink { component, .. } if component == Path::new("root")),
        "{err}"
    );
    sb.assert_outside_untouched();
}

#[test]
fn directories_through_a_symlink_are_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("a", sb.canary.to_str().unwrap())
        .dir("a/sub/")
        .bytes();
    let err = sb.apply(&layer).unwrap_err();
    assert!(matches!(err, ArchiveError::ThroughSymlink { .. }), "{err}");
    sb.assert_outside_untouched();
}

#[test]
fn deep_symlink_components_are_refused() {
    // A symlink below real directories, created by an earlier layer.
    let sb = Sandbox::new();
    fs::create_dir_all(sb.dest.join("usr/lib")).unwrap();
    std::os::unix::fs::symlink(&sb.canary, sb.dest.join("usr/lib/link")).unwrap();
    let err = sb
        .apply(&Layer::new().file("usr/lib/link/x", b"pwned").bytes())
        .unwrap_err();
    assert!(
        matches!(&err, ArchiveError::ThroughSymlink { component, .. } if component == Path::new("usr/lib/link")),
        "{err}"
    );
    sb.assert_outside_untouched();
}

#[test]
fn entries_replace_a_symlink_instead_of_following_it() {
    let sb = Sandbox::new();
    let secret = format!("{}/secret", sb.canary.display());
    let layer = Layer::new()
        .symlink("s", &secret)
        .file("s", b"replaced")
        .symlink("d", sb.canary.to_str().unwrap())
        .dir("d/")
        .bytes();
    sb.apply(&layer).unwrap();
    assert_eq!(fs::read(sb.dest.join("s")).unwrap(), b"replaced");
    assert!(fs::symlink_metadata(sb.dest.join("d")).unwrap().is_dir());
    sb.assert_outside_untouched();
}

#[test]
fn hardlink_outside_the_root_is_refused() {
    let sb = Sandbox::new();
    let err = sb
        .apply(&Layer::new().hardlink("h", "../../etc/passwd").bytes())
        .unwrap_err();
    match &err {
        ArchiveError::LinkTargetEscapesRoot { entry, target } => {
            assert_eq!(entry, Path::new("h"));
            assert_eq!(target, Path::new("../../etc/passwd"));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(fs::symlink_metadata(sb.dest.join("h")).is_err());

    let err = sb
        .apply(&Layer::new().hardlink("h", "../canary/secret").bytes())
        .unwrap_err();
    assert!(
        matches!(err, ArchiveError::LinkTargetEscapesRoot { .. }),
        "{err}"
    );
    sb.assert_outside_untouched();
}

#[test]
fn hardlink_through_a_symlink_is_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("s", sb.canary.to_str().unwrap())
        .hardlink("h", "s/secret")
        .bytes();
    let err = sb.apply(&layer).unwrap_err();
    match &err {
        ArchiveError::LinkTargetThroughSymlink {
            entry,
            target,
            component,
        } => {
            assert_eq!(entry, Path::new("h"));
            assert_eq!(target, Path::new("s/secret"));
            assert_eq!(component, Path::new("s"));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(fs::symlink_metadata(sb.dest.join("h")).is_err());
    sb.assert_outside_untouched();
}

#[test]
fn hardlink_to_an_absolute_target_is_refused() {
    let sb = Sandbox::new();
    let target = format!("{}/secret", sb.canary.display());
    let err = sb
        .apply(&Layer::new().hardlink("h", &target).bytes())
        .unwrap_err();
    assert!(
        matches!(&err, ArchiveError::AbsolutePath { entry } if entry == Path::new(&target)),
        "{err}"
    );
    assert!(fs::symlink_metadata(sb.dest.join("h")).is_err());
    sb.assert_outside_untouched();
}

#[test]
fn hardlink_to_a_symlink_links_the_symlink_itself() {
    let sb = Sandbox::new();
    let target = format!("{}/secret", sb.canary.display());
    let layer = Layer::new()
        .symlink("s", &target)
        .hardlink("h", "s")
        .bytes();
    sb.apply(&layer).unwrap();
    let meta = fs::symlink_metadata(sb.dest.join("h")).unwrap();
    assert!(meta.file_type().is_symlink());
    assert_eq!(meta.nlink(), 2);
    sb.assert_outside_untouched();
}

#[test]
fn hardlink_to_a_directory_is_refused() {
    let sb = Sandbox::new();
    let err = sb
        .apply(&Layer::new().dir("d/").hardlink("h", "d").bytes())
        .unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::LinkTargetInvalid {
                reason: "is a directory",
                ..
            }
        ),
        "{err}"
    );
    sb.assert_outside_untouched();
}

#[test]
fn whiteouts_through_a_symlink_are_refused() {
    let sb = Sandbox::new();
    let canary = sb.canary.to_str().unwrap().to_string();
    for marker in ["s/.wh.secret", "s/.wh..wh..opq"] {
        let layer = Layer::new().symlink("s", &canary).file(marker, b"").bytes();
        let err = sb.apply(&layer).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::ThroughSymlink { entry, .. } if entry == Path::new(marker)),
            "{marker}: {err}"
        );
        sb.assert_outside_untouched();
    }
}

#[test]
fn whiteouts_of_dot_names_are_refused() {
    let sb = Sandbox::new();
    fs::create_dir(sb.dest.join("a")).unwrap();
    fs::write(sb.dest.join("a/keep"), b"k").unwrap();
    for marker in [".wh.", "a/.wh..", "a/.wh..."] {
        let err = sb
            .apply(&Layer::new().file(marker, b"").bytes())
            .unwrap_err();
        assert!(
            matches!(&err, ArchiveError::InvalidWhiteout { entry } if entry == Path::new(marker)),
            "{marker}: {err}"
        );
    }
    assert_eq!(fs::read(sb.dest.join("a/keep")).unwrap(), b"k");
    sb.assert_outside_untouched();
}

#[test]
fn gzip_bomb_is_stopped_before_it_is_written() {
    let sb = Sandbox::new();
    let layer = gzip(&Layer::new().file("bomb", &vec![0u8; 1 << 20]).bytes());
    assert!(layer.len() < 16 * 1024, "{} bytes", layer.len());
    let opts = ApplyOptions {
        max_size: 64 * 1024,
        ..ApplyOptions::default()
    };
    let err = sb.apply_with(&layer, &opts).unwrap_err();
    match &err {
        ArchiveError::SizeLimit { entry, limit } => {
            assert_eq!(entry, Path::new("bomb"));
            assert_eq!(*limit, 64 * 1024);
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(fs::symlink_metadata(sb.dest.join("bomb")).is_err());
    sb.assert_outside_untouched();
}

#[test]
fn many_small_files_stop_at_the_size_bound() {
    let sb = Sandbox::new();
    let mut layer = Layer::new();
    for i in 0..64 {
        layer = layer.file(&format!("f{i:02}"), &vec![b'x'; 16 * 1024]);
    }
    let layer = gzip(&layer.bytes());
    let limit = 256 * 1024;
    let opts = ApplyOptions {
        max_size: limit,
        ..ApplyOptions::default()
    };
    let err = sb.apply_with(&layer, &opts).unwrap_err();
    assert!(matches!(err, ArchiveError::SizeLimit { .. }), "{err}");
    let written: u64 = fs::read_dir(&sb.dest)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(written <= limit, "{written} bytes written");
    assert!(written > 0);
    sb.assert_outside_untouched();
}

#[test]
fn zstd_bomb_is_stopped_too() {
    let sb = Sandbox::new();
    let tar = Layer::new().file("bomb", &vec![0u8; 4 << 20]).bytes();
    let layer = zstd::encode_all(&tar[..], 19).unwrap();
    let opts = ApplyOptions {
        max_size: 1 << 20,
        ..ApplyOptions::default()
    };
    let err = sb.apply_with(&layer, &opts).unwrap_err();
    assert!(matches!(err, ArchiveError::SizeLimit { .. }), "{err}");
    assert!(fs::symlink_metadata(sb.dest.join("bomb")).is_err());
}

#[test]
fn oversized_extension_headers_are_refused() {
    let sb = Sandbox::new();
    let huge = vec![b'a'; 4 << 20];
    let layer = gzip(
        &Layer::new()
            .file("ok", b"fine")
            .pax(&[("comment", &huge)])
            .file("x", b"")
            .bytes(),
    );
    let opts = ApplyOptions {
        max_header_bytes: 64 * 1024,
        ..ApplyOptions::default()
    };
    let err = sb.apply_with(&layer, &opts).unwrap_err();
    match &err {
        ArchiveError::HeaderLimit { after, limit } => {
            assert_eq!(after, Path::new("ok"));
            assert_eq!(*limit, 64 * 1024);
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn entry_count_is_bounded() {
    let sb = Sandbox::new();
    let mut layer = Layer::new();
    for i in 0..50 {
        layer = layer.file(&format!("f{i:02}"), b"");
    }
    let opts = ApplyOptions {
        max_entries: 10,
        ..ApplyOptions::default()
    };
    let err = sb.apply_with(&layer.bytes(), &opts).unwrap_err();
    match &err {
        ArchiveError::EntryLimit { entry, limit } => {
            assert_eq!(entry, Path::new("f10"));
            assert_eq!(*limit, 10);
        }
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(fs::read_dir(&sb.dest).unwrap().count(), 10);
}

#[test]
fn nul_bytes_in_names_are_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .pax(&[("path", b"a\0b")])
        .file("placeholder", b"")
        .bytes();
    let err = sb.apply(&layer).unwrap_err();
    assert!(matches!(err, ArchiveError::InvalidEntry { .. }), "{err}");
    sb.assert_outside_untouched();
}

#[test]
fn truncated_layers_are_refused() {
    let sb = Sandbox::new();
    let tar = Layer::new().file("f", &vec![b'x'; 10_000]).bytes();
    let err = sb.apply(&tar[..512 + 4096]).unwrap_err();
    match &err {
        ArchiveError::Truncated {
            entry,
            expected,
            actual,
        } => {
            assert_eq!(entry, Path::new("f"));
            assert_eq!(*expected, 10_000);
            assert_eq!(*actual, 4096);
        }
        other => panic!("unexpected error {other}"),
    }
    let err = sb.apply(&tar[..300]).unwrap_err();
    assert!(matches!(err, ArchiveError::Stream { .. }), "{err}");
    let mut corrupt = tar.clone();
    corrupt[10] ^= 1;
    let err = sb.apply(&corrupt).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn unsupported_entry_types_are_refused() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .entry(EntryType::new(b'V'), "label", None, b"")
        .bytes();
    let err = sb.apply(&layer).unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::UnsupportedEntryType {
                type_flag: b'V',
                ..
            }
        ),
        "{err}"
    );
}
