//! The engine: runs the pipeline's stages on Kafka with exactly-once
//! transactions and RocksDB state (DESIGN.md §3). Layered as Kafka Streams
//! is: the stream loop ([`stream_thread`]) → tasks ([`task`]) → their stores
//! (the `outbound-state` crate) → restore from changelogs ([`restore`]).

pub mod partitioner;
pub mod processors;
pub mod purge;
pub mod restore;
pub mod stream_thread;
pub mod task;
pub mod topology;
pub mod transaction;

pub use stream_thread::run;
pub use topology::{ensure_topics, Stage, Topics};
