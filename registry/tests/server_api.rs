//! The registry server's HTTP API, driven in process with `tower::ServiceExt::oneshot`: every
//! endpoint of the distribution spec and the bad inputs each must refuse.

use std::collections::BTreeSet;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use berth_layerstore::{Algorithm, Digest, media};
use berth_registry::server::{AppState, Config, app};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A registry over a temporary root.
struct Registry {
    app: Router,
    state: AppState,
    dir: std::sync::Arc<tempfile::TempDir>,
}

/// A response, read whole.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn headers_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The error codes of a spec error body.
    fn codes(&self) -> Vec<String> {
        self.json()["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("not an error body: {:?}", self.body))
            .iter()
            .map(|e| e["code"].as_str().unwrap().to_owned())
            .collect()
    }

    fn expect(self, status: StatusCode) -> Reply {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }

    fn expect_error(self, status: StatusCode, code: &str) -> Reply {
        let reply = self.expect(status);
        assert_eq!(reply.codes(), vec![code.to_owned()]);
        reply
    }

    fn location(&self) -> String {
        self.header("location").expect("Location header").to_owned()
    }
}

impl Registry {
    fn new() -> Registry {
        Registry::with_config(Config::default())
    }

    fn with_config(config: Config) -> Registry {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        let state = AppState::open(dir.path(), config).unwrap();
        Registry {
            app: app(state.clone()),
            state,
            dir,
        }
    }

    /// A second server over the same root, as after a restart.
    fn reopen(&self) -> Registry {
        let dir = self.dir.clone();
        let state = AppState::open(dir.path(), Config::default()).unwrap();
        Registry {
            app: app(state.clone()),
            state,
            dir,
        }
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(body.into()).unwrap()).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, &[], Body::empty()).await
    }

    async fn head(&self, uri: &str) -> Reply {
        self.call(Method::HEAD, uri, &[], Body::empty()).await
    }

    /// Monolithic `POST ?digest=`.
    async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let digest = Digest::sha256(data);
        let reply = self
            .call(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                &[("content-type", "application/octet-stream")],
                data.to_vec(),
            )
            .await
            .expect(StatusCode::CREATED);
        assert_eq!(
            reply.header("docker-content-digest"),
            Some(&*digest.to_string())
        );
        assert_eq!(reply.location(), format!("/v2/{repo}/blobs/{digest}"));
        digest
    }

    /// `POST` for a new session; returns its location.
    async fn start_upload(&self, repo: &str) -> String {
        let reply = self
            .call(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[("content-length", "0")],
                Body::empty(),
            )
            .await
            .expect(StatusCode::ACCEPTED);
        assert_eq!(reply.header("range"), Some("0-0"));
        assert!(reply.header("docker-upload-uuid").is_some());
        reply.location()
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Reply {
        self.call(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            bytes.to_vec(),
        )
        .await
    }

    /// Pushes a config and one layer, then an OCI manifest for them under `tag`. Returns the
    /// manifest's bytes and digest.
    async fn push_image(&self, repo: &str, tag: &str, seed: &str) -> (Vec<u8>, Digest) {
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}\"}}");
        let layer = format!("layer of {seed}");
        let c = self.push_blob(repo, config.as_bytes()).await;
        let l = self.push_blob(repo, layer.as_bytes()).await;
        let manifest = oci_manifest(
            (media::OCI_CONFIG, &c, config.len()),
            &[(media::OCI_LAYER_GZIP, &l, layer.len())],
            None,
            None,
        );
        self.put_manifest(repo, tag, media::OCI_MANIFEST, &manifest)
            .await
            .expect(StatusCode::CREATED);
        let digest = Digest::sha256(&manifest);
        (manifest, digest)
    }
}

fn descriptor(media_type: &str, digest: &Digest, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

fn oci_manifest(
    config: (&str, &Digest, usize),
    layers: &[(&str, &Digest, usize)],
    subject: Option<(&Digest, usize)>,
    artifact_type: Option<&str>,
) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": descriptor(config.0, config.1, config.2),
        "layers": layers.iter().map(|(t, d, s)| descriptor(t, d, *s)).collect::<Vec<_>>(),
    });
    if let Some((d, s)) = subject {
        m["subject"] = descriptor(media::OCI_MANIFEST, d, s);
    }
    if let Some(t) = artifact_type {
        m["artifactType"] = json!(t);
        m["annotations"] = json!({"org.example.kind": t});
    }
    serde_json::to_vec(&m).unwrap()
}

fn index(media_type: &str, children: &[(&str, &Digest, usize, &str)]) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(t, d, s, arch)| {
            let mut v = descriptor(t, d, *s);
            v["platform"] = json!({"architecture": arch, "os": "linux"});
            v
        })
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": manifests,
    }))
    .unwrap()
}

fn docker_manifest(
    config: &Digest,
    config_size: usize,
    layer: &Digest,
    layer_size: usize,
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::DOCKER_MANIFEST,
        "config": descriptor(media::DOCKER_CONFIG, config, config_size),
        "layers": [descriptor(media::DOCKER_LAYER_GZIP, layer, layer_size)],
    }))
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Base, routing and names
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn base_endpoint_and_routing() {
    let r = Registry::new();
    for uri in ["/v2/", "/v2"] {
        let reply = r.get(uri).await.expect(StatusCode::OK);
        assert_eq!(
            reply.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
        assert_eq!(reply.json(), json!({}));
    }
    r.get("/healthz").await.expect(StatusCode::OK);
    let reply = r
        .get("/nope")
        .await
        .expect_error(StatusCode::NOT_FOUND, "UNSUPPORTED");
    assert_eq!(
        reply.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    r.get("/v2/a/b")
        .await
        .expect_error(StatusCode::NOT_FOUND, "UNSUPPORTED");
    r.call(Method::POST, "/v2/a/tags/list", &[], Body::empty())
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");
    r.call(Method::DELETE, "/v2/", &[], Body::empty())
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");
}

#[tokio::test]
async fn invalid_names_are_refused() {
    let r = Registry::new();
    let d = Digest::sha256(b"x");
    for name in [
        "a/../b", "..", "Upper", "a/B", "a//b", "a/", "-a", "a..b", "a:b",
    ] {
        for uri in [
            format!("/v2/{name}/blobs/{d}"),
            format!("/v2/{name}/manifests/latest"),
            format!("/v2/{name}/tags/list"),
        ] {
            r.get(&uri)
                .await
                .expect_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
        }
        r.call(
            Method::POST,
            &format!("/v2/{name}/blobs/uploads/"),
            &[],
            Body::empty(),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
    }
    r.get(&format!("/v2/{}/tags/list", "a".repeat(256)))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
}

#[tokio::test]
async fn invalid_digests_are_refused() {
    let r = Registry::new();
    for bad in [
        "sha256:abc",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "nothing",
    ] {
        r.get(&format!("/v2/a/blobs/{bad}"))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
        r.call(
            Method::POST,
            &format!("/v2/a/blobs/uploads/?digest={bad}"),
            &[],
            "data",
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
        r.get(&format!("/v2/a/referrers/{bad}"))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    }
    r.get("/v2/a/manifests/sha256:abc")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.get("/v2/a/manifests/.bad")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "TAG_INVALID");
    r.call(
        Method::POST,
        "/v2/a/blobs/uploads/?digest-algorithm=md5",
        &[],
        Body::empty(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    // Nothing was stored along the way.
    assert_eq!(
        r.get("/v2/_catalog").await.json(),
        json!({"repositories": []})
    );
}

// ---------------------------------------------------------------------------------------------
// Blob uploads
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn monolithic_post_and_pull() {
    let r = Registry::new();
    let data = b"hello, registry".to_vec();
    let d = r.push_blob("lib/hello", &data).await;
    let reply = r
        .get(&format!("/v2/lib/hello/blobs/{d}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply.body, data);
    assert_eq!(reply.header("docker-content-digest"), Some(&*d.to_string()));
    assert_eq!(reply.header("content-length"), Some("15"));
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    let reply = r
        .head(&format!("/v2/lib/hello/blobs/{d}"))
        .await
        .expect(StatusCode::OK);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("content-length"), Some("15"));
    assert_eq!(reply.header("docker-content-digest"), Some(&*d.to_string()));

    // The empty blob works too.
    r.push_blob("lib/hello", b"").await;
}

#[tokio::test]
async fn post_then_put() {
    let r = Registry::new();
    let loc = r.start_upload("a").await;
    let data = vec![7u8; 100_000];
    let d = Digest::sha256(&data);
    let reply = r
        .call(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[("content-type", "application/octet-stream")],
            data.clone(),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(reply.location(), format!("/v2/a/blobs/{d}"));
    assert_eq!(r.get(&reply.location()).await.body, data);
    // The session is gone.
    r.get(&loc)
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn streamed_patch_then_put() {
    let r = Registry::new();
    let loc = r.start_upload("a/b").await;
    // What docker push sends: a PATCH without Content-Range, in several frames. Their sizes
    // make the server batch small frames, pass a large one as it is, add a large one to a
    // batch under way, and end with a short batch.
    let sizes = [[32 * 1024; 9].as_slice(), &[300_000, 10_000, 400_000, 7]].concat();
    let data: Vec<u8> = (0..sizes.iter().sum::<usize>() as u32)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut rest = data.as_slice();
    let frames: Vec<Result<Bytes, std::io::Error>> = sizes
        .iter()
        .map(|&n| {
            let (frame, tail) = rest.split_at(n);
            rest = tail;
            Ok(Bytes::copy_from_slice(frame))
        })
        .collect();
    let last = data.len() - 1;
    let reply = r
        .call(
            Method::PATCH,
            &loc,
            &[("content-type", "application/octet-stream")],
            Body::from_stream(futures_util::stream::iter(frames)),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(reply.header("range"), Some(format!("0-{last}").as_str()));
    let loc = reply.location();
    let d = Digest::sha256(&data);
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[("content-length", "0")],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(r.get(&format!("/v2/a/b/blobs/{d}")).await.body, data);
}

#[tokio::test]
async fn chunked_upload_with_status_and_out_of_order_chunk() {
    let r = Registry::new();
    let loc = r.start_upload("a").await;
    let data: Vec<u8> = (0..30u8).collect();
    let chunk = |start: usize, end: usize| {
        let range = format!("{start}-{}", end - 1);
        (range, data[start..end].to_vec())
    };

    let (range, body) = chunk(0, 10);
    let reply = r
        .call(
            Method::PATCH,
            &loc,
            &[("content-range", &range), ("content-length", "10")],
            body,
        )
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(reply.header("range"), Some("0-9"));

    let status = r.get(&loc).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), Some("0-9"));
    assert_eq!(status.location(), loc);

    // Out of order: skips bytes 10..20.
    let (range, body) = chunk(20, 30);
    let reply = r
        .call(Method::PATCH, &loc, &[("content-range", &range)], body)
        .await
        .expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID");
    assert_eq!(reply.header("range"), Some("0-9"));
    assert_eq!(reply.location(), loc);
    // Overlapping, and malformed.
    let (_, body) = chunk(5, 15);
    r.call(Method::PATCH, &loc, &[("content-range", "5-14")], body)
        .await
        .expect(StatusCode::RANGE_NOT_SATISFIABLE);
    r.call(Method::PATCH, &loc, &[("content-range", "x-y")], "z")
        .await
        .expect(StatusCode::RANGE_NOT_SATISFIABLE);

    let (range, body) = chunk(10, 20);
    r.call(Method::PATCH, &loc, &[("content-range", &range)], body)
        .await
        .expect(StatusCode::ACCEPTED);
    // The last chunk comes with the closing PUT.
    let d = Digest::sha256(&data);
    let (range, body) = chunk(20, 30);
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[("content-range", &range), ("content-length", "10")],
        body,
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(r.get(&format!("/v2/a/blobs/{d}")).await.body, data);
}

#[tokio::test]
async fn sha512_uploads() {
    let r = Registry::new();
    let data = b"sha512 content".to_vec();
    let d = Digest::of(Algorithm::Sha512, &data);
    // Monolithic.
    r.call(
        Method::POST,
        &format!("/v2/a/blobs/uploads/?digest={d}"),
        &[],
        data.clone(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(r.get(&format!("/v2/a/blobs/{d}")).await.body, data);
    // Chunked, announcing the algorithm.
    let reply = r
        .call(
            Method::POST,
            "/v2/b/blobs/uploads/?digest-algorithm=sha512",
            &[],
            Body::empty(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    let loc = reply.location();
    r.call(Method::PATCH, &loc, &[], data.clone())
        .await
        .expect(StatusCode::ACCEPTED);
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);
    // A sha512 digest on a session that hashed sha256 is verified too.
    let loc = r.start_upload("c").await;
    r.call(Method::PATCH, &loc, &[], data.clone())
        .await
        .expect(StatusCode::ACCEPTED);
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);
    r.head(&format!("/v2/c/blobs/{d}"))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn wrong_digest_stores_nothing() {
    let r = Registry::new();
    let wrong = Digest::sha256(b"something else");
    r.call(
        Method::POST,
        &format!("/v2/a/blobs/uploads/?digest={wrong}"),
        &[],
        "actual content",
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");

    let loc = r.start_upload("a").await;
    r.call(Method::PATCH, &loc, &[], "actual content")
        .await
        .expect(StatusCode::ACCEPTED);
    r.call(
        Method::PUT,
        &format!("{loc}?digest={wrong}"),
        &[],
        Body::empty(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    // The failed session is gone, and neither digest is anywhere.
    r.get(&loc)
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    for d in [wrong, Digest::sha256(b"actual content")] {
        r.head(&format!("/v2/a/blobs/{d}"))
            .await
            .expect(StatusCode::NOT_FOUND);
        assert_eq!(r.state.storage().blobs.stat(&d).unwrap(), None);
    }
    assert!(
        std::fs::read_dir(r.dir.path().join("uploads"))
            .unwrap()
            .next()
            .is_none()
    );

    // A PUT without a digest does not complete the upload.
    let loc = r.start_upload("a").await;
    r.call(Method::PUT, &loc, &[], "x")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.get(&loc).await.expect(StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn truncated_and_failed_requests_leave_the_upload_unchanged() {
    let r = Registry::new();
    let loc = r.start_upload("a").await;
    r.call(Method::PATCH, &loc, &[("content-range", "0-4")], "01234")
        .await
        .expect(StatusCode::ACCEPTED);
    // A chunk shorter than its Content-Range.
    r.call(Method::PATCH, &loc, &[("content-range", "5-14")], "56789")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    // A chunk longer than its Content-Range.
    r.call(Method::PATCH, &loc, &[("content-range", "5-6")], "56789")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    // A body that breaks off midway (the client went away).
    let frames: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"56789")),
        Err(std::io::Error::other("connection reset")),
    ];
    r.call(
        Method::PATCH,
        &loc,
        &[],
        Body::from_stream(futures_util::stream::iter(frames)),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID");
    let status = r.get(&loc).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), Some("0-4"));

    // The upload carries on from its last acknowledged byte.
    r.call(Method::PATCH, &loc, &[("content-range", "5-9")], "56789")
        .await
        .expect(StatusCode::ACCEPTED);
    let d = Digest::sha256(b"0123456789");
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(r.get(&format!("/v2/a/blobs/{d}")).await.body, "0123456789");
}

#[tokio::test]
async fn unknown_and_foreign_upload_ids() {
    let r = Registry::new();
    for id in [
        "6f1f5b8e-58c4-4d4e-9a8b-1b2a3c4d5e6f",
        "not-a-uuid",
        "..",
        "%2e%2e",
    ] {
        let uri = format!("/v2/a/blobs/uploads/{id}");
        for method in [Method::GET, Method::PATCH, Method::PUT, Method::DELETE] {
            let uri = if method == Method::PUT {
                format!("{uri}?digest={}", Digest::sha256(b""))
            } else {
                uri.clone()
            };
            let reply = r.call(method.clone(), &uri, &[], Body::empty()).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {uri}");
            assert_eq!(reply.codes(), ["BLOB_UPLOAD_UNKNOWN"]);
        }
    }
    // A session of repository `a` is unknown to repository `b`.
    let loc = r.start_upload("a").await;
    let foreign = loc.replacen("/v2/a/", "/v2/b/", 1);
    r.get(&foreign)
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.get(&loc).await.expect(StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn cancel_upload() {
    let r = Registry::new();
    let loc = r.start_upload("a").await;
    r.call(Method::PATCH, &loc, &[], "partial")
        .await
        .expect(StatusCode::ACCEPTED);
    r.call(
        Method::DELETE,
        &loc,
        &[("content-length", "0")],
        Body::empty(),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    r.get(&loc)
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.call(Method::DELETE, &loc, &[], Body::empty())
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn uploads_resume_after_a_restart() {
    let r = Registry::new();
    let loc = r.start_upload("a").await;
    r.call(Method::PATCH, &loc, &[], "first half, ")
        .await
        .expect(StatusCode::ACCEPTED);
    let r2 = r.reopen();
    drop(r);
    let status = r2.get(&loc).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), Some("0-11"));
    r2.call(
        Method::PATCH,
        &loc,
        &[("content-range", "12-22")],
        "second half",
    )
    .await
    .expect(StatusCode::ACCEPTED);
    let d = Digest::sha256(b"first half, second half");
    r2.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(
        r2.get(&format!("/v2/a/blobs/{d}")).await.body,
        "first half, second half"
    );
}

#[tokio::test]
async fn expired_uploads_are_removed() {
    let r = Registry::with_config(Config {
        upload_expiry_secs: 0,
        ..Config::default()
    });
    let loc = r.start_upload("a").await;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(r.state.expire_uploads().await.unwrap(), 1);
    r.get(&loc)
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
}

// ---------------------------------------------------------------------------------------------
// Blobs: visibility, mounts, ranges, deletion, concurrency
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn blobs_are_visible_only_where_pushed_or_mounted() {
    let r = Registry::new();
    let d = r.push_blob("a", b"shared bytes").await;
    r.head(&format!("/v2/a/blobs/{d}"))
        .await
        .expect(StatusCode::OK);
    r.head(&format!("/v2/b/blobs/{d}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    r.get(&format!("/v2/b/blobs/{d}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");

    // Mount from a repository that holds it: 201.
    let reply = r
        .call(
            Method::POST,
            &format!("/v2/b/blobs/uploads/?mount={d}&from=a"),
            &[("content-length", "0")],
            Body::empty(),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(reply.location(), format!("/v2/b/blobs/{d}"));
    assert_eq!(reply.header("docker-content-digest"), Some(&*d.to_string()));
    assert_eq!(
        r.get(&format!("/v2/b/blobs/{d}")).await.body,
        "shared bytes"
    );

    // From a repository that does not hold it, or without `from`: 202 and a session.
    for query in [
        format!("mount={d}&from=c"),
        format!("mount={d}"),
        "mount=bad&from=a".to_owned(),
    ] {
        let reply = r
            .call(
                Method::POST,
                &format!("/v2/c/blobs/uploads/?{query}"),
                &[],
                Body::empty(),
            )
            .await
            .expect(StatusCode::ACCEPTED);
        r.get(&reply.location())
            .await
            .expect(StatusCode::NO_CONTENT);
        r.head(&format!("/v2/c/blobs/{d}"))
            .await
            .expect(StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn range_requests() {
    let r = Registry::new();
    let data: Vec<u8> = (0..100u8).collect();
    let d = r.push_blob("a", &data).await;
    let uri = format!("/v2/a/blobs/{d}");
    let reply = r
        .call(
            Method::GET,
            &uri,
            &[("range", "bytes=10-19")],
            Body::empty(),
        )
        .await
        .expect(StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.body, data[10..20]);
    assert_eq!(reply.header("content-range"), Some("bytes 10-19/100"));
    assert_eq!(reply.header("content-length"), Some("10"));
    let reply = r
        .call(Method::GET, &uri, &[("range", "bytes=-5")], Body::empty())
        .await
        .expect(StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.body, data[95..]);
    let reply = r
        .call(Method::GET, &uri, &[("range", "bytes=90-")], Body::empty())
        .await
        .expect(StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.body, data[90..]);
    let reply = r
        .call(Method::GET, &uri, &[("range", "bytes=100-")], Body::empty())
        .await
        .expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID");
    assert_eq!(reply.header("content-range"), Some("bytes */100"));
    // Several ranges: the whole blob.
    let reply = r
        .call(
            Method::GET,
            &uri,
            &[("range", "bytes=0-1,5-6")],
            Body::empty(),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply.body, data);
}

#[tokio::test]
async fn large_blob_streams_through() {
    let r = Registry::new();
    let loc = r.start_upload("big").await;
    let chunk = vec![0x5au8; 1024 * 1024];
    let mut hasher = Algorithm::Sha256.hasher();
    let frames: Vec<Result<Bytes, std::io::Error>> = (0..24)
        .map(|_| {
            hasher.update(&chunk);
            Ok(Bytes::from(chunk.clone()))
        })
        .collect();
    let d = hasher.finish();
    r.call(
        Method::PATCH,
        &loc,
        &[],
        Body::from_stream(futures_util::stream::iter(frames)),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);
    let reply = r
        .get(&format!("/v2/big/blobs/{d}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply.body.len(), 24 * 1024 * 1024);
    assert_eq!(Digest::sha256(&reply.body), d);
}

/// The inode of a file, to tell a move from a copy.
fn inode(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .ino()
}

impl Registry {
    /// Where the content store keeps `digest`.
    fn blob_file(&self, digest: &Digest) -> std::path::PathBuf {
        let hex = digest.hex();
        self.dir
            .path()
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    /// The data file of the upload at `location`.
    fn upload_data(&self, location: &str) -> std::path::PathBuf {
        let id = location.rsplit('/').next().unwrap();
        self.dir.path().join("uploads").join(id).join("data")
    }

    /// Entries left in `uploads/` and `ingest/`.
    fn leftovers(&self) -> Vec<std::path::PathBuf> {
        ["uploads", "ingest"]
            .iter()
            .flat_map(|d| std::fs::read_dir(self.dir.path().join(d)).unwrap())
            .map(|e| e.unwrap().path())
            .collect()
    }
}

#[tokio::test]
async fn completing_an_upload_moves_its_data_file_into_the_blob_store() {
    let r = Registry::new();
    let data: Vec<u8> = (0..500_000u32).map(|i| (i % 241) as u8).collect();
    let d = Digest::sha256(&data);
    let loc = r.start_upload("a").await;
    let loc = r
        .call(Method::PATCH, &loc, &[], data.clone())
        .await
        .expect(StatusCode::ACCEPTED)
        .location();
    let received = inode(&r.upload_data(&loc));
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[("content-length", "0")],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);
    // The bytes received are the blob: renamed, not copied.
    let blob = r.blob_file(&d);
    assert_eq!(inode(&blob), received);
    assert!(std::fs::metadata(&blob).unwrap().permissions().readonly());
    assert_eq!(r.get(&format!("/v2/a/blobs/{d}")).await.body, data);
    assert!(r.leftovers().is_empty(), "{:?}", r.leftovers());

    // The same content uploaded again leaves the stored blob alone.
    let loc = r.start_upload("b").await;
    r.call(Method::PUT, &format!("{loc}?digest={d}"), &[], data.clone())
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(inode(&blob), received);
    assert_eq!(r.get(&format!("/v2/b/blobs/{d}")).await.body, data);
    assert!(r.leftovers().is_empty(), "{:?}", r.leftovers());

    // A monolithic POST leaves no session behind either, whether it succeeds or not.
    let small = r.push_blob("a", b"small and monolithic").await;
    assert_eq!(
        std::fs::read(r.blob_file(&small)).unwrap(),
        b"small and monolithic"
    );
    r.call(
        Method::POST,
        &format!("/v2/a/blobs/uploads/?digest={small}"),
        &[],
        "not what the digest says",
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    assert!(r.leftovers().is_empty(), "{:?}", r.leftovers());
}

#[tokio::test]
async fn an_upload_resumed_after_a_restart_completes_from_its_data_file() {
    let r = Registry::new();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 199) as u8).collect();
    let d = Digest::sha256(&data);
    let loc = r.start_upload("a").await;
    r.call(
        Method::PATCH,
        &loc,
        &[("content-range", "0-199999")],
        data[..200_000].to_vec(),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    // The restarted server has no running hash: it re-hashes the data file, then moves it.
    let r2 = r.reopen();
    drop(r);
    // A wrong digest is still refused, and stores nothing.
    let wrong = Digest::sha256(&data[..200_000]);
    let reply = r2
        .call(
            Method::PUT,
            &format!("{loc}?digest={wrong}"),
            &[("content-range", "200000-299999")],
            data[200_000..].to_vec(),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    assert!(reply.json()["errors"][0]["detail"]["digest"] == wrong.to_string());
    assert_eq!(r2.state.storage().blobs.stat(&d).unwrap(), None);
    assert!(r2.leftovers().is_empty(), "{:?}", r2.leftovers());

    let loc = r2.start_upload("a").await;
    r2.call(
        Method::PATCH,
        &loc,
        &[("content-range", "0-199999")],
        data[..200_000].to_vec(),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    let r3 = r2.reopen();
    drop(r2);
    let received = inode(&r3.upload_data(&loc));
    r3.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[("content-range", "200000-299999")],
        data[200_000..].to_vec(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(inode(&r3.blob_file(&d)), received);
    assert_eq!(r3.get(&format!("/v2/a/blobs/{d}")).await.body, data);
    assert!(r3.leftovers().is_empty(), "{:?}", r3.leftovers());
}

#[tokio::test]
async fn delete_blob() {
    let r = Registry::new();
    let d = r.push_blob("a", b"to delete").await;
    r.push_blob("b", b"to delete").await;
    r.call(
        Method::DELETE,
        &format!("/v2/a/blobs/{d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    r.head(&format!("/v2/a/blobs/{d}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    // Still in `b`.
    r.head(&format!("/v2/b/blobs/{d}"))
        .await
        .expect(StatusCode::OK);
    r.call(
        Method::DELETE,
        &format!("/v2/a/blobs/{d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_of_the_same_blob_and_tag() {
    let r = std::sync::Arc::new(Registry::new());
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 97) as u8).collect();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let r = r.clone();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            // Half monolithic, half POST/PATCH/PUT.
            if i % 2 == 0 {
                r.push_blob("same", &data).await;
            } else {
                let loc = r.start_upload("same").await;
                let loc = r
                    .call(Method::PATCH, &loc, &[], data.clone())
                    .await
                    .expect(StatusCode::ACCEPTED)
                    .location();
                r.call(
                    Method::PUT,
                    &format!("{loc}?digest={}", Digest::sha256(&data)),
                    &[],
                    Body::empty(),
                )
                .await
                .expect(StatusCode::CREATED);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let d = Digest::sha256(&data);
    assert_eq!(r.get(&format!("/v2/same/blobs/{d}")).await.body, data);

    // Many manifests pushed to one tag at once: all succeed, the tag ends on one of them.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            r.push_image("same", "latest", &format!("image {i}"))
                .await
                .1
        }));
    }
    let mut digests = BTreeSet::new();
    for t in tasks {
        digests.insert(t.await.unwrap().to_string());
    }
    let reply = r
        .get("/v2/same/manifests/latest")
        .await
        .expect(StatusCode::OK);
    let winner = reply.header("docker-content-digest").unwrap().to_owned();
    assert!(digests.contains(&winner));
    assert_eq!(Digest::sha256(&reply.body).to_string(), winner);
    for d in &digests {
        r.head(&format!("/v2/same/manifests/{d}"))
            .await
            .expect(StatusCode::OK);
    }
    assert_eq!(
        r.get("/v2/same/tags/list").await.json(),
        json!({"name": "same", "tags": ["latest"]})
    );
    let (checked, problems) = berth_layerstore::content::fsck(
        &berth_layerstore::content::fs::FsStore::open(r.dir.path()).unwrap(),
    )
    .unwrap();
    assert!(checked > 0);
    assert!(problems.is_empty(), "{problems:?}");
}

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn manifest_push_pull_and_delete() {
    let r = Registry::new();
    let (bytes, d) = r.push_image("app", "v1", "one").await;
    for reference in ["v1".to_owned(), d.to_string()] {
        let reply = r
            .call(
                Method::GET,
                &format!("/v2/app/manifests/{reference}"),
                &[("accept", media::OCI_MANIFEST)],
                Body::empty(),
            )
            .await
            .expect(StatusCode::OK);
        assert_eq!(reply.body, bytes);
        assert_eq!(reply.header("content-type"), Some(media::OCI_MANIFEST));
        assert_eq!(reply.header("docker-content-digest"), Some(&*d.to_string()));
        let head = r
            .head(&format!("/v2/app/manifests/{reference}"))
            .await
            .expect(StatusCode::OK);
        assert!(head.body.is_empty());
        assert_eq!(
            head.header("content-length"),
            Some(&*bytes.len().to_string())
        );
        assert_eq!(head.header("docker-content-digest"), Some(&*d.to_string()));
    }
    r.get("/v2/app/manifests/v2")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    r.get("/v2/nothing/manifests/v1")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");

    // Pushing by digest, with extra tags.
    let reply = r
        .call(
            Method::PUT,
            &format!("/v2/app/manifests/{d}?tag=a&tag=b"),
            &[("content-type", media::OCI_MANIFEST)],
            bytes.clone(),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(reply.headers_all("oci-tag"), ["a", "b"]);
    assert_eq!(reply.location(), format!("/v2/app/manifests/{d}"));
    assert_eq!(
        r.get("/v2/app/tags/list").await.json()["tags"],
        json!(["a", "b", "v1"])
    );

    // Deleting a tag keeps the manifest; deleting the manifest drops its tags.
    r.call(Method::DELETE, "/v2/app/manifests/a", &[], Body::empty())
        .await
        .expect(StatusCode::ACCEPTED);
    r.get("/v2/app/manifests/a")
        .await
        .expect(StatusCode::NOT_FOUND);
    r.get("/v2/app/manifests/b").await.expect(StatusCode::OK);
    r.call(
        Method::DELETE,
        &format!("/v2/app/manifests/{d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    for reference in ["v1".to_owned(), "b".to_owned(), d.to_string()] {
        r.get(&format!("/v2/app/manifests/{reference}"))
            .await
            .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    }
    r.call(
        Method::DELETE,
        &format!("/v2/app/manifests/{d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    r.call(Method::DELETE, "/v2/app/manifests/gone", &[], Body::empty())
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn docker_manifests_and_negotiation() {
    let r = Registry::new();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let c = r.push_blob("d", config).await;
    let l = r.push_blob("d", b"layer").await;
    let m = docker_manifest(&c, config.len(), &l, 5);
    let md = Digest::sha256(&m);
    r.put_manifest("d", "amd64", media::DOCKER_MANIFEST, &m)
        .await
        .expect(StatusCode::CREATED);

    // The stored type comes back whatever the client accepts.
    for accept in [
        None,
        Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
        Some("application/json"),
        Some("*/*"),
        Some(media::DOCKER_MANIFEST),
    ] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let reply = r
            .call(
                Method::GET,
                "/v2/d/manifests/amd64",
                &headers,
                Body::empty(),
            )
            .await
            .expect(StatusCode::OK);
        assert_eq!(reply.header("content-type"), Some(media::DOCKER_MANIFEST));
        assert_eq!(reply.body, m);
    }

    // A manifest list over it, and an arm64 sibling.
    let m2 = docker_manifest(&c, config.len(), &l, 5)
        .into_iter()
        .chain(b" ".iter().copied())
        .collect::<Vec<u8>>();
    let md2 = Digest::sha256(&m2);
    r.put_manifest("d", &md2.to_string(), media::DOCKER_MANIFEST, &m2)
        .await
        .expect(StatusCode::CREATED);
    let list = index(
        media::DOCKER_MANIFEST_LIST,
        &[
            (media::DOCKER_MANIFEST, &md2, m2.len(), "arm64"),
            (media::DOCKER_MANIFEST, &md, m.len(), "amd64"),
        ],
    );
    let ld = Digest::sha256(&list);
    r.put_manifest("d", "multi", media::DOCKER_MANIFEST_LIST, &list)
        .await
        .expect(StatusCode::CREATED);
    let full_accept = format!(
        "{}, {}",
        media::DOCKER_MANIFEST_LIST,
        media::DOCKER_MANIFEST
    );
    let reply = r
        .call(
            Method::GET,
            "/v2/d/manifests/multi",
            &[("accept", &full_accept)],
            Body::empty(),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some(media::DOCKER_MANIFEST_LIST)
    );
    assert_eq!(reply.body, list);
    // A client that cannot take lists gets the linux/amd64 manifest.
    let reply = r
        .call(
            Method::GET,
            "/v2/d/manifests/multi",
            &[("accept", media::DOCKER_MANIFEST)],
            Body::empty(),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(&*md.to_string())
    );
    assert_eq!(reply.body, m);
    // By digest the list itself is returned.
    let reply = r
        .call(
            Method::GET,
            &format!("/v2/d/manifests/{ld}"),
            &[("accept", media::DOCKER_MANIFEST)],
            Body::empty(),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply.body, list);

    // An OCI index whose children are missing.
    let missing = Digest::sha256(b"no such manifest");
    let bad_index = index(
        media::OCI_INDEX,
        &[
            (media::OCI_MANIFEST, &missing, 10, "amd64"),
            (media::DOCKER_MANIFEST, &md, m.len(), "arm64"),
        ],
    );
    let reply = r
        .put_manifest("d", "bad", media::OCI_INDEX, &bad_index)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        reply.json()["errors"][0]["detail"]["digest"],
        missing.to_string()
    );
    r.get("/v2/d/manifests/bad")
        .await
        .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn manifests_with_missing_references_are_refused() {
    let r = Registry::new();
    let config = b"{}";
    let c = r.push_blob("a", config).await;
    let missing1 = Digest::sha256(b"missing 1");
    let missing2 = Digest::sha256(b"missing 2");
    let m = oci_manifest(
        (media::OCI_CONFIG, &c, 2),
        &[
            (media::OCI_LAYER_GZIP, &missing1, 9),
            (media::OCI_LAYER_GZIP, &missing2, 9),
        ],
        None,
        None,
    );
    let reply = r
        .put_manifest("a", "v1", media::OCI_MANIFEST, &m)
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.codes(),
        ["MANIFEST_BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"]
    );
    let details: BTreeSet<String> = reply.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"]["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        details,
        BTreeSet::from([missing1.to_string(), missing2.to_string()])
    );
    r.get("/v2/a/manifests/v1")
        .await
        .expect(StatusCode::NOT_FOUND);

    // A layer pushed to another repository does not count.
    let elsewhere = r.push_blob("b", b"missing 1").await;
    assert_eq!(elsewhere, missing1);
    r.put_manifest("a", "v1", media::OCI_MANIFEST, &m)
        .await
        .expect(StatusCode::BAD_REQUEST);

    // Non-distributable layers need not be pushed.
    let m = oci_manifest(
        (media::OCI_CONFIG, &c, 2),
        &[(media::OCI_LAYER_NONDIST_GZIP, &missing2, 9)],
        None,
        None,
    );
    r.put_manifest("a", "foreign", media::OCI_MANIFEST, &m)
        .await
        .expect(StatusCode::CREATED);
    let dm = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::DOCKER_MANIFEST,
        "config": descriptor(media::DOCKER_CONFIG, &c, 2),
        "layers": [descriptor(media::DOCKER_LAYER_FOREIGN_GZIP, &missing2, 9)],
    }))
    .unwrap();
    r.put_manifest("a", "docker-foreign", media::DOCKER_MANIFEST, &dm)
        .await
        .expect(StatusCode::CREATED);
}

#[tokio::test]
async fn invalid_manifests_are_refused() {
    let r = Registry::with_config(Config {
        max_manifest_bytes: 4 * 1024 * 1024,
        ..Config::default()
    });
    let (bytes, _) = r.push_image("a", "ok", "x").await;

    for (body, content_type) in [
        (b"not json".to_vec(), media::OCI_MANIFEST),
        (b"[]".to_vec(), media::OCI_MANIFEST),
        (br#"{"schemaVersion":2}"#.to_vec(), media::OCI_MANIFEST),
        (
            br#"{"schemaVersion":1,"name":"a","tag":"t","fsLayers":[]}"#.to_vec(),
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        ),
        (
            br#"{"schemaVersion":3,"config":{},"layers":[]}"#.to_vec(),
            media::OCI_MANIFEST,
        ),
        // Content-Type and mediaType disagree.
        (bytes.clone(), media::DOCKER_MANIFEST),
        (bytes.clone(), media::OCI_INDEX),
        (bytes.clone(), "application/json"),
        // A descriptor with a digest that cannot be verified.
        (
            String::from_utf8(bytes.clone())
                .unwrap()
                .replacen("sha256:", "md5:", 1)
                .into_bytes(),
            media::OCI_MANIFEST,
        ),
    ] {
        let reply = r.put_manifest("a", "bad", content_type, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(reply.codes(), ["MANIFEST_INVALID"]);
    }
    r.get("/v2/a/manifests/bad")
        .await
        .expect(StatusCode::NOT_FOUND);

    // Content-Type parameters are ignored; a missing Content-Type falls back to mediaType.
    r.put_manifest(
        "a",
        "params",
        &format!("{}; charset=utf-8", media::OCI_MANIFEST),
        &bytes,
    )
    .await
    .expect(StatusCode::CREATED);
    r.call(Method::PUT, "/v2/a/manifests/untyped", &[], bytes.clone())
        .await
        .expect(StatusCode::CREATED);

    // Oversized, with and without a Content-Length.
    let mut big = bytes.clone();
    big.pop();
    big.extend(std::iter::repeat_n(b' ', 4 * 1024 * 1024));
    big.push(b'}');
    let length = big.len().to_string();
    r.call(
        Method::PUT,
        "/v2/a/manifests/big",
        &[
            ("content-type", media::OCI_MANIFEST),
            ("content-length", &length),
        ],
        big.clone(),
    )
    .await
    .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID");
    let frames: Vec<Result<Bytes, std::io::Error>> = big
        .chunks(512 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    r.call(
        Method::PUT,
        "/v2/a/manifests/big",
        &[("content-type", media::OCI_MANIFEST)],
        Body::from_stream(futures_util::stream::iter(frames)),
    )
    .await
    .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID");
    r.get("/v2/a/manifests/big")
        .await
        .expect(StatusCode::NOT_FOUND);

    // A push by digest must match the body.
    let wrong = Digest::sha256(b"other");
    r.put_manifest("a", &wrong.to_string(), media::OCI_MANIFEST, &bytes)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.get(&format!("/v2/a/manifests/{wrong}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    // Bad extra tags.
    let d = Digest::sha256(&bytes);
    r.call(
        Method::PUT,
        &format!("/v2/a/manifests/{d}?tag=-bad"),
        &[("content-type", media::OCI_MANIFEST)],
        bytes.clone(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "TAG_INVALID");
}

#[tokio::test]
async fn manifest_by_sha512_digest() {
    let r = Registry::new();
    let (bytes, _) = r.push_image("a", "v1", "x").await;
    let d = Digest::of(Algorithm::Sha512, &bytes);
    r.put_manifest("a", &d.to_string(), media::OCI_MANIFEST, &bytes)
        .await
        .expect(StatusCode::CREATED);
    let reply = r
        .get(&format!("/v2/a/manifests/{d}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply.body, bytes);
    assert_eq!(reply.header("docker-content-digest"), Some(&*d.to_string()));
}

// ---------------------------------------------------------------------------------------------
// Referrers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn referrers_with_filtering() {
    let r = Registry::new();
    let (subject_bytes, subject) = r.push_image("app", "v1", "subject").await;
    let empty = r.push_blob("app", b"{}").await;
    let payload = r.push_blob("app", b"sbom payload").await;

    // An artifact with artifactType, one without (its config type counts), and an index.
    let sbom = oci_manifest(
        (media::OCI_EMPTY, &empty, 2),
        &[("application/spdx+json", &payload, 12)],
        Some((&subject, subject_bytes.len())),
        Some("application/vnd.example.sbom"),
    );
    let reply = r
        .put_manifest(
            "app",
            &Digest::sha256(&sbom).to_string(),
            media::OCI_MANIFEST,
            &sbom,
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(reply.header("oci-subject"), Some(&*subject.to_string()));

    let sig_config = r.push_blob("app", b"{\"sig\":1}").await;
    let sig = oci_manifest(
        ("application/vnd.example.signature.config", &sig_config, 9),
        &[],
        Some((&subject, subject_bytes.len())),
        None,
    );
    r.put_manifest(
        "app",
        &Digest::sha256(&sig).to_string(),
        media::OCI_MANIFEST,
        &sig,
    )
    .await
    .expect(StatusCode::CREATED);

    let sbom_digest = Digest::sha256(&sbom);
    let idx = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [descriptor(media::OCI_MANIFEST, &sbom_digest, sbom.len())],
        "subject": descriptor(media::OCI_MANIFEST, &subject, subject_bytes.len()),
        "annotations": {"k": "v"},
    }))
    .unwrap();
    r.put_manifest(
        "app",
        &Digest::sha256(&idx).to_string(),
        media::OCI_INDEX,
        &idx,
    )
    .await
    .expect(StatusCode::CREATED);

    let reply = r
        .get(&format!("/v2/app/referrers/{subject}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some(media::OCI_INDEX));
    assert!(reply.header("oci-filters-applied").is_none());
    let body = reply.json();
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], media::OCI_INDEX);
    let entries = body["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    let find = |digest: &Digest| {
        entries
            .iter()
            .find(|e| e["digest"] == digest.to_string())
            .unwrap_or_else(|| panic!("{digest} missing from {entries:?}"))
            .clone()
    };
    let e = find(&sbom_digest);
    assert_eq!(e["artifactType"], "application/vnd.example.sbom");
    assert_eq!(e["mediaType"], media::OCI_MANIFEST);
    assert_eq!(e["size"], sbom.len());
    assert_eq!(
        e["annotations"]["org.example.kind"],
        "application/vnd.example.sbom"
    );
    let e = find(&Digest::sha256(&sig));
    assert_eq!(
        e["artifactType"],
        "application/vnd.example.signature.config"
    );
    let e = find(&Digest::sha256(&idx));
    assert!(e.get("artifactType").is_none());
    assert_eq!(e["mediaType"], media::OCI_INDEX);
    assert_eq!(e["annotations"]["k"], "v");

    let reply = r
        .get(&format!(
            "/v2/app/referrers/{subject}?artifactType=application%2Fvnd.example.sbom"
        ))
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply.header("oci-filters-applied"), Some("artifactType"));
    let entries = reply.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["digest"], sbom_digest.to_string());

    // Nothing refers to the sbom; unknown repositories answer 200 and an empty list too.
    for uri in [
        format!("/v2/app/referrers/{sbom_digest}"),
        format!("/v2/nowhere/referrers/{subject}"),
    ] {
        let reply = r.get(&uri).await.expect(StatusCode::OK);
        assert_eq!(reply.json()["manifests"], json!([]));
    }
    // Referrers go away with their manifest.
    r.call(
        Method::DELETE,
        &format!("/v2/app/manifests/{sbom_digest}"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    let reply = r.get(&format!("/v2/app/referrers/{subject}")).await;
    assert_eq!(reply.json()["manifests"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn subject_may_be_pushed_after_its_referrer() {
    let r = Registry::new();
    let empty = r.push_blob("a", b"{}").await;
    let future = Digest::sha256(b"not pushed yet");
    let m = oci_manifest(
        (media::OCI_EMPTY, &empty, 2),
        &[],
        Some((&future, 14)),
        Some("application/x-note"),
    );
    let reply = r
        .put_manifest(
            "a",
            &Digest::sha256(&m).to_string(),
            media::OCI_MANIFEST,
            &m,
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(reply.header("oci-subject"), Some(&*future.to_string()));
    let reply = r.get(&format!("/v2/a/referrers/{future}")).await;
    assert_eq!(reply.json()["manifests"].as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tag_pagination() {
    let r = Registry::new();
    let (bytes, d) = r.push_image("t", "a", "x").await;
    let tags = ["B", "a", "b", "c", "d", "e"];
    let query = tags
        .iter()
        .map(|t| format!("tag={t}"))
        .collect::<Vec<_>>()
        .join("&");
    r.call(
        Method::PUT,
        &format!("/v2/t/manifests/{d}?{query}"),
        &[("content-type", media::OCI_MANIFEST)],
        bytes,
    )
    .await
    .expect(StatusCode::CREATED);

    let all = r.get("/v2/t/tags/list").await.expect(StatusCode::OK);
    assert!(all.header("link").is_none());
    // ASCIIbetical: upper case first.
    assert_eq!(
        all.json(),
        json!({"name": "t", "tags": ["B", "a", "b", "c", "d", "e"]})
    );

    let mut seen = Vec::new();
    let mut uri = "/v2/t/tags/list?n=4".to_owned();
    loop {
        let reply = r.get(&uri).await.expect(StatusCode::OK);
        let page: Vec<String> = serde_json::from_value(reply.json()["tags"].clone()).unwrap();
        assert!(page.len() <= 4);
        seen.extend(page);
        match reply.header("link") {
            Some(link) => {
                assert!(link.ends_with(">; rel=\"next\""), "{link}");
                uri = link[1..link.find('>').unwrap()].to_owned();
            }
            None => break,
        }
    }
    assert_eq!(seen, tags);

    let reply = r
        .get("/v2/t/tags/list?n=2&last=b")
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply.json()["tags"], json!(["c", "d"]));
    assert_eq!(
        reply.header("link"),
        Some("</v2/t/tags/list?n=2&last=d>; rel=\"next\"")
    );
    let reply = r.get("/v2/t/tags/list?last=c").await.expect(StatusCode::OK);
    assert_eq!(reply.json()["tags"], json!(["d", "e"]));
    let reply = r.get("/v2/t/tags/list?n=0").await.expect(StatusCode::OK);
    assert_eq!(reply.json()["tags"], json!([]));
    assert!(reply.header("link").is_none());
    for bad in ["-1", "x", "1.5"] {
        r.get(&format!("/v2/t/tags/list?n={bad}"))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID");
    }
    r.get("/v2/unknown/tags/list")
        .await
        .expect_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    r.get("/v2/unknown/tags/list?n=0")
        .await
        .expect_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    // A repository with blobs but no tags lists none.
    r.push_blob("untagged", b"x").await;
    assert_eq!(
        r.get("/v2/untagged/tags/list").await.json(),
        json!({"name": "untagged", "tags": []})
    );
}

#[tokio::test]
async fn catalog_pagination() {
    let r = Registry::with_config(Config {
        max_page_size: 3,
        ..Config::default()
    });
    let names = ["a", "a/b", "b", "c-d/e", "z"];
    for n in names {
        r.push_blob(n, b"x").await;
    }
    // The page size is capped: a Link says there is more.
    let reply = r.get("/v2/_catalog").await.expect(StatusCode::OK);
    assert_eq!(reply.json()["repositories"], json!(["a", "a/b", "b"]));
    assert_eq!(
        reply.header("link"),
        Some("</v2/_catalog?n=3&last=b>; rel=\"next\"")
    );
    let reply = r
        .get("/v2/_catalog?n=2&last=a")
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply.json()["repositories"], json!(["a/b", "b"]));
    let link = reply.header("link").unwrap();
    assert_eq!(link, "</v2/_catalog?n=2&last=b>; rel=\"next\"");
    let reply = r
        .get("/v2/_catalog?n=2&last=b")
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply.json()["repositories"], json!(["c-d/e", "z"]));
    assert!(reply.header("link").is_none());
    let reply = r.get("/v2/_catalog?n=0").await.expect(StatusCode::OK);
    assert_eq!(reply.json()["repositories"], json!([]));
    r.get("/v2/_catalog?n=-2")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID");
    // The `last` with a slash survives the round trip through the Link header.
    let reply = r.get("/v2/_catalog?n=1&last=a").await;
    assert_eq!(
        reply.header("link"),
        Some("</v2/_catalog?n=1&last=a%2Fb>; rel=\"next\"")
    );
    let reply = r.get("/v2/_catalog?n=1&last=a%2Fb").await;
    assert_eq!(reply.json()["repositories"], json!(["b"]));
}
