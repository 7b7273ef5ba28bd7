//! Authentication: `WWW-Authenticate` challenges, and bearer tokens from a token server.
//!
//! A registry that wants credentials answers `401` with one or more challenges (RFC 7235):
//! - `Basic realm="..."`: the client sends `Authorization: Basic base64(user:password)`;
//! - `Bearer realm="https://auth.example/token",service="registry.example",scope="..."`: the
//!   client asks the realm for a token covering the scopes it needs
//!   (`repository:NAME:pull,push`), with Basic credentials when it has some, and sends
//!   `Authorization: Bearer <token>` (`auth-token.md`). With an identity token (an OAuth2
//!   refresh token) the client `POST`s a `refresh_token` grant instead (`auth-oauth.md`), and
//!   falls back to `GET` when the server has no OAuth2 endpoint.
//!
//! Tokens are cached per realm, service, scope set and credential, until shortly before
//! they expire.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;

use crate::client::credentials::Credential;
use crate::client::error::{ClientError, Result};

/// The `client_id` berth names itself with at OAuth2 token endpoints.
pub const CLIENT_ID: &str = "berth";

/// How long a token lives when the server does not say (`auth-token.md`: 60 seconds).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are dropped this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lowercased (`bearer`, `basic`).
    pub scheme: String,
    /// The auth-params, names lowercased.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// A parameter by (lowercase) name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// Whether this is a `Bearer` challenge with a realm.
    pub fn is_bearer(&self) -> bool {
        self.scheme == "bearer" && self.param("realm").is_some()
    }

    /// Whether this is a `Basic` challenge.
    pub fn is_basic(&self) -> bool {
        self.scheme == "basic"
    }

    /// The scopes the challenge names (the `scope` parameter is space-separated).
    pub fn scopes(&self) -> Vec<String> {
        self.param("scope")
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

/// Parses a `WWW-Authenticate` header value into its challenges. Malformed parts are skipped.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        p.skip_separators();
        let Some(scheme) = p.token() else {
            // Skip a character we cannot parse and go on.
            if p.i >= p.s.len() {
                break;
            }
            p.i += 1;
            continue;
        };
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: BTreeMap::new(),
        };
        p.skip_ws();
        if let Some(t) = p.lone_token68() {
            challenge.params.insert(String::new(), t);
            out.push(challenge);
            continue;
        }
        // auth-params: name = value, separated by commas, until a token not followed by '='
        // (the next challenge's scheme).
        loop {
            p.skip_ws();
            let save = p.i;
            while p.peek() == Some(b',') {
                p.i += 1;
                p.skip_ws();
            }
            let Some(name) = p.token() else {
                p.i = save;
                break;
            };
            p.skip_ws();
            if p.peek() != Some(b'=') {
                p.i = save;
                break;
            }
            p.i += 1;
            p.skip_ws();
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token().unwrap_or_default()
            };
            challenge.params.insert(name.to_ascii_lowercase(), value);
        }
        out.push(challenge);
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    /// An RFC 7230 token.
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(c) = self.peek() {
            let tchar = c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
            if !tchar {
                break;
            }
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A token68 credential (`Basic dXNlcjpwdw==`) standing alone after a scheme: letters and
    /// `-._~+/` with `=` only as trailing padding, followed by the end or a comma. Anything
    /// else is left for the auth-param parser.
    fn lone_token68(&mut self) -> Option<String> {
        let start = self.i;
        let mut end = start;
        while let Some(&c) = self.s.get(end) {
            if c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c) {
                end += 1;
            } else {
                break;
            }
        }
        let text = &self.s[start..end];
        let body_len = text.iter().rposition(|&c| c != b'=').map_or(0, |p| p + 1);
        if body_len == 0 || text[..body_len].contains(&b'=') {
            return None;
        }
        let mut after = end;
        while matches!(self.s.get(after), Some(b' ' | b'\t')) {
            after += 1;
        }
        if !matches!(self.s.get(after), None | Some(b',')) {
            return None;
        }
        self.i = end;
        Some(String::from_utf8_lossy(text).into_owned())
    }

    /// A quoted string, with backslash escapes; the opening quote is at `i`.
    fn quoted(&mut self) -> String {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The scope for `actions` on repository `name`: `repository:NAME:pull,push`.
pub fn repository_scope(name: &str, actions: &[&str]) -> String {
    format!("repository:{name}:{}", actions.join(","))
}

/// `Authorization: Basic ...` for a user and password.
pub fn basic_header(username: &str, password: &str) -> String {
    let raw = format!("{username}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A bearer token and when to stop using it.
#[derive(Debug, Clone)]
pub struct Token {
    pub token: String,
    pub expires: Instant,
}

impl Token {
    pub fn is_fresh(&self) -> bool {
        Instant::now() < self.expires
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The cache key of a token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TokenKey {
    pub realm: String,
    pub service: String,
    /// Sorted, deduplicated scopes.
    pub scopes: Vec<String>,
    /// Which identity asked (user name, or empty for anonymous).
    pub identity: String,
}

/// Asks the token server of `challenge` for a token covering `scopes`.
pub(crate) async fn fetch_token(
    http: &reqwest::Client,
    challenge: &Challenge,
    scopes: &[String],
    credential: Option<&Credential>,
) -> Result<Token> {
    let realm = challenge.param("realm").unwrap_or_default().to_owned();
    let service = challenge.param("service").unwrap_or_default().to_owned();
    let fail = |reason: String| ClientError::Auth {
        realm: realm.clone(),
        reason,
    };
    let url = reqwest::Url::parse(&realm).map_err(|e| fail(format!("invalid realm URL: {e}")))?;
    if let Some(Credential::RegistryToken(token)) = credential {
        return Ok(Token {
            token: token.clone(),
            expires: Instant::now() + Duration::from_secs(3600),
        });
    }
    let send = |rb: reqwest::RequestBuilder| async {
        rb.send()
            .await
            .map_err(|e| fail(format!("token request failed: {e}")))
    };
    let response = match credential {
        Some(Credential::IdentityToken { token, .. }) => {
            let mut form: Vec<(&str, String)> = vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", token.clone()),
                ("service", service.clone()),
                ("client_id", CLIENT_ID.into()),
            ];
            if !scopes.is_empty() {
                form.push(("scope", scopes.join(" ")));
            }
            let r = send(http.post(url.clone()).form(&form)).await?;
            if matches!(r.status().as_u16(), 404 | 405) {
                tracing::debug!(%realm, "token server has no OAuth2 endpoint; using GET");
                send(get_token_request(http, &url, &service, scopes)).await?
            } else {
                r
            }
        }
        Some(Credential::Basic { username, password }) => {
            let rb = get_token_request(http, &url, &service, scopes)
                .query(&[("account", username.as_str())])
                .basic_auth(username, Some(password));
            send(rb).await?
        }
        Some(Credential::RegistryToken(_)) | None => {
            send(get_token_request(http, &url, &service, scopes)).await?
        }
    };
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| fail(format!("reading the token response: {e}")))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        return Err(fail(format!("{status}: {}", text.trim())));
    }
    let parsed: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| fail(format!("the token response is not JSON: {e}")))?;
    let token = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| fail("the token response has neither token nor access_token".into()))?;
    let lifetime = parsed
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME)
        .max(DEFAULT_TOKEN_LIFETIME);
    Ok(Token {
        token,
        expires: Instant::now() + lifetime - TOKEN_MARGIN,
    })
}

fn get_token_request(
    http: &reqwest::Client,
    url: &reqwest::Url,
    service: &str,
    scopes: &[String],
) -> reqwest::RequestBuilder {
    let mut query: Vec<(&str, &str)> = Vec::new();
    if !service.is_empty() {
        query.push(("service", service));
    }
    for s in scopes {
        query.push(("scope", s));
    }
    http.get(url.clone()).query(&query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert!(c[0].is_bearer());
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].scopes(), vec!["repository:samalba/my-app:pull,push"]);
    }

    #[test]
    fn parses_several_challenges_and_odd_spacing() {
        let c = parse_challenges(
            r#"Basic realm="Registry Realm", bearer  Realm = "http://x/t" , service=svc,scope="a:b:pull c:d:push", Negotiate"#,
        );
        assert_eq!(c.len(), 3, "{c:?}");
        assert!(c[0].is_basic());
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));
        assert!(c[1].is_bearer());
        assert_eq!(c[1].param("realm"), Some("http://x/t"));
        assert_eq!(c[1].param("service"), Some("svc"));
        assert_eq!(c[1].scopes(), vec!["a:b:pull", "c:d:push"]);
        assert_eq!(c[2].scheme, "negotiate");
    }

    #[test]
    fn parses_escapes_and_token68() {
        let c = parse_challenges(r#"Bearer realm="a\"b\\c""#);
        assert_eq!(c[0].param("realm"), Some(r#"a"b\c"#));
        let c = parse_challenges("Basic dXNlcjpwdw==");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param(""), Some("dXNlcjpwdw=="));
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges(" , ").is_empty());
    }

    #[test]
    fn scopes_and_basic_headers() {
        assert_eq!(
            repository_scope("team/app", &["pull", "push"]),
            "repository:team/app:pull,push"
        );
        assert_eq!(basic_header("user", "pw"), "Basic dXNlcjpwdw==");
    }
}
