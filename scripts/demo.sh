#!/usr/bin/env bash
# The demo, from nothing: install the build prerequisites, bring up the whole
# local stack (MariaDB with the seed rows, Kafka, Kafka Connect + Debezium,
# the search node, Prometheus), then print the seed rows' Debezium change
# events from the three topics.
#
#   scripts/demo.sh            seed rows as snapshotted (op "r")
#   scripts/demo.sh --update   also apply sql/update.sql (quantity 1 -> 2,
#                              "64 GB" -> "128 GB") and show the "u" events
#
# Environment: OUTBOUND_STACK_DIR, OUTBOUND_CACHE_DIR, ports (see stack/);
# OUTBOUND_DEMO_COMPONENTS to bring up fewer components (e.g. "mariadb kafka connect").
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
update=0
for a in "$@"; do
  case "$a" in
    --update) update=1 ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $a (try --help)" >&2; exit 2 ;;
  esac
done

"$repo/scripts/setup-build.sh"
# shellcheck disable=SC2086
"$repo/stack/stack.sh" up ${OUTBOUND_DEMO_COMPONENTS:-}

# shellcheck source=stack/lib.sh
source "$repo/stack/lib.sh"
# shellcheck source=stack/components/kafka.sh
source "$repo/stack/components/kafka.sh"

if [ $update -eq 1 ]; then
  log "demo: applying sql/update.sql (item_qty 1 -> 2, description 64 GB -> 128 GB)"
  mariadb --no-defaults --protocol=TCP -h 127.0.0.1 -P "${OUTBOUND_MARIADB_PORT:-3306}" \
    -u outbound_app -poutbound <"$repo/sql/update.sql"
fi

# The seed rows' keys (sql/02_seed.sql): orders.order_demo id 1, wms.wms_demo
# id 1, logistics.logistics_demo id 2. One consumer reads the three topics
# from the beginning (read_committed) and exits 10 s after the last record.
log "demo: reading the three Debezium topics from the beginning"
events="$(kafka_tool org.apache.kafka.tools.consumer.ConsoleConsumer \
    --bootstrap-server "$KAFKA_BOOTSTRAP" \
    --include 'outbound\.(orders\.order_demo|wms\.wms_demo|logistics\.logistics_demo)' \
    --from-beginning --timeout-ms 10000 --property isolation.level=read_committed 2>/dev/null || true)"
for seed in orders.order_demo:1 wms.wms_demo:1 logistics.logistics_demo:2; do
  table="${seed%:*}" id="${seed#*:}"
  printf '\n=== outbound.%s: change events of the seed row id=%s ===\n' "$table" "$id"
  jq -c --arg t "$table" --argjson id "$id" '
      select(. != null and .payload != null)
      | .payload
      | select("\(.source.db).\(.source.table)" == $t and (.after // .before).id == $id)
      | {op, db: .source.db, table: .source.table, snapshot: .source.snapshot, before, after}' <<<"$events"
done
printf '\nThe envelope (JSON with schema and payload) is described in sql/README.md.\n'
