//! `outbound loadgen` writes what it says it writes: the same seed gives the
//! same tables (two fresh private database sets, compared row for row apart
//! from NOW() times), the counts it prints match the tables, a rolled-back
//! transaction leaves nothing, and the messy values are there. The library
//! API (`spawn`, `stop`, `finish`) stops a background load on request.
//!
//! Needs the local stack's MariaDB (`stack/stack.sh up mariadb`).

mod source_tables;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use outbound::loadgen::{self, LoadOptions, Loadgen};
use serde_json::Value;
use source_tables::{app_db, root, tag, PrivateTables};

/// The tables' contents without the columns loadgen fills with NOW().
fn contents(t: &PrivateTables) -> Vec<Vec<serde_json::Map<String, Value>>> {
    [t.orders(), t.items(), t.shipments()]
        .iter()
        .map(|table| {
            t.rows(table)
                .into_iter()
                .map(|mut r| {
                    if !table.ends_with("logistics_demo") {
                        r.remove("created_at");
                        r.remove("order_date");
                    }
                    r
                })
                .collect()
        })
        .collect()
}

fn count(sql: &str) -> u64 {
    root().query_first(sql).expect("query").expect("a count")
}

#[test]
fn the_same_seed_writes_the_same_tables() {
    let (a, b) = (
        PrivateTables::create(&tag("lga")),
        PrivateTables::create(&tag("lgb")),
    );
    let mut stats = Vec::new();
    for t in [&a, &b] {
        let mut options = t.load_options(42, 300);
        options.order_prefix = "seeded-".into();
        stats.push(
            Loadgen::new(app_db(), options)
                .expect("loadgen")
                .run(&AtomicBool::new(false))
                .expect("runs"),
        );
    }
    let (sa, sb) = (&stats[0], &stats[1]);
    assert_eq!(sa.transactions, 300);
    assert_eq!(
        (
            sa.committed,
            sa.rolled_back,
            sa.items,
            sa.items_moved,
            sa.items_deleted
        ),
        (
            sb.committed,
            sb.rolled_back,
            sb.items,
            sb.items_moved,
            sb.items_deleted
        ),
        "{sa}\n{sb}"
    );
    let (ca, cb) = (contents(&a), contents(&b));
    assert_eq!(ca, cb, "same seed, different tables");

    // What it printed is what the tables hold.
    let s = sa;
    let items_now = count(&format!("SELECT COUNT(*) FROM {}", a.items()));
    assert_eq!(
        items_now,
        s.items + s.orphan_items + s.items_reinserted - s.items_deleted,
        "{s}"
    );
    let orders_now = count(&format!("SELECT COUNT(*) FROM {}", a.orders()));
    assert!(orders_now <= s.orders + s.duplicate_order_rows, "{s}");
    for (what, n) in [
        ("orders", s.orders),
        ("shipments", s.shipments),
        ("quantity updates", s.qty_updates),
        ("item moves", s.items_moved),
        ("shipment re-links", s.shipments_relinked),
        ("shipment day moves", s.shipments_moved_day),
        ("item deletes", s.items_deleted),
        ("re-inserts", s.items_reinserted),
        ("rolled-back transactions", s.rolled_back),
        ("messy values", s.messy_values),
    ] {
        assert!(n > 0, "no {what} in 300 transactions: {s}");
    }
    // Rolled-back orders left no row: no more order ids than committed orders.
    let rolled_back_visible = count(&format!(
        "SELECT COUNT(DISTINCT order_id) FROM {} WHERE order_id LIKE 'seeded-%'",
        a.orders()
    ));
    assert!(
        rolled_back_visible <= s.orders,
        "rolled-back orders are visible: {s}"
    );
    // Messy forms of the issue are written.
    let messy = count(&format!(
        "SELECT COUNT(*) FROM {} WHERE order_value LIKE 'rs.%' OR order_value LIKE 'inr %' OR order_value LIKE '%/-' OR order_value LIKE '%,%'",
        a.orders()
    ));
    assert!(messy > 0, "no messy order values");
}

#[test]
fn a_background_load_runs_at_its_rate_until_stopped() {
    let t = PrivateTables::create(&tag("lgbg"));
    let options = LoadOptions {
        rate: Some(40.0),
        count: None,
        burst_chance: 0.0,
        ..t.load_options(3, 0)
    };
    let started = Instant::now();
    let handle = loadgen::spawn(app_db(), options).expect("spawn");
    // Wait for rows to appear (a condition, not a fixed sleep).
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&format!("SELECT COUNT(*) FROM {}", t.orders())) < 20 {
        assert!(Instant::now() < deadline, "no load within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = handle.finish().expect("the load stops cleanly");
    let secs = started.elapsed().as_secs_f64();
    assert!(stats.transactions >= 20, "{stats}");
    // Paced: never faster than the rate (plus the first transaction).
    assert!(
        stats.transactions as f64 <= 40.0 * secs + 2.0,
        "{stats} in {secs:.1}s"
    );
}
