//! Batching: consumed records accumulate until the batch holds
//! `batch_max_docs` documents or `batch_max_bytes` of bulk body, or its first
//! record has waited `batch_timeout_ms`. A batch also carries the records
//! that could not be encoded (they go to the dead-letter topic when the batch
//! completes), so a batch covers a contiguous run of each partition's offsets.

use std::time::{Duration, Instant};

use super::dlq::DeadLetter;
use super::encoder::{BulkItem, Origin};

/// Records consumed together, sent as one bulk request (plus its retries).
#[derive(Debug, Default)]
pub struct Batch {
    pub id: u64,
    pub items: Vec<BulkItem>,
    /// Records refused before reaching Elasticsearch.
    pub rejected: Vec<DeadLetter>,
    /// Bytes held in memory for this batch (bulk lines + rejected payloads).
    pub bytes: usize,
    /// Per (topic, partition) in the batch: its first record (the lowest
    /// offset) and the highest offset.
    pub ranges: Vec<(Origin, i64)>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.items.len() + self.rejected.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn note_offset(&mut self, origin: &Origin) {
        match self
            .ranges
            .iter_mut()
            .find(|(o, _)| o.partition == origin.partition && o.topic == origin.topic)
        {
            Some((first, last)) => {
                first.offset = first.offset.min(origin.offset);
                *last = (*last).max(origin.offset);
            }
            None => self.ranges.push((origin.clone(), origin.offset)),
        }
    }

    /// The lowest offset of a partition in the batch.
    pub fn first_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.ranges
            .iter()
            .find(|(o, _)| o.partition == partition && &*o.topic == topic)
            .map(|(o, _)| o.offset)
    }
}

/// Fills batches by size and time.
#[derive(Debug)]
pub struct Batcher {
    max_docs: usize,
    max_bytes: usize,
    timeout: Duration,
    next_id: u64,
    current: Batch,
    opened_at: Option<Instant>,
}

impl Batcher {
    pub fn new(max_docs: usize, max_bytes: usize, timeout: Duration) -> Self {
        Self {
            max_docs,
            max_bytes,
            timeout,
            next_id: 1,
            current: Batch::default(),
            opened_at: None,
        }
    }

    /// Bytes held by the open batch.
    pub fn bytes(&self) -> usize {
        self.current.bytes
    }

    /// The open batch's lowest offset of a partition.
    pub fn first_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.current.first_offset(topic, partition)
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    /// Adds an encoded record; returns the batch when it is full. A record
    /// that would push a non-empty batch past `max_bytes` closes that batch
    /// first and opens the next one.
    pub fn push(&mut self, item: BulkItem, now: Instant) -> Option<Batch> {
        let size = item.encoded.len();
        let mut closed = None;
        if !self.current.items.is_empty() && self.current.bytes + size > self.max_bytes {
            closed = self.take();
        }
        self.open(now);
        self.current.note_offset(&item.origin);
        self.current.bytes += size;
        self.current.items.push(item);
        if closed.is_none() && self.is_full() {
            closed = self.take();
        }
        closed
    }

    /// Adds a record that will be dead-lettered when the batch completes.
    pub fn push_rejected(&mut self, letter: DeadLetter, now: Instant) -> Option<Batch> {
        self.open(now);
        self.current.note_offset(&letter.origin);
        self.current.bytes += letter.size();
        self.current.rejected.push(letter);
        if self.is_full() {
            self.take()
        } else {
            None
        }
    }

    /// When the open batch must be sent even if not full.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.timeout)
    }

    /// Closes the open batch if its deadline passed.
    pub fn take_if_due(&mut self, now: Instant) -> Option<Batch> {
        match self.deadline() {
            Some(d) if d <= now => self.take(),
            _ => None,
        }
    }

    /// Closes the open batch, if it holds anything.
    pub fn take(&mut self) -> Option<Batch> {
        if self.current.is_empty() {
            return None;
        }
        let mut batch = std::mem::take(&mut self.current);
        batch.id = self.next_id;
        self.next_id += 1;
        self.opened_at = None;
        Some(batch)
    }

    fn open(&mut self, now: Instant) {
        if self.opened_at.is_none() {
            self.opened_at = Some(now);
        }
    }

    fn is_full(&self) -> bool {
        self.current.len() >= self.max_docs || self.current.bytes >= self.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::encoder::tests::targets;
    use crate::sink::encoder::Encoder;

    fn item(partition: i32, offset: i64, doc_bytes: usize) -> BulkItem {
        let enc = Encoder::new(&targets("", 0), "d", "r", 1 << 20).unwrap();
        let doc = format!("{{\"x\":\"{}\"}}", "a".repeat(doc_bytes));
        enc.encode(
            Origin {
                topic: "d".into(),
                partition,
                offset,
            },
            Some(b"1"),
            Some(doc.as_bytes()),
            None,
        )
        .unwrap()
    }

    #[test]
    fn closes_on_count() {
        let now = Instant::now();
        let mut b = Batcher::new(3, 1 << 20, Duration::from_secs(1));
        assert!(b.push(item(0, 1, 1), now).is_none());
        assert!(b.push(item(1, 7, 1), now).is_none());
        assert_eq!(b.first_offset("d", 0), Some(1));
        let batch = b.push(item(0, 2, 1), now).expect("full at 3 docs");
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.id, 1);
        let mut offsets: Vec<(i32, i64, i64)> = batch
            .ranges
            .iter()
            .map(|(o, last)| (o.partition, o.offset, *last))
            .collect();
        offsets.sort();
        assert_eq!(offsets, [(0, 1, 2), (1, 7, 7)]);
        assert_eq!(b.first_offset("d", 0), None);
        assert!(b.is_empty());
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn closes_before_exceeding_bytes() {
        let now = Instant::now();
        let one = item(0, 0, 100).encoded.len();
        let mut b = Batcher::new(100, one * 2 + 10, Duration::from_secs(1));
        assert!(b.push(item(0, 1, 100), now).is_none());
        assert!(b.push(item(0, 2, 100), now).is_none());
        let batch = b
            .push(item(0, 3, 100), now)
            .expect("third would exceed the bytes");
        assert_eq!(batch.len(), 2);
        assert_eq!(b.bytes(), one);
        // A single document larger than the limit still goes, alone.
        let mut b = Batcher::new(100, 10, Duration::from_secs(1));
        let batch = b
            .push(item(0, 1, 100), now)
            .expect("oversized document alone");
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn closes_on_time_from_the_first_record() {
        let t0 = Instant::now();
        let mut b = Batcher::new(100, 1 << 20, Duration::from_millis(200));
        assert!(b.take_if_due(t0).is_none());
        b.push(item(0, 1, 1), t0);
        b.push(item(0, 2, 1), t0 + Duration::from_millis(150));
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(200)));
        assert!(b.take_if_due(t0 + Duration::from_millis(199)).is_none());
        let batch = b.take_if_due(t0 + Duration::from_millis(200)).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(b.deadline(), None);
    }
}
