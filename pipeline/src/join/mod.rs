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
//! The state is one entry per row with small indexes ([`layout`]), and the
//! order's rollup contribution is kept as counts per key
//! ([`contribution`]): a change reads and writes only what it touches — an
//! item change its row, the order row and its shipment; a shipment change
//! the items it serves; an order change every item of the order (all their
//! documents change). Nothing grows with the order, however many items it has.

mod contribution;
mod derived;
mod layout;

pub use derived::{is_derived, owner, rebuild};

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use self::contribution::Shipped;
use self::layout::*;
use crate::config::PipelineConfig;
use crate::docs::{courier, item_doc, ship_day, warehouse, OrderItemDoc};
use crate::model::{compare_ids, OrderItem, Row, SourceTable, Sourced, Version};
use crate::rekey::KeyedChange;
use crate::rollup::RollupDelta;
use crate::store::{StateStore, StoreError};

/// A change to the detail index, with the version of the item row behind it
/// (see [`crate::resolve`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DetailChange {
    Upsert {
        id: String,
        version: Version,
        doc: Box<OrderItemDoc>,
    },
    Delete {
        id: String,
        version: Version,
    },
}

impl DetailChange {
    pub fn id(&self) -> &str {
        match self {
            DetailChange::Upsert { id, .. } | DetailChange::Delete { id, .. } => id,
        }
    }

    pub fn version(&self) -> Version {
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
            let (ts_ms, version) = (*ts_ms, *version);
            match (row.order_id(), row) {
                (Some(order_id), Row::Order(r)) => {
                    Join::new(config, store, order_id).orders(vec![(
                        db.as_str(),
                        r.id.as_str(),
                        Some(sourced(r.clone(), db, ts_ms, version)),
                    )])
                }
                (Some(order_id), Row::Item(r)) => {
                    Join::new(config, store, order_id).items(vec![ItemChange {
                        db,
                        id: &r.id,
                        new: Some(sourced(r.clone(), db, ts_ms, version)),
                        version,
                    }])
                }
                (Some(order_id), Row::Shipment(r)) => {
                    Join::new(config, store, order_id).shipments(vec![(
                        db.as_str(),
                        r.id.as_str(),
                        Some(sourced(r.clone(), db, ts_ms, version)),
                    )])
                }
                (None, Row::Item(r)) => {
                    upsert_orphan(config, store, sourced(r.clone(), db, ts_ms, version))
                }
                // An order or shipment without order_id joins nothing.
                (None, _) => Ok(JoinOutput::default()),
            }
        }
        KeyedChange::Delete {
            table,
            db,
            order_id,
            id,
            version,
        } => match (order_id, table) {
            (Some(order_id), SourceTable::Orders) => {
                Join::new(config, store, order_id).orders(vec![(db, id, None)])
            }
            (Some(order_id), SourceTable::Items) => {
                Join::new(config, store, order_id).items(vec![ItemChange {
                    db,
                    id,
                    new: None,
                    version: *version,
                }])
            }
            (Some(order_id), SourceTable::Shipments) => {
                Join::new(config, store, order_id).shipments(vec![(db, id, None)])
            }
            (None, SourceTable::Items) => delete_orphan(config, store, db, id, *version),
            (None, _) => Ok(JoinOutput::default()),
        },
        KeyedChange::Truncate { table, db, version } => {
            truncate(config, store, *table, db, *version)
        }
    }
}

fn sourced<T>(row: T, db: &str, ts_ms: i64, version: Version) -> Sourced<T> {
    Sourced {
        row,
        db: db.to_owned(),
        ts_ms,
        version,
    }
}

/// Same row, database and source time: a replay of a change already applied,
/// whatever its version.
fn same_content<T: PartialEq>(a: Option<&Sourced<T>>, b: Option<&Sourced<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.row == b.row && a.db == b.db && a.ts_ms == b.ts_ms,
        (None, None) => true,
        _ => false,
    }
}

/// The greatest by [`compare_ids`], ties (same id, other database) by database.
fn is_greater<T>(a: &Sourced<T>, b: &Sourced<T>, id: fn(&T) -> &str) -> bool {
    compare_ids(id(&a.row), id(&b.row))
        .then_with(|| a.db.cmp(&b.db))
        .is_gt()
}

fn best<'a, T>(
    rows: impl IntoIterator<Item = &'a Sourced<T>>,
    id: fn(&T) -> &str,
) -> Option<&'a Sourced<T>>
where
    T: 'a,
{
    rows.into_iter().fold(None, |best, r| match best {
        Some(b) if !is_greater(r, b, id) => Some(b),
        _ => Some(r),
    })
}

fn order_row_id(r: &crate::model::Order) -> &str {
    &r.id
}

fn shipment_row_id(r: &crate::model::Shipment) -> &str {
    &r.id
}

fn order_value(order: Option<&OrderRow>) -> Decimal {
    order
        .and_then(|o| o.row.order_value.valid())
        .map(|m| m.amount)
        .unwrap_or_default()
}

/// What the rollups see of an item with its shipment: a shipped item with a day.
fn shipped<'a>(
    config: &PipelineConfig,
    item: &'a ItemRow,
    shipment: Option<&'a ShipmentRow>,
) -> Option<Shipped<'a>> {
    let s = shipment?;
    Some(Shipped {
        day: ship_day(config, &s.row)?,
        warehouse: warehouse(config, item),
        item_type: item.row.item_type.as_deref(),
        courier: courier(&item.row, Some(&s.row)),
        units: item.row.item_qty.valid().map_or(0, |q| *q as i64),
        shipment_id: &s.row.id,
        shipment_db: &s.db,
        cost: s
            .row
            .shipment_cost
            .valid()
            .map(|m| m.amount)
            .unwrap_or_default(),
    })
}

fn shipped_all<'a>(
    config: &PipelineConfig,
    rows: &'a [(ItemRow, Option<ShipmentRow>)],
) -> Vec<Shipped<'a>> {
    rows.iter()
        .filter_map(|(i, s)| shipped(config, i, s.as_ref()))
        .collect()
}

/// A change to one item row of an order: `new` is `None` for a delete
/// (whose `version` the document's delete carries).
struct ItemChange<'c> {
    db: &'c str,
    id: &'c str,
    new: Option<ItemRow>,
    version: Version,
}

/// A change to an order or shipment row: (db, id, new row or `None`).
type RowChange<'c, T> = (&'c str, &'c str, Option<Sourced<T>>);

/// The rows of one order, read and written through the store.
struct Join<'a, S: ?Sized> {
    config: &'a PipelineConfig,
    store: &'a mut S,
    order_id: &'a str,
}

impl<'a, S: StateStore + ?Sized> Join<'a, S> {
    fn new(config: &'a PipelineConfig, store: &'a mut S, order_id: &'a str) -> Self {
        Join {
            config,
            store,
            order_id,
        }
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.store.get(key)? {
            Some(v) => Ok(Some(decode(key, &v)?)),
            None => Ok(None),
        }
    }

    fn order_rows(&self) -> Result<Vec<OrderRow>, StoreError> {
        self.store
            .scan_prefix(&prefix(ORDER, self.order_id))?
            .into_iter()
            .map(|(k, v)| decode(&k, &v))
            .collect()
    }

    fn best_order(&self) -> Result<Option<OrderRow>, StoreError> {
        let orders = self.order_rows()?;
        Ok(best(&orders, order_row_id).cloned())
    }

    /// The shipment the join rules give `item`, among the order's shipments
    /// as the store holds them now.
    fn shipment_of(&self, item: &OrderItem) -> Result<Option<ShipmentRow>, StoreError> {
        if let Some(sid) = item.shipment_id.as_deref() {
            // Every entry under the prefix has L.id = sid: the greatest
            // database wins (by name; the keys sort by its length first).
            let by_id: Vec<ShipmentRow> = self
                .store
                .scan_prefix(&id_prefix(SHIPMENT, self.order_id, sid))?
                .into_iter()
                .map(|(k, v)| decode(&k, &v))
                .collect::<Result<_, _>>()?;
            if let Some(s) = best(&by_id, shipment_row_id) {
                return Ok(Some(s.clone()));
            }
        }
        let by_wms =
            self.store
                .scan_prefix(&id_prefix(SHIPMENT_BY_WMS, self.order_id, &item.id))?;
        let mut winner: Option<(&str, &str)> = None;
        for (k, _) in &by_wms {
            let (id, db) = index_target(k)?;
            let greater = winner
                .is_none_or(|(wid, wdb)| compare_ids(id, wid).then_with(|| db.cmp(wdb)).is_gt());
            if greater {
                winner = Some((id, db));
            }
        }
        match winner {
            Some((id, db)) => self.get(&row_key(SHIPMENT, self.order_id, id, db)),
            None => Ok(None),
        }
    }

    fn doc_upsert(
        &self,
        item: &ItemRow,
        order: Option<&OrderRow>,
        shipment: Option<&ShipmentRow>,
    ) -> DetailChange {
        DetailChange::Upsert {
            id: self.config.item_doc_id(&item.db, &item.row.id),
            version: item.version,
            doc: Box::new(item_doc(self.config, item, order, shipment)),
        }
    }

    fn contribution(
        &mut self,
        value_before: Decimal,
        value_after: Decimal,
        removed: &[(ItemRow, Option<ShipmentRow>)],
        added: &[(ItemRow, Option<ShipmentRow>)],
    ) -> Result<Vec<RollupDelta>, StoreError> {
        contribution::update(
            self.store,
            self.order_id,
            value_before,
            value_after,
            &shipped_all(self.config, removed),
            &shipped_all(self.config, added),
        )
    }

    /// Item rows inserted, replaced or deleted.
    fn items(mut self, changes: Vec<ItemChange<'_>>) -> Result<JoinOutput, StoreError> {
        let order = self.best_order()?;
        let value = order_value(order.as_ref());
        let mut out = JoinOutput::default();
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        for change in changes {
            let key = row_key(ITEM, self.order_id, change.id, change.db);
            let old: Option<ItemRow> = self.get(&key)?;
            if old == change.new {
                continue; // a replay of a change already applied
            }
            let old_shipment = match &old {
                Some(o) => self.shipment_of(&o.row)?,
                None => None,
            };
            let new_shipment = match (&change.new, &old) {
                // The link depends on the item's id and shipment_id only.
                (Some(n), Some(o)) if n.row.shipment_id == o.row.shipment_id => {
                    old_shipment.clone()
                }
                (Some(n), _) => self.shipment_of(&n.row)?,
                (None, _) => None,
            };
            let old_ref = old.as_ref().and_then(|o| o.row.shipment_id.as_deref());
            let new_ref = change
                .new
                .as_ref()
                .and_then(|n| n.row.shipment_id.as_deref());
            if old.is_some() && old_ref != new_ref {
                if let Some(sid) = old_ref {
                    self.store.delete(&index_key(
                        ITEM_BY_SHIPMENT,
                        self.order_id,
                        sid,
                        change.id,
                        change.db,
                    ))?;
                }
            }
            match &change.new {
                Some(new) => {
                    out.details
                        .push(self.doc_upsert(new, order.as_ref(), new_shipment.as_ref()));
                    if old.is_none() || old_ref != new_ref {
                        if let Some(sid) = new_ref {
                            self.store.put(
                                &index_key(
                                    ITEM_BY_SHIPMENT,
                                    self.order_id,
                                    sid,
                                    change.id,
                                    change.db,
                                ),
                                &[],
                            )?;
                        }
                    }
                    self.store.put(&key, &encode(new)?)?;
                }
                None => {
                    out.details.push(DetailChange::Delete {
                        id: self.config.item_doc_id(change.db, change.id),
                        version: change.version,
                    });
                    self.store.delete(&key)?;
                }
            }
            if let Some(old) = old {
                removed.push((old, old_shipment));
            }
            if let Some(new) = change.new {
                added.push((new, new_shipment));
            }
        }
        out.deltas = self.contribution(value, value, &removed, &added)?;
        Ok(out)
    }

    /// Order rows inserted, replaced or deleted: when the winning order row
    /// changes, every item's document changes.
    fn orders(
        mut self,
        changes: Vec<RowChange<'_, crate::model::Order>>,
    ) -> Result<JoinOutput, StoreError> {
        let before = self.best_order()?;
        for (db, id, new) in changes {
            let key = order_key(self.order_id, db, id);
            match new {
                Some(new) => self.store.put(&key, &encode(&new)?)?,
                None => self.store.delete(&key)?,
            }
        }
        let after = self.best_order()?;
        // The same winner, or a replay of it: no document changes.
        if same_content(before.as_ref(), after.as_ref()) {
            return Ok(JoinOutput::default());
        }
        let mut out = JoinOutput::default();
        for (k, v) in self.store.scan_prefix(&prefix(ITEM, self.order_id))? {
            let item: ItemRow = decode(&k, &v)?;
            let shipment = self.shipment_of(&item.row)?;
            out.details
                .push(self.doc_upsert(&item, after.as_ref(), shipment.as_ref()));
        }
        let (v0, v1) = (order_value(before.as_ref()), order_value(after.as_ref()));
        out.deltas = self.contribution(v0, v1, &[], &[])?;
        Ok(out)
    }

    /// Shipment rows inserted, replaced or deleted: the items they serve (by
    /// `shipment_id`, or by `wmsrecord_id`) may link to another shipment.
    fn shipments(
        mut self,
        changes: Vec<RowChange<'_, crate::model::Shipment>>,
    ) -> Result<JoinOutput, StoreError> {
        let mut effective = Vec::new();
        for (db, id, new) in changes {
            let key = row_key(SHIPMENT, self.order_id, id, db);
            let old: Option<ShipmentRow> = self.get(&key)?;
            if same_content(old.as_ref(), new.as_ref()) {
                // A replay: only its version is new.
                if let (Some(new), true) = (&new, old != new) {
                    self.store.put(&key, &encode(new)?)?;
                }
                continue;
            }
            effective.push((db, id, key, old, new));
        }
        if effective.is_empty() {
            return Ok(JoinOutput::default());
        }
        // The items whose link may change: by shipment id, and by the
        // shipment's wmsrecord_id before and after.
        let mut affected: BTreeMap<Vec<u8>, ItemRow> = BTreeMap::new();
        for (_, id, _, old, new) in &effective {
            for (k, _) in self
                .store
                .scan_prefix(&id_prefix(ITEM_BY_SHIPMENT, self.order_id, id))?
            {
                let (item_id, item_db) = index_target(&k)?;
                let key = row_key(ITEM, self.order_id, item_id, item_db);
                if let Some(item) = self.get::<ItemRow>(&key)? {
                    affected.insert(key, item);
                }
            }
            let wms = [old, new]
                .into_iter()
                .flatten()
                .filter_map(|s| s.row.wmsrecord_id.as_deref());
            for w in wms {
                for (k, v) in self.store.scan_prefix(&id_prefix(ITEM, self.order_id, w))? {
                    let item = decode(&k, &v)?;
                    affected.insert(k, item);
                }
            }
        }
        let mut before = Vec::with_capacity(affected.len());
        for item in affected.values() {
            before.push(self.shipment_of(&item.row)?);
        }
        for (db, id, key, old, new) in &effective {
            let old_wms = old.as_ref().and_then(|s| s.row.wmsrecord_id.as_deref());
            let new_wms = new.as_ref().and_then(|s| s.row.wmsrecord_id.as_deref());
            if let Some(w) = old_wms.filter(|w| Some(*w) != new_wms) {
                self.store
                    .delete(&index_key(SHIPMENT_BY_WMS, self.order_id, w, id, db))?;
            }
            match new {
                Some(new) => {
                    if let Some(w) = new_wms.filter(|w| Some(*w) != old_wms) {
                        self.store
                            .put(&index_key(SHIPMENT_BY_WMS, self.order_id, w, id, db), &[])?;
                    }
                    self.store.put(key, &encode(new)?)?;
                }
                None => self.store.delete(key)?,
            }
        }
        let order = self.best_order()?;
        let mut out = JoinOutput::default();
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        for (item, old_shipment) in affected.into_values().zip(before) {
            let new_shipment = self.shipment_of(&item.row)?;
            if new_shipment == old_shipment {
                continue;
            }
            out.details
                .push(self.doc_upsert(&item, order.as_ref(), new_shipment.as_ref()));
            removed.push((item.clone(), old_shipment));
            added.push((item, new_shipment));
        }
        let value = order_value(order.as_ref());
        out.deltas = self.contribution(value, value, &removed, &added)?;
        Ok(out)
    }
}

fn upsert_orphan<S: StateStore + ?Sized>(
    config: &PipelineConfig,
    store: &mut S,
    item: ItemRow,
) -> Result<JoinOutput, StoreError> {
    let key = orphan_key(&item.db, &item.row.id);
    let existing: Option<ItemRow> = match store.get(&key)? {
        Some(v) => Some(decode(&key, &v)?),
        None => None,
    };
    if existing.as_ref() == Some(&item) {
        return Ok(JoinOutput::default());
    }
    store.put(&key, &encode(&item)?)?;
    Ok(JoinOutput {
        details: vec![DetailChange::Upsert {
            id: config.item_doc_id(&item.db, &item.row.id),
            version: item.version,
            doc: Box::new(item_doc(config, &item, None, None)),
        }],
        deltas: Vec::new(),
    })
}

fn delete_orphan<S: StateStore + ?Sized>(
    config: &PipelineConfig,
    store: &mut S,
    db: &str,
    id: &str,
    version: Version,
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

/// Removes every row of `table` that came from `db`, order by order.
fn truncate<S: StateStore + ?Sized>(
    config: &PipelineConfig,
    store: &mut S,
    table: SourceTable,
    db: &str,
    version: Version,
) -> Result<JoinOutput, StoreError> {
    let tag = match table {
        SourceTable::Orders => ORDER,
        SourceTable::Items => ITEM,
        SourceTable::Shipments => SHIPMENT,
    };
    // (order id → (db, id) of its rows from `db`), in key order.
    let mut by_order: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (k, _) in store.scan_prefix(&[tag])? {
        let (order_id, a, b) = key_fields(&k)?;
        // Orders are keyed (db, id), items and shipments (id, db).
        let (row_db, id) = if tag == ORDER { (a, b) } else { (b, a) };
        if row_db == db {
            by_order
                .entry(order_id.to_owned())
                .or_default()
                .push((row_db.to_owned(), id.to_owned()));
        }
    }
    let mut out = JoinOutput::default();
    for (order_id, rows) in &by_order {
        let join = Join::new(config, store, order_id);
        out.extend(match table {
            SourceTable::Orders => join.orders(
                rows.iter()
                    .map(|(d, i)| (d.as_str(), i.as_str(), None))
                    .collect(),
            )?,
            SourceTable::Shipments => join.shipments(
                rows.iter()
                    .map(|(d, i)| (d.as_str(), i.as_str(), None))
                    .collect(),
            )?,
            SourceTable::Items => join.items(
                rows.iter()
                    .map(|(d, i)| ItemChange {
                        db: d,
                        id: i,
                        new: None,
                        version,
                    })
                    .collect(),
            )?,
        });
    }
    if table == SourceTable::Items {
        for (k, v) in store.scan_prefix(&orphan_prefix(db))? {
            let row: ItemRow = decode(&k, &v)?;
            if row.db != db {
                continue;
            }
            store.delete(&k)?;
            out.details.push(DetailChange::Delete {
                id: config.item_doc_id(db, &row.row.id),
                version,
            });
        }
    }
    Ok(out)
}

/// The number of rows a join state holds: every row of every order, and the
/// orphan items. For tests and diagnostics (it reads the whole state).
pub fn stored_rows<S: StateStore + ?Sized>(store: &S) -> Result<usize, StoreError> {
    let mut n = 0;
    for tag in [ORDER, ITEM, SHIPMENT, ORPHAN] {
        n += store.scan_prefix(&[tag])?.len();
    }
    Ok(n)
}

/// Checks that a join state's indexes and rollup counts are exactly what its
/// rows give (nothing missing, nothing left over), for tests: it reads the
/// whole state. Returns what differs.
#[doc(hidden)]
pub fn verify_state<S: StateStore + ?Sized>(
    config: &PipelineConfig,
    store: &mut S,
) -> Result<(), String> {
    let fail = |e: StoreError| e.to_string();
    let mut order_ids = std::collections::BTreeSet::new();
    for tag in [
        ORDER,
        ITEM,
        SHIPMENT,
        SHIPMENT_BY_WMS,
        ITEM_BY_SHIPMENT,
        KEY_TOTAL,
        KEY_SHIPMENT,
    ] {
        for (k, _) in store.scan_prefix(&[tag]).map_err(fail)? {
            let mut f = Fields::new(&k, 1);
            order_ids.insert(f.next_str().map_err(fail)?.to_owned());
        }
    }
    for order_id in order_ids {
        if let Some(diff) = derived::check(config, store, &order_id).map_err(fail)? {
            return Err(diff);
        }
    }
    Ok(())
}
