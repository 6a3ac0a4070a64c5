#!/usr/bin/env bash
# The demo, from nothing, in one command:
#   1. brings up the local stack (stack/stack.sh up: MariaDB with the seed
#      rows, Kafka, Kafka Connect + Debezium, the search node, Prometheus) and
#      puts the seed rows back to their seed values (sql/02_seed.sql);
#   2. builds outbound (cargo, CARGO_TARGET_DIR as scripts/test.sh);
#   3. starts `outbound run` (stream stages and the in-process sink, which
#      re-reads the output topics from the beginning: idempotent);
#   4. waits for the seed item's detail record and its three rollup records
#      on <app>-details and <app>-rollups (read_committed) and prints them,
#      then the same records as documents in the search node;
#   5. applies sql/update.sql (quantity 1 -> 2, "64 GB" -> "128 GB"), waits
#      for the outputs to change and prints them and the documents again;
#   6. runs `outbound reconcile --wait-for-quiet`: the indices against a batch
#      computation over the source tables (sql/reconcile/), zero differences.
#   Then it stops outbound (the process it started, by its PID). Running it
#   again is fine: it puts the seed values back first.
#
#   scripts/demo.sh                  all of the above
#   scripts/demo.sh --no-update      steps 1-4 and 6
#   scripts/demo.sh --keep-running   leave outbound running at the end (log
#                                    .stack/logs/outbound-demo.log; the next
#                                    scripts/demo.sh stops it)
#
# Environment: OUTBOUND_DEMO_APP_ID (default outbound), OUTBOUND_DEMO_TIMEOUT
# (seconds per wait, default 300), OUTBOUND_SEARCH_URL (default
# http://127.0.0.1:9200), OUTBOUND_SINK__INDEX_PREFIX, CARGO_TARGET_DIR,
# OUTBOUND_STACK_DIR, OUTBOUND_CACHE_DIR, ports (see stack/).
#
# The app id stays the same across runs on purpose: the sink versions every
# document by its output record's offset, so the indices belong to one
# incarnation of the output topics. A new app id (new topics, offsets from 0)
# needs new indices too (OUTBOUND_SINK__INDEX_PREFIX); the demo detects
# indices left by another incarnation and says so.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
update=1 keep=0
for a in "$@"; do
  case "$a" in
    --no-update) update=0 ;;
    --keep-running) keep=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $a (try --help)" >&2; exit 2 ;;
  esac
done

app="${OUTBOUND_DEMO_APP_ID:-outbound}"
timeout="${OUTBOUND_DEMO_TIMEOUT:-300}"
url="${OUTBOUND_SEARCH_URL:-http://127.0.0.1:9200}"
prefix="${OUTBOUND_SINK__INDEX_PREFIX:-}"
# Builds are cached outside the clone, shared with scripts/test.sh.
source "$repo/scripts/build-env.sh"

say() { printf '\n[demo %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '\n[demo] FAILED: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
say "1/6 the local stack (stack/stack.sh up), while outbound builds"
command -v cargo >/dev/null || die "cargo is not installed (the Rust toolchain: https://rustup.rs)"
# apt first: the stack installs packages too, and apt takes one at a time.
"$repo/scripts/setup-build.sh"
# Again: the prebuilt RocksDB setup-build.sh fetched is now there to point at.
source "$repo/scripts/build-env.sh"
# The stack mostly downloads and starts JVMs, the build mostly compiles: run
# them side by side. The stack's progress goes to its log.
mkdir -p "${OUTBOUND_STACK_DIR:-$repo/.stack}/logs"
stack_log="${OUTBOUND_STACK_DIR:-$repo/.stack}/logs/stack-up.log"
"$repo/stack/stack.sh" up >"$stack_log" 2>&1 &
stack_pid=$!
echo "stack starting in the background (log: $stack_log)"

say "2/6 building outbound (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
if [ -x "$CARGO_TARGET_DIR/debug/outbound" ]; then
  echo "an earlier build is cached: only what changed is rebuilt (seconds when nothing did)"
else
  echo "first build: about 4 minutes on two cores (librdkafka's C build is the longest part)"
fi
build_started=$SECONDS
(cd "$repo" && cargo build --bin outbound --locked)
echo "built in $((SECONDS - build_started))s"
bin="$CARGO_TARGET_DIR/debug/outbound"
[ -x "$bin" ] || die "no binary at $bin after the build"

if ! wait "$stack_pid"; then
  tail -n 40 "$stack_log" >&2
  die "the local stack failed to come up (log: $stack_log)"
fi
tail -n 1 "$stack_log"
say "the seed rows"

# shellcheck source=stack/lib.sh
source "$repo/stack/lib.sh"
# shellcheck source=stack/components/kafka.sh
source "$repo/stack/components/kafka.sh"

sql() {
  mariadb --no-defaults --protocol=TCP -h 127.0.0.1 -P "${OUTBOUND_MARIADB_PORT:-3306}" \
    -u outbound_app -poutbound --batch --skip-column-names "$@"
}
source_rows() {
  sql -e "SELECT CONCAT('wms.wms_demo id 1: item_qty=', w.item_qty,
                        '; orders.order_demo id 1: order_description=\"', o.order_description, '\"')
          FROM wms.wms_demo w JOIN orders.order_demo o ON o.order_id = w.order_id WHERE w.id = 1"
}

# The stack loads the seed rows on its first start; loading them again changes
# nothing (INSERT IGNORE). A previous demo run left them updated: put back the
# two values sql/update.sql changes (an UPDATE that changes nothing writes no
# binlog event, so on a fresh stack this is a no-op for Debezium too).
sql <"$repo/sql/02_seed.sql"
sql -e "UPDATE wms.wms_demo SET item_qty = '1' WHERE id = 1;
        UPDATE orders.order_demo SET order_description = 'Apple Iphone X Black-64 GB' WHERE id = 1;"
echo "seed rows: $(source_rows)"


# ---------------------------------------------------------------------------
# outbound runs as the stack's components do (stack/lib.sh): in its own
# session, PID and start time in $STACK_RUN/outbound-demo.pid, log in
# $STACK_LOGS/outbound-demo.log, stopped by that PID only.
name=outbound-demo
olog="$(logfile $name)"
state="$STACK_DATA/$name"
work="$(mktemp -d)"   # the records read from the output topics
finished=0 readers=()

cleanup() {
  local r
  for r in "${readers[@]}"; do kill "$r" 2>/dev/null || true; done
  rm -rf "$work"
  if [ $keep -eq 1 ] && [ $finished -eq 1 ]; then
    echo "[demo] outbound keeps running: pid $(cat "$(pidfile $name)"), log $olog" \
      "(the next scripts/demo.sh stops it; or: kill $(cat "$(pidfile $name)"))"
  elif [ -f "$(pidfile $name)" ]; then
    stop_process $name 30
    rm -rf "$state"
    echo "[demo] outbound stopped; its log: $olog"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "3/6 outbound run (app id $app: the stream stages and, in-process, the sink)"
# An outbound an earlier `scripts/demo.sh --keep-running` left behind: ours,
# by its PID file (stop_process checks the PID's start time too).
stop_process $name 30
rm -rf "$state"
# The sink re-reads the output topics from the beginning on every demo run:
# its writes are idempotent (each document is versioned by its record's
# offset), and indices deleted since the last run are filled again.
if ! out="$(kafka_tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
      --bootstrap-server "$KAFKA_BOOTSTRAP" --group "$app-sink" --reset-offsets --to-earliest \
      --all-topics --execute 2>&1)" || grep -q '^Error' <<<"$out"; then
  echo "[demo] warning: could not rewind the sink's group $app-sink (is another outbound of app $app running?):" >&2
  grep -m 3 . <<<"$out" | sed 's/^/    /' >&2
fi
start_process $name env OUTBOUND_SINK__URL="$url" \
  "$bin" run --app-id "$app" --state-dir "$state" --metrics-listen ""
echo "outbound run started: pid $(cat "$(pidfile $name)"), log $olog"

# ---------------------------------------------------------------------------
# The seed rows (sql/02_seed.sql): item 1 of order 1, shipped 2020-02-04 by
# FETCHR from the `wms` database. Detail records are keyed by item id, rollup
# records by <rollup>/<document id>; the sink indexes them under the same ids.
details="$app-details" rollups="$app-rollups"
rollup_keys=("units_daily/2020-02-04|wms|electronics" "courier_daily/2020-02-04|FETCHR"
             "warehouse_daily/2020-02-04|wms")

# read_topic TOPIC OUT: every committed record of TOPIC, from the beginning,
# as one JSON object {KEY: {partition, offset, value}} holding each key's
# newest record. Never creates the topic (outbound creates its own).
# The console consumer stops after --timeout-ms without a record; a JVM that
# starts slowly on a loaded machine can miss every record in 3 s, so each
# fruitless round waits twice as long (up to 24 s).
read_timeout_ms=3000
read_topic() {
  kafka_tool org.apache.kafka.tools.consumer.ConsoleConsumer \
      --bootstrap-server "$KAFKA_BOOTSTRAP" --topic "$1" --from-beginning \
      --isolation-level read_committed --timeout-ms "$read_timeout_ms" \
      --consumer-property allow.auto.create.topics=false \
      --property print.key=true --property print.partition=true --property print.offset=true \
      --property key.separator=$'\t' 2>/dev/null |
    jq -R -s 'split("\n") | map(select(length > 0) | split("\t") | select(length >= 4)
        | {key: .[2], partition: (.[0] | ltrimstr("Partition:") | tonumber),
           offset: (.[1] | ltrimstr("Offset:") | tonumber),
           value: ((.[3:] | join("\t") | fromjson?) // null)})
      | reduce .[] as $r ({}; .[$r.key] = ($r | del(.key)))' >"$2"
}

# read_outputs: both output topics at once, into $work/details.json and
# $work/rollups.json.
read_outputs() {
  read_topic "$details" "$work/details.json" & readers=($!)
  read_topic "$rollups" "$work/rollups.json" & readers+=($!)
  wait "${readers[@]}" || true
  readers=()
}

check_running() {
  is_running $name && return 0
  echo "[demo] outbound exited; the end of its log ($olog):" >&2
  tail -n 30 "$olog" | sed 's/^/    /' >&2
  exit 1
}

# wait_outputs QTY DESCRIPTION_END: polls the output topics until the seed
# item's newest detail record has that quantity and description (and its
# shipment joined), and its rollups the matching units.
wait_outputs() {
  local qty="$1" desc="$2" deadline=$((SECONDS + timeout))
  while :; do
    check_running
    read_outputs
    if jq -e --argjson q "$qty" --arg d "$desc" '.["1"].value
          | .item.item_qty == $q and (.order.order_description // "" | endswith($d)) and .shipment != null' \
          "$work/details.json" >/dev/null 2>&1 &&
       jq -e --argjson q "$qty" --arg u "${rollup_keys[0]}" --arg c "${rollup_keys[1]}" --arg w "${rollup_keys[2]}" '
          .[$u].value.units == $q and .[$w].value.units == $q and .[$c].value.orders == 1' \
          "$work/rollups.json" >/dev/null 2>&1; then
      return 0
    fi
    read_timeout_ms=$((read_timeout_ms < 12000 ? read_timeout_ms * 2 : 24000))
    [ $SECONDS -lt $deadline ] ||
      die "timed out after ${timeout}s waiting for item_qty=$qty, \"…$desc\" on $details and $rollups (outbound log: $olog)"
  done
}

show_outputs() {
  printf '\n=== %s: output topics (read_committed), the newest record per key ===\n' "$1"
  jq -r --arg t "$details" '.["1"] | "\($t) partition \(.partition) offset \(.offset) key 1\n  \(.value
      | {order_id, status, ship_day, warehouse, courier, item_qty: .item.item_qty,
         description: .order.order_description, order_value: .order.order_value,
         shipment_cost: .shipment.shipment_cost} | tojson)"' "$work/details.json"
  local k
  for k in "${rollup_keys[@]}"; do
    jq -r --arg t "$rollups" --arg k "$k" '.[$k] | "\($t) partition \(.partition) offset \(.offset) key \($k)\n  \(.value | tojson)"' \
      "$work/rollups.json"
  done
}

# The search node's documents, as alias, document id, record file, record key
# (tab-separated: the rollup ids hold '|').
tab=$'\t'
docs=("${prefix}outbound_details${tab}1${tab}details${tab}1")
for k in "${rollup_keys[@]}"; do docs+=("$prefix${k%%/*}$tab${k#*/}${tab}rollups$tab$k"); done

doc_url() { printf '%s/%s/_doc/%s' "$url" "$1" "$(jq -rn --arg id "$2" '$id | @uri')"; }

# wait_documents: polls each document until the sink has indexed the record
# just read from the topic (external version = the record's offset).
wait_documents() {
  local d alias id file key offset version deadline=$((SECONDS + timeout))
  for d in "${docs[@]}"; do
    IFS=$'\t' read -r alias id file key <<<"$d"
    offset="$(jq -r --arg k "$key" '.[$k].offset' "$work/$file.json")"
    while :; do
      version="$(curl -fsS "$(doc_url "$alias" "$id")" 2>/dev/null | jq -r '._version // -1' 2>/dev/null || echo -1)"
      [ "$version" -ge "$offset" ] && break
      check_running
      [ $SECONDS -lt $deadline ] ||
        die "timed out after ${timeout}s waiting for the sink to index $alias/$id (offset $offset; indexed version $version; outbound log: $olog)"
      sleep 1
    done
    if [ "$version" -gt "$offset" ]; then
      local index; index="$(curl -fsS "$(doc_url "$alias" "$id")" | jq -r '._index')"
      die "$alias/$id has version $version, newer than the newest record for it on the topic (offset $offset):
the index $index holds documents of an earlier incarnation of the output topics
(another app id, or deleted topics), which the sink will never overwrite. Delete
the demo's indices (curl -X DELETE '$url/${prefix}outbound_details-v*,${prefix}units_daily-v*,${prefix}courier_daily-v*,${prefix}warehouse_daily-v*')
or give the demo its own (OUTBOUND_SINK__INDEX_PREFIX=demo-), and run it again
(the sink re-reads the output topics from the beginning on every demo run)."
    fi
  done
}

show_documents() {
  printf '\n=== %s: search node %s (_version = the record'"'"'s offset) ===\n' "$1" "$url"
  local d alias id file key
  for d in "${docs[@]}"; do
    IFS=$'\t' read -r alias id file key <<<"$d"
    if [ "$file" = details ]; then
      curl -fsS "$(doc_url "$alias" "$id")" | jq -c '{_index, _id, _version, order_id: ._source.order_id,
          status: ._source.status, ship_day: ._source.ship_day, warehouse: ._source.warehouse,
          courier: ._source.courier, item_qty: ._source.item.item_qty,
          description: ._source.order.order_description, order_value: ._source.order.order_value,
          shipment_cost: ._source.shipment.shipment_cost}'
    else
      curl -fsS "$(doc_url "$alias" "$id")" | jq -c '{_index, _id, _version, doc: ._source}'
    fi
  done
}

say "4/6 waiting for the seed item on $details and $rollups, then in the search node"
wait_outputs 1 "64 GB"
show_outputs "seed rows"
wait_documents
show_documents "seed rows"

# ---------------------------------------------------------------------------
if [ $update -eq 1 ]; then
  say "5/6 applying sql/update.sql (item quantity 1 -> 2, description \"64 GB\" -> \"128 GB\")"
  sql <"$repo/sql/update.sql"
  echo "source rows: $(source_rows)"
  wait_outputs 2 "128 GB"
  show_outputs "after the update"
  wait_documents
  show_documents "after the update"
else
  say "5/6 skipped (--no-update)"
fi

finished=1
say "done"
