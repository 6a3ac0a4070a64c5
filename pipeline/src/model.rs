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
    /// Where the row's last change sits in its database's log (see
    /// [`Version`]): orders a row's changes as the database made them.
    pub version: Version,
}

/// The version of a change: its position in the source database's binary
/// log, which orders every change of one MySQL/MariaDB server.
///
/// Why the binlog position and not the change record's Kafka offset (which
/// earlier builds used): an offset restarts when a source topic is deleted
/// and created again, differs between the partitions of one topic (a
/// `TRUNCATE` lands on one partition while the rows inserted after it land on
/// others, by key), and changes meaning when partitions are added. The
/// position Debezium puts in `source` — binlog file, `pos` (the position of
/// the change's event in that file) and `row` (the row within the event) — is
/// the server's own order of its changes: it survives all three, and a new
/// snapshot of the tables (a connector set up again) is read at the current
/// position, so it is newer than everything streamed before it. GTIDs were
/// considered too: they name a transaction, not an event or a row within it,
/// so they need the position anyway.
///
/// Within one position, snapshot reads (`source.snapshot` set and not
/// `false`) come before streamed changes: a snapshot is taken at the position
/// from which streaming then starts. A source without a binlog position (not
/// a MySQL/MariaDB connector) falls back to the record's Kafka offset, which
/// orders the changes of one partition as delivered.
///
/// Versions are compared only between changes of one row (the details stage
/// keeps the newest change per item), and one row's changes all come from
/// one server. The limit: a server whose binlog numbering starts again
/// (`RESET MASTER`, or a new primary with its own binlog) makes new changes
/// look older; reset the app (topics and state) after such a switch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    /// The binlog file's sequence number (`mysql-bin.000042` → 42); 0 for a
    /// version taken from a Kafka offset.
    pub file: u64,
    /// The event's position in the binlog file, or the Kafka offset.
    pub pos: u64,
    /// 0 for a snapshot read, 1 for a streamed change.
    pub phase: u8,
    /// The row within the binlog event.
    pub row: u32,
}

impl Version {
    /// The version of a change record without a binlog position: its offset.
    pub fn from_offset(offset: i64) -> Self {
        Version {
            file: 0,
            pos: offset.max(0) as u64,
            phase: 1,
            row: 0,
        }
    }

    /// The version of a change from its `source` block, or from its record's
    /// Kafka `offset` when the block has no binlog position.
    pub fn of_change(source: &SourceMeta, offset: i64) -> Self {
        let (Some(file), Some(pos)) = (source.file.as_deref(), source.pos) else {
            return Version::from_offset(offset);
        };
        let snapshot = source
            .snapshot
            .as_deref()
            .is_some_and(|s| !s.is_empty() && s != "false");
        Version {
            file: binlog_sequence(file),
            pos,
            phase: if snapshot { 0 } else { 1 },
            row: source.row.map_or(0, |r| r.clamp(0, u32::MAX as i64) as u32),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.file {
            0 => write!(f, "offset {}", self.pos),
            n => write!(
                f,
                "binlog {n}:{}:{}{}",
                self.pos,
                self.row,
                if self.phase == 0 { " (snapshot)" } else { "" }
            ),
        }
    }
}

/// The sequence number of a binlog file name (`mysql-bin.000042` → 42): the
/// digits after its last dot. Binlog files are numbered in the order the
/// server writes them. A name without one counts as file 1.
fn binlog_sequence(file: &str) -> u64 {
    file.rsplit_once('.')
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .unwrap_or(1)
        .max(1)
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
    fn versions_follow_the_binlog_then_fall_back_to_offsets() {
        let at = |file: &str, pos, row, snapshot: Option<&str>| SourceMeta {
            file: Some(file.into()),
            pos: Some(pos),
            row: Some(row),
            snapshot: snapshot.map(str::to_owned),
            ..SourceMeta::default()
        };
        let v = |s: &SourceMeta| Version::of_change(s, 7);
        // Later files, positions and rows are newer, whatever the offsets.
        assert!(v(&at("mysql-bin.000002", 4, 0, None)) > v(&at("mysql-bin.000001", 900, 3, None)));
        assert!(
            v(&at("mysql-bin.000001", 901, 0, None)) > v(&at("mysql-bin.000001", 900, 3, None))
        );
        assert!(
            v(&at("mysql-bin.000001", 900, 4, None)) > v(&at("mysql-bin.000001", 900, 3, None))
        );
        // At one position a snapshot read is older than a streamed change.
        assert!(v(&at("b.9", 50, 0, Some("true"))) < v(&at("b.9", 50, 0, Some("false"))));
        assert!(v(&at("b.9", 50, 0, Some("last"))) < v(&at("b.9", 50, 0, None)));
        // No position: the offset.
        assert_eq!(v(&SourceMeta::default()), Version::from_offset(7));
        assert!(Version::from_offset(8) > Version::from_offset(7));
        assert_eq!(binlog_sequence("mariadb-bin.000123"), 123);
        assert_eq!(binlog_sequence("weird"), 1);
    }

    #[test]
    fn ids_are_trimmed() {
        assert_eq!(normalize_id(" 42 "), Some("42".into()));
        assert_eq!(normalize_id("  "), None);
    }
}
