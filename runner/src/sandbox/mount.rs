//! The mounts the sandbox makes on the host: the overlay root filesystem, the overlays and the
//! tmpfs that the caller's mounts need, and the checks that nothing it mounted is left behind.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::Error;

/// The largest option string `mount(2)` takes: one page, including the terminating NUL.
const MAX_MOUNT_DATA: usize = 4095;

/// Where the loaded overlay module lists the features it knows.
const OVERLAY_PARAMETERS: &str = "/sys/module/overlay/parameters";

/// An overlay root filesystem: read-only lower directories (top first), the upper directory that
/// receives the changes, and overlayfs's work directory (same filesystem as the upper).
#[derive(Debug, Clone)]
pub(crate) struct Overlay {
    pub(crate) lower: Vec<PathBuf>,
    pub(crate) upper: PathBuf,
    pub(crate) work: PathBuf,
}

impl Overlay {
    /// The `mount(2)` option string.
    ///
    /// Features that would make the upper directory something other than a plain diff are
    /// turned off where the kernel knows them: `redirect_dir` (a renamed directory would be a
    /// redirect to its lower copy instead of a full copy), `metacopy` (a chown would copy up
    /// metadata without data) and `index` (which ties an upper directory to the lower
    /// directories it was first mounted with). This is what Docker's overlay2 driver does.
    pub(crate) fn options(&self, known: &dyn Fn(&str) -> bool) -> Result<String, Error> {
        for dir in self.lower.iter().chain([&self.upper, &self.work]) {
            let bytes = dir.as_os_str().as_bytes();
            if bytes.iter().any(|b| matches!(b, b':' | b',' | b'\\')) {
                return Err(Error::InvalidSpec(format!(
                    "overlay directory {} contains ':', ',' or '\\'",
                    dir.display()
                )));
            }
        }
        let lower: Vec<_> = self.lower.iter().map(|p| p.to_string_lossy()).collect();
        let mut options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            self.upper.to_string_lossy(),
            self.work.to_string_lossy()
        );
        for feature in ["index", "redirect_dir", "metacopy"] {
            if known(feature) {
                options.push_str(&format!(",{feature}=off"));
            }
        }
        if options.len() > MAX_MOUNT_DATA {
            return Err(Error::InvalidSpec(format!(
                "overlay options for {} lower directories are {} bytes, over the {} bytes mount(2) takes",
                self.lower.len(),
                options.len(),
                MAX_MOUNT_DATA
            )));
        }
        Ok(options)
    }

    /// Mounts the overlay on `target`.
    pub(crate) fn mount(&self, target: &Path) -> Result<(), Error> {
        let options =
            self.options(&|feature| Path::new(OVERLAY_PARAMETERS).join(feature).exists())?;
        let mount_error = |source| Error::Mount {
            fstype: "overlay",
            target: target.to_path_buf(),
            source,
        };
        let target_c = cstring(target).map_err(mount_error)?;
        let data = CString::new(options)
            .map_err(|_| mount_error(io::Error::from_raw_os_error(libc::EINVAL)))?;
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                target_c.as_ptr(),
                c"overlay".as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(mount_error(io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// Mounts a tmpfs (`nosuid`, `nodev`; not `noexec`, as a file on it may be a script to run)
/// with `options` (`mode=`, `size=`) on `target`.
pub(crate) fn mount_tmpfs(target: &Path, options: &str) -> Result<(), Error> {
    let mount_error = |source| Error::Mount {
        fstype: "tmpfs",
        target: target.to_path_buf(),
        source,
    };
    let target_c = cstring(target).map_err(mount_error)?;
    let data = CString::new(options)
        .map_err(|_| mount_error(io::Error::from_raw_os_error(libc::EINVAL)))?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target_c.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(mount_error(io::Error::last_os_error()));
    }
    Ok(())
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Unmounts `target`. A busy mount is retried for a while and then detached lazily, so that it
/// is gone from the namespace even if something still holds it open; a target that is not a
/// mount point is not an error.
pub(crate) fn unmount(target: &Path) -> Result<(), Error> {
    let unmount_error = |source| Error::Unmount {
        target: target.to_path_buf(),
        source,
    };
    let target_c = cstring(target).map_err(unmount_error)?;
    for attempt in 0..50 {
        let flags = if attempt == 49 { libc::MNT_DETACH } else { 0 };
        // SAFETY: `target_c` is a valid NUL-terminated string.
        if unsafe { libc::umount2(target_c.as_ptr(), flags) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOENT) => return Ok(()),
            Some(libc::EBUSY) => std::thread::sleep(Duration::from_millis(20)),
            _ => return Err(unmount_error(err)),
        }
    }
    Err(unmount_error(io::Error::from_raw_os_error(libc::EBUSY)))
}

/// The mount points in this process's mount namespace at or under `dir`.
pub fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|point| point.starts_with(dir))
        .collect())
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
pub(crate) fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(value) = u8::try_from(value) {
                    out.push(value);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(lower: &[&str]) -> Overlay {
        Overlay {
            lower: lower.iter().map(PathBuf::from).collect(),
            upper: PathBuf::from("/s/upper"),
            work: PathBuf::from("/s/work"),
        }
    }

    #[test]
    fn options_list_lowers_top_first_and_turn_features_off() {
        let opts = overlay(&["/l/top", "/l/base"])
            .options(&|f| f != "metacopy")
            .unwrap();
        assert_eq!(
            opts,
            "lowerdir=/l/top:/l/base,upperdir=/s/upper,workdir=/s/work,index=off,redirect_dir=off"
        );
    }

    #[test]
    fn options_refuse_separators_and_overlong_strings() {
        assert!(matches!(
            overlay(&["/l/a:b"]).options(&|_| true),
            Err(Error::InvalidSpec(_))
        ));
        let long: Vec<String> = (0..100)
            .map(|i| format!("/very/long/lower/path/{i:060}"))
            .collect();
        let refs: Vec<&str> = long.iter().map(String::as_str).collect();
        assert!(matches!(
            overlay(&refs).options(&|_| true),
            Err(Error::InvalidSpec(_))
        ));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/a\\134b"), "/a\\b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\04"), "/end\\04");
    }
}

/// An overlay mounted on the host for as long as the value lives, for file operations that
/// need the merged view of a stack of layers without running a process: a build's `COPY`
/// writes through it, so that the upper directory is the step's diff and nothing is copied
/// first. Features that would make the upper directory more than a plain diff are off, as for
/// the sandbox's own root filesystem. Dropping it unmounts (detaching lazily if busy).
#[derive(Debug)]
pub struct OverlayMount {
    target: PathBuf,
    mounted: bool,
}

impl OverlayMount {
    /// Mounts `lower` (top first; at least one) with `upper` and `work` (same filesystem) on
    /// the existing directory `target`.
    pub fn mount(
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<OverlayMount, Error> {
        if lower.is_empty() {
            return Err(Error::InvalidSpec(
                "an overlay needs at least one lower directory".into(),
            ));
        }
        let overlay = Overlay {
            lower: lower.to_vec(),
            upper: upper.to_path_buf(),
            work: work.to_path_buf(),
        };
        overlay.mount(target)?;
        Ok(OverlayMount {
            target: target.to_path_buf(),
            mounted: true,
        })
    }

    /// The merged view.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Unmounts now, reporting what dropping can only log.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.mounted = false;
        unmount(&self.target)
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(err) = unmount(&self.target) {
                tracing::warn!(target = %self.target.display(), %err, "cannot unmount overlay");
            }
        }
    }
}
