//! Throughput of the pipeline core on one core: decode (Debezium JSON) →
//! rekey → join → resolve / aggregate, with in-memory state, over a realistic
//! mix of change events for orders with 1–3 items and 1–2 shipments
//! (creates, shipment links, courier and value updates, some deletes), half
//! with the schema wrapper as the MariaDB connector writes it, half without.
//!
//! Run: `cargo bench -p outbound-pipeline --bench pipeline`. Criterion reports
//! elements/s = events/s for one core.

#[path = "../pipeline/tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use common::{col, json_str, logical, ColumnDef, Event, Image};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use outbound_pipeline::{
    aggregate, codec, join, rekey, resolve, Decoder, KeyedChange, MemStore, PipelineConfig,
};

struct Record {
    topic: String,
    value: Option<Vec<u8>>,
}

fn order_cols() -> Vec<ColumnDef> {
    vec![
        col("id", "int32"),
        col("order_id", "string"),
        col("order_value", "string"),
        col("order_description", "string"),
        col("customer_address", "string"),
        logical("created_at", "int64", "io.debezium.time.Timestamp"),
        logical("updated_at", "int64", "io.debezium.time.Timestamp"),
    ]
}

fn item_cols() -> Vec<ColumnDef> {
    vec![
        col("id", "int32"),
        col("order_id", "string"),
        col("item_type", "string"),
        col("item_qty", "string"),
        col("shipment_id", "string"),
        col("courier", "string"),
        logical("created_at", "int64", "io.debezium.time.Timestamp"),
        logical("updated_at", "int64", "io.debezium.time.Timestamp"),
    ]
}

fn shipment_cols() -> Vec<ColumnDef> {
    vec![
        col("id", "int32"),
        col("order_id", "string"),
        col("wmsrecord_id", "int32"),
        col("shipment_cost", "string"),
        col("courier", "string"),
        logical("item_type", "int64", "io.debezium.time.Timestamp"),
        logical("created_at", "int64", "io.debezium.time.Timestamp"),
        logical("updated_at", "int64", "io.debezium.time.Timestamp"),
    ]
}

struct Gen {
    records: Vec<Record>,
    ts: i64,
    pos: u64,
    seed: u64,
}

impl Gen {
    fn rand(&mut self, n: u64) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed % n
    }

    fn push(
        &mut self,
        db: &str,
        table: &str,
        columns: Vec<ColumnDef>,
        op: &'static str,
        before: Option<Image>,
        after: Option<Image>,
    ) {
        self.ts += 7;
        self.pos += 311;
        let with_schema = self.rand(2) == 0;
        let event = Event {
            connector: "mariadb",
            prefix: "outbound",
            db: db.into(),
            table: table.into(),
            op,
            columns,
            before,
            after,
            ts_ms: self.ts,
            file: "mysql-bin.000003",
            pos: self.pos,
            snapshot: "false",
        };
        self.records.push(Record {
            topic: event.topic(),
            value: Some(event.to_json(with_schema).into_bytes()),
        });
        if op == "d" {
            self.records.push(Record {
                topic: event.topic(),
                value: None,
            });
        }
    }
}

fn order_image(id: u64, value: u64, ts: i64) -> Image {
    vec![
        ("id", id.to_string()),
        ("order_id", json_str(&format!("ORD-{id:07}"))),
        ("order_value", json_str(&format!("Rs {value}"))),
        ("order_description", json_str("Smartphone 128GB, blue")),
        (
            "customer_address",
            json_str("221B MG Road, Bengaluru 560001"),
        ),
        ("created_at", ts.to_string()),
        ("updated_at", ts.to_string()),
    ]
}

fn item_image(id: u64, order: u64, kind: &str, qty: u64, shipment: Option<u64>, ts: i64) -> Image {
    vec![
        ("id", id.to_string()),
        ("order_id", json_str(&format!("ORD-{order:07}"))),
        ("item_type", json_str(kind)),
        ("item_qty", json_str(&qty.to_string())),
        (
            "shipment_id",
            shipment.map_or("null".into(), |s| json_str(&s.to_string())),
        ),
        ("courier", json_str("dhl")),
        ("created_at", ts.to_string()),
        ("updated_at", ts.to_string()),
    ]
}

fn shipment_image(id: u64, order: u64, wms: u64, cost: u64, courier: &str, ts: i64) -> Image {
    vec![
        ("id", id.to_string()),
        ("order_id", json_str(&format!("ORD-{order:07}"))),
        ("wmsrecord_id", wms.to_string()),
        ("shipment_cost", json_str(&format!("Rs {cost}"))),
        ("courier", json_str(courier)),
        ("item_type", ts.to_string()),
        ("created_at", ts.to_string()),
        ("updated_at", ts.to_string()),
    ]
}

/// The life of `orders` orders: created, items picked, shipped, some updated or cancelled.
fn workload(orders: u64) -> Vec<Record> {
    let mut g = Gen {
        records: Vec::new(),
        ts: 1_714_557_600_000,
        pos: 4,
        seed: 0x9E37_79B9_7F4A_7C15,
    };
    let kinds = ["phone", "laptop", "charger", "headphones", "case"];
    let couriers = ["dhl", "bluedart", "delhivery", "fedex"];
    let (mut item_id, mut ship_id) = (0u64, 0u64);
    for o in 1..=orders {
        let value = 500 + g.rand(60_000);
        let ts = g.ts;
        g.push(
            "orders",
            "order_demo",
            order_cols(),
            "c",
            None,
            Some(order_image(o, value, ts)),
        );
        let n_items = 1 + g.rand(3);
        let mut items = Vec::new();
        for _ in 0..n_items {
            item_id += 1;
            let kind = kinds[g.rand(5) as usize];
            let qty = 1 + g.rand(4);
            let ts = g.ts;
            g.push(
                "wms",
                "wms_demo",
                item_cols(),
                "c",
                None,
                Some(item_image(item_id, o, kind, qty, None, ts)),
            );
            items.push((item_id, kind, qty, ts));
        }
        let n_ships = 1 + g.rand(2).min(n_items - 1);
        for s in 0..n_ships {
            ship_id += 1;
            let (wms, ..) = items[s as usize];
            let courier = couriers[g.rand(4) as usize];
            let cost = 40 + g.rand(200);
            let ts = g.ts;
            g.push(
                "logistics",
                "logistics_demo",
                shipment_cols(),
                "c",
                None,
                Some(shipment_image(ship_id, o, wms, cost, courier, ts)),
            );
        }
        // Link every item to the order's first shipment.
        for (id, kind, qty, ts) in items.clone() {
            let now = g.ts;
            let before = item_image(id, o, kind, qty, None, ts);
            let after = item_image(id, o, kind, qty, Some(ship_id - n_ships + 1), now);
            g.push(
                "wms",
                "wms_demo",
                item_cols(),
                "u",
                Some(before),
                Some(after),
            );
        }
        match g.rand(10) {
            0 => {
                let ts = g.ts;
                g.push(
                    "orders",
                    "order_demo",
                    order_cols(),
                    "u",
                    Some(order_image(o, value, ts)),
                    Some(order_image(o, value + 99, ts + 5)),
                );
            }
            1 => {
                let (id, kind, qty, ts) = items[0];
                g.push(
                    "wms",
                    "wms_demo",
                    item_cols(),
                    "d",
                    Some(item_image(
                        id,
                        o,
                        kind,
                        qty,
                        Some(ship_id - n_ships + 1),
                        ts,
                    )),
                    None,
                );
            }
            _ => {}
        }
    }
    g.records
}

fn run(
    config: &PipelineConfig,
    records: &[Record],
    stores: &mut (MemStore, MemStore, MemStore),
    encode: bool,
) -> usize {
    let mut decoder = Decoder::default();
    let mut outputs = 0;
    for (offset, r) in records.iter().enumerate() {
        let Some(event) = decoder
            .decode(config, &r.topic, None, r.value.as_deref())
            .expect("decodes")
        else {
            continue;
        };
        for (_, change) in rekey(&event, offset as i64) {
            let change = if encode {
                codec::decode::<KeyedChange>(&codec::encode(&change).expect("encode"))
                    .expect("decode")
            } else {
                change
            };
            let out = join::apply(config, &mut stores.0, &change).expect("join");
            for d in &out.details {
                outputs += resolve::apply(&mut stores.1, d).expect("resolve").is_some() as usize;
            }
            for d in &out.deltas {
                black_box(aggregate::apply(&mut stores.2, d).expect("aggregate"));
                outputs += 1;
            }
        }
    }
    outputs
}

fn bench(c: &mut Criterion) {
    let config = PipelineConfig::default();
    let records = workload(2_000);
    let bytes: usize = records
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Vec::len))
        .sum();
    eprintln!(
        "workload: {} records, {} MiB of JSON",
        records.len(),
        bytes >> 20
    );
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.sample_size(20);
    for (name, encode) in [
        ("decode_rekey_join_aggregate", false),
        ("with_internal_topic_encoding", true),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || (MemStore::new(), MemStore::new(), MemStore::new()),
                |mut stores| black_box(run(&config, &records, &mut stores, encode)),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();

    let mut decode_only = c.benchmark_group("decode");
    decode_only.throughput(Throughput::Elements(records.len() as u64));
    decode_only.sample_size(20);
    decode_only.bench_function("decode", |b| {
        b.iter(|| {
            let mut decoder = Decoder::default();
            for r in &records {
                black_box(
                    decoder
                        .decode(&config, &r.topic, None, r.value.as_deref())
                        .expect("decodes"),
                );
            }
        })
    });
    decode_only.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
