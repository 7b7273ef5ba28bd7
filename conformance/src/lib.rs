//! # berth-conformance
//!
//! Black-box suites that judge berth from the outside, the way its users meet it:
//! - the OCI distribution-spec conformance suite, over plain HTTP, against any registry;
//! - interoperability with real clients: `docker`, `podman`, `skopeo` and `ctr` pushing to and
//!   pulling from `berth registry serve`;
//! - `berth build` against `docker build` on the same Dockerfiles, compared file for file.
//!
//! It talks HTTP and runs command-line tools only; it never uses berth's own client, so it can
//! judge any registry. It is not filled in yet.
