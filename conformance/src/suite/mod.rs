//! The suite: configuration, the table of checks, the runner, and the shared vocabulary the
//! checks are written in (expected statuses, headers, error bodies, uploads).
//!
//! Each check is a plain function from the run's [`Ctx`] to `Result<(), Stop>`: `Ok` passes,
//! [`Stop::Fail`] fails with the exchange that broke the rule, [`Stop::Skip`] records why the
//! check could not reach a verdict. A workflow starts with a setup check that pushes its
//! fixtures; checks that need a fixture whose setup failed are skipped, naming the setup, while
//! the setup itself is counted as failed, so a run can never pass on missing prerequisites.

mod discovery;
mod management;
mod pull;
mod push;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use reqwest::{Method, Url};
use serde_json::Value;

use crate::content::{Blob, Manifest, media_type, random_id};
use crate::http::{Client, Response};
use crate::report::{CaseResult, Outcome, Report};
use crate::{Error, digest};

/// The four workflows of the distribution spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workflow {
    /// Pulling manifests and blobs (required of every registry).
    Pull,
    /// Pushing blobs and manifests.
    Push,
    /// Listing tags, referrers and repositories.
    ContentDiscovery,
    /// Deleting tags, manifests and blobs.
    ContentManagement,
}

impl Workflow {
    /// All workflows, in the order they run.
    pub const ALL: [Workflow; 4] = [
        Workflow::Pull,
        Workflow::Push,
        Workflow::ContentDiscovery,
        Workflow::ContentManagement,
    ];

    /// The heading used in reports.
    pub fn title(self) -> &'static str {
        match self {
            Workflow::Pull => "Pull",
            Workflow::Push => "Push",
            Workflow::ContentDiscovery => "Content discovery",
            Workflow::ContentManagement => "Content management",
        }
    }

    /// The environment variable that enables it, as the upstream suite names it.
    pub fn env_var(self) -> &'static str {
        match self {
            Workflow::Pull => "OCI_TEST_PULL",
            Workflow::Push => "OCI_TEST_PUSH",
            Workflow::ContentDiscovery => "OCI_TEST_CONTENT_DISCOVERY",
            Workflow::ContentManagement => "OCI_TEST_CONTENT_MANAGEMENT",
        }
    }
}

impl fmt::Display for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// Which workflows run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workflows {
    /// Run the pull checks.
    pub pull: bool,
    /// Run the push checks.
    pub push: bool,
    /// Run the content discovery checks.
    pub content_discovery: bool,
    /// Run the content management checks.
    pub content_management: bool,
}

impl Workflows {
    /// Every workflow enabled.
    pub fn all() -> Self {
        Self {
            pull: true,
            push: true,
            content_discovery: true,
            content_management: true,
        }
    }

    /// Whether `workflow` runs.
    pub fn enabled(self, workflow: Workflow) -> bool {
        match workflow {
            Workflow::Pull => self.pull,
            Workflow::Push => self.push,
            Workflow::ContentDiscovery => self.content_discovery,
            Workflow::ContentManagement => self.content_management,
        }
    }

    /// Reads `OCI_TEST_PULL`, `OCI_TEST_PUSH`, `OCI_TEST_CONTENT_DISCOVERY` and
    /// `OCI_TEST_CONTENT_MANAGEMENT` through `lookup`. When none is set every workflow runs;
    /// otherwise, as upstream, only those set to a true value (`1`, `true`, `yes`, `on`) do.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let values: Vec<Option<bool>> = Workflow::ALL
            .iter()
            .map(|w| {
                lookup(w.env_var())
                    .map(|v| parse_bool(w.env_var(), &v))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        if values.iter().all(Option::is_none) {
            return Ok(Self::all());
        }
        let on = |i: usize| values[i].unwrap_or(false);
        Ok(Self {
            pull: on(0),
            push: on(1),
            content_discovery: on(2),
            content_management: on(3),
        })
    }
}

/// Parses a boolean environment value.
fn parse_bool(name: &str, value: &str) -> Result<bool, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(Error::Config(format!(
            "{name}={other:?} is not a boolean (use 1 or 0)"
        ))),
    }
}

/// The configuration the builder fills in.
#[derive(Debug, Clone)]
struct Config {
    root_url: String,
    namespace: String,
    crossmount_namespace: Option<String>,
    workflows: Workflows,
    debug: bool,
    credentials: Option<(String, String)>,
}

/// Builds a [`Suite`]; see [`Suite::builder`] and [`SuiteBuilder::from_env`].
#[derive(Debug, Clone)]
pub struct SuiteBuilder {
    config: Config,
}

impl SuiteBuilder {
    /// Reads the upstream suite's environment variables: `OCI_ROOT_URL` (required unless a root
    /// URL is given later with [`SuiteBuilder::root_url`]), `OCI_NAMESPACE`,
    /// `OCI_CROSSMOUNT_NAMESPACE`, `OCI_USERNAME`/`OCI_PASSWORD`, `OCI_DEBUG` and the four
    /// `OCI_TEST_*` workflow switches (see [`Workflows::from_vars`]).
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`SuiteBuilder::from_env`], reading variables through `lookup`.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let mut builder = Suite::builder(lookup("OCI_ROOT_URL").unwrap_or_default());
        if let Some(namespace) = lookup("OCI_NAMESPACE").filter(|v| !v.is_empty()) {
            builder = builder.namespace(namespace);
        }
        if let Some(namespace) = lookup("OCI_CROSSMOUNT_NAMESPACE").filter(|v| !v.is_empty()) {
            builder = builder.crossmount_namespace(namespace);
        }
        if let Some(debug) = lookup("OCI_DEBUG") {
            builder = builder.debug(parse_bool("OCI_DEBUG", &debug)?);
        }
        if let Some(user) = lookup("OCI_USERNAME").filter(|v| !v.is_empty()) {
            builder = builder.credentials(user, lookup("OCI_PASSWORD").unwrap_or_default());
        }
        Ok(builder.workflows(Workflows::from_vars(&lookup)?))
    }

    /// Sets the registry's root URL, such as `http://127.0.0.1:5000`.
    pub fn root_url(mut self, root_url: impl Into<String>) -> Self {
        self.config.root_url = root_url.into();
        self
    }

    /// Sets the repository the checks push to and pull from (default `conformance/test`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// Sets the repository blobs are mounted into (default: a fresh name for each run).
    pub fn crossmount_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.crossmount_namespace = Some(namespace.into());
        self
    }

    /// Chooses the workflows to run (default: all).
    pub fn workflows(mut self, workflows: Workflows) -> Self {
        self.config.workflows = workflows;
        self
    }

    /// Prints every request and response to stderr.
    pub fn debug(mut self, debug: bool) -> Self {
        self.config.debug = debug;
        self
    }

    /// Sends HTTP basic credentials with every request.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.config.credentials = Some((user.into(), password.into()));
        self
    }

    /// Checks the configuration and builds the suite.
    pub fn build(self) -> Result<Suite, Error> {
        let mut config = self.config;
        if config.root_url.is_empty() {
            return Err(Error::Config(
                "no registry URL: set OCI_ROOT_URL, e.g. http://127.0.0.1:5000".into(),
            ));
        }
        if !is_repository_name(&config.namespace) {
            return Err(Error::Config(format!(
                "namespace {:?} is not a valid repository name",
                config.namespace
            )));
        }
        let crossmount = config
            .crossmount_namespace
            .take()
            .unwrap_or_else(|| format!("conformance-{}/crossmount", random_id(8)));
        if !is_repository_name(&crossmount) || crossmount == config.namespace {
            return Err(Error::Config(format!(
                "cross-mount namespace {crossmount:?} must be a valid repository name other than \
                 the namespace"
            )));
        }
        config.crossmount_namespace = Some(crossmount);
        let client = Client::new(&config.root_url, config.credentials.clone(), config.debug)?;
        Ok(Suite { config, client })
    }
}

/// A configured run of the distribution-spec conformance checks against one registry.
#[derive(Debug, Clone)]
pub struct Suite {
    config: Config,
    client: Client,
}

impl Suite {
    /// Starts configuring a suite for the registry at `root_url`.
    pub fn builder(root_url: impl Into<String>) -> SuiteBuilder {
        SuiteBuilder {
            config: Config {
                root_url: root_url.into(),
                namespace: "conformance/test".into(),
                crossmount_namespace: None,
                workflows: Workflows::all(),
                debug: false,
                credentials: None,
            },
        }
    }

    /// A suite configured from the environment (see [`SuiteBuilder::from_env`]).
    pub fn from_env() -> Result<Suite, Error> {
        SuiteBuilder::from_env()?.build()
    }

    /// Runs every check of the enabled workflows, in order, and reports.
    pub fn run(&self) -> Report {
        let crossmount = self
            .config
            .crossmount_namespace
            .clone()
            .expect("build() sets the cross-mount namespace");
        let mut ctx = Ctx {
            client: self.client.clone(),
            ns: self.config.namespace.clone(),
            cross_ns: crossmount.clone(),
            run: random_id(8),
            notes: Vec::new(),
            pull: pull::State::default(),
            discovery: discovery::State::default(),
            management: management::State::default(),
            referrers_supported: None,
        };
        let mut results = Vec::new();
        for case in all_cases() {
            let outcome = if self.config.workflows.enabled(case.workflow) {
                ctx.notes.clear();
                match catch_unwind(AssertUnwindSafe(|| (case.run)(&mut ctx))) {
                    Ok(Ok(())) => Outcome::Passed {
                        notes: std::mem::take(&mut ctx.notes),
                    },
                    Ok(Err(Stop::Fail(reason))) => Outcome::Failed { reason },
                    Ok(Err(Stop::Skip(reason))) => Outcome::Skipped { reason },
                    Err(panic) => Outcome::Failed {
                        reason: format!("the check panicked: {}", panic_message(&panic)),
                    },
                }
            } else {
                Outcome::Skipped {
                    reason: format!("workflow disabled ({} is not set)", case.workflow.env_var()),
                }
            };
            results.push(CaseResult {
                id: case.id,
                workflow: case.workflow,
                title: case.title,
                spec: case.spec,
                outcome,
            });
        }
        Report {
            root_url: self.config.root_url.clone(),
            namespace: self.config.namespace.clone(),
            crossmount_namespace: crossmount,
            results,
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// Whether `name` matches the spec's `<name>` grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
pub(crate) fn is_repository_name(name: &str) -> bool {
    fn component(c: &str) -> bool {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
            if !ok {
                return false;
            }
        }
        true
    }
    !name.is_empty() && name.split('/').all(component)
}

/// The static description of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseInfo {
    /// Stable identifier, `workflow.short-name`.
    pub id: &'static str,
    /// The workflow it belongs to.
    pub workflow: Workflow,
    /// What it verifies.
    pub title: &'static str,
    /// The spec endpoints and sections it enforces.
    pub spec: &'static str,
}

/// Every check the suite runs, in order.
pub fn cases() -> Vec<CaseInfo> {
    all_cases()
        .map(|c| CaseInfo {
            id: c.id,
            workflow: c.workflow,
            title: c.title,
            spec: c.spec,
        })
        .collect()
}

/// One check: its description and the function that runs it.
pub(crate) struct Case {
    id: &'static str,
    workflow: Workflow,
    title: &'static str,
    spec: &'static str,
    run: fn(&mut Ctx) -> Check,
}

impl Case {
    /// Describes a check.
    pub(crate) const fn new(
        id: &'static str,
        workflow: Workflow,
        title: &'static str,
        spec: &'static str,
        run: fn(&mut Ctx) -> Check,
    ) -> Self {
        Self {
            id,
            workflow,
            title,
            spec,
            run,
        }
    }
}

/// The checks of all workflows, in running order.
fn all_cases() -> impl Iterator<Item = &'static Case> {
    pull::CASES
        .iter()
        .chain(push::CASES)
        .chain(discovery::CASES)
        .chain(management::CASES)
}

/// Why a check stopped short of passing.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The registry broke a requirement.
    Fail(String),
    /// No verdict: an optional feature is absent or a prerequisite failed.
    Skip(String),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        Stop::Fail(error.to_string())
    }
}

/// The result of a check or of one of its steps.
pub(crate) type Check<T = ()> = Result<T, Stop>;

/// A failure with `reason`.
pub(crate) fn fail<T>(reason: impl Into<String>) -> Check<T> {
    Err(Stop::Fail(reason.into()))
}

/// A skip with `reason`.
pub(crate) fn skip<T>(reason: impl Into<String>) -> Check<T> {
    Err(Stop::Skip(reason.into()))
}

/// Fails unless `condition` holds.
pub(crate) fn ensure(condition: bool, reason: impl FnOnce() -> String) -> Check {
    if condition { Ok(()) } else { fail(reason()) }
}

/// Reads a fixture that a setup check stored, or skips naming that setup.
pub(crate) fn need<'a, T>(fixture: &'a Option<T>, setup_id: &str) -> Check<&'a T> {
    match fixture {
        Some(value) => Ok(value),
        None => skip(format!("prerequisite {setup_id} did not pass")),
    }
}

/// State shared by the checks of one run.
pub(crate) struct Ctx {
    /// The HTTP client rooted at the registry.
    pub client: Client,
    /// The repository under test.
    pub ns: String,
    /// The repository blobs are mounted into.
    pub cross_ns: String,
    /// A random id that makes this run's tags unique.
    pub run: String,
    notes: Vec<String>,
    pub pull: pull::State,
    pub discovery: discovery::State,
    pub management: management::State,
    /// Whether the registry answered the referrers API (`None` until asked).
    pub referrers_supported: Option<bool>,
}

impl Ctx {
    /// Records an observation on the current check that does not fail it.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// A tag unique to this run.
    pub fn tag(&self, name: &str) -> String {
        format!("{}-{name}", self.run)
    }

    /// `/v2/<ns>/blobs/<digest>`.
    pub fn blob_path(ns: &str, digest: &str) -> String {
        format!("/v2/{ns}/blobs/{digest}")
    }

    /// `/v2/<ns>/manifests/<reference>`.
    pub fn manifest_path(ns: &str, reference: &str) -> String {
        format!("/v2/{ns}/manifests/{reference}")
    }

    /// `/v2/<ns>/blobs/uploads/`.
    pub fn uploads_path(ns: &str) -> String {
        format!("/v2/{ns}/blobs/uploads/")
    }

    /// `/v2/<ns>/referrers/<digest>`.
    pub fn referrers_path(ns: &str, digest: &str) -> String {
        format!("/v2/{ns}/referrers/{digest}")
    }

    /// `GET` of a manifest with an `Accept` header naming every manifest type.
    pub fn get_manifest(&self, ns: &str, reference: &str) -> Check<Response> {
        Ok(self
            .client
            .get(&Self::manifest_path(ns, reference))
            .header("Accept", media_type::accept_manifests())
            .send()?)
    }

    /// `HEAD` of a manifest with an `Accept` header naming every manifest type.
    pub fn head_manifest(&self, ns: &str, reference: &str) -> Check<Response> {
        Ok(self
            .client
            .head(&Self::manifest_path(ns, reference))
            .header("Accept", media_type::accept_manifests())
            .send()?)
    }

    /// `POST /v2/<ns>/blobs/uploads/`, expecting `202 Accepted` with a `Location`; returns the
    /// upload URL.
    pub fn start_upload(&self, ns: &str) -> Check<Url> {
        let response = self.client.post(&Self::uploads_path(ns)).send()?;
        expect_status(&response, &[202], "a new upload session")?;
        require_location(&response)
    }

    /// Pushes `blob` into `ns` with `POST` then `PUT`, expecting `201 Created`.
    pub fn push_blob(&self, ns: &str, blob: &Blob) -> Check {
        let location = self.start_upload(ns)?;
        let response = self
            .client
            .request_url(Method::PUT, with_query(&location, "digest", &blob.digest))
            .header("Content-Type", "application/octet-stream")
            .body(blob.bytes.clone())
            .send()?;
        expect_status(&response, &[201], "the completed upload")
    }

    /// Pushes every blob in `blobs` into `ns`.
    pub fn push_blobs(&self, ns: &str, blobs: &[&Blob]) -> Check {
        blobs.iter().try_for_each(|blob| self.push_blob(ns, blob))
    }

    /// `PUT /v2/<ns>/manifests/<reference>` with the manifest's media type as `Content-Type`.
    pub fn put_manifest(&self, ns: &str, reference: &str, manifest: &Manifest) -> Check<Response> {
        Ok(self
            .client
            .put(&Self::manifest_path(ns, reference))
            .header("Content-Type", manifest.media_type.clone())
            .body(manifest.bytes.clone())
            .send()?)
    }

    /// Pushes a manifest and expects `201 Created`.
    pub fn push_manifest(&self, ns: &str, reference: &str, manifest: &Manifest) -> Check<Response> {
        let response = self.put_manifest(ns, reference, manifest)?;
        expect_status(&response, &[201], "the pushed manifest")?;
        Ok(response)
    }

    /// Deletes an upload session, ignoring the answer, as clients do when they abandon one.
    pub fn abandon_upload(&self, location: &Url) {
        let _ = self
            .client
            .request_url(Method::DELETE, location.clone())
            .send();
    }

    /// Asks the referrers API once per run whether it exists, and remembers the answer.
    pub fn referrers_available(&mut self, subject: &str) -> Check<bool> {
        if let Some(known) = self.referrers_supported {
            return Ok(known);
        }
        let response = self
            .client
            .get(&Self::referrers_path(&self.ns, subject))
            .send()?;
        let supported = response.status != 404;
        self.referrers_supported = Some(supported);
        Ok(supported)
    }
}

/// `url` with `key=value` appended to its query (existing parameters are kept).
pub(crate) fn with_query(url: &Url, key: &str, value: &str) -> Url {
    let mut url = url.clone();
    url.query_pairs_mut().append_pair(key, value);
    url
}

/// Fails unless the status is one of `expected`.
pub(crate) fn expect_status(response: &Response, expected: &[u16], what: &str) -> Check {
    if expected.contains(&response.status) {
        return Ok(());
    }
    let expected: Vec<String> = expected.iter().map(u16::to_string).collect();
    fail(format!(
        "expected {} for {what}, got {}: {response}",
        expected.join(" or "),
        response.status
    ))
}

/// The value of a header the spec requires, or a failure naming it.
pub(crate) fn require_header(response: &Response, name: &str) -> Check<String> {
    match response.header(name) {
        Some(value) => Ok(value.to_owned()),
        None => fail(format!("missing required header {name}: {response}")),
    }
}

/// The resolved `Location` header, which the spec requires on this response.
pub(crate) fn require_location(response: &Response) -> Check<Url> {
    match response.location() {
        Some(Ok(url)) => Ok(url),
        Some(Err(e)) => fail(format!("unusable Location header ({e}): {response}")),
        None => fail(format!("missing required header Location: {response}")),
    }
}

/// Checks the `Docker-Content-Digest` header the spec requires: present and equal to `digest`.
pub(crate) fn require_content_digest(response: &Response, digest: &str) -> Check {
    let value = require_header(response, "docker-content-digest")?;
    ensure(value == digest, || {
        format!("Docker-Content-Digest is {value}, expected {digest}: {response}")
    })
}

/// Checks `Content-Length` equals `size`.
pub(crate) fn require_content_length(response: &Response, size: usize) -> Check {
    let value = require_header(response, "content-length")?;
    ensure(value.trim() == size.to_string(), || {
        format!("Content-Length is {value}, expected {size}: {response}")
    })
}

/// The error codes the spec defines (code-1 to code-14).
pub(crate) const ERROR_CODES: [&str; 14] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// Judges an error body. A 4xx body MAY be in any format, but a JSON one MUST be
/// `{"errors":[{"code","message","detail"}]}` with codes from the spec's table; when it is, one
/// of its codes must be in `expected`. A non-JSON body is allowed and noted.
pub(crate) fn check_error_body(ctx: &mut Ctx, response: &Response, expected: &[&str]) -> Check {
    if response.method == Method::HEAD || response.body.is_empty() {
        return Ok(());
    }
    let Some(doc) = response.json() else {
        ctx.note(format!(
            "error body is not JSON, so its code was not checked (status {})",
            response.status
        ));
        return Ok(());
    };
    let codes = error_codes(&doc).map_err(|why| {
        Stop::Fail(format!(
            "JSON error body breaks the spec's error format ({why}): {response}"
        ))
    })?;
    if let Some(unknown) = codes.iter().find(|c| !ERROR_CODES.contains(&c.as_str())) {
        return fail(format!(
            "error code {unknown} is not one of the spec's codes: {response}"
        ));
    }
    ensure(codes.iter().any(|c| expected.contains(&c.as_str())), || {
        format!(
            "expected error code {}, got {}: {response}",
            expected.join(" or "),
            codes.join(", ")
        )
    })
}

/// The codes of a spec error document, or why it is not one.
fn error_codes(doc: &Value) -> Result<Vec<String>, String> {
    let errors = doc
        .get("errors")
        .and_then(Value::as_array)
        .ok_or("no \"errors\" array")?;
    if errors.is_empty() {
        return Err("empty \"errors\" array".into());
    }
    errors
        .iter()
        .map(|error| {
            let code = error
                .get("code")
                .and_then(Value::as_str)
                .ok_or("an error without a string \"code\"")?;
            if code.is_empty() || !code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                return Err(format!(
                    "code {code:?} is not upper-case letters and underscores"
                ));
            }
            if let Some(message) = error.get("message") {
                if !message.is_string() {
                    return Err("\"message\" is not a string".into());
                }
            }
            Ok(code.to_owned())
        })
        .collect()
}

/// Expects a 404 whose body, if JSON, carries one of `codes`.
pub(crate) fn expect_not_found(
    ctx: &mut Ctx,
    response: &Response,
    codes: &[&str],
    what: &str,
) -> Check {
    expect_status(response, &[404], what)?;
    check_error_body(ctx, response, codes)
}

/// Fails if a `Docker-Content-Digest` header is present but not a well-formed digest.
pub(crate) fn check_digest_header_syntax(response: &Response) -> Check {
    match response.header("docker-content-digest") {
        Some(value) if !digest::is_well_formed(value) => fail(format!(
            "Docker-Content-Digest {value:?} is not a well-formed digest: {response}"
        )),
        _ => Ok(()),
    }
}

/// The target of a `Link: <url>; rel="next"` header, resolved against the response URL.
pub(crate) fn next_link(response: &Response) -> Check<Option<Url>> {
    let values = response.header_values("link");
    for value in values {
        for part in value.split(',') {
            let part = part.trim();
            let Some(rest) = part.strip_prefix('<') else {
                return fail(format!(
                    "Link header {value:?} is not RFC 5988 (no <target>): {response}"
                ));
            };
            let Some((target, params)) = rest.split_once('>') else {
                return fail(format!(
                    "Link header {value:?} is not RFC 5988 (unclosed <target>): {response}"
                ));
            };
            let is_next = params.split(';').any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=")
                    .map(|r| r.trim_matches('"').split_whitespace().any(|r| r == "next"))
                    .unwrap_or(false)
            });
            if is_next {
                return match response.url.join(target) {
                    Ok(url) => Ok(Some(url)),
                    Err(e) => fail(format!(
                        "Link target {target:?} is not a URL ({e}): {response}"
                    )),
                };
            }
        }
    }
    Ok(None)
}

/// Whether `list` is in ASCIIbetical order or in case-insensitive lexical order, the two orders
/// the spec allows for tag lists.
pub(crate) fn is_spec_ordered(list: &[String]) -> bool {
    let ascii = list.windows(2).all(|w| w[0] <= w[1]);
    let lexical = list
        .windows(2)
        .all(|w| w[0].to_lowercase() <= w[1].to_lowercase());
    ascii || lexical
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in ["a", "conformance/test", "a.b_c__d--e/f0", "x/y/z"] {
            assert!(is_repository_name(ok), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "a:b",
        ] {
            assert!(!is_repository_name(bad), "{bad}");
        }
    }

    #[test]
    fn workflow_switches() {
        let none = Workflows::from_vars(|_| None).unwrap();
        assert_eq!(none, Workflows::all());
        let only_pull =
            Workflows::from_vars(|n| (n == "OCI_TEST_PULL").then(|| "1".to_owned())).unwrap();
        assert!(only_pull.pull && !only_pull.push);
        assert!(!only_pull.content_discovery && !only_pull.content_management);
        assert!(Workflows::from_vars(|_| Some("maybe".to_owned())).is_err());
    }

    #[test]
    fn builder_reads_the_environment_names() {
        let vars = |name: &str| match name {
            "OCI_ROOT_URL" => Some("http://127.0.0.1:1".to_owned()),
            "OCI_NAMESPACE" => Some("a/b".to_owned()),
            "OCI_CROSSMOUNT_NAMESPACE" => Some("a/c".to_owned()),
            "OCI_DEBUG" => Some("0".to_owned()),
            "OCI_TEST_PUSH" => Some("true".to_owned()),
            _ => None,
        };
        let suite = SuiteBuilder::from_vars(vars).unwrap().build().unwrap();
        assert_eq!(suite.config.namespace, "a/b");
        assert_eq!(suite.config.crossmount_namespace.as_deref(), Some("a/c"));
        assert!(suite.config.workflows.push && !suite.config.workflows.pull);
        assert!(SuiteBuilder::from_vars(|_| None).unwrap().build().is_err());
        assert!(Suite::builder("http://h").namespace("Bad").build().is_err());
    }

    #[test]
    fn case_ids_are_unique_and_prefixed_by_workflow() {
        let all = cases();
        assert!(all.len() > 50);
        let mut ids: Vec<_> = all.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all.len(), "duplicate case ids");
        for case in &all {
            let prefix = match case.workflow {
                Workflow::Pull => "pull.",
                Workflow::Push => "push.",
                Workflow::ContentDiscovery => "discovery.",
                Workflow::ContentManagement => "management.",
            };
            assert!(case.id.starts_with(prefix), "{}", case.id);
            assert!(!case.spec.is_empty() && !case.title.is_empty());
        }
    }

    #[test]
    fn error_documents() {
        let ok = serde_json::json!({"errors":[{"code":"BLOB_UNKNOWN","message":"x"}]});
        assert_eq!(error_codes(&ok).unwrap(), vec!["BLOB_UNKNOWN"]);
        assert!(error_codes(&serde_json::json!({"errors":[]})).is_err());
        assert!(error_codes(&serde_json::json!({"errors":[{"code":"lower"}]})).is_err());
        assert!(error_codes(&serde_json::json!({"error":"x"})).is_err());
    }

    #[test]
    fn ordering() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(is_spec_ordered(&v(&["a", "b", "c"])));
        assert!(is_spec_ordered(&v(&["B", "a"])));
        assert!(is_spec_ordered(&v(&["a", "B"])));
        assert!(!is_spec_ordered(&v(&["b", "a"])));
    }
}
