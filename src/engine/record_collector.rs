//! The record collector of one transaction (Kafka Streams' `RecordCollector`
//! with its `ThreadCache`): processors hand it their output records, it keeps
//! them until the transaction commits, and sends them then.
//!
//! Keeping them is what lets it write less ([`Coalesce`]): for the compacted
//! outputs only the last value per key is sent (a rollup key changed 500
//! times in a commit interval is written once), deltas to one rollup key are
//! summed, and of the detail changes to one document only the one the
//! details stage would keep goes on. Change records on the rekey topic are
//! never coalesced: each carries before and after images. So they (and dead
//! letters) need not wait for the commit: the stream thread takes them
//! ([`RecordCollector::take_appends`]) and sends them into the open
//! transaction while it goes on processing, which keeps the commit short.
//! The changelogs are coalesced by the tasks' write buffers, which the
//! commit sends beside these.
//!
//! It also refuses a record too large for its topic, and can take back every
//! record of the input record being processed, so that such an input goes to
//! the dead-letter topic and leaves nothing else behind.

use std::collections::HashMap;

use outbound_pipeline::codec;
use outbound_pipeline::model::Version;
use outbound_pipeline::rollup::RollupDelta;

use super::topics::Topics;
use super::topology::{Coalesce, Output, Stage};

/// One record to send.
#[derive(Debug, Clone)]
pub struct Record {
    pub output: Output,
    pub partition: i32,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(&'static str, String)>,
}

impl Record {
    fn size(&self) -> usize {
        self.key.len()
            + self.value.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// A record larger than its topic takes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("a record of {size} bytes for {topic} is larger than its max.message.bytes allows ({limit} bytes)")]
pub struct TooLarge {
    pub topic: String,
    pub size: usize,
    pub limit: usize,
}

/// Room a record batch needs besides the record's key, value and headers.
const BATCH_OVERHEAD: usize = 512;

/// The largest record (key + value + headers) each topic the stages write takes.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Topic name and limit per [`Output`].
    outputs: Vec<(String, usize)>,
    /// Per stage, its changelog's.
    changelogs: Vec<(String, usize)>,
}

impl Limits {
    /// `max_bytes(topic)`: the topic's `max.message.bytes`, if known;
    /// `producer_max`: the producer's own `message.max.bytes`.
    pub fn new(
        topics: &Topics,
        max_bytes: impl Fn(&str) -> Option<usize>,
        producer_max: usize,
    ) -> Self {
        let limit = |topic: &str| {
            let l = max_bytes(topic)
                .unwrap_or(1_048_588)
                .min(producer_max)
                .saturating_sub(BATCH_OVERHEAD);
            (topic.to_owned(), l)
        };
        Limits {
            outputs: Output::ALL
                .iter()
                .map(|o| limit(topics.output(*o)))
                .collect(),
            changelogs: Stage::ALL
                .iter()
                .map(|s| limit(topics.changelog(*s)))
                .collect(),
        }
    }

    fn check_in(entry: &(String, usize), size: usize) -> Result<(), TooLarge> {
        let (topic, limit) = entry;
        if size > *limit {
            return Err(TooLarge {
                topic: topic.clone(),
                size,
                limit: *limit,
            });
        }
        Ok(())
    }

    fn check(&self, output: Output, size: usize) -> Result<(), TooLarge> {
        Self::check_in(&self.outputs[output as usize], size)
    }

    /// Whether a changelog record of `size` bytes fits the stage's changelog.
    pub fn check_changelog(&self, stage: Stage, size: usize) -> Result<(), TooLarge> {
        Self::check_in(&self.changelogs[stage.index()], size)
    }

    /// The largest dead-letter record.
    pub fn dead_letter(&self) -> usize {
        self.outputs[Output::DeadLetter as usize].1
    }
}

/// How to take back what one input record collected.
enum Undo {
    Last((Output, i32, Vec<u8>), Option<Record>),
    /// The measures added to a sum, and its timestamp before (`None`: the
    /// sum was new).
    Sum(
        (i32, String),
        outbound_pipeline::rollup::Measures,
        Option<Option<i64>>,
    ),
    Newest((i32, String), Option<Newest>),
}

/// A detail change kept by the rule of [`outbound_pipeline::resolve`]: the
/// greatest (version, is upsert) wins, the later of equals.
#[derive(Clone)]
struct Newest {
    version: Version,
    upsert: bool,
    record: Record,
}

pub struct RecordCollector {
    limits: Limits,
    appends: Vec<Record>,
    last: HashMap<(Output, i32, Vec<u8>), Record>,
    sums: HashMap<(i32, String), (RollupDelta, Option<i64>)>,
    newest: HashMap<(i32, String), Newest>,
    undo: Vec<Undo>,
    appends_at_record: usize,
    source_times_at_record: usize,
    /// Source timestamps of final outputs, observed as end-to-end latency
    /// once the transaction commits.
    pub source_times: Vec<i64>,
    /// Records handed in per output, coalesced or not.
    pub collected: [u64; Output::ALL.len()],
    /// Records taken out before the commit ([`RecordCollector::take_appends`]), per output.
    pub sent_early: [u64; Output::ALL.len()],
}

impl RecordCollector {
    pub fn new(limits: Limits) -> Self {
        RecordCollector {
            limits,
            appends: Vec::new(),
            last: HashMap::new(),
            sums: HashMap::new(),
            newest: HashMap::new(),
            undo: Vec::new(),
            appends_at_record: 0,
            source_times_at_record: 0,
            source_times: Vec::new(),
            collected: [0; Output::ALL.len()],
            sent_early: [0; Output::ALL.len()],
        }
    }

    /// Appended records held now (rekey changes and dead letters).
    pub fn appends_len(&self) -> usize {
        self.appends.len()
    }

    /// Takes the appended records of the inputs processed so far, to be
    /// sent before the commit: they are never coalesced, so sending them
    /// early loses nothing, and it overlaps their production with the
    /// processing. Call it between input records: what it takes can no
    /// longer be taken back by [`RecordCollector::rollback_record`].
    pub fn take_appends(&mut self) -> Vec<Record> {
        self.appends_at_record = 0;
        let taken = std::mem::take(&mut self.appends);
        for r in &taken {
            self.sent_early[r.output as usize] += 1;
        }
        taken
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn is_empty(&self) -> bool {
        self.appends.is_empty()
            && self.last.is_empty()
            && self.sums.is_empty()
            && self.newest.is_empty()
    }

    /// Records held now (after coalescing).
    pub fn len(&self) -> usize {
        self.appends.len() + self.last.len() + self.sums.len() + self.newest.len()
    }

    /// Starts an input record: what it collects can be taken back until the next call.
    pub fn begin_record(&mut self) {
        self.undo.clear();
        self.appends_at_record = self.appends.len();
        self.source_times_at_record = self.source_times.len();
    }

    /// Takes back everything collected since [`RecordCollector::begin_record`].
    pub fn rollback_record(&mut self) {
        self.appends.truncate(self.appends_at_record);
        self.source_times.truncate(self.source_times_at_record);
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Last(k, Some(v)) => {
                    self.last.insert(k, v);
                }
                Undo::Last(k, None) => {
                    self.last.remove(&k);
                }
                Undo::Sum(k, added, Some(ts)) => {
                    if let Some((sum, t)) = self.sums.get_mut(&k) {
                        sum.measures.sub(&added);
                        *t = ts;
                    }
                }
                Undo::Sum(k, _, None) => {
                    self.sums.remove(&k);
                }
                Undo::Newest(k, Some(v)) => {
                    self.newest.insert(k, v);
                }
                Undo::Newest(k, None) => {
                    self.newest.remove(&k);
                }
            }
        }
    }

    /// Collects a record of an [`Coalesce::Append`] or
    /// [`Coalesce::LastPerKey`] output.
    pub fn send(&mut self, record: Record) -> Result<(), TooLarge> {
        self.limits.check(record.output, record.size())?;
        self.collected[record.output as usize] += 1;
        match record.output.coalesce() {
            Coalesce::LastPerKey => {
                let key = (record.output, record.partition, record.key.clone());
                let before = self.last.insert(key.clone(), record);
                self.undo.push(Undo::Last(key, before));
            }
            _ => self.appends.push(record),
        }
        Ok(())
    }

    /// Collects a rollup delta: summed with the others to its key.
    pub fn send_delta(
        &mut self,
        partition: i32,
        key: String,
        delta: RollupDelta,
        timestamp: Option<i64>,
    ) -> Result<(), TooLarge> {
        // The record is the key and the delta, which names the key again.
        self.limits
            .check(Output::RollupDeltas, 2 * key.len() + 256)?;
        self.collected[Output::RollupDeltas as usize] += 1;
        let k = (partition, key);
        let added = delta.measures.clone();
        let before = match self.sums.get_mut(&k) {
            Some((sum, ts)) => {
                sum.measures.add(&delta.measures);
                let before = *ts;
                *ts = (*ts).max(timestamp);
                Some(before)
            }
            None => {
                self.sums.insert(k.clone(), (delta, timestamp));
                None
            }
        };
        self.undo.push(Undo::Sum(k, added, before));
        Ok(())
    }

    /// Collects a detail change (`value`: its encoding): of the changes to
    /// one document only the one the details stage would keep is sent.
    pub fn send_detail_change(
        &mut self,
        partition: i32,
        id: &str,
        version: Version,
        upsert: bool,
        value: Vec<u8>,
        timestamp: Option<i64>,
    ) -> Result<(), TooLarge> {
        let record = Record {
            output: Output::DetailChanges,
            partition,
            key: id.as_bytes().to_vec(),
            value: Some(value),
            timestamp,
            headers: Vec::new(),
        };
        self.limits.check(Output::DetailChanges, record.size())?;
        self.collected[Output::DetailChanges as usize] += 1;
        let k = (partition, id.to_owned());
        let new = Newest {
            version,
            upsert,
            record,
        };
        let before = self.newest.get(&k).cloned();
        let keep_new = before
            .as_ref()
            .is_none_or(|old| (new.version, new.upsert) >= (old.version, old.upsert));
        if keep_new {
            self.newest.insert(k.clone(), new);
            self.undo.push(Undo::Newest(k, before));
        }
        Ok(())
    }

    /// Everything collected, ready to send, emptying the collector. Rollup
    /// deltas summed to zero are dropped.
    pub fn drain(&mut self) -> Result<Vec<Record>, codec::CodecError> {
        let mut out = Vec::with_capacity(self.len());
        out.append(&mut self.appends);
        out.extend(self.last.drain().map(|(_, r)| r));
        out.extend(self.newest.drain().map(|(_, n)| n.record));
        for ((partition, key), (delta, timestamp)) in self.sums.drain() {
            if delta.measures.is_zero() {
                continue;
            }
            out.push(Record {
                output: Output::RollupDeltas,
                partition,
                key: key.into_bytes(),
                value: Some(codec::encode(&delta)?),
                timestamp,
                headers: Vec::new(),
            });
        }
        self.undo.clear();
        self.appends_at_record = 0;
        self.source_times_at_record = 0;
        Ok(out)
    }

    /// Drops everything collected (the transaction will not happen).
    pub fn clear(&mut self) {
        self.appends.clear();
        self.last.clear();
        self.sums.clear();
        self.newest.clear();
        self.undo.clear();
        self.source_times.clear();
        self.sent_early = [0; Output::ALL.len()];
        self.appends_at_record = 0;
        self.source_times_at_record = 0;
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use outbound_pipeline::rollup::{Measures, RollupKey};

    use super::*;

    fn collector() -> RecordCollector {
        let topics = Topics::new(&crate::config::Config::default(), Vec::new());
        RecordCollector::new(Limits::new(
            &topics,
            |_| Some(2048 + BATCH_OVERHEAD),
            1 << 20,
        ))
    }

    fn rec(output: Output, key: &str, value: &str) -> Record {
        Record {
            output,
            partition: 0,
            key: key.as_bytes().to_vec(),
            value: Some(value.as_bytes().to_vec()),
            timestamp: None,
            headers: Vec::new(),
        }
    }

    fn delta(units: i64) -> RollupDelta {
        RollupDelta {
            key: RollupKey::WarehouseDaily {
                day: NaiveDate::from_ymd_opt(2024, 5, 1).unwrap(),
                warehouse: "w".into(),
            },
            measures: Measures {
                units,
                ..Measures::default()
            },
        }
    }

    #[test]
    fn compacted_outputs_keep_the_last_value_and_change_records_every_one() {
        let mut c = collector();
        for i in 0..500 {
            c.send(rec(Output::Rollups, "hot", &i.to_string())).unwrap();
            c.send(rec(Output::Rekey, "order", &i.to_string())).unwrap();
        }
        let out = c.drain().unwrap();
        let rollups: Vec<_> = out.iter().filter(|r| r.output == Output::Rollups).collect();
        assert_eq!(rollups.len(), 1, "a hot key is written once");
        assert_eq!(rollups[0].value.as_deref(), Some(&b"499"[..]));
        let rekey: Vec<_> = out.iter().filter(|r| r.output == Output::Rekey).collect();
        assert_eq!(rekey.len(), 500, "change records are never coalesced");
        assert!(rekey.windows(2).all(|w| w[0].value < w[1].value
            || w[0].value.as_ref().map(Vec::len) < w[1].value.as_ref().map(Vec::len)));
        assert!(c.is_empty());
    }

    #[test]
    fn rollup_deltas_to_one_key_are_summed_and_zero_sums_dropped() {
        let mut c = collector();
        c.send_delta(1, "k".into(), delta(3), Some(5)).unwrap();
        c.send_delta(1, "k".into(), delta(4), Some(9)).unwrap();
        c.send_delta(2, "z".into(), delta(2), None).unwrap();
        c.send_delta(2, "z".into(), delta(-2), None).unwrap();
        let out = c.drain().unwrap();
        assert_eq!(out.len(), 1);
        let d: RollupDelta = codec::decode(out[0].value.as_deref().unwrap()).unwrap();
        assert_eq!((d.measures.units, out[0].timestamp), (7, Some(9)));
    }

    #[test]
    fn detail_changes_keep_what_the_details_stage_would() {
        let mut c = collector();
        let v = Version::from_offset;
        c.send_detail_change(0, "d", v(5), true, b"up5".to_vec(), None)
            .unwrap();
        c.send_detail_change(0, "d", v(3), true, b"stale".to_vec(), None)
            .unwrap();
        c.send_detail_change(0, "d", v(5), false, b"del5".to_vec(), None)
            .unwrap();
        let out = c.drain().unwrap();
        assert_eq!(
            out[0].value.as_deref(),
            Some(&b"up5"[..]),
            "a move's upsert beats its delete"
        );
        c.send_detail_change(0, "d", v(5), true, b"up5".to_vec(), None)
            .unwrap();
        c.send_detail_change(0, "d", v(6), false, b"del6".to_vec(), None)
            .unwrap();
        assert_eq!(c.drain().unwrap()[0].value.as_deref(), Some(&b"del6"[..]));
    }

    #[test]
    fn one_input_records_outputs_can_be_taken_back_and_oversized_ones_are_refused() {
        let mut c = collector();
        c.begin_record();
        c.send(rec(Output::Details, "a", "1")).unwrap();
        c.send(rec(Output::Rekey, "o", "1")).unwrap();
        c.send_delta(0, "k".into(), delta(1), None).unwrap();
        c.begin_record();
        c.send(rec(Output::Details, "a", "2")).unwrap();
        c.send(rec(Output::Rekey, "o", "2")).unwrap();
        c.send_delta(0, "k".into(), delta(10), None).unwrap();
        c.send_detail_change(0, "x", Version::from_offset(1), true, b"x".to_vec(), None)
            .unwrap();
        let big = "x".repeat(4096);
        let err = c.send(rec(Output::Details, "b", &big)).unwrap_err();
        assert!(err.to_string().contains("details"), "{err}");
        c.rollback_record();
        let out = c.drain().unwrap();
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out
            .iter()
            .any(|r| r.output == Output::Details && r.value.as_deref() == Some(&b"1"[..])));
        let d = out
            .iter()
            .find(|r| r.output == Output::RollupDeltas)
            .unwrap();
        let d: RollupDelta = codec::decode(d.value.as_deref().unwrap()).unwrap();
        assert_eq!(d.measures.units, 1);
    }

    #[test]
    fn appends_taken_early_are_counted_and_leave_the_next_input_revocable() {
        let mut c = collector();
        c.begin_record();
        c.send(rec(Output::Rekey, "o", "1")).unwrap();
        c.send(rec(Output::Rollups, "r", "1")).unwrap();
        let taken = c.take_appends();
        assert_eq!(taken.len(), 1, "only appended records go early");
        assert_eq!(c.sent_early[Output::Rekey as usize], 1);
        assert_eq!(c.appends_len(), 0);
        c.begin_record();
        c.send(rec(Output::Rekey, "o", "2")).unwrap();
        c.rollback_record();
        let out = c.drain().unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].output, Output::Rollups);
        c.clear();
        assert_eq!(c.sent_early, [0; Output::ALL.len()]);
    }
}
