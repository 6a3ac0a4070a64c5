# The local stack's Prometheus, from Debian's `prometheus` package, run as our
# own process (the package's system service is never started) on
# 127.0.0.1:9090 with config from stack/config/prometheus/.
#
#   config  $STACK_DIR/prometheus/prometheus.yml  (copied from the repo each start)
#   targets $STACK_DIR/prometheus/targets/*.json  (file-based service discovery)
#   data    $STACK_DATA/prometheus                (TSDB, 2 days retention)
#   log     $STACK_LOGS/prometheus.log
#
# Each `outbound` process is scraped by writing a target file:
#   prometheus_add_target outbound-0 127.0.0.1:9464
#   prometheus_remove_target outbound-0
# (or write the JSON by hand; see stack/config/prometheus/prometheus.yml).
#
# Sourced after stack/lib.sh.

PROMETHEUS_HOST=127.0.0.1
PROMETHEUS_PORT=9090
PROMETHEUS_URL="http://$PROMETHEUS_HOST:$PROMETHEUS_PORT"
PROMETHEUS_CONFIG_SRC="$STACK_REPO/stack/config/prometheus"
PROMETHEUS_HOME="$STACK_DIR/prometheus"
PROMETHEUS_TARGETS="$PROMETHEUS_HOME/targets"
PROMETHEUS_DATA="$STACK_DATA/prometheus"

prometheus_install() {
  apt_install prometheus prometheus curl
}

_prometheus_ready() {
  curl -fsS --max-time 3 "$PROMETHEUS_URL/-/ready" >/dev/null 2>&1
}

# _prometheus_reload: copy the repo's config (rules included) over the running
# instance's and ask it to reload (--web.enable-lifecycle), so `stack.sh up`
# picks up edited rules without a restart.
_prometheus_reload() {
  cp -rL "$PROMETHEUS_CONFIG_SRC"/. "$PROMETHEUS_HOME"/
  local lf; lf="$(logfile prometheus)"
  if ! promtool check config "$PROMETHEUS_HOME/prometheus.yml" >>"$lf" 2>&1; then
    fail prometheus "promtool rejects $PROMETHEUS_HOME/prometheus.yml (copied from $PROMETHEUS_CONFIG_SRC)" "$lf"
  fi
  curl -fsS --max-time 10 -X POST "$PROMETHEUS_URL/-/reload" >>"$lf" 2>&1 \
    || fail prometheus "POST $PROMETHEUS_URL/-/reload failed" "$lf"
}

prometheus_start() {
  if is_running prometheus; then
    wait_until prometheus "GET $PROMETHEUS_URL/-/ready" 60 _prometheus_ready
    _prometheus_reload
    log "prometheus: already running (pid $(cat "$(pidfile prometheus)")) on $PROMETHEUS_URL; config reloaded"
    return 0
  fi
  rm -f "$(pidfile prometheus)"
  require_free_port prometheus "$PROMETHEUS_PORT"
  prometheus_install

  mkdir -p "$PROMETHEUS_HOME" "$PROMETHEUS_TARGETS" "$PROMETHEUS_DATA"
  # -L: alerts.yml is a symlink into deploy/prometheus/.
  cp -rL "$PROMETHEUS_CONFIG_SRC"/. "$PROMETHEUS_HOME"/
  local lf; lf="$(logfile prometheus)"
  if ! promtool check config "$PROMETHEUS_HOME/prometheus.yml" >>"$lf" 2>&1; then
    fail prometheus "promtool rejects $PROMETHEUS_HOME/prometheus.yml (copied from $PROMETHEUS_CONFIG_SRC)" "$lf"
  fi

  log "prometheus: starting on $PROMETHEUS_URL (log $lf)"
  start_process prometheus prometheus \
    --config.file="$PROMETHEUS_HOME/prometheus.yml" \
    --web.listen-address="$PROMETHEUS_HOST:$PROMETHEUS_PORT" \
    --web.enable-lifecycle \
    --storage.tsdb.path="$PROMETHEUS_DATA" \
    --storage.tsdb.retention.time=2d

  wait_until prometheus "GET $PROMETHEUS_URL/-/ready" 60 _prometheus_ready
  log "prometheus: ready on $PROMETHEUS_URL"
}

prometheus_stop() {
  stop_process prometheus 30
}

# prometheus_status: one line; exit 0 only when running and ready.
prometheus_status() {
  if ! is_running prometheus; then
    echo "prometheus: not running"
    return 1
  fi
  local pid; pid="$(cat "$(pidfile prometheus)")"
  if _prometheus_ready; then
    local files=("$PROMETHEUS_TARGETS"/*.json) n=0
    [ -e "${files[0]}" ] && n=${#files[@]}
    echo "prometheus: running (pid $pid) on $PROMETHEUS_URL, $n outbound target file(s) in $PROMETHEUS_TARGETS, log $(logfile prometheus)"
    return 0
  fi
  echo "prometheus: pid $pid alive but $PROMETHEUS_URL/-/ready does not answer; log $(logfile prometheus)"
  return 1
}

# prometheus_add_target NAME HOST:PORT: scrape an `outbound` process (job
# "outbound", label process=NAME). Written atomically; Prometheus notices the
# file within seconds. Works whether or not Prometheus is running yet.
prometheus_add_target() {
  local name="$1" addr="$2"
  mkdir -p "$PROMETHEUS_TARGETS"
  local tmp="$PROMETHEUS_TARGETS/.$name.json.tmp"
  printf '[{"targets": ["%s"], "labels": {"process": "%s"}}]\n' "$addr" "$name" >"$tmp"
  mv -f "$tmp" "$PROMETHEUS_TARGETS/$name.json"
}

# prometheus_remove_target NAME: stop scraping that process.
prometheus_remove_target() {
  rm -f "$PROMETHEUS_TARGETS/$1.json"
}
