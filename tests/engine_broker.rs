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

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::engine::{Scenario, DEADLINE};
use common::*;

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

#[test]
fn broker_stalls_are_ridden_out_and_sigterm_during_one_ends_within_the_deadline() {
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
        std::thread::sleep(Duration::from_secs(10));
        let waited = waiting.elapsed();
        let (spent_a, spent_b) = (a.cpu_time() - cpu_a, b.cpu_time() - cpu_b);
        signal_broker("CONT");
        println!("stall {stall}: CPU while waiting {waited:?}: a {spent_a:?}, b {spent_b:?}");
        for (id, spent) in [("a", spent_a), ("b", spent_b)] {
            assert!(
                spent < waited / 4,
                "instance {id} used {spent:?} of CPU in {waited:?} of waiting on a frozen broker (stall {stall})"
            );
        }
        wait_for(
            &format!("both instances to commit again after stall {stall}"),
            DEADLINE,
            || {
                assert!(a.is_running(), "a exited:\n{}", a.log_tail(20));
                assert!(b.is_running(), "b exited:\n{}", b.log_tail(20));
                let (na, nb) = (committed(&a), committed(&b));
                if na > ca && nb > cb {
                    Ok(())
                } else {
                    Err(format!("a {ca} -> {na}, b {cb} -> {nb}"))
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
