//! Restoring task stores from their changelogs (Kafka Streams'
//! `StoreChangelogReader`): one group-less `read_committed` consumer assigned
//! to the changelog partitions of every task still restoring. The stream loop
//! calls [`Restorer::step`] between polls, so a long restore never starves the
//! group heartbeat, and each task turns Running once its store reaches the
//! changelog end captured when its restore began.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use outbound_state::{ChangelogRecord, TaskStore};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::config::Config;

/// Writes one changelog partition's batch to its task's store:
/// `(topic, partition, records, next_offset)`.
pub type ApplyBatch<'a> = dyn FnMut(&str, i32, &[ChangelogRecord], i64) -> anyhow::Result<()> + 'a;

/// Where one task's restore stands.
#[derive(Debug, Clone)]
pub struct RestoreProgress {
    pub changelog: (String, i32),
    /// Offset the restore must reach (the changelog end when it began).
    pub end: i64,
    pub position: i64,
    pub restored: u64,
    pub started: Instant,
    last_log: Instant,
}

impl RestoreProgress {
    pub fn remaining(&self) -> i64 {
        (self.end - self.position).max(0)
    }
}

pub struct Restorer {
    consumer: BaseConsumer,
    active: HashMap<(String, i32), RestoreProgress>,
    batch: usize,
    /// How long to wait for the changelog end to become readable (an open
    /// transaction of a crashed instance holds it back until it times out).
    stall_limit: Duration,
}

/// The result of starting a restore.
pub enum RestoreStart {
    /// The store already holds everything committed in the changelog.
    UpToDate,
    Started,
}

impl Restorer {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let mut cc = config.client_config();
        cc.set(
            "group.id",
            format!("{}-restore-{}", config.app_id, config.instance_id),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        // A fetch that includes a partition already at its end waits
        // fetch.wait.max.ms (500 ms by default) at the broker, holding
        // back partitions assigned meanwhile: restores are bursts of
        // reads, so keep the long poll short.
        .set("fetch.wait.max.ms", "10");
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

    pub fn is_idle(&self) -> bool {
        self.active.is_empty()
    }

    pub fn progress(&self) -> impl Iterator<Item = &RestoreProgress> {
        self.active.values()
    }

    /// Validates the store's checkpoint against the changelog's offsets and
    /// begins restoring from it. A checkpoint past the changelog end (the
    /// topic was recreated) or before its start (compaction may have dropped
    /// tombstones the store never saw) is not trusted: the store is wiped and
    /// restored in full.
    pub fn start(
        &mut self,
        store: &mut Option<TaskStore>,
        resources: &outbound_state::StoreResources,
    ) -> anyhow::Result<RestoreStart> {
        let s = store.as_ref().context("task store missing")?;
        let cp = s.checkpoint().clone();
        let (topic, partition) = (cp.changelog.topic.clone(), cp.changelog.partition);
        let (low, high) = self
            .watermarks(&topic, partition)
            .with_context(|| format!("reading the offsets of changelog {topic}[{partition}]"))?;
        let mut next = cp.next_offset;
        let reason = if next > high {
            Some(format!(
                "checkpoint {next} is past the changelog end {high} (was the topic recreated?)"
            ))
        } else if next < low && next > 0 {
            Some(format!(
                "checkpoint {next} is before the changelog start {low}"
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            warn!(changelog = %format!("{topic}[{partition}]"), %reason, "full restore");
            let owned = store.take().context("task store missing")?;
            *store = Some(owned.wipe(resources, &reason)?);
            next = 0;
        }
        let next = next.max(low);
        if next >= high {
            return Ok(RestoreStart::UpToDate);
        }
        info!(changelog = %format!("{topic}[{partition}]"), from = next, to = high, records = high - next, "restoring");
        let now = Instant::now();
        self.active.insert(
            (topic.clone(), partition),
            RestoreProgress {
                changelog: (topic.clone(), partition),
                end: high,
                position: next,
                restored: 0,
                started: now,
                last_log: now,
            },
        );
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, partition, Offset::Offset(next))?;
        self.consumer
            .incremental_assign(&tpl)
            .context("assigning a changelog partition")?;
        Ok(RestoreStart::Started)
    }

    /// The changelog partition's low and high offsets. A topic another
    /// instance has just created may not have a leader yet: such errors are
    /// retried for a while rather than failing the assignment.
    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), KafkaError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut backoff = Duration::from_millis(50);
        loop {
            match self
                .consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(30))
            {
                Err(e) if transient(&e) && Instant::now() < deadline => {
                    warn!(changelog = %format!("{topic}[{partition}]"), error = %e, "changelog offsets not readable yet; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                result => return result,
            }
        }
    }

    /// Stops restoring a changelog partition (its task was revoked).
    pub fn cancel(&mut self, topic: &str, partition: i32) {
        if self.active.remove(&(topic.to_owned(), partition)).is_some() {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, partition);
            if let Err(e) = self.consumer.incremental_unassign(&tpl) {
                warn!(%topic, partition, error = %e, "unassigning a changelog partition");
            }
        }
    }

    /// Reads up to one batch and hands each changelog partition's records to
    /// `apply(topic, partition, records, next_offset)`, which writes them to
    /// the task's store. Returns the changelog partitions whose restore
    /// completed in this step.
    pub fn step(&mut self, apply: &mut ApplyBatch<'_>) -> anyhow::Result<Vec<(String, i32)>> {
        if self.active.is_empty() {
            return Ok(Vec::new());
        }
        let mut pending: HashMap<(String, i32), Vec<ChangelogRecord>> = HashMap::new();
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut read = 0usize;
        while read < self.batch && Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(20)) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(_))) => continue,
                // librdkafka reconnects by itself: a broker hiccup only
                // slows the restore down.
                Some(Err(e)) if transient(&e) => {
                    warn!(error = %e, "reading the changelogs: transient error");
                    break;
                }
                Some(Err(e)) => return Err(e).context("reading a changelog"),
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
        for ((topic, partition), records) in pending {
            let Some(progress) = self.active.get_mut(&(topic.clone(), partition)) else {
                continue;
            };
            let next = records.last().map_or(progress.position, |r| r.offset + 1);
            apply(&topic, partition, &records, next)?;
            progress.restored += records.len() as u64;
            progress.position = next;
        }
        // Aborted records and transaction markers are skipped by
        // read_committed, so completion is judged by the consumer position.
        let mut done = Vec::new();
        let positions = self
            .consumer
            .position()
            .context("reading restore positions")?;
        for elem in positions.elements() {
            let key = (elem.topic().to_owned(), elem.partition());
            let Some(progress) = self.active.get_mut(&key) else {
                continue;
            };
            if let Offset::Offset(pos) = elem.offset() {
                progress.position = progress.position.max(pos);
            }
            let elapsed = progress.started.elapsed();
            if progress.position >= progress.end {
                info!(
                    changelog = %format!("{}[{}]", key.0, key.1),
                    restored = progress.restored,
                    seconds = elapsed.as_secs_f64(),
                    rate = progress.restored as f64 / elapsed.as_secs_f64().max(1e-3),
                    "restore complete"
                );
                done.push(key);
            } else if progress.last_log.elapsed() >= Duration::from_secs(5) {
                progress.last_log = Instant::now();
                let rate = progress.restored as f64 / elapsed.as_secs_f64().max(1e-3);
                info!(
                    changelog = %format!("{}[{}]", key.0, key.1),
                    restored = progress.restored,
                    remaining = progress.remaining(),
                    rate,
                    eta_seconds = progress.remaining() as f64 / rate.max(1.0),
                    "restoring"
                );
                if elapsed > self.stall_limit && progress.restored == 0 {
                    anyhow::bail!(
                        "restore of {}[{}] made no progress in {:?} (position {}, end {})",
                        key.0,
                        key.1,
                        elapsed,
                        progress.position,
                        progress.end
                    );
                }
            }
        }
        for (topic, partition) in &done {
            self.cancel(topic, *partition);
        }
        Ok(done)
    }
}

/// Errors of a partition whose leadership is still settling (a new topic, a
/// broker restart).
fn transient(e: &KafkaError) -> bool {
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
        )
    )
}
