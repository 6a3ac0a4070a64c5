//! One output record → one bulk action: which index (by topic, and for
//! rollups by the key's `<rollup>/` prefix), which `_id`, and the action and
//! source lines, encoded once so retries resend the same bytes.
//!
//! Every action carries `version_type=external_gte` with
//! `version = epoch << 40 | offset`: a key always lands in the same
//! partition of its output topic, so offsets grow with every change of a
//! document. A replay rewrites a document with the version it already has
//! (accepted, unchanged) and an older record than the indexed one is refused
//! with a version conflict, which the sink counts as success. The epoch
//! (recorded in each index's `_meta`, see `ownership.rs`) numbers the
//! incarnations of the output topic: when a topic is re-created its offsets
//! start again, and only a higher epoch lets them win over what is indexed.
//! A tombstone becomes a versioned delete.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use outbound_pipeline::rollup::RollupName;

use super::indices::IndexRole;

/// Bits of the version that hold the offset: 2⁴⁰ (10¹²) records per
/// partition and incarnation, 2²³ epochs below the largest version.
pub const OFFSET_BITS: u32 = 40;

/// The external version of the record at `offset` in `epoch`.
pub fn version(epoch: u32, offset: i64) -> Option<i64> {
    (0..1i64 << OFFSET_BITS)
        .contains(&offset)
        .then(|| (i64::from(epoch) << OFFSET_BITS) | offset)
        .filter(|_| epoch < 1 << (63 - OFFSET_BITS))
}

/// Where the documents of one index go: the alias a bulk action names and
/// the epoch its versions are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub role: IndexRole,
    pub alias: Arc<str>,
    pub epoch: u32,
}

/// Where a record came from: named in every error and dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// What the bulk action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Index,
    Delete,
}

/// One encoded bulk action with what is needed to ack, retry or dead-letter it.
#[derive(Debug, Clone)]
pub struct BulkItem {
    pub origin: Origin,
    /// The record key as consumed (for the dead-letter topic).
    pub key: Bytes,
    /// The alias written to.
    pub index: Arc<str>,
    pub id: String,
    pub op: Op,
    /// The record timestamp (the source change time), for the end-to-end metric.
    pub timestamp_ms: Option<i64>,
    /// Action line and (for an index) source line, each ending in `\n`.
    pub encoded: Bytes,
}

impl BulkItem {
    /// The original document (source line without its newline), if any.
    pub fn source(&self) -> Option<&[u8]> {
        match self.op {
            Op::Delete => None,
            Op::Index => {
                let body = &self.encoded[..self.encoded.len().saturating_sub(1)];
                let start = body.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
                Some(&body[start..])
            }
        }
    }
}

/// A record that cannot become a bulk action; it goes to the dead-letter
/// topic with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("record has no key (the document id)")]
    MissingKey,
    #[error("key is not UTF-8")]
    KeyNotUtf8,
    #[error("key {0:?} is not `<rollup>/<doc_id>` with a known rollup (units_daily, courier_daily, warehouse_daily)")]
    UnknownRollup(String),
    #[error("document id is empty or longer than 512 bytes")]
    BadId,
    #[error("value is not a JSON object: {0}")]
    InvalidJson(String),
    #[error("record from topic {0} that the sink does not read")]
    UnknownTopic(String),
    #[error("document of {bytes} bytes is above the request limit of {limit} bytes (sink.max_request_bytes)")]
    TooLarge { bytes: usize, limit: usize },
    #[error(
        "offset {offset} or epoch {epoch} does not fit an external version (epoch << 40 | offset)"
    )]
    VersionOverflow { epoch: u32, offset: i64 },
}

impl EncodeError {
    /// Bounded label for metrics and the dead-letter header.
    pub fn kind(&self) -> &'static str {
        match self {
            EncodeError::MissingKey => "missing_key",
            EncodeError::KeyNotUtf8 => "key_not_utf8",
            EncodeError::UnknownRollup(_) => "unknown_rollup",
            EncodeError::BadId => "bad_id",
            EncodeError::InvalidJson(_) => "invalid_json",
            EncodeError::UnknownTopic(_) => "unknown_topic",
            EncodeError::TooLarge { .. } => "document_too_large",
            EncodeError::VersionOverflow { .. } => "version_overflow",
        }
    }

    /// Whether the record itself is at fault (dead-letter it); otherwise
    /// the sink's state is (stop with the error).
    pub fn is_records_fault(&self) -> bool {
        !matches!(self, EncodeError::VersionOverflow { .. })
    }
}

/// Routes records of the two output topics to their indices' targets.
#[derive(Debug, Clone)]
pub struct Encoder {
    details_topic: String,
    rollups_topic: String,
    details: Target,
    rollups: Vec<(RollupName, Target)>,
    max_bytes: usize,
}

#[derive(Serialize)]
struct ActionMeta<'a> {
    _index: &'a str,
    _id: &'a str,
    version: i64,
    version_type: &'static str,
}

#[derive(Serialize)]
enum Action<'a> {
    #[serde(rename = "index")]
    Index(ActionMeta<'a>),
    #[serde(rename = "delete")]
    Delete(ActionMeta<'a>),
}

impl Encoder {
    /// `targets` holds one target per index role; `max_bytes` is the
    /// largest bulk request (one document above it can never be sent).
    pub fn new(
        targets: &[Target],
        details_topic: &str,
        rollups_topic: &str,
        max_bytes: usize,
    ) -> anyhow::Result<Self> {
        let find = |role: IndexRole| {
            targets
                .iter()
                .find(|t| t.role == role)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no index target for {role:?}"))
        };
        Ok(Self {
            details_topic: details_topic.to_owned(),
            rollups_topic: rollups_topic.to_owned(),
            details: find(IndexRole::Details)?,
            rollups: RollupName::ALL
                .iter()
                .map(|r| Ok((*r, find(IndexRole::Rollup(*r))?)))
                .collect::<anyhow::Result<_>>()?,
            max_bytes,
        })
    }

    /// The topics the sink reads.
    pub fn topics(&self) -> [&str; 2] {
        [&self.details_topic, &self.rollups_topic]
    }

    /// Encodes one record. `value` = None is a tombstone.
    pub fn encode(
        &self,
        origin: Origin,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: Option<i64>,
    ) -> Result<BulkItem, EncodeError> {
        let key = key.ok_or(EncodeError::MissingKey)?;
        let key = std::str::from_utf8(key).map_err(|_| EncodeError::KeyNotUtf8)?;
        let (target, id) = if *origin.topic == *self.details_topic {
            (&self.details, key)
        } else if *origin.topic == *self.rollups_topic {
            let (rollup, id) = key
                .split_once('/')
                .ok_or_else(|| EncodeError::UnknownRollup(key.to_owned()))?;
            let target = self
                .rollups
                .iter()
                .find(|(r, _)| r.as_str() == rollup)
                .map(|(_, t)| t)
                .ok_or_else(|| EncodeError::UnknownRollup(key.to_owned()))?;
            (target, id)
        } else {
            return Err(EncodeError::UnknownTopic(origin.topic.to_string()));
        };
        if id.is_empty() || id.len() > 512 {
            return Err(EncodeError::BadId);
        }
        let version = version(target.epoch, origin.offset).ok_or(EncodeError::VersionOverflow {
            epoch: target.epoch,
            offset: origin.offset,
        })?;
        let index = target.alias.clone();
        let meta = ActionMeta {
            _index: &index,
            _id: id,
            version,
            version_type: "external_gte",
        };
        let (op, action) = match value {
            Some(_) => (Op::Index, Action::Index(meta)),
            None => (Op::Delete, Action::Delete(meta)),
        };
        let mut buf = BytesMut::with_capacity(96 + value.map_or(0, <[u8]>::len));
        {
            let mut w = (&mut buf).writer();
            // Serialising a struct of strings and integers cannot fail.
            let _ = serde_json::to_writer(&mut w, &action);
        }
        buf.put_u8(b'\n');
        if let Some(v) = value {
            append_source(&mut buf, v)?;
        }
        if buf.len() > self.max_bytes {
            return Err(EncodeError::TooLarge {
                bytes: buf.len(),
                limit: self.max_bytes,
            });
        }
        Ok(BulkItem {
            key: Bytes::copy_from_slice(key.as_bytes()),
            origin,
            index,
            id: id.to_owned(),
            op,
            timestamp_ms,
            encoded: buf.freeze(),
        })
    }
}

/// Appends the document as one line. The engine writes compact JSON, so the
/// bytes go as they are after a cheap check; anything else is re-encoded
/// compactly or refused.
fn append_source(buf: &mut BytesMut, value: &[u8]) -> Result<(), EncodeError> {
    let first = value.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(EncodeError::InvalidJson("expected a JSON object".into()));
    }
    if value.contains(&b'\n') || value.contains(&b'\r') {
        let doc: serde_json::Value =
            serde_json::from_slice(value).map_err(|e| EncodeError::InvalidJson(e.to_string()))?;
        let mut w = buf.writer();
        let _ = serde_json::to_writer(&mut w, &doc);
        let buf = w.into_inner();
        buf.put_u8(b'\n');
    } else {
        buf.extend_from_slice(value);
        buf.put_u8(b'\n');
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Targets named like a prefix `t-` would name them, in `epoch`.
    pub(crate) fn targets(prefix: &str, epoch: u32) -> Vec<Target> {
        std::iter::once(IndexRole::Details)
            .chain(RollupName::ALL.map(IndexRole::Rollup))
            .map(|role| Target {
                role,
                alias: format!("{prefix}{}-write", role.base_alias("outbound_details")).into(),
                epoch,
            })
            .collect()
    }

    fn encoder_in(epoch: u32, max_bytes: usize) -> Encoder {
        Encoder::new(
            &targets("t-", epoch),
            "app-details",
            "app-rollups",
            max_bytes,
        )
        .unwrap()
    }

    fn encoder() -> Encoder {
        encoder_in(0, 1 << 20)
    }

    fn origin(topic: &str, offset: i64) -> Origin {
        Origin {
            topic: topic.into(),
            partition: 2,
            offset,
        }
    }

    fn lines(item: &BulkItem) -> Vec<serde_json::Value> {
        std::str::from_utf8(&item.encoded)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn detail_record_indexes_with_the_offset_as_external_gte_version() {
        let doc = br#"{"order_id":"o1","status":"shipped"}"#;
        let item = encoder()
            .encode(
                origin("app-details", 41),
                Some(b"17"),
                Some(doc),
                Some(1_700_000_000_000),
            )
            .unwrap();
        assert_eq!(item.op, Op::Index);
        assert_eq!(&*item.index, "t-outbound_details-write");
        assert_eq!(item.id, "17");
        assert_eq!(
            lines(&item),
            vec![
                serde_json::json!({"index": {"_index": "t-outbound_details-write", "_id": "17", "version": 41, "version_type": "external_gte"}}),
                serde_json::json!({"order_id": "o1", "status": "shipped"}),
            ]
        );
        assert!(item.encoded.ends_with(b"\n"));
        assert_eq!(item.source(), Some(&doc[..]));
    }

    #[test]
    fn tombstone_becomes_a_versioned_delete() {
        let item = encoder()
            .encode(origin("app-details", 9), Some(b"17"), None, None)
            .unwrap();
        assert_eq!(item.op, Op::Delete);
        assert_eq!(item.source(), None);
        assert_eq!(
            lines(&item),
            vec![
                serde_json::json!({"delete": {"_index": "t-outbound_details-write", "_id": "17", "version": 9, "version_type": "external_gte"}})
            ]
        );
    }

    #[test]
    fn rollup_key_prefix_picks_the_index_and_the_rest_is_the_id() {
        let e = encoder();
        let item = e
            .encode(
                origin("app-rollups", 3),
                Some("units_daily/2024-05-01|wh1|phone".as_bytes()),
                Some(br#"{"units":2}"#),
                None,
            )
            .unwrap();
        assert_eq!(&*item.index, "t-units_daily-write");
        assert_eq!(item.id, "2024-05-01|wh1|phone");
        // Only the first `/` separates: ids may contain `/`.
        let item = e
            .encode(
                origin("app-rollups", 4),
                Some(b"courier_daily/2024-05-01|a/b"),
                None,
                None,
            )
            .unwrap();
        assert_eq!(&*item.index, "t-courier_daily-write");
        assert_eq!(item.id, "2024-05-01|a/b");
        let item = e
            .encode(
                origin("app-rollups", 5),
                Some(b"warehouse_daily/2024-05-01|wh\"1"),
                None,
                None,
            )
            .unwrap();
        assert_eq!(lines(&item)[0]["delete"]["_id"], "2024-05-01|wh\"1");
    }

    #[test]
    fn unusable_records_say_why() {
        let e = encoder();
        let err = |topic: &str, key: Option<&[u8]>, value: Option<&[u8]>| {
            e.encode(origin(topic, 1), key, value, None).unwrap_err()
        };
        assert_eq!(err("app-details", None, None), EncodeError::MissingKey);
        assert_eq!(
            err("app-details", Some(&[0xff, 0xfe]), None),
            EncodeError::KeyNotUtf8
        );
        assert_eq!(err("app-details", Some(b""), None), EncodeError::BadId);
        assert!(matches!(
            err("app-rollups", Some(b"hourly/x"), None),
            EncodeError::UnknownRollup(_)
        ));
        assert!(matches!(
            err("app-rollups", Some(b"nokey"), None),
            EncodeError::UnknownRollup(_)
        ));
        assert!(matches!(
            err("app-details", Some(b"1"), Some(b"[1]")),
            EncodeError::InvalidJson(_)
        ));
        assert!(matches!(
            err("app-details", Some(b"1"), Some(b"{\n")),
            EncodeError::InvalidJson(_)
        ));
        assert!(matches!(
            err("other", Some(b"1"), None),
            EncodeError::UnknownTopic(_)
        ));
    }

    #[test]
    fn the_epoch_is_folded_above_the_offset() {
        assert_eq!(version(0, 41), Some(41));
        assert_eq!(version(1, 0), Some(1 << 40));
        assert_eq!(version(3, 7), Some((3 << 40) | 7));
        assert!(version(1, 0) > version(0, (1 << 40) - 1));
        assert_eq!(version(0, 1 << 40), None, "offset above 40 bits");
        assert_eq!(version(0, -1), None);
        assert_eq!(version(1 << 23, 0), None, "epoch above 23 bits");
        assert_eq!(version((1 << 23) - 1, (1 << 40) - 1), Some(i64::MAX));
        let item = encoder_in(2, 1 << 20)
            .encode(origin("app-details", 5), Some(b"1"), None, None)
            .unwrap();
        assert_eq!(lines(&item)[0]["delete"]["version"], (2_i64 << 40) | 5);
        let err = encoder_in(0, 1 << 20)
            .encode(origin("app-details", 1 << 40), Some(b"1"), None, None)
            .unwrap_err();
        assert!(!err.is_records_fault(), "{err}");
    }

    #[test]
    fn a_document_above_the_request_limit_is_refused_at_encode_time() {
        let doc = format!("{{\"a\":\"{}\"}}", "x".repeat(500));
        let err = encoder_in(0, 300)
            .encode(
                origin("app-details", 1),
                Some(b"1"),
                Some(doc.as_bytes()),
                None,
            )
            .unwrap_err();
        assert!(
            matches!(err, EncodeError::TooLarge { limit: 300, .. }),
            "{err}"
        );
        assert_eq!(err.kind(), "document_too_large");
        assert!(err.is_records_fault());
        assert!(err.to_string().contains("sink.max_request_bytes"));
        // A delete is always small.
        assert!(encoder_in(0, 300)
            .encode(origin("app-details", 1), Some(b"1"), None, None)
            .is_ok());
    }

    #[test]
    fn multi_line_json_is_made_one_line() {
        let item = encoder()
            .encode(
                origin("app-details", 1),
                Some(b"1"),
                Some(b"{\n  \"a\": \"x\\ny\"\n}"),
                None,
            )
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&item.encoded).unwrap().lines().count(),
            2
        );
        assert_eq!(lines(&item)[1], serde_json::json!({"a": "x\ny"}));
    }
}
