//! # berth-benches
//!
//! Benchmarks for berth, kept out of the unit tests: criterion micro-benches of the layer
//! pipeline under `benches/`, and side-by-side scripts that time berth against peer tools in the
//! same run. Figures and the commands that produced them live in `RESULTS.md`.
