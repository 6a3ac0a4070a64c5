//! `outbound loadgen`: realistic, seeded SQL traffic into the three source
//! databases — orders with items and shipments in multi-database
//! transactions, updates, items moved between orders, shipments re-linked
//! and moved to another day, deletes and re-inserts of the same ids,
//! rolled-back transactions, bursts, and a share of messy values. The same
//! seed gives the same sequence of operations.
//!
//! As a library: [`Loadgen::run`] in the calling thread, or [`spawn`] for a
//! background load that a test or benchmark stops when it likes.

mod actions;
pub mod messy;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::source_db::SourceDb;
pub use actions::Action;

/// What to generate and for how long.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub seed: u64,
    /// Transactions per second; `None` = as fast as the server takes them.
    pub rate: Option<f64>,
    /// Stop after this many transactions (committed or rolled back).
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Share (0..1) of values written in a messy form.
    pub messy_share: f64,
    /// Chance per transaction that a burst of 20-100 transactions starts,
    /// sent back to back whatever the rate.
    pub burst_chance: f64,
    /// Prefix of the order ids this run creates, so runs do not collide
    /// (`lg<seed>-` when empty).
    pub order_prefix: String,
    /// The databases and tables (`<database>.<table>`).
    pub orders_table: String,
    pub items_table: String,
    pub shipments_table: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            seed: 1,
            rate: None,
            count: Some(1_000),
            duration: None,
            messy_share: 0.1,
            burst_chance: 0.005,
            order_prefix: String::new(),
            orders_table: "orders.order_demo".into(),
            items_table: "wms.wms_demo".into(),
            shipments_table: "logistics.logistics_demo".into(),
        }
    }
}

/// What a run did, by kind of operation.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LoadStats {
    pub transactions: u64,
    pub committed: u64,
    pub rolled_back: u64,
    pub orders: u64,
    pub duplicate_order_rows: u64,
    pub items: u64,
    pub shipments: u64,
    pub orphan_items: u64,
    pub qty_updates: u64,
    pub type_updates: u64,
    pub description_updates: u64,
    pub order_value_updates: u64,
    pub items_moved: u64,
    pub shipments_relinked: u64,
    pub shipments_moved_day: u64,
    pub items_deleted: u64,
    pub items_reinserted: u64,
    pub shipments_deleted: u64,
    pub orders_deleted: u64,
    pub bursts: u64,
    pub messy_values: u64,
    /// Transactions retried after a connection or server error.
    pub retries: u64,
    pub elapsed_ms: u64,
}

impl fmt::Display for LoadStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = (self.elapsed_ms as f64 / 1000.0).max(0.001);
        write!(
            f,
            "loadgen: {} transactions ({} committed, {} rolled back) in {:.1}s ({:.0}/s); \
             created: {} orders (+{} rows reusing an order id), {} items ({} without an order), \
             {} shipments; updates: {} quantities, {} item types, {} descriptions, {} order values; \
             moves: {} items to another order, {} shipments re-linked, {} shipments to another day; \
             deletes: {} items ({} re-inserted with the same id), {} shipments, {} orders; \
             {} bursts, {} messy values, {} retries",
            self.transactions, self.committed, self.rolled_back, secs,
            self.transactions as f64 / secs,
            self.orders, self.duplicate_order_rows, self.items, self.orphan_items, self.shipments,
            self.qty_updates, self.type_updates, self.description_updates, self.order_value_updates,
            self.items_moved, self.shipments_relinked, self.shipments_moved_day,
            self.items_deleted, self.items_reinserted, self.shipments_deleted, self.orders_deleted,
            self.bursts, self.messy_values, self.retries,
        )
    }
}

/// A load generator over one connection.
pub struct Loadgen {
    db: SourceDb,
    options: LoadOptions,
    rng: StdRng,
    state: actions::State,
    stats: LoadStats,
}

impl Loadgen {
    pub fn new(db: SourceDb, options: LoadOptions) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&options.messy_share),
            "--messy-share {} must be between 0 and 1",
            options.messy_share
        );
        if let Some(r) = options.rate {
            anyhow::ensure!(r > 0.0, "--rate {r} must be positive");
        }
        let tables = actions::Tables::parse(&options)?;
        let prefix = if options.order_prefix.is_empty() {
            format!("lg{}-", options.seed)
        } else {
            options.order_prefix.clone()
        };
        Ok(Self {
            rng: StdRng::seed_from_u64(options.seed),
            state: actions::State::new(tables, prefix),
            db,
            options,
            stats: LoadStats::default(),
        })
    }

    /// Runs until the count or duration is reached, or `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<LoadStats> {
        let started = Instant::now();
        let mut conn = self.db.connect()?;
        let interval = self.options.rate.map(|r| Duration::from_secs_f64(1.0 / r));
        let mut next = Instant::now();
        let mut burst_left = 0u32;
        let mut failures = 0u32;
        loop {
            if stop.load(Ordering::Relaxed)
                || self
                    .options
                    .count
                    .is_some_and(|c| self.stats.transactions >= c)
                || self
                    .options
                    .duration
                    .is_some_and(|d| started.elapsed() >= d)
            {
                break;
            }
            if burst_left == 0
                && self
                    .rng
                    .random_bool(self.options.burst_chance.clamp(0.0, 1.0))
            {
                burst_left = self.rng.random_range(20..=100);
                self.stats.bursts += 1;
            }
            if burst_left > 0 {
                burst_left -= 1;
            } else if let Some(iv) = interval {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                next = next.max(now) + iv;
            }
            let action = actions::pick(&mut self.rng, &self.state);
            // The choices are drawn before the transaction runs, so a retry
            // repeats the same operation and the sequence stays seeded.
            let plan = self
                .state
                .plan(&mut self.rng, action, self.options.messy_share);
            match self.state.apply(&mut conn, &plan, &mut self.stats) {
                Ok(()) => {
                    failures = 0;
                    self.stats.transactions += 1;
                }
                Err(e) => {
                    failures += 1;
                    self.stats.retries += 1;
                    anyhow::ensure!(
                        failures < 30,
                        "loadgen: 30 transactions in a row failed against {}; last: {e:#}",
                        self.db.describe()
                    );
                    tracing::warn!("loadgen: transaction failed, reconnecting: {e:#}");
                    std::thread::sleep(Duration::from_millis(200 * u64::from(failures.min(25))));
                    if let Ok(c) = self.db.connect() {
                        conn = c;
                    }
                }
            }
        }
        self.stats.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(self.stats.clone())
    }
}

/// A load running in a thread of its own.
pub struct LoadHandle {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<LoadStats>>,
}

impl LoadHandle {
    /// Asks the load to stop after the transaction in flight.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops the load and returns what it did.
    pub fn finish(self) -> anyhow::Result<LoadStats> {
        self.stop();
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the loadgen thread panicked"))?
    }
}

/// Starts a load in a background thread.
pub fn spawn(db: SourceDb, options: LoadOptions) -> anyhow::Result<LoadHandle> {
    let mut gen = Loadgen::new(db, options)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("loadgen".into())
        .spawn(move || gen.run(&flag))
        .context("starting the loadgen thread")?;
    Ok(LoadHandle { stop, thread })
}
