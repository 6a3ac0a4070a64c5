//! Random change histories of the three source tables, rendered as the
//! Debezium MariaDB connector renders them (JSON with the schema wrapper),
//! with the final table contents kept alongside for the expected result.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// A tiny deterministic generator (xorshift64*): tests are reproducible from
/// their seed without another dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    Orders,
    Items,
    Shipments,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Orders, Table::Items, Table::Shipments];
    pub fn db(self) -> &'static str {
        match self {
            Table::Orders => "orders",
            Table::Items => "wms",
            Table::Shipments => "logistics",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Table::Orders => "order_demo",
            Table::Items => "wms_demo",
            Table::Shipments => "logistics_demo",
        }
    }
    /// (column, Kafka Connect type, semantic name) in table order.
    fn columns(self) -> &'static [(&'static str, &'static str, Option<&'static str>)] {
        const TS: Option<&str> = Some("io.debezium.time.MicroTimestamp");
        match self {
            Table::Orders => &[
                ("id", "int64", None),
                ("order_id", "string", None),
                ("order_date", "int64", TS),
                ("order_description", "string", None),
                ("order_value", "string", None),
                ("customer_address", "string", None),
                ("created_at", "int64", TS),
            ],
            Table::Items => &[
                ("id", "int64", None),
                ("order_id", "string", None),
                ("item_type", "string", None),
                ("courier", "string", None),
                ("item_qty", "string", None),
                ("item_localtion", "string", None),
                ("shipment_id", "string", None),
                ("created_at", "int64", TS),
            ],
            Table::Shipments => &[
                ("id", "int64", None),
                ("wmsrecord_id", "string", None),
                ("item_type", "int64", TS),
                ("shipment_cost", "string", None),
                ("created_at", "int64", TS),
                ("courier", "string", None),
                ("order_id", "string", None),
            ],
        }
    }
}

/// One row: column → JSON value (`id` is an integer).
pub type Row = BTreeMap<&'static str, Value>;

/// One source record as Debezium writes it.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub table: Table,
    pub key: Vec<u8>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

pub struct History {
    pub records: Vec<SourceRecord>,
    /// Final contents of each table, by id.
    pub tables: BTreeMap<Table, BTreeMap<i64, Row>>,
    /// Source `ts_ms` of each row's last change (documents carry it).
    pub last_ts: BTreeMap<(Table, i64), i64>,
}

fn schema(table: Table, prefix: &str) -> Value {
    let fields: Vec<Value> = table
        .columns()
        .iter()
        .map(|(name, ty, semantic)| {
            let mut f = json!({"type": ty, "optional": *name != "id", "field": name});
            if let Some(s) = semantic {
                f["name"] = json!(s);
                f["version"] = json!(1);
            }
            f
        })
        .collect();
    let value_name = format!("{prefix}.{}.{}.Value", table.db(), table.name());
    json!({
        "type": "struct",
        "name": format!("{prefix}.{}.{}.Envelope", table.db(), table.name()),
        "optional": false,
        "version": 2,
        "fields": [
            {"type": "struct", "fields": fields.clone(), "optional": true, "name": value_name, "field": "before"},
            {"type": "struct", "fields": fields, "optional": true, "name": value_name, "field": "after"},
            {"type": "struct", "optional": false, "name": "io.debezium.connector.mariadb.Source", "field": "source", "fields": [
                {"type": "string", "optional": false, "field": "version"},
                {"type": "string", "optional": false, "field": "connector"},
                {"type": "string", "optional": false, "field": "name"},
                {"type": "int64", "optional": false, "field": "ts_ms"},
                {"type": "string", "optional": false, "field": "db"},
                {"type": "string", "optional": true, "field": "table"},
                {"type": "string", "optional": false, "field": "file"},
                {"type": "int64", "optional": false, "field": "pos"},
                {"type": "int32", "optional": false, "field": "row"}
            ]},
            {"type": "string", "optional": false, "field": "op"},
            {"type": "int64", "optional": true, "field": "ts_ms"}
        ]
    })
}

pub struct Generator {
    rng: Rng,
    prefix: String,
    schemas: BTreeMap<Table, Value>,
    tables: BTreeMap<Table, BTreeMap<i64, Row>>,
    next_id: BTreeMap<Table, i64>,
    records: Vec<SourceRecord>,
    last_ts: BTreeMap<(Table, i64), i64>,
    pos: u64,
    orders: u64,
    /// Key skew of order ids: 0 is uniform; `s > 0` draws the index as
    /// `orders × u^(1+s)` (u uniform in [0, 1)), so low ids are hot: with
    /// s = 2 a fifth of the changes fall on 1% of the orders.
    skew: f64,
}

const DAY_US: i64 = 86_400_000_000;
const BASE_US: i64 = 1_714_521_600_000_000; // 2024-05-01T00:00:00Z

impl Generator {
    pub fn new(seed: u64, prefix: &str, orders: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            prefix: prefix.to_owned(),
            schemas: Table::ALL
                .into_iter()
                .map(|t| (t, schema(t, prefix)))
                .collect(),
            tables: Table::ALL
                .into_iter()
                .map(|t| (t, BTreeMap::new()))
                .collect(),
            next_id: Table::ALL.into_iter().map(|t| (t, 1)).collect(),
            records: Vec::new(),
            last_ts: BTreeMap::new(),
            pos: 4,
            orders: orders.max(1),
            skew: 0.0,
        }
    }

    /// The same generator with order ids drawn with key skew `skew` (see the field).
    pub fn with_skew(mut self, skew: f64) -> Self {
        self.skew = skew.max(0.0);
        self
    }

    fn order_index(&mut self) -> u64 {
        if self.skew <= 0.0 {
            return self.rng.below(self.orders);
        }
        let u = (self.rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((self.orders as f64 * u.powf(1.0 + self.skew)) as u64).min(self.orders - 1)
    }

    fn order_id(&mut self) -> Value {
        if self.rng.chance(2) {
            return Value::Null;
        }
        json!(format!("ORD-{}", self.order_index()))
    }

    fn ts(&mut self) -> Value {
        if self.rng.chance(3) {
            return Value::Null;
        }
        // Spread over a week, at any time of day.
        json!(
            BASE_US + self.rng.below(7) as i64 * DAY_US + self.rng.below(86_400) as i64 * 1_000_000
        )
    }

    fn money(&mut self, rs: bool) -> Value {
        let n = self.rng.below(100_000);
        match self.rng.below(20) {
            0 => json!("n/a"),
            1 => Value::Null,
            2 => json!(format!("₹{},{:03}.50", n / 1000, n % 1000)),
            _ if rs => json!(format!("Rs {n}")),
            _ => json!(format!("{n}")),
        }
    }

    fn random_row(&mut self, table: Table, id: i64) -> Row {
        let mut r = Row::new();
        r.insert("id", json!(id));
        match table {
            Table::Orders => {
                let oid = self.order_id();
                r.insert("order_id", oid);
                let t = self.ts();
                r.insert("order_date", t);
                r.insert(
                    "order_description",
                    json!(format!("phone {} GB", 32 << self.rng.below(3))),
                );
                let v = self.money(true);
                r.insert("order_value", v);
                r.insert(
                    "customer_address",
                    json!(format!("street {}", self.rng.below(500))),
                );
                let t = self.ts();
                r.insert("created_at", t);
            }
            Table::Items => {
                // Often an item of an existing shipment's order, linked to it.
                let linked = self
                    .existing(Table::Shipments)
                    .filter(|_| self.rng.chance(50));
                let oid = match &linked {
                    Some(s) => s.get("order_id").cloned().unwrap_or(Value::Null),
                    None => self.order_id(),
                };
                r.insert("order_id", oid);
                r.insert(
                    "item_type",
                    json!(["electronics", "books", "toys"][self.rng.below(3) as usize]),
                );
                r.insert(
                    "courier",
                    json!(["DHL", "FedEx", "BlueDart"][self.rng.below(3) as usize]),
                );
                let qty = match self.rng.below(15) {
                    0 => json!("two"),
                    1 => Value::Null,
                    n => json!(format!("{}", n % 5)),
                };
                r.insert("item_qty", qty);
                r.insert("item_localtion", json!("RACK1"));
                let sid = match &linked {
                    Some(s) => json!(s["id"].to_string()),
                    None => self.shipment_ref(),
                };
                r.insert("shipment_id", sid);
                let t = self.ts();
                r.insert("created_at", t);
            }
            Table::Shipments => {
                // Mostly a shipment of an existing item: same order, often
                // naming the item as its wmsrecord_id.
                let item = self.existing(Table::Items).filter(|_| self.rng.chance(80));
                let (oid, w) = match &item {
                    Some(i) => (
                        i.get("order_id").cloned().unwrap_or(Value::Null),
                        if self.rng.chance(60) {
                            json!(i["id"].to_string())
                        } else {
                            Value::Null
                        },
                    ),
                    None => (self.order_id(), self.item_ref()),
                };
                r.insert("order_id", oid);
                r.insert("wmsrecord_id", w);
                r.insert("item_type", Value::Null);
                let c = self.money(false);
                r.insert("shipment_cost", c);
                let t = self.ts();
                r.insert("created_at", t);
                r.insert(
                    "courier",
                    json!(["DHL", "FedEx", "BlueDart"][self.rng.below(3) as usize]),
                );
            }
        }
        r
    }

    /// A random existing row of `table`.
    fn existing(&mut self, table: Table) -> Option<Row> {
        let n = self.tables[&table].len() as u64;
        if n == 0 {
            return None;
        }
        let i = self.rng.below(n) as usize;
        self.tables[&table].values().nth(i).cloned()
    }

    fn shipment_ref(&mut self) -> Value {
        let next = self.next_id[&Table::Shipments];
        if self.rng.chance(30) {
            Value::Null
        } else {
            json!(format!("{}", 1 + self.rng.below(next as u64 + 3)))
        }
    }

    fn item_ref(&mut self) -> Value {
        let next = self.next_id[&Table::Items];
        if self.rng.chance(40) {
            Value::Null
        } else {
            json!(format!("{}", 1 + self.rng.below(next as u64 + 3)))
        }
    }

    fn emit(&mut self, table: Table, op: &str, before: Option<&Row>, after: Option<&Row>, id: i64) {
        self.pos += 100 + self.rng.below(400);
        let ts_ms = BASE_US / 1000 + self.pos as i64;
        self.last_ts.insert((table, id), ts_ms);
        self.emit_at(table, op, before, after, id, ts_ms);
    }

    fn emit_at(
        &mut self,
        table: Table,
        op: &str,
        before: Option<&Row>,
        after: Option<&Row>,
        id: i64,
        ts_ms: i64,
    ) {
        let to_json = |r: Option<&Row>| r.map_or(Value::Null, |r| json!(r));
        let payload = json!({
            "before": to_json(before),
            "after": to_json(after),
            "source": {"version": "3.4.0.Final", "connector": "mariadb", "name": self.prefix, "ts_ms": ts_ms,
                       "db": table.db(), "table": table.name(), "file": "mariadb-bin.000001", "pos": self.pos, "row": 0},
            "op": op,
            "ts_ms": ts_ms + 5,
        });
        let value = json!({"schema": self.schemas[&table], "payload": payload});
        let key = json!({"schema": {"type": "struct", "optional": false, "fields": [{"type": "int64", "optional": false, "field": "id"}]},
                         "payload": {"id": id}});
        let key = serde_json::to_vec(&key).expect("json");
        self.records.push(SourceRecord {
            table,
            key: key.clone(),
            value: Some(serde_json::to_vec(&value).expect("json")),
        });
        if op == "d" {
            self.records.push(SourceRecord {
                table,
                key,
                value: None,
            });
        }
    }

    /// One random change to one table.
    pub fn step(&mut self) {
        let table = *self.rng.pick(&Table::ALL).expect("tables");
        let ids: Vec<i64> = self.tables[&table].keys().copied().collect();
        let roll = self.rng.below(100);
        if ids.is_empty() || roll < 45 {
            let id = self.next_id[&table];
            *self.next_id.get_mut(&table).expect("table") += 1;
            let row = self.random_row(table, id);
            self.emit(table, "c", None, Some(&row), id);
            self.tables.get_mut(&table).expect("table").insert(id, row);
        } else if roll < 88 {
            let id = *self.rng.pick(&ids).expect("ids");
            let before = self.tables[&table][&id].clone();
            let mut after = before.clone();
            let fresh = self.random_row(table, id);
            // Change one or two columns: order moves, re-links, values.
            for _ in 0..1 + self.rng.below(2) {
                let cols: Vec<&'static str> =
                    fresh.keys().copied().filter(|c| *c != "id").collect();
                let col = *self.rng.pick(&cols).expect("columns");
                after.insert(col, fresh[col].clone());
            }
            self.emit(table, "u", Some(&before), Some(&after), id);
            self.tables
                .get_mut(&table)
                .expect("table")
                .insert(id, after);
        } else {
            let id = *self.rng.pick(&ids).expect("ids");
            let before = self
                .tables
                .get_mut(&table)
                .expect("table")
                .remove(&id)
                .expect("row");
            self.emit(table, "d", Some(&before), None, id);
        }
        // Debezium re-delivers a suffix after a connector restart.
        if self.rng.chance(1) {
            let n = self.records.len();
            let from = n.saturating_sub(1 + self.rng.below(8) as usize);
            let replay: Vec<SourceRecord> = self.records[from..].to_vec();
            self.records.extend(replay);
        }
    }

    pub fn finish(self) -> History {
        History {
            records: self.records,
            tables: self.tables,
            last_ts: self.last_ts,
        }
    }
}

/// A history of `changes` random changes over `orders` distinct order ids.
pub fn generate(seed: u64, prefix: &str, orders: u64, changes: usize) -> History {
    let mut g = Generator::new(seed, prefix, orders);
    for _ in 0..changes {
        g.step();
    }
    g.finish()
}

/// The final contents of `table` rendered as snapshot (`r`) events, which is
/// how the expected result is computed: a batch over the final rows.
pub fn snapshot_records(history: &History, prefix: &str) -> Vec<SourceRecord> {
    let mut g = Generator::new(1, prefix, 1);
    for (table, rows) in &history.tables {
        for (id, row) in rows {
            let ts = history.last_ts.get(&(*table, *id)).copied().unwrap_or(0);
            g.emit_at(*table, "r", None, Some(row), *id, ts);
        }
    }
    g.records
}
