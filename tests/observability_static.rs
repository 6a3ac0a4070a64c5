//! The alert rules and Grafana dashboards, checked without a running stack:
//! `promtool check rules` and `promtool test rules` (promtool comes with
//! Debian's `prometheus` package, which the stack scripts install), the
//! structure of every dashboard, the provisioning files against
//! docker-compose.yml, and every metric name against the ones src/ defines.
//! tests/observability.rs then evaluates the same expressions against a live
//! Prometheus scraping a real `outbound run`.

mod obs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use obs::*;
use serde_json::Value;

fn promtool(args: &[&str]) -> String {
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("promtool is not installed (Debian package `prometheus`, installed by stack/stack.sh up prometheus)")
        }
        Err(e) => panic!("promtool: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

#[test]
fn alert_rules_pass_promtool_check() {
    let out = promtool(&["check", "rules", ALERTS]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    promtool(&["test", "rules", ALERTS_TEST]);
}

#[test]
fn every_alert_is_unit_tested_labelled_and_explained() {
    let path = repo().join(ALERTS);
    let doc: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&path).expect("alerts")).expect("YAML");
    let tests = std::fs::read_to_string(repo().join(ALERTS_TEST)).expect("alerts_test.yml");
    let mut names = BTreeSet::new();
    for g in doc["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"].as_str().expect("every rule is an alert");
            assert!(names.insert(name.to_owned()), "alert {name} defined twice");
            let severity = r["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{name}: severity {severity:?}"
            );
            for a in ["summary", "description"] {
                assert!(
                    r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                    "{name}: no {a}"
                );
            }
            assert!(
                tests.contains(&format!("alertname: {name}\n        exp_alerts:")),
                "{name} has no promtool unit test in which it fires ({ALERTS_TEST})"
            );
        }
    }
    for required in [
        "OutboundInstanceDown",
        "OutboundConsumerLagGrowing",
        "OutboundEndToEndLatencyHigh",
        "OutboundRestoreStuck",
        "OutboundTransactionAborts",
        "OutboundDeadLetters",
        "OutboundSinkFailing",
    ] {
        assert!(names.contains(required), "missing alert {required}");
    }
}

#[test]
fn both_prometheus_setups_load_the_alert_rules() {
    for cfg in [
        "deploy/prometheus/prometheus.yml",
        "stack/config/prometheus/prometheus.yml",
    ] {
        let text = std::fs::read_to_string(repo().join(cfg)).expect(cfg);
        let doc: serde_norway::Value = serde_norway::from_str(&text).expect("YAML");
        let files: Vec<&str> = doc["rule_files"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .collect();
        assert_eq!(files, vec!["alerts.yml"], "{cfg} rule_files");
        let beside = repo().join(cfg).with_file_name("alerts.yml");
        assert_eq!(
            std::fs::read_to_string(&beside)
                .unwrap_or_else(|e| panic!("{}: {e}", beside.display())),
            std::fs::read_to_string(repo().join(ALERTS)).expect("alerts"),
            "{} is the same rule file",
            beside.display()
        );
    }
}

/// Datasource uids defined by the provisioning file.
fn provisioned_datasources() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join(DATASOURCES)).expect("datasources provisioning");
    let doc: serde_norway::Value = serde_norway::from_str(&text).expect("YAML");
    assert_eq!(doc["apiVersion"].as_u64(), Some(1));
    doc["datasources"]
        .as_sequence()
        .expect("datasources")
        .iter()
        .map(|d| {
            assert_eq!(d["type"].as_str(), Some("prometheus"));
            d["uid"]
                .as_str()
                .expect("every datasource has a uid")
                .to_owned()
        })
        .collect()
}

fn check_datasource(ds: &Value, uids: &BTreeSet<String>, at: &str) {
    let uid = ds["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("{at}: datasource without uid: {ds}"));
    assert!(
        uids.contains(uid),
        "{at}: datasource uid {uid:?} is not provisioned ({uids:?})"
    );
}

#[test]
fn dashboards_are_well_formed_and_use_the_provisioned_datasource() {
    let uids = provisioned_datasources();
    let all = dashboards();
    let titles: BTreeSet<String> = all
        .iter()
        .map(|(_, d)| d["title"].as_str().unwrap_or_default().to_lowercase())
        .collect();
    for want in ["overview", "state", "transactions", "sink"] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no {want} dashboard among {titles:?}"
        );
    }
    let mut dashboard_uids = BTreeSet::new();
    for (file, d) in &all {
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no uid"));
        assert!(
            dashboard_uids.insert(uid.to_owned()),
            "{file}: dashboard uid {uid} used twice"
        );
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: no title"
        );
        assert!(
            d["schemaVersion"].as_u64().is_some(),
            "{file}: no schemaVersion"
        );
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] == "query" {
                check_datasource(
                    &v["datasource"],
                    &uids,
                    &format!("{file} variable {}", v["name"]),
                );
            }
        }
        let panels = panels(d);
        assert!(
            d["panels"].as_array().is_some_and(|p| !p.is_empty()),
            "{file}: no panels"
        );
        let mut ids = BTreeSet::new();
        let mut queries = 0;
        for p in panels {
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: panel without id: {}", p["title"]));
            assert!(ids.insert(id), "{file}: panel id {id} used twice");
            let title = p["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: panel {id} has no title");
            for k in ["h", "w", "x", "y"] {
                assert!(
                    p["gridPos"][k].as_u64().is_some(),
                    "{file} / {title}: gridPos.{k}"
                );
            }
            assert!(
                p["gridPos"]["x"].as_u64().unwrap_or(0) + p["gridPos"]["w"].as_u64().unwrap_or(0)
                    <= 24,
                "{file} / {title}: wider than the grid"
            );
            if p["type"] == "row" {
                continue;
            }
            check_datasource(&p["datasource"], &uids, &format!("{file} / {title}"));
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{file} / {title}: no targets"));
            assert!(!targets.is_empty(), "{file} / {title}: no targets");
            let mut refs = BTreeSet::new();
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(
                    !expr.trim().is_empty(),
                    "{file} / {title}: target without expr"
                );
                let r = t["refId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file} / {title}: target without refId"));
                assert!(
                    refs.insert(r.to_owned()),
                    "{file} / {title}: refId {r} twice"
                );
                check_datasource(&t["datasource"], &uids, &format!("{file} / {title} / {r}"));
                assert!(
                    expr.contains("$instance") || !expr.contains("outbound_"),
                    "{file} / {title}: {expr} ignores the $instance variable"
                );
                queries += 1;
            }
        }
        assert!(queries > 0, "{file}: no queries");
    }
}

#[test]
fn the_dashboard_provider_points_where_docker_compose_mounts_the_dashboards() {
    let text = std::fs::read_to_string(repo().join(PROVIDERS)).expect("dashboard provider");
    let doc: serde_norway::Value = serde_norway::from_str(&text).expect("YAML");
    let providers = doc["providers"].as_sequence().expect("providers");
    let path = providers[0]["options"]["path"]
        .as_str()
        .expect("provider path");
    assert_eq!(providers[0]["type"].as_str(), Some("file"));

    let compose =
        std::fs::read_to_string(repo().join("docker-compose.yml")).expect("docker-compose.yml");
    let compose: serde_norway::Value = serde_norway::from_str(&compose).expect("YAML");
    let volumes: Vec<&str> = compose["services"]["grafana"]["volumes"]
        .as_sequence()
        .expect("grafana volumes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let mount = |src: &str| {
        volumes
            .iter()
            .find_map(|v| {
                let mut parts = v.split(':');
                (parts.next() == Some(src)).then(|| parts.next().unwrap_or_default().to_owned())
            })
            .unwrap_or_else(|| panic!("docker-compose grafana does not mount {src}: {volumes:?}"))
    };
    assert_eq!(
        mount("./grafana/dashboards"),
        path,
        "provider path = where compose mounts grafana/dashboards"
    );
    assert_eq!(mount("./grafana/provisioning"), "/etc/grafana/provisioning");
}

/// Metric names `src/metrics.rs` and `src/metrics/` register (`"outbound_..."`
/// string literals: every metric of the process lives in `Metrics`), with the
/// series names histograms expose.
fn defined_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    // src/metrics.rs with its submodules in src/metrics/ (or src/metrics/mod.rs).
    let mut files: Vec<PathBuf> = vec![repo().join("src/metrics.rs")];
    if let Ok(dir) = std::fs::read_dir(repo().join("src/metrics")) {
        files.extend(dir.filter_map(Result::ok).map(|e| e.path()));
    }
    for p in files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
    {
        let Ok(text) = std::fs::read_to_string(p) else {
            continue;
        };
        for part in text.split("\"outbound_").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if part[name.len()..].starts_with('"') {
                names.insert(format!("outbound_{name}"));
            }
        }
    }
    assert!(
        names.contains("outbound_records_in_total"),
        "metric definitions found in src/metrics"
    );
    let histograms = [
        "outbound_transaction_commit_seconds",
        "outbound_processing_seconds",
        "outbound_end_to_end_seconds",
        "outbound_sink_bulk_seconds",
    ];
    for h in histograms {
        assert!(names.contains(h), "{h} is defined");
        for suffix in ["_bucket", "_sum", "_count"] {
            names.insert(format!("{h}{suffix}"));
        }
    }
    names
}

#[test]
fn every_metric_the_dashboards_and_alerts_use_is_defined_in_src() {
    let defined = defined_metrics();
    let mut used: BTreeMap<String, String> = BTreeMap::new();
    for (at, expr) in dashboard_exprs().into_iter().chain(alert_exprs()) {
        let sels = selectors(&expr);
        assert!(!sels.is_empty(), "{at}: no selector found in {expr}");
        for s in sels {
            used.insert(metric_name(&s).to_owned(), at.clone());
        }
    }
    for (name, at) in &used {
        assert!(
            name == "up" || defined.contains(name),
            "{at} uses {name}, which src/ does not define"
        );
    }
    // And the other way: every metric the engine and sink define is shown somewhere.
    let shown: BTreeSet<&str> = used
        .keys()
        .map(|n| {
            n.trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
        })
        .collect();
    for name in &defined {
        if name.ends_with("_bucket") || name.ends_with("_sum") || name.ends_with("_count") {
            continue;
        }
        assert!(
            shown.contains(name.as_str()),
            "{name} is defined but no dashboard or alert uses it"
        );
    }
}
