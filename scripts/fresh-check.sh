#!/usr/bin/env bash
# Proves the README's two commands work on a machine with nothing cached, and
# times them: a fresh clone of this repository's HEAD, run with an empty HOME
# (so an empty cargo registry and target dir, Maven repository, downloaded
# jars and prebuilt RocksDB — every cache the project keeps outside a clone),
# then run again with those caches warm:
#
#   1. .ci/run,          nothing cached        (target: < 45 min)
#   2. .ci/run,          caches warm           (target: < 10 min)
#   3. scripts/demo.sh,  nothing cached        (target: seed row in the search node < 8 min)
#   4. scripts/demo.sh,  build cached          (target: < 1 min)
#
# Between runs the clone's stack is stopped, as a new session finds it.
# Everything runs in a network namespace of its own (its own 127.0.0.1, the
# registries through NAT), so its stack's ports do not collide with a local
# stack that is already running (scripts/isolated.sh). Needs root.
#
#   scripts/fresh-check.sh                 all four runs
#   scripts/fresh-check.sh --only ci|demo  runs 1-2 or 3-4
#   scripts/fresh-check.sh --only ci-cold  run 1 alone (the check before a landing)
#   scripts/fresh-check.sh --keep          keep the temporary directory (kept
#                                          anyway when a run fails)
#
# Stop it with Ctrl-C, or by signalling its whole process group (kill -TERM -PGID).
#
# What it cannot make fresh: Debian packages already installed on this
# machine and the Rust toolchain itself (rustup's, used in place).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
only="" keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$only" in ""|ci|ci-cold|demo) ;; *) echo "--only takes ci, ci-cold or demo" >&2; exit 2 ;; esac
[ "$(id -u)" -eq 0 ] || { echo "fresh-check needs root (network namespace)" >&2; exit 1; }

log() { printf '[fresh-check %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fmt() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

tmp="$(mktemp -d /tmp/outbound-fresh.XXXXXX)"
ns="fresh$$"

cleanup() {
  set +e
  for clone in "$tmp"/run-*/outbound; do
    [ -x "$clone/stack/stack.sh" ] && in_ns "$clone" stack/stack.sh down >/dev/null 2>&1
  done
  "$repo/scripts/isolated.sh" --delete "$ns"
  if [ $keep -eq 1 ]; then log "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
toolchain_bin="${CARGO_HOME:-$HOME/.cargo}/bin"

# in_ns CLONE CMD...: CMD in CLONE, inside the namespace, with the clean
# environment of a new user whose HOME is the clone's run directory.
in_ns() {
  local clone="$1"; shift
  local home; home="$(dirname "$clone")/home"
  mkdir -p "$home"
  "$repo/scripts/isolated.sh" "$ns" env -i \
    PATH="$toolchain_bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    HOME="$home" RUSTUP_HOME="$rustup_home" CARGO_HOME="$home/.cargo" \
    LANG=C.UTF-8 TERM=dumb USER=root \
    bash -c 'cd "$0" && exec "$@"' "$clone" "$@"
}

# new_run NAME: a fresh clone of HEAD with ../shared beside it, as CI has.
new_run() {
  local dir="$tmp/run-$1"
  mkdir -p "$dir"
  git clone --quiet "$repo" "$dir/outbound"
  [ -d "$repo/../shared" ] && cp -r "$repo/../shared" "$dir/shared"
  echo "$dir/outbound"
}

results=()
# timed LABEL TARGET CLONE MARKER CMD...: runs CMD, its output prefixed with
# the elapsed time into a log; records the wall time, and the time MARKER
# first appeared in the output when one is given.
timed() {
  local label="$1" target="$2" clone="$3" marker="$4"; shift 4
  local out; out="$(dirname "$clone")/$(printf %s "$label" | tr -cs "a-z0-9" "-").log"
  log "$label: starting (log: $out)"
  local start=$SECONDS rc=0
  set +e
  in_ns "$clone" "$@" 2>&1 | while IFS= read -r line; do
    printf '%5ds %s\n' $((SECONDS - start)) "$line"
  done >"$out"
  rc=${PIPESTATUS[0]}
  set -e
  local took=$((SECONDS - start)) at=""
  if [ -n "$marker" ]; then
    at="$(grep -m1 -F "$marker" "$out" | awk '{ sub(/s$/, "", $1); print $1 }')"
  fi
  local status=ok; [ $rc -eq 0 ] || status="FAILED (exit $rc)"
  local line
  line="$(printf '%-34s %-8s %s' "$label" "$(fmt $took)" "$status")"
  [ -n "$at" ] && line+="; $marker after $(fmt "$at")"
  line+="  [target: $target]"
  results+=("$line")
  log "$line"
  if [ $rc -ne 0 ]; then
    log "last lines of $out:"
    tail -n 30 "$out" >&2
    # The clone's test logs (<target>/test-logs) are what explain a failure.
    keep=1
  fi
  in_ns "$clone" stack/stack.sh down >/dev/null 2>&1 || true
  return $rc
}

overall=0
if [ "$only" != demo ]; then
  ci="$(new_run ci)"
  timed ".ci/run, nothing cached" "< 45m" "$ci" "" .ci/run || overall=1
  [ $overall -eq 0 ] && [ "$only" != ci-cold ] && { timed ".ci/run, caches warm" "< 10m" "$ci" "" .ci/run || overall=1; }
fi
if [ "$only" != ci ] && [ "$only" != ci-cold ]; then
  demo="$(new_run demo)"
  timed "scripts/demo.sh, nothing cached" "seed row < 8m" "$demo" "seed rows: search node" scripts/demo.sh || overall=1
  timed "scripts/demo.sh, build cached" "< 1m" "$demo" "seed rows: search node" scripts/demo.sh || overall=1
fi

printf '\nfresh-check of %s (%s), %s\n' "$(git -C "$repo" rev-parse --short HEAD)" "$(nproc) cores" "$(date -I)"
printf '  %s\n' "${results[@]}"
exit $overall
