#!/bin/sh
# One-shot registration of the Debezium connector in the docker-compose
# stack (service connect-register, image curlimages/curl). Idempotent: PUT
# /connectors/NAME/config creates the connector or updates its config.
# Exits 0 once the connector and its task are RUNNING; exits 1 with the
# worker's stack trace when either goes to FAILED, or after the deadline.
set -eu

CONNECT_URL="${CONNECT_URL:-http://connect:8083}"
NAME="${CONNECTOR_NAME:-outbound-mysql}"
CONFIG="${CONNECTOR_CONFIG:-/deploy/connect/outbound-mysql.json}"
DEADLINE=$(( $(date +%s) + ${REGISTER_TIMEOUT_SECONDS:-300} ))

echo "connect-register: waiting for the Kafka Connect REST API at $CONNECT_URL"
until curl -fsS -o /dev/null "$CONNECT_URL/connector-plugins"; do
  [ "$(date +%s)" -lt "$DEADLINE" ] || { echo "connect-register: FAILED: $CONNECT_URL never answered"; exit 1; }
  sleep 2
done

echo "connect-register: PUT $CONNECT_URL/connectors/$NAME/config from $CONFIG"
code=$(curl -sS -o /tmp/put.out -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
  --data-binary "@$CONFIG" "$CONNECT_URL/connectors/$NAME/config")
case "$code" in
  200|201) ;;
  *) echo "connect-register: FAILED: HTTP $code from Kafka Connect:"; cat /tmp/put.out; echo; exit 1 ;;
esac

while :; do
  status=$(curl -fsS "$CONNECT_URL/connectors/$NAME/status" || true)
  case "$status" in
    *'"state":"FAILED"'*)
      echo "connect-register: FAILED: connector $NAME (or its task) is FAILED; status with trace:"
      echo "$status" | sed 's/\\n/\n/g; s/\\t/\t/g'
      exit 1 ;;
  esac
  # RUNNING connector plus at least one task, none of them in another state.
  if echo "$status" | grep -q '"tasks":\[{' && \
     [ "$(echo "$status" | grep -o '"state":"[A-Z]*"' | grep -vc '"RUNNING"')" -eq 0 ]; then
    echo "connect-register: connector $NAME is RUNNING: $status"
    exit 0
  fi
  [ "$(date +%s)" -lt "$DEADLINE" ] || { echo "connect-register: FAILED: $NAME not RUNNING in time; last status: $status"; exit 1; }
  sleep 2
done
