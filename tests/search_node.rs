//! The local stack's search node is a real Elasticsearch-API node with the
//! modules the sink (issue 5) relies on: index templates with aliases,
//! `scaled_float` (mapper-extras), `date`, `keyword`, bulk indexing with
//! `version_type=external_gte`, and terms / date_histogram / sum /
//! cardinality aggregations.
//!
//! Needs the stack up (`stack/stack.sh up`, or just `stack/stack.sh up
//! opensearch`); the node's URL can be overridden with OUTBOUND_SEARCH_URL.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

fn base_url() -> String {
    std::env::var("OUTBOUND_SEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".to_string())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Sends a request; returns (status, JSON body). Panics on transport errors.
fn call(
    agent: &ureq::Agent,
    method: &str,
    path: &str,
    body: Option<(&str, String)>,
) -> (u16, Value) {
    let url = format!("{}{}", base_url(), path);
    let result = match (method, body) {
        ("GET", None) => agent.get(&url).call(),
        ("DELETE", None) => agent.delete(&url).call(),
        ("PUT", Some((ctype, b))) => agent.put(&url).header("Content-Type", ctype).send(b),
        ("POST", Some((ctype, b))) => agent.post(&url).header("Content-Type", ctype).send(b),
        (m, _) => panic!("unsupported request {m} {path}"),
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

fn json_body(v: Value) -> Option<(&'static str, String)> {
    Some(("application/json", v.to_string()))
}

/// Polls GET / until the node answers with a version, with a generous
/// deadline (a node that was just started takes ~15 s).
fn wait_for_node(agent: &ureq::Agent) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    let url = format!("{}/", base_url());
    let mut last: String;
    loop {
        match agent.get(&url).call() {
            Ok(mut resp) if resp.status().is_success() => {
                let text = resp.body_mut().read_to_string().unwrap_or_default();
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    if v["version"]["number"].is_string() {
                        return v;
                    }
                }
                last = text;
            }
            Ok(resp) => last = format!("HTTP {}", resp.status()),
            Err(e) => last = e.to_string(),
        }
        assert!(
            Instant::now() < deadline,
            "the search node does not answer on {url} (last: {last}); start the local stack first: \
             stack/stack.sh up opensearch (log: .stack/logs/opensearch.log)"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Deletes the test's index and template however the test ends.
struct Cleanup {
    agent: ureq::Agent,
    name: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self
            .agent
            .delete(format!("{}/{}-*", base_url(), self.name))
            .call();
        let _ = self
            .agent
            .delete(format!("{}/_index_template/{}", base_url(), self.name))
            .call();
    }
}

#[test]
fn search_node_answers_with_a_version() {
    let agent = agent();
    let root = wait_for_node(&agent);
    let version = root["version"]["number"].as_str().unwrap();
    assert!(
        version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .is_some(),
        "a version number: {root}"
    );
    let (status, health) = call(
        &agent,
        "GET",
        "/_cluster/health?wait_for_status=yellow&timeout=60s",
        None,
    );
    assert_eq!(status, 200, "cluster health: {health}");
    assert!(
        matches!(health["status"].as_str(), Some("green" | "yellow")),
        "{health}"
    );
}

#[test]
fn mapping_bulk_and_aggregations_work_as_the_sink_needs() {
    let agent = agent();
    wait_for_node(&agent);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!(
        "outbound-test-search-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000
    );
    let alias = format!("{name}-alias");
    let _cleanup = Cleanup {
        agent: agent.clone(),
        name: name.clone(),
    };

    // Index template with the mapping types and an alias, as issue 5 installs.
    let (status, body) = call(
        &agent,
        "PUT",
        &format!("/_index_template/{name}"),
        json_body(json!({
            "index_patterns": [format!("{name}-*")],
            "template": {
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "aliases": {alias.clone(): {}},
                "mappings": {
                    "dynamic": "strict",
                    "properties": {
                        "day": {"type": "date", "format": "strict_date||strict_date_optional_time"},
                        "warehouse": {"type": "keyword"},
                        "order_id": {"type": "keyword"},
                        "cost": {"type": "scaled_float", "scaling_factor": 100},
                        "units": {"type": "long"}
                    }
                }
            }
        })),
    );
    assert_eq!(status, 200, "index template: {body}");
    let (status, body) = call(
        &agent,
        "PUT",
        &format!("/{name}-000001"),
        json_body(json!({})),
    );
    assert_eq!(status, 200, "create index: {body}");
    let (_, mapping) = call(&agent, "GET", &format!("/{alias}/_mapping"), None);
    let props = &mapping[format!("{name}-000001")]["mappings"]["properties"];
    assert_eq!(
        props["cost"]["type"], "scaled_float",
        "template applied through the alias: {mapping}"
    );

    // Bulk through the alias with external_gte versions, as the sink writes.
    let doc = |day: &str, wh: &str, order: &str, cost: &str, units: u64| json!({"day": day, "warehouse": wh, "order_id": order, "cost": cost, "units": units});
    let lines = [
        (
            json!({"index": {"_index": alias, "_id": "a", "version": 5, "version_type": "external_gte"}}),
            Some(doc("2024-01-01", "w1", "o1", "12.34", 2)),
        ),
        // Same version again (a replay): accepted, content unchanged.
        (
            json!({"index": {"_index": alias, "_id": "a", "version": 5, "version_type": "external_gte"}}),
            Some(doc("2024-01-01", "w1", "o1", "12.34", 2)),
        ),
        // An older version: rejected with a version conflict.
        (
            json!({"index": {"_index": alias, "_id": "a", "version": 3, "version_type": "external_gte"}}),
            Some(doc("2024-01-01", "w1", "o1", "99.99", 9)),
        ),
        (
            json!({"index": {"_index": alias, "_id": "b", "version": 7, "version_type": "external_gte"}}),
            Some(doc("2024-01-01", "w2", "o2", "0.66", 1)),
        ),
        (
            json!({"index": {"_index": alias, "_id": "c", "version": 8, "version_type": "external_gte"}}),
            Some(doc("2024-01-02", "w1", "o1", "5.01", 4)),
        ),
        (
            json!({"index": {"_index": alias, "_id": "d", "version": 9, "version_type": "external_gte"}}),
            Some(doc("2024-01-02", "w1", "o3", "1.10", 3)),
        ),
        // Deleted afterwards with a newer version: gone from the aggregations.
        (
            json!({"index": {"_index": alias, "_id": "e", "version": 10, "version_type": "external_gte"}}),
            Some(doc("2024-01-02", "w9", "o9", "1000", 100)),
        ),
        (
            json!({"delete": {"_index": alias, "_id": "e", "version": 11, "version_type": "external_gte"}}),
            None,
        ),
    ];
    let mut ndjson = String::new();
    for (action, source) in &lines {
        ndjson.push_str(&action.to_string());
        ndjson.push('\n');
        if let Some(s) = source {
            ndjson.push_str(&s.to_string());
            ndjson.push('\n');
        }
    }
    let (status, bulk) = call(
        &agent,
        "POST",
        "/_bulk?refresh=wait_for",
        Some(("application/x-ndjson", ndjson)),
    );
    assert_eq!(status, 200, "bulk: {bulk}");
    let statuses: Vec<u64> = bulk["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            item.as_object().unwrap().values().next().unwrap()["status"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        statuses,
        [201, 200, 409, 201, 201, 201, 201, 200],
        "bulk item statuses: {bulk}"
    );
    let (_, a) = call(&agent, "GET", &format!("/{alias}/_doc/a"), None);
    assert_eq!(a["_version"], 5);
    assert_eq!(
        a["_source"]["cost"], "12.34",
        "the older version did not overwrite: {a}"
    );

    // The aggregations the rollup visualizations run.
    let (status, res) = call(
        &agent,
        "POST",
        &format!("/{alias}/_search"),
        json_body(json!({
            "size": 0,
            "track_total_hits": true,
            "aggs": {
                "per_day": {
                    "date_histogram": {"field": "day", "calendar_interval": "day", "format": "yyyy-MM-dd"},
                    "aggs": {
                        "cost": {"sum": {"field": "cost"}},
                        "units": {"sum": {"field": "units"}},
                        "orders": {"cardinality": {"field": "order_id"}},
                        "per_warehouse": {
                            "terms": {"field": "warehouse", "order": {"_key": "asc"}},
                            "aggs": {"units": {"sum": {"field": "units"}}}
                        }
                    }
                }
            }
        })),
    );
    assert_eq!(status, 200, "search: {res}");
    assert_eq!(res["hits"]["total"]["value"], 4, "{res}");
    let buckets = res["aggregations"]["per_day"]["buckets"]
        .as_array()
        .unwrap();
    // (day, docs, units, cost, couriers, cost by warehouse)
    type DaySummary = (String, u64, i64, f64, u64, Vec<(String, f64)>);
    let summary: Vec<DaySummary> = buckets
        .iter()
        .map(|b| {
            (
                b["key_as_string"].as_str().unwrap().to_string(),
                b["doc_count"].as_u64().unwrap(),
                // scaled_float sums are doubles of the scaled longs: compare in cents.
                (b["cost"]["value"].as_f64().unwrap() * 100.0).round() as i64,
                b["units"]["value"].as_f64().unwrap(),
                b["orders"]["value"].as_u64().unwrap(),
                b["per_warehouse"]["buckets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| {
                        (
                            w["key"].as_str().unwrap().to_string(),
                            w["units"]["value"].as_f64().unwrap(),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "2024-01-01".to_string(),
                2,
                1300,
                3.0,
                2,
                vec![("w1".to_string(), 2.0), ("w2".to_string(), 1.0)]
            ),
            (
                "2024-01-02".to_string(),
                2,
                611,
                7.0,
                2,
                vec![("w1".to_string(), 7.0)]
            ),
        ],
        "aggregation result: {res}"
    );
}
