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
//! - [`context`]: `.dockerignore` and the walker over the build context.
//!
//! Still to come:
//! - `solver`: runs ready vertices concurrently, RUN steps through `berth_runner::sandbox`, and
//!   turns each step's snapshot diff into a layer with `berth_layerstore::layer`.

pub mod context;
pub mod graph;
pub mod instructions;
pub mod lint;
pub mod parser;
pub mod shell;
