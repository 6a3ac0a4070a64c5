#!/usr/bin/env bash
# Runs a command in a network namespace of its own: its own 127.0.0.1, so a
# second local stack (and tests that stop and restart its components) can run
# beside the one already on this machine's loopback without sharing ports.
# The registries stay reachable through NAT. Needs root (ip netns, nft).
#
#   scripts/isolated.sh NAME CMD...    run CMD in namespace NAME (created on
#                                      first use, kept for the next command)
#   scripts/isolated.sh --delete NAME  delete the namespace and its NAT rule
#
# Example: a private stack and one fault test, beside the shared stack:
#   scripts/isolated.sh mine env OUTBOUND_STACK_DIR=/tmp/mine-stack stack/stack.sh up
#   scripts/isolated.sh mine env OUTBOUND_STACK_DIR=/tmp/mine-stack cargo test --test sink_outage
# Processes started inside keep running after the command returns; stop them
# the way they were started (stack/stack.sh down, inside the namespace).
set -euo pipefail

die() { echo "isolated: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (ip netns, nft)"

# Interface and table names are short: Linux allows 15 characters.
names() {
  local h; h="$(printf '%s' "$1" | cksum | cut -d' ' -f1)"
  ns="ob-$1" host_if="obh$((h % 100000))" ns_if="obn$((h % 100000))" table="ob_$((h % 100000))"
  subnet="10.$((200 + h % 50)).$(((h / 50) % 250)).0"
}

if [ "${1:-}" = --delete ]; then
  [ $# -eq 2 ] || die "usage: $0 --delete NAME"
  names "$2"
  ip netns del "$ns" 2>/dev/null || true
  ip link del "$host_if" 2>/dev/null || true
  nft delete table ip "$table" 2>/dev/null || true
  exit 0
fi
[ $# -ge 2 ] || die "usage: $0 NAME CMD... (or --delete NAME)"
name="$1"; shift
names "$name"

if ! ip netns list | grep -qw "$ns"; then
  command -v nft >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 nftables >/dev/null
  prefix="${subnet%.0}"
  ip netns add "$ns"
  ip link add "$host_if" type veth peer name "$ns_if"
  ip link set "$ns_if" netns "$ns"
  ip addr add "$prefix.1/24" dev "$host_if"
  ip link set "$host_if" up
  ip netns exec "$ns" ip addr add "$prefix.2/24" dev "$ns_if"
  ip netns exec "$ns" ip link set "$ns_if" up
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip route add default via "$prefix.1"
  sysctl -qw net.ipv4.ip_forward=1
  nft add table ip "$table"
  nft add chain ip "$table" post '{ type nat hook postrouting priority 100; }'
  nft add rule ip "$table" post ip saddr "$subnet/24" masquerade
fi
exec ip netns exec "$ns" "$@"
