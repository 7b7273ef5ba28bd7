//! Registry credentials from Docker's client configuration (`config.json`).
//!
//! The file is `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. For a registry host
//! the lookup order is Docker's:
//! 1. `credHelpers[host]`: run `docker-credential-<helper> get` with the server URL on stdin;
//! 2. `credsStore`: the same with the default helper;
//! 3. `auths[host]`: `auth` (base64 of `user:password`), or `username`/`password`, or
//!    `identitytoken` (an OAuth2 refresh token), or `registrytoken` (a bearer token to send
//!    as is).
//!
//! A helper that answers "credentials not found" is not an error: the lookup goes on to
//! `auths`. Keys of `auths` may be written as a host (`reg.example:5000`) or as a URL
//! (`https://reg.example/v1/`); both match the host. Docker Hub (`docker.io`) is stored under
//! `https://index.docker.io/v1/`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::client::error::{ClientError, Result};
use crate::reference::{DOCKER_HUB, DOCKER_HUB_API};

/// The key Docker uses for Docker Hub in `auths` and with credential helpers.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password (or personal access token), sent with Basic auth.
    Basic { username: String, password: String },
    /// An OAuth2 refresh token, exchanged at the token server for access tokens.
    IdentityToken { username: String, token: String },
    /// A bearer token sent to the registry as is.
    RegistryToken(String),
}

impl fmt::Debug for Credential {
    // Never print secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username:?}, ***)"),
            Credential::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username:?}, ***)")
            }
            Credential::RegistryToken(_) => f.write_str("RegistryToken(***)"),
        }
    }
}

/// One entry of `auths`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthEntry {
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub identitytoken: Option<String>,
    #[serde(default)]
    pub registrytoken: Option<String>,
}

/// The parts of Docker's `config.json` that hold credentials.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DockerConfig {
    #[serde(default)]
    pub auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    pub cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    pub creds_store: Option<String>,
    /// The file this was read from, for messages.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// Where Docker's configuration lives: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`. `None` when neither variable is set.
pub fn default_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").filter(|d| !d.is_empty())?;
    Some(PathBuf::from(home).join(".docker").join("config.json"))
}

/// The host part of an `auths` key: scheme and path removed, lowercased.
pub fn normalize_key(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest);
    host.to_ascii_lowercase()
}

/// The host names under which credentials for `registry` may be stored.
fn lookup_hosts(registry: &str) -> Vec<String> {
    let registry = registry.to_ascii_lowercase();
    if registry == DOCKER_HUB || registry == DOCKER_HUB_API || registry == "index.docker.io" {
        vec![
            "index.docker.io".to_owned(),
            DOCKER_HUB.to_owned(),
            DOCKER_HUB_API.to_owned(),
        ]
    } else {
        vec![registry]
    }
}

/// What a credential helper is given on stdin for `registry`.
pub fn helper_server_url(registry: &str) -> String {
    if lookup_hosts(registry).len() > 1 {
        DOCKER_HUB_AUTH_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

fn lenient_base64() -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}

impl DockerConfig {
    /// Parses `config.json` text; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<DockerConfig> {
        let mut config: DockerConfig =
            serde_json::from_slice(bytes).map_err(|e| ClientError::Credentials {
                registry: "*".into(),
                reason: format!("{}: invalid JSON: {e}", path.display()),
            })?;
        config.path = Some(path.to_owned());
        Ok(config)
    }

    /// Reads `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<DockerConfig> {
        match std::fs::read(path) {
            Ok(bytes) => DockerConfig::parse(&bytes, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerConfig::default()),
            Err(source) => Err(ClientError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Reads the default configuration ([`default_config_path`]).
    pub fn load_default() -> Result<DockerConfig> {
        match default_config_path() {
            Some(path) => DockerConfig::load(&path),
            None => Ok(DockerConfig::default()),
        }
    }

    /// The helper configured for `registry`: `credHelpers`, else `credsStore`.
    pub fn helper_for(&self, registry: &str) -> Option<&str> {
        let hosts = lookup_hosts(registry);
        self.cred_helpers
            .iter()
            .find(|(k, _)| hosts.contains(&normalize_key(k)))
            .map(|(_, v)| v.as_str())
            .or(self.creds_store.as_deref())
            .filter(|h| !h.is_empty())
    }

    /// The credential stored in `auths` for `registry`, if any.
    pub fn auths_entry(&self, registry: &str) -> Result<Option<Credential>> {
        let hosts = lookup_hosts(registry);
        // An exact key first, then any key that normalizes to the host.
        let entry = hosts.iter().find_map(|h| self.auths.get(h)).or_else(|| {
            self.auths
                .iter()
                .find(|(k, _)| hosts.contains(&normalize_key(k)))
                .map(|(_, v)| v)
        });
        let Some(entry) = entry else {
            return Ok(None);
        };
        let bad = |reason: String| ClientError::Credentials {
            registry: registry.to_owned(),
            reason: match &self.path {
                Some(p) => format!("{}: {reason}", p.display()),
                None => reason,
            },
        };
        let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = lenient_base64()
                .decode(auth.trim())
                .map_err(|e| bad(format!("auths entry: `auth` is not base64: {e}")))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| bad("auths entry: `auth` is not UTF-8".into()))?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| bad("auths entry: `auth` is not user:password".into()))?;
            username = Some(u.to_owned());
            password = Some(p.to_owned());
        }
        if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken {
                username: username.unwrap_or_default(),
                token: token.to_owned(),
            }));
        }
        if let Some(token) = entry.registrytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::RegistryToken(token.to_owned())));
        }
        match (username, password) {
            (Some(username), Some(password)) if !username.is_empty() => {
                Ok(Some(Credential::Basic { username, password }))
            }
            _ => Ok(None),
        }
    }

    /// The credential for `registry`, following Docker's order (see the module docs).
    pub async fn credential_for(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some(helper) = self.helper_for(registry) {
            if let Some(c) = run_helper(helper, &helper_server_url(registry)).await? {
                return Ok(Some(c));
            }
        }
        self.auths_entry(registry)
    }
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-<helper> get` for `server_url`. `Ok(None)` when the helper has no
/// credentials for it.
pub async fn run_helper(helper: &str, server_url: &str) -> Result<Option<Credential>> {
    let program = format!("docker-credential-{helper}");
    let fail = |reason: String| ClientError::Credentials {
        registry: server_url.to_owned(),
        reason: format!("{program}: {reason}"),
    };
    tracing::debug!(%program, %server_url, "asking credential helper");
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot run: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input closes the pipe; its exit status
        // then says what went wrong.
        match stdin.write_all(server_url.as_bytes()).await {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(fail(format!("writing its input: {e}")));
            }
            _ => {}
        }
    }
    let output = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| fail(format!("no answer within {}s", HELPER_TIMEOUT.as_secs())))?
        .map_err(|e| fail(format!("{e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = format!("{} {}", stdout.trim(), stderr.trim());
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!("{}: {}", output.status, said.trim())));
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|e| fail(format!("unreadable answer: {e}")))?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if answer.username == "<token>" {
        Credential::IdentityToken {
            username: String::new(),
            token: answer.secret,
        }
    } else {
        Credential::Basic {
            username: answer.username,
            password: answer.secret,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn reads_auth_entries() {
        let json = format!(
            r#"{{"auths":{{
                "reg.example:5000":{{"auth":"{}"}},
                "https://index.docker.io/v1/":{{"auth":"{}"}},
                "http://other.example/v2/":{{"username":"u","password":"p"}},
                "tok.example":{{"auth":"{}","identitytoken":"refresh-me"}},
                "bearer.example":{{"registrytoken":"abc"}},
                "empty.example":{{}}
            }}}}"#,
            b64("alice:s3cr:et"),
            b64("bob:pw"),
            b64("carol:")
        );
        let c = DockerConfig::parse(json.as_bytes(), Path::new("config.json")).unwrap();
        assert_eq!(
            c.auths_entry("reg.example:5000").unwrap(),
            Some(Credential::Basic {
                username: "alice".into(),
                password: "s3cr:et".into()
            })
        );
        for hub in ["docker.io", "registry-1.docker.io", "index.docker.io"] {
            assert_eq!(
                c.auths_entry(hub).unwrap(),
                Some(Credential::Basic {
                    username: "bob".into(),
                    password: "pw".into()
                }),
                "{hub}"
            );
        }
        assert_eq!(
            c.auths_entry("other.example").unwrap(),
            Some(Credential::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(
            c.auths_entry("tok.example").unwrap(),
            Some(Credential::IdentityToken {
                username: "carol".into(),
                token: "refresh-me".into()
            })
        );
        assert_eq!(
            c.auths_entry("bearer.example").unwrap(),
            Some(Credential::RegistryToken("abc".into()))
        );
        assert_eq!(c.auths_entry("empty.example").unwrap(), None);
        assert_eq!(c.auths_entry("nowhere.example").unwrap(), None);
        assert!(c.helper_for("reg.example:5000").is_none());
    }

    #[test]
    fn unpadded_base64_is_accepted_and_garbage_is_an_error() {
        let unpadded = b64("dave:x").trim_end_matches('=').to_owned();
        let json = format!(
            r#"{{"auths":{{"a.example":{{"auth":"{unpadded}"}},"b.example":{{"auth":"!!"}},"c.example":{{"auth":"{}"}}}}}}"#,
            b64("nocolon")
        );
        let c = DockerConfig::parse(json.as_bytes(), Path::new("cfg.json")).unwrap();
        assert!(matches!(
            c.auths_entry("a.example").unwrap(),
            Some(Credential::Basic { .. })
        ));
        let err = c.auths_entry("b.example").unwrap_err().to_string();
        assert!(err.contains("cfg.json") && err.contains("base64"), "{err}");
        assert!(c.auths_entry("c.example").is_err());
        assert!(DockerConfig::parse(b"{", Path::new("x")).is_err());
    }

    #[test]
    fn helpers_are_chosen_per_host_then_store() {
        let c = DockerConfig::parse(
            br#"{"credHelpers":{"reg.example":"pass","https://index.docker.io/v1/":"hub"},"credsStore":"desktop"}"#,
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(c.helper_for("reg.example"), Some("pass"));
        assert_eq!(c.helper_for("docker.io"), Some("hub"));
        assert_eq!(c.helper_for("else.example"), Some("desktop"));
        assert_eq!(helper_server_url("docker.io"), DOCKER_HUB_AUTH_KEY);
        assert_eq!(helper_server_url("reg.example:5000"), "reg.example:5000");
    }

    #[test]
    fn debug_hides_secrets() {
        let c = Credential::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn normalizes_keys() {
        assert_eq!(
            normalize_key("https://Reg.Example:5000/v1/"),
            "reg.example:5000"
        );
        assert_eq!(normalize_key("reg.example"), "reg.example");
        assert_eq!(normalize_key("http://localhost:5000"), "localhost:5000");
    }
}
