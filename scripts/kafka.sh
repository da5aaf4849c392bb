#!/usr/bin/env bash
# Real Apache Kafka for the tests, the benchmarks and by hand.
#
#   scripts/kafka.sh fetch [4|3.9|all]   fetch a version's classpath (server, kafka-tools,
#                                        jmx_exporter agent) from Maven Central; prints
#                                        the lib directory. Warm runs read ~/.m2 only.
#   scripts/kafka.sh run [ARGS]          start a KRaft cluster on loopback (dedicated
#                                        controllers, brokers, the jmx_exporter agent on
#                                        each) until Ctrl-C: `run --help` lists ARGS.
#   scripts/kafka.sh tool CLASS [ARGS]   run one of Kafka's tools, e.g.
#                                        `tool org.apache.kafka.tools.TransactionsCommand
#                                        --bootstrap-server 127.0.0.1:9092 list`.
#
# Versions are pinned in scripts/kafka/pom.xml (profiles kafka-4 and kafka-3.9).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd -P)"
cache="${FORESIGHT_KAFKA_CACHE:-$HOME/.cache/foresight/kafka}"

version_of() {
  # The version a profile pins, read from the pom so that it is written once.
  sed -n "/<id>kafka-$1<\/id>/,/<\/profile>/s/.*<kafka.version>\(.*\)<\/kafka.version>.*/\1/p" \
    "$root/scripts/kafka/pom.xml"
}

fetch() {
  local profile="$1" version lib
  version="$(version_of "$profile")"
  [ -n "$version" ] || { echo "kafka.sh: no profile kafka-$profile in scripts/kafka/pom.xml" >&2; exit 2; }
  lib="$cache/$version/lib"
  # Fetched again when the pom changes (another agent version, say).
  pom_hash="$(sha256sum "$root/scripts/kafka/pom.xml" | cut -c1-16)"
  if [ "$(cat "$lib/.complete" 2>/dev/null)" != "$pom_hash" ]; then
    command -v mvn >/dev/null || { echo "kafka.sh: mvn is missing: run scripts/test-deps.sh" >&2; exit 2; }
    echo "kafka.sh: fetching Apache Kafka $version from Maven Central" >&2
    rm -rf "$lib"
    mvn -q -B -f "$root/scripts/kafka/pom.xml" -P "kafka-$profile" \
      dependency:copy-dependencies -DoutputDirectory="$lib" >&2
    echo "$pom_hash" > "$lib/.complete"
  fi
  echo "$lib"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  fetch)
    case "${1:-all}" in
      all) fetch 4; fetch 3.9 ;;
      *) fetch "$1" ;;
    esac ;;
  run)
    cd "$root"
    exec cargo run -q -p foresight-testkit --bin foresight-kafka -- "$@" ;;
  tool)
    lib="$(fetch 4)"
    exec java -Xmx256m -cp "$lib/*" "$@" ;;
  *)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2 ;;
esac
