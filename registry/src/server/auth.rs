//! Token authentication of `/v2/` requests, and the token endpoint that hands out the tokens
//! (`docker/auth-token.md`), when the configuration has an `auth` section.
//!
//! - Every `/v2/` request needs `Authorization: Bearer <access token>`. Without one the answer
//!   is `401 UNAUTHORIZED` with `WWW-Authenticate: Bearer realm="<...>/token",
//!   service="<service>",scope="repository:<name>:<actions>"`, the scope the request needs; a
//!   token that does not verify adds `error="invalid_token"`, one that verifies but does not
//!   grant enough adds `error="insufficient_scope"`, as distribution answers.
//! - What a request needs: `pull` to read a repository (blobs, manifests, tags, referrers),
//!   `pull` and `push` to upload or put a manifest, `delete` to delete, `registry:catalog:*`
//!   for `_catalog`, and any valid token for `/v2/` itself. A cross-repository mount from a
//!   repository the token cannot pull from is not refused: it becomes a plain upload, so that
//!   nothing leaks from the other repository.
//! - `GET /token?service=&scope=...` with Basic credentials (the password is a credential, see
//!   [`crate::auth`]), or `POST /token` with an OAuth2 `password` or `refresh_token` grant,
//!   answers `{"token", "access_token", "expires_in", "issued_at"}`, granting of each scope
//!   the actions the credential's policy allows.

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use berth_layerstore::image::store::format_rfc3339;
use serde::Deserialize;

use super::AppState;
use super::route::{Route, query_pairs};
use crate::auth::{Access, AuthError, CredentialClaims, DEFAULT_SERVICE, TokenKey};

/// The `auth` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The shared key that signs credentials and tokens (see [`TokenKey::load`]).
    pub key_file: PathBuf,
    /// The service named in challenges and in tokens' audience.
    #[serde(default = "default_service")]
    pub service: String,
    /// The token endpoint's URL in challenges; by default `http://<Host>/token`.
    #[serde(default)]
    pub realm: Option<String>,
    /// How long an access token is valid (seconds).
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_secs: u64,
}

fn default_service() -> String {
    DEFAULT_SERVICE.to_owned()
}

fn default_token_lifetime() -> u64 {
    300
}

/// The loaded `auth` section: the key, and how to challenge.
#[derive(Debug, Clone)]
pub struct TokenAuth {
    key: TokenKey,
    service: String,
    realm: Option<String>,
    lifetime: Duration,
}

impl TokenAuth {
    /// Loads the key the configuration names.
    pub fn from_config(config: &AuthConfig) -> Result<TokenAuth, AuthError> {
        Ok(TokenAuth::new(
            TokenKey::load(&config.key_file)?,
            config.service.clone(),
            config.realm.clone(),
            Duration::from_secs(config.token_lifetime_secs),
        ))
    }

    /// Authentication with `key`, announcing `service` and `realm` (`None`: derived from each
    /// request's `Host`). Tokens live `lifetime`, at least the spec's 60 seconds.
    pub fn new(
        key: TokenKey,
        service: String,
        realm: Option<String>,
        lifetime: Duration,
    ) -> TokenAuth {
        TokenAuth {
            key,
            service,
            realm,
            lifetime: lifetime.max(Duration::from_secs(60)),
        }
    }

    /// Lets the request through, or answers the challenge. Drops a mount parameter the token
    /// does not cover (see the module's notes).
    pub(crate) fn authorize(&self, route: &Route, parts: &mut Parts) -> Result<(), Box<Response>> {
        let needed = needed(route, &parts.method);
        let challenge =
            |error: Option<&str>| Box::new(self.challenge(&parts.headers, needed.as_ref(), error));
        let Some(token) = bearer(&parts.headers) else {
            return Err(challenge(None));
        };
        let claims = match self.key.verify_access_token(token, &self.service) {
            Ok(claims) => claims,
            Err(e) => {
                tracing::debug!(error = %e, "access token refused");
                return Err(challenge(Some("invalid_token")));
            }
        };
        if let Some(needed) = &needed {
            let granted = needed
                .actions
                .iter()
                .all(|action| claims.allows(&needed.kind, &needed.name, action));
            if !granted {
                tracing::debug!(subject = %claims.registered.sub, scope = %needed.scope(), "insufficient scope");
                return Err(challenge(Some("insufficient_scope")));
            }
        }
        if let Route::UploadStart { .. } = route {
            let pairs = query_pairs(parts.uri.query());
            let from = pairs
                .iter()
                .find(|(k, _)| k == "from")
                .map(|(_, v)| v.as_str());
            let mounts = pairs.iter().any(|(k, _)| k == "mount");
            if mounts && !from.is_some_and(|from| claims.allows("repository", from, "pull")) {
                parts.uri = without_mount(&parts.uri, &pairs);
            }
        }
        Ok(())
    }

    /// A `401` naming the realm, service and the scope the request needs.
    fn challenge(
        &self,
        headers: &HeaderMap,
        needed: Option<&Access>,
        error: Option<&str>,
    ) -> Response {
        let realm = self.realm.clone().unwrap_or_else(|| default_realm(headers));
        let mut value = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            quote(&realm),
            quote(&self.service)
        );
        if let Some(needed) = needed {
            value.push_str(&format!(",scope=\"{}\"", quote(&needed.scope())));
        }
        if let Some(error) = error {
            value.push_str(&format!(",error=\"{error}\""));
        }
        let detail: Vec<serde_json::Value> = needed
            .map(|n| {
                n.actions
                    .iter()
                    .map(|a| serde_json::json!({"Type": n.kind, "Name": n.name, "Action": a}))
                    .collect()
            })
            .unwrap_or_default();
        let message = match error {
            Some("insufficient_scope") => "access to the requested resource is not authorized",
            Some(_) => "the access token is invalid or has expired",
            None => "authentication required",
        };
        let body = serde_json::json!({"errors": [{
            "code": "UNAUTHORIZED",
            "message": message,
            "detail": detail,
        }]});
        let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        response
    }

    /// Checks the credential and grants of `scopes` what its policy allows.
    fn exchange(&self, credential: &str, scopes: &[String]) -> Result<TokenAnswer, TokenRefusal> {
        let claims: CredentialClaims = self.key.verify_credential(credential).map_err(|e| {
            tracing::info!(error = %e, "token request with a bad credential");
            TokenRefusal::Unauthorized(e.to_string())
        })?;
        let mut access: Vec<Access> = Vec::new();
        for scope in scopes {
            let requested =
                Access::parse_scope(scope).map_err(|e| TokenRefusal::BadRequest(e.to_string()))?;
            let granted = claims.policy.grant(&requested);
            if !granted.actions.is_empty() {
                access.push(granted);
            }
        }
        tracing::info!(
            subject = %claims.registered.sub,
            requested = %scopes.join(" "),
            granted = %access.iter().map(Access::scope).collect::<Vec<_>>().join(" "),
            "token issued"
        );
        let issued = self.key.issue_access_token(
            &claims.registered.sub,
            &self.service,
            access,
            self.lifetime,
        );
        Ok(TokenAnswer {
            token: issued.token,
            expires_in: self.lifetime.as_secs(),
            issued_at: issued.issued_at,
        })
    }
}

/// What a request on `route` with `method` needs; `None` for `/v2/` (any valid token).
fn needed(route: &Route, method: &Method) -> Option<Access> {
    let access = |name: &str, actions: &[&str]| Access {
        kind: "repository".to_owned(),
        name: name.to_owned(),
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
    };
    let read_or_write = |name: &str| match *method {
        Method::GET | Method::HEAD => access(name, &["pull"]),
        Method::DELETE => access(name, &["delete"]),
        _ => access(name, &["pull", "push"]),
    };
    match route {
        Route::Base => None,
        Route::Catalog => Some(Access {
            kind: "registry".to_owned(),
            name: "catalog".to_owned(),
            actions: vec!["*".to_owned()],
        }),
        Route::UploadStart { name } | Route::Upload { name, .. } => {
            Some(access(name.as_str(), &["pull", "push"]))
        }
        Route::Blob { name, .. } | Route::Manifest { name, .. } => {
            Some(read_or_write(name.as_str()))
        }
        Route::Tags { name } | Route::Referrers { name, .. } => {
            Some(access(name.as_str(), &["pull"]))
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `http(s)://<Host>/token`, the scheme from `X-Forwarded-Proto` behind a proxy.
fn default_realm(headers: &HeaderMap) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = header("host").unwrap_or("localhost");
    let scheme = match header("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}/token")
}

/// Escapes `"` and `\` inside a quoted-string.
fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

fn without_mount(uri: &Uri, pairs: &[(String, String)]) -> Uri {
    let kept: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().filter(|(k, _)| k != "mount" && k != "from"))
        .finish();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{kept}", uri.path())
    };
    path_and_query.parse().unwrap_or_else(|_| uri.clone())
}

struct TokenAnswer {
    token: String,
    expires_in: u64,
    /// The token's `iat`.
    issued_at: u64,
}

enum TokenRefusal {
    Unauthorized(String),
    BadRequest(String),
}

/// `GET` or `POST /token`.
pub(crate) async fn token(State(state): State<AppState>, req: Request) -> Response {
    let Some(auth) = state.auth() else {
        return super::RegistryError::NotFound.into_response();
    };
    let (parts, body) = req.into_parts();
    let (credential, scopes): (Option<String>, Vec<String>) = if parts.method == Method::POST {
        let bytes = match axum::body::to_bytes(body, 64 * 1024).await {
            Ok(bytes) => bytes,
            Err(e) => return refuse(TokenRefusal::BadRequest(format!("reading the form: {e}"))),
        };
        let form: Vec<(String, String)> = form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let credential = match field("grant_type").as_deref() {
            Some("password") => field("password"),
            Some("refresh_token") => field("refresh_token"),
            other => {
                return refuse(TokenRefusal::BadRequest(format!(
                    "unsupported grant_type {other:?}: use password or refresh_token"
                )));
            }
        };
        let scopes = field("scope")
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        (credential, scopes)
    } else if parts.method == Method::GET {
        let scopes = query_pairs(parts.uri.query())
            .into_iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        (basic_password(&parts.headers), scopes)
    } else {
        return super::RegistryError::MethodNotAllowed(parts.method.to_string()).into_response();
    };
    let Some(credential) = credential else {
        return refuse(TokenRefusal::Unauthorized(
            "credentials required: a credential as the password of Basic auth".into(),
        ));
    };
    let answer = match auth.exchange(&credential, &scopes) {
        Ok(answer) => answer,
        Err(refusal) => return refuse(refusal),
    };
    axum::Json(serde_json::json!({
        "token": answer.token,
        "access_token": answer.token,
        "token_type": "Bearer",
        "expires_in": answer.expires_in,
        "issued_at": format_rfc3339(answer.issued_at),
    }))
    .into_response()
}

fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    Some(password.to_owned())
}

fn refuse(refusal: TokenRefusal) -> Response {
    let (status, code, message) = match refusal {
        TokenRefusal::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED", m),
        TokenRefusal::BadRequest(m) => (StatusCode::BAD_REQUEST, "UNSUPPORTED", m),
    };
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"berth-registry\""),
        );
    }
    response
}
