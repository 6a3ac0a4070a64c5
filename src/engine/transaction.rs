//! The stream thread's transactional producer: rust-rdkafka's
//! consume → produce → `send_offsets_to_transaction` → `commit_transaction`
//! idiom, batched per commit interval. A Kafka transaction is open only while
//! a commit runs — the record collector holds the records until then — so
//! no rebalance callback ever runs inside one, and a lost assignment never
//! finds one half done.
//!
//! Delivery reports tell which offsets the changelog records reached: each
//! changelog partition is registered ([`Transactions::register_changelog`])
//! and its records carry their registration's slot as the delivery opaque.
//!
//! Failures are sorted ([`TxnError`]) into what a rewind fixes, what no
//! retry will fix (a record a topic refuses for good), a fence (another live
//! producer with our transactional id, or the coordinator timing our
//! transaction out during a stall) and other fatal producer errors.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::{ClientContext, Message, TopicPartitionList};
use tracing::{debug, warn};

use super::librdkafka::{set_producing_paused, QueueWaker};
use super::record_collector::Record;
use super::stall::{Action, StallGuard};
use crate::config::Config;

/// The producer's `message.max.bytes`: room for the largest dead letter.
pub const PRODUCER_MAX_BYTES: usize = super::topics::DEAD_LETTER_MAX_BYTES + 64 * 1024;

/// Delivery reports of the open transaction.
#[derive(Default)]
struct Deliveries {
    /// Highest delivered offset per registered changelog slot.
    reached: HashMap<usize, i64>,
    failures: Vec<(String, i32, RDKafkaErrorCode)>,
}

pub struct TxnContext {
    deliveries: Arc<Mutex<Deliveries>>,
    /// When librdkafka last reported trouble reaching the cluster (a broker
    /// down, a request timed out): a fence soon after may be the
    /// coordinator's doing rather than a second producer's.
    trouble_at: Arc<Mutex<Option<Instant>>>,
}

impl ClientContext for TxnContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !error.rdkafka_error_code().is_some_and(fenced) {
            *self.trouble_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
        tracing::error!("librdkafka: {error}: {reason}");
    }
}

impl ProducerContext for TxnContext {
    /// 0: not a changelog record; n: the changelog registered in slot n − 1.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, slot: usize) {
        let mut d = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(m) if slot > 0 => {
                let e = d.reached.entry(slot - 1).or_insert(-1);
                *e = (*e).max(m.offset());
            }
            Ok(_) => {}
            Err((e, m)) => {
                let code = e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                d.failures.push((m.topic().to_owned(), m.partition(), code));
            }
        }
    }
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// The transaction was aborted: nothing of it is visible and the
    /// consumed offsets did not move. Rewind and process again.
    #[error("transaction aborted: {0}")]
    Aborted(String),
    /// A topic refused a record for good (too large, invalid, not
    /// authorised): the transaction was aborted, and retrying will not help.
    #[error(
        "{topic}[{partition}] refused a record for good ({code}); the transaction was aborted"
    )]
    Refused {
        topic: String,
        partition: i32,
        code: RDKafkaErrorCode,
    },
    /// The producer was fenced: another producer initialised our
    /// transactional id, or the coordinator aborted our transaction after it
    /// outlived `transaction.timeout.ms`. `open_for`: how long our
    /// transaction had been open (0 when none was); `trouble_ago`: how long
    /// ago the producer last had trouble reaching the cluster, if ever.
    #[error("transactional producer fenced after its transaction was open {open_for:?}: {reason}")]
    Fenced {
        open_for: Duration,
        trouble_ago: Option<Duration>,
        reason: String,
    },
    /// The producer cannot go on (a fatal idempotence error, a commit whose
    /// outcome is unknown).
    #[error("transactional producer failed for good: {0}")]
    Fatal(String),
}

impl TxnError {
    /// Whether the transaction may have committed although the call failed:
    /// the stores must then catch up from their changelogs.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, TxnError::Fenced { .. } | TxnError::Fatal(_))
    }
}

pub struct Transactions {
    // Before the producer: dropped first, it unhooks itself from the
    // producer's queue while the producer is still alive.
    waker: QueueWaker,
    producer: BaseProducer<TxnContext>,
    deliveries: Arc<Mutex<Deliveries>>,
    trouble_at: Arc<Mutex<Option<Instant>>>,
    /// (topic, partition) of each registered changelog slot.
    changelogs: Vec<(String, i32)>,
    slots: HashMap<(String, i32), usize>,
    open_since: Option<Instant>,
    /// The partitions the open transaction has sent to (the ones a stalled
    /// flush pauses), by topic.
    sent_to: HashMap<String, BTreeSet<i32>>,
    /// Bound of each producer call.
    timeout: Duration,
    pub transactional_id: String,
}

/// What a successful commit reached.
#[derive(Debug, Default)]
pub struct Committed {
    /// Offset after the last record written to each changelog partition.
    pub changelog_next: HashMap<(String, i32), i64>,
    pub duration: Duration,
}

impl Transactions {
    /// Creates the producer and initialises transactions, fencing any earlier
    /// incarnation of this transactional id and aborting its open transaction.
    pub fn new(config: &Config, transactional_id: &str) -> anyhow::Result<Self> {
        let deliveries = Arc::new(Mutex::new(Deliveries::default()));
        let trouble_at = Arc::new(Mutex::new(None));
        let context = TxnContext {
            deliveries: deliveries.clone(),
            trouble_at: trouble_at.clone(),
        };
        let mut cc = config.client_config();
        cc.set("transactional.id", transactional_id)
            .set(
                "transaction.timeout.ms",
                config.kafka.transaction_timeout_ms.to_string(),
            )
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            // A dead-lettered record is kept whole up to 16 MiB (plus headers).
            .set("message.max.bytes", PRODUCER_MAX_BYTES.to_string())
            // Right after a commit the coordinator answers AddPartitionsToTxn
            // with CONCURRENT_TRANSACTIONS until the markers are written;
            // librdkafka's default backoff (100 ms growing to 1 s) would
            // stall every transaction. Kafka's Java producer retries at 20 ms.
            .set("retry.backoff.ms", "10")
            .set("retry.backoff.max.ms", "100");
        for (k, v) in &config.kafka.properties {
            cc.set(k, v);
        }
        let producer: BaseProducer<TxnContext> = cc
            .create_with_context(context)
            .context("creating the transactional producer")?;
        let timeout = Duration::from_secs(60);
        producer.init_transactions(timeout).with_context(|| {
            format!("initialising transactions for transactional.id {transactional_id}")
        })?;
        Ok(Self {
            waker: QueueWaker::on_main_queue(producer.client()),
            producer,
            deliveries,
            trouble_at,
            changelogs: Vec::new(),
            slots: HashMap::new(),
            open_since: None,
            sent_to: HashMap::new(),
            timeout,
            transactional_id: transactional_id.to_owned(),
        })
    }

    /// Makes a changelog partition's delivered offsets known to commits.
    pub fn register_changelog(&mut self, topic: &str, partition: i32) -> usize {
        let key = (topic.to_owned(), partition);
        if let Some(slot) = self.slots.get(&key) {
            return *slot;
        }
        let slot = self.changelogs.len();
        self.changelogs.push(key.clone());
        self.slots.insert(key, slot);
        slot
    }

    pub fn is_open(&self) -> bool {
        self.open_since.is_some()
    }

    fn open_for(&self) -> Duration {
        self.open_since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    fn classify(&self, e: KafkaError) -> TxnError {
        match &e {
            KafkaError::Transaction(t) if fenced(t.code()) => TxnError::Fenced {
                open_for: self.open_for(),
                // Serve the error events queued before the fence, so a
                // broker that went away a moment ago is known.
                trouble_ago: self.trouble_ago(),
                reason: e.to_string(),
            },
            KafkaError::Transaction(t) if t.is_fatal() => TxnError::Fatal(e.to_string()),
            _ => TxnError::Aborted(e.to_string()),
        }
    }

    /// How long ago the producer last had trouble reaching the cluster,
    /// after serving its queued events (errors, delivery reports).
    fn trouble_ago(&self) -> Option<Duration> {
        self.producer.poll(Duration::ZERO);
        self.trouble_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed())
    }

    /// Begins a transaction.
    fn begin(&mut self) -> Result<(), TxnError> {
        if self.open_since.is_none() {
            self.producer
                .begin_transaction()
                .map_err(|e| self.classify(e))?;
            self.open_since = Some(Instant::now());
            self.sent_to.clear();
        }
        Ok(())
    }

    /// Sends one record in the open transaction, waiting for queue space
    /// when librdkafka's buffer is full.
    fn send(&mut self, topic: &str, r: &Record, slot: usize) -> Result<(), TxnError> {
        match self.sent_to.get_mut(topic) {
            Some(partitions) => {
                partitions.insert(r.partition);
            }
            None => {
                self.sent_to
                    .insert(topic.to_owned(), BTreeSet::from([r.partition]));
            }
        }
        let mut record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, slot)
            .partition(r.partition)
            .key(&r.key);
        if let Some(v) = &r.value {
            record = record.payload(v);
        }
        if let Some(ts) = r.timestamp.filter(|t| *t > 0) {
            record = record.timestamp(ts);
        }
        if !r.headers.is_empty() {
            let headers = r.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: Some(v.as_str()),
                })
            });
            record = record.headers(headers);
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    self.serve_reports(Duration::from_millis(1));
                }
                Err((KafkaError::MessageProduction(code), _)) if refused_for_good(code) => {
                    return Err(TxnError::Refused {
                        topic: topic.to_owned(),
                        partition: r.partition,
                        code,
                    })
                }
                Err((e, _)) => {
                    if matches!(
                        e,
                        KafkaError::MessageProduction(RDKafkaErrorCode::UnknownPartition)
                    ) {
                        self.refresh_metadata(topic);
                    }
                    return Err(TxnError::Aborted(format!(
                        "producing to {topic}[{}]: {e}",
                        r.partition
                    )));
                }
            }
        }
    }

    /// Asks the broker for `topic`'s metadata now. librdkafka refreshes a
    /// topic's partition count only every `topic.metadata.refresh.interval.ms`
    /// (5 min): a topic re-created or given back its partitions would fail
    /// every commit until then with "unknown partition".
    fn refresh_metadata(&self, topic: &str) {
        if let Err(e) = self
            .producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
        {
            warn!(%topic, error = %e, "refreshing the metadata of a topic with an unknown partition");
        }
    }

    /// Sends `records` (each with its topic) now, in the transaction the
    /// first of them opens; the commit sends the rest and ends it. On a
    /// failure that leaves the producer usable the transaction is aborted.
    pub fn send_now(
        &mut self,
        records: &[(String, Record)],
        deadline: Instant,
    ) -> Result<(), TxnError> {
        match self.try_send_now(records) {
            Err(e @ (TxnError::Aborted(_) | TxnError::Refused { .. })) => {
                self.abort(deadline)?;
                Err(e)
            }
            other => other,
        }
    }

    fn try_send_now(&mut self, records: &[(String, Record)]) -> Result<(), TxnError> {
        self.begin()?;
        for (topic, r) in records {
            self.send(topic, r, 0)?;
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// Runs one transaction: `records` (each with its topic), the changelog
    /// records (`(slot, record)`), then the consumed `offsets` with the
    /// group metadata, and the commit — all within `deadline`. `between`
    /// runs after everything is delivered and before the commit (a test
    /// failpoint). On a failure that leaves the producer usable the
    /// transaction is aborted.
    pub fn commit(
        &mut self,
        records: &[(String, Record)],
        changelog: &[(usize, Record)],
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
        deadline: Instant,
        between: impl FnOnce(),
    ) -> Result<Committed, TxnError> {
        let started = Instant::now();
        let result = self.try_commit(records, changelog, offsets, group, deadline, between);
        match result {
            Ok(()) => {
                self.open_since = None;
                let mut d = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
                let reached = std::mem::take(&mut d.reached);
                Ok(Committed {
                    changelog_next: reached
                        .into_iter()
                        .filter_map(|(slot, offset)| {
                            Some((self.changelogs.get(slot)?.clone(), offset + 1))
                        })
                        .collect(),
                    duration: started.elapsed(),
                })
            }
            Err(e @ (TxnError::Aborted(_) | TxnError::Refused { .. })) => {
                self.abort(deadline)?;
                Err(e)
            }
            Err(fatal) => Err(fatal),
        }
    }

    fn try_commit(
        &mut self,
        records: &[(String, Record)],
        changelog: &[(usize, Record)],
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
        deadline: Instant,
        between: impl FnOnce(),
    ) -> Result<(), TxnError> {
        self.begin()?;
        for (topic, r) in records {
            self.send(topic, r, 0)?;
            self.producer.poll(Duration::ZERO);
        }
        for (slot, r) in changelog {
            let topic = self
                .changelogs
                .get(*slot)
                .map(|(t, _)| t.clone())
                .ok_or_else(|| {
                    TxnError::Fatal(format!("changelog slot {slot} is not registered"))
                })?;
            self.send(&topic, r, slot + 1)?;
            self.producer.poll(Duration::ZERO);
        }
        // Flushing serves every delivery report, so failures and changelog
        // offsets are known before the commit decision.
        let sent_at = Instant::now();
        self.flush(deadline)?;
        let flushed_at = Instant::now();
        {
            // A copy: the refresh below must not hold the reports' lock.
            let failures = self
                .deliveries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .failures
                .clone();
            if let Some((topic, partition, code)) = failures.iter().find(|f| refused_for_good(f.2))
            {
                return Err(TxnError::Refused {
                    topic: topic.clone(),
                    partition: *partition,
                    code: *code,
                });
            }
            if !failures.is_empty() {
                let unknown: BTreeSet<String> = failures
                    .iter()
                    .filter(|f| f.2 == RDKafkaErrorCode::UnknownPartition)
                    .map(|f| f.0.clone())
                    .collect();
                for topic in &unknown {
                    self.refresh_metadata(topic);
                }
                let list: Vec<String> = failures
                    .iter()
                    .take(5)
                    .map(|(t, p, c)| format!("{t}[{p}]: {c}"))
                    .collect();
                return Err(TxnError::Aborted(format!(
                    "{} records undelivered: {}",
                    failures.len(),
                    list.join("; ")
                )));
            }
        }
        between();
        if offsets.count() > 0 {
            self.producer
                .send_offsets_to_transaction(offsets, group, remaining(deadline))
                .map_err(|e| self.classify(e))?;
        }
        let offsets_at = Instant::now();
        loop {
            match self.producer.commit_transaction(remaining(deadline)) {
                Ok(()) => {
                    debug!(
                        records = records.len(),
                        changelog = changelog.len(),
                        flush_ms = (flushed_at - sent_at).as_secs_f64() * 1e3,
                        offsets_ms = (offsets_at - flushed_at).as_secs_f64() * 1e3,
                        end_ms = offsets_at.elapsed().as_secs_f64() * 1e3,
                        "transaction committed"
                    );
                    return Ok(());
                }
                Err(KafkaError::Transaction(t))
                    if t.is_retriable() && Instant::now() < deadline =>
                {
                    warn!(error = %t, "commit_transaction failed retriably; retrying");
                }
                // A commit that timed out may still complete: its outcome is unknown.
                Err(KafkaError::Transaction(t)) if t.is_retriable() => {
                    return Err(TxnError::Fatal(format!("commit outcome unknown: {t}")))
                }
                Err(e) => return Err(self.classify(e)),
            }
        }
    }

    /// Sends everything queued and serves its delivery reports as they come.
    /// rust-rdkafka's `flush` polls in fixed 100 ms slices (its `poll` always
    /// waits out its timeout), which would put a 100 ms floor under every
    /// commit, and a poll of less than a few milliseconds is a busy spin (see
    /// `serve_reports`): this waits on the queue's wake-up instead.
    ///
    /// While no delivery report comes, the transaction's partitions are
    /// paused, and probed now and then ([`super::stall`]): librdkafka's
    /// broker thread spins a core on a partition that has its five
    /// idempotent requests in flight and more records ready, for as long as
    /// the broker is silent.
    fn flush(&self, deadline: Instant) -> Result<(), TxnError> {
        let undelivered = || self.producer.in_flight_count().max(0) as u64;
        let mut guard = StallGuard::new(undelivered(), Instant::now());
        let result = loop {
            let in_flight = undelivered();
            if in_flight == 0 {
                break Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(TxnError::Aborted(format!(
                    "{in_flight} records still undelivered when the commit's time ran out",
                )));
            }
            if let Some(action) = guard.observe(in_flight, now) {
                if self.pause_sends(action == Action::Pause) {
                    guard.done(action, Instant::now());
                }
            }
            if !guard.is_paused() {
                // A zero-timeout flush skips linger.ms for what is queued
                // now; its TimedOut result only says records are in flight.
                let _ = self.producer.flush(Duration::ZERO);
            }
            self.serve_reports(remaining(deadline).min(FLUSH_WAIT));
        };
        if guard.is_paused() {
            self.pause_sends(false);
        }
        result
    }

    /// Pauses (or resumes) producing to the open transaction's partitions;
    /// whether it did.
    fn pause_sends(&self, paused: bool) -> bool {
        let mut partitions = TopicPartitionList::new();
        for (topic, ps) in &self.sent_to {
            for p in ps {
                partitions.add_partition(topic, *p);
            }
        }
        match set_producing_paused(self.producer.client(), &partitions, paused) {
            Ok(()) => {
                if paused {
                    debug!(
                        partitions = partitions.count(),
                        "no delivery report for a while: holding back what is queued until the broker answers"
                    );
                }
                true
            }
            Err(e) => {
                warn!(error = %e, paused, "pausing or resuming the producer's partitions");
                false
            }
        }
    }

    /// Serves every event waiting on the producer's queue (delivery reports
    /// among them); when there was none, waits up to `wait` for the next.
    /// Never `producer.poll(t)` with a small `t`: rust-rdkafka's poll waits
    /// out all of `t` and, with less than a millisecond left, polls with a
    /// zero timeout in a loop, so a 1 ms poll is a 1 ms busy spin (a flush
    /// built of them spun a core for as long as the broker took to answer,
    /// which on a small machine starved the broker and the group heartbeats).
    fn serve_reports(&self, wait: Duration) {
        let mut served = 0;
        // Bounded: events that keep coming must not hold the loop.
        while self.waker.pending() > 0 && served < 1024 {
            self.producer.poll(Duration::ZERO);
            served += 1;
        }
        if served == 0 {
            self.waker.wait(wait);
        } else if served == 1024 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Aborts the open transaction (if any) and forgets its delivery reports.
    ///
    /// The abort gets a few seconds of its own: the commit that failed may
    /// have spent the deadline (its records timing out on a slow broker),
    /// and an abort given 1 ms fails, which would cost a new producer and a
    /// restore of every task. librdkafka's abort waits for the outstanding
    /// records, whose delivery reports a `BaseProducer` serves only when
    /// polled, and is resumable after a timeout: purge them, serve their
    /// reports, and call it again until it completes or its time is up.
    pub fn abort(&mut self, deadline: Instant) -> Result<(), TxnError> {
        if self.open_since.is_some() {
            let deadline = deadline.max(Instant::now() + ABORT_AT_LEAST);
            self.producer
                .purge(PurgeConfig::default().queue().inflight());
            loop {
                self.producer.poll(Duration::ZERO);
                let slice = remaining(deadline).min(Duration::from_millis(500));
                match self.producer.abort_transaction(slice) {
                    Ok(()) => break,
                    Err(KafkaError::Transaction(t))
                        if t.is_retriable() && !t.is_fatal() && Instant::now() < deadline =>
                    {
                        self.serve_reports(Duration::from_millis(10));
                    }
                    Err(e) => {
                        let e = match self.classify(e) {
                            TxnError::Aborted(r) => TxnError::Fatal(format!("abort failed: {r}")),
                            other => other,
                        };
                        self.open_since = None;
                        return Err(e);
                    }
                }
            }
            self.open_since = None;
        }
        let mut d = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        *d = Deliveries::default();
        Ok(())
    }
}

/// The least time an abort is given, however late it starts.
const ABORT_AT_LEAST: Duration = Duration::from_secs(5);
/// Longest wait for a delivery report before the flush looks again (the
/// wake-up normally ends it sooner).
const FLUSH_WAIT: Duration = Duration::from_millis(100);

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// Another producer initialised our transactional id (or the coordinator
/// bumped our epoch when it timed our transaction out).
fn fenced(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::InvalidProducerIdMapping
            | RDKafkaErrorCode::Fenced
    )
}

/// Whether a fence can only be another producer that initialised our
/// transactional id. The coordinator fences us itself when it aborts a
/// transaction of ours past `transaction.timeout.ms` (a stall), and after a
/// broker restart or a coordinator move it may abort one whose end it never
/// saw and bump our epoch, so that our next, young transaction is refused.
/// So: only a young transaction, with the cluster reachable for a whole
/// transaction timeout before, means a twin. Otherwise the thread recovers
/// with a new producer — which fences a twin in turn, if there is one; the
/// first fence once the cluster is steady makes one of them stop.
pub fn fenced_by_twin(
    open_for: Duration,
    trouble_ago: Option<Duration>,
    txn_timeout: Duration,
) -> bool {
    open_for < txn_timeout.mul_f64(0.9) && trouble_ago.is_none_or(|ago| ago > txn_timeout)
}

/// Errors a retry cannot fix: the record itself, or our rights on the topic.
fn refused_for_good(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn a_young_transaction_fenced_on_a_steady_cluster_means_a_twin() {
        assert!(fenced_by_twin(Duration::from_millis(5), None, TIMEOUT));
        assert!(fenced_by_twin(
            Duration::from_millis(5),
            Some(Duration::from_secs(60)),
            TIMEOUT
        ));
    }

    #[test]
    fn a_transaction_past_its_timeout_was_fenced_by_the_coordinator() {
        assert!(!fenced_by_twin(Duration::from_secs(12), None, TIMEOUT));
        assert!(!fenced_by_twin(Duration::from_secs(9), None, TIMEOUT));
    }

    #[test]
    fn a_fence_soon_after_broker_trouble_is_not_taken_for_a_twin() {
        // The chaos test's broker restart: the young transaction is refused
        // with an old epoch a moment after the connections dropped.
        assert!(!fenced_by_twin(
            Duration::from_millis(5),
            Some(Duration::from_millis(3)),
            TIMEOUT
        ));
        assert!(!fenced_by_twin(
            Duration::from_millis(5),
            Some(Duration::from_secs(9)),
            TIMEOUT
        ));
    }
}
