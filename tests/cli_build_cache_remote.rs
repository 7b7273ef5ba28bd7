//! `berth build --cache-to` and `--cache-from`: a cache exported to a registry, to an OCI
//! layout directory or inline in the image serves a build in a fresh store, which then runs
//! nothing and gives the same image; `mode=min` and `mode=max`; and bad caches (a ref that does
//! not exist, a damaged config, layers missing or truncated in a directory or in the registry,
//! a registry that goes away in the middle of an import) are warnings, after which the steps
//! they cannot serve run.
//!
//! Needs runc and busybox-static (`scripts/setup.sh`).

mod build_support;
mod registry_support;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use build_support::*;
use registry_support::*;
use serde_json::Value;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Seven steps, three of them RUN steps whose output differs on every run: an image built
/// again with any of them run has another id.
fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base}\n\
         ENV A=1\n\
         RUN cat /proc/sys/kernel/random/uuid > /first\n\
         COPY one.txt /app/\n\
         RUN cat /app/one.txt /first > /second\n\
         COPY two.txt /app/\n\
         RUN cat /proc/sys/kernel/random/uuid > /third\n\
         CMD [\"cat\", \"/second\"]\n"
    )
}

/// A work directory with a store holding the busybox base, and a context for [`dockerfile`].
struct Setup {
    work: tempfile::TempDir,
    root: PathBuf,
    base: String,
    context: PathBuf,
}

fn setup(name: &str) -> Setup {
    require_tool("/usr/sbin/runc", "runc");
    let (work, root, base) = work_with_base(name);
    let context = work.path().join("ctx");
    write_context(
        &context,
        &[
            ("Dockerfile", &dockerfile(&base)),
            ("one.txt", "one\n"),
            ("two.txt", "two\n"),
        ],
    );
    Setup {
        work,
        root,
        base,
        context,
    }
}

impl Setup {
    /// A fresh store under the work directory holding only the base image, loaded from the
    /// archive the first store got it from (the same bytes, so the same cache keys).
    fn fresh_store(&self, name: &str) -> PathBuf {
        let root = self.work.path().join(name);
        let archive = self.work.path().join("base-oci.tar");
        berth(&root, &["load", "-i", archive.to_str().unwrap()]);
        root
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }
}

fn arg(s: impl AsRef<Path>) -> String {
    s.as_ref().to_str().unwrap().to_owned()
}

/// The hex of a `sha256:` digest.
fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

/// The cache manifest named `latest` in the layout at `dir`, and its config.
fn local_cache(dir: &Path) -> (Value, Value) {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(
        entries[0]["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    let blob = |digest: &str| dir.join("blobs/sha256").join(hex(digest));
    let manifest: Value =
        serde_json::from_slice(&fs::read(blob(entries[0]["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    let config: Value = serde_json::from_slice(
        &fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    (manifest, config)
}

/// Checks the shape of a cache manifest and its config, and returns how many records it holds.
fn check_cache(manifest: &Value, config: &Value) -> usize {
    assert_eq!(manifest["mediaType"], OCI_MANIFEST, "{manifest}");
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.berth.build.cache.v1"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.berth.build.cache.config.v1+json"
    );
    assert_eq!(config["version"], 1, "{config}");
    let records = config["records"].as_array().unwrap();
    // Every layer a record names is a layer of the manifest, and each is listed once.
    let layers: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let mut distinct = layers.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), layers.len(), "{manifest}");
    for record in records {
        assert_eq!(record["key"].as_str().unwrap().len(), 64, "{record}");
        for layer in record["record"]["layers"].as_array().unwrap() {
            assert!(layers.contains(&layer["digest"].as_str().unwrap()));
        }
    }
    records.len()
}

/// A file of a `-o type=local` output.
fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn a_registry_cache_serves_a_fresh_store_and_missing_layers_rerun_their_steps() {
    let s = setup("cache-remote-registry");
    let registry_root = s.path("registry");
    let server = Server::start(&registry_root);
    let cache = format!("{}/cache:1", server.addr);
    let out_a = s.path("out-a");
    let (id_a, stderr) = build_plain(
        &s.root,
        &s.context,
        &[
            "-t",
            "app:1",
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
            "-o",
            &format!("type=local,dest={}", arg(&out_a)),
        ],
    );
    assert_eq!(ran(&stderr).len(), 7, "{stderr}");
    assert!(stderr.contains("exporting cache to registry"), "{stderr}");

    // The artifact in the registry: a manifest whose layers are those of the image.
    let reply = server
        .request(
            "GET",
            "/v2/cache/manifests/1",
            &[("Accept", OCI_MANIFEST.to_owned())],
            b"",
        )
        .unwrap();
    assert_eq!(reply.status, 200);
    let manifest: Value = serde_json::from_slice(&reply.body).unwrap();
    let config_path = format!(
        "/v2/cache/blobs/{}",
        manifest["config"]["digest"].as_str().unwrap()
    );
    let reply = server.request("GET", &config_path, &[], b"").unwrap();
    assert_eq!(reply.status, 200);
    let config: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(check_cache(&manifest, &config), 7);
    let layers = image_layers(&s.root, "app:1");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), layers.len());

    // A fresh store with only the base: nothing runs, and the image is the same.
    let root_b = s.fresh_store("b");
    let (id_b, stderr) = build_plain(
        &root_b,
        &s.context,
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    assert!(
        stderr.contains(&format!("importing cache manifest from {cache}")),
        "{stderr}"
    );
    assert!(ran(&stderr).is_empty(), "{stderr}");
    assert_eq!(cached(&stderr), 7, "{stderr}");
    assert_eq!(id_b, id_a, "{stderr}");
    assert!(damaged_blobs(&root_b).is_empty());
    assert!(leftovers(&root_b).is_empty(), "{:?}", leftovers(&root_b));

    // A ref that does not exist: a warning, and every step runs.
    let root_c = s.fresh_store("c");
    let missing = format!("{}/nosuch:1", server.addr);
    let (_, stderr) = build_plain(&root_c, &s.context, &["--cache-from", &missing]);
    assert!(
        stderr.contains(&format!(
            "type=registry,ref={missing}: cannot import the build cache"
        )),
        "{stderr}"
    );
    assert_eq!(ran(&stderr).len(), 7, "{stderr}");

    // The last layer is gone from the registry's storage: its step (and the CMD whose record
    // names it) runs, with a warning; the others still come from the cache.
    let last = hex(layers.last().unwrap());
    let blob = registry_root
        .join("blobs/sha256")
        .join(&last[..2])
        .join(last);
    fs::remove_file(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
    let root_d = s.fresh_store("d");
    let out_d = s.path("out-d");
    let (_, stderr) = build_plain(
        &root_d,
        &s.context,
        &[
            "--cache-from",
            &cache,
            "-o",
            &format!("type=local,dest={}", arg(&out_d)),
        ],
    );
    assert!(stderr.contains("ignoring the cached result"), "{stderr}");
    let rerun = ran(&stderr);
    assert_eq!(rerun.len(), 2, "{stderr}");
    assert!(rerun[0].contains("> /third"), "{rerun:?}");
    assert!(rerun[1].contains("CMD"), "{rerun:?}");
    // What came from the cache is what the first build made.
    assert_eq!(read(&out_d, "first"), read(&out_a, "first"));
    assert_eq!(read(&out_d, "second"), read(&out_a, "second"));
    assert_ne!(read(&out_d, "third"), read(&out_a, "third"));
    assert!(damaged_blobs(&root_d).is_empty());
    assert!(leftovers(&root_d).is_empty(), "{:?}", leftovers(&root_d));

    // The registry goes away once the records are read, at the first layer: that step runs
    // after the client's retries, and so does every later one, without waiting again.
    let dies_at: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("/blobs/{}", l["digest"].as_str().unwrap()))
        .collect();
    let proxy = dying_proxy(server.addr.clone(), dies_at);
    let root_e = s.fresh_store("e");
    let t = Instant::now();
    let (_, stderr) = build_plain(
        &root_e,
        &s.context,
        &["--cache-from", &format!("{proxy}/cache:1")],
    );
    assert!(
        stderr.contains("no more steps are taken from this cache"),
        "{stderr}"
    );
    // Only ENV, whose record has no layer of its own, comes from the cache.
    assert_eq!(ran(&stderr).len(), 6, "{stderr}");
    assert_eq!(cached(&stderr), 1, "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert!(leftovers(&root_e).is_empty(), "{:?}", leftovers(&root_e));
}

/// A TCP proxy on a loopback port in front of `upstream` that forwards until a request whose
/// text holds one of `dies_at` comes through: that connection is cut, and every later one is
/// closed as soon as it is accepted, as a registry that went away answers. Returns its
/// `host:port`.
fn dying_proxy(upstream: String, dies_at: Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dead = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            if dead.load(Ordering::SeqCst) {
                continue;
            }
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut from_server, mut to_client) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_server, &mut to_client);
                let _ = to_client.shutdown(Shutdown::Both);
            });
            let (dead, dies_at) = (dead.clone(), dies_at.clone());
            std::thread::spawn(move || {
                let (mut client, mut server) = (client, server);
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if dead.load(Ordering::SeqCst) || dies_at.iter().any(|d| text.contains(d)) {
                        dead.store(true, Ordering::SeqCst);
                        break;
                    }
                    if server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            });
        }
    });
    addr
}

#[test]
fn a_local_cache_serves_a_fresh_store_and_damage_makes_steps_run() {
    let s = setup("cache-remote-local");
    let dir = s.path("cache");
    let out_a = s.path("out-a");
    let (id_a, stderr) = build_plain(
        &s.root,
        &s.context,
        &[
            "--cache-to",
            &format!("type=local,dest={}", arg(&dir)),
            "-o",
            &format!("type=local,dest={}", arg(&out_a)),
        ],
    );
    assert_eq!(ran(&stderr).len(), 7, "{stderr}");
    assert!(
        stderr.contains("exporting cache to client directory"),
        "{stderr}"
    );
    assert_eq!(
        fs::read_to_string(dir.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let (manifest, config) = local_cache(&dir);
    // One stage: mode=min has every step.
    assert_eq!(check_cache(&manifest, &config), 7);
    let leftover: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftover.is_empty(), "{leftover:?}");

    let src = format!("type=local,src={}", arg(&dir));
    let root_b = s.fresh_store("b");
    let (id_b, stderr) = build_plain(&root_b, &s.context, &["--cache-from", &src]);
    assert!(ran(&stderr).is_empty(), "{stderr}");
    assert_eq!(cached(&stderr), 7, "{stderr}");
    assert_eq!(id_b, id_a);

    // A damaged config: the cache is skipped with a warning and every step runs.
    let config_blob = dir
        .join("blobs/sha256")
        .join(hex(manifest["config"]["digest"].as_str().unwrap()));
    let good = fs::read(&config_blob).unwrap();
    let mut bad = good.clone();
    for b in &mut bad[10..20] {
        *b ^= 0x55;
    }
    fs::write(&config_blob, &bad).unwrap();
    let root_c = s.fresh_store("c");
    let (id_c, stderr) = build_plain(&root_c, &s.context, &["--cache-from", &src]);
    assert!(
        stderr.contains(&format!("{src}: cannot import the build cache")),
        "{stderr}"
    );
    assert!(stderr.contains("does not match its digest"), "{stderr}");
    assert_eq!(ran(&stderr).len(), 7, "{stderr}");
    assert_ne!(id_c, id_a);
    fs::write(&config_blob, &good).unwrap();

    // The last layer truncated, the one before it (COPY two.txt) missing: those steps run
    // (and the CMD after them), with warnings; the rest comes from the cache, unchanged.
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    let blob = |digest: &str| dir.join("blobs/sha256").join(hex(digest));
    let last = blob(&layers[layers.len() - 1]);
    let bytes = fs::read(&last).unwrap();
    fs::write(&last, &bytes[..bytes.len() / 2]).unwrap();
    fs::remove_file(blob(&layers[layers.len() - 2])).unwrap();
    let root_d = s.fresh_store("d");
    let out_d = s.path("out-d");
    let (_, stderr) = build_plain(
        &root_d,
        &s.context,
        &[
            "--cache-from",
            &src,
            "-o",
            &format!("type=local,dest={}", arg(&out_d)),
        ],
    );
    assert!(stderr.contains("ignoring the cached result"), "{stderr}");
    let rerun = ran(&stderr);
    assert_eq!(rerun.len(), 3, "{stderr}");
    assert!(rerun[0].contains("COPY two.txt"), "{rerun:?}");
    assert!(rerun[1].contains("> /third"), "{rerun:?}");
    assert!(rerun[2].contains("CMD"), "{rerun:?}");
    assert_eq!(read(&out_d, "first"), read(&out_a, "first"));
    assert_eq!(read(&out_d, "second"), read(&out_a, "second"));
    assert_eq!(read(&out_d, "app/two.txt"), "two\n");
    assert!(damaged_blobs(&root_d).is_empty());
    assert!(leftovers(&root_d).is_empty(), "{:?}", leftovers(&root_d));
}

#[test]
fn mode_min_exports_the_target_stage_and_mode_max_every_stage() {
    let s = setup("cache-remote-modes");
    let base = &s.base;
    let context = s.path("two-stages");
    write_context(
        &context,
        &[(
            "Dockerfile",
            &format!(
                "FROM {base} AS deps\n\
                 RUN cat /proc/sys/kernel/random/uuid > /deps\n\
                 ENV DEPS=1\n\
                 FROM {base}\n\
                 COPY --from=deps /deps /deps\n\
                 RUN cat /deps > /app\n"
            ),
        )],
    );
    let (min, max) = (s.path("min"), s.path("max"));
    let (_, stderr) = build_plain(
        &s.root,
        &context,
        &[
            "--cache-to",
            &format!("type=local,dest={}", arg(&min)),
            "--cache-to",
            &format!("type=local,dest={},mode=max", arg(&max)),
        ],
    );
    assert_eq!(ran(&stderr).len(), 4, "{stderr}");
    let (manifest, config) = local_cache(&min);
    assert_eq!(check_cache(&manifest, &config), 2, "{config}");
    // The base's layer, COPY and RUN.
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 3);
    let (manifest, config) = local_cache(&max);
    assert_eq!(check_cache(&manifest, &config), 4, "{config}");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 4);

    // From the min cache, a fresh store runs the first stage's steps only: the final stage's
    // keys do not depend on what they made.
    let root_b = s.fresh_store("b");
    let (_, stderr) = build_plain(
        &root_b,
        &context,
        &["--cache-from", &format!("type=local,src={}", arg(&min))],
    );
    let rerun = ran(&stderr);
    assert_eq!(rerun.len(), 2, "{stderr}");
    assert!(rerun.iter().all(|s| s.starts_with("[deps ")), "{rerun:?}");
    // From the max cache, nothing runs.
    let root_c = s.fresh_store("c");
    let (_, stderr) = build_plain(
        &root_c,
        &context,
        &["--cache-from", &format!("type=local,src={}", arg(&max))],
    );
    assert!(ran(&stderr).is_empty(), "{stderr}");
}

#[test]
fn inline_records_travel_in_the_image() {
    let s = setup("cache-remote-inline");
    let server = Server::start(&s.path("registry"));
    let image = format!("{}/app:1", server.addr);
    let (id_a, stderr) = build_plain(
        &s.root,
        &s.context,
        &["-t", &image, "--push", "--cache-to", "type=inline"],
    );
    assert_eq!(ran(&stderr).len(), 7, "{stderr}");
    // The store holds the base and the image with its records, no image without them.
    let records = image_records(&s.root);
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records.iter().any(|(_, id, _)| *id == id_a), "{records:?}");

    // The pushed config carries the records.
    let reply = server
        .request(
            "GET",
            "/v2/app/manifests/1",
            &[("Accept", OCI_MANIFEST.to_owned())],
            b"",
        )
        .unwrap();
    assert_eq!(reply.status, 200);
    let manifest: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(manifest["config"]["digest"], id_a.as_str());
    let reply = server
        .request("GET", &format!("/v2/app/blobs/{id_a}"), &[], b"")
        .unwrap();
    let config: Value = serde_json::from_slice(&reply.body).unwrap();
    let inline = &config["berth.build.cache.v1"];
    assert_eq!(inline["version"], 1, "{config}");
    assert_eq!(inline["records"].as_array().unwrap().len(), 7);

    // A fresh store builds from the image's records, and with its own inline export gets the
    // same image.
    let root_b = s.fresh_store("b");
    let (id_b, stderr) = build_plain(
        &root_b,
        &s.context,
        &["--cache-from", &image, "--cache-to", "type=inline"],
    );
    assert!(ran(&stderr).is_empty(), "{stderr}");
    assert_eq!(id_b, id_a);
    assert!(leftovers(&root_b).is_empty(), "{:?}", leftovers(&root_b));
}

#[test]
fn bad_cache_specs_fail_before_the_build_and_failed_exports_fail_it() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let context = work.path().join("ctx");
    write_context(&context, &[("Dockerfile", "FROM scratch\nENV A=1\n")]);
    let ctx = arg(&context);
    for (flag, spec, needle) in [
        ("--cache-to", "type=gha", "unknown cache type \"gha\""),
        ("--cache-to", "type=local", "dest is required"),
        ("--cache-to", "type=inline,mode=max", "only mode=min"),
        ("--cache-from", "type=inline", "for --cache-to"),
        (
            "--cache-from",
            "type=local,dest=x",
            "unknown field \"dest\"",
        ),
    ] {
        let stderr = berth_fails(&root, &["build", flag, spec, &ctx]);
        assert!(stderr.contains(needle), "{spec}: {stderr}");
        assert!(!stderr.contains("exporting to image"), "{stderr}");
    }

    // A cache that cannot be written fails the build and names it, unless ignore-error=true.
    let file = work.path().join("a-file");
    fs::write(&file, "not a directory").unwrap();
    let spec = format!("type=local,dest={}", arg(&file));
    let stderr = berth_fails(&root, &["build", "--cache-to", &spec, &ctx]);
    assert!(
        stderr.contains(&format!("exporting the build cache to {spec}")),
        "{stderr}"
    );
    let (_, stderr) = build_plain(
        &root,
        &context,
        &["--cache-to", &format!("{spec},ignore-error=true")],
    );
    assert!(
        stderr.contains(&format!("exporting the build cache to {spec}")),
        "{stderr}"
    );
}
