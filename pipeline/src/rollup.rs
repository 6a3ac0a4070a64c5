//! The daily rollups: their keys, their measures, and an order's contribution
//! to them. Measures are exact (integers and decimals) and signed, so a change
//! is sent on as a delta (new contribution − old) and counters add up.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Which rollup (the index a rollup document goes to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RollupName {
    UnitsDaily,
    CourierDaily,
    WarehouseDaily,
}

impl RollupName {
    pub const ALL: [RollupName; 3] = [
        RollupName::UnitsDaily,
        RollupName::CourierDaily,
        RollupName::WarehouseDaily,
    ];

    /// `units_daily`, `courier_daily`, `warehouse_daily`.
    pub fn as_str(self) -> &'static str {
        match self {
            RollupName::UnitsDaily => "units_daily",
            RollupName::CourierDaily => "courier_daily",
            RollupName::WarehouseDaily => "warehouse_daily",
        }
    }

    pub(crate) fn tag(self) -> u8 {
        match self {
            RollupName::UnitsDaily => b'u',
            RollupName::CourierDaily => b'c',
            RollupName::WarehouseDaily => b'w',
        }
    }
}

/// One rollup document's key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RollupKey {
    UnitsDaily {
        day: NaiveDate,
        warehouse: String,
        item_type: Option<String>,
    },
    CourierDaily {
        day: NaiveDate,
        courier: Option<String>,
    },
    WarehouseDaily {
        day: NaiveDate,
        warehouse: String,
    },
}

impl RollupKey {
    pub fn name(&self) -> RollupName {
        match self {
            RollupKey::UnitsDaily { .. } => RollupName::UnitsDaily,
            RollupKey::CourierDaily { .. } => RollupName::CourierDaily,
            RollupKey::WarehouseDaily { .. } => RollupName::WarehouseDaily,
        }
    }

    pub fn day(&self) -> NaiveDate {
        match self {
            RollupKey::UnitsDaily { day, .. }
            | RollupKey::CourierDaily { day, .. }
            | RollupKey::WarehouseDaily { day, .. } => *day,
        }
    }

    /// The document `_id` within its rollup's index: the day and the
    /// dimensions joined by `|`, e.g. `2024-05-01|wms|phone`. In dimension
    /// values `%` and `|` are percent-encoded and null is `%00`, so distinct
    /// keys never share an id.
    pub fn doc_id(&self) -> String {
        let mut id = String::with_capacity(32);
        push_day(&mut id, self.day());
        let mut push = |part: Option<&str>| {
            id.push('|');
            match part {
                None => id.push_str("%00"),
                Some(p) => {
                    for c in p.chars() {
                        match c {
                            '%' => id.push_str("%25"),
                            '|' => id.push_str("%7C"),
                            c => id.push(c),
                        }
                    }
                }
            }
        };
        match self {
            RollupKey::UnitsDaily {
                warehouse,
                item_type,
                ..
            } => {
                push(Some(warehouse));
                push(item_type.as_deref());
            }
            RollupKey::CourierDaily { courier, .. } => push(courier.as_deref()),
            RollupKey::WarehouseDaily { warehouse, .. } => push(Some(warehouse)),
        }
        id
    }

    /// `name/doc_id`, unique across rollups (for logs and partitioning).
    pub fn qualified_id(&self) -> String {
        let mut s = String::from(self.name().as_str());
        let _ = write!(s, "/{}", self.doc_id());
        s
    }
}

/// Appends `day` as `%Y-%m-%d` (without going through chrono's formatter
/// for the usual four-digit years).
pub(crate) fn push_day(out: &mut String, day: NaiveDate) {
    use chrono::Datelike;
    let (y, m, d) = (day.year(), day.month(), day.day());
    if (0..=9999).contains(&y) {
        let digits = [
            b'0' + (y / 1000) as u8,
            b'0' + (y / 100 % 10) as u8,
            b'0' + (y / 10 % 10) as u8,
            b'0' + (y % 10) as u8,
            b'-',
            b'0' + (m / 10) as u8,
            b'0' + (m % 10) as u8,
            b'-',
            b'0' + (d / 10) as u8,
            b'0' + (d % 10) as u8,
        ];
        out.push_str(std::str::from_utf8(&digits).expect("ASCII digits"));
    } else {
        let _ = write!(out, "{}", day.format("%Y-%m-%d"));
    }
}

/// The measures of a rollup key. One shape for all rollups; each rollup uses
/// its own subset (the others stay zero):
/// - `units_daily`: `units`, `items`;
/// - `courier_daily`: `orders`, `shipments`, `shipping_cost`, `items`;
/// - `warehouse_daily`: `shipping_cost`, `order_value`, `units`, `items`.
///
/// `items` (shipped items in the key) is in every rollup so that a key lives
/// exactly as long as it has shipped items, even when its sums are zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measures {
    pub items: i64,
    pub units: i64,
    pub orders: i64,
    pub shipments: i64,
    #[serde(with = "crate::values::decimal_compact")]
    pub shipping_cost: Decimal,
    #[serde(with = "crate::values::decimal_compact")]
    pub order_value: Decimal,
}

impl Measures {
    pub fn is_zero(&self) -> bool {
        self.items == 0
            && self.units == 0
            && self.orders == 0
            && self.shipments == 0
            && self.shipping_cost.is_zero()
            && self.order_value.is_zero()
    }

    pub fn add(&mut self, other: &Measures) {
        self.items += other.items;
        self.units += other.units;
        self.orders += other.orders;
        self.shipments += other.shipments;
        self.shipping_cost = (self.shipping_cost + other.shipping_cost).normalize();
        self.order_value = (self.order_value + other.order_value).normalize();
    }

    pub fn sub(&mut self, other: &Measures) {
        self.items -= other.items;
        self.units -= other.units;
        self.orders -= other.orders;
        self.shipments -= other.shipments;
        self.shipping_cost = (self.shipping_cost - other.shipping_cost).normalize();
        self.order_value = (self.order_value - other.order_value).normalize();
    }
}

/// A signed change to one rollup key. Travels on the internal deltas topic,
/// partitioned by the key's [`RollupKey::qualified_id`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollupDelta {
    pub key: RollupKey,
    pub measures: Measures,
}

/// A shipped item with a ship day, as the rollups see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShippedItem<'a> {
    pub day: NaiveDate,
    pub warehouse: &'a str,
    pub item_type: Option<&'a str>,
    pub courier: Option<&'a str>,
    /// The item's quantity; null counts as zero.
    pub units: i64,
    pub shipment_id: &'a str,
    /// The shipment's cost; null counts as zero.
    pub shipping_cost: Decimal,
}

/// One order's contribution to every rollup key its shipped items touch.
/// All items belong to the same order (`order_value`: its value, zero when
/// null or when the order row is missing). Distinct orders and shipments are
/// counted within each key.
pub fn order_contribution<'a>(
    order_value: Decimal,
    items: impl IntoIterator<Item = ShippedItem<'a>>,
) -> BTreeMap<RollupKey, Measures> {
    let mut out: BTreeMap<RollupKey, Measures> = BTreeMap::new();
    let mut shipments_in: BTreeMap<RollupKey, BTreeSet<&'a str>> = BTreeMap::new();
    for it in items {
        let units = out
            .entry(RollupKey::UnitsDaily {
                day: it.day,
                warehouse: it.warehouse.to_owned(),
                item_type: it.item_type.map(str::to_owned),
            })
            .or_default();
        units.units += it.units;
        units.items += 1;

        let courier_key = RollupKey::CourierDaily {
            day: it.day,
            courier: it.courier.map(str::to_owned),
        };
        let courier = out.entry(courier_key.clone()).or_default();
        courier.items += 1;
        courier.orders = 1;
        if shipments_in
            .entry(courier_key)
            .or_default()
            .insert(it.shipment_id)
        {
            courier.shipments += 1;
            courier.shipping_cost += it.shipping_cost;
        }

        let wh_key = RollupKey::WarehouseDaily {
            day: it.day,
            warehouse: it.warehouse.to_owned(),
        };
        let wh = out.entry(wh_key.clone()).or_default();
        wh.items += 1;
        wh.units += it.units;
        wh.order_value = order_value;
        if shipments_in
            .entry(wh_key)
            .or_default()
            .insert(it.shipment_id)
        {
            wh.shipping_cost += it.shipping_cost;
        }
    }
    for m in out.values_mut() {
        m.shipping_cost = m.shipping_cost.normalize();
        m.order_value = m.order_value.normalize();
    }
    out
}

/// The deltas that turn contribution `before` into `after` (only non-zero ones).
pub fn deltas(
    before: &BTreeMap<RollupKey, Measures>,
    after: &BTreeMap<RollupKey, Measures>,
) -> Vec<RollupDelta> {
    let mut out = Vec::new();
    let keys: BTreeSet<&RollupKey> = before.keys().chain(after.keys()).collect();
    for key in keys {
        let mut m = after.get(key).cloned().unwrap_or_default();
        if let Some(b) = before.get(key) {
            m.sub(b);
        }
        if !m.is_zero() {
            out.push(RollupDelta {
                key: key.clone(),
                measures: m,
            });
        }
    }
    out
}

/// A rollup key borrowing its dimensions; orders as [`RollupKey`] does.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum KeyRef<'a> {
    UnitsDaily {
        day: NaiveDate,
        warehouse: &'a str,
        item_type: Option<&'a str>,
    },
    CourierDaily {
        day: NaiveDate,
        courier: Option<&'a str>,
    },
    WarehouseDaily {
        day: NaiveDate,
        warehouse: &'a str,
    },
}

impl KeyRef<'_> {
    fn to_owned_key(self) -> RollupKey {
        match self {
            KeyRef::UnitsDaily {
                day,
                warehouse,
                item_type,
            } => RollupKey::UnitsDaily {
                day,
                warehouse: warehouse.to_owned(),
                item_type: item_type.map(str::to_owned),
            },
            KeyRef::CourierDaily { day, courier } => RollupKey::CourierDaily {
                day,
                courier: courier.map(str::to_owned),
            },
            KeyRef::WarehouseDaily { day, warehouse } => RollupKey::WarehouseDaily {
                day,
                warehouse: warehouse.to_owned(),
            },
        }
    }
}

/// [`order_contribution`] with borrowed keys, in key order.
fn contribution_ref<'a>(
    order_value: Decimal,
    items: &[ShippedItem<'a>],
) -> Vec<(KeyRef<'a>, Measures)> {
    // One entry per (key, item), in item order; a stable sort by key and
    // shipment keeps each shipment's first item first, as the map form does.
    let mut parts: Vec<(KeyRef<'a>, &'a str, usize)> = Vec::with_capacity(items.len() * 3);
    for (i, it) in items.iter().enumerate() {
        parts.push((
            KeyRef::UnitsDaily {
                day: it.day,
                warehouse: it.warehouse,
                item_type: it.item_type,
            },
            it.shipment_id,
            i,
        ));
        parts.push((
            KeyRef::CourierDaily {
                day: it.day,
                courier: it.courier,
            },
            it.shipment_id,
            i,
        ));
        parts.push((
            KeyRef::WarehouseDaily {
                day: it.day,
                warehouse: it.warehouse,
            },
            it.shipment_id,
            i,
        ));
    }
    parts.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut out: Vec<(KeyRef<'a>, Measures)> = Vec::new();
    let mut last: Option<(KeyRef<'a>, &'a str)> = None;
    for (key, shipment, i) in parts {
        let it = &items[i];
        if out.last().is_none_or(|(k, _)| *k != key) {
            out.push((key, Measures::default()));
        }
        let new_shipment = last != Some((key, shipment));
        last = Some((key, shipment));
        let m = &mut out.last_mut().expect("pushed").1;
        m.items += 1;
        match key {
            KeyRef::UnitsDaily { .. } => m.units += it.units,
            KeyRef::CourierDaily { .. } => {
                m.orders = 1;
                if new_shipment {
                    m.shipments += 1;
                    m.shipping_cost += it.shipping_cost;
                }
            }
            KeyRef::WarehouseDaily { .. } => {
                m.units += it.units;
                m.order_value = order_value;
                if new_shipment {
                    m.shipping_cost += it.shipping_cost;
                }
            }
        }
    }
    for (_, m) in &mut out {
        m.shipping_cost = m.shipping_cost.normalize();
        m.order_value = m.order_value.normalize();
    }
    out
}

/// `deltas(&order_contribution(before…), &order_contribution(after…))`,
/// without building owned keys for the keys that do not change.
pub fn contribution_deltas(
    value_before: Decimal,
    before: &[ShippedItem<'_>],
    value_after: Decimal,
    after: &[ShippedItem<'_>],
) -> Vec<RollupDelta> {
    let old = contribution_ref(value_before, before);
    let new = contribution_ref(value_after, after);
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.0.cmp(&b.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let (key, m) = match order {
            std::cmp::Ordering::Less => {
                let mut m = Measures::default();
                m.sub(&old[i].1);
                i += 1;
                (old[i - 1].0, m)
            }
            std::cmp::Ordering::Greater => {
                j += 1;
                (new[j - 1].0, new[j - 1].1.clone())
            }
            std::cmp::Ordering::Equal => {
                let mut m = new[j].1.clone();
                m.sub(&old[i].1);
                i += 1;
                j += 1;
                (new[j - 1].0, m)
            }
        };
        if !m.is_zero() {
            out.push(RollupDelta {
                key: key.to_owned_key(),
                measures: m,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 5, 1).unwrap()
    }

    #[test]
    fn doc_ids_are_stable_and_unambiguous() {
        let k = RollupKey::UnitsDaily {
            day: day(),
            warehouse: "wh1".into(),
            item_type: Some("phone".into()),
        };
        assert_eq!(k.doc_id(), "2024-05-01|wh1|phone");
        assert_eq!(k.qualified_id(), "units_daily/2024-05-01|wh1|phone");
        let null = RollupKey::CourierDaily {
            day: day(),
            courier: None,
        };
        assert_eq!(null.doc_id(), "2024-05-01|%00");
        let odd = RollupKey::CourierDaily {
            day: day(),
            courier: Some("a|b%".into()),
        };
        assert_eq!(odd.doc_id(), "2024-05-01|a%7Cb%25");
        for (y, m, d) in [
            (1, 1, 1),
            (999, 12, 31),
            (9999, 2, 3),
            (10000, 1, 1),
            (-5, 6, 7),
        ] {
            let day = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            let mut s = String::new();
            push_day(&mut s, day);
            assert_eq!(s, day.format("%Y-%m-%d").to_string());
        }
    }

    #[test]
    fn distinct_shipments_count_once_per_key() {
        let item = |wh, ship, units| ShippedItem {
            day: day(),
            warehouse: wh,
            item_type: Some("phone"),
            courier: Some("dhl"),
            units,
            shipment_id: ship,
            shipping_cost: Decimal::new(100, 0),
        };
        let c = order_contribution(
            Decimal::new(500, 0),
            [
                item("w1", "s1", 2),
                item("w1", "s1", 3),
                item("w2", "s1", 1),
                item("w2", "s2", 1),
            ],
        );
        let courier = &c[&RollupKey::CourierDaily {
            day: day(),
            courier: Some("dhl".into()),
        }];
        assert_eq!(
            (courier.orders, courier.shipments, courier.items),
            (1, 2, 4)
        );
        assert_eq!(courier.shipping_cost, Decimal::new(200, 0));
        let w1 = &c[&RollupKey::WarehouseDaily {
            day: day(),
            warehouse: "w1".into(),
        }];
        assert_eq!(
            (w1.units, w1.shipping_cost, w1.order_value),
            (5, Decimal::new(100, 0), Decimal::new(500, 0))
        );
        let w2 = &c[&RollupKey::WarehouseDaily {
            day: day(),
            warehouse: "w2".into(),
        }];
        assert_eq!((w2.units, w2.shipping_cost), (2, Decimal::new(200, 0)));
    }

    #[test]
    fn contribution_deltas_equal_the_map_form() {
        let d2 = NaiveDate::from_ymd_opt(2024, 5, 2).unwrap();
        let item = |day, wh, kind, courier, ship, units, cost| ShippedItem {
            day,
            warehouse: wh,
            item_type: kind,
            courier,
            units,
            shipment_id: ship,
            shipping_cost: Decimal::new(cost, 1),
        };
        let sets = [
            vec![],
            vec![
                item(day(), "w1", Some("phone"), Some("dhl"), "s1", 2, 100),
                item(day(), "w1", Some("phone"), Some("dhl"), "s1", 3, 100),
                item(day(), "w2", None, Some("dhl"), "s1", 1, 100),
                item(d2, "w2", Some("case"), None, "s2", 1, 55),
            ],
            vec![
                item(day(), "w1", Some("phone"), Some("dhl"), "s1", 2, 100),
                item(day(), "w1", Some("phone"), Some("fedex"), "s3", 0, 70),
                item(day(), "w1", Some("phone"), Some("dhl"), "s2", 3, 0),
            ],
            vec![item(d2, "w2", Some("case"), None, "s2", 1, 55)],
        ];
        for (vb, a) in [(0, 1), (5, 7)].into_iter().zip(0..sets.len()) {
            for b in 0..sets.len() {
                let (x, y) = (Decimal::new(vb.0, 0), Decimal::new(vb.1, 0));
                let want = deltas(
                    &order_contribution(x, sets[a].clone()),
                    &order_contribution(y, sets[b].clone()),
                );
                assert_eq!(contribution_deltas(x, &sets[a], y, &sets[b]), want);
            }
        }
    }

    #[test]
    fn deltas_are_after_minus_before_and_skip_zero() {
        let k = |wh: &str| RollupKey::WarehouseDaily {
            day: day(),
            warehouse: wh.into(),
        };
        let m = |units| Measures {
            items: 1,
            units,
            ..Measures::default()
        };
        let before = BTreeMap::from([(k("a"), m(2)), (k("b"), m(1))]);
        let after = BTreeMap::from([(k("a"), m(5)), (k("b"), m(1)), (k("c"), m(1))]);
        let d = deltas(&before, &after);
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].key.clone(), d[0].measures.units, d[0].measures.items),
            (k("a"), 3, 0)
        );
        assert_eq!(d[1].key, k("c"));
        let gone = deltas(&before, &BTreeMap::new());
        assert_eq!(gone[0].measures.units, -2);
    }
}
