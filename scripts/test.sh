#!/usr/bin/env bash
# The whole test suite: prepares the machine, checks formatting and lints, then runs every test
# of the workspace, including those that drive docker and skopeo.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check" >&2
cargo fmt --all --check

echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test" >&2
cargo test --workspace --all-targets --locked

echo "== quick start" >&2
bash scripts/quickstart.sh
