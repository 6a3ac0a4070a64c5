//! A prebuilt RocksDB (scripts/setup-build.sh; ROCKSDB_LIB_DIR) is a shared
//! library outside the system's library path: record its directory in the
//! run path of this package's binaries, tests and benches so they start
//! without LD_LIBRARY_PATH.

fn main() {
    println!("cargo::rerun-if-env-changed=ROCKSDB_LIB_DIR");
    if let Some(dir) = std::env::var_os("ROCKSDB_LIB_DIR") {
        if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
            println!("cargo::rustc-link-arg=-Wl,-rpath,{}", dir.to_string_lossy());
        }
    }
}
