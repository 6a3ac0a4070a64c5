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
//! - `G` + u32 BE length + order_id → all the rows of that order, in one
//!   record ([`crate::codec`]): one read and one write per change, instead of
//!   a prefix scan that decodes every row of the order from its own entry;
//! - `O` + u16 BE length + db + id → an orphan item ([`Sourced<Row>`]).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::config::PipelineConfig;
use rust_decimal::Decimal;

use crate::docs::{courier, item_doc, ship_day, warehouse, OrderItemDoc};
use crate::model::{compare_ids, Order, OrderItem, Row, Shipment, SourceTable, Sourced};
use crate::rekey::KeyedChange;
use crate::rollup::{self, RollupDelta, ShippedItem};
use crate::store::{StateStore, StoreError};

/// A change to the detail index, with the version of the item row behind it
/// (see [`crate::resolve`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DetailChange {
    Upsert {
        id: String,
        version: i64,
        doc: Box<OrderItemDoc>,
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

fn group_key(order_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + order_id.len());
    k.push(b'G');
    k.extend_from_slice(&(order_id.len() as u32).to_be_bytes());
    k.extend_from_slice(order_id.as_bytes());
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

/// The rows of one order, as evaluated; with, for rows read from the store
/// and not changed since, where their encoding sits in `buf`, so that writing
/// the order back copies them instead of encoding them again.
#[derive(Default, Debug)]
struct OrderRows {
    orders: Vec<Sourced<Order>>,
    items: Vec<Sourced<OrderItem>>,
    shipments: Vec<Sourced<Shipment>>,
    raw: [Vec<Option<Range<usize>>>; 3],
    buf: Vec<u8>,
}

fn sourced<T>(row: T, db: String, ts_ms: i64, version: i64) -> Sourced<T> {
    Sourced {
        row,
        db,
        ts_ms,
        version,
    }
}

/// Where a row of some table sits in an [`OrderRows`].
fn position<T>(rows: &[Sourced<T>], db: &str, id: &str, id_of: fn(&T) -> &str) -> Option<usize> {
    rows.iter().position(|s| s.db == db && id_of(&s.row) == id)
}

fn order_id_of(r: &Order) -> &str {
    &r.id
}

fn item_id_of(r: &OrderItem) -> &str {
    &r.id
}

fn shipment_id_of(r: &Shipment) -> &str {
    &r.id
}

fn slot(table: SourceTable) -> usize {
    match table {
        SourceTable::Orders => 0,
        SourceTable::Items => 1,
        SourceTable::Shipments => 2,
    }
}

/// The order record: [`codec::FORMAT_VERSION`], then per row its table tag,
/// its length (u32 LE) and its own [`codec`] encoding (`Sourced<T>`).
fn push_entry(out: &mut Vec<u8>, table: SourceTable, body: &[u8]) {
    out.push(table.tag());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

fn corrupt(key: &[u8], source: codec::CodecError) -> StoreError {
    StoreError::Corrupt {
        key: key.to_vec(),
        source,
    }
}

impl OrderRows {
    fn is_empty(&self) -> bool {
        self.orders.is_empty() && self.items.is_empty() && self.shipments.is_empty()
    }

    fn insert(&mut self, s: Sourced<Row>) {
        let Sourced {
            row,
            db,
            ts_ms,
            version,
        } = s;
        let table = row.table();
        match row {
            Row::Order(r) => self.orders.push(sourced(r, db, ts_ms, version)),
            Row::Item(r) => self.items.push(sourced(r, db, ts_ms, version)),
            Row::Shipment(r) => self.shipments.push(sourced(r, db, ts_ms, version)),
        }
        self.raw[slot(table)].push(None);
    }

    fn load<S: StateStore + ?Sized>(store: &S, key: &[u8]) -> Result<Self, StoreError> {
        match store.get(key)? {
            Some(v) => decode_rows(key, v),
            None => Ok(OrderRows::default()),
        }
    }

    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        fn rows<T: Serialize>(
            out: &mut Vec<u8>,
            buf: &[u8],
            table: SourceTable,
            rows: &[Sourced<T>],
            raw: &[Option<Range<usize>>],
        ) -> Result<(), StoreError> {
            for (row, raw) in rows.iter().zip(raw) {
                match raw {
                    Some(r) => push_entry(out, table, &buf[r.clone()]),
                    None => {
                        out.push(table.tag());
                        let at = out.len();
                        out.extend_from_slice(&[0; 4]);
                        codec::encode_into(row, out).map_err(StoreError::Encode)?;
                        let len = (out.len() - at - 4) as u32;
                        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
                    }
                }
            }
            Ok(())
        }
        let mut out = Vec::with_capacity(self.buf.len() + 256);
        out.push(codec::FORMAT_VERSION);
        rows(
            &mut out,
            &self.buf,
            SourceTable::Orders,
            &self.orders,
            &self.raw[0],
        )?;
        rows(
            &mut out,
            &self.buf,
            SourceTable::Items,
            &self.items,
            &self.raw[1],
        )?;
        rows(
            &mut out,
            &self.buf,
            SourceTable::Shipments,
            &self.shipments,
            &self.raw[2],
        )?;
        Ok(out)
    }

    /// Writes the rows back, or deletes the record when none is left.
    fn save<S: StateStore + ?Sized>(&self, store: &mut S, key: &[u8]) -> Result<(), StoreError> {
        if self.is_empty() {
            store.delete(key)
        } else {
            store.put(key, &self.encode()?)
        }
    }

    fn position(&self, table: SourceTable, db: &str, id: &str) -> Option<usize> {
        match table {
            SourceTable::Orders => position(&self.orders, db, id, order_id_of),
            SourceTable::Items => position(&self.items, db, id, item_id_of),
            SourceTable::Shipments => position(&self.shipments, db, id, shipment_id_of),
        }
    }

    /// Whether the stored row at `at` equals `s` (`content_only`: ignoring its version).
    fn row_equals(&self, at: usize, s: &Sourced<Row>, content_only: bool) -> bool {
        fn eq<T: PartialEq>(a: &Sourced<T>, row: &T, s: &Sourced<Row>, content_only: bool) -> bool {
            a.row == *row
                && a.db == s.db
                && a.ts_ms == s.ts_ms
                && (content_only || a.version == s.version)
        }
        match &s.row {
            Row::Order(r) => eq(&self.orders[at], r, s, content_only),
            Row::Item(r) => eq(&self.items[at], r, s, content_only),
            Row::Shipment(r) => eq(&self.shipments[at], r, s, content_only),
        }
    }

    /// Replaces the row at `at` (or appends it when `at` is `None`).
    fn replace(&mut self, at: Option<usize>, s: Sourced<Row>) {
        let Some(at) = at else {
            return self.insert(s);
        };
        let Sourced {
            row,
            db,
            ts_ms,
            version,
        } = s;
        let table = row.table();
        match row {
            Row::Order(r) => self.orders[at] = sourced(r, db, ts_ms, version),
            Row::Item(r) => self.items[at] = sourced(r, db, ts_ms, version),
            Row::Shipment(r) => self.shipments[at] = sourced(r, db, ts_ms, version),
        }
        self.raw[slot(table)][at] = None;
    }

    fn remove(&mut self, table: SourceTable, at: usize) {
        match table {
            SourceTable::Orders => drop(self.orders.swap_remove(at)),
            SourceTable::Items => drop(self.items.swap_remove(at)),
            SourceTable::Shipments => drop(self.shipments.swap_remove(at)),
        }
        self.raw[slot(table)].swap_remove(at);
    }

    /// Removes every row of `table` from `db`; whether there was any.
    fn remove_table(&mut self, table: SourceTable, db: &str) -> bool {
        fn retain<T>(
            rows: &mut Vec<Sourced<T>>,
            raw: &mut Vec<Option<Range<usize>>>,
            db: &str,
        ) -> bool {
            let before = rows.len();
            let mut i = 0;
            while i < rows.len() {
                if rows[i].db == db {
                    rows.swap_remove(i);
                    raw.swap_remove(i);
                } else {
                    i += 1;
                }
            }
            rows.len() != before
        }
        let raw = &mut self.raw[slot(table)];
        match table {
            SourceTable::Orders => retain(&mut self.orders, raw, db),
            SourceTable::Items => retain(&mut self.items, raw, db),
            SourceTable::Shipments => retain(&mut self.shipments, raw, db),
        }
    }

    fn has_table(&self, table: SourceTable, db: &str) -> bool {
        match table {
            SourceTable::Orders => self.orders.iter().any(|r| r.db == db),
            SourceTable::Items => self.items.iter().any(|r| r.db == db),
            SourceTable::Shipments => self.shipments.iter().any(|r| r.db == db),
        }
    }

    fn len(&self) -> usize {
        self.orders.len() + self.items.len() + self.shipments.len()
    }
}

fn decode_rows(key: &[u8], value: Vec<u8>) -> Result<OrderRows, StoreError> {
    let (&version, mut rest) = value
        .split_first()
        .ok_or_else(|| corrupt(key, codec::CodecError::Empty))?;
    if version != codec::FORMAT_VERSION {
        return Err(corrupt(key, codec::CodecError::Version(version)));
    }
    let mut rows = OrderRows::default();
    let mut at = 1;
    while let Some((&tag, tail)) = rest.split_first() {
        let truncated = || {
            corrupt(
                key,
                codec::CodecError::Decode("truncated order record".into()),
            )
        };
        let len = u32::from_le_bytes(
            tail.get(..4)
                .ok_or_else(truncated)?
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        let body = tail.get(4..4 + len).ok_or_else(truncated)?;
        let range = at + 5..at + 5 + len;
        let table = SourceTable::from_tag(tag).ok_or_else(|| {
            corrupt(
                key,
                codec::CodecError::Decode(format!("unknown table tag {tag}")),
            )
        })?;
        match table {
            SourceTable::Orders => rows
                .orders
                .push(codec::decode(body).map_err(|e| corrupt(key, e))?),
            SourceTable::Items => rows
                .items
                .push(codec::decode(body).map_err(|e| corrupt(key, e))?),
            SourceTable::Shipments => rows
                .shipments
                .push(codec::decode(body).map_err(|e| corrupt(key, e))?),
        }
        rows.raw[slot(table)].push(Some(range));
        at += 5 + len;
        rest = &tail[4 + len..];
    }
    rows.buf = value;
    Ok(rows)
}

/// Which stored rows an evaluation leaves out.
#[derive(Clone, Copy)]
enum Removal<'a> {
    Nothing,
    Row(SourceTable, &'a str, &'a str),
    Table(SourceTable, &'a str),
}

/// An order's rows as they are (`removal: Nothing`, nothing added) or as a
/// change leaves them, without copying any row.
#[derive(Clone, Copy)]
struct View<'a> {
    base: &'a OrderRows,
    removal: Removal<'a>,
    added: &'a OrderRows,
}

impl<'a> View<'a> {
    fn current(base: &'a OrderRows, empty: &'a OrderRows) -> Self {
        View {
            base,
            removal: Removal::Nothing,
            added: empty,
        }
    }

    fn keep(self, table: SourceTable, db: &str, id: &str) -> bool {
        match self.removal {
            Removal::Nothing => true,
            Removal::Row(t, d, i) => !(t == table && d == db && i == id),
            Removal::Table(t, d) => !(t == table && d == db),
        }
    }

    fn orders(self) -> impl Iterator<Item = &'a Sourced<Order>> {
        let base = self.base.orders.iter();
        base.filter(move |r| self.keep(SourceTable::Orders, &r.db, &r.row.id))
            .chain(self.added.orders.iter())
    }

    fn items(self) -> impl Iterator<Item = &'a Sourced<OrderItem>> {
        let base = self.base.items.iter();
        base.filter(move |r| self.keep(SourceTable::Items, &r.db, &r.row.id))
            .chain(self.added.items.iter())
    }

    fn shipments(self) -> impl Iterator<Item = &'a Sourced<Shipment>> {
        let base = self.base.shipments.iter();
        base.filter(move |r| self.keep(SourceTable::Shipments, &r.db, &r.row.id))
            .chain(self.added.shipments.iter())
    }
}

/// An item with the order and shipment the join rules give it.
#[derive(Clone, Copy, PartialEq)]
struct Joined<'a> {
    item: &'a Sourced<OrderItem>,
    order: Option<&'a Sourced<Order>>,
    shipment: Option<&'a Sourced<Shipment>>,
}

fn same_ref<T: PartialEq>(a: Option<&T>, b: Option<&T>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => std::ptr::eq(a, b) || a == b,
        (None, None) => true,
        _ => false,
    }
}

impl Joined<'_> {
    /// `==`, comparing addresses first: both evaluations of a change share
    /// the rows it leaves alone.
    fn same_as(&self, other: &Joined<'_>) -> bool {
        same_ref(Some(self.item), Some(other.item))
            && same_ref(self.order, other.order)
            && same_ref(self.shipment, other.shipment)
    }
}

/// An order's items, joined, keyed by (db, id); and the winning order row.
struct Evaluation<'a> {
    order: Option<&'a Sourced<Order>>,
    items: BTreeMap<(&'a str, &'a str), Joined<'a>>,
}

/// The greatest by [`compare_ids`], ties (same id, other database) by database.
fn is_greater<T>(a: &Sourced<T>, b: &Sourced<T>, id: fn(&T) -> &str) -> bool {
    compare_ids(id(&a.row), id(&b.row))
        .then_with(|| a.db.cmp(&b.db))
        .is_gt()
}

/// Finds an item's shipment among the order's shipments: linear for the
/// usual handful, indexed for large orders.
enum Shipments<'a> {
    Few(Vec<&'a Sourced<Shipment>>),
    Many {
        by_id: HashMap<&'a str, &'a Sourced<Shipment>>,
        by_wms: HashMap<&'a str, &'a Sourced<Shipment>>,
    },
}

fn shipment_id(s: &Shipment) -> &str {
    &s.id
}

impl<'a> Shipments<'a> {
    fn new(all: Vec<&'a Sourced<Shipment>>) -> Self {
        if all.len() <= 16 {
            return Shipments::Few(all);
        }
        let mut by_id: HashMap<&str, &Sourced<Shipment>> = HashMap::new();
        let mut by_wms: HashMap<&str, &Sourced<Shipment>> = HashMap::new();
        for s in all {
            let slot = by_id.entry(s.row.id.as_str()).or_insert(s);
            if is_greater(s, slot, shipment_id) {
                *slot = s;
            }
            if let Some(w) = s.row.wmsrecord_id.as_deref() {
                let slot = by_wms.entry(w).or_insert(s);
                if is_greater(s, slot, shipment_id) {
                    *slot = s;
                }
            }
        }
        Shipments::Many { by_id, by_wms }
    }

    fn best(
        all: &[&'a Sourced<Shipment>],
        matches: impl Fn(&Shipment) -> bool,
    ) -> Option<&'a Sourced<Shipment>> {
        all.iter()
            .copied()
            .filter(|s| matches(&s.row))
            .fold(None, |best, s| match best {
                Some(b) if !is_greater(s, b, shipment_id) => Some(b),
                _ => Some(s),
            })
    }

    fn of(&self, item: &OrderItem) -> Option<&'a Sourced<Shipment>> {
        match self {
            Shipments::Few(all) => item
                .shipment_id
                .as_deref()
                .and_then(|sid| Self::best(all, |s| s.id == sid))
                .or_else(|| Self::best(all, |s| s.wmsrecord_id.as_deref() == Some(&item.id))),
            Shipments::Many { by_id, by_wms } => item
                .shipment_id
                .as_deref()
                .and_then(|sid| by_id.get(sid))
                .or_else(|| by_wms.get(item.id.as_str()))
                .copied(),
        }
    }
}

fn evaluate<'a>(view: View<'a>) -> Evaluation<'a> {
    let order = view.orders().fold(None, |best, o| match best {
        Some(b) if !is_greater(o, b, |r: &Order| &r.id) => Some(b),
        _ => Some(o),
    });
    let shipments = Shipments::new(view.shipments().collect());
    let items = view
        .items()
        .map(|item| {
            let joined = Joined {
                item,
                order,
                shipment: shipments.of(&item.row),
            };
            ((item.db.as_str(), item.row.id.as_str()), joined)
        })
        .collect();
    Evaluation { order, items }
}

/// What the rollups see of an evaluation: the shipped items with a day.
fn shipped<'a>(config: &PipelineConfig, e: &Evaluation<'a>) -> Vec<ShippedItem<'a>> {
    e.items
        .values()
        .filter_map(|j| {
            let s = j.shipment?;
            Some(ShippedItem {
                day: ship_day(config, &s.row)?,
                warehouse: warehouse(config, j.item),
                item_type: j.item.row.item_type.as_deref(),
                courier: courier(&j.item.row, Some(&s.row)),
                units: j.item.row.item_qty.valid().map_or(0, |q| *q as i64),
                shipment_id: &s.row.id,
                shipping_cost: s
                    .row
                    .shipment_cost
                    .valid()
                    .map(|m| m.amount)
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn order_value(e: &Evaluation<'_>) -> Decimal {
    e.order
        .and_then(|o| o.row.order_value.valid())
        .map(|m| m.amount)
        .unwrap_or_default()
}

/// What changed between two evaluations of the same order: documents are
/// built only for items whose join inputs changed (an item's version
/// included). `removal_version` is the version of the change, for deletes.
fn diff(
    config: &PipelineConfig,
    before: &Evaluation<'_>,
    after: &Evaluation<'_>,
    removal_version: i64,
) -> JoinOutput {
    let mut details = Vec::new();
    for (key, j) in &after.items {
        if !before.items.get(key).is_some_and(|b| b.same_as(j)) {
            details.push(DetailChange::Upsert {
                id: config.item_doc_id(key.0, key.1),
                version: j.item.version,
                doc: Box::new(item_doc(config, j.item, j.order, j.shipment)),
            });
        }
    }
    for key in before.items.keys() {
        if !after.items.contains_key(key) {
            details.push(DetailChange::Delete {
                id: config.item_doc_id(key.0, key.1),
                version: removal_version,
            });
        }
    }
    let (old, new) = (shipped(config, before), shipped(config, after));
    let deltas = if old == new && (new.is_empty() || order_value(before) == order_value(after)) {
        Vec::new()
    } else {
        rollup::contribution_deltas(order_value(before), &old, order_value(after), &new)
    };
    JoinOutput { details, deltas }
}

fn upsert_in_order<S: StateStore + ?Sized>(
    config: &PipelineConfig,
    store: &mut S,
    order_id: &str,
    stored: Sourced<Row>,
) -> Result<JoinOutput, StoreError> {
    let key = group_key(order_id);
    let mut rows = OrderRows::load(store, &key)?;
    let table = stored.row.table();
    let at = rows.position(table, &stored.db, stored.row.id());
    if at.is_some_and(|at| {
        rows.row_equals(at, &stored, false)
            || (table != SourceTable::Items && rows.row_equals(at, &stored, true))
    }) {
        // A replay of an order or shipment change already applied: nothing
        // downstream changes. (A replayed item change is re-emitted with its
        // new version, since another partition may meanwhile have deleted
        // the document at a version between the two.)
        rows.replace(at, stored);
        rows.save(store, &key)?;
        return Ok(JoinOutput::default());
    }
    let version = stored.version;
    let mut added = OrderRows::default();
    added.insert(stored);
    let out = {
        let (db, id) = match (&added.orders[..], &added.items[..], &added.shipments[..]) {
            ([o], _, _) => (&o.db, &o.row.id),
            (_, [i], _) => (&i.db, &i.row.id),
            (_, _, [s]) => (&s.db, &s.row.id),
            _ => unreachable!("one row was added"),
        };
        let empty = OrderRows::default();
        let before = evaluate(View::current(&rows, &empty));
        let after = evaluate(View {
            base: &rows,
            removal: Removal::Row(table, db, id),
            added: &added,
        });
        diff(config, &before, &after, version)
    };
    let row = match table {
        SourceTable::Orders => added
            .orders
            .pop()
            .map(|r| sourced(Row::Order(r.row), r.db, r.ts_ms, r.version)),
        SourceTable::Items => added
            .items
            .pop()
            .map(|r| sourced(Row::Item(r.row), r.db, r.ts_ms, r.version)),
        SourceTable::Shipments => added
            .shipments
            .pop()
            .map(|r| sourced(Row::Shipment(r.row), r.db, r.ts_ms, r.version)),
    };
    if let Some(row) = row {
        rows.replace(at, row);
    }
    rows.save(store, &key)?;
    Ok(out)
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
    let key = group_key(order_id);
    let mut rows = OrderRows::load(store, &key)?;
    let Some(at) = rows.position(table, db, id) else {
        return Ok(JoinOutput::default());
    };
    let out = {
        let empty = OrderRows::default();
        let before = evaluate(View::current(&rows, &empty));
        let after = evaluate(View {
            base: &rows,
            removal: Removal::Row(table, db, id),
            added: &empty,
        });
        diff(config, &before, &after, version)
    };
    rows.remove(table, at);
    rows.save(store, &key)?;
    Ok(out)
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
    for (key, value) in store.scan_prefix(b"G")? {
        let mut rows = decode_rows(&key, value)?;
        if !rows.has_table(table, db) {
            continue;
        }
        {
            let empty = OrderRows::default();
            let before = evaluate(View::current(&rows, &empty));
            let after = evaluate(View {
                base: &rows,
                removal: Removal::Table(table, db),
                added: &empty,
            });
            out.extend(diff(config, &before, &after, version));
        }
        rows.remove_table(table, db);
        rows.save(store, &key)?;
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

/// The number of rows a join state holds: every row of every order, and the
/// orphan items. For tests and diagnostics (it reads the whole state).
pub fn stored_rows<S: StateStore + ?Sized>(store: &S) -> Result<usize, StoreError> {
    let mut n = 0;
    for (key, value) in store.scan_prefix(b"G")? {
        n += decode_rows(&key, value)?.len();
    }
    Ok(n + store.scan_prefix(b"O")?.len())
}
