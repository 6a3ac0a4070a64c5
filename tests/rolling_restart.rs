//! A rolling restart and a scale 1 → 3 → 1 under steady load, as an
//! operator does them (issue #11, item 6): MariaDB → Debezium → Kafka →
//! three `outbound run` instances (each with its sink) → the search node,
//! while `outbound loadgen` writes at a modest rate.
//!
//!   - roll: SIGTERM each instance in turn; once the other two own all its
//!     partitions (both consumer groups stable on them, all ready), start it
//!     again on its state directory and wait until the three share the work;
//!   - scale: 3 → 1, then 1 → 3 with new instances (state directories gone,
//!     so they restore from the changelogs), then 3 → 1, each step waited
//!     for the same way.
//!
//! Pass/fail is correctness only: every SIGTERM ends in exit 0, every start
//! becomes ready within a generous deadline, and after the load stops
//! `outbound reconcile --wait-for-quiet` reads zero differences and the
//! exactly-once audit passes. Timings are measured and printed, never
//! asserted: a `read_committed` consumer on the output topics running
//! through the test gives the longest gap between output commits and the
//! end-to-end latency (source timestamp → visible) of each phase, against
//! a steady phase with nothing happening measured in the same run.
//!
//! It restarts no stack component: it runs on the shared stack. The test
//! suite runs one roll; OUTBOUND_ROLLING_MINUTES=N keeps rolling for N
//! minutes before the scale.

mod chaos_support;
mod common;
mod rolling_support;
mod source_tables;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chaos_support::audit::audit;
use outbound::config::Config;
use outbound::loadgen::{self, LoadOptions};
use outbound::reconcile::{self, Collect, Options, QuietOptions};
use rolling_support::fleet::{Fleet, Readiness};
use rolling_support::outputs::{figures, wall_ms, OutputFigures, OutputWatch, Window};
use source_tables::app_db;

const PARTITIONS: i32 = 4;
const IDS: [&str; 3] = ["0", "1", "2"];
/// Transactions per second of the load.
const RATE: f64 = 10.0;
/// Generous: a start includes joining both groups and restoring state on a
/// loaded 2-core machine.
const READY_DEADLINE: Duration = Duration::from_secs(180);
const SETTLE_DEADLINE: Duration = Duration::from_secs(180);
/// The steady phase the roll and the scale are compared with.
const STEADY: Duration = Duration::from_secs(15);

fn search_url() -> String {
    std::env::var("OUTBOUND_SEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

/// One restart or start of an instance, as measured.
struct Start {
    id: &'static str,
    /// SIGTERM → exit, then the time for the others to own everything (a
    /// scale-up has neither).
    stop: Option<(Duration, Duration)>,
    fresh_state: bool,
    ready: Readiness,
    /// Start → the groups stable with it as a member again.
    settled: Duration,
}

/// Stops instances 2 then 1, each once the groups have settled: (id, SIGTERM
/// → exit, the others' takeover).
fn down_to_one(fleet: &mut Fleet, stops: &mut Vec<(&'static str, Duration, Duration)>) {
    for id in ["2", "1"] {
        let exit = fleet.stop(id);
        stops.push((id, exit, fleet.wait_settled(SETTLE_DEADLINE)));
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn opt_secs(s: Option<f64>) -> String {
    s.map_or("n/a".into(), |s| format!("{s:.1} s"))
}

/// 12345 → "12 345".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn describe(f: &OutputFigures) -> String {
    format!(
        "longest output gap {}, p50 {}, p99 {} ({} output records)",
        secs(f.longest_gap),
        opt_secs(f.p50),
        opt_secs(f.p99),
        thousands(f.records as u64)
    )
}

fn describe_start(s: &Start) -> String {
    let mut line = format!("instance {}: ", s.id);
    if let Some((exit, takeover)) = s.stop {
        let _ = write!(
            line,
            "SIGTERM → exit 0 in {}, others took over in {}; ",
            secs(exit),
            secs(takeover)
        );
    }
    let _ = write!(
        line,
        "ready after {}start {} with {} keys of state ({} changelog records restored), groups settled {} later",
        if s.fresh_state { "a fresh (empty state) " } else { "re" },
        secs(s.ready.ready_after),
        thousands(s.ready.keys),
        thousands(s.ready.restored),
        secs(s.settled),
    );
    line
}

#[test]
fn rolling_restart_and_scaling_keep_outputs_exact() {
    let minutes: f64 = std::env::var("OUTBOUND_ROLLING_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0.0);
    let test_started = Instant::now();
    let since_ms = wall_ms();
    let token = format!("it-roll-{}", std::process::id());
    let mut config = Config {
        app_id: token.clone(),
        ..Config::default()
    };
    config.kafka.partitions = PARTITIONS;
    config.sink.url = search_url();
    config.sink.index_prefix = Some(format!("{token}-"));
    let dir = tempfile::tempdir().expect("tempdir");
    let watch = OutputWatch::start(
        common::plain_client(),
        vec![config.topic("details"), config.topic("rollups")],
    );
    let load = loadgen::spawn(
        app_db(),
        LoadOptions {
            seed: 11,
            rate: Some(RATE),
            count: None,
            duration: None,
            messy_share: 0.1,
            // Steady traffic: gaps in the output are the fleet's, not the load's.
            burst_chance: 0.0,
            order_prefix: format!("roll{}-", std::process::id()),
            ..LoadOptions::default()
        },
    )
    .expect("loadgen starts");
    let mut fleet = Fleet::new(config.clone(), PARTITIONS, search_url(), dir.path());
    for id in IDS {
        fleet.start(id);
    }
    for id in IDS {
        fleet.wait_ready(id, READY_DEADLINE);
    }
    fleet.wait_settled(SETTLE_DEADLINE);
    // Caught up: a record of this run's traffic is visible.
    common::wait_for(
        "the outputs of this run's load",
        Duration::from_secs(180),
        || {
            fleet.check_alive();
            watch
                .arrivals()
                .iter()
                .any(|a| a.source_ms >= since_ms)
                .then_some(())
                .ok_or_else(|| "none yet".to_owned())
        },
    );

    // Steady: three instances, nothing happening — the baseline. (A
    // measuring window, not a wait for a condition.)
    let steady_start = Instant::now();
    std::thread::sleep(STEADY);
    let steady = Window {
        start: steady_start,
        end: Instant::now(),
    };
    fleet.check_alive();

    // The roll: each instance in turn, as many rounds as asked for.
    let roll_start = Instant::now();
    let roll_until = roll_start + Duration::from_secs_f64(minutes * 60.0);
    let mut restarts = Vec::new();
    loop {
        for id in IDS {
            let exit = fleet.stop(id);
            let takeover = fleet.wait_settled(SETTLE_DEADLINE);
            fleet.start(id);
            let ready = fleet.wait_ready(id, READY_DEADLINE);
            let settled = fleet.wait_settled(SETTLE_DEADLINE);
            restarts.push(Start {
                id,
                stop: Some((exit, takeover)),
                fresh_state: false,
                ready,
                settled,
            });
        }
        if Instant::now() >= roll_until {
            break;
        }
    }
    let roll = Window {
        start: roll_start,
        end: Instant::now(),
    };

    // The scale: 3 → 1, 1 → 3 with new instances, 3 → 1.
    let scale_start = Instant::now();
    let mut scale_stops = Vec::new();
    let mut scale_starts = Vec::new();
    down_to_one(&mut fleet, &mut scale_stops);
    for id in ["1", "2"] {
        std::fs::remove_dir_all(fleet.state_dir(id)).expect("state dir removed");
        fleet.start(id);
        let ready = fleet.wait_ready(id, READY_DEADLINE);
        let settled = fleet.wait_settled(SETTLE_DEADLINE);
        scale_starts.push(Start {
            id,
            stop: None,
            fresh_state: true,
            ready,
            settled,
        });
    }
    down_to_one(&mut fleet, &mut scale_stops);
    let scale = Window {
        start: scale_start,
        end: Instant::now(),
    };

    // Stop the load, drain, compare. Others' tests may write to the shared
    // tables too: a comparison that sees their writes in flight is retried.
    let stats = load.finish().expect("loadgen ran");
    let load_stopped = Instant::now();
    let quiet = QuietOptions {
        timeout: Duration::from_secs(300),
        settle: Duration::from_secs(5),
    };
    let mut attempts = 0;
    let (drain, report, seen) = loop {
        attempts += 1;
        let mut seen = Collect::default();
        let (_, report) = reconcile::wait_and_reconcile(
            &config,
            &app_db(),
            &Options::default(),
            Some(quiet),
            &mut seen,
        )
        .unwrap_or_else(|e| {
            panic!(
                "reconcile: {e:#}; instance 0 log:\n{}",
                fleet.running["0"].process.log_tail(40)
            )
        });
        let drain = load_stopped
            .elapsed()
            .saturating_sub(Duration::from_millis(report.elapsed_ms));
        if report.differences() == 0 || attempts == 3 {
            break (drain, report, seen);
        }
    };
    fleet.check_alive();
    let audit = audit(&config).expect("the audit reads the topics");
    let arrivals = watch.finish();
    let whole_seconds = arrivals
        .iter()
        .filter(|a| a.source_ms >= since_ms)
        .all(|a| a.source_ms % 1000 == 0);

    let (steady_f, roll_f, scale_f) = (
        figures(&arrivals, steady, since_ms),
        figures(&arrivals, roll, since_ms),
        figures(&arrivals, scale, since_ms),
    );
    let worst_ready = restarts
        .iter()
        .map(|r| r.ready.ready_after)
        .max()
        .unwrap_or_default();
    let keys = restarts.iter().map(|r| r.ready.keys).max().unwrap_or(0);
    println!(
        "rolling restart report ({:.1} min; {RATE} tx/s; {PARTITIONS} partitions per internal topic; {} restarts)",
        test_started.elapsed().as_secs_f64() / 60.0,
        restarts.len()
    );
    println!(
        "  rolling restart: longest output gap {}, p99 {}, ready after restart {} with {} keys",
        secs(roll_f.longest_gap),
        opt_secs(roll_f.p99),
        secs(worst_ready),
        thousands(keys)
    );
    println!(
        "  steady, 3 instances ({}): {}",
        secs(steady.length()),
        describe(&steady_f)
    );
    println!("  roll ({}): {}", secs(roll.length()), describe(&roll_f));
    for r in &restarts {
        println!("    {}", describe_start(r));
    }
    println!(
        "  scale 3 → 1 → 3 → 1 ({}): {}",
        secs(scale.length()),
        describe(&scale_f)
    );
    for (id, exit, takeover) in &scale_stops {
        println!(
            "    instance {id}: SIGTERM → exit 0 in {}, others took over in {}",
            secs(*exit),
            secs(*takeover)
        );
    }
    for s in &scale_starts {
        println!("    {}", describe_start(s));
    }
    if whole_seconds {
        println!(
            "  (source timestamps are the binlog's whole seconds: latencies read up to 1 s high)"
        );
    }
    println!("  {stats}");
    println!(
        "  drain: {} from the load stopping to quiet; reconcile: {} differences after {attempts} attempt(s) ({})",
        secs(drain),
        report.differences(),
        report
            .indices
            .iter()
            .map(|s| format!("{} {}/{}", s.index, s.expected, s.indexed))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  audit: {audit}");

    assert_eq!(
        report.differences(),
        0,
        "reconcile differences: {:#?}",
        &seen.differences[..seen.differences.len().min(10)]
    );
    assert!(audit.passed(), "exactly-once audit failed: {audit}");
    fleet.stop("0");
    let _ = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .delete(&format!("{}/{token}-*", search_url()))
        .call();
}
