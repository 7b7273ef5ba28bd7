//! Images made by hand for the tests that drive berth's image verbs: running berth over a store,
//! an OCI manifest over one config and one layer, and an OCI archive to `berth load`.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use berth_layerstore::Digest;
use serde_json::{Value, json};

/// Runs berth with the store under `root`; returns the output whatever the exit status.
pub fn berth_out(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("BERTH_ROOT", root)
        .env("BERTH_LOG", "warn")
        .output()
        .expect("run berth")
}

/// The host's architecture in Go's terms.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An OCI manifest over `config` and the one layer `berth layer create` described in `layer`.
pub fn manifest_over(config: &[u8], layer: &Value) -> Vec<u8> {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::sha256(config).to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": layer["media_type"],
            "digest": layer["digest"],
            "size": layer["size"],
        }],
    });
    serde_json::to_vec(&manifest).unwrap()
}

/// Writes an OCI archive at `path` holding `blobs` and one `index.json` entry, `root`, named
/// `name`.
pub fn pack_oci(path: &Path, blobs: &[&[u8]], root: Value, name: &str) {
    let mut root = root;
    root["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    let index = json!({"schemaVersion": 2, "manifests": [root]});
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        tar.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for blob in blobs {
        add(
            &format!("blobs/sha256/{}", Digest::sha256(blob).hex()),
            blob,
        );
    }
    add("index.json", &serde_json::to_vec(&index).unwrap());
    fs::write(path, tar.into_inner().unwrap()).unwrap();
}
