//! Observability, proven against the live local stack (`stack/stack.sh up`):
//! a real `outbound run` (stream stages and the Elasticsearch sink) processes
//! a generated Debezium history; the stack's Prometheus scrapes it through a
//! file-discovery target this test writes; then every PromQL expression of
//! the Grafana dashboards and of the alert rules is evaluated through
//! Prometheus's HTTP API and must return data from *this* process, the alert
//! rules must be loaded and evaluating cleanly, and the counters must agree
//! with the work the test did.
//!
//! Environment: OUTBOUND_TEST_BOOTSTRAP (Kafka), OUTBOUND_TEST_PROMETHEUS
//! (default http://127.0.0.1:9090), OUTBOUND_STACK_DIR (as stack/lib.sh:
//! default <repo>/.stack; targets go to $OUTBOUND_STACK_DIR/prometheus/targets),
//! OUTBOUND_SEARCH_URL (default http://127.0.0.1:9200).

mod common;
mod obs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::history::{generate, SourceRecord, Table};
use common::{bootstrap, create_source_topics, produce, producer, unique, wait_for, Outbound};
use obs::*;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(240);

fn prometheus_url() -> String {
    std::env::var("OUTBOUND_TEST_PROMETHEUS").unwrap_or_else(|_| "http://127.0.0.1:9090".into())
}

fn search_url() -> String {
    std::env::var("OUTBOUND_SEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

fn targets_dir() -> PathBuf {
    let stack = std::env::var("OUTBOUND_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".stack"));
    stack.join("prometheus").join("targets")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// GET; (status, body), or a transport error as text.
fn get(agent: &ureq::Agent, url: &str, query: &[(&str, &str)]) -> Result<(u16, String), String> {
    let mut req = agent.get(url);
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    let mut resp = req.call().map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    Ok((status, body))
}

/// An instant query; the `data.result` vector, or Prometheus's error.
fn query(agent: &ureq::Agent, expr: &str) -> Result<Vec<Value>, String> {
    let (status, body) = get(
        agent,
        &format!("{}/api/v1/query", prometheus_url()),
        &[("query", expr)],
    )?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status} {body}: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "Prometheus rejects {expr}: {} {}",
            v["errorType"], v["error"]
        ));
    }
    match v["data"]["resultType"].as_str() {
        Some("vector") => Ok(v["data"]["result"].as_array().cloned().unwrap_or_default()),
        Some("scalar") => Ok(vec![json!({"metric": {}, "value": v["data"]["result"]})]),
        other => Err(format!("{expr}: unexpected result type {other:?}")),
    }
}

fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// The value of a query that yields one sample.
fn scalar(agent: &ureq::Agent, expr: &str) -> Result<f64, String> {
    let result = query(agent, expr)?;
    match result.as_slice() {
        [one] => Ok(sample_value(one)),
        other => Err(format!("{expr}: {} samples", other.len())),
    }
}

/// Removes the Prometheus target file when the test ends, however it ends.
struct TargetFile(PathBuf);

impl TargetFile {
    fn write(name: &str, addr: &str) -> Self {
        let dir = targets_dir();
        std::fs::create_dir_all(&dir).expect("targets dir");
        let path = dir.join(format!("{name}.json"));
        let tmp = dir.join(format!(".{name}.json.tmp"));
        let body = json!([{"targets": [addr], "labels": {"process": name}}]);
        std::fs::write(&tmp, body.to_string()).expect("target file");
        std::fs::rename(&tmp, &path).expect("target file in place");
        Self(path)
    }
}

impl Drop for TargetFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The address the child logged for its metrics endpoint (it binds port 0).
fn metrics_addr(outbound: &mut Outbound) -> String {
    wait_for(
        "outbound to log its metrics address",
        Duration::from_secs(60),
        || {
            if !outbound.is_running() {
                panic!("outbound exited early:\n{}", outbound.log_text());
            }
            let log = outbound.log_text();
            log.lines()
                .filter(|l| l.contains("metrics endpoint listening"))
                .find_map(|l| l.split("addr=").nth(1))
                .and_then(|s| s.split_whitespace().next())
                .map(str::to_owned)
                .ok_or_else(|| "not yet".to_owned())
        },
    )
}

/// Parses one sample of the text exposition: `name{labels} value`.
fn exposition_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Source records as Debezium would write them now (so end-to-end latency
/// measures this run, not the generator's fixed 2024 timestamps).
fn stamped_now(records: &[SourceRecord]) -> Vec<SourceRecord> {
    let now = now_ms();
    records
        .iter()
        .map(|r| {
            let value = r.value.as_ref().map(|v| {
                let mut json: Value = serde_json::from_slice(v).expect("generated JSON");
                json["payload"]["source"]["ts_ms"] = json!(now);
                json["payload"]["ts_ms"] = json!(now);
                serde_json::to_vec(&json).expect("json")
            });
            SourceRecord {
                table: r.table,
                key: r.key.clone(),
                value,
            }
        })
        .collect()
}

/// Regex matching exactly `s` (for `instance=~"..."`).
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() {
                vec![c]
            } else {
                vec!['\\', '\\', c]
            }
        })
        .collect()
}

/// `selector` restricted to `instance`.
fn with_instance(selector: &str, instance: &str) -> String {
    match selector.find('{') {
        Some(i) => format!(
            "{}{{instance=\"{instance}\", {}",
            &selector[..i],
            &selector[i + 1..]
        ),
        None => format!("{selector}{{instance=\"{instance}\"}}"),
    }
}

#[test]
fn every_dashboard_and_alert_expression_returns_data_from_a_live_pipeline() {
    let agent = agent();
    // Preflight: the stack's Prometheus and search node.
    let (status, _) =
        get(&agent, &format!("{}/-/ready", prometheus_url()), &[]).unwrap_or_else(|e| {
            panic!("Prometheus is not running ({e}); start it with stack/stack.sh up")
        });
    assert_eq!(status, 200, "Prometheus is not ready");

    let prefix = unique("obs");
    create_source_topics(&prefix, 2);
    let history = generate(7, &prefix, 40, 400);
    let records = stamped_now(&history.records);
    let tombstones = records.iter().filter(|r| r.value.is_none()).count();
    assert!(tombstones > 0, "the history deletes rows");

    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("outbound.log");
    let file = std::fs::File::create(&log).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_outbound"))
        .args([
            "run",
            "--app-id",
            &prefix,
            "--instance-id",
            "0",
            "--topic-prefix",
            &prefix,
            "--partitions",
            "2",
        ])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("OUTBOUND_KAFKA__BOOTSTRAP_SERVERS", bootstrap())
        .env("OUTBOUND_SINK__IN_RUN", "true")
        .env("OUTBOUND_SINK__URL", search_url())
        .env("OUTBOUND_SINK__INDEX_PREFIX", format!("{prefix}-"))
        .env("OUTBOUND_SINK__BATCH_TIMEOUT_MS", "50")
        .env("RUST_LOG", "info,rdkafka=warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(file.try_clone().expect("log")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("outbound binary starts");
    let mut outbound = Outbound { child, log };
    let addr = metrics_addr(&mut outbound);
    let base = format!("http://{addr}");
    let _target = TargetFile::write(&prefix, &addr);

    // Liveness at once; readiness once the tasks are assigned and restored.
    let (status, body) = get(&agent, &format!("{base}/healthz"), &[]).expect("/healthz");
    assert_eq!(status, 200, "/healthz: {body}");
    wait_for("/readyz to answer 200", DEADLINE, || {
        match get(&agent, &format!("{base}/readyz"), &[])? {
            (200, _) => Ok(()),
            (s, b) => Err(format!("{s} {b}")),
        }
    });

    // The work: the history, one undecodable change event (dead letter) and
    // one document the sink cannot encode (sink rejection).
    let p = producer();
    produce(&p, &prefix, &records);
    let junk = SourceRecord {
        table: Table::Orders,
        key: br#"{"payload":{"id":1}}"#.to_vec(),
        value: Some(b"{not json".to_vec()),
    };
    produce(&p, &prefix, &[junk]);
    let produced = records.len() + 1;
    {
        use rdkafka::producer::{BaseRecord, Producer};
        let details = format!("{prefix}-details");
        p.send(
            BaseRecord::<[u8], [u8]>::to(&details)
                .key(&b"junk"[..])
                .payload(&b"{not json"[..]),
        )
        .map_err(|(e, _)| e)
        .expect("junk detail sent");
        p.flush(Duration::from_secs(30)).expect("flush");
    }

    // The process's own counters agree with the work done.
    let metrics_text = || get(&agent, &format!("{base}/metrics"), &[]).map(|(_, b)| b);
    let rekey_in = |text: &str| -> f64 {
        (0..2)
            .filter_map(|p| {
                exposition_value(
                    text,
                    &format!("outbound_records_in_total{{partition=\"{p}\",stage=\"rekey\"}}"),
                )
            })
            .sum()
    };
    wait_for(
        "the rekey stage to count every produced record",
        DEADLINE,
        || {
            let text = metrics_text()?;
            let n = rekey_in(&text);
            (n == produced as f64)
                .then_some(())
                .ok_or(format!("{n} of {produced}"))
        },
    );

    // Prometheus scrapes this process…
    let inst = addr.clone();
    wait_for("Prometheus to scrape the process", DEADLINE, || {
        let v = scalar(
            &agent,
            &format!("up{{job=\"outbound\", instance=\"{inst}\"}}"),
        )?;
        (v == 1.0).then_some(()).ok_or(format!("up = {v}"))
    });
    // …and has seen all of the work, the lag, the sink and the rejection.
    for (what, expr, want) in [
        ("records in (rekey)", format!("sum(outbound_records_in_total{{instance=\"{inst}\", stage=\"rekey\"}})"), Some(produced as f64)),
        ("tombstones skipped at rekey", format!("sum(outbound_records_skipped_total{{instance=\"{inst}\", reason=\"tombstone\"}})"), Some(tombstones as f64)),
        ("dead letters", format!("sum(outbound_dead_letters_total{{instance=\"{inst}\", reason=\"undecodable_change_event\"}})"), Some(1.0)),
        ("records out to the DLQ", format!("sum(outbound_records_out_total{{instance=\"{inst}\", output=\"dlq\"}})"), Some(1.0)),
        ("sink rejections", format!("sum(outbound_sink_rejections_total{{instance=\"{inst}\"}})"), Some(1.0)),
        ("consumer lag series", format!("count(outbound_consumer_lag_records{{instance=\"{inst}\"}})"), None),
        ("sink acknowledgements", format!("sum(outbound_end_to_end_seconds_count{{instance=\"{inst}\", at=\"sink\"}})"), None),
        ("data-quality issues", format!("sum(outbound_data_quality_issues_total{{instance=\"{inst}\"}})"), None),
        ("both loops' heartbeats", format!("count(outbound_loop_heartbeat_timestamp_seconds{{instance=\"{inst}\", loop=~\"stream|sink\"}})"), Some(2.0)),
        ("the source topics' lag", format!("count(outbound_consumer_lag_records{{instance=\"{inst}\", topic=~\"{prefix}[.].*\"}})"), Some(6.0)),
        ("the sink's lag", format!("count(outbound_consumer_lag_records{{instance=\"{inst}\", topic=\"{prefix}-details\"}})"), Some(2.0)),
    ] {
        wait_for(&format!("Prometheus to see {what}"), DEADLINE, || {
            let v = scalar(&agent, &expr)?;
            match want {
                Some(w) if v == w => Ok(()),
                None if v > 0.0 => Ok(()),
                _ => Err(format!("{expr} = {v}, want {}", want.map_or("> 0".into(), |w| w.to_string()))),
            }
        });
    }
    // No transaction aborted, so nothing was counted twice: what the rekey
    // stage produced is exactly what the join stage consumed.
    let aborted = scalar(
        &agent,
        &format!("sum(outbound_transactions_total{{instance=\"{inst}\", outcome=\"aborted\"}})"),
    )
    .expect("aborts");
    assert_eq!(
        aborted,
        0.0,
        "no abort in a quiet single-instance run; log {}",
        outbound.log.display()
    );
    wait_for("join records in = rekey records out", DEADLINE, || {
        let out = scalar(
            &agent,
            &format!("sum(outbound_records_out_total{{instance=\"{inst}\", output=\"rekey\"}})"),
        )?;
        let join = scalar(
            &agent,
            &format!("sum(outbound_records_in_total{{instance=\"{inst}\", stage=\"join\"}})"),
        )?;
        (out == join && out > 0.0)
            .then_some(())
            .ok_or(format!("rekey out {out}, join in {join}"))
    });
    // End-to-end latency measures this run (records stamped at produce time).
    let p99 = scalar(
        &agent,
        &format!("histogram_quantile(0.99, sum by (le) (outbound_end_to_end_seconds_bucket{{instance=\"{inst}\", at=\"output\"}}))"),
    )
    .expect("p99");
    assert!(
        p99.is_finite() && p99 <= 60.0,
        "p99 end-to-end to the output = {p99} s"
    );

    // Every dashboard expression, with $instance = this process, returns at
    // least one finite sample.
    // rate() over a window needs the counters to move between scrapes: the
    // history above is processed faster than one scrape interval, so keep a
    // trickle of further changes flowing while the expressions are checked.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickle = {
        let stop = stop.clone();
        let prefix = prefix.clone();
        let more = generate(8, &prefix, 40, 2000);
        std::thread::spawn(move || {
            let p = producer();
            for chunk in more.records.chunks(5) {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                produce(&p, &prefix, &stamped_now(chunk));
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let instance_re = regex_escape(&addr);
    let exprs = dashboard_exprs();
    assert!(exprs.len() > 30, "{} dashboard expressions", exprs.len());
    // A series created late (say, the first data-quality issue) needs two
    // scrapes before rate() over it has a value: poll the whole set.
    let mut pending: Vec<(String, String)> = exprs
        .iter()
        .map(|(at, expr)| (at.clone(), substitute(expr, &instance_re, "2m")))
        .collect();
    let mut empty = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        empty.clear();
        pending.retain(|(at, e)| {
            let outcome = query(&agent, e).unwrap_or_else(|err| panic!("{at}: {err}"));
            let finite = outcome.iter().any(|s| sample_value(s).is_finite());
            if !finite {
                empty.push(format!("{at}: {e} → {}", Value::from(outcome)));
            }
            !finite
        });
        if pending.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = trickle.join();
    assert!(
        empty.is_empty(),
        "dashboard panels without data:\n{}",
        empty.join("\n")
    );

    // Every alert expression evaluates, and every series it reads exists for
    // this process (alerts are silent on a healthy pipeline, so the
    // expression's own result is legitimately empty: its inputs are not).
    let mut missing = Vec::new();
    for (alert, expr) in alert_exprs() {
        query(&agent, &expr).unwrap_or_else(|e| panic!("{alert}: {e}"));
        for s in selectors(&expr) {
            let restricted = with_instance(&s, &addr);
            let n = query(&agent, &restricted)
                .unwrap_or_else(|e| panic!("{alert}: {e}"))
                .len();
            if n == 0 {
                missing.push(format!("{alert}: {restricted}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "alert inputs without series:\n{}",
        missing.join("\n")
    );

    // The rules are loaded in the live Prometheus and evaluate without error.
    let names: BTreeMap<String, String> = alert_exprs().into_iter().collect();
    wait_for(
        "Prometheus to evaluate every alert rule",
        Duration::from_secs(60),
        || {
            let (_, body) = get(
                &agent,
                &format!("{}/api/v1/rules", prometheus_url()),
                &[("type", "alert")],
            )?;
            let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            let loaded: BTreeMap<String, (String, String)> = v["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .map(|r| {
                    let name = r["name"].as_str().unwrap_or_default().to_owned();
                    (
                        name,
                        (
                            r["health"].as_str().unwrap_or_default().to_owned(),
                            r["lastError"].as_str().unwrap_or_default().to_owned(),
                        ),
                    )
                })
                .collect();
            for name in names.keys() {
                match loaded.get(name) {
                None => return Err(format!("{name} is not loaded (run stack/stack.sh up prometheus to reload the rules)")),
                Some((health, err)) if health != "ok" => return Err(format!("{name}: health {health} {err}")),
                _ => {}
            }
            }
            Ok(())
        },
    );

    // A clean stop on SIGTERM, and the endpoint closes with the process.
    let status = outbound.stop();
    assert!(
        status.success(),
        "outbound exits cleanly on SIGTERM: {status}; log {}",
        outbound.log.display()
    );
    assert!(
        get(&agent, &format!("{base}/healthz"), &[]).is_err(),
        "the endpoint stops with the process"
    );
}
