//! The business rules of `outbound`: decode Debezium change events, parse the
//! source tables' values, join order items with their order and shipment, and
//! turn every change into detail documents and rollup deltas. Pure code: it
//! knows nothing of Kafka or RocksDB, so it can be tested and benchmarked alone.
