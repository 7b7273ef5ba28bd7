//! Runs the whole distribution-spec suite against `berth registry serve`: no check may fail, and
//! the referrers API, which berth implements, must pass rather than skip.

mod common;

use berth_conformance::{Suite, cases};

/// Checks that exercise the referrers API; against berth they must all pass.
const REFERRERS_CHECKS: &[&str] = &[
    "discovery.referrers-list",
    "discovery.referrers-descriptors",
    "discovery.referrers-filter",
    "discovery.referrers-none",
    "discovery.referrers-invalid-digest",
    "discovery.referrers-subject-header",
    "management.delete-referrer",
];

#[test]
fn berth_passes_the_whole_suite() {
    let registry = common::start_berth();
    let report = Suite::builder(registry.url())
        .namespace("conformance/berth")
        .crossmount_namespace("conformance/berth-mount")
        .build()
        .expect("valid configuration")
        .run();
    println!("{report}");

    let failures: Vec<String> = report
        .failures()
        .map(|r| format!("{}: {}", r.id, r.reason().unwrap_or_default()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} checks failed against berth:\n{}\nserver log:\n{}",
        failures.len(),
        report.results.len(),
        failures.join("\n"),
        registry.log_tail()
    );

    for id in REFERRERS_CHECKS {
        assert!(
            cases().iter().any(|c| c.id == *id),
            "{id} is not a check of the suite"
        );
        let result = report
            .get(id)
            .unwrap_or_else(|| panic!("no result for {id}"));
        assert!(
            result.passed(),
            "{id} must pass against berth, which implements the referrers API: {:?}",
            result.outcome
        );
    }
}
