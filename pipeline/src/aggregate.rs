//! The aggregate stage step: add a rollup delta to its key's counters and
//! return the rollup document to upsert, or a delete when every measure is
//! back to zero.
//!
//! State layout: `M` + rollup tag + doc id → [`Measures`] ([`crate::codec`]).

use serde::Serialize;

use crate::codec;
use crate::docs::{rollup_doc, RollupDoc};
use crate::rollup::{Measures, RollupDelta, RollupKey, RollupName};
use crate::store::{StateStore, StoreError};

/// A change to a rollup index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum RollupChange {
    Upsert {
        rollup: RollupName,
        id: String,
        doc: RollupDoc,
    },
    Delete {
        rollup: RollupName,
        id: String,
    },
}

impl RollupChange {
    pub fn rollup(&self) -> RollupName {
        match self {
            RollupChange::Upsert { rollup, .. } | RollupChange::Delete { rollup, .. } => *rollup,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            RollupChange::Upsert { id, .. } | RollupChange::Delete { id, .. } => id,
        }
    }
}

/// The counters' state key of a rollup key.
pub fn state_key(key: &RollupKey) -> Vec<u8> {
    state_key_of(key, &key.doc_id())
}

fn state_key_of(key: &RollupKey, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + id.len());
    k.push(b'M');
    k.push(key.name().tag());
    k.extend_from_slice(id.as_bytes());
    k
}

/// Adds `delta` to its key's counters.
pub fn apply<S: StateStore + ?Sized>(
    store: &mut S,
    delta: &RollupDelta,
) -> Result<RollupChange, StoreError> {
    let id = delta.key.doc_id();
    let key = state_key_of(&delta.key, &id);
    let mut measures: Measures = match store.get(&key)? {
        Some(v) => codec::decode(&v).map_err(|source| StoreError::Corrupt {
            key: key.clone(),
            source,
        })?,
        None => Measures::default(),
    };
    measures.add(&delta.measures);
    let rollup = delta.key.name();
    if measures.is_zero() {
        store.delete(&key)?;
        Ok(RollupChange::Delete { rollup, id })
    } else {
        store.put(&key, &codec::encode(&measures).map_err(StoreError::Encode)?)?;
        Ok(RollupChange::Upsert {
            rollup,
            id,
            doc: rollup_doc(&delta.key, &measures),
        })
    }
}
