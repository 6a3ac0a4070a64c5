//! The documents the pipeline outputs: one detail document per order item
//! (the outbound report) and one document per rollup key. They serialise to
//! the JSON that is indexed: money as decimal strings beside its currency,
//! instants as RFC 3339 (UTC, microseconds), days as `YYYY-MM-DD`.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::config::{PipelineConfig, WarehouseRule};
use rust_decimal::Decimal;

use crate::model::{rfc3339_opt, Order, OrderItem, Shipment, Sourced, Timestamp};
use crate::rollup::{Measures, RollupKey};
use crate::values::{decimal_str_opt, Money, Parsed};

/// Whether an item has left the warehouse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// A shipment is linked to the item.
    Shipped,
    /// No shipment yet.
    Pending,
}

/// A value the pipeline could not use, reported on the document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataQuality {
    /// e.g. `order.order_value`.
    pub field: String,
    /// The raw value, when there was one.
    pub raw: Option<String>,
    /// `unparseable` or `missing`.
    pub problem: String,
}

/// The item's own fields (`wms_demo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemFields {
    pub id: String,
    /// The database the item row lives in.
    pub db: String,
    pub item_type: Option<String>,
    pub item_qty: Option<u64>,
    pub shipment_id: Option<String>,
    pub courier: Option<String>,
    pub warehouse_id: Option<String>,
    #[serde(with = "rfc3339_opt")]
    pub created_at: Option<Timestamp>,
    #[serde(with = "rfc3339_opt")]
    pub updated_at: Option<Timestamp>,
}

/// The order's fields (`order_demo`), when the order row exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFields {
    pub id: String,
    #[serde(with = "decimal_str_opt")]
    pub order_value: Option<Decimal>,
    pub currency: Option<String>,
    pub order_description: Option<String>,
    pub order_address: Option<String>,
    #[serde(with = "rfc3339_opt")]
    pub created_at: Option<Timestamp>,
    #[serde(with = "rfc3339_opt")]
    pub updated_at: Option<Timestamp>,
}

/// The linked shipment's fields (`logistics_demo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentFields {
    pub id: String,
    pub wmsrecord_id: Option<String>,
    #[serde(with = "decimal_str_opt")]
    pub shipment_cost: Option<Decimal>,
    pub currency: Option<String>,
    pub courier: Option<String>,
    #[serde(with = "rfc3339_opt")]
    pub created_at: Option<Timestamp>,
    #[serde(with = "rfc3339_opt")]
    pub updated_at: Option<Timestamp>,
}

/// `source.ts_ms` of the last change of each row behind the document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceTimes {
    pub item_ts_ms: i64,
    pub order_ts_ms: Option<i64>,
    pub shipment_ts_ms: Option<i64>,
}

/// The detail document of one order item. `_id`: [`PipelineConfig::item_doc_id`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItemDoc {
    pub order_id: Option<String>,
    pub status: ItemStatus,
    /// The shipment's `created_at` date in the business time zone.
    pub ship_day: Option<NaiveDate>,
    pub warehouse: String,
    pub courier: Option<String>,
    pub item: ItemFields,
    pub order: Option<OrderFields>,
    pub shipment: Option<ShipmentFields>,
    pub data_quality: Vec<DataQuality>,
    pub source: SourceTimes,
}

/// The item's warehouse under the configured rule.
pub fn warehouse<'a>(config: &PipelineConfig, item: &'a Sourced<OrderItem>) -> &'a str {
    match (config.warehouse_rule, &item.row.warehouse_id) {
        (WarehouseRule::ColumnElseSourceDb, Some(wh)) => wh,
        _ => &item.db,
    }
}

/// The shipment's courier when linked and non-blank, else the item's.
pub fn courier<'a>(item: &'a OrderItem, shipment: Option<&'a Shipment>) -> Option<&'a str> {
    shipment
        .and_then(|s| s.courier.as_deref())
        .filter(|c| !c.trim().is_empty())
        .or(item.courier.as_deref())
}

/// The date of the shipment's `created_at` in the business time zone.
pub fn ship_day(config: &PipelineConfig, shipment: &Shipment) -> Option<NaiveDate> {
    let at = shipment.created_at?.to_datetime()?;
    Some(at.with_timezone(&config.business_tz).date_naive())
}

fn amount(m: &Parsed<Money>) -> (Option<Decimal>, Option<String>) {
    match m.valid() {
        Some(m) => (Some(m.amount), m.currency.clone()),
        None => (None, None),
    }
}

fn unparseable<T>(out: &mut Vec<DataQuality>, field: &str, value: &Parsed<T>) {
    if let Some(raw) = value.invalid_raw() {
        out.push(DataQuality {
            field: field.to_owned(),
            raw: Some(raw.to_owned()),
            problem: "unparseable".to_owned(),
        });
    }
}

/// Builds an item's document from its row and the order and shipment the
/// join chose for it.
pub fn item_doc(
    config: &PipelineConfig,
    item: &Sourced<OrderItem>,
    order: Option<&Sourced<Order>>,
    shipment: Option<&Sourced<Shipment>>,
) -> OrderItemDoc {
    let i = &item.row;
    let mut data_quality = Vec::new();
    unparseable(&mut data_quality, "item.item_qty", &i.item_qty);
    let order_fields = order.map(|o| {
        let o = &o.row;
        unparseable(&mut data_quality, "order.order_value", &o.order_value);
        let (order_value, currency) = amount(&o.order_value);
        OrderFields {
            id: o.id.clone(),
            order_value,
            currency,
            order_description: o.order_description.clone(),
            order_address: o.order_address.clone(),
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    });
    let shipment_fields = shipment.map(|s| {
        let s = &s.row;
        unparseable(
            &mut data_quality,
            "shipment.shipment_cost",
            &s.shipment_cost,
        );
        if s.created_at.is_none() {
            data_quality.push(DataQuality {
                field: "shipment.created_at".to_owned(),
                raw: None,
                problem: "missing".to_owned(),
            });
        }
        let (shipment_cost, currency) = amount(&s.shipment_cost);
        ShipmentFields {
            id: s.id.clone(),
            wmsrecord_id: s.wmsrecord_id.clone(),
            shipment_cost,
            currency,
            courier: s.courier.clone(),
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    });
    OrderItemDoc {
        order_id: i.order_id.clone(),
        status: if shipment.is_some() {
            ItemStatus::Shipped
        } else {
            ItemStatus::Pending
        },
        ship_day: shipment.and_then(|s| ship_day(config, &s.row)),
        warehouse: warehouse(config, item).to_owned(),
        courier: courier(i, shipment.map(|s| &s.row)).map(str::to_owned),
        item: ItemFields {
            id: i.id.clone(),
            db: item.db.clone(),
            item_type: i.item_type.clone(),
            item_qty: i.item_qty.valid().copied(),
            shipment_id: i.shipment_id.clone(),
            courier: i.courier.clone(),
            warehouse_id: i.warehouse_id.clone(),
            created_at: i.created_at,
            updated_at: i.updated_at,
        },
        order: order_fields,
        shipment: shipment_fields,
        data_quality,
        source: SourceTimes {
            item_ts_ms: item.ts_ms,
            order_ts_ms: order.map(|o| o.ts_ms),
            shipment_ts_ms: shipment.map(|s| s.ts_ms),
        },
    }
}

/// `units_daily`: shipped units and items per day, warehouse and item type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitsDailyDoc {
    pub day: NaiveDate,
    pub warehouse: String,
    pub item_type: Option<String>,
    pub units: i64,
    pub items: i64,
}

/// `courier_daily`: orders and shipments handed to each courier per day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CourierDailyDoc {
    pub day: NaiveDate,
    pub courier: Option<String>,
    pub orders: i64,
    pub shipments: i64,
    /// Decimal string.
    pub shipping_cost: String,
    pub items: i64,
}

/// `warehouse_daily`: cost, order value and units shipped per day and warehouse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarehouseDailyDoc {
    pub day: NaiveDate,
    pub warehouse: String,
    /// Decimal string.
    pub shipping_cost: String,
    /// Decimal string.
    pub order_value: String,
    pub units: i64,
    pub items: i64,
}

/// A rollup document; serialises as the inner document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RollupDoc {
    UnitsDaily(UnitsDailyDoc),
    CourierDaily(CourierDailyDoc),
    WarehouseDaily(WarehouseDailyDoc),
}

/// The document of a rollup key with these measures.
pub fn rollup_doc(key: &RollupKey, m: &Measures) -> RollupDoc {
    match key {
        RollupKey::UnitsDaily {
            day,
            warehouse,
            item_type,
        } => RollupDoc::UnitsDaily(UnitsDailyDoc {
            day: *day,
            warehouse: warehouse.clone(),
            item_type: item_type.clone(),
            units: m.units,
            items: m.items,
        }),
        RollupKey::CourierDaily { day, courier } => RollupDoc::CourierDaily(CourierDailyDoc {
            day: *day,
            courier: courier.clone(),
            orders: m.orders,
            shipments: m.shipments,
            shipping_cost: m.shipping_cost.normalize().to_string(),
            items: m.items,
        }),
        RollupKey::WarehouseDaily { day, warehouse } => {
            RollupDoc::WarehouseDaily(WarehouseDailyDoc {
                day: *day,
                warehouse: warehouse.clone(),
                shipping_cost: m.shipping_cost.normalize().to_string(),
                order_value: m.order_value.normalize().to_string(),
                units: m.units,
                items: m.items,
            })
        }
    }
}
