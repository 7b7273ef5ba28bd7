#!/usr/bin/env bash
# The whole test suite: prepares the machine, checks formatting and lints, then runs every test
# of the workspace, including those that drive docker, skopeo and podman. Benchmarks stay out:
# they live in benches/ and run with `cargo bench` or benches/compare.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# A one-shot run gains nothing from incremental state, which would double the target directory.
export CARGO_INCREMENTAL=0

echo "== cargo fmt --check" >&2
cargo fmt --all --check

echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo build (the berth binary the black-box suites drive)" >&2
cargo build --locked --bin berth

echo "== cargo test" >&2
cargo test --workspace --locked

echo "== quick start" >&2
BERTH_BIN=$PWD/target/debug/berth bash scripts/quickstart.sh
