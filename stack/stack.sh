#!/usr/bin/env bash
# The local stack, without Docker: real components as plain processes on
# 127.0.0.1, data/logs/PIDs under .stack/ (OUTBOUND_STACK_DIR), downloaded
# artifacts cached under ~/.cache/outbound (OUTBOUND_CACHE_DIR).
#
#   stack/stack.sh up     [component...]   install if needed, start, wait for health
#   stack/stack.sh down   [component...]   stop our own processes (PID files), reverse order
#   stack/stack.sh status [component...]   one line per component
#   stack/stack.sh check                   MariaDB CDC preflight (binlog, grants, server id)
#
# Components, in start order: mariadb kafka connect opensearch prometheus.
# Optional components, started only when named (`up kafka-secure`):
#   kafka-secure   a second Kafka whose clients use SASL_SSL (TLS + SASL PLAIN/SCRAM)
#   search-tls     TLS + basic auth / API key in front of the search node (nginx)
# `up` is idempotent: a component that is already running and healthy is left
# alone. Each step fails loudly with the component, the cause and its log.
set -euo pipefail

STACK_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=stack/lib.sh
source "$STACK_HOME/lib.sh"

DEFAULT_COMPONENTS=(mariadb kafka connect opensearch prometheus)
OPTIONAL_COMPONENTS=(kafka-secure search-tls)
ALL_COMPONENTS=("${DEFAULT_COMPONENTS[@]}" "${OPTIONAL_COMPONENTS[@]}")

# Source every component file that exists; only default ones start unnamed.
AVAILABLE=()
for c in "${ALL_COMPONENTS[@]}"; do
  f="$STACK_HOME/components/$c.sh"
  if [ -f "$f" ]; then
    # shellcheck source=/dev/null
    source "$f"
    for d in "${DEFAULT_COMPONENTS[@]}"; do [ "$d" = "$c" ] && AVAILABLE+=("$c"); done
  fi
done

# fn COMPONENT: a component's function prefix (kafka-secure -> kafka_secure).
fn() { printf '%s' "${1//-/_}"; }

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# select_components ARGS...: the requested components in canonical order, or
# every available component when none is named.
select_components() {
  local want=("$@") out=() c a known
  if [ ${#want[@]} -eq 0 ]; then
    printf '%s\n' "${AVAILABLE[@]}"
    return
  fi
  for a in "${want[@]}"; do
    known=0
    for c in "${ALL_COMPONENTS[@]}"; do [ "$a" = "$c" ] && known=1; done
    [ $known -eq 1 ] || fail stack "unknown component '$a' (known: ${ALL_COMPONENTS[*]})" ""
    [ -f "$STACK_HOME/components/$a.sh" ] || fail "$a" "no stack/components/$a.sh in this checkout" ""
  done
  for c in "${ALL_COMPONENTS[@]}"; do
    for a in "${want[@]}"; do
      if [ "$a" = "$c" ]; then out+=("$c"); break; fi
    done
  done
  printf '%s\n' "${out[@]}"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  up)
    mapfile -t comps < <(select_components "$@")
    apt_install stack curl jq
    t0=$SECONDS
    for c in "${comps[@]}"; do
      s=$SECONDS
      "$(fn "$c")_install"
      "$(fn "$c")_start"
      log "$c: up ($((SECONDS - s))s)"
    done
    log "stack up: ${comps[*]} ($((SECONDS - t0))s); logs in $STACK_LOGS"
    ;;
  down)
    # Unnamed: every component, optional ones too (stop_process is a no-op
    # for one that is not running).
    if [ $# -eq 0 ]; then
      mapfile -t comps < <(for c in "${ALL_COMPONENTS[@]}"; do
        [ -f "$STACK_HOME/components/$c.sh" ] && echo "$c"; done)
    else
      mapfile -t comps < <(select_components "$@")
    fi
    for ((i = ${#comps[@]} - 1; i >= 0; i--)); do
      "$(fn "${comps[$i]}")_stop"
    done
    ;;
  status)
    mapfile -t comps < <(select_components "$@")
    rc=0
    for c in "${comps[@]}"; do
      "$(fn "$c")_status" || rc=1
    done
    exit $rc
    ;;
  check)
    declare -F mariadb_check_cdc >/dev/null || fail stack "stack/components/mariadb.sh is missing" ""
    mariadb_check_cdc
    log "mariadb: CDC preflight passed (binlog ROW/FULL, grants, server ids)"
    ;;
  *)
    usage
    ;;
esac
