//! Which offsets may be committed: per partition, the batches in consumption
//! order and whether Elasticsearch has acknowledged every item of each.
//! Batches complete out of order (several bulk requests are in flight), so
//! the committable offset is the end of the longest acknowledged prefix: a
//! commit never skips a record that is not in the index yet.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::encoder::Origin;

#[derive(Debug, Default)]
struct PartitionAcks {
    /// (batch id, first and last offset of the partition in that batch,
    /// acknowledged), in consumption order.
    pending: VecDeque<(u64, i64, i64, bool)>,
    /// Next offset to commit (last acknowledged offset + 1), once known.
    committable: Option<i64>,
    /// What was last handed out for committing.
    committed: Option<i64>,
}

/// Tracks acknowledged batches per (topic, partition).
#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: HashMap<(Arc<str>, i32), PartitionAcks>,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a batch as it is closed, with the first and last offset it
    /// holds of each partition. Batches must be registered in consumption
    /// order.
    pub fn dispatched(&mut self, batch_id: u64, ranges: &[(Origin, i64)]) {
        for (first, last) in ranges {
            self.parts
                .entry((first.topic.clone(), first.partition))
                .or_default()
                .pending
                .push_back((batch_id, first.offset, *last, false));
        }
    }

    /// Marks a batch acknowledged (every item done or dead-lettered).
    pub fn acknowledged(&mut self, batch_id: u64) {
        for p in self.parts.values_mut() {
            if let Some(entry) = p.pending.iter_mut().find(|e| e.0 == batch_id) {
                entry.3 = true;
            }
            while let Some(&(_, _, offset, true)) = p.pending.front() {
                p.committable = Some(offset + 1);
                p.pending.pop_front();
            }
        }
    }

    /// Offsets that advanced since the last call: (topic, partition, next offset).
    pub fn take_commits(&mut self) -> Vec<(Arc<str>, i32, i64)> {
        let mut out = Vec::new();
        for ((topic, partition), p) in &mut self.parts {
            if let Some(next) = p.committable {
                if p.committed.is_none_or(|c| c < next) {
                    p.committed = Some(next);
                    out.push((topic.clone(), *partition, next));
                }
            }
        }
        out.sort();
        out
    }

    /// Every partition's committable offset (for a final, synchronous commit).
    pub fn all_committable(&self, partitions: &[(Arc<str>, i32)]) -> Vec<(Arc<str>, i32, i64)> {
        let mut out: Vec<_> = self
            .parts
            .iter()
            .filter(|(k, _)| partitions.contains(k))
            .filter_map(|((t, p), a)| a.committable.map(|n| (t.clone(), *p, n)))
            .collect();
        out.sort();
        out
    }

    /// Drops a partition this consumer lost: acks of its batches still in
    /// flight no longer lead to commits (its new owner resumes from the
    /// committed offset; re-indexing is idempotent).
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.parts
            .retain(|(t, p), _| !(&**t == topic && *p == partition));
    }

    /// Batches dispatched and not yet acknowledged, over all partitions.
    pub fn unacknowledged(&self) -> usize {
        self.parts
            .values()
            .map(|p| p.pending.iter().filter(|e| !e.3).count())
            .sum()
    }

    /// The first offset of a partition not yet acknowledged (of the batches
    /// registered here), if any.
    pub fn first_unacknowledged(&self, topic: &str, partition: i32) -> Option<i64> {
        self.parts
            .iter()
            .find(|((t, p), _)| &**t == topic && *p == partition)
            .and_then(|(_, a)| a.pending.front().map(|e| e.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(topic: &str, partition: i32, offset: i64) -> Origin {
        Origin {
            topic: topic.into(),
            partition,
            offset,
        }
    }

    #[test]
    fn commits_only_the_acknowledged_prefix() {
        let mut t = OffsetTracker::new();
        t.dispatched(1, &[(o("d", 0, 0), 9), (o("r", 1, 0), 4)]);
        t.dispatched(2, &[(o("d", 0, 10), 19)]);
        t.dispatched(3, &[(o("d", 0, 20), 29), (o("r", 1, 5), 8)]);
        assert_eq!(t.first_unacknowledged("d", 0), Some(0));
        // Batch 2 finishes first: nothing of d/0 is committable yet.
        t.acknowledged(2);
        assert!(t.take_commits().is_empty());
        assert_eq!(t.first_unacknowledged("d", 0), Some(0));
        t.acknowledged(1);
        assert_eq!(t.first_unacknowledged("d", 0), Some(20));
        assert_eq!(t.first_unacknowledged("r", 1), Some(5));
        assert_eq!(
            t.take_commits(),
            vec![("d".into(), 0, 20), ("r".into(), 1, 5)]
        );
        assert!(t.take_commits().is_empty(), "handed out once");
        assert_eq!(t.unacknowledged(), 2);
        t.acknowledged(3);
        assert_eq!(
            t.take_commits(),
            vec![("d".into(), 0, 30), ("r".into(), 1, 9)]
        );
        assert_eq!(t.unacknowledged(), 0);
        assert_eq!(t.first_unacknowledged("d", 0), None);
        assert_eq!(
            t.all_committable(&[("d".into(), 0)]),
            vec![("d".into(), 0, 30)]
        );
    }

    #[test]
    fn forgotten_partitions_do_not_commit() {
        let mut t = OffsetTracker::new();
        t.dispatched(1, &[(o("d", 0, 0), 9), (o("d", 1, 0), 3)]);
        t.forget("d", 0);
        t.acknowledged(1);
        assert_eq!(t.take_commits(), vec![("d".into(), 1, 4)]);
        // Re-assigned later: fresh batches, old acks are ignored.
        t.dispatched(2, &[(o("d", 0, 5), 5)]);
        t.acknowledged(1);
        assert!(t.take_commits().is_empty());
        t.acknowledged(2);
        assert_eq!(t.take_commits(), vec![("d".into(), 0, 6)]);
    }
}
