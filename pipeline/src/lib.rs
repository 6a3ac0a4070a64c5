//! The business rules of `outbound`: decode Debezium change events, parse the
//! source tables' values, join order items with their order and shipment, and
//! turn every change into detail documents and rollup deltas. Pure code: it
//! knows nothing of Kafka or RocksDB, so it can be tested and benchmarked alone.
//!
//! The flow, one stage per module:
//! `decode` (bytes → [`model::ChangeEvent`]) → `rekey` (→ [`rekey::KeyedChange`]
//! per order partition) → `join` (per partition state → detail changes and
//! [`rollup::RollupDelta`]s) → `resolve` (per document id: newest detail
//! change wins) and `aggregate` (per rollup key: counters → rollup documents).

pub mod aggregate;
pub mod codec;
pub mod columns;
pub mod config;
pub mod decode;
pub mod docs;
pub mod join;
pub mod model;
pub mod rekey;
pub mod resolve;
pub mod rollup;
pub mod store;
pub mod values;

pub use config::PipelineConfig;
pub use decode::{decode_change, DecodeError, Decoder};
pub use model::ChangeEvent;
pub use rekey::{rekey, KeyedChange, Route};
pub use store::{JoinStore, MemStore, StateStore, StoreError};
