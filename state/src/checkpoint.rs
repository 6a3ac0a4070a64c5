//! The checkpoint: which changelog partition a store mirrors, the next
//! offset of it that the store has not applied, which incarnation of the
//! changelog topic those offsets belong to, and when the store was last known
//! to be at that offset. Stored in the meta column family inside the same
//! write batch as the data it describes, encoded with bincode 2 behind a
//! format version byte.

use crate::ChangelogPartition;

/// 2: with the changelog's topic id and the time the checkpoint was written.
/// A version 1 checkpoint (neither) is not trusted: the store is rebuilt.
const FORMAT_V2: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Checkpoint {
    pub changelog: ChangelogPartition,
    /// The first changelog offset not yet reflected in the store.
    pub next_offset: i64,
    /// The changelog topic's id (Kafka's topic UUID) when known: offsets of a
    /// topic deleted and created again mean nothing to the new one.
    pub topic_id: Option<String>,
    /// Wall-clock milliseconds when the store was last known to hold every
    /// change of the changelog before `next_offset`. Compaction may drop a
    /// delete's tombstone `delete.retention.ms` after it was written, so a
    /// store older than that may have missed deletes.
    pub written_at_ms: i64,
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_V2];
        // Encoding a plain struct into a Vec cannot fail.
        let body = bincode::encode_to_vec(self, bincode::config::standard())
            .expect("encoding a checkpoint into memory");
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&FORMAT_V2, body)) => {
                let (cp, used) = bincode::decode_from_slice(body, bincode::config::standard())
                    .map_err(|e| format!("undecodable v2 checkpoint: {e}"))?;
                if used != body.len() {
                    return Err(format!(
                        "{} trailing bytes after the checkpoint",
                        body.len() - used
                    ));
                }
                Ok(cp)
            }
            Some((1, _)) => Err("a version 1 checkpoint (no topic id, no time)".into()),
            Some((v, _)) => Err(format!("unknown checkpoint format version {v}")),
            None => Err("empty checkpoint record".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let cp = Checkpoint {
            changelog: ChangelogPartition {
                topic: "outbound-join-changelog".into(),
                partition: 5,
            },
            next_offset: 123_456,
            topic_id: Some("c2VjcmV0LXRvcGljLWlk".into()),
            written_at_ms: 1_714_521_600_000,
        };
        assert_eq!(Checkpoint::decode(&cp.encode()).unwrap(), cp);
    }

    #[test]
    fn rejects_unknown_versions_and_garbage() {
        assert!(Checkpoint::decode(&[]).is_err());
        assert!(Checkpoint::decode(&[9, 1, 2])
            .unwrap_err()
            .contains("version 9"));
        assert!(Checkpoint::decode(&[FORMAT_V2, 0xff]).is_err());
        assert!(Checkpoint::decode(&[1, 0])
            .unwrap_err()
            .contains("version 1"));
    }
}
