//! # berth-builder
//!
//! The Dockerfile front end and the build executor behind `berth build`.
//!
//! The front end is staged as BuildKit's is, each stage a module of its own:
//! - [`parser`]: Dockerfile text to a syntax tree with file, line and column on every node,
//!   plus BuildKit's S-expression dump and a printer back to Dockerfile text. It does no I/O;
//! - [`shell`]: word expansion (quotes, escapes, `$var` and the `${var...}` modifiers), with
//!   the variables each word referenced;
//! - [`instructions`]: typed commands per stage, with ARG/ENV scoping and word expansion;
//! - [`graph`]: the stage and step DAG, pruned to `--target`, with a stable identity per step;
//! - [`lint`]: BuildKit's build checks, honouring the `# check=` directive;
//! - [`context`]: `.dockerignore` and the walker over the build context;
//! - [`cache`]: the build cache's keys and records, local and imported;
//! - [`solver`]: runs the target's steps (RUN through `berth_runner::sandbox`, COPY from the
//!   context, metadata into the image config), each step's snapshot diff a layer, and writes
//!   the image into the local image store.

pub mod cache;
pub mod context;
#[doc(hidden)]
pub mod fuzz;
pub mod graph;
pub mod instructions;
pub mod lint;
pub mod parser;
pub mod shell;
pub mod solver;
