//! # berth-layerstore
//!
//! Everything berth knows about content and layers, with no knowledge of HTTP:
//! - [`digest`]: checked sha256/sha512 digests and streaming hashers;
//! - [`media`]: OCI and Docker media types, and layer compression;
//! - [`content`]: the content-addressed blob store (role traits plus implementations);
//! - [`archive`]: the deterministic tar writer and the safe layer applier;
//! - [`compress`]: parallel gzip and multithreaded zstd encoders;
//! - [`layer`]: the layer pipeline (tar -> diff_id, compress, digest) in one pass;
//! - [`snapshot`]: layers extracted once by diff_id; build steps' root filesystems over them;
//! - [`image`]: manifests, indexes and configs, the OCI image layout and docker-archive;
//! - [`parallel`]: independent jobs on a few threads, stopping at the first error.

pub mod archive;
pub mod compress;
pub mod content;
pub mod digest;
pub mod image;
pub mod layer;
pub mod media;
pub mod parallel;
pub mod snapshot;

pub use digest::{Algorithm, Digest, DigestError};
pub use media::Compression;
