//! Chaos on the whole real path (issue #12): MariaDB → Debezium → Kafka →
//! several `outbound run` instances (each with its sink) → the search node,
//! while `outbound loadgen` writes, with the faults users meet:
//!   - kill -9 of instances, some restarted with their state directory gone;
//!   - an instance paused (SIGSTOP) past the session timeout, then resumed;
//!   - a second process started for a while with a live instance id;
//!   - a broker restart, a Kafka Connect restart, a search-node outage;
//!   - scaling 1 → 3 → 1 under load.
//!
//! After the load stops, `outbound reconcile --wait-for-quiet` must read
//! zero differences, and the exactly-once audit must pass: every source
//! record reflected exactly once in the committed `-rekey` output.
//!
//! The test suite runs a short version; `scripts/chaos.sh --minutes N` the
//! long one (OUTBOUND_CHAOS_MINUTES). It restarts Kafka, Connect and the
//! search node of the stack it runs on (OUTBOUND_STACK_DIR): its own test
//! binary, and during development a private stack (scripts/isolated.sh).

// test-runner: exclusive — stops or freezes a component of the shared
// stack, so scripts/run-tests.py runs this binary alone.

mod chaos_support;
mod common;
mod source_tables;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chaos_support::audit::audit;
use common::{Outbound, RunSpec};
use outbound::config::Config;
use outbound::loadgen::{self, LoadOptions};
use outbound::reconcile::{self, Collect, Options, QuietOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use source_tables::app_db;

const PARTITIONS: i32 = 4;

fn search_url() -> String {
    std::env::var("OUTBOUND_SEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

/// `stack/stack.sh ACTION COMPONENT` on the stack the test runs against.
/// `up` is tried up to three times: its health waits (120 s for the broker)
/// can run out on a loaded machine while the component is still starting.
fn stack(action: &str, component: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("stack/stack.sh");
    let attempts = if action == "up" { 3 } else { 1 };
    let mut out = None;
    for _ in 0..attempts {
        let o = Command::new("bash")
            .arg(&script)
            .args([action, component])
            .output()
            .unwrap_or_else(|e| panic!("running stack/stack.sh {action} {component}: {e}"));
        let ok = o.status.success();
        out = Some(o);
        if ok {
            break;
        }
    }
    let out = out.expect("at least one attempt");
    assert!(
        out.status.success(),
        "stack/stack.sh {action} {component} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Brings every component back up however the test ends.
struct StackBackUp;

impl Drop for StackBackUp {
    fn drop(&mut self) {
        for c in ["kafka", "connect", "opensearch"] {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("stack/stack.sh");
            let _ = Command::new("bash").arg(&script).args(["up", c]).output();
        }
    }
}

fn signal(child: &Outbound, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.child.id().to_string()])
        .status();
}

/// The instances of the app, by instance id.
struct Fleet<'a> {
    app_id: &'a str,
    index_prefix: String,
    dir: &'a Path,
    running: BTreeMap<String, Outbound>,
    generation: usize,
}

impl Fleet<'_> {
    fn spec(&self, id: &str) -> (PathBuf, PathBuf) {
        (self.dir.join("state").join(id), self.dir.join("logs"))
    }

    fn start(&mut self, id: &str) -> Outbound {
        let (state, logs) = self.spec(id);
        self.generation += 1;
        let spec = RunSpec {
            app_id: self.app_id,
            instance: id,
            prefix: "outbound",
            state_dir: &state,
            log_dir: &logs,
            partitions: PARTITIONS,
        };
        Outbound::start_with_env(
            &spec,
            self.generation,
            &[
                ("OUTBOUND_SINK__IN_RUN", "true"),
                ("OUTBOUND_SINK__INDEX_PREFIX", &self.index_prefix),
                ("OUTBOUND_SINK__URL", &search_url()),
                // The audit reads the committed rekey output: keep it.
                ("OUTBOUND_KAFKA__PURGE_INTERVAL_MS", "0"),
            ],
        )
    }

    fn up(&mut self, id: &str) {
        if !self.running.contains_key(id) {
            let p = self.start(id);
            self.running.insert(id.to_owned(), p);
        }
    }

    fn kill9(&mut self, id: &str, wipe: bool) {
        if let Some(mut p) = self.running.remove(id) {
            p.kill9();
        }
        if wipe {
            let _ = std::fs::remove_dir_all(self.spec(id).0);
        }
    }

    fn stop(&mut self, id: &str) {
        if let Some(mut p) = self.running.remove(id) {
            let status = p.stop();
            assert!(
                status.success(),
                "instance {id} did not stop cleanly: {status}; log:\n{}",
                p.log_tail(120)
            );
        }
    }

    /// Starts `id` again if it exited, which it may only have done saying
    /// `why`.
    fn restart_if_exited(&mut self, id: &str, why: &str) {
        let exited = self.running.get_mut(id).is_some_and(|p| !p.is_running());
        if exited {
            let p = self.running.remove(id).expect("present");
            assert!(
                p.log_text().contains(why),
                "instance {id} exited, not because {why:?}; log:\n{}",
                p.log_tail(60)
            );
            self.up(id);
        }
    }

    /// Every instance that should be running still is (none exited by itself).
    fn check_alive(&mut self) {
        for (id, p) in self.running.iter_mut() {
            assert!(
                p.is_running(),
                "instance {id} exited by itself; log:\n{}",
                p.log_tail(60)
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Kill9,
    Kill9WipeState,
    PausePastSessionTimeout,
    DuplicateInstanceId,
    BrokerRestart,
    ConnectRestart,
    SearchOutage,
    ScaleOneThreeOne,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::ScaleOneThreeOne,
        Fault::Kill9,
        Fault::PausePastSessionTimeout,
        Fault::Kill9WipeState,
        Fault::DuplicateInstanceId,
        Fault::BrokerRestart,
        Fault::ConnectRestart,
        Fault::SearchOutage,
    ];
}

#[test]
fn exactly_right_under_chaos() {
    let minutes: f64 = std::env::var("OUTBOUND_CHAOS_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0.0);
    let seed: u64 = std::env::var("OUTBOUND_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let long = minutes > 0.0;
    let token = format!("it-chaos-{}", std::process::id());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        app_id: token.clone(),
        ..Config::default()
    };
    config.kafka.partitions = PARTITIONS;
    config.sink.url = search_url();
    config.sink.index_prefix = Some(format!("{token}-"));
    let _back_up = StackBackUp;
    let mut fleet = Fleet {
        app_id: &token,
        index_prefix: format!("{token}-"),
        dir: dir.path(),
        running: BTreeMap::new(),
        generation: 0,
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults: BTreeMap<Fault, u32> = BTreeMap::new();
    let load = loadgen::spawn(
        app_db(),
        LoadOptions {
            seed,
            rate: Some(25.0),
            count: None,
            duration: None,
            messy_share: 0.1,
            order_prefix: format!("chaos{}-", std::process::id()),
            ..LoadOptions::default()
        },
    )
    .expect("loadgen starts");
    let started = Instant::now();
    let ids = ["0", "1", "2"];
    // Scale 1 → 3 under load.
    fleet.up("0");
    let pause = |d: u64| std::thread::sleep(Duration::from_secs(d)); // fault pacing, not a wait for a condition
    pause(10);
    let mut plan: Vec<Fault> = Fault::ALL.to_vec();
    // OUTBOUND_CHAOS_FAULTS=Kill9,SearchOutage,... narrows the faults (to
    // bisect a failure); by default every fault runs.
    if let Ok(only) = std::env::var("OUTBOUND_CHAOS_FAULTS") {
        plan.retain(|f| only.split(',').any(|o| o.trim() == format!("{f:?}")));
        assert!(
            !plan.is_empty(),
            "OUTBOUND_CHAOS_FAULTS={only:?} names no fault of {:?}",
            Fault::ALL
        );
    }
    let all = plan.clone();
    let deadline = started + Duration::from_secs_f64(minutes * 60.0);
    let mut i = 0;
    loop {
        let fault = if i < plan.len() {
            plan[i]
        } else if long && Instant::now() < deadline {
            all[rng.random_range(0..all.len())]
        } else {
            break;
        };
        i += 1;
        fleet.check_alive();
        match fault {
            Fault::ScaleOneThreeOne => {
                for id in &ids {
                    fleet.up(id);
                }
                pause(15);
                fleet.check_alive();
                // Down to one for a moment, then back to three for the rest.
                fleet.stop("1");
                fleet.stop("2");
                pause(10);
                fleet.up("1");
                fleet.up("2");
            }
            Fault::Kill9 | Fault::Kill9WipeState => {
                let id = ids[rng.random_range(0..ids.len())];
                fleet.kill9(id, fault == Fault::Kill9WipeState);
                pause(rng.random_range(1..5));
                fleet.up(id);
            }
            Fault::PausePastSessionTimeout => {
                let id = ids[rng.random_range(0..ids.len())];
                fleet.up(id);
                signal(&fleet.running[id], "-STOP");
                pause(15); // session.timeout.ms is 10 s
                signal(&fleet.running[id], "-CONT");
            }
            Fault::DuplicateInstanceId => {
                // The newer process wins the transactional id and the older
                // one exits, saying why (tests/engine_fencing.rs); as an
                // orchestrator would, the older one is started again once
                // the twin is gone.
                let id = ids[rng.random_range(0..ids.len())];
                fleet.up(id);
                let mut twin = fleet.start(id);
                pause(20);
                twin.kill9();
                fleet.restart_if_exited(id, "another process took over transactional id");
            }
            Fault::BrokerRestart => {
                stack("down", "kafka");
                pause(3);
                stack("up", "kafka");
                // As an operator would: restart Connect's tasks if the outage failed them.
                stack("up", "connect");
            }
            Fault::ConnectRestart => {
                stack("down", "connect");
                pause(3);
                stack("up", "connect");
            }
            Fault::SearchOutage => {
                stack("down", "opensearch");
                pause(30);
                stack("up", "opensearch");
            }
        }
        *faults.entry(fault).or_default() += 1;
        pause(5);
        if i >= plan.len() && !long {
            plan.clear();
        }
    }
    // Scale back to one under the last of the load, then stop the load.
    fleet.stop("1");
    fleet.stop("2");
    pause(5);
    let stats = load.finish().expect("loadgen ran");
    let load_stopped = Instant::now();
    fleet.up("0");
    fleet.check_alive();

    // Drain, then compare.
    let quiet = QuietOptions {
        timeout: Duration::from_secs(900),
        settle: Duration::from_secs(5),
    };
    let mut seen = Collect::default();
    let (waited, report) = reconcile::wait_and_reconcile(
        &config,
        &app_db(),
        &Options::default(),
        Some(quiet),
        &mut seen,
    )
    .unwrap_or_else(|e| {
        panic!(
            "reconcile: {e:#}; instance 0 log:\n{}",
            fleet.running["0"].log_tail(40)
        )
    });
    let drain = waited.unwrap_or_default().max(
        load_stopped
            .elapsed()
            .saturating_sub(Duration::from_millis(report.elapsed_ms)),
    );
    let audit = audit(&config).expect("the audit reads the topics");
    let by_kind: Vec<String> = faults.iter().map(|(f, n)| format!("{f:?} {n}")).collect();
    println!(
        "chaos report ({:.1} min, seed {seed}, {} instances at most)",
        started.elapsed().as_secs_f64() / 60.0,
        ids.len()
    );
    println!("  events applied: {stats}");
    println!("  faults: {}", by_kind.join(", "));
    println!(
        "  drain: {:.1} s from the load stopping to quiet",
        drain.as_secs_f64()
    );
    println!(
        "  reconcile: {} differences ({})",
        report.differences(),
        report
            .indices
            .iter()
            .map(|s| format!("{} {}/{}", s.index, s.expected, s.indexed))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  audit: {audit}");
    fleet.check_alive();
    assert_eq!(
        report.differences(),
        0,
        "reconcile differences: {:#?}",
        &seen.differences[..seen.differences.len().min(10)]
    );
    assert!(audit.passed(), "exactly-once audit failed: {audit}");
    for id in ids {
        fleet.stop(id);
    }
    let _ = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .delete(&format!("{}/{token}-*", search_url()))
        .call();
}
