//! The instance's transactional producer: rust-rdkafka's
//! consume → produce → `send_offsets_to_transaction` → `commit_transaction`
//! idiom, batched per commit interval. It begins a transaction lazily at the
//! first send, and learns from delivery reports the changelog offsets each
//! commit reaches, which the task stores checkpoint once the commit succeeds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, TopicPartitionList};
use tracing::warn;

use crate::config::Config;

/// Delivery reports of the open transaction.
#[derive(Default)]
struct Deliveries {
    /// Highest delivered offset per tracked (changelog) topic partition.
    reached: HashMap<(String, i32), i64>,
    failures: Vec<String>,
}

pub struct TxnContext {
    tracked_suffix: String,
    deliveries: Arc<Mutex<Deliveries>>,
}

impl ClientContext for TxnContext {}

impl ProducerContext for TxnContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut d = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(m) if m.topic().ends_with(&self.tracked_suffix) => {
                let e = d
                    .reached
                    .entry((m.topic().to_owned(), m.partition()))
                    .or_insert(-1);
                *e = (*e).max(m.offset());
            }
            Ok(_) => {}
            Err((e, m)) => d
                .failures
                .push(format!("{}[{}]: {e}", m.topic(), m.partition())),
        }
    }
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// The transaction was aborted: its outputs are invisible, the consumed
    /// offsets not committed. Rewind and process again.
    #[error("transaction aborted: {0}")]
    Aborted(String),
    /// The producer is fenced or broken for good (another instance took over
    /// this transactional id, or the group generation moved on). The process
    /// must stop; a restart re-initialises cleanly.
    #[error("transactional producer failed for good: {0}")]
    Fatal(String),
}

pub struct Transactions {
    producer: BaseProducer<TxnContext>,
    deliveries: Arc<Mutex<Deliveries>>,
    open: bool,
    timeout: Duration,
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
    /// incarnation of this instance and aborting its open transaction.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let deliveries = Arc::new(Mutex::new(Deliveries::default()));
        let context = TxnContext {
            tracked_suffix: "-changelog".into(),
            deliveries: deliveries.clone(),
        };
        let mut cc = config.client_config();
        cc.set("transactional.id", config.transactional_id())
            .set(
                "transaction.timeout.ms",
                config.kafka.transaction_timeout_ms.to_string(),
            )
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            // A dead-lettered record is kept whole up to 16 MiB (plus headers).
            .set("message.max.bytes", "17825792")
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
            format!(
                "initialising transactions for transactional.id {}",
                config.transactional_id()
            )
        })?;
        Ok(Self {
            producer,
            deliveries,
            open: false,
            timeout,
        })
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Begins a transaction unless one is open (a commit needs one even when
    /// only consumed offsets moved).
    pub fn ensure_open(&mut self) -> Result<(), TxnError> {
        if !self.open {
            self.producer.begin_transaction().map_err(classify)?;
            self.open = true;
        }
        Ok(())
    }

    /// Sends one record inside the open transaction (beginning one if needed),
    /// waiting for queue space when librdkafka's buffer is full.
    pub fn send(
        &mut self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
        timestamp_ms: Option<i64>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), TxnError> {
        self.ensure_open()?;
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).partition(partition).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(ts) = timestamp_ms.filter(|t| *t > 0) {
            record = record.timestamp(ts);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(TxnError::Aborted(format!(
                        "producing to {topic}[{partition}]: {e}"
                    )))
                }
            }
        }
    }

    /// Serves delivery reports; call regularly while processing.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Commits the open transaction with the consumed `offsets`. On an
    /// abortable failure the transaction is aborted and `Aborted` returned.
    pub fn commit(
        &mut self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<Committed, TxnError> {
        let started = Instant::now();
        if !self.open {
            return Ok(Committed::default());
        }
        let result = self.try_commit(offsets, group);
        match result {
            Ok(()) => {
                self.open = false;
                let mut d = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
                let reached = std::mem::take(&mut d.reached);
                Ok(Committed {
                    changelog_next: reached.into_iter().map(|(k, v)| (k, v + 1)).collect(),
                    duration: started.elapsed(),
                })
            }
            Err(TxnError::Aborted(reason)) => {
                self.abort()?;
                Err(TxnError::Aborted(reason))
            }
            Err(fatal) => Err(fatal),
        }
    }

    fn try_commit(
        &mut self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), TxnError> {
        // Flushing serves every delivery report, so failures and changelog
        // offsets are known before the commit decision.
        self.flush()?;
        {
            let d = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
            if !d.failures.is_empty() {
                return Err(TxnError::Aborted(format!(
                    "undelivered records: {}",
                    d.failures.join("; ")
                )));
            }
        }
        if offsets.count() > 0 {
            self.producer
                .send_offsets_to_transaction(offsets, group, self.timeout)
                .map_err(classify)?;
        }
        loop {
            match self.producer.commit_transaction(self.timeout) {
                Ok(()) => return Ok(()),
                Err(e) => match retriable(&e) {
                    true => warn!(error = %e, "commit_transaction failed retriably; retrying"),
                    false => return Err(classify(e)),
                },
            }
        }
    }

    /// Sends everything queued and serves its delivery reports. rust-rdkafka's
    /// `flush` polls in fixed 100 ms slices (its `poll` always waits out its
    /// timeout), which would put a 100 ms floor under every commit; this
    /// polls in 1 ms slices instead.
    fn flush(&self) -> Result<(), TxnError> {
        let deadline = Instant::now() + self.timeout;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(TxnError::Aborted(format!(
                    "{} records still undelivered after {:?}",
                    self.producer.in_flight_count(),
                    self.timeout
                )));
            }
            // A zero-timeout flush skips linger.ms for what is queued now;
            // its TimedOut result only says records are still in flight.
            let _ = self.producer.flush(Duration::ZERO);
            self.producer.poll(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Aborts the open transaction and forgets its delivery reports.
    pub fn abort(&mut self) -> Result<(), TxnError> {
        if self.open {
            self.producer
                .abort_transaction(self.timeout)
                .map_err(|e| match classify(e) {
                    TxnError::Aborted(r) => TxnError::Fatal(format!("abort failed: {r}")),
                    fatal => fatal,
                })?;
            self.open = false;
        }
        let mut d = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        *d = Deliveries::default();
        Ok(())
    }
}

fn retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_retriable())
}

/// Sorts a transactional API error into abort-and-retry or fatal.
fn classify(e: KafkaError) -> TxnError {
    match &e {
        KafkaError::Transaction(t) if t.is_fatal() => TxnError::Fatal(e.to_string()),
        KafkaError::Transaction(t) if t.txn_requires_abort() => TxnError::Aborted(e.to_string()),
        KafkaError::Transaction(t) if t.is_retriable() => TxnError::Aborted(e.to_string()),
        KafkaError::Transaction(t)
            if matches!(
                t.code(),
                RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
            ) =>
        {
            TxnError::Fatal(e.to_string())
        }
        _ => TxnError::Aborted(e.to_string()),
    }
}

/// Headers naming a record's source position: `outbound.source.topic`,
/// `outbound.source.partition`, `outbound.source.offset`.
pub fn source_headers(topic: &str, partition: i32, offset: i64) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: "outbound.source.topic",
            value: Some(topic),
        })
        .insert(Header {
            key: "outbound.source.partition",
            value: Some(&partition.to_string()),
        })
        .insert(Header {
            key: "outbound.source.offset",
            value: Some(&offset.to_string()),
        })
}

/// Headers of a dead-letter record: why it failed and where it came from.
/// The dead-letter topic keeps append times (retention counts from the
/// failure); the record's own timestamp goes in `outbound.source.timestamp`.
pub fn dead_letter_headers(
    reason: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
) -> OwnedHeaders {
    let timestamp = timestamp_ms.map(|t| t.to_string());
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "outbound.error",
            value: Some(reason),
        })
        .insert(Header {
            key: "outbound.source.topic",
            value: Some(topic),
        })
        .insert(Header {
            key: "outbound.source.partition",
            value: Some(&partition.to_string()),
        })
        .insert(Header {
            key: "outbound.source.offset",
            value: Some(&offset.to_string()),
        });
    match &timestamp {
        Some(ts) => headers.insert(Header {
            key: "outbound.source.timestamp",
            value: Some(ts.as_str()),
        }),
        None => headers,
    }
}
