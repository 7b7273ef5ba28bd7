//! Whole-file rewrites of the runner's state files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How far a rewrite goes to survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// The file is renamed into place: a reader, or a process that restarts, sees the old
    /// content or the new, never half a file. A machine crash may lose the new content, or,
    /// for a file that did not exist before, leave it empty.
    Atomic,
    /// As [`Durability::Atomic`], and the file is fsynced before the rename and its directory
    /// after it, so that a machine crash leaves the old content or the new too.
    Durable,
}

/// Replaces `path` with `bytes` through a temporary file in the same directory, removed again
/// if anything fails.
pub(crate) fn replace(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let tmp = temp_path(path);
    let durable = durability == Durability::Durable;
    let write = || -> io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
        }
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// `<name>.tmp.<pid>` beside `path`: two processes never write the same temporary file.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[test]
    fn replace_writes_whole_files_and_leaves_no_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        for (bytes, durability) in [
            (&b"{\"a\": 1}"[..], Durability::Durable),
            (b"{\"a\": 2}", Durability::Atomic),
        ] {
            replace(&path, bytes, durability).unwrap();
            assert_eq!(fs::read(&path).unwrap(), bytes);
            assert_eq!(names(dir.path()), ["state.json"]);
        }
    }

    #[test]
    fn a_failed_replace_keeps_the_old_file_and_removes_the_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should go: the rename fails.
        let path = dir.path().join("state.json");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), "old").unwrap();
        let err = replace(&path, b"new", Durability::Durable).unwrap_err();
        assert!(err.kind() != io::ErrorKind::NotFound, "{err}");
        assert_eq!(fs::read_to_string(path.join("keep")).unwrap(), "old");
        assert_eq!(names(dir.path()), ["state.json"]);
    }
}
