#!/usr/bin/env bash
# Installs what the tests need and is not a Cargo dependency: the C toolchain pieces
# librdkafka builds with, promtool (Debian's prometheus package) for the rule pack,
# amtool (prometheus-alertmanager) for the Alertmanager API, Alertmanager 0.28.1 (built
# with Go) for the Teams receivers, Prometheus v3.5.0's PromQL test scripts (its Go
# module) for the rule engine's conformance test, the
# aiosmtpd SMTP server for the email tests, Debian's Chromium and playwright-core for
# the console's browser test, and real Apache Kafka (Java and Maven from
# Debian where the machine lacks them; the Kafka jars and the jmx_exporter agent from
# Maven Central, see scripts/kafka.sh) for the end-to-end tests.
# Idempotent and quick when everything is present.
set -euo pipefail

need_apt=()
command -v make >/dev/null || need_apt+=(make)
command -v cc >/dev/null || need_apt+=(gcc)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v perl >/dev/null || need_apt+=(perl)
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
dpkg -s zlib1g-dev >/dev/null 2>&1 || need_apt+=(zlib1g-dev)
# promtool, to check that the rule pack and its tests pass in Prometheus too, and
# prometheus, to compare the query API with it.
{ command -v promtool && command -v prometheus; } >/dev/null || need_apt+=(prometheus)
# amtool and Alertmanager, to check Foresight's Alertmanager API against them.
command -v amtool >/dev/null || need_apt+=(prometheus-alertmanager)
# Java 17 or later runs Kafka's brokers, controllers and tools; Maven fetches them.
if [ -z "${JAVA_HOME:-}" ]; then
  command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
fi
command -v mvn >/dev/null || need_apt+=(maven)
# PostgreSQL, for cluster mode's shared state (the tests start their own server in a
# temporary directory with Debian's binaries).
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
# Chromium drives the console's browser test; Node.js and npm run Playwright.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test-deps: installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# A real SMTP server for the email receiver's tests.
if ! python3 -c "import aiosmtpd" 2>/dev/null; then
  echo "test-deps: installing aiosmtpd (SMTP server for the email tests)"
  python3 -m pip install --quiet --user "aiosmtpd==1.4.6" 2>/dev/null \
    || python3 -m pip install --quiet "aiosmtpd==1.4.6"
fi

# playwright-core, pinned in scripts/browser/package-lock.json, drives that Chromium (it
# never downloads a browser of its own).
browser_dir="$(cd "$(dirname "$0")/browser" && pwd)"
want="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["packages"]["node_modules/playwright-core"]["version"])' "$browser_dir/package-lock.json")"
have="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$browser_dir/node_modules/playwright-core/package.json" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  echo "test-deps: installing playwright-core $want (scripts/browser)"
  (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

# Alertmanager 0.28.1, built from the Go module proxy (Debian's 0.25 has no Teams
# receiver), for the side-by-side test's Teams cards; cached in ~/.cache/foresight.
am_version=v0.28.1
am_dir="$HOME/.cache/foresight/alertmanager-$am_version"
if [ ! -x "$am_dir/alertmanager" ]; then
  if command -v go >/dev/null; then
    echo "test-deps: building Alertmanager $am_version from the Go module proxy"
    GOBIN="$am_dir" go install "github.com/prometheus/alertmanager/cmd/alertmanager@$am_version" \
      || echo "test-deps: WARNING: could not build Alertmanager $am_version; the side-by-side Teams test will fail"
  else
    echo "test-deps: WARNING: no Go toolchain to build Alertmanager $am_version; the side-by-side Teams test will fail"
  fi
fi

# Prometheus v3.5.0's PromQL test scripts for rules/tests/conformance.rs, which reads them
# from ../shared/conformance when the checkout has it beside it and from here otherwise.
# Prometheus v3.x tags are published as Go module versions v0.30X.Y (v3.5.0 is v0.305.0);
# `go mod download` fetches that module from the Go module proxy, checks it against
# sum.golang.org and unpacks it, read-only, in the module cache; the link below gives its
# testdata a stable path. The version is PROMETHEUS_VERSION in rules/tests/conformance.rs:
# change both together.
prom_version=v3.5.0
prom_module=github.com/prometheus/prometheus@v0.305.0
promqltest="$HOME/.cache/foresight/prometheus-$prom_version-promqltest"
# A link left dangling (`go clean -modcache`) is made again.
if [ ! -f "$promqltest/functions.test" ]; then
  if command -v go >/dev/null; then
    echo "test-deps: downloading Prometheus $prom_version's PromQL test scripts ($prom_module) from the Go module proxy"
    # Run outside any Go module, so that no go.mod or go.sum in the working directory is
    # read or changed; -json reports the module's directory, or in "Error" why it failed.
    if prom_dir="$(cd / && go mod download -json "$prom_module" | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(m.get("Dir") or sys.exit("test-deps: " + m.get("Error", "no Dir in go mod download -json")))')" \
        && [ -f "$prom_dir/promql/promqltest/testdata/functions.test" ]; then
      mkdir -p "$(dirname "$promqltest")"
      ln -sfn "$prom_dir/promql/promqltest/testdata" "$promqltest"
    else
      echo "test-deps: WARNING: could not download $prom_module; the PromQL conformance test will fail without ../shared/conformance"
    fi
  else
    echo "test-deps: WARNING: no Go toolchain to download Prometheus $prom_version's PromQL test scripts; the PromQL conformance test will fail without ../shared/conformance"
  fi
fi

# Apache Kafka 4.x and 3.9 with kafka-tools and the jmx_exporter agent, pinned in
# scripts/kafka/pom.xml; cached in ~/.m2 and ~/.cache/foresight/kafka.
scripts/kafka.sh fetch all >/dev/null
echo "test-deps: Apache Kafka $(ls "${FORESIGHT_KAFKA_CACHE:-$HOME/.cache/foresight/kafka}" | tr '\n' ' ')ready"
