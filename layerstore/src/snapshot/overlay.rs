//! What the kernel offers for overlayfs, the mount options of an active snapshot, and which
//! directories current mounts use. All of it is read from `/proc` and `/sys`: the snapshot
//! store never mounts anything (only `runner::sandbox` does).

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::archive::OverlayNamespace;

/// The most bytes of mount data (options) the kernel takes in one `mount(2)` call: a page,
/// NUL included.
pub const MAX_MOUNT_DATA: usize = 4095;

/// What the running kernel offers for overlayfs, as `/proc/filesystems` and
/// `/sys/module/overlay` tell it. Nothing is mounted to find out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OverlaySupport {
    /// overlayfs is registered (`/proc/filesystems`) or its module is there to be loaded.
    pub available: bool,
    /// The kernel knows the `index` feature: mounts pass `index=off`, so that an upper directory
    /// can later serve as a lower one elsewhere (containerd does the same).
    pub index: bool,
    /// The kernel knows `redirect_dir`: mounts pass `redirect_dir=off`, as a renamed directory
    /// would otherwise be recorded as a redirect that a layer diff cannot carry.
    pub redirect_dir: bool,
    /// The kernel knows `metacopy`: mounts pass `metacopy=off`, for the same reason.
    pub metacopy: bool,
}

/// Reads what the running kernel offers for overlayfs.
pub fn overlay_support() -> OverlaySupport {
    let registered = fs::read_to_string("/proc/filesystems")
        .map(|s| filesystems_has_overlay(&s))
        .unwrap_or(false);
    let params = Path::new("/sys/module/overlay/parameters");
    OverlaySupport {
        available: registered || Path::new("/sys/module/overlay").exists() || module_on_disk(),
        index: params.join("index").exists(),
        redirect_dir: params.join("redirect_dir").exists(),
        metacopy: params.join("metacopy").exists(),
    }
}

/// Whether overlayfs can be used here: the caller picks [`SnapshotStore::prepare`] when it can
/// and [`SnapshotStore::prepare_copy`] when it cannot.
///
/// [`SnapshotStore::prepare`]: super::SnapshotStore::prepare
/// [`SnapshotStore::prepare_copy`]: super::SnapshotStore::prepare_copy
pub fn overlay_supported() -> bool {
    overlay_support().available
}

fn filesystems_has_overlay(proc_filesystems: &str) -> bool {
    proc_filesystems
        .lines()
        .any(|line| line.split_whitespace().last() == Some("overlay"))
}

/// Whether `overlay.ko` is installed for the running kernel (it is loaded on first mount).
fn module_on_disk() -> bool {
    let Ok(release) = fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let dir = Path::new("/lib/modules")
        .join(release.trim())
        .join("kernel/fs/overlayfs");
    [
        "overlay.ko",
        "overlay.ko.xz",
        "overlay.ko.zst",
        "overlay.ko.gz",
    ]
    .iter()
    .any(|f| dir.join(f).exists())
}

/// Escapes a path for overlayfs' option parser: `\`, `,` and `:` are backslash-escaped.
pub(crate) fn escape(path: &Path) -> String {
    let s = path.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | ':') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The overlayfs mount options for these directories.
pub(crate) fn mount_options(
    lowerdirs: &[PathBuf],
    upper: &Path,
    work: &Path,
    namespace: OverlayNamespace,
    support: &OverlaySupport,
) -> String {
    let lower: Vec<String> = lowerdirs.iter().map(|p| escape(p)).collect();
    let mut opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escape(upper),
        escape(work)
    );
    match namespace {
        OverlayNamespace::User => opts.push_str(",userxattr"),
        OverlayNamespace::Trusted => {
            if support.index {
                opts.push_str(",index=off");
            }
            if support.redirect_dir {
                opts.push_str(",redirect_dir=off");
            }
            if support.metacopy {
                opts.push_str(",metacopy=off");
            }
        }
    }
    opts
}

/// One line of `/proc/self/mountinfo`: where it is mounted and, for overlayfs, the directories
/// it is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub mount_point: PathBuf,
    /// For an overlay mount: its lower, upper and work directories.
    pub layers: Vec<PathBuf>,
}

impl MountEntry {
    /// Whether this mount sits at or under `dir`, or an overlay uses a directory at or under
    /// it.
    pub(crate) fn uses(&self, dir: &Path) -> bool {
        self.mount_point.starts_with(dir) || self.layers.iter().any(|l| l.starts_with(dir))
    }
}

/// The mounts of this process' mount namespace (empty when `/proc` cannot be read).
pub(crate) fn mounts() -> Vec<MountEntry> {
    match fs::read("/proc/self/mountinfo") {
        Ok(bytes) => parse_mountinfo(&bytes),
        Err(e) => {
            tracing::debug!(error = %e, "reading /proc/self/mountinfo");
            Vec::new()
        }
    }
}

/// Whether a current mount uses `dir` (see [`MountEntry::uses`]).
pub(crate) fn in_use(mounts: &[MountEntry], dir: &Path) -> bool {
    mounts.iter().any(|m| m.uses(dir))
}

fn parse_mountinfo(bytes: &[u8]) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for line in bytes.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        // id parent major:minor root mount-point options [optional...] - type source super
        let Some(sep) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        if fields.len() < 5 || fields.len() < sep + 4 {
            continue;
        }
        let mount_point = PathBuf::from(OsString::from_vec(unescape(fields[4])));
        let mut layers = Vec::new();
        if fields[sep + 1] == b"overlay" {
            for opt in fields[sep + 3].split(|&b| b == b',') {
                let Some(eq) = opt.iter().position(|&b| b == b'=') else {
                    continue;
                };
                let (key, value) = (&opt[..eq], &opt[eq + 1..]);
                if !matches!(
                    key,
                    b"lowerdir" | b"lowerdir+" | b"datadir+" | b"upperdir" | b"workdir"
                ) {
                    continue;
                }
                for part in unescape(value).split(|&b| b == b':') {
                    if !part.is_empty() {
                        layers.push(PathBuf::from(std::ffi::OsStr::from_bytes(part)));
                    }
                }
            }
        }
        out.push(MountEntry {
            mount_point,
            layers,
        });
    }
    out
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\054` for a comma, ...).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = field[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_overlay_in_proc_filesystems() {
        assert!(filesystems_has_overlay(
            "nodev\tsysfs\n\text4\nnodev\toverlay\n"
        ));
        assert!(!filesystems_has_overlay("nodev\tsysfs\n\text4\n"));
    }

    #[test]
    fn options_escape_separators() {
        let support = OverlaySupport {
            available: true,
            index: true,
            redirect_dir: false,
            metacopy: true,
        };
        let opts = mount_options(
            &[PathBuf::from("/s/b"), PathBuf::from("/s/a:b,c")],
            Path::new("/a/upper"),
            Path::new("/a/work"),
            OverlayNamespace::Trusted,
            &support,
        );
        assert_eq!(
            opts,
            "lowerdir=/s/b:/s/a\\:b\\,c,upperdir=/a/upper,workdir=/a/work,index=off,metacopy=off"
        );
        let opts = mount_options(
            &[PathBuf::from("/l")],
            Path::new("/u"),
            Path::new("/w"),
            OverlayNamespace::User,
            &support,
        );
        assert_eq!(opts, "lowerdir=/l,upperdir=/u,workdir=/w,userxattr");
    }

    #[test]
    fn parses_mountinfo() {
        let info = b"22 27 0:21 / /proc rw,relatime - proc proc rw\n\
            90 27 0:50 / /tmp/my\\040dir/merged rw,relatime shared:1 - overlay overlay \
            rw,lowerdir=/r/snapshots/sha256/aa/fs:/r/snapshots/sha256/bb/fs,\
            upperdir=/r/active/x/upper,workdir=/r/active/x/work,index=off\n";
        let mounts = parse_mountinfo(info);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].mount_point, Path::new("/proc"));
        assert!(mounts[0].layers.is_empty());
        assert_eq!(mounts[1].mount_point, Path::new("/tmp/my dir/merged"));
        assert_eq!(mounts[1].layers.len(), 4);
        assert!(in_use(&mounts, Path::new("/r/snapshots/sha256/bb")));
        assert!(in_use(&mounts, Path::new("/r/active/x")));
        assert!(in_use(&mounts, Path::new("/tmp/my dir")));
        assert!(!in_use(&mounts, Path::new("/r/snapshots/sha256/cc")));
        assert!(!in_use(&mounts, Path::new("/r/active/y")));
    }
}
