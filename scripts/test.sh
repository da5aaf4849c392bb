#!/usr/bin/env bash
# The test command: installs what the tests need, then runs lint and every test.
# Build output is kept in a per-user cache so that later runs on the same machine are
# warm even from a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/foresight/target}"
export TANSU_BIN="${TANSU_BIN:-${CARGO_HOME:-$HOME/.cargo}/bin/tansu}"

scripts/test-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
