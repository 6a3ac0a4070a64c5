# The local stack's OPTIONAL secured search endpoint: nginx (Debian's
# nginx-light) in front of the search node, TLS on 127.0.0.1:9201 and :9202
# (two node URLs) with a certificate signed by the stack CA, and basic auth
# or an API key required (stack/config/search-tls.conf). Started only when
# named: `stack/stack.sh up search-tls` (needs opensearch).
#
# Why not the search node's own security plugin: see the note in
# tests/search_tls.rs. Generated under $STACK_DIR/search-tls/ on first start:
#   ca.pem            the stack CA (sink.tls.ca_file)
#   node.pem/.key     the endpoint's certificate (SAN 127.0.0.1, localhost)
#   credentials.env   USER, PASSWORD, API_KEY_ID, API_KEY (random)
# shellcheck shell=bash

SEARCH_TLS_PORT_A="${OUTBOUND_SEARCH_TLS_PORT_A:-9201}"
SEARCH_TLS_PORT_B="${OUTBOUND_SEARCH_TLS_PORT_B:-9202}"
SEARCH_TLS_DIR="$STACK_DIR/search-tls"
SEARCH_TLS_CONF="$STACK_CONF/search-tls.conf"

search_tls_install() {
  command -v nginx >/dev/null || apt_install search-tls nginx-light
  command -v openssl >/dev/null || apt_install search-tls openssl
}

_search_tls_ready() {
  # shellcheck source=/dev/null
  source "$SEARCH_TLS_DIR/credentials.env"
  curl -fsS --max-time 5 --cacert "$SEARCH_TLS_DIR/ca.pem" -u "$USER:$PASSWORD" \
    "https://127.0.0.1:$SEARCH_TLS_PORT_A/_cluster/health" >/dev/null
}

search_tls_status() {
  if is_running search-tls; then
    echo "search-tls: running (pid $(cat "$(pidfile search-tls)")) on https://127.0.0.1:$SEARCH_TLS_PORT_A and :$SEARCH_TLS_PORT_B, CA $SEARCH_TLS_DIR/ca.pem"
  else
    echo "search-tls: stopped"
    return 1
  fi
}

search_tls_start() {
  local d="$SEARCH_TLS_DIR"
  mkdir -p "$d/tmp"; chmod 700 "$d"
  if [ ! -f "$d/credentials.env" ]; then
    {
      echo "USER=outbound"
      echo "PASSWORD=$(openssl rand -hex 16)"
      echo "API_KEY_ID=$(openssl rand -hex 8)"
      echo "API_KEY=$(openssl rand -hex 16)"
    } >"$d/credentials.env.tmp"
    chmod 600 "$d/credentials.env.tmp"
    # Whole or not at all: a second `up` running meanwhile reads it.
    mv "$d/credentials.env.tmp" "$d/credentials.env"
  fi
  stack_cert search-tls "$d"
  if is_running search-tls; then
    wait_until search-tls "TLS + auth on 127.0.0.1:$SEARCH_TLS_PORT_A" 60 _search_tls_ready
    log "search-tls: already running (pid $(cat "$(pidfile search-tls)"))"
    return 0
  fi
  require_free_port search-tls "$SEARCH_TLS_PORT_A"
  require_free_port search-tls "$SEARCH_TLS_PORT_B"
  # shellcheck source=/dev/null
  source "$d/credentials.env"
  render_template "$STACK_REPO/stack/config/search-tls.conf" "$SEARCH_TLS_CONF" \
    "DIR=$d" "LOGS=$STACK_LOGS" "PORT_A=$SEARCH_TLS_PORT_A" "PORT_B=$SEARCH_TLS_PORT_B" \
    "UPSTREAM_PORT=${OPENSEARCH_HTTP_PORT:-9200}" \
    "BASIC=$(printf '%s:%s' "$USER" "$PASSWORD" | base64 -w0)" \
    "API_KEY_ENCODED=$(printf '%s:%s' "$API_KEY_ID" "$API_KEY" | base64 -w0)"
  chmod 600 "$SEARCH_TLS_CONF"
  log "search-tls: starting nginx on https://127.0.0.1:$SEARCH_TLS_PORT_A and :$SEARCH_TLS_PORT_B"
  start_process search-tls nginx -c "$SEARCH_TLS_CONF" -p "$d"
  wait_until search-tls "TLS + auth on 127.0.0.1:$SEARCH_TLS_PORT_A" 60 _search_tls_ready
}

search_tls_stop() {
  stop_process search-tls 20
}
