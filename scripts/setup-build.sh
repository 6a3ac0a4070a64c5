#!/usr/bin/env bash
# Installs what building outbound needs beyond the Rust toolchain, once per
# machine:
#   - from Debian: a C/C++ toolchain and libclang (RocksDB's bindings are
#     generated at build time), what librdkafka's bundled build links against
#     (OpenSSL for TLS and SCRAM, Cyrus SASL for GSSAPI), and Maven (which
#     fetches the next item);
#   - RocksDB, prebuilt: the shared library of the official RocksDB release of
#     exactly the version librocksdb-sys bundles (Cargo.lock), taken from the
#     `org.rocksdb:rocksdbjni` jar on Maven Central. It exports RocksDB's whole
#     C API, which is all librocksdb-sys binds, and links only libc and
#     libstdc++. Compiling RocksDB's 343 C++ files instead takes about 30 min
#     on two cores, and again for every profile; with the prebuilt library a
#     first build takes minutes. scripts/build-env.sh points ROCKSDB_LIB_DIR at
#     it; OUTBOUND_ROCKSDB=source skips this step and compiles from source.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
source "$repo/stack/lib.sh"
source "$repo/scripts/build-env.sh"
apt_install build clang libclang-dev cmake make g++ pkg-config zlib1g-dev libzstd-dev liblz4-dev \
  libssl-dev libsasl2-dev python3
command -v mvn >/dev/null || apt_install build maven openjdk-17-jdk-headless

[ "${OUTBOUND_ROCKSDB:-prebuilt}" = source ] && exit 0
[ -f "$OUTBOUND_ROCKSDB_DIR/librocksdb.so" ] && exit 0

version="$(rocksdb_version)"
[ -n "$version" ] || fail build "no librocksdb-sys version in Cargo.lock" ""
case "$(uname -m)" in
  x86_64) lib=librocksdbjni-linux64.so ;;
  aarch64) lib=librocksdbjni-linux-aarch64.so ;;
  *) log "build: no prebuilt RocksDB for $(uname -m); it will be compiled from source"; exit 0 ;;
esac
log "build: fetching RocksDB $version (prebuilt, org.rocksdb:rocksdbjni from Maven Central)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
lf="$(logfile maven-rocksdb)"
if ! mvn -B -q dependency:copy -Dartifact="org.rocksdb:rocksdbjni:$version" \
      -DoutputDirectory="$tmp" >"$lf" 2>&1; then
  fail build "Maven could not fetch org.rocksdb:rocksdbjni:$version (or set OUTBOUND_ROCKSDB=source to compile RocksDB)" "$lf"
fi
python3 - "$tmp/rocksdbjni-$version.jar" "$lib" "$tmp/librocksdb.so" <<'PY' || fail build "no $lib in rocksdbjni-$version.jar" ""
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as jar, jar.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
# librocksdb-sys binds the C API: make sure this build carries it.
nm -D --defined-only "$tmp/librocksdb.so" | grep ' T rocksdb_open$' >/dev/null ||
  fail build "$lib of rocksdbjni $version does not export RocksDB's C API (set OUTBOUND_ROCKSDB=source)" ""
mkdir -p "$OUTBOUND_ROCKSDB_DIR"
mv "$tmp/librocksdb.so" "$OUTBOUND_ROCKSDB_DIR/librocksdb.so"
log "build: RocksDB $version in $OUTBOUND_ROCKSDB_DIR"
