# Apache Kafka 4.x from Maven Central (stack/maven/kafka/pom.xml): one node in
# KRaft mode (broker + controller), client port 9092, controller port 9093,
# transactions enabled. Sourced by stack/stack.sh; needs stack/lib.sh.
# shellcheck shell=bash

KAFKA_PORT="${OUTBOUND_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${OUTBOUND_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
KAFKA_JARS="$STACK_CACHE/jars/kafka"
KAFKA_DATA="$STACK_DATA/kafka"
KAFKA_CONF="$STACK_CONF/server.properties"
KAFKA_HEAP="${OUTBOUND_KAFKA_HEAP:--Xms256m -Xmx1g}"

kafka_install() {
  command -v java >/dev/null || apt_install kafka openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install kafka maven
  maven_fetch kafka "$STACK_REPO/stack/maven/kafka" "$KAFKA_JARS"
}

# kafka_tool MAIN_CLASS ARGS...: run one of Kafka's command-line tools
# (org.apache.kafka.tools.*, kafka.tools.StorageTool) with the pinned jars.
kafka_tool() {
  local main="$1"; shift
  # shellcheck disable=SC2086
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$STACK_REPO/stack/config/tools-log4j2.properties" \
    -cp "$KAFKA_JARS/*" "$main" "$@"
}

# kafka_ready: the broker answers metadata requests on the client port.
kafka_ready() {
  port_in_use "$KAFKA_PORT" &&
    kafka_tool org.apache.kafka.tools.ClusterTool cluster-id --bootstrap-server "$KAFKA_BOOTSTRAP" >/dev/null 2>&1
}

kafka_status() {
  if is_running kafka && port_in_use "$KAFKA_PORT"; then
    echo "kafka: running (pid $(cat "$(pidfile kafka)")) on $KAFKA_BOOTSTRAP, controller 127.0.0.1:$KAFKA_CONTROLLER_PORT, log $(logfile kafka)"
  else
    echo "kafka: stopped"
    return 1
  fi
}

kafka_start() {
  local lf; lf="$(logfile kafka)"
  if is_running kafka; then
    wait_until kafka "the broker to answer on $KAFKA_BOOTSTRAP" 120 kafka_ready
    log "kafka: already running (pid $(cat "$(pidfile kafka)"))"
    return 0
  fi
  require_free_port kafka "$KAFKA_PORT"
  require_free_port kafka "$KAFKA_CONTROLLER_PORT"
  render_template "$STACK_REPO/stack/config/server.properties" "$KAFKA_CONF" \
    "KAFKA_PORT=$KAFKA_PORT" "KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT"

  # Format the KRaft storage once, with a cluster id kept beside the data.
  if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
    local id
    id="$(kafka_tool kafka.tools.StorageTool random-uuid 2>>"$lf")" \
      || fail kafka "could not generate a cluster id (kafka.tools.StorageTool random-uuid)" "$lf"
    log "kafka: formatting KRaft storage in $KAFKA_DATA (cluster id $id)"
    mkdir -p "$KAFKA_DATA"
    if ! kafka_tool kafka.tools.StorageTool format -t "$id" -c "$KAFKA_CONF" >>"$lf" 2>&1; then
      fail kafka "formatting the KRaft storage failed" "$lf"
    fi
  fi

  log "kafka: starting the broker+controller on $KAFKA_BOOTSTRAP"
  # shellcheck disable=SC2086
  start_process kafka java $KAFKA_HEAP -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$STACK_REPO/stack/config/log4j2.properties" \
    -Dkafka.logs.dir="$STACK_LOGS" \
    -cp "$KAFKA_JARS/*" kafka.Kafka "$KAFKA_CONF"
  wait_until kafka "the broker to answer on $KAFKA_BOOTSTRAP" 120 kafka_ready
}

kafka_stop() {
  stop_process kafka 60
}
