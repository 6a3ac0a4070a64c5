//! `outbound`: the stream processor between Debezium's change topics and the
//! outbound report in Elasticsearch. The business rules live in the
//! `outbound-pipeline` crate and the state store in `outbound-state`; this
//! crate runs them on Kafka.

pub mod config;
pub mod engine;
pub mod loadgen;
pub mod metrics;
pub mod ops;
pub mod reconcile;
pub mod shutdown;
pub mod sink;
pub mod source_db;

pub use outbound_pipeline as pipeline;
