//! The OCI distribution-spec (v1.1) server behind `berth registry serve`.
//!
//! ## Request flow
//! axum router -> [`Route`] (parses `<name>` from the right of the path) -> one handler per
//! endpoint (`blobs`, `uploads`, `manifests`, `tags`, `referrers`) -> [`Storage`] (blob bytes
//! in a [`BlobStore`](crate::storage::BlobStore), everything else in a
//! [`MetaStore`](crate::storage::MetaStore)) and the [`UploadStore`] -> a response, or a
//! [`RegistryError`] rendered as the spec's error body.
//!
//! ## Entry points
//! - [`app`] builds the router for an [`AppState`]; tests drive it with
//!   `tower::ServiceExt::oneshot`, no socket needed.
//! - [`serve`] opens the storage under a root directory and serves on an address until its
//!   shutdown future completes; [`serve_listener`] does the same on a bound listener with a
//!   prepared state. [`shutdown_signal`] completes on SIGINT or SIGTERM.
//!
//! ## Limits
//! Request bodies for blobs are streamed to disk, never held in memory; manifests are read
//! whole but only up to [`Config::max_manifest_bytes`] (4 MiB by default), past which the
//! answer is `413`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::Deserialize;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::storage::fs::FsBlobStore;
use crate::storage::sqlite::SqliteMetaStore;
use crate::storage::uploads::UploadStore;
use crate::storage::{Storage, StorageError};

mod auth;
mod blobs;
mod error;
mod manifests;
mod referrers;
mod route;
mod tags;
mod uploads;

pub use auth::{AuthConfig, TokenAuth};
pub use error::RegistryError;
pub use route::Route;

/// The header that tells Docker clients this is a v2 registry.
pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";
/// The header carrying the digest of what a response is about.
pub const CONTENT_DIGEST_HEADER: &str = "docker-content-digest";
/// The header carrying an upload session's id.
pub const UPLOAD_UUID_HEADER: &str = "docker-upload-uuid";

/// Tunables of the server. Also the format of `berth registry serve --config FILE` (JSON), whose
/// `addr` and `root` are read by the command line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (command line only).
    pub addr: Option<String>,
    /// Storage root (command line only).
    pub root: Option<PathBuf>,
    /// Largest manifest accepted, in bytes. The spec asks for at least 4 MiB.
    pub max_manifest_bytes: usize,
    /// Largest page of tags or repositories returned, whatever `n` asks for.
    pub max_page_size: usize,
    /// Upload sessions idle for longer than this are removed (seconds).
    pub upload_expiry_secs: u64,
    /// How long a graceful shutdown waits for requests in flight (seconds).
    pub shutdown_grace_secs: u64,
    /// Token authentication; without it every request is anonymous and allowed.
    pub auth: Option<AuthConfig>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            addr: None,
            root: None,
            max_manifest_bytes: 4 * 1024 * 1024,
            max_page_size: 10_000,
            upload_expiry_secs: 7 * 24 * 3600,
            shutdown_grace_secs: 30,
            auth: None,
        }
    }
}

/// Errors of [`Config::from_file`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Config {
    /// Reads a JSON configuration file; absent fields keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

/// Errors of [`serve`] and [`serve_listener`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("opening registry storage: {0}")]
    Storage(#[from] StorageError),
    #[error("loading the authentication key: {0}")]
    Auth(#[from] crate::auth::AuthError),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// What every handler shares: storage, upload sessions and configuration. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storage: Storage,
    uploads: uploads::Sessions,
    config: Config,
    auth: Option<TokenAuth>,
}

impl AppState {
    /// Opens the local storage under `root`: `blobs/` and `ingest/` (content store),
    /// `uploads/` and `meta.db`; and the key of the configuration's `auth` section.
    pub fn open(root: &Path, config: Config) -> Result<AppState, ServeError> {
        let auth = config
            .auth
            .as_ref()
            .map(TokenAuth::from_config)
            .transpose()?;
        std::fs::create_dir_all(root).map_err(|e| StorageError::Io {
            path: root.to_owned(),
            source: e,
        })?;
        let blobs = FsBlobStore::open(root)?;
        // Ingests older than an hour cannot belong to a live request of this server.
        if let Err(e) = blobs.content().prune_ingests(Duration::from_secs(3600)) {
            tracing::warn!(error = %e, "could not prune stale ingests");
        }
        let meta = SqliteMetaStore::open(&root.join("meta.db"))?;
        let uploads = UploadStore::open(root.join("uploads"))?;
        Ok(AppState::new(
            Storage {
                blobs: Arc::new(blobs),
                meta: Arc::new(meta),
            },
            uploads,
            config,
            auth,
        ))
    }

    /// A state over any storage; `auth` (which [`AppState::open`] loads from the
    /// configuration's `auth` section) turns token authentication on.
    pub fn new(
        storage: Storage,
        uploads: UploadStore,
        config: Config,
        auth: Option<TokenAuth>,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                storage,
                uploads: uploads::Sessions::new(uploads),
                config,
                auth,
            }),
        }
    }

    /// The storage behind the state.
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn auth(&self) -> Option<&TokenAuth> {
        self.inner.auth.as_ref()
    }

    pub(crate) fn sessions(&self) -> &uploads::Sessions {
        &self.inner.uploads
    }

    /// Removes upload sessions idle for longer than the configured expiry; returns how many.
    pub async fn expire_uploads(&self) -> Result<usize, RegistryError> {
        let expiry = Duration::from_secs(self.config().upload_expiry_secs);
        self.sessions().expire(expiry).await
    }
}

/// Runs blocking storage work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, RegistryError>
where
    F: FnOnce() -> Result<T, RegistryError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}

/// The registry's router: `/v2/...`, `/healthz`, `/token` when authentication is on, and a
/// `404` for everything else. Every
/// response carries `Docker-Distribution-API-Version: registry/2.0`; requests are traced; a
/// panicking handler answers `500` without details.
pub fn app(state: AppState) -> Router {
    let middleware = ServiceBuilder::new()
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                .on_failure(DefaultOnFailure::new().level(Level::ERROR)),
        )
        .layer(CatchPanicLayer::custom(|_panic| {
            RegistryError::Internal("handler panicked".into()).into_response()
        }))
        .layer(axum::middleware::map_response(add_api_version))
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/token", get(auth::token).post(auth::token))
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*rest}", any(dispatch))
        .fallback(|| async { RegistryError::NotFound })
        .layer(middleware)
        .with_state(state)
}

async fn add_api_version(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
    response
}

/// Sends each endpoint and method to its handler.
async fn dispatch(State(state): State<AppState>, route: Route, req: Request) -> Response {
    // Handlers that only read the request get its parts (`Body` is not `Sync`, so a borrowed
    // `Request` cannot be held across an await); handlers that stream the body get it whole.
    let (mut parts, body) = req.into_parts();
    if let Some(auth) = state.auth() {
        if let Err(challenge) = auth.authorize(&route, &mut parts) {
            return *challenge;
        }
    }
    let method = parts.method.clone();
    let result = match (&route, &method) {
        (Route::Base, &Method::GET | &Method::HEAD) => Ok(base()),
        (Route::Catalog, &Method::GET) => tags::catalog(&state, &parts).await,
        (Route::Tags { name }, &Method::GET) => tags::list(&state, name, &parts).await,
        (Route::Blob { name, digest }, &Method::GET | &Method::HEAD) => {
            blobs::get(&state, name, digest, &parts).await
        }
        (Route::Blob { name, digest }, &Method::DELETE) => {
            blobs::delete(&state, name, digest).await
        }
        (Route::UploadStart { name }, &Method::POST) => {
            uploads::start(&state, name.clone(), Request::from_parts(parts, body)).await
        }
        (Route::Upload { name, id }, &Method::GET) => uploads::status(&state, name, id).await,
        (Route::Upload { name, id }, &Method::PATCH) => {
            uploads::patch(&state, name, id, Request::from_parts(parts, body)).await
        }
        (Route::Upload { name, id }, &Method::PUT) => {
            uploads::finish(&state, name, id, Request::from_parts(parts, body)).await
        }
        (Route::Upload { name, id }, &Method::DELETE) => uploads::cancel(&state, name, id).await,
        (Route::Manifest { name, reference }, &Method::GET | &Method::HEAD) => {
            manifests::get(&state, name, reference, &parts).await
        }
        (Route::Manifest { name, reference }, &Method::PUT) => {
            manifests::put(&state, name, reference, Request::from_parts(parts, body)).await
        }
        (Route::Manifest { name, reference }, &Method::DELETE) => {
            manifests::delete(&state, name, reference).await
        }
        (Route::Referrers { name, digest }, &Method::GET) => {
            referrers::list(&state, name, digest, &parts).await
        }
        _ => Err(RegistryError::MethodNotAllowed(method.to_string())),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v2/`: the registry implements the v2 API.
fn base() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response()
}

/// An empty response with `status`, for the many endpoints that answer with headers only.
/// `Content-Length: 0` is explicit, except on a `204`, which must not carry one (RFC 9110).
pub(crate) fn empty(status: StatusCode) -> axum::http::response::Builder {
    let builder = Response::builder().status(status);
    if status == StatusCode::NO_CONTENT {
        builder
    } else {
        builder.header(header::CONTENT_LENGTH, "0")
    }
}

/// Finishes a response built with [`empty`] or by hand. Header values come from checked types
/// (digests, names, numbers), so building cannot fail in practice; if it does, it is internal.
pub(crate) fn build(
    builder: axum::http::response::Builder,
    body: Body,
) -> Result<Response, RegistryError> {
    builder
        .body(body)
        .map_err(|e| RegistryError::Internal(format!("building response: {e}")))
}

/// Opens the storage under `root` and serves the registry on `addr` until `shutdown`
/// completes. See [`serve_listener`].
pub async fn serve(
    addr: SocketAddr,
    root: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = AppState::open(root, Config::default())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve_listener(listener, state, shutdown).await
}

/// Serves `state` on `listener` until `shutdown` completes, then stops accepting and waits up
/// to [`Config::shutdown_grace_secs`] for requests in flight. Idle upload sessions are expired
/// hourly in the background.
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let grace = Duration::from_secs(state.config().shutdown_grace_secs);
    let janitor = tokio::spawn(expire_uploads_periodically(state.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signalled = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        let _ = stop_tx.send(true);
    };
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(signalled);
    let deadline = async move {
        let mut stop_rx = stop_rx;
        // Resolves only once shutdown was signalled, then after the grace period.
        if stop_rx.wait_for(|stopped| *stopped).await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        result = server => result.map_err(ServeError::Io),
        () = deadline => {
            tracing::warn!(?grace, "requests still in flight after the grace period; stopping");
            Ok(())
        }
    };
    janitor.abort();
    result
}

async fn expire_uploads_periodically(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match state.expire_uploads().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired idle upload sessions"),
            Err(e) => tracing::warn!(error = %e, "could not expire upload sessions"),
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_overrides_defaults_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        std::fs::write(
            &path,
            r#"{"addr": "0.0.0.0:5001", "root": "/srv/berth", "max_manifest_bytes": 8388608}"#,
        )
        .unwrap();
        let config = Config::from_file(&path).unwrap();
        assert_eq!(config.addr.as_deref(), Some("0.0.0.0:5001"));
        assert_eq!(config.root, Some(PathBuf::from("/srv/berth")));
        assert_eq!(config.max_manifest_bytes, 8 * 1024 * 1024);
        assert_eq!(config.max_page_size, Config::default().max_page_size);

        std::fs::write(&path, r#"{"max_manifest_size": 1}"#).unwrap();
        assert!(matches!(
            Config::from_file(&path),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::from_file(&dir.path().join("missing.json")),
            Err(ConfigError::Read { .. })
        ));
    }
}
