//! The build graph: stages and their steps as a DAG with edges from `FROM <stage>`,
//! `COPY --from` and `RUN --mount=from=`, pruned to `--target`, with cycle detection, ready sets
//! for parallel execution and a stable identity per step.
