//! The Elasticsearch sink (DESIGN.md §3 "Sink"): the output topics
//! `<app>-details` and `<app>-rollups` into the detail index and the rollup
//! indices, idempotently. One concern per file, as Vector's sinks are laid out:
//!
//! - [`config`]: the `[sink]` settings and their defaults;
//! - [`indices`]: index templates (`search/templates/`) and aliases, installed at startup;
//! - [`encoder`]: record → bulk action with `external_gte` version = offset;
//! - [`batch`]: batching by count, bytes and time;
//! - [`request_builder`]: batch → bulk body;
//! - [`client`]: the HTTP client of the search nodes (hosts, auth, TLS);
//! - [`service`]: sends a bulk request (the `elasticsearch` crate);
//! - [`retry`]: which responses and items retry, fail for good, or count as done;
//! - [`acks`]: which offsets may be committed once batches are acknowledged;
//! - [`dlq`]: the sink's dead-letter topic;
//! - [`sink`]: the loop that wires them.

pub mod acks;
pub mod batch;
pub mod client;
pub mod config;
pub mod dlq;
pub mod encoder;
pub mod indices;
pub mod request_builder;
pub mod retry;
pub mod service;
#[allow(clippy::module_inception)]
pub mod sink;

pub use config::SinkConfig;
pub use sink::{dlq_topic, group_id, run, spawn};
