//! Private copies of the three source databases for one test run, in the
//! local stack's MariaDB: `<tag>_orders`, `<tag>_wms`, `<tag>_logistics`
//! with the tables of sql/01_schema.sql, readable and writable by the
//! application user, dropped when the test ends. Created as root over the
//! server's socket (OUTBOUND_STACK_DIR, else the repo's .stack).
//!
//! Also: the rows of those tables as Debezium snapshot events, and the
//! pipeline core's expected documents over them (the reference reconcile's
//! SQL must agree with).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};
use outbound::config::Config;
use outbound::source_db::SourceDb;
use outbound_pipeline::config::PipelineConfig;
use outbound_pipeline::join::DetailChange;
use outbound_pipeline::store::MemStore;
use outbound_pipeline::{aggregate, decode, join, rekey, resolve};
use serde_json::{json, Map, Value};

pub fn stack_dir() -> PathBuf {
    std::env::var_os("OUTBOUND_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".stack"))
}

/// Root over the socket of the local stack's MariaDB.
pub fn root() -> Conn {
    let socket = stack_dir().join("run/mariadb.sock");
    let opts = OptsBuilder::new()
        .socket(Some(socket.display().to_string()))
        .user(Some("root"))
        .prefer_socket(true)
        .init(vec![
            "SET NAMES utf8mb4",
            "SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'",
            "SET SESSION time_zone = '+00:00'",
        ]);
    Conn::new(opts).unwrap_or_else(|e| {
        panic!(
            "root login over {} (is the stack up? stack/stack.sh up): {e}",
            socket.display()
        )
    })
}

pub fn app_db() -> SourceDb {
    let mut db = SourceDb::local_stack();
    if let Ok(p) = std::env::var("OUTBOUND_MARIADB_PORT") {
        db.port = p.parse().expect("OUTBOUND_MARIADB_PORT is a port");
    }
    db
}

/// The three private databases of one run.
pub struct PrivateTables {
    pub tag: String,
}

const SCHEMA: &str = include_str!("../../sql/01_schema.sql");

impl PrivateTables {
    /// `tag`: letters, digits and `_` (database names).
    pub fn create(tag: &str) -> Self {
        let mut root = root();
        let schema = SCHEMA
            .replace("orders.", &format!("{tag}_orders."))
            .replace("wms.", &format!("{tag}_wms."))
            .replace("logistics.", &format!("{tag}_logistics."))
            .replace("EXISTS orders ", &format!("EXISTS {tag}_orders "))
            .replace("EXISTS wms ", &format!("EXISTS {tag}_wms "))
            .replace("EXISTS logistics ", &format!("EXISTS {tag}_logistics "));
        for stmt in schema.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let stmt: String = stmt
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            if stmt.trim().is_empty() {
                continue;
            }
            root.query_drop(&stmt)
                .unwrap_or_else(|e| panic!("{stmt}: {e}"));
        }
        for db in ["orders", "wms", "logistics"] {
            root.query_drop(format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON `{tag}_{db}`.* TO 'outbound_app'@'%'"
            ))
            .expect("grant");
        }
        Self {
            tag: tag.to_owned(),
        }
    }

    pub fn orders(&self) -> String {
        format!("{}_orders.order_demo", self.tag)
    }
    pub fn items(&self) -> String {
        format!("{}_wms.wms_demo", self.tag)
    }
    pub fn shipments(&self) -> String {
        format!("{}_logistics.logistics_demo", self.tag)
    }

    /// Points a configuration's source tables here.
    pub fn configure(&self, config: &mut Config) {
        config.source.orders_table = self.orders();
        config.source.items_table = self.items();
        config.source.shipments_table = self.shipments();
    }

    pub fn pipeline_config(&self, prefix: &str) -> PipelineConfig {
        let mut c = Config::default();
        c.source.topic_prefix = prefix.to_owned();
        self.configure(&mut c);
        c.pipeline().expect("valid pipeline config")
    }

    /// Loadgen options writing into these tables.
    pub fn load_options(&self, seed: u64, count: u64) -> outbound::loadgen::LoadOptions {
        outbound::loadgen::LoadOptions {
            seed,
            count: Some(count),
            messy_share: 0.3,
            burst_chance: 0.01,
            orders_table: self.orders(),
            items_table: self.items(),
            shipments_table: self.shipments(),
            ..Default::default()
        }
    }

    pub fn exec(&self, sql: &str) {
        root()
            .query_drop(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Every row of one table as JSON objects (DATETIME as text, as
    /// Debezium's schemaless JSON would carry an ISO time; ids as numbers).
    pub fn rows(&self, table: &str) -> Vec<Map<String, Value>> {
        let mut root = root();
        let cols: Vec<(String, String)> = root
            .exec(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                table.split_once('.').expect("db.table"),
            )
            .expect("columns");
        let select: Vec<String> = cols
            .iter()
            .map(|(c, t)| match t.as_str() {
                "datetime" => format!("CAST(`{c}` AS CHAR)"),
                _ => format!("`{c}`"),
            })
            .collect();
        let rows: Vec<mysql::Row> = root
            .query(format!(
                "SELECT {} FROM {table} ORDER BY id",
                select.join(", ")
            ))
            .expect("rows");
        rows.into_iter()
            .map(|r| {
                let mut m = Map::new();
                for (i, (c, t)) in cols.iter().enumerate() {
                    let v = match r.as_ref(i) {
                        None | Some(mysql::Value::NULL) => Value::Null,
                        Some(mysql::Value::Int(n)) => json!(n),
                        Some(mysql::Value::UInt(n)) => json!(n),
                        Some(mysql::Value::Bytes(b)) if t == "bigint" => {
                            json!(String::from_utf8_lossy(b).parse::<i64>().expect("bigint"))
                        }
                        Some(mysql::Value::Bytes(b)) => json!(String::from_utf8_lossy(b)),
                        Some(other) => json!(other.as_sql(true)),
                    };
                    m.insert(c.clone(), v);
                }
                m
            })
            .collect()
    }

    /// The tables' rows as Debezium snapshot events (schemaless JSON):
    /// (topic, key, value).
    pub fn snapshot_events(&self, prefix: &str) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for table in [self.orders(), self.items(), self.shipments()] {
            let (db, t) = table.split_once('.').expect("db.table");
            for row in self.rows(&table) {
                let key = json!({"id": row["id"]}).to_string().into_bytes();
                let value = json!({
                    "before": null,
                    "after": row,
                    "source": {"connector": "mariadb", "name": prefix, "db": db, "table": t, "ts_ms": 1_700_000_000_000i64, "snapshot": "true"},
                    "op": "r",
                    "ts_ms": 1_700_000_000_000i64,
                })
                .to_string()
                .into_bytes();
                out.push((format!("{prefix}.{db}.{t}"), key, value));
            }
        }
        out
    }

    /// The pipeline core over the snapshot: detail docs by id and rollup
    /// docs by `<rollup>/<id>`, as JSON without the `source` block.
    pub fn expected(&self, prefix: &str) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
        let config = self.pipeline_config(prefix);
        let (mut js, mut rs, mut cs) = (MemStore::new(), MemStore::new(), MemStore::new());
        let (mut details, mut rollups) = (BTreeMap::new(), BTreeMap::new());
        for (offset, (topic, key, value)) in self.snapshot_events(prefix).iter().enumerate() {
            let Some(event) =
                decode::decode_change(&config, topic, Some(key), Some(value)).expect("decodes")
            else {
                continue;
            };
            for (_, change) in rekey::rekey(&event, offset as i64) {
                let out = join::apply(&config, &mut js, &change).expect("join");
                for d in out.details {
                    match resolve::apply(&mut rs, &d).expect("resolve") {
                        Some(DetailChange::Upsert { id, doc, .. }) => {
                            details.insert(id, serde_json::to_value(doc).expect("json"));
                        }
                        Some(DetailChange::Delete { id, .. }) => {
                            details.remove(&id);
                        }
                        None => {}
                    }
                }
                for delta in out.deltas {
                    match aggregate::apply(&mut cs, &delta).expect("aggregate") {
                        aggregate::RollupChange::Upsert { rollup, id, doc } => {
                            rollups.insert(
                                format!("{}/{id}", rollup.as_str()),
                                serde_json::to_value(doc).expect("json"),
                            );
                        }
                        aggregate::RollupChange::Delete { rollup, id } => {
                            rollups.remove(&format!("{}/{id}", rollup.as_str()));
                        }
                    }
                }
            }
        }
        (details, rollups)
    }
}

impl Drop for PrivateTables {
    fn drop(&mut self) {
        if let Ok(mut root) = std::panic::catch_unwind(root) {
            for db in ["orders", "wms", "logistics"] {
                let _ = root.query_drop(format!("DROP DATABASE IF EXISTS `{}_{db}`", self.tag));
            }
        }
    }
}

/// A database-name-safe tag unique to this run.
pub fn tag(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("t_{name}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}
