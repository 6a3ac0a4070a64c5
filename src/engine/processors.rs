//! What each stage does with one record: the glue between Kafka records and
//! the pipeline's pure steps, named in the topology table
//! ([`super::topology`]). Processors write into the record collector; a record
//! that cannot be decoded goes to the dead-letter topic, in the same
//! transaction, with the reason and its source position, and processing
//! continues.

use outbound_pipeline::config::PipelineConfig;
use outbound_pipeline::join::DetailChange;
use outbound_pipeline::model::{ChangeEvent, Op};
use outbound_pipeline::rekey::KeyedChange;
use outbound_pipeline::rollup::RollupDelta;
use outbound_pipeline::store::{StateStore, StoreError};
use outbound_pipeline::{aggregate, codec, decode, join, rekey as rekey_step, resolve};

use super::partitioner::partition_for;
use super::record_collector::{Record, RecordCollector, TooLarge};
use super::topics::Topics;
use super::topology::Output;
use crate::metrics::Metrics;

/// One consumed record, as the processors see it.
pub struct Input<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub timestamp: Option<i64>,
}

/// What a processor writes to and reads settings from.
pub struct Context<'a> {
    pub pipeline: &'a PipelineConfig,
    pub topics: &'a Topics,
    pub out: &'a mut RecordCollector,
    pub metrics: &'a Metrics,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The record cannot be processed, now or ever (one of its outputs is
    /// too large for its topic): it goes to the dead-letter topic instead,
    /// and everything it did is taken back.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The task's state failed: not the record's fault.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The stateless source processor.
pub type SourceProcessor = fn(&mut Context<'_>, &Input<'_>) -> Result<(), ProcessError>;
/// A stateful stage's processor, over its task's state.
pub type StageProcessor =
    fn(&mut Context<'_>, &mut dyn StateStore, &Input<'_>) -> Result<(), ProcessError>;

/// Headers of a dead-letter record: why it failed and where it came from.
/// The dead-letter topic keeps append times (retention counts from the
/// failure); the record's own timestamp goes in `outbound.source.timestamp`.
pub fn dead_letter_headers(reason: &str, input: &Input<'_>) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("outbound.error", reason.to_owned()),
        ("outbound.source.topic", input.topic.to_owned()),
        ("outbound.source.partition", input.partition.to_string()),
        ("outbound.source.offset", input.offset.to_string()),
    ];
    if let Some(ts) = input.timestamp {
        h.push(("outbound.source.timestamp", ts.to_string()));
    }
    h
}

impl Context<'_> {
    /// Sends the record as it came to the dead-letter topic, with why and
    /// where from in its headers. A record too large for even the
    /// dead-letter topic goes without its value (the headers say where it is).
    pub fn dead_letter(&mut self, input: &Input<'_>, reason: &'static str, detail: &str) {
        tracing::warn!(
            topic = input.topic,
            partition = input.partition,
            offset = input.offset,
            reason,
            detail,
            "record sent to the dead-letter topic"
        );
        let key = input.key.unwrap_or_default().to_vec();
        let mut headers = dead_letter_headers(detail, input);
        let mut value = input.payload.map(<[u8]>::to_vec);
        let size = key.len() + value.as_ref().map_or(0, Vec::len) + 1024 + detail.len();
        if size > self.out.limits().dead_letter() {
            headers.push((
                "outbound.payload.omitted",
                format!(
                    "{} bytes: larger than the dead-letter topic takes",
                    value.as_ref().map_or(0, Vec::len)
                ),
            ));
            value = None;
        }
        let record = Record {
            output: Output::DeadLetter,
            partition: partition_for(&key, self.topics.partitions),
            key,
            value,
            timestamp: input.timestamp,
            headers,
        };
        if let Err(e) = self.out.send(record) {
            // Only a huge key or reason could get here: keep the position.
            tracing::error!(error = %e, topic = input.topic, partition = input.partition, offset = input.offset, "the dead letter itself is too large; only the log keeps it");
        }
        self.metrics.dead_letters.with_label_values(&[reason]).inc();
    }

    fn count_in(&self, stage: &str, input: &Input<'_>) {
        self.metrics
            .records_in
            .with_label_values(&[stage, &input.partition.to_string()])
            .inc();
    }
}

/// Source records larger than this are not decoded. A row of the source
/// tables is a few kilobytes; what the rekey step would make of a bigger
/// record could not be written to the internal topics (the broker's default
/// 1 MB limit), and retrying it would stall its partition for good.
pub const MAX_SOURCE_RECORD_BYTES: usize = 1 << 20;

/// The dead-letter topic keeps records up to this size whole (its
/// `max.message.bytes`, [`super::topics::DEAD_LETTER_MAX_BYTES`], leaves room
/// for the headers); of a bigger one only the headers are kept, naming where
/// it still is.
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

/// Headers naming a rekey record's source position: `outbound.source.topic`,
/// `outbound.source.partition`, `outbound.source.offset` (lineage, and the
/// chaos test's exactly-once audit: every source record reflected exactly
/// once in the committed rekey output).
pub fn source_headers(input: &Input<'_>) -> Vec<(&'static str, String)> {
    vec![
        ("outbound.source.topic", input.topic.to_owned()),
        ("outbound.source.partition", input.partition.to_string()),
        ("outbound.source.offset", input.offset.to_string()),
    ]
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    codec::encode(value).map_err(StoreError::Encode)
}

/// Source topics: decode the Debezium event and route its keyed changes to
/// the join partitions of their orders.
pub fn rekey(ctx: &mut Context<'_>, input: &Input<'_>) -> Result<(), ProcessError> {
    ctx.count_in("rekey", input);
    let timer = ctx
        .metrics
        .processing_seconds
        .with_label_values(&["rekey"])
        .start_timer();
    if let Some((reason, detail)) = oversized_source_record(input.payload) {
        ctx.dead_letter(input, reason, &detail);
        return Ok(());
    }
    let event = match decode::decode_change(ctx.pipeline, input.topic, input.key, input.payload) {
        Ok(Some(event)) => event,
        Ok(None) => {
            ctx.metrics.skipped.with_label_values(&["tombstone"]).inc();
            return Ok(());
        }
        Err(e) => {
            ctx.dead_letter(input, "undecodable_change_event", &e.to_string());
            return Ok(());
        }
    };
    if let Some((reason, detail)) = keyless_row_change(input.key, &event) {
        ctx.dead_letter(input, reason, &detail);
        return Ok(());
    }
    let ts = Some(event.source.ts_ms)
        .filter(|t| *t > 0)
        .or(input.timestamp);
    let partitions = ctx.topics.partitions;
    let lineage = source_headers(input);
    for (route, change) in rekey_step::rekey(&event, input.offset) {
        let bytes = match codec::encode(&change) {
            Ok(b) => b,
            Err(e) => {
                ctx.dead_letter(input, "unencodable_change", &e.to_string());
                return Ok(());
            }
        };
        match route.partition_key() {
            Some(key) => ctx.out.send(Record {
                output: Output::Rekey,
                partition: partition_for(&key, partitions),
                key,
                value: Some(bytes),
                timestamp: ts,
                headers: lineage.clone(),
            })?,
            // A truncate reaches every join partition.
            None => {
                for p in 0..partitions {
                    ctx.out.send(Record {
                        output: Output::Rekey,
                        partition: p,
                        key: Vec::new(),
                        value: Some(bytes.clone()),
                        timestamp: ts,
                        headers: lineage.clone(),
                    })?;
                }
            }
        }
    }
    timer.observe_duration();
    Ok(())
}

/// Decodes an internal record, or dead-letters it.
fn internal<T: serde::de::DeserializeOwned>(
    ctx: &mut Context<'_>,
    stage: &'static str,
    input: &Input<'_>,
) -> Option<T> {
    ctx.count_in(stage, input);
    let Some(payload) = input.payload else {
        ctx.metrics.skipped.with_label_values(&["tombstone"]).inc();
        return None;
    };
    match codec::decode::<T>(payload) {
        Ok(v) => Some(v),
        Err(e) => {
            ctx.dead_letter(input, "undecodable_internal_record", &e.to_string());
            None
        }
    }
}

/// The join stage: an order's rows → detail changes and rollup deltas.
pub fn join(
    ctx: &mut Context<'_>,
    state: &mut dyn StateStore,
    input: &Input<'_>,
) -> Result<(), ProcessError> {
    let Some(change) = internal::<KeyedChange>(ctx, "join", input) else {
        return Ok(());
    };
    let timer = ctx
        .metrics
        .processing_seconds
        .with_label_values(&["join"])
        .start_timer();
    let output = join::apply(ctx.pipeline, state, &change)?;
    let partitions = ctx.topics.partitions;
    for detail in &output.details {
        let id = detail.id();
        ctx.out.send_detail_change(
            partition_for(id.as_bytes(), partitions),
            id,
            detail.version(),
            matches!(detail, DetailChange::Upsert { .. }),
            encode(detail)?,
            input.timestamp,
        )?;
    }
    for delta in output.deltas {
        let key = delta.key.qualified_id();
        ctx.out.send_delta(
            partition_for(key.as_bytes(), partitions),
            key,
            delta,
            input.timestamp,
        )?;
    }
    timer.observe_duration();
    Ok(())
}

/// The details stage: the newest change per document wins.
pub fn details(
    ctx: &mut Context<'_>,
    state: &mut dyn StateStore,
    input: &Input<'_>,
) -> Result<(), ProcessError> {
    let Some(change) = internal::<DetailChange>(ctx, "details", input) else {
        return Ok(());
    };
    let timer = ctx
        .metrics
        .processing_seconds
        .with_label_values(&["details"])
        .start_timer();
    let Some(accepted) = resolve::apply(state, &change)? else {
        ctx.metrics
            .skipped
            .with_label_values(&["stale_detail_version"])
            .inc();
        return Ok(());
    };
    let key = accepted.id().as_bytes().to_vec();
    let value = match &accepted {
        DetailChange::Upsert { doc, .. } => {
            for dq in &doc.data_quality {
                ctx.metrics
                    .data_quality
                    .with_label_values(&[dq.field.as_str()])
                    .inc();
            }
            Some(serde_json::to_vec(doc).map_err(|e| StoreError::Backend(Box::new(e)))?)
        }
        DetailChange::Delete { .. } => None,
    };
    ctx.out.send(Record {
        output: Output::Details,
        partition: partition_for(&key, ctx.topics.partitions),
        key,
        value,
        timestamp: input.timestamp,
        headers: Vec::new(),
    })?;
    ctx.out.source_times.extend(input.timestamp);
    timer.observe_duration();
    Ok(())
}

/// The aggregate stage: deltas into counters → rollup documents.
pub fn aggregate(
    ctx: &mut Context<'_>,
    state: &mut dyn StateStore,
    input: &Input<'_>,
) -> Result<(), ProcessError> {
    let Some(delta) = internal::<RollupDelta>(ctx, "aggregate", input) else {
        return Ok(());
    };
    let timer = ctx
        .metrics
        .processing_seconds
        .with_label_values(&["aggregate"])
        .start_timer();
    let change = aggregate::apply(state, &delta)?;
    let key = format!("{}/{}", change.rollup().as_str(), change.id()).into_bytes();
    let value = match &change {
        aggregate::RollupChange::Upsert { doc, .. } => {
            Some(serde_json::to_vec(doc).map_err(|e| StoreError::Backend(Box::new(e)))?)
        }
        aggregate::RollupChange::Delete { .. } => None,
    };
    ctx.out.send(Record {
        output: Output::Rollups,
        partition: partition_for(&key, ctx.topics.partitions),
        key,
        value,
        timestamp: input.timestamp,
        headers: Vec::new(),
    })?;
    ctx.out.source_times.extend(input.timestamp);
    timer.observe_duration();
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
