//! Runs the whole distribution-spec suite against CNCF distribution 2.8 (`docker-registry`), the
//! reference the suite is judged by: every check must pass, except
//! - the documented skips: distribution 2.8 has no referrers API (it answers 404, so the
//!   referrers checks report "not supported by this registry"), deletes manifests by digest only
//!   (tag deletion answers 400, which the spec allows for disabled deletion), ignores `?tag=`
//!   parameters and declines mounts without `from`;
//! - the documented deviations: places where 2.8 breaks a MUST of the current spec. Each must
//!   fail, so the suite is shown to catch them; any other failure fails this test.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use berth_conformance::{Outcome, Report, Suite, Workflow, cases};

/// Checks distribution 2.8 fails, and why: it predates these requirements of the spec.
const KNOWN_DEVIATIONS: &[(&str, &str)] = &[
    (
        "push.chunk-out-of-order",
        "2.8 ignores Content-Range on PATCH and appends an out-of-order chunk with 202",
    ),
    (
        "push.final-chunk-out-of-order",
        "2.8 ignores Content-Range on the closing PUT and answers 400 DIGEST_INVALID, not 416",
    ),
    (
        "discovery.tags-list-order",
        "2.8 lists tags in directory order, not sorted",
    ),
    (
        "discovery.tags-list-n",
        "2.8 ignores n and returns every tag",
    ),
    (
        "discovery.tags-list-n-zero",
        "2.8 ignores n=0 and returns every tag",
    ),
    (
        "discovery.tags-list-last",
        "2.8 ignores last and returns every tag",
    ),
    (
        "discovery.tags-list-n-last",
        "2.8 ignores n and last and returns every tag",
    ),
];

/// Checks distribution 2.8 skips, with the start of the reason each must give.
const DOCUMENTED_SKIPS: &[(&str, &str)] = &[
    (
        "push.manifest-tag-params",
        "tag parameters are not supported",
    ),
    // The Link check only runs when a page is partial; 2.8 never paginates tags.
    ("discovery.tags-list-link", "no Link header"),
    ("discovery.referrers-list", "not supported by this registry"),
    (
        "discovery.referrers-descriptors",
        "not supported by this registry",
    ),
    (
        "discovery.referrers-filter",
        "not supported by this registry",
    ),
    ("discovery.referrers-none", "not supported by this registry"),
    (
        "discovery.referrers-invalid-digest",
        "not supported by this registry",
    ),
    (
        "discovery.referrers-subject-header",
        "not supported by this registry",
    ),
    ("management.delete-tag", "a tag deletion is disabled"),
    (
        "management.deleted-tag-not-listed",
        "prerequisite management.delete-tag",
    ),
    (
        "management.delete-referrer",
        "not supported by this registry",
    ),
];

fn run_suite(url: &str) -> Report {
    let report = Suite::builder(url)
        .namespace("conformance/peer")
        .crossmount_namespace("conformance/peer-mount")
        .build()
        .expect("valid configuration")
        .run();
    println!("{report}");
    report
}

#[test]
fn distribution_passes_the_suite_except_documented_skips_and_deviations() {
    let registry = common::start_distribution();
    let report = run_suite(&registry.url());

    let known: BTreeSet<&str> = KNOWN_DEVIATIONS.iter().map(|(id, _)| *id).collect();
    let unexpected: Vec<String> = report
        .failures()
        .filter(|r| !known.contains(r.id))
        .map(|r| format!("{}: {}", r.id, r.reason().unwrap_or_default()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "checks failed against distribution that should pass:\n{}\nserver log:\n{}",
        unexpected.join("\n"),
        registry.log_tail()
    );

    for (id, why) in KNOWN_DEVIATIONS {
        let result = report.get(id).unwrap_or_else(|| panic!("no check {id}"));
        assert!(
            result.failed(),
            "{id} should fail against distribution 2.8 ({why}), but: {:?}",
            result.outcome
        );
    }

    let documented: BTreeSet<&str> = DOCUMENTED_SKIPS.iter().map(|(id, _)| *id).collect();
    for result in report.results.iter().filter(|r| r.skipped()) {
        assert!(
            documented.contains(result.id),
            "{} was skipped without being documented: {}",
            result.id,
            result.reason().unwrap_or_default()
        );
    }
    for (id, reason) in DOCUMENTED_SKIPS {
        let result = report.get(id).unwrap_or_else(|| panic!("no check {id}"));
        match &result.outcome {
            Outcome::Skipped { reason: got } => assert!(
                got.starts_with(reason),
                "{id} was skipped for another reason than {reason:?}: {got}"
            ),
            other => {
                panic!("{id} should be skipped ({reason}) against distribution 2.8: {other:?}")
            }
        }
    }

    assert_eq!(
        report.passed() + KNOWN_DEVIATIONS.len() + DOCUMENTED_SKIPS.len(),
        report.results.len()
    );
}

#[test]
fn the_binary_exits_zero_on_success_and_non_zero_on_failure() {
    let registry = common::start_distribution();
    let binary = env!("CARGO_BIN_EXE_oci-conformance");

    // Pull alone passes on distribution: exit 0 and a final summary line with no failures.
    let output = Command::new(binary)
        .arg(registry.url())
        .env_clear()
        .env("OCI_TEST_PULL", "1")
        .env("OCI_NAMESPACE", "conformance/bin")
        .output()
        .expect("run oci-conformance");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "pull only should pass:\n{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    let (passed, failed, skipped) = parse_summary(last);
    let pull_cases = cases()
        .iter()
        .filter(|c| c.workflow == Workflow::Pull)
        .count();
    assert_eq!((passed, failed), (pull_cases, 0), "{last}");
    assert_eq!(passed + skipped, cases().len(), "{last}");
    assert!(stdout.contains("workflow disabled (OCI_TEST_PUSH is not set)"));

    // Discovery includes the tag-list checks distribution 2.8 fails: exit 1.
    let output = Command::new(binary)
        .env_clear()
        .env("OCI_ROOT_URL", registry.url())
        .env("OCI_TEST_CONTENT_DISCOVERY", "1")
        .output()
        .expect("run oci-conformance");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  discovery.tags-list-n "), "{stdout}");

    // No registry URL at all is a configuration error: exit 2.
    let output = Command::new(binary)
        .env_clear()
        .output()
        .expect("run oci-conformance");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("OCI_ROOT_URL"));
}

/// Reads the closing line `N passed, N failed, N skipped`.
fn parse_summary(line: &str) -> (usize, usize, usize) {
    let numbers: Vec<usize> = line
        .split(", ")
        .map(|part| {
            part.split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected summary line {line:?}"))
        })
        .collect();
    match numbers[..] {
        [passed, failed, skipped] => (passed, failed, skipped),
        _ => panic!("unexpected summary line {line:?}"),
    }
}
