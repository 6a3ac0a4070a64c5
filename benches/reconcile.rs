//! `outbound reconcile` throughput on a large report, against a baseline
//! measured in the same run: a plain streamed read of the same three tables
//! plus a plain point-in-time scan of the same four indices (what any
//! comparison must at least read). Reports items/s of each and their ratio.
//!
//!   cargo bench --bench reconcile                           # 1 000 000 items
//!   OUTBOUND_BENCH_ITEMS=100000 cargo bench --bench reconcile
//!
//! Fills private databases in the local stack's MariaDB (as root over its
//! socket, with INSERT … SELECT from the sequence engine), indexes the
//! documents reconcile expects (its own first run reports them missing),
//! then times a full reconcile that finds them all equal. Needs
//! `stack/stack.sh up mariadb opensearch`. On demand only; CI compiles it.

use std::time::Instant;

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};
use outbound::config::Config;
use outbound::reconcile::{self, Difference, Observer, Options};
use outbound::source_db::SourceDb;
use serde_json::json;

fn stack_dir() -> std::path::PathBuf {
    std::env::var_os("OUTBOUND_STACK_DIR")
        .map(Into::into)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".stack"))
}

fn root() -> Conn {
    let socket = stack_dir().join("run/mariadb.sock");
    Conn::new(
        OptsBuilder::new()
            .socket(Some(socket.display().to_string()))
            .user(Some("root"))
            // The sequence engine's seq_1_to_N tables need a current database.
            .db_name(Some("mysql"))
            .prefer_socket(true)
            .init(vec!["SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'"]),
    )
    .expect("root over the stack's MariaDB socket")
}

fn search_url() -> String {
    std::env::var("OUTBOUND_SEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

/// Indexes what reconcile reports missing, in bulk requests.
struct Indexer {
    agent: ureq::Agent,
    body: String,
    docs: usize,
}

impl Indexer {
    fn flush(&mut self) {
        if self.body.is_empty() {
            return;
        }
        let body = std::mem::take(&mut self.body);
        let mut r = self
            .agent
            .post(&format!("{}/_bulk", search_url()))
            .header("Content-Type", "application/x-ndjson")
            .send(body)
            .expect("bulk");
        let text = r.body_mut().read_to_string().unwrap_or_default();
        assert!(
            text.contains("\"errors\":false"),
            "bulk errors: {}",
            &text[..text.len().min(500)]
        );
    }
}

impl Observer for Indexer {
    fn difference(&mut self, d: &Difference) {
        if let Difference::Missing {
            index,
            id,
            expected,
        } = d
        {
            self.body
                .push_str(&json!({"index": {"_index": index, "_id": id}}).to_string());
            self.body.push('\n');
            self.body.push_str(&expected.to_string());
            self.body.push('\n');
            self.docs += 1;
            if self.body.len() > 8 << 20 {
                self.flush();
            }
        }
    }
    fn progress(&mut self, _: &str, _: u64, _: Option<u64>) {}
}

struct Quiet;
impl Observer for Quiet {
    fn difference(&mut self, _: &Difference) {}
    fn progress(&mut self, _: &str, _: u64, _: Option<u64>) {}
}

fn main() {
    let items: u64 = std::env::var("OUTBOUND_BENCH_ITEMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let tag = format!("bench_rec_{}", std::process::id());
    let mut root = root();
    let schema = include_str!("../sql/01_schema.sql")
        .replace("orders.", &format!("{tag}_orders."))
        .replace("wms.", &format!("{tag}_wms."))
        .replace("logistics.", &format!("{tag}_logistics."))
        .replace("EXISTS orders ", &format!("EXISTS {tag}_orders "))
        .replace("EXISTS wms ", &format!("EXISTS {tag}_wms "))
        .replace("EXISTS logistics ", &format!("EXISTS {tag}_logistics "));
    for stmt in schema.split(';') {
        let stmt: String = stmt
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if !stmt.trim().is_empty() {
            root.query_drop(&stmt).expect("schema");
        }
    }
    for db in ["orders", "wms", "logistics"] {
        root.query_drop(format!(
            "GRANT SELECT ON `{tag}_{db}`.* TO 'outbound_app'@'%'"
        ))
        .expect("grant");
    }
    let t0 = Instant::now();
    // Two items per order; three of four items shipped (one shipment per
    // order, linked by shipment_id), over 90 days, with some messy values.
    let orders = items.div_ceil(2);
    root.query_drop(format!(
        "INSERT INTO {tag}_orders.order_demo (order_id, order_date, order_description, order_value, customer_address, created_at)
         SELECT CONCAT('o', seq), NOW(6), 'Apple Iphone X Black-64 GB',
                ELT(1 + seq % 4, CONCAT('Rs ', seq % 90000), CONCAT('rs. ', seq % 900, ',000'), CONCAT('₹', seq % 1000, '.50'), 'N/A'),
                'No 1, Bangalore', NOW(6)
         FROM seq_1_to_{orders}"
    )).expect("orders");
    root.query_drop(format!(
        "INSERT INTO {tag}_logistics.logistics_demo (id, wmsrecord_id, shipment_cost, created_at, courier, order_id)
         SELECT seq, NULL, CONCAT(seq % 97, '.5'), '2024-05-01' + INTERVAL (seq % 90) DAY + INTERVAL (seq % 86400) SECOND,
                ELT(1 + seq % 3, 'DHL', 'FETCHR', 'BlueDart'), CONCAT('o', seq)
         FROM seq_1_to_{orders} WHERE seq % 4 <> 0"
    )).expect("shipments");
    root.query_drop(format!(
        "INSERT INTO {tag}_wms.wms_demo (order_id, item_type, courier, item_qty, item_localtion, shipment_id, created_at)
         SELECT CONCAT('o', (seq + 1) DIV 2), ELT(1 + seq % 5, 'books', 'toys', 'phone', 'apparel', 'grocery'), 'DHL',
                ELT(1 + seq % 6, '1', '2', ' 3 ', 'two', '1,000', '5'), 'RACK1',
                IF(((seq + 1) DIV 2) % 4 <> 0, CAST((seq + 1) DIV 2 AS CHAR), NULL), NOW(6)
         FROM seq_1_to_{items}"
    )).expect("items");
    println!(
        "filled {items} items, {orders} orders in {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    let token = tag.replace('_', "-");
    let mut config = Config {
        app_id: token.clone(),
        ..Config::default()
    };
    config.source.orders_table = format!("{tag}_orders.order_demo");
    config.source.items_table = format!("{tag}_wms.wms_demo");
    config.source.shipments_table = format!("{tag}_logistics.logistics_demo");
    config.sink.url = search_url();
    config.sink.index_prefix = Some(format!("{token}-"));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt")
        .block_on(outbound::sink::install::install_indices(&config))
        .expect("indices");
    let db = SourceDb {
        port: std::env::var("OUTBOUND_MARIADB_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(3306),
        ..SourceDb::local_stack()
    };
    let options = Options {
        page_size: 5_000,
        ..Options::default()
    };

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let t0 = Instant::now();
    let mut indexer = Indexer {
        agent: agent.clone(),
        body: String::new(),
        docs: 0,
    };
    reconcile::reconcile(&config, &db, &options, &mut indexer).expect("first reconcile");
    indexer.flush();
    println!(
        "indexed {} documents in {:.1}s",
        indexer.docs,
        t0.elapsed().as_secs_f64()
    );

    // Baseline: read what a comparison must read, and nothing more.
    let t0 = Instant::now();
    let mut conn = db.connect().expect("connect");
    let mut rows = 0u64;
    for t in [
        &config.source.items_table,
        &config.source.orders_table,
        &config.source.shipments_table,
    ] {
        for r in conn.query_iter(format!("SELECT * FROM {t}")).expect("scan") {
            r.expect("row");
            rows += 1;
        }
    }
    let search = outbound::reconcile::search::Search::new(&config.sink).expect("search");
    let mut docs = 0u64;
    for alias in [
        "outbound_details",
        "units_daily",
        "courier_daily",
        "warehouse_daily",
    ] {
        let alias = format!("{token}-{alias}");
        search.refresh(&alias).expect("refresh");
        search
            .scan(
                &alias,
                &json!({"match_all": {}}),
                &json!([{"_doc": "asc"}]),
                &json!(true),
                5_000,
                |page| {
                    docs += page.len() as u64;
                    Ok(())
                },
            )
            .expect("scan");
    }
    let baseline = t0.elapsed();
    println!(
        "baseline: {rows} rows and {docs} documents read in {:.1}s",
        baseline.as_secs_f64()
    );

    let t0 = Instant::now();
    let report = reconcile::reconcile(&config, &db, &options, &mut Quiet).expect("reconcile");
    let took = t0.elapsed();
    assert_eq!(report.differences(), 0, "{:?}", report.indices);
    let rate = items as f64 / took.as_secs_f64();
    let base_rate = items as f64 / baseline.as_secs_f64();
    println!(
        "reconcile: {items} items (+ {} rollup documents) in {:.1}s = {rate:.0} items/s; baseline {base_rate:.0} items/s; ratio {:.2}",
        report.indices[1..].iter().map(|s| s.expected).sum::<u64>(),
        took.as_secs_f64(),
        rate / base_rate
    );
    for db in ["orders", "wms", "logistics"] {
        let _ = root.query_drop(format!("DROP DATABASE IF EXISTS `{tag}_{db}`"));
    }
    let _ = agent.delete(&format!("{}/{token}-*", search_url())).call();
}
