//! The stream thread (Kafka Streams' `StreamThread`): one consumer in the
//! app's group, one transactional producer, and the tasks of the partitions
//! the group gives it. Its loop:
//!
//! 1. take what the rebalance callbacks recorded (they only record: no
//!    commit, no store, no broker request runs inside one) and hand it to
//!    the task manager;
//! 2. let the task manager open, check and restore tasks;
//! 3. poll a burst of records and process each into the record collector;
//! 4. every `kafka.commit_interval_ms`, commit: the collected records, the
//!    tasks' changelog records and the consumed offsets in one transaction,
//!    then apply the tasks' writes to their stores.
//!
//! A Kafka transaction is open only inside step 4, so a rebalance never
//! finds one open. Partitions revoked or lost with records of the
//! uncommitted batch take that batch with them (it is dropped and the
//! partitions still owned rewound): what was consumed from a partition may
//! only be committed while the partition is ours, and a commit whose group
//! generation is not the one of our last assignment is never sent (after a
//! lost assignment librdkafka's is -1, which the coordinator would not fence).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use outbound_pipeline::config::PipelineConfig;
use outbound_state::{StoreResources, WriteBuffer};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientContext, Message, Offset, Statistics, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::failpoints;
use super::librdkafka::group_generation;
use super::processors::{Context as ProcessContext, Input, ProcessError};
use super::progress::InputProgress;
use super::purge::Purger;
use super::record_collector::{Limits, Record, RecordCollector};
use super::state_manager::StateDirectory;
use super::task::TaskState;
use super::task_manager::{Changes, Partition, TaskManager};
use super::topics::{self, Topics};
use super::topology::{Output, Stage, SOURCE};
use super::transaction::{fenced_by_twin, Transactions, TxnError, PRODUCER_MAX_BYTES};
use crate::config::Config;
use crate::metrics::{Metrics, ThreadStatus};
use crate::shutdown::Shutdown;

/// What a rebalance callback saw.
#[derive(Debug)]
enum RebalanceEvent {
    Assigned {
        partitions: Vec<Partition>,
        /// The group generation of this assignment.
        generation: Option<i32>,
    },
    Revoked {
        partitions: Vec<Partition>,
        lost: bool,
    },
}

fn partitions(tpl: &TopicPartitionList) -> Vec<Partition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// The consumer's context: records rebalances for the loop.
pub struct ThreadContext {
    events: Arc<Mutex<VecDeque<RebalanceEvent>>>,
    metrics: Arc<Metrics>,
}

impl ClientContext for ThreadContext {
    /// Consumer lag per partition, every `statistics.interval.ms`.
    fn stats(&self, statistics: Statistics) {
        self.metrics.consumer_lag.record(&statistics);
    }
}

impl ConsumerContext for ThreadContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let lost = consumer.assignment_lost();
            self.events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(RebalanceEvent::Revoked {
                    partitions: partitions(tpl),
                    lost,
                });
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let generation = group_generation(consumer.client());
                self.events
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(RebalanceEvent::Assigned {
                        partitions: partitions(tpl),
                        generation,
                    });
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

type ThreadConsumer = BaseConsumer<ThreadContext>;

/// Exponential backoff between retries of a failing step, up to a bound.
struct Backoff {
    next: Duration,
    failures: u32,
    since: Option<Instant>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Backoff {
            next: Self::FIRST,
            failures: 0,
            since: None,
        }
    }

    fn fail(&mut self) -> Duration {
        self.failures += 1;
        self.since.get_or_insert_with(Instant::now);
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    fn reset(&mut self) {
        *self = Self::new();
    }

    /// Failing for a while: worth reporting unhealthy.
    fn persistent(&self) -> bool {
        self.failures >= 3
            || self
                .since
                .is_some_and(|t| t.elapsed() > Duration::from_secs(30))
    }
}

pub struct StreamThread {
    name: &'static str,
    config: Config,
    pipeline: PipelineConfig,
    consumer: ThreadConsumer,
    producer: Transactions,
    topics: Topics,
    tasks: TaskManager,
    collector: RecordCollector,
    /// Per input partition, the offsets processed since the last commit
    /// (what the commit sends as consumed offsets) and committed.
    progress: InputProgress,
    events: Arc<Mutex<VecDeque<RebalanceEvent>>>,
    /// The generation of the last assignment.
    generation: Option<i32>,
    last_commit: Instant,
    backoff: Backoff,
    purger: Purger,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    last_housekeeping: Instant,
}

/// Most records processed between two looks at the rebalance events and
/// the commit clock.
const BURST: usize = 2_000;
/// Appended records (rekey changes, dead letters) held before they are sent
/// ahead of the commit, in the open transaction.
const SEND_EARLY_AT: usize = 256;

impl StreamThread {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &'static str,
        transactional_id: &str,
        config: &Config,
        pipeline: PipelineConfig,
        topics: Topics,
        dirs: Arc<StateDirectory>,
        resources: Arc<StoreResources>,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        let events = Arc::new(Mutex::new(VecDeque::new()));
        let mut cc = config.client_config();
        cc.set("group.id", config.group_id())
            .set("client.id", format!("{}-{name}", config.transactional_id()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            // Pick up source topics Debezium creates after we start.
            .set("topic.metadata.refresh.interval.ms", "5000")
            // Bound the prefetch so a backlog on one stage's input does not hide
            // another stage's records behind tens of megabytes of queue.
            .set("queued.max.messages.kbytes", "8192")
            // librdkafka checks that bound (and queued.min.messages) against
            // the consumer's one queue, which every partition forwards to,
            // and a partition over it is not fetched again for
            // fetch.queue.backoff.ms, 1 s by default: on a backlog the loop
            // would drain the queue and then wait the rest of that second.
            .set("fetch.queue.backoff.ms", "20")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            // Consumer lag (outbound_consumer_lag_records) comes from these statistics.
            .set("statistics.interval.ms", "5000");
        for (k, v) in &config.kafka.properties {
            cc.set(k, v);
        }
        let consumer: ThreadConsumer = cc
            .create_with_context(ThreadContext {
                events: events.clone(),
                metrics: metrics.clone(),
            })
            .context("creating the stream consumer")?;
        let producer = Transactions::new(config, transactional_id)?;
        let tasks = TaskManager::new(
            config,
            topics.clone(),
            name,
            dirs,
            resources,
            metrics.clone(),
        )?;
        // The brokers may be slow to answer, or not know topics created a
        // moment ago: retry a while, then go on with the broker's default
        // limits (read again when a topic refuses a record).
        let mut facts = None;
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=6 {
            match topics::describe(tasks.reader().client(), config, &topics.written()) {
                Ok(f) if f.max_bytes.len() == topics.written().len() => {
                    facts = Some(f);
                    break;
                }
                Ok(f) => {
                    warn!(
                        thread = name,
                        attempt,
                        known = f.max_bytes.len(),
                        "not every topic the stream stages write is described yet; retrying"
                    );
                    facts = Some(f);
                }
                Err(e) => {
                    warn!(thread = name, attempt, error = %format!("{e:#}"), "reading the settings of the topics the stream stages write; retrying")
                }
            }
            if shutdown.is_requested() {
                break;
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        let facts = facts.unwrap_or_default();
        let limits = Limits::new(
            &topics,
            |t| facts.max_bytes.get(t).copied(),
            PRODUCER_MAX_BYTES,
        );
        Ok(StreamThread {
            name,
            config: config.clone(),
            pipeline,
            consumer,
            producer,
            topics,
            tasks,
            collector: RecordCollector::new(limits),
            progress: InputProgress::default(),
            events,
            generation: None,
            last_commit: Instant::now(),
            backoff: Backoff::new(),
            purger: Purger::new(config)?,
            metrics,
            shutdown,
            last_housekeeping: Instant::now(),
        })
    }

    /// Runs until shutdown or a fatal error.
    pub fn run(mut self) -> anyhow::Result<()> {
        let mut subscriptions: Vec<String> = self.topics.sources.clone();
        for stage in Stage::ALL {
            subscriptions.push(self.topics.input(stage).to_owned());
        }
        let refs: Vec<&str> = subscriptions.iter().map(String::as_str).collect();
        self.consumer.subscribe(&refs).context("subscribing")?;
        info!(thread = self.name, group = %self.config.group_id(), transactional_id = %self.producer.transactional_id, topics = ?subscriptions, "stream thread running");
        self.metrics.liveness.beat(self.name);
        let result = self.run_loop();
        let result = match result {
            Ok(()) => self.close(),
            Err(e) => {
                error!(thread = self.name, error = %format!("{e:#}"), "stream thread stopping on a fatal error");
                self.metrics.liveness.fail(self.name, &format!("{e:#}"));
                let _ = self.producer.abort(Instant::now() + Duration::from_secs(5));
                self.tasks.close_all(false);
                Err(e)
            }
        };
        self.report_tasks();
        // Leave the group now rather than at session timeout.
        self.consumer.unsubscribe();
        info!(thread = self.name, "stream thread stopped");
        result
    }

    fn run_loop(&mut self) -> anyhow::Result<()> {
        while !self.shutdown.is_requested() {
            self.handle_rebalances()?;
            if self.producer.is_open() && self.tasks.has_pending_init() {
                // Initialising makes broker requests that may take longer
                // than a transaction may stay open: end the open one first.
                self.commit(Instant::now() + Duration::from_secs(60))?;
            }
            let changes = self.tasks.initialize(&self.consumer)?;
            self.apply_changes(&changes)?;
            let changes = self.tasks.restore()?;
            self.apply_changes(&changes)?;
            self.poll_burst()?;
            if self.commit_due() {
                // Once per commit interval, not per record.
                self.metrics.liveness.beat(self.name);
                self.commit(Instant::now() + Duration::from_secs(60))?;
                self.housekeeping();
            }
        }
        Ok(())
    }

    fn apply_changes(&self, changes: &Changes) -> anyhow::Result<()> {
        let tpl = |parts: &[Partition]| {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in parts {
                tpl.add_partition(t, *p);
            }
            tpl
        };
        if !changes.pause.is_empty() {
            self.consumer
                .pause(&tpl(&changes.pause))
                .context("pausing the inputs of tasks not running")?;
        }
        if !changes.resume.is_empty() {
            self.consumer
                .resume(&tpl(&changes.resume))
                .context("resuming the inputs of tasks now running")?;
        }
        if !changes.pause.is_empty() || !changes.resume.is_empty() {
            self.report_tasks();
        }
        Ok(())
    }

    /// Hands what the rebalance callbacks recorded to the task manager.
    fn handle_rebalances(&mut self) -> anyhow::Result<()> {
        loop {
            let Some(event) = self
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            else {
                return Ok(());
            };
            match event {
                RebalanceEvent::Revoked { partitions, lost } => {
                    self.metrics
                        .rebalances
                        .with_label_values(&[if lost { "lost" } else { "revoke" }])
                        .inc();
                    let touched = self.progress.touches(&partitions);
                    if lost || touched {
                        // Records of these partitions are in the batch, and
                        // the partitions are no longer ours to commit for.
                        let why = if lost {
                            "partitions lost"
                        } else {
                            "partitions revoked"
                        };
                        warn!(
                            thread = self.name,
                            why,
                            batch = self.progress.len(),
                            "dropping the uncommitted batch"
                        );
                        self.discard_batch(&partitions)?;
                    }
                    info!(
                        thread = self.name,
                        partitions = partitions.len(),
                        lost,
                        "partitions revoked"
                    );
                    self.tasks.revoke(&partitions, !lost);
                    self.progress.forget(&partitions);
                    if lost {
                        self.generation = None;
                    }
                }
                RebalanceEvent::Assigned {
                    partitions,
                    generation,
                } => {
                    self.metrics.rebalances.with_label_values(&["assign"]).inc();
                    self.generation = generation;
                    info!(
                        thread = self.name,
                        partitions = partitions.len(),
                        generation,
                        "partitions assigned"
                    );
                    let changes = self.tasks.assign(&partitions, &mut self.producer);
                    self.apply_changes(&changes)?;
                }
            }
            self.report_tasks();
        }
    }

    /// Polls a burst of records and processes them.
    fn poll_burst(&mut self) -> anyhow::Result<()> {
        let until_commit = Duration::from_millis(self.config.kafka.commit_interval_ms)
            .saturating_sub(self.last_commit.elapsed());
        let mut wait = if self.tasks.is_restoring() {
            Duration::ZERO
        } else {
            until_commit.min(Duration::from_millis(50))
        };
        let started = Instant::now();
        for _ in 0..BURST {
            let message = match self.consumer.poll(wait) {
                None => break,
                Some(Err(e)) => {
                    warn!(thread = self.name, error = %e, "consumer error");
                    break;
                }
                Some(Ok(m)) => m,
            };
            wait = Duration::ZERO;
            if !self
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                // The poll ran a rebalance callback: the task manager hears
                // of it first, and this record is read again afterwards.
                let (topic, partition, offset) = (
                    message.topic().to_owned(),
                    message.partition(),
                    message.offset(),
                );
                drop(message);
                if let Err(e) = self.consumer.seek(
                    &topic,
                    partition,
                    Offset::Offset(offset),
                    Duration::from_secs(10),
                ) {
                    warn!(%topic, partition, error = %e, "rewinding a record fetched across a rebalance");
                }
                break;
            }
            process(
                &self.pipeline,
                &self.topics,
                &mut self.tasks,
                &mut self.collector,
                &mut self.progress,
                &self.consumer,
                &self.metrics,
                &message,
            )?;
            if self.collector.appends_len() >= SEND_EARLY_AT
                && !self.tasks.is_restoring()
                && !self.tasks.has_pending_init()
                && !self.send_appends_now()?
            {
                break;
            }
            // Rebalance events and the commit clock are looked at between bursts.
            if !self
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
                || started.elapsed() >= until_commit
            {
                break;
            }
        }
        Ok(())
    }

    /// Sends the appended records ahead of the commit, in the transaction
    /// they open (or find open): their production overlaps the processing
    /// instead of lengthening the commit. False when the send failed and
    /// the batch was dropped.
    fn send_appends_now(&mut self) -> anyhow::Result<bool> {
        let topics = &self.topics;
        let records: Vec<(String, Record)> = self
            .collector
            .take_appends()
            .into_iter()
            .map(|r| (topics.output(r.output).to_owned(), r))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        match self.producer.send_now(&records, deadline) {
            Ok(()) => Ok(true),
            Err(e) => {
                self.on_commit_failure(e)?;
                Ok(false)
            }
        }
    }

    fn commit_due(&self) -> bool {
        self.last_commit.elapsed() >= Duration::from_millis(self.config.kafka.commit_interval_ms)
            || self.collector.len() >= 200_000
    }

    /// Whether a commit now would carry the group generation of our last
    /// assignment. After a lost assignment librdkafka's generation is -1 and
    /// a transactional offset commit at -1 is accepted unfenced: a zombie
    /// could commit for partitions another instance owns.
    fn generation_current(&self) -> bool {
        match (self.generation, group_generation(self.consumer.client())) {
            (Some(ours), Some(now)) => ours >= 0 && ours == now && !self.consumer.assignment_lost(),
            _ => false,
        }
    }

    /// Commits the batch: the collected records, the tasks' changelog
    /// records and the consumed offsets in one transaction, then applies
    /// the tasks' writes with the changelog offsets they reached.
    fn commit(&mut self, deadline: Instant) -> anyhow::Result<()> {
        self.last_commit = Instant::now();
        let empty_buffers = self.tasks.tasks().all(|t| t.buffer.is_empty());
        if self.progress.is_empty()
            && self.collector.is_empty()
            && empty_buffers
            && !self.producer.is_open()
        {
            return Ok(());
        }
        if !self.generation_current() {
            warn!(
                thread = self.name,
                "the assignment is lost or changing: dropping the batch instead of committing it"
            );
            return self.discard_batch(&[]);
        }
        let Some(group) = self.consumer.group_metadata() else {
            return self.discard_batch(&[]);
        };
        // The metadata fetched must carry the same generation.
        if !self.generation_current() {
            return self.discard_batch(&[]);
        }
        let topics = &self.topics;
        let records: Vec<(String, Record)> = self
            .collector
            .drain()
            .context("encoding collected records")?
            .into_iter()
            .map(|r| (topics.output(r.output).to_owned(), r))
            .collect();
        let mut changelog = Vec::new();
        for task in self.tasks.tasks() {
            let stage = task.id.stage.def();
            for (key, value) in task
                .buffer
                .changelog_records_where(|_, key| stage.logs(key))
            {
                changelog.push((
                    task.slot,
                    Record {
                        output: Output::Rekey, // unused for changelog records
                        partition: task.changelog.partition,
                        key,
                        value: value.map(<[u8]>::to_vec),
                        timestamp: None,
                        headers: Vec::new(),
                    },
                ));
            }
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in self.progress.batch() {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(next))
                .context("building the consumed offsets")?;
        }
        let result = self
            .producer
            .commit(&records, &changelog, &offsets, &group, deadline, || {
                failpoints::hit(failpoints::AFTER_FLUSH)
            });
        match result {
            Ok(committed) => {
                failpoints::hit(failpoints::BEFORE_APPLY);
                self.tasks.apply(&committed)?;
                self.metrics
                    .transactions
                    .with_label_values(&["committed"])
                    .inc();
                self.metrics
                    .commit_seconds
                    .observe(committed.duration.as_secs_f64());
                let mut sent = std::mem::take(&mut self.collector.sent_early);
                for (_, r) in &records {
                    sent[r.output as usize] += 1;
                }
                for o in Output::ALL {
                    let n = sent[o as usize];
                    if n > 0 {
                        self.metrics
                            .records_out
                            .with_label_values(&[o.suffix()])
                            .inc_by(n);
                    }
                    let dropped = self.collector.collected[o as usize].saturating_sub(n);
                    if dropped > 0 {
                        self.metrics
                            .records_coalesced
                            .with_label_values(&[o.suffix()])
                            .inc_by(dropped);
                    }
                }
                self.collector.collected = [0; Output::ALL.len()];
                self.metrics
                    .records_out
                    .with_label_values(&["changelog"])
                    .inc_by(changelog.len() as u64);
                let now_ms = chrono::Utc::now().timestamp_millis();
                let e2e = self
                    .metrics
                    .end_to_end_seconds
                    .with_label_values(&["output"]);
                for ts in self.collector.source_times.drain(..) {
                    e2e.observe((now_ms - ts).max(0) as f64 / 1000.0);
                }
                let done = self.progress.commit();
                for ((topic, partition), next) in &done {
                    if self.topics.stage_of(topic).is_some() {
                        self.purger.committed(topic, *partition, *next);
                    }
                    debug!(thread = self.name, %topic, partition, next, "input committed");
                }
                let deltas = done.iter().any(|((topic, _), _)| {
                    self.topics
                        .stage_of(topic)
                        .is_some_and(|stage| stage.def().input == Output::RollupDeltas)
                });
                if deltas && failpoints::due(failpoints::JUMP_BACK) {
                    self.jump_back(&done);
                }
                if self.backoff.failures > 0 {
                    info!(thread = self.name, "committing again after failures");
                    self.metrics.liveness.clear_unhealthy(self.name);
                }
                self.backoff.reset();
                Ok(())
            }
            Err(e) => self.on_commit_failure(e),
        }
    }

    fn on_commit_failure(&mut self, e: TxnError) -> anyhow::Result<()> {
        self.metrics
            .transactions
            .with_label_values(&["aborted"])
            .inc();
        let txn_timeout = Duration::from_millis(self.config.kafka.transaction_timeout_ms);
        match &e {
            TxnError::Fenced {
                open_for,
                trouble_ago,
                ..
            } if fenced_by_twin(*open_for, *trouble_ago, txn_timeout) => {
                // Another producer initialised our transactional id — a
                // newer process with our instance id. The newer one wins.
                anyhow::bail!(
                    "another process took over transactional id `{}` (is a second instance running with \
                     instance id `{}`?); this one stops and leaves its tasks to it: {e}",
                    self.producer.transactional_id,
                    self.config.instance_id
                );
            }
            TxnError::Refused {
                topic,
                partition,
                code,
            } => {
                let permanent_rights = matches!(
                    code,
                    rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed
                        | rdkafka::types::RDKafkaErrorCode::ClusterAuthorizationFailed
                        | rdkafka::types::RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                );
                let inputs: Vec<String> = self
                    .progress
                    .batch()
                    .map(|((t, p), next)| format!("{t}[{p}] before offset {next}"))
                    .collect();
                if permanent_rights || self.backoff.failures > 0 {
                    anyhow::bail!(
                        "{topic}[{partition}] refuses the stream stages' records ({code}) while committing \
                         inputs {}: check the topic's ACLs and max.message.bytes",
                        inputs.join(", ")
                    );
                }
                // The topics' limits may have changed: read them again, and
                // the next attempt dead-letters what no longer fits.
                warn!(thread = self.name, %topic, partition, %code, "a topic refused a record; reading its limits again and retrying");
                self.refresh_limits();
            }
            _ => {}
        }
        let delay = self.backoff.fail();
        if self.backoff.persistent() {
            self.metrics
                .liveness
                .set_unhealthy(self.name, &e.to_string());
        }
        if e.outcome_unknown() {
            // The producer is gone and its last transaction may have
            // committed: every task catches up from its changelog, and the
            // inputs start again from the committed offsets.
            warn!(thread = self.name, error = %e, retry_in = ?delay, "transactional producer failed; closing every task dirty and catching up from the changelogs");
            self.collector.clear();
            let pause = self.tasks.suspend_all();
            self.apply_changes(&Changes {
                pause,
                resume: Vec::new(),
            })?;
            self.rewind()?;
            self.pause_for(delay);
            self.producer = self.new_producer()?;
            // Changelog slots are registered again with the new producer.
            for task in self.tasks.tasks_mut() {
                task.slot = self
                    .producer
                    .register_changelog(&task.changelog.topic, task.changelog.partition);
            }
            self.report_tasks();
        } else {
            warn!(thread = self.name, error = %e, retry_in = ?delay, "transaction aborted; rewinding to the last commit");
            self.collector.clear();
            self.tasks.clear_buffers();
            self.rewind()?;
            self.pause_for(delay);
        }
        Ok(())
    }

    fn refresh_limits(&mut self) {
        let topics = self.topics.clone();
        match topics::describe(
            self.tasks.reader().client(),
            &self.config,
            &topics.written(),
        ) {
            Ok(facts) => {
                self.collector = RecordCollector::new(Limits::new(
                    &topics,
                    |t| facts.max_bytes.get(t).copied(),
                    PRODUCER_MAX_BYTES,
                ));
            }
            Err(e) => warn!(error = %format!("{e:#}"), "reading topic limits"),
        }
    }

    /// A new transactional producer, retried with backoff while the
    /// brokers do not answer (a restart, a stall): never a reason to exit.
    fn new_producer(&mut self) -> anyhow::Result<Transactions> {
        let id = self.producer.transactional_id.clone();
        loop {
            match Transactions::new(&self.config, &id) {
                Ok(p) => return Ok(p),
                Err(e) if !self.shutdown.is_requested() => {
                    let delay = self.backoff.fail();
                    self.metrics
                        .liveness
                        .set_unhealthy(self.name, &format!("{e:#}"));
                    warn!(thread = self.name, error = %format!("{e:#}"), retry_in = ?delay, "starting a new transactional producer");
                    self.pause_for(delay);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits, serving the consumer (heartbeats, rebalances) and beating.
    fn pause_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.shutdown.is_requested() {
            self.metrics.liveness.beat(self.name);
            // Nothing is consumed while paused: every assigned partition is
            // rewound or paused, so poll only serves callbacks.
            let step = until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200));
            std::thread::sleep(step);
        }
    }

    /// The `input.jump_back` failpoint: the stage inputs just committed are
    /// fetched again from their first offset.
    fn jump_back(&self, committed: &[(Partition, i64)]) {
        for ((topic, partition), next) in committed {
            if self.topics.stage_of(topic).is_none() {
                continue;
            }
            warn!(failpoint = failpoints::JUMP_BACK, %topic, partition, committed = next, "failpoint: fetching the partition again from its start");
            if let Err(e) = self.consumer.seek(
                topic,
                *partition,
                Offset::Beginning,
                Duration::from_secs(10),
            ) {
                warn!(%topic, partition, error = %e, "failpoint: seeking back");
            }
        }
    }

    /// Drops the uncommitted batch and rewinds the partitions consumed in it
    /// (except `gone`, no longer ours).
    fn discard_batch(&mut self, gone: &[Partition]) -> anyhow::Result<()> {
        // Records sent ahead of the commit are in an open transaction.
        let aborted = self
            .producer
            .abort(Instant::now() + Duration::from_secs(10));
        self.collector.clear();
        self.tasks.clear_buffers();
        self.progress.forget(gone);
        match aborted {
            Ok(()) => self.rewind(),
            Err(e) => self.on_commit_failure(e),
        }
    }

    /// Seeks every partition consumed since the last commit back to its
    /// committed offset. Without the offsets a rewind cannot happen: a
    /// broker that is slow or restarting comes back, so it is retried.
    fn rewind(&mut self) -> anyhow::Result<()> {
        if self.progress.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), _) in self.progress.batch() {
            tpl.add_partition(topic, *partition);
        }
        let committed = loop {
            match self
                .consumer
                .committed_offsets(tpl.clone(), Duration::from_secs(30))
            {
                // A partition's own error (an offset commit still pending in
                // a transaction, its coordinator moving) comes back with an
                // invalid offset, which is not "nothing committed": ask again.
                Ok(offsets) => match offsets.elements().iter().find_map(|e| e.error().err()) {
                    None => break offsets,
                    Some(e) if !self.shutdown.is_requested() => {
                        let delay = self.backoff.fail();
                        warn!(thread = self.name, error = %e, retry_in = ?delay, "a committed offset to rewind to is not readable yet");
                        self.pause_for(delay);
                    }
                    Some(e) => return Err(e).context("reading committed offsets to rewind"),
                },
                Err(e) if !self.shutdown.is_requested() => {
                    let delay = self.backoff.fail();
                    warn!(thread = self.name, error = %e, retry_in = ?delay, "reading committed offsets to rewind");
                    self.pause_for(delay);
                }
                Err(e) => return Err(e).context("reading committed offsets to rewind"),
            }
        };
        for elem in committed.elements() {
            let to = match elem.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            if let Err(e) =
                self.consumer
                    .seek(elem.topic(), elem.partition(), to, Duration::from_secs(30))
            {
                // Not assigned any more: nothing to rewind.
                warn!(topic = elem.topic(), partition = elem.partition(), error = %e, "rewinding a partition");
            }
        }
        self.progress.drop_batch(&[]);
        Ok(())
    }

    /// Every few seconds: state sizes, checkpoint times, state directory
    /// cleanup, repartition purges.
    fn housekeeping(&mut self) {
        self.purger.maybe_purge();
        if self.last_housekeeping.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last_housekeeping = Instant::now();
        self.tasks.touch_idle();
        self.tasks.sweep_dirs();
        self.report_tasks();
        self.report_state_sizes();
    }

    fn report_tasks(&self) {
        let summary = self.tasks.summary();
        let mut counts = Vec::new();
        for stage in Stage::ALL {
            for state in TaskState::ALL {
                counts.push((
                    stage.name(),
                    state.as_str(),
                    summary.get(&(stage, state)).copied().unwrap_or(0),
                ));
            }
        }
        self.metrics.report_thread(
            self.name,
            ThreadStatus {
                assigned: self.tasks.assigned(),
                not_running: self.tasks.not_running(),
                tasks: counts,
            },
        );
    }

    fn report_state_sizes(&self) {
        for stage in Stage::ALL {
            let (mut keys, mut bytes) = (0u64, 0u64);
            for task in self.tasks.tasks().filter(|t| t.id.stage == stage) {
                if let Some(Ok(stats)) = task.store.as_ref().map(|s| s.stats(stage.def().store.id))
                {
                    keys += stats.estimated_keys;
                    bytes += stats.live_bytes;
                }
            }
            self.metrics
                .state_keys
                .with_label_values(&[stage.name()])
                .set(keys as i64);
            self.metrics
                .state_bytes
                .with_label_values(&[stage.name()])
                .set(bytes as i64);
            let remaining: i64 = self
                .tasks
                .reader()
                .progress()
                .filter(|p| p.task.stage == stage)
                .map(|p| p.remaining())
                .sum();
            self.metrics
                .restore_remaining
                .with_label_values(&[stage.name()])
                .set(remaining);
        }
    }

    /// Shutdown: commit what was processed if that works within the
    /// deadline, else abort; then close every task.
    fn close(&mut self) -> anyhow::Result<()> {
        let deadline =
            Instant::now() + Duration::from_millis(self.config.shutdown_deadline_ms).mul_f64(0.8);
        let committed = if self.generation_current() {
            match self.commit(deadline) {
                Ok(()) => self.progress.is_empty(),
                Err(e) => {
                    warn!(thread = self.name, error = %format!("{e:#}"), "the last commit failed; the uncommitted work will be done again");
                    false
                }
            }
        } else {
            false
        };
        if !committed {
            let _ = self.producer.abort(deadline);
        }
        self.tasks.close_all(committed);
        Ok(())
    }
}

/// Processes one record into the collector and its task's write buffer.
#[allow(clippy::too_many_arguments)]
fn process(
    pipeline: &PipelineConfig,
    topics: &Topics,
    tasks: &mut TaskManager,
    collector: &mut RecordCollector,
    progress: &mut InputProgress,
    consumer: &ThreadConsumer,
    metrics: &Metrics,
    m: &BorrowedMessage<'_>,
) -> anyhow::Result<()> {
    let input = Input {
        topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key(),
        payload: m.payload(),
        timestamp: m.timestamp().to_millis(),
    };
    let stage = topics.stage_of(input.topic);
    let key = (input.topic.to_owned(), input.partition);
    // A stage input's record processed already (see `progress`): never
    // twice. A source topic's offsets may go back for good — the topic
    // deleted and created again, Debezium writing it afresh — and its
    // records are all new then; the internal topics are this app's own.
    let seen = stage.and_then(|st| Some((st, progress.seen(&key, input.offset)?)));
    if let Some((seen_in, done)) = seen {
        if progress.skipped(&key) {
            warn!(
            topic = input.topic,
            partition = input.partition,
            offset = input.offset,
            processed_up_to = done,
            "a record this thread already processed was fetched again; skipping it and the ones after it up to the offset processed"
        );
        }
        metrics
            .records_refetched
            .with_label_values(&[seen_in.name()])
            .inc();
        return Ok(());
    }
    collector.begin_record();
    let result = match stage {
        Some(stage) => {
            let Some(task) = tasks.get_mut(stage, input.partition) else {
                return Ok(()); // fetched before a revocation: no longer ours
            };
            if task.state != TaskState::Running {
                // Fetched before the pause took effect: read it again later.
                consumer
                    .seek(
                        input.topic,
                        input.partition,
                        Offset::Offset(input.offset),
                        Duration::from_secs(10),
                    )
                    .with_context(|| {
                        format!(
                            "rewinding {}[{}] to {}",
                            input.topic, input.partition, input.offset
                        )
                    })?;
                return Ok(());
            }
            task.buffer.begin_record();
            let mut ctx = ProcessContext {
                pipeline,
                topics,
                out: collector,
                metrics,
            };
            let r = {
                let mut state = task.state()?;
                (stage.def().process)(&mut ctx, &mut state, &input)
            };
            r.and_then(|()| changelog_fits(&task.buffer, stage, ctx.out))
                .map_err(|e| {
                    if matches!(e, ProcessError::TooLarge(_)) {
                        task.buffer.rollback_record();
                    }
                    e
                })
        }
        None => {
            let mut ctx = ProcessContext {
                pipeline,
                topics,
                out: collector,
                metrics,
            };
            (SOURCE.process)(&mut ctx, &input)
        }
    };
    match result {
        Ok(()) => {}
        Err(ProcessError::TooLarge(e)) => {
            collector.rollback_record();
            let mut ctx = ProcessContext {
                pipeline,
                topics,
                out: collector,
                metrics,
            };
            ctx.dead_letter(&input, "record_too_large", &e.to_string());
        }
        Err(ProcessError::Store(e)) => {
            return Err(anyhow::Error::new(e)).with_context(|| {
                format!(
                    "state failure processing {}[{}] offset {}",
                    input.topic, input.partition, input.offset
                )
            })
        }
    }
    progress.processed(key, input.offset + 1);
    Ok(())
}

/// Whether the changelog record of the largest write the record made fits
/// its changelog topic.
fn changelog_fits(
    buffer: &WriteBuffer,
    stage: Stage,
    out: &RecordCollector,
) -> Result<(), ProcessError> {
    // The changelog key is the store key with one more byte.
    Ok(out
        .limits()
        .check_changelog(stage, buffer.largest_write() + 1)?)
}
