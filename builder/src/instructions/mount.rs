//! `RUN --mount=...`: the CSV value, its keys, and the checks BuildKit's `runmount.go` makes.

use thiserror::Error;

use super::values::suggest;

/// What kind of mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MountType {
    /// A directory of the build context, a stage or an image (the default).
    Bind,
    /// A persistent cache directory.
    Cache,
    /// A `tmpfs`.
    Tmpfs,
    /// A build secret, as a file or an environment variable.
    Secret,
    /// An SSH agent socket.
    Ssh,
}

impl MountType {
    /// The name in `type=`.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }

    const ALL: [MountType; 5] = [
        MountType::Bind,
        MountType::Cache,
        MountType::Tmpfs,
        MountType::Secret,
        MountType::Ssh,
    ];
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CacheSharing {
    /// Several writers at once (the default).
    Shared,
    /// A new mount for each concurrent writer.
    Private,
    /// One writer at a time.
    Locked,
}

impl CacheSharing {
    /// The name in `sharing=`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheSharing::Shared => "shared",
            CacheSharing::Private => "private",
            CacheSharing::Locked => "locked",
        }
    }
}

/// One `RUN --mount`, its values expanded and checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mount {
    /// `type=`.
    pub kind: MountType,
    /// `from=`: a stage name or index, or an image (as written, after expansion); the
    /// resolved reference is in [`Mount::from_ref`].
    pub from: Option<String>,
    /// What `from` refers to.
    pub from_ref: Option<super::FromRef>,
    /// `source=` / `src=`: the path inside `from`.
    pub source: Option<String>,
    /// `target=` / `dst=` / `destination=`: where it is mounted.
    pub target: Option<String>,
    /// Read-only: given by `ro`/`readonly`/`rw`/`readwrite`, else true for `bind`, `secret`
    /// and `ssh`, false for `cache` and `tmpfs`.
    pub read_only: bool,
    /// `id=`: the cache, secret or SSH key id.
    pub id: Option<String>,
    /// `sharing=` (cache mounts only).
    pub sharing: Option<CacheSharing>,
    /// `required` (secret and ssh mounts only).
    pub required: bool,
    /// `size=` in bytes (tmpfs mounts only).
    pub size: Option<u64>,
    /// `env=`: the environment variable a secret is exposed as.
    pub env: Option<String>,
    /// `mode=` (octal; cache, secret and ssh mounts only).
    pub mode: Option<u32>,
    /// `uid=` (cache, secret and ssh mounts only).
    pub uid: Option<u32>,
    /// `gid=` (cache, secret and ssh mounts only).
    pub gid: Option<u32>,
}

/// A mount that does not parse or is inconsistent. Messages are BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MountError {
    /// The value is not valid CSV.
    #[error("failed to parse csv mounts: {0}")]
    Csv(String),
    /// A field with no `=` that is not a flag-like key.
    #[error("invalid field '{0}' must be a key=value pair")]
    NotKeyValue(String),
    /// A key this mount type does not take.
    #[error("unexpected key '{key}' for mount type '{kind}'")]
    KeyForType {
        /// The key.
        key: String,
        /// The mount type.
        kind: &'static str,
    },
    /// A key no mount type takes.
    #[error("unexpected key '{key}' in '{field}'")]
    UnknownKey {
        /// The key.
        key: String,
        /// The field it was in.
        field: String,
        /// The closest known key.
        suggestion: Option<&'static str>,
    },
    /// `type=` with an unknown type.
    #[error("unsupported mount type {0:?}")]
    UnknownType(String, Option<&'static str>),
    /// `sharing=` with an unknown mode.
    #[error("unsupported sharing value {0:?}")]
    UnknownSharing(String),
    /// A boolean key with something other than a boolean.
    #[error("invalid value for {key}: {value}")]
    NotBoolean {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// A numeric key (`mode`, `uid`, `gid`, `size`) that does not parse.
    #[error("invalid value {value} for {key}")]
    NotNumber {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
    },
    /// `mode`, `uid` or `gid` on a mount type that has no files of its own.
    #[error("{key} not allowed for {kind:?} type mounts")]
    FileInfo {
        /// The key.
        key: &'static str,
        /// The mount type.
        kind: &'static str,
    },
    /// `sharing=` on a mount that is not a cache.
    #[error("invalid cache sharing set for {0} mount")]
    SharingNotCache(&'static str),
    /// `from=` on a secret.
    #[error("secret mount should not have a from")]
    SecretFrom,
    /// A secret with neither source, target, id nor env.
    #[error("invalid secret mount. one of source, target required")]
    SecretUnnamed,
    /// A secret with both `source` and `id`.
    #[error("both source and id can't be set")]
    SecretSourceAndId,
    /// A mount target of `/`.
    #[error("invalid mount target {0:?}")]
    RootTarget(String),
}

impl MountError {
    /// A suggestion, when one helps.
    pub fn hint(&self) -> Option<String> {
        match self {
            MountError::UnknownKey {
                suggestion: Some(s),
                ..
            } => Some(format!("did you mean {s}?")),
            MountError::UnknownType(_, Some(s)) => Some(format!("did you mean {s}?")),
            MountError::UnknownType(_, None) => {
                Some("use one of bind, cache, tmpfs, secret and ssh".to_string())
            }
            MountError::UnknownSharing(_) => {
                Some("use one of shared, private and locked".to_string())
            }
            _ => None,
        }
    }
}

const ALL_KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Splits a CSV record as Go's `encoding/csv` reads one line: fields separated by `,`; a field
/// that starts with `"` is quoted, `""` inside it is a quote.
pub(crate) fn split_csv(value: &str) -> Result<Vec<String>, MountError> {
    let mut fields = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(MountError::Csv(
                            "extraneous or missing \" in quoted-field".to_string(),
                        ));
                    }
                    Some('"') => {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            field.push('"');
                        } else {
                            break;
                        }
                    }
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => {
                    return Err(MountError::Csv(
                        "extraneous or missing \" in quoted-field".to_string(),
                    ));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => {
                        return Err(MountError::Csv("bare \" in non-quoted-field".to_string()));
                    }
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, MountError> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(MountError::NotBoolean {
            key: key.to_string(),
            value: value.to_string(),
        }),
    }
}

fn parse_u32(key: &'static str, value: &str, radix: u32) -> Result<u32, MountError> {
    let digits = if radix == 8 {
        value.strip_prefix("0o").unwrap_or(value)
    } else {
        value
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(MountError::NotNumber {
            key,
            value: value.to_string(),
        });
    }
    u32::from_str_radix(digits, radix).map_err(|_| MountError::NotNumber {
        key,
        value: value.to_string(),
    })
}

/// Parses a size as Docker's `units.RAMInBytes`: a number, optionally with a fraction, and an
/// optional binary unit (`b`, `k`, `m`, `g`, `t`, `p`, with or without a trailing `b`/`ib`).
fn parse_size(value: &str) -> Result<u64, MountError> {
    let err = || MountError::NotNumber {
        key: "size",
        value: value.to_string(),
    };
    let number_end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(number_end);
    let number: f64 = number.parse().map_err(|_| err())?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(&unit);
    let multiplier: f64 = match unit {
        "" | "b" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "p" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err()),
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// Parses the fields of one `--mount` value, each value already expanded.
pub(crate) fn parse_mount(fields: &[String]) -> Result<Mount, MountError> {
    let mut m = Mount {
        kind: MountType::Bind,
        from: None,
        from_ref: None,
        source: None,
        target: None,
        read_only: false,
        id: None,
        sharing: None,
        required: false,
        size: None,
        env: None,
        mode: None,
        uid: None,
        gid: None,
    };
    let mut read_only_given = false;
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.read_only = true;
                    read_only_given = true;
                }
                "readwrite" | "rw" => {
                    m.read_only = false;
                    read_only_given = true;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true;
                }
                "required" => {
                    return Err(MountError::KeyForType {
                        key,
                        kind: m.kind.as_str(),
                    });
                }
                _ => return Err(MountError::NotKeyValue(field.clone())),
            }
            continue;
        };
        match key.as_str() {
            "type" => {
                let lower = value.to_ascii_lowercase();
                m.kind = MountType::ALL
                    .into_iter()
                    .find(|t| t.as_str() == lower)
                    .ok_or_else(|| {
                        let names: Vec<&'static str> =
                            MountType::ALL.iter().map(|t| t.as_str()).collect();
                        MountError::UnknownType(value.to_string(), suggest(&lower, &names).copied())
                    })?;
            }
            "from" => m.from = Some(value.to_string()),
            "source" | "src" => m.source = Some(value.to_string()),
            "target" | "dst" | "destination" => m.target = Some(value.to_string()),
            "readonly" | "ro" => {
                m.read_only = parse_bool(&key, value)?;
                read_only_given = true;
            }
            "readwrite" | "rw" => {
                m.read_only = !parse_bool(&key, value)?;
                read_only_given = true;
            }
            "required" => {
                if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(MountError::KeyForType {
                        key,
                        kind: m.kind.as_str(),
                    });
                }
                m.required = parse_bool(&key, value)?;
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(MountError::KeyForType {
                        key,
                        kind: m.kind.as_str(),
                    });
                }
                m.size = Some(parse_size(value)?);
            }
            "id" => m.id = Some(value.to_string()),
            "sharing" => {
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => return Err(MountError::UnknownSharing(value.to_string())),
                });
            }
            "mode" => m.mode = Some(parse_u32("mode", value, 8)?),
            "uid" => m.uid = Some(parse_u32("uid", value, 10)?),
            "gid" => m.gid = Some(parse_u32("gid", value, 10)?),
            "env" => m.env = Some(value.to_string()),
            _ => {
                return Err(MountError::UnknownKey {
                    suggestion: suggest(&key, ALL_KEYS).copied(),
                    key,
                    field: field.clone(),
                });
            }
        }
    }

    let file_info = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info {
        let kind = m.kind.as_str();
        if m.mode.is_some() {
            return Err(MountError::FileInfo { key: "mode", kind });
        }
        if m.uid.is_some() {
            return Err(MountError::FileInfo { key: "uid", kind });
        }
        if m.gid.is_some() {
            return Err(MountError::FileInfo { key: "gid", kind });
        }
    }
    if !read_only_given {
        m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(MountError::SharingNotCache(m.kind.as_str()));
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err(MountError::SecretFrom);
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() && m.env.is_none() {
            return Err(MountError::SecretUnnamed);
        }
        if m.source.is_some() && m.id.is_some() {
            return Err(MountError::SecretSourceAndId);
        }
    }
    if m.kind == MountType::Tmpfs {
        // A tmpfs is empty: it reads from nothing.
        m.from = None;
    }
    if let Some(target) = &m.target
        && matches!(
            m.kind,
            MountType::Bind | MountType::Cache | MountType::Tmpfs
        )
        && !target.is_empty()
        && target.chars().all(|c| c == '/')
    {
        return Err(MountError::RootTarget("/".to_string()));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(s: &str) -> Result<Mount, MountError> {
        parse_mount(&split_csv(s)?)
    }

    #[test]
    fn csv() {
        assert_eq!(split_csv("a,b=c").unwrap(), ["a", "b=c"]);
        assert_eq!(split_csv("\"a,b\",c").unwrap(), ["a,b", "c"]);
        assert_eq!(split_csv("\"a\"\"b\"").unwrap(), ["a\"b"]);
        assert_eq!(split_csv("").unwrap(), [""]);
        assert!(split_csv("a\"b").is_err());
        assert!(split_csv("\"ab").is_err());
        assert!(split_csv("\"a\"b").is_err());
    }

    #[test]
    fn defaults_and_keys() {
        let m = mount("target=/src").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.read_only);
        let m = mount("type=cache,target=/root/.cache,sharing=locked,mode=0755,uid=1").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert!(!m.read_only);
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert_eq!(m.uid, Some(1));
        let m = mount("type=tmpfs,target=/t,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
        let m = mount("type=secret,id=aws,required,env=AWS").unwrap();
        assert!(m.required);
        assert!(m.read_only);
        assert_eq!(m.env.as_deref(), Some("AWS"));
        let m = mount("type=bind,src=a,dst=/b,rw").unwrap();
        assert!(!m.read_only);
    }

    #[test]
    fn ssh_defaults_and_keys() {
        let m = mount("type=ssh").unwrap();
        assert_eq!(m.kind, MountType::Ssh);
        assert!(m.read_only);
        assert!(!m.required);
        assert_eq!((m.id.as_deref(), m.target.as_deref()), (None, None));
        assert_eq!((m.mode, m.uid, m.gid), (None, None, None));
        let m = mount("type=ssh,id=git,target=/agent,required=true,mode=0660,uid=1,gid=2").unwrap();
        assert_eq!(m.id.as_deref(), Some("git"));
        assert_eq!(m.target.as_deref(), Some("/agent"));
        assert!(m.required);
        assert_eq!((m.mode, m.uid, m.gid), (Some(0o660), Some(1), Some(2)));
        assert!(matches!(
            mount("type=ssh,size=1m"),
            Err(MountError::KeyForType { kind: "ssh", .. })
        ));
    }

    #[test]
    fn errors() {
        assert!(matches!(
            mount("type=nfs"),
            Err(MountError::UnknownType(..))
        ));
        assert!(matches!(
            mount("type=bind,required"),
            Err(MountError::KeyForType { .. })
        ));
        assert!(matches!(
            mount("target=/x,mode=0755"),
            Err(MountError::FileInfo { key: "mode", .. })
        ));
        assert!(matches!(
            mount("type=cache,target=/x,uid=abc"),
            Err(MountError::NotNumber { .. })
        ));
        assert!(matches!(
            mount("type=cache,mode=9"),
            Err(MountError::NotNumber { .. })
        ));
        assert!(matches!(
            mount("target=/x,sharing=locked"),
            Err(MountError::SharingNotCache("bind"))
        ));
        assert!(matches!(
            mount("type=secret"),
            Err(MountError::SecretUnnamed)
        ));
        assert!(matches!(
            mount("type=secret,id=a,from=b"),
            Err(MountError::SecretFrom)
        ));
        assert!(matches!(
            mount("type=secret,id=a,src=b"),
            Err(MountError::SecretSourceAndId)
        ));
        let e = mount("type=cache,tagret=/x").unwrap_err();
        assert_eq!(e.to_string(), "unexpected key 'tagret' in 'tagret=/x'");
        assert_eq!(e.hint().as_deref(), Some("did you mean target?"));
        assert!(matches!(mount("foo"), Err(MountError::NotKeyValue(_))));
        assert!(matches!(
            mount("ro=maybe"),
            Err(MountError::NotBoolean { .. })
        ));
        assert!(matches!(mount("target=/"), Err(MountError::RootTarget(_))));
    }
}
