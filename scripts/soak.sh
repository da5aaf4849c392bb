#!/usr/bin/env bash
# The long no-false-alarm run, as a benchmark: the healthy, busy real Kafka 4.x
# cluster of ingest/tests/kafka_healthy.rs, three agents and the built-in pack as
# shipped, for SOAK_SECS (default 1800, 30 minutes). Passes when nothing was notified
# and nothing but disk capacity is pending at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout_hash="$(pwd -P | sha256sum | cut -c1-12)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/foresight/target-$checkout_hash}"
export FORESIGHT_HEALTHY_SECS="${SOAK_SECS:-1800}"
scripts/kafka.sh fetch 4 >/dev/null
start=$(date +%s)
cargo test --locked -p foresight-ingest --test kafka_healthy -- --nocapture
echo "soak: ${FORESIGHT_HEALTHY_SECS} s watched, nothing raised ($(( $(date +%s) - start )) s in all)"
