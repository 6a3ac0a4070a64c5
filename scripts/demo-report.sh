#!/usr/bin/env bash
# The outbound report in the search node: runs `outbound run` (the stream
# stages and, inside it, the Elasticsearch sink) over the seed rows until the
# seed item's detail document and its three rollups are indexed, prints them,
# applies sql/update.sql (quantity 1 -> 2, "64 GB" -> "128 GB"), waits for
# the documents to change and prints them again.
#
#   scripts/demo.sh && scripts/demo-report.sh
#
# Environment: OUTBOUND_SEARCH_URL (default http://127.0.0.1:9200),
# OUTBOUND_DEMO_APP_ID (default outbound), CARGO_TARGET_DIR. The stack must be
# up (scripts/demo.sh). The app id stays the same across runs on purpose: the
# indices are versioned by the output topics' offsets, so a new app id (new
# topics, offsets from 0) needs new indices too (OUTBOUND_SINK__INDEX_PREFIX).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
url="${OUTBOUND_SEARCH_URL:-http://127.0.0.1:9200}"
app="${OUTBOUND_DEMO_APP_ID:-outbound}"
work="$(mktemp -d)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/outbound/target}"

echo "demo-report: building outbound"
cargo build --quiet --bin outbound --manifest-path "$repo/Cargo.toml"
"$CARGO_TARGET_DIR/debug/outbound" run --app-id "$app" --state-dir "$work/state" \
  --metrics-listen "" >"$work/outbound.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; echo "demo-report: outbound log: $work/outbound.log"' EXIT
echo "demo-report: outbound run (app id $app, sink included) started, pid $pid"

# The seed rows (sql/02_seed.sql): item 1 of order 1, shipped 2020-02-04 by
# FETCHR from the `wms` database.
detail="outbound_details/_doc/1"
rollups=("units_daily/_doc/2020-02-04%7Cwms%7Celectronics"
         "courier_daily/_doc/2020-02-04%7CFETCHR"
         "warehouse_daily/_doc/2020-02-04%7Cwms")

# wait_for JQ_CONDITION DOC: polls the document until the condition holds.
wait_for() {
  local cond="$1" doc="$2" deadline=$((SECONDS + 180))
  until curl -fsS "$url/$doc" 2>/dev/null | jq -e "$cond" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { echo "demo-report: outbound exited; log:" >&2; tail -n 30 "$work/outbound.log" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "demo-report: timed out waiting for $doc ($cond)" >&2; exit 1; }
    sleep 1
  done
}

show() {
  printf '\n=== %s ===\n' "$1"
  curl -fsS "$url/$detail" | jq -c '{_id, _version, order_id: ._source.order_id, status: ._source.status,
      ship_day: ._source.ship_day, warehouse: ._source.warehouse, courier: ._source.courier,
      item_qty: ._source.item.item_qty, description: ._source.order.order_description,
      order_value: ._source.order.order_value, shipment_cost: ._source.shipment.shipment_cost}'
  for r in "${rollups[@]}"; do
    curl -fsS "$url/$r" | jq -c '{_index, _id, _version, doc: ._source}'
  done
}

wait_for '._source.item.item_qty != null' "$detail"
for r in "${rollups[@]}"; do wait_for '.found' "$r"; done
show "seed rows, as indexed"

echo
echo "demo-report: applying sql/update.sql"
mariadb --no-defaults --protocol=TCP -h 127.0.0.1 -P "${OUTBOUND_MARIADB_PORT:-3306}" \
  -u outbound_app -poutbound <"$repo/sql/update.sql"
wait_for '._source.item.item_qty == 2' "$detail"
wait_for '._source.units == 2' "${rollups[0]}"
show "after the seed update"
