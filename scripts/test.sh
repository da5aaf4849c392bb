#!/usr/bin/env bash
# The test command: installs what the tests need, then runs lint and every test.
# Build output is kept in a per-user cache so that later runs on the same machine are
# warm even from a fresh clone; one cache per checkout path, because test binaries embed
# their checkout's path (CARGO_MANIFEST_DIR) and cargo would reuse one built elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

checkout_hash="$(pwd -P | sha256sum | cut -c1-12)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/foresight/target-$checkout_hash}"

scripts/test-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
