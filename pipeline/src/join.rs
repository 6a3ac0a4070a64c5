//! The join stage step: apply one keyed change to an order's rows and return
//! what changed downstream — detail documents of the order's items and the
//! rollup deltas of the order's contribution.
//!
//! Rules (DESIGN.md §2):
//! - an item's order is the order row with the greatest id among those of the
//!   same `order_id` (ids ordered by [`compare_ids`]);
//! - its shipment is, among the order's shipments, the one with
//!   `L.id = W.shipment_id`, failing that one with `L.wmsrecord_id = W.id`;
//!   the greatest `L.id` among candidates;
//! - rows with a null/empty `order_id` join nothing; such an item still has
//!   its (orphan) document.
//!
//! State layout (all through [`StateStore`]):
//! - `G` + u32 BE length + order_id + table tag + u16 BE length + db + id →
//!   the row ([`Sourced<Row>`], [`crate::codec`]);
//! - `O` + u16 BE length + db + id → an orphan item.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::config::PipelineConfig;
use crate::docs::{item_doc, OrderItemDoc};
use crate::model::{compare_ids, Order, OrderItem, Row, Shipment, SourceTable, Sourced};
use crate::rekey::KeyedChange;
use crate::rollup::{self, Measures, RollupDelta, RollupKey, ShippedItem};
use crate::store::{StateStore, StoreError};

/// A change to the detail index, with the version of the item row behind it
/// (see [`crate::resolve`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DetailChange {
    Upsert {
        id: String,
        version: i64,
        doc: OrderItemDoc,
    },
    Delete {
        id: String,
        version: i64,
    },
}

impl DetailChange {
    pub fn id(&self) -> &str {
        match self {
            DetailChange::Upsert { id, .. } | DetailChange::Delete { id, .. } => id,
        }
    }

    pub fn version(&self) -> i64 {
        match self {
            DetailChange::Upsert { version, .. } | DetailChange::Delete { version, .. } => *version,
        }
    }
}

/// What one keyed change produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinOutput {
    pub details: Vec<DetailChange>,
    pub deltas: Vec<RollupDelta>,
}

impl JoinOutput {
    pub fn is_empty(&self) -> bool {
        self.details.is_empty() && self.deltas.is_empty()
    }

    fn extend(&mut self, other: JoinOutput) {
        self.details.extend(other.details);
        self.deltas.extend(other.deltas);
    }
}

/// Applies one keyed change to the join state of its partition.
pub fn apply<S: StateStore + ?Sized>(
    config: &PipelineConfig,
    store: &mut S,
    change: &KeyedChange,
) -> Result<JoinOutput, StoreError> {
    match change {
        KeyedChange::Upsert {
            row,
            db,
            ts_ms,
            version,
        } => {
            let stored = Sourced {
                row: row.clone(),
                db: db.clone(),
                ts_ms: *ts_ms,
                version: *version,
            };
            match row.order_id() {
                Some(order_id) => upsert_in_order(config, store, order_id, stored),
                None => match stored.row {
                    Row::Item(item) => upsert_orphan(
                        config,
                        store,
                        Sourced {
                            row: item,
                            db: stored.db,
                            ts_ms: stored.ts_ms,
                            version: stored.version,
                        },
                    ),
                    // An order or shipment without order_id joins nothing.
                    _ => Ok(JoinOutput::default()),
                },
            }
        }
        KeyedChange::Delete {
            table,
            db,
            order_id,
            id,
            version,
        } => match order_id {
            Some(order_id) => delete_in_order(config, store, order_id, *table, db, id, *version),
            None if *table == SourceTable::Items => delete_orphan(config, store, db, id, *version),
            None => Ok(JoinOutput::default()),
        },
        KeyedChange::Truncate { table, db, version } => {
            truncate(config, store, *table, db, *version)
        }
    }
}

// ---------------------------------------------------------------------------
// Keys

fn group_prefix(order_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + order_id.len() + 24);
    k.push(b'G');
    k.extend_from_slice(&(order_id.len() as u32).to_be_bytes());
    k.extend_from_slice(order_id.as_bytes());
    k
}

fn push_db_id(k: &mut Vec<u8>, db: &str, id: &str) {
    k.extend_from_slice(&(db.len().min(u16::MAX as usize) as u16).to_be_bytes());
    k.extend_from_slice(db.as_bytes());
    k.extend_from_slice(id.as_bytes());
}

fn row_key(order_id: &str, table: SourceTable, db: &str, id: &str) -> Vec<u8> {
    let mut k = group_prefix(order_id);
    k.push(table.tag());
    push_db_id(&mut k, db, id);
    k
}

fn orphan_prefix(db: &str) -> Vec<u8> {
    let mut k = vec![b'O'];
    k.extend_from_slice(&(db.len().min(u16::MAX as usize) as u16).to_be_bytes());
    k.extend_from_slice(db.as_bytes());
    k
}

fn orphan_key(db: &str, id: &str) -> Vec<u8> {
    let mut k = orphan_prefix(db);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The order id of a group row key.
fn order_of_key(key: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(key.get(1..5)?.try_into().ok()?) as usize;
    key.get(5..5 + len)
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    codec::encode(v).map_err(StoreError::Encode)
}

fn decode_row(key: &[u8], value: &[u8]) -> Result<Sourced<Row>, StoreError> {
    codec::decode(value).map_err(|source| StoreError::Corrupt {
        key: key.to_vec(),
        source,
    })
}

// ---------------------------------------------------------------------------
// An order's rows

#[derive(Default, Debug)]
struct OrderRows {
    orders: Vec<Sourced<Order>>,
    items: Vec<Sourced<OrderItem>>,
    shipments: Vec<Sourced<Shipment>>,
}

fn sourced<T>(row: T, db: String, ts_ms: i64, version: i64) -> Sourced<T> {
    Sourced {
        row,
        db,
        ts_ms,
        version,
    }
}

impl OrderRows {
    fn insert(&mut self, s: Sourced<Row>) {
        let Sourced {
            row,
            db,
            ts_ms,
            version,
        } = s;
        match row {
            Row::Order(r) => self.orders.push(sourced(r, db, ts_ms, version)),
            Row::Item(r) => self.items.push(sourced(r, db, ts_ms, version)),
            Row::Shipment(r) => self.shipments.push(sourced(r, db, ts_ms, version)),
        }
    }

    fn load<S: StateStore + ?Sized>(store: &S, order_id: &str) -> Result<Self, StoreError> {
        let mut rows = OrderRows::default();
        for (k, v) in store.scan_prefix(&group_prefix(order_id))? {
            rows.insert(decode_row(&k, &v)?);
        }
        Ok(rows)
    }

    /// The stored row with this identity, as a `Sourced<Row>`.
    fn find(&self, table: SourceTable, db: &str, id: &str) -> Option<Sourced<Row>> {
        fn pick<T: Clone>(
            rows: &[Sourced<T>],
            db: &str,
            id: &str,
            id_of: fn(&T) -> &str,
            wrap: fn(T) -> Row,
        ) -> Option<Sourced<Row>> {
            rows.iter()
                .find(|s| s.db == db && id_of(&s.row) == id)
                .map(|s| sourced(wrap(s.row.clone()), s.db.clone(), s.ts_ms, s.version))
        }
        match table {
            SourceTable::Orders => pick(&self.orders, db, id, |r| &r.id, Row::Order),
            SourceTable::Items => pick(&self.items, db, id, |r| &r.id, Row::Item),
            SourceTable::Shipments => pick(&self.shipments, db, id, |r| &r.id, Row::Shipment),
        }
    }

    fn remove(&mut self, table: SourceTable, db: &str, id: &str) {
        match table {
            SourceTable::Orders => self.orders.retain(|s| !(s.db == db && s.row.id == id)),
            SourceTable::Items => self.items.retain(|s| !(s.db == db && s.row.id == id)),
            SourceTable::Shipments => self.shipments.retain(|s| !(s.db == db && s.row.id == id)),
        }
    }

    fn remove_table(&mut self, table: SourceTable, db: &str) {
        match table {
            SourceTable::Orders => self.orders.retain(|s| s.db != db),
            SourceTable::Items => self.items.retain(|s| s.db != db),
            SourceTable::Shipments => self.shipments.retain(|s| s.db != db),
        }
    }
}

/// The documents and rollup contribution of one order's rows.
struct Evaluation {
    /// Doc id → (item version, document).
    docs: BTreeMap<String, (i64, OrderItemDoc)>,
    contribution: BTreeMap<RollupKey, Measures>,
}

/// The greatest by [`compare_ids`], ties (same id, other database) by database.
fn greatest<'a, T>(
    candidates: impl Iterator<Item = &'a Sourced<T>>,
    id: fn(&T) -> &str,
) -> Option<&'a Sourced<T>>
where
    T: 'a,
{
    candidates.max_by(|a, b| compare_ids(id(&a.row), id(&b.row)).then_with(|| a.db.cmp(&b.db)))
}

fn evaluate(config: &PipelineConfig, rows: &OrderRows) -> Evaluation {
    let order = greatest(rows.orders.iter(), |o: &Order| &o.id);
    let mut by_id: HashMap<&str, &Sourced<Shipment>> = HashMap::new();
    let mut by_wms: HashMap<&str, &Sourced<Shipment>> = HashMap::new();
    let better = |new: &Sourced<Shipment>, old: &Sourced<Shipment>| {
        compare_ids(&new.row.id, &old.row.id)
            .then_with(|| new.db.cmp(&old.db))
            .is_gt()
    };
    for s in &rows.shipments {
        let slot = by_id.entry(s.row.id.as_str()).or_insert(s);
        if better(s, slot) {
            *slot = s;
        }
        if let Some(w) = s.row.wmsrecord_id.as_deref() {
            let slot = by_wms.entry(w).or_insert(s);
            if better(s, slot) {
                *slot = s;
            }
        }
    }
    let mut docs = BTreeMap::new();
    let mut shipped = Vec::new();
    for item in &rows.items {
        let shipment = item
            .row
            .shipment_id
            .as_deref()
            .and_then(|sid| by_id.get(sid))
            .or_else(|| by_wms.get(item.row.id.as_str()))
            .copied();
        let doc = item_doc(config, item, order, shipment);
        if let (Some(s), Some(day)) = (shipment, doc.ship_day) {
            shipped.push((item, s, day, doc.warehouse.clone(), doc.courier.clone()));
        }
        docs.insert(
            config.item_doc_id(&item.db, &item.row.id),
            (item.version, doc),
        );
    }
    let order_value = order
        .and_then(|o| o.row.order_value.valid())
        .map(|m| m.amount)
        .unwrap_or_default();
    let contribution = rollup::order_contribution(
        order_value,
        shipped
            .iter()
            .map(|(item, s, day, warehouse, courier)| ShippedItem {
                day: *day,
                warehouse,
                item_type: item.row.item_type.as_deref(),
                courier: courier.as_deref(),
                units: item.row.item_qty.valid().map_or(0, |q| *q as i64),
                shipment_id: &s.row.id,
                shipping_cost: s
                    .row
                    .shipment_cost
                    .valid()
                    .map(|m| m.amount)
                    .unwrap_or_default(),
            }),
    );
    Evaluation { docs, contribution }
}

/// What changed between two evaluations of the same order. `removal_version`
/// is the version of the change that removed an item, for its delete.
fn diff(before: Evaluation, after: &Evaluation, removal_version: i64) -> JoinOutput {
    let mut details = Vec::new();
    for (id, (version, doc)) in &after.docs {
        let unchanged = before
            .docs
            .get(id)
            .is_some_and(|(v, d)| v == version && d == doc);
        if !unchanged {
            details.push(DetailChange::Upsert {
                id: id.clone(),
                version: *version,
                doc: doc.clone(),
            });
        }
    }
    for id in before.docs.keys() {
        if !after.docs.contains_key(id) {
            details.push(DetailChange::Delete {
                id: id.clone(),
                version: removal_version,
            });
        }
    }
    JoinOutput {
        details,
        deltas: rollup::deltas(&before.contribution, &after.contribution),
    }
}

fn same_content(a: &Sourced<Row>, b: &Sourced<Row>) -> bool {
    a.row == b.row && a.db == b.db && a.ts_ms == b.ts_ms
}

fn upsert_in_order<S: StateStore + ?Sized>(
    config: &PipelineConfig,
    store: &mut S,
    order_id: &str,
    stored: Sourced<Row>,
) -> Result<JoinOutput, StoreError> {
    let mut rows = OrderRows::load(store, order_id)?;
    let (table, id) = (stored.row.table(), stored.row.id().to_owned());
    let key = row_key(order_id, table, &stored.db, &id);
    let existing = rows.find(table, &stored.db, &id);
    if existing
        .as_ref()
        .is_some_and(|e| *e == stored || (table != SourceTable::Items && same_content(e, &stored)))
    {
        // A replay of an order or shipment change already applied: nothing
        // downstream changes. (A replayed item change is re-emitted with its
        // new version, since another partition may meanwhile have deleted
        // the document at a version between the two.)
        store.put(&key, &encode(&stored)?)?;
        return Ok(JoinOutput::default());
    }
    let before = evaluate(config, &rows);
    store.put(&key, &encode(&stored)?)?;
    let version = stored.version;
    rows.remove(table, &stored.db, &id);
    rows.insert(stored);
    let after = evaluate(config, &rows);
    Ok(diff(before, &after, version))
}

fn delete_in_order<S: StateStore + ?Sized>(
    config: &PipelineConfig,
    store: &mut S,
    order_id: &str,
    table: SourceTable,
    db: &str,
    id: &str,
    version: i64,
) -> Result<JoinOutput, StoreError> {
    let mut rows = OrderRows::load(store, order_id)?;
    if rows.find(table, db, id).is_none() {
        return Ok(JoinOutput::default());
    }
    let before = evaluate(config, &rows);
    store.delete(&row_key(order_id, table, db, id))?;
    rows.remove(table, db, id);
    let after = evaluate(config, &rows);
    Ok(diff(before, &after, version))
}

fn upsert_orphan<S: StateStore + ?Sized>(
    config: &PipelineConfig,
    store: &mut S,
    item: Sourced<OrderItem>,
) -> Result<JoinOutput, StoreError> {
    let key = orphan_key(&item.db, &item.row.id);
    let stored = Sourced {
        row: Row::Item(item.row.clone()),
        db: item.db.clone(),
        ts_ms: item.ts_ms,
        version: item.version,
    };
    let existing = match store.get(&key)? {
        Some(v) => Some(decode_row(&key, &v)?),
        None => None,
    };
    store.put(&key, &encode(&stored)?)?;
    if existing.is_some_and(|e| e == stored) {
        return Ok(JoinOutput::default());
    }
    Ok(JoinOutput {
        details: vec![DetailChange::Upsert {
            id: config.item_doc_id(&item.db, &item.row.id),
            version: item.version,
            doc: item_doc(config, &item, None, None),
        }],
        deltas: Vec::new(),
    })
}

fn delete_orphan<S: StateStore + ?Sized>(
    config: &PipelineConfig,
    store: &mut S,
    db: &str,
    id: &str,
    version: i64,
) -> Result<JoinOutput, StoreError> {
    let key = orphan_key(db, id);
    if store.get(&key)?.is_none() {
        return Ok(JoinOutput::default());
    }
    store.delete(&key)?;
    Ok(JoinOutput {
        details: vec![DetailChange::Delete {
            id: config.item_doc_id(db, id),
            version,
        }],
        deltas: Vec::new(),
    })
}

fn truncate<S: StateStore + ?Sized>(
    config: &PipelineConfig,
    store: &mut S,
    table: SourceTable,
    db: &str,
    version: i64,
) -> Result<JoinOutput, StoreError> {
    let mut out = JoinOutput::default();
    // Group rows are contiguous per order: walk them order by order.
    let all = store.scan_prefix(b"G")?;
    let mut start = 0;
    while start < all.len() {
        let order = order_of_key(&all[start].0).map(<[u8]>::to_vec);
        let end = start
            + all[start..]
                .iter()
                .take_while(|(k, _)| order_of_key(k).map(<[u8]>::to_vec) == order)
                .count()
                .max(1);
        let mut rows = OrderRows::default();
        let mut doomed = Vec::new();
        for (k, v) in &all[start..end] {
            let row = decode_row(k, v)?;
            if row.row.table() == table && row.db == db {
                doomed.push(k.clone());
            }
            rows.insert(row);
        }
        if !doomed.is_empty() {
            let before = evaluate(config, &rows);
            for k in &doomed {
                store.delete(k)?;
            }
            rows.remove_table(table, db);
            let after = evaluate(config, &rows);
            out.extend(diff(before, &after, version));
        }
        start = end;
    }
    if table == SourceTable::Items {
        for (k, v) in store.scan_prefix(&orphan_prefix(db))? {
            let row = decode_row(&k, &v)?;
            if row.db != db {
                continue;
            }
            store.delete(&k)?;
            out.details.push(DetailChange::Delete {
                id: config.item_doc_id(db, row.row.id()),
                version,
            });
        }
    }
    Ok(out)
}
