#!/usr/bin/env bash
# Installs what building outbound needs beyond the Rust toolchain: a C/C++
# toolchain and libclang (RocksDB's bindings are generated at build time),
# and the pieces librdkafka's bundled build links against.
set -euo pipefail
source "$(dirname "$0")/../stack/lib.sh"
apt_install build clang libclang-dev cmake make g++ pkg-config zlib1g-dev libzstd-dev liblz4-dev python3
