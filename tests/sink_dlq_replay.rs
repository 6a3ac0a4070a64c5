//! `outbound dlq replay` against the real Kafka and search node: documents a
//! mapping rejected are dead-lettered; once the mapping is corrected the
//! replay indexes those still current — not the ones a newer record (an
//! update, a delete) has superseded since — at the version of their record,
//! and a second replay changes nothing. `--filter` selects by reason.
//!
//! Needs `stack/stack.sh up kafka opensearch`.

mod sink_support;

use std::sync::Arc;

use outbound::metrics::Metrics;
use outbound::shutdown::Shutdown;
use outbound::sink::replay::{replay, ReplayOptions, ReplayReport};
use serde_json::json;
use sink_support::*;

const PARTITIONS: i32 = 3;

fn run_replay(config: &outbound::config::Config, filter: Option<&str>) -> ReplayReport {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(replay(
            config.clone(),
            ReplayOptions {
                from: outbound::sink::dlq_topic(config),
                filter: filter.map(str::to_owned),
            },
            Arc::new(Metrics::new()),
            Shutdown::new(),
        ))
        .expect("replay")
}

#[test]
fn replay_indexes_current_dead_letters_once_the_mapping_is_fixed_and_only_those() {
    let config = test_config(&run_token("dlq-replay"));
    let _indices = IndexCleanup(config.sink.prefix().to_owned());
    let details = config.topic("details");
    let dlq = outbound::sink::dlq_topic(&config);
    let _topics = TopicCleanup(vec![details.clone(), config.topic("rollups"), dlq.clone()]);
    create_topics(&[&details, &config.topic("rollups")], PARTITIONS);
    let group = outbound::sink::group_id(&config);
    let producer = TxnProducer::new(&format!("{}-producer", config.app_id));
    let bad = |id: u32| {
        item_record_with(&details, PARTITIONS, id, |d| {
            d["item"]["item_qty"] = json!("a dozen")
        })
    };
    let mut records: Vec<_> = (1..=20)
        .map(|id| item_record(&details, PARTITIONS, id, Some(0)))
        .collect();
    records.extend((5..=9).map(bad));
    producer.send(&records, true);
    let sink = RunningSink::start(&config);
    wait_committed_to_end(&group, &[&details], PARTITIONS);
    assert_eq!(sink.counter("rejections", "mapper_parsing_exception"), 5);
    // Since then: 8 has a newer, good version; 9 was deleted.
    producer.send(
        &[
            item_record(&details, PARTITIONS, 8, Some(3)),
            item_record(&details, PARTITIONS, 9, None),
        ],
        true,
    );
    wait_committed_to_end(&group, &[&details], PARTITIONS);
    sink.stop();
    let before = all_docs(&config.sink.details_alias());
    assert_eq!(before.len(), 19);

    // Nothing fixed yet: every current letter fails again.
    let report = run_replay(&config, None);
    assert_eq!(
        (
            report.read,
            report.replayed,
            report.failed,
            report.superseded
        ),
        (5, 0, 3, 2),
        "{report:?}"
    );
    assert_eq!(report.failures["mapper_parsing_exception"], 3);

    // The mapping is corrected: malformed quantities are kept in _source.
    let (s, b) = es(
        "PUT",
        &format!("/{}/_mapping", config.sink.details_alias()),
        Some(
            json!({"properties": {"item": {"properties": {"item_qty": {"type": "long", "ignore_malformed": true}}}}}),
        ),
    );
    assert_eq!(s, 200, "{b}");
    let filtered = run_replay(&config, Some("security_exception"));
    assert_eq!((filtered.filtered_out, filtered.replayed), (5, 0));
    let report = run_replay(&config, Some("mapper_parsing_exception"));
    assert_eq!(
        (
            report.read,
            report.replayed,
            report.failed,
            report.superseded
        ),
        (5, 3, 0, 2),
        "{report:?}"
    );
    let after = all_docs(&config.sink.details_alias());
    let letters = read_committed_records(&details, PARTITIONS);
    for id in ["5", "6", "7"] {
        let (version, doc) = &after[id];
        let offset = letters
            .iter()
            .filter(|r| r.2 == id)
            .map(|r| r.1)
            .max()
            .unwrap();
        assert_eq!(*version, offset, "{id}: the version of its record");
        assert_eq!(doc["item"]["item_qty"], "a dozen");
    }
    assert_eq!(after["8"], before["8"], "the newer version stays");
    assert!(!after.contains_key("9"), "the delete stays");

    // Idempotent: a second replay changes nothing.
    let again = run_replay(&config, None);
    assert_eq!((again.replayed, again.failed), (3, 0));
    assert_eq!(all_docs(&config.sink.details_alias()), after);
}
