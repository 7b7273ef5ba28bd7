//! The client against small local registry stubs that misbehave on purpose: a tampered blob,
//! a registry behind a bearer-token server, transient failures and broken transfers, and an
//! upload that answers 416.

mod client_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_layerstore::content::Provider;
use berth_layerstore::content::memory::MemoryStore;
use berth_layerstore::image::descriptor_digest;
use berth_layerstore::{Digest, media};
use berth_registry::client::{ClientError, Counters, Credential, PullOptions, PushOptions};
use bytes::Bytes;
use client_support::*;

/// A request as the stub saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
}

type Handler = dyn Fn(&Seen, Bytes) -> Response + Send + Sync;

/// An HTTP server on 127.0.0.1 that answers every request with `handler`.
struct Stub {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stub {
    async fn start(handler: impl Fn(&Seen, Bytes) -> Response + Send + Sync + 'static) -> Stub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let app = axum::Router::new().fallback({
            let seen = seen.clone();
            move |req: Request<Body>| {
                let seen = seen.clone();
                let handler = handler.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = axum::body::to_bytes(body, 64 << 20)
                        .await
                        .unwrap_or_default();
                    let s = Seen {
                        method: parts.method.clone(),
                        path: parts.uri.path().to_owned(),
                        query: parts.uri.query().unwrap_or("").to_owned(),
                        headers: parts.headers.clone(),
                    };
                    seen.lock().unwrap().push(s.clone());
                    handler(&s, body)
                }
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Stub { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A manifest and its blobs, served by path.
fn blobs_of(store: &MemoryStore, sample: &Sample) -> HashMap<String, Bytes> {
    let mut m = HashMap::new();
    for d in std::iter::once(&sample.config).chain(&sample.layers) {
        let digest = descriptor_digest(d).unwrap();
        m.insert(
            digest.to_string(),
            Bytes::from(store.read_all(&digest).unwrap()),
        );
    }
    m
}

fn manifest_response(bytes: &Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, media::OCI_MANIFEST.to_owned()),
            (
                header::HeaderName::from_static("docker-content-digest"),
                Digest::sha256(bytes).to_string(),
            ),
        ],
        bytes.clone(),
    )
        .into_response()
}

fn status(code: StatusCode) -> Response {
    code.into_response()
}

#[tokio::test]
async fn tampered_blob_is_refused_and_the_error_names_its_digest() {
    let store = MemoryStore::new();
    let sample = sample_image(&store, "amd64", &[("f", b"the genuine layer content")]);
    let manifest = Bytes::from(
        store
            .read_all(&descriptor_digest(&sample.manifest).unwrap())
            .unwrap(),
    );
    let layer = descriptor_digest(&sample.layers[0]).unwrap();
    let mut blobs = blobs_of(&store, &sample);
    // Same length, different bytes.
    let genuine = blobs[&layer.to_string()].clone();
    let mut bad = genuine.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    blobs.insert(layer.to_string(), Bytes::from(bad));
    let stub = Stub::start(move |req, _| {
        let p = req.path.as_str();
        if p == "/v2/" {
            return status(StatusCode::OK);
        }
        if p.ends_with("/manifests/latest") {
            return manifest_response(&manifest);
        }
        if let Some(d) = p.strip_prefix("/v2/evil/app/blobs/")
            && let Some(b) = blobs.get(d)
        {
            return b.clone().into_response();
        }
        status(StatusCode::NOT_FOUND)
    })
    .await;
    let client = test_client(|_| {});
    let reference = format!("{}/evil/app:latest", stub.addr).parse().unwrap();
    let fresh = MemoryStore::new();
    let err = client
        .pull(&reference, &fresh, &PullOptions::default())
        .await
        .expect_err("a tampered blob must fail the pull");
    match &err {
        ClientError::DigestMismatch { expected, url, .. } => {
            assert_eq!(expected, &layer);
            assert!(url.contains(&layer.to_string()), "{url}");
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains(&layer.to_string()), "{err}");
    assert!(
        !fresh.exists(&layer).unwrap(),
        "the tampered blob was not stored"
    );
    assert!(
        !fresh
            .exists(&descriptor_digest(&sample.manifest).unwrap())
            .unwrap()
    );
}

#[tokio::test]
async fn manifest_that_does_not_match_its_digest_is_refused() {
    let store = MemoryStore::new();
    let sample = sample_image(&store, "amd64", &[("f", b"x")]);
    let manifest = Bytes::from(
        store
            .read_all(&descriptor_digest(&sample.manifest).unwrap())
            .unwrap(),
    );
    let wrong = Digest::sha256(b"something else");
    let header_digest = wrong.to_string();
    let stub = Stub::start(move |req, _| {
        if req.path == "/v2/" {
            return status(StatusCode::OK);
        }
        (
            [
                (header::CONTENT_TYPE, media::OCI_MANIFEST.to_owned()),
                (
                    header::HeaderName::from_static("docker-content-digest"),
                    header_digest.clone(),
                ),
            ],
            manifest.clone(),
        )
            .into_response()
    })
    .await;
    let client = test_client(|_| {});
    let reference = format!("{}/a/b:latest", stub.addr).parse().unwrap();
    let err = client
        .fetch_manifest(&reference)
        .await
        .expect_err("digest header lies");
    assert!(
        matches!(&err, ClientError::DigestMismatch { expected, .. } if expected == &wrong),
        "{err:?}"
    );
}

const TOKEN: &str = "tok-0123456789";

/// A registry that demands a bearer token from its own token endpoint, which demands Basic
/// credentials alice:secret.
async fn bearer_stub(store: &MemoryStore, sample: &Sample) -> Stub {
    let manifest = Bytes::from(
        store
            .read_all(&descriptor_digest(&sample.manifest).unwrap())
            .unwrap(),
    );
    let blobs = blobs_of(store, sample);
    let realm: Arc<Mutex<String>> = Arc::default();
    let realm_in = realm.clone();
    let stub = Stub::start(move |req, body| {
        let auth = req
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if req.path == "/token" && req.method == Method::POST {
            // The OAuth2 refresh-token grant, for identity tokens.
            let form = String::from_utf8_lossy(&body).into_owned();
            let ok = form.contains("grant_type=refresh_token")
                && form.contains("refresh_token=refresh-xyz")
                && form.contains("client_id=berth");
            if !ok {
                return (StatusCode::UNAUTHORIZED, "bad refresh token").into_response();
            }
            return (
                [(header::CONTENT_TYPE, "application/json")],
                format!(r#"{{"access_token":"{TOKEN}","scope":"repository:secure/app:pull"}}"#),
            )
                .into_response();
        }
        if req.path == "/token" {
            // base64("alice:secret")
            if auth != "Basic YWxpY2U6c2VjcmV0" {
                return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
            }
            return (
                [(header::CONTENT_TYPE, "application/json")],
                format!(r#"{{"access_token":"{TOKEN}","expires_in":300}}"#),
            )
                .into_response();
        }
        if auth != format!("Bearer {TOKEN}") {
            let challenge = format!(
                r#"Bearer realm="{}",service="stub-registry",scope="repository:secure/app:pull""#,
                realm_in.lock().unwrap()
            );
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, challenge)],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
                .into_response();
        }
        let p = req.path.as_str();
        if p == "/v2/" {
            return status(StatusCode::OK);
        }
        if p == "/v2/secure/app/manifests/v1" {
            return manifest_response(&manifest);
        }
        if let Some(d) = p.strip_prefix("/v2/secure/app/blobs/")
            && let Some(b) = blobs.get(d)
        {
            return b.clone().into_response();
        }
        status(StatusCode::NOT_FOUND)
    })
    .await;
    *realm.lock().unwrap() = format!("http://{}/token", stub.addr);
    stub
}

#[tokio::test]
async fn bearer_token_flow_with_basic_credentials() {
    let store = MemoryStore::new();
    let sample = sample_image(&store, "amd64", &[("a", b"one"), ("b", b"two")]);
    let stub = bearer_stub(&store, &sample).await;
    let reference: berth_registry::reference::Reference =
        format!("{}/secure/app:v1", stub.addr).parse().unwrap();

    let client = test_client(|o| {
        o.credentials = vec![(
            stub.addr.clone(),
            Credential::Basic {
                username: "alice".into(),
                password: "secret".into(),
            },
        )];
    });
    let fresh = MemoryStore::new();
    let pulled = client
        .pull(&reference, &fresh, &PullOptions::default())
        .await
        .expect("pull with a token");
    assert_eq!(pulled.root.digest(), sample.manifest.digest());
    assert_complete(&fresh, &pulled.root);

    let token_requests: Vec<Seen> = stub
        .seen()
        .into_iter()
        .filter(|s| s.path == "/token")
        .collect();
    assert_eq!(
        token_requests.len(),
        1,
        "the token is cached: {token_requests:?}"
    );
    let q = &token_requests[0].query;
    assert!(q.contains("service=stub-registry"), "{q}");
    assert!(q.contains("scope=repository%3Asecure%2Fapp%3Apull"), "{q}");
    assert!(q.contains("account=alice"), "{q}");
    // Every registry request after the ping carried the token.
    let registry_requests: Vec<Seen> = stub
        .seen()
        .into_iter()
        .filter(|s| s.path.starts_with("/v2/secure/"))
        .collect();
    assert!(registry_requests.len() >= 3);
    for r in &registry_requests {
        assert_eq!(
            r.headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{} {}",
            r.method,
            r.path
        );
    }

    // The same credentials from a Docker config.json.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6c2VjcmV0"}}}}}}"#,
            stub.addr
        ),
    )
    .unwrap();
    let client = test_client(|o| {
        o.use_docker_config = true;
        o.docker_config = Some(config.clone());
    });
    client
        .pull(&reference, &MemoryStore::new(), &PullOptions::default())
        .await
        .expect("pull with config.json credentials");

    // An identity token is exchanged with a POST (OAuth2 refresh-token grant).
    let client = test_client(|o| {
        o.credentials = vec![(
            stub.addr.clone(),
            Credential::IdentityToken {
                username: String::new(),
                token: "refresh-xyz".into(),
            },
        )];
    });
    client
        .pull(&reference, &MemoryStore::new(), &PullOptions::default())
        .await
        .expect("pull with an identity token");
    let posts = stub
        .seen()
        .into_iter()
        .filter(|s| s.path == "/token" && s.method == Method::POST)
        .count();
    assert_eq!(posts, 1);

    // Without credentials the token server refuses, and the error names the realm.
    let anonymous = test_client(|_| {});
    let err = anonymous
        .pull(&reference, &MemoryStore::new(), &PullOptions::default())
        .await
        .expect_err("no credentials");
    match &err {
        ClientError::Auth { realm, reason } => {
            assert!(realm.ends_with("/token"), "{realm}");
            assert!(reason.contains("401"), "{reason}");
        }
        other => panic!("expected an auth error, got {other:?}"),
    }
}

#[tokio::test]
async fn transient_failures_are_retried_and_broken_downloads_resume() {
    let store = MemoryStore::new();
    let big = noise(400_000, 5);
    let sample = sample_image(&store, "amd64", &[("big", &big)]);
    let manifest = Bytes::from(
        store
            .read_all(&descriptor_digest(&sample.manifest).unwrap())
            .unwrap(),
    );
    let layer = descriptor_digest(&sample.layers[0]).unwrap().to_string();
    let blobs = blobs_of(&store, &sample);
    let layer_bytes = blobs[&layer].clone();
    let layer_digest: Digest = layer.parse().unwrap();
    let calls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let stub = Stub::start(move |req, _| {
        let p = req.path.clone();
        let n = {
            let mut c = calls.lock().unwrap();
            let e = c.entry(p.clone()).or_default();
            *e += 1;
            *e
        };
        if p == "/v2/" {
            return status(StatusCode::OK);
        }
        if p.ends_with("/manifests/latest") {
            // The first answer is a 503, then a 429 with Retry-After, then the manifest.
            return match n {
                1 => status(StatusCode::SERVICE_UNAVAILABLE),
                2 => (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "0")]).into_response(),
                _ => manifest_response(&manifest),
            };
        }
        let Some(d) = p.strip_prefix("/v2/flaky/app/blobs/") else {
            return status(StatusCode::NOT_FOUND);
        };
        let Some(b) = blobs.get(d).cloned() else {
            return status(StatusCode::NOT_FOUND);
        };
        if d != layer {
            return b.into_response();
        }
        if n == 1 {
            // Announce the whole blob, send half, then break the connection.
            let half = b.slice(..b.len() / 2);
            // The pause lets the first half reach the client before the break.
            let stream = futures_util::stream::unfold(0u8, move |step| {
                let half = half.clone();
                async move {
                    match step {
                        0 => Some((Ok::<Bytes, std::io::Error>(half), 1)),
                        1 => {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            Some((Err(std::io::Error::other("connection dropped")), 2))
                        }
                        _ => None,
                    }
                }
            });
            return Response::builder()
                .header(header::CONTENT_LENGTH, b.len())
                .body(Body::from_stream(stream))
                .unwrap();
        }
        let Some(range) = req.headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
            return b.into_response();
        };
        let range = Some(range);
        let start: usize = range
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{}", b.len() - 1, b.len()),
            )
            .body(Body::from(b.slice(start..)))
            .unwrap()
    })
    .await;
    let client = test_client(|_| {});
    let reference = format!("{}/flaky/app:latest", stub.addr).parse().unwrap();
    let counters = Arc::new(Counters::default());
    let fresh = MemoryStore::new();
    let pulled = client
        .pull(
            &reference,
            &fresh,
            &PullOptions {
                progress: counters.clone(),
                ..PullOptions::default()
            },
        )
        .await
        .expect("pull survives the failures");
    assert_complete(&fresh, &pulled.root);
    assert_eq!(fresh.read_all(&layer_digest).unwrap(), layer_bytes.to_vec());
    assert!(
        Counters::get(&counters.retries) >= 3,
        "two manifest retries and one resume"
    );
    let ranged: Vec<Seen> = stub
        .seen()
        .into_iter()
        .filter(|s| s.headers.contains_key(header::RANGE))
        .collect();
    assert_eq!(
        ranged.len(),
        1,
        "the layer resumed once with a Range request"
    );
    let range = ranged[0].headers[header::RANGE]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(range, "bytes=0-", "it resumed past the bytes it had");
}

/// Upload state of the chunked-upload stub.
#[derive(Default)]
struct UploadState {
    /// Bytes received so far, by upload id.
    uploads: HashMap<String, Vec<u8>>,
    next_id: u32,
    patches: u32,
    refused_once: bool,
    blobs: HashMap<String, Vec<u8>>,
    manifests: HashMap<String, Vec<u8>>,
}

#[tokio::test]
async fn chunked_upload_resumes_after_416() {
    const UPLOADS: &str = "/v2/up/load/blobs/uploads/";
    let state: Arc<Mutex<UploadState>> = Arc::default();
    let st = state.clone();
    let stub = Stub::start(move |req, body| {
        let mut s = st.lock().unwrap();
        let p = req.path.as_str();
        let m = &req.method;
        let range_of = |len: usize| format!("0-{}", len.saturating_sub(1));
        if p == "/v2/" {
            return status(StatusCode::OK);
        }
        if m == Method::HEAD && p.contains("/blobs/") {
            return status(StatusCode::NOT_FOUND);
        }
        if m == Method::POST && p == UPLOADS {
            s.next_id += 1;
            let id = format!("u{}", s.next_id);
            s.uploads.insert(id.clone(), Vec::new());
            return (
                StatusCode::ACCEPTED,
                [(header::LOCATION, format!("{UPLOADS}{id}"))],
            )
                .into_response();
        }
        if let Some(id) = p.strip_prefix(UPLOADS) {
            let id = id.to_owned();
            let location = p.to_owned();
            let Some(len) = s.uploads.get(&id).map(Vec::len) else {
                return status(StatusCode::NOT_FOUND);
            };
            if m == Method::PATCH {
                s.patches += 1;
                // Refuse one chunk once, as if it had arrived out of order.
                if len > 0 && !s.refused_once {
                    s.refused_once = true;
                    return status(StatusCode::RANGE_NOT_SATISFIABLE);
                }
                let cr = req
                    .headers
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let start: usize = cr
                    .split('-')
                    .next()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(usize::MAX);
                if start != len {
                    return status(StatusCode::RANGE_NOT_SATISFIABLE);
                }
                let data = s.uploads.get_mut(&id).unwrap();
                data.extend_from_slice(&body);
                let r = range_of(data.len());
                return (
                    StatusCode::ACCEPTED,
                    [(header::LOCATION, location), (header::RANGE, r)],
                )
                    .into_response();
            }
            if m == Method::GET {
                return (
                    StatusCode::NO_CONTENT,
                    [(header::LOCATION, location), (header::RANGE, range_of(len))],
                )
                    .into_response();
            }
            if m == Method::PUT {
                let mut data = s.uploads.remove(&id).unwrap();
                data.extend_from_slice(&body);
                let digest = req
                    .query
                    .strip_prefix("digest=")
                    .unwrap_or("")
                    .replace("%3A", ":");
                if Digest::sha256(&data).to_string() != digest {
                    return (
                        StatusCode::BAD_REQUEST,
                        r#"{"errors":[{"code":"DIGEST_INVALID","message":"digest mismatch"}]}"#,
                    )
                        .into_response();
                }
                s.blobs.insert(digest.clone(), data);
                return (
                    StatusCode::CREATED,
                    [(header::LOCATION, format!("/v2/up/load/blobs/{digest}"))],
                )
                    .into_response();
            }
        }
        if m == Method::PUT && p.starts_with("/v2/up/load/manifests/") {
            let name = p.rsplit('/').next().unwrap_or("").to_owned();
            s.manifests.insert(name, body.to_vec());
            return (StatusCode::CREATED, [(header::LOCATION, p.to_owned())]).into_response();
        }
        status(StatusCode::NOT_FOUND)
    })
    .await;
    let client = test_client(|o| {
        o.monolithic_threshold = 64 * 1024;
        o.chunk_size = 100_000;
    });
    let store = MemoryStore::new();
    // A stored (not compressed) layer so the blob is big.
    let blob = noise(350_000, 9);
    let info = berth_layerstore::content::Ingester::ingest_bytes(&store, &blob).unwrap();
    let sample = sample_image(&store, "amd64", &[("f", b"small")]);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": sample.config,
        "layers": [berth_layerstore::image::new_descriptor(media::OCI_LAYER_TAR, &info.digest, info.size)],
    });
    let manifest = berth_layerstore::image::CanonicalBlob::new(media::OCI_MANIFEST, &manifest)
        .unwrap()
        .ingest(&store)
        .unwrap();
    let reference = format!("{}/up/load:v1", stub.addr).parse().unwrap();
    let counters = Arc::new(Counters::default());
    client
        .push(
            &store,
            &manifest,
            &reference,
            &PushOptions {
                progress: counters.clone(),
                ..PushOptions::default()
            },
        )
        .await
        .expect("push recovers from the 416");
    let s = state.lock().unwrap();
    assert_eq!(
        s.blobs.get(&info.digest.to_string()),
        Some(&blob),
        "the blob arrived whole"
    );
    assert!(s.refused_once);
    assert_eq!(
        Counters::get(&counters.chunks),
        4,
        "350 000 bytes in 100 000-byte chunks"
    );
    assert_eq!(
        s.manifests.get("v1").map(Vec::len),
        Some(manifest.size() as usize)
    );
}

/// The machine's host name, when it resolves to loopback only: a name the client does not
/// treat as loopback, though it reaches a server on 127.0.0.1.
fn loopback_alias(port: u16) -> String {
    use std::net::ToSocketAddrs;
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("read the host name")
        .trim()
        .to_owned();
    let addrs: Vec<_> = (name.as_str(), port)
        .to_socket_addrs()
        .unwrap_or_else(|e| {
            panic!("host name {name:?} does not resolve ({e}); this test needs it in /etc/hosts")
        })
        .collect();
    assert!(
        !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()),
        "host name {name:?} must resolve to loopback only for this test, got {addrs:?}"
    );
    name
}

#[tokio::test]
async fn insecure_registry_falls_back_from_https_to_http() {
    let store = MemoryStore::new();
    let sample = sample_image(&store, "amd64", &[("f", b"plain http")]);
    let manifest = Bytes::from(
        store
            .read_all(&descriptor_digest(&sample.manifest).unwrap())
            .unwrap(),
    );
    let blobs = blobs_of(&store, &sample);
    let stub = Stub::start(move |req, _| {
        let p = req.path.as_str();
        if p == "/v2/" {
            return status(StatusCode::OK);
        }
        if p.ends_with("/manifests/latest") {
            return manifest_response(&manifest);
        }
        if let Some(d) = p.strip_prefix("/v2/plain/app/blobs/")
            && let Some(b) = blobs.get(d)
        {
            return b.clone().into_response();
        }
        status(StatusCode::NOT_FOUND)
    })
    .await;
    let port: u16 = stub.addr.rsplit(':').next().unwrap().parse().unwrap();
    let host = format!("{}:{port}", loopback_alias(port));
    let reference: berth_registry::reference::Reference =
        format!("{host}/plain/app:latest").parse().unwrap();
    assert!(!reference.is_loopback());

    // Not declared insecure: HTTPS only, which a plain HTTP server cannot answer.
    let strict = test_client(|_| {});
    let err = strict
        .pull(&reference, &MemoryStore::new(), &PullOptions::default())
        .await
        .expect_err("no TLS, no pull");
    assert!(matches!(err, ClientError::Http { .. }), "{err:?}");
    assert!(err.to_string().contains("https://"), "{err}");
    assert!(
        stub.seen().is_empty(),
        "no plain HTTP request was made: {:?}",
        stub.seen()
    );

    // Declared insecure: HTTPS fails, plain HTTP works.
    let lenient = test_client(|o| o.insecure_registries = vec![host.clone()]);
    let fresh = MemoryStore::new();
    let pulled = lenient
        .pull(&reference, &fresh, &PullOptions::default())
        .await
        .expect("pull over plain HTTP");
    assert_complete(&fresh, &pulled.root);
}

#[tokio::test]
async fn basic_auth_challenge() {
    let store = MemoryStore::new();
    let sample = sample_image(&store, "amd64", &[("f", b"basic")]);
    let manifest = Bytes::from(
        store
            .read_all(&descriptor_digest(&sample.manifest).unwrap())
            .unwrap(),
    );
    let blobs = blobs_of(&store, &sample);
    let stub = Stub::start(move |req, _| {
        let auth = req
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        // base64("alice:secret")
        if auth != Some("Basic YWxpY2U6c2VjcmV0") {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, r#"Basic realm="stub""#)],
            )
                .into_response();
        }
        let p = req.path.as_str();
        if p == "/v2/" {
            return status(StatusCode::OK);
        }
        if p.ends_with("/manifests/latest") {
            return manifest_response(&manifest);
        }
        if let Some(d) = p.strip_prefix("/v2/basic/app/blobs/")
            && let Some(b) = blobs.get(d)
        {
            return b.clone().into_response();
        }
        status(StatusCode::NOT_FOUND)
    })
    .await;
    let reference: berth_registry::reference::Reference =
        format!("{}/basic/app:latest", stub.addr).parse().unwrap();
    let client = test_client(|o| {
        o.credentials = vec![(
            stub.addr.clone(),
            Credential::Basic {
                username: "alice".into(),
                password: "secret".into(),
            },
        )];
    });
    client
        .pull(&reference, &MemoryStore::new(), &PullOptions::default())
        .await
        .expect("pull with Basic auth");

    let anonymous = test_client(|_| {});
    let err = anonymous
        .pull(&reference, &MemoryStore::new(), &PullOptions::default())
        .await
        .expect_err("no credentials");
    assert_eq!(err.status(), Some(401), "{err}");
}

/// What the session-only stub of `single_post_falls_back_to_the_session_the_registry_opens`
/// holds.
#[derive(Default)]
struct SessionOnly {
    next_id: u32,
    single_posts: u32,
    sessions: std::collections::HashSet<String>,
    blobs: HashMap<String, Vec<u8>>,
}

#[tokio::test]
async fn single_post_falls_back_to_the_session_the_registry_opens() {
    const UPLOADS: &str = "/v2/no/single/blobs/uploads/";
    let state: Arc<Mutex<SessionOnly>> = Arc::default();
    let st = state.clone();
    let stub = Stub::start(move |req, body| {
        let mut s = st.lock().unwrap();
        let p = req.path.as_str();
        let m = &req.method;
        if p == "/v2/" {
            return status(StatusCode::OK);
        }
        if m == Method::HEAD && p.contains("/blobs/") {
            return status(StatusCode::NOT_FOUND);
        }
        if m == Method::POST && p == UPLOADS {
            // As distribution does: the digest and the body are ignored, a session opens.
            if req.query.starts_with("digest=") {
                s.single_posts += 1;
            }
            s.next_id += 1;
            let id = format!("s{}", s.next_id);
            s.sessions.insert(id.clone());
            return (
                StatusCode::ACCEPTED,
                [
                    (header::LOCATION, format!("{UPLOADS}{id}")),
                    (header::RANGE, "0-0".to_owned()),
                ],
            )
                .into_response();
        }
        if m == Method::PUT
            && let Some(id) = p.strip_prefix(UPLOADS)
        {
            if !s.sessions.remove(id) {
                return status(StatusCode::NOT_FOUND);
            }
            let digest = req
                .query
                .strip_prefix("digest=")
                .unwrap_or("")
                .replace("%3A", ":");
            if Digest::sha256(&body).to_string() != digest {
                return status(StatusCode::BAD_REQUEST);
            }
            s.blobs.insert(digest.clone(), body.to_vec());
            return (
                StatusCode::CREATED,
                [(header::LOCATION, format!("/v2/no/single/blobs/{digest}"))],
            )
                .into_response();
        }
        if m == Method::PUT && p.starts_with("/v2/no/single/manifests/") {
            return (StatusCode::CREATED, [(header::LOCATION, p.to_owned())]).into_response();
        }
        status(StatusCode::NOT_FOUND)
    })
    .await;
    // One blob at a time, so that the first one finds out for the others.
    let client = test_client(|o| o.max_concurrent = 1);
    let store = MemoryStore::new();
    let sample = sample_image(&store, "amd64", &[("a", b"first"), ("b", b"second")]);
    let reference = format!("{}/no/single:v1", stub.addr).parse().unwrap();
    let counters = Arc::new(Counters::default());
    client
        .push(
            &store,
            &sample.manifest,
            &reference,
            &PushOptions {
                progress: counters.clone(),
                ..PushOptions::default()
            },
        )
        .await
        .expect("push falls back to POST then PUT");
    let s = state.lock().unwrap();
    assert_eq!(s.single_posts, 1, "the registry's answer is remembered");
    assert!(s.sessions.is_empty(), "every session was completed");
    let blobs: Vec<_> = std::iter::once(&sample.config)
        .chain(&sample.layers)
        .collect();
    for d in &blobs {
        let digest = descriptor_digest(d).unwrap();
        assert_eq!(
            s.blobs.get(&digest.to_string()),
            Some(&store.read_all(&digest).unwrap()),
            "{digest} arrived whole"
        );
    }
    assert_eq!(Counters::get(&counters.uploaded_monolithic), 3);
    assert_eq!(
        Counters::get(&counters.bytes),
        blobs.iter().map(|d| d.size()).sum::<u64>(),
        "bytes of a refused request are not counted"
    );
    // The session the refused request opened carried its blob: one POST per blob.
    let posts = stub
        .seen()
        .iter()
        .filter(|r| r.method == Method::POST)
        .count();
    assert_eq!(posts, 3);
}

#[tokio::test]
async fn pull_does_not_fetch_non_distributable_layers() {
    let store = MemoryStore::new();
    let sample = sample_image(&store, "amd64", &[("f", b"distributable")]);
    let blobs = blobs_of(&store, &sample);
    let foreign = Digest::sha256(b"a layer that lives elsewhere");
    let nondist = Digest::sha256(b"another layer that lives elsewhere");
    let layer = &sample.layers[0];
    let manifest = |manifest_type: &str,
                    config_type: &str,
                    layer_type: &str,
                    far: (&str, &Digest)| {
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": manifest_type,
                "config": {
                    "mediaType": config_type,
                    "digest": sample.config.digest().to_string(),
                    "size": sample.config.size(),
                },
                "layers": [
                    {"mediaType": layer_type, "digest": layer.digest().to_string(), "size": layer.size()},
                    {"mediaType": far.0, "digest": far.1.to_string(), "size": 1234,
                     "urls": ["http://foreign.invalid/layer"]},
                ],
            }))
            .unwrap(),
        )
    };
    let docker = manifest(
        media::DOCKER_MANIFEST,
        media::DOCKER_CONFIG,
        media::DOCKER_LAYER_GZIP,
        (media::DOCKER_LAYER_FOREIGN_GZIP, &foreign),
    );
    let oci = manifest(
        media::OCI_MANIFEST,
        media::OCI_CONFIG,
        media::OCI_LAYER_GZIP,
        (media::OCI_LAYER_NONDIST_GZIP, &nondist),
    );
    let (d, o) = (docker.clone(), oci.clone());
    let stub = Stub::start(move |req, _| {
        let p = req.path.as_str();
        if p == "/v2/" {
            return status(StatusCode::OK);
        }
        let (media_type, bytes) = if p.ends_with("/manifests/docker") {
            (media::DOCKER_MANIFEST, &d)
        } else if p.ends_with("/manifests/oci") {
            (media::OCI_MANIFEST, &o)
        } else if let Some(digest) = p.strip_prefix("/v2/far/away/blobs/")
            && let Some(b) = blobs.get(digest)
        {
            return b.clone().into_response();
        } else {
            return status(StatusCode::NOT_FOUND);
        };
        (
            [
                (header::CONTENT_TYPE, media_type.to_owned()),
                (
                    header::HeaderName::from_static("docker-content-digest"),
                    Digest::sha256(bytes).to_string(),
                ),
            ],
            bytes.clone(),
        )
            .into_response()
    })
    .await;
    let client = test_client(|_| {});
    for (tag, bytes, far) in [("docker", &docker, &foreign), ("oci", &oci, &nondist)] {
        let into = MemoryStore::new();
        let reference = format!("{}/far/away:{tag}", stub.addr).parse().unwrap();
        let pulled = client
            .pull(&reference, &into, &PullOptions::default())
            .await
            .unwrap_or_else(|e| panic!("pull {tag}: {e}"));
        assert_eq!(pulled.blobs.len(), 2, "{tag}: config and layer only");
        let root = descriptor_digest(&pulled.root).unwrap();
        assert_eq!(root, Digest::sha256(bytes));
        assert_eq!(
            into.read_all(&root).unwrap(),
            bytes.to_vec(),
            "{tag}: kept as is"
        );
        assert!(!into.exists(far).unwrap());
        assert_eq!(into.len(), 3, "{tag}: manifest, config and layer");
    }
    let asked: Vec<String> = stub.seen().into_iter().map(|s| s.path).collect();
    for far in [&foreign, &nondist] {
        assert!(
            !asked.iter().any(|p| p.contains(far.hex())),
            "{far} was requested: {asked:?}"
        );
    }
}
