//! Who owns an index, and which version epoch its documents are in: the
//! record each index carries in its mapping's `_meta.outbound`, and the pure
//! decision whether this sink may write there.
//!
//! - **Owner.** The app id and the output topic that feed the index. Another
//!   app never writes into it (two apps on one cluster with the same index
//!   names would overwrite each other's documents).
//! - **Epoch.** Versions are `epoch << 40 | offset` (`encoder.rs`). The
//!   epoch belongs to one incarnation of the output topic, named by its
//!   Kafka topic id. A re-created topic starts its offsets again: writing it
//!   into an index of the old incarnation would make every write a version
//!   conflict, counted as done — a silent freeze. So the sink refuses, and
//!   `outbound reset` ([`super::bump_epoch`]) or `outbound rebuild-indices`
//!   starts a new epoch, claimed by the next incarnation the sink sees.
//! - **Generation.** The index build (`<alias>-v<index_version>-g<generation>`),
//!   new with every rebuild; its state says whether readers see it (live),
//!   it is being filled (building), or it waits to be deleted (retired).

use serde::{Deserialize, Serialize};

use super::errors::Refusal;

/// The `_meta.outbound` record of an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexOwner {
    pub app_id: String,
    /// The output topic whose records the index holds.
    pub topic: String,
    /// The Kafka topic id of the incarnation whose offsets the epoch holds;
    /// none until the sink first sees the topic (after a reset).
    #[serde(default)]
    pub topic_id: Option<String>,
    #[serde(default)]
    pub epoch: u32,
    #[serde(default)]
    pub generation: u32,
    #[serde(default)]
    pub index_version: u32,
    #[serde(default)]
    pub state: IndexState,
    /// When a retired index may be deleted (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexState {
    #[default]
    Live,
    Building,
    Retired,
}

/// What the sink expects of an index it is about to write.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub app_id: &'a str,
    pub topic: &'a str,
    /// The topic's id now; none when the topic does not exist yet (the check
    /// then happens when its partitions are assigned).
    pub topic_id: Option<&'a str>,
}

/// What to do before writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Ours, this incarnation: write.
    Write,
    /// Ours, a new epoch not yet claimed (after a reset): record the topic
    /// id, then write.
    Claim,
    /// No owner record (an older outbound, or made by hand): record this
    /// app as its owner, epoch 0 (versions = offsets, as before), then write.
    Adopt,
}

/// Whether this sink may write into `index` (behind `alias`).
pub fn verdict(
    index: &str,
    alias: &str,
    found: Option<&IndexOwner>,
    expected: Expected<'_>,
) -> Result<Verdict, Refusal> {
    let Some(owner) = found else {
        return Ok(Verdict::Adopt);
    };
    if owner.app_id != expected.app_id {
        return Err(Refusal::new(format!(
            "index {index} (alias {alias}) belongs to app id {:?}, fed from topic {}; this app \
             ({:?}) must not write into it. Give each app its own indices with \
             `sink.index_prefix` (unset, it is `<app_id>-`)",
            owner.app_id, owner.topic, expected.app_id
        )));
    }
    if owner.topic != expected.topic {
        return Err(Refusal::new(format!(
            "index {index} (alias {alias}) holds the records of topic {}, but this sink reads {} \
             into it: set `sink.index_prefix` apart for each output",
            owner.topic, expected.topic
        )));
    }
    match (owner.topic_id.as_deref(), expected.topic_id) {
        (None, Some(_)) => Ok(Verdict::Claim),
        (Some(recorded), Some(now)) if recorded != now => {
            Err(recreated(index, expected.topic, recorded, now, owner.epoch))
        }
        _ => Ok(Verdict::Write),
    }
}

/// The refusal for an output topic that is not the incarnation an index holds.
pub fn recreated(index: &str, topic: &str, recorded: &str, now: &str, epoch: u32) -> Refusal {
    Refusal::new(format!(
        "output topic {topic} was re-created (its topic id is {now}; index {index} holds the \
         incarnation {recorded}, version epoch {epoch}): its offsets started again, so every \
         record would be refused as older than what is indexed. Run `outbound rebuild-indices` \
         (a new generation in a new epoch, swapped in without downtime), or `outbound reset`, \
         which starts a new epoch"
    ))
}

/// The refusal for a topic re-created under the running sink.
pub fn recreated_while_running(topic: &str, recorded: &str, now: &str) -> Refusal {
    Refusal::new(format!(
        "output topic {topic} was re-created while the sink ran (topic id {recorded}, now \
         {now}): its offsets started again under the indices. Run `outbound rebuild-indices`, \
         or `outbound reset`, which starts a new version epoch"
    ))
}

/// The epoch an index built now gets: the current one while the topic is
/// the incarnation it records (or none is recorded yet), the next one when
/// the topic was re-created.
pub fn epoch_for_rebuild(current: Option<&IndexOwner>, topic_id: Option<&str>) -> u32 {
    match current {
        None => 0,
        Some(o) => match (o.topic_id.as_deref(), topic_id) {
            (Some(recorded), Some(now)) if recorded != now => o.epoch + 1,
            _ => o.epoch,
        },
    }
}

/// The record after `outbound reset`: a new epoch, its topic id unclaimed.
pub fn bumped(owner: &IndexOwner) -> IndexOwner {
    IndexOwner {
        epoch: owner.epoch + 1,
        topic_id: None,
        ..owner.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(app: &str, topic_id: Option<&str>) -> IndexOwner {
        IndexOwner {
            app_id: app.into(),
            topic: format!("{app}-details"),
            topic_id: topic_id.map(Into::into),
            epoch: 2,
            generation: 1,
            index_version: 1,
            state: IndexState::Live,
            delete_after_ms: None,
        }
    }

    fn expect<'a>(app: &'a str, topic: &'a str, id: Option<&'a str>) -> Expected<'a> {
        Expected {
            app_id: app,
            topic,
            topic_id: id,
        }
    }

    #[test]
    fn our_own_incarnation_is_written() {
        let o = owner("a", Some("T1"));
        assert_eq!(
            verdict("i", "x", Some(&o), expect("a", "a-details", Some("T1"))),
            Ok(Verdict::Write)
        );
        assert_eq!(
            verdict("i", "x", Some(&o), expect("a", "a-details", None)),
            Ok(Verdict::Write),
            "topic not there yet: checked at assignment"
        );
    }

    #[test]
    fn another_apps_index_is_refused_naming_the_owner_and_the_key() {
        let o = owner("a", Some("T1"));
        let e = verdict("i-v1", "x", Some(&o), expect("b", "b-details", Some("T9"))).unwrap_err();
        assert!(
            e.0.contains("\"a\"") && e.0.contains("sink.index_prefix"),
            "{e}"
        );
        let e = verdict("i-v1", "x", Some(&o), expect("a", "a-rollups", Some("T1"))).unwrap_err();
        assert!(e.0.contains("a-rollups"), "{e}");
    }

    #[test]
    fn a_recreated_topic_is_refused_until_a_new_epoch_is_claimed() {
        let o = owner("a", Some("T1"));
        let e = verdict("i-v1", "x", Some(&o), expect("a", "a-details", Some("T2"))).unwrap_err();
        assert!(
            e.0.contains("re-created") && e.0.contains("rebuild-indices"),
            "{e}"
        );
        let reset = bumped(&o);
        assert_eq!((reset.epoch, reset.topic_id.as_deref()), (3, None));
        assert_eq!(
            verdict("i", "x", Some(&reset), expect("a", "a-details", Some("T2"))),
            Ok(Verdict::Claim)
        );
        assert_eq!(
            verdict("i", "x", None, expect("a", "a-details", Some("T2"))),
            Ok(Verdict::Adopt)
        );
    }

    #[test]
    fn a_rebuild_keeps_the_epoch_unless_the_topic_was_recreated() {
        let o = owner("a", Some("T1"));
        assert_eq!(epoch_for_rebuild(Some(&o), Some("T1")), 2);
        assert_eq!(epoch_for_rebuild(Some(&o), Some("T2")), 3);
        assert_eq!(epoch_for_rebuild(Some(&bumped(&o)), Some("T2")), 3);
        assert_eq!(epoch_for_rebuild(None, Some("T2")), 0);
    }

    #[test]
    fn the_record_reads_back_and_tolerates_older_fields() {
        let o = owner("a", Some("T1"));
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["state"], "live");
        assert!(v.get("delete_after_ms").is_none());
        assert_eq!(serde_json::from_value::<IndexOwner>(v).unwrap(), o);
        let minimal: IndexOwner =
            serde_json::from_str(r#"{"app_id":"a","topic":"a-details"}"#).unwrap();
        assert_eq!((minimal.epoch, minimal.state), (0, IndexState::Live));
    }
}
