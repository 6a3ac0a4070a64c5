//! Changelog records: how a state write travels on the compacted changelog
//! topic. The Kafka key is the store id byte followed by the store key; the
//! value is the stored bytes, or none (a tombstone) for a delete.

use crate::{StateError, StoreId};

/// The changelog topic partition a task's store mirrors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, bincode::Encode, bincode::Decode)]
pub struct ChangelogPartition {
    pub topic: String,
    pub partition: i32,
}

impl std::fmt::Display for ChangelogPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// One record read back from a changelog partition during restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogRecord {
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The changelog key of `key` in store `id`.
pub fn encode_key(id: StoreId, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(id.0);
    out.extend_from_slice(key);
    out
}

/// Splits a changelog key into its store id and store key.
pub fn decode_key<'a>(
    changelog: &ChangelogPartition,
    offset: i64,
    key: &'a [u8],
) -> Result<(StoreId, &'a [u8]), StateError> {
    match key.split_first() {
        Some((id, rest)) => Ok((StoreId(*id), rest)),
        None => Err(StateError::BadChangelogRecord {
            topic: changelog.topic.clone(),
            partition: changelog.partition,
            offset,
            reason: "empty key (every changelog key starts with a store id byte)".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips() {
        let cp = ChangelogPartition {
            topic: "t".into(),
            partition: 3,
        };
        let k = encode_key(StoreId(7), b"order/42");
        assert_eq!(
            decode_key(&cp, 0, &k).unwrap(),
            (StoreId(7), &b"order/42"[..])
        );
    }

    #[test]
    fn empty_key_names_its_position() {
        let cp = ChangelogPartition {
            topic: "app-join-changelog".into(),
            partition: 2,
        };
        let err = decode_key(&cp, 17, b"").unwrap_err().to_string();
        assert!(err.contains("app-join-changelog[2] offset 17"), "{err}");
    }
}
