//! Pull: manifests by tag and by digest, blobs, `HEAD` existence checks, ranged reads, and the
//! 404s for what does not exist (spec "Pull", endpoints end-1 to end-3).

use super::{
    Case, Check, Ctx, Workflow, check_digest_header_syntax, ensure, expect_not_found,
    expect_status, fail, need, require_content_digest, require_content_length,
};
use crate::content::{Blob, Manifest, random_bytes};
use crate::digest;

const W: Workflow = Workflow::Pull;

/// Size of the pulled layer: large enough for ranged reads to be meaningful.
const LAYER_SIZE: usize = 64 * 1024;

/// The pull checks, in order.
pub(super) static CASES: &[Case] = &[
    Case::new(
        "pull.setup",
        W,
        "Setup: push a config, a layer, an image manifest (by tag) and an image index (by tag)",
        "end-4a, end-6, end-7a",
        setup,
    ),
    Case::new(
        "pull.api-version",
        W,
        "GET /v2/ answers 200",
        "end-1, #determining-support",
        api_version,
    ),
    Case::new(
        "pull.head-manifest-by-tag",
        W,
        "HEAD manifest by tag: 200 with Docker-Content-Digest and Content-Length",
        "end-3, #checking-if-content-exists-in-the-registry",
        head_manifest_by_tag,
    ),
    Case::new(
        "pull.head-manifest-by-digest",
        W,
        "HEAD manifest by digest: 200 with Docker-Content-Digest and Content-Length",
        "end-3, #checking-if-content-exists-in-the-registry",
        head_manifest_by_digest,
    ),
    Case::new(
        "pull.get-manifest-by-tag",
        W,
        "GET manifest by tag: 200 with the exact pushed bytes and Docker-Content-Digest",
        "end-3, #pulling-manifests",
        get_manifest_by_tag,
    ),
    Case::new(
        "pull.get-manifest-by-digest",
        W,
        "GET manifest by digest: 200 with the exact pushed bytes and Docker-Content-Digest",
        "end-3, #pulling-manifests",
        get_manifest_by_digest,
    ),
    Case::new(
        "pull.get-index-by-tag",
        W,
        "GET image index by tag: 200 with the exact pushed bytes and Docker-Content-Digest",
        "end-3, #pulling-manifests",
        get_index_by_tag,
    ),
    Case::new(
        "pull.get-manifest-unknown-tag",
        W,
        "GET manifest of an unknown tag: 404 MANIFEST_UNKNOWN",
        "end-3, #pulling-manifests, code-7",
        get_manifest_unknown_tag,
    ),
    Case::new(
        "pull.head-manifest-unknown-tag",
        W,
        "HEAD manifest of an unknown tag: 404",
        "end-3, #checking-if-content-exists-in-the-registry",
        head_manifest_unknown_tag,
    ),
    Case::new(
        "pull.get-manifest-unknown-digest",
        W,
        "GET manifest of an unknown digest: 404 MANIFEST_UNKNOWN",
        "end-3, #pulling-manifests, code-7",
        get_manifest_unknown_digest,
    ),
    Case::new(
        "pull.get-manifest-unknown-repository",
        W,
        "GET manifest in a repository that does not exist: 404 NAME_UNKNOWN or MANIFEST_UNKNOWN",
        "end-3, #pushing-manifests (pull of a nonexistent repository), code-7, code-9",
        get_manifest_unknown_repository,
    ),
    Case::new(
        "pull.get-blob",
        W,
        "GET blob: 200 with the content and a matching Docker-Content-Digest",
        "end-2, #pulling-blobs",
        get_blob,
    ),
    Case::new(
        "pull.head-blob",
        W,
        "HEAD blob: 200 with Docker-Content-Digest and Content-Length",
        "end-2, #checking-if-content-exists-in-the-registry",
        head_blob,
    ),
    Case::new(
        "pull.get-blob-range",
        W,
        "GET blob with Range bytes=a-b: 206 with Content-Range and exactly those bytes",
        "end-2, #pulling-blobs (RFC 9110 section 14)",
        get_blob_range,
    ),
    Case::new(
        "pull.get-blob-range-open",
        W,
        "GET blob with Range bytes=a-: 206 with Content-Range and the tail",
        "end-2, #pulling-blobs (RFC 9110 section 14)",
        get_blob_range_open,
    ),
    Case::new(
        "pull.get-blob-unknown",
        W,
        "GET unknown blob: 404 BLOB_UNKNOWN",
        "end-2, #pulling-blobs, code-1",
        get_blob_unknown,
    ),
    Case::new(
        "pull.head-blob-unknown",
        W,
        "HEAD unknown blob: 404",
        "end-2, #checking-if-content-exists-in-the-registry",
        head_blob_unknown,
    ),
    Case::new(
        "pull.get-blob-other-repository",
        W,
        "GET blob through a repository that does not hold it: 404 BLOB_UNKNOWN",
        "end-2, #pulling-blobs (not found in the repository), code-1",
        get_blob_other_repository,
    ),
];

/// What the pull checks read.
#[derive(Debug, Default)]
pub(crate) struct State {
    fixture: Option<Fixture>,
}

#[derive(Debug)]
struct Fixture {
    layer: Blob,
    manifest: Manifest,
    tag: String,
    index: Manifest,
    index_tag: String,
}

fn fixture(ctx: &Ctx) -> Check<&Fixture> {
    need(&ctx.pull.fixture, "pull.setup")
}

fn setup(ctx: &mut Ctx) -> Check {
    let layer = Blob::random_layer(LAYER_SIZE);
    let config = Blob::image_config(&[&layer]);
    let manifest = Manifest::image(&config, &[&layer]).build();
    let index = Manifest::index(&[&manifest]).build();
    let tag = ctx.tag("pull");
    let index_tag = ctx.tag("pull-index");
    let ns = ctx.ns.clone();
    ctx.push_blobs(&ns, &[&config, &layer])?;
    ctx.push_manifest(&ns, &tag, &manifest)?;
    ctx.push_manifest(&ns, &index_tag, &index)?;
    ctx.pull.fixture = Some(Fixture {
        layer,
        manifest,
        tag,
        index,
        index_tag,
    });
    Ok(())
}

fn api_version(ctx: &mut Ctx) -> Check {
    let response = ctx.client.get("/v2/").send()?;
    expect_status(&response, &[200], "GET /v2/")
}

fn head_manifest(ctx: &Ctx, reference: &str, manifest: &Manifest) -> Check {
    let response = ctx.head_manifest(&ctx.ns, reference)?;
    expect_status(&response, &[200], "HEAD of an existing manifest")?;
    require_content_digest(&response, &manifest.digest)?;
    require_content_length(&response, manifest.size())?;
    ensure(response.body.is_empty(), || {
        format!("HEAD response has a body: {response}")
    })
}

fn head_manifest_by_tag(ctx: &mut Ctx) -> Check {
    let f = fixture(ctx)?;
    head_manifest(ctx, &f.tag, &f.manifest)
}

fn head_manifest_by_digest(ctx: &mut Ctx) -> Check {
    let f = fixture(ctx)?;
    head_manifest(ctx, &f.manifest.digest, &f.manifest)
}

/// GETs a manifest and checks status, exact bytes and `Docker-Content-Digest` (MUST), and the
/// `Content-Type` (SHOULD: noted when it differs or carries parameters).
pub(super) fn get_manifest_exact(
    ctx: &mut Ctx,
    ns: &str,
    reference: &str,
    manifest: &Manifest,
) -> Check {
    let response = ctx.get_manifest(ns, reference)?;
    expect_status(&response, &[200], "GET of an existing manifest")?;
    ensure(response.body == manifest.bytes, || {
        format!(
            "the body is not the exact bytes pushed (digest {} instead of {}): {response}",
            digest::sha256(&response.body),
            manifest.digest
        )
    })?;
    require_content_digest(&response, &manifest.digest)?;
    match response.header("content-type") {
        None => ctx.note("no Content-Type header (spec: SHOULD match the pushed type)"),
        Some(value) => {
            let media_type = response.media_type().unwrap_or_default().to_owned();
            if media_type != manifest.media_type {
                ctx.note(format!(
                    "Content-Type {value} differs from the pushed {} (spec: SHOULD match)",
                    manifest.media_type
                ));
            } else if value.contains(';') {
                ctx.note(format!(
                    "Content-Type {value} has parameters (spec: SHOULD NOT)"
                ));
            }
        }
    }
    Ok(())
}

fn get_manifest_by_tag(ctx: &mut Ctx) -> Check {
    let f = fixture(ctx)?;
    let (ns, tag, manifest) = (ctx.ns.clone(), f.tag.clone(), f.manifest.clone());
    get_manifest_exact(ctx, &ns, &tag, &manifest)
}

fn get_manifest_by_digest(ctx: &mut Ctx) -> Check {
    let f = fixture(ctx)?;
    let (ns, manifest) = (ctx.ns.clone(), f.manifest.clone());
    get_manifest_exact(ctx, &ns, &manifest.digest, &manifest)
}

fn get_index_by_tag(ctx: &mut Ctx) -> Check {
    let f = fixture(ctx)?;
    let (ns, tag, index) = (ctx.ns.clone(), f.index_tag.clone(), f.index.clone());
    get_manifest_exact(ctx, &ns, &tag, &index)
}

fn get_manifest_unknown_tag(ctx: &mut Ctx) -> Check {
    fixture(ctx)?;
    let tag = ctx.tag("never-pushed");
    let response = ctx.get_manifest(&ctx.ns, &tag)?;
    expect_not_found(ctx, &response, &["MANIFEST_UNKNOWN"], "an unknown tag")
}

fn head_manifest_unknown_tag(ctx: &mut Ctx) -> Check {
    fixture(ctx)?;
    let tag = ctx.tag("never-pushed");
    let response = ctx.head_manifest(&ctx.ns, &tag)?;
    expect_status(&response, &[404], "HEAD of an unknown tag")
}

fn get_manifest_unknown_digest(ctx: &mut Ctx) -> Check {
    fixture(ctx)?;
    let unknown = digest::sha256(&random_bytes(32));
    let response = ctx.get_manifest(&ctx.ns, &unknown)?;
    expect_not_found(
        ctx,
        &response,
        &["MANIFEST_UNKNOWN"],
        "an unknown manifest digest",
    )
}

fn get_manifest_unknown_repository(ctx: &mut Ctx) -> Check {
    let ns = format!("{}/never-created-{}", ctx.ns, ctx.run);
    let response = ctx.get_manifest(&ns, "latest")?;
    expect_not_found(
        ctx,
        &response,
        &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"],
        "a manifest in a repository that does not exist",
    )
}

fn get_blob(ctx: &mut Ctx) -> Check {
    let f = fixture(ctx)?;
    let response = ctx
        .client
        .get(&Ctx::blob_path(&ctx.ns, &f.layer.digest))
        .send()?;
    expect_status(&response, &[200], "GET of an existing blob")?;
    ensure(response.body == f.layer.bytes, || {
        format!(
            "the body ({} bytes, {}) is not the blob ({} bytes, {}): {response}",
            response.body.len(),
            digest::sha256(&response.body),
            f.layer.size(),
            f.layer.digest
        )
    })?;
    check_digest_header_syntax(&response)?;
    require_content_digest(&response, &f.layer.digest)
}

fn head_blob(ctx: &mut Ctx) -> Check {
    let f = fixture(ctx)?;
    let response = ctx
        .client
        .head(&Ctx::blob_path(&ctx.ns, &f.layer.digest))
        .send()?;
    expect_status(&response, &[200], "HEAD of an existing blob")?;
    require_content_digest(&response, &f.layer.digest)?;
    require_content_length(&response, f.layer.size())
}

/// Requests `range` of the layer and expects `206` with `bytes start-end/size` and those bytes;
/// a full `200` means the registry ignores `Range`, which the spec allows (SHOULD) and notes.
fn ranged(ctx: &mut Ctx, range: &str, start: usize, end: usize) -> Check {
    let f = fixture(ctx)?;
    let layer = f.layer.clone();
    let response = ctx
        .client
        .get(&Ctx::blob_path(&ctx.ns, &layer.digest))
        .header("Range", range)
        .send()?;
    match response.status {
        206 => {
            let expected_range = format!("bytes {start}-{end}/{}", layer.size());
            let unknown_length = format!("bytes {start}-{end}/*");
            let content_range = super::require_header(&response, "content-range")?;
            ensure(
                content_range == expected_range || content_range == unknown_length,
                || {
                    format!(
                        "Content-Range is {content_range:?}, expected {expected_range:?}: {response}"
                    )
                },
            )?;
            ensure(response.body == layer.bytes[start..=end], || {
                format!(
                    "the body ({} bytes) is not bytes {start}-{end} of the blob: {response}",
                    response.body.len()
                )
            })
        }
        200 => {
            ensure(response.body == layer.bytes, || {
                format!("200 answer to a ranged GET does not carry the whole blob: {response}")
            })?;
            ctx.note("Range is ignored: 200 with the whole blob (spec: SHOULD support Range)");
            Ok(())
        }
        _ => fail(format!(
            "expected 206 (or 200 when Range is unsupported) for {range}, got {}: {response}",
            response.status
        )),
    }
}

fn get_blob_range(ctx: &mut Ctx) -> Check {
    ranged(ctx, "bytes=10-4105", 10, 4105)
}

fn get_blob_range_open(ctx: &mut Ctx) -> Check {
    let start = LAYER_SIZE - 1000;
    ranged(ctx, &format!("bytes={start}-"), start, LAYER_SIZE - 1)
}

fn get_blob_unknown(ctx: &mut Ctx) -> Check {
    fixture(ctx)?;
    let unknown = digest::sha256(&random_bytes(32));
    let response = ctx.client.get(&Ctx::blob_path(&ctx.ns, &unknown)).send()?;
    expect_not_found(ctx, &response, &["BLOB_UNKNOWN"], "an unknown blob")
}

fn head_blob_unknown(ctx: &mut Ctx) -> Check {
    fixture(ctx)?;
    let unknown = digest::sha256(&random_bytes(32));
    let response = ctx.client.head(&Ctx::blob_path(&ctx.ns, &unknown)).send()?;
    expect_status(&response, &[404], "HEAD of an unknown blob")
}

fn get_blob_other_repository(ctx: &mut Ctx) -> Check {
    let f = fixture(ctx)?;
    let layer_digest = f.layer.digest.clone();
    let other = format!("{}/other-{}", ctx.ns, ctx.run);
    // The other repository exists (it holds a blob of its own) but not the pulled layer.
    ctx.push_blob(&other, &Blob::random_layer(64))?;
    let response = ctx
        .client
        .get(&Ctx::blob_path(&other, &layer_digest))
        .send()?;
    expect_not_found(
        ctx,
        &response,
        &["BLOB_UNKNOWN"],
        "a blob that exists only in another repository",
    )
}
