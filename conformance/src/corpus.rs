//! The Dockerfile corpus under `conformance/dockerfiles/`: each case is a directory with a
//! `Dockerfile`, a `context/`, and, when the case builds an image, `expected.txt` (docker's
//! image for it, as [`golden`] renders it). `cases.json` lists the cases with what they cover,
//! how to build them (build args, target, secrets, files to generate into the context), which
//! docker builder on the reference machine can build them, how to run the result, and the
//! differences from docker allowed for each, with the reason.
//!
//! This module reads the manifest and prepares contexts; running the builders is the test's job
//! (`tests/dockerfile_corpus.rs`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::image::{ABSENT, ConfigView, Difference, Filesystem};

/// `cases.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corpus {
    /// What the file is, for its readers.
    #[serde(default)]
    pub about: Vec<String>,
    /// Base images that docker builds before the cases, in order.
    #[serde(default)]
    pub bases: Vec<Base>,
    /// The cases, in order.
    pub cases: Vec<Case>,
    /// The directory holding `cases.json`, set by [`Corpus::load`].
    #[serde(skip)]
    pub dir: PathBuf,
}

/// A base image the cases build `FROM`, built by docker from `<dir>/Dockerfile`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// The tag it gets.
    pub name: String,
    /// Its directory, relative to the corpus (holding `Dockerfile` and `context/`).
    pub dir: String,
    /// Why it exists.
    pub covers: String,
}

/// Which docker builder produces the reference image for a case on the reference machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DockerBuild {
    /// BuildKit (`DOCKER_BUILDKIT=1 docker build`) builds the case's own Dockerfile.
    Buildkit,
    /// The Dockerfile uses syntax docker's built-in frontend lacks: docker must refuse it, and
    /// builds `equivalent.Dockerfile` (the same image, written without that syntax) instead.
    Equivalent,
}

/// What a case's build must end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// An image.
    #[default]
    Image,
    /// A failed build, with both builders.
    Failure,
}

/// One Dockerfile of the corpus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// The directory name, `NN-name`.
    pub name: String,
    /// The instructions, flags and behaviours it covers.
    pub covers: String,
    /// `--build-arg` values; `${SERVER}` is replaced by the URL of the test's HTTP server.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    #[serde(default)]
    pub target: Option<String>,
    /// `--secret id=<key>,src=<case dir>/<value>`.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Files made in the context before the build (git keeps neither modes other than 644 and
    /// 755, nor hardlinks, nor empty directories, and large files are not committed).
    #[serde(default)]
    pub generate: Vec<Generate>,
    /// How docker builds the reference image.
    pub docker: DockerBuild,
    /// For [`DockerBuild::Equivalent`]: what docker's frontend lacks.
    #[serde(default)]
    pub docker_lacks: Option<String>,
    /// Whether docker's classic builder (`DOCKER_BUILDKIT=0`) ends as the case expects (builds
    /// the image, or refuses a failure case): `true`, or why not.
    pub classic: serde_json::Value,
    /// What the build must end in.
    #[serde(default)]
    pub expect: Expect,
    /// The image the golden listing is taken against: the busybox base unless `scratch`.
    #[serde(default)]
    pub golden_base: Option<String>,
    /// How to run the image; its output must be the same from docker's image and berth's.
    #[serde(default)]
    pub run: Option<Run>,
    /// Differences from docker's image that are allowed for berth's, each with its reason.
    #[serde(default)]
    pub allow: Vec<Allowance>,
}

/// `docker run --rm [--entrypoint E] IMAGE ARGS...`, and what it must print.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// `--entrypoint`.
    #[serde(default)]
    pub entrypoint: Option<String>,
    /// Arguments after the image.
    #[serde(default)]
    pub args: Vec<String>,
    /// The exact standard output expected.
    pub stdout: String,
}

/// A difference from docker that berth may show, and why that is right.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowance {
    /// A [`Difference::key`] pattern: `*` matches any run of characters.
    pub key: String,
    /// Why the difference is legitimate.
    pub why: String,
}

impl Allowance {
    /// Whether this allowance covers `difference`.
    pub fn matches(&self, difference: &Difference) -> bool {
        wildcard(&self.key, &difference.key)
    }
}

/// `pattern` with `*` matching any run of characters, against the whole of `text`.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// A file made in a case's context before it is built; exactly one of the content fields.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    /// Where, relative to the context. A trailing `/` makes a directory.
    pub path: String,
    /// Text content.
    #[serde(default)]
    pub content: Option<String>,
    /// This many pseudo-random bytes (the same every run).
    #[serde(default)]
    pub random: Option<u64>,
    /// This many zero bytes.
    #[serde(default)]
    pub zeros: Option<u64>,
    /// A hardlink to this context path.
    #[serde(default)]
    pub hardlink: Option<String>,
    /// A tar archive of these entries.
    #[serde(default)]
    pub tar: Option<Vec<TarEntry>>,
    /// `gzip` to compress the content, random bytes, zeros or tar.
    #[serde(default)]
    pub compress: Option<String>,
    /// Permission bits in octal (`"0600"`), applied last; alone, it changes an existing path.
    #[serde(default)]
    pub mode: Option<String>,
}

/// One entry of a generated tar: a directory (path ending in `/`), a file, a symlink or a
/// hardlink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TarEntry {
    /// Path inside the archive.
    pub path: String,
    /// File content.
    #[serde(default)]
    pub content: Option<String>,
    /// Symlink target.
    #[serde(default)]
    pub symlink: Option<String>,
    /// Hardlink target (an earlier path of the archive).
    #[serde(default)]
    pub hardlink: Option<String>,
    /// Octal permission bits; 0755 for directories and 0644 for files by default.
    #[serde(default)]
    pub mode: Option<String>,
    /// Owner.
    #[serde(default)]
    pub uid: u64,
    /// Group.
    #[serde(default)]
    pub gid: u64,
}

/// Why the corpus could not be read or a context prepared.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The manifest is not what this module expects.
    #[error("{0}")]
    Invalid(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CorpusError + '_ {
    move |source| CorpusError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn octal(text: &str) -> Result<u32, CorpusError> {
    u32::from_str_radix(text, 8).map_err(|_| CorpusError::Invalid(format!("bad mode {text:?}")))
}

/// Directories of the corpus that are not cases: the base images docker builds first, and the
/// files the test's HTTP server serves.
pub const SUPPORT_DIRS: &[&str] = &["bases", "served"];

/// The mtime of every generated file and tar entry: 2024-01-01T00:00:00Z.
pub const FIXED_MTIME: u64 = 1_704_067_200;

impl Corpus {
    /// Reads `<dir>/cases.json` and checks that every case and base directory is there.
    pub fn load(dir: &Path) -> Result<Corpus, CorpusError> {
        let path = dir.join("cases.json");
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        let mut corpus: Corpus = serde_json::from_str(&text)
            .map_err(|e| CorpusError::Invalid(format!("{}: {e}", path.display())))?;
        corpus.dir = dir.to_path_buf();
        let mut names = std::collections::BTreeSet::new();
        for case in &corpus.cases {
            if !names.insert(case.name.clone()) {
                return Err(CorpusError::Invalid(format!(
                    "case {} is listed twice",
                    case.name
                )));
            }
            let case_dir = dir.join(&case.name);
            if !case_dir.join("Dockerfile").is_file() {
                return Err(CorpusError::Invalid(format!(
                    "case {} has no {}",
                    case.name,
                    case_dir.join("Dockerfile").display()
                )));
            }
            let equivalent = case_dir.join("equivalent.Dockerfile").is_file();
            match (case.docker, equivalent, case.docker_lacks.is_some()) {
                (DockerBuild::Equivalent, true, true) | (DockerBuild::Buildkit, false, false) => {}
                _ => {
                    return Err(CorpusError::Invalid(format!(
                        "case {}: \"docker\": \"equivalent\" goes with equivalent.Dockerfile \
                         and \"docker_lacks\", and only with them",
                        case.name
                    )));
                }
            }
            if case.expect == Expect::Image && case.run.is_none() {
                return Err(CorpusError::Invalid(format!(
                    "case {} builds an image but says nothing of how to run it",
                    case.name
                )));
            }
            if case.allow.iter().any(|a| a.why.trim().is_empty()) {
                return Err(CorpusError::Invalid(format!(
                    "case {}: every allowed difference needs its reason",
                    case.name
                )));
            }
        }
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir()
                && !SUPPORT_DIRS.contains(&name.as_str())
                && !names.contains(&name)
            {
                return Err(CorpusError::Invalid(format!(
                    "{} is not listed in cases.json",
                    entry.path().display()
                )));
            }
        }
        Ok(corpus)
    }

    /// The directory of `case`.
    pub fn case_dir(&self, case: &Case) -> PathBuf {
        self.dir.join(&case.name)
    }
}

/// Copies `from` into `to` (which must not exist), keeping symlinks and permission bits.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), CorpusError> {
    fs::create_dir_all(to).map_err(io_error(to))?;
    let mut entries: Vec<_> = fs::read_dir(from)
        .map_err(io_error(from))?
        .collect::<Result<_, _>>()
        .map_err(io_error(from))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(io_error(&source))?;
        if kind.is_symlink() {
            let link = fs::read_link(&source).map_err(io_error(&source))?;
            symlink(link, &target).map_err(io_error(&target))?;
        } else if kind.is_dir() {
            copy_tree(&source, &target)?;
            let mode = entry.metadata().map_err(io_error(&source))?.permissions();
            fs::set_permissions(&target, mode).map_err(io_error(&target))?;
        } else {
            fs::copy(&source, &target).map_err(io_error(&source))?;
        }
    }
    Ok(())
}

/// Pseudo-random bytes from a fixed seed (xorshift64*), the same on every machine.
fn pseudo_random(len: u64) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len as usize + 8);
    while (out.len() as u64) < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len as usize);
    out
}

fn tar_archive(entries: &[TarEntry]) -> Result<Vec<u8>, CorpusError> {
    let invalid = |e: io::Error| CorpusError::Invalid(format!("generated tar: {e}"));
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(FIXED_MTIME);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_size(0);
        let is_dir = entry.path.ends_with('/');
        let default_mode = if is_dir { 0o755 } else { 0o644 };
        let mode = entry.mode.as_deref().map(octal).transpose()?;
        header.set_mode(mode.unwrap_or(default_mode));
        if let Some(target) = &entry.symlink {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(mode.unwrap_or(0o777));
            builder
                .append_link(&mut header, &entry.path, target)
                .map_err(invalid)?;
        } else if let Some(target) = &entry.hardlink {
            header.set_entry_type(tar::EntryType::Link);
            builder
                .append_link(&mut header, &entry.path, target)
                .map_err(invalid)?;
        } else if is_dir {
            header.set_entry_type(tar::EntryType::Directory);
            builder
                .append_data(&mut header, &entry.path, &[][..])
                .map_err(invalid)?;
        } else {
            let content = entry.content.clone().unwrap_or_default();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(content.len() as u64);
            builder
                .append_data(&mut header, &entry.path, content.as_bytes())
                .map_err(invalid)?;
        }
    }
    builder.into_inner().map_err(invalid)
}

impl Generate {
    fn apply(&self, context: &Path) -> Result<(), CorpusError> {
        let path = context.join(self.path.trim_end_matches('/'));
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        let write = |data: &[u8]| -> Result<(), CorpusError> {
            let mut file = fs::File::create(&path).map_err(io_error(&path))?;
            file.write_all(data).map_err(io_error(&path))
        };
        let data = if self.path.ends_with('/') {
            fs::create_dir_all(&path).map_err(io_error(&path))?;
            None
        } else if let Some(content) = &self.content {
            Some(content.as_bytes().to_vec())
        } else if let Some(len) = self.random {
            Some(pseudo_random(len))
        } else if let Some(len) = self.zeros {
            Some(vec![0u8; len as usize])
        } else if let Some(entries) = &self.tar {
            Some(tar_archive(entries)?)
        } else if let Some(target) = &self.hardlink {
            fs::hard_link(context.join(target), &path).map_err(io_error(&path))?;
            None
        } else if self.mode.is_some() {
            None
        } else {
            return Err(CorpusError::Invalid(format!(
                "generate {:?}: nothing to make",
                self.path
            )));
        };
        if let Some(data) = data {
            match self.compress.as_deref() {
                None => write(&data)?,
                Some("gzip") => {
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    gz.write_all(&data).map_err(io_error(&path))?;
                    write(&gz.finish().map_err(io_error(&path))?)?;
                }
                Some(other) => {
                    return Err(CorpusError::Invalid(format!(
                        "unknown compression {other:?}"
                    )));
                }
            }
        }
        if let Some(mode) = &self.mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(octal(mode)?))
                .map_err(io_error(&path))?;
        }
        Ok(())
    }
}

impl Case {
    /// Makes the case's build context at `dest`: a copy of `context/` (if any) with the
    /// generated files added. Returns `dest`.
    pub fn prepare_context(&self, corpus: &Corpus, dest: &Path) -> Result<PathBuf, CorpusError> {
        let source = corpus.case_dir(self).join("context");
        if source.is_dir() {
            copy_tree(&source, dest)?;
        } else {
            fs::create_dir_all(dest).map_err(io_error(dest))?;
        }
        for item in &self.generate {
            item.apply(dest)?;
        }
        Ok(dest.to_path_buf())
    }

    /// The build args with `${SERVER}` replaced by `server`.
    pub fn build_args(&self, server: &str) -> Vec<(String, String)> {
        self.build_args
            .iter()
            .map(|(k, v)| (k.clone(), v.replace("${SERVER}", server)))
            .collect()
    }
}

/// The golden listing of an image: the filesystem entries that differ from `base` (added or
/// changed), the paths of `base` it lacks, and its config fields; `replacements` turn
/// run-specific text (the test server's URL) back into placeholders.
pub fn golden(
    title: &str,
    image: &Filesystem,
    base: &Filesystem,
    config: &ConfigView,
    replacements: &[(String, String)],
) -> String {
    let mut out = format!("# {title}\n[filesystem: added or changed]\n");
    for (path, entry) in &image.entries {
        if base.entries.get(path) != Some(entry) {
            out.push_str(&format!("{path} {entry}\n"));
        }
    }
    out.push_str("[filesystem: removed]\n");
    for path in base.entries.keys() {
        if !image.entries.contains_key(path) {
            out.push_str(&format!("{path}\n"));
        }
    }
    out.push_str("[config]\n");
    out.push_str(&config.listing());
    for (from, to) in replacements {
        out = out.replace(from, to);
    }
    out
}

/// Differences rendered one per paragraph, labelled with the two sides' names.
pub fn render_differences(differences: &[Difference], left: &str, right: &str) -> String {
    let width = left.len().max(right.len());
    differences
        .iter()
        .map(|d| {
            format!(
                "  {}\n    {left:width$}: {}\n    {right:width$}: {}\n",
                d.key,
                if d.left.is_empty() { ABSENT } else { &d.left },
                if d.right.is_empty() { ABSENT } else { &d.right },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_whole_keys() {
        assert!(wildcard("history[*].created_by", "history[12].created_by"));
        assert!(wildcard("fs:/var/*", "fs:/var/lib/x"));
        assert!(wildcard("*", "anything"));
        assert!(wildcard("a*b*c", "a-b-b-c"));
        assert!(!wildcard("a*b*c", "a-c"));
        assert!(!wildcard("fs:/var/*", "fs:/va"));
        assert!(!wildcard("config.Env", "config.Env2"));
    }

    #[test]
    fn pseudo_random_bytes_are_stable() {
        let data = pseudo_random(20);
        assert_eq!(data.len(), 20);
        assert_eq!(data, pseudo_random(20));
        assert_ne!(data[..8], data[8..16]);
    }
}
