//! `outbound reconcile`: the live indices against a batch computation over
//! the source tables. The batch is defined in SQL (`sql/reconcile/`) and
//! shares nothing with the streaming code but the value parsers, so a rule
//! bug in the pipeline shows up here as a difference instead of being
//! reproduced.
//!
//! Both sides are read a bounded batch at a time: detail documents as one
//! streamed result per items table (a keyset page would make the server
//! recompute the joins per page), rollups as one streamed result per rollup,
//! the indices by `_mget` for what the batch expects and, only when they
//! hold more documents than matched, by a point-in-time scan for the extras.
//! Every SQL read runs in one consistent snapshot.

pub mod compare;
pub mod expected;
pub mod queries;
pub mod quiet;
pub mod search;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::NaiveDateTime;
use mysql::prelude::Queryable;
use mysql::{AccessMode, TxOpts};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::Config;
use crate::source_db::SourceDb;
use compare::{field_diffs, FieldDiff};
use expected::{
    comparable, detail_doc, detail_doc_id, DetailRow, RollupAccumulator, RollupRow, DETAIL_COLUMNS,
};
use queries::{ItemScope, Queries, Rollup};
use search::Search;

pub use quiet::{wait_for_quiet, QuietOptions};

/// What to compare.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only items created at or after this instant (UTC), and rollup days on
    /// or after its date.
    pub since: Option<NaiveDateTime>,
    /// Only these detail documents (`17`, or `wms2:17` for another
    /// warehouse database), and the rollup days they ship on.
    pub ids: Vec<String>,
    /// Documents compared per batch (one search request each), and ids per
    /// SQL lookup.
    pub page_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            since: None,
            ids: Vec::new(),
            page_size: 2_000,
        }
    }
}

/// One document that differs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// The batch expects it; the index does not hold it.
    Missing {
        index: String,
        id: String,
        expected: Value,
    },
    /// The index holds it; the batch does not expect it.
    Extra {
        index: String,
        id: String,
        indexed: Value,
    },
    /// Both have it, with these fields different.
    Different {
        index: String,
        id: String,
        fields: Vec<FieldDiff>,
    },
}

/// The comparison of one index.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexSummary {
    pub index: String,
    pub expected: u64,
    pub indexed: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
}

impl IndexSummary {
    pub fn differences(&self) -> u64 {
        self.missing + self.extra + self.different
    }
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub indices: Vec<IndexSummary>,
    pub elapsed_ms: u64,
    /// Rows read from the source databases (detail rows and rollup parts).
    pub rows_read: u64,
}

impl Report {
    pub fn differences(&self) -> u64 {
        self.indices.iter().map(IndexSummary::differences).sum()
    }
}

/// Hears about a run as it goes.
pub trait Observer {
    fn difference(&mut self, d: &Difference);
    /// `phase` (e.g. `details`), rows of it done, its total when known.
    fn progress(&mut self, phase: &str, done: u64, total: Option<u64>);
}

/// An observer that keeps every difference (tests; small slices).
#[derive(Debug, Default)]
pub struct Collect {
    pub differences: Vec<Difference>,
}

impl Observer for Collect {
    fn difference(&mut self, d: &Difference) {
        self.differences.push(d.clone());
    }
    fn progress(&mut self, _: &str, _: u64, _: Option<u64>) {}
}

/// Compares the indices of `config` with the batch over `db`.
pub fn reconcile(
    config: &Config,
    db: &SourceDb,
    options: &Options,
    observer: &mut dyn Observer,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    anyhow::ensure!(options.page_size > 0, "--page-size must be positive");
    let mut conn = db.connect()?;
    conn.query_drop(queries::SESSION_SETTINGS)
        .context("setting the reconcile session's optimizer switches")?;
    let queries = Queries::prepare(config, &mut conn)?;
    let search = Search::new(&config.sink)?;
    let details_alias = config.sink.details_alias();
    for alias in std::iter::once(details_alias.clone())
        .chain(Rollup::ALL.map(|r| config.sink.rollup_alias(rollup_name(r))))
    {
        search.refresh(&alias)?;
    }
    let mut tx = conn
        .start_transaction(
            TxOpts::default()
                .set_with_consistent_snapshot(true)
                .set_access_mode(Some(AccessMode::ReadOnly)),
        )
        .context("starting a consistent read-only snapshot of the source tables")?;
    let mut run = Run {
        queries: &queries,
        search: &search,
        options,
        observer,
        rows_read: 0,
    };
    let (details, ship_days) = run.details(&mut tx, &details_alias)?;
    let mut indices = vec![details];
    let rollup_days = match (&options.ids.is_empty(), options.since) {
        (false, _) => Some(ship_days.into_iter().collect::<Vec<_>>()),
        (true, _) => None,
    };
    for rollup in Rollup::ALL {
        let alias = config.sink.rollup_alias(rollup_name(rollup));
        indices.push(run.rollup(&mut tx, rollup, &alias, rollup_days.as_deref())?);
    }
    let rows_read = run.rows_read;
    tx.rollback().context("ending the read-only snapshot")?;
    Ok(Report {
        indices,
        elapsed_ms: started.elapsed().as_millis() as u64,
        rows_read,
    })
}

fn rollup_name(r: Rollup) -> crate::pipeline::rollup::RollupName {
    use crate::pipeline::rollup::RollupName;
    match r {
        Rollup::UnitsDaily => RollupName::UnitsDaily,
        Rollup::CourierDaily => RollupName::CourierDaily,
        Rollup::WarehouseDaily => RollupName::WarehouseDaily,
    }
}

struct Run<'a> {
    queries: &'a Queries,
    search: &'a Search,
    options: &'a Options,
    observer: &'a mut dyn Observer,
    rows_read: u64,
}

/// A SQL value as text (NULL as `None`).
fn text(row: &mysql::Row, i: usize) -> anyhow::Result<Option<String>> {
    use mysql::Value as V;
    Ok(match row.as_ref(i) {
        None | Some(V::NULL) => None,
        Some(V::Bytes(b)) => Some(
            String::from_utf8(b.clone())
                .map_err(|e| anyhow::anyhow!("column {i} is not UTF-8: {e}"))?,
        ),
        Some(V::Int(n)) => Some(n.to_string()),
        Some(V::UInt(n)) => Some(n.to_string()),
        Some(other) => Some(other.as_sql(true).trim_matches('\'').to_owned()),
    })
}

fn int(row: &mysql::Row, i: usize) -> anyhow::Result<i64> {
    text(row, i)?
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("column {i} is not an integer"))
}

/// A detail-document id split into its items table and primary key.
fn parse_doc_id(queries: &Queries, id: &str) -> Option<(usize, i64)> {
    let (db, key) = match id.split_once(':') {
        Some((db, key)) => (db, key),
        None => (queries.items[0].database.as_str(), id),
    };
    let table = queries.items.iter().position(|t| t.database == db)?;
    if table == 0 && id.contains(':') {
        return None; // the main table's ids carry no prefix
    }
    // Only the canonical text of an integer is an id the tables produce.
    let n: i64 = key.parse().ok()?;
    (n.to_string() == key).then_some((table, n))
}

impl Run<'_> {
    fn report(&mut self, summary: &mut IndexSummary, d: Difference) {
        match &d {
            Difference::Missing { .. } => summary.missing += 1,
            Difference::Extra { .. } => summary.extra += 1,
            Difference::Different { .. } => summary.different += 1,
        }
        self.observer.difference(&d);
    }

    /// Compares one batch of expected documents with the index.
    fn compare_batch(
        &mut self,
        alias: &str,
        summary: &mut IndexSummary,
        batch: &mut Vec<(String, Value)>,
    ) -> anyhow::Result<u64> {
        let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
        let mut indexed = self.search.mget(alias, &ids)?;
        let mut found = 0;
        for (id, want) in batch.drain(..) {
            summary.expected += 1;
            match indexed.remove(&id) {
                None => self.report(
                    summary,
                    Difference::Missing {
                        index: alias.to_owned(),
                        id,
                        expected: want,
                    },
                ),
                Some(got) => {
                    found += 1;
                    let fields = field_diffs(&want, &comparable(got));
                    if !fields.is_empty() {
                        self.report(
                            summary,
                            Difference::Different {
                                index: alias.to_owned(),
                                id,
                                fields,
                            },
                        );
                    }
                }
            }
        }
        Ok(found)
    }

    /// Compares a batch of expected detail documents and reports progress.
    fn details_batch(
        &mut self,
        alias: &str,
        summary: &mut IndexSummary,
        batch: &mut Vec<(String, Value)>,
        found: &mut u64,
        done: &mut u64,
        total: Option<u64>,
    ) -> anyhow::Result<()> {
        let n = batch.len() as u64;
        self.rows_read += n;
        *found += self.compare_batch(alias, summary, batch)?;
        *done += n;
        self.observer.progress("details", *done, total);
        Ok(())
    }

    /// The detail documents. Returns the summary and the ship days of the
    /// items compared (for `--ids`: the rollup days to check).
    fn details(
        &mut self,
        tx: &mut mysql::Transaction<'_>,
        alias: &str,
    ) -> anyhow::Result<(IndexSummary, BTreeSet<String>)> {
        let mut summary = IndexSummary {
            index: alias.to_owned(),
            ..Default::default()
        };
        let mut ship_days = BTreeSet::new();
        let page = self.options.page_size;
        let since = self
            .options
            .since
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string());
        let mut found = 0u64;
        let main_db = self.queries.items[0].database.clone();

        // The ids asked for, by items table.
        let mut by_table: HashMap<usize, Vec<i64>> = HashMap::new();
        let mut unknown_ids = Vec::new();
        for id in &self.options.ids {
            match parse_doc_id(self.queries, id) {
                Some((t, n)) => by_table.entry(t).or_default().push(n),
                None => unknown_ids.push(id.clone()),
            }
        }
        let total: Option<u64> = if self.options.ids.is_empty() {
            let mut n = 0u64;
            for t in &self.queries.items {
                let c: Option<u64> = tx
                    .query_first(format!(
                        "SELECT COUNT(*) FROM `{}`.`{}`",
                        t.database, t.table
                    ))
                    .with_context(|| format!("counting {}.{}", t.database, t.table))?;
                n += c.unwrap_or(0);
            }
            Some(n)
        } else {
            Some(self.options.ids.len() as u64)
        };
        let mut done = 0u64;
        self.observer.progress("details", 0, total);
        for table in 0..self.queries.items.len() {
            let scopes: Vec<Option<Vec<i64>>> = if self.options.ids.is_empty() {
                vec![None]
            } else {
                by_table
                    .get(&table)
                    .map(|ids| ids.chunks(page).map(|c| Some(c.to_vec())).collect())
                    .unwrap_or_default()
            };
            for scope in scopes {
                let sql = match &scope {
                    None => self.queries.details(
                        table,
                        ItemScope::All {
                            since: since.is_some(),
                        },
                    ),
                    Some(ids) => self.queries.details(table, ItemScope::Ids(ids)),
                };
                let params: Vec<mysql::Value> = match (&scope, &since) {
                    (None, Some(s)) => vec![s.clone().into()],
                    _ => vec![],
                };
                let db = self.queries.items[table].database.clone();
                // One streamed result per table (the server computes the
                // join once), compared a batch of `page` documents at a time.
                let rows = tx
                    .exec_iter(&sql, params)
                    .with_context(|| format!("running sql/reconcile/details.sql for {db}"))?;
                let mut batch = Vec::with_capacity(page);
                for row in rows {
                    let row = row.context("reading a row of sql/reconcile/details.sql")?;
                    let item_row_id = int(&row, 0)?;
                    let mut cols = Vec::with_capacity(DETAIL_COLUMNS.len());
                    for (i, name) in DETAIL_COLUMNS.iter().enumerate() {
                        cols.push((*name, text(&row, i + 1)?));
                    }
                    let row = DetailRow { item_row_id, cols };
                    let id = detail_doc_id(&main_db, &db, &row.item_row_id.to_string());
                    let doc = detail_doc(&row);
                    if let Some(day) = doc["ship_day"].as_str() {
                        if !self.options.ids.is_empty() {
                            ship_days.insert(day.to_owned());
                        }
                    }
                    batch.push((id, doc));
                    if batch.len() >= page {
                        self.details_batch(
                            alias,
                            &mut summary,
                            &mut batch,
                            &mut found,
                            &mut done,
                            total,
                        )?;
                    }
                }
                self.details_batch(
                    alias,
                    &mut summary,
                    &mut batch,
                    &mut found,
                    &mut done,
                    total,
                )?;
            }
        }
        // Asked-for ids no table has: extra when the index holds them.
        if !self.options.ids.is_empty() {
            let expected_ids: BTreeSet<String> = BTreeSet::new();
            let _ = expected_ids;
            let mut not_expected = unknown_ids;
            for (table, ids) in &by_table {
                let t = &self.queries.items[*table];
                for chunk in ids.chunks(page) {
                    let list = chunk
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    let present: Vec<i64> = tx
                        .query(format!(
                            "SELECT id FROM `{}`.`{}` WHERE id IN ({list})",
                            t.database, t.table
                        ))
                        .context("looking up the asked-for ids")?;
                    let present: BTreeSet<i64> = present.into_iter().collect();
                    not_expected.extend(
                        chunk
                            .iter()
                            .filter(|n| !present.contains(n))
                            .map(|n| detail_doc_id(&main_db, &t.database, &n.to_string())),
                    );
                }
            }
            for chunk in not_expected.chunks(page) {
                for (id, doc) in self.search.mget(alias, chunk)? {
                    summary.indexed += 1;
                    self.report(
                        &mut summary,
                        Difference::Extra {
                            index: alias.to_owned(),
                            id,
                            indexed: comparable(doc),
                        },
                    );
                }
            }
            summary.indexed += found;
            return Ok((summary, ship_days));
        }

        // What the index holds beyond what matched.
        let scope = match &since {
            None => json!({"match_all": {}}),
            Some(_) => {
                json!({"range": {"item.created_at": {"gte": self.options.since.map(|t| t.and_utc().to_rfc3339())}}})
            }
        };
        summary.indexed = self.search.count(alias, &scope)?;
        if summary.indexed > found || since.is_some() {
            self.details_extras(tx, alias, &scope, &mut summary)?;
        }
        Ok((summary, ship_days))
    }

    /// Scans the detail index for documents whose item row does not exist.
    fn details_extras(
        &mut self,
        tx: &mut mysql::Transaction<'_>,
        alias: &str,
        scope: &Value,
        summary: &mut IndexSummary,
    ) -> anyhow::Result<()> {
        let sort = json!([{"item.db": {"order": "asc", "missing": "_first"}},
                          {"item.id": {"order": "asc", "missing": "_first"}}]);
        let since = self
            .options
            .since
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string());
        let queries = self.queries;
        let main_db = queries.items[0].database.clone();
        let mut extras = Vec::new();
        self.search.scan(
            alias,
            scope,
            &sort,
            &json!(true),
            self.options.page_size,
            |docs| {
                let mut by_table: HashMap<usize, Vec<i64>> = HashMap::new();
                let mut sources: HashMap<String, Value> = HashMap::new();
                for (id, source) in docs {
                    match parse_doc_id(queries, &id) {
                        Some((t, n)) => {
                            by_table.entry(t).or_default().push(n);
                            sources.insert(id, source);
                        }
                        None => extras.push((id, source)),
                    }
                }
                for (table, ids) in by_table {
                    let t = &queries.items[table];
                    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
                    let since_cond = since
                        .as_ref()
                        .map(|s| format!(" AND created_at >= '{s}'"))
                        .unwrap_or_default();
                    let present: Vec<i64> = tx
                        .query(format!(
                            "SELECT id FROM `{}`.`{}` WHERE id IN ({list}){since_cond}",
                            t.database, t.table
                        ))
                        .context("looking up indexed items in their table")?;
                    let present: BTreeSet<i64> = present.into_iter().collect();
                    for n in ids.into_iter().filter(|n| !present.contains(n)) {
                        let id = detail_doc_id(&main_db, &t.database, &n.to_string());
                        let source = sources.remove(&id).unwrap_or(Value::Null);
                        extras.push((id, source));
                    }
                }
                Ok(())
            },
        )?;
        for (id, doc) in extras {
            self.report(
                summary,
                Difference::Extra {
                    index: alias.to_owned(),
                    id,
                    indexed: comparable(doc),
                },
            );
        }
        Ok(())
    }

    /// One rollup: streamed from its query, compared a batch at a time.
    fn rollup(
        &mut self,
        tx: &mut mysql::Transaction<'_>,
        rollup: Rollup,
        alias: &str,
        days: Option<&[String]>,
    ) -> anyhow::Result<IndexSummary> {
        let mut summary = IndexSummary {
            index: alias.to_owned(),
            ..Default::default()
        };
        let since_day = self
            .options
            .since
            .map(|t| t.date().format("%Y-%m-%d").to_string());
        if days.is_some_and(|d| d.is_empty()) {
            return Ok(summary);
        }
        let sql = self.queries.rollup(rollup, days, since_day.as_deref());
        let page = self.options.page_size;
        let mut found = 0u64;
        let mut acc = RollupAccumulator::new(rollup);
        let mut batch = Vec::with_capacity(page);
        let mut rows_read = 0u64;
        {
            let rows = tx
                .query_iter(&sql)
                .with_context(|| format!("running sql/reconcile/{}.sql", rollup.name()))?;
            for row in rows {
                let row =
                    row.with_context(|| format!("reading sql/reconcile/{}.sql", rollup.name()))?;
                rows_read += 1;
                let r = RollupRow {
                    day: text(&row, 0)?.context("a rollup row without a day")?,
                    dim1: text(&row, 1)?,
                    dim2: text(&row, 2)?,
                    part: text(&row, 3)?.context("a rollup row without a part")?,
                    raw: text(&row, 4)?,
                    n: int(&row, 5)?,
                };
                if let Some(doc) = acc.push(r)? {
                    batch.push(doc);
                    if batch.len() >= page {
                        found += self.compare_batch(alias, &mut summary, &mut batch)?;
                        self.observer
                            .progress(rollup.name(), summary.expected, None);
                    }
                }
            }
        }
        if let Some(doc) = acc.finish() {
            batch.push(doc);
        }
        found += self.compare_batch(alias, &mut summary, &mut batch)?;
        self.observer
            .progress(rollup.name(), summary.expected, Some(summary.expected));
        self.rows_read += rows_read;

        let scope = match (days, &since_day) {
            (Some(days), _) => json!({"terms": {"day": days}}),
            (None, Some(d)) => json!({"range": {"day": {"gte": d}}}),
            (None, None) => json!({"match_all": {}}),
        };
        summary.indexed = self.search.count(alias, &scope)?;
        if summary.indexed > found {
            self.rollup_extras(tx, rollup, alias, &scope, &mut summary)?;
        }
        Ok(summary)
    }

    /// Scans a rollup index for keys the batch does not have: each page's
    /// days are recomputed and its ids looked up among them.
    fn rollup_extras(
        &mut self,
        tx: &mut mysql::Transaction<'_>,
        rollup: Rollup,
        alias: &str,
        scope: &Value,
        summary: &mut IndexSummary,
    ) -> anyhow::Result<()> {
        let dims: &[&str] = match rollup {
            Rollup::UnitsDaily => &["day", "warehouse", "item_type"],
            Rollup::CourierDaily => &["day", "courier"],
            Rollup::WarehouseDaily => &["day", "warehouse"],
        };
        let sort: Vec<Value> = dims
            .iter()
            .map(|d| json!({ *d: {"order": "asc", "missing": "_first"} }))
            .collect();
        let queries = self.queries;
        let mut extras = Vec::new();
        self.search.scan(
            alias,
            scope,
            &Value::Array(sort),
            &json!(true),
            self.options.page_size,
            |docs| {
                let days: BTreeSet<String> = docs
                    .iter()
                    .filter_map(|(_, s)| {
                        s["day"]
                            .as_str()
                            .filter(|d| queries::valid_day(d))
                            .map(str::to_owned)
                    })
                    .collect();
                let days: Vec<String> = days.into_iter().collect();
                let mut expected = BTreeSet::new();
                if !days.is_empty() {
                    let sql = queries.rollup(rollup, Some(&days), None);
                    let mut acc = RollupAccumulator::new(rollup);
                    let rows = tx.query_iter(&sql).context("recomputing rollup days")?;
                    for row in rows {
                        let row = row.context("reading a rollup row")?;
                        let r = RollupRow {
                            day: text(&row, 0)?.context("a rollup row without a day")?,
                            dim1: text(&row, 1)?,
                            dim2: text(&row, 2)?,
                            part: text(&row, 3)?.context("a rollup row without a part")?,
                            raw: text(&row, 4)?,
                            n: int(&row, 5)?,
                        };
                        if let Some((id, _)) = acc.push(r)? {
                            expected.insert(id);
                        }
                    }
                    if let Some((id, _)) = acc.finish() {
                        expected.insert(id);
                    }
                }
                for (id, source) in docs {
                    if !expected.contains(&id) {
                        extras.push((id, source));
                    }
                }
                Ok(())
            },
        )?;
        for (id, doc) in extras {
            self.report(
                summary,
                Difference::Extra {
                    index: alias.to_owned(),
                    id,
                    indexed: doc,
                },
            );
        }
        Ok(())
    }
}

/// Parses `--since`: a date (`2024-05-01`, midnight UTC) or a date-time.
pub fn parse_since(s: &str) -> anyhow::Result<NaiveDateTime> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists"));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), f) {
            return Ok(t);
        }
    }
    bail!("--since {s:?}: expected a date (2024-05-01) or a UTC date-time (2024-05-01T10:00:00)")
}

/// Waits (optionally) and reconciles; the one call `outbound reconcile` and
/// the tests make.
pub fn wait_and_reconcile(
    config: &Config,
    db: &SourceDb,
    options: &Options,
    quiet: Option<QuietOptions>,
    observer: &mut dyn Observer,
) -> anyhow::Result<(Option<Duration>, Report)> {
    let waited = match quiet {
        Some(q) => Some(wait_for_quiet(config, q, |msg| {
            observer.progress(&format!("quiet: {msg}"), 0, None)
        })?),
        None => None,
    };
    Ok((waited, reconcile(config, db, options, observer)?))
}
