//! Push: blob uploads (monolithic, single POST, streamed, chunked), upload status and cancel,
//! cross-repository mounts, and manifest pushes by tag and by digest, with the refusals the spec
//! requires (spec "Push", endpoints end-4 to end-7, end-11, end-13, end-14).

use reqwest::{Method, Url};

use super::{
    Case, Check, Ctx, Workflow, check_error_body, ensure, expect_status, fail,
    require_content_digest, require_header, require_location, skip, with_query,
};
use crate::content::{Blob, Manifest, media_type, random_bytes, random_id};
use crate::digest;
use crate::http::Response;

const W: Workflow = Workflow::Push;

/// The push checks, in order.
pub(super) static CASES: &[Case] = &[
    Case::new(
        "push.post-upload-session",
        W,
        "POST starts an upload session: 202 with a Location unique to the session",
        "end-4a, #post-then-put",
        post_upload_session,
    ),
    Case::new(
        "push.monolithic-put",
        W,
        "POST then PUT with digest: 201 with a Location the blob can be pulled from",
        "end-4a, end-6, #post-then-put",
        monolithic_put,
    ),
    Case::new(
        "push.single-post",
        W,
        "Single POST with digest and body: 201 with Location, or 202 and the upload continues with PUT",
        "end-4b, #single-post",
        single_post,
    ),
    Case::new(
        "push.empty-blob",
        W,
        "Zero-byte blob: pushed with POST then PUT, then HEAD and GET give 0 bytes",
        "end-6, end-2, #post-then-put",
        empty_blob,
    ),
    Case::new(
        "push.streamed-patch",
        W,
        "Streamed PATCH of the whole blob without Content-Range (as docker push sends it), then PUT: 202 with Location and Range, then 201",
        "end-5, end-6, #pushing-a-blob-in-chunks",
        streamed_patch,
    ),
    Case::new(
        "push.chunked",
        W,
        "Chunked PATCHes with Content-Range: each 202 with Location and Range 0-<end>, closed by PUT with 201",
        "end-5, end-6, #pushing-a-blob-in-chunks",
        chunked,
    ),
    Case::new(
        "push.upload-status",
        W,
        "GET of an upload session: 204 with Location and Range 0-<end>",
        "end-13, #pushing-a-blob-in-chunks",
        upload_status,
    ),
    Case::new(
        "push.chunk-out-of-order",
        W,
        "Out-of-order chunk: 416, the session keeps its offset and the upload can still complete",
        "end-5, end-13, #pushing-a-blob-in-chunks",
        chunk_out_of_order,
    ),
    Case::new(
        "push.final-chunk-in-put",
        W,
        "Final chunk in the closing PUT with Content-Range: 201 and the whole blob stored",
        "end-6, #pushing-a-blob-in-chunks",
        final_chunk_in_put,
    ),
    Case::new(
        "push.final-chunk-out-of-order",
        W,
        "Out-of-order final chunk in the closing PUT: 416",
        "end-6, #pushing-a-blob-in-chunks",
        final_chunk_out_of_order,
    ),
    Case::new(
        "push.cancel-upload",
        W,
        "DELETE of an upload session: 204, then the session is gone (404 BLOB_UPLOAD_UNKNOWN)",
        "end-14, end-13, #cancel-a-blob-upload, code-3",
        cancel_upload,
    ),
    Case::new(
        "push.upload-unknown-session",
        W,
        "GET and PATCH of an upload session that never existed: 404 BLOB_UPLOAD_UNKNOWN (or _INVALID)",
        "end-13, end-5, code-3",
        upload_unknown_session,
    ),
    Case::new(
        "push.sha512-blob",
        W,
        "Blob pushed with digest-algorithm=sha512: 201 and pullable by its sha512 digest (400 if unsupported)",
        "end-4c, end-6, #pushing-a-blob-in-chunks, #pushing-blobs",
        sha512_blob,
    ),
    Case::new(
        "push.put-digest-mismatch",
        W,
        "PUT with a digest that does not match the content: 400 DIGEST_INVALID and nothing stored",
        "end-6, #pushing-blobs, code-4",
        put_digest_mismatch,
    ),
    Case::new(
        "push.put-digest-invalid",
        W,
        "PUT with a malformed digest or an unsupported algorithm: 400",
        "end-6, #pushing-blobs",
        put_digest_invalid,
    ),
    Case::new(
        "push.mount",
        W,
        "Cross-repository mount: 201 with Location and the blob readable in the target (202 if declined)",
        "end-11, #mounting-a-blob-from-another-repository",
        mount,
    ),
    Case::new(
        "push.mount-unknown-blob",
        W,
        "Mount of a blob that does not exist: never 201; 202 upload session (or 404)",
        "end-11, #mounting-a-blob-from-another-repository",
        mount_unknown_blob,
    ),
    Case::new(
        "push.mount-without-from",
        W,
        "Mount without from: 201 with the blob mounted, or 202 upload session",
        "end-11, #mounting-a-blob-from-another-repository",
        mount_without_from,
    ),
    Case::new(
        "push.manifest-by-tag",
        W,
        "PUT manifest by tag: 201 with a pullable Location; pulled back byte for byte",
        "end-7a, #pushing-manifests",
        manifest_by_tag,
    ),
    Case::new(
        "push.manifest-by-digest",
        W,
        "PUT manifest by digest: 201 with a pullable Location; pulled back byte for byte",
        "end-7a, #pushing-manifests",
        manifest_by_digest,
    ),
    Case::new(
        "push.image-index",
        W,
        "PUT image index over two pushed manifests: 201; pulled back byte for byte",
        "end-7a, #pushing-manifests",
        image_index,
    ),
    Case::new(
        "push.manifest-retag",
        W,
        "PUT of another manifest to an existing tag moves the tag; the first stays pullable by digest",
        "end-7a, #pushing-manifests, #definitions (tag)",
        manifest_retag,
    ),
    Case::new(
        "push.manifest-invalid",
        W,
        "PUT of a body that is not a manifest: refused with a 4xx (MANIFEST_INVALID), nothing stored",
        "end-7a, #pushing-manifests, code-6",
        manifest_invalid,
    ),
    Case::new(
        "push.manifest-unknown-blob",
        W,
        "Manifest referencing a blob that was never pushed: refused with MANIFEST_BLOB_UNKNOWN",
        "end-7a, #push, code-5",
        manifest_unknown_blob,
    ),
    Case::new(
        "push.manifest-digest-mismatch",
        W,
        "PUT manifest by a digest that is not the digest of its bytes: refused, nothing stored",
        "end-7a, #pushing-manifests, code-4",
        manifest_digest_mismatch,
    ),
    Case::new(
        "push.manifest-subject-unknown",
        W,
        "Manifest whose subject does not exist: accepted with 201",
        "end-7a, #push, #pushing-manifests-with-subject",
        manifest_subject_unknown,
    ),
    Case::new(
        "push.manifest-tag-params",
        W,
        "PUT manifest by digest with tag parameters: an OCI-Tag header for each tag created",
        "end-7b, #pushing-manifests",
        manifest_tag_params,
    ),
];

/// Chunk size when the registry names no minimum.
const CHUNK: usize = 16 * 1024;

/// `PUT <location>?digest=<digest>` with `body` (possibly empty) and optional `Content-Range`.
fn put_upload(
    ctx: &Ctx,
    location: &Url,
    digest: &str,
    body: &[u8],
    content_range: Option<String>,
) -> Check<Response> {
    let mut request = ctx
        .client
        .request_url(Method::PUT, with_query(location, "digest", digest));
    if !body.is_empty() {
        request = request.header("Content-Type", "application/octet-stream");
    }
    if let Some(range) = content_range {
        request = request.header("Content-Range", range);
    }
    Ok(request.body(body.to_vec()).send()?)
}

/// `PATCH <location>` with `data` as the chunk starting at `start`.
fn patch_chunk(ctx: &Ctx, location: &Url, data: &[u8], start: usize) -> Check<Response> {
    let end = start + data.len() - 1;
    Ok(ctx
        .client
        .request_url(Method::PATCH, location.clone())
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("{start}-{end}"))
        .body(data.to_vec())
        .send()?)
}

/// Checks the spec's `Range: 0-<end>` header.
fn require_range(response: &Response, end: usize) -> Check {
    let range = require_header(response, "range")?;
    let expected = format!("0-{end}");
    ensure(range == expected, || {
        format!("Range is {range:?}, expected {expected:?}: {response}")
    })
}

/// Checks a chunk was accepted up to `end` (202, Location, Range) and returns the location to
/// use next.
fn chunk_accepted(response: &Response, end: usize) -> Check<Url> {
    expect_status(response, &[202], "an accepted chunk")?;
    let location = require_location(response)?;
    require_range(response, end)?;
    Ok(location)
}

/// Checks a closing PUT (201 with Location) and that the blob then reads back from `ns`.
fn upload_completed(ctx: &Ctx, response: &Response, ns: &str, blob: &Blob) -> Check {
    expect_status(response, &[201], "the completed upload")?;
    let location = require_location(response)?;
    let pulled = ctx.client.request_url(Method::GET, location).send()?;
    expect_status(
        &pulled,
        &[200],
        "GET of the Location returned for the uploaded blob",
    )?;
    ensure(pulled.body == blob.bytes, || {
        format!(
            "the blob read back from Location is not what was uploaded ({} bytes, {}): {pulled}",
            pulled.body.len(),
            digest::sha256(&pulled.body)
        )
    })?;
    blob_present(ctx, ns, blob)
}

/// Checks HEAD of the blob in `ns` answers 200 with its size.
fn blob_present(ctx: &Ctx, ns: &str, blob: &Blob) -> Check {
    let head = ctx.client.head(&Ctx::blob_path(ns, &blob.digest)).send()?;
    expect_status(&head, &[200], "HEAD of the uploaded blob")?;
    super::require_content_length(&head, blob.size())
}

/// The registry's `OCI-Chunk-Min-Length`, if it sends one on `response`.
fn chunk_min_length(response: &Response) -> Check<Option<usize>> {
    match response.header("oci-chunk-min-length") {
        None => Ok(None),
        Some(value) => match value.trim().parse() {
            Ok(n) => Ok(Some(n)),
            Err(_) => fail(format!(
                "OCI-Chunk-Min-Length {value:?} is not a size: {response}"
            )),
        },
    }
}

/// Starts a chunked upload: returns the location and the chunk size to use.
fn start_chunked(ctx: &Ctx) -> Check<(Url, usize)> {
    let response = ctx.client.post(&Ctx::uploads_path(&ctx.ns)).send()?;
    expect_status(&response, &[202], "a new upload session")?;
    let location = require_location(&response)?;
    let chunk = chunk_min_length(&response)?.unwrap_or(0).max(CHUNK);
    Ok((location, chunk))
}

fn post_upload_session(ctx: &mut Ctx) -> Check {
    let first = ctx.start_upload(&ctx.ns)?;
    let second = ctx.start_upload(&ctx.ns);
    ctx.abandon_upload(&first);
    let second = second?;
    ctx.abandon_upload(&second);
    ensure(first != second, || {
        format!("two POSTs returned the same upload location {first}")
    })
}

fn monolithic_put(ctx: &mut Ctx) -> Check {
    let blob = Blob::random_layer(5000);
    let location = ctx.start_upload(&ctx.ns)?;
    let response = put_upload(ctx, &location, &blob.digest, &blob.bytes, None)?;
    upload_completed(ctx, &response, &ctx.ns, &blob)
}

fn single_post(ctx: &mut Ctx) -> Check {
    let blob = Blob::random_layer(3000);
    let url = ctx.client.url(&format!(
        "{}?digest={}",
        Ctx::uploads_path(&ctx.ns),
        blob.digest
    ))?;
    let response = ctx
        .client
        .request_url(Method::POST, url)
        .header("Content-Type", "application/octet-stream")
        .body(blob.bytes.clone())
        .send()?;
    match response.status {
        201 => upload_completed(ctx, &response, &ctx.ns, &blob),
        202 => {
            let location = require_location(&response)?;
            ctx.note("single POST not supported: 202, completed with PUT (spec: MAY)");
            let response = put_upload(ctx, &location, &blob.digest, &blob.bytes, None)?;
            upload_completed(ctx, &response, &ctx.ns, &blob)
        }
        _ => fail(format!(
            "expected 201, or 202 to continue with PUT, got {}: {response}",
            response.status
        )),
    }
}

fn empty_blob(ctx: &mut Ctx) -> Check {
    let blob = Blob::new(media_type::OCI_LAYER, Vec::new());
    let location = ctx.start_upload(&ctx.ns)?;
    let response = put_upload(ctx, &location, &blob.digest, &[], None)?;
    upload_completed(ctx, &response, &ctx.ns, &blob)?;
    let head = ctx
        .client
        .head(&Ctx::blob_path(&ctx.ns, &blob.digest))
        .send()?;
    require_content_digest(&head, &blob.digest)
}

fn streamed_patch(ctx: &mut Ctx) -> Check {
    let blob = Blob::random_layer(40_000);
    let location = ctx.start_upload(&ctx.ns)?;
    let response = ctx
        .client
        .request_url(Method::PATCH, location)
        .header("Content-Type", "application/octet-stream")
        .body(blob.bytes.clone())
        .send()?;
    let location = chunk_accepted(&response, blob.size() - 1)?;
    let response = put_upload(ctx, &location, &blob.digest, &[], None)?;
    upload_completed(ctx, &response, &ctx.ns, &blob)
}

fn chunked(ctx: &mut Ctx) -> Check {
    let (mut location, chunk) = start_chunked(ctx)?;
    let blob = Blob::random_layer(2 * chunk + 1234);
    let mut start = 0;
    while start < blob.size() {
        let end = (start + chunk).min(blob.size());
        let response = patch_chunk(ctx, &location, &blob.bytes[start..end], start)?;
        location = chunk_accepted(&response, end - 1)?;
        start = end;
    }
    let response = put_upload(ctx, &location, &blob.digest, &[], None)?;
    upload_completed(ctx, &response, &ctx.ns, &blob)
}

fn upload_status(ctx: &mut Ctx) -> Check {
    let (location, chunk) = start_chunked(ctx)?;
    let blob = Blob::random_layer(chunk + 100);
    let response = patch_chunk(ctx, &location, &blob.bytes[..chunk], 0)?;
    let location = chunk_accepted(&response, chunk - 1)?;
    let status = ctx
        .client
        .request_url(Method::GET, location.clone())
        .send()?;
    let verdict = expect_status(&status, &[204], "GET of an active upload session")
        .and_then(|()| require_location(&status).map(drop))
        .and_then(|()| require_range(&status, chunk - 1));
    ctx.abandon_upload(&location);
    verdict
}

fn chunk_out_of_order(ctx: &mut Ctx) -> Check {
    let (location, chunk) = start_chunked(ctx)?;
    let blob = Blob::random_layer(2 * chunk);
    let response = patch_chunk(ctx, &location, &blob.bytes[..chunk], 0)?;
    let location = chunk_accepted(&response, chunk - 1)?;
    // Skips 100 bytes: the chunk does not start where the last one ended.
    let response = patch_chunk(ctx, &location, &blob.bytes[chunk + 100..], chunk + 100)?;
    if response.status != 416 {
        ctx.abandon_upload(&location);
        return fail(format!(
            "expected 416 for a chunk starting at {} when {} bytes were uploaded, got {}: {response}",
            chunk + 100,
            chunk,
            response.status
        ));
    }
    let status = ctx
        .client
        .request_url(Method::GET, location.clone())
        .send()?;
    expect_status(&status, &[204], "GET of the upload session after a 416")?;
    require_range(&status, chunk - 1)?;
    let location = require_location(&status)?;
    let response = patch_chunk(ctx, &location, &blob.bytes[chunk..], chunk)?;
    let location = chunk_accepted(&response, blob.size() - 1)?;
    let response = put_upload(ctx, &location, &blob.digest, &[], None)?;
    upload_completed(ctx, &response, &ctx.ns, &blob)
}

fn final_chunk_in_put(ctx: &mut Ctx) -> Check {
    let (location, chunk) = start_chunked(ctx)?;
    let blob = Blob::random_layer(chunk + 777);
    let response = patch_chunk(ctx, &location, &blob.bytes[..chunk], 0)?;
    let location = chunk_accepted(&response, chunk - 1)?;
    let range = format!("{chunk}-{}", blob.size() - 1);
    let response = put_upload(
        ctx,
        &location,
        &blob.digest,
        &blob.bytes[chunk..],
        Some(range),
    )?;
    upload_completed(ctx, &response, &ctx.ns, &blob)
}

fn final_chunk_out_of_order(ctx: &mut Ctx) -> Check {
    let (location, chunk) = start_chunked(ctx)?;
    let blob = Blob::random_layer(2 * chunk);
    let response = patch_chunk(ctx, &location, &blob.bytes[..chunk], 0)?;
    let location = chunk_accepted(&response, chunk - 1)?;
    let start = chunk + 100;
    let range = format!("{start}-{}", blob.size() - 1);
    let response = put_upload(
        ctx,
        &location,
        &blob.digest,
        &blob.bytes[start..],
        Some(range),
    )?;
    ctx.abandon_upload(&location);
    expect_status(&response, &[416], "a closing PUT whose chunk skips bytes")
}

fn cancel_upload(ctx: &mut Ctx) -> Check {
    let (location, chunk) = start_chunked(ctx)?;
    let blob = Blob::random_layer(chunk);
    let response = patch_chunk(ctx, &location, &blob.bytes, 0)?;
    let location = chunk_accepted(&response, chunk - 1)?;
    let response = ctx
        .client
        .request_url(Method::DELETE, location.clone())
        .send()?;
    match response.status {
        204 => {}
        200 | 202 => ctx.note(format!(
            "cancel answered {} (spec: SHOULD be 204)",
            response.status
        )),
        _ => {
            return fail(format!(
                "expected 204 for DELETE of an upload session, got {}: {response}",
                response.status
            ));
        }
    }
    let status = ctx.client.request_url(Method::GET, location).send()?;
    expect_status(&status, &[404], "GET of a cancelled upload session")?;
    check_error_body(ctx, &status, &["BLOB_UPLOAD_UNKNOWN"])
}

fn put_digest_mismatch(ctx: &mut Ctx) -> Check {
    let blob = Blob::random_layer(2000);
    let claimed = digest::sha256(&random_bytes(2000));
    let location = ctx.start_upload(&ctx.ns)?;
    let response = put_upload(ctx, &location, &claimed, &blob.bytes, None)?;
    ctx.abandon_upload(&location);
    expect_status(
        &response,
        &[400],
        "a PUT whose digest does not match the content",
    )?;
    check_error_body(ctx, &response, &["DIGEST_INVALID"])?;
    let head = ctx.client.head(&Ctx::blob_path(&ctx.ns, &claimed)).send()?;
    expect_status(&head, &[404], "HEAD of the digest that was refused")
}

fn put_digest_invalid(ctx: &mut Ctx) -> Check {
    let blob = Blob::random_layer(100);
    for bad in [
        "sha256:not-a-hex-digest",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        let location = ctx.start_upload(&ctx.ns)?;
        let response = put_upload(ctx, &location, bad, &blob.bytes, None)?;
        ctx.abandon_upload(&location);
        match response.status {
            400 => check_error_body(
                ctx,
                &response,
                &["DIGEST_INVALID", "BLOB_UPLOAD_INVALID", "UNSUPPORTED"],
            )?,
            404 | 416 => ctx.note(format!(
                "digest {bad:?} refused with {} (spec: SHOULD be 400)",
                response.status
            )),
            _ => {
                return fail(format!(
                    "expected 400 for the digest {bad:?}, got {}: {response}",
                    response.status
                ));
            }
        }
    }
    Ok(())
}

/// `POST /v2/<target>/blobs/uploads/?mount=<digest>[&from=<from>]`.
fn post_mount(ctx: &Ctx, target: &str, digest: &str, from: Option<&str>) -> Check<Response> {
    let mut path = format!("{}?mount={digest}", Ctx::uploads_path(target));
    if let Some(from) = from {
        path.push_str(&format!("&from={from}"));
    }
    Ok(ctx.client.post(&path).send()?)
}

/// Judges a mount answer: 201 must leave the blob readable in `target`; 202 must be an upload
/// session (cancelled here), noted as a declined mount.
fn judge_mount(ctx: &mut Ctx, response: &Response, target: &str, blob: &Blob) -> Check {
    match response.status {
        201 => {
            if let Some(value) = response.header("docker-content-digest") {
                ensure(value == blob.digest, || {
                    format!(
                        "Docker-Content-Digest {value} is not the mounted {}: {response}",
                        blob.digest
                    )
                })?;
            }
            upload_completed(ctx, response, target, blob)
        }
        202 => {
            let location = require_location(response)?;
            ctx.abandon_upload(&location);
            ctx.note(
                "the mount was declined: 202 upload session (spec: SHOULD when unable to mount)",
            );
            Ok(())
        }
        _ => fail(format!(
            "expected 201 (mounted) or 202 (upload session), got {}: {response}",
            response.status
        )),
    }
}

fn mount(ctx: &mut Ctx) -> Check {
    let blob = Blob::random_layer(3000);
    let (ns, cross) = (ctx.ns.clone(), ctx.cross_ns.clone());
    ctx.push_blob(&ns, &blob)?;
    let response = post_mount(ctx, &cross, &blob.digest, Some(&ns))?;
    judge_mount(ctx, &response, &cross, &blob)
}

fn mount_unknown_blob(ctx: &mut Ctx) -> Check {
    let unknown = digest::sha256(&random_bytes(64));
    let (ns, cross) = (ctx.ns.clone(), ctx.cross_ns.clone());
    let response = post_mount(ctx, &cross, &unknown, Some(&ns))?;
    match response.status {
        202 => {
            let location = require_location(&response)?;
            ctx.abandon_upload(&location);
            Ok(())
        }
        404 => Ok(()),
        _ => fail(format!(
            "expected 202 (upload session) or 404 for a mount of a blob that does not exist, got {}: {response}",
            response.status
        )),
    }
}

fn mount_without_from(ctx: &mut Ctx) -> Check {
    let blob = Blob::random_layer(3000);
    let (ns, cross) = (ctx.ns.clone(), ctx.cross_ns.clone());
    ctx.push_blob(&ns, &blob)?;
    let response = post_mount(ctx, &cross, &blob.digest, None)?;
    if response.status == 201 {
        ctx.note("mounted without from (spec: MAY)");
    }
    judge_mount(ctx, &response, &cross, &blob)
}

/// Pushes a config and a layer to `ns` and returns an image manifest over them (not pushed).
pub(super) fn image_with_blobs(ctx: &Ctx, ns: &str) -> Check<(Manifest, Blob, Blob)> {
    let layer = Blob::random_layer(1024);
    let config = Blob::image_config(&[&layer]);
    ctx.push_blobs(ns, &[&config, &layer])?;
    let manifest = Manifest::image(&config, &[&layer]).build();
    Ok((manifest, config, layer))
}

/// Judges a manifest PUT: 201, a Location that pulls the manifest back, and a
/// `Docker-Content-Digest` equal to the manifest's digest when present.
fn manifest_accepted(ctx: &mut Ctx, response: &Response, manifest: &Manifest) -> Check {
    expect_status(response, &[201], "the pushed manifest")?;
    let location = require_location(response)?;
    match response.header("docker-content-digest") {
        Some(value) => ensure(value == manifest.digest, || {
            format!(
                "Docker-Content-Digest {value} is not the manifest's digest {}: {response}",
                manifest.digest
            )
        })?,
        None => ctx.note("no Docker-Content-Digest on the manifest PUT"),
    }
    let pulled = ctx
        .client
        .request_url(Method::GET, location)
        .header("Accept", media_type::accept_manifests())
        .send()?;
    expect_status(
        &pulled,
        &[200],
        "GET of the Location returned for the manifest",
    )?;
    ensure(pulled.body == manifest.bytes, || {
        format!("the manifest read back from Location is not the pushed bytes: {pulled}")
    })
}

fn manifest_by_tag(ctx: &mut Ctx) -> Check {
    let ns = ctx.ns.clone();
    let (manifest, _, _) = image_with_blobs(ctx, &ns)?;
    let tag = ctx.tag("push-by-tag");
    let response = ctx.put_manifest(&ns, &tag, &manifest)?;
    manifest_accepted(ctx, &response, &manifest)?;
    super::pull::get_manifest_exact(ctx, &ns, &tag, &manifest)?;
    super::pull::get_manifest_exact(ctx, &ns, &manifest.digest, &manifest)
}

fn manifest_by_digest(ctx: &mut Ctx) -> Check {
    let ns = ctx.ns.clone();
    let (manifest, _, _) = image_with_blobs(ctx, &ns)?;
    let response = ctx.put_manifest(&ns, &manifest.digest, &manifest)?;
    manifest_accepted(ctx, &response, &manifest)?;
    super::pull::get_manifest_exact(ctx, &ns, &manifest.digest, &manifest)
}

fn image_index(ctx: &mut Ctx) -> Check {
    let ns = ctx.ns.clone();
    let (first, _, _) = image_with_blobs(ctx, &ns)?;
    let (second, _, _) = image_with_blobs(ctx, &ns)?;
    ctx.push_manifest(&ns, &first.digest, &first)?;
    ctx.push_manifest(&ns, &second.digest, &second)?;
    let index = Manifest::index(&[&first, &second]).build();
    let tag = ctx.tag("push-index");
    let response = ctx.put_manifest(&ns, &tag, &index)?;
    manifest_accepted(ctx, &response, &index)?;
    super::pull::get_manifest_exact(ctx, &ns, &tag, &index)
}

fn manifest_unknown_blob(ctx: &mut Ctx) -> Check {
    let ns = ctx.ns.clone();
    let layer = Blob::random_layer(512);
    let config = Blob::image_config(&[&layer]);
    ctx.push_blob(&ns, &config)?;
    let manifest = Manifest::image(&config, &[&layer]).build();
    let response = ctx.put_manifest(&ns, &manifest.digest, &manifest)?;
    if (200..300).contains(&response.status) {
        return skip(format!(
            "the registry accepts manifests that reference unknown blobs (spec: MAY reject): {response}"
        ));
    }
    ensure((400..500).contains(&response.status), || {
        format!(
            "expected a 4xx refusal, got {}: {response}",
            response.status
        )
    })?;
    let codes_ok = response
        .json()
        .and_then(|doc| doc.get("errors").cloned())
        .and_then(|errors| errors.as_array().cloned())
        .is_some_and(|errors| {
            errors
                .iter()
                .any(|e| e.get("code").and_then(|c| c.as_str()) == Some("MANIFEST_BLOB_UNKNOWN"))
        });
    ensure(codes_ok, || {
        format!("a refusal for an unknown blob must carry MANIFEST_BLOB_UNKNOWN: {response}")
    })?;
    let pulled = ctx.get_manifest(&ns, &manifest.digest)?;
    expect_status(&pulled, &[404], "GET of the refused manifest")
}

fn manifest_digest_mismatch(ctx: &mut Ctx) -> Check {
    let ns = ctx.ns.clone();
    let (manifest, _, _) = image_with_blobs(ctx, &ns)?;
    let claimed = digest::sha256(&random_bytes(64));
    let response = ctx.put_manifest(&ns, &claimed, &manifest)?;
    ensure((400..500).contains(&response.status), || {
        format!(
            "expected a 4xx refusal (400 DIGEST_INVALID), got {}: {response}",
            response.status
        )
    })?;
    if response.status == 400 {
        check_error_body(ctx, &response, &["DIGEST_INVALID", "MANIFEST_INVALID"])?;
    } else {
        ctx.note(format!(
            "refused with {} (400 DIGEST_INVALID expected)",
            response.status
        ));
    }
    let pulled = ctx.get_manifest(&ns, &claimed)?;
    expect_status(&pulled, &[404], "GET of the refused digest")
}

fn manifest_subject_unknown(ctx: &mut Ctx) -> Check {
    let ns = ctx.ns.clone();
    let (subject, _, _) = image_with_blobs(ctx, &ns)?;
    let config = Blob::empty_config();
    let layer = Blob::random_layer(100);
    ctx.push_blobs(&ns, &[&config, &layer])?;
    let artifact = Manifest::image(&config, &[&layer])
        .artifact_type("application/vnd.berth.conformance.unknown-subject")
        .subject(&subject)
        .build();
    let response = ctx.put_manifest(&ns, &artifact.digest, &artifact)?;
    manifest_accepted(ctx, &response, &artifact)?;
    if let Some(value) = response.header("oci-subject") {
        ensure(value == subject.digest, || {
            format!(
                "OCI-Subject {value} is not the subject {}: {response}",
                subject.digest
            )
        })?;
    }
    Ok(())
}

fn manifest_tag_params(ctx: &mut Ctx) -> Check {
    let ns = ctx.ns.clone();
    let (manifest, _, _) = image_with_blobs(ctx, &ns)?;
    let tags = [ctx.tag("param-a"), ctx.tag("param-b")];
    let path = format!(
        "{}?tag={}&tag={}",
        Ctx::manifest_path(&ns, &manifest.digest),
        tags[0],
        tags[1]
    );
    let response = ctx
        .client
        .put(&path)
        .header("Content-Type", manifest.media_type.clone())
        .body(manifest.bytes.clone())
        .send()?;
    manifest_accepted(ctx, &response, &manifest)?;
    let announced: Vec<String> = response
        .header_values("oci-tag")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    if announced.is_empty() {
        for tag in &tags {
            let pulled = ctx.head_manifest(&ns, tag)?;
            ensure(pulled.status == 404, || {
                format!("tag {tag} was created but the response has no OCI-Tag header: {response}")
            })?;
        }
        return skip("tag parameters are not supported (no OCI-Tag header; spec: MAY)");
    }
    for tag in &announced {
        ensure(tags.contains(tag), || {
            format!("OCI-Tag names {tag:?}, which was not requested: {response}")
        })?;
        super::pull::get_manifest_exact(ctx, &ns, tag, &manifest)?;
    }
    Ok(())
}

fn upload_unknown_session(ctx: &mut Ctx) -> Check {
    let path = format!(
        "{}{}-{}-{}-{}-{}",
        Ctx::uploads_path(&ctx.ns),
        random_id(8),
        random_id(4),
        random_id(4),
        random_id(4),
        random_id(12)
    );
    let status = ctx.client.get(&path).send()?;
    // The URL is assembled here rather than received in a Location, so a registry may also
    // call it BLOB_UPLOAD_INVALID (distribution does, as it lacks the state it signs into URLs).
    expect_status(&status, &[404], "GET of an unknown upload session")?;
    check_error_body(
        ctx,
        &status,
        &["BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"],
    )?;
    let patched = ctx
        .client
        .patch(&path)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", "0-9")
        .body(vec![0; 10])
        .send()?;
    expect_status(&patched, &[404], "PATCH of an unknown upload session")?;
    check_error_body(
        ctx,
        &patched,
        &["BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"],
    )
}

fn sha512_blob(ctx: &mut Ctx) -> Check {
    let bytes = random_bytes(4096);
    let sha512 = digest::sha512(&bytes);
    let url = ctx.client.url(&format!(
        "{}?digest-algorithm=sha512",
        Ctx::uploads_path(&ctx.ns)
    ))?;
    let response = ctx.client.request_url(Method::POST, url).send()?;
    expect_status(&response, &[202], "a new upload session for sha512")?;
    let location = require_location(&response)?;
    let response = put_upload(ctx, &location, &sha512, &bytes, None)?;
    match response.status {
        201 => {}
        400 => {
            ctx.abandon_upload(&location);
            check_error_body(ctx, &response, &["DIGEST_INVALID", "UNSUPPORTED"])?;
            return skip(format!(
                "sha512 digests are not supported by this registry (400; spec: SHOULD): {response}"
            ));
        }
        _ => {
            ctx.abandon_upload(&location);
            return fail(format!(
                "expected 201 (or 400 if sha512 is unsupported), got {}: {response}",
                response.status
            ));
        }
    }
    require_location(&response)?;
    let pulled = ctx.client.get(&Ctx::blob_path(&ctx.ns, &sha512)).send()?;
    expect_status(&pulled, &[200], "GET of the blob by its sha512 digest")?;
    ensure(pulled.body == bytes, || {
        format!("the blob read back by its sha512 digest is not what was uploaded: {pulled}")
    })?;
    if let Some(value) = pulled.header("docker-content-digest") {
        ensure(digest::matches(value, &bytes), || {
            format!("Docker-Content-Digest {value} does not match the body: {pulled}")
        })?;
    }
    Ok(())
}

fn manifest_retag(ctx: &mut Ctx) -> Check {
    let ns = ctx.ns.clone();
    let (first, _, _) = image_with_blobs(ctx, &ns)?;
    let (second, _, _) = image_with_blobs(ctx, &ns)?;
    let tag = ctx.tag("retag");
    ctx.push_manifest(&ns, &tag, &first)?;
    super::pull::get_manifest_exact(ctx, &ns, &tag, &first)?;
    ctx.push_manifest(&ns, &tag, &second)?;
    super::pull::get_manifest_exact(ctx, &ns, &tag, &second)?;
    super::pull::get_manifest_exact(ctx, &ns, &first.digest, &first)
}

fn manifest_invalid(ctx: &mut Ctx) -> Check {
    let ns = ctx.ns.clone();
    let garbage = b"{ this is not a manifest".to_vec();
    let claimed = digest::sha256(&garbage);
    let response = ctx
        .client
        .put(&Ctx::manifest_path(&ns, &ctx.tag("invalid")))
        .header("Content-Type", media_type::OCI_MANIFEST)
        .body(garbage)
        .send()?;
    ensure((400..500).contains(&response.status), || {
        format!(
            "expected a 4xx refusal (400 MANIFEST_INVALID), got {}: {response}",
            response.status
        )
    })?;
    if response.status == 400 {
        check_error_body(ctx, &response, &["MANIFEST_INVALID"])?;
    } else {
        ctx.note(format!(
            "refused with {} (400 MANIFEST_INVALID expected)",
            response.status
        ));
    }
    let pulled = ctx.get_manifest(&ns, &claimed)?;
    expect_status(&pulled, &[404], "GET of the refused body's digest")
}
