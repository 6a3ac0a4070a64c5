//! The sink against the real local Kafka and search node: detail and rollup
//! records produced transactionally (as the engine writes them, with updates,
//! tombstones, an aborted transaction and two unusable records) end up in the
//! indices exactly as the topics' latest committed records say, each at
//! `_version` = its offset; the unusable ones go to the dead-letter topic;
//! offsets are committed to the end. A replay from offset 0 changes no
//! document's version or content.
//!
//! Needs `stack/stack.sh up kafka opensearch`.
#![allow(clippy::type_complexity, clippy::field_reassign_with_default)] // test code: tuples and configs built field by field read best here

mod sink_support;

use std::collections::BTreeMap;

use chrono::NaiveDate;
use outbound::pipeline::docs::{
    rollup_doc, DataQuality, ItemFields, ItemStatus, OrderFields, OrderItemDoc, ShipmentFields,
    SourceTimes,
};
use outbound::pipeline::model::Timestamp;
use outbound::pipeline::rollup::{Measures, RollupKey};
use rust_decimal::Decimal;
use serde_json::Value;
use sink_support::*;

const PARTITIONS: i32 = 3;

fn ts(rfc3339: &str) -> Timestamp {
    Timestamp(
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_micros(),
    )
}

pub fn detail_doc(id: u32, version: u32) -> OrderItemDoc {
    let shipped = !id.is_multiple_of(3);
    let day = NaiveDate::from_ymd_opt(2024, 5, 1 + (id % 4)).unwrap();
    let order_id = format!("o{}", id / 2);
    OrderItemDoc {
        order_id: Some(order_id.clone()),
        status: if shipped {
            ItemStatus::Shipped
        } else {
            ItemStatus::Pending
        },
        ship_day: shipped.then_some(day),
        warehouse: format!("wh{}", id % 2),
        courier: Some(["DHL", "FETCHR", "BlueDart"][(id % 3) as usize].into()),
        item: ItemFields {
            id: id.to_string(),
            db: "wms".into(),
            item_type: Some(["phone", "laptop", "electronics"][(id % 3) as usize].into()),
            item_qty: Some(u64::from(1 + version)),
            shipment_id: shipped.then(|| format!("s{id}")),
            courier: Some("DHL".into()),
            warehouse_id: None,
            created_at: Some(ts("2024-04-30T10:00:00.123456Z")),
            updated_at: Some(ts(&format!("2024-05-{:02}T11:00:00.000000Z", 1 + version))),
        },
        order: (!id.is_multiple_of(5)).then(|| OrderFields {
            id: order_id.clone(),
            order_value: Some(Decimal::new(100_050 + 100 * i64::from(id), 2)),
            currency: Some("INR".into()),
            order_description: Some(format!("Apple Iphone X Black-{} GB", 64 * (1 + version))),
            order_address: Some("No 1, 2nd cross, RK Puram, Bangalore".into()),
            created_at: Some(ts("2024-04-30T09:00:00.000000Z")),
            updated_at: None,
        }),
        shipment: shipped.then(|| ShipmentFields {
            id: format!("s{id}"),
            wmsrecord_id: Some(id.to_string()),
            shipment_cost: Some(Decimal::new(245, 1)),
            currency: None,
            courier: Some("FETCHR".into()),
            created_at: Some(ts(&format!("{day}T00:04:05.000000Z"))),
            updated_at: None,
        }),
        data_quality: if id.is_multiple_of(7) {
            vec![DataQuality {
                field: "order.order_value".into(),
                raw: Some("Rs abc".into()),
                problem: "unparseable".into(),
            }]
        } else {
            Vec::new()
        },
        source: SourceTimes {
            item_ts_ms: 1_714_550_400_000,
            order_ts_ms: Some(1_714_550_400_001),
            shipment_ts_ms: None,
        },
    }
}

pub fn rollup_records(version: i64) -> Vec<(String, String)> {
    let day = |d| NaiveDate::from_ymd_opt(2024, 5, d).unwrap();
    let mut out = Vec::new();
    for d in 1..=3u32 {
        for wh in ["wh0", "wh1"] {
            for t in [Some("phone"), None] {
                let key = RollupKey::UnitsDaily {
                    day: day(d),
                    warehouse: wh.into(),
                    item_type: t.map(Into::into),
                };
                let m = Measures {
                    items: 2,
                    units: 3 + version + i64::from(d),
                    ..Measures::default()
                };
                out.push((
                    key.qualified_id(),
                    serde_json::to_string(&rollup_doc(&key, &m)).unwrap(),
                ));
            }
            let key = RollupKey::WarehouseDaily {
                day: day(d),
                warehouse: wh.into(),
            };
            let m = Measures {
                items: 2,
                units: 5,
                shipping_cost: Decimal::new(2450 + version, 2),
                order_value: Decimal::new(5_275_500, 2),
                ..Measures::default()
            };
            out.push((
                key.qualified_id(),
                serde_json::to_string(&rollup_doc(&key, &m)).unwrap(),
            ));
        }
        for c in [Some("DHL"), Some("a|b/c"), None] {
            let key = RollupKey::CourierDaily {
                day: day(d),
                courier: c.map(Into::into),
            };
            let m = Measures {
                items: 1,
                orders: 1 + version,
                shipments: 1,
                shipping_cost: Decimal::new(245, 1),
                ..Measures::default()
            };
            out.push((
                key.qualified_id(),
                serde_json::to_string(&rollup_doc(&key, &m)).unwrap(),
            ));
        }
    }
    out
}

/// What the indices must hold: per alias, id → (version = offset, source),
/// from the latest committed record of each key.
fn expected(config: &outbound::config::Config) -> BTreeMap<String, BTreeMap<String, (i64, Value)>> {
    let mut latest: BTreeMap<(String, String), (i64, Option<Vec<u8>>)> = BTreeMap::new();
    for (topic, is_rollups) in [
        (config.topic("details"), false),
        (config.topic("rollups"), true),
    ] {
        for (_, offset, key, value) in read_committed_records(&topic, PARTITIONS) {
            let (alias, id) = if is_rollups {
                let (r, id) = key.split_once('/').unwrap();
                (format!("{}{r}", config.sink.prefix()), id.to_owned())
            } else {
                (config.sink.details_alias(), key)
            };
            latest.insert((alias, id), (offset, value));
        }
    }
    let mut out: BTreeMap<String, BTreeMap<String, (i64, Value)>> = BTreeMap::new();
    for alias in [
        "outbound_details",
        "units_daily",
        "courier_daily",
        "warehouse_daily",
    ] {
        out.insert(format!("{}{alias}", config.sink.prefix()), BTreeMap::new());
    }
    for ((alias, id), (offset, value)) in latest {
        let Some(v) = value else { continue };
        let doc: Value = serde_json::from_slice(&v).unwrap();
        // The two unusable records are dead-lettered, not indexed.
        if id == "bad-1" {
            continue;
        }
        // Unknown rollups are dead-lettered too.
        if let Some(docs) = out.get_mut(&alias) {
            docs.insert(id, (offset, doc));
        }
    }
    out
}

fn indexed(config: &outbound::config::Config) -> BTreeMap<String, BTreeMap<String, (i64, Value)>> {
    [
        "outbound_details",
        "units_daily",
        "courier_daily",
        "warehouse_daily",
    ]
    .iter()
    .map(|a| {
        let alias = format!("{}{a}", config.sink.prefix());
        let docs = all_docs(&alias);
        (alias, docs)
    })
    .collect()
}

#[test]
fn sink_indexes_committed_records_at_their_offsets_and_replay_changes_nothing() {
    let token = run_token("sink-index");
    let config = test_config(&token);
    let _cleanup = IndexCleanup(config.sink.prefix().to_owned());
    let details = config.topic("details");
    let rollups = config.topic("rollups");
    create_topics(&[&details, &rollups], PARTITIONS);
    let producer = TxnProducer::new(&format!("{token}-producer"));
    let rec = |topic: &str, key: String, value: Option<String>| {
        (topic.to_owned(), partition_of(&key, PARTITIONS), key, value)
    };
    let doc = |id: u32, v: u32| Some(serde_json::to_string(&detail_doc(id, v)).unwrap());

    // First generation of every document, in a few transactions.
    for chunk in (1..=60u32).collect::<Vec<_>>().chunks(20) {
        let records: Vec<_> = chunk
            .iter()
            .map(|&id| rec(&details, id.to_string(), doc(id, 0)))
            .collect();
        producer.send(&records, true);
    }
    producer.send(
        &rollup_records(0)
            .into_iter()
            .map(|(k, v)| rec(&rollups, k, Some(v)))
            .collect::<Vec<_>>(),
        true,
    );

    // An aborted transaction: must never be indexed.
    producer.send(
        &[
            rec(&details, "999".into(), doc(999, 0)),
            rec(&details, "1".into(), doc(1, 9)),
        ],
        false,
    );
    // Updates, deletes, and two unusable records.
    let mut records: Vec<_> = (1..=20u32)
        .map(|id| rec(&details, id.to_string(), doc(id, 1)))
        .collect();
    records.extend((50..=55u32).map(|id| rec(&details, id.to_string(), None)));
    let mut bad = serde_json::to_value(detail_doc(61, 0)).unwrap();
    bad["item"]["item_qty"] = Value::from("lots");
    records.push(rec(&details, "bad-1".into(), Some(bad.to_string())));
    records.push(rec(
        &rollups,
        "hourly/2024-05-01|x".into(),
        Some("{}".into()),
    ));
    let rolled = rollup_records(1);
    records.extend(
        rolled
            .iter()
            .take(5)
            .map(|(k, v)| rec(&rollups, k.clone(), Some(v.clone()))),
    );
    records.push(rec(&rollups, rolled[7].0.clone(), None));
    producer.send(&records, true);

    let sink = RunningSink::start(&config);
    let group = outbound::sink::group_id(&config);
    wait_committed_to_end(&group, &[&details, &rollups], PARTITIONS);
    let want = expected(&config);
    let got = indexed(&config);
    assert_eq!(
        want.values().map(BTreeMap::len).sum::<usize>(),
        60 - 6 + rollup_records(0).len() - 1
    );
    for (alias, docs) in &want {
        assert_eq!(
            got[alias].keys().collect::<Vec<_>>(),
            docs.keys().collect::<Vec<_>>(),
            "ids in {alias}"
        );
        for (id, (version, source)) in docs {
            let (got_version, got_source) = &got[alias][id];
            assert_eq!(got_source, source, "{alias}/{id} content");
            assert_eq!(
                got_version, version,
                "{alias}/{id} version = offset of its latest record"
            );
        }
    }
    assert!(
        !got[&config.sink.details_alias()].contains_key("999"),
        "aborted record indexed"
    );
    // The legacy alias reads the same index.
    let legacy = all_docs(&config.sink.details_legacy_alias().expect("legacy alias"));
    assert_eq!(legacy.len(), want[&config.sink.details_alias()].len());

    // Dead letters: the mapping error and the unknown rollup, with reasons.
    assert_eq!(sink.counter("rejections", "mapper_parsing_exception"), 1);
    assert_eq!(sink.counter("rejections", "unknown_rollup"), 1);
    let dlq = read_committed_records(&outbound::sink::dlq_topic(&config), config.kafka.partitions);
    let mut dlq_keys: Vec<&str> = dlq.iter().map(|r| r.2.as_str()).collect();
    dlq_keys.sort();
    assert_eq!(dlq_keys, ["bad-1", "hourly/2024-05-01|x"]);
    let first_items = sink.counter("items", "created");
    assert!(first_items > 0);
    sink.stop();

    // Replay everything from offset 0: no version or content changes.
    reset_group_to_beginning(&group, &[&details, &rollups], PARTITIONS);
    assert!(committed(&group, &details, PARTITIONS)
        .values()
        .all(|o| *o == 0));
    let replay = RunningSink::start(&config);
    wait_committed_to_end(&group, &[&details, &rollups], PARTITIONS);
    let total: u64 = want.values().map(|d| d.len() as u64).sum();
    wait_for("the replay to reach every document", DEADLINE, || {
        let acked = replay.counter("items", "updated") + replay.counter("items", "conflict");
        (acked >= total).then_some(())
    });
    // Only a deleted document can be re-created transiently (once the index
    // forgot its delete, after index.gc_deletes), and its tombstone follows.
    assert!(
        replay.counter("items", "created") <= 6,
        "a replay creates nothing that stays"
    );
    let after = indexed(&config);
    assert_eq!(after, got, "replay changed a document's version or content");
    replay.stop();
}
