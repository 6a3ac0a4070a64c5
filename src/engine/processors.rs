//! What each stage does with one record: the glue between Kafka records and
//! the pipeline's pure steps. Records that cannot be decoded go to the
//! dead-letter topic, in the same transaction, with the reason and their
//! source position; processing continues.

use outbound_pipeline::config::PipelineConfig;
use outbound_pipeline::join::DetailChange;
use outbound_pipeline::model::{ChangeEvent, Op};
use outbound_pipeline::rekey::KeyedChange;
use outbound_pipeline::rollup::RollupDelta;
use outbound_pipeline::store::StoreError;
use outbound_pipeline::{aggregate, codec, decode, join, rekey as rekey_step, resolve};
use rdkafka::message::{BorrowedMessage, OwnedHeaders};
use rdkafka::Message;

use super::partitioner::partition_for;
use super::task::StreamTask;
use super::topology::{Stage, Topics};
use super::transaction::{dead_letter_headers, source_headers, Transactions, TxnError};
use crate::metrics::Metrics;

/// Where a stage's records go: the open transaction.
pub struct Output<'a> {
    pub txn: &'a mut Transactions,
    pub topics: &'a Topics,
    pub metrics: &'a Metrics,
    /// Source timestamps of final outputs in the open transaction, observed
    /// as end-to-end latency once it commits.
    pub source_times: &'a mut Vec<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Txn(#[from] TxnError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Output<'_> {
    fn send(
        &mut self,
        output: &'static str,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
        ts: Option<i64>,
    ) -> Result<(), TxnError> {
        self.send_with(output, topic, partition, key, value, ts, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn send_with(
        &mut self,
        output: &'static str,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
        ts: Option<i64>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), TxnError> {
        self.txn.send(topic, partition, key, value, ts, headers)?;
        self.metrics.records_out.with_label_values(&[output]).inc();
        Ok(())
    }

    /// Sends the record as it came to the dead-letter topic, with why and
    /// where from in its headers.
    fn dead_letter(
        &mut self,
        m: &BorrowedMessage<'_>,
        reason: &'static str,
        detail: &str,
    ) -> Result<(), TxnError> {
        tracing::warn!(
            topic = m.topic(),
            partition = m.partition(),
            offset = m.offset(),
            reason,
            detail,
            "record sent to the dead-letter topic"
        );
        let headers = dead_letter_headers(
            detail,
            m.topic(),
            m.partition(),
            m.offset(),
            m.timestamp().to_millis(),
        );
        let key = m.key().unwrap_or_default();
        let partition = partition_for(key, self.topics.partitions);
        // Beyond the topic's limit the record could never be written (and its
        // partition would stall on it): keep the headers, which say where it is.
        let payload = m.payload().filter(|p| p.len() <= MAX_DEAD_LETTER_BYTES);
        self.txn.send(
            &self.topics.dead_letter,
            partition,
            key,
            payload,
            m.timestamp().to_millis(),
            Some(headers),
        )?;
        self.metrics.dead_letters.with_label_values(&[reason]).inc();
        self.metrics.records_out.with_label_values(&["dlq"]).inc();
        Ok(())
    }
}

/// Source records larger than this are not decoded. A row of the source
/// tables is a few kilobytes; what the rekey step would make of a bigger
/// record could not be written to the internal topics (the broker's default
/// 1 MB limit), and retrying it would stall its partition for good.
pub const MAX_SOURCE_RECORD_BYTES: usize = 1 << 20;

/// The dead-letter topic keeps records up to this size whole (its
/// `max.message.bytes` leaves room for the headers); of a bigger one only the
/// headers are kept, naming where it still is.
pub const MAX_DEAD_LETTER_BYTES: usize = 16 << 20;

/// Why a source record is refused before decoding, if it is: no change
/// event of these tables is near a megabyte.
pub fn oversized_source_record(payload: Option<&[u8]>) -> Option<(&'static str, String)> {
    match payload.map_or(0, <[u8]>::len) {
        n if n > MAX_SOURCE_RECORD_BYTES => Some((
            "record_too_large",
            format!("the value has {n} bytes, more than the {MAX_SOURCE_RECORD_BYTES} a change event may have"),
        )),
        _ => None,
    }
}

/// Why a decoded row change is refused, if it is: Debezium keys every row
/// change by its row's primary key (only a truncate, which names no row,
/// comes without a key), so a keyless one did not come from the connector.
pub fn keyless_row_change(
    key: Option<&[u8]>,
    event: &ChangeEvent,
) -> Option<(&'static str, String)> {
    (key.is_none() && event.op != Op::Truncate).then(|| {
        (
            "record_without_key",
            "a row change without a key (Debezium keys every row change by its primary key)"
                .to_owned(),
        )
    })
}

fn count_in(out: &Output<'_>, stage: &str, m: &BorrowedMessage<'_>) {
    out.metrics
        .records_in
        .with_label_values(&[stage, &m.partition().to_string()])
        .inc();
}

/// Source topics: decode the Debezium event and route its keyed changes to
/// the join partitions of their orders.
pub fn rekey(
    pipeline: &PipelineConfig,
    out: &mut Output<'_>,
    m: &BorrowedMessage<'_>,
) -> Result<(), ProcessError> {
    count_in(out, "rekey", m);
    let timer = out
        .metrics
        .processing_seconds
        .with_label_values(&["rekey"])
        .start_timer();
    if let Some((reason, detail)) = oversized_source_record(m.payload()) {
        return Ok(out.dead_letter(m, reason, &detail)?);
    }
    let event = match decode::decode_change(pipeline, m.topic(), m.key(), m.payload()) {
        Ok(Some(event)) => event,
        Ok(None) => {
            out.metrics.skipped.with_label_values(&["tombstone"]).inc();
            return Ok(());
        }
        Err(e) => return Ok(out.dead_letter(m, "undecodable_change_event", &e.to_string())?),
    };
    if let Some((reason, detail)) = keyless_row_change(m.key(), &event) {
        return Ok(out.dead_letter(m, reason, &detail)?);
    }
    let ts = Some(event.source.ts_ms)
        .filter(|t| *t > 0)
        .or(m.timestamp().to_millis());
    let partitions = out.topics.partitions;
    let rekey_topic = out.topics.rekey.clone();
    // Where each rekey record came from, for lineage and the exactly-once
    // audit (every source record reflected exactly once in the committed
    // rekey output; tests/chaos.rs).
    let lineage = source_headers(m.topic(), m.partition(), m.offset());
    for (route, change) in rekey_step::rekey(&event, m.offset()) {
        let bytes = match codec::encode(&change) {
            Ok(b) => b,
            Err(e) => return Ok(out.dead_letter(m, "unencodable_change", &e.to_string())?),
        };
        match route.partition_key() {
            Some(key) => {
                out.send_with(
                    "rekey",
                    &rekey_topic,
                    partition_for(&key, partitions),
                    &key,
                    Some(&bytes),
                    ts,
                    Some(lineage.clone()),
                )?;
            }
            // A truncate reaches every join partition.
            None => {
                for p in 0..partitions {
                    out.send_with(
                        "rekey",
                        &rekey_topic,
                        p,
                        b"",
                        Some(&bytes),
                        ts,
                        Some(lineage.clone()),
                    )?;
                }
            }
        }
    }
    timer.observe_duration();
    Ok(())
}

/// The stateful stages: decode the internal record and apply it to the task.
pub fn stateful(
    pipeline: &PipelineConfig,
    task: &mut StreamTask,
    out: &mut Output<'_>,
    m: &BorrowedMessage<'_>,
) -> Result<(), ProcessError> {
    let stage = task.stage;
    count_in(out, stage.name(), m);
    let timer = out
        .metrics
        .processing_seconds
        .with_label_values(&[stage.name()])
        .start_timer();
    let Some(payload) = m.payload() else {
        out.metrics.skipped.with_label_values(&["tombstone"]).inc();
        return Ok(());
    };
    let ts = m.timestamp().to_millis();
    let result = match stage {
        Stage::Join => match codec::decode::<KeyedChange>(payload) {
            Ok(change) => join_record(pipeline, task, out, &change, ts),
            Err(e) => {
                return Ok(out.dead_letter(m, "undecodable_internal_record", &e.to_string())?)
            }
        },
        Stage::Details => match codec::decode::<DetailChange>(payload) {
            Ok(change) => details_record(task, out, &change, ts),
            Err(e) => {
                return Ok(out.dead_letter(m, "undecodable_internal_record", &e.to_string())?)
            }
        },
        Stage::Aggregate => match codec::decode::<RollupDelta>(payload) {
            Ok(delta) => aggregate_record(task, out, &delta, ts),
            Err(e) => {
                return Ok(out.dead_letter(m, "undecodable_internal_record", &e.to_string())?)
            }
        },
    };
    timer.observe_duration();
    result
}

fn join_record(
    pipeline: &PipelineConfig,
    task: &mut StreamTask,
    out: &mut Output<'_>,
    change: &KeyedChange,
    ts: Option<i64>,
) -> Result<(), ProcessError> {
    let output = join::apply(pipeline, &mut task.state()?, change)?;
    let partitions = out.topics.partitions;
    let (detail_topic, delta_topic) = (
        out.topics.detail_changes.clone(),
        out.topics.rollup_deltas.clone(),
    );
    for detail in &output.details {
        let key = detail.id().as_bytes();
        let bytes = codec::encode(detail).map_err(StoreError::Encode)?;
        out.send(
            "detail-changes",
            &detail_topic,
            partition_for(key, partitions),
            key,
            Some(&bytes),
            ts,
        )?;
    }
    for delta in &output.deltas {
        let key = delta.key.qualified_id();
        let bytes = codec::encode(delta).map_err(StoreError::Encode)?;
        out.send(
            "rollup-deltas",
            &delta_topic,
            partition_for(key.as_bytes(), partitions),
            key.as_bytes(),
            Some(&bytes),
            ts,
        )?;
    }
    Ok(())
}

fn details_record(
    task: &mut StreamTask,
    out: &mut Output<'_>,
    change: &DetailChange,
    ts: Option<i64>,
) -> Result<(), ProcessError> {
    let Some(accepted) = resolve::apply(&mut task.state()?, change)? else {
        out.metrics
            .skipped
            .with_label_values(&["stale_detail_version"])
            .inc();
        return Ok(());
    };
    let key = accepted.id().as_bytes();
    let topic = out.topics.details.clone();
    let partition = partition_for(key, out.topics.partitions);
    match &accepted {
        DetailChange::Upsert { doc, .. } => {
            for dq in &doc.data_quality {
                out.metrics
                    .data_quality
                    .with_label_values(&[dq.field.as_str()])
                    .inc();
            }
            let json = serde_json::to_vec(doc).map_err(|e| StoreError::Backend(Box::new(e)))?;
            out.send("details", &topic, partition, key, Some(&json), ts)?;
        }
        DetailChange::Delete { .. } => out.send("details", &topic, partition, key, None, ts)?,
    }
    out.source_times.extend(ts);
    Ok(())
}

fn aggregate_record(
    task: &mut StreamTask,
    out: &mut Output<'_>,
    delta: &RollupDelta,
    ts: Option<i64>,
) -> Result<(), ProcessError> {
    let change = aggregate::apply(&mut task.state()?, delta)?;
    let key = format!("{}/{}", change.rollup().as_str(), change.id());
    let topic = out.topics.rollups.clone();
    let partition = partition_for(key.as_bytes(), out.topics.partitions);
    match &change {
        aggregate::RollupChange::Upsert { doc, .. } => {
            let json = serde_json::to_vec(doc).map_err(|e| StoreError::Backend(Box::new(e)))?;
            out.send(
                "rollups",
                &topic,
                partition,
                key.as_bytes(),
                Some(&json),
                ts,
            )?;
        }
        aggregate::RollupChange::Delete { .. } => {
            out.send("rollups", &topic, partition, key.as_bytes(), None, ts)?
        }
    }
    out.source_times.extend(ts);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_records_and_keyless_row_changes_are_refused() {
        assert_eq!(oversized_source_record(Some(b"{}")), None);
        assert_eq!(oversized_source_record(None), None);
        let big = vec![b' '; MAX_SOURCE_RECORD_BYTES + 1];
        assert_eq!(
            oversized_source_record(Some(&big)).map(|r| r.0),
            Some("record_too_large")
        );
        let event = |op| ChangeEvent {
            table: outbound_pipeline::model::SourceTable::Items,
            op,
            before: None,
            after: None,
            source: Default::default(),
            ts_ms: None,
        };
        assert_eq!(
            keyless_row_change(None, &event(Op::Create)).map(|r| r.0),
            Some("record_without_key")
        );
        assert_eq!(keyless_row_change(Some(b"{}"), &event(Op::Create)), None);
        // Debezium's truncate events name no row and carry no key.
        assert_eq!(keyless_row_change(None, &event(Op::Truncate)), None);
    }
}
