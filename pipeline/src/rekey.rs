//! The rekey step: one change event → the keyed records the join stage needs,
//! co-partitioned by `order_id`. Stateless: it uses the event's before and
//! after images, so a row whose `order_id` (or primary key) changes is
//! deleted from the old order and upserted into the new one.

use serde::{Deserialize, Serialize};

use crate::model::{ChangeEvent, Op, Row, SourceTable, Version};

/// Where a keyed record goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// The partition of this (trimmed, non-empty) `order_id`.
    Order(String),
    /// An item with a null or empty `order_id`. It joins nothing (SQL NULL
    /// semantics) but still has its detail document; the payload is a
    /// partitioning key unique to the item (database and id).
    Orphan(String),
    /// Every partition of the join stage (a truncate).
    AllPartitions,
}

impl Route {
    /// The Kafka record key that partitions this route; `None` for
    /// [`Route::AllPartitions`]. Orphan keys start with a NUL byte so they
    /// never collide with an order id.
    pub fn partition_key(&self) -> Option<Vec<u8>> {
        match self {
            Route::Order(order_id) => Some(order_id.as_bytes().to_vec()),
            Route::Orphan(key) => {
                let mut k = Vec::with_capacity(key.len() + 8);
                k.extend_from_slice(b"\0orphan\0");
                k.extend_from_slice(key.as_bytes());
                Some(k)
            }
            Route::AllPartitions => None,
        }
    }
}

/// A change for the join stage. Travels on the internal rekey topic (encode
/// it with [`crate::codec`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyedChange {
    /// Insert or replace a row in the order its `order_id` names (an orphan
    /// item when the item's `order_id` is `None`).
    Upsert {
        row: Row,
        /// The row's database (`source.db`): the warehouse fallback.
        db: String,
        /// `source.ts_ms` of the change.
        ts_ms: i64,
        /// Where the change sits in its database's log (see [`rekey`]).
        version: Version,
    },
    /// Remove a row from the order it belonged to.
    Delete {
        table: SourceTable,
        db: String,
        /// The order the row is removed from; `None` for an orphan item.
        order_id: Option<String>,
        id: String,
        version: Version,
    },
    /// Remove every row of the table coming from this database.
    Truncate {
        table: SourceTable,
        db: String,
        version: Version,
    },
}

impl KeyedChange {
    pub fn table(&self) -> SourceTable {
        match self {
            KeyedChange::Upsert { row, .. } => row.table(),
            KeyedChange::Delete { table, .. } | KeyedChange::Truncate { table, .. } => *table,
        }
    }
}

/// The route of a row, or `None` for an order or shipment without an
/// `order_id` (it can join nothing and has no document of its own).
fn route_of(row: &Row, db: &str) -> Option<Route> {
    match row.order_id() {
        Some(order_id) => Some(Route::Order(order_id.to_owned())),
        None if matches!(row, Row::Item(_)) => Some(Route::Orphan(format!("{db}\0{}", row.id()))),
        None => None,
    }
}

/// The keyed records for one change event, in the order they must be applied.
///
/// Every keyed record carries the change's [`Version`]: its binlog position
/// from the event's `source` block, or `offset` (the source record's Kafka
/// offset) for a source without one. Detail documents carry it so that, when
/// an item moves between orders (two join partitions), the stale partition's
/// output loses against the new one's (see [`crate::resolve`]); a replayed
/// event carries the version it had the first time.
pub fn rekey(event: &ChangeEvent, offset: i64) -> Vec<(Route, KeyedChange)> {
    let version = Version::of_change(&event.source, offset);
    let db = &event.source.db;
    let delete = |row: &Row| {
        route_of(row, db).map(|route| {
            (
                route,
                KeyedChange::Delete {
                    table: row.table(),
                    db: db.clone(),
                    order_id: row.order_id().map(str::to_owned),
                    id: row.id().to_owned(),
                    version,
                },
            )
        })
    };
    let upsert = |row: &Row| {
        route_of(row, db).map(|route| {
            (
                route,
                KeyedChange::Upsert {
                    row: row.clone(),
                    db: db.clone(),
                    ts_ms: event.source.ts_ms,
                    version,
                },
            )
        })
    };
    let mut out = Vec::with_capacity(2);
    match event.op {
        Op::Truncate => out.push((
            Route::AllPartitions,
            KeyedChange::Truncate {
                table: event.table,
                db: db.clone(),
                version,
            },
        )),
        Op::Delete => out.extend(event.before.as_ref().and_then(delete)),
        Op::Create | Op::Read | Op::Update => {
            if let (Some(before), Some(after)) = (&event.before, &event.after) {
                let moved = before.order_id() != after.order_id() || before.id() != after.id();
                if moved {
                    out.extend(delete(before));
                }
            }
            out.extend(event.after.as_ref().and_then(upsert));
        }
    }
    out
}
