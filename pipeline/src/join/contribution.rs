//! An order's contribution to the daily rollups, kept incrementally.
//!
//! The rollups count distinct orders and shipments within each key, so an
//! order's contribution to a key is not a sum over its items: it needs to
//! know how many of the order's items are in the key, and per shipment how
//! many of them that shipment serves. Those counts are kept in the join
//! state (see [`super::layout`]: `a` per key, `b` per key and shipment), so a
//! change to one item or shipment updates the few keys it touches, and the
//! delta sent downstream is the key's contribution after minus before —
//! without reading the order's other items.
//!
//! Per key, with `n` the order's shipped items in it and `v` the order's value:
//! - `units_daily`: items = n, units = Σ qty;
//! - `courier_daily`: items = n, orders = 1 if n > 0, shipments = distinct
//!   shipments serving them, shipping_cost = Σ their costs;
//! - `warehouse_daily`: items = n, units = Σ qty, order_value = v if n > 0,
//!   shipping_cost = Σ over distinct shipments.
//!
//! A shipment is one row (its id and database).

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::layout::{decode, encode, prefix, push_str, KEY_SHIPMENT, KEY_TOTAL};
use crate::rollup::{Measures, RollupDelta, RollupKey};
use crate::store::{StateStore, StoreError};

/// A shipped item with a ship day, as the rollups see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Shipped<'a> {
    pub day: NaiveDate,
    pub warehouse: &'a str,
    pub item_type: Option<&'a str>,
    pub courier: Option<&'a str>,
    /// The item's quantity; null counts as zero.
    pub units: i64,
    pub shipment_id: &'a str,
    pub shipment_db: &'a str,
    /// The shipment's cost; null counts as zero.
    pub cost: Decimal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Units,
    Courier,
    Warehouse,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Units, Kind::Courier, Kind::Warehouse];

    fn tag(self) -> u8 {
        match self {
            Kind::Units => b'u',
            Kind::Courier => b'c',
            Kind::Warehouse => b'w',
        }
    }

    /// Whether the rollup counts distinct shipments.
    fn counts_shipments(self) -> bool {
        self != Kind::Units
    }
}

/// The order's shipped items in one rollup key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct KeyTotal {
    pub key: RollupKey,
    pub items: i64,
    pub units: i64,
    /// Distinct shipments serving them (courier and warehouse rollups).
    pub shipments: i64,
    #[serde(with = "crate::values::decimal_compact")]
    pub cost: Decimal,
}

/// The order's items in one rollup key served by one shipment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct KeyShipment {
    pub items: i64,
    #[serde(with = "crate::values::decimal_compact")]
    pub cost: Decimal,
}

impl KeyTotal {
    fn empty(key: RollupKey) -> Self {
        KeyTotal {
            key,
            items: 0,
            units: 0,
            shipments: 0,
            cost: Decimal::ZERO,
        }
    }

    /// What the order adds to the key's rollup document.
    fn measures(&self, order_value: Decimal) -> Measures {
        let present = self.items > 0;
        let mut m = Measures {
            items: self.items,
            ..Measures::default()
        };
        match self.key {
            RollupKey::UnitsDaily { .. } => m.units = self.units,
            RollupKey::CourierDaily { .. } => {
                m.orders = i64::from(present);
                m.shipments = self.shipments;
                m.shipping_cost = self.cost.normalize();
            }
            RollupKey::WarehouseDaily { .. } => {
                m.units = self.units;
                m.shipping_cost = self.cost.normalize();
                if present {
                    m.order_value = order_value.normalize();
                }
            }
        }
        m
    }
}

impl Shipped<'_> {
    fn key_bytes(&self, kind: Kind) -> Vec<u8> {
        let mut k = Vec::with_capacity(48);
        k.push(kind.tag());
        k.extend_from_slice(&self.day.num_days_from_ce().to_be_bytes());
        let opt = |k: &mut Vec<u8>, s: Option<&str>| match s {
            None => k.push(0),
            Some(s) => {
                k.push(1);
                push_str(k, s);
            }
        };
        match kind {
            Kind::Units => {
                push_str(&mut k, self.warehouse);
                opt(&mut k, self.item_type);
            }
            Kind::Courier => opt(&mut k, self.courier),
            Kind::Warehouse => push_str(&mut k, self.warehouse),
        }
        k
    }

    fn rollup_key(&self, kind: Kind) -> RollupKey {
        match kind {
            Kind::Units => RollupKey::UnitsDaily {
                day: self.day,
                warehouse: self.warehouse.to_owned(),
                item_type: self.item_type.map(str::to_owned),
            },
            Kind::Courier => RollupKey::CourierDaily {
                day: self.day,
                courier: self.courier.map(str::to_owned),
            },
            Kind::Warehouse => RollupKey::WarehouseDaily {
                day: self.day,
                warehouse: self.warehouse.to_owned(),
            },
        }
    }
}

fn total_key(order_id: &str, key: &[u8]) -> Vec<u8> {
    let mut k = prefix(KEY_TOTAL, order_id);
    k.extend_from_slice(key);
    k
}

fn shipment_key(order_id: &str, key: &[u8], s: &Shipped<'_>) -> Vec<u8> {
    let mut k = prefix(KEY_SHIPMENT, order_id);
    k.extend_from_slice(key);
    push_str(&mut k, s.shipment_id);
    push_str(&mut k, s.shipment_db);
    k
}

struct Touched {
    before: Option<KeyTotal>,
    now: KeyTotal,
}

/// The counts one batch of changes touches, read once and written back once.
struct Batch<'s, S: ?Sized> {
    store: &'s mut S,
    order_id: &'s str,
    totals: BTreeMap<Vec<u8>, Touched>,
    shipments: BTreeMap<Vec<u8>, (bool, KeyShipment)>,
}

impl<S: StateStore + ?Sized> Batch<'_, S> {
    fn total(
        &mut self,
        s: &Shipped<'_>,
        kind: Kind,
    ) -> Result<(Vec<u8>, &mut KeyTotal), StoreError> {
        let bytes = s.key_bytes(kind);
        if !self.totals.contains_key(&bytes) {
            let key = total_key(self.order_id, &bytes);
            let before: Option<KeyTotal> = match self.store.get(&key)? {
                Some(v) => Some(decode(&key, &v)?),
                None => None,
            };
            let now = before
                .clone()
                .unwrap_or_else(|| KeyTotal::empty(s.rollup_key(kind)));
            self.totals.insert(bytes.clone(), Touched { before, now });
        }
        let t = self.totals.get_mut(&bytes).expect("inserted above");
        Ok((bytes, &mut t.now))
    }

    fn shipment(&mut self, key: &[u8], s: &Shipped<'_>) -> Result<&mut KeyShipment, StoreError> {
        let k = shipment_key(self.order_id, key, s);
        if !self.shipments.contains_key(&k) {
            let loaded = match self.store.get(&k)? {
                Some(v) => (true, decode(&k, &v)?),
                None => (
                    false,
                    KeyShipment {
                        items: 0,
                        cost: Decimal::ZERO,
                    },
                ),
            };
            self.shipments.insert(k.clone(), loaded);
        }
        Ok(&mut self.shipments.get_mut(&k).expect("inserted above").1)
    }

    fn remove(&mut self, s: &Shipped<'_>) -> Result<(), StoreError> {
        for kind in Kind::ALL {
            let (bytes, total) = self.total(s, kind)?;
            total.items -= 1;
            total.units -= s.units;
            if kind.counts_shipments() {
                let entry = self.shipment(&bytes, s)?;
                entry.items -= 1;
                let gone = (entry.items == 0).then_some(entry.cost);
                if let Some(cost) = gone {
                    let total = &mut self.totals.get_mut(&bytes).expect("touched").now;
                    total.shipments -= 1;
                    total.cost -= cost;
                }
            }
        }
        Ok(())
    }

    fn add(&mut self, s: &Shipped<'_>) -> Result<(), StoreError> {
        for kind in Kind::ALL {
            let (bytes, total) = self.total(s, kind)?;
            total.items += 1;
            total.units += s.units;
            if kind.counts_shipments() {
                let entry = self.shipment(&bytes, s)?;
                entry.items += 1;
                let first = entry.items == 1;
                if first {
                    entry.cost = s.cost;
                    let total = &mut self.totals.get_mut(&bytes).expect("touched").now;
                    total.shipments += 1;
                    total.cost += s.cost;
                }
            }
        }
        Ok(())
    }

    /// Every warehouse key the order is in: their `order_value` follows the
    /// order's value.
    fn touch_warehouse_keys(&mut self) -> Result<(), StoreError> {
        let mut p = prefix(KEY_TOTAL, self.order_id);
        p.push(Kind::Warehouse.tag());
        for (k, v) in self.store.scan_prefix(&p)? {
            let bytes = k[p.len() - 1..].to_vec();
            if let std::collections::btree_map::Entry::Vacant(slot) = self.totals.entry(bytes) {
                let before: KeyTotal = decode(&k, &v)?;
                slot.insert(Touched {
                    now: before.clone(),
                    before: Some(before),
                });
            }
        }
        Ok(())
    }

    /// Writes the counts back and returns the non-zero deltas, in key order.
    fn finish(
        self,
        value_before: Decimal,
        value_after: Decimal,
    ) -> Result<Vec<RollupDelta>, StoreError> {
        let Batch {
            store,
            order_id,
            totals,
            shipments,
        } = self;
        let mut out = Vec::new();
        for (bytes, t) in totals {
            let mut delta = t.now.measures(value_after);
            if let Some(before) = &t.before {
                delta.sub(&before.measures(value_before));
            }
            let key = total_key(order_id, &bytes);
            // Normalised, so the stored bytes do not depend on the order of
            // the additions that led to them.
            let mut now = t.now;
            now.cost = now.cost.normalize();
            let t = Touched {
                before: t.before,
                now,
            };
            if t.now.items == 0 {
                if t.before.is_some() {
                    store.delete(&key)?;
                }
            } else if t.before.as_ref() != Some(&t.now) {
                store.put(&key, &encode(&t.now)?)?;
            }
            if !delta.is_zero() {
                out.push(RollupDelta {
                    key: t.now.key,
                    measures: delta,
                });
            }
        }
        for (key, (existed, entry)) in shipments {
            if entry.items == 0 {
                if existed {
                    store.delete(&key)?;
                }
            } else {
                let entry = KeyShipment {
                    items: entry.items,
                    cost: entry.cost.normalize(),
                };
                store.put(&key, &encode(&entry)?)?;
            }
        }
        Ok(out)
    }
}

/// Takes `removed` out of the order's contribution and puts `added` in (the
/// same item may be in both, with other values), with the order's value
/// going from `value_before` to `value_after`; returns the rollup deltas.
pub(super) fn update<S: StateStore + ?Sized>(
    store: &mut S,
    order_id: &str,
    value_before: Decimal,
    value_after: Decimal,
    removed: &[Shipped<'_>],
    added: &[Shipped<'_>],
) -> Result<Vec<RollupDelta>, StoreError> {
    if removed == added && value_before == value_after {
        return Ok(Vec::new());
    }
    let mut batch = Batch {
        store,
        order_id,
        totals: BTreeMap::new(),
        shipments: BTreeMap::new(),
    };
    // Removals first: a shipment whose cost changes leaves every key it is
    // in (its items are all in `removed`) before it comes back with the new cost.
    for s in removed {
        batch.remove(s)?;
    }
    for s in added {
        batch.add(s)?;
    }
    if value_before != value_after {
        batch.touch_warehouse_keys()?;
    }
    batch.finish(value_before, value_after)
}

/// The counts the order's shipped items give when built from nothing, as
/// the entries they are stored under: for checking the kept ones.
pub(super) fn recompute(
    order_id: &str,
    shipped: &[Shipped<'_>],
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
    let mut mem = crate::store::MemStore::new();
    update(
        &mut mem,
        order_id,
        Decimal::ZERO,
        Decimal::ZERO,
        &[],
        shipped,
    )?;
    Ok(mem.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
}
