//! Delivering one batch: send it, read every item's answer (`retry.rs`),
//! send again what must be retried, until every item is in the index or
//! dead-lettered. What the loop around it may count on:
//!
//! - a request answered 413 is split in halves (recursively); a document
//!   that alone is too large is dead-lettered;
//! - an item failing with a transient error (429, 5xx) is retried at most
//!   `sink.max_item_attempts` times, then dead-lettered;
//! - items blocked by the cluster (a write block, privileges, a closed
//!   index) and requests failing as a whole are retried with backoff, never
//!   dead-lettered, and reported on the sink's health;
//! - nothing is retried past `sink.retry_window_ms` from the batch's first
//!   attempt (below `index.gc_deletes`, so an old write can never bring back
//!   a document deleted meanwhile): items are dead-lettered, a batch still
//!   failing as a whole ends [`StaleBatch`] and the sink starts again from
//!   its committed offsets, sending the newer records after it again;
//! - a batch rejected for the most part, a request the node refuses to read
//!   (400) and an index gone from behind its alias end in a refusal.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

use super::dlq::DeadLetter;
use super::encoder::BulkItem;
use super::errors::Refusal;
use super::request_builder::bulk_body;
use super::retry::{
    classify_item, item_exhausted, mostly_rejected, Backoff, ItemFailure, ItemOutcome, RequestClass,
};
use super::service::BulkService;

/// A batch still failing as a whole after `sink.retry_window_ms`.
#[derive(Debug, thiserror::Error)]
#[error("batch {batch}: {documents} documents still not acknowledged after {secs} s (sink.retry_window_ms): {last}")]
pub struct StaleBatch {
    pub batch: u64,
    pub documents: usize,
    pub secs: u64,
    pub last: String,
}

/// How a delivery ended without acknowledging the batch.
#[derive(Debug)]
pub enum DeliveryError {
    /// Shutdown while waiting: not acknowledged, sent again next run.
    Aborted,
    /// The sink must stop (restart from its committed offsets, or wait for
    /// an operator when the error is a [`Refusal`]).
    Failed(anyhow::Error),
}

/// What a delivered batch left: documents to dead-letter, and the source
/// timestamps of those acknowledged (for the end-to-end latency).
#[derive(Debug, Default)]
pub struct Delivered {
    pub letters: Vec<DeadLetter>,
    pub acked_timestamps: Vec<i64>,
}

/// What every delivery shares.
pub struct Delivery {
    pub service: BulkService,
    pub metrics: Arc<Metrics>,
    pub backoff: Backoff,
    /// Whole-request attempts before giving up on the batch; 0 = window only.
    pub max_request_attempts: u32,
    pub max_item_attempts: u32,
    pub window: Duration,
    pub shutdown: Shutdown,
}

impl Delivery {
    /// The delivery settings of `config` (`[sink]` retry keys).
    pub fn new(
        config: &super::config::SinkConfig,
        service: BulkService,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            service,
            metrics,
            backoff: Backoff::of(config),
            max_request_attempts: config.retry_max_attempts,
            max_item_attempts: config.max_item_attempts,
            window: Duration::from_millis(config.retry_window_ms),
            shutdown,
        }
    }

    /// Delivers `items`; `letters` are the batch's records already refused
    /// when encoded (they travel with it to the dead-letter topic).
    pub async fn deliver(
        &self,
        batch_id: u64,
        items: &[BulkItem],
        mut letters: Vec<DeadLetter>,
    ) -> Result<Delivered, DeliveryError> {
        let m = &self.metrics.sink;
        let health = &m.health;
        let started = Instant::now();
        let mut attempts = vec![0u32; items.len()];
        let mut rejected = 0usize;
        let mut first_rejection: Option<String> = None;
        let mut acked_timestamps = Vec::with_capacity(items.len());
        // Requests still to send, in order: a 413 splits the front one.
        let mut queue: VecDeque<Vec<usize>> = VecDeque::from([(0..items.len()).collect()]);
        let mut failed_requests = 0u32;
        let mut waits = 0u32;
        while let Some(chunk) = queue.pop_front() {
            if chunk.is_empty() {
                continue;
            }
            let first = &items[chunk[0]];
            let failure = match self
                .service
                .bulk(bulk_body(chunk.iter().map(|&i| &items[i])), chunk.len())
                .await
            {
                Ok((responses, elapsed)) => {
                    m.bulk_seconds.observe(elapsed.as_secs_f64());
                    m.requests.with_label_values(&["ok"]).inc();
                    failed_requests = 0;
                    let mut again = Vec::new();
                    let mut blocked: Option<(usize, ItemFailure)> = None;
                    for (&i, response) in chunk.iter().zip(&responses) {
                        match classify_item(response) {
                            ItemOutcome::Done(result) => {
                                m.items.with_label_values(&[result]).inc();
                                if let Some(ts) = items[i].timestamp_ms {
                                    acked_timestamps.push(ts);
                                }
                            }
                            ItemOutcome::Retry(reason) => {
                                m.retries.with_label_values(&[reason]).inc();
                                attempts[i] += 1;
                                let f = failure_of(response);
                                if item_exhausted(
                                    attempts[i],
                                    self.max_item_attempts,
                                    started.elapsed(),
                                    self.window,
                                ) {
                                    letters.push(exhausted_letter(
                                        &items[i],
                                        attempts[i],
                                        started.elapsed(),
                                        &f,
                                    ));
                                } else {
                                    again.push(i);
                                }
                            }
                            ItemOutcome::RetryAfterInstall => {
                                return Err(DeliveryError::Failed(
                                    Refusal::new(format!(
                                        "index {} is gone from behind its alias while the sink \
                                         was writing ({}): a new index would miss every document \
                                         before the committed offsets. Run `outbound \
                                         rebuild-indices`",
                                        items[i].index,
                                        failure_of(response).reason
                                    ))
                                    .into(),
                                ))
                            }
                            ItemOutcome::Blocked(f) => {
                                m.retries.with_label_values(&["blocked"]).inc();
                                again.push(i);
                                blocked.get_or_insert((i, f));
                            }
                            ItemOutcome::Reject(f) => {
                                rejected += 1;
                                first_rejection.get_or_insert_with(|| {
                                    format!(
                                        "{} → {}/{}: {}: {}",
                                        items[i].origin,
                                        items[i].index,
                                        items[i].id,
                                        f.error_type,
                                        f.reason
                                    )
                                });
                                letters.push(rejected_letter(&items[i], f));
                            }
                        }
                    }
                    if mostly_rejected(rejected, items.len()) {
                        return Err(DeliveryError::Failed(most_rejected(
                            batch_id,
                            items.len(),
                            rejected,
                            first_rejection.as_deref().unwrap_or("?"),
                        )));
                    }
                    if again.is_empty() {
                        health.succeeded();
                        continue;
                    }
                    let message = match &blocked {
                        Some((i, f)) => format!(
                            "{} documents blocked by the cluster, not by their content (first \
                             {} → {}/{}: HTTP {} {}: {}); retrying, nothing is dead-lettered",
                            again.len(),
                            items[*i].origin,
                            items[*i].index,
                            items[*i].id,
                            f.status,
                            f.error_type,
                            f.reason
                        ),
                        None => format!(
                            "{} of {} documents to retry (first {})",
                            again.len(),
                            chunk.len(),
                            items[again[0]].origin
                        ),
                    };
                    queue.push_front(again);
                    if blocked.is_some() {
                        health.failing(message.clone());
                        if started.elapsed() >= self.window {
                            return Err(self.stale(batch_id, &queue, started, message));
                        }
                    }
                    message
                }
                Err(e) => match e.class() {
                    RequestClass::TooLarge => {
                        m.retries.with_label_values(&["too_large"]).inc();
                        if let [only] = chunk.as_slice() {
                            letters.push(too_large_letter(&items[*only]));
                        } else {
                            let (a, b) = chunk.split_at(chunk.len() / 2);
                            queue.push_front(b.to_vec());
                            queue.push_front(a.to_vec());
                        }
                        continue;
                    }
                    RequestClass::Retry | RequestClass::Blocked => {
                        m.requests.with_label_values(&["retry"]).inc();
                        m.retries.with_label_values(&[e.label()]).inc();
                        failed_requests += 1;
                        let message = format!(
                            "bulk request of {} documents failed (first {} → {}/{}): {e}",
                            chunk.len(),
                            first.origin,
                            first.index,
                            first.id
                        );
                        health.failing(message.clone());
                        queue.push_front(chunk);
                        if self.max_request_attempts > 0
                            && failed_requests >= self.max_request_attempts
                        {
                            return Err(DeliveryError::Failed(anyhow::anyhow!(
                                "batch {batch_id}: {message}; gave up after {failed_requests} \
                                 attempts (sink.retry_max_attempts)"
                            )));
                        }
                        if started.elapsed() >= self.window {
                            return Err(self.stale(batch_id, &queue, started, message));
                        }
                        message
                    }
                    RequestClass::Refused | RequestClass::Items => {
                        m.requests.with_label_values(&["fatal"]).inc();
                        return Err(DeliveryError::Failed(
                            Refusal::new(format!(
                                "Elasticsearch refuses the sink's bulk requests (batch {batch_id}, \
                                 {} documents, first {} → {}/{}): {e}",
                                chunk.len(),
                                first.origin,
                                first.index,
                                first.id
                            ))
                            .into(),
                        ));
                    }
                },
            };
            if waits == 0 || waits.is_multiple_of(10) {
                warn!(batch = batch_id, attempt = waits, "{failure}");
            }
            let delay = self.backoff.delay(waits, rand::random());
            waits = waits.saturating_add(1);
            self.wait(delay).await?;
        }
        Ok(Delivered {
            letters,
            acked_timestamps,
        })
    }

    fn stale(
        &self,
        batch: u64,
        queue: &VecDeque<Vec<usize>>,
        started: Instant,
        last: String,
    ) -> DeliveryError {
        DeliveryError::Failed(
            StaleBatch {
                batch,
                documents: queue.iter().map(Vec::len).sum(),
                secs: started.elapsed().as_secs(),
                last,
            }
            .into(),
        )
    }

    async fn wait(&self, delay: Duration) -> Result<(), DeliveryError> {
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if self.shutdown.is_requested() {
                return Err(DeliveryError::Aborted);
            }
            tokio::time::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100)),
            )
            .await;
        }
        Ok(())
    }
}

fn failure_of(response: &super::retry::ItemResponse) -> ItemFailure {
    ItemFailure {
        status: response.status,
        error_type: response
            .error
            .as_ref()
            .map(|e| e.error_type.clone())
            .unwrap_or_default(),
        reason: response
            .error
            .as_ref()
            .map(super::retry::ItemError::full_reason)
            .unwrap_or_default(),
    }
}

/// The refusal for a batch rejected for the most part.
fn most_rejected(batch: u64, documents: usize, rejected: usize, first: &str) -> anyhow::Error {
    Refusal::new(format!(
        "Elasticsearch rejected {rejected} of {documents} documents of batch {batch} (first \
         {first}). When most of a batch is rejected the mapping no longer fits the documents (a \
         template change?); nothing was dead-lettered or committed. Fix the mapping (then \
         `outbound rebuild-indices`) and the sink goes on"
    ))
    .into()
}

fn letter(item: &BulkItem, status: Option<u16>, error_type: String, reason: String) -> DeadLetter {
    DeadLetter {
        origin: item.origin.clone(),
        key: Some(item.key.to_vec()),
        value: item.source().map(<[u8]>::to_vec),
        timestamp_ms: item.timestamp_ms,
        error_type,
        reason,
        index: Some(item.index.to_string()),
        id: Some(item.id.clone()),
        status,
        topic_id: None,
    }
}

fn rejected_letter(item: &BulkItem, f: ItemFailure) -> DeadLetter {
    letter(item, Some(f.status), f.error_type, f.reason)
}

fn exhausted_letter(item: &BulkItem, attempts: u32, age: Duration, f: &ItemFailure) -> DeadLetter {
    letter(
        item,
        Some(f.status),
        "retries_exhausted".into(),
        format!(
            "{attempts} attempts over {} s (sink.max_item_attempts, sink.retry_window_ms); last: \
             HTTP {} {}: {}",
            age.as_secs(),
            f.status,
            f.error_type,
            f.reason
        ),
    )
}

fn too_large_letter(item: &BulkItem) -> DeadLetter {
    letter(
        item,
        Some(413),
        "document_too_large".into(),
        format!(
            "a bulk request of this document alone ({} bytes) was answered 413: it is above the \
             cluster's http.max_content_length (or a proxy's limit)",
            item.encoded.len()
        ),
    )
}
