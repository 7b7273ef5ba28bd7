//! Thin wrappers over the `*at` system calls the applier uses to work relative to directory file
//! descriptors (never following symlinks), and over the `l*xattr` calls the writer uses with
//! reusable buffers.
//!
//! Every function takes names as C strings and returns `io::Error` from `errno`.

use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

/// Converts a path or name to a C string; a NUL byte gives `InvalidInput`.
pub(crate) fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in name"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The file type bits of a `stat` mode.
pub(crate) fn file_type(st: &libc::stat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

/// Opens the directory `dir/name` without following a symlink at `name`.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `name` is a valid NUL-terminated string and `dir` a live descriptor; on success
    // the returned descriptor is owned by nobody else.
    let fd = check(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    // SAFETY: `fd` was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `path` as a directory (following symlinks: it is the caller's destination root).
pub(crate) fn open_dir(path: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: `path` is a valid NUL-terminated string.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags) })?;
    // SAFETY: `fd` was just returned by open and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates `dir/name` as a new regular file for writing (`O_EXCL`, never through a symlink).
pub(crate) fn create_file_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<File> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: as in `open_dir_at`; the mode argument is read because O_CREAT is set.
    let fd = check(unsafe {
        libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, 0o600 as libc::c_uint)
    })?;
    // SAFETY: `fd` was just returned by openat and is not owned elsewhere.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `lstat` of `dir/name`; `Ok(None)` when it does not exist.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<libc::stat>> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` points to writable memory of the right size; `name` is NUL-terminated.
    let ret = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::ENOENT) {
            Ok(None)
        } else {
            Err(err)
        };
    }
    // SAFETY: fstatat succeeded, so it filled `st`.
    Ok(Some(unsafe { st.assume_init() }))
}

/// `mkdirat(dir, name, mode)`.
pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` a live descriptor.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

/// `unlinkat(dir, name)`, with `AT_REMOVEDIR` for an (empty) directory.
pub(crate) fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `name` is NUL-terminated and `dir` a live descriptor.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    Ok(())
}

/// `symlinkat(target, dir, name)`.
pub(crate) fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and `dir` a live descriptor.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })?;
    Ok(())
}

/// `linkat(old_dir, old_name, new_dir, new_name, 0)`: a symlink at `old_name` is linked itself.
pub(crate) fn link_at(
    old_dir: BorrowedFd<'_>,
    old_name: &CStr,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and both descriptors live.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old_name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            0,
        )
    })?;
    Ok(())
}

/// `mknodat(dir, name, mode, dev)`; `mode` carries the file type bits.
pub(crate) fn mknod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32, dev: u64) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` a live descriptor.
    check(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::mode_t,
            dev as libc::dev_t,
        )
    })?;
    Ok(())
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn chown_at(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` a live descriptor.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// `fchmodat(dir, name, mode, 0)`. Linux cannot change a symlink's mode, so callers use it only
/// on entries they have just checked or created as non-symlinks.
pub(crate) fn chmod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` a live descriptor.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, 0) })?;
    Ok(())
}

/// Sets the access and modification times of `dir/name` (not following a symlink) to `mtime`.
pub(crate) fn set_times_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    secs: i64,
    nanos: u32,
) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as libc::c_long,
    };
    let times = [ts, ts];
    // SAFETY: `times` is an array of two timespecs as utimensat requires; `name` is
    // NUL-terminated and `dir` a live descriptor.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// Sets an extended attribute on `dir/name` without following a symlink at `name`.
///
/// There is no `lsetxattrat`, so this goes through `/proc/self/fd/<dir>/<name>`: the kernel
/// resolves the magic link to the directory itself, then `name` with `lsetxattr` semantics.
pub(crate) fn lsetxattr_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    key: &CStr,
    value: &[u8],
) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let path = cstring(&path)?;
    // SAFETY: `path` and `key` are NUL-terminated; `value` is valid for `value.len()` bytes.
    check(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })?;
    Ok(())
}

/// Sets an extended attribute on an open file or directory.
pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, key: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `key` is NUL-terminated; `value` is valid for `value.len()` bytes.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })?;
    Ok(())
}

/// A file whose extended attributes are read: by path (not following a symlink) or open.
#[derive(Clone, Copy)]
pub(crate) enum XattrSource<'a> {
    Path(&'a CStr),
    Fd(BorrowedFd<'a>),
}

/// Lists the extended attribute names of `source` into `buf`, as NUL-separated names. The
/// buffer is grown as needed and reused across calls.
pub(crate) fn list_xattrs(source: XattrSource<'_>, buf: &mut Vec<u8>) -> io::Result<()> {
    loop {
        if buf.capacity() == 0 {
            buf.reserve(1024);
        }
        let cap = buf.capacity();
        buf.resize(cap, 0);
        let ptr = buf.as_mut_ptr().cast();
        // SAFETY: `buf` is valid for `cap` writable bytes; the path is NUL-terminated and the
        // descriptor live.
        let ret = unsafe {
            match source {
                XattrSource::Path(path) => libc::llistxattr(path.as_ptr(), ptr, cap),
                XattrSource::Fd(fd) => libc::flistxattr(fd.as_raw_fd(), ptr, cap),
            }
        };
        if ret >= 0 {
            buf.truncate(ret as usize);
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => buf.reserve(cap * 2),
            Some(libc::ENOTSUP) => {
                buf.clear();
                return Ok(());
            }
            _ => return Err(err),
        }
    }
}

/// Reads the extended attribute `key` of `source` into `value`. Returns `false` when the
/// attribute does not exist (it may vanish between list and get).
pub(crate) fn get_xattr(
    source: XattrSource<'_>,
    key: &CStr,
    value: &mut Vec<u8>,
) -> io::Result<bool> {
    loop {
        if value.capacity() == 0 {
            value.reserve(256);
        }
        let cap = value.capacity();
        value.resize(cap, 0);
        let ptr = value.as_mut_ptr().cast();
        // SAFETY: `value` is valid for `cap` writable bytes; the strings are NUL-terminated and
        // the descriptor live.
        let ret = unsafe {
            match source {
                XattrSource::Path(path) => libc::lgetxattr(path.as_ptr(), key.as_ptr(), ptr, cap),
                XattrSource::Fd(fd) => libc::fgetxattr(fd.as_raw_fd(), key.as_ptr(), ptr, cap),
            }
        };
        if ret >= 0 {
            value.truncate(ret as usize);
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => value.reserve(cap * 2),
            Some(libc::ENODATA) => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// The names in the directory `dir` (without `.` and `..`), in the order the kernel gives them.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    // A fresh open file description, so that this listing has its own offset.
    let fresh = open_dir_at(dir, c".")?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fresh);
    // SAFETY: `raw` is an open directory descriptor; on success fdopendir owns it.
    let dirp = unsafe { libc::fdopendir(raw) };
    if dirp.is_null() {
        let err = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `raw` is still ours to close.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
        return Err(err);
    }
    let stream = DirStream(dirp);
    let mut names = Vec::new();
    loop {
        // SAFETY: errno is thread-local; clearing it tells end-of-directory from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `stream.0` is a valid DIR* until `stream` is dropped.
        let ent = unsafe { libc::readdir(stream.0) };
        if ent.is_null() {
            let err = io::Error::last_os_error();
            if err.raw_os_error().unwrap_or(0) != 0 {
                return Err(err);
            }
            break;
        }
        // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    Ok(names)
}

/// Closes a `DIR*` on drop.
struct DirStream(*mut libc::DIR);

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful fdopendir and is closed exactly once.
        unsafe { libc::closedir(self.0) };
    }
}
