//! The image config as a flat list of fields (`config.Env`, `history[2].created_by`, ...), each
//! with a canonical JSON value, after the normalisations of [`NORMALISATIONS`]. Two configs are
//! equal when every field is.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{ABSENT, Difference};

/// Rendered in place of a timestamp that the build itself set.
pub const BUILT: &str = "<set by the build>";

/// The suffix BuildKit appends to the `created_by` of the steps it runs.
const BUILDKIT_MARK: &str = " # buildkit";

/// Top-level config fields that are not compared.
const IGNORED_TOP: &[&str] = &[
    "container",
    "container_config",
    "docker_version",
    "moby.buildkit.buildinfo.v1",
    "moby.buildkit.cache.v0",
];

/// Fields of `config` that are not compared.
const IGNORED_CONFIG: &[&str] = &["Image"];

/// One normalisation the comparison applies, and why it is legitimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The field or fields it applies to.
    pub field: &'static str,
    /// What it does.
    pub rule: &'static str,
    /// Why two conforming builders may differ there.
    pub why: &'static str,
}

/// Every normalisation applied before two configs are compared, in one place.
pub const NORMALISATIONS: &[Rule] = &[
    Rule {
        field: "history (which entries are inherited)",
        rule: "the entries of the longest base-image history the image's history starts with \
               are inherited and compared exactly; the entries after them were made by the \
               build, and the three rules below apply to them only",
        why: "a base image's history is data the builder must carry over untouched; what a \
              build adds is stamped by the builder",
    },
    Rule {
        field: "created, history[*].created (made by the build)",
        rule: "an RFC 3339 time becomes `<set by the build>`; a missing or malformed one stays",
        why: "a build stamps the time it ran, and two builds never run at the same instant; \
              BuildKit 0.8 even stamps metadata-only steps with the time of the last layer, or \
              the base's time when the build made none, which is an artefact of its cache \
              rather than a contract",
    },
    Rule {
        field: "history[*].comment (made by the build)",
        rule: "not compared",
        why: "builders sign their own steps (BuildKit writes `buildkit.dockerfile.v0`)",
    },
    Rule {
        field: "history[*].created_by (made by the build)",
        rule: "a trailing ` # buildkit` is removed; the instruction text before it is compared",
        why: "BuildKit marks the steps it ran itself with its name",
    },
    Rule {
        field: "rootfs.diff_ids",
        rule: "only the count is compared",
        why: "a layer's digest covers file mtimes, which every build sets anew; the layers' \
              contents are compared through the flattened filesystem, and each diff_id is \
              checked against its layer when the image is read",
    },
    Rule {
        field: "container, container_config, docker_version, config.Image",
        rule: "not compared",
        why: "the classic builder's record of the container and parent image it used; not \
              part of the OCI image config, unused by `docker run`",
    },
    Rule {
        field: "moby.buildkit.buildinfo.v1, moby.buildkit.cache.v0",
        rule: "not compared",
        why: "BuildKit's provenance and inline-cache metadata, which name the builder's own \
              sources and cache; not part of the OCI image config",
    },
    Rule {
        field: "every field and object member",
        rule: "absent, `null`, `\"\"`, `false` and `0` are the same value; `[]` and `{}` stay \
               distinct from them",
        why: "docker decodes the config into Go structs, where the first five are all the zero \
              value and `docker inspect` shows them alike; an empty list or map decodes to a \
              non-nil value and is shown differently",
    },
    Rule {
        field: "filesystem: symlink permission bits, the root directory",
        rule: "symlinks are listed as 0777; the root entry is not listed",
        why: "Linux ignores a symlink's mode and docker's applier does not set it; the root's \
              metadata is set by the container runtime, not by the image",
    },
];

/// What the normalisation needs to know about the builds being compared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Normalisation {
    /// The `history` of every base image the builds may start from: the longest of them that
    /// an image's history starts with is inherited, and compared exactly.
    pub base_histories: Vec<Vec<Value>>,
}

impl Normalisation {
    /// How many entries of `history` are inherited from a base image.
    pub fn inherited(&self, history: &[Value]) -> usize {
        self.base_histories
            .iter()
            .filter(|base| history.starts_with(base))
            .map(Vec::len)
            .max()
            .unwrap_or(0)
    }
}

/// A config as comparable fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigView {
    /// Field name to canonical JSON (object keys sorted).
    pub fields: BTreeMap<String, String>,
}

/// `value` with the Go zero values (`null`, `""`, `false`, `0`) treated as absent, recursively
/// inside objects.
fn prune(value: &Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Bool(false) => None,
        Value::String(s) if s.is_empty() => None,
        Value::Number(n) if n.as_f64() == Some(0.0) => None,
        Value::Object(members) => Some(Value::Object(
            members
                .iter()
                .filter_map(|(k, v)| prune(v).map(|v| (k.clone(), v)))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// JSON text with object keys in order, whatever serde_json's map type.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(members) => {
            let sorted: BTreeMap<&String, &Value> = members.iter().collect();
            let parts: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v)))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// Unix seconds of an RFC 3339 time (`2024-01-01T00:00:00.5Z`, `...+02:00`).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let hours: i64 = rest.get(1..3)?.parse().ok()?;
            let minutes: i64 = rest.get(4..6)?.parse().ok()?;
            let minutes = hours * 60 + minutes;
            if rest.starts_with('-') {
                -minutes
            } else {
                minutes
            }
        }
        _ => return None,
    };
    // Days from 1970-01-01 in the proleptic Gregorian calendar.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60)
}

impl ConfigView {
    /// The comparable fields of `config` (an image config as JSON).
    pub fn new(config: &Value, normalisation: &Normalisation) -> ConfigView {
        let mut fields = BTreeMap::new();
        let is_time = |value: &Value| value.as_str().and_then(parse_rfc3339).is_some();
        let mut put = |key: String, value: &Value| {
            if let Some(value) = prune(value) {
                fields.insert(key, canonical(&value));
            }
        };
        let empty = serde_json::Map::new();
        let top = config.as_object().unwrap_or(&empty);
        for (key, value) in top {
            match key.as_str() {
                "config" | "history" | "rootfs" => {}
                "created" if is_time(value) => put(key.clone(), &Value::from(BUILT)),
                key if IGNORED_TOP.contains(&key) => {}
                _ => put(key.clone(), value),
            }
        }
        for (key, value) in config["config"].as_object().unwrap_or(&empty) {
            if !IGNORED_CONFIG.contains(&key.as_str()) {
                put(format!("config.{key}"), value);
            }
        }
        let history = config["history"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let inherited = normalisation.inherited(history);
        put("history.len".into(), &Value::from(history.len()));
        put("history.inherited".into(), &Value::from(inherited));
        for (i, step) in history.iter().enumerate() {
            let by_build = i >= inherited;
            for (key, value) in step.as_object().unwrap_or(&empty) {
                let field = format!("history[{i}].{key}");
                match key.as_str() {
                    "created" if by_build && is_time(value) => put(field, &Value::from(BUILT)),
                    "comment" if by_build => {}
                    "created_by" if by_build => {
                        let text = value.as_str().unwrap_or_default();
                        let text = text.strip_suffix(BUILDKIT_MARK).unwrap_or(text);
                        put(field, &Value::from(text));
                    }
                    _ => put(field, value),
                }
            }
        }
        let rootfs = &config["rootfs"];
        put("rootfs.type".into(), &rootfs["type"]);
        let diff_ids = rootfs["diff_ids"].as_array().map_or(0, Vec::len);
        put("rootfs.diff_ids.len".into(), &Value::from(diff_ids));
        ConfigView { fields }
    }

    /// The fields on which `self` (left) and `other` (right) differ, in field order
    /// (by name, with `history[2]` before `history[10]`).
    pub fn compare(&self, other: &ConfigView) -> Vec<Difference> {
        let keys: BTreeSet<&String> = self.fields.keys().chain(other.fields.keys()).collect();
        let mut keys: Vec<&String> = keys.into_iter().collect();
        keys.sort_by_key(|k| field_order(k));
        keys.into_iter()
            .filter_map(|key| {
                let left = self.fields.get(key);
                let right = other.fields.get(key);
                (left != right).then(|| Difference {
                    key: key.clone(),
                    left: left.map_or(ABSENT.to_string(), String::clone),
                    right: right.map_or(ABSENT.to_string(), String::clone),
                })
            })
            .collect()
    }

    /// One `field = value` line per field, in field order.
    pub fn listing(&self) -> String {
        let mut fields: Vec<(&String, &String)> = self.fields.iter().collect();
        fields.sort_by_key(|(k, _)| field_order(k));
        fields
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect()
    }
}

/// The order fields are shown in: by name, with `history[2]` before `history[10]`.
fn field_order(key: &str) -> String {
    match key
        .strip_prefix("history[")
        .and_then(|rest| rest.split_once(']'))
    {
        Some((index, rest)) if index.bytes().all(|b| b.is_ascii_digit()) => {
            format!("history[{index:0>8}]{rest}")
        }
        _ => key.to_string(),
    }
}
