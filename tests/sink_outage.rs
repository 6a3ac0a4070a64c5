//! Outage: the search node is stopped (through the stack's own script and
//! PID file) while the sink has records to index, for longer than the first
//! retry steps; nothing is committed meanwhile; once the node is started
//! again the sink resumes by itself: every document is there at the version
//! of its latest record, none lost, none extra, and the sink never stopped.
//! Meanwhile it reports itself unhealthy (`/healthz/sink`), then healthy.
//!
//! Needs `stack/stack.sh up kafka opensearch`. Restarts the opensearch
//! component of the local stack (other tests using it see a short outage).

// test-runner: exclusive (stack: kafka opensearch) — stops or freezes a component of the shared
// stack, so scripts/run-tests.py runs this binary alone.
#![allow(clippy::type_complexity, clippy::field_reassign_with_default)] // test code: tuples and configs built field by field read best here

mod sink_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use outbound::sink::health::Report;
use serde_json::Value;
use sink_support::*;

const PARTITIONS: i32 = 3;

fn stack(action: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("stack/stack.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args([action, "opensearch"])
        .output()
        .unwrap_or_else(|e| panic!("running {} {action} opensearch: {e}", script.display()));
    assert!(
        out.status.success(),
        "stack/stack.sh {action} opensearch failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the search node again however the test ends.
struct NodeBackUp;

impl Drop for NodeBackUp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            stack("up");
        }
    }
}

#[test]
fn sink_rides_out_a_search_node_outage_without_loss_or_duplicates() {
    let token = run_token("sink-outage");
    let mut config = test_config(&token);
    config.sink.retry_initial_backoff_ms = 200;
    config.sink.retry_max_backoff_ms = 3_000;
    let _cleanup = IndexCleanup(config.sink.prefix().to_owned());
    let details = config.topic("details");
    let rollups = config.topic("rollups");
    create_topics(&[&details, &rollups], PARTITIONS);
    let producer = TxnProducer::new(&format!("{token}-producer"));
    let rec = |key: u32, value: Option<String>| {
        (
            details.clone(),
            partition_of(&key.to_string(), PARTITIONS),
            key.to_string(),
            value,
        )
    };

    producer.send(
        &(1..=100)
            .map(|id| rec(id, Some(item_doc(id, 0))))
            .collect::<Vec<_>>(),
        true,
    );
    let sink = RunningSink::start(&config);
    let group = outbound::sink::group_id(&config);
    wait_committed_to_end(&group, &[&details], PARTITIONS);
    let before = committed(&group, &details, PARTITIONS);

    let _guard = NodeBackUp;
    stack("down");
    // While the node is down: updates, deletes, new documents.
    let mut records: Vec<_> = (1..=50).map(|id| rec(id, Some(item_doc(id, 1)))).collect();
    records.extend((90..=100).map(|id| rec(id, None)));
    records.extend((101..=150).map(|id| rec(id, Some(item_doc(id, 0)))));
    producer.send(&records, true);
    // Longer than the first retry steps (0.1–0.2 s, 0.2–0.4 s, 0.4–0.8 s, …).
    wait_for("the sink to retry at least 4 times", DEADLINE, || {
        (sink.counter("retries", "connection") >= 4).then_some(())
    });
    assert!(sink.is_running(), "the sink stopped during the outage");
    wait_for("the sink to report itself unhealthy", DEADLINE, || {
        matches!(sink.metrics.sink.health.report(), Report::Unhealthy(_)).then_some(())
    });
    assert_eq!(
        committed(&group, &details, PARTITIONS),
        before,
        "offsets committed while nothing was acknowledged"
    );

    stack("up");
    wait_committed_to_end(&group, &[&details], PARTITIONS);
    assert!(sink.is_running(), "the sink stopped after the outage");
    assert_eq!(sink.metrics.sink.health.report(), Report::Healthy);

    // Expected: the latest committed record of every key.
    let mut want: BTreeMap<String, (i64, Option<Value>)> = BTreeMap::new();
    for (_, offset, key, value) in read_committed_records(&details, PARTITIONS) {
        want.insert(
            key,
            (offset, value.map(|v| serde_json::from_slice(&v).unwrap())),
        );
    }
    let want: BTreeMap<String, (i64, Value)> = want
        .into_iter()
        .filter_map(|(k, (o, v))| v.map(|v| (k, (o, v))))
        .collect();
    assert_eq!(want.len(), 150 - 11);
    let got = all_docs(&config.sink.details_alias());
    assert_eq!(
        got, want,
        "index after the outage differs from the topic's latest records"
    );
    assert_eq!(sink.counter("rejections", "mapper_parsing_exception"), 0);
    sink.stop();
}
