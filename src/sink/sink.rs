//! The sink loop: consume `<app>-details` and `<app>-rollups` `read_committed`
//! in the consumer group `<app>-sink`, encode, batch, send bulk requests,
//! wait until Elasticsearch acknowledged every item of a batch (done,
//! version conflict, or dead-lettered), and only then commit the offsets the
//! batch covered. Memory is bounded: when the bytes consumed and not yet
//! acknowledged reach `sink.max_in_flight_bytes`, the assigned partitions are
//! paused (the consumer keeps polling, so it stays in its group) until
//! acknowledgements bring them down to half.
//!
//! Nothing is lost across crashes, outages or rebalances: an offset is
//! committed only after everything before it is in the index, and anything
//! sent again is idempotent thanks to `external_gte` versions.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

use super::acks::OffsetTracker;
use super::batch::{Batch, Batcher};
use super::dlq::{DeadLetter, DeadLetterProducer};
use super::encoder::{BulkItem, Encoder, Origin};
use super::indices::{index_specs, install, IndexSpec};
use super::request_builder::bulk_body;
use super::retry::{classify_item, Backoff, ItemOutcome};
use super::service::BulkService;

/// How long shutdown waits for in-flight batches before leaving them to
/// the next run (they are not committed, so they are sent again).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The sink's consumer group.
pub fn group_id(config: &Config) -> String {
    format!("{}-sink", config.app_id)
}

/// The sink's dead-letter topic.
pub fn dlq_topic(config: &Config) -> String {
    if config.sink.dlq_topic.is_empty() {
        config.topic("sink-dlq")
    } else {
        config.sink.dlq_topic.clone()
    }
}

/// Runs the sink on its own thread and runtime (as `outbound run` does);
/// a fatal error is logged and trips `shutdown` so the process stops.
pub fn spawn(
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    std::thread::Builder::new()
        .name("sink".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("sink-rt")
                .enable_all()
                .build()
                .context("starting the sink's async runtime")
                .and_then(|rt| rt.block_on(run(config, metrics, shutdown.clone())));
            if let Err(e) = &result {
                error!(error = %format!("{e:#}"), "the Elasticsearch sink stopped on a fatal error");
                shutdown.trigger();
            }
            result
        })
        .context("starting the sink thread")
}

/// Runs the sink until `shutdown` trips or a fatal error.
pub async fn run(config: Config, metrics: Arc<Metrics>, shutdown: Shutdown) -> anyhow::Result<()> {
    config.sink.validate()?;
    let service = BulkService::new(&config.sink)?;
    let specs = Arc::new(index_specs(&config.sink)?);
    let backoff = Backoff {
        initial: Duration::from_millis(config.sink.retry_initial_backoff_ms),
        max: Duration::from_millis(config.sink.retry_max_backoff_ms),
    };
    if config.sink.install_templates {
        install_until_done(&service, &specs, backoff, &shutdown).await?;
    }
    let kafka = config.client_config();
    let dlq_topic = dlq_topic(&config);
    ensure_topic(
        &kafka,
        &dlq_topic,
        config.kafka.partitions,
        config.kafka.replication_factor,
    )
    .await?;
    let dlq = Arc::new(DeadLetterProducer::new(&kafka, &dlq_topic)?);

    let details_topic = config.topic("details");
    let rollups_topic = config.topic("rollups");
    let encoder = Encoder::new(&config.sink, &details_topic, &rollups_topic);
    let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
    let context = SinkContext {
        tracker: tracker.clone(),
        events: Mutex::new(Vec::new()),
        metrics: metrics.clone(),
    };
    let consumer: StreamConsumer<SinkContext> = kafka
        .clone()
        .set("group.id", group_id(&config))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        // Consumer lag (outbound_consumer_lag_records) comes from these statistics.
        .set("statistics.interval.ms", "5000")
        .create_with_context(context)
        .context("creating the sink's consumer")?;
    consumer
        .subscribe(&[&details_topic, &rollups_topic])
        .with_context(|| format!("subscribing to {details_topic} and {rollups_topic}"))?;
    info!(
        group = %group_id(&config), url = %config.sink.url, topics = ?[&details_topic, &rollups_topic],
        dead_letters = %dlq_topic, "Elasticsearch sink running"
    );
    let mut sink = SinkLoop {
        batcher: Batcher::new(
            config.sink.batch_max_docs,
            config.sink.batch_max_bytes,
            Duration::from_millis(config.sink.batch_timeout_ms),
        ),
        ready: VecDeque::new(),
        ready_bytes: 0,
        in_flight: JoinSet::new(),
        in_flight_bytes: 0,
        paused: false,
        details: details_topic.as_str().into(),
        rollups: rollups_topic.as_str().into(),
        job: Arc::new(JobContext {
            service,
            dlq,
            specs,
            metrics: metrics.clone(),
            backoff,
            max_attempts: config.sink.retry_max_attempts,
            shutdown: shutdown.clone(),
        }),
        config,
        encoder,
        tracker,
        consumer: Arc::new(consumer),
        metrics,
        shutdown,
    };
    let result = sink.run().await;
    sink.finish(result.is_ok()).await;
    result
}

/// Puts the templates and indices, retrying while the node is unreachable
/// (it may still be starting).
async fn install_until_done(
    service: &BulkService,
    specs: &[IndexSpec],
    backoff: Backoff,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match install(service.client(), specs).await {
            Ok(()) => return Ok(()),
            Err(e) if shutdown.is_requested() => return Err(e),
            Err(e) => {
                let delay = backoff.delay(attempt, rand::random());
                warn!(error = %format!("{e:#}"), url = service.url(), retry_in = ?delay, "installing index templates failed; retrying");
                tokio::time::sleep(delay).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

async fn ensure_topic(
    kafka: &ClientConfig,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        kafka.create().context("creating a Kafka admin client")?;
    let results = admin
        .create_topics(
            // Retention counts from when a record was dead-lettered (append
            // time), not from its source change, which may be long past.
            &[
                NewTopic::new(topic, partitions, TopicReplication::Fixed(replication))
                    .set("message.timestamp.type", "LogAppendTime"),
            ],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .with_context(|| format!("creating topic {topic}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}

/// Rebalance callbacks: commit what is acknowledged before partitions go,
/// and tell the loop which partitions came and went.
struct SinkContext {
    tracker: Arc<Mutex<OffsetTracker>>,
    events: Mutex<Vec<RebalanceEvent>>,
    metrics: Arc<Metrics>,
}

enum RebalanceEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientContext for SinkContext {
    /// Consumer lag of the output topics, every `statistics.interval.ms`.
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.metrics.consumer_lag.record(&statistics);
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
                match consumer.commit(&commit, CommitMode::Sync) {
                    Ok(()) => self.metrics.sink.commits.with_label_values(&["ok"]).inc(),
                    Err(e) => {
                        self.metrics
                            .sink
                            .commits
                            .with_label_values(&["failed"])
                            .inc();
                        warn!(error = %e, "committing acknowledged offsets of revoked partitions failed");
                    }
                }
            }
            let mut tracker = lock(&self.tracker);
            for (t, p) in &parts {
                tracker.forget(t, *p);
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
        match result {
            Ok(()) => self.metrics.sink.commits.with_label_values(&["ok"]).inc(),
            Err(e) => {
                self.metrics
                    .sink
                    .commits
                    .with_label_values(&["failed"])
                    .inc();
                warn!(error = %e, offsets = ?partitions_of(offsets), "sink offset commit failed; the next commit covers it");
            }
        }
    }
}

/// What every batch job shares.
struct JobContext {
    service: BulkService,
    dlq: Arc<DeadLetterProducer>,
    specs: Arc<Vec<IndexSpec>>,
    metrics: Arc<Metrics>,
    backoff: Backoff,
    max_attempts: u32,
    shutdown: Shutdown,
}

/// How a batch job ended.
enum JobError {
    /// Shutdown while retrying: not acknowledged, sent again next run.
    Aborted,
    Fatal(anyhow::Error),
}

struct JobDone {
    batch_id: u64,
    bytes: usize,
    result: Result<(), JobError>,
}

impl JobContext {
    /// Sends the batch until every item is acknowledged or dead-lettered.
    async fn process(self: Arc<Self>, mut batch: Batch) -> JobDone {
        let result = self.deliver(&mut batch).await;
        JobDone {
            batch_id: batch.id,
            bytes: batch.bytes,
            result,
        }
    }

    async fn deliver(&self, batch: &mut Batch) -> Result<(), JobError> {
        let m = &self.metrics.sink;
        let items = &batch.items;
        let mut letters = std::mem::take(&mut batch.rejected);
        let mut pending: Vec<usize> = (0..items.len()).collect();
        let mut acked_ts: Vec<i64> = Vec::with_capacity(items.len());
        let mut attempt: u32 = 0;
        while !pending.is_empty() {
            let body = bulk_body(pending.iter().map(|&i| &items[i]));
            match self.service.bulk(body, pending.len()).await {
                Ok((responses, elapsed)) => {
                    m.bulk_seconds.observe(elapsed.as_secs_f64());
                    m.requests.with_label_values(&["ok"]).inc();
                    let mut retry = Vec::new();
                    let mut reinstall = false;
                    for (&i, response) in pending.iter().zip(&responses) {
                        match classify_item(response) {
                            ItemOutcome::Done(result) => {
                                m.items.with_label_values(&[result]).inc();
                                if let Some(ts) = items[i].timestamp_ms {
                                    acked_ts.push(ts);
                                }
                            }
                            ItemOutcome::Retry(reason) => {
                                m.retries.with_label_values(&[reason]).inc();
                                retry.push(i);
                            }
                            ItemOutcome::RetryAfterInstall => {
                                m.retries.with_label_values(&["index_missing"]).inc();
                                reinstall = true;
                                retry.push(i);
                            }
                            ItemOutcome::Reject {
                                status,
                                error_type,
                                reason,
                            } => {
                                m.items.with_label_values(&["rejected"]).inc();
                                m.rejections.with_label_values(&[&error_type]).inc();
                                letters
                                    .push(rejected_letter(&items[i], status, error_type, reason));
                            }
                        }
                    }
                    if !retry.is_empty() {
                        warn!(
                            batch = batch.id, retrying = retry.len(), of = pending.len(), attempt,
                            first = %items[retry[0]].origin, "bulk items to retry"
                        );
                    }
                    pending = retry;
                    if reinstall {
                        if let Err(e) = install(self.service.client(), &self.specs).await {
                            warn!(error = %format!("{e:#}"), "re-installing missing indices failed");
                        }
                    }
                }
                Err(e) if e.is_retryable() => {
                    m.requests.with_label_values(&["retry"]).inc();
                    m.retries.with_label_values(&[e.label()]).inc();
                    warn!(
                        batch = batch.id, documents = pending.len(), attempt, error = %e,
                        first = %items[pending[0]].origin, "bulk request failed; retrying"
                    );
                }
                Err(e) => {
                    m.requests.with_label_values(&["fatal"]).inc();
                    return Err(JobError::Fatal(anyhow::anyhow!(
                        "bulk request of batch {} ({} documents, first {} → {}/{}): {e}",
                        batch.id,
                        pending.len(),
                        items[pending[0]].origin,
                        items[pending[0]].index,
                        items[pending[0]].id
                    )));
                }
            }
            if pending.is_empty() {
                break;
            }
            attempt = attempt.saturating_add(1);
            if self.max_attempts > 0 && attempt >= self.max_attempts {
                return Err(JobError::Fatal(anyhow::anyhow!(
                    "batch {}: {} documents still not acknowledged by {} after {attempt} attempts \
                     (sink.retry_max_attempts); first {} → {}/{}",
                    batch.id,
                    pending.len(),
                    self.service.url(),
                    items[pending[0]].origin,
                    items[pending[0]].index,
                    items[pending[0]].id
                )));
            }
            let delay = self.backoff.delay(attempt - 1, rand::random());
            let until = Instant::now() + delay;
            while Instant::now() < until {
                if self.shutdown.is_requested() {
                    return Err(JobError::Aborted);
                }
                tokio::time::sleep(
                    until
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(100)),
                )
                .await;
            }
        }
        if !letters.is_empty() {
            self.dlq.send_all(&letters).await.map_err(JobError::Fatal)?;
        }
        let now_ms = chrono_now_ms();
        let e2e = self.metrics.end_to_end_seconds.with_label_values(&["sink"]);
        for ts in acked_ts {
            e2e.observe((now_ms - ts).max(0) as f64 / 1000.0);
        }
        Ok(())
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn rejected_letter(item: &BulkItem, status: u16, error_type: String, reason: String) -> DeadLetter {
    DeadLetter {
        origin: item.origin.clone(),
        key: Some(item.key.to_vec()),
        value: item.source().map(<[u8]>::to_vec),
        timestamp_ms: item.timestamp_ms,
        error_type,
        reason,
        index: Some(item.index.to_string()),
        id: Some(item.id.clone()),
        status: Some(status),
    }
}

struct SinkLoop {
    config: Config,
    encoder: Encoder,
    batcher: Batcher,
    /// Closed batches waiting for a free request slot, in order.
    ready: VecDeque<Batch>,
    ready_bytes: usize,
    in_flight: JoinSet<JobDone>,
    in_flight_bytes: usize,
    paused: bool,
    details: Arc<str>,
    rollups: Arc<str>,
    job: Arc<JobContext>,
    tracker: Arc<Mutex<OffsetTracker>>,
    consumer: Arc<StreamConsumer<SinkContext>>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
}

impl SinkLoop {
    fn held_bytes(&self) -> usize {
        self.batcher.bytes() + self.ready_bytes + self.in_flight_bytes
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_consumer_error: Option<Instant> = None;
        let consumer = self.consumer.clone();
        while !self.shutdown.is_requested() {
            self.metrics.liveness.beat("sink");
            self.apply_rebalance_events();
            self.dispatch();
            self.apply_backpressure();
            self.metrics
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
                        if let Some(closed) = self.accept(&m) {
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
                _ = tick.tick() => {}
            }
            self.commit(CommitMode::Async);
        }
        Ok(())
    }

    /// Encodes one record into the open batch; returns the batch it closed.
    fn accept(&mut self, m: &BorrowedMessage<'_>) -> Option<Batch> {
        let topic = if m.topic() == &*self.details {
            self.details.clone()
        } else if m.topic() == &*self.rollups {
            self.rollups.clone()
        } else {
            Arc::from(m.topic())
        };
        let output = if topic == self.details {
            "details"
        } else {
            "rollups"
        };
        self.metrics
            .sink
            .records_in
            .with_label_values(&[output])
            .inc();
        let origin = Origin {
            topic,
            partition: m.partition(),
            offset: m.offset(),
        };
        let timestamp_ms = m.timestamp().to_millis();
        let now = Instant::now();
        match self
            .encoder
            .encode(origin.clone(), m.key(), m.payload(), timestamp_ms)
        {
            Ok(item) => self.batcher.push(item, now),
            Err(e) => {
                self.metrics
                    .sink
                    .rejections
                    .with_label_values(&[e.kind()])
                    .inc();
                let letter = DeadLetter {
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
                self.batcher.push_rejected(letter, now)
            }
        }
    }

    /// Queues a closed batch and registers its offsets, in consumption order.
    fn close(&mut self, batch: Batch) {
        lock(&self.tracker).dispatched(batch.id, &batch.last_offsets);
        self.ready_bytes += batch.bytes;
        self.ready.push_back(batch);
    }

    fn dispatch(&mut self) {
        while self.in_flight.len() < self.config.sink.max_in_flight_requests {
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
            self.in_flight.spawn(self.job.clone().process(batch));
        }
    }

    fn completed(&mut self, done: JobDone) -> anyhow::Result<()> {
        self.in_flight_bytes -= done.bytes;
        match done.result {
            Ok(()) => {
                lock(&self.tracker).acknowledged(done.batch_id);
                Ok(())
            }
            Err(JobError::Aborted) => Ok(()),
            Err(JobError::Fatal(e)) => Err(e),
        }
    }

    /// Pauses every assigned partition at the memory limit; resumes at half.
    fn apply_backpressure(&mut self) {
        let held = self.held_bytes();
        let limit = self.config.sink.max_in_flight_bytes;
        let want_paused = if self.paused {
            held > limit / 2
        } else {
            held >= limit
        };
        if want_paused == self.paused {
            return;
        }
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let result = if want_paused {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) => {
                self.paused = want_paused;
                self.metrics.sink.paused.set(i64::from(want_paused));
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

    fn apply_rebalance_events(&mut self) {
        let events = std::mem::take(&mut *lock(&self.consumer.context().events));
        for event in events {
            match event {
                RebalanceEvent::Assigned(parts) => {
                    info!(partitions = ?parts, "sink partitions assigned");
                    if self.paused {
                        let mut tpl = TopicPartitionList::new();
                        for (t, p) in &parts {
                            tpl.add_partition(t, *p);
                        }
                        if let Err(e) = self.consumer.pause(&tpl) {
                            warn!(error = %e, "pausing newly assigned partitions failed");
                        }
                    }
                }
                RebalanceEvent::Revoked(parts) => {
                    info!(partitions = ?parts, "sink partitions revoked")
                }
            }
        }
    }

    fn commit(&mut self, mode: CommitMode) {
        let offsets = lock(&self.tracker).take_commits();
        if offsets.is_empty() {
            return;
        }
        // Only partitions still assigned: a partition lost in a rebalance is
        // its new owner's to commit.
        let assigned = self.consumer.assignment().unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in &offsets {
            if assigned.find_partition(t, *p).is_some() {
                let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            self.metrics
                .sink
                .commits
                .with_label_values(&["failed"])
                .inc();
            warn!(error = %e, "committing sink offsets failed; the next commit covers them");
        } else if matches!(mode, CommitMode::Sync) {
            self.metrics.sink.commits.with_label_values(&["ok"]).inc();
        }
    }

    /// On shutdown: send what is buffered, wait a grace period for in-flight
    /// batches, commit what Elasticsearch acknowledged, leave the group.
    async fn finish(&mut self, clean: bool) {
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
        self.commit(CommitMode::Sync);
        self.consumer.unsubscribe();
        info!("Elasticsearch sink stopped");
    }
}
