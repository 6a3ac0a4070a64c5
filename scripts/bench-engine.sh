#!/usr/bin/env bash
# The engine benchmark (benches/engine.rs): one instance's exactly-once
# throughput and restore rate, each beside a bare-Kafka baseline measured in
# the same run. With --before REV, an earlier build of the engine is measured
# first in the same run, on the same source topics, and a table says how this
# build compares (issue #13: the redesign must be no slower than what it
# replaced; 27c4877^ is the engine before it).
#
#   scripts/bench-engine.sh
#   scripts/bench-engine.sh --before 27c4877^
#   OUTBOUND_BENCH_CHANGES=300000 scripts/bench-engine.sh --before 27c4877^
#
# REV is built (release) in a temporary worktree with a target directory of
# its own, $OUTBOUND_CACHE_DIR/target-before: two checkouts sharing one
# target directory make cargo judge path dependencies by mtime and mix the
# two. Brings up Kafka (stack/stack.sh up kafka, a no-op when it runs).
# Quieter figures come from a private Kafka (see scripts/bench-versus.sh).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
before=""
case "${1:-}" in
  --before) before="${2:?--before needs a revision, e.g. 27c4877^}" ;;
  "") ;;
  *) echo "usage: $0 [--before REV]" >&2; exit 2 ;;
esac
cache="${OUTBOUND_CACHE_DIR:-$HOME/.cache/outbound}"
# shellcheck source=scripts/build-env.sh
source scripts/build-env.sh
stack/stack.sh up kafka
if [ -n "$before" ]; then
  commit="$(git rev-parse --verify "$before^{commit}")"
  tmp="$(mktemp -d)"
  trap 'git -C "$repo" worktree remove --force "$tmp/before" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
  git worktree add --detach -q "$tmp/before" "$commit"
  echo "bench-engine: building $before ($commit) in $tmp/before" >&2
  # Its own build environment (its Cargo.lock may pin another RocksDB).
  (
    cd "$tmp/before"
    export CARGO_TARGET_DIR="$cache/target-before"
    unset ROCKSDB_LIB_DIR
    if [ -f scripts/build-env.sh ]; then
      # shellcheck disable=SC1091
      source scripts/build-env.sh
    fi
    cargo build --locked --profile bench --bin outbound
  )
  export OUTBOUND_BENCH_BEFORE_BIN="$cache/target-before/release/outbound"
fi
cargo bench --locked --bench engine
