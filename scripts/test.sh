#!/usr/bin/env bash
# tripline's test command, the one `.ci/run` calls. From a fresh clone on a machine with Rust, it
# installs and starts the real services (Mosquitto, Cassandra), checks formatting and lints, runs
# every test of the workspace against those services, and stops what it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$SECONDS

# Build artefacts of dependencies are shared between clones on the same machine (the CI clone
# included); our own crates are rebuilt per checkout by cargo's fingerprints anyway.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tripline/target}"
# Incremental caches are kept per checkout path and never reused by the next clone: in the shared
# target directory they grew to 35 GB and filled the disk. A run from a clone gains nothing by them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "test.sh: installing the $component component" >&2
    rustup component add "$component"
  fi
done
if ! command -v python3 >/dev/null; then
  echo "test.sh: installing python3 (the CQL readiness probe)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
fi

# schemathesis (from PyPI), for the API fuzzing test, in a virtual environment of its own.
SCHEMATHESIS_VERSION=4.32.5
venv=".services/venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "test.sh: installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
  mkdir -p .services
  if ! python3 -m venv "$venv" 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
export TRIPLINE_TEST_SCHEMATHESIS="$PWD/$venv/bin/schemathesis"

# Headless Chromium and its WebDriver server from Debian's packages, for the trip explorer's
# browser test.
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  echo "test.sh: installing chromium and chromium-driver (Debian packages)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
export TRIPLINE_TEST_CHROMEDRIVER="$(command -v chromedriver)"

# Stop at the end only the services this run started.
already_running=()
for service in mosquitto cassandra; do
  if scripts/services.sh status "$service" >/dev/null 2>&1; then already_running+=("$service"); fi
done
stop_started() {
  for service in mosquitto cassandra; do
    [[ " ${already_running[*]-} " == *" $service "* ]] || scripts/services.sh stop "$service" || true
  done
}
trap stop_started EXIT

services_started=$SECONDS
scripts/services.sh start
echo "test.sh: services ready after $((SECONDS - services_started)) s" >&2
eval "$(scripts/services.sh env)"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The crate docs' links resolve (a renamed or private item is an error, not a dead link).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
test_log="$(mktemp)"
cargo test --workspace 2>&1 | tee "$test_log"
# Coverage-guided fuzzing of the decoder and the trip-file readers, briefly (scripts/fuzz.sh).
scripts/fuzz.sh 20
# One closing line for the whole workspace: cargo prints a `test result` per test binary, and the
# last of them (often a crate without doc tests) says nothing about the run as a whole.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^ignored/) s += $(i-1) } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$test_log" >"$test_log.summary"
rm -f "$test_log"

stop_started
trap - EXIT
echo "test.sh: all checks passed in $((SECONDS - started)) s" >&2
cat "$test_log.summary"
rm -f "$test_log.summary"
