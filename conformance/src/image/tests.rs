use std::io::Write;

use serde_json::json;

use super::*;

/// A layer entry for the tests.
enum Item<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8]),
    Owned(&'a str, u64, u64),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn layer(items: &[Item]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        match *item {
            Item::Dir(path, mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(mode);
                builder.append_data(&mut header, path, &[][..]).unwrap();
            }
            Item::File(path, mode, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, data).unwrap();
            }
            Item::Owned(path, uid, gid) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_uid(uid);
                header.set_gid(gid);
                builder.append_data(&mut header, path, &[][..]).unwrap();
            }
            Item::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                builder.append_link(&mut header, path, target).unwrap();
            }
            Item::Hardlink(path, target) => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_mode(0o644);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

fn listing(layers: &[Vec<u8>]) -> String {
    Filesystem::from_layers(layers).unwrap().listing()
}

const HI: &str = "sha256:8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4";

#[test]
fn whiteouts_remove_lower_paths_and_their_children() {
    let lower = layer(&[
        Item::Dir("a/", 0o755),
        Item::File("a/keep", 0o644, b"hi"),
        Item::File("a/gone", 0o644, b"hi"),
        Item::Dir("d/", 0o700),
        Item::File("d/x", 0o644, b"hi"),
    ]);
    let upper = layer(&[
        Item::File("a/.wh.gone", 0o644, b""),
        Item::File(".wh.d", 0, b""),
    ]);
    assert_eq!(
        listing(&[lower, upper]),
        format!("/a dir 0755 0:0\n/a/keep file 0644 0:0 size=2 {HI}\n")
    );
}

#[test]
fn an_opaque_directory_keeps_only_what_its_own_layer_wrote() {
    let lower = layer(&[
        Item::Dir("d/", 0o755),
        Item::File("d/old", 0o644, b"hi"),
        Item::Dir("d/sub/", 0o755),
        Item::File("d/sub/old", 0o644, b"hi"),
    ]);
    // The marker may come after the layer's own entries in the directory.
    let upper = layer(&[
        Item::Dir("d/", 0o750),
        Item::File("d/new", 0o600, b"hi"),
        Item::File("d/.wh..wh..opq", 0, b""),
    ]);
    assert_eq!(
        listing(&[lower, upper]),
        format!("/d dir 0750 0:0\n/d/new file 0600 0:0 size=2 {HI}\n")
    );
}

#[test]
fn hardlinks_form_groups_named_by_their_smallest_path() {
    let one = layer(&[
        Item::File("z", 0o4755, b"hi"),
        Item::Hardlink("b", "z"),
        Item::Hardlink("./c", "./z"),
        Item::File("solo", 0o644, b"hi"),
    ]);
    let text = listing(std::slice::from_ref(&one));
    assert_eq!(
        text,
        format!(
            "/b file 4755 0:0 size=2 {HI} hardlink-group=/b\n\
             /c file 4755 0:0 size=2 {HI} hardlink-group=/b\n\
             /solo file 0644 0:0 size=2 {HI}\n\
             /z file 4755 0:0 size=2 {HI} hardlink-group=/b\n"
        )
    );
    // Replacing one path in a later layer breaks it out of the group.
    let upper = layer(&[Item::File("b", 0o644, b"hi")]);
    let text = listing(&[one, upper]);
    assert!(
        text.contains(&format!("/b file 0644 0:0 size=2 {HI}\n")),
        "{text}"
    );
    assert!(text.contains("/c file 4755 0:0 size=2") && text.contains("hardlink-group=/c"));
}

#[test]
fn missing_parents_are_made_and_directories_keep_children() {
    let lower = layer(&[
        Item::File("x/y/z", 0o644, b"hi"),
        Item::Owned("x/owned", 1000, 50),
    ]);
    let upper = layer(&[Item::Dir("x/", 0o700), Item::Symlink("x/l", "../y")]);
    assert_eq!(
        listing(&[lower, upper]),
        format!(
            "/x dir 0700 0:0\n/x/l symlink 0777 0:0 -> ../y\n/x/owned file 0644 1000:50 size=0 \
             sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             /x/y dir 0755 0:0\n/x/y/z file 0644 0:0 size=2 {HI}\n"
        )
    );
}

#[test]
fn a_file_replaces_a_directory_and_its_children() {
    let lower = layer(&[Item::Dir("p/", 0o755), Item::File("p/q", 0o644, b"hi")]);
    let upper = layer(&[Item::File("p", 0o644, b"hi")]);
    assert_eq!(
        listing(&[lower, upper]),
        format!("/p file 0644 0:0 size=2 {HI}\n")
    );
}

#[test]
fn bad_entries_are_errors() {
    let dangling = layer(&[Item::Hardlink("a", "missing")]);
    assert!(matches!(
        Filesystem::from_layers(&[dangling]),
        Err(ImageError::Layer { .. })
    ));
    let through_file = layer(&[Item::File("f", 0o644, b""), Item::File("f/g", 0o644, b"")]);
    assert!(Filesystem::from_layers(&[through_file]).is_err());
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{:x}", sha2::Sha256::digest(data))
}

fn config_for(layers: &[Vec<u8>]) -> serde_json::Value {
    json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2030-01-01T00:00:00Z",
        "config": { "Env": ["PATH=/bin"], "Cmd": ["sh"], "Hostname": "", "Labels": null },
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| sha256(l)).collect::<Vec<_>>() },
        "history": [{ "created": "2024-01-01T00:00:00Z", "created_by": "base" }],
    })
}

fn write_tar(path: &std::path::Path, members: &[(String, Vec<u8>)]) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in members {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, name, &data[..]).unwrap();
    }
    builder.finish().unwrap();
}

/// The same image as a docker-archive and as an OCI archive with a gzip and a zstd layer reads
/// back the same.
#[test]
fn docker_archive_and_oci_archive_read_alike() {
    let layers = vec![
        layer(&[Item::Dir("etc/", 0o755), Item::File("etc/a", 0o644, b"hi")]),
        layer(&[
            Item::File("etc/.wh.a", 0, b""),
            Item::File("etc/b", 0o600, b"hi"),
        ]),
    ];
    let config = config_for(&layers);
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let docker = dir.path().join("docker.tar");
    write_tar(
        &docker,
        &[
            (
                "manifest.json".into(),
                serde_json::to_vec(&json!([{
                    "Config": "cfg.json", "RepoTags": ["x:y"], "Layers": ["l0/layer.tar", "l1/layer.tar"]
                }]))
                .unwrap(),
            ),
            ("cfg.json".into(), config_bytes.clone()),
            ("l0/layer.tar".into(), layers[0].clone()),
            ("l1/layer.tar".into(), layers[1].clone()),
        ],
    );

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layers[0]).unwrap();
    let blobs = [
        gz.finish().unwrap(),
        zstd::stream::encode_all(&layers[1][..], 3).unwrap(),
    ];
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": sha256(&config_bytes), "size": config_bytes.len() },
        "layers": blobs.iter().map(|b| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256(b), "size": b.len() })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": sha256(&manifest), "size": manifest.len() }],
    }))
    .unwrap();
    let blob = |data: &[u8]| {
        (
            format!("blobs/sha256/{}", &sha256(data)[7..]),
            data.to_vec(),
        )
    };
    let oci = dir.path().join("oci.tar");
    write_tar(
        &oci,
        &[
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".into(), index),
            blob(&manifest),
            blob(&config_bytes),
            blob(&blobs[0]),
            blob(&blobs[1]),
        ],
    );

    let from_docker = Image::open(&docker).unwrap();
    let from_oci = Image::open(&oci).unwrap();
    let normalisation = Normalisation::default();
    assert_eq!(
        compare(&from_docker, &from_oci, &normalisation).unwrap(),
        vec![]
    );
    assert_eq!(
        from_oci.filesystem().unwrap().listing(),
        format!("/etc dir 0755 0:0\n/etc/b file 0600 0:0 size=2 {HI}\n")
    );

    // A config whose diff_id does not match its layer is refused.
    let mut wrong = config.clone();
    wrong["rootfs"]["diff_ids"][1] = json!(sha256(b"other"));
    let bad = dir.path().join("bad.tar");
    write_tar(
        &bad,
        &[
            (
                "manifest.json".into(),
                serde_json::to_vec(&json!([{ "Config": "c", "Layers": ["a", "b"] }])).unwrap(),
            ),
            ("c".into(), serde_json::to_vec(&wrong).unwrap()),
            ("a".into(), layers[0].clone()),
            ("b".into(), layers[1].clone()),
        ],
    );
    assert!(matches!(Image::open(&bad), Err(ImageError::Digest { .. })));
}

#[test]
fn configs_compare_after_normalisation() {
    let normalisation = Normalisation {
        base_histories: vec![vec![
            json!({ "created": "2024-01-01T00:00:00Z", "created_by": "base", "comment": "imported" }),
        ]],
    };
    let docker = json!({
        "architecture": "amd64", "os": "linux", "created": "2026-03-04T05:06:07.123Z",
        "container_config": { "Hostname": "abc" },
        "config": { "Env": ["A=1"], "Cmd": null, "Hostname": "", "Image": "sha256:1",
                    "Healthcheck": { "Test": ["CMD", "true"], "Retries": 0 } },
        "rootfs": { "type": "layers", "diff_ids": ["sha256:1", "sha256:2"] },
        "history": [
            { "created": "2024-01-01T00:00:00Z", "created_by": "base", "comment": "imported" },
            { "created": "2026-03-04T05:06:07Z", "created_by": "RUN /bin/sh -c true # buildkit",
              "comment": "buildkit.dockerfile.v0" },
            { "created": "2026-03-04T05:06:07Z", "created_by": "ENV A=1",
              "comment": "buildkit.dockerfile.v0", "empty_layer": true },
        ],
    });
    let berth = json!({
        "architecture": "amd64", "os": "linux", "created": "2026-03-04T06:00:00+01:00",
        "config": { "Env": ["A=1"], "Healthcheck": { "Test": ["CMD", "true"] } },
        "rootfs": { "type": "layers", "diff_ids": ["sha256:3", "sha256:4"] },
        "history": [
            { "created": "2024-01-01T00:00:00Z", "created_by": "base", "comment": "imported" },
            { "created": "2026-03-04T05:06:09Z", "created_by": "RUN /bin/sh -c true" },
            { "created": "2026-03-04T05:06:09Z", "created_by": "ENV A=1", "empty_layer": true },
        ],
    });
    let left = ConfigView::new(&docker, &normalisation);
    let right = ConfigView::new(&berth, &normalisation);
    assert_eq!(left.compare(&right), vec![], "{}", left.listing());

    let mut changed = berth.clone();
    changed["config"]["Cmd"] = json!([]);
    changed["history"][0]["comment"] = json!("other");
    changed["rootfs"]["diff_ids"] = json!(["sha256:3"]);
    let keys: Vec<String> = left
        .compare(&ConfigView::new(&changed, &normalisation))
        .into_iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(
        keys,
        [
            "config.Cmd",
            "history.inherited",
            "history[0].comment",
            "history[0].created",
            "rootfs.diff_ids.len"
        ]
    );
}

#[test]
fn rfc3339_times_parse() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339("2024-01-01T00:00:00Z"), Some(1_704_067_200));
    assert_eq!(
        parse_rfc3339("2024-01-01T01:30:00.123456789+01:30"),
        Some(1_704_067_200)
    );
    assert_eq!(
        parse_rfc3339("2000-02-29T12:00:00-00:00"),
        Some(951_825_600)
    );
    assert_eq!(parse_rfc3339("yesterday"), None);
}
