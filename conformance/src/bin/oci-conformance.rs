//! `oci-conformance [ROOT_URL]`: runs the OCI distribution-spec conformance checks against a
//! registry and exits non-zero if any check fails.
//!
//! Configured like the upstream suite, through the environment:
//! `OCI_ROOT_URL` (or the first argument), `OCI_NAMESPACE`, `OCI_CROSSMOUNT_NAMESPACE`,
//! `OCI_USERNAME`/`OCI_PASSWORD`, `OCI_DEBUG=1` to print every exchange, and the workflow
//! switches `OCI_TEST_PULL`, `OCI_TEST_PUSH`, `OCI_TEST_CONTENT_DISCOVERY`,
//! `OCI_TEST_CONTENT_MANAGEMENT` (when none is set, all workflows run).

use std::process::ExitCode;

use berth_conformance::SuiteBuilder;

const USAGE: &str = "usage: oci-conformance [ROOT_URL]

Runs the OCI distribution-spec conformance checks against the registry at ROOT_URL
(default: $OCI_ROOT_URL) and exits 1 if any check fails, 2 on a configuration error.

environment:
  OCI_ROOT_URL                 registry root URL, e.g. http://127.0.0.1:5000
  OCI_NAMESPACE                repository to use (default conformance/test)
  OCI_CROSSMOUNT_NAMESPACE     repository to mount blobs into (default: a fresh one)
  OCI_USERNAME, OCI_PASSWORD   HTTP basic credentials
  OCI_TEST_PULL, OCI_TEST_PUSH, OCI_TEST_CONTENT_DISCOVERY, OCI_TEST_CONTENT_MANAGEMENT
                               1 to run that workflow; when none is set, all run
  OCI_DEBUG                    1 to print every request and response to stderr";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.len() > 1 {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let suite = SuiteBuilder::from_env().and_then(|builder| {
        match args.first() {
            Some(url) => builder.root_url(url.clone()),
            None => builder,
        }
        .build()
    });
    let suite = match suite {
        Ok(suite) => suite,
        Err(error) => {
            eprintln!("oci-conformance: {error}");
            return ExitCode::from(2);
        }
    };
    let report = suite.run();
    print!("{report}");
    if report.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
