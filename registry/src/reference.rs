//! Repository names, tags and image references, checked against the distribution spec's
//! grammar and normalized the way Docker does.
//!
//! - a repository name is `<path-component>(/<path-component>)*`, each component matching
//!   `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`;
//! - a tag matches `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`;
//! - a reference is `[registry/]name[:tag][@digest]`. The first component is a registry host
//!   when it contains `.` or `:` or is `localhost`; otherwise the registry is Docker Hub
//!   (`docker.io`), where one-component names live under `library/`.

use std::fmt;
use std::str::FromStr;

use berth_layerstore::Digest;

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's API actually lives.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The longest repository name a registry must accept (distribution's limit).
pub const MAX_NAME_LEN: usize = 255;

/// Why a name, tag or reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("repository name {name:?} is invalid: {why}")]
    Name { name: String, why: &'static str },
    #[error("tag {0:?} is invalid: it must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    Tag(String),
    #[error("reference {reference:?} has an invalid digest: {source}")]
    Digest {
        reference: String,
        #[source]
        source: berth_layerstore::DigestError,
    },
    #[error("reference {0:?} is empty or malformed")]
    Malformed(String),
}

/// A checked repository name such as `library/busybox` or `team/app/api`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

fn is_path_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl RepositoryName {
    /// Checks `name` against the spec's grammar.
    pub fn new(name: &str) -> Result<Self, ReferenceError> {
        let bad = |why| ReferenceError::Name {
            name: name.to_owned(),
            why,
        };
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(bad("it is longer than 255 characters"));
        }
        for component in name.split('/') {
            if component.is_empty() {
                return Err(bad("it has an empty path component"));
            }
            if !is_path_component(component) {
                return Err(bad(
                    "each path component must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*",
                ));
            }
        }
        Ok(RepositoryName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RepositoryName {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RepositoryName::new(s)
    }
}

/// A checked tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn new(tag: &str) -> Result<Self, ReferenceError> {
        let b = tag.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if ok {
            Ok(Tag(tag.to_owned()))
        } else {
            Err(ReferenceError::Tag(tag.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Tag {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tag::new(s)
    }
}

/// What a manifest request names: a tag or a digest (the `<reference>` of the spec's paths).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TagOrDigest {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for TagOrDigest {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            s.parse::<Digest>()
                .map(TagOrDigest::Digest)
                .map_err(|source| ReferenceError::Digest {
                    reference: s.to_owned(),
                    source,
                })
        } else {
            Tag::new(s).map(TagOrDigest::Tag)
        }
    }
}

impl fmt::Display for TagOrDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagOrDigest::Tag(t) => t.fmt(f),
            TagOrDigest::Digest(d) => d.fmt(f),
        }
    }
}

/// A full image reference: registry host, repository, and a tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port when given (`127.0.0.1:5000`, `docker.io`).
    pub registry: String,
    pub repository: RepositoryName,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// The tag, defaulting to `latest` when neither tag nor digest was given.
    pub fn tag_or_latest(&self) -> Option<Tag> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(Tag("latest".to_owned())),
        }
    }

    /// What to ask the registry for: the digest when pinned, else the tag (or `latest`).
    pub fn tag_or_digest(&self) -> TagOrDigest {
        match (&self.digest, self.tag_or_latest()) {
            (Some(d), _) => TagOrDigest::Digest(d.clone()),
            (None, Some(t)) => TagOrDigest::Tag(t),
            (None, None) => TagOrDigest::Tag(Tag("latest".to_owned())),
        }
    }

    /// The host to connect to: Docker Hub's API host for `docker.io`.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on a loopback address, which is reached over plain HTTP
    /// without a flag, as Docker does.
    pub fn is_loopback(&self) -> bool {
        let host = host_without_port(&self.registry);
        host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// `host:port` -> `host`, `[::1]:5000` -> `[::1]`.
pub fn host_without_port(registry: &str) -> &str {
    if let Some(end) = registry.strip_prefix('[').and_then(|r| r.find(']')) {
        return &registry[..end + 2];
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || ReferenceError::Malformed(s.to_owned());
        if s.is_empty() {
            return Err(malformed());
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse::<Digest>()
                        .map_err(|source| ReferenceError::Digest {
                            reference: s.to_owned(),
                            source,
                        })?,
                ),
            ),
            None => (s, None),
        };
        // The tag is after the last ':' that follows the last '/', so a registry port is not
        // mistaken for a tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(Tag::new(&rest[i + 1..])?))
            }
            None => (rest, None),
        };
        let (registry, repo) = match path.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), remainder.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), path.to_owned()),
        };
        if repo.is_empty() {
            return Err(malformed());
        }
        let repo = if registry == DOCKER_HUB && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        };
        Ok(Reference {
            registry,
            repository: RepositoryName::new(&repo)?,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in [
            "a",
            "library/busybox",
            "a/b/c",
            "my-app",
            "my--app",
            "my_app",
            "my__app",
            "my.app",
            "x9/y0",
        ] {
            assert!(RepositoryName::new(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in [
            "", "A", "a//b", "/a", "a/", "a/../b", "..", "a.", "-a", "a___b", "a_.b", "a b", "a:b",
            "a/B",
        ] {
            assert!(
                RepositoryName::new(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(RepositoryName::new(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags() {
        assert!(Tag::new("latest").is_ok());
        assert!(Tag::new("_v1.2-rc.3").is_ok());
        assert!(Tag::new(&"a".repeat(128)).is_ok());
        for bad in ["", ".a", "-a", "a/b", "a:b", &"a".repeat(129)] {
            assert!(Tag::new(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn references() {
        let r: Reference = "busybox".parse().unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository.as_str(), "library/busybox");
        assert_eq!(r.tag_or_latest().unwrap().as_str(), "latest");
        assert_eq!(r.api_host(), DOCKER_HUB_API);

        let r: Reference = "127.0.0.1:5000/team/app:1.2".parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository.as_str(), "team/app");
        assert_eq!(r.tag.as_ref().unwrap().as_str(), "1.2");
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/app:1.2");

        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r: Reference = format!("localhost/app@{d}").parse().unwrap();
        assert_eq!(r.registry, "localhost");
        assert!(r.tag.is_none());
        assert_eq!(r.tag_or_digest().to_string(), d);
        assert!(r.is_loopback());

        let r: Reference = "[::1]:5000/app:v".parse().unwrap();
        assert!(r.is_loopback());
        let r: Reference = "reg.example.com/app".parse().unwrap();
        assert!(!r.is_loopback());

        for bad in [
            "",
            "Upper/case",
            "app:",
            "app@sha256:zz",
            "reg.example.com/",
        ] {
            assert!(
                bad.parse::<Reference>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
