//! The engine against the real local broker: `outbound run` processes a
//! generated history of tens of thousands of changes; its output topics, read
//! read_committed and folded by key, must equal what the pipeline core
//! computes over the final table contents — without crashes, with repeated
//! kill -9s, across restarts, and with instances joining and dying.

mod common;

use std::time::Duration;

use common::history::{generate, SourceRecord};
use common::*;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

const PARTITIONS: i32 = 4;
const DEADLINE: Duration = Duration::from_secs(300);

struct Scenario {
    prefix: String,
    dir: tempfile::TempDir,
    history: common::history::History,
}

impl Scenario {
    fn new(name: &str, seed: u64, orders: u64, changes: usize) -> Self {
        let prefix = unique(name);
        create_source_topics(&prefix, 2);
        Self {
            history: generate(seed, &prefix, orders, changes),
            prefix,
            // OUTBOUND_TEST_KEEP=1 keeps state directories and logs.
            dir: tempfile::Builder::new()
                .prefix(name)
                .disable_cleanup(std::env::var_os("OUTBOUND_TEST_KEEP").is_some())
                .tempdir()
                .expect("tempdir"),
        }
    }

    fn spec<'a>(&'a self, instance: &'a str, state: &'a std::path::Path) -> RunSpec<'a> {
        RunSpec {
            app_id: &self.prefix,
            instance,
            prefix: &self.prefix,
            state_dir: state,
            log_dir: self.dir.path(),
            partitions: PARTITIONS,
        }
    }

    fn state(&self, instance: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("state-{instance}"))
    }

    fn details_topic(&self) -> String {
        format!("{}-details", self.prefix)
    }

    fn rollups_topic(&self) -> String {
        format!("{}-rollups", self.prefix)
    }

    /// Waits until the folded outputs equal the pipeline core's result.
    fn assert_outputs_converge(&self, logs: &[&Outbound]) {
        let (want_details, want_rollups) = expected(&self.history, &self.prefix);
        assert!(
            want_details.len() > 100 && want_rollups.len() > 20,
            "the history must exercise the join: {} details, {} rollups expected",
            want_details.len(),
            want_rollups.len()
        );
        wait_for("details to equal the pipeline core", DEADLINE, || {
            fold_topic(&self.details_topic())
                .and_then(|got| diff(&want_details, &got))
                .map_err(|e| {
                    let tail: String = logs.iter().map(|o| o.log_text()).collect::<String>();
                    let tail = tail.lines().rev().take(5).collect::<Vec<_>>().join("\n");
                    format!("{e}\nlast log lines:\n{tail}")
                })
        });
        wait_for("rollups to equal the pipeline core", DEADLINE, || {
            fold_topic(&self.rollups_topic()).and_then(|got| diff(&want_rollups, &got))
        });
    }
}

/// Deletes the scenario's topics (sources, internal, outputs): a single-node
/// broker slows down as thousands of test partitions pile up.
impl Drop for Scenario {
    fn drop(&mut self) {
        if std::env::var_os("OUTBOUND_TEST_KEEP").is_some() {
            return;
        }
        let Ok(consumer) = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .create::<BaseConsumer>()
        else {
            return;
        };
        let Ok(md) = consumer.fetch_metadata(None, Duration::from_secs(10)) else {
            return;
        };
        let names: Vec<String> = md
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .filter(|n| n.starts_with(&self.prefix))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let Ok(admin) = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .create::<AdminClient<DefaultClientContext>>()
        else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            let _ = rt.block_on(admin.delete_topics(&refs, &AdminOptions::new()));
        }
    }
}

fn restored_records(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("restore complete"))
        .filter_map(|l| l.split("restored=").nth(1))
        .filter_map(|s| s.split_whitespace().next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

#[test]
fn outputs_equal_the_pipeline_core_for_a_generated_history() {
    let s = Scenario::new("engine-eq", 7, 1500, 20_000);
    let producer = producer();
    produce(&producer, &s.prefix, &s.history.records);
    let state = s.state("a");
    let mut outbound = Outbound::start(&s.spec("a", &state), 0);
    s.assert_outputs_converge(&[&outbound]);
    // The repartition topics keep records without time retention; what the
    // stages committed is purged.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("consumer");
    wait_for("the rekey topic to be purged", DEADLINE, || {
        let topic = format!("{}-rekey", s.prefix);
        let mut lows = Vec::new();
        for p in 0..PARTITIONS {
            let (low, _) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            lows.push(low);
        }
        if lows.iter().all(|l| *l > 0) {
            Ok(())
        } else {
            Err(format!("low watermarks {lows:?}"))
        }
    });
    outbound.stop_cleanly();
}

#[test]
fn kill_nine_at_random_moments_changes_nothing() {
    let s = Scenario::new("engine-crash", 11, 1200, 24_000);
    let producer = producer();
    let chunks: Vec<&[SourceRecord]> = s
        .history
        .records
        .chunks(s.history.records.len() / 12 + 1)
        .collect();
    let state = s.state("a");
    let mut rng = common::history::Rng::new(99);
    let mut kills = 0;
    for (generation, chunk) in chunks.iter().enumerate() {
        // Every third restart loses its state directory: a full restore,
        // which the next kill may interrupt.
        if generation % 3 == 2 {
            let _ = std::fs::remove_dir_all(&state);
        }
        let mut outbound = Outbound::start(&s.spec("a", &state), generation);
        produce(&producer, &s.prefix, chunk);
        // Random moments: during restore, mid-stream, right after a commit.
        std::thread::sleep(Duration::from_millis(200 + rng.below(2500)));
        assert!(
            outbound.is_running(),
            "outbound died on its own; log {}",
            outbound.log.display()
        );
        outbound.kill9();
        kills += 1;
    }
    assert!(kills >= 10);
    let mut last = Outbound::start(&s.spec("a", &state), 99);
    s.assert_outputs_converge(&[&last]);
    last.stop_cleanly();
}

#[test]
fn restart_restores_only_the_changelog_tail_and_a_lost_directory_everything() {
    let s = Scenario::new("engine-restore", 23, 800, 10_000);
    produce(&producer(), &s.prefix, &s.history.records);
    let state = s.state("a");
    let mut first = Outbound::start(&s.spec("a", &state), 0);
    s.assert_outputs_converge(&[&first]);
    first.stop_cleanly();

    // Intact directory: the stores are at the changelog end.
    let mut second = Outbound::start(&s.spec("a", &state), 1);
    wait_for("the restarted instance to be running", DEADLINE, || {
        let log = second.log_text();
        if log.contains("stream stages running")
            && !log.contains("restoring\n")
            && log.matches("task").count() > 0
        {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    s.assert_outputs_converge(&[&second]);
    second.stop_cleanly();
    let tail = restored_records(&second.log_text());
    assert!(
        tail < 100,
        "an intact state directory restored {tail} records; log {}",
        second.log.display()
    );

    // Lost directory: everything comes back from the changelogs.
    std::fs::remove_dir_all(&state).expect("remove state");
    let mut third = Outbound::start(&s.spec("a", &state), 2);
    s.assert_outputs_converge(&[&third]);
    wait_for("the full restore to be logged", DEADLINE, || {
        let n = restored_records(&third.log_text());
        if n > 1000 {
            Ok(())
        } else {
            Err(format!("{n} records restored so far"))
        }
    });
    third.stop_cleanly();
}

#[test]
fn three_instances_survive_losing_one() {
    let s = Scenario::new("engine-scale", 31, 1500, 18_000);
    let producer = producer();
    let half = s.history.records.len() / 2;
    let (state_a, state_b, state_c) = (s.state("a"), s.state("b"), s.state("c"));
    let a = Outbound::start(&s.spec("a", &state_a), 0);
    let mut b = Outbound::start(&s.spec("b", &state_b), 0);
    let c = Outbound::start(&s.spec("c", &state_c), 0);
    produce(&producer, &s.prefix, &s.history.records[..half]);
    wait_for("instance b to own tasks", DEADLINE, || {
        if b.log_text().contains("restor") || b.log_text().contains("task") {
            Ok(())
        } else {
            Err("no tasks yet".into())
        }
    });
    b.kill9();
    produce(&producer, &s.prefix, &s.history.records[half..]);
    s.assert_outputs_converge(&[&a, &c]);
    for mut o in [a, c] {
        o.stop_cleanly();
    }
}
