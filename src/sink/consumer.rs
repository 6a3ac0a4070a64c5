//! The sink's Kafka consumer: one `read_committed` consumer in its own group
//! (`<app>-sink`, or a rebuild's group), with manual commits of what
//! Elasticsearch acknowledged. Its callbacks commit acknowledged offsets
//! before partitions go, tell the loop which partitions came and went, and
//! keep each partition's end from librdkafka's statistics (consumer lag,
//! and the lag age in `lag.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use crate::config::Config;
use crate::metrics::Metrics;

use super::acks::OffsetTracker;
use super::topics::client_config;

pub type SinkConsumer = StreamConsumer<SinkContext>;

/// Rebalances as the loop sees them (callbacks only record them).
#[derive(Debug)]
pub enum RebalanceEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

pub struct SinkContext {
    pub tracker: Arc<Mutex<OffsetTracker>>,
    pub events: Mutex<Vec<RebalanceEvent>>,
    pub metrics: Arc<Metrics>,
    /// Each fetched partition's end (the last stable offset), from statistics.
    pub ends: Mutex<BTreeMap<(String, i32), i64>>,
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// A consumer of `topics` in `group`, subscribed.
pub fn create(
    config: &Config,
    group: &str,
    topics: &[&str],
    tracker: Arc<Mutex<OffsetTracker>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<SinkConsumer> {
    let context = SinkContext {
        tracker,
        events: Mutex::new(Vec::new()),
        metrics,
        ends: Mutex::new(BTreeMap::new()),
    };
    let consumer: SinkConsumer = client_config(config)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        // Consumer lag and partition ends come from these statistics.
        .set("statistics.interval.ms", "5000")
        .create_with_context(context)
        .context("creating the sink's consumer")?;
    consumer
        .subscribe(topics)
        .with_context(|| format!("subscribing to {topics:?}"))?;
    Ok(consumer)
}

/// Commits what the tracker says became committable, for partitions still
/// assigned (a partition lost in a rebalance is its new owner's to commit).
pub fn commit(consumer: &SinkConsumer, mode: CommitMode) {
    let ctx = consumer.context();
    let offsets = lock(&ctx.tracker).take_commits();
    if offsets.is_empty() {
        return;
    }
    let assigned = consumer.assignment().unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    for (t, p, o) in &offsets {
        if assigned.find_partition(t, *p).is_some() {
            let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
        }
    }
    if tpl.count() == 0 {
        return;
    }
    let commits = &ctx.metrics.sink.commits;
    if let Err(e) = consumer.commit(&tpl, mode) {
        commits.with_label_values(&["failed"]).inc();
        warn!(error = %e, "committing sink offsets failed; the next commit covers them");
    } else if matches!(mode, CommitMode::Sync) {
        commits.with_label_values(&["ok"]).inc();
    }
}

impl ClientContext for SinkContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.metrics.consumer_lag.record(&statistics);
        let mut ends = lock(&self.ends);
        for (topic, t) in &statistics.topics {
            for (id, p) in &t.partitions {
                if *id < 0 || !p.desired {
                    continue;
                }
                let end = if p.ls_offset >= 0 {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                if end >= 0 {
                    ends.insert((topic.clone(), *id), end);
                }
            }
        }
    }
}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<(Arc<str>, i32)> = partitions_of(tpl)
                .into_iter()
                .map(|(t, p)| (Arc::from(t), p))
                .collect();
            let offsets = lock(&self.tracker).all_committable(&parts);
            if !offsets.is_empty() {
                let mut commit = TopicPartitionList::new();
                for (t, p, o) in &offsets {
                    let _ = commit.add_partition_offset(t, *p, Offset::Offset(*o));
                }
                let commits = &self.metrics.sink.commits;
                match consumer.commit(&commit, CommitMode::Sync) {
                    Ok(()) => commits.with_label_values(&["ok"]).inc(),
                    Err(e) => {
                        commits.with_label_values(&["failed"]).inc();
                        warn!(error = %e, "committing acknowledged offsets of revoked partitions failed");
                    }
                }
            }
            let mut tracker = lock(&self.tracker);
            let mut ends = lock(&self.ends);
            for (t, p) in &parts {
                tracker.forget(t, *p);
                ends.remove(&(t.to_string(), *p));
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => RebalanceEvent::Assigned(partitions_of(tpl)),
            Rebalance::Revoke(tpl) => RebalanceEvent::Revoked(partitions_of(tpl)),
            Rebalance::Error(e) => {
                warn!(error = %e, "sink consumer rebalance error");
                return;
            }
        };
        lock(&self.events).push(event);
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let commits = &self.metrics.sink.commits;
        match result {
            Ok(()) => commits.with_label_values(&["ok"]).inc(),
            Err(e) => {
                commits.with_label_values(&["failed"]).inc();
                warn!(error = %e, offsets = ?partitions_of(offsets), "sink offset commit failed; the next commit covers it");
            }
        }
    }
}
