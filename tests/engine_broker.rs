//! Broker stalls: the broker process is frozen (SIGSTOP) for longer than
//! the transaction timeout, four times, while two instances work through a
//! backlog — the coordinator then times their transactions out and fences
//! their producers, which looks like another instance with their id unless
//! they tell the two apart. Neither may exit, and the outputs end exact.
//! Then a SIGTERM while the broker is frozen must end the process within
//! its shutdown deadline.
//!
//! Freezes the local stack's broker (through its PID file): it lives in its
//! own test binary so no other test runs meanwhile. While developing, run it
//! against a private stack: `scripts/isolated.sh NAME env
//! OUTBOUND_STACK_DIR=/tmp/NAME-stack cargo test --test engine_broker`.

// test-runner: exclusive (stack: kafka opensearch) — stops or freezes a component of the shared
// stack, so scripts/run-tests.py runs this binary alone.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::engine::{Scenario, DEADLINE};
use common::*;
use outbound::config::Config;
use outbound::engine::record_collector::Record;
use outbound::engine::topology::Output;
use outbound::engine::transaction::Transactions;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, TopicPartitionList};

fn broker_pid() -> String {
    let dir = std::env::var_os("OUTBOUND_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".stack"));
    let path = dir.join("run/kafka.pid");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading the broker's PID file {}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn signal_broker(signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), broker_pid()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} broker");
}

/// Thaws the broker however the test ends.
struct Thaw;

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT".to_owned(), broker_pid()])
            .status();
    }
}

fn committed(o: &Outbound) -> f64 {
    o.metric("outbound_transactions_total", &["outcome=\"committed\""])
        .unwrap_or(0.0)
}

/// The threads that spent the most CPU since `before` (a
/// `thread_cpu_times` reading), busiest first.
fn busiest_threads(o: &Outbound, before: &BTreeMap<u32, (String, Duration)>) -> String {
    busiest_since(o.pid(), before)
}

/// The threads of process `pid` that spent the most CPU since `before`.
fn busiest_since(pid: u32, before: &BTreeMap<u32, (String, Duration)>) -> String {
    let mut spent: Vec<(Duration, String)> = thread_cpu_times_of(pid)
        .into_iter()
        .map(|(tid, (name, now))| {
            let then = before.get(&tid).map_or(Duration::ZERO, |(_, t)| *t);
            (now.saturating_sub(then), format!("{name} ({tid})"))
        })
        .collect();
    spent.sort_by_key(|s| std::cmp::Reverse(s.0));
    spent
        .iter()
        .take(4)
        .map(|(d, name)| format!("{name} {d:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The instance's consumer lag, one `topic[partition] lag` per input
/// partition it owns (from its librdkafka statistics).
fn lags(o: &Outbound) -> Vec<(String, i64)> {
    let Ok((_, body)) = o.http("/metrics") else {
        return Vec::new();
    };
    body.lines()
        .filter(|l| l.starts_with("outbound_consumer_lag_records{"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let label = |k: &str| {
                let rest = series.split(&format!("{k}=\"")).nth(1)?;
                rest.split('"').next().map(str::to_owned)
            };
            let name = format!("{}[{}]", label("topic")?, label("partition")?);
            Some((name, value.parse().ok()?))
        })
        .collect()
}

/// Whether the instance is past the stall: it committed again since
/// `before`, or it owns input partitions and has consumed all of them (the
/// assignor may leave it partitions whose backlog is done, e.g. the source
/// partitions once the load is in, and then it has nothing to commit).
fn resumed(o: &Outbound, before: f64) -> Result<(), String> {
    let now = committed(o);
    if now > before {
        return Ok(());
    }
    let lags = lags(o);
    if !lags.is_empty() && lags.iter().all(|(_, lag)| *lag == 0) {
        return Ok(());
    }
    Err(format!("{before} -> {now} commits, lag {lags:?}"))
}

/// A commit whose records the frozen broker never acknowledges waits
/// without spending CPU, in our code or in librdkafka's. librdkafka's
/// broker thread spins on a partition whose five idempotent requests are in
/// flight while more of its records are queued and ready (it sets its
/// wake-up to the ready batch, which it may not send): the records the
/// engine sends while it processes queue up exactly like that.
#[test]
fn a_commit_waiting_on_a_frozen_broker_spends_no_cpu() {
    let _serial = one_at_a_time();
    let _thaw = Thaw;
    let topic = unique("frozen-commit");
    create_topic(&topic, 2, &[]);
    let config = Config {
        kafka: outbound::config::KafkaConfig {
            bootstrap_servers: bootstrap(),
            ..Default::default()
        },
        ..Config::default()
    };
    let mut txn = Transactions::new(&config, &topic).expect("transactional producer");
    let group = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", &topic)
        .create::<BaseConsumer>()
        .expect("consumer")
        .group_metadata()
        .expect("group metadata");
    let record = |i: usize| {
        (
            topic.clone(),
            Record {
                output: Output::Details,
                partition: (i % 2) as i32,
                key: format!("k{i}").into_bytes(),
                value: Some(vec![b'x'; 200]),
                timestamp: None,
                headers: Vec::new(),
            },
        )
    };
    // The transaction is open and both partitions are in it.
    let first: Vec<_> = (0..100).map(record).collect();
    txn.send_now(&first, Instant::now() + Duration::from_secs(5))
        .expect("first records queued");
    // Uncommitted: the records stay in the open transaction.
    let watcher = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("isolation.level", "read_uncommitted")
        .create::<BaseConsumer>()
        .expect("consumer");
    wait_for(
        "the first records to reach both partitions",
        DEADLINE,
        || {
            for partition in 0..2 {
                let (_, high) = watcher
                    .fetch_watermarks(&topic, partition, Duration::from_secs(5))
                    .map_err(|e| e.to_string())?;
                if high < 50 {
                    return Err(format!("partition {partition} at {high}"));
                }
            }
            Ok(())
        },
    );
    signal_broker("STOP");
    // As the stream thread does while it processes: small sends, often.
    let started = Instant::now();
    let mut sent = first.len();
    while started.elapsed() < Duration::from_millis(300) {
        let chunk: Vec<_> = (sent..sent + 50).map(record).collect();
        txn.send_now(&chunk, Instant::now() + Duration::from_secs(5))
            .expect("records queued");
        sent += 50;
        std::thread::sleep(Duration::from_millis(1));
    }
    let committing = std::thread::spawn(move || {
        let result = txn.commit(
            &[],
            &[],
            &TopicPartitionList::new(),
            &group,
            Instant::now() + Duration::from_secs(8),
            || (),
        );
        (txn, result.map(|_| ()))
    });
    std::thread::sleep(Duration::from_secs(1));
    let me = std::process::id();
    let (before, threads_before, waiting) =
        (cpu_time_of(me), thread_cpu_times_of(me), Instant::now());
    std::thread::sleep(Duration::from_secs(4));
    let (spent, waited) = (cpu_time_of(me) - before, waiting.elapsed());
    let busiest = busiest_since(me, &threads_before);
    signal_broker("CONT");
    let (_txn, result) = committing.join().expect("commit thread");
    println!("{sent} records sent; CPU while the commit waited {waited:?}: {spent:?} ({busiest}); commit: {result:?}");
    assert!(
        spent < waited / 4,
        "{spent:?} of CPU in {waited:?} of a commit waiting on a frozen broker; busiest threads: {busiest}"
    );
}

#[test]
fn broker_stalls_are_ridden_out_and_sigterm_during_one_ends_within_the_deadline() {
    let _serial = one_at_a_time();
    let _thaw = Thaw;
    let s = Scenario::new("engine-stalls", 61, 1500, 30_000);
    let records = s.history.records.clone();
    let (first, rest) = records.split_at(records.len() / 5);
    produce(&producer(), &s.prefix, first);
    let env = [("OUTBOUND_SHUTDOWN_DEADLINE_MS", "10000")];
    let (state_a, state_b) = (s.state("a"), s.state("b"));
    let mut a = Outbound::start_observed(&s.spec("a", &state_a), 0, &env);
    let mut b = Outbound::start_observed(&s.spec("b", &state_b), 0, &env);
    a.wait_ready(DEADLINE);
    b.wait_ready(DEADLINE);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (prefix, rest, stop) = (s.prefix.clone(), rest.to_vec(), stop.clone());
        std::thread::spawn(move || {
            let p = producer();
            for chunk in rest.chunks(2000) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                produce(&p, &prefix, chunk);
            }
        })
    };
    for stall in 0..4 {
        let (ca, cb) = (committed(&a), committed(&b));
        // Longer than the transaction timeout (10 s).
        signal_broker("STOP");
        // The first seconds finish what was fetched; after that each
        // instance only waits on the broker, which must cost no CPU (a
        // commit whose flush polled in sub-millisecond slices spun a core
        // for the whole stall).
        std::thread::sleep(Duration::from_secs(4));
        let (cpu_a, cpu_b, waiting) = (a.cpu_time(), b.cpu_time(), Instant::now());
        let (threads_a, threads_b) = (a.thread_cpu_times(), b.thread_cpu_times());
        std::thread::sleep(Duration::from_secs(10));
        let waited = waiting.elapsed();
        let (spent_a, spent_b) = (a.cpu_time() - cpu_a, b.cpu_time() - cpu_b);
        let busiest = [
            busiest_threads(&a, &threads_a),
            busiest_threads(&b, &threads_b),
        ];
        let log_ends = [a.log_tail(15), b.log_tail(15)];
        signal_broker("CONT");
        println!("stall {stall}: CPU while waiting {waited:?}: a {spent_a:?}, b {spent_b:?}");
        for (i, (id, spent)) in [("a", spent_a), ("b", spent_b)].into_iter().enumerate() {
            assert!(
                spent < waited / 4,
                "instance {id} used {spent:?} of CPU in {waited:?} of waiting on a frozen broker \
                 (stall {stall}); its busiest threads: {}\nits log then:\n{}",
                busiest[i],
                log_ends[i]
            );
        }
        wait_for(
            &format!("both instances to commit again, or to have consumed what they own, after stall {stall}"),
            DEADLINE,
            || {
                assert!(a.is_running(), "a exited:\n{}", a.log_tail(20));
                assert!(b.is_running(), "b exited:\n{}", b.log_tail(20));
                match (resumed(&a, ca), resumed(&b, cb)) {
                    (Ok(()), Ok(())) => Ok(()),
                    (ra, rb) => Err(format!(
                        "a: {}; b: {}",
                        ra.err().unwrap_or_else(|| "resumed".into()),
                        rb.err().unwrap_or_else(|| "resumed".into())
                    )),
                }
            },
        );
    }
    load.join().expect("load thread");
    s.assert_outputs_converge(&[&a, &b]);
    assert!(a.is_running() && b.is_running());

    // SIGTERM while the broker does not answer: out within the deadline.
    signal_broker("STOP");
    let asked = Instant::now();
    a.signal("TERM");
    let status = a.wait_exit(Duration::from_secs(25));
    let took = asked.elapsed();
    signal_broker("CONT");
    let status = status
        .unwrap_or_else(|| panic!("still running {took:?} after SIGTERM:\n{}", a.log_tail(20)));
    assert!(
        took < Duration::from_secs(15),
        "exited after {took:?} ({status})"
    );
    b.stop_cleanly();
}
