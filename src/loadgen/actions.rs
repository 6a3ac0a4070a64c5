//! The operations loadgen performs. Each is drawn at random (seeded), then
//! written down as a [`Plan`] — SQL statements whose parameters may name the
//! id of a row inserted earlier in the same transaction — so that a retry
//! after a connection error repeats exactly the same operation.

use std::collections::VecDeque;

use anyhow::Context;
use mysql::prelude::Queryable;
use mysql::{Conn, TxOpts, Value};
use rand::rngs::StdRng;
use rand::Rng;

use super::messy;
use super::{LoadOptions, LoadStats};

/// How many rows of each kind a run remembers to update, move or delete.
const REMEMBER: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    NewOrder,
    RolledBack,
    OrphanItem,
    UpdateQty,
    UpdateType,
    UpdateDescription,
    UpdateOrderValue,
    MoveItem,
    RelinkShipment,
    MoveShipmentDay,
    ShipItem,
    DeleteItem,
    ReinsertItem,
    DeleteShipment,
    DeleteOrder,
}

/// `<database>.<table>` of each table, quoted.
#[derive(Debug, Clone)]
pub struct Tables {
    orders: String,
    items: String,
    shipments: String,
}

fn quote(key: &str, v: &str) -> anyhow::Result<String> {
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match v.split_once('.') {
        Some((d, t)) if ok(d) && ok(t) => Ok(format!("`{d}`.`{t}`")),
        _ => anyhow::bail!("{key} {v:?}: expected <database>.<table>"),
    }
}

impl Tables {
    pub fn parse(o: &LoadOptions) -> anyhow::Result<Self> {
        Ok(Self {
            orders: quote("--orders-table", &o.orders_table)?,
            items: quote("--items-table", &o.items_table)?,
            shipments: quote("--shipments-table", &o.shipments_table)?,
        })
    }
}

#[derive(Debug, Clone)]
struct ItemRec {
    id: u64,
    order_id: String,
}

#[derive(Debug, Clone)]
struct ShipmentRec {
    id: u64,
    order_id: String,
}

/// What the run has created and may touch again.
pub struct State {
    tables: Tables,
    prefix: String,
    next_order: u64,
    orders: VecDeque<String>,
    items: VecDeque<ItemRec>,
    shipments: VecDeque<ShipmentRec>,
    deleted_items: VecDeque<ItemRec>,
}

/// A statement parameter.
#[derive(Debug, Clone)]
enum P {
    V(Value),
    /// The id the k-th INSERT of this transaction got.
    Id(usize),
    /// That id as text, padded as given (`{}` is the id).
    IdText(usize, String),
}

/// What to remember once the transaction commits.
#[derive(Debug, Clone)]
enum Remember {
    Order(String),
    Item { insert: usize, order_id: String },
    Shipment { insert: usize, order_id: String },
    ItemMoved { id: u64, order_id: String },
    ItemDeleted(u64),
    ItemReinserted(u64),
    ShipmentDeleted(u64),
    OrderDeleted(String),
}

/// One operation, ready to run (and to re-run identically).
#[derive(Debug, Clone)]
pub struct Plan {
    statements: Vec<(String, Vec<P>, bool)>,
    rollback: bool,
    remember: Vec<Remember>,
    /// Counters to add on commit (or, for a rollback, on rollback).
    counts: Vec<&'static str>,
    /// Values written in a messy form.
    messy: u64,
}

impl Plan {
    fn new() -> Self {
        Self {
            statements: Vec::new(),
            rollback: false,
            remember: Vec::new(),
            counts: Vec::new(),
            messy: 0,
        }
    }

    /// A statement; `insert` marks an INSERT whose generated id later
    /// parameters may name.
    fn sql(&mut self, sql: String, params: Vec<P>, insert: bool) {
        self.statements.push((sql, params, insert));
    }
}

fn v<T: Into<Value>>(x: T) -> P {
    P::V(x.into())
}

fn opt(x: Option<String>) -> P {
    P::V(x.map_or(Value::NULL, Value::from))
}

/// A shipment time: a day in the two months from 2024-05-01, any time of day.
fn ship_time(rng: &mut StdRng) -> String {
    let day = chrono::NaiveDate::from_ymd_opt(2024, 5, 1).expect("valid date")
        + chrono::Duration::days(rng.random_range(0..60));
    format!(
        "{day} {:02}:{:02}:{:02}.{:06}",
        rng.random_range(0..24),
        rng.random_range(0..60),
        rng.random_range(0..60),
        rng.random_range(0..1_000_000)
    )
}

/// The next operation: creating orders dominates; the rest need rows.
pub fn pick(rng: &mut StdRng, state: &State) -> Action {
    use Action::*;
    if state.items.is_empty() {
        return NewOrder;
    }
    let weighted: [(Action, u32); 15] = [
        (NewOrder, 30),
        (RolledBack, 4),
        (OrphanItem, 1),
        (UpdateQty, 9),
        (UpdateType, 4),
        (UpdateDescription, 4),
        (UpdateOrderValue, 3),
        (MoveItem, 6),
        (RelinkShipment, 5),
        (MoveShipmentDay, 5),
        (ShipItem, 6),
        (DeleteItem, 4),
        (
            ReinsertItem,
            if state.deleted_items.is_empty() { 0 } else { 4 },
        ),
        (DeleteShipment, 2),
        (DeleteOrder, 2),
    ];
    let total: u32 = weighted.iter().map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total);
    for (a, w) in weighted {
        if x < w {
            return a;
        }
        x -= w;
    }
    NewOrder
}

fn pick_from<T: Clone>(rng: &mut StdRng, q: &VecDeque<T>) -> Option<T> {
    (!q.is_empty()).then(|| q[rng.random_range(0..q.len())].clone())
}

fn push_bounded<T>(q: &mut VecDeque<T>, x: T) {
    if q.len() >= REMEMBER {
        q.pop_front();
    }
    q.push_back(x);
}

impl State {
    pub fn new(tables: Tables, prefix: String) -> Self {
        Self {
            tables,
            prefix,
            next_order: 0,
            orders: VecDeque::new(),
            items: VecDeque::new(),
            shipments: VecDeque::new(),
            deleted_items: VecDeque::new(),
        }
    }

    /// Draws everything the operation needs.
    pub fn plan(&mut self, rng: &mut StdRng, action: Action, share: f64) -> Plan {
        let t = self.tables.clone();
        let mut plan = Plan::new();
        messy::take_count();
        match action {
            Action::NewOrder | Action::RolledBack => {
                self.next_order += 1;
                let order_id = format!("{}{}", self.prefix, self.next_order);
                self.new_order(rng, share, &mut plan, &order_id);
                if action == Action::RolledBack {
                    plan.rollback = true;
                    plan.remember.clear();
                    plan.counts = vec!["rolled_back"];
                }
            }
            Action::OrphanItem => {
                let order = if rng.random_bool(0.5) {
                    None
                } else {
                    Some("  ".to_owned())
                };
                plan.sql(
                    format!("INSERT INTO {} (order_id, item_type, courier, item_qty, item_localtion, shipment_id, created_at) VALUES (?, ?, ?, ?, 'RACK1', NULL, NOW(6))", t.items),
                    vec![opt(order), v(messy::item_type(rng)), v(messy::courier(rng, share)), opt(messy::item_qty(rng, share))],
                    true,
                );
                plan.counts.push("orphan_items");
            }
            Action::UpdateQty | Action::UpdateType => {
                if let Some(it) = pick_from(rng, &self.items) {
                    if action == Action::UpdateQty {
                        plan.sql(
                            format!("UPDATE {} SET item_qty = ? WHERE id = ?", t.items),
                            vec![opt(messy::item_qty(rng, share)), v(it.id)],
                            false,
                        );
                        plan.counts.push("qty_updates");
                    } else {
                        plan.sql(
                            format!("UPDATE {} SET item_type = ? WHERE id = ?", t.items),
                            vec![v(messy::item_type(rng)), v(it.id)],
                            false,
                        );
                        plan.counts.push("type_updates");
                    }
                }
            }
            Action::UpdateDescription | Action::UpdateOrderValue => {
                if let Some(o) = pick_from(rng, &self.orders) {
                    if action == Action::UpdateDescription {
                        let gb = [64, 128, 256, 512][rng.random_range(0..4)];
                        plan.sql(
                            format!(
                                "UPDATE {} SET order_description = ? WHERE order_id = ?",
                                t.orders
                            ),
                            vec![v(format!("Apple Iphone X Black-{gb} GB")), v(o)],
                            false,
                        );
                        plan.counts.push("description_updates");
                    } else {
                        plan.sql(
                            format!("UPDATE {} SET order_value = ? WHERE order_id = ?", t.orders),
                            vec![opt(messy::order_value(rng, share)), v(o)],
                            false,
                        );
                        plan.counts.push("order_value_updates");
                    }
                }
            }
            Action::MoveItem => {
                if let (Some(it), Some(to)) =
                    (pick_from(rng, &self.items), pick_from(rng, &self.orders))
                {
                    plan.sql(
                        format!("UPDATE {} SET order_id = ? WHERE id = ?", t.items),
                        vec![v(messy::id_ref(rng, share, &to)), v(it.id)],
                        false,
                    );
                    plan.remember.push(Remember::ItemMoved {
                        id: it.id,
                        order_id: to,
                    });
                    plan.counts.push("items_moved");
                }
            }
            Action::RelinkShipment => {
                // Mostly within the shipment's order (a re-link that joins);
                // sometimes across orders (it links nothing until moved).
                let pair = pick_from(rng, &self.shipments).and_then(|s| {
                    let same: Vec<&ItemRec> = self
                        .items
                        .iter()
                        .filter(|it| it.order_id == s.order_id)
                        .collect();
                    let it = match (same.is_empty(), rng.random_bool(0.8)) {
                        (false, true) => same[rng.random_range(0..same.len())].clone(),
                        _ => pick_from(rng, &self.items)?,
                    };
                    Some((it, s))
                });
                if let Some((it, s)) = pair {
                    if rng.random_bool(0.5) {
                        plan.sql(
                            format!("UPDATE {} SET shipment_id = ? WHERE id = ?", t.items),
                            vec![v(messy::id_ref(rng, share, &s.id.to_string())), v(it.id)],
                            false,
                        );
                    } else {
                        plan.sql(
                            format!("UPDATE {} SET wmsrecord_id = ? WHERE id = ?", t.shipments),
                            vec![v(it.id.to_string()), v(s.id)],
                            false,
                        );
                    }
                    plan.counts.push("shipments_relinked");
                }
            }
            Action::MoveShipmentDay => {
                if let Some(s) = pick_from(rng, &self.shipments) {
                    let days: i64 = rng.random_range(-3..=3);
                    plan.sql(format!("UPDATE {} SET created_at = created_at + INTERVAL ? DAY WHERE id = ? AND created_at > '1000-01-01'", t.shipments), vec![v(days), v(s.id)], false);
                    plan.counts.push("shipments_moved_day");
                }
            }
            Action::ShipItem => {
                if let Some(it) = pick_from(rng, &self.items) {
                    plan.sql(
                        format!("INSERT INTO {} (wmsrecord_id, item_type, shipment_cost, created_at, courier, order_id) VALUES (?, NULL, ?, ?, ?, ?)", t.shipments),
                        vec![v(it.id.to_string()), opt(messy::shipment_cost(rng, share)), v(ship_time(rng)), v(messy::courier(rng, share)), v(it.order_id.clone())],
                        true,
                    );
                    plan.sql(
                        format!("UPDATE {} SET shipment_id = ? WHERE id = ?", t.items),
                        vec![P::IdText(0, "{}".into()), v(it.id)],
                        false,
                    );
                    plan.remember.push(Remember::Shipment {
                        insert: 0,
                        order_id: it.order_id,
                    });
                    plan.counts.push("shipments");
                }
            }
            Action::DeleteItem => {
                if let Some(it) = pick_from(rng, &self.items) {
                    plan.sql(
                        format!("DELETE FROM {} WHERE id = ?", t.items),
                        vec![v(it.id)],
                        false,
                    );
                    plan.remember.push(Remember::ItemDeleted(it.id));
                    plan.counts.push("items_deleted");
                }
            }
            Action::ReinsertItem => {
                if let Some(it) = pick_from(rng, &self.deleted_items) {
                    plan.sql(
                        format!("INSERT INTO {} (id, order_id, item_type, courier, item_qty, item_localtion, shipment_id, created_at) VALUES (?, ?, ?, ?, ?, 'RACK9', NULL, NOW(6))", t.items),
                        vec![v(it.id), v(it.order_id.clone()), v(messy::item_type(rng)), v(messy::courier(rng, share)), opt(messy::item_qty(rng, share))],
                        false,
                    );
                    plan.remember.push(Remember::ItemReinserted(it.id));
                    plan.counts.push("items_reinserted");
                }
            }
            Action::DeleteShipment => {
                if let Some(s) = pick_from(rng, &self.shipments) {
                    plan.sql(
                        format!("DELETE FROM {} WHERE id = ?", t.shipments),
                        vec![v(s.id)],
                        false,
                    );
                    plan.remember.push(Remember::ShipmentDeleted(s.id));
                    plan.counts.push("shipments_deleted");
                }
            }
            Action::DeleteOrder => {
                if let Some(o) = pick_from(rng, &self.orders) {
                    plan.sql(
                        format!("DELETE FROM {} WHERE order_id = ?", t.orders),
                        vec![v(o.clone())],
                        false,
                    );
                    plan.remember.push(Remember::OrderDeleted(o));
                    plan.counts.push("orders_deleted");
                }
            }
        }
        plan.messy = messy::take_count();
        plan
    }

    /// An order with its items and, mostly, shipments: one transaction over
    /// the three databases.
    fn new_order(&mut self, rng: &mut StdRng, share: f64, plan: &mut Plan, order_id: &str) {
        let t = self.tables.clone();
        let value = messy::order_value(rng, share);
        plan.sql(
            format!("INSERT INTO {} (order_id, order_date, order_description, order_value, customer_address, created_at) VALUES (?, NOW(6), ?, ?, ?, NOW(6))", t.orders),
            vec![v(order_id), v("Apple Iphone X Black-64 GB"), opt(value), v(format!("No {}, 2nd cross, Bangalore", rng.random_range(1..500)))],
            true,
        );
        plan.remember.push(Remember::Order(order_id.to_owned()));
        plan.counts.push("orders");
        let mut inserts = 1;
        if rng.random_bool(0.05) {
            // A second row for the same order id: the greatest id wins.
            plan.sql(
                format!("INSERT INTO {} (order_id, order_date, order_description, order_value, customer_address, created_at) VALUES (?, NOW(6), ?, ?, ?, NOW(6))", t.orders),
                vec![v(messy::id_ref(rng, share, order_id)), v("Apple Iphone X Black-256 GB"), opt(messy::order_value(rng, share)), v("corrected address")],
                true,
            );
            inserts += 1;
            plan.counts.push("duplicate_order_rows");
        }
        let n_items = rng.random_range(1..=3);
        let mut item_inserts = Vec::new();
        for _ in 0..n_items {
            plan.sql(
                format!("INSERT INTO {} (order_id, item_type, courier, item_qty, item_localtion, shipment_id, created_at) VALUES (?, ?, ?, ?, ?, NULL, NOW(6))", t.items),
                vec![v(messy::id_ref(rng, share, order_id)), v(messy::item_type(rng)), v(messy::courier(rng, share)), opt(messy::item_qty(rng, share)), v(format!("RACK{}BA{}", rng.random_range(1..40), rng.random_range(1..9)))],
                true,
            );
            plan.remember.push(Remember::Item {
                insert: inserts,
                order_id: order_id.to_owned(),
            });
            plan.counts.push("items");
            item_inserts.push(inserts);
            inserts += 1;
        }
        // Mostly shipped: one shipment for all items, or one per item.
        if rng.random_bool(0.75) {
            let per_item = rng.random_bool(0.3);
            let targets: Vec<usize> = if per_item {
                item_inserts.clone()
            } else {
                vec![item_inserts[0]]
            };
            for (i, first_item) in targets.iter().enumerate() {
                let created = if rng.random_bool((share / 5.0).min(1.0)) {
                    "0000-00-00 00:00:00".to_owned() // no ship day
                } else {
                    ship_time(rng)
                };
                plan.sql(
                    format!("INSERT INTO {} (wmsrecord_id, item_type, shipment_cost, created_at, courier, order_id) VALUES (?, NULL, ?, ?, ?, ?)", t.shipments),
                    vec![P::IdText(*first_item, "{}".into()), opt(messy::shipment_cost(rng, share)), v(created), v(messy::courier(rng, share)), v(messy::id_ref(rng, share, order_id))],
                    true,
                );
                let shipment_insert = inserts;
                inserts += 1;
                plan.remember.push(Remember::Shipment {
                    insert: shipment_insert,
                    order_id: order_id.to_owned(),
                });
                plan.counts.push("shipments");
                // Link by shipment_id too (not always: wmsrecord_id alone links the first item).
                let linked: Vec<usize> = if per_item {
                    vec![item_inserts[i]]
                } else {
                    item_inserts.clone()
                };
                for item in linked {
                    if rng.random_bool(0.8) {
                        let pad = if messy::id_ref(rng, share, "{}") != "{}" {
                            " {} "
                        } else {
                            "{}"
                        };
                        plan.sql(
                            format!("UPDATE {} SET shipment_id = ? WHERE id = ?", t.items),
                            vec![P::IdText(shipment_insert, pad.into()), P::Id(item)],
                            false,
                        );
                    }
                }
            }
        }
    }

    /// Runs a plan in one transaction; remembers what it created on commit.
    pub fn apply(
        &mut self,
        conn: &mut Conn,
        plan: &Plan,
        stats: &mut LoadStats,
    ) -> anyhow::Result<()> {
        if plan.statements.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<u64> = Vec::new();
        let mut tx = conn.start_transaction(TxOpts::default()).context("BEGIN")?;
        for (sql, params, insert) in &plan.statements {
            let values: Vec<Value> = params
                .iter()
                .map(|p| match p {
                    P::V(x) => Ok(x.clone()),
                    P::Id(k) => ids
                        .get(*k)
                        .map(|id| Value::from(*id))
                        .context("no such insert"),
                    P::IdText(k, pad) => ids
                        .get(*k)
                        .map(|id| Value::from(pad.replace("{}", &id.to_string())))
                        .context("no such insert"),
                })
                .collect::<anyhow::Result<_>>()?;
            tx.exec_drop(sql, values)
                .with_context(|| format!("running {sql}"))?;
            if *insert {
                ids.push(tx.last_insert_id().context("an INSERT without an id")?);
            }
        }
        if plan.rollback {
            tx.rollback().context("ROLLBACK")?;
        } else {
            tx.commit().context("COMMIT")?;
        }
        stats.messy_values += plan.messy;
        if plan.rollback {
            stats.rolled_back += 1;
            return Ok(());
        }
        stats.committed += 1;
        for c in &plan.counts {
            match *c {
                "orders" => stats.orders += 1,
                "duplicate_order_rows" => stats.duplicate_order_rows += 1,
                "items" => stats.items += 1,
                "shipments" => stats.shipments += 1,
                "orphan_items" => stats.orphan_items += 1,
                "qty_updates" => stats.qty_updates += 1,
                "type_updates" => stats.type_updates += 1,
                "description_updates" => stats.description_updates += 1,
                "order_value_updates" => stats.order_value_updates += 1,
                "items_moved" => stats.items_moved += 1,
                "shipments_relinked" => stats.shipments_relinked += 1,
                "shipments_moved_day" => stats.shipments_moved_day += 1,
                "items_deleted" => stats.items_deleted += 1,
                "items_reinserted" => stats.items_reinserted += 1,
                "shipments_deleted" => stats.shipments_deleted += 1,
                "orders_deleted" => stats.orders_deleted += 1,
                _ => {}
            }
        }
        for r in &plan.remember {
            match r {
                Remember::Order(o) => push_bounded(&mut self.orders, o.clone()),
                Remember::Item { insert, order_id } => {
                    if let Some(id) = ids.get(*insert) {
                        push_bounded(
                            &mut self.items,
                            ItemRec {
                                id: *id,
                                order_id: order_id.clone(),
                            },
                        );
                    }
                }
                Remember::Shipment { insert, order_id } => {
                    if let Some(id) = ids.get(*insert) {
                        push_bounded(
                            &mut self.shipments,
                            ShipmentRec {
                                id: *id,
                                order_id: order_id.clone(),
                            },
                        );
                    }
                }
                Remember::ItemMoved { id, order_id } => {
                    for it in self.items.iter_mut().filter(|it| it.id == *id) {
                        it.order_id = order_id.clone();
                    }
                }
                Remember::ItemDeleted(id) => {
                    if let Some(pos) = self.items.iter().position(|it| it.id == *id) {
                        if let Some(it) = self.items.remove(pos) {
                            push_bounded(&mut self.deleted_items, it);
                        }
                    }
                }
                Remember::ItemReinserted(id) => {
                    if let Some(pos) = self.deleted_items.iter().position(|it| it.id == *id) {
                        if let Some(it) = self.deleted_items.remove(pos) {
                            push_bounded(&mut self.items, it);
                        }
                    }
                }
                Remember::ShipmentDeleted(id) => self.shipments.retain(|s| s.id != *id),
                Remember::OrderDeleted(o) => self.orders.retain(|x| x != o),
            }
        }
        Ok(())
    }
}
