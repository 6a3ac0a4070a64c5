//! The sink loop: consume the output topics, encode, batch, deliver bulk
//! requests (`delivery.rs`), and commit the offsets a batch covered only once
//! Elasticsearch acknowledged every item of it (done, version conflict, or
//! dead-lettered). Memory is bounded: when the bytes consumed and not yet
//! acknowledged reach `sink.max_in_flight_bytes`, the assigned partitions are
//! paused (the consumer keeps polling, so it stays in its group) until
//! acknowledgements bring them down to half.
//!
//! Nothing is lost across crashes, outages or rebalances: an offset is
//! committed only after everything before it is in the index, and anything
//! sent again is idempotent thanks to `external_gte` versions. On every
//! assignment the loop checks that the topics are still the incarnations
//! the indices hold (`ownership.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

use super::acks::OffsetTracker;
use super::batch::{Batch, Batcher};
use super::consumer::{commit, lock, RebalanceEvent, SinkConsumer};
use super::delivery::{Delivery, DeliveryError};
use super::dlq::{DeadLetter, DeadLetterProducer};
use super::encoder::{Encoder, Origin};
use super::lag::LagClock;
use super::ownership::recreated_while_running;
use super::topics::topic_ids;

/// How long shutdown waits for in-flight batches before leaving them to
/// the next run (they are not committed, so they are sent again).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How often the topics' identity is checked besides on assignment.
const IDENTITY_EVERY: Duration = Duration::from_secs(60);

/// Per partition, what has been consumed and acknowledged: a rebuild
/// watches it to know when its new generation has caught up.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    /// (topic, partition) → every record below this offset is acknowledged
    /// (or was never there: control records, compacted gaps).
    pub acked_through: BTreeMap<(String, i32), i64>,
    /// Records consumed since the loop started.
    pub consumed: u64,
}

/// What one run of the loop is given.
pub struct LoopSetup {
    pub config: Config,
    pub encoder: Encoder,
    pub delivery: Arc<Delivery>,
    pub dlq: Arc<DeadLetterProducer>,
    pub consumer: Arc<SinkConsumer>,
    pub tracker: Arc<Mutex<OffsetTracker>>,
    /// Topic → the id of the incarnation the indices hold.
    pub topic_ids: BTreeMap<String, String>,
    pub progress: Option<Arc<Mutex<Progress>>>,
    pub metrics: Arc<Metrics>,
    /// Stops this loop (the process's shutdown, or a rebuild's).
    pub shutdown: Shutdown,
}

pub struct SinkLoop {
    setup: LoopSetup,
    topics: [Arc<str>; 2],
    batcher: Batcher,
    /// Closed batches waiting for a free request slot, in order.
    ready: VecDeque<Batch>,
    ready_bytes: usize,
    in_flight: JoinSet<JobDone>,
    in_flight_bytes: usize,
    paused: bool,
    clocks: BTreeMap<(String, i32), LagClock>,
    identity_checked: Instant,
}

struct JobDone {
    batch_id: u64,
    bytes: usize,
    result: Result<(), DeliveryError>,
}

impl SinkLoop {
    pub fn new(setup: LoopSetup) -> Self {
        let [details, rollups] = setup.encoder.topics();
        let topics = [Arc::from(details), Arc::from(rollups)];
        let sink = &setup.config.sink;
        Self {
            batcher: Batcher::new(
                sink.batch_max_docs,
                sink.batch_max_bytes,
                Duration::from_millis(sink.batch_timeout_ms),
            ),
            topics,
            ready: VecDeque::new(),
            ready_bytes: 0,
            in_flight: JoinSet::new(),
            in_flight_bytes: 0,
            paused: false,
            clocks: BTreeMap::new(),
            identity_checked: Instant::now(),
            setup,
        }
    }

    fn held_bytes(&self) -> usize {
        self.batcher.bytes() + self.ready_bytes + self.in_flight_bytes
    }

    /// Runs until the shutdown trips (Ok) or the sink must stop (Err).
    pub async fn run(&mut self) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_consumer_error: Option<Instant> = None;
        let consumer = self.setup.consumer.clone();
        while !self.setup.shutdown.is_requested() {
            self.setup.metrics.liveness.beat("sink");
            self.apply_rebalance_events().await?;
            self.dispatch();
            self.apply_backpressure();
            self.setup
                .metrics
                .sink
                .in_flight_bytes
                .set(self.held_bytes() as i64);
            let deadline = self.batcher.deadline();
            let batch_due = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    let done = done.context("a bulk task panicked")?;
                    self.completed(done)?;
                }
                _ = batch_due => {
                    if let Some(batch) = self.batcher.take_if_due(Instant::now()) {
                        self.close(batch);
                    }
                }
                message = consumer.recv() => match message {
                    Ok(m) => {
                        if let Some(closed) = self.accept(&m)? {
                            self.close(closed);
                        }
                    }
                    Err(e) => {
                        if last_consumer_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            warn!(error = %e, "sink consumer error");
                            last_consumer_error = Some(Instant::now());
                        }
                    }
                },
                _ = tick.tick() => self.on_tick().await?,
            }
            commit(&self.setup.consumer, CommitMode::Async);
        }
        Ok(())
    }

    /// Encodes one record into the open batch; returns the batch it closed.
    fn accept(&mut self, m: &BorrowedMessage<'_>) -> anyhow::Result<Option<Batch>> {
        let (topic, output) = if m.topic() == &*self.topics[0] {
            (self.topics[0].clone(), "details")
        } else if m.topic() == &*self.topics[1] {
            (self.topics[1].clone(), "rollups")
        } else {
            (Arc::from(m.topic()), "other")
        };
        let metrics = &self.setup.metrics;
        metrics.sink.records_in.with_label_values(&[output]).inc();
        if let Some(p) = &self.setup.progress {
            lock(p).consumed += 1;
        }
        let origin = Origin {
            topic,
            partition: m.partition(),
            offset: m.offset(),
        };
        let timestamp_ms = m.timestamp().to_millis();
        let now = Instant::now();
        match self
            .setup
            .encoder
            .encode(origin.clone(), m.key(), m.payload(), timestamp_ms)
        {
            Ok(item) => Ok(self.batcher.push(item, now)),
            Err(e) if !e.is_records_fault() => {
                Err(super::errors::Refusal::new(format!("record {origin}: {e}")).into())
            }
            Err(e) => {
                let letter = DeadLetter {
                    topic_id: self.setup.topic_ids.get(&*origin.topic).cloned(),
                    origin,
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    timestamp_ms,
                    error_type: e.kind().to_owned(),
                    reason: e.to_string(),
                    index: None,
                    id: None,
                    status: None,
                };
                Ok(self.batcher.push_rejected(letter, now))
            }
        }
    }

    /// Queues a closed batch and registers its offsets, in consumption order.
    fn close(&mut self, batch: Batch) {
        lock(&self.setup.tracker).dispatched(batch.id, &batch.ranges);
        self.ready_bytes += batch.bytes;
        self.ready.push_back(batch);
    }

    fn dispatch(&mut self) {
        while self.in_flight.len() < self.setup.config.sink.max_in_flight_requests {
            let Some(batch) = self.ready.pop_front() else {
                break;
            };
            self.ready_bytes -= batch.bytes;
            self.in_flight_bytes += batch.bytes;
            debug!(
                batch = batch.id,
                documents = batch.len(),
                bytes = batch.bytes,
                "sending batch"
            );
            let job = Job {
                delivery: self.setup.delivery.clone(),
                dlq: self.setup.dlq.clone(),
                metrics: self.setup.metrics.clone(),
                topic_ids: self.setup.topic_ids.clone(),
            };
            self.in_flight.spawn(job.process(batch));
        }
    }

    fn completed(&mut self, done: JobDone) -> anyhow::Result<()> {
        self.in_flight_bytes -= done.bytes;
        match done.result {
            Ok(()) => {
                lock(&self.setup.tracker).acknowledged(done.batch_id);
                Ok(())
            }
            Err(DeliveryError::Aborted) => Ok(()),
            Err(DeliveryError::Failed(e)) => Err(e),
        }
    }

    /// Pauses every assigned partition at the memory limit; resumes at half.
    fn apply_backpressure(&mut self) {
        let held = self.held_bytes();
        let limit = self.setup.config.sink.max_in_flight_bytes;
        let want_paused = if self.paused {
            held > limit / 2
        } else {
            held >= limit
        };
        if want_paused == self.paused {
            return;
        }
        let consumer = &self.setup.consumer;
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let result = if want_paused {
            consumer.pause(&assignment)
        } else {
            consumer.resume(&assignment)
        };
        match result {
            Ok(()) => {
                self.paused = want_paused;
                self.setup.metrics.sink.paused.set(i64::from(want_paused));
                info!(
                    paused = want_paused,
                    held_bytes = held,
                    limit,
                    "sink backpressure"
                );
            }
            Err(e) => warn!(error = %e, "pausing/resuming the sink's partitions failed"),
        }
    }

    async fn apply_rebalance_events(&mut self) -> anyhow::Result<()> {
        let events = std::mem::take(&mut *lock(&self.setup.consumer.context().events));
        let mut check = false;
        for event in events {
            match event {
                RebalanceEvent::Assigned(parts) => {
                    info!(partitions = ?parts, "sink partitions assigned");
                    check = true;
                    if self.paused {
                        let mut tpl = TopicPartitionList::new();
                        for (t, p) in &parts {
                            tpl.add_partition(t, *p);
                        }
                        if let Err(e) = self.setup.consumer.pause(&tpl) {
                            warn!(error = %e, "pausing newly assigned partitions failed");
                        }
                    }
                }
                RebalanceEvent::Revoked(parts) => {
                    info!(partitions = ?parts, "sink partitions revoked");
                    for (t, p) in parts {
                        self.clocks.remove(&(t.clone(), p));
                        let _ = self
                            .setup
                            .metrics
                            .sink
                            .lag_seconds
                            .remove_label_values(&[&t, &p.to_string()]);
                    }
                }
            }
        }
        if check {
            self.check_identity().await?;
        }
        Ok(())
    }

    /// The topics must still be the incarnations the indices hold: a topic
    /// deleted and created again under the running sink restarts its offsets.
    async fn check_identity(&mut self) -> anyhow::Result<()> {
        self.identity_checked = Instant::now();
        let names: Vec<&str> = self.topics.iter().map(|t| &**t).collect();
        let now = match topic_ids(&self.setup.config, &names).await {
            Ok(ids) => ids,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "checking the output topics' identity failed; checking again later");
                return Ok(());
            }
        };
        for (topic, recorded) in &self.setup.topic_ids {
            if let Some(id) = now.get(topic) {
                if id != recorded {
                    return Err(recreated_while_running(topic, recorded, id).into());
                }
            }
        }
        Ok(())
    }

    async fn on_tick(&mut self) -> anyhow::Result<()> {
        self.setup.metrics.sink.health.refresh();
        self.update_progress();
        if self.identity_checked.elapsed() >= IDENTITY_EVERY {
            self.check_identity().await?;
        }
        Ok(())
    }

    /// Per assigned partition: how far everything is acknowledged, and how
    /// old the oldest unacknowledged record is.
    fn update_progress(&mut self) {
        let consumer = &self.setup.consumer;
        let Ok(positions) = consumer.position() else {
            return;
        };
        let ends = lock(&consumer.context().ends).clone();
        let tracker = lock(&self.setup.tracker);
        let now = Instant::now();
        let mut acked = BTreeMap::new();
        for e in positions.elements() {
            let key = (e.topic().to_owned(), e.partition());
            let outstanding = [
                tracker.first_unacknowledged(e.topic(), e.partition()),
                self.batcher.first_offset(e.topic(), e.partition()),
            ]
            .into_iter()
            .flatten()
            .min();
            let through = match (outstanding, e.offset()) {
                (Some(o), _) => o,
                (None, Offset::Offset(p)) => p,
                // Nothing consumed yet: nothing acknowledged either.
                (None, _) => continue,
            };
            acked.insert(key.clone(), through);
            if let Some(&end) = ends.get(&key) {
                let clock = self.clocks.entry(key.clone()).or_default();
                clock.observe(now, end);
                if let Some(age) = clock.age(now, through) {
                    self.setup
                        .metrics
                        .sink
                        .lag_seconds
                        .with_label_values(&[&key.0, &key.1.to_string()])
                        .set(age.as_secs_f64());
                }
            }
        }
        drop(tracker);
        if let Some(p) = &self.setup.progress {
            lock(p).acked_through = acked;
        }
    }

    /// On shutdown: send what is buffered, wait a grace period for in-flight
    /// batches, commit what Elasticsearch acknowledged, leave the group.
    pub async fn finish(&mut self, clean: bool) {
        if clean {
            if let Some(batch) = self.batcher.take() {
                self.close(batch);
            }
            let grace = Instant::now() + SHUTDOWN_GRACE;
            loop {
                self.dispatch();
                if self.in_flight.is_empty() {
                    break;
                }
                match tokio::time::timeout_at(grace.into(), self.in_flight.join_next()).await {
                    Ok(Some(Ok(done))) => {
                        if let Err(e) = self.completed(done) {
                            warn!(error = %format!("{e:#}"), "batch failed during shutdown");
                        }
                    }
                    Ok(Some(Err(e))) => warn!(error = %e, "a bulk task panicked during shutdown"),
                    Ok(None) => break,
                    Err(_) => {
                        warn!(
                            batches = self.in_flight.len() + self.ready.len(),
                            "shutdown grace over: unacknowledged batches are sent again next run"
                        );
                        break;
                    }
                }
            }
        }
        self.in_flight.abort_all();
        self.update_progress();
        commit(&self.setup.consumer, CommitMode::Sync);
        self.setup.consumer.unsubscribe();
        for key in std::mem::take(&mut self.clocks).into_keys() {
            let _ = self
                .setup
                .metrics
                .sink
                .lag_seconds
                .remove_label_values(&[&key.0, &key.1.to_string()]);
        }
    }
}

/// One batch's delivery, then its dead letters.
struct Job {
    delivery: Arc<Delivery>,
    dlq: Arc<DeadLetterProducer>,
    metrics: Arc<Metrics>,
    topic_ids: BTreeMap<String, String>,
}

impl Job {
    async fn process(self, mut batch: Batch) -> JobDone {
        let letters = std::mem::take(&mut batch.rejected);
        let result = self.run(&batch, letters).await;
        JobDone {
            batch_id: batch.id,
            bytes: batch.bytes,
            result,
        }
    }

    async fn run(&self, batch: &Batch, letters: Vec<DeadLetter>) -> Result<(), DeliveryError> {
        let delivered = self
            .delivery
            .deliver(batch.id, &batch.items, letters)
            .await?;
        let mut letters = delivered.letters;
        if !letters.is_empty() {
            for l in &mut letters {
                if l.topic_id.is_none() {
                    l.topic_id = self.topic_ids.get(&*l.origin.topic).cloned();
                }
            }
            self.dlq
                .send_all(&letters)
                .await
                .map_err(DeliveryError::Failed)?;
            let m = &self.metrics.sink;
            for l in &letters {
                if l.index.is_some() {
                    m.items.with_label_values(&["rejected"]).inc();
                }
                m.rejections.with_label_values(&[&l.error_type]).inc();
            }
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let e2e = self.metrics.end_to_end_seconds.with_label_values(&["sink"]);
        for ts in delivered.acked_timestamps {
            e2e.observe((now_ms - ts).max(0) as f64 / 1000.0);
        }
        Ok(())
    }
}
