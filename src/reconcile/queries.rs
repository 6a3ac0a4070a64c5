//! The batch definition in `sql/reconcile/`, filled in for this deployment:
//! which tables, which optional columns they have, the business time zone.
//! The SQL is the definition; this file only substitutes its placeholders.

use anyhow::{bail, Context};
use mysql::prelude::Queryable;
use mysql::Conn;

use crate::config::Config;

const ORDER_ITEMS: &str = include_str!("../../sql/reconcile/order_items.sql");
const DETAILS: &str = include_str!("../../sql/reconcile/details.sql");
const UNITS_DAILY: &str = include_str!("../../sql/reconcile/units_daily.sql");
const COURIER_DAILY: &str = include_str!("../../sql/reconcile/courier_daily.sql");
const WAREHOUSE_DAILY: &str = include_str!("../../sql/reconcile/warehouse_daily.sql");

/// A table as `<database>.<table>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub database: String,
    pub table: String,
}

impl Table {
    fn parse(key: &str, v: &str) -> anyhow::Result<Self> {
        match v.split_once('.') {
            Some((d, t)) if ident_ok(d) && ident_ok(t) => Ok(Table {
                database: d.into(),
                table: t.into(),
            }),
            _ => bail!("config key `{key}` = {v:?}: expected `<database>.<table>` of letters, digits and '_'"),
        }
    }

    /// Quoted for SQL: `` `db`.`table` ``.
    fn sql(&self) -> String {
        format!("`{}`.`{}`", self.database, self.table)
    }
}

fn ident_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// The three rollups, as reconcile names them (the index alias names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollup {
    UnitsDaily,
    CourierDaily,
    WarehouseDaily,
}

impl Rollup {
    pub const ALL: [Rollup; 3] = [
        Rollup::UnitsDaily,
        Rollup::CourierDaily,
        Rollup::WarehouseDaily,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rollup::UnitsDaily => "units_daily",
            Rollup::CourierDaily => "courier_daily",
            Rollup::WarehouseDaily => "warehouse_daily",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Rollup::UnitsDaily => UNITS_DAILY,
            Rollup::CourierDaily => COURIER_DAILY,
            Rollup::WarehouseDaily => WAREHOUSE_DAILY,
        }
    }
}

/// Optional columns of one table: the expression to read, or NULL.
#[derive(Debug, Clone)]
struct Optional {
    updated_at: &'static str,
    warehouse_id: &'static str,
}

/// The filled-in queries of one deployment.
#[derive(Debug, Clone)]
pub struct Queries {
    /// Every items table: the main one first, then the extra warehouses'.
    pub items: Vec<Table>,
    pub orders: Table,
    pub shipments: Table,
    items_optional: Vec<Optional>,
    order_updated_at: &'static str,
    shipment_updated_at: &'static str,
    /// As CONVERT_TZ reads it.
    time_zone: String,
    /// `warehouse_rule = source_db`: the warehouse is always the database.
    warehouse_is_db: bool,
}

/// Which items of a table the details query reads.
pub enum ItemScope<'a> {
    /// Every item, or (`since`) those created at or after `?` (bound).
    All { since: bool },
    /// Exactly these primary keys.
    Ids(&'a [i64]),
}

impl Queries {
    /// Reads the configuration and asks the server which optional columns
    /// exist and whether it knows the business time zone.
    pub fn prepare(config: &Config, conn: &mut Conn) -> anyhow::Result<Self> {
        let s = &config.source;
        let mut items = vec![Table::parse("source.items_table", &s.items_table)?];
        for topic in &s.extra_item_topics {
            // `<prefix>.<db>.<table>`: the database and table of its rows.
            let mut parts = topic.rsplitn(3, '.');
            let (table, db) = (parts.next(), parts.next());
            match (db, table) {
                (Some(d), Some(t)) => items.push(Table::parse("source.extra_item_topics", &format!("{d}.{t}"))?),
                _ => bail!("config key `source.extra_item_topics`: {topic:?} is not `<prefix>.<database>.<table>`"),
            }
        }
        let orders = Table::parse("source.orders_table", &s.orders_table)?;
        let shipments = Table::parse("source.shipments_table", &s.shipments_table)?;
        let mut has = |t: &Table, column: &str| -> anyhow::Result<bool> {
            let n: Option<i64> = conn
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.columns \
                     WHERE table_schema = ? AND table_name = ? AND column_name = ?",
                    (&t.database, &t.table, column),
                )
                .with_context(|| format!("reading the columns of {}", t.sql()))?;
            Ok(n.unwrap_or(0) > 0)
        };
        for t in std::iter::once(&orders).chain([&shipments]).chain(&items) {
            anyhow::ensure!(
                has(t, "id")? && has(t, "order_id")?,
                "table {} does not exist or lacks `id`/`order_id` (or the user may not read it)",
                t.sql()
            );
        }
        let mut items_optional = Vec::new();
        for t in &items {
            items_optional.push(Optional {
                updated_at: if has(t, "updated_at")? {
                    "w.updated_at"
                } else {
                    "NULL"
                },
                warehouse_id: if has(t, "warehouse_id")? {
                    "w.warehouse_id"
                } else {
                    "NULL"
                },
            });
        }
        let order_updated_at = if has(&orders, "updated_at")? {
            "o.updated_at"
        } else {
            "NULL"
        };
        let shipment_updated_at = if has(&shipments, "updated_at")? {
            "l.updated_at"
        } else {
            "NULL"
        };
        let time_zone = match s.business_time_zone.as_str() {
            "UTC" | "Etc/UTC" | "GMT" | "Etc/GMT" | "Z" => "+00:00".to_owned(),
            zone => {
                anyhow::ensure!(
                    zone.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "/_-+:".contains(c)),
                    "config key `source.business_time_zone` = {zone:?}: not a time zone name"
                );
                let probe: Option<Option<String>> = conn
                    .exec_first(
                        "SELECT CAST(CONVERT_TZ('2000-01-01 00:00:00', '+00:00', ?) AS CHAR)",
                        (zone,),
                    )
                    .context("asking the server for the business time zone")?;
                if probe.flatten().is_none() {
                    bail!(
                        "the database server does not know the time zone {zone:?} (config key \
                         `source.business_time_zone`): reconcile buckets ship days in SQL and needs the \
                         server's time zone tables: mariadb-tzinfo-to-sql /usr/share/zoneinfo | mariadb -u root mysql"
                    );
                }
                zone.to_owned()
            }
        };
        Ok(Self {
            items,
            orders,
            shipments,
            items_optional,
            order_updated_at,
            shipment_updated_at,
            time_zone,
            warehouse_is_db: s.warehouse_rule == "source_db",
        })
    }

    /// `{items}`: the rows of these items tables, stacked, with their database.
    fn items_rows(&self, tables: &[usize]) -> String {
        let parts: Vec<String> = tables
            .iter()
            .map(|&i| {
                let (t, opt) = (&self.items[i], &self.items_optional[i]);
                format!(
                    "SELECT '{db}' AS source_db, w.id, w.order_id, w.shipment_id, {wh} AS warehouse_id, \
                     w.item_type, w.item_qty, w.courier, w.created_at, {up} AS updated_at FROM {table} w",
                    db = t.database,
                    wh = opt.warehouse_id,
                    up = opt.updated_at,
                    table = t.sql()
                )
            })
            .collect();
        format!("(\n      {}\n    )", parts.join("\n      UNION ALL "))
    }

    /// The `order_items` CTE over these items tables, with their scope.
    fn order_items(&self, tables: &[usize], scope: &str) -> String {
        let warehouse = if self.warehouse_is_db {
            "w.source_db"
        } else {
            "COALESCE(w.warehouse_key, w.source_db)"
        };
        code(ORDER_ITEMS)
            .replace("{warehouse}", warehouse)
            .replace("{items_scope}", scope)
            .replace("{items}", &self.items_rows(tables))
            .replace("{orders_table}", &self.orders.sql())
            .replace("{shipments_table}", &self.shipments.sql())
            .replace("{order_updated_at}", self.order_updated_at)
            .replace("{shipment_updated_at}", self.shipment_updated_at)
            .replace("{time_zone}", &self.time_zone)
    }

    /// The details query of one items table, ordered by the items' primary
    /// key. With `since`, its one parameter is the earliest `created_at`.
    pub fn details(&self, table: usize, scope: ItemScope<'_>) -> String {
        let scope = match scope {
            ItemScope::All { since: false } => String::new(),
            ItemScope::All { since: true } => "WHERE w.created_at >= ?".to_owned(),
            ItemScope::Ids(ids) => format!(
                "WHERE w.id IN ({})",
                ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
            ),
        };
        format!("{}\n{}", self.order_items(&[table], &scope), code(DETAILS))
    }

    /// The rollup query over every items table. `days`: only these ship
    /// days (`YYYY-MM-DD`, checked by the caller with [`valid_day`]);
    /// `since_day`: only days on or after it.
    pub fn rollup(
        &self,
        rollup: Rollup,
        days: Option<&[String]>,
        since_day: Option<&str>,
    ) -> String {
        let mut filter = String::new();
        if let Some(days) = days {
            let list = days
                .iter()
                .map(|d| format!("'{d}'"))
                .collect::<Vec<_>>()
                .join(",");
            filter.push_str(&format!(" AND ship_day IN ({list})"));
        }
        if let Some(day) = since_day {
            filter.push_str(&format!(" AND ship_day >= '{day}'"));
        }
        let all: Vec<usize> = (0..self.items.len()).collect();
        format!(
            "{}\n{}",
            self.order_items(&all, ""),
            code(rollup.sql()).replace("{day_filter}", &filter)
        )
    }

    /// The business time zone as the queries use it.
    pub fn time_zone(&self) -> &str {
        &self.time_zone
    }
}

/// Session settings the queries are written for, set once per connection
/// before the snapshot starts. The trimmed order keys are computed columns
/// no table index serves: with `derived_merge=off` MariaDB materialises each
/// CTE and indexes it for the joins that look it up (`derived_with_keys`),
/// where merged CTEs would be joined row by row, re-trimming every pair —
/// minutes for a few thousand items. A result is streamed while the index
/// side is read, so the server may wait on the client longer than the
/// default 60 s write timeout when the search node is slow.
pub const SESSION_SETTINGS: &str =
    "SET SESSION optimizer_switch = 'derived_merge=off', net_write_timeout = 3600";

/// A template without its `--` comment lines: they explain the placeholders
/// by name, and a filled-in placeholder must not land inside a comment.
fn code(template: &str) -> String {
    template
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks a day given on the command line or read from the index.
pub fn valid_day(s: &str) -> bool {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}
