//! Shared by tests/observability.rs and tests/observability_static.rs: the
//! dashboards and alert rules as data, and a small PromQL scanner that finds
//! the vector selectors (metric name + matchers) of an expression.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub const ALERTS: &str = "deploy/prometheus/alerts.yml";
pub const ALERTS_TEST: &str = "deploy/prometheus/alerts_test.yml";
pub const DASHBOARDS: &str = "grafana/dashboards";
pub const DATASOURCES: &str = "grafana/provisioning/datasources/prometheus.yml";
pub const PROVIDERS: &str = "grafana/provisioning/dashboards/outbound.yml";

/// Every dashboard JSON file, parsed, with its file name.
pub fn dashboards() -> Vec<(String, Value)> {
    let dir = repo().join(DASHBOARDS);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", p.display()));
            (file_name(p), json)
        })
        .collect()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The panels of a dashboard, rows' nested panels included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for nested in p["panels"].as_array().into_iter().flatten() {
            out.push(nested);
        }
    }
    out
}

/// (where, expr) of every query target of every dashboard.
pub fn dashboard_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    let title = p["title"].as_str().unwrap_or("?");
                    out.push((
                        format!("{file} / {title} / {}", t["refId"].as_str().unwrap_or("?")),
                        expr.to_owned(),
                    ));
                }
            }
        }
    }
    out
}

/// (alert name, expr) of every rule of the alert file.
pub fn alert_exprs() -> Vec<(String, String)> {
    let path = repo().join(ALERTS);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: serde_norway::Value = serde_norway::from_str(&text).expect("alerts.yml is YAML");
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"]
                .as_str()
                .or(r["record"].as_str())
                .expect("rule name")
                .to_owned();
            out.push((name, r["expr"].as_str().expect("expr").trim().to_owned()));
        }
    }
    out
}

/// A dashboard expression with Grafana's variables replaced, ready for
/// Prometheus's query API: `$instance` becomes the regex given (the
/// dashboards match it with `=~`), `$__rate_interval` the range given.
pub fn substitute(expr: &str, instance_regex: &str, rate_interval: &str) -> String {
    expr.replace("$__rate_interval", rate_interval)
        .replace("$instance", instance_regex)
}

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "Inf",
    "NaN",
    "inf",
    "nan",
    "atan2",
];

/// Vector selectors of a PromQL expression, as written (`name{matchers}`).
/// Enough of PromQL for the project's own expressions: skips strings,
/// ranges and label lists of `by`/`without`/`on`/`ignoring`/`group_*`.
pub fn selectors(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b':';
    let ident_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let skip_ws = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    // The index just past the bracket closing the one at `j`.
    let close = |j: usize, open: u8, shut: u8| {
        let mut depth = 0;
        let mut k = j;
        let mut in_str = false;
        while k < b.len() {
            let c = b[k];
            if in_str {
                if c == b'\\' {
                    k += 1;
                } else if c == b'"' {
                    in_str = false;
                }
            } else if c == b'"' {
                in_str = true;
            } else if c == open {
                depth += 1;
            } else if c == shut {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            k += 1;
        }
        b.len()
    };
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' {
            let q = c;
            i += 1;
            while i < b.len() && b[i] != q {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == b'[' {
            i = close(i, b'[', b']');
        } else if c.is_ascii_digit() || (c == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit())
        {
            // A number (1e-9, 0.99): not an identifier.
            while i < b.len()
                && (b[i].is_ascii_alphanumeric()
                    || b[i] == b'.'
                    || ((b[i] == b'-' || b[i] == b'+') && matches!(b[i - 1], b'e' | b'E')))
            {
                i += 1;
            }
        } else if ident_start(c) {
            let start = i;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let next = skip_ws(i);
            if matches!(
                word,
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                if next < b.len() && b[next] == b'(' {
                    i = close(next, b'(', b')');
                }
                continue;
            }
            if KEYWORDS.contains(&word) {
                continue;
            }
            if next < b.len() && b[next] == b'(' {
                continue; // a function or an aggregation
            }
            let after = &expr[next..];
            if after.starts_with("by") || after.starts_with("without") {
                let k = next + if after.starts_with("by") { 2 } else { 7 };
                if k >= b.len() || !ident_char(b[k]) {
                    continue; // `sum by (...) (...)`
                }
            }
            if next < b.len() && b[next] == b'{' {
                let end = close(next, b'{', b'}');
                out.push(format!("{word}{}", &expr[next..end]));
                i = end;
            } else {
                out.push(word.to_owned());
            }
        } else if c == b'{' {
            // A selector without a metric name.
            let end = close(i, b'{', b'}');
            out.push(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// The metric name of a selector (before `{`).
pub fn metric_name(selector: &str) -> &str {
    selector.split('{').next().unwrap_or_default()
}

#[test]
fn selectors_are_found_in_the_shapes_the_project_uses() {
    assert_eq!(
        selectors(
            r#"histogram_quantile(0.99, sum by (job, at, le) (rate(outbound_end_to_end_seconds_bucket{at="sink"}[5m]))) > 60"#
        ),
        vec![r#"outbound_end_to_end_seconds_bucket{at="sink"}"#]
    );
    assert_eq!(
        selectors("sum by (job, topic) (outbound_consumer_lag_records) > 1000\nand\nderiv(sum by (job, topic) (outbound_consumer_lag_records)[15m:1m]) > 0"),
        vec!["outbound_consumer_lag_records", "outbound_consumer_lag_records"]
    );
    assert_eq!(
        selectors(
            r#"time() - max by (instance, loop) (outbound_loop_heartbeat_timestamp_seconds{instance=~"$instance"})"#
        ),
        vec![r#"outbound_loop_heartbeat_timestamp_seconds{instance=~"$instance"}"#]
    );
    assert_eq!(
        selectors(
            r#"sum(rate(a_total{outcome="aborted"}[$__rate_interval])) / clamp_min(sum(rate(a_total[1m])), 1e-9) unless on (instance) up == 0"#
        ),
        vec![r#"a_total{outcome="aborted"}"#, "a_total", "up"]
    );
    assert_eq!(
        selectors("count by (version) (outbound_build_info)"),
        vec!["outbound_build_info"]
    );
}
