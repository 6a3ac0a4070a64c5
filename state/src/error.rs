//! Errors of the state store, each naming the store directory or changelog
//! position it concerns.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: RocksDB: {source}")]
    Rocks {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("state store {path}: {message}")]
    Io {
        path: PathBuf,
        message: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state store {path}: store id {id} is not one of this task's stores")]
    UnknownStore { path: PathBuf, id: u8 },
    #[error("changelog {topic}[{partition}] offset {offset}: {reason}")]
    BadChangelogRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("state store {path}: checkpoint record: {reason}")]
    BadCheckpoint { path: PathBuf, reason: String },
}
