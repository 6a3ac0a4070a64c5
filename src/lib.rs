//! `outbound`: the stream processor between Debezium's change topics and the
//! outbound report in Elasticsearch. The business rules live in the
//! `outbound-pipeline` crate; this crate runs them on Kafka.

pub use outbound_pipeline as pipeline;
