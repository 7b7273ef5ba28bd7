//! Requests to one repository of one registry: scheme choice, authentication, retries and
//! error mapping.
//!
//! - **Scheme.** Loopback registries are reached over plain HTTP. Hosts listed as insecure are
//!   tried over HTTPS without certificate checks first, then over HTTP, as Docker does. Every
//!   other host is HTTPS only. The first contact with a host is `GET /v2/` (the "ping"), which
//!   settles the scheme and learns the host's challenge.
//! - **Auth.** A [`Session`] knows the scopes it needs. Before each request it asks the
//!   client for an `Authorization` header matching the host's challenge (a cached bearer
//!   token, or Basic). A `401` refreshes the challenge (a registry may ask for more scopes) and
//!   the request is sent again once.
//! - **Retries.** Connection errors, timeouts, `429` and `5xx` are retried with exponential
//!   backoff (a `Retry-After` in seconds is honoured), for requests marked retryable.
//!   Requests whose effect is not idempotent (a `PATCH` of a chunk) are not; the upload code
//!   recovers those by asking the registry where the upload stands.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use tokio::sync::OnceCell;

use crate::client::auth::{self, Challenge, Token, TokenKey};
use crate::client::credentials::{Credential, DockerConfig};
use crate::client::error::{ClientError, Result, parse_error_body};
use crate::client::progress::{Progress, ProgressEvent};
use crate::client::{ClientOptions, RetryPolicy};
use crate::reference::{DOCKER_HUB, DOCKER_HUB_API, RepositoryName, host_without_port};

/// The most of an error body that is read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What the client learnt about a host.
#[derive(Debug)]
pub(crate) struct Host {
    /// The registry name as references spell it (`127.0.0.1:5000`, `docker.io`).
    pub name: String,
    /// `scheme://api-host/`.
    pub base: Url,
    /// Whether TLS certificates are not checked (an insecure registry over HTTPS).
    pub tls_unchecked: bool,
    /// The host's current challenge, from the ping or the last `401`.
    pub challenge: Mutex<Option<Challenge>>,
    /// Whether the host did not complete a monolithic `POST ?digest=` (it opened a session
    /// instead, as the spec allows); small blobs then go `POST` then `PUT` straight away.
    pub single_post_refused: AtomicBool,
}

/// Shared state behind a [`crate::client::Client`].
pub(crate) struct Inner {
    pub opts: ClientOptions,
    pub http: reqwest::Client,
    pub http_unchecked: reqwest::Client,
    hosts: tokio::sync::Mutex<HashMap<String, Arc<OnceCell<Arc<Host>>>>>,
    tokens: Mutex<HashMap<TokenKey, Token>>,
    /// Serializes token fetches so parallel requests do not each fetch one.
    token_lock: tokio::sync::Mutex<()>,
    docker_config: OnceCell<DockerConfig>,
    credentials: tokio::sync::Mutex<HashMap<String, Option<Credential>>>,
}

impl Inner {
    pub fn new(opts: ClientOptions) -> Result<Inner> {
        let builder = || {
            reqwest::Client::builder()
                .user_agent(opts.user_agent.clone())
                .connect_timeout(opts.connect_timeout)
                .read_timeout(opts.read_timeout)
                .pool_idle_timeout(Duration::from_secs(30))
        };
        let http = builder().build().map_err(ClientError::Setup)?;
        let http_unchecked = builder()
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(ClientError::Setup)?;
        Ok(Inner {
            opts,
            http,
            http_unchecked,
            hosts: tokio::sync::Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            token_lock: tokio::sync::Mutex::new(()),
            docker_config: OnceCell::new(),
            credentials: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    fn http_for(&self, host: &Host) -> &reqwest::Client {
        if host.tls_unchecked {
            &self.http_unchecked
        } else {
            &self.http
        }
    }

    /// Whether `registry` was declared insecure (by `host:port` or by host alone).
    pub fn is_insecure(&self, registry: &str) -> bool {
        let host = host_without_port(registry);
        self.opts.insecure_registries.iter().any(|r| {
            let r = r
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            r.eq_ignore_ascii_case(registry) || r.eq_ignore_ascii_case(host)
        })
    }

    /// The host state for `registry`, pinging it on first use.
    pub async fn host(&self, registry: &str) -> Result<Arc<Host>> {
        let cell = {
            let mut hosts = self.hosts.lock().await;
            hosts
                .entry(registry.to_owned())
                .or_insert_with(|| Arc::new(OnceCell::new()))
                .clone()
        };
        cell.get_or_try_init(|| self.ping(registry))
            .await
            .map(Arc::clone)
    }

    /// `GET /v2/` over each candidate scheme until one answers.
    async fn ping(&self, registry: &str) -> Result<Arc<Host>> {
        let api_host = if registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            registry
        };
        let loopback = is_loopback_host(registry);
        let candidates: Vec<(&str, bool)> = if loopback {
            vec![("http", false)]
        } else if self.is_insecure(registry) {
            vec![("https", true), ("http", false)]
        } else {
            vec![("https", false)]
        };
        let mut last_err = None;
        for (i, (scheme, unchecked)) in candidates.iter().enumerate() {
            let base = Url::parse(&format!("{scheme}://{api_host}/")).map_err(|e| {
                ClientError::Location {
                    location: registry.to_owned(),
                    reason: format!("not a usable host: {e}"),
                }
            })?;
            let url = base
                .join("v2/")
                .map_err(|e| ClientError::protocol(&base, e.to_string()))?;
            let http = if *unchecked {
                &self.http_unchecked
            } else {
                &self.http
            };
            let last = i + 1 == candidates.len();
            let policy = if last {
                self.opts.retry.clone()
            } else {
                RetryPolicy::none()
            };
            match send_with_retry(&policy, None, "ping", || Ok(http.get(url.clone()))).await {
                Ok(resp) => {
                    let challenge = pick_challenge(resp.headers()).map(host_challenge);
                    tracing::debug!(%registry, %base, status = %resp.status(), ?challenge, "pinged registry");
                    return Ok(Arc::new(Host {
                        name: registry.to_owned(),
                        base,
                        tls_unchecked: *unchecked,
                        challenge: Mutex::new(challenge),
                        single_post_refused: AtomicBool::new(false),
                    }));
                }
                Err(e) => {
                    tracing::debug!(%registry, %url, error = %e, "ping failed");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| ClientError::protocol(registry, "no scheme to try")))
    }

    /// The credential for `registry`: explicit ones from the options, else Docker's config.
    async fn credential(&self, registry: &str) -> Result<Option<Credential>> {
        let mut cache = self.credentials.lock().await;
        if let Some(c) = cache.get(registry) {
            return Ok(c.clone());
        }
        let explicit = self
            .opts
            .credentials
            .iter()
            .find(|(host, _)| host.eq_ignore_ascii_case(registry))
            .map(|(_, c)| c.clone());
        let found = match explicit {
            Some(c) => Some(c),
            None if self.opts.use_docker_config => {
                let config = self
                    .docker_config
                    .get_or_try_init(|| async {
                        match &self.opts.docker_config {
                            Some(path) => DockerConfig::load(path),
                            None => DockerConfig::load_default(),
                        }
                    })
                    .await?;
                config.credential_for(registry).await?
            }
            None => None,
        };
        tracing::debug!(%registry, found = found.is_some(), "looked up credentials");
        cache.insert(registry.to_owned(), found.clone());
        Ok(found)
    }

    /// The `Authorization` value for a request to `host` needing `scopes`.
    async fn authorization(
        &self,
        host: &Host,
        scopes: &[String],
        force_refresh: bool,
    ) -> Result<Option<String>> {
        let challenge = host.challenge.lock().map(|c| c.clone()).unwrap_or(None);
        let Some(challenge) = challenge else {
            return Ok(None);
        };
        if challenge.is_bearer() {
            let credential = self.credential(&host.name).await?;
            let all: BTreeSet<String> = scopes.iter().cloned().collect();
            let key = TokenKey {
                realm: challenge.param("realm").unwrap_or_default().to_owned(),
                service: challenge.param("service").unwrap_or_default().to_owned(),
                scopes: all.into_iter().collect(),
                identity: match &credential {
                    Some(Credential::Basic { username, .. }) => format!("basic:{username}"),
                    Some(Credential::IdentityToken { username, .. }) => format!("id:{username}"),
                    Some(Credential::RegistryToken(_)) => "registry-token".into(),
                    None => String::new(),
                },
            };
            if !force_refresh && let Some(t) = self.cached_token(&key) {
                return Ok(Some(format!("Bearer {}", t.token)));
            }
            let _guard = self.token_lock.lock().await;
            if !force_refresh && let Some(t) = self.cached_token(&key) {
                return Ok(Some(format!("Bearer {}", t.token)));
            }
            let token = auth::fetch_token(
                self.http_for(host),
                &challenge,
                &key.scopes,
                credential.as_ref(),
            )
            .await?;
            tracing::debug!(realm = %key.realm, scopes = ?key.scopes, "got a bearer token");
            let header = format!("Bearer {}", token.token);
            if let Ok(mut tokens) = self.tokens.lock() {
                tokens.insert(key, token);
            }
            return Ok(Some(header));
        }
        if challenge.is_basic() {
            return Ok(match self.credential(&host.name).await? {
                Some(Credential::Basic { username, password }) => {
                    Some(auth::basic_header(&username, &password))
                }
                _ => None,
            });
        }
        Ok(None)
    }

    fn cached_token(&self, key: &TokenKey) -> Option<Token> {
        let tokens = self.tokens.lock().ok()?;
        tokens.get(key).filter(|t| t.is_fresh()).cloned()
    }
}

/// Whether a registry name is on a loopback address.
pub(crate) fn is_loopback_host(registry: &str) -> bool {
    let host = host_without_port(registry);
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The challenge a host keeps: the scope it named is about one request, not the host.
fn host_challenge(mut challenge: Challenge) -> Challenge {
    challenge.params.remove("scope");
    challenge
}

/// The challenge to answer among those of a response: Bearer first, then Basic.
fn pick_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let all: Vec<Challenge> = headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(auth::parse_challenges)
        .collect();
    all.iter()
        .find(|c| c.is_bearer())
        .or_else(|| all.iter().find(|c| c.is_basic()))
        .cloned()
}

/// Whether a transport error is worth another try.
fn retryable_error(e: &reqwest::Error) -> bool {
    !e.is_builder() && !e.is_redirect() && !e.is_status() && !e.is_decode()
}

/// Whether a status is worth another try.
fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// Sends the request `make` builds, building it again for each try, under `policy`.
/// Returns the first response that is not worth retrying (any status).
pub(crate) async fn send_with_retry(
    policy: &RetryPolicy,
    progress: Option<&dyn Progress>,
    what: &str,
    mut make: impl FnMut() -> Result<reqwest::RequestBuilder>,
) -> Result<reqwest::Response> {
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let (http, request) = make()?.build_split();
        let request = request.map_err(|source| ClientError::Http {
            method: "request".into(),
            url: what.to_owned(),
            source,
        })?;
        let (method, url) = (request.method().to_string(), request.url().to_string());
        let outcome = http.execute(request).await;
        let (delay, error) = match outcome {
            Ok(resp) if retryable_status(resp.status()) && attempt < policy.max_attempts => {
                let delay = retry_after(resp.headers())
                    .map(|d| d.min(policy.max_backoff))
                    .unwrap_or_else(|| policy.backoff(attempt));
                (delay, format!("{method} {url}: {}", resp.status()))
            }
            Ok(resp) => return Ok(resp),
            Err(e) if retryable_error(&e) && attempt < policy.max_attempts => {
                (policy.backoff(attempt), format!("{method} {url}: {e}"))
            }
            Err(source) => {
                return Err(ClientError::Http {
                    method,
                    url,
                    source: source.without_url(),
                });
            }
        };
        tracing::warn!(%what, attempt, ?delay, %error, "retrying");
        if let Some(p) = progress {
            p.event(&ProgressEvent::Retry {
                what: what.to_owned(),
                attempt,
                delay,
                error,
            });
        }
        tokio::time::sleep(delay).await;
    }
}

/// Turns a response with an unexpected status into [`ClientError::Registry`], reading (a
/// bounded part of) its error body.
pub(crate) async fn unexpected(method: &Method, url: &Url, resp: reqwest::Response) -> ClientError {
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    let mut resp = resp;
    while body.len() < MAX_ERROR_BODY {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    let errors = parse_error_body(&body);
    // A body that is not a spec error body is quoted only when it is short readable text.
    let text = match std::str::from_utf8(&body[..body.len().min(300)]) {
        Ok(s) if errors.is_empty() && !s.is_empty() => {
            let printable = s.chars().all(|c| !c.is_control() || c.is_whitespace());
            printable.then(|| s.to_owned())
        }
        _ => None,
    };
    ClientError::Registry {
        method: method.to_string(),
        url: url.to_string(),
        status,
        errors,
        body: text,
    }
}

/// Requests to one repository, with the scopes they need.
pub(crate) struct Session {
    pub inner: Arc<Inner>,
    pub host: Arc<Host>,
    pub repository: RepositoryName,
    /// The scopes the operation needs, plus any a `401` asked for.
    scopes: Mutex<Vec<String>>,
    pub progress: Arc<dyn Progress>,
}

impl Session {
    pub async fn new(
        inner: Arc<Inner>,
        registry: &str,
        repository: RepositoryName,
        scopes: Vec<String>,
        progress: Arc<dyn Progress>,
    ) -> Result<Session> {
        let host = inner.host(registry).await?;
        Ok(Session {
            inner,
            host,
            repository,
            scopes: Mutex::new(scopes),
            progress,
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        self.inner.http_for(&self.host)
    }

    /// `<base>/v2/<name>/<path>`.
    pub fn url(&self, path: &str) -> Result<Url> {
        let rel = format!("v2/{}/{path}", self.repository);
        self.host
            .base
            .join(&rel)
            .map_err(|e| ClientError::protocol(&self.host.base, format!("{rel}: {e}")))
    }

    /// Resolves a `Location` header value against the registry's base URL.
    pub fn location(&self, resp: &reqwest::Response) -> Result<Url> {
        let url = resp.url().clone();
        let value = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .ok_or_else(|| ClientError::protocol(&url, "the response has no Location header"))?
            .to_str()
            .map_err(|_| ClientError::protocol(&url, "the Location header is not ASCII"))?;
        url.join(value)
            .map_err(|e| ClientError::protocol(&url, format!("bad Location {value:?}: {e}")))
    }

    /// Sends the request `make` builds, with authorization, answering one `401` and retrying
    /// transient failures when `retry` is set. Returns the response whatever its status.
    pub async fn send(
        &self,
        what: &str,
        retry: bool,
        make: impl Fn(&reqwest::Client) -> Result<reqwest::RequestBuilder>,
    ) -> Result<reqwest::Response> {
        let policy = if retry {
            self.inner.opts.retry.clone()
        } else {
            RetryPolicy::none()
        };
        let mut refreshed = false;
        loop {
            let scopes = self.scopes.lock().map(|s| s.clone()).unwrap_or_default();
            let authz = self
                .inner
                .authorization(&self.host, &scopes, refreshed)
                .await?;
            let resp = send_with_retry(&policy, Some(&*self.progress), what, || {
                let rb = make(self.http())?;
                Ok(match &authz {
                    Some(v) => rb.header(AUTHORIZATION, v),
                    None => rb,
                })
            })
            .await?;
            if resp.status() == StatusCode::UNAUTHORIZED && !refreshed {
                if let Some(challenge) = pick_challenge(resp.headers()) {
                    tracing::debug!(%what, ?challenge, "challenged; authenticating again");
                    if let Ok(mut scopes) = self.scopes.lock() {
                        for scope in challenge.scopes() {
                            if !scopes.contains(&scope) {
                                scopes.push(scope);
                            }
                        }
                    }
                    if let Ok(mut c) = self.host.challenge.lock() {
                        *c = Some(host_challenge(challenge));
                    }
                    refreshed = true;
                    continue;
                }
            }
            return Ok(resp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:80",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["reg.example", "10.0.0.1:5000", "[2001:db8::1]:5000"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn insecure_matching() {
        let inner = Inner::new(ClientOptions {
            insecure_registries: vec!["reg.example:5000".into(), "http://other.example/".into()],
            ..ClientOptions::default()
        })
        .unwrap();
        assert!(inner.is_insecure("reg.example:5000"));
        assert!(!inner.is_insecure("reg.example:6000"));
        assert!(inner.is_insecure("other.example:443"));
        assert!(inner.is_insecure("other.example"));
        assert!(!inner.is_insecure("third.example"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(400));
        assert_eq!(p.backoff(9), Duration::from_secs(1));
    }
}
