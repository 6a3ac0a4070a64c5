//! The state store of `outbound`'s stateful stages.
//!
//! Each task (one partition of a stateful stage) owns a [`TaskStore`]: one
//! RocksDB instance whose column families are the task's logical stores, plus a
//! meta column family holding the [`Checkpoint`] — the changelog partition it
//! mirrors and the next changelog offset it has not applied yet.
//!
//! Writes made while processing go to a [`WriteBuffer`] (reads through an
//! [`Overlay`] see them). When the Kafka transaction that carries their
//! changelog records commits, [`TaskStore::commit`] applies the buffer and the
//! new checkpoint in one atomic RocksDB write batch, so the local store is
//! always at a committed point: after a crash only the changelog tail past the
//! checkpoint is restored, never the whole log. This crate knows nothing of
//! Kafka: the engine reads changelog partitions and hands records to
//! [`TaskStore::restore_batch`].

mod changelog;
mod checkpoint;
mod error;
mod resources;
mod task_store;
mod write_buffer;

pub use changelog::{ChangelogPartition, ChangelogRecord};
pub use checkpoint::{now_ms, Checkpoint};
pub use error::StateError;
pub use resources::{StoreResources, StoreTuning};
pub use task_store::{OpenOutcome, StoreSpec, StoreStats, TaskStore};
pub use write_buffer::{Overlay, WriteBuffer};

/// Key-value pairs in key order, as a prefix scan returns them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Identifies one logical store of a task. Stable across versions: it is the
/// first byte of every changelog key, so a changelog written by one build is
/// read correctly by the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreId(pub u8);
