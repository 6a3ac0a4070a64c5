//! Sink throughput against the local search node, compared in the same run
//! with a plain bulk loader that sends the same documents straight from
//! memory (same bulk size, same concurrency, same index templates, same
//! `external_gte` actions): documents/s of each and their ratio (target ≥ 0.9).
//!
//!   cargo bench --bench sink                       # 50 000 detail documents
//!   OUTBOUND_BENCH_DOCS=200000 cargo bench --bench sink
//!
//! The sink is timed from its first consumed record to the acknowledgement
//! of the last document (Kafka consumption, encoding, batching, bulk
//! requests, per-item acks, offset commits included); the loader from its
//! first request to its last response. Each side runs twice, alternating,
//! into fresh indices; the best run of each is compared. Needs
//! `stack/stack.sh up kafka opensearch`.
#![allow(clippy::type_complexity, clippy::field_reassign_with_default)] // test code: tuples and configs built field by field read best here

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use outbound::config::Config;
use outbound::metrics::Metrics;
use outbound::shutdown::Shutdown;
use outbound::sink::service::BulkService;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;

const PARTITIONS: i32 = 3;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn document(id: usize) -> String {
    let courier = ["DHL", "FETCHR", "BlueDart"][id % 3];
    let item_type = ["phone", "laptop", "electronics"][id % 3];
    json!({
        "order_id": format!("o{}", id / 2),
        "status": "shipped",
        "ship_day": format!("2024-05-{:02}", 1 + id % 28),
        "warehouse": format!("wh{}", id % 5),
        "courier": courier,
        "item": {
            "id": id.to_string(), "db": "wms", "item_type": item_type,
            "item_qty": 1 + id % 4, "shipment_id": format!("s{id}"), "courier": "DHL", "warehouse_id": null,
            "created_at": "2024-04-30T10:00:00.123456Z", "updated_at": "2024-05-01T11:00:00.000000Z"
        },
        "order": {
            "id": format!("o{}", id / 2), "order_value": format!("{}.50", 1000 + id % 90000), "currency": "INR",
            "order_description": "Apple Iphone X Black-64 GB", "order_address": "Jotaro Kujo, No 1, 2nd cross, RK Puram, Bangalore -5600103",
            "created_at": "2024-04-30T09:00:00.000000Z", "updated_at": null
        },
        "shipment": {
            "id": format!("s{id}"), "wmsrecord_id": id.to_string(), "shipment_cost": "24.5", "currency": null,
            "courier": "FETCHR", "created_at": "2024-05-01T00:04:05.000000Z", "updated_at": null
        },
        "data_quality": [],
        "source": {"item_ts_ms": 1_714_550_400_000_i64, "order_ts_ms": 1_714_550_400_001_i64, "shipment_ts_ms": null}
    })
    .to_string()
}

fn config(token: &str, run: usize) -> Config {
    let mut c = Config::default();
    c.app_id = token.to_owned();
    c.kafka.bootstrap_servers = env_or("OUTBOUND_KAFKA_BOOTSTRAP", "127.0.0.1:9092");
    c.kafka.partitions = PARTITIONS;
    c.sink.url = env_or("OUTBOUND_SEARCH_URL", "http://127.0.0.1:9200");
    c.sink.index_prefix = Some(format!("{token}-{run}-"));
    c
}

async fn setup_topics(c: &Config, docs: &[String]) {
    let kafka = ClientConfig::new()
        .set("bootstrap.servers", &c.kafka.bootstrap_servers)
        .clone();
    let admin: AdminClient<DefaultClientContext> = kafka.create().expect("admin client");
    let topics = [c.topic("details"), c.topic("rollups")];
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .expect("create topics")
    {
        r.expect("create topic");
    }
    let producer: FutureProducer = kafka
        .clone()
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    let mut pending = Vec::with_capacity(docs.len());
    for (i, d) in docs.iter().enumerate() {
        let key = i.to_string();
        let record = FutureRecord::to(&topics[0])
            .key(&key)
            .payload(d)
            .partition((i % PARTITIONS as usize) as i32);
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
        if pending.len() >= 50_000 {
            for p in pending.drain(..) {
                p.await
                    .expect("delivery")
                    .map_err(|(e, _)| e)
                    .expect("delivered");
            }
        }
    }
    for p in pending {
        p.await
            .expect("delivery")
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

async fn install(c: &Config) -> BulkService {
    let service = BulkService::new(&c.sink).expect("client");
    outbound::sink::install::install_indices(c)
        .await
        .expect("install indices");
    service
}

/// The plain loader: bulk bodies built up front, sent with the sink's
/// batch size and request concurrency.
async fn run_loader(c: &Config, docs: &[String]) -> f64 {
    let service = install(c).await;
    let alias = c.sink.details_alias();
    let mut bodies: Vec<(Bytes, usize)> = Vec::new();
    let mut body = BytesMut::new();
    let mut n = 0;
    for (i, d) in docs.iter().enumerate() {
        let action = json!({"index": {"_index": alias, "_id": i.to_string(), "version": i / PARTITIONS as usize, "version_type": "external_gte"}});
        body.extend_from_slice(action.to_string().as_bytes());
        body.extend_from_slice(b"\n");
        body.extend_from_slice(d.as_bytes());
        body.extend_from_slice(b"\n");
        n += 1;
        if n == c.sink.batch_max_docs || body.len() >= c.sink.batch_max_bytes {
            bodies.push((std::mem::take(&mut body).freeze(), n));
            n = 0;
        }
    }
    if n > 0 {
        bodies.push((body.freeze(), n));
    }
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut queue = bodies.into_iter();
    loop {
        while set.len() < c.sink.max_in_flight_requests {
            let Some((b, n)) = queue.next() else { break };
            let s = service.clone();
            set.spawn(async move {
                let (items, _) = s.bulk(b, n).await.expect("loader bulk request");
                assert!(items.iter().all(|i| i.status < 300), "loader item failed");
            });
        }
        match set.join_next().await {
            Some(r) => r.expect("loader task"),
            None => break,
        }
    }
    docs.len() as f64 / started.elapsed().as_secs_f64()
}

fn run_sink(c: &Config, total: usize) -> f64 {
    let metrics = Arc::new(Metrics::new());
    let shutdown = Shutdown::new();
    let handle =
        outbound::sink::spawn(c.clone(), metrics.clone(), shutdown.clone()).expect("spawn sink");
    let m = &metrics.sink;
    let deadline = Instant::now() + Duration::from_secs(600);
    while m.records_in.with_label_values(&["details"]).get() == 0 {
        assert!(
            Instant::now() < deadline && !handle.is_finished(),
            "sink consumed nothing"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    let acked = || {
        m.items.with_label_values(&["created"]).get()
            + m.items.with_label_values(&["updated"]).get()
    };
    while acked() < total as u64 {
        assert!(
            Instant::now() < deadline && !handle.is_finished(),
            "sink did not finish"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    shutdown.trigger();
    handle.join().expect("sink thread").expect("sink result");
    rate
}

/// Deletes a run's indices and templates.
async fn delete_indices(url: &str, prefix: &str) {
    // Through the elasticsearch crate's transport: DELETE <prefix>* and the templates.
    let c = Config {
        sink: outbound::sink::SinkConfig {
            url: url.to_owned(),
            ..Default::default()
        },
        ..Config::default()
    };
    let service = BulkService::new(&c.sink).expect("client");
    let client = service.client();
    let _ = client
        .indices()
        .delete(elasticsearch::indices::IndicesDeleteParts::Index(&[
            &format!("{prefix}*"),
        ]))
        .send()
        .await;
    for name in [
        "outbound_details",
        "units_daily",
        "courier_daily",
        "warehouse_daily",
    ] {
        let _ = client
            .indices()
            .delete_index_template(
                elasticsearch::indices::IndicesDeleteIndexTemplateParts::Name(&format!(
                    "{prefix}{name}"
                )),
            )
            .send()
            .await;
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: skip there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let total: usize = env_or("OUTBOUND_BENCH_DOCS", "50000")
        .parse()
        .expect("OUTBOUND_BENCH_DOCS");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let token = format!(
        "bench-sink-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000
    );
    let docs: Vec<String> = (0..total).map(document).collect();
    let bytes: usize = docs.iter().map(String::len).sum();
    println!(
        "sink bench: {total} detail documents, {:.1} MB of JSON",
        bytes as f64 / 1e6
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = config(&token, 0);
    rt.block_on(setup_topics(&base, &docs));
    let (mut best_loader, mut best_sink) = (0f64, 0f64);
    for run in 0..2 {
        let loader_cfg = config(&token, 2 * run);
        let rate = rt.block_on(run_loader(&loader_cfg, &docs));
        println!("  run {run}: bulk loader {rate:>10.0} docs/s");
        best_loader = best_loader.max(rate);
        rt.block_on(delete_indices(
            &loader_cfg.sink.url,
            loader_cfg.sink.prefix(),
        ));

        let mut sink_cfg = config(&token, 2 * run + 1);
        // A fresh consumer group per run: each sink run reads everything.
        sink_cfg.sink.dlq_topic = format!("{token}-sink-dlq");
        let sink_cfg = with_group_suffix(sink_cfg, run);
        rt.block_on(install(&sink_cfg));
        let rate = run_sink(&sink_cfg, total);
        println!("  run {run}: sink        {rate:>10.0} docs/s");
        best_sink = best_sink.max(rate);
        rt.block_on(delete_indices(&sink_cfg.sink.url, sink_cfg.sink.prefix()));
    }
    let ratio = best_sink / best_loader;
    println!(
        "sink {best_sink:.0} docs/s vs bulk loader {best_loader:.0} docs/s: ratio {ratio:.2} (target >= 0.90: {})",
        if ratio >= 0.9 { "met" } else { "NOT met" }
    );
}

/// The sink's group is `<app_id>-sink`; each run needs its own group but the
/// same topics, so the topics of run > 0 are reached through the same app id
/// with offsets reset instead.
fn with_group_suffix(c: Config, run: usize) -> Config {
    if run > 0 {
        let group = outbound::sink::group_id(&c);
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &c.kafka.bootstrap_servers)
            .set("group.id", &group)
            .create()
            .expect("consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&c.topic("details"), p, rdkafka::Offset::Offset(0))
                .expect("tpl");
        }
        rdkafka::consumer::Consumer::commit(&consumer, &tpl, rdkafka::consumer::CommitMode::Sync)
            .expect("reset the sink group's offsets");
    }
    c
}
