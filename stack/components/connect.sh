# Kafka Connect 4.x distributed worker (REST on 127.0.0.1:8083) with
# Debezium's MariaDB connector as a plugin, both from Maven Central
# (stack/maven/connect, stack/maven/debezium); registers the connector from
# stack/config/debezium-mariadb.json over the REST API and waits until it runs.
# Sourced by stack/stack.sh; needs stack/lib.sh (and kafka.sh, mariadb.sh).
# shellcheck shell=bash

CONNECT_PORT="${OUTBOUND_CONNECT_PORT:-8083}"
CONNECT_URL="http://127.0.0.1:$CONNECT_PORT"
CONNECT_JARS="$STACK_CACHE/jars/connect"
CONNECT_PLUGINS="$STACK_CACHE/plugins"
CONNECT_CONF="$STACK_CONF/connect-distributed.properties"
CONNECT_HEAP="${OUTBOUND_CONNECT_HEAP:--Xms256m -Xmx1g}"
CONNECTOR_NAME="outbound-mariadb"
CONNECTOR_JSON="$STACK_REPO/stack/config/debezium-mariadb.json"
CONNECTOR_CLASS="io.debezium.connector.mariadb.MariaDbConnector"

connect_install() {
  command -v java >/dev/null || apt_install connect openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install connect maven
  maven_fetch connect "$STACK_REPO/stack/maven/connect" "$CONNECT_JARS"
  maven_fetch debezium "$STACK_REPO/stack/maven/debezium" "$CONNECT_PLUGINS/debezium-connector-mariadb"
}

connect_rest_ok() { http_ok "$CONNECT_URL/connectors"; }

connect_has_plugin() {
  curl -fsS --max-time 10 "$CONNECT_URL/connector-plugins" 2>/dev/null | grep -q "\"$CONNECTOR_CLASS\""
}

connect_status() {
  if is_running connect && connect_rest_ok; then
    local st
    st="$(curl -fsS --max-time 5 "$CONNECT_URL/connectors/$CONNECTOR_NAME/status" 2>/dev/null |
          jq -r '"connector \(.connector.state), tasks \([.tasks[].state] | join(","))"' 2>/dev/null || echo "connector not registered")"
    echo "connect: running (pid $(cat "$(pidfile connect)")) on $CONNECT_URL, $CONNECTOR_NAME: $st, log $(logfile connect)"
  else
    echo "connect: stopped"
    return 1
  fi
}

# connect_other_connectors_with_server_id ID: names of connectors other than
# ours in the worker whose database.server.id is ID (empty when Connect is down).
connect_other_connectors_with_server_id() {
  local id="$1" names n sid
  names="$(curl -fsS --max-time 5 "$CONNECT_URL/connectors" 2>/dev/null | jq -r '.[]' 2>/dev/null)" || return 0
  for n in $names; do
    [ "$n" = "$CONNECTOR_NAME" ] && continue
    sid="$(curl -fsS --max-time 5 "$CONNECT_URL/connectors/$n/config" 2>/dev/null | jq -r '."database.server.id" // empty')"
    [ "$sid" = "$id" ] && printf '%s ' "$n"
  done
  return 0
}

connect_start() {
  local lf; lf="$(logfile connect)"
  if ! kafka_ready; then
    fail connect "Kafka is not answering on $KAFKA_BOOTSTRAP; start it first: stack/stack.sh up kafka" "$(logfile kafka)"
  fi
  if is_running connect; then
    wait_until connect "the REST API on $CONNECT_URL" 180 connect_rest_ok
    log "connect: already running (pid $(cat "$(pidfile connect)"))"
  else
    require_free_port connect "$CONNECT_PORT"
    render_template "$STACK_REPO/stack/config/connect-distributed.properties" "$CONNECT_CONF" \
      "KAFKA_PORT=$KAFKA_PORT" "CONNECT_PORT=$CONNECT_PORT"
    log "connect: starting the distributed worker on $CONNECT_URL"
    # shellcheck disable=SC2086
    start_process connect java $CONNECT_HEAP -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$STACK_REPO/stack/config/log4j2.properties" \
      -cp "$CONNECT_JARS/*" org.apache.kafka.connect.cli.ConnectDistributed "$CONNECT_CONF"
    wait_until connect "the REST API on $CONNECT_URL" 180 connect_rest_ok
  fi
  wait_until connect "the plugin $CONNECTOR_CLASS to be listed in $CONNECT_URL/connector-plugins" 60 connect_has_plugin

  # The three classic CDC failures are cheaper to report before Debezium does.
  mariadb_check_cdc
  connect_register
  connect_restart_failed
  connect_wait_running
  connect_wait_streaming
}

connect_stop() {
  stop_process connect 60
}

# connect_register: PUT the connector config when it differs from what the
# worker has (PUT restarts the connector, so an identical config is not re-sent).
connect_register() {
  local lf; lf="$(logfile connect)"
  jq -e 'type == "object"' "$CONNECTOR_JSON" >/dev/null 2>&1 \
    || fail connect "$CONNECTOR_JSON is not a JSON object of connector settings" ""
  local want have
  # The ports follow the stack's settings (OUTBOUND_MARIADB_PORT, OUTBOUND_KAFKA_PORT).
  want="$(jq -S --arg n "$CONNECTOR_NAME" --arg port "$MARIADB_PORT" --arg kafka "$KAFKA_BOOTSTRAP" \
    '. + {name: $n, "database.port": $port, "schema.history.internal.kafka.bootstrap.servers": $kafka}' "$CONNECTOR_JSON")"
  have="$(curl -fsS --max-time 10 "$CONNECT_URL/connectors/$CONNECTOR_NAME/config" 2>/dev/null | jq -S . 2>/dev/null || true)"
  if [ "$want" = "$have" ]; then
    log "connect: connector $CONNECTOR_NAME already registered with this config"
    return 0
  fi
  log "connect: registering connector $CONNECTOR_NAME from ${CONNECTOR_JSON#"$STACK_REPO"/}"
  local resp code
  resp="$(mktemp)"
  code="$(curl -sS --max-time 60 -o "$resp" -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
          --data "$want" "$CONNECT_URL/connectors/$CONNECTOR_NAME/config" 2>&1)" || code="curl: $code"
  if [ "$code" != "200" ] && [ "$code" != "201" ]; then
    local body; body="$(cat "$resp")"; rm -f "$resp"
    fail connect "PUT $CONNECT_URL/connectors/$CONNECTOR_NAME/config answered $code: $body" "$lf"
  fi
  rm -f "$resp"
}

# connect_explain TRACE: a one-line hint for the classic CDC failures.
connect_explain() {
  case "$1" in
    *"Access denied"*) echo "MariaDB refuses the CDC user (password or host): see sql/03_grants.sql" ;;
    *"same server_uuid/server_id"*|*"same server id"*|*"same server_id"*)
      echo "duplicate server id: another binlog reader (replica or connector) uses this database.server.id; give each its own id" ;;
    *"binlog"*"not enabled"*|*"log_bin"*|*"binlog_format"*|*"binlog_row_image"*)
      echo "the binlog is not configured for CDC (log_bin=ON, binlog_format=ROW, binlog_row_image=FULL)" ;;
    *"privilege"*|*"REPLICATION"*|*"RELOAD"*|*"BINLOG MONITOR"*)
      echo "the CDC user lacks a grant (SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT)" ;;
    *) echo "see the trace above and the Connect log" ;;
  esac
}

# connect_state: sets CONNECT_STATE to "RUNNING", "FAILED", "UNKNOWN" or the
# states in between, and CONNECT_TRACE to the failure traces (no subshell, so
# call it directly).
connect_state() {
  local st
  CONNECT_TRACE=""
  if ! st="$(curl -fsS --max-time 10 "$CONNECT_URL/connectors/$CONNECTOR_NAME/status" 2>/dev/null)"; then
    CONNECT_STATE="UNKNOWN"
    return 0
  fi
  CONNECT_TRACE="$(jq -r '[.connector.trace // empty, (.tasks[]?.trace // empty)] | join("\n---\n")' <<<"$st")"
  CONNECT_STATE="$(jq -r 'if .connector.state == "FAILED" or any(.tasks[]?; .state == "FAILED") then "FAILED"
         elif .connector.state == "RUNNING" and (.tasks | length) > 0 and all(.tasks[]; .state == "RUNNING") then "RUNNING"
         else "\(.connector.state)/\([.tasks[]?.state] | join(","))" end' <<<"$st")"
}

# connect_fail_with_trace WHAT: print the REST status trace (the exception
# chain: first lines and every "Caused by") and fail with a hint.
connect_fail_with_trace() {
  {
    printf '\n[stack] %s status trace (GET %s/connectors/%s/status):\n' "$CONNECTOR_NAME" "$CONNECT_URL" "$CONNECTOR_NAME"
    grep -E '^[^[:space:]]|Caused by' <<<"$CONNECT_TRACE" | head -n 30 | sed 's/^/    /'
  } >&2
  fail connect "connector $CONNECTOR_NAME FAILED $1: $(connect_explain "$CONNECT_TRACE"); after fixing the cause, run stack/stack.sh up connect again (it restarts failed tasks)" "$(logfile connect)"
}

# connect_restart_failed: restart the connector's failed instances once (a
# new `up` after the cause was fixed brings it back).
connect_restart_failed() {
  connect_state
  [ "$CONNECT_STATE" = "FAILED" ] || return 0
  log "connect: $CONNECTOR_NAME has FAILED instances; restarting them once"
  curl -fsS --max-time 30 -o /dev/null -X POST \
    "$CONNECT_URL/connectors/$CONNECTOR_NAME/restart?includeTasks=true&onlyFailed=true" \
    || fail connect "POST $CONNECT_URL/connectors/$CONNECTOR_NAME/restart failed" "$(logfile connect)"
  local deadline=$((SECONDS + 30))
  while connect_state && [ "$CONNECT_STATE" = "FAILED" ] && [ $SECONDS -lt $deadline ]; do sleep 1; done
}

# connect_wait_running: connector and task RUNNING, and still RUNNING a moment
# later (Debezium fails its task early on bad grants or binlog settings).
connect_wait_running() {
  local lf; lf="$(logfile connect)"
  local deadline=$((SECONDS + 180)) stable=0
  while :; do
    connect_state
    [ "$CONNECT_STATE" = "FAILED" ] && connect_fail_with_trace "while starting"
    if [ "$CONNECT_STATE" = "RUNNING" ]; then
      stable=$((stable + 1))
      [ $stable -ge 3 ] && break
    else
      stable=0
    fi
    is_running connect || fail connect "the worker exited while waiting for $CONNECTOR_NAME" "$lf"
    [ $SECONDS -lt $deadline ] || fail connect "timed out after 180s waiting for $CONNECTOR_NAME to run (state $CONNECT_STATE)" "$lf"
    sleep 1
  done
  log "connect: connector $CONNECTOR_NAME and its task are RUNNING"
}

# connect_wait_streaming: the connector has committed an offset past its
# initial snapshot (Debezium's offset carries "snapshot": true until the
# snapshot is complete), so the seed rows are on the topics and binlog
# streaming has begun.
connect_wait_streaming() {
  local lf; lf="$(logfile connect)"
  local deadline=$((SECONDS + 300)) offsets
  until offsets="$(curl -fsS --max-time 10 "$CONNECT_URL/connectors/$CONNECTOR_NAME/offsets" 2>/dev/null)" &&
        jq -e '(.offsets | length) > 0 and all(.offsets[]; (.offset.snapshot // false | tostring) != "true")' <<<"$offsets" >/dev/null 2>&1; do
    connect_state
    [ "$CONNECT_STATE" = "FAILED" ] && connect_fail_with_trace "during its snapshot"
    [ $SECONDS -lt $deadline ] || fail connect "timed out after 300s waiting for $CONNECTOR_NAME to finish its snapshot (offsets: ${offsets:-none})" "$lf"
    sleep 1
  done
  log "connect: $CONNECTOR_NAME has snapshotted and is streaming the binlog"
}
