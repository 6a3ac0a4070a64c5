#!/usr/bin/env bash
# The README's test command. From nothing: installs the build prerequisites
# and every tool a test shells out to, checks they are all there, brings up
# the local stack (Kafka, MariaDB + Debezium, the search node, Prometheus —
# installed from apt and Maven Central on first use) while the code is
# linted and the tests are built, then runs every test of the workspace
# against the stack (scripts/run-tests.py: several binaries at a time, the
# ones that stop stack components on private stacks beside them).
#
# From nothing on two cores: 13-20 min (apt, Maven downloads and a first
# build); with the caches warm (~/.cache/outbound, ~/.m2): 12.5-15.5 min, of
# which 10-13 are the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
source scripts/build-env.sh
# Property tests: a fixed case count in CI; raise it locally for more.
export PROPTEST_CASES="${PROPTEST_CASES:-1000}"

t0=$SECONDS
step() { printf '\n==> [%dm%02ds] %s\n' $(((SECONDS - t0) / 60)) $(((SECONDS - t0) % 60)) "$*"; }

step "build prerequisites"
scripts/setup-build.sh
# Again: the prebuilt RocksDB setup-build.sh fetched is now there to point at.
source scripts/build-env.sh

step "test tools"
scripts/setup-test-tools.sh

step "local stack (in the background: .stack/logs/stack-up.log)"
mkdir -p .stack/logs
stack_log="$repo/.stack/logs/stack-up.log"
# The optional secured components too: tests/secure_kafka.rs and
# tests/search_tls.rs run against them.
{ stack/stack.sh up && stack/stack.sh up kafka-secure search-tls; } >"$stack_log" 2>&1 &
stack_pid=$!
wait_stack() {
  if ! wait "$stack_pid"; then
    printf '\n==> the local stack failed to come up:\n' >&2
    tail -n 40 "$stack_log" >&2
    exit 1
  fi
  tail -n 1 "$stack_log"
}
trap 'kill "$stack_pid" 2>/dev/null; exit 130' INT TERM

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "building the tests"
cargo test --workspace --locked --no-run
# Doc tests need no stack: run them while it comes up.
cargo test --workspace --locked --doc

step "waiting for the local stack"
wait_stack

step "tests (several binaries at a time: scripts/run-tests.py)"
scripts/run-tests.py --locked
step "done"
