//! The checkpoint: which changelog partition a store mirrors and the next
//! offset of it that the store has not applied. Stored in the meta column
//! family inside the same write batch as the data it describes, encoded with
//! bincode 2 behind a format version byte.

use crate::ChangelogPartition;

const FORMAT_V1: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Checkpoint {
    pub changelog: ChangelogPartition,
    /// The first changelog offset not yet reflected in the store.
    pub next_offset: i64,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_V1];
        // Encoding a plain struct into a Vec cannot fail.
        let body = bincode::encode_to_vec(self, bincode::config::standard())
            .expect("encoding a checkpoint into memory");
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&FORMAT_V1, body)) => {
                let (cp, used) = bincode::decode_from_slice(body, bincode::config::standard())
                    .map_err(|e| format!("undecodable v1 checkpoint: {e}"))?;
                if used != body.len() {
                    return Err(format!(
                        "{} trailing bytes after the checkpoint",
                        body.len() - used
                    ));
                }
                Ok(cp)
            }
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
        };
        assert_eq!(Checkpoint::decode(&cp.encode()).unwrap(), cp);
    }

    #[test]
    fn rejects_unknown_versions_and_garbage() {
        assert!(Checkpoint::decode(&[]).is_err());
        assert!(Checkpoint::decode(&[9, 1, 2])
            .unwrap_err()
            .contains("version 9"));
        assert!(Checkpoint::decode(&[FORMAT_V1, 0xff]).is_err());
    }
}
