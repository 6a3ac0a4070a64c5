#!/usr/bin/env bash
# The README's test command. From nothing: installs the build prerequisites,
# brings up the local stack (Kafka, MariaDB + Debezium, the search node,
# Prometheus — installed from apt and Maven Central on first use), then runs
# the format and lint checks and every test of the workspace against it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds are cached outside the clone so a fresh clone starts warm.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/outbound/target}"
# Property tests: a fixed case count in CI; raise it locally for more.
export PROPTEST_CASES="${PROPTEST_CASES:-1000}"

step() { printf '\n==> %s\n' "$*"; }

step "build prerequisites"
scripts/setup-build.sh

step "local stack"
stack/stack.sh up

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo test --workspace --locked --no-fail-fast
