//! The expected documents, from the rows of `sql/reconcile/`. The SQL makes
//! every join and rule decision; this file only reads the loosely typed
//! values with the pipeline's value parsers (the one piece of the pipeline
//! reconcile shares), shapes the documents as the indices hold them, and
//! sums the rollups' measure parts.

use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use crate::pipeline::values::{parse_money, parse_qty};

use super::queries::Rollup;

/// One row of `details.sql`, by column name.
pub struct DetailRow {
    pub item_row_id: i64,
    pub cols: Vec<(&'static str, Option<String>)>,
}

/// The columns of `details.sql` after `item_row_id`, in order.
pub const DETAIL_COLUMNS: [&str; 26] = [
    "item_id",
    "item_db",
    "order_id",
    "status",
    "ship_day",
    "warehouse",
    "courier",
    "item_type",
    "item_qty_raw",
    "item_shipment_id",
    "item_courier",
    "item_warehouse_id",
    "item_created_at",
    "item_updated_at",
    "order_row_id",
    "order_value_raw",
    "order_description",
    "order_address",
    "order_created_at",
    "order_updated_at",
    "shipment_row_id",
    "shipment_wmsrecord_id",
    "shipment_cost_raw",
    "shipment_courier",
    "shipment_created_at",
    "shipment_updated_at",
];

impl DetailRow {
    fn get(&self, name: &str) -> Option<&str> {
        self.cols
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn text(&self, name: &str) -> Value {
        self.get(name)
            .map_or(Value::Null, |s| Value::String(s.to_owned()))
    }
}

/// The `_id` of an item's detail document: its id, prefixed with `<db>:`
/// when it lives in another warehouse database than the main items table's.
pub fn detail_doc_id(main_db: &str, db: &str, id: &str) -> String {
    if db == main_db {
        id.to_owned()
    } else {
        format!("{db}:{id}")
    }
}

fn money(raw: Option<&str>, field: &str, dq: &mut Vec<Value>) -> (Value, Value) {
    match raw {
        None => (Value::Null, Value::Null),
        Some(raw) => match parse_money(raw) {
            Some(m) => (
                Value::String(m.amount.normalize().to_string()),
                m.currency.map_or(Value::Null, Value::String),
            ),
            None => {
                dq.push(json!({"field": field, "raw": raw, "problem": "unparseable"}));
                (Value::Null, Value::Null)
            }
        },
    }
}

/// The detail document of one row, without the `source` lineage block (the
/// binlog times of the rows' last changes are not in the tables).
pub fn detail_doc(row: &DetailRow) -> Value {
    let mut dq = Vec::new();
    let qty = match row.get("item_qty_raw") {
        None => Value::Null,
        Some(raw) => match parse_qty(raw) {
            Some(q) => Value::from(q),
            None => {
                dq.push(json!({"field": "item.item_qty", "raw": raw, "problem": "unparseable"}));
                Value::Null
            }
        },
    };
    let item = json!({
        "id": row.text("item_id"),
        "db": row.text("item_db"),
        "item_type": row.text("item_type"),
        "item_qty": qty,
        "shipment_id": row.text("item_shipment_id"),
        "courier": row.text("item_courier"),
        "warehouse_id": row.text("item_warehouse_id"),
        "created_at": row.text("item_created_at"),
        "updated_at": row.text("item_updated_at"),
    });
    let order = match row.get("order_row_id") {
        None => Value::Null,
        Some(id) => {
            let (value, currency) = money(row.get("order_value_raw"), "order.order_value", &mut dq);
            json!({
                "id": id,
                "order_value": value,
                "currency": currency,
                "order_description": row.text("order_description"),
                "order_address": row.text("order_address"),
                "created_at": row.text("order_created_at"),
                "updated_at": row.text("order_updated_at"),
            })
        }
    };
    let shipment = match row.get("shipment_row_id") {
        None => Value::Null,
        Some(id) => {
            let (cost, currency) = money(
                row.get("shipment_cost_raw"),
                "shipment.shipment_cost",
                &mut dq,
            );
            if row.get("shipment_created_at").is_none() {
                dq.push(json!({"field": "shipment.created_at", "raw": null, "problem": "missing"}));
            }
            json!({
                "id": id,
                "wmsrecord_id": row.text("shipment_wmsrecord_id"),
                "shipment_cost": cost,
                "currency": currency,
                "courier": row.text("shipment_courier"),
                "created_at": row.text("shipment_created_at"),
                "updated_at": row.text("shipment_updated_at"),
            })
        }
    };
    json!({
        "order_id": row.text("order_id"),
        "status": row.text("status"),
        "ship_day": row.text("ship_day"),
        "warehouse": row.text("warehouse"),
        "courier": row.text("courier"),
        "item": item,
        "order": order,
        "shipment": shipment,
        "data_quality": dq,
    })
}

/// One row of a rollup query: a key and one measure part of it.
#[derive(Debug, Clone)]
pub struct RollupRow {
    pub day: String,
    pub dim1: Option<String>,
    pub dim2: Option<String>,
    pub part: String,
    pub raw: Option<String>,
    pub n: i64,
}

/// The `_id` of a rollup document: the day and the dimensions joined by `|`,
/// `%` and `|` percent-encoded in dimension values, null as `%00`.
pub fn rollup_doc_id(day: &str, dims: &[Option<&str>]) -> String {
    let mut id = day.to_owned();
    for d in dims {
        id.push('|');
        match d {
            None => id.push_str("%00"),
            Some(v) => id.push_str(&v.replace('%', "%25").replace('|', "%7C")),
        }
    }
    id
}

/// Sums the measure parts of one rollup key (consecutive rows of the
/// query) into its document.
#[derive(Debug)]
pub struct RollupAccumulator {
    rollup: Rollup,
    key: Option<(String, Option<String>, Option<String>)>,
    items: i64,
    units: i64,
    orders: i64,
    shipments: i64,
    shipping_cost: Decimal,
    order_value: Decimal,
}

impl RollupAccumulator {
    pub fn new(rollup: Rollup) -> Self {
        Self {
            rollup,
            key: None,
            items: 0,
            units: 0,
            orders: 0,
            shipments: 0,
            shipping_cost: Decimal::ZERO,
            order_value: Decimal::ZERO,
        }
    }

    /// Adds a row; returns the finished document of the previous key when
    /// this row starts a new one.
    pub fn push(&mut self, row: RollupRow) -> anyhow::Result<Option<(String, Value)>> {
        let key = (row.day.clone(), row.dim1.clone(), row.dim2.clone());
        let done = match &self.key {
            Some(k) if *k != key => self.finish(),
            _ => None,
        };
        self.key = Some(key);
        let n = row.n;
        let amount = |raw: &Option<String>| -> Decimal {
            raw.as_deref()
                .and_then(parse_money)
                .map_or(Decimal::ZERO, |m| m.amount)
        };
        match row.part.as_str() {
            "items" => self.items += n,
            "orders" => self.orders += n,
            "shipments" => self.shipments += n,
            "units" => {
                let q = row.raw.as_deref().and_then(parse_qty).unwrap_or(0) as i64;
                self.units += q * n;
            }
            "shipping_cost" => self.shipping_cost += amount(&row.raw) * Decimal::from(n),
            "order_value" => self.order_value += amount(&row.raw) * Decimal::from(n),
            other => anyhow::bail!(
                "rollup query {}: unknown measure part {other:?}",
                self.rollup.name()
            ),
        }
        Ok(done)
    }

    /// The document of the key in progress, if any (call at the end).
    pub fn finish(&mut self) -> Option<(String, Value)> {
        let (day, dim1, dim2) = self.key.take()?;
        let doc = match self.rollup {
            Rollup::UnitsDaily => json!({
                "day": day, "warehouse": dim1, "item_type": dim2,
                "units": self.units, "items": self.items,
            }),
            Rollup::CourierDaily => json!({
                "day": day, "courier": dim1, "orders": self.orders, "shipments": self.shipments,
                "shipping_cost": self.shipping_cost.normalize().to_string(), "items": self.items,
            }),
            Rollup::WarehouseDaily => json!({
                "day": day, "warehouse": dim1,
                "shipping_cost": self.shipping_cost.normalize().to_string(),
                "order_value": self.order_value.normalize().to_string(),
                "units": self.units, "items": self.items,
            }),
        };
        let id = match self.rollup {
            Rollup::UnitsDaily => rollup_doc_id(&day, &[dim1.as_deref(), dim2.as_deref()]),
            Rollup::CourierDaily | Rollup::WarehouseDaily => {
                rollup_doc_id(&day, &[dim1.as_deref()])
            }
        };
        *self = Self::new(self.rollup);
        Some((id, doc))
    }
}

/// Drops the fields the batch cannot know (`source`: binlog times).
pub fn comparable(mut doc: Value) -> Value {
    if let Value::Object(m) = &mut doc {
        m.remove("source");
    }
    doc
}

/// An empty object (for documents that failed to parse).
pub fn empty() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_ids_encode_separators_and_nulls() {
        assert_eq!(
            rollup_doc_id("2024-05-01", &[Some("wms"), Some("phone")]),
            "2024-05-01|wms|phone"
        );
        assert_eq!(
            rollup_doc_id("2024-05-01", &[Some("a|b%"), None]),
            "2024-05-01|a%7Cb%25|%00"
        );
    }

    #[test]
    fn measure_parts_sum_into_one_document_per_key() {
        let row = |day: &str, dim: &str, part: &str, raw: Option<&str>, n| RollupRow {
            day: day.into(),
            dim1: Some(dim.into()),
            dim2: None,
            part: part.into(),
            raw: raw.map(str::to_owned),
            n,
        };
        let mut acc = RollupAccumulator::new(Rollup::WarehouseDaily);
        assert!(acc
            .push(row("2024-05-01", "wms", "items", None, 3))
            .unwrap()
            .is_none());
        acc.push(row(
            "2024-05-01",
            "wms",
            "order_value",
            Some("Rs. 1,00,000"),
            2,
        ))
        .unwrap();
        acc.push(row("2024-05-01", "wms", "order_value", Some("junk"), 1))
            .unwrap();
        acc.push(row("2024-05-01", "wms", "shipping_cost", Some("24.5"), 2))
            .unwrap();
        acc.push(row("2024-05-01", "wms", "units", Some("2"), 3))
            .unwrap();
        let (id, doc) = acc
            .push(row("2024-05-02", "wms", "items", None, 1))
            .unwrap()
            .unwrap();
        assert_eq!(id, "2024-05-01|wms");
        assert_eq!(
            doc,
            json!({"day": "2024-05-01", "warehouse": "wms", "shipping_cost": "49",
                   "order_value": "200000", "units": 6, "items": 3})
        );
        let (id, _) = acc.finish().unwrap();
        assert_eq!(id, "2024-05-02|wms");
        assert!(acc.finish().is_none());
    }
}
