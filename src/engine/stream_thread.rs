//! The stream loop (Kafka Streams' `StreamThread` + `TaskManager`): one
//! consumer in the app's group reads the source topics and the inputs of the
//! stateful stages; every record is processed into the open transaction; the
//! transaction commits every `kafka.commit_interval_ms` with the consumed
//! offsets; task stores apply their writes only after that commit succeeds.
//!
//! Rebalances run inside `poll` through [`EngineContext`]: before partitions
//! are revoked the open transaction is committed (or aborted), and newly
//! assigned stateful partitions are paused until their stores are restored.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use outbound_pipeline::config::PipelineConfig;
use outbound_state::{
    ChangelogPartition, OpenOutcome, StoreResources, StoreTuning, TaskStore, WriteBuffer,
};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, Statistics, TopicPartitionList};
use tracing::{error, info, warn};

use super::processors::{self, Output, ProcessError};
use super::purge::Purger;
use super::restore::{RestoreStart, Restorer};
use super::task::{store_spec, StreamTask, TaskStatus};
use super::topology::{Stage, Topics};
use super::transaction::{Committed, Transactions, TxnError};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

pub struct Core {
    config: Config,
    pipeline: PipelineConfig,
    topics: Topics,
    txn: Transactions,
    restorer: Restorer,
    purger: Purger,
    resources: StoreResources,
    tasks: BTreeMap<(Stage, i32), StreamTask>,
    /// Next offset per input partition, for records processed in the open
    /// transaction (what the commit sends as consumed offsets).
    positions: HashMap<(String, i32), i64>,
    /// Partitions this instance holds (sources and stage inputs): not ready
    /// while it holds none.
    assigned: usize,
    /// When the transactional producer was last replaced after failing.
    recoveries: Vec<Instant>,
    last_commit: Instant,
    /// Source timestamps of final outputs in the open transaction.
    source_times: Vec<i64>,
    metrics: Arc<Metrics>,
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs rebalances on the stream loop's thread, inside `poll`.
pub struct EngineContext {
    core: Arc<Mutex<Core>>,
    failure: Arc<Mutex<Option<anyhow::Error>>>,
    metrics: Arc<Metrics>,
}

impl ClientContext for EngineContext {
    /// Consumer lag per partition, every `statistics.interval.ms`.
    fn stats(&self, statistics: Statistics) {
        self.metrics.consumer_lag.record(&statistics);
    }
}

impl ConsumerContext for EngineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let result = lock(&self.core).on_revoke(consumer, tpl);
            if let Err(e) = result {
                error!(error = %format!("{e:#}"), "handling a partition revocation");
                *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let result = match rebalance {
            Rebalance::Assign(tpl) => lock(&self.core).on_assign(consumer, tpl),
            Rebalance::Revoke(_) => Ok(()),
            Rebalance::Error(e) => {
                warn!(error = %e, "rebalance error");
                Ok(())
            }
        };
        if let Err(e) = result {
            error!(error = %format!("{e:#}"), "handling a partition assignment");
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
        }
    }
}

type EngineConsumer = BaseConsumer<EngineContext>;

impl Core {
    fn state_dir(&self, stage: Stage, partition: i32) -> PathBuf {
        self.config
            .state
            .dir
            .join(&self.config.app_id)
            .join(format!("{}-{partition}", stage.name()))
    }

    fn on_assign(
        &mut self,
        consumer: &EngineConsumer,
        tpl: &TopicPartitionList,
    ) -> anyhow::Result<()> {
        self.metrics.rebalances.with_label_values(&["assign"]).inc();
        self.assigned += tpl.count();
        let mut paused = TopicPartitionList::new();
        for elem in tpl.elements() {
            let Some(stage) = self.topics.stage_of(elem.topic()) else {
                continue;
            };
            let partition = elem.partition();
            if self.tasks.contains_key(&(stage, partition)) {
                continue;
            }
            let changelog = self.topics.changelog(stage);
            let dir = self.state_dir(stage, partition);
            let (store, outcome) = TaskStore::open(
                &dir,
                ChangelogPartition {
                    topic: changelog.clone(),
                    partition,
                },
                &[store_spec(stage)],
                &self.resources,
            )
            .with_context(|| format!("opening the state of task {}-{partition}", stage.name()))?;
            match &outcome {
                OpenOutcome::Created => {
                    info!(task = %format!("{}-{partition}", stage.name()), "no local state: full restore")
                }
                OpenOutcome::Resumed { next_offset } => {
                    info!(task = %format!("{}-{partition}", stage.name()), next_offset, "local state found: restoring the changelog tail")
                }
                OpenOutcome::Rebuilt { reason } => {
                    warn!(task = %format!("{}-{partition}", stage.name()), %reason, "local state rebuilt: full restore");
                    self.metrics
                        .state_rebuilds
                        .with_label_values(&[stage.name()])
                        .inc();
                }
            }
            let mut store = Some(store);
            let status = match self.restorer.start(&mut store, &self.resources)? {
                RestoreStart::UpToDate => TaskStatus::Running,
                RestoreStart::Started => {
                    paused.add_partition(elem.topic(), partition);
                    TaskStatus::Restoring
                }
            };
            self.tasks.insert(
                (stage, partition),
                StreamTask {
                    stage,
                    partition,
                    changelog,
                    store,
                    buffer: WriteBuffer::new(),
                    status,
                },
            );
        }
        if paused.count() > 0 {
            consumer
                .pause(&paused)
                .context("pausing partitions while their state restores")?;
        }
        self.publish_task_metrics();
        Ok(())
    }

    fn on_revoke(
        &mut self,
        consumer: &EngineConsumer,
        tpl: &TopicPartitionList,
    ) -> anyhow::Result<()> {
        self.metrics.rebalances.with_label_values(&["revoke"]).inc();
        self.assigned = self.assigned.saturating_sub(tpl.count());
        // Finish the open transaction while the partitions are still ours.
        self.commit(consumer)?;
        for elem in tpl.elements() {
            self.positions
                .remove(&(elem.topic().to_owned(), elem.partition()));
            let Some(stage) = self.topics.stage_of(elem.topic()) else {
                continue;
            };
            if let Some(task) = self.tasks.remove(&(stage, elem.partition())) {
                self.restorer.cancel(&task.changelog, task.partition);
                info!(task = %format!("{}-{}", stage.name(), task.partition), "task closed (partition revoked)");
            }
        }
        self.publish_task_metrics();
        Ok(())
    }

    /// Moves restoring tasks forward; resumes the input of those done.
    fn restore_step(&mut self, consumer: &EngineConsumer) -> anyhow::Result<()> {
        if self.restorer.is_idle() {
            return Ok(());
        }
        let topics = &self.topics;
        let tasks = &mut self.tasks;
        let metrics = &self.metrics;
        let done = self.restorer.step(&mut |topic, partition, records, next| {
            let Some(stage) = Stage::ALL
                .into_iter()
                .find(|s| topics.changelog(*s) == topic)
            else {
                return Ok(());
            };
            if let Some(store) = tasks
                .get_mut(&(stage, partition))
                .and_then(|t| t.store.as_mut())
            {
                store.restore_batch(records, next)?;
                metrics
                    .restored_records
                    .with_label_values(&[stage.name()])
                    .inc_by(records.len() as u64);
            }
            Ok(())
        })?;
        if done.is_empty() {
            return Ok(());
        }
        let mut resume = TopicPartitionList::new();
        for (topic, partition) in done {
            let Some(stage) = Stage::ALL
                .into_iter()
                .find(|s| self.topics.changelog(*s) == topic)
            else {
                continue;
            };
            if let Some(task) = self.tasks.get_mut(&(stage, partition)) {
                task.status = TaskStatus::Running;
                resume.add_partition(self.topics.input(stage), partition);
            }
        }
        consumer
            .resume(&resume)
            .context("resuming restored partitions")?;
        self.publish_task_metrics();
        Ok(())
    }

    fn process(
        &mut self,
        consumer: &EngineConsumer,
        m: &BorrowedMessage<'_>,
    ) -> anyhow::Result<()> {
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let mut out = Output {
            txn: &mut self.txn,
            topics: &self.topics,
            metrics: &self.metrics,
            source_times: &mut self.source_times,
        };
        let result = match self.topics.stage_of(topic) {
            Some(stage) => {
                let Some(task) = self.tasks.get_mut(&(stage, partition)) else {
                    return Ok(()); // fetched before a revocation: no longer ours
                };
                if task.status != TaskStatus::Running {
                    // Fetched before the pause took effect: read it again later.
                    consumer
                        .seek(
                            topic,
                            partition,
                            Offset::Offset(offset),
                            Duration::from_secs(10),
                        )
                        .with_context(|| format!("rewinding {topic}[{partition}] to {offset}"))?;
                    return Ok(());
                }
                processors::stateful(&self.pipeline, task, &mut out, m)
            }
            None => processors::rekey(&self.pipeline, &mut out, m),
        };
        match result {
            Ok(()) => {
                self.positions
                    .insert((topic.to_owned(), partition), offset + 1);
                Ok(())
            }
            Err(ProcessError::Txn(TxnError::Aborted(reason))) => {
                warn!(%reason, "transaction failed while processing; rewinding");
                self.rewind(consumer)
            }
            Err(ProcessError::Txn(TxnError::Fatal(reason))) => self.recover(consumer, &reason),
            Err(ProcessError::Store(e)) => Err(anyhow::Error::new(e)).with_context(|| {
                format!("state failure processing {topic}[{partition}] offset {offset}")
            }),
        }
    }

    fn commit_due(&self) -> bool {
        self.last_commit.elapsed() >= Duration::from_millis(self.config.kafka.commit_interval_ms)
    }

    /// Commits outputs, changelog records and consumed offsets in the open
    /// transaction; then applies each task's buffered writes with the
    /// changelog offset they reached. An aborted commit rewinds instead.
    fn commit(&mut self, consumer: &EngineConsumer) -> anyhow::Result<()> {
        self.last_commit = Instant::now();
        if self.positions.is_empty() && !self.txn.is_open() {
            return Ok(());
        }
        match self.try_commit(consumer) {
            Ok(committed) => {
                self.apply_committed(&committed)?;
                self.purger.maybe_purge();
                Ok(())
            }
            Err(TxnError::Aborted(reason)) => {
                self.metrics
                    .transactions
                    .with_label_values(&["aborted"])
                    .inc();
                warn!(%reason, "transaction aborted; rewinding to the last commit");
                self.rewind(consumer)
            }
            Err(TxnError::Fatal(reason)) => self.recover(consumer, &reason),
        }
    }

    /// The producer failed for good: fenced after the broker timed out our
    /// transaction (a long stall), or a fatal idempotence error. Its
    /// transaction is aborted either way and the stores hold only committed
    /// writes, so a new producer (whose initialisation fences the old one)
    /// and a rewind to the committed offsets continue exactly once. A slow
    /// broker is a transient fault: repeated failures back off (doubling up
    /// to 30 s) instead of stopping the process.
    fn recover(&mut self, consumer: &EngineConsumer, reason: &str) -> anyhow::Result<()> {
        const WINDOW: Duration = Duration::from_secs(300);
        self.recoveries.retain(|t| t.elapsed() < WINDOW);
        let recent = self.recoveries.len() as u32;
        self.recoveries.push(Instant::now());
        self.metrics
            .transactions
            .with_label_values(&["aborted"])
            .inc();
        if recent > 0 {
            let delay =
                Duration::from_millis(500 * 2u64.pow(recent.min(6))).min(Duration::from_secs(30));
            warn!(%reason, recent_failures = recent, retry_in = ?delay, instance_id = %self.config.instance_id,
                "transactional producer failed again (a slow broker, or another live instance with this instance id); backing off");
            std::thread::sleep(delay);
        } else {
            warn!(%reason, "transactional producer failed; starting a new one and rewinding to the last commit");
        }
        self.txn = Transactions::new(&self.config)?;
        self.rewind(consumer)
    }

    fn try_commit(&mut self, consumer: &EngineConsumer) -> Result<Committed, TxnError> {
        for task in self.tasks.values() {
            for (key, value) in task.buffer.changelog_records() {
                self.txn
                    .send(&task.changelog, task.partition, &key, value, None, None)?;
            }
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &self.positions {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| TxnError::Aborted(e.to_string()))?;
        }
        let group = consumer
            .group_metadata()
            .ok_or_else(|| TxnError::Aborted("the consumer has no group metadata yet".into()))?;
        self.txn.ensure_open()?;
        let committed = self.txn.commit(&offsets, &group)?;
        self.metrics
            .transactions
            .with_label_values(&["committed"])
            .inc();
        self.metrics
            .commit_seconds
            .observe(committed.duration.as_secs_f64());
        let now_ms = chrono::Utc::now().timestamp_millis();
        let e2e = self
            .metrics
            .end_to_end_seconds
            .with_label_values(&["output"]);
        for ts in self.source_times.drain(..) {
            e2e.observe((now_ms - ts).max(0) as f64 / 1000.0);
        }
        Ok(committed)
    }

    /// Applies each task's buffered writes with the changelog offset the
    /// committed transaction reached.
    fn apply_committed(&mut self, committed: &Committed) -> anyhow::Result<()> {
        for task in self.tasks.values_mut() {
            let next = committed
                .changelog_next
                .get(&(task.changelog.clone(), task.partition))
                .copied();
            if task.buffer.is_empty() && next.is_none() {
                continue;
            }
            if let Some(store) = task.store.as_mut() {
                // The transaction is committed: a failure to apply it locally
                // leaves the store at its previous checkpoint, and a restart
                // restores the tail. Stop rather than run on a stale store.
                store.commit(&mut task.buffer, next).with_context(|| {
                    format!(
                        "applying a committed transaction to the store of task {}-{}",
                        task.stage.name(),
                        task.partition
                    )
                })?;
            }
        }
        for ((topic, partition), next) in self.positions.drain() {
            if self.topics.stage_of(&topic).is_some() {
                self.purger.committed(&topic, partition, next);
            }
        }
        Ok(())
    }

    /// After an abort: drop pending writes and seek every partition consumed
    /// in the aborted transaction back to its committed offset.
    fn rewind(&mut self, consumer: &EngineConsumer) -> anyhow::Result<()> {
        self.txn.abort()?;
        self.source_times.clear();
        for task in self.tasks.values_mut() {
            task.buffer.clear();
        }
        if self.positions.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in self.positions.keys() {
            tpl.add_partition(topic, *partition);
        }
        let committed = committed_offsets(consumer, &tpl)?;
        for elem in committed.elements() {
            let to = match elem.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            consumer
                .seek(elem.topic(), elem.partition(), to, Duration::from_secs(30))
                .with_context(|| format!("rewinding {}[{}]", elem.topic(), elem.partition()))?;
        }
        self.positions.clear();
        Ok(())
    }

    fn publish_task_metrics(&self) {
        for stage in Stage::ALL {
            for status in [TaskStatus::Restoring, TaskStatus::Running] {
                let n = self
                    .tasks
                    .values()
                    .filter(|t| t.stage == stage && t.status == status)
                    .count();
                self.metrics
                    .tasks
                    .with_label_values(&[stage.name(), status.as_str()])
                    .set(n as i64);
            }
        }
        let ready =
            self.assigned > 0 && self.tasks.values().all(|t| t.status == TaskStatus::Running);
        self.metrics.set_ready(ready);
    }

    fn publish_state_metrics(&self) {
        for stage in Stage::ALL {
            let (mut keys, mut bytes) = (0u64, 0u64);
            for task in self.tasks.values().filter(|t| t.stage == stage) {
                if let Some(Ok(stats)) = task.store.as_ref().map(|s| s.stats(store_spec(stage).id))
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
        }
        for p in self.restorer.progress() {
            let stage = Stage::ALL
                .into_iter()
                .find(|s| self.topics.changelog(*s) == p.changelog.0);
            if let Some(stage) = stage {
                self.metrics
                    .restore_remaining
                    .with_label_values(&[stage.name()])
                    .set(p.remaining());
            }
        }
        if self.restorer.is_idle() {
            for stage in Stage::ALL {
                self.metrics
                    .restore_remaining
                    .with_label_values(&[stage.name()])
                    .set(0);
            }
        }
    }
}

/// The group's committed offsets of `tpl`. Without them a rewind cannot
/// happen, and a broker that is slow or restarting comes back: retry for a
/// few minutes before giving up.
fn committed_offsets(
    consumer: &EngineConsumer,
    tpl: &TopicPartitionList,
) -> anyhow::Result<TopicPartitionList> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut backoff = Duration::from_millis(200);
    loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(30)) {
            Ok(offsets) => return Ok(offsets),
            Err(e) if Instant::now() < deadline => {
                warn!(error = %e, "reading committed offsets to rewind; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e).context("reading committed offsets to rewind after an abort"),
        }
    }
}

/// Runs the stream stages until `shutdown` is requested or a fatal error.
pub fn run(
    config: Config,
    pipeline: PipelineConfig,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let topics = Topics::new(&config, pipeline.topics());
    let resources = StoreResources::new(StoreTuning {
        block_cache_bytes: config.state.block_cache_mb << 20,
        write_buffer_bytes: config.state.write_buffer_mb << 20,
        ..StoreTuning::default()
    });
    let txn = Transactions::new(&config)?;
    let restorer = Restorer::new(&config)?;
    let core = Arc::new(Mutex::new(Core {
        config: config.clone(),
        pipeline,
        topics: topics.clone(),
        txn,
        restorer,
        purger: Purger::new(&config)?,
        resources,
        tasks: BTreeMap::new(),
        positions: HashMap::new(),
        assigned: 0,
        recoveries: Vec::new(),
        last_commit: Instant::now(),
        source_times: Vec::new(),
        metrics: metrics.clone(),
    }));
    let failure = Arc::new(Mutex::new(None));
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .set("group.id", config.group_id())
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
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // Consumer lag (outbound_consumer_lag_records) comes from these statistics.
        .set("statistics.interval.ms", "5000");
    for (k, v) in &config.kafka.properties {
        cc.set(k, v);
    }
    let consumer: EngineConsumer = cc
        .create_with_context(EngineContext {
            core: core.clone(),
            failure: failure.clone(),
            metrics: metrics.clone(),
        })
        .context("creating the stream consumer")?;
    let mut subscriptions: Vec<&str> = topics.sources.iter().map(String::as_str).collect();
    for stage in Stage::ALL {
        subscriptions.push(topics.input(stage));
    }
    consumer.subscribe(&subscriptions).context("subscribing")?;
    info!(group = %config.group_id(), transactional_id = %config.transactional_id(), topics = ?subscriptions, "stream stages running");
    let mut last_state_metrics = Instant::now();
    metrics.liveness.beat("stream");
    let result = (|| -> anyhow::Result<()> {
        while !shutdown.is_requested() {
            lock(&core).restore_step(&consumer)?;
            let wait = if lock(&core).restorer.is_idle() {
                50
            } else {
                0
            };
            match consumer.poll(Duration::from_millis(wait)) {
                Some(Ok(m)) => lock(&core).process(&consumer, &m)?,
                Some(Err(e)) => warn!(error = %e, "consumer error"),
                None => {}
            }
            if let Some(e) = failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return Err(e);
            }
            let mut c = lock(&core);
            if c.commit_due() {
                // Once per commit interval, not per record: it reads two
                // clocks and takes a lock.
                metrics.liveness.beat("stream");
                c.commit(&consumer)?;
                if last_state_metrics.elapsed() >= Duration::from_secs(5) {
                    last_state_metrics = Instant::now();
                    c.publish_state_metrics();
                }
            }
        }
        lock(&core).commit(&consumer)
    })();
    if let Err(e) = &result {
        error!(error = %format!("{e:#}"), "stream stages stopping on a fatal error");
        let _ = lock(&core).txn.abort();
    }
    // Leave the group now rather than at session timeout.
    consumer.unsubscribe();
    drop(consumer);
    info!("stream stages stopped");
    result
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Core>();
}
