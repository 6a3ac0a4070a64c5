# The local stack's OPTIONAL secured Kafka: a second single-node KRaft
# cluster (same jars as stack/components/kafka.sh) whose only client
# listener is SASL_SSL on 127.0.0.1:9192 (controller 9193, plaintext, loopback).
# Started only when named: `stack/stack.sh up kafka-secure`.
#
# On first start it generates, under $STACK_DIR/kafka-secure/:
#   ca.pem                the stack's CA (stack_ca in stack/lib.sh; kafka.tls.ca_file)
#   broker.p12            the broker's key and certificate (SAN 127.0.0.1, localhost)
#   credentials.env       ADMIN_PASSWORD, APP_USER, APP_PASSWORD (random)
#   client.properties     an admin client configuration for Kafka's own tools
# and formats the storage with the SCRAM users (SCRAM-SHA-256 and -512 for
# `outbound` and `admin`); PLAIN users are in the listener's JAAS config.
# shellcheck shell=bash

KAFKA_SECURE_PORT="${OUTBOUND_KAFKA_SECURE_PORT:-9192}"
KAFKA_SECURE_CONTROLLER_PORT="${OUTBOUND_KAFKA_SECURE_CONTROLLER_PORT:-9193}"
KAFKA_SECURE_BOOTSTRAP="127.0.0.1:$KAFKA_SECURE_PORT"
KAFKA_SECURE_DIR="$STACK_DIR/kafka-secure"
KAFKA_SECURE_DATA="$STACK_DATA/kafka-secure"
KAFKA_SECURE_CONF="$STACK_CONF/kafka-secure.properties"

kafka_secure_install() {
  command -v openssl >/dev/null || apt_install kafka-secure openssl
  kafka_install
}

# _kafka_secure_credentials: the broker certificate and the users' passwords,
# made once and kept (so clients configured earlier still work).
_kafka_secure_credentials() {
  local d="$KAFKA_SECURE_DIR" lf; lf="$(logfile kafka-secure)"
  mkdir -p "$d"; chmod 700 "$d"
  if [ ! -f "$d/credentials.env" ]; then
    {
      echo "ADMIN_PASSWORD=$(openssl rand -hex 16)"
      echo "APP_USER=outbound"
      echo "APP_PASSWORD=$(openssl rand -hex 16)"
      echo "STORE_PASSWORD=$(openssl rand -hex 16)"
    } >"$d/credentials.env.tmp"
    chmod 600 "$d/credentials.env.tmp"
    # Whole or not at all: a second `up` running meanwhile reads it.
    mv "$d/credentials.env.tmp" "$d/credentials.env"
  fi
  # shellcheck source=/dev/null
  source "$d/credentials.env"
  stack_cert kafka-secure "$d"
  if [ ! -f "$d/broker.p12" ]; then
    openssl pkcs12 -export -in "$d/node.pem" -inkey "$d/node.key" -certfile "$d/ca.pem" \
      -name broker -passout "pass:$STORE_PASSWORD" -out "$d/broker.p12" >>"$lf" 2>&1 ||
      fail kafka-secure "openssl could not make the broker's PKCS#12 keystore" "$lf"
  fi
  cat >"$d/client.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$ADMIN_PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=$d/ca.pem
PROPS
  chmod 600 "$d/client.properties"
}

_kafka_secure_ready() {
  port_in_use "$KAFKA_SECURE_PORT" &&
    kafka_tool org.apache.kafka.tools.ClusterTool cluster-id --bootstrap-server "$KAFKA_SECURE_BOOTSTRAP" \
      --config "$KAFKA_SECURE_DIR/client.properties" >/dev/null 2>&1
}

kafka_secure_status() {
  if is_running kafka-secure && port_in_use "$KAFKA_SECURE_PORT"; then
    echo "kafka-secure: running (pid $(cat "$(pidfile kafka-secure)")) on SASL_SSL $KAFKA_SECURE_BOOTSTRAP, CA $KAFKA_SECURE_DIR/ca.pem, log $(logfile kafka-secure)"
  else
    echo "kafka-secure: stopped"
    return 1
  fi
}

kafka_secure_start() {
  local lf; lf="$(logfile kafka-secure)"
  _kafka_secure_credentials
  if is_running kafka-secure; then
    wait_until kafka-secure "the broker to answer on SASL_SSL $KAFKA_SECURE_BOOTSTRAP" 120 _kafka_secure_ready
    log "kafka-secure: already running (pid $(cat "$(pidfile kafka-secure)"))"
    return 0
  fi
  require_free_port kafka-secure "$KAFKA_SECURE_PORT"
  require_free_port kafka-secure "$KAFKA_SECURE_CONTROLLER_PORT"
  render_template "$STACK_REPO/stack/config/kafka-secure.properties" "$KAFKA_SECURE_CONF" \
    "PORT=$KAFKA_SECURE_PORT" "CONTROLLER_PORT=$KAFKA_SECURE_CONTROLLER_PORT" \
    "DIR=$KAFKA_SECURE_DIR" "DATA=$KAFKA_SECURE_DATA" \
    "ADMIN_PASSWORD=$ADMIN_PASSWORD" "APP_PASSWORD=$APP_PASSWORD" "STORE_PASSWORD=$STORE_PASSWORD"
  chmod 600 "$KAFKA_SECURE_CONF"
  if [ ! -f "$KAFKA_SECURE_DATA/meta.properties" ]; then
    local id
    id="$(kafka_tool kafka.tools.StorageTool random-uuid 2>>"$lf")" \
      || fail kafka-secure "could not generate a cluster id" "$lf"
    log "kafka-secure: formatting KRaft storage in $KAFKA_SECURE_DATA with the SCRAM users"
    mkdir -p "$KAFKA_SECURE_DATA"
    if ! kafka_tool kafka.tools.StorageTool format -t "$id" -c "$KAFKA_SECURE_CONF" \
        --add-scram "SCRAM-SHA-512=[name=admin,password=$ADMIN_PASSWORD]" \
        --add-scram "SCRAM-SHA-256=[name=$APP_USER,password=$APP_PASSWORD]" \
        --add-scram "SCRAM-SHA-512=[name=$APP_USER,password=$APP_PASSWORD]" >>"$lf" 2>&1; then
      fail kafka-secure "formatting the KRaft storage (with SCRAM users) failed" "$lf"
    fi
  fi
  log "kafka-secure: starting on SASL_SSL $KAFKA_SECURE_BOOTSTRAP"
  start_process kafka-secure java -Xms128m -Xmx512m -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$STACK_REPO/stack/config/log4j2.properties" \
    -Dkafka.logs.dir="$STACK_LOGS/kafka-secure" \
    -cp "$KAFKA_JARS/*" kafka.Kafka "$KAFKA_SECURE_CONF"
  wait_until kafka-secure "the broker to answer on SASL_SSL $KAFKA_SECURE_BOOTSTRAP" 120 _kafka_secure_ready
}

kafka_secure_stop() {
  stop_process kafka-secure 60
}
