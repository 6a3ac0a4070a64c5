//! The engine's state on the edge paths, against the real local broker:
//! a checkpoint that compaction has made stale (its task comes back after
//! another instance deleted rows and the tombstones were compacted away), a
//! restore whose changelog end is held back by a transaction in doubt, and
//! one order with 30 000 items.

mod common;

use std::time::Duration;

use common::engine::{Scenario, DEADLINE, PARTITIONS};
use common::history::{Generator, History, Table};
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::json;

/// Waits until every source record has been consumed by the app's group.
fn wait_consumed(s: &Scenario, what: &str, timeout: Duration, logs: &[&Outbound]) {
    wait_for(what, timeout, || {
        group_caught_up(&s.prefix, &s.source_topics()).map_err(|e| {
            let tail: String = logs.iter().map(|o| o.log_tail(3) + "\n").collect();
            format!("{e}\n{tail}")
        })
    });
}

/// An order with `items` items, each shipped by one of `shipments`.
fn order_with_items(
    g: &mut Generator,
    order_id: &str,
    items: usize,
    shipments: usize,
) -> (i64, Vec<i64>, Vec<i64>) {
    let mut order = g.new_row(Table::Orders);
    order.insert("order_id", json!(order_id));
    order.insert("order_value", json!("Rs 1000"));
    let oid = g.insert(Table::Orders, order);
    let mut ship_ids = Vec::new();
    for _ in 0..shipments {
        let mut s = g.new_row(Table::Shipments);
        s.insert("order_id", json!(order_id));
        s.insert("wmsrecord_id", json!(null));
        s.insert("created_at", json!(1_714_560_000_000_000_i64));
        s.insert("shipment_cost", json!("Rs 40"));
        ship_ids.push(g.insert(Table::Shipments, s));
    }
    let mut item_ids = Vec::new();
    for i in 0..items {
        let mut it = g.new_row(Table::Items);
        it.insert("order_id", json!(order_id));
        it.insert("item_qty", json!("1"));
        it.insert(
            "shipment_id",
            json!(ship_ids[i % shipments.max(1)].to_string()),
        );
        item_ids.push(g.insert(Table::Items, it));
    }
    (oid, item_ids, ship_ids)
}

/// A record's key and value (`None`: a tombstone).
type KeyValue = (Vec<u8>, Option<Vec<u8>>);

/// Records of `topic` from its start, read_committed.
fn read_all(topic: &str) -> Result<Vec<KeyValue>, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("read-all"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for p in 0..PARTITIONS {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(|e| e.to_string())?;
            ends.insert(p, high);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().map(<[u8]>::to_vec),
            ));
        }
        let pos = consumer.position().map_err(|e| e.to_string())?;
        let done = pos.elements().iter().all(|e| match e.offset() {
            Offset::Offset(o) => ends.get(&e.partition()).is_none_or(|end| o >= *end),
            _ => false,
        });
        if done {
            return Ok(out);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{topic} not read to its end"));
        }
    }
}

#[test]
fn a_task_back_after_its_deletes_were_compacted_away_restores_in_full() {
    let s = Scenario::with_sources("engine-compacted", 2, |_| History::default());
    // Changelogs that drop tombstones a second after they are cleaned.
    let fast = [
        ("cleanup.policy", "compact"),
        ("delete.retention.ms", "1000"),
        ("segment.ms", "1000"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("min.compaction.lag.ms", "0"),
        ("max.compaction.lag.ms", "1000"),
    ];
    for stage in ["join", "details", "aggregate"] {
        create_topic(
            &format!("{}-{stage}-changelog", s.prefix),
            PARTITIONS,
            &fast,
        );
    }
    let producer = producer();
    let mut g = Generator::new(5, &s.prefix, 1);
    let mut orders = Vec::new();
    for n in 0..60 {
        orders.push((
            format!("ORD-{n}"),
            order_with_items(&mut g, &format!("ORD-{n}"), 2, 1),
        ));
    }
    produce(&producer, &s.prefix, &g.take_records());
    let (state_a, state_b) = (s.state("a"), s.state("b"));
    let mut a = Outbound::start(&s.spec("a", &state_a), 0);
    s.assert_outputs_converge_to(&g.history(), &[&a]);
    a.stop_cleanly();

    // The tasks move to b, which deletes half the orders, every row of them.
    let mut b = Outbound::start(&s.spec("b", &state_b), 0);
    let (gone, kept) = orders.split_at(30);
    for (_, (oid, items, ships)) in gone {
        for id in items {
            g.delete(Table::Items, *id);
        }
        for id in ships {
            g.delete(Table::Shipments, *id);
        }
        g.delete(Table::Orders, *oid);
    }
    produce(&producer, &s.prefix, &g.take_records());
    s.assert_outputs_converge_to(&g.history(), &[&b]);
    // Compaction drops the tombstones; changes to the other orders keep
    // rolling segments over so the cleaner has work.
    let join_changelog = format!("{}-join-changelog", s.prefix);
    let mut round = 0;
    wait_for(
        "the join changelog's tombstones to be compacted away",
        Duration::from_secs(240),
        || {
            round += 1;
            for (_, (oid, _, _)) in kept {
                g.update(Table::Orders, *oid, |r| {
                    r.insert("order_description", json!(format!("round {round}")));
                });
            }
            produce(&producer, &s.prefix, &g.take_records());
            let records = read_all(&join_changelog)?;
            let tombstones = records.iter().filter(|(_, v)| v.is_none()).count();
            if tombstones == 0 && round > 1 {
                Ok(())
            } else {
                Err(format!(
                    "{tombstones} tombstones among {} records",
                    records.len()
                ))
            }
        },
    );
    s.assert_outputs_converge_to(&g.history(), &[&b]);
    b.stop_cleanly();

    // Back to a, whose stores last saw the deleted orders. New items of the
    // deleted orders must join nothing of what was deleted.
    let mut a = Outbound::start(&s.spec("a", &state_a), 1);
    for (order_id, _) in gone {
        let mut it = g.new_row(Table::Items);
        it.insert("order_id", json!(order_id));
        it.insert("shipment_id", json!(null));
        g.insert(Table::Items, it);
    }
    produce(&producer, &s.prefix, &g.take_records());
    s.assert_outputs_converge_to(&g.history(), &[&a]);
    a.stop_cleanly();
}

#[test]
fn a_checkpoint_past_the_stable_end_waits_for_the_transaction_instead_of_wiping() {
    let s = Scenario::with_sources("engine-unstable", 2, |_| History::default());
    let producer = producer();
    let mut g = Generator::new(9, &s.prefix, 400);
    for _ in 0..3000 {
        g.step();
    }
    produce(&producer, &s.prefix, &g.take_records());
    let state = s.state("a");
    let mut a = Outbound::start(&s.spec("a", &state), 0);
    s.assert_outputs_converge_to(&g.history(), &[&a]);

    // A transaction of another producer, left open on every join changelog
    // partition, holds their stable end (what read_committed sees) back.
    let foreign: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", format!("{}-foreign", s.prefix))
        .set("transaction.timeout.ms", "45000")
        .create()
        .expect("foreign producer");
    foreign
        .init_transactions(Duration::from_secs(30))
        .expect("init");
    foreign.begin_transaction().expect("begin");
    let changelog = format!("{}-join-changelog", s.prefix);
    for p in 0..PARTITIONS {
        foreign
            .send(
                BaseRecord::<[u8], [u8]>::to(&changelog)
                    .partition(p)
                    .key(&[0xff, 0][..])
                    .payload(&b"in doubt"[..]),
            )
            .expect("send");
    }
    foreign.flush(Duration::from_secs(30)).expect("flush");

    // More changes: the instance's checkpoints move past that stable end.
    for _ in 0..2000 {
        g.step();
    }
    produce(&producer, &s.prefix, &g.take_records());
    s.assert_outputs_converge_to(&g.history(), &[&a]);
    a.stop_cleanly();

    // A restart while the transaction is open: the stores must catch up,
    // not start over from the (held back) end.
    let mut a = Outbound::start(&s.spec("a", &state), 1);
    for _ in 0..2000 {
        g.step();
    }
    produce(&producer, &s.prefix, &g.take_records());
    s.assert_outputs_converge_to(&g.history(), &[&a]);
    a.stop_cleanly();
    let log = a.log_text();
    assert!(
        !log.contains("full restore"),
        "no store was rebuilt:\n{}",
        a.log_tail(30)
    );
    drop(foreign);
}

#[test]
fn an_order_with_thirty_thousand_items_is_updated_and_moved() {
    let s = Scenario::with_sources("engine-big-order", 2, |_| History::default());
    let producer = producer();
    let mut g = Generator::new(13, &s.prefix, 50);
    for _ in 0..500 {
        g.step();
    }
    let (big, items, _) = order_with_items(&mut g, "ORD-B2B", 30_000, 300);
    produce(&producer, &s.prefix, &g.take_records());
    let (state_a, state_b) = (s.state("a"), s.state("b"));
    let mut a = Outbound::start(&s.spec("a", &state_a), 0);
    wait_consumed(&s, "the big order to be consumed", DEADLINE, &[&a]);
    s.assert_outputs_converge_to(&g.history(), &[&a]);

    // Updated: every item's document changes. Moved: 2 000 items go to
    // another order.
    g.update(Table::Orders, big, |r| {
        r.insert("order_value", json!("Rs 123456"));
    });
    for id in &items[..2000] {
        g.update(Table::Items, *id, |r| {
            r.insert("order_id", json!("ORD-OTHER"));
        });
    }
    produce(&producer, &s.prefix, &g.take_records());
    s.assert_outputs_converge_to(&g.history(), &[&a]);
    a.stop_cleanly();

    // The order's task moves to an instance without local state.
    let mut b = Outbound::start(&s.spec("b", &state_b), 0);
    g.update(Table::Orders, big, |r| {
        r.insert("order_value", json!("Rs 7"));
    });
    produce(&producer, &s.prefix, &g.take_records());
    s.assert_outputs_converge_to(&g.history(), &[&b]);
    b.stop_cleanly();
}
