#!/bin/sh
# Imports the outbound Kibana saved objects (kibana/outbound.ndjson: data
# views over the rollup aliases and the detail index, one visualization per
# business question, the dashboard and the "Outbound report" saved search)
# through Kibana's saved-objects API, overwriting earlier versions. Idempotent.
#
#   KIBANA_URL=http://127.0.0.1:5601 kibana/import.sh [file.ndjson]
#
# Waits (up to KIBANA_WAIT_SECONDS, default 300) for Kibana to report
# "available". Optional: KIBANA_SPACE (import into that space),
# KIBANA_USER/KIBANA_PASSWORD (basic auth). POSIX sh + curl only, so it runs
# in the curl image of the docker-compose one-shot service.
set -eu

KIBANA_URL="${KIBANA_URL:-http://127.0.0.1:5601}"
FILE="${1:-$(dirname "$0")/outbound.ndjson}"
WAIT="${KIBANA_WAIT_SECONDS:-300}"
SPACE_PATH=""
[ -n "${KIBANA_SPACE:-}" ] && SPACE_PATH="/s/$KIBANA_SPACE"
AUTH=""
[ -n "${KIBANA_USER:-}" ] && AUTH="$KIBANA_USER:${KIBANA_PASSWORD:-}"

[ -f "$FILE" ] || { echo "kibana-import: no saved-objects file $FILE" >&2; exit 1; }

kcurl() {
  if [ -n "$AUTH" ]; then curl -sS -u "$AUTH" "$@"; else curl -sS "$@"; fi
}

echo "kibana-import: waiting for $KIBANA_URL (up to ${WAIT}s)"
start=$(date +%s)
while :; do
  if kcurl --max-time 5 "$KIBANA_URL/api/status" 2>/dev/null | grep -q '"level":"available"'; then
    break
  fi
  if [ $(( $(date +%s) - start )) -ge "$WAIT" ]; then
    echo "kibana-import: Kibana at $KIBANA_URL not available after ${WAIT}s" >&2
    exit 1
  fi
  sleep 3
done

out="$(mktemp)"
code="$(kcurl -o "$out" -w '%{http_code}' -X POST \
  "$KIBANA_URL$SPACE_PATH/api/saved_objects/_import?overwrite=true" \
  -H 'kbn-xsrf: outbound' --form "file=@$FILE")"
body="$(cat "$out")"; rm -f "$out"
if [ "$code" != 200 ] || ! printf '%s' "$body" | grep -q '"success":true'; then
  echo "kibana-import: import of $FILE failed (HTTP $code): $body" >&2
  exit 1
fi
count="$(printf '%s' "$body" | sed -n 's/.*"successCount":\([0-9]*\).*/\1/p')"
echo "kibana-import: imported ${count:-?} saved objects from $FILE into $KIBANA_URL$SPACE_PATH"
