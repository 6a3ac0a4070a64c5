//! The engine: runs the pipeline's stages on Kafka with exactly-once
//! transactions and RocksDB state (DESIGN.md §3). Layered as Kafka Streams
//! is, each layer knowing only the next:
//!
//! - [`stream_thread`]: the poll loop, one consumer and one transactional
//!   producer per thread (`stream_threads` of them, each with its share of
//!   the tasks);
//! - [`task_manager`]: the thread's tasks and their lifecycle
//!   ([`task`]: created → restoring → running → suspended → closed);
//! - [`record_collector`]: the records of one transaction, coalesced per key
//!   where the output allows, sent at commit by [`transaction`];
//! - [`state_manager`]: a task's directory and whether its checkpoint can be
//!   trusted; [`changelog_reader`]: restoring stores from changelogs;
//! - [`topology`]: the stages as a table; [`processors`]: what each does
//!   with one record; [`topics`]: the topics and their settings.

pub mod changelog_reader;
pub mod failpoints;
mod librdkafka;
pub mod partitioner;
pub mod processors;
pub mod progress;
pub mod purge;
pub mod record_collector;
mod stall;
pub mod state_manager;
pub mod stream_thread;
pub mod task;
pub mod task_manager;
pub mod topics;
pub mod topology;
pub mod transaction;

use std::sync::Arc;

use anyhow::Context;
use outbound_pipeline::config::PipelineConfig;
use outbound_state::{StoreResources, StoreTuning};

pub use topics::{ensure_topics, Topics};
pub use topology::Stage;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Runs the stream stages on `stream_threads` threads until `shutdown` is
/// requested or one of them fails (then the others stop too).
pub fn run(
    config: Config,
    pipeline: PipelineConfig,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let topics = Topics::new(&config, pipeline.topics());
    let resources = Arc::new(StoreResources::new(StoreTuning {
        block_cache_bytes: config.state.block_cache_mb << 20,
        write_buffer_bytes: config.state.write_buffer_mb << 20,
        ..StoreTuning::default()
    }));
    let dirs = Arc::new(state_manager::StateDirectory::new(&config)?);
    let threads = config.stream_threads.max(1);
    let mut handles = Vec::new();
    for i in 0..threads {
        // One thread keeps the instance's own transactional id; several
        // threads each have their own.
        let (name, txn_id): (&'static str, String) = if threads == 1 {
            ("stream", config.transactional_id())
        } else {
            (
                Box::leak(format!("stream-{i}").into_boxed_str()),
                format!("{}-{i}", config.transactional_id()),
            )
        };
        let thread = stream_thread::StreamThread::new(
            name,
            &txn_id,
            &config,
            pipeline.clone(),
            topics.clone(),
            dirs.clone(),
            resources.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
        .with_context(|| format!("starting stream thread {name}"))?;
        let stop_all = shutdown.clone();
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let result = thread.run();
                if result.is_err() {
                    // One thread failing stops the process: the others let go
                    // of their tasks cleanly and the process exits non-zero.
                    stop_all.trigger();
                }
                result
            })
            .with_context(|| format!("spawning stream thread {name}"))?;
        handles.push((name, handle));
    }
    let mut first_error = None;
    for (name, handle) in handles {
        let result = handle
            .join()
            .map_err(|_| anyhow::anyhow!("stream thread {name} panicked"))
            .and_then(|r| r);
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    metrics.set_ready(false);
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
