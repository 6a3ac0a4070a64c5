//! A consumer group as the brokers describe it: its state, its members and
//! the partitions each owns (the members' assignments, decoded from the
//! classic consumer protocol's `ConsumerProtocolAssignment`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

/// One member of a group.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// The member's `client.id`: `<app_id>-<instance_id>-stream[-<n>]` for
    /// a stream thread, `<app_id>-<instance_id>` for the sink.
    pub client_id: String,
    pub host: String,
    /// (topic, partition) it owns.
    pub partitions: Vec<(String, i32)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub name: String,
    /// Stable, PreparingRebalance, CompletingRebalance, Empty, Dead.
    pub state: String,
    pub members: Vec<Member>,
}

impl Group {
    /// The `client.id` of the member owning each partition.
    pub fn owners(&self) -> BTreeMap<(String, i32), String> {
        self.members
            .iter()
            .flat_map(|m| {
                m.partitions
                    .iter()
                    .map(|tp| (tp.clone(), m.client_id.clone()))
            })
            .collect()
    }
}

/// Describes `group` (an unknown group is `Dead` with no members).
pub fn describe(consumer: &BaseConsumer, group: &str, timeout: Duration) -> anyhow::Result<Group> {
    let list = consumer
        .fetch_group_list(Some(group), timeout)
        .with_context(|| format!("describing the consumer group {group}"))?;
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(Group {
            name: group.to_owned(),
            state: "Dead".into(),
            members: Vec::new(),
        });
    };
    let members = info
        .members()
        .iter()
        .map(|m| Member {
            client_id: m.client_id().to_owned(),
            host: m.client_host().to_owned(),
            partitions: m.assignment().map(decode_assignment).unwrap_or_default(),
        })
        .collect();
    Ok(Group {
        name: group.to_owned(),
        state: info.state().to_owned(),
        members,
    })
}

/// Decodes a `ConsumerProtocolAssignment` (int16 version, then an array of
/// topic name + partition ids, then user data); what does not parse is
/// left out rather than guessed.
pub fn decode_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            (self.0.len() >= n).then(|| {
                let (head, tail) = self.0.split_at(n);
                self.0 = tail;
                head
            })
        }
        fn i16(&mut self) -> Option<i16> {
            self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
        }
        fn i32(&mut self) -> Option<i32> {
            self.take(4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
    }
    let mut r = Reader(bytes);
    let mut out = Vec::new();
    let parse = |r: &mut Reader<'_>, out: &mut Vec<(String, i32)>| -> Option<()> {
        r.i16()?;
        let topics = r.i32()?;
        for _ in 0..topics.max(0) {
            let len = usize::try_from(r.i16()?).ok()?;
            let name = String::from_utf8(r.take(len)?.to_vec()).ok()?;
            let partitions = r.i32()?;
            for _ in 0..partitions.max(0) {
                out.push((name.clone(), r.i32()?));
            }
        }
        Some(())
    };
    let _ = parse(&mut r, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_consumer_protocol_assignment() {
        // version 1; 2 topics: "a" [0, 2], "bc" [1]; empty user data.
        let mut b = vec![0, 1, 0, 0, 0, 2];
        b.extend([0, 1, b'a', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2]);
        b.extend([0, 2, b'b', b'c', 0, 0, 0, 1, 0, 0, 0, 1]);
        b.extend([0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            decode_assignment(&b),
            vec![("a".into(), 0), ("a".into(), 2), ("bc".into(), 1)]
        );
        // Truncated: what parsed so far, nothing invented.
        assert_eq!(decode_assignment(&b[..17]), vec![("a".into(), 0)]);
        assert!(decode_assignment(&[]).is_empty());
    }
}
