//! The local Kafka broker supports transactions for real: a transactional
//! producer commits and aborts, a `read_committed` consumer sees only the
//! committed records (a `read_uncommitted` one sees the aborted ones too), and
//! a second producer with the same transactional id fences the first.
//!
//! Needs the stack's Kafka up (`stack/stack.sh up kafka`). Every run uses
//! fresh topic names and transactional ids. Conditions are polled with
//! generous deadlines, never fixed sleeps.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const DEADLINE: Duration = Duration::from_secs(120);
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// The stack's Kafka: OUTBOUND_KAFKA_BOOTSTRAP, else 127.0.0.1:OUTBOUND_KAFKA_PORT (9092).
fn bootstrap() -> String {
    std::env::var("OUTBOUND_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        format!(
            "127.0.0.1:{}",
            std::env::var("OUTBOUND_KAFKA_PORT").unwrap_or_else(|_| "9092".into())
        )
    })
}

fn run_token(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("it-{tag}-{}-{nanos}", std::process::id())
}

async fn create_topic(name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("create an admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(name, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .unwrap_or_else(|e| panic!("create topic {name} (is Kafka up on {}?): {e}", bootstrap()));
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

fn transactional_producer(txn_id: &str) -> ThreadedProducer<DefaultProducerContext> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", txn_id)
        .set("enable.idempotence", "true")
        .set("transaction.timeout.ms", "60000")
        .create()
        .expect("create a transactional producer");
    producer
        .init_transactions(TXN_TIMEOUT)
        .expect("init_transactions (transaction state log available?)");
    producer
}

fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, value: &str) {
    producer
        .send(BaseRecord::to(topic).key(value).payload(value))
        .map_err(|(e, _)| e)
        .expect("enqueue a record");
}

/// Reads `topic` from the beginning with `isolation` until a record with
/// value `last` arrives; returns every value read, in order.
async fn read_until(topic: &str, isolation: &str, last: &str) -> Vec<String> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", run_token("txn-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("create a consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).expect("assign");
    let start = Instant::now();
    let mut values = Vec::new();
    while values.last().map(String::as_str) != Some(last) {
        let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_else(|| {
            panic!("timed out after {DEADLINE:?} reading {topic} ({isolation}) for {last:?}; read so far: {values:?}")
        });
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(m)) => {
                values.push(String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap())
            }
            Ok(Err(e)) => panic!("consuming {topic}: {e}"),
            Err(_) => continue,
        }
    }
    values
}

#[tokio::test]
async fn read_committed_sees_only_committed_transactions() {
    let topic = run_token("txn");
    create_topic(&topic).await;
    let producer = transactional_producer(&run_token("txn-producer"));

    producer.begin_transaction().unwrap();
    send(&producer, &topic, "committed-1");
    send(&producer, &topic, "committed-2");
    producer
        .commit_transaction(TXN_TIMEOUT)
        .expect("commit the first transaction");

    producer.begin_transaction().unwrap();
    send(&producer, &topic, "aborted-1");
    send(&producer, &topic, "aborted-2");
    producer
        .flush(TXN_TIMEOUT)
        .expect("flush the aborted records to the broker");
    producer
        .abort_transaction(TXN_TIMEOUT)
        .expect("abort the second transaction");

    producer.begin_transaction().unwrap();
    send(&producer, &topic, "committed-3");
    producer
        .commit_transaction(TXN_TIMEOUT)
        .expect("commit the third transaction");

    let committed = read_until(&topic, "read_committed", "committed-3").await;
    assert_eq!(committed, ["committed-1", "committed-2", "committed-3"]);

    // The aborted records did reach the log: only the isolation level hides them.
    let everything = read_until(&topic, "read_uncommitted", "committed-3").await;
    assert_eq!(
        everything,
        [
            "committed-1",
            "committed-2",
            "aborted-1",
            "aborted-2",
            "committed-3"
        ]
    );
}

#[tokio::test]
async fn a_new_producer_with_the_same_transactional_id_fences_the_old_one() {
    let topic = run_token("fence");
    create_topic(&topic).await;
    let txn_id = run_token("fence-producer");

    let zombie = transactional_producer(&txn_id);
    zombie.begin_transaction().unwrap();
    send(&zombie, &topic, "zombie");
    zombie.flush(TXN_TIMEOUT).unwrap();

    // The successor's init_transactions aborts the zombie's open transaction
    // and bumps the epoch.
    let successor = transactional_producer(&txn_id);
    successor.begin_transaction().unwrap();
    send(&successor, &topic, "successor");
    successor
        .commit_transaction(TXN_TIMEOUT)
        .expect("the successor commits");

    let zombie_commit = zombie.commit_transaction(TXN_TIMEOUT);
    match zombie_commit {
        Err(KafkaError::Transaction(e)) => assert!(
            e.is_fatal() || e.txn_requires_abort(),
            "the zombie's commit fails with a fencing error: {e}"
        ),
        other => panic!("the fenced producer must not commit, got {other:?}"),
    }

    let committed = read_until(&topic, "read_committed", "successor").await;
    assert_eq!(
        committed,
        ["successor"],
        "the zombie's records are never visible"
    );
}
