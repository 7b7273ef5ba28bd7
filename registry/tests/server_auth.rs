//! Token authentication: a registry with an `auth` section, served on a loopback port. The raw
//! challenge and token exchange are checked with plain HTTP requests, then the berth client
//! pushes and pulls with credentials of different scopes.

mod client_support;

use std::time::Duration;

use berth_layerstore::content::memory::MemoryStore;
use berth_registry::auth::{Policy, TokenKey};
use berth_registry::client::{Credential, PullOptions, PushOptions};
use berth_registry::reference::Reference;
use berth_registry::server::{AppState, AuthConfig, Config, app};
use client_support::*;
use reqwest::Method;
use serde_json::Value;

struct Secured {
    addr: String,
    key: TokenKey,
    http: reqwest::Client,
    _root: tempfile::TempDir,
}

impl Secured {
    async fn start() -> Secured {
        let root = tempfile::tempdir().unwrap();
        let key_file = root.path().join("token.key");
        let key = TokenKey::load_or_create(&key_file).unwrap();
        let config = Config {
            auth: Some(AuthConfig {
                key_file,
                service: "test-registry".into(),
                realm: None,
                token_lifetime_secs: 300,
            }),
            ..Config::default()
        };
        let state = AppState::open(&root.path().join("data"), config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app(state)).await.unwrap() });
        Secured {
            addr,
            key,
            http: reqwest::Client::new(),
            _root: root,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn credential(&self, policy: &Policy) -> String {
        self.key
            .issue_credential("tester", policy, Duration::from_secs(600))
            .token
    }

    /// A token for `scopes`, exchanged with Basic auth as docker does.
    async fn token(&self, credential: &str, scopes: &[&str]) -> (reqwest::StatusCode, Value) {
        let query: Vec<(&str, &str)> = std::iter::once(("service", "test-registry"))
            .chain(scopes.iter().map(|s| ("scope", *s)))
            .collect();
        let response = self
            .http
            .get(self.url("/token"))
            .query(&query)
            .basic_auth("tester", Some(credential))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn reference(&self, repo_and_tag: &str) -> Reference {
        format!("{}/{repo_and_tag}", self.addr).parse().unwrap()
    }
}

fn challenge_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .expect("a challenge")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn requests_without_a_token_get_the_challenge_that_names_their_scope() {
    let registry = Secured::start().await;
    let base = registry
        .http
        .get(registry.url("/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(base.status(), 401);
    let challenge = challenge_of(&base);
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"http://{}/token\",service=\"test-registry\"",
            registry.addr
        )
    );
    let body: Value = base.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");

    for (method, path, scope) in [
        (
            Method::GET,
            "/v2/app/web/manifests/v1",
            "repository:app/web:pull",
        ),
        (
            Method::POST,
            "/v2/app/web/blobs/uploads/",
            "repository:app/web:pull,push",
        ),
        (
            Method::DELETE,
            "/v2/app/web/manifests/v1",
            "repository:app/web:delete",
        ),
        (Method::GET, "/v2/_catalog", "registry:catalog:*"),
    ] {
        let response = registry
            .http
            .request(method.clone(), registry.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
        assert!(
            challenge_of(&response).ends_with(&format!(",scope=\"{scope}\"")),
            "{method} {path}: {}",
            challenge_of(&response)
        );
    }

    let health = registry
        .http
        .get(registry.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "health checks need no token");
}

#[tokio::test]
async fn tokens_grant_only_what_the_credential_allows() {
    let registry = Secured::start().await;
    let reader = registry.credential(&Policy::allow(&["pull"], &["app/*"]));
    let (status, answer) = registry
        .token(
            &reader,
            &["repository:app/web:pull,push", "repository:other:pull"],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let token = answer["token"].as_str().unwrap().to_owned();
    assert_eq!(answer["access_token"], answer["token"]);
    assert!(answer["expires_in"].as_u64().unwrap() >= 60);
    assert!(answer["issued_at"].as_str().unwrap().ends_with('Z'));
    let claims = registry
        .key
        .verify_access_token(&token, "test-registry")
        .unwrap();
    assert_eq!(claims.registered.sub, "tester");
    assert_eq!(
        claims.access.len(),
        1,
        "nothing granted on other: {claims:?}"
    );
    assert_eq!(claims.access[0].name, "app/web");
    assert_eq!(claims.access[0].actions, ["pull"]);

    let get = |path: &str| {
        registry
            .http
            .get(registry.url(path))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(get("/v2/").await.unwrap().status(), 200);
    let unknown = get("/v2/app/web/manifests/v1").await.unwrap();
    assert_eq!(
        unknown.status(),
        404,
        "authorized, and the manifest is unknown"
    );
    let elsewhere = get("/v2/other/manifests/v1").await.unwrap();
    assert_eq!(elsewhere.status(), 401);
    assert!(challenge_of(&elsewhere).contains("error=\"insufficient_scope\""));
    let push = registry
        .http
        .post(registry.url("/v2/app/web/blobs/uploads/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(push.status(), 401, "pull-only token cannot push");
    assert!(challenge_of(&push).contains("insufficient_scope"));

    // A token from another key, or a credential offered as a token, is invalid.
    let forged = TokenKey::from_bytes(vec![1; 32])
        .unwrap()
        .issue_access_token(
            "tester",
            "test-registry",
            claims.access.clone(),
            Duration::from_secs(60),
        );
    for bad in [forged.token.as_str(), reader.as_str(), "garbage"] {
        let response = registry
            .http
            .get(registry.url("/v2/app/web/manifests/v1"))
            .bearer_auth(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert!(challenge_of(&response).contains("error=\"invalid_token\""));
    }
}

#[tokio::test]
async fn the_token_endpoint_refuses_bad_credentials_and_scopes() {
    let registry = Secured::start().await;
    let anonymous = registry
        .http
        .get(registry.url("/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(challenge_of(&anonymous).starts_with("Basic "));

    let (status, body) = registry.token("not-a-credential", &[]).await;
    assert_eq!(status, 401);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("credential"),
        "{body}"
    );

    let other_key = TokenKey::from_bytes(vec![9; 32]).unwrap();
    let forged = other_key
        .issue_credential("x", &Policy::allow(&["*"], &["*"]), Duration::from_secs(60))
        .token;
    assert_eq!(registry.token(&forged, &[]).await.0, 401);

    let good = registry.credential(&Policy::allow(&["pull"], &["*"]));
    let (status, body) = registry.token(&good, &["repository:nocolon"]).await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nocolon"),
        "{body}"
    );

    // OAuth2 form, as containerd sends it.
    let form = registry
        .http
        .post(registry.url("/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "tester"),
            ("password", good.as_str()),
            ("scope", "repository:a:pull repository:b:push"),
            ("service", "test-registry"),
            ("client_id", "containerd"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let body: Value = form.json().await.unwrap();
    let claims = registry
        .key
        .verify_access_token(body["access_token"].as_str().unwrap(), "test-registry")
        .unwrap();
    assert_eq!(claims.access.len(), 1, "{claims:?}");
    assert_eq!(
        (
            claims.access[0].name.as_str(),
            claims.access[0].actions.clone()
        ),
        ("a", vec!["pull".to_owned()])
    );
}

#[tokio::test]
async fn the_client_pushes_and_pulls_within_its_credentials() {
    let registry = Secured::start().await;
    let host = registry.addr.clone();
    let with = |credential: Option<String>| {
        let host = host.clone();
        test_client(move |o| {
            if let Some(password) = credential {
                o.credentials.push((
                    host,
                    Credential::Basic {
                        username: "ci".into(),
                        password,
                    },
                ));
            }
        })
    };
    let store = MemoryStore::new();
    let image = sample_image(&store, "amd64", &[("a.txt", b"alpha"), ("b.txt", b"beta")]);

    let writer = with(Some(
        registry.credential(&Policy::allow(&["pull", "push"], &["team/*"])),
    ));
    writer
        .push(
            &store,
            &image.manifest,
            &registry.reference("team/app:v1"),
            &PushOptions::default(),
        )
        .await
        .expect("push with push rights");
    let denied = writer
        .push(
            &store,
            &image.manifest,
            &registry.reference("elsewhere/app:v1"),
            &PushOptions::default(),
        )
        .await
        .expect_err("push outside the credential's repositories");
    let message = denied.to_string();
    assert!(
        message.contains("401") || message.to_lowercase().contains("unauthorized"),
        "{message}"
    );

    let reader = with(Some(
        registry.credential(&Policy::allow(&["pull"], &["team/app"])),
    ));
    let (_dir, pulled) = fs_store();
    let got = reader
        .pull(
            &registry.reference("team/app:v1"),
            &pulled,
            &PullOptions::default(),
        )
        .await
        .expect("pull with pull rights");
    assert_eq!(got.root.digest(), image.manifest.digest());
    assert_complete(&pulled, &image.manifest);
    reader
        .push(
            &store,
            &image.manifest,
            &registry.reference("team/app:v2"),
            &PushOptions::default(),
        )
        .await
        .expect_err("a pull-only credential cannot push");

    let anonymous = with(None);
    let (_dir, nothing) = fs_store();
    anonymous
        .pull(
            &registry.reference("team/app:v1"),
            &nothing,
            &PullOptions::default(),
        )
        .await
        .expect_err("no credential, no pull");
}

#[tokio::test]
async fn a_mount_from_a_repository_the_token_cannot_read_becomes_an_upload() {
    let registry = Secured::start().await;
    let admin = registry.credential(&Policy::allow(&["*"], &["*"]));
    let (_, answer) = registry
        .token(&admin, &["repository:secret/src:pull,push"])
        .await;
    let admin_token = answer["token"].as_str().unwrap().to_owned();
    let blob = b"private bytes";
    let digest = berth_layerstore::Digest::sha256(blob);
    let put = registry
        .http
        .post(registry.url(&format!("/v2/secret/src/blobs/uploads/?digest={digest}")))
        .bearer_auth(&admin_token)
        .body(blob.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);

    let mounter = registry.credential(&Policy::allow(&["pull", "push"], &["mine/*"]));
    let (_, answer) = registry
        .token(
            &mounter,
            &[
                "repository:mine/dst:pull,push",
                "repository:secret/src:pull",
            ],
        )
        .await;
    let token = answer["token"].as_str().unwrap().to_owned();
    let mount = registry
        .http
        .post(registry.url(&format!(
            "/v2/mine/dst/blobs/uploads/?mount={digest}&from=secret/src"
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(mount.status(), 202, "an upload session, not a mount");
    let head = registry
        .http
        .head(registry.url(&format!("/v2/mine/dst/blobs/{digest}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404, "the blob did not leak into mine/dst");

    // The catalog needs registry:catalog:*, which the admin credential grants.
    let (_, answer) = registry.token(&admin, &["registry:catalog:*"]).await;
    let catalog = registry
        .http
        .get(registry.url("/v2/_catalog"))
        .bearer_auth(answer["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(catalog.status(), 200);
    let listed: Value = catalog.json().await.unwrap();
    assert_eq!(listed["repositories"], serde_json::json!(["secret/src"]));
    let catalog = registry
        .http
        .get(registry.url("/v2/_catalog"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        catalog.status(),
        401,
        "the mounter may not list repositories"
    );

    // With pull rights on the source, the same mount links the blob.
    let (_, answer) = registry
        .token(
            &admin,
            &[
                "repository:mine/dst:pull,push",
                "repository:secret/src:pull",
            ],
        )
        .await;
    let admin_token = answer["token"].as_str().unwrap().to_owned();
    let mount = registry
        .http
        .post(registry.url(&format!(
            "/v2/mine/dst/blobs/uploads/?mount={digest}&from=secret/src"
        )))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(mount.status(), 201);
}
