//! Bad input on the wire (issue #12): garbage bytes, truncated JSON, a valid
//! envelope with an unknown op, wrong types in known columns, a 5 MB value
//! and a record without a key, produced into the source topics among the
//! Debezium snapshot of real tables. Each ends in the dead-letter topic with
//! its reason and source position and is counted in the metrics; every
//! other record is applied: `outbound reconcile` reads zero differences.
//!
//! Needs the local stack (`stack/stack.sh up`). Its tables are private
//! databases (tests/source_tables) and its topics carry their own prefix.

mod common;
mod source_tables;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::{bootstrap, unique, Outbound, RunSpec};
use outbound::config::Config;
use outbound::loadgen::Loadgen;
use outbound::reconcile::{self, Collect, Options, QuietOptions};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use source_tables::{app_db, tag, PrivateTables};

const DEADLINE: Duration = Duration::from_secs(300);
const BIG: usize = 5 * 1024 * 1024;

fn search_url() -> String {
    std::env::var("OUTBOUND_SEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

fn create_topics(names: &[String]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin");
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            NewTopic::new(n, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "8388608")
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for r in rt
        .block_on(admin.create_topics(topics.iter(), &AdminOptions::new()))
        .expect("create topics")
    {
        r.expect("topic created");
    }
}

/// One bad record: where it goes, why it is bad, its key and value.
struct Bad {
    topic: String,
    what: &'static str,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

fn bad_records(prefix: &str, t: &PrivateTables) -> Vec<Bad> {
    let (o, w, l) = (
        format!("{prefix}.{}", t.orders()),
        format!("{prefix}.{}", t.items()),
        format!("{prefix}.{}", t.shipments()),
    );
    let valid_item = |id: i64, extra: serde_json::Value| {
        let mut after = json!({"id": id, "order_id": "bad-1", "item_type": "books", "item_qty": "1", "created_at": "2024-05-01 10:00:00"});
        if let (Some(a), Some(e)) = (after.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                a.insert(k.clone(), v.clone());
            }
        }
        json!({"before": null, "after": after, "source": {"db": format!("{}_wms", t.tag), "table": "wms_demo", "ts_ms": 1}, "op": "c", "ts_ms": 1})
    };
    let truncated = valid_item(99_000_002, json!({})).to_string();
    vec![
        Bad { topic: o.clone(), what: "garbage bytes", key: Some(b"{\"id\":1}".to_vec()), value: vec![0xff, 0x00, 0x13, b'g', b'a', b'r', 0xfe] },
        Bad { topic: w.clone(), what: "truncated JSON", key: Some(b"{\"id\":99000002}".to_vec()), value: truncated.as_bytes()[..truncated.len() / 2].to_vec() },
        Bad {
            topic: l.clone(),
            what: "unknown op",
            key: Some(b"{\"id\":99000003}".to_vec()),
            value: json!({"before": null, "after": {"id": 99_000_003, "order_id": "bad-1", "courier": "X"}, "op": "z", "ts_ms": 1}).to_string().into_bytes(),
        },
        Bad {
            topic: w.clone(),
            what: "wrong type in a known column",
            key: Some(b"{\"id\":99000004}".to_vec()),
            value: valid_item(99_000_004, json!({"created_at": "the day before yesterday"})).to_string().into_bytes(),
        },
        Bad {
            topic: w.clone(),
            what: "a 5 MB value",
            key: Some(b"{\"id\":99000005}".to_vec()),
            value: valid_item(99_000_005, json!({"item_type": "x".repeat(BIG)})).to_string().into_bytes(),
        },
        Bad { topic: w, what: "a record without a key", key: None, value: valid_item(99_000_006, json!({})).to_string().into_bytes() },
    ]
}

/// A dead-letter record: its headers and the length of its value.
type DeadLetter = (BTreeMap<String, String>, usize);

/// Every committed record of the dead-letter topic.
fn dead_letters(topic: &str) -> Result<Vec<DeadLetter>, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("dlq-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("fetch.message.max.bytes", "16777216")
        .create()
        .map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut eof = 0;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while eof < partitions.len() {
        if Instant::now() > deadline {
            return Err(format!("{topic} not read to its end"));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let mut h = BTreeMap::new();
                if let Some(headers) = m.headers() {
                    for x in headers.iter() {
                        h.insert(
                            x.key.to_owned(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push((h, m.payload().map_or(0, <[u8]>::len)));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => eof += 1,
            _ => {}
        }
    }
    Ok(out)
}

fn metric(port: u16, name: &str) -> Result<BTreeMap<String, f64>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .map_err(|e| e.to_string())?;
    let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect())
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_and_everything_else_is_applied() {
    let t = PrivateTables::create(&tag("bad"));
    Loadgen::new(app_db(), t.load_options(11, 150))
        .expect("loadgen")
        .run(&AtomicBool::new(false))
        .expect("load");
    let prefix = unique("bad").replace('-', "_");
    let topics: Vec<String> = [t.orders(), t.items(), t.shipments()]
        .iter()
        .map(|x| format!("{prefix}.{x}"))
        .collect();
    create_topics(&topics);

    // The snapshot with the bad records spread through it.
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("message.max.bytes", "16777216")
        .create()
        .expect("producer");
    let snapshot = t.snapshot_events(&prefix);
    let bad = bad_records(&prefix, &t);
    let every = snapshot.len() / (bad.len() + 1);
    let mut bad_iter = bad.iter();
    for (i, (topic, key, value)) in snapshot.iter().enumerate() {
        producer
            .send(BaseRecord::to(topic).key(key).payload(value))
            .expect("queue");
        if i % every == every / 2 {
            if let Some(b) = bad_iter.next() {
                let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&b.topic).payload(&b.value);
                if let Some(k) = &b.key {
                    r = r.key(k);
                }
                producer
                    .send(r)
                    .map_err(|(e, _)| e)
                    .unwrap_or_else(|e| panic!("producing {}: {e}", b.what));
            }
        }
    }
    for b in bad_iter {
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&b.topic).payload(&b.value);
        if let Some(k) = &b.key {
            r = r.key(k);
        }
        producer
            .send(r)
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("producing {}: {e}", b.what));
    }
    producer.flush(Duration::from_secs(60)).expect("flush");

    let token = unique("it-bad");
    let index_prefix = format!("{token}-");
    let port = 20_000 + (std::process::id() % 10_000) as u16;
    let listen = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = RunSpec {
        app_id: &token,
        instance: "0",
        prefix: &prefix,
        state_dir: &dir.path().join("state"),
        log_dir: &dir.path().join("logs"),
        partitions: 2,
    };
    let mut run = Outbound::start_with_env(
        &spec,
        0,
        &[
            ("OUTBOUND_SINK__IN_RUN", "true"),
            ("OUTBOUND_SINK__INDEX_PREFIX", &index_prefix),
            ("OUTBOUND_SINK__URL", &search_url()),
            ("OUTBOUND_METRICS__LISTEN", &listen),
            ("OUTBOUND_SOURCE__ORDERS_TABLE", &t.orders()),
            ("OUTBOUND_SOURCE__ITEMS_TABLE", &t.items()),
            ("OUTBOUND_SOURCE__SHIPMENTS_TABLE", &t.shipments()),
        ],
    );

    let mut config = Config {
        app_id: token.clone(),
        ..Config::default()
    };
    config.kafka.bootstrap_servers = bootstrap();
    config.source.topic_prefix = prefix.clone();
    t.configure(&mut config);
    config.sink.url = search_url();
    config.sink.index_prefix = Some(index_prefix);

    // Every valid record applied: the indices equal the tables.
    let quiet = QuietOptions {
        timeout: DEADLINE,
        settle: Duration::from_secs(3),
    };
    let started = Instant::now();
    loop {
        let mut seen = Collect::default();
        let result = reconcile::wait_and_reconcile(
            &config,
            &app_db(),
            &Options::default(),
            Some(quiet),
            &mut seen,
        );
        match result {
            Ok((_, report)) if report.differences() == 0 && report.indices[0].expected > 0 => break,
            other => {
                assert!(run.is_running(), "outbound exited: {}", run.log_tail(40));
                if started.elapsed() > DEADLINE {
                    panic!(
                        "not reconciled: {:?}; first differences: {:?}; log: {}",
                        other.map(|r| r.1),
                        &seen.differences[..seen.differences.len().min(3)],
                        run.log_tail(30)
                    );
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }

    // Each bad record in the dead-letter topic, with its reason and position.
    let dlq = config.topic("dlq");
    let letters = common::wait_for("the dead letters", DEADLINE, || {
        let l = dead_letters(&dlq)?;
        if l.len() >= bad.len() {
            Ok(l)
        } else {
            Err(format!("{} of {} dead letters: {l:?}", l.len(), bad.len()))
        }
    });
    assert_eq!(
        letters.len(),
        bad.len(),
        "exactly the bad records: {letters:?}"
    );
    for (headers, _) in &letters {
        for h in [
            "outbound.error",
            "outbound.source.topic",
            "outbound.source.partition",
            "outbound.source.offset",
        ] {
            assert!(
                headers.get(h).is_some_and(|v| !v.is_empty()),
                "header {h} missing: {headers:?}"
            );
        }
        assert!(
            topics.contains(&headers["outbound.source.topic"]),
            "{headers:?}"
        );
    }
    let positions: std::collections::BTreeSet<(String, String)> = letters
        .iter()
        .map(|(h, _)| {
            (
                h["outbound.source.topic"].clone(),
                h["outbound.source.offset"].clone(),
            )
        })
        .collect();
    assert_eq!(
        positions.len(),
        bad.len(),
        "distinct source positions: {letters:?}"
    );
    assert!(
        letters.iter().any(|(_, len)| *len >= BIG),
        "the 5 MB record is kept whole: {letters:?}"
    );

    // Counted.
    let counted = common::wait_for("dead letters counted", Duration::from_secs(60), || {
        let m = metric(port, "outbound_dead_letters_total")?;
        let n: f64 = m.values().sum();
        if n as usize >= bad.len() {
            Ok(m)
        } else {
            Err(format!("{m:?}"))
        }
    });
    assert_eq!(
        counted.values().sum::<f64>() as usize,
        bad.len(),
        "{counted:?}"
    );
    run.stop_cleanly();
}
