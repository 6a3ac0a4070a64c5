//! The engine against inputs and outputs a user meets, on the real local
//! broker: a change record too large for the internal topics, an output
//! topic that disappears (a failure that repeats until an operator acts),
//! source topics deleted and created again, and a truncate on a source topic
//! of several partitions followed by the same ids inserted again.

mod common;

use std::time::Duration;

use common::engine::{Scenario, DEADLINE};
use common::history::{Generator, History, Table};
use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewPartitions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::json;

fn admin() -> (AdminClient<DefaultClientContext>, tokio::runtime::Runtime) {
    let admin = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    (admin, rt)
}

fn big_producer() -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "5000000")
        .create()
        .expect("producer")
}

/// Every dead letter of the app: (headers as name → value).
fn dead_letters(prefix: &str) -> Result<Vec<std::collections::BTreeMap<String, String>>, String> {
    let topic = format!("{prefix}-dlq");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("dlq-read"))
        .set("isolation.level", "read_committed")
        .set("fetch.message.max.bytes", "10000000")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for p in 0..common::engine::PARTITIONS {
        let (low, high) = consumer
            .fetch_watermarks(&topic, p, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        if high > low {
            tpl.add_partition_offset(&topic, p, Offset::Offset(low))
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
            let mut h = std::collections::BTreeMap::new();
            if let Some(headers) = m.headers() {
                for header in headers.iter() {
                    h.insert(
                        header.key.to_owned(),
                        String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            h.insert(
                "value.len".into(),
                m.payload().map_or(0, <[u8]>::len).to_string(),
            );
            out.push(h);
        }
        let pos = consumer.position().map_err(|e| e.to_string())?;
        if pos.elements().iter().all(|e| match e.offset() {
            Offset::Offset(o) => ends.get(&e.partition()).is_none_or(|end| o >= *end),
            _ => false,
        }) {
            return Ok(out);
        }
        if std::time::Instant::now() > deadline {
            return Err("dead-letter topic not read to its end".into());
        }
    }
}

#[test]
fn a_record_too_large_for_the_internal_topics_is_dead_lettered_and_the_rest_goes_on() {
    let s = Scenario::with_sources("engine-too-large", 2, |_| History::default());
    // The source topic takes what Debezium sends; the app's topics have the
    // broker's default limit (1 MB).
    let orders_topic = topic_of(&s.prefix, Table::Orders);
    let (admin, rt) = admin();
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&orders_topic));
    alter = alter.set("max.message.bytes", "4194304");
    rt.block_on(admin.alter_configs([&alter], &AdminOptions::new()))
        .expect("alter")
        .into_iter()
        .for_each(|r| {
            r.expect("altered");
        });
    let producer = big_producer();
    let mut g = Generator::new(17, &s.prefix, 300);
    for _ in 0..2000 {
        g.step();
    }
    let mut huge = g.new_row(Table::Orders);
    huge.insert("order_id", json!("ORD-HUGE"));
    huge.insert("order_description", json!("x".repeat(1_500_000)));
    let huge_id = g.insert(Table::Orders, huge);
    // And changes after it, which must not wait behind it.
    for n in 0..40 {
        let mut it = g.new_row(Table::Items);
        it.insert("order_id", json!(format!("ORD-AFTER-{n}")));
        g.insert(Table::Items, it);
    }
    let records = g.take_records();
    // Expected: everything but the huge order row (dead-lettered: skipped).
    let mut expected = g.history();
    expected
        .tables
        .get_mut(&Table::Orders)
        .expect("orders")
        .remove(&huge_id);
    produce(&producer, &s.prefix, &records);
    let state = s.state("a");
    let mut a = Outbound::start_observed(&s.spec("a", &state), 0, &[]);
    s.assert_outputs_converge_to(&expected, &[&a]);
    let letters = wait_for("the huge record in the dead-letter topic", DEADLINE, || {
        let letters = dead_letters(&s.prefix)?;
        let found: Vec<_> = letters
            .into_iter()
            .filter(|h| h.get("outbound.source.topic") == Some(&orders_topic))
            // Refused before decoding (over the 1 MiB a change event may
            // have) or by the record collector (over a topic's
            // max.message.bytes): either way the reason names its size.
            .filter(|h| h.get("outbound.error").is_some_and(|e| e.contains("bytes")))
            .collect();
        if found.is_empty() {
            Err("not yet".into())
        } else {
            Ok(found)
        }
    });
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0].contains_key("outbound.source.offset"));
    assert!(
        letters[0]["value.len"].parse::<usize>().unwrap() > 1_500_000,
        "the record as it came"
    );
    let n = a
        .metric(
            "outbound_dead_letters_total",
            &["reason=\"record_too_large\""],
        )
        .expect("metric");
    assert_eq!(n, 1.0);
    a.stop_cleanly();
}

#[test]
fn a_failure_that_repeats_reports_unhealthy_and_is_ridden_out_once_fixed() {
    let s = Scenario::new("engine-unhealthy", 19, 300, 2000);
    let producer = producer();
    produce(&producer, &s.prefix, &s.history.records);
    let state = s.state("a");
    let mut a = Outbound::start_observed(&s.spec("a", &state), 0, &[]);
    s.assert_outputs_converge(&[&a]);
    a.wait_ready(DEADLINE);
    assert_eq!(a.http("/healthz").expect("healthz").0, 200);

    // The details topic disappears; the broker creates it again on first
    // use with one partition: every commit now fails the same way.
    let details = s.details_topic();
    let (admin, rt) = admin();
    rt.block_on(admin.delete_topics(&[&details], &AdminOptions::new()))
        .expect("delete")
        .into_iter()
        .for_each(|r| {
            r.expect("deleted");
        });
    let mut g = Generator::new(20, &s.prefix, 300);
    for _ in 0..500 {
        g.step();
    }
    produce(&producer, &s.prefix, &g.take_records());
    let body = wait_for(
        "/healthz to report the failing stream stages",
        DEADLINE,
        || match a.http("/healthz") {
            Ok((503, body)) => Ok(body),
            Ok((status, body)) => Err(format!("{status} {body}")),
            Err(e) => Err(e),
        },
    );
    assert!(body.contains("stream"), "{body}");
    assert!(
        a.is_running(),
        "a failure that repeats is no reason to exit"
    );
    assert_ne!(
        a.http("/readyz").expect("readyz").0,
        200,
        "not ready while nothing commits"
    );

    // An operator gives the topic its partitions back: the stages go on.
    wait_for("the topic to be there again", DEADLINE, || {
        rt.block_on(admin.create_partitions(
            [&NewPartitions::new(
                &details,
                common::engine::PARTITIONS as usize,
            )],
            &AdminOptions::new(),
        ))
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("no result")?
        .map_err(|(t, e)| format!("{t}: {e}"))
        .map(|_| ())
    });
    wait_for("/healthz to be ok again", DEADLINE, || {
        match a.http("/healthz") {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(format!("{status} {body}")),
            Err(e) => Err(e),
        }
    });
    assert!(a.is_running());
    a.stop_cleanly();
}

#[test]
fn source_topics_deleted_and_created_again_keep_documents_current() {
    let s = Scenario::with_sources("engine-recreated", 2, |_| History::default());
    let producer = producer();
    let mut g = Generator::new(23, &s.prefix, 300);
    for _ in 0..3000 {
        g.step();
    }
    produce(&producer, &s.prefix, &g.take_records());
    let state = s.state("a");
    let mut a = Outbound::start(&s.spec("a", &state), 0);
    s.assert_outputs_converge_to(&g.history(), &[&a]);

    // The connector is set up again: its topics are deleted and created
    // again (offsets start from 0) and it takes a new snapshot, then streams.
    delete_topics_with_prefix(&format!("{}.", s.prefix)).expect("delete source topics");
    create_source_topics(&s.prefix, 2);
    g.snapshot();
    for _ in 0..800 {
        g.step();
    }
    produce(&producer, &s.prefix, &g.take_records());
    s.assert_outputs_converge_to(&g.history(), &[&a]);
    a.stop_cleanly();
}

#[test]
fn a_truncate_on_a_multi_partition_topic_then_the_same_ids_again() {
    let s = Scenario::with_sources("engine-truncate", 3, |_| History::default());
    let producer = producer();
    let mut g = Generator::new(29, &s.prefix, 100);
    // Orders and shipments, then items: all item records on partition 0, so
    // its offsets run far ahead of the other partitions'.
    for _ in 0..600 {
        g.step();
    }
    let first = g.take_records();
    let to_partition = |records: Vec<common::history::SourceRecord>, items_to: Option<i32>| {
        records
            .into_iter()
            .map(|r| {
                let p = if r.table == Table::Items {
                    items_to
                } else {
                    None
                };
                (r, p)
            })
            .collect::<Vec<_>>()
    };
    produce_to(&producer, &s.prefix, &to_partition(first, Some(0)));
    let state = s.state("a");
    let mut a = Outbound::start(&s.spec("a", &state), 0);
    s.assert_outputs_converge_to(&g.history(), &[&a]);

    // TRUNCATE wms_demo (on partition 0), then the same ids inserted again,
    // on partitions 1 and 2 where offsets are still low.
    let ids: Vec<i64> = g.history().tables[&Table::Items].keys().copied().collect();
    let rows: Vec<_> = ids
        .iter()
        .map(|id| g.history().tables[&Table::Items][id].clone())
        .collect();
    g.truncate(Table::Items);
    produce_to(
        &producer,
        &s.prefix,
        &to_partition(g.take_records(), Some(0)),
    );
    for (n, row) in rows.into_iter().enumerate() {
        g.reinsert(Table::Items, row);
        let records = g.take_records();
        produce_to(
            &producer,
            &s.prefix,
            &to_partition(records, Some(1 + (n % 2) as i32)),
        );
    }
    s.assert_outputs_converge_to(&g.history(), &[&a]);
    a.stop_cleanly();
}
