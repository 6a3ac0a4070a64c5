//! How far a stream thread has got in each input partition: the offsets of
//! the records processed since the last commit (what the next commit sends
//! as consumed offsets) and the offsets it committed while the partition
//! stayed assigned to it.
//!
//! Between two rewinds the offsets of an internal topic's partition only move
//! forward, so a record before either is one whose effect is already in the
//! batch or committed. The consumer's fetch position has been seen to jump
//! back under load (an instance alone in its group after kill -9s, taking
//! over partitions while it worked through a backlog); processing such a
//! record again would count its changes twice (the aggregate adds a rollup
//! delta each time it reads it), so the stream thread skips it
//! ([`InputProgress::seen`]). Source topics are not held to this: deleted and
//! created again, their offsets start over with new records.

use std::collections::{HashMap, HashSet};

use super::task_manager::Partition;

#[derive(Debug, Default)]
pub struct InputProgress {
    /// Next offset per partition, for records processed since the last commit.
    batch: HashMap<Partition, i64>,
    /// Next offset per partition this thread committed while the partition
    /// stayed assigned to it.
    committed: HashMap<Partition, i64>,
    /// Partitions whose last record fetched was skipped.
    skipping: HashSet<Partition>,
}

impl InputProgress {
    /// Whether no record was processed since the last commit.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Partitions with records processed since the last commit.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether any of `partitions` has records in the batch.
    pub fn touches(&self, partitions: &[Partition]) -> bool {
        partitions.iter().any(|p| self.batch.contains_key(p))
    }

    /// The next offset of each partition in the batch.
    pub fn batch(&self) -> impl Iterator<Item = (&Partition, i64)> {
        self.batch.iter().map(|(p, next)| (p, *next))
    }

    /// `Some(next)` when the record at `offset` of `partition` is before
    /// what was processed already (in the batch, or committed): it must not
    /// be processed again.
    pub fn seen(&self, partition: &Partition, offset: i64) -> Option<i64> {
        let next = self
            .batch
            .get(partition)
            .or_else(|| self.committed.get(partition))
            .copied()?;
        (offset < next).then_some(next)
    }

    /// The record before `next` of `partition` was processed.
    pub fn processed(&mut self, partition: Partition, next: i64) {
        self.skipping.remove(&partition);
        self.batch.insert(partition, next);
    }

    /// A record of `partition` was skipped ([`InputProgress::seen`]); true
    /// for the first of a run, the one worth a warning.
    pub fn skipped(&mut self, partition: &Partition) -> bool {
        self.skipping.insert(partition.clone())
    }

    /// The batch committed: returns its offsets, now the committed ones.
    pub fn commit(&mut self) -> Vec<(Partition, i64)> {
        let done: Vec<(Partition, i64)> = self.batch.drain().collect();
        for (p, next) in &done {
            self.committed.insert(p.clone(), *next);
        }
        done
    }

    /// The batch will not be committed and its partitions are rewound to
    /// their committed offsets (`gone`: no longer ours, forgotten).
    pub fn drop_batch(&mut self, gone: &[Partition]) {
        self.forget(gone);
        self.batch.clear();
    }

    /// The partitions were revoked or lost: what this thread committed for
    /// them says nothing once another instance may have had them.
    pub fn forget(&mut self, partitions: &[Partition]) {
        for p in partitions {
            self.batch.remove(p);
            self.committed.remove(p);
            self.skipping.remove(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        ("outbound-rollup-deltas".to_owned(), n)
    }

    #[test]
    fn a_record_before_one_processed_is_seen_in_the_batch_and_after_the_commit() {
        let mut progress = InputProgress::default();
        assert_eq!(progress.seen(&p(0), 0), None, "nothing processed yet");
        progress.processed(p(0), 11);
        assert_eq!(progress.seen(&p(0), 5), Some(11));
        assert_eq!(progress.seen(&p(0), 11), None, "the next record is new");
        assert_eq!(progress.seen(&p(1), 5), None, "another partition");
        assert_eq!(progress.commit(), vec![(p(0), 11)]);
        assert!(progress.is_empty());
        assert_eq!(progress.seen(&p(0), 10), Some(11), "committed");
        assert_eq!(progress.seen(&p(0), 14), None, "a gap (a marker) is fine");
    }

    #[test]
    fn a_run_of_skipped_records_is_reported_once() {
        let mut progress = InputProgress::default();
        progress.processed(p(0), 11);
        assert!(progress.skipped(&p(0)));
        assert!(!progress.skipped(&p(0)));
        progress.processed(p(0), 12);
        assert!(progress.skipped(&p(0)), "a new run");
    }

    #[test]
    fn a_rewind_goes_back_to_the_committed_offset_not_before() {
        let mut progress = InputProgress::default();
        progress.processed(p(0), 11);
        progress.commit();
        progress.processed(p(0), 40);
        assert!(progress.touches(&[p(0)]));
        progress.drop_batch(&[]);
        assert_eq!(progress.seen(&p(0), 11), None, "read again from the commit");
        assert_eq!(progress.seen(&p(0), 10), Some(11));
    }

    #[test]
    fn a_partition_revoked_and_assigned_again_starts_afresh() {
        let mut progress = InputProgress::default();
        progress.processed(p(0), 11);
        progress.processed(p(1), 7);
        progress.commit();
        progress.processed(p(1), 9);
        progress.drop_batch(&[p(1)]);
        assert_eq!(progress.seen(&p(1), 0), None, "gone: forgotten");
        assert_eq!(progress.seen(&p(0), 3), Some(11));
        progress.forget(&[p(0)]);
        assert_eq!(progress.seen(&p(0), 3), None);
    }
}
