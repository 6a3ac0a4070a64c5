# shellcheck shell=bash
# Shared helpers for the local stack's scripts: logging, failing loudly, PID
# files, port checks and condition waits. Sourced, never run.
#
# Conventions every component script follows (stack/components/<name>.sh):
#   - defines <name>_install, <name>_start, <name>_stop, <name>_status
#     (install is idempotent and cheap when already done; start is a no-op
#     when the component is already running and healthy);
#   - runs its process in the background with `start_process`, which writes
#     $STACK_RUN/<name>.pid and logs to $STACK_LOGS/<name>.log;
#   - waits for health with `wait_until`, and on failure calls `fail` with the
#     component, the cause and the log path.

set -o pipefail

STACK_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${OUTBOUND_STACK_DIR:-$STACK_REPO/.stack}"   # data, logs, pids: per clone
STACK_RUN="$STACK_DIR/run"
STACK_LOGS="$STACK_DIR/logs"
STACK_DATA="$STACK_DIR/data"
# Jars resolved from Maven Central are cached outside the clone (~/.m2 plus a
# copy per pom under the cache dir) so a fresh clone starts warm.
STACK_CACHE="${OUTBOUND_CACHE_DIR:-$HOME/.cache/outbound}"
STACK_CONF="$STACK_DIR/conf"   # rendered configs
mkdir -p "$STACK_RUN" "$STACK_LOGS" "$STACK_DATA" "$STACK_CONF" "$STACK_CACHE"

log() { printf '[stack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# fail COMPONENT CAUSE [LOGFILE]: print what broke, where to look, the log's
# tail, and exit non-zero.
fail() {
  local component="$1" cause="$2" logfile="${3:-}"
  printf '\n[stack] FAILED: %s: %s\n' "$component" "$cause" >&2
  if [ -n "$logfile" ]; then
    printf '[stack] log: %s\n' "$logfile" >&2
    if [ -f "$logfile" ]; then
      printf '[stack] last lines of the log:\n' >&2
      tail -n 25 "$logfile" | sed 's/^/    /' >&2
    fi
  fi
  exit 1
}

pidfile() { printf '%s/%s.pid' "$STACK_RUN" "$1"; }
logfile() { printf '%s/%s.log' "$STACK_LOGS" "$1"; }

# proc_start_time PID: the process's start time in clock ticks since boot
# (field 22 of /proc/PID/stat), which tells a live process from a reused PID.
proc_start_time() {
  local stat fields
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  read -ra fields <<<"${stat##*) }"
  echo "${fields[19]}"
}

# is_running NAME: the process in NAME's PID file is alive (and is the one we
# started: same start time as recorded, so a reused PID does not count).
is_running() {
  local f pid; f="$(pidfile "$1")"
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -f "$f.start" ]; then
    [ "$(proc_start_time "$pid")" = "$(cat "$f.start")" ] || return 1
  fi
}

# port_in_use PORT: something listens on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# require_free_port COMPONENT PORT: fail loudly when another process holds it.
require_free_port() {
  local component="$1" port="$2"
  if port_in_use "$port"; then
    local who; who="$(ss -ltnp "sport = :$port" 2>/dev/null | tail -n +2 | head -n 1)"
    fail "$component" "port $port on 127.0.0.1 is already taken${who:+ by: $who}; stop that process or set the port" ""
  fi
}

# start_process NAME CMD...: run CMD in its own session in the background,
# stdout+stderr to NAME's log, PID to NAME's PID file.
start_process() {
  local name="$1"; shift
  local lf; lf="$(logfile "$name")"
  printf '\n===== %s start %s =====\n' "$name" "$(date -Is)" >>"$lf"
  setsid "$@" >>"$lf" 2>&1 < /dev/null &
  echo $! >"$(pidfile "$name")"
  proc_start_time $! >"$(pidfile "$name").start" || true
}

# stop_process NAME [GRACE_SECONDS]: TERM the process group in NAME's PID file,
# KILL it after the grace period; only ever our own PID.
stop_process() {
  local name="$1" grace="${2:-30}" f pid
  f="$(pidfile "$name")"
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if is_running "$name"; then
    log "stopping $name (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    local deadline=$((SECONDS + grace))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop in ${grace}s; killing"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    fi
  fi
  rm -f "$f" "$f.start"
}

# wait_until COMPONENT DESCRIPTION TIMEOUT_SECONDS CMD...: poll CMD until it
# succeeds; fail with the log when the deadline passes or the process dies.
wait_until() {
  local component="$1" what="$2" timeout="$3"; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ -f "$(pidfile "$component")" ] && ! is_running "$component"; then
      fail "$component" "the process exited while waiting for: $what" "$(logfile "$component")"
    fi
    if [ $SECONDS -ge $deadline ]; then
      fail "$component" "timed out after ${timeout}s waiting for: $what" "$(logfile "$component")"
    fi
    sleep 1
  done
}

# apt_install COMPONENT PKG...: install Debian packages once, without letting
# their maintainer scripts start system services (we run our own instances).
apt_install() {
  local component="$1"; shift
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "$component: installing ${missing[*]} from Debian's packages"
  local lf; lf="$(logfile apt)"
  local had_policy=0
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  [ $had_policy -eq 1 ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! { $sudo apt-get update -qq -o DPkg::Lock::Timeout=600 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "${missing[@]}"; } >>"$lf" 2>&1; then
    [ $had_policy -eq 1 ] || rm -f /usr/sbin/policy-rc.d
    fail "$component" "apt-get install ${missing[*]} failed" "$lf"
  fi
  [ $had_policy -eq 1 ] || rm -f /usr/sbin/policy-rc.d
}

# maven_fetch COMPONENT POM_DIR OUT_DIR: resolve the pom's dependencies from
# Maven Central and copy the jars to OUT_DIR (skipped when already done for
# this exact pom).
maven_fetch() {
  local component="$1" pom_dir="$2" out="$3"
  local stamp="$out/.pom.sha256" want
  want="$(sha256sum "$pom_dir/pom.xml" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  log "$component: resolving jars from Maven Central (first run downloads; cached in ~/.m2)"
  local lf; lf="$(logfile "maven-$component")"
  rm -rf "$out"; mkdir -p "$out"
  if ! mvn -B -q -f "$pom_dir/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$out" -DincludeScope=runtime >"$lf" 2>&1; then
    fail "$component" "Maven could not resolve the jars (network to Maven Central, or a pinned version missing)" "$lf"
  fi
  echo "$want" >"$stamp"
}

# render_template SRC DST [NAME=VALUE...]: copy the config template SRC to DST,
# replacing @STACK_DIR@, @STACK_DATA@, @STACK_RUN@, @STACK_LOGS@,
# @STACK_CACHE@, @STACK_REPO@ and each @NAME@ given; fails loudly when a
# placeholder is left over.
render_template() {
  local src="$1" dst="$2"; shift 2
  local pairs=("STACK_DIR=$STACK_DIR" "STACK_DATA=$STACK_DATA" "STACK_RUN=$STACK_RUN"
               "STACK_LOGS=$STACK_LOGS" "STACK_CACHE=$STACK_CACHE" "STACK_REPO=$STACK_REPO" "$@")
  local script="" kv name value
  for kv in "${pairs[@]}"; do
    name="${kv%%=*}"; value="${kv#*=}"
    value="${value//\\/\\\\}"; value="${value//|/\\|}"; value="${value//&/\\&}"
    script+="s|@${name}@|${value}|g;"
  done
  mkdir -p "$(dirname "$dst")"
  sed -e "$script" "$src" >"$dst.tmp" && mv "$dst.tmp" "$dst"
  local left; left="$(grep -o '@[A-Z_][A-Z_]*@' "$dst" | sort -u | tr '\n' ' ' || true)"
  [ -z "$left" ] || fail "$(basename "$src")" "unrendered placeholders in $dst: $left" ""
}

# http_ok URL: the URL answers with a 2xx status.
http_ok() { curl -fsS -o /dev/null --max-time 5 "$1"; }

# stack_ca COMPONENT: the stack's own certificate authority, made once
# ($STACK_DIR/ca/ca.pem and ca.key): what clients of the secured components
# trust (kafka.tls.ca_file, sink.tls.ca_file).
STACK_CA_DIR="$STACK_DIR/ca"
stack_ca() {
  local component="$1" lf; lf="$(logfile "$1")"
  [ -f "$STACK_CA_DIR/ca.pem" ] && return 0
  command -v openssl >/dev/null || apt_install "$component" openssl
  mkdir -p "$STACK_CA_DIR"; chmod 700 "$STACK_CA_DIR"
  log "$component: generating the stack CA in $STACK_CA_DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=outbound local stack CA" \
    -keyout "$STACK_CA_DIR/ca.key" -out "$STACK_CA_DIR/ca.pem" >>"$lf" 2>&1 ||
    fail "$component" "openssl could not generate the stack CA" "$lf"
}

# stack_cert COMPONENT DIR: DIR/node.key and DIR/node.pem, a server
# certificate for 127.0.0.1 and localhost signed by the stack CA (made once).
stack_cert() {
  local component="$1" d="$2" lf; lf="$(logfile "$1")"
  stack_ca "$component"
  [ -f "$d/node.pem" ] && return 0
  mkdir -p "$d"
  {
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$d/node.key" -out "$d/node.csr" &&
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$d/node.ext" &&
    openssl x509 -req -in "$d/node.csr" -CA "$STACK_CA_DIR/ca.pem" -CAkey "$STACK_CA_DIR/ca.key" \
      -CAcreateserial -days 3650 -extfile "$d/node.ext" -out "$d/node.pem"
  } >>"$lf" 2>&1 || fail "$component" "openssl could not issue its certificate" "$lf"
  cp "$STACK_CA_DIR/ca.pem" "$d/ca.pem"
}
