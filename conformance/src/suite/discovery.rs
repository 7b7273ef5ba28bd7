//! Content discovery: tag lists with `n`, `last` and `Link` pagination, the referrers API with
//! its `artifactType` filter, and the repository catalog (spec "Content Discovery", endpoints
//! end-8 and end-12; the catalog comes from the Docker Registry HTTP API V2, apdx-1).

use std::collections::BTreeSet;

use rand::seq::SliceRandom;
use reqwest::{Method, Url};
use serde_json::Value;

use super::{
    Case, Check, Ctx, Workflow, ensure, expect_not_found, expect_status, fail, is_spec_ordered,
    need, next_link, skip,
};
use crate::content::{Blob, Manifest, media_type, random_bytes};
use crate::digest;
use crate::http::Response;

const W: Workflow = Workflow::ContentDiscovery;

/// How many pages a paginated listing may take before the suite gives up on it.
const MAX_PAGES: usize = 1000;

/// The artifact type of the first referrer, used for filtering.
const ARTIFACT_A: &str = "application/vnd.berth.conformance.a";
/// The config media type of the second referrer, which has no `artifactType` of its own.
const CONFIG_B: &str = "application/vnd.berth.conformance.b.config+json";

/// The content discovery checks, in order.
pub(super) static CASES: &[Case] = &[
    Case::new(
        "discovery.setup-tags",
        W,
        "Setup: push a manifest and give it eight tags, in shuffled order",
        "end-7a",
        setup_tags,
    ),
    Case::new(
        "discovery.tags-list",
        W,
        "GET tags list: 200 with the repository name and every pushed tag",
        "end-8a, #listing-tags",
        tags_list,
    ),
    Case::new(
        "discovery.tags-list-order",
        W,
        "Tags list is in lexical or ASCIIbetical order",
        "end-8a, #listing-tags",
        tags_list_order,
    ),
    Case::new(
        "discovery.tags-list-n",
        W,
        "GET tags list with n: the first n tags (fewer only with a Link header or at the end)",
        "end-8b, #listing-tags",
        tags_list_n,
    ),
    Case::new(
        "discovery.tags-list-link",
        W,
        "Tags list Link header: RFC 5988 rel=\"next\", and following it yields the rest in order",
        "end-8b, #listing-tags",
        tags_list_link,
    ),
    Case::new(
        "discovery.tags-list-n-zero",
        W,
        "GET tags list with n=0: an empty list and no Link header",
        "end-8b, #listing-tags",
        tags_list_n_zero,
    ),
    Case::new(
        "discovery.tags-list-last",
        W,
        "GET tags list with last: only the tags after last, in order",
        "end-8b, #listing-tags",
        tags_list_last,
    ),
    Case::new(
        "discovery.tags-list-n-last",
        W,
        "GET tags list with n and last: the n tags after last",
        "end-8b, #listing-tags",
        tags_list_n_last,
    ),
    Case::new(
        "discovery.tags-list-unknown-repository",
        W,
        "GET tags list of a repository that does not exist: 404 NAME_UNKNOWN",
        "end-8a, code-9",
        tags_list_unknown_repository,
    ),
    Case::new(
        "discovery.setup-referrers",
        W,
        "Setup: push a subject, two image manifests and an index that refer to it",
        "end-7a, #pushing-manifests-with-subject",
        setup_referrers,
    ),
    Case::new(
        "discovery.referrers-list",
        W,
        "GET referrers: 200, an image index listing exactly the referring manifests",
        "end-12a, #listing-referrers",
        referrers_list,
    ),
    Case::new(
        "discovery.referrers-descriptors",
        W,
        "Referrers descriptors carry artifactType (config media type fallback, none for an index) and annotations",
        "end-12a, #listing-referrers",
        referrers_descriptors,
    ),
    Case::new(
        "discovery.referrers-filter",
        W,
        "GET referrers with artifactType: only matching descriptors, with OCI-Filters-Applied",
        "end-12b, #listing-referrers",
        referrers_filter,
    ),
    Case::new(
        "discovery.referrers-none",
        W,
        "GET referrers of a digest nothing refers to: 200 with an empty manifests list",
        "end-12a, #listing-referrers",
        referrers_none,
    ),
    Case::new(
        "discovery.referrers-invalid-digest",
        W,
        "GET referrers of a malformed digest: 400",
        "end-12a, #listing-referrers",
        referrers_invalid_digest,
    ),
    Case::new(
        "discovery.referrers-subject-header",
        W,
        "Image manifests with a subject are answered with OCI-Subject by a registry with the referrers API",
        "end-7a, #pushing-manifests-with-subject",
        referrers_subject_header,
    ),
    Case::new(
        "discovery.catalog",
        W,
        "GET /v2/_catalog: 200 listing the repository",
        "apdx-1 (Docker Registry HTTP API V2 catalog; not part of the OCI spec)",
        catalog,
    ),
    Case::new(
        "discovery.catalog-n",
        W,
        "GET /v2/_catalog with n=1: one repository, and the Link header continues the list",
        "apdx-1 (Docker Registry HTTP API V2 catalog; not part of the OCI spec)",
        catalog_n,
    ),
];

/// What the discovery checks read.
#[derive(Debug, Default)]
pub(crate) struct State {
    tags: Option<TagsFixture>,
    referrers: Option<ReferrersFixture>,
}

#[derive(Debug)]
struct TagsFixture {
    /// This run's tags, sorted.
    tags: Vec<String>,
}

#[derive(Debug)]
struct ReferrersFixture {
    subject: Manifest,
    /// Image manifest with an `artifactType`.
    a: Manifest,
    /// Image manifest without `artifactType` whose config type stands in for it.
    b: Manifest,
    /// Image index with a subject and no `artifactType`.
    c: Manifest,
    /// A pushed manifest nothing refers to.
    lonely: Manifest,
    /// The `OCI-Subject` header of each push of a, b, c.
    subject_headers: Vec<(String, Option<String>)>,
}

impl ReferrersFixture {
    fn referrers(&self) -> [&Manifest; 3] {
        [&self.a, &self.b, &self.c]
    }
}

fn tags_fixture(ctx: &Ctx) -> Check<&TagsFixture> {
    need(&ctx.discovery.tags, "discovery.setup-tags")
}

fn referrers_fixture(ctx: &Ctx) -> Check<&ReferrersFixture> {
    need(&ctx.discovery.referrers, "discovery.setup-referrers")
}

fn setup_tags(ctx: &mut Ctx) -> Check {
    let ns = ctx.ns.clone();
    let (manifest, _, _) = super::push::image_with_blobs(ctx, &ns)?;
    let mut tags: Vec<String> = ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .map(|t| ctx.tag(&format!("list-{t}")))
        .collect();
    tags.shuffle(&mut rand::thread_rng());
    for tag in &tags {
        ctx.push_manifest(&ns, tag, &manifest)?;
    }
    tags.sort();
    ctx.discovery.tags = Some(TagsFixture { tags });
    Ok(())
}

/// One page of a tag list: the names and the `Link` target, if any.
struct Page {
    response: Response,
    items: Vec<String>,
    next: Option<Url>,
}

/// GETs a listing page and reads `field` (`tags` or `repositories`) as a list of strings.
fn get_page(ctx: &Ctx, url: Url, field: &str) -> Check<Page> {
    let response = ctx.client.request_url(Method::GET, url).send()?;
    expect_status(&response, &[200], "a listing")?;
    let Some(doc) = response.json() else {
        return fail(format!("the listing is not JSON: {response}"));
    };
    let items = match doc.get(field) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>(),
        Some(Value::Null) | None => Some(Vec::new()),
        Some(_) => None,
    };
    let Some(items) = items else {
        return fail(format!("\"{field}\" is not a list of strings: {response}"));
    };
    let next = next_link(&response)?;
    Ok(Page {
        response,
        items,
        next,
    })
}

/// Reads a listing from `url`, following `Link` headers to the end.
fn get_all(ctx: &Ctx, url: Url, field: &str) -> Check<(Vec<String>, Response)> {
    let first = get_page(ctx, url, field)?;
    let mut items = first.items;
    let mut next = first.next;
    let mut pages = 1;
    while let Some(url) = next {
        pages += 1;
        if pages > MAX_PAGES {
            return fail(format!(
                "the listing did not end after {MAX_PAGES} pages: {}",
                first.response
            ));
        }
        let page = get_page(ctx, url, field)?;
        items.extend(page.items);
        next = page.next;
    }
    Ok((items, first.response))
}

fn tags_url(ctx: &Ctx, ns: &str, query: &str) -> Check<Url> {
    Ok(ctx.client.url(&format!("/v2/{ns}/tags/list{query}"))?)
}

/// The repository's whole tag list in the registry's order.
fn all_tags(ctx: &Ctx) -> Check<Vec<String>> {
    let url = tags_url(ctx, &ctx.ns, "")?;
    Ok(get_all(ctx, url, "tags")?.0)
}

/// The whole tag list in the order pages must follow: the registry's own when it is a spec
/// order, ASCIIbetical otherwise (so pagination is judged apart from ordering).
fn ordered_tags(ctx: &Ctx) -> Check<Vec<String>> {
    let mut tags = all_tags(ctx)?;
    if !is_spec_ordered(&tags) {
        tags.sort();
    }
    Ok(tags)
}

fn tags_list(ctx: &mut Ctx) -> Check {
    let fixture = tags_fixture(ctx)?;
    let url = tags_url(ctx, &ctx.ns, "")?;
    let (tags, response) = get_all(ctx, url, "tags")?;
    let name = response
        .json()
        .and_then(|doc| doc.get("name").and_then(Value::as_str).map(str::to_owned));
    ensure(name.as_deref() == Some(ctx.ns.as_str()), || {
        format!("\"name\" is {name:?}, expected {:?}: {response}", ctx.ns)
    })?;
    let missing: Vec<&String> = fixture.tags.iter().filter(|t| !tags.contains(t)).collect();
    ensure(missing.is_empty(), || {
        format!("pushed tags missing from the list: {missing:?}: {response}")
    })
}

fn tags_list_order(ctx: &mut Ctx) -> Check {
    tags_fixture(ctx)?;
    let tags = all_tags(ctx)?;
    ensure(is_spec_ordered(&tags), || {
        format!("the tag list is in neither lexical nor ASCIIbetical order: {tags:?}")
    })
}

/// Judges one page of `n` tags against the expected order: it must be the first `len` items of
/// `expected`, with `len == n` unless the list ends or a `Link` header is given.
fn judge_page(page: &Page, n: usize, expected: &[String]) -> Check {
    ensure(page.items.len() <= n, || {
        format!(
            "{} tags returned for n={n}: {}",
            page.items.len(),
            page.response
        )
    })?;
    let full = n.min(expected.len());
    ensure(page.items.len() == full || page.next.is_some(), || {
        format!(
            "{} tags returned for n={n} with {} available and no Link header: {}",
            page.items.len(),
            expected.len(),
            page.response
        )
    })?;
    ensure(page.items[..] == expected[..page.items.len()], || {
        format!(
            "expected the first tags {:?}, got {:?}: {}",
            &expected[..full],
            page.items,
            page.response
        )
    })
}

fn tags_list_n(ctx: &mut Ctx) -> Check {
    tags_fixture(ctx)?;
    let expected = ordered_tags(ctx)?;
    let page = get_page(ctx, tags_url(ctx, &ctx.ns, "?n=3")?, "tags")?;
    judge_page(&page, 3, &expected)
}

fn tags_list_link(ctx: &mut Ctx) -> Check {
    tags_fixture(ctx)?;
    let expected = ordered_tags(ctx)?;
    let first = get_page(ctx, tags_url(ctx, &ctx.ns, "?n=3")?, "tags")?;
    if first.next.is_none() {
        return skip("no Link header on a partial page (spec: MAY)");
    }
    let (tags, _) = get_all(ctx, tags_url(ctx, &ctx.ns, "?n=3")?, "tags")?;
    ensure(tags == expected, || {
        format!(
            "following Link headers gave {tags:?}, expected the whole list {expected:?}: {}",
            first.response
        )
    })
}

fn tags_list_n_zero(ctx: &mut Ctx) -> Check {
    tags_fixture(ctx)?;
    let url = tags_url(ctx, &ctx.ns, "?n=0")?;
    let response = ctx.client.request_url(Method::GET, url.clone()).send()?;
    expect_status(&response, &[200], "a tag list with n=0")?;
    let tags = response.json().and_then(|doc| doc.get("tags").cloned());
    ensure(
        matches!(&tags, Some(Value::Array(list)) if list.is_empty()),
        || format!("expected an empty \"tags\" list for n=0: {response}"),
    )?;
    ensure(response.header("link").is_none(), || {
        format!("n=0 must not have a Link header: {response}")
    })
}

fn tags_list_last(ctx: &mut Ctx) -> Check {
    let last = tags_fixture(ctx)?.tags[1].clone();
    let expected = ordered_tags(ctx)?;
    let after: Vec<String> = match expected.iter().position(|t| *t == last) {
        Some(i) => expected[i + 1..].to_vec(),
        None => return fail(format!("tag {last} is missing from the tag list")),
    };
    let page = get_page(
        ctx,
        tags_url(ctx, &ctx.ns, &format!("?last={last}"))?,
        "tags",
    )?;
    ensure(!page.items.contains(&last), || {
        format!(
            "the list after last={last} includes {last}: {}",
            page.response
        )
    })?;
    judge_page(&page, after.len(), &after)
}

fn tags_list_n_last(ctx: &mut Ctx) -> Check {
    let last = tags_fixture(ctx)?.tags[1].clone();
    let expected = ordered_tags(ctx)?;
    let after: Vec<String> = match expected.iter().position(|t| *t == last) {
        Some(i) => expected[i + 1..].to_vec(),
        None => return fail(format!("tag {last} is missing from the tag list")),
    };
    let query = format!("?n=2&last={last}");
    let page = get_page(ctx, tags_url(ctx, &ctx.ns, &query)?, "tags")?;
    judge_page(&page, 2, &after)
}

fn tags_list_unknown_repository(ctx: &mut Ctx) -> Check {
    let ns = format!("{}/never-created-{}", ctx.ns, ctx.run);
    let url = tags_url(ctx, &ns, "")?;
    let response = ctx.client.request_url(Method::GET, url).send()?;
    expect_not_found(
        ctx,
        &response,
        &["NAME_UNKNOWN"],
        "the tag list of a repository that does not exist",
    )
}

fn setup_referrers(ctx: &mut Ctx) -> Check {
    let ns = ctx.ns.clone();
    let (subject, _, _) = super::push::image_with_blobs(ctx, &ns)?;
    ctx.push_manifest(&ns, &subject.digest, &subject)?;
    let (lonely, _, _) = super::push::image_with_blobs(ctx, &ns)?;
    ctx.push_manifest(&ns, &lonely.digest, &lonely)?;

    let empty = Blob::empty_config();
    let layer = Blob::random_layer(256);
    let config_b = Blob::new(
        CONFIG_B,
        format!("{{\"nonce\":\"{}\"}}", ctx.run).into_bytes(),
    );
    ctx.push_blobs(&ns, &[&empty, &layer, &config_b])?;
    let a = Manifest::image(&empty, &[&layer])
        .artifact_type(ARTIFACT_A)
        .subject(&subject)
        .annotation("org.opencontainers.conformance.kind", "a")
        .annotation("org.opencontainers.image.created", "2024-01-01T00:00:00Z")
        .build();
    let b = Manifest::image(&config_b, &[&layer])
        .subject(&subject)
        .annotation("org.opencontainers.conformance.kind", "b")
        .build();
    let c = Manifest::index(&[&lonely])
        .subject(&subject)
        .annotation("org.opencontainers.conformance.kind", "c")
        .build();
    let mut subject_headers = Vec::new();
    for referrer in [&a, &b, &c] {
        let response = ctx.push_manifest(&ns, &referrer.digest, referrer)?;
        subject_headers.push((
            referrer.digest.clone(),
            response.header("oci-subject").map(str::to_owned),
        ));
    }
    ctx.discovery.referrers = Some(ReferrersFixture {
        subject,
        a,
        b,
        c,
        lonely,
        subject_headers,
    });
    Ok(())
}

/// GETs the referrers of `digest` (with `query`), following `Link` pages. Skips when the
/// registry answers 404, which means it has no referrers API.
fn get_referrers(ctx: &mut Ctx, digest: &str, query: &str) -> Check<(Vec<Value>, Response)> {
    let url = ctx
        .client
        .url(&format!("{}{query}", Ctx::referrers_path(&ctx.ns, digest)))?;
    let response = ctx.client.request_url(Method::GET, url).send()?;
    if response.status == 404 {
        ctx.referrers_supported = Some(false);
        return skip(format!(
            "not supported by this registry: the referrers API answers 404: {response}"
        ));
    }
    ctx.referrers_supported = Some(true);
    expect_status(&response, &[200], "the referrers list")?;
    let mut descriptors = referrers_page(&response)?;
    let mut next = next_link(&response)?;
    let mut pages = 1;
    while let Some(url) = next {
        pages += 1;
        if pages > MAX_PAGES {
            return fail(format!("the referrers list did not end: {response}"));
        }
        let page = ctx.client.request_url(Method::GET, url).send()?;
        expect_status(&page, &[200], "a referrers page")?;
        descriptors.extend(referrers_page(&page)?);
        next = next_link(&page)?;
    }
    Ok((descriptors, response))
}

/// Checks one referrers response is an image index and returns its descriptors.
fn referrers_page(response: &Response) -> Check<Vec<Value>> {
    ensure(response.media_type() == Some(media_type::OCI_INDEX), || {
        format!("Content-Type must be {}: {response}", media_type::OCI_INDEX)
    })?;
    let Some(doc) = response.json() else {
        return fail(format!("the referrers list is not JSON: {response}"));
    };
    ensure(doc.get("schemaVersion") == Some(&Value::from(2)), || {
        format!("the referrers index lacks schemaVersion 2: {response}")
    })?;
    if let Some(mt) = doc.get("mediaType") {
        ensure(mt == media_type::OCI_INDEX, || {
            format!("the referrers index has mediaType {mt}: {response}")
        })?;
    }
    match doc.get("manifests") {
        Some(Value::Array(list)) => Ok(list.clone()),
        _ => fail(format!(
            "the referrers index has no \"manifests\" list: {response}"
        )),
    }
}

fn descriptor_digests(descriptors: &[Value]) -> BTreeSet<String> {
    descriptors
        .iter()
        .filter_map(|d| d.get("digest").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

fn referrers_list(ctx: &mut Ctx) -> Check {
    let f = referrers_fixture(ctx)?;
    let subject = f.subject.digest.clone();
    let expected: BTreeSet<String> = f.referrers().iter().map(|m| m.digest.clone()).collect();
    let referrers: Vec<Manifest> = f.referrers().into_iter().cloned().collect();
    let (descriptors, response) = get_referrers(ctx, &subject, "")?;
    let got = descriptor_digests(&descriptors);
    ensure(
        got == expected && descriptors.len() == expected.len(),
        || format!("expected the referrers {expected:?}, got {got:?}: {response}"),
    )?;
    for referrer in &referrers {
        let descriptor = find_descriptor(&descriptors, &referrer.digest)?;
        ensure(
            descriptor.get("mediaType").and_then(Value::as_str)
                == Some(referrer.media_type.as_str()),
            || {
                format!(
                    "descriptor {descriptor} should have mediaType {}",
                    referrer.media_type
                )
            },
        )?;
        ensure(
            descriptor.get("size").and_then(Value::as_u64) == Some(referrer.size() as u64),
            || {
                format!(
                    "descriptor {descriptor} should have size {}",
                    referrer.size()
                )
            },
        )?;
    }
    Ok(())
}

fn find_descriptor<'a>(descriptors: &'a [Value], digest: &str) -> Check<&'a Value> {
    match descriptors
        .iter()
        .find(|d| d.get("digest").and_then(Value::as_str) == Some(digest))
    {
        Some(d) => Ok(d),
        None => fail(format!("no descriptor for {digest} in {descriptors:?}")),
    }
}

fn referrers_descriptors(ctx: &mut Ctx) -> Check {
    let f = referrers_fixture(ctx)?;
    let subject = f.subject.digest.clone();
    let referrers: Vec<Manifest> = f.referrers().into_iter().cloned().collect();
    let (descriptors, _) = get_referrers(ctx, &subject, "")?;
    for referrer in &referrers {
        let descriptor = find_descriptor(&descriptors, &referrer.digest)?;
        let artifact_type = descriptor.get("artifactType").and_then(Value::as_str);
        ensure(artifact_type == referrer.referrer_artifact_type(), || {
            format!(
                "descriptor {descriptor} should have artifactType {:?}",
                referrer.referrer_artifact_type()
            )
        })?;
        for (key, value) in &referrer.annotations {
            let got = descriptor.get("annotations").and_then(|a| a.get(key));
            ensure(got == Some(value), || {
                format!("descriptor {descriptor} lacks the manifest's annotation {key}={value}")
            })?;
        }
    }
    Ok(())
}

fn referrers_filter(ctx: &mut Ctx) -> Check {
    let f = referrers_fixture(ctx)?;
    let subject = f.subject.digest.clone();
    let a = f.a.digest.clone();
    let all: BTreeSet<String> = f.referrers().iter().map(|m| m.digest.clone()).collect();
    let (descriptors, response) =
        get_referrers(ctx, &subject, &format!("?artifactType={ARTIFACT_A}"))?;
    let got = descriptor_digests(&descriptors);
    let applied = response
        .header_values("oci-filters-applied")
        .iter()
        .flat_map(|v| v.split(','))
        .any(|f| f.trim() == "artifactType");
    if applied {
        ensure(got == BTreeSet::from([a.clone()]), || {
            format!("filtered on {ARTIFACT_A}, expected only {a}, got {got:?}: {response}")
        })
    } else {
        ensure(got == all, || {
            format!(
                "without OCI-Filters-Applied the list must be unfiltered ({all:?}), got {got:?}: {response}"
            )
        })?;
        ctx.note("artifactType filtering is not applied (spec: SHOULD)");
        Ok(())
    }
}

fn referrers_none(ctx: &mut Ctx) -> Check {
    let lonely = referrers_fixture(ctx)?.lonely.digest.clone();
    let (descriptors, response) = get_referrers(ctx, &lonely, "")?;
    ensure(descriptors.is_empty(), || {
        format!("expected no referrers: {response}")
    })?;
    let never_pushed = digest::sha256(&random_bytes(32));
    let (descriptors, response) = get_referrers(ctx, &never_pushed, "")?;
    ensure(descriptors.is_empty(), || {
        format!("expected no referrers for a digest never pushed: {response}")
    })
}

fn referrers_invalid_digest(ctx: &mut Ctx) -> Check {
    let subject = referrers_fixture(ctx)?.subject.digest.clone();
    if !ctx.referrers_available(&subject)? {
        return skip("not supported by this registry: the referrers API answers 404");
    }
    let response = ctx
        .client
        .get(&Ctx::referrers_path(&ctx.ns, "sha256:not-a-digest"))
        .send()?;
    expect_status(&response, &[400], "referrers of a malformed digest")
}

fn referrers_subject_header(ctx: &mut Ctx) -> Check {
    let f = referrers_fixture(ctx)?;
    let subject = f.subject.digest.clone();
    let images = [f.a.digest.clone(), f.b.digest.clone()];
    let headers = f.subject_headers.clone();
    if !ctx.referrers_available(&subject)? {
        return skip("not supported by this registry: the referrers API answers 404");
    }
    for (digest, header) in &headers {
        match header {
            Some(value) => ensure(*value == subject, || {
                format!("the push of {digest} answered OCI-Subject {value}, expected {subject}")
            })?,
            None if images.contains(digest) => {
                return fail(format!(
                    "the push of image manifest {digest} (with subject {subject}) had no OCI-Subject header"
                ));
            }
            None => {}
        }
    }
    Ok(())
}

fn catalog(ctx: &mut Ctx) -> Check {
    tags_fixture(ctx)?;
    let ns = ctx.ns.clone();
    let url = ctx.client.url("/v2/_catalog")?;
    let response = ctx.client.request_url(Method::GET, url.clone()).send()?;
    if response.status == 404 {
        return skip(format!("not supported by this registry: {response}"));
    }
    let (repositories, response) = get_all(ctx, url, "repositories")?;
    ensure(repositories.contains(&ns), || {
        format!("the catalog does not list {ns}: {response}")
    })?;
    if !is_spec_ordered(&repositories) {
        ctx.note("the catalog is not in lexical order");
    }
    Ok(())
}

fn catalog_n(ctx: &mut Ctx) -> Check {
    let url = ctx.client.url("/v2/_catalog?n=1")?;
    let response = ctx.client.request_url(Method::GET, url.clone()).send()?;
    if response.status == 404 {
        return skip(format!("not supported by this registry: {response}"));
    }
    let page = get_page(ctx, url.clone(), "repositories")?;
    ensure(page.items.len() == 1, || {
        format!("expected one repository for n=1: {}", page.response)
    })?;
    let all_url = ctx.client.url("/v2/_catalog")?;
    let (all, _) = get_all(ctx, all_url, "repositories")?;
    if all.len() > 1 {
        ensure(page.next.is_some(), || {
            format!(
                "{} repositories exist but the page for n=1 has no Link header: {}",
                all.len(),
                page.response
            )
        })?;
        let (paged, _) = get_all(ctx, url, "repositories")?;
        ensure(paged == all, || {
            format!("following Link headers gave {paged:?}, expected {all:?}")
        })?;
    }
    Ok(())
}
