//! A stream task: one partition of one stateful stage, with its store, the
//! writes of the open transaction and its place in the lifecycle.
//!
//! ```text
//! Created ──▶ Restoring ──▶ Running ──▶ closed (clean: at a commit; dirty: lost)
//!    ▲            │            │
//!    └── Suspended ◀───────────┘  (a fatal producer error: catch up again)
//! ```
//! A task's store only ever holds committed writes, so a task closed either
//! way leaves a directory that can be trusted up to its checkpoint; "dirty"
//! means only that its checkpoint time is not renewed (another instance may
//! own the changelog now) and that it must restore its changelog's tail
//! before it runs again.

use std::fmt;
use std::time::Instant;

use anyhow::Context as _;
use outbound_pipeline::config::PipelineConfig;
use outbound_pipeline::store::{StateStore, StoreError};
use outbound_state::{
    ChangelogPartition, ChangelogRecord, Overlay, StoreId, TaskStore, WriteBuffer,
};

use super::topology::Stage;

/// Which task: a stage and a partition of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    pub stage: Stage,
    pub partition: i32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.stage.name(), self.partition)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskState {
    /// Assigned; its store is opened and checked in the stream loop.
    Created,
    /// Reading its changelog's tail into the store; its input is paused.
    Restoring,
    Running,
    /// Closed dirty while still assigned (after a fatal producer error):
    /// restores its changelog's tail again before it runs.
    Suspended,
}

impl TaskState {
    pub const ALL: [TaskState; 4] = [
        TaskState::Created,
        TaskState::Restoring,
        TaskState::Running,
        TaskState::Suspended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Created => "created",
            TaskState::Restoring => "restoring",
            TaskState::Running => "running",
            TaskState::Suspended => "suspended",
        }
    }
}

pub struct StreamTask {
    pub id: TaskId,
    pub state: TaskState,
    /// The changelog partition its store mirrors, registered with the
    /// producer as `slot`.
    pub changelog: ChangelogPartition,
    pub slot: usize,
    /// `None` until opened (and for the instant a store is wiped).
    pub store: Option<TaskStore>,
    pub buffer: WriteBuffer,
    /// When a failed initialisation (a broker not answering) is tried again.
    pub retry_at: Option<Instant>,
    /// Restored, and rebuilding its derived entries before it runs.
    pub deriving: bool,
    /// When the checkpoint's time was last renewed.
    pub touched: Instant,
}

impl StreamTask {
    pub fn new(id: TaskId, changelog: ChangelogPartition, slot: usize) -> Self {
        StreamTask {
            id,
            state: TaskState::Created,
            changelog,
            slot,
            store: None,
            buffer: WriteBuffer::new(),
            retry_at: None,
            deriving: false,
            touched: Instant::now(),
        }
    }

    /// The task's state as the pipeline sees it: committed store with the
    /// pending writes of the open transaction laid over it.
    pub fn state(&mut self) -> Result<TaskStateStore<'_>, StoreError> {
        let id = self.id.stage.def().store.id;
        let store = self.store.as_ref().ok_or_else(|| {
            StoreError::Backend(format!("the store of task {} is not open", self.id).into())
        })?;
        Ok(TaskStateStore {
            overlay: Overlay::new(store, &mut self.buffer),
            id,
        })
    }
}

/// Adapts a task's overlay to the pipeline's [`StateStore`].
pub struct TaskStateStore<'a> {
    overlay: Overlay<'a>,
    id: StoreId,
}

impl<'a> TaskStateStore<'a> {
    /// Store `id` of the overlay.
    pub fn new(overlay: Overlay<'a>, id: StoreId) -> Self {
        TaskStateStore { overlay, id }
    }
}

fn backend(e: outbound_state::StateError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

impl StateStore for TaskStateStore<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.overlay.get(self.id, key).map_err(backend)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.overlay.put(self.id, key, value).map_err(backend)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.overlay.delete(self.id, key).map_err(backend)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.overlay.scan_prefix(self.id, prefix).map_err(backend)
    }
}

/// Applies restored changelog records to the store of a task of `stage` and
/// moves its checkpoint to `next`. A stage whose store keeps derived entries
/// (see [`super::topology::Derived`]) has the groups the records touch marked
/// for [`derive_pending`], in the same atomic batch.
pub fn restore_records(
    store: &mut TaskStore,
    stage: Stage,
    records: &[ChangelogRecord],
    next: i64,
) -> anyhow::Result<()> {
    let def = stage.def();
    let Some(derived) = &def.derived else {
        return Ok(store.restore_batch(records, next)?);
    };
    let id = def.store.id;
    store.restore_batch_marking(records, next, |store, key| {
        (store == id)
            .then(|| (derived.owner)(key))
            .flatten()
            .map(|o| o.as_bytes().to_vec())
    })?;
    Ok(())
}

/// Rebuilds the derived entries of up to `limit` groups a restore marked.
/// `Ok(true)` when none is left (a stage without derived entries has none).
pub fn derive_pending(
    store: &mut TaskStore,
    stage: Stage,
    pipeline: &PipelineConfig,
    limit: usize,
) -> anyhow::Result<bool> {
    let def = stage.def();
    let Some(derived) = &def.derived else {
        return Ok(true);
    };
    let owners = store.pending_derivations(limit)?;
    if owners.is_empty() {
        return Ok(true);
    }
    let id = def.store.id;
    store.derive(&owners, |overlay| -> anyhow::Result<()> {
        let mut state = TaskStateStore::new(overlay, id);
        for owner in &owners {
            let owner = std::str::from_utf8(owner).with_context(|| {
                format!(
                    "a {} group marked for rebuilding is not UTF-8: {owner:?}",
                    def.name
                )
            })?;
            (derived.rebuild)(pipeline, &mut state, owner)
                .with_context(|| format!("rebuilding the {} state of {owner:?}", def.name))?;
        }
        Ok(())
    })?;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use outbound_pipeline::join;
    use outbound_pipeline::model::{Order, OrderItem, Row, Shipment, Timestamp, Version};
    use outbound_pipeline::values::{parse_money, Parsed};
    use outbound_pipeline::KeyedChange;
    use outbound_state::{StoreResources, StoreTuning};

    use super::*;

    fn upsert(row: Row, db: &str, n: i64) -> KeyedChange {
        KeyedChange::Upsert {
            row,
            db: db.into(),
            ts_ms: n,
            version: Version::from_offset(n),
        }
    }

    /// An order with three shipments (one found by `wmsrecord_id`) and
    /// forty items, some shipped, as join changes.
    fn order_changes() -> Vec<KeyedChange> {
        let mut changes = vec![upsert(
            Row::Order(Order {
                id: "1".into(),
                order_id: Some("A".into()),
                order_value: Parsed::from_text("Rs 500", parse_money),
                ..Order::default()
            }),
            "orders",
            0,
        )];
        for s in 0..3 {
            changes.push(upsert(
                Row::Shipment(Shipment {
                    id: format!("s{s}"),
                    order_id: Some("A".into()),
                    wmsrecord_id: (s == 2).then(|| "7".into()),
                    shipment_cost: Parsed::Valid(parse_money("Rs 100").expect("money")),
                    courier: Some(format!("courier{s}")),
                    created_at: Some(Timestamp(1_714_573_800_000_000 + s * 86_400_000_000)),
                    ..Shipment::default()
                }),
                "logistics",
                changes.len() as i64,
            ));
        }
        for i in 0..40 {
            changes.push(upsert(
                Row::Item(OrderItem {
                    id: i.to_string(),
                    order_id: Some("A".into()),
                    item_type: Some(["phone", "case"][i % 2].into()),
                    item_qty: Parsed::Valid(1 + i as u64),
                    shipment_id: (i % 4 != 3).then(|| format!("s{}", i % 4)),
                    ..OrderItem::default()
                }),
                "wms",
                changes.len() as i64,
            ));
        }
        changes
    }

    #[test]
    fn the_join_changelog_carries_only_rows_and_a_restore_rebuilds_the_rest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let resources = StoreResources::new(StoreTuning {
            block_cache_bytes: 4 << 20,
            write_buffer_bytes: 4 << 20,
            memtable_bytes: 1 << 20,
        });
        let stage = Stage::ALL[0];
        let def = stage.def();
        assert_eq!(def.name, "join");
        let changelog = ChangelogPartition {
            topic: "app-join-changelog".into(),
            partition: 0,
        };
        let open = |name: &str| {
            TaskStore::open(
                &dir.path().join(name),
                changelog.clone(),
                &[def.store],
                &resources,
            )
            .expect("opens")
            .0
        };
        let config = PipelineConfig::default();
        let mut store = open("live");
        let mut buffer = WriteBuffer::new();
        let rows = {
            let mut state = TaskStateStore::new(Overlay::new(&store, &mut buffer), def.store.id);
            for change in order_changes() {
                join::apply(&config, &mut state, &change).expect("joins");
            }
            join::stored_rows(&state).expect("reads")
        };
        assert_eq!(rows, 1 + 3 + 40);
        let records: Vec<ChangelogRecord> = buffer
            .changelog_records_where(|_, key| def.logs(key))
            .enumerate()
            .map(|(i, (key, value))| ChangelogRecord {
                offset: i as i64,
                key,
                value: value.map(<[u8]>::to_vec),
            })
            .collect();
        // One changelog record per row; the indexes and counts stay local.
        assert_eq!(records.len(), rows);
        assert!(buffer.len() > rows + 10, "{} entries", buffer.len());
        store
            .commit(&mut buffer, Some(records.len() as i64))
            .expect("commits");

        // Restored in batches that split the order's rows, into an empty store.
        let mut replica = open("replica");
        for chunk in records.chunks(17) {
            let next = chunk.last().expect("non-empty").offset + 1;
            restore_records(&mut replica, stage, chunk, next).expect("restores");
        }
        assert_eq!(
            replica.pending_derivations(10).expect("reads"),
            [b"A".to_vec()]
        );
        while !derive_pending(&mut replica, stage, &config, 1).expect("derives") {}
        let all = |s: &TaskStore| s.scan_prefix(def.store.id, &[]).expect("scans");
        assert_eq!(
            all(&replica),
            all(&store),
            "restored state equals the live one"
        );
        assert_eq!(replica.checkpoint().next_offset, records.len() as i64);
    }
}
