//! The local stack's change-data capture is real: a row inserted, updated and
//! deleted in each of the three MariaDB databases arrives on its Debezium
//! topic as `c`, `u` (with before and after images) and `d` (then a
//! tombstone), and the seed rows are on the topics from the initial snapshot.
//!
//! Needs the stack up (`stack/stack.sh up mariadb kafka connect`). Drives
//! MariaDB with the `mariadb` client over TCP as the `outbound_app` user
//! (sql/03_grants.sql). Every run uses fresh order ids, so reruns on the same
//! stack do not collide. Conditions are polled with generous deadlines.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(120);

/// The stack's Kafka: OUTBOUND_KAFKA_BOOTSTRAP, else 127.0.0.1:OUTBOUND_KAFKA_PORT (9092).
fn bootstrap() -> String {
    std::env::var("OUTBOUND_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        format!(
            "127.0.0.1:{}",
            std::env::var("OUTBOUND_KAFKA_PORT").unwrap_or_else(|_| "9092".into())
        )
    })
}

fn mariadb_port() -> String {
    std::env::var("OUTBOUND_MARIADB_PORT").unwrap_or_else(|_| "3306".into())
}

/// A token unique to this test run (and table), for order ids.
fn run_token(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("it-{tag}-{}-{nanos}", std::process::id())
}

/// Runs SQL as the application user over TCP; returns stdout (tab-separated rows).
fn sql(statements: &str) -> String {
    let out = Command::new("mariadb")
        .args([
            "--no-defaults",
            "--protocol=TCP",
            "-h",
            "127.0.0.1",
            "-P",
            &mariadb_port(),
            "-u",
            "outbound_app",
            "-poutbound",
            "--batch",
            "--skip-column-names",
            "-e",
            statements,
        ])
        .output()
        .expect("run the `mariadb` client (apt package mariadb-client)");
    assert!(
        out.status.success(),
        "mariadb failed (is the stack up? stack/stack.sh up mariadb kafka connect): {}\nSQL: {statements}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A consumer of `topic` positioned at its current end (or its beginning).
async fn consumer_at(topic: &str, from_beginning: bool) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", run_token("cdc-reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("create a Kafka consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap_or_else(|e| {
            panic!(
                "metadata for {topic} (is Kafka up on {}?): {e}",
                bootstrap()
            )
        });
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    assert!(
        !partitions.is_empty(),
        "topic {topic} does not exist: has the Debezium connector snapshotted? (stack/stack.sh status)"
    );
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let offset = if from_beginning {
            Offset::Beginning
        } else {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(30))
                .expect("fetch watermarks");
            Offset::Offset(high)
        };
        tpl.add_partition_offset(topic, p, offset).unwrap();
    }
    consumer.assign(&tpl).expect("assign partitions");
    consumer
}

/// One Debezium record: key id, and the value (None for a tombstone).
#[derive(Debug)]
struct ChangeEvent {
    key_id: i64,
    value: Option<Value>,
}

impl ChangeEvent {
    fn payload(&self) -> &Value {
        &self.value.as_ref().expect("not a tombstone")["payload"]
    }
    fn op(&self) -> Option<&str> {
        self.value
            .as_ref()
            .and_then(|v| v["payload"]["op"].as_str())
    }
}

fn decode(msg: &rdkafka::message::BorrowedMessage<'_>) -> ChangeEvent {
    let key: Value =
        serde_json::from_slice(msg.key().expect("Debezium records have keys")).unwrap();
    // JSON converter with schemas.enable=true: {"schema": ..., "payload": ...}.
    assert!(
        key.get("schema").is_some(),
        "key without the schema envelope: {key}"
    );
    let key_id = key["payload"]["id"].as_i64().expect("key payload.id");
    let value = msg
        .payload()
        .map(|p| serde_json::from_slice::<Value>(p).unwrap());
    if let Some(v) = &value {
        assert!(
            v.get("schema").is_some() && v.get("payload").is_some(),
            "value without the envelope: {v}"
        );
    }
    ChangeEvent { key_id, value }
}

/// Reads `consumer` until `done` holds for the events of `id`, or the deadline.
async fn collect_until(
    consumer: &StreamConsumer,
    what: &str,
    id: i64,
    done: impl Fn(&[ChangeEvent]) -> bool,
) -> Vec<ChangeEvent> {
    let start = Instant::now();
    let mut events = Vec::new();
    while !done(&events) {
        let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_else(|| {
            panic!("timed out after {DEADLINE:?} waiting for {what}; events for id {id} so far: {events:#?}")
        });
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(msg)) => {
                let ev = decode(&msg);
                if ev.key_id == id {
                    events.push(ev);
                }
            }
            Ok(Err(e)) => panic!("consuming {what}: {e}"),
            Err(_) => continue, // the loop reports the timeout
        }
    }
    events
}

struct Table {
    db: &'static str,
    table: &'static str,
    /// Column list and values for the insert; `{order}` is the run's order id.
    insert: &'static str,
    /// The column the update changes, its value before and after.
    column: &'static str,
    before: &'static str,
    after: &'static str,
}

async fn insert_update_delete_arrive(t: Table) {
    let topic = format!("outbound.{}.{}", t.db, t.table);
    let order = run_token(t.db);
    let consumer = consumer_at(&topic, false).await;

    let insert = t.insert.replace("{order}", &order);
    let id: i64 = sql(&format!(
        "INSERT INTO {}.{} {insert}; SELECT LAST_INSERT_ID();",
        t.db, t.table
    ))
    .trim()
    .parse()
    .expect("LAST_INSERT_ID");
    sql(&format!(
        "UPDATE {}.{} SET {} = '{}' WHERE id = {id}; DELETE FROM {}.{} WHERE id = {id};",
        t.db, t.table, t.column, t.after, t.db, t.table
    ));

    let events = collect_until(
        &consumer,
        &format!("c, u, d and a tombstone on {topic}"),
        id,
        |evs| evs.len() >= 4,
    )
    .await;
    let ops: Vec<Option<&str>> = events.iter().map(|e| e.op()).collect();
    assert_eq!(
        ops,
        [Some("c"), Some("u"), Some("d"), None],
        "ops for {topic} id {id}: {events:#?}"
    );

    let (c, u, d) = (
        events[0].payload(),
        events[1].payload(),
        events[2].payload(),
    );
    for p in [c, u, d] {
        assert_eq!(p["source"]["db"], t.db, "source.db: {p}");
        assert_eq!(p["source"]["table"], t.table, "source.table: {p}");
        assert_eq!(p["source"]["connector"], "mariadb", "source.connector: {p}");
    }
    assert!(c["before"].is_null(), "insert has no before image: {c}");
    assert_eq!(c["after"]["id"], id);
    assert_eq!(c["after"]["order_id"], order.as_str());
    assert_eq!(c["after"][t.column], t.before);

    assert_eq!(
        u["before"]["order_id"],
        order.as_str(),
        "update carries the full before image: {u}"
    );
    assert_eq!(u["before"][t.column], t.before, "update before image: {u}");
    assert_eq!(u["after"][t.column], t.after, "update after image: {u}");
    assert_eq!(u["after"]["order_id"], order.as_str());

    assert_eq!(
        d["before"]["id"], id,
        "delete carries the before image: {d}"
    );
    assert_eq!(d["before"][t.column], t.after);
    assert!(d["after"].is_null(), "delete has no after image: {d}");
    assert!(events[3].value.is_none(), "a tombstone follows the delete");
}

#[tokio::test]
async fn order_demo_insert_update_delete_arrive_as_c_u_d() {
    insert_update_delete_arrive(Table {
        db: "orders",
        table: "order_demo",
        insert: "(order_id, order_date, order_description, order_value, customer_address, created_at) \
                 VALUES ('{order}', NOW(6), 'Apple Iphone X Black-64 GB', 'Rs 52755', 'No 1, Bangalore', NOW(6))",
        column: "order_description",
        before: "Apple Iphone X Black-64 GB",
        after: "Apple Iphone X Black-128 GB",
    })
    .await;
}

#[tokio::test]
async fn wms_demo_insert_update_delete_arrive_as_c_u_d() {
    insert_update_delete_arrive(Table {
        db: "wms",
        table: "wms_demo",
        insert:
            "(order_id, item_type, courier, item_qty, item_localtion, shipment_id, created_at) \
                 VALUES ('{order}', 'electronics', 'DHL', '1', 'RACK12BA3', '2', NOW(6))",
        column: "item_qty",
        before: "1",
        after: "2",
    })
    .await;
}

#[tokio::test]
async fn logistics_demo_insert_update_delete_arrive_as_c_u_d() {
    insert_update_delete_arrive(Table {
        db: "logistics",
        table: "logistics_demo",
        insert: "(wmsrecord_id, item_type, shipment_cost, created_at, courier, order_id) \
                 VALUES ('1', NULL, '24.5', NOW(6), 'FETCHR', '{order}')",
        column: "shipment_cost",
        before: "24.5",
        after: "25.5",
    })
    .await;
}

/// The seed rows (sql/02_seed.sql) are on the topics, from the initial
/// snapshot (`r`), with the original's quirks: VARCHAR money and quantities,
/// DATETIME(6) as io.debezium.time.MicroTimestamp, the zero date as null.
#[tokio::test]
async fn seed_rows_are_on_their_topics() {
    let cases = [
        ("outbound.orders.order_demo", 1, "order_value", "Rs 52755"),
        ("outbound.wms.wms_demo", 1, "item_type", "electronics"),
        (
            "outbound.logistics.logistics_demo",
            2,
            "shipment_cost",
            "24.5",
        ),
    ];
    for (topic, id, column, value) in cases {
        let consumer = consumer_at(topic, true).await;
        let events = collect_until(&consumer, &format!("seed row {id} on {topic}"), id, |evs| {
            evs.iter().any(|e| matches!(e.op(), Some("r") | Some("c")))
        })
        .await;
        let seed = events
            .iter()
            .find(|e| matches!(e.op(), Some("r") | Some("c")))
            .unwrap();
        let p = seed.payload();
        assert_eq!(p["after"]["order_id"], "1", "{topic}: {p}");
        assert_eq!(p["after"][column], value, "{topic}: {p}");
        assert!(
            p["after"]["created_at"].is_i64(),
            "created_at as epoch micros: {p}"
        );

        let fields = &seed.value.as_ref().unwrap()["schema"]["fields"];
        let after = fields
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field"] == "after")
            .unwrap();
        let created = after["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field"] == "created_at")
            .unwrap();
        assert_eq!(
            created["name"], "io.debezium.time.MicroTimestamp",
            "{topic}: {created}"
        );

        if topic == "outbound.logistics.logistics_demo" {
            assert!(
                p["after"]["item_type"].is_null(),
                "zero date arrives as null: {p}"
            );
            assert_eq!(p["after"]["courier"], "FETCHR");
        }
    }
}
