//! The topology of DESIGN.md §3 as data: a table of the stages — the topic
//! each reads, the store it keeps, the processor that turns one record into
//! outputs, and the outputs it writes — that the task manager, the record
//! collector and the topic setup all read, instead of each matching on a
//! stage.
//!
//! ```text
//! source topics ─rekey─▶ <app>-rekey ─join─▶ <app>-detail-changes ─details─▶ <app>-details
//!                                         └─▶ <app>-rollup-deltas ─aggregate─▶ <app>-rollups
//! ```
//! The `details` stage is the one place every change of an item passes
//! through (it is partitioned by item id), so when an item moves between
//! orders — and so between join partitions — the newest version of its
//! document wins, whatever order the two join tasks commit in.

use outbound_pipeline::config::PipelineConfig;
use outbound_pipeline::join;
use outbound_pipeline::store::{StateStore, StoreError};
use outbound_state::{StoreId, StoreSpec};

use super::processors::{self, SourceProcessor, StageProcessor};
use super::topics::TopicKind;

/// A topic the stages write, and how the record collector keeps its records
/// within one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Output {
    Rekey = 0,
    DetailChanges = 1,
    RollupDeltas = 2,
    Details = 3,
    Rollups = 4,
    DeadLetter = 5,
}

/// How the records of one output are kept between two commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coalesce {
    /// Every record, in order: change records carry before and after
    /// images and must all arrive; dead letters are each a record lost.
    Append,
    /// The last value per key: compacted outputs keep nothing else.
    LastPerKey,
    /// Deltas to one rollup key, summed: the aggregate stage adds them up.
    Sum,
    /// Per document id, the change the details stage would keep of them all.
    Newest,
}

impl Output {
    pub const ALL: [Output; 6] = [
        Output::Rekey,
        Output::DetailChanges,
        Output::RollupDeltas,
        Output::Details,
        Output::Rollups,
        Output::DeadLetter,
    ];

    /// `<app>-<suffix>` is the topic; also the `output` label of metrics.
    pub fn suffix(self) -> &'static str {
        match self {
            Output::Rekey => "rekey",
            Output::DetailChanges => "detail-changes",
            Output::RollupDeltas => "rollup-deltas",
            Output::Details => "details",
            Output::Rollups => "rollups",
            Output::DeadLetter => "dlq",
        }
    }

    pub fn coalesce(self) -> Coalesce {
        match self {
            Output::Rekey | Output::DeadLetter => Coalesce::Append,
            Output::DetailChanges => Coalesce::Newest,
            Output::RollupDeltas => Coalesce::Sum,
            Output::Details | Output::Rollups => Coalesce::LastPerKey,
        }
    }

    pub fn topic_kind(self) -> TopicKind {
        match self {
            Output::Rekey | Output::DetailChanges | Output::RollupDeltas => TopicKind::Repartition,
            Output::Details | Output::Rollups => TopicKind::Compacted,
            Output::DeadLetter => TopicKind::DeadLetter,
        }
    }
}

/// One stateful stage.
pub struct StageDef {
    pub name: &'static str,
    /// The internal topic it reads, partitioned as its state is.
    pub input: Output,
    /// Its task store (the id is the first byte of every changelog key).
    pub store: StoreSpec,
    pub process: StageProcessor,
    pub outputs: &'static [Output],
    /// Entries its store keeps but does not log, rebuilt on restore.
    pub derived: Option<Derived>,
}

/// A store's derived entries: kept locally so a change reads only what it
/// touches, never written to the changelog, and rebuilt from the logged
/// entries when a restore brings those back. Each entry belongs to a group
/// (the join's: an order), and a group's derived entries are a function of
/// its logged ones.
pub struct Derived {
    pub is_derived: fn(&[u8]) -> bool,
    /// The group of a key (logged or derived), if it has one.
    pub owner: fn(&[u8]) -> Option<&str>,
    /// Makes a group's derived entries exactly what its logged ones give.
    pub rebuild: fn(&PipelineConfig, &mut dyn StateStore, &str) -> Result<(), StoreError>,
}

fn rebuild_order(
    config: &PipelineConfig,
    state: &mut dyn StateStore,
    order_id: &str,
) -> Result<(), StoreError> {
    join::rebuild(config, state, order_id)
}

impl StageDef {
    /// Whether a write to this key goes to the changelog.
    pub fn logs(&self, key: &[u8]) -> bool {
        self.derived.as_ref().is_none_or(|d| !(d.is_derived)(key))
    }
}

/// The stateless first stage: source topics in.
pub struct SourceDef {
    pub name: &'static str,
    pub process: SourceProcessor,
    pub outputs: &'static [Output],
}

pub static SOURCE: SourceDef = SourceDef {
    name: "rekey",
    process: processors::rekey,
    outputs: &[Output::Rekey],
};

/// The stateful stages, in topology order. Store ids are stable: changing
/// one would make every changelog unreadable.
pub static STAGES: [StageDef; 3] = [
    StageDef {
        name: "join",
        input: Output::Rekey,
        store: StoreSpec {
            id: StoreId(1),
            name: "join",
        },
        process: processors::join,
        outputs: &[Output::DetailChanges, Output::RollupDeltas],
        // The indexes and rollup counts of an order follow from its rows.
        derived: Some(Derived {
            is_derived: join::is_derived,
            owner: join::owner,
            rebuild: rebuild_order,
        }),
    },
    StageDef {
        name: "details",
        input: Output::DetailChanges,
        store: StoreSpec {
            id: StoreId(2),
            name: "details",
        },
        process: processors::details,
        outputs: &[Output::Details],
        derived: None,
    },
    StageDef {
        name: "aggregate",
        input: Output::RollupDeltas,
        store: StoreSpec {
            id: StoreId(3),
            name: "counters",
        },
        process: processors::aggregate,
        outputs: &[Output::Rollups],
        derived: None,
    },
];

/// A stateful stage: an index into [`STAGES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stage(u8);

impl Stage {
    pub const ALL: [Stage; 3] = [Stage(0), Stage(1), Stage(2)];

    pub fn def(self) -> &'static StageDef {
        &STAGES[self.0 as usize]
    }

    pub fn name(self) -> &'static str {
        self.def().name
    }

    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        assert_eq!(Stage::ALL.len(), STAGES.len());
        let mut ids: Vec<u8> = STAGES.iter().map(|s| s.store.id.0).collect();
        ids.dedup();
        assert_eq!(ids.len(), STAGES.len(), "store ids are distinct");
        for s in &STAGES {
            assert_eq!(s.input.topic_kind(), TopicKind::Repartition, "{}", s.name);
        }
        // Each internal topic is written by the stage before the one reading it.
        assert!(SOURCE.outputs.contains(&STAGES[0].input));
        assert!(STAGES[0].outputs.contains(&STAGES[1].input));
        assert!(STAGES[0].outputs.contains(&STAGES[2].input));
        // Only the rekey topic's change records are never coalesced.
        assert_eq!(Output::Rekey.coalesce(), Coalesce::Append);
        for (i, o) in Output::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
    }
}
