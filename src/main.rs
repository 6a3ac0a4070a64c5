//! The `outbound` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Exactly-once stream processor: Debezium change streams from the orders,
/// warehouse and logistics databases in, a live outbound report out.
#[derive(Debug, Parser)]
#[command(name = "outbound", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the stream stages (rekey → join → details / aggregate) with
    /// exactly-once Kafka transactions and RocksDB state.
    Run(cli::run::RunArgs),
    /// Run the Elasticsearch sink alone: output topics → detail and rollup
    /// indices, idempotently (external versions = offsets).
    Sink(cli::sink::SinkArgs),
    /// Build a new generation of every index from the output topics and
    /// swap it in with one alias change, without downtime (also applies a
    /// template or `sink.index_version` change).
    RebuildIndices(cli::rebuild::RebuildArgs),
    /// The sink's dead-letter topic: `outbound dlq replay --from <topic>`.
    Dlq(cli::dlq::DlqArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Sink(args) => cli::sink::run(args),
        Command::RebuildIndices(args) => cli::rebuild::run(args),
        Command::Dlq(args) => cli::dlq::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("outbound: {e:#}");
            ExitCode::FAILURE
        }
    }
}
