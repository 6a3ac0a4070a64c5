//! An Elasticsearch problem does not stop the exactly-once stages (issue
//! #14, hole 6): `outbound run` with its in-process sink pointed at a path
//! the search node refuses every bulk request on (a proxy path gone wrong:
//! HTTP 400 for every request). The stream stages keep processing — the
//! output topics fill with every expected detail document — while the sink
//! backs off and says so on its own health endpoint (`/healthz/sink` 503,
//! `outbound_sink_up 0`); the process stays live (`/healthz` 200).
//!
//! Needs `stack/stack.sh up kafka opensearch`.

mod common;
mod sink_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::history::generate;
use common::{bootstrap, create_source_topics, expected, fold_topic, produce, producer, unique};
use common::{diff, wait_for};
use sink_support::{agent, search_url};

const PARTITIONS: i32 = 2;
const DEADLINE: Duration = Duration::from_secs(240);

fn get(addr: &str, path: &str) -> (u16, String) {
    match agent().get(format!("http://{addr}{path}")).call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

#[test]
fn the_stream_stages_keep_running_while_the_in_process_sink_fails() {
    let prefix = unique("sink-iso");
    let dir = tempfile::tempdir().expect("tempdir");
    create_source_topics(&prefix, PARTITIONS);
    let history = generate(11, &prefix, 100, 1_000);
    let (want_details, _) = expected(&history, &prefix);
    assert!(want_details.len() > 20);
    produce(&producer(), &prefix, &history.records);

    let log = dir.path().join("outbound.log");
    let file = std::fs::File::create(&log).expect("log file");
    let url = format!("{}/proxy/elasticsearch/", search_url());
    let mut child = Command::new(env!("CARGO_BIN_EXE_outbound"))
        .args(["run", "--app-id", &prefix, "--instance-id", "a"])
        .args(["--topic-prefix", &prefix])
        .args(["--partitions", &PARTITIONS.to_string()])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("OUTBOUND_KAFKA__BOOTSTRAP_SERVERS", bootstrap())
        .env("OUTBOUND_SINK__IN_RUN", "true")
        .env("OUTBOUND_SINK__URL", &url)
        .env("OUTBOUND_SINK__INSTALL_TEMPLATES", "false")
        .env("OUTBOUND_SINK__INDEX_PREFIX", format!("{prefix}-"))
        .env("OUTBOUND_SINK__RETRY_MAX_BACKOFF_MS", "2000")
        .env("RUST_LOG", "info,rdkafka=warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(file.try_clone().expect("log file")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("outbound binary starts");
    let log_tail = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    let addr = wait_for(
        "the metrics endpoint's address in the log",
        DEADLINE,
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .find(|l| l.contains("metrics endpoint listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .map(|a| a.split_whitespace().next().unwrap_or_default().to_owned())
                .ok_or_else(|| "not yet".to_owned())
        },
    );

    let mut alive = || matches!(child.try_wait(), Ok(None));
    wait_for(
        "the stream stages to write every detail document",
        DEADLINE,
        || {
            assert!(alive(), "outbound exited; log:\n{}", log_tail());
            let got = fold_topic(&format!("{prefix}-details"))?;
            diff(&want_details, &got)
        },
    );
    wait_for("/healthz/sink to report the failing sink", DEADLINE, || {
        assert!(alive(), "outbound exited; log:\n{}", log_tail());
        match get(&addr, "/healthz/sink") {
            (503, body) if body.contains("400") => Ok(body),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(alive(), "outbound exited; log:\n{}", log_tail());
    assert_eq!(get(&addr, "/healthz").0, 200, "the process is live");
    let (_, metrics) = get(&addr, "/metrics");
    assert!(
        metrics.contains("outbound_sink_up 0"),
        "outbound_sink_up reports the sink down"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = wait_for("outbound to stop on SIGTERM", DEADLINE, || {
        child
            .try_wait()
            .ok()
            .flatten()
            .ok_or_else(|| "running".to_owned())
    });
    assert!(
        status.success(),
        "clean exit: {status}; log:\n{}",
        log_tail()
    );
}
