//! Whose indices these are, and which version space their documents live in
//! (issue #14, holes 1 and 2), against the real Kafka and search node:
//!
//! - a second app configured onto the same index names must refuse to write
//!   there, naming the owner, and leave the owner's documents alone;
//! - when an output topic is re-created (its offsets start again), the sink
//!   must refuse to start instead of answering every write with a version
//!   conflict counted as success (the silent freeze); once the version epoch
//!   is bumped (what `outbound reset` calls), the new records win.
//!
//! Needs `stack/stack.sh up kafka opensearch`.
#![allow(clippy::field_reassign_with_default)] // test configs read best field by field

mod sink_support;

use std::time::{Duration, Instant};

use sink_support::*;

const PARTITIONS: i32 = 3;

/// Polls until the sink either stopped by itself or committed `topic` to its
/// end; true when it stopped.
fn stopped_or_caught_up(sink: &RunningSink, group: &str, topic: &str) -> bool {
    let mut want = std::collections::BTreeMap::new();
    for (p, offset, _, _) in read_committed_records(topic, PARTITIONS) {
        want.insert(p, offset + 1);
    }
    let until = Instant::now() + DEADLINE;
    loop {
        if !sink.is_running() {
            return true;
        }
        let c = committed(group, topic, PARTITIONS);
        if want
            .iter()
            .all(|(p, o)| c.get(p).copied().unwrap_or(-1) >= *o)
        {
            return false;
        }
        assert!(Instant::now() < until, "neither stopped nor caught up");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_second_app_refuses_to_write_into_another_apps_indices() {
    let a = test_config(&run_token("own-a"));
    let mut b = test_config(&run_token("own-b"));
    // The hole: both apps on the same index names (what the old defaults did).
    b.sink.index_prefix = a.sink.index_prefix.clone();
    let _indices = IndexCleanup(a.sink.prefix().to_owned());
    let (ta, tb) = (a.topic("details"), b.topic("details"));
    let _topics = (output_topics(&a), output_topics(&b));
    let producer = TxnProducer::new(&format!("{}-producer", a.app_id));
    producer.send(
        &(1..=20)
            .map(|id| item_record(&ta, PARTITIONS, id, Some(0)))
            .collect::<Vec<_>>(),
        true,
    );
    producer.send(
        &(11..=30)
            .map(|id| item_record(&tb, PARTITIONS, id, Some(5)))
            .collect::<Vec<_>>(),
        true,
    );

    let sink_a = RunningSink::start(&a);
    wait_committed_to_end(&outbound::sink::group_id(&a), &[&ta], PARTITIONS);
    sink_a.stop();
    let before = quantities(&a.sink.details_alias());
    assert_eq!(before.len(), 20);

    let sink_b = RunningSink::start_once(&b);
    let stopped = stopped_or_caught_up(&sink_b, &outbound::sink::group_id(&b), &tb);
    assert_eq!(
        quantities(&a.sink.details_alias()),
        before,
        "app {} wrote into app {}'s index",
        b.app_id,
        a.app_id
    );
    assert!(stopped, "the second app's sink kept running");
    let error = sink_b.wait_for_error(DEADLINE);
    assert!(
        error.contains(&a.app_id) && error.contains("sink.index_prefix"),
        "the error names the owner and the key to change: {error}"
    );
}

#[test]
fn a_recreated_output_topic_is_refused_until_the_version_epoch_is_bumped() {
    let config = test_config(&run_token("own-epoch"));
    let _indices = IndexCleanup(config.sink.prefix().to_owned());
    let details = config.topic("details");
    let _topics = output_topics(&config);
    let group = outbound::sink::group_id(&config);
    let producer = TxnProducer::new(&format!("{}-producer", config.app_id));
    // Offsets well above what the re-created topic will reach.
    for generation in 0..3 {
        producer.send(
            &(1..=30)
                .map(|id| item_record(&details, PARTITIONS, id, Some(generation)))
                .collect::<Vec<_>>(),
            true,
        );
    }
    let sink = RunningSink::start(&config);
    wait_committed_to_end(&group, &[&details], PARTITIONS);
    sink.stop();
    assert!(quantities(&config.sink.details_alias())
        .values()
        .all(|q| *q == 3));

    // The topic is deleted and created again (what the startup error about
    // a partition mismatch tells users to do), then refilled: 1..10 changed,
    // 11..15 deleted, 16..30 as they were.
    delete_topics(&[&details]);
    create_topics(&[&details], PARTITIONS);
    let mut records: Vec<_> = (1..=10)
        .map(|id| item_record(&details, PARTITIONS, id, Some(7)))
        .collect();
    records.extend((11..=15).map(|id| item_record(&details, PARTITIONS, id, None)));
    records.extend((16..=30).map(|id| item_record(&details, PARTITIONS, id, Some(2))));
    producer.send(&records, true);

    let sink = RunningSink::start_once(&config);
    let stopped = stopped_or_caught_up(&sink, &group, &details);
    assert!(
        stopped,
        "the sink ran on a re-created topic; index now {:?}",
        quantities(&config.sink.details_alias())
    );
    let error = sink.wait_for_error(DEADLINE);
    assert!(
        error.contains(&details) && error.contains("re-created"),
        "the error names the topic and what happened: {error}"
    );

    // What `outbound reset` calls: a new version epoch, claimed by the
    // re-created topic at the next start.
    let bumped = outbound::sink::bump_epoch(&config).expect("bump the epoch");
    assert_eq!(bumped.len(), 4, "every index of the app: {bumped:?}");
    let sink = RunningSink::start(&config);
    wait_committed_to_end(&group, &[&details], PARTITIONS);
    let got = all_docs(&config.sink.details_alias());
    assert_eq!(got.len(), 25, "11..15 deleted");
    for (id, (version, doc)) in &got {
        let id: u32 = id.parse().unwrap();
        let want = if id <= 10 { 8 } else { 3 };
        assert_eq!(doc["item"]["item_qty"], want, "document {id}");
        assert!(
            *version >= 1 << 40,
            "document {id}: version {version} is in the new epoch"
        );
    }
    assert_eq!(
        sink.counter("items", "conflict"),
        0,
        "no write refused as older"
    );
    sink.stop();
}
