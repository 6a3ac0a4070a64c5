//! The rows of the three source tables and the change events that carry them.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::values::{Money, Parsed};

/// Which of the three source tables a row or topic belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SourceTable {
    /// `orders.order_demo`
    Orders,
    /// `wms.wms_demo` (and any other warehouse's item table)
    Items,
    /// `logistics.logistics_demo`
    Shipments,
}

impl SourceTable {
    pub const ALL: [SourceTable; 3] = [
        SourceTable::Orders,
        SourceTable::Items,
        SourceTable::Shipments,
    ];

    /// A one-byte tag used in state keys.
    pub fn tag(self) -> u8 {
        match self {
            SourceTable::Orders => b'o',
            SourceTable::Items => b'i',
            SourceTable::Shipments => b's',
        }
    }

    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            b'o' => Some(SourceTable::Orders),
            b'i' => Some(SourceTable::Items),
            b's' => Some(SourceTable::Shipments),
            _ => None,
        }
    }
}

/// A Debezium operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// A snapshot read (`r`).
    Read,
    Truncate,
}

/// An instant, as microseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Option<Self> {
        ms.checked_mul(1000).map(Timestamp)
    }

    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.0)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 with microseconds, e.g. `2024-05-01T10:00:00.000000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(dt) => f.write_str(&dt.to_rfc3339_opts(SecondsFormat::Micros, true)),
            None => write!(f, "{}us", self.0),
        }
    }
}

/// Serde for `Option<Timestamp>` as RFC 3339 text (documents use it; state
/// and internal topics keep the integer).
pub mod rfc3339_opt {
    use chrono::DateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Timestamp;

    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&t.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                DateTime::parse_from_rfc3339(&text)
                    .map(|dt| Timestamp(dt.timestamp_micros()))
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

/// A row of `order_demo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Order {
    /// Trimmed text of the primary key.
    pub id: String,
    /// Trimmed; `None` when null or empty.
    pub order_id: Option<String>,
    pub order_value: Parsed<Money>,
    pub order_description: Option<String>,
    pub order_address: Option<String>,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

/// A row of `wms_demo`: one order item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OrderItem {
    pub id: String,
    pub order_id: Option<String>,
    pub item_type: Option<String>,
    pub item_qty: Parsed<u64>,
    /// Trimmed; `None` when null or empty.
    pub shipment_id: Option<String>,
    pub courier: Option<String>,
    /// Trimmed; `None` when the column is absent, null or empty.
    pub warehouse_id: Option<String>,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

/// A row of `logistics_demo`: one shipment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Shipment {
    pub id: String,
    pub order_id: Option<String>,
    /// Trimmed; `None` when null or empty.
    pub wmsrecord_id: Option<String>,
    pub shipment_cost: Parsed<Money>,
    pub courier: Option<String>,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

/// A typed row of one of the three tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Row {
    Order(Order),
    Item(OrderItem),
    Shipment(Shipment),
}

impl Row {
    pub fn table(&self) -> SourceTable {
        match self {
            Row::Order(_) => SourceTable::Orders,
            Row::Item(_) => SourceTable::Items,
            Row::Shipment(_) => SourceTable::Shipments,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Row::Order(r) => &r.id,
            Row::Item(r) => &r.id,
            Row::Shipment(r) => &r.id,
        }
    }

    /// The trimmed, non-empty `order_id`, if any.
    pub fn order_id(&self) -> Option<&str> {
        match self {
            Row::Order(r) => r.order_id.as_deref(),
            Row::Item(r) => r.order_id.as_deref(),
            Row::Shipment(r) => r.order_id.as_deref(),
        }
    }
}

/// A row as the join keeps it: with the database it came from and the
/// source timestamp of its last change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sourced<T> {
    pub row: T,
    /// `source.db` of the row's last change.
    pub db: String,
    /// `source.ts_ms` of the row's last change.
    pub ts_ms: i64,
    /// The source record offset of the row's last change (see
    /// [`crate::rekey::rekey`]): orders a row's changes as they were delivered.
    pub version: i64,
}

/// Where a change came from: Debezium's `source` block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SourceMeta {
    /// `source.connector`, e.g. `mysql`.
    pub connector: String,
    /// `source.name`: the connector's logical name (the topic prefix).
    pub name: String,
    pub db: String,
    pub table: String,
    /// When the change was made in the database.
    pub ts_ms: i64,
    /// Binlog file and position, for lineage and dead-letter records.
    pub file: Option<String>,
    pub pos: Option<u64>,
    pub row: Option<i64>,
    /// `source.snapshot` as text (`true`, `last`, ...) when present.
    pub snapshot: Option<String>,
}

/// One decoded Debezium change event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeEvent {
    pub table: SourceTable,
    pub op: Op,
    pub before: Option<Row>,
    pub after: Option<Row>,
    pub source: SourceMeta,
    /// The envelope's `ts_ms`: when Debezium processed the change.
    pub ts_ms: Option<i64>,
}

/// Trims an id-like text; `None` when nothing is left.
pub fn normalize_id(raw: &str) -> Option<String> {
    let t = raw.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// The order in which "the greatest id wins": ids that are canonical integers
/// (no sign other than `-`, no leading zeros) come before every other id and
/// compare numerically; other ids compare as strings. This is a total order,
/// agrees with numeric order for the AUTO_INCREMENT ids of the source tables,
/// and stays well defined if some id is not a number.
pub fn compare_ids(a: &str, b: &str) -> Ordering {
    match (canonical_int(a), canonical_int(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

fn canonical_int(s: &str) -> Option<i128> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
        || s == "-0"
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_numerically_then_as_strings() {
        assert_eq!(compare_ids("9", "10"), Ordering::Less);
        assert_eq!(compare_ids("-1", "0"), Ordering::Less);
        assert_eq!(compare_ids("10", "a"), Ordering::Less);
        assert_eq!(compare_ids("1a", "10"), Ordering::Greater);
        assert_eq!(
            compare_ids("09", "10"),
            Ordering::Greater,
            "09 is not canonical"
        );
        assert_eq!(compare_ids("b", "a"), Ordering::Greater);
        assert_eq!(compare_ids("7", "7"), Ordering::Equal);
        let big = "123456789012345678901234567890";
        assert_eq!(compare_ids(big, "1"), Ordering::Greater);
    }

    #[test]
    fn timestamps_render_as_rfc3339_micros() {
        assert_eq!(
            Timestamp(1_714_557_600_000_000).to_string(),
            "2024-05-01T10:00:00.000000Z"
        );
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn ids_are_trimmed() {
        assert_eq!(normalize_id(" 42 "), Some("42".into()));
        assert_eq!(normalize_id("  "), None);
    }
}
