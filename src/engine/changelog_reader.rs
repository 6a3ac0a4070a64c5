//! Restoring task stores from their changelogs (Kafka Streams'
//! `StoreChangelogReader`): one group-less `read_committed` consumer to
//! which the task manager registers the changelog partition of every task
//! that is restoring, with the offsets to read from and to. The stream loop
//! calls [`ChangelogReader::step`] between polls, so a long restore never
//! starves the group heartbeat or the tasks already running, and a task
//! turns Running once its store reaches the end it was registered with.
//!
//! `auto.offset.reset=error`: a changelog position that does not exist is
//! an error to look into, never a silent jump to the start or the end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use outbound_state::ChangelogRecord;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::{info, warn};

use super::task::TaskId;
use crate::config::Config;

/// Where one task's restore stands.
#[derive(Debug, Clone)]
pub struct Restoring {
    pub task: TaskId,
    /// Offset the restore must reach (the changelog's stable end when it was
    /// registered).
    pub end: i64,
    pub position: i64,
    pub restored: u64,
    pub started: Instant,
    last_log: Instant,
}

impl Restoring {
    pub fn remaining(&self) -> i64 {
        (self.end - self.position).max(0)
    }
}

/// What one step did.
#[derive(Debug, Default)]
pub struct Step {
    /// Tasks whose restore completed.
    pub done: Vec<TaskId>,
    /// Tasks whose changelog position turned out not to exist: their
    /// checkpoints must be checked again.
    pub lost: Vec<TaskId>,
}

pub struct ChangelogReader {
    consumer: BaseConsumer,
    active: HashMap<(String, i32), Restoring>,
    batch: usize,
    /// How long a restore may read nothing before each warning (an open
    /// transaction of a crashed instance holds the end back until it times
    /// out; a broker restart holds everything back).
    stall_limit: Duration,
}

/// Writes one task's batch to its store: `(task, records, next_offset)`.
pub type ApplyBatch<'a> = dyn FnMut(TaskId, &[ChangelogRecord], i64) -> anyhow::Result<()> + 'a;

impl ChangelogReader {
    pub fn new(config: &Config, thread: &str) -> anyhow::Result<Self> {
        let mut cc = config.client_config();
        cc.set(
            "group.id",
            format!("{}-restore-{}-{thread}", config.app_id, config.instance_id),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        // A fetch that includes a partition already at its end waits
        // fetch.wait.max.ms (500 ms by default) at the broker, holding
        // back partitions assigned meanwhile: restores are bursts of
        // reads, so keep the long poll short.
        .set("fetch.wait.max.ms", "10")
        // librdkafka checks queued.min.messages and
        // queued.max.messages.kbytes against the consumer's one queue (every
        // partition forwards to it), and a partition over them is not fetched
        // again for fetch.queue.backoff.ms, 1 s by default: a small
        // changelog restored beside big ones finished a second late.
        .set("fetch.queue.backoff.ms", "10");
        for (k, v) in &config.kafka.properties {
            cc.set(k, v);
        }
        let consumer: BaseConsumer = cc.create().context("creating the restore consumer")?;
        Ok(Self {
            consumer,
            active: HashMap::new(),
            batch: config.state.restore_batch,
            stall_limit: Duration::from_millis(config.kafka.transaction_timeout_ms * 3 + 30_000),
        })
    }

    /// The client, for admin requests (topic ids).
    pub fn client(&self) -> &rdkafka::client::Client<rdkafka::consumer::DefaultConsumerContext> {
        self.consumer.client()
    }

    pub fn is_idle(&self) -> bool {
        self.active.is_empty()
    }

    pub fn progress(&self) -> impl Iterator<Item = &Restoring> {
        self.active.values()
    }

    /// A changelog partition's first offset and its stable end (the
    /// read_committed high watermark): one request, bounded by `timeout`.
    pub fn offsets(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<(i64, i64), KafkaError> {
        self.consumer.fetch_watermarks(topic, partition, timeout)
    }

    /// Starts restoring `task` from `from` to `end` of its changelog.
    pub fn register(
        &mut self,
        task: TaskId,
        topic: &str,
        partition: i32,
        from: i64,
        end: i64,
    ) -> anyhow::Result<()> {
        info!(task = %task, changelog = %format!("{topic}[{partition}]"), from, to = end, records = end - from, "restoring");
        let now = Instant::now();
        self.active.insert(
            (topic.to_owned(), partition),
            Restoring {
                task,
                end,
                position: from,
                restored: 0,
                started: now,
                last_log: now,
            },
        );
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
        self.consumer.incremental_assign(&tpl).with_context(|| {
            format!("assigning changelog {topic}[{partition}] to the restore consumer")
        })?;
        Ok(())
    }

    /// Stops restoring a changelog partition (its task closed or is
    /// checked again).
    pub fn unregister(&mut self, topic: &str, partition: i32) {
        if self.active.remove(&(topic.to_owned(), partition)).is_some() {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, partition);
            if let Err(e) = self.consumer.incremental_unassign(&tpl) {
                warn!(%topic, partition, error = %e, "unassigning a changelog partition");
            }
        }
    }

    /// Reads up to one batch and hands each task's records to `apply`.
    pub fn step(&mut self, apply: &mut ApplyBatch<'_>) -> anyhow::Result<Step> {
        let mut step = Step::default();
        if self.active.is_empty() {
            return Ok(step);
        }
        let mut pending: HashMap<(String, i32), Vec<ChangelogRecord>> = HashMap::new();
        let deadline = Instant::now() + Duration::from_millis(50);
        let mut read = 0usize;
        let mut out_of_range = false;
        while read < self.batch && Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(5)) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(_))) => continue,
                Some(Err(e))
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) =>
                {
                    warn!(error = %e, "a changelog position does not exist");
                    out_of_range = true;
                    break;
                }
                // librdkafka reconnects by itself: a broker hiccup only
                // slows the restore down.
                Some(Err(e)) => {
                    warn!(error = %e, "reading the changelogs; will go on");
                    break;
                }
                Some(Ok(m)) => {
                    read += 1;
                    pending
                        .entry((m.topic().to_owned(), m.partition()))
                        .or_default()
                        .push(ChangelogRecord {
                            offset: m.offset(),
                            key: m.key().unwrap_or_default().to_vec(),
                            value: m.payload().map(<[u8]>::to_vec),
                        });
                }
            }
        }
        for (key, records) in pending {
            let Some(progress) = self.active.get_mut(&key) else {
                continue;
            };
            // Records past the registered end belong to the running task.
            let upto = records.partition_point(|r| r.offset < progress.end);
            let records = &records[..upto];
            if records.is_empty() {
                continue;
            }
            let next = records.last().map_or(progress.position, |r| r.offset + 1);
            apply(progress.task, records, next)?;
            progress.restored += records.len() as u64;
            progress.position = next;
        }
        // Aborted records and transaction markers are skipped by
        // read_committed, so completion is judged by the consumer position.
        let positions = self
            .consumer
            .position()
            .context("reading restore positions")?;
        let mut finished = Vec::new();
        for elem in positions.elements() {
            let key = (elem.topic().to_owned(), elem.partition());
            let Some(progress) = self.active.get_mut(&key) else {
                continue;
            };
            if let Offset::Offset(pos) = elem.offset() {
                progress.position = progress.position.max(pos.min(progress.end));
            }
            let elapsed = progress.started.elapsed();
            if progress.position >= progress.end {
                info!(
                    task = %progress.task,
                    changelog = %format!("{}[{}]", key.0, key.1),
                    restored = progress.restored,
                    seconds = elapsed.as_secs_f64(),
                    rate = progress.restored as f64 / elapsed.as_secs_f64().max(1e-3),
                    "restore complete"
                );
                step.done.push(progress.task);
                finished.push(key);
            } else if out_of_range {
                step.lost.push(progress.task);
                finished.push(key);
            } else if progress.last_log.elapsed() >= Duration::from_secs(5) {
                progress.last_log = Instant::now();
                let rate = progress.restored as f64 / elapsed.as_secs_f64().max(1e-3);
                info!(
                    task = %progress.task,
                    restored = progress.restored,
                    remaining = progress.remaining(),
                    rate,
                    eta_seconds = progress.remaining() as f64 / rate.max(1.0),
                    "restoring"
                );
                if elapsed > self.stall_limit && progress.restored == 0 {
                    // A broker that is down or a transaction in doubt holds
                    // the end back: both pass (the coordinator aborts an
                    // orphaned transaction), so wait, never exit.
                    warn!(
                        task = %progress.task,
                        changelog = %format!("{}[{}]", key.0, key.1),
                        position = progress.position,
                        end = progress.end,
                        waited = ?elapsed,
                        "restore is making no progress (broker unavailable or a transaction in doubt); still waiting"
                    );
                }
            }
        }
        for (topic, partition) in finished {
            self.unregister(&topic, partition);
        }
        Ok(step)
    }
}

/// Errors of a partition whose leadership is still settling (a new topic, a
/// broker restart): worth asking again.
pub fn transient(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::NotLeaderForPartition
                | C::LeaderNotAvailable
                | C::UnknownTopicOrPartition
                | C::UnknownPartition
                | C::UnknownTopic
                | C::RequestTimedOut
                | C::OperationTimedOut
                | C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::NotCoordinator
                | C::CoordinatorNotAvailable
                | C::CoordinatorLoadInProgress
                | C::UnstableOffsetCommit
        )
    )
}
