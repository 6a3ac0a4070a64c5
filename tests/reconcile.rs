//! `outbound reconcile` against the pipeline core: over tables filled by
//! loadgen (messy values, moves, deletes, re-inserts) plus hand-made edge
//! rows, the batch in sql/reconcile/ must expect exactly the documents the
//! pipeline's rules produce — and when the indices are then damaged, name
//! every damaged document, field by field, and exit non-zero.
//!
//! Needs the local stack (`stack/stack.sh up`: MariaDB, OpenSearch). The
//! tables are private databases created for the run (tests/source_tables).

mod source_tables;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use outbound::config::Config;
use outbound::loadgen::Loadgen;
use outbound::reconcile::{self, Collect, Difference, Options};
use serde_json::{json, Value};
use source_tables::{app_db, tag, PrivateTables};

fn search_url() -> String {
    std::env::var("OUTBOUND_SEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

fn es(method: &str, path: &str, body: Option<String>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let url = format!("{}{path}", search_url());
    let result = match (method, body) {
        ("DELETE", None) => agent.delete(&url).call(),
        ("POST", None) => agent.post(&url).send_empty(),
        ("POST", Some(b)) => agent
            .post(&url)
            .header("Content-Type", "application/x-ndjson")
            .send(b),
        (m, _) => panic!("unsupported {m} {path}"),
    };
    let mut resp =
        result.unwrap_or_else(|e| panic!("{method} {url}: {e} (is the search node up?)"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The sink's templates and indices for this config.
fn install_indices(config: &Config) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(outbound::sink::install::install_indices(config))
        .expect("install indices");
}

/// Indexes documents as the sink would (without its lineage block is fine:
/// reconcile ignores `source`), refreshed.
fn index(alias: &str, docs: &BTreeMap<String, Value>) {
    let mut body = String::new();
    for (id, doc) in docs {
        body.push_str(&json!({"index": {"_index": alias, "_id": id}}).to_string());
        body.push('\n');
        body.push_str(&doc.to_string());
        body.push('\n');
    }
    if body.is_empty() {
        return;
    }
    let (status, resp) = es("POST", "/_bulk?refresh=true", Some(body));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["errors"], false, "bulk errors: {resp}");
}

fn delete_indices(config: &Config) {
    let _ = es("DELETE", &format!("/{}*", config.sink.prefix()), None);
}

/// Hand-made rows for rules a loadgen run may not hit.
fn edge_rows(t: &PrivateTables) {
    let (o, w, l) = (t.orders(), t.items(), t.shipments());
    t.exec(&format!(
        "INSERT INTO {o} (order_id, order_value, order_description, created_at) VALUES
           ('CASE1', 'rs. 10.5', 'upper-case order id', '2024-05-02 10:00:00'),
           ('pad1', 'RS. 1,00,000/-', 'padded ids join trimmed', '2024-05-02 10:00:00'),
           ('dup1', 'Rs 1', 'first row', NULL), ('dup1', 'Rs 2', 'greatest id wins', NULL);
         INSERT INTO {w} (order_id, item_type, courier, item_qty, shipment_id, created_at) VALUES
           ('case1', 'books', 'DHL', '1', NULL, '2024-05-02 11:00:00'),
           ('  pad1 ', 'books ', 'DHL', ' 2 ', ' 900001 ', '2024-05-02 11:00:00'),
           ('dup1', 'books', '', 'two', NULL, '2024-05-02 11:00:00');
         INSERT INTO {l} (id, wmsrecord_id, shipment_cost, created_at, courier, order_id) VALUES
           (900001, NULL, 'inr 7', '2024-05-03 23:59:59.999999', ' ', 'pad1'),
           (900002, (SELECT MAX(id) FROM {w}), '₹1,234.50', '0000-00-00 00:00:00', 'FETCHR', 'dup1');"
    ));
}

fn config_for(t: &PrivateTables, token: &str) -> Config {
    let mut c = Config {
        app_id: token.to_owned(),
        ..Config::default()
    };
    t.configure(&mut c);
    c.sink.url = search_url();
    c.sink.index_prefix = Some(format!("{token}-"));
    c
}

fn differences(config: &Config, options: &Options) -> (reconcile::Report, Vec<Difference>) {
    let mut seen = Collect::default();
    let report =
        reconcile::reconcile(config, &app_db(), options, &mut seen).expect("reconcile runs");
    (report, seen.differences)
}

#[test]
fn reconcile_agrees_with_the_pipeline_and_names_every_difference() {
    let t = PrivateTables::create(&tag("rec"));
    let stats = Loadgen::new(app_db(), t.load_options(7, 400))
        .expect("loadgen")
        .run(&AtomicBool::new(false))
        .expect("loadgen runs");
    assert!(stats.items > 100 && stats.committed > 300, "{stats}");
    edge_rows(&t);
    let token = format!("it-rec-{}", std::process::id());
    let config = config_for(&t, &token);
    delete_indices(&config);
    install_indices(&config);
    let (details, rollups) = t.expected("unused");
    assert!(details.len() > 100, "{} details", details.len());
    index(&config.sink.details_alias(), &details);
    for name in ["units_daily", "courier_daily", "warehouse_daily"] {
        let docs: BTreeMap<String, Value> = rollups
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&format!("{name}/"))
                    .map(|id| (id.to_owned(), v.clone()))
            })
            .collect();
        assert!(!docs.is_empty(), "no {name} documents");
        index(&format!("{token}-{name}"), &docs);
    }

    // 1. The indices hold exactly what the pipeline computes: no difference.
    let (report, diffs) = differences(&config, &Options::default());
    assert!(
        diffs.is_empty(),
        "the batch disagrees with the pipeline: {:#?}",
        &diffs[..diffs.len().min(5)]
    );
    assert_eq!(report.differences(), 0);
    for s in &report.indices {
        assert!(s.expected > 0 && s.expected == s.indexed, "{s:?}");
    }
    assert_eq!(report.indices[0].expected as usize, details.len());

    // 2. Damage: a missing, a changed and an extra detail; a changed and an
    //    extra rollup; and a row changed in the tables without reindexing.
    let alias = config.sink.details_alias();
    let ids: Vec<&String> = details.keys().collect();
    let (gone, changed) = (ids[0].clone(), ids[1].clone());
    es(
        "DELETE",
        &format!("/{alias}/_doc/{gone}?refresh=true"),
        None,
    );
    let mut doc = details[&changed].clone();
    doc["courier"] = json!("NOT-A-COURIER");
    index(
        &alias,
        &BTreeMap::from([
            (changed.clone(), doc),
            ("987654321".to_owned(), details[&changed].clone()),
        ]),
    );
    let (wh_key, wh_doc) = rollups
        .iter()
        .find(|(k, _)| k.starts_with("warehouse_daily/"))
        .expect("a warehouse rollup");
    let wh_id = wh_key.strip_prefix("warehouse_daily/").unwrap().to_owned();
    let mut bad = wh_doc.clone();
    bad["order_value"] = json!("0.01");
    let wh_alias = format!("{token}-warehouse_daily");
    index(
        &wh_alias,
        &BTreeMap::from([
            (wh_id.clone(), bad),
            ("1999-01-01|nowhere".to_owned(), wh_doc.clone()),
        ]),
    );
    let case_item: i64 = {
        use mysql::prelude::Queryable;
        source_tables::root()
            .query_first(format!(
                "SELECT id FROM {} WHERE order_id = 'case1'",
                t.items()
            ))
            .expect("query")
            .expect("the case1 item")
    };
    t.exec(&format!(
        "UPDATE {} SET item_type = 'toys' WHERE id = {case_item}",
        t.items()
    ));

    let (report, diffs) = differences(&config, &Options::default());
    let mut found: Vec<String> = diffs
        .iter()
        .map(|d| match d {
            Difference::Missing { index, id, .. } => format!("missing {index} {id}"),
            Difference::Extra { index, id, .. } => format!("extra {index} {id}"),
            Difference::Different { index, id, fields } => format!(
                "different {index} {id} {}",
                fields
                    .iter()
                    .map(|f| f.field.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        })
        .collect();
    found.sort();
    let mut want = vec![
        format!("missing {alias} {gone}"),
        format!("different {alias} {changed} courier"),
        format!("extra {alias} 987654321"),
        format!("different {wh_alias} {wh_id} order_value"),
        format!("extra {wh_alias} 1999-01-01|nowhere"),
        format!("different {alias} {case_item} item.item_type"),
    ];
    want.sort();
    // The re-typed item also moves between units_daily keys when shipped;
    // it is not (its order id matches no order, so no shipment joins it).
    assert_eq!(found, want, "report: {report:?}");
    assert_eq!(report.differences(), 6);

    // 3. Slices: one id, and a --since after every row.
    let (_, diffs) = differences(
        &config,
        &Options {
            ids: vec![changed.clone()],
            ..Options::default()
        },
    );
    assert_eq!(diffs.len(), 1, "{diffs:#?}");
    let (report, _) = differences(
        &config,
        &Options {
            since: Some(reconcile::parse_since("2999-01-01").unwrap()),
            ..Options::default()
        },
    );
    assert_eq!(report.indices[0].expected, 0, "{report:?}");

    // 4. The command: readable diff, summary line, exit status 1; --json.
    let run = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_outbound"));
        cmd.args([
            "reconcile",
            "--app-id",
            &token,
            "--sink-index-prefix",
            &format!("{token}-"),
            "--sink-url",
            &search_url(),
        ])
        .env("OUTBOUND_SOURCE__ORDERS_TABLE", t.orders())
        .env("OUTBOUND_SOURCE__ITEMS_TABLE", t.items())
        .env("OUTBOUND_SOURCE__SHIPMENTS_TABLE", t.shipments())
        .env("OUTBOUND_DB_PORT", app_db().port.to_string());
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("outbound reconcile runs")
    };
    let out = run(false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {text}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("missing    {alias}/{gone}")),
        "{text}"
    );
    assert!(text.contains("courier: expected"), "{text}");
    assert!(text.contains("reconcile: 6 differences"), "{text}");
    let out = run(true);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(doc["equal"], false);
    assert_eq!(doc["differences"], 6);

    // 5. Repaired, it exits 0.
    t.exec(&format!(
        "UPDATE {} SET item_type = 'books' WHERE id = {case_item}",
        t.items()
    ));
    index(
        &alias,
        &BTreeMap::from([
            (gone.clone(), details[&gone].clone()),
            (changed.clone(), details[&changed].clone()),
        ]),
    );
    es(
        "DELETE",
        &format!("/{alias}/_doc/987654321?refresh=true"),
        None,
    );
    index(
        &wh_alias,
        &BTreeMap::from([(wh_id.clone(), wh_doc.clone())]),
    );
    es(
        "DELETE",
        &format!("/{wh_alias}/_doc/1999-01-01%7Cnowhere?refresh=true"),
        None,
    );
    let out = run(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reconcile: 0 differences"));
    delete_indices(&config);
}
