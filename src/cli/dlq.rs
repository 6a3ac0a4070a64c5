//! `outbound dlq replay`: re-feeds the sink's dead letters once their cause
//! is fixed (see `outbound::sink::replay`).

use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use outbound::config::Config;
use outbound::metrics::Metrics;
use outbound::shutdown::Shutdown;
use outbound::sink::replay::{replay, ReplayOptions};

use super::sink::SinkArgs;

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Index the dead letters of a topic again, once their cause is fixed;
    /// idempotent. Only letters still the latest record of their document
    /// are replayed.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub sink: SinkArgs,
    /// The dead-letter topic to read (the sink's is <app_id>-sink-dlq).
    #[arg(long, value_name = "TOPIC")]
    pub from: String,
    /// Only letters whose error type is REASON (e.g.
    /// mapper_parsing_exception) or whose message contains it.
    #[arg(long, value_name = "REASON")]
    pub filter: Option<String>,
    /// Print the counts as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DlqArgs) -> anyhow::Result<()> {
    let DlqCommand::Replay(args) = args.command;
    let config = Config::load(args.sink.config.as_deref(), &args.sink.overrides())?;
    let shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    let options = ReplayOptions {
        from: args.from.clone(),
        filter: args.filter.clone(),
    };
    let report = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(replay(config, options, Arc::new(Metrics::new()), shutdown))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {} dead letters read, {} replayed, {} failed, {} superseded by newer records, {} filtered out, {} skipped",
            args.from,
            report.read,
            report.replayed,
            report.failed,
            report.superseded,
            report.filtered_out,
            report.skipped
        );
        for (error_type, n) in &report.failures {
            println!("  failed again: {n} × {error_type}");
        }
    }
    anyhow::ensure!(
        report.failed == 0,
        "{} dead letters were rejected again",
        report.failed
    );
    Ok(())
}
