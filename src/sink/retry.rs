//! Which bulk responses retry, which fail for good, and how long to wait:
//! pure functions over an HTTP status and a bulk response body, tested below
//! with bodies recorded from the local search node (OpenSearch 2.19) and the
//! documented Elasticsearch rejection bodies.
//!
//! - Whole request: connection errors, timeouts, 408, 429 and 5xx retry;
//!   401/403 (credentials) and other 4xx are fatal (a configuration or
//!   protocol error that no retry fixes; the sink stops with the body).
//! - Per item: 200/201 are done; a 404 `not_found` delete is done (nothing
//!   to delete); 409 `version_conflict_engine_exception` is done (under
//!   `external_gte` the index already holds this document at a newer offset);
//!   429 and 5xx retry; a 404 `index_not_found_exception` retries after the
//!   indices are installed again; any other 4xx (mapping errors) is rejected
//!   for good and goes to the dead-letter topic.

use std::time::Duration;

use serde::Deserialize;

/// What to do with a whole bulk request's HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    /// 2xx: read the items.
    Items,
    /// Send again after a backoff.
    Retry,
    /// No retry can succeed.
    Fatal,
}

pub fn classify_status(status: u16) -> RequestClass {
    match status {
        200..=299 => RequestClass::Items,
        408 | 429 | 500..=599 => RequestClass::Retry,
        _ => RequestClass::Fatal,
    }
}

/// How one item ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// In the index (or, for a delete, absent): `created`, `updated`,
    /// `deleted`, `not_found`, or `conflict` (a newer version is there).
    Done(&'static str),
    /// Send the item again; the label says why (bounded).
    Retry(&'static str),
    /// Needs the indices installed again, then a retry.
    RetryAfterInstall,
    /// Rejected for good: dead-letter it.
    Reject {
        status: u16,
        error_type: String,
        reason: String,
    },
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

pub fn classify_item(item: &ItemResponse) -> ItemOutcome {
    let error_type = item
        .error
        .as_ref()
        .map(|e| e.error_type.as_str())
        .unwrap_or("");
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
        408 | 429 => ItemOutcome::Retry("item_429"),
        500..=599 => ItemOutcome::Retry("item_5xx"),
        status => ItemOutcome::Reject {
            status,
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
        },
    }
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

    fn outcomes(body: &str) -> Vec<ItemOutcome> {
        BulkResponse::parse(body.as_bytes())
            .unwrap()
            .iter()
            .map(classify_item)
            .collect()
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
            ItemOutcome::Reject {
                status: 400,
                error_type,
                reason,
            } => {
                assert_eq!(error_type, "mapper_parsing_exception");
                assert!(reason.contains("failed to parse field [units]"), "{reason}");
                assert!(
                    reason.contains("For input string: \"lots\""),
                    "cause included: {reason}"
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
        assert!(
            matches!(&got[6], ItemOutcome::Reject { status: 400, .. }),
            "invalid JSON source"
        );
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
        assert_eq!(
            got,
            vec![
                ItemOutcome::Done("created"),
                ItemOutcome::Retry("item_429"),
                ItemOutcome::Retry("item_5xx"),
                ItemOutcome::Retry("item_429"),
            ]
        );
    }

    #[test]
    fn request_statuses() {
        assert_eq!(classify_status(200), RequestClass::Items);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify_status(s), RequestClass::Retry, "{s}");
        }
        for s in [400, 401, 403, 404, 413] {
            assert_eq!(classify_status(s), RequestClass::Fatal, "{s}");
        }
    }

    #[test]
    fn unreadable_bodies_are_errors_not_panics() {
        assert!(BulkResponse::parse(b"<html>bad gateway</html>").is_err());
        assert!(BulkResponse::parse(br#"{"items":[{}]}"#).is_err());
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
