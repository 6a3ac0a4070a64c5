//! Decoder tests over hand-written Debezium (MariaDB/MySQL connector) events:
//! snapshot, create, update, delete and its tombstone, truncate; with and
//! without the schema wrapper; every temporal and decimal encoding.

mod common;

use outbound_pipeline::decode::{decode_change, DecodeError, Decoder};
use outbound_pipeline::model::{
    ChangeEvent, Op, Order, OrderItem, Row, Shipment, SourceTable, Timestamp, Version,
};
use outbound_pipeline::rekey::{rekey, KeyedChange, Route};
use outbound_pipeline::values::{Money, Parsed};
use outbound_pipeline::PipelineConfig;
use rust_decimal::Decimal;

const ORDERS: &str = "outbound.orders.order_demo";
const ITEMS: &str = "outbound.wms.wms_demo";
const SHIPMENTS: &str = "outbound.logistics.logistics_demo";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn decode(topic: &str, json: &str) -> ChangeEvent {
    let cfg = PipelineConfig::default();
    let event = decode_change(&cfg, topic, Some(br#"{"id":1}"#), Some(json.as_bytes()))
        .expect("decodes")
        .expect("not a tombstone");
    // The cached fast path must agree with the plain one, on pretty and compact text.
    let mut decoder = Decoder::default();
    let compact = common::minify(json);
    for text in [json, &compact, &compact] {
        let again = decoder
            .decode(&cfg, topic, None, Some(text.as_bytes()))
            .unwrap()
            .unwrap();
        assert_eq!(again, event);
    }
    event
}

fn inr(amount: Decimal) -> Parsed<Money> {
    Parsed::Valid(Money {
        amount,
        currency: Some("INR".into()),
    })
}

fn plain(amount: Decimal) -> Parsed<Money> {
    Parsed::Valid(Money {
        amount,
        currency: None,
    })
}

#[test]
fn snapshot_read_with_schema() {
    let e = decode(ORDERS, &fixture("order_snapshot_r.json"));
    assert_eq!(e.table, SourceTable::Orders);
    assert_eq!(e.op, Op::Read);
    assert_eq!(e.before, None);
    assert_eq!(
        e.after,
        Some(Row::Order(Order {
            id: "1".into(),
            order_id: Some("ORD-1".into()),
            order_value: inr(Decimal::new(52755, 0)),
            order_description: Some("Mobile phone, 128 GB".into()),
            order_address: Some("12 MG Road, Bengaluru".into()),
            created_at: Some(Timestamp(1_714_557_600_000_000)),
            updated_at: None,
        }))
    );
    assert_eq!(e.source.connector, "mariadb");
    assert_eq!(e.source.name, "outbound");
    assert_eq!(
        (e.source.db.as_str(), e.source.table.as_str()),
        ("orders", "order_demo")
    );
    assert_eq!(e.source.ts_ms, 1_714_557_700_000);
    assert_eq!(e.source.file.as_deref(), Some("mysql-bin.000003"));
    assert_eq!((e.source.pos, e.source.row), (Some(1542), Some(0)));
    assert_eq!(e.source.snapshot.as_deref(), Some("first"));
    assert_eq!(e.ts_ms, Some(1_714_557_700_123));
    let keyed = rekey(&e, 5);
    assert_eq!(keyed.len(), 1);
    assert_eq!(keyed[0].0, Route::Order("ORD-1".into()));
}

#[test]
fn update_moving_order_with_precise_decimal_zoned_and_date() {
    let e = decode(ORDERS, &fixture("order_update_precise_decimal.json"));
    assert_eq!(e.op, Op::Update);
    let Some(Row::Order(before)) = &e.before else {
        panic!("before")
    };
    let Some(Row::Order(after)) = &e.after else {
        panic!("after")
    };
    assert_eq!(before.order_value, plain(Decimal::new(128, 2)));
    assert_eq!(
        before.created_at,
        Some(Timestamp(1_714_557_600_000_000)),
        "+05:30 offset"
    );
    assert_eq!(
        before.updated_at,
        Some(Timestamp(1_714_521_600_000_000)),
        "days since epoch"
    );
    assert_eq!(after.order_id.as_deref(), Some("ORD-3"));
    assert_eq!(after.order_value, plain(Decimal::new(52755, 0)));
    assert_eq!(after.order_description.as_deref(), Some("Laptop \"Pro\""));
    assert_eq!(after.created_at, Some(Timestamp(1_714_557_600_000_000)));
    let keyed = rekey(&e, 9);
    assert_eq!(
        keyed.len(),
        2,
        "removed from the old order, added to the new one"
    );
    assert_eq!(keyed[0].0, Route::Order("ORD-2".into()));
    // Both carry the change's binlog position, not the record's offset.
    let at = Version::of_change(&e.source, 9);
    assert_eq!(at.pos, e.source.pos.unwrap());
    assert!(
        matches!(&keyed[0].1, KeyedChange::Delete { id, version, .. } if id == "2" && *version == at)
    );
    assert_eq!(keyed[1].0, Route::Order("ORD-3".into()));
    assert!(matches!(
        &keyed[1].1,
        KeyedChange::Upsert { version, .. } if *version == at
    ));
}

#[test]
fn create_without_schema() {
    let e = decode(ITEMS, &fixture("item_create_noschema.json"));
    assert_eq!(e.op, Op::Create);
    assert_eq!(
        e.after,
        Some(Row::Item(OrderItem {
            id: "11".into(),
            order_id: Some("ORD-1".into()),
            item_type: Some("phone".into()),
            item_qty: Parsed::Valid(2),
            shipment_id: Some("21".into()),
            courier: Some("dhl".into()),
            warehouse_id: None,
            created_at: Some(Timestamp(1_714_558_000_000_000)),
            updated_at: Some(Timestamp(1_714_558_000_250_000)),
        }))
    );
    assert_eq!(e.source.db, "wms");
}

#[test]
fn delete_and_its_tombstone() {
    let e = decode(ITEMS, &fixture("item_delete.json"));
    assert_eq!(e.op, Op::Delete);
    assert_eq!(e.after, None);
    let Some(Row::Item(item)) = &e.before else {
        panic!("before")
    };
    assert_eq!(item.item_qty, Parsed::Invalid("two".into()));
    assert_eq!(item.warehouse_id.as_deref(), Some("BLR-1"));
    assert_eq!(item.shipment_id, None);
    assert_eq!(
        rekey(&e, 3),
        vec![(
            Route::Order("ORD-1".into()),
            KeyedChange::Delete {
                table: SourceTable::Items,
                db: "wms".into(),
                order_id: Some("ORD-1".into()),
                id: "11".into(),
                version: Version {
                    file: 2,
                    pos: 1990,
                    phase: 1,
                    row: 0
                },
            }
        )]
    );
    let cfg = PipelineConfig::default();
    for tombstone in [
        None,
        Some(&b""[..]),
        Some(&b"null"[..]),
        Some(&b"{\"schema\":null,\"payload\":null}"[..]),
    ] {
        assert_eq!(
            decode_change(&cfg, ITEMS, Some(b"{\"id\":11}"), tombstone),
            Ok(None)
        );
    }
}

#[test]
fn truncate_removes_the_table() {
    let e = decode(ITEMS, &fixture("item_truncate.json"));
    assert_eq!(e.op, Op::Truncate);
    assert_eq!((e.before.as_ref(), e.after.as_ref()), (None, None));
    assert_eq!(
        rekey(&e, 1),
        vec![(
            Route::AllPartitions,
            KeyedChange::Truncate {
                table: SourceTable::Items,
                db: "wms".into(),
                version: Version {
                    file: 2,
                    pos: 2400,
                    phase: 1,
                    row: 0
                },
            }
        )]
    );
}

#[test]
fn update_with_micro_timestamps_ignores_the_meaningless_item_type() {
    let e = decode(SHIPMENTS, &fixture("shipment_update.json"));
    let Some(Row::Shipment(before)) = &e.before else {
        panic!("before")
    };
    let Some(Row::Shipment(after)) = &e.after else {
        panic!("after")
    };
    assert_eq!(before.wmsrecord_id.as_deref(), Some("10"));
    assert_eq!(
        after,
        &Shipment {
            id: "21".into(),
            order_id: Some("ORD-1".into()),
            wmsrecord_id: Some("11".into()),
            shipment_cost: inr(Decimal::new(120, 0)),
            courier: Some("bluedart".into()),
            created_at: Some(Timestamp(1_714_573_800_123_456)),
            updated_at: None,
        }
    );
    assert_eq!(rekey(&e, 2).len(), 1, "same order and id: upsert only");
}

#[test]
fn double_decimals_and_nano_timestamps() {
    let e = decode(SHIPMENTS, &fixture("shipment_create_double.json"));
    let Some(Row::Shipment(s)) = &e.after else {
        panic!("after")
    };
    assert_eq!(s.shipment_cost, plain(Decimal::new(1205, 1)));
    assert_eq!(s.created_at, Some(Timestamp(1_714_573_800_123_456)));
    assert_eq!(s.wmsrecord_id, None);
}

fn payload(after: &str) -> String {
    format!(
        r#"{{"before":null,"after":{after},"source":{{"connector":"mysql","name":"outbound","ts_ms":1,"db":"orders","table":"order_demo","file":"f","pos":4,"row":0}},"op":"c","ts_ms":2}}"#
    )
}

fn decode_after(topic: &str, after: &str) -> Result<Row, DecodeError> {
    let cfg = PipelineConfig::default();
    decode_change(&cfg, topic, None, Some(payload(after).as_bytes()))
        .map(|e| e.expect("event").after.expect("after"))
}

#[test]
fn schemaless_readings() {
    // decimal.handling.mode=string, numbers as numbers, ISO and epoch readings, extra and missing columns.
    let Row::Order(o) = decode_after(
        ORDERS,
        r#"{"id":"7","order_id":"","order_value":"52755.00","created_at":"2024-05-01T10:00:00Z","updated_at":1714557600000000,"unknown":{"nested":[1,2]}}"#,
    )
    .unwrap() else {
        panic!("order")
    };
    assert_eq!(o.id, "7");
    assert_eq!(o.order_id, None, "empty order_id is null");
    assert_eq!(o.order_value, plain(Decimal::new(52755, 0)));
    assert_eq!(o.created_at, Some(Timestamp(1_714_557_600_000_000)));
    assert_eq!(
        o.updated_at,
        Some(Timestamp(1_714_557_600_000_000)),
        "micros by magnitude"
    );
    assert_eq!(o.order_description, None, "missing column is null");

    let Row::Item(i) = decode_after(ITEMS, r#"{"id":3,"order_id":5,"item_qty":2,"shipment_id":" 9 ","warehouse_id":"  ","created_at":"0000-00-00 00:00:00"}"#).unwrap() else {
        panic!("item")
    };
    assert_eq!(i.order_id.as_deref(), Some("5"));
    assert_eq!(i.item_qty, Parsed::Valid(2));
    assert_eq!(i.shipment_id.as_deref(), Some("9"));
    assert_eq!(i.warehouse_id, None);
    assert_eq!(i.created_at, None, "zero date is null");

    let Row::Item(i) = decode_after(ITEMS, r#"{"id":4,"item_qty":2.5}"#).unwrap() else {
        panic!()
    };
    assert_eq!(i.item_qty, Parsed::Invalid("2.5".into()));
    let Row::Shipment(s) = decode_after(
        SHIPMENTS,
        r#"{"id":4,"shipment_cost":"₹1,234.50","wmsrecord_id":12}"#,
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(s.shipment_cost, inr(Decimal::new(12345, 1)));
    assert_eq!(s.wmsrecord_id.as_deref(), Some("12"));
    let Row::Shipment(s) = decode_after(SHIPMENTS, r#"{"id":4,"shipment_cost":"free"}"#).unwrap()
    else {
        panic!()
    };
    assert_eq!(s.shipment_cost, Parsed::Invalid("free".into()));
}

fn field_error(r: Result<Row, DecodeError>) -> String {
    match r {
        Err(DecodeError::Field { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn errors_name_the_field_and_reason() {
    let cfg = PipelineConfig::default();
    assert!(matches!(
        decode_change(&cfg, "outbound.other.t", None, Some(b"{}")),
        Err(DecodeError::UnknownTopic(_))
    ));
    assert!(matches!(
        decode_change(&cfg, ORDERS, None, Some(b"{\"op\":")),
        Err(DecodeError::Json(_))
    ));
    assert!(matches!(
        decode_change(&cfg, ORDERS, None, Some(b"[1]")),
        Err(DecodeError::Json(_))
    ));
    assert!(matches!(
        decode_change(&cfg, ORDERS, None, Some(br#"{"op":"m","source":{}}"#)),
        Err(DecodeError::UnsupportedOp(op)) if op == "m"
    ));
    assert!(matches!(
        decode_change(&cfg, ORDERS, None, Some(br#"{"after":{"id":1}}"#)),
        Err(DecodeError::Field { field, .. }) if field == "op"
    ));
    assert!(matches!(
        decode_change(&cfg, ORDERS, None, Some(br#"{"op":"d","before":null}"#)),
        Err(DecodeError::Field { field, .. }) if field == "before"
    ));
    assert!(matches!(
        decode_change(&cfg, ORDERS, None, Some(br#"{"op":"c","after":null}"#)),
        Err(DecodeError::Field { field, .. }) if field == "after"
    ));
    assert_eq!(
        field_error(decode_after(ORDERS, r#"{"order_id":"x"}"#)),
        "after.id"
    );
    assert_eq!(
        field_error(decode_after(ORDERS, r#"{"id":1,"created_at":"soon"}"#)),
        "after.created_at"
    );
    assert_eq!(
        field_error(decode_after(ORDERS, r#"{"id":1,"created_at":1.5}"#)),
        "after.created_at"
    );
    assert_eq!(
        field_error(decode_after(ORDERS, r#"{"id":1,"order_description":[1]}"#)),
        "after.order_description"
    );
    let err = decode_after(ORDERS, r#"{"id":1,"created_at":"soon"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("after.created_at") && err.contains("soon"),
        "{err}"
    );
}

#[test]
fn schema_types_are_enforced() {
    let cfg = PipelineConfig::default();
    let mut ev = common::Event {
        connector: "mariadb",
        prefix: "outbound",
        db: "orders".into(),
        table: "order_demo".into(),
        op: "c",
        columns: vec![
            common::col("id", "int32"),
            common::logical("created_at", "int64", "io.debezium.time.MicroTimestamp"),
        ],
        before: None,
        after: Some(vec![
            ("id", "1".into()),
            ("created_at", "\"2024-05-01\"".into()),
        ]),
        ts_ms: 1,
        file: "f",
        pos: 1,
        snapshot: "false",
    };
    let bad = decode_change(&cfg, ORDERS, None, Some(ev.to_json(true).as_bytes()));
    assert!(matches!(bad, Err(DecodeError::Field { field, .. }) if field == "after.created_at"));
    // Without the schema the same text reads as an ISO date.
    assert!(decode_change(&cfg, ORDERS, None, Some(ev.to_json(false).as_bytes())).is_ok());
    ev.columns[1] = common::ColumnDef {
        name: "order_value",
        connect: "bytes",
        logical: Some("org.apache.kafka.connect.data.Decimal"),
        params: Some(r#"{"scale":"2"}"#),
    };
    ev.after = Some(vec![("id", "1".into()), ("order_value", "\"%%%\"".into())]);
    let bad = decode_change(&cfg, ORDERS, None, Some(ev.to_json(true).as_bytes()));
    assert!(matches!(bad, Err(DecodeError::Field { field, .. }) if field == "after.order_value"));
    ev.columns[1].params = None;
    let bad = decode_change(&cfg, ORDERS, None, Some(ev.to_json(true).as_bytes()));
    assert!(matches!(bad, Err(DecodeError::Schema(_))));
}

#[test]
fn schema_change_on_a_topic_is_picked_up() {
    let cfg = PipelineConfig::default();
    let mut decoder = Decoder::default();
    let mut ev = common::Event {
        connector: "mysql",
        prefix: "outbound",
        db: "orders".into(),
        table: "order_demo".into(),
        op: "c",
        columns: vec![
            common::col("id", "int32"),
            common::logical("created_at", "int64", "io.debezium.time.Timestamp"),
        ],
        before: None,
        after: Some(vec![("id", "1".into()), ("created_at", "1000".into())]),
        ts_ms: 1,
        file: "f",
        pos: 1,
        snapshot: "false",
    };
    let first = decoder
        .decode(&cfg, ORDERS, None, Some(ev.to_json(true).as_bytes()))
        .unwrap()
        .unwrap();
    let Some(Row::Order(o)) = first.after else {
        panic!()
    };
    assert_eq!(o.created_at, Some(Timestamp(1_000_000)));
    // DDL: the column becomes DATETIME(6), now a MicroTimestamp.
    ev.columns[1] = common::logical("created_at", "int64", "io.debezium.time.MicroTimestamp");
    let second = decoder
        .decode(&cfg, ORDERS, None, Some(ev.to_json(true).as_bytes()))
        .unwrap()
        .unwrap();
    let Some(Row::Order(o)) = second.after else {
        panic!()
    };
    assert_eq!(o.created_at, Some(Timestamp(1000)));
}

#[test]
fn extra_warehouse_topics_decode_as_items_from_their_database() {
    let cfg = PipelineConfig {
        extra_item_topics: vec!["outbound.wms2.wms_demo".into()],
        ..PipelineConfig::default()
    };
    let json = r#"{"before":null,"after":{"id":1,"order_id":null},"source":{"db":"wms2","ts_ms":5},"op":"c"}"#;
    let e = decode_change(&cfg, "outbound.wms2.wms_demo", None, Some(json.as_bytes()))
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.table, e.source.db.as_str()),
        (SourceTable::Items, "wms2")
    );
    let keyed = rekey(&e, 0);
    assert!(
        matches!(&keyed[0].0, Route::Orphan(_)),
        "null order_id: orphan route"
    );
    assert!(keyed[0]
        .0
        .partition_key()
        .unwrap()
        .starts_with(b"\0orphan\0"));
    // Without a source block the database comes from the topic name.
    let json = r#"{"after":{"id":1},"op":"r"}"#;
    let e = decode_change(&cfg, "outbound.wms2.wms_demo", None, Some(json.as_bytes()))
        .unwrap()
        .unwrap();
    assert_eq!(e.source.db, "wms2");
}

#[test]
fn envelope_shapes_read_in_one_pass() {
    let config = PipelineConfig::default();
    let topic = "outbound.wms.wms_demo";
    let decode = |json: &str| decode_change(&config, topic, None, Some(json.as_bytes()));
    // An image that is not an object is malformed; a truncate ignores its images.
    assert!(matches!(
        decode(r#"{"before":null,"after":"x","op":"c","source":{"db":"wms"}}"#),
        Err(DecodeError::Json(_))
    ));
    let t = decode(r#"{"before":null,"after":[1],"op":"t","source":{"db":"wms"}}"#)
        .unwrap()
        .unwrap();
    assert!(t.after.is_none());
    // A duplicate envelope field is malformed, as serde's derive reads it.
    assert!(matches!(
        decode(r#"{"op":"c","op":"d","after":{"id":1},"source":null}"#),
        Err(DecodeError::Json(_))
    ));
    // A null source falls back to the topic's database; a null snapshot is absent.
    let e = decode(r#"{"after":{"id":"7","order_id":"A"},"op":"r","source":null}"#)
        .unwrap()
        .unwrap();
    assert_eq!(e.source.db, "wms");
    let e = decode(
        r#"{"after":{"id":7},"op":"r","source":{"db":"w\u0032","snapshot":null,"file":""}}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (e.source.db.as_str(), e.source.snapshot, e.source.file),
        ("w2", None, None)
    );
}
