//! The Elasticsearch sink (DESIGN.md §3 "Sink"): the output topics
//! `<app>-details` and `<app>-rollups` into the detail index and the rollup
//! indices, idempotently. One concern per file, as Vector's sinks are laid out:
//!
//! - [`config`]: the `[sink]` settings and their defaults;
//! - [`indices`]: index roles, names and templates (`search/templates/`);
//! - [`ownership`]: who owns an index and which version epoch it is in;
//! - [`install`]: creating and checking the indices before writing;
//! - [`cluster`]: the index administration calls on the search node;
//! - [`topics`]: what the sink asks Kafka (topic ids, tombstone retention);
//! - [`encoder`]: record → bulk action with `external_gte` version
//!   `epoch << 40 | offset`;
//! - [`batch`]: batching by count, bytes and time;
//! - [`request_builder`]: batch → bulk body;
//! - [`service`]: sends a bulk request (the `elasticsearch` crate);
//! - [`retry`]: which responses and items retry, block, fail for good, or
//!   count as done;
//! - [`delivery`]: one batch until every item is acknowledged;
//! - [`acks`]: which offsets may be committed once batches are acknowledged;
//! - [`dlq`]: the sink's dead-letter topic;
//! - [`consumer`]: the Kafka consumer, its rebalances and commits;
//! - [`lag`]: how old the oldest unacknowledged record is;
//! - [`sink_loop`]: the loop that wires them;
//! - [`health`]: the sink's own health (`/healthz/sink`);
//! - [`supervisor`]: runs the loop, restarting it after errors;
//! - [`rebuild`]: `outbound rebuild-indices`, zero-downtime generations;
//! - [`replay`]: `outbound dlq replay`.

pub mod acks;
pub mod batch;
pub mod cluster;
pub mod config;
pub mod consumer;
pub mod delivery;
pub mod dlq;
pub mod encoder;
pub mod errors;
pub mod health;
pub mod indices;
pub mod install;
pub mod lag;
pub mod ownership;
pub mod rebuild;
pub mod replay;
pub mod request_builder;
pub mod retry;
pub mod service;
pub mod sink_loop;
pub mod supervisor;
pub mod topics;

pub use config::SinkConfig;
pub use install::{bump_epoch, bump_epoch_async, BumpedIndex};
pub use supervisor::{dlq_topic, group_id, run, spawn, spawn_with, OnRefusal};
