//! The state interface the join and aggregate stages keep their tables in,
//! and an in-memory implementation. The engine implements it over RocksDB
//! (through its transactional write buffer); the pipeline does all its state
//! through this trait.

use std::collections::BTreeMap;
use std::error::Error;

use crate::codec::CodecError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing store failed.
    #[error("state store: {0}")]
    Backend(#[source] Box<dyn Error + Send + Sync>),
    /// A stored record could not be read back.
    #[error("corrupt state record under key {key:?}: {source}")]
    Corrupt {
        key: Vec<u8>,
        #[source]
        source: CodecError,
    },
    /// A record could not be encoded for storage.
    #[error("cannot encode state record: {0}")]
    Encode(#[source] CodecError),
}

/// Key-value entries, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A key-value store with ordered prefix scans.
pub trait StateStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError>;
}

/// The name the engine's issue uses for the same trait.
pub use StateStore as JoinStore;

/// A [`StateStore`] in a `BTreeMap`, for tests and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStore {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemStore {
    pub fn new() -> Self {
        MemStore::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }
}

impl StateStore for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries.get(key).cloned())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.entries.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.entries.remove(key);
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        Ok(self
            .entries
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_scan_is_ordered_and_bounded() {
        let mut s = MemStore::new();
        for k in [&b"ab2"[..], b"ab1", b"a", b"b", b"ab"] {
            s.put(k, k).unwrap();
        }
        let keys: Vec<Vec<u8>> = s
            .scan_prefix(b"ab")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"ab".to_vec(), b"ab1".to_vec(), b"ab2".to_vec()]);
        s.delete(b"ab1").unwrap();
        assert_eq!(s.get(b"ab1").unwrap(), None);
        assert_eq!(s.get(b"ab2").unwrap(), Some(b"ab2".to_vec()));
        assert_eq!(s.len(), 4);
    }
}
