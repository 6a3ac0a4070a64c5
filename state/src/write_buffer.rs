//! The transactional write buffer: the writes a task made since its last
//! commit, held in memory until the Kafka transaction carrying their changelog
//! records commits. An [`Overlay`] reads through it to the store, so the task
//! sees its own pending writes.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::{changelog, StateError, StoreId, TaskStore};

type PendingKey = (StoreId, Vec<u8>);
/// `None`: a delete.
type PendingValue = Option<Vec<u8>>;

/// Pending writes of one task, keyed by (store, key); `None` is a delete.
/// Repeated writes to one key within a commit interval coalesce into one
/// changelog record and one RocksDB write.
///
/// The writes of the record being processed can be taken back
/// ([`WriteBuffer::begin_record`], [`WriteBuffer::rollback_record`]): a
/// record that cannot be processed (its output would be too large for its
/// topic) goes to the dead-letter topic and leaves no trace in the state.
#[derive(Debug, Default)]
pub struct WriteBuffer {
    pending: BTreeMap<PendingKey, PendingValue>,
    bytes: usize,
    /// Since `begin_record`: each key written and what it held before.
    undo: Vec<(PendingKey, Option<PendingValue>)>,
    bytes_at_record: usize,
    /// Largest key + value written since `begin_record`.
    largest: usize,
}

impl WriteBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Number of distinct keys written.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Approximate bytes held (keys and values), for bounding a commit interval.
    pub fn approximate_bytes(&self) -> usize {
        self.bytes
    }

    pub fn put(&mut self, store: StoreId, key: &[u8], value: &[u8]) {
        self.write(store, key, Some(value.to_vec()));
    }

    pub fn delete(&mut self, store: StoreId, key: &[u8]) {
        self.write(store, key, None);
    }

    fn write(&mut self, store: StoreId, key: &[u8], value: Option<Vec<u8>>) {
        let size = key.len() + value.as_ref().map_or(0, Vec::len);
        self.bytes += size;
        self.largest = self.largest.max(size);
        let k = (store, key.to_vec());
        let before = self.pending.insert(k.clone(), value);
        self.undo.push((k, before));
    }

    /// Starts a record: its writes can be taken back until the next call.
    pub fn begin_record(&mut self) {
        self.undo.clear();
        self.bytes_at_record = self.bytes;
        self.largest = 0;
    }

    /// Takes back every write since [`WriteBuffer::begin_record`].
    pub fn rollback_record(&mut self) {
        while let Some((k, before)) = self.undo.pop() {
            match before {
                Some(v) => self.pending.insert(k, v),
                None => self.pending.remove(&k),
            };
        }
        self.bytes = self.bytes_at_record;
        self.largest = 0;
    }

    /// The largest key plus value written since [`WriteBuffer::begin_record`]
    /// (what its changelog record will carry).
    pub fn largest_write(&self) -> usize {
        self.largest
    }

    /// The pending entry for a key: `Some(None)` is a pending delete.
    pub fn lookup(&self, store: StoreId, key: &[u8]) -> Option<Option<&[u8]>> {
        // Avoid allocating a key for the lookup on the hot path: range on a
        // borrowed bound is not possible with a tuple key, so allocate once.
        self.pending
            .get(&(store, key.to_vec()))
            .map(|v| v.as_deref())
    }

    /// Pending entries of `store` whose key starts with `prefix`, in key order.
    pub fn prefix<'a>(
        &'a self,
        store: StoreId,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        self.pending
            .range((Bound::Included((store, prefix.to_vec())), Bound::Unbounded))
            .take_while(move |((s, k), _)| *s == store && k.starts_with(prefix))
            .map(|((_, k), v)| (k.as_slice(), v.as_deref()))
    }

    /// The changelog records for the pending writes: (key, value or tombstone).
    pub fn changelog_records(&self) -> impl Iterator<Item = (Vec<u8>, Option<&[u8]>)> + '_ {
        self.changelog_records_where(|_, _| true)
    }

    /// The changelog records for the pending writes whose (store, key)
    /// `logged` accepts: a store may keep entries it can rebuild from its
    /// logged ones (see [`crate::TaskStore::restore_batch_marking`]).
    pub fn changelog_records_where<'a>(
        &'a self,
        logged: impl Fn(StoreId, &[u8]) -> bool + 'a,
    ) -> impl Iterator<Item = (Vec<u8>, Option<&'a [u8]>)> + 'a {
        self.pending
            .iter()
            .filter(move |((store, key), _)| logged(*store, key))
            .map(|((store, key), value)| (changelog::encode_key(*store, key), value.as_deref()))
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = (StoreId, &[u8], Option<&[u8]>)> {
        self.pending
            .iter()
            .map(|((s, k), v)| (*s, k.as_slice(), v.as_deref()))
    }

    /// Drops every pending write (the transaction aborted, or committed and applied).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.undo.clear();
        self.bytes = 0;
        self.bytes_at_record = 0;
        self.largest = 0;
    }
}

/// A task's view of its state while processing: committed store contents with
/// the pending writes laid over them.
pub struct Overlay<'a> {
    pub store: &'a TaskStore,
    pub buffer: &'a mut WriteBuffer,
}

impl<'a> Overlay<'a> {
    pub fn new(store: &'a TaskStore, buffer: &'a mut WriteBuffer) -> Self {
        Self { store, buffer }
    }

    pub fn get(&self, id: StoreId, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        match self.buffer.lookup(id, key) {
            Some(pending) => Ok(pending.map(<[u8]>::to_vec)),
            None => self.store.get(id, key),
        }
    }

    pub fn put(&mut self, id: StoreId, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.store.check_store(id)?;
        self.buffer.put(id, key, value);
        Ok(())
    }

    pub fn delete(&mut self, id: StoreId, key: &[u8]) -> Result<(), StateError> {
        self.store.check_store(id)?;
        self.buffer.delete(id, key);
        Ok(())
    }

    /// Every live entry whose key starts with `prefix`, in key order: the
    /// store's entries merged with the pending writes (pending wins).
    pub fn scan_prefix(&self, id: StoreId, prefix: &[u8]) -> Result<crate::Entries, StateError> {
        let committed = self.store.scan_prefix(id, prefix)?;
        let mut pending = self.buffer.prefix(id, prefix).peekable();
        if pending.peek().is_none() {
            return Ok(committed);
        }
        let mut out = Vec::with_capacity(committed.len());
        let mut committed = committed.into_iter().peekable();
        loop {
            let take_pending = match (committed.peek(), pending.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((ck, _)), Some((pk, _))) => pk <= &ck.as_slice(),
            };
            if take_pending {
                let (pk, pv) = pending.next().expect("peeked");
                if committed.peek().is_some_and(|(ck, _)| ck.as_slice() == pk) {
                    committed.next(); // shadowed by the pending write
                }
                if let Some(v) = pv {
                    out.push((pk.to_vec(), v.to_vec()));
                }
            } else {
                out.push(committed.next().expect("peeked"));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: StoreId = StoreId(1);

    #[test]
    fn a_records_writes_can_be_taken_back_and_the_earlier_ones_stay() {
        let mut b = WriteBuffer::new();
        b.begin_record();
        b.put(S, b"a", b"1");
        b.put(S, b"b", b"1");
        let bytes = b.approximate_bytes();
        b.begin_record();
        b.put(S, b"a", b"22");
        b.delete(S, b"b");
        b.put(S, b"c", b"333");
        assert_eq!(b.largest_write(), 4);
        b.rollback_record();
        assert_eq!(b.lookup(S, b"a"), Some(Some(&b"1"[..])));
        assert_eq!(b.lookup(S, b"b"), Some(Some(&b"1"[..])));
        assert_eq!(b.lookup(S, b"c"), None);
        assert_eq!(b.len(), 2);
        assert_eq!(b.approximate_bytes(), bytes);
        // Taking back twice changes nothing more.
        b.rollback_record();
        assert_eq!(b.len(), 2);
    }
}
