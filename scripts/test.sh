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
# The fuzz targets build on the decoders alone: neither SQLite nor librdkafka.
fuzz_links="$(cargo tree --manifest-path fuzz/Cargo.toml --locked -e normal,build --prefix none \
  | grep -oE '^(libsqlite3-sys|rdkafka-sys) ' | sort -u | tr -d '\n' || true)"
if [ -n "$fuzz_links" ]; then
  echo "test: the fuzz crate links $fuzz_links" >&2
  exit 1
fi
cargo check --manifest-path fuzz/Cargo.toml --locked --bins
cargo test --workspace --locked
