//! Flattening layers into the filesystem a container sees, the way docker's layer applier does:
//! `.wh.<name>` removes `<name>` (and what is under it) from the layers below, `.wh..wh..opq`
//! empties its directory of what the layers below put there, a directory entry over an existing
//! directory changes its metadata and keeps its children, any other entry replaces what was at
//! its path, and missing parent directories are created `0755 root:root`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::Read;

use sha2::{Digest as _, Sha256};

use super::{ABSENT, Difference, ImageError};

/// The type of a filesystem entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    Char {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device.
    Block {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::File => f.write_str("file"),
            Kind::Dir => f.write_str("dir"),
            Kind::Symlink => f.write_str("symlink"),
            Kind::Char { major, minor } => write!(f, "char({major},{minor})"),
            Kind::Block { major, minor } => write!(f, "block({major},{minor})"),
            Kind::Fifo => f.write_str("fifo"),
        }
    }
}

/// One path of the flattened filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its type.
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`mode & 0o7777`); always `0o777` for a
    /// symlink, whose bits Linux ignores and docker's applier does not set.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Content length, for a regular file; 0 otherwise.
    pub size: u64,
    /// `sha256:<hex>` of the content, for a regular file.
    pub sha256: Option<String>,
    /// The target, for a symlink.
    pub link_target: Option<String>,
    /// For a regular file with more than one path: the smallest of its paths, the same for
    /// every path of the group.
    pub hardlink_group: Option<String>,
    /// Extended attributes (from PAX `SCHILY.xattr.*` records), values in hex.
    pub xattrs: BTreeMap<String, String>,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04o} {}:{}",
            self.kind, self.mode, self.uid, self.gid
        )?;
        if self.kind == Kind::File {
            write!(f, " size={}", self.size)?;
        }
        if let Some(sha256) = &self.sha256 {
            write!(f, " {sha256}")?;
        }
        if let Some(target) = &self.link_target {
            write!(f, " -> {target}")?;
        }
        if let Some(group) = &self.hardlink_group {
            write!(f, " hardlink-group={group}")?;
        }
        for (name, value) in &self.xattrs {
            write!(f, " xattr:{name}={value}")?;
        }
        Ok(())
    }
}

/// What one inode holds; paths that are hardlinks of each other share one.
#[derive(Debug, Clone)]
struct Inode {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    sha256: Option<String>,
    link_target: Option<String>,
    xattrs: BTreeMap<String, String>,
}

impl Inode {
    fn implicit_dir() -> Inode {
        Inode {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            sha256: None,
            link_target: None,
            xattrs: BTreeMap::new(),
        }
    }
}

/// The flattened filesystem of an image: absolute paths (`/etc/passwd`; the root itself is not
/// listed) in byte order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filesystem {
    /// Every path and what is there.
    pub entries: BTreeMap<String, Entry>,
}

/// The layers applied so far: each path points at an inode.
#[derive(Default)]
struct Tree {
    paths: BTreeMap<String, usize>,
    inodes: Vec<Inode>,
}

impl Tree {
    fn kind(&self, path: &str) -> Option<&Kind> {
        self.paths.get(path).map(|&i| &self.inodes[i].kind)
    }

    /// Removes `path` and everything under it; with `keep`, only what `keep` does not hold.
    fn remove_tree(&mut self, path: &str, including_self: bool, keep: &HashSet<String>) {
        let prefix = format!("{path}/");
        let doomed: Vec<String> = self
            .paths
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .filter(|p| !keep.contains(p))
            .collect();
        for p in doomed {
            self.paths.remove(&p);
        }
        if including_self && !keep.contains(path) {
            self.paths.remove(path);
        }
    }

    fn insert(&mut self, path: String, inode: Inode) {
        self.inodes.push(inode);
        self.paths.insert(path, self.inodes.len() - 1);
    }
}

/// `a/./b/` and `./a/b` as `/a/b`; the root as `/`; `None` for a path with `..`.
fn normalize(raw: &str) -> Option<String> {
    let mut out = String::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => {
                out.push('/');
                out.push_str(part);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// `(parent, name)` of a normalized path other than `/`.
fn split(path: &str) -> (&str, &str) {
    let at = path.rfind('/').unwrap_or(0);
    let parent = if at == 0 { "/" } else { &path[..at] };
    (parent, &path[at + 1..])
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

impl Filesystem {
    /// Applies `layers` (uncompressed tar streams) bottom to top.
    pub fn from_layers(layers: &[impl AsRef<[u8]>]) -> Result<Filesystem, ImageError> {
        let mut tree = Tree::default();
        for (index, layer) in layers.iter().enumerate() {
            apply(&mut tree, index, layer.as_ref())?;
        }
        Ok(Filesystem::from_tree(&tree))
    }

    fn from_tree(tree: &Tree) -> Filesystem {
        let mut by_inode: HashMap<usize, Vec<&String>> = HashMap::new();
        for (path, &inode) in &tree.paths {
            by_inode.entry(inode).or_default().push(path);
        }
        let entries = tree
            .paths
            .iter()
            .map(|(path, &i)| {
                let inode = &tree.inodes[i];
                let group = &by_inode[&i];
                let hardlink_group = (group.len() > 1)
                    .then(|| group.iter().min().map(|p| p.to_string()))
                    .flatten();
                let entry = Entry {
                    kind: inode.kind.clone(),
                    mode: if inode.kind == Kind::Symlink {
                        0o777
                    } else {
                        inode.mode
                    },
                    uid: inode.uid,
                    gid: inode.gid,
                    size: inode.size,
                    sha256: inode.sha256.clone(),
                    link_target: inode.link_target.clone(),
                    hardlink_group,
                    xattrs: inode.xattrs.clone(),
                };
                (path.clone(), entry)
            })
            .collect();
        Filesystem { entries }
    }

    /// One line per path: `<path> <type> <mode> <uid>:<gid> [size=<n> sha256:<hex>] [-> <target>]
    /// [hardlink-group=<path>] [xattr:<name>=<hex>]...`.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        for (path, entry) in &self.entries {
            out.push_str(&format!("{path} {entry}\n"));
        }
        out
    }

    /// The paths whose entries differ between `self` (left) and `other` (right), in path order.
    pub fn compare(&self, other: &Filesystem) -> Vec<Difference> {
        let mut differences = Vec::new();
        let paths: std::collections::BTreeSet<&String> =
            self.entries.keys().chain(other.entries.keys()).collect();
        for path in paths {
            let left = self.entries.get(path);
            let right = other.entries.get(path);
            if left != right {
                let render = |e: Option<&Entry>| e.map_or(ABSENT.to_string(), |e| e.to_string());
                differences.push(Difference {
                    key: format!("fs:{path}"),
                    left: render(left),
                    right: render(right),
                });
            }
        }
        differences
    }
}

/// Applies one layer to `tree`.
fn apply(tree: &mut Tree, layer: usize, data: &[u8]) -> Result<(), ImageError> {
    let io = |path: &str, source| ImageError::Io {
        path: format!("layer {layer}: {path}"),
        source,
    };
    let bad = |path: &str, reason: String| ImageError::Layer {
        layer,
        path: path.to_string(),
        reason,
    };
    // The paths this layer has written so far: an opaque marker keeps them.
    let mut written: HashSet<String> = HashSet::new();
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().map_err(|e| io("tar stream", e))? {
        let mut entry = entry.map_err(|e| io("tar stream", e))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let entry_type = entry.header().entry_type();
        if matches!(
            entry_type,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let path = normalize(&raw).ok_or_else(|| bad(&raw, "the path has `..`".into()))?;
        if path == "/" {
            // The root's own metadata is the runtime's business; docker's applier skips it too.
            continue;
        }
        let (parent, name) = split(&path);
        let parent = parent.to_string();
        if name == ".wh..wh..opq" {
            tree.remove_tree(&parent, false, &written);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            tree.remove_tree(&join(&parent, hidden), true, &HashSet::new());
            continue;
        }
        // Missing parents are made as docker's applier makes them.
        let mut ancestor = String::new();
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            ancestor.push('/');
            ancestor.push_str(part);
            match tree.kind(&ancestor) {
                None => tree.insert(ancestor.clone(), Inode::implicit_dir()),
                Some(Kind::Dir) => {}
                Some(kind) => {
                    return Err(bad(&raw, format!("its parent {ancestor} is a {kind}")));
                }
            }
        }
        let header = entry.header();
        let mode = header.mode().map_err(|e| io(&raw, e))? & 0o7777;
        let uid = header.uid().map_err(|e| io(&raw, e))?;
        let gid = header.gid().map_err(|e| io(&raw, e))?;
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        let link_name = entry
            .link_name_bytes()
            .map(|link| String::from_utf8_lossy(&link).into_owned());
        let link_name = || {
            link_name
                .clone()
                .ok_or_else(|| bad(&raw, "a link without a target".into()))
        };
        let mut xattrs = BTreeMap::new();
        if let Some(extensions) = entry.pax_extensions().map_err(|e| io(&raw, e))? {
            for extension in extensions {
                let extension = extension.map_err(|e| io(&raw, e))?;
                if let Some(name) = extension
                    .key()
                    .ok()
                    .and_then(|k| k.strip_prefix("SCHILY.xattr."))
                {
                    let hex: String = extension
                        .value_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    xattrs.insert(name.to_string(), hex);
                }
            }
        }
        let mut inode = Inode {
            kind: Kind::File,
            mode,
            uid,
            gid,
            size: 0,
            sha256: None,
            link_target: None,
            xattrs,
        };
        match entry_type {
            tar::EntryType::Link => {
                let target = normalize(&link_name()?)
                    .ok_or_else(|| bad(&raw, "the hardlink target has `..`".into()))?;
                let &target_inode = tree
                    .paths
                    .get(&target)
                    .ok_or_else(|| bad(&raw, format!("hardlink to {target}, which is absent")))?;
                if tree.inodes[target_inode].kind == Kind::Dir {
                    return Err(bad(&raw, format!("hardlink to the directory {target}")));
                }
                if target != path {
                    tree.remove_tree(&path, true, &HashSet::new());
                    tree.paths.insert(path.clone(), target_inode);
                }
                written.insert(path);
                continue;
            }
            tar::EntryType::Directory => {
                inode.kind = Kind::Dir;
                if let Some(&existing) = tree.paths.get(&path) {
                    if tree.inodes[existing].kind == Kind::Dir {
                        tree.inodes[existing] = inode;
                        written.insert(path);
                        continue;
                    }
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut hasher = Sha256::new();
                let mut buffer = vec![0u8; 64 * 1024];
                let mut size = 0u64;
                loop {
                    let n = entry.read(&mut buffer).map_err(|e| io(&raw, e))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buffer[..n]);
                    size += n as u64;
                }
                inode.size = size;
                inode.sha256 = Some(format!("sha256:{:x}", hasher.finalize()));
            }
            tar::EntryType::Symlink => {
                inode.kind = Kind::Symlink;
                inode.link_target = Some(link_name()?);
            }
            tar::EntryType::Char => inode.kind = Kind::Char { major, minor },
            tar::EntryType::Block => inode.kind = Kind::Block { major, minor },
            tar::EntryType::Fifo => inode.kind = Kind::Fifo,
            other => {
                return Err(bad(&raw, format!("unsupported tar entry type {other:?}")));
            }
        }
        tree.remove_tree(&path, true, &HashSet::new());
        tree.insert(path.clone(), inode);
        written.insert(path);
    }
    Ok(())
}
