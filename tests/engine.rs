//! The engine against the real local broker: `outbound run` processes a
//! generated history of tens of thousands of changes; its output topics, read
//! read_committed and folded by key, must equal what the pipeline core
//! computes over the final table contents — without crashes, with repeated
//! kill -9s, across restarts, and with instances joining and dying.

mod common;

use std::time::Duration;

use common::engine::{Scenario, DEADLINE, PARTITIONS};
use common::history::SourceRecord;
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

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
    let _serial = one_at_a_time();
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
    let _serial = one_at_a_time();
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
    let _serial = one_at_a_time();
    let s = Scenario::new("engine-restore", 23, 800, 10_000);
    produce(&producer(), &s.prefix, &s.history.records);
    let state = s.state("a");
    let mut first = Outbound::start(&s.spec("a", &state), 0);
    s.assert_outputs_converge(&[&first]);
    first.stop_cleanly();

    // Intact directory: the stores are at the changelog end. Ready means
    // every assigned task is running, restores done.
    let mut second = Outbound::start_observed(&s.spec("a", &state), 1, &[]);
    second.wait_ready(DEADLINE);
    let running = second
        .metric("outbound_tasks", &["status=\"running\""])
        .expect("task metrics");
    assert_eq!(running, 3.0 * PARTITIONS as f64, "every task running");
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
    let _serial = one_at_a_time();
    let s = Scenario::new("engine-scale", 31, 1500, 18_000);
    let producer = producer();
    let half = s.history.records.len() / 2;
    let (state_a, state_b, state_c) = (s.state("a"), s.state("b"), s.state("c"));
    // b joins first: the sticky assignor then tends to leave it the source
    // partitions only, whose stateless rekey stage has no tasks — a share
    // that counts as one.
    let mut b = Outbound::start_observed(&s.spec("b", &state_b), 0, &[]);
    b.wait_ready(DEADLINE);
    let a = Outbound::start_observed(&s.spec("a", &state_a), 0, &[]);
    let c = Outbound::start_observed(&s.spec("c", &state_c), 0, &[]);
    produce(&producer, &s.prefix, &s.history.records[..half]);
    // The group has settled with each of the three doing its share: each
    // holds partitions with every task running, and b has consumed records.
    wait_for("all three to be ready and b consuming", DEADLINE, || {
        for (name, o) in [("a", &a), ("b", &b), ("c", &c)] {
            match o.http("/readyz") {
                Ok((200, _)) => {}
                other => return Err(format!("{name}: /readyz {other:?}")),
            }
        }
        match b.metric("outbound_records_in_total", &[]) {
            Ok(n) if n > 0.0 => Ok(()),
            other => Err(format!("b: records in {other:?}")),
        }
    });
    b.kill9();
    produce(&producer, &s.prefix, &s.history.records[half..]);
    s.assert_outputs_converge(&[&a, &c]);
    for mut o in [a, c] {
        o.stop_cleanly();
    }
}

/// Kills the instance (abort, like kill -9) at a commit's hardest moment,
/// `rounds` times, each time after a few more commits; a last instance must
/// end with exactly the pipeline core's outputs.
fn kill_at_failpoint(name: &str, seed: u64, point: &str) {
    let s = Scenario::new(name, seed, 900, 12_000);
    let producer = producer();
    let chunks: Vec<&[SourceRecord]> = s
        .history
        .records
        .chunks(s.history.records.len() / 4 + 1)
        .collect();
    let state = s.state("a");
    for (generation, chunk) in chunks.iter().enumerate() {
        produce(&producer, &s.prefix, chunk);
        let at = format!("{point}@{}", 3 + generation * 2);
        let mut outbound = Outbound::start_with_env(
            &s.spec("a", &state),
            generation,
            &[("OUTBOUND_FAILPOINTS", &at)],
        );
        let status = outbound.wait_exit(DEADLINE).unwrap_or_else(|| {
            panic!(
                "outbound never reached failpoint {at}; log {}",
                outbound.log.display()
            )
        });
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(6),
            "aborted at the failpoint: {status}; log:\n{}",
            outbound.log_tail(20)
        );
        assert!(
            outbound.log_text().contains("failpoint reached"),
            "{}",
            outbound.log_tail(20)
        );
    }
    let mut last = Outbound::start(&s.spec("a", &state), 99);
    s.assert_outputs_converge(&[&last]);
    last.stop_cleanly();
}

#[test]
fn a_fetch_position_jumping_back_changes_nothing() {
    let _serial = one_at_a_time();
    // Seen under load: the consumer fetched records of an internal topic
    // again that the instance had processed and committed, and the
    // aggregate added their rollup deltas twice. The failpoint seeks every
    // stage input of the second commit that consumed rollup deltas back to
    // its start.
    let s = Scenario::new("engine-jump", 47, 600, 8_000);
    let producer = producer();
    let (first, rest) = s.history.records.split_at(s.history.records.len() / 2);
    produce(&producer, &s.prefix, first);
    let state = s.state("a");
    let mut outbound = Outbound::start_with_env(
        &s.spec("a", &state),
        0,
        &[
            ("OUTBOUND_FAILPOINTS", "input.jump_back@2"),
            // Purged, the records would not come again.
            ("OUTBOUND_KAFKA__PURGE_INTERVAL_MS", "0"),
        ],
    );
    wait_for("the failpoint to seek back", DEADLINE, || {
        if outbound
            .log_text()
            .contains("failpoint: fetching the partition again")
        {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    produce(&producer, &s.prefix, rest);
    s.assert_outputs_converge(&[&outbound]);
    let log = outbound.log_text();
    assert!(
        log.contains("already processed was fetched again"),
        "the records fetched again were noticed; log {}",
        outbound.log.display()
    );
    outbound.stop_cleanly();
}

#[test]
fn kill_between_flush_and_commit_changes_nothing() {
    let _serial = one_at_a_time();
    kill_at_failpoint("engine-kill-flush", 41, "commit.after_flush");
}

#[test]
fn kill_between_commit_and_apply_changes_nothing() {
    let _serial = one_at_a_time();
    // The transaction is committed, the stores not updated: the restart
    // restores the changelog's tail, which holds that transaction.
    kill_at_failpoint("engine-kill-apply", 43, "commit.before_apply");
}
