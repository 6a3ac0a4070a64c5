//! Debezium JSON change events → [`ChangeEvent`]s.
//!
//! Accepts the Kafka Connect `JsonConverter` output with (`{"schema":…,
//! "payload":…}`) and without the schema wrapper. With a schema, each column
//! is read by its Connect type (`io.debezium.time.*`, `Decimal` as base64
//! bytes with its `scale`, strings for `decimal.handling.mode=string`, JSON
//! numbers for `double`). Without one: numbers are numbers (read exactly from
//! their text), timestamps are epoch milliseconds, or micro/nanoseconds when
//! large enough (≥ 10^14 / ≥ 10^17), or ISO-8601 text (read as UTC unless it
//! has an offset).
//!
//! Only the columns named in [`crate::columns`] are read; others are skipped
//! unparsed. Row images are scanned once as borrowed raw JSON, and a
//! [`Decoder`] remembers each topic's last schema text so that an event
//! carrying the same schema is decoded without parsing its schema again.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::columns::{logistics_demo, order_demo, wms_demo};
use crate::config::PipelineConfig;
use crate::model::{
    normalize_id, ChangeEvent, Op, Order, OrderItem, Row, Shipment, SourceMeta, SourceTable,
    Timestamp,
};
use crate::values::{bounded_amount, parse_money, parse_number, parse_qty, qty_from_decimal};
use crate::values::{Money, Parsed};

/// Why a record could not be decoded. It names the field and the reason, for
/// the dead-letter record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("topic {0:?} is not a configured source topic")]
    UnknownTopic(String),
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("schema: {0}")]
    Schema(String),
    #[error("unsupported op {0:?}")]
    UnsupportedOp(String),
    #[error("field `{field}`: {reason}")]
    Field { field: String, reason: String },
}

impl DecodeError {
    fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        DecodeError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn in_image(self, image: &str) -> Self {
        match self {
            DecodeError::Field { field, reason } => DecodeError::Field {
                field: format!("{image}.{field}"),
                reason,
            },
            other => other,
        }
    }
}

fn json_err(e: serde_json::Error) -> DecodeError {
    DecodeError::Json(e.to_string())
}

/// Decodes one record without a schema cache. `Ok(None)` is a tombstone.
/// The key is not needed: Debezium's value carries the full row images.
pub fn decode_change(
    config: &PipelineConfig,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Option<ChangeEvent>, DecodeError> {
    Decoder::default().decode(config, topic, key, value)
}

/// A decoder that remembers the last schema seen on each topic.
#[derive(Default)]
pub struct Decoder {
    schemas: HashMap<String, CachedSchema>,
}

struct CachedSchema {
    raw: Box<[u8]>,
    schema: Arc<TableSchema>,
}

const WRAPPER_HEAD: &[u8] = b"{\"schema\":";
const PAYLOAD_KEY: &[u8] = b",\"payload\":";

impl Decoder {
    /// Decodes one record. `Ok(None)` is a tombstone (null or empty value, or
    /// a null payload).
    pub fn decode(
        &mut self,
        config: &PipelineConfig,
        topic: &str,
        _key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<Option<ChangeEvent>, DecodeError> {
        let table = config
            .table_for_topic(topic)
            .ok_or_else(|| DecodeError::UnknownTopic(topic.to_owned()))?;
        let value = match value {
            Some(v) if !v.trim_ascii().is_empty() && v.trim_ascii() != b"null" => v,
            _ => return Ok(None),
        };
        if value.trim_ascii_start().first() != Some(&b'{') {
            return Err(DecodeError::Json("expected a JSON object".into()));
        }
        let names = columns_of(table);
        if let Some((schema, payload)) = self.fast_split(topic, value) {
            if let Ok(env) = parse_envelope(payload, names) {
                return build_event(config, topic, table, env, Some(&schema));
            }
        }
        let top = parse_envelope(value, names).map_err(json_err)?;
        let (env, schema) = match top.payload {
            Some(payload) => {
                let schema = match top.schema {
                    Some(raw) if raw.get() != "null" => Some(self.schema_for(topic, table, raw)?),
                    _ => None,
                };
                match payload.get() {
                    "null" => return Ok(None),
                    text => (
                        parse_envelope(text.as_bytes(), names).map_err(json_err)?,
                        schema,
                    ),
                }
            }
            None => (top, None),
        };
        build_event(config, topic, table, env, schema.as_deref())
    }

    /// When `value` is `{"schema":S,"payload":P}` with S byte-equal to the
    /// topic's cached schema, returns that schema and P's bytes (with the
    /// closing brace; P is validated when it is parsed).
    fn fast_split<'v>(&self, topic: &str, value: &'v [u8]) -> Option<(Arc<TableSchema>, &'v [u8])> {
        let rest = value.strip_prefix(WRAPPER_HEAD)?;
        let cached = self.schemas.get(topic)?;
        let rest = rest.strip_prefix(&*cached.raw)?;
        let payload = rest.strip_prefix(PAYLOAD_KEY)?;
        let payload = payload.trim_ascii_end().strip_suffix(b"}")?;
        Some((cached.schema.clone(), payload))
    }

    fn schema_for(
        &mut self,
        topic: &str,
        table: SourceTable,
        raw: &RawValue,
    ) -> Result<Arc<TableSchema>, DecodeError> {
        let text = raw.get().as_bytes();
        if let Some(c) = self.schemas.get(topic) {
            if *c.raw == *text {
                return Ok(c.schema.clone());
            }
        }
        let schema = Arc::new(TableSchema::parse(table, raw.get())?);
        self.schemas.insert(
            topic.to_owned(),
            CachedSchema {
                raw: text.into(),
                schema: schema.clone(),
            },
        );
        Ok(schema)
    }
}

/// A row image as the envelope's single pass reads it: the raw values of the
/// table's known columns, borrowed from the record.
enum Image<'a> {
    /// Absent or `null`.
    Absent,
    Slots(Slots<'a>),
    /// Something other than an object or `null`.
    NotAnObject,
}

struct ImageSeed(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for ImageSeed {
    type Value = Image<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ImageSeed {
    type Value = Image<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row image object or null")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        ImageVisitor(self.0).visit_map(map).map(Image::Slots)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Image::Absent)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Image::Absent)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Image::NotAnObject)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Image::NotAnObject)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Image::NotAnObject)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Image::NotAnObject)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Image::NotAnObject)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Image::NotAnObject)
    }
}

/// A string borrowed from the record unless it has escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

fn opt_str<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    Ok(map.next_value::<Option<CowStr<'de>>>()?.map(|s| s.0))
}

/// Marks `field` as seen; a second occurrence is an error, as serde's derive has it.
fn once<E: serde::de::Error>(seen: &mut u16, bit: u16, field: &'static str) -> Result<(), E> {
    if *seen & bit != 0 {
        return Err(E::duplicate_field(field));
    }
    *seen |= bit;
    Ok(())
}

/// The top level of a record (the wrapper's `schema` and `payload`, or the
/// envelope itself), or a wrapper's payload: one pass, row images included.
#[derive(Default)]
struct Envelope<'a> {
    /// Present even with a `null` value.
    schema: Option<&'a RawValue>,
    /// Present even with a `null` value.
    payload: Option<&'a RawValue>,
    before: Option<Image<'a>>,
    after: Option<Image<'a>>,
    source: Option<SourceBlock<'a>>,
    op: Option<Cow<'a, str>>,
    ts_ms: Option<i64>,
}

struct EnvelopeSeed(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for EnvelopeSeed {
    type Value = Envelope<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed {
    type Value = Envelope<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Debezium change event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        const KEYS: &[&str] = &[
            "schema", "payload", "before", "after", "source", "op", "ts_ms",
        ];
        let mut env = Envelope::default();
        let mut seen = 0u16;
        while let Some(key) = map.next_key_seed(ColumnKey(KEYS))? {
            match key.map_or("", |k| KEYS[k]) {
                "schema" => {
                    once(&mut seen, 1, "schema")?;
                    env.schema = Some(map.next_value()?);
                }
                "payload" => {
                    once(&mut seen, 2, "payload")?;
                    env.payload = Some(map.next_value()?);
                }
                "before" => {
                    once(&mut seen, 4, "before")?;
                    env.before = Some(map.next_value_seed(ImageSeed(self.0))?);
                }
                "after" => {
                    once(&mut seen, 8, "after")?;
                    env.after = Some(map.next_value_seed(ImageSeed(self.0))?);
                }
                "source" => {
                    once(&mut seen, 16, "source")?;
                    env.source = map.next_value()?;
                }
                "op" => {
                    once(&mut seen, 32, "op")?;
                    env.op = opt_str(&mut map)?;
                }
                "ts_ms" => {
                    once(&mut seen, 64, "ts_ms")?;
                    env.ts_ms = map.next_value()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(env)
    }
}

fn parse_envelope<'a>(
    bytes: &'a [u8],
    names: &'static [&'static str],
) -> Result<Envelope<'a>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let env = EnvelopeSeed(names).deserialize(&mut de)?;
    de.end()?;
    Ok(env)
}

#[derive(Default)]
struct SourceBlock<'a> {
    connector: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    db: Option<Cow<'a, str>>,
    table: Option<Cow<'a, str>>,
    ts_ms: Option<i64>,
    file: Option<Cow<'a, str>>,
    pos: Option<u64>,
    row: Option<i64>,
    snapshot: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for SourceBlock<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SourceBlock<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Debezium source block")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                const KEYS: &[&str] = &[
                    "connector",
                    "name",
                    "db",
                    "table",
                    "ts_ms",
                    "file",
                    "pos",
                    "row",
                    "snapshot",
                ];
                let mut src = SourceBlock::default();
                let mut seen = 0u16;
                while let Some(key) = map.next_key_seed(ColumnKey(KEYS))? {
                    match key.map_or("", |k| KEYS[k]) {
                        "connector" => {
                            once(&mut seen, 1, "connector")?;
                            src.connector = opt_str(&mut map)?;
                        }
                        "name" => {
                            once(&mut seen, 2, "name")?;
                            src.name = opt_str(&mut map)?;
                        }
                        "db" => {
                            once(&mut seen, 4, "db")?;
                            src.db = opt_str(&mut map)?;
                        }
                        "table" => {
                            once(&mut seen, 8, "table")?;
                            src.table = opt_str(&mut map)?;
                        }
                        "ts_ms" => {
                            once(&mut seen, 16, "ts_ms")?;
                            src.ts_ms = map.next_value()?;
                        }
                        "file" => {
                            once(&mut seen, 32, "file")?;
                            src.file = opt_str(&mut map)?;
                        }
                        "pos" => {
                            once(&mut seen, 64, "pos")?;
                            src.pos = map.next_value()?;
                        }
                        "row" => {
                            once(&mut seen, 128, "row")?;
                            src.row = map.next_value()?;
                        }
                        "snapshot" => {
                            once(&mut seen, 256, "snapshot")?;
                            let raw: Option<&'de RawValue> = map.next_value()?;
                            // `Option<Box<RawValue>>` read `null` as absent; so does this.
                            src.snapshot = raw.filter(|r| r.get() != "null");
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(src)
            }
        }
        d.deserialize_map(V)
    }
}

fn build_event(
    config: &PipelineConfig,
    topic: &str,
    table: SourceTable,
    env: Envelope<'_>,
    schema: Option<&TableSchema>,
) -> Result<Option<ChangeEvent>, DecodeError> {
    let op = match env.op.as_deref() {
        Some("c") => Op::Create,
        Some("u") => Op::Update,
        Some("d") => Op::Delete,
        Some("r") => Op::Read,
        Some("t") => Op::Truncate,
        Some(other) => return Err(DecodeError::UnsupportedOp(other.to_owned())),
        None => return Err(DecodeError::field("op", "missing")),
    };
    let image = |name: &str, image: Option<Image<'_>>| -> Result<Option<Row>, DecodeError> {
        match image {
            Some(Image::Slots(slots)) if op != Op::Truncate => row_from_slots(table, slots, schema)
                .map(Some)
                .map_err(|e| e.in_image(name)),
            Some(Image::NotAnObject) if op != Op::Truncate => Err(DecodeError::Json(format!(
                "`{name}` is not a row image object"
            ))),
            _ => Ok(None),
        }
    };
    let before = image("before", env.before)?;
    let after = image("after", env.after)?;
    match op {
        Op::Create | Op::Read | Op::Update if after.is_none() => {
            return Err(DecodeError::field("after", "missing row image"))
        }
        Op::Delete if before.is_none() => {
            return Err(DecodeError::field(
                "before",
                "missing row image (the connector needs binlog_row_image=FULL)",
            ))
        }
        _ => {}
    }
    let src = env.source.unwrap_or_default();
    let owned = |s: Option<Cow<'_, str>>| s.map(Cow::into_owned).unwrap_or_default();
    let source = SourceMeta {
        connector: owned(src.connector),
        name: owned(src.name),
        db: src.db.map_or_else(
            || config.database_of_topic(topic).to_owned(),
            Cow::into_owned,
        ),
        table: owned(src.table),
        ts_ms: src.ts_ms.or(env.ts_ms).unwrap_or(0),
        file: src.file.filter(|f| !f.is_empty()).map(Cow::into_owned),
        pos: src.pos,
        row: src.row,
        snapshot: src.snapshot.map(|raw| match scalar(raw) {
            Ok(Scalar::Str(s)) => s.into_owned(),
            _ => raw.get().to_owned(),
        }),
    };
    Ok(Some(ChangeEvent {
        table,
        op,
        before,
        after,
        source,
        ts_ms: env.ts_ms,
    }))
}

// ---------------------------------------------------------------------------
// Schemas

/// A column's Connect type, as far as decoding cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum ColumnType {
    /// No schema, or a type without a special reading.
    #[default]
    Unknown,
    Int,
    Text,
    /// `org.apache.kafka.connect.data.Decimal`: base64 big-endian two's
    /// complement bytes of the unscaled value.
    Decimal {
        scale: u32,
    },
    /// `io.debezium.data.VariableScaleDecimal`: `{"scale":…,"value":…}`.
    VariableDecimal,
    EpochMillis,
    EpochMicros,
    EpochNanos,
    EpochDays,
    /// `io.debezium.time.ZonedTimestamp`: ISO-8601 text with offset.
    Zoned,
}

/// The types of a table's known columns, by slot (see [`crate::columns`]).
#[derive(Debug, Default)]
struct TableSchema {
    types: [ColumnType; MAX_COLUMNS],
}

#[derive(Deserialize)]
struct SchemaNode {
    #[serde(rename = "type", default)]
    ty: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    fields: Option<Vec<SchemaNode>>,
    #[serde(default)]
    parameters: Option<HashMap<String, serde_json::Value>>,
}

impl TableSchema {
    fn parse(table: SourceTable, raw: &str) -> Result<Self, DecodeError> {
        let root: SchemaNode = serde_json::from_str(raw).map_err(json_err)?;
        let fields = root
            .fields
            .ok_or_else(|| DecodeError::Schema("envelope schema has no fields".into()))?;
        let image = fields
            .iter()
            .find(|f| f.field.as_deref() == Some("after"))
            .or_else(|| fields.iter().find(|f| f.field.as_deref() == Some("before")))
            .and_then(|f| f.fields.as_ref());
        let mut schema = TableSchema::default();
        let Some(columns) = image else {
            // A truncate-only or otherwise image-less schema: nothing to type.
            return Ok(schema);
        };
        let names = columns_of(table);
        for col in columns {
            let Some(slot) = col
                .field
                .as_deref()
                .and_then(|f| names.iter().position(|n| *n == f))
            else {
                continue;
            };
            schema.types[slot] = column_type(col)?;
        }
        Ok(schema)
    }
}

fn column_type(node: &SchemaNode) -> Result<ColumnType, DecodeError> {
    let ty = match node.name.as_deref() {
        Some("org.apache.kafka.connect.data.Decimal") => {
            let scale = node
                .parameters
                .as_ref()
                .and_then(|p| p.get("scale"))
                .and_then(|s| match s {
                    serde_json::Value::String(s) => s.parse::<u32>().ok(),
                    serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                    _ => None,
                })
                .filter(|s| *s <= 28)
                .ok_or_else(|| {
                    DecodeError::Schema(format!(
                        "column {:?}: Decimal without a valid scale parameter",
                        node.field.as_deref().unwrap_or("?")
                    ))
                })?;
            ColumnType::Decimal { scale }
        }
        Some("io.debezium.data.VariableScaleDecimal") => ColumnType::VariableDecimal,
        Some("io.debezium.time.Timestamp") | Some("org.apache.kafka.connect.data.Timestamp") => {
            ColumnType::EpochMillis
        }
        Some("io.debezium.time.MicroTimestamp") => ColumnType::EpochMicros,
        Some("io.debezium.time.NanoTimestamp") => ColumnType::EpochNanos,
        Some("io.debezium.time.Date") | Some("org.apache.kafka.connect.data.Date") => {
            ColumnType::EpochDays
        }
        Some("io.debezium.time.ZonedTimestamp") => ColumnType::Zoned,
        _ => match node.ty.as_deref() {
            Some("int8" | "int16" | "int32" | "int64") => ColumnType::Int,
            Some("string") => ColumnType::Text,
            _ => ColumnType::Unknown,
        },
    };
    Ok(ty)
}

// ---------------------------------------------------------------------------
// Row images

const MAX_COLUMNS: usize = 9;

fn columns_of(table: SourceTable) -> &'static [&'static str] {
    match table {
        SourceTable::Orders => &order_demo::ALL,
        SourceTable::Items => &wms_demo::ALL,
        SourceTable::Shipments => &logistics_demo::ALL,
    }
}

type Slots<'a> = [Option<&'a RawValue>; MAX_COLUMNS];

/// Maps an image's key to the slot of a known column, if it is one.
struct ColumnKey(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for ColumnKey {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        // As bytes: serde_json then matches the key without validating it as
        // UTF-8 (the names looked for are ASCII; other keys are skipped).
        d.deserialize_bytes(self)
    }
}

impl Visitor<'_> for ColumnKey {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|c| *c == v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|c| c.as_bytes() == v))
    }
}

struct ImageVisitor(&'static [&'static str]);

impl<'de> Visitor<'de> for ImageVisitor {
    type Value = Slots<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row image object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut slots: Slots<'de> = [None; MAX_COLUMNS];
        while let Some(slot) = map.next_key_seed(ColumnKey(self.0))? {
            match slot {
                Some(i) => slots[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(slots)
    }
}

fn row_from_slots(
    table: SourceTable,
    slots: Slots<'_>,
    schema: Option<&TableSchema>,
) -> Result<Row, DecodeError> {
    let names = columns_of(table);
    let cols = Columns {
        names,
        slots,
        types: schema.map(|s| s.types).unwrap_or_default(),
    };
    Ok(match table {
        SourceTable::Orders => Row::Order(Order {
            id: cols.required_id(0)?,
            order_id: cols.id(1)?,
            order_value: cols.money(2)?,
            order_description: cols.text(3)?,
            order_address: cols.text(4)?,
            created_at: cols.timestamp(5)?,
            updated_at: cols.timestamp(6)?,
        }),
        SourceTable::Items => Row::Item(OrderItem {
            id: cols.required_id(0)?,
            order_id: cols.id(1)?,
            item_type: cols.text(2)?,
            item_qty: cols.qty(3)?,
            shipment_id: cols.id(4)?,
            courier: cols.text(5)?,
            warehouse_id: cols.id(6)?,
            created_at: cols.timestamp(7)?,
            updated_at: cols.timestamp(8)?,
        }),
        SourceTable::Shipments => Row::Shipment(Shipment {
            id: cols.required_id(0)?,
            order_id: cols.id(1)?,
            wmsrecord_id: cols.id(2)?,
            shipment_cost: cols.money(3)?,
            courier: cols.text(4)?,
            created_at: cols.timestamp(5)?,
            updated_at: cols.timestamp(6)?,
        }),
    })
}

/// A JSON value, classified without allocating unless a string has escapes.
enum Scalar<'a> {
    Null,
    Bool(bool),
    /// The number's exact text.
    Number(&'a str),
    Str(Cow<'a, str>),
    Object(&'a str),
    Array,
}

fn scalar(raw: &RawValue) -> Result<Scalar<'_>, DecodeError> {
    let s = raw.get().trim();
    Ok(match s.as_bytes().first() {
        None | Some(b'n') => Scalar::Null,
        Some(b't') => Scalar::Bool(true),
        Some(b'f') => Scalar::Bool(false),
        Some(b'"') if !s.contains('\\') && s.len() >= 2 => {
            Scalar::Str(Cow::Borrowed(&s[1..s.len() - 1]))
        }
        Some(b'"') => Scalar::Str(Cow::Owned(
            serde_json::from_str::<String>(s).map_err(json_err)?,
        )),
        Some(b'{') => Scalar::Object(s),
        Some(b'[') => Scalar::Array,
        Some(_) => Scalar::Number(s),
    })
}

struct Columns<'a> {
    names: &'static [&'static str],
    slots: Slots<'a>,
    types: [ColumnType; MAX_COLUMNS],
}

impl Columns<'_> {
    fn get(&self, slot: usize) -> Result<(Scalar<'_>, ColumnType), DecodeError> {
        let value = match self.slots[slot] {
            Some(raw) => scalar(raw)?,
            None => Scalar::Null,
        };
        Ok((value, self.types[slot]))
    }

    fn err(&self, slot: usize, reason: impl Into<String>) -> DecodeError {
        DecodeError::field(self.names[slot], reason)
    }

    /// Text as stored; numbers and booleans as their JSON text.
    fn text(&self, slot: usize) -> Result<Option<String>, DecodeError> {
        let (value, ty) = self.get(slot)?;
        Ok(match value {
            Scalar::Null => None,
            Scalar::Str(s) => match ty {
                ColumnType::Decimal { scale } => Some(
                    decimal_from_base64(&s, scale)
                        .map_err(|r| self.err(slot, r))?
                        .to_string(),
                ),
                _ => Some(s.into_owned()),
            },
            Scalar::Number(n) => Some(n.to_owned()),
            Scalar::Bool(b) => Some(b.to_string()),
            Scalar::Object(o) if ty == ColumnType::VariableDecimal => Some(
                variable_decimal(o)
                    .map_err(|r| self.err(slot, r))?
                    .to_string(),
            ),
            Scalar::Object(_) | Scalar::Array => {
                return Err(self.err(slot, "expected a scalar, found a JSON object or array"))
            }
        })
    }

    /// An id: trimmed text, `None` when null or empty.
    fn id(&self, slot: usize) -> Result<Option<String>, DecodeError> {
        Ok(self.text(slot)?.and_then(|t| {
            // Ids are usually already trimmed: keep the text, copy only to trim.
            if t.is_empty() || t.trim().len() != t.len() {
                normalize_id(&t)
            } else {
                Some(t)
            }
        }))
    }

    fn required_id(&self, slot: usize) -> Result<String, DecodeError> {
        self.id(slot)?
            .ok_or_else(|| self.err(slot, "primary key is missing, null or empty"))
    }

    /// An exact decimal from a Connect decimal column, if this is one.
    fn exact_decimal(&self, slot: usize) -> Result<Option<Decimal>, DecodeError> {
        let (value, ty) = self.get(slot)?;
        match (value, ty) {
            (Scalar::Str(s), ColumnType::Decimal { scale }) => decimal_from_base64(&s, scale)
                .map(Some)
                .map_err(|r| self.err(slot, r)),
            (Scalar::Object(o), ColumnType::VariableDecimal) => {
                variable_decimal(o).map(Some).map_err(|r| self.err(slot, r))
            }
            _ => Ok(None),
        }
    }

    fn money(&self, slot: usize) -> Result<Parsed<Money>, DecodeError> {
        if let Some(d) = self.exact_decimal(slot)? {
            return Ok(match bounded_amount(d) {
                Some(amount) => Parsed::Valid(Money {
                    amount,
                    currency: None,
                }),
                None => Parsed::Invalid(d.to_string()),
            });
        }
        let (value, _) = self.get(slot)?;
        Ok(match value {
            Scalar::Null => Parsed::Null,
            Scalar::Number(n) => match parse_number(n) {
                Some(amount) => Parsed::Valid(Money {
                    amount,
                    currency: None,
                }),
                None => Parsed::Invalid(n.to_owned()),
            },
            Scalar::Str(s) => Parsed::from_text(&s, parse_money),
            Scalar::Bool(b) => Parsed::Invalid(b.to_string()),
            Scalar::Object(o) => Parsed::Invalid(o.to_owned()),
            Scalar::Array => return Err(self.err(slot, "expected an amount, found an array")),
        })
    }

    fn qty(&self, slot: usize) -> Result<Parsed<u64>, DecodeError> {
        if let Some(d) = self.exact_decimal(slot)? {
            return Ok(match qty_from_decimal(d) {
                Some(q) => Parsed::Valid(q),
                None => Parsed::Invalid(d.to_string()),
            });
        }
        let (value, _) = self.get(slot)?;
        Ok(match value {
            Scalar::Null => Parsed::Null,
            Scalar::Number(n) => match parse_number(n).and_then(qty_from_decimal) {
                Some(q) => Parsed::Valid(q),
                None => Parsed::Invalid(n.to_owned()),
            },
            Scalar::Str(s) => Parsed::from_text(&s, parse_qty),
            Scalar::Bool(b) => Parsed::Invalid(b.to_string()),
            Scalar::Object(o) => Parsed::Invalid(o.to_owned()),
            Scalar::Array => return Err(self.err(slot, "expected a quantity, found an array")),
        })
    }

    fn timestamp(&self, slot: usize) -> Result<Option<Timestamp>, DecodeError> {
        let (value, ty) = self.get(slot)?;
        let int = |n: &str| -> Result<i64, DecodeError> {
            n.parse::<i64>()
                .map_err(|_| self.err(slot, format!("expected an integer timestamp, found {n}")))
        };
        let overflow = || self.err(slot, "timestamp out of range");
        let ts = match (value, ty) {
            (Scalar::Null, _) => return Ok(None),
            (Scalar::Number(n), ColumnType::EpochMillis) => {
                Timestamp::from_millis(int(n)?).ok_or_else(overflow)?
            }
            (Scalar::Number(n), ColumnType::EpochMicros) => Timestamp(int(n)?),
            (Scalar::Number(n), ColumnType::EpochNanos) => Timestamp(int(n)?.div_euclid(1000)),
            (Scalar::Number(n), ColumnType::EpochDays) => int(n)?
                .checked_mul(86_400_000_000)
                .map(Timestamp)
                .ok_or_else(overflow)?,
            (Scalar::Number(n), ColumnType::Unknown | ColumnType::Int) => {
                let v = int(n)?;
                match v.unsigned_abs() {
                    a if a >= 100_000_000_000_000_000 => Timestamp(v.div_euclid(1000)),
                    a if a >= 100_000_000_000_000 => Timestamp(v),
                    _ => Timestamp::from_millis(v).ok_or_else(overflow)?,
                }
            }
            (Scalar::Str(s), ColumnType::Unknown | ColumnType::Text | ColumnType::Zoned) => {
                match parse_iso_timestamp(&s) {
                    IsoReading::Instant(ts) => ts,
                    IsoReading::ZeroDate => return Ok(None),
                    IsoReading::Invalid => {
                        return Err(self.err(slot, format!("not an ISO-8601 timestamp: {s:?}")))
                    }
                }
            }
            (_, ty) => {
                return Err(self.err(slot, format!("value does not fit its schema type {ty:?}")))
            }
        };
        Ok(Some(ts))
    }
}

enum IsoReading {
    Instant(Timestamp),
    ZeroDate,
    Invalid,
}

/// RFC 3339 with offset, or a naive date-time / date read as UTC. MySQL's
/// zero date reads as null.
fn parse_iso_timestamp(s: &str) -> IsoReading {
    let s = s.trim();
    if s.starts_with("0000-00-00") {
        return IsoReading::ZeroDate;
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return IsoReading::Instant(Timestamp(dt.timestamp_micros()));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return IsoReading::Instant(Timestamp(dt.and_utc().timestamp_micros()));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(dt) = d.and_hms_opt(0, 0, 0) {
            return IsoReading::Instant(Timestamp(dt.and_utc().timestamp_micros()));
        }
    }
    IsoReading::Invalid
}

/// Decodes Connect's Decimal: base64 of the unscaled value's big-endian
/// two's complement bytes.
fn decimal_from_base64(text: &str, scale: u32) -> Result<Decimal, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("Decimal bytes are not base64: {e}"))?;
    if bytes.is_empty() || bytes.len() > 16 {
        return Err(format!("Decimal of {} bytes is out of range", bytes.len()));
    }
    let negative = bytes[0] & 0x80 != 0;
    let mut buf = if negative { [0xFF; 16] } else { [0; 16] };
    buf[16 - bytes.len()..].copy_from_slice(&bytes);
    let unscaled = i128::from_be_bytes(buf);
    Decimal::try_from_i128_with_scale(unscaled, scale)
        .map_err(|e| format!("Decimal out of range: {e}"))
}

fn variable_decimal(text: &str) -> Result<Decimal, String> {
    #[derive(Deserialize)]
    struct Variable {
        scale: u32,
        value: String,
    }
    let v: Variable =
        serde_json::from_str(text).map_err(|e| format!("VariableScaleDecimal: {e}"))?;
    if v.scale > 28 {
        return Err(format!(
            "VariableScaleDecimal scale {} is out of range",
            v.scale
        ));
    }
    decimal_from_base64(&v.value, v.scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decimals_in_twos_complement() {
        // 5275500 unscaled = 0x507F6C, scale 2 → 52755.00
        assert_eq!(
            decimal_from_base64("UH9s", 2),
            Ok(Decimal::new(5_275_500, 2))
        );
        // -1 unscaled = 0xFF
        assert_eq!(decimal_from_base64("/w==", 0), Ok(Decimal::NEGATIVE_ONE));
        // 128 needs a sign byte: 0x0080
        assert_eq!(decimal_from_base64("AIA=", 1), Ok(Decimal::new(128, 1)));
        assert!(decimal_from_base64("not base64!", 0).is_err());
        assert!(decimal_from_base64("", 0).is_err());
    }

    #[test]
    fn iso_timestamps() {
        let at = |s: &str| match parse_iso_timestamp(s) {
            IsoReading::Instant(t) => Some(t.to_string()),
            _ => None,
        };
        assert_eq!(
            at("2024-05-01T10:00:00Z").as_deref(),
            Some("2024-05-01T10:00:00.000000Z")
        );
        assert_eq!(
            at("2024-05-01T15:30:00+05:30").as_deref(),
            Some("2024-05-01T10:00:00.000000Z")
        );
        assert_eq!(
            at("2024-05-01 10:00:00.5").as_deref(),
            Some("2024-05-01T10:00:00.500000Z")
        );
        assert_eq!(
            at("2024-05-01").as_deref(),
            Some("2024-05-01T00:00:00.000000Z")
        );
        assert!(matches!(
            parse_iso_timestamp("0000-00-00 00:00:00"),
            IsoReading::ZeroDate
        ));
        assert!(matches!(
            parse_iso_timestamp("yesterday"),
            IsoReading::Invalid
        ));
    }
}
