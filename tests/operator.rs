//! The operator commands against the local stack: `outbound status` names
//! the owner, state and lag of every task and the sink partitions' lag and
//! oldest unacknowledged record; `outbound reset` refuses while an instance
//! runs, asks for confirmation, then removes the internal topics, changelogs,
//! group offsets and local state (not the output topics), after which a new
//! `outbound run` reprocesses everything to the same outputs.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::history::generate;
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(240);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `outbound ARGS --app-id APP --topic-prefix APP --kafka-partitions 2`.
fn outbound(app: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outbound"))
        .args(args)
        .args(["--app-id", app, "--source-topic-prefix", app])
        .args(["--kafka-partitions", "2"])
        .env("OUTBOUND_KAFKA__BOOTSTRAP_SERVERS", bootstrap())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("outbound runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn topics_of(prefix: &str) -> Vec<String> {
    let c: BaseConsumer = plain_client().create().expect("consumer");
    let md = c
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect()
}

/// Polls `outbound status --json` until every task is owned by instance 1,
/// running and committed to its end.
fn caught_up(app: &str, instance_url: &str) -> Value {
    wait_for("status: every task running with no lag", DEADLINE, || {
        let o = outbound(app, &["status", "--json", "--instance-url", instance_url]);
        if !o.status.success() {
            return Err(text(&o));
        }
        let v: Value = serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
        let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
        // 3 source topics and 3 internal topics, 2 partitions each.
        if tasks.len() != 12 {
            return Err(format!("{} tasks: {v}", tasks.len()));
        }
        let behind: Vec<&Value> = tasks
            .iter()
            .filter(|t| t["owner"] != "1" || t["state"] != "running" || t["lag"] != 0)
            .collect();
        match behind.is_empty() {
            true => Ok(v),
            false => Err(format!("not yet: {behind:?}")),
        }
    })
}

#[test]
fn status_reset_and_reprocess() {
    let app = unique("ops");
    create_source_topics(&app, 2);
    let history = generate(21, &app, 30, 800);
    produce(&producer(), &app, &history.records);
    let (want_details, want_rollups) = expected(&history, &app);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let spec = RunSpec {
        app_id: &app,
        instance: "1",
        prefix: &app,
        state_dir: &state,
        log_dir: dir.path(),
        partitions: 2,
    };
    let converge = |run: &mut Outbound| {
        wait_for("the outputs to equal the pipeline core", DEADLINE, || {
            if !run.is_running() {
                return Err(format!("outbound exited:\n{}", run.log_tail(30)));
            }
            diff(&want_details, &fold_topic(&format!("{app}-details"))?)?;
            diff(&want_rollups, &fold_topic(&format!("{app}-rollups"))?)
        })
    };
    let mut run = Outbound::start_with(&spec, 0, &[], &["--metrics-listen", &listen]);
    converge(&mut run);

    // Every task owned by instance 1, running, caught up.
    let instance_url = format!("1=http://{listen}");
    let status = caught_up(&app, &instance_url);
    assert!(status["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .all(|t| t["last_commit_age_s"].as_f64().is_some_and(|a| a < 60.0)));
    // The stream thread's client: `<app>-<instance>-stream`.
    assert_eq!(
        status["group"]["members"][0]["client_id"],
        format!("{app}-1-stream")
    );
    // No sink runs: every output partition with records is all unacknowledged.
    let sink = status["sink"].as_array().expect("sink partitions");
    assert_eq!(sink.len(), 4, "{sink:?}");
    for p in sink {
        assert_eq!(p["committed"], Value::Null, "{p}");
        // Lag counts the records left, not the transaction markers the
        // end offset also covers: every record is left, so 0 < lag <= end.
        let (lag, end) = (p["lag"].as_i64(), p["end"].as_i64());
        assert!(
            matches!((lag, end), (Some(l), Some(e)) if (l == 0) == (e == 0) && l <= e),
            "{p}"
        );
        if p["lag"].as_i64() > Some(0) {
            assert!(p["oldest_unacked_age_s"].as_f64().is_some(), "{p}");
        }
    }
    let table = text(&outbound(&app, &["status"]));
    assert!(
        table.contains("STAGE") && table.contains(&format!("{app}-rekey[0]")),
        "{table}"
    );

    // Reset refuses while the instance runs, and without confirmation.
    let o = outbound(&app, &["reset", "--yes"]);
    assert!(
        !o.status.success() && text(&o).contains("live member"),
        "{}",
        text(&o)
    );
    run.stop_cleanly();
    let o = outbound(
        &app,
        &["reset", "--state-dir", state.to_str().expect("utf-8")],
    );
    assert!(
        !o.status.success() && text(&o).contains("--yes"),
        "{}",
        text(&o)
    );
    assert!(topics_of(&app).contains(&format!("{app}-rekey")));

    let o = wait_for("reset --yes once the group is empty", DEADLINE, || {
        let o = outbound(
            &app,
            &[
                "reset",
                "--yes",
                "--state-dir",
                state.to_str().expect("utf-8"),
            ],
        );
        match o.status.success() {
            true => Ok(o),
            false => Err(text(&o)),
        }
    });
    let left = topics_of(&app);
    for gone in ["rekey", "detail-changes", "rollup-deltas", "join-changelog"] {
        assert!(
            !left.contains(&format!("{app}-{gone}")),
            "{gone} survived: {}",
            text(&o)
        );
    }
    for kept in ["details", "rollups"] {
        assert!(
            left.contains(&format!("{app}-{kept}")),
            "{kept} was deleted"
        );
    }
    assert!(!state.join(&app).exists(), "local state survived");

    // From nothing, the same outputs.
    // From nothing (no offsets, no internal topics), the same outputs: every
    // source partition is consumed and committed again.
    let mut again = Outbound::start_with(&spec, 1, &[], &["--metrics-listen", &listen]);
    converge(&mut again);
    caught_up(&app, &instance_url);
    assert!(topics_of(&app).contains(&format!("{app}-rekey")));
    again.stop_cleanly();
}
