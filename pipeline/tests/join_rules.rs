//! The join, rollup, aggregate and resolve rules of DESIGN.md §2 on small,
//! hand-checked scenarios.

use chrono::NaiveDate;
use outbound_pipeline::aggregate::{self, RollupChange};
use outbound_pipeline::docs::{ItemStatus, RollupDoc};
use outbound_pipeline::join::{self, DetailChange, JoinOutput};
use outbound_pipeline::model::{Order, OrderItem, Row, Shipment, SourceTable, Timestamp, Version};
use outbound_pipeline::rollup::RollupKey;
use outbound_pipeline::values::{parse_money, Parsed};
use outbound_pipeline::{resolve, KeyedChange, MemStore, PipelineConfig};
use rust_decimal::Decimal;

const T0: i64 = 1_714_573_800_000_000; // 2024-05-01T14:30:00Z = 20:00 in Kolkata

fn order(id: &str, value: &str) -> Row {
    Row::Order(Order {
        id: id.into(),
        order_id: Some("A".into()),
        order_value: Parsed::from_text(value, parse_money),
        ..Order::default()
    })
}

fn item(id: &str, shipment_id: Option<&str>, qty: u64) -> OrderItem {
    OrderItem {
        id: id.into(),
        order_id: Some("A".into()),
        item_type: Some("phone".into()),
        item_qty: Parsed::Valid(qty),
        shipment_id: shipment_id.map(Into::into),
        courier: Some("item-courier".into()),
        ..OrderItem::default()
    }
}

fn shipment(id: &str, wms: Option<&str>, created: Option<i64>) -> Shipment {
    Shipment {
        id: id.into(),
        order_id: Some("A".into()),
        wmsrecord_id: wms.map(Into::into),
        shipment_cost: Parsed::Valid(parse_money("Rs 100").unwrap()),
        courier: Some("dhl".into()),
        created_at: created.map(Timestamp),
        ..Shipment::default()
    }
}

fn upsert(row: Row, version: i64) -> KeyedChange {
    let db = match row {
        Row::Order(_) => "orders",
        Row::Item(_) => "wms",
        Row::Shipment(_) => "logistics",
    };
    KeyedChange::Upsert {
        row,
        db: db.into(),
        ts_ms: version * 10,
        version: Version::from_offset(version),
    }
}

fn apply(store: &mut MemStore, change: KeyedChange) -> JoinOutput {
    join::apply(&PipelineConfig::default(), store, &change).unwrap()
}

fn last_doc(out: &JoinOutput) -> &outbound_pipeline::docs::OrderItemDoc {
    match out.details.last() {
        Some(DetailChange::Upsert { doc, .. }) => doc,
        other => panic!("expected an upsert, got {other:?}"),
    }
}

#[test]
fn greatest_order_id_wins_and_deleting_it_falls_back() {
    let mut s = MemStore::new();
    apply(&mut s, upsert(Row::Item(item("1", None, 1)), 1));
    let out = apply(&mut s, upsert(order("9", "Rs 9"), 2));
    assert_eq!(last_doc(&out).order.as_ref().unwrap().id, "9");
    let out = apply(&mut s, upsert(order("10", "Rs 10"), 3));
    assert_eq!(
        last_doc(&out).order.as_ref().unwrap().id,
        "10",
        "10 > 9 numerically"
    );
    let out = apply(&mut s, upsert(order("8", "Rs 8"), 4));
    assert!(out.details.is_empty(), "a lesser order row changes nothing");
    let del = |id: &str, version| KeyedChange::Delete {
        table: SourceTable::Orders,
        db: "orders".into(),
        order_id: Some("A".into()),
        id: id.into(),
        version: Version::from_offset(version),
    };
    let out = apply(&mut s, del("10", 5));
    assert_eq!(last_doc(&out).order.as_ref().unwrap().id, "9");
    apply(&mut s, del("9", 6));
    let out = apply(&mut s, del("8", 7));
    assert_eq!(
        last_doc(&out).order,
        None,
        "deleting the order nulls its fields"
    );
}

#[test]
fn shipment_links_by_id_then_by_wmsrecord_greatest_wins() {
    let mut s = MemStore::new();
    apply(&mut s, upsert(Row::Item(item("7", Some("50"), 2)), 1));
    let out = apply(
        &mut s,
        upsert(Row::Shipment(shipment("3", Some("7"), Some(T0))), 2),
    );
    assert_eq!(
        last_doc(&out).shipment.as_ref().unwrap().id,
        "3",
        "by wmsrecord_id: shipment_id matches none"
    );
    let out = apply(
        &mut s,
        upsert(Row::Shipment(shipment("4", Some("7"), Some(T0))), 3),
    );
    assert_eq!(
        last_doc(&out).shipment.as_ref().unwrap().id,
        "4",
        "greatest L.id"
    );
    let out = apply(
        &mut s,
        upsert(Row::Shipment(shipment("50", None, Some(T0))), 4),
    );
    let doc = last_doc(&out);
    assert_eq!(
        doc.shipment.as_ref().unwrap().id,
        "50",
        "L.id = W.shipment_id first"
    );
    assert_eq!(
        (doc.status, doc.courier.as_deref()),
        (ItemStatus::Shipped, Some("dhl"))
    );
    assert_eq!(doc.ship_day, NaiveDate::from_ymd_opt(2024, 5, 1));
    assert_eq!(doc.warehouse, "wms", "no warehouse_id: the source database");
    let out = apply(
        &mut s,
        KeyedChange::Delete {
            table: SourceTable::Shipments,
            db: "logistics".into(),
            order_id: Some("A".into()),
            id: "50".into(),
            version: Version::from_offset(5),
        },
    );
    assert_eq!(last_doc(&out).shipment.as_ref().unwrap().id, "4");
}

#[test]
fn rollup_deltas_count_distinct_shipments_and_retract_on_unlink() {
    let mut s = MemStore::new();
    let mut agg = MemStore::new();
    let feed = |out: JoinOutput, agg: &mut MemStore| -> Vec<RollupChange> {
        out.deltas
            .iter()
            .map(|d| aggregate::apply(agg, d).unwrap())
            .collect()
    };
    feed(apply(&mut s, upsert(order("1", "Rs 500"), 1)), &mut agg);
    feed(
        apply(&mut s, upsert(Row::Item(item("1", Some("9"), 2)), 2)),
        &mut agg,
    );
    feed(
        apply(&mut s, upsert(Row::Item(item("2", Some("9"), 3)), 3)),
        &mut agg,
    );
    let changes = feed(
        apply(
            &mut s,
            upsert(Row::Shipment(shipment("9", None, Some(T0))), 4),
        ),
        &mut agg,
    );
    let day = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
    let courier_id = RollupKey::CourierDaily {
        day,
        courier: Some("dhl".into()),
    }
    .doc_id();
    let doc = changes
        .iter()
        .find_map(|c| match c {
            RollupChange::Upsert {
                id,
                doc: RollupDoc::CourierDaily(d),
                ..
            } if *id == courier_id => Some(d.clone()),
            _ => None,
        })
        .expect("courier_daily upsert");
    assert_eq!(
        (
            doc.orders,
            doc.shipments,
            doc.items,
            doc.shipping_cost.as_str()
        ),
        (1, 1, 2, "100")
    );
    let wh = changes
        .iter()
        .find_map(|c| match c {
            RollupChange::Upsert {
                doc: RollupDoc::WarehouseDaily(d),
                ..
            } => Some(d.clone()),
            _ => None,
        })
        .expect("warehouse_daily upsert");
    assert_eq!(
        (wh.units, wh.order_value.as_str(), wh.shipping_cost.as_str()),
        (5, "500", "100")
    );
    // Shipment loses its created_at: no ship_day, no rollup, a data_quality entry.
    let out = apply(&mut s, upsert(Row::Shipment(shipment("9", None, None)), 5));
    let doc = last_doc(&out);
    assert_eq!(doc.ship_day, None);
    assert_eq!(doc.data_quality[0].field, "shipment.created_at");
    let changes = feed(out, &mut agg);
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert!(changes
        .iter()
        .all(|c| matches!(c, RollupChange::Delete { .. })));
    assert!(agg.is_empty(), "no counters left at zero");
}

#[test]
fn business_time_zone_moves_the_ship_day() {
    let config = PipelineConfig {
        business_tz: chrono_tz::Asia::Kolkata,
        ..PipelineConfig::default()
    };
    let mut s = MemStore::new();
    let late = T0 + 4 * 3_600_000_000; // 18:30Z = 00:00 next day in Kolkata
    join::apply(
        &config,
        &mut s,
        &upsert(Row::Item(item("1", Some("2"), 1)), 1),
    )
    .unwrap();
    let out = join::apply(
        &config,
        &mut s,
        &upsert(Row::Shipment(shipment("2", None, Some(late))), 2),
    )
    .unwrap();
    assert_eq!(last_doc(&out).ship_day, NaiveDate::from_ymd_opt(2024, 5, 2));
}

#[test]
fn warehouse_column_wins_over_source_db() {
    let mut s = MemStore::new();
    let mut it = item("1", None, 1);
    it.warehouse_id = Some("BLR-1".into());
    let out = apply(&mut s, upsert(Row::Item(it), 1));
    assert_eq!(last_doc(&out).warehouse, "BLR-1");
    assert_eq!(
        last_doc(&out).courier.as_deref(),
        Some("item-courier"),
        "unshipped: the item's courier"
    );
}

#[test]
fn orphan_items_have_documents_and_join_nothing() {
    let mut s = MemStore::new();
    let mut it = item("5", Some("1"), 1);
    it.order_id = None;
    let out = apply(&mut s, upsert(Row::Item(it.clone()), 1));
    let doc = last_doc(&out);
    assert_eq!(
        (doc.order_id.as_deref(), doc.status),
        (None, ItemStatus::Pending)
    );
    assert!(out.deltas.is_empty());
    assert!(
        apply(&mut s, upsert(Row::Item(it), 1)).is_empty(),
        "identical replay"
    );
    let out = apply(
        &mut s,
        KeyedChange::Truncate {
            table: SourceTable::Items,
            db: "wms".into(),
            version: Version::from_offset(2),
        },
    );
    assert_eq!(
        out.details,
        vec![DetailChange::Delete {
            id: "5".into(),
            version: Version::from_offset(2)
        }]
    );
}

#[test]
fn resolve_keeps_the_newest_version_and_a_move_upsert_beats_its_delete() {
    let mut s = MemStore::new();
    let doc = {
        let mut j = MemStore::new();
        last_doc(&apply(&mut j, upsert(Row::Item(item("1", None, 1)), 1))).clone()
    };
    let up = |version| DetailChange::Upsert {
        id: "1".into(),
        version: Version::from_offset(version),
        doc: Box::new(doc.clone()),
    };
    let del = |version| DetailChange::Delete {
        id: "1".into(),
        version: Version::from_offset(version),
    };
    assert!(resolve::apply(&mut s, &up(5)).unwrap().is_some());
    assert!(
        resolve::apply(&mut s, &up(3)).unwrap().is_none(),
        "stale partition's upsert"
    );
    assert!(
        resolve::apply(&mut s, &del(5)).unwrap().is_none(),
        "a move's delete loses to its upsert"
    );
    assert!(resolve::apply(&mut s, &del(6)).unwrap().is_some());
    assert!(
        resolve::apply(&mut s, &up(5)).unwrap().is_none(),
        "no resurrection"
    );
    assert!(resolve::apply(&mut s, &up(7)).unwrap().is_some());
}

#[test]
fn documents_serialise_money_as_decimal_strings_and_instants_as_rfc3339() {
    let mut s = MemStore::new();
    apply(&mut s, upsert(order("1", "₹1,234.50"), 1));
    apply(&mut s, upsert(Row::Item(item("1", Some("2"), 2)), 2));
    let out = apply(
        &mut s,
        upsert(Row::Shipment(shipment("2", None, Some(T0))), 3),
    );
    let json = serde_json::to_value(last_doc(&out)).unwrap();
    assert_eq!(json["order"]["order_value"], "1234.5");
    assert_eq!(json["order"]["currency"], "INR");
    assert_eq!(json["shipment"]["shipment_cost"], "100");
    assert_eq!(
        json["shipment"]["created_at"],
        "2024-05-01T14:30:00.000000Z"
    );
    assert_eq!(json["ship_day"], "2024-05-01");
    assert_eq!(json["status"], "shipped");
    assert_eq!(json["source"]["shipment_ts_ms"], 30);
    assert_eq!(json["item"]["item_qty"], 2);
    let d = &out.deltas[0];
    let back: outbound_pipeline::rollup::RollupDelta =
        outbound_pipeline::codec::decode(&outbound_pipeline::codec::encode(d).unwrap()).unwrap();
    assert_eq!(&back, d);
    assert!(d.measures.shipping_cost >= Decimal::ZERO);
}

#[test]
fn a_thirty_thousand_item_order_keeps_every_value_small() {
    // One B2B order, 30 000 items: no state value may grow with the order
    // (the changelog record of one would exceed the broker's limit), and
    // the order's value, its items' moves and their shipments all still
    // reach every document and rollup.
    const ITEMS: usize = 30_000;
    let config = PipelineConfig::default();
    let mut s = MemStore::new();
    let mut agg = MemStore::new();
    let mut version = 0;
    let mut next = || {
        version += 1;
        version
    };
    let feed = |out: &JoinOutput, agg: &mut MemStore| {
        for d in &out.deltas {
            aggregate::apply(agg, d).unwrap();
        }
    };
    feed(
        &apply(&mut s, upsert(order("1", "Rs 500"), next())),
        &mut agg,
    );
    for i in 0..ITEMS {
        let id = i.to_string();
        let sid = format!("s{}", i % 100);
        feed(
            &apply(&mut s, upsert(Row::Item(item(&id, Some(&sid), 1)), next())),
            &mut agg,
        );
        if i < 100 {
            feed(
                &apply(
                    &mut s,
                    upsert(Row::Shipment(shipment(&sid, None, Some(T0))), next()),
                ),
                &mut agg,
            );
        }
    }
    let largest = s.iter().map(|(k, v)| k.len() + v.len()).max().unwrap();
    assert!(largest < 2048, "largest state entry {largest} bytes");
    // The order's value changes: every item's document, and the one
    // warehouse key's order_value.
    let out = apply(&mut s, upsert(order("1", "Rs 700"), next()));
    assert_eq!(out.details.len(), ITEMS);
    assert_eq!(out.deltas.len(), 1, "{:?}", out.deltas);
    assert_eq!(out.deltas[0].measures.order_value, Decimal::new(200, 0));
    feed(&out, &mut agg);
    // A thousand items move to another order.
    for i in 0..1000 {
        let id = i.to_string();
        let d = KeyedChange::Delete {
            table: SourceTable::Items,
            db: "wms".into(),
            order_id: Some("A".into()),
            id: id.clone(),
            version: Version::from_offset(next()),
        };
        let out = apply(&mut s, d);
        assert_eq!(out.details.len(), 1);
        feed(&out, &mut agg);
        let mut moved = item(&id, None, 1);
        moved.order_id = Some("B".into());
        feed(&apply(&mut s, upsert(Row::Item(moved), next())), &mut agg);
    }
    assert_eq!(join::stored_rows(&s).unwrap(), 1 + ITEMS + 100);
    join::verify_state(&config, &mut s).unwrap();
    // The rollups count the 29 000 shipped items left, in one courier key.
    let units: Vec<_> = agg
        .iter()
        .filter(|(k, _)| k.starts_with(b"Mu"))
        .map(|(_, v)| {
            outbound_pipeline::codec::decode::<outbound_pipeline::rollup::Measures>(v).unwrap()
        })
        .collect();
    assert_eq!(units.len(), 1);
    assert_eq!((units[0].items, units[0].units), (29_000, 29_000));
}
