//! `outbound loadgen`: seeded, realistic SQL traffic into the source
//! databases, at a rate or flat out, for a count or a duration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use outbound::loadgen::{LoadOptions, Loadgen};

use super::source_db::SourceDbArgs;

#[derive(Debug, Args)]
pub struct LoadgenArgs {
    #[command(flatten)]
    pub db: SourceDbArgs,
    /// Seed of the random choices: the same seed gives the same operations
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Transactions per second (omit for as fast as the server takes them)
    #[arg(long)]
    pub rate: Option<f64>,
    /// Stop after this many transactions [default: 1000 unless --duration-secs is given]
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Share (0 to 1) of values written in a messy form
    #[arg(long, default_value_t = 0.1)]
    pub messy_share: f64,
    /// Chance per transaction that a burst of 20-100 back-to-back transactions starts
    #[arg(long, default_value_t = 0.005)]
    pub burst_chance: f64,
    /// Prefix of the order ids this run creates [default: lg<seed>-]
    #[arg(long, default_value = "")]
    pub order_prefix: String,
    /// The orders table as <database>.<table>
    #[arg(long, default_value = "orders.order_demo")]
    pub orders_table: String,
    /// The order-items table as <database>.<table>
    #[arg(long, default_value = "wms.wms_demo")]
    pub items_table: String,
    /// The shipments table as <database>.<table>
    #[arg(long, default_value = "logistics.logistics_demo")]
    pub shipments_table: String,
    /// Print what was done as one JSON object
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let duration = args.duration_secs.map(Duration::from_secs);
    let options = LoadOptions {
        seed: args.seed,
        rate: args.rate,
        count: args.count.or(if duration.is_some() {
            None
        } else {
            Some(1_000)
        }),
        duration,
        messy_share: args.messy_share,
        burst_chance: args.burst_chance,
        order_prefix: args.order_prefix.clone(),
        orders_table: args.orders_table.clone(),
        items_table: args.items_table.clone(),
        shipments_table: args.shipments_table.clone(),
    };
    let mut gen = Loadgen::new(args.db.source_db(), options)?;
    // Ctrl-C / SIGTERM stop after the transaction in flight.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let stats = gen.run(&stop)?;
    if args.json {
        println!("{}", serde_json::to_string(&stats)?);
    } else {
        println!("{stats}");
    }
    if stop.load(Ordering::Relaxed) {
        eprintln!("loadgen: stopped by a signal");
    }
    Ok(())
}
