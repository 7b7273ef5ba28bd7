//! In-memory content store.
