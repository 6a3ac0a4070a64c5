//! Which bulk responses retry, which fail for good, and how long to wait:
//! pure functions over an HTTP status and a bulk response body, tested below
//! with bodies recorded from the local search node (OpenSearch 2.19) and the
//! documented Elasticsearch rejection bodies (`testdata/`).
//!
//! Only what is the document's own fault is dead-lettered. Everything else
//! is the cluster's or the configuration's fault, and dead-lettering it would
//! drain the whole stream into the dead-letter topic (a missing privilege, a
//! write block, a closed index, an alias without a write index):
//!
//! - Whole request: connection errors, timeouts, 408, 429 and 5xx retry;
//!   413 (the body is above `http.max_content_length`) splits the request;
//!   401/403 (credentials, privileges) wait with backoff until an operator
//!   fixes them; any other status (400: a request the node cannot read) is
//!   a refusal that no retry fixes: the sink stops with the body.
//! - Per item: 2xx are done; a 404 `not_found` delete is done (nothing to
//!   delete); 409 `version_conflict_engine_exception` is done (under
//!   `external_gte` the index already holds this document at a newer
//!   version); 429 `es_rejected_execution_exception`, 408 and 5xx retry,
//!   a capped number of times; a 404 `index_not_found_exception` retries
//!   after the indices are installed again; a 400 whose type is on
//!   [`DOCUMENT_FAULTS`] is rejected and dead-lettered; anything else
//!   (blocks, security, closed indices, unknown types) blocks the batch:
//!   it waits with backoff, never dead-lettered, never committed.

use std::time::Duration;

use serde::Deserialize;

/// Error types that say the document itself cannot be indexed as it is:
/// its values do not fit the mapping, or the request built from it is
/// invalid. Only these are dead-lettered.
pub const DOCUMENT_FAULTS: &[&str] = &[
    "mapper_parsing_exception",
    // Elasticsearch 8.x's name for a mapping error.
    "document_parsing_exception",
    "strict_dynamic_mapping_exception",
    "mapper_exception",
    "illegal_argument_exception",
    "action_request_validation_exception",
    "parse_exception",
    "json_parse_exception",
    "x_content_parse_exception",
    "not_x_content_exception",
];

/// `illegal_argument_exception`s that are about the index, not the document.
const INDEX_ARGUMENT_FAULTS: &[&str] = &[
    "no write index is defined for alias",
    "has more than one index associated with it",
    "has more than one indices associated with it",
];

/// A batch rejected for more than this share (with at least
/// [`MOST_REJECTED_MIN`] rejections) stops the sink: that is a mapping that
/// no longer fits the documents, not bad documents.
pub const MOST_REJECTED_SHARE: f64 = 0.5;
pub const MOST_REJECTED_MIN: usize = 10;

/// What to do with a whole bulk request's HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    /// 2xx: read the items.
    Items,
    /// Send again after a backoff.
    Retry,
    /// 413: the body is larger than the node accepts; split it.
    TooLarge,
    /// 401/403: credentials or privileges; wait for an operator, with backoff.
    Blocked,
    /// No retry can succeed: stop with the body.
    Refused,
}

pub fn classify_status(status: u16) -> RequestClass {
    match status {
        200..=299 => RequestClass::Items,
        408 | 429 | 500..=599 => RequestClass::Retry,
        413 => RequestClass::TooLarge,
        401 | 403 => RequestClass::Blocked,
        _ => RequestClass::Refused,
    }
}

/// How one item ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// In the index (or, for a delete, absent): `created`, `updated`,
    /// `deleted`, `not_found`, or `conflict` (a newer version is there).
    Done(&'static str),
    /// Send the item again; counts against its attempts. The label says why.
    Retry(&'static str),
    /// Needs the indices installed again, then a retry.
    RetryAfterInstall,
    /// Not the document's fault: the batch waits until the cluster accepts it.
    Blocked(ItemFailure),
    /// The document's fault: dead-letter it.
    Reject(ItemFailure),
}

/// An item's error as the sink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFailure {
    pub status: u16,
    pub error_type: String,
    pub reason: String,
}

/// One entry of a bulk response's `items`, whatever the action.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ItemResponse {
    pub status: u16,
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub error: Option<ItemError>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ItemError {
    #[serde(rename = "type", default)]
    pub error_type: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub caused_by: Option<Box<ItemError>>,
}

impl ItemError {
    /// The reason with its causes, e.g. `failed to parse field [units] …: For input string: "lots"`.
    pub fn full_reason(&self) -> String {
        let mut s = self.reason.clone().unwrap_or_default();
        let mut cause = self.caused_by.as_deref();
        while let Some(c) = cause {
            if let Some(r) = &c.reason {
                s.push_str(": ");
                s.push_str(r);
            }
            cause = c.caused_by.as_deref();
        }
        s
    }
}

/// The parts of a bulk response the sink reads.
#[derive(Debug, Deserialize)]
pub struct BulkResponse {
    #[serde(default)]
    pub errors: bool,
    /// One `{ "<action>": item }` per action, in request order.
    pub items: Vec<std::collections::HashMap<String, ItemResponse>>,
}

impl BulkResponse {
    pub fn parse(body: &[u8]) -> Result<Vec<ItemResponse>, String> {
        let r: BulkResponse = serde_json::from_slice(body).map_err(|e| {
            format!(
                "unreadable bulk response ({e}): {}",
                String::from_utf8_lossy(&body[..body.len().min(500)])
            )
        })?;
        r.items
            .into_iter()
            .enumerate()
            .map(|(i, mut m)| {
                let key = m
                    .keys()
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("bulk response item {i} is empty"))?;
                m.remove(&key)
                    .ok_or_else(|| format!("bulk response item {i} is empty"))
            })
            .collect()
    }
}

/// Whether an error type (with its reason) is the document's own fault.
pub fn is_document_fault(status: u16, error_type: &str, reason: &str) -> bool {
    status == 400
        && DOCUMENT_FAULTS.contains(&error_type)
        && !(error_type == "illegal_argument_exception"
            && INDEX_ARGUMENT_FAULTS.iter().any(|f| reason.contains(f)))
}

pub fn classify_item(item: &ItemResponse) -> ItemOutcome {
    let error_type = item
        .error
        .as_ref()
        .map(|e| e.error_type.as_str())
        .unwrap_or("");
    let failure = || ItemFailure {
        status: item.status,
        error_type: if error_type.is_empty() {
            "unknown".into()
        } else {
            error_type.into()
        },
        reason: item
            .error
            .as_ref()
            .map(ItemError::full_reason)
            .unwrap_or_default(),
    };
    match item.status {
        200..=299 => ItemOutcome::Done(match item.result.as_deref() {
            Some("created") => "created",
            Some("deleted") => "deleted",
            Some("noop") => "noop",
            _ => "updated",
        }),
        404 if item.error.is_none() || item.result.as_deref() == Some("not_found") => {
            ItemOutcome::Done("not_found")
        }
        404 if error_type == "index_not_found_exception" => ItemOutcome::RetryAfterInstall,
        409 if error_type == "version_conflict_engine_exception" => ItemOutcome::Done("conflict"),
        // A flood-stage block answers 429 too, but lasts until an operator
        // frees disk: it blocks, it does not use up the item's attempts.
        429 if error_type == "cluster_block_exception" => ItemOutcome::Blocked(failure()),
        408 | 429 => ItemOutcome::Retry("item_429"),
        500..=599 => ItemOutcome::Retry("item_5xx"),
        status => {
            let f = failure();
            if is_document_fault(status, &f.error_type, &f.reason) {
                ItemOutcome::Reject(f)
            } else {
                ItemOutcome::Blocked(f)
            }
        }
    }
}

/// Whether a batch's rejections mean the mapping, not the documents, is wrong.
pub fn mostly_rejected(rejected: usize, documents: usize) -> bool {
    rejected >= MOST_REJECTED_MIN && rejected as f64 > MOST_REJECTED_SHARE * documents as f64
}

/// Whether an item that keeps failing with a transient error has used up
/// its attempts (`max_attempts`, 0 = no count limit) or the retry window.
pub fn item_exhausted(attempts: u32, max_attempts: u32, age: Duration, window: Duration) -> bool {
    (max_attempts > 0 && attempts >= max_attempts) || age >= window
}

/// Exponential backoff with jitter: attempt n (from 0) waits a uniformly
/// random delay in [d/2, d] with d = min(max, initial · 2ⁿ), so many sinks
/// retrying after one outage spread out instead of arriving together.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// `sink.retry_initial_backoff_ms` doubling up to `sink.retry_max_backoff_ms`.
    pub fn of(config: &super::config::SinkConfig) -> Self {
        Self {
            initial: Duration::from_millis(config.retry_initial_backoff_ms),
            max: Duration::from_millis(config.retry_max_backoff_ms),
        }
    }

    /// `unit` is a uniform random number in [0, 1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        let d = self.initial.saturating_mul(factor).min(self.max);
        let unit = unit.clamp(0.0, 1.0);
        d / 2 + d.mul_f64(unit / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &str = include_str!("testdata/bulk_mixed_opensearch_2_19.json");
    const CONFLICTS: &str = include_str!("testdata/bulk_conflicts_opensearch_2_19.json");
    const REJECTED_429: &str = include_str!("testdata/bulk_item_429_elasticsearch.json");
    const DOCUMENT_FAULTS_BODY: &str =
        include_str!("testdata/bulk_document_faults_opensearch_2_19.json");
    const BLOCKED: &str = include_str!("testdata/bulk_blocked_opensearch_2_19.json");
    const FORBIDDEN_ITEMS: &str = include_str!("testdata/bulk_item_403_elasticsearch.json");
    const UNAVAILABLE: &str = include_str!("testdata/bulk_unavailable_shards_opensearch_2_19.json");

    fn outcomes(body: &str) -> Vec<ItemOutcome> {
        BulkResponse::parse(body.as_bytes())
            .unwrap()
            .iter()
            .map(classify_item)
            .collect()
    }

    fn rejected_type(o: &ItemOutcome) -> Option<&str> {
        match o {
            ItemOutcome::Reject(f) => Some(f.error_type.as_str()),
            _ => None,
        }
    }

    fn blocked_type(o: &ItemOutcome) -> Option<&str> {
        match o {
            ItemOutcome::Blocked(f) => Some(f.error_type.as_str()),
            _ => None,
        }
    }

    #[test]
    fn recorded_mixed_response() {
        let got = outcomes(MIXED);
        assert_eq!(got.len(), 7);
        assert_eq!(got[0], ItemOutcome::Done("created"));
        assert_eq!(
            got[1],
            ItemOutcome::Done("updated"),
            "same version again (a replay) is accepted"
        );
        match &got[2] {
            ItemOutcome::Reject(f) => {
                assert_eq!(f.status, 400);
                assert_eq!(f.error_type, "mapper_parsing_exception");
                assert!(f.reason.contains("failed to parse field [units]"), "{f:?}");
                assert!(
                    f.reason.contains("For input string: \"lots\""),
                    "cause included: {f:?}"
                );
            }
            other => panic!("mapping error must be rejected for good: {other:?}"),
        }
        assert_eq!(
            got[3],
            ItemOutcome::Done("not_found"),
            "deleting an absent document"
        );
        assert_eq!(got[4], ItemOutcome::Done("updated"));
        assert_eq!(
            got[5],
            ItemOutcome::RetryAfterInstall,
            "alias missing under require_alias"
        );
        assert!(rejected_type(&got[6]).is_some(), "invalid JSON source");
    }

    #[test]
    fn only_the_documents_own_faults_are_dead_lettered() {
        let got = outcomes(DOCUMENT_FAULTS_BODY);
        assert_eq!(got.len(), 7);
        assert_eq!(got[0], ItemOutcome::Done("created"));
        assert_eq!(rejected_type(&got[1]), Some("mapper_parsing_exception"));
        assert_eq!(
            rejected_type(&got[2]),
            Some("strict_dynamic_mapping_exception")
        );
        assert_eq!(
            rejected_type(&got[3]),
            Some("illegal_argument_exception"),
            "an immense term is the document's"
        );
        assert_eq!(got[4], ItemOutcome::Done("conflict"));
        assert_eq!(
            blocked_type(&got[5]),
            Some("illegal_argument_exception"),
            "no write index for the alias is the index's fault, not the document's"
        );
        assert_eq!(got[6], ItemOutcome::RetryAfterInstall);
    }

    #[test]
    fn blocks_closed_indices_and_missing_privileges_block_the_batch() {
        let got = outcomes(BLOCKED);
        assert_eq!(
            got.iter().map(blocked_type).collect::<Vec<_>>(),
            [
                Some("cluster_block_exception"),
                Some("cluster_block_exception"),
                Some("cluster_block_exception"),
                Some("index_closed_exception"),
            ],
            "write block (403), its delete, flood-stage read-only (429), closed index (400)"
        );
        let got = outcomes(FORBIDDEN_ITEMS);
        assert_eq!(
            got.iter().map(blocked_type).collect::<Vec<_>>(),
            [Some("security_exception"), Some("security_exception")]
        );
    }

    #[test]
    fn unknown_error_types_are_never_dead_lettered() {
        for (status, error_type) in [
            (400, "some_new_exception"),
            (400, ""),
            (403, "mapper_parsing_exception"),
            (422, "mapper_parsing_exception"),
        ] {
            let item = ItemResponse {
                status,
                result: None,
                error: Some(ItemError {
                    error_type: error_type.into(),
                    reason: Some("x".into()),
                    caused_by: None,
                }),
            };
            assert!(
                matches!(classify_item(&item), ItemOutcome::Blocked(_)),
                "{status} {error_type:?}"
            );
        }
    }

    #[test]
    fn version_conflicts_under_external_versioning_are_success() {
        let got = outcomes(CONFLICTS);
        assert_eq!(
            got,
            vec![
                ItemOutcome::Done("updated"),
                ItemOutcome::Done("conflict"),
                ItemOutcome::Done("conflict"),
                ItemOutcome::Done("deleted"),
            ]
        );
    }

    #[test]
    fn rejected_execution_and_unavailable_shards_retry() {
        let got = outcomes(REJECTED_429);
        assert_eq!(got[0], ItemOutcome::Done("created"));
        assert_eq!(got[1], ItemOutcome::Retry("item_429"));
        assert_eq!(got[2], ItemOutcome::Retry("item_5xx"));
        assert_eq!(
            blocked_type(&got[3]),
            Some("cluster_block_exception"),
            "flood stage read-only: blocked, not a capped retry"
        );
        assert_eq!(outcomes(UNAVAILABLE), vec![ItemOutcome::Retry("item_5xx")]);
    }

    #[test]
    fn request_statuses() {
        assert_eq!(classify_status(200), RequestClass::Items);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify_status(s), RequestClass::Retry, "{s}");
        }
        assert_eq!(classify_status(413), RequestClass::TooLarge);
        for s in [401, 403] {
            assert_eq!(classify_status(s), RequestClass::Blocked, "{s}");
        }
        for s in [400, 404, 405] {
            assert_eq!(classify_status(s), RequestClass::Refused, "{s}");
        }
    }

    #[test]
    fn recorded_whole_request_refusals_parse_as_errors() {
        for body in [
            include_str!("testdata/request_400_validation_opensearch_2_19.json"),
            include_str!("testdata/request_400_no_newline_opensearch_2_19.json"),
            include_str!("testdata/request_403_elasticsearch.json"),
        ] {
            assert!(BulkResponse::parse(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn most_of_a_batch_rejected_needs_a_majority_of_enough_documents() {
        assert!(mostly_rejected(40, 41));
        assert!(mostly_rejected(10, 19));
        assert!(!mostly_rejected(10, 20), "exactly half");
        assert!(!mostly_rejected(9, 9), "too few to judge the mapping by");
        assert!(!mostly_rejected(1, 1));
        assert!(!mostly_rejected(0, 0));
    }

    #[test]
    fn items_are_exhausted_by_attempts_or_by_the_window() {
        let w = Duration::from_secs(300);
        assert!(!item_exhausted(2, 3, Duration::from_secs(1), w));
        assert!(item_exhausted(3, 3, Duration::from_secs(1), w));
        assert!(!item_exhausted(1_000, 0, Duration::from_secs(1), w));
        assert!(item_exhausted(1, 0, w, w));
    }

    #[test]
    fn unreadable_bodies_are_errors_not_panics() {
        assert!(BulkResponse::parse(b"<html>bad gateway</html>").is_err());
        assert!(BulkResponse::parse(br#"{"items":[{}]}"#).is_err());
        assert!(BulkResponse::parse(b"").is_err());
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        };
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(200));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(1600));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(1200));
        assert_eq!(b.delay(20, 1.0), Duration::from_secs(30));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(15));
        for attempt in 0..12 {
            let lo = b.delay(attempt, 0.0);
            let hi = b.delay(attempt, 0.999);
            assert!(lo <= hi && hi <= b.max);
        }
    }
}
