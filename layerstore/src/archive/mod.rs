//! Deterministic tar writer (from a directory or a list of changes) and the safe layer applier.
