use outbound_pipeline::join;
use outbound_pipeline::model::{OrderItem, Row, Shipment, Timestamp, Version};
use outbound_pipeline::values::{parse_money, Parsed};
use outbound_pipeline::{KeyedChange, MemStore, PipelineConfig};

fn up(row: Row, v: i64) -> KeyedChange {
    let db = match row {
        Row::Order(_) => "orders",
        Row::Item(_) => "wms",
        Row::Shipment(_) => "logistics",
    };
    KeyedChange::Upsert {
        row,
        db: db.into(),
        ts_ms: v,
        version: Version::from_offset(v),
    }
}

fn run(orders: usize, items: usize) -> std::time::Duration {
    let config = PipelineConfig::default();
    let mut s = MemStore::new();
    let t = std::time::Instant::now();
    let mut v = 0;
    for i in 0..items {
        v += 1;
        let oid = format!("O{}", i % orders);
        if i < orders {
            let sh = Shipment {
                id: format!("s{}", i % orders),
                order_id: Some(oid.clone()),
                shipment_cost: Parsed::Valid(parse_money("Rs 5").unwrap()),
                created_at: Some(Timestamp(1_714_573_800_000_000)),
                ..Shipment::default()
            };
            join::apply(&config, &mut s, &up(Row::Shipment(sh), v)).unwrap();
        }
        let it = OrderItem {
            id: i.to_string(),
            order_id: Some(oid),
            item_qty: Parsed::Valid(1),
            shipment_id: Some(format!("s{}", i % orders)),
            ..OrderItem::default()
        };
        join::apply(&config, &mut s, &up(Row::Item(it), v)).unwrap();
    }
    t.elapsed()
}

fn main() {
    for (o, n) in [(10_000, 30_000), (1, 30_000), (1, 3_000), (1000, 3000)] {
        eprintln!("{o} orders {n} items: {:?}", run(o, n));
    }
}
