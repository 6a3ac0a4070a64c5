//! The detail resolve step: keeps, per detail document id, the newest change
//! by item version, so the detail output is right however the join
//! partitions' outputs interleave.
//!
//! Why: when an item moves from order A to order B, the partitions of A and B
//! both write its document — A a delete, B an upsert — and A may lag behind B
//! and still emit older upserts. Every [`DetailChange`] carries the version
//! (source offset) of the item row's last change; this step, run in a stage
//! partitioned by document id, accepts a change when its version is newer
//! than the last accepted one, or equal and not a delete overriding an upsert
//! (the delete and the upsert of a move share the move's version). It keeps a
//! small tombstone (the version) for deleted ids so a late stale upsert
//! cannot resurrect them.
//!
//! State layout: `D` + doc id → (version, present) ([`crate::codec`]).
//!
//! The rule is a maximum: a change is accepted when (version, is upsert) is
//! at least the stored (version, present), so the outcome of a sequence of
//! changes to one id is its greatest change, whatever the order they come in.

use crate::codec;
use crate::join::DetailChange;
use crate::model::Version;
use crate::store::{StateStore, StoreError};

fn state_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(b'D');
    k.extend_from_slice(id.as_bytes());
    k
}

/// Applies a join-stage detail change; returns the change to output, if any.
pub fn apply<S: StateStore + ?Sized>(
    store: &mut S,
    change: &DetailChange,
) -> Result<Option<DetailChange>, StoreError> {
    let key = state_key(change.id());
    let last: Option<(Version, bool)> = match store.get(&key)? {
        Some(v) => Some(codec::decode(&v).map_err(|source| StoreError::Corrupt {
            key: key.clone(),
            source,
        })?),
        None => None,
    };
    let is_upsert = matches!(change, DetailChange::Upsert { .. });
    let accept = match last {
        None => true,
        Some((version, present)) => {
            change.version() > version || (change.version() == version && (is_upsert || !present))
        }
    };
    if !accept {
        return Ok(None);
    }
    let was_present = last.is_some_and(|(_, present)| present);
    store.put(
        &key,
        &codec::encode(&(change.version(), is_upsert)).map_err(StoreError::Encode)?,
    )?;
    Ok((is_upsert || was_present).then(|| change.clone()))
}
