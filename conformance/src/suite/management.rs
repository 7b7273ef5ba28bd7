//! Content management: deleting tags, manifests and blobs, and what must 404 afterwards (spec
//! "Content Management", endpoints end-9 and end-10).

use serde_json::Value;

use super::{
    Case, Check, Ctx, Workflow, ensure, expect_not_found, expect_status, fail, need, skip,
};
use crate::content::{Blob, Manifest, random_bytes};
use crate::digest;
use crate::http::Response;

const W: Workflow = Workflow::ContentManagement;

/// The content management checks, in order.
pub(super) static CASES: &[Case] = &[
    Case::new(
        "management.setup",
        W,
        "Setup: push a manifest with two tags, and an artifact that refers to it",
        "end-7a",
        setup,
    ),
    Case::new(
        "management.delete-tag",
        W,
        "DELETE tag: 202; the tag then 404s while the manifest and its other tag remain",
        "end-9, #deleting-tags",
        delete_tag,
    ),
    Case::new(
        "management.deleted-tag-not-listed",
        W,
        "A deleted tag is gone from the tag list; the other tag is still listed",
        "end-8a, #deleting-tags",
        deleted_tag_not_listed,
    ),
    Case::new(
        "management.delete-referrer",
        W,
        "DELETE of a referring manifest: 202, and the referrers API no longer lists it",
        "end-9, end-12a, #deleting-manifests",
        delete_referrer,
    ),
    Case::new(
        "management.delete-manifest",
        W,
        "DELETE manifest by digest: 202",
        "end-9, #deleting-manifests",
        delete_manifest,
    ),
    Case::new(
        "management.deleted-manifest-404",
        W,
        "A deleted manifest 404s by digest (GET and HEAD) and through the tag that pointed at it",
        "end-3, #deleting-manifests",
        deleted_manifest_404,
    ),
    Case::new(
        "management.delete-manifest-unknown",
        W,
        "DELETE of a manifest that does not exist: 404 MANIFEST_UNKNOWN",
        "end-9, #deleting-manifests, code-7",
        delete_manifest_unknown,
    ),
    Case::new(
        "management.delete-manifest-unknown-repository",
        W,
        "DELETE of a manifest in a repository that does not exist: 404",
        "end-9, #deleting-manifests",
        delete_manifest_unknown_repository,
    ),
    Case::new(
        "management.delete-blob",
        W,
        "DELETE blob: 202 for the config and the layer",
        "end-10, #deleting-blobs",
        delete_blob,
    ),
    Case::new(
        "management.deleted-blob-404",
        W,
        "A deleted blob 404s on GET (BLOB_UNKNOWN) and HEAD",
        "end-2, #deleting-blobs, code-1",
        deleted_blob_404,
    ),
    Case::new(
        "management.delete-blob-unknown",
        W,
        "DELETE of a blob that does not exist: 404 BLOB_UNKNOWN",
        "end-10, #deleting-blobs, code-1",
        delete_blob_unknown,
    ),
];

/// What the management checks read, and what earlier deletions did.
#[derive(Debug, Default)]
pub(crate) struct State {
    fixture: Option<Fixture>,
    tag_deleted: Option<()>,
    manifest_deleted: Option<()>,
    blobs_deleted: Option<()>,
}

#[derive(Debug)]
struct Fixture {
    manifest: Manifest,
    config: Blob,
    layer: Blob,
    /// Deleted by `delete-tag`.
    doomed_tag: String,
    /// Kept until the manifest is deleted.
    kept_tag: String,
    /// An artifact whose subject is `manifest`.
    referrer: Manifest,
}

fn fixture(ctx: &Ctx) -> Check<&Fixture> {
    need(&ctx.management.fixture, "management.setup")
}

fn setup(ctx: &mut Ctx) -> Check {
    let ns = ctx.ns.clone();
    let (manifest, config, layer) = super::push::image_with_blobs(ctx, &ns)?;
    let doomed_tag = ctx.tag("delete-me");
    let kept_tag = ctx.tag("keep-me");
    ctx.push_manifest(&ns, &doomed_tag, &manifest)?;
    ctx.push_manifest(&ns, &kept_tag, &manifest)?;
    let empty = Blob::empty_config();
    let note = Blob::random_layer(128);
    ctx.push_blobs(&ns, &[&empty, &note])?;
    let referrer = Manifest::image(&empty, &[&note])
        .artifact_type("application/vnd.berth.conformance.note")
        .subject(&manifest)
        .build();
    ctx.push_manifest(&ns, &referrer.digest, &referrer)?;
    ctx.management.fixture = Some(Fixture {
        manifest,
        config,
        layer,
        doomed_tag,
        kept_tag,
        referrer,
    });
    Ok(())
}

/// Judges a DELETE: 202 passes (200 or 204 pass with a note), 400 or 405 mean the registry
/// disabled this kind of deletion, which the spec allows, and skip.
fn judge_delete(ctx: &mut Ctx, response: &Response, what: &str) -> Check {
    match response.status {
        202 => Ok(()),
        200 | 204 => {
            ctx.note(format!(
                "DELETE of {what} answered {} (spec: 202)",
                response.status
            ));
            Ok(())
        }
        400 | 405 => skip(format!(
            "{what} deletion is disabled on this registry ({}; the spec allows 400 or 405): {response}",
            response.status
        )),
        _ => fail(format!(
            "expected 202 for DELETE of {what}, got {}: {response}",
            response.status
        )),
    }
}

fn delete_tag(ctx: &mut Ctx) -> Check {
    let f = fixture(ctx)?;
    let (doomed, kept, manifest) = (f.doomed_tag.clone(), f.kept_tag.clone(), f.manifest.clone());
    let ns = ctx.ns.clone();
    let response = ctx
        .client
        .delete(&Ctx::manifest_path(&ns, &doomed))
        .send()?;
    judge_delete(ctx, &response, "a tag")?;
    ctx.management.tag_deleted = Some(());
    let gone = ctx.get_manifest(&ns, &doomed)?;
    expect_not_found(ctx, &gone, &["MANIFEST_UNKNOWN"], "GET of the deleted tag")?;
    for reference in [kept.as_str(), manifest.digest.as_str()] {
        let kept = ctx.get_manifest(&ns, reference)?;
        expect_status(
            &kept,
            &[200],
            &format!("GET of {reference}, which the tag deletion must not remove"),
        )?;
    }
    Ok(())
}

fn deleted_tag_not_listed(ctx: &mut Ctx) -> Check {
    let f = fixture(ctx)?;
    let (doomed, kept) = (f.doomed_tag.clone(), f.kept_tag.clone());
    need(&ctx.management.tag_deleted, "management.delete-tag")?;
    let response = ctx
        .client
        .get(&format!("/v2/{}/tags/list", ctx.ns))
        .send()?;
    expect_status(&response, &[200], "the tag list")?;
    let tags: Vec<String> = response
        .json()
        .and_then(|doc| doc.get("tags").cloned())
        .and_then(|tags| serde_json::from_value(tags).ok())
        .unwrap_or_default();
    ensure(!tags.contains(&doomed), || {
        format!("the deleted tag {doomed} is still listed: {response}")
    })?;
    // Only a complete list (no Link to a further page) must hold the kept tag.
    if !tags.contains(&kept) && response.header("link").is_none() {
        return fail(format!("the kept tag {kept} is missing: {response}"));
    }
    Ok(())
}

fn delete_referrer(ctx: &mut Ctx) -> Check {
    let f = fixture(ctx)?;
    let (subject, referrer) = (f.manifest.digest.clone(), f.referrer.digest.clone());
    let ns = ctx.ns.clone();
    if !ctx.referrers_available(&subject)? {
        return skip("not supported by this registry: the referrers API answers 404");
    }
    let response = ctx
        .client
        .delete(&Ctx::manifest_path(&ns, &referrer))
        .send()?;
    judge_delete(ctx, &response, "a manifest")?;
    let listed = ctx.client.get(&Ctx::referrers_path(&ns, &subject)).send()?;
    expect_status(&listed, &[200], "the referrers list")?;
    let still_listed = listed
        .json()
        .and_then(|doc| doc.get("manifests").cloned())
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|d| d.get("digest").and_then(Value::as_str) == Some(referrer.as_str()));
    ensure(!still_listed, || {
        format!("the deleted referrer {referrer} is still listed: {listed}")
    })
}

fn delete_manifest(ctx: &mut Ctx) -> Check {
    let digest = fixture(ctx)?.manifest.digest.clone();
    let ns = ctx.ns.clone();
    let response = ctx
        .client
        .delete(&Ctx::manifest_path(&ns, &digest))
        .send()?;
    judge_delete(ctx, &response, "a manifest")?;
    ctx.management.manifest_deleted = Some(());
    Ok(())
}

fn deleted_manifest_404(ctx: &mut Ctx) -> Check {
    let f = fixture(ctx)?;
    let (digest, kept) = (f.manifest.digest.clone(), f.kept_tag.clone());
    need(
        &ctx.management.manifest_deleted,
        "management.delete-manifest",
    )?;
    let ns = ctx.ns.clone();
    let response = ctx.get_manifest(&ns, &digest)?;
    expect_not_found(
        ctx,
        &response,
        &["MANIFEST_UNKNOWN"],
        "GET of a deleted manifest",
    )?;
    let response = ctx.head_manifest(&ns, &digest)?;
    expect_status(&response, &[404], "HEAD of a deleted manifest")?;
    let response = ctx.get_manifest(&ns, &kept)?;
    expect_not_found(
        ctx,
        &response,
        &["MANIFEST_UNKNOWN"],
        "GET of a tag whose manifest was deleted",
    )
}

fn delete_manifest_unknown(ctx: &mut Ctx) -> Check {
    fixture(ctx)?;
    let unknown = digest::sha256(&random_bytes(32));
    let response = ctx
        .client
        .delete(&Ctx::manifest_path(&ctx.ns, &unknown))
        .send()?;
    if matches!(response.status, 400 | 405) && ctx.management.manifest_deleted.is_none() {
        return skip(format!(
            "manifest deletion is disabled on this registry: {response}"
        ));
    }
    expect_not_found(
        ctx,
        &response,
        &["MANIFEST_UNKNOWN"],
        "DELETE of an unknown manifest",
    )
}

fn delete_manifest_unknown_repository(ctx: &mut Ctx) -> Check {
    let ns = format!("{}/never-created-{}", ctx.ns, ctx.run);
    let unknown = digest::sha256(&random_bytes(32));
    let response = ctx
        .client
        .delete(&Ctx::manifest_path(&ns, &unknown))
        .send()?;
    if matches!(response.status, 400 | 405) && ctx.management.manifest_deleted.is_none() {
        return skip(format!(
            "manifest deletion is disabled on this registry: {response}"
        ));
    }
    expect_not_found(
        ctx,
        &response,
        &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"],
        "DELETE of a manifest in a repository that does not exist",
    )
}

fn delete_blob(ctx: &mut Ctx) -> Check {
    let f = fixture(ctx)?;
    let blobs = [f.config.digest.clone(), f.layer.digest.clone()];
    let ns = ctx.ns.clone();
    for digest in &blobs {
        let response = ctx.client.delete(&Ctx::blob_path(&ns, digest)).send()?;
        judge_delete(ctx, &response, "a blob")?;
    }
    ctx.management.blobs_deleted = Some(());
    Ok(())
}

fn deleted_blob_404(ctx: &mut Ctx) -> Check {
    let f = fixture(ctx)?;
    let blobs = [f.config.digest.clone(), f.layer.digest.clone()];
    need(&ctx.management.blobs_deleted, "management.delete-blob")?;
    let ns = ctx.ns.clone();
    for digest in &blobs {
        let response = ctx.client.get(&Ctx::blob_path(&ns, digest)).send()?;
        expect_not_found(ctx, &response, &["BLOB_UNKNOWN"], "GET of a deleted blob")?;
        let response = ctx.client.head(&Ctx::blob_path(&ns, digest)).send()?;
        expect_status(&response, &[404], "HEAD of a deleted blob")?;
    }
    Ok(())
}

fn delete_blob_unknown(ctx: &mut Ctx) -> Check {
    fixture(ctx)?;
    let unknown = digest::sha256(&random_bytes(32));
    let response = ctx
        .client
        .delete(&Ctx::blob_path(&ctx.ns, &unknown))
        .send()?;
    if matches!(response.status, 400 | 405) && ctx.management.blobs_deleted.is_none() {
        return skip(format!(
            "blob deletion is disabled on this registry: {response}"
        ));
    }
    expect_not_found(
        ctx,
        &response,
        &["BLOB_UNKNOWN"],
        "DELETE of an unknown blob",
    )
}
