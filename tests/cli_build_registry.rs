//! `berth build` against a registry (`berth registry serve` on a loopback port, so plain
//! HTTP): base images the store lacks are pulled first (`FROM` and `COPY --from=<image>`),
//! `--pull` pulls them again, an image that cannot be pulled fails with the line that names
//! it, and `--push` uploads each layer while later steps still run, then the image.
//!
//! Needs runc and busybox-static.

mod build_support;
mod registry_support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use build_support::*;
use registry_support::*;
use serde_json::Value;

/// A registry on a free loopback port holding a busybox base image as `base:1`; returns the
/// server and the base's name.
fn registry_with_base(work: &Path) -> (Server, String) {
    let server = Server::start(&work.join("registry"));
    let base = format!("{}/base:1", server.addr);
    let root = work.join("pusher");
    load_busybox_base(work, &root, &base);
    berth(&root, &["push", "-q", &base]);
    (server, base)
}

#[test]
fn missing_bases_are_pulled_and_unknown_ones_name_their_line() {
    require_tool("/usr/sbin/runc", "runc");
    let work = tempfile::tempdir().unwrap();
    let (server, base) = registry_with_base(work.path());
    let root = work.path().join("builder");
    let context = work.path().join("context");
    write_context(
        &context,
        &[(
            "Dockerfile",
            &format!(
                "FROM {base}\n\
                 COPY --from={base} /etc/passwd /copied-passwd\n\
                 RUN test \"$BASE\" = from-base && grep -q app /copied-passwd\n"
            ),
        )],
    );
    let ctx = context.to_str().unwrap();
    let (_, stderr) = berth(&root, &["build", "--progress", "plain", "-t", "app:1", ctx]);
    let pull = format!("#1 [internal] pull {base}");
    assert!(stderr.contains(&pull), "{stderr}");
    assert!(
        stderr.contains(&format!("#1 resolve {base}@sha256:")),
        "{stderr}"
    );
    assert!(stderr.contains("#2 [stage-0 1/3] FROM"), "{stderr}");
    let (images, _) = berth(&root, &["images", "--format", "json"]);
    assert!(images.contains(&format!("\"Name\":\"{base}\"")), "{images}");

    // Present now: not pulled again, unless --pull says so.
    let (_, stderr) = berth(&root, &["build", "--progress", "plain", ctx]);
    assert!(!stderr.contains("[internal] pull"), "{stderr}");
    let (_, stderr) = berth(&root, &["build", "--progress", "plain", "--pull", ctx]);
    assert!(stderr.contains(&pull), "{stderr}");

    let missing = work.path().join("missing");
    write_context(
        &missing,
        &[(
            "Dockerfile",
            &format!(
                "FROM {base}\nRUN true\nFROM {}/nosuch:1\nRUN true\n",
                server.addr
            ),
        )],
    );
    let stderr = berth_fails(&root, &["build", missing.to_str().unwrap()]);
    assert!(
        stderr.contains(&format!(
            "Dockerfile:3: FROM {}/nosuch:1: failed to resolve source metadata for {}/nosuch:1",
            server.addr, server.addr
        )),
        "{stderr}"
    );
    assert!(active_snapshots(&root).is_empty());
}

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap())
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// An HTTP server on a loopback port that answers `200` once the registry under
/// `registry_root` holds more blobs than `before`, and `404` until then: what a RUN step polls
/// to see a layer of an earlier step arrive while it runs.
fn blob_watch(registry_root: &Path, before: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let blobs = registry_root.join("blobs");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let reply = if files_under(&blobs) > before {
                "HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nhere"
            } else {
                "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
            };
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    addr
}

#[test]
fn push_uploads_layers_while_later_steps_run() {
    require_tool("/usr/sbin/runc", "runc");
    let work = tempfile::tempdir().unwrap();
    let (server, base) = registry_with_base(work.path());
    let root = work.path().join("builder");
    let app = format!("{}/pushed-app:1", server.addr);
    let also = format!("{}/pushed-app:also", server.addr);
    // The registry holds the base's layer, config and manifest. The base layer is mounted
    // into the new repository (no new blob); the config and manifest go up after the last
    // step. So a new blob while the RUN step runs can only be the COPY step's layer, pushed
    // while the build still runs: the RUN step waits for it.
    let before = files_under(&work.path().join("registry/blobs"));
    assert_eq!(before, 3);
    let watch = blob_watch(&work.path().join("registry"), before);
    let context = work.path().join("context");
    write_context(
        &context,
        &[
            ("payload.txt", "payload\n"),
            (
                "Dockerfile",
                &format!(
                    "FROM {base}\n\
                     COPY payload.txt /payload.txt\n\
                     RUN for i in $(seq 300); do \
                           wget -q -O /dev/null http://{watch}/ && echo the layer is there && exit 0; \
                           sleep 0.1; \
                         done; echo the layer never arrived; exit 1\n"
                ),
            ),
        ],
    );
    let metadata = work.path().join("metadata.json");
    let (stdout, stderr) = berth(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            &app,
            "-t",
            &also,
            "--push",
            "--metadata-file",
            metadata.to_str().unwrap(),
            context.to_str().unwrap(),
        ],
    );
    assert!(stderr.contains("the layer is there"), "{stderr}");
    assert!(stderr.contains("while building"), "{stderr}");
    assert!(stderr.contains("mounted from base"), "{stderr}");
    assert!(stderr.contains("pushing layer sha256:"), "{stderr}");
    assert!(
        stderr.contains(&format!("pushing manifest for {app}@sha256:")),
        "{stderr}"
    );
    let meta: Value = serde_json::from_str(&fs::read_to_string(&metadata).unwrap()).unwrap();
    assert_eq!(meta["image.name"], format!("{app},{also}"));
    let digest = meta["containerimage.digest"].as_str().unwrap();

    // Both tags name the manifest the build wrote, and another store pulls and runs it.
    for tag in ["1", "also"] {
        let reply = server
            .request(
                "HEAD",
                &format!("/v2/pushed-app/manifests/{tag}"),
                &[(
                    "Accept",
                    "application/vnd.oci.image.manifest.v1+json".to_owned(),
                )],
                b"",
            )
            .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("docker-content-digest"), Some(digest));
    }
    let other = work.path().join("other");
    berth(&other, &["pull", "-q", &app]);
    let (inspect, _) = berth(&other, &["inspect", &app]);
    let inspect: Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect[0]["Id"], stdout.trim());
    assert_eq!(inspect[0]["Layers"].as_array().unwrap().len(), 3);
}
