#!/usr/bin/env bash
# The long chaos run (issue #12): the whole real path (MariaDB → Debezium →
# Kafka → three `outbound run` instances → the search node) under load from
# `outbound loadgen`, with random faults for N minutes — kill -9 (some with
# the state directory wiped), SIGSTOP past the session timeout, a duplicate
# instance id, broker / Kafka Connect restarts, search-node outages, scaling
# 1 → 3 → 1 — then `outbound reconcile --wait-for-quiet` and the
# exactly-once audit. Prints: events applied, faults by kind, drain time,
# reconcile result, audit result.
#
#   scripts/chaos.sh --minutes 20 [--seed N]
#
# It restarts the components of the stack it runs on (OUTBOUND_STACK_DIR,
# default .stack): run it on a stack of its own, e.g.
#   scripts/isolated.sh chaos env OUTBOUND_STACK_DIR=/tmp/chaos-stack stack/stack.sh up
#   scripts/isolated.sh chaos env OUTBOUND_STACK_DIR=/tmp/chaos-stack scripts/chaos.sh --minutes 20
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=20
seed=12
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "chaos.sh: unknown argument $1 (--minutes N, --seed N)" >&2; exit 2 ;;
  esac
done
case "$minutes" in ''|*[!0-9.]*) echo "chaos.sh: --minutes wants a number" >&2; exit 2 ;; esac

source scripts/build-env.sh
stack/stack.sh up >/dev/null
set +e
OUTBOUND_CHAOS_MINUTES="$minutes" OUTBOUND_CHAOS_SEED="$seed" \
  cargo test --locked --test chaos -- --nocapture --test-threads 1 2>&1 |
  grep -v '^ *Compiling '
rc=${PIPESTATUS[0]}
exit "$rc"
