#!/usr/bin/env bash
# outbound against the Kafka Streams baseline, side by side in one run
# (benches/versus.rs; issue #15). Brings up Kafka (stack/stack.sh up kafka,
# a no-op when it runs), builds the baseline (benches/kafka-streams/build.sh)
# and outbound's release build, then runs the benchmark. It prints a table
# and writes $CARGO_TARGET_DIR/bench/report.json.
#
#   scripts/bench-versus.sh                                     # 100 000 changes
#   OUTBOUND_BENCH_CHANGES=300000 OUTBOUND_BENCH_SKEW=2 scripts/bench-versus.sh
#
# Quieter figures come from a private Kafka in a network namespace:
#   scripts/isolated.sh bench env OUTBOUND_STACK_DIR=/tmp/bench-stack stack/stack.sh up kafka
#   scripts/isolated.sh bench env OUTBOUND_STACK_DIR=/tmp/bench-stack scripts/bench-versus.sh
# Knobs (environment): OUTBOUND_BENCH_CHANGES, OUTBOUND_BENCH_SKEW,
# OUTBOUND_BENCH_LATENCY_SECS (0 skips the latency phase),
# OUTBOUND_BENCH_WARMUP_SECS, KSTREAMS_JAVA_OPTS (default -Xmx1g).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=scripts/build-env.sh
source scripts/build-env.sh
stack/stack.sh up kafka
benches/kafka-streams/build.sh >/dev/null
exec cargo bench --bench versus
