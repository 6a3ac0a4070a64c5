//! Truncates on the real path (issue #12): `TRUNCATE TABLE` of each source
//! table, through MariaDB → Debezium → Kafka → `outbound run` (with its
//! sink) → the search node, and the documents and rollups follow: the
//! shipments' truncate makes every item pending and empties the rollups,
//! the orders' nulls every order block, the items' empties the detail
//! index. After each, `outbound reconcile` reads zero differences.
//!
//! Needs the whole local stack (`stack/stack.sh up`). It truncates the real
//! tables: run it only on a stack of its own (CI's, or a private one via
//! scripts/isolated.sh), never on one others are testing against.

mod common;
mod source_tables;

use std::time::{Duration, Instant};

use common::{Outbound, RunSpec};
use outbound::config::Config;
use outbound::reconcile::{self, Collect, Options, QuietOptions};
use serde_json::Value;
use source_tables::{app_db, root};

const DEADLINE: Duration = Duration::from_secs(300);

fn search_url() -> String {
    std::env::var("OUTBOUND_SEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

/// The connector configs emit truncates (Debezium skips them by default).
#[test]
fn every_connector_config_emits_truncates() {
    for path in [
        "stack/config/debezium-mariadb.json",
        "deploy/connect/outbound-mysql.json",
    ] {
        let text =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
                .expect(path);
        let c: Value = serde_json::from_str(&text).expect("JSON");
        let skipped = c["skipped.operations"].as_str().unwrap_or("t");
        assert!(
            !skipped.split(',').any(|op| op.trim() == "t"),
            "{path}: skipped.operations = {skipped:?} drops TRUNCATE events"
        );
    }
}

fn sql_app(statements: &str) {
    use mysql::prelude::Queryable;
    let mut conn = app_db().connect().expect("connect as outbound_app");
    for s in statements
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        conn.query_drop(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

fn truncate(table: &str) {
    use mysql::prelude::Queryable;
    root()
        .query_drop(format!("TRUNCATE TABLE {table}"))
        .expect("TRUNCATE as root");
}

/// Polls until reconcile (after quiet) reads zero differences and `check`
/// holds on the indices, or fails with the last differences.
fn wait_reconciled(config: &Config, what: &str, check: impl Fn() -> Result<(), String>) {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < DEADLINE {
        let mut seen = Collect::default();
        let quiet = QuietOptions {
            timeout: DEADLINE,
            settle: Duration::from_secs(2),
        };
        match reconcile::wait_and_reconcile(
            config,
            &app_db(),
            &Options::default(),
            Some(quiet),
            &mut seen,
        ) {
            Ok((_, report)) if report.differences() == 0 => match check() {
                Ok(()) => return,
                Err(e) => last = e,
            },
            Ok((_, report)) => {
                last = format!(
                    "{:?}; first: {:?}",
                    report.indices,
                    seen.differences.first()
                )
            }
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{what}: not reconciled within {DEADLINE:?}: {last}");
}

fn es_get(path: &str) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!("{}{path}", search_url()))
        .call()
        .expect("search node");
    serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null)
}

fn count(alias: &str) -> u64 {
    let _ = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .post(&format!("{}/{alias}/_refresh", search_url()))
        .send_empty();
    es_get(&format!("/{alias}/_count"))["count"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn truncating_each_table_is_reflected_in_the_indices() {
    let token = format!("it-trunc-{}", std::process::id());
    let mut config = Config {
        app_id: token.clone(),
        ..Config::default()
    };
    config.sink.url = search_url();
    config.sink.index_prefix = Some(format!("{token}-"));
    let order = format!("trunc-{}", std::process::id());
    sql_app(&format!(
        "INSERT INTO orders.order_demo (order_id, order_value, order_description, created_at) VALUES ('{order}', 'Rs. 1,00,000', 'truncate test', NOW(6));
         INSERT INTO logistics.logistics_demo (wmsrecord_id, shipment_cost, created_at, courier, order_id) VALUES (NULL, '24.5', '2024-05-01 10:00:00', 'FETCHR', '{order}');
         INSERT INTO wms.wms_demo (order_id, item_type, courier, item_qty, shipment_id, created_at) VALUES ('{order}', 'books', 'DHL', '2', (SELECT MAX(id) FROM logistics.logistics_demo WHERE order_id = '{order}'), NOW(6))"
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = RunSpec {
        app_id: &token,
        instance: "0",
        prefix: "outbound",
        state_dir: &dir.path().join("state"),
        log_dir: &dir.path().join("logs"),
        partitions: 2,
    };
    let index_prefix = format!("{token}-");
    let mut run = Outbound::start_with_env(
        &spec,
        0,
        &[
            ("OUTBOUND_SINK__IN_RUN", "true"),
            ("OUTBOUND_SINK__INDEX_PREFIX", &index_prefix),
            ("OUTBOUND_SINK__URL", &search_url()),
        ],
    );
    let details = config.sink.details_alias();
    let item_doc = || -> Result<Value, String> {
        let hits = es_get(&format!("/{details}/_search?q=order_id:%22{order}%22"));
        hits["hits"]["hits"][0]["_source"]
            .as_object()
            .map(|o| Value::Object(o.clone()))
            .ok_or_else(|| format!("no document for order {order}: {hits}"))
    };
    wait_reconciled(&config, "the rows", || {
        let d = item_doc()?;
        (d["status"] == "shipped" && d["order"]["order_value"] == "100000")
            .then_some(())
            .ok_or(format!("{d}"))
    });

    truncate("logistics.logistics_demo");
    wait_reconciled(&config, "TRUNCATE logistics_demo", || {
        let d = item_doc()?;
        if d["status"] != "pending" || !d["shipment"].is_null() {
            return Err(format!("item still shipped: {d}"));
        }
        for r in ["units_daily", "courier_daily", "warehouse_daily"] {
            let n = count(&format!("{index_prefix}{r}"));
            if n != 0 {
                return Err(format!("{r} still holds {n} documents"));
            }
        }
        Ok(())
    });

    truncate("orders.order_demo");
    wait_reconciled(&config, "TRUNCATE order_demo", || {
        let d = item_doc()?;
        d["order"]
            .is_null()
            .then_some(())
            .ok_or(format!("order fields still there: {d}"))
    });

    truncate("wms.wms_demo");
    wait_reconciled(&config, "TRUNCATE wms_demo", || match count(&details) {
        0 => Ok(()),
        n => Err(format!("{n} detail documents left")),
    });
    assert!(run.is_running(), "outbound exited: {}", run.log_tail(30));
    run.stop_cleanly();
}
