//! Credentials from Docker's `config.json`: `auths`, `identitytoken`, `credHelpers` and
//! `credsStore` with fake `docker-credential-*` helpers on PATH, and `DOCKER_CONFIG`.
//!
//! Everything that changes the process environment is in one test, so no other test of this
//! binary runs while PATH and DOCKER_CONFIG are changed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use berth_registry::client::credentials::{self, Credential, DockerConfig, default_config_path};

fn write_script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

const FAKE_HELPER: &str = r#"
[ "$1" = "get" ] || { echo "unexpected verb $1" >&2; exit 3; }
read -r server
case "$server" in
  helped.example:5000) echo '{"ServerURL":"helped.example:5000","Username":"helper-user","Secret":"helper-pass"}' ;;
  token.example) echo '{"ServerURL":"token.example","Username":"<token>","Secret":"refresh-xyz"}' ;;
  https://index.docker.io/v1/) echo '{"ServerURL":"https://index.docker.io/v1/","Username":"hubuser","Secret":"hubpass"}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"#;

#[tokio::test]
async fn config_files_and_credential_helpers() {
    let bin = tempfile::tempdir().unwrap();
    write_script(bin.path(), "docker-credential-fake", FAKE_HELPER);
    write_script(
        bin.path(),
        "docker-credential-broken",
        "echo 'keychain locked' >&2; exit 2",
    );
    let old_path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin.path().to_owned()];
    paths.extend(std::env::split_paths(&old_path));
    let config_dir = tempfile::tempdir().unwrap();
    // SAFETY: this is the only test in this binary, so no other thread reads the environment
    // while it changes.
    unsafe {
        std::env::set_var("PATH", std::env::join_paths(paths).unwrap());
        std::env::set_var("DOCKER_CONFIG", config_dir.path());
    }

    // credHelpers per host; credsStore for the rest, falling back to auths when the store
    // has nothing.
    std::fs::write(
        config_dir.path().join("config.json"),
        r#"{
            "auths": {
                "plain.example": {"auth": "cGxhaW46cHc="},
                "helped.example:5000": {}
            },
            "credHelpers": {
                "helped.example:5000": "fake",
                "token.example": "fake",
                "locked.example": "broken",
                "absent.example": "does-not-exist"
            },
            "credsStore": "fake"
        }"#,
    )
    .unwrap();
    assert_eq!(
        default_config_path().unwrap(),
        config_dir.path().join("config.json"),
        "DOCKER_CONFIG is respected"
    );
    let config = DockerConfig::load_default().unwrap();

    assert_eq!(
        config.credential_for("helped.example:5000").await.unwrap(),
        Some(Credential::Basic {
            username: "helper-user".into(),
            password: "helper-pass".into()
        })
    );
    assert_eq!(
        config.credential_for("token.example").await.unwrap(),
        Some(Credential::IdentityToken {
            username: String::new(),
            token: "refresh-xyz".into()
        }),
        "a <token> user name means an identity token"
    );
    assert_eq!(
        config.credential_for("docker.io").await.unwrap(),
        Some(Credential::Basic {
            username: "hubuser".into(),
            password: "hubpass".into()
        }),
        "Docker Hub is asked for as https://index.docker.io/v1/"
    );
    assert_eq!(
        config.credential_for("plain.example").await.unwrap(),
        Some(Credential::Basic {
            username: "plain".into(),
            password: "pw".into()
        }),
        "the store has nothing, auths does"
    );
    assert_eq!(config.credential_for("nobody.example").await.unwrap(), None);

    let err = config
        .credential_for("locked.example")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("docker-credential-broken") && err.contains("keychain locked"),
        "{err}"
    );
    let err = config
        .credential_for("absent.example")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("docker-credential-does-not-exist"), "{err}");

    // run_helper directly.
    assert_eq!(
        credentials::run_helper("fake", "unknown.example")
            .await
            .unwrap(),
        None
    );

    // A missing config.json is an empty configuration, not an error.
    let empty = tempfile::tempdir().unwrap();
    // SAFETY: as above.
    unsafe {
        std::env::set_var("DOCKER_CONFIG", empty.path());
    }
    let config = DockerConfig::load_default().unwrap();
    assert!(config.auths.is_empty() && config.creds_store.is_none());

    // SAFETY: as above.
    unsafe {
        std::env::set_var("PATH", old_path);
        std::env::remove_var("DOCKER_CONFIG");
    }
}
