#!/usr/bin/env bash
# Installs every tool the tests shell out to, then checks each is on PATH and
# fails naming the first one missing: a missing tool is reported here, before
# the suite runs, rather than as a panic in the middle of it.
#
#   docker-compose   tests/compose.rs validates docker-compose.yml with
#                    `docker-compose config` (no Docker engine needed)
#   promtool         Prometheus configs and alert rules (observability tests)
#   mariadb          the SQL client of the CDC tests and the demo
#   curl, jq         the stack's health checks and the demo
#   java, mvn        the stack's Kafka, Connect and search node
#   cargo fmt/clippy the Rust toolchain's components
#   kubernetes-validate  tests/kubernetes.rs checks deploy/kubernetes/ against
#                    the Kubernetes API schemas it ships (PyPI, in a venv
#                    under the cache dir, linked as <cache>/bin/kubernetes-validate)
#   openssl          the stack's secured components make their certificates
#   python3          scripts/run-tests.py, the suite's runner
#   ip, nft          scripts/isolated.sh: the runner gives the tests that stop
#                    stack components a private stack in a network namespace
#                    (without them it runs those tests alone, after the rest)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
source "$repo/stack/lib.sh"
apt_install test docker-compose prometheus mariadb-client curl jq openssl python3-venv iproute2 nftables
# kubernetes-validate from PyPI, pinned, in its own venv (Debian's Python is
# externally managed).
k8s_validate_version=1.37.0
k8s_venv="$STACK_CACHE/venv-kubernetes-validate-$k8s_validate_version"
if [ ! -x "$k8s_venv/bin/kubernetes-validate" ]; then
  log "test tools: installing kubernetes-validate $k8s_validate_version from PyPI"
  lf="$(logfile pip-kubernetes-validate)"
  { python3 -m venv "$k8s_venv" &&
    "$k8s_venv/bin/pip" install -q "kubernetes-validate==$k8s_validate_version"; } >"$lf" 2>&1 ||
    fail test "pip could not install kubernetes-validate==$k8s_validate_version" "$lf"
fi
# Tests find it at a versionless path.
mkdir -p "$STACK_CACHE/bin"
ln -sfn "$k8s_venv/bin/kubernetes-validate" "$STACK_CACHE/bin/kubernetes-validate"
command -v mvn >/dev/null || apt_install test maven
command -v java >/dev/null || apt_install test openjdk-17-jdk-headless

missing=()
for tool in docker-compose promtool mariadb curl jq java mvn cargo openssl python3 "$k8s_venv/bin/kubernetes-validate"; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
cargo fmt --version >/dev/null 2>&1 || missing+=("rustfmt (rustup component add rustfmt)")
cargo clippy --version >/dev/null 2>&1 || missing+=("clippy (rustup component add clippy)")
if [ ${#missing[@]} -gt 0 ]; then
  printf '[test tools] missing: %s\n' "${missing[@]}" >&2
  exit 1
fi
log "test tools: all present (docker-compose $(docker-compose version --short 2>/dev/null), $(promtool --version 2>&1 | head -n 1 | cut -d' ' -f1-3))"
