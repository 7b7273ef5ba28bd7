//! # berth-registry
//!
//! The OCI distribution-spec v1.1 server (`berth registry serve`, axum on tokio) and the registry
//! client (reqwest) used by `berth push`, `berth pull`, `berth build --push` and `berth copy`.
//!
//! This crate will hold:
//! - the HTTP router, the `<name>` extractor (parsed from the right, since names contain `/`),
//!   the handlers for every end-point of the spec and its error bodies;
//! - the metadata store (tags, manifests, referrers; SQLite in WAL mode) and the per-repository
//!   blob membership that sits in front of `berth_layerstore`'s content store;
//! - the client: HEAD before upload, cross-repository mount, monolithic and chunked uploads,
//!   bearer-token challenges and `~/.docker/config.json` credentials.
//!
//! It is the only crate that speaks the distribution wire format. It is not filled in yet.
