//! The layer pipeline: one pass over a tar stream yields diff_id, digest, size and media type.
