# shellcheck shell=bash
# The build environment every cargo command of this project shares, sourced by
# scripts/test.sh, scripts/demo.sh and scripts/setup-build.sh. Source it to run
# cargo by hand against the same cache (`source scripts/build-env.sh`):
# a cargo run with another environment is a different build and recompiles.
#
#   CARGO_TARGET_DIR  builds, outside the clone so a fresh clone starts warm
#                     (~/.cache/outbound/target; OUTBOUND_CACHE_DIR moves it)
#   ROCKSDB_LIB_DIR   the prebuilt RocksDB that scripts/setup-build.sh fetched,
#                     when it is there; OUTBOUND_ROCKSDB=source compiles
#                     RocksDB from the crate's bundled sources instead
#                     (about 30 minutes on two cores).

_outbound_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_outbound_cache="${OUTBOUND_CACHE_DIR:-$HOME/.cache/outbound}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$_outbound_cache/target}"

# rocksdb_version: the RocksDB version librocksdb-sys bundles, from Cargo.lock
# (its version is 0.19.0+11.8.1: crate version + RocksDB version).
rocksdb_version() {
  awk '/^name = "librocksdb-sys"$/ { getline; gsub(/"/, "", $3); sub(/.*\+/, "", $3); print $3; exit }' \
    "$_outbound_repo/Cargo.lock"
}

# The directory holding librocksdb.so for this Cargo.lock.
OUTBOUND_ROCKSDB_DIR="$_outbound_cache/native/rocksdb-$(rocksdb_version)"
if [ "${OUTBOUND_ROCKSDB:-prebuilt}" = source ]; then
  unset ROCKSDB_LIB_DIR
elif [ -f "$OUTBOUND_ROCKSDB_DIR/librocksdb.so" ]; then
  export ROCKSDB_LIB_DIR="$OUTBOUND_ROCKSDB_DIR"
fi
