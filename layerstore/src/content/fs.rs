//! Filesystem content store.
