//! # berth-conformance
//!
//! Black-box suites that judge a registry from the outside, the way its users meet it:
//! - the OCI distribution-spec conformance suite ([`Suite`]), over plain HTTP, against any
//!   registry: the four workflows of the spec (pull, push, content discovery, content
//!   management), each a list of named checks with a spec reference;
//! - interoperability with real clients (`docker`, `podman`, `skopeo`, `ctr`) pushing to and
//!   pulling from `berth registry serve`, in this crate's integration tests;
//! - a judge of built images ([`image`]): it reads what `docker save` writes and OCI layouts,
//!   flattens the layers and compares filesystems and configs, so that the Dockerfile corpus
//!   ([`corpus`], `conformance/dockerfiles/`) can hold `berth build` to what `docker build` makes
//!   (`tests/dockerfile_corpus.rs`).
//!
//! It talks HTTP and runs command-line tools only; it depends on no berth crate, so it can judge
//! any registry and any builder, and the same run against CNCF distribution (or docker's own
//! builds) shows that the suite itself is right.
//!
//! ```no_run
//! use berth_conformance::Suite;
//!
//! let suite = Suite::builder("http://127.0.0.1:5000")
//!     .namespace("conformance/repo")
//!     .build()
//!     .expect("valid configuration");
//! let report = suite.run();
//! print!("{report}");
//! assert!(report.is_success());
//! ```

pub mod content;
pub mod corpus;
pub mod digest;
mod error;
pub mod http;
pub mod image;
mod report;
mod suite;

pub use error::Error;
pub use report::{CaseResult, Outcome, Report};
pub use suite::{CaseInfo, Suite, SuiteBuilder, Workflow, Workflows, cases};
