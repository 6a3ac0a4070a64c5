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

use outbound_pipeline::store::{StateStore, StoreError};
use outbound_state::{ChangelogPartition, Overlay, StoreId, TaskStore, WriteBuffer};

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
