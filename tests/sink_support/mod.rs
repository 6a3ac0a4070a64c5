//! Shared helpers of the sink's integration tests (`tests/sink_*.rs`): unique
//! names per run, topics on the local Kafka, transactional producing, the
//! search node over HTTP, running the sink on its own thread, and polling
//! with generous deadlines (never fixed sleeps).
//!
//! Needs the local stack (`stack/stack.sh up kafka opensearch`). Overrides:
//! OUTBOUND_KAFKA_BOOTSTRAP, OUTBOUND_SEARCH_URL.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use outbound::config::Config;
use outbound::metrics::Metrics;
use outbound::shutdown::Shutdown;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(180);

pub fn bootstrap() -> String {
    std::env::var("OUTBOUND_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn search_url() -> String {
    std::env::var("OUTBOUND_SEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

/// A lowercase name unique to this run (index names must be lowercase).
pub fn run_token(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "it-{tag}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// A configuration for one test run: its own app id (topics, sink group)
/// and index prefix, fast batching so small tests finish quickly.
pub fn test_config(token: &str) -> Config {
    let mut c = Config {
        app_id: token.to_owned(),
        ..Config::default()
    };
    c.kafka.bootstrap_servers = bootstrap();
    c.kafka.partitions = 3;
    c.sink.url = search_url();
    c.sink.index_prefix = Some(format!("{token}-"));
    c.sink.batch_timeout_ms = 50;
    c.sink.batch_max_docs = 50;
    c.sink.retry_initial_backoff_ms = 100;
    c.sink.retry_max_backoff_ms = 2_000;
    c
}

/// Polls `f` until it returns Some, or panics with `what` after the deadline.
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("an admin client")
}

pub fn create_topics(names: &[&str], partitions: i32) {
    runtime().block_on(async {
        let admin = admin();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
            .collect();
        let results = admin
            .create_topics(
                &topics,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create topics {names:?} (is Kafka up on {}?): {e}",
                    bootstrap()
                )
            });
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
    });
}

/// Partition of a key as the engine assigns it is irrelevant to the sink;
/// tests pin each key to a partition by a stable hash so a key's offsets grow.
pub fn partition_of(key: &str, partitions: i32) -> i32 {
    let h = key
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    (h % partitions as u32) as i32
}

/// A transactional producer like the engine's.
pub struct TxnProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl TxnProducer {
    pub fn new(txn_id: &str) -> Self {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("transactional.id", txn_id)
            .set("enable.idempotence", "true")
            .set("transaction.timeout.ms", "60000")
            .create()
            .expect("create a transactional producer");
        producer
            .init_transactions(Duration::from_secs(60))
            .expect("init_transactions");
        Self { producer }
    }

    /// Sends records (topic, partition, key, value or tombstone) in one
    /// transaction, committed or aborted.
    pub fn send(&self, records: &[(String, i32, String, Option<String>)], commit: bool) {
        self.producer
            .begin_transaction()
            .expect("begin_transaction");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        for (topic, partition, key, value) in records {
            let mut r: BaseRecord<'_, str, str> = BaseRecord::to(topic)
                .partition(*partition)
                .key(key.as_str())
                .timestamp(now);
            if let Some(v) = value {
                r = r.payload(v.as_str());
            }
            let mut r = Some(r);
            while let Some(rec) = r.take() {
                if let Err((e, rec)) = self.producer.send(rec) {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "send to {topic}: {e}"
                    );
                    self.producer.poll(Duration::from_millis(50));
                    r = Some(rec);
                }
            }
        }
        if commit {
            self.producer
                .commit_transaction(Duration::from_secs(60))
                .expect("commit_transaction");
        } else {
            self.producer
                .abort_transaction(Duration::from_secs(60))
                .expect("abort_transaction");
        }
    }
}

/// High watermarks (end offsets) of a topic's partitions.
pub fn end_offsets(topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            let (_, high) = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p, high)
        })
        .collect()
}

/// The offsets a group has committed for a topic's partitions (-1 = none).
pub fn committed(group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| {
            let o = match got.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            };
            (p, o)
        })
        .collect()
}

/// Waits until the group has committed, on every partition, past the last
/// committed record (a transactional partition ends with a commit marker,
/// which a consumer never receives: the committed offset is the marker's).
pub fn wait_committed_to_end(group: &str, topics: &[&str], partitions: i32) {
    for topic in topics {
        let mut want: BTreeMap<i32, i64> = BTreeMap::new();
        for (p, offset, _, _) in read_committed_records(topic, partitions) {
            want.insert(p, offset + 1);
        }
        wait_for(
            &format!("group {group} to commit {topic} up to {want:?}"),
            DEADLINE,
            || {
                let c = committed(group, topic, partitions);
                want.iter()
                    .all(|(p, o)| c.get(p).copied().unwrap_or(-1) >= *o)
                    .then_some(())
            },
        );
    }
}

/// Resets a (stopped) group's offsets of the topics to the beginning.
pub fn reset_group_to_beginning(group: &str, topics: &[&str], partitions: i32) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..partitions {
            tpl.add_partition_offset(t, p, Offset::Offset(0)).unwrap();
        }
    }
    c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("reset group offsets");
}

/// A sink running on its own thread.
pub struct RunningSink {
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
    handle: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl RunningSink {
    /// The sink as `outbound run` starts it: restarted after any error.
    pub fn start(config: &Config) -> Self {
        Self::spawn(
            |c, m, s| outbound::sink::spawn(c, m, s).expect("spawn sink"),
            config,
        )
    }

    /// One run of the sink (no restarts): for tests that expect it to stop
    /// with an error and read that error.
    pub fn start_once(config: &Config) -> Self {
        Self::spawn(
            |c, m, s| {
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .expect("runtime")
                        .block_on(outbound::sink::run(c, m, s))
                })
            },
            config,
        )
    }

    fn spawn(
        start: impl FnOnce(
            Config,
            Arc<Metrics>,
            Shutdown,
        ) -> std::thread::JoinHandle<anyhow::Result<()>>,
        config: &Config,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        let shutdown = Shutdown::new();
        let handle = start(config.clone(), metrics.clone(), shutdown.clone());
        Self {
            metrics,
            shutdown,
            handle: Some(handle),
        }
    }

    pub fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    pub fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(h) = self.handle.take() {
            h.join()
                .expect("sink thread panicked")
                .expect("sink ended with an error");
        }
    }

    /// Waits until the sink stopped by itself; its error, `{:#}`-formatted.
    pub fn wait_for_error(mut self, deadline: Duration) -> String {
        wait_for("the sink to stop with an error", deadline, || {
            (!self.is_running()).then_some(())
        });
        match self.handle.take().expect("joined once").join() {
            Ok(Ok(())) => panic!("the sink stopped without an error"),
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => panic!("the sink thread panicked"),
        }
    }

    pub fn counter(&self, name: &str, label: &str) -> u64 {
        let m = &self.metrics.sink;
        match name {
            "items" => m.items.with_label_values(&[label]).get(),
            "retries" => m.retries.with_label_values(&[label]).get(),
            "rejections" => m.rejections.with_label_values(&[label]).get(),
            "records_in" => m.records_in.with_label_values(&[label]).get(),
            other => panic!("unknown counter {other}"),
        }
    }
}

impl Drop for RunningSink {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub fn delete_topics(names: &[&str]) {
    runtime().block_on(async {
        let results = admin()
            .delete_topics(
                names,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .unwrap_or_else(|e| panic!("delete topics {names:?}: {e}"));
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("delete topic {t}: {e}"));
        }
    });
    // Deletion is asynchronous on the broker: wait until the names are free.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    wait_for(&format!("topics {names:?} to be deleted"), DEADLINE, || {
        let md = c.fetch_metadata(None, Duration::from_secs(10)).ok()?;
        (!md.topics()
            .iter()
            .any(|t| names.contains(&t.name()) && t.error().is_none()))
        .then_some(())
    });
}

/// Deletes a test's topics however the test ends.
pub struct TopicCleanup(pub Vec<String>);

impl Drop for TopicCleanup {
    fn drop(&mut self) {
        let names: Vec<&str> = self.0.iter().map(String::as_str).collect();
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(async {
                if let Ok(admin) = ClientConfig::new()
                    .set("bootstrap.servers", bootstrap())
                    .create::<AdminClient<DefaultClientContext>>()
                {
                    let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
                }
            });
        }
    }
}

/// The concrete indices an alias points to.
pub fn indices_of(alias: &str) -> Vec<String> {
    let (status, body) = es("GET", &format!("/_alias/{alias}"), None);
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "GET _alias/{alias}: {body}");
    let mut out: Vec<String> = body
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// One index setting, with defaults: e.g. `index.gc_deletes`.
pub fn index_setting(index: &str, key: &str) -> Option<String> {
    let (status, body) = es(
        "GET",
        &format!("/{index}/_settings/{key}?include_defaults=true&flat_settings=true"),
        None,
    );
    assert_eq!(status, 200, "GET {index}/_settings/{key}: {body}");
    let (_, v) = body.as_object()?.iter().next()?;
    v["settings"][key]
        .as_str()
        .or_else(|| v["defaults"][key].as_str())
        .map(str::to_owned)
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Sends a JSON request to the search node; returns (status, body).
pub fn es(method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let agent = agent();
    let url = format!("{}{}", search_url(), path);
    let result = match (method, body) {
        ("GET", None) => agent.get(&url).call(),
        ("DELETE", None) => agent.delete(&url).call(),
        ("POST", None) => agent.post(&url).send_empty(),
        ("POST", Some(b)) => agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(b.to_string()),
        ("PUT", Some(b)) => agent
            .put(&url)
            .header("Content-Type", "application/json")
            .send(b.to_string()),
        (m, _) => panic!("unsupported {m} {path}"),
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Every document of an index: id → (_version, _source).
pub fn all_docs(index: &str) -> BTreeMap<String, (i64, Value)> {
    let (status, _) = es("POST", &format!("/{index}/_refresh"), None);
    assert_eq!(status, 200, "refresh {index}");
    let (status, body) = es(
        "POST",
        &format!("/{index}/_search"),
        Some(serde_json::json!({"size": 10000, "version": true, "query": {"match_all": {}}})),
    );
    assert_eq!(status, 200, "search {index}: {body}");
    body["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["_id"].as_str().unwrap().to_owned(),
                (h["_version"].as_i64().unwrap(), h["_source"].clone()),
            )
        })
        .collect()
}

/// Deletes a run's indices and templates however the test ends.
pub struct IndexCleanup(pub String);

impl Drop for IndexCleanup {
    fn drop(&mut self) {
        if std::env::var("OUTBOUND_KEEP_TEST_INDICES").is_ok() {
            return;
        }
        let agent = agent();
        let _ = agent.delete(format!("{}/{}*", search_url(), self.0)).call();
        for name in [
            "outbound_details",
            "units_daily",
            "courier_daily",
            "warehouse_daily",
        ] {
            let _ = agent
                .delete(format!("{}/_index_template/{}{name}", search_url(), self.0))
                .call();
        }
    }
}

/// Every committed record of a topic, in offset order per partition:
/// (partition, offset, key, value).
pub fn read_committed_records(
    topic: &str,
    partitions: i32,
) -> Vec<(i32, i64, String, Option<Vec<u8>>)> {
    use rdkafka::error::KafkaError;
    use rdkafka::message::Message;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut at_end = std::collections::BTreeSet::new();
    let until = Instant::now() + DEADLINE;
    while at_end.len() < partitions as usize {
        assert!(
            Instant::now() < until,
            "reading {topic} to its end timed out"
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                out.push((
                    m.partition(),
                    m.offset(),
                    key,
                    m.payload().map(<[u8]>::to_vec),
                ));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("consuming {topic}: {e}"),
            None => {}
        }
    }
    out.sort_by_key(|r| (r.0, r.1));
    out
}

/// A small detail document, `item.item_qty` = `generation + 1` so each
/// generation of a document is told apart by its content.
pub fn item_doc(id: u32, generation: u32) -> String {
    serde_json::json!({
        "order_id": format!("o{id}"),
        "status": "shipped",
        "ship_day": "2024-05-01",
        "warehouse": format!("wh{}", id % 3),
        "courier": "DHL",
        "item": {"id": id.to_string(), "db": "wms", "item_type": "phone", "item_qty": generation + 1},
        "order": null,
        "shipment": null,
        "data_quality": [],
        "source": {"item_ts_ms": 1_714_550_400_000_i64}
    })
    .to_string()
}

/// A detail record of `item_doc` for a topic, on the key's partition.
pub fn item_record(
    topic: &str,
    partitions: i32,
    id: u32,
    generation: Option<u32>,
) -> (String, i32, String, Option<String>) {
    let key = id.to_string();
    (
        topic.to_owned(),
        partition_of(&key, partitions),
        key,
        generation.map(|g| item_doc(id, g)),
    )
}

/// A detail record of `item_doc` changed by `edit` (e.g. a value the
/// mapping refuses, padding).
pub fn item_record_with(
    topic: &str,
    partitions: i32,
    id: u32,
    edit: impl FnOnce(&mut Value),
) -> (String, i32, String, Option<String>) {
    let mut doc: Value = serde_json::from_str(&item_doc(id, 0)).expect("item_doc is JSON");
    edit(&mut doc);
    let key = id.to_string();
    (
        topic.to_owned(),
        partition_of(&key, partitions),
        key,
        Some(doc.to_string()),
    )
}

/// `item.item_qty` of every document of an index: id → quantity.
pub fn quantities(index: &str) -> BTreeMap<String, i64> {
    all_docs(index)
        .into_iter()
        .map(|(id, (_, doc))| (id, doc["item"]["item_qty"].as_i64().unwrap_or(-1)))
        .collect()
}

/// Creates a test app's two output topics (as `outbound run` does: the sink
/// waits for both) and deletes them with its sink's dead-letter topic
/// however the test ends.
pub fn output_topics(config: &Config) -> TopicCleanup {
    let (details, rollups) = (config.topic("details"), config.topic("rollups"));
    create_topics(&[&details, &rollups], config.kafka.partitions);
    TopicCleanup(vec![details, rollups, outbound::sink::dlq_topic(config)])
}

/// The library's logs in the test's output (`RUST_LOG`, default warnings).
pub fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rdkafka=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
