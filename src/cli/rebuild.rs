//! `outbound rebuild-indices`: a new generation of every index, filled from
//! the compacted output topics and swapped in with one alias change, while
//! readers keep querying (see `outbound::sink::rebuild`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use outbound::config::Config;
use outbound::metrics::Metrics;
use outbound::shutdown::Shutdown;
use outbound::sink::rebuild::{rebuild_indices, Display, RebuildOptions};

use super::sink::SinkArgs;

#[derive(Debug, Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub sink: SinkArgs,
    /// How long the previous generation is kept after the swap (e.g. 30m,
    /// 24h; 0s deletes it at once); the sink deletes it once the time is up.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub keep_old: Duration,
    /// Print the result as JSON (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    outbound::sink::cluster::parse_duration_secs(s)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is not a duration like 90s, 30m, 24h or 7d"))
}

pub fn run(args: RebuildArgs) -> anyhow::Result<()> {
    let config = Config::load(args.sink.config.as_deref(), &args.sink.overrides())?;
    let shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    let options = RebuildOptions {
        keep_old: args.keep_old,
        display: if args.json {
            Display::Log
        } else {
            Display::Auto
        },
    };
    let report = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(rebuild_indices(
            config,
            options,
            Arc::new(Metrics::new()),
            shutdown,
        ))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for i in &report.indices {
            println!(
                "{}: {} → {} ({} documents, version epoch {})",
                i.alias,
                i.old.as_deref().unwrap_or("(none)"),
                i.new,
                i.documents,
                i.epoch
            );
        }
        println!(
            "rebuilt from {} records in {:.1} s; the previous generation is deleted after {:?}",
            report.records, report.seconds, args.keep_old
        );
    }
    Ok(())
}
