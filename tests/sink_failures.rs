//! The sink's failure paths against the real Kafka and search node (issue
//! #14, holes 3 to 5):
//!
//! - a write block or a closed index is not the document's fault: the sink
//!   retries (nothing dead-lettered, nothing committed) and catches up once
//!   the block is lifted;
//! - a batch rejected for the most part (a mapping that no longer fits)
//!   stops the sink with a clear error instead of draining into the DLQ;
//! - a request above the node's `http.max_content_length` (413) is split;
//!   a document above the request limit is dead-lettered when encoded;
//! - an item that keeps failing (503: not enough active shard copies) is
//!   dead-lettered after `sink.max_item_attempts`;
//! - the indices remember deletes (`index.gc_deletes`) longer than the
//!   sink retries, and output topics keep tombstones for
//!   `kafka.delete_retention_ms`.
//!
//! Needs `stack/stack.sh up kafka opensearch`.
#![allow(clippy::field_reassign_with_default)] // test configs read best field by field

mod sink_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use outbound::pipeline::rollup::{Measures, RollupKey};
use serde_json::json;
use sink_support::*;

const PARTITIONS: i32 = 3;

fn units_record(topic: &str, day: u32, units: i64) -> (String, i32, String, Option<String>) {
    let key = RollupKey::UnitsDaily {
        day: chrono::NaiveDate::from_ymd_opt(2024, 5, day).unwrap(),
        warehouse: "wh1".into(),
        item_type: Some("phone".into()),
    };
    let m = Measures {
        items: 1,
        units,
        ..Measures::default()
    };
    let id = key.qualified_id();
    let doc = serde_json::to_string(&outbound::pipeline::docs::rollup_doc(&key, &m)).unwrap();
    (
        topic.to_owned(),
        partition_of(&id, PARTITIONS),
        id,
        Some(doc),
    )
}

fn dlq_records(config: &outbound::config::Config) -> Vec<(i32, i64, String, Option<Vec<u8>>)> {
    read_committed_records(&outbound::sink::dlq_topic(config), config.kafka.partitions)
}

/// Polls until the sink stopped by itself or `check` holds.
fn until_stopped_or(sink: &RunningSink, what: &str, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + DEADLINE;
    loop {
        if !sink.is_running() {
            return true;
        }
        if check() {
            return false;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn caught_up(group: &str, topic: &str) -> bool {
    let mut want = BTreeMap::new();
    for (p, offset, _, _) in read_committed_records(topic, PARTITIONS) {
        want.insert(p, offset + 1);
    }
    let c = committed(group, topic, PARTITIONS);
    want.iter()
        .all(|(p, o)| c.get(p).copied().unwrap_or(-1) >= *o)
}

#[test]
fn write_blocks_and_closed_indices_are_retried_never_dead_lettered() {
    let config = test_config(&run_token("fail-block"));
    let _indices = IndexCleanup(config.sink.prefix().to_owned());
    let (details, rollups) = (config.topic("details"), config.topic("rollups"));
    let _topics = output_topics(&config);
    let group = outbound::sink::group_id(&config);
    let producer = TxnProducer::new(&format!("{}-producer", config.app_id));
    producer.send(
        &(1..=10)
            .map(|id| item_record(&details, PARTITIONS, id, Some(0)))
            .collect::<Vec<_>>(),
        true,
    );
    producer.send(&[units_record(&rollups, 1, 1)], true);
    let sink = RunningSink::start(&config);
    wait_committed_to_end(&group, &[&details, &rollups], PARTITIONS);

    let units = format!("{}units_daily", config.sink.prefix());
    let details_alias = config.sink.details_alias();
    let (s, b) = es(
        "PUT",
        &format!("/{details_alias}/_settings"),
        Some(json!({"index.blocks.write": true})),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = es("POST", &format!("/{units}/_close"), None);
    assert_eq!(s, 200, "{b}");
    let before = (
        committed(&group, &details, PARTITIONS),
        committed(&group, &rollups, PARTITIONS),
    );
    producer.send(
        &(1..=20)
            .map(|id| item_record(&details, PARTITIONS, id, Some(1)))
            .collect::<Vec<_>>(),
        true,
    );
    producer.send(
        &(2..=4)
            .map(|d| units_record(&rollups, d, 5))
            .collect::<Vec<_>>(),
        true,
    );
    wait_for(
        "the sink to retry the blocked documents, or to dead-letter them",
        DEADLINE,
        || {
            let rejected = sink.counter("rejections", "cluster_block_exception")
                + sink.counter("rejections", "index_closed_exception");
            (rejected > 0 || sink.counter("retries", "blocked") >= 3).then_some(())
        },
    );
    assert_eq!(
        sink.counter("rejections", "cluster_block_exception")
            + sink.counter("rejections", "index_closed_exception"),
        0,
        "documents dead-lettered for the index's fault"
    );
    assert_eq!(
        (
            committed(&group, &details, PARTITIONS),
            committed(&group, &rollups, PARTITIONS)
        ),
        before,
        "offsets committed past documents that are not in the index"
    );
    assert!(sink.is_running());

    let (s, b) = es(
        "PUT",
        &format!("/{details_alias}/_settings"),
        Some(json!({"index.blocks.write": false})),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = es("POST", &format!("/{units}/_open"), None);
    assert_eq!(s, 200, "{b}");
    wait_committed_to_end(&group, &[&details, &rollups], PARTITIONS);
    let got = quantities(&details_alias);
    assert_eq!(got.len(), 20);
    assert!(got.values().all(|q| *q == 2), "{got:?}");
    let rolled = all_docs(&units);
    assert_eq!(rolled.len(), 4);
    assert!(dlq_records(&config).is_empty(), "nothing dead-lettered");
    sink.stop();
}

#[test]
fn a_batch_rejected_for_the_most_part_stops_the_sink_instead_of_flooding_the_dlq() {
    let mut config = test_config(&run_token("fail-most"));
    config.sink.batch_timeout_ms = 1_000;
    let _indices = IndexCleanup(config.sink.prefix().to_owned());
    let details = config.topic("details");
    let _topics = output_topics(&config);
    let group = outbound::sink::group_id(&config);
    let producer = TxnProducer::new(&format!("{}-producer", config.app_id));
    // A mapping that no longer fits: item_qty is a long in the index.
    let mut records: Vec<_> = (1..=40)
        .map(|id| {
            item_record_with(&details, PARTITIONS, id, |d| {
                d["item"]["item_qty"] = json!("one dozen")
            })
        })
        .collect();
    records.push(item_record(&details, PARTITIONS, 41, Some(0)));
    producer.send(&records, true);

    let sink = RunningSink::start_once(&config);
    let stopped = until_stopped_or(&sink, "the sink to stop or commit", || {
        caught_up(&group, &details)
    });
    assert!(
        stopped,
        "the sink dead-lettered {} documents and went on",
        dlq_records(&config).len()
    );
    let error = sink.wait_for_error(DEADLINE);
    assert!(
        error.contains("mapper_parsing_exception") && error.contains("of 41"),
        "the error says what was rejected, how much of the batch: {error}"
    );
    assert!(
        committed(&group, &details, PARTITIONS)
            .values()
            .all(|o| *o <= 0),
        "nothing committed"
    );
    assert!(dlq_records(&config).is_empty(), "nothing dead-lettered");
}

/// The smallest `http.max_content_length` of the search nodes.
fn request_limit() -> usize {
    let (s, body) = es(
        "GET",
        "/_nodes/http?filter_path=nodes.*.http.max_content_length_in_bytes",
        None,
    );
    assert_eq!(s, 200, "{body}");
    body["nodes"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n["http"]["max_content_length_in_bytes"].as_u64().unwrap() as usize)
        .min()
        .unwrap()
}

#[test]
fn a_request_above_the_nodes_limit_is_split_instead_of_failing_for_good() {
    let limit = request_limit();
    let mut config = test_config(&run_token("fail-413"));
    // One batch larger than the node accepts in one request; documents just
    // under the broker's default 1 MB record limit.
    let doc_bytes = 900 * 1024;
    let docs = (limit / doc_bytes + 2) as u32;
    config.sink.batch_max_docs = 100_000;
    config.sink.batch_max_bytes = 2 * limit;
    config.sink.max_in_flight_bytes = 4 * limit;
    config.sink.batch_timeout_ms = 10_000;
    // The client's own ceiling is not what is tested here: the node's is.
    config.sink.max_request_bytes = 4 * limit;
    let _indices = IndexCleanup(config.sink.prefix().to_owned());
    let details = config.topic("details");
    let _topics = output_topics(&config);
    let group = outbound::sink::group_id(&config);
    let producer = TxnProducer::new(&format!("{}-producer", config.app_id));
    let padding = "p".repeat(doc_bytes);
    for chunk in (1..=docs).collect::<Vec<_>>().chunks(20) {
        let records: Vec<_> = chunk
            .iter()
            .map(|&id| {
                item_record_with(&details, PARTITIONS, id, |d| d["padding"] = json!(padding))
            })
            .collect();
        producer.send(&records, true);
    }
    let sink = RunningSink::start_once(&config);
    let stopped = until_stopped_or(&sink, "the sink to index the large batch", || {
        caught_up(&group, &details)
    });
    assert!(!stopped, "the sink stopped on a 413");
    let (s, count) = es(
        "GET",
        &format!("/{}/_count", config.sink.details_alias()),
        None,
    );
    assert_eq!(s, 200);
    let (s, _) = es(
        "POST",
        &format!("/{}/_refresh", config.sink.details_alias()),
        None,
    );
    assert_eq!(s, 200);
    let _ = count;
    let (_, count) = es(
        "GET",
        &format!("/{}/_count", config.sink.details_alias()),
        None,
    );
    assert_eq!(count["count"], docs, "every document indexed");
    assert!(
        sink.metrics
            .sink
            .retries
            .with_label_values(&["too_large"])
            .get()
            >= 1,
        "the batch was split after a 413"
    );
    assert!(dlq_records(&config).is_empty());
    sink.stop();
}

#[test]
fn a_document_above_the_request_limit_is_dead_lettered_when_encoded() {
    let mut config = test_config(&run_token("fail-doc"));
    config.sink.max_request_bytes = 64 * 1024;
    config.sink.batch_max_bytes = 32 * 1024;
    let _indices = IndexCleanup(config.sink.prefix().to_owned());
    let details = config.topic("details");
    let _topics = output_topics(&config);
    let group = outbound::sink::group_id(&config);
    let producer = TxnProducer::new(&format!("{}-producer", config.app_id));
    producer.send(
        &[
            item_record(&details, PARTITIONS, 1, Some(0)),
            item_record_with(&details, PARTITIONS, 2, |d| {
                d["padding"] = json!("p".repeat(100 * 1024))
            }),
            item_record(&details, PARTITIONS, 3, Some(0)),
        ],
        true,
    );
    let sink = RunningSink::start(&config);
    wait_committed_to_end(&group, &[&details], PARTITIONS);
    assert_eq!(
        quantities(&config.sink.details_alias())
            .keys()
            .collect::<Vec<_>>(),
        ["1", "3"]
    );
    let dlq = dlq_records(&config);
    assert_eq!(dlq.len(), 1, "the oversized document is dead-lettered");
    assert_eq!(dlq[0].2, "2");
    assert_eq!(sink.counter("rejections", "document_too_large"), 1);
    sink.stop();
}

#[test]
fn an_item_that_keeps_failing_is_dead_lettered_after_its_attempts() {
    let mut config = test_config(&run_token("fail-item"));
    config.sink.max_item_attempts = 3;
    // Each attempt on an unassigned shard waits this long for it.
    config.sink.bulk_timeout_ms = 500;
    let _indices = IndexCleanup(config.sink.prefix().to_owned());
    let (details, rollups) = (config.topic("details"), config.topic("rollups"));
    let _topics = output_topics(&config);
    let group = outbound::sink::group_id(&config);
    let producer = TxnProducer::new(&format!("{}-producer", config.app_id));
    producer.send(&[units_record(&rollups, 1, 1)], true);
    let sink = RunningSink::start(&config);
    wait_committed_to_end(&group, &[&rollups], PARTITIONS);

    // Writes to the rollup index wait for a second shard copy a single node
    // never has: its items answer 503 after sink.bulk_timeout_ms.
    let units = format!("{}units_daily", config.sink.prefix());
    let (s, b) = es(
        "PUT",
        &format!("/{units}/_settings"),
        Some(json!({"index.number_of_replicas": 1, "index.write.wait_for_active_shards": "2"})),
    );
    assert_eq!(s, 200, "{b}");
    producer.send(&[units_record(&rollups, 2, 7)], true);
    producer.send(
        &(1..=5)
            .map(|id| item_record(&details, PARTITIONS, id, Some(0)))
            .collect::<Vec<_>>(),
        true,
    );
    wait_committed_to_end(&group, &[&details, &rollups], PARTITIONS);
    assert_eq!(quantities(&config.sink.details_alias()).len(), 5);
    let dlq = dlq_records(&config);
    assert_eq!(
        dlq.len(),
        1,
        "the rollup that kept failing is dead-lettered"
    );
    assert!(dlq[0].2.starts_with("units_daily/2024-05-02"));
    assert_eq!(sink.counter("rejections", "retries_exhausted"), 1);
    assert!(sink.counter("retries", "item_5xx") >= 2);
    sink.stop();
}

fn seconds(duration: &str) -> u64 {
    let (n, unit) = duration.split_at(duration.find(|c: char| !c.is_ascii_digit()).unwrap());
    let n: u64 = n.parse().unwrap();
    match unit {
        "ms" => n / 1000,
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        other => panic!("unit {other} of {duration}"),
    }
}

#[test]
fn indices_remember_deletes_longer_than_the_sink_retries() {
    let config = test_config(&run_token("fail-gc"));
    let _indices = IndexCleanup(config.sink.prefix().to_owned());
    let details = config.topic("details");
    let _topics = output_topics(&config);
    let producer = TxnProducer::new(&format!("{}-producer", config.app_id));
    producer.send(&[item_record(&details, PARTITIONS, 1, Some(0))], true);
    let sink = RunningSink::start(&config);
    wait_committed_to_end(&outbound::sink::group_id(&config), &[&details], PARTITIONS);
    sink.stop();
    let window = Duration::from_millis(config.sink.retry_window_ms).as_secs();
    assert!(window > 0);
    for alias in [
        config.sink.details_alias(),
        format!("{}units_daily", config.sink.prefix()),
        format!("{}courier_daily", config.sink.prefix()),
        format!("{}warehouse_daily", config.sink.prefix()),
    ] {
        for index in indices_of(&alias) {
            let gc = index_setting(&index, "index.gc_deletes").expect("gc_deletes");
            assert!(
                seconds(&gc) >= 2 * window,
                "{index}: index.gc_deletes = {gc}, retries last up to {window} s"
            );
        }
    }
}

#[test]
fn output_topics_keep_tombstones_for_the_configured_time() {
    let mut config = test_config(&run_token("fail-tomb"));
    let default = config.kafka.delete_retention_ms;
    assert!(
        default >= 7 * 86_400_000,
        "the default keeps deletes a week"
    );
    config.kafka.delete_retention_ms = 3 * 86_400_000;
    let topics = outbound::engine::Topics::new(&config, Vec::new());
    let _topics = TopicCleanup(vec![
        config.topic("details"),
        config.topic("rollups"),
        config.topic("rekey"),
        config.topic("detail-changes"),
        config.topic("rollup-deltas"),
        config.topic("dlq"),
        config.topic("join-changelog"),
        config.topic("details-changelog"),
        config.topic("aggregate-changelog"),
    ]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(outbound::engine::ensure_topics(&config, &topics))
        .expect("topics created");
    for output in ["details", "rollups"] {
        let got = rt.block_on(outbound::sink::topics::delete_retention_ms(
            &config,
            &config.topic(output),
        ));
        assert_eq!(
            got.expect("describe"),
            Some(3 * 86_400_000),
            "{output}: delete.retention.ms"
        );
    }
}
