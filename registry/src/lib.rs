//! # berth-registry
//!
//! Everything that speaks the OCI distribution wire format:
//! - `reference`: checked repository names, tags and image references;
//! - `server`: the distribution-spec v1.1 server behind `berth registry serve` (axum on tokio),
//!   with its storage: blobs in the layerstore content store behind per-repository membership,
//!   metadata (tags, manifests, referrers) in SQLite, and resumable upload sessions on disk;
//! - `client`: pull and push of whole images, with HEAD-before-upload, cross-repository mounts,
//!   chunked uploads, bearer-token auth and `~/.docker/config.json` credentials;
//! - [`auth`]: token authentication (credentials with IAM-style policies, access tokens, scopes),
//!   shared by the server and whoever issues credentials.
//!
//! Architecture Invariant: this is the only crate that speaks the distribution wire format.

pub mod auth;
pub mod client;
pub mod reference;
pub mod server;
pub mod storage;
