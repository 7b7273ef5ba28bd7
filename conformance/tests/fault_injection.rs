//! Shows the suite fails registries that break the spec: a small HTTP proxy in front of CNCF
//! distribution breaks one rule at a time (drops a required header, changes a status, alters
//! bytes), and the check that guards that rule must fail while it passes without the fault.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use berth_conformance::{Report, Suite, Workflows};
use reqwest::blocking::Client;

/// A response on its way back to the client, open to alteration.
struct Exchange {
    method: String,
    path: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Exchange {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    fn set_header(&mut self, name: &str, value: String) {
        self.remove_header(name);
        self.headers.push((name.to_owned(), value));
    }
}

type Fault = fn(&mut Exchange);

/// A proxy on a free port that forwards to `upstream` and applies `fault` to every response.
struct Proxy {
    port: u16,
}

impl Proxy {
    fn start(upstream: u16, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let client = Arc::new(
            Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .expect("HTTP client"),
        );
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let client = Arc::clone(&client);
                thread::spawn(move || {
                    let _ = serve(stream, &client, upstream, port, fault);
                });
            }
        });
        Proxy { port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Handles one request on `stream` (answered with `Connection: close`).
fn serve(
    stream: TcpStream,
    client: &Client,
    upstream: u16,
    port: u16,
    fault: Fault,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;

    let method_value = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
    let mut request = client.request(method_value, format!("http://127.0.0.1:{upstream}{path}"));
    for (name, value) in &headers {
        let skip = ["host", "connection", "content-length"];
        if !skip.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    let response = request.body(body).send().map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let upstream_host = format!("127.0.0.1:{upstream}");
    let proxy_host = format!("127.0.0.1:{port}");
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            let value = v
                .to_str()
                .unwrap_or_default()
                .replace(&upstream_host, &proxy_host);
            (n.as_str().to_owned(), value)
        })
        .collect();
    let body = response.bytes().map_err(std::io::Error::other)?.to_vec();
    let mut exchange = Exchange {
        method,
        path,
        status,
        headers,
        body,
    };
    fault(&mut exchange);

    let mut out = stream;
    write!(out, "HTTP/1.1 {} X\r\n", exchange.status)?;
    let is_head = exchange.method == "HEAD";
    for (name, value) in &exchange.headers {
        let hop = ["connection", "transfer-encoding"];
        let recomputed = !is_head && name.eq_ignore_ascii_case("content-length");
        if !recomputed && !hop.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            write!(out, "{name}: {value}\r\n")?;
        }
    }
    if !is_head && exchange.status != 204 {
        write!(out, "Content-Length: {}\r\n", exchange.body.len())?;
    }
    write!(out, "Connection: close\r\n\r\n")?;
    if !is_head {
        out.write_all(&exchange.body)?;
    }
    out.flush()
}

fn is_manifest(e: &Exchange) -> bool {
    e.path.contains("/manifests/")
}

fn is_blob(e: &Exchange) -> bool {
    e.path.contains("/blobs/sha256:")
}

fn is_upload(e: &Exchange) -> bool {
    e.path.contains("/blobs/uploads/")
}

/// Runs `workflows` through a proxy that applies `fault`, and returns the report.
fn run_with_fault(upstream: u16, workflows: Workflows, fault: Fault) -> Report {
    let proxy = Proxy::start(upstream, fault);
    let report = Suite::builder(proxy.url())
        .namespace(common::unique("faults/repo"))
        .workflows(workflows)
        .build()
        .expect("valid configuration")
        .run();
    println!("{report}");
    report
}

fn only(workflow: &str) -> Workflows {
    Workflows {
        pull: workflow == "pull",
        push: workflow == "push",
        content_discovery: workflow == "discovery",
        content_management: workflow == "management",
    }
}

/// Asserts each check in `ids` failed.
fn assert_failed(report: &Report, ids: &[&str]) {
    for id in ids {
        let result = report.get(id).unwrap_or_else(|| panic!("no check {id}"));
        assert!(
            result.failed(),
            "{id} should fail under the fault: {:?}",
            result.outcome
        );
    }
}

#[test]
fn the_proxy_alone_changes_nothing() {
    let registry = common::start_distribution();
    let report = run_with_fault(registry.port, only("pull"), |_| {});
    assert!(report.is_success(), "{report}");
    let report = run_with_fault(registry.port, only("management"), |_| {});
    assert!(report.is_success(), "{report}");
}

#[test]
fn missing_docker_content_digest_on_manifests_fails_pull() {
    let registry = common::start_distribution();
    let report = run_with_fault(registry.port, only("pull"), |e| {
        if is_manifest(e) && matches!(e.method.as_str(), "GET" | "HEAD") {
            e.remove_header("docker-content-digest");
        }
    });
    assert_failed(
        &report,
        &[
            "pull.head-manifest-by-tag",
            "pull.head-manifest-by-digest",
            "pull.get-manifest-by-tag",
            "pull.get-manifest-by-digest",
            "pull.get-index-by-tag",
        ],
    );
    assert!(report.get("pull.get-blob").is_some_and(|r| r.passed()));
}

#[test]
fn re_encoded_manifests_and_corrupt_blobs_fail_pull() {
    let registry = common::start_distribution();
    let report = run_with_fault(registry.port, only("pull"), |e| {
        if e.method == "GET" && e.status == 200 {
            if is_manifest(e) {
                let doc: serde_json::Value =
                    serde_json::from_slice(&e.body).expect("manifest JSON");
                e.body = serde_json::to_vec(&doc).expect("JSON");
            } else if is_blob(e) && e.body.len() > 100 {
                e.body[50] ^= 0xff;
            }
        }
    });
    assert_failed(
        &report,
        &[
            "pull.get-manifest-by-tag",
            "pull.get-manifest-by-digest",
            "pull.get-index-by-tag",
            "pull.get-blob",
        ],
    );
}

#[test]
fn wrong_error_codes_and_statuses_fail_pull() {
    let registry = common::start_distribution();
    let report = run_with_fault(registry.port, only("pull"), |e| {
        if e.status == 404 && is_manifest(e) {
            e.body = br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"x"}]}"#.to_vec();
        }
        if e.status == 404 && is_blob(e) && e.method == "HEAD" {
            e.status = 400;
        }
        if e.status == 206 {
            e.set_header("content-range", "bytes 0-1/2".to_owned());
        }
    });
    assert_failed(
        &report,
        &[
            "pull.get-manifest-unknown-tag",
            "pull.get-manifest-unknown-digest",
            "pull.head-blob-unknown",
            "pull.get-blob-range",
            "pull.get-blob-range-open",
        ],
    );
}

#[test]
fn upload_status_and_header_faults_fail_push() {
    let registry = common::start_distribution();
    let report = run_with_fault(registry.port, only("push"), |e| {
        if is_upload(e) && e.method == "PUT" && e.status == 201 {
            e.status = 200;
        }
        if is_upload(e) && e.method == "PATCH" && e.status == 202 {
            // An off-by-one Range: the end of range is the last byte, not the length.
            let end: Option<usize> = e
                .header("range")
                .and_then(|r| r.strip_prefix("0-"))
                .and_then(|n| n.parse().ok());
            if let Some(end) = end {
                e.set_header("range", format!("0-{}", end + 1));
            }
        }
        if is_manifest(e) && e.method == "PUT" && e.status == 201 {
            e.remove_header("location");
        }
    });
    assert_failed(
        &report,
        &[
            "push.monolithic-put",
            "push.empty-blob",
            "push.streamed-patch",
            "push.chunked",
            "push.final-chunk-in-put",
            "push.manifest-by-tag",
            "push.manifest-by-digest",
            "push.image-index",
        ],
    );
}

#[test]
fn failed_and_ineffective_deletes_fail_management() {
    let registry = common::start_distribution();
    let report = run_with_fault(registry.port, only("management"), |e| {
        if e.method == "DELETE" && is_blob(e) && e.status == 202 {
            e.status = 500;
        }
        // A deleted manifest that still answers: the digest GET succeeds with stale bytes.
        if e.method == "GET" && is_manifest(e) && e.status == 404 && e.path.contains("sha256:") {
            e.status = 200;
            e.body = b"{}".to_vec();
        }
    });
    assert_failed(
        &report,
        &["management.deleted-manifest-404", "management.delete-blob"],
    );
}
