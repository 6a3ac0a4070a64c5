//! A stream task: one partition of one stateful stage, with its store, its
//! pending writes and its lifecycle (restoring → running).

use outbound_pipeline::store::{StateStore, StoreError};
use outbound_state::{Overlay, StoreId, StoreSpec, TaskStore, WriteBuffer};

use super::topology::Stage;

/// The store of each stateful stage; ids are stable (changelog key prefix).
pub fn store_spec(stage: Stage) -> StoreSpec {
    match stage {
        Stage::Join => StoreSpec {
            id: StoreId(1),
            name: "join",
        },
        Stage::Details => StoreSpec {
            id: StoreId(2),
            name: "details",
        },
        Stage::Aggregate => StoreSpec {
            id: StoreId(3),
            name: "counters",
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// Reading the changelog tail into the store; its input is paused.
    Restoring,
    Running,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Restoring => "restoring",
            TaskStatus::Running => "running",
        }
    }
}

pub struct StreamTask {
    pub stage: Stage,
    pub partition: i32,
    pub changelog: String,
    /// `None` only for the instant a store is being wiped and reopened.
    pub store: Option<TaskStore>,
    pub buffer: WriteBuffer,
    pub status: TaskStatus,
}

impl StreamTask {
    /// The task's state as the pipeline sees it: committed store with the
    /// pending writes of the open transaction laid over it.
    pub fn state(&mut self) -> Result<TaskState<'_>, StoreError> {
        let spec = store_spec(self.stage);
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| StoreError::Backend("task store is closed".into()))?;
        Ok(TaskState {
            overlay: Overlay::new(store, &mut self.buffer),
            id: spec.id,
        })
    }
}

/// Adapts a task's overlay to the pipeline's [`StateStore`].
pub struct TaskState<'a> {
    overlay: Overlay<'a>,
    id: StoreId,
}

fn backend(e: outbound_state::StateError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

impl StateStore for TaskState<'_> {
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
