//! `outbound rebuild-indices` against the real Kafka and search node, while
//! the live sink keeps indexing a steady stream of new and updated
//! documents and a reader queries the read aliases continuously: the reader
//! never sees an error or a count going down (the stream only adds
//! documents), the read aliases end on the new generation (built with the
//! bumped `sink.index_version`), the old one is kept for `--keep-old`, and
//! the indices then equal the topics' latest records — including what the
//! live sink wrote after the swap.
//!
//! Needs `stack/stack.sh up kafka opensearch`.
#![allow(clippy::field_reassign_with_default)] // test configs read best field by field

mod sink_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use outbound::metrics::Metrics;
use outbound::shutdown::Shutdown;
use outbound::sink::rebuild::{rebuild_indices, Display, RebuildOptions};
use serde_json::Value;
use sink_support::*;

const PARTITIONS: i32 = 3;

/// Counts what the read aliases hold, as fast as the node answers, until
/// `stop`; returns every problem seen (an error, a count going down).
fn reader(
    aliases: Vec<String>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    std::thread::spawn(move || {
        let agent = agent();
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        let mut problems = Vec::new();
        let mut queries = 0u64;
        while !stop.load(Ordering::SeqCst) {
            for alias in &aliases {
                let url = format!("{}/{alias}/_count", search_url());
                queries += 1;
                let count = match agent.get(&url).call() {
                    Ok(mut r) if r.status() == 200 => {
                        let body: Value = serde_json::from_str(
                            &r.body_mut().read_to_string().unwrap_or_default(),
                        )
                        .unwrap_or(Value::Null);
                        body["count"].as_u64()
                    }
                    Ok(r) => {
                        problems.push(format!("{alias}: HTTP {}", r.status()));
                        None
                    }
                    Err(e) => {
                        problems.push(format!("{alias}: {e}"));
                        None
                    }
                };
                if let Some(n) = count {
                    let prev = last.insert(alias.clone(), n).unwrap_or(0);
                    if n < prev {
                        problems.push(format!("{alias}: count went from {prev} to {n}"));
                    }
                }
            }
        }
        (queries, problems)
    })
}

#[test]
fn a_rebuild_under_load_never_shows_readers_an_error_or_a_smaller_index() {
    logs();
    let mut config = test_config(&run_token("rebuild"));
    config.sink.batch_max_docs = 500;
    let _indices = IndexCleanup(config.sink.prefix().to_owned());
    let (details, rollups) = (config.topic("details"), config.topic("rollups"));
    let _topics = TopicCleanup(vec![
        details.clone(),
        rollups.clone(),
        outbound::sink::dlq_topic(&config),
    ]);
    create_topics(&[&details, &rollups], PARTITIONS);
    let group = outbound::sink::group_id(&config);
    let producer = Arc::new(TxnProducer::new(&format!("{}-producer", config.app_id)));
    for chunk in (1..=300).collect::<Vec<u32>>().chunks(100) {
        producer.send(
            &chunk
                .iter()
                .map(|&id| item_record(&details, PARTITIONS, id, Some(0)))
                .collect::<Vec<_>>(),
            true,
        );
    }
    let sink = RunningSink::start(&config);
    wait_committed_to_end(&group, &[&details], PARTITIONS);
    let old = indices_of(&config.sink.details_alias());
    assert_eq!(old.len(), 1);

    let stop = Arc::new(AtomicBool::new(false));
    let legacy = config.sink.details_legacy_alias().expect("legacy alias");
    let reading = reader(
        vec![config.sink.details_alias(), legacy.clone()],
        stop.clone(),
    );
    // The load: new documents and updates of old ones, 50 records a second
    // in ten transactions.
    let writing = {
        let (producer, details, stop) = (producer.clone(), details.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut next = 301u32;
            let mut round = 1u32;
            let pace = Duration::from_millis(100);
            while !stop.load(Ordering::SeqCst) {
                let round_started = std::time::Instant::now();
                let mut records: Vec<_> = (next..next + 3)
                    .map(|id| item_record(&details, PARTITIONS, id, Some(0)))
                    .collect();
                records.extend((1..=2).map(|i| {
                    item_record(&details, PARTITIONS, (round * 2 + i) % 300 + 1, Some(round))
                }));
                producer.send(&records, true);
                next += 3;
                round += 1;
                std::thread::sleep(pace.saturating_sub(round_started.elapsed()));
            }
            next
        })
    };

    // The mapping changed: a new index version, built and swapped in.
    config.sink.index_version = 2;
    let report = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(rebuild_indices(
            config.clone(),
            RebuildOptions {
                keep_old: Duration::from_secs(3600),
                display: Display::Log,
            },
            Arc::new(Metrics::new()),
            Shutdown::new(),
        ))
        .expect("rebuild");
    // The live sink goes on writing into the new generation after the swap.
    let sink_items = || sink.counter("items", "created") + sink.counter("items", "updated");
    let after_swap = sink_items();
    wait_for("the live sink to write after the swap", DEADLINE, || {
        (sink_items() > after_swap + 20).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let written = writing.join().expect("writer");
    let (queries, problems) = reading.join().expect("reader");
    assert!(written > 330, "the load ran during the rebuild: {written}");
    assert!(queries > 20, "the reader queried throughout: {queries}");
    assert!(problems.is_empty(), "the reader saw: {problems:?}");

    let new = indices_of(&config.sink.details_alias());
    assert_eq!(new.len(), 1);
    assert_ne!(new, old);
    assert!(
        new[0].contains("-v2-"),
        "built with the new index version: {new:?}"
    );
    assert_eq!(indices_of(&legacy), new, "every read alias moved");
    let rebuilt = report
        .indices
        .iter()
        .find(|i| i.alias == config.sink.details_alias())
        .expect("the detail index in the report");
    assert_eq!(rebuilt.new, new[0]);
    assert_eq!(rebuilt.old.as_deref(), Some(old[0].as_str()));
    let (s, _) = es("GET", &format!("/{}", old[0]), None);
    assert_eq!(s, 200, "the old generation is kept for --keep-old");

    // Everything the topics hold, at the versions of their latest records.
    wait_committed_to_end(&group, &[&details], PARTITIONS);
    let mut want: BTreeMap<String, (i64, Value)> = BTreeMap::new();
    for (_, offset, key, value) in read_committed_records(&details, PARTITIONS) {
        if let Some(v) = value {
            want.insert(key, (offset, serde_json::from_slice(&v).unwrap()));
        }
    }
    let got = all_docs(&config.sink.details_alias());
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "the new generation differs from the topic's latest records"
    );
    sink.stop();
}
