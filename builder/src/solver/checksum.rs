//! Content checksums of what a step reads from the build context, for its cache key.
//!
//! As BuildKit's content checksums, they cover what the step sees of each file and nothing
//! else:
//!
//! - for every entry selected, a header: its path as the step sees it (below the match, or
//!   below the `--parents` pivot), its type, mode (permission bits with setuid, setgid and
//!   sticky), owner, device number, symlink target and extended attributes (sorted by name,
//!   less those COPY never copies), then the SHA-256 of a regular file's content. A file that
//!   is a hard link of one already selected by the same source names that one instead, as COPY
//!   links them;
//! - never the times (mtime, atime, ctime) nor the inode numbers, so touching a file or cloning
//!   the repository again keeps the checksum.
//!
//! The selection is COPY's own ([`Gathered::add_source`], [`walk_contents`], [`walk_parents`]
//! of `super::copy`): the same wildcards, `.dockerignore` rules and `--exclude` patterns, in
//! the same order, and the owner COPY gives (0:0 for the build context). Everything is
//! written to the hash as records of fields, each field prefixed with its length, and each
//! record starting with a tag that fixes which fields follow, so that two different
//! selections never give the same byte stream.
//!
//! Files are hashed on up to `available_parallelism` threads when there are many or large
//! ones, each streamed through a 1 MiB buffer; their digests go into the hash in walk order.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use super::add;
use super::copy::{
    Gathered, Item, ParentsEntry, SKIPPED_XATTR_PREFIXES, Tree, exclude_patterns, walk_contents,
    walk_parents,
};
use crate::context::{Context, Entry, FileKind, FinalSymlink};

/// The first bytes hashed: a new encoding gets a new version, and so new checksums.
const VERSION: &[u8] = b"berth context checksum v1";

/// The buffer a file's content is read through.
const BUFFER_SIZE: usize = 1 << 20;

/// From this many regular files on, or this many bytes of them, files are hashed on several
/// threads.
const PARALLEL_FILES: usize = 32;
const PARALLEL_BYTES: u64 = 8 << 20;

/// The checksum of what `COPY`/`ADD` with these sources selects from the context; an error
/// when a source cannot be resolved (the caller then runs the step, which reports the real
/// error).
///
/// `parents` and `exclude` are `--parents` and `--exclude`. Sources that are URLs
/// ([`add::is_url`]) are not in the context and are skipped: the caller keys what it downloads
/// itself. A local archive `ADD` unpacks is hashed as the file it is: the same bytes unpack the
/// same way.
pub(super) fn context_sources(
    context: &Context,
    sources: &[String],
    parents: bool,
    exclude: &[String],
) -> Result<[u8; 32], String> {
    let exclude = exclude_patterns(exclude)?;
    let mut gathered = Gathered::default();
    let tree = gathered.tree(Tree::context(context));
    for source in sources.iter().filter(|s| !add::is_url(s)) {
        gathered.add_source(tree, source, parents, exclude.as_ref())?;
    }
    let mut records = Records::default();
    for item in &gathered.items {
        // Hard links are kept within one item, as each is its own copy.
        let mut links = Links::new();
        match item {
            Item::Copy { tree, matched } => {
                let tree = &gathered.trees[*tree];
                let entry = &matched.entry;
                // A directory's contents are copied into the destination, a file to it or
                // into it: the same paths below, a different result.
                let kind: &[u8] = if entry.is_dir() { b"dir" } else { b"file" };
                records.marker(&[b"copy", kind, matched.name.as_bytes()]);
                if entry.is_dir() {
                    walk_contents(tree, entry, exclude.as_ref(), |rel, item| {
                        records.entry(rel, item, tree, &mut links);
                        Ok(())
                    })?;
                } else {
                    records.entry(Path::new(&matched.name), entry, tree, &mut links);
                }
            }
            Item::Parents {
                tree,
                source,
                split,
            } => {
                let tree = &gathered.trees[*tree];
                records.marker(&[b"parents", source.as_bytes()]);
                let mut parents = HashSet::new();
                walk_parents(tree, source, split, exclude.as_ref(), |selected| {
                    match selected {
                        ParentsEntry::Parent(rel, Some(dir)) => {
                            if parents.insert(rel.to_path_buf()) {
                                records.entry(rel, dir, tree, &mut links);
                            }
                        }
                        ParentsEntry::Parent(rel, None) => {
                            records.marker(&[b"unseen parent", rel.as_os_str().as_bytes()]);
                        }
                        ParentsEntry::Entry(rel, item) => {
                            records.entry(rel, item, tree, &mut links);
                        }
                    }
                    Ok(())
                })?;
            }
            Item::Unpack { archive, .. } => {
                let shown = archive.strip_prefix(context.root()).unwrap_or(archive);
                records.archive(shown, archive);
            }
        }
    }
    records.digest()
}

/// The checksum of the subtree at `path` in the context (for `RUN --mount=type=bind` from the
/// context, default path `/`).
///
/// It covers what the mount shows: the directory itself (its mode and owner) and everything
/// below it, the `.dockerignore` rules applied, or the file `path` names. The mount keeps the
/// owners the files have on the host, so those are hashed.
pub(super) fn context_path(context: &Context, path: &str) -> Result<[u8; 32], String> {
    let fail = |e: &dyn std::fmt::Display| format!("mount source {path}: {e}");
    let base = context
        .resolve(path, FinalSymlink::Follow)
        .map_err(|e| fail(&e))?;
    let tree = HostTree(context);
    let mut records = Records::default();
    let mut links = Links::new();
    if !base.is_dir() {
        let name = base.path.file_name().unwrap_or_default();
        records.marker(&[b"mount", b"file", name.as_bytes()]);
        records.entry(Path::new(name), &base, &tree, &mut links);
        return records.digest();
    }
    records.marker(&[b"mount", b"dir"]);
    records.entry(Path::new("."), &base, &tree, &mut links);
    for entry in context.walk_dir(path).map_err(|e| fail(&e))? {
        let entry = entry.map_err(|e| fail(&e))?;
        let rel = if base.path == Path::new(".") {
            entry.path.as_path()
        } else {
            entry.path.strip_prefix(&base.path).map_err(|e| fail(&e))?
        };
        records.entry(rel, &entry, &tree, &mut links);
    }
    records.digest()
}

/// Where the files of a tree are on the host, and whom the step sees owning them.
trait Files {
    fn host_path(&self, entry: &Entry) -> PathBuf;
    fn owner(&self, entry: &Entry) -> (u32, u32);
}

impl Files for Tree {
    fn host_path(&self, entry: &Entry) -> PathBuf {
        Tree::host_path(self, entry)
    }

    fn owner(&self, entry: &Entry) -> (u32, u32) {
        Tree::owner(self, entry)
    }
}

/// The context as a bind mount shows it: owners as on the host.
struct HostTree<'a>(&'a Context);

impl Files for HostTree<'_> {
    fn host_path(&self, entry: &Entry) -> PathBuf {
        self.0.host_path(entry)
    }

    fn owner(&self, entry: &Entry) -> (u32, u32) {
        (entry.uid, entry.gid)
    }
}

/// The regular files already met by one item with more than one link: (device, inode) to the
/// path recorded for the first.
type Links = HashMap<(u64, u64), PathBuf>;

/// The records of one checksum, in order.
#[derive(Default)]
struct Records {
    list: Vec<Record>,
    /// How many regular files are to be read, and their bytes.
    files: usize,
    bytes: u64,
}

/// A record: the fields known from the walk, and the file whose extended attributes (and
/// content) end it.
struct Record {
    head: Vec<u8>,
    read: Option<Pending>,
}

/// What is read from the file system to finish a record.
struct Pending {
    host: PathBuf,
    /// Whether the content is hashed (a regular file) or only the extended attributes read.
    content: bool,
    size: u64,
}

impl Records {
    /// A record of the given fields, the first its tag.
    fn marker(&mut self, fields: &[&[u8]]) {
        let mut head = Vec::new();
        for f in fields {
            field(&mut head, f);
        }
        self.list.push(Record { head, read: None });
    }

    /// An entry of `tree` as the step sees it at `path`.
    ///
    /// Fields: `entry`, the path, then either `hardlink` and the path of the first link, or
    /// the type, mode, uid, gid, device number, symlink target, the number of extended
    /// attributes and each one's name and value, and the content's SHA-256 (empty but for a
    /// regular file).
    fn entry(&mut self, path: &Path, entry: &Entry, tree: &dyn Files, links: &mut Links) {
        let mut head = Vec::with_capacity(128);
        field(&mut head, b"entry");
        field(&mut head, path.as_os_str().as_bytes());
        if entry.kind == FileKind::File && entry.nlink > 1 {
            if let Some(first) = links.get(&(entry.dev, entry.ino)) {
                field(&mut head, b"hardlink");
                field(&mut head, first.as_os_str().as_bytes());
                self.list.push(Record { head, read: None });
                return;
            }
            links.insert((entry.dev, entry.ino), path.to_path_buf());
        }
        let (uid, gid) = tree.owner(entry);
        field(&mut head, kind_name(entry.kind));
        number(&mut head, u64::from(entry.mode));
        number(&mut head, u64::from(uid));
        number(&mut head, u64::from(gid));
        number(&mut head, entry.rdev);
        field(
            &mut head,
            entry
                .link_target
                .as_deref()
                .map_or(&[][..], |t| t.as_os_str().as_bytes()),
        );
        let read = if entry.kind == FileKind::Symlink {
            // COPY copies no extended attributes of a symlink, and it has no content.
            number(&mut head, 0);
            field(&mut head, b"");
            None
        } else {
            let content = entry.kind == FileKind::File;
            if content {
                self.files += 1;
                self.bytes += entry.size;
            }
            Some(Pending {
                host: tree.host_path(entry),
                content,
                size: entry.size,
            })
        };
        self.list.push(Record { head, read });
    }

    /// A local archive at `host`, by its bytes: `archive`, its path in the context, then the
    /// fields an entry ends with.
    fn archive(&mut self, path: &Path, host: &Path) {
        let mut head = Vec::new();
        field(&mut head, b"archive");
        field(&mut head, path.as_os_str().as_bytes());
        let size = fs::metadata(host).map_or(0, |m| m.len());
        self.files += 1;
        self.bytes += size;
        self.list.push(Record {
            head,
            read: Some(Pending {
                host: host.to_path_buf(),
                content: true,
                size,
            }),
        });
    }

    /// Reads what the records need from the files, on several threads when there is much to
    /// read, and hashes the records in order.
    fn digest(self) -> Result<[u8; 32], String> {
        let threads = if self.files >= PARALLEL_FILES || self.bytes >= PARALLEL_BYTES {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            1
        };
        self.digest_on(threads)
    }

    fn digest_on(self, threads: usize) -> Result<[u8; 32], String> {
        let mut jobs: Vec<(usize, &Pending)> = self
            .list
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.read.as_ref().map(|read| (i, read)))
            .collect();
        let threads = threads.clamp(1, jobs.len().max(1));
        if threads > 1 {
            // The largest first, so that one big file does not come last on one thread.
            jobs.sort_by_key(|(i, read)| (std::cmp::Reverse(read.size), *i));
        }
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let mut done = if threads <= 1 {
            read_records(&jobs, &next, &failed)
        } else {
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| s.spawn(|| read_records(&jobs, &next, &failed)))
                    .collect();
                let mut done = Vec::with_capacity(jobs.len());
                for worker in workers {
                    match worker.join() {
                        Ok(part) => done.extend(part),
                        Err(_) => done.push((0, Err("a checksum thread panicked".to_owned()))),
                    }
                }
                done
            })
        };
        // The first error in walk order, so that the message does not depend on the threads.
        done.sort_by_key(|(i, _)| *i);
        let mut tails: Vec<Option<Vec<u8>>> = Vec::new();
        tails.resize_with(self.list.len(), || None);
        for (i, tail) in done {
            tails[i] = Some(tail?);
        }
        let mut hash = Sha256::new();
        field_into(&mut hash, VERSION);
        for (record, tail) in self.list.iter().zip(tails) {
            hash.update(&record.head);
            match (&record.read, tail) {
                (Some(_), Some(tail)) => hash.update(&tail),
                (None, _) => {}
                (Some(read), None) => {
                    return Err(format!("{}: not read", read.host.display()));
                }
            }
        }
        Ok(hash.finalize().into())
    }
}

/// Finishes the records `jobs` hands out through `next` until none is left or one has failed:
/// the end of each record, by its index.
fn read_records(
    jobs: &[(usize, &Pending)],
    next: &AtomicUsize,
    failed: &AtomicBool,
) -> Vec<(usize, Result<Vec<u8>, String>)> {
    let mut buffer = Vec::new();
    let mut done = Vec::new();
    while !failed.load(Ordering::Relaxed) {
        let Some(&(index, read)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
            break;
        };
        let tail = record_tail(read, &mut buffer);
        if tail.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        done.push((index, tail));
    }
    done
}

/// The fields that end an entry's record: its extended attributes, and its content's digest.
fn record_tail(read: &Pending, buffer: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    let mut tail = Vec::new();
    let attrs = xattrs(&read.host);
    number(&mut tail, attrs.len() as u64);
    for (name, value) in &attrs {
        field(&mut tail, name);
        field(&mut tail, value);
    }
    if read.content {
        let digest =
            file_digest(&read.host, buffer).map_err(|e| format!("{}: {e}", read.host.display()))?;
        field(&mut tail, &digest);
    } else {
        field(&mut tail, b"");
    }
    Ok(tail)
}

/// The extended attributes COPY copies from `host`, sorted by name. As in the copy, what
/// cannot be read is left out.
fn xattrs(host: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(names) = xattr::list(host) else {
        return Vec::new();
    };
    let mut attrs: Vec<(Vec<u8>, Vec<u8>)> = names
        .filter(|name| {
            !SKIPPED_XATTR_PREFIXES
                .iter()
                .any(|p| name.as_bytes().starts_with(p))
        })
        .filter_map(|name| match xattr::get(host, &name) {
            Ok(Some(value)) => Some((name.as_bytes().to_vec(), value)),
            _ => None,
        })
        .collect();
    attrs.sort();
    attrs
}

/// The SHA-256 of the file at `host`, read through `buffer` (made [`BUFFER_SIZE`] long).
fn file_digest(host: &Path, buffer: &mut Vec<u8>) -> io::Result<[u8; 32]> {
    if buffer.len() < BUFFER_SIZE {
        buffer.resize(BUFFER_SIZE, 0);
    }
    let mut file = fs::File::open(host)?;
    let mut hash = Sha256::new();
    loop {
        match file.read(buffer) {
            Ok(0) => break,
            Ok(n) => hash.update(&buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hash.finalize().into())
}

fn kind_name(kind: FileKind) -> &'static [u8] {
    match kind {
        FileKind::File => b"file",
        FileKind::Dir => b"dir",
        FileKind::Symlink => b"symlink",
        FileKind::CharDevice => b"char",
        FileKind::BlockDevice => b"block",
        FileKind::Fifo => b"fifo",
        FileKind::Socket => b"socket",
    }
}

/// Appends `bytes` prefixed with their length (8 bytes, little-endian).
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn field_into(hash: &mut Sha256, bytes: &[u8]) {
    hash.update((bytes.len() as u64).to_le_bytes());
    hash.update(bytes);
}

/// Appends a number as a field of its 8 little-endian bytes.
fn number(out: &mut Vec<u8>, value: u64) {
    field(out, &value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use filetime::FileTime;

    use super::*;
    use crate::context::Dockerignore;

    /// A context with `files` (path, content; a path ending in `/` is a directory).
    fn context_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            write(dir.path(), path, content);
        }
        dir
    }

    fn write(root: &Path, path: &str, content: &str) {
        let p = root.join(path);
        if path.ends_with('/') {
            fs::create_dir_all(&p).unwrap();
            return;
        }
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
    }

    fn open(dir: &Path, ignore: &str) -> Context {
        Context::new(dir, Dockerignore::parse(ignore).unwrap()).unwrap()
    }

    fn sources(dir: &Path, srcs: &[&str]) -> [u8; 32] {
        sources_with(dir, "", srcs, false, &[])
    }

    fn sources_with(
        dir: &Path,
        ignore: &str,
        srcs: &[&str],
        parents: bool,
        exclude: &[&str],
    ) -> [u8; 32] {
        let srcs: Vec<String> = srcs.iter().map(|s| (*s).to_owned()).collect();
        let exclude: Vec<String> = exclude.iter().map(|s| (*s).to_owned()).collect();
        context_sources(&open(dir, ignore), &srcs, parents, &exclude).unwrap()
    }

    fn sample() -> tempfile::TempDir {
        context_with(&[
            ("app/main.txt", "main\n"),
            ("app/lib/util.txt", "util\n"),
            ("app/debug.log", "log\n"),
            ("other/x.txt", "x\n"),
            ("top.txt", "top\n"),
        ])
    }

    fn set_mtime(path: &Path, secs: i64) {
        let t = FileTime::from_unix_time(secs, 0);
        filetime::set_symlink_file_times(path, t, t).unwrap();
    }

    #[test]
    fn times_are_left_out() {
        let ctx = sample();
        let before = sources(ctx.path(), &["app", "top.txt"]);
        for p in ["app", "app/main.txt", "app/lib", "top.txt"] {
            set_mtime(&ctx.path().join(p), 1_000_000);
        }
        assert_eq!(sources(ctx.path(), &["app", "top.txt"]), before);
        assert_eq!(
            context_path(&open(ctx.path(), ""), "/").unwrap(),
            context_path(&open(ctx.path(), ""), "/").unwrap()
        );
    }

    #[test]
    fn what_is_copied_changes_the_checksum() {
        let ctx = sample();
        symlink("main.txt", ctx.path().join("app/link")).unwrap();
        let srcs = ["app", "top.txt"];
        let mut seen = vec![sources(ctx.path(), &srcs)];
        let mut changed = |what: &str| {
            let now = sources(ctx.path(), &srcs);
            assert!(!seen.contains(&now), "{what} kept the checksum");
            seen.push(now);
        };
        fs::write(ctx.path().join("app/main.txt"), "main 2\n").unwrap();
        changed("a content change");
        fs::set_permissions(
            ctx.path().join("app/lib/util.txt"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        changed("a mode change");
        fs::set_permissions(
            ctx.path().join("app/lib"),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        changed("a directory's mode change");
        fs::remove_file(ctx.path().join("app/link")).unwrap();
        symlink("lib/util.txt", ctx.path().join("app/link")).unwrap();
        changed("a symlink target change");
        fs::rename(
            ctx.path().join("app/lib/util.txt"),
            ctx.path().join("app/lib/util2.txt"),
        )
        .unwrap();
        changed("a rename");
        write(ctx.path(), "app/lib/new.txt", "");
        changed("a new file");
        write(ctx.path(), "app/empty/", "");
        changed("a new directory");
    }

    #[test]
    fn files_and_directories_of_one_name_differ() {
        let file = context_with(&[("d", "x")]);
        let dir = context_with(&[("d/d", "x")]);
        assert_ne!(sources(file.path(), &["d"]), sources(dir.path(), &["d"]));
    }

    #[test]
    fn field_boundaries_are_kept() {
        let one = context_with(&[("d/a", "bc")]);
        let two = context_with(&[("d/ab", "c")]);
        assert_ne!(sources(one.path(), &["d"]), sources(two.path(), &["d"]));
    }

    #[test]
    fn ignored_and_excluded_files_are_left_out() {
        let ctx = sample();
        let ignored = sources_with(ctx.path(), "**/*.log", &["app"], false, &[]);
        let excluded = sources_with(ctx.path(), "", &["app"], false, &["**/*.log"]);
        let top_only = sources_with(ctx.path(), "", &["app"], false, &["*.log"]);
        let globbed = sources_with(ctx.path(), "", &["app/*"], false, &["*.log"]);
        let parents = sources_with(ctx.path(), "", &["app/**"], true, &["**/*.log"]);
        let whole = sources(ctx.path(), &["app"]);
        fs::write(ctx.path().join("app/debug.log"), "more log\n").unwrap();
        write(ctx.path(), "app/lib/new.log", "");
        write(ctx.path(), "other/y.txt", "not copied");
        assert_eq!(
            sources_with(ctx.path(), "**/*.log", &["app"], false, &[]),
            ignored
        );
        assert_eq!(
            sources_with(ctx.path(), "", &["app"], false, &["**/*.log"]),
            excluded
        );
        // `*.log` is matched against the paths below the source: `lib/new.log` is copied.
        assert_ne!(
            sources_with(ctx.path(), "", &["app"], false, &["*.log"]),
            top_only
        );
        assert_eq!(
            sources_with(ctx.path(), "", &["app/*"], false, &["*.log"]),
            globbed
        );
        assert_eq!(
            sources_with(ctx.path(), "", &["app/**"], true, &["**/*.log"]),
            parents
        );
        assert_ne!(sources(ctx.path(), &["app"]), whole);
    }

    #[test]
    fn parents_keep_their_paths() {
        let ctx = context_with(&[("src/a/one.txt", "1"), ("src/b/one.txt", "1")]);
        let flat = sources_with(ctx.path(), "", &["src/*/one.txt"], false, &[]);
        let kept = sources_with(ctx.path(), "", &["src/*/one.txt"], true, &[]);
        assert_ne!(flat, kept);
        fs::set_permissions(ctx.path().join("src/b"), fs::Permissions::from_mode(0o700)).unwrap();
        assert_ne!(
            sources_with(ctx.path(), "", &["src/*/one.txt"], true, &[]),
            kept
        );
        assert_eq!(
            sources_with(ctx.path(), "", &["src/*/one.txt"], false, &[]),
            flat
        );
    }

    #[test]
    fn urls_are_left_to_the_caller() {
        let ctx = sample();
        assert_eq!(
            sources(ctx.path(), &["top.txt", "https://example.com/x.tar"]),
            sources(ctx.path(), &["top.txt"])
        );
    }

    #[test]
    fn missing_sources_are_errors() {
        let ctx = sample();
        let srcs = vec!["top.txt".to_owned(), "missing.txt".to_owned()];
        let err = context_sources(&open(ctx.path(), ""), &srcs, false, &[]).unwrap_err();
        assert!(err.contains("missing.txt"), "{err}");
        let err =
            context_sources(&open(ctx.path(), ""), &["nope/*.txt".into()], false, &[]).unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let err = context_path(&open(ctx.path(), ""), "absent").unwrap_err();
        assert!(err.contains("absent"), "{err}");
    }

    #[test]
    fn a_path_changes_with_its_subtree_only() {
        let ctx = sample();
        let sum = |p: &str| context_path(&open(ctx.path(), ""), p).unwrap();
        let app = sum("app");
        let root = sum("/");
        write(ctx.path(), "other/y.txt", "y");
        assert_eq!(sum("app"), app);
        assert_ne!(sum("/"), root);
        set_mtime(&ctx.path().join("app/main.txt"), 5);
        assert_eq!(sum("app"), app);
        fs::write(ctx.path().join("app/lib/util.txt"), "util 2\n").unwrap();
        assert_ne!(sum("app"), app);
        assert_ne!(sum("app/lib"), sum("other"));
        assert_ne!(sum("top.txt"), sum("other/x.txt"));
    }

    #[test]
    fn threads_do_not_change_the_checksum() {
        let ctx = tempfile::tempdir().unwrap();
        for i in 0..(PARALLEL_FILES + 8) {
            write(ctx.path(), &format!("d/f{i:03}"), &"x".repeat(i * 100));
        }
        write(ctx.path(), "d/big", &"y".repeat(3 * BUFFER_SIZE + 17));
        let collect = || {
            let context = open(ctx.path(), "");
            let mut gathered = Gathered::default();
            let tree = gathered.tree(Tree::context(&context));
            gathered.add_source(tree, "d", false, None).unwrap();
            let mut records = Records::default();
            let Some(Item::Copy { tree, matched }) = gathered.items.first() else {
                panic!("one match expected");
            };
            let mut links = Links::new();
            walk_contents(&gathered.trees[*tree], &matched.entry, None, |rel, e| {
                records.entry(rel, e, &gathered.trees[*tree], &mut links);
                Ok(())
            })
            .unwrap();
            records
        };
        let one = collect().digest_on(1).unwrap();
        assert_eq!(collect().digest_on(4).unwrap(), one);
        let srcs = vec!["d".to_owned()];
        let context = open(ctx.path(), "");
        assert_eq!(context_sources(&context, &srcs, false, &[]).unwrap(), {
            let mut records = Records::default();
            records.marker(&[b"copy", b"dir", b"d"]);
            records.list.extend(collect().list);
            records.digest_on(1).unwrap()
        });
    }

    #[test]
    fn hard_links_are_recorded_as_links() {
        let apart = context_with(&[("d/a", "same"), ("d/b", "same")]);
        let linked = context_with(&[("d/a", "same")]);
        fs::hard_link(linked.path().join("d/a"), linked.path().join("d/b")).unwrap();
        assert_ne!(
            sources(apart.path(), &["d"]),
            sources(linked.path(), &["d"])
        );
        // Two sources never share a link.
        assert_eq!(
            sources(apart.path(), &["d/a", "d/b"]),
            sources(linked.path(), &["d/a", "d/b"])
        );
    }
}
