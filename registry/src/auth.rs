//! Token authentication, as distribution's token server and registry share it
//! (`docker/auth-token.md`, `auth-jwt.md`, `auth-scope.md`), with a key that the registry and
//! whoever hands out credentials (the runner's control plane, `berth registry credential`)
//! share.
//!
//! Two kinds of signed token (JWT, HS256 over the shared [`TokenKey`]):
//! - a **credential** names a subject (a role ARN, a CI job) and carries the [`Policy`] that
//!   says what the subject may do, with an expiry. Clients present it as the password of Basic
//!   auth at the registry's token endpoint, as `docker login` and every registry client do; it
//!   is the `Token` of an ECS task role's credentials.
//! - an **access token** is what the token endpoint answers with: the claim set of
//!   `auth-jwt.md` (`iss`, `sub`, `aud` = the service, `exp`, `nbf`, `iat`, `jti`, and
//!   `access`, a list of `{type, name, actions}`), granting of each requested scope only the
//!   actions the credential's policy allows. The registry checks it on every `/v2/` request.
//!
//! The two have different audiences, so neither passes for the other. A shared secret, rather
//! than distribution's certificate chain, because the registry serves its own token endpoint
//! and so needs the signing key anyway; the key never leaves the machines that run them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The audience of credentials.
pub const CREDENTIAL_AUDIENCE: &str = "berth-credential";
/// The issuer named in every token.
pub const ISSUER: &str = "berth";
/// The service name a registry announces in its challenges unless configured otherwise.
pub const DEFAULT_SERVICE: &str = "berth-registry";
/// The fewest key bytes accepted (HS256 wants at least the hash's size).
pub const MIN_KEY_BYTES: usize = 32;
/// Leeway for clocks that disagree a little.
const LEEWAY_SECS: u64 = 30;

/// Why a key, credential, token or scope was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The key file cannot be read or written.
    #[error("token key {}: {source}", path.display())]
    KeyIo {
        /// The key file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The key file holds too little.
    #[error(
        "token key {}: {len} bytes, at least {MIN_KEY_BYTES} are needed (64 hex digits)",
        path.display()
    )]
    KeyTooShort {
        /// The key file.
        path: PathBuf,
        /// How many key bytes it holds.
        len: usize,
    },
    /// A token that is malformed, forged, expired or meant for another audience.
    #[error("invalid {what}: {reason}")]
    InvalidToken {
        /// `credential` or `access token`.
        what: &'static str,
        /// Why, as jsonwebtoken tells it.
        reason: String,
    },
    /// A scope that is not `type:name:actions`.
    #[error("invalid scope {scope:?}: expected type:name:action[,action...]")]
    InvalidScope {
        /// The scope as given.
        scope: String,
    },
    /// A policy statement that cannot be understood.
    #[error("policy statement {index}: {reason}")]
    InvalidPolicy {
        /// The statement's position, from 0.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// The secret that signs and checks tokens.
#[derive(Clone)]
pub struct TokenKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

impl TokenKey {
    /// A key from raw bytes; at least [`MIN_KEY_BYTES`] of them.
    pub fn from_bytes(secret: Vec<u8>) -> Option<TokenKey> {
        (secret.len() >= MIN_KEY_BYTES).then_some(TokenKey { secret })
    }

    /// Reads a key file: hex digits (what [`TokenKey::load_or_create`] writes), or any other
    /// content taken as raw bytes. Surrounding whitespace is ignored.
    pub fn load(path: &Path) -> Result<TokenKey, AuthError> {
        let raw = std::fs::read(path).map_err(|source| AuthError::KeyIo {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8_lossy(&raw);
        let trimmed = text.trim();
        let secret = hex::decode(trimmed).unwrap_or_else(|_| trimmed.as_bytes().to_vec());
        let len = secret.len();
        TokenKey::from_bytes(secret).ok_or_else(|| AuthError::KeyTooShort {
            path: path.to_owned(),
            len,
        })
    }

    /// Reads the key file, or makes one with 32 random bytes (mode 0600) when there is none.
    pub fn load_or_create(path: &Path) -> Result<TokenKey, AuthError> {
        let io = |source| AuthError::KeyIo {
            path: path.to_owned(),
            source,
        };
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let secret: [u8; 32] = rand::random();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut file) => {
                    file.write_all(format!("{}\n", hex::encode(secret)).as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(io)?;
                }
                // Another process made it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        TokenKey::load(path)
    }

    fn encoding(&self) -> EncodingKey {
        EncodingKey::from_secret(&self.secret)
    }

    fn decoding(&self) -> DecodingKey {
        DecodingKey::from_secret(&self.secret)
    }

    /// A credential for `subject`, allowing what `policy` allows, valid for `lifetime`.
    pub fn issue_credential(
        &self,
        subject: &str,
        policy: &Policy,
        lifetime: Duration,
    ) -> IssuedCredential {
        let claims = CredentialClaims {
            registered: Registered::new(subject, CREDENTIAL_AUDIENCE, lifetime),
            policy: policy.clone(),
        };
        IssuedCredential {
            token: self.sign(&claims),
            issued_at: claims.registered.iat,
            expires_at: claims.registered.exp,
        }
    }

    /// Checks a credential's signature, audience and expiry; gives its claims.
    pub fn verify_credential(&self, token: &str) -> Result<CredentialClaims, AuthError> {
        self.verify(token, CREDENTIAL_AUDIENCE, "credential")
    }

    /// An access token for `service`, granting `access` to `subject` for `lifetime`.
    pub fn issue_access_token(
        &self,
        subject: &str,
        service: &str,
        access: Vec<Access>,
        lifetime: Duration,
    ) -> IssuedCredential {
        let claims = AccessClaims {
            registered: Registered::new(subject, service, lifetime),
            access,
        };
        IssuedCredential {
            token: self.sign(&claims),
            issued_at: claims.registered.iat,
            expires_at: claims.registered.exp,
        }
    }

    /// Checks an access token's signature, audience (`service`) and expiry.
    pub fn verify_access_token(
        &self,
        token: &str,
        service: &str,
    ) -> Result<AccessClaims, AuthError> {
        self.verify(token, service, "access token")
    }

    fn sign(&self, claims: &impl Serialize) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding())
            .expect("HS256 signing of serializable claims cannot fail")
    }

    fn verify<T: for<'de> Deserialize<'de>>(
        &self,
        token: &str,
        audience: &str,
        what: &'static str,
    ) -> Result<T, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[ISSUER]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        jsonwebtoken::decode::<T>(token, &self.decoding(), &validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::InvalidToken {
                what,
                reason: e.to_string(),
            })
    }
}

/// A signed token and when it stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCredential {
    /// The JWT.
    pub token: String,
    /// Its `iat`, in seconds since the Unix epoch.
    pub issued_at: u64,
    /// Its `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
}

/// The registered claims (RFC 7519) of both kinds of token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// [`ISSUER`].
    pub iss: String,
    /// Who the token is for: a role ARN, a job name.
    pub sub: String,
    /// [`CREDENTIAL_AUDIENCE`], or the registry's service for an access token.
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not before.
    pub nbf: u64,
    /// Issued at.
    pub iat: u64,
    /// A random id.
    pub jti: String,
}

impl Registered {
    fn new(subject: &str, audience: &str, lifetime: Duration) -> Registered {
        let now = unix_now();
        Registered {
            iss: ISSUER.to_owned(),
            sub: subject.to_owned(),
            aud: audience.to_owned(),
            exp: now + lifetime.as_secs(),
            nbf: now,
            iat: now,
            jti: random_id(),
        }
    }
}

/// What a credential carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialClaims {
    #[serde(flatten)]
    pub registered: Registered,
    /// What the subject may do.
    pub policy: Policy,
}

/// What an access token carries (`auth-jwt.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    #[serde(flatten)]
    pub registered: Registered,
    /// The granted resources and actions.
    #[serde(default)]
    pub access: Vec<Access>,
}

impl AccessClaims {
    /// Whether the token grants `action` on the resource `kind`/`name`. A grant of `*` covers
    /// every action.
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.access.iter().any(|a| {
            a.kind == kind && a.name == name && a.actions.iter().any(|x| x == action || x == "*")
        })
    }
}

/// One resource and the actions on it: an entry of a token's `access`, or a requested scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository name, or `catalog`.
    pub name: String,
    /// `pull`, `push`, `delete`, or `*`.
    pub actions: Vec<String>,
}

impl Access {
    /// Parses a scope (`auth-scope.md`): `repository:samalba/my-app:pull,push`. The type may
    /// carry a class in parentheses (`repository(plugin)`), which is dropped; the name may
    /// hold colons (a registry host with a port), so the actions are taken from the right.
    pub fn parse_scope(scope: &str) -> Result<Access, AuthError> {
        let invalid = || AuthError::InvalidScope {
            scope: scope.to_owned(),
        };
        let (kind, rest) = scope.split_once(':').ok_or_else(invalid)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(invalid)?;
        let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
        if kind.is_empty() || name.is_empty() {
            return Err(invalid());
        }
        let actions: Vec<String> = actions
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Access {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions,
        })
    }

    /// The scope string: `type:name:a,b`.
    pub fn scope(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// What a subject may do, in the shape of an IAM policy document:
///
/// ```json
/// {"Version": "2012-10-17",
///  "Statement": [{"Effect": "Allow",
///                 "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
///                 "Resource": "arn:aws:ecr:us-east-1:123456789012:repository/app/*"}]}
/// ```
///
/// `Action` names registry actions (`pull`, `push`, `delete`, `catalog`, `*`) or the ECR
/// actions that amount to them (`ecr:BatchGetImage` is `pull`, `ecr:PutImage` is `push`,
/// `ecr:*` is everything, ...); other services' actions are ignored. `Resource` names
/// repositories as patterns where `*` matches any run of characters (`app/*`), or ECR
/// repository ARNs (whose `repository/` suffix is the pattern), or `*`. A `Deny` statement
/// wins over every `Allow`; what no statement allows is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The statements, in the normalized form [`Policy::from_document`] makes.
    #[serde(rename = "Statement", default)]
    pub statements: Vec<Statement>,
}

/// One normalized statement of a [`Policy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// `Allow` or `Deny`.
    #[serde(rename = "Effect")]
    pub effect: Effect,
    /// Registry actions: `pull`, `push`, `delete`, `catalog` or `*`.
    #[serde(rename = "Action")]
    pub actions: Vec<String>,
    /// Repository name patterns.
    #[serde(rename = "Resource")]
    pub resources: Vec<String>,
}

/// A statement's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    Allow,
    Deny,
}

/// The registry actions.
pub const ACTIONS: [&str; 4] = ["pull", "push", "delete", "catalog"];

impl Policy {
    /// A policy that allows `actions` on the repositories matching `patterns`.
    pub fn allow(actions: &[&str], patterns: &[&str]) -> Policy {
        Policy {
            statements: vec![Statement {
                effect: Effect::Allow,
                actions: actions.iter().map(|a| (*a).to_owned()).collect(),
                resources: patterns.iter().map(|p| (*p).to_owned()).collect(),
            }],
        }
    }

    /// Normalizes an IAM-style policy document (see [`Policy`]): `Action` and `Resource` may
    /// be strings or lists, ECR actions and ARNs become registry actions and repository
    /// patterns, and statements about nothing the registry knows are dropped.
    pub fn from_document(document: &serde_json::Value) -> Result<Policy, AuthError> {
        let statements = match document.get("Statement") {
            Some(serde_json::Value::Array(list)) => list.clone(),
            Some(one @ serde_json::Value::Object(_)) => vec![one.clone()],
            None => Vec::new(),
            Some(_) => {
                return Err(AuthError::InvalidPolicy {
                    index: 0,
                    reason: "Statement must be an object or a list of objects".into(),
                });
            }
        };
        let mut out = Vec::new();
        for (index, statement) in statements.iter().enumerate() {
            let invalid = |reason: String| AuthError::InvalidPolicy { index, reason };
            let effect = match statement.get("Effect").and_then(|e| e.as_str()) {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                other => {
                    return Err(invalid(format!(
                        "Effect must be \"Allow\" or \"Deny\", not {other:?}"
                    )));
                }
            };
            let strings = |field: &str| -> Result<Vec<String>, AuthError> {
                match statement.get(field) {
                    Some(serde_json::Value::String(s)) => Ok(vec![s.clone()]),
                    Some(serde_json::Value::Array(list)) => list
                        .iter()
                        .map(|v| {
                            v.as_str().map(str::to_owned).ok_or_else(|| {
                                invalid(format!("{field} must hold strings, not {v}"))
                            })
                        })
                        .collect(),
                    None => Err(invalid(format!("{field} is missing"))),
                    Some(v) => Err(invalid(format!(
                        "{field} must be a string or a list, not {v}"
                    ))),
                }
            };
            let mut actions: Vec<String> = Vec::new();
            for action in strings("Action")? {
                for mapped in registry_actions(&action) {
                    if !actions.iter().any(|a| a == mapped) {
                        actions.push((*mapped).to_owned());
                    }
                }
            }
            let resources: Vec<String> = strings("Resource")?
                .iter()
                .filter_map(|r| repository_pattern(r))
                .collect();
            if !actions.is_empty() && !resources.is_empty() {
                out.push(Statement {
                    effect,
                    actions,
                    resources,
                });
            }
        }
        Ok(Policy { statements: out })
    }

    /// Whether the policy allows `action` on repository `name` (for `catalog`, the name is
    /// `catalog`).
    pub fn allows(&self, name: &str, action: &str) -> bool {
        let matches = |s: &&Statement| {
            s.actions.iter().any(|a| a == action || a == "*")
                && s.resources.iter().any(|p| glob_match(p, name))
        };
        let relevant: Vec<&Statement> = self.statements.iter().filter(matches).collect();
        relevant.iter().any(|s| s.effect == Effect::Allow)
            && !relevant.iter().any(|s| s.effect == Effect::Deny)
    }

    /// Of `requested`, what the policy grants: the same resource with the allowed actions
    /// only (possibly none). `*` asks for every action. The catalog
    /// (`registry:catalog:*`) is granted as `*`, as distribution's token servers grant it,
    /// to a policy that allows `catalog` on it.
    pub fn grant(&self, requested: &Access) -> Access {
        let asks_all = requested.actions.iter().any(|a| a == "*");
        let actions: Vec<String> = match (requested.kind.as_str(), requested.name.as_str()) {
            ("registry", "catalog") => {
                let asks = asks_all || requested.actions.iter().any(|a| a == "catalog");
                if asks && self.allows("catalog", "catalog") {
                    vec!["*".to_owned()]
                } else {
                    Vec::new()
                }
            }
            ("repository", name) => {
                let wanted: Vec<&str> = if asks_all {
                    ACTIONS
                        .iter()
                        .copied()
                        .filter(|a| *a != "catalog")
                        .collect()
                } else {
                    requested.actions.iter().map(String::as_str).collect()
                };
                wanted
                    .into_iter()
                    .filter(|action| *action != "catalog" && self.allows(name, action))
                    .map(str::to_owned)
                    .collect()
            }
            _ => Vec::new(),
        };
        Access {
            kind: requested.kind.clone(),
            name: requested.name.clone(),
            actions,
        }
    }
}

/// The registry actions an IAM action stands for.
fn registry_actions(action: &str) -> &'static [&'static str] {
    match action {
        "*" | "ecr:*" => &["*"],
        "pull" => &["pull"],
        "push" => &["push"],
        "delete" => &["delete"],
        "catalog" => &["catalog"],
        "ecr:BatchGetImage"
        | "ecr:GetDownloadUrlForLayer"
        | "ecr:BatchCheckLayerAvailability"
        | "ecr:DescribeImages"
        | "ecr:ListImages" => &["pull"],
        "ecr:PutImage"
        | "ecr:InitiateLayerUpload"
        | "ecr:UploadLayerPart"
        | "ecr:CompleteLayerUpload" => &["push"],
        "ecr:BatchDeleteImage" => &["delete"],
        "ecr:DescribeRepositories" => &["catalog"],
        _ => &[],
    }
}

/// The repository pattern a resource names: `*`, an ECR repository ARN
/// (`arn:aws:ecr:REGION:ACCOUNT:repository/NAME`), or a plain pattern. Other ARNs name
/// nothing here.
fn repository_pattern(resource: &str) -> Option<String> {
    if let Some(rest) = resource.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        return match parts.as_slice() {
            [_, "ecr" | "*", _, _, "*"] => Some("*".to_owned()),
            [_, "ecr", _, _, path] => path.strip_prefix("repository/").map(str::to_owned),
            _ => None,
        };
    }
    Some(resource.to_owned())
}

/// `*` matches any run of characters, `/` included, as IAM resource patterns do.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::from_bytes(vec![7; 32]).unwrap()
    }

    #[test]
    fn scopes_parse_from_the_right_and_print_back() {
        let a = Access::parse_scope("repository:samalba/my-app:pull,push").unwrap();
        assert_eq!(a.kind, "repository");
        assert_eq!(a.name, "samalba/my-app");
        assert_eq!(a.actions, ["pull", "push"]);
        assert_eq!(a.scope(), "repository:samalba/my-app:pull,push");
        let port = Access::parse_scope("repository(plugin):localhost:5000/x:pull").unwrap();
        assert_eq!(
            (port.kind.as_str(), port.name.as_str()),
            ("repository", "localhost:5000/x")
        );
        assert_eq!(
            Access::parse_scope("registry:catalog:*").unwrap().actions,
            ["*"]
        );
        for bad in [
            "",
            "repository",
            "repository:name",
            ":x:pull",
            "repository::pull",
        ] {
            assert!(Access::parse_scope(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn globs_match_like_iam_resources() {
        assert!(glob_match("app/*", "app/web"));
        assert!(glob_match("app/*", "app/web/v2"));
        assert!(!glob_match("app/*", "application"));
        assert!(glob_match("*", "anything/at/all"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c*e", "abcd"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn iam_documents_become_registry_policies() {
        let doc = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow",
                 "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "s3:GetObject"],
                 "Resource": "arn:aws:ecr:us-east-1:000000000000:repository/app/*"},
                {"Effect": "Allow", "Action": "ecr:*", "Resource": "scratch/*"},
                {"Effect": "Deny", "Action": "push", "Resource": "scratch/frozen"},
                {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::bucket"}
            ]
        });
        let policy = Policy::from_document(&doc).unwrap();
        assert_eq!(
            policy.statements.len(),
            3,
            "the s3 statement names nothing here"
        );
        assert!(policy.allows("app/web", "pull"));
        assert!(!policy.allows("app/web", "push"));
        assert!(!policy.allows("other", "pull"));
        assert!(policy.allows("scratch/x", "push"));
        assert!(policy.allows("scratch/frozen", "pull"));
        assert!(!policy.allows("scratch/frozen", "push"), "Deny wins");

        let bad =
            serde_json::json!({"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]});
        let err = Policy::from_document(&bad).unwrap_err().to_string();
        assert!(
            err.contains("statement 0") && err.contains("Effect"),
            "{err}"
        );
        let missing = serde_json::json!({"Statement": {"Effect": "Allow", "Action": "pull"}});
        assert!(
            Policy::from_document(&missing)
                .unwrap_err()
                .to_string()
                .contains("Resource is missing")
        );
    }

    #[test]
    fn grants_are_the_requested_actions_the_policy_allows() {
        let policy = Policy::allow(&["pull"], &["app/*"]);
        let asked = Access::parse_scope("repository:app/web:pull,push").unwrap();
        assert_eq!(policy.grant(&asked).actions, ["pull"]);
        let elsewhere = Access::parse_scope("repository:other:pull").unwrap();
        assert!(policy.grant(&elsewhere).actions.is_empty());
        let catalog = Access::parse_scope("registry:catalog:*").unwrap();
        assert!(policy.grant(&catalog).actions.is_empty());
        let admin = Policy::allow(&["*"], &["*"]);
        assert_eq!(admin.grant(&catalog).actions, ["*"]);
        let lister = Policy::allow(&["catalog"], &["*"]);
        assert_eq!(lister.grant(&catalog).actions, ["*"]);
        assert!(
            lister.grant(&asked).actions.is_empty(),
            "catalog is no repository action"
        );
        let everything = Access::parse_scope("repository:x:*").unwrap();
        assert_eq!(admin.grant(&everything).actions, ["pull", "push", "delete"]);
    }

    #[test]
    fn tokens_verify_only_with_their_key_audience_and_lifetime() {
        let key = key();
        let policy = Policy::allow(&["pull"], &["app/*"]);
        let credential = key.issue_credential("role/app", &policy, Duration::from_secs(600));
        let claims = key.verify_credential(&credential.token).unwrap();
        assert_eq!(claims.registered.sub, "role/app");
        assert_eq!(claims.policy, policy);

        let other = TokenKey::from_bytes(vec![8; 32]).unwrap();
        assert!(
            other.verify_credential(&credential.token).is_err(),
            "forged"
        );
        assert!(
            key.verify_access_token(&credential.token, DEFAULT_SERVICE)
                .is_err(),
            "a credential is no access token"
        );

        let access = vec![Access::parse_scope("repository:app/web:pull").unwrap()];
        let token = key.issue_access_token("role/app", "svc", access, Duration::from_secs(60));
        let claims = key.verify_access_token(&token.token, "svc").unwrap();
        assert!(claims.allows("repository", "app/web", "pull"));
        assert!(!claims.allows("repository", "app/web", "push"));
        assert!(key.verify_access_token(&token.token, "another").is_err());
        assert!(key.verify_credential(&token.token).is_err());

        let mut old = Registered::new("old", CREDENTIAL_AUDIENCE, Duration::ZERO);
        old.exp -= 3600;
        old.nbf -= 7200;
        old.iat -= 7200;
        let expired = key.sign(&CredentialClaims {
            registered: old,
            policy: Policy::default(),
        });
        let err = key.verify_credential(&expired).unwrap_err().to_string();
        assert!(
            err.contains("credential") && err.to_lowercase().contains("expired"),
            "{err}"
        );
        assert!(key.verify_credential("not.a.token").is_err());
    }

    #[test]
    fn key_files_are_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/token.key");
        let made = TokenKey::load_or_create(&path).unwrap();
        let again = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(made.secret, again.secret);
        assert_eq!(made.secret.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let short = dir.path().join("short.key");
        std::fs::write(&short, "abcd").unwrap();
        let err = TokenKey::load(&short).unwrap_err().to_string();
        assert!(
            err.contains("short.key") && err.contains("at least 32"),
            "{err}"
        );
        let raw = dir.path().join("raw.key");
        std::fs::write(&raw, "a passphrase that is long enough to sign with\n").unwrap();
        assert!(TokenKey::load(&raw).is_ok());
    }
}
