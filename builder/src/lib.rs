//! # berth-builder
//!
//! The Dockerfile front end and the build executor behind `berth build`.
//!
//! This crate will hold, each as a module of its own:
//! - `parser`: Dockerfile text to a syntax tree with file, line and column on every node. It
//!   does no I/O;
//! - `instructions`: typed commands per stage, with ARG/ENV scoping and word expansion;
//! - `graph`: the stage and step DAG, pruned to `--target`, with a cache key per step;
//! - `solver`: runs ready vertices concurrently, RUN steps through `berth_runner::sandbox`, and
//!   turns each step's snapshot diff into a layer with `berth_layerstore::layer`.
//!
//! It is not filled in yet.
