//! The task manager (Kafka Streams' `TaskManager` and `Tasks`): the set of
//! tasks one stream thread owns and each task's state. The stream thread
//! tells it what the rebalance callbacks recorded; everything that reads a
//! disk or asks a broker — opening stores, checking checkpoints, finding
//! where a restore starts and ends — happens here, in the loop, when no
//! transaction is open.
//!
//! A task is initialised in this order (a restore target read too early
//! misses a transaction that was still in doubt):
//! 1. open its store and read its checkpoint;
//! 2. read its input partition's committed offset — `read_committed`, so
//!    librdkafka waits while a transaction's offsets are pending, which
//!    settles every transaction behind them;
//! 3. read the changelog's first offset and stable end;
//! 4. check the checkpoint against them ([`super::state_manager::validate`]):
//!    resume from it, wipe the store, or (a checkpoint past the stable end)
//!    ask again shortly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use outbound_state::{ChangelogPartition, OpenOutcome, StoreResources, TaskStore};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::TopicPartitionList;
use tracing::{info, warn};

use super::changelog_reader::{transient, ChangelogReader};
use super::state_manager::{validate, ChangelogFacts, StateDirectory, Verdict};
use super::task::{derive_pending, restore_records, StreamTask, TaskId, TaskState};
use super::topics::{self, TopicFacts, Topics};
use super::topology::Stage;
use super::transaction::{Committed, Transactions};
use crate::config::Config;
use crate::metrics::Metrics;
use outbound_pipeline::config::PipelineConfig;

/// How long one broker request of a task's initialisation may take before
/// the task is tried again on a later loop iteration.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a running task renews its checkpoint's time while idle.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// An input partition: (topic, partition).
pub type Partition = (String, i32);

pub struct TaskManager {
    config: Config,
    /// The pipeline's settings, which rebuilding derived state reads.
    pipeline: PipelineConfig,
    topics: Topics,
    tasks: BTreeMap<TaskId, StreamTask>,
    /// Assigned source partitions (the stateless rekey stage).
    sources: BTreeSet<Partition>,
    reader: ChangelogReader,
    dirs: Arc<StateDirectory>,
    resources: Arc<StoreResources>,
    facts: TopicFacts,
    /// When a checkpoint past the stable end was first seen, per task.
    waiting_since: BTreeMap<TaskId, Instant>,
    metrics: Arc<Metrics>,
}

/// What the stream thread must do with the consumer afterwards.
#[derive(Debug, Default)]
pub struct Changes {
    pub pause: Vec<Partition>,
    pub resume: Vec<Partition>,
}

impl TaskManager {
    pub fn new(
        config: &Config,
        topics: Topics,
        thread: &str,
        dirs: Arc<StateDirectory>,
        resources: Arc<StoreResources>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        Ok(TaskManager {
            config: config.clone(),
            pipeline: config.pipeline()?,
            topics,
            tasks: BTreeMap::new(),
            sources: BTreeSet::new(),
            reader: ChangelogReader::new(config, thread)?,
            dirs,
            resources,
            facts: TopicFacts::default(),
            waiting_since: BTreeMap::new(),
            metrics,
        })
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Partitions assigned (sources and stage inputs): none means not ready.
    pub fn assigned(&self) -> usize {
        self.sources.len() + self.tasks.len()
    }

    pub fn get_mut(&mut self, stage: Stage, partition: i32) -> Option<&mut StreamTask> {
        self.tasks.get_mut(&TaskId { stage, partition })
    }

    pub fn tasks(&self) -> impl Iterator<Item = &StreamTask> {
        self.tasks.values()
    }

    pub fn tasks_mut(&mut self) -> impl Iterator<Item = &mut StreamTask> {
        self.tasks.values_mut()
    }

    /// Whether a task waits to be initialised (its store opened, its
    /// restore registered): broker requests that must not run while a
    /// transaction is open.
    pub fn has_pending_init(&self) -> bool {
        self.tasks
            .values()
            .any(|t| matches!(t.state, TaskState::Created | TaskState::Suspended))
    }

    pub fn is_restoring(&self) -> bool {
        !self.reader.is_idle()
    }

    pub fn reader(&self) -> &ChangelogReader {
        &self.reader
    }

    /// Partitions were assigned: their tasks are created (nothing is opened
    /// yet); stage inputs stay paused until their task runs.
    pub fn assign(&mut self, partitions: &[Partition], producer: &mut Transactions) -> Changes {
        let mut changes = Changes::default();
        for (topic, partition) in partitions {
            let Some(stage) = self.topics.stage_of(topic) else {
                self.sources.insert((topic.clone(), *partition));
                continue;
            };
            let id = TaskId {
                stage,
                partition: *partition,
            };
            changes.pause.push((topic.clone(), *partition));
            if self.tasks.contains_key(&id) {
                continue;
            }
            let changelog = ChangelogPartition {
                topic: self.topics.changelog(stage).to_owned(),
                partition: *partition,
            };
            let slot = producer.register_changelog(&changelog.topic, changelog.partition);
            self.dirs.claim(id);
            info!(task = %id, "task created");
            self.tasks.insert(id, StreamTask::new(id, changelog, slot));
        }
        changes
    }

    /// Partitions were revoked (`clean`: every write of their tasks is
    /// committed) or lost (`clean` false: another instance may own them
    /// now). Their tasks close; nothing is committed here.
    pub fn revoke(&mut self, partitions: &[Partition], clean: bool) {
        for (topic, partition) in partitions {
            let Some(stage) = self.topics.stage_of(topic) else {
                self.sources.remove(&(topic.clone(), *partition));
                continue;
            };
            let id = TaskId {
                stage,
                partition: *partition,
            };
            if let Some(task) = self.tasks.remove(&id) {
                self.close(task, clean);
            }
        }
    }

    fn close(&mut self, mut task: StreamTask, clean: bool) {
        self.reader
            .unregister(&task.changelog.topic, task.changelog.partition);
        self.waiting_since.remove(&task.id);
        task.buffer.clear();
        if let Some(store) = task.store.as_mut() {
            // Clean: the store is in step with its changelog now.
            if clean && task.state == TaskState::Running {
                if let Err(e) = store.touch() {
                    warn!(task = %task.id, error = %e, "renewing the checkpoint of a closing task");
                }
            }
        }
        let how = if clean { "clean" } else { "dirty" };
        self.metrics
            .task_closes
            .with_label_values(&[task.id.stage.name(), how])
            .inc();
        info!(task = %task.id, how, "task closed");
        self.dirs.release(task.id);
    }

    /// Closes every task (shutdown).
    pub fn close_all(&mut self, clean: bool) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in tasks.into_values() {
            self.close(task, clean);
        }
        self.sources.clear();
    }

    /// After a fatal producer error (the last transaction's outcome is
    /// unknown): every task drops its pending writes and catches up from
    /// its changelog again before it runs. Returns the inputs to pause.
    pub fn suspend_all(&mut self) -> Vec<Partition> {
        let mut pause = Vec::new();
        for task in self.tasks.values_mut() {
            self.reader
                .unregister(&task.changelog.topic, task.changelog.partition);
            task.buffer.clear();
            task.retry_at = None;
            task.state = TaskState::Suspended;
            pause.push((
                self.topics.input(task.id.stage).to_owned(),
                task.id.partition,
            ));
        }
        pause
    }

    /// Drops every task's pending writes (the transaction will not happen).
    pub fn clear_buffers(&mut self) {
        for task in self.tasks.values_mut() {
            task.buffer.clear();
        }
    }

    /// Opens and checks the stores of created and suspended tasks, and
    /// registers their restores. A task whose broker requests fail is tried
    /// again later; the others go on.
    pub fn initialize<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> anyhow::Result<Changes> {
        let now = Instant::now();
        let due: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| matches!(t.state, TaskState::Created | TaskState::Suspended))
            .filter(|t| t.retry_at.is_none_or(|at| at <= now))
            .map(|t| t.id)
            .collect();
        let mut changes = Changes::default();
        if due.is_empty() {
            return Ok(changes);
        }
        // 1. Stores.
        for id in &due {
            self.open_store(*id)?;
        }
        // 2. The inputs' committed offsets: this waits out any transaction
        // whose offsets are pending, so the changelog ends read next
        // include everything committed behind them.
        let mut tpl = TopicPartitionList::new();
        for id in &due {
            tpl.add_partition(self.topics.input(id.stage), id.partition);
        }
        let unsettled = match consumer.committed_offsets(tpl, REQUEST_TIMEOUT) {
            Err(e) => Some(e),
            // A partition's own error: its offsets are not settled either.
            Ok(offsets) => offsets.elements().iter().find_map(|e| e.error().err()),
        };
        if let Some(e) = unsettled {
            warn!(error = %e, "reading the committed offsets of tasks being initialised; will try again");
            self.retry_later(&due);
            return Ok(changes);
        }
        // Topic ids and settings of the changelogs (once, and again when a
        // changelog is not known yet).
        let missing = due
            .iter()
            .any(|id| !self.facts.ids.contains_key(self.topics.changelog(id.stage)));
        if missing {
            let names: Vec<String> = Stage::ALL
                .iter()
                .map(|s| self.topics.changelog(*s).to_owned())
                .collect();
            match topics::describe(self.reader.client(), &self.config, &names) {
                Ok(f) => self.facts = f,
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "reading the changelogs' ids and settings; will try again")
                }
            }
        }
        // 3 and 4, task by task.
        for id in due {
            match self.check_and_register(id) {
                Ok(Some(running)) => {
                    if running {
                        changes
                            .resume
                            .push((self.topics.input(id.stage).to_owned(), id.partition));
                    }
                }
                Ok(None) => self.retry_later(&[id]),
                Err(e) => return Err(e),
            }
        }
        Ok(changes)
    }

    fn retry_later(&mut self, ids: &[TaskId]) {
        let at = Instant::now() + Duration::from_millis(500);
        for id in ids {
            if let Some(t) = self.tasks.get_mut(id) {
                t.retry_at = Some(at);
            }
        }
    }

    fn open_store(&mut self, id: TaskId) -> anyhow::Result<()> {
        let Some(task) = self.tasks.get_mut(&id) else {
            return Ok(());
        };
        if task.store.is_some() {
            return Ok(());
        }
        let dir = self.dirs.task_dir(id);
        let (store, outcome) = TaskStore::open(
            &dir,
            task.changelog.clone(),
            &[id.stage.def().store],
            &self.resources,
        )
        .with_context(|| format!("opening the state of task {id} in {}", dir.display()))?;
        match &outcome {
            OpenOutcome::Created => info!(task = %id, "no local state: full restore"),
            OpenOutcome::Resumed { next_offset } => {
                info!(task = %id, next_offset, "local state found")
            }
            OpenOutcome::Rebuilt { reason } => {
                warn!(task = %id, %reason, "local state rebuilt: full restore");
                self.metrics
                    .state_rebuilds
                    .with_label_values(&[id.stage.name()])
                    .inc();
            }
        }
        task.store = Some(store);
        Ok(())
    }

    /// Checks one task's checkpoint against its changelog and registers its
    /// restore. `Ok(Some(true))`: running at once (nothing to restore);
    /// `Ok(Some(false))`: restoring; `Ok(None)`: ask again later.
    fn check_and_register(&mut self, id: TaskId) -> anyhow::Result<Option<bool>> {
        let changelog = self.topics.changelog(id.stage).to_owned();
        let (low, end) = match self
            .reader
            .offsets(&changelog, id.partition, REQUEST_TIMEOUT)
        {
            Ok(o) => o,
            Err(e) if transient(&e) => {
                warn!(task = %id, error = %e, "changelog offsets not readable yet; will try again");
                return Ok(None);
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "reading the offsets of changelog {changelog}[{}]",
                        id.partition
                    )
                })
            }
        };
        let topic_id = self.facts.ids.get(&changelog).cloned();
        let retention = self
            .facts
            .delete_retention_ms
            .get(&changelog)
            .copied()
            .unwrap_or(86_400_000);
        let task = self.tasks.get_mut(&id).context("task vanished")?;
        let store = task.store.as_ref().context("task store not open")?;
        let facts = ChangelogFacts {
            topic_id: topic_id.as_deref(),
            low,
            end,
            delete_retention_ms: retention,
        };
        let mut verdict = validate(store.checkpoint(), &facts, outbound_state::now_ms());
        if let Verdict::Wait { reason } = &verdict {
            // Ask again until the transaction settles; a checkpoint that
            // stays past the end for much longer than a transaction may
            // live was written against data the changelog no longer has.
            let since = *self.waiting_since.entry(id).or_insert_with(Instant::now);
            let patience =
                Duration::from_millis(self.config.kafka.transaction_timeout_ms * 3 + 60_000);
            if since.elapsed() < patience {
                info!(task = %id, %reason, "waiting for the changelog's stable end");
                return Ok(None);
            }
            verdict = Verdict::Wipe {
                reason: format!("{reason}, still after {patience:?}"),
            };
        }
        self.waiting_since.remove(&id);
        let from = match verdict {
            Verdict::Resume { from } => from,
            Verdict::Wipe { reason } => {
                warn!(task = %id, %reason, "local state not trusted: full restore");
                self.metrics
                    .state_rebuilds
                    .with_label_values(&[id.stage.name()])
                    .inc();
                let owned = task.store.take().context("task store not open")?;
                task.store = Some(
                    owned
                        .wipe(&self.resources, &reason)
                        .with_context(|| format!("wiping the state of task {id}"))?,
                );
                low
            }
            Verdict::Wait { .. } => unreachable!("handled above"),
        };
        let store = task.store.as_mut().context("task store not open")?;
        if let Some(tid) = &topic_id {
            store.set_topic_id(tid);
        }
        task.retry_at = None;
        if from >= end {
            // Nothing to restore: the store is in step with its changelog.
            store
                .touch()
                .with_context(|| format!("writing the checkpoint of task {id}"))?;
            let pending = store
                .pending_derivations(1)
                .with_context(|| format!("reading the state of task {id}"))?;
            if !pending.is_empty() {
                // An earlier restore stopped before rebuilding what it read.
                task.state = TaskState::Restoring;
                task.deriving = true;
                return Ok(Some(false));
            }
            task.state = TaskState::Running;
            task.touched = Instant::now();
            info!(task = %id, "task running");
            return Ok(Some(true));
        }
        task.state = TaskState::Restoring;
        task.deriving = false;
        self.reader
            .register(id, &changelog, id.partition, from, end)?;
        Ok(Some(false))
    }

    /// Moves restoring tasks forward; returns the inputs of those done.
    pub fn restore(&mut self) -> anyhow::Result<Changes> {
        let mut changes = Changes::default();
        self.derive(&mut changes)?;
        if self.reader.is_idle() {
            return Ok(changes);
        }
        let tasks = &mut self.tasks;
        let metrics = &self.metrics;
        let step = self.reader.step(&mut |id, records, next| {
            if let Some(store) = tasks.get_mut(&id).and_then(|t| t.store.as_mut()) {
                restore_records(store, id.stage, records, next)
                    .with_context(|| format!("restoring the store of task {id}"))?;
                metrics
                    .restored_records
                    .with_label_values(&[id.stage.name()])
                    .inc_by(records.len() as u64);
            }
            Ok(())
        })?;
        for id in step.done {
            if let Some(task) = self.tasks.get_mut(&id) {
                if id.stage.def().derived.is_some() {
                    // Running once its derived entries are rebuilt.
                    task.deriving = true;
                    continue;
                }
                task.state = TaskState::Running;
                task.touched = Instant::now();
                info!(task = %id, "task running");
                changes
                    .resume
                    .push((self.topics.input(id.stage).to_owned(), id.partition));
            }
        }
        for id in step.lost {
            if let Some(task) = self.tasks.get_mut(&id) {
                task.state = TaskState::Suspended;
            }
        }
        Ok(changes)
    }

    /// Rebuilds derived entries of restored tasks, a chunk of groups at a
    /// time within a time budget so the loop goes on polling; a task whose
    /// groups are all rebuilt runs.
    fn derive(&mut self, changes: &mut Changes) -> anyhow::Result<()> {
        const GROUPS_PER_CHUNK: usize = 1_000;
        const BUDGET: Duration = Duration::from_millis(200);
        let started = Instant::now();
        for task in self.tasks.values_mut() {
            if !task.deriving || task.state != TaskState::Restoring {
                continue;
            }
            let Some(store) = task.store.as_mut() else {
                continue;
            };
            loop {
                let done = derive_pending(store, task.id.stage, &self.pipeline, GROUPS_PER_CHUNK)
                    .with_context(|| {
                    format!("rebuilding the derived state of task {}", task.id)
                })?;
                if done {
                    task.deriving = false;
                    task.state = TaskState::Running;
                    task.touched = Instant::now();
                    info!(task = %task.id, "task running");
                    changes.resume.push((
                        self.topics.input(task.id.stage).to_owned(),
                        task.id.partition,
                    ));
                    break;
                }
                if started.elapsed() >= BUDGET {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Applies each task's committed writes with the changelog offset the
    /// transaction reached.
    pub fn apply(&mut self, committed: &Committed) -> anyhow::Result<()> {
        for task in self.tasks.values_mut() {
            let next = committed
                .changelog_next
                .get(&(task.changelog.topic.clone(), task.changelog.partition))
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
                        "applying a committed transaction to the store of task {}",
                        task.id
                    )
                })?;
                if next.is_some() {
                    task.touched = Instant::now();
                }
            }
        }
        Ok(())
    }

    /// Renews the checkpoint time of running tasks that have not written for
    /// a while, so a crash leaves a checkpoint the next start trusts.
    pub fn touch_idle(&mut self) {
        for task in self.tasks.values_mut() {
            if task.state != TaskState::Running
                || task.touched.elapsed() < TOUCH_EVERY
                || !task.buffer.is_empty()
            {
                continue;
            }
            if let Some(store) = task.store.as_mut() {
                if let Err(e) = store.touch() {
                    warn!(task = %task.id, error = %e, "renewing a checkpoint");
                }
            }
            task.touched = Instant::now();
        }
    }

    /// Removes the state of tasks no longer owned, past the cleanup delay.
    pub fn sweep_dirs(&self) {
        self.dirs.sweep();
    }

    /// Task counts by stage and state.
    pub fn summary(&self) -> BTreeMap<(Stage, TaskState), usize> {
        let mut out = BTreeMap::new();
        for t in self.tasks.values() {
            *out.entry((t.id.stage, t.state)).or_insert(0) += 1;
        }
        out
    }

    /// The tasks not running, for `/readyz`.
    pub fn not_running(&self) -> Vec<String> {
        self.tasks
            .values()
            .filter(|t| t.state != TaskState::Running)
            .map(|t| format!("{} {}", t.id, t.state.as_str()))
            .collect()
    }
}
